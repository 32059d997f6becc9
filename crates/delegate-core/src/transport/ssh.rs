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

pub(crate) mod resident;
pub mod route;
mod slots;
pub mod system;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client::{self, Handle};
use russh::keys::{Algorithm, Certificate, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Preferred};
use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::hosts::known_hosts::{self, CertVerdict, HostKeyStatus, KnownHostsError};
use crate::hosts::ssh_config::AddressFamily;

mod auth;

/// Deadlines for each network step, and how the TCP connect is tried.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Timeouts {
    /// ssh's ConnectTimeout: the TCP connect (per resolved address), and then what is left of
    /// it for the server's SSH banner, as ssh applies it.
    pub connect: Duration,
    /// The key exchange, after the banner.
    pub handshake: Duration,
    pub auth: Duration,
    /// ssh's ServerAliveInterval: after this long without hearing from the server a
    /// keepalive is sent; zero turns keepalives off.
    pub keepalive_interval: Duration,
    /// ssh's ServerAliveCountMax: the connection is dropped at the check after this many
    /// unanswered keepalives, so a silent server is declared dead after about
    /// `keepalive_interval * (keepalive_max + 1)`; zero drops it at the first check.
    pub keepalive_max: usize,
    /// ssh's ConnectionAttempts: rounds of TCP connects over all addresses, 1 s apart.
    #[serde(default = "one")]
    pub connection_attempts: u32,
    /// ssh's AddressFamily: which resolved addresses are tried.
    #[serde(default)]
    pub address_family: AddressFamily,
}

fn one() -> u32 {
    1
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            handshake: Duration::from_secs(15),
            auth: Duration::from_secs(15),
            keepalive_interval: Duration::from_secs(15),
            keepalive_max: 3,
            connection_attempts: 1,
            address_family: AddressFamily::Any,
        }
    }
}

/// Everything needed to reach one host, already resolved (inventory + ssh config).
/// Serializable so the warm daemon (see [`crate::transport::warm`]) can connect on a command's behalf.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SshTarget {
    /// Inventory name, used in messages.
    pub host: String,
    pub hostname: String,
    pub port: u16,
    pub user: String,
    pub identity_files: Vec<PathBuf>,
    /// `CertificateFile`s; when there are none, each identity file's `-cert.pub` is offered.
    #[serde(default)]
    pub certificate_files: Vec<PathBuf>,
    /// ssh-agent socket; `None` disables the agent.
    pub agent_socket: Option<PathBuf>,
    /// `IdentitiesOnly yes`: offer agent keys only when they belong to one of
    /// `identity_files` (matched by public key), as OpenSSH does.
    pub identities_only: bool,
    /// UserKnownHostsFile: read, and the first one is where accept-new writes.
    pub known_hosts: Vec<PathBuf>,
    /// GlobalKnownHostsFile: read after `known_hosts`, never written.
    #[serde(default)]
    pub global_known_hosts: Vec<PathBuf>,
    /// `HashKnownHosts yes`: accept-new writes the name hashed.
    #[serde(default)]
    pub hash_known_hosts: bool,
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

    /// Every known_hosts file read, user files first, as ssh reads them.
    pub fn all_known_hosts(&self) -> Vec<PathBuf> {
        self.known_hosts.iter().chain(&self.global_known_hosts).cloned().collect()
    }

    #[cfg(test)]
    pub(crate) fn for_tests() -> SshTarget {
        SshTarget {
            host: "h".into(),
            hostname: "127.0.0.1".into(),
            port: 22,
            user: "u".into(),
            identity_files: vec![],
            certificate_files: vec![],
            agent_socket: None,
            identities_only: false,
            known_hosts: vec![],
            global_known_hosts: vec![],
            hash_known_hosts: false,
            host_key_alias: None,
            accept_new: false,
            timeouts: Timeouts::default(),
            route: route::Route::Direct,
            system_ssh: None,
        }
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
    /// The key or certificate the server presented, and the host-key algorithms asked for
    /// when it did: a held connection is checked again with them before each use
    /// ([`Session::recheck_host_key`]).
    presented: Presented,
    asked: HostKeyAsk,
    /// Session channels in flight, and how many the server allows at once.
    channels: Arc<slots::ChannelSlots>,
    /// The resident shell scripts go through ([`Session::run_script`]).
    resident: tokio::sync::Mutex<resident::State>,
    /// Why this connection cannot keep a resident shell, once a start failed for a reason
    /// that will not change while it lives (then every script gets its own exec).
    no_resident: Mutex<Option<String>>,
    pub timings: ConnectTimings,
    /// The host key the server proved it holds: `<type> SHA256:...`, and for a host
    /// certificate its ID and the CA that signed it.
    pub host_key: String,
    /// What authenticated: an identity file's path or `ssh-agent key <comment>`, with the
    /// key's type and fingerprint (never anything secret). `delegate doctor` shows it.
    pub identity: String,
}

/// How a remote command ended. `Unknown`: the channel closed with no exit status (the link
/// dropped, or the server never said). Callers must not read it as success.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Exit {
    Code(u32),
    Signal(String),
    #[default]
    Unknown,
}

/// Cap on each output stream of one exec, on the lead and in the warm daemon: a brother
/// sending more is stopped (its command killed, the channel closed) rather than buffered,
/// and the exec reports `overflow`. Below the warm wire's body limit
/// ([`crate::transport::warm::wire::MAX_BODY`]), so whatever an exec keeps can travel to the client.
pub const MAX_EXEC_OUTPUT: usize = 48 << 20;

#[derive(Debug, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: Exit,
    /// Set when the connection failed mid-command; `exit` is then `Unknown`.
    pub broken: Option<String>,
    /// The command wrote more than [`MAX_EXEC_OUTPUT`] bytes on a stream: reading stopped
    /// there (`broken` says so, `exit` is `Unknown`) and what was kept is incomplete.
    pub overflow: bool,
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
    /// The host key; for a certificate, the key it certifies.
    key: Option<PublicKey>,
    /// Exactly what the server presented (its plain key or its certificate).
    presented: Option<Presented>,
    /// `certificate ID "..." signed by CA <fingerprint>` when a certificate vouched for it.
    certificate: Option<String>,
    problem: Option<Error>,
}

/// What a server presented to prove who it is: a plain host key or a host certificate.
#[derive(Clone)]
enum Presented {
    Key(PublicKey),
    Certificate(Box<Certificate>),
}

/// The host-key algorithms a connect asks for, in order (recorded types first, certificate
/// types when an `@cert-authority` line names the host): they decide which of its keys a
/// server presents.
#[derive(Clone, PartialEq, Debug)]
struct HostKeyAsk {
    keys: Vec<Algorithm>,
    certificates: Vec<Algorithm>,
}

impl HostKeyAsk {
    /// What a connect to `t` asks for with the known_hosts files as they are now.
    fn now(t: &SshTarget) -> Result<HostKeyAsk> {
        let files = t.all_known_hosts();
        let recorded = known_hosts::recorded_algorithms(&files, t.lookup_host(), t.lookup_port())?;
        let ca = known_hosts::cert_authority_for(&files, t.lookup_host(), t.lookup_port())?.is_some();
        let certificates = if ca { preferred_host_keys(&[]) } else { Vec::new() };
        Ok(HostKeyAsk { keys: preferred_host_keys(&recorded), certificates })
    }
}

/// What checking a held connection's host key again says.
pub(crate) enum Recheck {
    /// known_hosts still vouches for it, as it would for a fresh connect.
    Trusted,
    /// A fresh connect would be refused with this error (revoked, changed, unknown, ...).
    Refused(Error),
    /// known_hosts changed what a connect asks the server for (another recorded key type, a
    /// new `@cert-authority` line): a fresh connect may be shown another key, so only a
    /// fresh connect can decide.
    Reconnect,
}

struct Verifier {
    target: SshTarget,
    mode: Mode,
    seen: Arc<Mutex<Seen>>,
    /// What the server said when it closed the connection, if it did.
    disconnect: Arc<Mutex<Option<String>>>,
}

impl Verifier {
    /// The host-key decision, for a fresh connect and for every later use of a held one
    /// ([`Session::recheck_host_key`]): `Ok(true)` when known_hosts vouches for what the
    /// server presented (accept-new learning it if nothing mentions the host).
    fn decide(&self, seen: &mut Seen, presented: &Presented) -> Result<bool, Error> {
        match presented {
            Presented::Certificate(cert) => self.check_certificate(seen, cert),
            Presented::Key(key) => {
                seen.key = Some(key.clone());
                if self.mode == Mode::Capture {
                    return Ok(false);
                }
                self.check_plain_key(key)
            }
        }
    }

    /// A host certificate: trusted through an `@cert-authority` line, or, as ssh does, checked
    /// as its plain key when no CA names the host. A certificate a CA line should vouch for but
    /// does not (expired, wrong name, unknown CA...) is accepted only if the plain key itself is
    /// recorded; accept-new never learns it (ssh would: deliberately stricter).
    fn check_certificate(&self, seen: &mut Seen, cert: &Certificate) -> Result<bool, Error> {
        let t = &self.target;
        let key = PublicKey::new(cert.public_key().clone(), "");
        seen.key = Some(key.clone());
        let signer = PublicKey::new(cert.signature_key().clone(), "");
        seen.certificate =
            Some(format!("certificate ID \"{}\" signed by CA {}", cert.key_id(), known_hosts::fingerprint(&signer)));
        if self.mode == Mode::Capture {
            return Ok(false);
        }
        let files = t.all_known_hosts();
        let (host, port) = (t.lookup_host(), t.lookup_port());
        let lookup = known_hosts::lookup_name(host, port);
        match known_hosts::check_host_certificate(&files, host, port, cert, unix_now())? {
            CertVerdict::Trusted { .. } => Ok(true),
            CertVerdict::NoAuthority => {
                seen.certificate = None;
                self.check_plain_key(&key)
            }
            CertVerdict::Revoked { file, line } => Err(Error::HostKeyRevoked {
                host: t.host.clone(),
                lookup,
                fingerprint: known_hosts::fingerprint(&key),
                file,
                line,
            }),
            CertVerdict::Invalid { file, line, reason } => match known_hosts::check(&files, host, port, &key)? {
                HostKeyStatus::Known => Ok(true),
                HostKeyStatus::Unknown => {
                    Err(KnownHostsError::CertificateInvalid { path: file, line, lookup, reason }.into())
                }
                other => Err(refusal(t, &key, other).expect("changed and revoked are refusals")),
            },
        }
    }

    /// A plain host key, against every known_hosts file; accept-new learns it into the first
    /// user file when nothing mentions the host.
    fn check_plain_key(&self, key: &PublicKey) -> Result<bool, Error> {
        let t = &self.target;
        let files = t.all_known_hosts();
        let status = known_hosts::check(&files, t.lookup_host(), t.lookup_port(), key)?;
        // A host vouched for only by a CA: refuse and say why, in every mode (accept-new would
        // otherwise learn its plain key and bypass the CA).
        if status == HostKeyStatus::Unknown
            && let Some((path, line)) = known_hosts::cert_authority_for(&files, t.lookup_host(), t.lookup_port())?
        {
            let lookup = known_hosts::lookup_name(t.lookup_host(), t.lookup_port());
            return Err(KnownHostsError::CertificateExpected { path, line, lookup }.into());
        }
        if status == HostKeyStatus::Unknown && t.accept_new && !t.known_hosts.is_empty() {
            known_hosts::append_as(&t.known_hosts[0], t.lookup_host(), t.lookup_port(), key, t.hash_known_hosts)?;
            return Ok(true);
        }
        match refusal(t, key, status) {
            None => Ok(true),
            Some(e) => Err(e),
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(&mut self, presented: &PublicKeyOrCertificate) -> Result<bool, russh::Error> {
        let mut seen = self.seen.lock().expect("host key state");
        let presented = match presented {
            PublicKeyOrCertificate::Certificate(cert) => Presented::Certificate(Box::new(cert.clone())),
            PublicKeyOrCertificate::PublicKey { key, .. } => Presented::Key(key.clone()),
        };
        seen.presented = Some(presented.clone());
        match self.decide(&mut seen, &presented) {
            Ok(ok) => Ok(ok),
            Err(e) => {
                seen.problem = Some(e);
                Ok(false)
            }
        }
    }

    async fn disconnected(&mut self, reason: client::DisconnectReason<Self::Error>) -> Result<(), Self::Error> {
        match reason {
            client::DisconnectReason::ReceivedDisconnect(info) => {
                *self.disconnect.lock().expect("disconnect reason") = Some(info.message);
                Ok(())
            }
            client::DisconnectReason::Error(e) => Err(e),
        }
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

/// [`Session::recheck_host_key`] for one connection: what a fresh connect to `t` would decide
/// about the key or certificate `presented` when the server was asked for `asked`.
fn recheck(t: &SshTarget, presented: &Presented, asked: &HostKeyAsk) -> Recheck {
    match HostKeyAsk::now(t) {
        Err(e) => return Recheck::Refused(e),
        Ok(now) if now != *asked => return Recheck::Reconnect,
        Ok(_) => {}
    }
    let verifier = Verifier { target: t.clone(), mode: Mode::Verify, seen: Arc::default(), disconnect: Arc::default() };
    match verifier.decide(&mut Seen::default(), presented) {
        Ok(true) => Recheck::Trusted,
        // Verify mode never answers false; were it to, a fresh connect decides.
        Ok(false) => Recheck::Reconnect,
        Err(e) => Recheck::Refused(e),
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

/// russh's keepalive settings for ssh's ServerAliveInterval and ServerAliveCountMax.
///
/// ssh (clientloop.c) checks every interval without input: the check counts, gives up when
/// the count exceeds the maximum, and otherwise sends a keepalive; any input resets both.
/// russh counts the same way, except that its `keepalive_max` 0 means "never give up" and
/// an interval of zero makes it spin: so interval 0 turns keepalives off (ssh's meaning),
/// and count 0 (ssh gives up at the first check, having sent nothing) becomes an inactivity
/// timeout of one interval.
struct Keepalive {
    interval: Option<Duration>,
    max: usize,
    inactivity: Option<Duration>,
}

fn keepalive(t: &Timeouts) -> Keepalive {
    let interval = t.keepalive_interval;
    match (interval.is_zero(), t.keepalive_max) {
        (true, _) => Keepalive { interval: None, max: 0, inactivity: None },
        (false, 0) => Keepalive { interval: None, max: 0, inactivity: Some(interval) },
        (false, max) => Keepalive { interval: Some(interval), max, inactivity: None },
    }
}

/// With certificate types in `ask` (an `@cert-authority` line names the host), every
/// certificate type is asked for first, as ssh's order_hostkeyalgs does.
fn client_config(t: &SshTarget, ask: &HostKeyAsk) -> client::Config {
    let alive = keepalive(&t.timeouts);
    let (key, host_key_certificates) = (ask.keys.clone(), ask.certificates.clone());
    client::Config {
        nodelay: true,
        keepalive_interval: alive.interval,
        keepalive_max: alive.max,
        inactivity_timeout: alive.inactivity,
        preferred: Preferred {
            key: Cow::Owned(key),
            host_key_certificates: Cow::Owned(host_key_certificates),
            ..Preferred::DEFAULT
        },
        ..Default::default()
    }
}

fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

/// TCP to the first address that answers, as ssh's ssh_connect_direct: addresses of the
/// wrong AddressFamily skipped, ConnectionAttempts rounds 1 s apart. Also returns when the
/// successful connect started, since the banner gets what is left of ConnectTimeout.
async fn tcp_connect(t: &SshTarget) -> Result<(TcpStream, Instant)> {
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
            .filter(|a: &std::net::SocketAddr| match t.timeouts.address_family {
                AddressFamily::Any => true,
                AddressFamily::Inet => a.is_ipv4(),
                AddressFamily::Inet6 => a.is_ipv6(),
            })
            .collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "the name resolved to no address");
    if addrs.is_empty() && t.timeouts.address_family != AddressFamily::Any {
        let message = format!("no address of the AddressFamily {:?}", t.timeouts.address_family);
        last = std::io::Error::new(std::io::ErrorKind::NotFound, message);
    }
    let attempts = if addrs.is_empty() { 0 } else { t.timeouts.connection_attempts.max(1) };
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Each address gets its own deadline, so one blackholed address cannot eat the
        // kernel's two minutes of SYN retries before the next is tried.
        for addr in &addrs {
            let started = Instant::now();
            match tokio::time::timeout(t.timeouts.connect, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    s.set_nodelay(true).map_err(unreachable)?;
                    return Ok((s, started));
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
    }
    Err(unreachable(last))
}

/// A stream that signals once a line starting with `SSH-` (the server's version line,
/// which may follow other lines) has been read through it.
struct BannerWatch<S> {
    inner: S,
    line: Vec<u8>,
    seen: Option<Arc<tokio::sync::Notify>>,
}

impl<S> BannerWatch<S> {
    fn new(inner: S) -> (Self, Arc<tokio::sync::Notify>) {
        let notify = Arc::new(tokio::sync::Notify::new());
        (BannerWatch { inner, line: Vec::new(), seen: Some(notify.clone()) }, notify)
    }

    fn saw(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.seen.is_none() {
                return;
            }
            if b == b'\n' {
                if self.line.starts_with(b"SSH-") {
                    self.seen.take().expect("checked above").notify_one();
                }
                self.line.clear();
            } else if self.line.len() < 4 {
                self.line.push(b); // only the start of a line matters
            }
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for BannerWatch<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if poll.is_ready() {
            let new = buf.filled()[before..].to_vec();
            self.saw(&new);
        }
        poll
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for BannerWatch<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a handshake gives.
struct Handshake {
    /// The connection; none when only capturing the key.
    handle: Option<Handle<Verifier>>,
    seen: Seen,
    timings: ConnectTimings,
    /// How the stream reached the host (kept alive with the session).
    via: route::Via,
    /// The server's disconnect message if it hangs up during authentication.
    disconnect: Arc<Mutex<Option<String>>>,
    /// The host-key algorithms asked for.
    ask: HostKeyAsk,
}

/// TCP and key exchange. In `Capture` mode the handshake is refused on purpose once the
/// key is seen, and no handle comes back, with the key in `seen`.
async fn handshake(t: &SshTarget, mode: Mode) -> Result<Handshake> {
    let mut timings = ConnectTimings::default();
    let started = Instant::now();
    let (stream, mut via, connect_started) = route::open(t).await?;
    timings.tcp_ms = ms(started);

    let ask = HostKeyAsk::now(t)?;
    let config = Arc::new(client_config(t, &ask));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let disconnect = Arc::new(Mutex::new(None));
    let verifier = Verifier { target: t.clone(), mode, seen: seen.clone(), disconnect: disconnect.clone() };
    let kex_started = Instant::now();
    // As ssh does, the server's version line must come within what is left of
    // ConnectTimeout; the key exchange then gets its own deadline.
    let (stream, banner) = BannerWatch::new(stream);
    let connecting = client::connect_stream(config, stream, verifier);
    tokio::pin!(connecting);
    let banner_wait = t.timeouts.connect.saturating_sub(connect_started.elapsed());
    let early = tokio::time::timeout(banner_wait, async {
        tokio::select! {
            r = &mut connecting => Some(r),
            () = banner.notified() => None,
        }
    })
    .await;
    let result = match early {
        Err(_) => {
            // ssh calls this the banner exchange; to the user (and the warm daemon's wire
            // format, which knows a fixed set of phases) it is part of exchanging keys.
            let phase = "exchanging keys";
            return Err(Error::Timeout { host: t.host.clone(), phase, waited: t.timeouts.connect });
        }
        Ok(Some(done)) => Ok(done),
        Ok(None) => tokio::time::timeout(t.timeouts.handshake, connecting).await,
    };
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
        Ok(Err(_)) if mode == Mode::Capture && seen.key.is_some() => {
            Ok(Handshake { handle: None, seen, timings, via, disconnect, ask })
        }
        Ok(Err(e)) => Err(Error::Ssh { host: t.host.clone(), phase: "exchanging keys", source: e }),
        Ok(Ok(h)) => Ok(Handshake { handle: Some(h), seen, timings, via, disconnect, ask }),
    }
}

/// Connects without trusting anything and returns the host key the server presents.
pub async fn fetch_host_key(t: &SshTarget) -> Result<PublicKey> {
    let seen = handshake(t, Mode::Capture).await?.seen;
    seen.key.ok_or_else(|| Error::Config {
        path: PathBuf::from("(host key)"),
        message: format!("{} presented no host key", t.host),
    })
}

impl Session {
    /// TCP, key exchange, host-key check and authentication, each under its deadline.
    pub async fn connect(t: &SshTarget) -> Result<Session> {
        let Handshake { handle, seen, mut timings, via, disconnect, ask } = handshake(t, Mode::Verify).await?;
        let mut handle = handle.expect("verify mode yields a handle or an error");
        let presented = seen.presented.clone().expect("a verified handshake saw the host key");
        let mut host_key = seen.key.as_ref().map(key_label).unwrap_or_default();
        if let Some(c) = &seen.certificate {
            host_key = format!("{host_key} ({c})");
        }
        let auth_started = Instant::now();
        let identity =
            tokio::time::timeout(t.timeouts.auth, auth::authenticate(&mut handle, t, &disconnect)).await.map_err(
                |_| Error::Timeout { host: t.host.clone(), phase: "authenticating", waited: t.timeouts.auth },
            )??;
        timings.auth_ms = ms(auth_started);
        Ok(Session {
            handle,
            _via: via,
            target: t.clone(),
            presented,
            asked: ask,
            channels: Arc::default(),
            resident: tokio::sync::Mutex::default(),
            no_resident: Mutex::new(None),
            timings,
            host_key,
            identity,
        })
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// Checks this held connection's host key again, and each bastion's under it, against
    /// the known_hosts files of `t` as they are now, by the very decision a fresh connect
    /// makes ([`Verifier::decide`]: `@revoked`, `@cert-authority`, changed or removed
    /// entries, accept-new learning a removed one again). A warm daemon or an MCP server
    /// holds a connection for minutes; a key revoked meanwhile must stop the next command.
    /// Bastions come first, as a fresh connect meets them first.
    pub(crate) fn recheck_host_key(&self, t: &SshTarget) -> Recheck {
        if let route::Via::Hop(hop) = &self._via {
            let hop_target = match &t.route {
                route::Route::Jump(h) => h.as_ref(),
                _ => hop.target(),
            };
            match hop.recheck_host_key(hop_target) {
                Recheck::Trusted => {}
                Recheck::Refused(e) => return Recheck::Refused(route::hop_error(hop_target, e)),
                Recheck::Reconnect => return Recheck::Reconnect,
            }
        }
        recheck(t, &self.presented, &self.asked)
    }

    /// The connection is gone (the server hung up, keepalives went unanswered, or it was
    /// closed): a new exec would fail to open its channel.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Runs a script the way [`crate::remote::REMOTE_COMMAND`] runs one, through this
    /// connection's resident shell (see [`resident`]) when it runs and is free: no channel
    /// open, no exec request, no bash start per script. Otherwise the script gets a channel
    /// of its own if the server has one free now; else it waits for whichever comes first,
    /// a free channel or the free shell (so nothing waits for a channel place the shell
    /// holds). With no shell running, one is started once such an exec is done, for the
    /// next script; a connection that cannot keep one runs one exec per script.
    ///
    /// What the caller sees is what [`Session::exec`] gives: the same output, exit status
    /// and cap, and a script whose answer was lost is reported `broken`, never sent again.
    pub async fn run_script(self: &Arc<Self>, script: &[u8], limit: Duration) -> Result<ExecOutput> {
        let command = crate::remote::REMOTE_COMMAND;
        if self.no_resident.lock().expect("resident lock").is_some() {
            return self.exec(command, script, limit).await;
        }
        let deadline = tokio::time::Instant::now() + limit;
        // The shell, once waited for: kept, not dropped and looked for again (with several
        // waiting, each would hand it to the next and none would ever use it).
        let mut held = None;
        loop {
            let guard = match held.take() {
                Some(guard) => Some(guard),
                None => self.resident.try_lock().ok(),
            };
            // `busy`: the shell is serving another script (or starting): worth waiting for.
            let (mut start_after, busy) = (false, guard.is_none());
            if let Some(mut state) = guard {
                if let resident::State::Up(r) = &mut *state
                    && (!r.usable() || (r.idle_for() > resident::IDLE_PROBE && !self.answers_ping().await))
                    && let resident::State::Up(r) = std::mem::take(&mut *state)
                {
                    r.end().await;
                }
                if let resident::State::Up(r) = &mut *state {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let answer = r.request(script, left, MAX_EXEC_OUTPUT).await;
                    if !answer.keep
                        && let resident::State::Up(r) = std::mem::take(&mut *state)
                    {
                        r.end().await;
                    }
                    return Ok(answer.out);
                }
                start_after = self.no_resident.lock().expect("resident lock").is_none();
            }
            let freed = self.channels.freed();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Some(out) = self.run(command, script, left, MAX_EXEC_OUTPUT, true, false).await? {
                if start_after {
                    let me = self.clone();
                    tokio::spawn(async move { me.start_resident().await });
                }
                return Ok(out);
            }
            tokio::select! {
                _ = freed => {}
                guard = self.resident.lock(), if busy => held = Some(guard),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Error::Timeout {
                        host: self.target.host.clone(),
                        phase: "waiting for a channel",
                        waited: limit,
                    });
                }
            }
        }
    }

    /// Whether the server answers a ping within the handshake timeout. A script sent on a
    /// link that died silently could only be reported unknown; a plain exec on it fails at
    /// its channel open, before anything is sent, and the pool then connects afresh.
    async fn answers_ping(&self) -> bool {
        matches!(tokio::time::timeout(self.target.timeouts.handshake, self.handle.send_ping()).await, Ok(Ok(())))
    }

    /// Starts the resident shell if none runs. A channel the server will not give now (its
    /// `MaxSessions` reached) leaves it for a later script; a shell that does not come up
    /// (no bash, a forced command, no usable `dd`) is remembered: this connection then runs
    /// one exec per script.
    async fn start_resident(&self) {
        let mut state = self.resident.lock().await;
        if !matches!(*state, resident::State::Down) || self.no_resident.lock().expect("resident lock").is_some() {
            return;
        }
        let wait = self.target.timeouts.handshake.min(resident::READY_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let why = match self.open_channel(deadline, false).await {
            Ok(Some((channel, slot))) => match resident::Resident::start(channel, slot, wait).await {
                Ok(r) => {
                    *state = resident::State::Up(r);
                    return;
                }
                Err(resident::Refused(why)) => why,
            },
            Err(Error::ChannelRefused { reason, .. }) => format!("the server refused a channel: {reason}"),
            // No place free now, or the connection is in trouble (the next exec finds out).
            Ok(None) | Err(_) => return,
        };
        *self.no_resident.lock().expect("resident lock") = Some(why);
    }

    /// Where this connection's resident shell stands: `Ok(true)` running, `Ok(false)` none
    /// right now, `Err(why)` this connection cannot keep one.
    pub async fn resident_status(&self) -> std::result::Result<bool, String> {
        if let Some(why) = self.no_resident.lock().expect("resident lock").clone() {
            return Err(why);
        }
        Ok(matches!(*self.resident.lock().await, resident::State::Up(_)))
    }

    /// Runs `command` with `stdin` fed to it and closed, and reads both output streams until
    /// the server closes the channel. A connection that breaks after the command was sent is
    /// reported in `broken` with `Exit::Unknown`, never as an error that hides what was read.
    ///
    /// At most [`MAX_EXEC_OUTPUT`] bytes of each stream are read: past that the command is
    /// killed, reading stops and the output says `overflow`.
    pub async fn exec(&self, command: &str, stdin: &[u8], limit: Duration) -> Result<ExecOutput> {
        Ok(self.run(command, stdin, limit, MAX_EXEC_OUTPUT, true, true).await?.expect("waits for a channel"))
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
        Ok(self.run(command, stdin, limit, max_bytes, false, true).await?.expect("waits for a channel"))
    }

    /// `stop`: past `max_bytes` on a stream, stop reading and kill the command (else read
    /// the rest and drop it). `wait`: wait for a channel place; without it, `None` (nothing
    /// sent) when the server has none free now.
    async fn run(
        &self,
        command: &str,
        stdin: &[u8],
        limit: Duration,
        max_bytes: usize,
        stop: bool,
        wait: bool,
    ) -> Result<Option<ExecOutput>> {
        let host = self.target.host.clone();
        let ssh_err = |phase, source| Error::Ssh { host: host.clone(), phase, source };
        let deadline = tokio::time::Instant::now() + limit;
        // Held until the channel is closed, at the end of this function.
        let Some((channel, _slot)) = self.open_channel(deadline, wait).await? else { return Ok(None) };
        // Waiting for a channel counted against the exec's own limit.
        let limit = deadline.saturating_duration_since(tokio::time::Instant::now());
        channel.exec(true, command).await.map_err(|e| ssh_err("starting the command", e))?;
        let (mut reader, writer) = channel.split();
        let mut out = ExecOutput::default();
        let mut over = false;

        let write = async {
            writer.data_bytes(stdin.to_vec()).await?;
            writer.eof().await
        };
        // Keep reading past the exit status: output may follow it, and an unread channel
        // eventually stalls every other channel on the connection.
        let read = async {
            while let Some(msg) = reader.wait().await {
                let into = match &msg {
                    ChannelMsg::Data { data } => Some((&mut out.stdout, data)),
                    ChannelMsg::ExtendedData { data, ext: 1 } => Some((&mut out.stderr, data)),
                    _ => None,
                };
                if let Some((into, data)) = into {
                    if stop && into.len().saturating_add(data.len()) > max_bytes {
                        over = true;
                        break;
                    }
                    keep(into, data, max_bytes);
                    continue;
                }
                match msg {
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
        if over {
            // Whatever it would still send is not read: end the command too.
            let _ = writer.signal(russh::Sig::KILL).await;
            out.exit = Exit::Unknown;
            out.overflow = true;
            out.broken = Some(format!("output over {max_bytes} bytes: stopped reading"));
        }
        if out.exit == Exit::Unknown && out.broken.is_none() {
            out.broken = Some("the channel closed without an exit status".into());
        }
        let _ = writer.close().await;
        Ok(Some(out))
    }

    /// Opens a session channel before `deadline`. A refusal while other channels of ours are
    /// open is the server's MaxSessions: nothing was sent, so the open waits for one of them
    /// to close and is tried again (see [`slots`]). Without `wait`, `None` instead of waiting.
    async fn open_channel(
        &self,
        deadline: tokio::time::Instant,
        wait: bool,
    ) -> Result<Option<(russh::Channel<client::Msg>, slots::Slot)>> {
        let host = &self.target.host;
        let mut settled = false;
        loop {
            let slot = if wait {
                tokio::time::timeout_at(deadline, self.channels.take()).await.map_err(|_| Error::Timeout {
                    host: host.clone(),
                    phase: "waiting for a channel",
                    waited: deadline.saturating_duration_since(tokio::time::Instant::now()),
                })?
            } else {
                let Some(slot) = self.channels.try_take() else { return Ok(None) };
                slot
            };
            // A live server answers a channel open in one round trip: one that takes longer
            // than the handshake deadline sits on a dead link that keepalives have not caught
            // yet (a kept connection, after a network change), and the pool then connects afresh.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let open_wait = left.min(self.target.timeouts.handshake);
            let refusal = match tokio::time::timeout(open_wait, self.handle.channel_open_session()).await {
                Err(_) => {
                    return Err(Error::Timeout { host: host.clone(), phase: "opening a channel", waited: open_wait });
                }
                Ok(Ok(channel)) => return Ok(Some((channel, slot))),
                Ok(Err(russh::Error::ChannelOpenFailure(reason))) => reason,
                Ok(Err(e)) => return Err(Error::Ssh { host: host.clone(), phase: "opening a channel", source: e }),
            };
            if !settled {
                // sshd frees a closed channel's place only on its next turn, so an open sent
                // right behind a CLOSE can be refused for a place that is already ours again.
                // One round trip settles that; then the same open is tried once more.
                settled = true;
                let _ = tokio::time::timeout(open_wait, self.handle.send_ping()).await;
                continue;
            }
            settled = false;
            if slot.others() == 0 {
                return Err(Error::ChannelRefused { host: host.clone(), reason: open_failure(&refusal) });
            }
            slot.refused();
            if !wait {
                return Ok(None);
            }
        }
    }

    /// Says goodbye to the server; errors here change nothing for the caller. Shared
    /// connections ([`crate::transport::pool::Pool`]) are closed with [`Session::disconnect`].
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

/// A server's reason for refusing a channel, in words; its own text bounded and cleaned
/// (the brother is untrusted).
fn open_failure(reason: &russh::ChannelOpenFailure) -> String {
    match reason {
        russh::ChannelOpenFailure::AdministrativelyProhibited => "administratively prohibited".into(),
        russh::ChannelOpenFailure::ConnectFailed => "open failed".into(),
        russh::ChannelOpenFailure::UnknownChannelType => "unknown channel type".into(),
        russh::ChannelOpenFailure::ResourceShortage => "resource shortage".into(),
        russh::ChannelOpenFailure::Other { code, reason } => {
            format!("code {code}: {}", crate::sanitize::clean_line(reason, 200))
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

    /// A fresh public key of `kind` from ssh-keygen, in `dir`.
    fn keygen(dir: &std::path::Path, kind: &str) -> PublicKey {
        let path = dir.join(kind);
        let ok = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", "", "-C", "", "-f"])
            .arg(&path)
            .status()
            .expect("run ssh-keygen")
            .success();
        assert!(ok, "ssh-keygen -t {kind}");
        PublicKey::from_openssh(&std::fs::read_to_string(path.with_extension("pub")).unwrap()).unwrap()
    }

    #[test]
    fn a_recheck_decides_as_a_fresh_connect_or_asks_for_one() {
        let dir = std::env::temp_dir().join(format!("delegate-recheck-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (ed, rsa) = (keygen(&dir, "ed25519"), keygen(&dir, "rsa"));
        let line = |key: &PublicKey| key.to_openssh().unwrap();
        let file = dir.join("known_hosts");
        let mut t = SshTarget::for_tests();
        (t.hostname, t.port, t.known_hosts) = ("h".into(), 2222, vec![file.clone()]);
        std::fs::write(&file, format!("[h]:2222 {}\n", line(&ed))).unwrap();
        let asked = HostKeyAsk::now(&t).unwrap();
        let held = Presented::Key(ed.clone());
        let verdict = |t: &SshTarget, text: String| {
            std::fs::write(&file, text).unwrap();
            match recheck(t, &held, &asked) {
                Recheck::Trusted => "trusted".to_string(),
                Recheck::Reconnect => "reconnect".to_string(),
                Recheck::Refused(e) => e.to_string(),
            }
        };
        assert_eq!(verdict(&t, format!("[h]:2222 {}\n", line(&ed))), "trusted");
        // The same types asked for: decided on the key held.
        let revoked = verdict(&t, format!("@revoked [h]:2222 {}\n", line(&ed)));
        assert!(revoked.contains("REVOKED"), "{revoked}");
        assert!(verdict(&t, String::new()).contains("is not known"));
        // Another type recorded, or a CA naming the host: a connect would ask the server for
        // another key, so only a fresh connect can tell.
        assert_eq!(verdict(&t, format!("[h]:2222 {}\n", line(&rsa))), "reconnect");
        let ca = format!("@cert-authority [h]:2222 {}\n", line(&rsa));
        assert_eq!(verdict(&t, format!("[h]:2222 {}\n{ca}", line(&ed))), "reconnect");
        // accept-new learns a removed entry again.
        t.accept_new = true;
        assert_eq!(verdict(&t, String::new()), "trusted");
        assert!(std::fs::read_to_string(&file).unwrap().contains(&line(&ed)[..40]));
        let _ = std::fs::remove_dir_all(&dir);
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
        let t = SshTarget::for_tests();
        let c = client_config(&t, &HostKeyAsk { keys: preferred_host_keys(&[]), certificates: vec![] });
        assert!(c.nodelay);
        assert!(c.keepalive_interval.is_some() && c.keepalive_max > 0);
    }

    #[test]
    fn server_alive_settings_map_to_russh_as_ssh_means_them() {
        let with = |secs: u64, max: usize| {
            let alive = keepalive(&Timeouts {
                keepalive_interval: Duration::from_secs(secs),
                keepalive_max: max,
                ..Timeouts::default()
            });
            (alive.interval, alive.max, alive.inactivity)
        };
        let s = Duration::from_secs;
        assert_eq!(with(0, 3), (None, 0, None), "interval 0: no keepalives at all (russh would spin)");
        assert_eq!(with(0, 0), (None, 0, None));
        assert_eq!(with(5, 3), (Some(s(5)), 3, None), "dead at the 4th check: 20 s");
        assert_eq!(with(5, 1), (Some(s(5)), 1, None));
        assert_eq!(with(5, 0), (None, 0, Some(s(5))), "count 0: dead at the first check, never 'never'");
    }

    #[test]
    fn the_banner_watch_fires_on_the_version_line_only() {
        let (mut w, _) = BannerWatch::new(tokio::io::empty());
        w.saw(b"hello\r\nSSH");
        assert!(w.seen.is_some(), "junk lines and a partial version line are not the banner");
        w.saw(b"-2.0-OpenSSH_9.2\r\n");
        assert!(w.seen.is_none());
    }
}
