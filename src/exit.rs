//! The exit-code table. Scripts and lead agents branch on these numbers, so each one is a
//! constant with a doc line saying when it happens; the README repeats the table.
//! Codes 20-29 are the brother's own preflight verdicts, passed through unchanged, so
//! some constants here are read only by people and tests.
#![allow(dead_code)]

use std::process::ExitCode;

use delegate_core::Error as E;
use delegate_core::ErrorKind as K;
use delegate_core::remote::code as remote;

/// Everything worked (for `run`: the agent really started in tmux on the brother).
pub const OK: u8 = 0;
/// An error not covered below.
pub const FAILURE: u8 = 1;
/// Bad command-line usage (clap's own code).
pub const USAGE: u8 = 2;
/// The inventory or ssh config is wrong, or names an unknown brother, host or agent.
pub const CONFIG: u8 = 3;
/// The mailbox could not be read or written.
pub const MAILBOX: u8 = 4;
/// The prompt is empty or over the size limit (checked before connecting).
pub const PROMPT: u8 = 5;
/// No task with that number.
pub const NOT_FOUND: u8 = 6;
/// `wait`: every task finished, but not all of them completed (failed, turn limit, ...).
pub const NOT_ALL_COMPLETED: u8 = 7;
/// `wait`: the timeout passed with tasks still unfinished.
pub const WAIT_TIMEOUT: u8 = 8;
/// The task is already finished (cancel of a finished task).
pub const ALREADY_FINISHED: u8 = 9;
/// `reopen` or `update`: the task still has a run in progress.
pub const RUN_ACTIVE: u8 = 16;
/// `run`: a `cancel` won against the launch; no agent runs for the task (nothing to retry).
pub const CANCELLED_WHILE_LAUNCHING: u8 = 18;
/// `say`: the task's agent never started (queued, launching, or ended before it started).
pub const NOT_STARTED: u8 = 19;
/// `reopen`: the task's agent has no session to resume.
pub const NOT_RESUMABLE: u8 = 17;
/// The host could not be reached, or did not answer in time.
pub const UNREACHABLE: u8 = 10;
/// The host refused every key we offered.
pub const AUTH: u8 = 11;
/// The host's key is not in known_hosts (the message shows its fingerprint and how to trust it).
pub const HOST_KEY_UNKNOWN: u8 = 12;
/// The host's key differs from the recorded one, is revoked, or did not match --fingerprint.
pub const HOST_KEY_CHANGED: u8 = 13;
/// The connection broke after the launch script was sent: the task is `launch_unknown`.
pub const LAUNCH_UNKNOWN: u8 = 14;
/// The SSH protocol failed in some other way.
pub const SSH: u8 = 15;
/// tmux is not installed on the brother.
pub const TMUX_MISSING: u8 = remote::TMUX_MISSING as u8;
/// The agent command is not found on the brother (plain or login-shell PATH).
pub const AGENT_MISSING: u8 = remote::AGENT_MISSING as u8;
/// The prompt or a task file could not be written whole on the brother (disk full, quota),
/// or helper files arrived damaged (hash mismatch).
pub const PROMPT_NOT_WRITTEN: u8 = remote::PROMPT_NOT_WRITTEN as u8;
/// base64, sha256sum or another basic tool is missing on the brother.
pub const BASE_TOOLS_MISSING: u8 = remote::BASE_TOOLS_MISSING as u8;
/// The working directory does not exist on the brother.
pub const WORKDIR_MISSING: u8 = remote::WORKDIR_MISSING as u8;
/// The task directory cannot be created or written on the brother.
pub const TASK_DIR_NOT_WRITABLE: u8 = remote::TASK_DIR_NOT_WRITABLE as u8;
/// The sandbox level cannot be honoured by this agent on this brother (refused, not downgraded).
pub const SANDBOX_REFUSED: u8 = remote::SANDBOX_REFUSED as u8;
/// tmux refused to create the session.
pub const TMUX_REFUSED: u8 = remote::TMUX_REFUSED as u8;
/// The tmux session started but the runner never reported in.
pub const RUNNER_SILENT: u8 = remote::RUNNER_SILENT as u8;
/// The task's directory or session already belongs to a launch.
pub const ALREADY_LAUNCHED: u8 = remote::ALREADY_LAUNCHED as u8;

/// `start`: the task is not in the backlog (started already), or has no brother assigned.
pub const NOT_STARTABLE: u8 = 35;

/// The asker's role on the board (the inventory's `[roles]`) does not allow the change; the
/// message names the role needed and who has it.
pub const ROLE_REFUSED: u8 = 38;
/// `answer`: the task has no open question (nothing the agent asked waits for an answer).
pub const NOTHING_TO_ANSWER: u8 = 39;
/// `board --serve`: the board page could not start (the port is taken, say).
pub const BOARD_PAGE_FAILED: u8 = 40;

/// `move`: the task changed since the caller read its version; re-read it and decide again.
pub const STALE_VERSION: u8 = 34;

/// A notification target is misconfigured (`--notify` with no target, a token variable
/// that is not set), or `notify test` could not deliver to a target.
pub const NOTIFY: u8 = 43;
/// `diff` / `fetch`: the task changed nothing, or its workdir is not a git work tree (or
/// had no git state recorded at launch).
pub const NOTHING_TO_FETCH: u8 = 44;
/// `fetch --apply`: the task's change does not apply to the local checkout (the files are
/// named); nothing was applied.
pub const PATCH_REFUSED: u8 = 45;
/// `fetch --artifacts`: an artifact is refused (its path resolves out of the task's workdir
/// and task dir, it is missing or not a file, or it is over a size cap); the others were
/// fetched.
pub const ARTIFACT_REFUSED: u8 = 46;

/// `cleanup`: refused, nothing removed: the task's change was never fetched (`--force`
/// throws it away), or the task has not finished.
pub const CLEANUP_REFUSED: u8 = 47;

/// A NATS host: no worker took the task within its `task_ttl`, the worker refused the task
/// (`wait`, `run`), or no `delegate worker` with the host's worker id answers (say, cancel,
/// logs, diff).
pub const NO_WORKER: u8 = 48;
/// A NATS host: the NATS server is unreachable, or refused the credentials or a permission.
pub const NATS_REFUSED: u8 = 49;
/// A task handed to an agentbus worker (`protocol = "agentbus"`): `say` and `cancel` are
/// refused (agentbus has neither), or its messages could not be published or read.
pub const AGENTBUS: u8 = 50;

/// `doctor`: at least one brother cannot launch (a check failed; its fix is printed).
pub const DOCTOR_FOUND_PROBLEMS: u8 = 32;
/// `run`: the agent cannot take a setting given (reasoning effort, spend limit, extra
/// arguments naming a flag delegate owns); nothing was recorded or sent.
pub const SETTING_REFUSED: u8 = 33;

/// `run`: today's spend on the brother or its host reached its `max_usd_per_day` (with
/// `over_cap = "refuse"`, the default); nothing was recorded or sent.
pub const OVER_DAILY_CAP: u8 = 36;
/// `run --environment`: no brother in the environment has room under its caps now.
pub const NO_ROOM_IN_ENVIRONMENT: u8 = 37;
/// `schedule`: no schedule by that name, or a schedule's name, spec (--at, --every,
/// --weekdays, --cron) or --tz is refused; nothing was changed.
pub const SCHEDULE: u8 = 41;
/// `dispatch`: another dispatcher already runs for this mailbox (its pid is named); this one
/// did nothing.
pub const DISPATCHER_RUNNING: u8 = 42;

/// The launch script stopped on an unexpected error before starting anything (bash's
/// message is in the reason).
pub const LAUNCH_SCRIPT_ERROR: u8 = remote::LAUNCH_SCRIPT_ERROR as u8;
/// The agent's environment could not be set up on the brother (login shell, env file).
pub const ENVIRONMENT: u8 = remote::ENVIRONMENT as u8;

/// `worker`: the NATS server could not be reached, or refused the worker (credentials,
/// permissions, a missing stream it may not create).
pub const NATS_UNREACHABLE: u8 = 49;

/// Stdout was closed by its reader (`delegate status | head -1`): delegate stops quietly
/// with the status of a program killed by SIGPIPE (128 + 13). See main.rs.
pub const CLOSED_STDOUT: u8 = 141;

/// Picks the code for an error by walking its cause chain for a known library error.
pub fn code_for(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<E>()
            && let Some(code) = code_for_core(e)
        {
            return ExitCode::from(code);
        }
        if cause.downcast_ref::<crate::board_page::StartFailed>().is_some() {
            return ExitCode::from(BOARD_PAGE_FAILED);
        }
        if cause.downcast_ref::<crate::cmd::worker::NatsUnreachable>().is_some() {
            return ExitCode::from(NATS_UNREACHABLE);
        }
        if cause.downcast_ref::<clap::Error>().is_some() {
            return ExitCode::from(USAGE);
        }
    }
    ExitCode::from(FAILURE)
}

/// The exit code for a library error, by its [`ErrorKind`] (the MCP server names the same
/// kinds). Several kinds share a code where a script has no different thing to do.
fn code_for_core(e: &E) -> Option<u8> {
    Some(match e.kind() {
        K::Config
        | K::UnknownBrother
        | K::UnknownHost
        | K::UnknownAgent
        | K::UnknownProfile
        | K::UnknownEnvironment => CONFIG,
        K::OverDailyCap => OVER_DAILY_CAP,
        K::NoRoomInEnvironment => NO_ROOM_IN_ENVIRONMENT,
        K::SettingRefused => SETTING_REFUSED,
        K::HostKeyUnknown => HOST_KEY_UNKNOWN,
        K::HostKeyChanged => HOST_KEY_CHANGED,
        K::Unreachable | K::SyncFailed => UNREACHABLE,
        K::AuthRefused => AUTH,
        K::Ssh => SSH,
        K::PromptEmpty | K::PromptTooLarge => PROMPT,
        K::SandboxRefused => SANDBOX_REFUSED,
        // The brother's own preflight verdicts pass through unchanged.
        K::BrotherRefused(code) if (20..=31).contains(&code) => code as u8,
        K::BrotherRefused(_) => FAILURE,
        K::LaunchUnknown => LAUNCH_UNKNOWN,
        K::TaskNotFound => NOT_FOUND,
        K::AlreadyFinished => ALREADY_FINISHED,
        K::RunActive => RUN_ACTIVE,
        K::NotResumable => NOT_RESUMABLE,
        K::NotStarted => NOT_STARTED,
        K::BadArgument => USAGE,
        K::NotStartable => NOT_STARTABLE,
        K::NothingToAnswer => NOTHING_TO_ANSWER,
        K::StaleVersion => STALE_VERSION,
        K::RoleRefused => ROLE_REFUSED,
        K::CancelledWhileLaunching => CANCELLED_WHILE_LAUNCHING,
        K::Schedule => SCHEDULE,
        K::NoWorker => NO_WORKER,
        K::NatsRefused => NATS_REFUSED,
        K::DispatcherRunning => DISPATCHER_RUNNING,
        K::NothingToFetch => NOTHING_TO_FETCH,
        K::PatchRefused => PATCH_REFUSED,
        K::ArtifactRefused => ARTIFACT_REFUSED,
        K::CleanupRefused => CLEANUP_REFUSED,
        K::Agentbus => AGENTBUS,
        K::Conflict | K::Mailbox => MAILBOX,
        K::Notify => NOTIFY,
        _ => FAILURE,
    })
}
