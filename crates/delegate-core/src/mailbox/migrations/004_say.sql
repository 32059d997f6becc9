-- Version 4: lead-to-brother messages are recorded before they are sent; queued_at says
-- the brother's inbox has them (a message without it is sent again, with the same id).
ALTER TABLE messages ADD COLUMN queued_at TEXT;
