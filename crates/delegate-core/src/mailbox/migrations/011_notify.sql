-- Version 13: notifications. A task keeps the notification plan it was launched with
-- (targets and events, as JSON; NULL: none). Each notification due is a row, written in the
-- same transaction as the state change that causes it, so a lead that is offline when a task
-- ends loses nothing; delivery claims rows in a transaction (state 'sending' with a lease),
-- so two delegate processes never send one twice while both are alive.
ALTER TABLE tasks ADD COLUMN notify TEXT;

CREATE TABLE notifications (
    id              INTEGER PRIMARY KEY,
    task_id         INTEGER REFERENCES tasks (id),
    -- A schedule misfire has a schedule and a slot instead of a task.
    schedule        TEXT,
    slot            TEXT,
    event           TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    brother         TEXT    NOT NULL DEFAULT '',
    subject         TEXT    NOT NULL DEFAULT '',
    reason          TEXT,
    -- Where it goes (JSON): a webhook's URL and the NAME of its token's variable or file,
    -- never the token.
    target          TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- Unix milliseconds on the lead's clock.
    next_attempt_at INTEGER NOT NULL,
    claimed_until   INTEGER,
    last_error      TEXT,
    created_at      TEXT    NOT NULL,
    sent_at         TEXT
) STRICT;
CREATE INDEX notifications_due ON notifications (state, next_attempt_at);
CREATE UNIQUE INDEX notifications_misfire ON notifications (schedule, slot, target) WHERE schedule IS NOT NULL;
