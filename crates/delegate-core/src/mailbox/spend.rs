//! Daily spend caps: a brother's or host's `max_usd_per_day`, checked against what the runs'
//! streams reported since the lead's local midnight. The figures come from brothers, which
//! are untrusted: an impossible cost is left out exactly as `delegate usage` leaves it out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::usage::valid_cost;
use crate::error::{Error, Result};

/// One daily cap as the inventory sets it now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DailyCap {
    pub usd: f64,
    /// `over_cap = "queue"`: a launch over the cap waits queued instead of being refused.
    pub queue: bool,
}

/// A cap reached: which one and the figures, for the refusal or the queued task's reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Reached {
    /// `brother NAME` or `host NAME`.
    pub which: String,
    pub spent: f64,
    pub cap: f64,
    pub queue: bool,
}

impl Reached {
    /// The queued task's reason, naming the cap and the figures.
    pub fn queue_reason(&self) -> String {
        format!(
            "waiting for the daily spend cap of {}: ${:.4} spent today, max_usd_per_day = ${:.2}; starts after \
             midnight (lead's clock) or once the cap is raised",
            self.which, self.spent, self.cap
        )
    }

    pub fn into_error(self) -> Error {
        Error::OverDailyCap { which: self.which, spent: self.spent, cap: self.cap }
    }
}

/// The start of the lead's local day containing `now` (local midnight, DST included), as
/// the mailbox writes times, so it compares with `runs.started_at` as text.
pub fn day_start(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let t = libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX);
    // SAFETY: localtime_r and mktime only read and write the tm we own.
    let midnight = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            None
        } else {
            tm.tm_hour = 0;
            tm.tm_min = 0;
            tm.tm_sec = 0;
            // Let mktime decide whether DST applied at midnight.
            tm.tm_isdst = -1;
            let m = libc::mktime(&mut tm);
            u64::try_from(m).ok()
        }
    };
    // Without a local time zone answer, the UTC day.
    let start = midnight.unwrap_or(secs - secs % 86_400);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_secs(start)).to_string()
}

/// Dollars reported by runs of tasks whose `column` (`brother` or `host`) is `value`,
/// started at or after `since`.
pub(super) fn spent_since(conn: &rusqlite::Connection, column: &str, value: &str, since: &str) -> Result<f64> {
    let sql = format!(
        "SELECT r.facts FROM runs r JOIN tasks t ON t.id = r.task_id WHERE t.{column} = ?1 AND r.started_at >= ?2"
    );
    let mut st = conn.prepare(&sql)?;
    let mut rows = st.query([value, since])?;
    let mut total = 0.0;
    while let Some(r) = rows.next()? {
        let facts: Option<String> = r.get(0)?;
        let facts: serde_json::Value =
            facts.and_then(|f| serde_json::from_str(&f).ok()).unwrap_or(serde_json::Value::Null);
        total += valid_cost(&facts["cost_usd"]).unwrap_or(0.0);
    }
    Ok(total)
}

/// The first of the brother's and the host's daily caps that today's spend has reached.
pub(super) fn reached(
    conn: &rusqlite::Connection,
    host: &str,
    brother: &str,
    caps: [Option<DailyCap>; 2],
) -> Result<Option<Reached>> {
    let [brother_cap, host_cap] = caps;
    if brother_cap.is_none() && host_cap.is_none() {
        return Ok(None);
    }
    let since = day_start(SystemTime::now());
    for (column, value, cap) in [("brother", brother, brother_cap), ("host", host, host_cap)] {
        let Some(cap) = cap else { continue };
        let spent = spent_since(conn, column, value, &since)?;
        if spent >= cap.usd {
            return Ok(Some(Reached { which: format!("{column} {value}"), spent, cap: cap.usd, queue: cap.queue }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::mailbox::tests::{new_task, temp_dir};
    use crate::mailbox::{Caps, NewTask, Store};
    use crate::task::TaskStatus;

    /// Sets what a run's stream reported, and when the run started.
    fn reported(s: &Store, task: i64, cost: serde_json::Value, started_at: &str) {
        s.conn
            .execute(
                "UPDATE runs SET facts = ?2, started_at = ?3 WHERE task_id = ?1",
                rusqlite::params![task, serde_json::json!({ "cost_usd": cost }).to_string(), started_at],
            )
            .unwrap();
    }

    fn today(offset_secs: u64) -> String {
        let start = humantime::parse_rfc3339(&day_start(SystemTime::now())).unwrap();
        humantime::format_rfc3339_millis(start + Duration::from_secs(offset_secs)).to_string()
    }

    #[test]
    fn the_day_starts_at_local_midnight_and_compares_as_text() {
        let now = SystemTime::now();
        let start = day_start(now);
        let at = humantime::parse_rfc3339(&start).unwrap();
        assert!(at <= now && now.duration_since(at).unwrap() < Duration::from_secs(25 * 3600), "{start}");
        assert_eq!(start.len(), super::super::now().len(), "same text form as started_at: {start}");
    }

    #[test]
    fn a_daily_cap_refuses_or_queues_with_the_figures_and_only_todays_honest_spend_counts() {
        let mut s = Store::open(&temp_dir("spend")).unwrap();
        let a = s.create_task(&new_task(b"a")).unwrap();
        let b = s.create_task(&new_task(b"b")).unwrap();
        let lie = s.create_task(&new_task(b"lie")).unwrap();
        let old = s.create_task(&new_task(b"old")).unwrap();
        reported(&s, a.task_id, 0.75.into(), &today(60));
        reported(&s, b.task_id, 0.5.into(), &today(120));
        // A hostile brother's impossible cost is not spend; yesterday's spend is not today's.
        reported(&s, lie.task_id, 1e300.into(), &today(180));
        reported(&s, old.task_id, 50.0.into(), "2000-01-01T12:00:00.000Z");
        let since = day_start(SystemTime::now());
        assert_eq!(spent_since(&s.conn, "brother", "oppy", &since).unwrap(), 1.25);
        assert_eq!(spent_since(&s.conn, "host", "masuda", &since).unwrap(), 1.25);
        assert_eq!(spent_since(&s.conn, "brother", "jerry", &since).unwrap(), 0.0);

        let cap = |usd, queue| Some(DailyCap { usd, queue });
        // Under the cap: starts.
        let under = Caps { brother_daily: cap(2.0, false), ..Caps::default() };
        assert!(!s.create_task(&NewTask { caps: under, ..new_task(b"under") }).unwrap().queued);
        // Over the brother's cap, refusing: an error with the figures, nothing recorded.
        let before = s.list(&Default::default()).unwrap().len();
        let refuse = Caps { brother_daily: cap(1.25, false), ..Caps::default() };
        let err = s.create_task(&NewTask { caps: refuse, ..new_task(b"over") }).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OverDailyCap);
        let text = err.to_string();
        assert!(text.contains("brother oppy") && text.contains("$1.2500") && text.contains("$1.25"), "{text}");
        assert_eq!(s.list(&Default::default()).unwrap().len(), before, "nothing recorded");
        // The host's cap counts every brother on it.
        let host = Caps { host_daily: cap(1.0, false), ..Caps::default() };
        let err = s.create_task(&NewTask { brother: "jerry", caps: host, ..new_task(b"h") }).unwrap_err();
        assert!(err.to_string().contains("host masuda"), "{err}");

        // Queueing: recorded queued, the reason naming the cap; held while the spend is over.
        let queue = Caps { brother_daily: cap(1.0, true), ..Caps::default() };
        let q = s.create_task(&NewTask { caps: queue, ..new_task(b"later") }).unwrap();
        let t = s.task(q.task_id).unwrap();
        assert_eq!(t.status, TaskStatus::Queued);
        let reason = t.reason.clone().unwrap_or_default();
        assert!(reason.contains("daily spend cap of brother oppy") && reason.contains("$1.2500"), "{reason}");
        assert!(s.start_queued(q.task_id, queue).unwrap().is_none(), "still over the cap");
        // The cap raised (or the day rolled over: the spend moved to yesterday): it starts.
        reported(&s, a.task_id, 0.75.into(), "2000-01-01T00:00:00.000Z");
        reported(&s, b.task_id, 0.5.into(), "2000-01-01T00:00:00.000Z");
        assert!(s.start_queued(q.task_id, queue).unwrap().is_some(), "a new day");
    }
}
