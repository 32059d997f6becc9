//! A task as a conversation: the prompt and follow-ups, every message both ways, status
//! changes and agent events, in the order they happened ([`TaskView`], `delegate show`).

use serde::Serialize;

use crate::delegate::Delegate;
use crate::error::Result;
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
}

/// One line of a task's thread.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadItem {
    /// When it happened (RFC 3339, UTC).
    pub at: String,
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
        Ok(TaskView { task, history, messages, events, thread })
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
        });
    }
    for t in history {
        let text = match &t.reason {
            Some(r) => format!("{} ({r})", t.to),
            None => t.to.clone(),
        };
        items.push(ThreadItem { at: t.at.clone(), kind: "status", run: None, author: None, text });
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
                (None, None) => " [sent]".into(),
            };
            text.push_str(&state);
        }
        items.push(ThreadItem { at: m.at.clone(), kind, run: Some(m.run_no), author: Some(m.author.clone()), text });
    }
    for e in events {
        let text = if e.summary.is_empty() { e.kind.clone() } else { format!("{} {}", e.kind, e.summary) };
        items.push(ThreadItem { at: e.at.clone(), kind: "event", run: Some(e.run_no), author: None, text });
    }
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
    #[test]
    fn times_of_different_precision_sort_by_instant() {
        let mut at = vec!["2026-11-21T10:00:41.232713Z", "2026-11-21T10:00:41.232Z", "2026-11-21T10:00:41Z"];
        at.sort_by_cached_key(|a| super::sort_key(a));
        assert_eq!(at, ["2026-11-21T10:00:41Z", "2026-11-21T10:00:41.232Z", "2026-11-21T10:00:41.232713Z"]);
    }
}
