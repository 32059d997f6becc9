-- Version 2: what sync brings back from brothers. Offsets make every append-only remote file
-- read once; events and messages are the activity feed and the brother-lead conversation.
ALTER TABLE tasks ADD COLUMN timeout_secs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN exit_code INTEGER;
ALTER TABLE tasks ADD COLUMN turns INTEGER;
ALTER TABLE tasks ADD COLUMN cost_usd REAL;
ALTER TABLE tasks ADD COLUMN last_event TEXT;
ALTER TABLE tasks ADD COLUMN synced_at TEXT;

ALTER TABLE runs ADD COLUMN exit_code INTEGER;
ALTER TABLE runs ADD COLUMN exit_reason TEXT;
ALTER TABLE runs ADD COLUMN ended_at TEXT;
ALTER TABLE runs ADD COLUMN outcome TEXT;
ALTER TABLE runs ADD COLUMN facts TEXT NOT NULL DEFAULT '{}';
ALTER TABLE runs ADD COLUMN stderr_head TEXT;

CREATE TABLE offsets (
    task_id INTEGER NOT NULL REFERENCES tasks (id),
    run_no  INTEGER NOT NULL,
    file    TEXT    NOT NULL,
    offset  INTEGER NOT NULL,
    PRIMARY KEY (task_id, run_no, file)
) STRICT;

CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL REFERENCES tasks (id),
    run_no  INTEGER NOT NULL,
    at      TEXT    NOT NULL,
    kind    TEXT    NOT NULL,
    summary TEXT    NOT NULL DEFAULT '',
    data    TEXT
) STRICT;
CREATE INDEX events_by_task ON events (task_id, id);

-- direction: 'from_brother' (report helper), 'to_brother' (say), 'note' (a person's update).
CREATE TABLE messages (
    id           INTEGER PRIMARY KEY,
    task_id      INTEGER NOT NULL REFERENCES tasks (id),
    run_no       INTEGER NOT NULL,
    direction    TEXT    NOT NULL,
    author       TEXT    NOT NULL,
    seq          INTEGER,
    kind         TEXT    NOT NULL,
    text         TEXT    NOT NULL,
    at           TEXT    NOT NULL,
    delivered_at TEXT,
    read_at      TEXT,
    UNIQUE (task_id, run_no, direction, seq)
) STRICT;
CREATE INDEX messages_by_task ON messages (task_id, id);
CREATE INDEX messages_unread ON messages (direction, read_at);
