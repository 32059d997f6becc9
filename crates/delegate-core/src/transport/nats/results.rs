//! Reading a NATS host's results (`delegate.results.<mailbox>.<worker>` in stream
//! `DELEGATE_RESULTS`) from a stream sequence on: an ephemeral pull consumer starting past
//! the sequence the mailbox stored, bounded per call, deleted afterwards. Nothing is
//! acknowledged or removed: the stream keeps results by age, so another lead process (or
//! this one after a crash) reads the same messages again, and the nonce and offset checks of
//! [`crate::ops::sync`] make that harmless.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, DeliverPolicy, pull};
use futures_util::StreamExt;

use super::wire::{self, ResultMessage};
use super::{Clients, NatsTarget, clients::js_error};
use crate::error::Result;

/// The largest result message taken (a sync's stdout for one task is bounded by the sync
/// script's caps; the server's max_payload is far lower by default).
pub const MAX_RESULT_MESSAGE: usize = 8 << 20;
/// Result messages read per host per round; the rest comes in the next.
pub const MAX_RESULTS_PER_ROUND: usize = 256;

/// One message of the results stream: its sequence, and what it says (or why it says
/// nothing usable).
#[derive(Debug)]
pub struct Read {
    pub seq: u64,
    pub message: std::result::Result<ResultMessage, String>,
}

/// Up to `max` result messages for `mailbox` from `t`'s worker, past sequence `after`.
pub async fn read(clients: &Clients, t: &NatsTarget, mailbox: &str, after: u64, max: usize) -> Result<Vec<Read>> {
    let client = clients.client(t).await?;
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(wire::RESULTS_STREAM).await.map_err(|e| {
        js_error(t, &format!("opening stream {} (a launch creates it; see the README)", wire::RESULTS_STREAM), e)
    })?;
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: wire::results_subject(mailbox, &t.worker_id),
            deliver_policy: if after == 0 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence { start_sequence: after + 1 }
            },
            ack_policy: consumer::AckPolicy::None,
            // Left behind by a lead that died: the server drops it.
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .map_err(|e| js_error(t, "reading the results (creating a consumer)", e))?;
    let name = consumer.cached_info().name.clone();
    let mut out = Vec::new();
    let fetched = consumer.fetch().max_messages(max).messages().await;
    let mut batch = match fetched {
        Ok(b) => b,
        Err(e) => {
            let _ = stream.delete_consumer(&name).await;
            return Err(js_error(t, "reading the results", e));
        }
    };
    while let Some(m) = batch.next().await {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                let _ = stream.delete_consumer(&name).await;
                return Err(js_error(t, "reading the results", e));
            }
        };
        let Ok(info) = m.info() else { continue };
        let seq = info.stream_sequence;
        let message = if m.payload.len() > MAX_RESULT_MESSAGE {
            Err(format!("{} bytes, over the {MAX_RESULT_MESSAGE}-byte limit", m.payload.len()))
        } else {
            serde_json::from_slice::<ResultMessage>(&m.payload)
                .map_err(|e| format!("not a result message: {}", crate::sanitize::clean_line(&e.to_string(), 200)))
        };
        out.push(Read { seq, message });
    }
    let _ = stream.delete_consumer(&name).await;
    Ok(out)
}
