//! Sending notifications: a command run with its argv (no shell), or a webhook POST. Each
//! is bounded in time (a command 10 s, then its process group is killed; a webhook 5 s for
//! the whole exchange, no redirects followed, so a token never goes to another host), and
//! at most a few are sent per call, so a command that syncs is never held long.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Message, Target, WebhookFormat};
use crate::mailbox::Store;
use crate::mailbox::notifications::{Notification, now_ms};

pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many notifications are sent by one call (one command that syncs).
pub const MAX_PER_CALL: usize = 4;
/// No further notification is started after this long in one call.
pub const CALL_BUDGET: Duration = Duration::from_secs(12);
/// The first retry waits this long; each further one twice as long, up to an hour.
pub const BACKOFF_BASE: Duration = Duration::from_secs(30);
/// The most stderr of a failed command kept for its error.
const MAX_STDERR: usize = 4096;

/// Looks an environment variable up for a webhook token; the caller decides (the library
/// reads no environment itself).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What sending needs from outside: the token variables and `~` for token files.
#[derive(Clone)]
pub struct Secrets {
    pub env: EnvLookup,
    pub home: PathBuf,
}

impl Secrets {
    /// No variables at all (a token from the environment then fails, naming the variable).
    pub fn none(home: PathBuf) -> Secrets {
        Secrets { env: Arc::new(|_| None), home }
    }
}

/// What one call delivered.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Delivered {
    pub sent: usize,
    /// (notification id, the error), for the ones that failed this time.
    pub failed: Vec<(i64, String)>,
}

/// Claims and sends due notifications one at a time (at most [`MAX_PER_CALL`], none started
/// after [`CALL_BUDGET`]), settling each; `now` gives the clock (tests move it on).
pub fn deliver_due(
    store: &mut Store,
    secrets: &Secrets,
    now: &dyn Fn() -> i64,
    base: Duration,
) -> crate::error::Result<Delivered> {
    let started = Instant::now();
    let mut out = Delivered::default();
    for _ in 0..MAX_PER_CALL {
        if started.elapsed() > CALL_BUDGET {
            break;
        }
        let Some(n) = store.claim_notification(now())? else { break };
        let result = send(&n, secrets);
        store.settle_notification(n.id, result.as_ref().err().map(String::as_str), now(), base.as_millis() as i64)?;
        match result {
            Ok(()) => out.sent += 1,
            Err(e) => out.failed.push((n.id, e)),
        }
    }
    Ok(out)
}

/// Sends one notification to its target.
pub fn send(n: &Notification, secrets: &Secrets) -> Result<(), String> {
    send_to(&n.target, &n.message, secrets)
}

pub fn send_to(target: &Target, m: &Message, secrets: &Secrets) -> Result<(), String> {
    match target {
        Target::Command { argv } => {
            let mut args: Vec<String> = argv.iter().map(|a| m.fill(a)).collect();
            // The program may be written `~/bin/notify` in the inventory, like its other paths.
            if let Some(p) = args.first_mut().filter(|p| p.starts_with("~/")) {
                *p = crate::hosts::inventory::expand_local(p, &secrets.home).display().to_string();
            }
            run_command(&args)
        }
        Target::Webhook { url, format, token_env, token_file } => {
            let token = token(token_env.as_deref(), token_file.as_deref(), secrets)?;
            post(url, *format, m, token.as_deref())
        }
    }
}

/// The webhook's token, from its variable or file (trimmed); an unset variable or an
/// unreadable file is an error naming it.
fn token(env: Option<&str>, file: Option<&str>, secrets: &Secrets) -> Result<Option<String>, String> {
    if let Some(name) = env {
        let v = (secrets.env)(name).filter(|v| !v.trim().is_empty());
        return v.map(|v| Some(v.trim().to_string())).ok_or_else(|| {
            format!("webhook_token_env {name} is not set in delegate's environment: export it where delegate runs")
        });
    }
    if let Some(file) = file {
        let path = crate::hosts::inventory::expand_local(file, &secrets.home);
        let mut text = String::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(16 * 1024).read_to_string(&mut text))
            .map_err(|e| format!("webhook_token_file {}: {e}", path.display()))?;
        let t = text.trim();
        if t.is_empty() {
            return Err(format!("webhook_token_file {} is empty", path.display()));
        }
        return Ok(Some(t.to_string()));
    }
    Ok(None)
}

/// POSTs the message as JSON; any status but 2xx is an error (with the status only: a
/// response body is not read).
fn post(url: &str, format: WebhookFormat, m: &Message, token: Option<&str>) -> Result<(), String> {
    let (url, body) = m.webhook_body(format, url);
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .build();
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(WEBHOOK_TIMEOUT))
        .max_redirects(0)
        .http_status_as_error(false)
        .tls_config(tls)
        .user_agent("delegate")
        .build()
        .new_agent();
    let mut req = agent.post(&url).header("Content-Type", "application/json");
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let resp = req.send(body.to_string()).map_err(|e| format!("POST {}: {e}", super::Target::label_url(&url)))?;
    let status = resp.status();
    if status.is_success() { Ok(()) } else { Err(format!("POST {} answered {status}", super::Target::label_url(&url))) }
}

/// Runs the command with its own process group, stdin closed and stdout discarded; waits at
/// most [`COMMAND_TIMEOUT`], then kills the group. A non-zero exit is an error with the
/// start of its stderr.
fn run_command(argv: &[String]) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else { return Err("empty command".into()) };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let mut stderr = child.stderr.take().expect("stderr piped");
    // Read (and keep the start of) stderr aside so a chatty command never blocks on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = MAX_STDERR.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        kept
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => break None,
        }
    };
    let Some(status) = status else {
        // SAFETY: kill(2) on the process group we created; no memory is touched.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let _ = child.wait();
        return Err(format!("{program} did not finish within {}s and was killed", COMMAND_TIMEOUT.as_secs()));
    };
    // A grandchild that keeps stderr open must not hold us: wait for the reader only briefly.
    let kept = wait_briefly(reader);
    if status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&kept);
    Err(format!("{program} {status}: {}", crate::sanitize::clean_line(&err, 300)))
}

fn wait_briefly(reader: std::thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
    let until = Instant::now() + Duration::from_millis(500);
    while !reader.is_finished() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    if reader.is_finished() { reader.join().unwrap_or_default() } else { Vec::new() }
}

/// A sample message for `notify test`.
pub fn sample() -> Message {
    Message {
        task: Some(0),
        brother: "example".into(),
        status: "completed".into(),
        event: "completed".into(),
        subject: "delegate notify test".into(),
        reason: "a test notification; nothing happened".into(),
        schedule: None,
    }
}

/// Milliseconds now, for [`deliver_due`] outside tests.
pub fn clock() -> i64 {
    now_ms()
}
