//! The needs-you inbox's part of the store: the questions agents asked that nobody has
//! answered yet. Nothing is stored for the inbox itself: a question is open or answered by
//! what the thread already holds, so it can never disagree with the thread.
//!
//! - A `question` report from the brother is open until an `answer` note follows it in the
//!   same task (a higher message id), or a later run exists (a reopen followed it up).
//! - Claude's permission denials of a task's latest run are open while the task is finished,
//!   not accepted and not cancelled: answering reopens it, so the denials are no longer the
//!   latest run's.
//! - A task in `needs_input` with no open question is open until an `answer` note recorded at
//!   or after it entered that state.

use rusqlite::params;

use super::{Store, parse_col};
use crate::error::Result;
use crate::task::TaskStatus;

/// One open item as the store holds it; [`crate::ops::inbox`] turns it into a question.
#[derive(Debug, Clone)]
pub struct OpenItem {
    pub task: i64,
    pub brother: String,
    pub subject: String,
    pub status: TaskStatus,
    pub run: i64,
    pub kind: ItemKind,
    /// The brother's text (a report's, or the denied calls'); cleaned by the caller.
    pub text: String,
    /// When the lead learned of it (the lead's clock).
    pub asked_at: String,
    pub message_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKind {
    Question,
    /// The run's facts JSON, read by the caller (it knows the denials' shape).
    Denials(String),
    /// The task's last event, if any.
    NeedsInput(Option<String>),
}

/// One inbox row; every query selects task, brother, subject, status, run, question text,
/// asked at and message id (NULL where they have none), then what its `kind` is made from.
fn open_item(r: &rusqlite::Row, kind: ItemKind) -> rusqlite::Result<OpenItem> {
    Ok(OpenItem {
        task: r.get(0)?,
        brother: r.get(1)?,
        subject: r.get(2)?,
        status: parse_col(r, 3)?,
        run: r.get(4)?,
        kind,
        text: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
        asked_at: r.get(6)?,
        message_id: r.get(7)?,
    })
}

impl Store {
    /// The id of the task's newest message (0 when it has none).
    pub fn last_message_id(&self, task: i64) -> Result<i64> {
        Ok(self.conn.query_row("SELECT coalesce(max(id), 0) FROM messages WHERE task_id = ?1", [task], |r| r.get(0))?)
    }

    /// Moves a just-recorded task into the git worktree it runs in (`--worktree`), with
    /// its settings naming the workdir the worktree comes from.
    pub fn move_to_worktree(&mut self, task: i64, worktree: &str, settings: &serde_json::Value) -> Result<()> {
        self.conn.execute(
            "UPDATE tasks SET workdir = ?2, settings = ?3 WHERE id = ?1",
            rusqlite::params![task, worktree, settings.to_string()],
        )?;
        Ok(())
    }

    /// How many reports the brother's agent wrote for the task beyond its receipt (which
    /// the agent sends before any work): progress, done, status, questions, artifacts.
    pub fn reports_beyond_receipt(&self, task: i64) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM messages WHERE task_id = ?1 AND direction = 'from_brother' AND kind <> 'receipt'",
            [task],
            |r| r.get(0),
        )?)
    }

    /// Every open item, only `brother`'s if given, in no particular order.
    pub fn open_inbox_items(&self, brother: Option<&str>) -> Result<Vec<OpenItem>> {
        let mut items = Vec::new();
        let mut st = self.conn.prepare(
            "SELECT m.task_id, t.brother, t.subject, t.status, m.run_no, m.text, coalesce(m.received_at, m.at), m.id
             FROM messages m JOIN tasks t ON t.id = m.task_id
             WHERE m.direction = 'from_brother' AND m.kind = 'question'
               AND t.accepted_at IS NULL AND t.status <> 'cancelled'
               AND (?1 IS NULL OR t.brother = ?1)
               AND m.run_no = (SELECT max(run_no) FROM runs WHERE task_id = m.task_id)
               AND NOT EXISTS (SELECT 1 FROM messages a
                               WHERE a.task_id = m.task_id AND a.direction = 'note' AND a.kind = 'answer'
                                 AND a.id > m.id)",
        )?;
        let rows = st.query_map([brother], |r| open_item(r, ItemKind::Question))?;
        for row in rows {
            items.push(row?);
        }

        let mut st = self.conn.prepare(
            "SELECT t.id, t.brother, t.subject, t.status, r.run_no, NULL,
                    coalesce((SELECT max(at) FROM transitions WHERE task_id = t.id), t.updated_at), NULL, r.facts
             FROM tasks t JOIN runs r ON r.task_id = t.id
             WHERE r.run_no = (SELECT max(run_no) FROM runs WHERE task_id = t.id)
               AND t.accepted_at IS NULL AND t.status <> 'cancelled'
               AND (?1 IS NULL OR t.brother = ?1)
               AND json_valid(r.facts) AND coalesce(json_extract(r.facts, '$.result.permission_denials'), 0) > 0",
        )?;
        let rows = st.query_map([brother], |r| open_item(r, ItemKind::Denials(r.get(8)?)))?;
        for row in rows {
            let item = row?;
            // A run still going may be denied something and work around it; only a finished
            // one waits for a person.
            if item.status.is_terminal() {
                items.push(item);
            }
        }

        let mut st = self.conn.prepare(
            "SELECT t.id, t.brother, t.subject, t.status, coalesce((SELECT max(run_no) FROM runs WHERE task_id = t.id), 1),
                    NULL, w.at, NULL, t.last_event
             FROM tasks t
             JOIN (SELECT task_id, max(at) AS at FROM transitions WHERE to_status = 'needs_input' GROUP BY task_id) w
               ON w.task_id = t.id
             WHERE t.status = 'needs_input' AND (?1 IS NULL OR t.brother = ?1)
               AND NOT EXISTS (SELECT 1 FROM messages a
                               WHERE a.task_id = t.id AND a.direction = 'note' AND a.kind = 'answer' AND a.at >= w.at)",
        )?;
        let rows = st.query_map(params![brother], |r| open_item(r, ItemKind::NeedsInput(r.get(8)?)))?;
        for row in rows {
            let item = row?;
            // The question the agent asked says more than the state it is in.
            if !items.iter().any(|q| q.task == item.task && q.kind == ItemKind::Question) {
                items.push(item);
            }
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::tests::{new_task, temp_dir};

    fn ask(s: &Store, task: i64, text: &str) -> i64 {
        s.conn
            .execute(
                "INSERT INTO messages (task_id, run_no, direction, author, seq, kind, text, at, received_at)
                 VALUES (?1, 1, 'from_brother', 'oppy', (SELECT count(*) FROM messages), 'question', ?2,
                         strftime('%Y-%m-%dT%H:%M:%fZ'), strftime('%Y-%m-%dT%H:%M:%fZ'))",
                params![task, text],
            )
            .unwrap();
        s.conn.last_insert_rowid()
    }

    fn open_texts(s: &Store) -> Vec<(i64, String)> {
        let mut v: Vec<(i64, String)> = s
            .open_inbox_items(None)
            .unwrap()
            .into_iter()
            .map(|i| (i.task, if i.kind == ItemKind::Question { i.text } else { format!("{:?}", i.kind) }))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn an_answer_closes_the_questions_before_it_and_a_later_question_is_open_again() {
        let dir = temp_dir("inbox-answers");
        let mut s = Store::open(&dir).unwrap();
        let a = s.create_task(&new_task(b"a")).unwrap().task_id;
        let b = s.create_task(&new_task(b"b")).unwrap().task_id;
        ask(&s, a, "first?");
        ask(&s, a, "second?");
        ask(&s, b, "other task?");
        assert_eq!(open_texts(&s), [(a, "first?".into()), (a, "second?".into()), (b, "other task?".into())]);
        // An answer to a answers both of its questions, not b's.
        s.add_note(a, "ian", "answer", "yes").unwrap();
        assert_eq!(open_texts(&s), [(b, "other task?".into())]);
        // A comment is not an answer; a question after the answer is open.
        s.add_note(b, "ian", "comment", "looking").unwrap();
        ask(&s, a, "third?");
        assert_eq!(open_texts(&s), [(a, "third?".into()), (b, "other task?".into())]);
        assert_eq!(open_texts(&Store::open(&dir).unwrap()).len(), 2, "nothing about the inbox lives in memory");
        // Only a brother's filter.
        assert!(s.open_inbox_items(Some("jerry")).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn waiting_for_input_is_open_until_an_answer_recorded_after_it_began() {
        let dir = temp_dir("inbox-waiting");
        let mut s = Store::open(&dir).unwrap();
        let id = s.create_task(&new_task(b"a")).unwrap().task_id;
        s.add_note(id, "ian", "answer", "an answer before it waited").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let v = s.task(id).unwrap().version;
        s.transition(id, v, TaskStatus::NeedsInput, None).unwrap();
        assert_eq!(open_texts(&s), [(id, "NeedsInput(None)".into())]);
        // A question says more than the state: listed once, as the question.
        ask(&s, id, "which?");
        assert_eq!(open_texts(&s), [(id, "which?".into())]);
        s.add_note(id, "ian", "answer", "this one").unwrap();
        assert!(open_texts(&s).is_empty(), "{:?}", open_texts(&s));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
