//! Claude Code's `--output-format stream-json` stream: its wire types, how each line feeds the
//! facts, and how a finished run is classified (shared/agent-clis.md §3.1).

use super::*;

impl StreamFacts {
    pub(super) fn claude(&mut self, line: ClaudeLine) {
        match line {
            ClaudeLine::System { subtype, session_id, claude_code_version, permission_mode, tools } => {
                if subtype.as_deref() != Some("init") {
                    return; // hook and status notices say nothing about the outcome
                }
                self.init = true;
                set_word(&mut self.session_id, session_id);
                set_word(&mut self.agent_version, claude_code_version);
                set_word(&mut self.permission_mode, permission_mode);
                if let Some(tools) = tools {
                    self.tools = Some(tools.iter().take(MAX_LIST).map(|t| clip(t, MAX_WORD_CHARS)).collect());
                }
                self.last_activity = Some(match &self.agent_version {
                    Some(v) => summary(&format!("session started ({v})")),
                    None => "session started".into(),
                });
            }
            ClaudeLine::Assistant { message, error, parent_tool_use_id } => {
                if error.as_deref() == Some("authentication_failed") {
                    self.auth_error = true;
                }
                // Sub-agent (Task tool) messages are not turns of the main session.
                let sub = parent_tool_use_id.is_some();
                let message = message.unwrap_or_default();
                if !sub {
                    if message.id.is_none() || message.id != self.claude_message_id {
                        self.turns = self.turns.saturating_add(1);
                    }
                    self.claude_message_id = message.id.map(|id| clip(&id, MAX_WORD_CHARS));
                }
                let prefix = if sub { "sub-agent " } else { "" };
                for block in message.content.unwrap_or_default() {
                    match block {
                        ClaudeBlock::Text { text: Some(text) } if !text.trim().is_empty() => {
                            if !sub {
                                self.last_message = Some(clip(&text, MAX_TEXT_CHARS));
                            }
                            self.last_activity = Some(summary(&format!("{prefix}assistant: {text}")));
                        }
                        ClaudeBlock::ToolUse { name } => {
                            let name = name.unwrap_or_else(|| "?".into());
                            if name == "Bash" {
                                self.bash_calls = self.bash_calls.saturating_add(1);
                            }
                            self.last_activity = Some(summary(&format!("{prefix}tool: {name}")));
                        }
                        _ => {}
                    }
                }
            }
            ClaudeLine::User { message } => {
                let blocks = message.and_then(|m| m.content).unwrap_or_default();
                for block in blocks {
                    let ClaudeUserBlock::ToolResult { content } = block else { continue };
                    if let Some(line) = content.as_ref().and_then(|c| sandbox_failure(&tool_result_text(c))) {
                        self.sandbox_failed = self.sandbox_failed.saturating_add(1);
                        if self.sandbox_error.is_none() {
                            self.sandbox_error = Some(clip(&line, MAX_REASON_CHARS));
                        }
                        self.last_activity = Some(summary(&format!("sandbox failed: {line}")));
                    }
                }
            }
            ClaudeLine::Result(r) => {
                let facts = ResultFacts {
                    subtype: r.subtype.map(|s| clip(&s, MAX_WORD_CHARS)),
                    is_error: r.is_error,
                    num_turns: r.num_turns,
                    result: r.result.map(|s| clip(&s, MAX_TEXT_CHARS)),
                    terminal_reason: r.terminal_reason.map(|s| clip(&s, MAX_WORD_CHARS)),
                    total_cost_usd: r.total_cost_usd.filter(|c| c.is_finite()),
                    session_id: r.session_id.map(|s| clip(&s, MAX_WORD_CHARS)),
                    permission_denials: r
                        .permission_denials
                        .as_ref()
                        .map_or(0, |d| u32::try_from(d.len()).unwrap_or(u32::MAX)),
                    denials: r.permission_denials.unwrap_or_default().iter().take(MAX_DENIALS).map(denial).collect(),
                    errors: r
                        .errors
                        .unwrap_or_default()
                        .iter()
                        .take(MAX_LIST)
                        .map(|e| clip(e, MAX_REASON_CHARS))
                        .collect(),
                };
                if let Some(n) = facts.num_turns {
                    self.turns = n;
                }
                if facts.session_id.is_some() {
                    self.session_id.clone_from(&facts.session_id);
                }
                if facts.total_cost_usd.is_some() {
                    self.cost_usd = facts.total_cost_usd;
                }
                if let Some(usage) = r.usage {
                    self.set_usage(usage);
                }
                let subtype = facts.subtype.as_deref().unwrap_or("?");
                let flag = if facts.is_error == Some(true) { " (is_error)" } else { "" };
                self.last_activity = Some(summary(&format!("result: {subtype}{flag}")));
                self.result = Some(facts);
            }
            ClaudeLine::Other => {}
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ClaudeLine {
    System {
        #[serde(default, deserialize_with = "lenient")]
        subtype: Option<String>,
        #[serde(default, deserialize_with = "lenient")]
        session_id: Option<String>,
        #[serde(default, deserialize_with = "lenient")]
        claude_code_version: Option<String>,
        #[serde(default, rename = "permissionMode", deserialize_with = "lenient")]
        permission_mode: Option<String>,
        #[serde(default, deserialize_with = "lenient_vec")]
        tools: Option<Vec<String>>,
    },
    Assistant {
        #[serde(default, deserialize_with = "lenient")]
        message: Option<ClaudeMessage>,
        #[serde(default, deserialize_with = "lenient")]
        error: Option<String>,
        #[serde(default, deserialize_with = "lenient")]
        parent_tool_use_id: Option<String>,
    },
    User {
        #[serde(default, deserialize_with = "lenient")]
        message: Option<ClaudeUserMessage>,
    },
    Result(ClaudeResult),
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
pub(super) struct ClaudeUserMessage {
    /// A string for a plain user message (a replayed prompt): read as absent.
    #[serde(default, deserialize_with = "lenient_vec")]
    content: Option<Vec<ClaudeUserBlock>>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ClaudeUserBlock {
    ToolResult {
        #[serde(default, deserialize_with = "any_value")]
        content: Option<Value>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
pub(super) struct ClaudeMessage {
    #[serde(default, deserialize_with = "lenient")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient_vec")]
    content: Option<Vec<ClaudeBlock>>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ClaudeBlock {
    Text {
        #[serde(default, deserialize_with = "lenient")]
        text: Option<String>,
    },
    ToolUse {
        #[serde(default, deserialize_with = "lenient")]
        name: Option<String>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
pub(super) struct ClaudeResult {
    #[serde(default, deserialize_with = "lenient")]
    subtype: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    is_error: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    num_turns: Option<u32>,
    #[serde(default, deserialize_with = "lenient")]
    result: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    terminal_reason: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    total_cost_usd: Option<f64>,
    #[serde(default, deserialize_with = "lenient")]
    session_id: Option<String>,
    #[serde(default, deserialize_with = "any_value")]
    usage: Option<Value>,
    #[serde(default, deserialize_with = "lenient_vec")]
    permission_denials: Option<Vec<Value>>,
    #[serde(default, deserialize_with = "lenient_vec")]
    errors: Option<Vec<String>>,
}

pub(super) fn classify_claude(facts: &StreamFacts, exit: &ExitRecord, stderr: &str) -> Outcome {
    let Some(r) = &facts.result else {
        // 1. Nothing parseable: the CLI refused before starting (unknown option, missing
        //    --verbose, root refusal, stdin cap, bad --settings).
        if !facts.saw_json {
            if exit.code != 0 {
                let reason = stderr_reason(stderr).unwrap_or_else(|| format!("the agent {}", exit.describe()));
                return failed(FailKind::LaunchRejected, &reason);
            }
            return failed(FailKind::AgentError, "the agent exited 0 without writing a stream-json result");
        }
        // 3. It started (init or at least some events) and never reported: killed or crashed.
        let mut reason = format!("the agent {} before reporting a result", exit.describe());
        if exit.code == 143 {
            // SIGTERM leaves Claude's turn resumable.
            match &facts.session_id {
                Some(id) => reason.push_str(&format!("; session {id} can be resumed")),
                None => reason.push_str("; the session can be resumed"),
            }
        }
        if let Some(line) = stderr_reason(stderr) {
            reason.push_str(": ");
            reason.push_str(&line);
        }
        return failed(FailKind::Crashed, &reason);
    };
    let subtype = r.subtype.as_deref().unwrap_or("");
    let text = r.result.as_deref().filter(|t| !t.trim().is_empty());
    let errors = r.errors.first().map(String::as_str).filter(|t| !t.trim().is_empty());
    let terminal = r.terminal_reason.as_deref().filter(|t| !t.trim().is_empty());

    // 2. A result without init: refused before the session started (sandbox required but
    //    unavailable, unknown --resume id). stderr says why; the result rarely does.
    if !facts.init && subtype == "error_during_execution" {
        let reason = stderr_reason(stderr)
            .or_else(|| text.or(errors).map(str::to_owned))
            .unwrap_or_else(|| "error_during_execution before the session started".into());
        return failed(FailKind::LaunchRejected, &reason);
    }
    // 4. and 5. The agent's own limits.
    if subtype == "error_max_turns" {
        return Outcome::TurnLimit { turns: r.num_turns.unwrap_or(facts.turns), enforced_by: Enforcer::Native };
    }
    if subtype == "error_max_budget_usd" {
        let reason = match r.total_cost_usd {
            Some(cost) => format!("budget limit reached after spending ${cost:.2}"),
            None => "budget limit reached".into(),
        };
        return failed(FailKind::Budget, &reason);
    }
    // 6. is_error decides, whatever the subtype and exit code: not logged in gives
    //    `success` + is_error, with exit 0 on some builds and 1 on others.
    let error_reason = || {
        text.or(terminal).or(errors).unwrap_or(if subtype.is_empty() { "the agent reported an error" } else { subtype })
    };
    if r.is_error == Some(true) {
        let not_logged_in = text.is_some_and(|t| t.trim_start().starts_with("Not logged in"));
        if facts.auth_error || not_logged_in {
            return failed(FailKind::Auth, text.unwrap_or("Not logged in · Please run /login"));
        }
        return failed(FailKind::AgentError, error_reason());
    }
    // 7. Success. A missing is_error counts as false. A non-zero exit after a success result
    //    means something went wrong after the answer (teardown, hooks, a kill): report it
    //    rather than hide it, since the exit code is evidence too.
    if subtype == "success" {
        if facts.sandbox_broken() {
            let first = facts.sandbox_error.as_deref().unwrap_or("bwrap failed");
            return failed(FailKind::Sandbox, &format!("the sandbox could not start on the brother: {first}"));
        }
        if exit.code == 0 {
            return Outcome::Completed { final_text: r.result.clone() };
        }
        return failed(FailKind::AgentError, &format!("the result was success but the agent {}", exit.describe()));
    }
    // Any other subtype without is_error (a newer build's): not a success we recognise.
    failed(FailKind::AgentError, error_reason())
}
