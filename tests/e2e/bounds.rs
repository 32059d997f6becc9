//! A busy or hostile brother cannot blow the lead's or the warm daemon's memory, and a busy
//! one still syncs through the warm path: replies are budgeted (per file, per reply), execs
//! capped, and a line too long to ever fit is skipped with an event.

use std::io::Write;
use std::path::Path;

use delegate_testkit::FakeHost;
use serde_json::Value;

use crate::support::{Env, launch, remote_dir};

/// Peak resident memory of a process, in KiB.
fn vm_hwm(pid: i64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Peak resident memory of the largest child this test waited for (the CLI runs), in KiB.
fn children_max_rss() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    ru.ru_maxrss as u64
}

/// Appends `n` bytes of 1000-byte lines that are no event anyone reads.
fn fill(path: &Path, n: usize) {
    let line = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(1000 - 11));
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(path).unwrap();
    let block = line.repeat(1024);
    for _ in 0..n / block.len() {
        f.write_all(block.as_bytes()).unwrap();
    }
}

fn events(env: &Env, id: i64) -> Vec<(String, String)> {
    let show = env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json();
    show["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {show}"))
        .iter()
        .map(|e| (e["kind"].as_str().unwrap_or("").to_string(), e["summary"].as_str().unwrap_or("").to_string()))
        .collect()
}

#[test]
fn a_busy_host_syncs_through_the_warm_daemon_with_bounded_memory_and_a_5_mib_line_is_skipped() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let ids: Vec<i64> =
        (0..4).map(|i| launch(&env, &["oppy", &format!("t{i}\n@self-test sleep 60"), "--json"])).collect();
    // Over 100 MiB waiting: 5 files of ~5 MiB in each of 4 tasks, beyond the old 64 MiB
    // limit of one warm answer. Task 0's events also hold a 5 MiB line, then a real event.
    for id in &ids {
        let dir = remote_dir(&env, *id);
        for f in ["stream.jsonl", "events.jsonl", "outbox.jsonl", "stderr.log", "delivered.jsonl"] {
            fill(&dir.join(f), 5 << 20);
        }
    }
    let first = remote_dir(&env, ids[0]).join("events.jsonl");
    let mut f = std::fs::OpenOptions::new().append(true).open(&first).unwrap();
    f.write_all(&vec![b'y'; 5 << 20]).unwrap();
    f.write_all(b"\n{\"event\":\"marker\",\"summary\":\"after the long line\"}\n").unwrap();
    drop(f);

    let mut seen = Vec::new();
    for _ in 0..6 {
        let out = env.run(&["sync", "--json"]).ok();
        assert!(!out.stdout().contains("\"error\":\"") || out.stdout().contains("\"error\":null"), "{}", out.stdout());
        seen = events(&env, ids[0]);
        if seen.iter().any(|(k, _)| k == "marker") {
            break;
        }
    }
    assert!(seen.iter().any(|(k, s)| k == "skipped" && s.contains("events.jsonl")), "{seen:?}");
    assert!(seen.iter().any(|(k, s)| k == "marker" && s.contains("after the long line")), "{seen:?}");

    // It went through the daemon, whose peak memory stays near one budgeted reply.
    let status: Value = env.run(&["warm", "status", "--json"]).ok().json();
    let pid = status["pid"].as_i64().unwrap_or_else(|| panic!("no daemon: {status}"));
    let daemon = vm_hwm(pid);
    assert!(daemon < 256 * 1024, "daemon peak {daemon} KiB");
    let cli = children_max_rss();
    assert!(cli < 384 * 1024, "CLI peak {cli} KiB");
    assert_eq!(env.run(&["status", "--json"]).code(), 0);
}

#[test]
fn a_gigantic_task_file_does_not_blow_memory_and_its_offset_moves() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = launch(&env, &["oppy", "big\n@self-test sleep 60", "--json"]);
    let dir = remote_dir(&env, id);
    // 256 MiB of NULs: no newline anywhere (a sparse file, instant to make).
    for f in ["stream.jsonl", "events.jsonl"] {
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(f))
            .or_else(|_| std::fs::File::create(dir.join(f)))
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
    }
    for _ in 0..2 {
        env.run(&["sync"]).ok();
    }
    let show = env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json();
    assert_eq!(show["status"], "running", "{show}");
    assert!(events(&env, id).iter().any(|(k, _)| k == "skipped"));
    let status: Value = env.run(&["warm", "status", "--json"]).ok().json();
    let daemon = vm_hwm(status["pid"].as_i64().unwrap());
    assert!(daemon < 256 * 1024, "daemon peak {daemon} KiB");
    assert!(children_max_rss() < 384 * 1024, "CLI peak {} KiB", children_max_rss());
}

/// An agent whose stream is more than two read chunks (8 MiB each), with a 1.5 MiB line in
/// the middle: `logs` shows all of it, in order, rendered and raw, and the long line whole
/// with `--raw`. (It used to stop silently after the first 8 MiB.)
#[test]
fn logs_show_a_stream_of_several_read_chunks_whole() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    env.add_brother("oppy", "h", &host, "flood", "full");
    env.config_append("[agents.flood]\ncommand = [\"flood\"]\n");
    // 20000 lines of ~1 KB (about 19 MiB), line 10000 followed by one of 1.5 MiB.
    crate::support::install_agent(
        &host,
        "flood",
        r#"#!/bin/bash
cat >/dev/null
lines() {
  awk -v from="$1" -v to="$2" 'BEGIN {
    pad = sprintf("%0900d", 0)
    for (i = from; i <= to; i++)
      printf "{\"type\":\"item.completed\",\"item\":{\"type\":\"agent_message\",\"text\":\"line %d %s\"}}\n", i, pad
  }'
}
lines 1 10000
printf '{"long":"'; head -c 1572864 /dev/zero | tr '\0' 7; printf '"}\n'
lines 10001 20000
"#,
    );
    let id = launch(&env, &["oppy", "flood the stream", "--json"]);
    let done = crate::support::wait_done(&env, id);
    assert_eq!(done["status"], "completed", "{done}");
    let size = std::fs::metadata(remote_dir(&env, id).join("stream.jsonl")).unwrap().len();
    assert!(size > 2 * 8 * 1024 * 1024, "stream of {size} bytes");

    let n = id.to_string();
    let raw = env.run(&["logs", &n, "--raw"]).ok().stdout();
    let raw_lines: Vec<&str> = raw.lines().collect();
    assert_eq!(raw_lines.len(), 20001, "raw logs lost lines");
    assert_eq!(raw.len() as u64, size, "raw logs are the stream itself");
    assert!(raw_lines[0].contains("\"line 1 0"), "{}", &raw_lines[0][..100]);
    assert_eq!(raw_lines[10000].len(), 1572864 + 11, "the long line whole");
    assert!(raw_lines[20000].contains("\"line 20000 0"), "{}", &raw_lines[20000][..100]);

    let shown = env.run(&["logs", &n]).ok().stdout();
    let numbers: Vec<u32> = shown
        .lines()
        .filter_map(|l| l.strip_prefix("line "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(numbers, (1..=20000).collect::<Vec<_>>(), "rendered logs lost or reordered lines");
    assert!(shown.contains("[a line of more than 1048576 bytes, not rendered: --raw shows it]"));
}

/// A hostile brother whose every command (here: a `bash` first on its PATH) answers with a
/// 1 GiB flood: `sync` and `logs`, direct and through the warm daemon, stop reading at
/// `MAX_EXEC_OUTPUT` (48 MiB), end the command on the brother, and say "output over N
/// bytes"; the lead's and the daemon's peak memory stay far below the flood. Once the brother
/// behaves, the same host syncs again.
#[test]
fn an_exec_flooding_past_the_output_cap_is_stopped_with_bounded_memory() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    // Enough turns that it is still running at the end, however slow the machine.
    let id = launch(&env, &["oppy", "stay\n@self-test sleep 300", "--max-turns", "1000", "--json"]);
    let flag = host.dir().join("flood-now");
    // Where the brother user may write.
    let pidfile = host.workdir().join("flood.pid");
    let real_bash = ["/usr/bin/bash", "/bin/bash"].into_iter().find(|p| Path::new(p).exists()).unwrap();
    crate::support::install_agent(
        &host,
        "bash",
        &format!(
            "#!{real_bash}\nif [ -e '{}' ]; then echo $$ >'{}'; exec head -c 1073741824 /dev/zero; fi\nexec {real_bash} \"$@\"\n",
            flag.display(),
            pidfile.display()
        ),
    );
    std::fs::write(&flag, "").unwrap();
    let limit = delegate_core::transport::ssh::MAX_EXEC_OUTPUT;
    let said = format!("output over {limit} bytes");

    let flood_ended = |what: &str| {
        let pid = std::fs::read_to_string(&pidfile).unwrap_or_else(|_| panic!("{what}: the flood never ran"));
        let _ = std::fs::remove_file(&pidfile);
        let started = std::time::Instant::now();
        while Path::new(&format!("/proc/{}", pid.trim())).exists() {
            assert!(started.elapsed() < std::time::Duration::from_secs(30), "{what}: the flood {pid} still runs");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let n = id.to_string();
    // The daemon from the launch keeps a resident shell started before the shim: scripts sent
    // through it start no bash (its own flood is `resident::a_flood_through_the_shell_*`). A
    // new daemon meets the hostile bash for its first exec and for its shell.
    env.run(&["warm", "stop"]).ok();
    for (what, args) in [
        ("direct sync", vec!["--no-warm", "sync"]),
        ("direct logs", vec!["--no-warm", "logs", &n]),
        ("warm sync", vec!["sync"]),
        ("warm logs", vec!["logs", &n]),
    ] {
        let run = env.run(&args);
        assert_ne!(run.code(), 0, "{what}:\n{run}");
        assert!(run.stdout().contains(&said) || run.stderr().contains(&said), "{what}:\n{run}");
        flood_ended(what);
    }
    // The CLI read at most 48 MiB of the 1 GiB (a few copies of it at most).
    let cli = children_max_rss();
    assert!(cli < 256 * 1024, "CLI peak {cli} KiB");
    let status: Value = env.run(&["warm", "status", "--json"]).ok().json();
    let daemon = vm_hwm(status["pid"].as_i64().unwrap_or_else(|| panic!("no daemon: {status}")));
    assert!(daemon < 256 * 1024, "daemon peak {daemon} KiB");
    eprintln!("peaks under a 1 GiB flood: CLI {cli} KiB, daemon {daemon} KiB");

    std::fs::remove_file(&flag).unwrap();
    env.run(&["sync"]).ok();
    let show = env.run(&["show", &n, "--json", "--no-sync"]).ok().json();
    assert_eq!(show["status"], "running", "{show}");
}
