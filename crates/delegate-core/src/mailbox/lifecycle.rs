//! The store's side of sync: which runs are in flight, and applying what a sync learned.
//!
//! A sync of one host is applied in a few transactions of bounded size
//! ([`MAX_ROWS_PER_TRANSACTION`]), each holding whole tasks: another process never waits
//! for the write lock longer than one of them takes. Each task gets a savepoint, so a task
//! somebody else moved meanwhile (its version changed, or another sync moved its offsets) is
//! skipped whole, offsets included, and simply read again next time; the other tasks of the
//! host still land. The per-run row caps ([`crate::mailbox::row_caps`]) are applied here, under the
//! lock, where the rows already stored can be counted exactly.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Store, now, transition_in};
use crate::error::{Error, Result};
use crate::mailbox::row_caps::{
    MAX_EVENTS_PER_RUN, MAX_REPORTS_PER_RUN, MAX_ROWS_PER_TRANSACTION, OVER_CAP_EVENT, Skipped,
};
use crate::task::TaskStatus;

/// A run whose task is not finished, with everything sync needs to ask about it.
#[derive(Debug, Clone)]
pub struct InFlight {
    pub task_id: i64,
    pub run_no: i64,
    pub host: String,
    pub agent: String,
    pub status: TaskStatus,
    pub version: i64,
    pub session: String,
    pub nonce: String,
    pub offsets: BTreeMap<String, u64>,
    /// The brother's file-system clock (ms) of the last sync that read every file of this
    /// run to the end ([`crate::remote::protocol::SyncTaskRequest::clock_ms`]).
    pub clock_ms: Option<u64>,
    pub facts: String,
    pub stderr_head: String,
    pub updated_at: String,
    /// The task's reason as recorded (for `launch_unknown`: what the launch saw).
    pub reason: String,
    /// The run's spend limit, named in a budget stop's reason.
    pub max_budget_usd: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub at: String,
    pub kind: String,
    pub summary: String,
    pub data: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub seq: i64,
    pub kind: String,
    pub text: String,
    pub at: String,
}

/// How a run ended, as its runner recorded it.
#[derive(Debug, Clone)]
pub struct RunEnd {
    pub exit_code: i64,
    pub reason: Option<String>,
    pub at: String,
    pub outcome: serde_json::Value,
}

/// Everything one sync learned about one run.
#[derive(Debug, Clone, Default)]
pub struct Ingest {
    pub task_id: i64,
    pub run_no: i64,
    pub expected_version: i64,
    /// The offsets the sync asked from (the run's as read): if another sync moved them
    /// meanwhile, these lines are already in, and the task is skipped as a conflict.
    pub read_offsets: BTreeMap<String, u64>,
    /// Where each file's offset moves to.
    pub offsets: BTreeMap<String, u64>,
    /// The run's clock: `Some(Some(ms))` stores it, `Some(None)` forgets it (the next sync
    /// looks at every file again), `None` leaves it.
    pub clock_ms: Option<Option<u64>>,
    pub facts: Option<String>,
    pub stderr_head: Option<String>,
    pub events: Vec<NewEvent>,
    pub messages: Vec<NewMessage>,
    pub transition: Option<(TaskStatus, Option<String>)>,
    pub end: Option<RunEnd>,
    pub turns: Option<u32>,
    pub cost_usd: Option<f64>,
    pub last_event: Option<String>,
    /// Receipts from the brother's inbox: (message id, time, how: hook, inbox or ack).
    pub receipts: Vec<(i64, String, String)>,
    /// Lines the per-sync caps left out (the per-run caps add theirs when applied).
    pub skipped: Skipped,
}

impl Ingest {
    /// Rows this ingest writes at most, to size transactions.
    fn rows(&self) -> usize {
        1 + self.offsets.len() + self.events.len() + self.messages.len() + self.receipts.len()
    }

    /// Nothing to write but the task's `synced_at`: the brother had nothing new for it.
    fn only_seen(&self) -> bool {
        self.offsets.is_empty()
            && self.clock_ms.is_none()
            && self.facts.is_none()
            && self.stderr_head.is_none()
            && self.events.is_empty()
            && self.messages.is_empty()
            && self.transition.is_none()
            && self.end.is_none()
            && self.turns.is_none()
            && self.cost_usd.is_none()
            && self.last_event.is_none()
            && self.receipts.is_empty()
            && !self.skipped.any()
    }
}

/// The row of `offsets` that holds a run's clock rather than a file's offset (no task file
/// has this name: [`crate::remote::protocol::SYNCED_FILES`]).
pub const CLOCK_ROW: &str = "@clock";

/// What became of one task's ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Done {
        new_status: Option<TaskStatus>,
    },
    /// Another process moved the task first; nothing was written for it.
    Conflict,
}

impl Store {
    /// Runs of unfinished tasks (the latest run of each), oldest task first.
    pub fn in_flight(&self) -> Result<Vec<InFlight>> {
        let mut st = self.conn.prepare(
            "SELECT t.id, r.run_no, t.host, t.agent, t.status, t.version, r.session, r.nonce, r.facts,
                    coalesce(r.stderr_head, ''), t.updated_at, coalesce(t.reason, ''), t.options
             FROM tasks t JOIN runs r ON r.task_id = t.id
             WHERE (t.status IN ('launching', 'launched', 'running', 'needs_input', 'launch_unknown')
                    OR (t.status = 'queued' AND r.broker_at IS NOT NULL))
               AND r.run_no = (SELECT max(run_no) FROM runs WHERE task_id = t.id)
             ORDER BY t.id",
        )?;
        let rows = st.query_map([], |r| {
            Ok(InFlight {
                task_id: r.get(0)?,
                run_no: r.get(1)?,
                host: r.get(2)?,
                agent: r.get(3)?,
                status: super::parse_col(r, 4)?,
                version: r.get(5)?,
                session: r.get(6)?,
                nonce: r.get(7)?,
                offsets: BTreeMap::new(),
                clock_ms: None,
                facts: r.get(8)?,
                stderr_head: r.get(9)?,
                updated_at: r.get(10)?,
                reason: r.get(11)?,
                max_budget_usd: r
                    .get::<_, Option<String>>(12)?
                    .and_then(|o| serde_json::from_str::<crate::agents::AgentOptions>(&o).ok())
                    .and_then(|o| o.max_budget_usd),
            })
        })?;
        let mut runs: Vec<InFlight> = rows.collect::<std::result::Result<_, _>>()?;
        // Every run's offsets in one query (a query per run costs more with many runs).
        let at: std::collections::HashMap<(i64, i64), usize> =
            runs.iter().enumerate().map(|(n, r)| ((r.task_id, r.run_no), n)).collect();
        let ids = serde_json::to_string(&runs.iter().map(|r| r.task_id).collect::<Vec<_>>()).unwrap_or_default();
        let mut off = self.conn.prepare_cached(
            "SELECT task_id, run_no, file, offset FROM offsets WHERE task_id IN (SELECT value FROM json_each(?1))",
        )?;
        let rows = off.query_map([ids], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
        })?;
        for row in rows {
            let (task_id, run_no, file, offset) = row?;
            let Some(run) = at.get(&(task_id, run_no)).map(|n| &mut runs[*n]) else { continue };
            if file == CLOCK_ROW {
                run.clock_ms = Some(offset as u64);
            } else {
                run.offsets.insert(file, offset as u64);
            }
        }
        Ok(runs)
    }

    /// Applies one host's sync, whole tasks in transactions of about
    /// [`MAX_ROWS_PER_TRANSACTION`] rows; each task is all-or-nothing.
    pub fn apply_sync(&mut self, batch: &[Ingest]) -> Result<Vec<(i64, Applied)>> {
        let now = now();
        let mut results = Vec::with_capacity(batch.len());
        // Tasks the brother had nothing new for only get their `synced_at`: one statement
        // for all of them (a sync of a thousand quiet tasks is otherwise a thousand).
        let (seen, batch): (Vec<&Ingest>, Vec<&Ingest>) = batch.iter().partition(|i| i.only_seen());
        if !seen.is_empty() {
            // When the lead last heard of the task: true whatever else changed it meanwhile,
            // so no version is checked.
            let ids = serde_json::to_string(&seen.iter().map(|i| i.task_id).collect::<Vec<_>>()).unwrap_or_default();
            self.conn.execute(
                "UPDATE tasks SET synced_at = ?1 WHERE id IN (SELECT value FROM json_each(?2))",
                params![now, ids],
            )?;
            results.extend(seen.iter().map(|i| (i.task_id, Applied::Done { new_status: None })));
        }
        for chunk in transactions(&batch) {
            let mut tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for ing in chunk.iter().copied() {
                let sp = tx.savepoint()?;
                match apply_one(&sp, ing, &now) {
                    Ok(new_status) => {
                        sp.commit()?;
                        results.push((ing.task_id, Applied::Done { new_status }));
                    }
                    Err(Error::Conflict { .. }) => {
                        drop(sp); // rolls back this task only
                        results.push((ing.task_id, Applied::Conflict));
                    }
                    Err(e) => return Err(e),
                }
            }
            tx.commit()?;
        }
        Ok(results)
    }
}

/// Splits a host's ingests into transactions: whole tasks, as many as fit
/// [`MAX_ROWS_PER_TRANSACTION`] rows (at least one).
pub(super) fn transactions<'a, 'b>(batch: &'b [&'a Ingest]) -> Vec<&'b [&'a Ingest]> {
    let mut chunks = Vec::new();
    let mut rest = batch;
    while !rest.is_empty() {
        let mut rows = rest[0].rows();
        let mut n = 1;
        while n < rest.len() && rows + rest[n].rows() <= MAX_ROWS_PER_TRANSACTION {
            rows += rest[n].rows();
            n += 1;
        }
        let (chunk, tail) = rest.split_at(n);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

/// Rows of `sql` (a `SELECT 1 ... LIMIT ?3` over one run), counted no further than the cap.
fn stored(tx: &rusqlite::Savepoint, sql: &str, ing: &Ingest, cap: u64) -> Result<u64> {
    let n: i64 = tx
        .prepare_cached(&format!("SELECT count(*) FROM ({sql})"))?
        .query_row(params![ing.task_id, ing.run_no, cap as i64], |r| r.get(0))?;
    Ok(n as u64)
}

/// Adds `skipped` to the run's one over-cap event. The event is written anew each time (the
/// old row goes), so it sits with the newest items of the thread and the `monitor` feed
/// shows the new count.
fn note_skipped(tx: &rusqlite::Savepoint, ing: &Ingest, skipped: Skipped, now: &str) -> Result<()> {
    let found: Option<(i64, Option<String>)> = tx
        .prepare_cached(
            "SELECT id, data FROM events WHERE task_id = ?1 AND run_no = ?2 AND kind = ?3 ORDER BY id LIMIT 1",
        )?
        .query_row(params![ing.task_id, ing.run_no, OVER_CAP_EVENT], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let mut total: Skipped =
        found.as_ref().and_then(|(_, data)| serde_json::from_str(data.as_deref()?).ok()).unwrap_or_default();
    total.add(skipped);
    let (summary, data) = (total.summary(ing.task_id), serde_json::to_string(&total).unwrap_or_default());
    // Insert before deleting: a row id freed first would be handed out again, and a
    // `monitor` already past it would never see the new count.
    tx.execute(
        "INSERT INTO events (task_id, run_no, at, kind, summary, data, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?3)",
        params![ing.task_id, ing.run_no, now, OVER_CAP_EVENT, summary, data],
    )?;
    if let Some((id, _)) = found {
        tx.execute("DELETE FROM events WHERE id = ?1", [id])?;
    }
    Ok(())
}

/// Stores or forgets the run's clock, as the ingest says.
fn store_clock(tx: &rusqlite::Connection, ing: &Ingest) -> Result<()> {
    match ing.clock_ms {
        Some(Some(ms)) => {
            tx.prepare_cached(
                "INSERT INTO offsets (task_id, run_no, file, offset) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (task_id, run_no, file) DO UPDATE SET offset = excluded.offset",
            )?
            .execute(params![ing.task_id, ing.run_no, CLOCK_ROW, ms.min(i64::MAX as u64) as i64])?;
        }
        Some(None) => {
            tx.prepare_cached("DELETE FROM offsets WHERE task_id = ?1 AND run_no = ?2 AND file = ?3")?
                .execute(params![ing.task_id, ing.run_no, CLOCK_ROW])?;
        }
        None => {}
    }
    Ok(())
}

fn apply_one(tx: &rusqlite::Savepoint, ing: &Ingest, now: &str) -> Result<Option<TaskStatus>> {
    // Re-check the version even when the status stays: offsets and facts belong to the state
    // the caller read, and a concurrent writer's view must not be half-overwritten.
    let version: Option<i64> =
        tx.query_row("SELECT version FROM tasks WHERE id = ?1", [ing.task_id], |r| r.get(0)).optional()?;
    if version != Some(ing.expected_version) {
        return Err(Error::Conflict { task: ing.task_id, expected: ing.expected_version });
    }
    // Another sync (a second command) may have landed the same lines meanwhile without
    // changing the status: storing them again would duplicate every event.
    for file in ing.offsets.keys() {
        let now_at: Option<i64> = tx
            .prepare_cached("SELECT offset FROM offsets WHERE task_id = ?1 AND run_no = ?2 AND file = ?3")?
            .query_row(params![ing.task_id, ing.run_no, file], |r| r.get(0))
            .optional()?;
        if now_at.unwrap_or(0) as u64 != ing.read_offsets.get(file).copied().unwrap_or(0) {
            return Err(Error::Conflict { task: ing.task_id, expected: ing.expected_version });
        }
    }
    store_clock(tx, ing)?;
    for (file, offset) in &ing.offsets {
        tx.prepare_cached(
            "INSERT INTO offsets (task_id, run_no, file, offset) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (task_id, run_no, file) DO UPDATE SET offset = excluded.offset",
        )?
        .execute(params![ing.task_id, ing.run_no, file, *offset as i64])?;
    }
    if let Some(f) = &ing.facts {
        tx.execute(
            "UPDATE runs SET facts = ?3 WHERE task_id = ?1 AND run_no = ?2",
            params![ing.task_id, ing.run_no, f],
        )?;
    }
    if let Some(h) = &ing.stderr_head {
        tx.execute(
            "UPDATE runs SET stderr_head = ?3 WHERE task_id = ?1 AND run_no = ?2",
            params![ing.task_id, ing.run_no, h],
        )?;
    }
    let mut skipped = ing.skipped;
    if !ing.events.is_empty() {
        let sql =
            format!("SELECT 1 FROM events WHERE task_id = ?1 AND run_no = ?2 AND kind != '{OVER_CAP_EVENT}' LIMIT ?3");
        let room = MAX_EVENTS_PER_RUN.saturating_sub(stored(tx, &sql, ing, MAX_EVENTS_PER_RUN)?) as usize;
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (task_id, run_no, at, kind, summary, data, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for e in ing.events.iter().take(room) {
            insert.execute(params![ing.task_id, ing.run_no, e.at, e.kind, e.summary, e.data, now])?;
        }
        skipped.events += ing.events.len().saturating_sub(room) as u64;
    }
    if !ing.messages.is_empty() {
        let sql = "SELECT 1 FROM messages WHERE task_id = ?1 AND run_no = ?2 AND direction = 'from_brother' LIMIT ?3";
        let mut room = MAX_REPORTS_PER_RUN.saturating_sub(stored(tx, sql, ing, MAX_REPORTS_PER_RUN)?);
        // The brother numbers its messages; a message seen twice lands once.
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO messages (task_id, run_no, direction, author, seq, kind, text, at, received_at)
             VALUES (?1, ?2, 'from_brother', (SELECT brother FROM tasks WHERE id = ?1), ?3, ?4, ?5, ?6, ?7)",
        )?;
        for m in &ing.messages {
            if room == 0 {
                skipped.reports += 1;
            } else {
                room -= insert.execute(params![ing.task_id, ing.run_no, m.seq, m.kind, m.text, m.at, now])? as u64;
            }
        }
    }
    for (id, at, via) in &ing.receipts {
        // Delivered when the agent's side picked it up; read when the agent acknowledged it.
        let column = if via == "ack" { "read_at" } else { "delivered_at" };
        tx.prepare_cached(&format!(
            "UPDATE messages SET {column} = coalesce({column}, ?3)
             WHERE id = ?1 AND task_id = ?2 AND direction = 'to_brother'"
        ))?
        .execute(params![id, ing.task_id, at])?;
    }
    if skipped.any() {
        note_skipped(tx, ing, skipped, now)?;
    }
    if let Some(end) = &ing.end {
        tx.execute(
            "UPDATE runs SET exit_code = ?3, exit_reason = ?4, ended_at = ?5, outcome = ?6
             WHERE task_id = ?1 AND run_no = ?2",
            params![ing.task_id, ing.run_no, end.exit_code, end.reason, end.at, end.outcome.to_string()],
        )?;
        tx.execute("UPDATE tasks SET exit_code = ?2 WHERE id = ?1", params![ing.task_id, end.exit_code])?;
    }
    tx.execute(
        "UPDATE tasks SET turns = coalesce(?2, turns), cost_usd = coalesce(?3, cost_usd),
                          last_event = coalesce(?4, last_event), synced_at = ?5
         WHERE id = ?1",
        params![ing.task_id, ing.turns, ing.cost_usd, ing.last_event, now],
    )?;
    let mut new_status = None;
    if let Some((to, reason)) = &ing.transition {
        transition_in(tx, ing.task_id, ing.expected_version, *to, reason.as_deref(), now)?;
        tx.execute(
            "UPDATE runs SET status = ?3 WHERE task_id = ?1 AND run_no = ?2",
            params![ing.task_id, ing.run_no, to.as_str()],
        )?;
        new_status = Some(*to);
    }
    Ok(new_status)
}
