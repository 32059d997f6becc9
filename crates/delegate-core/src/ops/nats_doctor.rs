//! `delegate doctor` for a NATS host (`transport = "nats"`): what the lead can check from
//! its side of the server. The server answers with the lead's credentials; delegate's two
//! streams exist; the worker id's durable consumer exists (a worker connected once) and
//! whether a worker is pulling from it now, and when one last did.

use std::time::SystemTime;

use super::doctor::{Finding, Status};
use crate::transport::Transport;
use crate::transport::nats::{NatsTarget, wire};

fn finding(check: &str, status: Status, detail: String, fix: Option<String>) -> Finding {
    Finding { check: check.into(), status, detail: crate::sanitize::clean_line(&detail, 600), fix }
}

/// The findings for one NATS host (shared by its brothers).
pub(crate) async fn check(transport: &Transport, t: &NatsTarget) -> Vec<Finding> {
    let mut out = Vec::new();
    let client = match transport.nats_clients().client(t).await {
        Ok(c) => c,
        Err(e) => {
            out.push(finding(
                "nats_server",
                Status::Fail,
                e.to_string(),
                Some(format!(
                    "check that the NATS server at {} runs and is reachable from here, and that `creds` holds \
                     credentials it accepts",
                    t.url
                )),
            ));
            return out;
        }
    };
    let info = client.server_info();
    out.push(finding(
        "nats_server",
        Status::Ok,
        format!("{} answers (nats-server {}, max_payload {} bytes)", t.url, info.version, info.max_payload),
        None,
    ));
    let js = async_nats::jetstream::new(client);
    for stream in [wire::TASKS_STREAM, wire::RESULTS_STREAM] {
        if let Err(e) = js.get_stream(stream).await {
            out.push(finding(
                "nats_streams",
                Status::Warn,
                format!("stream {stream}: {e}"),
                Some("the first launch creates it (with the stream-create permission), or an administrator does; see \"NATS permissions\" in the README".into()),
            ));
            return out;
        }
    }
    out.push(finding(
        "nats_streams",
        Status::Ok,
        format!("{} and {} exist", wire::TASKS_STREAM, wire::RESULTS_STREAM),
        None,
    ));
    let start =
        format!("run `delegate worker --nats {} --id {}` on the brother (or start its service)", t.url, t.worker_id);
    let consumer = js.get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
        wire::consumer_name(&t.worker_id),
        wire::TASKS_STREAM,
    );
    let mut consumer = match consumer.await {
        Ok(c) => c,
        Err(e) => {
            out.push(finding(
                "nats_worker",
                Status::Fail,
                format!(
                    "no worker with id {} ever connected (consumer {}: {e})",
                    t.worker_id,
                    wire::consumer_name(&t.worker_id)
                ),
                Some(start),
            ));
            return out;
        }
    };
    match consumer.info().await {
        Ok(i) => {
            let last = i.delivered.last_active.map(|at| {
                let secs = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|n| n.as_secs() as i64)
                    .unwrap_or(0)
                    .saturating_sub(at.unix_timestamp());
                format!(
                    "last took a task {} ago",
                    humantime::format_duration(std::time::Duration::from_secs(secs.max(0) as u64))
                )
            });
            let last = last.unwrap_or_else(|| "has taken no task yet".into());
            if i.num_waiting > 0 {
                out.push(finding(
                    "nats_worker",
                    Status::Ok,
                    format!(
                        "worker {} is pulling now ({} tasks waiting for it; it {last})",
                        t.worker_id, i.num_pending
                    ),
                    None,
                ));
            } else {
                out.push(finding(
                    "nats_worker",
                    Status::Warn,
                    format!(
                        "no worker {} is pulling right now ({} tasks wait for it; it {last}); tasks stay queued until one does",
                        t.worker_id, i.num_pending
                    ),
                    Some(start),
                ));
            }
        }
        Err(e) => out.push(finding("nats_worker", Status::Fail, e.to_string(), Some(start))),
    }
    out
}
