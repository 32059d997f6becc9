//! How the runner ends an agent: wall clock, delegate's turn limit, cancel, the pane going
//! away, and agents that resist (ignore SIGTERM, leave children behind). Real tmux, real
//! scripts, one-second grace periods.

use super::tests::{Scratch, fake_plan, group_alive, pid_alive, self_test_plan, vars, wait_secs};
use crate::remote::protocol::{CancelState, parse_cancel, render_cancel};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The exit record's words: code, time, reason.
fn exit_of(dir: &Path, secs: u64) -> (i32, String, Option<String>) {
    let text = wait_secs(&dir.join("exit"), secs);
    let w: Vec<&str> = text.split_whitespace().collect();
    assert!(w.len() == 2 || w.len() == 3, "{text:?}");
    (w[0].parse().unwrap(), w[1].to_string(), w.get(2).map(|r| r.to_string()))
}

fn pgid_of(dir: &Path) -> i32 {
    wait_secs(&dir.join("agent.pgid"), 5).trim().parse().unwrap()
}

fn state_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("state")).unwrap()
}

#[test]
fn the_wall_clock_stops_the_agent_and_its_group() {
    let s = Scratch::new("timeout");
    let plan = self_test_plan(50);
    let mut v = vars(&s, "k-1", "dlg-k-1", &plan, b"dawdle\n@self-test sleep 30\n");
    v.timeout_secs = 1;
    let started = Instant::now();
    let dir = s.launch(&v);
    let pgid = pgid_of(&dir);
    let (code, _, reason) = exit_of(&dir, 5);
    assert_eq!((code, reason.as_deref()), (143, Some("timed_out")));
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert!(!group_alive(pgid), "the agent's group outlived the runner");
    let state = state_of(&dir);
    assert!(state.contains(" stopping timed_out\n") && state.ends_with(" exited 143 timed_out\n"), "{state}");
}

/// Context switches of process `pid` so far (voluntary and not): one per wake-up at least.
fn switches_of(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn an_idle_runner_sleeps_until_something_happens() {
    let s = Scratch::new("idle");
    // A wall clock far away: a timer, but nothing due during the test.
    let plan = fake_plan("sleep 60\n");
    let mut v = vars(&s, "k-1", "dlg-k-1", &plan, b"x");
    v.timeout_secs = 3600;
    let dir = s.launch(&v);
    pgid_of(&dir);
    let state = wait_secs(&dir.join("state"), 5);
    let runner: i32 = state.split_whitespace().find_map(|w| w.strip_prefix("pid=")).unwrap().parse().unwrap();
    // Settled: the agent started and its `started` line was read.
    let end = Instant::now() + Duration::from_secs(5);
    while !state_of(&dir).contains(" running\n") {
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = switches_of(runner);
    std::thread::sleep(Duration::from_millis(2500));
    let woke = switches_of(runner) - before;
    // A half-second ticker would have woken it five times.
    assert!(woke <= 1, "the idle runner woke {woke} times in 2.5 s");
    // Asleep, not deaf: a cancel still stops the agent at once.
    let (state, _) = cancel(&s, "k-1", "dlg-k-1");
    assert_eq!(state, Some(CancelState::Signalled));
    let (_, _, reason) = exit_of(&dir, 5);
    assert_eq!(reason.as_deref(), Some("cancelled"));
}

#[test]
fn an_agent_ignoring_sigterm_is_killed_after_the_grace() {
    let s = Scratch::new("stubborn");
    let plan = fake_plan("trap '' TERM\nsleep 60\n");
    let mut v = vars(&s, "k-1", "dlg-k-1", &plan, b"x");
    v.timeout_secs = 1;
    let dir = s.launch(&v);
    let pgid = pgid_of(&dir);
    let (code, _, reason) = exit_of(&dir, 5);
    assert_eq!((code, reason.as_deref()), (137, Some("timed_out")));
    assert!(!group_alive(pgid));
    assert!(state_of(&dir).contains(" killing timed_out\n"));
}

#[test]
fn children_the_agent_leaves_behind_end_with_it() {
    let s = Scratch::new("orphans");
    // The child ignores SIGTERM too: only the runner's SIGKILL ends it.
    let plan = fake_plan(
        "( trap '' TERM; exec sleep 60 ) &\nprintf '%s\\n' \"$!\" >\"$DELEGATE_TASK_DIR/child.pid\"\necho '{\"type\":\"result\"}'\nexit 0\n",
    );
    let v = vars(&s, "k-1", "dlg-k-1", &plan, b"x");
    let dir = s.launch(&v);
    let (code, _, reason) = exit_of(&dir, 5);
    assert_eq!((code, reason), (0, None));
    let child: i32 = std::fs::read_to_string(dir.join("child.pid")).unwrap().trim().parse().unwrap();
    assert!(!pid_alive(child), "the agent's background child survived");
    assert!(!group_alive(pgid_of(&dir)));
    assert!(std::fs::read_to_string(dir.join("stream.jsonl")).unwrap().contains("result"));
}

#[test]
fn delegate_enforces_a_codex_style_turn_limit() {
    let s = Scratch::new("turns");
    let mut plan = fake_plan(
        "printf '{\"type\":\"turn.started\"}\\n'\nfor i in 1 2 3 4 5; do\n  printf '{\"type\":\"item.started\",\"item\":{\"id\":\"item_%s\",\"type\":\"command_execution\"}}\\n{\"type\":\"item.completed\",\"item\":{\"id\":\"item_%s\",\"type\":\"command_execution\"}}\\n' \"$i\" \"$i\"\n  sleep 0.4\ndone\n",
    );
    plan.turn_limit = "delegate".into();
    plan.turn_marker = Some(crate::agents::CODEX_TURN_MARKER.into());
    let mut v = vars(&s, "k-1", "dlg-k-1", &plan, b"x");
    v.turn_limit = 2;
    let dir = s.launch(&v);
    let (code, _, reason) = exit_of(&dir, 5);
    assert_eq!((code, reason.as_deref()), (143, Some("turn_limit")));
    // The stream is kept, and stops at the third step (a Codex turn is the whole task; its
    // tool calls are the steps).
    let stream = std::fs::read_to_string(dir.join("stream.jsonl")).unwrap();
    assert_eq!(stream.matches("item.started").count(), 3, "{stream}");
    let launch = std::fs::read_to_string(dir.join("launch.json")).unwrap();
    assert!(launch.contains("\"delegate_turn_limit\":2"), "{launch}");
}

#[test]
fn without_a_marker_there_is_no_delegate_turn_limit() {
    let s = Scratch::new("nomarker");
    let plan = fake_plan("for i in 1 2 3 4; do echo '{\"type\":\"turn.started\"}'; done\n");
    let mut v = vars(&s, "k-1", "dlg-k-1", &plan, b"x");
    v.turn_limit = 1;
    let dir = s.launch(&v);
    let (code, _, reason) = exit_of(&dir, 5);
    assert_eq!((code, reason), (0, None));
    assert_eq!(std::fs::read_to_string(dir.join("stream.jsonl")).unwrap().lines().count(), 4);
}

fn cancel(s: &Scratch, key: &str, session: &str) -> (Option<CancelState>, String) {
    let root = s.root().to_string_lossy().into_owned();
    let out = s.run(&render_cancel(&root, key, session).unwrap());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (parse_cancel(&out.stdout), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn cancel_stops_a_running_task_and_the_record_says_cancelled() {
    let s = Scratch::new("cancel");
    let plan = self_test_plan(50);
    let dir = s.launch(&vars(&s, "k-1", "dlg-k-1", &plan, b"work\n@self-test sleep 30\n"));
    let pgid = pgid_of(&dir);
    let started = Instant::now();
    let (state, out) = cancel(&s, "k-1", "dlg-k-1");
    assert_eq!(state, Some(CancelState::Signalled), "{out}");
    let (code, _, reason) = exit_of(&dir, 5);
    assert_eq!((code, reason.as_deref()), (143, Some("cancelled")));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(!group_alive(pgid));
    assert_eq!(cancel(&s, "k-1", "dlg-k-1").0, Some(CancelState::AlreadyFinished));
}

#[test]
fn cancel_reaches_an_agent_that_ignores_sigterm_through_the_runner() {
    let s = Scratch::new("cancel-stubborn");
    // It says when its trap is in place: a SIGTERM before that would simply end it.
    let plan = fake_plan("trap '' TERM\n: >\"$DELEGATE_TASK_DIR/ready\"\nsleep 60\n");
    let dir = s.launch(&vars(&s, "k-1", "dlg-k-1", &plan, b"x"));
    let pgid = pgid_of(&dir);
    wait_secs(&dir.join("ready"), 5);
    assert_eq!(cancel(&s, "k-1", "dlg-k-1").0, Some(CancelState::Signalled));
    let (code, _, reason) = exit_of(&dir, 5);
    assert_eq!((code, reason.as_deref()), (137, Some("cancelled")));
    assert!(!group_alive(pgid));
}

/// The runner writes agent.pgid in place, one line in one write (no `mv` process on every
/// launch): a cancel reading it mid-write finds a line without its newline and takes it for
/// no agent yet (the runner, which writes the file before it looks for the mark, stops the
/// agent then); only a whole line is a group to signal.
#[test]
fn a_cancel_reading_agent_pgid_mid_write_signals_nothing() {
    let s = Scratch::new("cancel-partial-pgid");
    let dir = s.task_dir("k-1");
    std::fs::create_dir_all(&dir).unwrap();
    let mut group = std::process::Command::new("setsid").args(["sleep", "30"]).spawn().unwrap();
    let pgid = group.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !group_alive(pgid) {
        assert!(Instant::now() < deadline, "setsid sleep did not start its group");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::write(dir.join("agent.pgid"), pgid.to_string()).unwrap();
    let (state, out) = cancel(&s, "k-1", "dlg-k-1");
    assert_eq!(state, Some(CancelState::NotStarted), "{out}");
    assert!(group_alive(pgid), "a group read from half a line was signalled");
    std::fs::write(dir.join("agent.pgid"), format!("{pgid}\n")).unwrap();
    // Reaped as soon as it ends, so the cancel sees the group gone.
    let reaper = std::thread::spawn(move || group.wait());
    let (state, out) = cancel(&s, "k-1", "dlg-k-1");
    assert_eq!(state, Some(CancelState::Signalled), "{out}");
    reaper.join().unwrap().unwrap();
    assert!(!group_alive(pgid));
}

#[test]
fn a_cancel_before_the_agent_starts_stops_it_when_it_does() {
    let s = Scratch::new("cancel-early");
    std::fs::create_dir_all(s.task_dir("k-1")).unwrap();
    assert_eq!(cancel(&s, "k-1", "dlg-k-1").0, Some(CancelState::NotStarted));
    assert!(s.task_dir("k-1").join("cancel").exists());
    // A runner that finds the request waiting when it starts its agent stops it at once.
    // (The launch script refuses an existing directory, so the request travels as one of
    // the task's files, which land before the runner starts.)
    let mut plan = fake_plan("sleep 30\n");
    plan.files.push(("cancel".into(), "cancel requested\n".into()));
    let dir = s.launch(&vars(&s, "k-2", "dlg-k-2", &plan, b"x"));
    let (code, _, reason) = exit_of(&dir, 5);
    assert_eq!((code, reason.as_deref()), (143, Some("cancelled")));
    assert!(state_of(&dir).contains(" stopping cancelled\n"));
}

#[test]
fn killing_the_tmux_session_still_ends_the_agent_and_records_the_exit() {
    let s = Scratch::new("hangup");
    let plan = self_test_plan(50);
    let dir = s.launch(&vars(&s, "k-1", "dlg-k-1", &plan, b"work\n@self-test sleep 30\n"));
    let pgid = pgid_of(&dir);
    assert!(s.tmux(&["kill-session", "-t", "=dlg-k-1"]).status.success());
    let (code, _, reason) = exit_of(&dir, 5);
    // Recorded as a hangup, which the lead reads as `lost`.
    assert_eq!((code, reason.as_deref()), (143, Some("hangup")));
    assert!(!group_alive(pgid));
    assert!(state_of(&dir).contains(" stopping hangup\n"));

    // With a cancel request on file, the same hangup records `cancelled`. (Written by hand,
    // the request comes without the cancel script's SIGTERM: whichever of the runner's tick
    // and the hangup comes first decides between SIGTERM now and SIGKILL after the grace.)
    let dir = s.launch(&vars(&s, "k-2", "dlg-k-2", &plan, b"work\n@self-test sleep 30\n"));
    let pgid = pgid_of(&dir);
    std::fs::write(dir.join("cancel"), "cancel requested\n").unwrap();
    // (The runner may already be done by the time tmux is asked.)
    s.tmux(&["kill-session", "-t", "=dlg-k-2"]);
    let (code, _, reason) = exit_of(&dir, 5);
    assert!(code == 143 || code == 137, "{code}");
    assert_eq!(reason.as_deref(), Some("cancelled"));
    assert!(!group_alive(pgid));
}

/// Runs the launch script for `key`, returning its exit code and stderr (not asserting success).
fn try_launch(s: &Scratch, v: &crate::remote::LaunchVars) -> (Option<i32>, String) {
    let out = s.run(&super::tests::render_sent(v).unwrap());
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn sessions(s: &Scratch) -> String {
    String::from_utf8_lossy(&s.tmux(&["list-sessions", "-F", "#{session_name}"]).stdout).into_owned()
}

#[test]
fn a_cancel_that_reaches_the_brother_before_the_launch_leaves_a_mark_no_launch_gets_past() {
    let s = Scratch::new("cancel-first");
    // Nothing there yet (the launch is still on its way): the cancel leaves its mark anyway.
    assert_eq!(cancel(&s, "k-1", "dlg-k-1").0, Some(CancelState::NoTask));
    assert!(s.root().join("tasks/k-1.cancelled").exists());
    let plan = fake_plan(": >\"$DELEGATE_TASK_DIR/../agent-ran\"\nsleep 30\n");
    // The late launch, and the same launch sent again, start nothing and create nothing.
    for _ in 0..2 {
        let (code, err) = try_launch(&s, &vars(&s, "k-1", "dlg-k-1", &plan, b"x"));
        assert_eq!(code, Some(crate::remote::code::CANCELLED), "{err}");
        assert!(err.contains("cancelled while it was launching"), "{err}");
        assert!(!s.task_dir("k-1").exists(), "no task directory");
    }
    assert!(!sessions(&s).contains("dlg-k-1"), "{}", sessions(&s));
    assert!(!s.root().join("tasks/agent-ran").exists());
    // Another task of the same root is not affected.
    s.launch(&vars(&s, "k-2", "dlg-k-2", &plan, b"x"));
}

/// A `tmux` first on PATH that holds the launch at `tmux new-session` (after the task
/// directory exists, before the session starts): the returned PATH, and the files `reached`
/// (written when held) and `go` (the test writes it to let tmux go on).
fn held_at_new_session(s: &Scratch) -> (std::ffi::OsString, std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let bin = s.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let real =
        ["/usr/bin/tmux", "/bin/tmux", "/usr/local/bin/tmux"].into_iter().find(|p| Path::new(p).exists()).unwrap();
    let (reached, go) = (s.dir.join("reached"), s.dir.join("go"));
    let wrapper = format!(
        "#!/bin/bash\nif [[ \" $* \" == *\" new-session \"* ]]; then\n  : >'{}'\n  for _ in $(seq 300); do [ -e '{}' ] && break; sleep 0.1; done\nfi\nexec {real} \"$@\"\n",
        reached.display(),
        go.display()
    );
    std::fs::write(bin.join("tmux"), wrapper).unwrap();
    std::fs::set_permissions(bin.join("tmux"), std::fs::Permissions::from_mode(0o755)).unwrap();
    (std::ffi::OsString::from(format!("{}:{}", bin.display(), std::env::var("PATH").unwrap())), reached, go)
}

/// Waits until the session `name`'s tmux server ends it (its runner ended).
fn session_ends(s: &Scratch, name: &str) {
    let end = Instant::now() + Duration::from_secs(5);
    while sessions(s).contains(name) {
        assert!(Instant::now() < end, "the session outlived its runner");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The mark is written after the launch script looked for it (the task directory exists)
/// and before the runner starts: the runner refuses, and the launch reports the cancel.
#[test]
fn the_runner_refuses_a_mark_written_after_the_launch_looked() {
    let s = Scratch::new("cancel-runner");
    let (path, reached, go) = held_at_new_session(&s);
    let plan = fake_plan(": >\"$DELEGATE_TASK_DIR/agent-ran\"\nsleep 30\n");
    let v = vars(&s, "k-1", "dlg-k-1", &plan, b"x");
    let dir = s.task_dir("k-1");
    let launch = std::thread::scope(|scope| {
        let launching = scope.spawn(|| {
            let out = s.run_with(&super::tests::render_sent(&v).unwrap(), &[("PATH", path.as_os_str())]);
            (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
        });
        wait_secs(&reached, 10);
        std::fs::write(s.root().join("tasks/k-1.cancelled"), "cancelled\n").unwrap();
        std::fs::write(&go, "").unwrap();
        launching.join().unwrap()
    });
    assert_eq!(launch.0, Some(crate::remote::code::CANCELLED), "{}", launch.1);
    assert!(launch.1.contains("started no agent"), "{}", launch.1);
    assert!(state_of(&dir).starts_with("refused pid="), "{}", state_of(&dir));
    let (code, _, reason) = exit_of(&dir, 5);
    assert_eq!((code, reason.as_deref()), (0, Some("cancelled")));
    assert!(!dir.join("agent-ran").exists() && !dir.join("agent.pgid").exists(), "the agent started");
    session_ends(&s, "dlg-k-1");
}

/// Launches task k-1 (an agent that leaves `agent-ran` and sleeps) with its runner held at
/// writing its `started` line (`state` is a FIFO until `meanwhile` returns: the runner
/// waits for a reader), having looked for the cancel mark once. `meanwhile` gets the
/// runner's pid. Returns what the runner wrote to `state` until its exit record.
fn with_the_runner_held_at_started(s: &Scratch, meanwhile: impl FnOnce(&str)) -> String {
    let (path, reached, go) = held_at_new_session(s);
    let plan = fake_plan(": >\"$DELEGATE_TASK_DIR/agent-ran\"\nsleep 30\n");
    let v = vars(s, "k-1", "dlg-k-1", &plan, b"x");
    let dir = s.task_dir("k-1");
    std::thread::scope(|scope| {
        let launching =
            scope.spawn(|| s.run_with(&super::tests::render_sent(&v).unwrap(), &[("PATH", path.as_os_str())]));
        wait_secs(&reached, 10);
        let fifo = std::ffi::CString::new(dir.join("state").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::fs::write(&go, "").unwrap();
        // The runner (the pane's process) waits to open `state`.
        let end = Instant::now() + Duration::from_secs(10);
        let runner = loop {
            let out = s.tmux(&["list-panes", "-t", "=dlg-k-1:", "-F", "#{pane_pid}"]);
            let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !pid.is_empty()
                && std::fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|w| w.contains("wait_for_partner"))
            {
                break pid;
            }
            assert!(Instant::now() < end, "the runner never waited to write its started line");
            std::thread::sleep(Duration::from_millis(20));
        };
        meanwhile(&runner);
        // Read what it writes to `state` until its exit record. Opened for reading and writing,
        // so its writes never wait and never meet a closed pipe.
        let mut fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(dir.join("state"))
            .unwrap();
        let mut lines = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            match std::io::Read::read(&mut fifo, &mut chunk) {
                Ok(n) => lines.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if dir.join("exit").exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
            assert!(Instant::now() < end + Duration::from_secs(20), "runner {runner} wrote no exit record");
        }
        // (The launch never finds `state` a plain file: it gives up on the runner's word.)
        let _ = launching.join().unwrap();
        String::from_utf8(lines).unwrap()
    })
}

/// The runner takes no lock: a cancel that wrote its mark after the runner's first look and
/// read `state` before the `started` line (so it left the start to the runner) is seen by
/// the runner's second look, after that line.
#[test]
fn the_runner_looks_for_the_mark_again_after_its_started_line() {
    let s = Scratch::new("cancel-second-look");
    let lines = with_the_runner_held_at_started(&s, |_| {
        std::fs::write(s.root().join("tasks/k-1.cancelled"), "cancelled\n").unwrap();
    });
    let dir = s.task_dir("k-1");
    assert!(lines.starts_with("started pid="), "{lines}");
    let (code, _, reason) = exit_of(&dir, 5);
    assert_eq!((code, reason.as_deref()), (0, Some("cancelled")), "{lines}");
    assert!(!dir.join("agent-ran").exists() && !dir.join("agent.pgid").exists(), "the agent started");
    session_ends(&s, "dlg-k-1");
}

/// A signal that reaches the runner before its event pipe exists (it is made after the
/// `started` line) is kept and acted on once the pipe is there: here SIGTERM (a hangup),
/// sent while the runner waits to write `started`.
#[test]
fn a_signal_before_the_runners_event_pipe_exists_is_acted_on() {
    let s = Scratch::new("early-signal");
    let lines = with_the_runner_held_at_started(&s, |runner| {
        assert!(std::process::Command::new("kill").args(["-TERM", runner]).status().unwrap().success());
    });
    let dir = s.task_dir("k-1");
    assert!(lines.starts_with("started pid="), "{lines}");
    assert!(lines.contains(" stopping hangup\n"), "{lines}");
    let (_, _, reason) = exit_of(&dir, 5);
    assert_eq!(reason.as_deref(), Some("hangup"), "{lines}");
}

#[test]
fn a_cancel_after_the_runner_recorded_its_start_stops_the_agent_it_starts() {
    let s = Scratch::new("cancel-started");
    let plan = fake_plan(": >\"$DELEGATE_TASK_DIR/agent-ran\"\nsleep 30\n");
    let dir = s.launch(&vars(&s, "k-1", "dlg-k-1", &plan, b"x"));
    assert!(state_of(&dir).starts_with("started pid="));
    let (state, out) = cancel(&s, "k-1", "dlg-k-1");
    assert_eq!(state, Some(CancelState::Signalled), "{out}");
    let (code, _, reason) = exit_of(&dir, 5);
    assert_eq!(reason.as_deref(), Some("cancelled"), "exit {code}");
    assert!(s.root().join("tasks/k-1.cancelled").exists());
    assert!(!group_alive(pgid_of(&dir)));
}
