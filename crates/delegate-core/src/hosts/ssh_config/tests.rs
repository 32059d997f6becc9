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

    /// `spec` is the host, optionally followed by `-l USER` and `-p PORT` (see [`Spec`]).
    fn resolve(&self, config: &Path, spec: &str) -> Result<ResolvedSsh, SshConfigError> {
        let spec = Spec::parse(spec);
        resolve(&SshConfigQuery {
            host: spec.host,
            config_file: config,
            home: &self.home,
            local_user: &passwd().0,
            user: spec.user,
            port: spec.port,
        })
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

/// A host as the tests name it: `host`, or `host -l USER -p PORT` for the inventory's user
/// and port, which ssh gets as the same command-line options.
struct Spec<'s> {
    host: &'s str,
    user: Option<&'s str>,
    port: Option<u16>,
    words: Vec<&'s str>,
}

impl<'s> Spec<'s> {
    fn parse(spec: &'s str) -> Spec<'s> {
        let words: Vec<&str> = spec.split_whitespace().collect();
        let flag = |f: &str| words.iter().position(|w| *w == f).map(|i| words[i + 1]);
        Spec { host: words[0], user: flag("-l"), port: flag("-p").map(|p| p.parse().unwrap()), words }
    }

    /// ssh's arguments: the options first, the host last.
    fn ssh_args(&self) -> Vec<&'s str> {
        let mut args = self.words[1..].to_vec();
        args.push(self.host);
        args
    }
}

/// ssh runs `Match exec` commands with `$SHELL`, delegate always with /bin/sh, so `ssh -G`
/// gets SHELL=/bin/sh. (Not the `-v` runs: dash's complaints about the ProxyCommand would
/// interleave with the lines they read.)
fn ssh(scratch: &Scratch, args: &[&str]) -> std::process::Output {
    let mut command = Command::new("ssh");
    command.args(args).env("HOME", &scratch.home);
    if args[0] == "-G" {
        command.env("SHELL", "/bin/sh");
    }
    command.output().expect("run ssh")
}

fn map_home(scratch: &Scratch, s: &str) -> String {
    s.replace(&passwd().1, &scratch.home.to_string_lossy())
}

/// `ssh -G` output as keyword -> values (IdentityFile repeats).
fn ssh_g(scratch: &Scratch, config: &Path, host: &str) -> HashMap<String, Vec<String>> {
    let mut args = vec!["-G", "-F", config.to_str().unwrap()];
    args.extend(Spec::parse(host).ssh_args());
    let out = ssh(scratch, &args);
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
    // ssh prefixes the proxy command with `exec` itself; `true` prints nothing, so no child
    // output can land in the middle of ssh's own debug lines (bash's "exec: not found" did, in CI).
    let mut args = vec!["-v", "-F", cfg, "-o", "ProxyCommand=true", "-o", "BatchMode=yes"];
    args.extend(Spec::parse(host).ssh_args());
    args.push("true");
    let out = ssh(scratch, &args);
    let mut files: Vec<String> = Vec::new();
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        const MARK: &str = "debug1: identity file ";
        let Some(at) = line.find(MARK) else {
            continue;
        };
        let rest = &line[at + MARK.len()..];
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
    let attempts = ours.connection_attempts.unwrap_or(1).to_string();
    assert_eq!(one("connectionattempts").unwrap(), attempts, "{ctx}");
    let family = match ours.address_family {
        Some(AddressFamily::Inet) => "inet",
        Some(AddressFamily::Inet6) => "inet6",
        Some(AddressFamily::Any) | None => "any",
    };
    assert_eq!(one("addressfamily").unwrap(), family, "{ctx}");
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
    let mut args = vec!["-G", "-F", config.to_str().unwrap()];
    args.extend(Spec::parse(host).ssh_args());
    !ssh(scratch, &args).status.success()
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
            (Some(j), _) => Some(Proxy::Jump(crate::transport::ssh::route::parse_jump(&j[0]).unwrap())),
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

/// A stand-in for smallstep's `step`: `step ssh check-host HOST` exits 0 for hosts under
/// `.step.example`, 1 otherwise.
fn fake_step(s: &Scratch) -> PathBuf {
    let path = s.write("bin/step", "#!/bin/sh\ncase \"$3\" in *.step.example) exit 0;; *) exit 1;; esac\n");
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

#[test]
fn match_blocks_from_real_configs_match_ssh() {
    let s = Scratch::new();
    let step = fake_step(&s);
    let me = passwd().0;
    let flag = s.home.join("on-vpn");
    let configs = [
        // 1Password's snippet.
        "Match host * exec \"test -z $SSH_TTY\"\n  IdentityAgent ~/.1password/agent.sock\n  User op\n".to_string(),
        // smallstep's snippet.
        format!("Match exec \"{} ssh check-host %h\"\n  User stepped\n  Port 2022\n", step.display()),
        // Off the VPN, corp hosts go through a gateway name.
        format!(
            "Match host corp-* !exec \"test -e {}\"\n  HostName gw.corp.example\n  Port 2222\nHost *\n  User me\n",
            flag.display()
        ),
        "Match host github.com\n  User git\n  IdentityFile ~/.ssh/github\nHost *\n  Port 2200\n".to_string(),
        "Host a*\n  User deploy\nMatch user deploy\n  Port 2300\nMatch user root,!deploy\n  Port 9\n".to_string(),
        format!("Match localuser {me}\n  Port 2400\nMatch localuser nobody\n  User nobody\n"),
        "Host alias\n  HostName Real.Example\nMatch originalhost alias\n  User orig\n\
         Match host real.example\n  Port 2501\nMatch host alias\n  Port 9\n"
            .to_string(),
        "Match !host a*\n  User nota\nMatch host a* !user root\n  Port 2600\nMatch !host a* !originalhost b*\n  Port 9\n"
            .to_string(),
        "Match all\n  Port 2700\nMatch !all\n  User never\n".to_string(),
        "Match host a all\n  User both\n".to_string(),
        "Host a\n  HostName Fin.Example\nMatch !final\n  IdentityFile ~/.ssh/first\n\
         Match final host fin.example\n  User fin\nMatch canonical\n  Port 2801\n  IdentityFile ~/.ssh/second\n"
            .to_string(),
        "Host a\n  HostName real.example\n  Port 2900\n\
         Match exec \"test %h = real.example && test %p = 2900 && test %r = %u && test %n = a\"\n  User tokens\n"
            .to_string(),
        "Match sessiontype exec\n  User x\n".to_string(),
    ];
    for (i, config) in configs.iter().enumerate() {
        let cfg = s.write(&format!("cfg{i}"), config);
        for host in ["a", "b", "alias", "corp-db", "web.step.example", "github.com", "ab -l root"] {
            if config.contains("sessiontype") {
                continue; // OpenSSH 10 only
            }
            assert_matches_ssh(&s, &cfg, host);
            if host == "corp-db" {
                fs::write(&flag, "").unwrap();
                assert_matches_ssh(&s, &cfg, host);
                fs::remove_file(&flag).unwrap();
            }
        }
    }
    let r = |i: usize, host: &str| s.resolve(&s.home.join(format!("cfg{i}")), host).unwrap();
    assert_eq!(r(1, "web.step.example").user.as_deref(), Some("stepped"));
    assert_eq!(r(1, "b").user, None);
    assert_eq!(r(2, "corp-db").hostname, "gw.corp.example");
    assert_eq!(r(3, "a").port, Some(2200), "an unrelated Match block never blocks a host");
    assert_eq!(r(6, "alias").user.as_deref(), Some("orig"));
    assert_eq!(r(6, "alias").port, Some(2501), "Match host sees the HostName");
    assert_eq!(r(8, "b").port, Some(2700));
    let fin = r(10, "a");
    assert_eq!((fin.user.as_deref(), fin.port), (Some("fin"), Some(2801)));
    assert_eq!(fin.identity_files, vec![s.home.join(".ssh/first"), s.home.join(".ssh/second")]);
    assert_eq!(r(11, "a").user.as_deref(), Some("tokens"));
    assert_eq!(r(12, "a").user.as_deref(), Some("x"));
}

#[test]
fn match_exec_runs_like_ssh_skipped_after_a_failed_criterion_and_again_in_the_final_pass() {
    let s = Scratch::new();
    let log = s.home.join("exec.log");
    let cfg = s.write(
        "cfg",
        &format!(
            "Match host nomatch exec \"echo skipped >> {log}\"\n  User x\n\
             Match host a exec \"echo ran-%h >> {log}\"\n  User y\n\
             Match final\n  Port 2000\n",
            log = log.display()
        ),
    );
    let runs = |f: &dyn Fn()| {
        let _ = fs::remove_file(&log);
        f();
        fs::read_to_string(&log).unwrap_or_default()
    };
    let ours = runs(&|| assert_eq!(s.resolve(&cfg, "a").unwrap().user.as_deref(), Some("y")));
    let theirs = runs(&|| assert_eq!(ssh_g(&s, &cfg, "a")["user"], ["y"]));
    assert_eq!(ours, "ran-a\nran-a\n", "once per pass, never for the line whose host differs");
    assert_eq!(ours, theirs);
}

#[test]
fn bad_match_lines_are_errors_like_in_ssh() {
    let s = Scratch::new();
    for (line, needle) in [
        ("Match", "no argument"),
        ("Match host", "needs an argument"),
        ("Match bogus x", "unsupported Match criterion"),
        ("Match all host x", "cannot be combined"),
        ("Match exec \"kill -9 $$\"", "abnormally"),
    ] {
        let cfg = s.write("cfg", &format!("Host zzz\n  Port 1\n{line}\n  User u\n"));
        let err = s.resolve(&cfg, "a").unwrap_err().to_string();
        assert!(err.contains(needle) && err.contains("line 3"), "{line}: {err}");
        assert!(ssh_rejects(&s, &cfg, "a"), "ssh accepts {line}");
    }
    // Criteria delegate cannot evaluate are refused only when reached.
    let cfg = s.write("cfg", "Match host other localnetwork 10.0.0.0/8\n  User u\nMatch host a command x\n  User v\n");
    assert!(s.resolve(&cfg, "b").is_ok());
    let err = s.resolve(&cfg, "a").unwrap_err().to_string();
    assert!(err.contains("Match command") && err.contains("line 3"), "{err}");
}

#[test]
fn tag_and_match_tagged_follow_openssh_10() {
    // OpenSSH 9.2 (the oracle here) predates Tag; this follows readconf.c's match_cfg_line.
    let s = Scratch::new();
    let cfg = s.write(
        "cfg",
        "Host a\n  Tag work\nHost *\n  Tag other\n\
         Match tagged wo*,!other\n  Port 2000\nMatch tagged \"\"\n  Port 2001\nMatch !tagged work\n  User nottagged\n",
    );
    let a = s.resolve(&cfg, "a").unwrap();
    assert_eq!((a.port, a.user.as_deref()), (Some(2000), None));
    let b = s.resolve(&cfg, "b").unwrap();
    assert_eq!((b.port, b.user.as_deref()), (None, Some("nottagged")));
    let cfg = s.write("cfg", "Match tagged \"\"\n  Port 2001\n");
    assert_eq!(s.resolve(&cfg, "b").unwrap().port, Some(2001), "no Tag matches only the empty pattern");
}

#[test]
fn keywords_of_newer_openssh_are_accepted_and_refusals_apply_only_to_the_target() {
    let s = Scratch::new();
    // Known to 9.2 too: compared with the oracle.
    let cfg = s.write("cfg", "Host other\n  EnableEscapeCommandline yes\n  RequiredRSASize 2048\nHost *\n  Port 2\n");
    assert_matches_ssh(&s, &cfg, "a");
    let newer = "Tag t\n  ObscureKeystrokeTiming no\n  ChannelTimeout session=5m\n  VersionAddendum none\n  \
                 WarnWeakCrypto no\n  SessionType default\n  StdinNull no\n  ForkAfterAuthentication no\n  \
                 PermitRemoteOpen any\n  IdentityFile2 ~/.ssh/two\n  RefuseConnection no";
    let cfg = s.write("cfg", &format!("Host *\n  {newer}\n"));
    let r = s.resolve(&cfg, "a").unwrap();
    assert_eq!(r.identity_files, vec![s.home.join(".ssh/two")]);
    let cfg = s.write("cfg", "Host a\n  ConnectionAttempts 3\n  AddressFamily inet\n");
    let r = assert_matches_ssh(&s, &cfg, "a");
    assert_eq!((r.connection_attempts, r.address_family), (Some(3), Some(AddressFamily::Inet)));
    let cfg = s.write("cfg", "Host other\n  RefuseConnection yes\n");
    assert!(s.resolve(&cfg, "a").is_ok());
    let cfg = s.write("cfg", "Host a\n  RefuseConnection yes\n");
    let err = s.resolve(&cfg, "a").unwrap_err().to_string();
    assert!(err.contains("RefuseConnection yes: ssh refuses"), "{err}");
    let cfg = s.write("cfg", "Host zzz\n  AddressFamily ipx\n");
    assert!(s.resolve(&cfg, "a").unwrap_err().to_string().contains("AddressFamily"));
    assert!(ssh_rejects(&s, &cfg, "a"));
}

#[test]
fn the_inventory_user_and_port_act_like_ssh_dash_l_and_dash_p() {
    let s = Scratch::new();
    let cfg = s.write(
        "cfg",
        "Match user ian\n  IdentityFile ~/.ssh/for-ian\nHost a\n  User config\n  Port 2000\n  \
         IdentityFile ~/.ssh/%r@%h-%p\n  UserKnownHostsFile ~/kh-%r-%p\n",
    );
    let r = assert_matches_ssh(&s, &cfg, "a -l ian -p 2222");
    assert_eq!((r.user.as_deref(), r.port), (Some("ian"), Some(2222)));
    assert_eq!(r.identity_files, vec![s.home.join(".ssh/for-ian"), s.home.join(".ssh/ian@a-2222")]);
    assert_eq!(r.user_known_hosts_files, vec![s.home.join("kh-ian-2222")]);
    let r = assert_matches_ssh(&s, &cfg, "a");
    assert_eq!(r.identity_files, vec![s.home.join(".ssh/config@a-2000")]);
}
