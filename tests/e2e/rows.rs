//! A brother that floods its task files with tiny lines cannot grow the mailbox without limit
//! nor hold its write lock: rows are capped per sync and per run, the excess is counted in
//! one event, offsets still reach the end, and other processes keep writing meanwhile.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use delegate_core::mailbox::row_caps::{MAX_EVENTS_PER_RUN, MAX_REPORTS_PER_RUN, Skipped};
use delegate_testkit::FakeHost;

use crate::support::{Env, install_agent, launch, remote_dir, wait_done};

const EVENTS: u64 = 2_000_000;
/// Enough lines for more rounds than the per-run cap of reports takes at the per-sync cap.
const REPORTS: u64 = 500_000;
/// How long another writer may wait while the flood lands. Far above one bounded
/// transaction (well under a second even here), far below the 10+ s a whole round's rows
/// in one transaction held the lock before the caps.
const WRITER_LIMIT: Duration = Duration::from_secs(8);

fn write_lines(path: &std::path::Path, n: u64, line: impl Fn(u64) -> String) {
    let file = std::fs::OpenOptions::new().append(true).create(true).open(path).unwrap();
    let mut f = std::io::BufWriter::new(file);
    for i in 0..n {
        writeln!(f, "{}", line(i)).unwrap();
    }
}

fn query(env: &Env, sql: &str, task: i64) -> i64 {
    let db = rusqlite::Connection::open(env.data.join("mailbox.db")).unwrap();
    db.query_row(sql, [task], |r| r.get(0)).unwrap()
}

#[test]
fn a_flood_of_events_and_reports_is_capped_counted_in_one_event_and_never_holds_the_mailbox() {
    let host = FakeHost::start();
    // An agent that writes nothing itself (the flood is all there is), ending at once for
    // the task that is only there to be written to.
    install_agent(&host, "claude", "#!/bin/bash\np=$(cat)\n[[ $p == *quick* ]] || sleep 600\n");
    let env = Env::with_brother(&host, "claude", "read");
    let other = launch(&env, &["oppy", "quick", "--json"]);
    wait_done(&env, other);
    let id = launch(&env, &["oppy", "flood", "--json"]);
    let dir = remote_dir(&env, id);
    write_lines(&dir.join("events.jsonl"), EVENTS, |_| r#"{"event":"e"}"#.into());
    // Every line a report of its own number.
    write_lines(&dir.join("outbox.jsonl"), REPORTS, |i| format!(r#"{{"seq":{i},"kind":"progress","text":"p"}}"#));

    // The flood lands through a `delegate sync`, while another process writes the mailbox
    // (`update` needs its write lock) over and over, and a `delegate list` runs too.
    let mut sync = env.command().args(["sync"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    let list = {
        let mut c = env.command();
        c.args(["list"]).stdout(Stdio::null()).stderr(Stdio::null());
        std::thread::spawn(move || {
            let t = Instant::now();
            (c.status().unwrap(), t.elapsed())
        })
    };
    let mut writes = Vec::new();
    while sync.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(110), "the sync hangs");
        let t = Instant::now();
        env.run(&["update", &other.to_string(), "--status", "completed", "--output", "ping"]).ok();
        writes.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sync.wait().unwrap().success());
    let slowest = writes.iter().max().copied().unwrap_or_default();
    assert!(writes.len() >= 2, "the sync took {:?}: too short to have been overlapped", started.elapsed());
    assert!(slowest < WRITER_LIMIT, "a writer waited {slowest:?} for the mailbox: {writes:?}");
    let (listed, took) = list.join().unwrap();
    assert!(listed.success() && took < Duration::from_secs(30), "list {listed} after {took:?}");

    // More syncs until the offsets reach the files' ends (each moves up to 4 rounds of 4 MiB).
    let offset = |file: &str| {
        let db = rusqlite::Connection::open(env.data.join("mailbox.db")).unwrap();
        db.query_row("SELECT offset FROM offsets WHERE task_id = ?1 AND file = ?2", rusqlite::params![id, file], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap_or(0) as u64
    };
    let at_end =
        || ["events.jsonl", "outbox.jsonl"].map(|f| (offset(f), std::fs::metadata(dir.join(f)).unwrap().len()));
    for _ in 0..4 {
        if at_end().iter().all(|(o, size)| o == size) {
            break;
        }
        env.run(&["sync"]).ok();
    }
    assert!(at_end().iter().all(|(o, size)| o == size), "offsets at the ends: {:?}", at_end());

    // Rows at the caps; one event says how many lines were left out and where they are.
    let lines = |f: &str| std::fs::read(dir.join(f)).unwrap().iter().filter(|b| **b == b'\n').count() as u64;
    let (event_lines, report_lines) = (lines("events.jsonl"), lines("outbox.jsonl"));
    assert_eq!((event_lines, report_lines), (EVENTS, REPORTS));
    let events = query(&env, "SELECT count(*) FROM events WHERE task_id = ?1 AND kind != 'over_cap'", id);
    let reports = query(&env, "SELECT count(*) FROM messages WHERE task_id = ?1 AND direction = 'from_brother'", id);
    assert_eq!((events as u64, reports as u64), (MAX_EVENTS_PER_RUN, MAX_REPORTS_PER_RUN));
    assert_eq!(query(&env, "SELECT count(*) FROM events WHERE task_id = ?1 AND kind = 'over_cap'", id), 1);
    let db = rusqlite::Connection::open(env.data.join("mailbox.db")).unwrap();
    let (summary, data): (String, String) = db
        .query_row("SELECT summary, data FROM events WHERE task_id = ?1 AND kind = 'over_cap'", [id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let skipped: Skipped = serde_json::from_str(&data).unwrap();
    assert_eq!(
        (skipped.events, skipped.reports),
        (event_lines - MAX_EVENTS_PER_RUN, report_lines - MAX_REPORTS_PER_RUN)
    );
    let events_text = format!("{} events", skipped.events);
    assert!(summary.contains(&events_text) && summary.contains(&format!("delegate logs {id} --events")), "{summary}");
    let show = env.run(&["show", &id.to_string(), "--no-sync"]).ok().stdout();
    assert!(show.contains(&events_text), "the note is in the thread:\n{show}");
    assert_eq!(env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json()["status"], "running");

    // The brother kept every line, and `logs --events` shows them all.
    let logs = env.run(&["logs", &id.to_string(), "--events"]).ok();
    assert_eq!(logs.stdout().lines().count() as u64, event_lines);
    let reports = env.run(&["logs", &id.to_string(), "--reports"]).ok();
    assert_eq!(reports.stdout().lines().count() as u64, report_lines);
}

/// A task whose mailbox holds 600,000 events (a mailbox from before the row caps, or many
/// runs) still shows at once: `show` and MCP `get_task` read only the newest items.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_with_600k_events_shows_at_once_in_show_and_get_task() {
    const N: u64 = 600_000;
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = launch(&env, &["oppy", "the prompt of a long task", "--json"]);
    wait_done(&env, id);
    {
        let mut db = rusqlite::Connection::open(env.data.join("mailbox.db")).unwrap();
        let tx = db.transaction().unwrap();
        let mut insert = tx
            .prepare(
                "INSERT INTO events (task_id, run_no, at, kind, summary, received_at) VALUES (?1, 1, ?2, 'tool', ?3, ?2)",
            )
            .unwrap();
        // After everything the task recorded, a millisecond apart.
        let start = std::time::SystemTime::now() + Duration::from_secs(3600);
        for i in 0..N {
            let at = humantime::format_rfc3339_millis(start + Duration::from_millis(i)).to_string();
            insert.execute(rusqlite::params![id, at, format!("e{i}")]).unwrap();
        }
        drop(insert);
        tx.commit().unwrap();
    }
    let last = format!("tool e{}", N - 1);

    let started = Instant::now();
    let client = crate::mcp::connect(&env).await;
    let task = crate::mcp::ok(&client, "get_task", serde_json::json!({"id": id})).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "get_task took {took:?}");
    let thread = task["thread"].as_array().unwrap();
    assert_eq!(thread[0]["kind"], "prompt", "{task}");
    assert_eq!(thread[0]["text"], "the prompt of a long task");
    assert_eq!(thread[1]["kind"], "omitted", "{task}");
    let note = thread[1]["text"].as_str().unwrap();
    assert!(
        note.contains("earlier thread item(s) left out") && note.contains(&format!("delegate show {id} --all --json"))
    );
    // Every item not in the thread is counted in the note.
    let shown = thread.len() as u64 - 2;
    assert!(shown >= 50, "{shown} items shown");
    let others = query(&env, "SELECT count(*) FROM transitions WHERE task_id = ?1", id)
        + query(&env, "SELECT count(*) FROM messages WHERE task_id = ?1", id);
    assert!(note.starts_with(&format!("{} earlier", N + others as u64 - shown)), "{note}");
    assert_eq!(thread.last().unwrap()["text"], last, "the newest item is last");
    assert_eq!(task["status"], "completed");
    client.cancel().await.unwrap();

    // `show` holds the newest 200 items and says how to see the rest; --json counts them.
    let started = Instant::now();
    let show = env.run(&["show", &id.to_string()]).ok().stdout();
    assert!(started.elapsed() < Duration::from_secs(10), "show took {:?}", started.elapsed());
    assert!(show.contains(&format!("earlier items: `delegate show {id} --all`")), "{show}");
    assert!(show.trim_end().ends_with(&last), "{show}");
    let json = env.run(&["show", &id.to_string(), "--json"]).ok().json();
    assert_eq!(json["thread"].as_array().unwrap().len(), 1 + delegate_core::mailbox::thread::SHOW_ITEMS);
    assert_eq!(json["omitted"]["events"].as_u64().unwrap(), N - json["events"].as_array().unwrap().len() as u64);
}
