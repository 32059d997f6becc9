//! The launch script, run locally by bash (no SSH): the same bytes `bash -s` gets remotely.

use super::*;
use crate::agent::{AgentRequest, plan};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("dlg-rn-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("work")).unwrap();
        std::fs::create_dir_all(dir.join("tmux")).unwrap();
        Scratch { dir }
    }
    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    fn run(&self, script: &[u8]) -> std::process::Output {
        let mut child = Command::new("bash")
            .arg("-s")
            .env("TMUX_TMPDIR", self.dir.join("tmux"))
            .env("HOME", &self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A truncated script may make bash stop reading early; a broken pipe is fine.
        let _ = child.stdin.take().unwrap().write_all(script);
        child.wait_with_output().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", "delegate", "kill-server"])
            .env("TMUX_TMPDIR", self.dir.join("tmux"))
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn script_for(s: &Scratch, agent: &str, sandbox: Sandbox, prompt: &[u8], session: &str) -> Vec<u8> {
    let p = plan(&AgentRequest { agent, model: None, sandbox, max_turns: 3, workdir: "/w", custom: None }).unwrap();
    let root = s.root().to_string_lossy().into_owned();
    let work = s.dir.join("work").to_string_lossy().into_owned();
    render(&LaunchVars {
        task_id: 7,
        task_key: "abc123-7",
        session,
        nonce: "0123456789abcdef",
        remote_root: &root,
        workdir: &work,
        sandbox,
        plan: &p,
        prompt,
        prompt_sha256: &sha(prompt),
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
fn a_script_cut_anywhere_runs_nothing() {
    let s = Scratch::new("cut");
    let script = script_for(&s, "self-test", Sandbox::Read, b"hello", "dlg-abc123-7-2");
    // Every line boundary and a stride through everything else; each cut must leave no trace.
    let mut cuts: Vec<usize> = script.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1).collect();
    cuts.extend((0..script.len()).step_by(37));
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
    })
    .unwrap();
    p.argv[0] = "definitely-not-an-agent-xyz".into();
    let root = s.root().to_string_lossy().into_owned();
    let work = s.dir.join("work").to_string_lossy().into_owned();
    let vars = |p: &AgentPlan, workdir: &str| {
        render(&LaunchVars {
            task_id: 1,
            task_key: "k-1",
            session: "dlg-k-1-1",
            nonce: "n",
            remote_root: &root,
            workdir,
            sandbox: Sandbox::Read,
            plan: p,
            prompt: b"x",
            prompt_sha256: &sha(b"x"),
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

    // A prompt whose hash does not match is never put in place.
    let bad = render(&LaunchVars {
        task_id: 2,
        task_key: "k-2",
        session: "dlg-k-2-1",
        nonce: "n",
        remote_root: &root,
        workdir: &work,
        sandbox: Sandbox::Read,
        plan: &selftest,
        prompt: b"x",
        prompt_sha256: &sha(b"y"),
    })
    .unwrap();
    let (c, m) = run(bad);
    assert_eq!(c, Some(code::PROMPT_NOT_WRITTEN), "{m}");
    assert!(!s.root().join("tasks/k-2/prompt").exists() && !s.root().join("tasks/k-2/prompt.tmp").exists());
}
