//! `delegate mcp` driven by a real MCP client (rmcp's, over the child's stdin/stdout): the
//! handshake, the tool list with schemas, a task launched on a real sshd host and waited for,
//! its thread, a message to a running task and its cancellation, and the error results a
//! lead gets for unknown names and bad arguments.

use std::time::{Duration, Instant};

use delegate_testkit::FakeHost;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::support::Env;

const TOOLS: [&str; 20] = [
    "answer",
    "board",
    "cancel_task",
    "check_mailbox",
    "comment",
    "create_task",
    "delegate_task",
    "delete_task",
    "fetch_result",
    "get_diff",
    "get_task",
    "inbox",
    "list_brothers",
    "list_tasks",
    "move_task",
    "review",
    "send_message",
    "start_task",
    "update_task",
    "wait_tasks",
];

type Client = RunningService<RoleClient, ClientConfig>;

/// Spawns `delegate mcp` in the env's hermetic environment and does the MCP handshake as a
/// client named "e2e-lead".
pub(crate) async fn connect(env: &Env) -> Client {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_delegate"));
    cmd.arg("mcp").env_clear().envs(env.envs()).current_dir(&env.home);
    let transport = TokioChildProcess::new(cmd).expect("spawn delegate mcp");
    let me = ClientConfig::new(ClientCapabilities::default(), Implementation::new("e2e-lead", "1.0"));
    let client = tokio::time::timeout(Duration::from_secs(20), me.serve(transport))
        .await
        .expect("initialize within 20 s")
        .expect("initialize");
    let server = client.peer_info().expect("server info after initialize");
    assert_eq!(server.server_info.as_ref().map(|i| i.name.as_str()), Some("delegate"), "{server:?}");
    client
}

/// Calls a tool (with a deadline: a hang is a failure, never a slow pass).
async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else { panic!("arguments must be an object") };
    let params = CallToolRequestParams::new(tool.to_string()).with_arguments(args);
    tokio::time::timeout(Duration::from_secs(120), client.call_tool(params))
        .await
        .unwrap_or_else(|_| panic!("{tool} did not answer within 120 s"))
        .unwrap_or_else(|e| panic!("{tool}: protocol error instead of a tool result: {e}"))
}

fn text(r: &CallToolResult) -> String {
    r.content.iter().filter_map(|c| c.as_text()).map(|t| t.text.as_str()).collect::<Vec<_>>().join("\n")
}

/// A successful call's JSON.
pub(crate) async fn ok(client: &Client, tool: &str, args: Value) -> Value {
    let r = call(client, tool, args.clone()).await;
    assert_ne!(r.is_error, Some(true), "{tool} {args} failed: {}", text(&r));
    serde_json::from_str(&text(&r)).unwrap_or_else(|e| panic!("{tool}: result is not JSON ({e}): {}", text(&r)))
}

/// A failed call's error code and message (asserting it is a tool error, not a protocol one).
pub(crate) async fn err(client: &Client, tool: &str, args: Value) -> (String, String) {
    let r = call(client, tool, args.clone()).await;
    assert_eq!(r.is_error, Some(true), "{tool} {args} should have failed: {}", text(&r));
    let s = r.structured_content.clone().unwrap_or_else(|| panic!("no structured error: {}", text(&r)));
    let (code, message) = (s["error"].as_str().unwrap().to_string(), s["message"].as_str().unwrap().to_string());
    assert!(text(&r).contains(&message), "the text carries the message too: {}", text(&r));
    (code, message)
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_lists_its_tools_and_runs_a_fan_out_to_completion() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    env.add_brother("twin", "h", &host, "self-test", "read");
    let client = connect(&env).await;

    let tools = client.list_all_tools().await.expect("tools/list");
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    assert_eq!(names, TOOLS);
    for t in &tools {
        assert_eq!(t.input_schema.get("type"), Some(&json!("object")), "{}: {:?}", t.name, t.input_schema);
        assert!(t.description.as_deref().is_some_and(|d| d.len() > 20), "{} has no description", t.name);
    }
    let delegate = tools.iter().find(|t| t.name == "delegate_task").unwrap();
    // brother or environment: the call says which is missing (bad_arguments), the schema cannot.
    assert_eq!(delegate.input_schema["required"], json!(["prompt"]), "{:?}", delegate.input_schema);

    let brothers = ok(&client, "list_brothers", json!({})).await;
    let names: Vec<&str> =
        brothers["brothers"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["oppy", "twin"], "{brothers}");

    // One task to each of two brothers on the real sshd host.
    let launched =
        ok(&client, "delegate_task", json!({"brother": ["oppy", "twin"], "prompt": "review the training config"}))
            .await;
    let tasks = launched["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{launched}");
    assert_eq!(launched["errors"], json!([]), "{launched}");
    for (t, b) in tasks.iter().zip(["oppy", "twin"]) {
        assert_eq!(t["brother"], b, "{launched}");
        assert!(matches!(t["status"].as_str(), Some("launched" | "queued")), "{launched}");
    }
    let ids: Vec<i64> = tasks.iter().map(|t| t["task"].as_i64().unwrap()).collect();

    let waited = ok(&client, "wait_tasks", json!({"ids": ids, "timeout_seconds": 90})).await;
    assert_eq!((waited["done"].as_bool(), waited["all_completed"].as_bool()), (Some(true), Some(true)), "{waited}");
    assert_eq!(waited["pending"], json!([]), "{waited}");
    for t in waited["tasks"].as_array().unwrap() {
        assert_eq!(t["status"], "completed", "{waited}");
        assert!(t["final_text"].is_string(), "the agent's final text: {waited}");
    }

    let task = ok(&client, "get_task", json!({"id": ids[0]})).await;
    assert_eq!((task["id"].as_i64(), task["status"].as_str()), (Some(ids[0]), Some("completed")), "{task}");
    let thread = task["thread"].as_array().unwrap();
    let prompt = thread.iter().find(|i| i["kind"] == "prompt").unwrap_or_else(|| panic!("no prompt in {task}"));
    assert!(prompt["text"].as_str().unwrap().contains("review the training config"), "{task}");
    assert_eq!(prompt["author"], "e2e-lead", "the author is the MCP client's name: {task}");
    assert!(
        thread.iter().any(|i| i["kind"] == "status" && i["text"].as_str().unwrap().starts_with("completed")),
        "{task}"
    );
    assert!(thread.iter().any(|i| i["kind"] == "reported"), "{task}");
    assert_eq!(task["runs"].as_array().unwrap().len(), 1, "{task}");
    let kinds: Vec<&str> = task["messages"].as_array().unwrap().iter().map(|m| m["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["receipt", "progress", "done"], "{task}");

    // The mailbox: six reports from two brothers, then nothing unread.
    let mail = ok(&client, "check_mailbox", json!({})).await;
    assert_eq!(mail["messages"].as_array().unwrap().len(), 6, "{mail}");
    let mail = ok(&client, "check_mailbox", json!({"unread_only": true})).await;
    assert_eq!(mail["messages"], json!([]), "{mail}");

    let listed = ok(&client, "list_tasks", json!({"brother": "twin", "status": "completed"})).await;
    let listed: Vec<i64> = listed["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_i64().unwrap()).collect();
    assert_eq!(listed, [ids[1]]);

    // By hand, with an author of its own; the CLI sees the same mailbox.
    let updated =
        ok(&client, "update_task", json!({"id": ids[1], "status": "failed", "output": "wrong config", "as": "lead-3"}))
            .await;
    assert_eq!(updated["status"], "failed", "{updated}");
    let show = env.run(&["show", &ids[1].to_string(), "--json", "--no-sync"]).ok().json();
    let note = show["messages"].as_array().unwrap().iter().find(|m| m["kind"] == "output").cloned();
    assert_eq!(note.map(|m| (m["author"].clone(), m["text"].clone())), Some((json!("lead-3"), json!("wrong config"))));
    client.cancel().await.expect("close the client");
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_talks_to_a_running_task_and_cancels_it() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let client = connect(&env).await;
    let launched = ok(
        &client,
        "delegate_task",
        json!({"brother": "oppy", "prompt": "dawdle\n@self-test sleep 20", "max_turns": 100, "subject": "dawdle"}),
    )
    .await;
    let id = launched["tasks"][0]["task"].as_i64().unwrap();

    let said = ok(&client, "send_message", json!({"id": id, "text": "first note"})).await;
    assert_eq!(said["message"]["direction"], "to_brother", "{said}");
    assert_eq!(said["message"]["author"], "e2e-lead", "{said}");
    let said_id = said["message"]["id"].as_i64().unwrap();
    // The self-test agent reads its inbox between steps and acknowledges each message.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = ok(&client, "get_task", json!({"id": id})).await;
        let read = t["messages"].as_array().unwrap().iter().any(|m| m["id"] == said_id && !m["read_at"].is_null());
        let heard = t["messages"].as_array().unwrap().iter().any(|m| m["text"] == "heard: first note");
        if read && heard {
            assert_eq!(t["status"], "running", "{t}");
            break;
        }
        assert!(Instant::now() < deadline, "never read: {t}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Its outcome is not known while the agent runs: update_task refuses, naming the fix,
    // and states only delegate sets are bad arguments.
    let (code, message) = err(&client, "update_task", json!({"id": id, "status": "completed"})).await;
    assert_eq!(code, "run_active", "{message}");
    assert!(message.contains(&format!("delegate cancel {id}")), "{message}");
    let (code, message) = err(&client, "update_task", json!({"id": id, "status": "queued"})).await;
    assert_eq!(code, "bad_arguments", "{message}");
    assert!(message.contains("completed, failed or cancelled"), "{message}");

    let cancelled = ok(&client, "cancel_task", json!({"id": id})).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    // A finished task hears nothing more, and cannot be cancelled twice.
    let (code, message) = err(&client, "send_message", json!({"id": id, "text": "too late"})).await;
    assert_eq!(code, "already_finished", "{message}");
    assert!(message.contains(&format!("delegate reopen {id}")), "{message}");
    let (code, _) = err(&client, "cancel_task", json!({"id": id})).await;
    assert_eq!(code, "already_finished");
    let waited = ok(&client, "wait_tasks", json!({"ids": [id], "timeout_seconds": 0})).await;
    assert_eq!((waited["done"].as_bool(), waited["all_completed"].as_bool()), (Some(true), Some(false)), "{waited}");
    client.cancel().await.expect("close the client");
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_bad_calls_are_error_results_that_say_how_to_fix_them() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let client = connect(&env).await;

    let (code, message) = err(&client, "delegate_task", json!({"brother": "nobody", "prompt": "hi"})).await;
    assert_eq!(code, "unknown_brother");
    assert!(
        message.contains("\"nobody\"") && message.contains("oppy") && message.contains("list_brothers"),
        "{message}"
    );
    assert_eq!(ok(&client, "list_tasks", json!({})).await["tasks"], json!([]), "nothing was launched");
    // In a fan-out, like the CLI: the other brothers' tasks start, and the error names the
    // brother that failed and says not to launch the others again.
    let r = call(&client, "delegate_task", json!({"brother": ["oppy", "nobdy"], "prompt": "hi"})).await;
    assert_eq!(r.is_error, Some(true), "{}", text(&r));
    let s = r.structured_content.clone().unwrap();
    assert_eq!(s["error"], "unknown_brother", "{s}");
    let message = s["message"].as_str().unwrap();
    assert!(message.contains("nobdy:") && message.contains("do not launch them again"), "{message}");
    assert_eq!(s["errors"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!((s["tasks"][0]["brother"].as_str(), s["tasks"][0]["status"].as_str()), (Some("oppy"), Some("launched")));
    let started = s["tasks"][0]["task"].as_i64().unwrap();
    assert!(text(&r).starts_with("error unknown_brother: "), "{}", text(&r));
    let listed = ok(&client, "list_tasks", json!({})).await;
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["tasks"][0]["id"], started, "{listed}");
    let (code, _) = err(&client, "delegate_task", json!({"brother": ["oppy", ""], "prompt": "hi"})).await;
    assert_eq!(code, "bad_arguments");
    let (code, _) = err(&client, "delegate_task", json!({"brother": [], "prompt": "hi"})).await;
    assert_eq!(code, "bad_arguments");

    let (code, message) =
        err(&client, "delegate_task", json!({"brother": "oppy", "prompt": "hi", "sandbox": "bogus"})).await;
    assert_eq!(code, "bad_arguments");
    assert!(message.contains("bogus") && message.contains("read") && message.contains("full"), "{message}");
    let (code, message) = err(&client, "delegate_task", json!({"brother": "oppy"})).await;
    assert_eq!(code, "bad_arguments");
    assert!(message.contains("prompt"), "{message}");
    let (code, message) = err(&client, "delegate_task", json!({"brother": "oppy", "prompt": "  \n"})).await;
    assert_eq!(code, "prompt_empty", "{message}");
    let (code, message) =
        err(&client, "delegate_task", json!({"brother": "oppy", "prompt": "x", "sandbax": "read"})).await;
    assert_eq!(code, "bad_arguments");
    assert!(message.contains("sandbax"), "a typo is named, not ignored: {message}");
    let (code, message) = err(&client, "delegate_task", json!({"brother": 7, "prompt": "x"})).await;
    assert_eq!(code, "bad_arguments");
    assert!(message.contains("brother"), "{message}");

    let (code, message) = err(&client, "get_task", json!({"id": 999})).await;
    assert_eq!(code, "task_not_found");
    assert!(message.contains("999") && message.contains("list_tasks"), "{message}");
    let (code, _) = err(&client, "get_task", json!({"id": "seven"})).await;
    assert_eq!(code, "bad_arguments");
    let (code, _) = err(&client, "wait_tasks", json!({"ids": []})).await;
    assert_eq!(code, "bad_arguments");
    let (code, _) = err(&client, "wait_tasks", json!({"ids": [999]})).await;
    assert_eq!(code, "task_not_found");
    let (code, message) = err(&client, "update_task", json!({"id": 1, "status": "bogus"})).await;
    assert_eq!(code, "bad_arguments");
    assert!(message.contains("completed"), "the valid states are listed: {message}");
    let (code, message) = err(&client, "list_tasks", json!({"status": "done"})).await;
    assert_eq!(code, "bad_arguments", "{message}");
    let (code, _) = err(&client, "send_message", json!({"id": 999, "text": "hello"})).await;
    assert_eq!(code, "task_not_found");

    // None of that hurt the server, and it sees inventory edits without a restart.
    assert_eq!(ok(&client, "list_brothers", json!({})).await["brothers"][0]["name"], "oppy");
    env.add_brother("twin", "h", &host, "self-test", "read");
    assert_eq!(ok(&client, "list_brothers", json!({})).await["brothers"][1]["name"], "twin");
    std::fs::write(&env.config, "[brothers.oops\n").unwrap();
    let (code, message) = err(&client, "list_brothers", json!({})).await;
    assert_eq!(code, "config");
    assert!(message.contains(&env.config.display().to_string()), "the file is named: {message}");
    client.cancel().await.expect("close the client");
}

/// One MCP server holds its connection between tool calls; a host key marked `@revoked`, or
/// replaced by another, in between refuses the next call on that connection
/// (`host_key_changed`, the CLI's exit 13) without anything running on the host.
#[tokio::test(flavor = "multi_thread")]
async fn mcp_refuses_its_held_connection_once_the_host_key_is_revoked_or_changed() {
    use crate::support::{connections, footprint};
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let trusted = format!("{}\n", host.known_hosts_line());
    let name = format!("[127.0.0.1]:{}", host.port());
    let (_, impostor) = delegate_testkit::keygen(&env.home, "impostor", "ed25519");
    let client = connect(&env).await;
    let cases = [
        ("revoked", format!("{trusted}@revoked {name} {}\n", host.host_public_key()), "is REVOKED"),
        ("changed", format!("{name} {impostor}\n"), "HOST KEY CHANGED"),
    ];
    for (case, edited, says) in cases {
        std::fs::write(&env.known_hosts, &trusted).unwrap();
        let first =
            ok(&client, "delegate_task", json!({"brother": "oppy", "prompt": "first\n@self-test sleep 30"})).await;
        assert_eq!(first["tasks"][0]["status"], "launched", "{case}: {first}");
        let (before, connected) = (footprint(&host), connections(&host));

        std::fs::write(&env.known_hosts, &edited).unwrap();
        let (code, message) = err(&client, "delegate_task", json!({"brother": "oppy", "prompt": "second"})).await;
        assert_eq!(code, "host_key_changed", "{case}: {message}");
        assert!(message.contains(says), "{case}: {message}");
        assert_eq!(footprint(&host), before, "{case}: something ran on the host");
        assert_eq!(connections(&host), connected, "{case}: refused on the held connection, not a new one");
    }
    client.cancel().await.expect("close the client");
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_delegate_task_takes_a_profile_and_refuses_settings_the_agent_cannot_take() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "write");
    env.config_append("[profiles.careful]\nsandbox = \"read\"\nmax_turns = 4\n");
    let client = connect(&env).await;

    let listed = ok(&client, "list_brothers", json!({})).await;
    assert_eq!(listed["profiles"]["careful"]["max_turns"], 4, "{listed}");
    let out = ok(&client, "delegate_task", json!({"brother": "oppy", "prompt": "look", "profile": "careful"})).await;
    let id = out["tasks"][0]["task"].as_i64().unwrap();
    assert_eq!((out["tasks"][0]["sandbox"].as_str(), out["tasks"][0]["max_turns"].as_i64()), (Some("read"), Some(4)));
    let task = ok(&client, "get_task", json!({"id": id})).await;
    assert_eq!(task["settings"]["sandbox"]["from"], "profile careful", "{task}");

    let (code, message) =
        err(&client, "delegate_task", json!({"brother": "oppy", "prompt": "x", "profile": "fast"})).await;
    assert_eq!(code, "unknown_profile");
    assert!(message.contains("careful"), "{message}");
    let (code, message) =
        err(&client, "delegate_task", json!({"brother": "oppy", "prompt": "x", "reasoning_effort": "high"})).await;
    assert_eq!(code, "setting_refused");
    assert!(message.contains("self-test cannot take --reasoning-effort"), "{message}");
    let (code, message) = err(
        &client,
        "delegate_task",
        json!({"brother": "oppy", "prompt": "x", "agent": "codex", "max_budget_usd": 3.0}),
    )
    .await;
    assert_eq!(code, "setting_refused");
    assert!(message.contains("no spend limit"), "{message}");
    let (code, message) =
        err(&client, "delegate_task", json!({"brother": "oppy", "prompt": "x", "reasoning_effort": "huge"})).await;
    assert_eq!(code, "bad_arguments");
    assert!(message.contains("xhigh"), "{message}");
    assert_eq!(ok(&client, "list_tasks", json!({})).await["tasks"].as_array().unwrap().len(), 1, "only the first");
    client.cancel().await.expect("close the client");
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_delegate_task_places_by_environment_and_takes_extra_args_with_the_same_refusals() {
    let (one, two) = (FakeHost::start(), FakeHost::start());
    let env = Env::new();
    env.add_host("h1", &one);
    env.add_host("h2", &two);
    env.add_brother("ann", "h1", &one, "self-test", "read");
    env.add_brother("bob", "h2", &two, "self-test", "read");
    env.config_append("[environments.dev]\nbrothers = [\"ann\", \"h2\"]\n");
    let client = connect(&env).await;

    let listed = ok(&client, "list_brothers", json!({})).await;
    assert_eq!(listed["environments"]["dev"]["brothers"], json!(["ann", "bob"]), "{listed}");
    assert_eq!(listed["environments"]["dev"]["members"], json!(["ann", "h2"]), "{listed}");

    // ann is busy: the environment places the task on bob, and says why.
    ok(&client, "delegate_task", json!({"brother": "ann", "prompt": "busy\n@self-test sleep 30"})).await;
    let out = ok(&client, "delegate_task", json!({"environment": "dev", "prompt": "look"})).await;
    assert_eq!(out["tasks"][0]["brother"], "bob", "{out}");
    assert_eq!(out["placement"], "placed on bob: 0 in flight, room; ann: 1 in flight, room", "{out}");
    let task = ok(&client, "get_task", json!({"id": out["tasks"][0]["task"]})).await;
    assert_eq!(task["settings"]["environment"]["value"], "dev", "{task}");
    let all = ok(&client, "delegate_task", json!({"environment": "dev", "all": true, "prompt": "everyone"})).await;
    assert_eq!(all["tasks"].as_array().unwrap().len(), 2, "{all}");

    for (args, code, needle) in [
        (json!({"environment": "prod", "prompt": "x"}), "unknown_environment", "dev"),
        (json!({"brother": "ann", "environment": "dev", "prompt": "x"}), "bad_arguments", "not both"),
        (json!({"prompt": "x"}), "bad_arguments", "environment"),
        (json!({"brother": "ann", "all": true, "prompt": "x"}), "bad_arguments", "give environment too"),
        (json!({"brother": "ann", "prompt": "x", "args": ["--x"]}), "setting_refused", "takes no extra arguments"),
    ] {
        let (c, message) = err(&client, "delegate_task", args.clone()).await;
        assert_eq!(c, code, "{args}: {message}");
        assert!(message.contains(needle), "{args}: {message}");
    }
    // The same refusal as --args-json for a flag delegate owns.
    let (c, message) = err(
        &client,
        "delegate_task",
        json!({"brother": "ann", "agent": "claude", "prompt": "x", "args": ["--permission-mode", "bypassPermissions"]}),
    )
    .await;
    assert_eq!(c, "setting_refused", "{message}");
    assert!(message.contains("--permission-mode is owned"), "{message}");
    client.cancel().await.expect("close the client");
}
