//! Codex's `exec --json` stream: its wire types, how each line feeds the facts (steps are what
//! the turn limit counts), and how a finished run is classified (shared/agent-clis.md §3.2).

use super::*;

impl StreamFacts {
    pub(super) fn codex(&mut self, line: CodexLine) {
        match line {
            CodexLine::ThreadStarted { thread_id } => {
                set_word(&mut self.session_id, thread_id);
                self.last_activity = Some("thread started".into());
            }
            CodexLine::TurnStarted {} => {
                self.turns = self.turns.saturating_add(1);
                // These describe the last turn only: an appended resume starts afresh.
                self.codex_turn_completed = false;
                self.codex_turn_failed = None;
                self.needs_input = false;
                self.last_activity = Some(format!("turn {} started", self.turns));
            }
            CodexLine::TurnCompleted { usage } => {
                self.codex_turn_completed = true;
                if let Some(usage) = usage {
                    self.set_usage(usage);
                }
                self.last_activity = Some(format!("turn {} completed", self.turns));
            }
            CodexLine::TurnFailed { error } => {
                let message = error.and_then(|e| e.message).filter(|m| !m.trim().is_empty());
                let message = clip(message.as_deref().unwrap_or("turn failed"), MAX_REASON_CHARS);
                self.codex_turn_completed = false;
                self.last_activity = Some(summary(&format!("turn failed: {message}")));
                self.codex_turn_failed = Some(message);
            }
            CodexLine::ItemStarted { item } => self.codex_item(item, false),
            CodexLine::ItemUpdated {} => {}
            CodexLine::ItemCompleted { item } => self.codex_item(item, true),
            CodexLine::Error { message } => {
                let message = clip(message.as_deref().unwrap_or("error"), MAX_REASON_CHARS);
                self.last_activity = Some(summary(&format!("error: {message}")));
                self.last_error = Some(message);
            }
            CodexLine::RequestUserInput {} => {
                self.needs_input = true;
                self.last_activity = Some("needs input".into());
            }
            CodexLine::Other => {}
        }
    }

    /// Items report what the agent is doing; only `agent_message` feeds the final text.
    fn codex_item(&mut self, item: Option<CodexItem>, completed: bool) {
        let Some(item) = item else { return };
        // The same steps the runner's turn marker counts (agent::CODEX_TURN_MARKER).
        if matches!(
            (item.kind.as_deref(), completed),
            (Some("command_execution" | "mcp_tool_call" | "web_search"), false) | (Some("file_change"), true)
        ) {
            self.steps = self.steps.saturating_add(1);
        }
        let activity = match (item.kind.as_deref(), completed) {
            (Some("agent_message"), true) => {
                let text = item.text.unwrap_or_default();
                self.last_message = Some(clip(&text, MAX_TEXT_CHARS));
                format!("assistant: {text}")
            }
            (Some("command_execution"), _) => {
                format!("command: {}", item.command.unwrap_or_default())
            }
            (Some("file_change"), true) => {
                let changes = item.changes.unwrap_or_default();
                match changes.first().and_then(|c| c.path.as_deref()) {
                    Some(path) if changes.len() > 1 => format!("edited: {path} and {} more", changes.len() - 1),
                    Some(path) => format!("edited: {path}"),
                    None => "edited files".into(),
                }
            }
            (Some("mcp_tool_call"), false) => {
                format!("tool: {}.{}", item.server.unwrap_or_default(), item.tool.unwrap_or_default())
            }
            (Some("web_search"), false) => format!("web search: {}", item.query.unwrap_or_default()),
            (Some("reasoning"), true) => "reasoning".into(),
            (Some("todo_list" | "plan"), _) => "planning".into(),
            (Some("error"), true) => format!("notice: {}", item.message.unwrap_or_default()),
            _ => return,
        };
        self.last_activity = Some(summary(&activity));
    }
}

#[derive(Deserialize)]
#[serde(tag = "type")]
pub(super) enum CodexLine {
    #[serde(rename = "thread.started")]
    ThreadStarted {
        #[serde(default, deserialize_with = "lenient")]
        thread_id: Option<String>,
    },
    #[serde(rename = "turn.started")]
    TurnStarted {},
    #[serde(rename = "turn.completed")]
    TurnCompleted {
        #[serde(default, deserialize_with = "any_value")]
        usage: Option<Value>,
    },
    #[serde(rename = "turn.failed")]
    TurnFailed {
        #[serde(default, deserialize_with = "lenient")]
        error: Option<CodexError>,
    },
    #[serde(rename = "item.started")]
    ItemStarted {
        #[serde(default, deserialize_with = "lenient")]
        item: Option<CodexItem>,
    },
    /// Partial updates (streaming text, todo progress): the completed item says it all.
    #[serde(rename = "item.updated")]
    ItemUpdated {},
    #[serde(rename = "item.completed")]
    ItemCompleted {
        #[serde(default, deserialize_with = "lenient")]
        item: Option<CodexItem>,
    },
    #[serde(rename = "error")]
    Error {
        #[serde(default, deserialize_with = "lenient")]
        message: Option<String>,
    },
    #[serde(rename = "request_user_input")]
    RequestUserInput {},
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
pub(super) struct CodexError {
    #[serde(default, deserialize_with = "lenient")]
    message: Option<String>,
}

/// One flat shape for every item type: each reads the fields it has.
#[derive(Deserialize)]
pub(super) struct CodexItem {
    #[serde(default, rename = "type", deserialize_with = "lenient")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    text: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    command: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    message: Option<String>,
    #[serde(default, deserialize_with = "lenient_vec")]
    changes: Option<Vec<CodexChange>>,
    #[serde(default, deserialize_with = "lenient")]
    server: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    tool: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    query: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct CodexChange {
    #[serde(default, deserialize_with = "lenient")]
    path: Option<String>,
}

pub(super) fn classify_codex(facts: &StreamFacts, exit: &ExitRecord, stderr: &str) -> Outcome {
    // 1. and 2. Refusals by the argument parser and the git check. (3, delegate's own stops,
    //    was handled by `classify`.)
    if exit.code == 2
        && let Some(line) = stderr_line_containing(stderr, "unexpected argument")
    {
        return failed(FailKind::LaunchRejected, &line);
    }
    if exit.code == 1
        && let Some(line) = stderr_line_containing(stderr, "Not inside a trusted directory")
    {
        return failed(FailKind::LaunchRejected, &line);
    }
    // 4. A failed turn.
    if let Some(message) = &facts.codex_turn_failed {
        let kind = if mentions_unauthorized(message) { FailKind::Auth } else { FailKind::AgentError };
        return failed(kind, message);
    }
    // 5. The last turn completed and the process agreed.
    if facts.codex_turn_completed && exit.code == 0 {
        return Outcome::Completed { final_text: facts.last_message.clone() };
    }
    // Not in §3, decided here: no JSON at all and a non-zero exit is a refusal before start,
    // as for Claude (for example an unknown resume id: `Error: thread/resume: …`, exit 1).
    if !facts.saw_json && exit.code != 0 {
        let reason = stderr_reason(stderr).unwrap_or_else(|| format!("the agent {}", exit.describe()));
        return failed(FailKind::LaunchRejected, &reason);
    }
    // 6. Anything else, such as exit 101 after `Reconnecting... 5/5`.
    if facts.needs_input {
        return failed(FailKind::AgentError, "the agent asked for input, which codex exec cannot answer");
    }
    if let Some(error) = &facts.last_error {
        let kind = if mentions_unauthorized(error) { FailKind::Auth } else { FailKind::AgentError };
        return failed(kind, error);
    }
    let reason = if facts.codex_turn_completed {
        format!("the turn completed but the agent {}", exit.describe())
    } else {
        format!("the agent {} before its turn completed", exit.describe())
    };
    failed(FailKind::AgentError, &reason)
}
