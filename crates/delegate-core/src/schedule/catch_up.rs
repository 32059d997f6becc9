//! What a dispatcher tick does with a schedule's due slots: which to fire now, which were
//! missed. A pure function of the schedule and the clock, so tests inject the clock.
//!
//! A slot is *on time* when it is at most [`GRACE`] old (a dispatcher that ticks every
//! minute, or `dispatch --once` from cron, is never late by more). Older slots were missed
//! (the lead was asleep or off) and follow the schedule's catch-up policy:
//!
//! - `skip`: only the newest on-time slot fires; every missed one is a misfire.
//! - `once`: the newest due slot fires, late or not; older ones are misfires.
//! - `all`: every due slot fires, oldest first, but at most [`ALL_PER_TICK`] per tick (the
//!   rest wait for the next ticks, so a week of hourly slots does not start 168 agents at
//!   once) and at most [`ALL_MAX_BACKLOG`] in all (older ones are misfires).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::Spec;

/// How old a slot may be and still count as on time.
pub const GRACE: Duration = Duration::from_secs(10 * 60);
/// `all`: at most this many missed slots fire per tick.
pub const ALL_PER_TICK: usize = 2;
/// `all`: at most this many missed slots are kept to fire; older ones are misfires.
pub const ALL_MAX_BACKLOG: usize = 24;
/// Slots looked at per tick: a schedule every minute that missed a year is not walked slot
/// by slot (the count of misfires then says "at least").
pub const MAX_SCAN: usize = 10_000;

/// How far back a tick looks for missed slots (a lead off for longer loses count of what
/// it missed before that).
pub const LOOKBACK: jiff::SignedDuration = jiff::SignedDuration::from_hours(400 * 24);

/// A schedule's catch-up policy for slots missed while no dispatcher ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    #[default]
    Skip,
    Once,
    All,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::Once => "once",
            CatchUp::All => "all",
        }
    }
}

impl fmt::Display for CatchUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CatchUp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(CatchUp::Skip),
            "once" => Ok(CatchUp::Once),
            "all" => Ok(CatchUp::All),
            other => Err(format!("catch-up policy {other:?}: use skip, once or all")),
        }
    }
}

/// What one tick does for one schedule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Slots to fire now, oldest first.
    pub fire: Vec<Timestamp>,
    /// Slots missed and given up on: how many (at least), the oldest and the newest.
    pub missed: Option<Missed>,
    /// Every slot up to here is decided; the next tick looks after it.
    pub decided_until: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missed {
    pub count: usize,
    pub first: Timestamp,
    pub last: Timestamp,
}

/// Decides the slots in `(decided_until, now]` of a schedule.
pub fn plan(
    spec: &Spec,
    tz: &TimeZone,
    anchor: Timestamp,
    decided_until: Timestamp,
    now: Timestamp,
    policy: CatchUp,
) -> Plan {
    let scan_from = decided_until.max(now.checked_sub(LOOKBACK).unwrap_or(decided_until));
    let due = spec.slots_between(tz, anchor, scan_from, now, MAX_SCAN);
    let mut plan = Plan { fire: vec![], missed: None, decided_until: now.max(decided_until) };
    if due.is_empty() {
        return plan;
    }
    let on_time = |s: &Timestamp| now.duration_since(*s).unsigned_abs() <= GRACE;
    let (fire, give_up): (Vec<Timestamp>, Vec<Timestamp>) = match policy {
        CatchUp::Skip => {
            let newest_on_time = due.iter().rev().find(|s| on_time(s)).copied();
            (
                newest_on_time.into_iter().collect(),
                due.iter().filter(|s| Some(**s) != newest_on_time).copied().collect(),
            )
        }
        CatchUp::Once => {
            let (newest, older) = due.split_last().expect("not empty");
            (vec![*newest], older.to_vec())
        }
        CatchUp::All => {
            let kept_from = due.len().saturating_sub(ALL_MAX_BACKLOG);
            let (give_up, kept) = due.split_at(kept_from);
            let now_batch: Vec<Timestamp> = kept.iter().take(ALL_PER_TICK).copied().collect();
            if kept.len() > now_batch.len() {
                // The rest stay due: the next tick starts after the last one fired here.
                plan.decided_until = *now_batch.last().expect("ALL_PER_TICK > 0");
            }
            (now_batch, give_up.to_vec())
        }
    };
    plan.fire = fire;
    if let (Some(first), Some(last)) = (give_up.first(), give_up.last()) {
        plan.missed = Some(Missed { count: give_up.len(), first: *first, last: *last });
    }
    plan
}
