//! Tasks handed to an agentbus worker (migration 014): which agentbus task id each became,
//! where the lead's reading of the results stopped, and a result recorded exactly once.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Store, now, transition_in};
use crate::error::Result;
use crate::task::TaskStatus;

/// A task's agentbus side, as the mailbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handed {
    pub task_id: i64,
    pub message_id: String,
    pub worker: String,
    pub reply_to: String,
    pub result_seq: Option<i64>,
}

/// What a result read from the stream says, made safe by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRecord {
    pub message_id: String,
    pub completed: bool,
    /// The final text (completed) or the reason (failed), sanitized and bounded.
    pub text: String,
}

impl Store {
    /// Records that `task_id` went to agentbus worker `worker` as task `message_id`, and
    /// moves the task to `launched` (the message is stored in AGENTBUS_TASKS: some worker of
    /// that id takes it; agentbus says nothing more until the result).
    pub fn agentbus_handed(
        &mut self,
        task_id: i64,
        expected_version: i64,
        message_id: &str,
        worker: &str,
        reply_to: &str,
    ) -> Result<i64> {
        let now = now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO agentbus_tasks (task_id, message_id, worker, reply_to, published_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![task_id, message_id, worker, reply_to, now],
        )?;
        let v = transition_in(&tx, task_id, expected_version, TaskStatus::Launched, None, &now)?;
        tx.commit()?;
        Ok(v)
    }

    /// Which of `ids` were handed to an agentbus worker: one query for a sync's thousand
    /// runs (a query per run cost ~5 ms there).
    pub fn agentbus_tasks_among(&self, ids: &[i64]) -> Result<std::collections::HashSet<i64>> {
        let ids = serde_json::to_string(ids).unwrap_or_default();
        let mut st = self
            .conn
            .prepare_cached("SELECT task_id FROM agentbus_tasks WHERE task_id IN (SELECT value FROM json_each(?1))")?;
        let rows = st.query_map([ids], |r| r.get::<_, i64>(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The task's agentbus side, if it was handed to an agentbus worker.
    pub fn agentbus_task(&self, task_id: i64) -> Result<Option<Handed>> {
        Ok(self
            .conn
            .query_row(
                "SELECT task_id, message_id, worker, reply_to, result_seq FROM agentbus_tasks WHERE task_id = ?1",
                [task_id],
                |r| {
                    Ok(Handed {
                        task_id: r.get(0)?,
                        message_id: r.get(1)?,
                        worker: r.get(2)?,
                        reply_to: r.get(3)?,
                        result_seq: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// The last AGENTBUS_RESULTS sequence read for `reply_to` (0: none yet).
    pub fn agentbus_cursor(&self, reply_to: &str) -> Result<u64> {
        let seq: Option<i64> = self
            .conn
            .query_row("SELECT seq FROM agentbus_cursors WHERE reply_to = ?1", [reply_to], |r| r.get(0))
            .optional()?;
        Ok(seq.unwrap_or(0).max(0) as u64)
    }

    /// Applies the result at stream sequence `seq` (when it answers a task of this mailbox
    /// not answered yet, and the task is not finished otherwise, such as cancelled by hand)
    /// and moves the cursor past it, in one transaction. Returns the task recorded.
    pub fn agentbus_record(&mut self, reply_to: &str, seq: u64, result: Option<&ResultRecord>) -> Result<Option<i64>> {
        let now = now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut recorded = None;
        if let Some(r) = result {
            let row: Option<(i64, String, i64, String, i64)> = tx
                .query_row(
                    "SELECT a.task_id, a.worker, t.version, t.status,
                            COALESCE((SELECT MAX(run_no) FROM runs WHERE runs.task_id = t.id), 1)
                     FROM agentbus_tasks a
                     JOIN tasks t ON t.id = a.task_id
                     WHERE a.message_id = ?1 AND a.reply_to = ?2 AND a.result_seq IS NULL",
                    params![r.message_id, reply_to],
                    |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?, x.get(4)?)),
                )
                .optional()?;
            if let Some((task_id, worker, version, status, run_no)) = row {
                let finished = status.parse::<TaskStatus>().map(TaskStatus::is_terminal).unwrap_or(false);
                if !finished {
                    if r.completed {
                        transition_in(&tx, task_id, version, TaskStatus::Completed, None, &now)?;
                        tx.execute(
                            "INSERT INTO messages (task_id, run_no, direction, author, kind, text, at)
                             VALUES (?1, ?2, 'from_brother', ?3, 'done', ?4, ?5)",
                            params![task_id, run_no, worker, r.text, now],
                        )?;
                    } else {
                        let reason = format!("agentbus worker {worker} failed: {}", r.text);
                        transition_in(&tx, task_id, version, TaskStatus::Failed, Some(&reason), &now)?;
                    }
                }
                tx.execute(
                    "UPDATE agentbus_tasks SET result_seq = ?2 WHERE task_id = ?1",
                    params![task_id, seq as i64],
                )?;
                recorded = Some(task_id);
            }
        }
        tx.execute(
            "INSERT INTO agentbus_cursors (reply_to, seq) VALUES (?1, ?2)
             ON CONFLICT (reply_to) DO UPDATE SET seq = MAX(seq, excluded.seq)",
            params![reply_to, seq as i64],
        )?;
        tx.commit()?;
        Ok(recorded)
    }
}
