//! The command's side of the warm path.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

use super::wire::{self, Request, Response};
use crate::error::Result;
use crate::transport::pool::Connection;
use crate::transport::ssh::{ExecOutput, SshTarget};

/// Starts a daemon listening on the given socket (the embedding program knows how: the
/// CLI runs itself as `delegate warm serve`). Must return quickly; the client then waits
/// for the socket to accept.
pub type Starter = Arc<dyn Fn(&Path) -> std::io::Result<()> + Send + Sync>;

/// How long a freshly started daemon gets to open its socket before the command goes
/// direct instead.
const START_WAIT: Duration = Duration::from_millis(1500);
/// The daemon acknowledges as soon as it has read the request; a daemon that does not
/// within this time is treated as hung.
const ACK_WAIT: Duration = Duration::from_secs(10);
/// On top of the exec's own limit: connecting, if the daemon has to.
const ANSWER_SLACK: Duration = Duration::from_secs(60);

pub struct WarmClient {
    socket: PathBuf,
    starter: Option<Starter>,
    /// One start attempt per process (`Some(came up)` once made): if it did not come up,
    /// go direct from then on rather than paying the wait on every exec.
    started: tokio::sync::Mutex<Option<bool>>,
}

/// What asking the daemon gave.
pub enum WarmOutcome {
    /// The daemon took the request: its result, exactly as a direct exec would give it.
    Done(Result<(ExecOutput, Connection)>),
    /// The daemon ran nothing (absent, another build, refused): connect directly.
    Unavailable(String),
}

impl WarmClient {
    pub fn new(socket: PathBuf) -> WarmClient {
        WarmClient { socket, starter: None, started: tokio::sync::Mutex::new(None) }
    }

    /// Lets the client start a daemon when none answers.
    pub fn with_starter(mut self, starter: Starter) -> WarmClient {
        self.starter = Some(starter);
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A connection to a live daemon, starting one if allowed and none answers.
    async fn connect(&self) -> std::result::Result<UnixStream, String> {
        let first_try = match UnixStream::connect(&self.socket).await {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        let Some(starter) = &self.starter else {
            return Err(format!("no warm daemon at {}: {first_try}", self.socket.display()));
        };
        // Concurrent execs of one process (a fan-out) wait for the one start attempt and
        // then all use the daemon it brought up.
        let mut started = self.started.lock().await;
        match *started {
            Some(true) => {
                return UnixStream::connect(&self.socket).await.map_err(|e| format!("warm daemon gone: {e}"));
            }
            Some(false) => return Err("the warm daemon did not start earlier in this process".into()),
            None => {}
        }
        *started = Some(false);
        // Someone else may have started it meanwhile.
        if let Ok(s) = UnixStream::connect(&self.socket).await {
            *started = Some(true);
            return Ok(s);
        }
        super::prepare_socket_dir(&self.socket).map_err(|e| format!("warm socket directory: {e}"))?;
        starter(&self.socket).map_err(|e| format!("cannot start the warm daemon: {e}"))?;
        let begun = Instant::now();
        loop {
            match UnixStream::connect(&self.socket).await {
                Ok(s) => {
                    *started = Some(true);
                    return Ok(s);
                }
                Err(e) if begun.elapsed() > START_WAIT => {
                    return Err(format!("the warm daemon did not open {} in time: {e}", self.socket.display()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(3)).await,
            }
        }
    }

    /// Runs `command` with `stdin` on `t` through the daemon.
    pub async fn exec(&self, t: &SshTarget, command: &str, stdin: &[u8], limit: Duration) -> WarmOutcome {
        let mut stream = match self.connect().await {
            Ok(s) => s,
            Err(why) => return WarmOutcome::Unavailable(why),
        };
        let request = Request::Exec {
            build: wire::build_id(),
            target: Box::new(t.clone()),
            command: command.to_string(),
            limit_ms: limit.as_millis() as u64,
            stdin_len: stdin.len(),
        };
        // A failed write means the daemon did not read the whole request, so it runs nothing.
        if let Err(e) = wire::write_frame(&mut stream, &request, &[stdin]).await {
            return WarmOutcome::Unavailable(format!("warm daemon closed the request: {e}"));
        }
        let mut ack = [0u8; 1];
        match tokio::time::timeout(ACK_WAIT, stream.read_exact(&mut ack)).await {
            Ok(Ok(_)) if ack[0] == wire::ACK => {}
            // A refusal comes instead of the ACK, with its reason; nothing ran.
            Ok(Ok(_)) => {
                let why = match wire::read_header::<_, Response>(&mut stream).await {
                    Ok(Response::Refused { why }) => why,
                    _ => "no reason given".into(),
                };
                return WarmOutcome::Unavailable(format!("warm daemon refused the request: {why}"));
            }
            Ok(Err(e)) => {
                return WarmOutcome::Unavailable(format!("warm daemon hung up before taking the request: {e}"));
            }
            // It may still take it after we stop waiting: from here on only "unknown".
            Err(_) => return WarmOutcome::Done(Ok(lost(t, "the warm daemon stopped answering"))),
        }
        let answer = async {
            let response: Response = wire::read_header(&mut stream).await?;
            match response {
                Response::Ran { exit, broken, fresh, stdout_len, stderr_len, overflow } => {
                    // The daemon keeps at most MAX_EXEC_OUTPUT of each stream; a longer
                    // body is refused before it is allocated.
                    for len in [stdout_len, stderr_len] {
                        if len > crate::transport::ssh::MAX_EXEC_OUTPUT {
                            return Err(std::io::Error::other(format!("an output of {len} bytes")));
                        }
                    }
                    let stdout = wire::read_body(&mut stream, stdout_len).await?;
                    let stderr = wire::read_body(&mut stream, stderr_len).await?;
                    let out = ExecOutput { stdout, stderr, exit, broken, overflow };
                    Ok(Ok((out, Connection { fresh, warm: true })))
                }
                Response::Failed { error } => Ok(Err(error)),
                other => Err(std::io::Error::other(format!("unexpected answer {other:?}"))),
            }
        };
        match tokio::time::timeout(limit + ANSWER_SLACK, answer).await {
            Ok(Ok(Ok(done))) => WarmOutcome::Done(Ok(done)),
            Ok(Ok(Err(wire_error))) => match wire_error.into_error() {
                Some(e) => WarmOutcome::Done(Err(e)),
                None => WarmOutcome::Unavailable("the warm daemon hit an error to reproduce locally".into()),
            },
            Ok(Err(e)) => WarmOutcome::Done(Ok(lost(t, &format!("the warm daemon's answer was lost: {e}")))),
            Err(_) => WarmOutcome::Done(Ok(lost(t, "the warm daemon did not answer in time"))),
        }
    }

    /// The daemon's status, if one answers (never starts one).
    pub async fn status(&self) -> Option<super::DaemonStatus> {
        match self.simple(Request::Status { build: wire::build_id() }).await? {
            Response::Status(s) => Some(s),
            _ => None,
        }
    }

    /// Asks a running daemon to exit; `true` if one answered.
    pub async fn stop(&self) -> bool {
        matches!(self.simple(Request::Stop { build: wire::build_id() }).await, Some(Response::Stopping))
    }

    async fn simple(&self, request: Request) -> Option<Response> {
        let mut stream = UnixStream::connect(&self.socket).await.ok()?;
        let talk = async {
            wire::write_frame(&mut stream, &request, &[]).await?;
            let mut ack = [0u8; 1];
            stream.read_exact(&mut ack).await?;
            wire::read_header::<_, Response>(&mut stream).await
        };
        tokio::time::timeout(Duration::from_secs(5), talk).await.ok()?.ok()
    }
}

/// The answer for an exec whose fate is unknown: the daemon took it and then went quiet.
fn lost(t: &SshTarget, why: &str) -> (ExecOutput, Connection) {
    let out = ExecOutput { broken: Some(format!("{why} (host {})", t.host)), ..ExecOutput::default() };
    (out, Connection { fresh: None, warm: true })
}
