//! Schedules in the mailbox: their definitions, the claim of each slot before it fires, and
//! what happened to them (`schedule_misfire` events).
//!
//! The one rule that matters: a slot's firing row is inserted, keyed by (schedule, slot), in
//! the same IMMEDIATE transaction that moves the schedule's `decided_until` past it, and only
//! then is anything launched. Two dispatchers (two leads on one mailbox, or a dispatcher and
//! a `schedule run`) serialize on the write lock: the second reads the moved mark and finds
//! nothing due, and the primary key refuses a slot twice whatever happens. A dispatcher that
//! dies between the claim and the launch leaves the row `claimed`: that slot is lost, not
//! fired twice (at most once, on purpose: a duplicate agent run costs more than a miss).

use jiff::Timestamp;
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::{Store, now};
use crate::error::{Error, Result};
use crate::notify::Target;
use crate::schedule::{CatchUp, Plan};

/// The event kind of a slot missed or a firing that could not launch (notifications use it).
pub const MISFIRE: &str = "schedule_misfire";

/// Bytes of a misfire's reason kept (it may carry a brother's error text).
const MAX_REASON: usize = 1000;

pub struct NewSchedule<'a> {
    pub name: &'a str,
    /// The spec as [`crate::schedule::Spec`] displays it.
    pub spec: &'a str,
    pub tz: &'a str,
    pub brother: &'a str,
    pub profile: Option<&'a str>,
    pub catch_up: CatchUp,
    pub prompt: &'a [u8],
    pub author: &'a str,
    pub now: Timestamp,
}

/// A schedule as stored (its prompt is read on its own: [`Store::schedule_prompt`]).
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleRow {
    pub name: String,
    pub spec: String,
    pub tz: String,
    pub brother: String,
    pub profile: Option<String>,
    pub catch_up: String,
    pub paused: bool,
    pub author: String,
    pub anchor: String,
    pub decided_until: String,
    pub created_at: String,
    pub prompt_bytes: i64,
}

/// One firing of a schedule: its slot and the task it started.
#[derive(Debug, Clone, Serialize)]
pub struct Firing {
    pub schedule: String,
    pub slot: String,
    pub state: String,
    pub task_id: Option<i64>,
    /// The task's status now, when it has one.
    pub task_status: Option<String>,
    pub reason: Option<String>,
    pub claimed_at: String,
}

/// Something that happened to a schedule without anyone asking ([`MISFIRE`]).
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleEvent {
    pub id: i64,
    pub schedule: String,
    pub kind: String,
    pub first_slot: Option<String>,
    pub last_slot: Option<String>,
    pub count: i64,
    pub reason: String,
    pub at: String,
}

const ROW: &str = "SELECT name, spec, tz, brother, profile, catch_up, paused, author, anchor, decided_until,
                          created_at, length(prompt) FROM schedules";

fn row(r: &rusqlite::Row) -> rusqlite::Result<ScheduleRow> {
    Ok(ScheduleRow {
        name: r.get(0)?,
        spec: r.get(1)?,
        tz: r.get(2)?,
        brother: r.get(3)?,
        profile: r.get(4)?,
        catch_up: r.get(5)?,
        paused: r.get::<_, i64>(6)? != 0,
        author: r.get(7)?,
        anchor: r.get(8)?,
        decided_until: r.get(9)?,
        created_at: r.get(10)?,
        prompt_bytes: r.get(11)?,
    })
}

fn unknown(conn: &rusqlite::Connection, name: &str) -> Error {
    let known = conn
        .prepare("SELECT name FROM schedules ORDER BY name")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>())
        .unwrap_or_default();
    Error::UnknownSchedule { name: name.to_string(), known }
}

fn clip(s: &str) -> String {
    crate::sanitize::clean_line(s, MAX_REASON)
}

/// The one place a [`MISFIRE`] is recorded, in the caller's transaction (so it is never lost
/// when the slot's decision is committed), with its notification to each of `targets` in
/// the same transaction.
#[allow(clippy::too_many_arguments)]
fn record_misfire(
    tx: &rusqlite::Connection,
    targets: &[Target],
    name: &str,
    first: &str,
    last: &str,
    count: usize,
    reason: &str,
    at: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO schedule_events (schedule, kind, first_slot, last_slot, count, reason, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![name, MISFIRE, first, last, count as i64, reason, at],
    )?;
    let slot = if first == last { first.to_string() } else { format!("{first}..{last}") };
    super::notifications::insert_misfire(tx, targets, name, &slot, reason)?;
    Ok(())
}

impl Store {
    /// Records a new schedule; its first slot is the first after `now`.
    pub fn add_schedule(&mut self, s: &NewSchedule) -> Result<ScheduleRow> {
        let at = s.now.to_string();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: bool = tx.query_row("SELECT count(*) FROM schedules WHERE name = ?1", [s.name], |r| r.get(0))?;
        if exists {
            return Err(Error::BadSchedule {
                name: s.name.to_string(),
                why: format!("a schedule by that name exists; remove it first (`delegate schedule rm {}`)", s.name),
            });
        }
        tx.execute(
            "INSERT INTO schedules (name, spec, tz, brother, profile, catch_up, prompt, author, anchor, decided_until,
                                    created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)",
            params![s.name, s.spec, s.tz, s.brother, s.profile, s.catch_up.as_str(), s.prompt, s.author, at, now()],
        )?;
        tx.commit()?;
        self.schedule(s.name)
    }

    pub fn schedules(&self) -> Result<Vec<ScheduleRow>> {
        let mut st = self.conn.prepare(&format!("{ROW} ORDER BY name"))?;
        let rows = st.query_map([], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn schedule(&self, name: &str) -> Result<ScheduleRow> {
        self.conn
            .query_row(&format!("{ROW} WHERE name = ?1"), [name], row)
            .optional()?
            .ok_or_else(|| unknown(&self.conn, name))
    }

    pub fn schedule_prompt(&self, name: &str) -> Result<Vec<u8>> {
        self.conn
            .query_row("SELECT prompt FROM schedules WHERE name = ?1", [name], |r| r.get(0))
            .optional()?
            .ok_or_else(|| unknown(&self.conn, name))
    }

    /// Removes a schedule, its firing records and its events (the tasks it started stay).
    pub fn remove_schedule(&mut self, name: &str) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if tx.execute("DELETE FROM schedules WHERE name = ?1", [name])? == 0 {
            return Err(unknown(&tx, name));
        }
        tx.execute("DELETE FROM schedule_firings WHERE schedule = ?1", [name])?;
        tx.execute("DELETE FROM schedule_events WHERE schedule = ?1", [name])?;
        tx.commit()?;
        Ok(())
    }

    /// Pauses or resumes. Resuming decides every slot up to `now`: slots passed while paused
    /// were skipped on purpose, not missed.
    pub fn set_schedule_paused(&mut self, name: &str, paused: bool, now: Timestamp) -> Result<ScheduleRow> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let was: Option<i64> =
            tx.query_row("SELECT paused FROM schedules WHERE name = ?1", [name], |r| r.get(0)).optional()?;
        match was {
            None => return Err(unknown(&tx, name)),
            Some(1) if !paused => {
                tx.execute(
                    "UPDATE schedules SET paused = 0, decided_until = ?2 WHERE name = ?1",
                    params![name, now.to_string()],
                )?;
            }
            Some(_) => {
                tx.execute("UPDATE schedules SET paused = ?2 WHERE name = ?1", params![name, paused as i64])?;
            }
        }
        tx.commit()?;
        self.schedule(name)
    }

    /// Claims the slots `planner` decides to fire for schedule `name` (unless it is paused or
    /// gone), records what it gave up on as a misfire, and moves the schedule's mark, all in
    /// one transaction. Returns the slots this call claimed: only those may be launched.
    pub fn claim_due(
        &mut self,
        name: &str,
        targets: &[Target],
        planner: impl FnOnce(&ScheduleRow) -> std::result::Result<Plan, String>,
    ) -> Result<Vec<Timestamp>> {
        let at = now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(s) = tx.query_row(&format!("{ROW} WHERE name = ?1"), [name], row).optional()? else {
            return Ok(vec![]);
        };
        if s.paused {
            return Ok(vec![]);
        }
        let plan = match planner(&s) {
            Ok(p) => p,
            Err(why) => {
                // A stored spec this build cannot read (written by a newer one): say so once.
                drop(tx);
                return Err(Error::BadSchedule { name: name.to_string(), why });
            }
        };
        let mut claimed = Vec::new();
        for slot in &plan.fire {
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO schedule_firings (schedule, slot, state, claimed_at) VALUES (?1, ?2, 'claimed', ?3)",
                params![name, slot.to_string(), at],
            )?;
            if inserted == 1 {
                claimed.push(*slot);
            }
        }
        if let Some(m) = &plan.missed {
            let reason = format!(
                "{} slot(s) from {} to {} passed while no dispatcher ran; catch-up policy {} gave them up",
                m.count, m.first, m.last, s.catch_up
            );
            record_misfire(&tx, targets, name, &m.first.to_string(), &m.last.to_string(), m.count, &reason, &at)?;
        }
        tx.execute(
            "UPDATE schedules SET decided_until = ?2 WHERE name = ?1",
            params![name, plan.decided_until.to_string()],
        )?;
        tx.commit()?;
        Ok(claimed)
    }

    /// Claims a firing outside the schedule's slots (`schedule run`): slot `manual:<now>`.
    pub fn claim_manual(&mut self, name: &str) -> Result<String> {
        let at = now();
        let slot = format!("manual:{at}");
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: bool = tx.query_row("SELECT count(*) FROM schedules WHERE name = ?1", [name], |r| r.get(0))?;
        if !exists {
            return Err(unknown(&tx, name));
        }
        tx.execute(
            "INSERT INTO schedule_firings (schedule, slot, state, claimed_at) VALUES (?1, ?2, 'claimed', ?3)",
            params![name, slot, at],
        )?;
        tx.commit()?;
        Ok(slot)
    }

    /// Records what a claimed firing became: its task, or why none could be recorded (also
    /// a [`MISFIRE`] event, so someone hears of it).
    pub fn finish_firing(
        &mut self,
        name: &str,
        slot: &str,
        outcome: std::result::Result<i64, &str>,
        targets: &[Target],
    ) -> Result<()> {
        let at = now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        match outcome {
            Ok(task) => {
                tx.execute(
                    "UPDATE schedule_firings SET state = 'fired', task_id = ?3 WHERE schedule = ?1 AND slot = ?2",
                    params![name, slot, task],
                )?;
            }
            Err(why) => {
                let why = clip(why);
                tx.execute(
                    "UPDATE schedule_firings SET state = 'failed', reason = ?3 WHERE schedule = ?1 AND slot = ?2",
                    params![name, slot, why],
                )?;
                let reason = format!("the firing could not start a task: {why}");
                record_misfire(&tx, targets, name, slot, slot, 1, &reason, &at)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A schedule's firings, newest first, at most `limit`.
    pub fn firings(&self, name: &str, limit: u32) -> Result<Vec<Firing>> {
        self.schedule(name)?;
        let mut st = self.conn.prepare(
            "SELECT f.schedule, f.slot, f.state, f.task_id, t.status, f.reason, f.claimed_at
             FROM schedule_firings f LEFT JOIN tasks t ON t.id = f.task_id
             WHERE f.schedule = ?1 ORDER BY f.claimed_at DESC, f.slot DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![name, limit], |r| {
            Ok(Firing {
                schedule: r.get(0)?,
                slot: r.get(1)?,
                state: r.get(2)?,
                task_id: r.get(3)?,
                task_status: r.get(4)?,
                reason: r.get(5)?,
                claimed_at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The newest firing of a schedule, if any.
    pub fn last_firing(&self, name: &str) -> Result<Option<Firing>> {
        Ok(self.firings(name, 1)?.into_iter().next())
    }

    /// Schedule events after id `after` (0: all), oldest first, at most `limit`; `name`
    /// narrows to one schedule.
    pub fn schedule_events(&self, name: Option<&str>, after: i64, limit: u32) -> Result<Vec<ScheduleEvent>> {
        let mut st = self.conn.prepare(
            "SELECT id, schedule, kind, first_slot, last_slot, count, reason, at FROM schedule_events
             WHERE id > ?1 AND (?2 IS NULL OR schedule = ?2) ORDER BY id LIMIT ?3",
        )?;
        let rows = st.query_map(params![after, name, limit], |r| {
            Ok(ScheduleEvent {
                id: r.get(0)?,
                schedule: r.get(1)?,
                kind: r.get(2)?,
                first_slot: r.get(3)?,
                last_slot: r.get(4)?,
                count: r.get(5)?,
                reason: r.get(6)?,
                at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{Spec, catch_up, time_zone};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn add(s: &mut Store, name: &str, spec: &str, catch_up: CatchUp, at: &str) {
        s.add_schedule(&NewSchedule {
            name,
            spec,
            tz: "Europe/Berlin",
            brother: "oppy",
            profile: None,
            catch_up,
            prompt: b"triage the issues",
            author: "tester",
            now: ts(at),
        })
        .unwrap();
    }

    /// What a dispatcher's tick claims for `name` at clock `now`.
    fn tick(s: &mut Store, name: &str, now: &str) -> Vec<String> {
        let now = ts(now);
        s.claim_due(name, &[], |row| {
            let spec = Spec::parse(&row.spec)?;
            let tz = time_zone(&row.tz)?;
            let policy: CatchUp = row.catch_up.parse()?;
            Ok(catch_up::plan(&spec, &tz, row.anchor.parse().unwrap(), row.decided_until.parse().unwrap(), now, policy))
        })
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect()
    }

    #[test]
    fn two_dispatchers_racing_on_one_mailbox_claim_each_slot_once() {
        let dir = super::super::tests::temp_dir("sched-race");
        add(&mut Store::open(&dir).unwrap(), "hourly", "every 1h", CatchUp::All, "2026-01-01T00:00:00Z");
        // Eight processes' worth of connections tick at the same clock, twice each: the
        // slots 01:00 and 02:00 (both on time for `all`) go to exactly one of them.
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let ticks: Vec<_> = (0..8)
            .map(|_| {
                let (dir, barrier) = (dir.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut s = Store::open(&dir).unwrap();
                    barrier.wait();
                    let mut got = tick(&mut s, "hourly", "2026-01-01T02:05:00Z");
                    got.extend(tick(&mut s, "hourly", "2026-01-01T02:05:00Z"));
                    got
                })
            })
            .collect();
        let mut claimed: Vec<String> = ticks.into_iter().flat_map(|t| t.join().unwrap()).collect();
        claimed.sort();
        assert_eq!(claimed, ["2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"]);
        // A restart (a new connection, the mark read back) claims nothing again.
        let mut s = Store::open(&dir).unwrap();
        assert!(tick(&mut s, "hourly", "2026-01-01T02:06:00Z").is_empty());
        // The key alone refuses a slot twice, even if the mark were moved back.
        s.conn.execute("UPDATE schedules SET decided_until = '2026-01-01T00:00:00Z'", []).unwrap();
        assert!(tick(&mut s, "hourly", "2026-01-01T02:06:00Z").is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missed_slots_become_one_bounded_misfire_and_paused_slots_none() {
        let dir = super::super::tests::temp_dir("sched-miss");
        let mut s = Store::open(&dir).unwrap();
        add(&mut s, "daily", "at 09:00", CatchUp::Once, "2026-01-01T00:00:00Z");
        // Off for three days (09:00 Berlin is 08:00Z): once fires the newest, one misfire
        // event counts the other two.
        assert_eq!(tick(&mut s, "daily", "2026-01-03T12:00:00Z"), ["2026-01-03T08:00:00Z"]);
        let events = s.schedule_events(Some("daily"), 0, 10).unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!((events[0].kind.as_str(), events[0].count), (MISFIRE, 2));
        assert_eq!(events[0].first_slot.as_deref(), Some("2026-01-01T08:00:00Z"));
        assert!(events[0].reason.contains("catch-up policy once"), "{}", events[0].reason);
        // Paused over two slots, resumed: they neither fire nor count as missed.
        s.set_schedule_paused("daily", true, ts("2026-01-03T12:00:00Z")).unwrap();
        assert!(tick(&mut s, "daily", "2026-01-05T12:00:00Z").is_empty(), "paused");
        s.set_schedule_paused("daily", false, ts("2026-01-05T12:00:00Z")).unwrap();
        assert!(tick(&mut s, "daily", "2026-01-05T12:00:00Z").is_empty());
        assert_eq!(s.schedule_events(Some("daily"), 0, 10).unwrap().len(), 1);
        assert_eq!(tick(&mut s, "daily", "2026-01-06T08:01:00Z"), ["2026-01-06T08:00:00Z"]);
        // A firing that could not start a task is a misfire too, its reason bounded.
        s.finish_firing("daily", "2026-01-06T08:00:00Z", Err(&format!("no \u{1b}[31mbrother{}", "x".repeat(5000))), &[])
            .unwrap();
        let last = s.schedule_events(Some("daily"), 0, 10).unwrap().pop().unwrap();
        assert!(last.reason.starts_with("the firing could not start a task: no"), "{}", last.reason);
        assert!(last.reason.len() < 1100 && !last.reason.contains('\u{1b}'), "{}", last.reason);
        let f = s.last_firing("daily").unwrap().unwrap();
        assert_eq!((f.state.as_str(), f.task_id), ("failed", None));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_are_unique_and_unknown_names_list_the_known_ones() {
        let dir = super::super::tests::temp_dir("sched-names");
        let mut s = Store::open(&dir).unwrap();
        add(&mut s, "a", "every 1h", CatchUp::Skip, "2026-01-01T00:00:00Z");
        let dup = s
            .add_schedule(&NewSchedule {
                name: "a",
                spec: "every 2h",
                tz: "UTC",
                brother: "oppy",
                profile: None,
                catch_up: CatchUp::Skip,
                prompt: b"p",
                author: "t",
                now: ts("2026-01-01T00:00:00Z"),
            })
            .unwrap_err();
        assert!(dup.to_string().contains("schedule rm a"), "{dup}");
        assert_eq!(s.schedule("a").unwrap().spec, "every 1h", "the first one is kept");
        let err = s.remove_schedule("b").unwrap_err();
        assert!(matches!(&err, Error::UnknownSchedule { known, .. } if known == &["a"]), "{err}");
        s.remove_schedule("a").unwrap();
        assert!(s.schedules().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
