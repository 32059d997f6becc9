//! `delegate worker --agentbus`: serve agentbus tasks (the PyPI package's wire, see
//! [`crate::transport::nats::agentbus`]) with delegate's own launch: each task's agent runs
//! in tmux through the same launch and runner scripts as an SSH launch (sandbox level, turn
//! and time limits, evidence), and its end is read with delegate's outcome parsing.
//!
//! Reliability beyond agentbus's own worker (which acks a task before running it, so a crash
//! loses it):
//! - a task is acknowledged only after its launch succeeded and was written to the pending
//!   file; an invalid or oversized message is terminated (never redelivered), as agentbus does;
//! - a redelivery after a crash re-runs the launch with the same nonce (derived from the task
//!   id), and the launch script refuses a second agent, so there is exactly one;
//! - pending tasks are kept in `<remote_root>/workers/agentbus-<id>/pending.json` (mode 600,
//!   replaced atomically), so a restarted worker still publishes their results;
//! - results are published with a publish acknowledgement and a `Nats-Msg-Id`, and a task
//!   leaves the pending file only once its result is stored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agents::outcome::{self, ExitRecord, StreamFacts, StreamKind};
use crate::agents::{self, AgentOptions, AgentRequest};
use crate::error::{Error, Result};
use crate::hosts::inventory::AgentEnvironment;
use crate::remote::{self, LaunchVars, protocol};
use crate::task::Sandbox;
use crate::transport::nats::agentbus::{self as ab, Task, TaskResult};
use crate::transport::nats::wire;

/// How the worker runs the agents of agentbus tasks (what agentbus's `chat_cmd` and
/// `task_timeout_seconds` say for its own worker).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `claude`, `codex` (or `self-test`).
    pub agent: String,
    pub model: Option<String>,
    /// The agent's program when it is not `agent` on the PATH of `environment`.
    pub agent_path: Option<String>,
    /// Where the agent works.
    pub workdir: String,
    pub sandbox: Sandbox,
    pub max_turns: u32,
    /// Wall-clock limit of one task (agentbus's default is 1800 s).
    pub timeout: Duration,
    /// The task tree (`tasks/<key>`) and this worker's state (`workers/`): an absolute
    /// path (the library reads no `$HOME`; the CLI expands `~`).
    pub remote_root: String,
    pub environment: AgentEnvironment,
    /// agentbus's `extra_instruction`, appended to the prompt.
    pub extra_instruction: String,
    /// How often running tasks are looked at.
    pub tick: Duration,
    /// Variables set for delegate's scripts and so the agents, over the worker's own
    /// environment (agentbus's worker runs its agent in its own environment too).
    pub env: Vec<(String, String)>,
    /// Where the worker's notes go (a refused task and why, a publish to retry): the library
    /// prints nothing itself; the CLI passes a function writing to stderr.
    pub log: fn(&str),
}

impl Settings {
    pub fn new(agent: &str, workdir: &str, remote_root: &str) -> Settings {
        Settings {
            agent: agent.into(),
            model: None,
            agent_path: None,
            workdir: workdir.into(),
            sandbox: Sandbox::Write,
            max_turns: 50,
            timeout: Duration::from_secs(1800),
            remote_root: remote_root.into(),
            environment: AgentEnvironment::Login,
            extra_instruction: String::new(),
            tick: Duration::from_secs(1),
            env: Vec::new(),
            log: |_| {},
        }
    }
}

/// How long the launch script may run (it returns once the agent's session started).
const LAUNCH_LIMIT: Duration = Duration::from_secs(120);
/// A progress ack this often keeps a task from being redelivered while it launches.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long a reading of the task's files may take.
const SYNC_LIMIT: Duration = Duration::from_secs(30);
/// Unacknowledged for this long, a task goes to another replica.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// A task delivered this often without an ack (a worker crashing on it every time) stops.
const MAX_DELIVER: i64 = 5;
/// At most this much of an agent's stream is read for its outcome; the result line is at its
/// end, and a stream this large is a runaway.
const MAX_STREAM_READ: u64 = 256 * 1024 * 1024;
/// Looks in a row that find the session gone without an exit record before the task counts
/// as lost (the runner writes the record as it ends; a short gap is normal).
const LOST_AFTER: u32 = 3;

/// A task launched and not yet answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    /// The task as received (the result carries it back).
    task: Value,
    task_id: String,
    reply_agent: String,
    task_key: String,
    session: String,
    agent: String,
    #[serde(default)]
    misses: u32,
}

/// Serves `agentbus.<agent_id>.tasks` until `stop` turns true. Returns an error only when
/// the server cannot be used at the start (streams, consumer); later trouble (a server
/// restart, a failed publish) is retried on the next round.
pub async fn serve(
    client: async_nats::Client,
    js: jetstream::Context,
    agent_id: &str,
    settings: Settings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    wire::check_token("agentbus agent id", agent_id).map_err(nats_config)?;
    if !settings.remote_root.starts_with('/') {
        return Err(Error::Config {
            path: settings.remote_root.clone().into(),
            message: "the worker's remote root must be an absolute path".into(),
        });
    }
    let _ = client; // core NATS is not needed by agentbus's wire: JetStream carries both ways
    ab::ensure_streams(&js, "the NATS server").await?;
    let stream = js
        .get_stream(wire::AGENTBUS_TASKS_STREAM)
        .await
        .map_err(|e| nats_config(format!("cannot open stream {}: {e}", wire::AGENTBUS_TASKS_STREAM)))?;
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            agent_id,
            consumer::pull::Config {
                durable_name: Some(agent_id.into()),
                filter_subject: wire::agentbus_task_subject(agent_id),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_deliver: MAX_DELIVER,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| nats_config(format!("cannot open the durable consumer {agent_id}: {e}")))?;
    let state = state_file(&settings.remote_root, agent_id);
    let mut pending = load_pending(&state)?;
    let mut last_tick = Instant::now() - settings.tick;
    while !*stop.borrow() {
        if last_tick.elapsed() >= settings.tick {
            watch_pending(&js, &settings, &state, &mut pending).await;
            last_tick = Instant::now();
        }
        let batch = consumer.fetch().max_messages(1).expires(Duration::from_secs(1)).messages().await;
        let mut messages = match batch {
            Ok(m) => m,
            Err(e) => {
                (settings.log)(&format!("delegate worker: agentbus fetch failed (retrying): {e}"));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                m = messages.next() => m,
                _ = stop.changed() => None,
            };
            let Some(Ok(msg)) = next else { break };
            handle(&js, agent_id, &settings, &state, &mut pending, msg).await;
        }
    }
    Ok(())
}

fn nats_config(message: String) -> Error {
    Error::Config { path: "(nats)".into(), message }
}

/// One task message: refuse it, or launch it and remember it.
async fn handle(
    js: &jetstream::Context,
    agent_id: &str,
    settings: &Settings,
    state: &Path,
    pending: &mut Vec<Pending>,
    msg: jetstream::Message,
) {
    let task = match Task::parse(&msg.payload) {
        Ok(t) => t,
        Err(why) => {
            // agentbus terminates an invalid message too: it would fail the same way again.
            (settings.log)(&format!("delegate worker: agentbus task refused ({} bytes): {why}", msg.payload.len()));
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
    };
    let key = task_key(agent_id, &task.id);
    if pending.iter().any(|p| p.task_key == key) {
        // A redelivery of a task already launched and written down (its ack was lost).
        let _ = msg.double_ack().await;
        return;
    }
    let launched = {
        let launch = launch(agent_id, settings, &task, &key);
        tokio::pin!(launch);
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        progress.tick().await;
        loop {
            tokio::select! {
                r = &mut launch => break r,
                _ = progress.tick() => { let _ = msg.ack_with(AckKind::Progress).await; }
            }
        }
    };
    match launched {
        Ok(()) => {
            pending.push(Pending {
                task: serde_json::to_value(&task).unwrap_or(Value::Null),
                task_id: task.id.clone(),
                reply_agent: task.reply_agent().to_string(),
                task_key: key.clone(),
                session: session_name(&key),
                agent: settings.agent.clone(),
                misses: 0,
            });
            if let Err(e) = save_pending(state, pending) {
                // Not written down: leave the message unacked, so it comes back (and the
                // launch script, seeing the same nonce, starts no second agent).
                (settings.log)(&format!("delegate worker: {e}"));
                pending.pop();
                return;
            }
            if let Err(e) = msg.double_ack().await {
                (settings.log)(&format!("delegate worker: agentbus task {} launched, its ack failed: {e}", task.id));
            }
        }
        Err(why) => {
            let result = TaskResult::new(&task, Err(why));
            if publish_result(js, task.reply_agent(), &key, &result).await.is_ok() {
                let _ = msg.ack_with(AckKind::Term).await;
            } else {
                // Not answered yet: let it come back (the launch fails the same way, quickly).
                let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(5)))).await;
            }
        }
    }
}

/// `ab-<24 hex of sha256(agent id, task id)>`: a plain file name whatever the id holds.
fn task_key(agent_id: &str, task_id: &str) -> String {
    let h = crate::ops::launch::sha256_hex(format!("{agent_id}\0{task_id}").as_bytes());
    format!("ab-{}", &h[..24])
}

fn session_name(task_key: &str) -> String {
    format!("delegate-{task_key}")
}

/// The same for every delivery of one task: a redelivery re-runs the launch with it, and the
/// launch script then recognises its own launch instead of starting a second agent.
fn nonce(task_key: &str) -> String {
    crate::ops::launch::sha256_hex(format!("nonce\0{task_key}").as_bytes())[..32].to_string()
}

/// A number for the task's launch record (delegate's task numbers are the lead's; an agentbus
/// task has none): taken from the key, so it is stable too.
fn task_number(task_key: &str) -> i64 {
    i64::from_str_radix(&crate::ops::launch::sha256_hex(task_key.as_bytes())[..12], 16).unwrap_or(1)
}

/// Runs delegate's launch script for the task, locally. `Ok` once the agent's session runs
/// (or ran: a redelivery of a task this worker launched before).
async fn launch(agent_id: &str, s: &Settings, task: &Task, key: &str) -> std::result::Result<(), String> {
    let prompt = ab::agent_prompt(task, agent_id, &s.extra_instruction).into_bytes();
    crate::ops::launch::check_prompt(&prompt).map_err(|e| e.to_string())?;
    let options = AgentOptions::default();
    let plan = agents::plan(&AgentRequest {
        agent: &s.agent,
        model: s.model.as_deref(),
        sandbox: s.sandbox,
        max_turns: s.max_turns,
        workdir: &s.workdir,
        custom: None,
        agent_path: s.agent_path.as_deref(),
        options: &options,
    })
    .map_err(|e| e.to_string())?;
    let (session, nonce) = (session_name(key), nonce(key));
    let prompt_sha256 = crate::ops::launch::sha256_hex(&prompt);
    let script = remote::render(&LaunchVars {
        task_id: task_number(key),
        task_key: key,
        session: &session,
        nonce: &nonce,
        remote_root: &s.remote_root,
        workdir: &s.workdir,
        worktree_of: "",
        sandbox: s.sandbox,
        plan: &plan,
        // The prompt is agentbus's whole prompt; delegate's preamble (report helpers to a
        // lead) does not apply to an agentbus sender.
        preamble: "",
        prompt: &prompt,
        prompt_sha256: &prompt_sha256,
        environment: s.environment,
        env_files: &[],
        timeout_secs: s.timeout.as_secs(),
        turn_limit: s.max_turns,
        grace_secs: remote::DEFAULT_GRACE_SECS,
    })
    .map_err(|e| e.to_string())?;
    // With the helper files: the worker renders locally, so their bytes cost nothing and
    // the store is filled (or refreshed) in the same run.
    let script = remote::with_helpers(&script, &remote::helper_files(&plan.files))
        .ok_or("delegate's own launch script has no helper line")?;
    let out = run_script(s, &script, LAUNCH_LIMIT).await?;
    let parsed = remote::parse_output(&out.stdout, &out.stderr);
    if parsed.marker.as_ref().is_some_and(|m| m.nonce == nonce) {
        return Ok(());
    }
    if let Some((code, why)) = parsed.error {
        if code == remote::code::ALREADY_LAUNCHED && launched_with(&s.remote_root, key, &nonce) {
            return Ok(());
        }
        return Err(format!("delegate could not start the agent (error {code}): {why}"));
    }
    let head = crate::sanitize::clean_line(&String::from_utf8_lossy(&out.stderr), 500);
    Err(format!("delegate's launch script ended without starting the agent (exit {:?}): {head}", out.code))
}

/// The task directory's launch record names this nonce: this task's earlier delivery
/// launched it.
fn launched_with(remote_root: &str, key: &str, nonce: &str) -> bool {
    let path = Path::new(remote_root).join("tasks").join(key).join("launch.json");
    let Ok(text) = std::fs::read(&path) else { return false };
    if text.len() > 256 * 1024 {
        return false;
    }
    serde_json::from_slice::<Value>(&text).ok().and_then(|v| v.get("nonce").and_then(Value::as_str).map(|n| n == nonce))
        == Some(true)
}

struct ScriptOutput {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs one of delegate's scripts as sshd would: `bash -c 'eval "$(</dev/stdin)"'` with the
/// script on stdin, in this worker's environment.
async fn run_script(s: &Settings, script: &[u8], limit: Duration) -> std::result::Result<ScriptOutput, String> {
    use tokio::io::AsyncWriteExt;
    let [bash, flag, body] = remote::REMOTE_ARGV;
    let mut child = tokio::process::Command::new(bash)
        .args([flag, body])
        .envs(s.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run bash: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let script = script.to_vec();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&script).await;
    });
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| format!("delegate's script did not finish within {} s", limit.as_secs()))?
        .map_err(|e| format!("delegate's script failed: {e}"))?;
    let _ = writer.await;
    Ok(ScriptOutput { code: out.status.code(), stdout: out.stdout, stderr: out.stderr })
}

/// One look at every pending task; a finished one gets its result published.
async fn watch_pending(js: &jetstream::Context, s: &Settings, state: &Path, pending: &mut Vec<Pending>) {
    let mut changed = false;
    let mut i = 0;
    while i < pending.len() {
        let p = &mut pending[i];
        let outcome = match look(s, p).await {
            Ok(Some(outcome)) => outcome,
            Ok(None) => {
                i += 1;
                continue;
            }
            Err(e) => {
                (s.log)(&format!("delegate worker: cannot read agentbus task {}: {e}", p.task_key));
                i += 1;
                continue;
            }
        };
        let result = TaskResult::from_value(p.task.clone(), outcome);
        match publish_result(js, &p.reply_agent, &p.task_key, &result).await {
            Ok(()) => {
                pending.remove(i);
                changed = true;
            }
            Err(e) => {
                // Kept: the next tick publishes again (the message id de-duplicates).
                (s.log)(&format!("delegate worker: {e}"));
                i += 1;
            }
        }
    }
    if changed && let Err(e) = save_pending(state, pending) {
        (s.log)(&format!("delegate worker: {e}"));
    }
}

/// The task's outcome once it ended: `Ok(text)` completed, `Err(reason)` otherwise.
type Answer = std::result::Result<String, String>;

/// Reads the task's exit record and session with delegate's sync script; once it ended,
/// its stream, for the outcome.
async fn look(s: &Settings, p: &mut Pending) -> std::result::Result<Option<Answer>, String> {
    let mut offsets: BTreeMap<String, u64> = protocol::SYNCED_FILES.iter().map(|f| (f.to_string(), u64::MAX)).collect();
    offsets.insert("exit".into(), 0);
    offsets.insert("stderr.log".into(), 0);
    let report = sync_one(s, p, offsets, 4096).await?;
    if !report.dir_exists {
        return Ok(Some(Err("the task's directory is gone on the worker".into())));
    }
    let exit = report.deltas.iter().find(|d| d.file == "exit").map(|d| String::from_utf8_lossy(&d.bytes).to_string());
    let stderr_head =
        report.deltas.iter().find(|d| d.file == "stderr.log").map(|d| String::from_utf8_lossy(&d.bytes).to_string());
    let exit = exit.as_deref().and_then(ExitRecord::parse);
    let Some(exit) = exit.filter(|_| !report.session_alive) else {
        if !report.session_alive {
            p.misses += 1;
            if p.misses >= LOST_AFTER {
                return Ok(Some(Err("the agent's session ended without an exit record (lost)".into())));
            }
        }
        return Ok(None);
    };
    let kind = StreamKind::for_agent(&p.agent);
    let facts = read_stream(s, p, kind).await?;
    let outcome = outcome::classify(kind, &facts, &exit, stderr_head.as_deref().unwrap_or(""));
    Ok(Some(match outcome.status() {
        "completed" => Ok(facts.final_text().unwrap_or("").to_string()),
        status => Err(outcome.reason().unwrap_or_else(|| status.replace('_', " "))),
    }))
}

/// The facts of the whole stream, read in bounded pieces.
async fn read_stream(s: &Settings, p: &Pending, kind: StreamKind) -> std::result::Result<StreamFacts, String> {
    const PIECE: u64 = 1024 * 1024;
    let mut facts = StreamFacts::default();
    let mut offset = 0u64;
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let mut offsets: BTreeMap<String, u64> =
            protocol::SYNCED_FILES.iter().map(|f| (f.to_string(), u64::MAX)).collect();
        offsets.insert("stream.jsonl".into(), offset);
        let report = sync_one(s, p, offsets, PIECE).await?;
        let Some(delta) = report.deltas.into_iter().find(|d| d.file == "stream.jsonl") else { break };
        offset += delta.bytes.len() as u64;
        carry.extend_from_slice(&delta.bytes);
        let used = facts.feed(kind, &carry);
        carry.drain(..used);
        if delta.bytes.is_empty() || !delta.cut() || offset >= MAX_STREAM_READ {
            break;
        }
    }
    // The agent is gone: a last line without its newline is complete too.
    if !carry.is_empty() {
        carry.push(b'\n');
        facts.feed(kind, &carry);
    }
    Ok(facts)
}

async fn sync_one(
    s: &Settings,
    p: &Pending,
    offsets: BTreeMap<String, u64>,
    max_bytes: u64,
) -> std::result::Result<protocol::TaskReport, String> {
    let script = protocol::render_sync(&protocol::SyncRequest {
        remote_root: s.remote_root.clone(),
        tasks: vec![protocol::SyncTaskRequest {
            task_key: p.task_key.clone(),
            session: p.session.clone(),
            offsets,
            want_launch_json: false,
            clock_ms: None,
        }],
        max_bytes_per_file: max_bytes,
        max_bytes_total: max_bytes * 2,
    })
    .map_err(|e| e.to_string())?;
    let out = run_script(s, &script, SYNC_LIMIT).await?;
    let reply = protocol::parse_sync(&out.stdout)?;
    reply.tasks.into_iter().next().ok_or_else(|| "the sync script reported no task".to_string())
}

/// Publishes a result to `agentbus.<reply agent>.results` and waits for the stream's
/// acknowledgement; the message id makes a second publish of the same task's result (after
/// a crash between the two) a duplicate the stream drops.
async fn publish_result(
    js: &jetstream::Context,
    reply_agent: &str,
    task_key: &str,
    result: &TaskResult,
) -> std::result::Result<(), String> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(wire::MSG_ID_HEADER, format!("{task_key}.result").as_str());
    let subject = wire::agentbus_result_subject(reply_agent);
    let ack = js
        .publish_with_headers(subject.clone(), headers, result.to_bytes().into())
        .await
        .map_err(|e| format!("cannot publish the result to {subject}: {e}"))?;
    ack.await.map_err(|e| format!("the result to {subject} was not stored: {e}"))?;
    Ok(())
}

fn state_file(remote_root: &str, agent_id: &str) -> PathBuf {
    Path::new(remote_root).join("workers").join(format!("agentbus-{agent_id}")).join("pending.json")
}

/// The largest pending file read back (thousands of tasks).
const MAX_STATE_BYTES: u64 = 64 * 1024 * 1024;

fn load_pending(path: &Path) -> Result<Vec<Pending>> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Ok(m) if m.len() > MAX_STATE_BYTES => {
            return Err(Error::Config {
                path: path.into(),
                message: format!("the worker's pending file is {} bytes (at most {MAX_STATE_BYTES})", m.len()),
            });
        }
        _ => {}
    }
    let text = std::fs::read(path).map_err(|e| Error::Config { path: path.into(), message: e.to_string() })?;
    serde_json::from_slice(&text).map_err(|e| Error::Config {
        path: path.into(),
        message: format!("the worker's pending file is not readable ({e}): move it aside to start empty"),
    })
}

/// Written whole to a temporary file (mode 600) and renamed over the old one: a crash leaves
/// the old list or the new one, never half of either.
fn save_pending(path: &Path, pending: &[Pending]) -> std::result::Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().ok_or("no directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(pending).map_err(|e| e.to_string())?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
}
