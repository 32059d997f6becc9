//! The store's side of the NATS transport: runs handed to a NATS server (waiting `queued`
//! for a worker to take them), the worker replica that took each, and where the lead
//! stopped reading each NATS host's results.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{RunStart, Store, now, transition_in};
use crate::error::Result;
use crate::task::TaskStatus;

/// A run handed to a NATS server and not taken yet (as far as the lead knows).
#[derive(Debug, Clone)]
pub struct Handed {
    pub task_id: i64,
    pub run_no: i64,
    pub version: i64,
    pub session: String,
    pub nonce: String,
    pub brother: String,
    pub host: String,
    /// When JetStream acknowledged the task message (RFC 3339).
    pub broker_at: String,
    /// The launch evidence recorded when it was handed over (address, plan, settings).
    pub evidence: serde_json::Value,
}

impl Store {
    /// Records that a launching run's task message was published: the task waits `queued`
    /// for the worker, with `reason` saying so, and `evidence` kept for the launch record.
    pub fn hand_to_broker(&mut self, run: &RunStart, reason: &str, evidence: &serde_json::Value) -> Result<i64> {
        let now = now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version = transition_in(&tx, run.task_id, run.version, TaskStatus::Queued, Some(reason), &now)?;
        tx.execute(
            "UPDATE runs SET status = 'queued', broker_at = ?3, evidence = ?4 WHERE task_id = ?1 AND run_no = ?2",
            params![run.task_id, run.run_no, now, evidence.to_string()],
        )?;
        tx.commit()?;
        Ok(version)
    }

    /// The run of `task_key`'s task handed to a NATS server and still waiting for its worker.
    pub fn handed(&self, task_id: i64, run_no: i64) -> Result<Option<Handed>> {
        let row = self
            .conn
            .query_row(
                "SELECT t.id, r.run_no, t.version, r.session, r.nonce, t.brother, t.host, r.broker_at,
                        coalesce(r.evidence, 'null')
                 FROM tasks t JOIN runs r ON r.task_id = t.id
                 WHERE t.id = ?1 AND r.run_no = ?2 AND r.broker_at IS NOT NULL
                   AND t.status IN ('queued', 'launching', 'launch_unknown')
                   AND r.run_no = (SELECT max(run_no) FROM runs WHERE task_id = t.id)",
                params![task_id, run_no],
                |r| {
                    Ok(Handed {
                        task_id: r.get(0)?,
                        run_no: r.get(1)?,
                        version: r.get(2)?,
                        session: r.get(3)?,
                        nonce: r.get(4)?,
                        brother: r.get(5)?,
                        host: r.get(6)?,
                        broker_at: r.get(7)?,
                        evidence: serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or_default(),
                    })
                },
            )
            .optional()?;
        Ok(row)
    }

    /// Records the worker replica that ran a run (its `launched` result named it).
    pub fn set_instance(&mut self, task_id: i64, run_no: i64, instance: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET instance = ?3 WHERE task_id = ?1 AND run_no = ?2",
            params![task_id, run_no, instance],
        )?;
        Ok(())
    }

    /// The worker replica that ran the task's latest run, if a NATS worker did.
    pub fn instance(&self, task_id: i64) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT instance FROM runs WHERE task_id = ?1 ORDER BY run_no DESC LIMIT 1", [task_id], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()?
            .flatten())
    }

    /// Hosts with a task cancelled while it waited in a NATS server's stream (no worker took
    /// it, as far as the lead knows, in the stream's 7 days): a worker may still launch it, and
    /// sync stops that agent when its `launched` result comes.
    pub fn hosts_with_cancelled_in_broker(&self) -> Result<Vec<String>> {
        let mut st = self.conn.prepare(
            "SELECT DISTINCT t.host FROM tasks t JOIN runs r ON r.task_id = t.id
             WHERE t.status = 'cancelled' AND r.broker_at IS NOT NULL AND r.instance IS NULL
               AND r.broker_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-7 days')
               AND r.run_no = (SELECT max(run_no) FROM runs WHERE task_id = t.id)",
        )?;
        let hosts = st.query_map([], |r| r.get(0))?.collect::<std::result::Result<Vec<String>, _>>()?;
        Ok(hosts)
    }

    /// The last results stream sequence read for `host` (0: none yet, or the host now points
    /// at another server or worker).
    pub fn nats_cursor(&self, host: &str, url: &str, worker_id: &str) -> Result<u64> {
        let seq: Option<Option<i64>> = self
            .conn
            .query_row(
                "SELECT nats_seq FROM host_syncs WHERE host = ?1 AND nats_url = ?2 AND nats_worker = ?3",
                params![host, url, worker_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(seq.flatten().map_or(0, |s| s.max(0) as u64))
    }

    /// Stores where reading `host`'s results stopped (after what was read was applied).
    pub fn set_nats_cursor(&mut self, host: &str, url: &str, worker_id: &str, seq: u64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO host_syncs (host, nats_url, nats_worker, nats_seq) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (host) DO UPDATE SET nats_url = ?2, nats_worker = ?3, nats_seq = ?4",
            params![host, url, worker_id, i64::try_from(seq).unwrap_or(i64::MAX)],
        )?;
        Ok(())
    }
}
