//! The warm path: a background daemon keeps SSH connections between CLI commands (like
//! OpenSSH's ControlPersist), owner-only, started on demand, gone when idle, and never in
//! the way: anything wrong with it means a direct connection, and never a command run twice.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use delegate_testkit::FakeHost;
use serde_json::Value;

use crate::support::{Env, launch};

fn logins(host: &FakeHost) -> usize {
    host.sshd_log().matches("Accepted publickey").count()
}

fn socket(env: &Env) -> PathBuf {
    env.data.join("warm").join("sock")
}

fn status(env: &Env) -> Value {
    env.run(&["warm", "status", "--json"]).ok().json()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn alive(pid: i64) -> bool {
    // Zombies count as gone: the daemon's parent (the CLI) has exited, so init reaps it.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn repeated_commands_share_one_connection_held_by_the_warm_daemon() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    // Counted in execs: one per script, as without the resident shell (whose own start lands
    // whenever it does; `resident::*` covers scripts through it).
    env.no_resident();
    let first = env.run(&["oppy", "one\n@self-test sleep 30", "--json"]).ok().json();
    let second = env.run(&["oppy", "two\n@self-test sleep 30", "--json"]).ok().json();
    env.run(&["sync"]).ok();
    env.run(&["status"]).ok();
    // Four commands, one login: the daemon held the connection between them. And one exec
    // each: a launch is one channel and one exec, a sync (status syncs too) one per host.
    assert_eq!(logins(&host), 1, "{}", host.sshd_log());
    assert_eq!(crate::support::execs(&host), 4, "{}", host.sshd_log());
    let evidence = |t: &Value| t["runs"][0]["evidence"].clone();
    assert_eq!(evidence(&first)["warm"], true, "{first}");
    assert_eq!(evidence(&first)["connection"], "new", "{first}");
    assert_eq!(evidence(&second)["connection"], "reused", "{second}");

    let s = status(&env);
    assert_eq!(s["connections"], 1, "{s}");
    assert!(s["requests_served"].as_u64().unwrap() >= 4, "{s}");
    // Owner-only: the socket and its directory.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&socket(&env)), 0o600);
    assert_eq!(mode(socket(&env).parent().unwrap()), 0o700);
}

/// The files a process has open, by path.
fn open_files(pid: i64) -> Vec<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok()).collect())
        .unwrap_or_default()
}

#[test]
fn the_daemon_keeps_the_mailbox_open_so_no_command_rebuilds_its_wal_index() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let first = env.run(&["oppy", "one\n@self-test sleep 30", "--json"]).ok().json();
    let pid = status(&env)["pid"].as_i64().expect("a daemon");
    // Held open (mapped WAL index and all) between commands, with no transaction: every
    // command after it writes and reads as before.
    let db = std::fs::canonicalize(env.data.join("mailbox.db")).unwrap();
    let shm = db.with_file_name("mailbox.db-shm");
    wait_until("the daemon to hold the mailbox", Duration::from_secs(5), || {
        let files = open_files(pid);
        files.contains(&db) && files.contains(&shm)
    });
    let second = env.run(&["oppy", "two\n@self-test sleep 30", "--json"]).ok().json();
    let listed = env.run(&["list", "--json"]).ok().json();
    let ids: Vec<i64> = listed.as_array().unwrap().iter().map(|t| t["id"].as_i64().unwrap()).collect();
    assert!(ids.contains(&first["id"].as_i64().unwrap()) && ids.contains(&second["id"].as_i64().unwrap()), "{listed}");
    // Stopped, it lets the mailbox go whole: a command after it reads both tasks.
    env.run(&["warm", "stop"]).ok();
    wait_until("the daemon to exit", Duration::from_secs(10), || !alive(pid));
    let listed = env.run(&["--no-warm", "list", "--json"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), ids.len(), "{listed}");
}

#[test]
fn no_warm_flag_and_config_connect_directly_and_start_no_daemon() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    launch(&env, &["--no-warm", "run", "oppy", "one\n@self-test sleep 30", "--json"]);
    launch(&env, &["oppy", "two\n@self-test sleep 30", "--json", "--no-warm"]);
    env.run(&["sync", "--no-warm"]).ok();
    assert_eq!(logins(&host), 3, "one login per command: {}", host.sshd_log());
    assert!(!socket(&env).exists(), "no daemon was to be started");

    env.config_append("[warm]\nenabled = false");
    env.run(&["sync"]).ok();
    assert_eq!(logins(&host), 4, "{}", host.sshd_log());
    assert!(!socket(&env).exists(), "[warm] enabled = false starts no daemon");
    assert_eq!(status(&env), Value::Null);
}

#[test]
fn an_idle_daemon_exits_and_removes_its_socket() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    env.config_append("[warm]\npersist = \"1s\"");
    launch(&env, &["oppy", "one\n@self-test sleep 30", "--json"]);
    let pid = status(&env)["pid"].as_i64().expect("a daemon runs");
    wait_until("the idle daemon to exit", Duration::from_secs(20), || !alive(pid));
    assert!(!socket(&env).exists(), "the socket went with the daemon");
    // The next command starts a new one.
    env.run(&["sync"]).ok();
    let again = status(&env)["pid"].as_i64().expect("a new daemon");
    assert_ne!(again, pid);
}

#[test]
fn a_killed_daemon_is_replaced_and_the_command_still_runs() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    launch(&env, &["oppy", "one\n@self-test sleep 30", "--json"]);
    let pid = status(&env)["pid"].as_i64().unwrap();
    // SAFETY: kill(2) on a pid we just read from the daemon.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_until("the daemon to die", Duration::from_secs(10), || !alive(pid));
    assert!(socket(&env).exists(), "SIGKILL leaves a stale socket behind");
    let t = env.run(&["oppy", "two\n@self-test sleep 30", "--json"]).ok().json();
    assert_eq!(t["status"], "launched", "{t}");
    let s = status(&env);
    assert_ne!(s["pid"].as_i64().unwrap(), pid, "{s}");
}

#[test]
fn concurrent_first_commands_end_up_with_one_daemon() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    // Four processes at once, none finding a daemon: each tries to start one.
    let children: Vec<_> = (0..4)
        .map(|i| {
            std::process::Command::new(env!("CARGO_BIN_EXE_delegate"))
                .env_clear()
                .envs(env.envs())
                .current_dir(&env.home)
                .args(["oppy", &format!("task {i}\n@self-test sleep 30"), "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let sock = socket(&env).display().to_string();
    let daemons: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("warm serve") && c.contains(&sock))
        .collect();
    wait_until("extra daemons to give way", Duration::from_secs(10), || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| {
                let dir = e.ok()?.path();
                let cmd = std::fs::read(dir.join("cmdline")).ok()?;
                let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
                Some((String::from_utf8_lossy(&cmd).replace('\0', " "), stat))
            })
            .filter(|(c, stat)| c.contains("warm serve") && c.contains(&sock) && !stat.contains(") Z "))
            .count()
            == 1
    });
    assert!(!daemons.is_empty(), "a daemon was started");
    let s = status(&env);
    assert!(s["pid"].as_i64().is_some(), "{s}");
}

/// A stand-in for a daemon that misbehaves in one chosen way, on the real socket path.
fn impostor(env: &Env, behave: fn(std::os::unix::net::UnixStream)) -> std::thread::JoinHandle<()> {
    let path = socket(env);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::set_permissions(path.parent().unwrap(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        // Serve one request, then stop listening.
        if let Ok((stream, _)) = listener.accept() {
            behave(stream);
        }
    })
}

/// Reads one whole request (header and stdin), as the daemon does before acknowledging.
fn read_request(stream: &mut std::os::unix::net::UnixStream) {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut header = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut header).unwrap();
    let header: Value = serde_json::from_slice(&header).unwrap();
    let mut stdin = vec![0u8; header["stdin_len"].as_u64().unwrap() as usize];
    stream.read_exact(&mut stdin).unwrap();
}

#[test]
fn a_daemon_that_hangs_up_before_acknowledging_means_a_direct_connection() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let fake = impostor(&env, |mut s| {
        read_request(&mut s);
        // Gone without a word: nothing ran, so the command may connect itself.
    });
    let t = env.run(&["oppy", "one\n@self-test sleep 30", "--json"]).ok().json();
    fake.join().unwrap();
    assert_eq!(t["status"], "launched", "{t}");
    assert_eq!(t["runs"][0]["evidence"]["warm"], false, "went direct: {t}");
    assert_eq!(logins(&host), 1);
}

#[test]
fn a_daemon_of_another_build_is_refused_politely_and_the_command_goes_direct() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let fake = impostor(&env, |mut s| {
        read_request(&mut s);
        let refused = br#"{"kind":"refused","why":"the daemon is delegate-core 0.0.1 wire 0"}"#;
        s.write_all(&[0x15]).unwrap();
        s.write_all(&(refused.len() as u32).to_be_bytes()).unwrap();
        s.write_all(refused).unwrap();
    });
    let t = env.run(&["oppy", "one\n@self-test sleep 30", "--json"]).ok().json();
    fake.join().unwrap();
    assert_eq!(t["status"], "launched", "{t}");
    assert_eq!(logins(&host), 1);
}

#[test]
fn a_daemon_lost_after_acknowledging_a_launch_leaves_it_unknown_never_sent_twice() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let fake = impostor(&env, |mut s| {
        read_request(&mut s);
        s.write_all(&[0x06]).unwrap();
        // Took the request, then died: it may have run. The command must not run it again.
    });
    let run = env.run(&["oppy", "one\n@self-test sleep 30", "--json"]).fails_with(14);
    fake.join().unwrap();
    assert_eq!(run.json()["status"], "launch_unknown", "{run}");
    assert_eq!(logins(&host), 0, "the command connected itself after the daemon took it: {}", host.sshd_log());
}

#[test]
fn others_cannot_use_the_daemon_even_through_a_loosened_socket() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to connect as another user");
        return;
    }
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    launch(&env, &["oppy", "one\n@self-test sleep 30", "--json"]);
    let sock = socket(&env);
    let probe = format!(
        "import socket,struct,sys\n\
         s=socket.socket(socket.AF_UNIX)\n\
         s.settimeout(5)\n\
         s.connect({:?})\n\
         h=b'{{\"kind\":\"status\",\"build\":\"x\"}}'\n\
         try:\n\
         \x20s.sendall(struct.pack('>I',len(h))+h)\n\
         \x20n=len(s.recv(100))\n\
         except (BrokenPipeError, ConnectionResetError): n=0\n\
         print('answer', n)\n",
        sock.display().to_string()
    );
    let as_other = |script: &str| {
        std::process::Command::new("runuser").args(["-u", host.user(), "--", "python3", "-c", script]).output().unwrap()
    };
    // The directory keeps others out.
    let out = as_other(&probe);
    assert!(!out.status.success(), "another user reached the socket: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{out:?}");

    // Opened up by hand, the daemon still checks who is calling and says nothing.
    let mut p = env.home.clone();
    for part in sock.strip_prefix(&env.home).unwrap().parent().unwrap().components() {
        p.push(part);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&env.home, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = as_other(&probe);
    assert!(String::from_utf8_lossy(&out.stdout).contains("answer 0"), "the daemon answered a stranger: {out:?}");
}
