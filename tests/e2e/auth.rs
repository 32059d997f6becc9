//! Authentication: ssh-agent keys, identity files, and the encrypted-key case.

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
    let without = env.run(&["oppy", "hello"]).fails_with(11);
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
    let run = env.run(&["oppy", "hello"]).fails_with(11);
    assert!(run.stderr().contains("encrypted") && run.stderr().contains("ssh-add"), "{run}");
}
