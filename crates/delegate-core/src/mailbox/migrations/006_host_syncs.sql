-- Version 6: how each host's latest syncs went (the lead's clock). A host whose latest
-- attempt failed (it did not answer in time, or could not be reached) after it last
-- answered has its unfinished tasks shown stale, with when each was last heard of
-- (tasks.synced_at, else its launch).
CREATE TABLE host_syncs (
    host        TEXT PRIMARY KEY,
    answered_at TEXT,
    failed_at   TEXT,
    error       TEXT
) STRICT;
