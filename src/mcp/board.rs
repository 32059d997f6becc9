//! The shared board as MCP tools, so a lead agent can run it: create_task (the backlog),
//! start_task, board, move_task, comment, review, delete_task. Each is the CLI command of
//! the same name over the same library call, so roles ([roles] in the inventory) and
//! version locking apply exactly as there; a refusal is an error result (`role_refused`,
//! `stale_version`, ...) whose message says what to do.

use delegate_core::ops::board::BoardFilter;
use delegate_core::{Column, Draft, Priority};

use super::*;

/// Cards per column `board` returns unless asked (the count says how many there are).
const DEFAULT_BOARD_LIMIT: usize = 20;

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum PriorityArg {
    Low,
    Medium,
    High,
}

impl From<PriorityArg> for Priority {
    fn from(p: PriorityArg) -> Priority {
        match p {
            PriorityArg::Low => Priority::Low,
            PriorityArg::Medium => Priority::Medium,
            PriorityArg::High => Priority::High,
        }
    }
}

/// The columns a task is moved between by hand (the others follow its state).
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum MoveColumn {
    /// Finished, waiting for somebody to accept it.
    Review,
    /// Accepted.
    Done,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    /// The task is done.
    Accept,
    /// The task goes back to its agent with the note as the follow-up.
    Reject,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTaskArgs {
    /// One line: the task's subject and the first line of the agent's prompt.
    title: String,
    /// The rest of the prompt: goal, context, constraints, what to report.
    description: Option<String>,
    /// low, medium (default) or high: orders the board.
    priority: Option<PriorityArg>,
    /// The task this one is part of (its number).
    parent: Option<i64>,
    /// The brother to run it on (a name from list_brothers); may be left for start_task.
    assign: Option<String>,
    /// A worker profile from the inventory that start_task launches it with.
    profile: Option<String>,
    /// Who records it (default: this MCP client's name); the board's roles apply to this name.
    #[serde(rename = "as", alias = "author")]
    author: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StartTaskArgs {
    /// A backlog task's number (from create_task or board).
    id: i64,
    /// The brother to run it on, instead of (or when there is no) assigned one.
    assign: Option<String>,
    /// Who asks (default: this MCP client's name).
    #[serde(rename = "as", alias = "author")]
    author: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BoardArgs {
    /// Only this brother's tasks.
    brother: Option<String>,
    /// Only my tasks: those I created, or that run on the brother of my name (`as`).
    mine: Option<bool>,
    /// Only the review column: finished tasks nobody has accepted yet.
    review_only: Option<bool>,
    /// At most this many cards per column (default 20; each column's count says how many there are).
    limit: Option<u32>,
    /// Who asks, for `mine` (default: this MCP client's name).
    #[serde(rename = "as", alias = "author")]
    author: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MoveTaskArgs {
    /// The task number.
    id: i64,
    /// review or done (the other columns follow the task's state).
    column: MoveColumn,
    /// The task's version as you read it (board or get_task): a task changed since is refused with
    /// stale_version, and you re-read it.
    version: i64,
    /// Who moves it (default: this MCP client's name).
    #[serde(rename = "as", alias = "author")]
    author: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CommentArgs {
    /// The task number.
    id: i64,
    /// The comment (at most 8000 bytes). Nothing is sent to the agent (that is send_message).
    text: String,
    /// Who writes it (default: this MCP client's name).
    #[serde(rename = "as", alias = "author")]
    author: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReviewArgs {
    /// A finished task in the review column.
    id: i64,
    /// accept (to done) or reject (reopened with the note as its agent's follow-up).
    verdict: Verdict,
    /// Why; required to reject.
    note: Option<String>,
    /// Who reviews (default: this MCP client's name).
    #[serde(rename = "as", alias = "author")]
    author: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteTaskArgs {
    /// A backlog or finished task's number.
    id: i64,
    /// Who deletes it (default: this MCP client's name).
    #[serde(rename = "as", alias = "author")]
    author: Option<String>,
}

#[tool_router(router = board_router, vis = "pub(super)")]
impl DelegateServer {
    /// Record a task on the board without launching it (the backlog): nothing is sent until start_task. Returns its
    /// number. Managers only when the inventory has [roles].
    #[tool(annotations(destructive_hint = false, open_world_hint = false))]
    async fn create_task(&self, Parameters(a): Parameters<CreateTaskArgs>, ctx: RequestContext<RoleServer>) -> Reply {
        let author = author(a.author, &ctx);
        let mut d = self.delegate().await?;
        let t = d
            .create_draft(Draft {
                title: a.title,
                description: a.description,
                priority: a.priority.map(Priority::from),
                parent: a.parent,
                assign: a.assign,
                author: Some(author),
                profile: a.profile,
            })
            .map_err(|e| fail(&e))?;
        let mut out = summary(&t);
        out["priority"] = json!(t.priority);
        out["parent"] = json!(t.parent);
        out["next"] = json!(format!("start_task with id {} when it should run", t.id));
        Ok(text_result(&out, &format!("`delegate show {} --json`", t.id)))
    }

    /// Launch a backlog task on its assigned brother (or `assign`), through the queue: over a concurrency cap it
    /// stays queued and starts when a slot frees up.
    #[tool(annotations(destructive_hint = false, open_world_hint = true))]
    async fn start_task(&self, Parameters(a): Parameters<StartTaskArgs>, ctx: RequestContext<RoleServer>) -> Reply {
        let author = author(a.author, &ctx);
        let mut d = self.delegate().await?;
        let t = d.start(a.id, a.assign, Some(author)).await.map_err(|e| fail(&e))?;
        Ok(text_result(&summary(&t), &format!("`delegate show {} --json`", a.id)))
    }

    /// The board after a sync: columns backlog, todo, in_progress, needs_you, review, done, each with its count and
    /// cards (by priority, then age) carrying the version move_task needs.
    #[tool(annotations(read_only_hint = true, open_world_hint = true))]
    async fn board(&self, Parameters(a): Parameters<BoardArgs>, ctx: RequestContext<RoleServer>) -> Reply {
        let me = a.mine.unwrap_or(false).then(|| author(a.author, &ctx));
        let mut d = self.delegate().await?;
        let warnings = sync_warnings(d.sync(None).await.map_err(|e| fail(&e))?);
        let columns = d
            .board_of(&BoardFilter {
                brother: a.brother.as_deref(),
                mine: me.as_deref(),
                column: a.review_only.unwrap_or(false).then_some(Column::Review),
                limit: a.limit.map(|l| l as usize).unwrap_or(DEFAULT_BOARD_LIMIT),
            })
            .map_err(|e| fail(&e))?;
        let out = json!({ "columns": columns, "sync_warnings": warnings });
        Ok(text_result(&out, "`delegate board --json`"))
    }

    /// Accept a finished task (review to done) or take the acceptance back, only if it is still at `version`:
    /// otherwise nothing changes and the error stale_version says to re-read it.
    #[tool(annotations(destructive_hint = false, open_world_hint = false))]
    async fn move_task(&self, Parameters(a): Parameters<MoveTaskArgs>, ctx: RequestContext<RoleServer>) -> Reply {
        let author = author(a.author, &ctx);
        let to = match a.column {
            MoveColumn::Review => Column::Review,
            MoveColumn::Done => Column::Done,
        };
        let mut d = self.delegate().await?;
        let card = d.move_task(a.id, to, a.version, &author).map_err(|e| fail(&e))?;
        Ok(text_result(&json!(card), &format!("`delegate show {} --json`", a.id)))
    }

    /// Add a comment to a task's thread, with its author. Nothing is sent to the agent.
    #[tool(annotations(destructive_hint = false, open_world_hint = false))]
    async fn comment(&self, Parameters(a): Parameters<CommentArgs>, ctx: RequestContext<RoleServer>) -> Reply {
        let author = author(a.author, &ctx);
        let mut d = self.delegate().await?;
        d.comment(a.id, &author, &a.text).map_err(|e| fail(&e))?;
        Ok(text_result(&json!({ "task": a.id, "author": author, "comment": "added" }), "`delegate show N --json`"))
    }

    /// A verdict on a finished task waiting for review: accept moves it to done; reject (note required) reopens it
    /// with the note as its agent's follow-up (an agent that cannot resume: not_resumable, the verdict kept).
    #[tool(annotations(destructive_hint = false, open_world_hint = true))]
    async fn review(&self, Parameters(a): Parameters<ReviewArgs>, ctx: RequestContext<RoleServer>) -> Reply {
        let author = author(a.author, &ctx);
        let accept = matches!(a.verdict, Verdict::Accept);
        let mut d = self.delegate().await?;
        let t = d.review(a.id, accept, a.note.as_deref(), &author).await.map_err(|e| fail(&e))?;
        Ok(text_result(&summary(&t), &format!("`delegate show {} --json`", a.id)))
    }

    /// Delete a backlog or finished task and its whole record from the mailbox (managers only when the inventory
    /// has [roles]). A task an agent may be at work on is refused: cancel_task it first.
    #[tool(annotations(destructive_hint = true, open_world_hint = false))]
    async fn delete_task(&self, Parameters(a): Parameters<DeleteTaskArgs>, ctx: RequestContext<RoleServer>) -> Reply {
        let author = author(a.author, &ctx);
        let mut d = self.delegate().await?;
        let t = d.delete(a.id, &author).map_err(|e| fail(&e))?;
        Ok(text_result(&json!({ "deleted": t.id, "status": t.status, "subject": t.subject }), "`delegate list --json`"))
    }
}
