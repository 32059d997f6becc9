//! The per-run row caps and the offset check, applied by the store under the write lock.

use std::collections::BTreeMap;

use super::tests::{new_task, temp_dir};
use super::*;
use crate::mailbox::row_caps::{MAX_EVENTS_PER_RUN, MAX_REPORTS_PER_RUN, OVER_CAP_EVENT, Skipped};

fn event(n: usize) -> NewEvent {
    NewEvent { at: "2026-11-21T10:00:00Z".into(), kind: "e".into(), summary: format!("{n}"), data: None }
}

fn report(seq: i64) -> NewMessage {
    NewMessage { seq, kind: "progress".into(), text: "p".into(), at: "2026-11-21T10:00:00Z".into() }
}

/// An ingest that moves events.jsonl from `from` to `to`.
fn ingest(task_id: i64, from: u64, to: u64) -> Ingest {
    Ingest {
        task_id,
        run_no: 1,
        expected_version: 1,
        read_offsets: BTreeMap::from([("events.jsonl".to_string(), from)]),
        offsets: BTreeMap::from([("events.jsonl".to_string(), to)]),
        ..Default::default()
    }
}

fn count(s: &Store, sql: &str, task: i64) -> i64 {
    s.conn.query_row(sql, [task], |r| r.get(0)).unwrap()
}

#[test]
fn rows_over_the_per_run_caps_are_counted_in_one_event_and_the_offsets_still_move() {
    let dir = temp_dir("caps");
    let mut s = Store::open(&dir).unwrap();
    let task = s.create_task(&new_task(b"p")).unwrap().task_id;
    let mut first = ingest(task, 0, 100);
    first.events = (0..MAX_EVENTS_PER_RUN as usize - 10).map(event).collect();
    first.messages = (0..MAX_REPORTS_PER_RUN as i64 - 1).map(report).collect();
    assert_eq!(s.apply_sync(&[first]).unwrap(), [(task, Applied::Done { new_status: None })]);
    let events = "SELECT count(*) FROM events WHERE task_id = ?1 AND kind = 'e'";
    let reports = "SELECT count(*) FROM messages WHERE task_id = ?1";
    let notes = "SELECT count(*) FROM events WHERE task_id = ?1 AND kind = 'over_cap'";
    assert_eq!((count(&s, events, task), count(&s, notes, task)), (MAX_EVENTS_PER_RUN as i64 - 10, 0));

    // 25 more events fit 10; 3 reports fit 1 (a report seen before does not use the room);
    // what the sync had already left out is added to the same count.
    let mut second = ingest(task, 100, 200);
    second.events = (0..25).map(event).collect();
    second.messages = vec![report(0), report(7000), report(7001), report(7002)];
    second.skipped = Skipped { events: 1000, reports: 0, receipts: 4 };
    s.apply_sync(&[second]).unwrap();
    assert_eq!(count(&s, events, task), MAX_EVENTS_PER_RUN as i64);
    assert_eq!(count(&s, reports, task), MAX_REPORTS_PER_RUN as i64);
    // Later syncs add to the one event instead of adding rows; it moves to the newest end.
    let note_id = |s: &Store| count(s, "SELECT id FROM events WHERE task_id = ?1 AND kind = 'over_cap'", task);
    let before = note_id(&s);
    let mut third = ingest(task, 200, 300);
    third.events = (0..5).map(event).collect();
    s.apply_sync(&[third]).unwrap();
    assert_eq!((count(&s, events, task), count(&s, notes, task)), (MAX_EVENTS_PER_RUN as i64, 1));
    assert!(note_id(&s) > before);
    let (summary, data): (String, String) = s
        .conn
        .query_row("SELECT summary, data FROM events WHERE kind = ?1", [OVER_CAP_EVENT], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    let total: Skipped = serde_json::from_str(&data).unwrap();
    assert_eq!(total, Skipped { events: 1000 + 15 + 5, reports: 2, receipts: 4 });
    assert!(
        summary.contains("1020 events") && summary.contains(&format!("delegate logs {task} --events")),
        "{summary}"
    );
    let offset: i64 = s.conn.query_row("SELECT offset FROM offsets WHERE task_id = ?1", [task], |r| r.get(0)).unwrap();
    assert_eq!(offset, 300, "the offset moves over what was left out");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lines_another_sync_already_landed_are_not_stored_twice() {
    let dir = temp_dir("offset-race");
    let mut s = Store::open(&dir).unwrap();
    let task = s.create_task(&new_task(b"p")).unwrap().task_id;
    // Two commands read the same bytes from offset 0; the second to apply finds the offset
    // moved (no status change, so the version alone would not tell) and stores nothing.
    let mut one = ingest(task, 0, 100);
    one.events = (0..3).map(event).collect();
    let two = one.clone();
    assert_eq!(s.apply_sync(&[one]).unwrap(), [(task, Applied::Done { new_status: None })]);
    assert_eq!(s.apply_sync(&[two]).unwrap(), [(task, Applied::Conflict)]);
    assert_eq!(count(&s, "SELECT count(*) FROM events WHERE task_id = ?1", task), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_big_sync_commits_in_bounded_transactions_of_whole_tasks() {
    use crate::mailbox::row_caps::MAX_ROWS_PER_TRANSACTION;
    let sized = |events: usize| {
        let mut i = ingest(1, 0, 1);
        i.events = (0..events).map(event).collect();
        i
    };
    let sizes = |batch: &[Ingest]| {
        let refs: Vec<&Ingest> = batch.iter().collect();
        super::lifecycle::transactions(&refs).iter().map(|c| c.len()).collect::<Vec<_>>()
    };
    // Small tasks share one; two of half the budget do not fit one (offsets and the task
    // row count too); a task over the budget is never split.
    assert_eq!(sizes(&[sized(10), sized(10), sized(10)]), [3]);
    let half = MAX_ROWS_PER_TRANSACTION / 2;
    assert_eq!(sizes(&[sized(half), sized(half), sized(half)]), [1, 1, 1]);
    assert_eq!(sizes(&[sized(MAX_ROWS_PER_TRANSACTION * 2), sized(1), sized(1)]), [1, 2]);
    assert!(sizes(&[]).is_empty());
}

#[test]
fn a_run_clock_is_stored_with_its_task_and_a_task_with_nothing_new_gets_its_synced_at() {
    let dir = temp_dir("seen");
    let mut s = Store::open(&dir).unwrap();
    let task = s.create_task(&new_task(b"p")).unwrap().task_id;
    let clock = |s: &Store| -> Option<i64> {
        s.conn.query_row("SELECT offset FROM offsets WHERE task_id = ?1 AND file = '@clock'", [task], |r| r.get(0)).ok()
    };
    let seen = |clock_ms, version| Ingest {
        task_id: task,
        run_no: 1,
        expected_version: version,
        clock_ms: Some(clock_ms),
        ..Default::default()
    };
    assert_eq!(s.apply_sync(&[seen(Some(42), 1)]).unwrap(), [(task, Applied::Done { new_status: None })]);
    assert_eq!(clock(&s), Some(42));
    // Read at another version (a concurrent change): a conflict, and nothing is written.
    assert_eq!(s.apply_sync(&[seen(Some(99), 7)]).unwrap(), [(task, Applied::Conflict)]);
    assert_eq!(clock(&s), Some(42));
    // Nothing at all: only the task's synced_at, for any number of tasks in one statement.
    let quiet = Ingest { task_id: task, run_no: 1, expected_version: 1, ..Default::default() };
    assert_eq!(s.apply_sync(&[quiet]).unwrap(), [(task, Applied::Done { new_status: None })]);
    assert_eq!(count(&s, "SELECT count(*) FROM tasks WHERE id = ?1 AND synced_at IS NOT NULL", task), 1);
    assert_eq!(clock(&s), Some(42));
    // Forgotten: the next sync looks at every file again.
    s.apply_sync(&[seen(None, 1)]).unwrap();
    assert_eq!(clock(&s), None);
    // With something to write, the clock goes with it, in the task's own transaction.
    let mut moved = ingest(task, 0, 10);
    moved.clock_ms = Some(Some(50));
    s.apply_sync(&[moved]).unwrap();
    assert_eq!(clock(&s), Some(50));
}
