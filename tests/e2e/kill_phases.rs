//! F12: the CLI SIGKILLed at each phase of a launch (test builds stop at a named phase when
//! `DELEGATE_TEST_STOP_AT` says so; see src/paths.rs). After a reconcile every task is in a
//! true, settled state, there is at most one tmux session per task, and the mailbox passes
//! `integrity_check`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use delegate_testkit::FakeHost;
use serde_json::Value;

use crate::support::Env;

/// Starts `delegate args` stopped at `phase`, waits until it is there, and SIGKILLs it.
pub(crate) fn kill_at(env: &Env, phase: &str, args: &[&str]) {
    let stop_file = std::env::temp_dir().join(format!("dlg-stop-{}-{phase}", std::process::id()));
    let _ = std::fs::remove_file(&stop_file);
    let mut child = Command::new(env!("CARGO_BIN_EXE_delegate"))
        .args(args)
        .env_clear()
        .envs(env.envs())
        .env("DELEGATE_TEST_STOP_AT", phase)
        .env("DELEGATE_TEST_STOP_FILE", &stop_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stop_file.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("delegate ended ({status}) before reaching phase {phase}");
        }
        assert!(Instant::now() < deadline, "never reached phase {phase}");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let _ = std::fs::remove_file(&stop_file);
}

fn data_dir(env: &Env) -> std::path::PathBuf {
    env.envs().into_iter().find(|(k, _)| k == "DELEGATE_HOME").map(|(_, v)| v.into()).unwrap()
}

fn integrity(env: &Env) -> String {
    let db = data_dir(env).join("mailbox.db");
    let c = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap()
}

fn sessions(host: &FakeHost) -> Vec<String> {
    let out = host.tmux(&["list-sessions", "-F", "#{session_name}"]);
    String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
}

/// `delegate sync` with no grace for unconfirmed launches (the killed CLI is not coming
/// back), then the one task's state.
fn reconcile(env: &Env) -> Value {
    let run = env.run_with_env(&["sync", "--json"], &[("DELEGATE_LAUNCH_GRACE", "0s")]);
    assert_eq!(run.code(), 0, "{run}");
    let list = env.run(&["list", "--json", "--no-sync"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1, "one task: {list}");
    list[0].clone()
}

#[test]
fn killed_after_recording_nothing_reached_the_brother_and_reconcile_says_not_started() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    kill_at(&env, "recorded", &["oppy", "work", "--json"]);
    // Killed with the intent recorded: the mailbox says so, and only that.
    let before = env.run(&["list", "--json", "--no-sync"]).ok().json();
    assert_eq!(before[0]["status"], "launching", "{before}");
    // Within the default grace another process could still be sending it: left alone.
    env.run(&["sync"]).ok();
    assert_eq!(env.run(&["list", "--json", "--no-sync"]).ok().json()[0]["status"], "launching");
    let t = reconcile(&env);
    assert_eq!(t["status"], "failed", "{t}");
    assert!(t["reason"].as_str().unwrap().contains("not started"), "{t}");
    assert!(sessions(&host).is_empty(), "no session may exist: {:?}", sessions(&host));
    assert_eq!(integrity(&env), "ok");
}

#[test]
fn killed_after_the_brother_answered_the_agent_runs_and_reconcile_finds_it_once() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    kill_at(&env, "answered", &["oppy", "dawdle\n@self-test sleep 20", "--max-turns", "100", "--json"]);
    let before = env.run(&["list", "--json", "--no-sync"]).ok().json();
    assert_eq!(before[0]["status"], "launching", "the answer was never recorded: {before}");
    let t = reconcile(&env);
    assert_eq!(t["status"], "running", "{t}");
    let s = sessions(&host);
    assert_eq!(s.len(), 1, "exactly one session for the task: {s:?}");
    assert_eq!(integrity(&env), "ok");
    env.run(&["cancel", &t["id"].to_string()]).ok();
}

#[test]
fn a_fan_out_killed_after_recording_leaves_every_task_settled_after_reconcile() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    env.add_brother("jerry", "h", &host, "self-test", "read");
    kill_at(&env, "recorded", &["oppy,jerry", "work", "--json"]);
    env.run_with_env(&["sync"], &[("DELEGATE_LAUNCH_GRACE", "0s")]).ok();
    let list = env.run(&["list", "--json", "--no-sync"]).ok().json();
    let states: Vec<&str> = list.as_array().unwrap().iter().map(|t| t["status"].as_str().unwrap()).collect();
    assert_eq!(states, ["failed", "failed"], "{list}");
    assert!(sessions(&host).is_empty());
    assert_eq!(integrity(&env), "ok");
}
