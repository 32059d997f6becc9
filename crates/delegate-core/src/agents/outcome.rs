//! How a run ended, read from the agent's own machine-readable stream.
//!
//! This module owns two steps, following `shared/agent-clis.md` §3:
//! - [`StreamFacts::feed`] folds the synced bytes of the brother's `stream.jsonl` into a small,
//!   serializable set of facts. It is incremental and gives the same facts for any chunking,
//!   so the lead can store the facts and the consumed offset between syncs.
//! - [`classify`] turns those facts, the runner's `exit` record ([`ExitRecord`]) and the head
//!   of the agent's stderr into an [`Outcome`], whose [`Outcome::status`] is a task state.
//!
//! Everything here reads untrusted bytes from a remote machine and from CLIs whose output
//! changes between builds: no input may panic, unknown events and fields are skipped, a field
//! of an unexpected shape reads as absent, and every string kept is bounded.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Longest line parsed. A longer one is consumed and counted but not parsed, so a runaway line
/// without a newline cannot pin the sync offset (and the lead's memory) forever.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Bound for agent texts kept in the facts (final message, result text).
const MAX_TEXT_CHARS: usize = 2000;
/// Bound for the one-line summaries in `last_activity`.
const MAX_SUMMARY_CHARS: usize = 80;
/// Bound for failure reasons and error messages.
const MAX_REASON_CHARS: usize = 500;
/// Bound for ids, versions, modes, subtypes and tool names.
const MAX_WORD_CHARS: usize = 200;
/// At most this many tool names and result errors are kept.
const MAX_LIST: usize = 512;
/// Larger `usage` objects are dropped rather than stored in the mailbox on every sync.
const MAX_USAGE_BYTES: usize = 16 * 1024;
/// At most this many permission denials are kept with their tool and input (the count is
/// always exact); each input summary is cut to [`MAX_DENIAL_CHARS`]. The full input may be
/// a whole file the agent tried to write: the mailbox and the lead only need to recognise it.
const MAX_DENIALS: usize = 20;
const MAX_DENIAL_CHARS: usize = 200;

/// What kind of stream an agent writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Claude Code's `stream-json`; the self-test agent speaks it too.
    Claude,
    /// `codex exec --json`.
    Codex,
    /// A custom agent: free output, with an optional `{"delegate_result":…}` line.
    None,
}

impl StreamKind {
    pub fn for_agent(agent: &str) -> StreamKind {
        match agent {
            "claude" | "self-test" => StreamKind::Claude,
            "codex" => StreamKind::Codex,
            _ => StreamKind::None,
        }
    }
}

/// Facts accumulated from the stream so far. Stored as JSON in the mailbox between syncs, so
/// a restarted CLI continues where it left off; unknown or missing keys read as defaults so
/// facts stored by another build still load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamFacts {
    /// Complete lines seen, including blank, non-JSON and skipped over-long ones.
    pub lines: u64,
    /// At least one line parsed as a JSON object.
    pub saw_json: bool,
    /// Claude's `system/init` line was seen.
    pub init: bool,
    /// `claude_code_version` from init: the version actually running, not the package's.
    pub agent_version: Option<String>,
    /// Claude `session_id` (init or result) or Codex `thread_id` (`thread.started`).
    pub session_id: Option<String>,
    /// Claude `permissionMode` from init: evidence of the effective level.
    pub permission_mode: Option<String>,
    /// Claude's effective tool set from init.
    pub tools: Option<Vec<String>>,
    /// Claude: assistant messages (distinct message ids, sub-agents excluded), replaced by
    /// `result.num_turns` when a result arrives. Codex: the number of `turn.started`.
    pub turns: u32,
    /// Codex: agentic steps (a tool call starting, a file change completing), what the
    /// runner counts against the turn limit: a `codex exec` turn is the whole task.
    #[serde(default)]
    pub steps: u32,
    /// The last Claude `result` line.
    pub result: Option<ResultFacts>,
    /// A Claude assistant line carried `error: "authentication_failed"`.
    pub auth_error: bool,
    /// The last Codex turn ended with `turn.completed` (reset by `turn.started`).
    pub codex_turn_completed: bool,
    /// `error.message` of a `turn.failed` in the last Codex turn (reset by `turn.started`).
    pub codex_turn_failed: Option<String>,
    /// The last top-level Codex `error` message. Items of type `error` are non-fatal notices
    /// (such as the WebSocket fallback) and are kept out.
    pub last_error: Option<String>,
    /// The last assistant text (Claude text block, Codex `agent_message`), bounded.
    pub last_message: Option<String>,
    /// Codex asked for user input in the current turn.
    pub needs_input: bool,
    /// Claude `result.total_cost_usd`.
    pub cost_usd: Option<f64>,
    /// Claude `result.usage` or Codex `turn.completed.usage`, the last one seen.
    pub usage: Option<Value>,
    /// A one-line summary of the latest event, such as `tool: Bash` or `turn 3 started`.
    pub last_activity: Option<String>,
    /// Claude: Bash tool calls made (sub-agents included).
    pub bash_calls: u32,
    /// Claude: tool results that failed because the OS sandbox (bubblewrap) could not start,
    /// such as `bwrap: setting up uid map: Permission denied` where user namespaces are off.
    /// Claude starts anyway in that case, even with `failIfUnavailable` (agent-clis.md §7.2).
    pub sandbox_failed: u32,
    /// The first such `bwrap:` message, bounded.
    pub sandbox_error: Option<String>,
    /// A custom agent's own verdict, from a `{"delegate_result":…}` line (the last one).
    pub custom_result: Option<CustomResult>,
    /// Parser state: the rest of an over-long line is still to be skipped.
    pub in_long_line: bool,
    /// Parser state: the id of the last Claude assistant message, so that the several lines
    /// Claude writes for one message (one per content block) count as one turn.
    pub claude_message_id: Option<String>,
}

/// The facts of a Claude `result` line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultFacts {
    pub subtype: Option<String>,
    pub is_error: Option<bool>,
    pub num_turns: Option<u32>,
    /// The final text, bounded.
    pub result: Option<String>,
    pub terminal_reason: Option<String>,
    pub total_cost_usd: Option<f64>,
    pub session_id: Option<String>,
    /// How many tool calls were denied. Under `dontAsk` a non-zero count means the agent
    /// tried something outside its level.
    #[serde(default)]
    pub permission_denials: u32,
    /// The first 20 (`MAX_DENIALS`) of them: which tool, and a bounded summary of its input.
    #[serde(default)]
    pub denials: Vec<Denial>,
    /// `errors[]`: the only explanation some results carry (an unknown `--resume` id).
    #[serde(default)]
    pub errors: Vec<String>,
}

/// One denied tool call from a Claude `result.permission_denials[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Denial {
    pub tool: String,
    /// What it was called with, in one line of at most 200 (`MAX_DENIAL_CHARS`) characters.
    pub input: String,
}

impl Default for Denial {
    fn default() -> Denial {
        Denial { tool: "?".into(), input: String::new() }
    }
}

/// A custom agent's final `{"delegate_result":"completed"|"failed","reason":…}` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomResult {
    /// `completed` or `failed`; other values are not recorded.
    pub result: String,
    pub reason: Option<String>,
}

impl StreamFacts {
    /// The turns to show against `--max-turns`: Codex's steps (its limit is enforced on
    /// them), every other agent's own turn count.
    pub fn turns_used(&self, kind: StreamKind) -> u32 {
        if kind == StreamKind::Codex { self.steps } else { self.turns }
    }

    /// The agent's final answer: Claude's `result.result`, else the last assistant text
    /// (Codex's last `agent_message`).
    pub fn final_text(&self) -> Option<&str> {
        self.result.as_ref().and_then(|r| r.result.as_deref()).or(self.last_message.as_deref())
    }

    /// Every Bash call failed because the sandbox could not start: the agent could not run
    /// a single command, whatever its final answer says.
    pub fn sandbox_broken(&self) -> bool {
        self.bash_calls > 0 && self.sandbox_failed >= self.bash_calls
    }

    /// Feed raw bytes, in any chunking. Only complete lines (ending in `\n`) are consumed; the
    /// return value is how many bytes were, so the caller advances its stored offset by exactly
    /// that and sends the incomplete tail again next time. A line longer than
    /// [`MAX_LINE_BYTES`] is consumed (even before its newline arrives), counted, and skipped.
    pub fn feed(&mut self, kind: StreamKind, bytes: &[u8]) -> usize {
        let mut pos = 0;
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                if self.in_long_line {
                    pos = bytes.len();
                } else if rest.len() > MAX_LINE_BYTES {
                    self.lines += 1;
                    self.in_long_line = true;
                    pos = bytes.len();
                }
                break;
            };
            if self.in_long_line {
                // The end of a line that was already counted when it outgrew the limit.
                self.in_long_line = false;
            } else {
                self.lines += 1;
                if end <= MAX_LINE_BYTES {
                    self.line(kind, &rest[..end]);
                }
            }
            pos += end + 1;
        }
        pos
    }

    fn line(&mut self, kind: StreamKind, raw: &[u8]) {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        // serde_json rejects invalid UTF-8 and nesting deeper than 128 levels, so this
        // cannot blow the stack; such lines are just not JSON.
        let Ok(value) = serde_json::from_slice::<Value>(raw) else { return };
        if !value.is_object() {
            return;
        }
        self.saw_json = true;
        match kind {
            StreamKind::Claude => {
                if let Ok(line) = serde_json::from_value::<ClaudeLine>(value) {
                    self.claude(line);
                }
            }
            StreamKind::Codex => {
                if let Ok(line) = serde_json::from_value::<CodexLine>(value) {
                    self.codex(line);
                }
            }
            StreamKind::None => self.custom(&value),
        }
    }

    fn claude(&mut self, line: ClaudeLine) {
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

    fn codex(&mut self, line: CodexLine) {
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

    fn custom(&mut self, value: &Value) {
        let Some(result) = value.get("delegate_result").and_then(Value::as_str) else { return };
        if !matches!(result, "completed" | "failed") {
            return;
        }
        let reason = value.get("reason").and_then(Value::as_str).map(|r| clip(r, MAX_REASON_CHARS));
        self.last_activity = Some(format!("reported {result}"));
        self.custom_result = Some(CustomResult { result: result.to_owned(), reason });
    }

    fn set_usage(&mut self, usage: Value) {
        if usage.is_null() {
            return;
        }
        let small = serde_json::to_string(&usage).is_ok_and(|s| s.len() <= MAX_USAGE_BYTES);
        if small {
            self.usage = Some(usage);
        }
    }
}

/// A denied call as kept: the tool name and a one-line summary of its input.
fn denial(v: &Value) -> Denial {
    let tool = v.get("tool_name").or_else(|| v.get("tool")).and_then(Value::as_str).unwrap_or("?");
    let input = v.get("tool_input").or_else(|| v.get("input")).map(input_summary).unwrap_or_default();
    Denial { tool: clip(tool, MAX_WORD_CHARS), input }
}

/// A tool call's input in one line of at most `MAX_DENIAL_CHARS`: the field that says
/// what it does (a command, a path, a URL, a pattern) when there is one, else compact JSON.
pub fn input_summary(input: &Value) -> String {
    const TELLING: [&str; 7] = ["command", "file_path", "path", "url", "pattern", "query", "prompt"];
    let text = match TELLING.iter().find_map(|k| input.get(*k).and_then(Value::as_str)) {
        Some(s) => s.to_owned(),
        None if input.is_null() => String::new(),
        None => input.to_string(),
    };
    let flat: String = printable(&text).chars().map(|c| if c.is_whitespace() { ' ' } else { c }).collect();
    clip(flat.trim(), MAX_DENIAL_CHARS)
}

/// The text of a tool result: a string, or the text blocks of an array.
pub fn tool_result_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => {
            blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

/// The `bwrap: …` line of a tool result that failed because bubblewrap could not start.
/// Only the head is looked at (Claude puts `Exit code N` first, then the command's stderr),
/// so a command that merely prints such a line later in its output does not count.
fn sandbox_failure(text: &str) -> Option<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).take(3).find(|l| l.starts_with("bwrap:")).map(summary)
}

/// Overwrite a kept word only when the new line carries one: a later line without the field
/// says nothing about it.
fn set_word(slot: &mut Option<String>, value: Option<String>) {
    if let Some(v) = value {
        *slot = Some(clip(&v, MAX_WORD_CHARS));
    }
}

// ---- wire types ------------------------------------------------------------------------

/// Read a field as `T`, or as absent when it has another shape: builds retype fields, and
/// one odd field must not hide the whole event.
fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

/// Read an array keeping the elements that have the expected shape.
fn lenient_vec<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<Vec<T>>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => Some(items.into_iter().filter_map(|i| serde_json::from_value(i).ok()).collect()),
        _ => None,
    })
}

/// Any JSON value, with `null` read as absent.
fn any_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(Some(Value::deserialize(d)?).filter(|v| !v.is_null()))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClaudeLine {
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
struct ClaudeUserMessage {
    /// A string for a plain user message (a replayed prompt): read as absent.
    #[serde(default, deserialize_with = "lenient_vec")]
    content: Option<Vec<ClaudeUserBlock>>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClaudeUserBlock {
    ToolResult {
        #[serde(default, deserialize_with = "any_value")]
        content: Option<Value>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct ClaudeMessage {
    #[serde(default, deserialize_with = "lenient")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient_vec")]
    content: Option<Vec<ClaudeBlock>>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClaudeBlock {
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
struct ClaudeResult {
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

#[derive(Deserialize)]
#[serde(tag = "type")]
enum CodexLine {
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
struct CodexError {
    #[serde(default, deserialize_with = "lenient")]
    message: Option<String>,
}

/// One flat shape for every item type: each reads the fields it has.
#[derive(Deserialize)]
struct CodexItem {
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
struct CodexChange {
    #[serde(default, deserialize_with = "lenient")]
    path: Option<String>,
}

// ---- exit record -----------------------------------------------------------------------

/// How the run ended, as the runner recorded it on the brother: the `exit` file holds
/// `<code> <time> [reason]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitRecord {
    pub code: i32,
    /// The runner's UTC timestamp, as written (empty if the record had none).
    pub at: String,
    /// Set when delegate itself stopped the agent.
    pub reason: Option<ExitReason>,
}

/// Why delegate stopped the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    TimedOut,
    TurnLimit,
    Cancelled,
    /// The runner was hung up on (its tmux session or server was killed) and stopped the agent.
    Hangup,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::TimedOut => "timed_out",
            ExitReason::TurnLimit => "turn_limit",
            ExitReason::Cancelled => "cancelled",
            ExitReason::Hangup => "hangup",
        }
    }

    fn from_word(word: &str) -> Option<ExitReason> {
        [ExitReason::TimedOut, ExitReason::TurnLimit, ExitReason::Cancelled, ExitReason::Hangup]
            .into_iter()
            .find(|r| r.as_str() == word)
    }
}

impl ExitRecord {
    /// Parse the first non-empty line. The code is required; an unknown reason word reads as
    /// no reason, so a newer runner's reasons do not make the record unreadable.
    pub fn parse(text: &str) -> Option<ExitRecord> {
        let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
        let mut words = line.split_whitespace();
        let code = words.next()?.parse::<i32>().ok()?;
        let (at, reason) = match words.next() {
            Some(word) => match ExitReason::from_word(word) {
                Some(reason) => (String::new(), Some(reason)),
                None => (clip(word, MAX_WORD_CHARS), words.next().and_then(ExitReason::from_word)),
            },
            None => (String::new(), None),
        };
        Some(ExitRecord { code, at, reason })
    }

    /// The signal that killed the agent: shells report death by signal S as 128 + S.
    pub fn signal(&self) -> Option<i32> {
        (self.code > 128 && self.code < 256).then(|| self.code - 128)
    }

    /// "exited 1" or "was killed by signal 15 (SIGTERM)".
    fn describe(&self) -> String {
        match self.signal() {
            Some(sig) => match signal_name(sig) {
                Some(name) => format!("was killed by signal {sig} ({name})"),
                None => format!("was killed by signal {sig}"),
            },
            None => format!("exited {}", self.code),
        }
    }
}

fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return None,
    })
}

// ---- outcome ---------------------------------------------------------------------------

/// How a finished run ended. Serialized with its state name in `outcome`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Completed { final_text: Option<String> },
    TurnLimit { turns: u32, enforced_by: Enforcer },
    Failed { kind: FailKind, reason: String },
    TimedOut,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailKind {
    /// The agent is not logged in or its credentials were refused.
    Auth,
    /// The agent refused the launch itself (flags, settings, git check, unknown session).
    LaunchRejected,
    /// The spending limit was hit.
    Budget,
    /// The agent ran and reported an error.
    AgentError,
    /// The agent started and died without reporting a result.
    Crashed,
    /// The agent ran, but the OS sandbox it was given could not start on the brother, so
    /// every command it tried failed (bubblewrap without user namespaces, agent-clis.md
    /// §7.2). Its own verdict may still say success; the work was not done. A kind of its
    /// own rather than `launch_rejected`, because the launch went through and the fix is
    /// on the brother (enable user namespaces, or use another sandbox level).
    Sandbox,
}

/// Who stopped the run at its turn limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcer {
    /// The agent's own limit (Claude's `--max-turns`).
    Native,
    /// delegate counted turns and stopped the agent.
    Delegate,
}

impl Outcome {
    /// The task state this outcome maps to ([`crate::TaskStatus`] names).
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Completed { .. } => "completed",
            Outcome::TurnLimit { .. } => "turn_limit",
            Outcome::Failed { .. } => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// A human reason for the states that need one.
    pub fn reason(&self) -> Option<String> {
        match self {
            Outcome::Failed { reason, .. } => Some(reason.clone()),
            Outcome::TurnLimit { turns, enforced_by } => {
                let unit = if *turns == 1 { "turn" } else { "turns" };
                let by = match enforced_by {
                    Enforcer::Native => "the agent's own limit",
                    Enforcer::Delegate => "limit enforced by delegate",
                };
                Some(format!("stopped after {turns} {unit} ({by})"))
            }
            Outcome::Completed { .. } | Outcome::TimedOut | Outcome::Cancelled => None,
        }
    }
}

/// Classify a finished run (agent-clis.md §3). `stderr_head` is the first KB or so of the
/// agent's stderr, used for reasons. The runner's exit reason wins first: when delegate
/// stopped the agent, whatever the stream says last is a consequence, not the cause.
pub fn classify(kind: StreamKind, facts: &StreamFacts, exit: &ExitRecord, stderr_head: &str) -> Outcome {
    match exit.reason {
        Some(ExitReason::Cancelled) => return Outcome::Cancelled,
        Some(ExitReason::TimedOut) => return Outcome::TimedOut,
        Some(ExitReason::TurnLimit) => {
            return Outcome::TurnLimit { turns: facts.turns_used(kind), enforced_by: Enforcer::Delegate };
        }
        // The lead records a hangup as `lost`; if asked here, the stream decides.
        Some(ExitReason::Hangup) | None => {}
    }
    match kind {
        StreamKind::Claude => classify_claude(facts, exit, stderr_head),
        StreamKind::Codex => classify_codex(facts, exit, stderr_head),
        StreamKind::None => classify_custom(facts, exit, stderr_head),
    }
}

fn failed(kind: FailKind, reason: &str) -> Outcome {
    Outcome::Failed { kind, reason: clip(reason.trim(), MAX_REASON_CHARS) }
}

fn classify_claude(facts: &StreamFacts, exit: &ExitRecord, stderr: &str) -> Outcome {
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

fn classify_codex(facts: &StreamFacts, exit: &ExitRecord, stderr: &str) -> Outcome {
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

fn classify_custom(facts: &StreamFacts, exit: &ExitRecord, stderr: &str) -> Outcome {
    // The agent's own verdict counts, but a declared success with a failing exit code is
    // treated like Claude's: reported, not hidden.
    match &facts.custom_result {
        Some(CustomResult { result, reason }) if result == "failed" => {
            failed(FailKind::AgentError, reason.as_deref().unwrap_or("the agent reported failure"))
        }
        Some(CustomResult { reason, .. }) if exit.code == 0 => Outcome::Completed { final_text: reason.clone() },
        Some(_) => failed(FailKind::AgentError, &format!("the agent reported completed but {}", exit.describe())),
        None if exit.code == 0 => Outcome::Completed { final_text: None },
        None => {
            let reason = stderr_reason(stderr).unwrap_or_else(|| format!("the agent {}", exit.describe()));
            failed(FailKind::AgentError, &reason)
        }
    }
}

// ---- text helpers ----------------------------------------------------------------------

/// The most telling stderr line: the first that starts with "error", else the first that
/// is not a warning (Codex always opens with a PATH-alias warning under /tmp; Claude may warn
/// about the sandbox first), else the first non-empty one.
fn stderr_reason(stderr: &str) -> Option<String> {
    let lines = || stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    let warning = |l: &str| starts_with_ignore_case(l, "warning") || l.starts_with('⚠');
    lines()
        .find(|l| starts_with_ignore_case(l, "error"))
        .or_else(|| lines().find(|l| !warning(l)))
        .or_else(|| lines().next())
        .map(|l| clip(l, MAX_REASON_CHARS))
}

fn stderr_line_containing(stderr: &str, needle: &str) -> Option<String> {
    stderr.lines().map(str::trim).find(|l| l.contains(needle)).map(|l| clip(l, MAX_REASON_CHARS))
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// An HTTP 401 or the word unauthorized (the exact Codex wording is unverified).
fn mentions_unauthorized(message: &str) -> bool {
    message.to_ascii_lowercase().contains("unauthorized")
        || message.split(|c: char| !c.is_ascii_digit()).any(|run| run == "401")
}

/// Text from a brother made safe to print on a terminal: ANSI escape sequences (CSI, OSC
/// and the rest), other control characters and bidirectional overrides are removed;
/// newlines and tabs stay. Everything a brother writes is untrusted.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC, DCS, SOS, PM, APC: a string up to BEL or ST (ESC \\).
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                // Any other escape is two characters long.
                _ => {}
            },
            '\n' | '\t' => out.push(c),
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {}
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters; a cut text ends in "…" (counted in `max`).
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some(_) => {
            let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
            out.push('…');
            out
        }
    }
}

/// One line of at most [`MAX_SUMMARY_CHARS`], control characters (newlines) as spaces.
fn summary(text: &str) -> String {
    let flat: String = printable(text).chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    clip(flat.trim(), MAX_SUMMARY_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recorded or hand-written run: stdout, stderr and the exit status the shell saw.
    struct Fixture {
        name: &'static str,
        kind: StreamKind,
        stream: &'static [u8],
        stderr: &'static str,
        code: i32,
    }

    macro_rules! fixture {
        ($name:literal, $kind:expr) => {
            Fixture {
                name: $name,
                kind: $kind,
                stream: include_bytes!(concat!("../../tests/fixtures/streams/", $name, ".jsonl")),
                stderr: include_str!(concat!("../../tests/fixtures/streams/", $name, ".stderr")),
                code: include_str!(concat!("../../tests/fixtures/streams/", $name, ".exit")).trim().parse().unwrap(),
            }
        };
    }

    fn fixtures() -> Vec<Fixture> {
        use StreamKind::{Claude, Codex};
        vec![
            fixture!("claude-not-logged-in", Claude),
            fixture!("claude-hooks-not-logged-in", Claude),
            fixture!("claude-bogus-flag", Claude),
            fixture!("claude-resume-unknown", Claude),
            fixture!("codex-offline-killed", Codex),
            fixture!("codex-offline-waiting", Codex),
            fixture!("codex-full-auto", Codex),
            fixture!("codex-untrusted-dir", Codex),
            fixture!("self-test-ok", Claude),
            fixture!("self-test-turns", Claude),
            fixture!("self-test-fail", Claude),
            fixture!("synthetic-claude-success", Claude),
            fixture!("synthetic-claude-max-turns", Claude),
            fixture!("synthetic-claude-budget", Claude),
            fixture!("synthetic-claude-crash", Claude),
            fixture!("synthetic-codex-success", Codex),
            fixture!("synthetic-codex-turn-failed", Codex),
            fixture!("synthetic-codex-unauthorized", Codex),
            fixture!("synthetic-custom-failed", StreamKind::None),
            fixture!("synthetic-claude-sandbox-broken", Claude),
            fixture!("synthetic-claude-denied", Claude),
            fixture!("synthetic-codex-items", Codex),
        ]
    }

    fn get(name: &str) -> Fixture {
        fixtures().into_iter().find(|f| f.name == name).unwrap()
    }

    fn exit(code: i32) -> ExitRecord {
        ExitRecord::parse(&format!("{code} 2026-11-21T10:00:00.1Z\n")).unwrap()
    }

    fn facts_of(f: &Fixture) -> StreamFacts {
        let mut facts = StreamFacts::default();
        let used = facts.feed(f.kind, f.stream);
        assert_eq!(used, f.stream.len(), "{}: every fixture ends in a newline", f.name);
        facts
    }

    fn run(f: &Fixture, code: i32) -> Outcome {
        classify(f.kind, &facts_of(f), &exit(code), f.stderr)
    }

    /// Feed the way the sync loop does: the bytes synced so far from the stored offset on,
    /// with the facts stored as JSON and loaded again in between (a CLI restart).
    fn feed_in_chunks(
        kind: StreamKind,
        bytes: &[u8],
        mut next: impl FnMut() -> usize,
        reload: bool,
    ) -> (StreamFacts, usize) {
        let mut facts = StreamFacts::default();
        let (mut offset, mut synced) = (0, 0);
        while synced < bytes.len() {
            synced = (synced + next().max(1)).min(bytes.len());
            offset += facts.feed(kind, &bytes[offset..synced]);
            if reload {
                facts = serde_json::from_str(&serde_json::to_string(&facts).unwrap()).unwrap();
            }
        }
        (facts, offset)
    }

    /// How many more bytes the next sync brings.
    type NextChunk = Box<dyn FnMut() -> usize>;

    /// A small deterministic generator, so failures reproduce.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    fn assert_failed(outcome: &Outcome, kind: FailKind, reason_start: &str) {
        match outcome {
            Outcome::Failed { kind: k, reason } => {
                assert_eq!(*k, kind, "{outcome:?}");
                assert!(reason.starts_with(reason_start), "reason {reason:?} should start with {reason_start:?}");
            }
            other => panic!("expected Failed {kind:?}, got {other:?}"),
        }
    }

    // ---- real Claude ----

    #[test]
    fn claude_not_logged_in_is_auth_whatever_the_exit_code() {
        let f = get("claude-not-logged-in");
        assert_eq!(f.code, 1, "2.1.329 exited 1 when recorded");
        let facts = facts_of(&f);
        assert!(facts.init && facts.auth_error && facts.saw_json);
        assert_eq!(facts.lines, 3);
        assert_eq!(facts.agent_version.as_deref(), Some("2.1.329"));
        assert_eq!(facts.session_id.as_deref(), Some("6e56322c-be3f-401a-a53c-77d9f448eac2"));
        assert_eq!(facts.permission_mode.as_deref(), Some("default"));
        assert_eq!(facts.tools.as_ref().map(Vec::len), Some(23));
        assert_eq!(facts.turns, 1);
        assert_eq!(facts.cost_usd, Some(0.0));
        let r = facts.result.as_ref().unwrap();
        assert_eq!((r.subtype.as_deref(), r.is_error), (Some("success"), Some(true)));
        assert_eq!(r.terminal_reason.as_deref(), Some("api_error"));
        for code in [0, 1] {
            let outcome = run(&f, code);
            assert_failed(&outcome, FailKind::Auth, "Not logged in");
            assert_eq!(outcome.reason().as_deref(), Some("Not logged in · Please run /login"));
        }
        // Either signal alone is enough.
        let mut only_text = facts.clone();
        only_text.auth_error = false;
        assert_failed(&classify(f.kind, &only_text, &exit(0), ""), FailKind::Auth, "Not logged in");
        let mut only_flag = facts;
        only_flag.result.as_mut().unwrap().result = Some("Invalid API key".into());
        assert_failed(&classify(f.kind, &only_flag, &exit(0), ""), FailKind::Auth, "Invalid API key");
    }

    #[test]
    fn claude_bogus_flag_is_launch_rejected() {
        let f = get("claude-bogus-flag");
        let facts = facts_of(&f);
        assert_eq!((facts.lines, facts.saw_json), (0, false));
        assert_failed(&run(&f, f.code), FailKind::LaunchRejected, "error: unknown option '--bogus-flag'");
        // No stderr at all still gives a reason.
        assert_failed(&classify(f.kind, &facts, &exit(1), ""), FailKind::LaunchRejected, "the agent exited 1");
    }

    #[test]
    fn claude_unknown_resume_is_launch_rejected() {
        let f = get("claude-resume-unknown");
        let facts = facts_of(&f);
        assert!(!facts.init);
        let r = facts.result.as_ref().unwrap();
        assert_eq!(r.num_turns, Some(0));
        assert_eq!(r.errors.len(), 1);
        assert_failed(&run(&f, f.code), FailKind::LaunchRejected, "No conversation found with session ID: a21ff72a");
        // Without stderr the result's errors[] explain it.
        assert_failed(&classify(f.kind, &facts, &exit(1), ""), FailKind::LaunchRejected, "No conversation found");
    }

    // ---- self-test agent (Claude stream) ----

    #[test]
    fn self_test_streams() {
        let ok = get("self-test-ok");
        assert_eq!(run(&ok, ok.code), Outcome::Completed { final_text: Some("self-test completed".into()) });
        let facts = facts_of(&ok);
        assert_eq!(facts.agent_version.as_deref(), Some("delegate-self-test 1"));
        assert_eq!(facts.session_id.as_deref(), Some("self-test"));
        assert_eq!(facts.tools, Some(vec![]));

        let turns = get("self-test-turns");
        let facts = facts_of(&turns);
        assert_eq!(facts.turns, 3);
        assert_eq!(facts.last_message.as_deref(), Some("turn 3"));
        let outcome = run(&turns, turns.code);
        assert_eq!(outcome, Outcome::TurnLimit { turns: 3, enforced_by: Enforcer::Native });
        assert_eq!(outcome.reason().as_deref(), Some("stopped after 3 turns (the agent's own limit)"));

        let fail = get("self-test-fail");
        assert_eq!(fail.code, 4);
        assert_failed(&run(&fail, fail.code), FailKind::AgentError, "self-test failure requested (exit 4)");
    }

    // ---- synthetic Claude ----

    #[test]
    fn claude_success() {
        let f = get("synthetic-claude-success");
        let facts = facts_of(&f);
        // Two lines share msg_01AbC: one turn; msg_02DeF is the second.
        assert_eq!(facts.turns, 2);
        assert_eq!(facts.permission_mode.as_deref(), Some("dontAsk"));
        assert_eq!(facts.cost_usd, Some(0.0421));
        assert_eq!(facts.usage.as_ref().and_then(|u| u["output_tokens"].as_u64()), Some(66));
        assert_eq!(facts.result.as_ref().unwrap().permission_denials, 1);
        assert_eq!(facts.last_message.as_deref(), Some("All 12 tests pass; nothing to change."));
        assert_eq!(facts.last_activity.as_deref(), Some("result: success"));
        let outcome = run(&f, 0);
        assert_eq!(outcome, Outcome::Completed { final_text: Some("All 12 tests pass; nothing to change.".into()) });
        assert_eq!((outcome.status(), outcome.reason()), ("completed", None));
        // Decided: a success result with a failing exit code is reported, not hidden.
        assert_failed(&run(&f, 1), FailKind::AgentError, "the result was success but the agent exited 1");
        // A missing is_error counts as false.
        let mut no_flag = facts;
        no_flag.result.as_mut().unwrap().is_error = None;
        assert!(matches!(classify(f.kind, &no_flag, &exit(0), ""), Outcome::Completed { .. }));
    }

    #[test]
    fn claude_activity_follows_the_stream() {
        let f = get("synthetic-claude-success");
        let mut facts = StreamFacts::default();
        let lines: Vec<&[u8]> = f.stream.split_inclusive(|&b| b == b'\n').collect();
        let mut seen = vec![];
        for line in lines {
            facts.feed(f.kind, line);
            seen.push(facts.last_activity.clone().unwrap_or_default());
        }
        assert_eq!(
            seen,
            [
                "session started (2.1.329)",
                "assistant: I'll run the tests first.",
                "tool: Bash",
                "tool: Bash",
                "assistant: All 12 tests pass; nothing to change.",
                "result: success",
            ]
        );
    }

    #[test]
    fn claude_max_turns_budget_and_crash() {
        let f = get("synthetic-claude-max-turns");
        assert_eq!(facts_of(&f).turns, 7);
        let outcome = run(&f, f.code);
        assert_eq!(outcome, Outcome::TurnLimit { turns: 7, enforced_by: Enforcer::Native });
        assert_eq!(outcome.status(), "turn_limit");
        assert_eq!(outcome.reason().as_deref(), Some("stopped after 7 turns (the agent's own limit)"));

        let f = get("synthetic-claude-budget");
        assert_failed(&run(&f, f.code), FailKind::Budget, "budget limit reached after spending $0.51");

        let f = get("synthetic-claude-crash");
        let facts = facts_of(&f);
        assert!(facts.init && facts.result.is_none());
        assert_eq!(facts.last_activity.as_deref(), Some("tool: Bash"));
        assert_eq!(facts.last_message.as_deref(), Some("Building the workspace."));
        assert_failed(
            &run(&f, 143),
            FailKind::Crashed,
            "the agent was killed by signal 15 (SIGTERM) before reporting a result; \
             session 4e2a5f9c-3d6b-4a0c-85e8-7f9ab13c4d5e can be resumed",
        );
        assert_failed(&run(&f, 137), FailKind::Crashed, "the agent was killed by signal 9 (SIGKILL) before");
        let outcome = classify(f.kind, &facts, &exit(1), "TypeError: x is undefined\n    at foo\n");
        assert_failed(&outcome, FailKind::Crashed, "the agent exited 1 before reporting a result: TypeError");
    }

    #[test]
    fn claude_is_error_without_text_falls_back() {
        let mut facts = facts_of(&get("synthetic-claude-success"));
        let r = facts.result.as_mut().unwrap();
        r.is_error = Some(true);
        r.result = None;
        r.terminal_reason = Some("api_error".into());
        assert_failed(&classify(StreamKind::Claude, &facts, &exit(0), ""), FailKind::AgentError, "api_error");
        facts.result.as_mut().unwrap().terminal_reason = None;
        assert_failed(&classify(StreamKind::Claude, &facts, &exit(0), ""), FailKind::AgentError, "success");
    }

    #[test]
    fn claude_no_stream_and_exit_zero() {
        let outcome = classify(StreamKind::Claude, &StreamFacts::default(), &exit(0), "");
        assert_failed(&outcome, FailKind::AgentError, "the agent exited 0 without");
    }

    #[test]
    fn claude_sub_agent_lines_are_not_turns() {
        let stream = concat!(
            r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"tool_use","name":"Task"}]}}"#,
            "\n",
            r#"{"type":"assistant","parent_tool_use_id":"toolu_1","message":{"id":"s1","content":[{"type":"text","text":"inner"}]}}"#,
            "\n",
            r#"{"type":"assistant","message":{"id":"m2","content":[{"type":"text","text":"outer"}]}}"#,
            "\n",
        );
        let mut facts = StreamFacts::default();
        facts.feed(StreamKind::Claude, stream.as_bytes());
        assert_eq!(facts.turns, 2);
        assert_eq!(facts.last_message.as_deref(), Some("outer"));
    }

    // ---- real Codex ----

    #[test]
    fn codex_offline_facts() {
        let f = get("codex-offline-killed");
        let facts = facts_of(&f);
        assert_eq!(facts.session_id.as_deref(), Some("01a1fd9c-f41a-7522-88dc-07649ba8717e"));
        assert_eq!(facts.turns, 1);
        assert_eq!(facts.lines, 6);
        assert!(!facts.codex_turn_completed && facts.codex_turn_failed.is_none());
        let last = "Reconnecting... 5/5 (stream disconnected before completion: \
                    failed to lookup address information: Name does not resolve)";
        assert_eq!(facts.last_error.as_deref(), Some(last));
        assert!(facts.last_activity.as_deref().unwrap().starts_with("error: Reconnecting... 5/5"));

        // The item of type error is a notice: it shows as activity, never as last_error.
        let f = get("codex-offline-waiting");
        let facts = facts_of(&f);
        assert_eq!(facts.session_id.as_deref(), Some("01a1fd9d-176e-77b2-89f9-cf89f5137122"));
        assert_eq!(
            facts.last_error.as_deref(),
            Some("Reconnecting... waiting for network (Connection failed: error sending request)")
        );
        let mut partial = StreamFacts::default();
        let cut = f.stream.windows(13).position(|w| w == b"item.complete").unwrap();
        let line_end = cut + f.stream[cut..].iter().position(|&b| b == b'\n').unwrap() + 1;
        partial.feed(f.kind, &f.stream[..line_end]);
        assert!(partial.last_activity.as_deref().unwrap().starts_with("notice: Falling back from WebSockets"));
        assert!(partial.last_error.as_deref().unwrap().starts_with("Reconnecting... 5/5"));
    }

    #[test]
    fn codex_offline_outcomes() {
        let f = get("codex-offline-killed");
        let facts = facts_of(&f);
        let timed_out = ExitRecord::parse("143 2026-11-21T10:18:09.9Z timed_out\n").unwrap();
        assert_eq!(classify(f.kind, &facts, &timed_out, f.stderr), Outcome::TimedOut);
        let outcome = classify(f.kind, &facts, &exit(101), f.stderr);
        assert_eq!(outcome, Outcome::Failed { kind: FailKind::AgentError, reason: facts.last_error.clone().unwrap() });
        // Killed by someone else (no runner reason): still a failure with the last error.
        assert_failed(&classify(f.kind, &facts, &exit(143), f.stderr), FailKind::AgentError, "Reconnecting... 5/5");
        // Stopped at the limit before any step (a recorded offline stream never got one).
        let limit = ExitRecord::parse("143 2026-11-21T10:18:09.9Z turn_limit").unwrap();
        assert_eq!(
            classify(f.kind, &facts, &limit, f.stderr),
            Outcome::TurnLimit { turns: 0, enforced_by: Enforcer::Delegate }
        );
    }

    #[test]
    fn codex_launch_rejections() {
        let f = get("codex-full-auto");
        assert_eq!(f.code, 2);
        assert_failed(&run(&f, f.code), FailKind::LaunchRejected, "error: unexpected argument '--full-auto' found");
        let f = get("codex-untrusted-dir");
        assert_eq!(f.code, 1);
        assert_failed(
            &run(&f, f.code),
            FailKind::LaunchRejected,
            "Not inside a trusted directory and --skip-git-repo-check was not specified.",
        );
        // Decided: no JSON and a non-zero exit is a refusal; the PATH-alias warning is skipped.
        let stderr = "WARNING: proceeding, even though we could not create PATH aliases\n\
                      Error: thread/resume: no rollout found for thread id 0199\n";
        assert_failed(
            &classify(StreamKind::Codex, &StreamFacts::default(), &exit(1), stderr),
            FailKind::LaunchRejected,
            "Error: thread/resume: no rollout found",
        );
    }

    // ---- synthetic Codex ----

    #[test]
    fn codex_turns_shown_are_its_steps() {
        // One `codex exec` turn, two tool calls and a file change: three steps, as the
        // runner counts them against --max-turns.
        let mut facts = StreamFacts::default();
        let cmd = |ev: &str, id: u32| {
            format!(r#"{{"type":"item.{ev}","item":{{"id":"item_{id}","type":"command_execution","command":"true"}}}}"#)
        };
        let stream = [
            r#"{"type":"turn.started"}"#.to_string(),
            cmd("started", 1),
            cmd("completed", 1),
            cmd("started", 2),
            cmd("completed", 2),
            r#"{"type":"item.completed","item":{"id":"item_3","type":"file_change","changes":[{"path":"a.rs","kind":"update"}]}}"#.into(),
            r#"{"type":"item.completed","item":{"id":"item_4","type":"agent_message","text":"done"}}"#.into(),
        ]
        .join("\n")
            + "\n";
        facts.feed(StreamKind::Codex, stream.as_bytes());
        assert_eq!((facts.turns, facts.steps), (1, 3));
        assert_eq!(facts.turns_used(StreamKind::Codex), 3);
        assert_eq!(facts.turns_used(StreamKind::Claude), 1);
        let stopped = ExitRecord::parse("143 2026-12-01T00:00:00Z turn_limit").unwrap();
        assert_eq!(
            classify(StreamKind::Codex, &facts, &stopped, ""),
            Outcome::TurnLimit { turns: 3, enforced_by: Enforcer::Delegate }
        );
    }

    #[test]
    fn codex_success() {
        let f = get("synthetic-codex-success");
        let facts = facts_of(&f);
        assert_eq!(facts.session_id.as_deref(), Some("0199a213-81c0-7800-8aa1-bbab2a035a53"));
        assert!(facts.codex_turn_completed);
        assert_eq!(facts.usage.as_ref().and_then(|u| u["output_tokens"].as_u64()), Some(122));
        assert_eq!(facts.last_activity.as_deref(), Some("turn 1 completed"));
        let text = "Fixed the off-by-one in src/lib.rs; all 12 tests pass now.";
        assert_eq!(run(&f, 0), Outcome::Completed { final_text: Some(text.into()) });
        assert_failed(&run(&f, 1), FailKind::AgentError, "the turn completed but the agent exited 1");
    }

    #[test]
    fn codex_turn_failed() {
        let f = get("synthetic-codex-turn-failed");
        assert_failed(&run(&f, f.code), FailKind::AgentError, "unexpected status 400 Bad Request");
        // Exit 0 does not rescue a failed turn.
        assert_failed(&run(&f, 0), FailKind::AgentError, "unexpected status 400");
        let f = get("synthetic-codex-unauthorized");
        assert_failed(&run(&f, f.code), FailKind::Auth, "unexpected status 401 Unauthorized");
        assert!(!mentions_unauthorized("took 4015 ms"));
        assert!(mentions_unauthorized("HTTP 401: token expired"));
    }

    #[test]
    fn codex_turn_state_resets_on_a_new_turn() {
        let mut facts = facts_of(&get("synthetic-codex-turn-failed"));
        let more =
            concat!(r#"{"type":"turn.started"}"#, "\n", r#"{"type":"request_user_input","questions":[]}"#, "\n",);
        facts.feed(StreamKind::Codex, more.as_bytes());
        assert_eq!((facts.turns, facts.codex_turn_failed.is_none(), facts.needs_input), (2, true, true));
        assert_failed(
            &classify(StreamKind::Codex, &facts, &exit(0), ""),
            FailKind::AgentError,
            "the agent asked for input",
        );
        facts.feed(StreamKind::Codex, b"{\"type\":\"turn.started\"}\n{\"type\":\"turn.completed\"}\n");
        assert!(!facts.needs_input);
        assert_eq!(classify(StreamKind::Codex, &facts, &exit(0), ""), Outcome::Completed { final_text: None });
    }

    // ---- custom agents ----

    #[test]
    fn custom_agents() {
        let f = get("synthetic-custom-failed");
        let facts = facts_of(&f);
        assert_eq!((facts.lines, facts.saw_json), (3, true));
        assert_eq!(
            facts.custom_result,
            Some(CustomResult { result: "failed".into(), reason: Some("tests still failing after 3 attempts".into()) })
        );
        assert_failed(&run(&f, 0), FailKind::AgentError, "tests still failing after 3 attempts");

        let none = StreamKind::None;
        let empty = StreamFacts::default();
        assert_eq!(classify(none, &empty, &exit(0), "noise"), Outcome::Completed { final_text: None });
        assert_failed(&classify(none, &empty, &exit(3), "\n  boom: disk full\nmore\n"), FailKind::AgentError, "boom");
        assert_failed(&classify(none, &empty, &exit(3), ""), FailKind::AgentError, "the agent exited 3");

        let mut done = StreamFacts::default();
        done.feed(
            none,
            b"{\"delegate_result\":\"completed\",\"reason\":\"all green\"}\n{\"delegate_result\":\"maybe\"}\n",
        );
        assert_eq!(classify(none, &done, &exit(0), ""), Outcome::Completed { final_text: Some("all green".into()) });
        assert_failed(&classify(none, &done, &exit(1), ""), FailKind::AgentError, "the agent reported completed but");
        // A Claude stream read as custom is just output.
        let claude = get("self-test-ok");
        let mut facts = StreamFacts::default();
        facts.feed(none, claude.stream);
        assert!(facts.saw_json && !facts.init && facts.result.is_none() && facts.turns == 0);
    }

    // ---- denials, final text, sandbox ----

    #[test]
    fn denials_are_kept_with_tool_and_bounded_input() {
        let facts = facts_of(&get("synthetic-claude-denied"));
        let r = facts.result.as_ref().unwrap();
        assert_eq!(r.permission_denials, 1);
        assert_eq!(
            r.denials,
            [Denial {
                tool: "Bash".into(),
                input: r#""$DELEGATE_TASK_DIR/report" receipt "run the tests and fix the failure""#.into()
            }]
        );
        assert_eq!(
            facts.final_text(),
            Some("All 12 tests pass. I could not send the receipt: the report helper was refused.")
        );
        // Hook and other system lines before init do not disturb the facts.
        assert!(facts.init && facts.permission_mode.as_deref() == Some("acceptEdits"));
        assert_eq!((facts.bash_calls, facts.sandbox_failed), (2, 0));

        // Many denials with huge inputs: all counted, at most MAX_DENIALS kept, each bounded.
        let one = serde_json::json!({"tool_name": "Write", "tool_input": {"file_path": format!("/x/{}\u{1b}[2J", "a".repeat(5000)), "content": "b".repeat(10_000)}});
        let line = serde_json::json!({"type": "result", "subtype": "success", "is_error": false, "permission_denials": vec![one; 50]});
        let mut facts = StreamFacts::default();
        facts.feed(StreamKind::Claude, format!("{line}\n").as_bytes());
        let r = facts.result.unwrap();
        assert_eq!((r.permission_denials, r.denials.len()), (50, MAX_DENIALS));
        for d in &r.denials {
            assert_eq!(d.tool, "Write");
            assert_eq!(d.input.chars().count(), MAX_DENIAL_CHARS);
            assert!(d.input.starts_with("/x/aaa") && !d.input.contains('\u{1b}'), "{}", d.input);
        }
        // Odd shapes read as "?" and compact JSON, never a panic.
        assert_eq!(
            denial(&serde_json::json!({"tool_input": ["rm", "-rf"]})),
            Denial { tool: "?".into(), input: r#"["rm","-rf"]"#.into() }
        );
        assert_eq!(denial(&serde_json::json!(7)), Denial { tool: "?".into(), input: String::new() });
    }

    #[test]
    fn codex_final_text_is_the_last_agent_message() {
        let facts = facts_of(&get("synthetic-codex-items"));
        assert_eq!(
            facts.final_text(),
            Some("Fixed the off-by-one in src/lib.rs and added tests/edge.rs; all 13 tests pass.")
        );
        // The item-level error notice is not a top-level error.
        assert_eq!(facts.last_error, None);
    }

    #[test]
    fn a_sandbox_that_never_started_fails_the_run_even_when_the_agent_says_success() {
        let f = get("synthetic-claude-sandbox-broken");
        let facts = facts_of(&f);
        assert_eq!((facts.bash_calls, facts.sandbox_failed), (2, 2));
        assert_eq!(facts.sandbox_error.as_deref(), Some("bwrap: setting up uid map: Permission denied"));
        assert_eq!(
            run(&f, 0),
            failed(
                FailKind::Sandbox,
                "the sandbox could not start on the brother: bwrap: setting up uid map: Permission denied"
            )
        );
        assert_eq!(serde_json::to_value(run(&f, 0)).unwrap()["kind"], "sandbox");

        // One Bash call failed on the sandbox, another ran: completed, with the count kept
        // so show and get_task can warn.
        let mut stream = f.stream.to_vec();
        let extra = br#"{"type":"assistant","message":{"id":"msg_x","content":[{"type":"tool_use","id":"t3","name":"Bash","input":{"command":"true"}}]}}
{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t3","content":"","is_error":false}]}}
"#;
        let at = stream.windows(17).position(|w| w == br#"{"type":"result","#).unwrap();
        stream.splice(at..at, extra.iter().copied());
        let mut facts = StreamFacts::default();
        facts.feed(StreamKind::Claude, &stream);
        assert_eq!((facts.bash_calls, facts.sandbox_failed, facts.sandbox_broken()), (3, 2, false));
        assert_eq!(classify(StreamKind::Claude, &facts, &exit(0), "").status(), "completed");

        // Only the head of a result counts: output that mentions bwrap later does not.
        let later = "build ok\nstep 2\nstep 3\nbwrap: setting up uid map: Permission denied";
        assert_eq!(sandbox_failure(later), None);
        assert_eq!(
            sandbox_failure("\n  bwrap: No permissions to creating new namespace\n").as_deref(),
            Some("bwrap: No permissions to creating new namespace")
        );
        assert_eq!(
            tool_result_text(&serde_json::json!([{"type":"text","text":"a"},{"type":"image"},{"text":"b"}])),
            "a\nb"
        );
    }

    #[test]
    fn printable_drops_escapes_and_controls() {
        assert_eq!(printable("a\u{1b}[31mred\u{1b}[0m b"), "ared b");
        assert_eq!(printable("x\u{1b}]0;title\u{7}y\u{1b}]8;;http://e\u{1b}\\z"), "xyz");
        assert_eq!(printable("tab\tnl\ncr\r\u{0}\u{9b}2J\u{202e}rev"), "tab\tnl\ncr2Jrev");
        assert_eq!(printable("\u{1b}"), "");
        assert_eq!(printable("é€😀"), "é€😀");
    }

    // ---- precedence, exit records, serialization ----

    #[test]
    fn the_runner_reason_wins_first() {
        for f in fixtures() {
            let facts = facts_of(&f);
            let at = "2026-11-21T10:00:00.1Z";
            let rec = |r: &str| ExitRecord::parse(&format!("143 {at} {r}")).unwrap();
            assert_eq!(classify(f.kind, &facts, &rec("cancelled"), f.stderr), Outcome::Cancelled, "{}", f.name);
            assert_eq!(classify(f.kind, &facts, &rec("timed_out"), f.stderr), Outcome::TimedOut, "{}", f.name);
            assert_eq!(
                classify(f.kind, &facts, &rec("turn_limit"), f.stderr),
                Outcome::TurnLimit { turns: facts.turns_used(f.kind), enforced_by: Enforcer::Delegate },
                "{}",
                f.name
            );
        }
    }

    #[test]
    fn every_fixture_classifies_as_expected() {
        use FailKind::*;
        let expected: &[(&str, &str, Option<FailKind>)] = &[
            ("claude-not-logged-in", "failed", Some(Auth)),
            ("claude-hooks-not-logged-in", "failed", Some(Auth)),
            ("claude-bogus-flag", "failed", Some(LaunchRejected)),
            ("claude-resume-unknown", "failed", Some(LaunchRejected)),
            ("codex-offline-killed", "failed", Some(AgentError)),
            ("codex-offline-waiting", "failed", Some(AgentError)),
            ("codex-full-auto", "failed", Some(LaunchRejected)),
            ("codex-untrusted-dir", "failed", Some(LaunchRejected)),
            ("self-test-ok", "completed", None),
            ("self-test-turns", "turn_limit", None),
            ("self-test-fail", "failed", Some(AgentError)),
            ("synthetic-claude-success", "completed", None),
            ("synthetic-claude-max-turns", "turn_limit", None),
            ("synthetic-claude-budget", "failed", Some(Budget)),
            ("synthetic-claude-crash", "failed", Some(Crashed)),
            ("synthetic-codex-success", "completed", None),
            ("synthetic-codex-turn-failed", "failed", Some(AgentError)),
            ("synthetic-codex-unauthorized", "failed", Some(Auth)),
            ("synthetic-custom-failed", "failed", Some(AgentError)),
            ("synthetic-claude-sandbox-broken", "failed", Some(Sandbox)),
            ("synthetic-claude-denied", "completed", None),
            ("synthetic-codex-items", "completed", None),
        ];
        let all = fixtures();
        assert_eq!(all.len(), expected.len());
        for (f, (name, status, kind)) in all.iter().zip(expected) {
            assert_eq!(f.name, *name);
            let outcome = run(f, f.code);
            assert_eq!(outcome.status(), *status, "{name}: {outcome:?}");
            if let Outcome::Failed { kind: k, reason } = &outcome {
                assert_eq!(Some(*k), *kind, "{name}");
                assert!(!reason.is_empty() && outcome.reason().as_deref() == Some(reason.as_str()));
            }
        }
    }

    #[test]
    fn exit_records() {
        let r = ExitRecord::parse("0 2026-11-21T10:00:00.1Z\n").unwrap();
        assert_eq!(r, ExitRecord { code: 0, at: "2026-11-21T10:00:00.1Z".into(), reason: None });
        let r = ExitRecord::parse("143 2026-11-21T10:00:00.1Z timed_out").unwrap();
        assert_eq!((r.code, r.reason, r.signal()), (143, Some(ExitReason::TimedOut), Some(15)));
        let r = ExitRecord::parse("\n137 2026-11-21T10:00:00.1Z cancelled\n").unwrap();
        assert_eq!(
            (r.reason, r.signal(), r.describe()),
            (Some(ExitReason::Cancelled), Some(9), "was killed by signal 9 (SIGKILL)".into())
        );
        let r = ExitRecord::parse("143 2026-11-21T10:00:00.1Z turn_limit").unwrap();
        assert_eq!(r.reason, Some(ExitReason::TurnLimit));
        // Unknown reasons and missing times still give the code.
        assert_eq!(ExitRecord::parse("1 2026-11-21T10:00:00.1Z oom_killed").unwrap().reason, None);
        assert_eq!(ExitRecord::parse("126").unwrap(), ExitRecord { code: 126, at: String::new(), reason: None });
        assert_eq!(ExitRecord::parse("143 timed_out").unwrap().reason, Some(ExitReason::TimedOut));
        assert_eq!(ExitRecord::parse("1 2026").unwrap().signal(), None);
        assert_eq!(ExitRecord::parse("170 x").unwrap().describe(), "was killed by signal 42");
        for bad in ["", "\n\n", "x 2026", "99999999999 t", "-", "\u{0}\u{ff}"] {
            assert_eq!(ExitRecord::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn outcome_serializes_with_its_state_name() {
        let json = |o: &Outcome| serde_json::to_value(o).unwrap();
        assert_eq!(
            json(&failed(FailKind::LaunchRejected, "x")),
            serde_json::json!({"outcome": "failed", "kind": "launch_rejected", "reason": "x"})
        );
        assert_eq!(
            json(&Outcome::TurnLimit { turns: 7, enforced_by: Enforcer::Delegate }),
            serde_json::json!({"outcome": "turn_limit", "turns": 7, "enforced_by": "delegate"})
        );
        assert_eq!(json(&Outcome::TimedOut), serde_json::json!({"outcome": "timed_out"}));
        assert_eq!(json(&Outcome::Cancelled)["outcome"], "cancelled");
        assert_eq!(json(&Outcome::Completed { final_text: None })["outcome"], "completed");
        for o in [Outcome::TimedOut, Outcome::Cancelled, Outcome::Completed { final_text: None }] {
            assert!(crate::TaskStatus::ALL.iter().any(|s| s.as_str() == o.status()));
            assert_eq!(json(&o)["outcome"], o.status());
        }
    }

    #[test]
    fn facts_round_trip_through_json() {
        for f in fixtures() {
            let facts = facts_of(&f);
            let text = serde_json::to_string(&facts).unwrap();
            assert_eq!(serde_json::from_str::<StreamFacts>(&text).unwrap(), facts, "{}", f.name);
        }
        // Stored by another build: missing and unknown keys are fine.
        let old: StreamFacts = serde_json::from_str(r#"{"lines":4,"turns":2,"future_key":true}"#).unwrap();
        assert_eq!((old.lines, old.turns, old.init), (4, 2, false));
    }

    // ---- chunking ----

    #[test]
    fn any_chunking_gives_the_same_facts() {
        for f in fixtures() {
            let whole = facts_of(&f);
            let mut rng = Lcg(f.stream.len() as u64);
            let cases: [(&str, NextChunk, bool); 4] = [
                ("1 byte", Box::new(|| 1), false),
                ("7 bytes", Box::new(|| 7), true),
                ("random", Box::new(move || (rng.next() % 300) as usize), true),
                ("whole", Box::new(|| usize::MAX / 2), false),
            ];
            for (label, next, reload) in cases {
                let (facts, used) = feed_in_chunks(f.kind, f.stream, next, reload);
                assert_eq!(facts, whole, "{} fed {label}", f.name);
                assert_eq!(used, f.stream.len(), "{} fed {label}", f.name);
            }
        }
    }

    #[test]
    fn only_complete_lines_are_consumed() {
        let f = get("self-test-ok");
        let cut = f.stream.len() - 10; // inside the result line
        let mut facts = StreamFacts::default();
        let used = facts.feed(f.kind, &f.stream[..cut]);
        let last_newline = f.stream[..cut].iter().rposition(|&b| b == b'\n').unwrap() + 1;
        assert_eq!(used, last_newline);
        assert_eq!(facts.lines, 2);
        assert!(facts.result.is_none());
        assert_eq!(facts.feed(f.kind, &f.stream[used..]), f.stream.len() - used);
        assert!(facts.result.is_some());
        assert_eq!(facts.feed(f.kind, b""), 0);
        assert_eq!(facts.feed(f.kind, b"{\"type\":"), 0);
        // CRLF line ends parse too.
        let mut crlf = StreamFacts::default();
        crlf.feed(StreamKind::Codex, b"{\"type\":\"turn.started\"}\r\n\r\n");
        assert_eq!((crlf.lines, crlf.turns), (2, 1));
    }

    // ---- hostile input ----

    #[test]
    fn over_long_lines_are_skipped_in_any_chunking() {
        let result = br#"{"type":"result","subtype":"success","is_error":false,"result":"done"}"#;
        let mut stream = vec![b'x'; MAX_LINE_BYTES + 5];
        stream.push(b'\n');
        // A valid but over-long JSON line is skipped too.
        stream.extend_from_slice(br#"{"type":"result","result":""#);
        stream.extend(std::iter::repeat_n(b'a', MAX_LINE_BYTES));
        stream.extend_from_slice(b"\"}\n");
        stream.extend_from_slice(result);
        stream.push(b'\n');
        let kind = StreamKind::Claude;
        let mut whole = StreamFacts::default();
        assert_eq!(whole.feed(kind, &stream), stream.len());
        assert_eq!(whole.lines, 3);
        assert_eq!(whole.result.as_ref().and_then(|r| r.result.as_deref()), Some("done"));
        assert!(!whole.in_long_line);
        for chunk in [4096, 65_537, MAX_LINE_BYTES] {
            let (facts, used) = feed_in_chunks(kind, &stream, || chunk, false);
            assert_eq!((facts, used), (whole.clone(), stream.len()), "chunk {chunk}");
        }
        // Without its newline yet, a runaway line is consumed so the offset moves on.
        let mut facts = StreamFacts::default();
        let runaway = vec![b'{'; MAX_LINE_BYTES + 1];
        assert_eq!(facts.feed(kind, &runaway), runaway.len());
        assert!(facts.in_long_line);
        assert_eq!(facts.feed(kind, b"}}}"), 3);
        let rest: &[u8] = b"}\n{\"type\":\"system\",\"subtype\":\"init\"}\n";
        assert_eq!(facts.feed(kind, rest), rest.len());
        assert_eq!((facts.lines, facts.init, facts.in_long_line), (2, true, false));
        // Exactly at the limit the line still waits for its newline.
        let mut facts = StreamFacts::default();
        assert_eq!(facts.feed(kind, &vec![b' '; MAX_LINE_BYTES]), 0);
    }

    #[test]
    fn garbage_never_panics() {
        let mut inputs: Vec<Vec<u8>> = vec![
            b"\xff\xfe\xfd\n\x00\x01\n".to_vec(),
            b"{\"type\":\"result\",\"result\":\"\xff\"}\n".to_vec(),
            b"[1,2]\n\"s\"\n42\nnull\n{}\n{\"type\":7}\n{\"type\":null}\n".to_vec(),
            format!("{}\n", "[".repeat(200_000)).into_bytes(),
            format!("{}\n", "{\"a\":".repeat(100_000)).into_bytes(),
            br#"{"type":"result","num_turns":-1,"is_error":"yes","total_cost_usd":"1","permission_denials":{},"errors":[1,"e",null],"usage":null}
{"type":"result","num_turns":99999999999,"total_cost_usd":1e400,"result":{"a":1}}
{"type":"assistant","message":{"content":"text"},"error":5}
{"type":"assistant","message":{"id":7,"content":[{"type":"text","text":null},{"type":"tool_use","name":["x"]},17,{"type":"image"}]}}
{"type":"system","subtype":"init","tools":["a",1,null,"b"],"session_id":{"x":1}}
{"type":"thread.started","thread_id":5}
{"type":"turn.failed","error":"flat string"}
{"type":"turn.failed"}
{"type":"item.completed","item":{"type":"agent_message","text":42}}
{"type":"item.completed","item":{"type":"file_change","changes":[{"path":3},{"path":"a"}]}}
{"type":"item.completed","item":"nope"}
{"type":"error"}
{"delegate_result":["completed"]}
"#
            .to_vec(),
            "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"é€😀\\n\\u0000\"}]}}\n".into(),
        ];
        let mut rng = Lcg(7);
        for _ in 0..200 {
            let alphabet = b"{}[]\":,\\ \n\rtypeuls0123456789.-e\xff\xc3";
            let len = (rng.next() % 400) as usize;
            inputs.push((0..len).map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize]).collect());
        }
        // Every fixture with random bytes overwritten, and cut short.
        for f in fixtures() {
            let mut bytes = f.stream.to_vec();
            for _ in 0..bytes.len() / 50 {
                let i = (rng.next() as usize) % bytes.len().max(1);
                if let Some(b) = bytes.get_mut(i) {
                    *b = rng.next() as u8;
                }
            }
            let cut = bytes.len() * 2 / 3;
            inputs.push(bytes[..cut].to_vec());
            inputs.push(bytes);
        }
        for input in &inputs {
            for kind in [StreamKind::Claude, StreamKind::Codex, StreamKind::None] {
                let mut facts = StreamFacts::default();
                let used = facts.feed(kind, input);
                assert!(used <= input.len());
                // Small chunks make the tail re-scan quadratic; keep the big inputs quick.
                let chunk = if input.len() < 20_000 { 7 } else { 4096 };
                let (chunked, used_chunked) = feed_in_chunks(kind, input, || chunk, false);
                assert_eq!((&chunked, used_chunked), (&facts, used));
                let stderr = String::from_utf8_lossy(input);
                for code in [0, 1, 2, 101, 143, 255, 256, -1, i32::MIN, i32::MAX] {
                    let outcome = classify(kind, &facts, &exit(code), &stderr);
                    let _ = (outcome.status(), outcome.reason(), serde_json::to_string(&outcome).unwrap());
                }
                let text = serde_json::to_string(&facts).unwrap();
                assert_eq!(serde_json::from_str::<StreamFacts>(&text).unwrap(), facts);
            }
        }
    }

    #[test]
    fn kept_text_is_bounded_and_cut_on_char_boundaries() {
        let long = "é".repeat(5000);
        let line = format!(
            "{{\"type\":\"assistant\",\"message\":{{\"content\":[{{\"type\":\"text\",\"text\":\"{long}\"}}]}}}}\n\
             {{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":true,\"result\":\"{long}\"}}\n"
        );
        let mut facts = StreamFacts::default();
        facts.feed(StreamKind::Claude, line.as_bytes());
        let msg = facts.last_message.as_deref().unwrap();
        assert_eq!(msg.chars().count(), MAX_TEXT_CHARS);
        assert!(msg.ends_with('…'));
        assert_eq!(facts.result.as_ref().unwrap().result.as_deref().unwrap().chars().count(), MAX_TEXT_CHARS);
        assert_eq!(facts.last_activity.as_deref().unwrap().chars().count(), "result: success (is_error)".len());
        let Outcome::Failed { reason, .. } = classify(StreamKind::Claude, &facts, &exit(0), "") else { panic!() };
        assert_eq!(reason.chars().count(), MAX_REASON_CHARS);
        assert_eq!(summary("a\nb\tc"), "a b c");
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "ab…");
        assert_eq!(StreamKind::for_agent("self-test"), StreamKind::Claude);
        assert_eq!(StreamKind::for_agent("codex"), StreamKind::Codex);
        assert_eq!(StreamKind::for_agent("aider"), StreamKind::None);
    }
}
