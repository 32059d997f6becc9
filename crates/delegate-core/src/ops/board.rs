//! The board's operations: record a task without launching it (`new`) and launch it later
//! (`start`, through the queue, exactly as a task waiting for a slot is launched); comment;
//! the board itself and moves between review and done (`move`, `review`); a parent's
//! children for `wait --children`.

use crate::column::Column;
use crate::delegate::Delegate;
use crate::error::{Error, Result};
use crate::mailbox::board::{Assignment, Card, NewDraft};
use crate::ops::launch::{LaunchRequest, Settings, check_prompt, clean_subject, dispatch_queued, settings, sha256_hex};
use crate::roles::Action;
use crate::task::{Priority, Task, TaskStatus};

/// A task to record in the backlog.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    /// One line: the task's subject, and the first line of its prompt.
    pub title: String,
    /// The rest of the prompt, after a blank line.
    pub description: Option<String>,
    pub priority: Option<Priority>,
    pub parent: Option<i64>,
    /// A brother from the inventory; may be left for `start`.
    pub assign: Option<String>,
    /// Who records it; default the local user.
    pub author: Option<String>,
    /// A `[profiles.NAME]` that `start` launches it with (checked now: an unknown one is
    /// refused before anything is recorded).
    pub profile: Option<String>,
}

/// The longest comment kept, as for `say` (it is read in terminals and by lead agents).
pub const MAX_COMMENT_BYTES: usize = crate::ops::say::MAX_SAY_BYTES;

/// A comment or review note: not empty, and no longer than a `say`.
fn check_comment(text: &str, what: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::CommentRefused { why: format!("{what} is empty: give its text as an argument") });
    }
    if text.len() > MAX_COMMENT_BYTES {
        return Err(Error::CommentRefused {
            why: format!(
                "{what} is {} bytes, over the {MAX_COMMENT_BYTES}-byte limit: put the material in a file and refer to it",
                text.len()
            ),
        });
    }
    Ok(())
}

/// The prompt a draft's agent reads: the title, then the description.
fn draft_prompt(d: &Draft) -> Vec<u8> {
    match &d.description {
        Some(text) => format!("{}\n\n{text}", d.title).into_bytes(),
        None => d.title.clone().into_bytes(),
    }
}

impl Delegate {
    /// Records a task in the backlog: nothing is sent, and no sync or dispatcher starts it;
    /// [`Delegate::start`] does.
    pub fn create_draft(&mut self, draft: Draft) -> Result<Task> {
        let author = self.identity(draft.author.as_deref());
        self.authorize(&author, Action::Create, None)?;
        let prompt = draft_prompt(&draft);
        check_prompt(&prompt)?;
        if let Some(p) = &draft.profile {
            self.inventory().profile(p)?;
        }
        let assigned = match &draft.assign {
            Some(name) => Some((name.as_str(), self.inventory().brother(name)?.0.host.clone())),
            None => None,
        };
        let id = self.store_mut().create_draft(&NewDraft {
            subject: &clean_subject(&draft.title),
            prompt: &prompt,
            prompt_sha256: &sha256_hex(&prompt),
            priority: draft.priority.unwrap_or_default(),
            parent: draft.parent,
            assigned: assigned.as_ref().map(|(b, h)| (*b, h.as_str())),
            author: &author,
            profile: draft.profile.as_deref(),
        })?;
        self.task(id)
    }

    /// Launches a backlog task on its brother (`assign`, else the one it was recorded
    /// with), with the brother's settings as the inventory says now. It goes through the
    /// queue: over a concurrency cap it stays `queued` and starts when a slot frees up.
    pub async fn start(&mut self, id: i64, assign: Option<String>, author: Option<String>) -> Result<Task> {
        let author = self.identity(author.as_deref());
        self.authorize(&author, Action::Launch, None)?;
        let task = self.task(id)?;
        if task.status != TaskStatus::Backlog {
            return Err(Error::NotStartable {
                task: id,
                why: format!(
                    "it is {}, not in the backlog: it was started already (`delegate show {id}`; a finished task \
                     is followed up with `delegate reopen {id}`)",
                    task.status
                ),
            });
        }
        let brother = assign.or_else(|| Some(task.brother.clone()).filter(|b| !b.is_empty())).ok_or_else(|| {
            Error::NotStartable {
                task: id,
                why: format!("no brother is assigned: name one with `delegate start {id} --assign BROTHER`"),
            }
        })?;
        // The profile it was recorded with, else (as for any launch) the brother's default.
        let profile = self.store().draft_profile(id)?;
        let Settings {
            host_name,
            agent_name,
            model,
            sandbox,
            max_turns,
            timeout,
            mut workdir,
            options,
            mut sources,
            notify,
            worktree,
        } = settings(self, &LaunchRequest { brother: brother.clone(), profile, ..Default::default() })?;
        let address = self.reach(&host_name)?.address();
        // A worktree profile or brother: the task starts in its own worktree, as a launch's.
        if worktree {
            let key = crate::ops::sync::task_key(self.store().mailbox_id(), id, 1);
            let path = format!("{}/worktrees/{key}", self.remote_root(&host_name)?.trim_end_matches('/'));
            sources["worktree_of"] = serde_json::json!({ "value": workdir, "from": "worktree" });
            workdir = path;
        }
        self.store_mut().start_draft(
            id,
            &Assignment {
                brother: &brother,
                host: &host_name,
                address: &address,
                agent: &agent_name,
                model: model.as_deref(),
                sandbox,
                max_turns,
                workdir: &workdir,
                timeout_secs: timeout.as_secs(),
                author: &author,
                options: &options,
                settings: &sources,
                notify: notify.as_deref(),
            },
        )?;
        for result in dispatch_queued(self).await? {
            match result {
                Ok(t) if t.id == id => return Ok(t),
                Err(e) if e.task_id() == Some(id) => return Err(e),
                _ => {}
            }
        }
        // Still queued (no free slot), or refused before sending (the task says why).
        self.task(id)
    }

    /// Adds a comment to a task's thread, by `author`; any task, in any state. Nothing is
    /// sent to the brother (that is `say`).
    pub fn comment(&mut self, id: i64, author: &str, text: &str) -> Result<()> {
        self.authorize(author, Action::Comment, None)?;
        check_comment(text, "the comment")?;
        self.task(id)?;
        self.store_mut().add_note(id, author, "comment", text)
    }

    /// A reviewer's verdict on a finished task waiting for review. `accept` moves it to
    /// done; `reject` records the note and reopens the task with the note as its follow-up
    /// (refused with [`Error::NotResumable`] when the agent cannot resume: the verdict is
    /// kept and the task stays in review). Either way the note is in the thread.
    pub async fn review(&mut self, id: i64, accept: bool, note: Option<&str>, author: &str) -> Result<Task> {
        self.authorize(author, Action::Review, None)?;
        let task = self.task(id)?;
        let column = Column::of(task.status, self.store().is_accepted(id)?);
        if column != Column::Review {
            return Err(Error::NotInReview { task: id, column: column.to_string() });
        }
        if let Some(text) = note {
            check_comment(text, "the review note")?;
        }
        if accept {
            self.store_mut().move_card(id, task.version, Column::Done, author)?;
            let text = note.map(|n| format!("accepted: {n}")).unwrap_or_else(|| "accepted".into());
            self.store_mut().add_note(id, author, "review", &text)?;
            return self.task(id);
        }
        let Some(note) = note else {
            return Err(Error::CommentRefused {
                why: "a rejection needs a note: it is the agent's follow-up (what to change)".into(),
            });
        };
        self.store_mut().add_note(id, author, "review", &format!("rejected: {note}"))?;
        // The review role covers sending the task back: not checked again as an update.
        crate::ops::reopen::reopen(
            self,
            crate::ops::reopen::ReopenRequest {
                task: id,
                prompt: note.as_bytes().to_vec(),
                write_scope: Vec::new(),
                author: author.to_string(),
            },
        )
        .await
    }
}

/// Which cards [`Delegate::board_of`] shows.
#[derive(Debug, Clone, Copy)]
pub struct BoardFilter<'a> {
    pub brother: Option<&'a str>,
    /// Only the tasks this identity created or that run on the brother of its name.
    pub mine: Option<&'a str>,
    /// Only this column.
    pub column: Option<Column>,
    /// At most this many cards per column (the count says how many there are).
    pub limit: usize,
}

impl Default for BoardFilter<'_> {
    fn default() -> Self {
        BoardFilter { brother: None, mine: None, column: None, limit: usize::MAX }
    }
}

/// One column of the board and its cards, in board order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BoardColumn {
    pub column: Column,
    /// How many tasks are in the column (the cards shown may be fewer: the limit).
    pub count: usize,
    pub cards: Vec<Card>,
}

impl Delegate {
    /// The board: every column, in order (the needs-you lane among them), each with its
    /// cards by priority then age, at most `limit` per column.
    pub fn board(&self, brother: Option<&str>, limit: usize) -> Result<Vec<BoardColumn>> {
        self.board_of(&BoardFilter { brother, limit, ..Default::default() })
    }

    /// [`Delegate::board`], narrowed: one brother's tasks, the tasks of one identity
    /// (created by it, or run on the brother of its name), one column.
    pub fn board_of(&self, f: &BoardFilter) -> Result<Vec<BoardColumn>> {
        let mut columns: Vec<BoardColumn> = Column::ALL
            .into_iter()
            .filter(|c| f.column.is_none_or(|only| only == *c))
            .map(|column| BoardColumn { column, count: 0, cards: Vec::new() })
            .collect();
        let limit = f.limit;
        for card in self.store().cards(f.brother, f.mine)? {
            let Some(c) = columns.iter_mut().find(|c| c.column == card.column) else { continue };
            c.count += 1;
            if c.cards.len() < limit {
                c.cards.push(card);
            }
        }
        Ok(columns)
    }

    /// Moves a task on the board if it is still at `version` (else [`Error::StaleVersion`]:
    /// re-read and decide again). Only review and done are moved by hand.
    pub fn move_task(&mut self, id: i64, to: Column, version: i64, author: &str) -> Result<Card> {
        self.authorize(author, Action::Move, None)?;
        self.store_mut().move_card(id, version, to, author)
    }

    /// How many finished tasks wait for somebody's review.
    pub fn review_count(&self) -> Result<usize> {
        self.store().review_count()
    }

    /// Deletes a task and its whole record (runs, thread, events) from the mailbox: a
    /// manager's, and only a backlog or finished task, so no agent is left running with
    /// nobody tracking it ([`Error::DeleteInFlight`]). A task others are part of is refused
    /// ([`Error::DeleteHasChildren`]). The brother's task directory is left as it is.
    pub fn delete(&mut self, id: i64, who: &str) -> Result<Task> {
        self.authorize(who, Action::Delete, None)?;
        let task = self.task(id)?;
        if !(task.status == TaskStatus::Backlog || task.status.is_terminal()) {
            return Err(Error::DeleteInFlight { task: id, status: task.status.to_string() });
        }
        // At the version read: a `start` or a reopen that got in first keeps the task.
        self.store_mut().delete_task(id, task.version)?;
        Ok(task)
    }

    /// The tasks that are part of `id` (`--parent id`), oldest first, for waiting on them as
    /// a whole. A task with none is [`Error::NoChildren`]: waiting on nothing would return
    /// at once and say all completed.
    pub fn children_of(&self, id: i64) -> Result<Vec<i64>> {
        self.task(id)?;
        let children: Vec<i64> = self.store().children(id)?.iter().map(|c| c.id).collect();
        if children.is_empty() {
            return Err(Error::NoChildren { task: id });
        }
        Ok(children)
    }
}
