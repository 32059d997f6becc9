//! OpenSSH known_hosts files: deciding whether a host key is known, unknown, changed or revoked,
//! and recording newly trusted keys.
//!
//! This module owns the known_hosts line format (markers, host patterns, hashed names, keys),
//! the name OpenSSH looks a host up under, the decision itself, and appending lines safely
//! while other processes may append too. It reads only the files it is given; which files
//! those are (UserKnownHostsFile, then GlobalKnownHostsFile) comes from ssh_config resolution.
//! Host certificates are checked against `@cert-authority` lines like ssh does (see
//! [`check_host_certificate`]); a host such a line names that presents a plain key nobody
//! recorded is refused with [`KnownHostsError::CertificateExpected`] (see
//! [`cert_authority_for`]) rather than learned by accept-new, which would bypass the CA.

use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{KeyInit, Mac};
use russh::keys::ssh_key::certificate::CertType;
use russh::keys::{Algorithm, Certificate, HashAlg};

pub use russh::keys::PublicKey;

/// What the known_hosts files say about a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// A line for this host records exactly this key.
    Known,
    /// No line names this host. For a non-default port: no line names `[host]:port`, and plain
    /// `host` lines, if any, do not record this key (another port may be another server).
    Unknown,
    /// The host has lines, but none with this key, including when only keys of another type
    /// are recorded; see [`check`].
    Changed {
        file: PathBuf,
        line: usize,
        /// The recorded key, e.g. `ssh-ed25519 SHA256:...`.
        recorded: String,
    },
    /// An `@revoked` line lists this key. Wins over everything else.
    Revoked { file: PathBuf, line: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum KnownHostsError {
    #[error("cannot read known_hosts file {}: {source}; check that it is a readable file", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "cannot record the host key in {}: {source}; check that the file and its directory are writable",
        path.display()
    )]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot encode the {algorithm} host key for {}: {message}; this is a bug in delegate", path.display())]
    Encode { path: PathBuf, algorithm: String, message: String },
    #[error(
        "{} line {line} trusts a certificate authority (@cert-authority) for {lookup}, but the host presented \
         a plain key that no known_hosts line records, not a certificate: give the host a certificate signed \
         by that CA (sshd's HostCertificate), or record its own key (check its fingerprint first)",
        path.display()
    )]
    CertificateExpected { path: PathBuf, line: usize, lookup: String },
    #[error(
        "the host certificate of {lookup} is refused: {reason} (the CA trusted for it is at {} line {line}). \
         Renew or re-sign the host's certificate (ssh-keygen -s CA -h -n <its name>), or record its own key",
        path.display()
    )]
    CertificateInvalid { path: PathBuf, line: usize, lookup: String, reason: String },
}

/// What the known_hosts files say about a host certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertVerdict {
    /// Signed by a CA an `@cert-authority` line trusts for this host, and valid now for it.
    Trusted { file: PathBuf, line: usize },
    /// No `@cert-authority` line names this host: only its plain key can be checked.
    NoAuthority,
    /// A CA is trusted for this host, but this certificate does not pass; see the reason.
    Invalid { file: PathBuf, line: usize, reason: String },
    /// The CA key or the certified key is listed `@revoked`.
    Revoked { file: PathBuf, line: usize },
}

/// The name OpenSSH looks up: `host` for port 22, `[host]:port` otherwise.
///
/// The host is lowercased because ssh lowercases host names (and `HostKeyAlias`) before it
/// reads known_hosts; hashed entries are HMACs of that lowercased name. Note that ssh never
/// adds a port to a `HostKeyAlias`, so callers looking up an alias should pass port 22.
pub fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 || port == 0 { host } else { format!("[{host}]:{port}") }
}

/// Decides what `files` say about `key` for `host`/`port`. Missing files are skipped, like ssh
/// does; unreadable ones are errors, because skipping them could turn "changed" into "unknown".
///
/// Like ssh, a host with no lines at all under `[host]:port` is also looked up as plain `host`,
/// and counts as known if that records this very key; anything else found there leaves it
/// unknown, because another port may well be another server.
///
/// Stricter than OpenSSH in two places. An `@revoked` line revokes its key whatever host
/// patterns it names, while ssh only honours it for hosts the patterns match: a revoked key
/// should never be trusted anywhere. And when only keys of another type are recorded, the
/// result is [`HostKeyStatus::Changed`]. OpenSSH 9.2 says the same when that is the only
/// algorithm it may use, but normally it avoids the question by negotiating the recorded type
/// (see [`recorded_algorithms`]); delegate refuses either way, because a server that suddenly
/// presents a new key type is exactly what an attacker without the recorded key would do.
pub fn check(files: &[PathBuf], host: &str, port: u16, key: &PublicKey) -> Result<HostKeyStatus, KnownHostsError> {
    let mut entries = Vec::new();
    for file in files {
        entries.extend(read_entries(file)?.into_iter().map(|e| (file, e)));
    }
    let revoked = entries.iter().find(|(_, e)| e.marker == Marker::Revoked && e.key.key_data() == key.key_data());
    if let Some((file, e)) = revoked {
        return Ok(HostKeyStatus::Revoked { file: file.to_path_buf(), line: e.line });
    }
    let status = status_for(&entries, &lookup_name(host, port), key);
    if status == HostKeyStatus::Unknown && port != 22 && port != 0 {
        let plain = status_for(&entries, &lookup_name(host, 22), key);
        if plain == HostKeyStatus::Known {
            return Ok(plain);
        }
    }
    Ok(status)
}

fn status_for(entries: &[(&PathBuf, Entry)], name: &str, key: &PublicKey) -> HostKeyStatus {
    let lines = entries.iter().filter(|(_, e)| e.marker == Marker::Plain && e.host_matches(name));
    let mut first_other = None;
    let mut first_same_type = None;
    for (file, e) in lines {
        if e.key.key_data() == key.key_data() {
            return HostKeyStatus::Known;
        }
        let slot = if e.key.algorithm() == key.algorithm() { &mut first_same_type } else { &mut first_other };
        slot.get_or_insert((file, e));
    }
    // Point at a recorded key of the presented type when there is one: that is the line the
    // user has to look at.
    match first_same_type.or(first_other) {
        Some((file, e)) => HostKeyStatus::Changed {
            file: file.to_path_buf(),
            line: e.line,
            recorded: format!("{} {}", e.key.algorithm().as_str(), fingerprint(&e.key)),
        },
        None => HostKeyStatus::Unknown,
    }
}

/// The first `@cert-authority` line whose patterns name this host (`[host]:port`, or plain
/// `host` as [`check`] falls back to), as (file, line). Such a host is asked for a
/// certificate; if it presents a plain key nobody recorded, that is refused rather than
/// learned under accept-new, which would quietly bypass the CA the user chose.
pub fn cert_authority_for(
    files: &[PathBuf],
    host: &str,
    port: u16,
) -> Result<Option<(PathBuf, usize)>, KnownHostsError> {
    for name in [lookup_name(host, port), lookup_name(host, 22)] {
        for file in files {
            let found =
                read_entries(file)?.into_iter().find(|e| e.marker == Marker::CertAuthority && e.host_matches(&name));
            if let Some(e) = found {
                return Ok(Some((file.clone(), e.line)));
            }
        }
        if port == 22 || port == 0 {
            break;
        }
    }
    Ok(None)
}

/// Checks a host certificate as ssh's check_host_key does for one: the CA that signed it must
/// be named by an `@cert-authority` line matching `[host]:port` (or plain `host`, the same
/// fallback as [`check`]), the signature must verify, it must be a host certificate, valid at
/// `now` (seconds since the epoch), and list `host` among its principals (or list none).
/// An `@revoked` CA or certified key wins over everything.
pub fn check_host_certificate(
    files: &[PathBuf],
    host: &str,
    port: u16,
    cert: &Certificate,
    now: u64,
) -> Result<CertVerdict, KnownHostsError> {
    let mut entries = Vec::new();
    for file in files {
        entries.extend(read_entries(file)?.into_iter().map(|e| (file, e)));
    }
    let revoked = entries.iter().find(|(_, e)| {
        e.marker == Marker::Revoked
            && (e.key.key_data() == cert.signature_key() || e.key.key_data() == cert.public_key())
    });
    if let Some((file, e)) = revoked {
        return Ok(CertVerdict::Revoked { file: file.to_path_buf(), line: e.line });
    }
    let mut authorities = Vec::new();
    for name in [lookup_name(host, port), lookup_name(host, 22)] {
        authorities.extend(entries.iter().filter(|(_, e)| e.marker == Marker::CertAuthority && e.host_matches(&name)));
        if !authorities.is_empty() || port == 22 || port == 0 {
            break;
        }
    }
    let Some((first_file, first)) = authorities.first() else {
        return Ok(CertVerdict::NoAuthority);
    };
    let Some((file, ca)) = authorities.iter().find(|(_, e)| e.key.key_data() == cert.signature_key()) else {
        let signer = PublicKey::new(cert.signature_key().clone(), "");
        let reason =
            format!("it is signed by CA {}, which known_hosts does not trust for this host", fingerprint(&signer));
        return Ok(CertVerdict::Invalid { file: first_file.to_path_buf(), line: first.line, reason });
    };
    let principal = host.to_ascii_lowercase();
    let when = |t: u64| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t));
    let reason = if cert.cert_type() != CertType::Host {
        Some("it is a user certificate, not a host certificate".to_string())
    } else if cert.verify_signature().is_err() {
        Some("its signature does not verify".to_string())
    } else if now < cert.valid_after() {
        Some(format!("it is not valid before {}", when(cert.valid_after())))
    } else if now >= cert.valid_before() {
        Some(format!("it expired at {}", when(cert.valid_before())))
    } else if !cert.valid_principals().is_empty() && !cert.valid_principals().contains(&principal) {
        Some(format!("it is for {}, not {principal}", cert.valid_principals().join(", ")))
    } else {
        None
    };
    Ok(match reason {
        Some(reason) => CertVerdict::Invalid { file: file.to_path_buf(), line: ca.line, reason },
        None => CertVerdict::Trusted { file: file.to_path_buf(), line: ca.line },
    })
}

/// Key algorithms already recorded for this host, in file order, deduplicated, so the client
/// can prefer them during negotiation as OpenSSH does. RSA keys appear as `ssh-rsa` (the key
/// type); the caller picks the rsa-sha2 signature algorithms for them. When `[host]:port` has
/// no lines, those of plain `host` are used, matching the fallback in [`check`] (ssh itself
/// does not do this here, so it may negotiate a type the fallback then cannot confirm).
pub fn recorded_algorithms(files: &[PathBuf], host: &str, port: u16) -> Result<Vec<Algorithm>, KnownHostsError> {
    let mut entries = Vec::new();
    for file in files {
        entries.extend(read_entries(file)?.into_iter().filter(|e| e.marker == Marker::Plain));
    }
    let mut algorithms = Vec::new();
    for name in [lookup_name(host, port), lookup_name(host, 22)] {
        for e in entries.iter().filter(|e| e.host_matches(&name)) {
            let algorithm = e.key.algorithm();
            if !algorithms.contains(&algorithm) {
                algorithms.push(algorithm);
            }
        }
        if !algorithms.is_empty() || port == 22 {
            break;
        }
    }
    Ok(algorithms)
}

/// Appends one line for host/port with this key, in the form ssh writes (`name type base64`).
///
/// Creates the file 0600 (and its parent directory 0700 if missing) and keeps the mode of an
/// existing file. The write happens under an exclusive `flock`, so concurrent delegate
/// processes never interleave lines, and a previous last line without a newline is
/// terminated first so the new line is not glued onto it.
pub fn append(path: &Path, host: &str, port: u16, key: &PublicKey) -> Result<(), KnownHostsError> {
    append_as(path, host, port, key, false)
}

/// [`append`], with the name hashed (`|1|salt|hmac`, as ssh writes under `HashKnownHosts yes`)
/// when `hashed`.
pub fn append_as(path: &Path, host: &str, port: u16, key: &PublicKey, hashed: bool) -> Result<(), KnownHostsError> {
    let write_err = |source| KnownHostsError::Write { path: path.to_path_buf(), source };
    let blob = key.to_bytes().map_err(|e| KnownHostsError::Encode {
        path: path.to_path_buf(),
        algorithm: key.algorithm().to_string(),
        message: e.to_string(),
    })?;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(write_err)?;
    }
    let mut file =
        fs::OpenOptions::new().read(true).append(true).create(true).mode(0o600).open(path).map_err(write_err)?;
    lock_exclusive(&file).map_err(write_err)?;
    // Only now, under the lock, is the file's end stable enough to inspect.
    let len = file.metadata().map_err(write_err)?.len();
    let mut line = String::new();
    if len > 0 {
        let mut last = [0u8; 1];
        file.read_exact_at(&mut last, len - 1).map_err(write_err)?;
        if last[0] != b'\n' {
            line.push('\n');
        }
    }
    let name = if hashed { hash_name(&lookup_name(host, port)) } else { lookup_name(host, port) };
    line.push_str(&format!("{name} {} {}\n", key.algorithm().as_str(), STANDARD.encode(blob)));
    // One write of the whole line; the lock is released when `file` is closed.
    file.write_all(line.as_bytes()).map_err(write_err)?;
    file.flush().map_err(write_err)
}

/// `SHA256:base64-without-padding`, exactly like `ssh-keygen -l`.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

fn lock_exclusive(file: &fs::File) -> io::Result<()> {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Plain,
    Revoked,
    CertAuthority,
}

struct Entry {
    marker: Marker,
    hosts: String,
    key: PublicKey,
    line: usize,
}

impl Entry {
    /// OpenSSH's match_maybe_hashed: a hashed field is one `|1|salt|hmac` token compared as a
    /// whole; otherwise a comma-separated pattern list where a negated match vetoes the line.
    fn host_matches(&self, name: &str) -> bool {
        if self.hosts.starts_with('|') {
            return hashed_name(&self.hosts, name).is_some_and(|h| h == self.hosts);
        }
        match_pattern_list(name, &self.hosts) == Some(true)
    }
}

/// Recomputes `|1|salt|hmac` for `name` with the salt taken from `field`, as ssh's host_hash
/// does; `None` when the field is not a well-formed hashed name.
fn hashed_name(field: &str, name: &str) -> Option<String> {
    let (salt, _) = field.strip_prefix("|1|")?.split_once('|')?;
    let salt = lenient_base64().decode(salt).ok().filter(|s| s.len() == 20)?;
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).ok()?;
    mac.update(name.as_bytes());
    let hash = mac.finalize().into_bytes();
    Some(format!("|1|{}|{}", STANDARD.encode(&salt), STANDARD.encode(hash)))
}

/// `|1|salt|hmac` for `name` with a fresh random salt, as ssh's host_hash.
fn hash_name(name: &str) -> String {
    use rand::RngCore;
    let mut salt = [0u8; 20];
    rand::rng().fill_bytes(&mut salt);
    hashed_name(&format!("|1|{}|", STANDARD.encode(salt)), name).expect("a 20-byte salt is well formed")
}

/// Like OpenSSH's b64_pton, accepts base64 with or without trailing padding.
fn lenient_base64() -> GeneralPurpose {
    let config = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    GeneralPurpose::new(&base64::alphabet::STANDARD, config)
}

fn read_entries(path: &Path) -> Result<Vec<Entry>, KnownHostsError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(KnownHostsError::Read { path: path.to_path_buf(), source });
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let entries = text.split('\n').enumerate();
    Ok(entries.filter_map(|(i, line)| parse_line(line, i + 1)).collect())
}

/// One line: `[@marker] patterns keytype base64 [comment]`. Lines ssh would skip (comments,
/// unknown markers, bad base64, a key type that does not match the key) give `None`.
fn parse_line(line: &str, number: usize) -> Option<Entry> {
    let rest = line.trim_end_matches(['\r', '\n']).trim_start_matches([' ', '\t']);
    if rest.is_empty() || rest.starts_with('#') {
        return None;
    }
    let (marker, rest) = match next_field(rest) {
        ("@revoked", r) => (Marker::Revoked, r),
        ("@cert-authority", r) => (Marker::CertAuthority, r),
        (m, _) if m.starts_with('@') => return None,
        _ => (Marker::Plain, rest),
    };
    let (hosts, rest) = next_field(rest);
    let (key_type, rest) = next_field(rest);
    let (blob, _comment) = next_field(rest);
    if hosts.is_empty() {
        return None;
    }
    let key = PublicKey::from_bytes(&lenient_base64().decode(blob).ok()?).ok()?;
    let type_ok = match key.algorithm() {
        // ssh accepts the RSA signature algorithm names as key types too.
        Algorithm::Rsa { .. } => matches!(key_type, "ssh-rsa" | "rsa-sha2-256" | "rsa-sha2-512"),
        other => key_type == other.as_str(),
    };
    type_ok.then(|| Entry { marker, hosts: hosts.to_string(), key, line: number })
}

fn next_field(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches([' ', '\t']);
    let end = s.find([' ', '\t']).unwrap_or(s.len());
    s.split_at(end)
}

/// OpenSSH's match_pattern: `*` and `?` wildcards over bytes, case-sensitive. Shared with
/// ssh_config, whose Host lines use the same matcher.
pub(crate) fn wildcard_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    // Where to resume after the last `*`: pattern index after it, and the next text index to try.
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p + 1, i));
            p += 1;
        } else if let Some((sp, si)) = star {
            p = sp;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// OpenSSH's match_pattern_list with lowercased patterns: comma-separated, `!` negates.
/// `Some(true)` on a positive match, `Some(false)` on a negated one, `None` when nothing matched.
pub(crate) fn match_pattern_list(s: &str, list: &str) -> Option<bool> {
    let mut positive = None;
    for pattern in list.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if wildcard_match(pattern.to_ascii_lowercase().as_bytes(), s.as_bytes()) {
            if negated {
                return Some(false);
            }
            positive = Some(true);
        }
    }
    positive
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::SeqCst);
            let dir = std::env::temp_dir().join(format!("delegate-known-hosts-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn keygen(dir: &Path, name: &str, kind: &str) -> PublicKey {
        let path = dir.join(name);
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", "", "-C", "", "-f"])
            .arg(&path)
            .status()
            .expect("run ssh-keygen")
            .success();
        assert!(ok, "ssh-keygen -t {kind} failed");
        PublicKey::from_openssh(&fs::read_to_string(path.with_extension("pub")).unwrap()).unwrap()
    }

    fn openssh_line(key: &PublicKey) -> String {
        format!("{} {}", key.algorithm().as_str(), STANDARD.encode(key.to_bytes().unwrap()))
    }

    /// A real sshd on loopback with ed25519, ECDSA and RSA host keys; killed on drop.
    struct Sshd {
        child: Child,
        port: u16,
        keys: Vec<(&'static str, PublicKey)>,
        _dir: Scratch,
    }

    impl Sshd {
        fn start() -> Sshd {
            let dir = Scratch::new("sshd");
            let mut config = String::new();
            let mut keys = Vec::new();
            for (kind, alg) in [("ed25519", "ssh-ed25519"), ("ecdsa", "ecdsa-sha2-nistp256"), ("rsa", "rsa-sha2-512")] {
                keys.push((alg, keygen(&dir.0, &format!("hk_{kind}"), kind)));
                config.push_str(&format!("HostKey {}\n", dir.0.join(format!("hk_{kind}")).display()));
            }
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            config.push_str(&format!(
                "ListenAddress 127.0.0.1:{port}\nPidFile {d}/sshd.pid\nUsePAM no\nStrictModes no\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n",
                d = dir.0.display()
            ));
            fs::write(dir.0.join("sshd_config"), config).unwrap();
            // sshd insists on its privilege-separation directory; creating it needs root.
            let _ = fs::create_dir_all("/run/sshd");
            let child = Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(dir.0.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start /usr/sbin/sshd (these tests need OpenSSH's server and root)");
            let sshd = Sshd { child, port, keys, _dir: dir };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                    let mut banner = [0u8; 8];
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    if io::Read::read_exact(&mut s, &mut banner).is_ok() && &banner == b"SSH-2.0-" {
                        return sshd;
                    }
                }
                assert!(Instant::now() < deadline, "sshd did not come up on port {port}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }

        fn key(&self, alg: &str) -> &PublicKey {
            &self.keys.iter().find(|(a, _)| *a == alg).unwrap().1
        }

        /// What real ssh decides for `files` when the server presents its `alg` key.
        fn ssh_verdict(&self, files: &[PathBuf], host: &str, alg: &str) -> &'static str {
            let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            let out = Command::new("ssh")
                .args([
                    "-F",
                    "none",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    "IdentityAgent=none",
                ])
                .args(["-o", "IdentitiesOnly=yes", "-o", "CheckHostIP=no", "-o", "GlobalKnownHostsFile=/dev/null"])
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", files.join(" ")))
                .arg("-o")
                .arg(format!("HostKeyAlgorithms={alg}"))
                .args(["-p", &self.port.to_string(), host, "true"])
                .stdin(Stdio::null())
                .output()
                .expect("run ssh");
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
                "changed"
            } else if err.contains("REVOKED HOST KEY") {
                "revoked"
            } else if err.contains("Permission denied") {
                "known"
            } else if err.contains("Host key verification failed") {
                "unknown"
            } else {
                panic!("unexpected ssh output: {err}")
            }
        }
    }

    impl Drop for Sshd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn verdict(status: &HostKeyStatus) -> &'static str {
        match status {
            HostKeyStatus::Known => "known",
            HostKeyStatus::Unknown => "unknown",
            HostKeyStatus::Changed { .. } => "changed",
            HostKeyStatus::Revoked { .. } => "revoked",
        }
    }

    #[test]
    fn decisions_match_real_openssh() {
        let sshd = Sshd::start();
        let work = Scratch::new("cases");
        let port = sshd.port;
        let ed = openssh_line(sshd.key("ssh-ed25519"));
        let ec = openssh_line(sshd.key("ecdsa-sha2-nistp256"));
        let rsa = openssh_line(sshd.key("rsa-sha2-512"));
        let other_ed = openssh_line(&keygen(&work.0, "other_ed", "ed25519"));
        let bracket = format!("[127.0.0.1]:{port}");
        let rsa_blob = rsa.split_once(' ').unwrap().1;
        let ed_blob = ed.split_once(' ').unwrap().1;
        // (case, known_hosts text, algorithm the server presents, host ssh connects to)
        let cases: Vec<(&str, String, &str, &str)> = vec![
            ("exact match", format!("{bracket} {ed}\n"), "ssh-ed25519", "127.0.0.1"),
            ("unknown", format!("10.1.1.1 {ed}\n[127.0.0.2]:{port} {ed}\n"), "ssh-ed25519", "127.0.0.1"),
            ("changed, same type", format!("{bracket} {other_ed}\n"), "ssh-ed25519", "127.0.0.1"),
            ("only another type recorded", format!("{bracket} {ec}\n"), "ssh-ed25519", "127.0.0.1"),
            (
                "several keys per host",
                format!("{bracket} {ec}\n{bracket} {rsa}\n{bracket} {ed}\n"),
                "ssh-ed25519",
                "127.0.0.1",
            ),
            ("several keys, rsa presented", format!("{bracket} {ec}\n{bracket} {rsa}\n"), "rsa-sha2-512", "127.0.0.1"),
            (
                "several keys, none matching",
                format!("{bracket} {ec}\n{bracket} {other_ed}\n"),
                "rsa-sha2-512",
                "127.0.0.1",
            ),
            ("revoked", format!("{bracket} {ed}\n@revoked {bracket} {ed}\n"), "ssh-ed25519", "127.0.0.1"),
            (
                "revoked by wildcard, other key changed",
                format!("{bracket} {other_ed}\n@revoked * {ed}\n"),
                "ssh-ed25519",
                "127.0.0.1",
            ),
            ("plain host on another port, same key", format!("127.0.0.1 {ed}\n"), "ssh-ed25519", "127.0.0.1"),
            ("plain host on another port, other key", format!("127.0.0.1 {other_ed}\n"), "ssh-ed25519", "127.0.0.1"),
            (
                "plain host known, port line changed",
                format!("127.0.0.1 {ed}\n{bracket} {other_ed}\n"),
                "ssh-ed25519",
                "127.0.0.1",
            ),
            ("host:port without brackets", format!("127.0.0.1:{port} {ed}\n"), "ssh-ed25519", "127.0.0.1"),
            ("wildcard", format!("[127.0.0.*]:{port} {ed}\n"), "ssh-ed25519", "127.0.0.1"),
            ("question mark", format!("[127.0.0.?]:{port} {ed}\n"), "ssh-ed25519", "127.0.0.1"),
            ("negation vetoes", format!("[127.0.0.*]:{port},!{bracket} {ed}\n"), "ssh-ed25519", "127.0.0.1"),
            ("negation elsewhere", format!("!10.0.0.1,{bracket} {ed}\n"), "ssh-ed25519", "127.0.0.1"),
            ("comma list", format!("example.org,{bracket},10.0.0.1 {ed}\n"), "ssh-ed25519", "127.0.0.1"),
            (
                "tabs and extra spaces",
                format!("  \t{bracket}\t \t{}\t  {} comment here\n", "ssh-ed25519", ed_blob),
                "ssh-ed25519",
                "127.0.0.1",
            ),
            ("crlf", format!("# comment\r\n\r\n{bracket} {ed}\r\n"), "ssh-ed25519", "127.0.0.1"),
            (
                "bad base64 line first",
                format!("{bracket} ssh-ed25519 AAAA%%%notbase64\n{bracket} {ed}\n"),
                "ssh-ed25519",
                "127.0.0.1",
            ),
            ("bad line only", format!("{bracket} ssh-ed25519 AAAA%%%notbase64\n"), "ssh-ed25519", "127.0.0.1"),
            ("key type does not match blob", format!("{bracket} ssh-rsa {ed_blob}\n"), "ssh-ed25519", "127.0.0.1"),
            ("unknown key type", format!("{bracket} ssh-foo {ed_blob}\n"), "ssh-ed25519", "127.0.0.1"),
            ("rsa-sha2-512 as key type", format!("{bracket} rsa-sha2-512 {rsa_blob}\n"), "rsa-sha2-512", "127.0.0.1"),
            ("unknown marker", format!("@bogus {bracket} {ed}\n"), "ssh-ed25519", "127.0.0.1"),
            ("cert-authority only", format!("@cert-authority {bracket} {ed}\n"), "ssh-ed25519", "127.0.0.1"),
            ("uppercase in file", format!("[LOCALHOST]:{port} {ed}\n"), "ssh-ed25519", "localhost"),
            ("uppercase typed", format!("[localhost]:{port} {ed}\n"), "ssh-ed25519", "LocalHost"),
            ("uppercase typed, changed", format!("[localhost]:{port} {other_ed}\n"), "ssh-ed25519", "LocalHost"),
        ];
        for (i, (case, text, alg, host)) in cases.iter().enumerate() {
            let file = work.0.join(format!("kh{i}"));
            fs::write(&file, text).unwrap();
            let ours = check(std::slice::from_ref(&file), host, port, sshd.key(alg)).unwrap();
            let theirs = sshd.ssh_verdict(std::slice::from_ref(&file), host, alg);
            assert_eq!(verdict(&ours), theirs, "case {case:?}: ours {ours:?}\n{text}");
        }
    }

    #[test]
    fn multiple_files_hashed_entries_and_deliberate_differences() {
        let sshd = Sshd::start();
        let work = Scratch::new("files");
        let port = sshd.port;
        let ed = sshd.key("ssh-ed25519");
        let bracket = format!("[127.0.0.1]:{port}");
        let missing = work.0.join("missing");
        let first = work.0.join("first");
        let second = work.0.join("second");
        fs::write(&first, format!("# nothing for this host\n10.0.0.1 {}\n", openssh_line(ed))).unwrap();
        fs::write(&second, format!("{bracket} {}\n", openssh_line(ed))).unwrap();
        let files = [missing.clone(), first.clone(), second.clone()];
        assert_eq!(check(&files, "127.0.0.1", port, ed).unwrap(), HostKeyStatus::Known);
        assert_eq!(sshd.ssh_verdict(&files, "127.0.0.1", "ssh-ed25519"), "known");

        fs::write(&first, format!("@revoked 10.9.9.9 {}\n", openssh_line(ed))).unwrap();
        let revoked = check(&files, "127.0.0.1", port, ed).unwrap();
        assert_eq!(revoked, HostKeyStatus::Revoked { file: first.clone(), line: 1 });
        // Deliberately stricter: ssh only honours @revoked for hosts its patterns match.
        assert_eq!(sshd.ssh_verdict(&files, "127.0.0.1", "ssh-ed25519"), "known");

        // Hashed names, made by ssh-keygen -H, for an IP:port and for a name typed in capitals.
        let hashed = work.0.join("hashed");
        fs::write(&hashed, format!("{bracket} {}\n[localhost]:{port} {}\n", openssh_line(ed), openssh_line(ed)))
            .unwrap();
        let ok = Command::new("ssh-keygen").arg("-H").arg("-f").arg(&hashed).output().unwrap().status.success();
        assert!(ok, "ssh-keygen -H failed");
        let text = fs::read_to_string(&hashed).unwrap();
        assert!(text.lines().all(|l| l.starts_with("|1|")), "{text}");
        let files = [hashed.clone()];
        for host in ["127.0.0.1", "LocalHost"] {
            assert_eq!(check(&files, host, port, ed).unwrap(), HostKeyStatus::Known, "{host}");
            assert_eq!(sshd.ssh_verdict(&files, host, "ssh-ed25519"), "known", "{host}");
        }
        let other = sshd.key("ecdsa-sha2-nistp256");
        assert!(matches!(check(&files, "127.0.0.1", port, other).unwrap(), HostKeyStatus::Changed { line: 1, .. }));
        assert_eq!(sshd.ssh_verdict(&files, "127.0.0.1", "ecdsa-sha2-nistp256"), "changed");
        assert_eq!(check(&files, "127.0.0.2", port, ed).unwrap(), HostKeyStatus::Unknown);
    }

    #[test]
    fn changed_reports_the_recorded_key_of_the_presented_type() {
        let work = Scratch::new("changed");
        let ec = keygen(&work.0, "ec", "ecdsa");
        let ed_old = keygen(&work.0, "ed_old", "ed25519");
        let ed_new = keygen(&work.0, "ed_new", "ed25519");
        let file = work.0.join("kh");
        fs::write(&file, format!("h {}\nh {}\n", openssh_line(&ec), openssh_line(&ed_old))).unwrap();
        let status = check(std::slice::from_ref(&file), "h", 22, &ed_new).unwrap();
        let recorded = format!("ssh-ed25519 {}", fingerprint(&ed_old));
        assert_eq!(status, HostKeyStatus::Changed { file: file.clone(), line: 2, recorded });
        let rsa = keygen(&work.0, "rsa", "rsa");
        let status = check(std::slice::from_ref(&file), "h", 22, &rsa).unwrap();
        assert!(matches!(status, HostKeyStatus::Changed { line: 1, .. }), "{status:?}");
    }

    #[test]
    fn recorded_algorithms_in_file_order() {
        let work = Scratch::new("algs");
        let ec = keygen(&work.0, "ec", "ecdsa");
        let ed = keygen(&work.0, "ed", "ed25519");
        let rsa = keygen(&work.0, "rsa", "rsa");
        let file = work.0.join("kh");
        fs::write(
            &file,
            format!(
                "[h]:2222 {}\n[h]:2222 {}\nh {}\n[h]:2222 {}\n@revoked [h]:2222 {}\n",
                openssh_line(&rsa),
                openssh_line(&ec),
                openssh_line(&ed),
                openssh_line(&ec),
                openssh_line(&ed)
            ),
        )
        .unwrap();
        let files = [file];
        let algs = recorded_algorithms(&files, "H", 2222).unwrap();
        assert_eq!(algs, vec![rsa.algorithm(), ec.algorithm()]);
        assert_eq!(recorded_algorithms(&files, "h", 22).unwrap(), vec![ed.algorithm()]);
        assert_eq!(recorded_algorithms(&files, "h", 2200).unwrap(), vec![ed.algorithm()], "falls back to plain host");
        assert!(recorded_algorithms(&files, "x", 22).unwrap().is_empty());
    }

    #[test]
    fn lookup_names() {
        assert_eq!(lookup_name("Host.Example", 22), "host.example");
        assert_eq!(lookup_name("host", 2222), "[host]:2222");
        assert_eq!(lookup_name("::1", 2222), "[::1]:2222");
    }

    #[test]
    fn fingerprint_matches_ssh_keygen() {
        let work = Scratch::new("fp");
        for kind in ["ed25519", "ecdsa", "rsa"] {
            let key = keygen(&work.0, kind, kind);
            let out = Command::new("ssh-keygen").arg("-lf").arg(work.0.join(format!("{kind}.pub"))).output().unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            assert_eq!(text.split_whitespace().nth(1), Some(fingerprint(&key).as_str()), "{kind}: {text}");
        }
    }

    #[test]
    fn append_creates_private_file_and_parent() {
        let work = Scratch::new("append");
        let key = keygen(&work.0, "k", "ed25519");
        let path = work.0.join("new/dir/known_hosts");
        append(&path, "Host.Example", 2222, &key).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("[host.example]:2222 {}\n", openssh_line(&key)));
        assert_eq!(check(std::slice::from_ref(&path), "host.example", 2222, &key).unwrap(), HostKeyStatus::Known);
        let out =
            Command::new("ssh-keygen").arg("-F").arg("[host.example]:2222").arg("-f").arg(&path).output().unwrap();
        assert!(out.status.success(), "ssh-keygen -F cannot find the appended line");
    }

    #[test]
    fn append_keeps_mode_and_terminates_last_line() {
        let work = Scratch::new("mode");
        let key = keygen(&work.0, "k", "ecdsa");
        let path = work.0.join("known_hosts");
        fs::write(&path, "other ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE1d1Ps0+2OZl2nX8kPWB1KZFWEFnaO7nq9i9ZdMlBVd")
            .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        append(&path, "h", 22, &key).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[1], format!("h {}", openssh_line(&key)));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn concurrent_appends_never_interleave() {
        let work = Scratch::new("concurrent");
        let keys: Vec<PublicKey> =
            (0..4).map(|i| keygen(&work.0, &format!("k{i}"), if i % 2 == 0 { "rsa" } else { "ed25519" })).collect();
        let path = work.0.join("known_hosts");
        std::thread::scope(|s| {
            for (t, key) in keys.iter().enumerate() {
                let path = &path;
                s.spawn(move || {
                    for i in 0..50 {
                        append(path, &format!("host{t}-{i}"), 22, key).unwrap();
                    }
                });
            }
        });
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 200);
        for line in text.lines() {
            let entry = parse_line(line, 1).unwrap_or_else(|| panic!("mangled line {line:?}"));
            let t: usize = entry.hosts.trim_start_matches("host").split('-').next().unwrap().parse().unwrap();
            assert_eq!(entry.key.key_data(), keys[t].key_data());
        }
    }

    #[test]
    fn unreadable_files_are_errors_and_missing_ones_are_skipped() {
        let work = Scratch::new("errors");
        let key = keygen(&work.0, "k", "ed25519");
        assert_eq!(check(&[work.0.join("nope")], "h", 22, &key).unwrap(), HostKeyStatus::Unknown);
        let err = check(std::slice::from_ref(&work.0), "h", 22, &key).unwrap_err();
        assert!(matches!(err, KnownHostsError::Read { .. }), "{err}");
        assert!(err.to_string().contains("cannot read known_hosts file"));
    }

    /// C7 at the writer: many threads appending different hosts to one file at once, each
    /// through its own open file (as separate processes would). Every line must come out
    /// whole and exactly once; `ssh-keygen -l` must read every key back.
    #[test]
    fn concurrent_appends_of_different_hosts_keep_every_line_whole() {
        const THREADS: usize = 16;
        const EACH: usize = 150;
        let work = Scratch::new("c7");
        let keys: Vec<PublicKey> = ["ed25519", "ecdsa", "rsa"].iter().map(|k| keygen(&work.0, k, k)).collect();
        let file = work.0.join("known_hosts");
        // Unterminated last line: exactly one writer may terminate it.
        fs::write(&file, "# shared").unwrap();
        let barrier = std::sync::Barrier::new(THREADS);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (file, keys, barrier) = (&file, &keys, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    for i in 0..EACH {
                        append(file, &format!("h{t}-{i}.example"), 2222, &keys[(t + i) % keys.len()]).unwrap();
                    }
                });
            }
        });
        let text = fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# shared");
        assert_eq!(lines.len(), 1 + THREADS * EACH, "lines lost or split");
        let mut seen = std::collections::BTreeSet::new();
        for (n, line) in lines[1..].iter().enumerate() {
            let e = parse_line(line, n + 2).unwrap_or_else(|| panic!("line {} is not whole: {line:?}", n + 2));
            let (t, i) = e.hosts.trim_start_matches("[h").split_once('.').unwrap().0.split_once('-').unwrap();
            let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
            assert_eq!(e.hosts, format!("[h{t}-{i}.example]:2222"));
            assert_eq!(e.key.key_data(), keys[(t + i) % keys.len()].key_data(), "{line}");
            assert!(seen.insert(e.hosts.clone()), "{} twice", e.hosts);
        }
        let out = Command::new("ssh-keygen").arg("-l").arg("-f").arg(&file).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), THREADS * EACH, "ssh-keygen -l");
    }
}
