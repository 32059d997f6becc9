//! F11 (testplan §2.1), tier T1: the local disk is full, so the mailbox cannot record the
//! task. Nothing may be launched: a launch the mailbox does not know about could never be
//! reconciled, cancelled or even found again.
//!
//! The "full disk" is SQLite's own: `PRAGMA max_page_count` capped at the mailbox's current
//! size on delegate's own connection, so any write that grows the file fails with
//! SQLITE_FULL ("database or disk is full"), the same error SQLite gives for ENOSPC. The cap
//! is a per-connection setting and the store's connection is private, so it is set by a
//! SQLite auto-extension (`sqlite3_auto_extension`, run by SQLite at the end of every
//! `sqlite3_open` in this process) that applies it only to databases under this test's
//! directory. Delegate itself runs unchanged. The T2 variant (the data dir on a tiny tmpfs,
//! through the CLI) is `tests/e2e/local_disk.rs`.
//!
//! One test per file: the auto-extension is process-wide.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use delegate_core::{Delegate, Error, LaunchRequest, ListFilter, Paths};
use delegate_testkit::FakeHost;

/// Page cap for mailboxes under [`capped_dir`]; 0 = no cap.
static CAP: AtomicU32 = AtomicU32::new(0);
static CAPPED_DIR: OnceLock<String> = OnceLock::new();
/// Every connection that got the cap, by path (proves delegate's own connection had it).
static CAPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn cap_pages(conn: rusqlite::Connection) -> rusqlite::Result<()> {
    let cap = CAP.load(Ordering::SeqCst);
    let path = conn.path().unwrap_or_default().to_string();
    let ours = CAPPED_DIR.get().is_some_and(|d| path.starts_with(d.as_str()));
    if cap == 0 || !ours {
        return Ok(());
    }
    let set: u32 = conn.query_row(&format!("PRAGMA max_page_count = {cap}"), [], |r| r.get(0))?;
    assert_eq!(set, cap, "SQLite refused the cap");
    CAPPED.lock().unwrap().push(path);
    Ok(())
}

unsafe extern "C" fn cap_pages_raw(
    db: *mut rusqlite::ffi::sqlite3,
    err: *mut *mut std::ffi::c_char,
    _api: *const rusqlite::ffi::sqlite3_api_routines,
) -> std::ffi::c_int {
    // SAFETY: called by SQLite with a valid, open handle; the bridge does not close it.
    unsafe { rusqlite::auto_extension::init_auto_extension(db, err, cap_pages) }
}

fn paths(dir: &Path) -> Paths {
    Paths {
        config_file: dir.join("config.toml"),
        data_dir: dir.join("data"),
        home: dir.to_path_buf(),
        local_user: "tester".into(),
        ssh_config: dir.join("ssh_config"),
        agent_socket: None,
    }
}

fn inventory(dir: &Path, host: &FakeHost) {
    std::fs::write(dir.join("known_hosts"), format!("{}\n", host.known_hosts_line())).unwrap();
    let toml = format!(
        "[hosts.h]\naddress = \"{}\"\nport = {}\nuser = \"{}\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\n\
         remote_root = \"{}\"\nconnect_timeout = 5\n\n\
         [brothers.oppy]\nhost = \"h\"\nworkdir = \"{}\"\nagent = \"self-test\"\nsandbox = \"read\"\n",
        host.address(),
        host.port(),
        host.user(),
        host.client_key().display(),
        dir.join("known_hosts").display(),
        host.remote_root().display(),
        host.workdir().display(),
    );
    std::fs::write(dir.join("config.toml"), toml).unwrap();
}

fn remote_task_dirs(host: &FakeHost) -> usize {
    std::fs::read_dir(host.remote_root().join("tasks")).map(|rd| rd.count()).unwrap_or(0)
}

/// sshd logs every TCP connection at LogLevel VERBOSE.
fn connections_seen(host: &FakeHost) -> usize {
    host.sshd_log().matches("Connection from ").count()
}

fn page_count(db: &Path) -> u32 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap()
}

fn integrity(db: &Path) -> String {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap()
}

#[test]
fn f11_a_full_mailbox_fails_the_launch_before_anything_reaches_the_brother() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("f11-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    CAPPED_DIR.set(dir.display().to_string()).unwrap();
    // SAFETY: the extension opens no database and closes none.
    unsafe { rusqlite::auto_extension::register_auto_extension(cap_pages_raw) }.unwrap();

    let host = FakeHost::start();
    // The testkit's own readiness probe is one connection.
    let probes = connections_seen(&host);
    inventory(&dir, &host);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // A prompt that needs new pages (overflow pages) to be recorded.
    let prompt: Vec<u8> = (0..256 * 1024u32).map(|i| b'a' + (i % 26) as u8).collect();
    let request = || LaunchRequest { brother: "oppy".into(), prompt: prompt.clone(), ..Default::default() };

    // The mailbox exists (schema, mailbox id) before the disk "fills up".
    drop(Delegate::open(paths(&dir)).unwrap());
    let db = dir.join("data").join(delegate_core::mailbox::DB_FILE);
    let pages = page_count(&db);
    CAP.store(pages, Ordering::SeqCst);

    let mut d = Delegate::open(paths(&dir)).expect("opening a full mailbox needs no new page");
    assert!(!CAPPED.lock().unwrap().is_empty(), "delegate's connection never got the page cap");
    let err = rt.block_on(d.launch(request())).expect_err("a launch the mailbox could not record");
    let text = err.to_string();
    eprintln!("F11: launch with the mailbox capped at {pages} pages: {text}");
    let code = match &err {
        Error::Store(e) => e.sqlite_error_code(),
        _ => None,
    };
    assert_eq!(code, Some(rusqlite::ErrorCode::DiskFull), "not reported as SQLITE_FULL: {err:?}");
    assert!(text.contains("mailbox") && text.contains("full"), "unclear message: {text}");
    assert_eq!(err.task_id(), None, "a task number for a task that was never recorded: {err:?}");
    assert_eq!(connections_seen(&host), probes, "delegate connected anyway:\n{}", host.sshd_log());
    assert_eq!(remote_task_dirs(&host), 0, "{}", host.diagnostics());
    assert!(!host.tmux(&["ls"]).status.success(), "a tmux server exists:\n{}", host.diagnostics());
    assert!(host.agent_records().is_empty());
    assert!(d.list(&ListFilter::default()).unwrap().is_empty(), "a half-recorded task");
    drop(d);
    assert_eq!(integrity(&db), "ok");

    // Control: with room again the same launch connects and starts, so the checks above
    // would have seen a launch.
    CAP.store(0, Ordering::SeqCst);
    let mut d = Delegate::open(paths(&dir)).unwrap();
    let task = rt.block_on(d.launch(request())).expect("launch with room in the mailbox");
    assert!(connections_seen(&host) > probes, "the control launch left no trace in the sshd log");
    assert_eq!(remote_task_dirs(&host), 1, "{}", host.diagnostics());
    assert_eq!(d.list(&ListFilter::default()).unwrap().len(), 1);
    eprintln!("F11: control launch with room: task {} {}", task.id, task.status);
    drop(d);
    drop(host);
    std::fs::remove_dir_all(&dir).unwrap();
}
