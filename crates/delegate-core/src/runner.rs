//! The launch script: `runner/launch.sh`, a real bash file, sent on stdin to `bash -s`.
//!
//! Rust adds only `DLG_NAME='<base64>'` lines in front of the file's body; it never splices
//! text into the body. Base64 keeps every byte of a prompt, path or argv away from the
//! remote shell's parser, and the body's `main() {...}; main "$@"` shape means a script cut
//! off in transit runs nothing. `runner/run.sh` is the body of what tmux runs; it travels
//! as one of the files the launch script writes into the task directory.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::agent::{AgentPlan, PromptDelivery};
use crate::task::Sandbox;

pub const LAUNCH_SH: &str = include_str!("runner/launch.sh");
pub const RUN_SH: &str = include_str!("runner/run.sh");

/// Exit codes of the launch script (see the header of `runner/launch.sh`).
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
}

/// The variable parts of one launch.
pub struct LaunchVars<'a> {
    pub task_id: i64,
    pub task_key: &'a str,
    pub session: &'a str,
    pub nonce: &'a str,
    pub remote_root: &'a str,
    pub workdir: &'a str,
    pub sandbox: Sandbox,
    pub plan: &'a AgentPlan,
    pub prompt: &'a [u8],
    pub prompt_sha256: &'a str,
}

fn nul_joined<'a>(items: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let mut out = Vec::new();
    for i in items {
        out.extend_from_slice(i.as_bytes());
        out.push(0);
    }
    out
}

/// The whole script as sent on stdin.
pub fn render(v: &LaunchVars) -> Vec<u8> {
    let mut files: Vec<&str> = vec!["run-body.sh", RUN_SH];
    for (name, content) in &v.plan.files {
        files.push(name);
        files.push(content);
    }
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
        "prompt_bytes": v.prompt.len(),
        "sandbox": v.sandbox,
        "effective_sandbox": v.plan.effective_sandbox,
        "enforcement": v.plan.enforcement,
        "turn_limit": v.plan.turn_limit,
        "agent_session_id": v.plan.session_id,
    });
    let mut prefix = launch.to_string();
    prefix.pop(); // the closing brace; launch.sh adds the remote fields and closes it

    let delivery = match v.plan.delivery {
        PromptDelivery::Stdin => "stdin",
        PromptDelivery::File => "file",
    };
    let vars: [(&str, &[u8]); 15] = [
        ("DLG_TASK_KEY", v.task_key.as_bytes()),
        ("DLG_SESSION", v.session.as_bytes()),
        ("DLG_NONCE", v.nonce.as_bytes()),
        ("DLG_ROOT", v.remote_root.as_bytes()),
        ("DLG_WORKDIR", v.workdir.as_bytes()),
        ("DLG_AGENT_KIND", v.plan.kind.as_bytes()),
        ("DLG_PROMPT_DELIVERY", delivery.as_bytes()),
        ("DLG_SANDBOX", v.sandbox.as_str().as_bytes()),
        ("DLG_PROMPT_SHA256", v.prompt_sha256.as_bytes()),
        ("DLG_LAUNCH_JSON", prefix.as_bytes()),
        ("DLG_AGENT_ARGV", &nul_joined(v.plan.argv.iter().map(String::as_str))),
        ("DLG_REQUIRES", &nul_joined(v.plan.requires.iter().map(String::as_str))),
        ("DLG_REFUSE_ROOT", if v.plan.refuse_root { b"1" } else { b"0" }),
        ("DLG_VERSION_ARGV", &nul_joined(v.plan.version_argv.iter().map(String::as_str))),
        ("DLG_FILES", &nul_joined(files)),
    ];
    let mut out = Vec::with_capacity(v.prompt.len() * 4 / 3 + LAUNCH_SH.len() + 4096);
    for (name, value) in vars {
        out.extend_from_slice(format!("{name}='{}'\n", B64.encode(value)).as_bytes());
    }
    // The prompt goes last among the variables: it is by far the longest line.
    out.extend_from_slice(format!("DLG_PROMPT='{}'\n", B64.encode(v.prompt)).as_bytes());
    out.extend_from_slice(LAUNCH_SH.as_bytes());
    out
}

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
}

pub fn parse_output(stdout: &[u8], stderr: &[u8]) -> LaunchOutput {
    let mut out = LaunchOutput::default();
    for line in String::from_utf8_lossy(stdout).lines() {
        if let Some(b64) = line.strip_prefix("DELEGATE-EVIDENCE ") {
            out.evidence = B64
                .decode(b64.trim())
                .ok()
                .and_then(|j| serde_json::from_slice(&j).ok());
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
            out.error = Some((code, msg.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests;
