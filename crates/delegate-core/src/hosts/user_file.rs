//! Read-modify-write of a file the user owns, such as the inventory: serialized between
//! processes, written atomically, and through a symlink rather than over it.
//!
//! Two `delegate hosts add` run at once must not lose one of the edits, so the whole
//! read-modify-write holds an exclusive `flock` on a lock file beside the real file. The new
//! text goes to a temp file in the real file's directory (a rename is atomic only within one
//! file system) and is renamed over it. Dotfile managers (stow, chezmoi, home-manager) make the
//! config a symlink into a repository: renaming onto the link's path would replace the link
//! with a plain file, so the write goes to the file the link points to.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// As Linux's MAXSYMLINKS: a longer chain is a loop.
const MAX_SYMLINK_HOPS: usize = 40;

/// An exclusive lock on `<real file>.lock`, held until dropped (closing the descriptor
/// releases it, also when the process dies).
pub struct EditLock {
    /// The file edits are written to: the given path with every symlink followed.
    pub target: PathBuf,
    _lock: File,
}

impl EditLock {
    /// Follows `path`'s symlinks, creates the target's directory (0700, since the inventory
    /// names commands delegate runs) if missing, and waits for the lock.
    pub fn acquire(path: &Path) -> io::Result<EditLock> {
        let target = follow_symlinks(path)?;
        if let Some(dir) = target.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        let lock_path = sibling(&target, ".lock");
        let lock = std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(&lock_path)?;
        lock_exclusive(&lock)?;
        Ok(EditLock { target, _lock: lock })
    }

    /// Replaces the target's content with `text`: a temp file beside it, given the target's
    /// mode (0600 for a new file) before any byte is written, synced, then renamed over it.
    pub fn replace(&self, text: &[u8]) -> io::Result<()> {
        let mode = std::fs::metadata(&self.target).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o600);
        // Unique per process, so even a writer that skipped the lock cannot share it.
        let tmp = sibling(&self.target, &format!(".{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let written = (|| {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            f.write_all(text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.target)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        // The rename is durable once the directory entry is.
        if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// `path` with every symlink in its last component followed (a dangling link gives the path
/// it points to, so a first edit creates the linked file). Directories along the way need no
/// resolving: the rename happens inside whatever directory the kernel resolves them to.
pub fn follow_symlinks(path: &Path) -> io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..MAX_SYMLINK_HOPS {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&p)?;
                p = match p.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
            }
            Ok(_) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(p),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!("more than {MAX_SYMLINK_HOPS} symlinks in a row (a loop?)")))
}

/// `dir/name` + `suffix` beside `path`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

fn lock_exclusive(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: the descriptor is owned by `file` and stays open for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dlg-userfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_chain_of_relative_and_dangling_links_is_followed_to_the_file() {
        let dir = scratch("chain");
        std::fs::create_dir(dir.join("dots")).unwrap();
        std::os::unix::fs::symlink("dots/one.toml", dir.join("config.toml")).unwrap();
        std::os::unix::fs::symlink("two.toml", dir.join("dots/one.toml")).unwrap();
        assert_eq!(follow_symlinks(&dir.join("config.toml")).unwrap(), dir.join("dots/two.toml"));

        let lock = EditLock::acquire(&dir.join("config.toml")).unwrap();
        lock.replace(b"x = 1\n").unwrap();
        assert_eq!(std::fs::read(dir.join("dots/two.toml")).unwrap(), b"x = 1\n");
        assert!(std::fs::symlink_metadata(dir.join("config.toml")).unwrap().file_type().is_symlink());
        assert!(std::fs::symlink_metadata(dir.join("dots/one.toml")).unwrap().file_type().is_symlink());
        drop(lock);

        std::os::unix::fs::symlink("loop-b", dir.join("loop-a")).unwrap();
        std::os::unix::fs::symlink("loop-a", dir.join("loop-b")).unwrap();
        let err = follow_symlinks(&dir.join("loop-a")).unwrap_err();
        assert!(err.to_string().contains("symlinks in a row"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
