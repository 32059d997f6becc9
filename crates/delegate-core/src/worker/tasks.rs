//! Launch tasks: pull one message at a time from the worker id's durable consumer (so
//! replicas share the queue), check it, run the launch script locally while telling the
//! server the message is still being worked on, publish `delegate.launched`, and only then
//! acknowledge the message.
//!
//! A worker that dies before the ack gets the message redelivered (to itself after a
//! restart, or to a replica): the launch script runs again with the same nonce, and
//! `launch.sh` itself refuses a second agent (a live session with this nonce prints its
//! marker again; a finished one is refused with code 29, and the worker then answers from
//! the task directory's `launch.json` when its nonce is the message's).

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures_util::StreamExt as _;

use super::{Shared, local, nats_error, state::Watched};
use crate::error::Result;
use crate::remote::{allowlist, code};
use crate::transport::nats::wire::{self, ExecReply, ResultMessage, TaskMessage};

/// How long a launch script may run (as over SSH).
pub const LAUNCH_LIMIT: Duration = Duration::from_secs(120);
/// Deliveries of one task before the server gives up on it (a launch that crashes the
/// worker every time is not retried forever).
pub const MAX_DELIVER: i64 = 5;
/// Where a refusal goes when the message did not name a usable mailbox.
pub const UNKNOWN_MAILBOX: &str = "_unknown";
/// The longest launch.json read back for a redelivered task (launch.sh writes a few KiB).
const MAX_LAUNCH_JSON: u64 = 64 * 1024;

/// The durable pull consumer of this worker id (created if missing).
pub async fn consumer(s: &Shared) -> Result<jetstream::consumer::Consumer<pull::Config>> {
    let id = &s.config.id;
    let stream =
        s.js.get_stream(wire::TASKS_STREAM)
            .await
            .map_err(|e| nats_error(&s.config.url, &format!("cannot open stream {}", wire::TASKS_STREAM), e))?;
    let name = wire::consumer_name(id);
    stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: wire::task_subject(id),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: s.config.ack_wait,
                max_deliver: MAX_DELIVER,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| nats_error(&s.config.url, &format!("cannot open consumer {name}"), e))
}

/// Pulls and handles tasks until the process stops. Server trouble is waited out.
pub async fn run(s: Shared) -> Result<()> {
    loop {
        if let Err(e) = pull_some(&s).await {
            s.log(&format!("{e}; retrying"));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// One pull of at most one message (so a replica that is busy launching leaves the next
/// task to another), waiting up to a few seconds for it.
async fn pull_some(s: &Shared) -> Result<()> {
    let consumer = consumer(s).await?;
    loop {
        let mut batch = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| nats_error(&s.config.url, "cannot pull tasks", e))?;
        while let Some(msg) = batch.next().await {
            let msg = msg.map_err(|e| nats_error(&s.config.url, "cannot pull tasks", e))?;
            handle(s, msg).await?;
        }
    }
}

/// A task that passed every check.
struct Checked {
    task: TaskMessage,
    script: Vec<u8>,
    /// The remote root the lead's launch script names.
    root: String,
}

/// Why a message is refused, with what it said about itself.
#[derive(Debug)]
struct Refusal {
    mailbox: Option<String>,
    task_key: Option<String>,
    nonce: Option<String>,
    reason: String,
}

async fn handle(s: &Shared, msg: jetstream::Message) -> Result<()> {
    match check(&msg.payload) {
        Err(refusal) => refuse(s, &msg, refusal).await,
        Ok(checked) => launch(s, &msg, checked).await,
    }
}

/// Bounds, parses and checks a task message.
fn check(payload: &[u8]) -> std::result::Result<Checked, Refusal> {
    let refusal = |reason: String| Refusal { mailbox: None, task_key: None, nonce: None, reason };
    // Read even when oversized (the server's max_payload bounds it) only to say which
    // task the refusal is about; nothing else of it is used.
    let too_big =
        || format!("the task message is {} bytes, over the limit of {} bytes", payload.len(), wire::MAX_TASK_MESSAGE);
    let value: serde_json::Value = serde_json::from_slice(payload).map_err(|e| {
        refusal(if payload.len() > wire::MAX_TASK_MESSAGE {
            too_big()
        } else {
            format!("the task message is not JSON: {e}")
        })
    })?;
    // Whatever the message says about itself (where a refusal goes), only if it is plain.
    let said = |field: &str| {
        value
            .get(field)
            .and_then(|v| v.as_str())
            .filter(|t| wire::check_token(field, t).is_ok() || plain_key(t))
            .map(str::to_string)
    };
    let mailbox = value
        .get("mailbox")
        .and_then(|v| v.as_str())
        .filter(|m| wire::check_token("mailbox", m).is_ok())
        .map(str::to_string);
    let with =
        |reason: String| Refusal { mailbox: mailbox.clone(), task_key: said("task_key"), nonce: said("nonce"), reason };
    if payload.len() > wire::MAX_TASK_MESSAGE {
        return Err(with(too_big()));
    }
    let version = value.get("v").and_then(|v| v.as_u64());
    if version != Some(u64::from(wire::WIRE_VERSION)) {
        return Err(with(format!(
            "the task message is wire version {}, this worker reads version {}: run the same delegate version on the lead and the worker",
            version.map_or("(none)".to_string(), |v| v.to_string()),
            wire::WIRE_VERSION
        )));
    }
    let task: TaskMessage = serde_json::from_value(value.clone())
        .map_err(|e| with(format!("the task message is not a delegate task: {e}")))?;
    if task.kind != wire::LAUNCH_KIND {
        return Err(with(format!("the task message's type is {:?}, not {:?}", task.kind, wire::LAUNCH_KIND)));
    }
    if mailbox.is_none() {
        return Err(with(format!("the mailbox {:?} is not a plain subject token", task.mailbox)));
    }
    if !plain_key(&task.task_key) || wire::check_token("nonce", &task.nonce).is_err() {
        return Err(with("the task key or nonce is not a plain name".into()));
    }
    if let Some(expires) = &task.expires_at {
        let at: jiff::Timestamp =
            expires.parse().map_err(|_| with(format!("expires_at {expires:?} is not an RFC 3339 time")))?;
        if at < jiff::Timestamp::now() {
            return Err(with(format!("expired: no worker took the task before {expires}")));
        }
    }
    let script = wire::unb64(&task.script).map_err(|e| with(format!("the launch script is {e}")))?;
    match allowlist::check(&script) {
        Ok("launch") => {}
        Ok(other) => return Err(with(format!("the task carries a {other} script, not a launch script"))),
        Err(e) => return Err(with(format!("the launch script is refused: {e}"))),
    }
    let root = launch_root(&script).ok_or_else(|| with("the launch script names no remote root".into()))?;
    if launch_field(&script, 0).as_deref() != Some(task.task_key.as_str())
        || launch_field(&script, 2).as_deref() != Some(task.nonce.as_str())
    {
        return Err(with("the launch script's task key or nonce is not the message's".into()));
    }
    Ok(Checked { task, script, root })
}

/// A task key: a plain file name (as the scripts require).
fn plain_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 200
        && !key.starts_with('.')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Field `n` of the launch script's `DLG_VARS` (escaped fields; see `remote::escape`).
fn launch_field(script: &[u8], n: usize) -> Option<String> {
    let line = script.split(|b| *b == b'\n').next()?;
    let value = line.strip_prefix(b"DLG_VARS='")?.strip_suffix(b"'")?;
    let field = crate::remote::escape::field(std::str::from_utf8(value).ok()?, n)?;
    String::from_utf8(field).ok()
}

/// The remote root the launch script names (field 3 of `DLG_VARS`).
fn launch_root(script: &[u8]) -> Option<String> {
    launch_field(script, 3).filter(|r| crate::hosts::inventory::check_remote_path(r).is_ok())
}

async fn refuse(s: &Shared, msg: &jetstream::Message, r: Refusal) -> Result<()> {
    s.log(&format!("refused a task message: {}", r.reason));
    let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
    let mailbox = r.mailbox.clone().unwrap_or_else(|| UNKNOWN_MAILBOX.into());
    let result = ResultMessage::Refused {
        v: wire::WIRE_VERSION,
        task_key: r.task_key,
        nonce: r.nonce,
        reason: crate::sanitize::clean_line(&r.reason, 2000),
    };
    // Published before the message is terminated: a crash between the two redelivers the
    // message, and the stream drops the second refusal as a duplicate.
    s.publish_result(&mailbox, &format!("refused.{}.{seq}", s.config.id), &result).await?;
    msg.ack_with(AckKind::Term).await.map_err(|e| nats_error(&s.config.url, "cannot terminate a refused task", e))
}

async fn launch(s: &Shared, msg: &jetstream::Message, c: Checked) -> Result<()> {
    let t = &c.task;
    s.log(&format!("launching task {} (delivery {})", t.task_key, msg.info().map(|i| i.delivered).unwrap_or(0)));
    let cap = reply_cap(s.max_payload());
    let run = local::run_script(&c.script, &s.config.home, LAUNCH_LIMIT, cap);
    tokio::pin!(run);
    // Tell the server the message is in hand well before its ack wait runs out.
    let mut progress = tokio::time::interval((s.config.ack_wait / 3).max(Duration::from_millis(500)));
    progress.tick().await;
    let mut reply = loop {
        tokio::select! {
            reply = &mut run => break reply,
            _ = progress.tick() => {
                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                    s.log(&format!("cannot send a progress ack for {}: {e}", t.task_key));
                }
            }
        }
    };
    if reply.exit == Some(code::ALREADY_LAUNCHED) {
        // An earlier delivery's launch script (its worker died) may still be starting the
        // agent: wait for its runner's first word, keeping the message alive meanwhile.
        let deadline = tokio::time::Instant::now() + LAUNCH_LIMIT;
        loop {
            match earlier_launch(&c, &s.config.home) {
                Earlier::NotOurs => break,
                Earlier::Started(answer) => {
                    reply = answer;
                    break;
                }
                Earlier::Pending if tokio::time::Instant::now() < deadline => {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(250)) => {}
                        _ = progress.tick() => { let _ = msg.ack_with(AckKind::Progress).await; }
                    }
                }
                Earlier::Pending => break,
            }
        }
    }
    let out = crate::remote::parse_output(&wire::unb64(&reply.stdout).unwrap_or_default(), &[]);
    let started = out.marker.as_ref().is_some_and(|m| m.nonce == t.nonce);
    if started {
        // Watched before the ack: a crash after the ack still has the task in the state.
        let key = t.task_key.clone();
        let w = Watched {
            mailbox: t.mailbox.clone(),
            session: t.session.clone(),
            nonce: t.nonce.clone(),
            root: c.root.clone(),
            ..Default::default()
        };
        let state = s.state.clone();
        // A redelivery keeps the offsets already published.
        tokio::task::spawn_blocking(move || {
            state.update(|tasks| {
                tasks.entry(key).or_insert(w);
            })
        })
        .await
        .map_err(|e| nats_error(&s.config.url, "worker state", e))??;
    }
    let result = ResultMessage::Launched {
        v: wire::WIRE_VERSION,
        task_key: t.task_key.clone(),
        nonce: t.nonce.clone(),
        instance: s.config.instance.clone(),
        exec: reply,
    };
    s.publish_result(&t.mailbox, &format!("{}.launched.{}", t.task_key, t.nonce), &result).await?;
    msg.double_ack().await.map_err(|e| nats_error(&s.config.url, &format!("cannot ack task {}", t.task_key), e))?;
    s.log(&format!("task {}: {}", t.task_key, if started { "launched" } else { "not launched (the result says why)" }));
    Ok(())
}

/// Caps each output stream so a reply (base64, both streams, JSON) fits in one message.
pub(crate) fn reply_cap(max_payload: usize) -> usize {
    (max_payload.saturating_sub(16 * 1024) * 3 / 4 / 2).max(1024)
}

enum Earlier {
    /// Another launch's directory (another nonce), or its runner refused: code 29 stands.
    NotOurs,
    /// Maybe this message's launch (no launch.json yet), or this message's launch whose
    /// runner has not said a word yet.
    Pending,
    /// This message's launch, started: what the launch script would have printed.
    Started(ExecReply),
}

/// After code 29: is the task directory this message's launch (same nonce in its
/// launch.json), and did its runner start?
fn earlier_launch(c: &Checked, home: &std::path::Path) -> Earlier {
    let dir = super::expand_home(&c.root, home).join("tasks").join(&c.task.task_key);
    let read = |name: &str| -> Option<String> {
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(std::fs::File::open(dir.join(name)).ok()?, MAX_LAUNCH_JSON),
            &mut text,
        )
        .ok()?;
        Some(text)
    };
    // The directory exists (that is what code 29 says) but launch.json is written later in
    // the launch: an earlier delivery's script may be between the two.
    let Some(text) = read("launch.json") else { return Earlier::Pending };
    let Some(line) = text.lines().next() else { return Earlier::Pending };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else { return Earlier::Pending };
    if json.get("nonce").and_then(|n| n.as_str()) != Some(c.task.nonce.as_str()) {
        return Earlier::NotOurs;
    }
    // The runner's first state line is what "launched" means (as in launch.sh).
    match read("state") {
        Some(s) if s.starts_with("started") => {}
        // The runner refused to start an agent (a cancel won): code 29 stands.
        Some(s) if s.starts_with("refused") => return Earlier::NotOurs,
        _ => return Earlier::Pending,
    }
    let stdout = format!("DELEGATE-EVIDENCE {line}\nDELEGATE-LAUNCHED {} {} -\n", c.task.nonce, c.task.session);
    Earlier::Started(ExecReply {
        v: wire::WIRE_VERSION,
        exit: Some(0),
        stdout: wire::b64(stdout.as_bytes()),
        stderr: String::new(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_refused_with_its_reason() {
        let e = check(b"not json").err().unwrap();
        assert!(e.reason.contains("not JSON"), "{e:?}");
        assert_eq!(e.mailbox, None);
        let e = check(br#"{"v":9,"mailbox":"m1","task_key":"m1-3"}"#).err().unwrap();
        assert!(e.reason.contains("version 9"), "{e:?}");
        assert_eq!((e.mailbox.as_deref(), e.task_key.as_deref()), (Some("m1"), Some("m1-3")));
        let e = check(br#"{"v":1,"mailbox":"m.>"}"#).err().unwrap();
        assert_eq!(e.mailbox, None, "a mailbox that is not one token is not used as a subject");
        let mut big = br#"{"v":1,"mailbox":"m1","pad":""#.to_vec();
        big.extend(std::iter::repeat_n(b'x', wire::MAX_TASK_MESSAGE));
        big.extend_from_slice(br#""}"#);
        let e = check(&big).err().unwrap();
        assert!(e.reason.contains("over the limit"), "{e:?}");
        assert_eq!(e.mailbox.as_deref(), Some("m1"));
    }
}
