//! Needs you: the questions agents asked across every brother (the report helper's
//! `question`, Claude's permission denials, a task in `needs_input`), oldest first, and the
//! answer that reaches the agent: like `say` while it runs, or resuming it with the answer
//! (like `reopen`) once it has stopped. The answer is a note in the thread, by its author,
//! and that note is what takes the question out of the inbox ([`crate::mailbox::inbox`]).

use serde::Serialize;

use crate::agents::outcome::StreamFacts;
use crate::delegate::Delegate;
use crate::error::{Error, Result};
use crate::mailbox::inbox::{ItemKind, OpenItem};
use crate::sanitize::{clean_line, clip, printable};
use crate::task::{Task, TaskStatus};

/// The most of a question shown (a brother could report megabytes).
pub const MAX_QUESTION_CHARS: usize = 2000;
/// The most denied calls listed in one question.
const MAX_DENIALS_SHOWN: usize = 5;

/// What the agent is waiting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuestionKind {
    /// The report helper's `question`.
    Question,
    /// Tool calls Claude was refused (permission denials) in a run that then ended.
    PermissionDenial,
    /// The task is in `needs_input` (the agent says it waits for input).
    NeedsInput,
}

/// One entry of the inbox.
#[derive(Debug, Clone, Serialize)]
pub struct Question {
    pub task: i64,
    pub brother: String,
    pub subject: String,
    pub status: TaskStatus,
    pub run: i64,
    pub kind: QuestionKind,
    /// From the brother: escape sequences and controls removed (newlines kept), at most
    /// [`MAX_QUESTION_CHARS`] characters.
    pub question: String,
    /// When the lead learned of it (the lead's clock).
    pub asked_at: String,
    /// Seconds since then.
    pub age_secs: u64,
    /// The report's message id, for a `question`.
    pub message_id: Option<i64>,
}

/// What an answer did.
#[derive(Debug, Clone, Serialize)]
pub struct Answered {
    pub task: i64,
    /// `said` (the running agent gets it like a `say`) or `reopened` (a new run resumes the
    /// agent with the answer as its prompt).
    pub delivery: &'static str,
    /// The `say` message's id, when said.
    pub message_id: Option<i64>,
    /// The new run, when reopened.
    pub run: Option<i64>,
    /// How many open questions it answered.
    pub answered: usize,
    pub author: String,
}

fn question_of(item: OpenItem, now: std::time::SystemTime) -> Question {
    let (kind, text) = match &item.kind {
        ItemKind::Question => (QuestionKind::Question, printable(&item.text)),
        ItemKind::Denials(facts) => (QuestionKind::PermissionDenial, denials_text(facts)),
        ItemKind::NeedsInput(last) => (
            QuestionKind::NeedsInput,
            match last {
                Some(e) => format!("the agent is waiting for input (last: {})", clean_line(e, 300)),
                None => "the agent is waiting for input".to_string(),
            },
        ),
    };
    let age_secs = humantime::parse_rfc3339(&item.asked_at)
        .ok()
        .and_then(|t| now.duration_since(t).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Question {
        task: item.task,
        brother: item.brother,
        subject: item.subject,
        status: item.status,
        run: item.run,
        kind,
        question: clip(text.trim(), MAX_QUESTION_CHARS),
        asked_at: item.asked_at,
        age_secs,
        message_id: item.message_id,
    }
}

/// "N tool calls were denied: Bash `rm -rf x`, ...": what was refused, so the answer can
/// say what to do instead.
fn denials_text(facts: &str) -> String {
    let facts: StreamFacts = serde_json::from_str(facts).unwrap_or_default();
    let Some(result) = facts.result else { return "tool calls were denied".into() };
    let shown: Vec<String> = result
        .denials
        .iter()
        .take(MAX_DENIALS_SHOWN)
        .map(|d| format!("{} `{}`", clean_line(&d.tool, 64), clean_line(&d.input, 200)))
        .collect();
    let more = (result.permission_denials as usize).saturating_sub(shown.len());
    let more = if more > 0 { format!(", and {more} more") } else { String::new() };
    format!("{} tool call(s) were denied: {}{more}", result.permission_denials, shown.join(", "))
}

impl Delegate {
    /// The questions agents asked and nobody answered, across every brother (only
    /// `brother`'s if given), oldest first. What the mailbox knows: sync first for the latest.
    pub fn inbox(&self, brother: Option<&str>) -> Result<Vec<Question>> {
        let now = std::time::SystemTime::now();
        let mut questions: Vec<Question> =
            self.store().open_inbox_items(brother)?.into_iter().map(|i| question_of(i, now)).collect();
        questions.sort_by(|a, b| a.asked_at.cmp(&b.asked_at).then(a.task.cmp(&b.task)));
        Ok(questions)
    }

    /// Answers every open question of task `id` with `text`, by `author`: a running agent
    /// gets it like a `say`; a stopped one is resumed with it (like `reopen`; an agent that
    /// cannot resume is [`Error::NotResumable`], nothing recorded). A task with nothing open
    /// is [`Error::NothingToAnswer`]. The answer is then a note in the thread, which takes
    /// the questions out of the inbox.
    pub async fn answer(&mut self, id: i64, text: &str, author: &str) -> Result<Answered> {
        // Checked before anything is sent or recorded, the same limits on either path.
        if text.trim().is_empty() {
            return Err(Error::PromptEmpty);
        }
        if text.len() > crate::ops::say::MAX_SAY_BYTES {
            return Err(Error::PromptTooLarge { bytes: text.len(), limit: crate::ops::say::MAX_SAY_BYTES });
        }
        let task: Task = self.task(id)?;
        let open = self.store().open_inbox_items(None)?.into_iter().filter(|i| i.task == id).count();
        if open == 0 {
            return Err(Error::NothingToAnswer { task: id, status: task.status.to_string() });
        }
        let mut answered = Answered {
            task: id,
            delivery: "said",
            message_id: None,
            run: None,
            answered: open,
            author: author.to_string(),
        };
        if task.status.is_terminal() {
            let reopened = self
                .reopen(crate::ops::reopen::ReopenRequest {
                    task: id,
                    prompt: text.as_bytes().to_vec(),
                    write_scope: Vec::new(),
                    author: author.to_string(),
                })
                .await;
            // A reopen that recorded its run and then failed still carries the answer.
            let run = match reopened {
                Ok(t) => t.runs.last().map(|r| r.run_no),
                Err(e) if self.task(id)?.runs.len() > task.runs.len() => {
                    self.store_mut().add_note(id, author, "answer", text)?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            answered.delivery = "reopened";
            answered.run = run;
        } else {
            let before = self.store().last_message_id(id)?;
            match self.say(id, text, author).await {
                Ok(m) => answered.message_id = Some(m.id),
                // Recorded but not sent (the host did not answer): the next sync sends it, so
                // the question is answered; the error still says what happened.
                Err(e) if self.store().last_message_id(id)? > before => {
                    self.store_mut().add_note(id, author, "answer", text)?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
        self.store_mut().add_note(id, author, "answer", text)?;
        Ok(answered)
    }
}
