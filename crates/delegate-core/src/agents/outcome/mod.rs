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

// One file per agent: its wire types, how its lines feed the facts, how its runs are classified.
mod claude;
mod codex;
mod custom;
mod exit;
#[cfg(test)]
mod tests;

use claude::{ClaudeLine, classify_claude};
use codex::{CodexLine, classify_codex};
use custom::classify_custom;
pub use exit::{ExitReason, ExitRecord};

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

    /// A budget failure whose reason lacks the limit (Claude's own stop reports only what it
    /// spent) gets the run's limit added: "... after spending $0.52 of $0.50".
    pub fn with_budget(self, limit_usd: Option<f64>) -> Outcome {
        match (self, limit_usd) {
            (Outcome::Failed { kind: FailKind::Budget, reason }, Some(limit)) if !reason.contains(" of $") => {
                let reason = if reason.contains("after spending $") {
                    format!("{reason} of ${limit}")
                } else {
                    format!("{reason} (limit ${limit})")
                };
                Outcome::Failed { kind: FailKind::Budget, reason }
            }
            (outcome, _) => outcome,
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
        Some(ExitReason::Budget) => {
            let reason = match &exit.spend {
                Some((spent, limit)) => format!(
                    "stopped after spending ${} of ${} (limit enforced by delegate from the agent's token counts)",
                    trim_cents(spent),
                    trim_cents(limit)
                ),
                None => "stopped at its spend limit (limit enforced by delegate)".into(),
            };
            return failed(FailKind::Budget, &reason);
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

/// `0.012300` as `0.0123`, `5.000000` as `5.00`: the runner's six decimals without the
/// trailing zeros, keeping cents.
fn trim_cents(amount: &str) -> &str {
    match amount.split_once('.') {
        Some((whole, frac)) => {
            let keep = frac.trim_end_matches('0').len().max(2).min(frac.len());
            &amount[..whole.len() + 1 + keep]
        }
        None => amount,
    }
}

fn failed(kind: FailKind, reason: &str) -> Outcome {
    Outcome::Failed { kind, reason: clip(reason.trim(), MAX_REASON_CHARS) }
}

// ---- text helpers ----------------------------------------------------------------------

pub use crate::sanitize::{clip, printable};

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

/// One line of at most [`MAX_SUMMARY_CHARS`], control characters (newlines) as spaces.
fn summary(text: &str) -> String {
    let flat: String = printable(text).chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    clip(flat.trim(), MAX_SUMMARY_CHARS)
}
