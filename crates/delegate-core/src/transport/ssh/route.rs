//! How the bytes of one SSH connection reach its host, the way ssh reaches it:
//!
//! - directly over TCP;
//! - `ProxyJump`: through an SSH connection to a bastion (itself reached by its own route,
//!   host-key-checked and authenticated like any target), on a `direct-tcpip` channel to the
//!   next host. ssh turns `ProxyJump a,b` into `ssh -J a -W host:port b`, so the last hop is
//!   the one that connects to the target and the others form its own route; a hop is
//!   resolved through ssh_config under its own name, and only the first one connected to
//!   may have a ProxyJump or ProxyCommand of its own (the others get `-J` on ssh's command
//!   line, which wins over their config);
//! - `ProxyCommand`: the stdin and stdout of `/bin/sh -c 'exec <command>'`, its stderr
//!   kept (bounded) to explain a failure, and the command killed when the connection ends.
//!
//! Only SSH bytes cross a route: nothing of a task (a prompt) ever reaches an argv here.

use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::{Session, SshTarget};
use crate::error::{Error, Result};

/// How a target is reached; see the module documentation.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    #[default]
    Direct,
    /// Through this bastion (with its own route), on a `direct-tcpip` channel.
    Jump(Box<SshTarget>),
    /// Through this command, its `%` tokens expanded.
    Command(String),
}

impl Route {
    /// The bastions in the order they are connected to, for messages and `ssh -J`; stops at
    /// a hop reached by a ProxyCommand (which then comes back as well).
    pub fn hops(&self) -> (Vec<&SshTarget>, Option<&str>) {
        let mut hops = Vec::new();
        let mut route = self;
        while let Route::Jump(hop) = route {
            hops.push(hop.as_ref());
            route = &hop.route;
        }
        hops.reverse();
        let command = match route {
            Route::Command(c) => Some(c.as_str()),
            _ => None,
        };
        (hops, command)
    }
}

pub use crate::hosts::ssh_config::{JumpHop, parse_jump};

/// What has to live as long as a connection made over a route.
pub(crate) enum Via {
    Direct,
    /// The bastion's connection the channel runs on; dropped (or disconnected) with it.
    Hop(Box<Session>),
    Command(Box<ProxyCommand>),
}

/// Bytes in both directions; what russh runs its client over.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// Opens the byte stream to `t` along its route, and says when the last step to the target
/// began (the server's banner must come within what is left of ConnectTimeout from then).
pub(crate) async fn open(t: &SshTarget) -> Result<(Box<dyn Stream>, Via, std::time::Instant)> {
    let started = std::time::Instant::now();
    match &t.route {
        Route::Direct => {
            let (stream, connected) = super::tcp_connect(t).await?;
            Ok((Box::new(stream), Via::Direct, connected))
        }
        Route::Jump(hop) => {
            let session = connect_boxed(hop).await.map_err(|e| hop_error(hop, e))?;
            let addr = format!("{}:{}", t.hostname, t.port);
            let refused = |why: String| Error::Unreachable {
                host: t.host.clone(),
                addr: addr.clone(),
                source: std::io::Error::other(format!(
                    "bastion {} ({}:{}) could not connect to it: {why}",
                    hop.host, hop.hostname, hop.port
                )),
            };
            let wait = t.timeouts.connect;
            // The originator is informational for sshd; ssh -W sends the same.
            let open = session.handle.channel_open_direct_tcpip(t.hostname.as_str(), t.port.into(), "127.0.0.1", 0);
            let channel = tokio::time::timeout(wait, open)
                .await
                .map_err(|_| refused(format!("no answer within {wait:?}")))?
                .map_err(|e| refused(e.to_string()))?;
            Ok((Box::new(channel.into_stream()), Via::Hop(Box::new(session)), started))
        }
        Route::Command(command) => {
            let (stream, proxy) = ProxyCommand::spawn(t, command)?;
            Ok((stream, Via::Command(Box::new(proxy)), started))
        }
    }
}

/// `Session::connect` for a hop, boxed: the hop's own route may need another hop.
fn connect_boxed(t: &SshTarget) -> Pin<Box<dyn Future<Output = Result<Session>> + Send + '_>> {
    Box::pin(Session::connect(t))
}

/// Names the bastion in what went wrong on the way to it; a failure further along the
/// route already names its own bastion.
pub(crate) fn hop_error(hop: &SshTarget, e: Error) -> Error {
    match e {
        e @ (Error::Hop { .. } | Error::ProxyCommand { .. }) => e,
        e => Error::Hop { hop: hop.host.clone(), addr: format!("{}:{}", hop.hostname, hop.port), source: Box::new(e) },
    }
}

/// Keeps this much of a ProxyCommand's stderr for the error message.
const MAX_PROXY_STDERR: usize = 4096;

/// A running ProxyCommand; killed when dropped (`kill_on_drop`), which is when the
/// connection that uses it ends.
pub(crate) struct ProxyCommand {
    host: String,
    command: String,
    child: tokio::process::Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_done: Option<tokio::task::JoinHandle<()>>,
}

impl ProxyCommand {
    fn spawn(t: &SshTarget, command: &str) -> Result<(Box<dyn Stream>, ProxyCommand)> {
        // As ssh does (it uses $SHELL, falling back to /bin/sh; the library reads no
        // environment): `exec`, so the killed process is the proxy itself.
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("exec {command}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::ProxyCommand {
                host: t.host.clone(),
                command: command.to_string(),
                status: format!("could not be started ({e})"),
                stderr: String::new(),
            })?;
        let (stdin, stdout, mut err) = (
            child.stdin.take().expect("piped"),
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let kept = stderr.clone();
        // Drained to the end so the command never blocks on a full pipe; only the start kept.
        let stderr_done = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut k = kept.lock().expect("proxy stderr");
                let room = MAX_PROXY_STDERR.saturating_sub(k.len());
                k.extend_from_slice(&buf[..n.min(room)]);
            }
        });
        let proxy = ProxyCommand {
            host: t.host.clone(),
            command: command.to_string(),
            child,
            stderr,
            stderr_done: Some(stderr_done),
        };
        Ok((Box::new(tokio::io::join(stdout, stdin)), proxy))
    }

    /// Why the connection failed, when the command has ended (it gets a moment to): its
    /// exit status and what it said on stderr. `None` while it still runs.
    pub(crate) async fn failure(&mut self) -> Option<Error> {
        let status = tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await.ok()?.ok()?;
        if let Some(done) = self.stderr_done.take() {
            let _ = tokio::time::timeout(Duration::from_millis(500), done).await;
        }
        let status = match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
            (Some(code), _) => format!("exited {code}"),
            (None, Some(sig)) => format!("was killed by signal {sig}"),
            _ => "ended".to_string(),
        };
        let stderr = String::from_utf8_lossy(&self.stderr.lock().expect("proxy stderr")).into_owned();
        Some(Error::ProxyCommand {
            host: self.host.clone(),
            command: self.command.clone(),
            status,
            stderr: crate::sanitize::clean_line(stderr.trim(), MAX_PROXY_STDERR),
        })
    }
}

/// `%h %p %r %n %k %%` in a ProxyCommand, as ssh's expand_proxy_command.
pub fn expand_proxy_command(
    raw: &str,
    hostname: &str,
    port: u16,
    user: &str,
    host_arg: &str,
    key_alias: Option<&str>,
) -> std::result::Result<String, String> {
    crate::hosts::ssh_config::percent_expand(raw, |c| {
        Some(match c {
            'h' => hostname.to_string(),
            'p' => port.to_string(),
            'r' => user.to_string(),
            'n' => host_arg.to_string(),
            'k' => key_alias.unwrap_or(host_arg).to_string(),
            _ => return None,
        })
    })
    .map_err(|m| format!("ProxyCommand \"{raw}\": {m}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(user: Option<&str>, host: &str, port: Option<u16>) -> JumpHop {
        JumpHop { user: user.map(str::to_string), host: host.into(), port }
    }

    #[test]
    fn jump_lists_parse_like_openssh() {
        assert_eq!(parse_jump("b").unwrap(), [hop(None, "b", None)]);
        assert_eq!(
            parse_jump("u@a:2222,b,ssh://v;x=1@c:23,[::1]:24,w@x@d").unwrap(),
            [
                hop(Some("u"), "a", Some(2222)),
                hop(None, "b", None),
                hop(Some("v"), "c", Some(23)),
                hop(None, "::1", Some(24)),
                hop(Some("w@x"), "d", None),
            ]
        );
        for bad in ["a:0", "a:x", "@a", "a,", ":22", "ssh://a:22/path", "[::1"] {
            assert!(parse_jump(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn proxy_command_tokens() {
        let e = expand_proxy_command("nc %h %p # %r %n %k %%", "10.0.0.1", 2222, "bob", "alias", None).unwrap();
        assert_eq!(e, "nc 10.0.0.1 2222 # bob alias alias %");
        assert!(expand_proxy_command("nc %x", "h", 22, "u", "n", None).is_err());
    }
}
