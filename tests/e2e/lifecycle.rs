//! After the launch: the brother reports back. Each terminal state, messages, hook events,
//! wait and monitor, offsets that survive restarts, and one SSH exec per host per sync.

use std::time::{Duration, Instant};

use delegate_testkit::FakeHost;
use serde_json::Value;

use crate::support::{Env, install_agent, launch, wait_done};

#[test]
fn self_test_completes_with_its_messages_and_outcome() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = launch(&env, &["oppy", "review the training config", "--json"]);
    let task = wait_done(&env, id);
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["exit_code"], 0);
    assert_eq!(task["runs"][0]["outcome"]["outcome"], "completed", "{task}");
    // The self-test agent reports receipt, progress and completion through the helper.
    let show = env.run(&["show", &id.to_string(), "--json"]).ok().json();
    let kinds: Vec<&str> = show["messages"].as_array().unwrap().iter().map(|m| m["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["receipt", "progress", "done"], "{show}");
    let mail = env.run(&["mailbox", "--unread", "--json"]).ok().json();
    assert_eq!(mail.as_array().unwrap().len(), 3, "{mail}");
    // Shown once, then read.
    assert_eq!(env.run(&["mailbox", "--unread", "--json"]).ok().json(), serde_json::json!([]));
}

#[test]
fn a_failing_agent_ends_failed_with_its_reason_and_wait_says_so() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = launch(&env, &["oppy", "break\n@self-test fail 3", "--json"]);
    let run = env.run(&["wait", &id.to_string(), "--timeout", "60s", "--interval-ms", "200"]).fails_with(7);
    assert!(run.stdout().contains("failed") && run.stdout().contains("self-test failure requested"), "{run}");
    let t = env.run(&["show", &id.to_string(), "--json"]).ok().json();
    assert_eq!((t["status"].as_str(), t["exit_code"].as_i64()), (Some("failed"), Some(3)), "{t}");
}

#[test]
fn the_agents_own_turn_limit_ends_in_turn_limit() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = launch(&env, &["oppy", "loop\n@self-test turns", "--max-turns", "3", "--json"]);
    let t = wait_done(&env, id);
    assert_eq!(t["status"], "turn_limit", "{t}");
    assert_eq!(t["turns"], 3, "{t}");
}

#[test]
fn the_wall_clock_limit_ends_in_timed_out() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = launch(&env, &["oppy", "dawdle\n@self-test sleep 60", "--timeout", "2s", "--max-turns", "100", "--json"]);
    let t = wait_done(&env, id);
    assert_eq!(t["status"], "timed_out", "{t}");
}

#[test]
fn cancel_stops_the_agent_and_records_cancelled() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    env.no_resident();
    let id = launch(&env, &["oppy", "dawdle\n@self-test sleep 60", "--json"]);
    let session =
        env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json()["session"].as_str().unwrap().to_string();
    let before = crate::support::execs(&host);
    let run = env.run(&["cancel", &id.to_string(), "--json"]).ok();
    assert_eq!(run.json()["status"], "cancelled", "{run}");
    assert_eq!(run.json()["runs"][0]["exit_reason"], "cancelled", "the runner recorded it: {run}");
    // The brother waits for the runner's exit record, so a cancel is the cancel exec plus
    // one sync: no polling.
    assert_eq!(crate::support::execs(&host) - before, 2, "{}", host.sshd_log());
    // The agent is really gone: its session ended.
    let deadline = Instant::now() + Duration::from_secs(15);
    while host.tmux(&["has-session", "-t", &format!("={session}")]).status.success() {
        assert!(Instant::now() < deadline, "session {session} still alive after cancel");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Cancelling a finished task is a clear error.
    let again = env.run(&["cancel", &id.to_string()]).fails_with(9);
    assert!(again.stderr().contains("already cancelled"), "{again}");
}

#[test]
fn a_killed_tmux_server_leaves_the_task_lost_not_running() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = launch(&env, &["oppy", "dawdle\n@self-test sleep 60", "--json"]);
    let synced = env.run(&["sync", "--json"]).ok().json();
    assert_eq!(synced["hosts"][0]["changed"][0][1], "running", "{synced}");
    assert!(host.tmux(&["kill-server"]).status.success());
    // Whether the sync lands while the hung-up runner is still stopping the agent (no exit
    // record yet) or after it recorded the hangup, the task is lost, never running.
    let t = env.run(&["show", &id.to_string(), "--json"]).ok().json();
    assert_eq!(t["status"], "lost", "{t}");
    let why = t["reason"].as_str().unwrap();
    assert!(why.contains("hangup") || why.contains("no exit record"), "{t}");
    let later = env.run(&["show", &id.to_string(), "--json"]).ok().json();
    assert_eq!(later["status"], "lost", "a lost task stays lost: {later}");
}

#[test]
fn a_runner_killed_outright_leaves_the_task_lost() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = launch(&env, &["oppy", "dawdle\n@self-test sleep 60", "--json"]);
    env.run(&["sync"]).ok();
    // Like a reboot: the runner, the agent's group and the tmux server die at once, with no
    // chance to write anything.
    let dir = crate::support::remote_dir(&env, id);
    let pgid = std::fs::read_to_string(dir.join("agent.pgid")).unwrap().trim().parse::<i32>().unwrap();
    let panes = host.tmux(&["list-panes", "-a", "-F", "#{pane_pid} #{pid}"]);
    let line = String::from_utf8_lossy(&panes.stdout).lines().next().unwrap().to_string();
    let pids: Vec<i32> = line.split(' ').map(|p| p.parse().unwrap()).collect();
    unsafe {
        libc::kill(pids[0], libc::SIGKILL);
        libc::kill(-pgid, libc::SIGKILL);
        libc::kill(pids[1], libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_millis(200));
    let t = env.run(&["show", &id.to_string(), "--json"]).ok().json();
    assert_eq!(t["status"], "lost", "{t}");
    assert!(t["reason"].as_str().unwrap().contains("no exit record"), "{t}");
}

#[test]
fn exit_zero_with_is_error_is_a_failure_with_the_agents_reason() {
    let host = FakeHost::start();
    // What the real Claude Code prints when not logged in (recorded from 2.1.329), exit 0.
    install_agent(
        &host,
        "claude",
        r#"#!/bin/bash
cat >/dev/null
echo '{"type":"system","subtype":"init","session_id":"5c4f0f8e-1111-4a1a-9c1c-000000000001","claude_code_version":"2.1.329","permissionMode":"dontAsk","tools":["Glob","Grep","Read"]}'
echo '{"type":"assistant","message":{"content":[{"type":"text","text":"Not logged in · Please run /login"}]},"error":"authentication_failed"}'
echo '{"type":"result","subtype":"success","is_error":true,"num_turns":1,"result":"Not logged in · Please run /login","session_id":"5c4f0f8e-1111-4a1a-9c1c-000000000001","total_cost_usd":0}'
exit 0
"#,
    );
    let env = Env::with_brother(&host, "claude", "read");
    let id = launch(&env, &["oppy", "anything", "--json"]);
    let t = wait_done(&env, id);
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["exit_code"], 0);
    assert!(t["reason"].as_str().unwrap().starts_with("Not logged in"), "{t}");
}

#[test]
fn claude_hook_events_arrive_without_secrets() {
    let host = FakeHost::start();
    // A stand-in for Claude that runs the per-task hook from its settings file the way
    // Claude Code does, then ends successfully.
    install_agent(
        &host,
        "claude",
        r#"#!/bin/bash
cat >/dev/null
settings=
while [ $# -gt 0 ]; do [ "$1" = --settings ] && settings=$2; shift; done
grep -q PostToolUse "$settings" || exit 90
hook="$DELEGATE_TASK_DIR/hook"
printf '%s' '{"hook_event_name":"SessionStart","source":"startup","session_id":"s"}' | bash "$hook" SessionStart
printf '%s' '{"hook_event_name":"PostToolUse","tool_name":"Bash","tool_input":{"command":"export TOKEN=sekrit-123 && cargo test"},"tool_response":{"stdout":"sekrit-123"}}' | bash "$hook" PostToolUse
printf '%s' '{"hook_event_name":"PostToolUse","tool_name":"Edit","tool_input":{"file_path":"src/lib.rs","old_string":"sekrit-123"}}' | bash "$hook" PostToolUse
printf '%s' '{"hook_event_name":"Stop","stop_hook_active":false,"last_assistant_message":"sekrit-123"}' | bash "$hook" Stop
echo '{"type":"system","subtype":"init","session_id":"s","claude_code_version":"2.1.329"}'
echo '{"type":"result","subtype":"success","is_error":false,"num_turns":2,"result":"done","session_id":"s","total_cost_usd":0.01}'
"#,
    );
    let env = Env::with_brother(&host, "claude", "read");
    let id = launch(&env, &["oppy", "anything", "--json"]);
    let t = wait_done(&env, id);
    assert_eq!(t["status"], "completed", "{t}");
    let show = env.run(&["show", &id.to_string(), "--json"]).ok();
    let events: Vec<(String, String)> = show.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap().to_string(), e["summary"].as_str().unwrap().to_string()))
        .collect();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["SessionStart", "PostToolUse", "PostToolUse", "Stop"], "{events:?}");
    assert!(events[1].1.contains("Bash") && events[2].1.contains("src/lib.rs"), "{events:?}");
    assert!(!show.stdout().contains("sekrit"), "a secret reached the mailbox: {show}");
}

#[test]
fn one_sync_of_many_tasks_costs_one_ssh_exec_and_offsets_survive_restarts() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    env.no_resident();
    let ids: Vec<i64> =
        (0..8).map(|i| launch(&env, &["oppy", &format!("task {i}\n@self-test sleep 60"), "--json"])).collect();
    let before = crate::support::execs(&host);
    let synced = env.run(&["sync", "--json"]).ok().json();
    assert_eq!(synced["hosts"].as_array().unwrap().len(), 1, "{synced}");
    assert_eq!(synced["hosts"][0]["tasks"], 8);
    assert_eq!(synced["hosts"][0]["execs"], 1);
    assert_eq!(crate::support::execs(&host) - before, 1, "one sync of 8 tasks must be one SSH exec");

    // Messages so far (the receipt of each task) land once, however often we sync, across
    // separate CLI processes.
    for _ in 0..3 {
        env.run(&["sync"]).ok();
    }
    let mail = env.run(&["mailbox", "--json", "--no-sync"]).ok().json();
    let receipts = mail.as_array().unwrap().iter().filter(|m| m["kind"] == "receipt").count();
    assert_eq!(receipts, ids.len(), "{mail}");
    for id in &ids {
        env.run(&["cancel", &id.to_string()]).ok();
    }
}

#[test]
fn monitor_prints_one_json_line_per_change() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = launch(&env, &["oppy", "short", "--json"]);
    // Let it finish, then read the whole feed from the start.
    wait_done(&env, id);
    let run = env.run(&["monitor", "--format", "json", "--from-start", "--count", "1", "--no-sync"]).ok();
    let lines: Vec<Value> = run.stdout().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let states: Vec<&str> = lines.iter().filter(|l| l["type"] == "state").map(|l| l["to"].as_str().unwrap()).collect();
    assert_eq!(states.first(), Some(&"launching"), "{lines:?}");
    assert_eq!(states.last(), Some(&"completed"), "{lines:?}");
    assert!(lines.iter().any(|l| l["type"] == "message" && l["kind"] == "done"), "{lines:?}");
}

#[test]
fn wait_times_out_with_its_own_exit_code() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = launch(&env, &["oppy", "dawdle\n@self-test sleep 60", "--json"]);
    let run = env.run(&["wait", &id.to_string(), "--timeout", "1s", "--interval-ms", "200"]).fails_with(8);
    assert!(run.stdout().contains("still running"), "{run}");
    env.run(&["cancel", &id.to_string()]).ok();
}

#[test]
fn logs_show_the_agents_output_and_attach_targets_the_exact_session() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = launch(&env, &["oppy", "say something", "--json"]);
    wait_done(&env, id);
    let logs = env.run(&["logs", &id.to_string()]).ok();
    assert!(logs.stdout().contains("received a prompt of") && logs.stdout().contains("[result success"), "{logs}");
    let raw = env.run(&["logs", &id.to_string(), "--raw"]).ok();
    assert!(raw.stdout().lines().all(|l| serde_json::from_str::<Value>(l).is_ok()), "{raw}");
    let attach = env.run(&["attach", &id.to_string(), "--print"]).ok();
    let session = env.run(&["show", &id.to_string(), "--json"]).ok().json()["session"].as_str().unwrap().to_string();
    assert!(attach.stdout().starts_with("ssh -t ") && attach.stdout().contains(" -p "), "{attach}");
    // The route delegate took, given explicitly: here, direct.
    assert!(attach.stdout().contains(" -o ProxyCommand=none "), "{attach}");
    assert!(
        attach.stdout().trim_end().ends_with(&format!("tmux -L delegate attach-session -t ={session}")),
        "{attach}"
    );
}

#[test]
fn update_records_an_outcome_by_hand_only_when_no_agent_is_at_work() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = launch(&env, &["oppy", "dawdle\n@self-test sleep 60", "--max-turns", "100", "--json"]);
    let n = id.to_string();
    // In flight: refused with the fix, nothing recorded.
    let run = env.run(&["update", &n, "--status", "completed", "--output", "done?"]).fails_with(16);
    assert!(run.stderr().contains(&format!("delegate cancel {id}")) && run.stderr().contains("wait"), "{run}");
    // States only delegate sets are refused whatever the task's state.
    for s in [
        "queued",
        "launching",
        "launched",
        "running",
        "needs_input",
        "turn_limit",
        "timed_out",
        "lost",
        "launch_unknown",
    ] {
        let run = env.run(&["update", &n, "--status", s]).fails_with(2);
        assert!(
            run.stderr().contains("set by delegate") && run.stderr().contains("completed, failed or cancelled"),
            "{run}"
        );
    }
    let show = env.run(&["show", &n, "--json", "--no-sync"]).ok().json();
    assert_eq!(show["status"], "launched", "unchanged: {show}");
    assert!(show["messages"].as_array().unwrap().iter().all(|m| m["direction"] != "note"), "{show}");

    // Once no agent runs, a person records (or corrects) the outcome, with author and output.
    env.run(&["cancel", &n]).ok();
    let t = env
        .run(&["update", &n, "--status", "completed", "--output", "finished by hand", "--as", "lead-7", "--json"])
        .ok()
        .json();
    assert_eq!(t["status"], "completed");
    assert_eq!(env.run(&["update", &n, "--status", "failed", "--json"]).ok().json()["status"], "failed");
    env.run(&["update", &n, "--status", "running"]).fails_with(2);
    let show = env.run(&["show", &n, "--json", "--no-sync"]).ok().json();
    let note = show["messages"].as_array().unwrap().iter().find(|m| m["direction"] == "note").unwrap().clone();
    assert_eq!((note["author"].as_str(), note["text"].as_str()), (Some("lead-7"), Some("finished by hand")));
    assert_eq!(show["status"], "failed", "{show}");
}

#[test]
fn status_shows_what_is_in_flight_and_hosts_sync_side_by_side() {
    let (a, b) = (FakeHost::start(), FakeHost::start());
    let env = Env::new();
    env.add_host("ha", &a);
    env.add_host("hb", &b);
    env.add_brother("oppy", "ha", &a, "self-test", "read");
    env.add_brother("jerry", "hb", &b, "self-test", "read");
    let slow = launch(&env, &["oppy", "dawdle\n@self-test sleep 60", "--json"]);
    let quick = launch(&env, &["jerry", "quick", "--json"]);
    let synced = env.run(&["sync", "--json"]).ok().json();
    let hosts: Vec<(&str, i64)> = synced["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["host"].as_str().unwrap(), h["execs"].as_i64().unwrap()))
        .collect();
    assert_eq!(hosts, [("ha", 1), ("hb", 1)], "{synced}");
    // The quick one completes; wait says so with exit 0.
    env.run(&["wait", &quick.to_string(), "--timeout", "30s", "--interval-ms", "200"]).ok();
    let table = env.run(&["status"]).ok().stdout();
    let row = |id: i64| table.lines().find(|l| l.trim_start().starts_with(&format!("{id} "))).unwrap_or("").to_string();
    assert!(row(slow).contains("running") && row(slow).contains("oppy"), "{table}");
    assert!(row(quick).contains("completed"), "{table}");
    env.run(&["cancel", &slow.to_string()]).ok();
}

#[test]
fn logs_follow_prints_until_the_agent_ends() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = launch(&env, &["oppy", "count\n@self-test sleep 3", "--json"]);
    let started = Instant::now();
    let logs = env.run(&["logs", &id.to_string(), "--follow"]).ok();
    assert!(started.elapsed() >= Duration::from_secs(1), "follow returned before the agent ended: {logs}");
    assert!(logs.stdout().contains("turn 3 of 3") && logs.stdout().contains("[result success"), "{logs}");
    // Following also let the mailbox learn the ending.
    let t = env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json();
    assert_eq!(t["status"], "completed", "{t}");
}

#[test]
fn a_question_and_needs_input_status_from_the_brother_show_up() {
    let host = FakeHost::start();
    install_agent(
        &host,
        "claude",
        r#"#!/bin/bash
cat >/dev/null
"$DELEGATE_TASK_DIR/report" receipt "on it"
"$DELEGATE_TASK_DIR/report" question "which database: \"prod\" or 'staging'?"
"$DELEGATE_TASK_DIR/report" status needs_input "waiting for the answer"
echo '{"type":"system","subtype":"init","session_id":"s","claude_code_version":"2.1.329"}'
sleep 30
"#,
    );
    let env = Env::with_brother(&host, "claude", "read");
    let id = launch(&env, &["oppy", "migrate", "--json"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let t = loop {
        let t = env.run(&["show", &id.to_string(), "--json"]).ok().json();
        if t["status"] == "needs_input" || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(t["status"], "needs_input", "{t}");
    let mail = env.run(&["mailbox", "--json", "--no-sync"]).ok().json();
    let texts: Vec<(&str, &str)> =
        mail.as_array().unwrap().iter().map(|m| (m["kind"].as_str().unwrap(), m["text"].as_str().unwrap())).collect();
    assert_eq!(texts[0], ("receipt", "on it"), "{mail}");
    assert_eq!(texts[1], ("question", "which database: \"prod\" or 'staging'?"), "{mail}");
    env.run(&["cancel", &id.to_string()]).ok();
}
