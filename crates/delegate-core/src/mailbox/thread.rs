//! A task as a conversation: the prompt and follow-ups, every message both ways, status
//! changes and agent events, in the order they happened ([`TaskView`], `delegate show`): the
//! whole of it, or a [`Window`] of the newest items with counts of what it left out.

use serde::Serialize;

use crate::agents::outcome::{Denial, StreamFacts};
use crate::error::Result;
use crate::mailbox::{Event, Message, Store, Transition};
use crate::task::Task;

/// Everything known about one task: what `show` prints and the MCP `get_task` returns.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    /// The task and its runs.
    #[serde(flatten)]
    pub task: Task,
    /// Status changes, oldest first (those in the thread's window).
    pub history: Vec<Transition>,
    /// Messages both ways (said, reported) and notes, oldest first (those in the window).
    pub messages: Vec<Message>,
    /// What the agent did (tool calls and the like), as sync read it, oldest first (those in
    /// the window).
    pub events: Vec<Event>,
    /// The prompts and follow-ups, and the newest of the above (all of them with
    /// [`Window::All`]), merged in time order.
    pub thread: Vec<ThreadItem>,
    /// What the window left out: the older items of each kind.
    pub omitted: Omitted,
    /// The agent's final answer in the latest run that has one.
    pub final_text: Option<String>,
    /// What each run's stream said at the end: answer, denied tool calls, warnings.
    pub results: Vec<RunResult>,
    /// Tasks that are part of this one (`--parent`), oldest first, and how many of them
    /// completed.
    pub children: Vec<super::board::Child>,
    pub children_done: usize,
    /// Set by `show` and `get_task` (it needs the brother): why a `completed` task that
    /// was expected to change its workdir should not be believed yet
    /// ([`crate::Delegate::done_without_evidence`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_without_evidence: Option<String>,
}

/// How much of a task's thread a [`TaskView`] holds. A task can have hundreds of thousands of
/// events (a mailbox older than the row caps, or many runs); a view loads only what it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The prompts and follow-ups, and the newest this many other items.
    Newest(usize),
    /// Everything.
    All,
}

/// The thread items `delegate show` and [`crate::Delegate::show`] hold unless asked for all.
pub const SHOW_ITEMS: usize = 200;

/// Older items a [`Window`] left out, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Omitted {
    pub history: u64,
    pub messages: u64,
    pub events: u64,
}

impl Omitted {
    /// Thread items left out, all kinds together.
    pub fn items(&self) -> u64 {
        self.history + self.messages + self.events
    }
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

/// The task with the part of its thread `window` asks for, and counts of what it left out.
/// Only that part is read from the mailbox. [`crate::Delegate::show`] and
/// [`crate::Delegate::show_window`] call this.
pub fn view(store: &Store, id: i64, window: Window) -> Result<TaskView> {
    let task = store.task(id)?;
    let limit = match window {
        Window::Newest(n) => Some(n),
        Window::All => None,
    };
    // The newest `n` of each kind hold the newest `n` of all of them together.
    let (history, history_total) = store.newest_transitions(id, limit)?;
    let (messages, messages_total) = store.newest_messages(id, limit)?;
    let (events, events_total) = store.newest_events(id, limit)?;
    let (thread, kept) = thread(store, &task, &history, &messages, &events, limit)?;
    let history: Vec<Transition> = pick(history, &kept.history);
    let messages: Vec<Message> = pick(messages, &kept.messages);
    let events: Vec<Event> = pick(events, &kept.events);
    let omitted = Omitted {
        history: history_total - history.len() as u64,
        messages: messages_total - messages.len() as u64,
        events: events_total - events.len() as u64,
    };
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
    let children = store.children(id)?;
    let children_done = children.iter().filter(|c| c.status == crate::task::TaskStatus::Completed).count();
    Ok(TaskView {
        task,
        history,
        messages,
        events,
        thread,
        omitted,
        final_text,
        results,
        children,
        children_done,
        done_without_evidence: None,
    })
}

/// The items of `all` whose positions are in `kept` (ascending), in order.
fn pick<T>(all: Vec<T>, kept: &[usize]) -> Vec<T> {
    let mut want = kept.iter().peekable();
    all.into_iter()
        .enumerate()
        .filter(|(i, _)| if want.peek() == Some(&i) { want.next().is_some() } else { false })
        .map(|(_, x)| x)
        .collect()
}

/// Where each thread item came from, to trim the lists to what the thread kept.
#[derive(Clone, Copy)]
enum Source {
    Prompt,
    History(usize),
    Message(usize),
    Event(usize),
}

/// Positions, in each list, of the items the thread kept.
#[derive(Default)]
struct Kept {
    history: Vec<usize>,
    messages: Vec<usize>,
    events: Vec<usize>,
}

fn thread(
    store: &Store,
    task: &Task,
    history: &[Transition],
    messages: &[Message],
    events: &[Event],
    limit: Option<usize>,
) -> Result<(Vec<ThreadItem>, Kept)> {
    let preview = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let mut cut: String = text.chars().take(PROMPT_PREVIEW_CHARS).collect();
        if text.chars().count() > PROMPT_PREVIEW_CHARS {
            cut.push_str(" …");
        }
        cut
    };
    let mut items = Vec::new();
    if task.runs.is_empty() {
        // A backlog task: its prompt waits for its first run.
        let item = ThreadItem {
            at: task.created_at.clone(),
            kind: "prompt",
            run: None,
            author: None,
            text: preview(&store.prompt(task.id)?),
            reported_at: None,
        };
        items.push((Source::Prompt, item));
    }
    for run in &task.runs {
        let prompt = if run.run_no == 1 { store.prompt(task.id)? } else { store.run_prompt(task.id, run.run_no)? };
        items.push((
            Source::Prompt,
            ThreadItem {
                at: run.started_at.clone(),
                kind: if run.run_no == 1 { "prompt" } else { "reopen" },
                run: Some(run.run_no),
                author: run.author.clone(),
                text: preview(&prompt),
                reported_at: None,
            },
        ));
    }
    for (i, t) in history.iter().enumerate() {
        let text = match &t.reason {
            Some(r) => format!("{} ({r})", t.to),
            None => t.to.clone(),
        };
        let item = ThreadItem { at: t.at.clone(), kind: "status", run: None, author: None, text, reported_at: None };
        items.push((Source::History(i), item));
    }
    for (i, m) in messages.iter().enumerate() {
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
        items.push((
            Source::Message(i),
            ThreadItem {
                at: m.landed_at().to_owned(),
                kind,
                run: Some(m.run_no),
                author: Some(m.author.clone()),
                text,
                reported_at: m.received_at.as_ref().map(|_| m.at.clone()),
            },
        ));
    }
    for (i, e) in events.iter().enumerate() {
        let text = if e.summary.is_empty() { e.kind.clone() } else { format!("{} {}", e.kind, e.summary) };
        items.push((
            Source::Event(i),
            ThreadItem {
                at: e.landed_at().to_owned(),
                kind: "event",
                run: Some(e.run_no),
                author: None,
                text,
                reported_at: e.received_at.as_ref().map(|_| e.at.clone()),
            },
        ));
    }
    // By the lead's clock: a brother's own timestamps cannot move its reports around.
    // Stable: items at the same instant keep the order above (prompt, status, messages, events).
    items.sort_by_cached_key(|(_, i)| sort_key(&i.at));
    // The newest `limit` items that are not prompts; the prompts always stay.
    let mut room = limit.unwrap_or(usize::MAX);
    let mut keep = vec![false; items.len()];
    for (k, (source, _)) in items.iter().enumerate().rev() {
        if matches!(source, Source::Prompt) {
            keep[k] = true;
        } else if room > 0 {
            keep[k] = true;
            room -= 1;
        }
    }
    let mut kept = Kept::default();
    let mut thread = Vec::with_capacity(items.len());
    for ((source, item), keep) in items.into_iter().zip(keep) {
        if !keep {
            continue;
        }
        match source {
            Source::Prompt => {}
            Source::History(i) => kept.history.push(i),
            Source::Message(i) => kept.messages.push(i),
            Source::Event(i) => kept.events.push(i),
        }
        thread.push(item);
    }
    // Sorting by time may interleave a list's own order in rare clock cases: keep each ascending.
    kept.history.sort_unstable();
    kept.messages.sort_unstable();
    kept.events.sort_unstable();
    Ok((thread, kept))
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
    use crate::agents::outcome::{StreamFacts, StreamKind};

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
    fn a_window_holds_the_prompt_and_the_newest_items_and_counts_the_rest() {
        use super::{Window, pick};
        use crate::mailbox::{Ingest, NewEvent, NewTask};
        use crate::{Delegate, Paths, Sandbox, TaskStatus};
        let dir = std::env::temp_dir().join(format!("dlg-thread-window-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut d = Delegate::open(Paths {
            config_file: dir.join("config.toml"),
            data_dir: dir.join("data"),
            home: dir.clone(),
            local_user: "ian".into(),
            ssh_config: dir.join(".ssh/config"),
            agent_socket: None,
        })
        .unwrap();
        let task = d
            .store_mut()
            .create_task(&NewTask {
                brother: "oppy",
                host: "h",
                address: "a",
                subject: "s",
                agent: "claude",
                model: None,
                sandbox: Sandbox::Read,
                max_turns: 5,
                workdir: "/w",
                prompt: b"the prompt",
                prompt_sha256: "x",
                timeout_secs: 60,
                author: "ian",
                caps: Default::default(),
                options: &Default::default(),
                settings: &serde_json::Value::Null,
                priority: Default::default(),
                parent: None,
                notify: None,
            })
            .unwrap()
            .task_id;
        let event =
            |n: usize| NewEvent { at: String::new(), kind: "tool".into(), summary: format!("e{n}"), data: None };
        let ing = Ingest {
            task_id: task,
            run_no: 1,
            expected_version: 1,
            events: (0..300).map(event).collect(),
            ..Default::default()
        };
        d.store_mut().apply_sync(&[ing]).unwrap();
        // Later than every event (the mailbox's clock has milliseconds).
        std::thread::sleep(std::time::Duration::from_millis(5));
        d.store_mut().add_note(task, "ian", "output", "the last word").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        d.store_mut().transition(task, 1, TaskStatus::Failed, Some("by hand")).unwrap();

        let v = d.show_window(task, Window::Newest(10)).unwrap();
        let kinds: Vec<&str> = v.thread.iter().map(|i| i.kind).collect();
        assert_eq!(kinds[0], "prompt");
        assert_eq!(v.thread.len(), 11, "{kinds:?}");
        assert_eq!(v.thread[v.thread.len() - 2].text, "ian (output): the last word");
        assert_eq!(v.thread.last().unwrap().text, "failed (by hand)");
        // Eight events, the note and the newest status change are in; the lists match the thread.
        assert_eq!((v.events.len(), v.messages.len(), v.history.len()), (8, 1, 1));
        assert_eq!(v.events.last().unwrap().summary, "e299");
        assert_eq!((v.omitted.events, v.omitted.messages, v.omitted.history), (292, 0, 1));
        assert_eq!(v.omitted.items(), 293);

        let all = d.show_window(task, Window::All).unwrap();
        assert_eq!((all.thread.len(), all.events.len(), all.omitted.items()), (1 + 2 + 300 + 1, 300, 0));
        assert_eq!(d.show(task).unwrap().thread.len(), 1 + super::SHOW_ITEMS);
        assert_eq!(pick(vec!['a', 'b', 'c', 'd'], &[1, 3]), ['b', 'd']);
        drop(d);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn times_of_different_precision_sort_by_instant() {
        let mut at = vec!["2026-11-21T10:00:41.232713Z", "2026-11-21T10:00:41.232Z", "2026-11-21T10:00:41Z"];
        at.sort_by_cached_key(|a| super::sort_key(a));
        assert_eq!(at, ["2026-11-21T10:00:41Z", "2026-11-21T10:00:41.232Z", "2026-11-21T10:00:41.232713Z"]);
    }
}
