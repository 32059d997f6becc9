//! Concurrency caps: a host's `max_concurrent` and a brother's. A task over either cap is
//! recorded `queued` (prompt and settings kept, nothing sent) and started later, oldest
//! first, by whoever next finds a free slot ([`crate::Delegate::dispatch_queued`]). Counting
//! and the status change happen in one IMMEDIATE transaction, so two leads sharing the
//! mailbox never both take the last slot. Daily spend caps ([`super::spend`]) are checked in
//! the same transaction: a task over one waits queued (or is refused) the same way.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::spend::{self, DailyCap};
use super::{RunStart, Store, now, transition_in};
use crate::error::Result;
use crate::task::{Task, TaskStatus};

/// The caps that apply to one task (from the inventory as it is now).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Caps {
    pub host: Option<u32>,
    pub brother: Option<u32>,
    /// `max_usd_per_day` of the host and of the brother.
    pub host_daily: Option<DailyCap>,
    pub brother_daily: Option<DailyCap>,
}

/// What a new task does: start now, or wait queued (with the reason, for a spend cap).
pub(super) enum Admission {
    Start,
    Queue(Option<String>),
}

/// Tasks that hold a slot: everything started and not finished, and tasks handed to a NATS
/// server that wait `queued` for a worker to take them (sent: a worker may start them at
/// any moment).
const HOLDS_A_SLOT: &str = "(status IN ('launching', 'launched', 'running', 'needs_input', 'launch_unknown') \
     OR (status = 'queued' AND id IN (SELECT task_id FROM runs r WHERE broker_at IS NOT NULL \
         AND run_no = (SELECT max(run_no) FROM runs WHERE task_id = r.task_id))))";

/// Tasks waiting for a slot (queued and not handed to a NATS server).
const WAITING: &str = "(status = 'queued' AND id NOT IN (SELECT task_id FROM runs r WHERE broker_at IS NOT NULL \
     AND run_no = (SELECT max(run_no) FROM runs WHERE task_id = r.task_id)))";

fn count(tx: &rusqlite::Connection, column: &str, value: &str, condition: &str) -> Result<u32> {
    let sql = format!("SELECT count(*) FROM tasks WHERE {column} = ?1 AND {condition}");
    Ok(tx.query_row(&sql, [value], |r| r.get(0))?)
}

/// Whether a task for `host`/`brother` may start now: a free slot under each cap, and
/// today's spend under each daily cap.
pub(super) fn has_room(tx: &rusqlite::Connection, host: &str, brother: &str, caps: Caps) -> Result<bool> {
    for (column, value, cap) in [("host", host, caps.host), ("brother", brother, caps.brother)] {
        if let Some(cap) = cap
            && count(tx, column, value, HOLDS_A_SLOT)? >= cap
        {
            return Ok(false);
        }
    }
    Ok(spend::reached(tx, host, brother, [caps.brother_daily, caps.host_daily])?.is_none())
}

/// Whether a new task starts, waits, or is refused: over a daily spend cap it is refused
/// with the figures (or queued with them, per the cap's `over_cap`); over a concurrency cap,
/// or behind older tasks waiting under one, it queues.
pub(super) fn admit(tx: &rusqlite::Connection, host: &str, brother: &str, caps: Caps) -> Result<Admission> {
    if let Some(reached) = spend::reached(tx, host, brother, [caps.brother_daily, caps.host_daily])? {
        if !reached.queue {
            return Err(reached.into_error());
        }
        return Ok(Admission::Queue(Some(reached.queue_reason())));
    }
    Ok(if must_queue(tx, host, brother, caps)? { Admission::Queue(None) } else { Admission::Start })
}

/// Whether a new task must queue: no room, or older tasks already waiting under a cap it
/// shares (they go first).
pub(super) fn must_queue(tx: &rusqlite::Connection, host: &str, brother: &str, caps: Caps) -> Result<bool> {
    if !has_room(tx, host, brother, caps)? {
        return Ok(true);
    }
    for (column, value, cap) in [("host", host, caps.host), ("brother", brother, caps.brother)] {
        if cap.is_some() && count(tx, column, value, WAITING)? > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How loaded a brother is, and whether a new task would start there now.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    /// The brother's tasks started and not finished, and those waiting queued.
    pub in_flight: u32,
    /// Which cap a new task would wait behind; `None`: room now.
    pub full: Option<String>,
}

impl Store {
    /// The brother's load and, under `caps`, whether a new task would start now (for
    /// placing a launch in an environment).
    pub fn load(&self, host: &str, brother: &str, caps: Caps) -> Result<Load> {
        let c = &self.conn;
        let in_flight = count(c, "brother", brother, HOLDS_A_SLOT)? + count(c, "brother", brother, WAITING)?;
        let mut full = None;
        for (column, value, cap) in [("brother", brother, caps.brother), ("host", host, caps.host)] {
            let Some(cap) = cap else { continue };
            if count(c, column, value, HOLDS_A_SLOT)? >= cap {
                full = Some(format!("{column} {value} at max_concurrent {cap}"));
            } else if count(c, column, value, WAITING)? > 0 {
                full = Some(format!("tasks already queued for {column} {value}"));
            }
            if full.is_some() {
                break;
            }
        }
        if full.is_none()
            && let Some(r) = spend::reached(c, host, brother, [caps.brother_daily, caps.host_daily])?
        {
            full = Some(format!("{} spent ${:.4} of its ${:.2} daily cap", r.which, r.spent, r.cap));
        }
        Ok(Load { in_flight, full })
    }

    /// Tasks waiting for a slot, oldest first (not those handed to a NATS server: they
    /// were sent, and only the worker's result moves them on).
    pub fn queued(&self) -> Result<Vec<Task>> {
        self.query_tasks(&format!("WHERE {WAITING} ORDER BY id"), [])
    }

    /// Moves a queued task to `launching` if its caps have room now; `None` when they do
    /// not, or when somebody else started (or cancelled) it meanwhile.
    pub fn start_queued(&mut self, task_id: i64, caps: Caps) -> Result<Option<RunStart>> {
        let now = now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(String, String, String, i64)> = tx
            .query_row("SELECT status, host, brother, version FROM tasks WHERE id = ?1", [task_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let Some((status, host, brother, version)) = row else { return Ok(None) };
        let handed: bool = tx.query_row(
            "SELECT broker_at IS NOT NULL FROM runs WHERE task_id = ?1 ORDER BY run_no DESC LIMIT 1",
            [task_id],
            |r| r.get(0),
        )?;
        // A run handed to a NATS server was sent already: starting it again would publish
        // (and could run) it twice.
        if status != TaskStatus::Queued.as_str() || handed || !has_room(&tx, &host, &brother, caps)? {
            return Ok(None);
        }
        let version = transition_in(&tx, task_id, version, TaskStatus::Launching, Some("a slot freed up"), &now)?;
        let (run_no, session, nonce): (i64, String, String) = tx.query_row(
            "SELECT run_no, session, nonce FROM runs WHERE task_id = ?1 ORDER BY run_no DESC LIMIT 1",
            [task_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        tx.execute(
            "UPDATE runs SET status = ?3, started_at = ?4 WHERE task_id = ?1 AND run_no = ?2",
            params![task_id, run_no, TaskStatus::Launching.as_str(), now],
        )?;
        tx.commit()?;
        Ok(Some(RunStart { task_id, run_no, session, nonce, version, queued: false }))
    }

    /// Cancels a task still waiting for a slot, or in the backlog: nothing was sent, so
    /// there is nothing to stop. `false` when it is neither any longer (somebody started it
    /// meanwhile).
    pub fn cancel_queued(&mut self, task_id: i64) -> Result<bool> {
        let now = now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(String, i64)> = tx
            .query_row("SELECT status, version FROM tasks WHERE id = ?1", [task_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((status, version)) = row else { return Ok(false) };
        let reason = match status.parse() {
            Ok(TaskStatus::Queued) => "cancelled while queued; nothing was sent to the brother",
            Ok(TaskStatus::Backlog) => "cancelled in the backlog; it was never started",
            _ => return Ok(false),
        };
        transition_in(&tx, task_id, version, TaskStatus::Cancelled, Some(reason), &now)?;
        tx.execute(
            "UPDATE runs SET status = ?2, error = ?3, finished_at = ?4
             WHERE task_id = ?1 AND run_no = (SELECT max(run_no) FROM runs WHERE task_id = ?1)",
            params![task_id, TaskStatus::Cancelled.as_str(), reason, now],
        )?;
        tx.commit()?;
        Ok(true)
    }
}
