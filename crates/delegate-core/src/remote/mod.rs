//! The launch script: `remote/scripts/launch.sh`, a real bash file, sent on stdin to bash (see
//! [`REMOTE_COMMAND`]).
//!
//! Rust adds only `DLG_NAME='<value>'` lines and `remote/scripts/agent-env.sh` (function
//! definitions shared with `remote/scripts/doctor.sh`) in front of the file's body; it never
//! splices text into the body. The values are inert text ([`escape`]: `\xHH` for every byte
//! that could matter, decoded by bash's printf; base64 for the helper files), which keeps every
//! byte of a prompt, path or argv away from the remote shell's parser, and the body's
//! `main() {...}; main "$@"` shape means a script cut
//! off in transit runs nothing. `remote/scripts/run.sh` is the body of what tmux runs; it is
//! one of the helper files the launch script writes into the task directory, with the helpers
//! the agent calls (`report`: `remote/scripts/report.sh`; `inbox`: `remote/scripts/inbox.sh`), the
//! Claude hook (`hooks/claude-hook.sh`) and the agent plan's files. Those are the same for
//! every task: the brother keeps them in `<remote_root>/helpers/<sha256>` and a launch names
//! them by hash ([`render`]); a brother missing one answers [`code::HELPERS_MISSING`] with
//! a `DELEGATE-NEED` line, and the lead sends the launch once more with them
//! ([`with_helpers`]).
//! The formats those files write are documented at the top of each script.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::agents::{AgentPlan, PromptDelivery};
use crate::error::{Error, Result};
use crate::task::Sandbox;

// The scripts that follow a launch (sync, cancel, say) and the framing of their replies.
pub mod protocol;
// What a task changed in its workdir: `diff.sh` and its reply.
pub mod diff;
// The files a task declared (`report artifact`): `artifacts.sh` and its replies.
pub mod artifacts;
// Which scripts a `delegate worker` runs (only these, through a NATS server).
pub mod allowlist;
// The launch's variable lines as `\xHH`-escaped text, decoded by bash's printf.
pub mod escape;

/// Removes a finished task's worktree and refs on the brother (see [`crate::ops::cleanup`]).
pub const CLEANUP_SH: &str = include_str!("scripts/cleanup.sh");
pub const LAUNCH_SH: &str = include_str!("scripts/launch.sh");
/// Commands through a resident shell's tmux control client (`control_command`): function
/// definitions only, put in front of `launch.sh` (new-session) and `sync.sh` (list-sessions).
pub const TMUX_CONTROL_SH: &str = include_str!("scripts/tmux-control.sh");
/// Where the agent is found and what it runs with (login/interactive shell environment,
/// env files, version and sandbox probes): function definitions only, put in front of both
/// `launch.sh` and `doctor.sh` so a launch and `delegate doctor` find the same agent.
pub const AGENT_ENV_SH: &str = include_str!("scripts/agent-env.sh");
/// `delegate doctor`'s checks on a brother (see [`crate::ops::doctor`]).
pub const DOCTOR_SH: &str = include_str!("scripts/doctor.sh");
pub const RUN_SH: &str = include_str!("scripts/run.sh");
/// The workdir as a git tree (`git_tree`, `git_base_commit`): put in front of `launch.sh`
/// (the task's base) and `diff.sh` (what it changed since).
pub const GIT_TREE_SH: &str = include_str!("scripts/git-tree.sh");
/// The helper the agent calls to talk back (`report <kind> <text>`), written as `report`.
pub const REPORT_SH: &str = include_str!("scripts/report.sh");
/// The helper the agent calls to read the lead's messages (`inbox`, `inbox ack <id>`),
/// written as `inbox`; the Claude hook sources it to hand the messages over itself.
pub const INBOX_SH: &str = include_str!("scripts/inbox.sh");

/// The remote command every script of delegate runs under; the script comes on stdin.
///
/// Not `bash -s`: bash reads a script from a pipe one byte per read(2) (it must not read past
/// the command it is about to run), about 0.25 ms per KiB here, which is 15 ms of a 60 KiB
/// launch and seconds for a large prompt. `$(</dev/stdin)` takes the script in big reads
/// without starting a process (bash reads the file itself), and nothing runs before all of
/// it has arrived; a script cut in transit still runs nothing (see `launch.sh`'s sentinel).
/// Single-quoted for whatever login shell sshd hands it to.
pub const REMOTE_COMMAND: &str = r#"bash -c 'eval "$(</dev/stdin)"'"#;

/// [`REMOTE_COMMAND`] as an argv, to run a script locally exactly as a brother would.
pub const REMOTE_ARGV: [&str; 3] = ["bash", "-c", r#"eval "$(</dev/stdin)""#];

/// Seconds between SIGTERM and SIGKILL when the runner stops an agent.
pub const DEFAULT_GRACE_SECS: u64 = 10;

/// Exit codes of the launch script (see the header of `remote/scripts/launch.sh`).
pub mod code {
    pub const TMUX_MISSING: i32 = 20;
    pub const AGENT_MISSING: i32 = 21;
    pub const PROMPT_NOT_WRITTEN: i32 = 22;
    pub const BASE_TOOLS_MISSING: i32 = 23;
    pub const WORKDIR_MISSING: i32 = 24;
    pub const TASK_DIR_NOT_WRITABLE: i32 = 25;
    pub const SANDBOX_REFUSED: i32 = 26;
    pub const TMUX_REFUSED: i32 = 27;
    pub const RUNNER_SILENT: i32 = 28;
    pub const ALREADY_LAUNCHED: i32 = 29;
    /// The launch script stopped on an unexpected error before starting anything.
    pub const LAUNCH_SCRIPT_ERROR: i32 = 30;
    /// The agent's environment could not be set up (login shell, env file).
    pub const ENVIRONMENT: i32 = 31;
    /// A cancel won: its mark was on the brother before anything started (the lead reports
    /// [`crate::Error::CancelledWhileLaunching`], not this code).
    pub const CANCELLED: i32 = 33;
    /// Helper files are missing from the brother's store (or changed there): nothing was
    /// created; the lead sends the launch again with them ([`super::with_helpers`]).
    pub const HELPERS_MISSING: i32 = 34;
}

/// The name of a run's directory on the brother: `<mailbox>-<task>` for the first run,
/// `<mailbox>-<task>-r<n>` for a reopened one, so each run's files start empty.
pub fn task_key(mailbox_id: &str, task_id: i64, run_no: i64) -> String {
    if run_no <= 1 { format!("{mailbox_id}-{task_id}") } else { format!("{mailbox_id}-{task_id}-r{run_no}") }
}

/// The `len` bytes after a chunk reply's header line (which ends at `rest[eol]`), checked to
/// be followed by exactly `\nEND\n` (see `diff.sh`, `artifacts.sh`). `what` names the bytes.
pub(crate) fn framed_bytes<'a>(rest: &'a [u8], eol: usize, len: u64, what: &str) -> Result<&'a [u8], String> {
    let body = &rest[eol + 1..];
    let len = usize::try_from(len).map_err(|_| "the length does not fit in memory")?;
    if body.len() < len {
        return Err(format!("the reply was cut: {} of {len} bytes", body.len()));
    }
    let (bytes, tail) = body.split_at(len);
    if tail != b"\nEND\n" {
        return Err(format!("the reply does not end with END right after the {what}"));
    }
    Ok(bytes)
}

/// The variable parts of one launch.
pub struct LaunchVars<'a> {
    pub task_id: i64,
    pub task_key: &'a str,
    pub session: &'a str,
    pub nonce: &'a str,
    pub remote_root: &'a str,
    pub workdir: &'a str,
    /// For a task in a worktree of its own: the workdir it comes from, and `workdir` the
    /// worktree (made on the brother at the first launch); empty otherwise.
    pub worktree_of: &'a str,
    pub sandbox: Sandbox,
    pub plan: &'a AgentPlan,
    /// What the agent reads before the prompt (see [`crate::ops::launch::preamble`]);
    /// `{task_dir}` in it becomes the task directory on the brother.
    pub preamble: &'a str,
    /// The prompt as given; `prompt_sha256` is its SHA-256, checked on the brother.
    pub prompt: &'a [u8],
    pub prompt_sha256: &'a str,
    /// The environment the agent runs in, and env files to read on the brother.
    pub environment: crate::hosts::inventory::AgentEnvironment,
    pub env_files: &'a [String],
    /// Wall-clock limit; 0 for none.
    pub timeout_secs: u64,
    /// Turns the runner allows before it stops the agent (counting `plan.turn_marker` lines);
    /// 0 when the agent enforces its own limit.
    pub turn_limit: u32,
    /// Seconds between SIGTERM and SIGKILL when the runner stops the agent.
    pub grace_secs: u64,
}

/// Appends one field of `DLG_VARS`: its bytes and a NUL.
pub(crate) fn field(out: &mut Vec<u8>, name: &str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(Error::Config {
            path: "(launch)".into(),
            message: format!("{name} contains a NUL byte, which no program argument can carry"),
        });
    }
    out.extend_from_slice(value.as_bytes());
    out.push(0);
    Ok(())
}

/// Appends a list field: each item followed by \x1f, then the field's NUL.
pub(crate) fn list_field<'a>(out: &mut Vec<u8>, name: &str, items: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let mut joined = String::new();
    for item in items {
        if item.contains('\u{1f}') {
            return Err(Error::Config {
                path: "(launch)".into(),
                message: format!("{name} contains the control character U+001F, which delegate reserves"),
            });
        }
        joined.push_str(item);
        joined.push('\u{1f}');
    }
    field(out, name, &joined)
}

/// The spend limit as the runner reads it: `<budget> <input> <cached input> <output>` in
/// its integer unit (1e-11 dollars, per token for the prices), or empty for none.
/// A resumed Codex thread (a reopen) adds its id: its session log holds the earlier runs'
/// counts, which the runner reads before starting the agent and leaves out of this run's.
fn spend_limit_field(limit: Option<&crate::agents::SpendLimit>, resumed: Option<&str>) -> String {
    match limit {
        Some(l) => {
            let [input, cached, output] = l.usd_per_mtok.units();
            let mut field =
                format!("{} {input} {cached} {output}", crate::agents::options::budget_units(l.max_budget_usd));
            // Only an id the runner can put in a file name pattern as is; any other is left
            // out, and the whole thread's spend then counts (stopping sooner, never later).
            if let Some(id) = resumed
                .filter(|id| (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            {
                field.push(' ');
                field.push_str(id);
            }
            field
        }
        None => String::new(),
    }
}

/// The files a launch writes into the task directory, as (name, content): the runner's
/// body, the agent's helpers, the Claude hook, then the plan's own files (`plan_files`,
/// [`AgentPlan::files`]). The brother keeps them by content hash.
pub fn helper_files(plan_files: &[(String, String)]) -> Vec<(&str, &str)> {
    let mut files =
        vec![("run-body.sh", RUN_SH), ("report", REPORT_SH), ("inbox", INBOX_SH), ("hook", crate::agents::CLAUDE_HOOK)];
    files.extend(plan_files.iter().map(|(name, content)| (name.as_str(), content.as_str())));
    files
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// The launch script as a warm launch sends it: the helper files named by their hash only
/// (`DLG_FILES` empty). Fails only for values no argv could carry (NUL) or that use the list
/// separator (U+001F).
pub fn render(v: &LaunchVars) -> Result<Vec<u8>> {
    let files = helper_files(&v.plan.files);
    // The runner computes deadlines in microseconds in bash's signed 64 bits: a century is
    // as good as forever and stays far from overflow.
    let century = crate::hosts::inventory::FOREVER.as_secs();
    let (timeout_secs, grace_secs) = (v.timeout_secs.min(century), v.grace_secs.min(century));
    // Without a marker there is nothing to count: the limit is then the agent's own.
    let marker = v.plan.turn_marker.as_deref().unwrap_or("");
    let turn_limit = if marker.is_empty() { 0 } else { v.turn_limit };
    // The lead's half of launch.json; the brother appends what only it knows.
    let launch = serde_json::json!({
        "task": v.task_id,
        "task_key": v.task_key,
        "nonce": v.nonce,
        "session": v.session,
        "agent": v.plan.kind,
        "argv": v.plan.argv,
        "prompt_delivery": v.plan.delivery,
        "prompt_sha256": v.prompt_sha256,
        "environment": v.environment,
        "env_files": v.env_files,
        "prompt_bytes": v.prompt.len(),
        "sandbox": v.sandbox,
        "effective_sandbox": v.plan.effective_sandbox,
        "enforcement": v.plan.enforcement,
        "turn_limit": v.plan.turn_limit,
        "delegate_turn_limit": turn_limit,
        "turn_marker": v.plan.turn_marker,
        "timeout_secs": timeout_secs,
        "grace_secs": grace_secs,
        "agent_session_id": v.plan.session_id,
        "spend_limit": v.plan.spend_limit,
    });
    let mut prefix = launch.to_string();
    prefix.pop(); // the closing brace; launch.sh adds the remote fields and closes it

    let delivery = match v.plan.delivery {
        PromptDelivery::Stdin => "stdin",
        PromptDelivery::File => "file",
    };
    // The order is the contract with launch.sh (fields v[0] to v[28]).
    let mut vars = Vec::with_capacity(4096);
    field(&mut vars, "task key", v.task_key)?;
    field(&mut vars, "session", v.session)?;
    field(&mut vars, "nonce", v.nonce)?;
    field(&mut vars, "remote root", v.remote_root)?;
    field(&mut vars, "workdir", v.workdir)?;
    field(&mut vars, "agent", &v.plan.kind)?;
    field(&mut vars, "prompt delivery", delivery)?;
    field(&mut vars, "sandbox", v.sandbox.as_str())?;
    field(&mut vars, "prompt sha256", v.prompt_sha256)?;
    field(&mut vars, "launch.json", &prefix)?;
    field(&mut vars, "refuse root", if v.plan.refuse_root { "1" } else { "0" })?;
    list_field(&mut vars, "agent argv", v.plan.argv.iter().map(String::as_str))?;
    list_field(&mut vars, "sandbox requirements", v.plan.requires.iter().map(String::as_str))?;
    list_field(&mut vars, "version argv", v.plan.version_argv.iter().map(String::as_str))?;
    // The files travel in their own variable (DLG_FILES), decoded straight into a file on
    // the brother; here only whether any of them names the task directory.
    let names_task_dir = files.iter().any(|(_, content)| content.contains("{task_dir}"));
    field(&mut vars, "files name the task dir", if names_task_dir { "1" } else { "0" })?;
    // Checked here, as the other fields are: a file the brother could not split or hold.
    let mut bundle = Vec::new();
    list_field(&mut bundle, "task files", files.iter().flat_map(|(name, content)| [*name, *content]))?;
    field(&mut vars, "task id", &v.task_id.to_string())?;
    field(&mut vars, "timeout", &timeout_secs.to_string())?;
    field(&mut vars, "turn limit", &turn_limit.to_string())?;
    field(&mut vars, "turn marker", marker)?;
    field(&mut vars, "grace", &grace_secs.to_string())?;
    field(&mut vars, "preamble", v.preamble)?;
    field(&mut vars, "environment", v.environment.as_str())?;
    list_field(&mut vars, "env files", v.env_files.iter().map(String::as_str))?;
    list_field(&mut vars, "sandbox probe", v.plan.sandbox_probe.iter().map(String::as_str))?;
    field(&mut vars, "sandbox requirements hint", &v.plan.requires_hint)?;
    field(&mut vars, "credential env", v.plan.credential_env.as_deref().unwrap_or(""))?;
    field(&mut vars, "spend limit", &spend_limit_field(v.plan.spend_limit.as_ref(), v.plan.session_id.as_deref()))?;
    field(&mut vars, "worktree of", v.worktree_of)?;
    let hashes: Vec<String> = files.iter().map(|(_, content)| sha256_hex(content.as_bytes())).collect();
    list_field(
        &mut vars,
        "helper files",
        files.iter().zip(&hashes).flat_map(|((name, _), hash)| [*name, hash.as_str()]),
    )?;

    let mut out = Vec::with_capacity(
        v.prompt.len() * 4 / 3
            + AGENT_ENV_SH.len()
            + GIT_TREE_SH.len()
            + TMUX_CONTROL_SH.len()
            + LAUNCH_SH.len()
            + vars.len() * 4 / 3
            + 96,
    );
    // Escaped (see `escape`): decoded on the brother by bash's printf, with no process.
    out.extend_from_slice(format!("DLG_VARS='{}'\n", escape::fields(&vars)).as_bytes());
    out.extend_from_slice(EMPTY_FILES_LINE.as_bytes());
    // The prompt goes last among the variables: it is by far the longest line.
    out.extend_from_slice(format!("DLG_PROMPT='{}'\n", escape::escape(v.prompt)).as_bytes());
    out.extend_from_slice(AGENT_ENV_SH.as_bytes());
    out.extend_from_slice(GIT_TREE_SH.as_bytes());
    out.extend_from_slice(TMUX_CONTROL_SH.as_bytes());
    out.extend_from_slice(LAUNCH_SH.as_bytes());
    Ok(out)
}

/// `DLG_FILES` as [`render`] writes it: no file sent.
const EMPTY_FILES_LINE: &str = "DLG_FILES=''\n";

/// `script` (from [`render`]) with the contents of its helper files (`files`, from
/// [`helper_files`] of the same plan) in `DLG_FILES`, for a brother that answered
/// [`code::HELPERS_MISSING`]: byte for byte the same launch otherwise (same nonce, same
/// variables). `None` if `script` is not one [`render`] made.
pub fn with_helpers(script: &[u8], files: &[(&str, &str)]) -> Option<Vec<u8>> {
    let vars_end = script.iter().position(|b| *b == b'\n')? + 1;
    if !script[vars_end..].starts_with(EMPTY_FILES_LINE.as_bytes()) {
        return None;
    }
    let mut bundle = Vec::new();
    for (_, content) in files {
        bundle.extend_from_slice(sha256_hex(content.as_bytes()).as_bytes());
        bundle.push(0x1f);
        bundle.extend_from_slice(content.as_bytes());
        bundle.push(0x1f);
    }
    let mut out = Vec::with_capacity(script.len() + bundle.len() * 4 / 3 + 16);
    out.extend_from_slice(&script[..vars_end]);
    out.extend_from_slice(format!("DLG_FILES='{}'\n", B64.encode(&bundle)).as_bytes());
    out.extend_from_slice(&script[vars_end + EMPTY_FILES_LINE.len()..]);
    Some(out)
}

/// Whether `script` (from [`render`] or [`with_helpers`]) carries helper files.
pub fn sends_helpers(script: &[u8]) -> bool {
    let vars_end = script.iter().position(|b| *b == b'\n').map_or(0, |p| p + 1);
    !script[vars_end..].starts_with(EMPTY_FILES_LINE.as_bytes())
}

/// The largest launch evidence line kept (the brother writes it).
const MAX_EVIDENCE: usize = 64 * 1024;

/// What the launch script printed on success.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub line: String,
    pub nonce: String,
    pub session: String,
    pub pane_pid: Option<i64>,
}

/// Parsed stdout/stderr of the launch script.
#[derive(Debug, Default)]
pub struct LaunchOutput {
    pub marker: Option<Marker>,
    pub evidence: Option<serde_json::Value>,
    /// `DELEGATE-ERROR <code> <message>` from stderr.
    pub error: Option<(i32, String)>,
    /// The helper hashes a `DELEGATE-NEED` line asked for (at most [`MAX_NEED`], each a
    /// SHA-256 in hex; anything else on the line is ignored).
    pub need: Vec<String>,
}

/// More helpers than any launch has: a longer `DELEGATE-NEED` line is cut here.
const MAX_NEED: usize = 64;

pub fn parse_output(stdout: &[u8], stderr: &[u8]) -> LaunchOutput {
    let mut out = LaunchOutput::default();
    for line in String::from_utf8_lossy(stdout).lines() {
        if let Some(json) = line.strip_prefix("DELEGATE-EVIDENCE ") {
            // launch.json is a few hundred bytes; anything far larger is not ours to keep.
            out.evidence = (json.len() <= MAX_EVIDENCE).then(|| serde_json::from_str(json).ok()).flatten();
        } else if let Some(rest) = line.strip_prefix("DELEGATE-NEED ") {
            out.need = rest
                .split(' ')
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
                .take(MAX_NEED)
                .map(String::from)
                .collect();
        } else if let Some(rest) = line.strip_prefix("DELEGATE-LAUNCHED ") {
            let mut f = rest.split(' ');
            if let (Some(nonce), Some(session)) = (f.next(), f.next()) {
                out.marker = Some(Marker {
                    line: line.to_string(),
                    nonce: nonce.to_string(),
                    session: session.to_string(),
                    pane_pid: f.next().and_then(|p| p.parse().ok()),
                });
            }
        }
    }
    for line in String::from_utf8_lossy(stderr).lines() {
        if let Some(rest) = line.strip_prefix("DELEGATE-ERROR ")
            && let Some((code, msg)) = rest.split_once(' ')
            && let Ok(code) = code.parse()
        {
            // The brother's words, bounded and on one line, before they become a reason.
            out.error = Some((code, crate::sanitize::clean_line(msg, 2000)));
        }
    }
    out
}

// The scripts' own tests run them with real bash (and tmux where they need it), one file per
// script or concern, under tests/.
#[cfg(test)]
#[path = "tests/launch.rs"]
mod tests;
#[cfg(test)]
#[path = "tests/env.rs"]
mod tests_env;
#[cfg(test)]
#[path = "tests/helpers.rs"]
mod tests_helpers;
#[cfg(test)]
#[path = "tests/inbox.rs"]
mod tests_inbox;
#[cfg(test)]
#[path = "tests/root.rs"]
mod tests_root;
#[cfg(test)]
#[path = "tests/scope.rs"]
mod tests_scope;
#[cfg(test)]
#[path = "tests/spend.rs"]
mod tests_spend;
#[cfg(test)]
#[path = "tests/stop.rs"]
mod tests_stop;
#[cfg(test)]
#[path = "tests/store.rs"]
mod tests_store;
#[cfg(test)]
#[path = "tests/sync.rs"]
mod tests_sync;
#[cfg(test)]
#[path = "tests/tmux_control.rs"]
mod tests_tmux_control;
