//! Our generated argv against the real `claude` and `codex` parsers (offline, unauthenticated).
//!
//! The CLIs come from `DELEGATE_TEST_AGENTS_BIN`, which scripts/test.sh sets after installing
//! the pinned versions (scripts/install-agents.sh). Without it the tests say so and pass,
//! except under CI, where the real CLIs are required.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use delegate_core::agents::{AgentRequest, plan};
use delegate_core::task::Sandbox;

fn agents_dir() -> Option<PathBuf> {
    delegate_testkit::brothers::real_agents_bin()
}

struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `argv` (placeholders filled) with `stdin`, a fresh HOME and a git repo as cwd; returns
/// the first `max_lines` stdout lines, killing the process after them or after `limit`.
fn run_real(
    bin: &std::path::Path,
    argv: &[String],
    stdin: &[u8],
    max_lines: usize,
    limit: Duration,
) -> (Vec<String>, String) {
    run_real_with(bin, argv, &[], stdin, max_lines, limit).0
}

/// [`run_real`] with `files` written into the task directory first (`{task_dir}` filled in,
/// as the launch script does); also returns the task directory's `events.jsonl`.
fn run_real_with(
    bin: &std::path::Path,
    argv: &[String],
    files: &[(String, String)],
    stdin: &[u8],
    max_lines: usize,
    limit: Duration,
) -> ((Vec<String>, String), String) {
    let dir = Scratch(std::env::temp_dir().join(format!("dlg-real-{}-{}", std::process::id(), argv[0])));
    let repo = dir.0.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    Command::new("git").args(["init", "-q"]).current_dir(&repo).status().unwrap();
    let task_dir = dir.0.join("task");
    std::fs::create_dir_all(&task_dir).unwrap();
    std::fs::write(
        task_dir.join("claude-settings.json"),
        r#"{"sandbox":{"enabled":true,"failIfUnavailable":true,"allowUnsandboxedCommands":false,"autoAllowBashIfSandboxed":true}}"#,
    )
    .unwrap();
    for (name, content) in files {
        std::fs::write(task_dir.join(name), content.replace("{task_dir}", task_dir.to_str().unwrap())).unwrap();
    }
    let args: Vec<String> = argv[1..]
        .iter()
        .map(|a| {
            a.replace("{task_dir}", task_dir.to_str().unwrap())
                .replace("{workdir}", repo.to_str().unwrap())
                .replace("/w", repo.to_str().unwrap())
        })
        .collect();
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display());
    let mut child = Command::new(bin.join(&argv[0]))
        .args(&args)
        .env_clear()
        .env("HOME", &dir.0)
        .env("PATH", path)
        .current_dir(&repo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).take(max_lines).collect::<Vec<_>>()
    });
    let started = Instant::now();
    while !reader.is_finished() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let lines = reader.join().unwrap();
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    let events = std::fs::read_to_string(task_dir.join("events.jsonl")).unwrap_or_default();
    ((lines, err), events)
}

fn req(agent: &str, sandbox: Sandbox) -> AgentRequest<'_> {
    AgentRequest {
        agent,
        model: Some("sonnet"),
        sandbox,
        max_turns: 3,
        workdir: "/w",
        custom: None,
        agent_path: None,
        options: &NO_OPTIONS,
    }
}

static NO_OPTIONS: delegate_core::agents::AgentOptions = delegate_core::agents::AgentOptions {
    reasoning_effort: None,
    max_budget_usd: None,
    extra_args: vec![],
    credential_file: None,
    credential_env: None,
    usd_per_mtok: None,
};

#[test]
fn claude_accepts_our_argv_and_reports_the_level_we_asked_for() {
    let Some(bin) = agents_dir() else { return };
    for (sandbox, mode) in [(Sandbox::Read, "dontAsk"), (Sandbox::Write, "acceptEdits")] {
        let p = plan(&req("claude", sandbox)).unwrap();
        let (lines, err) = run_real(&bin, &p.argv, b"say hi", 3, Duration::from_secs(60));
        let init: serde_json::Value =
            serde_json::from_str(lines.first().unwrap_or_else(|| panic!("no stream: {err}"))).unwrap();
        assert_eq!(init["subtype"], "init", "{lines:?} {err}");
        assert_eq!(init["permissionMode"], mode, "{init}");
        assert_eq!(init["session_id"], p.session_id.as_deref().unwrap());
        if sandbox == Sandbox::Read {
            assert_eq!(init["tools"], serde_json::json!(["Glob", "Grep", "Read"]), "{init}");
        }
    }
}

#[test]
fn codex_accepts_our_argv_for_every_level() {
    let Some(bin) = agents_dir() else { return };
    for sandbox in [Sandbox::Read, Sandbox::Write, Sandbox::Full] {
        let p = plan(&req("codex", sandbox)).unwrap();
        let (lines, err) = run_real(&bin, &p.argv, b"say hi", 1, Duration::from_secs(30));
        let first: serde_json::Value =
            serde_json::from_str(lines.first().unwrap_or_else(|| panic!("no stream for {sandbox}: {err}"))).unwrap();
        assert_eq!(first["type"], "thread.started", "{lines:?} {err}");
    }
}

#[test]
fn claude_takes_our_settings_with_the_write_scope_guard_and_runs_their_hooks() {
    let Some(bin) = agents_dir() else { return };
    let mut p = plan(&req("claude", Sandbox::Write)).unwrap();
    delegate_core::ops::write_scope::apply(&mut p, Sandbox::Write, &["/w/src".into()]);
    let mut files = p.files.clone();
    files.push(("hook".into(), delegate_core::agents::CLAUDE_HOOK.into()));
    let ((lines, err), events) = run_real_with(&bin, &p.argv, &files, b"say hi", 8, Duration::from_secs(60));
    // With hooks configured, Claude reports each hook (`hook_started`, `hook_response`)
    // before its init line.
    let init: serde_json::Value = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["subtype"] == "init")
        .unwrap_or_else(|| panic!("no init line: {lines:?} {err}"));
    assert_eq!(init["permissionMode"], "acceptEdits", "{init}");
    // The settings file was read, not silently dropped: its SessionStart hook ran.
    assert!(events.contains(r#""event":"SessionStart""#), "no hook ran: {events:?} {err}");
}
