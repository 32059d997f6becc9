//! A small Chrome DevTools Protocol client for the board page's browser tests: a real
//! headless Chromium (Debian's package) driven over `--remote-debugging-pipe` (CDP messages
//! as JSON, each ended by a NUL byte, on file descriptors 3 and 4), so no websocket library
//! is needed. One page target, attached in flat mode; commands wait for their reply.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Where Chromium is, or `None` after saying loudly why the browser tests do not run. Under
/// CI (`CI` set) a missing Chromium fails instead: scripts/test.sh installs it there.
pub fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
    });
    if found.is_none() {
        let why = "chromium is not installed: the board page's browser tests need it \
                   (`apt-get install chromium`; scripts/test.sh installs it)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("\n!!!!!!!! SKIPPED: {why} !!!!!!!!\n");
    }
    found
}

pub struct Browser {
    child: Child,
    to_browser: std::io::PipeWriter,
    replies: Arc<Mutex<HashMap<u64, mpsc::Sender<Value>>>>,
    next_id: u64,
    session: String,
    _profile: PathBuf,
}

impl Browser {
    /// Starts headless Chromium with a fresh profile and opens `url` in one tab.
    pub fn open(chromium: &Path, url: &str, profile: PathBuf) -> Browser {
        let (from_us, to_browser) = std::io::pipe().unwrap();
        let (from_browser, to_us) = std::io::pipe().unwrap();
        let (read_fd, write_fd): (OwnedFd, OwnedFd) = (from_us.into(), to_us.into());
        let (r, w) = (read_fd.as_raw_fd(), write_fd.as_raw_fd());
        let mut cmd = Command::new(chromium);
        cmd.args([
            "--headless=new",
            "--remote-debugging-pipe",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-dev-shm-usage",
            "--window-size=1500,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // Chromium's own sandbox refuses to run as root (the test machines run as root).
        if unsafe { libc::geteuid() } == 0 {
            cmd.arg("--no-sandbox");
        }
        // SAFETY: dup2 is async-signal-safe; it puts the pipe ends at 3 and 4 (clearing
        // close-on-exec there), where --remote-debugging-pipe expects them.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start chromium");
        drop((read_fd, write_fd));
        let replies: Arc<Mutex<HashMap<u64, mpsc::Sender<Value>>>> = Arc::default();
        let routes = replies.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(from_browser);
            loop {
                let mut msg = Vec::new();
                match reader.read_until(0, &mut msg) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                msg.pop();
                let Ok(v) = serde_json::from_slice::<Value>(&msg) else { continue };
                if let Some(id) = v["id"].as_u64()
                    && let Some(tx) = routes.lock().unwrap().remove(&id)
                {
                    let _ = tx.send(v);
                }
            }
        });
        let mut b = Browser { child, to_browser, replies, next_id: 0, session: String::new(), _profile: profile };
        let target = b.call(None, "Target.createTarget", json!({ "url": url }));
        let target_id = target["targetId"].as_str().expect("a target id").to_string();
        let attached = b.call(None, "Target.attachToTarget", json!({ "targetId": target_id, "flatten": true }));
        b.session = attached["sessionId"].as_str().expect("a session id").to_string();
        b.page("Page.enable", json!({}));
        b.page("Runtime.enable", json!({}));
        b
    }

    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = mpsc::channel();
        self.replies.lock().unwrap().insert(id, tx);
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to_browser.write_all(&bytes).expect("write to chromium");
        let reply =
            rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("chromium never answered {method}"));
        assert!(reply.get("error").is_none(), "{method} failed: {reply}");
        reply["result"].clone()
    }

    /// A command to the page.
    pub fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params)
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .page("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }));
        assert!(r.get("exceptionDetails").is_none(), "{expression} threw: {r}");
        r["result"]["value"].clone()
    }

    /// Polls `expression` until it is true (at most `limit`).
    pub fn wait_until(&mut self, what: &str, expression: &str, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            if self.eval(expression) == json!(true) {
                return;
            }
            assert!(Instant::now() < end, "the page never showed {what} ({expression})");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Saves a PNG of the page at `path` and prints where it is.
    pub fn screenshot(&mut self, path: &Path) {
        use base64::Engine as _;
        let shot = self.page("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).unwrap();
        eprintln!("board page screenshot: {}", path.display());
    }

    /// Types `text` where the focus is, as a keyboard would insert it.
    pub fn type_text(&mut self, text: &str) {
        self.page("Input.insertText", json!({ "text": text }));
    }

    /// A real mouse click at the centre of the element `selector` names.
    pub fn click(&mut self, selector: &str) {
        let js = format!(
            "(() => {{ const e = document.querySelector({sel}); e.scrollIntoView({{block: 'center'}}); \
             const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            sel = serde_json::to_string(selector).unwrap()
        );
        let at = self.eval(&js);
        let (x, y) = (at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
        for kind in ["mousePressed", "mouseReleased"] {
            self.page(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
