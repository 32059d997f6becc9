//! Host keys under concurrency and host certificates.
//!
//! | test | testplan | checks |
//! |---|---|---|
//! | `c7_concurrent_accept_new_of_different_hosts_keeps_every_line_whole` | C7 | 8 CLI processes held at the handshake by stalled proxies and released together, each learning a different host with `StrictHostKeyChecking accept-new` into one known_hosts: every line whole, each key once, `ssh-keygen -F` finds each, mode kept |
//! | `s5_a_host_vouched_for_by_a_certificate_authority_is_refused_clearly` | S5 | a host with a valid CA-signed certificate that OpenSSH accepts through `@cert-authority`: delegate refuses (exit 3) naming the line and saying certificates are unsupported, under `yes` and `accept-new`; known_hosts untouched, nothing ran |

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

#[test]
fn s5_a_host_vouched_for_by_a_certificate_authority_is_refused_clearly() {
    let env = Env::new();
    let (ca, ca_pub) = delegate_testkit::keygen(&env.home, "host_ca", "ed25519");
    let host = FakeHost::builder().host_certificate(&ca, "127.0.0.1", None).start();
    let line = format!("@cert-authority [127.0.0.1]:{} {ca_pub}\n", host.port());
    std::fs::write(&env.known_hosts, &line).unwrap();
    env.config_append(&env.host_toml("h", &host));
    env.add_brother("oppy", "h", &host, "self-test", "read");

    // Oracle: OpenSSH accepts this host through the CA line (the certificate is valid).
    let args: Vec<String> = host
        .ssh_args()
        .into_iter()
        .map(|a| {
            if a.starts_with("UserKnownHostsFile=") {
                format!("UserKnownHostsFile={}", env.known_hosts.display())
            } else {
                a
            }
        })
        .collect();
    let oracle = Command::new("ssh").args(&args).args(["--", "true"]).output().unwrap();
    assert!(oracle.status.success(), "OpenSSH refused the certificate: {}", String::from_utf8_lossy(&oracle.stderr));

    let logins = host.sshd_log().matches("Accepted publickey").count();
    for mode in ["yes", "accept-new"] {
        std::fs::write(env.home.join(".ssh/config"), format!("Host *\n  StrictHostKeyChecking {mode}\n")).unwrap();
        let run = env.run(&["oppy", "hello", "--json"]);
        eprintln!("S5 ({mode}): exit {}: {}", run.code(), run.stderr().trim());
        assert_eq!(run.code(), 3, "{mode}: {run}");
        let err = run.stderr();
        assert!(
            err.contains("@cert-authority")
                && err.contains("does not support host certificates")
                && err.contains("line 1"),
            "{mode}: unclear refusal:\n{run}"
        );
        assert_eq!(run.json()["status"], "failed", "{mode}: {run}");
        assert_eq!(std::fs::read_to_string(&env.known_hosts).unwrap(), line, "{mode}: known_hosts changed");
    }
    assert!(!host.tmux(&["ls"]).status.success(), "a tmux server exists");
    assert!(!host.remote_root().join("tasks").exists(), "{}", host.diagnostics());
    let after = host.sshd_log().matches("Accepted publickey").count();
    assert_eq!(after, logins, "delegate authenticated:\n{}", host.sshd_log());

    // Control: with the host's own key recorded, the same host is fine.
    std::fs::write(&env.known_hosts, format!("{}\n", host.known_hosts_line())).unwrap();
    std::fs::write(env.home.join(".ssh/config"), "").unwrap();
    env.run(&["oppy", "hello", "--json"]).ok();
}
