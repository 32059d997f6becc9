-- Artifacts fetched back (`delegate fetch N --artifacts`): what the lead wrote, with the
-- SHA-256 it computed itself of the bytes it wrote (equal to the brother's, or the fetch
-- failed), so a file can later be checked against what the task produced.
CREATE TABLE artifact_fetches (
    id          INTEGER PRIMARY KEY,
    task_id     INTEGER NOT NULL REFERENCES tasks (id),
    run_no      INTEGER NOT NULL,
    -- The path the agent declared, and the description it gave (both cleaned to a line).
    path        TEXT    NOT NULL,
    description TEXT    NOT NULL DEFAULT '',
    size        INTEGER NOT NULL,
    sha256      TEXT    NOT NULL,
    local_path  TEXT    NOT NULL,
    fetched_at  TEXT    NOT NULL
);
CREATE INDEX artifact_fetches_task ON artifact_fetches (task_id);
