//! The lead's side of a NATS host (`transport = "nats"`): handing a launch to the worker,
//! and reading what the worker published back.
//!
//! A launch publishes its task message and waits briefly for the worker's `launched`
//! result; if none comes, the task waits `queued` ("handed to the broker": it counts against
//! the caps and the dispatcher never publishes it again). Sync reads the host's results from
//! the stream sequence the mailbox stored: a `launched` result is recorded exactly as an SSH
//! launch's output (only for a run still waiting, and only with its nonce); a `sync` result
//! is the worker's own sync of one task, parsed like an SSH sync reply, of which only the
//! bytes past the lead's own offsets are applied (so a message read twice adds nothing, and
//! a gap is recorded as an event); a `refused` result fails the waiting task with the
//! worker's reason. The sequence is stored after each message is applied.

use std::time::{Instant, SystemTime};

use serde_json::json;

use crate::delegate::Delegate;
use crate::error::{Error, Result};
use crate::mailbox::{Applied, InFlight, NewEvent, RunStart};
use crate::ops::launch::{Sent, record_exec};
use crate::ops::sync::{CLOCK_REFRESH_MS, HostSync, plan, task_key};
use crate::remote::protocol::{SayState, parse_sync};
use crate::task::TaskStatus;
use crate::transport::nats::publish::{self, Handoff};
use crate::transport::nats::results::{self, MAX_RESULTS_PER_ROUND};
use crate::transport::nats::wire::{self, ResultMessage, TaskMessage};
use crate::transport::{Connection, ExecOutput, NatsTarget, Transport};

/// How a hand-over went (what the worker said, if it said anything in time, is the
/// `result` next to it).
#[derive(Debug)]
pub(crate) enum Handed {
    /// Nothing was stored by the server (unreachable, a permission, the size): the result
    /// is the error.
    NotSent,
    /// The worker's `launched` result: the result is its output.
    Launched { instance: String },
    /// The worker refused the task: the result is [`Error::NoWorker`] with its reason.
    Refused,
    /// Stored by the server; no worker answered within the launch wait.
    Queued { seq: u64, duplicate: bool },
}

/// Publishes run `run` of a launch (its `script` rendered as for SSH) for `t`'s worker.
pub(crate) async fn hand_over(
    transport: &Transport,
    t: &NatsTarget,
    mailbox: &str,
    run: &RunStart,
    script: &[u8],
) -> (Result<(ExecOutput, Connection)>, Handed) {
    let now = SystemTime::now();
    let msg = TaskMessage {
        v: wire::WIRE_VERSION,
        kind: wire::LAUNCH_KIND.into(),
        mailbox: mailbox.to_string(),
        task: run.task_id,
        run_no: run.run_no,
        task_key: task_key(mailbox, run.task_id, run.run_no),
        nonce: run.nonce.clone(),
        session: run.session.clone(),
        script: wire::b64(script),
        created_at: humantime::format_rfc3339_millis(now).to_string(),
        expires_at: t.task_ttl.map(|ttl| humantime::format_rfc3339_millis(now + ttl).to_string()),
    };
    let conn = Connection { fresh: None, warm: false };
    match publish::hand_over(transport.nats_clients(), t, &msg).await {
        Err(e) => (Err(e), Handed::NotSent),
        Ok(Handoff::Launched { out, instance }) => (Ok((out, conn)), Handed::Launched { instance }),
        Ok(Handoff::Refused { reason }) => (Err(refused(t, &reason)), Handed::Refused),
        Ok(Handoff::Queued { seq, duplicate }) => {
            (Err(Error::Config { path: "(nats)".into(), message: "queued".into() }), Handed::Queued { seq, duplicate })
        }
    }
}

fn refused(t: &NatsTarget, reason: &str) -> Error {
    Error::NoWorker {
        host: t.host.clone(),
        worker: t.worker_id.clone(),
        why: format!("worker {} refused the task: {}", t.worker_id, crate::sanitize::clean_line(reason, 300)),
    }
}

/// What [`crate::ops::launch`] does next with a hand-over.
pub(crate) enum Next {
    /// Recorded already (waiting `queued` for the worker).
    Done(Box<crate::task::Task>),
    /// Record the result as a launch's output; on success the run belongs to `instance`.
    Record { instance: Option<String> },
}

/// Records a hand-over that left the task waiting for its worker, and notes in the launch
/// evidence how the task went to the server.
pub(crate) fn record_hand_over(
    d: &mut Delegate,
    run: &RunStart,
    _brother: &str,
    t: &NatsTarget,
    handed: &Handed,
    evidence: &mut serde_json::Value,
    total_ms: f64,
) -> Result<Next> {
    evidence["nats"] = json!({
        "url": t.url,
        "worker_id": t.worker_id,
        "subject": wire::task_subject(&t.worker_id),
        "msg_id": format!("{}.{}", task_key(d.store().mailbox_id(), run.task_id, run.run_no), run.nonce),
        "task_ttl_secs": t.task_ttl.map(|d| d.as_secs()),
    });
    evidence["timings"] = json!({ "total_ms": total_ms });
    match handed {
        Handed::NotSent | Handed::Refused => Ok(Next::Record { instance: None }),
        Handed::Launched { instance } => {
            evidence["nats"]["instance"] = json!(instance);
            Ok(Next::Record { instance: Some(instance.clone()) })
        }
        Handed::Queued { seq, duplicate } => {
            evidence["nats"]["stream_seq"] = json!(seq);
            evidence["nats"]["duplicate"] = json!(duplicate);
            let ttl =
                t.task_ttl.map(|d| format!("; it fails if none takes it within {}", humantime::format_duration(d)));
            let reason = format!(
                "waiting for worker {} to take it (handed to {}){}",
                t.worker_id,
                t.url,
                ttl.unwrap_or_default()
            );
            d.store_mut().hand_to_broker(run, &reason, evidence)?;
            Ok(Next::Done(Box::new(d.store().task(run.task_id)?)))
        }
    }
}

/// Syncs one NATS host: reads its results from the stored sequence on (in rounds of
/// [`MAX_RESULTS_PER_ROUND`], until nothing is left or `deadline`), applies each, then fails
/// the tasks no worker took within the host's `task_ttl`.
pub(crate) async fn sync_host(d: &mut Delegate, t: &NatsTarget, tasks: usize, deadline: Instant) -> HostSync {
    let mut hs = HostSync::new(&t.host, tasks, 0);
    if let Err(e) = read_results(d, t, deadline, &mut hs).await {
        if let Error::Timeout { waited, .. } = &e {
            hs.deadline_secs = Some(waited.as_secs());
        }
        hs.error = Some(e.to_string());
    }
    if let Err(e) = expire(d, t, &mut hs) {
        hs.error.get_or_insert(e.to_string());
    }
    if hs.error.is_none() {
        resend(d, t, deadline, &mut hs).await;
    }
    hs
}

/// Sends the messages its tasks' workers have not confirmed (a `say` to a task that was
/// still queued, or one whose reply was lost), each with its own id (the inbox keeps one
/// copy), to the replica that runs the task; by `deadline`, the rest next time.
async fn resend(d: &mut Delegate, t: &NatsTarget, deadline: Instant, hs: &mut HostSync) {
    let Ok(pending) = d.store().unqueued_on_host(&t.host) else { return };
    let Ok(root) = d.remote_root(&t.host) else { return };
    for (task_id, run_no, m) in pending {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let key = task_key(d.store().mailbox_id(), task_id, run_no);
        let line = crate::remote::protocol::say_line(m.id, &m.at, &m.author, &m.text);
        let (Ok(script), Ok(reach)) =
            (crate::remote::protocol::render_say(&root, &key, m.id, &line), d.task_reach(task_id, &t.host))
        else {
            continue;
        };
        let Ok((out, _)) = d.transport().exec(&reach, crate::remote::REMOTE_COMMAND, &script, left).await else {
            return;
        };
        if out.exit != crate::transport::Exit::Code(0) {
            continue;
        }
        let state = crate::remote::protocol::parse_say(&out.stdout);
        let marked = match state {
            Some(SayState::Queued | SayState::AlreadyQueued) => d.store_mut().mark_outgoing(m.id, true),
            Some(SayState::Finished | SayState::NoTask) => d.store_mut().mark_outgoing(m.id, false),
            None => continue,
        };
        if marked.is_ok() {
            hs.resent.push(m.id);
            hs.execs += 1;
        }
    }
}

async fn read_results(d: &mut Delegate, t: &NatsTarget, deadline: Instant, hs: &mut HostSync) -> Result<()> {
    let mailbox = d.store().mailbox_id().to_string();
    let started = Instant::now();
    loop {
        let after = d.store().nats_cursor(&t.host, &t.url, &t.worker_id)?;
        let read = results::read(d.transport().nats_clients(), t, &mailbox, after, MAX_RESULTS_PER_ROUND);
        let batch = tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), read).await.map_err(|_| {
            Error::Timeout {
                host: t.host.clone(),
                phase: "syncing",
                waited: deadline.saturating_duration_since(started),
            }
        })??;
        hs.execs += 1;
        let full = batch.len() >= MAX_RESULTS_PER_ROUND;
        for r in batch {
            // Sequences only grow; one read again (after a crash) is harmless, but never
            // step back.
            if r.seq <= after {
                continue;
            }
            match r.message {
                Ok(m) => apply(d, t, &mailbox, m, hs).await?,
                // Unusable (not JSON, oversized): counted in the sync summary, never retried.
                Err(_) => hs.skipped_results += 1,
            }
            d.store_mut().set_nats_cursor(&t.host, &t.url, &t.worker_id, r.seq)?;
        }
        if !full || Instant::now() >= deadline {
            return Ok(());
        }
    }
}

/// The run of this host that `key` names, as sync sees it now.
fn run_for(d: &Delegate, host: &str, mailbox: &str, key: &str) -> Result<Option<InFlight>> {
    Ok(d.store().in_flight()?.into_iter().find(|r| r.host == host && task_key(mailbox, r.task_id, r.run_no) == key))
}

async fn apply(d: &mut Delegate, t: &NatsTarget, mailbox: &str, m: ResultMessage, hs: &mut HostSync) -> Result<()> {
    match m {
        ResultMessage::Launched { v, task_key, nonce, instance, exec } if v == wire::WIRE_VERSION => {
            let Some(r) = run_for(d, &t.host, mailbox, &task_key)? else {
                stop_if_cancelled(d, t, mailbox, &task_key, &nonce, &instance).await;
                return Ok(());
            };
            let waiting = matches!(r.status, TaskStatus::Queued | TaskStatus::Launching | TaskStatus::LaunchUnknown);
            // A repeat (the task launched already), or a result naming another launch of
            // this task (a spoofed or stale nonce): nothing to record.
            if !waiting || r.nonce != nonce {
                hs.skipped_results += u32::from(r.nonce != nonce);
                return Ok(());
            }
            let Ok(instance) = publish::checked_instance(&instance) else {
                hs.skipped_results += 1;
                return Ok(());
            };
            let out = super::super::transport::nats::exec::output(&exec).unwrap_or_else(|why| ExecOutput {
                broken: Some(format!("the worker's launched result could not be read: {why}")),
                ..ExecOutput::default()
            });
            let (brother, mut evidence) = handed_evidence(d, &r)?;
            evidence["nats"]["instance"] = json!(instance);
            let argv: Vec<String> = evidence["agent_plan"]["argv"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                .unwrap_or_default();
            let run = run_start(&r);
            let sent = Sent {
                result: Ok((out, Connection { fresh: None, warm: false })),
                total_ms: 0.0,
                nats: None,
                helpers_sent: true,
            };
            // The launch's own verdict (a refusal, a failure) is the task's state now; it is
            // no error of the sync.
            let recorded = record_exec(d, run, brother, evidence, argv, sent, None);
            if !matches!(recorded, Err(Error::Conflict { .. })) {
                d.store_mut().set_instance(r.task_id, r.run_no, &instance)?;
                let status = d.store().task(r.task_id)?.status;
                hs.changed.push((r.task_id, status));
            } else {
                hs.conflicts.push(r.task_id);
            }
        }
        ResultMessage::Sync { v, task_key, instance, offsets: _, stdout } if v == wire::WIRE_VERSION => {
            let Some(r) = run_for(d, &t.host, mailbox, &task_key)? else { return Ok(()) };
            if !r.status.has_agent_in_flight() && r.status != TaskStatus::LaunchUnknown {
                return Ok(());
            }
            // Only the replica that ran the task speaks for it.
            if d.store().instance(r.task_id)?.is_some_and(|i| i != instance) {
                hs.skipped_results += 1;
                return Ok(());
            }
            let Ok(bytes) = wire::unb64(&stdout) else {
                hs.skipped_results += 1;
                return Ok(());
            };
            let reply = match parse_sync(&bytes) {
                Ok(reply) => reply,
                Err(_) => {
                    hs.skipped_results += 1;
                    return Ok(());
                }
            };
            // The worker's sync of one task: a report about another is not its to make.
            let Some(mut report) = reply.tasks.iter().find(|x| x.task_key == task_key).cloned() else {
                return Ok(());
            };
            let (adjusted, gaps) = past_own_offsets(&r, &mut report.deltas);
            let mut ing = plan(&adjusted, &report, &reply, SystemTime::now(), d.launch_grace(), CLOCK_REFRESH_MS);
            // Conflicts are judged against the offsets as stored, gaps or not.
            ing.read_offsets = r.offsets.clone();
            ing.events.extend(gaps);
            for (task, applied) in d.store_mut().apply_sync(&[ing])? {
                match applied {
                    Applied::Done { new_status: Some(s) } => hs.changed.push((task, s)),
                    Applied::Done { new_status: None } => {}
                    Applied::Conflict => hs.conflicts.push(task),
                }
            }
        }
        ResultMessage::Refused { v, task_key: Some(task_key), nonce, reason } if v == wire::WIRE_VERSION => {
            let Some(r) = run_for(d, &t.host, mailbox, &task_key)? else { return Ok(()) };
            let waiting = matches!(r.status, TaskStatus::Queued | TaskStatus::Launching);
            if !waiting || nonce.as_deref().is_some_and(|n| n != r.nonce) {
                return Ok(());
            }
            fail_untaken(d, &r, &refused(t, &reason).to_string(), "refused")?;
            hs.changed.push((r.task_id, TaskStatus::Failed));
        }
        _ => hs.skipped_results += 1,
    }
    Ok(())
}

/// A worker launched a task that was cancelled while it waited in the stream (no worker was
/// there to take the cancel mark): the cancel goes to the replica that ran it now, so the
/// agent stops. Best effort: the task is `cancelled` in the mailbox either way.
async fn stop_if_cancelled(d: &mut Delegate, t: &NatsTarget, mailbox: &str, key: &str, nonce: &str, instance: &str) {
    let Some((task_id, run_no)) = parse_key(mailbox, key) else { return };
    let Ok(task) = d.store().task(task_id) else { return };
    let Some(run) = task.runs.last() else { return };
    if task.status != TaskStatus::Cancelled || task.host != t.host || run.run_no != run_no || run.nonce != nonce {
        return;
    }
    let Ok(instance) = publish::checked_instance(instance) else { return };
    let (Ok(root), Ok(mut reach)) = (d.remote_root(&t.host), d.reach(&t.host)) else { return };
    if let crate::transport::Reach::Nats(n) = &mut reach {
        n.instance = Some(instance);
    }
    let Ok(script) = crate::remote::protocol::render_cancel(&root, key, &run.session) else { return };
    let limit = std::time::Duration::from_secs(45);
    if let Ok((out, _)) = d.transport().exec(&reach, crate::remote::REMOTE_COMMAND, &script, limit).await
        && out.exit == crate::transport::Exit::Code(0)
        && let crate::transport::Reach::Nats(n) = &reach
    {
        // Stopped: the host need not be watched for it any more.
        let _ = d.store_mut().set_instance(task_id, run_no, n.instance.as_deref().unwrap_or_default());
    }
}

/// `<mailbox>-<task>` or `<mailbox>-<task>-r<run>`, as [`task_key`] makes them.
fn parse_key(mailbox: &str, key: &str) -> Option<(i64, i64)> {
    let rest = key.strip_prefix(mailbox)?.strip_prefix('-')?;
    let (task, run) = match rest.split_once("-r") {
        Some((task, run)) => (task, run.parse().ok()?),
        None => (rest, 1),
    };
    let task: i64 = task.parse().ok()?;
    (task_key(mailbox, task, run) == key).then_some((task, run))
}

/// Keeps only the bytes of each delta past the lead's own offset for its file: what the
/// lead has already is dropped (a message read twice, or a worker that re-read from older
/// offsets). A delta that starts past the lead's offset leaves a gap (results expired from
/// the stream, or a worker that lost its state): the run's offset jumps to it, and the gap
/// becomes an event. Returns the run with those offsets, and the gap events.
fn past_own_offsets(r: &InFlight, deltas: &mut [crate::remote::protocol::FileDelta]) -> (InFlight, Vec<NewEvent>) {
    let mut adjusted = r.clone();
    let mut gaps = Vec::new();
    for delta in deltas.iter_mut() {
        let own = r.offsets.get(&delta.file).copied().unwrap_or(0);
        if delta.offset < own {
            let drop = usize::try_from(own - delta.offset).unwrap_or(usize::MAX).min(delta.bytes.len());
            delta.bytes.drain(..drop);
            delta.offset = own;
        } else if delta.offset > own {
            gaps.push(NewEvent {
                at: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
                kind: "gap".into(),
                summary: format!(
                    "bytes {own}..{} of {} never arrived through NATS (expired from the results stream, or the \
                     worker lost its place); reading goes on from there",
                    delta.offset, delta.file
                ),
                data: None,
            });
            adjusted.offsets.insert(delta.file.clone(), delta.offset);
        }
    }
    (adjusted, gaps)
}

/// Fails the tasks of `t` that waited for a worker longer than the host's `task_ttl`.
fn expire(d: &mut Delegate, t: &NatsTarget, hs: &mut HostSync) -> Result<()> {
    let Some(ttl) = t.task_ttl else { return Ok(()) };
    let now = SystemTime::now();
    for r in d.store().in_flight()?.into_iter().filter(|r| r.host == t.host && r.status == TaskStatus::Queued) {
        let Some(h) = d.store().handed(r.task_id, r.run_no)? else { continue };
        let since = humantime::parse_rfc3339(&h.broker_at).unwrap_or(now);
        if now.duration_since(since).unwrap_or_default() <= ttl {
            continue;
        }
        let why = format!(
            "no worker took the task within its task_ttl of {} (worker {} on {}): is `delegate worker --id {}` \
             running on the brother? The worker refuses it from now on, so nothing starts late",
            humantime::format_duration(ttl),
            t.worker_id,
            t.url,
            t.worker_id
        );
        fail_untaken(d, &r, &why, "task_ttl")?;
        hs.changed.push((r.task_id, TaskStatus::Failed));
    }
    Ok(())
}

/// The brother a run was handed for and the evidence recorded then (an object, always).
fn handed_evidence(d: &Delegate, r: &InFlight) -> Result<(String, serde_json::Value)> {
    let (brother, evidence) = match d.store().handed(r.task_id, r.run_no)? {
        Some(h) => (h.brother, h.evidence),
        None => (d.store().task(r.task_id)?.brother, json!({})),
    };
    Ok((brother, if evidence.is_object() { evidence } else { json!({}) }))
}

/// The run as the launch's record path knows it.
fn run_start(r: &InFlight) -> RunStart {
    RunStart {
        task_id: r.task_id,
        run_no: r.run_no,
        session: r.session.clone(),
        nonce: r.nonce.clone(),
        version: r.version,
        queued: false,
    }
}

/// Fails a run no worker took, saying why (`untaken`: `task_ttl` or `refused`, kept in the
/// evidence: `wait` exits 48 for such a task).
fn fail_untaken(d: &mut Delegate, r: &InFlight, why: &str, untaken: &str) -> Result<()> {
    let (brother, mut evidence) = handed_evidence(d, r)?;
    evidence["nats"]["untaken"] = json!(untaken);
    let run = run_start(r);
    match crate::ops::launch::fail(d, &run, &brother, why, &evidence, None, None) {
        Ok(()) | Err(Error::Conflict { .. } | Error::CancelledWhileLaunching { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether a task failed because no NATS worker took it (its TTL passed, or the worker
/// refused it): the CLI's `wait` exits 48 for it.
pub fn untaken(task: &crate::task::Task) -> bool {
    task.status == TaskStatus::Failed && task.runs.last().is_some_and(|r| r.evidence["nats"]["untaken"].is_string())
}
