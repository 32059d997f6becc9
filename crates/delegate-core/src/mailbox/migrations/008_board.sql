-- Version 7: the board. Tasks recorded without launching sit in status 'backlog' (no run
-- until `start`); every task has a priority and may be part of a parent task.
ALTER TABLE tasks ADD COLUMN priority TEXT NOT NULL DEFAULT 'medium'
    CHECK (priority IN ('low', 'medium', 'high'));
ALTER TABLE tasks ADD COLUMN parent_id INTEGER REFERENCES tasks (id);
CREATE INDEX tasks_by_parent ON tasks (parent_id, id);
-- When a person accepted a finished task (moved it from review to done); a reopen clears it.
ALTER TABLE tasks ADD COLUMN accepted_at TEXT;
