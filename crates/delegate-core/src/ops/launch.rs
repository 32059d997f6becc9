//! The launch path: record the intent, send the launch script, record the evidence.
//!
//! 1. The task row (state `launching`, with a fresh nonce and session name) is committed
//!    before any network I/O, so a crash anywhere later leaves a row that says so.
//! 2. One channel, one exec of bash (`remote::REMOTE_COMMAND`) with the script on stdin, on the host's pooled
//!    connection ([`crate::transport::pool`]). A fan-out (`launch_many`) records every task first,
//!    then sends all scripts at once: one connection per host, one channel per task.
//! 3. Only the success marker echoing our nonce and session makes a task `launched`. A
//!    refusal by the brother's preflight makes it `failed` with the brother's reason; a
//!    connection that breaks after the script was sent makes it `launch_unknown`.

use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::agents::{self, AgentRequest};
use crate::delegate::Delegate;
use crate::error::{Error, Result};
use crate::hosts::inventory::{OverCap, check_remote_path, is_builtin_agent};
use crate::mailbox::{Caps, DailyCap, LaunchRecord, NewTask, RunStart};
use crate::remote::{self, LaunchVars};
use crate::task::{Sandbox, Task, TaskStatus};
use crate::transport::{Connection, ExecOutput, Exit, Reach, Transport};

/// The largest prompt delegate sends, checked before connecting. Claude Code caps piped
/// stdin at 10 MiB; staying below it leaves room for the wrapping later issues add.
pub const MAX_PROMPT_BYTES: usize = 8 * 1024 * 1024;

/// Bytes of the launch script's stderr kept in the mailbox.
const MAX_LAUNCH_STDERR: usize = 16 * 1024;

/// How long the launch script may take on the brother (preflight, version probe, tmux).
const EXEC_LIMIT: Duration = Duration::from_secs(120);

/// What to launch. `None` fields take the profile's settings, then the brother's, then
/// delegate's defaults ([`crate::ops::settings::resolve`]).
#[derive(Debug, Clone, Default)]
pub struct LaunchRequest {
    pub brother: String,
    pub prompt: Vec<u8>,
    pub subject: Option<String>,
    pub workdir: Option<String>,
    pub max_turns: Option<u32>,
    pub sandbox: Option<Sandbox>,
    pub agent: Option<String>,
    pub model: Option<String>,
    /// Wall-clock limit; default the brother's, else [`crate::hosts::inventory::DEFAULT_TIMEOUT`].
    pub timeout: Option<Duration>,
    /// Who asks; default the local user from [`crate::Paths`].
    pub author: Option<String>,
    /// A `[profiles.NAME]` of the inventory; default the environment's profile, else the
    /// brother's `default_profile`.
    pub profile: Option<String>,
    /// The `[environments.NAME]` the brother was picked from (its profile applies), and why
    /// that brother ([`crate::ops::placement::Placement::why`]); both recorded with the task.
    pub environment: Option<String>,
    pub placement: Option<String>,
    pub reasoning_effort: Option<crate::agents::ReasoningEffort>,
    /// A spend limit for the run, in US dollars (agents with a native limit only).
    pub max_budget_usd: Option<f64>,
    /// Extra arguments for the agent, replacing the profile's; a flag delegate owns is refused.
    pub extra_args: Option<Vec<String>>,
    /// Run in a git worktree of its own on the brother, on branch `delegate/<task key>`
    /// from the workdir's HEAD (None: the profile's, else the brother's `worktree`).
    pub worktree: Option<bool>,
    /// Default medium.
    pub priority: Option<crate::task::Priority>,
    /// The task this one is part of; it must exist.
    pub parent: Option<i64>,
    /// `--notify`: follow the inventory's `[notify]` (default), none, or these events.
    pub notify: crate::notify::Choice,
}

/// A one-line subject from the prompt: its first non-blank line, printable characters only.
pub fn subject_from(prompt: &[u8]) -> String {
    let text = String::from_utf8_lossy(prompt);
    // The first line with something printable: a line of only control characters (an
    // ANSI escape, say) would clean down to nothing.
    text.lines().map(clean_subject).find(|l| !l.is_empty()).unwrap_or_else(|| "(empty)".into())
}

/// Subjects are shown in terminals: drop control characters (ANSI escapes included) and
/// keep them short.
pub fn clean_subject(s: &str) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim();
    if clean.chars().count() > 80 {
        let cut: String = clean.chars().take(79).collect();
        format!("{cut}…")
    } else {
        clean.to_string()
    }
}

/// What the agent reads before the prompt: which task it is and, where the agent can run
/// them at its sandbox level, how to report and read messages with the helpers in its task
/// directory. The helpers are named by absolute path (`{task_dir}`, filled in on the
/// brother): Claude Code refuses a command that begins with a variable ("can't be checked
/// before it runs"). Where the level allows no helper (Claude at `read` has no shell;
/// Codex at `read` may write nowhere), the preamble does not ask for one: the lead learns
/// the state from the agent's stream and reads the result in its final answer.
pub fn preamble(task_id: i64, brother: &str, helpers: bool) -> String {
    if helpers {
        format!(
            "[delegate] This is task {task_id} for brother {brother}, handed to you by your lead.\n\
             Keep the lead informed by running the report helper of this task (a shell command):\n\
             \x20 '{{task_dir}}/report' receipt \"what you understood the task to be\"   (right away)\n\
             \x20 '{{task_dir}}/report' progress \"what you did, what comes next\"      (at milestones)\n\
             \x20 '{{task_dir}}/report' question \"what you need decided\"              (when blocked)\n\
             \x20 '{{task_dir}}/report' done \"the result, in a few lines\"             (at the end)\n\
             \x20 '{{task_dir}}/report' artifact PATH \"what it is\"                   (a file made for the lead)\n\
             Between steps, check for messages from your lead: '{{task_dir}}/inbox' \
             (acknowledge one with: '{{task_dir}}/inbox' ack <id>).\n\
             If a helper command is refused, give the same information in your final answer.\n\
             The task follows.\n\n"
        )
    } else {
        format!(
            "[delegate] This is task {task_id} for brother {brother}, handed to you by your lead.\n\
             You cannot run commands or write files here: give what you found and the result in \
             your final answer, which the lead reads.\n\
             The task follows.\n\n"
        )
    }
}

/// The whole text an agent reads for a first launch: the preamble with the task directory
/// filled in, then the prompt exactly as given.
pub fn wrap_prompt(task_id: i64, brother: &str, helpers: bool, task_dir: &str, prompt: &[u8]) -> Vec<u8> {
    let mut out = preamble(task_id, brother, helpers).replace("{task_dir}", task_dir).into_bytes();
    out.extend_from_slice(prompt);
    out
}

pub use crate::sanitize::clean_line;

pub fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// One launch: [`launch_many`] with one request.
pub(crate) async fn launch(d: &mut Delegate, req: LaunchRequest) -> Result<Task> {
    launch_many(d, vec![req]).await.pop().expect("one result per request")
}

/// Records every request as a task (or refuses it), sends the scripts of those that may
/// start concurrently, records each outcome, then starts queued tasks that have room.
/// One result per request, in order.
pub(crate) async fn launch_many(d: &mut Delegate, reqs: Vec<LaunchRequest>) -> Vec<Result<Task>> {
    let mut results: Vec<Option<Result<Task>>> = Vec::with_capacity(reqs.len());
    let mut ready = Vec::new();
    for req in reqs {
        match prepare(d, req) {
            Ok(Prepared::Ready(r)) => {
                ready.push((results.len(), r));
                results.push(None);
            }
            Ok(Prepared::Queued(task)) => results.push(Some(Ok(task))),
            Err(e) => results.push(Some(Err(e))),
        }
    }
    let (slots, ready): (Vec<usize>, Vec<Ready>) = ready.into_iter().unzip();
    if !ready.is_empty() {
        d.phase("recorded");
    }
    // Tasks for agentbus workers are handed over as agentbus tasks (no launch script).
    let (mut slots_left, mut ready_left) = (Vec::new(), Vec::new());
    for (slot, r) in slots.into_iter().zip(ready) {
        match agentbus_target(&r) {
            Some(t) => results[slot] = Some(hand_to_agentbus(d, r.run, &r.brother, &t).await),
            None => {
                slots_left.push(slot);
                ready_left.push(r);
            }
        }
    }
    let (slots, ready) = (slots_left, ready_left);
    let sent = send_all(d.transport(), d.store().mailbox_id(), &ready).await;
    if !ready.is_empty() {
        d.phase("answered");
    }
    for ((slot, r), s) in slots.into_iter().zip(ready).zip(sent) {
        results[slot] = Some(record(d, r, s));
    }
    // Tasks queued earlier (or just now, behind them) may fit in the slots left.
    if let Ok(started) = dispatch_queued(d).await {
        for t in started.into_iter().flatten() {
            for r in results.iter_mut().flatten() {
                if r.as_ref().is_ok_and(|x| x.id == t.id) {
                    *r = Ok(t.clone());
                }
            }
        }
    }
    results.into_iter().map(|r| r.expect("every request has a result")).collect()
}

/// Starts queued tasks, oldest first, while their caps have room; returns what became of
/// each one started.
pub(crate) async fn dispatch_queued(d: &mut Delegate) -> Result<Vec<Result<Task>>> {
    let mut ready = Vec::new();
    let mut refused = Vec::new();
    for task in d.store().queued()? {
        let caps = caps_for(d, &task.host, &task.brother);
        let Some(run) = d.store_mut().start_queued(task.id, caps)? else { continue };
        match ready_from_queue(d, &task, run.clone()) {
            Ok(r) => ready.push(r),
            Err(e) => {
                // The inventory changed under the queued task (brother or host gone, agent
                // unknown): it cannot start, and says why.
                fail(d, &run, &task.brother, &e.to_string(), &serde_json::Value::Null, None, None)?;
                refused.push(Err(e));
            }
        }
    }
    let mut out = refused;
    let mut rest = Vec::new();
    for r in ready {
        match agentbus_target(&r) {
            Some(t) => out.push(hand_to_agentbus(d, r.run, &r.brother, &t).await),
            None => rest.push(r),
        }
    }
    let ready = rest;
    if ready.is_empty() {
        return Ok(out);
    }
    let sent = send_all(d.transport(), d.store().mailbox_id(), &ready).await;
    for (r, s) in ready.into_iter().zip(sent) {
        out.push(record(d, r, s));
    }
    Ok(out)
}

/// The caps the inventory sets now for a task on `host` for `brother`.
pub(crate) fn caps_for(d: &Delegate, host: &str, brother: &str) -> Caps {
    let inv = d.inventory();
    let (h, b) = (inv.hosts.get(host), inv.brothers.get(brother));
    let daily =
        |usd: Option<f64>, over: Option<OverCap>| usd.map(|usd| DailyCap { usd, queue: over == Some(OverCap::Queue) });
    Caps {
        host: h.and_then(|h| h.max_concurrent),
        brother: b.and_then(|b| b.max_concurrent),
        host_daily: h.and_then(|h| daily(h.max_usd_per_day, h.over_cap)),
        brother_daily: b.and_then(|b| daily(b.max_usd_per_day, b.over_cap)),
    }
}

enum Prepared {
    Ready(Ready),
    Queued(Task),
}

/// A launch ready to go over the wire: its run is recorded, its script rendered.
pub(crate) struct Ready {
    run: RunStart,
    brother: String,
    reach: Reach,
    script: Vec<u8>,
    evidence: serde_json::Value,
    argv: Vec<String>,
    /// The plan's own files: with delegate's helpers, what the launch sends again to a
    /// brother whose store lacks them.
    plan_files: Vec<(String, String)>,
    /// Noted once a launch succeeds: later launches there name the helpers by hash only.
    helpers_hint: std::path::PathBuf,
}

/// The NATS host of a launch whose worker speaks agentbus (`protocol = "agentbus"`).
fn agentbus_target(r: &Ready) -> Option<crate::transport::NatsTarget> {
    match &r.reach {
        Reach::Nats(t) if t.agentbus => Some(t.clone()),
        _ => None,
    }
}

/// Hands a recorded task to an agentbus worker ([`crate::ops::agentbus::hand_over`]): the
/// task is `launched` once the stream stored it; a failure fails it with the reason.
async fn hand_to_agentbus(
    d: &mut Delegate,
    run: RunStart,
    brother: &str,
    t: &crate::transport::NatsTarget,
) -> Result<Task> {
    let handed = match d.transport().nats_clients().client(t).await {
        Ok(client) => {
            let js = async_nats::jetstream::new(client);
            crate::ops::agentbus::hand_over(d.store_mut(), &js, &t.worker_id, run.task_id).await
        }
        Err(e) => Err(e),
    };
    match handed {
        Ok(_) => d.store().task(run.task_id),
        Err(e) => {
            fail(d, &run, brother, &e.to_string(), &json!({ "agentbus": { "worker": t.worker_id } }), None, None)?;
            Err(e)
        }
    }
}

/// Notes a host's helpers (see [`helpers_hint`]): 0700 directory, 0600 file, whatever the
/// umask, like the rest of the mailbox directory. A note that cannot be written is left out.
fn note_helpers_sent(hint: &std::path::Path) {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = hint.parent() {
        let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
        let _ = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(hint);
    }
}

/// Where the lead notes that the brother at `address` keeps this launch's helper files
/// under `remote_root` (an empty file in the mailbox directory's `helpers-sent/`, named by
/// a hash of the three). Only a hint: the brother checks every helper before use and asks
/// for any it lacks, so a stale note costs one more exec, never a wrong file.
fn helpers_hint(d: &Delegate, address: &str, remote_root: &str, plan_files: &[(String, String)]) -> std::path::PathBuf {
    let mut h = Sha256::new();
    for part in [address, remote_root] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for (name, content) in remote::helper_files(plan_files) {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(Sha256::digest(content.as_bytes()));
    }
    let name: String = h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
    d.paths().data_dir.join("helpers-sent").join(name)
}

/// What sending one script gave, and how long it took (connecting included).
pub(crate) struct Sent {
    pub(crate) result: Result<(ExecOutput, Connection)>,
    pub(crate) total_ms: f64,
    /// A NATS host: how the hand-over went (the `launched` result, if it came, is `result`).
    pub(crate) nats: Option<crate::ops::nats::Handed>,
    /// The launch carried the helper files (first on the host, or asked for again).
    pub(crate) helpers_sent: bool,
}

/// A request's settings: what it asks for, else the brother's defaults (checked).
pub(crate) struct Settings {
    pub host_name: String,
    pub agent_name: String,
    pub model: Option<String>,
    pub sandbox: Sandbox,
    pub max_turns: u32,
    pub timeout: Duration,
    pub workdir: String,
    /// Run in a git worktree of `workdir` of its own.
    pub worktree: bool,
    /// Reasoning effort, spend limit, extra arguments, credential file.
    pub options: crate::agents::AgentOptions,
    /// Each setting's value and where it came from ([`crate::ops::settings::evidence`]).
    pub sources: serde_json::Value,
    /// The task's notification plan as stored ([`crate::notify::Plan`] JSON), if any.
    pub notify: Option<String>,
}

pub(crate) fn settings(d: &Delegate, req: &LaunchRequest) -> Result<Settings> {
    let inv = d.inventory();
    let (brother, _) = inv.brother(&req.brother)?;
    let host_name = brother.host.clone();
    let chosen = crate::ops::settings::resolve(inv, brother, req, &d.paths().config_file)?;
    let sources = crate::ops::settings::evidence(&chosen.sources);
    let agent_name = chosen.agent.clone();
    let custom = inv.agents.get(&agent_name);
    if !is_builtin_agent(&agent_name) && custom.is_none() {
        return Err(Error::UnknownAgent { name: agent_name, known: inv.agents.keys().cloned().collect() });
    }
    let (model, sandbox, max_turns, timeout) = (chosen.model.clone(), chosen.sandbox, chosen.max_turns, chosen.timeout);
    let workdir = req.workdir.clone().unwrap_or_else(|| brother.workdir.clone());
    check_remote_path(&workdir)
        .map_err(|m| Error::Config { path: d.paths().config_file.clone(), message: format!("workdir: {m}") })?;
    let notify = crate::notify::plan_for(inv, &req.brother, &req.notify, &d.paths().config_file)?
        .map(|p| serde_json::to_string(&p).expect("plans serialize"));
    Ok(Settings {
        host_name,
        agent_name,
        model,
        sandbox,
        max_turns,
        timeout,
        workdir,
        worktree: chosen.worktree,
        options: chosen.options,
        sources,
        notify,
    })
}

/// Checks a request, records the task, and renders its script (unless it queues).
fn prepare(d: &mut Delegate, req: LaunchRequest) -> Result<Prepared> {
    check_prompt(&req.prompt)?;
    let Settings {
        host_name,
        agent_name,
        model,
        sandbox,
        max_turns,
        timeout,
        workdir,
        worktree,
        options,
        mut sources,
        notify,
    } = settings(d, &req)?;
    let inv = d.inventory();
    let (brother, host_entry) = inv.brother(&req.brother)?;
    let custom = inv.agents.get(&agent_name);
    let remote_root =
        host_entry.remote_root.clone().unwrap_or_else(|| crate::hosts::inventory::DEFAULT_REMOTE_ROOT.into());
    let caps = caps_for(d, &host_name, &req.brother);
    let plan = agents::plan(&AgentRequest {
        agent: &agent_name,
        model: model.as_deref(),
        sandbox,
        max_turns,
        workdir: &workdir,
        custom,
        agent_path: agent_path_for(brother, &agent_name),
        options: &options,
    })?;
    let (environment, mut env_files) = crate::hosts::inventory::agent_environment(host_entry, Some(brother));
    env_files.extend(options.credential_file.clone());
    let reach = d.reach(&host_name)?;
    let subject = match &req.subject {
        Some(s) => clean_subject(s),
        None => subject_from(&req.prompt),
    };
    let prompt_sha256 = sha256_hex(&req.prompt);
    let address = reach.address();

    let author = req.author.clone().unwrap_or_else(|| d.paths().local_user.clone());
    let run = d.store_mut().create_task(&NewTask {
        brother: &req.brother,
        host: &host_name,
        address: &address,
        subject: &subject,
        agent: &agent_name,
        model: model.as_deref(),
        sandbox,
        max_turns,
        workdir: &workdir,
        prompt: &req.prompt,
        prompt_sha256: &prompt_sha256,
        timeout_secs: timeout.as_secs(),
        author: &author,
        caps,
        options: &options,
        settings: &sources,
        priority: req.priority.unwrap_or_default(),
        parent: req.parent,
        notify: notify.as_deref(),
    })?;
    // A worktree's path needs the task's number: the task moves there once recorded, with
    // the workdir it comes from kept in its settings (`worktree_of`), so every run (a
    // queued one starting, a reopen) and `diff`/`fetch` use the worktree.
    let workdir = if worktree {
        let key = crate::ops::sync::task_key(d.store().mailbox_id(), run.task_id, 1);
        let path = format!("{}/worktrees/{key}", remote_root.trim_end_matches('/'));
        sources["worktree_of"] = json!({ "value": workdir, "from": "worktree" });
        d.store_mut().move_to_worktree(run.task_id, &path, &sources)?;
        path
    } else {
        workdir
    };
    if run.queued {
        return Ok(Prepared::Queued(d.store().task(run.task_id)?));
    }
    ready(
        d,
        Delivery {
            preamble: preamble(run.task_id, &req.brother, plan.helpers),
            run,
            brother: &req.brother,
            reach,
            remote_root,
            workdir: &workdir,
            sandbox,
            plan: &plan,
            prompt: &req.prompt,
            environment,
            env_files,
            timeout_secs: timeout.as_secs(),
            max_turns,
            address,
            settings: sources,
        },
    )
    .map(Prepared::Ready)
}

/// A queued task's launch, from what the mailbox kept and the inventory says now.
fn ready_from_queue(d: &mut Delegate, task: &Task, run: RunStart) -> Result<Ready> {
    let plan = plan_for_task(d, task)?;
    let prompt = d.store().prompt(task.id)?;
    let reach = d.reach(&task.host)?;
    let preamble = preamble(task.id, &task.brother, plan.helpers);
    let delivery = Delivery::for_task(d, task, reach, run, &plan, preamble, &prompt)?;
    ready(d, delivery)
}

/// The prompt limits, checked before anything is recorded or sent.
pub(crate) fn check_prompt(prompt: &[u8]) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::PromptEmpty);
    }
    if prompt.len() > MAX_PROMPT_BYTES {
        return Err(Error::PromptTooLarge { bytes: prompt.len(), limit: MAX_PROMPT_BYTES });
    }
    Ok(())
}

/// The agent plan for a recorded task, from its own settings (a queued task starting, a
/// reopen), with custom agents looked up in the inventory as it is now.
pub(crate) fn plan_for_task(d: &Delegate, task: &Task) -> Result<crate::agents::AgentPlan> {
    let inv = d.inventory();
    let custom = inv.agents.get(&task.agent);
    if !is_builtin_agent(&task.agent) && custom.is_none() {
        return Err(Error::UnknownAgent { name: task.agent.clone(), known: inv.agents.keys().cloned().collect() });
    }
    agents::plan(&AgentRequest {
        agent: &task.agent,
        model: task.model.as_deref(),
        sandbox: task.sandbox,
        max_turns: task.max_turns,
        workdir: &task.workdir,
        custom,
        agent_path: inv.brothers.get(&task.brother).and_then(|b| agent_path_for(b, &task.agent)),
        options: &task.options,
    })
}

/// The brother's `agent_path`, when the task runs the brother's own agent (a path to
/// Claude says nothing about where Codex is).
pub(crate) fn agent_path_for<'a>(brother: &'a crate::hosts::inventory::BrotherEntry, agent: &str) -> Option<&'a str> {
    brother.agent_path.as_deref().filter(|_| brother.agent == agent)
}

/// Everything the network half of a launch needs; a first launch and a reopen both end here.
pub(crate) struct Delivery<'a> {
    pub run: RunStart,
    pub brother: &'a str,
    pub reach: Reach,
    pub remote_root: String,
    pub workdir: &'a str,
    pub sandbox: Sandbox,
    pub plan: &'a crate::agents::AgentPlan,
    /// What the agent reads before the prompt ([`preamble`], or a follow-up's).
    pub preamble: String,
    /// The prompt as given.
    pub prompt: &'a [u8],
    pub environment: crate::hosts::inventory::AgentEnvironment,
    pub env_files: Vec<String>,
    pub timeout_secs: u64,
    pub max_turns: u32,
    pub address: String,
    /// Each setting's value and source, recorded in the run's evidence.
    pub settings: serde_json::Value,
}

impl<'a> Delivery<'a> {
    /// A run of a recorded task: its own settings, its host as the inventory says now.
    pub(crate) fn for_task(
        d: &Delegate,
        task: &'a Task,
        reach: Reach,
        run: RunStart,
        plan: &'a crate::agents::AgentPlan,
        preamble: String,
        prompt: &'a [u8],
    ) -> Result<Delivery<'a>> {
        let address = reach.address();
        let inv = d.inventory();
        let (environment, mut env_files) =
            crate::hosts::inventory::agent_environment(inv.host(&task.host)?, inv.brothers.get(&task.brother));
        env_files.extend(task.options.credential_file.clone());
        Ok(Delivery {
            preamble,
            environment,
            env_files,
            run,
            brother: &task.brother,
            remote_root: d.remote_root(&task.host)?,
            reach,
            workdir: &task.workdir,
            sandbox: task.sandbox,
            plan,
            prompt,
            // 0 only in mailboxes older than the timeout column; every task gets a limit.
            timeout_secs: if task.timeout_secs > 0 {
                task.timeout_secs as u64
            } else {
                crate::hosts::inventory::DEFAULT_TIMEOUT.as_secs()
            },
            max_turns: task.max_turns,
            address,
            settings: task.settings.clone(),
        })
    }
}

/// Renders the launch script, sends it over one SSH exec, and records what happened on the
/// run: `launched` with the evidence, `failed` with the brother's reason, or `launch_unknown`.
pub(crate) async fn deliver(d: &mut Delegate, x: Delivery<'_>) -> Result<Task> {
    let r = ready(d, x)?;
    let sent =
        send_all(d.transport(), d.store().mailbox_id(), std::slice::from_ref(&r)).await.pop().expect("one result");
    record(d, r, sent)
}

/// Renders the launch script; a script that cannot be rendered fails the run.
fn ready(d: &mut Delegate, x: Delivery<'_>) -> Result<Ready> {
    let Delivery {
        run,
        brother,
        reach,
        remote_root,
        workdir,
        sandbox,
        plan,
        preamble,
        prompt,
        environment,
        env_files,
        timeout_secs,
        max_turns,
        address,
        settings,
    } = x;
    let worktree_of = settings["worktree_of"]["value"].as_str().unwrap_or("");
    let rendered = render_script(
        d.store().mailbox_id(),
        &run,
        &remote_root,
        (workdir, worktree_of),
        sandbox,
        plan,
        Text { preamble: &preamble, prompt },
        (environment, &env_files),
        timeout_secs,
        max_turns,
    );
    let lean = match rendered {
        Ok(s) => s,
        Err(e) => {
            fail(d, &run, brother, &e.to_string(), &serde_json::Value::Null, None, None)?;
            return Err(e);
        }
    };
    // Helper files by hash only where a launch already left them; else with them, so a
    // first launch on a host still takes one exec. Through NATS always with them: any
    // replica may take the task, and asking again goes through a queue.
    let helpers_hint = helpers_hint(d, &address, &remote_root, &plan.files);
    let script = if helpers_hint.exists() && !matches!(reach, Reach::Nats(_)) {
        lean
    } else {
        remote::with_helpers(&lean, &remote::helper_files(&plan.files)).expect("render_script's own script")
    };
    let evidence = json!({
        "address": &address,
        "agent_plan": plan,
        "settings": settings,
        "script_bytes": script.len(),
    });
    Ok(Ready {
        run,
        brother: brother.to_string(),
        reach,
        script,
        evidence,
        argv: plan.argv.clone(),
        plan_files: plan.files.clone(),
        helpers_hint,
    })
}

/// What the agent reads: delegate's preamble, then the prompt as given.
struct Text<'a> {
    preamble: &'a str,
    prompt: &'a [u8],
}

/// The launch script of one run: the only place a launch's bytes are put together.
#[allow(clippy::too_many_arguments)]
fn render_script(
    mailbox_id: &str,
    run: &RunStart,
    remote_root: &str,
    (workdir, worktree_of): (&str, &str),
    sandbox: Sandbox,
    plan: &crate::agents::AgentPlan,
    text: Text,
    (environment, env_files): (crate::hosts::inventory::AgentEnvironment, &[String]),
    timeout_secs: u64,
    max_turns: u32,
) -> Result<Vec<u8>> {
    let task_key = crate::ops::sync::task_key(mailbox_id, run.task_id, run.run_no);
    let prompt_sha256 = sha256_hex(text.prompt);
    remote::render(&LaunchVars {
        task_id: run.task_id,
        task_key: &task_key,
        session: &run.session,
        nonce: &run.nonce,
        remote_root,
        workdir,
        worktree_of,
        sandbox,
        plan,
        preamble: text.preamble,
        prompt: text.prompt,
        prompt_sha256: &prompt_sha256,
        environment,
        env_files,
        timeout_secs,
        turn_limit: if plan.turn_limit == "delegate" { max_turns } else { 0 },
        grace_secs: remote::DEFAULT_GRACE_SECS,
    })
}

/// A launch script as [`Delegate::launch`] renders it, and the names it carries.
#[derive(Debug, Clone)]
pub struct RenderedLaunch {
    /// The bytes a warm launch sends on the exec channel's stdin: the helper files named by
    /// hash only. A brother whose store lacks them refuses it (exit 34, nothing started).
    pub script: Vec<u8>,
    /// The same launch with the helper files in it, as sent to a brother that asked for
    /// them: runs on any brother, and fills its store.
    pub script_with_helpers: Vec<u8>,
    /// Host (inventory name) of the brother.
    pub host: String,
    pub session: String,
    pub nonce: String,
    /// `<mailbox>-<task>`: the task directory's name under `<remote_root>/tasks/`.
    pub task_key: String,
    /// The remote root as configured (`~/` is expanded on the brother).
    pub remote_root: String,
}

/// Renders the launch script of run 1 of task `task_id` on `brother` with `prompt` and the
/// brother's defaults, byte for byte as a launch renders it (only the nonce is fresh), and
/// records and sends nothing. For benchmarks that send the same script through other
/// tools (`ssh host bash -s`, pssh), and for looking at what travels to a brother. A
/// script started this way is unknown to the mailbox, so sync never sees it; pick a
/// `task_id` the mailbox does not use, or the brother refuses it as already launched.
pub fn render_launch_script(d: &Delegate, brother: &str, task_id: i64, prompt: &[u8]) -> Result<RenderedLaunch> {
    use rand::RngCore;
    check_prompt(prompt)?;
    let inv = d.inventory();
    let (b, host_entry) = inv.brother(brother)?;
    let custom = inv.agents.get(&b.agent);
    if !is_builtin_agent(&b.agent) && custom.is_none() {
        return Err(Error::UnknownAgent { name: b.agent.clone(), known: inv.agents.keys().cloned().collect() });
    }
    let timeout = match &b.timeout {
        Some(text) => crate::hosts::inventory::parse_timeout(text)
            .map_err(|m| Error::Config { path: d.paths().config_file.clone(), message: format!("timeout: {m}") })?,
        None => crate::hosts::inventory::DEFAULT_TIMEOUT,
    };
    let remote_root =
        host_entry.remote_root.clone().unwrap_or_else(|| crate::hosts::inventory::DEFAULT_REMOTE_ROOT.into());
    let plan = agents::plan(&AgentRequest {
        agent: &b.agent,
        model: b.model.as_deref(),
        sandbox: b.sandbox,
        max_turns: b.max_turns,
        workdir: &b.workdir,
        custom,
        agent_path: b.agent_path.as_deref(),
        // The brother's own settings: no profile, no extra options.
        options: &Default::default(),
    })?;
    let (environment, env_files) = crate::hosts::inventory::agent_environment(host_entry, Some(b));
    let mailbox_id = d.store().mailbox_id();
    let session = crate::names::SessionName::for_run(mailbox_id, task_id, 1)
        .map_err(|e| Error::Config { path: "(launch)".into(), message: format!("task id {task_id}: {e}") })?
        .to_string();
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    let nonce: String = raw.iter().map(|x| format!("{x:02x}")).collect();
    let run =
        RunStart { task_id, run_no: 1, session: session.clone(), nonce: nonce.clone(), version: 1, queued: false };
    let script = render_script(
        mailbox_id,
        &run,
        &remote_root,
        (&b.workdir, ""),
        b.sandbox,
        &plan,
        Text { preamble: &preamble(task_id, brother, plan.helpers), prompt },
        (environment, &env_files),
        timeout.as_secs(),
        b.max_turns,
    )?;
    let script_with_helpers = remote::with_helpers(&script, &remote::helper_files(&plan.files))
        .expect("render_script's output has the empty helper line");
    Ok(RenderedLaunch {
        script,
        script_with_helpers,
        host: b.host.clone(),
        session,
        nonce,
        task_key: crate::ops::sync::task_key(mailbox_id, task_id, 1),
        remote_root,
    })
}

/// Sends every script at once (over SSH: each on its own channel of its host's pooled
/// connection).
async fn send_all(transport: &Transport, mailbox: &str, ready: &[Ready]) -> Vec<Sent> {
    let mut jobs = tokio::task::JoinSet::new();
    for (i, r) in ready.iter().enumerate() {
        let (transport, reach, script) = (transport.clone(), r.reach.clone(), r.script.clone());
        let (mailbox, run) = (mailbox.to_string(), r.run.clone());
        let plan_files = r.plan_files.clone();
        jobs.spawn(async move {
            let started = Instant::now();
            if let Reach::Nats(t) = &reach {
                // Handed to the server for the worker; its `launched` result, if it comes
                // within the host's launch wait, is read like an SSH launch's output. Always
                // with the helper files (see `prepare`): a round trip through a queue to ask
                // for them would cost far more than their bytes.
                let (result, handed) = crate::ops::nats::hand_over(&transport, t, &mailbox, &run, &script).await;
                let helpers_sent = remote::sends_helpers(&script);
                return (i, Sent { result, total_ms: elapsed_ms(started), nats: Some(handed), helpers_sent });
            }
            let mut result = transport.exec(&reach, crate::remote::REMOTE_COMMAND, &script, EXEC_LIMIT).await;
            // The brother's store lacks helper files (a first launch there, or a new version
            // of delegate): it said so before creating anything, so the same launch goes
            // once more with them. Once: a brother asking again gets its refusal recorded.
            let mut helpers_sent = remote::sends_helpers(&script);
            if let Ok((out, first)) = &result
                && out.exit == Exit::Code(remote::code::HELPERS_MISSING as u32)
                && !remote::parse_output(&out.stdout, &out.stderr).need.is_empty()
                && let Some(full) = remote::with_helpers(&script, &remote::helper_files(&plan_files))
            {
                helpers_sent = true;
                let first = first.clone();
                result = transport.exec(&reach, crate::remote::REMOTE_COMMAND, &full, EXEC_LIMIT).await;
                // The launch opened its connection with the first exec, if it did.
                if let Ok((_, conn)) = &mut result {
                    conn.fresh = conn.fresh.take().or(first.fresh);
                }
            }
            (i, Sent { result, total_ms: elapsed_ms(started), nats: None, helpers_sent })
        });
    }
    let mut sent: Vec<Option<Sent>> = (0..ready.len()).map(|_| None).collect();
    while let Some(done) = jobs.join_next().await {
        let (i, s) = done.expect("launch jobs do not panic");
        sent[i] = Some(s);
    }
    sent.into_iter().map(|s| s.expect("every job reports")).collect()
}

/// Records what one send gave: `launched` with the evidence, `failed` with the brother's
/// reason, or `launch_unknown`.
fn record(d: &mut Delegate, r: Ready, sent: Sent) -> Result<Task> {
    let Ready { run, brother, reach, script: _, mut evidence, argv, plan_files: _, helpers_hint } = r;
    let instance = match (&sent.nats, &reach) {
        (Some(handed), Reach::Nats(t)) => {
            match crate::ops::nats::record_hand_over(d, &run, &brother, t, handed, &mut evidence, sent.total_ms)? {
                crate::ops::nats::Next::Done(task) => return Ok(*task),
                crate::ops::nats::Next::Record { instance } => instance,
            }
        }
        _ => None,
    };
    let task = record_exec(d, run.clone(), brother, evidence, argv, sent, Some(&helpers_hint));
    if let (Some(instance), Ok(_)) = (instance, &task) {
        d.store_mut().set_instance(run.task_id, run.run_no, &instance)?;
    }
    task
}

/// Records what a launch script's output says (an SSH exec's, or a NATS worker's
/// `launched` result): `launched` with the evidence, `failed` with the brother's reason, or
/// `launch_unknown`.
pub(crate) fn record_exec(
    d: &mut Delegate,
    run: RunStart,
    brother: String,
    mut evidence: serde_json::Value,
    argv: Vec<String>,
    sent: Sent,
    helpers_hint: Option<&std::path::Path>,
) -> Result<Task> {
    evidence["helpers_sent"] = json!(sent.helpers_sent);
    let (out, conn) = match sent.result {
        Ok(x) => x,
        Err(e) => {
            // No connection, or no channel: nothing reached the brother, so the failure
            // is certain, not unknown. (A NATS worker that refused the task: likewise.)
            evidence["connect_error"] = json!(e.to_string());
            if matches!(e, Error::NoWorker { .. }) {
                evidence["nats"]["untaken"] = json!("refused");
            }
            fail(d, &run, &brother, &e.to_string(), &evidence, None, None)?;
            return Err(Error::LaunchFailed { task: run.task_id, brother, source: Box::new(e) });
        }
    };
    evidence["connection"] = json!(if conn.fresh.is_some() { "new" } else { "reused" });
    // Held by the warm daemon (kept for the next command) or by this process.
    evidence["warm"] = json!(conn.warm);
    let mut timings = json!({});
    if let Some(t) = &conn.fresh {
        timings = json!({ "tcp_ms": t.tcp_ms, "handshake_ms": t.handshake_ms, "auth_ms": t.auth_ms });
    }
    // The send was timed whole, connecting included when the connection was new.
    let connect_ms = conn.fresh.as_ref().map_or(0.0, |t| t.tcp_ms + t.handshake_ms + t.auth_ms);
    timings["exec_ms"] = json!(((sent.total_ms - connect_ms).max(0.0) * 10.0).round() / 10.0);
    timings["total_ms"] = json!(sent.total_ms);
    evidence["timings"] = timings;

    let parsed = remote::parse_output(&out.stdout, &out.stderr);
    // The brother's stderr is kept as evidence: its head only (a hostile brother could send
    // up to the exec cap).
    let head = &out.stderr[..out.stderr.len().min(MAX_LAUNCH_STDERR)];
    let stderr = String::from_utf8_lossy(head).into_owned();
    if let Some(remote) = &parsed.evidence {
        evidence["remote"] = remote.clone();
        evidence["argv"] = json!(resolved_argv(&argv, remote));
    }
    let exit_code = match out.exit {
        Exit::Code(c) => Some(i64::from(c)),
        _ => None,
    };
    evidence["launch_exit"] = json!(exit_code);

    let marker_ok = parsed.marker.as_ref().is_some_and(|m| m.nonce == run.nonce && m.session == run.session);
    if out.exit == Exit::Code(0) && marker_ok {
        // The brother holds the helpers now (a hint for later launches: failing to note it
        // only costs them the helpers' bytes).
        if let Some(hint) = helpers_hint {
            note_helpers_sent(hint);
        }
        let m = parsed.marker.expect("checked above");
        let remote_dir = parsed.evidence.as_ref().and_then(|e| e["task_dir"].as_str().map(String::from));
        write_record(
            d,
            &run,
            &brother,
            &LaunchRecord {
                status: TaskStatus::Launched,
                reason: None,
                remote_dir: remote_dir.as_deref(),
                pane_pid: m.pane_pid,
                marker: Some(&m.line),
                launch_exit: exit_code,
                evidence: &evidence,
                launch_stderr: (!stderr.is_empty()).then_some(stderr.as_str()),
            },
        )?;
        return d.store().task(run.task_id);
    }

    if let (Exit::Code(_), Some((remote::code::CANCELLED, message))) = (&out.exit, &parsed.error) {
        // The brother found the cancel's mark: nothing started, and nothing will.
        let reason = format!("cancelled while launching: {}", clean_line(message, 300));
        let rec = LaunchRecord {
            status: TaskStatus::Cancelled,
            reason: Some(&reason),
            remote_dir: None,
            pane_pid: None,
            marker: None,
            launch_exit: exit_code,
            evidence: &evidence,
            launch_stderr: (!stderr.is_empty()).then_some(stderr.as_str()),
        };
        write_record(d, &run, &brother, &rec)?;
        return Err(Error::CancelledWhileLaunching { task: run.task_id, brother });
    }
    if let (Exit::Code(code), Some((verdict, message))) = (&out.exit, &parsed.error) {
        let code = *code as i32;
        let mut message = message.clone();
        if *verdict == remote::code::LAUNCH_SCRIPT_ERROR {
            // The script could not say why itself: bash's own words are the reason.
            if let Some(said) = stderr.lines().find(|l| !l.starts_with("DELEGATE-") && !l.trim().is_empty()) {
                message = format!("{message}: {}", crate::ops::launch::clean_line(said, 300));
            }
        }
        fail(d, &run, &brother, &message, &evidence, exit_code, Some(&stderr))?;
        return Err(Error::LaunchRefused { task: run.task_id, brother, code, message });
    }
    let why = match (&out.exit, &out.broken) {
        (_, Some(broken)) => broken.clone(),
        (Exit::Code(0), None) => "the brother exited 0 without the success marker for this launch".into(),
        (Exit::Code(c), None) => format!("the launch script exited {c}: {}", stderr.trim()),
        (Exit::Signal(s), None) => format!("the launch script was killed by {s}"),
        (Exit::Unknown, None) => "no exit status".into(),
    };
    // Without a preflight verdict we cannot rule out that tmux started: say unknown.
    write_record(
        d,
        &run,
        &brother,
        &LaunchRecord {
            status: TaskStatus::LaunchUnknown,
            reason: Some(&why),
            remote_dir: None,
            pane_pid: None,
            marker: None,
            launch_exit: exit_code,
            evidence: &evidence,
            launch_stderr: (!stderr.is_empty()).then_some(stderr.as_str()),
        },
    )?;
    Err(Error::LaunchUnknown { task: run.task_id, brother, why })
}

/// Writes how a launch ended and moves its task. A task somebody `cancel`led meanwhile (the
/// version moved on, to `cancelled`) keeps its state and gets the run's record: the launch
/// then reports [`Error::CancelledWhileLaunching`], never a conflict to "try again", which
/// would invite a duplicate.
fn write_record(d: &mut Delegate, run: &RunStart, brother: &str, rec: &LaunchRecord) -> Result<()> {
    match d.store_mut().record_launch(run, rec) {
        Err(Error::Conflict { .. }) if d.store().task(run.task_id)?.status == TaskStatus::Cancelled => {
            d.store_mut().record_run(run, &LaunchRecord { status: TaskStatus::Cancelled, ..*rec })?;
            Err(Error::CancelledWhileLaunching { task: run.task_id, brother: brother.to_string() })
        }
        other => other.map(|_| ()),
    }
}

pub(crate) fn fail(
    d: &mut Delegate,
    run: &RunStart,
    brother: &str,
    reason: &str,
    evidence: &serde_json::Value,
    launch_exit: Option<i64>,
    stderr: Option<&str>,
) -> Result<()> {
    write_record(
        d,
        run,
        brother,
        &LaunchRecord {
            status: TaskStatus::Failed,
            reason: Some(reason),
            remote_dir: None,
            pane_pid: None,
            marker: None,
            launch_exit,
            evidence,
            launch_stderr: stderr.filter(|s| !s.is_empty()),
        },
    )?;
    Ok(())
}

/// The argv the brother ran: the plan's, with the remote placeholders and the resolved
/// program path filled in exactly as `launch.sh` does.
fn resolved_argv(argv: &[String], remote: &serde_json::Value) -> Vec<String> {
    let dir = remote["task_dir"].as_str().unwrap_or("{task_dir}");
    let mut out: Vec<String> =
        argv.iter().map(|a| a.replace("{task_dir}", dir).replace("{prompt_file}", &format!("{dir}/prompt"))).collect();
    if let (Some(first), Some(path)) = (out.first_mut(), remote["agent_path"].as_str()) {
        *first = path.to_string();
    }
    out
}

fn elapsed_ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 10_000.0).round() / 10.0
}

impl Delegate {
    /// Launches a task on a brother; see [`crate::ops::launch`].
    pub async fn launch(&mut self, req: LaunchRequest) -> Result<Task> {
        self.authorize(&self.identity(req.author.as_deref()), crate::roles::Action::Launch, None)?;
        launch(self, req).await
    }

    /// Launches one task per request (fan-out), concurrently, one SSH connection per host;
    /// one result per request, in order. A task over a host's or brother's concurrency cap
    /// comes back `queued`.
    pub async fn launch_many(&mut self, reqs: Vec<LaunchRequest>) -> Vec<Result<Task>> {
        // Each request is checked before anything is sent; a refused one is its own error,
        // and the others go ahead, as with any per-brother failure of a fan-out.
        let mut refused: Vec<Option<Error>> = Vec::with_capacity(reqs.len());
        let mut allowed = Vec::new();
        for r in reqs {
            match self.authorize(&self.identity(r.author.as_deref()), crate::roles::Action::Launch, None) {
                Ok(()) => {
                    refused.push(None);
                    allowed.push(r);
                }
                Err(e) => refused.push(Some(e)),
            }
        }
        let mut launched = launch_many(self, allowed).await.into_iter();
        refused
            .into_iter()
            .map(|e| match e {
                Some(e) => Err(e),
                None => launched.next().expect("one result per request launched"),
            })
            .collect()
    }

    /// Starts queued tasks whose caps have room now, oldest first (sync does this too);
    /// returns what became of each one started.
    pub async fn dispatch_queued(&mut self) -> Result<Vec<Result<Task>>> {
        dispatch_queued(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brother_lines_lose_whole_escape_sequences() {
        assert_eq!(clean_line("bash: \u{1b}]52;c;SGk=\u{7}line 3:\n\u{1b}[31mboom", 100), "bash: line 3: boom");
        assert_eq!(clean_line("abcdef", 3), "abc");
    }

    #[test]
    fn subjects_are_one_clean_line() {
        assert_eq!(subject_from(b"\n\n  review the config \nmore"), "review the config");
        assert_eq!(subject_from(b"\x1b[31mred\x1b[0m"), "[31mred[0m");
        assert_eq!(subject_from(&[0xff, 0xfe, b'a']), "\u{fffd}\u{fffd}a");
        assert_eq!(subject_from(&b"x".repeat(200)).chars().count(), 80);
        assert_eq!(subject_from(b"\x1b\n real text"), "real text");
        assert_eq!(subject_from(b"\x07\x1b"), "(empty)");
    }
}
