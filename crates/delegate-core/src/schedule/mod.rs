//! Schedules: when a recurring task fires, in the lead's time zone.
//!
//! A spec is one of `at HH:MM` (daily), `weekdays HH:MM` (Monday to Friday), `every 2h`
//! (fixed intervals counted from when the schedule was added) or `cron EXPR` (5-field
//! [`cron::Cron`]). The first three name wall-clock times in the schedule's time zone, read
//! from the tz database (jiff's bundled copy, so every machine agrees), and a slot is the
//! instant that wall-clock time means on a given day. Across DST changes (documented in the
//! README, checked by property tests across zones):
//!
//! - a time the clocks skip (02:30 on a spring-forward day) fires once, as late as the jump
//!   is long (03:30 after a one-hour jump): RFC 5545's choice, and jiff's "compatible" one;
//! - a time the clocks pass twice (01:30 on a fall-back day) fires once, at its first
//!   occurrence.
//!
//! `every` is pure elapsed time and ignores wall clocks.

pub mod catch_up;
pub mod cron;

use std::fmt;
use std::time::Duration;

pub use jiff::Timestamp;
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;

pub use catch_up::{CatchUp, Plan};
pub use cron::Cron;

/// The shortest `every` interval: a schedule is for recurring work, not a busy loop.
pub const MIN_EVERY: Duration = Duration::from_secs(60);
/// The longest `every` interval (a year); longer is surely a typo.
pub const MAX_EVERY: Duration = Duration::from_secs(366 * 24 * 3600);
/// How far ahead a wall-clock schedule is searched for its next slot: a cron expression that
/// matches no day in this long (`0 0 30 2 *`, February 30th) is refused as never firing.
const SEARCH_DAYS: i32 = 9 * 366;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    Daily(Time),
    Weekdays(Time),
    Every(Duration),
    Cron(Box<Cron>, String),
}

impl Spec {
    /// Reads a stored spec (`at 09:00`, `weekdays 09:00`, `every 2h`, `cron 0 9 * * 1-5`),
    /// as [`fmt::Display`] writes it.
    pub fn parse(s: &str) -> Result<Spec, String> {
        let (kind, rest) = s.trim().split_once(' ').ok_or_else(|| format!("schedule spec {s:?} has no value"))?;
        match kind {
            "at" => Ok(Spec::Daily(parse_hhmm(rest)?)),
            "weekdays" => Ok(Spec::Weekdays(parse_hhmm(rest)?)),
            "every" => parse_every(rest).map(Spec::Every),
            "cron" => {
                let cron = Cron::parse(rest)?;
                Ok(Spec::Cron(Box::new(cron), rest.split_ascii_whitespace().collect::<Vec<_>>().join(" ")))
            }
            other => Err(format!("unknown schedule kind {other:?}: use at, weekdays, every or cron")),
        }
    }

    /// The first slot strictly after `after`. `anchor` is when the schedule was added
    /// (`every` counts from it). `None` when it never fires again (within [`SEARCH_DAYS`]).
    pub fn next_after(&self, tz: &TimeZone, anchor: Timestamp, after: Timestamp) -> Option<Timestamp> {
        if let Spec::Every(every) = self {
            let step = every.as_secs() as i64;
            let since = after.as_second() - anchor.as_second();
            let k = if since < 0 { 1 } else { since / step + 1 };
            return Timestamp::from_second(anchor.as_second() + k * step).ok();
        }
        let mut date = after.to_zoned(tz.clone()).date().yesterday().ok()?;
        let mut best: Option<Timestamp> = None;
        let mut days_after_first = None;
        for _ in 0..SEARCH_DAYS {
            for slot in self.slots_on(tz, date) {
                if slot > after && best.is_none_or(|b| slot < b) {
                    best = Some(slot);
                }
            }
            // A skipped time moved into the next day's hours, or a day's times out of order
            // around a jump: look two more days past the first find, then take the earliest.
            if best.is_some() {
                let n = days_after_first.get_or_insert(0);
                *n += 1;
                if *n > 2 {
                    break;
                }
            }
            date = date.tomorrow().ok()?;
        }
        best
    }

    /// The slots in `(from, to]`, in order, at most `limit` of them (the newest ones kept).
    pub fn slots_between(
        &self,
        tz: &TimeZone,
        anchor: Timestamp,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Vec<Timestamp> {
        if to <= from {
            return vec![];
        }
        let mut out: Vec<Timestamp> = match self {
            Spec::Every(every) => {
                let step = every.as_secs() as i64;
                let mut all = Vec::new();
                // Only the newest `limit` are kept, so start no earlier than they can be.
                let start = from.as_second().max(to.as_second() - step * limit as i64);
                let mut at = self.next_after(tz, anchor, Timestamp::from_second(start).unwrap_or(from));
                while let Some(s) = at.filter(|s| *s <= to) {
                    all.push(s);
                    at = Timestamp::from_second(s.as_second() + step).ok();
                }
                all
            }
            _ => {
                // Every slot of every day in the range (one day either side for slots that
                // a DST jump moved across midnight), then sorted: a day's times need not
                // come out in order around a jump, and a skipped day's times can coincide
                // with the next day's.
                let (Ok(mut date), Ok(last)) =
                    (from.to_zoned(tz.clone()).date().yesterday(), to.to_zoned(tz.clone()).date().tomorrow())
                else {
                    return vec![];
                };
                let mut all = Vec::new();
                while date <= last {
                    all.extend(self.slots_on(tz, date).into_iter().filter(|s| *s > from && *s <= to));
                    let Ok(next) = date.tomorrow() else { break };
                    date = next;
                }
                all.sort();
                all.dedup();
                all
            }
        };
        if out.len() > limit {
            out.drain(..out.len() - limit);
        }
        out
    }

    /// The instants this spec's wall-clock times mean on `date` (none for `every`).
    fn slots_on(&self, tz: &TimeZone, date: Date) -> Vec<Timestamp> {
        let times: Vec<(i8, i8)> = match self {
            Spec::Daily(t) => vec![(t.hour(), t.minute())],
            Spec::Weekdays(t) if date.weekday().to_monday_zero_offset() < 5 => vec![(t.hour(), t.minute())],
            Spec::Weekdays(_) | Spec::Every(_) => vec![],
            Spec::Cron(c, _) if c.matches_date(date) => c.times().collect(),
            Spec::Cron(..) => vec![],
        };
        times.into_iter().filter_map(|(h, m)| wall_clock(tz, date, h, m)).collect()
    }
}

/// The instant a wall-clock time on `date` means in `tz`: a skipped time as late as the jump
/// is long, a repeated time its first occurrence (jiff's "compatible" disambiguation).
pub fn wall_clock(tz: &TimeZone, date: Date, hour: i8, minute: i8) -> Option<Timestamp> {
    tz.to_ambiguous_timestamp(date.at(hour, minute, 0, 0)).compatible().ok()
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Spec::Daily(t) => write!(f, "at {:02}:{:02}", t.hour(), t.minute()),
            Spec::Weekdays(t) => write!(f, "weekdays {:02}:{:02}", t.hour(), t.minute()),
            Spec::Every(d) => write!(f, "every {}", humantime::format_duration(*d)),
            Spec::Cron(_, text) => write!(f, "cron {text}"),
        }
    }
}

/// `HH:MM`, 24-hour.
pub fn parse_hhmm(s: &str) -> Result<Time, String> {
    let bad = || format!("{s:?} is not a time of day: write HH:MM, 24-hour (09:00, 17:30)");
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i8 = h.parse().map_err(|_| bad())?;
    let m: i8 = m.parse().map_err(|_| bad())?;
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

/// `2h`, `30m`, `1d`: at least [`MIN_EVERY`], at most [`MAX_EVERY`], whole minutes.
pub fn parse_every(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|_| format!("{s:?} is not an interval: write e.g. 30m, 2h or 1d"))?;
    if d < MIN_EVERY || d > MAX_EVERY || d.as_secs() % 60 != 0 || d.subsec_nanos() != 0 {
        return Err(format!("interval {s:?} must be whole minutes, from 1m to 366d"));
    }
    Ok(d)
}

/// A time zone by its tz database name (`Europe/Berlin`), or `UTC`.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| {
        format!("unknown time zone {name:?}: use a tz database name such as Europe/Berlin or America/New_York")
    })
}

/// The lead's own time zone's name (from `TZ` or `/etc/localtime`), `UTC` when it has none.
pub fn local_zone_name() -> String {
    TimeZone::system().iana_name().unwrap_or("UTC").to_string()
}

#[cfg(test)]
mod tests;
