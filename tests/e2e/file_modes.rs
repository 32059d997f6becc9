//! S10: file modes do not depend on the umask delegate runs with, on either side.
//!
//! Each umask (000, 022, 077) is applied twice: to the `delegate` processes (local data dir
//! and mailbox) and to the fake host's sshd, which with `UsePAM no` hands its umask to every
//! SSH session: the remote login umask the launch, say, cancel and sync scripts start with.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use delegate_core::mailbox::DB_FILE;
use delegate_testkit::FakeHost;

use crate::support::{Env, launch, remote_dir, wait_done, wait_for_file};

const UMASKS: [u32; 3] = [0o000, 0o022, 0o077];

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).mode() & 0o7777
}

/// Every entry under `root` (itself included) with its mode and type, sorted.
fn tree(root: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut out = vec![(root.to_path_buf(), mode(root), true)];
    let mut entries: Vec<_> = std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(tree(&p));
        } else {
            out.push((p.clone(), mode(&p), false));
        }
    }
    out
}

fn listing(entries: &[(PathBuf, u32, bool)]) -> String {
    entries.iter().map(|(p, m, d)| format!("{m:04o} {}{}\n", p.display(), if *d { "/" } else { "" })).collect()
}

/// Dirs must be 0700; files 0600, or 0700 for the helpers the agent runs by path.
fn private_violations(entries: &[(PathBuf, u32, bool)], executables: &[&str]) -> Vec<String> {
    entries
        .iter()
        .filter(|(p, m, dir)| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if *dir {
                *m != 0o700
            } else if executables.contains(&name) {
                *m != 0o700 && *m != 0o600
            } else {
                *m != 0o600
            }
        })
        .map(|(p, m, _)| format!("{m:04o} {}", p.display()))
        .collect()
}

/// The delegate binary with the Env's hermetic environment, under `umask`, not waited for.
fn spawn_under(env: &Env, umask: u32, args: &[&str]) -> std::process::Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_delegate"));
    c.env_clear().envs(env.envs()).current_dir(&env.home).args(args);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: umask is async-signal-safe and changes only the child.
    unsafe {
        c.pre_exec(move || {
            libc::umask(umask as libc::mode_t);
            Ok(())
        });
    }
    c.spawn().expect("spawn delegate")
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Files the agent's helpers (`report`, `inbox`, `hook`) create: they are bash scripts the
/// agent runs, so they get whatever umask a BASH_ENV file sets, not run.sh's 077.
const HELPER_FILES: [&str; 2] = ["outbox.jsonl", "delivered.jsonl"];

/// `helpers`: also hold the files the agent's helpers write to the rule (see HELPER_FILES).
fn modes_hold_under(umask: u32, helpers: bool) {
    let host = FakeHost::builder().login_umask(umask).start();
    let env = Env::with_brother(&host, "self-test", "write");
    env.set_umask(umask);
    let ctx = format!("umask {umask:03o}");
    // The remote login umask really is the one under test.
    // Asked the way delegate runs its scripts: `bash -s` reads BASH_ENV (a `bash -c` started
    // by sshd reads ~/.bashrc instead; see FakeHostBuilder::login_umask).
    let mut probe = host.ssh("bash -s").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut probe.stdin.take().unwrap(), b"umask\n").unwrap();
    let seen = probe.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&seen.stdout).trim(), format!("{umask:04o}"), "{ctx}: remote umask {seen:?}");

    // A running task, told something, watched by `wait` (which keeps the mailbox open, so
    // the -wal and -shm sidecars exist while we look), then cancelled.
    let id = launch(&env, &["oppy", "modes\n@self-test sleep 30", "--json"]);
    let dir = remote_dir(&env, id);
    env.run(&["say", &id.to_string(), "hello"]).ok();
    wait_for_file(&dir.join("delivered.jsonl"));
    let waiter = spawn_under(&env, umask, &["wait", &id.to_string(), "--timeout", "60s", "--interval-ms", "100"]);
    let db = env.data.join(DB_FILE);
    let sidecars =
        [db.clone(), PathBuf::from(format!("{}-wal", db.display())), PathBuf::from(format!("{}-shm", db.display()))];
    wait_until("mailbox -wal/-shm while `wait` runs", Duration::from_secs(10), || sidecars.iter().all(|p| p.exists()));
    // Local: the data dir 0700, the DB and both sidecars 0600 (SQLite gives the sidecars
    // the DB's mode), and nothing else in there readable by others.
    let local = tree(&env.data);
    assert_eq!(mode(&env.data), 0o700, "{ctx}: data dir\n{}", listing(&local));
    for p in &sidecars {
        assert_eq!(mode(p), 0o600, "{ctx}: {}\n{}", p.display(), listing(&local));
    }
    let bad = private_violations(&local, &[]);
    assert!(bad.is_empty(), "{ctx}: local files open to others: {bad:?}\n{}", listing(&local));

    // The tmux socket dir, while the server runs: 0700 is what protects the socket (tmux
    // itself creates sockets 0660 whatever the umask, and relies on that directory).
    let socket = host.tmux_socket();
    let socket_dir = socket.parent().unwrap();
    assert_eq!(mode(socket_dir), 0o700, "{ctx}: tmux socket dir {}", socket_dir.display());
    assert_eq!(mode(&socket) & 0o007, 0, "{ctx}: tmux socket {} is {:04o}", socket.display(), mode(&socket));

    env.run(&["logs", &id.to_string()]).ok();
    env.run(&["cancel", &id.to_string()]).ok();
    let out = waiter.wait_with_output().unwrap();
    assert!(matches!(out.status.code(), Some(0 | 7)), "{ctx}: wait: {out:?}");

    // A second task that runs to completion, so the files of a normal ending exist too.
    let done = launch(&env, &["oppy", "modes, short", "--json"]);
    wait_done(&env, done);
    env.run(&["sync"]).ok();
    let local = tree(&env.data);
    let bad = private_violations(&local, &[]);
    assert!(bad.is_empty(), "{ctx}: local files open to others: {bad:?}\n{}", listing(&local));

    // Remote: the root, tasks/ and every task dir 0700; every file in them 0600, the
    // helpers 0700; nothing group- or other-accessible.
    let remote = tree(&host.remote_root());
    let mut bad = private_violations(&remote, &["report", "inbox", "hook"]);
    if !helpers {
        bad.retain(|b| !HELPER_FILES.iter().any(|h| b.ends_with(&format!("/{h}"))));
    }
    assert!(bad.is_empty(), "{ctx}: remote entries with the wrong mode: {bad:?}\n{}", listing(&remote));
    let names: Vec<String> = remote
        .iter()
        .filter(|(_, _, d)| !d)
        .map(|(p, _, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in
        ["prompt", "launch.json", "run.sh", "state", "stream.jsonl", "stderr.log", "exit", "inbox.jsonl", "cancel"]
    {
        assert!(names.iter().any(|n| n == expected), "{ctx}: no {expected} in the remote tree:\n{}", listing(&remote));
    }
}

#[test]
fn file_modes_are_private_under_umask_000() {
    modes_hold_under(UMASKS[0], false);
}

#[test]
fn file_modes_are_private_under_umask_022() {
    modes_hold_under(UMASKS[1], false);
}

#[test]
fn file_modes_are_private_under_umask_077() {
    modes_hold_under(UMASKS[2], true);
}

/// The agent's helpers keep their files private too, whatever umask the remote user's
/// shell startup (here BASH_ENV) sets.
#[test]
fn file_modes_agent_helper_files_are_private_under_umask_000() {
    modes_hold_under(UMASKS[0], true);
}

/// `hosts add` on an existing inventory keeps its mode (a private 0600 file stays 0600).
#[test]
fn file_modes_inventory_edit_keeps_the_mode_of_an_existing_file() {
    let host = FakeHost::start();
    for umask in UMASKS {
        let env = Env::new();
        env.config_append("# my inventory\n");
        std::fs::set_permissions(&env.config, std::fs::Permissions::from_mode(0o600)).unwrap();
        env.set_umask(umask);
        let port = host.port().to_string();
        env.run(&["hosts", "add", "h", "--address", host.address(), "--port", &port]).ok();
        let text = std::fs::read_to_string(&env.config).unwrap();
        assert!(text.contains("# my inventory") && text.contains("[hosts.h]"), "{text}");
        assert_eq!(mode(&env.config), 0o600, "umask {umask:03o}: the edit changed the inventory's mode");
    }
}

/// An inventory (and its directory) created by `hosts add` is writable by nobody else:
/// whoever can write it chooses the commands delegate runs.
#[test]
fn file_modes_inventory_created_by_an_edit_is_not_writable_by_others() {
    let host = FakeHost::start();
    for umask in UMASKS {
        let env = Env::new();
        let config = env.home.join("cfgdir").join("config.toml");
        env.set_umask(umask);
        let port = host.port().to_string();
        let cfg = config.display().to_string();
        env.run(&["--config", &cfg, "hosts", "add", "h", "--address", host.address(), "--port", &port]).ok();
        for p in [&config, &config.parent().unwrap().to_path_buf()] {
            assert_eq!(mode(p) & 0o022, 0, "umask {umask:03o}: {} is {:04o}", p.display(), mode(p));
        }
    }
}
