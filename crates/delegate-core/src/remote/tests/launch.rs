//! The launch script, run locally by bash (no SSH): the same bytes `bash -s` gets remotely.
//! Each test gets its own directory and its own tmux server (a private TMUX_TMPDIR). The
//! helpers here are shared with the runner's other test modules.

use super::*;
use crate::agents::{AgentRequest, plan};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(super) struct Scratch {
    pub(super) dir: PathBuf,
}

impl Scratch {
    pub(super) fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("dlg-rn-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("work")).unwrap();
        std::fs::create_dir_all(dir.join("tmux")).unwrap();
        Scratch { dir }
    }
    pub(super) fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    pub(super) fn work(&self) -> String {
        self.dir.join("work").to_string_lossy().into_owned()
    }
    pub(super) fn task_dir(&self, key: &str) -> PathBuf {
        self.root().join("tasks").join(key)
    }
    pub(super) fn run(&self, script: &[u8]) -> std::process::Output {
        self.run_with(script, &[])
    }
    /// The script on stdin of bash as a brother runs it, and extra environment variables.
    pub(super) fn run_with(&self, script: &[u8], env: &[(&str, &std::ffi::OsStr)]) -> std::process::Output {
        // By absolute path: a PATH in `env` would otherwise decide where bash is looked up.
        let bash = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join("bash"))
            .find(|p| p.is_file())
            .expect("bash on PATH");
        let mut child = Command::new(bash)
            .args(&crate::remote::REMOTE_ARGV[1..])
            .env("TMUX_TMPDIR", self.dir.join("tmux"))
            .env("HOME", &self.dir)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A truncated script may make bash stop reading early; a broken pipe is fine.
        let _ = child.stdin.take().unwrap().write_all(script);
        child.wait_with_output().unwrap()
    }
    /// tmux on this scratch's private server.
    pub(super) fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", "delegate"])
            .args(args)
            .env("TMUX_TMPDIR", self.dir.join("tmux"))
            .output()
            .unwrap()
    }
    /// Renders and runs the launch script as the lead does (helpers named by hash, and sent
    /// once more with them when the brother asks); panics unless it reports a launch.
    pub(super) fn launch(&self, v: &LaunchVars) -> PathBuf {
        let lean = render(v).unwrap();
        let mut out = self.run(&lean);
        if out.status.code() == Some(code::HELPERS_MISSING) {
            assert!(!parse_output(&out.stdout, &out.stderr).need.is_empty());
            out = self.run(&with_helpers(&lean, &helper_files(&v.plan.files)).unwrap());
        }
        assert!(out.status.success(), "launch failed: {}", String::from_utf8_lossy(&out.stderr));
        assert!(parse_output(&out.stdout, &out.stderr).marker.is_some());
        self.task_dir(v.task_key)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", "delegate", "kill-server"])
            .env("TMUX_TMPDIR", self.dir.join("tmux"))
            .stderr(Stdio::null())
            .status();
        // A runner outlives its pane by up to its grace period to record how the agent
        // ended: its last writes can race the removal, so retry until they are done.
        for _ in 0..50 {
            match std::fs::remove_dir_all(&self.dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => std::thread::sleep(Duration::from_millis(100)),
                _ => break,
            }
        }
    }
}

pub(super) fn sha(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// The launch script with every helper file in it, as the lead sends it to a brother that
/// asked for them: runs on a fresh root.
pub(super) fn render_sent(v: &LaunchVars) -> crate::error::Result<Vec<u8>> {
    Ok(with_helpers(&render(v)?, &helper_files(&v.plan.files)).expect("render's own script"))
}

/// A plan for the self-test agent.
pub(super) fn self_test_plan(max_turns: u32) -> AgentPlan {
    plan(&AgentRequest {
        agent: "self-test",
        model: None,
        sandbox: Sandbox::Read,
        max_turns,
        workdir: "/w",
        custom: None,
        agent_path: None,
        options: &Default::default(),
    })
    .unwrap()
}

/// A plan running `script` (bash, written into the task directory as `fake-agent`).
pub(super) fn fake_plan(script: &str) -> AgentPlan {
    let mut p = self_test_plan(1);
    p.kind = "fake".into();
    p.argv = vec!["bash".into(), "{task_dir}/fake-agent".into()];
    p.files = vec![("fake-agent".into(), script.into())];
    p.version_argv = vec![];
    p
}

/// Launch variables for a task `key` of scratch `s` (no timeout, no delegate turn limit,
/// a one-second grace).
pub(super) fn vars<'a>(
    s: &'a Scratch,
    key: &'a str,
    session: &'a str,
    plan: &'a AgentPlan,
    prompt: &'a [u8],
) -> LaunchVars<'a> {
    // Leaked: tests are short-lived, and this keeps LaunchVars' borrowed fields simple.
    let root: &'a str = Box::leak(s.root().to_string_lossy().into_owned().into_boxed_str());
    let work: &'a str = Box::leak(s.work().into_boxed_str());
    let sum: &'a str = Box::leak(sha(prompt).into_boxed_str());
    LaunchVars {
        task_id: 7,
        task_key: key,
        session,
        nonce: "0123456789abcdef",
        remote_root: root,
        workdir: work,
        worktree_of: "",
        sandbox: Sandbox::Read,
        plan,
        prompt,
        prompt_sha256: sum,
        preamble: "",
        environment: crate::hosts::inventory::AgentEnvironment::Plain,
        env_files: &[],
        timeout_secs: 0,
        turn_limit: 0,
        grace_secs: 1,
    }
}

/// Waits up to `secs` for a file to exist and returns its text.
pub(super) fn wait_secs(path: &Path, secs: u64) -> String {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            return s;
        }
        assert!(Instant::now() < end, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True while a process of group `pgid` exists that is not a zombie (PID 1 may not reap
/// orphans in a container, and a zombie holds nothing).
pub(super) fn group_alive(pgid: i32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { return false };
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else { return false };
        let f: Vec<&str> = rest.split(' ').collect();
        f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
    })
}

/// True while process `pid` exists and is not a zombie.
pub(super) fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, r)| !r.starts_with('Z')),
        Err(_) => false,
    }
}

fn script_for(s: &Scratch, agent: &str, sandbox: Sandbox, prompt: &[u8], session: &str) -> Vec<u8> {
    let p = plan(&AgentRequest {
        agent,
        model: None,
        sandbox,
        max_turns: 3,
        workdir: "/w",
        custom: None,
        agent_path: None,
        options: &Default::default(),
    })
    .unwrap();
    let root = s.root().to_string_lossy().into_owned();
    let work = s.dir.join("work").to_string_lossy().into_owned();
    render_sent(&LaunchVars {
        task_id: 7,
        task_key: "abc123-7",
        session,
        nonce: "0123456789abcdef",
        remote_root: &root,
        workdir: &work,
        worktree_of: "",
        sandbox,
        plan: &p,
        prompt,
        prompt_sha256: &sha(prompt),
        preamble: "",
        environment: crate::hosts::inventory::AgentEnvironment::Plain,
        env_files: &[],
        timeout_secs: 0,
        turn_limit: 0,
        grace_secs: 1,
    })
    .unwrap()
}

fn wait_for(path: &Path) -> String {
    for _ in 0..500 {
        if let Ok(s) = std::fs::read_to_string(path) {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{} never appeared", path.display());
}

#[test]
fn a_full_launch_starts_the_runner_in_tmux_and_records_evidence() {
    let s = Scratch::new("full");
    let prompt: Vec<u8> = (0..=255u8).chain(b"\n$(touch pwned) `id` #{session_name}\n".iter().copied()).collect();
    let out = s.run(&script_for(&s, "self-test", Sandbox::Read, &prompt, "dlg-abc123-7-1"));
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let parsed = parse_output(&out.stdout, &out.stderr);
    let m = parsed.marker.expect("marker");
    assert_eq!((m.nonce.as_str(), m.session.as_str()), ("0123456789abcdef", "dlg-abc123-7-1"));
    assert!(m.pane_pid.unwrap() > 1);
    let ev = parsed.evidence.expect("evidence");
    assert_eq!(ev["nonce"], "0123456789abcdef");
    assert!(ev["tmux_version"].as_str().unwrap().starts_with("tmux "), "{ev}");

    let dir = s.root().join("tasks/abc123-7");
    assert_eq!(std::fs::read(dir.join("prompt")).unwrap(), prompt);
    let exit = wait_for(&dir.join("exit"));
    assert!(exit.starts_with("0 "), "{exit}");
    // `<code> <utc>` and nothing else when the agent ended on its own.
    let words: Vec<&str> = exit.split_whitespace().collect();
    assert_eq!(words.len(), 2, "{exit}");
    assert!(words[1].starts_with("20") && words[1].ends_with('Z'), "{exit}");
    let state = std::fs::read_to_string(dir.join("state")).unwrap();
    let lines: Vec<&str> = state.lines().collect();
    assert!(lines[0].starts_with("started pid=") && lines[1].ends_with(" running"), "{state}");
    assert!(lines.last().unwrap().ends_with(" exited 0"), "{state}");
    let pgid: i32 = std::fs::read_to_string(dir.join("agent.pgid")).unwrap().trim().parse().unwrap();
    assert!(pgid > 1 && !group_alive(pgid));
    // The self-test agent reported through the helper: receipt, progress, done.
    let outbox = std::fs::read_to_string(dir.join("outbox.jsonl")).unwrap();
    let kinds: Vec<String> = outbox
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["receipt", "progress", "done"], "{outbox}");
    // The helpers are in place and executable; the runner knows the task id.
    let run_sh = std::fs::read_to_string(dir.join("run.sh")).unwrap();
    assert!(run_sh.contains("TASK_ID=7\n") && run_sh.contains("GRACE_SECS=1\n"), "{run_sh}");
    let stream = std::fs::read_to_string(dir.join("stream.jsonl")).unwrap();
    assert!(stream.contains(&format!("sha256 {}", sha(&prompt))), "{stream}");
    assert!(stream.contains("\"subtype\":\"success\""), "{stream}");
    assert!(!s.dir.join("work/pwned").exists() && !s.dir.join("pwned").exists());
    use std::os::unix::fs::PermissionsExt;
    for p in [s.root(), dir.clone(), dir.join("prompt"), dir.join("launch.json"), dir.join("run.sh")] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
    }

    // Retrying the same launch finds its own task directory and never starts a second agent.
    let again = s.run(&script_for(&s, "self-test", Sandbox::Read, &prompt, "dlg-abc123-7-1"));
    assert_eq!(again.status.code(), Some(code::ALREADY_LAUNCHED), "{}", String::from_utf8_lossy(&again.stderr));
}

#[test]
fn what_the_runner_itself_says_on_stderr_is_kept_in_the_task_directory() {
    use std::os::unix::fs::PermissionsExt;
    // A `tee` first on PATH that fails loudly: the runner's stream reader complains. Its
    // complaint, once lost with the pane, is in runner.err (0600).
    let s = Scratch::new("runner-err");
    let bin = s.dir.join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("tee"), "#!/bin/sh\necho 'tee: the pipe said no' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(bin.join("tee"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let plan = fake_plan(": >\"$DELEGATE_TASK_DIR/agent-ran\"\n");
    let v = vars(&s, "k-1", "dlg-k-1", &plan, b"x");
    let out = s.run_with(&render_sent(&v).unwrap(), &[("PATH", std::ffi::OsStr::new(&path))]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = s.task_dir("k-1");
    wait_secs(&dir.join("exit"), 10);
    let said = std::fs::read_to_string(dir.join("runner.err")).unwrap();
    assert!(said.contains("tee: the pipe said no"), "{said:?}");
    assert_eq!(std::fs::metadata(dir.join("runner.err")).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn a_script_cut_anywhere_runs_nothing() {
    let s = Scratch::new("cut");
    let script = script_for(&s, "self-test", Sandbox::Read, b"hello", "dlg-abc123-7-2");
    // Every line boundary and a stride through everything else; each cut must leave no trace.
    // The first two lines (DLG_VARS, and DLG_FILES: tens of KiB of base64 carrying the task
    // files) are each one unterminated quote wherever they are cut: a hundred cuts in each
    // say as much as a thousand.
    let mut cuts: Vec<usize> = script.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1).collect();
    let (first_line, second_line) = (cuts[0], cuts[1]);
    cuts.extend((0..first_line).step_by(first_line / 100 + 1));
    cuts.extend((first_line..second_line).step_by((second_line - first_line) / 100 + 1));
    cuts.extend((second_line..script.len()).step_by(61));
    // Every cut inside the last line, where `main` alone would be a complete command.
    let last_line = script[..script.len() - 1].iter().rposition(|b| *b == b'\n').unwrap() + 1;
    cuts.extend(last_line..script.len());
    cuts.retain(|&k| k < script.len() - 1);
    cuts.sort_unstable();
    cuts.dedup();
    for k in cuts {
        let out = s.run(&script[..k]);
        assert!(!s.root().exists(), "a script cut at byte {k} of {} created the remote root ({:?})", script.len(), out);
        assert!(!String::from_utf8_lossy(&out.stdout).contains("DELEGATE-LAUNCHED"), "cut at {k}");
    }
    // The whole script does run: the check above is not vacuous.
    assert!(s.run(&script).status.success());
    assert!(s.root().exists());
}

#[test]
fn preflight_failures_have_their_own_codes() {
    let s = Scratch::new("pre");
    let run = |script: Vec<u8>| {
        let out = s.run(&script);
        let err = parse_output(&out.stdout, &out.stderr).error;
        (out.status.code(), err.map(|e| e.1).unwrap_or_default())
    };
    // Missing agent: codex is not installed on this machine's PATH.
    let mut p = plan(&AgentRequest {
        agent: "codex",
        model: None,
        sandbox: Sandbox::Read,
        max_turns: 1,
        workdir: "/w",
        custom: None,
        agent_path: None,
        options: &Default::default(),
    })
    .unwrap();
    p.argv[0] = "definitely-not-an-agent-xyz".into();
    let root = s.root().to_string_lossy().into_owned();
    let work = s.dir.join("work").to_string_lossy().into_owned();
    let vars = |p: &AgentPlan, workdir: &str| {
        render_sent(&LaunchVars {
            task_id: 1,
            task_key: "k-1",
            session: "dlg-k-1-1",
            nonce: "n",
            remote_root: &root,
            workdir,
            worktree_of: "",
            sandbox: Sandbox::Read,
            plan: p,
            prompt: b"x",
            prompt_sha256: &sha(b"x"),
            preamble: "",
            environment: crate::hosts::inventory::AgentEnvironment::Plain,
            env_files: &[],
            timeout_secs: 0,
            turn_limit: 0,
            grace_secs: 1,
        })
        .unwrap()
    };
    let (c, m) = run(vars(&p, &work));
    assert_eq!(c, Some(code::AGENT_MISSING), "{m}");
    assert!(m.contains("definitely-not-an-agent-xyz"), "{m}");

    let selftest = plan(&AgentRequest {
        agent: "self-test",
        model: None,
        sandbox: Sandbox::Read,
        max_turns: 1,
        workdir: "/w",
        custom: None,
        agent_path: None,
        options: &Default::default(),
    })
    .unwrap();
    let (c, m) = run(vars(&selftest, "/nonexistent/dir"));
    assert_eq!(c, Some(code::WORKDIR_MISSING), "{m}");
    assert!(m.contains("/nonexistent/dir"), "{m}");

    let mut needs = selftest.clone();
    needs.requires = vec!["no-such-sandbox-tool".into()];
    let (c, m) = run(vars(&needs, &work));
    assert_eq!(c, Some(code::SANDBOX_REFUSED), "{m}");
    assert!(m.contains("no-such-sandbox-tool"), "{m}");

    // A prompt that cannot be written whole (here: a file size limit, as a full disk or a
    // quota would) is never left half in place, and nothing starts. A first launch fills
    // the helper store, so the prompt is the first file the limit meets.
    let sha_x = sha(b"x");
    let base = LaunchVars {
        task_id: 2,
        task_key: "k-0",
        session: "dlg-k-2-1",
        nonce: "n",
        remote_root: &root,
        workdir: &work,
        worktree_of: "",
        sandbox: Sandbox::Read,
        plan: &selftest,
        prompt: b"x",
        prompt_sha256: &sha_x,
        preamble: "",
        environment: crate::hosts::inventory::AgentEnvironment::Plain,
        env_files: &[],
        timeout_secs: 0,
        turn_limit: 0,
        grace_secs: 1,
    };
    let first = render_sent(&base).unwrap();
    assert!(s.run(&first).status.success());
    let big = vec![b'p'; 8192];
    let sha_big = sha(&big);
    let script = render(&LaunchVars { task_key: "k-2", prompt: &big, prompt_sha256: &sha_big, ..base }).unwrap();
    // SIGXFSZ ignored: the write fails with EFBIG instead of killing bash.
    let bash = "trap '' XFSZ; ulimit -f 4; exec bash -c 'eval \"$(</dev/stdin)\"'";
    let out = std::process::Command::new("bash")
        .args(["-c", bash])
        .env("TMUX_TMPDIR", s.dir.join("tmux"))
        .env("HOME", &s.dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&script)?;
            child.wait_with_output()
        })
        .unwrap();
    let err = parse_output(&out.stdout, &out.stderr).error.unwrap_or_default();
    assert_eq!(out.status.code(), Some(code::PROMPT_NOT_WRITTEN), "{err:?} {out:?}");
    assert!(err.1.contains("could not write the prompt"), "{err:?}");
    assert!(!s.root().join("tasks/k-2/prompt").exists());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("DELEGATE-LAUNCHED"));

    // Helpers that cannot be made executable (chmod runs while tmux starts the runner): the
    // launch fails with its own code and leaves no session running.
    let shims = s.dir.join("shims");
    std::fs::create_dir_all(&shims).unwrap();
    std::fs::write(shims.join("chmod"), "#!/bin/sh\nexit 1\n").unwrap();
    let exe = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755);
    std::fs::set_permissions(shims.join("chmod"), exe).unwrap();
    let path = std::env::join_paths(
        std::iter::once(shims.clone()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let script = render(&LaunchVars { task_key: "k-3", session: "dlg-k-3-1", ..base }).unwrap();
    let out = s.run_with(&script, &[("PATH", path.as_os_str())]);
    let err = parse_output(&out.stdout, &out.stderr).error.unwrap_or_default();
    assert_eq!(out.status.code(), Some(code::TASK_DIR_NOT_WRITABLE), "{err:?} {out:?}");
    assert!(err.1.contains("executable") && err.1.contains("stopped"), "{err:?}");
    assert!(!s.tmux(&["has-session", "-t", "=dlg-k-3-1"]).status.success(), "the session was stopped");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("DELEGATE-LAUNCHED"));
}

#[test]
fn claude_settings_get_the_task_dir_and_their_hook_commands_work() {
    let s = Scratch::new("settings");
    // Claude's own files on a stand-in agent (claude itself is not installed here).
    let claude = plan(&AgentRequest {
        agent: "claude",
        model: None,
        sandbox: Sandbox::Write,
        max_turns: 3,
        workdir: "/w",
        custom: None,
        agent_path: None,
        options: &Default::default(),
    })
    .unwrap();
    let mut p = fake_plan("exit 0\n");
    p.files.extend(claude.files.clone());
    let dir = s.launch(&vars(&s, "k-1", "dlg-k-1", &p, b"x"));
    let text = std::fs::read_to_string(dir.join("claude-settings.json")).unwrap();
    let settings: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(settings["sandbox"]["failIfUnavailable"], true);
    use std::os::unix::fs::PermissionsExt;
    for helper in ["report", "inbox", "hook"] {
        assert_eq!(std::fs::metadata(dir.join(helper)).unwrap().permissions().mode() & 0o777, 0o700, "{helper}");
    }
    // Each hook command, run through a shell the way Claude Code runs it, logs its event.
    for event in ["SessionStart", "PostToolUse", "Stop"] {
        let entry = &settings["hooks"][event][0]["hooks"][0];
        let command = entry["command"].as_str().unwrap();
        assert_eq!(command, format!("bash '{}/hook' {event}", dir.display()));
        let mut child = Command::new("sh").args(["-c", command]).stdin(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(br#"{"tool_name":"Edit","tool_input":{"file_path":"/w/a.rs"}}"#).unwrap();
        assert!(child.wait().unwrap().success());
    }
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let kinds: Vec<String> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["SessionStart", "PostToolUse", "Stop"], "{events}");
    assert!(events.contains(r#""summary":"/w/a.rs""#), "{events}");
}

#[test]
fn a_task_dir_with_a_quote_is_refused_only_where_a_file_must_carry_it() {
    let s = Scratch::new("quote");
    let root = s.dir.join("it's \"here\"").to_string_lossy().into_owned();
    let claude = plan(&AgentRequest {
        agent: "claude",
        model: None,
        sandbox: Sandbox::Read,
        max_turns: 3,
        workdir: "/w",
        custom: None,
        agent_path: None,
        options: &Default::default(),
    })
    .unwrap();
    let mut p = fake_plan("exit 0\n");
    p.files.extend(claude.files.clone());
    let mut v = vars(&s, "k-1", "dlg-k-1", &p, b"x");
    v.remote_root = &root;
    let out = s.run(&render_sent(&v).unwrap());
    let err = parse_output(&out.stdout, &out.stderr).error.expect("a refusal");
    assert_eq!(err.0, code::TASK_DIR_NOT_WRITABLE, "{err:?}");
    assert!(err.1.contains("quote"), "{err:?}");
    assert!(!Path::new(&root).join("tasks/k-1").exists(), "refused after creating the task directory");
    // Without such a file the same root works.
    let plain = fake_plan("exit 0\n");
    let mut v = vars(&s, "k-2", "dlg-k-2", &plain, b"x");
    v.remote_root = &root;
    s.launch(&v);
    assert!(wait_secs(&Path::new(&root).join("tasks/k-2/exit"), 5).starts_with("0 "));
}

#[test]
fn brother_errors_are_bounded_and_lose_their_escapes() {
    let stderr = format!("DELEGATE-ERROR 21 \u{1b}]0;owned\u{7}{}\n", "x".repeat(10_000));
    let (code, message) = parse_output(b"", stderr.as_bytes()).error.unwrap();
    assert_eq!(code, 21);
    assert_eq!(message, "x".repeat(2000));
    // An evidence line far over launch.json's size is not kept.
    let huge = format!("DELEGATE-EVIDENCE {{\"pad\":\"{}\"}}\n", "y".repeat(100_000));
    assert!(parse_output(huge.as_bytes(), b"").evidence.is_none());
    assert!(parse_output(b"DELEGATE-EVIDENCE {\"task\":7}\n", b"").evidence.is_some());
}

/// The launch script with field `i` of its variables set to `value` (as a damaged or buggy
/// request would carry it).
fn with_field(script: &[u8], i: usize, value: &str) -> Vec<u8> {
    let text = String::from_utf8(script.to_vec()).unwrap();
    let (line_start, rest) = text.split_once("DLG_VARS='").expect("a DLG_VARS line");
    let (vars, tail) = rest.split_once('\'').unwrap();
    let mut fields: Vec<String> = vars.split('|').map(String::from).collect();
    fields[i] = crate::remote::escape::escape(value.as_bytes());
    format!("{line_start}DLG_VARS='{}'{tail}", fields.join("|")).into_bytes()
}

/// Variables of the wrong shape (a lead's bug, bytes changed on the way) are refused with
/// exit 23 before anything is created: a number, the spend limit, a helper's hash. The
/// shapes are checked with globs (a regular expression costs bash ~0.1 ms to compile at
/// each use): these cases pin what the expressions they replaced accepted and refused.
#[test]
fn launch_variables_of_the_wrong_shape_are_refused_before_anything_starts() {
    let s = Scratch::new("vars-shape");
    let plan = fake_plan("exit 0\n");
    let v = vars(&s, "k-1", "dlg-k-1", &plan, b"hi");
    let lean = render(&v).unwrap();
    let full = with_helpers(&lean, &helper_files(&plan.files)).unwrap();
    let sixty_five = "a".repeat(65);
    let bad_hash = format!("run-body.sh\u{1f}{}\u{1f}", "g".repeat(64));
    let short_hash = format!("run-body.sh\u{1f}{}\u{1f}", "a".repeat(63));
    let spend = |tail: &str| format!("1 2 3 4{tail}");
    let cases: Vec<(usize, String, &str)> = vec![
        (15, "12a".into(), "number field"),
        (15, String::new(), "number field"),
        (16, "1234567890123456789".into(), "number field"),
        (19, "-1".into(), "number field"),
        (26, "1 2 3".into(), "spend limit"),
        (26, "1  2 3 4".into(), "spend limit"),
        (26, " 1 2 3 4".into(), "spend limit"),
        (26, spend(" "), "spend limit"),
        (26, spend(" a_b"), "spend limit"),
        (26, spend(" 5 6"), "spend limit"),
        (26, spend(&format!(" {sixty_five}")), "spend limit"),
        (26, "1 2 3 x".into(), "spend limit"),
        (28, bad_hash, "helper hash"),
        (28, short_hash, "helper hash"),
    ];
    for (i, value, what) in cases {
        let out = s.run(&with_field(&full, i, &value));
        let (code, message) = parse_output(&out.stdout, &out.stderr).error.unwrap_or_else(|| {
            panic!("field {i} = {value:?} was not refused: {}", String::from_utf8_lossy(&out.stderr))
        });
        assert_eq!(code, code::BASE_TOOLS_MISSING, "{message}");
        assert!(message.contains("damaged") && message.contains(what), "field {i} = {value:?}: {message}");
        assert!(!s.task_dir("k-1").exists(), "field {i} = {value:?}: a task directory was made");
    }
    // The shapes a lead sends do launch: four counts, and four with a thread id.
    for (key, limit) in [("k-2", "100 1 2 3"), ("k-3", "100 1 2 3 0199-thread-A")] {
        let session = format!("dlg-{key}");
        let v = vars(&s, key, &session, &plan, b"hi");
        let out =
            s.run(&with_field(&with_helpers(&render(&v).unwrap(), &helper_files(&plan.files)).unwrap(), 26, limit));
        assert!(
            parse_output(&out.stdout, &out.stderr).marker.is_some(),
            "spend limit {limit:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
