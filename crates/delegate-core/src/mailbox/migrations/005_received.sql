-- Version 5: when the lead recorded a brother's message or event (the lead's clock). The
-- brother's own `at` is kept for reference but never orders anything: it is untrusted.
ALTER TABLE messages ADD COLUMN received_at TEXT;
ALTER TABLE events ADD COLUMN received_at TEXT;
