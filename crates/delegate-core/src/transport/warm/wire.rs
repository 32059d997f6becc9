//! What travels over the warm daemon's socket. One request per socket connection:
//!
//! ```text
//! client → daemon   u32 length, JSON Request, then `stdin_len` raw bytes
//! daemon → client   one ACK byte once the whole request is in (nothing runs before it)
//! daemon → client   u32 length, JSON Response, then stdout and stderr raw bytes
//! ```
//!
//! The ACK is what makes falling back to a direct connection safe: without it the client
//! knows the daemon ran nothing; after it, a lost answer means "unknown", never "retry".
//! Raw bytes stay out of the JSON so a prompt is never escaped, copied or logged twice.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::Error;
use crate::transport::pool::Connection;
use crate::transport::ssh::{ConnectTimings, Exit, SshTarget};

/// Sent by the daemon once a whole request has been read.
pub const ACK: u8 = 0x06;
/// Sent instead of [`ACK`] when the daemon will not run the request; a `Refused` follows.
pub const NAK: u8 = 0x15;

/// A build only talks to a daemon of the same build: the wire format and the semantics of
/// every call may change between versions.
pub fn build_id() -> String {
    // wire 2: the target carries its route (ProxyJump/ProxyCommand) and transport.
    // wire 3: `Ran` says whether the output went over the exec cap.
    format!("delegate-core {} wire 3", env!("CARGO_PKG_VERSION"))
}

/// Bounds so a confused peer cannot make either side allocate without limit.
pub const MAX_HEADER: usize = 1 << 20;
pub const MAX_BODY: usize = 64 << 20;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    Exec { build: String, target: Box<SshTarget>, command: String, limit_ms: u64, stdin_len: usize },
    Status { build: String },
    Stop { build: String },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// The command ran (or the connection broke while it did: see `broken`).
    Ran {
        exit: Exit,
        broken: Option<String>,
        fresh: Option<ConnectTimings>,
        stdout_len: usize,
        stderr_len: usize,
        /// The output went over [`crate::transport::ssh::MAX_EXEC_OUTPUT`]: the daemon stopped reading.
        #[serde(default)]
        overflow: bool,
    },
    /// Nothing was sent to the host: connecting or opening the channel failed.
    Failed {
        error: WireError,
    },
    /// The daemon will not serve this request (another build); nothing ran.
    Refused {
        why: String,
    },
    Status(DaemonStatus),
    Stopping,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DaemonStatus {
    pub pid: u32,
    pub build: String,
    /// Hosts with an open connection.
    pub connections: usize,
    pub requests_served: u64,
    pub idle_secs: u64,
    pub persist_secs: u64,
}

/// The errors a pooled exec can end in, with what the CLI needs to print them and pick
/// the same exit code as a direct connection would.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireError {
    HostKeyUnknown {
        host: String,
        lookup: String,
        key_type: String,
        fingerprint: String,
    },
    HostKeyChanged {
        host: String,
        lookup: String,
        key_type: String,
        fingerprint: String,
        file: std::path::PathBuf,
        line: usize,
        recorded: String,
    },
    HostKeyRevoked {
        host: String,
        lookup: String,
        fingerprint: String,
        file: std::path::PathBuf,
        line: usize,
    },
    Unreachable {
        host: String,
        addr: String,
        message: String,
        os_error: Option<i32>,
    },
    Timeout {
        host: String,
        phase: String,
        waited_ms: u64,
    },
    AuthRefused {
        host: String,
        user: String,
        tried: Vec<String>,
    },
    Ssh {
        host: String,
        phase: String,
        message: String,
    },
    /// Anything else (a bad known_hosts file, ...). It arose before anything was sent, so
    /// the client repeats the exec itself and gets the exact error (and exit code) locally.
    Other {
        message: String,
    },
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> WireError {
        match e {
            Error::HostKeyUnknown { host, lookup, key_type, fingerprint } => WireError::HostKeyUnknown {
                host: host.clone(),
                lookup: lookup.clone(),
                key_type: key_type.clone(),
                fingerprint: fingerprint.clone(),
            },
            Error::HostKeyChanged { host, lookup, key_type, fingerprint, file, line, recorded } => {
                WireError::HostKeyChanged {
                    host: host.clone(),
                    lookup: lookup.clone(),
                    key_type: key_type.clone(),
                    fingerprint: fingerprint.clone(),
                    file: file.clone(),
                    line: *line,
                    recorded: recorded.clone(),
                }
            }
            Error::HostKeyRevoked { host, lookup, fingerprint, file, line } => WireError::HostKeyRevoked {
                host: host.clone(),
                lookup: lookup.clone(),
                fingerprint: fingerprint.clone(),
                file: file.clone(),
                line: *line,
            },
            Error::Unreachable { host, addr, source } => WireError::Unreachable {
                host: host.clone(),
                addr: addr.clone(),
                message: source.to_string(),
                os_error: source.raw_os_error(),
            },
            Error::Timeout { host, phase, waited } => WireError::Timeout {
                host: host.clone(),
                phase: phase.to_string(),
                waited_ms: waited.as_millis() as u64,
            },
            Error::AuthRefused { host, user, tried } => {
                WireError::AuthRefused { host: host.clone(), user: user.clone(), tried: tried.clone() }
            }
            Error::Ssh { host, phase, source } => {
                WireError::Ssh { host: host.clone(), phase: phase.to_string(), message: source.to_string() }
            }
            other => WireError::Other { message: other.to_string() },
        }
    }
}

/// The library's phases are static strings; map the known ones back so callers that match
/// on them (the pool's retry) see the same value as from a direct connection.
fn static_phase(phase: &str) -> &'static str {
    const KNOWN: [&str; 7] = [
        "resolving its address",
        "connecting",
        "exchanging keys",
        "authenticating",
        "waiting for a channel",
        "opening a channel",
        "starting the command",
    ];
    KNOWN.iter().find(|k| **k == phase).copied().unwrap_or("talking to the warm daemon")
}

impl WireError {
    /// The library error this stands for; `None` for [`WireError::Other`].
    pub fn into_error(self) -> Option<Error> {
        Some(match self {
            WireError::HostKeyUnknown { host, lookup, key_type, fingerprint } => {
                Error::HostKeyUnknown { host, lookup, key_type, fingerprint }
            }
            WireError::HostKeyChanged { host, lookup, key_type, fingerprint, file, line, recorded } => {
                Error::HostKeyChanged { host, lookup, key_type, fingerprint, file, line, recorded }
            }
            WireError::HostKeyRevoked { host, lookup, fingerprint, file, line } => {
                Error::HostKeyRevoked { host, lookup, fingerprint, file, line }
            }
            WireError::Unreachable { host, addr, message, os_error } => {
                let source = match os_error {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::other(message),
                };
                Error::Unreachable { host, addr, source }
            }
            WireError::Timeout { host, phase, waited_ms } => {
                Error::Timeout { host, phase: static_phase(&phase), waited: Duration::from_millis(waited_ms) }
            }
            WireError::AuthRefused { host, user, tried } => Error::AuthRefused { host, user, tried },
            WireError::Ssh { host, phase, message } => Error::Ssh {
                host,
                phase: static_phase(&phase),
                source: russh::Error::IO(std::io::Error::other(message)),
            },
            WireError::Other { .. } => return None,
        })
    }
}

impl Response {
    pub fn ran(out: &crate::transport::ssh::ExecOutput, conn: &Connection) -> Response {
        Response::Ran {
            exit: out.exit.clone(),
            broken: out.broken.clone(),
            fresh: conn.fresh.clone(),
            stdout_len: out.stdout.len(),
            stderr_len: out.stderr.len(),
            overflow: out.overflow,
        }
    }
}

/// Writes a length-prefixed JSON header followed by raw bodies.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    header: &T,
    bodies: &[&[u8]],
) -> std::io::Result<()> {
    let json = serde_json::to_vec(header).map_err(std::io::Error::other)?;
    w.write_all(&(json.len() as u32).to_be_bytes()).await?;
    w.write_all(&json).await?;
    for b in bodies {
        w.write_all(b).await?;
    }
    w.flush().await
}

/// Reads a length-prefixed JSON header.
pub async fn read_header<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(r: &mut R) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_HEADER {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("header of {len} bytes")));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    serde_json::from_slice(&buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Reads exactly `len` raw bytes (bounded by [`MAX_BODY`]).
pub async fn read_body<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> std::io::Result<Vec<u8>> {
    if len > MAX_BODY {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("body of {len} bytes")));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}
