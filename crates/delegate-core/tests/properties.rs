//! Property tests of what delegate promises about bytes and names it does not control:
//! prompts reach the brother byte for byte, names accept exactly their documented alphabet,
//! inbox lines survive the say protocol, and subjects never carry control characters.
//!
//! The prompt property runs the real launch script through a local bash, as `bash -s` runs
//! it on a brother, with a stub `tmux` that refuses to start a session: the script has then
//! written the prompt into the task directory and checked its SHA-256, and stops (exit 27)
//! before anything would run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use delegate_core::Sandbox;
use delegate_core::agents::{AgentRequest, plan};
use delegate_core::names::{AgentName, BrotherName, HostName, SessionName};
use delegate_core::ops::launch::{clean_subject, sha256_hex, subject_from, wrap_prompt};
use delegate_core::remote::protocol::{MAX_SAY_LINE, render_say, say_line};
use delegate_core::remote::{LaunchVars, code, helper_files, render, with_helpers};
use proptest::prelude::*;
use proptest::test_runner::Config;

fn config(cases: u32) -> Config {
    // No proptest-regressions files in the tree: a failure prints its minimal input.
    Config { cases, failure_persistence: None, ..Config::default() }
}

// ---- prompts -----------------------------------------------------------------------------

/// A scratch root, a work directory and a `tmux` stub that reports a version and refuses
/// every session. Removed on drop.
struct Scratch {
    dir: PathBuf,
    path: String,
}

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("dlg-prop-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("work")).unwrap();
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let stub = dir.join("bin/tmux");
        std::fs::write(
            &stub,
            "#!/bin/sh\nif [ \"$1\" = -V ]; then echo 'tmux 3.4'; exit 0; fi\necho 'refused by the test stub' >&2\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:{}", dir.join("bin").display(), std::env::var("PATH").unwrap_or_default());
        Scratch { dir, path }
    }

    fn root(&self) -> String {
        self.dir.join("root").to_string_lossy().into_owned()
    }

    /// The script on stdin of bash as a brother runs it; (exit code, stderr).
    fn run(&self, script: &[u8]) -> (Option<i32>, String) {
        let mut child = Command::new("bash")
            .args(&delegate_core::remote::REMOTE_ARGV[1..])
            .env("PATH", &self.path)
            .env("HOME", &self.dir)
            .env("TMUX_TMPDIR", &self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash");
        let _ = child.stdin.take().unwrap().write_all(script);
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Renders the launch script for `prompt` and runs it; returns the bytes the brother kept as
/// the task's prompt file.
fn prompt_on_brother(s: &Scratch, key: &str, prompt: &[u8]) -> Vec<u8> {
    let work = s.dir.join("work").to_string_lossy().into_owned();
    let p = plan(&AgentRequest {
        agent: "self-test",
        model: None,
        sandbox: Sandbox::Read,
        max_turns: 3,
        workdir: &work,
        custom: None,
        agent_path: None,
        options: &Default::default(),
    })
    .unwrap();
    let root = s.root();
    let sum = sha256_hex(prompt);
    let script = render(&LaunchVars {
        task_id: 7,
        task_key: key,
        session: "dlg-abc123-7-1",
        nonce: "0123456789abcdef",
        remote_root: &root,
        workdir: &work,
        worktree_of: "",
        sandbox: Sandbox::Read,
        plan: &p,
        prompt,
        prompt_sha256: &sum,
        preamble: "[pre {task_dir}]\n",
        environment: delegate_core::hosts::inventory::AgentEnvironment::Plain,
        env_files: &[],
        timeout_secs: 0,
        turn_limit: 0,
        grace_secs: 1,
    })
    .unwrap();
    // With the helper files, as sent to a brother whose store is still empty.
    let script = with_helpers(&script, &helper_files(&p.files)).unwrap();
    let (status, stderr) = s.run(&script);
    // 27: the prompt was written and its hash checked, then the stub tmux refused.
    assert_eq!(status, Some(code::TMUX_REFUSED), "stderr: {stderr}");
    std::fs::read(Path::new(&root).join("tasks").join(key).join("prompt")).expect("the prompt file")
}

fn prompt_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Arbitrary bytes, up to 64 KiB.
        proptest::collection::vec(any::<u8>(), 0..=64 * 1024),
        // Short ones, where shell-significant bytes are dense.
        proptest::collection::vec(
            prop_oneof![
                Just(b'\''),
                Just(b'"'),
                Just(b'\\'),
                Just(b'$'),
                Just(b'`'),
                Just(b'\n'),
                Just(0u8),
                Just(b'%'),
                Just(0x1f),
                any::<u8>()
            ],
            0..64
        ),
    ]
}

#[test]
fn prompts_reach_the_brother_byte_for_byte() {
    let s = Scratch::new();
    let n = AtomicU64::new(0);
    proptest!(config(32), |(prompt in prompt_bytes())| {
        // A fresh task directory per case: the script never reuses one.
        let key = format!("abc123-{}", n.fetch_add(1, Ordering::Relaxed));
        let got = prompt_on_brother(&s, &key, &prompt);
        // The preamble comes first, with the task directory filled in; then the prompt as sent.
        let head = format!("[pre {}/tasks/{key}]\n", s.root()).into_bytes();
        prop_assert!(got.starts_with(&head), "no preamble: {:?}", String::from_utf8_lossy(&got[..got.len().min(80)]));
        let got = got[head.len()..].to_vec();
        prop_assert!(got == prompt, "{} bytes sent, {} kept, first difference at {:?}",
            prompt.len(), got.len(), got.iter().zip(&prompt).position(|(a, b)| a != b));
    });
}

#[test]
fn the_wrapped_prompt_ends_with_the_prompt_itself() {
    proptest!(config(256), |(task in any::<i64>(), brother in "[A-Za-z0-9_-]{1,63}", prompt in proptest::collection::vec(any::<u8>(), 0..4096))| {
        let wrapped = wrap_prompt(task, &brother, true, "/home/u/.delegate/tasks/k", &prompt);
        prop_assert!(wrapped.ends_with(&prompt));
        prop_assert!(wrapped.len() > prompt.len());
        let preamble = &wrapped[..wrapped.len() - prompt.len()];
        prop_assert!(preamble.ends_with(b"\n\n"), "the preamble ends in a blank line");
        let task_line = format!("task {task} for brother {brother},");
        prop_assert!(String::from_utf8_lossy(preamble).contains(&task_line));
        // The helpers are named by absolute path, never by a variable Claude cannot check.
        prop_assert!(String::from_utf8_lossy(preamble).contains("'/home/u/.delegate/tasks/k/report' receipt"));
        prop_assert!(!String::from_utf8_lossy(preamble).contains('$'));
    });
}

// ---- names -------------------------------------------------------------------------------

/// `^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`, the documented inventory name.
fn is_inventory_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

/// `^[a-z0-9][a-z0-9-]{0,62}$`, the documented session name.
fn is_session_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Strings near the alphabet's edges: valid names, names with one odd character, long ones,
/// and anything at all.
fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{0,70}",
        "[a-z0-9-]{0,70}",
        "[A-Za-z0-9][A-Za-z0-9_-]{55,66}",
        "[A-Za-z0-9_-]{0,10}[ .,:#/\\\\$'\"\t\n\u{0}é€😀A-Z_-][A-Za-z0-9_-]{0,10}",
        any::<String>(),
    ]
}

#[test]
fn inventory_names_accept_exactly_the_documented_alphabet() {
    proptest!(config(2048), |(s in name_like())| {
        let expected = is_inventory_name(&s);
        prop_assert_eq!(BrotherName::new(&s).is_ok(), expected, "brother {:?}", s);
        prop_assert_eq!(HostName::new(&s).is_ok(), expected, "host {:?}", s);
        prop_assert_eq!(AgentName::new(&s).is_ok(), expected, "agent {:?}", s);
        if let Ok(n) = BrotherName::new(&s) {
            prop_assert_eq!(n.as_str(), s.as_str());
            prop_assert_eq!(n.to_string(), s.clone());
        }
    });
}

#[test]
fn session_names_accept_exactly_the_documented_alphabet() {
    proptest!(config(2048), |(s in name_like())| {
        let parsed = SessionName::parse(&s);
        prop_assert_eq!(parsed.is_ok(), is_session_name(&s), "{:?}", s);
        if let Ok(n) = parsed {
            prop_assert_eq!(n.as_str(), s.as_str());
            prop_assert_eq!(n.exact_target(), format!("={s}"));
        }
    });
}

#[test]
fn sessions_for_runs_are_always_tmux_safe() {
    // Real mailbox ids are 6 hex digits, task and run numbers positive: always a name.
    proptest!(config(2048), |(mailbox in "[0-9a-f]{6}", task in 1..=i64::MAX, run in 1..=i64::MAX)| {
        let n = SessionName::for_run(&mailbox, task, run).expect("a session name");
        prop_assert!(is_session_name(n.as_str()), "{}", n);
        prop_assert_eq!(n.as_str(), format!("dlg-{mailbox}-{task}-{run}"));
    });
    // Anything else: refused, or still a safe name.
    proptest!(config(2048), |(mailbox in name_like(), task in any::<i64>(), run in any::<i64>())| {
        if let Ok(n) = SessionName::for_run(&mailbox, task, run) {
            prop_assert!(is_session_name(n.as_str()), "{}", n);
        }
    });
}

// ---- the say protocol --------------------------------------------------------------------

/// The fields of `DLG_VARS` in a rendered script.
fn script_fields(script: &[u8]) -> Vec<Vec<u8>> {
    let first = &script[..script.iter().position(|b| *b == b'\n').unwrap()];
    let b64 = first.strip_prefix(b"DLG_VARS='").and_then(|r| r.strip_suffix(b"'")).unwrap();
    let vars = B64.decode(b64).unwrap();
    vars.split(|b| *b == 0).map(<[u8]>::to_vec).collect()
}

#[test]
fn inbox_lines_round_trip_through_the_say_script() {
    let at = "[0-9TZ:.-]{1,64}";
    proptest!(config(512), |(id in 1..=i64::MAX, at in at, author in ".{0,40}", text in any::<String>())| {
        let line = say_line(id, &at, &author, &text);
        prop_assert!(!line.contains('\n') && !line.contains('\r'), "{}", line);
        let script = render_say("~/.delegate", "abc123-7-1", id, &line).expect("say_line's shape is accepted");
        let fields = script_fields(&script);
        prop_assert_eq!(&fields[..4], &[b"~/.delegate".to_vec(), b"abc123-7-1".to_vec(), id.to_string().into_bytes(), line.clone().into_bytes()][..]);
        // What the brother reads back is what was said.
        let v: serde_json::Value = serde_json::from_slice(&fields[3]).unwrap();
        prop_assert_eq!(v["id"].as_i64(), Some(id));
        prop_assert_eq!(v["at"].as_str(), Some(at.as_str()));
        prop_assert_eq!(v["author"].as_str(), Some(author.as_str()));
        prop_assert_eq!(v["text"].as_str(), Some(text.as_str()));
        // The same object with its keys sorted (as serde_json::json! writes it) is rebuilt
        // into the exact shape.
        let sorted = serde_json::json!({"id": id, "at": at, "author": author, "text": text}).to_string();
        let script = render_say("~/.delegate", "abc123-7-1", id, &sorted).unwrap();
        prop_assert_eq!(&script_fields(&script)[3], &line.clone().into_bytes());
        // Another id never travels under this one.
        let other = if id == i64::MAX { 1 } else { id + 1 };
        prop_assert!(render_say("~/.delegate", "abc123-7-1", other, &line).is_err());
    });
}

#[test]
fn oversized_inbox_lines_are_refused() {
    let line = say_line(1, "t", "lead", &"x".repeat(MAX_SAY_LINE));
    assert!(render_say("/r", "k-1", 1, &line).is_err());
}

// ---- subjects ----------------------------------------------------------------------------

#[test]
fn subjects_never_hold_control_characters() {
    proptest!(config(2048), |(prompt in proptest::collection::vec(any::<u8>(), 0..2048), s in any::<String>())| {
        for subject in [subject_from(&prompt), clean_subject(&s), clean_subject(&String::from_utf8_lossy(&prompt))] {
            prop_assert!(!subject.chars().any(char::is_control), "{:?}", subject);
            prop_assert!(subject.chars().count() <= 80, "{:?}", subject);
            prop_assert_eq!(subject.trim(), subject.as_str());
        }
    });
}
