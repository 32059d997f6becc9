//! Next-fire computation: examples at known DST changes, and properties across zones.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::{AmbiguousOffset, TimeZone};
use proptest::prelude::*;

use super::catch_up::{self, ALL_MAX_BACKLOG, ALL_PER_TICK, CatchUp};
use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn at(hhmm: &str) -> Spec {
    Spec::parse(&format!("at {hhmm}")).unwrap()
}

const ANCHOR: &str = "2020-01-01T00:00:00Z";

fn next(spec: &Spec, zone: &str, after: &str) -> String {
    spec.next_after(&time_zone(zone).unwrap(), ts(ANCHOR), ts(after)).unwrap().to_string()
}

#[test]
fn a_skipped_time_fires_once_as_late_as_the_jump_and_a_repeated_time_once_at_its_first_occurrence() {
    // New York springs forward on 2026-03-08 at 02:00 EST (07:00Z) to 03:00 EDT.
    let spring = at("02:30");
    assert_eq!(next(&spring, "America/New_York", "2026-03-07T12:00:00Z"), "2026-03-08T07:30:00Z", "03:30 EDT");
    assert_eq!(next(&spring, "America/New_York", "2026-03-08T07:30:00Z"), "2026-03-09T06:30:00Z", "02:30 EDT");
    // It falls back on 2026-11-01 at 02:00 EDT (06:00Z) to 01:00 EST: 01:30 happens twice.
    let fall = at("01:30");
    assert_eq!(next(&fall, "America/New_York", "2026-10-31T12:00:00Z"), "2026-11-01T05:30:00Z", "01:30 EDT");
    assert_eq!(next(&fall, "America/New_York", "2026-11-01T05:30:00Z"), "2026-11-02T06:30:00Z", "not 01:30 EST too");
    // Berlin's jump is at 02:00 CET on 2026-03-29.
    assert_eq!(next(&spring, "Europe/Berlin", "2026-03-28T12:00:00Z"), "2026-03-29T01:30:00Z", "03:30 CEST");
    // A cron expression every half hour crosses the fall-back hour once.
    let half = Spec::parse("cron */30 * * * *").unwrap();
    let tz = time_zone("America/New_York").unwrap();
    let slots = half.slots_between(&tz, ts(ANCHOR), ts("2026-11-01T04:45:00Z"), ts("2026-11-01T07:45:00Z"), 100);
    let shown: Vec<String> = slots.iter().map(|s| s.to_zoned(tz.clone()).strftime("%H:%M %Z").to_string()).collect();
    assert_eq!(shown, ["01:00 EDT", "01:30 EDT", "02:00 EST", "02:30 EST"]);
}

#[test]
fn weekdays_every_and_cron_specs() {
    let wd = Spec::parse("weekdays 09:00").unwrap();
    // 2026-01-02 is a Friday: the next is Monday.
    assert_eq!(next(&wd, "UTC", "2026-01-02T10:00:00Z"), "2026-01-05T09:00:00Z");
    let every = Spec::parse("every 2h").unwrap();
    assert_eq!(every.to_string(), "every 2h");
    // Counted from the anchor, whatever the wall clock says.
    assert_eq!(next(&every, "America/New_York", "2026-03-08T06:59:59Z"), "2026-03-08T08:00:00Z");
    let cron = Spec::parse("cron 15  9 * *  mon-fri").unwrap();
    assert_eq!(cron.to_string(), "cron 15 9 * * mon-fri");
    assert_eq!(next(&cron, "Asia/Kolkata", "2026-01-02T04:00:00Z"), "2026-01-05T03:45:00Z", "09:15 IST Monday");
    // A day that never comes.
    let never = Spec::parse("cron 0 0 30 2 *").unwrap();
    assert_eq!(never.next_after(&TimeZone::UTC, ts(ANCHOR), ts(ANCHOR)), None);
}

#[test]
fn bad_specs_say_how_to_write_them() {
    for (spec, says) in [
        ("at 9", "HH:MM"),
        ("at 24:00", "HH:MM"),
        ("at 09:60", "HH:MM"),
        ("every 10s", "from 1m"),
        ("every soon", "30m, 2h"),
        ("every 90s", "whole minutes"),
        ("hourly 1", "use at, weekdays, every or cron"),
        ("cron * * *", "5 fields"),
    ] {
        let err = Spec::parse(spec).unwrap_err();
        assert!(err.contains(says), "{spec}: {err}");
    }
    assert!(time_zone("Mars/Olympus").unwrap_err().contains("tz database name"));
}

fn plan_at(policy: CatchUp, decided: &str, now: &str) -> catch_up::Plan {
    catch_up::plan(&Spec::parse("every 1h").unwrap(), &TimeZone::UTC, ts(ANCHOR), ts(decided), ts(now), policy)
}

#[test]
fn catch_up_policies_after_a_simulated_sleep() {
    // Asleep from 00:30 to 05:05: slots 01:00 to 05:00 are due; 05:00 is on time.
    let skip = plan_at(CatchUp::Skip, "2026-01-01T00:30:00Z", "2026-01-01T05:05:00Z");
    assert_eq!(skip.fire, [ts("2026-01-01T05:00:00Z")]);
    let m = skip.missed.unwrap();
    assert_eq!((m.count, m.first, m.last), (4, ts("2026-01-01T01:00:00Z"), ts("2026-01-01T04:00:00Z")));
    // Woken long after the last slot: skip fires nothing, once fires the newest.
    let skip = plan_at(CatchUp::Skip, "2026-01-01T00:30:00Z", "2026-01-01T05:40:00Z");
    assert!(skip.fire.is_empty());
    assert_eq!(skip.missed.unwrap().count, 5);
    let once = plan_at(CatchUp::Once, "2026-01-01T00:30:00Z", "2026-01-01T05:40:00Z");
    assert_eq!(once.fire, [ts("2026-01-01T05:00:00Z")]);
    assert_eq!(once.missed.unwrap().count, 4);
    assert_eq!(once.decided_until, ts("2026-01-01T05:40:00Z"));
    // All: a bounded backlog, a few per tick, each tick carrying on where the last stopped.
    let mut decided = ts("2025-12-30T00:30:00Z");
    let now = ts("2026-01-01T05:40:00Z");
    let mut fired = Vec::new();
    let mut missed = 0;
    for _ in 0..100 {
        let p =
            catch_up::plan(&Spec::parse("every 1h").unwrap(), &TimeZone::UTC, ts(ANCHOR), decided, now, CatchUp::All);
        assert!(p.fire.len() <= ALL_PER_TICK, "{p:?}");
        missed += p.missed.map_or(0, |m| m.count);
        fired.extend(p.fire);
        decided = p.decided_until;
        if decided == now {
            break;
        }
    }
    assert_eq!(fired.len(), ALL_MAX_BACKLOG);
    assert_eq!(missed, 53 - ALL_MAX_BACKLOG, "53 hourly slots from 2025-12-30 01:00 to 2026-01-01 05:00");
    assert!(fired.windows(2).all(|w| w[0] < w[1]), "oldest first, none twice");
    assert_eq!(fired.last(), Some(&ts("2026-01-01T05:00:00Z")));
    // Nothing due: nothing fires, nothing is missed.
    let idle = plan_at(CatchUp::All, "2026-01-01T05:00:00Z", "2026-01-01T05:40:00Z");
    assert_eq!((idle.fire.len(), idle.missed), (0, None));
}

const ZONES: &[&str] = &[
    "America/New_York",
    "Europe/Berlin",
    "Europe/London",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Santiago",
    "Asia/Tehran",
    "Asia/Kolkata",
    "America/St_Johns",
    "UTC",
];

/// Whether the wall-clock time `h:m` does not exist on `d` in `tz` (the clocks skip it).
fn skipped(tz: &TimeZone, d: Date, h: i8, m: i8) -> bool {
    matches!(tz.to_ambiguous_timestamp(d.at(h, m, 0, 0)).offset(), AmbiguousOffset::Gap { .. })
}

/// The first occurrences of wall-clock `h:m` in `(from, to)`: where a daily slot must fire.
fn first_occurrences(tz: &TimeZone, from: Timestamp, to: Timestamp, h: i8, m: i8) -> Vec<Timestamp> {
    let mut d = from.to_zoned(tz.clone()).date().yesterday().unwrap();
    let end = to.to_zoned(tz.clone()).date().tomorrow().unwrap();
    let mut out = vec![];
    while d <= end {
        if let Ok(t) = tz.to_ambiguous_timestamp(d.at(h, m, 0, 0)).earlier()
            && t > from
            && t < to
            && !skipped(tz, d, h, m)
        {
            out.push(t);
        }
        d = d.tomorrow().unwrap();
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn daily_slots_fire_once_a_day_at_their_wall_clock_time_in_every_zone(
        zone in prop::sample::select(ZONES),
        h in 0i8..24,
        m in prop::sample::select(&[0i8, 15, 30, 45][..]),
        secs in 1_577_836_800i64..1_893_456_000, // 2020 to 2030
        near_change in any::<bool>(),
        before_change in 0i64..36 * 3600,
        around in -6i64..6,
    ) {
        let tz = time_zone(zone).unwrap();
        let (mut h, mut m, mut secs) = (h, m, secs);
        if near_change {
            // Most draws would never meet a DST change: half of them are steered onto one,
            // the slot a wall-clock time within 90 minutes of it, the clock before it.
            if let Some(change) = tz.following(Timestamp::from_second(secs).unwrap()).next() {
                let t = change.timestamp().as_second();
                let local = Timestamp::from_second(t + around * 15 * 60).unwrap().to_zoned(tz.clone());
                (h, m) = (local.hour(), local.minute() / 15 * 15);
                secs = t - before_change;
            }
        }
        let tz = time_zone(zone).unwrap();
        let spec = Spec::Daily(jiff::civil::Time::new(h, m, 0, 0).unwrap());
        let after = Timestamp::from_second(secs).unwrap();
        let n = spec.next_after(&tz, ts(ANCHOR), after).unwrap();
        prop_assert!(n > after);
        let local = n.to_zoned(tz.clone());
        if (local.hour(), local.minute()) != (h, m) {
            // Only a skipped time fires at another wall-clock time: later, by the jump.
            let day = local.date();
            prop_assert!(skipped(&tz, day, h, m) || skipped(&tz, day.yesterday().unwrap(), h, m),
                "{zone}: {n} is {local}, not {h}:{m}, and {h}:{m} was not skipped");
        } else {
            // And at its first occurrence when the clocks pass it twice.
            let earlier = tz.to_ambiguous_timestamp(local.datetime()).earlier().unwrap();
            prop_assert_eq!(earlier, n, "{}: {} is the second occurrence of {}:{}", zone, n, h, m);
        }
        // No first occurrence of the time was passed over.
        prop_assert_eq!(first_occurrences(&tz, after, n, h, m), vec![], "{} skipped a slot before {}", zone, n);
        // The following one is about a day later: never twice around a fall-back.
        let n2 = spec.next_after(&tz, ts(ANCHOR), n).unwrap();
        let gap = n2.duration_since(n).as_hours();
        prop_assert!((22..=26).contains(&gap), "{}: {} then {} ({}h)", zone, n, n2, gap);
    }

    #[test]
    fn cron_agrees_with_daily_and_weekday_specs_and_slots_agree_with_next_after(
        zone in prop::sample::select(ZONES),
        h in 0i8..24,
        m in 0i8..60,
        secs in 1_577_836_800i64..1_893_456_000,
    ) {
        let tz = time_zone(zone).unwrap();
        let after = Timestamp::from_second(secs).unwrap();
        let daily = Spec::parse(&format!("at {h:02}:{m:02}")).unwrap();
        let cron = Spec::parse(&format!("cron {m} {h} * * *")).unwrap();
        prop_assert_eq!(daily.next_after(&tz, ts(ANCHOR), after), cron.next_after(&tz, ts(ANCHOR), after));
        let weekdays = Spec::parse(&format!("weekdays {h:02}:{m:02}")).unwrap();
        let cron_wd = Spec::parse(&format!("cron {m} {h} * * 1-5")).unwrap();
        let w = weekdays.next_after(&tz, ts(ANCHOR), after).unwrap();
        prop_assert_eq!(Some(w), cron_wd.next_after(&tz, ts(ANCHOR), after));
        // slots_between walks the same slots next_after does.
        let until = after.checked_add(jiff::SignedDuration::from_hours(24 * 9)).unwrap();
        let slots = cron_wd.slots_between(&tz, ts(ANCHOR), after, until, 100);
        let mut walked = vec![];
        let mut at = after;
        while let Some(s) = cron_wd.next_after(&tz, ts(ANCHOR), at).filter(|s| *s <= until) {
            walked.push(s);
            at = s;
        }
        prop_assert_eq!(slots, walked);
    }
}

#[test]
fn a_zone_name_is_needed_for_the_lead_s_zone() {
    // Whatever this machine's zone, it names a zone the tz database knows.
    assert!(time_zone(&local_zone_name()).is_ok());
}
