//! Test support for `delegate`: real OpenSSH `sshd` instances on loopback,
//! each acting as one "remote host", with fake coding-agent executables
//! (`claude`, `codex`) on that host's `PATH`.
//!
//! Tests point the `delegate` CLI/library at a [`FakeHost`] (address, port,
//! user, client key, known_hosts line) and afterwards inspect what happened on
//! the "remote" side: [`FakeHost::agent_records`], [`FakeHost::tmux`], files
//! under [`FakeHost::remote_root`], [`FakeHost::sshd_log`].
//!
//! ```no_run
//! use std::time::Duration;
//! use delegate_testkit::FakeHost;
//!
//! let host = FakeHost::start();
//! let out = host
//!     .ssh("printf 'hello' | claude -p --session-id abc")
//!     .output()
//!     .unwrap();
//! assert!(out.status.success());
//! let records = host.wait_for_agent_records(1, Duration::from_secs(5));
//! assert_eq!(records[0].name, "claude");
//! assert_eq!(records[0].stdin_bytes, 5);
//! ```
//!
//! # Users
//!
//! When the test process runs as root, `sshd` runs as root and the remote
//! login user is the dedicated account [`ROOT_TEST_USER`] (`dlgtest`), created
//! once by `scripts/test.sh`. Otherwise `sshd` runs unprivileged and the login
//! user is the current user. See [`test_user`].
//!
//! # How `PATH` and `TMUX_TMPDIR` reach the SSH session
//!
//! Through `SetEnv TMUX_TMPDIR=<dir>/tmux PATH=<dir>/bin:<system path>` in the
//! host's `sshd_config` (OpenSSH applies admin `SetEnv` after its own default
//! `PATH`, so it wins). This was verified with OpenSSH 9.2: a command run over
//! SSH sees exactly that `PATH`. It holds for commands run by a non-login
//! shell (`bash -c`, `bash -s`); a *login* shell (`bash -l`) re-reads
//! `/etc/profile`, which resets `PATH` on Debian.
//!
//! # Layout of a host directory (`/tmp/dlgtk-<pid>-<n>`)
//!
//! ```text
//! etc/                  sshd_config, host_key(.pub), authorized_keys
//! client/               id_ed25519(.pub) (the client key), known_hosts
//! bin/                  claude, codex (fake agents)        [remote user]
//! path/                 symlink farm (only with path_without)
//! root/                 delegate's remote_root             [remote user]
//! work/                 a work directory                   [remote user]
//! tmux/                 TMUX_TMPDIR of the SSH sessions    [remote user]
//! tmp/                  scratch for the fake agents        [remote user]
//! agent-records.jsonl   one JSON line per agent run        [remote user]
//! agent-mode            ok | fail:N | sleep:S (absent = ok)
//! sshd.log, sshd.pid
//! ```
//!
//! # Teardown
//!
//! Drop kills the host's `tmux -L delegate` server and its pane process
//! groups, stops `sshd`, then SIGKILLs every remaining process of the host:
//! descendants of that sshd, and any process whose environment holds the
//! host's `TMUX_TMPDIR` (everything started over SSH inherits it, including
//! daemonized or `setsid` processes), whose command line mentions the host
//! dir, or whose cwd is inside it. Then the directory is deleted; set
//! `DELEGATE_TEST_KEEP=1` to keep it (its path is printed). When dropped
//! during a panic, [`FakeHost::diagnostics`] is printed to stderr first.
//!
//! If the test process dies without running Drop (crash, SIGKILL on timeout),
//! a small watchdog `sh` still stops that host's `sshd`; the directory stays.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{CStr, CString, OsStr};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::Digest as _;

mod accept;
pub mod agentbus;
pub mod brothers;
pub mod model;
pub mod nats;
pub mod proxy;
// A webhook receiver: a real HTTP server on loopback that records each request.
pub mod webhook;
pub use proxy::{Fault, FaultProxy};

/// The login user of fake hosts when the tests run as root.
///
/// Create it once with `scripts/test.sh`, or by hand:
/// `useradd -m -s /bin/bash dlgtest && usermod -p '*' dlgtest`.
pub const ROOT_TEST_USER: &str = "dlgtest";

/// The tmux socket name (`tmux -L <name>`) that delegate uses and that
/// [`FakeHost::tmux`] talks to.
pub const TMUX_SOCKET_NAME: &str = "delegate";

/// Loopback address every fake host listens on.
pub const ADDRESS: &str = "127.0.0.1";

/// Absolute path of the OpenSSH server (sshd refuses to run from a relative path).
const SSHD: &str = "/usr/sbin/sshd";

/// System directories used for the remote `PATH` (and the symlink farm), in order.
const SYSTEM_PATH_DIRS: [&str; 6] = ["/usr/local/bin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Persona names of the fake agents.
const FAKE_AGENTS: [&str; 2] = ["claude", "codex"];

/// The fake agent script; placeholders are filled in by [`fake_agent_script`].
const FAKE_AGENT_TEMPLATE: &str = include_str!("fake_agent.sh");

/// How long `sshd` may take to accept connections.
const SSHD_READY_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for helper commands (ssh-keygen, sshd -t, tmux, runuser).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------

/// A passwd entry.
#[derive(Clone, Debug)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

enum PwKey<'a> {
    Name(&'a str),
    Uid(u32),
}

fn lookup_account(key: PwKey<'_>) -> Option<Account> {
    let mut buf: Vec<libc::c_char> = vec![0; 1 << 16];
    // SAFETY: passwd is plain old data; all-zero is a valid (empty) value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = match key {
        PwKey::Name(name) => {
            let cname = CString::new(name).ok()?;
            // SAFETY: all pointers are valid for the duration of the call and
            // buf.len() is the real size of buf.
            unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) }
        }
        // SAFETY: as above.
        PwKey::Uid(uid) => unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) },
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success pw_name/pw_dir point to NUL-terminated strings in buf.
    let (name, home) = unsafe {
        (
            CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned(),
            PathBuf::from(OsStr::from_bytes(CStr::from_ptr(pwd.pw_dir).to_bytes())),
        )
    };
    Some(Account { name, uid: pwd.pw_uid, gid: pwd.pw_gid, home })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The remote login user of fake hosts: [`ROOT_TEST_USER`] (`dlgtest`) when
/// the test process is root, otherwise the current user's name.
/// The sshd_config lines every loopback host of ours shares (the test kit's and the
/// benchmark's): listen address, keys and pid file under `dir`, key login only, no PAM, no
/// forwarding of any kind, no PTY, no DNS. Callers add their limits, log level and users.
pub fn hardened_sshd_config(dir: &Path, listen: &str) -> String {
    let d = dir.display();
    format!(
        "ListenAddress {listen}\n\
         HostKey {d}/etc/host_key\n\
         AuthorizedKeysFile {d}/etc/authorized_keys\n\
         PidFile {d}/sshd.pid\n\
         UsePAM no\n\
         StrictModes no\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin no\n\
         AllowTcpForwarding no\n\
         AllowAgentForwarding no\n\
         X11Forwarding no\n\
         PermitTTY no\n\
         PermitUserEnvironment no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         UseDNS no\n"
    )
}

pub fn test_user() -> String {
    if is_root() {
        return ROOT_TEST_USER.to_string();
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    lookup_account(PwKey::Uid(uid))
        .map(|a| a.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| panic!("delegate-testkit: no passwd entry for uid {uid}"))
}

fn remote_account() -> Account {
    let name = test_user();
    match lookup_account(PwKey::Name(&name)) {
        Some(account) => account,
        None if is_root() => panic!(
            "delegate-testkit: the tests run as root, so the fake SSH hosts log in as the \
             user `{ROOT_TEST_USER}`, which does not exist. Run `scripts/test.sh` once \
             (it creates it), or create it by hand:\n    \
             useradd -m -s /bin/bash {ROOT_TEST_USER} && usermod -p '*' {ROOT_TEST_USER}"
        ),
        None => panic!("delegate-testkit: no passwd entry for the current user `{name}`"),
    }
}

// ---------------------------------------------------------------------------
// Small public helpers
// ---------------------------------------------------------------------------

/// Generate a keypair with `ssh-keygen` in `dir` (no passphrase).
///
/// `key_type` is `ed25519`, `ecdsa` or `rsa` (RSA keys are 2048 bits, for
/// speed). An existing key at `dir/name` is replaced. Returns the private key
/// path (mode 0600) and the public key as `"<type> <base64>"` (no comment).
pub fn keygen(dir: &Path, name: &str, key_type: &str) -> (PathBuf, String) {
    let private = dir.join(name);
    let public = dir.join(format!("{name}.pub"));
    let _ = fs::remove_file(&private);
    let _ = fs::remove_file(&public);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", key_type, "-N", "", "-C", "delegate-testkit", "-f"]).arg(&private);
    if key_type == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    let out = run_with_timeout(&mut cmd, COMMAND_TIMEOUT)
        .unwrap_or_else(|e| panic!("delegate-testkit: cannot run ssh-keygen: {e}"));
    if !out.status.success() {
        panic!(
            "delegate-testkit: ssh-keygen -t {key_type} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = fs::set_permissions(&private, fs::Permissions::from_mode(0o600));
    let text = fs::read_to_string(&public)
        .unwrap_or_else(|e| panic!("delegate-testkit: cannot read {}: {e}", public.display()));
    let line = text.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    (private, line)
}

/// A TCP port on 127.0.0.1 that nothing listens on right now (bind port 0,
/// read the port, close). Good for "host unreachable" tests; racy by nature.
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("delegate-testkit: cannot bind 127.0.0.1:0: {e}"));
    listener.local_addr().expect("delegate-testkit: local_addr of a bound listener").port()
}

/// Lower-case hex SHA-256 of `data` (the format of [`AgentRecord::stdin_sha256`]).
pub fn sha256_hex(data: impl AsRef<[u8]>) -> String {
    let digest = sha2::Sha256::digest(data.as_ref());
    let mut hex = String::with_capacity(64);
    for byte in digest.iter() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

// ---------------------------------------------------------------------------
// Agent records
// ---------------------------------------------------------------------------

/// One invocation of a fake agent (one line of `<dir>/agent-records.jsonl`).
///
/// `--version` probes are not recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentRecord {
    /// Persona: `"claude"` or `"codex"` (basename of argv\[0\]).
    pub name: String,
    /// argv\[1..\], byte-exact.
    pub argv: Vec<Vec<u8>>,
    /// Physical working directory (`pwd -P`).
    pub cwd: PathBuf,
    /// Lower-case hex SHA-256 of everything read from stdin (see [`sha256_hex`]).
    pub stdin_sha256: String,
    /// Number of bytes read from stdin (0 when stdin was a terminal: then
    /// nothing is read).
    pub stdin_bytes: u64,
    /// The agent's complete initial environment (from `/proc/<pid>/environ`),
    /// lossily converted to UTF-8; includes PATH, HOME, TERM (when set) and
    /// every `DELEGATE_*` variable.
    pub env: BTreeMap<String, String>,
    /// Process id of the agent (the bash running the fake script).
    pub pid: u32,
    /// Whether stdin was a terminal (`[ -t 0 ]`).
    pub stdin_is_tty: bool,
    /// Parent process id.
    pub ppid: u32,
    /// The agent mode in effect (`ok`, `fail:N`, `sleep:S`).
    pub mode: String,
    /// Start time, seconds since the Unix epoch (bash `$EPOCHREALTIME`).
    pub time: f64,
}

impl AgentRecord {
    /// argv\[1..\] as (lossy) UTF-8 strings.
    pub fn args(&self) -> Vec<String> {
        self.argv.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect()
    }

    /// Whether `arg` appears verbatim in argv\[1..\].
    pub fn has_arg(&self, arg: &str) -> bool {
        self.argv.iter().any(|a| a.as_slice() == arg.as_bytes())
    }

    /// The argument following the first occurrence of `flag`, e.g.
    /// `arg_value("--session-id")`.
    pub fn arg_value(&self, flag: &str) -> Option<String> {
        let i = self.argv.iter().position(|a| a.as_slice() == flag.as_bytes())?;
        self.argv.get(i + 1).map(|a| String::from_utf8_lossy(a).into_owned())
    }

    /// Parse one JSON line as written by the fake agent.
    pub fn parse_line(line: &str) -> Result<AgentRecord, String> {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON ({e}): {line}"))?;
        let str_field = |k: &str| -> Result<String, String> {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("missing string field `{k}` in {line}"))
        };
        let u64_field = |k: &str| -> Result<u64, String> {
            v.get(k).and_then(|x| x.as_u64()).ok_or_else(|| format!("missing integer field `{k}` in {line}"))
        };
        let b64 = |s: &str| -> Result<Vec<u8>, String> {
            base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| format!("bad base64 {s:?} ({e}) in {line}"))
        };
        let argv = v
            .get("argv")
            .and_then(|x| x.as_array())
            .ok_or_else(|| format!("missing `argv` in {line}"))?
            .iter()
            .map(|a| b64(a.as_str().unwrap_or("!")))
            .collect::<Result<Vec<_>, _>>()?;
        let cwd = PathBuf::from(OsStr::from_bytes(&b64(&str_field("cwd")?)?));
        let mut env = BTreeMap::new();
        for entry in b64(&str_field("environ")?)?.split(|b| *b == 0) {
            if entry.is_empty() {
                continue;
            }
            let (k, val) = match entry.iter().position(|b| *b == b'=') {
                Some(i) => (&entry[..i], &entry[i + 1..]),
                None => (entry, &b""[..]),
            };
            env.insert(String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(val).into_owned());
        }
        Ok(AgentRecord {
            name: str_field("name")?,
            argv,
            cwd,
            stdin_sha256: str_field("stdin_sha256")?,
            stdin_bytes: u64_field("stdin_bytes")?,
            env,
            pid: u64_field("pid")? as u32,
            stdin_is_tty: v
                .get("stdin_is_tty")
                .and_then(|x| x.as_bool())
                .ok_or_else(|| format!("missing `stdin_is_tty` in {line}"))?,
            ppid: u64_field("ppid").unwrap_or(0) as u32,
            mode: str_field("mode").unwrap_or_default(),
            time: str_field("time").ok().and_then(|t| t.replace(',', ".").parse().ok()).unwrap_or(0.0),
        })
    }
}

/// Parse complete lines (a trailing line without `\n` may still be being
/// written and is skipped). Panics on a malformed complete line.
fn parse_agent_records(text: &str) -> Vec<AgentRecord> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => return Vec::new(),
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| AgentRecord::parse_line(l).unwrap_or_else(|e| panic!("delegate-testkit: bad agent record: {e}")))
        .collect()
}

// ---------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------

/// Configures a [`FakeHost`]; obtained from [`FakeHost::builder`].
#[derive(Clone, Debug)]
pub struct FakeHostBuilder {
    path_without: Vec<String>,
    fake_agents: bool,
    host_key_type: String,
    log_level: String,
    login_umask: Option<u32>,
    extra_config: String,
    host_certificate: Option<HostCertificate>,
    own_home: bool,
    allow_tcp_forwarding: bool,
    max_sessions: u32,
}

/// How [`FakeHostBuilder::host_certificate`] signs the host key.
#[derive(Clone, Debug)]
struct HostCertificate {
    ca_key: PathBuf,
    principals: String,
    validity: Option<String>,
}

impl Default for FakeHostBuilder {
    fn default() -> Self {
        FakeHostBuilder {
            path_without: Vec::new(),
            fake_agents: true,
            host_key_type: "ed25519".to_string(),
            log_level: "VERBOSE".to_string(),
            login_umask: None,
            extra_config: String::new(),
            host_certificate: None,
            own_home: false,
            allow_tcp_forwarding: false,
            max_sessions: 64,
        }
    }
}

impl FakeHostBuilder {
    /// Hide `tools` (e.g. `"tmux"`, `"bwrap"`) from the remote `PATH`.
    ///
    /// The remote `PATH` becomes `<dir>/bin:<dir>/path`, where `<dir>/path`
    /// is a symlink farm of `/usr/local/bin`, `/usr/bin`, `/bin`,
    /// `/usr/local/sbin`, `/usr/sbin`, `/sbin` minus these names (and minus
    /// `claude`/`codex`). Absolute paths such as `/usr/bin/tmux` still work.
    /// May be called several times; the names accumulate.
    pub fn path_without(mut self, tools: &[&str]) -> Self {
        self.path_without.extend(tools.iter().map(|t| t.to_string()));
        self
    }

    /// Do not install the fake `claude`/`codex`; no `claude` or `codex` is
    /// on the remote `PATH` at all (a real one in a system dir is hidden via
    /// the symlink farm).
    pub fn without_fake_agents(mut self) -> Self {
        self.fake_agents = false;
        self
    }

    /// Host key type: `"ed25519"` (default), `"ecdsa"` or `"rsa"`.
    pub fn host_key_type(mut self, key_type: &str) -> Self {
        assert!(
            matches!(key_type, "ed25519" | "ecdsa" | "rsa"),
            "delegate-testkit: unsupported host key type {key_type:?}"
        );
        self.host_key_type = key_type.to_string();
        self
    }

    /// sshd `LogLevel` (default `VERBOSE`); `DEBUG3` logs every channel request (S11).
    pub fn log_level(mut self, level: &str) -> Self {
        assert!(level.bytes().all(|b| b.is_ascii_alphanumeric()), "delegate-testkit: bad sshd log level {level:?}");
        self.log_level = level.to_string();
        self
    }

    /// The umask SSH sessions start with (the remote login umask, S10). sshd runs with it,
    /// but sshd itself forces at least 022 (`umask(077) | 022` at start-up), so the sessions'
    /// bash also gets it from `SetEnv BASH_ENV=<dir>/etc/login-umask.sh` (read by every
    /// non-interactive bash, like a user's rc file that sets one). Default: sshd's own.
    pub fn login_umask(mut self, umask: u32) -> Self {
        assert!(umask <= 0o777, "delegate-testkit: bad umask {umask:o}");
        self.login_umask = Some(umask);
        self
    }

    /// Extra `sshd_config` lines, appended after the kit's own (e.g. `"RekeyLimit 256K"`,
    /// F16). May be called several times; the lines accumulate. sshd takes the first value
    /// of most keywords, so this cannot override a line the kit writes itself.
    /// Give SSH sessions a home of their own, `<dir>/home` (owned by the remote user), through
    /// `SetEnv HOME=...`: bash, the agents and their start-up files (`~/.profile`,
    /// `~/.bashrc`, `~/.codex`) then see it, so each host can be set up the way a person set
    /// up theirs without touching the shared account's real home. sshd still starts the
    /// session in the passwd home; delegate never relies on the starting directory.
    pub fn own_home(mut self) -> Self {
        self.own_home = true;
        self
    }

    /// `AllowTcpForwarding yes` in place of the kit's `no`, for a bastion that ProxyJump
    /// (`direct-tcpip`) and `ssh -W` go through. A separate switch because sshd takes the
    /// first value of a keyword, so [`extra_config`](Self::extra_config) cannot override it.
    pub fn allow_tcp_forwarding(mut self) -> Self {
        self.allow_tcp_forwarding = true;
        self
    }

    /// sshd's `MaxSessions`: session channels allowed at once per connection (the kit's
    /// default is 64; OpenSSH's own is 10). A separate switch, as for forwarding: sshd takes
    /// the first value of a keyword.
    pub fn max_sessions(mut self, n: u32) -> Self {
        self.max_sessions = n;
        self
    }

    pub fn extra_config(mut self, lines: &str) -> Self {
        self.extra_config.push_str(lines);
        if !self.extra_config.ends_with('\n') {
            self.extra_config.push('\n');
        }
        self
    }

    /// Sign the host key with the CA private key `ca_key` (`ssh-keygen -s ca_key -h -n
    /// principals [-V validity]`) and serve the certificate (`HostCertificate`), for the
    /// host-certificate checks (S5). `validity` is ssh-keygen's `-V` syntax, e.g.
    /// `"-1d:-1h"` for an expired certificate; `None` means forever.
    pub fn host_certificate(mut self, ca_key: &Path, principals: &str, validity: Option<&str>) -> Self {
        self.host_certificate = Some(HostCertificate {
            ca_key: ca_key.to_path_buf(),
            principals: principals.to_string(),
            validity: validity.map(str::to_string),
        });
        self
    }

    /// Create the host directory, keys and fake agents, start `sshd` and wait
    /// until it accepts connections. Panics (with the sshd log) on failure.
    pub fn start(self) -> FakeHost {
        let account = remote_account();
        let as_root = is_root();
        let dir = create_host_dir(as_root);
        let mut host = FakeHost {
            dir,
            port: 0,
            account,
            as_root,
            client_key: PathBuf::new(),
            host_public_key: String::new(),
            remote_path: String::new(),
            tmux_bin: find_program("tmux", &["/usr/bin", "/bin", "/usr/local/bin"]),
            runuser_bin: find_program("runuser", &["/usr/sbin", "/sbin", "/usr/bin", "/bin"]),
            env_bin: find_program("env", &["/usr/bin", "/bin"]),
            log_level: self.log_level.clone(),
            login_umask: self.login_umask,
            extra_config: String::new(),
            own_home: None,
            allow_tcp_forwarding: self.allow_tcp_forwarding,
            max_sessions: self.max_sessions,
            sshd: None,
            watchdog: None,
        };
        // From here on, a panic drops `host`, which tears down what exists.
        host.setup_files(&self);
        host.launch_sshd();
        host
    }
}

fn find_program(name: &str, dirs: &[&str]) -> PathBuf {
    dirs.iter().map(|d| Path::new(d).join(name)).find(|p| p.exists()).unwrap_or_else(|| PathBuf::from(name))
}

/// `/tmp/dlgtk-<pid>-<n>`: short (the tmux socket path must fit in 108
/// bytes) and unique without global state (`mkdir` is atomic).
fn create_host_dir(as_root: bool) -> PathBuf {
    let pid = std::process::id();
    for n in 0..100_000u32 {
        let dir = PathBuf::from(format!("/tmp/dlgtk-{pid}-{n}"));
        match fs::create_dir(&dir) {
            Ok(()) => {
                // root: others (the remote user) may traverse but not list.
                let mode = if as_root { 0o711 } else { 0o700 };
                set_mode(&dir, mode);
                return dir;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("delegate-testkit: cannot create {}: {e}", dir.display()),
        }
    }
    panic!("delegate-testkit: no free /tmp/dlgtk-{pid}-<n> directory name");
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("delegate-testkit: chmod {:o} {}: {e}", mode, path.display()));
}

fn write_file(path: &Path, contents: impl AsRef<[u8]>, mode: u32) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("delegate-testkit: cannot write {}: {e}", path.display()));
    set_mode(path, mode);
}

fn mkdir(path: &Path, mode: u32) {
    fs::create_dir(path).unwrap_or_else(|e| panic!("delegate-testkit: cannot mkdir {}: {e}", path.display()));
    set_mode(path, mode);
}

fn fake_agent_script(dir: &Path) -> String {
    let tool = |name: &str| -> String { find_program(name, &["/usr/bin", "/bin"]).to_string_lossy().into_owned() };
    FAKE_AGENT_TEMPLATE
        .replace("@DLGTK_DIR@", &dir.to_string_lossy())
        .replace("@BASE64@", &tool("base64"))
        .replace("@SHA256SUM@", &tool("sha256sum"))
        .replace("@MKTEMP@", &tool("mktemp"))
        .replace("@CAT@", &tool("cat"))
        .replace("@WC@", &tool("wc"))
        .replace("@RM@", &tool("rm"))
        .replace("@SLEEP@", &tool("sleep"))
}

/// Fill `farm` with symlinks to everything in the system PATH dirs except
/// `exclude` (first directory wins on duplicate names).
fn build_path_farm(farm: &Path, exclude: &HashSet<&str>) {
    let mut seen_dirs: Vec<PathBuf> = Vec::new();
    let mut seen_names: HashSet<Vec<u8>> = HashSet::new();
    for src in SYSTEM_PATH_DIRS {
        let Ok(canonical) = fs::canonicalize(src) else {
            continue;
        };
        if seen_dirs.contains(&canonical) {
            continue;
        }
        seen_dirs.push(canonical);
        let Ok(entries) = fs::read_dir(src) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let bytes = name.as_bytes();
            if exclude.iter().any(|e| e.as_bytes() == bytes) {
                continue;
            }
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(true) {
                continue;
            }
            if !seen_names.insert(bytes.to_vec()) {
                continue;
            }
            let _ = std::os::unix::fs::symlink(Path::new(src).join(&name), farm.join(&name));
        }
    }
}

// ---------------------------------------------------------------------------
// FakeHost
// ---------------------------------------------------------------------------

/// One fake remote host: a real `sshd` on 127.0.0.1 with its own directory,
/// host key, authorized client key, fake agents and tmux directory.
///
/// Dropping it kills the host's tmux server and panes, `sshd` and every
/// process started through it, then deletes the directory (unless
/// `DELEGATE_TEST_KEEP=1`). On panic it prints diagnostics first.
#[derive(Debug)]
pub struct FakeHost {
    dir: PathBuf,
    port: u16,
    account: Account,
    as_root: bool,
    client_key: PathBuf,
    host_public_key: String,
    remote_path: String,
    tmux_bin: PathBuf,
    runuser_bin: PathBuf,
    env_bin: PathBuf,
    log_level: String,
    login_umask: Option<u32>,
    /// Extra sshd_config lines (host certificate, [`FakeHostBuilder::extra_config`]).
    extra_config: String,
    /// `<dir>/home` when the host has a home of its own ([`FakeHostBuilder::own_home`]).
    own_home: Option<PathBuf>,
    /// [`FakeHostBuilder::allow_tcp_forwarding`].
    allow_tcp_forwarding: bool,
    /// [`FakeHostBuilder::max_sessions`].
    max_sessions: u32,
    sshd: Option<Child>,
    watchdog: Option<Child>,
}

enum ReadyError {
    /// sshd could not bind the port (taken meanwhile): retry with another.
    Bind,
    /// Anything else; the message explains.
    Fatal(String),
}

impl FakeHost {
    /// Start a host with the default configuration (`builder().start()`).
    pub fn start() -> FakeHost {
        FakeHost::builder().start()
    }

    /// A builder for a customised host.
    pub fn builder() -> FakeHostBuilder {
        FakeHostBuilder::default()
    }

    /// `"127.0.0.1"`.
    pub fn address(&self) -> &str {
        ADDRESS
    }

    /// The TCP port sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The remote login user (see [`test_user`]).
    pub fn user(&self) -> &str {
        &self.account.name
    }

    /// Numeric uid of the remote user.
    pub fn uid(&self) -> u32 {
        self.account.uid
    }

    /// The host's private directory (`/tmp/dlgtk-<pid>-<n>`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/root`: an existing directory owned by the remote user, meant as
    /// delegate's `remote_root`.
    pub fn remote_root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// `<dir>/work`: an existing directory owned by the remote user.
    pub fn workdir(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// The remote user's `$HOME` in SSH sessions: `<dir>/home` with
    /// [`FakeHostBuilder::own_home`], else the passwd home directory (shared by all hosts of
    /// the same user).
    pub fn home(&self) -> PathBuf {
        self.own_home.clone().unwrap_or_else(|| self.account.home.clone())
    }

    /// Writes `contents` to `rel` under [`FakeHost::home`] (which must be the host's own),
    /// creating the directories on the way; everything is owned by the remote user.
    pub fn write_home_file(&self, rel: &str, contents: impl AsRef<[u8]>, mode: u32) -> PathBuf {
        let path = self.home_path(rel);
        write_file(&path, contents, mode);
        self.chown_remote(&path);
        path
    }

    /// A symlink at `rel` under the host's own home pointing at `target`.
    pub fn link_home(&self, rel: &str, target: &Path) -> PathBuf {
        let path = self.home_path(rel);
        let _ = fs::remove_file(&path);
        std::os::unix::fs::symlink(target, &path)
            .unwrap_or_else(|e| panic!("delegate-testkit: symlink {}: {e}", path.display()));
        if self.as_root {
            let c = CString::new(path.as_os_str().as_bytes()).unwrap();
            // SAFETY: a valid C string; lchown changes the link itself.
            unsafe { libc::lchown(c.as_ptr(), self.account.uid, self.account.gid) };
        }
        path
    }

    /// `rel` under the host's own home, with its parent directories created (remote user's).
    fn home_path(&self, rel: &str) -> PathBuf {
        let home = self.own_home.clone().expect("write_home_file needs FakeHost::builder().own_home()");
        let path = home.join(rel);
        let mut dir = home.clone();
        for part in Path::new(rel).parent().into_iter().flat_map(|p| p.components()) {
            dir.push(part);
            if !dir.exists() {
                mkdir(&dir, 0o755);
                self.chown_remote(&dir);
            }
        }
        path
    }

    /// Private key (ed25519, no passphrase, mode 0600) authorized on this host.
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// `"[127.0.0.1]:<port> <type> <base64>"` for this host's key.
    pub fn known_hosts_line(&self) -> String {
        format!("[{ADDRESS}]:{} {}", self.port, self.host_public_key)
    }

    /// A file containing exactly [`known_hosts_line`](Self::known_hosts_line).
    pub fn known_hosts_file(&self) -> PathBuf {
        self.dir.join("client/known_hosts")
    }

    /// The host public key as `"<type> <base64>"`, e.g. `"ssh-ed25519 AAAA..."`.
    pub fn host_public_key(&self) -> String {
        self.host_public_key.clone()
    }

    /// The `PATH` of SSH sessions on this host (`<dir>/bin:...`).
    pub fn remote_path(&self) -> &str {
        &self.remote_path
    }

    /// `TMUX_TMPDIR` of SSH sessions on this host (`<dir>/tmux`).
    pub fn tmux_tmpdir(&self) -> PathBuf {
        self.dir.join("tmux")
    }

    /// The socket of the `tmux -L delegate` server of this host.
    pub fn tmux_socket(&self) -> PathBuf {
        self.tmux_tmpdir().join(format!("tmux-{}", self.account.uid)).join(TMUX_SOCKET_NAME)
    }

    /// `<dir>/agent-records.jsonl`.
    pub fn agent_records_path(&self) -> PathBuf {
        self.dir.join("agent-records.jsonl")
    }

    /// Arguments for the OpenSSH client to log in to this host:
    /// `-F /dev/null -i <key> -p <port> -o ...StrictHostKeyChecking=yes... user@127.0.0.1`.
    pub fn ssh_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-F".into(),
            "/dev/null".into(),
            "-i".into(),
            self.client_key.to_string_lossy().into_owned(),
            "-p".into(),
            self.port.to_string(),
        ];
        for opt in [
            "IdentitiesOnly=yes".to_string(),
            // Much cheaper than OpenSSH 9.x's default sntrup761 hybrid KEX.
            "KexAlgorithms=curve25519-sha256".to_string(),
            format!("UserKnownHostsFile={}", self.known_hosts_file().display()),
            "GlobalKnownHostsFile=/dev/null".to_string(),
            "StrictHostKeyChecking=yes".to_string(),
            "BatchMode=yes".to_string(),
            "ConnectTimeout=5".to_string(),
            "LogLevel=ERROR".to_string(),
        ] {
            args.push("-o".into());
            args.push(opt);
        }
        args.push(format!("{}@{ADDRESS}", self.account.name));
        args
    }

    /// An `ssh` command running `remote_command` on this host (see
    /// [`ssh_args`](Self::ssh_args)); stdin/stdout/stderr are left to the caller.
    pub fn ssh(&self, remote_command: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(self.ssh_args()).arg("--").arg(remote_command);
        cmd
    }

    /// Run `tmux -L delegate <args>` as the remote user with this host's
    /// `TMUX_TMPDIR`, i.e. against the tmux server delegate started over SSH.
    /// Bounded by a 20 s deadline (then killed; the status reports the signal).
    pub fn tmux(&self, args: &[&str]) -> Output {
        let tmpdir = format!("TMUX_TMPDIR={}", self.tmux_tmpdir().display());
        let mut cmd = if self.as_root {
            let mut cmd = Command::new(&self.runuser_bin);
            cmd.arg("-u")
                .arg(&self.account.name)
                .arg("--")
                .arg(&self.env_bin)
                .args(["-u", "TMUX"])
                .arg(tmpdir)
                .arg(&self.tmux_bin);
            cmd
        } else {
            let mut cmd = Command::new(&self.env_bin);
            cmd.args(["-u", "TMUX"]).arg(tmpdir).arg(&self.tmux_bin);
            cmd
        };
        cmd.args(["-L", TMUX_SOCKET_NAME]).args(args);
        run_with_timeout(&mut cmd, COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("delegate-testkit: cannot run tmux: {e}"))
    }

    /// Set the behaviour of the fake agents (written to `<dir>/agent-mode`):
    /// `"ok"`, `"fail:N"` (exit N) or `"sleep:S"` (sleep S seconds, then ok).
    /// Takes effect for agents started afterwards.
    pub fn set_agent_mode(&self, mode: &str) {
        let tmp = self.dir.join("agent-mode.tmp");
        write_file(&tmp, format!("{mode}\n"), 0o644);
        fs::rename(&tmp, self.dir.join("agent-mode"))
            .unwrap_or_else(|e| panic!("delegate-testkit: cannot write agent-mode: {e}"));
    }

    /// All agent invocations recorded so far (in order).
    pub fn agent_records(&self) -> Vec<AgentRecord> {
        match fs::read_to_string(self.agent_records_path()) {
            Ok(text) => parse_agent_records(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("delegate-testkit: cannot read agent records: {e}"),
        }
    }

    /// Poll until at least `n` agent records exist and return them all;
    /// panics with diagnostics after `timeout`.
    pub fn wait_for_agent_records(&self, n: usize, timeout: Duration) -> Vec<AgentRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.agent_records();
            if records.len() >= n {
                return records;
            }
            if Instant::now() >= deadline {
                panic!(
                    "delegate-testkit: expected {n} agent record(s) within {timeout:?}, got {}\n{}",
                    records.len(),
                    self.diagnostics()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill sshd (SIGKILL) and its per-connection `sshd` processes, as a crash
    /// would; sessions' other processes (tmux and the agents) keep running. New
    /// connections to [`port`](Self::port) are refused until [`restart_sshd`](Self::restart_sshd).
    pub fn kill_sshd(&mut self) {
        if let Some(w) = self.watchdog.as_mut() {
            let _ = w.kill();
            let _ = w.wait();
        }
        self.watchdog = None;
        let Some(mut child) = self.sshd.take() else {
            return;
        };
        let pid = child.id() as i32;
        let sshds: Vec<i32> = descendants_of(pid)
            .into_iter()
            .filter(|p| fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sshd"))
            .collect();
        let _ = child.kill();
        let _ = child.wait();
        for p in sshds {
            // SAFETY: kill(2) on sshd processes forked by our own sshd child.
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
    }

    /// Start sshd again after [`kill_sshd`](Self::kill_sshd), on the same port with the
    /// same keys. Panics if the port cannot be bound again.
    pub fn restart_sshd(&mut self) {
        assert!(self.sshd.is_none(), "delegate-testkit: restart_sshd while sshd runs");
        let port = self.port;
        self.launch_sshd();
        assert_eq!(self.port, port, "delegate-testkit: sshd could not get port {port} back");
    }

    /// The sshd log so far (`sshd -e` output, LogLevel VERBOSE unless
    /// [`FakeHostBuilder::log_level`] said otherwise).
    pub fn sshd_log(&self) -> String {
        fs::read(self.dir.join("sshd.log")).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// A human-readable dump of the host state: sshd log, agent records,
    /// tmux panes (with their last lines) and a listing of the remote root
    /// and work directories.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "==== delegate-testkit FakeHost {} ({}@{ADDRESS}:{}, PATH={}) ====",
            self.dir.display(),
            self.account.name,
            self.port,
            self.remote_path
        );
        let _ = writeln!(s, "---- sshd.log ----\n{}", self.sshd_log());
        let records = fs::read_to_string(self.agent_records_path()).unwrap_or_default();
        let _ = writeln!(s, "---- agent records ----");
        for line in records.lines() {
            match AgentRecord::parse_line(line) {
                Ok(r) => {
                    let _ = writeln!(
                        s,
                        "{} pid={} cwd={} argv={:?} stdin_bytes={} tty={} mode={}",
                        r.name,
                        r.pid,
                        r.cwd.display(),
                        r.args(),
                        r.stdin_bytes,
                        r.stdin_is_tty,
                        r.mode
                    );
                }
                Err(e) => {
                    let _ = writeln!(s, "(unparsable) {e}");
                }
            }
        }
        let _ = writeln!(s, "---- tmux (socket {}) ----", self.tmux_socket().display());
        if self.tmux_socket().exists() {
            let panes = self.tmux(&[
                "list-panes",
                "-a",
                "-F",
                "#{session_name}:#{window_index}.#{pane_index} pid=#{pane_pid} dead=#{pane_dead} status=#{pane_dead_status} cmd=#{pane_current_command}",
            ]);
            let listing = String::from_utf8_lossy(&panes.stdout).into_owned();
            let _ = write!(s, "{listing}{}", String::from_utf8_lossy(&panes.stderr));
            for pane in listing.lines().take(8) {
                let target = pane.split_whitespace().next().unwrap_or_default();
                let cap = self.tmux(&["capture-pane", "-p", "-t", target, "-S", "-40"]);
                let _ = writeln!(s, "-- pane {target} --\n{}", String::from_utf8_lossy(&cap.stdout).trim_end());
            }
        } else {
            let _ = writeln!(s, "(no tmux server)");
        }
        for (label, path) in [("remote root", self.remote_root()), ("work", self.workdir())] {
            let _ = writeln!(s, "---- {label} {} ----", path.display());
            let mut count = 0;
            list_tree(&path, &path, &mut s, &mut count);
        }
        // What runners said on their stderr (bash errors, a `set -u` stop): the pane that
        // showed it is gone once the session ended.
        if let Ok(tasks) = fs::read_dir(self.remote_root().join("tasks")) {
            for task in tasks.flatten() {
                let said = fs::read(task.path().join("runner.err")).unwrap_or_default();
                if !said.is_empty() {
                    let tail = &said[said.len().saturating_sub(2048)..];
                    let _ = writeln!(s, "---- {}/runner.err (last {} bytes) ----", task.path().display(), tail.len());
                    let _ = writeln!(s, "{}", String::from_utf8_lossy(tail));
                }
            }
        }
        s
    }

    // -- setup ---------------------------------------------------------------

    fn chown_remote(&self, path: &Path) {
        if self.as_root {
            std::os::unix::fs::chown(path, Some(self.account.uid), Some(self.account.gid))
                .unwrap_or_else(|e| panic!("delegate-testkit: chown {}: {e}", path.display()));
        }
    }

    fn setup_files(&mut self, cfg: &FakeHostBuilder) {
        let dir = self.dir.clone();
        let etc = dir.join("etc");
        let client = dir.join("client");
        mkdir(&etc, 0o711);
        mkdir(&client, 0o700);
        for (name, mode) in [("bin", 0o755), ("root", 0o755), ("work", 0o755), ("tmux", 0o755), ("tmp", 0o700)] {
            let p = dir.join(name);
            mkdir(&p, mode);
            self.chown_remote(&p);
        }
        if cfg.own_home {
            let home = dir.join("home");
            mkdir(&home, 0o755);
            self.chown_remote(&home);
            self.own_home = Some(home);
        }

        // Keys. sshd reads authorized_keys as the remote user: 0644 in a 0711 dir.
        let (_, host_pub) = keygen(&etc, "host_key", &cfg.host_key_type);
        self.host_public_key = host_pub;
        if let Some(cert) = &cfg.host_certificate {
            let mut cmd = Command::new("ssh-keygen");
            cmd.arg("-q").arg("-s").arg(&cert.ca_key).args([
                "-I",
                "delegate-testkit-host",
                "-h",
                "-n",
                &cert.principals,
            ]);
            if let Some(v) = &cert.validity {
                cmd.arg(format!("-V{v}"));
            }
            cmd.arg(etc.join("host_key.pub"));
            let out = run_with_timeout(&mut cmd, COMMAND_TIMEOUT)
                .unwrap_or_else(|e| panic!("delegate-testkit: cannot run ssh-keygen -s: {e}"));
            if !out.status.success() {
                panic!(
                    "delegate-testkit: ssh-keygen -s failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let _ = writeln!(self.extra_config, "HostCertificate {}", etc.join("host_key-cert.pub").display());
        }
        self.extra_config.push_str(&cfg.extra_config);
        let (client_key, client_pub) = keygen(&client, "id_ed25519", "ed25519");
        set_mode(&client_key, 0o600);
        self.client_key = client_key;
        write_file(&etc.join("authorized_keys"), format!("{client_pub}\n"), 0o644);

        // Agent records: appended to by the remote user.
        let records = self.agent_records_path();
        write_file(&records, "", 0o644);
        self.chown_remote(&records);

        if cfg.fake_agents {
            let script = fake_agent_script(&dir);
            for name in FAKE_AGENTS {
                let p = dir.join("bin").join(name);
                write_file(&p, &script, 0o755);
                self.chown_remote(&p);
            }
        }

        // Remote PATH.
        let real_agent_on_system_path =
            SYSTEM_PATH_DIRS.iter().any(|d| FAKE_AGENTS.iter().any(|a| Path::new(d).join(a).exists()));
        let use_farm = !cfg.path_without.is_empty() || (!cfg.fake_agents && real_agent_on_system_path);
        let bin = dir.join("bin");
        self.remote_path = if use_farm {
            let farm = dir.join("path");
            mkdir(&farm, 0o755);
            let mut exclude: HashSet<&str> = cfg.path_without.iter().map(String::as_str).collect();
            exclude.extend(FAKE_AGENTS);
            build_path_farm(&farm, &exclude);
            format!("{}:{}", bin.display(), farm.display())
        } else {
            format!("{}:{}", bin.display(), SYSTEM_PATH_DIRS.join(":"))
        };
    }

    fn sshd_config(&self, port: u16) -> String {
        let d = self.dir.display();
        format!(
            "# delegate-testkit fake host\n{common}\
             MaxStartups 64:30:128\n\
             MaxSessions {max_sessions}\n\
             AcceptEnv LANG LC_*\n\
             Subsystem sftp internal-sftp\n\
             LogLevel {log_level}\n\
             AllowUsers {user}\n\
             SetEnv TMUX_TMPDIR={d}/tmux PATH={path}{bash_env}{home}\n\
             {extra}",
            common = {
                let common = hardened_sshd_config(&self.dir, &format!("{ADDRESS}:{port}"));
                if self.allow_tcp_forwarding {
                    common.replace("AllowTcpForwarding no\n", "AllowTcpForwarding yes\n")
                } else {
                    common
                }
            },
            extra = self.extra_config,
            max_sessions = self.max_sessions,
            user = self.account.name,
            path = self.remote_path,
            log_level = self.log_level,
            bash_env =
                if self.login_umask.is_some() { format!(" BASH_ENV={d}/etc/login-umask.sh") } else { String::new() },
            // TMPDIR too: a home under the temp dir is not what people have, and Codex then
            // refuses to create its sandbox helpers ("Refusing to create helper binaries under
            // temporary dir"), so every sandboxed command fails.
            home = self.own_home.as_ref().map(|h| format!(" HOME={} TMPDIR={d}/tmp", h.display())).unwrap_or_default(),
        )
    }

    fn launch_sshd(&mut self) {
        if self.as_root {
            // Privilege separation directory.
            let _ = fs::create_dir_all("/run/sshd");
        }
        let cfg = self.dir.join("etc/sshd_config");
        if let Some(mask) = self.login_umask {
            write_file(&self.dir.join("etc/login-umask.sh"), format!("umask {mask:03o}\n"), 0o644);
        }
        let log_path = self.dir.join("sshd.log");
        for attempt in 1..=5 {
            // A restart (restart_sshd) keeps the port on its first attempt.
            let port = if attempt == 1 && self.port != 0 { self.port } else { closed_port() };
            self.port = port;
            write_file(&cfg, self.sshd_config(port), 0o644);
            if attempt == 1 {
                let out = run_with_timeout(Command::new(SSHD).arg("-t").arg("-f").arg(&cfg), COMMAND_TIMEOUT)
                    .unwrap_or_else(|e| panic!("delegate-testkit: cannot run {SSHD} -t: {e}"));
                if !out.status.success() {
                    panic!(
                        "delegate-testkit: `{SSHD} -t -f {}` failed ({}):\n{}{}",
                        cfg.display(),
                        out.status,
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
            let mut log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .unwrap_or_else(|e| panic!("delegate-testkit: cannot open sshd.log: {e}"));
            if attempt > 1 {
                let _ = writeln!(log, "--- delegate-testkit: attempt {attempt}, port {port} ---");
            }
            let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
            let log_err = log.try_clone().expect("delegate-testkit: dup sshd.log");
            let mut cmd = Command::new(SSHD);
            cmd.arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&cfg)
                .env_clear()
                .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err);
            if let Some(mask) = self.login_umask {
                use std::os::unix::process::CommandExt as _;
                // SAFETY: umask is async-signal-safe and touches only the child's state.
                unsafe {
                    cmd.pre_exec(move || {
                        libc::umask(mask as libc::mode_t);
                        Ok(())
                    });
                }
            }
            let child = cmd.spawn().unwrap_or_else(|e| panic!("delegate-testkit: cannot spawn {SSHD}: {e}"));
            self.sshd = Some(child);
            match self.wait_ready(port, log_offset) {
                Ok(()) => {
                    self.watchdog = spawn_watchdog(self.sshd.as_ref().map(|c| c.id()));
                    write_file(&self.known_hosts_file(), format!("{}\n", self.known_hosts_line()), 0o644);
                    return;
                }
                Err(ReadyError::Bind) => {
                    if let Some(mut child) = self.sshd.take() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    continue;
                }
                Err(ReadyError::Fatal(msg)) => panic!(
                    "delegate-testkit: sshd on port {port} failed: {msg}\n---- sshd.log ----\n{}",
                    self.sshd_log()
                ),
            }
        }
        panic!("delegate-testkit: sshd could not bind a port in 5 attempts\n---- sshd.log ----\n{}", self.sshd_log());
    }

    fn log_since(&self, offset: u64) -> String {
        let bytes = fs::read(self.dir.join("sshd.log")).unwrap_or_default();
        let start = (offset as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// Ready = sshd logged that it listens on our port (so the socket is ours,
    /// not a racing process's), it is alive, and a connection gets a banner.
    fn wait_ready(&mut self, port: u16, log_offset: u64) -> Result<(), ReadyError> {
        let deadline = Instant::now() + SSHD_READY_TIMEOUT;
        let listening = format!("Server listening on {ADDRESS} port {port}.");
        loop {
            let log = self.log_since(log_offset);
            let child = self.sshd.as_mut().expect("sshd child");
            match child.try_wait() {
                Ok(Some(status)) => {
                    return if log.contains("Address already in use") || log.contains("Cannot bind any address") {
                        Err(ReadyError::Bind)
                    } else {
                        Err(ReadyError::Fatal(format!("sshd exited ({status})")))
                    };
                }
                Ok(None) => {}
                Err(e) => return Err(ReadyError::Fatal(format!("waitpid: {e}"))),
            }
            if log.contains(&listening) && banner_ok(port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ReadyError::Fatal(format!("not accepting connections within {SSHD_READY_TIMEOUT:?}")));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    // -- teardown ------------------------------------------------------------

    fn pane_pids(&self) -> Vec<i32> {
        if !self.tmux_socket().exists() {
            return Vec::new();
        }
        let out = self.tmux(&["list-panes", "-a", "-F", "#{pane_pid}"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
            .filter(|p| *p > 1)
            .collect()
    }

    fn stop_sshd(&mut self) -> Vec<i32> {
        let Some(mut child) = self.sshd.take() else {
            return Vec::new();
        };
        let pid = child.id() as i32;
        // Per-connection sshd processes (and their sessions) are descendants
        // of the listener; they survive its death, so remember them.
        let descendants = descendants_of(pid);
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => thread::sleep(Duration::from_millis(5)),
            }
        }
        descendants
    }

    /// Processes that belong to this host: they carry the host's
    /// `TMUX_TMPDIR` in their environment (everything started over SSH,
    /// including a daemonized tmux server), mention the host dir on their
    /// command line, or run inside the host dir.
    fn host_processes(&self) -> Vec<i32> {
        let marker = format!("TMUX_TMPDIR={}", self.tmux_tmpdir().display());
        let prefix = format!("{}/", self.dir.display());
        let me = std::process::id() as i32;
        let mut found = Vec::new();
        let Ok(entries) = fs::read_dir("/proc") else {
            return found;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if pid == me || pid <= 1 {
                continue;
            }
            let proc_dir = entry.path();
            let environ = fs::read(proc_dir.join("environ")).unwrap_or_default();
            let by_env = environ.split(|b| *b == 0).any(|e| e == marker.as_bytes());
            let by_cmdline = || {
                let cmdline = fs::read(proc_dir.join("cmdline")).unwrap_or_default();
                cmdline.windows(prefix.len()).any(|w| w == prefix.as_bytes())
            };
            let by_cwd = || fs::read_link(proc_dir.join("cwd")).map(|c| c.starts_with(&self.dir)).unwrap_or(false);
            if by_env || by_cmdline() || by_cwd() {
                found.push(pid);
            }
        }
        found
    }

    fn teardown(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        // 1-3: the tmux server and its panes (process groups).
        let panes = self.pane_pids();
        if self.tmux_socket().exists() {
            let _ = self.tmux(&["kill-server"]);
        }
        for pid in panes {
            // SAFETY: kill(2) with a negative pid signals the process group.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
        }
        // 4: sshd, then everything spawned through it or living in the dir.
        let mut leftovers = self.stop_sshd();
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            leftovers.extend(self.host_processes());
            leftovers.retain(|p| process_alive(*p));
            if leftovers.is_empty() || Instant::now() >= deadline {
                break;
            }
            for pid in &leftovers {
                // SAFETY: kill(2); these pids were found as belonging to this host.
                unsafe {
                    libc::kill(*pid, libc::SIGKILL);
                }
            }
            leftovers.clear();
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        let diagnostics = if panicking { Some(self.diagnostics()) } else { None };
        self.teardown();
        if let Some(d) = diagnostics {
            eprintln!("{d}");
        }
        let keep = std::env::var("DELEGATE_TEST_KEEP").is_ok_and(|v| v == "1");
        if keep {
            eprintln!("delegate-testkit: DELEGATE_TEST_KEEP=1: keeping {}", self.dir.display());
        } else if fs::remove_dir_all(&self.dir).is_err() {
            thread::sleep(Duration::from_millis(50));
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------
// Process helpers
// ---------------------------------------------------------------------------

/// A `sh` that waits for EOF on its stdin (a pipe whose write end only this
/// process holds) and then SIGTERMs sshd: if the test process dies without
/// dropping the host (crash, SIGKILL on timeout), sshd does not linger. The
/// host directory is left behind in that case. (PR_SET_PDEATHSIG is not used
/// because it fires when the *thread* that spawned sshd exits.)
fn spawn_watchdog(sshd_pid: Option<u32>) -> Option<Child> {
    let pid = sshd_pid?;
    Command::new("/bin/sh")
        .args(["-c", "read -r _; kill -TERM \"$1\" 2>/dev/null", "dlgtk-watchdog"])
        .arg(pid.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// Read the SSH identification line; true if it is `SSH-2.0-...`.
/// Whether an SSH server on 127.0.0.1:`port` answers with its banner.
pub fn banner_ok(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 255 {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => line.push(byte[0]),
            _ => break,
        }
    }
    line.starts_with(b"SSH-2.0-")
}

fn process_alive(pid: i32) -> bool {
    // A zombie cannot be killed further and will be reaped by its parent.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')).unwrap_or(false),
        Err(_) => false,
    }
}

/// All (transitive) children of `root`, from /proc/<pid>/stat.
pub fn descendants_of(root: i32) -> Vec<i32> {
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut result = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (child, parent) in &parent_of {
            if *parent == p && !result.contains(child) {
                result.push(*child);
                frontier.push(*child);
            }
        }
    }
    result
}

/// Run `cmd` (stdin /dev/null, output captured) and kill it after `timeout`.
/// Output left in pipes held open by daemonized grandchildren is abandoned
/// after a short grace period instead of blocking.
fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> io::Result<Output> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let rx_out = spawn_reader(child.stdout.take());
    let rx_err = spawn_reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break child.wait()?;
        }
        thread::sleep(Duration::from_millis(2));
    };
    let grace = Duration::from_millis(500);
    Ok(Output {
        status,
        stdout: rx_out.recv_timeout(grace).unwrap_or_default(),
        stderr: rx_err.recv_timeout(grace).unwrap_or_default(),
    })
}

fn spawn_reader<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    } else {
        let _ = tx.send(Vec::new());
    }
    rx
}

/// Append a recursive listing of `dir` (mode, owner uid, size, relative
/// path; at most 300 entries) to `out`.
fn list_tree(base: &Path, dir: &Path, out: &mut String, count: &mut usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        let _ = writeln!(out, "(cannot read {})", dir.display());
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if *count >= 300 {
            let _ = writeln!(out, "...");
            return;
        }
        *count += 1;
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let rel = path.strip_prefix(base).unwrap_or(&path);
        let _ = writeln!(out, "{:o} uid={} {:>8} {}", meta.mode() & 0o7777, meta.uid(), meta.len(), rel.display());
        if meta.is_dir() {
            list_tree(base, &path, out, count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_agent_script_is_shellcheck_clean() {
        let Ok(out) =
            Command::new("shellcheck").arg(concat!(env!("CARGO_MANIFEST_DIR"), "/src/fake_agent.sh")).output()
        else {
            eprintln!("shellcheck not installed; skipped");
            return;
        };
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }

    #[test]
    fn fake_agent_script_has_no_placeholders_left() {
        let script = fake_agent_script(Path::new("/tmp/x"));
        assert!(!script.contains("@DLGTK_DIR@") && !script.contains("@SLEEP@"));
        assert!(script.contains("DLGTK_DIR='/tmp/x'"));
    }

    #[test]
    fn parses_agent_record_lines() {
        let b = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let environ = b(b"PATH=/x:/y\0HOME=/home/u\0DELEGATE_TASK=a=b\0");
        let line = format!(
            "{{\"name\":\"claude\",\"argv\":[\"{}\",\"{}\",\"\"],\"cwd\":\"{}\",\"stdin_sha256\":\"{}\",\"stdin_bytes\":3,\"environ\":\"{environ}\",\"pid\":42,\"ppid\":7,\"stdin_is_tty\":false,\"mode\":\"ok\",\"time\":\"1700000000.5\"}}\n",
            b(b"-p"),
            b(b"it's \"quoted\"\n"),
            b(b"/tmp/w"),
            sha256_hex(b"abc"),
        );
        // The incomplete trailing line is ignored.
        let recs = parse_agent_records(&format!("{line}{{\"name\":"));
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(r.argv, vec![b"-p".to_vec(), b"it's \"quoted\"\n".to_vec(), vec![]]);
        assert_eq!(r.cwd, PathBuf::from("/tmp/w"));
        assert_eq!(r.env["DELEGATE_TASK"], "a=b");
        assert_eq!(r.env["PATH"], "/x:/y");
        assert_eq!(r.pid, 42);
        assert_eq!(r.arg_value("-p").as_deref(), Some("it's \"quoted\"\n"));
        assert_eq!(r.stdin_sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(r.time, 1_700_000_000.5);
    }
}
