//! What travels through the NATS server between a lead and `delegate worker`: subjects,
//! streams and message shapes. Both sides use these types; a field added here is added on
//! both sides at once. Every message is JSON with a version `v` ([`WIRE_VERSION`]); bytes
//! (scripts, script output) travel base64-encoded.
//!
//! # Subjects and streams
//!
//! | subject | carried by | who publishes | who reads |
//! |---|---|---|---|
//! | `delegate.tasks.<worker>` | stream `DELEGATE_TASKS` (work queue) | leads | the worker id's durable pull consumer `delegate-worker-<worker>`, shared by its replicas |
//! | `delegate.results.<mailbox>.<worker>` | stream `DELEGATE_RESULTS` (limits: age) | workers | the lead of that mailbox, from its stored stream sequence |
//! | `delegate.exec.<worker>` | core request/reply, queue group `delegate-exec` | leads | any one replica |
//! | `delegate.exec.<worker>.<instance>` | core request/reply | leads | the replica (or replicas sharing one task tree) that ran the task |
//! | `agentbus.<agent>.tasks` | stream `AGENTBUS_TASKS` | agentbus publishers | a worker run with `--agentbus`, durable consumer `<agent>` (agentbus's own name) |
//! | `agentbus.<agent>.results` | stream `AGENTBUS_RESULTS` | workers (agentbus results) | `agentbus result get --agent <agent>` |
//!
//! Ids (worker ids, instances, mailbox ids) are one subject token each: see [`check_token`].

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// The version of these shapes. A worker refuses (terminates, with a `refused` result) a
/// task of another version, naming both.
pub const WIRE_VERSION: u32 = 1;

pub const TASKS_STREAM: &str = "DELEGATE_TASKS";
pub const TASKS_SUBJECTS: &str = "delegate.tasks.*";
pub const RESULTS_STREAM: &str = "DELEGATE_RESULTS";
pub const RESULTS_SUBJECTS: &str = "delegate.results.>";
pub const EXEC_QUEUE_GROUP: &str = "delegate-exec";

pub const AGENTBUS_TASKS_STREAM: &str = "AGENTBUS_TASKS";
pub const AGENTBUS_TASKS_SUBJECTS: &str = "agentbus.*.tasks";
pub const AGENTBUS_RESULTS_STREAM: &str = "AGENTBUS_RESULTS";
pub const AGENTBUS_RESULTS_SUBJECTS: &str = "agentbus.*.results";

/// The largest task message a worker takes (NATS's default `max_payload` is 1 MiB; the
/// prompt cap of a launch is far below). Larger ones are terminated with a reason.
pub const MAX_TASK_MESSAGE: usize = 1024 * 1024;

/// The header JetStream de-duplicates publishes by (within the stream's duplicate window).
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// `delegate.tasks.<worker>`
pub fn task_subject(worker: &str) -> String {
    format!("delegate.tasks.{worker}")
}

/// `delegate.results.<mailbox>.<worker>`
pub fn results_subject(mailbox: &str, worker: &str) -> String {
    format!("delegate.results.{mailbox}.{worker}")
}

/// `delegate.exec.<worker>`, or `delegate.exec.<worker>.<instance>` for one replica.
pub fn exec_subject(worker: &str, instance: Option<&str>) -> String {
    match instance {
        Some(i) => format!("delegate.exec.{worker}.{i}"),
        None => format!("delegate.exec.{worker}"),
    }
}

/// The durable pull consumer a worker id's replicas share.
pub fn consumer_name(worker: &str) -> String {
    format!("delegate-worker-{worker}")
}

pub fn agentbus_task_subject(agent: &str) -> String {
    format!("agentbus.{agent}.tasks")
}

pub fn agentbus_result_subject(agent: &str) -> String {
    format!("agentbus.{agent}.results")
}

/// A worker id, instance or mailbox id must be one plain subject token: 1-64 of
/// `[A-Za-z0-9_-]` (no `.`, `*`, `>` or spaces, which would route elsewhere).
pub fn check_token(what: &str, value: &str) -> std::result::Result<(), String> {
    let ok =
        (1..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("{what} {value:?} must be 1 to 64 letters, digits, '_' or '-' (it becomes a NATS subject token)"))
    }
}

/// A task for a worker: run this launch script (rendered by the lead exactly as for SSH).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMessage {
    pub v: u32,
    /// Always `"delegate.launch"` (agentbus task messages say `"task.request"`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The lead's mailbox id: results go to `delegate.results.<mailbox>.<worker>`.
    pub mailbox: String,
    pub task: i64,
    pub run_no: i64,
    /// The task directory's name under the remote root (`<mailbox>-<task>[-r<n>]`).
    pub task_key: String,
    pub nonce: String,
    pub session: String,
    /// The launch script, base64 ([`crate::remote::render`]'s bytes). The worker runs it
    /// only if its body is one of delegate's own scripts (same version as the worker).
    pub script: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC: a worker that takes the task after this refuses it (`refused`, reason
    /// "expired"); the lead fails it visibly when its sync finds it past due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

pub const LAUNCH_KIND: &str = "delegate.launch";

/// How a script ended on the worker: the fields of [`crate::transport::ExecOutput`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecReply {
    pub v: u32,
    /// The exit code; `None` with `signal` when killed, both `None` when unknown.
    #[serde(default)]
    pub exit: Option<i32>,
    #[serde(default)]
    pub signal: Option<String>,
    /// base64
    pub stdout: String,
    /// base64
    pub stderr: String,
    /// An output stream went over the cap and was cut.
    #[serde(default)]
    pub overflow: bool,
    /// Why the script could not run or was cut off (the worker's words).
    #[serde(default)]
    pub broken: Option<String>,
}

/// A request to run one of delegate's scripts now (say, cancel, logs, diff, doctor...),
/// answered with an [`ExecReply`] on the request's reply subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub v: u32,
    /// base64 of the script (what SSH would send on stdin).
    pub script: String,
    /// How long the script may run, in milliseconds.
    pub limit_ms: u64,
}

/// What a worker publishes to `delegate.results.<mailbox>.<worker>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ResultMessage {
    /// The launch script ran (for the first time or again after a redelivery): its output,
    /// which the lead reads exactly as the reply of an SSH launch exec.
    #[serde(rename = "delegate.launched")]
    Launched {
        v: u32,
        task_key: String,
        nonce: String,
        /// The replica that ran it: the lead sends this task's later execs (say, cancel)
        /// to `delegate.exec.<worker>.<instance>`.
        instance: String,
        exec: ExecReply,
    },
    /// What the worker's own sync of one task read, from these offsets on: the stdout of
    /// `sync.sh` for that task alone (base64). The lead parses it like an SSH sync reply and
    /// keeps only the bytes past its own offsets, so a message read twice adds nothing.
    #[serde(rename = "delegate.sync")]
    Sync { v: u32, task_key: String, instance: String, offsets: BTreeMap<String, u64>, stdout: String },
    /// A task message the worker terminated (invalid, oversized, expired, another version):
    /// `task_key`/`nonce` when the message said them.
    #[serde(rename = "delegate.refused")]
    Refused {
        v: u32,
        #[serde(default)]
        task_key: Option<String>,
        #[serde(default)]
        nonce: Option<String>,
        reason: String,
    },
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub fn unb64(text: &str) -> std::result::Result<Vec<u8>, String> {
    B64.decode(text).map_err(|e| format!("not base64: {e}"))
}
