//! What a finished run said, shown to people (`show`) and lead agents (`show --json`, MCP
//! `get_task`): the final answer, the tool calls that were denied, and a sandbox that never
//! started. The brother runs a stand-in for Claude that prints a crafted stream-json.

use delegate_testkit::FakeHost;
use serde_json::json;

use crate::support::{Env, install_agent, launch, wait_done};

/// A `claude` on the brother that prints `stream` and exits 0.
fn claude_printing(host: &FakeHost, stream: &str) {
    install_agent(host, "claude", &format!("#!/bin/bash\ncat >/dev/null\ncat <<'STREAM'\n{stream}STREAM\n"));
}

fn get_task(env: &Env, id: i64) -> serde_json::Value {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = crate::mcp::connect(env).await;
        let task = crate::mcp::ok(&client, "get_task", json!({"id": id})).await;
        let _ = client.cancel().await;
        task
    })
}

#[test]
fn show_and_get_task_give_the_answer_and_the_denied_tool_calls() {
    let host = FakeHost::start();
    claude_printing(
        &host,
        include_str!("../../crates/delegate-core/tests/fixtures/streams/synthetic-claude-denied.jsonl"),
    );
    let env = Env::with_brother(&host, "claude", "read");
    let id = launch(&env, &["oppy", "run the tests", "--json"]);
    let t = wait_done(&env, id);
    assert_eq!(t["status"], "completed", "{t}");
    let answer = "All 12 tests pass. I could not send the receipt: the report helper was refused.";
    let denied = r#"Bash: "$DELEGATE_TASK_DIR/report" receipt "run the tests and fix the failure""#;

    let show = env.run(&["show", &id.to_string()]).ok().stdout();
    assert!(show.contains("  denied    1 tool call\n"), "{show}");
    assert!(show.contains(&format!("            {denied}\n")), "{show}");
    assert!(show.contains(&format!("answer\n  {answer}\n")), "{show}");

    let json = env.run(&["show", &id.to_string(), "--json"]).ok().json();
    assert_eq!(json["final_text"], answer, "{json}");
    assert_eq!(json["results"][0]["permission_denials"], 1, "{json}");
    assert_eq!(json["results"][0]["denials"][0]["tool"], "Bash", "{json}");

    let mcp = get_task(&env, id);
    assert_eq!(mcp["final_text"], answer, "{mcp}");
    assert_eq!(mcp["results"][0]["denials"], json["results"][0]["denials"], "{mcp}");
}

#[test]
fn a_sandbox_that_never_started_fails_the_task_and_says_why() {
    let host = FakeHost::start();
    claude_printing(
        &host,
        include_str!("../../crates/delegate-core/tests/fixtures/streams/synthetic-claude-sandbox-broken.jsonl"),
    );
    let env = Env::with_brother(&host, "claude", "read");
    let id = launch(&env, &["oppy", "run the tests", "--json"]);
    let t = wait_done(&env, id);
    let why = "the sandbox could not start on the brother: bwrap: setting up uid map: Permission denied";
    assert_eq!((t["status"].as_str(), t["reason"].as_str()), (Some("failed"), Some(why)), "{t}");

    let show = env.run(&["show", &id.to_string()]).ok().stdout();
    assert!(show.contains("  warning   2 tool calls failed because the sandbox could not start"), "{show}");

    let mcp = get_task(&env, id);
    assert_eq!(mcp["runs"][0]["outcome"]["kind"], "sandbox", "{mcp}");
    let warning = mcp["results"][0]["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("bwrap: setting up uid map: Permission denied"), "{mcp}");
}

/// Reports that are not UTF-8 (the `report` helper passes bytes through, as from a Latin-1
/// file name) are kept with U+FFFD and a `lossy_report` event naming the report and line;
/// a line that is no report at all is a `skipped` event naming the file and line. Nothing is
/// dropped silently (a non-UTF-8 report used to vanish).
#[test]
fn a_report_that_is_not_utf8_is_kept_and_a_broken_one_is_named() {
    let host = FakeHost::start();
    install_agent(
        &host,
        "claude",
        r#"#!/bin/bash
cat >/dev/null
r=$DELEGATE_TASK_DIR/report
"$r" receipt "on it"
"$r" progress "$(printf 'caf\xe9 r\xe9sum\xe9')"
printf 'half a line from a crash\n' >>"$DELEGATE_TASK_DIR/outbox.jsonl"
"$r" done "finished"
printf '%s\n' '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"ok","session_id":"s"}'
"#,
    );
    let env = Env::with_brother(&host, "claude", "read");
    let id = launch(&env, &["oppy", "report back", "--json"]);
    assert_eq!(wait_done(&env, id)["status"], "completed");
    let json = env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json();
    let texts: Vec<&str> = json["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["on it", "caf\u{fffd} r\u{fffd}sum\u{fffd}", "finished"], "{json}");
    let events: Vec<(&str, &str)> = json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["summary"].as_str().unwrap()))
        .collect();
    let outbox = std::fs::read(crate::support::remote_dir(&env, id).join("outbox.jsonl")).unwrap();
    let line_at = |n: usize| outbox.split_inclusive(|b| *b == b'\n').take(n - 1).map(<[u8]>::len).sum::<usize>();
    let lossy = format!("report 2 (line at byte {} of outbox.jsonl) was not valid UTF-8", line_at(2));
    assert!(events.iter().any(|(k, s)| *k == "lossy_report" && s.starts_with(&lossy)), "{events:?}");
    let skipped = format!("line at byte {} of outbox.jsonl skipped: not a report", line_at(3));
    assert!(events.iter().any(|(k, s)| *k == "skipped" && s.starts_with(&skipped)), "{events:?}");
    // People see it too.
    let shown = env.run(&["show", &id.to_string(), "--no-sync"]).ok().stdout();
    assert!(shown.contains("caf\u{fffd} r\u{fffd}sum\u{fffd}") && shown.contains("lossy_report"), "{shown}");
}
