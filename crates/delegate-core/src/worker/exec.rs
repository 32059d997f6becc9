//! The exec responder: the lead's say, cancel, logs, diff, doctor... arrive as core
//! requests on `delegate.exec.<id>` (any replica, queue group) and
//! `delegate.exec.<id>.<instance>` (the replica that ran the task). Each is checked
//! against the allowlist, run locally within its limit, and answered with an
//! [`ExecReply`] that fits in one message (`overflow` when an output was cut).

use std::time::Duration;

use futures_util::StreamExt as _;

use super::{Shared, local, nats_error};
use crate::error::Result;
use crate::remote::allowlist;
use crate::transport::nats::wire::{self, ExecReply, ExecRequest};

/// The longest an exec may run, whatever the request asks (a diff of a big tree, doctor).
pub const MAX_EXEC_LIMIT: Duration = Duration::from_secs(600);

pub async fn run(s: Shared) -> Result<()> {
    let id = &s.config.id;
    let any = s
        .client
        .queue_subscribe(wire::exec_subject(id, None), wire::EXEC_QUEUE_GROUP.into())
        .await
        .map_err(|e| nats_error(&s.config.url, "cannot subscribe to exec requests", e))?;
    let mine = s
        .client
        .queue_subscribe(wire::exec_subject(id, Some(&s.config.instance)), wire::EXEC_QUEUE_GROUP.into())
        .await
        .map_err(|e| nats_error(&s.config.url, "cannot subscribe to exec requests", e))?;
    let mut requests = futures_util::stream::select(any, mine);
    // The client re-subscribes by itself after a reconnect, so this stream outlives outages.
    while let Some(msg) = requests.next().await {
        let Some(reply_to) = msg.reply.clone() else { continue };
        let s = s.clone();
        // Each request runs on its own: a long diff does not hold up a cancel.
        tokio::spawn(async move {
            let reply = answer(&s, &msg.payload).await;
            let body = serde_json::to_vec(&reply).unwrap_or_default();
            if let Err(e) = s.client.publish(reply_to, body.into()).await {
                s.log(&format!("cannot answer an exec request: {e}"));
            }
        });
    }
    Ok(())
}

/// Checks and runs one request.
pub async fn answer(s: &Shared, payload: &[u8]) -> ExecReply {
    let refuse = |why: String| {
        s.log(&format!("refused an exec request: {why}"));
        ExecReply {
            v: wire::WIRE_VERSION,
            broken: Some(crate::sanitize::clean_line(&format!("refused: {why}"), 2000)),
            ..Default::default()
        }
    };
    let req: ExecRequest = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => return refuse(format!("the exec request is not valid: {e}")),
    };
    if req.v != wire::WIRE_VERSION {
        return refuse(format!(
            "the exec request is wire version {}, this worker reads version {}",
            req.v,
            wire::WIRE_VERSION
        ));
    }
    let script = match wire::unb64(&req.script) {
        Ok(b) => b,
        Err(e) => return refuse(format!("the script is {e}")),
    };
    match allowlist::check(&script) {
        // Launches come only through the task stream, where redelivery and the nonce
        // make them happen once.
        Ok("launch") => return refuse("a launch script goes through the task stream, not an exec request".into()),
        Ok(_) => {}
        Err(e) => return refuse(e),
    }
    let limit = Duration::from_millis(req.limit_ms).min(MAX_EXEC_LIMIT);
    let mut reply = local::run_script(&script, &s.config.home, limit, super::tasks::reply_cap(s.max_payload())).await;
    fit(&mut reply, s.max_payload());
    reply
}

/// Halves stderr, then stdout, until the encoded reply fits in `max_payload`.
fn fit(reply: &mut ExecReply, max_payload: usize) {
    let budget = max_payload.saturating_sub(4096);
    let size = |r: &ExecReply| serde_json::to_vec(r).map(|v| v.len()).unwrap_or(usize::MAX);
    while size(reply) > budget && !(reply.stderr.is_empty() && reply.stdout.is_empty()) {
        reply.overflow = true;
        let field = if !reply.stderr.is_empty() { &mut reply.stderr } else { &mut reply.stdout };
        let bytes = wire::unb64(field).unwrap_or_default();
        *field = wire::b64(&bytes[..bytes.len() / 2]);
    }
}
