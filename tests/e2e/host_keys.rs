//! Host keys under concurrency and host certificates.
//!
//! | test | testplan | checks |
//! |---|---|---|
//! | `c7_concurrent_accept_new_of_different_hosts_keeps_every_line_whole` | C7 | 8 CLI processes held at the handshake by stalled proxies and released together, each learning a different host with `StrictHostKeyChecking accept-new` into one known_hosts: every line whole, each key once, `ssh-keygen -F` finds each, mode kept |
//! | `s5_host_certificates_from_a_trusted_ca_are_accepted_and_bad_ones_refused` | S5 | a valid CA-signed host certificate is accepted through `@cert-authority` (as by OpenSSH) under `yes` and `accept-new`, known_hosts untouched; expired, wrong principal, unknown CA, and a plain key where a certificate is expected are refused (exit 13) saying why, never learned |
//! | `global_known_hosts_and_known_hosts2_are_read_like_ssh` | §1.7d | GlobalKnownHostsFile: a conflicting global entry refuses the host under accept-new (file and line named, nothing learned), a matching one vouches for it; `~/.ssh/known_hosts2` is read by default |
//! | `hash_known_hosts_makes_accept_new_write_a_hashed_name` | S6 | `HashKnownHosts yes`: one `|1|salt|hash` line that `ssh-keygen -F` finds, learned once |
//! | `a_key_revoked_or_changed_while_the_warm_daemon_holds_the_connection_refuses_the_next_command` | S1-S4h | the daemon's held connection is checked again: exit 13, no new connection, nothing run, the connection let go; a fresh connection says the same |

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use delegate_testkit::{FakeHost, Fault, FaultProxy};

use crate::support::Env;

const BOUND: Duration = Duration::from_secs(60);

fn accept_new(env: &Env) {
    std::fs::write(env.home.join(".ssh/config"), "Host *\n  StrictHostKeyChecking accept-new\n").unwrap();
}

/// `ssh-keygen -F <name> -f <file>`: the lines OpenSSH finds for `name`.
fn ssh_keygen_find(file: &std::path::Path, name: &str) -> (bool, String) {
    let out = Command::new("ssh-keygen").arg("-F").arg(name).arg("-f").arg(file).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn c7_concurrent_accept_new_of_different_hosts_keeps_every_line_whole() {
    const HOSTS: usize = 8;
    let hosts: Vec<FakeHost> = (0..HOSTS).map(|_| FakeHost::start()).collect();
    // Each host behind a stalled proxy, so every process gets as far as the handshake and
    // waits; one switch to Pass then sends all eight into their host-key check together.
    let proxies: Vec<FaultProxy> = hosts
        .iter()
        .map(|h| {
            let p = FaultProxy::start(([127, 0, 0, 1], h.port()).into());
            p.set(Fault::Stall);
            p
        })
        .collect();
    let line_of = |i: usize| format!("[127.0.0.1]:{} {}", proxies[i].port(), hosts[i].host_public_key());
    let env = Env::new();
    accept_new(&env);
    // A last line without its newline: each writer must terminate it exactly once.
    let comment = "# known_hosts shared by C7";
    std::fs::write(&env.known_hosts, comment).unwrap();
    std::fs::set_permissions(&env.known_hosts, std::fs::Permissions::from_mode(0o640)).unwrap();
    for (i, host) in hosts.iter().enumerate() {
        let toml = env
            .host_toml(&format!("h{i}"), host)
            .replace(&format!("port = {}\n", host.port()), &format!("port = {}\n", proxies[i].port()))
            .replace("connect_timeout = 5\n", "connect_timeout = 30\n");
        env.config_append(&toml);
        env.add_brother(&format!("b{i}"), &format!("h{i}"), host, "self-test", "read");
    }

    let started = Instant::now();
    let children: Vec<_> = (0..HOSTS)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_delegate"))
                .env_clear()
                .envs(env.envs())
                .current_dir(&env.home)
                .args([&format!("b{i}"), "hello", "--json"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    while proxies.iter().any(|p| p.connections() == 0) {
        assert!(started.elapsed() < BOUND, "not every process connected");
        std::thread::sleep(Duration::from_millis(10));
    }
    for p in &proxies {
        p.set(Fault::Pass);
    }
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "b{i}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());

    let text = std::fs::read_to_string(&env.known_hosts).unwrap();
    assert!(text.ends_with('\n'), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], comment, "the unterminated first line was changed:\n{text}");
    assert_eq!(lines.len(), HOSTS + 1, "one line per host plus the comment:\n{text}");
    for (i, host) in hosts.iter().enumerate() {
        let expected = line_of(i);
        let n = lines.iter().filter(|l| **l == expected).count();
        assert_eq!(n, 1, "h{i}: {n} whole lines `{expected}` in:\n{text}");
        let name = format!("[127.0.0.1]:{}", proxies[i].port());
        let (found, out) = ssh_keygen_find(&env.known_hosts, &name);
        assert!(found && out.contains(&host.host_public_key()), "ssh-keygen -F {name}: {out}\n{text}");
    }
    assert!(lines[1..].iter().all(|l| (0..HOSTS).any(|i| *l == line_of(i))), "a foreign line:\n{text}");
    let mode = std::fs::metadata(&env.known_hosts).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the file mode changed");
    // And the learned keys are now simply known: a second round learns nothing.
    for i in 0..HOSTS {
        env.run(&[&format!("b{i}"), "again", "--json"]).ok();
    }
    assert_eq!(std::fs::read_to_string(&env.known_hosts).unwrap(), text, "a known host was learned twice");
}

/// `host.ssh_args()` reading `known_hosts` (and `global`, if any) instead of the kit's file.
fn oracle_args(
    host: &FakeHost,
    known_hosts: &std::path::Path,
    global: Option<&std::path::Path>,
    strict: &str,
) -> Vec<String> {
    host.ssh_args()
        .into_iter()
        .map(|a| {
            if a.starts_with("UserKnownHostsFile=") {
                format!("UserKnownHostsFile={}", known_hosts.display())
            } else if a.starts_with("GlobalKnownHostsFile=") {
                format!("GlobalKnownHostsFile={}", global.map_or("/dev/null".into(), |g| g.display().to_string()))
            } else if a.starts_with("StrictHostKeyChecking=") {
                format!("StrictHostKeyChecking={strict}")
            } else {
                a
            }
        })
        .collect()
}

fn ssh_ok(args: &[String]) -> bool {
    let out = Command::new("ssh").args(args).args(["--", "true"]).output().unwrap();
    out.status.success()
}

#[test]
fn s5_host_certificates_from_a_trusted_ca_are_accepted_and_bad_ones_refused() {
    let env = Env::new();
    let (ca, ca_pub) = delegate_testkit::keygen(&env.home, "host_ca", "ed25519");
    let (other_ca, _) = delegate_testkit::keygen(&env.home, "other_ca", "ed25519");
    let cases: Vec<(&str, FakeHost, &str)> = vec![
        ("valid", FakeHost::builder().host_certificate(&ca, "127.0.0.1", None).start(), ""),
        ("expired", FakeHost::builder().host_certificate(&ca, "127.0.0.1", Some("-2d:-1d")).start(), "expired at"),
        (
            "wrong principal",
            FakeHost::builder().host_certificate(&ca, "other.example", None).start(),
            "it is for other.example, not 127.0.0.1",
        ),
        (
            "unknown CA",
            FakeHost::builder().host_certificate(&other_ca, "127.0.0.1", None).start(),
            "which known_hosts does not trust",
        ),
        ("no certificate", FakeHost::start(), "presented a plain key"),
    ];
    for (i, (_, host, _)) in cases.iter().enumerate() {
        env.config_append(&env.host_toml(&format!("h{i}"), host));
        env.add_brother(&format!("b{i}"), &format!("h{i}"), host, "self-test", "read");
    }
    for (i, (case, host, why)) in cases.iter().enumerate() {
        let line = format!("# host CA\n@cert-authority [127.0.0.1]:{} {ca_pub}\n", host.port());
        std::fs::write(&env.known_hosts, &line).unwrap();
        let valid = why.is_empty();
        // Oracle: OpenSSH accepts exactly the valid one.
        assert_eq!(ssh_ok(&oracle_args(host, &env.known_hosts, None, "yes")), valid, "{case}: OpenSSH disagrees");
        for mode in ["yes", "accept-new"] {
            std::fs::write(env.home.join(".ssh/config"), format!("Host *\n  StrictHostKeyChecking {mode}\n")).unwrap();
            let logins = host.sshd_log().matches("Accepted publickey").count();
            let run = env.run(&["--no-warm", &format!("b{i}"), "hello", "--json"]);
            eprintln!("S5 {case} ({mode}): exit {}: {}", run.code(), run.stderr().trim());
            let after = host.sshd_log().matches("Accepted publickey").count();
            if valid {
                assert_eq!(run.code(), 0, "{case} {mode}: {run}");
                assert_eq!(after, logins + 1, "{case} {mode}");
            } else {
                assert_eq!(run.code(), 13, "{case} {mode}: {run}");
                let err = run.stderr();
                assert!(err.contains(why) && err.contains("line 2"), "{case} {mode}: unclear refusal:\n{run}");
                assert_eq!(after, logins, "{case} {mode}: delegate authenticated");
            }
            assert_eq!(std::fs::read_to_string(&env.known_hosts).unwrap(), line, "{case} {mode}: known_hosts changed");
        }
    }
    // An expired certificate of a host whose own key is recorded: that key still vouches, as in ssh.
    let (_, expired, _) = &cases[1];
    std::fs::write(&env.known_hosts, format!("@cert-authority * {ca_pub}\n{}\n", expired.known_hosts_line())).unwrap();
    std::fs::write(env.home.join(".ssh/config"), "").unwrap();
    assert!(ssh_ok(&oracle_args(expired, &env.known_hosts, None, "yes")));
    env.run(&["b1", "again", "--json"]).ok();
}

#[test]
fn global_known_hosts_and_known_hosts2_are_read_like_ssh() {
    let host = FakeHost::start();
    let env = Env::new();
    env.config_append(&env.host_toml("h", &host));
    env.add_brother("oppy", "h", &host, "self-test", "read");
    let (_, other) = delegate_testkit::keygen(&env.home, "impostor", "ed25519");
    let global = env.home.join("ssh_known_hosts");
    std::fs::write(&global, format!("# global\n[127.0.0.1]:{} {other}\n", host.port())).unwrap();
    std::fs::write(
        env.home.join(".ssh/config"),
        format!("Host *\n  StrictHostKeyChecking accept-new\n  GlobalKnownHostsFile {}\n", global.display()),
    )
    .unwrap();
    // Oracle: under accept-new, OpenSSH refuses a key the global file contradicts.
    assert!(!ssh_ok(&oracle_args(&host, &env.known_hosts, Some(&global), "accept-new")));
    let run = env.run(&["oppy", "hello", "--json"]).fails_with(13);
    let err = run.stderr();
    assert!(err.contains("HOST KEY CHANGED") && err.contains(&format!("{}:2", global.display())), "{run}");
    assert_eq!(std::fs::read_to_string(&env.known_hosts).unwrap(), "", "learned despite the global entry");

    // The global file vouching for the right key is enough, and nothing is learned.
    std::fs::write(&global, format!("{}\n", host.known_hosts_line())).unwrap();
    assert!(ssh_ok(&oracle_args(&host, &env.known_hosts, Some(&global), "yes")));
    env.run(&["oppy", "hello", "--json"]).ok();
    assert_eq!(std::fs::read_to_string(&env.known_hosts).unwrap(), "", "a globally known key was learned");

    // ~/.ssh/known_hosts2 is read by default (the inventory names no known_hosts file here).
    let toml: String = env
        .host_toml("h2", &host)
        .lines()
        .filter(|l| !l.starts_with("known_hosts"))
        .map(|l| format!("{l}\n"))
        .collect();
    env.config_append(&toml);
    env.add_brother("second", "h2", &host, "self-test", "read");
    std::fs::write(env.home.join(".ssh/config"), "Host *\n  StrictHostKeyChecking yes\n  GlobalKnownHostsFile none\n")
        .unwrap();
    env.run(&["second", "hello"]).fails_with(12);
    std::fs::write(env.home.join(".ssh/known_hosts2"), format!("{}\n", host.known_hosts_line())).unwrap();
    env.run(&["second", "hello", "--json"]).ok();
}

#[test]
fn hash_known_hosts_makes_accept_new_write_a_hashed_name() {
    let host = FakeHost::start();
    let env = Env::new();
    env.config_append(&env.host_toml("h", &host));
    env.add_brother("oppy", "h", &host, "self-test", "read");
    std::fs::write(
        env.home.join(".ssh/config"),
        "Host *\n  StrictHostKeyChecking accept-new\n  HashKnownHosts yes\n  GlobalKnownHostsFile /dev/null\n",
    )
    .unwrap();
    env.run(&["oppy", "hello", "--json"]).ok();
    let text = std::fs::read_to_string(&env.known_hosts).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("|1|") && !text.contains("127.0.0.1"), "{text}");
    assert!(text.trim_end().ends_with(&host.host_public_key()), "{text}");
    let name = format!("[127.0.0.1]:{}", host.port());
    let (found, out) = ssh_keygen_find(&env.known_hosts, &name);
    assert!(found && out.contains(&host.host_public_key()), "ssh-keygen -F {name}: {out}");
    env.run(&["oppy", "again", "--json"]).ok();
    assert_eq!(std::fs::read_to_string(&env.known_hosts).unwrap(), text, "learned twice");
}

/// The warm daemon holds one connection across commands. A host key marked `@revoked`, or
/// replaced by another key, while it is held refuses the very next command through it, with
/// the error and exit code a fresh connection gets, without a new connection and without
/// anything running on the host; the daemon lets the connection go.
#[test]
fn a_key_revoked_or_changed_while_the_warm_daemon_holds_the_connection_refuses_the_next_command() {
    use crate::support::{connections, footprint};
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let trusted = format!("{}\n", host.known_hosts_line());
    let name = format!("[127.0.0.1]:{}", host.port());
    let (_, impostor) = delegate_testkit::keygen(&env.home, "impostor", "ed25519");
    let warm_connections = |env: &Env| env.run(&["warm", "status", "--json"]).ok().json()["connections"].clone();
    let cases = [
        ("revoked", format!("{trusted}@revoked {name} {}\n", host.host_public_key()), "is REVOKED"),
        ("changed", format!("{name} {impostor}\n"), "HOST KEY CHANGED"),
    ];
    for (case, edited, says) in cases {
        std::fs::write(&env.known_hosts, &trusted).unwrap();
        let first = env.run(&["oppy", "first\n@self-test sleep 30", "--json"]).ok().json();
        assert_eq!(first["runs"][0]["evidence"]["warm"], true, "{case}: {first}");
        env.run(&["sync"]).ok();
        assert_eq!(warm_connections(&env), 1, "{case}: the daemon holds the connection");
        let (before, connected) = (footprint(&host), connections(&host));

        std::fs::write(&env.known_hosts, &edited).unwrap();
        let run = env.run(&["oppy", "second", "--json"]).fails_with(13);
        assert!(run.stderr().contains(says), "{case}: {run}");
        assert_eq!(footprint(&host), before, "{case}: something ran on the host");
        assert_eq!(connections(&host), connected, "{case}: refused on the held connection, not a new one");
        assert_eq!(warm_connections(&env), 0, "{case}: the refused connection is still held");
        // A fresh connection decides the same.
        let direct = env.run(&["--no-warm", "oppy", "third", "--json"]).fails_with(13);
        assert!(direct.stderr().contains(says), "{case}: {direct}");
    }
}
