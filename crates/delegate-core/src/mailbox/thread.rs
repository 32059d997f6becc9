//! A task as a conversation: the prompt and follow-ups, every message both ways, status
//! changes and agent events, in the order they happened ([`TaskView`], `delegate show`).

use serde::Serialize;

use crate::delegate::Delegate;
use crate::error::Result;
use crate::outcome::{Denial, StreamFacts};
use crate::store::{Event, Message, Transition};
use crate::task::Task;

/// Everything known about one task: what `show` prints and the MCP `get_task` returns.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    /// The task and its runs.
    #[serde(flatten)]
    pub task: Task,
    /// Every status change, oldest first.
    pub history: Vec<Transition>,
    /// Messages both ways (said, reported) and notes, oldest first.
    pub messages: Vec<Message>,
    /// What the agent did (tool calls and the like), as sync read it, oldest first.
    pub events: Vec<Event>,
    /// The prompts and all of the above, merged in time order.
    pub thread: Vec<ThreadItem>,
    /// The agent's final answer in the latest run that has one.
    pub final_text: Option<String>,
    /// What each run's stream said at the end: answer, denied tool calls, warnings.
    pub results: Vec<RunResult>,
}

/// The end of one run as its stream told it, for people and lead agents: the facts are
/// in `runs[].facts` too, but in the shape sync keeps them in.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub run: i64,
    /// Claude's `result.result`, else the last assistant text (Codex's last
    /// `agent_message`); bounded.
    pub final_text: Option<String>,
    /// How many tool calls the agent's permission rules denied (Claude).
    pub permission_denials: u32,
    /// The first of them: tool and a bounded summary of the input.
    pub denials: Vec<Denial>,
    /// Tool results that failed because the OS sandbox could not start on the brother.
    pub sandbox_failed: u32,
    /// Things a reader must not miss, in words.
    pub warnings: Vec<String>,
}

impl RunResult {
    pub fn from_facts(run: i64, facts: &StreamFacts) -> RunResult {
        let (permission_denials, denials) =
            facts.result.as_ref().map(|r| (r.permission_denials, r.denials.clone())).unwrap_or_default();
        let mut warnings = Vec::new();
        if facts.sandbox_failed > 0 {
            let calls = if facts.sandbox_failed == 1 { "tool call" } else { "tool calls" };
            let first = facts.sandbox_error.as_deref().unwrap_or("bwrap failed");
            warnings.push(format!(
                "{} {calls} failed because the sandbox could not start on the brother ({} of {} Bash calls): {first}",
                facts.sandbox_failed, facts.sandbox_failed, facts.bash_calls
            ));
        }
        RunResult {
            run,
            final_text: facts.final_text().map(str::to_owned),
            permission_denials,
            denials,
            sandbox_failed: facts.sandbox_failed,
            warnings,
        }
    }
}

/// One line of a task's thread.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadItem {
    /// When the lead recorded it (RFC 3339, UTC; the lead's clock): what orders the thread.
    pub at: String,
    /// For a brother's report or event, the time the brother claimed (validated when it
    /// landed); shown for reference, never used for order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<String>,
    /// prompt, reopen, status, said, reported, note or event.
    pub kind: &'static str,
    /// The run it belongs to; `None` for status changes, which belong to the task.
    pub run: Option<i64>,
    /// Who wrote it, for prompts, follow-ups and messages.
    pub author: Option<String>,
    /// The text as shown to people; prompts are cut to 500 characters.
    pub text: String,
}

/// Prompts in the thread are cut to this many characters (the mailbox keeps them whole).
const PROMPT_PREVIEW_CHARS: usize = 500;

impl Delegate {
    /// The task with its history, messages, events and thread, as the mailbox knows it
    /// (sync first for the latest).
    pub fn show(&self, id: i64) -> Result<TaskView> {
        let task = self.task(id)?;
        let history = self.store().transitions(id)?;
        let messages = self.store().messages(id)?;
        let events = self.store().events(id)?;
        let thread = thread(self, &task, &history, &messages, &events)?;
        let results: Vec<RunResult> = task
            .runs
            .iter()
            .map(|r| {
                // Facts stored by another build, or none yet, read as defaults.
                let facts: StreamFacts = serde_json::from_value(r.facts.clone()).unwrap_or_default();
                RunResult::from_facts(r.run_no, &facts)
            })
            .collect();
        let final_text = results.iter().rev().find_map(|r| r.final_text.clone());
        Ok(TaskView { task, history, messages, events, thread, final_text, results })
    }
}

fn thread(
    d: &Delegate,
    task: &Task,
    history: &[Transition],
    messages: &[Message],
    events: &[Event],
) -> Result<Vec<ThreadItem>> {
    let preview = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let mut cut: String = text.chars().take(PROMPT_PREVIEW_CHARS).collect();
        if text.chars().count() > PROMPT_PREVIEW_CHARS {
            cut.push_str(" …");
        }
        cut
    };
    let mut items = Vec::new();
    for run in &task.runs {
        let prompt =
            if run.run_no == 1 { d.store().prompt(task.id)? } else { d.store().run_prompt(task.id, run.run_no)? };
        items.push(ThreadItem {
            at: run.started_at.clone(),
            kind: if run.run_no == 1 { "prompt" } else { "reopen" },
            run: Some(run.run_no),
            author: run.author.clone(),
            text: preview(&prompt),
            reported_at: None,
        });
    }
    for t in history {
        let text = match &t.reason {
            Some(r) => format!("{} ({r})", t.to),
            None => t.to.clone(),
        };
        items.push(ThreadItem { at: t.at.clone(), kind: "status", run: None, author: None, text, reported_at: None });
    }
    for m in messages {
        let (kind, mut text) = match m.direction.as_str() {
            "to_brother" => ("said", format!("{} → {}: {}", m.author, task.brother, m.text)),
            "note" => ("note", format!("{} ({}): {}", m.author, m.kind, m.text)),
            _ => ("reported", format!("{} ({}): {}", m.author, m.kind, m.text)),
        };
        if m.direction == "to_brother" {
            let state = match (&m.read_at, &m.delivered_at) {
                (Some(r), _) => format!(" [read {r}]"),
                (None, Some(dl)) => format!(" [delivered {dl}]"),
                // A finished task reads no more messages: say so rather than `sent` forever.
                (None, None) if task.status.is_terminal() => " [never delivered: the task ended first]".into(),
                (None, None) => " [sent]".into(),
            };
            text.push_str(&state);
        }
        items.push(ThreadItem {
            at: m.landed_at().to_owned(),
            kind,
            run: Some(m.run_no),
            author: Some(m.author.clone()),
            text,
            reported_at: m.received_at.as_ref().map(|_| m.at.clone()),
        });
    }
    for e in events {
        let text = if e.summary.is_empty() { e.kind.clone() } else { format!("{} {}", e.kind, e.summary) };
        items.push(ThreadItem {
            at: e.landed_at().to_owned(),
            kind: "event",
            run: Some(e.run_no),
            author: None,
            text,
            reported_at: e.received_at.as_ref().map(|_| e.at.clone()),
        });
    }
    // By the lead's clock: a brother's own timestamps cannot move its reports around.
    // Stable: items at the same instant keep the order above (prompt, status, messages, events).
    items.sort_by_cached_key(|i| sort_key(&i.at));
    Ok(items)
}

/// Times compare as text only at one precision: the mailbox writes milliseconds, brothers
/// write microseconds, and `Z` sorts after digits. Pad the fraction to nanoseconds.
fn sort_key(at: &str) -> String {
    let Some(body) = at.strip_suffix('Z') else { return at.to_string() };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    format!("{whole}.{frac:0<9}Z")
}

#[cfg(test)]
mod tests {
    use crate::outcome::{StreamFacts, StreamKind};

    #[test]
    fn run_results_carry_the_answer_the_denials_and_sandbox_warnings() {
        let mut facts = StreamFacts::default();
        facts.feed(StreamKind::Claude, include_bytes!("../../tests/fixtures/streams/synthetic-claude-denied.jsonl"));
        let r = super::RunResult::from_facts(1, &facts);
        assert_eq!(
            r.final_text.as_deref(),
            Some("All 12 tests pass. I could not send the receipt: the report helper was refused.")
        );
        assert_eq!((r.permission_denials, r.denials.len(), r.denials[0].tool.as_str()), (1, 1, "Bash"));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);

        let mut facts = StreamFacts::default();
        facts.feed(
            StreamKind::Claude,
            include_bytes!("../../tests/fixtures/streams/synthetic-claude-sandbox-broken.jsonl"),
        );
        let r = super::RunResult::from_facts(2, &facts);
        assert_eq!(r.sandbox_failed, 2);
        assert_eq!(
            r.warnings,
            [
                "2 tool calls failed because the sandbox could not start on the brother (2 of 2 Bash calls): bwrap: setting up uid map: Permission denied"
            ]
        );
        // No facts yet: nothing to say, nothing invented.
        let r = super::RunResult::from_facts(3, &StreamFacts::default());
        assert_eq!((r.final_text, r.permission_denials, r.warnings.len()), (None, 0, 0));
    }

    #[test]
    fn times_of_different_precision_sort_by_instant() {
        let mut at = vec!["2026-11-21T10:00:41.232713Z", "2026-11-21T10:00:41.232Z", "2026-11-21T10:00:41Z"];
        at.sort_by_cached_key(|a| super::sort_key(a));
        assert_eq!(at, ["2026-11-21T10:00:41Z", "2026-11-21T10:00:41.232Z", "2026-11-21T10:00:41.232713Z"]);
    }
}
