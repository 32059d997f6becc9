-- Version 7: a task's agent options (reasoning effort, spend limit, extra arguments, the
-- credential file's path) as JSON, so a queued start and a reopen run with the same ones,
-- and each setting's value and source (flag, profile, brother, default) for `show`.
ALTER TABLE tasks ADD COLUMN options TEXT;
ALTER TABLE tasks ADD COLUMN settings TEXT;
