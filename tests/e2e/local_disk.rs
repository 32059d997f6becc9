//! F11 (testplan §2.1), tier T2: the local disk is full. The CLI's data directory (the
//! mailbox) is a tiny tmpfs filled to the last byte, so the mailbox cannot record a task: the
//! launch must fail as a mailbox error (exit 4) before anything reaches the brother. Needs
//! root for `mount`; skipped with a printed reason otherwise. The T1 variant (SQLite's page
//! cap, through the library) is `crates/delegate-core/tests/local_disk_full.rs`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use delegate_testkit::FakeHost;

use crate::support::Env;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let out = Command::new("umount").arg(&self.0).output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).output();
        }
    }
}

/// Writes zeros into `path` until the file system says it is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 4096];
    let mut written = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Whatever partial page is left.
    while f.write(&[0u8]).is_ok_and(|n| n == 1) {
        written += 1;
    }
    written
}

fn connections_seen(host: &FakeHost) -> usize {
    host.sshd_log().matches("Connection from ").count()
}

fn remote_task_dirs(host: &FakeHost) -> usize {
    std::fs::read_dir(host.remote_root().join("tasks")).map(|rd| rd.count()).unwrap_or(0)
}

#[test]
fn f11_a_full_local_disk_is_a_mailbox_error_and_nothing_is_launched() {
    if !is_root() {
        eprintln!("skipped: mounting a tiny tmpfs needs root");
        return;
    }
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    std::fs::create_dir(&env.data).unwrap();
    // Room for the mailbox with every migration and its WAL (512 KiB was too little once the
    // schema grew by two tables); the test fills whatever is left to the last byte anyway.
    let out = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"]).arg(&env.data).output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!("skipped: mount -t tmpfs failed: {}", String::from_utf8_lossy(&o.stderr));
            return;
        }
        Err(e) => {
            eprintln!("skipped: cannot run mount: {e}");
            return;
        }
    }
    let _mount = Mount(env.data.clone());
    // The mailbox exists, then the disk fills up.
    env.run(&["list", "--json"]).ok();
    let filler = env.data.join("filler");
    let filled = fill(&filler);
    eprintln!("F11/T2: filled the 1 MiB data dir with {filled} more bytes");
    let probes = connections_seen(&host);

    let prompt_file = env.home.join("prompt");
    std::fs::write(&prompt_file, vec![b'x'; 256 * 1024]).unwrap();
    let launch = ["oppy", "--prompt-file", prompt_file.to_str().unwrap(), "--json"];
    let nothing_reached_the_brother = || {
        assert_eq!(connections_seen(&host), probes, "delegate connected anyway:\n{}", host.sshd_log());
        assert_eq!(remote_task_dirs(&host), 0, "{}", host.diagnostics());
        assert!(!host.tmux(&["ls"]).status.success(), "a tmux server exists:\n{}", host.diagnostics());
        assert!(host.agent_records().is_empty());
    };

    // Alone: SQLite fails while sizing the mailbox's shared-memory file (-shm), which it
    // creates afresh whenever no other process has the mailbox open.
    let run = env.run(&launch).fails_with(4);
    eprintln!("F11/T2 (mailbox not open elsewhere): {}", run.stderr().trim());
    assert!(run.stderr().contains("mailbox error"), "not reported as a mailbox error:\n{run}");
    assert!(run.stderr().contains("disk holding the mailbox is full"), "unclear error:\n{run}");
    nothing_reached_the_brother();

    // With the mailbox open in another process (a `delegate wait`, say), the -wal and -shm
    // exist and the write itself fails: SQLITE_FULL.
    std::fs::remove_file(&filler).unwrap();
    let other = rusqlite::Connection::open(env.data.join("mailbox.db")).unwrap();
    let _: i64 = other.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0)).unwrap();
    fill(&filler);
    let run = env.run(&launch).fails_with(4);
    eprintln!("F11/T2 (mailbox open elsewhere): {}", run.stderr().trim());
    assert!(run.stderr().contains("disk holding the mailbox is full"), "unclear error:\n{run}");
    nothing_reached_the_brother();
    drop(other);

    // Room again: nothing was half-recorded, the mailbox is whole, and the same launch works
    // (so the checks above would have seen a launch).
    std::fs::remove_file(&filler).unwrap();
    let list = env.run(&["list", "--json"]).ok().json();
    assert_eq!(list, serde_json::json!([]), "a task was recorded on a full disk");
    let db = rusqlite::Connection::open(env.data.join("mailbox.db")).unwrap();
    let ok: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
    drop(db);
    let task = env.run(&launch).ok().json();
    assert_eq!(task["status"], "launched", "{task}");
    assert!(connections_seen(&host) > probes);
    assert_eq!(remote_task_dirs(&host), 1);
}
