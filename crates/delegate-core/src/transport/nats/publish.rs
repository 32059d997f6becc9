//! Handing a launch to a worker: the task message is published to
//! `delegate.tasks.<worker>` through JetStream, with a publish acknowledgement (the server
//! stored it) and `Nats-Msg-Id: <task_key>.<nonce>` (a publish repeated within the stream's
//! duplicate window is stored once). Then the lead waits a short while for the worker's
//! `launched` result; a worker that is offline leaves the task waiting in the stream.

use std::time::Duration;

use futures_util::StreamExt;

use super::wire::{self, ResultMessage, TaskMessage};
use super::{Clients, NatsTarget, clients::js_error};
use crate::error::{Error, Result};
use crate::transport::ExecOutput;

/// How long JetStream may take to acknowledge a publish.
const ACK_LIMIT: Duration = Duration::from_secs(10);

/// What became of a hand-over.
#[derive(Debug)]
pub enum Handoff {
    /// The worker's `launched` result arrived in time: its output, read like an SSH launch's.
    Launched { out: ExecOutput, instance: String },
    /// The worker refused the task (its words, cleaned).
    Refused { reason: String },
    /// Stored by the server (stream sequence `seq`); no worker answered within the wait.
    Queued { seq: u64, duplicate: bool },
}

/// Publishes `msg` for `t`'s worker and waits up to `t.launch_wait` for its result.
pub async fn hand_over(clients: &Clients, t: &NatsTarget, msg: &TaskMessage) -> Result<Handoff> {
    let client = clients.client(t).await?;
    let payload = serde_json::to_vec(msg).expect("task messages serialize");
    let limit = client.max_payload().min(wire::MAX_TASK_MESSAGE);
    if payload.len() > limit {
        return Err(Error::Nats {
            host: t.host.clone(),
            url: t.url.clone(),
            what: format!(
                "the task message is {} bytes, over the {limit} bytes the server and worker take (max_payload); \
                 shorten the prompt or raise max_payload on the server",
                payload.len()
            ),
        });
    }
    let js = async_nats::jetstream::new(client.clone());
    super::connect::ensure_streams(&js, &t.url).await.map_err(|e| super::clients::as_nats_error(t, e))?;
    // Subscribed before publishing: a worker that answers at once is not missed.
    let results = wire::results_subject(&msg.mailbox, &t.worker_id);
    let mut sub = client.subscribe(results).await.map_err(|e| js_error(t, "subscribing to the results", e))?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(wire::MSG_ID_HEADER, format!("{}.{}", msg.task_key, msg.nonce).as_str());
    let ack = js
        .publish_with_headers(wire::task_subject(&t.worker_id), headers, payload.into())
        .await
        .map_err(|e| js_error(t, "publishing the task", e))?;
    let ack = tokio::time::timeout(ACK_LIMIT, ack)
        .await
        .map_err(|_| js_error(t, "publishing the task", "no acknowledgement from JetStream"))?
        .map_err(|e| js_error(t, "publishing the task", e))?;
    let waited = tokio::time::timeout(t.launch_wait, async {
        while let Some(m) = sub.next().await {
            if m.payload.len() > super::results::MAX_RESULT_MESSAGE {
                continue;
            }
            match serde_json::from_slice::<ResultMessage>(&m.payload) {
                Ok(ResultMessage::Launched { v, task_key, nonce, instance, exec })
                    if v == wire::WIRE_VERSION && task_key == msg.task_key && nonce == msg.nonce =>
                {
                    let Ok(instance) = checked_instance(&instance) else { continue };
                    // A reply that cannot be read is left to sync, which records why.
                    if let Ok(out) = super::exec::output(&exec) {
                        return Some(Handoff::Launched { out, instance });
                    }
                }
                Ok(ResultMessage::Refused { v, task_key: Some(k), reason, nonce })
                    if v == wire::WIRE_VERSION
                        && k == msg.task_key
                        && nonce.as_deref().is_none_or(|n| n == msg.nonce) =>
                {
                    return Some(Handoff::Refused { reason: crate::sanitize::clean_line(&reason, 300) });
                }
                _ => {}
            }
        }
        None
    })
    .await;
    let _ = sub.unsubscribe().await;
    Ok(waited.ok().flatten().unwrap_or(Handoff::Queued { seq: ack.sequence, duplicate: ack.duplicate }))
}

/// A replica name from the worker becomes a subject token of later requests: checked.
pub fn checked_instance(instance: &str) -> std::result::Result<String, String> {
    wire::check_token("instance", instance).map(|()| instance.to_string())
}
