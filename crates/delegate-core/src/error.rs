//! The library's error type. Variants carry the values a reader needs (brother, host, path,
//! fingerprint); causes sit in `#[source]` so each fact prints once. The CLI picks exit codes
//! by matching variants, never by matching message text.

use std::path::PathBuf;
use std::time::Duration;

use crate::hosts::known_hosts::KnownHostsError;
use crate::hosts::ssh_config::SshConfigError;

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

    /// A reasoning effort, spend limit or extra argument the agent cannot take: refused,
    /// never dropped.
    #[error("agent {agent} cannot take {setting}: {why}")]
    SettingRefused { agent: String, setting: String, why: String },

    #[error("unknown profile {name:?} ({}): add [profiles.{name}] to the inventory or pick another", list_or_none(.known))]
    UnknownProfile { name: String, known: Vec<String> },

    #[error(
        "{which} spent ${spent:.4} today (lead's local day, from what the runs' streams reported), at or over \
         its daily cap max_usd_per_day = ${cap:.2}: nothing was recorded or sent. Launch tomorrow, raise the cap \
         in the inventory, or set over_cap = \"queue\" there to queue such launches until the day rolls over"
    )]
    OverDailyCap { which: String, spent: f64, cap: f64 },

    #[error(
        "no brother in environment {environment:?} has room now: {why}. Wait for a task to finish, raise \
             a cap (max_concurrent, max_usd_per_day), or add a brother to [environments.{environment}]"
    )]
    NoRoomInEnvironment { environment: String, why: String },

    #[error("unknown environment {name:?} ({}): add [environments.{name}] to the inventory or pick another", list_or_none(.known))]
    UnknownEnvironment { name: String, known: Vec<String> },

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

    /// The NATS server of a `transport = "nats"` host could not be reached, refused the
    /// credentials, or refused a permission (`what` says which, and the fix).
    #[error("NATS server of {host} ({url}): {what}")]
    Nats { host: String, url: String, what: String },

    /// No `delegate worker` with the host's worker id answered (or took the task in time,
    /// or it refused the task).
    #[error("host {host}: {why}")]
    NoWorker { host: String, worker: String, why: String },

    /// `diff` / `fetch`: the task has no change to show (nothing changed, no git state
    /// recorded at launch, or the workdir is not a git work tree).
    #[error("task {task}: {why}")]
    NothingToFetch { task: i64, why: String },

    /// `diff` / `fetch`: the brother's diff script refused (`code` is its exit code: 23 git
    /// missing, 24 workdir gone) or its reply was unusable.
    #[error("diff of task {task} on {host} failed: {why}")]
    DiffFailed { task: i64, host: String, code: Option<i32>, why: String },

    /// `diff`: the change is larger than a terminal or a reply should carry.
    #[error(
        "diff of task {task} is over {limit} bytes ({size} bytes): use `delegate diff {task} --stat`, or \
         `delegate fetch {task} --into DIR` for the whole patch"
    )]
    DiffTooLarge { task: i64, size: u64, limit: u64 },

    /// `fetch --artifacts`: the brother's artifacts script refused or its reply was unusable
    /// (`code` is its exit code: 46 the artifact is refused, 24 the task dir is gone).
    #[error("artifacts of task {task} on {host}: {why}")]
    ArtifactFailed { task: i64, host: String, code: Option<i32>, why: String },

    /// `fetch --artifacts`: declared artifacts that are not copied back (a path resolving out
    /// of the workdir and task dir, missing, not a file, over a size cap), each named.
    #[error("task {task}: {} artifact(s) refused: {}", .refused.len(), .refused.join("; "))]
    ArtifactRefused { task: i64, refused: Vec<String> },

    /// `cleanup`: the task's worktree holds work that would be lost, or the task is not
    /// finished; nothing was removed.
    #[error("cleanup of task {task} refused: {why}")]
    CleanupRefused { task: i64, why: String },

    /// A task handed to an agentbus worker: agentbus has no way to do this (`say`, `cancel`),
    /// or its messages could not be published or read.
    #[error("task {task}: {why}")]
    Agentbus { task: i64, why: String },

    /// `fetch --apply`: `git apply --check` refused the patch; nothing was applied.
    #[error(
        "the change of task {task} does not apply to {repo}: {why}{}. Nothing was applied: bring the checkout to \
         the task's base (`delegate show {task}` has its HEAD), or `delegate fetch {task} --into DIR` and merge by hand",
        if .files.is_empty() { String::new() } else { format!(" (files: {})", .files.join(", ")) }
    )]
    PatchRefused { task: i64, repo: PathBuf, files: Vec<String>, why: String },

    /// `fetch`: the patch file or the local checkout could not be written or read.
    #[error("{path}: {why}")]
    PatchFile { path: PathBuf, why: String },

    /// `--parent` names a task the mailbox does not have.
    #[error("no task {parent} to be the parent: --parent takes the number of a task in the mailbox (`delegate list`)")]
    NoSuchParent { parent: i64 },

    /// `move` named a version the task is no longer at: somebody changed it since.
    #[error(
        "task {task} changed since you read it: you gave version {expected}, it is at version {found} (in {column}). \
         Re-read it (`delegate board --json` or `delegate show {task} --json`) and move it again if that is still right"
    )]
    StaleVersion { task: i64, expected: i64, found: i64, column: String },

    /// `move` to a column that follows the task's state, not a person's decision.
    #[error("task {task} cannot be moved to {to}: {why}")]
    MoveRefused { task: i64, to: String, why: String },

    /// `wait --children` of a task nothing is part of.
    #[error("task {task} has no children: none was created with `--parent {task}` (wait on it without --children)")]
    NoChildren { task: i64 },

    /// `review` of a task that is not waiting for review.
    #[error(
        "task {task} is not waiting for review (it is in {column}): only a finished task not yet accepted is \
         reviewed (`delegate board` shows the review column)"
    )]
    NotInReview { task: i64, column: String },

    /// A comment that is empty or too long; nothing was recorded.
    #[error("{why}")]
    CommentRefused { why: String },

    /// `wait` on a backlog task: nothing ends it until it is started.
    #[error("task {task} is in the backlog: it never ends unless started (`delegate start {task}`) or cancelled")]
    WaitOnBacklog { task: i64 },

    /// `start` of a task that is not a backlog task, or has no brother to run on.
    #[error("task {task} cannot be started: {why}")]
    NotStartable { task: i64, why: String },

    /// The asker's role on the board does not allow the change ([`crate::roles`]).
    #[error(
        "{why}. Who has it: {holders}. Ask one of them, or give {who} the role in the inventory's [roles] \
         table (\"{who}\" = \"{needed}\")"
    )]
    RoleRefused { who: String, needed: String, why: String, holders: String },

    /// `delete` of a task an agent may still be working on (or about to start): only a
    /// backlog or finished task is deleted.
    #[error(
        "task {task} is {status}: an agent may be at work on it, and deleting it would leave that agent running \
         with nobody tracking it. Only a backlog or finished task is deleted: `delegate cancel {task}` first"
    )]
    DeleteInFlight { task: i64, status: String },

    /// `delete` of a task other tasks are part of.
    #[error(
        "task {task} has children ({}): delete them first, or keep the parent",
        .children.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
    )]
    DeleteHasChildren { task: i64, children: Vec<i64> },
    /// `answer` of a task whose agent asked nothing that is still open.
    #[error(
        "task {task} has no open question to answer ({status}): `delegate inbox` lists the questions agents asked; \
         to tell a running agent something anyway use `delegate say {task}`, to follow up a finished task \
         `delegate reopen {task}`"
    )]
    NothingToAnswer { task: i64, status: String },
    #[error("no schedule named {name:?}; schedules: {} (`delegate schedule list`)", list_or_none(.known))]
    UnknownSchedule { name: String, known: Vec<String> },

    /// A schedule that cannot be added as given: a bad name, spec, time zone or policy.
    #[error("schedule {name:?}: {why}")]
    BadSchedule { name: String, why: String },

    #[error("a dispatcher already runs for this mailbox (pid {pid}, lock {lock}); only one may run at a time")]
    DispatcherRunning { pid: String, lock: PathBuf },
    /// A notification target is missing or unusable (`notify test`, `--notify`).
    #[error("{why}")]
    NotifyMisconfigured { why: String },

    /// `notify test`: a target did not take the sample notification.
    #[error("notification test failed: {failures}")]
    NotifyFailed { failures: String },

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

/// What kind of failure an [`Error`] is: the one classification the CLI's exit codes, the MCP
/// server's error names and embedders all use, so a new error is classified once, here.
/// Wrappers (a failed launch, a bastion hop) take their cause's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The inventory or an ssh config is wrong.
    Config,
    UnknownBrother,
    UnknownHost,
    UnknownAgent,
    /// The host's key is not recorded anywhere.
    HostKeyUnknown,
    /// The host's key differs from the recorded one, is revoked, does not match the expected
    /// fingerprint, or a certificate that should vouch for it does not.
    HostKeyChanged,
    /// The host could not be reached (or a ProxyCommand failed), or did not answer in time.
    Unreachable,
    /// The host refused every key offered.
    AuthRefused,
    /// The SSH protocol (or the system ssh) failed in some other way.
    Ssh,
    PromptEmpty,
    PromptTooLarge,
    /// The sandbox level cannot be honoured: refused, never downgraded.
    SandboxRefused,
    /// A reasoning effort, spend limit or extra argument the agent cannot take.
    SettingRefused,
    UnknownProfile,
    UnknownEnvironment,
    /// Today's spend on the brother or host reached its `max_usd_per_day`.
    OverDailyCap,
    /// `--environment`: every brother in it is at a cap.
    NoRoomInEnvironment,
    /// The brother's launch script refused; the code is its preflight verdict (20-31,
    /// [`crate::remote::code`]), or another code it exited with.
    BrotherRefused(i32),
    /// The link dropped after the launch script was sent: the agent may be running.
    LaunchUnknown,
    TaskNotFound,
    /// The task is finished: nothing to stop or tell.
    AlreadyFinished,
    /// The task still has a run in progress.
    RunActive,
    /// The task's agent has no session to resume.
    NotResumable,
    /// The task's agent has not started (or is not confirmed started): nobody to tell.
    NotStarted,
    /// An argument the operation does not take (a status a person may not set).
    BadArgument,
    /// `start` of a task not in the backlog, or with no brother assigned.
    NotStartable,
    /// `answer` of a task with no open question.
    NothingToAnswer,
    /// A `move` named a version the task is no longer at: re-read it.
    StaleVersion,
    /// The task was cancelled while its launch ran; no agent runs for it.
    CancelledWhileLaunching,
    /// A host could not be synced.
    SyncFailed,
    /// A command on the brother wrote more than the exec cap.
    OutputTooLarge,
    /// No schedule by that name, or a schedule spec, time zone or name that is refused.
    Schedule,
    /// A dispatcher already runs for this mailbox.
    DispatcherRunning,
    /// `diff`/`fetch`: no change to fetch, or the workdir is not a git work tree.
    NothingToFetch,
    /// `fetch --apply`: the patch does not apply; nothing was applied.
    PatchRefused,
    /// `fetch --artifacts`: an artifact is refused (outside the workdir and task dir, too large).
    ArtifactRefused,
    /// `cleanup`: the task's change was never fetched, or the task is still running.
    CleanupRefused,
    /// A task handed to an agentbus worker: refused (`say`, `cancel`) or not reachable.
    Agentbus,
    /// `diff`/`fetch` failed otherwise (the brother's diff, the local patch file).
    DiffFailed,
    /// Another process changed the task first (optimistic locking).
    Conflict,
    /// No worker took a NATS task within its TTL, the worker refused it, or no worker with
    /// the host's id answers.
    NoWorker,
    /// The NATS server is unreachable, or refused the credentials or a permission.
    NatsRefused,
    /// The asker's role does not allow the change.
    RoleRefused,

    /// A notification target is misconfigured, or a test delivery failed.
    Notify,
    /// The mailbox could not be read or written (or is of a newer schema).
    Mailbox,
}

impl ErrorKind {
    /// A short snake_case name for machines (the MCP server's error codes).
    pub fn name(self) -> &'static str {
        use crate::remote::code;
        match self {
            ErrorKind::Config => "config",
            ErrorKind::UnknownBrother => "unknown_brother",
            ErrorKind::UnknownHost => "unknown_host",
            ErrorKind::UnknownAgent => "unknown_agent",
            ErrorKind::HostKeyUnknown => "host_key_unknown",
            ErrorKind::HostKeyChanged => "host_key_changed",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::AuthRefused => "auth_refused",
            ErrorKind::Ssh => "ssh",
            ErrorKind::PromptEmpty => "prompt_empty",
            ErrorKind::PromptTooLarge => "prompt_too_large",
            ErrorKind::SandboxRefused | ErrorKind::BrotherRefused(code::SANDBOX_REFUSED) => "sandbox_refused",
            ErrorKind::SettingRefused => "setting_refused",
            ErrorKind::UnknownProfile => "unknown_profile",
            ErrorKind::UnknownEnvironment => "unknown_environment",
            ErrorKind::OverDailyCap => "over_daily_cap",
            ErrorKind::NoRoomInEnvironment => "no_room_in_environment",
            ErrorKind::BrotherRefused(code) => match code {
                code::TMUX_MISSING => "tmux_missing",
                code::AGENT_MISSING => "agent_missing",
                code::PROMPT_NOT_WRITTEN => "prompt_not_written",
                code::BASE_TOOLS_MISSING => "base_tools_missing",
                code::WORKDIR_MISSING => "workdir_missing",
                code::TASK_DIR_NOT_WRITABLE => "task_dir_not_writable",
                code::TMUX_REFUSED => "tmux_refused",
                code::RUNNER_SILENT => "runner_silent",
                code::ALREADY_LAUNCHED => "already_launched",
                code::LAUNCH_SCRIPT_ERROR => "launch_script_error",
                code::ENVIRONMENT => "environment",
                _ => "launch_refused",
            },
            ErrorKind::LaunchUnknown => "launch_unknown",
            ErrorKind::TaskNotFound => "task_not_found",
            ErrorKind::AlreadyFinished => "already_finished",
            ErrorKind::RunActive => "run_active",
            ErrorKind::NotResumable => "not_resumable",
            ErrorKind::NotStarted => "not_started",
            ErrorKind::BadArgument => "bad_arguments",
            ErrorKind::NotStartable => "not_startable",
            ErrorKind::NothingToAnswer => "nothing_to_answer",
            ErrorKind::StaleVersion => "stale_version",
            ErrorKind::CancelledWhileLaunching => "cancelled_while_launching",
            ErrorKind::SyncFailed => "sync_failed",
            ErrorKind::OutputTooLarge => "output_too_large",
            ErrorKind::Schedule => "schedule",
            ErrorKind::DispatcherRunning => "dispatcher_running",
            ErrorKind::NothingToFetch => "nothing_to_fetch",
            ErrorKind::PatchRefused => "patch_refused",
            ErrorKind::ArtifactRefused => "artifact_refused",
            ErrorKind::CleanupRefused => "cleanup_refused",
            ErrorKind::Agentbus => "agentbus",
            ErrorKind::DiffFailed => "diff_failed",
            ErrorKind::Conflict => "conflict",
            ErrorKind::NoWorker => "no_worker",
            ErrorKind::NatsRefused => "nats_refused",
            ErrorKind::RoleRefused => "role_refused",

            ErrorKind::Notify => "notify",
            ErrorKind::Mailbox => "mailbox",
        }
    }
}

impl Error {
    /// This error's [`ErrorKind`]. Every variant is listed (no catch-all), so adding a variant
    /// without classifying it does not compile.
    pub fn kind(&self) -> ErrorKind {
        match self {
            // The wrapper says which task or hop; the cause decides the kind.
            Error::LaunchFailed { source, .. } | Error::Hop { source, .. } => source.kind(),
            Error::Config { .. } | Error::SshConfig(_) => ErrorKind::Config,
            Error::KnownHosts(
                KnownHostsError::CertificateInvalid { .. } | KnownHostsError::CertificateExpected { .. },
            ) => ErrorKind::HostKeyChanged,
            Error::KnownHosts(_) => ErrorKind::Config,
            Error::UnknownBrother { .. } => ErrorKind::UnknownBrother,
            Error::UnknownHost { .. } => ErrorKind::UnknownHost,
            Error::UnknownAgent { .. } => ErrorKind::UnknownAgent,
            Error::HostKeyUnknown { .. } => ErrorKind::HostKeyUnknown,
            Error::HostKeyChanged { .. } | Error::HostKeyRevoked { .. } | Error::FingerprintMismatch { .. } => {
                ErrorKind::HostKeyChanged
            }
            Error::Unreachable { .. } | Error::Timeout { .. } | Error::ProxyCommand { .. } => ErrorKind::Unreachable,
            Error::AuthRefused { .. } | Error::AuthDisconnected { .. } => ErrorKind::AuthRefused,
            Error::Ssh { .. } | Error::SystemSsh { .. } | Error::ChannelRefused { .. } => ErrorKind::Ssh,
            Error::PromptEmpty => ErrorKind::PromptEmpty,
            Error::PromptTooLarge { .. } => ErrorKind::PromptTooLarge,
            Error::SandboxRefused { .. } => ErrorKind::SandboxRefused,
            Error::SettingRefused { .. } => ErrorKind::SettingRefused,
            Error::UnknownProfile { .. } => ErrorKind::UnknownProfile,
            Error::UnknownEnvironment { .. } => ErrorKind::UnknownEnvironment,
            Error::OverDailyCap { .. } => ErrorKind::OverDailyCap,
            Error::NoRoomInEnvironment { .. } => ErrorKind::NoRoomInEnvironment,
            Error::LaunchRefused { code, .. } => ErrorKind::BrotherRefused(*code),
            Error::LaunchUnknown { .. } => ErrorKind::LaunchUnknown,
            Error::TaskNotFound(_) => ErrorKind::TaskNotFound,
            Error::NoSuchParent { .. } => ErrorKind::BadArgument,
            Error::NotStartable { .. } => ErrorKind::NotStartable,
            Error::NothingToAnswer { .. } => ErrorKind::NothingToAnswer,
            Error::WaitOnBacklog { .. } => ErrorKind::NotStarted,
            Error::CommentRefused { .. } => ErrorKind::BadArgument,
            Error::NotInReview { .. } => ErrorKind::BadArgument,
            Error::NoChildren { .. } => ErrorKind::BadArgument,
            Error::MoveRefused { .. } => ErrorKind::BadArgument,
            Error::StaleVersion { .. } => ErrorKind::StaleVersion,
            Error::AlreadyFinished { .. } | Error::SayToFinished { .. } => ErrorKind::AlreadyFinished,
            Error::RunActive { .. } | Error::UpdateInFlight { .. } => ErrorKind::RunActive,
            Error::SayNotStarted { .. } => ErrorKind::NotStarted,
            Error::StatusNotSettable { .. } => ErrorKind::BadArgument,
            Error::CancelledWhileLaunching { .. } => ErrorKind::CancelledWhileLaunching,
            Error::NotResumable { .. } => ErrorKind::NotResumable,
            Error::SyncFailed { .. } => ErrorKind::SyncFailed,
            Error::OutputTooLarge { .. } => ErrorKind::OutputTooLarge,
            Error::UnknownSchedule { .. } | Error::BadSchedule { .. } => ErrorKind::Schedule,
            Error::DispatcherRunning { .. } => ErrorKind::DispatcherRunning,
            Error::NothingToFetch { .. } => ErrorKind::NothingToFetch,
            // The brother's own verdicts keep their codes (23 git missing, 24 workdir gone).
            Error::DiffFailed { code: Some(44), .. } => ErrorKind::NothingToFetch,
            Error::DiffFailed { code: Some(c @ 20..=31), .. } => ErrorKind::BrotherRefused(*c),
            Error::DiffFailed { .. } | Error::PatchFile { .. } => ErrorKind::DiffFailed,
            Error::DiffTooLarge { .. } => ErrorKind::OutputTooLarge,
            Error::ArtifactRefused { .. } | Error::ArtifactFailed { code: Some(46), .. } => ErrorKind::ArtifactRefused,
            Error::CleanupRefused { .. } => ErrorKind::CleanupRefused,
            Error::Agentbus { .. } => ErrorKind::Agentbus,
            Error::ArtifactFailed { code: Some(c @ 20..=31), .. } => ErrorKind::BrotherRefused(*c),
            Error::ArtifactFailed { .. } => ErrorKind::DiffFailed,
            Error::PatchRefused { .. } => ErrorKind::PatchRefused,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::Nats { .. } => ErrorKind::NatsRefused,
            Error::NoWorker { .. } => ErrorKind::NoWorker,
            Error::RoleRefused { .. } => ErrorKind::RoleRefused,
            Error::DeleteInFlight { .. } => ErrorKind::RunActive,
            Error::DeleteHasChildren { .. } => ErrorKind::BadArgument,
            Error::NotifyMisconfigured { .. } | Error::NotifyFailed { .. } => ErrorKind::Notify,
            Error::SchemaTooNew { .. } | Error::Store(_) | Error::Io { .. } => ErrorKind::Mailbox,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrappers_take_their_cause_s_kind_and_brother_codes_keep_their_names() {
        let refused = Error::LaunchRefused { task: 3, brother: "oppy".into(), code: 21, message: "no claude".into() };
        let wrapped = Error::LaunchFailed { task: 3, brother: "oppy".into(), source: Box::new(refused) };
        assert_eq!(wrapped.kind(), ErrorKind::BrotherRefused(21));
        assert_eq!(wrapped.kind().name(), "agent_missing");
        let hop = Error::Hop { hop: "bastion".into(), addr: "b:22".into(), source: Box::new(Error::TaskNotFound(1)) };
        assert_eq!(hop.kind(), ErrorKind::TaskNotFound);
        // Two ways of saying "this sandbox cannot be honoured" share one name.
        assert_eq!(
            ErrorKind::BrotherRefused(crate::remote::code::SANDBOX_REFUSED).name(),
            ErrorKind::SandboxRefused.name()
        );
        assert_eq!(ErrorKind::BrotherRefused(99).name(), "launch_refused");
    }
}
