-- agentbus (issue 20): tasks a lead handed to an agentbus worker (`protocol = "agentbus"`),
-- and where the lead's reading of each of its result subjects stopped. Two pages in all (no
-- extra index: a lead has few such tasks, and a full mailbox disk is tested to the byte).
CREATE TABLE agentbus_tasks (
    task_id      INTEGER PRIMARY KEY REFERENCES tasks (id),
    -- The agentbus task id (`task-<uuid>`) the result names.
    message_id   TEXT    NOT NULL,
    -- The agentbus agent id it went to, and the one its result comes back to.
    worker       TEXT    NOT NULL,
    reply_to     TEXT    NOT NULL,
    published_at TEXT    NOT NULL,
    -- The AGENTBUS_RESULTS sequence of the result recorded: set once, so a result read
    -- again (or published twice) is recorded once.
    result_seq   INTEGER
) STRICT;

-- The last AGENTBUS_RESULTS sequence read for `agentbus.<reply_to>.results`.
CREATE TABLE agentbus_cursors (
    reply_to TEXT    PRIMARY KEY,
    seq      INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
