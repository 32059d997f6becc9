//! `delegate board --serve` driven in a real headless Chromium (tests/e2e/cdp.rs): the page
//! loads, shows a task the CLI launched and follows it to the end through the server's own
//! sync, opens its thread and output with the agent's markup kept as text, moves a card by
//! drag (and shows a conflict when the version is stale), and an answer typed in the
//! needs-you lane reaches the agent. Requests without the token, or naming another host, get
//! nothing. Screenshots go under target/tmp/board-page/ (each path is printed).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use delegate_testkit::FakeHost;
use serde_json::Value;

use crate::cdp::{Browser, chromium};
use crate::support::{Env, install_agent, launch, remote_dir, wait_done, wait_for_file};

/// A Claude stand-in: with `ask-me` in its prompt it asks through the report helper and
/// waits (a tool call every 200 ms) until its hook hands it the answer; otherwise it reports
/// progress and works for 4 s. Either way its output and reports carry markup that would
/// run if the page ever treated them as HTML.
const PAGE_AGENT: &str = r#"#!/bin/bash
prompt=$(cat)
echo '{"type":"system","subtype":"init","session_id":"s","claude_code_version":"2.1.329"}'
if [[ $prompt == *ask-me* ]]; then
  "$DELEGATE_TASK_DIR/report" question 'which region: <b>eu</b> or us?'
  "$DELEGATE_TASK_DIR/report" status needs_input
  for i in $(seq 300); do
    out=$(printf '%s' '{"hook_event_name":"PostToolUse","tool_name":"Read","tool_input":{"file_path":"a.txt"}}' | bash "$DELEGATE_TASK_DIR/hook" PostToolUse)
    if [ -n "$out" ]; then printf '%s\n' "$out" >> "$DELEGATE_TASK_DIR/context-seen.jsonl"; break; fi
    sleep 0.2
  done
else
  "$DELEGATE_TASK_DIR/report" progress '<script>window.__xss=3</script>half way'
  sleep 4
fi
printf '%s\n' '{"type":"result","subtype":"success","is_error":false,"num_turns":3,"total_cost_usd":0.42,"result":"<script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\"> all done","session_id":"s"}'
"#;

/// `delegate board --serve` as a child process, stopped when dropped.
struct BoardServer {
    child: Child,
    url: String,
    port: u16,
    token: String,
}

impl BoardServer {
    fn start(env: &Env, args: &[&str]) -> BoardServer {
        let mut child = env
            .command()
            .args(["board", "--serve", "--as", "page-lead"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("the server printed its URL").unwrap();
        let url = first.strip_prefix("board page: ").unwrap_or_else(|| panic!("not a URL line: {first}")).to_string();
        std::thread::spawn(move || for _ in lines {});
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let port: u16 = url["http://127.0.0.1:".len()..].split('/').next().unwrap().parse().unwrap();
        let token = url.split("token=").nth(1).unwrap().to_string();
        assert!(token.len() >= 32, "a short token: {token}");
        BoardServer { child, url, port, token }
    }
}

impl Drop for BoardServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One raw HTTP request; returns the status and body.
fn request(port: u16, method: &str, target: &str, host: &str, extra: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: {}\r\n\r\n{body}", body.len())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn card(env: &Env, id: i64) -> Value {
    let board = env.run(&["board", "--json", "--no-sync"]).ok().json();
    board["columns"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["cards"].as_array().unwrap().clone())
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("task {id} not on the board: {board}"))
}

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("board-page");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn in_column(column: &str, id: i64) -> String {
    format!("!!document.querySelector('[data-column=\"{column}\"] .card[data-task=\"{id}\"]')")
}

/// The DOM events a drag of card `id` onto `column` fires, carrying what the page's own
/// dragstart handler put in the DataTransfer (or, with `version`, a drop of that version).
fn drag(b: &mut Browser, id: i64, column: &str, version: Option<i64>) {
    let start = match version {
        None => format!(
            "document.querySelector('.card[data-task=\"{id}\"]').dispatchEvent(new DragEvent('dragstart', {{bubbles: true, dataTransfer: dt}}));"
        ),
        Some(v) => format!("dt.setData('text/plain', JSON.stringify({{id: {id}, version: {v}}}));"),
    };
    let js = format!(
        "(() => {{ const dt = new DataTransfer(); {start}
           const col = document.querySelector('[data-column=\"{column}\"]');
           col.dispatchEvent(new DragEvent('dragover', {{bubbles: true, cancelable: true, dataTransfer: dt}}));
           col.dispatchEvent(new DragEvent('drop', {{bubbles: true, cancelable: true, dataTransfer: dt}}));
           return true; }})()"
    );
    assert_eq!(b.eval(&js), Value::Bool(true));
}

#[test]
fn requests_without_the_token_or_from_another_host_get_nothing() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = launch(&env, &["oppy", "work", "--json"]);
    wait_done(&env, id);
    let before = card(&env, id);
    let server = BoardServer::start(&env, &[]);
    let (port, token) = (server.port, server.token.clone());
    let here = format!("127.0.0.1:{port}");
    for target in ["/", "/?token=", "/?token=wrong", "/api/board", &format!("/api/task/{id}"), "/api/board?token=x"] {
        let (status, body) = request(port, "GET", target, &here, "", "");
        assert_eq!(status, 403, "{target}: {body}");
        assert!(!body.contains("oppy") && !body.contains("<html"), "{target} leaked: {body}");
    }
    // A token one character off is as wrong as none.
    let mut near = token.clone().into_bytes();
    near[0] = if near[0] == b'a' { b'b' } else { b'a' };
    let near = String::from_utf8(near).unwrap();
    assert_eq!(request(port, "GET", &format!("/api/board?token={near}"), &here, "", "").0, 403);
    // A page elsewhere that rebinds its name to 127.0.0.1 gets nothing even with the token.
    let (status, _) = request(port, "GET", &format!("/?token={token}"), &format!("evil.example:{port}"), "", "");
    assert_eq!(status, 421);
    // Writes must be JSON from this origin.
    let mv = format!(r#"{{"id":{id},"column":"done","version":1}}"#);
    let path = format!("/api/move?token={token}");
    assert_eq!(request(port, "POST", &path, &here, "Content-Type: text/plain\r\n", &mv).0, 403);
    let foreign = "Content-Type: application/json\r\nOrigin: http://evil.example\r\n";
    assert_eq!(request(port, "POST", &path, &here, foreign, &mv).0, 403);
    // Bounded: a body over the cap is refused before it is read.
    let (status, _) = request(port, "POST", &path, &here, "Content-Type: application/json\r\n", &"x".repeat(70_000));
    assert_eq!(status, 413);
    // With the token: the page, and the API.
    let (status, page) = request(port, "GET", &format!("/?token={token}"), &here, "", "");
    assert!(status == 200 && page.contains("delegate board"), "{status}");
    let (status, board) = request(port, "GET", &format!("/api/board?token={token}"), &here, "", "");
    assert_eq!(status, 200, "{board}");
    assert!(board.contains("\"identity\":\"page-lead\""), "{board}");
    // None of the refused writes moved the finished task.
    let after = card(&env, id);
    assert_eq!((&after["column"], &after["version"]), (&before["column"], &before["version"]), "{after}");
    assert_eq!(after["column"], "review");
}

#[test]
fn a_port_in_use_is_exit_40_naming_the_fix() {
    let env = Env::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let run = env.run(&["board", "--serve", "--port", &port]).fails_with(40);
    assert!(run.stderr().contains("--port"), "{run}");
}

#[test]
fn the_board_page_in_a_real_browser_follows_moves_and_answers() {
    let Some(chromium) = chromium() else { return };
    let host = FakeHost::start();
    install_agent(&host, "claude", PAGE_AGENT);
    let env = Env::with_brother(&host, "claude", "read");
    let server = BoardServer::start(&env, &[]);
    let shots = shots();
    let mut b = Browser::open(&chromium, &server.url, env.home.join("chromium-profile"));
    b.wait_until("its columns", "document.querySelectorAll('[data-column]').length === 6", Duration::from_secs(30));
    assert_eq!(b.eval("document.getElementById('identity').textContent"), "as page-lead");

    // A task launched by the CLI appears on the open page, and follows its state to review.
    let id = launch(&env, &["oppy", "render the <i>report</i>", "--json"]);
    b.wait_until(
        "the new card",
        &format!("{} || {}", in_column("in_progress", id), in_column("review", id)),
        Duration::from_secs(30),
    );
    b.screenshot(&shots.join("1-launched.png"));
    b.wait_until("the finished card in review", &in_column("review", id), Duration::from_secs(60));
    let shown = b.eval(&format!("document.querySelector('.card[data-task=\"{id}\"]').textContent"));
    assert!(shown.as_str().unwrap().contains("3 turns") && shown.as_str().unwrap().contains("$0.42"), "{shown}");

    // Its panel: the agent's output and thread, markup kept as text and never run.
    b.click(&format!(".card[data-task=\"{id}\"]"));
    b.wait_until(
        "the agent's output as text",
        "document.getElementById('panel-output').textContent.includes('<script>window.__xss=1</script><img src=x')",
        Duration::from_secs(30),
    );
    b.wait_until(
        "the progress report as text",
        "document.getElementById('panel-thread').textContent.includes('<script>window.__xss=3</script>half way')",
        Duration::from_secs(30),
    );
    assert_eq!(b.eval("typeof window.__xss"), "undefined", "the agent's markup ran");
    assert_eq!(b.eval("document.querySelectorAll('script').length"), 1, "a script element was injected");
    assert_eq!(b.eval("document.querySelectorAll('img, i, b').length"), 0, "markup from the task became elements");
    b.screenshot(&shots.join("2-output.png"));
    b.click("#close");

    // Drag from review to done: the same optimistic lock as `move`, by the page's identity.
    let before = card(&env, id)["version"].as_i64().unwrap();
    drag(&mut b, id, "done", None);
    b.wait_until("the card in done", &in_column("done", id), Duration::from_secs(30));
    b.wait_until(
        "the move confirmed",
        "document.getElementById('message').textContent.includes('moved to Done')",
        Duration::from_secs(30),
    );
    let moved = card(&env, id);
    assert_eq!((moved["column"].as_str(), moved["version"].as_i64()), (Some("done"), Some(before + 1)), "{moved}");
    let t = env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json();
    let note = t["messages"].as_array().unwrap().iter().find(|m| m["kind"] == "move").cloned().unwrap();
    assert_eq!(
        (note["author"].as_str(), note["text"].as_str()),
        (Some("page-lead"), Some("moved from review to done"))
    );

    // Somebody else moves it back; a drop carrying the version the page had read is a
    // conflict, said on the page, and changes nothing.
    env.run(&["move", &id.to_string(), "review", "--version", &(before + 1).to_string()]).ok();
    drag(&mut b, id, "done", Some(before + 1));
    b.wait_until(
        "the conflict",
        "document.getElementById('message').textContent.startsWith('Conflict:')",
        Duration::from_secs(30),
    );
    let message = b.eval("document.getElementById('message').textContent");
    assert!(message.as_str().unwrap().contains("Re-read"), "{message}");
    assert_eq!(card(&env, id)["column"], "review");
    b.wait_until("the board put back", &in_column("review", id), Duration::from_secs(30));
    b.screenshot(&shots.join("3-conflict.png"));

    // An agent asks; the needs-you lane has an answer box; the answer reaches the agent.
    let ask = launch(&env, &["oppy", "ask-me about the region", "--json"]);
    let question = format!("[data-column=\"needs_you\"] [data-question-task=\"{ask}\"]");
    b.wait_until("the question", &format!("!!document.querySelector('{question}')"), Duration::from_secs(60));
    let text = b.eval(&format!("document.querySelector('{question} .text').textContent"));
    assert_eq!(text, "which region: <b>eu</b> or us?");
    b.screenshot(&shots.join("4-question.png"));
    b.click(&format!("{question} .answer-text"));
    b.type_text("use eu-west-1");
    b.click(&format!("{question} .answer-send"));
    b.wait_until(
        "the answer confirmed",
        "document.getElementById('message').textContent.startsWith('Answered task')",
        Duration::from_secs(60),
    );
    let seen = String::from_utf8(wait_for_file(&remote_dir(&env, ask).join("context-seen.jsonl"))).unwrap();
    assert!(seen.contains("use eu-west-1"), "{seen}");
    b.wait_until("the question gone", &format!("!document.querySelector('{question}')"), Duration::from_secs(30));
    b.screenshot(&shots.join("5-answered.png"));
    let t = env.run(&["show", &ask.to_string(), "--json", "--no-sync"]).ok().json();
    let answer = t["messages"].as_array().unwrap().iter().find(|m| m["kind"] == "answer").cloned().unwrap();
    assert_eq!((answer["author"].as_str(), answer["text"].as_str()), (Some("page-lead"), Some("use eu-west-1")));
    assert_eq!(wait_done(&env, ask)["status"], "completed");
}
