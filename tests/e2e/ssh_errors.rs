//! Everything that can go wrong before the launch script reaches the brother: the host is
//! unreachable, refuses our key, or presents a key we do not know or that changed; the
//! ssh config asks for something delegate does not do; the address is hostile. Each has
//! its own exit code and a message that says what to do.

use std::path::Path;
use std::time::{Duration, Instant};

use delegate_testkit::{FakeHost, closed_port, keygen};

use crate::support::Env;

/// `[hosts.h]` for `host` with one `key = value` line replaced (the key must be present).
fn host_toml_with(env: &Env, host: &FakeHost, key: &str, value: &str) -> String {
    let toml = env.host_toml("h", host);
    let mut found = false;
    let out: Vec<String> = toml
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{key} = ")) {
                found = true;
                format!("{key} = {value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(found, "no {key} in {toml}");
    out.join("\n") + "\n"
}

fn brother_on(env: &Env, host: &FakeHost) {
    env.add_brother("oppy", "h", host, "self-test", "read");
}

/// The fingerprint ssh-keygen computes for the host's key.
fn real_fingerprint(host: &FakeHost) -> String {
    let out = std::process::Command::new("ssh-keygen").arg("-lf").arg(host.known_hosts_file()).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().split_whitespace().nth(1).unwrap().to_string()
}

#[test]
fn an_unreachable_host_is_exit_10_fast_and_recorded_failed() {
    let host = FakeHost::start();
    let env = Env::new();
    env.trust(&host);
    let port = closed_port();
    env.config_append(&host_toml_with(&env, &host, "port", &port.to_string()));
    brother_on(&env, &host);
    let started = Instant::now();
    let run = env.run(&["oppy", "nobody home", "--json"]).fails_with(10);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let addr = format!("127.0.0.1:{port}");
    assert!(run.stderr().contains("cannot reach h") && run.stderr().contains(&addr), "{run}");
    let task = run.json();
    assert_eq!(task["status"], "failed", "{run}");
    let show = env.run(&["show", &task["id"].to_string(), "--json"]).ok().json();
    assert_eq!(show["status"], "failed");
    assert!(show["reason"].as_str().unwrap().contains(&addr), "{show}");
}

#[test]
fn a_key_the_host_does_not_accept_is_exit_11_listing_the_key_tried() {
    let host = FakeHost::start();
    let env = Env::new();
    env.trust(&host);
    let (stranger, _) = keygen(&env.home, "stranger", "ed25519");
    env.config_append(&host_toml_with(&env, &host, "identity", &format!("\"{}\"", stranger.display())));
    brother_on(&env, &host);
    let run = env.run(&["oppy", "let me in", "--json"]).fails_with(11);
    let err = run.stderr();
    assert!(err.contains(&format!("refused authentication as {}", host.user())), "{run}");
    assert!(err.contains(&format!("tried: {}", stranger.display())), "{run}");
    assert_eq!(run.json()["status"], "failed", "{run}");
    assert!(host.agent_records().is_empty());
}

#[test]
fn an_unknown_host_key_is_exit_12_and_the_suggested_trust_command_works() {
    let host = FakeHost::start();
    let env = Env::new();
    // known_hosts holds something already, and must not be touched by a refused launch.
    let (_, other) = keygen(&env.home, "other-host", "ed25519");
    let before = format!("# hand-kept\nbuildbox.example.org {other}\n");
    std::fs::write(&env.known_hosts, &before).unwrap();
    env.config_append(&env.host_toml("h", &host));
    brother_on(&env, &host);

    let run = env.run(&["oppy", "who are you", "--json"]).fails_with(12);
    let err = run.stderr();
    let fp = real_fingerprint(&host);
    assert!(fp.starts_with("SHA256:"), "{fp}");
    let suggested = format!("delegate hosts trust h --fingerprint {fp}");
    assert!(err.contains(&suggested), "stderr lacks {suggested:?}:\n{run}");
    assert_eq!(std::fs::read_to_string(&env.known_hosts).unwrap(), before, "known_hosts changed");
    assert_eq!(run.json()["status"], "failed");

    // A wrong fingerprint trusts nothing.
    let wrong = env.run(&["hosts", "trust", "h", "--fingerprint", "SHA256:wrong"]).fails_with(13);
    assert!(wrong.stderr().contains("fingerprint mismatch") && wrong.stderr().contains(&fp), "{wrong}");
    assert_eq!(std::fs::read_to_string(&env.known_hosts).unwrap(), before, "known_hosts changed");

    // Exactly the command the error suggested, parsed from the message.
    let at = err.find("delegate hosts trust ").unwrap();
    let words: Vec<&str> = err[at..].split_whitespace().take(6).collect();
    assert_eq!(words[..5], ["delegate", "hosts", "trust", "h", "--fingerprint"], "{err}");
    let parsed_fp = words[5].trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '+' && c != '/');
    assert_eq!(parsed_fp, fp);
    let trusted = env.run(&["hosts", "trust", "h", "--fingerprint", parsed_fp]).ok();
    assert!(trusted.stdout().contains("trusted"), "{trusted}");
    let after = std::fs::read_to_string(&env.known_hosts).unwrap();
    let added = after.strip_prefix(&before).unwrap_or_else(|| panic!("old lines were rewritten:\n{after}"));
    assert_eq!(added.lines().count(), 1, "{after}");
    let mut f = added.split_whitespace();
    assert_eq!(f.next(), Some(format!("[127.0.0.1]:{}", host.port()).as_str()));
    assert_eq!(f.collect::<Vec<_>>().join(" "), host.host_public_key());

    // Trusting again adds nothing; the launch now goes through.
    env.run(&["hosts", "trust", "h", "--fingerprint", parsed_fp]).ok();
    assert_eq!(std::fs::read_to_string(&env.known_hosts).unwrap(), after);
    let task = env.run(&["oppy", "who are you", "--json"]).ok().json();
    assert_eq!(task["status"], "launched");
}

#[test]
fn a_changed_host_key_of_the_same_type_is_exit_13_naming_file_and_line() {
    let host = FakeHost::start();
    let env = Env::new();
    let (_, impostor) = keygen(&env.home, "impostor", "ed25519");
    let before = format!("# line one is a comment\n[127.0.0.1]:{} {impostor}\n", host.port());
    std::fs::write(&env.known_hosts, &before).unwrap();
    env.config_append(&env.host_toml("h", &host));
    brother_on(&env, &host);
    let run = env.run(&["oppy", "same host?", "--json"]).fails_with(13);
    let err = run.stderr();
    assert!(err.contains("HOST KEY CHANGED"), "{run}");
    assert!(err.contains(&format!("{}:2", env.known_hosts.display())), "file:line missing:\n{run}");
    assert!(err.contains(&real_fingerprint(&host)), "{run}");
    assert_eq!(std::fs::read_to_string(&env.known_hosts).unwrap(), before);
    assert_eq!(run.json()["status"], "failed");
    assert!(host.agent_records().is_empty());
    // `hosts trust` never replaces a recorded key, even given the right fingerprint.
    let trust = env.run(&["hosts", "trust", "h", "--fingerprint", &real_fingerprint(&host)]).fails_with(13);
    assert!(trust.stderr().contains("HOST KEY CHANGED"), "{trust}");
    assert_eq!(std::fs::read_to_string(&env.known_hosts).unwrap(), before);
}

#[test]
fn a_host_presenting_another_key_type_than_recorded_is_refused_as_changed() {
    let host = FakeHost::start(); // an ed25519 host key
    let env = Env::new();
    let (_, ecdsa) = keygen(&env.home, "old-ecdsa", "ecdsa");
    assert!(ecdsa.starts_with("ecdsa-sha2-"), "{ecdsa}");
    let before = format!("[127.0.0.1]:{} {ecdsa}\n", host.port());
    std::fs::write(&env.known_hosts, &before).unwrap();
    env.config_append(&env.host_toml("h", &host));
    brother_on(&env, &host);
    let run = env.run(&["oppy", "new key type", "--json"]).fails_with(13);
    assert!(run.stderr().contains("HOST KEY CHANGED"), "{run}");
    assert_eq!(std::fs::read_to_string(&env.known_hosts).unwrap(), before);
}

fn write_ssh_config(env: &Env, text: &str) {
    let path = env.home.join(".ssh/config");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

fn alias_host_toml(env: &Env, host: &FakeHost) -> String {
    format!(
        "[hosts.h]\naddress = \"myalias\"\nknown_hosts = \"{}\"\nremote_root = \"{}\"\n",
        env.known_hosts.display(),
        host.remote_root().display()
    )
}

fn ssh_config_for(host: &FakeHost, key: &Path, extra: &str) -> String {
    format!(
        "Host myalias\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n{extra}",
        host.port(),
        host.user(),
        key.display()
    )
}

#[test]
fn an_ssh_config_alias_supplies_hostname_port_user_and_key() {
    let host = FakeHost::start();
    let env = Env::new();
    env.trust(&host);
    write_ssh_config(&env, &ssh_config_for(&host, host.client_key(), ""));
    env.config_append(&alias_host_toml(&env, &host));
    brother_on(&env, &host);
    let task = env.run(&["oppy", "via alias", "--json"]).ok().json();
    assert_eq!(task["status"], "launched");
    let address = task["runs"][0]["address"].as_str().unwrap();
    assert_eq!(address, format!("{}@127.0.0.1:{}", host.user(), host.port()));
}

#[test]
fn a_bastion_that_does_not_forward_is_named_and_nothing_reaches_the_host() {
    let host = FakeHost::start();
    // A fake host's sshd has AllowTcpForwarding no: it authenticates us, then refuses.
    let bastion = FakeHost::start();
    let env = Env::new();
    env.trust(&host);
    env.trust(&bastion);
    let bastion_block = format!(
        "Host other\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  UserKnownHostsFile {}\n",
        bastion.port(),
        bastion.user(),
        bastion.client_key().display(),
        env.known_hosts.display()
    );
    write_ssh_config(&env, &(ssh_config_for(&host, host.client_key(), "  ProxyJump other\n") + &bastion_block));
    env.config_append(&alias_host_toml(&env, &host));
    brother_on(&env, &host);
    let run = env.run(&["oppy", "via a jump host", "--json"]).fails_with(10);
    let want = format!("bastion other (127.0.0.1:{}) could not connect to it", bastion.port());
    assert!(run.stderr().contains(&want), "{run}");
    assert!(bastion.sshd_log().contains("refused local port forward"), "{}", bastion.sshd_log());
    assert!(!host.sshd_log().contains("Accepted publickey"), "delegate connected anyway");
}

#[test]
fn option_like_or_shell_like_addresses_are_refused_before_anything_runs() {
    let pwned = std::env::temp_dir().join(format!("pwned-{}", std::process::id()));
    let _ = std::fs::remove_file(&pwned);
    let cases = [
        (format!("-oProxyCommand=touch {}", pwned.display()), "starts with '-'"),
        ("h;id".to_string(), "only letters, digits"),
        (format!("h$(touch {})", pwned.display()), "only letters, digits"),
    ];
    for (address, why) in cases {
        let env = Env::new();
        env.config_append(&format!(
            "[hosts.h]\naddress = \"{address}\"\nport = {}\n[brothers.oppy]\nhost = \"h\"\nworkdir = \"/w\"\nagent = \"self-test\"\n",
            closed_port()
        ));
        let run = env.run(&["oppy", "hello", "--json"]).fails_with(3);
        assert!(run.stderr().contains("hosts.h.address") && run.stderr().contains(why), "{run}");
        // `hosts list` reads the same file and refuses it the same way.
        env.run(&["hosts", "list"]).fails_with(3);
        // No task was recorded (the mailbox read with an empty inventory).
        assert_eq!(env.run(&["list", "--json", "--config", "/dev/null"]).ok().json(), serde_json::json!([]));
    }
    // The CLI refuses the same addresses when adding a host.
    let env = Env::new();
    let run =
        env.run(&["hosts", "add", "h", &format!("--address=-oProxyCommand=touch {}", pwned.display())]).fails_with(3);
    assert!(run.stderr().contains("starts with '-'"), "{run}");
    assert!(!env.config.exists() || !std::fs::read_to_string(&env.config).unwrap().contains("ProxyCommand"));
    std::thread::sleep(Duration::from_millis(100));
    assert!(!pwned.exists(), "{} was created: a hostile address ran", pwned.display());
}
