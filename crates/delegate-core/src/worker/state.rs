//! The worker's memory across restarts: the tasks it launched and has not finished
//! reporting, with the offsets of the bytes already published for each
//! (`<remote root>/workers/<id>/tasks.json`, mode 600, replaced by an atomic rename).
//!
//! Replicas of one id sharing one task tree share this file: each change is a read, modify
//! and rename under `tasks.lock` (flock, held for milliseconds), and whoever holds
//! `watch.lock` (taken once and kept for the process's life) watches every task in it, so a
//! task is watched by one process at a time and a restarted (or another) replica carries on
//! where the last one stopped.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The state file is the worker's own, but a damaged one should not take a worker down
/// with an out-of-memory: far above what thousands of tasks need.
const MAX_STATE_FILE: u64 = 16 << 20;

/// One task being watched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watched {
    pub mailbox: String,
    pub session: String,
    pub nonce: String,
    /// The remote root the lead's launch script named (`~/` expanded by the scripts).
    pub root: String,
    /// Bytes of each synced file already published (and acknowledged by the server).
    #[serde(default)]
    pub offsets: BTreeMap<String, u64>,
    /// Whether the session was alive at the last publish (`None` before the first).
    #[serde(default)]
    pub session_alive: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// By task key.
    #[serde(default)]
    pub tasks: BTreeMap<String, Watched>,
}

/// Where one worker id keeps its state under a (local, expanded) remote root.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config { path: path.to_path_buf(), message: format!("worker state: {what}: {e}") }
}

/// The lock on a worker id's state file, released when dropped.
pub struct Locked {
    _file: File,
}

impl StateDir {
    /// `<root>/workers/<id>`, made (mode 700) if missing.
    pub fn open(root: &Path, id: &str) -> Result<StateDir> {
        let dir = root.join("workers").join(id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_err(&dir, "cannot create", e))?;
        Ok(StateDir { dir })
    }

    /// `<root>/workers/<id>`
    pub fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join("tasks.json")
    }

    /// Takes the lock `name` (`tasks` or `watch`), waiting for it (`wait`) or not (`None`
    /// when another process holds it).
    pub fn lock(&self, name: &str, wait: bool) -> Result<Option<Locked>> {
        let path = self.dir.join(format!("{name}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_err(&path, "cannot open", e))?;
        let got = if wait {
            file.lock().map(|()| true)
        } else {
            file.try_lock().map(|()| true).or_else(|e| match e {
                std::fs::TryLockError::WouldBlock => Ok(false),
                std::fs::TryLockError::Error(e) => Err(e),
            })
        };
        match got {
            Ok(true) => Ok(Some(Locked { _file: file })),
            Ok(false) => Ok(None),
            Err(e) => Err(io_err(&path, "cannot lock", e)),
        }
    }

    /// Reads the state (empty when there is none yet). Call with the lock held.
    pub fn load(&self, _lock: &Locked) -> Result<State> {
        let path = self.file();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(io_err(&path, "cannot read", e)),
        };
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_STATE_FILE + 1), &mut text)
            .map_err(|e| io_err(&path, "cannot read", e))?;
        if text.len() as u64 > MAX_STATE_FILE {
            return Err(io_err(&path, "too large", format!("over {MAX_STATE_FILE} bytes")));
        }
        serde_json::from_slice(&text).map_err(|e| io_err(&path, "not valid JSON (move it aside to start afresh)", e))
    }

    /// Replaces the state whole: a temporary file, fsync, rename. Call with the lock held.
    pub fn save(&self, _lock: &Locked, state: &State) -> Result<()> {
        let path = self.file();
        let tmp = self.dir.join(format!("tasks.json.{}.tmp", std::process::id()));
        let body = serde_json::to_vec_pretty(state).map_err(|e| io_err(&path, "cannot encode", e))?;
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err(&path, "cannot write", e)
        })
    }

    /// Reads the state under the lock.
    pub fn read(&self) -> Result<State> {
        let lock = self.lock("tasks", true)?.expect("a waiting lock is always taken");
        self.load(&lock)
    }

    /// Changes the state under the lock: `change` gets the tasks as they are now on disk.
    pub fn update(&self, change: impl FnOnce(&mut BTreeMap<String, Watched>)) -> Result<()> {
        let lock = self.lock("tasks", true)?.expect("a waiting lock is always taken");
        let mut state = self.load(&lock)?;
        change(&mut state.tasks);
        self.save(&lock, &state)
    }
}
