//! The daemon's side of the warm path: a [`Pool`] served on a Unix socket.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};

use super::wire::{self, DaemonStatus, Request, Response};
use crate::transport::pool::Pool;

pub struct ServeOptions {
    pub socket: PathBuf,
    /// Exit after this long without a request (OpenSSH's ControlPersist).
    pub persist: Duration,
    /// Keep a resident shell on each connection (see `ssh::resident`); `false`: one exec
    /// per script.
    pub resident: bool,
    /// The directory of the mailbox the commands using this daemon open: the daemon keeps
    /// it open (see [`crate::mailbox::Holder`]) so that no command rebuilds its WAL index.
    pub mailbox: Option<PathBuf>,
}

struct State {
    pool: Pool,
    /// Requests being read or run; the daemon never idles out under one.
    active: AtomicUsize,
    served: AtomicU64,
    /// When the last exec ended (status queries do not count as use).
    last: Mutex<Instant>,
    stop: tokio::sync::Notify,
    persist: Duration,
}

/// Counts a request as active for as long as it is handled.
struct Active<'a>(&'a State);

impl<'a> Active<'a> {
    fn new(state: &'a State) -> Active<'a> {
        state.active.fetch_add(1, Ordering::SeqCst);
        Active(state)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How often the daemon checks its socket and its idle time.
const TICK: Duration = Duration::from_millis(200);
/// A client gets this long to send its whole request.
const READ_WAIT: Duration = Duration::from_secs(60);

/// Serves until idle for `persist`, stopped, or its socket is removed or replaced. Returns
/// at once when another daemon already holds the socket's lock.
pub async fn serve(opts: ServeOptions) -> std::io::Result<()> {
    super::prepare_socket_dir(&opts.socket)?;
    // One daemon per socket: the lock is held for the daemon's whole life, so two commands
    // starting a daemon at once end up with one.
    let lock_path = lock_path(&opts.socket);
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(&lock_path)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Ok(());
    }
    match std::fs::remove_file(&opts.socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&opts.socket)?;
    std::fs::set_permissions(&opts.socket, std::fs::Permissions::from_mode(0o600))?;
    let inode = std::fs::metadata(&opts.socket)?.ino();

    let pool = Pool::new();
    pool.set_resident(opts.resident);
    let state = Arc::new(State {
        pool,
        active: AtomicUsize::new(0),
        served: AtomicU64::new(0),
        last: Mutex::new(Instant::now()),
        stop: tokio::sync::Notify::new(),
        persist: opts.persist,
    });
    // SAFETY: geteuid has no failure mode.
    let uid = unsafe { libc::geteuid() };
    // Taken at once, or at a later tick when the mailbox is not there yet.
    let mut held = None;
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                // The directory and the socket's mode already keep others out; this holds
                // even if someone loosens them.
                if stream.peer_cred().map(|c| c.uid()).ok() != Some(uid) {
                    continue;
                }
                let state = state.clone();
                tokio::spawn(async move { handle(&state, stream).await });
            }
            _ = tick.tick() => {
                if !still_ours(&opts.socket, inode) {
                    break;
                }
                if held.is_none() && let Some(dir) = &opts.mailbox {
                    held = crate::mailbox::Holder::open(dir);
                }
                let idle = state.last.lock().expect("warm state lock").elapsed();
                if state.active.load(Ordering::SeqCst) == 0 && idle >= state.persist {
                    break;
                }
            }
            _ = state.stop.notified() => break,
        }
    }
    // Stop taking requests first, then let the ones in flight finish (each has its limit).
    drop(listener);
    if still_ours(&opts.socket, inode) {
        let _ = std::fs::remove_file(&opts.socket);
    }
    while state.active.load(Ordering::SeqCst) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    state.pool.close_all().await;
    drop(lock);
    Ok(())
}

fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    socket.with_file_name(name)
}

/// False once the socket file is gone or is another daemon's (a removed data directory, a
/// user cleaning up): this daemon is then unreachable and should not linger.
fn still_ours(socket: &Path, inode: u64) -> bool {
    std::fs::symlink_metadata(socket).is_ok_and(|m| m.ino() == inode)
}

async fn handle(state: &State, mut stream: UnixStream) {
    let _active = Active::new(state);
    let Ok(Ok(request)) = tokio::time::timeout(READ_WAIT, wire::read_header::<_, Request>(&mut stream)).await else {
        return;
    };
    match request {
        Request::Exec { build, target, command, limit_ms, stdin_len } => {
            if build != wire::build_id() {
                // A command of another build: it goes direct, and this daemon makes way
                // for one of the new build.
                let why = format!("the daemon is {}, the command is {build}", wire::build_id());
                let _ = stream.write_all(&[wire::NAK]).await;
                let _ = wire::write_frame(&mut stream, &Response::Refused { why }, &[]).await;
                state.stop.notify_one();
                return;
            }
            let Ok(Ok(stdin)) = tokio::time::timeout(READ_WAIT, wire::read_body(&mut stream, stdin_len)).await else {
                return;
            };
            // The ACK promises the client that the request is taken; if it cannot be
            // delivered, the client falls back, so nothing may run.
            if stream.write_all(&[wire::ACK]).await.is_err() {
                return;
            }
            state.served.fetch_add(1, Ordering::SeqCst);
            let limit = Duration::from_millis(limit_ms);
            let result = state.pool.exec(&target, &command, &stdin, limit).await;
            *state.last.lock().expect("warm state lock") = Instant::now();
            let _ = match result {
                Ok((out, conn)) => {
                    wire::write_frame(&mut stream, &Response::ran(&out, &conn), &[&out.stdout, &out.stderr]).await
                }
                Err(e) => wire::write_frame(&mut stream, &Response::Failed { error: (&e).into() }, &[]).await,
            };
        }
        Request::Status { .. } => {
            let idle = state.last.lock().expect("warm state lock").elapsed();
            let status = DaemonStatus {
                pid: std::process::id(),
                build: wire::build_id(),
                connections: state.pool.live_connections(),
                requests_served: state.served.load(Ordering::SeqCst),
                idle_secs: idle.as_secs(),
                persist_secs: state.persist.as_secs(),
            };
            let _ = stream.write_all(&[wire::ACK]).await;
            let _ = wire::write_frame(&mut stream, &Response::Status(status), &[]).await;
        }
        Request::Stop { .. } => {
            let _ = stream.write_all(&[wire::ACK]).await;
            let _ = wire::write_frame(&mut stream, &Response::Stopping, &[]).await;
            state.stop.notify_one();
        }
    }
}
