//! Durations on the command line and over MCP: a huge one (u64::MAX seconds, or more digits
//! than fit) means "a century", which is forever for a task; it is never a panic, and a
//! duration that is no duration is a usage error naming the flag.

use std::io::Read;
use std::time::Duration;

use delegate_testkit::FakeHost;
use serde_json::json;

use crate::support::{Env, launch};

const U64_MAX: &str = "18446744073709551615";
/// `delegate_core::hosts::inventory::FOREVER`, in seconds.
const CENTURY: u64 = 100 * 366 * 24 * 3600;

#[test]
fn huge_durations_mean_forever_and_bad_ones_are_usage_errors() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");

    // run --timeout: stored and given to the runner as a century.
    for huge in [U64_MAX, "99999999999999999999999", "99999999999999999999999h"] {
        let task = env.run(&["oppy", "quick", "--timeout", huge, "--json"]).ok().json();
        assert_eq!(task["timeout_secs"], CENTURY, "--timeout {huge}: {task}");
        assert_eq!(task["runs"][0]["evidence"]["remote"]["timeout_secs"], CENTURY, "{task}");
    }
    let id = launch(&env, &["oppy", "quick", "--json"]).to_string();

    // wait --timeout: no deadline the clock cannot hold (this used to panic).
    for huge in [U64_MAX, "99999999999999999999999", "584942417356y"] {
        let run = env.run(&["wait", &id, "--timeout", huge, "--interval-ms", "200"]);
        assert_eq!(run.code(), 0, "wait --timeout {huge}:\n{run}");
        assert!(run.stdout().contains("completed"), "{run}");
    }
    env.run(&["wait", &id, "--timeout", "10s", "--interval-ms", U64_MAX]).ok();
    let run = env.run(&["monitor", "--format", "json", "--interval-ms", U64_MAX, "--count", "1"]).ok();
    assert!(run.stderr().is_empty(), "{run}");

    // Not a duration, or zero where a limit must be one: exit 2 naming the flag and the fix.
    let run = env.run(&["wait", &id, "--timeout", "soon"]).fails_with(2);
    assert!(run.stderr().contains("--timeout") && run.stderr().contains("90s"), "{run}");
    let run = env.run(&["oppy", "x", "--timeout", "0s"]).fails_with(2);
    assert!(run.stderr().contains("--timeout") && run.stderr().contains("shorter than one second"), "{run}");
    // A brother's timeout in the inventory, and a host's connect timeout, huge too.
    env.config_append(&format!(
        "[brothers.slow]\nhost = \"h\"\nworkdir = \"{}\"\nagent = \"self-test\"\nsandbox = \"read\"\ntimeout = \"{U64_MAX}\"\n",
        host.workdir().display()
    ));
    let task = env.run(&["slow", "quick", "--json"]).ok().json();
    assert_eq!(task["timeout_secs"], CENTURY, "{task}");
    let config = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, config.replace("connect_timeout = 5", &format!("connect_timeout = {U64_MAX}")))
        .unwrap();
    env.run(&["oppy", "quick", "--json", "--no-warm"]).ok();
    env.run(&["oppy", "quick", "--json"]).ok();
}

/// `status --watch --interval <u64::MAX seconds>` draws once and sleeps, alive, rather than
/// panicking on the interval.
#[test]
fn status_watch_with_a_huge_interval_draws_and_waits() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_delegate"))
        .env_clear()
        .envs(env.envs())
        .current_dir(&env.home)
        .args(["status", "--watch", "--interval", U64_MAX])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut first = [0u8; 64];
        let n = stdout.read(&mut first).unwrap();
        first[..n].to_vec()
    });
    let drawn = reader.join().unwrap();
    assert!(drawn.starts_with(b"\x1b[H\x1b[2J"), "{:?}", String::from_utf8_lossy(&drawn));
    std::thread::sleep(Duration::from_millis(500));
    let state = child.try_wait().unwrap();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(state.is_none(), "status --watch ended: {state:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_huge_timeouts_are_a_century_or_a_clear_refusal() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let client = crate::mcp::connect(&env).await;
    let launched =
        crate::mcp::ok(&client, "delegate_task", json!({"brother": "oppy", "prompt": "hi", "timeout": U64_MAX})).await;
    let id =
        launched["task"].as_i64().or(launched["tasks"][0]["task"].as_i64()).unwrap_or_else(|| panic!("{launched}"));
    let task = env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json();
    assert_eq!(task["timeout_secs"], CENTURY, "{task}");
    let (code, message) =
        crate::mcp::err(&client, "wait_tasks", json!({"ids": [id], "timeout_seconds": u64::MAX})).await;
    assert_eq!(code, "bad_arguments", "{message}");
    assert!(message.contains("timeout_seconds") && message.contains("call again"), "{message}");
    client.cancel().await.expect("close the client");
}
