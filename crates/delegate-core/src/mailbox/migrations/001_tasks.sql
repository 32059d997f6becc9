-- Version 1: tasks, their runs with launch evidence, and every status transition.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE tasks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    status        TEXT    NOT NULL,
    reason        TEXT,
    brother       TEXT    NOT NULL,
    host          TEXT    NOT NULL,
    subject       TEXT    NOT NULL,
    agent         TEXT    NOT NULL,
    model         TEXT,
    sandbox       TEXT    NOT NULL,
    max_turns     INTEGER NOT NULL,
    workdir       TEXT    NOT NULL,
    prompt        BLOB    NOT NULL,
    prompt_sha256 TEXT    NOT NULL,
    version       INTEGER NOT NULL DEFAULT 1,
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL
) STRICT;
CREATE INDEX tasks_by_brother ON tasks (brother, id);
CREATE INDEX tasks_by_status ON tasks (status, id);

CREATE TABLE runs (
    task_id       INTEGER NOT NULL REFERENCES tasks (id),
    run_no        INTEGER NOT NULL,
    session       TEXT    NOT NULL,
    nonce         TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    host          TEXT    NOT NULL,
    address       TEXT    NOT NULL,
    remote_dir    TEXT,
    pane_pid      INTEGER,
    marker        TEXT,
    launch_exit   INTEGER,
    error         TEXT,
    evidence      TEXT    NOT NULL DEFAULT '{}',
    launch_stderr TEXT,
    started_at    TEXT    NOT NULL,
    finished_at   TEXT,
    PRIMARY KEY (task_id, run_no)
) STRICT;

CREATE TABLE transitions (
    id          INTEGER PRIMARY KEY,
    task_id     INTEGER NOT NULL REFERENCES tasks (id),
    from_status TEXT,
    to_status   TEXT    NOT NULL,
    reason      TEXT,
    at          TEXT    NOT NULL
) STRICT;
CREATE INDEX transitions_by_task ON transitions (task_id, id);
