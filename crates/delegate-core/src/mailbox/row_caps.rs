//! How many rows one task may add to the mailbox: per sync round and per run.
//!
//! The byte caps of a sync ([`crate::ops::sync`]) bound memory, not rows: 4 MiB of 14-byte event
//! lines is 300,000 rows, and a brother (hostile, or an agent stuck in a loop) could grow the
//! mailbox without limit and hold its write lock for a minute while each reply lands. So a
//! sync stores at most these many rows per task per round and per run. What is over a cap
//! is counted, not stored, and said in ONE event per run (kind [`OVER_CAP_EVENT`]; its text
//! and counts grow as more is left out). Offsets still move over the lines left out, so
//! nothing is read twice, and the brother's task directory keeps every line (`delegate logs
//! N --events`, `--reports`).
//!
//! Why these sizes: a long real Claude or Codex run records a few thousand events (one per
//! tool call, a few per session) and tens of reports (a receipt, some progress, the end),
//! and receives three receipts per message the lead says. The per-sync caps hold a whole
//! such run, so a lead that syncs only once at the end still gets every row; the per-run
//! caps are ten times that. Only a flood reaches them. Status changes need no cap: a sync
//! round records at most one per task.

use serde::{Deserialize, Serialize};

/// Events (hook lines, plus delegate's own `skipped` and `bad_report` notes) stored per task
/// per sync round.
pub const MAX_EVENTS_PER_SYNC: usize = 10_000;
/// Reports (`outbox.jsonl` lines) stored per task per sync round.
pub const MAX_REPORTS_PER_SYNC: usize = 1_000;
/// Receipts of the lead's messages (`delivered.jsonl` lines) applied per task per sync round.
/// They add no rows, but each is a write under the lock.
pub const MAX_RECEIPTS_PER_SYNC: usize = 1_000;
/// Events kept per run, the over-cap note aside.
pub const MAX_EVENTS_PER_RUN: u64 = 50_000;
/// Reports kept per run.
pub const MAX_REPORTS_PER_RUN: u64 = 5_000;
/// A sync commits its tasks in transactions of about this many rows (a task is never split,
/// and one task brings at most the per-sync caps), so another process waiting for the
/// mailbox's write lock (a second `delegate status`, the MCP server) waits for one such
/// transaction, a fraction of a second, never for a whole sync.
pub const MAX_ROWS_PER_TRANSACTION: usize = 10_000;

/// The kind of the one event per run that counts what the caps left out.
pub const OVER_CAP_EVENT: &str = "over_cap";

/// Lines a sync did not store because a cap was reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    #[serde(default)]
    pub events: u64,
    #[serde(default)]
    pub reports: u64,
    #[serde(default)]
    pub receipts: u64,
}

impl Skipped {
    pub fn any(&self) -> bool {
        self.events + self.reports + self.receipts > 0
    }

    pub fn add(&mut self, other: Skipped) {
        self.events += other.events;
        self.reports += other.reports;
        self.receipts += other.receipts;
    }

    /// The over-cap event's text: how many of each, the caps, and where the lines are.
    pub fn summary(&self, task_id: i64) -> String {
        let mut parts = Vec::new();
        if self.events > 0 {
            parts.push(format!(
                "{} events ({MAX_EVENTS_PER_SYNC} per sync, {MAX_EVENTS_PER_RUN} per run; all of them: `delegate logs {task_id} --events`)",
                self.events
            ));
        }
        if self.reports > 0 {
            parts.push(format!(
                "{} reports ({MAX_REPORTS_PER_SYNC} per sync, {MAX_REPORTS_PER_RUN} per run; all of them: `delegate logs {task_id} --reports`)",
                self.reports
            ));
        }
        if self.receipts > 0 {
            parts.push(format!(
                "{} message receipts ({MAX_RECEIPTS_PER_SYNC} per sync; delivered.jsonl in the task directory)",
                self.receipts
            ));
        }
        format!("over the mailbox's row caps, not stored: {}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_each_kind_and_says_where_the_lines_are() {
        let s = Skipped { events: 1_950_000, reports: 0, receipts: 3 };
        let text = s.summary(7);
        assert!(text.contains("1950000 events") && text.contains("`delegate logs 7 --events`"), "{text}");
        assert!(text.contains("3 message receipts") && !text.contains("reports"), "{text}");
        let mut total = s;
        total.add(Skipped { events: 1, reports: 2, receipts: 0 });
        assert_eq!(total, Skipped { events: 1_950_001, reports: 2, receipts: 3 });
        assert!(!Skipped::default().any() && total.any());
    }
}
