//! Reading the activity of tasks: hook events, messages both ways, and the combined feed
//! that `monitor` streams (status changes, events and messages in the order they landed).

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::{Store, now};
use crate::error::Result;

/// One agent event (a tool call, a stop, a session start) as the hook reported it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: i64,
    pub task_id: i64,
    pub run_no: i64,
    /// When the agent said it happened: the brother's clock, validated, never an ordering key.
    pub at: String,
    pub kind: String,
    pub summary: String,
    /// When the lead recorded it (the lead's clock): what orders a thread.
    pub received_at: Option<String>,
}

/// A message: from a brother (report helper), to a brother (say), or a person's note.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub id: i64,
    pub task_id: i64,
    pub run_no: i64,
    pub direction: String,
    pub author: String,
    pub seq: Option<i64>,
    pub kind: String,
    pub text: String,
    /// When it was written: the lead's clock for notes and messages to a brother; the
    /// brother's (validated) claim for its reports, which never orders anything.
    pub at: String,
    pub delivered_at: Option<String>,
    pub read_at: Option<String>,
    /// When the lead recorded a brother's report (the lead's clock); `None` for the lead's
    /// own messages, whose `at` already is.
    pub received_at: Option<String>,
}

impl Message {
    /// When this message reached the mailbox, on the lead's clock: what orders it.
    pub fn landed_at(&self) -> &str {
        self.received_at.as_deref().unwrap_or(&self.at)
    }
}

impl Event {
    /// When this event reached the mailbox, on the lead's clock: what orders it.
    pub fn landed_at(&self) -> &str {
        self.received_at.as_deref().unwrap_or(&self.at)
    }
}

/// Where a reader of the feed stands: the last id seen in each source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FeedCursor {
    pub transition: i64,
    pub event: i64,
    pub message: i64,
}

/// One line of `monitor`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeedItem {
    State { task: i64, from: Option<String>, to: String, reason: Option<String>, at: String },
    Event { task: i64, run: i64, kind: String, summary: String, at: String },
    Message { task: i64, run: i64, direction: String, author: String, kind: String, text: String, at: String },
}

impl FeedItem {
    pub fn at(&self) -> &str {
        match self {
            FeedItem::State { at, .. } | FeedItem::Event { at, .. } | FeedItem::Message { at, .. } => at,
        }
    }
}

const MESSAGE_COLS: &str =
    "id, task_id, run_no, direction, author, seq, kind, text, at, delivered_at, read_at, received_at";

fn message_row(r: &rusqlite::Row) -> rusqlite::Result<Message> {
    Ok(Message {
        id: r.get(0)?,
        task_id: r.get(1)?,
        run_no: r.get(2)?,
        direction: r.get(3)?,
        author: r.get(4)?,
        seq: r.get(5)?,
        kind: r.get(6)?,
        text: r.get(7)?,
        at: r.get(8)?,
        delivered_at: r.get(9)?,
        read_at: r.get(10)?,
        received_at: r.get(11)?,
    })
}

fn event_row(r: &rusqlite::Row) -> rusqlite::Result<Event> {
    Ok(Event {
        id: r.get(0)?,
        task_id: r.get(1)?,
        run_no: r.get(2)?,
        at: r.get(3)?,
        kind: r.get(4)?,
        summary: r.get(5)?,
        received_at: r.get(6)?,
    })
}

/// `limit` as SQL's LIMIT, where -1 means none.
pub(super) fn sql_limit(limit: Option<usize>) -> i64 {
    limit.map_or(-1, |n| n.min(i64::MAX as usize) as i64)
}

impl Store {
    /// Every event of a task, oldest first (unbounded: [`Store::newest_events`] for a view).
    pub fn events(&self, task_id: i64) -> Result<Vec<Event>> {
        Ok(self.newest_events(task_id, None)?.0)
    }

    /// The newest `limit` events of a task (all when `None`), oldest first, and how many the
    /// task has in all: a view never loads more rows than it shows.
    pub fn newest_events(&self, task_id: i64, limit: Option<usize>) -> Result<(Vec<Event>, u64)> {
        let mut st = self.conn.prepare_cached(
            "SELECT * FROM (SELECT id, task_id, run_no, at, kind, summary, received_at FROM events
                            WHERE task_id = ?1 ORDER BY id DESC LIMIT ?2)
             ORDER BY id",
        )?;
        let rows = st.query_map(params![task_id, sql_limit(limit)], event_row)?;
        let events: Vec<Event> = rows.collect::<std::result::Result<_, _>>()?;
        let total = self.count_of("events", task_id)?;
        Ok((events, total))
    }

    /// Messages of one task in both directions, oldest first.
    pub fn messages(&self, task_id: i64) -> Result<Vec<Message>> {
        Ok(self.newest_messages(task_id, None)?.0)
    }

    /// The newest `limit` messages of a task (all when `None`), oldest first, and how many
    /// the task has in all.
    pub fn newest_messages(&self, task_id: i64, limit: Option<usize>) -> Result<(Vec<Message>, u64)> {
        let sql = format!(
            "SELECT {MESSAGE_COLS} FROM (SELECT * FROM messages WHERE task_id = ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id"
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map(params![task_id, sql_limit(limit)], message_row)?;
        let messages: Vec<Message> = rows.collect::<std::result::Result<_, _>>()?;
        Ok((messages, self.count_of("messages", task_id)?))
    }

    /// One message by its id.
    pub fn message(&self, id: i64) -> Result<Option<Message>> {
        let sql = format!("SELECT {MESSAGE_COLS} FROM messages WHERE id = ?1");
        Ok(self.conn.prepare_cached(&sql)?.query_row([id], message_row).optional()?)
    }

    /// How many rows of `table` belong to a task (an index range, not a table scan).
    pub(super) fn count_of(&self, table: &str, task_id: i64) -> Result<u64> {
        let sql = format!("SELECT count(*) FROM {table} WHERE task_id = ?1");
        let n: i64 = self.conn.prepare_cached(&sql)?.query_row([task_id], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Messages brothers sent, oldest first; only unread ones if asked.
    pub fn mailbox(&self, unread_only: bool, limit: u32) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLS} FROM (
                 SELECT * FROM messages WHERE direction = 'from_brother' AND (?1 = 0 OR read_at IS NULL)
                 ORDER BY id DESC LIMIT ?2)
             ORDER BY id"
        );
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map(params![unread_only as i64, limit], message_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Marks messages read (shown to the lead); already-read ones keep their first time.
    pub fn mark_read(&mut self, ids: &[i64]) -> Result<()> {
        let now = now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for id in ids {
            tx.execute("UPDATE messages SET read_at = ?2 WHERE id = ?1 AND read_at IS NULL", params![id, now])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A note from a person or a lead (`update --output`), kept with the task's messages.
    pub fn add_note(&mut self, task_id: i64, author: &str, kind: &str, text: &str) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let run_no: i64 =
            tx.query_row("SELECT coalesce(max(run_no), 1) FROM runs WHERE task_id = ?1", [task_id], |r| r.get(0))?;
        tx.execute(
            "INSERT INTO messages (task_id, run_no, direction, author, kind, text, at, read_at)
             VALUES (?1, ?2, 'note', ?3, ?4, ?5, ?6, ?6)",
            params![task_id, run_no, author, kind, text, now()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records a message to a brother before it is sent; its row id is the id the brother's
    /// inbox knows it by, so sending it again can never deliver it twice.
    pub fn add_outgoing(&mut self, task_id: i64, run_no: i64, author: &str, text: &str) -> Result<Message> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO messages (task_id, run_no, direction, author, kind, text, at)
             VALUES (?1, ?2, 'to_brother', ?3, 'say', ?4, ?5)",
            params![task_id, run_no, author, text, now()],
        )?;
        let id = tx.last_insert_rowid();
        let sql = format!("SELECT {MESSAGE_COLS} FROM messages WHERE id = ?1");
        let m = tx.query_row(&sql, [id], message_row)?;
        tx.commit()?;
        Ok(m)
    }

    /// Messages to this run's brother that its inbox has not confirmed yet, oldest first.
    pub fn unqueued(&self, task_id: i64, run_no: i64) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLS} FROM messages
             WHERE task_id = ?1 AND run_no = ?2 AND direction = 'to_brother' AND queued_at IS NULL AND kind = 'say'
             ORDER BY id"
        );
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map(params![task_id, run_no], message_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Unconfirmed messages to the current runs of unfinished tasks on `host`: (task, run, message).
    pub fn unqueued_on_host(&self, host: &str) -> Result<Vec<(i64, i64, Message)>> {
        let sql = format!(
            "SELECT {MESSAGE_COLS} FROM messages m
             WHERE m.direction = 'to_brother' AND m.kind = 'say' AND m.queued_at IS NULL
               AND m.task_id IN (SELECT id FROM tasks WHERE host = ?1
                                 AND status IN ('launched', 'running', 'needs_input'))
               AND m.run_no = (SELECT max(run_no) FROM runs WHERE task_id = m.task_id)
             ORDER BY m.id"
        );
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map([host], message_row)?;
        Ok(rows.map(|r| r.map(|m| (m.task_id, m.run_no, m))).collect::<std::result::Result<_, _>>()?)
    }

    /// The brother's inbox holds the message (`queued`), or the run ended first (`undeliverable`).
    pub fn mark_outgoing(&mut self, id: i64, queued: bool) -> Result<()> {
        if queued {
            self.conn
                .execute("UPDATE messages SET queued_at = coalesce(queued_at, ?2) WHERE id = ?1", params![id, now()])?;
        } else {
            self.conn
                .execute("UPDATE messages SET kind = 'undeliverable' WHERE id = ?1 AND queued_at IS NULL", [id])?;
        }
        Ok(())
    }

    /// The current end of the feed, to start a monitor from "now".
    pub fn feed_end(&self) -> Result<FeedCursor> {
        let max = |table: &str| -> Result<i64> {
            Ok(self.conn.query_row(&format!("SELECT coalesce(max(id), 0) FROM {table}"), [], |r| r.get(0))?)
        };
        Ok(FeedCursor { transition: max("transitions")?, event: max("events")?, message: max("messages")? })
    }

    /// Everything that landed after `cursor`, ordered by time, and the new cursor.
    pub fn feed_since(&self, cursor: FeedCursor) -> Result<(Vec<FeedItem>, FeedCursor)> {
        let mut next = cursor;
        let mut items = Vec::new();
        let mut st = self.conn.prepare_cached(
            "SELECT id, task_id, from_status, to_status, reason, at FROM transitions WHERE id > ?1 ORDER BY id",
        )?;
        let mut rows = st.query([cursor.transition])?;
        while let Some(r) = rows.next()? {
            next.transition = r.get(0)?;
            items.push(FeedItem::State {
                task: r.get(1)?,
                from: r.get(2)?,
                to: r.get(3)?,
                reason: r.get(4)?,
                at: r.get(5)?,
            });
        }
        let mut st = self
            .conn
            .prepare_cached("SELECT id, task_id, run_no, kind, summary, coalesce(received_at, at) FROM events WHERE id > ?1 ORDER BY id")?;
        let mut rows = st.query([cursor.event])?;
        while let Some(r) = rows.next()? {
            next.event = r.get(0)?;
            items.push(FeedItem::Event {
                task: r.get(1)?,
                run: r.get(2)?,
                kind: r.get(3)?,
                summary: r.get(4)?,
                at: r.get(5)?,
            });
        }
        let sql = format!("SELECT {MESSAGE_COLS} FROM messages WHERE id > ?1 ORDER BY id");
        let mut st = self.conn.prepare_cached(&sql)?;
        for m in st.query_map([cursor.message], message_row)? {
            let m = m?;
            next.message = m.id;
            let at = m.landed_at().to_owned();
            items.push(FeedItem::Message {
                task: m.task_id,
                run: m.run_no,
                direction: m.direction,
                author: m.author,
                kind: m.kind,
                text: m.text,
                at,
            });
        }
        // By the lead's clock (when each landed), never a brother's claim.
        // Stable: within one timestamp, state changes come before events and messages.
        items.sort_by(|a, b| a.at().cmp(b.at()));
        Ok((items, next))
    }
}
