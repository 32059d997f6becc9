//! Issue 21: scripts on the warm daemon's connection go through its resident brother shell.
//! A sync whose reply is cut mid-way (the link goes, and the shell with it) is reported as a
//! failed sync and stores nothing; the next sync reads from the stored offsets, so nothing
//! is read twice and nothing is missed.

use std::io::Write;

use delegate_testkit::{FakeHost, Fault, FaultProxy};

use crate::support::{Env, blank_runner_start_time, execs, install_agent, launch, remote_dir};

fn reports(env: &Env, id: i64) -> Vec<i64> {
    let db = rusqlite::Connection::open(env.data.join("mailbox.db")).unwrap();
    let mut q = db.prepare("SELECT summary FROM events WHERE task_id = ?1 AND summary LIKE '#%' ORDER BY id").unwrap();
    q.query_map([id], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|b| {
            let b = b.unwrap();
            b.split_whitespace().next().and_then(|n| n.strip_prefix('#')).unwrap().parse().unwrap()
        })
        .collect()
}

/// Appends events `from..to`, each summarised `#<n>` and padding, to the task's events on
/// the brother. Events have no sequence number the mailbox could deduplicate on: one read
/// twice would be stored twice.
fn write_reports(dir: &std::path::Path, from: i64, to: i64) {
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(dir.join("events.jsonl")).unwrap();
    let pad = "p".repeat(250);
    for i in from..to {
        writeln!(f, r##"{{"event":"note","summary":"#{i} {pad}"}}"##).unwrap();
    }
}

/// An env whose host `h` is reached through `proxy`, with brother `oppy` running `agent`.
fn through(host: &FakeHost, proxy: &FaultProxy, agent: &str) -> Env {
    let env = Env::new();
    // The host is known under the proxy's port, which is what the client dials.
    std::fs::write(&env.known_hosts, format!("[127.0.0.1]:{} {}\n", proxy.port(), host.host_public_key())).unwrap();
    env.config_append(
        &env.host_toml("h", host)
            .replace(&format!("address = \"{}\"", host.address()), "address = \"127.0.0.1\"")
            .replace(&format!("port = {}", host.port()), &format!("port = {}", proxy.port())),
    );
    env.add_brother("oppy", "h", host, agent, "read");
    env
}

/// Runs `delegate sync` until one costs no exec: from then on the warm daemon's scripts go
/// through its resident shell (it starts after the daemon's first exec on the connection).
fn until_resident(env: &Env, host: &FakeHost) {
    for _ in 0..50 {
        let before = execs(host);
        env.run(&["sync"]).ok();
        if execs(host) == before {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("syncs never went through a resident shell:\n{}", host.sshd_log());
}

/// Cancels task `id` and waits (up to 20 s) until its tmux session is gone.
fn cancel_until_its_session_ends(env: &Env, host: &FakeHost, id: i64) {
    let shown = env.run(&["show", &id.to_string(), "--json"]).ok().json();
    let session = shown["runs"][0]["session"].as_str().unwrap().to_string();
    env.run(&["cancel", &id.to_string()]).ok();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while host.tmux(&["has-session", "-t", &format!("={session}")]).status.success() {
        assert!(std::time::Instant::now() < end, "the cancelled session never ended");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn sessions(host: &FakeHost) -> usize {
    let out = host.tmux(&["list-sessions", "-F", "#{session_name}"]);
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// F2/F4 over the resident shell: the link is reset as the launch's reply starts to come
/// back (the brother has the whole script). The launch is `launch_unknown` (exit 14), never
/// `launched` nor sent again; reconcile settles it (`running` with its one session, else
/// `lost` or `failed` with none), and a second look starts nothing.
#[test]
fn a_launch_whose_reply_is_cut_on_the_resident_shell_is_launch_unknown_and_never_repeated() {
    let host = FakeHost::start();
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", host.port()).parse().unwrap());
    let env = through(&host, &proxy, "self-test");
    // Something for the syncs to look at (a sync of no task sends nothing).
    let first = launch(&env, &["oppy", "first\n@self-test sleep 30", "--json"]);
    until_resident(&env, &host);
    let before = execs(&host);
    proxy.set(Fault::CutAfter { server_to_client: proxy.bytes_server_to_client() as usize + 1 });
    let run = env.run(&["oppy", "cut\n@self-test sleep 30", "--json"]).fails_with(14);
    assert_eq!(execs(&host), before, "the launch went through the resident shell:\n{run}");
    let task = run.json();
    assert_eq!(task["status"], "launch_unknown", "{run}");
    let id = task["id"].as_i64().unwrap().to_string();

    proxy.set(Fault::Pass);
    let settled = env.run_with_env(&["show", &id, "--json"], &[("DELEGATE_LAUNCH_GRACE", "0s")]).ok().json();
    let status = settled["status"].as_str().unwrap().to_string();
    // The brother had the whole script; how far it got before the link went decides which
    // true state reconcile finds: running (one session), or lost / failed (none).
    assert!(["running", "lost", "failed"].contains(&status.as_str()), "settled: {settled}");
    assert_eq!(sessions(&host), 1 + usize::from(status == "running"), "{settled}");
    env.run(&["sync"]).ok();
    assert!(sessions(&host) <= 2, "never a second agent for the cut launch");
    env.run(&["cancel", &id]).ok();
    env.run(&["cancel", &first.to_string()]).ok();
}

#[test]
fn a_sync_cut_mid_reply_on_the_resident_shell_reads_nothing_twice_and_misses_nothing() {
    let host = FakeHost::start();
    install_agent(&host, "claude", "#!/bin/bash\ncat >/dev/null\nsleep 600\n");
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", host.port()).parse().unwrap());
    let env = through(&host, &proxy, "claude");
    let id = launch(&env, &["oppy", "stay", "--json"]);
    let dir = remote_dir(&env, id);
    write_reports(&dir, 0, 200);
    until_resident(&env, &host);
    assert_eq!(reports(&env, id), (0..200).collect::<Vec<_>>());

    // About 650 KB waiting; the link is cut 100 KB into the reply.
    write_reports(&dir, 200, 2200);
    let before = execs(&host);
    proxy.set(Fault::CutAfter { server_to_client: proxy.bytes_server_to_client() as usize + 100_000 });
    let cut = env.run(&["sync"]);
    assert_eq!(execs(&host), before, "the cut sync went through the resident shell:\n{cut}");
    let after_cut = reports(&env, id);
    assert!(after_cut.len() < 2200, "the cut sync stored the whole reply? {} reports\n{cut}", after_cut.len());
    assert_eq!(after_cut, (0..after_cut.len() as i64).collect::<Vec<_>>(), "{cut}");

    proxy.set(Fault::Pass);
    for _ in 0..5 {
        if reports(&env, id).len() >= 2200 {
            break;
        }
        env.run(&["sync"]).ok();
    }
    assert_eq!(reports(&env, id), (0..2200).collect::<Vec<_>>(), "every report once, in order");
    env.run(&["cancel", &id.to_string()]).ok();
}

/// What a launch checked once is kept by the resident shell for the launches that follow in
/// it: the login environment (captured again only when a start-up file changed, or after
/// 60 s), the helpers' contents (a helper file changed in the store afterwards is not
/// used) and the checked remote_root (a root replaced by a link is still refused).
#[test]
fn a_resident_shell_keeps_what_launches_checked_and_sees_what_changed() {
    let host = FakeHost::builder().own_home().start();
    host.write_home_file(".profile", "echo x >>\"$HOME/sourced\"\n", 0o644);
    let env = Env::with_brother(&host, "self-test", "read");
    let sourced = || std::fs::read_to_string(host.home().join("sourced")).map_or(0, |s| s.lines().count());
    let go = |name: &str| launch(&env, &["oppy", &format!("{name}\n@self-test sleep 30"), "--json"]);
    let mut ids = vec![go("first")];
    until_resident(&env, &host);
    let before = execs(&host);
    // The first launch in the shell keeps the checked root and helpers; the second, with the
    // root known, captures the environment and keeps it.
    ids.push(go("second"));
    ids.push(go("third"));
    let captured = sourced();
    assert!(captured >= 3, "every launch so far read the profile: {captured}");

    // Helper files changed in the store after the shell checked them: its copies are used.
    let store = host.remote_root().join("helpers");
    for entry in std::fs::read_dir(&store).unwrap() {
        let path = entry.unwrap().path();
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        writeln!(f, "\n# changed by another hand").unwrap();
    }
    ids.push(go("fourth"));
    ids.push(go("fifth"));
    assert_eq!(sourced(), captured, "launches in one resident shell use its kept environment");
    let report = |id: i64| std::fs::read(remote_dir(&env, id).join("report")).unwrap();
    assert_eq!(report(ids[4]), report(ids[2]), "the shell's checked copy, not the changed file");
    assert!(!String::from_utf8_lossy(&report(ids[4])).contains("another hand"));

    // A changed start-up file is read again, and that capture is kept in turn.
    host.write_home_file(".profile", "echo x >>\"$HOME/sourced\"\nexport DLG_CHANGED=1\n", 0o644);
    ids.push(go("sixth"));
    assert_eq!(sourced(), captured + 1, "the changed profile was read again");
    ids.push(go("seventh"));
    assert_eq!(sourced(), captured + 1);
    assert_eq!(execs(&host), before, "all of these went through the resident shell");

    // The root replaced by a link to a copy of itself: refused, as on a first launch.
    let root = host.remote_root();
    let real = root.with_extension("real");
    std::fs::rename(&root, &real).unwrap();
    std::os::unix::fs::symlink(&real, &root).unwrap();
    let run = env.run(&["oppy", "not here\n@self-test sleep 30", "--json"]).fails_with(25);
    assert!(run.stderr().contains("symbolic link"), "{run}");
    std::fs::remove_file(&root).unwrap();
    std::fs::rename(&real, &root).unwrap();
    for id in ids {
        env.run(&["cancel", &id.to_string()]).ok();
    }
}

/// Puts a `tmux` first on the host's PATH (the login environment's too, which launches use)
/// that logs its arguments to the returned file and runs the real tmux. A control client it
/// starts runs `control` first (bash, with REAL the real tmux and LOG the log), which may
/// stand in for it.
fn logging_tmux(host: &FakeHost, control: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    // Before tmux 3.7 (this machine has 3.3a) the control client is off unless the
    // brother's user opts in (tmux-control.sh).
    host.write_home_file(".delegate-tmux-control", "", 0o644);
    let log = host.dir().join("tmux.log");
    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
    let real = ["/usr/bin/tmux", "/bin/tmux", "/usr/local/bin/tmux"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap();
    install_agent(
        host,
        "tmux",
        &format!(
            "#!/bin/bash\nREAL={real} LOG='{}'\nprintf '%s\\n' \"$*\" >>\"$LOG\"\ncase \" $* \" in *\" -C \"*) {control}\n;; esac\nexec $REAL \"$@\"\n",
            log.display()
        ),
    );
    host.write_home_file(".profile", format!("PATH={}:$PATH\n", host.dir().join("bin").display()), 0o644);
    log
}

/// Launches in a resident shell go through the shell's tmux control client: they start no
/// tmux process (a `tmux` first on the brother's PATH logs its arguments), and a small sync
/// of running tasks starts none either (liveness from /proc). The shell's first launch
/// makes its session with a plain client and a control client follows, attached to that
/// session. The tasks run as ever:
/// each launch still waits for its runner to report from inside tmux. When the session the
/// client is attached to ends, the client goes with it; the next launch makes its session
/// with a plain client and a new control client follows. The client holds no session of
/// its own: the tmux server still ends with the last task.
#[test]
fn launches_after_the_first_in_a_resident_shell_start_no_tmux_process() {
    let host = FakeHost::builder().own_home().start();
    let log = logging_tmux(&host, "");
    let count = |what: &str| std::fs::read_to_string(&log).unwrap().lines().filter(|l| l.contains(what)).count();
    let env = Env::with_brother(&host, "self-test", "read");
    let go = |name: &str| launch(&env, &["oppy", &format!("{name}\n@self-test sleep 60"), "--json"]);
    // (On a connection of its own: a plain client.)
    let first = go("first");
    until_resident(&env, &host);
    assert_eq!(count("list-sessions"), 0, "syncs of running tasks list no sessions (liveness from /proc)");
    assert_eq!(count("-C attach-session"), 0, "syncs of running tasks start no tmux client");
    let before = execs(&host);
    // The shell's first launch: a plain client, then a control client on its session.
    let attached = go("second");
    assert_eq!(count("new-session"), 2);
    assert_eq!(count("-C attach-session"), 1);
    let mut ids = vec![first, attached, go("third"), go("fourth")];
    assert_eq!(count("new-session"), 2, "later launches in the resident shell started no tmux process");
    assert_eq!(count("-C attach-session"), 1);
    for &id in &ids[2..] {
        let state = std::fs::read_to_string(remote_dir(&env, id).join("state")).unwrap();
        assert!(state.starts_with("started pid="), "its runner reported from inside tmux: {state}");
    }
    assert_eq!(sessions(&host), 4);
    // A sync of a few running tasks starts no tmux process.
    let listed = count("list-sessions");
    let synced = env.run(&["list", "--json"]).ok().json();
    assert_eq!(count("list-sessions"), listed, "the sync started no tmux process");
    let running = synced.as_array().unwrap().iter().filter(|t| t["status"] == "running").count();
    assert_eq!(running, 4, "it found every session alive: {synced}");

    // The session the client is attached to ends: the client goes with it.
    let session = |id: i64| env.run(&["show", &id.to_string(), "--json"]).ok().json()["runs"][0]["session"].clone();
    cancel_until_its_session_ends(&env, &host, attached);
    ids.push(go("fifth"));
    assert_eq!(count("new-session"), 3, "a plain client again, once");
    assert_eq!(count("-C attach-session"), 2, "and a new control client");
    ids.push(go("sixth"));
    assert_eq!(count("new-session"), 3);

    // tmux refusing the control client's command (here the next task's session name is
    // taken by hand): the launch fails with tmux's reason, and the client stays in use.
    let sixth = session(ids[5]).as_str().unwrap().to_string();
    let taken = sixth.replace(&format!("-{}-1", ids[5]), &format!("-{}-1", ids[5] + 1));
    assert!(host.tmux(&["new-session", "-d", "-s", &taken, "sleep 60"]).status.success());
    let run = env.run(&["oppy", "taken\n@self-test sleep 60", "--json"]).fails_with(29);
    assert!(run.stderr().contains("already exists"), "{run}");
    ids.push(go("eighth"));
    assert_eq!(count("new-session"), 3, "both launches used the client");
    assert_eq!(execs(&host), before, "all of these went through the resident shell");
    assert!(host.tmux(&["kill-session", "-t", &format!("={taken}")]).status.success());

    for id in ids.into_iter().filter(|&id| id != attached) {
        env.run(&["cancel", &id.to_string()]).ok();
    }
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while host.tmux(&["ls"]).status.success() {
        let ls = host.tmux(&["ls"]);
        assert!(
            std::time::Instant::now() < end,
            "the tmux server outlived its tasks: {}",
            String::from_utf8_lossy(&ls.stdout)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Whether a resident shell on this machine's tmux starts a control client only with the
/// opt-in (tmux before 3.7): asked of the launch's own rule (tmux-control.sh's
/// `control_wanted`), with `tmux -V`'s version and a home without the opt-in file.
fn control_client_needs_the_opt_in() -> bool {
    let out = std::process::Command::new("bash")
        .args(["-c", r#"eval "$1"; __dlg_resident=1; v=$(tmux -V) && control_wanted "${v#tmux }" s 3>&1"#, "-"])
        .arg(delegate_core::remote::TMUX_CONTROL_SH)
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    out.stdout.is_empty()
}

/// A resident shell that only syncs (its connection launched nothing: here the task went
/// out on a connection of its own) gets a control client too, after its first plain
/// listing: the syncs after that start no tmux process. (A sync lists sessions when a
/// task's runner is not seen alive in /proc: here its started line is one of a runner from
/// before start times were recorded.)
#[test]
fn a_resident_shell_that_only_syncs_gets_a_control_client_after_its_first_listing() {
    let host = FakeHost::builder().own_home().start();
    let log = logging_tmux(&host, "");
    let count = |what: &str| std::fs::read_to_string(&log).unwrap().lines().filter(|l| l.contains(what)).count();
    // Off before tmux 3.7 (this machine's 3.3a crashes with one): without the opt-in file,
    // syncs and launches in the resident shell start none.
    let opt_in = host.write_home_file(".delegate-tmux-control", "", 0o644);
    std::fs::remove_file(&opt_in).unwrap();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = env.run(&["--no-warm", "oppy", "only\n@self-test sleep 60", "--json"]).ok().json()["id"].as_i64().unwrap();
    assert!(blank_runner_start_time(&remote_dir(&env, id).join("state")), "the runner recorded its start time");
    until_resident(&env, &host);
    env.run(&["sync"]).ok();
    let other = launch(&env, &["oppy", "other\n@self-test sleep 60", "--json"]);
    env.run(&["sync"]).ok();
    std::thread::sleep(std::time::Duration::from_millis(300));
    if control_client_needs_the_opt_in() {
        assert_eq!(count("-C attach-session"), 0, "a control client started without the opt-in");
    }
    env.run(&["cancel", &other.to_string()]).ok();
    // Opted in: the next sync's plain listing brings one.
    host.write_home_file(".delegate-tmux-control", "", 0o644);
    env.run(&["sync"]).ok();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while count("-C attach-session") == 0 {
        assert!(std::time::Instant::now() < end, "no control client was started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let listed = count("list-sessions");
    for _ in 0..2 {
        let shown = env.run(&["show", &id.to_string(), "--json"]).ok().json();
        assert_eq!(shown["status"], "running", "{shown}");
    }
    assert_eq!(count("list-sessions"), listed, "the syncs started no tmux process");
    assert_eq!(count("-C attach-session"), 1);
    env.run(&["cancel", &id.to_string()]).ok();
}

/// A control client that ends between taking a launch's new-session and answering it (the
/// session it was attached to ended, or the server) leaves no launch hanging or unknown:
/// the server, asked with a plain client, tells whether it made the session. Made: the
/// launch is `launched` with it, and no second session follows. Not made: the launch makes
/// it with a plain client. Either way the client is let go and a new one follows.
#[test]
fn a_control_client_that_ends_before_it_answers_leaves_no_launch_unknown() {
    let host = FakeHost::builder().own_home().start();
    // A control client started while the file `mode` says `drop` ends on the first line it
    // gets, doing nothing; with `run` it has the real tmux run that line first; with `flood`
    // it writes notifications without end. It reads the file when it starts, and logs what
    // it read: the test waits for that.
    let mode = host.dir().join("mode");
    std::fs::write(&mode, "").unwrap();
    let control = format!(
        "m=$(cat '{}'); echo \"control ${{m:-real}}\" >>\"$LOG\"; [ \"$m\" != flood ] || while :; do echo %sessions-changed || exit 0; done; if [ -n \"$m\" ]; then IFS= read -r line; [ \"$m\" != run ] || eval \"$REAL -L delegate $line\" >/dev/null 2>&1; echo %exit; exit 0; fi",
        mode.display()
    );
    let log = logging_tmux(&host, &control);
    let count = |what: &str| std::fs::read_to_string(&log).unwrap().lines().filter(|l| l.contains(what)).count();
    let started = |what: &str| {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while count(&format!("control {what}")) == 0 {
            assert!(std::time::Instant::now() < end, "no control client read its mode {what}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let env = Env::with_brother(&host, "self-test", "read");
    let go = |name: &str| {
        let run = env.run(&["oppy", &format!("{name}\n@self-test sleep 60"), "--json"]);
        assert_eq!(run.code(), 0, "launched, not left unknown: {run}");
        let id = run.json()["id"].as_i64().unwrap();
        let state = std::fs::read_to_string(remote_dir(&env, id).join("state")).unwrap();
        assert!(state.starts_with("started pid="), "its runner reported from inside tmux: {state}");
        id
    };
    // Drop from the start: the shell's first launch makes its session with a plain client,
    // and a control client follows (syncs of running tasks start none).
    std::fs::write(&mode, "drop").unwrap();
    let mut ids = vec![go("first")];
    until_resident(&env, &host);
    ids.push(go("first in the shell"));
    started("drop");
    let (plain, clients) = (count("new-session"), count("-C attach-session"));
    std::fs::write(&mode, "run").unwrap();
    // The client ends without passing the line on: made with a plain client.
    ids.push(go("second"));
    assert_eq!(count("new-session"), plain + 1, "the session was made by a plain client");
    assert_eq!(count("-C attach-session"), clients + 1, "and a new control client followed");
    assert_eq!(sessions(&host), 3);
    started("run");
    std::fs::write(&mode, "").unwrap();
    // The client has tmux make the session, then ends without answering: found, not made again.
    ids.push(go("third"));
    assert_eq!(count("new-session"), plain + 1, "no plain client made a second session");
    assert_eq!(sessions(&host), 4, "one session for the third launch");
    ids.push(go("fourth"));
    assert_eq!(
        (count("new-session"), count("-C attach-session")),
        (plain + 2, clients + 2),
        "the client was let go; a new one follows"
    );
    ids.push(go("fifth"));
    assert_eq!(count("new-session"), plain + 2, "and is used");
    // A client that never stops talking is let go before the launch is sent to it: a
    // plain client makes the session, and the next control client is an ordinary one.
    cancel_until_its_session_ends(&env, &host, ids.remove(4)); // (the client's session, and the client)
    std::fs::write(&mode, "flood").unwrap();
    ids.push(go("sixth"));
    started("flood");
    std::fs::write(&mode, "").unwrap();
    let flooded = count("new-session");
    ids.push(go("seventh"));
    assert_eq!(count("new-session"), flooded + 1, "the flooding client was let go: a plain client");
    ids.push(go("eighth"));
    assert_eq!(count("new-session"), flooded + 1, "and the next client is used");
    for id in ids {
        env.run(&["cancel", &id.to_string()]).ok();
    }
}

/// A control client whose command gets no answer (the tmux server is stopped) leaves the
/// launch `launch_unknown` after 10 s, never a second session: reconcile settles it by what
/// the brother holds once the server runs again (the session, if the server took the
/// command before the client was let go; else none). The shell lets that client go, and
/// the next launch makes its session with a plain client and gets a new control client.
#[test]
fn a_control_client_that_never_answers_leaves_the_launch_unknown_and_is_let_go() {
    let host = FakeHost::builder().own_home().start();
    host.write_home_file(".delegate-tmux-control", "", 0o644);
    // (It answers --version at once: the launch asks for it.)
    install_agent(&host, "claude", "#!/bin/bash\n[ \"$1\" = --version ] && exec echo 1.0\ncat >/dev/null\nsleep 600\n");
    let env = Env::with_brother(&host, "claude", "read");
    let go = |name: &str| launch(&env, &["oppy", name, "--json"]);
    let mut ids = vec![go("first")];
    until_resident(&env, &host);
    ids.push(go("second"));
    ids.push(go("third"));
    let clients = || {
        let out = host.tmux(&["list-clients", "-F", "#{client_control_mode}"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(clients(), "1", "one control client");
    let pid = String::from_utf8_lossy(&host.tmux(&["display-message", "-p", "#{pid}"]).stdout).trim().to_string();
    let signal = |sig: &str| assert!(std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success());
    signal("-STOP");
    let run = env.run(&["oppy", "unanswered", "--json"]);
    signal("-CONT");
    let run = run.fails_with(14);
    assert_eq!(run.json()["status"], "launch_unknown", "{run}");
    assert!(run.stderr().contains("did not answer"), "{run}");
    let id = run.json()["id"].as_i64().unwrap();
    let settled =
        env.run_with_env(&["show", &id.to_string(), "--json"], &[("DELEGATE_LAUNCH_GRACE", "0s")]).ok().json();
    let status = settled["status"].as_str().unwrap().to_string();
    assert!(["running", "lost", "failed"].contains(&status.as_str()), "settled: {settled}");
    assert_eq!(sessions(&host), 3 + usize::from(status == "running"), "never a second session: {settled}");
    assert_eq!(clients(), "", "the client was let go");
    ids.push(go("after"));
    assert_eq!(clients(), "1", "a new control client");
    ids.push(go("later"));
    assert_eq!(sessions(&host), 5 + usize::from(status == "running"));
    if status == "running" {
        ids.push(id);
    }
    for id in ids {
        env.run(&["cancel", &id.to_string()]).ok();
    }
}
