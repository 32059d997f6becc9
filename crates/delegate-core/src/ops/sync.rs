//! Sync: bring the mailbox up to date with what brothers wrote in their task directories.
//!
//! One SSH exec per host covers all of that host's unfinished tasks, and hosts are synced
//! concurrently. Each append-only remote file is read from the byte offset the mailbox
//! stored, and offsets advance only over complete lines, so nothing is read twice and
//! nothing is missed across restarts. A task's findings land in one transaction with its
//! offsets; the rows one task adds are capped per sync and per run ([`crate::mailbox::row_caps`]),
//! and the transactions are kept small so no other process waits long for the write lock.
//!
//! Reconcile is part of the same pass: a task whose tmux session is gone without an exit
//! record is `lost`; a `launch_unknown` task is resolved from its remote directory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use crate::agents::outcome::{ExitRecord, StreamFacts, StreamKind, classify};
use crate::delegate::Delegate;
use crate::error::{Error, Result};
use crate::mailbox::row_caps::{MAX_EVENTS_PER_SYNC, MAX_RECEIPTS_PER_SYNC, MAX_REPORTS_PER_SYNC};
use crate::mailbox::{Applied, InFlight, Ingest, NewEvent, NewMessage, RunEnd};
use crate::remote::protocol::{
    FileDelta, SMALL_SYNC, SayState, SyncReply, SyncRequest, SyncTaskRequest, TaskReport, parse_say, parse_sync_for,
    render_say, render_sync,
};
use crate::task::TaskStatus;
use crate::transport::ssh::Exit;
use crate::transport::{Reach, Transport};

pub use crate::hosts::inventory::DEFAULT_SYNC_DEADLINE;
/// How long `delegate sync`, asked for explicitly, waits for a host (or its `sync_deadline`
/// if that is longer).
pub const SYNC_LIMIT: Duration = Duration::from_secs(60);
/// A sync cut at its deadline gets this long on top for its exec to stop the command on the
/// brother itself (its own limit is the deadline) before it is dropped unanswered.
const CUT_GRACE: Duration = Duration::from_secs(1);
/// Cap per file per sync reply, so one chatty agent cannot balloon a sync; the rest comes
/// in the next round.
pub const MAX_BYTES_PER_FILE: u64 = 4 * 1024 * 1024;
/// Cap on the file bytes of one host's sync reply (the budget the sync script spends, task
/// by task in request order). Well under [`crate::transport::ssh::MAX_EXEC_OUTPUT`] (the headers of a
/// few thousand tasks fit in the difference), so a busy host never overflows an exec.
pub const MAX_SYNC_REPLY: u64 = 32 * 1024 * 1024;
/// Replies cut by a cap are followed by another exec for the tasks with more waiting, up to
/// this many per command (one exec per host per round); the rest comes on the next call.
pub const SYNC_ROUNDS: usize = 4;
/// A line of a line-based task file (events, outbox, receipts, state, exit) longer than this
/// is skipped with a `skipped` event instead of waiting forever for its end. The agent's
/// stream has the same limit ([`crate::agents::outcome::MAX_LINE_BYTES`]).
pub const MAX_SYNC_LINE: usize = crate::agents::outcome::MAX_LINE_BYTES;
/// How much of the agent's stderr is kept (for failure reasons).
const STDERR_HEAD: usize = 4096;
pub use crate::task::LAUNCH_GRACE;

/// What one sync did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncSummary {
    pub hosts: Vec<HostSync>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostSync {
    pub host: String,
    pub tasks: usize,
    /// SSH execs this host cost (one per round, or zero when it could not be reached).
    pub execs: u32,
    /// Tasks whose status changed, with the new status.
    pub changed: Vec<(i64, TaskStatus)>,
    /// Tasks skipped because another process moved them first (read again next time).
    pub conflicts: Vec<i64>,
    /// Messages to brothers sent again because their inbox had not confirmed them.
    pub resent: Vec<i64>,
    pub error: Option<String>,
    /// The host did not answer within its deadline (seconds): `error` says so too.
    pub deadline_secs: Option<u64>,
    /// A NATS host: result messages skipped as unusable (not JSON, over the size limit,
    /// another version, a nonce or replica that does not match).
    #[serde(skip_serializing_if = "is_zero")]
    pub skipped_results: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl HostSync {
    pub(crate) fn new(host: &str, tasks: usize, execs: u32) -> HostSync {
        HostSync {
            host: host.to_string(),
            tasks,
            execs,
            changed: vec![],
            conflicts: vec![],
            resent: vec![],
            error: None,
            deadline_secs: None,
            skipped_results: 0,
        }
    }

    /// What a command that shows state says about a host it could not sync: the cause and
    /// the fix (`None` when the host was synced).
    pub fn warning(&self) -> Option<String> {
        let e = self.error.as_deref()?;
        let host = &self.host;
        Some(match self.deadline_secs {
            Some(secs) => format!(
                "could not sync {host}: it did not answer within {secs} s; its tasks show their last known state, \
                 marked stale. If {host} is hung or unreachable, `delegate doctor` checks it; if it is only slow, raise \
                 sync_deadline under [hosts.{host}] (or run `delegate sync`, which waits up to {} s)",
                SYNC_LIMIT.as_secs()
            ),
            None => format!("could not sync {host} ({e}); its tasks show their last known state, marked stale"),
        })
    }
}

impl SyncSummary {
    pub fn errors(&self) -> impl Iterator<Item = (&str, &str)> {
        self.hosts.iter().filter_map(|h| h.error.as_deref().map(|e| (h.host.as_str(), e)))
    }

    /// One warning per host that was not synced, by host (see [`HostSync::warning`]).
    pub fn warnings(&self) -> BTreeMap<String, String> {
        self.hosts.iter().filter_map(|h| Some((h.host.clone(), h.warning()?))).collect()
    }
}

/// How long a sync waits for each host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// A command that shows state: each host's `sync_deadline` (default
    /// [`DEFAULT_SYNC_DEADLINE`]), then the host's tasks are shown stale.
    Deadline,
    /// `delegate sync`, asked for: [`SYNC_LIMIT`], or the host's `sync_deadline` if longer.
    Long,
}

/// How long a sync of `host` may take, connecting included, all rounds together.
pub fn host_deadline(inventory: &crate::hosts::inventory::Inventory, host: &str, patience: Patience) -> Duration {
    let configured = inventory.hosts.get(host).and_then(|h| h.sync_deadline).map(Duration::from_secs);
    let deadline = configured.unwrap_or(DEFAULT_SYNC_DEADLINE);
    match patience {
        Patience::Deadline => deadline,
        Patience::Long => deadline.max(SYNC_LIMIT),
    }
}

/// Syncs in rounds: the first covers every task (or `only`), each further one only the
/// tasks whose reply was cut by a cap while the host still made progress, at most
/// [`SYNC_ROUNDS`] in all. Each host's rounds share one deadline ([`host_deadline`]).
pub(crate) async fn sync(d: &mut Delegate, only: Option<&[i64]>, patience: Patience) -> Result<SyncSummary> {
    let started = Instant::now();
    let (mut summary, mut more) = sync_round(d, only, started, patience).await?;
    for _ in 1..SYNC_ROUNDS {
        if more.is_empty() {
            break;
        }
        let (next, again) = sync_round(d, Some(&more), started, patience).await?;
        merge(&mut summary, next);
        more = again;
    }
    Ok(summary)
}

fn merge(into: &mut SyncSummary, next: SyncSummary) {
    for h in next.hosts {
        let Some(e) = into.hosts.iter_mut().find(|e| e.host == h.host) else {
            into.hosts.push(h);
            continue;
        };
        e.execs += h.execs;
        for (task, status) in h.changed {
            e.changed.retain(|(t, _)| *t != task);
            e.changed.push((task, status));
        }
        e.conflicts.extend(h.conflicts.into_iter().filter(|t| !e.conflicts.contains(t)).collect::<Vec<_>>());
        e.resent.extend(h.resent);
        e.skipped_results += h.skipped_results;
        if h.error.is_some() {
            e.error = h.error;
            e.deadline_secs = h.deadline_secs;
        }
    }
    into.hosts.sort_by(|a, b| a.host.cmp(&b.host));
}

/// One round: one exec per host whose deadline has not passed. Also returns the tasks to
/// sync again at once (their reply was cut by a cap and their host made progress). Each
/// host's outcome is recorded, so its tasks show stale while it does not answer.
async fn sync_round(
    d: &mut Delegate,
    only: Option<&[i64]>,
    started: Instant,
    patience: Patience,
) -> Result<(SyncSummary, Vec<i64>)> {
    let now = std::time::SystemTime::now();
    let grace = d.launch_grace();
    // Tasks handed to agentbus workers come back as one result each, read from their
    // results stream; they have no task files to sync.
    crate::ops::agentbus::collect_for_inventory(d).await?;
    let runs = d.store().in_flight()?;
    let handed = d.store().agentbus_tasks_among(&runs.iter().map(|r| r.task_id).collect::<Vec<_>>())?;
    let runs: Vec<InFlight> = runs
        .into_iter()
        .filter(|r| only.is_none_or(|ids| ids.contains(&r.task_id)))
        .filter(|r| !handed.contains(&r.task_id))
        .filter(|r| r.status != TaskStatus::Launching || older_than(&r.updated_at, now, grace))
        .collect();
    let mut by_host: BTreeMap<String, Vec<InFlight>> = BTreeMap::new();
    for r in runs {
        by_host.entry(r.host.clone()).or_default().push(r);
    }
    if only.is_none() {
        // Read too: a host whose worker may still launch a task cancelled while it waited.
        for host in d.store().hosts_with_cancelled_in_broker()? {
            by_host.entry(host).or_default();
        }
    }
    let mut summary = SyncSummary::default();
    let mut more = Vec::new();
    let mut jobs = JoinSet::new();
    let mut waiting: BTreeMap<String, Vec<InFlight>> = BTreeMap::new();
    for (host, mut runs) in by_host {
        let budget = host_deadline(d.inventory(), &host, patience);
        let deadline = started + budget;
        if Instant::now() >= deadline {
            // A later round with the host's time used up: the rest comes next time.
            continue;
        }
        if let Ok(Reach::Nats(t)) = d.reach(&host) {
            // No exec: the worker published what its own sync read; read it from the
            // results stream (all that is there, in one go: never part of a later round).
            let hs = crate::ops::nats::sync_host(d, &t, runs.len(), deadline).await;
            d.store_mut().record_host_sync(&host, hs.error.as_deref())?;
            summary.hosts.push(hs);
            continue;
        }
        // Handed to a NATS server while the host was one; nothing to ask an SSH host.
        runs.retain(|r| r.status != TaskStatus::Queued);
        if runs.is_empty() {
            continue;
        }
        let prepared = d.reach(&host).and_then(|reach| {
            let root = d
                .inventory()
                .host(&host)?
                .remote_root
                .clone()
                .unwrap_or_else(|| crate::hosts::inventory::DEFAULT_REMOTE_ROOT.into());
            let req = SyncRequest {
                remote_root: root,
                tasks: runs
                    .iter()
                    .map(|r| SyncTaskRequest {
                        task_key: task_key(d.store().mailbox_id(), r.task_id, r.run_no),
                        session: r.session.clone(),
                        offsets: r.offsets.clone(),
                        want_launch_json: matches!(r.status, TaskStatus::LaunchUnknown | TaskStatus::Launching),
                        clock_ms: r.clock_ms.filter(|_| d.sync_clocks()),
                    })
                    .collect(),
                max_bytes_per_file: MAX_BYTES_PER_FILE,
                max_bytes_total: MAX_SYNC_REPLY,
            };
            let mut resend = Vec::new();
            for (task_id, run_no, m) in d.store().unqueued_on_host(&host)? {
                let key = task_key(d.store().mailbox_id(), task_id, run_no);
                let line = crate::remote::protocol::say_line(m.id, &m.at, &m.author, &m.text);
                resend.push((m.id, render_say(&req.remote_root, &key, m.id, &line)?));
            }
            // What the reply is read against: a large sync names only its tasks with news.
            let asked: Vec<(String, String)> =
                req.tasks.iter().map(|t| (t.task_key.clone(), t.session.clone())).collect();
            Ok((reach, render_sync(&req)?, resend, asked))
        });
        match prepared {
            Ok((reach, script, resend, asked)) => {
                let transport = d.transport().clone();
                jobs.spawn(async move {
                    let r = fetch(&transport, &reach, &script, &asked, resend, deadline, budget).await;
                    (host, r)
                });
                waiting.insert(runs[0].host.clone(), runs);
            }
            Err(e) => {
                let mut hs = HostSync::new(&host, runs.len(), 0);
                hs.error = Some(e.to_string());
                d.store_mut().record_host_sync(&host, hs.error.as_deref())?;
                summary.hosts.push(hs);
            }
        }
    }
    while let Some(joined) = jobs.join_next().await {
        let (host, reply) = joined.expect("sync tasks do not panic");
        let runs = waiting.remove(&host).unwrap_or_default();
        let mut hs = HostSync::new(&host, runs.len(), 1);
        match reply {
            Err(e) => {
                if let Error::Timeout { phase: SYNCING, waited, .. } = &e {
                    hs.deadline_secs = Some(waited.as_secs());
                }
                hs.error = Some(e.to_string());
            }
            Ok((reply, sent)) => {
                for (id, state) in sent {
                    match state {
                        SayState::Queued | SayState::AlreadyQueued => d.store_mut().mark_outgoing(id, true)?,
                        SayState::Finished | SayState::NoTask => d.store_mut().mark_outgoing(id, false)?,
                    }
                    hs.resent.push(id);
                    hs.execs += 1;
                }
                let mailbox = d.store().mailbox_id().to_string();
                let (mut cut, mut progressed) = (Vec::new(), false);
                // A small sync's quiet tasks cost no process on the brother only while no file
                // of theirs is newer than their clock (less the margin): a file written just
                // before the sync that read it is, until the clock moves on. So any clock a
                // small sync brings is kept (the next poll then needs no find); a large one
                // keeps a clock for a minute, sparing a write per task per poll.
                let refresh = if runs.len() <= SMALL_SYNC { 0 } else { CLOCK_REFRESH_MS };
                let reported: std::collections::HashMap<&str, &TaskReport> =
                    reply.tasks.iter().map(|t| (t.task_key.as_str(), t)).collect();
                let batch: Vec<Ingest> = runs
                    .iter()
                    .filter_map(|r| {
                        let key = task_key(&mailbox, r.task_id, r.run_no);
                        let t = *reported.get(key.as_str())?;
                        let ing = plan(r, t, &reply, now, grace, refresh);
                        if t.deltas.iter().any(FileDelta::cut) {
                            cut.push(r.task_id);
                        }
                        progressed |= ing.offsets.iter().any(|(f, o)| r.offsets.get(f).copied().unwrap_or(0) != *o);
                        Some(ing)
                    })
                    .collect();
                for (task, applied) in d.store_mut().apply_sync(&batch)? {
                    match applied {
                        Applied::Done { new_status: Some(s) } => hs.changed.push((task, s)),
                        Applied::Done { new_status: None } => {}
                        Applied::Conflict => hs.conflicts.push(task),
                    }
                }
                if progressed {
                    more.extend(cut.into_iter().filter(|t| !hs.conflicts.contains(t)));
                }
            }
        }
        d.store_mut().record_host_sync(&host, hs.error.as_deref())?;
        summary.hosts.push(hs);
    }
    summary.hosts.sort_by(|a, b| a.host.cmp(&b.host));
    Ok((summary, more))
}

pub use crate::remote::task_key;

/// How old a quiet run's clock may get before a sync with nothing new for it stores this
/// sync's (see `plan`), in a sync of more than [`SMALL_SYNC`] tasks.
pub(crate) const CLOCK_REFRESH_MS: u64 = 60_000;

fn older_than(rfc3339: &str, now: std::time::SystemTime, age: Duration) -> bool {
    humantime::parse_rfc3339(rfc3339).map(|t| now.duration_since(t).unwrap_or_default() > age).unwrap_or(true)
}

/// The phase named by a sync that ran out of time.
const SYNCING: &str = "syncing";

/// One connection (the host's pooled one): the sync exec, then any `say` the brother has not
/// confirmed yet (a lead that died between recording a message and sending it), each with
/// its original id. All of it by `deadline` (the host's `budget` from the start of the
/// sync): a sync whose answer has not arrived by then is dropped whole, so nothing of it is
/// applied (offsets stay where they were), and the host's connection with it, so no hung
/// command lingers on a kept connection. Resending stops at the deadline too (a message
/// not confirmed is sent again next time, and lands once).
async fn fetch(
    transport: &Transport,
    reach: &Reach,
    script: &[u8],
    asked: &[(String, String)],
    resend: Vec<(i64, Vec<u8>)>,
    deadline: Instant,
    budget: Duration,
) -> Result<(SyncReply, Vec<(i64, SayState)>)> {
    let timed_out = || Error::Timeout { host: reach.host().to_string(), phase: SYNCING, waited: budget };
    let cut = tokio::time::Instant::from_std(deadline + CUT_GRACE);
    let left = || deadline.saturating_duration_since(Instant::now());
    let exec = transport.exec(reach, crate::remote::REMOTE_COMMAND, script, left());
    let out = match tokio::time::timeout_at(cut, exec).await {
        Ok(out) => out.map(|(out, _)| out),
        Err(_) => {
            transport.abandon(reach);
            return Err(timed_out());
        }
    };
    let mut sent = Vec::new();
    if out.is_ok() {
        for (id, say) in resend {
            let exec = transport.exec(reach, crate::remote::REMOTE_COMMAND, &say, left());
            match tokio::time::timeout_at(cut, exec).await {
                Ok(Ok((o, _))) if o.exit == Exit::Code(0) => {
                    if let Some(state) = parse_say(&o.stdout) {
                        sent.push((id, state));
                    }
                }
                _ => break,
            }
        }
    }
    let out = out?;
    if out.overflow {
        return Err(Error::OutputTooLarge {
            host: reach.host().to_string(),
            limit: crate::transport::ssh::MAX_EXEC_OUTPUT,
        });
    }
    if out.exit != Exit::Code(0) {
        if out.exit == Exit::Unknown && Instant::now() >= deadline {
            // The exec's own limit (the deadline) ended it unanswered.
            return Err(timed_out());
        }
        let why = out.broken.clone().unwrap_or_else(|| format!("exit {:?}", out.exit));
        return Err(Error::SyncFailed {
            host: reach.host().to_string(),
            why: format!("{why}: {}", String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    let asked: Vec<(&str, &str)> = asked.iter().map(|(k, s)| (k.as_str(), s.as_str())).collect();
    let reply =
        parse_sync_for(&out.stdout, &asked).map_err(|why| Error::SyncFailed { host: reach.host().to_string(), why })?;
    Ok((reply, sent))
}

/// Complete lines of `bytes` and how many bytes they span.
fn complete_lines(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let Some(last_nl) = bytes.iter().rposition(|b| *b == b'\n') else { return (vec![], 0) };
    let lines = bytes[..last_nl].split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    (lines, last_nl + 1)
}

/// Decides what one task report means for one run: pure, so it is tested without SSH.
pub(crate) fn plan(
    run: &InFlight,
    report: &TaskReport,
    reply: &SyncReply,
    now: std::time::SystemTime,
    grace: Duration,
    clock_refresh_ms: u64,
) -> Ingest {
    let kind = StreamKind::for_agent(&run.agent);
    let mut facts: StreamFacts = serde_json::from_str(&run.facts).unwrap_or_default();
    let facts_before = facts.clone();
    let mut ing = Ingest {
        task_id: run.task_id,
        run_no: run.run_no,
        expected_version: run.version,
        read_offsets: run.offsets.clone(),
        offsets: BTreeMap::new(),
        ..Default::default()
    };
    let mut stderr_head = run.stderr_head.clone();
    let mut state_lines: Vec<String> = Vec::new();
    let mut exit: Option<ExitRecord> = None;
    let mut status_report: Option<String> = None;
    // The exit record waits while another file still has bytes this reply did not carry (a
    // cap cut it): the outcome is read from the whole stream, and a finished task is not
    // synced again.
    let head_full = stderr_head.len() >= STDERR_HEAD;
    let exit_waits = report.deltas.iter().any(|d| d.file == "exit")
        && report.deltas.iter().any(|d| d.file != "exit" && d.cut() && !(d.file == "stderr.log" && head_full));

    for delta in &report.deltas {
        let stored = run.offsets.get(&delta.file).copied().unwrap_or(0);
        if delta.offset != stored {
            continue; // not what we asked for; ask again next time
        }
        if exit_waits && delta.file == "exit" {
            continue;
        }
        let line_based =
            matches!(delta.file.as_str(), "state" | "exit" | "events.jsonl" | "outbox.jsonl" | "delivered.jsonl");
        if line_based && delta.bytes.len() > MAX_SYNC_LINE && !delta.bytes.contains(&b'\n') {
            // A line this long would never fit a reply whole: skip what arrived of it (the
            // rest of it, when it comes, is not a line of its own and is dropped as one).
            push_event(
                &mut ing,
                NewEvent {
                    at: humantime::format_rfc3339_micros(now).to_string(),
                    kind: "skipped".into(),
                    summary: format!("line of more than {MAX_SYNC_LINE} bytes skipped in {}", delta.file),
                    data: None,
                },
            );
            ing.offsets.insert(delta.file.clone(), stored + delta.bytes.len() as u64);
            continue;
        }
        let consumed = match delta.file.as_str() {
            "stream.jsonl" => facts.feed(kind, &delta.bytes),
            "state" => {
                let (lines, used) = complete_lines(&delta.bytes);
                state_lines.extend(lines.iter().map(|l| String::from_utf8_lossy(l).into_owned()));
                used
            }
            "exit" => {
                let (lines, used) = complete_lines(&delta.bytes);
                exit = lines.first().and_then(|l| ExitRecord::parse(&String::from_utf8_lossy(l)));
                if exit.is_some() { used } else { 0 }
            }
            "events.jsonl" => {
                let (lines, used) = complete_lines(&delta.bytes);
                for l in lines {
                    // Past the cap a line is only counted: not even parsed.
                    if ing.events.len() >= MAX_EVENTS_PER_SYNC {
                        ing.skipped.events += 1;
                    } else if let Some(e) = parse_event(l, now) {
                        ing.last_event = Some(if e.summary.is_empty() {
                            e.kind.clone()
                        } else {
                            format!("{}: {}", e.kind, e.summary)
                        });
                        ing.events.push(e);
                    }
                }
                used
            }
            "outbox.jsonl" => {
                let (lines, used) = complete_lines(&delta.bytes);
                for l in lines {
                    if ing.messages.len() >= MAX_REPORTS_PER_SYNC {
                        ing.skipped.reports += 1;
                        continue;
                    }
                    // Where the line starts in the file, to name it in a note.
                    let at_byte = delta.offset + (l.as_ptr() as usize - delta.bytes.as_ptr() as usize) as u64;
                    let note = |kind: &str, summary: String| NewEvent {
                        at: valid_at("", now),
                        kind: kind.into(),
                        summary,
                        data: None,
                    };
                    let (m, read) = match parse_message(l, now) {
                        Ok(parsed) => parsed,
                        Err(why) => {
                            // Never dropped silently: the lead sees that a report was lost.
                            push_event(
                                &mut ing,
                                note(
                                    "skipped",
                                    format!("line at byte {at_byte} of outbox.jsonl skipped: not a report ({why})"),
                                ),
                            );
                            continue;
                        }
                    };
                    if read.bad_kind {
                        push_event(
                            &mut ing,
                            note("bad_report", format!("report {} had an unknown kind; recorded as progress", m.seq)),
                        );
                    }
                    if read.lossy {
                        push_event(
                            &mut ing,
                            note(
                                "lossy_report",
                                format!(
                                    "report {} (line at byte {at_byte} of outbox.jsonl) was not valid UTF-8; \
                                     stored with U+FFFD in place of the bad bytes",
                                    m.seq
                                ),
                            ),
                        );
                    }
                    if m.kind == "status" {
                        status_report = Some(m.text.split_whitespace().next().unwrap_or("").to_string());
                    }
                    ing.messages.push(m);
                }
                used
            }
            "delivered.jsonl" => {
                let (lines, used) = complete_lines(&delta.bytes);
                for l in lines {
                    if ing.receipts.len() >= MAX_RECEIPTS_PER_SYNC {
                        ing.skipped.receipts += 1;
                    } else if let Ok(v) = serde_json::from_slice::<serde_json::Value>(l)
                        && let Some(id) = v["id"].as_i64()
                    {
                        let at = valid_at(v["at"].as_str().unwrap_or(""), now);
                        ing.receipts.push((id, at, v["via"].as_str().unwrap_or("inbox").to_string()));
                    }
                }
                used
            }
            "stderr.log" => {
                if stderr_head.len() < STDERR_HEAD {
                    let room = STDERR_HEAD - stderr_head.len();
                    let take = &delta.bytes[..delta.bytes.len().min(room)];
                    stderr_head.push_str(&String::from_utf8_lossy(take));
                    ing.stderr_head = Some(stderr_head.clone());
                }
                // Only the head is kept: once it is full, skip the rest of the file for good.
                if stderr_head.len() >= STDERR_HEAD { (delta.size - delta.offset) as usize } else { delta.bytes.len() }
            }
            _ => 0,
        };
        ing.offsets.insert(delta.file.clone(), stored + consumed as u64);
    }
    // The run's clock: this reply's when it read every file to the end (its offsets are then
    // the sizes the brother saw, and the next sync need only look at files changed since the
    // clock file was written, which was before anything was looked at), forgotten when it
    // did not (a cap, a partial line, a waiting exit record): the next sync looks at all.
    let complete = report.deltas.iter().all(|d| {
        let stored = run.offsets.get(&d.file).copied().unwrap_or(0);
        ing.offsets.get(&d.file).copied().unwrap_or(stored) >= d.size
    });
    let clock = reply.clock_ms.filter(|_| complete);
    // With nothing new, a stored clock stays (files unchanged since it are unchanged since
    // this one too) unless it is old: the script looks at files modified since the oldest
    // clock of a sync's quiet tasks, so the oldest is kept recent. Otherwise a quiet task
    // costs no write. A reply that needed no clock (every quiet task unchanged since the
    // stored clocks) keeps them too; one that could not read one forgets them.
    let stale = |stored: u64| clock.is_some_and(|now| now.saturating_sub(stored) > clock_refresh_ms);
    let store = match run.clock_ms {
        _ if !report.deltas.is_empty() => true,
        None => clock.is_some(),
        Some(stored) => stale(stored) || (reply.clock_ms.is_none() && !reply.clock_skipped),
    };
    if store && (clock.is_some() || run.clock_ms.is_some()) {
        ing.clock_ms = Some(clock);
    }
    // The brother's clock went back (set right after running ahead): files written since
    // may carry times before the stored clock, so this sync may have passed them over. The
    // next one looks at every file.
    if let (Some(stored), Some(now)) = (run.clock_ms, reply.clock_ms)
        && now < stored
    {
        ing.clock_ms = Some(None);
    }
    if facts != facts_before {
        ing.facts = Some(serde_json::to_string(&facts).unwrap_or_else(|_| "{}".into()));
        let used = facts.turns_used(kind);
        ing.turns = (used > 0).then_some(used);
        ing.cost_usd = facts.cost_usd;
        if ing.last_event.is_none() {
            ing.last_event = facts.last_activity.clone();
        }
    }

    let started =
        state_lines.iter().any(|l| l.starts_with("started ")) || run.offsets.get("state").is_some_and(|o| *o > 0);
    let to = |s: TaskStatus, why: Option<String>| (s != run.status).then_some((s, why));
    ing.transition = if exit_waits {
        None
    } else if let Some(exit) = exit {
        let outcome = classify(kind, &facts, &exit, &stderr_head).with_budget(run.max_budget_usd);
        ing.end = Some(RunEnd {
            exit_code: exit.code as i64,
            reason: exit.reason.map(|r| r.as_str().to_string()),
            at: exit.at.clone(),
            outcome: serde_json::to_value(&outcome).unwrap_or_default(),
        });
        if exit.reason == Some(crate::agents::outcome::ExitReason::Hangup) {
            // Neither the agent nor delegate ended it: its tmux session or server was killed.
            to(TaskStatus::Lost, Some("the tmux session was killed under the agent (hangup); it did not finish".into()))
        } else {
            let status: TaskStatus = outcome.status().parse().unwrap_or(TaskStatus::Failed);
            to(status, outcome.reason())
        }
    } else if !report.dir_exists {
        match run.status {
            TaskStatus::LaunchUnknown | TaskStatus::Launching if older_than(&run.updated_at, now, grace) => {
                // What the launch itself saw stays part of the story.
                let mut why = "not started: no task directory on the brother".to_string();
                if !run.reason.is_empty() {
                    why = format!("{why}; the launch had reported: {}", run.reason);
                }
                to(TaskStatus::Failed, Some(why))
            }
            TaskStatus::Launched | TaskStatus::Running | TaskStatus::NeedsInput => {
                to(TaskStatus::Lost, Some("the task directory is gone from the brother".into()))
            }
            _ => None,
        }
    } else if matches!(run.status, TaskStatus::LaunchUnknown | TaskStatus::Launching)
        && report
            .launch_json
            .as_ref()
            .is_some_and(|j| !String::from_utf8_lossy(j).contains(&format!("\"nonce\":\"{}\"", run.nonce)))
    {
        to(TaskStatus::Failed, Some("the task directory on the brother belongs to another launch".into()))
    } else if report.session_alive {
        // A task waiting for input stays so until the brother says otherwise: a new status
        // report, or the agent's stream moving again (it got its answer and went on). A sync
        // that brings neither does not make it `running`.
        let still_waiting = run.status == TaskStatus::NeedsInput && facts == facts_before;
        let waiting = status_report.as_deref() == Some("needs_input")
            || (status_report.is_none() && (facts.needs_input || still_waiting));
        if waiting {
            to(TaskStatus::NeedsInput, Some("the agent is waiting for input".into()))
        } else if started || run.status != TaskStatus::Launched {
            to(TaskStatus::Running, None)
        } else {
            None
        }
    } else if reply.tmux_server_running || started || report.launch_json.is_some() {
        // The runner writes its exit record before its session ends, and the sync lists
        // sessions before it reads files: no session and no exit record means the runner
        // died with its tmux server (killed, or the host rebooted).
        match run.status {
            TaskStatus::Launching | TaskStatus::LaunchUnknown if !older_than(&run.updated_at, now, grace) => None,
            _ => to(TaskStatus::Lost, Some("the tmux session is gone and the runner left no exit record".into())),
        }
    } else {
        to(TaskStatus::Lost, Some("no tmux server on the brother and no exit record".into()))
    };
    ing
}

/// Keeps a note of delegate's own (a skipped line, a bad report) within the events cap.
fn push_event(ing: &mut Ingest, e: NewEvent) {
    if ing.events.len() >= MAX_EVENTS_PER_SYNC {
        ing.skipped.events += 1;
    } else {
        ing.events.push(e);
    }
}

/// The kinds the `report` helper writes (remote/scripts/report.sh).
pub const REPORT_KINDS: &[&str] = &["receipt", "progress", "question", "done", "blocked", "status", "artifact"];

/// A brother's timestamp as stored: kept when it is RFC 3339 UTC in the shape the runner
/// writes (`2026-12-06T18:29:53.433Z`, any fraction up to nanoseconds) and not in the future
/// of the lead's clock (a minute of skew allowed); otherwise the lead's `now`. Either way it
/// only informs: what orders a thread is when the lead recorded it.
pub fn valid_at(at: &str, now: std::time::SystemTime) -> String {
    let lead_now = || humantime::format_rfc3339_millis(now).to_string();
    let b = at.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let shape = b.len() >= 20
        && b.len() <= 30
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b.ends_with(b"Z")
        && (b.len() == 20 || (b[19] == b'.' && b.len() >= 22 && digits(20..b.len() - 1)));
    match humantime::parse_rfc3339(at) {
        Ok(t) if shape && t <= now + Duration::from_secs(60) => at.to_string(),
        _ => lead_now(),
    }
}

/// Event kinds delegate writes itself. A brother's event may not take one: a forged
/// `over_cap` would escape the row caps' count and could replace the real note.
const OWN_EVENT_KINDS: [&str; 4] = ["skipped", "bad_report", "gap", crate::mailbox::row_caps::OVER_CAP_EVENT];

/// An event name from the brother: a word of at most 64 letters, digits and `_.:-`, not
/// one of delegate's own.
fn event_kind(kind: &str) -> String {
    let ok = !kind.is_empty()
        && kind.len() <= 64
        && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        && !OWN_EVENT_KINDS.contains(&kind);
    if ok { kind.to_string() } else { "unknown_event".to_string() }
}

fn parse_event(line: &[u8], now: std::time::SystemTime) -> Option<NewEvent> {
    // Lossily if need be: the hook's summary is a file path, and paths need not be UTF-8.
    let (v, _) = json_line(line).ok()?;
    let kind = event_kind(v["event"].as_str()?);
    let tool = v["tool"].as_str().unwrap_or("");
    let summary = v["summary"].as_str().unwrap_or("");
    let summary = match (tool.is_empty(), summary.is_empty()) {
        (true, _) => summary.to_string(),
        (false, true) => tool.to_string(),
        (false, false) => format!("{tool} {summary}"),
    };
    Some(NewEvent {
        at: valid_at(v["at"].as_str().unwrap_or(""), now),
        kind,
        summary: summary.chars().take(300).collect(),
        data: None,
    })
}

/// What reading a report line had to correct.
#[derive(Debug, Default, PartialEq, Eq)]
struct ReportRead {
    /// Its kind was not one the helper writes; it is recorded as `progress`, so no
    /// brother-made kind reaches a screen or a status decision.
    bad_kind: bool,
    /// It was not valid UTF-8 (the helper passes bytes through); read with U+FFFD.
    lossy: bool,
}

/// One report line, or why it is none (not JSON, no `seq`).
fn parse_message(line: &[u8], now: std::time::SystemTime) -> Result<(NewMessage, ReportRead), String> {
    let (v, lossy) = json_line(line)?;
    let kind = v["kind"].as_str().unwrap_or("progress");
    let known = REPORT_KINDS.contains(&kind);
    let message = NewMessage {
        seq: v["seq"].as_i64().ok_or("no seq")?,
        kind: if known { kind } else { "progress" }.to_string(),
        text: v["text"].as_str().unwrap_or("").to_string(),
        at: valid_at(v["at"].as_str().unwrap_or(""), now),
    };
    Ok((message, ReportRead { bad_kind: !known, lossy }))
}

/// A JSON line from the brother, and whether it had to be read lossily: JSON is UTF-8, but
/// the brother's helpers pass other bytes through (a Latin-1 file name, a cut character), and
/// such a line is worth keeping with U+FFFD rather than losing.
fn json_line(line: &[u8]) -> Result<(serde_json::Value, bool), String> {
    match serde_json::from_slice(line) {
        Ok(v) => Ok((v, false)),
        Err(_) if std::str::from_utf8(line).is_err() => serde_json::from_str(&String::from_utf8_lossy(line))
            .map(|v| (v, true))
            .map_err(|e| format!("not JSON: {e}")),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

#[cfg(test)]
mod tests_ingest {
    use std::time::SystemTime;

    #[test]
    fn brother_timestamps_are_kept_only_when_well_formed_and_not_in_the_future() {
        let now = humantime::parse_rfc3339("2026-12-06T18:30:00Z").unwrap();
        let lead = "2026-12-06T18:30:00.000Z";
        for ok in ["2026-12-06T18:29:53.433Z", "2026-12-06T18:29:53Z", "2026-12-06T18:29:53.123456789Z"] {
            assert_eq!(super::valid_at(ok, now), ok);
        }
        for bad in [
            "",
            "2999-01-01T00:00:00.000Z",
            "2026-12-06T18:29:53.433Z\ntask 9 forged",
            "2026-12-06T18:29:53.433+00:00",
            "2026-12-06 18:29:53Z",
            "\u{1b}]52;c;SGk=\u{7}",
            "2026-12-06T18:29:53.Z",
        ] {
            assert_eq!(super::valid_at(bad, now), lead, "{bad:?}");
        }
    }

    #[test]
    fn report_kinds_and_event_names_from_the_brother_are_checked() {
        let now = SystemTime::now();
        let line = br#"{"seq":3,"at":"2026-12-06T18:29:53.433Z","kind":"done\ntask 9","text":"x"}"#;
        let (m, read) = super::parse_message(line, now).unwrap();
        assert_eq!((m.kind.as_str(), read.bad_kind), ("progress", true));
        let line = br#"{"seq":4,"at":"2026-12-06T18:29:53.433Z","kind":"question","text":"x"}"#;
        assert_eq!(super::parse_message(line, now).unwrap().0.kind, "question");
        let line = br#"{"at":"x","event":"Pre\u001b[2JToolUse","summary":"s"}"#;
        assert_eq!(super::parse_event(line, now).unwrap().kind, "unknown_event");
        let line = br#"{"at":"x","event":"PreToolUse","tool":"Bash","summary":"ls"}"#;
        assert_eq!(super::parse_event(line, now).unwrap().kind, "PreToolUse");
        // delegate's own notes cannot be forged (a fake over_cap would escape the row count).
        for own in ["over_cap", "skipped", "bad_report"] {
            let line = format!(r#"{{"event":"{own}","summary":"0 events"}}"#);
            assert_eq!(super::parse_event(line.as_bytes(), now).unwrap().kind, "unknown_event", "{own}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::protocol::FileDelta;

    fn run() -> InFlight {
        InFlight {
            task_id: 7,
            run_no: 1,
            host: "h".into(),
            agent: "claude".into(),
            status: TaskStatus::Running,
            version: 1,
            session: "dlg-7".into(),
            nonce: "n".into(),
            offsets: BTreeMap::from([("state".to_string(), 10)]),
            clock_ms: None,
            facts: "{}".into(),
            stderr_head: String::new(),
            updated_at: "2026-11-21T10:00:00Z".into(),
            reason: String::new(),
            max_budget_usd: None,
        }
    }

    fn delta(file: &str, offset: u64, size: u64, bytes: &[u8]) -> FileDelta {
        FileDelta { file: file.into(), offset, size, bytes: bytes.to_vec() }
    }

    fn report(deltas: Vec<FileDelta>) -> TaskReport {
        TaskReport { task_key: "m-7".into(), dir_exists: true, session_alive: false, deltas, launch_json: None }
    }

    fn planned(deltas: Vec<FileDelta>) -> Ingest {
        let reply = SyncReply { tasks: vec![], tmux_server_running: true, clock_ms: None, ..Default::default() };
        plan(&run(), &report(deltas), &reply, std::time::SystemTime::now(), LAUNCH_GRACE, CLOCK_REFRESH_MS)
    }

    #[test]
    fn the_clock_is_kept_only_when_every_file_was_read_to_the_end() {
        let reply = SyncReply { tasks: vec![], tmux_server_running: true, clock_ms: Some(9_000), ..Default::default() };
        let now = std::time::SystemTime::now();
        let with_clock = |ms: Option<u64>| InFlight { clock_ms: ms, ..run() };
        let line = b"{\"type\":\"system\"}\n";
        let whole = || vec![delta("stream.jsonl", 0, line.len() as u64, line)];
        // Read to the end: this reply's clock, whether the run had one or not.
        assert_eq!(
            plan(&with_clock(None), &report(whole()), &reply, now, LAUNCH_GRACE, CLOCK_REFRESH_MS).clock_ms,
            Some(Some(9_000))
        );
        assert_eq!(
            plan(&with_clock(Some(5)), &report(whole()), &reply, now, LAUNCH_GRACE, CLOCK_REFRESH_MS).clock_ms,
            Some(Some(9_000))
        );
        // Nothing new: a recent clock stays (no write), an old one is replaced, and a run
        // with none gets this one.
        let recent = with_clock(Some(5));
        assert_eq!(plan(&recent, &report(vec![]), &reply, now, LAUNCH_GRACE, CLOCK_REFRESH_MS).clock_ms, None);
        // In a small sync any newer clock is kept (the next poll's builtins then pass over
        // files written just before the sync that read them); the same one is no write.
        assert_eq!(plan(&recent, &report(vec![]), &reply, now, LAUNCH_GRACE, 0).clock_ms, Some(Some(9_000)));
        let same = with_clock(Some(9_000));
        assert_eq!(plan(&same, &report(vec![]), &reply, now, LAUNCH_GRACE, 0).clock_ms, None);
        let old = SyncReply { clock_ms: Some(CLOCK_REFRESH_MS + 10), ..reply.clone() };
        assert_eq!(
            plan(&with_clock(Some(5)), &report(vec![]), &old, now, LAUNCH_GRACE, CLOCK_REFRESH_MS).clock_ms,
            Some(old.clock_ms)
        );
        assert_eq!(
            plan(&with_clock(None), &report(vec![]), &reply, now, LAUNCH_GRACE, CLOCK_REFRESH_MS).clock_ms,
            Some(Some(9_000))
        );
        // A cap cut the stream, or its last line is not whole yet: forgotten (or not set).
        let cut = vec![delta("stream.jsonl", 0, 100, &line[..])];
        assert_eq!(
            plan(&with_clock(Some(5)), &report(cut.clone()), &reply, now, LAUNCH_GRACE, CLOCK_REFRESH_MS).clock_ms,
            Some(None)
        );
        assert_eq!(plan(&with_clock(None), &report(cut), &reply, now, LAUNCH_GRACE, CLOCK_REFRESH_MS).clock_ms, None);
        let partial = vec![delta("events.jsonl", 0, 4, b"{\"a\"")];
        assert_eq!(
            plan(&with_clock(Some(5)), &report(partial), &reply, now, LAUNCH_GRACE, CLOCK_REFRESH_MS).clock_ms,
            Some(None)
        );
        // A clock that went back (the brother's was set right): the next sync looks at all.
        let ahead = with_clock(Some(20_000));
        assert_eq!(plan(&ahead, &report(vec![]), &reply, now, LAUNCH_GRACE, CLOCK_REFRESH_MS).clock_ms, Some(None));
        assert_eq!(plan(&ahead, &report(whole()), &reply, now, LAUNCH_GRACE, CLOCK_REFRESH_MS).clock_ms, Some(None));
        // A brother that could not read its clock: the next sync looks at every file.
        let no_clock = SyncReply { clock_ms: None, ..reply.clone() };
        assert_eq!(
            plan(&with_clock(Some(5)), &report(whole()), &no_clock, now, LAUNCH_GRACE, CLOCK_REFRESH_MS).clock_ms,
            Some(None)
        );
        assert_eq!(
            plan(&with_clock(Some(5)), &report(vec![]), &no_clock, now, LAUNCH_GRACE, CLOCK_REFRESH_MS).clock_ms,
            Some(None)
        );
        // One that needed none (a small sync found the task unchanged since its clock): the
        // stored clock stands, with no write; a run without one still has none.
        let skipped = SyncReply { clock_ms: None, clock_skipped: true, ..reply.clone() };
        assert_eq!(
            plan(&with_clock(Some(5)), &report(vec![]), &skipped, now, LAUNCH_GRACE, CLOCK_REFRESH_MS).clock_ms,
            None
        );
        assert_eq!(
            plan(&with_clock(None), &report(vec![]), &skipped, now, LAUNCH_GRACE, CLOCK_REFRESH_MS).clock_ms,
            None
        );
    }

    #[test]
    fn a_task_waiting_for_input_stays_so_until_a_report_or_the_stream_says_otherwise() {
        let reply = SyncReply { tasks: vec![], tmux_server_running: true, clock_ms: None, ..Default::default() };
        let now = std::time::SystemTime::now();
        let mut waiting = run();
        waiting.status = TaskStatus::NeedsInput;
        let alive = |deltas| TaskReport { session_alive: true, ..report(deltas) };
        // Nothing new: still waiting (no transition at all).
        let ing = plan(&waiting, &alive(vec![]), &reply, now, LAUNCH_GRACE, CLOCK_REFRESH_MS);
        assert_eq!(ing.transition, None, "{ing:?}");
        // The agent's stream moved: it got going again.
        let line = br#"{"type":"assistant","message":{"content":[{"type":"text","text":"on it"}]}}"#.to_vec();
        let mut bytes = line.clone();
        bytes.push(b'\n');
        let ing = plan(
            &waiting,
            &alive(vec![delta("stream.jsonl", 0, bytes.len() as u64, &bytes)]),
            &reply,
            now,
            LAUNCH_GRACE,
            CLOCK_REFRESH_MS,
        );
        assert_eq!(ing.transition.as_ref().map(|t| t.0), Some(TaskStatus::Running), "{ing:?}");
        // A status report says so.
        let rep = br#"{"seq":1,"at":"t","kind":"status","text":"running again"}
"#;
        let ing = plan(
            &waiting,
            &alive(vec![delta("outbox.jsonl", 0, rep.len() as u64, rep)]),
            &reply,
            now,
            LAUNCH_GRACE,
            CLOCK_REFRESH_MS,
        );
        assert_eq!(ing.transition.as_ref().map(|t| t.0), Some(TaskStatus::Running), "{ing:?}");
        // A running task with nothing new stays running.
        let ing = plan(&run(), &alive(vec![]), &reply, now, LAUNCH_GRACE, CLOCK_REFRESH_MS);
        assert_eq!(ing.transition, None, "{ing:?}");
    }

    #[test]
    fn a_line_longer_than_the_cap_is_skipped_with_an_event() {
        let long = vec![b'x'; MAX_SYNC_LINE + 1];
        let ing = planned(vec![delta("events.jsonl", 0, 5 << 20, &long)]);
        assert_eq!(ing.offsets["events.jsonl"], long.len() as u64, "the offset moves past what came");
        assert_eq!(ing.events.len(), 1);
        assert_eq!(ing.events[0].kind, "skipped");
        assert!(ing.events[0].summary.contains("events.jsonl"), "{}", ing.events[0].summary);

        // Its tail, then a good line: the tail is no event, the good line is.
        let good = br#"{"event":"tool","tool":"Bash","at":"t"}"#;
        let mut bytes = b"xxxx\n".to_vec();
        bytes.extend_from_slice(good);
        bytes.push(b'\n');
        let ing = planned(vec![delta("events.jsonl", 0, bytes.len() as u64, &bytes)]);
        assert_eq!(ing.offsets["events.jsonl"], bytes.len() as u64);
        assert_eq!(ing.events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["tool"]);

        // A partial line under the cap waits for its end.
        let ing = planned(vec![delta("outbox.jsonl", 0, 100, b"{\"seq\":1")]);
        assert_eq!(ing.offsets["outbox.jsonl"], 0);
        assert!(ing.events.is_empty());
    }

    #[test]
    fn a_report_that_is_not_utf8_is_kept_lossily_and_one_that_is_no_report_is_named() {
        let good = br#"{"seq":1,"at":"t","kind":"progress","text":"ok"}"#;
        let latin1 = b"{\"seq\":2,\"at\":\"t\",\"kind\":\"done\",\"text\":\"caf\xe9 au lait\"}";
        let mut bytes = Vec::new();
        for l in [&good[..], &latin1[..], b"garbage \xff", br#"{"kind":"done","text":"no seq"}"#] {
            bytes.extend_from_slice(l);
            bytes.push(b'\n');
        }
        let ing = planned(vec![delta("outbox.jsonl", 0, bytes.len() as u64, &bytes)]);
        assert_eq!(ing.offsets["outbox.jsonl"], bytes.len() as u64);
        let texts: Vec<(i64, &str)> = ing.messages.iter().map(|m| (m.seq, m.text.as_str())).collect();
        assert_eq!(texts, [(1, "ok"), (2, "caf\u{fffd} au lait")]);
        let events: Vec<(&str, &str)> = ing.events.iter().map(|e| (e.kind.as_str(), e.summary.as_str())).collect();
        let second = good.len() + 1;
        let third = second + latin1.len() + 1;
        let fourth = third + b"garbage \xff".len() + 1;
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0].0, "lossy_report");
        assert!(events[0].1.starts_with(&format!("report 2 (line at byte {second} of outbox.jsonl)")), "{events:?}");
        assert_eq!(events[1].0, "skipped");
        assert!(
            events[1].1.starts_with(&format!("line at byte {third} of outbox.jsonl skipped: not a report (not JSON"))
        );
        assert!(!events[1].1.contains("garbage"), "no brother text in the note: {events:?}");
        assert_eq!(
            events[2],
            ("skipped", format!("line at byte {fourth} of outbox.jsonl skipped: not a report (no seq)").as_str())
        );

        // An event whose summary (a file path) is not UTF-8 is kept too.
        let event = b"{\"event\":\"PostToolUse\",\"tool\":\"Edit\",\"summary\":\"/w/r\xe9sum\xe9.txt\",\"at\":\"t\"}\n";
        let ing = planned(vec![delta("events.jsonl", 0, event.len() as u64, event)]);
        assert_eq!(ing.events.len(), 1);
        assert_eq!(ing.events[0].summary, "Edit /w/r\u{fffd}sum\u{fffd}.txt");
    }

    #[test]
    fn lines_over_the_per_sync_row_caps_are_counted_not_stored_and_the_offsets_move_to_the_end() {
        use crate::mailbox::row_caps::*;
        let lines = |n: usize, line: &dyn Fn(usize) -> String| -> Vec<u8> {
            (0..n).flat_map(|i| format!("{}\n", line(i)).into_bytes()).collect()
        };
        let events = lines(MAX_EVENTS_PER_SYNC + 25, &|_| r#"{"event":"e"}"#.into());
        let reports = lines(MAX_REPORTS_PER_SYNC + 7, &|i| format!(r#"{{"seq":{i},"kind":"progress","text":"p"}}"#));
        let receipts = lines(MAX_RECEIPTS_PER_SYNC + 3, &|i| format!(r#"{{"id":{i},"via":"hook"}}"#));
        let ing = planned(vec![
            delta("events.jsonl", 0, events.len() as u64, &events),
            delta("outbox.jsonl", 0, reports.len() as u64, &reports),
            delta("delivered.jsonl", 0, receipts.len() as u64, &receipts),
        ]);
        assert_eq!(
            (ing.events.len(), ing.messages.len(), ing.receipts.len()),
            (MAX_EVENTS_PER_SYNC, MAX_REPORTS_PER_SYNC, MAX_RECEIPTS_PER_SYNC)
        );
        assert_eq!(ing.skipped, Skipped { events: 25, reports: 7, receipts: 3 });
        // The oldest lines are kept; nothing is read again.
        assert_eq!(ing.messages[0].seq, 0);
        assert_eq!(ing.offsets["events.jsonl"], events.len() as u64);
        assert_eq!(ing.offsets["outbox.jsonl"], reports.len() as u64);
        assert_eq!(ing.offsets["delivered.jsonl"], receipts.len() as u64);
        // delegate's own notes share the events cap: a bad report past it is only counted.
        let bad = lines(3, &|i| format!(r#"{{"seq":{i},"kind":"x"}}"#));
        let full = lines(MAX_EVENTS_PER_SYNC, &|_| r#"{"event":"e"}"#.into());
        let ing = planned(vec![
            delta("events.jsonl", 0, full.len() as u64, &full),
            delta("outbox.jsonl", 0, bad.len() as u64, &bad),
        ]);
        assert_eq!((ing.events.len(), ing.messages.len(), ing.skipped.events), (MAX_EVENTS_PER_SYNC, 3, 3));
    }

    #[test]
    fn the_exit_record_waits_while_a_cap_cut_another_file() {
        let exit = b"0 2026-11-21T10:00:00.1Z\n";
        let line = b"{\"type\":\"system\"}\n";
        // The stream has more than this reply carried: no ending yet, nothing consumed of exit.
        let ing = planned(vec![delta("exit", 0, exit.len() as u64, exit), delta("stream.jsonl", 0, 1000, line)]);
        assert!(ing.end.is_none() && ing.transition.is_none(), "{ing:?}");
        assert!(!ing.offsets.contains_key("exit"));
        assert_eq!(ing.offsets["stream.jsonl"], line.len() as u64, "the stream still moves");
        // All of it here: the run ends.
        let ing =
            planned(vec![delta("exit", 0, exit.len() as u64, exit), delta("stream.jsonl", 0, line.len() as u64, line)]);
        assert!(ing.end.is_some() && ing.transition.is_some(), "{ing:?}");
        // A budget-cut stderr whose head is not full yet also holds the exit back.
        let ing = planned(vec![delta("exit", 0, exit.len() as u64, exit), delta("stderr.log", 0, 100, b"")]);
        assert!(ing.end.is_none());
        assert!(!ing.offsets.contains_key("stderr.log") || ing.offsets["stderr.log"] == 0);
    }
}
