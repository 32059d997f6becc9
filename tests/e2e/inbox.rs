//! Needs you: `delegate inbox` lists the questions agents asked (report-helper questions,
//! tasks waiting for input, Claude's permission denials) across brothers, and `delegate
//! answer` reaches the agent: said while it runs, resuming it once it has stopped. The
//! answered question leaves the inbox; the answer is in the thread with its author.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use delegate_testkit::FakeHost;
use delegate_testkit::brothers::Install;
use delegate_testkit::model::{Reply, Script};
use serde_json::{Value, json};

use crate::real_agents::{brother, report, show, show_until, wait_for};
use crate::support::{Env, install_agent, launch, wait_done, wait_for_file};

/// A Claude stand-in that asks through the report helper (a hostile question full of escape
/// sequences and markup, unless its prompt says `only-wait`), says it waits for input, then
/// runs a tool call every 200 ms until its hook hands it a message, which it keeps.
const ASKING_AGENT: &str = r#"#!/bin/bash
prompt=$(cat)
echo '{"type":"system","subtype":"init","session_id":"s","claude_code_version":"2.1.329"}'
if [[ $prompt != *only-wait* ]]; then
  "$DELEGATE_TASK_DIR/report" question "$(printf 'which db?\e]52;c;SGVsbG8=\a\e[31m <b>bold</b>')"
fi
"$DELEGATE_TASK_DIR/report" status needs_input "waiting for a decision"
for i in $(seq 150); do
  out=$(printf '%s' '{"hook_event_name":"PostToolUse","tool_name":"Read","tool_input":{"file_path":"a.txt"}}' | bash "$DELEGATE_TASK_DIR/hook" PostToolUse)
  if [ -n "$out" ]; then printf '%s\n' "$out" >> "$DELEGATE_TASK_DIR/context-seen.jsonl"; break; fi
  sleep 0.2
done
echo '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"done","session_id":"s"}'
"#;

/// What the asking agent's hook handed it: its line in `context-seen.jsonl`, once whole (the
/// agent's `>>` makes the file before it writes the line).
fn context_seen(dir: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = String::from_utf8(wait_for_file(&dir.join("context-seen.jsonl"))).unwrap();
        if seen.ends_with('\n') || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn inbox(env: &Env) -> Vec<Value> {
    env.run(&["inbox", "--json"]).ok().json()["questions"].as_array().unwrap().clone()
}

/// Polls the inbox until task `id` has an entry.
fn inbox_until(env: &Env, id: i64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let q = inbox(env);
        if q.iter().any(|q| q["task"] == id) {
            return q;
        }
        assert!(Instant::now() < deadline, "task {id} never reached the inbox: {q:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn answer_notes(t: &Value) -> Vec<(String, String)> {
    t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "note" && m["kind"] == "answer")
        .map(|m| (m["author"].as_str().unwrap().to_string(), m["text"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn a_question_is_listed_sanitized_and_an_answer_reaches_the_running_agent_once() {
    let host = FakeHost::start();
    install_agent(&host, "claude", ASKING_AGENT);
    let env = Env::with_brother(&host, "claude", "read");
    let id = launch(&env, &["oppy", "pick a database", "--json"]);

    let questions = inbox_until(&env, id);
    // One entry: the question says more than the needs_input state, which is not listed twice.
    let mine: Vec<&Value> = questions.iter().filter(|q| q["task"] == id).collect();
    assert_eq!(mine.len(), 1, "{questions:?}");
    let q = mine[0];
    assert_eq!((q["kind"].as_str(), q["brother"].as_str()), (Some("question"), Some("oppy")), "{q}");
    let text = q["question"].as_str().unwrap();
    assert!(text.starts_with("which db?") && text.contains("<b>bold</b>"), "{q}");
    assert!(!text.contains('\u{1b}') && !text.contains('\u{7}'), "escape sequences survived: {q:?}");
    assert!(q["age_secs"].as_u64().is_some() && q["asked_at"].as_str().is_some(), "{q}");
    // The terminal listing carries no escape sequence either, and says how to answer.
    let listed = env.run(&["inbox", "--no-sync"]).ok().stdout();
    assert!(listed.contains("which db?") && !listed.contains('\u{1b}'), "{listed:?}");
    assert!(listed.contains("delegate answer"), "{listed}");
    // A brother filter that matches nothing.
    assert_eq!(env.run(&["inbox", "--json", "--brother", "nobody"]).ok().json()["questions"], json!([]));

    // Bad answers are refused with nothing recorded.
    env.run(&["answer", "9999", "x"]).fails_with(6);
    env.run(&["answer", &id.to_string(), ""]).fails_with(5);

    let answered = env.run(&["answer", &id.to_string(), "use postgres 16", "--as", "lead-7", "--json"]).ok().json();
    assert_eq!((answered["delivery"].as_str(), answered["answered"].as_u64()), (Some("said"), Some(1)), "{answered}");
    // The answered question left the inbox at once.
    assert!(!inbox(&env).iter().any(|q| q["task"] == id), "still listed after the answer");
    // The agent got it through its hook, once.
    let dir = crate::support::remote_dir(&env, id);
    let seen = context_seen(&dir);
    assert!(seen.contains("use postgres 16"), "{seen}");
    assert_eq!(wait_done(&env, id)["status"], "completed");
    let t = show(&env, id);
    assert_eq!(answer_notes(&t), [("lead-7".to_string(), "use postgres 16".to_string())], "{t}");
    // Nothing is open any more: a second answer is refused (exit 39) and records nothing.
    let again = env.run(&["answer", &id.to_string(), "again", "--json"]).fails_with(39);
    assert!(again.stderr().contains("delegate inbox"), "{again}");
    assert_eq!(answer_notes(&show(&env, id)).len(), 1);
}

#[test]
fn a_task_waiting_for_input_is_in_the_inbox_and_answered_over_mcp() {
    let host = FakeHost::start();
    install_agent(&host, "claude", ASKING_AGENT);
    let env = Env::with_brother(&host, "claude", "read");
    let id = launch(&env, &["oppy", "only-wait for me", "--json"]);
    let questions = inbox_until(&env, id);
    let q = questions.iter().find(|q| q["task"] == id).unwrap();
    assert_eq!(q["kind"], "needs_input", "{q}");
    assert!(q["question"].as_str().unwrap().contains("waiting for input"), "{q}");

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = crate::mcp::connect(&env).await;
        let listed = crate::mcp::ok(&client, "inbox", json!({})).await;
        assert!(listed["questions"].as_array().unwrap().iter().any(|q| q["task"] == id), "{listed}");
        let answered = crate::mcp::ok(&client, "answer", json!({"id": id, "text": "go on with sqlite"})).await;
        assert_eq!(answered["delivery"], "said", "{answered}");
        assert_eq!(answered["author"], "e2e-lead", "{answered}");
        let listed = crate::mcp::ok(&client, "inbox", json!({})).await;
        assert!(!listed["questions"].as_array().unwrap().iter().any(|q| q["task"] == id), "{listed}");
        let (code, message) = crate::mcp::err(&client, "answer", json!({"id": id, "text": "more"})).await;
        assert_eq!(code, "nothing_to_answer", "{message}");
        client.cancel().await.ok();
    });
    let dir = crate::support::remote_dir(&env, id);
    let seen = context_seen(&dir);
    assert!(seen.contains("go on with sqlite"), "{seen}");
    wait_done(&env, id);
}

#[test]
fn a_task_that_asked_nothing_has_nothing_to_answer() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = launch(&env, &["oppy", "just work", "--json"]);
    assert_eq!(wait_done(&env, id)["status"], "completed");
    assert!(!inbox(&env).iter().any(|q| q["task"] == id));
    let refused = env.run(&["answer", &id.to_string(), "an answer nobody asked for"]).fails_with(39);
    assert!(refused.stderr().contains("no open question"), "{refused}");
    assert!(answer_notes(&show(&env, id)).is_empty(), "a refused answer recorded a note");
}

/// The real Claude Code asks through the report helper and waits (a tool call at a time);
/// the answer reaches the model through its hook.
#[test]
fn claude_asks_a_question_and_the_answer_reaches_the_model_mid_run() {
    let answered = Arc::new(AtomicBool::new(false));
    let gate = answered.clone();
    let script = Script::new(move |req| {
        if req.contains("use postgres 16") {
            return Reply::Text("done, on postgres".into());
        }
        if req.assistant_turns == 0 {
            return report(req, "question", "which database should I use?");
        }
        wait_for(&gate);
        Reply::Shell("true".into())
    });
    let Some(b) = brother(Install::NpmUserPrefix, "claude", "write", script) else { return };
    let id = launch(&b.env, &["oppy", "set up storage", "--max-turns", "30", "--json"]);
    let q = inbox_until(&b.env, id);
    let q = q.iter().find(|q| q["task"] == id).unwrap();
    assert_eq!((q["kind"].as_str(), q["question"].as_str()), (Some("question"), Some("which database should I use?")));
    let out = b.env.run(&["answer", &id.to_string(), "use postgres 16", "--json"]).ok().json();
    answered.store(true, Ordering::SeqCst);
    assert_eq!(out["delivery"], "said", "{out}");
    assert_eq!(wait_done(&b.env, id)["status"], "completed");
    assert!(b.model.requests().iter().any(|r| r.contains("use postgres 16")), "the model never saw the answer");
    assert!(!inbox(&b.env).iter().any(|q| q["task"] == id));
}

/// Claude asked and ended its turn (as `-p` does); the answer resumes its session, and the
/// resumed request carries both the question and the answer.
#[test]
fn claude_that_stopped_after_asking_is_resumed_with_the_answer() {
    let script = Script::new(|req| {
        if req.contains("use postgres 16") {
            assert!(req.contains("which database"), "the resumed session lost the question");
            return Reply::Text("set up on postgres".into());
        }
        match req.assistant_turns {
            0 => report(req, "question", "which database should I use?"),
            _ => Reply::Text("waiting for the lead's decision".into()),
        }
    });
    let Some(b) = brother(Install::NpmUserPrefix, "claude", "write", script) else { return };
    let id = launch(&b.env, &["oppy", "set up storage", "--json"]);
    assert_eq!(wait_done(&b.env, id)["status"], "completed");
    let q = inbox(&b.env);
    assert!(q.iter().any(|q| q["task"] == id && q["kind"] == "question"), "{q:?}");
    let out = b.env.run(&["answer", &id.to_string(), "use postgres 16", "--as", "ian", "--json"]).ok().json();
    assert_eq!((out["delivery"].as_str(), out["run"].as_i64()), (Some("reopened"), Some(2)), "{out}");
    assert!(!inbox(&b.env).iter().any(|q| q["task"] == id), "still listed after the answer");
    let t = show_until(&b.env, id, "the answer's run completed", |t| {
        t["runs"].as_array().unwrap().len() == 2 && t["status"] == "completed"
    });
    assert!(t.to_string().contains("set up on postgres"), "{t}");
    assert_eq!(answer_notes(&t), [("ian".to_string(), "use postgres 16".to_string())]);
}

/// Claude Code at `write` refuses a command it cannot check; the denial waits in the inbox
/// until answered (which resumes the agent).
#[test]
fn claudes_permission_denials_wait_in_the_inbox() {
    let script = Script::new(|req| {
        if req.contains("report with the absolute path") {
            return Reply::Text("ok, reported".into());
        }
        match req.assistant_turns {
            0 => Reply::Shell("\"$DELEGATE_TASK_DIR/report\" receipt \"on it\"".into()),
            _ => Reply::Text("could not report".into()),
        }
    });
    let Some(b) = brother(Install::NpmUserPrefix, "claude", "write", script) else { return };
    let id = launch(&b.env, &["oppy", "try", "--json"]);
    wait_done(&b.env, id);
    let q = inbox(&b.env);
    let q = q.iter().find(|q| q["task"] == id).unwrap_or_else(|| panic!("no denial listed: {q:?}"));
    assert_eq!(q["kind"], "permission_denial", "{q}");
    assert!(q["question"].as_str().unwrap().contains("Bash"), "{q}");
    let out = b.env.run(&["answer", &id.to_string(), "report with the absolute path", "--json"]).ok().json();
    assert_eq!(out["delivery"], "reopened", "{out}");
    show_until(&b.env, id, "the answer's run ended", |t| {
        t["runs"].as_array().unwrap().len() == 2 && t["status"] == "completed"
    });
    assert!(!inbox(&b.env).iter().any(|q| q["task"] == id));
}
