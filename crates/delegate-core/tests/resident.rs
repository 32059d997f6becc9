//! The resident brother shell (issue 21) against a real OpenSSH sshd: on a held connection,
//! delegate's scripts go through one long-lived bash loop on a kept channel. What a script
//! sees and what the caller gets back are what a plain exec gives; a lost answer is never
//! repeated; a dead shell is replaced; a brother where it cannot start gets one exec per script.

use std::sync::Arc;
use std::time::{Duration, Instant};

use delegate_core::remote::REMOTE_COMMAND;
use delegate_core::transport::pool::Pool;
use delegate_core::transport::ssh::{ExecOutput, Exit, MAX_EXEC_OUTPUT, Session, SshTarget};
use delegate_testkit::FakeHost;

mod common;
use common::target;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

const LIMIT: Duration = Duration::from_secs(30);

fn script(rt: &tokio::runtime::Runtime, pool: &Pool, t: &SshTarget, text: &str) -> ExecOutput {
    rt.block_on(pool.exec(t, REMOTE_COMMAND, text.as_bytes(), LIMIT)).unwrap().0
}

fn session(rt: &tokio::runtime::Runtime, pool: &Pool, t: &SshTarget) -> Arc<Session> {
    rt.block_on(pool.session(t)).unwrap().0
}

/// Waits (generously) until the connection's resident shell runs; panics naming why it cannot.
fn wait_resident(rt: &tokio::runtime::Runtime, s: &Session) {
    let started = Instant::now();
    loop {
        match rt.block_on(s.resident_status()) {
            Ok(true) => return,
            Ok(false) => {}
            Err(why) => panic!("no resident shell: {why}"),
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the resident shell never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pid_of(out: &ExecOutput) -> String {
    String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string()
}

/// `$$` inside a script run by the resident shell is the shell's own pid: the same for every
/// script it runs, where each plain exec has a bash of its own.
#[test]
fn scripts_on_a_held_connection_go_through_one_resident_shell_and_behave_as_an_exec() {
    let host = FakeHost::start();
    let t = target(&host);
    let (rt, pool) = (runtime(), Pool::new());
    let probe = "echo $$\nprintf 'err\\n' >&2\nread -r x && echo read-something\nleft=$(cat)\necho \"[$left][${kept:-}]\"\nkept=yes\nexit 3\n\n\n";
    let first = script(&rt, &pool, &t, probe);
    wait_resident(&rt, &session(&rt, &pool, &t));
    let mut pids = Vec::new();
    for _ in 0..3 {
        let out = script(&rt, &pool, &t, probe);
        assert_eq!(out.exit, Exit::Code(3), "{out:?}");
        assert!(out.broken.is_none() && !out.overflow, "{out:?}");
        // stdin is empty (no script eats the next request), nothing of the last script's
        // variables is left, both streams are exact.
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().nth(1), Some("[][]"), "{out:?}");
        assert_eq!(out.stderr, b"err\n");
        pids.push(pid_of(&out));
    }
    assert_eq!(first.exit, Exit::Code(3));
    assert_eq!(first.stdout.split(|&b| b == b'\n').nth(1), Some(&b"[][]"[..]), "{first:?}");
    assert!(pids.iter().all(|p| *p == pids[0]), "one shell ran them all: {pids:?}");
    assert_ne!(pid_of(&first), pids[0], "the first script had an exec of its own");
    // Binary output and a script of a few hundred KiB travel intact.
    let big = format!("# {}\nprintf 'a\\000b\\036dlg-end x 1\\036'\n", "y".repeat(400_000));
    let out = script(&rt, &pool, &t, &big);
    assert_eq!((out.stdout.as_slice(), &out.exit), (&b"a\0b\x1edlg-end x 1\x1e"[..], &Exit::Code(0)), "{out:?}");
    // Any other command still gets its own exec, as before.
    let (plain, _) = rt.block_on(pool.exec(&t, "echo $$", b"", LIMIT)).unwrap();
    assert_ne!(pid_of(&plain), pids[0]);
    rt.block_on(pool.close_all());
}

/// A shell killed on the brother between scripts is noticed before the next script is
/// sent (that one gets its own exec) and a new shell takes over. A script whose answer is
/// lost because the shell died under it is reported broken, exactly like a dropped exec
/// channel, and is not run again.
#[test]
fn a_killed_shell_is_replaced_and_a_lost_answer_is_never_repeated() {
    let host = FakeHost::start();
    let t = target(&host);
    let (rt, pool) = (runtime(), Pool::new());
    script(&rt, &pool, &t, "true");
    wait_resident(&rt, &session(&rt, &pool, &t));
    let old = pid_of(&script(&rt, &pool, &t, "echo $$"));
    // Killed from outside, between scripts.
    let (out, _) = rt.block_on(pool.exec(&t, &format!("kill -KILL {old}"), b"", LIMIT)).unwrap();
    assert_eq!(out.exit, Exit::Code(0), "{out:?}");
    let between = script(&rt, &pool, &t, "echo $$");
    assert_eq!(between.exit, Exit::Code(0), "{between:?}");
    assert_ne!(pid_of(&between), old);
    wait_resident(&rt, &session(&rt, &pool, &t));
    let new = pid_of(&script(&rt, &pool, &t, "echo $$"));
    assert!(!new.is_empty() && new != old, "a new shell: {new} vs {old}");
    assert_eq!(new, pid_of(&script(&rt, &pool, &t, "echo $$")), "and it is kept");

    // Killed while a script runs: its answer is lost.
    let log = host.remote_root().join("ran.log");
    let lost =
        script(&rt, &pool, &t, &format!("echo ran >> '{}'\necho partial\nkill -KILL $$\nsleep 5\n", log.display()));
    assert_eq!(lost.exit, Exit::Unknown, "{lost:?}");
    assert!(lost.broken.as_deref().unwrap_or("").contains("closed without an exit status"), "{lost:?}");
    assert_eq!(lost.stdout, b"partial\n", "what arrived before the loss is kept, as an exec keeps it");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ran\n", "run once, never repeated");
    let after = script(&rt, &pool, &t, "echo fine");
    assert_eq!((after.stdout.as_slice(), after.exit), (&b"fine\n"[..], Exit::Code(0)));
    rt.block_on(pool.close_all());
}

/// Scripts sent at once on one connection each get their own reply. With `MaxSessions 1`
/// the shell holds the only channel, so they all queue on it (same `$$`).
#[test]
fn concurrent_scripts_on_one_shell_keep_their_replies_apart() {
    let host = FakeHost::builder().max_sessions(1).start();
    let t = target(&host);
    let (rt, pool) = (runtime(), Arc::new(Pool::new()));
    script(&rt, &pool, &t, "true");
    wait_resident(&rt, &session(&rt, &pool, &t));
    let replies = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..8u32 {
            let (pool, t) = (pool.clone(), t.clone());
            set.spawn(async move {
                let text = format!(
                    "echo $$\nfor n in $(seq 2000); do echo out-{i}-$n; echo err-{i}-$n >&2; done\nexit {}\n",
                    10 + i
                );
                (i, pool.exec(&t, REMOTE_COMMAND, text.as_bytes(), LIMIT).await.unwrap().0)
            });
        }
        set.join_all().await
    });
    let mut pids = std::collections::BTreeSet::new();
    for (i, out) in &replies {
        assert_eq!(out.exit, Exit::Code(10 + i), "{i}: {:?}", out.broken);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut lines = stdout.lines();
        pids.insert(lines.next().unwrap().to_string());
        let want: Vec<String> = (1..=2000).map(|n| format!("out-{i}-{n}")).collect();
        assert_eq!(lines.map(String::from).collect::<Vec<_>>(), want, "request {i}'s stdout");
        let want: String = (1..=2000).map(|n| format!("err-{i}-{n}\n")).collect();
        assert_eq!(String::from_utf8_lossy(&out.stderr), want, "request {i}'s stderr");
    }
    assert_eq!(pids.len(), 1, "all through the one shell: {pids:?}");
    rt.block_on(pool.close_all());
}

/// Peak resident memory of this test process, in KiB (nextest runs each test in its own).
fn own_peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A brother flooding the shell's output past the cap: reading stops at `MAX_EXEC_OUTPUT`,
/// the shell and the flood are ended, memory stays bounded, and the next script gets a
/// working shell again.
#[test]
fn a_flood_through_the_shell_is_capped_with_bounded_memory() {
    let host = FakeHost::start();
    let t = target(&host);
    let (rt, pool) = (runtime(), Pool::new());
    script(&rt, &pool, &t, "true");
    wait_resident(&rt, &session(&rt, &pool, &t));
    let pidfile = host.remote_root().join("flood.pid");
    let out = script(
        &rt,
        &pool,
        &t,
        &format!("echo $BASHPID > '{}'\nexec head -c 1073741824 /dev/zero\n", pidfile.display()),
    );
    assert!(out.overflow, "{:?}", out.broken);
    assert_eq!(out.exit, Exit::Unknown);
    assert!(out.broken.as_deref().unwrap().contains(&format!("output over {MAX_EXEC_OUTPUT} bytes")));
    assert!(out.stdout.len() <= MAX_EXEC_OUTPUT);
    let peak = own_peak_kib();
    assert!(peak < 256 * 1024, "peak {peak} KiB under a 1 GiB flood");
    // The flood does not run on: its shell was killed and its channel closed.
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let started = Instant::now();
    while std::path::Path::new(&format!("/proc/{}", pid.trim())).exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "the flood {pid} still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = script(&rt, &pool, &t, "echo fine");
    assert_eq!((after.stdout.as_slice(), after.exit), (&b"fine\n"[..], Exit::Code(0)));
    rt.block_on(pool.close_all());
}

/// A brother whose sshd forces a command that ignores ours (here one that only ever runs a
/// script from stdin, as delegate's own remote command does): the shell never says it is
/// ready, so the connection remembers that and every script gets its own exec, working.
#[test]
fn a_brother_where_the_shell_cannot_start_gets_one_exec_per_script() {
    let host = FakeHost::builder().extra_config("ForceCommand bash -c 'eval \"$(</dev/stdin)\"'").start();
    let mut t = target(&host);
    t.timeouts.handshake = Duration::from_secs(2);
    let (rt, pool) = (runtime(), Pool::new());
    let first = pid_of(&script(&rt, &pool, &t, "echo $$"));
    let s = session(&rt, &pool, &t);
    let started = Instant::now();
    let why = loop {
        match rt.block_on(s.resident_status()) {
            Err(why) => break why,
            Ok(up) => assert!(!up, "a shell came up under a forced command"),
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never gave up on the shell");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(why.contains("no ready line"), "{why}");
    let mut pids = vec![first];
    for _ in 0..3 {
        let out = script(&rt, &pool, &t, "echo $$; exit 4");
        assert_eq!(out.exit, Exit::Code(4), "{out:?}");
        pids.push(pid_of(&out));
    }
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 4, "one exec (one bash) per script: {pids:?}");
    rt.block_on(pool.close_all());
}

/// delegate's own scripts (variable lines, then one of its bodies) send their body once per
/// shell: the shell defines its functions once, and later requests carry only their
/// variable lines. The answers are the same as a plain exec's, and a script that is not ASCII still
/// arrives whole.
#[test]
fn the_shell_keeps_delegates_script_bodies_and_runs_later_requests_from_their_variables() {
    let host = FakeHost::start();
    let t = target(&host);
    let (rt, pool) = (runtime(), Pool::new());
    let _ = script(&rt, &pool, &t, "true\n");
    wait_resident(&rt, &session(&rt, &pool, &t));
    let cancel = delegate_core::remote::protocol::render_cancel("~/.delegate", "m-1", "dlg-m-1").unwrap();
    let body_id = &delegate_core::remote::allowlist::split(&cancel).unwrap().1.id;
    let cancel = String::from_utf8(cancel).unwrap();
    let (_, plain) = rt.block_on(async {
        let s = Session::connect(&t).await.unwrap();
        let out = s.exec(REMOTE_COMMAND, cancel.as_bytes(), LIMIT).await.unwrap();
        s.close().await;
        ((), out)
    });
    let kept = |rt: &tokio::runtime::Runtime| {
        let out = script(rt, &pool, &t, "declare -F\n");
        let defined = String::from_utf8_lossy(&out.stdout).into_owned();
        // Its functions are defined in the shell itself, once (not again by each request).
        [format!("__dlg_body_{body_id}"), format!("__dlg_main_{body_id}"), "foreign_root".into()]
            .iter()
            .all(|f| defined.lines().any(|l| l == format!("declare -f {f}")))
    };
    assert!(!kept(&rt), "no body is kept before one is sent");
    for round in 0..3 {
        let out = script(&rt, &pool, &t, &cancel);
        assert_eq!((&out.exit, &out.stdout, &out.stderr), (&plain.exit, &plain.stdout, &plain.stderr), "round {round}");
        assert!(out.broken.is_none(), "{out:?}");
        assert!(kept(&rt), "the body is kept after round {round}");
    }
    let out = script(&rt, &pool, &t, "printf '%s\\n' 'h\u{e9}llo \u{20ac}'\n");
    assert_eq!((out.stdout.as_slice(), &out.exit), ("h\u{e9}llo \u{20ac}\n".as_bytes(), &Exit::Code(0)), "{out:?}");
    rt.block_on(pool.close_all());
}
