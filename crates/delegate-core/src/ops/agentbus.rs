//! The lead's side of agentbus interop: a task for a host with `protocol = "agentbus"` is
//! published as an agentbus task to `agentbus.<worker_id>.tasks` (JetStream, publish
//! acknowledged, `Nats-Msg-Id` = the agentbus task id), its result comes back on
//! `agentbus.<reply agent>.results`, which the lead reads from the sequence stored in the
//! mailbox (migration 014): a result read twice, or published twice, is recorded once, and
//! one that arrived while the lead was offline is read at its next sync.
//!
//! agentbus has no way to talk to a running task: `say` and `cancel` of such a task are
//! refused ([`refuse`], exit 50).

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;

use crate::error::{Error, Result};
use crate::mailbox::Store;
use crate::mailbox::agentbus::ResultRecord;
use crate::transport::nats::agentbus::{self as ab, Status, TaskResult};
use crate::transport::nats::wire;

/// The longest final text kept from a result (characters); agentbus has no limit.
pub const MAX_RESULT_TEXT: usize = 64 * 1024;
/// The longest failure reason kept (characters).
pub const MAX_ERROR_TEXT: usize = 2000;
/// At most this many results are read in one collection; the rest come next time.
pub const MAX_RESULTS_PER_ROUND: usize = 256;

/// The agentbus agent id a mailbox's results come back to: `delegate-<mailbox id>` (one
/// subject token), so two leads' results never mix.
pub fn reply_agent(mailbox_id: &str) -> String {
    let candidate = format!("delegate-{mailbox_id}");
    if wire::check_token("reply agent", &candidate).is_ok() {
        candidate
    } else {
        format!("delegate-{}", &crate::ops::launch::sha256_hex(mailbox_id.as_bytes())[..16])
    }
}

fn refused(task: i64, why: String) -> Error {
    Error::Agentbus { task, why }
}

/// Publishes task `task_id` (recorded in the mailbox, not yet sent) to agentbus worker
/// `worker` and records the handover: the task is `launched` once the stream stored it.
/// Returns the agentbus task id.
pub async fn hand_over(store: &mut Store, js: &jetstream::Context, worker: &str, task_id: i64) -> Result<String> {
    wire::check_token("agentbus worker id", worker).map_err(|why| refused(task_id, why))?;
    let task = store.task(task_id)?;
    let prompt = store.prompt(task_id)?;
    let content = String::from_utf8(prompt).map_err(|_| {
        refused(task_id, "the prompt is not UTF-8 text, which an agentbus task (JSON) cannot carry".into())
    })?;
    let reply = reply_agent(store.mailbox_id());
    let message = ab::Task::new(&reply, worker, &reply, &content);
    ab::ensure_streams(js, "the NATS server").await.map_err(|e| refused(task_id, e.to_string()))?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(wire::MSG_ID_HEADER, message.id.as_str());
    let subject = wire::agentbus_task_subject(worker);
    let ack = js
        .publish_with_headers(subject.clone(), headers, message.to_bytes().into())
        .await
        .map_err(|e| refused(task_id, format!("cannot publish to {subject}: {e}")))?;
    ack.await.map_err(|e| refused(task_id, format!("{subject} did not store the task: {e}")))?;
    store.agentbus_handed(task_id, task.version, &message.id, worker, &reply)?;
    Ok(message.id)
}

/// Reads the results for this mailbox past its stored sequence (at most
/// [`MAX_RESULTS_PER_ROUND`]) and records each that answers one of its tasks. Returns the
/// tasks recorded.
pub async fn collect(store: &mut Store, js: &jetstream::Context) -> Result<Vec<i64>> {
    let reply = reply_agent(store.mailbox_id());
    let from = store.agentbus_cursor(&reply)?;
    let nats = |what: &str, e: &dyn std::fmt::Display| Error::Config {
        path: "(nats)".into(),
        message: format!("agentbus results: {what}: {e}"),
    };
    let stream = js.get_stream(wire::AGENTBUS_RESULTS_STREAM).await.map_err(|e| nats("cannot open the stream", &e))?;
    // An ephemeral consumer that reads this mailbox's subject from the stored sequence on
    // and acknowledges nothing: the results stay for `agentbus result get` and other readers.
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: from + 1 },
            filter_subject: wire::agentbus_result_subject(&reply),
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .map_err(|e| nats("cannot read", &e))?;
    let mut recorded = Vec::new();
    let mut messages = consumer
        .fetch()
        .max_messages(MAX_RESULTS_PER_ROUND)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .map_err(|e| nats("cannot read", &e))?;
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| nats("cannot read", &e))?;
        let seq = msg.info().map(|i| i.stream_sequence).map_err(|e| nats("a message without its sequence", &e))?;
        // A message that is not a result of ours is passed over (the cursor still moves).
        let record = TaskResult::parse(&msg.payload).ok().and_then(|r| record_of(&r));
        if let Some(task) = store.agentbus_record(&reply, seq, record.as_ref())? {
            recorded.push(task);
        }
    }
    let _ = stream.delete_consumer(&consumer.cached_info().name).await;
    Ok(recorded)
}

/// [`collect`] for every NATS host whose worker speaks agentbus and has tasks in flight:
/// one read of its results stream per server. A server that cannot be reached is left for
/// the next sync (the results wait in the stream).
pub async fn collect_for_inventory(d: &mut crate::Delegate) -> Result<()> {
    let hosts: Vec<String> = d
        .inventory()
        .hosts
        .iter()
        .filter(|(_, h)| h.protocol == Some(crate::hosts::inventory::NatsProtocol::Agentbus))
        .map(|(name, _)| name.clone())
        .collect();
    if hosts.is_empty() {
        return Ok(());
    }
    let waiting = d.store().in_flight()?.into_iter().any(|r| hosts.contains(&r.host));
    if !waiting {
        return Ok(());
    }
    let mut seen = Vec::new();
    for host in hosts {
        let crate::transport::Reach::Nats(t) = d.reach(&host)? else { continue };
        if seen.contains(&(t.url.clone(), t.creds.clone())) {
            continue;
        }
        seen.push((t.url.clone(), t.creds.clone()));
        let Ok(client) = d.transport().nats_clients().client(&t).await else { continue };
        let js = jetstream::new(client);
        let _ = collect(d.store_mut(), &js).await;
    }
    Ok(())
}

/// What the mailbox keeps of a result: its text made safe and bounded.
fn record_of(r: &TaskResult) -> Option<ResultRecord> {
    let message_id = r.task_id()?.to_string();
    Some(match r.status {
        Status::Completed => ResultRecord {
            message_id,
            completed: true,
            text: crate::sanitize::clip(
                &crate::sanitize::printable(r.result.as_deref().unwrap_or("")),
                MAX_RESULT_TEXT,
            ),
        },
        Status::Failed => ResultRecord {
            message_id,
            completed: false,
            text: crate::sanitize::clean_line(r.error.as_deref().unwrap_or("no reason given"), MAX_ERROR_TEXT),
        },
    })
}

/// `say` and `cancel` of a task handed to an agentbus worker: refused, naming why and what
/// to do instead. `Ok` for every other task.
pub fn refuse(store: &Store, task_id: i64, what: &str) -> Result<()> {
    match store.agentbus_task(task_id)? {
        Some(h) => Err(refused(
            task_id,
            format!(
                "{what} is not possible: the task went to agentbus worker {} (agentbus task {}), and agentbus has \
                 no way to reach a running task. Wait for its result (delegate wait {task_id})",
                h.worker, h.message_id
            ),
        )),
        None => Ok(()),
    }
}
