//! `delegate mcp`: a Model Context Protocol server on stdio, so a coding agent (Claude Code,
//! Codex, ...) can act as the lead: hand tasks to brothers, wait for them, read their threads
//! and the mailbox, talk to running agents, and cancel or update tasks.
//!
//! One [`Delegate`] sits behind a mutex; it is opened on the first call and opened again when
//! the inventory file changes, so `delegate brothers add` is seen without a restart. Nothing
//! but JSON-RPC goes to stdout: this module prints nothing at all.
//!
//! Every failure a caller can fix (bad arguments, unknown brother or task, unreachable host,
//! finished task) is a tool result with `isError: true`: the text is
//! `error <code>: <message>`, and the structured content is `{"error": code, "message": ...}`,
//! with the codes from [`error_code`] (they follow the CLI's exit-code table). Results longer
//! than [`MAX_RESULT_CHARS`] characters are cut, with a note saying where the whole text is.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use delegate_core::mailbox::Message;
use delegate_core::mailbox::thread::{TaskView, Window};
use delegate_core::{Delegate, Error, LaunchRequest, ListFilter, Paths, Sandbox, Task, TaskStatus};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

mod board;
mod reply;
mod work_back;
use reply::*;

/// Tool results longer than this many characters are cut (or, for `get_task`, thinned),
/// with a note saying where the whole text is.
pub const MAX_RESULT_CHARS: usize = 20_000;
/// `get_task` reads at most this many thread items (and the prompts) from the mailbox: the
/// smallest item prints in over 100 characters, so fewer than 200 fit [`MAX_RESULT_CHARS`]
/// anyway, and a task with 600,000 events costs no more than one with 250.
const GET_TASK_ITEMS: usize = 250;
/// `wait_tasks` waits this long when no `timeout_seconds` is given: under the 60 s that
/// The most questions one inbox result lists (each is at most 2000 characters).
const MAX_INBOX_SHOWN: usize = 30;
/// Codex allows a tool call by default.
const DEFAULT_WAIT_SECS: u64 = 50;
/// ... and never longer than this in one call (MCP clients time tool calls out).
const MAX_WAIT_SECS: u64 = 600;
/// How often `wait_tasks` syncs the hosts of unfinished tasks.
const WAIT_POLL: Duration = Duration::from_secs(2);
/// `list_tasks` and `check_mailbox` return at most this many items unless asked.
const DEFAULT_LIST_LIMIT: u32 = 20;
const DEFAULT_MAILBOX_LIMIT: u32 = 50;
/// The author when nothing names one and the server was started without a local user
/// (embedded in a test): see [`IDENTITY_FALLBACK`].
const DEFAULT_AUTHOR: &str = "mcp";

/// Who asks when a call has no `as`: `DELEGATE_AGENT_ID` (read once at start), else the
/// client's name, else the local user. Process-wide because the tools' `author` helper
/// has only the call at hand, and the server runs once per process.
static IDENTITY_FALLBACK: std::sync::OnceLock<(Option<String>, String)> = std::sync::OnceLock::new();

const INSTRUCTIONS: &str = "delegate hands tasks to coding agents (\"brothers\") on remote machines over SSH and \
tracks them in a local mailbox. Typical flow: list_brothers; delegate_task (one brother or several); wait_tasks \
with the task numbers; get_task for the thread and final text. Brothers report receipt, progress, questions and \
completion: read them with check_mailbox. send_message steers a running task; cancel_task stops one. The shared \
board: create_task (backlog), start_task, board, move_task, comment, review, delete_task; the inventory's [roles] \
decide who may do what (error role_refused names the role needed). Errors are results with isError true, a code \
and a message saying how to fix the call. What a task changed in its workdir: get_diff to review it, fetch_result \
to bring it back as a patch or apply it to a local checkout.";

/// Runs the server on stdin/stdout until the client closes the connection.
pub async fn serve(paths: Paths, agent_id: Option<String>) -> anyhow::Result<()> {
    let _ = IDENTITY_FALLBACK.set((agent_id, paths.local_user.clone()));
    let service = DelegateServer::new(paths).serve(rmcp::transport::stdio()).await?;
    service.waiting().await?;
    Ok(())
}

/// The MCP server: the tools below, over one [`Delegate`].
#[derive(Clone)]
pub struct DelegateServer {
    paths: Arc<Paths>,
    state: Arc<Mutex<State>>,
    tool_router: ToolRouter<Self>,
}

#[derive(Default)]
struct State {
    delegate: Option<Delegate>,
    /// The inventory file's modification time and size when it was loaded.
    stamp: Option<(SystemTime, u64)>,
}

type Reply = Result<CallToolResult, CallToolResult>;

// ---------------------------------------------------------------------------------------
// Tool arguments. Doc comments become the descriptions in each tool's input schema.

/// How much the agent may do on its brother.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum SandboxArg {
    /// Read files only.
    Read,
    /// Edit files in the working directory; shell commands sandboxed where the agent can.
    Write,
    /// No isolation at all.
    Full,
}

impl From<SandboxArg> for Sandbox {
    fn from(s: SandboxArg) -> Sandbox {
        match s {
            SandboxArg::Read => Sandbox::Read,
            SandboxArg::Write => Sandbox::Write,
            SandboxArg::Full => Sandbox::Full,
        }
    }
}

/// One brother name, or several for a fan-out.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged, expecting = "brother must be a brother name or a list of brother names")]
enum Brothers {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DelegateTaskArgs {
    /// The brother to hand the task to (a name from list_brothers), or a list of names to hand the same task to
    /// each of them (one task per brother). Leave it out when giving environment.
    brother: Option<Brothers>,
    /// An environment from list_brothers instead of a brother: the task goes to its least loaded brother that has
    /// room under its caps (the task's settings record why), or to each of its brothers with all = true.
    environment: Option<String>,
    /// With environment: hand the task to every brother in it (a fan-out).
    all: Option<bool>,
    /// The task, as you would write it to a capable colleague: goal, context, constraints, what to report.
    prompt: String,
    /// A one-line subject for listings (default: the prompt's first line).
    subject: Option<String>,
    /// Working directory on the brother's host (default: the brother's).
    working_dir: Option<String>,
    /// Turn limit for the agent (default: the brother's).
    max_turns: Option<u32>,
    /// Sandbox level: read, write or full (default: the brother's). A level the agent cannot honour is refused,
    /// never downgraded.
    sandbox: Option<SandboxArg>,
    /// Agent: claude, codex, self-test or a custom agent from the inventory (default: the brother's).
    agent: Option<String>,
    /// Model name passed to the agent (default: the brother's).
    model: Option<String>,
    /// Wall-clock limit such as "45m" or "4h" (default: the brother's, else 4h).
    timeout: Option<String>,
    /// A worker profile from the inventory (list_brothers shows them): its settings apply under the ones given
    /// here and over the brother's (default: the brother's default_profile).
    profile: Option<String>,
    /// Run in a git worktree of its own on the brother (branch delegate/<task key> from the workdir's HEAD), so
    /// parallel tasks on one repository never collide. Default: the profile's, else the brother's `worktree`.
    worktree: Option<bool>,
    /// How hard the model thinks: low, medium, high, xhigh or max (Claude; Codex up to xhigh). Default: the
    /// profile's, else the agent's own.
    reasoning_effort: Option<String>,
    /// A spend limit for the run in US dollars, enforced by the agent (Claude only; refused for others).
    max_budget_usd: Option<f64>,
    /// Extra arguments for the agent's command line, e.g. ["--fallback-model", "sonnet"]; they replace the
    /// profile's. Flags delegate sets itself (sandbox, permissions, turn limit, output, session, model, effort,
    /// budget) and words the agent would read as a prompt are refused, naming the flag.
    args: Option<Vec<String>>,
    /// Notifications for this task: "on", "off", or events such as "completed,failed,needs_input" (default:
    /// the inventory's [notify]).
    notify: Option<String>,
    /// Who is asking, recorded with the task (default: this MCP client's name).
    #[serde(rename = "as", alias = "author")]
    author: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListTasksArgs {
    /// Only tasks of this brother.
    brother: Option<String>,
    /// Only tasks in this state.
    #[serde(default)]
    #[schemars(schema_with = "status_schema")]
    status: Option<String>,
    /// At most this many tasks, newest first (default 20).
    limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TaskIdArgs {
    /// The task number (from delegate_task or list_tasks).
    id: i64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CancelTaskArgs {
    /// The task number (from delegate_task or list_tasks).
    id: i64,
    /// Who asks (default: this MCP client's name); the board's roles apply to this name.
    #[serde(rename = "as", alias = "author")]
    author: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WaitTasksArgs {
    /// Task numbers to wait for.
    ids: Vec<i64>,
    /// How long to wait at most, in seconds (default 50, at most 600). The call returns as soon as every task has
    /// finished; on timeout it says which are still pending, and you can call it again.
    timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SendMessageArgs {
    /// The running task to talk to.
    id: i64,
    /// The message for its agent (at most 8000 bytes). It arrives at the agent's next tool call (Claude Code) or
    /// next inbox check (other agents); get_task shows when it was delivered and read.
    text: String,
    /// Who is speaking (default: this MCP client's name).
    #[serde(rename = "as", alias = "author")]
    author: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct InboxArgs {
    /// Only this brother's questions.
    brother: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AnswerArgs {
    /// The task whose question to answer (see the inbox tool).
    id: i64,
    /// The answer (at most 8000 bytes): said to the agent while it runs, or its follow-up when it has stopped.
    text: String,
    /// Who answers (default: this MCP client's name).
    #[serde(rename = "as", alias = "author")]
    author: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CheckMailboxArgs {
    /// Only messages not yet read (default true).
    unread_only: Option<bool>,
    /// At most this many messages, the newest ones (default 50).
    limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpdateTaskArgs {
    /// The task number.
    id: i64,
    /// The outcome to record (other states are delegate's own findings).
    #[schemars(schema_with = "settable_status_schema")]
    status: String,
    /// The task's output or a note, kept with its messages.
    output: Option<String>,
    /// Who sets it (default: this MCP client's name).
    #[serde(rename = "as", alias = "author")]
    author: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

fn status_names() -> Vec<&'static str> {
    TaskStatus::ALL.iter().map(|s| s.as_str()).collect()
}

fn status_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": ["string", "null"], "enum": status_names().into_iter().map(Some).chain([None]).collect::<Vec<_>>() })
}

fn settable_status_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = TaskStatus::SETTABLE_BY_HAND.iter().map(|s| s.as_str()).collect();
    schemars::json_schema!({ "type": "string", "enum": names })
}

// ---------------------------------------------------------------------------------------
// The tools.

#[tool_router]
impl DelegateServer {
    pub fn new(paths: Paths) -> DelegateServer {
        DelegateServer {
            paths: Arc::new(paths),
            state: Arc::default(),
            tool_router: Self::tool_router() + Self::board_router() + Self::work_router(),
        }
    }

    /// Hand a task to one brother, or the same task to several (fan-out). Returns every task number with its
    /// status (launched: the agent really started on the brother; queued: it starts when a slot frees up; failed:
    /// with the brother's reason) and per-brother errors. Follow up with wait_tasks and get_task.
    #[tool(annotations(destructive_hint = false, open_world_hint = true))]
    async fn delegate_task(
        &self,
        Parameters(a): Parameters<DelegateTaskArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Reply {
        let names = match (a.brother, &a.environment) {
            (Some(Brothers::One(n)), None) => vec![n],
            (Some(Brothers::Many(v)), None) => v,
            (None, Some(_)) => vec![],
            (Some(_), Some(_)) => {
                return Err(bad_args(
                    "delegate_task",
                    "give brother or environment, not both (the environment picks the brother)",
                ));
            }
            (None, None) => {
                return Err(bad_args("delegate_task", "give brother (a name from list_brothers) or environment"));
            }
        };
        if a.all.unwrap_or(false) && a.environment.is_none() {
            return Err(bad_args("delegate_task", "all applies to an environment: give environment too"));
        }
        if names.is_empty() && a.environment.is_none() {
            return Err(bad_args("delegate_task", "brother is an empty list: give at least one brother name"));
        }
        if a.prompt.trim().is_empty() {
            return Err(fail(&Error::PromptEmpty));
        }
        let timeout = match a.timeout.as_deref().map(delegate_core::hosts::inventory::parse_timeout).transpose() {
            Ok(t) => t,
            Err(m) => return Err(bad_args("delegate_task", &format!("timeout: {m}"))),
        };
        let reasoning_effort = match a.reasoning_effort.as_deref().map(str::parse).transpose() {
            Ok(e) => e,
            Err(m) => return Err(bad_args("delegate_task", &format!("reasoning_effort: {m}"))),
        };
        let notify = match a.notify.as_deref().map(str::parse::<delegate_core::notify::Choice>).transpose() {
            Ok(n) => n.unwrap_or_default(),
            Err(m) => return Err(bad_args("delegate_task", &format!("notify: {m}"))),
        };
        let author = author(a.author, &ctx);
        if let Some(n) = names.iter().position(|n| n.trim().is_empty()) {
            return Err(bad_args("delegate_task", &format!("brother {} of the list is empty", n + 1)));
        }
        let mut d = self.delegate().await?;
        let (names, placement) = match &a.environment {
            None => (names, None),
            Some(e) if a.all.unwrap_or(false) => match d.environment_brothers(e) {
                Ok(all) => (all, Some("--all: every brother in it".to_string())),
                Err(err) => return Err(fail(&err)),
            },
            Some(e) => match d.place(e) {
                Ok(p) => (vec![p.brother], Some(p.why)),
                Err(err) => return Err(fail(&err)),
            },
        };
        let reqs = names
            .iter()
            .map(|b| LaunchRequest {
                brother: b.clone(),
                prompt: a.prompt.clone().into_bytes(),
                subject: a.subject.clone(),
                workdir: a.working_dir.clone(),
                max_turns: a.max_turns,
                sandbox: a.sandbox.map(Sandbox::from),
                agent: a.agent.clone(),
                model: a.model.clone(),
                timeout,
                author: Some(author.clone()),
                profile: a.profile.clone(),
                worktree: a.worktree,
                environment: a.environment.clone(),
                placement: placement.clone(),
                reasoning_effort,
                max_budget_usd: a.max_budget_usd,
                extra_args: a.args.clone(),
                priority: None,
                parent: None,
                notify: notify.clone(),
            })
            .collect();
        let results = d.launch_many(reqs).await;
        let mut tasks = Vec::new();
        let mut errors = Vec::new();
        for (name, r) in names.iter().zip(results) {
            match r {
                Ok(t) => tasks.push(json!({
                    "brother": name,
                    "task": t.id,
                    "status": t.status,
                    "host": t.host,
                    "session": t.session,
                    "subject": t.subject,
                    "agent": t.agent,
                    "sandbox": t.sandbox,
                    "max_turns": t.max_turns,
                })),
                Err(e) => {
                    let task = e.task_id().and_then(|id| d.task(id).ok());
                    let entry = json!({
                        "brother": name,
                        "task": task.as_ref().map(|t| t.id),
                        "status": task.as_ref().map(|t| t.status.as_str()),
                        "error": error_code(&e),
                        "message": error_chain(&e),
                    });
                    if task.is_some() {
                        tasks.push(entry.clone());
                    }
                    errors.push(entry);
                }
            }
        }
        let started: Vec<i64> =
            tasks.iter().filter(|t| t["error"].is_null()).filter_map(|t| t["task"].as_i64()).collect();
        let out = json!({
            "tasks": tasks,
            "errors": errors,
            // With environment: where the task went and why (also in each task's settings).
            "placement": placement,
            "next": if started.is_empty() { Value::Null } else {
                json!(format!("wait_tasks with ids {started:?}, then get_task for each thread"))
            },
        });
        if errors.is_empty() {
            return Ok(text_result(&out, "`delegate list --json`"));
        }
        // Like the CLI: the other brothers' tasks go ahead, and the call is an error that
        // names each brother that failed (and says not to launch the started ones again).
        let codes: Vec<&str> = errors.iter().filter_map(|e| e["error"].as_str()).collect();
        let code = if codes.windows(2).all(|w| w[0] == w[1]) { codes[0] } else { "launch_failed" };
        let mut message = errors
            .iter()
            .map(|e| format!("{}: {}", e["brother"].as_str().unwrap_or("?"), e["message"].as_str().unwrap_or("?")))
            .collect::<Vec<_>>()
            .join("; ");
        if codes.contains(&"unknown_brother") {
            message.push_str(" (list_brothers shows the names)");
        }
        if !started.is_empty() {
            message.push_str(&format!(". The other brothers' tasks {started:?} did start: do not launch them again"));
        }
        let mut r = text_result(&out, "`delegate list --json`");
        r.is_error = Some(true);
        r.content.insert(0, ContentBlock::text(format!("error {code}: {message}")));
        r.structured_content =
            Some(json!({ "error": code, "message": message, "tasks": out["tasks"], "errors": out["errors"] }));
        Err(r)
    }

    /// List tasks, newest first, after syncing the hosts of unfinished tasks.
    #[tool(annotations(read_only_hint = true, open_world_hint = true))]
    async fn list_tasks(&self, Parameters(a): Parameters<ListTasksArgs>) -> Reply {
        let status = match a.status.as_deref().map(str::parse::<TaskStatus>).transpose() {
            Ok(s) => s,
            Err(m) => return Err(bad_args("list_tasks", &format!("status: {m}"))),
        };
        let mut d = self.delegate().await?;
        let warnings = sync_warnings(d.sync(None).await.map_err(|e| fail(&e))?);
        let filter = ListFilter { brother: a.brother, status, limit: Some(a.limit.unwrap_or(DEFAULT_LIST_LIMIT)) };
        let tasks = d.list(&filter).map_err(|e| fail(&e))?;
        let out = json!({
            "tasks": tasks.iter().map(summary).collect::<Vec<_>>(),
            "sync_warnings": warnings,
        });
        Ok(text_result(&out, "`delegate list --json`"))
    }

    /// One task as a thread: its runs (with launch evidence and outcome), status history, messages both ways
    /// with their delivery state, agent events, and the final text. Syncs the task first if it is unfinished.
    #[tool(annotations(read_only_hint = true, open_world_hint = true))]
    async fn get_task(&self, Parameters(a): Parameters<TaskIdArgs>) -> Reply {
        let mut d = self.delegate().await?;
        let task = d.task(a.id).map_err(|e| fail(&e))?;
        let mut warnings = BTreeMap::new();
        if !task.status.is_terminal() {
            warnings = sync_warnings(d.sync(Some(&[a.id])).await.map_err(|e| fail(&e))?);
        }
        let mut view = d.show_window(a.id, Window::Newest(GET_TASK_ITEMS)).map_err(|e| fail(&e))?;
        view.done_without_evidence = d.done_without_evidence(a.id).await.map_err(|e| fail(&e))?;
        Ok(CallToolResult::success(vec![ContentBlock::text(task_view_text(&view, &warnings))]))
    }

    /// Wait until the given tasks finish (completed, failed, turn_limit, timed_out, cancelled or lost), or until
    /// timeout_seconds pass. Returns each task's outcome and final text, and which tasks are still pending.
    #[tool(annotations(read_only_hint = true, open_world_hint = true))]
    async fn wait_tasks(&self, Parameters(a): Parameters<WaitTasksArgs>, ctx: RequestContext<RoleServer>) -> Reply {
        if a.ids.is_empty() {
            return Err(bad_args("wait_tasks", "ids is empty: give the task numbers to wait for"));
        }
        let limit = a.timeout_seconds.unwrap_or(DEFAULT_WAIT_SECS);
        if limit > MAX_WAIT_SECS {
            return Err(bad_args(
                "wait_tasks",
                &format!(
                    "timeout_seconds {limit} is over {MAX_WAIT_SECS}: wait in steps (call again while tasks are pending)"
                ),
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(limit);
        loop {
            // One sync per round, with the lock released in between so other calls get through.
            let w = {
                let mut d = self.delegate().await?;
                d.wait(&a.ids, Some(Duration::ZERO), WAIT_POLL).await.map_err(|e| fail(&e))?
            };
            let now = Instant::now();
            if w.pending.is_empty() || now >= deadline {
                let out = json!({
                    "done": w.pending.is_empty(),
                    "all_completed": w.all_completed(),
                    "pending": w.pending,
                    "tasks": w.tasks.iter().map(outcome).collect::<Vec<_>>(),
                    "sync_warnings": w.sync_errors,
                    "next": if w.pending.is_empty() { "get_task N for a task's whole thread" }
                            else { "still running: call wait_tasks again, or get_task N to see progress" },
                });
                return Ok(text_result(&out, "`delegate show N --json` for each task"));
            }
            tokio::select! {
                _ = tokio::time::sleep(WAIT_POLL.min(deadline - now)) => {}
                _ = ctx.ct.cancelled() => return Err(error_result("cancelled", "the client cancelled the wait")),
            }
        }
    }

    /// Send a message to a running task's agent. It is recorded first, then delivered to the brother; the agent
    /// picks it up at its next step and acknowledges it (see get_task). A finished task cannot hear it: reopen it
    /// with `delegate reopen N "..."` instead.
    #[tool(annotations(destructive_hint = false, open_world_hint = true))]
    async fn send_message(&self, Parameters(a): Parameters<SendMessageArgs>, ctx: RequestContext<RoleServer>) -> Reply {
        let author = author(a.author, &ctx);
        let mut d = self.delegate().await?;
        let m = d.say(a.id, &a.text, &author).await.map_err(|e| fail(&e))?;
        let out = json!({ "message": message_json(&m, usize::MAX, ""), "state": message_state(&m) });
        Ok(text_result(&out, &format!("`delegate show {} --json`", a.id)))
    }

    /// Messages brothers sent (receipt, progress, question, done, blocked), oldest first, after a sync. The
    /// messages returned are marked read.
    #[tool(annotations(destructive_hint = false, open_world_hint = true))]
    async fn check_mailbox(&self, Parameters(a): Parameters<CheckMailboxArgs>) -> Reply {
        let unread_only = a.unread_only.unwrap_or(true);
        let mut d = self.delegate().await?;
        let warnings = sync_warnings(d.sync(None).await.map_err(|e| fail(&e))?);
        let messages =
            d.store().mailbox(unread_only, a.limit.unwrap_or(DEFAULT_MAILBOX_LIMIT)).map_err(|e| fail(&e))?;
        let whole = format!("`delegate mailbox --json` (mailbox {})", d.store().path().display());
        // Messages go in whole (a long one cut with a note) until the result is full; only the
        // ones returned are marked read, so the rest come with the next call.
        let mut shown = Vec::new();
        let mut used = 0;
        let mut left_out = 0;
        for m in &messages {
            let item = message_json(m, MAX_RESULT_CHARS / 4, &whole);
            // As printed in the result: two levels deeper, so four more spaces a line.
            let printed = serde_json::to_string_pretty(&item).unwrap_or_default();
            let size = printed.chars().count() + 4 * printed.lines().count() + 8;
            if !shown.is_empty() && used + size > MAX_RESULT_CHARS - 1000 {
                left_out += 1;
                continue;
            }
            used += size;
            shown.push((m.id, m.read_at.is_none(), item));
        }
        let ids: Vec<i64> = shown.iter().filter(|(_, unread, _)| *unread).map(|(id, _, _)| *id).collect();
        d.store_mut().mark_read(&ids).map_err(|e| fail(&e))?;
        let out = json!({
            "messages": shown.into_iter().map(|(_, _, item)| item).collect::<Vec<_>>(),
            "not_shown": left_out,
            "note": if left_out > 0 { json!(format!("{left_out} more message(s) left unread: call check_mailbox again")) } else { Value::Null },
            "sync_warnings": warnings,
        });
        Ok(text_result(&out, &whole))
    }

    /// Record a task's outcome by hand (completed, failed or cancelled; for example completed, with the result as
    /// output, when you learned it out of band), with an optional output text kept as a note. Refused while an agent
    /// may be at work on the task (launching, launched, running, needs_input): cancel_task it or wait first.
    #[tool(annotations(destructive_hint = false, open_world_hint = false))]
    async fn update_task(&self, Parameters(a): Parameters<UpdateTaskArgs>, ctx: RequestContext<RoleServer>) -> Reply {
        let status = a.status.parse::<TaskStatus>().map_err(|m| bad_args("update_task", &format!("status: {m}")))?;
        let author = author(a.author, &ctx);
        let mut d = self.delegate().await?;
        let t = d.update(a.id, status, a.output.as_deref(), &author).map_err(|e| fail(&e))?;
        Ok(text_result(&summary(&t), &format!("`delegate show {} --json`", a.id)))
    }

    /// Stop a task's agent on its brother (its whole process group) and record cancelled.
    #[tool(annotations(destructive_hint = true, open_world_hint = true))]
    async fn cancel_task(&self, Parameters(a): Parameters<CancelTaskArgs>, ctx: RequestContext<RoleServer>) -> Reply {
        let author = author(a.author, &ctx);
        let mut d = self.delegate().await?;
        let t = d.cancel_as(a.id, &author).await.map_err(|e| fail(&e))?;
        Ok(text_result(&summary(&t), &format!("`delegate show {} --json`", a.id)))
    }

    /// Needs you: the questions agents asked that nobody answered yet, across every brother, oldest first (a
    /// `question` report, Claude's permission denials in a run that ended, a task waiting for input), after a
    /// sync. Answer one with the answer tool.
    #[tool(annotations(read_only_hint = true, open_world_hint = true))]
    async fn inbox(&self, Parameters(a): Parameters<InboxArgs>) -> Reply {
        let mut d = self.delegate().await?;
        let warnings = sync_warnings(d.sync(None).await.map_err(|e| fail(&e))?);
        let mut questions = d.inbox(a.brother.as_deref()).map_err(|e| fail(&e))?;
        // Each question is bounded; so is how many go in one result.
        let not_shown = questions.len().saturating_sub(MAX_INBOX_SHOWN);
        questions.truncate(MAX_INBOX_SHOWN);
        let out = json!({ "questions": questions, "not_shown": not_shown, "sync_warnings": warnings });
        Ok(text_result(&out, "`delegate inbox --json`"))
    }

    /// Answer a task's open question (see inbox): a running agent gets it like send_message; a stopped one is
    /// resumed with the answer as its follow-up. The answer is recorded in the task's thread with its author and
    /// the question leaves the inbox. A task with no open question is refused (nothing_to_answer).
    #[tool(annotations(destructive_hint = false, open_world_hint = true))]
    async fn answer(&self, Parameters(a): Parameters<AnswerArgs>, ctx: RequestContext<RoleServer>) -> Reply {
        let author = author(a.author, &ctx);
        let mut d = self.delegate().await?;
        // Whether the agent still runs decides how the answer travels: ask the brother first.
        d.sync(Some(&[a.id])).await.map_err(|e| fail(&e))?;
        let answered = d.answer(a.id, &a.text, &author).await.map_err(|e| fail(&e))?;
        Ok(text_result(&json!(answered), &format!("`delegate show {} --json`", a.id)))
    }

    /// The brothers in the inventory: name, host and address, agent, model, sandbox, turn limit, working
    /// directory and time limit. delegate_task takes these names.
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn list_brothers(&self, Parameters(_): Parameters<NoArgs>) -> Reply {
        let d = self.delegate().await?;
        let inv = d.inventory();
        let brothers: Vec<Value> = inv
            .brothers
            .iter()
            .map(|(name, b)| {
                json!({
                    "name": name,
                    "host": b.host,
                    "address": inv.hosts.get(&b.host).map(|h| h.address.as_str()),
                    "agent": b.agent,
                    "model": b.model,
                    "sandbox": b.sandbox,
                    "max_turns": b.max_turns,
                    "workdir": b.workdir,
                    "timeout": b.timeout,
                    "default_profile": b.default_profile,
                    "max_concurrent": b.max_concurrent,
                    "max_usd_per_day": b.max_usd_per_day,
                })
            })
            .collect();
        let out = json!({
            "brothers": brothers,
            "profiles": inv.profiles,
            // Each environment with the brothers it stands for (hosts expanded).
            "environments": inv.environments.iter().map(|(name, e)| (name.clone(), json!({
                "members": e.brothers,
                "brothers": inv.environment_brothers(name).unwrap_or_default(),
                "profile": e.profile,
            }))).collect::<serde_json::Map<String, Value>>(),
            "config": d.paths().config_file,
            "note": if brothers.is_empty() {
                json!("no brothers yet: add one with `delegate hosts add` and `delegate brothers add`")
            } else { Value::Null },
        });
        Ok(text_result(&out, "`delegate brothers list --json`"))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for DelegateServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("delegate", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        if !self.tool_router.has_route(&name) {
            let tools: Vec<String> = self.tool_router.list_all().into_iter().map(|t| t.name.to_string()).collect();
            return Err(ErrorData::invalid_params(
                format!("unknown tool {name:?}; this server has: {}", tools.join(", ")),
                None,
            ));
        }
        let response = self.tool_router.call(ToolCallContext::new(self, request, context)).await?;
        // rmcp reports arguments that do not fit the schema as a bare error text: give it our
        // shape, with the fix.
        match response {
            CallToolResponse::Complete(r) if r.is_error == Some(true) && r.structured_content.is_none() => {
                let text: String =
                    r.content.iter().filter_map(|c| c.as_text()).map(|t| t.text.as_str()).collect::<Vec<_>>().join(" ");
                let why = text.strip_prefix("failed to deserialize parameters:").unwrap_or(&text).trim();
                Ok(bad_args(&name, why).into())
            }
            other => Ok(other),
        }
    }
}

impl DelegateServer {
    /// The library, opened on first use and again when the inventory file changed.
    async fn delegate(&self) -> Result<MappedMutexGuard<'_, Delegate>, CallToolResult> {
        let mut st = self.state.lock().await;
        let stamp = std::fs::metadata(&self.paths.config_file).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
        if st.delegate.is_none() || st.stamp != stamp {
            match Delegate::open((*self.paths).clone()) {
                Ok(mut d) => {
                    d.transport().ssh_pool().set_resident(crate::paths::resident());
                    d.set_env_lookup(crate::paths::env_lookup());
                    st.delegate = Some(d);
                    st.stamp = stamp;
                }
                Err(e) => {
                    st.delegate = None;
                    return Err(fail(&e));
                }
            }
        }
        Ok(MutexGuard::map(st, |s| s.delegate.as_mut().expect("opened above")))
    }
}
