//! Authentication: ssh-agent keys, identity files, and the encrypted-key case; OpenSSH's key
//! order against a low `MaxAuthTries`, `.pub` stubs, and user certificates (testplan §1.7d),
//! each checked against `ssh -F <config> target true` and the sshd log.

use std::process::Command;

use delegate_testkit::FakeHost;

use crate::support::Env;

/// An ssh-agent on a private socket, killed on drop.
struct Agent {
    pid: u32,
    sock: std::path::PathBuf,
}

impl Agent {
    fn start(dir: &std::path::Path) -> Agent {
        let sock = dir.join("agent.sock");
        let out = Command::new("ssh-agent").arg("-a").arg(&sock).arg("-s").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let pid = text
            .split("SSH_AGENT_PID=")
            .nth(1)
            .and_then(|s| s.split(';').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("ssh-agent said: {text}"));
        Agent { pid, sock }
    }
    fn add(&self, key: &std::path::Path) {
        let st = Command::new("ssh-add").arg(key).env("SSH_AUTH_SOCK", &self.sock).output().unwrap();
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
    }
}

fn host_without_identity(env: &Env, host: &FakeHost, identity: &str) {
    let toml = env.host_toml("h", host);
    let toml: String = toml
        .lines()
        .map(|l| if l.starts_with("identity") { format!("identity = \"{identity}\"\n") } else { format!("{l}\n") })
        .collect();
    env.trust(host);
    env.config_append(&toml);
    env.add_brother("oppy", "h", host, "self-test", "read");
}

#[test]
fn keys_in_ssh_agent_are_used() {
    let host = FakeHost::start();
    let env = Env::new();
    // The configured identity file does not exist: only the agent holds the key.
    host_without_identity(&env, &host, "/nonexistent/id");
    let agent = Agent::start(&env.home);
    agent.add(host.client_key());
    let without = env.run(&["--no-warm", "oppy", "hello"]).fails_with(11);
    assert!(without.stderr().contains("/nonexistent/id (missing)"), "{without}");
    let with = env.run_with_env(&["oppy", "hello", "--json"], &[("SSH_AUTH_SOCK", agent.sock.to_str().unwrap())]).ok();
    assert_eq!(with.json()["status"], "launched");
}

#[test]
fn an_encrypted_key_without_an_agent_is_a_clear_error() {
    let host = FakeHost::start();
    let env = Env::new();
    // The authorized key, re-encrypted with a passphrase.
    let key = env.home.join("enc_key");
    std::fs::copy(host.client_key(), &key).unwrap();
    let st = Command::new("ssh-keygen").args(["-q", "-p", "-N", "secret", "-P", "", "-f"]).arg(&key).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    host_without_identity(&env, &host, key.to_str().unwrap());
    let run = env.run(&["--no-warm", "oppy", "hello"]).fails_with(11);
    assert!(run.stderr().contains("encrypted") && run.stderr().contains("ssh-add"), "{run}");
}

/// A key generated into `dir` (ed25519, no passphrase); returns its path.
fn new_key(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    delegate_testkit::keygen(dir, name, "ed25519").0
}

/// `SHA256:...` of a key file (private or public).
fn fingerprint(key: &std::path::Path) -> String {
    let out = Command::new("ssh-keygen").arg("-lf").arg(key).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).unwrap().to_string()
}

/// Host "h" reached as the ssh_config alias `target` with `lines` in its block (IdentityFile,
/// IdentityAgent, ...), and brother "oppy" on it. Returns the config path, for the oracle.
fn via_ssh_config(env: &Env, host: &FakeHost, lines: &str) -> std::path::PathBuf {
    let config = env.home.join(".ssh/config");
    std::fs::write(
        &config,
        format!(
            "Host target\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  UserKnownHostsFile {}\n  \
             GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n  \
             KexAlgorithms curve25519-sha256\n{lines}",
            host.port(),
            host.user(),
            env.known_hosts.display()
        ),
    )
    .unwrap();
    env.trust(host);
    env.config_append(&format!(
        "[hosts.h]\naddress = \"target\"\nremote_root = \"{}\"\nconnect_timeout = 5\n",
        host.remote_root().display()
    ));
    env.add_brother("oppy", "h", host, "self-test", "read");
    config
}

/// The oracle: `ssh -F config target true`, with the agent socket (if any) as IdentityAgent.
fn ssh_oracle(config: &std::path::Path) -> std::process::Output {
    Command::new("ssh").arg("-F").arg(config).args(["target", "true"]).env_remove("SSH_AUTH_SOCK").output().unwrap()
}

/// Logins with this key (`SHA256:...`) or certificate (`ID <id>`), from sshd's one line per login.
fn accepted(host: &FakeHost, what: &str) -> usize {
    host.sshd_log().lines().filter(|l| l.starts_with("Accepted publickey for") && l.contains(what)).count()
}

#[test]
fn agent_keys_of_the_identity_file_go_first_so_max_auth_tries_is_not_spent() {
    let host = FakeHost::builder().extra_config("MaxAuthTries 3").start();
    let env = Env::new();
    let agent = Agent::start(&env.home);
    // More unrelated keys than MaxAuthTries, added before the host's key.
    for i in 0..4 {
        agent.add(&new_key(&env.home, &format!("junk{i}")));
    }
    agent.add(host.client_key());
    let config = via_ssh_config(
        &env,
        &host,
        &format!("  IdentityFile {}\n  IdentityAgent {}\n", host.client_key().display(), agent.sock.display()),
    );
    let oracle = ssh_oracle(&config);
    assert!(oracle.status.success(), "ssh: {}", String::from_utf8_lossy(&oracle.stderr));
    let fp = fingerprint(host.client_key());
    let before = accepted(&host, &fp);
    let run = env.run(&["--no-warm", "oppy", "hello", "--json"]).ok();
    assert_eq!(run.json()["status"], "launched");
    assert_eq!(accepted(&host, &fp), before + 1, "{}", host.sshd_log());
}

#[test]
fn a_server_that_hangs_up_after_max_auth_tries_gets_an_auth_error_naming_the_fix() {
    let host = FakeHost::builder().extra_config("MaxAuthTries 3").start();
    let env = Env::new();
    let agent = Agent::start(&env.home);
    let junk: Vec<_> = (0..4).map(|i| new_key(&env.home, &format!("junk{i}"))).collect();
    for k in &junk {
        agent.add(k);
    }
    // The host's key is only on disk: ssh offers the agent's keys first and runs out of tries.
    let lines = format!("  IdentityFile {}\n  IdentityAgent {}\n", host.client_key().display(), agent.sock.display());
    let config = via_ssh_config(&env, &host, &lines);
    let oracle = ssh_oracle(&config);
    assert!(!oracle.status.success());
    assert!(String::from_utf8_lossy(&oracle.stderr).contains("Too many authentication failures"), "{oracle:?}");
    let run = env.run(&["--no-warm", "oppy", "hello"]).fails_with(11);
    let err = run.stderr();
    assert!(err.contains("MaxAuthTries") && err.contains("IdentitiesOnly yes"), "{run}");
    assert!(!err.contains("Channel send error") && !err.contains("Disconnected"), "{run}");
    for k in &junk[..3] {
        assert!(err.contains(&fingerprint(k)), "the keys tried are listed: {run}");
    }
    assert!(!err.contains("PRIVATE KEY"), "{run}");

    // The fix the message names works, for both.
    std::fs::write(&config, format!("{}  IdentitiesOnly yes\n", std::fs::read_to_string(&config).unwrap())).unwrap();
    let oracle = ssh_oracle(&config);
    assert!(oracle.status.success(), "ssh: {}", String::from_utf8_lossy(&oracle.stderr));
    env.run(&["--no-warm", "oppy", "hello", "--json"]).ok();
}

#[test]
fn a_public_key_stub_or_an_encrypted_key_names_the_agent_key_to_use() {
    let host = FakeHost::builder().extra_config("MaxAuthTries 2").start();
    let env = Env::new();
    let agent = Agent::start(&env.home);
    for i in 0..3 {
        agent.add(&new_key(&env.home, &format!("junk{i}")));
    }
    agent.add(host.client_key());
    let fp = fingerprint(host.client_key());

    // 1Password / Secretive layout: only the public key on disk.
    let stub = env.home.join(".ssh/signer.pub");
    std::fs::copy(host.client_key().with_extension("pub"), &stub).unwrap();
    let config = via_ssh_config(
        &env,
        &host,
        &format!("  IdentityFile ~/.ssh/signer.pub\n  IdentitiesOnly yes\n  IdentityAgent {}\n", agent.sock.display()),
    );
    // ssh expands ~ from the passwd entry, not $HOME: give the oracle the absolute path.
    let oracle_config = env.home.join("oracle_config");
    let text = std::fs::read_to_string(&config).unwrap().replace("~/.ssh/signer.pub", stub.to_str().unwrap());
    std::fs::write(&oracle_config, text).unwrap();
    let oracle = ssh_oracle(&oracle_config);
    assert!(oracle.status.success(), "ssh: {}", String::from_utf8_lossy(&oracle.stderr));
    let before = accepted(&host, &fp);
    env.run(&["--no-warm", "oppy", "stub", "--json"]).ok();
    assert_eq!(accepted(&host, &fp), before + 1, "{}", host.sshd_log());

    // An encrypted private key with no .pub beside it: its public part is read from the file's
    // unencrypted header, and the agent, which holds the key, signs. No passphrase asked.
    let enc = env.home.join(".ssh/encrypted");
    std::fs::copy(host.client_key(), &enc).unwrap();
    let st = Command::new("ssh-keygen").args(["-q", "-p", "-N", "secret", "-P", "", "-f"]).arg(&enc).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let lines =
        format!("  IdentityFile {}\n  IdentitiesOnly yes\n  IdentityAgent {}\n", enc.display(), agent.sock.display());
    let config = via_ssh_config_again(&env, &host, &lines);
    let oracle = ssh_oracle(&config);
    assert!(oracle.status.success(), "ssh: {}", String::from_utf8_lossy(&oracle.stderr));
    let before = accepted(&host, &fp);
    env.run(&["--no-warm", "oppy", "encrypted", "--json"]).ok();
    assert_eq!(accepted(&host, &fp), before + 1, "{}", host.sshd_log());
}

/// Rewrites only the ssh config of [`via_ssh_config`] (the inventory is already there).
fn via_ssh_config_again(env: &Env, host: &FakeHost, lines: &str) -> std::path::PathBuf {
    let config = env.home.join(".ssh/config");
    let text = std::fs::read_to_string(&config).unwrap();
    let head: String = text.lines().take(9).map(|l| format!("{l}\n")).collect();
    assert!(head.contains(&host.port().to_string()));
    std::fs::write(&config, format!("{head}{lines}")).unwrap();
    config
}

/// A user key signed by a CA sshd trusts (`TrustedUserCAKeys`), not in authorized_keys.
fn user_certificate(env: &Env, name: &str, id: &str, user: &str) -> std::path::PathBuf {
    let key = new_key(&env.home.join(".ssh"), name);
    let ca = env.home.join("user_ca");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&ca)
        .args(["-I", id, "-n", user])
        .arg(key.with_extension("pub"))
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    key
}

#[test]
fn user_certificates_beside_a_key_in_certificate_file_and_in_the_agent_are_used() {
    let scratch = std::env::temp_dir().join(format!("dlg-user-ca-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let (_, ca_pub) = delegate_testkit::keygen(&scratch, "user_ca", "ed25519");
    std::fs::write(scratch.join("trusted_ca"), format!("{ca_pub}\n")).unwrap();
    let host = FakeHost::builder()
        .extra_config(&format!("TrustedUserCAKeys {}", scratch.join("trusted_ca").display()))
        .start();
    let env = Env::new();
    std::fs::copy(scratch.join("user_ca"), env.home.join("user_ca")).unwrap();

    // 1. `<key>-cert.pub` beside the IdentityFile.
    let key = user_certificate(&env, "beside", "cert-beside", host.user());
    let config = via_ssh_config(&env, &host, &format!("  IdentityFile {}\n  IdentitiesOnly yes\n", key.display()));
    let oracle = ssh_oracle(&config);
    assert!(oracle.status.success(), "ssh: {}", String::from_utf8_lossy(&oracle.stderr));
    let line = "ID cert-beside (serial";
    let before = accepted(&host, line);
    env.run(&["--no-warm", "oppy", "beside", "--json"]).ok();
    assert_eq!(accepted(&host, line), before + 1, "{}", host.sshd_log());

    // 2. CertificateFile elsewhere.
    let key = user_certificate(&env, "named", "cert-named", host.user());
    let cert = env.home.join("elsewhere-cert.pub");
    std::fs::rename(env.home.join(".ssh/named-cert.pub"), &cert).unwrap();
    let lines =
        format!("  IdentityFile {}\n  CertificateFile {}\n  IdentitiesOnly yes\n", key.display(), cert.display());
    let config = via_ssh_config_again(&env, &host, &lines);
    let oracle = ssh_oracle(&config);
    assert!(oracle.status.success(), "ssh: {}", String::from_utf8_lossy(&oracle.stderr));
    let line = "ID cert-named (serial";
    let before = accepted(&host, line);
    env.run(&["--no-warm", "oppy", "named", "--json"]).ok();
    assert_eq!(accepted(&host, line), before + 1, "{}", host.sshd_log());

    // 3. In the agent only (ssh-add loads the certificate beside the key too).
    let key = user_certificate(&env, "agent", "cert-agent", host.user());
    let agent = Agent::start(&env.home);
    agent.add(&key);
    std::fs::remove_file(&key).unwrap();
    std::fs::remove_file(env.home.join(".ssh/agent-cert.pub")).unwrap();
    let lines = format!("  IdentityFile /nonexistent/id\n  IdentityAgent {}\n", agent.sock.display());
    let config = via_ssh_config_again(&env, &host, &lines);
    let oracle = ssh_oracle(&config);
    assert!(oracle.status.success(), "ssh: {}", String::from_utf8_lossy(&oracle.stderr));
    let line = "ID cert-agent (serial";
    let before = accepted(&host, line);
    env.run(&["--no-warm", "oppy", "agent", "--json"]).ok();
    assert_eq!(accepted(&host, line), before + 1, "{}", host.sshd_log());

    // A certificate for another user is refused (by sshd), and said so.
    let key = user_certificate(&env, "wrong", "cert-wrong", "somebody-else");
    let lines = format!("  IdentityFile {}\n  IdentitiesOnly yes\n", key.display());
    let config = via_ssh_config_again(&env, &host, &lines);
    assert!(!ssh_oracle(&config).status.success());
    let run = env.run(&["--no-warm", "oppy", "wrong"]).fails_with(11);
    assert!(run.stderr().contains("wrong-cert.pub"), "{run}");
    let _ = std::fs::remove_dir_all(&scratch);
}
