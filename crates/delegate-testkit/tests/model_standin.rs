//! The REAL `claude` and `codex` CLIs running whole agent sessions offline
//! against [`ModelStandIn`].
//!
//! Set `DELEGATE_TEST_AGENTS_BIN` to the directory holding both CLIs (e.g.
//! `/tmp/agents/node_modules/.bin`); without it every test prints a skip
//! reason and passes. As root, `claude` runs as [`ROOT_TEST_USER`] because it
//! refuses `bypassPermissions` for root. `DELEGATE_MODEL_LOG=1` logs every
//! HTTP exchange to stderr.
//!
//! ```text
//! DELEGATE_TEST_AGENTS_BIN=/tmp/agents/node_modules/.bin \
//!   cargo test -p delegate-testkit --test model_standin -- --nocapture
//! ```

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use delegate_testkit::ROOT_TEST_USER;
use delegate_testkit::model::{Api, ModelStandIn, Reply, Script};
use serde_json::Value;

/// Hard limit for one CLI run.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// System directories on the child's `PATH` (codex.js needs `node`).
const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The real CLIs (scripts/test.sh installs them); a skip with a reason outside CI.
fn agents_bin() -> Option<PathBuf> {
    delegate_testkit::brothers::real_agents_bin()
}

/// uid/gid to run `claude` as: [`ROOT_TEST_USER`] when we are root, else ourselves.
fn run_as() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = CString::new(ROOT_TEST_USER).unwrap();
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root needs the user {ROOT_TEST_USER}: useradd -m -s /bin/bash {ROOT_TEST_USER}; usermod -p '*' {ROOT_TEST_USER}"
    );
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// A scratch directory with `home/` and `work/`, owned by `owner`; removed on Drop.
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new(owner: Option<(u32, u32)>) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "dlgtk-model-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&root);
        for d in ["home", "work"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        if let Some((uid, gid)) = owner {
            for p in [root.clone(), root.join("home"), root.join("work")] {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
            }
        }
        Scratch { root }
    }
    fn home(&self) -> PathBuf {
        self.root.join("home")
    }
    fn work(&self) -> PathBuf {
        self.root.join("work")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("DELEGATE_TEST_KEEP").is_some() {
            eprintln!("kept {}", self.root.display());
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    /// stdout parsed as JSON lines (non-JSON lines are skipped).
    fn events(&self) -> Vec<Value> {
        self.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

/// Run `cmd` in its own process group with `stdin`; SIGKILL the group after [`RUN_TIMEOUT`].
fn run(mut cmd: Command, stdin: &str) -> Run {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pgid = child.id() as i32;
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.as_bytes().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > RUN_TIMEOUT {
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
            panic!("timed out after {RUN_TIMEOUT:?}: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Kill leftovers of the group (e.g. MCP or shell helpers) so the pipes close.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let elapsed = start.elapsed();
    writer.join().unwrap();
    let run = Run { status, stdout: out_t.join().unwrap(), stderr: err_t.join().unwrap(), elapsed };
    eprintln!("{:?} exited {} after {:.1?}", cmd.get_program(), run.status, run.elapsed);
    run
}

/// `claude -p ... <extra>` in `scratch`, env cleared, as [`ROOT_TEST_USER`] when root.
fn claude(bin: &Path, model: &ModelStandIn, scratch: &Scratch, owner: Option<(u32, u32)>, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin.join("claude"));
    cmd.args(["-p", "--output-format", "stream-json", "--verbose", "--max-turns", "5"])
        .args(["--permission-mode", "bypassPermissions"])
        .args(extra)
        .current_dir(scratch.work())
        .env_clear()
        .env("PATH", format!("{}:{SYSTEM_PATH}", bin.display()))
        .env("HOME", scratch.home())
        .envs(model.claude_env());
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid).env("USER", ROOT_TEST_USER);
    }
    cmd
}

fn of_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

fn dump(run: &Run, model: &ModelStandIn) -> String {
    let mut s =
        format!("status {}\n--- stdout\n{}\n--- stderr\n{}\n--- exchanges\n", run.status, run.stdout, run.stderr);
    for x in model.exchanges() {
        s.push_str(&format!("{} -> {}\n", x.request_line, x.status));
    }
    s
}

#[test]
fn claude_runs_a_tool_then_answers() {
    let Some(bin) = agents_bin() else { return };
    let model = ModelStandIn::start(Script::steps(vec![
        Reply::Shell("echo hi > out.txt".into()),
        Reply::Text("all done".into()),
    ]));
    let owner = run_as();
    let scratch = Scratch::new(owner);
    let run = run(claude(&bin, &model, &scratch, owner, &[]), "write hi to out.txt");
    let events = run.events();
    let ctx = dump(&run, &model);

    let init = events
        .iter()
        .find(|e| e["type"] == "system" && e["subtype"] == "init")
        .unwrap_or_else(|| panic!("no init\n{ctx}"));
    assert!(init["session_id"].is_string(), "{ctx}");
    let tool_use = of_type(&events, "assistant")
        .into_iter()
        .flat_map(|e| e["message"]["content"].as_array().cloned().unwrap_or_default())
        .find(|c| c["type"] == "tool_use")
        .unwrap_or_else(|| panic!("no tool_use\n{ctx}"));
    assert_eq!(tool_use["name"], "Bash", "{ctx}");
    assert!(
        of_type(&events, "user")
            .iter()
            .flat_map(|e| e["message"]["content"].as_array().cloned().unwrap_or_default())
            .any(|c| c["type"] == "tool_result"),
        "no tool_result\n{ctx}"
    );
    let result = of_type(&events, "result").pop().unwrap_or_else(|| panic!("no result\n{ctx}"));
    assert_eq!(result["subtype"], "success", "{ctx}");
    assert_eq!(result["is_error"], false, "{ctx}");
    assert_eq!(result["result"], "all done", "{ctx}");
    assert_eq!(fs::read_to_string(scratch.work().join("out.txt")).unwrap_or_default(), "hi\n", "{ctx}");

    let reqs = model.requests();
    assert!(reqs.iter().all(|r| r.api == Api::Anthropic));
    let second = reqs.iter().find(|r| r.assistant_turns == 1).unwrap_or_else(|| panic!("no second turn\n{ctx}"));
    let has_tool_result = second.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .any(|c| c["type"] == "tool_result" && c["tool_use_id"] == tool_use["id"]);
    assert!(has_tool_result, "second request lacks the tool_result\n{ctx}");
    assert!(second.contains("write hi to out.txt"), "{ctx}");
    eprintln!("claude: {} main requests, {} exchanges in {:.1?}", reqs.len(), model.exchanges().len(), run.elapsed);
}

#[test]
fn claude_runs_write_and_a_deferred_tool() {
    let Some(bin) = agents_bin() else { return };
    let model = ModelStandIn::start(Script::steps(vec![
        Reply::Tool { name: "Write".into(), input: serde_json::json!({"file_path": "w.txt", "content": "written\n"}) },
        Reply::Tool { name: "CronList".into(), input: serde_json::json!({}) },
        Reply::Text("listed".into()),
    ]));
    let owner = run_as();
    let scratch = Scratch::new(owner);
    let run = run(claude(&bin, &model, &scratch, owner, &[]), "write and list");
    let ctx = dump(&run, &model);
    let result = of_type(&run.events(), "result").pop().cloned().unwrap_or_else(|| panic!("no result\n{ctx}"));
    assert_eq!(result["result"], "listed", "{ctx}");
    assert!(result["total_cost_usd"].as_f64().unwrap_or(0.0) > 0.0, "Claude prices the reported usage\n{ctx}");
    assert_eq!(fs::read_to_string(scratch.work().join("w.txt")).unwrap_or_default(), "written\n", "{ctx}");
    let last = model.requests().pop().unwrap();
    assert_eq!(last.assistant_turns, 2, "{ctx}");
    // CronList is deferred (listed in init, not among the tools sent) and runs all the same.
    let results: Vec<Value> = last.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["type"] == "tool_result")
        .collect();
    assert_eq!(results.len(), 2, "{ctx}");
    assert!(results.iter().all(|r| r["is_error"] != true), "{results:?}\n{ctx}");
}

#[test]
fn claude_resume_sends_earlier_turns() {
    let Some(bin) = agents_bin() else { return };
    let model = ModelStandIn::start(first_then_second());
    let owner = run_as();
    let scratch = Scratch::new(owner);
    let first = run(claude(&bin, &model, &scratch, owner, &[]), "first question");
    let ctx = dump(&first, &model);
    let result = of_type(&first.events(), "result").pop().cloned().unwrap_or_else(|| panic!("no result\n{ctx}"));
    assert_eq!(result["result"], "first answer", "{ctx}");
    let session = result["session_id"].as_str().unwrap().to_string();

    let second = run(claude(&bin, &model, &scratch, owner, &["--resume", &session]), "second question");
    let ctx = dump(&second, &model);
    let result = of_type(&second.events(), "result").pop().cloned().unwrap_or_else(|| panic!("no result\n{ctx}"));
    assert_eq!(result["result"], "second answer", "{ctx}");
    assert_eq!(result["session_id"], session.as_str(), "{ctx}");
    let last = model.requests().pop().unwrap();
    assert!(last.assistant_turns > 0, "{ctx}");
    assert!(last.contains("first question") && last.contains("first answer"), "{ctx}");
}

/// `codex exec --json ... -C <work> <extra> -` with `~/.codex/config.toml` from the stand-in.
fn codex(bin: &Path, model: &ModelStandIn, scratch: &Scratch, extra: &[&str]) -> Command {
    let codex_home = scratch.home().join(".codex");
    fs::create_dir_all(&codex_home).unwrap();
    fs::write(codex_home.join("config.toml"), model.codex_config_toml()).unwrap();
    let mut cmd = Command::new(bin.join("codex"));
    cmd.args(["exec", "--json", "--sandbox", "danger-full-access", "--skip-git-repo-check", "-C"])
        .arg(scratch.work())
        .args(extra)
        .arg("-")
        .env_clear()
        .env("PATH", format!("{}:{SYSTEM_PATH}", bin.display()))
        .env("HOME", scratch.home());
    cmd
}

#[test]
fn codex_runs_a_command_then_answers() {
    let Some(bin) = agents_bin() else { return };
    let model = ModelStandIn::start(Script::steps(vec![
        Reply::Shell("echo hi > out.txt".into()),
        Reply::Text("all done".into()),
    ]));
    let scratch = Scratch::new(None);
    let run = run(codex(&bin, &model, &scratch, &[]), "write hi to out.txt");
    let events = run.events();
    let ctx = dump(&run, &model);

    assert!(run.status.success(), "{ctx}");
    assert!(events.iter().any(|e| e["type"] == "thread.started"), "{ctx}");
    let items: Vec<&Value> = of_type(&events, "item.completed").into_iter().map(|e| &e["item"]).collect();
    assert!(!items.iter().any(|i| i["type"] == "error"), "{ctx}");
    let cmd = items.iter().find(|i| i["type"] == "command_execution").unwrap_or_else(|| panic!("no command\n{ctx}"));
    assert_eq!(cmd["exit_code"], 0, "{ctx}");
    assert!(items.iter().any(|i| i["type"] == "agent_message" && i["text"] == "all done"), "{ctx}");
    assert!(events.iter().any(|e| e["type"] == "turn.completed"), "{ctx}");
    assert_eq!(fs::read_to_string(scratch.work().join("out.txt")).unwrap_or_default(), "hi\n", "{ctx}");

    let reqs = model.requests();
    assert_eq!(reqs.len(), 2, "{ctx}");
    assert!(reqs.iter().all(|r| r.api == Api::OpenAi && r.model == "gpt-5.5"));
    let outputs: Vec<&Value> =
        reqs[1].body["input"].as_array().unwrap().iter().filter(|i| i["type"] == "function_call_output").collect();
    assert!(outputs.iter().any(|o| o["output"].as_str().unwrap_or("").contains("exited with code 0")), "{ctx}");
    assert_eq!(model.exchanges().len(), 2, "no other HTTP traffic expected\n{ctx}");
    eprintln!("codex: {} main requests in {:.1?}", reqs.len(), run.elapsed);
}

#[test]
fn codex_applies_a_patch() {
    let Some(bin) = agents_bin() else { return };
    let patch = "*** Begin Patch\n*** Add File: p.txt\n+patched\n*** End Patch\n";
    let model = ModelStandIn::start(Script::steps(vec![
        Reply::Tool { name: "apply_patch".into(), input: Value::String(patch.into()) },
        Reply::Text("patched".into()),
    ]));
    let scratch = Scratch::new(None);
    let run = run(codex(&bin, &model, &scratch, &[]), "add p.txt");
    let ctx = dump(&run, &model);
    assert!(run.status.success(), "{ctx}");
    let items: Vec<Value> = of_type(&run.events(), "item.completed").into_iter().map(|e| e["item"].clone()).collect();
    assert!(items.iter().any(|i| i["type"] == "file_change" && i["status"] == "completed"), "{ctx}");
    assert_eq!(fs::read_to_string(scratch.work().join("p.txt")).unwrap_or_default(), "patched\n", "{ctx}");
}

#[test]
fn codex_resume_sends_earlier_turns() {
    let Some(bin) = agents_bin() else { return };
    let model = ModelStandIn::start(first_then_second());
    let scratch = Scratch::new(None);
    let first = run(codex(&bin, &model, &scratch, &[]), "first question");
    let ctx = dump(&first, &model);
    assert!(first.status.success(), "{ctx}");
    let thread = first.events().iter().find(|e| e["type"] == "thread.started").map(|e| e["thread_id"].clone());
    let thread = thread.and_then(|t| t.as_str().map(String::from)).unwrap_or_else(|| panic!("no thread id\n{ctx}"));

    let second = run(codex(&bin, &model, &scratch, &["resume", &thread]), "second question");
    let ctx = dump(&second, &model);
    assert!(second.status.success(), "{ctx}");
    let items: Vec<Value> =
        of_type(&second.events(), "item.completed").into_iter().map(|e| e["item"].clone()).collect();
    assert!(items.iter().any(|i| i["type"] == "agent_message" && i["text"] == "second answer"), "{ctx}");
    let last = model.requests().pop().unwrap();
    assert_eq!(last.assistant_turns, 1, "{ctx}");
    assert!(last.contains("first question") && last.contains("first answer"), "{ctx}");
}

#[test]
fn codex_reports_an_api_error() {
    let Some(bin) = agents_bin() else { return };
    let model = ModelStandIn::start(Script::steps(vec![Reply::HttpError(400, "boom from stand-in".into())]));
    let scratch = Scratch::new(None);
    let run = run(codex(&bin, &model, &scratch, &[]), "hello");
    let ctx = dump(&run, &model);
    assert_eq!(run.status.code(), Some(1), "{ctx}");
    let failed =
        of_type(&run.events(), "turn.failed").pop().cloned().unwrap_or_else(|| panic!("no turn.failed\n{ctx}"));
    assert!(failed["error"]["message"].as_str().unwrap_or("").contains("boom from stand-in"), "{ctx}");
    assert_eq!(model.exchanges().len(), 1, "request_max_retries = 0 should stop retries\n{ctx}");
}

#[test]
fn claude_reports_an_api_error() {
    let Some(bin) = agents_bin() else { return };
    let model = ModelStandIn::start(Script::steps(vec![Reply::HttpError(500, "boom from stand-in".into())]));
    let owner = run_as();
    let scratch = Scratch::new(owner);
    let run = run(claude(&bin, &model, &scratch, owner, &[]), "hello");
    let ctx = dump(&run, &model);
    let result = of_type(&run.events(), "result").pop().cloned().unwrap_or_else(|| panic!("no result\n{ctx}"));
    assert_eq!(result["is_error"], true, "{ctx}");
    assert_eq!(result["api_error_status"], 500, "{ctx}");
    assert!(result["result"].as_str().unwrap_or("").starts_with("API Error: 500 boom from stand-in"), "{ctx}");
    assert_eq!(model.exchanges().len(), 1, "CLAUDE_CODE_MAX_RETRIES=0 should stop retries\n{ctx}");
}

// ---------------------------------------------------------------------------
// The HTTP layer, with a raw socket (no CLI needed).

/// Send raw `request` bytes and read one response (headers + Content-Length body).
fn exchange(conn: &mut std::net::TcpStream, request: &[u8]) -> (u16, String) {
    conn.write_all(request).unwrap();
    let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
    let mut status_line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut status_line).unwrap();
    let status: u16 = status_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut len = 0;
    loop {
        let mut h = String::new();
        std::io::BufRead::read_line(&mut reader, &mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn http_keep_alive_chunked_and_routes() {
    let model = ModelStandIn::start(Script::steps(vec![Reply::Shell("ls".into()), Reply::Text("done".into())]));
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", model.port())).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    // Anthropic, streaming, Content-Length body: a Bash tool_use.
    let body = r#"{"model":"m","stream":true,"tools":[{"name":"Bash"}],"messages":[{"role":"user","content":"go"}]}"#;
    let (status, sse) = exchange(&mut conn, &post("/v1/messages?beta=true", body));
    assert_eq!(status, 200);
    for needle in [
        "event: message_start",
        "\"name\":\"Bash\"",
        "input_json_delta",
        "\"stop_reason\":\"tool_use\"",
        "event: message_stop",
    ] {
        assert!(sse.contains(needle), "{needle} missing in {sse}");
    }

    // Same connection, chunked body, non-streaming, one assistant turn already: the text reply.
    let body = r#"{"model":"m","tools":[{"name":"Bash"}],"messages":[{"role":"user","content":"go"},{"role":"assistant","content":"x"},{"role":"user","content":"more"}]}"#;
    let (a, b) = body.split_at(20);
    let chunked = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let (status, json) = exchange(&mut conn, chunked.as_bytes());
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["content"][0]["text"], "done");
    assert_eq!(v["stop_reason"], "end_turn");

    // Auxiliary request (no tools): short text, not shown to the script.
    let (status, json) = exchange(
        &mut conn,
        &post("/v1/messages", r#"{"model":"haiku","messages":[{"role":"user","content":"title?"}]}"#),
    );
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap()["content"][0]["text"], "ok");

    let (status, json) = exchange(
        &mut conn,
        &post("/v1/messages/count_tokens", r#"{"messages":[{"role":"user","content":"hello world"}]}"#),
    );
    assert_eq!(status, 200);
    assert!(serde_json::from_str::<Value>(&json).unwrap()["input_tokens"].as_u64().unwrap() > 0);

    // OpenAI Responses: the shell tool offered decides the call shape.
    let body = r#"{"model":"g","stream":true,"tools":[{"type":"function","name":"exec_command"}],"input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"go"}]}]}"#;
    let (status, sse) = exchange(&mut conn, &post("/v1/responses", body));
    assert_eq!(status, 200);
    assert!(sse.contains("response.output_item.done") && sse.contains("response.completed"), "{sse}");
    assert!(sse.contains(r#"\"cmd\":\"ls\""#), "{sse}");

    // WebSocket upgrade and unknown paths: 404 with a JSON error.
    let ws = "GET /v1/responses HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let (status, json) = exchange(&mut conn, ws.as_bytes());
    assert_eq!(status, 404);
    assert!(serde_json::from_str::<Value>(&json).unwrap()["error"]["message"].is_string());
    assert_eq!(exchange(&mut conn, &post("/v1/nope", "{}")).0, 404);

    let seen = model.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!((seen[0].api, seen[0].assistant_turns), (Api::Anthropic, 0));
    assert_eq!((seen[1].assistant_turns, seen[1].text.contains("more")), (1, true));
    assert_eq!(seen[2].api, Api::OpenAi);
    assert_eq!(model.all_requests().len(), 4);
    assert_eq!(model.exchanges().len(), 7);
}

#[test]
fn http_errors_in_each_api_shape() {
    let model = ModelStandIn::start(Script::steps(vec![Reply::HttpError(529, "overloaded".into())]));
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", model.port())).unwrap();
    let (status, json) = exchange(&mut conn, &post("/v1/messages", r#"{"tools":[{"name":"Bash"}],"messages":[]}"#));
    assert_eq!(status, 529);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some("overloaded_error")));
    let (status, json) = exchange(&mut conn, &post("/v1/responses", r#"{"tools":[{"name":"x"}],"input":[]}"#));
    assert_eq!(status, 529);
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap()["error"]["message"], "overloaded");
}

#[test]
fn drop_stops_the_server_with_open_connections() {
    let model = ModelStandIn::start(Script::text("x"));
    let port = model.port();
    let _idle = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut half = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    half.write_all(b"POST /v1/messages HTTP/1.1\r\nContent-Length: 10\r\n\r\n{").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    drop(model);
    assert!(start.elapsed() < Duration::from_secs(1), "drop took {:?}", start.elapsed());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// Answers "second answer" once the conversation holds the second question, else "first answer".
fn first_then_second() -> Script {
    Script::new(|req| {
        if req.contains("second question") {
            Reply::Text("second answer".into())
        } else {
            Reply::Text("first answer".into())
        }
    })
}
