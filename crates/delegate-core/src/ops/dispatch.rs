//! The dispatcher's tick and its lock: a loop (the CLI's `delegate dispatch`) that keeps the
//! mailbox moving with nobody at the keyboard.
//!
//! Each tick: when tasks are in flight or queued, one sync (one SSH exec per host with
//! unfinished tasks, which also starts queued tasks that now have room); then every due
//! schedule slot fires. With nothing in flight and nothing due a tick reads only the local
//! mailbox: no SSH at all.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::Serialize;

use crate::delegate::Delegate;
use crate::error::{Error, Result};
use crate::ops::schedule::Fired;
use crate::ops::sync::SyncSummary;

/// The lock file in the data directory that one dispatcher per mailbox holds.
pub const LOCK_FILE: &str = "dispatch.lock";

/// What one tick did.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    /// The sync it ran (`None`: nothing was in flight or queued, so no host was contacted).
    pub synced: Option<SyncSummary>,
    pub fired: Vec<Fired>,
    /// Tasks still in flight or queued after the tick: the next tick syncs again.
    pub busy: bool,
    /// The earliest schedule slot still to come (RFC 3339).
    pub next_due: Option<String>,
}

impl Delegate {
    /// Whether any task is in flight or waiting for a slot.
    pub fn has_work_in_flight(&self) -> Result<bool> {
        Ok(!self.store().in_flight()?.is_empty() || !self.store().queued()?.is_empty())
    }

    /// One dispatcher tick at clock `now`.
    pub async fn dispatch_tick(&mut self, now: Timestamp) -> Result<Tick> {
        let synced = if self.has_work_in_flight()? { Some(self.sync(None).await?) } else { None };
        let fired = self.fire_due(now).await?;
        Ok(Tick { synced, fired, busy: self.has_work_in_flight()?, next_due: self.next_due()?.map(|t| t.to_string()) })
    }
}

/// Held while a dispatcher runs: an exclusive `flock` on [`LOCK_FILE`], released when the
/// process ends however it ends (the kernel drops the lock with the descriptor).
pub struct DispatchLock {
    _file: File,
    pub path: PathBuf,
}

impl DispatchLock {
    /// Takes the lock, or says which process holds it.
    pub fn acquire(data_dir: &Path) -> Result<DispatchLock> {
        use std::io::{Read, Seek, Write};
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, e))?;
        let path = data_dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid: String = pid.chars().filter(char::is_ascii_digit).take(10).collect();
            return Err(Error::DispatcherRunning { pid: if pid.is_empty() { "?".into() } else { pid }, lock: path });
        }
        file.set_len(0).map_err(|e| Error::io(&path, e))?;
        file.rewind().map_err(|e| Error::io(&path, e))?;
        writeln!(file, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
        Ok(DispatchLock { _file: file, path })
    }

    /// The pid of the dispatcher holding the lock for `data_dir`, if one does (a probe that
    /// takes and drops a shared lock, writing nothing).
    pub fn holder(data_dir: &Path) -> Option<String> {
        use std::io::Read;
        let mut file = File::open(data_dir.join(LOCK_FILE)).ok()?;
        // SAFETY: flock on a descriptor we own; the lock goes when `file` is dropped.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
            return None;
        }
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        Some(pid.chars().filter(char::is_ascii_digit).take(10).collect())
    }
}
