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

use crate::known_hosts::{match_pattern_list, wildcard_match};

/// What to resolve, and everything the resolution needs from the caller's environment.
pub struct SshConfigQuery<'a> {
    /// What the user typed: an alias or a hostname.
    pub host: &'a str,
    /// Usually `<home>/.ssh/config`; a missing file means "no config".
    pub config_file: &'a Path,
    /// For `~`, `%d`, and `Include` paths relative to `~/.ssh`.
    pub home: &'a Path,
    /// For `%u`, and the default remote user.
    pub local_user: &'a str,
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
    /// Expanded; empty when not configured.
    pub user_known_hosts_files: Vec<PathBuf>,
    pub strict_host_key_checking: Option<StrictHostKeyChecking>,
    /// Lowercased, as ssh does before it looks the alias up in known_hosts.
    pub host_key_alias: Option<String>,
    pub connect_timeout: Option<Duration>,
    pub server_alive_interval: Option<Duration>,
    pub server_alive_count_max: Option<u32>,
    /// `None` when the config gives no `IdentityAgent`.
    pub identity_agent: Option<IdentityAgent>,
    /// `ProxyJump` or `ProxyCommand`, whichever ssh would use; `None` for a direct connection.
    pub proxy: Option<Proxy>,
}

/// How ssh would reach the host when not directly (see [`crate::ssh::route`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxy {
    /// `ProxyJump`: the hops in order, the host connected to first coming first.
    Jump(Vec<crate::ssh::route::JumpHop>),
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
    "checkhostip", "verifyhostkeydns", "nohostauthenticationforlocalhost", "hashknownhosts", "updatehostkeys",
    "visualhostkey", "globalknownhostsfile",
    // Transport tuning, canonicalization details (CanonicalizeHostname itself is checked), logging.
    "tcpkeepalive", "keepalive", "addressfamily", "connectionattempts", "ipqos",
    "canonicaldomains", "canonicalizefallbacklocal", "canonicalizemaxdots", "canonicalizepermittedcnames",
    "loglevel", "logverbose", "syslogfacility",
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
    ("stricthostkeychecking", "StrictHostKeyChecking", Value::Strict),
    ("connecttimeout", "ConnectTimeout", Value::Seconds), ("serveraliveinterval", "ServerAliveInterval", Value::Seconds),
    ("serveralivecountmax", "ServerAliveCountMax", Value::Count), ("identityagent", "IdentityAgent", Value::Text),
    ("ignoreunknown", "IgnoreUnknown", Value::Text),
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
];

/// OpenSSH's limits (readconf.c READCONF_MAX_DEPTH, SSH_MAX_IDENTITY_FILES, SSH_MAX_HOSTS_FILES).
const MAX_INCLUDE_DEPTH: usize = 16;
const MAX_IDENTITY_FILES: usize = 100;
const MAX_KNOWN_HOSTS_FILES: usize = 32;

/// Resolves `q.host` against `q.config_file` the way `ssh -G` does.
pub fn resolve(q: &SshConfigQuery) -> Result<ResolvedSsh, SshConfigError> {
    let mut parser = Parser { q, kept: HashMap::new(), identity_files: Vec::new() };
    let top = Loc { path: q.config_file.to_path_buf(), line: 0 };
    parser.read_file(q.config_file, 0, &mut true, false, &top)?;
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
}

impl Parser<'_, '_> {
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
            "match" if never_match => *active = false,
            "match" => {
                return Err(
                    at.unsupported("Match", "blocks cannot be evaluated by delegate; rewrite them as Host blocks")
                );
            }
            "include" => {
                for arg in &args {
                    for file in self.include_paths(arg, at)? {
                        self.read_file(&file, depth + 1, &mut on.clone(), never_match || !on, at)?;
                    }
                }
            }
            "identityfile" => {
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
            "certificatefile" if on => {
                let reason =
                    "is not supported by delegate yet; remove it for this host and authenticate with a plain key";
                return Err(at.unsupported("CertificateFile", reason));
            }
            "bindaddress" | "bindinterface" if on => {
                let reason = "is not supported by delegate; remove it for this host so the connection leaves from the default address";
                return Err(at.unsupported(keyword, reason));
            }
            "certificatefile" | "bindaddress" | "bindinterface" => {}
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
        let user_known_hosts_files = match self.kept.get("userknownhostsfile") {
            Some(k) => k.values.iter().map(|raw| tokens.expand_path(raw, k.name, &k.at)).collect::<Result<_, _>>()?,
            None => Vec::new(),
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
            (Some((jump, _)), _) if !is_none(jump) => {
                Some(Proxy::Jump(crate::ssh::route::parse_jump(jump).expect("checked when read")))
            }
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
            connect_timeout: seconds("connecttimeout"),
            server_alive_interval: seconds("serveraliveinterval"),
            server_alive_count_max: number("serveralivecountmax"),
            hostname,
            user,
            port,
            identity_files,
            user_known_hosts_files,
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
        crate::ssh::route::parse_jump(v).map_err(|m| at.invalid(format!("bad ProxyJump \"{v}\": {m}")))?;
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
        let expanded = percent_expand(&tilde_expanded, |c| {
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
        });
        expanded.map(PathBuf::from).map_err(|m| at.invalid(format!("{directive} \"{raw}\": {m}")))
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
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::ffi::CStr;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A scratch directory that doubles as the home directory, removed on drop.
    struct Scratch {
        home: PathBuf,
    }

    impl Scratch {
        fn new() -> Scratch {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::SeqCst);
            let home = std::env::temp_dir().join(format!("delegate-ssh-config-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&home);
            fs::create_dir_all(home.join(".ssh")).unwrap();
            Scratch { home }
        }

        fn write(&self, rel: &str, text: &str) -> PathBuf {
            let path = self.home.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
            path
        }

        fn resolve(&self, config: &Path, host: &str) -> Result<ResolvedSsh, SshConfigError> {
            resolve(&SshConfigQuery { host, config_file: config, home: &self.home, local_user: &passwd().0 })
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.home);
        }
    }

    /// The running user's name and passwd home: ssh expands `~` and `%d` with the passwd home,
    /// but Include globs with `$HOME`, so the oracle runs with HOME set to the scratch home and
    /// its paths are mapped from the passwd home to the scratch home before comparing.
    fn passwd() -> (String, String) {
        // SAFETY: getpwuid returns a pointer into static storage or NULL; the strings are
        // copied out immediately and the tests do not call other getpw* functions concurrently.
        unsafe {
            let pw = libc::getpwuid(libc::getuid());
            assert!(!pw.is_null(), "no passwd entry for the test user");
            let name = CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned();
            let dir = CStr::from_ptr((*pw).pw_dir).to_string_lossy().into_owned();
            (name, dir)
        }
    }

    fn ssh(scratch: &Scratch, args: &[&str]) -> std::process::Output {
        Command::new("ssh").args(args).env("HOME", &scratch.home).output().expect("run ssh")
    }

    fn map_home(scratch: &Scratch, s: &str) -> String {
        s.replace(&passwd().1, &scratch.home.to_string_lossy())
    }

    /// `ssh -G` output as keyword -> values (IdentityFile repeats).
    fn ssh_g(scratch: &Scratch, config: &Path, host: &str) -> HashMap<String, Vec<String>> {
        let out = ssh(scratch, &["-G", "-F", config.to_str().unwrap(), host]);
        assert!(out.status.success(), "ssh -G failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            map.entry(k.to_string()).or_default().push(v.to_string());
        }
        map
    }

    /// ssh -G prints IdentityFile unexpanded, so ask ssh -v which files it actually loads;
    /// a ProxyCommand that exits at once gets ssh that far without any network.
    fn ssh_identity_files(scratch: &Scratch, config: &Path, host: &str) -> Vec<String> {
        let cfg = config.to_str().unwrap();
        let out = ssh(scratch, &["-v", "-F", cfg, "-o", "ProxyCommand=exec true", "-o", "BatchMode=yes", host, "true"]);
        let mut files: Vec<String> = Vec::new();
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            let Some(rest) = line.strip_prefix("debug1: identity file ") else {
                continue;
            };
            let path = map_home(scratch, rest.rsplit_once(" type ").unwrap().0);
            if files.last().is_some_and(|prev| format!("{prev}-cert") == path) {
                continue;
            }
            files.push(path);
        }
        files
    }

    /// Compares every field delegate uses with what real OpenSSH resolves.
    fn assert_matches_ssh(scratch: &Scratch, config: &Path, host: &str) -> ResolvedSsh {
        let ours = scratch.resolve(config, host).unwrap_or_else(|e| panic!("{host}: {e}"));
        let g = ssh_g(scratch, config, host);
        let one = |k: &str| g.get(k).map(|v| v.join("\n"));
        let ctx = format!("host {host}, config:\n{}", fs::read_to_string(config).unwrap());
        assert_eq!(one("hostname").unwrap(), ours.hostname, "{ctx}");
        assert_eq!(one("user").unwrap(), ours.user.clone().unwrap_or(passwd().0), "{ctx}");
        assert_eq!(one("port").unwrap(), ours.port.unwrap_or(22).to_string(), "{ctx}");
        assert_eq!(one("identitiesonly").unwrap(), if ours.identities_only { "yes" } else { "no" }, "{ctx}");
        let strict = match ours.strict_host_key_checking {
            Some(StrictHostKeyChecking::Yes) => "true",
            Some(StrictHostKeyChecking::AcceptNew) => "accept-new",
            Some(StrictHostKeyChecking::Ask) | None => "ask",
        };
        assert_eq!(one("stricthostkeychecking").unwrap(), strict, "{ctx}");
        assert_eq!(one("hostkeyalias"), ours.host_key_alias, "{ctx}");
        let timeout = ours.connect_timeout.map_or("none".to_string(), |d| d.as_secs().to_string());
        assert_eq!(one("connecttimeout").unwrap(), timeout, "{ctx}");
        let interval = ours.server_alive_interval.map_or(0, |d| d.as_secs());
        assert_eq!(one("serveraliveinterval").unwrap(), interval.to_string(), "{ctx}");
        assert_eq!(one("serveralivecountmax").unwrap(), ours.server_alive_count_max.unwrap_or(3).to_string(), "{ctx}");
        if !ours.user_known_hosts_files.is_empty() {
            let theirs = map_home(scratch, &one("userknownhostsfile").unwrap());
            let mine: Vec<_> = ours.user_known_hosts_files.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            assert_eq!(theirs, mine.join(" "), "{ctx}");
        }
        if !ours.identity_files.is_empty() {
            let mine: Vec<_> = ours.identity_files.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            assert_eq!(ssh_identity_files(scratch, config, host), mine, "{ctx}");
        }
        ours
    }

    fn ssh_rejects(scratch: &Scratch, config: &Path, host: &str) -> bool {
        !ssh(scratch, &["-G", "-F", config.to_str().unwrap(), host]).status.success()
    }

    #[test]
    fn syntax_variants_match_ssh() {
        let s = Scratch::new();
        let cfg = s.write(
            "cfg",
            "# leading comment\n\
             \n\
             Host=one \"two\"\ttabbed # trailing comment\n\
             \tHostName = Real.Example.COM   # comment after whitespace\n\
             \tUser\t\"deploy user\"\n\
             \tport=2222\n\
             \tIdentityFile=\"~/.ssh/id with space\"\n\
             \tIdentityFile ~/.ssh/id\\ escaped\n\
             \tIdentityFile '/abs/single quoted'#not-a-comment\n\
             \tIDENTITIESONLY yes\n\
             \tConnectTimeout\t=\t1m30s\n\
             \tServerAliveInterval 15\n\
             \tServerAliveCountMax=7\n\
             \tStrictHostKeyChecking ACCEPT-NEW\n\
             \tHostKeyAlias MixedCase\n\
             \tUserKnownHostsFile ~/kh1 \"/tmp/kh 2\"\n",
        );
        for host in ["one", "two", "tabbed", "ONE", "other"] {
            assert_matches_ssh(&s, &cfg, host);
        }
        let r = assert_matches_ssh(&s, &cfg, "one");
        assert_eq!(r.hostname, "real.example.com");
        assert_eq!(r.user.as_deref(), Some("deploy user"));
        assert_eq!(r.port, Some(2222));
        assert_eq!(r.connect_timeout, Some(Duration::from_secs(90)));
        assert_eq!(r.identity_files[0], s.home.join(".ssh/id with space"));
        assert_eq!(r.user_known_hosts_files, vec![s.home.join("kh1"), PathBuf::from("/tmp/kh 2")]);
        assert_eq!(r.host_key_alias.as_deref(), Some("mixedcase"));
        assert_eq!(s.resolve(&cfg, "ONE").unwrap().hostname, "one", "Host matching is case-sensitive");
    }

    #[test]
    fn crlf_and_form_feed_are_tolerated() {
        let s = Scratch::new();
        let cfg = s.write("cfg", "Host a\r\n  HostName b.example\r\n  Port 2200\x0c\r\n\r\n");
        let r = assert_matches_ssh(&s, &cfg, "a");
        assert_eq!((r.hostname.as_str(), r.port), ("b.example", Some(2200)));
    }

    #[test]
    fn first_value_wins_and_host_star_placement_matters() {
        let s = Scratch::new();
        let star_first = s.write(
            "first",
            "Host *\n  User star\n  Port 1000\n  IdentityFile ~/.ssh/star\n  UserKnownHostsFile ~/star_kh\n\
             Host a\n  User a\n  Port 2000\n  IdentityFile ~/.ssh/a\n  UserKnownHostsFile ~/a_kh\n  ConnectTimeout 3\n",
        );
        let star_last = s.write(
            "last",
            "Host a\n  User a\n  IdentityFile ~/.ssh/a\n  UserKnownHostsFile ~/a_kh\n  ConnectTimeout none\n\
             Host *\n  User star\n  Port 1000\n  IdentityFile ~/.ssh/star\n  UserKnownHostsFile ~/star_kh\n  ConnectTimeout 4\n",
        );
        for host in ["a", "b"] {
            assert_matches_ssh(&s, &star_first, host);
            assert_matches_ssh(&s, &star_last, host);
        }
        let r = s.resolve(&star_first, "a").unwrap();
        assert_eq!((r.user.as_deref(), r.port), (Some("star"), Some(1000)));
        assert_eq!(r.identity_files, vec![s.home.join(".ssh/star"), s.home.join(".ssh/a")]);
        assert_eq!(r.user_known_hosts_files, vec![s.home.join("star_kh")]);
        let r = s.resolve(&star_last, "a").unwrap();
        assert_eq!((r.user.as_deref(), r.port), (Some("a"), Some(1000)));
        assert_eq!(r.connect_timeout, Some(Duration::from_secs(4)), "ConnectTimeout none leaves it unset");
    }

    #[test]
    fn patterns_and_negation_match_ssh() {
        let s = Scratch::new();
        let cfg = s.write(
            "cfg",
            "Host web-* !web-secret\n  User web\n\
             Host !db1\n  Port 9\n\
             Host db? *.internal\n  HostName %h.example.net\n  IdentityFile ~/.ssh/db\n  IdentityFile ~/.ssh/db\n\
             Host *\n  IdentityFile ~/.ssh/all\n",
        );
        for host in ["web-1", "web-secret", "db1", "db22", "x.internal", "x.internal.com", "web"] {
            assert_matches_ssh(&s, &cfg, host);
        }
        let r = s.resolve(&cfg, "db2").unwrap();
        assert_eq!(r.hostname, "db2.example.net");
        assert_eq!(r.identity_files, vec![s.home.join(".ssh/db"), s.home.join(".ssh/all")], "duplicates dropped");
        assert_eq!(s.resolve(&cfg, "web-secret").unwrap().user, None);
        assert_eq!(s.resolve(&cfg, "web-1").unwrap().port, None, "a Host line of only negations never applies");
    }

    #[test]
    fn tokens_match_ssh() {
        let s = Scratch::new();
        let cfg = s.write(
            "cfg",
            "Host Tok\n  HostName Real-%h.Example\n  User remote\n  Port 2022\n  HostKeyAlias KeyAlias\n\
             \x20 IdentityFile ~/.ssh/%h_%r_%p_%u_%n_%%_%k\n\
             \x20 IdentityFile %d/id_%i_%l_%L_%C\n\
             \x20 UserKnownHostsFile %d/kh_%h ~/kh_%n_%p\n\
             Host plain\n  IdentityFile /keys/%h-%r-%p\n",
        );
        let r = assert_matches_ssh(&s, &cfg, "Tok");
        assert_eq!(r.hostname, "real-tok.example");
        let first = format!(".ssh/real-tok.example_remote_2022_{}_Tok_%_keyalias", passwd().0);
        assert_eq!(r.identity_files[0], s.home.join(first));
        let r = assert_matches_ssh(&s, &cfg, "plain");
        assert_eq!(r.identity_files, vec![PathBuf::from(format!("/keys/plain-{}-22", passwd().0))]);
    }

    #[test]
    fn unsupported_tokens_are_errors_like_in_ssh() {
        let s = Scratch::new();
        for (line, token) in [
            ("IdentityFile ~/.ssh/%j", "%j"),
            ("UserKnownHostsFile /kh/%T", "%T"),
            ("HostName %p.example", "%p"),
            ("IdentityFile /x/%", "lone %"),
        ] {
            let cfg = s.write("cfg", &format!("Host a\n  {line}\n"));
            let err = s.resolve(&cfg, "a").unwrap_err().to_string();
            assert!(err.contains(token) && err.contains("line 2"), "{err}");
            assert!(
                ssh_rejects(&s, &cfg, "a") || !ssh_identity_files(&s, &cfg, "a").iter().any(|f| f.contains("/.ssh/")),
                "{line}"
            );
        }
        let cfg = s.write("cfg", "Host a\n  IdentityFile ${HOME}/.ssh/id\n");
        assert!(s.resolve(&cfg, "a").unwrap_err().to_string().contains("environment variables"));
    }

    #[test]
    fn include_matches_ssh() {
        let s = Scratch::new();
        s.write(".ssh/conf.d/10-web.conf", "Host web\n  HostName web.example\n  Port 2201\nHost *\n  User fromglob\n");
        s.write(".ssh/conf.d/20-late.conf", "Port 2299\nIdentityFile ~/.ssh/late\n");
        s.write(".ssh/conf.d/.hidden.conf", "Port 1\n");
        s.write(".ssh/conf.d/ignored.txt", "Port 2\n");
        s.write("abs/inside.conf", "User inside\nHost never\n  User never\n");
        s.write("abs/parseonly.conf", "Host db\n  User parseonly\n");
        let abs = s.home.join("abs");
        let cfg = s.write(
            ".ssh/config",
            &format!(
                "Host db\n  Include {}/inside.conf\n  IdentityFile ~/.ssh/db\n\
                 Host nomatch\n  Include {}/parseonly.conf\n\
                 Host *\n  Include conf.d/*.conf ~/.ssh/missing/*.conf\n",
                abs.display(),
                abs.display()
            ),
        );
        for host in ["web", "db", "other", "nomatch"] {
            assert_matches_ssh(&s, &cfg, host);
        }
        let r = s.resolve(&cfg, "web").unwrap();
        assert_eq!((r.hostname.as_str(), r.port, r.user.as_deref()), ("web.example", Some(2201), Some("fromglob")));
        let r = s.resolve(&cfg, "db").unwrap();
        assert_eq!((r.user.as_deref(), r.port), (Some("inside"), Some(2299)));
        assert_eq!(r.identity_files, vec![s.home.join(".ssh/db"), s.home.join(".ssh/late")]);
    }

    #[test]
    fn include_loops_and_bad_permissions_are_errors() {
        let s = Scratch::new();
        let cfg = s.write(".ssh/config", "Include config\n");
        let err = s.resolve(&cfg, "a").unwrap_err().to_string();
        assert!(err.contains("Include") && err.contains("16"), "{err}");
        assert!(ssh_rejects(&s, &cfg, "a"));

        let inc = s.write(".ssh/loose.conf", "Port 3\n");
        fs::set_permissions(&inc, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
        let cfg = s.write(".ssh/config", "Include loose.conf\n");
        assert!(matches!(s.resolve(&cfg, "a"), Err(SshConfigError::Permissions { .. })));
        assert!(ssh_rejects(&s, &cfg, "a"));
    }

    #[test]
    fn missing_config_means_defaults() {
        let s = Scratch::new();
        let r = s.resolve(&s.home.join(".ssh/config"), "Some.Host").unwrap();
        assert_eq!(r.hostname, "some.host");
        assert_eq!((r.user, r.port, r.strict_host_key_checking), (None, None, None));
        assert!(r.identity_files.is_empty() && r.user_known_hosts_files.is_empty());
    }

    #[test]
    fn unknown_keywords_and_bad_values_fail_even_in_other_blocks_like_ssh() {
        let s = Scratch::new();
        for (text, needle) in [
            ("Host zzz\n  Bogus yes\n", "unknown ssh_config keyword \"Bogus\""),
            ("Host zzz\n  Port 99999\n", "bad Port \"99999\"; use a number from 1 to 65535"),
            ("Host zzz\n  Port 0\n", "bad Port"),
            ("Host zzz\n  StrictHostKeyChecking maybe\n", "StrictHostKeyChecking"),
            ("Host zzz\n  ConnectTimeout 5x\n", "bad ConnectTimeout"),
            ("Host zzz\n  HostName a b\n", "one value"),
            ("Host zzz\n  User \"unterminated\n", "quotes"),
            ("Host\n", "no argument"),
        ] {
            let cfg = s.write("cfg", text);
            let err = s.resolve(&cfg, "a").unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("line"), "{text:?}: {err}");
            assert!(ssh_rejects(&s, &cfg, "a"), "ssh accepts {text:?}");
        }
        let cfg = s.write("cfg", "IgnoreUnknown bog*,UseKeychain\nHost a\n  Bogus 1\n  usekeychain yes\n  Port 23\n");
        assert_eq!(assert_matches_ssh(&s, &cfg, "a").port, Some(23));
    }

    #[test]
    fn directives_delegate_cannot_honour_are_errors_only_where_they_apply() {
        let s = Scratch::new();
        for (directive, expect) in [
            ("ProxyUseFdpass yes\n  ProxyCommand nc %h %p", "ProxyUseFdpass"),
            ("CertificateFile ~/.ssh/id-cert.pub", "CertificateFile"),
            ("RemoteCommand tmux attach", "RemoteCommand"),
            ("CanonicalizeHostname yes", "CanonicalizeHostname"),
            ("StrictHostKeyChecking no", "delegate always verifies host keys"),
            ("StrictHostKeyChecking off", "delegate always verifies host keys"),
            ("UserKnownHostsFile none", "UserKnownHostsFile none"),
            ("KnownHostsCommand /bin/true", "KnownHostsCommand"),
            ("BindAddress 10.0.0.1", "BindAddress"),
        ] {
            let cfg = s.write("cfg", &format!("Host other\n  Port 1\nHost target\n  {directive}\nHost *\n  User u\n"));
            let err = s.resolve(&cfg, "target").unwrap_err();
            let text = err.to_string();
            assert!(text.contains(expect) && text.contains("line 4"), "{directive}: {text}");
            assert!(matches!(err, SshConfigError::Unsupported { .. }), "{directive}: {err:?}");
            assert_matches_ssh(&s, &cfg, "other");
        }
        let cfg = s.write("cfg", "Host a\n  PermitLocalCommand yes\n  LocalCommand echo hi\n");
        assert!(s.resolve(&cfg, "a").unwrap_err().to_string().contains("PermitLocalCommand"));
        let cfg = s.write("cfg", "Host a\n  LocalCommand echo hi\n");
        assert!(s.resolve(&cfg, "a").is_ok(), "LocalCommand without PermitLocalCommand never runs");
        let cfg = s.write("cfg", "Host other\n  Port 1\nMatch host a\n  User m\n");
        assert!(s.resolve(&cfg, "a").unwrap_err().to_string().contains("Match"));
    }

    #[test]
    fn proxy_jump_and_proxy_command_resolve_like_ssh() {
        let s = Scratch::new();
        let cfg = s.write(
            "cfg",
            "Host t1\n  ProxyJump u@a:2,b,ssh://v@c:3\n  ProxyCommand nc %h %p\n\
             Host t2\n  ProxyCommand nc %h %p %r\n  ProxyJump a\n\
             Host t3\n  ProxyJump none\n\
             Host t4\n  ProxyCommand none\n\
             Host t6\n  ProxyJump none\n  ProxyCommand none\n\
             Host *\n  ProxyCommand socat - TCP:%h:%p\n  ProxyJump z\n",
        );
        for host in ["t1", "t2", "t3", "t4", "t5", "t6"] {
            let theirs = ssh_g(&s, &cfg, host);
            let expected = match (theirs.get("proxyjump"), theirs.get("proxycommand")) {
                (Some(j), _) => Some(Proxy::Jump(crate::ssh::route::parse_jump(&j[0]).unwrap())),
                (None, Some(c)) => Some(Proxy::Command(c[0].clone())),
                (None, None) => None,
            };
            assert_eq!(s.resolve(&cfg, host).unwrap().proxy, expected, "{host}");
        }
        // The first one obtained wins; `ProxyJump none` does not stop a later ProxyCommand.
        let jump = |h: &str| match s.resolve(&cfg, h).unwrap().proxy {
            Some(Proxy::Jump(hops)) => hops.iter().map(|h| h.host.clone()).collect::<Vec<_>>().join(","),
            other => format!("{other:?}"),
        };
        assert_eq!(jump("t1"), "a,b,c");
        assert_eq!(jump("t3"), "Some(Command(\"socat - TCP:%h:%p\"))");
        assert_eq!(jump("t4"), "None");
        let bad = s.write("bad", "Host zzz\n  ProxyJump a:99999\n");
        assert!(s.resolve(&bad, "a").unwrap_err().to_string().contains("bad ProxyJump"));
        assert!(ssh_rejects(&s, &bad, "a"));
    }

    #[test]
    fn none_values_opt_a_host_out_of_later_defaults() {
        let s = Scratch::new();
        let cfg = s.write(
            "cfg",
            "Host direct\n  ProxyJump none\n  RemoteCommand none\n  CanonicalizeHostname no\n  StrictHostKeyChecking yes\n\
             Host *\n  ProxyJump bastion\n  ProxyCommand nc %h %p\n  RemoteCommand tmux\n  StrictHostKeyChecking no\n  CanonicalizeHostname yes\n",
        );
        let r = assert_matches_ssh(&s, &cfg, "direct");
        assert_eq!(r.strict_host_key_checking, Some(StrictHostKeyChecking::Yes));
        assert!(s.resolve(&cfg, "other").is_err());
    }

    #[test]
    fn identity_agent_forms() {
        let s = Scratch::new();
        let agent = |v: &str| {
            let cfg = s.write("cfg", &format!("Host a\n  IdentityAgent {v}\n"));
            s.resolve(&cfg, "a").unwrap().identity_agent
        };
        assert_eq!(agent("none"), Some(IdentityAgent::Disabled));
        assert_eq!(agent("SSH_AUTH_SOCK"), Some(IdentityAgent::Env("SSH_AUTH_SOCK".into())));
        assert_eq!(agent("$MY_SOCK"), Some(IdentityAgent::Env("MY_SOCK".into())));
        assert_eq!(agent("${MY_SOCK}"), Some(IdentityAgent::Env("MY_SOCK".into())));
        assert_eq!(agent("~/.agent/%h.sock"), Some(IdentityAgent::Socket(s.home.join(".agent/a.sock"))));
    }

    #[test]
    fn tokenizer_follows_argv_split() {
        let args = |s: &str| split_args(s).unwrap();
        assert_eq!(args("a \"b c\" d#e # f"), ["a", "b c", "d#e"]);
        assert_eq!(args("x\"y z\"w 'q'"), ["xy zw", "q"]);
        assert_eq!(args("a\\ b \\\"c\\\" \\n"), ["a b", "\"c\"", "\\n"]);
        assert_eq!(split_args("\"open"), None);
        assert_eq!(split_keyword("  Key = Value"), Some(("Key", "Value")));
        assert_eq!(split_keyword("Key=Value"), Some(("Key", "Value")));
        assert_eq!(split_keyword("Key ==Value"), Some(("Key", "=Value")));
        assert_eq!(split_keyword("   # Key Value"), None);
        assert_eq!(parse_time("1h2m3s"), Some(3723));
        assert_eq!(parse_time("10"), Some(10));
        assert_eq!(parse_time("m"), None);
        assert!(wildcard_match(b"a*b?c", b"axxbyc") && !wildcard_match(b"a*b?c", b"axxbc"));
        assert!(wildcard_match(b"*", b"") && wildcard_match(b"**x", b"yx") && !wildcard_match(b"x", b"xy"));
        assert_eq!(match_pattern_list("web1", "DB*,WEB*"), Some(true));
        assert_eq!(match_pattern_list("web1", "web*,!web1"), Some(false));
        assert_eq!(match_pattern_list("web1", "db*"), None);
    }
}
