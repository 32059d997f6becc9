//! The board's part of the store: tasks recorded without launching (`backlog`), started
//! later by handing them to the queue, and the parent/child links between tasks.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::{Store, now, parse_col, random_hex, transition_in};
use crate::column::{Column, refuse_move};
use crate::error::{Error, Result};
use crate::task::{Priority, Sandbox, TaskStatus};

/// A task to record without launching it.
pub struct NewDraft<'a> {
    pub subject: &'a str,
    pub prompt: &'a [u8],
    pub prompt_sha256: &'a str,
    pub priority: Priority,
    pub parent: Option<i64>,
    /// The brother and its host, when assigned already.
    pub assigned: Option<(&'a str, &'a str)>,
    pub author: &'a str,
    /// The `[profiles.NAME]` that `start` launches it with.
    pub profile: Option<&'a str>,
}

/// What a backlog task needs to start: the brother's settings as the inventory says now.
pub struct Assignment<'a> {
    pub brother: &'a str,
    pub host: &'a str,
    pub address: &'a str,
    pub agent: &'a str,
    pub model: Option<&'a str>,
    pub sandbox: Sandbox,
    pub max_turns: u32,
    pub workdir: &'a str,
    pub timeout_secs: u64,
    pub author: &'a str,
    /// Reasoning effort, spend limit, extra arguments, credential file (as for a launch).
    pub options: &'a crate::agents::AgentOptions,
    /// Each setting's value and source ([`crate::ops::settings::evidence`]).
    pub settings: &'a serde_json::Value,
    /// The task's notification plan ([`crate::notify::Plan`] as JSON), if any.
    pub notify: Option<&'a str>,
}

/// A child task as its parent's `show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Child {
    pub id: i64,
    pub status: TaskStatus,
    pub priority: Priority,
    pub subject: String,
}

/// A parent must exist when the link is made (the foreign key alone would fail with
/// SQLite's bare "FOREIGN KEY constraint failed").
pub(super) fn check_parent(tx: &rusqlite::Connection, parent: Option<i64>) -> Result<()> {
    let Some(parent) = parent else { return Ok(()) };
    let found: Option<i64> = tx.query_row("SELECT id FROM tasks WHERE id = ?1", [parent], |r| r.get(0)).optional()?;
    found.map(|_| ()).ok_or(Error::NoSuchParent { parent })
}

impl Store {
    /// Records a task in `backlog`: no run, nothing sent. An unassigned draft has an empty
    /// brother and host; its agent settings are filled in by [`Store::start_draft`].
    pub fn create_draft(&mut self, t: &NewDraft) -> Result<i64> {
        let now = now();
        let (brother, host) = t.assigned.unwrap_or(("", ""));
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        check_parent(&tx, t.parent)?;
        // The least sandbox and no turns as placeholders: nothing runs before `start`
        // replaces them with the brother's settings.
        tx.execute(
            "INSERT INTO tasks (status, brother, host, subject, agent, sandbox, max_turns, workdir,
                                prompt, prompt_sha256, created_at, updated_at, priority, parent_id,
                                created_by, profile)
             VALUES (?1, ?2, ?3, ?4, '', 'read', 0, '', ?5, ?6, ?7, ?7, ?8, ?9, ?10, ?11)",
            params![
                TaskStatus::Backlog.as_str(),
                brother,
                host,
                t.subject,
                t.prompt,
                t.prompt_sha256,
                now,
                t.priority.as_str(),
                t.parent,
                t.author,
                t.profile
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO transitions (task_id, from_status, to_status, reason, at) VALUES (?1, NULL, ?2, ?3, ?4)",
            params![id, TaskStatus::Backlog.as_str(), format!("recorded by {}", t.author), now],
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Moves a backlog task to `queued` with its first run and the brother's settings, in
    /// one transaction: the dispatcher then starts it as it starts any queued task. Two
    /// starts at once: the second finds it no longer in the backlog.
    pub fn start_draft(&mut self, id: i64, a: &Assignment) -> Result<()> {
        let now = now();
        let nonce = random_hex(16);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(TaskStatus, i64)> = tx
            .query_row("SELECT status, version FROM tasks WHERE id = ?1", [id], |r| Ok((parse_col(r, 0)?, r.get(1)?)))
            .optional()?;
        let Some((status, version)) = row else { return Err(Error::TaskNotFound(id)) };
        if status != TaskStatus::Backlog {
            return Err(Error::NotStartable {
                task: id,
                why: format!(
                    "it is {status}, not in the backlog: it was started already (`delegate show {id}`; a finished \
                     task is followed up with `delegate reopen {id}`)"
                ),
            });
        }
        tx.execute(
            "UPDATE tasks SET brother = ?2, host = ?3, agent = ?4, model = ?5, sandbox = ?6, max_turns = ?7,
                              workdir = ?8, timeout_secs = ?9, options = ?10, settings = ?11, notify = ?12
             WHERE id = ?1",
            params![
                id,
                a.brother,
                a.host,
                a.agent,
                a.model,
                a.sandbox.as_str(),
                a.max_turns,
                a.workdir,
                i64::try_from(a.timeout_secs).unwrap_or(i64::MAX),
                serde_json::to_string(a.options).expect("options serialize"),
                a.settings.to_string(),
                a.notify
            ],
        )?;
        let session = crate::names::SessionName::for_run(&self.mailbox_id, id, 1)
            .expect("generated session names are valid")
            .to_string();
        tx.execute(
            "INSERT INTO runs (task_id, run_no, session, nonce, status, host, address, started_at, author)
             VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![id, session, nonce, TaskStatus::Queued.as_str(), a.host, a.address, now, a.author],
        )?;
        let reason = format!("started from the backlog by {}", a.author);
        transition_in(&tx, id, version, TaskStatus::Queued, Some(&reason), &now)?;
        tx.commit()?;
        Ok(())
    }

    /// The tasks whose parent is `id`, oldest first.
    pub fn children(&self, id: i64) -> Result<Vec<Child>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, status, priority, subject FROM tasks WHERE parent_id = ?1 ORDER BY id")?;
        let rows = st.query_map([id], |r| {
            Ok(Child { id: r.get(0)?, status: parse_col(r, 1)?, priority: parse_col(r, 2)?, subject: r.get(3)? })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

/// A task as the board shows it: enough to place, order and move it.
#[derive(Debug, Clone, Serialize)]
pub struct Card {
    pub id: i64,
    /// What `move --version` must name (optimistic locking).
    pub version: i64,
    pub column: Column,
    pub status: TaskStatus,
    pub priority: Priority,
    /// Empty while a backlog task is unassigned.
    pub brother: String,
    pub subject: String,
    pub parent: Option<i64>,
    pub created_at: String,
    pub turns: Option<i64>,
    pub cost_usd: Option<f64>,
    /// The latest thing the agent did (from the brother: cleaned at sync, shown through `safe`).
    pub last_event: Option<String>,
    /// When a person accepted the finished task (moved it to done).
    pub accepted_at: Option<String>,
    /// Who created it (`--as`, `DELEGATE_AGENT_ID`, the MCP client, else the local user).
    pub created_by: Option<String>,
}

const CARD_COLUMNS: &str = "id, version, status, priority, brother, subject, parent_id, created_at, turns, cost_usd,
                            last_event, accepted_at, created_by";

fn card_row(r: &rusqlite::Row) -> rusqlite::Result<Card> {
    let status: TaskStatus = parse_col(r, 2)?;
    let accepted_at: Option<String> = r.get(11)?;
    Ok(Card {
        id: r.get(0)?,
        version: r.get(1)?,
        column: Column::of(status, accepted_at.is_some()),
        status,
        priority: parse_col(r, 3)?,
        brother: r.get(4)?,
        subject: r.get(5)?,
        parent: r.get(6)?,
        created_at: r.get(7)?,
        turns: r.get(8)?,
        cost_usd: r.get(9)?,
        last_event: r.get(10)?,
        accepted_at,
        created_by: r.get(12)?,
    })
}

impl Store {
    /// Every task (only `brother`'s, if given; only those `mine` created or that run on the
    /// brother of that name, if given) as a card: high priority first, then oldest first.
    /// Light rows (no runs, no prompt), so a mailbox of many tasks reads quickly.
    pub fn cards(&self, brother: Option<&str>, mine: Option<&str>) -> Result<Vec<Card>> {
        let sql = format!(
            "SELECT {CARD_COLUMNS} FROM tasks WHERE (?1 IS NULL OR brother = ?1)
               AND (?2 IS NULL OR created_by = ?2 OR brother = ?2)
             ORDER BY CASE priority WHEN 'high' THEN 0 WHEN 'medium' THEN 1 ELSE 2 END, created_at, id"
        );
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map(params![brother, mine], card_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Who created the task (`None` for a task from before that was recorded).
    pub fn created_by(&self, id: i64) -> Result<Option<String>> {
        let by: Option<Option<String>> =
            self.conn.query_row("SELECT created_by FROM tasks WHERE id = ?1", [id], |r| r.get(0)).optional()?;
        by.ok_or(Error::TaskNotFound(id))
    }

    /// The profile a backlog task was recorded with (`new --profile`).
    pub fn draft_profile(&self, id: i64) -> Result<Option<String>> {
        let p: Option<Option<String>> =
            self.conn.query_row("SELECT profile FROM tasks WHERE id = ?1", [id], |r| r.get(0)).optional()?;
        p.ok_or(Error::TaskNotFound(id))
    }

    /// How many tasks wait for review: finished and not accepted.
    pub fn review_count(&self) -> Result<usize> {
        let finished: Vec<&str> = TaskStatus::ALL.iter().filter(|s| s.is_terminal()).map(|s| s.as_str()).collect();
        let list = finished.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
        let n: i64 = self.conn.query_row(
            &format!("SELECT count(*) FROM tasks WHERE accepted_at IS NULL AND status IN ({list})"),
            [],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Deletes a task and every row that refers to it, in one transaction, if it is still
    /// `expected` (a backlog or finished task: the caller checked): a task that moved on
    /// meanwhile (a `start` won) is [`Error::Conflict`] and nothing is deleted. Tables are
    /// found by their foreign keys, so a table a later migration adds is covered too.
    pub fn delete_task(&mut self, id: i64, expected_version: i64) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: Option<i64> =
            tx.query_row("SELECT version FROM tasks WHERE id = ?1", [id], |r| r.get(0)).optional()?;
        match version {
            None => return Err(Error::TaskNotFound(id)),
            Some(v) if v != expected_version => return Err(Error::Conflict { task: id, expected: expected_version }),
            Some(_) => {}
        }
        let children: Vec<i64> = {
            let mut st = tx.prepare("SELECT id FROM tasks WHERE parent_id = ?1 ORDER BY id")?;
            st.query_map([id], |r| r.get(0))?.collect::<std::result::Result<_, _>>()?
        };
        if !children.is_empty() {
            return Err(Error::DeleteHasChildren { task: id, children });
        }
        for (table, column) in referring_columns(&tx)? {
            tx.execute(&format!("DELETE FROM \"{table}\" WHERE \"{column}\" = ?1"), [id])?;
        }
        tx.execute("DELETE FROM tasks WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }

    /// Whether a person accepted the task (it is in done, if finished).
    pub fn is_accepted(&self, id: i64) -> Result<bool> {
        let at: Option<Option<String>> =
            self.conn.query_row("SELECT accepted_at FROM tasks WHERE id = ?1", [id], |r| r.get(0)).optional()?;
        Ok(at.ok_or(Error::TaskNotFound(id))?.is_some())
    }

    /// Moves a task to column `to` if nobody changed it since `expected_version` (then
    /// [`Error::StaleVersion`], with what it is now). Only a finished task moves by hand,
    /// between review and done; every other column follows the task's state
    /// ([`crate::column::refuse_move`]). A real move bumps the version and leaves a note
    /// in the thread, in the same transaction; a move to where it already is changes nothing.
    pub fn move_card(&mut self, id: i64, expected_version: i64, to: Column, author: &str) -> Result<Card> {
        let now = now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let sql = format!("SELECT {CARD_COLUMNS} FROM tasks WHERE id = ?1");
        let card = tx.query_row(&sql, [id], card_row).optional()?.ok_or(Error::TaskNotFound(id))?;
        if card.version != expected_version {
            return Err(Error::StaleVersion {
                task: id,
                expected: expected_version,
                found: card.version,
                column: card.column.to_string(),
            });
        }
        if let Some(why) = refuse_move(id, card.status, card.column, to) {
            return Err(Error::MoveRefused { task: id, to: to.to_string(), why });
        }
        if card.column == to {
            return Ok(card);
        }
        let accepted_at = (to == Column::Done).then_some(now.as_str());
        tx.execute(
            "UPDATE tasks SET accepted_at = ?3, version = version + 1, updated_at = ?4 WHERE id = ?1 AND version = ?2",
            params![id, expected_version, accepted_at, now],
        )?;
        tx.execute(
            "INSERT INTO messages (task_id, run_no, direction, author, kind, text, at, read_at)
             VALUES (?1, (SELECT coalesce(max(run_no), 1) FROM runs WHERE task_id = ?1), 'note', ?2, 'move', ?3, ?4, ?4)",
            params![id, author, format!("moved from {} to {to}", card.column), now],
        )?;
        let moved = tx.query_row(&sql, [id], card_row)?;
        tx.commit()?;
        Ok(moved)
    }
}

/// Every (table, column) whose foreign key points at `tasks`, from the schema itself.
fn referring_columns(tx: &rusqlite::Connection) -> Result<Vec<(String, String)>> {
    let tables: Vec<String> = {
        let mut st = tx.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name != 'tasks'")?;
        st.query_map([], |r| r.get(0))?.collect::<std::result::Result<_, _>>()?
    };
    let mut found = Vec::new();
    for table in tables {
        let mut st = tx.prepare("SELECT \"table\", \"from\" FROM pragma_foreign_key_list(?1)")?;
        let keys = st.query_map([&table], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for key in keys {
            let (target, column) = key?;
            if target == "tasks" {
                found.push((table.clone(), column));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::tests::temp_dir;

    fn draft<'a>(parent: Option<i64>) -> NewDraft<'a> {
        NewDraft {
            subject: "s",
            prompt: b"p",
            prompt_sha256: "x",
            priority: Priority::High,
            parent,
            assigned: None,
            author: "tester",
            profile: None,
        }
    }

    fn assignment(author: &str) -> Assignment<'_> {
        Assignment {
            brother: "oppy",
            host: "masuda",
            address: "127.0.0.1",
            agent: "self-test",
            model: None,
            sandbox: Sandbox::Write,
            max_turns: 5,
            workdir: "/w",
            timeout_secs: 60,
            author,
            options: &NO_OPTIONS,
            settings: &serde_json::Value::Null,
            notify: None,
        }
    }

    static NO_OPTIONS: crate::agents::AgentOptions = crate::agents::AgentOptions {
        reasoning_effort: None,
        max_budget_usd: None,
        extra_args: vec![],
        credential_file: None,
        credential_env: None,
        usd_per_mtok: None,
    };

    #[test]
    fn two_starts_of_one_backlog_task_at_once_give_it_exactly_one_run() {
        let dir = temp_dir("board-start");
        let id = Store::open(&dir).unwrap().create_draft(&draft(None)).unwrap();
        assert!(Store::open(&dir).unwrap().queued().unwrap().is_empty(), "a backlog task is not queued");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let starts: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|who| {
                let (dir, barrier) = (dir.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut s = Store::open(&dir).unwrap();
                    barrier.wait();
                    s.start_draft(id, &assignment(who))
                })
            })
            .collect();
        let results: Vec<_> = starts.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
        let lost = results.into_iter().find_map(|r| r.err()).unwrap();
        assert!(matches!(lost, Error::NotStartable { task, .. } if task == id), "{lost}");
        let s = Store::open(&dir).unwrap();
        let t = s.task(id).unwrap();
        assert_eq!((t.status, t.runs.len(), t.brother.as_str(), t.version), (TaskStatus::Queued, 1, "oppy", 2));
        assert_eq!(s.queued().unwrap().iter().map(|t| t.id).collect::<Vec<_>>(), [id]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_delete_takes_every_row_of_the_task_and_only_at_the_version_read() {
        let dir = temp_dir("board-delete");
        let mut s = Store::open(&dir).unwrap();
        let keep = s.create_draft(&draft(None)).unwrap();
        let id = s.create_draft(&NewDraft { author: "alice", profile: Some("deep"), ..draft(None) }).unwrap();
        assert_eq!(
            (s.created_by(id).unwrap().as_deref(), s.draft_profile(id).unwrap().as_deref()),
            (Some("alice"), Some("deep"))
        );
        s.add_note(id, "bob", "comment", "a note").unwrap();
        s.add_note(keep, "bob", "comment", "kept").unwrap();
        // A start got in first: the version read is stale, and nothing is deleted.
        s.start_draft(id, &assignment("carol")).unwrap();
        let err = s.delete_task(id, 1).unwrap_err();
        assert!(matches!(err, Error::Conflict { task, expected: 1 } if task == id), "{err}");
        assert_eq!(s.task(id).unwrap().runs.len(), 1);
        s.delete_task(id, 2).unwrap();
        assert!(matches!(s.task(id), Err(Error::TaskNotFound(_))));
        let rows = |table: &str| -> i64 {
            s.conn.query_row(&format!("SELECT count(*) FROM {table} WHERE task_id = ?1"), [id], |r| r.get(0)).unwrap()
        };
        for table in ["runs", "transitions", "messages"] {
            assert_eq!(rows(table), 0, "{table}");
        }
        assert_eq!(s.task(keep).unwrap().id, keep);
        let kept: i64 =
            s.conn.query_row("SELECT count(*) FROM messages WHERE task_id = ?1", [keep], |r| r.get(0)).unwrap();
        assert_eq!(kept, 1, "another task's thread is untouched");
        let child = s.create_draft(&draft(Some(keep))).unwrap();
        let err = s.delete_task(keep, 1).unwrap_err();
        assert!(matches!(&err, Error::DeleteHasChildren { children, .. } if children == &[child]), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tasks_from_before_roles_get_their_creator_from_their_first_run_or_backlog_record() {
        let dir = temp_dir("board-created-by");
        std::fs::create_dir_all(&dir).unwrap();
        {
            // A mailbox as the board's first version (step 008) left it.
            let c = rusqlite::Connection::open(dir.join(crate::mailbox::DB_FILE)).unwrap();
            for step in &crate::mailbox::STEPS[..8] {
                c.execute_batch(step).unwrap();
            }
            c.pragma_update(None, "user_version", 8).unwrap();
            c.execute_batch(
                "INSERT INTO tasks (id, status, brother, host, subject, agent, sandbox, max_turns, workdir, prompt,
                                    prompt_sha256, created_at, updated_at)
                 VALUES (1, 'completed', 'oppy', 'h', 's', 'self-test', 'read', 5, '/w', x'70', 'x', 't', 't'),
                        (2, 'backlog', '', '', 's', '', 'read', 0, '', x'70', 'x', 't', 't');
                 INSERT INTO runs (task_id, run_no, session, nonce, status, host, address, started_at, author)
                 VALUES (1, 1, 'dlg-1', 'n', 'completed', 'h', 'a', 't', 'alice'),
                        (1, 2, 'dlg-2', 'n', 'completed', 'h', 'a', 't', 'bob');
                 INSERT INTO transitions (task_id, from_status, to_status, reason, at)
                 VALUES (2, NULL, 'backlog', 'recorded by carol', 't');",
            )
            .unwrap();
        }
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.created_by(1).unwrap().as_deref(), Some("alice"));
        assert_eq!(s.created_by(2).unwrap().as_deref(), Some("carol"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn children_are_linked_only_to_an_existing_parent() {
        let dir = temp_dir("board-children");
        let mut s = Store::open(&dir).unwrap();
        let parent = s.create_draft(&draft(None)).unwrap();
        let a = s.create_draft(&draft(Some(parent))).unwrap();
        let b =
            s.create_task(&crate::mailbox::NewTask { parent: Some(parent), ..crate::mailbox::tests::new_task(b"q") });
        let b = b.unwrap().task_id;
        let err = s.create_draft(&draft(Some(parent + 100))).unwrap_err();
        assert!(matches!(err, Error::NoSuchParent { .. }), "{err}");
        let kids: Vec<(i64, TaskStatus)> = s.children(parent).unwrap().iter().map(|c| (c.id, c.status)).collect();
        assert_eq!(kids, [(a, TaskStatus::Backlog), (b, TaskStatus::Launching)]);
        assert!(s.children(a).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
