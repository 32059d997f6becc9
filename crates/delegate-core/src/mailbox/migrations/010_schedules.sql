-- Schedules (issue 18): recurring tasks, each firing an ordinary task. A firing row is
-- claimed, keyed by (schedule, slot), in the same transaction that moves the schedule's
-- `decided_until` past it, before anything is launched: two dispatchers (or two leads)
-- never fire one slot twice.
CREATE TABLE schedules (
    name          TEXT    PRIMARY KEY,
    spec          TEXT    NOT NULL,
    tz            TEXT    NOT NULL,
    brother       TEXT    NOT NULL,
    profile       TEXT,
    catch_up      TEXT    NOT NULL CHECK (catch_up IN ('skip', 'once', 'all')),
    prompt        BLOB    NOT NULL,
    author        TEXT    NOT NULL,
    -- When it was added: `every` slots count from here.
    anchor        TEXT    NOT NULL,
    -- Every slot up to here is decided (fired or missed); the next tick looks after it.
    decided_until TEXT    NOT NULL,
    paused        INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT    NOT NULL
) STRICT;

-- slot: the slot's instant (RFC 3339, UTC), or `manual:<time>` for `schedule run`.
-- state: claimed (launch under way, or the dispatcher stopped before it), fired (task_id is
-- its task), failed (no task could be recorded; reason says why).
CREATE TABLE schedule_firings (
    schedule   TEXT    NOT NULL,
    slot       TEXT    NOT NULL,
    state      TEXT    NOT NULL CHECK (state IN ('claimed', 'fired', 'failed')),
    task_id    INTEGER REFERENCES tasks (id),
    reason     TEXT,
    claimed_at TEXT    NOT NULL,
    PRIMARY KEY (schedule, slot)
) STRICT;
CREATE INDEX schedule_firings_by_task ON schedule_firings (task_id);

-- What happened to schedules that nobody asked for: kind `schedule_misfire` (slots missed
-- while no dispatcher ran, or a firing that could not launch). Notifications read these.
CREATE TABLE schedule_events (
    id         INTEGER PRIMARY KEY,
    schedule   TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    first_slot TEXT,
    last_slot  TEXT,
    count      INTEGER NOT NULL DEFAULT 1,
    reason     TEXT    NOT NULL,
    at         TEXT    NOT NULL
) STRICT;
CREATE INDEX schedule_events_by_schedule ON schedule_events (schedule, id);
