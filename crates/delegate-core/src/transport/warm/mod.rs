//! The warm path: a local background process (the "warm daemon") holds SSH connections so
//! that repeated, short-lived `delegate` commands to the same hosts skip the TCP, key
//! exchange and authentication round trips, like OpenSSH's ControlPersist.
//!
//! - The daemon is the same [`Pool`](crate::transport::pool::Pool) a long-lived library user has,
//!   served over a Unix socket: a command hands it (target, command, stdin, limit) and gets
//!   the exec's output back. It verifies host keys and authenticates exactly as a direct
//!   connection would, with the target the command resolved.
//! - Owner-only: the socket sits in a directory only the user can enter, has mode 0600, and
//!   the daemon checks each peer's uid (`SO_PEERCRED`) against its own.
//! - Started on demand by the first command that finds no daemon (the embedding program
//!   supplies how, see [`WarmClient::with_starter`]); it exits after `persist` without a
//!   request, when its socket is removed or replaced, or on `Stop`.
//! - Anything wrong with the daemon (absent, another build, unreachable socket) makes the
//!   command connect directly. Falling back can never run a command twice: the daemon
//!   acknowledges a request before it runs it, and the client only falls back when no
//!   acknowledgement came; a lost answer after it is reported as a broken connection.

mod client;
mod server;
pub mod wire;

pub use client::{WarmClient, WarmOutcome};
pub use server::{ServeOptions, serve};
pub use wire::DaemonStatus;

use std::path::{Path, PathBuf};

/// Unix socket paths are limited to 108 bytes (`sun_path`), less the NUL.
const MAX_SOCKET_PATH: usize = 100;

/// Where the daemon for the mailbox in `data_dir` listens: `<data_dir>/warm/sock`, or, when
/// that path is too long for a Unix socket, a short path under `/tmp/delegate-<uid>/`
/// named by a hash of the data dir. Both directories are created 0700 by
/// [`prepare_socket_dir`].
pub fn socket_path(data_dir: &Path) -> PathBuf {
    let preferred = data_dir.join("warm").join("sock");
    if preferred.as_os_str().len() <= MAX_SOCKET_PATH {
        return preferred;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    let short: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    // SAFETY: geteuid has no failure mode.
    let uid = unsafe { libc::geteuid() };
    PathBuf::from(format!("/tmp/delegate-{uid}")).join(format!("{short}.sock"))
}

/// Creates the socket's directory with mode 0700 and checks that it is ours and closed to
/// others (a directory someone else made in /tmp must not hold our socket).
pub fn prepare_socket_dir(socket: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let dir = socket.parent().ok_or_else(|| std::io::Error::other("socket path has no directory"))?;
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no failure mode.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != uid {
        return Err(std::io::Error::other(format!("{} is not a directory owned by uid {uid}", dir.display())));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_data_dirs_get_a_short_socket_path() {
        let short = socket_path(Path::new("/home/u/.local/share/delegate"));
        assert_eq!(short, Path::new("/home/u/.local/share/delegate/warm/sock"));
        let long_dir = PathBuf::from(format!("/tmp/{}", "x".repeat(120)));
        let p = socket_path(&long_dir);
        assert!(p.as_os_str().len() <= MAX_SOCKET_PATH, "{p:?}");
        assert!(p.to_string_lossy().starts_with("/tmp/delegate-"), "{p:?}");
        assert_ne!(p, socket_path(&long_dir.join("other")), "different mailboxes, different daemons");
    }
}
