//! The library's error type. Variants carry the values a reader needs (brother, host, path,
//! fingerprint); causes sit in `#[source]` so each fact prints once. The CLI picks exit codes
//! by matching variants, never by matching message text.

use std::path::PathBuf;
use std::time::Duration;

use crate::known_hosts::KnownHostsError;
use crate::ssh_config::SshConfigError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("config file {path}: {message}")]
    Config { path: PathBuf, message: String },

    #[error("unknown brother {name:?}; known brothers: {}", list_or_none(.known))]
    UnknownBrother { name: String, known: Vec<String> },

    #[error("unknown host {name:?}; known hosts: {}", list_or_none(.known))]
    UnknownHost { name: String, known: Vec<String> },

    #[error("unknown agent {name:?}: use claude, codex, self-test or a name from [agents] ({})", list_or_none(.known))]
    UnknownAgent { name: String, known: Vec<String> },

    #[error(transparent)]
    SshConfig(#[from] SshConfigError),

    #[error(transparent)]
    KnownHosts(#[from] KnownHostsError),

    #[error(
        "host key of {host} ({lookup}) is not known: it presented {key_type} key {fingerprint}. \
         If that fingerprint is right, trust it with: delegate hosts trust {host} --fingerprint {fingerprint}"
    )]
    HostKeyUnknown { host: String, lookup: String, key_type: String, fingerprint: String },

    #[error(
        "HOST KEY CHANGED for {host} ({lookup}): it presented {key_type} key {fingerprint}, but {file}:{line} records {recorded}. \
         This may be an attack; if the host was really re-keyed, remove the old line (ssh-keygen -R '{lookup}' -f {file}) and trust the new key"
    )]
    HostKeyChanged {
        host: String,
        lookup: String,
        key_type: String,
        fingerprint: String,
        file: PathBuf,
        line: usize,
        recorded: String,
    },

    #[error("host key of {host} ({lookup}) is REVOKED in {file}:{line} ({fingerprint}): refusing to connect")]
    HostKeyRevoked { host: String, lookup: String, fingerprint: String, file: PathBuf, line: usize },

    #[error("fingerprint mismatch for {host}: it presented {presented}, you expected {expected}; nothing was trusted")]
    FingerprintMismatch { host: String, presented: String, expected: String },

    #[error("cannot reach {host} at {addr}: {source}")]
    Unreachable {
        host: String,
        addr: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{host} did not answer within {waited:?} while {phase}")]
    Timeout { host: String, phase: &'static str, waited: Duration },

    #[error("{host} refused authentication as {user}; tried: {}. Check the host's user and identity, or load the key into ssh-agent", list_or_none(.tried))]
    AuthRefused { host: String, user: String, tried: Vec<String> },

    /// The server hung up during authentication, usually sshd's MaxAuthTries.
    #[error(
        "{host} closed the connection after {offered} keys were offered for {user} (it said: {message:?}): more \
         keys were offered than its MaxAuthTries allows. Tried: {}. Name the key for this host and offer only it: \
         set IdentityFile and IdentitiesOnly yes for it in ~/.ssh/config (or hosts.{host}.identity)",
        list_or_none(.tried)
    )]
    AuthDisconnected { host: String, user: String, offered: usize, message: String, tried: Vec<String> },

    #[error("ssh to {host} failed while {phase}: {source}")]
    Ssh {
        host: String,
        phase: &'static str,
        #[source]
        source: russh::Error,
    },

    /// The server refused a session channel while no other channel of ours was open on the
    /// connection, so it is not waiting for one to close (sshd's MaxSessions 0, or a server
    /// that allows no commands).
    #[error(
        "{host} refused to open a session channel ({reason}) with no other channel of ours open on the connection: \
         its sshd allows no sessions here. Check MaxSessions (0 refuses every command) and any Match block for this \
         user in the host's sshd_config"
    )]
    ChannelRefused { host: String, reason: String },

    /// Something went wrong on the way to or at a bastion (ProxyJump). Not a `#[source]`:
    /// the message already says it once, and exit codes look inside.
    #[error("bastion {hop} ({addr}): {}", hop_detail(.hop, .source))]
    Hop { hop: String, addr: String, source: Box<Error> },

    #[error("{host}: ProxyCommand `{command}` {status}{}", if .stderr.is_empty() { String::new() } else { format!(": {}", .stderr) })]
    ProxyCommand { host: String, command: String, status: String, stderr: String },

    /// `transport = "ssh"`: the system ssh could not run the command (it never started).
    #[error("{host}: `ssh` {status} before running anything{}", if .stderr.is_empty() { String::new() } else { format!(": {}", .stderr) })]
    SystemSsh { host: String, status: String, stderr: String },

    #[error("prompt is empty: give the task text as an argument, with --prompt-file, or on stdin with '-'")]
    PromptEmpty,

    #[error(
        "prompt is {bytes} bytes, over the {limit}-byte limit: put the material in a file on the brother and refer to it"
    )]
    PromptTooLarge { bytes: usize, limit: usize },

    #[error("agent {agent} cannot honour sandbox {sandbox}: {why}")]
    SandboxRefused { agent: String, sandbox: String, why: String },

    #[error("launch of task {task} on {brother} refused by the brother (code {code}): {message}")]
    LaunchRefused { task: i64, brother: String, code: i32, message: String },

    #[error(
        "launch of task {task} on {brother} is unknown: {why}. The agent may or may not be running; \
         the task is recorded as launch_unknown"
    )]
    LaunchUnknown { task: i64, brother: String, why: String },

    /// A launch that got as far as recording its task, then failed; the task row says why.
    #[error("task {task} on {brother} failed to launch")]
    LaunchFailed {
        task: i64,
        brother: String,
        #[source]
        source: Box<Error>,
    },

    #[error("task {task} is already {status}: nothing to stop (use reopen for follow-up work)")]
    AlreadyFinished { task: i64, status: String },

    #[error("task {task} is still {status}: wait for it (delegate wait {task}) or cancel it before reopening")]
    RunActive { task: i64, status: String },

    #[error("task {task} is {status}: nobody is listening. Follow up with: delegate reopen {task} \"...\"")]
    SayToFinished { task: i64, status: String },

    /// `say` to a task whose agent never started (queued, launching, or ended before it
    /// started): `why` says which, and what to do instead.
    #[error("task {task} is {status}: {why}")]
    SayNotStarted { task: i64, status: String, why: String },

    /// `update` asked for a state only delegate sets.
    #[error(
        "status {status} is set by delegate, never by hand: `update` records an outcome a person learned, \
         one of completed, failed or cancelled"
    )]
    StatusNotSettable { status: String },

    /// `update` of a task whose agent may be at work.
    #[error(
        "task {task} is {status}: an agent may be at work on it, so its outcome is not known yet. Stop it with \
         `delegate cancel {task}`, or wait for it to finish (`delegate wait {task}`); then `update` can record \
         or correct its outcome"
    )]
    UpdateInFlight { task: i64, status: String },

    /// A `cancel` won the race against this launch: the brother refused to start the agent
    /// (the cancel's mark), or the task was recorded `cancelled` while the launch was on its way.
    #[error(
        "task {task} on {brother} was cancelled while it was launching: no agent runs for it, and none will \
         start (the brother keeps the cancel's mark). Nothing to retry; `delegate show {task}` has the record"
    )]
    CancelledWhileLaunching { task: i64, brother: String },

    #[error("task {task} cannot be reopened: {why}")]
    NotResumable { task: i64, why: String },

    #[error("sync of {host} failed: {why}")]
    SyncFailed { host: String, why: String },

    /// A command on the brother wrote more than the exec cap; reading stopped there.
    #[error("{host} sent output over {limit} bytes; stopped reading (see the caps in RELIABILITY.md)")]
    OutputTooLarge { host: String, limit: usize },

    #[error("task {0} not found")]
    TaskNotFound(i64),

    #[error("task {task} changed under us (expected version {expected}); try again")]
    Conflict { task: i64, expected: i64 },

    #[error("mailbox schema v{found} is newer than this build understands (v{known}): upgrade delegate")]
    SchemaTooNew { found: u32, known: u32 },

    #[error("mailbox error: {}", store_message(.0))]
    Store(#[from] rusqlite::Error),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// SQLite's text for a full disk depends on where it ran out ("database or disk is full"
/// for a write, "disk I/O error" while sizing the shared-memory file); say it plainly.
fn store_message(e: &rusqlite::Error) -> String {
    const SQLITE_IOERR_SHMSIZE: std::ffi::c_int = 4874;
    let full = matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::DiskFull || f.extended_code == SQLITE_IOERR_SHMSIZE);
    if full { format!("the disk holding the mailbox is full ({e}): free some space and retry") } else { e.to_string() }
}

/// A bastion's host-key problem gets its own advice: `delegate hosts trust` records keys
/// for inventory hosts, and a bastion is an ssh_config name.
fn hop_detail(hop: &str, e: &Error) -> String {
    match e {
        Error::HostKeyUnknown { lookup, key_type, fingerprint, .. } => format!(
            "host key unknown ({lookup}): it presented {key_type} key {fingerprint}. If that fingerprint is right, \
             record it in the bastion's known_hosts file (connect once with `ssh {hop}` and accept it)"
        ),
        other => other.to_string(),
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() { "none".to_string() } else { items.join(", ") }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

impl Error {
    /// The task a failed launch left in the mailbox, if it got that far.
    pub fn task_id(&self) -> Option<i64> {
        match self {
            Error::LaunchFailed { task, .. }
            | Error::LaunchRefused { task, .. }
            | Error::LaunchUnknown { task, .. }
            | Error::CancelledWhileLaunching { task, .. } => Some(*task),
            _ => None,
        }
    }
}
