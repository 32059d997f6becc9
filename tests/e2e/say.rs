//! Say: messages to a running brother arrive once, through the agent's own mechanisms.

use std::time::{Duration, Instant};

use delegate_testkit::FakeHost;
use serde_json::Value;

use crate::support::{Env, install_agent};

/// Polls `show --json` until `check` holds.
fn show_until(env: &Env, id: i64, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = env.run(&["show", &id.to_string(), "--json"]).ok().json();
        if check(&t) {
            return t;
        }
        assert!(Instant::now() < deadline, "never {what}: {t}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_message_said_mid_run_reaches_claude_through_its_hook_exactly_once() {
    let host = FakeHost::start();
    // Like Claude Code: a tool call every 200 ms, each followed by the PostToolUse hook; what
    // the hook returns as additional context is what the model would see. We keep it.
    install_agent(
        &host,
        "claude",
        r#"#!/bin/bash
cat >/dev/null
echo '{"type":"system","subtype":"init","session_id":"s","claude_code_version":"2.1.329"}'
for i in $(seq 60); do
  out=$(printf '%s' '{"hook_event_name":"PostToolUse","tool_name":"Read","tool_input":{"file_path":"a.txt"}}' | bash "$DELEGATE_TASK_DIR/hook" PostToolUse)
  [ -n "$out" ] && printf '%s\n' "$out" >> "$DELEGATE_TASK_DIR/context-seen.jsonl"
  sleep 0.2
done
echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"done","session_id":"s"}'
"#,
    );
    let env = Env::with_brother(&host, "claude", "read");
    let id = env.run(&["oppy", "work", "--json"]).ok().json()["id"].as_i64().unwrap();
    let text = "use the shared storage API instead: \"storage::v2\" \\ not v1\nthanks 🙏";
    let said = env.run(&["say", &id.to_string(), text, "--as", "lead-9", "--json"]).ok().json();
    let msg_id = said["id"].as_i64().unwrap();
    assert_eq!(said["direction"], "to_brother");
    assert_eq!(said["author"], "lead-9");

    let t = show_until(&env, id, "delivered", |t| {
        t["messages"].as_array().unwrap().iter().any(|m| m["id"] == msg_id && !m["delivered_at"].is_null())
    });
    let dir = t["runs"][0]["remote_dir"].as_str().unwrap().to_string();
    // The agent saw it once, word for word, as additional context after a tool call.
    let seen = std::fs::read_to_string(format!("{dir}/context-seen.jsonl")).unwrap();
    assert_eq!(seen.lines().count(), 1, "{seen}");
    let v: Value = serde_json::from_str(seen.lines().next().unwrap()).unwrap();
    assert_eq!(v["hookSpecificOutput"]["hookEventName"], "PostToolUse");
    assert!(v["hookSpecificOutput"]["additionalContext"].as_str().unwrap().contains(text), "{v}");
    // And the thread shows it in place, with its delivery.
    let said_item = t["thread"].as_array().unwrap().iter().find(|i| i["kind"] == "said").cloned().unwrap();
    assert!(said_item["text"].as_str().unwrap().contains("[delivered"), "{said_item}");
    env.run(&["cancel", &id.to_string()]).ok();
}

#[test]
fn agents_without_hooks_pick_messages_up_with_the_inbox_helper_and_acknowledge_them() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = env.run(&["oppy", "dawdle\n@self-test sleep 20", "--max-turns", "100", "--json"]).ok().json()["id"]
        .as_i64()
        .unwrap();
    let first = env.run(&["say", &id.to_string(), "first note", "--json"]).ok().json()["id"].as_i64().unwrap();
    let second = env.run(&["say", &id.to_string(), "second note", "--json"]).ok().json()["id"].as_i64().unwrap();
    let t = show_until(&env, id, "read", |t| {
        t["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["direction"] == "to_brother" && !m["read_at"].is_null())
            .count()
            == 2
    });
    let said: Vec<(i64, String)> = t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "to_brother")
        .map(|m| (m["id"].as_i64().unwrap(), m["text"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(said, [(first, "first note".to_string()), (second, "second note".to_string())]);
    // The self-test agent reports what it read, once per message, in order.
    let heard: Vec<String> = crate::support::heard(&t);
    assert_eq!(heard, ["heard: first note", "heard: second note"], "{t}");
    env.run(&["cancel", &id.to_string()]).ok();
}

#[test]
fn saying_something_to_a_finished_task_suggests_reopen() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = env.run(&["oppy", "quick", "--json"]).ok().json()["id"].as_i64().unwrap();
    env.run(&["wait", &id.to_string(), "--timeout", "30s", "--interval-ms", "200"]).ok();
    let run = env.run(&["say", &id.to_string(), "one more thing"]).fails_with(9);
    assert!(run.stderr().contains(&format!("delegate reopen {id}")), "{run}");
    let t = env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json();
    assert!(t["messages"].as_array().unwrap().iter().all(|m| m["direction"] != "to_brother"), "{t}");
}

#[test]
fn the_brother_refuses_a_message_for_a_run_that_ended_before_the_mailbox_knew() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    env.no_resident();
    let id = crate::support::launch(&env, &["oppy", "quick", "--json"]);
    let dir = crate::support::remote_dir(&env, id);
    crate::support::wait_for_file(&dir.join("exit"));
    // The mailbox still says launched; one connection, and the brother says no.
    let before = crate::support::execs(&host);
    let run = env.run(&["say", &id.to_string(), "too late"]).fails_with(9);
    assert!(run.stderr().contains("reopen"), "{run}");
    assert_eq!(crate::support::execs(&host) - before, 1, "say is one exec");
    let t = env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json();
    let m = t["messages"].as_array().unwrap().iter().find(|m| m["direction"] == "to_brother").cloned().unwrap();
    assert_eq!((m["kind"].as_str(), m["text"].as_str()), (Some("undeliverable"), Some("too late")), "{t}");
    assert!(!std::fs::read_to_string(dir.join("inbox.jsonl")).unwrap_or_default().contains("too late"));
}

/// The messages the lead stored for a task (none may be kept for an agent that never ran).
fn to_brother(env: &Env, id: i64) -> Vec<Value> {
    let t = env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json();
    t["messages"].as_array().unwrap().iter().filter(|m| m["direction"] == "to_brother").cloned().collect()
}

#[test]
fn saying_something_to_a_task_whose_agent_never_started_is_refused_and_stores_nothing() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    // Refused by the brother's preflight: failed, and it never ran.
    let run = env.run(&["oppy", "work", "--workdir", "/nonexistent/dir", "--json"]).fails_with(24);
    let id = run.json()["id"].as_i64().unwrap();
    let said = env.run(&["say", &id.to_string(), "are you there?"]).fails_with(19);
    let err = said.stderr();
    assert!(err.contains("failed") && err.contains("never started"), "{said}");
    assert!(err.contains("delegate run oppy") && err.contains("no session for `delegate reopen`"), "{said}");
    assert!(to_brother(&env, id).is_empty());

    // Still launching (its launch process died after recording it): not confirmed started.
    crate::kill_phases::kill_at(&env, "recorded", &["oppy", "work", "--json"]);
    let list = env.run(&["list", "--json", "--no-sync"]).ok().json();
    let launching =
        list.as_array().unwrap().iter().find(|t| t["status"] == "launching").unwrap()["id"].as_i64().unwrap();
    let before = crate::support::execs(&host);
    let said = env.run(&["say", &launching.to_string(), "hello"]).fails_with(19);
    assert!(said.stderr().contains("launching") && said.stderr().contains("not confirmed started"), "{said}");
    assert_eq!(crate::support::execs(&host), before, "refused without connecting");
    assert!(to_brother(&env, launching).is_empty());
}
