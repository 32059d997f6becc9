//! `delegate board --serve`: the board as a live page on 127.0.0.1 (never another
//! interface), for this user only: every request, the page's and the API's, must carry the
//! random token printed at start, name this server in its Host header (a page elsewhere that
//! rebinds a DNS name to 127.0.0.1 gets nothing), and a write must be JSON from this origin.
//!
//! Threads: one accepts connections; one per connection reads a bounded request and checks
//! it; the main thread owns the mailbox and runs each request's operation (the same ops as
//! the CLI: `move_task`, `answer`), one at a time; one more syncs every [`SYNC_EVERY`] with
//! its own connection to the mailbox, so a slow host never holds up the page.
//!
//! The page (page.html, board.css, board.js) ships inside the binary. Everything on it that
//! came from a brother is put in the DOM as text, never as markup, and the
//! Content-Security-Policy lets only the page's own script run.

pub mod http;

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::Result;
use delegate_core::sanitize::{clip, printable};
use delegate_core::{Column, Delegate, Error, ErrorKind};
use serde_json::{Value, json};

use http::{ReadError, Request, Response, read_request, write_response};

const PAGE: &str = include_str!("page.html");
const CSS: &str = include_str!("board.css");
const JS: &str = include_str!("board.js");

/// How often the page's server syncs with the brothers (the page polls the mailbox more often).
pub const SYNC_EVERY: Duration = Duration::from_secs(5);
/// Connections handled at once; more wait in the kernel's backlog or get a 503.
const MAX_CONNECTIONS: usize = 32;
/// Cards per column on the page.
const CARDS_PER_COLUMN: usize = 200;
/// Thread items a card's panel shows (the newest), and the characters of each.
const PANEL_ITEMS: usize = 100;
const PANEL_ITEM_CHARS: usize = 4000;
const FINAL_TEXT_CHARS: usize = 20_000;

/// The board page could not start (its port is taken, say): exit 40.
#[derive(Debug)]
pub struct StartFailed(pub String);

impl std::fmt::Display for StartFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartFailed {}

/// What the connection threads need to check a request before the main thread sees it.
struct Gate {
    token: String,
    port: u16,
}

impl Gate {
    /// `None` when the request may go on; else the refusal.
    fn refuse(&self, req: &Request) -> Option<Response> {
        let host = req.header("host").unwrap_or("");
        if host != format!("127.0.0.1:{}", self.port) && host != format!("localhost:{}", self.port) {
            return Some(Response::error(421, "wrong_host", "this server answers only to 127.0.0.1 and localhost"));
        }
        let given = req.query("token").unwrap_or("");
        if !same(given.as_bytes(), self.token.as_bytes()) {
            return Some(Response::error(
                403,
                "bad_token",
                "missing or wrong token: open the URL `delegate board --serve` printed",
            ));
        }
        if req.method == "POST" {
            // A cross-site form cannot send JSON without a preflight this server never
            // answers; an Origin, when sent, must be ours.
            let origin_ok = req.header("origin").is_none_or(|o| {
                o == format!("http://127.0.0.1:{}", self.port) || o == format!("http://localhost:{}", self.port)
            });
            let json = req.header("content-type").is_some_and(|t| t.starts_with("application/json"));
            if !origin_ok || !json {
                return Some(Response::error(403, "bad_origin", "writes come from the board page only, as JSON"));
            }
        }
        None
    }
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

type Job = (Request, mpsc::Sender<Response>);

/// Serves the board until the process is stopped. `port` 0 takes any free port.
pub fn serve(config: Option<&Path>, port: u16, author: Option<String>) -> Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(|e| {
        StartFailed(format!(
            "the board page could not listen on 127.0.0.1:{port}: {e}. Choose another port with --port P (0: any free one)"
        ))
    })?;
    let port = listener.local_addr()?.port();
    let gate = Arc::new(Gate { token: random_hex(24), port });
    let mut d = crate::cmd::open(config)?;
    let author = author.unwrap_or_else(|| d.paths().local_user.clone());
    let sync_state: Arc<Mutex<SyncState>> = Arc::default();
    start_sync(config.map(Path::to_path_buf), sync_state.clone());

    let (jobs, queue) = mpsc::channel::<Job>();
    let accept_gate = gate.clone();
    std::thread::spawn(move || accept(listener, accept_gate, jobs));
    println!("board page: http://127.0.0.1:{port}/?token={}", gate.token);
    println!("(only on this machine; acting as {author}; Ctrl-C stops it)");
    use std::io::Write as _;
    std::io::stdout().flush()?;

    let page = Page { author };
    for (req, reply) in queue {
        let response = page.route(&mut d, &req, &sync_state);
        let _ = reply.send(response);
    }
    Ok(())
}

fn accept(listener: TcpListener, gate: Arc<Gate>, jobs: mpsc::Sender<Job>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            write_response(&stream, &Response::error(503, "busy", "too many connections; try again"));
            continue;
        }
        let (gate, jobs, active) = (gate.clone(), jobs.clone(), active.clone());
        std::thread::spawn(move || {
            handle(&stream, &gate, &jobs);
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn handle(stream: &TcpStream, gate: &Gate, jobs: &mpsc::Sender<Job>) {
    let response = match read_request(stream) {
        Err(ReadError::TooLarge(status)) => Response::error(status, "too_large", "the request is over the size limit"),
        Err(ReadError::Bad(why)) => Response::error(400, "bad_request", &why),
        Ok(req) => match gate.refuse(&req) {
            Some(refused) => refused,
            None => {
                let (reply, answer) = mpsc::channel();
                if jobs.send((req, reply)).is_err() {
                    return;
                }
                // An answer may resume an agent over SSH: give it time, but not forever.
                match answer.recv_timeout(Duration::from_secs(180)) {
                    Ok(r) => r,
                    Err(_) => Response::error(503, "timeout", "the operation did not finish in time"),
                }
            }
        },
    };
    write_response(stream, &response);
    http::linger(stream);
}

/// How the background sync went, for the page's status line.
#[derive(Default)]
struct SyncState {
    last_at: Option<String>,
    warnings: Vec<String>,
    error: Option<String>,
}

/// Syncs every [`SYNC_EVERY`] on a thread of its own, with its own mailbox connection and
/// runtime: the same sync `delegate sync` runs, with each host's deadline.
fn start_sync(config: Option<PathBuf>, state: Arc<Mutex<SyncState>>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        let mut d = match crate::cmd::open(config.as_deref()) {
            Ok(d) => d,
            Err(e) => {
                state.lock().unwrap().error = Some(format!("{e:#}"));
                return;
            }
        };
        loop {
            let outcome = rt.block_on(d.sync(None));
            {
                let mut s = state.lock().unwrap();
                s.last_at = Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
                match outcome {
                    Ok(summary) => {
                        s.warnings = summary.warnings().into_iter().map(|(h, w)| format!("{h}: {w}")).collect();
                        s.error = None;
                    }
                    Err(e) => s.error = Some(e.to_string()),
                }
            }
            std::thread::sleep(SYNC_EVERY);
        }
    });
}

struct Page {
    /// Who moves and answers: `--as`, `$DELEGATE_AGENT_ID`, else the local user.
    author: String,
}

impl Page {
    fn route(&self, d: &mut Delegate, req: &Request, sync: &Mutex<SyncState>) -> Response {
        let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        match (req.method.as_str(), parts.as_slice()) {
            ("GET", [""]) => self.page(),
            ("GET", ["api", "board"]) => self.board(d, sync),
            ("GET", ["api", "task", id]) => match id.parse() {
                Ok(id) => self.task(d, id),
                Err(_) => Response::error(404, "not_found", "no such task"),
            },
            ("POST", ["api", "move"]) => self.move_card(d, req),
            ("POST", ["api", "answer"]) => self.answer(d, req),
            (_, ["api", ..]) | ("GET", _) => Response::error(404, "not_found", "no such page"),
            _ => Response::error(405, "method", "not allowed"),
        }
    }

    /// The page, with a nonce only its own script and style carry.
    fn page(&self) -> Response {
        let nonce = random_hex(16);
        let html = PAGE.replace("{{nonce}}", &nonce).replace("/*{{css}}*/", CSS).replace("//{{js}}", JS);
        let csp = format!(
            "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        );
        Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: html.into_bytes(),
            headers: vec![("Content-Security-Policy", csp)],
        }
    }

    fn board(&self, d: &Delegate, sync: &Mutex<SyncState>) -> Response {
        let columns = match d.board(None, CARDS_PER_COLUMN) {
            Ok(c) => c,
            Err(e) => return failure(&e),
        };
        let inbox = match d.inbox(None) {
            Ok(q) => q,
            Err(e) => return failure(&e),
        };
        let s = sync.lock().unwrap();
        Response::json(
            200,
            &json!({
                "identity": self.author,
                "columns": columns,
                "inbox": inbox,
                "sync": { "last_at": s.last_at, "warnings": s.warnings, "error": s.error },
            }),
        )
    }

    /// A card's panel: the task, the agent's final answer and the newest thread items, each
    /// cleaned of escape sequences and bounded (the page shows them as text).
    fn task(&self, d: &Delegate, id: i64) -> Response {
        let view = match d.show(id) {
            Ok(v) => v,
            Err(e) => return failure(&e),
        };
        let items: Vec<Value> = view
            .thread
            .iter()
            .rev()
            .take(PANEL_ITEMS)
            .rev()
            .map(|i| {
                json!({
                    "at": i.at, "kind": i.kind, "run": i.run, "author": i.author,
                    "text": clip(&printable(&i.text), PANEL_ITEM_CHARS),
                })
            })
            .collect();
        let t = &view.task;
        Response::json(
            200,
            &json!({
                "id": t.id, "subject": t.subject, "brother": t.brother, "status": t.status, "version": t.version,
                "turns": t.turns, "cost_usd": t.cost_usd,
                "final_text": view.final_text.as_deref().map(|f| clip(&printable(f), FINAL_TEXT_CHARS)),
                "thread": items,
            }),
        )
    }

    fn move_card(&self, d: &mut Delegate, req: &Request) -> Response {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Move {
            id: i64,
            column: String,
            version: i64,
        }
        let m: Move = match serde_json::from_slice(&req.body) {
            Ok(m) => m,
            Err(e) => return Response::error(400, "bad_arguments", &format!("a move is {{id, column, version}}: {e}")),
        };
        let to: Column = match m.column.parse() {
            Ok(c) => c,
            Err(why) => return Response::error(400, "bad_arguments", &why),
        };
        match d.move_task(m.id, to, m.version, &self.author) {
            Ok(card) => Response::json(200, &json!({ "card": card })),
            Err(e) => failure(&e),
        }
    }

    fn answer(&self, d: &mut Delegate, req: &Request) -> Response {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Answer {
            id: i64,
            text: String,
        }
        let a: Answer = match serde_json::from_slice(&req.body) {
            Ok(a) => a,
            Err(e) => return Response::error(400, "bad_arguments", &format!("an answer is {{id, text}}: {e}")),
        };
        // Whether the agent still runs decides how the answer travels: ask the brother first.
        if let Err(e) = crate::cmd::block_on(d.sync(Some(&[a.id]))) {
            return failure(&e);
        }
        match crate::cmd::block_on(d.answer(a.id, &a.text, &self.author)) {
            Ok(answered) => Response::json(200, &json!({ "answered": answered })),
            Err(e) => failure(&e),
        }
    }
}

/// An operation's error as the page shows it: the library's message (brother text in it
/// cleaned) and its kind, with an HTTP status that says whose fault it is.
fn failure(e: &Error) -> Response {
    let status = match e.kind() {
        ErrorKind::TaskNotFound => 404,
        ErrorKind::StaleVersion | ErrorKind::NothingToAnswer | ErrorKind::Conflict => 409,
        ErrorKind::BadArgument
        | ErrorKind::PromptEmpty
        | ErrorKind::PromptTooLarge
        | ErrorKind::NotResumable
        | ErrorKind::NotStarted
        | ErrorKind::AlreadyFinished
        | ErrorKind::RunActive => 400,
        _ => 502,
    };
    Response::error(status, e.kind().name(), &printable(&e.to_string()))
}
