//! The sync script run locally against real task directories and a real tmux server, its
//! reply read by `parse_sync`: the same bytes an SSH exec would carry.

use super::tests::{Scratch, fake_plan, self_test_plan, vars, wait_secs};
use crate::remote::protocol::{
    LARGE_SYNC, SYNCED_FILES, SyncReply, SyncRequest, SyncTaskRequest, TaskReport, parse_sync, parse_sync_for,
    render_sync,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn request(s: &Scratch, tasks: &[(&str, &str, BTreeMap<String, u64>)], max: u64) -> SyncRequest {
    SyncRequest {
        remote_root: s.root().to_string_lossy().into_owned(),
        tasks: tasks
            .iter()
            .map(|(key, session, offsets)| SyncTaskRequest {
                task_key: key.to_string(),
                session: session.to_string(),
                offsets: offsets.clone(),
                want_launch_json: true,
                clock_ms: None,
            })
            .collect(),
        max_bytes_per_file: max,
        max_bytes_total: u64::MAX,
    }
}

fn sync(s: &Scratch, req: &SyncRequest) -> (SyncReply, Vec<u8>) {
    let out = s.run(&render_sync(req).unwrap());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (parsed(&out.stdout, req), out.stdout)
}

/// The reply read against its request, as the lead reads it (a large sync names only the
/// tasks with news).
fn parsed(stdout: &[u8], req: &SyncRequest) -> SyncReply {
    let asked: Vec<(&str, &str)> = req.tasks.iter().map(|t| (t.task_key.as_str(), t.session.as_str())).collect();
    parse_sync_for(stdout, &asked).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(stdout)))
}

/// Every delta is exactly the file's bytes from its offset, and its size the file's size.
fn check_deltas(dir: &Path, t: &TaskReport, max: u64) {
    for d in &t.deltas {
        let file = std::fs::read(dir.join(&d.file)).unwrap();
        assert_eq!(d.size, file.len() as u64, "{}", d.file);
        let end = (d.offset + max).min(d.size) as usize;
        assert_eq!(d.bytes, file[d.offset as usize..end], "{}", d.file);
    }
}

fn sizes(t: &TaskReport) -> BTreeMap<String, u64> {
    t.deltas.iter().map(|d| (d.file.clone(), d.offset + d.bytes.len() as u64)).collect()
}

#[test]
fn one_sync_reports_finished_running_and_missing_tasks() {
    let s = Scratch::new("sync");
    let done_plan = self_test_plan(3);
    let done = s.launch(&vars(&s, "k-1", "dlg-k-1", &done_plan, b"finish quickly"));
    // Output first, then quiet: its files stop growing while it runs.
    let quiet = fake_plan("echo '{\"type\":\"system\"}'\necho oops >&2\nexec sleep 30\n");
    let running = s.launch(&vars(&s, "k-2", "dlg-k-2", &quiet, b"x"));
    let start = Instant::now();
    wait_secs(&done.join("exit"), 5);
    for f in ["stderr.log", "stream.jsonl"] {
        while std::fs::metadata(running.join(f)).map(|m| m.len()).unwrap_or(0) == 0 {
            assert!(Instant::now() < start + Duration::from_secs(5), "{f} stays empty");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let end = Instant::now() + Duration::from_secs(5);
    while s.tmux(&["has-session", "-t", "=dlg-k-1"]).status.success() {
        assert!(Instant::now() < end, "the finished task's session lingers");
        std::thread::sleep(Duration::from_millis(20));
    }

    let none = BTreeMap::new();
    let req = request(
        &s,
        &[("k-1", "dlg-k-1", none.clone()), ("k-2", "dlg-k-2", none.clone()), ("k-3", "dlg-k-3", none)],
        1 << 20,
    );
    let (reply, raw) = sync(&s, &req);
    assert!(reply.tmux_server_running);
    assert!(reply.remote_time.ends_with('Z'), "{}", reply.remote_time);
    let [a, b, c] = &reply.tasks[..] else { panic!("{reply:?}") };
    assert_eq!((a.task_key.as_str(), a.dir_exists, a.session_alive), ("k-1", true, false));
    assert_eq!((b.task_key.as_str(), b.dir_exists, b.session_alive), ("k-2", true, true));
    assert_eq!(c, &TaskReport { task_key: "k-3".into(), ..Default::default() });
    let files = |t: &TaskReport| t.deltas.iter().map(|d| d.file.clone()).collect::<Vec<_>>();
    assert_eq!(files(a), ["state", "exit", "stream.jsonl", "outbox.jsonl"]);
    assert_eq!(files(b), ["state", "stream.jsonl", "stderr.log"]);
    check_deltas(&done, a, 1 << 20);
    check_deltas(&running, b, 1 << 20);
    assert_eq!(a.launch_json, Some(std::fs::read(done.join("launch.json")).unwrap()));
    assert!(String::from_utf8_lossy(&a.deltas[1].bytes).starts_with("0 "));

    // With the offsets it now holds, the lead gets nothing new: no deltas at all.
    let req2 = request(
        &s,
        &[("k-1", "dlg-k-1", sizes(a)), ("k-2", "dlg-k-2", sizes(b)), ("k-3", "dlg-k-3", BTreeMap::new())],
        1 << 20,
    );
    let (again, _) = sync(&s, &req2);
    assert!(again.tasks.iter().all(|t| t.deltas.is_empty()), "{again:?}");

    // A partial read: from an offset, at most max bytes; the rest comes next time.
    let off = BTreeMap::from([("state".to_string(), 3), ("exit".to_string(), u64::MAX)]);
    let mut req3 = request(&s, &[("k-1", "dlg-k-1", off)], 7);
    req3.tasks[0].want_launch_json = false;
    let (part, _) = sync(&s, &req3);
    let t = &part.tasks[0];
    assert_eq!(t.deltas[0].file, "state");
    assert_eq!((t.deltas[0].offset, t.deltas[0].bytes.len()), (3, 7));
    assert!(t.deltas.iter().all(|d| d.file != "exit" && d.bytes.len() <= 7));
    check_deltas(&done, t, 7);
    assert_eq!(t.launch_json, None);

    // A reply cut anywhere is refused.
    for cut in 0..raw.len() {
        assert!(parse_sync(&raw[..cut]).is_err(), "a reply cut at {cut} of {} parsed", raw.len());
    }
}

#[test]
fn a_missing_root_or_no_tmux_server_is_reported_not_an_error() {
    let s = Scratch::new("sync-empty");
    let req = request(&s, &[("k-1", "dlg-k-1", BTreeMap::new())], 1024);
    let (reply, _) = sync(&s, &req);
    assert!(!reply.tmux_server_running);
    assert_eq!(reply.tasks, [TaskReport { task_key: "k-1".into(), ..Default::default() }]);
    // No tasks at all is a valid (if pointless) sync.
    let (reply, _) = sync(&s, &request(&s, &[], 1024));
    assert!(reply.tasks.is_empty());
}

#[test]
fn binary_bytes_keep_the_framing_and_empty_files_send_nothing() {
    let s = Scratch::new("sync-binary");
    let dir = s.task_dir("k-1");
    std::fs::create_dir_all(&dir).unwrap();
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).chain(*b"\nEND\nT k-9 1 1\n").collect();
    std::fs::write(dir.join("stream.jsonl"), &binary).unwrap();
    std::fs::write(dir.join("events.jsonl"), b"").unwrap();
    let (reply, _) = sync(&s, &request(&s, &[("k-1", "dlg-k-1", BTreeMap::new())], 1 << 20));
    assert_eq!(reply.tasks[0].deltas.len(), 1, "an empty file has no delta");
    assert_eq!(reply.tasks[0].deltas[0].bytes, binary);
}

#[test]
fn a_file_that_comes_up_short_while_read_is_padded_and_noted() {
    let s = Scratch::new("sync-short");
    let dir = s.task_dir("k-1");
    std::fs::create_dir_all(&dir).unwrap();
    // Past what the sync reads with builtins: this one is read by dd.
    std::fs::write(dir.join("stream.jsonl"), "0123456789".repeat(30_000)).unwrap();
    std::fs::write(dir.join("state"), "started\n").unwrap();
    // A dd that stops after 10 bytes (the last count= wins), as if the file had shrunk
    // between the size check and the read.
    let shims = Shims::new(&s);
    let real = Command::new("bash").args(["-c", "command -v dd"]).output().unwrap();
    let real = String::from_utf8(real.stdout).unwrap();
    std::fs::write(shims.dir.join("dd"), format!("#!/bin/bash\nexec {} \"$@\" count=10\n", real.trim())).unwrap();
    let script = render_sync(&request(&s, &[("k-1", "dlg-k-1", BTreeMap::new())], 1 << 20)).unwrap();
    let (out, _) = shims.run(&s, &script);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\nS k-1 stream.jsonl 10\n"), "{text}");
    let reply = parse_sync(&out.stdout).unwrap();
    let d = &reply.tasks[0].deltas;
    assert_eq!((d[0].file.as_str(), d[0].bytes.as_slice()), ("state", &b"started\n"[..]));
    assert_eq!((d[1].file.as_str(), d[1].size, d[1].bytes.as_slice()), ("stream.jsonl", 300_000, &b"0123456789"[..]));
}

/// A directory of counting stand-ins for every program the sync script may start: each
/// appends its name to `log` and execs the real one. With PATH set to this directory
/// alone, a program we did not list fails loudly instead of going uncounted.
struct Shims {
    dir: PathBuf,
    log: PathBuf,
}

impl Shims {
    fn new(s: &Scratch) -> Shims {
        let dir = s.dir.join("shims");
        std::fs::create_dir_all(&dir).unwrap();
        for tool in ["base64", "tmux", "find", "dd", "head", "cat", "touch", "rm"] {
            let real = Command::new("bash").args(["-c", &format!("command -v {tool}")]).output().unwrap();
            let real = String::from_utf8(real.stdout).unwrap().trim().to_string();
            assert!(!real.is_empty(), "{tool} is not installed");
            let path = dir.join(tool);
            std::fs::write(&path, format!("#!/bin/bash\nprintf '%s\\n' {tool} >>\"$SHIM_LOG\"\nexec {real} \"$@\"\n"))
                .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Shims { log: s.dir.join("shim.log"), dir }
    }
    /// Runs a script with the shims as PATH; returns its output and the programs started.
    fn run(&self, s: &Scratch, script: &[u8]) -> (std::process::Output, Vec<String>) {
        let _ = std::fs::remove_file(&self.log);
        let out = s.run_with(script, &[("PATH", self.dir.as_os_str()), ("SHIM_LOG", self.log.as_os_str())]);
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        (out, log.lines().map(String::from).collect())
    }
}

#[test]
fn a_sync_script_cut_at_any_line_runs_nothing() {
    let s = Scratch::new("sync-cut");
    let shims = Shims::new(&s);
    std::fs::create_dir_all(s.task_dir("k-1")).unwrap();
    std::fs::write(s.task_dir("k-1").join("state"), "started\n").unwrap();
    let script = render_sync(&request(&s, &[("k-1", "dlg-k-1", BTreeMap::new())], 1024)).unwrap();
    let mut cuts: Vec<usize> = script.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1).collect();
    let last_line = script[..script.len() - 1].iter().rposition(|b| *b == b'\n').unwrap() + 1;
    cuts.extend(last_line..script.len());
    cuts.retain(|&k| k < script.len() - 1);
    cuts.sort_unstable();
    cuts.dedup();
    for k in cuts {
        let (out, ran) = shims.run(&s, &script[..k]);
        assert!(ran.is_empty(), "a script cut at byte {k} of {} started {ran:?}", script.len());
        assert!(out.stdout.is_empty(), "a script cut at byte {k} printed {:?}", String::from_utf8_lossy(&out.stdout));
        assert!(parse_sync(&out.stdout).is_err());
    }
    // The whole script does run under the shims: the check above is not vacuous.
    let (out, ran) = shims.run(&s, &script);
    assert!(parse_sync(&out.stdout).is_ok(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!ran.is_empty());
}

/// `n` task directories as a busy host has them, with their synced files.
fn fake_tasks(s: &Scratch, n: usize) -> Vec<(String, String, BTreeMap<String, u64>)> {
    (0..n)
        .map(|i| {
            let key = format!("k-{i}");
            let dir = s.task_dir(&key);
            std::fs::create_dir_all(&dir).unwrap();
            let mut offsets = BTreeMap::new();
            for f in SYNCED_FILES {
                let body = format!("{f} of task {i}\n");
                std::fs::write(dir.join(f), &body).unwrap();
                offsets.insert(f.to_string(), body.len() as u64);
            }
            (key.clone(), format!("dlg-{key}"), offsets)
        })
        .collect()
}

fn as_refs(t: &[(String, String, BTreeMap<String, u64>)]) -> Vec<(&str, &str, BTreeMap<String, u64>)> {
    t.iter().map(|(k, s, o)| (k.as_str(), s.as_str(), o.clone())).collect()
}

/// Counts process creations (fork, vfork, clone) of a whole run with strace, if strace
/// runs here (it needs ptrace, which containers may forbid). This also counts subshells,
/// which the shims cannot see.
fn forks_under_strace(s: &Scratch, script: &[u8]) -> Option<usize> {
    let probe = Command::new("strace").args(["-qq", "-f", "-o", "/dev/null", "true"]).output().ok()?;
    if !probe.status.success() {
        return None;
    }
    let log = s.dir.join("strace.log");
    // As a brother runs it (no fork of its own to read the script).
    let input = s.dir.join("script.sh");
    std::fs::write(&input, script).ok()?;
    let status = Command::new("strace")
        .args(["-qq", "-f", "-e", "trace=fork,vfork,clone,clone3", "-o"])
        .arg(&log)
        .args(crate::remote::REMOTE_ARGV)
        .env("TMUX_TMPDIR", s.dir.join("tmux"))
        .env("HOME", &s.dir)
        .stdin(std::fs::File::open(&input).ok()?)
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let text = std::fs::read_to_string(&log).ok()?;

    Some(text.lines().filter(|l| !l.contains("resumed>") && !l.contains("+++") && !l.contains("---")).count())
}

#[test]
fn the_sync_script_starts_the_same_programs_for_10_or_200_tasks() {
    let s = Scratch::new("sync-scale");
    let shims = Shims::new(&s);
    // A live tmux server, as on a real brother, so `tmux list-sessions` does real work.
    assert!(s.tmux(&["-f", "/dev/null", "new-session", "-d", "-s", "dlg-k-0", "sleep 60"]).status.success());
    let tasks = fake_tasks(&s, 200);
    let small = render_sync(&request(&s, &as_refs(&tasks[..10]), 1 << 20)).unwrap();
    let large = render_sync(&request(&s, &as_refs(&tasks), 1 << 20)).unwrap();

    // Nothing new anywhere: the same handful of programs whatever the task count.
    let t0 = Instant::now();
    let (out10, ran10) = shims.run(&s, &small);
    let took10 = t0.elapsed();
    let t0 = Instant::now();
    let (out200, ran200) = shims.run(&s, &large);
    let took200 = t0.elapsed();
    let large_req = request(&s, &as_refs(&tasks), 1 << 20);
    let r200 = parsed(&out200.stdout, &large_req);
    assert_eq!(parse_sync(&out10.stdout).unwrap().tasks.len(), 10);
    assert_eq!(r200.tasks.len(), 200);
    assert!(r200.tasks.iter().all(|t| t.dir_exists && t.deltas.is_empty()));
    assert!(r200.tasks[0].session_alive && !r200.tasks[1].session_alive);
    assert_eq!(ran10, ran200, "programs started for 10 tasks vs 200");
    assert!(ran200.len() <= 3, "{ran200:?}");
    eprintln!("sync of 10 tasks: {took10:?}; of 200 tasks: {took200:?}; programs: {ran200:?}");

    // strace also sees subshells: with nothing new, 200 tasks cost no more forks than 10.
    match (forks_under_strace(&s, &small), forks_under_strace(&s, &large)) {
        (Some(f10), Some(f200)) => {
            eprintln!("forks under strace: 10 tasks {f10}, 200 tasks {f200}");
            assert_eq!(f10, f200, "the sync script forks per task");
        }
        _ => eprintln!("strace cannot run here: forks checked through the PATH shims only"),
    }

    // Every task's `state` and stream grew: still no process per task or per grown file
    // (files read from their start up to 256 KiB are read by builtins).
    for (key, _, _) in &tasks {
        let dir = s.task_dir(key);
        for f in ["state", "stream.jsonl"] {
            let mut text = std::fs::read_to_string(dir.join(f)).unwrap();
            text.push_str("more\n");
            std::fs::write(dir.join(f), text).unwrap();
        }
    }
    let (out, ran) = shims.run(&s, &large);
    let reply = parsed(&out.stdout, &large_req);
    assert!(reply.tasks.iter().all(|t| t.deltas.len() == 2 && t.deltas.iter().all(|d| d.bytes == b"more\n")));
    assert_eq!(ran, ran200, "programs started for 400 grown files vs none");
}

#[test]
fn grown_files_with_nul_bytes_are_sent_exactly_from_any_offset_without_a_process() {
    let s = Scratch::new("sync-nul");
    let shims = Shims::new(&s);
    let dir = s.task_dir("k-1");
    std::fs::create_dir_all(&dir).unwrap();
    // NULs at the start, in runs, at the end; the small file ends on one, the large one
    // (read by dd) holds the same pattern past the builtin reads' bound.
    let unit: Vec<u8> = b"\0\0a\0bc\0\0\0def\n\xff\xfe\0".to_vec();
    let small: Vec<u8> = unit.iter().cycle().take(unit.len() * 500).copied().collect();
    let large: Vec<u8> = unit.iter().cycle().take(300_000).copied().collect();
    std::fs::write(dir.join("stderr.log"), &small).unwrap();
    std::fs::write(dir.join("stream.jsonl"), &large).unwrap();
    for off in [0u64, 1, 2, 3, 5, 7, 100, small.len() as u64 - 1] {
        let offsets = BTreeMap::from([("stderr.log".to_string(), off), ("stream.jsonl".to_string(), 299_990)]);
        let script = render_sync(&request(&s, &[("k-1", "dlg-k-1", offsets)], 1 << 20)).unwrap();
        let (out, ran) = shims.run(&s, &script);
        let reply = parse_sync(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        let d = &reply.tasks[0].deltas;
        assert_eq!(d.len(), 2, "{d:?}");
        let (err, stream) =
            (d.iter().find(|d| d.file == "stderr.log").unwrap(), d.iter().find(|d| d.file == "stream.jsonl").unwrap());
        assert_eq!(err.bytes, small[off as usize..], "stderr.log from {off}");
        assert_eq!(stream.bytes, large[299_990..], "stream.jsonl past the builtin bound");
        // dd only for the large one.
        assert_eq!(ran.iter().filter(|p| *p == "dd").count(), 1, "{ran:?}");
    }
    // Capped by the per-file limit: exactly the first bytes from the offset.
    let offsets = BTreeMap::from([("stderr.log".to_string(), 3u64), ("stream.jsonl".to_string(), 300_000)]);
    let (reply, _) = sync(&s, &request(&s, &[("k-1", "dlg-k-1", offsets)], 11));
    assert_eq!(reply.tasks[0].deltas[0].bytes, small[3..14]);
}

#[test]
fn the_budget_caps_the_whole_reply_and_files_past_it_come_with_no_bytes() {
    let s = Scratch::new("sync-budget");
    let mut keys = Vec::new();
    for k in ["k-1", "k-2", "k-3"] {
        let dir = s.root().join("tasks").join(k);
        std::fs::create_dir_all(&dir).unwrap();
        // Lines of 100 bytes; 1000 bytes each in stream.jsonl and events.jsonl.
        let line = format!("{}\n", "x".repeat(99));
        std::fs::write(dir.join("stream.jsonl"), line.repeat(10)).unwrap();
        std::fs::write(dir.join("events.jsonl"), line.repeat(10)).unwrap();
        keys.push((k, format!("dlg-{k}")));
    }
    let tasks: Vec<(&str, &str, BTreeMap<String, u64>)> =
        keys.iter().map(|(k, sess)| (*k, sess.as_str(), BTreeMap::new())).collect();
    let mut req = request(&s, &tasks, 600);
    req.max_bytes_total = 1500;
    let (reply, _) = sync(&s, &req);
    let carried: usize = reply.tasks.iter().flat_map(|t| &t.deltas).map(|d| d.bytes.len()).sum();
    assert_eq!(carried, 1500, "the budget is spent and not exceeded");
    // Request order: k-1 gets its per-file cap twice, k-2 the rest, k-3 only announcements.
    let lens = |t: &TaskReport| t.deltas.iter().map(|d| (d.file.clone(), d.bytes.len())).collect::<Vec<_>>();
    assert_eq!(lens(&reply.tasks[0]), [("stream.jsonl".to_string(), 600), ("events.jsonl".to_string(), 600)]);
    assert_eq!(lens(&reply.tasks[1]), [("stream.jsonl".to_string(), 300), ("events.jsonl".to_string(), 0)]);
    assert_eq!(lens(&reply.tasks[2]), [("stream.jsonl".to_string(), 0), ("events.jsonl".to_string(), 0)]);
    for (t, (k, _)) in reply.tasks.iter().zip(&keys) {
        check_prefix(&s.root().join("tasks").join(k), t);
        assert!(t.deltas.iter().all(|d| d.cut()), "every file has more waiting");
    }
    // From the offsets received, the next reply carries the rest.
    let next: Vec<(&str, &str, BTreeMap<String, u64>)> =
        keys.iter().zip(&reply.tasks).map(|((k, sess), t)| (*k, sess.as_str(), sizes(t))).collect();
    let mut req = request(&s, &next, 600);
    req.max_bytes_total = 1500;
    let (reply, _) = sync(&s, &req);
    let carried: usize = reply.tasks.iter().flat_map(|t| &t.deltas).map(|d| d.bytes.len()).sum();
    assert_eq!(carried, 1500);
    for (t, (k, _)) in reply.tasks.iter().zip(&keys) {
        check_prefix(&s.root().join("tasks").join(k), t);
    }
}

/// Every delta is the file's bytes from its offset, however many the budget let through.
fn check_prefix(dir: &Path, t: &TaskReport) {
    for d in &t.deltas {
        let file = std::fs::read(dir.join(&d.file)).unwrap();
        assert_eq!(d.size, file.len() as u64, "{}", d.file);
        assert_eq!(d.bytes, file[d.offset as usize..d.offset as usize + d.bytes.len()], "{}", d.file);
    }
}

/// With the clock of a sync that read a task to the end, the next sync looks only at files
/// modified since (less the margin): an untouched file is not looked at even when the
/// lead's offset is behind it (here on purpose, to make the skip visible), a file written
/// after the clock is, and without a clock every file is. The clock is the file system's,
/// read from a file the script wrote before it looked at anything.
#[test]
fn with_a_clock_only_files_changed_since_are_looked_at() {
    let s = Scratch::new("sync-clock");
    let plan = fake_plan("echo '{\"type\":\"system\"}'\nexec sleep 30\n");
    let dir = s.launch(&vars(&s, "k-1", "dlg-k-1", &plan, b"x"));
    let start = Instant::now();
    while std::fs::metadata(dir.join("stream.jsonl")).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "the agent wrote nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Old files: their modification times an hour back, as if written long before.
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for f in ["state", "stream.jsonl"] {
        std::fs::File::options().append(true).open(dir.join(f)).unwrap().set_modified(hour_ago).unwrap();
    }
    let all = request(&s, &[("k-1", "dlg-k-1", BTreeMap::new())], 1 << 20);
    let (first, _) = sync(&s, &all);
    let clock = first.clock_ms.expect("the script read its clock file");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(clock.abs_diff(now_ms) < 5_000, "the clock is the file system's now: {clock} against {now_ms}");
    let files = |r: &SyncReply| r.tasks[0].deltas.iter().map(|d| d.file.clone()).collect::<Vec<_>>();
    assert!(
        files(&first).contains(&"state".to_string()) && files(&first).contains(&"stream.jsonl".to_string()),
        "{first:?}"
    );

    // The same request with the clock: nothing was modified since, nothing is looked at.
    let mut quiet = all.clone();
    quiet.tasks[0].clock_ms = Some(clock);
    let (second, _) = sync(&s, &quiet);
    assert_eq!((second.tasks[0].dir_exists, second.tasks[0].session_alive), (true, true));
    assert!(files(&second).is_empty(), "{:?}", files(&second));
    // A sync of quiet tasks alone reads the clock in the same find as their files.
    assert!(second.clock_ms.is_some_and(|c| c >= clock), "no clock from a quiet-only sync: {second:?}");
    // A file appended to after the clock is looked at (and read from the lead's offset).
    std::fs::OpenOptions::new().append(true).open(dir.join("events.jsonl")).map(drop).ok();
    std::fs::write(dir.join("outbox.jsonl"), "{\"seq\":1}\n").unwrap();
    let (third, _) = sync(&s, &quiet);
    assert_eq!(files(&third), ["outbox.jsonl"]);
    check_deltas(&dir, &third.tasks[0], 1 << 20);
    // A clock older than the files' times looks at them again.
    quiet.tasks[0].clock_ms = Some(clock - 7_200_000);
    let (fourth, _) = sync(&s, &quiet);
    assert!(files(&fourth).contains(&"stream.jsonl".to_string()), "{:?}", files(&fourth));
}

/// Sets every synced file of a task an hour back, as if the agent had been quiet that long.
fn age_files(dir: &Path) {
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for f in SYNCED_FILES {
        if let Ok(file) = std::fs::File::options().append(true).open(dir.join(f)) {
            file.set_modified(hour_ago).unwrap();
        }
    }
}

/// The runner's pid, from its `started` line.
fn runner_pid(dir: &Path) -> i32 {
    let state = std::fs::read_to_string(dir.join("state")).unwrap();
    let first = state.lines().next().unwrap();
    first.strip_prefix("started pid=").and_then(|r| r.split(' ').next()).unwrap().parse().unwrap()
}

/// A poll of a few running agents that wrote nothing new (the usual `status` or `wait`)
/// starts no process on the brother: liveness from the runners' pids and start times in
/// /proc, quiet files compared by bash's -nt with a file stamped with the since (made once,
/// by one touch). find looks only at a task with a file changed since; tmux is asked when a
/// runner is not seen alive (killed, or its pid recycled: the start time differs).
#[test]
fn a_small_sync_of_quiet_running_tasks_starts_no_process() {
    if !Path::new("/proc/self/stat").exists() {
        eprintln!("no /proc here: the builtin liveness check does not apply");
        return;
    }
    let s = Scratch::new("sync-small");
    let shims = Shims::new(&s);
    let plan = fake_plan("echo '{\"type\":\"system\"}'\nexec sleep 60\n");
    let keys = ["k-1", "k-2", "k-3"];
    let dirs: Vec<PathBuf> = keys.iter().map(|k| s.launch(&vars(&s, k, &format!("dlg-{k}"), &plan, b"x"))).collect();
    let start = Instant::now();
    for dir in &dirs {
        while std::fs::metadata(dir.join("stream.jsonl")).map(|m| m.len()).unwrap_or(0) == 0 {
            assert!(start.elapsed() < Duration::from_secs(5), "the agent wrote nothing");
            std::thread::sleep(Duration::from_millis(10));
        }
        let first = std::fs::read_to_string(dir.join("state")).unwrap();
        assert!(first.lines().next().unwrap().contains(" start="), "no start time in the started line: {first}");
    }
    let tasks: Vec<(&str, String, BTreeMap<String, u64>)> =
        keys.iter().map(|k| (*k, format!("dlg-{k}"), BTreeMap::new())).collect();
    let refs: Vec<(&str, &str, BTreeMap<String, u64>)> =
        tasks.iter().map(|(k, s, o)| (*k, s.as_str(), o.clone())).collect();
    let all = request(&s, &refs, 1 << 20);

    // The first sync reads everything (no clock yet): find for the sizes, no tmux.
    let (out, ran) = shims.run(&s, &render_sync(&all).unwrap());
    let first = parse_sync(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(ran, ["find"], "{}", String::from_utf8_lossy(&out.stderr));
    assert!(first.tmux_server_running && first.tasks.iter().all(|t| t.dir_exists && t.session_alive));
    let clock = first.clock_ms.expect("a clock from the find");
    // What the lead holds after it: every file to its end, and the clock.
    let mut quiet = all.clone();
    for (t, r) in quiet.tasks.iter_mut().zip(&first.tasks) {
        t.offsets = sizes(r);
        t.clock_ms = Some(clock);
        t.want_launch_json = false;
    }
    for dir in &dirs {
        age_files(dir);
    }

    // Nothing new since: one touch makes the since's file, then no process at all.
    let script = render_sync(&quiet).unwrap();
    let (_, ran) = shims.run(&s, &script);
    assert_eq!(ran, ["touch"]);
    let (out, ran) = shims.run(&s, &script);
    assert!(ran.is_empty(), "a quiet poll started {ran:?}");
    let polled = parse_sync(&out.stdout).unwrap();
    assert!(polled.tmux_server_running && polled.clock_skipped && polled.clock_ms.is_none(), "{polled:?}");
    assert!(polled.tasks.iter().all(|t| t.dir_exists && t.session_alive && t.deltas.is_empty()), "{polled:?}");

    // One task's outbox grew: find looks at that task alone, and its new line comes.
    let line = b"{\"seq\":1,\"kind\":\"progress\"}\n";
    std::fs::write(dirs[1].join("outbox.jsonl"), line).unwrap();
    let (out, ran) = shims.run(&s, &script);
    assert_eq!(ran, ["find"]);
    let grown = parse_sync(&out.stdout).unwrap();
    assert!(grown.clock_ms.is_some() && !grown.clock_skipped);
    let files = |t: &TaskReport| t.deltas.iter().map(|d| d.file.clone()).collect::<Vec<_>>();
    assert_eq!(grown.tasks.iter().map(files).collect::<Vec<_>>(), [vec![], vec!["outbox.jsonl".to_string()], vec![]]);
    assert_eq!(grown.tasks[1].deltas[0].bytes, line);
    std::fs::write(dirs[1].join("outbox.jsonl"), b"").unwrap();
    age_files(&dirs[1]);

    // A start time that is not the process's (its pid recycled): tmux is asked, and says
    // the session is there.
    let state = std::fs::read_to_string(dirs[0].join("state")).unwrap();
    let (head, tail) = state.split_once(" start=").unwrap();
    let rest = tail.split_once('\n').map(|(_, r)| r).unwrap_or("");
    std::fs::write(dirs[0].join("state"), format!("{head} start=1\n{rest}")).unwrap();
    age_files(&dirs[0]);
    let (out, ran) = shims.run(&s, &script);
    assert_eq!(ran, ["tmux"]);
    assert!(parse_sync(&out.stdout).unwrap().tasks.iter().all(|t| t.session_alive));
    std::fs::write(dirs[0].join("state"), &state).unwrap();
    age_files(&dirs[0]);

    // A runner killed outright (no exit record): tmux is asked, and its session is gone.
    let pid = runner_pid(&dirs[2]);
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let end = Instant::now() + Duration::from_secs(5);
    while s.tmux(&["has-session", "-t", "=dlg-k-3"]).status.success() {
        assert!(Instant::now() < end, "the killed runner's session lingers");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (out, ran) = shims.run(&s, &script);
    assert_eq!(ran, ["tmux"]);
    let after = parse_sync(&out.stdout).unwrap();
    assert_eq!(after.tasks.iter().map(|t| t.session_alive).collect::<Vec<_>>(), [true, true, false]);
    assert!(!dirs[2].join("exit").exists());

    // A since over 90 s old by the brother's clock: find runs and brings a clock, which the
    // lead then keeps (its stored clocks are renewed only from such a reply).
    let mut old = quiet.clone();
    old.tasks.truncate(2);
    for t in &mut old.tasks {
        t.clock_ms = Some(clock - 200_000);
    }
    let (out, ran) = shims.run(&s, &render_sync(&old).unwrap());
    assert_eq!(ran, ["find"], "{}", String::from_utf8_lossy(&out.stderr));
    assert!(parse_sync(&out.stdout).unwrap().clock_ms.is_some());
}

#[test]
fn a_large_sync_names_only_the_tasks_with_news_and_lists_sessions_once() {
    let s = Scratch::new("sync-large");
    let n = LARGE_SYNC + 36;
    let tasks = fake_tasks(&s, n);
    // Two live sessions (tasks 0 and 7), the rest gone; a session of no task of this sync.
    for name in ["dlg-k-0", "dlg-k-7", "dlg-other"] {
        assert!(s.tmux(&["-f", "/dev/null", "new-session", "-d", "-s", name, "sleep 60"]).status.success());
    }
    let mut req = request(&s, &as_refs(&tasks), 1 << 20);
    for t in &mut req.tasks {
        t.want_launch_json = false;
    }
    let lines = |out: &[u8]| out.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();

    // The first sync of a task (no clock yet) looks at all its files: every task is named.
    // (Its files are older than that sync's clock by more than the margin.)
    std::thread::sleep(Duration::from_millis(300));
    let (first, raw) = sync(&s, &req);
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.lines().filter(|l| l.starts_with("T ")).count(), n, "{text}");
    assert!(text.contains("\nQ 0\n"), "{text}");
    assert_eq!(first.tasks.len(), n);
    // The lead then keeps that sync's clock for each task.
    for t in &mut req.tasks {
        t.clock_ms = Some(first.clock_ms.expect("the sync read a clock"));
    }

    // Nothing new: the header, the session list, the quiet count and END; no T line at all.
    // (Files that are not synced ones, written since, change nothing.)
    for decoy in ["exit.tmp", "state.old", "inbox.jsonl", "xstate", "prompt"] {
        std::fs::write(s.task_dir("k-3").join(decoy), "x\n").unwrap();
    }
    let (reply, raw) = sync(&s, &req);
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(lines(&raw), 5, "{text}");
    assert!(text.contains(&format!("\nQ {n}\n")), "{text}");
    let listed = text.lines().nth(2).unwrap();
    assert!(text.lines().nth(1).unwrap().starts_with("A ") && listed.split(':').count() == 3, "{text}");
    assert_eq!(reply.tasks.len(), n);
    for t in &reply.tasks {
        assert!(t.dir_exists && t.deltas.is_empty() && t.launch_json.is_none(), "{t:?}");
        assert_eq!(t.session_alive, t.task_key == "k-0" || t.task_key == "k-7", "{}", t.task_key);
    }

    // One task's stream grew, one task's directory is gone, one wants its launch.json: those
    // three are named (in request order), with what they have to say; the rest are counted.
    std::fs::write(s.task_dir("k-7").join("stream.jsonl"), "stream.jsonl of task 7\nmore\n").unwrap();
    std::fs::remove_dir_all(s.task_dir("k-20")).unwrap();
    std::fs::write(s.task_dir("k-30").join("launch.json"), "{\"pid\":1}").unwrap();
    req.tasks[30].want_launch_json = true;
    let (reply, raw) = sync(&s, &req);
    let text = String::from_utf8_lossy(&raw);
    let named: Vec<&str> = text.lines().filter(|l| l.starts_with("T ")).collect();
    assert_eq!(named, ["T k-7 1 ?", "T k-20 0 ?", "T k-30 1 ?"], "{text}");
    assert!(text.contains(&format!("\nQ {}\n", n - 3)), "{text}");
    assert_eq!(reply.tasks.len(), n);
    let task = |key: &str| reply.tasks.iter().find(|t| t.task_key == key).unwrap();
    assert!(task("k-7").session_alive && task("k-7").deltas.len() == 1);
    assert_eq!(task("k-7").deltas[0].bytes, b"more\n");
    assert!(!task("k-20").dir_exists && !task("k-20").session_alive);
    assert_eq!(task("k-30").launch_json.as_deref(), Some(&b"{\"pid\":1}"[..]));
    assert!(task("k-0").session_alive && task("k-0").deltas.is_empty());

    // Each synced file, grown in a task of its own, is found: that task is named with it.
    for (i, file) in SYNCED_FILES.iter().enumerate() {
        let path = s.task_dir(&format!("k-{}", 40 + i)).join(file);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("grown\n");
        std::fs::write(&path, text).unwrap();
    }
    let (reply, raw) = sync(&s, &req);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains(&format!("\nQ {}\n", n - 3 - SYNCED_FILES.len())), "{text}");
    for (i, file) in SYNCED_FILES.iter().enumerate() {
        let t = reply.tasks.iter().find(|t| t.task_key == format!("k-{}", 40 + i)).unwrap();
        let files: Vec<&str> = t.deltas.iter().map(|d| d.file.as_str()).collect();
        assert_eq!(files, [*file], "{text}");
        assert_eq!(t.deltas[0].bytes, b"grown\n");
    }

    // No tmux server: no session list, every task not alive.
    let _ = s.tmux(&["kill-server"]);
    let (reply, raw) = sync(&s, &req);
    let text = String::from_utf8_lossy(&raw);
    assert!(!text.contains("\nA "), "{text}");
    assert!(!reply.tmux_server_running && reply.tasks.iter().all(|t| !t.session_alive));
    assert_eq!(reply.tasks.len(), n);
}

/// find takes the tasks in chunks of FIND_CHUNK (the kernel caps a command's arguments): a
/// sync of more tasks than two chunks reads every task of every chunk, knows every
/// directory there from find's status without a line per task, and finds one gone, or one
/// that is no directory, in any chunk; a synced file that is a symbolic link is not
/// followed, while a task directory that is a link to one is read.
#[test]
fn a_sync_of_more_tasks_than_one_find_takes_reads_every_chunk() {
    let chunk: usize = crate::remote::protocol::SYNC_SH
        .lines()
        .find_map(|l| l.trim().strip_prefix("local -r FIND_CHUNK="))
        .expect("FIND_CHUNK in sync.sh")
        .parse()
        .unwrap();
    let s = Scratch::new("sync-chunks");
    let n = 2 * chunk + 5;
    let mut tasks = fake_tasks(&s, n);
    // Task 3's state is a link to a file outside the task; task 4's directory is a link to
    // a directory holding its files.
    let outside = s.dir.join("outside");
    std::fs::write(&outside, "not the task's\n").unwrap();
    std::fs::remove_file(s.task_dir("k-3").join("state")).unwrap();
    std::os::unix::fs::symlink(&outside, s.task_dir("k-3").join("state")).unwrap();
    tasks[3].2.remove("state");
    let moved = s.dir.join("moved-k-4");
    std::fs::rename(s.task_dir("k-4"), &moved).unwrap();
    std::os::unix::fs::symlink(&moved, s.task_dir("k-4")).unwrap();
    let mut req = request(&s, &as_refs(&tasks), 1 << 20);
    for t in &mut req.tasks {
        t.want_launch_json = false;
        t.offsets.clear();
    }

    // The first sync reads every file of every task (no clock yet).
    std::thread::sleep(Duration::from_millis(300));
    let (first, _) = sync(&s, &req);
    assert_eq!(first.tasks.len(), n);
    for (key, _, offsets) in &tasks {
        let t = first.tasks.iter().find(|t| &t.task_key == key).unwrap();
        assert!(t.dir_exists, "{key}");
        assert_eq!(&sizes(t), offsets, "{key}");
    }
    for t in &mut req.tasks {
        t.clock_ms = Some(first.clock_ms.expect("the sync read a clock"));
        t.offsets = sizes(first.tasks.iter().find(|r| r.task_key == t.task_key).unwrap());
    }

    // Nothing new: no task named.
    let (reply, raw) = sync(&s, &req);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains(&format!("\nQ {n}\n")), "{}", &text[..text.len().min(2000)]);
    assert!(reply.tasks.iter().all(|t| t.dir_exists && t.deltas.is_empty()));

    // News in the first and the last chunk, a directory gone in the middle one.
    let last = format!("k-{}", n - 1);
    let middle = format!("k-{}", chunk + chunk / 2);
    for key in ["k-0", last.as_str()] {
        let path = s.task_dir(key).join("events.jsonl");
        let mut body = std::fs::read_to_string(&path).unwrap();
        body.push_str("grown\n");
        std::fs::write(&path, body).unwrap();
    }
    std::fs::remove_dir_all(s.task_dir(&middle)).unwrap();
    // (So that this sync's clock, less its margin, is past those writes.)
    std::thread::sleep(Duration::from_millis(300));
    let (reply, raw) = sync(&s, &req);
    let text = String::from_utf8_lossy(&raw);
    let named: Vec<&str> = text.lines().filter(|l| l.starts_with("T ")).collect();
    // (No tmux server here: every session reads as gone.)
    assert_eq!(named, ["T k-0 1 0".to_string(), format!("T {middle} 0 0"), format!("T {last} 1 0")], "{text}");
    assert!(text.contains(&format!("\nQ {}\n", n - 3)), "{text}");
    for t in &reply.tasks {
        assert_eq!(t.dir_exists, t.task_key != middle, "{}", t.task_key);
        let grown = t.task_key == "k-0" || t.task_key == last;
        assert_eq!(t.deltas.len(), usize::from(grown), "{}", t.task_key);
    }
    let grown = reply.tasks.iter().find(|t| t.task_key == last).unwrap();
    assert_eq!((grown.deltas[0].file.as_str(), &grown.deltas[0].bytes[..]), ("events.jsonl", &b"grown\n"[..]));

    // A task's directory replaced by a file (in the second chunk) is no task directory:
    // find's status alone would not say so. (The grown files read, as the lead keeps them.)
    for t in &mut req.tasks {
        let read = reply.tasks.iter().find(|r| r.task_key == t.task_key).unwrap();
        t.offsets.extend(sizes(read));
        t.clock_ms = reply.clock_ms;
    }
    // (The gone one back, empty, so that no task directory is missing.)
    let other = format!("k-{}", chunk + 1);
    std::fs::remove_dir_all(s.task_dir(&other)).unwrap();
    std::fs::write(s.task_dir(&other), "a file\n").unwrap();
    std::fs::create_dir(s.task_dir(&middle)).unwrap();
    let (reply, raw) = sync(&s, &req);
    let text = String::from_utf8_lossy(&raw);
    let named: Vec<&str> = text.lines().filter(|l| l.starts_with("T ")).collect();
    assert_eq!(named, [format!("T {other} 0 0")], "{text}");
    for t in &reply.tasks {
        assert_eq!(t.dir_exists, t.task_key != other, "{}", t.task_key);
    }
}

/// The resident brother shell (transport/ssh/resident.sh) run locally by bash, with the
/// tmux and find shims on its PATH; requests go as whole scripts (`A` frames).
struct ResidentLoop {
    child: std::process::Child,
    out: std::process::ChildStdout,
    n: usize,
}

impl ResidentLoop {
    fn start(s: &Scratch, shims: &Shims) -> ResidentLoop {
        // The shims first (tmux and find are logged), then the rest (mktemp).
        let real = std::env::var_os("PATH").unwrap_or_default();
        let path =
            std::env::join_paths(std::iter::once(shims.dir.clone()).chain(std::env::split_paths(&real))).unwrap();
        let bash = std::env::split_paths(&real).map(|d| d.join("bash")).find(|p| p.is_file()).expect("bash on PATH");
        let mut child = Command::new(bash)
            .args(["-c", crate::transport::ssh::resident::LOOP_SH])
            .env("TMUX_TMPDIR", s.dir.join("tmux"))
            .env("HOME", &s.dir)
            .env("TMPDIR", &s.dir)
            .env("PATH", path)
            .env("SHIM_LOG", &shims.log)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut r = ResidentLoop { child, out, n: 0 };
        r.read_until(b"\x1edlg-ready 1\x1e\n", b"");
        r
    }
    /// Reads until what came ends with `marker` and holds `within`.
    fn read_until(&mut self, marker: &[u8], within: &[u8]) -> Vec<u8> {
        use std::io::Read;
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while !got.ends_with(marker) || !(within.is_empty() || got.windows(within.len()).any(|w| w == within)) {
            let k = self.out.read(&mut buf).unwrap();
            assert!(k > 0, "the resident shell ended: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..k]);
        }
        got
    }
    /// Runs `script`; returns its stdout and the programs the shims saw it start.
    fn run(&mut self, shims: &Shims, script: &[u8]) -> (Vec<u8>, Vec<String>) {
        use std::io::Write;
        let _ = std::fs::remove_file(&shims.log);
        self.n += 1;
        let nonce = format!("a{}", self.n);
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(format!("A {nonce} {}\n", script.len()).as_bytes()).unwrap();
        stdin.write_all(script).unwrap();
        stdin.flush().unwrap();
        let begin = format!("\x1edlg-begin {nonce}\x1e");
        // (A request that failed says so with its status: the assertion below names it.)
        let got = self.read_until(b"\x1e", format!("\x1edlg-end {nonce} ").as_bytes());
        let body = &got[got.windows(begin.len()).position(|w| w == begin.as_bytes()).unwrap() + begin.len()..];
        let end = format!("\x1edlg-end {nonce} 0\x1e");
        assert!(body.ends_with(end.as_bytes()), "{}", String::from_utf8_lossy(&got));
        let log = std::fs::read_to_string(&shims.log).unwrap_or_default();
        (body[..body.len() - end.len()].to_vec(), log.lines().map(String::from).collect())
    }
}

impl Drop for ResidentLoop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A resident shell keeps a large sync's tmux listing and uses it again, with no tmux
/// process, while the server is the same process with the same children (its panes) and
/// for a few seconds at most: a session ended or begun, a server started anew, or a listing
/// grown old makes the next sync list again. The first listing is not kept (the children
/// must be read before it), the second is.
#[test]
fn a_resident_shell_uses_a_large_syncs_tmux_listing_again_only_while_the_server_is_unchanged() {
    let s = Scratch::new("sync-kept-listing");
    let shims = Shims::new(&s);
    let n = LARGE_SYNC + 6;
    let tasks = fake_tasks(&s, n);
    let session = |i: usize| format!("dlg-k-{i}");
    let start = |name: &str| {
        assert!(s.tmux(&["-f", "/dev/null", "new-session", "-d", "-s", name, "sleep 600"]).status.success())
    };
    for i in [0, 1, 2] {
        start(&session(i));
    }
    let mut req = request(&s, &as_refs(&tasks), 1 << 20);
    for t in &mut req.tasks {
        t.want_launch_json = false;
    }
    let script = render_sync(&req).unwrap();
    let mut shell = ResidentLoop::start(&s, &shims);
    let alive = |out: &[u8]| -> Vec<String> {
        let r = parsed(out, &req);
        let mut v: Vec<String> = r.tasks.iter().filter(|t| t.session_alive).map(|t| t.task_key.clone()).collect();
        v.sort();
        v
    };
    let tmux_ran = |ran: &[String]| ran.iter().any(|p| p == "tmux");

    // Listed twice (the first listing is not kept), then kept.
    for round in 0..2 {
        let (out, ran) = shell.run(&shims, &script);
        assert!(tmux_ran(&ran), "round {round}: {ran:?}");
        assert_eq!(alive(&out), ["k-0", "k-1", "k-2"]);
    }
    let (out, ran) = shell.run(&shims, &script);
    assert!(!tmux_ran(&ran), "{ran:?}");
    assert_eq!(alive(&out), ["k-0", "k-1", "k-2"]);

    // A session ended: its pane is gone, so tmux is asked, and it is not alive.
    assert!(s.tmux(&["kill-session", "-t", "=dlg-k-1"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (out, ran) = shell.run(&shims, &script);
        if alive(&out) == ["k-0", "k-2"] {
            assert!(tmux_ran(&ran), "{ran:?}");
            break;
        }
        // (Until the server has reaped the pane, the children read the same: alive then
        // is the truth, as its runner would still be running.)
        assert!(Instant::now() < deadline, "the ended session still reads alive");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A session begun: listed again.
    start(&session(5));
    let (out, ran) = shell.run(&shims, &script);
    assert!(tmux_ran(&ran), "{ran:?}");
    assert_eq!(alive(&out), ["k-0", "k-2", "k-5"]);
    let (_, ran) = shell.run(&shims, &script);
    assert!(!tmux_ran(&ran), "{ran:?}");

    // A listing older than its few seconds is made again.
    let (_, ran) = shell.run(&shims, b"printf \"__dlg_kept_tmux_at=%s\\0\" $((EPOCHSECONDS - 11)) >&3\n");
    assert!(ran.is_empty());
    let (out, ran) = shell.run(&shims, &script);
    assert!(tmux_ran(&ran), "{ran:?}");
    assert_eq!(alive(&out), ["k-0", "k-2", "k-5"]);

    // A server started anew (the same sessions' names): listed, and what it lists. (While
    // the killed server is still winding down, its panes not yet ended, the listing kept
    // holds: as a small sync's liveness from /proc does, it says what still runs.)
    assert!(s.tmux(&["kill-server"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (out, ran) = shell.run(&shims, &script);
        if alive(&out).is_empty() {
            assert!(tmux_ran(&ran), "{ran:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the killed server's sessions still read alive");
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in [0, 3] {
        start(&session(i));
    }
    for _ in 0..2 {
        let (out, ran) = shell.run(&shims, &script);
        assert!(tmux_ran(&ran), "{ran:?}");
        assert_eq!(alive(&out), ["k-0", "k-3"]);
    }
    let (out, ran) = shell.run(&shims, &script);
    assert!(!tmux_ran(&ran), "{ran:?}");
    assert_eq!(alive(&out), ["k-0", "k-3"]);
    let _ = s.tmux(&["kill-server"]);
}
