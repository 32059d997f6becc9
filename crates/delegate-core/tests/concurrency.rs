//! Concurrency of the mailbox with real processes on a real SQLite file (testplan §2.3).
//!
//! Many processes without a new binary: a test re-executes this test binary
//! (`std::env::current_exe()`) running only [`helper_process`], an ignored test that does
//! nothing unless `DLG_CONC_ROLE` is set. The helpers write through the public `Store` API
//! (except the C1-ctl control, which is a deliberately wrong plain rusqlite writer). They
//! start together on a barrier file, and report through files in the test's directory; their
//! stdout and stderr go to files too, which the parent checks for surfaced BUSY errors.
//!
//! - C1: 50 processes × 40 writes: exact counts, gap-free per-sender sequences, no BUSY
//!   surfaced, integrity ok; p50/p99 write latency printed.
//! - C1-ctl: the same contention with `busy_timeout(0)` and deferred `BEGIN` read-then-write
//!   is seen failing by the same check (made deterministic by a write lock the parent holds).
//! - C2: C1 with seeded SIGKILLs mid-run (`DLG_CONC_SEED` overrides the seed), then a restart.
//! - C3: two processes move the same task from the same version at once, 20 times.
//! - C5: a long read transaction held open while writers run.
//!
//! The plan's full C1 (50 × 200) runs by default; a heavier stress run (150 processes × 40)
//! is ignored for time: `cargo test -p delegate-core --test concurrency -- --ignored c1_`.
//! Both found "database is locked" reaching callers with the store's old 10 s busy
//! timeout; it now waits up to a minute.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use delegate_core::mailbox::{Caps, NewTask, Store};
use delegate_core::{Error, ListFilter, Sandbox, TaskStatus};
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, OpenFlags};

const HELPER: &str = "helper_process";
const WRITERS: usize = 50;
/// Writes per writer: one `create_task`, then `WRITES - 1` messages numbered 1.. .
const WRITES: i64 = 40;
/// How long any group of helpers may take before the test gives up on them.
const DEADLINE: Duration = Duration::from_secs(50);

// ---------------------------------------------------------------------------------------
// The helper side.

/// Not a test: the body of the processes the tests start. Does nothing in a normal run.
#[test]
#[ignore = "helper process for the concurrency tests; does nothing without DLG_CONC_ROLE"]
fn helper_process() {
    let Ok(role) = std::env::var("DLG_CONC_ROLE") else { return };
    let dir = PathBuf::from(std::env::var("DLG_CONC_DIR").expect("DLG_CONC_DIR"));
    let id: usize = std::env::var("DLG_CONC_ID").expect("DLG_CONC_ID").parse().unwrap();
    let tag = std::env::var("DLG_CONC_TAG").unwrap_or_default();
    match role.as_str() {
        "writer" => writer(&dir, id, &tag),
        "ctl" => control_writer(&dir, id, &tag),
        "mover" => mover(&dir, id, &tag),
        "crasher" => crasher(&dir),
        "opener" => opener(&dir, id, &tag),
        "raw-opener" => raw_opener(&dir, id, &tag),
        other => panic!("unknown role {other}"),
    }
}

fn touch(p: &Path) {
    File::create(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
}

/// Polls for the barrier file the parent creates once every helper is ready.
fn wait_for(p: &Path) {
    let start = Instant::now();
    while !p.exists() {
        assert!(start.elapsed() < DEADLINE, "barrier {} never came", p.display());
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn sender(id: usize) -> String {
    format!("w{id}")
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A message text that proves itself whole: sender, sequence number, a padding of varying
/// length, and a checksum of all of it.
fn message_text(id: usize, seq: i64) -> String {
    let len = 16 + (fnv(&format!("{id}/{seq}")) % 300) as usize;
    let pad: String = (0..len).map(|i| char::from(b'a' + ((i + seq as usize) % 26) as u8)).collect();
    let body = format!("w={id} seq={seq} pad={pad}");
    format!("{body} sum={:016x}", fnv(&body))
}

/// (sender, seq) of a whole message text; None for a torn or foreign one.
fn parse_text(text: &str) -> Option<(usize, i64)> {
    let (body, sum) = text.rsplit_once(" sum=")?;
    if format!("{:016x}", fnv(body)) != sum {
        return None;
    }
    let mut parts = body.split(' ');
    let id = parts.next()?.strip_prefix("w=")?.parse().ok()?;
    let seq = parts.next()?.strip_prefix("seq=")?.parse().ok()?;
    (message_text(id, seq) == text).then_some((id, seq))
}

static NO_OPTIONS: delegate_core::agents::AgentOptions = delegate_core::agents::AgentOptions {
    reasoning_effort: None,
    max_budget_usd: None,
    extra_args: vec![],
    credential_file: None,
    credential_env: None,
    usd_per_mtok: None,
};

fn new_task<'a>(brother: &'a str, prompt: &'a [u8]) -> NewTask<'a> {
    NewTask {
        brother,
        host: "conc-host",
        address: "127.0.0.1",
        subject: brother,
        agent: "self-test",
        model: None,
        sandbox: Sandbox::Read,
        max_turns: 1,
        workdir: "/w",
        prompt,
        prompt_sha256: "x",
        timeout_secs: 60,
        author: brother,
        caps: Caps::default(),
        options: &NO_OPTIONS,
        settings: &serde_json::Value::Null,
        priority: Default::default(),
        parent: None,
        notify: None,
    }
}

/// A writer: its own task (brother `w<id>`), then messages 1..writes, alternating notes and
/// outgoing messages. Resumable: a restarted writer reuses its task and skips the sequence
/// numbers already present. Per-write latencies (µs) go to `lat-<id>-<pid>`.
fn writer(dir: &Path, id: usize, tag: &str) {
    let writes: i64 = std::env::var("DLG_CONC_WRITES").expect("DLG_CONC_WRITES").parse().unwrap();
    let mut store = Store::open(dir).unwrap_or_else(|e| panic!("w{id}: open: {e}"));
    touch(&dir.join(format!("ready-{tag}-{id}")));
    wait_for(&dir.join(format!("go-{tag}")));
    let me = sender(id);
    let mut lat = Vec::new();
    let mine = store
        .list(&ListFilter { brother: Some(me.clone()), ..Default::default() })
        .unwrap_or_else(|e| panic!("{me}: list: {e}"));
    let task_id = match mine.as_slice() {
        [] => {
            let t0 = Instant::now();
            let run = store.create_task(&new_task(&me, me.as_bytes())).unwrap_or_else(|e| panic!("{me}: create: {e}"));
            lat.push(t0.elapsed().as_micros());
            run.task_id
        }
        [t] => t.id,
        more => panic!("{me}: {} tasks", more.len()),
    };
    let have: BTreeSet<i64> = store
        .messages(task_id)
        .unwrap_or_else(|e| panic!("{me}: messages: {e}"))
        .iter()
        .filter_map(|m| parse_text(&m.text).map(|(_, seq)| seq))
        .collect();
    for seq in 1..writes {
        if have.contains(&seq) {
            continue;
        }
        let text = message_text(id, seq);
        let t0 = Instant::now();
        let r = if seq % 2 == 0 {
            store.add_note(task_id, &me, "note", &text)
        } else {
            store.add_outgoing(task_id, 1, &me, &text).map(|_| ())
        };
        lat.push(t0.elapsed().as_micros());
        r.unwrap_or_else(|e| panic!("{me}: seq {seq}: {e}"));
    }
    let lines: String = lat.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join(format!("lat-{id}-{}", std::process::id())), lines).unwrap();
}

/// The deliberately wrong writer of C1-ctl: no busy timeout, deferred `BEGIN`, read then
/// write. It logs each failed transaction to stderr (as a naive tool would) and goes on.
fn control_writer(dir: &Path, id: usize, tag: &str) {
    let conn = Connection::open(dir.join(delegate_core::mailbox::DB_FILE)).unwrap();
    conn.busy_timeout(Duration::ZERO).unwrap();
    touch(&dir.join(format!("ready-{tag}-{id}")));
    wait_for(&dir.join(format!("go-{tag}")));
    let me = sender(id);
    let (mut ok, mut busy) = (0, 0);
    for seq in 0..WRITES {
        let attempt = (|| -> rusqlite::Result<()> {
            conn.execute_batch("BEGIN")?;
            let n: i64 = conn.query_row("SELECT count(*) FROM messages WHERE author = ?1", [&me], |r| r.get(0))?;
            conn.execute(
                "INSERT INTO messages (task_id, run_no, direction, author, kind, text, at)
                 VALUES (1, 1, 'note', ?1, 'note', ?2, 'now')",
                rusqlite::params![me, format!("{} n={n}", message_text(id, seq))],
            )?;
            conn.execute_batch("COMMIT")
        })();
        match attempt {
            Ok(()) => ok += 1,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) {
                    busy += 1;
                }
                eprintln!("{me}: transaction {seq}: {e}");
            }
        }
        if seq == 0 {
            // The first attempt met the parent's write lock; the rest is plain contention.
            touch(&dir.join(format!("first-{tag}-{id}")));
            wait_for(&dir.join(format!("go2-{tag}")));
        }
    }
    std::fs::write(dir.join(format!("ctl-{id}")), format!("{ok} {busy}")).unwrap();
}

/// C3: read the task's version, wait for the barrier, move it. The loser reads again and
/// moves it from the version it finds (converges).
fn mover(dir: &Path, id: usize, tag: &str) {
    let task: i64 = std::env::var("DLG_CONC_TASK").unwrap().parse().unwrap();
    let to = if id == 0 { TaskStatus::Running } else { TaskStatus::Cancelled };
    let mut store = Store::open(dir).unwrap();
    let v = store.task(task).unwrap().version;
    touch(&dir.join(format!("ready-{tag}-{id}")));
    wait_for(&dir.join(format!("go-{tag}")));
    let reason = format!("mover {id}");
    let outcome = match store.transition(task, v, to, Some(&reason)) {
        Ok(nv) => format!("won {v} {nv}"),
        Err(Error::Conflict { .. }) => {
            let again = store.task(task).unwrap().version;
            let nv = store.transition(task, again, to, Some(&reason)).unwrap();
            format!("lost {v} {nv}")
        }
        Err(e) => panic!("mover {id}: {e}"),
    };
    std::fs::write(dir.join(format!("result-{tag}-{id}")), outcome).unwrap();
}

/// Rows of C6's transaction that never commits: after the crash none may be visible.
const UNCOMMITTED: &str = "uncommitted";
/// Committed messages of C6's crashed writer.
const C6_COMMITTED: i64 = 30;

/// C6: commits [`C6_COMMITTED`] messages, then dies (SIGKILL from the parent) in the middle
/// of a big write transaction whose pages have already spilled into the WAL, leaving a WAL
/// and a `-shm` that the next opener has to recover.
fn crasher(dir: &Path) {
    let mut store = Store::open(dir).unwrap();
    let task = store.create_task(&new_task("crasher", b"crasher")).unwrap().task_id;
    for seq in 1..=C6_COMMITTED {
        store.add_note(task, "crasher", "note", &message_text(0, seq)).unwrap();
    }
    let wal = dir.join(format!("{}-wal", delegate_core::mailbox::DB_FILE));
    let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let committed_wal = wal_len();
    // A second connection with a tiny page cache, so the open transaction spills its dirty
    // pages into the WAL as uncommitted frames long before a commit would.
    let raw = Connection::open(db_path(dir)).unwrap();
    raw.busy_timeout(Duration::from_secs(10)).unwrap();
    raw.execute_batch("PRAGMA cache_size = 8; BEGIN IMMEDIATE").unwrap();
    let pad = "u".repeat(2000);
    for i in 0..400 {
        raw.execute(
            "INSERT INTO messages (task_id, run_no, direction, author, kind, text, at)
             VALUES (?1, 1, 'note', ?2, 'note', ?3, 'now')",
            rusqlite::params![task, UNCOMMITTED, format!("{i} {pad}")],
        )
        .unwrap();
    }
    std::fs::write(dir.join("wal-sizes"), format!("{committed_wal} {}", wal_len())).unwrap();
    touch(&dir.join("mid-transaction"));
    // Hold the transaction open until the parent kills us.
    std::thread::sleep(DEADLINE);
    panic!("crasher was never killed");
}

/// C6: open the mailbox at the barrier (all at once, right after the crash), read what the
/// crashed writer left, then write one note of its own.
fn opener(dir: &Path, id: usize, tag: &str) {
    touch(&dir.join(format!("ready-{tag}-{id}")));
    wait_for(&dir.join(format!("go-{tag}")));
    let mut store = Store::open(dir).unwrap_or_else(|e| panic!("o{id}: open: {e}"));
    let msgs = store.messages(1).unwrap_or_else(|e| panic!("o{id}: messages: {e}"));
    let crashed = msgs.iter().filter(|m| m.author == "crasher").count();
    let uncommitted = msgs.iter().filter(|m| m.author == UNCOMMITTED).count();
    store
        .add_note(1, &format!("o{id}"), "note", "opened after the crash")
        .unwrap_or_else(|e| panic!("o{id}: note: {e}"));
    std::fs::write(dir.join(format!("seen-{tag}-{id}")), format!("{crashed} {uncommitted}")).unwrap();
}

/// C6 control: the same race through a plain connection without a busy timeout, as a
/// naive tool would open it; its errors go to stderr, where the C6 check looks.
fn raw_opener(dir: &Path, id: usize, tag: &str) {
    touch(&dir.join(format!("ready-{tag}-{id}")));
    wait_for(&dir.join(format!("go-{tag}")));
    let conn = Connection::open(db_path(dir)).unwrap();
    conn.busy_timeout(Duration::ZERO).unwrap();
    if let Err(e) = conn.query_row("SELECT count(*) FROM messages", [], |r| r.get::<_, i64>(0)) {
        eprintln!("ro{id}: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// The parent side.

struct Helper {
    id: usize,
    child: Child,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

static SPAWNED: AtomicUsize = AtomicUsize::new(0);

fn test_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("conc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("logs")).unwrap();
    d
}

fn spawn(dir: &Path, role: &str, id: usize, tag: &str, env: &[(&str, String)]) -> Helper {
    let n = SPAWNED.fetch_add(1, Ordering::Relaxed);
    let out = dir.join("logs").join(format!("{role}-{tag}-{id}-{n}.out"));
    let err = dir.join("logs").join(format!("{role}-{tag}-{id}-{n}.err"));
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", HELPER, "--nocapture", "--ignored", "--test-threads", "1"])
        .env("DLG_CONC_ROLE", role)
        .env("DLG_CONC_DIR", dir)
        .env("DLG_CONC_ID", id.to_string())
        .env("DLG_CONC_TAG", tag)
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Helper { id, child: cmd.spawn().unwrap(), stderr: err, status: None }
}

/// Waits until every helper has touched its ready file, then releases them all at once.
fn release(dir: &Path, tag: &str, ids: impl IntoIterator<Item = usize> + Clone, helpers: &mut [Helper]) {
    let start = Instant::now();
    for id in ids {
        let ready = dir.join(format!("ready-{tag}-{id}"));
        while !ready.exists() {
            if let Some(h) = helpers.iter_mut().find(|h| h.id == id)
                && let Some(st) = h.child.try_wait().unwrap()
            {
                panic!("helper {id} exited before the barrier ({st}): {}", read(&h.stderr));
            }
            assert!(start.elapsed() < DEADLINE, "helper {id} never got ready");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    touch(&dir.join(format!("go-{tag}")));
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Waits for every helper (killing them all and failing after [`DEADLINE`]).
fn wait_all(helpers: &mut [Helper]) {
    let start = Instant::now();
    loop {
        let mut running = 0;
        for h in helpers.iter_mut().filter(|h| h.status.is_none()) {
            match h.child.try_wait().unwrap() {
                Some(st) => h.status = Some(st),
                None => running += 1,
            }
        }
        if running == 0 {
            return;
        }
        if start.elapsed() > DEADLINE {
            for h in helpers.iter_mut().filter(|h| h.status.is_none()) {
                let _ = h.child.kill();
                let _ = h.child.wait();
            }
            panic!("{running} helpers still running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What the user of a helper would have seen go wrong: a failing exit, or a BUSY error on
/// stderr. The same check is expected to find nothing in C1 and something in C1-ctl.
fn problems(helpers: &[Helper]) -> Vec<String> {
    let mut found = Vec::new();
    for h in helpers {
        let st = h.status.expect("waited for");
        let err = read(&h.stderr);
        let lower = err.to_lowercase();
        if !st.success() || lower.contains("database is locked") || lower.contains("busy") {
            let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            found.push(format!("helper {}: {st}: {first}", h.id));
        }
    }
    found
}

fn db_path(dir: &Path) -> PathBuf {
    dir.join(delegate_core::mailbox::DB_FILE)
}

fn read_only(dir: &Path) -> Connection {
    let c = Connection::open_with_flags(db_path(dir), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

fn integrity(dir: &Path) -> String {
    read_only(dir).query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)).unwrap()
}

/// Per sender: its task count and the sequence numbers of its messages (each must be whole).
struct Census {
    tasks: BTreeMap<String, usize>,
    seqs: BTreeMap<usize, Vec<i64>>,
    torn: Vec<String>,
    messages: usize,
}

fn census(dir: &Path) -> Census {
    let c = read_only(dir);
    let mut tasks = BTreeMap::new();
    let mut st = c.prepare("SELECT brother, count(*) FROM tasks GROUP BY brother").unwrap();
    for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).unwrap() {
        let (b, n) = row.unwrap();
        tasks.insert(b, n as usize);
    }
    let mut seqs: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    let mut torn = Vec::new();
    let mut messages = 0;
    let mut st = c
        .prepare("SELECT m.author, t.brother, m.text FROM messages m JOIN tasks t ON t.id = m.task_id ORDER BY m.id")
        .unwrap();
    for row in
        st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))).unwrap()
    {
        let (author, brother, text) = row.unwrap();
        messages += 1;
        match parse_text(&text) {
            Some((id, seq)) if sender(id) == author && author == brother => seqs.entry(id).or_default().push(seq),
            _ => torn.push(format!("{author}/{brother}: {:.60}", text)),
        }
    }
    for v in seqs.values_mut() {
        v.sort_unstable();
    }
    Census { tasks, seqs, torn, messages }
}

/// Problems with the sequences: duplicates, or anything but a gap-free run 1..=k.
fn sequence_problems(c: &Census) -> Vec<String> {
    let mut found = Vec::new();
    for (id, seqs) in &c.seqs {
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        if *seqs != expected {
            found.push(format!("w{id}: {seqs:?}"));
        }
    }
    found
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report_latency(dir: &Path, what: &str) {
    let mut lat: Vec<u128> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("lat-"))
        .flat_map(|e| read(&e.path()).lines().map(|l| l.parse().unwrap()).collect::<Vec<u128>>())
        .collect();
    lat.sort_unstable();
    eprintln!(
        "{what}: {} writes, per-write latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        percentile(&lat, 0.5) as f64 / 1000.0,
        percentile(&lat, 0.99) as f64 / 1000.0,
        lat.last().copied().unwrap_or(0) as f64 / 1000.0
    );
}

fn spawn_writers(dir: &Path, tag: &str, ids: &[usize], writes: i64) -> Vec<Helper> {
    Store::open(dir).unwrap(); // the schema exists before the writers race to open it
    ids.iter().map(|&id| spawn(dir, "writer", id, tag, &[("DLG_CONC_WRITES", writes.to_string())])).collect()
}

fn assert_complete(dir: &Path, writers: usize, writes: i64) {
    assert_eq!(integrity(dir), "ok");
    let c = census(dir);
    assert!(c.torn.is_empty(), "torn or foreign messages: {:?}", c.torn);
    assert_eq!(sequence_problems(&c), Vec::<String>::new(), "sequences with gaps or duplicates");
    assert_eq!(c.tasks.len(), writers, "senders with a task");
    assert!(c.tasks.values().all(|&n| n == 1), "a sender with several tasks: {:?}", c.tasks);
    assert_eq!(c.messages, writers * (writes as usize - 1), "message rows");
    assert!(c.seqs.values().all(|s| s.len() == writes as usize - 1));
}

/// C1 with `writers` processes of `writes` writes each.
fn c1(name: &str, writers: usize, writes: i64) {
    let dir = test_dir(name);
    let ids: Vec<usize> = (0..writers).collect();
    let mut helpers = spawn_writers(&dir, name, &ids, writes);
    release(&dir, name, ids.clone(), &mut helpers);
    let start = Instant::now();
    wait_all(&mut helpers);
    eprintln!("{name}: {writers} processes x {writes} writes in {:.2?}", start.elapsed());
    report_latency(&dir, name);
    assert_eq!(problems(&helpers), Vec::<String>::new(), "writers failed or surfaced BUSY");
    assert_complete(&dir, writers, writes);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn c1_fifty_writer_processes_lose_nothing_and_never_surface_busy() {
    c1("c1", WRITERS, WRITES);
}

/// C1 at three times the plan's process count. SQLite's busy handler is a poll with backoff
/// (sleeps growing to 100 ms), not a queue: a waiter only gets the write lock if it happens
/// to be free when it wakes, so under saturation some writers waited past the old 10 s busy
/// timeout while others committed thousands of times; the store now waits up to a minute.
#[test]
#[ignore = "stress run (150 processes, ~20 s): `cargo test -p delegate-core --test concurrency -- --ignored`; \
            it found the 10 s busy timeout too short, fixed by waiting up to a minute"]
fn c1_stress_150_writer_processes() {
    c1("c1x150", 150, WRITES);
}

#[test]
fn c1_ctl_a_writer_without_busy_timeout_and_immediate_is_seen_failing() {
    let dir = test_dir("c1ctl");
    let mut store = Store::open(&dir).unwrap();
    store.create_task(&new_task("ctl", b"ctl")).unwrap(); // task 1, which the control writes to
    drop(store);
    let ids: Vec<usize> = (0..WRITERS).collect();
    let mut helpers: Vec<Helper> = ids.iter().map(|&id| spawn(&dir, "ctl", id, "ctl", &[])).collect();
    // Deterministic teeth: a write transaction held until every control writer has made its
    // first attempt, so each of those attempts must fail with BUSY.
    let lock = Connection::open(db_path(&dir)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    release(&dir, "ctl", ids.clone(), &mut helpers);
    let start = Instant::now();
    for id in &ids {
        while !dir.join(format!("first-ctl-{id}")).exists() {
            assert!(start.elapsed() < DEADLINE, "control writer {id} never tried");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    lock.execute_batch("COMMIT").unwrap();
    touch(&dir.join("go2-ctl"));
    wait_all(&mut helpers);
    let (mut ok, mut busy) = (0, 0);
    for id in &ids {
        let line = read(&dir.join(format!("ctl-{id}")));
        let (o, b) = line.split_once(' ').unwrap_or_else(|| panic!("control writer {id} reported {line:?}"));
        ok += o.parse::<usize>().unwrap();
        busy += b.parse::<usize>().unwrap();
    }
    let total = WRITERS * WRITES as usize;
    eprintln!(
        "C1-ctl: {busy} of {total} transactions failed with BUSY ({WRITERS} first attempts against the held lock, \
         then {} of {} under plain contention), {ok} committed",
        busy.saturating_sub(WRITERS),
        total - WRITERS
    );
    assert!(busy >= WRITERS, "every first attempt met the held write lock, yet only {busy} BUSY errors");
    let seen = problems(&helpers);
    assert!(!seen.is_empty(), "the check C1 relies on did not see the BUSY errors");
    eprintln!("C1-ctl: the C1 check flags {} of {WRITERS} control writers, e.g. {}", seen.len(), seen[0]);
    assert_eq!(integrity(&dir), "ok");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn c2_killed_writers_leave_whole_rows_and_a_restart_completes_without_duplicates() {
    const VICTIMS: usize = 10;
    let seed: u64 = std::env::var("DLG_CONC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x005e_edc2);
    eprintln!("C2: seed {seed} (set DLG_CONC_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = test_dir("c2");
    let ids: Vec<usize> = (0..WRITERS).collect();
    let mut helpers = spawn_writers(&dir, "c2", &ids, WRITES);
    // Victims and the moment each dies: once it has committed a random number of its own
    // messages, so the kill lands while that writer is busy (in its next transaction, or
    // queued for the write lock).
    let mut victims = BTreeSet::new();
    while victims.len() < VICTIMS {
        victims.insert(rng.random_range(0..WRITERS));
    }
    let mut plan: BTreeMap<usize, i64> = victims.iter().map(|&v| (v, rng.random_range(1..WRITES - 2))).collect();
    eprintln!("C2: kill plan (writer: after that many of its messages) {plan:?}");
    release(&dir, "c2", ids.clone(), &mut helpers);
    let probe = read_only(&dir);
    let mut killed_mid_run = BTreeSet::new();
    let start = Instant::now();
    while !plan.is_empty() && start.elapsed() < DEADLINE {
        let mut st = probe.prepare_cached("SELECT author, count(*) FROM messages GROUP BY author").unwrap();
        let counts: BTreeMap<String, i64> =
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(|r| r.unwrap()).collect();
        plan.retain(|&v, &mut at| {
            if counts.get(&sender(v)).copied().unwrap_or(0) < at {
                return true;
            }
            let h = &mut helpers[v];
            if h.child.try_wait().unwrap().is_none() {
                h.child.kill().unwrap(); // SIGKILL
                killed_mid_run.insert(v);
            }
            false
        });
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(probe);
    wait_all(&mut helpers);
    eprintln!("C2: killed {} writers mid-run: {killed_mid_run:?}", killed_mid_run.len());
    assert!(!killed_mid_run.is_empty(), "no kill landed mid-run; the test proved nothing");
    let survivors: Vec<Helper> = helpers.into_iter().filter(|h| !killed_mid_run.contains(&h.id)).collect();
    assert_eq!(problems(&survivors), Vec::<String>::new(), "writers that were not killed failed");

    assert_eq!(integrity(&dir), "ok", "after the kills");
    let c = census(&dir);
    assert!(c.torn.is_empty(), "torn or foreign messages after the kills: {:?}", c.torn);
    assert_eq!(sequence_problems(&c), Vec::<String>::new(), "after the kills: not a gap-free prefix");
    assert!(c.tasks.values().all(|&n| n == 1), "a sender with several tasks: {:?}", c.tasks);
    let partial: Vec<String> =
        killed_mid_run.iter().map(|id| format!("w{id}:{}", c.seqs.get(id).map_or(0, Vec::len))).collect();
    eprintln!("C2: after the kills {} messages; killed writers' progress {partial:?}", c.messages);

    let restart: Vec<usize> = killed_mid_run.iter().copied().collect();
    let env = [("DLG_CONC_WRITES", WRITES.to_string())];
    let mut again: Vec<Helper> = restart.iter().map(|&id| spawn(&dir, "writer", id, "c2r", &env)).collect();
    release(&dir, "c2r", restart.clone(), &mut again);
    wait_all(&mut again);
    assert_eq!(problems(&again), Vec::<String>::new(), "restarted writers failed");
    report_latency(&dir, "C2 (before and after restart)");
    assert_complete(&dir, WRITERS, WRITES);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn c3_two_processes_moving_one_task_from_the_same_version_exactly_one_wins() {
    const ROUNDS: usize = 20;
    let dir = test_dir("c3");
    let mut store = Store::open(&dir).unwrap();
    let mut wins = [0usize; 2];
    for round in 0..ROUNDS {
        let run = store.create_task(&new_task("c3", b"c3")).unwrap();
        let tag = format!("c3r{round}");
        let env = [("DLG_CONC_TASK", run.task_id.to_string())];
        let mut helpers: Vec<Helper> = (0..2).map(|id| spawn(&dir, "mover", id, &tag, &env)).collect();
        release(&dir, &tag, [0, 1], &mut helpers);
        wait_all(&mut helpers);
        assert_eq!(problems(&helpers), Vec::<String>::new(), "round {round}");
        let results: Vec<String> = (0..2).map(|id| read(&dir.join(format!("result-{tag}-{id}")))).collect();
        let winners: Vec<usize> = (0..2).filter(|&i| results[i].starts_with("won 1 2")).collect();
        let losers: Vec<usize> = (0..2).filter(|&i| results[i].starts_with("lost 1 3")).collect();
        assert!(winners.len() == 1 && losers.len() == 1, "round {round}: {results:?}");
        wins[winners[0]] += 1;
        // Converged: both moves recorded, the loser's last, at version 3.
        let t = store.task(run.task_id).unwrap();
        let loser_to = if losers[0] == 0 { TaskStatus::Running } else { TaskStatus::Cancelled };
        assert_eq!((t.version, t.status), (3, loser_to), "round {round}");
        let hist: Vec<Option<String>> = store.transitions(run.task_id).unwrap().into_iter().map(|x| x.reason).collect();
        let reason = |i: usize| Some(format!("mover {i}"));
        assert_eq!(hist, vec![None, reason(winners[0]), reason(losers[0])], "round {round}");
    }
    eprintln!("C3: {ROUNDS} rounds, exactly one winner each; mover 0 won {}, mover 1 won {}", wins[0], wins[1]);
    drop(store);
    assert_eq!(integrity(&dir), "ok");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn c5_writers_progress_while_a_long_read_transaction_is_open() {
    const N: usize = 10;
    let dir = test_dir("c5");
    Store::open(&dir).unwrap();
    let reader = Connection::open(db_path(&dir)).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let before: i64 = reader.query_row("SELECT count(*) FROM messages", [], |r| r.get(0)).unwrap();
    let ids: Vec<usize> = (0..N).collect();
    let mut helpers = spawn_writers(&dir, "c5", &ids, WRITES);
    release(&dir, "c5", ids.clone(), &mut helpers);
    let start = Instant::now();
    wait_all(&mut helpers);
    eprintln!("C5: {N} writers x {WRITES} writes finished in {:.2?} under an open reader", start.elapsed());
    assert_eq!(problems(&helpers), Vec::<String>::new(), "writers failed or surfaced BUSY under a reader");
    // The reader still sees its snapshot; the WAL could not be checkpointed past it.
    let still: i64 = reader.query_row("SELECT count(*) FROM messages", [], |r| r.get(0)).unwrap();
    assert_eq!(still, before, "the reader's snapshot moved");
    let wal = dir.join(format!("{}-wal", delegate_core::mailbox::DB_FILE));
    let wal_during = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    reader.execute_batch("COMMIT").unwrap();
    // With the reader gone the whole WAL can be checkpointed.
    let (busy, log, done): (i64, i64, i64) =
        reader.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
    eprintln!(
        "C5: WAL {wal_during} bytes while the reader was open; checkpoint after it ended: busy {busy}, {done} of {log} frames"
    );
    assert_eq!((busy, done), (0, log), "WAL not fully checkpointed once the reader ended");
    drop(reader);
    let wal_after = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    eprintln!("C5: WAL {wal_after} bytes once the last connection closed");
    assert_complete(&dir, N, WRITES);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The plan's full C1 scale (50 × 200 posts, about 20 s). Before the store waited up to a
/// minute for the write lock, a few writers here failed with "database is locked".
#[test]
fn c1_plan_scale_50_by_200() {
    c1("c1x200", WRITERS, 200);
}

/// SIGKILLs the C6 crasher in the middle of its open transaction; returns the WAL size it
/// reported before and after the uncommitted pages went in.
fn crash_a_writer(dir: &Path) -> (u64, u64) {
    Store::open(dir).unwrap();
    let mut crasher = spawn(dir, "crasher", 0, "c6", &[]);
    let start = Instant::now();
    while !dir.join("mid-transaction").exists() {
        if let Some(st) = crasher.child.try_wait().unwrap() {
            panic!("the crasher exited early ({st}): {}", read(&crasher.stderr));
        }
        assert!(start.elapsed() < DEADLINE, "the crasher never got mid-transaction");
        std::thread::sleep(Duration::from_millis(5));
    }
    crasher.child.kill().unwrap(); // SIGKILL, mid-transaction
    crasher.child.wait().unwrap();
    let sizes = read(&dir.join("wal-sizes"));
    let (a, b) = sizes.split_once(' ').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

#[test]
fn c6_many_processes_opening_after_a_crashed_writer_never_see_busy() {
    const OPENERS: usize = 50;
    let dir = test_dir("c6");
    let (committed_wal, spilled_wal) = crash_a_writer(&dir);
    let wal = dir.join(format!("{}-wal", delegate_core::mailbox::DB_FILE));
    let left = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "C6: WAL {committed_wal} bytes after the committed writes, {spilled_wal} with the open transaction, \
         {left} left by the SIGKILLed writer"
    );
    assert!(spilled_wal > committed_wal, "the open transaction never reached the WAL; nothing to recover");
    assert!(left > 0, "no WAL left behind");
    assert!(dir.join(format!("{}-shm", delegate_core::mailbox::DB_FILE)).exists(), "no -shm left behind");

    let ids: Vec<usize> = (0..OPENERS).collect();
    let mut helpers: Vec<Helper> = ids.iter().map(|&id| spawn(&dir, "opener", id, "c6", &[])).collect();
    release(&dir, "c6", ids.clone(), &mut helpers);
    wait_all(&mut helpers);
    assert_eq!(problems(&helpers), Vec::<String>::new(), "openers failed or surfaced BUSY after the crash");
    for id in &ids {
        let seen = read(&dir.join(format!("seen-c6-{id}")));
        assert_eq!(seen, format!("{C6_COMMITTED} 0"), "opener {id}: (committed, uncommitted) messages seen");
    }
    assert_eq!(integrity(&dir), "ok");
    let c = read_only(&dir);
    let count = |author: &str| -> i64 {
        c.query_row("SELECT count(*) FROM messages WHERE author = ?1", [author], |r| r.get(0)).unwrap()
    };
    assert_eq!(count("crasher"), C6_COMMITTED, "committed messages lost");
    assert_eq!(count(UNCOMMITTED), 0, "rows of the killed transaction survived");
    let notes: i64 = c.query_row("SELECT count(*) FROM messages WHERE author LIKE 'o%'", [], |r| r.get(0)).unwrap();
    assert_eq!(notes, OPENERS as i64, "openers' notes");
    let text_ok = c
        .prepare("SELECT text FROM messages WHERE author = 'crasher' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|t| t.unwrap())
        .enumerate()
        .all(|(i, t)| parse_text(&t) == Some((0, i as i64 + 1)));
    assert!(text_ok, "torn committed messages");
    drop(c);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// C6-ctl: the same race with plain connections that have no busy timeout does surface
/// BUSY, so the check in C6 has teeth.
#[test]
fn c6_ctl_openers_without_busy_timeout_are_seen_failing() {
    const OPENERS: usize = 50;
    let dir = test_dir("c6ctl");
    crash_a_writer(&dir);
    let ids: Vec<usize> = (0..OPENERS).collect();
    let mut helpers: Vec<Helper> = ids.iter().map(|&id| spawn(&dir, "raw-opener", id, "c6", &[])).collect();
    release(&dir, "c6", ids.clone(), &mut helpers);
    wait_all(&mut helpers);
    let seen = problems(&helpers);
    assert!(!seen.is_empty(), "no BUSY seen: the C6 race does not exercise recovery");
    eprintln!(
        "C6-ctl: the C6 check flags {} of {OPENERS} openers without a busy timeout, e.g. {}",
        seen.len(),
        seen[0]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
