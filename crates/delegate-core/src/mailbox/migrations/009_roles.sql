-- Step 010 (numbered after 009, which another change adds): who created each task, so a
-- worker may change its own tasks and `board --mine` finds them; and the profile a backlog
-- task was recorded with, which `start` launches it with.
ALTER TABLE tasks ADD COLUMN created_by TEXT;
ALTER TABLE tasks ADD COLUMN profile TEXT;
-- Tasks from before: the author of their first run, else who recorded the backlog task.
UPDATE tasks SET created_by = coalesce(
    (SELECT author FROM runs WHERE runs.task_id = tasks.id AND run_no = 1),
    (SELECT substr(reason, 13) FROM transitions
      WHERE transitions.task_id = tasks.id AND from_status IS NULL AND reason LIKE 'recorded by %'));
CREATE INDEX tasks_by_creator ON tasks (created_by, id);
