//! The mailbox: a SQLite file that is the lead's truth about every task.
//!
//! - WAL mode, `synchronous=FULL` (the launch ledger must survive a power cut), a busy
//!   timeout of a minute for the write lock, and
//!   `BEGIN IMMEDIATE` for every write so concurrent writers wait for the lock instead of
//!   failing a read-to-write upgrade.
//! - Schema steps in `migrations/NNN_*.sql`, applied in order; their count is `PRAGMA
//!   user_version`. Never edit a step; add a new one.
//! - The directory is 0700 and the database file is created 0600 before SQLite opens it,
//!   because SQLite gives its `-wal` and `-shm` files the mode of the database file.
//! - Every status change bumps `tasks.version` and is checked against the version the caller
//!   read (optimistic locking), and is appended to `transitions`.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::error::{Error, Result};
use crate::task::{Priority, Run, Sandbox, Task, TaskStatus};

// Tasks recorded without launching (the backlog), and parent/child links.
pub mod agentbus;
pub mod artifacts;
pub mod board;
mod feed;
mod freshness;
// The needs-you inbox: questions agents asked that nobody answered yet.
pub mod inbox;
mod lifecycle;
// Notification rows: written with state changes, claimed and settled by delivery.
pub mod notifications;
mod queue;
// Recurring tasks: definitions, slot claims, misfires.
pub mod schedules;
// Caps on the rows a brother can add to the mailbox, per sync and per run.
pub mod row_caps;
// Daily spend caps per brother and host, from what the streams reported today.
pub mod nats;
pub mod spend;
#[cfg(test)]
mod tests_caps;
// A task as one conversation, for `show` and the MCP `get_task`.
pub mod thread;
pub mod usage;

pub use feed::{Event, FeedCursor, FeedItem, Message};
pub use lifecycle::{Applied, InFlight, Ingest, NewEvent, NewMessage, RunEnd};
pub use queue::{Caps, Load};
pub use spend::DailyCap;

/// Schema steps in order. A step's position is its version: append, never edit.
const STEPS: &[&str] = &[
    include_str!("migrations/001_tasks.sql"),
    include_str!("migrations/002_lifecycle.sql"),
    include_str!("migrations/003_runs.sql"),
    include_str!("migrations/004_say.sql"),
    include_str!("migrations/005_received.sql"),
    include_str!("migrations/006_host_syncs.sql"),
    include_str!("migrations/007_settings.sql"),
    include_str!("migrations/008_board.sql"),
    include_str!("migrations/009_roles.sql"),
    include_str!("migrations/010_schedules.sql"),
    include_str!("migrations/011_notify.sql"),
    include_str!("migrations/012_artifacts.sql"),
    include_str!("migrations/013_nats.sql"),
    include_str!("migrations/014_agentbus.sql"),
];

pub const DB_FILE: &str = "mailbox.db";

/// A connection that only keeps the mailbox's WAL index alive (the warm daemon holds one).
///
/// Every command opens the mailbox and closes it. When no other connection has it open,
/// SQLite treats the first opener as the first user of the WAL and rebuilds its index by
/// reading the whole WAL (up to ~4 MB with checksums: 1.5 to 2 ms of each command's CPU,
/// measured); while one connection stays open, the next opener reads the index as it is.
/// This one holds no transaction, so it never stands in the way of a writer or a checkpoint.
pub struct Holder {
    _conn: Connection,
}

impl Holder {
    /// Holds the mailbox in `dir` open, or `None` when there is none yet (never created here)
    /// or it is not in WAL mode (a command is still making it: it is not held until it is).
    pub fn open(dir: &Path) -> Option<Holder> {
        use std::io::Read;
        let path = dir.join(DB_FILE);
        // Bytes 18 and 19 of the header are 2 for a WAL database.
        let mut header = [0u8; 20];
        std::fs::File::open(&path).ok()?.read_exact(&mut header).ok()?;
        if header[18] != 2 || header[19] != 2 {
            return None;
        }
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).ok()?;
        conn.busy_timeout(Duration::from_millis(100)).ok()?;
        // Reading the schema opens the WAL and maps its index; the statement ends here.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0)).ok()?;
        Some(Holder { _conn: conn })
    }
}

pub struct Store {
    conn: Connection,
    mailbox_id: String,
    path: PathBuf,
}

/// What a new task needs; the store adds ids, nonce, session and timestamps.
pub struct NewTask<'a> {
    pub brother: &'a str,
    pub host: &'a str,
    pub address: &'a str,
    pub subject: &'a str,
    pub agent: &'a str,
    pub model: Option<&'a str>,
    pub sandbox: Sandbox,
    pub max_turns: u32,
    pub workdir: &'a str,
    pub prompt: &'a [u8],
    pub prompt_sha256: &'a str,
    pub timeout_secs: u64,
    /// Who asked (`--as`, `DELEGATE_AGENT_ID`, or the local user).
    pub author: &'a str,
    /// The host's and brother's concurrency caps: over them the task is recorded `queued`.
    pub caps: Caps,
    /// Reasoning effort, spend limit, extra arguments, credential file.
    pub options: &'a crate::agents::AgentOptions,
    /// Each setting's value and source ([`crate::ops::settings::evidence`]).
    pub settings: &'a serde_json::Value,
    pub priority: Priority,
    /// The task this one is part of; it must exist.
    pub parent: Option<i64>,
    /// The task's notification plan ([`crate::notify::Plan`] as JSON), if any.
    pub notify: Option<&'a str>,
}

/// The first run of a freshly recorded task.
#[derive(Debug, Clone)]
pub struct RunStart {
    pub task_id: i64,
    pub run_no: i64,
    pub session: String,
    pub nonce: String,
    pub version: i64,
    /// Recorded `queued` (over a concurrency cap): nothing is to be sent yet.
    pub queued: bool,
}

/// How a launch attempt ended, as recorded on its run.
pub struct LaunchRecord<'a> {
    pub status: TaskStatus,
    pub reason: Option<&'a str>,
    pub remote_dir: Option<&'a str>,
    pub pane_pid: Option<i64>,
    pub marker: Option<&'a str>,
    pub launch_exit: Option<i64>,
    pub evidence: &'a serde_json::Value,
    pub launch_stderr: Option<&'a str>,
}

/// One status change in a task's history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Transition {
    pub from: Option<String>,
    pub to: String,
    pub reason: Option<String>,
    pub at: String,
}

#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub brother: Option<String>,
    pub status: Option<TaskStatus>,
    pub limit: Option<u32>,
}

/// How long a writer waits for the mailbox's write lock before reporting it busy. SQLite
/// waits in naps of up to 100 ms and does not queue waiters, so under many writers one can
/// miss several releases in a row: the concurrency suite saw waits near 10 s with 150
/// writer processes. A minute keeps that from surfacing as "database is locked". (Shorter
/// random naps were tried: with 150 processes on 2 cores their wake-ups starved the writer
/// holding the lock.)
const LOCK_WAIT: Duration = Duration::from_secs(60);

pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `f` again while SQLite answers busy or locked without having waited (the first opens
/// of a new mailbox by concurrent processes), for up to about [`LOCK_WAIT`].
fn busy_retry<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let started = std::time::Instant::now();
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

impl Store {
    /// Opens (creating if needed) the mailbox in `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| Error::io(dir, e))?;
        // An existing directory keeps whatever mode it had; tighten it if it is ours.
        let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| Error::io(dir, e))?;
        }
        let path = dir.join(DB_FILE);
        OpenOptions::new().create(true).append(true).mode(0o600).open(&path).map_err(|e| Error::io(&path, e))?;
        let mut conn = Connection::open(&path)?;
        // Per-connection settings: inside a migration they would be lost or refused.
        conn.busy_timeout(LOCK_WAIT)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // Switching a new file to WAL needs it to itself: a second process opening the same new
        // mailbox at that moment gets SQLITE_BUSY at once (SQLite skips the busy handler where
        // waiting could deadlock), so the first open retries for a while.
        let mode: String = busy_retry(|| conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0)))?;
        debug_assert_eq!(mode, "wal");
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Every command opens and closes the mailbox. The last connection to close would fold
        // the WAL into the database (a checkpoint: writes and fsyncs) and delete it, and the
        // next command would make it again; instead the WAL stays (what it holds is as durable
        // as the database: FULL syncs it on every commit) and SQLite folds it in as it grows
        // (every 1000 pages, inside a commit).
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;

        // Every command opens the mailbox: when it is current, only read (a write transaction
        // here would cost every command its commit and fsyncs).
        let found: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found == STEPS.len() as u32
            && let Some(mailbox_id) =
                conn.query_row("SELECT value FROM meta WHERE key = 'mailbox_id'", [], |r| r.get(0)).optional()?
        {
            return Ok(Store { conn, mailbox_id, path });
        }
        // New or older: migrate under the write lock, reading the version again under it (two
        // processes may open a new mailbox at once).
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = STEPS.len() as u32;
        if found > known {
            return Err(Error::SchemaTooNew { found, known });
        }
        for step in &STEPS[found as usize..] {
            tx.execute_batch(step)?;
        }
        tx.pragma_update(None, "user_version", known)?;
        // The mailbox id keeps task directories and tmux sessions of two mailboxes sharing
        // a host apart.
        let existing: Option<String> =
            tx.query_row("SELECT value FROM meta WHERE key = 'mailbox_id'", [], |r| r.get(0)).optional()?;
        let mailbox_id = match existing {
            Some(id) => id,
            None => {
                let id = random_hex(3);
                tx.execute("INSERT INTO meta (key, value) VALUES ('mailbox_id', ?1)", [&id])?;
                id
            }
        };
        tx.commit()?;
        Ok(Store { conn, mailbox_id, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw connection, for tests that plant states no command writes.
    #[cfg(test)]
    pub(crate) fn conn_for_tests(&self) -> &Connection {
        &self.conn
    }

    /// Six hex digits naming this mailbox on remote hosts.
    pub fn mailbox_id(&self) -> &str {
        &self.mailbox_id
    }

    /// Records a task in state `launching` (or `queued`, over a cap) with its first run
    /// (nonce and session name), in one transaction, before any network I/O.
    pub fn create_task(&mut self, t: &NewTask) -> Result<RunStart> {
        let now = now();
        let nonce = random_hex(16);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (queued, reason) = match queue::admit(&tx, t.host, t.brother, t.caps)? {
            queue::Admission::Start => (false, None),
            queue::Admission::Queue(reason) => (true, reason),
        };
        let status = if queued { TaskStatus::Queued } else { TaskStatus::Launching };
        board::check_parent(&tx, t.parent)?;
        tx.execute(
            "INSERT INTO tasks (status, brother, host, subject, agent, model, sandbox, max_turns,
                                workdir, prompt, prompt_sha256, created_at, updated_at, timeout_secs,
                                options, settings, priority, parent_id, created_by, reason, notify)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
            params![
                status.as_str(),
                t.brother,
                t.host,
                t.subject,
                t.agent,
                t.model,
                t.sandbox.as_str(),
                t.max_turns,
                t.workdir,
                t.prompt,
                t.prompt_sha256,
                now,
                i64::try_from(t.timeout_secs).unwrap_or(i64::MAX),
                serde_json::to_string(t.options).expect("options serialize"),
                t.settings.to_string(),
                t.priority.as_str(),
                t.parent,
                t.author,
                reason,
                t.notify
            ],
        )?;
        let task_id = tx.last_insert_rowid();
        let session = crate::names::SessionName::for_run(&self.mailbox_id, task_id, 1)
            .expect("generated session names are valid")
            .to_string();
        tx.execute(
            "INSERT INTO runs (task_id, run_no, session, nonce, status, host, address, started_at, author)
             VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![task_id, session, nonce, status.as_str(), t.host, t.address, now, t.author],
        )?;
        tx.execute(
            "INSERT INTO transitions (task_id, from_status, to_status, reason, at) VALUES (?1, NULL, ?2, ?3, ?4)",
            params![task_id, status.as_str(), reason, now],
        )?;
        tx.commit()?;
        Ok(RunStart { task_id, run_no: 1, session, nonce, version: 1, queued })
    }

    /// Starts run `n+1` of a finished task (reopen): the task goes back to `launching`, if
    /// nobody moved it since `expected_version`, with the follow-up prompt on the new run.
    pub fn create_run(
        &mut self,
        task_id: i64,
        expected_version: i64,
        prompt: &[u8],
        author: &str,
        write_scope: &[String],
    ) -> Result<RunStart> {
        let now = now();
        let nonce = random_hex(16);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (host, address): (String, String) = tx.query_row(
            "SELECT host, address FROM runs WHERE task_id = ?1 ORDER BY run_no DESC LIMIT 1",
            [task_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let run_no: i64 =
            tx.query_row("SELECT max(run_no) + 1 FROM runs WHERE task_id = ?1", [task_id], |r| r.get(0))?;
        let version = transition_in(&tx, task_id, expected_version, TaskStatus::Launching, Some("reopened"), &now)?;
        let session = crate::names::SessionName::for_run(&self.mailbox_id, task_id, run_no)
            .expect("generated session names are valid")
            .to_string();
        tx.execute(
            "INSERT INTO runs (task_id, run_no, session, nonce, status, host, address, started_at, prompt, author, write_scope)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                task_id,
                run_no,
                session,
                nonce,
                TaskStatus::Launching.as_str(),
                host,
                address,
                now,
                prompt,
                author,
                serde_json::to_string(write_scope).unwrap_or_default()
            ],
        )?;
        tx.execute(
            "UPDATE tasks SET exit_code = NULL, turns = NULL, cost_usd = NULL, last_event = NULL, accepted_at = NULL
             WHERE id = ?1",
            [task_id],
        )?;
        tx.commit()?;
        Ok(RunStart { task_id, run_no, session, nonce, version, queued: false })
    }

    /// Records how a launch attempt ended and moves the task, if it is still at `version`.
    pub fn record_launch(&mut self, run: &RunStart, rec: &LaunchRecord) -> Result<i64> {
        let now = now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version = transition_in(&tx, run.task_id, run.version, rec.status, rec.reason, &now)?;
        update_run(&tx, run, rec, &now)?;
        tx.commit()?;
        Ok(version)
    }

    /// Records how a launch attempt ended on its run only, leaving the task as it is: for a
    /// launch that lost the race to a `cancel` (the task is `cancelled` already).
    pub fn record_run(&mut self, run: &RunStart, rec: &LaunchRecord) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        update_run(&tx, run, rec, &now())?;
        tx.commit()?;
        Ok(())
    }
}

/// Writes a launch attempt's record on its run.
fn update_run(tx: &rusqlite::Connection, run: &RunStart, rec: &LaunchRecord, now: &str) -> Result<()> {
    let finished = (rec.status != TaskStatus::Launched).then_some(now);
    tx.execute(
        "UPDATE runs SET status = ?3, remote_dir = ?4, pane_pid = ?5, marker = ?6, launch_exit = ?7,
                         error = ?8, evidence = ?9, launch_stderr = ?10, finished_at = ?11
         WHERE task_id = ?1 AND run_no = ?2",
        params![
            run.task_id,
            run.run_no,
            rec.status.as_str(),
            rec.remote_dir,
            rec.pane_pid,
            rec.marker,
            rec.launch_exit,
            rec.reason,
            rec.evidence.to_string(),
            rec.launch_stderr,
            finished
        ],
    )?;
    Ok(())
}

impl Store {
    /// Moves a task to `to` if nobody changed it since `expected_version`; returns the new
    /// version, or [`Error::Conflict`].
    pub fn transition(
        &mut self,
        task_id: i64,
        expected_version: i64,
        to: TaskStatus,
        reason: Option<&str>,
    ) -> Result<i64> {
        let now = now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let v = transition_in(&tx, task_id, expected_version, to, reason, &now)?;
        tx.commit()?;
        Ok(v)
    }

    pub fn task(&self, id: i64) -> Result<Task> {
        let mut tasks = self.query_tasks("WHERE id = ?1", params![id])?;
        tasks.pop().ok_or(Error::TaskNotFound(id))
    }

    /// Tasks, newest first.
    pub fn list(&self, f: &ListFilter) -> Result<Vec<Task>> {
        let limit = f.limit.map(i64::from).unwrap_or(-1);
        self.query_tasks(
            "WHERE (?1 IS NULL OR brother = ?1) AND (?2 IS NULL OR status = ?2)
             ORDER BY id DESC LIMIT ?3",
            params![f.brother, f.status.map(|s| s.as_str()), limit],
        )
    }

    /// The prompt exactly as given, bytes and all.
    pub fn prompt(&self, id: i64) -> Result<Vec<u8>> {
        self.conn
            .query_row("SELECT prompt FROM tasks WHERE id = ?1", [id], |r| r.get(0))
            .optional()?
            .ok_or(Error::TaskNotFound(id))
    }

    /// The follow-up prompt of a later run (reopen); empty for the first run.
    pub fn run_prompt(&self, id: i64, run_no: i64) -> Result<Vec<u8>> {
        let p: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT prompt FROM runs WHERE task_id = ?1 AND run_no = ?2", params![id, run_no], |r| r.get(0))
            .optional()?
            .flatten();
        Ok(p.unwrap_or_default())
    }

    /// Whether an agent of this task ever started: the task was once `launched`, `running`
    /// or `needs_input`, or a runner's exit record came back for one of its runs.
    pub fn ever_started(&self, id: i64) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM transitions WHERE task_id = ?1
                              AND to_status IN ('launched', 'running', 'needs_input'))
                 OR EXISTS (SELECT 1 FROM runs WHERE task_id = ?1 AND ended_at IS NOT NULL)",
            [id],
            |r| r.get(0),
        )?)
    }

    /// Status changes of a task, oldest first.
    pub fn transitions(&self, id: i64) -> Result<Vec<Transition>> {
        Ok(self.newest_transitions(id, None)?.0)
    }

    /// The newest `limit` status changes of a task (all when `None`), oldest first, and how
    /// many the task has in all.
    pub fn newest_transitions(&self, id: i64, limit: Option<usize>) -> Result<(Vec<Transition>, u64)> {
        let mut st = self.conn.prepare_cached(
            "SELECT from_status, to_status, reason, at FROM
                 (SELECT id, from_status, to_status, reason, at FROM transitions
                  WHERE task_id = ?1 ORDER BY id DESC LIMIT ?2)
             ORDER BY id",
        )?;
        let rows = st.query_map(params![id, feed::sql_limit(limit)], |r| {
            Ok(Transition { from: r.get(0)?, to: r.get(1)?, reason: r.get(2)?, at: r.get(3)? })
        })?;
        let history: Vec<Transition> = rows.collect::<std::result::Result<_, _>>()?;
        Ok((history, self.count_of("transitions", id)?))
    }

    fn query_tasks(&self, tail: &str, args: impl rusqlite::Params) -> Result<Vec<Task>> {
        let sql = format!(
            "SELECT id, status, reason, brother, host, subject, agent, model, sandbox, max_turns, workdir,
                    length(prompt), prompt_sha256, version, created_at, updated_at,
                    timeout_secs, exit_code, turns, cost_usd, last_event, synced_at,
                    {}, options, settings, priority, parent_id
             FROM tasks {tail}",
            freshness::HOST_SYNC_COLUMNS
        );
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map(args, |r| {
            let (status, updated_at, synced_at): (TaskStatus, String, Option<String>) =
                (parse_col(r, 1)?, r.get(15)?, r.get(21)?);
            let answered_at: Option<String> = r.get(22)?;
            let stale = freshness::stale(
                status,
                synced_at.as_deref(),
                &updated_at,
                answered_at.as_deref(),
                r.get(23)?,
                r.get(24)?,
            );
            Ok(Task {
                id: r.get(0)?,
                status,
                reason: r.get(2)?,
                brother: r.get(3)?,
                host: r.get(4)?,
                session: None,
                subject: r.get(5)?,
                agent: r.get(6)?,
                model: r.get(7)?,
                sandbox: parse_col(r, 8)?,
                max_turns: r.get(9)?,
                workdir: r.get(10)?,
                prompt_bytes: r.get(11)?,
                prompt_sha256: r.get(12)?,
                version: r.get(13)?,
                created_at: r.get(14)?,
                updated_at,
                timeout_secs: r.get(16)?,
                exit_code: r.get(17)?,
                turns: r.get(18)?,
                cost_usd: r.get(19)?,
                last_event: r.get(20)?,
                synced_at,
                stale,
                // Written by this mailbox only; a task older than the column has none.
                options: r
                    .get::<_, Option<String>>(25)?
                    .and_then(|j| serde_json::from_str(&j).ok())
                    .unwrap_or_default(),
                settings: r
                    .get::<_, Option<String>>(26)?
                    .and_then(|j| serde_json::from_str(&j).ok())
                    .unwrap_or(serde_json::Value::Null),
                priority: parse_col(r, 27)?,
                parent: r.get(28)?,
                runs: Vec::new(),
            })
        })?;
        let mut tasks: Vec<Task> = rows.collect::<std::result::Result<_, _>>()?;
        for t in &mut tasks {
            t.runs = self.runs(t.id)?;
            t.session = t.runs.last().map(|r| r.session.clone());
        }
        Ok(tasks)
    }

    fn runs(&self, task_id: i64) -> Result<Vec<Run>> {
        let mut st = self.conn.prepare_cached(
            "SELECT run_no, session, nonce, status, host, address, remote_dir, pane_pid, marker, launch_exit,
                    error, evidence, launch_stderr, started_at, finished_at,
                    exit_code, exit_reason, ended_at, outcome, facts, author, write_scope
             FROM runs WHERE task_id = ?1 ORDER BY run_no",
        )?;
        let rows = st.query_map([task_id], |r| {
            let evidence: String = r.get(11)?;
            Ok(Run {
                run_no: r.get(0)?,
                session: r.get(1)?,
                nonce: r.get(2)?,
                status: parse_col(r, 3)?,
                host: r.get(4)?,
                address: r.get(5)?,
                remote_dir: r.get(6)?,
                pane_pid: r.get(7)?,
                marker: r.get(8)?,
                launch_exit: r.get(9)?,
                error: r.get(10)?,
                evidence: serde_json::from_str(&evidence).unwrap_or(serde_json::Value::Null),
                launch_stderr: r.get(12)?,
                started_at: r.get(13)?,
                finished_at: r.get(14)?,
                exit_code: r.get(15)?,
                exit_reason: r.get(16)?,
                ended_at: r.get(17)?,
                outcome: r.get::<_, Option<String>>(18)?.and_then(|o| serde_json::from_str(&o).ok()),
                facts: serde_json::from_str(&r.get::<_, String>(19)?).unwrap_or(serde_json::Value::Null),
                author: r.get(20)?,
                write_scope: r
                    .get::<_, Option<String>>(21)?
                    .and_then(|w| serde_json::from_str(&w).ok())
                    .unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

pub(super) fn parse_col<T: std::str::FromStr<Err = String>>(r: &rusqlite::Row, i: usize) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    s.parse().map_err(|e: String| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into()))
}

/// The one place a task's status changes: checks and bumps the version, logs the change.
pub(super) fn transition_in(
    tx: &rusqlite::Connection,
    task_id: i64,
    expected_version: i64,
    to: TaskStatus,
    reason: Option<&str>,
    now: &str,
) -> Result<i64> {
    let from: Option<String> =
        tx.query_row("SELECT status FROM tasks WHERE id = ?1", [task_id], |r| r.get(0)).optional()?;
    let Some(from) = from else {
        return Err(Error::TaskNotFound(task_id));
    };
    let changed = tx.execute(
        "UPDATE tasks SET status = ?3, reason = ?4, version = version + 1, updated_at = ?5
         WHERE id = ?1 AND version = ?2",
        params![task_id, expected_version, to.as_str(), reason, now],
    )?;
    if changed != 1 {
        return Err(Error::Conflict { task: task_id, expected: expected_version });
    }
    tx.execute(
        "INSERT INTO transitions (task_id, from_status, to_status, reason, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![task_id, from, to.as_str(), reason, now],
    )?;
    // Here, in the state change's own transaction: a notification is never lost to a
    // crash between the two, and every path that sets a state passes this way.
    notifications::enqueue_for_status(tx, task_id, to, reason, now)?;
    Ok(expected_version + 1)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(super) fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dlg-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn concurrent_first_opens_of_a_new_mailbox_all_succeed() {
        // Four CLI commands at once on a machine that never ran delegate: each creates the
        // mailbox, and switching it to WAL must not fail any of them with "database is locked".
        for round in 0..20 {
            let dir = std::env::temp_dir().join(format!("dlg-store-first-{}-{round}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
            let opens: Vec<_> = (0..6)
                .map(|_| {
                    let (dir, barrier) = (dir.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        Store::open(&dir).map(|s| s.mailbox_id().to_string())
                    })
                })
                .collect();
            let ids: Vec<String> = opens.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
            assert!(ids.iter().all(|id| *id == ids[0]), "one mailbox id: {ids:?}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn opening_a_current_mailbox_writes_nothing() {
        let dir = temp_dir("open-ro");
        let first = Store::open(&dir).unwrap();
        let wal = dir.join(format!("{DB_FILE}-wal"));
        let before = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        // Every command opens the mailbox: a current one must cost no commit.
        let second = Store::open(&dir).unwrap();
        assert_eq!(second.mailbox_id(), first.mailbox_id());
        assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), before, "the open wrote to the WAL");
        drop((first, second));
        let _ = std::fs::remove_dir_all(&dir);
    }

    static NO_OPTIONS: crate::agents::AgentOptions = crate::agents::AgentOptions {
        reasoning_effort: None,
        max_budget_usd: None,
        extra_args: vec![],
        credential_file: None,
        credential_env: None,
        usd_per_mtok: None,
    };

    pub(super) fn new_task<'a>(prompt: &'a [u8]) -> NewTask<'a> {
        NewTask {
            brother: "oppy",
            host: "masuda",
            address: "127.0.0.1",
            subject: "s",
            agent: "self-test",
            model: None,
            sandbox: Sandbox::Write,
            max_turns: 5,
            workdir: "/w",
            prompt,
            prompt_sha256: "x",
            timeout_secs: 60,
            author: "tester",
            caps: Caps::default(),
            options: &NO_OPTIONS,
            settings: &serde_json::Value::Null,
            priority: Priority::Medium,
            parent: None,
            notify: None,
        }
    }

    #[test]
    fn a_host_that_stops_answering_leaves_its_tasks_stale_until_it_answers_again() {
        let mut s = Store::open(&temp_dir("stale")).unwrap();
        let run = s.create_task(&new_task(b"p")).unwrap();
        s.transition(run.task_id, run.version, TaskStatus::Running, None).unwrap();
        let done = s.create_task(&new_task(b"q")).unwrap();
        s.transition(done.task_id, done.version, TaskStatus::Completed, None).unwrap();
        let nap = || std::thread::sleep(Duration::from_millis(5)); // timestamps are in ms
        nap();
        // What a hostile brother put on stderr reaches the reason: kept short and printable.
        let hostile = format!("sync of masuda failed: exit 3: \u{1b}]52;c;SGk=\u{7}{}", "x".repeat(10_000));
        s.record_host_sync("masuda", Some(&hostile)).unwrap();
        let t = s.task(run.task_id).unwrap();
        let stale = t.stale.clone().unwrap_or_else(|| panic!("stale after the failure: {t:?}"));
        assert_eq!(stale.last_heard_at, t.updated_at, "never synced: last heard of at its launch");
        assert!(stale.why.starts_with("sync of masuda failed: exit 3: "), "{}", stale.why);
        assert!(stale.why.chars().count() <= 300 && !stale.why.contains('\u{1b}'), "{}", stale.why);
        assert_eq!(s.task(done.task_id).unwrap().stale, None, "a finished task is not stale");
        assert_eq!(s.list(&ListFilter::default()).unwrap().iter().filter(|t| t.stale.is_some()).count(), 1);
        nap();
        s.record_host_sync("masuda", None).unwrap();
        assert_eq!(s.task(run.task_id).unwrap().stale, None, "the host answered again");
        nap();
        s.record_host_sync("elsewhere", Some("timeout")).unwrap();
        assert_eq!(s.task(run.task_id).unwrap().stale, None, "another host's failure");

        // Answer after answer changes nothing stale reads: no row is written (no commit to
        // sync); after a failure the next answer is written again.
        let answered = |s: &Store| -> String {
            s.conn.query_row("SELECT answered_at FROM host_syncs WHERE host = 'masuda'", [], |r| r.get(0)).unwrap()
        };
        let first = answered(&s);
        nap();
        let changes = s.conn.total_changes();
        s.record_host_sync("masuda", None).unwrap();
        assert_eq!((s.conn.total_changes(), answered(&s)), (changes, first.clone()));
        nap();
        s.record_host_sync("masuda", Some("timeout")).unwrap();
        assert!(s.task(run.task_id).unwrap().stale.is_some());
        nap();
        s.record_host_sync("masuda", None).unwrap();
        assert!(answered(&s) > first);
        assert_eq!(s.task(run.task_id).unwrap().stale, None, "answered after the failure");
        // A host never seen before gets its row from its first answer.
        s.record_host_sync("new-host", None).unwrap();
        let n: i64 =
            s.conn.query_row("SELECT count(*) FROM host_syncs WHERE host = 'new-host'", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn tasks_over_a_cap_queue_and_start_oldest_first_as_slots_free_up() {
        let mut s = Store::open(&temp_dir("queue")).unwrap();
        let caps = Caps { host: Some(1), ..Caps::default() };
        let capped = |p| NewTask { caps, ..new_task(p) };
        let first = s.create_task(&capped(b"one")).unwrap();
        let second = s.create_task(&capped(b"two")).unwrap();
        let third = s.create_task(&capped(b"three")).unwrap();
        assert!(!first.queued && second.queued && third.queued);
        assert_eq!(s.task(second.task_id).unwrap().status, TaskStatus::Queued);
        let queued: Vec<i64> = s.queued().unwrap().iter().map(|t| t.id).collect();
        assert_eq!(queued, [second.task_id, third.task_id]);
        // No room while the first holds the slot; a task on another host is not held up.
        assert!(s.start_queued(second.task_id, caps).unwrap().is_none());
        let elsewhere = s.create_task(&NewTask { host: "jerry", ..capped(b"other host") }).unwrap();
        assert!(!elsewhere.queued);
        // The first ends: the oldest queued task takes the slot, then the next waits again.
        s.transition(first.task_id, 1, TaskStatus::Completed, None).unwrap();
        let started = s.start_queued(second.task_id, caps).unwrap().expect("a free slot");
        assert_eq!(
            (started.task_id, started.run_no, started.session.as_str()),
            (second.task_id, 1, second.session.as_str())
        );
        assert_eq!(s.task(second.task_id).unwrap().status, TaskStatus::Launching);
        assert!(s.start_queued(third.task_id, caps).unwrap().is_none());
        // Starting twice (another lead got there first) does nothing.
        assert!(s.start_queued(second.task_id, Caps::default()).unwrap().is_none());
        // A new task while others wait queues behind them, even with a slot free.
        s.transition(second.task_id, started.version, TaskStatus::Failed, Some("x")).unwrap();
        assert!(s.create_task(&capped(b"four")).unwrap().queued);
        // Cancelling: a queued task is settled at once; one already started is not touched.
        assert!(!s.cancel_queued(second.task_id).unwrap());
        assert!(s.cancel_queued(third.task_id).unwrap());
        assert_eq!(s.task(third.task_id).unwrap().status, TaskStatus::Cancelled);
        assert_eq!(s.task(third.task_id).unwrap().runs[0].status, TaskStatus::Cancelled);
        assert!(!s.cancel_queued(third.task_id).unwrap(), "only once");
        // A brother's cap counts only its own tasks.
        let b = Caps { brother: Some(1), ..Caps::default() };
        let a1 = s.create_task(&NewTask { brother: "ann", caps: b, ..new_task(b"a1") }).unwrap();
        let a2 = s.create_task(&NewTask { brother: "ann", caps: b, ..new_task(b"a2") }).unwrap();
        let z1 = s.create_task(&NewTask { brother: "zed", caps: b, ..new_task(b"z1") }).unwrap();
        assert!(!a1.queued && a2.queued && !z1.queued);
    }

    #[test]
    fn closing_the_mailbox_leaves_its_wal_and_loses_nothing() {
        let dir = temp_dir("no-ckpt");
        let s = Store::open(&dir).unwrap();
        let cfg = rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE;
        assert!(s.conn.db_config(cfg).unwrap());
        let mut s = s;
        let id = s.create_task(&new_task(b"kept")).unwrap().task_id;
        drop(s);
        // No checkpoint on close: the WAL holds the task, and stays for the next command.
        assert!(std::fs::metadata(dir.join("mailbox.db-wal")).unwrap().len() > 0, "the WAL was folded in on close");
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.task(id).unwrap().prompt_bytes, 4, "the task came back from the WAL");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_are_private_and_pragmas_set() {
        let dir = temp_dir("modes").join("nested");
        let old = unsafe { libc::umask(0o022) };
        let mut s = Store::open(&dir).unwrap();
        s.create_task(&new_task(b"p")).unwrap();
        unsafe { libc::umask(old) };
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for f in ["mailbox.db", "mailbox.db-wal", "mailbox.db-shm"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        let sync: i64 = s.conn.pragma_query_value(None, "synchronous", |r| r.get(0)).unwrap();
        assert_eq!(sync, 2, "synchronous must be FULL");
        let jm: String = s.conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        assert_eq!(jm, "wal");
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_holder_keeps_only_a_wal_mailbox_open_and_is_in_no_writers_way() {
        let dir = temp_dir("holder");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(Holder::open(&dir).is_none(), "no mailbox yet");
        assert!(!dir.join(DB_FILE).exists(), "and none made");
        // A file of a mailbox being made (not yet WAL) is left alone.
        Connection::open(dir.join(DB_FILE)).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
        assert!(Holder::open(&dir).is_none(), "not WAL yet");
        std::fs::remove_file(dir.join(DB_FILE)).unwrap();

        let mut s = Store::open(&dir).unwrap();
        let first = s.create_task(&new_task(b"one")).unwrap();
        drop(s);
        let held = Holder::open(&dir).expect("a WAL mailbox is held");
        // Commands open, write and read as before; the holder keeps no snapshot that would
        // stop a checkpoint from folding in the whole WAL.
        let mut s = Store::open(&dir).unwrap();
        let second = s.create_task(&new_task(b"two")).unwrap();
        let (busy, _, _): (i64, i64, i64) =
            s.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
        assert_eq!(busy, 0, "the checkpoint was blocked");
        assert_eq!(std::fs::metadata(dir.join(format!("{DB_FILE}-wal"))).unwrap().len(), 0, "the WAL was folded in");
        drop(s);
        drop(held);
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.prompt(first.task_id).unwrap(), b"one");
        assert_eq!(s.prompt(second.task_id).unwrap(), b"two");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn prompts_round_trip_byte_exact_and_versions_guard_transitions() {
        let dir = temp_dir("rt");
        let mut s = Store::open(&dir).unwrap();
        let prompt: Vec<u8> = (0..=255u8).collect();
        let run = s.create_task(&new_task(&prompt)).unwrap();
        assert_eq!(s.prompt(run.task_id).unwrap(), prompt);
        assert_eq!(run.session, format!("dlg-{}-{}-1", s.mailbox_id(), run.task_id));

        let v2 = s.transition(run.task_id, 1, TaskStatus::Failed, Some("why")).unwrap();
        assert_eq!(v2, 2);
        // A writer holding the old version loses, and the state is unchanged.
        let err = s.transition(run.task_id, 1, TaskStatus::Launched, None).unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err}");
        let t = s.task(run.task_id).unwrap();
        assert_eq!((t.status, t.version, t.reason.as_deref()), (TaskStatus::Failed, 2, Some("why")));
        assert_eq!(s.transitions(run.task_id).unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reopening_keeps_mailbox_id_and_refuses_newer_schema() {
        let dir = temp_dir("reopen");
        let id = Store::open(&dir).unwrap().mailbox_id().to_string();
        assert_eq!(Store::open(&dir).unwrap().mailbox_id(), id);
        let c = Connection::open(dir.join(DB_FILE)).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let err = Store::open(&dir).err().unwrap();
        assert!(matches!(err, Error::SchemaTooNew { found: 99, .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_migration_file_is_a_step() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/mailbox/migrations");
        let files = std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "sql"))
            .count();
        assert_eq!(files, STEPS.len(), "a migrations/NNN_*.sql file is not listed in STEPS");
    }

    #[test]
    fn list_filters() {
        let dir = temp_dir("list");
        let mut s = Store::open(&dir).unwrap();
        let a = s.create_task(&new_task(b"a")).unwrap();
        let mut other = new_task(b"b");
        other.brother = "jerry";
        s.create_task(&other).unwrap();
        s.transition(a.task_id, 1, TaskStatus::Failed, None).unwrap();
        let by_brother = s.list(&ListFilter { brother: Some("jerry".into()), ..Default::default() }).unwrap();
        assert_eq!(by_brother.len(), 1);
        let failed = s.list(&ListFilter { status: Some(TaskStatus::Failed), ..Default::default() }).unwrap();
        assert_eq!(failed.iter().map(|t| t.id).collect::<Vec<_>>(), vec![a.task_id]);
        assert_eq!(s.list(&ListFilter { limit: Some(1), ..Default::default() }).unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
