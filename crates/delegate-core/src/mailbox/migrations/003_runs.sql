-- Version 3: a task can have several runs (reopen). Each later run carries its own
-- follow-up prompt, who asked for it, and the write scope it was given.
ALTER TABLE runs ADD COLUMN prompt BLOB;
ALTER TABLE runs ADD COLUMN author TEXT;
ALTER TABLE runs ADD COLUMN write_scope TEXT;
