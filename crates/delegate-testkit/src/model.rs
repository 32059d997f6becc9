//! [`ModelStandIn`]: a local HTTP server that speaks enough of the Anthropic
//! Messages API and the OpenAI Responses API for the REAL `claude` (Claude
//! Code 2.1.329) and `codex` (0.169.0) CLIs to run whole agent sessions
//! offline against it: real tools, real sandboxes, real hooks, real session
//! files, scripted model.
//!
//! ```no_run
//! use std::process::Command;
//! use delegate_testkit::model::{ModelStandIn, Reply, Script};
//!
//! let model = ModelStandIn::start(Script::steps(vec![
//!     Reply::Shell("echo hi > out.txt".into()), // turn 0: run a command
//!     Reply::Text("all done".into()),           // turn 1 and later: answer
//! ]));
//! // Claude Code: environment only.
//! let mut claude = Command::new("claude");
//! claude.args(["-p", "--output-format", "stream-json", "--verbose"]).env_clear()
//!     .env("PATH", "/usr/bin:/bin").env("HOME", "/tmp/h").envs(model.claude_env());
//! // Codex: write `model.codex_config_toml()` to `$HOME/.codex/config.toml`.
//! std::fs::write("/tmp/h/.codex/config.toml", model.codex_config_toml()).unwrap();
//! // ... run them, then:
//! let turns = model.requests();
//! assert!(turns[1].text.contains("hi"));
//! ```
//!
//! # API
//!
//! - [`ModelStandIn::start`]`(`[`Script`]`)` binds `127.0.0.1:0` and serves
//!   until dropped; [`port`](ModelStandIn::port),
//!   [`anthropic_base_url`](ModelStandIn::anthropic_base_url) (`http://127.0.0.1:PORT`),
//!   [`openai_base_url`](ModelStandIn::openai_base_url) (`…/v1`),
//!   [`claude_env`](ModelStandIn::claude_env),
//!   [`codex_config_toml`](ModelStandIn::codex_config_toml).
//! - [`requests`](ModelStandIn::requests): every main (agent-loop) request as a
//!   [`SeenRequest`] (api, model, full JSON body, `assistant_turns`, all
//!   conversation `text`); [`all_requests`](ModelStandIn::all_requests) adds
//!   auxiliary ones; [`exchanges`](ModelStandIn::exchanges) lists every HTTP
//!   exchange (request line, headers, status), 404s included.
//! - A [`Script`] maps a request to a [`Reply`]: [`Script::new`] (any closure),
//!   [`Script::steps`] (reply `n` = number of assistant turns already in the
//!   history, last one repeated), [`Script::text`] (one final answer).
//! - [`Reply::Text`] ends the turn; [`Reply::Shell`] calls Claude's `Bash` /
//!   Codex's shell tool; [`Reply::Tool`] calls any tool by name (for a Codex
//!   *custom* tool such as `apply_patch`, pass the raw text as a JSON string);
//!   [`Reply::HttpError`] answers with that status and an error body in the
//!   API's shape.
//!
//! Replies are chosen from the request, never from a global counter: the
//! conversation history says which turn it is, so a script is stateless and
//! works across retries and `--resume`. A request is *main* when it offers
//! `tools`; anything else (title generation, topic checks, warmups) is
//! answered with the text `ok` and never reaches the script. Set
//! `DELEGATE_MODEL_LOG=1` to log every exchange and main request to stderr.
//!
//! # Endpoints
//!
//! | Request | Answer |
//! |---|---|
//! | `POST /v1/messages` (any query, e.g. `?beta=true`) | SSE when `"stream": true`, else one JSON message |
//! | `POST /v1/messages/count_tokens` | `{"input_tokens": N}` |
//! | `POST /v1/responses` | SSE (Codex always streams) |
//! | `HEAD`/`GET /api/hello` | 200 (Claude's connectivity probe) |
//! | anything else, WebSocket upgrades included | 404, JSON error |
//! | a body with `Content-Encoding` other than `identity` | 415 (neither CLI compresses; see below) |
//!
//! HTTP/1.1 with keep-alive; request bodies by `Content-Length` or chunked;
//! `Expect: 100-continue` honoured. Responses always carry `Content-Length`
//! (an SSE body is built whole, then sent), which both CLIs accept. Usage is
//! estimated as 4 bytes per token: Anthropic `message_start` carries
//! `input_tokens`, `message_delta` carries `output_tokens` (Claude computes
//! `total_cost_usd` from them itself); OpenAI `response.completed` carries
//! `usage`.
//!
//! # Facts found with the real CLIs (December 2026, as root, no network)
//!
//! Claude Code 2.1.329:
//! - `ANTHROPIC_BASE_URL=http://127.0.0.1:PORT` (no `/v1`) plus
//!   `ANTHROPIC_API_KEY` with any value is enough; `-p` never asks to approve
//!   the key. Requests carry `x-api-key`, `anthropic-beta: claude-code-…,…`,
//!   `user-agent: claude-cli/2.1.329 (external, sdk-cli)`.
//! - A `-p` run makes exactly one `POST /v1/messages?beta=true` per model turn
//!   (`stream: true`, `max_tokens: 128000`, adaptive `thinking`, model
//!   `claude-opus-5-5` unless `--model`), and NO other request: no title
//!   generation, no `count_tokens`, no quota check, no haiku side call. Each
//!   carries 12 `tools` (`Agent, Bash, Edit, ListAgents, Read, ReportFindings,
//!   ScheduleWakeup, Skill, ToolSearch, Workflow, DeferredToolPlaceholder,
//!   Write`); the others of `init.tools` are deferred behind `ToolSearch`,
//!   and a `tool_use` of a deferred tool (e.g. `CronList`) runs all the same.
//!   `Glob` and `Grep` do not exist in this version: a `tool_use` of `Glob`
//!   gets the `is_error` tool_result "No such tool available: Glob. Glob is
//!   not available in this session — find files with `find` via the Bash
//!   tool instead." and the session goes on.
//! - `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1` makes the run fully silent
//!   (strace: no DNS query, no connect besides the stand-in). Without it,
//!   Claude sends `HEAD /api/hello` to the base URL and resolves
//!   `api.anthropic.com` (telemetry). `DISABLE_AUTOUPDATER=1` showed no effect
//!   in `-p` runs; it is set anyway.
//! - `CLAUDE_CODE_MAX_RETRIES=0` (set by [`ModelStandIn::claude_env`]) makes a
//!   5xx/429 surface after one request; with the default retries and backoff
//!   a persistent 500 keeps Claude busy for more than 60 s. Results:
//!   `is_error: true`, `subtype: "success"`, `api_error_status: <status>`,
//!   exit 1, `result` = `API Error: 500 <message>. This is a server-side
//!   issue…` / `API Error: Request rejected (429) · <message>` /
//!   `API Error: 400 <message>`.
//! - A 400 is tried 6 times regardless of `CLAUDE_CODE_MAX_RETRIES`, dropping
//!   features each time (fewer `anthropic-beta` values, no thinking
//!   `display`, tool deferral off: 12 → 21 tools).
//! - `--permission-mode bypassPermissions` is refused as root; the tests run
//!   `claude` as `dlgtest` (`Command::uid/gid`) in a HOME and work dir owned by
//!   it. `--resume <id>` needs the same HOME and cwd; the resumed request
//!   holds the earlier user and assistant messages.
//! - A two-turn run (Bash, then text) takes about 0.9 s; a one-turn run 0.45 s.
//!
//! Codex 0.169.0 (config as written by [`ModelStandIn::codex_config_toml`]):
//! - A custom `[model_providers.X]` with `wire_api = "responses"` and no
//!   `env_key` needs no API key and sends no `Authorization` header. Custom
//!   providers default to `supports_websockets = false`: Codex goes straight
//!   to `POST /v1/responses` and never tried a WebSocket upgrade here (the
//!   built-in OpenAI provider does; an upgrade `GET` gets a 404).
//! - No compression: bodies arrive as plain JSON without `Content-Encoding`
//!   (`features.enable_request_compression` exists but applies to ChatGPT
//!   auth). Headers include `originator: codex_exec`, `session-id`,
//!   `thread-id` and `x-codex-turn-metadata` (JSON with `sandbox_mode`, …).
//! - The model slug must be one Codex knows (`gpt-5.5` here). An unknown slug
//!   works but puts `item.completed` of type `error` ("Model metadata for `…`
//!   not found…") into the `--json` stream and changes the tool set.
//! - Tools offered with `gpt-5.5`: `exec_command` (the shell tool, arguments
//!   `{"cmd": "…"}` plus optional `workdir`, `login`, `tty`, `yield_time_ms`,
//!   …), `write_stdin`, `request_user_input`, `apply_patch` (`"type":
//!   "custom"`: called with a `custom_tool_call` whose `input` is the raw
//!   patch text, producing a `file_change` item), `view_image`, `get_goal`,
//!   `create_goal`, `update_goal`, `tool_search`, `web_search`. Older
//!   shapes (`shell_command {"command": str}`, `shell {"command": [argv]}`)
//!   are used when offered instead. Codex runs the command as
//!   `/bin/bash -lc '<cmd>'` (a login shell) and returns a
//!   `function_call_output` starting `Chunk ID: …` with `Process exited with
//!   code N` and `Output:`.
//! - Request body: `stream: true`, `store: false`, `include:
//!   ["reasoning.encrypted_content"]`, `prompt_cache_key` = thread id,
//!   `instructions` absent (system text comes as `developer` messages in
//!   `input`).
//! - Phoning home: without `analytics.enabled = false` Codex resolves
//!   `ab.chatgpt.com`; without `features.plugins = false` it resolves
//!   `api.github.com` and `chatgpt.com`. With both (and
//!   `check_for_update_on_startup = false`, which made no observable
//!   difference in `exec`), strace shows no DNS query at all.
//! - `request_max_retries = 0` and `stream_max_retries = 0` in the provider
//!   table make an HTTP error final at once (the default retries a 500 more
//!   than a dozen times with backoff). The `--json` stream then ends with
//!   `error` and `turn.failed`, exit 1; the message is the raw JSON error
//!   body for a 400, "exceeded retry limit, last status: 429 Too Many
//!   Requests, request id: …" for a 429, and Codex's own "We’re currently
//!   experiencing high demand, which may cause temporary errors." for a 500
//!   (our message is dropped).
//! - `codex exec … resume <thread_id> -` sends the earlier turns in `input`.
//! - stderr always has a harmless "WARNING: proceeding, even though we could
//!   not create PATH aliases…" when `CODEX_HOME` is under `/tmp`.
//! - A two-turn run (command, then text) takes about 0.4–0.7 s.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::{Value, json};

/// How often blocked server threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);
/// Longest a response write may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request body accepted (the CLIs send the whole conversation each turn).
const MAX_BODY: usize = 64 << 20;
/// What auxiliary requests (titles, topic checks, warmups) are answered with.
const AUX_REPLY: &str = "ok";

/// Which wire API a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/messages` (Claude Code).
    Anthropic,
    /// `POST /v1/responses` (Codex).
    OpenAi,
}

/// One model request as the script sees it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// Which API the request came in on.
    pub api: Api,
    /// The `model` field of the request.
    pub model: String,
    /// The full JSON body.
    pub body: Value,
    /// How many assistant turns the conversation history already holds
    /// (Anthropic: `messages` with role `assistant`; OpenAI: `input` items
    /// that are assistant messages or tool calls). 0 for a fresh session.
    pub assistant_turns: usize,
    /// All text of the conversation (system prompt / instructions, user
    /// messages, assistant text, tool calls and tool results, hook
    /// `additionalContext`), joined with newlines.
    pub text: String,
    /// Whether this is a main agent-loop request (it offers `tools`), as
    /// opposed to an auxiliary one (title generation and the like), which is
    /// answered with a short text and never reaches the [`Script`].
    pub main: bool,
}

impl SeenRequest {
    /// Whether the conversation text contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.text.contains(needle)
    }
}

/// What the stand-in answers one main request with.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A final answer; ends the turn (`end_turn` / a completed assistant message).
    Text(String),
    /// Run a shell command: Claude's `Bash` tool, Codex's shell tool.
    Shell(String),
    /// Call any other tool by name with these JSON arguments (Claude:
    /// `Write`, `Read`, `Edit`, ...). For a Codex tool declared `"type":
    /// "custom"` (`apply_patch`), pass the raw text as a JSON string; it is
    /// sent as a `custom_tool_call`.
    Tool { name: String, input: Value },
    /// Answer with this HTTP status and a JSON error body in the API's shape.
    HttpError(u16, String),
}

type ScriptFn = dyn Fn(&SeenRequest) -> Reply + Send + Sync;

/// Chooses the [`Reply`] for each main request, from the request alone.
#[derive(Clone)]
pub struct Script(Arc<ScriptFn>);

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Script(..)")
    }
}

impl Script {
    /// Any function of the request.
    pub fn new(f: impl Fn(&SeenRequest) -> Reply + Send + Sync + 'static) -> Script {
        Script(Arc::new(f))
    }

    /// Reply `steps[n]` where `n` is the number of assistant turns already in
    /// the conversation; the last step repeats. Stateless, so it also works
    /// for resumed sessions and across retries.
    pub fn steps(steps: Vec<Reply>) -> Script {
        assert!(!steps.is_empty(), "Script::steps needs at least one step");
        Script::new(move |req| steps[req.assistant_turns.min(steps.len() - 1)].clone())
    }

    /// Answer every turn with this final text.
    pub fn text(text: &str) -> Script {
        Script::steps(vec![Reply::Text(text.to_string())])
    }

    fn reply(&self, req: &SeenRequest) -> Reply {
        (self.0)(req)
    }
}

/// One HTTP exchange, for diagnostics.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// `METHOD /path?query`.
    pub request_line: String,
    /// Request headers, names lowercased.
    pub headers: BTreeMap<String, String>,
    /// The status the stand-in answered with.
    pub status: u16,
    /// The request body (lossy UTF-8), truncated to 4 KiB.
    pub body_head: String,
}

struct Shared {
    script: Script,
    stop: AtomicBool,
    seen: Mutex<Vec<SeenRequest>>,
    exchanges: Mutex<Vec<Exchange>>,
    ids: AtomicU64,
    /// Makes ids unique across stand-ins, so a session resumed against a
    /// new stand-in never sees a tool-call id twice.
    nonce: String,
    log: bool,
}

impl Shared {
    fn next_id(&self) -> String {
        format!("{}{}", self.nonce, self.ids.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

/// The server. Listens on `127.0.0.1:0`; Drop stops every thread it started.
pub struct ModelStandIn {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ModelStandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelStandIn").field("port", &self.port).finish()
    }
}

impl ModelStandIn {
    /// Bind `127.0.0.1:0` and serve `script`.
    pub fn start(script: Script) -> ModelStandIn {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .unwrap_or_else(|e| panic!("delegate-testkit: model stand-in cannot bind: {e}"));
        listener.set_nonblocking(true).expect("delegate-testkit: model listener nonblocking");
        let port = listener.local_addr().expect("delegate-testkit: model local addr").port();
        let shared = Arc::new(Shared {
            script,
            stop: AtomicBool::new(false),
            seen: Mutex::new(Vec::new()),
            exchanges: Mutex::new(Vec::new()),
            ids: AtomicU64::new(0),
            nonce: nonce(),
            log: std::env::var_os("DELEGATE_MODEL_LOG").is_some(),
        });
        let s = shared.clone();
        let acceptor = thread::Builder::new()
            .name(format!("dlgtk-model-{port}"))
            .spawn(move || accept_loop(listener, s))
            .expect("delegate-testkit: spawn model thread");
        ModelStandIn { port, shared, acceptor: Some(acceptor) }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// For `ANTHROPIC_BASE_URL`: `http://127.0.0.1:PORT` (no `/v1`).
    pub fn anthropic_base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// For a Codex provider's `base_url`: `http://127.0.0.1:PORT/v1`.
    pub fn openai_base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Every main (agent-loop) model request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.shared.seen).iter().filter(|r| r.main).cloned().collect()
    }

    /// Every model request seen so far, auxiliary ones included.
    pub fn all_requests(&self) -> Vec<SeenRequest> {
        lock(&self.shared.seen).clone()
    }

    /// Every HTTP exchange so far (all paths, errors included).
    pub fn exchanges(&self) -> Vec<Exchange> {
        lock(&self.shared.exchanges).clone()
    }

    /// A `~/.codex/config.toml` (i.e. `$CODEX_HOME/config.toml`) that points
    /// Codex at this server, with a model slug Codex knows, no phoning home
    /// and no retries (see the module docs for why each line is there).
    pub fn codex_config_toml(&self) -> String {
        format!(
            r#"# Written by delegate-testkit's ModelStandIn.
model_provider = "standin"
# A slug Codex has metadata for; an unknown one adds an `error` item to the stream.
model = "gpt-5.5"
check_for_update_on_startup = false

[analytics]
# Otherwise Codex resolves ab.chatgpt.com.
enabled = false

[features]
# Otherwise Codex resolves api.github.com and chatgpt.com.
plugins = false

[model_providers.standin]
name = "model stand-in"
base_url = "{}"
wire_api = "responses"
# Make a scripted HTTP error final at once instead of retrying with backoff.
request_max_retries = 0
stream_max_retries = 0
"#,
            self.openai_base_url()
        )
    }

    /// Environment for `claude` (add `PATH` and `HOME` yourself):
    /// `ANTHROPIC_BASE_URL`, `ANTHROPIC_API_KEY=dummy`,
    /// `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1` (no telemetry, no
    /// `/api/hello` probe), `DISABLE_AUTOUPDATER=1` and
    /// `CLAUDE_CODE_MAX_RETRIES=0` (a scripted HTTP error is final at once;
    /// remove it to exercise Claude's own retries).
    pub fn claude_env(&self) -> Vec<(String, String)> {
        [
            ("ANTHROPIC_BASE_URL", self.anthropic_base_url()),
            ("ANTHROPIC_API_KEY", "dummy".to_string()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_string()),
            ("DISABLE_AUTOUPDATER", "1".to_string()),
            ("CLAUDE_CODE_MAX_RETRIES", "0".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Drop for ModelStandIn {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// A short hex string that differs between stand-ins.
fn nonce() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}{:x}_", std::process::id(), nanos & 0xffff_ffff)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// HTTP/1.1 server: one accept thread, one thread per connection (keep-alive).

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let stop = shared.clone();
    crate::accept::accept_until(
        listener,
        move || stop.stop.load(Ordering::SeqCst),
        "dlgtk-model-conn",
        move |c| serve(c, shared.clone()),
    );
}

/// A parsed HTTP request.
struct Request {
    method: String,
    target: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Request {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A response to write.
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn json(status: u16, v: &Value) -> Response {
        Response { status, content_type: "application/json", body: v.to_string().into_bytes() }
    }
    fn sse(body: String) -> Response {
        Response { status: 200, content_type: "text/event-stream", body: body.into_bytes() }
    }
}

/// Serve requests on one connection until the client closes it or the server stops.
fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_read_timeout(Some(POLL));
    // A client that stops reading must not block Drop (which joins this thread).
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = StopReader { inner: stream, shared: shared.clone() };
    let mut reader = BufReader::new(&mut reader);
    loop {
        let req = match read_request(&mut reader, &mut writer) {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => return,
        };
        let close = req.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let resp = route(&req, &shared);
        record_exchange(&shared, &req, resp.status);
        if write_response(&mut writer, &resp, close).is_err() || close {
            return;
        }
    }
}

/// A socket reader that retries read timeouts until the server stops, so a
/// blocked read notices Drop within [`POLL`].
struct StopReader {
    inner: TcpStream,
    shared: Arc<Shared>,
}

impl Read for StopReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                // Not `Interrupted`: `read_line` and `read_exact` retry that forever.
                return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "stand-in stopping"));
            }
            match self.inner.read(buf) {
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

/// Read one request; `Ok(None)` on a clean EOF between requests.
fn read_request(r: &mut impl BufRead, w: &mut TcpStream) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    if headers.get("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let chunked = headers.get("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        read_chunked(r)?
    } else {
        let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        if len > MAX_BODY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        body
    };
    Ok(Some(Request { method, target, headers, body }))
}

/// Decode a `Transfer-Encoding: chunked` body (trailers are skipped).
fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        r.read_line(&mut size_line)?;
        let size_hex = size_line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let mut t = String::new();
                if r.read_line(&mut t)? == 0 || t.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
    }
}

fn write_response(w: &mut TcpStream, resp: &Response, close: bool) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nx-request-id: req_standin\r\nrequest-id: req_standin\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    if resp.content_type == "text/event-stream" {
        head.push_str("Cache-Control: no-cache\r\n");
    }
    head.push_str(if close { "Connection: close\r\n\r\n" } else { "Connection: keep-alive\r\n\r\n" });
    w.write_all(head.as_bytes())?;
    w.write_all(&resp.body)?;
    w.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        529 => "Overloaded",
        _ => "Status",
    }
}

fn record_exchange(shared: &Shared, req: &Request, status: u16) {
    let body_head: String = String::from_utf8_lossy(&req.body).chars().take(4096).collect();
    let request_line = format!("{} {}", req.method, req.target);
    if shared.log {
        eprintln!("[model stand-in] {request_line} -> {status} ({} body bytes)", req.body.len());
    }
    lock(&shared.exchanges).push(Exchange { request_line, headers: req.headers.clone(), status, body_head });
}

// ---------------------------------------------------------------------------
// Routing.

fn route(req: &Request, shared: &Shared) -> Response {
    let path = req.path();
    if req.header("content-encoding").is_some_and(|e| !e.eq_ignore_ascii_case("identity")) {
        return Response::json(
            415,
            &json!({"error": {"message": "stand-in: compressed request bodies are not supported", "type": "invalid_request_error"}}),
        );
    }
    match (req.method.as_str(), path) {
        ("POST", "/v1/messages") => anthropic_messages(req, shared),
        ("POST", "/v1/messages/count_tokens") => anthropic_count_tokens(req),
        ("POST", "/v1/responses") => openai_responses(req, shared),
        // Claude's connectivity probe (only sent without
        // CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC).
        ("HEAD" | "GET", "/api/hello") => Response::json(200, &json!({})),
        _ => not_found(req),
    }
}

fn not_found(req: &Request) -> Response {
    let msg = format!("stand-in: no route for {} {}", req.method, req.path());
    Response::json(404, &json!({"type": "error", "error": {"type": "not_found_error", "message": msg}}))
}

fn parse_json(req: &Request) -> Result<Value, Response> {
    serde_json::from_slice(&req.body).map_err(|e| {
        Response::json(400, &json!({"type": "error", "error": {"type": "invalid_request_error", "message": format!("stand-in: bad JSON: {e}")}}))
    })
}

/// Very rough token estimate: 4 bytes per token, at least 1.
fn tokens(s: &str) -> u64 {
    (s.len() as u64 / 4).max(1)
}

/// Concatenate the string leaves of `v`, skipping keys that hold ids and
/// markers rather than conversation text.
fn collect_text(v: &Value, out: &mut String) {
    const SKIP: [&str; 9] =
        ["type", "id", "role", "call_id", "tool_use_id", "signature", "status", "cache_control", "encrypted_content"];
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(a) => a.iter().for_each(|x| collect_text(x, out)),
        Value::Object(o) => {
            o.iter().filter(|(k, _)| !SKIP.contains(&k.as_str())).for_each(|(_, x)| collect_text(x, out))
        }
        _ => {}
    }
}

fn has_tools(body: &Value) -> bool {
    body.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty())
}

/// Ask the script (main requests) or answer a short text (auxiliary ones),
/// and remember the request.
fn decide(shared: &Shared, seen: SeenRequest) -> Reply {
    if shared.log {
        eprintln!(
            "[model stand-in] {:?} model={} main={} assistant_turns={} tools={}",
            seen.api,
            seen.model,
            seen.main,
            seen.assistant_turns,
            tool_names(&seen.body["tools"]).join(",")
        );
    }
    let reply = if seen.main { shared.script.reply(&seen) } else { Reply::Text(AUX_REPLY.to_string()) };
    lock(&shared.seen).push(seen);
    reply
}

/// Names of the tools in a request's `tools` array (built-in tools without a
/// name, like OpenAI's `web_search`, by their `type`).
fn tool_names(tools: &Value) -> Vec<String> {
    tools
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter_map(|t| t.get("name").or_else(|| t.get("type")).and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Anthropic Messages API.

fn anthropic_seen(body: Value) -> SeenRequest {
    let messages = body.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
    let assistant_turns =
        messages.iter().filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant")).count();
    let mut text = String::new();
    if let Some(s) = body.get("system") {
        collect_text(s, &mut text);
    }
    for m in &messages {
        collect_text(m, &mut text);
    }
    SeenRequest {
        api: Api::Anthropic,
        model: body.get("model").and_then(Value::as_str).unwrap_or("").to_string(),
        main: has_tools(&body),
        assistant_turns,
        text,
        body,
    }
}

fn anthropic_messages(req: &Request, shared: &Shared) -> Response {
    let body = match parse_json(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let seen = anthropic_seen(body);
    let (model, input_tokens) = (seen.model.clone(), tokens(&seen.text));
    let reply = decide(shared, seen);
    let id = shared.next_id();
    let (block, stop_reason) = match reply {
        Reply::HttpError(status, msg) => return anthropic_error(status, &msg),
        Reply::Text(t) => (json!({"type": "text", "text": t}), "end_turn"),
        Reply::Shell(cmd) => (tool_use_block(&id, "Bash", json!({"command": cmd})), "tool_use"),
        Reply::Tool { name, input } => (tool_use_block(&id, &name, input), "tool_use"),
    };
    let output_tokens = tokens(&block.to_string());
    let message = json!({
        "id": format!("msg_standin_{id}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [block],
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    });
    if stream { Response::sse(anthropic_sse(&message)) } else { Response::json(200, &message) }
}

fn tool_use_block(id: &str, name: &str, input: Value) -> Value {
    json!({"type": "tool_use", "id": format!("toolu_standin_{id}"), "name": name, "input": input})
}

/// The SSE event sequence that streams `message` (one content block).
fn anthropic_sse(message: &Value) -> String {
    let mut out = String::new();
    let mut event = |name: &str, data: Value| {
        let _ = write!(out, "event: {name}\ndata: {data}\n\n");
    };
    let usage = &message["usage"];
    let mut start = message.clone();
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    start["usage"]["output_tokens"] = json!(1);
    event("message_start", json!({"type": "message_start", "message": start}));
    let block = &message["content"][0];
    if block["type"] == "text" {
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        );
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": block["text"]}}),
        );
    } else {
        let mut empty = block.clone();
        empty["input"] = json!({});
        event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": empty}));
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": block["input"].to_string()}}),
        );
    }
    event("content_block_stop", json!({"type": "content_block_stop", "index": 0}));
    event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": null}, "usage": {"output_tokens": usage["output_tokens"]}}),
    );
    event("message_stop", json!({"type": "message_stop"}));
    out
}

fn anthropic_error(status: u16, msg: &str) -> Response {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    Response::json(status, &json!({"type": "error", "error": {"type": kind, "message": msg}}))
}

fn anthropic_count_tokens(req: &Request) -> Response {
    let body = match parse_json(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut text = String::new();
    collect_text(&body, &mut text);
    Response::json(200, &json!({"input_tokens": tokens(&text)}))
}

// ---------------------------------------------------------------------------
// OpenAI Responses API.

fn openai_seen(body: Value) -> SeenRequest {
    let input = body.get("input").and_then(Value::as_array).cloned().unwrap_or_default();
    let assistant_turns = input.iter().filter(|i| is_assistant_item(i)).count();
    let mut text = String::new();
    if let Some(s) = body.get("instructions") {
        collect_text(s, &mut text);
    }
    for i in &input {
        collect_text(i, &mut text);
    }
    SeenRequest {
        api: Api::OpenAi,
        model: body.get("model").and_then(Value::as_str).unwrap_or("").to_string(),
        main: has_tools(&body),
        assistant_turns,
        text,
        body,
    }
}

/// An input item the model produced earlier: an assistant message or a tool call.
fn is_assistant_item(item: &Value) -> bool {
    let kind = item.get("type").and_then(Value::as_str).unwrap_or("message");
    match kind {
        "message" => item.get("role").and_then(Value::as_str) == Some("assistant"),
        "function_call" | "custom_tool_call" | "local_shell_call" => true,
        _ => false,
    }
}

fn openai_responses(req: &Request, shared: &Shared) -> Response {
    let body = match parse_json(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let seen = openai_seen(body);
    let input_tokens = tokens(&seen.text);
    let tools = seen.body.get("tools").cloned().unwrap_or(Value::Null);
    let reply = decide(shared, seen);
    let id = shared.next_id();
    let item = match reply {
        Reply::HttpError(status, msg) => return openai_error(status, &msg),
        Reply::Text(t) => json!({
            "type": "message", "id": format!("msg_standin_{id}"), "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": t, "annotations": []}],
        }),
        Reply::Shell(cmd) => {
            let (name, args) = codex_shell_call(&tool_names(&tools), &cmd);
            tool_call_item(&id, &tools, &name, &args)
        }
        Reply::Tool { name, input } => tool_call_item(&id, &tools, &name, &input),
    };
    Response::sse(openai_sse(&id, &item, input_tokens))
}

/// The shell tool Codex offered and the arguments it takes.
fn codex_shell_call(tools: &[String], cmd: &str) -> (String, Value) {
    if tools.iter().any(|t| t == "shell_command") {
        ("shell_command".into(), json!({"command": cmd}))
    } else if tools.iter().any(|t| t == "exec_command") {
        ("exec_command".into(), json!({"cmd": cmd}))
    } else {
        ("shell".into(), json!({"command": ["bash", "-lc", cmd]}))
    }
}

/// A call of the tool `name`: a `custom_tool_call` with raw text `input` when
/// the request declared that tool as `"type": "custom"` (Codex's freeform
/// `apply_patch`), else a `function_call` with JSON `arguments`.
fn tool_call_item(id: &str, tools: &Value, name: &str, args: &Value) -> Value {
    let custom = tools.as_array().is_some_and(|ts| ts.iter().any(|t| t["name"] == name && t["type"] == "custom"));
    let call_id = format!("call_standin_{id}");
    if custom {
        let input = args.as_str().map(str::to_string).unwrap_or_else(|| args.to_string());
        json!({"type": "custom_tool_call", "id": format!("ctc_standin_{id}"), "call_id": call_id,
               "name": name, "input": input, "status": "completed"})
    } else {
        json!({"type": "function_call", "id": format!("fc_standin_{id}"), "call_id": call_id,
               "name": name, "arguments": args.to_string(), "status": "completed"})
    }
}

fn openai_sse(id: &str, item: &Value, input_tokens: u64) -> String {
    let mut out = String::new();
    let mut event = |data: Value| {
        let _ = write!(out, "event: {}\ndata: {data}\n\n", data["type"].as_str().unwrap_or(""));
    };
    let resp_id = format!("resp_standin_{id}");
    let output_tokens = tokens(&item.to_string());
    event(
        json!({"type": "response.created", "response": {"id": resp_id, "object": "response", "status": "in_progress", "output": []}}),
    );
    event(json!({"type": "response.output_item.added", "output_index": 0, "item": item}));
    if item["type"] == "message" {
        let text = &item["content"][0]["text"];
        event(
            json!({"type": "response.output_text.delta", "item_id": item["id"], "output_index": 0, "content_index": 0, "delta": text}),
        );
    }
    event(json!({"type": "response.output_item.done", "output_index": 0, "item": item}));
    event(json!({"type": "response.completed", "response": {
        "id": resp_id, "object": "response", "status": "completed", "output": [item],
        "usage": {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": input_tokens + output_tokens},
    }}));
    out
}

fn openai_error(status: u16, msg: &str) -> Response {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "invalid_api_key",
        429 => "rate_limit_exceeded",
        _ => "server_error",
    };
    Response::json(status, &json!({"error": {"message": msg, "type": kind, "code": kind, "param": null}}))
}
