//! Standard 5-field cron expressions: `minute hour day-of-month month day-of-week`, each a
//! `*`, a number, a range `a-b`, a step `*/n`, `a-b/n` or `a/n`, or a comma list of these;
//! months and weekdays also by name (`jan`, `mon-fri`); weekday 0 and 7 are Sunday. As in
//! Vixie cron, when both day fields are restricted a day matching either one matches.

use jiff::civil::Date;

/// A parsed expression: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// The day fields were `*` (or `*/1`): only the other one restricts the day.
    days_any: bool,
    weekdays_any: bool,
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The value the first name stands for (jan = 1, sun = 0).
    names_from: u32,
}

const FIELDS: [Field; 5] = [
    Field { name: "minute", min: 0, max: 59, names: &[], names_from: 0 },
    Field { name: "hour", min: 0, max: 23, names: &[], names_from: 0 },
    Field { name: "day of month", min: 1, max: 31, names: &[], names_from: 0 },
    Field { name: "month", min: 1, max: 12, names: &MONTHS, names_from: 1 },
    // 7 is accepted as Sunday and folded onto 0 below.
    Field { name: "day of week", min: 0, max: 7, names: &WEEKDAYS, names_from: 0 },
];

impl Cron {
    pub fn parse(expr: &str) -> Result<Cron, String> {
        let parts: Vec<&str> = expr.split_ascii_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "a cron expression has 5 fields (minute hour day-of-month month day-of-week), {:?} has {}",
                expr,
                parts.len()
            ));
        }
        let mut bits = [0u64; 5];
        let mut any = [false; 5];
        for (i, (part, field)) in parts.iter().zip(FIELDS.iter()).enumerate() {
            (bits[i], any[i]) = parse_field(part, field)?;
        }
        // Sunday may be written 7.
        let weekdays = ((bits[4] | (bits[4] >> 7)) & 0x7f) as u8;
        Ok(Cron {
            minutes: bits[0],
            hours: bits[1] as u32,
            days: bits[2] as u32,
            months: bits[3] as u16,
            weekdays,
            days_any: any[2],
            weekdays_any: any[4],
        })
    }

    /// Whether the expression fires on `date` (at some time of it).
    pub fn matches_date(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let day = self.days & (1 << date.day()) != 0;
        let weekday = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (true, false) => weekday,
            (false, true) => day,
            (false, false) => day || weekday,
        }
    }

    /// The (hour, minute) pairs it fires at on a matching day, in order.
    pub fn times(&self) -> impl Iterator<Item = (i8, i8)> + '_ {
        (0..24i8)
            .filter(|h| self.hours & (1 << h) != 0)
            .flat_map(move |h| (0..60i8).filter(move |m| self.minutes & (1u64 << m) != 0).map(move |m| (h, m)))
    }
}

/// One field's bits, and whether it allows every value (`*`).
fn parse_field(text: &str, f: &Field) -> Result<(u64, bool), String> {
    let bad = |why: String| format!("cron {} field {text:?}: {why}", f.name);
    let mut bits = 0u64;
    let mut every = false;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| bad(format!("step {s:?} is not a number")))?;
                if step == 0 {
                    return Err(bad("a step of 0 never advances".into()));
                }
                (r, step)
            }
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            every |= step == 1;
            (f.min, f.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, f).map_err(&bad)?, value(b, f).map_err(&bad)?)
        } else {
            let v = value(range, f).map_err(&bad)?;
            // `a/n` runs from a to the field's end.
            (v, if item.contains('/') { f.max } else { v })
        };
        if lo > hi {
            return Err(bad(format!("range {lo}-{hi} runs backwards")));
        }
        for v in (lo..=hi).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok((bits, every))
}

fn value(s: &str, f: &Field) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = f.names.iter().position(|n| *n == lower) {
        return Ok(f.names_from + i as u32);
    }
    let v: u32 = s.parse().map_err(|_| {
        if f.names.is_empty() {
            format!("{s:?} is not a number")
        } else {
            format!("{s:?} is neither a number nor one of {}", f.names.join(", "))
        }
    })?;
    if v < f.min || v > f.max {
        return Err(format!("{v} is outside {}-{}", f.min, f.max));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn fields_take_ranges_steps_lists_and_names() {
        let c = Cron::parse("*/15 9-17/4 * jan,JUL mon-fri").unwrap();
        assert_eq!(c.times().collect::<Vec<_>>().len(), 4 * 3);
        assert_eq!(c.times().next(), Some((9, 0)));
        assert_eq!(c.times().last(), Some((17, 45)));
        assert!(c.matches_date(date(2026, 1, 5)), "a Monday in January");
        assert!(!c.matches_date(date(2026, 1, 4)), "a Sunday");
        assert!(!c.matches_date(date(2026, 2, 2)), "February");
        // 7 is Sunday too; `a/n` steps from a to the end.
        let sun = Cron::parse("5/20 0 * * 7").unwrap();
        assert!(sun.matches_date(date(2026, 1, 4)));
        assert_eq!(sun.times().collect::<Vec<_>>(), [(0, 5), (0, 25), (0, 45)]);
    }

    #[test]
    fn both_day_fields_restricted_means_either_matches() {
        let c = Cron::parse("0 0 13 * fri").unwrap();
        assert!(c.matches_date(date(2026, 1, 13)), "the 13th (a Tuesday)");
        assert!(c.matches_date(date(2026, 1, 2)), "a Friday");
        assert!(!c.matches_date(date(2026, 1, 3)));
        // Only one restricted: that one decides.
        assert!(!Cron::parse("0 0 13 * *").unwrap().matches_date(date(2026, 1, 2)));
    }

    #[test]
    fn mistakes_are_named() {
        for (expr, says) in [
            ("* * * *", "5 fields"),
            ("60 * * * *", "minute field \"60\": 60 is outside 0-59"),
            ("* * * foo *", "neither a number nor one of jan"),
            ("*/0 * * * *", "step of 0"),
            ("5-1 * * * *", "runs backwards"),
            ("* * 0 * *", "outside 1-31"),
        ] {
            let err = Cron::parse(expr).unwrap_err();
            assert!(err.contains(says), "{expr}: {err}");
        }
    }
}
