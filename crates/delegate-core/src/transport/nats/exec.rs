//! The lead's side of running one of delegate's scripts on a worker: a core NATS
//! request/reply on [`wire::exec_subject`] (a task's replica when it is known, else any one
//! replica of the worker id) carrying an [`ExecRequest`], answered by an [`ExecReply`] that
//! is read like an SSH exec's output. Everything in the reply is the worker's word: its
//! size, version and base64 are checked, and each stream is capped like an SSH exec's.

use std::time::Duration;

use super::wire::{self, ExecReply, ExecRequest};
use super::{Clients, NatsTarget};
use crate::error::{Error, Result};
use crate::transport::ssh::MAX_EXEC_OUTPUT;
use crate::transport::{Connection, ExecOutput, Exit};

/// The largest reply taken: both streams at their cap, base64 (4/3) and the JSON around.
pub const MAX_EXEC_REPLY: usize = (MAX_EXEC_OUTPUT * 2) / 3 * 4 + 64 * 1024;

/// How long past the script's own limit the lead waits for the reply (the worker stops the
/// script at the limit, then answers).
const REPLY_GRACE: Duration = Duration::from_secs(5);

/// Runs `stdin` (one of delegate's scripts; the worker checks it is) on `t`'s worker.
pub async fn exec(
    clients: &Clients,
    t: &NatsTarget,
    command: &str,
    stdin: &[u8],
    limit: Duration,
) -> Result<(ExecOutput, Connection)> {
    if command != crate::remote::REMOTE_COMMAND {
        // A worker runs scripts on stdin only, exactly as `REMOTE_COMMAND` would over SSH.
        return Err(Error::Config {
            path: "(nats)".into(),
            message: format!("host {}: a NATS worker runs only delegate's scripts, not other commands", t.host),
        });
    }
    let client = clients.client(t).await?;
    let request = ExecRequest {
        v: wire::WIRE_VERSION,
        script: wire::b64(stdin),
        limit_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
    };
    let payload = serde_json::to_vec(&request).expect("requests serialize");
    if payload.len() > client.max_payload() {
        return Err(Error::Nats {
            host: t.host.clone(),
            url: t.url.clone(),
            what: format!(
                "the script ({} bytes as a request) is over the server's max_payload ({} bytes); raise max_payload \
                 in the server's configuration",
                payload.len(),
                client.max_payload()
            ),
        });
    }
    let subject = wire::exec_subject(&t.worker_id, t.instance.as_deref());
    let req = async_nats::Request::new().payload(payload.into()).timeout(Some(limit + REPLY_GRACE));
    let conn = Connection { fresh: None, warm: false };
    let reply = match client.send_request(subject, req).await {
        Ok(m) => m,
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            let whom = match &t.instance {
                Some(i) => format!("worker {} (replica {i}, which ran this task)", t.worker_id),
                None => format!("worker {}", t.worker_id),
            };
            return Err(Error::NoWorker {
                host: t.host.clone(),
                worker: t.worker_id.clone(),
                why: format!(
                    "no {whom} is connected to {}: start `delegate worker --nats {} --id {}` on the brother \
                     (or check its service)",
                    t.url, t.url, t.worker_id
                ),
            });
        }
        Err(e) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
            // The worker may have run it: as over SSH, a command unanswered is unknown.
            let out = ExecOutput {
                exit: Exit::Unknown,
                broken: Some(format!(
                    "no worker answered within {} s (worker {} on {})",
                    (limit + REPLY_GRACE).as_secs(),
                    t.worker_id,
                    t.url
                )),
                ..ExecOutput::default()
            };
            return Ok((out, conn));
        }
        Err(e) => return Err(super::clients::js_error(t, "sending the request", e)),
    };
    if reply.payload.len() > MAX_EXEC_REPLY {
        return Err(Error::OutputTooLarge { host: t.host.clone(), limit: MAX_EXEC_REPLY });
    }
    let reply: ExecReply = serde_json::from_slice(&reply.payload).map_err(|e| {
        bad_reply(t, format!("not an exec reply: {}", crate::sanitize::clean_line(&e.to_string(), 200)))
    })?;
    Ok((output(&reply).map_err(|why| bad_reply(t, why))?, conn))
}

fn bad_reply(t: &NatsTarget, why: String) -> Error {
    Error::SyncFailed { host: t.host.clone(), why: format!("worker {} sent a bad reply: {why}", t.worker_id) }
}

/// An [`ExecReply`] (an exec's answer, or a `launched` result's) as the [`ExecOutput`] an SSH
/// exec gives: version and base64 checked, each stream capped at [`MAX_EXEC_OUTPUT`]
/// (`overflow` when cut, as SSH would), the signal name and the worker's words cleaned.
pub fn output(reply: &ExecReply) -> std::result::Result<ExecOutput, String> {
    if reply.v != wire::WIRE_VERSION {
        return Err(format!("wire version {} (this lead speaks {})", reply.v, wire::WIRE_VERSION));
    }
    let mut stdout = wire::unb64(&reply.stdout).map_err(|e| format!("stdout {e}"))?;
    let mut stderr = wire::unb64(&reply.stderr).map_err(|e| format!("stderr {e}"))?;
    let mut overflow = reply.overflow;
    for stream in [&mut stdout, &mut stderr] {
        if stream.len() > MAX_EXEC_OUTPUT {
            stream.truncate(MAX_EXEC_OUTPUT);
            overflow = true;
        }
    }
    let signal = reply.signal.as_deref().map(|s| {
        let s: String = s.chars().filter(|c| c.is_ascii_alphanumeric()).take(16).collect();
        if s.is_empty() { "unknown".to_string() } else { s }
    });
    let exit = match (reply.exit, signal) {
        (Some(c), _) if c >= 0 => Exit::Code(c as u32),
        (_, Some(s)) => Exit::Signal(s),
        _ => Exit::Unknown,
    };
    let mut broken = reply.broken.as_deref().map(|b| crate::sanitize::clean_line(b, 300));
    if overflow && broken.is_none() {
        broken = Some(format!("the worker's output went over {MAX_EXEC_OUTPUT} bytes and was cut"));
    }
    let exit = if overflow { Exit::Unknown } else { exit };
    Ok(ExecOutput { stdout, stderr, exit, broken, overflow })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(stdout: &str) -> ExecReply {
        ExecReply { v: 1, exit: Some(0), stdout: stdout.into(), stderr: String::new(), ..Default::default() }
    }

    #[test]
    fn a_reply_is_checked_like_an_ssh_exec_s_output() {
        let out = output(&reply(&wire::b64(b"hello"))).unwrap();
        assert_eq!((out.stdout.as_slice(), &out.exit), (&b"hello"[..], &Exit::Code(0)));
        assert!(output(&reply("not base64!")).unwrap_err().contains("stdout not base64"));
        let mut other = reply("");
        other.v = 2;
        assert!(output(&other).unwrap_err().contains("wire version 2"));
        let signal = ExecReply { exit: None, signal: Some("KILL\u{1b}[2J".into()), ..reply("") };
        assert_eq!(output(&signal).unwrap().exit, Exit::Signal("KILL2J".into()));
        let negative = ExecReply { exit: Some(-1), ..reply("") };
        assert_eq!(output(&negative).unwrap().exit, Exit::Unknown);
        let broken = ExecReply { broken: Some("cut\nDELEGATE-OK forged".into()), ..reply("") };
        assert!(!output(&broken).unwrap().broken.unwrap().contains('\n'));
    }
}
