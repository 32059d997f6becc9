//! The SSH client: connect, verify the host key, authenticate, exec with stdin, close.
//!
//! A [`Session`] only exists authenticated and host-key-verified. russh sets no timeouts
//! and leaves Nagle on by default, so every network step here has its own deadline,
//! `TCP_NODELAY` is set (a warm exec goes from ~45 ms to ~3 ms), and keepalives run so a
//! silent peer is noticed. Channels are drained until the server closes them and closed
//! explicitly (a dropped russh channel never sends CLOSE and eats sshd's `MaxSessions`).
//! No PTY, no agent or X11 forwarding, no environment passing: launches need none of them.
//! How the bytes get to the host (TCP, a bastion, a ProxyCommand) is [`route`]'s business;
//! [`system`] runs commands through the system `ssh` instead, for hosts that need it.

pub mod route;
pub mod system;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client::{self, Handle};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{Algorithm, HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Preferred};
use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::known_hosts::{self, HostKeyStatus};

/// Deadlines for each network step.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Timeouts {
    /// TCP connect, per resolved address.
    pub connect: Duration,
    /// Banner exchange and key exchange.
    pub handshake: Duration,
    pub auth: Duration,
    /// Keepalive period; after `keepalive_max` unanswered ones the connection is dropped.
    pub keepalive_interval: Duration,
    pub keepalive_max: usize,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            handshake: Duration::from_secs(15),
            auth: Duration::from_secs(15),
            keepalive_interval: Duration::from_secs(15),
            keepalive_max: 3,
        }
    }
}

/// Everything needed to reach one host, already resolved (inventory + ssh config).
/// Serializable so the warm daemon (see [`crate::warm`]) can connect on a command's behalf.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SshTarget {
    /// Inventory name, used in messages.
    pub host: String,
    pub hostname: String,
    pub port: u16,
    pub user: String,
    pub identity_files: Vec<PathBuf>,
    /// ssh-agent socket; `None` disables the agent.
    pub agent_socket: Option<PathBuf>,
    /// `IdentitiesOnly yes`: offer agent keys only when they belong to one of
    /// `identity_files` (matched through the `.pub` file next to it), as OpenSSH does.
    pub identities_only: bool,
    pub known_hosts: Vec<PathBuf>,
    /// Name to look up in known_hosts instead of the hostname (`HostKeyAlias`).
    pub host_key_alias: Option<String>,
    /// `StrictHostKeyChecking accept-new`: learn an unknown key into `known_hosts[0]`.
    /// A changed or revoked key is refused regardless.
    pub accept_new: bool,
    pub timeouts: Timeouts,
    /// How the connection reaches the host (ProxyJump, ProxyCommand or directly).
    #[serde(default)]
    pub route: route::Route,
    /// `transport = "ssh"`: run commands through the system ssh with this argv (up to and
    /// including the host) instead of connecting with russh.
    #[serde(default)]
    pub system_ssh: Option<Vec<String>>,
}

impl SshTarget {
    pub fn lookup_host(&self) -> &str {
        self.host_key_alias.as_deref().unwrap_or(&self.hostname)
    }

    /// OpenSSH never adds the port to a HostKeyAlias: `[alias]:port` is never looked up.
    pub fn lookup_port(&self) -> u16 {
        if self.host_key_alias.is_some() { 22 } else { self.port }
    }
}

/// How long each phase of a connection took, for launch evidence.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ConnectTimings {
    pub tcp_ms: f64,
    pub handshake_ms: f64,
    pub auth_ms: f64,
}

/// An authenticated, host-key-verified connection.
pub struct Session {
    handle: Handle<Verifier>,
    /// The bastion connection or proxy command under this one; dropped with it.
    _via: route::Via,
    target: SshTarget,
    pub timings: ConnectTimings,
    /// The host key the server proved it holds: `<type> SHA256:...`.
    pub host_key: String,
    /// What authenticated: an identity file's path or `ssh-agent key <comment>`, with the
    /// key's type and fingerprint (never anything secret). `delegate doctor` shows it.
    pub identity: String,
}

/// How a remote command ended. `Unknown`: the channel closed with no exit status (the link
/// dropped, or the server never said). Callers must not read it as success.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Exit {
    Code(u32),
    Signal(String),
    Unknown,
}

#[derive(Debug)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: Exit,
    /// Set when the connection failed mid-command; `exit` is then `Unknown`.
    pub broken: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Verify,
    /// Only record the key and refuse it: used by `hosts trust` to show the fingerprint.
    Capture,
}

/// What the host-key callback saw, read back after the handshake.
#[derive(Default)]
struct Seen {
    key: Option<PublicKey>,
    problem: Option<Error>,
}

struct Verifier {
    target: SshTarget,
    mode: Mode,
    seen: Arc<Mutex<Seen>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(&mut self, presented: &PublicKeyOrCertificate) -> Result<bool, russh::Error> {
        let mut seen = self.seen.lock().expect("host key state");
        let PublicKeyOrCertificate::PublicKey { key, .. } = presented else {
            // We never advertise certificate algorithms, so this needs a misbehaving server.
            seen.problem = Some(Error::Config {
                path: PathBuf::from("(host key)"),
                message: format!(
                    "{} presented a host certificate, which delegate does not support yet",
                    self.target.host
                ),
            });
            return Ok(false);
        };
        seen.key = Some(key.clone());
        if self.mode == Mode::Capture {
            return Ok(false);
        }
        let t = &self.target;
        let status = match known_hosts::check(&t.known_hosts, t.lookup_host(), t.lookup_port(), key) {
            Ok(s) => s,
            Err(e) => {
                seen.problem = Some(e.into());
                return Ok(false);
            }
        };
        // A host vouched for only by a CA: refuse and say why, in every mode (accept-new would
        // otherwise learn its plain key and bypass the CA).
        if status == HostKeyStatus::Unknown {
            match known_hosts::cert_authority_for(&t.known_hosts, t.lookup_host(), t.lookup_port()) {
                Ok(None) => {}
                Ok(Some((path, line))) => {
                    let lookup = known_hosts::lookup_name(t.lookup_host(), t.lookup_port());
                    seen.problem =
                        Some(known_hosts::KnownHostsError::CertificatesUnsupported { path, line, lookup }.into());
                    return Ok(false);
                }
                Err(e) => {
                    seen.problem = Some(e.into());
                    return Ok(false);
                }
            }
        }
        if status == HostKeyStatus::Unknown && t.accept_new && !t.known_hosts.is_empty() {
            if let Err(e) = known_hosts::append(&t.known_hosts[0], t.lookup_host(), t.lookup_port(), key) {
                seen.problem = Some(e.into());
                return Ok(false);
            }
            return Ok(true);
        }
        seen.problem = refusal(t, key, status);
        Ok(seen.problem.is_none())
    }
}

/// Why a host key is refused, or `None` when known_hosts vouches for it.
pub(crate) fn refusal(t: &SshTarget, key: &PublicKey, status: HostKeyStatus) -> Option<Error> {
    let host = t.host.clone();
    let lookup = known_hosts::lookup_name(t.lookup_host(), t.lookup_port());
    let fingerprint = known_hosts::fingerprint(key);
    let key_type = key.algorithm().to_string();
    match status {
        HostKeyStatus::Known => None,
        HostKeyStatus::Unknown => Some(Error::HostKeyUnknown { host, lookup, key_type, fingerprint }),
        HostKeyStatus::Changed { file, line, recorded } => {
            Some(Error::HostKeyChanged { host, lookup, key_type, fingerprint, file, line, recorded })
        }
        HostKeyStatus::Revoked { file, line } => Some(Error::HostKeyRevoked { host, lookup, fingerprint, file, line }),
    }
}

/// Host key algorithms in russh's order, minus SHA-1 `ssh-rsa`, with the types already
/// recorded for this host first, as OpenSSH does: otherwise a host known by its RSA key
/// would be asked for its Ed25519 key and look "changed".
fn preferred_host_keys(recorded: &[Algorithm]) -> Vec<Algorithm> {
    let mut all: Vec<Algorithm> =
        Preferred::DEFAULT.key.iter().filter(|a| !matches!(a, Algorithm::Rsa { hash: None })).cloned().collect();
    let rank = |a: &Algorithm| {
        recorded.iter().position(|r| r == a || (r.clone().is_rsa() && a.clone().is_rsa())).unwrap_or(usize::MAX)
    };
    all.sort_by_key(rank); // stable: russh's order within each rank
    all
}

fn client_config(t: &SshTarget, recorded: &[Algorithm]) -> client::Config {
    client::Config {
        nodelay: true,
        keepalive_interval: Some(t.timeouts.keepalive_interval),
        keepalive_max: t.timeouts.keepalive_max,
        preferred: Preferred { key: Cow::Owned(preferred_host_keys(recorded)), ..Preferred::DEFAULT },
        ..Default::default()
    }
}

fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

async fn tcp_connect(t: &SshTarget) -> Result<TcpStream> {
    let addr_text = format!("{}:{}", t.hostname, t.port);
    let unreachable = |source| Error::Unreachable { host: t.host.clone(), addr: addr_text.clone(), source };
    let addrs: Vec<_> =
        tokio::time::timeout(t.timeouts.connect, tokio::net::lookup_host((t.hostname.as_str(), t.port)))
            .await
            .map_err(|_| Error::Timeout {
                host: t.host.clone(),
                phase: "resolving its address",
                waited: t.timeouts.connect,
            })?
            .map_err(unreachable)?
            .collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "the name resolved to no address");
    // Each address gets its own deadline, so one blackholed address cannot eat the kernel's
    // two minutes of SYN retries before the next is tried.
    for addr in addrs {
        match tokio::time::timeout(t.timeouts.connect, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                s.set_nodelay(true).map_err(unreachable)?;
                return Ok(s);
            }
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer from {addr} within {:?}", t.timeouts.connect),
                )
            }
        }
    }
    Err(unreachable(last))
}

/// TCP and key exchange. In `Capture` mode the handshake is refused on purpose once the
/// key is seen, and `None` comes back with the key in `Seen`.
async fn handshake(t: &SshTarget, mode: Mode) -> Result<(Option<Handle<Verifier>>, Seen, ConnectTimings, route::Via)> {
    let mut timings = ConnectTimings::default();
    let started = Instant::now();
    let (stream, mut via) = route::open(t).await?;
    timings.tcp_ms = ms(started);

    let recorded = known_hosts::recorded_algorithms(&t.known_hosts, t.lookup_host(), t.lookup_port())?;
    let config = Arc::new(client_config(t, &recorded));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let verifier = Verifier { target: t.clone(), mode, seen: seen.clone() };
    let kex_started = Instant::now();
    let result = tokio::time::timeout(t.timeouts.handshake, client::connect_stream(config, stream, verifier)).await;
    let mut seen = std::mem::take(&mut *seen.lock().expect("host key state"));
    // A host-key refusal surfaces from russh as a generic error; the callback's own record
    // says what really happened.
    if let Some(problem) = seen.problem.take() {
        return Err(problem);
    }
    timings.handshake_ms = ms(kex_started);
    // A ProxyCommand that died took the connection with it: its status and stderr say why.
    if !matches!(result, Ok(Ok(_)))
        && let route::Via::Command(proxy) = &mut via
        && let Some(failure) = proxy.failure().await
    {
        return Err(failure);
    }
    match result {
        Err(_) => Err(Error::Timeout { host: t.host.clone(), phase: "exchanging keys", waited: t.timeouts.handshake }),
        Ok(Err(_)) if mode == Mode::Capture && seen.key.is_some() => Ok((None, seen, timings, via)),
        Ok(Err(e)) => Err(Error::Ssh { host: t.host.clone(), phase: "exchanging keys", source: e }),
        Ok(Ok(h)) => Ok((Some(h), seen, timings, via)),
    }
}

/// Connects without trusting anything and returns the host key the server presents.
pub async fn fetch_host_key(t: &SshTarget) -> Result<PublicKey> {
    let (_, seen, _, _) = handshake(t, Mode::Capture).await?;
    seen.key.ok_or_else(|| Error::Config {
        path: PathBuf::from("(host key)"),
        message: format!("{} presented no host key", t.host),
    })
}

impl Session {
    /// TCP, key exchange, host-key check and authentication, each under its deadline.
    pub async fn connect(t: &SshTarget) -> Result<Session> {
        let (handle, seen, mut timings, via) = handshake(t, Mode::Verify).await?;
        let mut handle = handle.expect("verify mode yields a handle or an error");
        let host_key = seen.key.as_ref().map(key_label).unwrap_or_default();
        let auth_started = Instant::now();
        let identity = tokio::time::timeout(t.timeouts.auth, authenticate(&mut handle, t))
            .await
            .map_err(|_| Error::Timeout { host: t.host.clone(), phase: "authenticating", waited: t.timeouts.auth })??;
        timings.auth_ms = ms(auth_started);
        Ok(Session { handle, _via: via, target: t.clone(), timings, host_key, identity })
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// The connection is gone (the server hung up, keepalives went unanswered, or it was
    /// closed): a new exec would fail to open its channel.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Runs `command` with `stdin` fed to it and closed, and reads both output streams until
    /// the server closes the channel. A connection that breaks after the command was sent is
    /// reported in `broken` with `Exit::Unknown`, never as an error that hides what was read.
    pub async fn exec(&self, command: &str, stdin: &[u8], limit: Duration) -> Result<ExecOutput> {
        self.exec_bounded(command, stdin, limit, usize::MAX).await
    }

    /// [`Session::exec`] keeping at most `max_bytes` of each output stream: for commands
    /// whose output is only a report (`delegate doctor`), so a brother cannot fill our
    /// memory. The rest is read and dropped, so the channel still ends normally.
    pub async fn exec_bounded(
        &self,
        command: &str,
        stdin: &[u8],
        limit: Duration,
        max_bytes: usize,
    ) -> Result<ExecOutput> {
        let host = self.target.host.clone();
        let ssh_err = |phase, source| Error::Ssh { host: host.clone(), phase, source };
        // A live server answers a channel open in one round trip: one that takes longer than
        // the handshake deadline sits on a dead link that keepalives have not caught yet
        // (a kept connection, after a network change), and the pool then connects afresh.
        let open_wait = limit.min(self.target.timeouts.handshake);
        let channel = tokio::time::timeout(open_wait, self.handle.channel_open_session())
            .await
            .map_err(|_| Error::Timeout { host: host.clone(), phase: "opening a channel", waited: open_wait })?
            .map_err(|e| ssh_err("opening a channel", e))?;
        channel.exec(true, command).await.map_err(|e| ssh_err("starting the command", e))?;
        let (mut reader, writer) = channel.split();
        let mut out = ExecOutput { stdout: Vec::new(), stderr: Vec::new(), exit: Exit::Unknown, broken: None };

        let write = async {
            writer.data_bytes(stdin.to_vec()).await?;
            writer.eof().await
        };
        // Keep reading past the exit status: output may follow it, and an unread channel
        // eventually stalls every other channel on the connection.
        let read = async {
            while let Some(msg) = reader.wait().await {
                match msg {
                    ChannelMsg::Data { data } => keep(&mut out.stdout, &data, max_bytes),
                    ChannelMsg::ExtendedData { data, ext: 1 } => keep(&mut out.stderr, &data, max_bytes),
                    ChannelMsg::ExitStatus { exit_status } => out.exit = Exit::Code(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => out.exit = Exit::Signal(format!("{signal_name:?}")),
                    _ => {}
                }
            }
        };
        let both = async { tokio::join!(write, read).0 };
        match tokio::time::timeout(limit, both).await {
            Err(_) => {
                out.broken = Some(format!("no end of the command within {limit:?}"));
                // sshd keeps a session channel (and its MaxSessions slot) until the command
                // exits, whatever CLOSE says: end the command too.
                let _ = writer.signal(russh::Sig::KILL).await;
            }
            Ok(Err(e)) if out.exit == Exit::Unknown => out.broken = Some(format!("sending the script failed: {e}")),
            Ok(_) => {}
        }
        if out.exit == Exit::Unknown && out.broken.is_none() {
            out.broken = Some("the channel closed without an exit status".into());
        }
        let _ = writer.close().await;
        Ok(out)
    }

    /// Says goodbye to the server; errors here change nothing for the caller. Shared
    /// connections ([`crate::pool::Pool`]) are closed with [`Session::disconnect`].
    pub async fn close(self) {
        self.disconnect().await
    }

    pub async fn disconnect(&self) {
        let _ = self.handle.disconnect(russh::Disconnect::ByApplication, "", "en").await;
        // The bastions under this connection say goodbye too, last hop first.
        if let route::Via::Hop(hop) = &self._via {
            let hop: &Session = hop;
            Box::pin(hop.disconnect()).await;
        }
    }
}

/// Appends what fits under `max` bytes.
fn keep(into: &mut Vec<u8>, data: &[u8], max: usize) {
    let room = max.saturating_sub(into.len());
    into.extend_from_slice(&data[..data.len().min(room)]);
}

/// `<type> SHA256:...` of a public key.
fn key_label(key: &PublicKey) -> String {
    format!("{} {}", key.algorithm(), known_hosts::fingerprint(key))
}

/// Authenticates with the agent's keys, then the identity files; says which one worked.
async fn authenticate(handle: &mut Handle<Verifier>, t: &SshTarget) -> Result<String> {
    let mut tried = Vec::new();
    let host = t.host.clone();
    let ssh_err = |source| Error::Ssh { host: host.clone(), phase: "authenticating", source };
    if let Some(sock) = &t.agent_socket {
        match AgentClient::connect_uds(sock).await {
            Ok(mut agent) => {
                let ids = agent.request_identities().await.unwrap_or_default();
                let allowed: Vec<PublicKey> = t
                    .identity_files
                    .iter()
                    .filter_map(|p| {
                        let mut pub_path = p.clone().into_os_string();
                        pub_path.push(".pub");
                        russh::keys::load_public_key(PathBuf::from(pub_path)).ok()
                    })
                    .collect();
                for id in ids {
                    let AgentIdentity::PublicKey { key, comment } = id else {
                        continue;
                    };
                    if t.identities_only && !allowed.iter().any(|a| a.key_data() == key.key_data()) {
                        continue;
                    }
                    let hash = rsa_hash(handle, &key).await.map_err(ssh_err)?;
                    let label = format!("ssh-agent key {comment} ({})", key_label(&key));
                    match handle.authenticate_publickey_with(&t.user, key, hash, &mut agent).await {
                        Ok(r) if r.success() => return Ok(label),
                        _ => tried.push(format!("ssh-agent key {comment}")),
                    }
                }
                if tried.is_empty() {
                    tried.push("ssh-agent (holds no keys)".into());
                }
            }
            Err(e) => tried.push(format!("ssh-agent at {} ({e})", sock.display())),
        }
    }
    for path in &t.identity_files {
        if !path.exists() {
            tried.push(format!("{} (missing)", path.display()));
            continue;
        }
        let key = match russh::keys::load_secret_key(path, None) {
            Ok(k) => k,
            Err(russh::keys::Error::KeyIsEncrypted) => {
                tried.push(format!(
                    "{} (encrypted: delegate does not ask for passphrases; add it to ssh-agent with ssh-add)",
                    path.display()
                ));
                continue;
            }
            Err(e) => {
                tried.push(format!("{} (unreadable: {e})", path.display()));
                continue;
            }
        };
        let hash = rsa_hash(handle, key.public_key()).await.map_err(ssh_err)?;
        let label = format!("{} ({})", path.display(), key_label(key.public_key()));
        let res = handle
            .authenticate_publickey(&t.user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
            .map_err(ssh_err)?;
        if res.success() {
            return Ok(label);
        }
        tried.push(path.display().to_string());
    }
    // A link that dropped mid-exchange also ends in "not accepted": say what happened, so
    // nobody goes looking at their keys (found by the fault proxy's cut tests).
    if handle.is_closed() {
        return Err(Error::Ssh { host: t.host.clone(), phase: "authenticating", source: russh::Error::Disconnect });
    }
    Err(Error::AuthRefused { host: t.host.clone(), user: t.user.clone(), tried })
}

async fn rsa_hash(handle: &Handle<Verifier>, key: &PublicKey) -> std::result::Result<Option<HashAlg>, russh::Error> {
    if key.algorithm().is_rsa() { Ok(handle.best_supported_rsa_hash().await?.flatten()) } else { Ok(None) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_key_types_are_preferred_and_sha1_rsa_is_gone() {
        let plain = preferred_host_keys(&[]);
        assert_eq!(plain[0], Algorithm::Ed25519);
        assert!(!plain.contains(&Algorithm::Rsa { hash: None }));
        let rsa_first = preferred_host_keys(&[Algorithm::Rsa { hash: None }]);
        assert!(rsa_first[0].clone().is_rsa() && rsa_first[1].clone().is_rsa(), "{rsa_first:?}");
    }

    #[test]
    fn bounded_output_keeps_only_what_fits() {
        let mut out = Vec::new();
        keep(&mut out, b"abcd", 6);
        keep(&mut out, b"efgh", 6);
        keep(&mut out, b"ijkl", 6);
        assert_eq!(out, b"abcdef");
    }

    #[test]
    fn config_has_nodelay_and_keepalive() {
        let t = SshTarget {
            host: "h".into(),
            hostname: "127.0.0.1".into(),
            port: 22,
            user: "u".into(),
            identity_files: vec![],
            agent_socket: None,
            identities_only: false,
            known_hosts: vec![],
            host_key_alias: None,
            accept_new: false,
            timeouts: Timeouts::default(),
            route: route::Route::Direct,
            system_ssh: None,
        };
        let c = client_config(&t, &[]);
        assert!(c.nodelay);
        assert!(c.keepalive_interval.is_some() && c.keepalive_max > 0);
    }
}
