//! The store's side of notifications: rows written with the state change that causes them,
//! claimed for delivery in a transaction, and settled with the outcome.
//!
//! A row is `pending` until a process claims it: the claim (in one `BEGIN IMMEDIATE`
//! transaction) makes it `sending` with a lease and counts the attempt, so a second
//! process delivering at the same moment finds nothing to claim. A process that dies while
//! sending leaves the row to be claimed again when its lease runs out: delivery is at
//! least once, never silently dropped.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Store, now};
use crate::error::Result;
use crate::notify::{Message, NotifyEvent, Plan, Target};
use crate::task::TaskStatus;

/// How long a claim keeps other processes off a row: longer than any one delivery takes
/// (a command gets at most 10 s, a webhook 5 s).
pub const LEASE_MS: i64 = 120_000;

/// After this many failed attempts a notification is given up as `failed`.
pub const MAX_ATTEMPTS: i64 = 12;

/// The most text kept of a delivery error.
const MAX_ERROR: usize = 500;

/// One notification row, for delivery and for `notify list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Notification {
    pub id: i64,
    pub message: Message,
    pub target: Target,
    /// pending, sending, sent or failed.
    pub state: String,
    pub attempts: i64,
    /// Unix milliseconds of the next attempt (pending only).
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
}

/// Unix milliseconds now, on the lead's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The wait before attempt `attempts + 1` after `attempts` failed ones: `base` doubled each
/// time, at most an hour.
pub fn backoff_ms(base_ms: i64, attempts: i64) -> i64 {
    const CAP_MS: i64 = 3_600_000;
    base_ms.saturating_mul(1i64 << attempts.clamp(1, 30).saturating_sub(1)).min(CAP_MS)
}

/// Inside a state change's transaction: one row per target of the task's plan when its new
/// status raises an event the plan wants.
pub(super) fn enqueue_for_status(
    tx: &rusqlite::Connection,
    task_id: i64,
    to: TaskStatus,
    reason: Option<&str>,
    now: &str,
) -> Result<()> {
    let Some(event) = NotifyEvent::for_status(to) else { return Ok(()) };
    let row: Option<(Option<String>, String, String)> = tx
        .prepare_cached("SELECT notify, brother, subject FROM tasks WHERE id = ?1")?
        .query_row([task_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((Some(plan), brother, subject)) = row else { return Ok(()) };
    // A plan this build cannot read (a newer delegate wrote it) sends nothing rather than
    // failing the state change.
    let Ok(plan) = serde_json::from_str::<Plan>(&plan) else { return Ok(()) };
    if !plan.on.contains(&event) {
        return Ok(());
    }
    for target in &plan.targets {
        tx.prepare_cached(
            "INSERT INTO notifications (task_id, event, status, brother, subject, reason, target, next_attempt_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            task_id,
            event.as_str(),
            to.as_str(),
            brother,
            subject,
            reason,
            serde_json::to_string(target).expect("targets serialize"),
            now_ms(),
            now
        ])?;
    }
    Ok(())
}

/// Records a schedule's missed slot for each target in the caller's transaction (the
/// scheduler's, which records the misfire itself); the same slot twice is recorded once.
pub(crate) fn insert_misfire(
    tx: &rusqlite::Connection,
    targets: &[Target],
    schedule: &str,
    slot: &str,
    reason: &str,
) -> Result<usize> {
    let mut added = 0;
    for target in targets {
        added += tx.execute(
            "INSERT OR IGNORE INTO notifications
                 (schedule, slot, event, status, subject, reason, target, next_attempt_at, created_at)
             VALUES (?1, ?2, 'schedule_misfire', 'misfire', ?3, ?4, ?5, ?6, ?7)",
            params![
                schedule,
                slot,
                format!("slot {slot}"),
                reason,
                serde_json::to_string(target).expect("targets serialize"),
                now_ms(),
                now()
            ],
        )?;
    }
    Ok(added)
}

impl Store {
    /// Records a schedule's missed slot for each target; the same slot twice is recorded once.
    pub fn enqueue_misfire(&mut self, targets: &[Target], schedule: &str, slot: &str, reason: &str) -> Result<usize> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let added = insert_misfire(&tx, targets, schedule, slot, reason)?;
        tx.commit()?;
        Ok(added)
    }

    /// Claims the oldest due notification (pending and due at `now_ms`, or `sending` with
    /// a lease that ran out), counting the attempt; `None` when nothing is due.
    pub fn claim_notification(&mut self, now_ms: i64) -> Result<Option<Notification>> {
        // Every sync asks; a plain read first keeps the usual answer (nothing due) from
        // taking the write lock other writers wait on.
        if due(&self.conn, now_ms)?.is_none() {
            return Ok(None);
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Again under the lock: another process may have claimed it meanwhile.
        let Some(id) = due(&tx, now_ms)? else { return Ok(None) };
        tx.execute(
            "UPDATE notifications SET state = 'sending', claimed_until = ?2, attempts = attempts + 1 WHERE id = ?1",
            params![id, now_ms + LEASE_MS],
        )?;
        let n = tx.query_row(&format!("{SELECT} WHERE id = ?1"), [id], row)?;
        tx.commit()?;
        Ok(Some(n))
    }

    /// Settles a claimed notification: `sent`, or (with the error) due again after
    /// [`backoff_ms`], or `failed` after [`MAX_ATTEMPTS`].
    pub fn settle_notification(&mut self, id: i64, error: Option<&str>, now_ms: i64, base_ms: i64) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        match error {
            None => {
                tx.execute(
                    "UPDATE notifications SET state = 'sent', sent_at = ?2, claimed_until = NULL, last_error = NULL
                     WHERE id = ?1",
                    params![id, now()],
                )?;
            }
            Some(e) => {
                let attempts: i64 =
                    tx.query_row("SELECT attempts FROM notifications WHERE id = ?1", [id], |r| r.get(0))?;
                let state = if attempts >= MAX_ATTEMPTS { "failed" } else { "pending" };
                tx.execute(
                    "UPDATE notifications SET state = ?2, next_attempt_at = ?3, claimed_until = NULL, last_error = ?4
                     WHERE id = ?1",
                    params![
                        id,
                        state,
                        now_ms + backoff_ms(base_ms, attempts),
                        crate::sanitize::clean_line(e, MAX_ERROR)
                    ],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The newest `limit` notifications, newest first.
    pub fn notifications(&self, limit: u32) -> Result<Vec<Notification>> {
        let mut st = self.conn.prepare(&format!("{SELECT} ORDER BY id DESC LIMIT ?1"))?;
        let rows = st.query_map([limit], row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

/// The oldest notification due at `now_ms`: pending and due, or claimed by a process whose
/// lease ran out.
fn due(conn: &rusqlite::Connection, now_ms: i64) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT id FROM notifications
             WHERE (state = 'pending' AND next_attempt_at <= ?1) OR (state = 'sending' AND claimed_until <= ?1)
             ORDER BY next_attempt_at, id LIMIT 1",
        )?
        .query_row([now_ms], |r| r.get(0))
        .optional()?)
}

const SELECT: &str = "SELECT id, task_id, schedule, event, status, brother, subject, coalesce(reason, ''), target,
                             state, attempts, next_attempt_at, last_error, created_at, sent_at
                      FROM notifications";

fn row(r: &rusqlite::Row) -> rusqlite::Result<Notification> {
    let target: String = r.get(8)?;
    let target = serde_json::from_str(&target)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(8, rusqlite::types::Type::Text, Box::new(e)))?;
    Ok(Notification {
        id: r.get(0)?,
        message: Message {
            task: r.get(1)?,
            schedule: r.get(2)?,
            event: r.get(3)?,
            status: r.get(4)?,
            brother: r.get(5)?,
            subject: r.get(6)?,
            reason: r.get(7)?,
        },
        target,
        state: r.get(9)?,
        attempts: r.get(10)?,
        next_attempt_at: r.get(11)?,
        last_error: r.get(12)?,
        created_at: r.get(13)?,
        sent_at: r.get(14)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped_at_an_hour() {
        assert_eq!([1, 2, 3, 4].map(|a| backoff_ms(30_000, a)), [30_000, 60_000, 120_000, 240_000]);
        assert_eq!(backoff_ms(30_000, 40), 3_600_000);
    }
}
