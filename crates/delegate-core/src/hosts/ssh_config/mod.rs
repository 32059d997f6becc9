//! OpenSSH client configuration: what `ssh -G <host>` would use, for the settings delegate needs.
//!
//! This module owns reading the user's ssh_config file and its `Include`s, deciding which `Host`
//! blocks apply to the host the user typed, OpenSSH's "first obtained value wins" rule, `~` and
//! `%` token expansion, and refusing directives delegate cannot honour, so that a connection never
//! silently differs from what `ssh` would do. It reads only the file it is given (no system-wide
//! `/etc/ssh/ssh_config`) and never looks at environment variables or `$HOME`: the caller passes
//! the home directory and local user in [`SshConfigQuery`].

use std::cell::OnceCell;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::hosts::known_hosts::{match_pattern_list, wildcard_match};

mod jump;
mod match_;

pub use jump::{JumpHop, parse_jump};

/// What to resolve, and everything the resolution needs from the caller's environment.
pub struct SshConfigQuery<'a> {
    /// What the user typed: an alias or a hostname.
    pub host: &'a str,
    /// Usually `<home>/.ssh/config`; a missing file means "no config".
    pub config_file: &'a Path,
    /// For `~`, `%d`, and `Include` paths relative to `~/.ssh`.
    pub home: &'a Path,
    /// For `%u`, `Match localuser`, and the default remote user.
    pub local_user: &'a str,
    /// The inventory's user and port. Like `ssh -l USER -p PORT` they are set before the
    /// config is read, so they win over `User` and `Port`, and `Match user`, `%r` and `%p`
    /// see them.
    pub user: Option<&'a str>,
    pub port: Option<u16>,
}

/// The settings `ssh` would use for one host, limited to what delegate honours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedSsh {
    /// `HostName` (with `%h` expanded) or the host itself, lowercased as ssh does.
    pub hostname: String,
    /// `None` when the config gives no `User`.
    pub user: Option<String>,
    pub port: Option<u16>,
    /// In order, with `~` and `%` tokens expanded; empty when none are configured.
    pub identity_files: Vec<PathBuf>,
    pub identities_only: bool,
    /// `CertificateFile`s, in order, expanded.
    pub certificate_files: Vec<PathBuf>,
    /// Expanded; empty when not configured.
    pub user_known_hosts_files: Vec<PathBuf>,
    /// `GlobalKnownHostsFile`, by default ssh's `/etc/ssh/ssh_known_hosts` and
    /// `/etc/ssh/ssh_known_hosts2`; empty for `none`.
    pub global_known_hosts_files: Vec<PathBuf>,
    /// `HashKnownHosts yes`: names written to known_hosts are hashed.
    pub hash_known_hosts: bool,
    pub strict_host_key_checking: Option<StrictHostKeyChecking>,
    /// Lowercased, as ssh does before it looks the alias up in known_hosts.
    pub host_key_alias: Option<String>,
    pub connect_timeout: Option<Duration>,
    pub server_alive_interval: Option<Duration>,
    pub server_alive_count_max: Option<u32>,
    /// `ConnectionAttempts`: how many times to try the TCP connect, 1 s apart.
    pub connection_attempts: Option<u32>,
    pub address_family: Option<AddressFamily>,
    /// `None` when the config gives no `IdentityAgent`.
    pub identity_agent: Option<IdentityAgent>,
    /// `ProxyJump` or `ProxyCommand`, whichever ssh would use; `None` for a direct connection.
    pub proxy: Option<Proxy>,
}

/// How ssh would reach the host when not directly (see [`crate::transport::ssh::route`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxy {
    /// `ProxyJump`: the hops in order, the host connected to first coming first.
    Jump(Vec<JumpHop>),
    /// `ProxyCommand`, its `%` tokens not expanded yet: `%r` and `%p` depend on the
    /// inventory, which plays the role of ssh's command-line options.
    Command(String),
}

/// `StrictHostKeyChecking` values delegate accepts; `no`/`off` are refused with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictHostKeyChecking {
    Yes,
    AcceptNew,
    Ask,
}

/// `AddressFamily`: which resolved addresses to try.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AddressFamily {
    #[default]
    Any,
    Inet,
    Inet6,
}

/// Where ssh would look for the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityAgent {
    /// `IdentityAgent none`: use no agent.
    Disabled,
    /// Read the socket path from this environment variable (`SSH_AUTH_SOCK`, `$NAME`, `${NAME}`).
    Env(String),
    /// A socket path, with `~` and `%` tokens expanded.
    Socket(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum SshConfigError {
    #[error("cannot read ssh config {}: {source}; check that it is a readable file", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "ssh config {} is writable by others or owned by another user, so ssh would refuse it too; run `chmod go-w` on it and make sure you own it",
        path.display()
    )]
    Permissions { path: PathBuf },
    #[error("{}: line {line}: {message}", path.display())]
    Invalid { path: PathBuf, line: usize, message: String },
    #[error(
        "{}: line {line}: unknown ssh_config keyword \"{keyword}\"; fix the spelling, or list it in IgnoreUnknown if another ssh client needs it",
        path.display()
    )]
    UnknownKeyword { path: PathBuf, line: usize, keyword: String },
    #[error("{}: line {line}: {directive} {reason}", path.display())]
    Unsupported { path: PathBuf, line: usize, directive: String, reason: &'static str },
}

/// Keywords accepted and ignored because they cannot change how delegate connects or verifies.
/// Keywords starting with `gssapi` are ignored as well (Debian's ssh has several).
#[rustfmt::skip]
const IGNORED: &[&str] = &[
    // Deprecated or compiled out: OpenSSH ignores these itself.
    "protocol", "cipher", "fallbacktorsh", "globalknownhostsfile2", "rhostsauthentication", "userknownhostsfile2",
    "useroaming", "usersh", "useprivilegedport", "afstokenpassing", "kerberosauthentication", "kerberostgtpassing",
    "rsaauthentication", "rhostsrsaauthentication", "compressionlevel",
    // Forwarding, terminals, session types, environment: delegate runs one command, never forwards.
    "forwardagent", "forwardx11", "forwardx11trusted", "forwardx11timeout", "exitonforwardfailure", "xauthlocation",
    "gatewayports", "localforward", "remoteforward", "dynamicforward", "permitremoteopen", "clearallforwardings",
    "streamlocalbindmask", "streamlocalbindunlink", "tunnel", "tunneldevice", "requesttty", "sessiontype",
    "stdinnull", "forkafterauthentication", "escapechar", "sendenv", "setenv",
    // Connection multiplexing: delegate opens its own connection every time.
    "controlmaster", "controlpath", "controlpersist",
    // Authentication other than public keys, which is all delegate uses.
    "passwordauthentication", "kbdinteractiveauthentication", "kbdinteractivedevices",
    "challengeresponseauthentication", "skeyauthentication", "tisauthentication", "pubkeyauthentication",
    "dsaauthentication", "preferredauthentications", "hostbasedauthentication", "hostbasedacceptedalgorithms",
    "hostbasedkeytypes", "enablesshkeysign", "numberofpasswordprompts", "addkeystoagent", "usekeychain",
    "securitykeyprovider", "batchmode",
    // Algorithm lists: russh negotiates its own.
    "ciphers", "macs", "kexalgorithms", "hostkeyalgorithms", "casignaturealgorithms", "pubkeyacceptedalgorithms",
    "pubkeyacceptedkeytypes", "requiredrsasize", "rekeylimit", "compression", "fingerprinthash",
    // Host-key options that could only make ssh laxer than delegate, which checks every key against known_hosts.
    "checkhostip", "verifyhostkeydns", "nohostauthenticationforlocalhost", "updatehostkeys", "visualhostkey",
    // Transport tuning, canonicalization details (CanonicalizeHostname itself is checked), logging.
    "tcpkeepalive", "keepalive", "ipqos",
    "canonicaldomains", "canonicalizefallbacklocal", "canonicalizemaxdots", "canonicalizepermittedcnames",
    "loglevel", "logverbose", "syslogfacility",
    // Newer OpenSSH (9.3 to 10.x): interactive sessions, channel idling, what ssh announces or warns.
    "enableescapecommandline", "obscurekeystroketiming", "channeltimeout", "versionaddendum", "warnweakcrypto",
];

/// How a kept keyword's value is checked. ssh checks values on every line, even in blocks that
/// do not apply, so a typo elsewhere in the file fails here too.
#[derive(Clone, Copy, PartialEq)]
enum Value {
    Text,
    Lowercase,
    Flag,
    Port,
    Seconds,
    Count,
    Strict,
    Canonicalize,
    Family,
    /// The raw rest of the line, comments included, as ssh takes commands.
    Command,
    /// Several paths, or `none` alone.
    Paths,
    /// A ProxyJump list, or `none`.
    Jump,
}

/// Keywords whose first applying value is kept: (keyword, name in messages, value check).
#[rustfmt::skip]
const KEPT: &[(&str, &str, Value)] = &[
    ("hostname", "HostName", Value::Text), ("user", "User", Value::Text), ("port", "Port", Value::Port),
    ("hostkeyalias", "HostKeyAlias", Value::Lowercase), ("identitiesonly", "IdentitiesOnly", Value::Flag),
    ("userknownhostsfile", "UserKnownHostsFile", Value::Paths),
    ("globalknownhostsfile", "GlobalKnownHostsFile", Value::Paths), ("hashknownhosts", "HashKnownHosts", Value::Flag),
    ("stricthostkeychecking", "StrictHostKeyChecking", Value::Strict),
    ("connecttimeout", "ConnectTimeout", Value::Seconds), ("serveraliveinterval", "ServerAliveInterval", Value::Seconds),
    ("serveralivecountmax", "ServerAliveCountMax", Value::Count), ("identityagent", "IdentityAgent", Value::Text),
    ("ignoreunknown", "IgnoreUnknown", Value::Text), ("tag", "Tag", Value::Text),
    ("connectionattempts", "ConnectionAttempts", Value::Count), ("addressfamily", "AddressFamily", Value::Family),
    ("refuseconnection", "RefuseConnection", Value::Flag),
    ("proxycommand", "ProxyCommand", Value::Command), ("proxyjump", "ProxyJump", Value::Jump),
    ("proxyusefdpass", "ProxyUseFdpass", Value::Flag),
    // Only kept to be refused, unless the value switches the feature off.
    ("remotecommand", "RemoteCommand", Value::Command), ("localcommand", "LocalCommand", Value::Command),
    ("permitlocalcommand", "PermitLocalCommand", Value::Flag),
    ("canonicalizehostname", "CanonicalizeHostname", Value::Canonicalize),
    ("knownhostscommand", "KnownHostsCommand", Value::Command), ("revokedhostkeys", "RevokedHostKeys", Value::Text),
    ("pkcs11provider", "PKCS11Provider", Value::Text), ("smartcarddevice", "SmartcardDevice", Value::Text),
];

/// A kept setting delegate cannot honour: its slot, which values are fine, and what to say otherwise.
type Refusal = (&'static str, fn(&str) -> bool, &'static str);

/// The values that are fine are `none` and `no`: how a Host block opts out of what a later
/// `Host *` block would apply.
#[rustfmt::skip]
const REFUSED: &[Refusal] = &[
    ("remotecommand", is_none, "conflicts with the command delegate runs; set RemoteCommand none for this host"),
    ("canonicalizehostname", |v| v == "no", "is not supported by delegate; set it to no and put the full name in HostName"),
    ("stricthostkeychecking", |v| v != "no", "no is refused: delegate always verifies host keys; use accept-new to trust a new host on first connection"),
    ("userknownhostsfile", |v| !is_none(v), "none is refused: delegate always verifies host keys against a known_hosts file; name a file instead"),
    ("knownhostscommand", is_none, "is not supported by delegate; list the host keys in a known_hosts file"),
    ("revokedhostkeys", is_none, "is not supported by delegate; mark revoked keys with @revoked lines in known_hosts"),
    ("pkcs11provider", is_none, "is not supported by delegate; use a key file or an ssh-agent that holds the token's keys"),
    ("refuseconnection", |v| v == "no", "yes: ssh refuses to connect to this host, and so does delegate; remove it for this host if the connection is meant to happen"),
    ("connectionattempts", |v| v != "0", "0 means ssh never tries to connect; use 1 or more"),
];

/// OpenSSH's limits (readconf.c READCONF_MAX_DEPTH, SSH_MAX_IDENTITY_FILES, SSH_MAX_HOSTS_FILES).
const MAX_INCLUDE_DEPTH: usize = 16;
const MAX_IDENTITY_FILES: usize = 100;
const MAX_KNOWN_HOSTS_FILES: usize = 32;

/// ssh's GlobalKnownHostsFile default (pathnames.h `_PATH_SSH_SYSTEM_HOSTFILE` and `...2`).
const DEFAULT_GLOBAL_KNOWN_HOSTS: [&str; 2] = ["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"];

/// Resolves `q.host` against `q.config_file` the way `ssh -G` does.
///
/// Like ssh, the file is read a second time when a non-negated `Match final` asked for it
/// (ssh also does so after CanonicalizeHostname, which delegate refuses): `HostName` is then
/// fixed to the name the first pass produced, settings from the first pass stay (the first
/// value obtained wins), `Match canonical` and `Match final` hold, and `Match exec` commands
/// run again.
pub fn resolve(q: &SshConfigQuery) -> Result<ResolvedSsh, SshConfigError> {
    let mut parser = Parser::new(q);
    let top = Loc { path: q.config_file.to_path_buf(), line: 0 };
    parser.read_file(q.config_file, 0, &mut true, false, &top)?;
    if parser.want_final {
        let host = parser.match_host(&top)?.to_ascii_lowercase();
        // Escaped, so the expansion of HostName in `finish` gives it back unchanged.
        let values = vec![host.replace('%', "%%")];
        parser.kept.insert("hostname", Kept { name: "HostName", values, at: top.clone() });
        parser.final_pass = true;
        parser.read_file(q.config_file, 0, &mut true, false, &top)?;
    }
    parser.finish()
}

#[derive(Debug, Clone)]
struct Loc {
    path: PathBuf,
    line: usize,
}

impl Loc {
    fn invalid(&self, message: impl Into<String>) -> SshConfigError {
        SshConfigError::Invalid { path: self.path.clone(), line: self.line, message: message.into() }
    }
    fn unsupported(&self, directive: impl Into<String>, reason: &'static str) -> SshConfigError {
        SshConfigError::Unsupported { path: self.path.clone(), line: self.line, directive: directive.into(), reason }
    }
}

/// The first applying value of a kept keyword, normalized (lowercase words, seconds).
struct Kept {
    name: &'static str,
    values: Vec<String>,
    at: Loc,
}

struct Parser<'q, 'a> {
    q: &'q SshConfigQuery<'a>,
    kept: HashMap<&'static str, Kept>,
    identity_files: Vec<(String, Loc)>,
    certificate_files: Vec<(String, Loc)>,
    /// A `Match final` line asked for a second pass.
    want_final: bool,
    /// This is the second pass.
    final_pass: bool,
}

impl<'q, 'a> Parser<'q, 'a> {
    /// A parser with the inventory's user and port already set, as ssh's `-l` and `-p` are.
    fn new(q: &'q SshConfigQuery<'a>) -> Self {
        let mut kept = HashMap::new();
        let at = Loc { path: PathBuf::from("(inventory)"), line: 0 };
        if let Some(user) = q.user {
            kept.insert("user", Kept { name: "User", values: vec![user.to_string()], at: at.clone() });
        }
        if let Some(port) = q.port {
            kept.insert("port", Kept { name: "Port", values: vec![port.to_string()], at });
        }
        Parser {
            q,
            kept,
            identity_files: Vec::new(),
            certificate_files: Vec::new(),
            want_final: false,
            final_pass: false,
        }
    }

    fn kept_value(&self, key: &str) -> Option<&str> {
        self.kept.get(key).map(|k| k.values[0].as_str())
    }

    /// The host `Match host` and `%h` see so far: `HostName` with `%h` expanded once one
    /// applies, else the host as typed (readconf.c keeps this in sync with ssh.c).
    fn match_host(&self, at: &Loc) -> Result<String, SshConfigError> {
        match self.kept_value("hostname") {
            Some(h) => expand_hostname(h, self.q.host).map_err(|m| at.invalid(m)),
            None => Ok(self.q.host.to_string()),
        }
    }

    fn match_state(&self, at: &Loc) -> Result<match_::MatchState, SshConfigError> {
        Ok(match_::MatchState {
            host: self.match_host(at)?,
            remote_user: self.kept_value("user").unwrap_or(self.q.local_user).to_string(),
            tag: self.kept_value("tag").unwrap_or_default().to_string(),
            final_pass: self.final_pass,
        })
    }

    /// `%` tokens in a `Match exec` command, with the values known so far (ssh's
    /// expand_match_exec_or_include_path); `%j` is the ProxyJump so far, or empty.
    fn expand_exec(&self, raw: &str, state: &match_::MatchState, at: &Loc) -> Result<String, SshConfigError> {
        let port = self.kept_value("port").and_then(|p| p.parse().ok()).unwrap_or(22);
        let key_alias = self.kept_value("hostkeyalias").unwrap_or(&state.host);
        let jump = match self.kept.get("proxycommand") {
            Some(k) if k.name == "ProxyJump" && !is_none(&k.values[0]) => k.values[0].clone(),
            _ => String::new(),
        };
        let tokens = Tokens {
            q: self.q,
            hostname: &state.host,
            port,
            remote_user: &state.remote_user,
            key_alias,
            local_host: OnceCell::new(),
        };
        percent_expand(raw, |c| if c == 'j' { Some(jump.clone()) } else { tokens.value(c) })
            .map_err(|m| at.invalid(format!("Match exec \"{raw}\": {m}")))
    }

    /// Reads one file with ssh's `activep` state threaded through, so a file included inside a
    /// Host block starts out applying (or not) exactly as the Include line did.
    fn read_file(
        &mut self,
        path: &Path,
        depth: usize,
        active: &mut bool,
        never_match: bool,
        from: &Loc,
    ) -> Result<(), SshConfigError> {
        if depth > MAX_INCLUDE_DEPTH {
            let message = format!(
                "Include is nested more than {MAX_INCLUDE_DEPTH} levels deep; look for a file that includes itself"
            );
            return Err(from.invalid(message));
        }
        let read_err = |source| SshConfigError::Read { path: path.to_path_buf(), source };
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(read_err(e)),
        };
        let meta = file.metadata().map_err(read_err)?;
        if meta.is_dir() {
            // ssh opens a directory matched by an Include glob, reads no lines, and moves on.
            return Ok(());
        }
        // Checked like ssh checks the default ~/.ssh/config and every included file (not a
        // file given with -F): a file others can write could redirect the connection.
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        if (meta.uid() != 0 && meta.uid() != uid) || meta.mode() & 0o022 != 0 {
            return Err(SshConfigError::Permissions { path: path.to_path_buf() });
        }
        let text = io::read_to_string(file).map_err(read_err)?;
        for (i, line) in text.split('\n').enumerate() {
            self.line(line, &Loc { path: path.to_path_buf(), line: i + 1 }, depth, active, never_match)?;
        }
        Ok(())
    }

    fn line(
        &mut self,
        line: &str,
        at: &Loc,
        depth: usize,
        active: &mut bool,
        never_match: bool,
    ) -> Result<(), SshConfigError> {
        let line = line.trim_end_matches([' ', '\t', '\r', '\n', '\x0c']);
        let Some((keyword, rest)) = split_keyword(line) else {
            return Ok(());
        };
        if rest.is_empty() {
            return Err(at.invalid(format!("no argument after \"{keyword}\"; give it a value or delete the line")));
        }
        let args =
            split_args(rest).ok_or_else(|| at.invalid("unbalanced quotes; close the quote or escape it with \\"))?;
        let kw = keyword.to_ascii_lowercase();
        let on = *active;
        if let Some(&(key, name, value)) = KEPT.iter().find(|(k, ..)| *k == kw) {
            let slot = match key {
                "smartcarddevice" => "pkcs11provider",
                k => k,
            };
            if let Some(values) = checked(value, name, &args, rest, at)?
                && on
            {
                // readconf.c: a ProxyJump applies only while neither is set, and then also
                // sets ProxyCommand to none; `ProxyJump none` only blocks later ProxyJumps.
                if key == "proxyjump" && !is_none(&values[0]) {
                    if self.kept.contains_key("proxyjump") || self.kept.contains_key("proxycommand") {
                        return Ok(());
                    }
                    let none = Kept { name: "ProxyCommand", values: vec!["none".into()], at: at.clone() };
                    self.kept.insert("proxycommand", none);
                }
                self.kept.entry(slot).or_insert(Kept { name, values, at: at.clone() });
            }
            return Ok(());
        }
        match kw.as_str() {
            "host" => {
                *active = false;
                for pattern in args.iter().take_while(|_| !never_match) {
                    let (negated, pattern) = pattern.strip_prefix('!').map_or((false, pattern.as_str()), |p| (true, p));
                    if wildcard_match(pattern.as_bytes(), self.q.host.as_bytes()) {
                        *active = !negated;
                        if negated {
                            break;
                        }
                    }
                }
            }
            // Evaluated (exec commands run) even inside a file included from a block that
            // does not apply, as ssh does; such a file's blocks never apply.
            "match" => *active = self.match_line(&args, at)? && !never_match,
            "include" => {
                for arg in &args {
                    for file in self.include_paths(arg, at)? {
                        self.read_file(&file, depth + 1, &mut on.clone(), never_match || !on, at)?;
                    }
                }
            }
            "identityfile" | "identityfile2" => {
                let v = one(&args, "IdentityFile", at)?;
                if on && !self.identity_files.iter().any(|(f, _)| f == v) {
                    if self.identity_files.len() >= MAX_IDENTITY_FILES {
                        return Err(
                            at.invalid(format!("more than {MAX_IDENTITY_FILES} IdentityFile entries; remove some"))
                        );
                    }
                    self.identity_files.push((v.to_string(), at.clone()));
                }
            }
            "certificatefile" => {
                let v = one(&args, "CertificateFile", at)?;
                if on && !self.certificate_files.iter().any(|(f, _)| f == v) {
                    if self.certificate_files.len() >= MAX_IDENTITY_FILES {
                        return Err(
                            at.invalid(format!("more than {MAX_IDENTITY_FILES} CertificateFile entries; remove some"))
                        );
                    }
                    self.certificate_files.push((v.to_string(), at.clone()));
                }
            }
            "bindaddress" | "bindinterface" if on => {
                let reason = "is not supported by delegate; remove it for this host so the connection leaves from the default address";
                return Err(at.unsupported(keyword, reason));
            }
            "bindaddress" | "bindinterface" => {}
            k if IGNORED.contains(&k) || k.starts_with("gssapi") => {}
            k if self.kept.get("ignoreunknown").is_some_and(|l| match_pattern_list(k, &l.values[0]) == Some(true)) => {}
            _ => {
                let (path, line, keyword) = (at.path.clone(), at.line, keyword.to_string());
                return Err(SshConfigError::UnknownKeyword { path, line, keyword });
            }
        }
        Ok(())
    }

    /// Include paths: relative ones live in `~/.ssh`, `~` is the caller's home, globs expand in
    /// sorted order, and a pattern matching nothing is silently skipped, as in ssh.
    fn include_paths(&self, arg: &str, at: &Loc) -> Result<Vec<PathBuf>, SshConfigError> {
        let home = glob::Pattern::escape(&self.q.home.to_string_lossy());
        let pattern = if arg == "~" || arg.starts_with("~/") {
            format!("{home}{}", &arg[1..])
        } else if arg.starts_with('~') {
            return Err(at.invalid(format!("Include \"{arg}\": ~user paths are not supported; write the full path")));
        } else if arg.starts_with('/') {
            arg.to_string()
        } else {
            format!("{home}/.ssh/{arg}")
        };
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: true,
        };
        let paths = glob::glob_with(&pattern, options)
            .map_err(|e| at.invalid(format!("bad Include pattern \"{arg}\": {e}; fix the pattern")))?;
        // Like glob(3) without GLOB_ERR, unreadable directories just contribute no matches.
        Ok(paths.filter_map(Result::ok).collect())
    }

    fn finish(self) -> Result<ResolvedSsh, SshConfigError> {
        let q = self.q;
        for (slot, allowed, reason) in REFUSED {
            if let Some(k) = self.kept.get(slot)
                && !k.values.iter().all(|v| allowed(v))
            {
                return Err(k.at.unsupported(k.name, reason));
            }
        }
        if let (Some(permit), Some(command)) = (self.kept.get("permitlocalcommand"), self.kept.get("localcommand"))
            && permit.values[0] == "yes"
            && !is_none(&command.values[0])
        {
            let reason =
                "yes is not supported: delegate never runs a LocalCommand; set PermitLocalCommand no for this host";
            return Err(permit.at.unsupported("PermitLocalCommand", reason));
        }
        let kept = |key: &str| self.kept.get(key).map(|k| (k.values[0].as_str(), &k.at));
        let text = |key: &str| kept(key).map(|(v, _)| v.to_string());
        let number = |key: &str| kept(key).and_then(|(v, _)| v.parse::<u32>().ok());
        let hostname = match kept("hostname") {
            Some((h, at)) => expand_hostname(h, q.host).map_err(|m| at.invalid(m))?,
            None => q.host.to_string(),
        }
        .to_ascii_lowercase();
        let user = text("user");
        let port = number("port").map(|p| p as u16);
        let host_key_alias = text("hostkeyalias");
        let tokens = Tokens {
            q,
            hostname: &hostname,
            port: port.unwrap_or(22),
            remote_user: user.as_deref().unwrap_or(q.local_user),
            key_alias: host_key_alias.as_deref().unwrap_or(q.host),
            local_host: OnceCell::new(),
        };
        let identity_files = self
            .identity_files
            .iter()
            .map(|(raw, at)| tokens.expand_path(raw, "IdentityFile", at))
            .collect::<Result<_, _>>()?;
        let certificate_files = self
            .certificate_files
            .iter()
            .map(|(raw, at)| tokens.expand_path(raw, "CertificateFile", at))
            .collect::<Result<_, _>>()?;
        let user_known_hosts_files = match self.kept.get("userknownhostsfile") {
            Some(k) => k.values.iter().map(|raw| tokens.expand_path(raw, k.name, &k.at)).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let global_known_hosts_files = match self.kept.get("globalknownhostsfile") {
            Some(k) if is_none(&k.values[0]) => Vec::new(),
            Some(k) => k.values.iter().map(|raw| tokens.expand_path(raw, k.name, &k.at)).collect::<Result<_, _>>()?,
            None => DEFAULT_GLOBAL_KNOWN_HOSTS.iter().map(PathBuf::from).collect(),
        };
        let identity_agent = match kept("identityagent") {
            None => None,
            Some(("none", _)) => Some(IdentityAgent::Disabled),
            Some(("SSH_AUTH_SOCK", _)) => Some(IdentityAgent::Env("SSH_AUTH_SOCK".to_string())),
            Some((v, _)) if v.starts_with("${") && v.ends_with('}') && !v[2..].contains('$') => {
                Some(IdentityAgent::Env(v[2..v.len() - 1].to_string()))
            }
            Some((v, _)) if v.starts_with('$') => Some(IdentityAgent::Env(v[1..].to_string())),
            Some((v, at)) => Some(IdentityAgent::Socket(tokens.expand_path(v, "IdentityAgent", at)?)),
        };
        let seconds = |key: &str| number(key).map(|s| Duration::from_secs(s.into()));
        let proxy = match (kept("proxyjump"), kept("proxycommand")) {
            (Some((jump, _)), _) if !is_none(jump) => Some(Proxy::Jump(parse_jump(jump).expect("checked when read"))),
            (_, Some((command, _))) if !is_none(command) => {
                // The command would hand us a socket (SCM_RIGHTS) instead of speaking SSH.
                if kept("proxyusefdpass").is_some_and(|(v, _)| v == "yes") {
                    let reason = "yes is not supported by delegate; set ProxyUseFdpass no for this host";
                    return Err(self.kept["proxyusefdpass"].at.unsupported("ProxyUseFdpass", reason));
                }
                Some(Proxy::Command(command.to_string()))
            }
            _ => None,
        };
        Ok(ResolvedSsh {
            proxy,
            strict_host_key_checking: kept("stricthostkeychecking").map(|(v, _)| match v {
                "yes" => StrictHostKeyChecking::Yes,
                "accept-new" => StrictHostKeyChecking::AcceptNew,
                _ => StrictHostKeyChecking::Ask,
            }),
            identities_only: kept("identitiesonly").is_some_and(|(v, _)| v == "yes"),
            hash_known_hosts: kept("hashknownhosts").is_some_and(|(v, _)| v == "yes"),
            connect_timeout: seconds("connecttimeout"),
            connection_attempts: number("connectionattempts"),
            address_family: kept("addressfamily").map(|(v, _)| match v {
                "inet" => AddressFamily::Inet,
                "inet6" => AddressFamily::Inet6,
                _ => AddressFamily::Any,
            }),
            server_alive_interval: seconds("serveraliveinterval"),
            server_alive_count_max: number("serveralivecountmax"),
            hostname,
            user,
            port,
            identity_files,
            certificate_files,
            user_known_hosts_files,
            global_known_hosts_files,
            host_key_alias,
            identity_agent,
        })
    }
}

/// Checks a kept keyword's arguments and normalizes them; `None` when the value leaves the
/// setting unset (`ConnectTimeout none`), so a later line can still provide it, as in ssh.
fn checked(
    value: Value,
    name: &str,
    args: &[String],
    rest: &str,
    at: &Loc,
) -> Result<Option<Vec<String>>, SshConfigError> {
    if value == Value::Command {
        return Ok(Some(vec![rest.to_string()]));
    }
    if value == Value::Jump {
        let v = one(args, name, at)?;
        if is_none(v) {
            return Ok(Some(vec!["none".into()]));
        }
        parse_jump(v).map_err(|m| at.invalid(format!("bad ProxyJump \"{v}\": {m}")))?;
        return Ok(Some(vec![v.to_string()]));
    }
    if value == Value::Paths {
        if args.len() > 1 && args.iter().any(|a| is_none(a)) {
            return Err(at.invalid(format!("\"none\" must appear alone in {name}")));
        }
        if args.len() > MAX_KNOWN_HOSTS_FILES {
            return Err(at.invalid(format!("more than {MAX_KNOWN_HOSTS_FILES} {name} entries; remove some")));
        }
        return Ok(Some(args.to_vec()));
    }
    let v = one(args, name, at)?;
    let word = v.to_ascii_lowercase();
    let bad = |expected: &str| at.invalid(format!("bad {name} \"{v}\"; use {expected}"));
    let normalized = match value {
        Value::Text => v.to_string(),
        Value::Lowercase => word,
        Value::Flag => match word.as_str() {
            "yes" | "true" => "yes".to_string(),
            "no" | "false" => "no".to_string(),
            _ => return Err(bad("yes or no")),
        },
        Value::Port => {
            v.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad("a number from 1 to 65535"))?.to_string()
        }
        Value::Seconds if v == "none" => return Ok(None),
        Value::Seconds => parse_time(v).ok_or_else(|| bad("seconds, or units like 30s, 5m, 1h"))?.to_string(),
        Value::Count => v.parse::<i32>().ok().filter(|n| *n >= 0).ok_or_else(|| bad("a whole number"))?.to_string(),
        Value::Strict => match word.as_str() {
            "yes" | "true" => "yes".to_string(),
            "no" | "false" | "off" => "no".to_string(),
            "accept-new" | "ask" => word,
            _ => return Err(bad("yes, accept-new or ask")),
        },
        Value::Canonicalize => match word.as_str() {
            "yes" | "true" | "always" => word,
            "no" | "false" => "no".to_string(),
            _ => return Err(bad("yes, no or always")),
        },
        Value::Family => match word.as_str() {
            "any" | "inet" | "inet6" => word,
            _ => return Err(bad("any, inet or inet6")),
        },
        Value::Command | Value::Paths | Value::Jump => unreachable!("handled above"),
    };
    Ok(Some(vec![normalized]))
}

fn is_none(v: &str) -> bool {
    v.eq_ignore_ascii_case("none")
}

/// Values for `%` tokens, as ssh's DEFAULT_CLIENT_PERCENT_EXPAND_ARGS computes them.
struct Tokens<'a> {
    q: &'a SshConfigQuery<'a>,
    hostname: &'a str,
    port: u16,
    remote_user: &'a str,
    key_alias: &'a str,
    local_host: OnceCell<String>,
}

impl Tokens<'_> {
    fn expand_path(&self, raw: &str, directive: &str, at: &Loc) -> Result<PathBuf, SshConfigError> {
        let home = self.q.home.to_string_lossy();
        // ssh expands ~ before % tokens, so a %d that yields "~" is not expanded again.
        let tilde_expanded = if raw == "~" || raw.starts_with("~/") {
            format!("{home}{}", &raw[1..])
        } else if raw.starts_with('~') {
            return Err(
                at.invalid(format!("{directive} \"{raw}\": ~user paths are not supported; write the full path"))
            );
        } else {
            raw.to_string()
        };
        if tilde_expanded.contains("${") {
            return Err(at.invalid(format!(
                "{directive} \"{raw}\": environment variables are not expanded by delegate; write the path out"
            )));
        }
        let expanded = percent_expand(&tilde_expanded, |c| self.value(c));
        expanded.map(PathBuf::from).map_err(|m| at.invalid(format!("{directive} \"{raw}\": {m}")))
    }

    /// The value of the token `%c`, or `None` for one ssh does not know here.
    fn value(&self, c: char) -> Option<String> {
        let home = self.q.home.to_string_lossy();
        Some(match c {
            'd' => home.to_string(),
            'u' => self.q.local_user.to_string(),
            'h' => self.hostname.to_string(),
            'n' => self.q.host.to_string(),
            'r' => self.remote_user.to_string(),
            'p' => self.port.to_string(),
            'k' => self.key_alias.to_string(),
            // SAFETY: getuid has no preconditions and cannot fail.
            'i' => unsafe { libc::getuid() }.to_string(),
            'l' => self.local_host().to_string(),
            'L' => self.local_host().split('.').next().unwrap_or_default().to_string(),
            'C' => {
                use sha1::Digest;
                let hash = sha1::Sha1::new()
                    .chain_update(self.local_host())
                    .chain_update(self.hostname)
                    .chain_update(self.port.to_string())
                    .chain_update(self.remote_user)
                    .finalize();
                hash.iter().map(|b| format!("{b:02x}")).collect()
            }
            _ => return None,
        })
    }

    fn local_host(&self) -> &str {
        self.local_host.get_or_init(|| {
            let mut buf = [0u8; 256];
            // SAFETY: the buffer is valid for its whole length; gethostname NUL-terminates
            // within it or truncates, and we stop at the first NUL either way.
            let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
            let len = if rc == 0 { buf.iter().position(|b| *b == 0).unwrap_or(buf.len()) } else { 0 };
            String::from_utf8_lossy(&buf[..len]).into_owned()
        })
    }
}

/// `HostName` only knows `%h` (the host as typed) and `%%`, like ssh.
fn expand_hostname(raw: &str, host: &str) -> Result<String, String> {
    percent_expand(raw, |c| (c == 'h').then(|| host.to_string())).map_err(|m| format!("HostName \"{raw}\": {m}"))
}

pub(crate) fn percent_expand(s: &str, value: impl Fn(char) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(t) => match value(t) {
                Some(v) => out.push_str(&v),
                None => {
                    return Err(format!(
                        "the token %{t} is not supported; write the value out or use %% for a literal %"
                    ));
                }
            },
            None => return Err("ends with a lone %; write %% for a literal %".to_string()),
        }
    }
    Ok(out)
}

fn one<'v>(args: &'v [String], keyword: &str, at: &Loc) -> Result<&'v str, SshConfigError> {
    match args {
        [v] if !v.is_empty() => Ok(v),
        [] | [_] => Err(at.invalid(format!("{keyword} needs a value"))),
        _ => {
            Err(at
                .invalid(format!("{keyword} takes one value but the line has more; quote values that contain spaces")))
        }
    }
}

/// OpenSSH's convtime: numbers with optional s/m/h/d/w suffixes, summed ("1m30s").
fn parse_time(v: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut rest = v;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let mut units = rest.chars();
        let unit = match units.next().map(|c| c.to_ascii_lowercase()) {
            None => 1,
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3600,
            Some('d') => 86400,
            Some('w') => 604800,
            Some(_) => return None,
        };
        rest = units.as_str();
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    (total <= i32::MAX as u64).then_some(total)
}

/// Splits off the keyword as OpenSSH's strdelim does: it ends at whitespace or `=`, and one `=`
/// (with whitespace around it) may separate it from the arguments. `None` for blank lines and
/// comments.
fn split_keyword(line: &str) -> Option<(&str, &str)> {
    const WS: [char; 4] = [' ', '\t', '\r', '\n'];
    let s = line.trim_start_matches(WS);
    let end = s.find([' ', '\t', '\r', '\n', '=']).unwrap_or(s.len());
    let (keyword, rest) = s.split_at(end);
    if keyword.is_empty() || keyword.starts_with('#') {
        return None;
    }
    let rest = rest.trim_start_matches(WS);
    let rest = rest.strip_prefix('=').map_or(rest, |r| r.trim_start_matches(WS));
    Some((keyword, rest))
}

/// OpenSSH's argv_split: single or double quotes (also mid-word), backslash escapes for quotes,
/// backslashes and (outside quotes) spaces, and `#` at the start of a word ends the line.
/// `None` for an unterminated quote.
fn split_args(s: &str) -> Option<Vec<String>> {
    let chars: Vec<char> = s.chars().collect();
    let mut args = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            ' ' | '\t' => {
                i += 1;
                continue;
            }
            '#' => break,
            _ => {}
        }
        let mut arg = String::new();
        let mut quote = None;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            if c == '\\' && (matches!(next, Some('\'' | '"' | '\\')) || (quote.is_none() && next == Some(' '))) {
                i += 1;
                arg.push(chars[i]);
            } else if quote.is_none() && (c == ' ' || c == '\t') {
                break;
            } else if quote.is_none() && (c == '"' || c == '\'') {
                quote = Some(c);
            } else if quote == Some(c) {
                quote = None;
            } else {
                arg.push(c);
            }
            i += 1;
        }
        if quote.is_some() {
            return None;
        }
        args.push(arg);
    }
    Some(args)
}

#[cfg(test)]
mod tests;
