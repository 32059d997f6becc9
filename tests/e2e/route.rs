//! ProxyJump, ProxyCommand and `transport = "ssh"` against real sshd hosts, with the real
//! `ssh` as the oracle (testplan 1.7d): for each ssh_config, `ssh -F cfg ALIAS true` and
//! delegate (a launch of a self-test task, waited for, through the warm daemon) must take
//! the same route, which each bastion's sshd log shows (DEBUG1 logs every `direct-tcpip`
//! open with its target).
//!
//! | test | checks |
//! |---|---|
//! | `one_and_two_hop_proxyjump_take_the_route_ssh_takes` | `ProxyJump b1` and `ProxyJump b1,b2`: each bastion forwards to the next host for ssh and for delegate; a hop's own HostName/Port/User/IdentityFile/known_hosts come from ssh_config |
//! | `proxycommand_ssh_w_and_socat_take_the_route_ssh_takes` | `ProxyCommand ssh -W %h:%p b1` goes through b1; `ProxyCommand socat - TCP:%h:%p` straight to the host |
//! | `proxyjump_none_for_one_host_goes_direct_and_attach_follows_the_same_route` | `ProxyJump none` in a host's block beats a later `Host tgt-*` jump for ssh and delegate; `attach --print` names the alias and the route, and `ssh -G` with its options resolves that route |
//! | `an_unknown_bastion_key_is_refused_naming_the_bastion` | exit 12, "bastion b1 (127.0.0.1:PORT): host key unknown", nothing forwarded; ssh refuses too |
//! | `a_bastion_key_revoked_or_changed_while_its_connection_is_held_refuses_the_next_command` | the bastion under a held connection is checked again: exit 13 naming the bastion, nothing forwarded or run |
//! | `a_failing_proxycommand_reports_its_exit_and_stderr` | "ProxyCommand `...` exited 3: <its stderr>", exit 10 |
//! | `transport_ssh_launches_and_syncs_through_the_system_ssh` | launch, wait (sync) and say through `ssh -T -o BatchMode=yes`; the host's log shows an OpenSSH client and no russh; an unknown host key is refused by ssh |

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use delegate_testkit::FakeHost;

use crate::support::{Env, launch, wait_done};

/// A bastion: forwarding allowed, and DEBUG1 so its log names each forwarding's target.
fn bastion() -> FakeHost {
    FakeHost::builder().allow_tcp_forwarding().log_level("DEBUG1").start()
}

/// How many `direct-tcpip` opens `bastion` got for `127.0.0.1:port`.
fn forwards(bastion: &FakeHost, port: u16) -> usize {
    let wanted = format!("target 127.0.0.1 port {port}");
    bastion.sshd_log().lines().filter(|l| l.contains("server_request_direct_tcpip") && l.ends_with(&wanted)).count()
}

/// Connections `host`'s sshd accepted.
fn connections(host: &FakeHost) -> usize {
    host.sshd_log().matches("Connection from ").count()
}

/// `Host NAME` block for a fake host reached under `name`, with its own key.
fn block(name: &str, host: &FakeHost, extra: &str) -> String {
    format!(
        "Host {name}\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  IdentitiesOnly yes\n{extra}",
        host.port(),
        host.user(),
        host.client_key().display()
    )
}

/// Writes the client's ssh_config (mode 0600, as ssh wants it) with every host's key in
/// the Env's known_hosts, which the config names for all hosts.
fn write_config(env: &Env, text: &str) -> std::path::PathBuf {
    let path = env.home.join(".ssh/config");
    let mut all = text.to_string();
    writeln!(all, "Host *\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes", env.known_hosts.display()).unwrap();
    std::fs::write(&path, all).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `[hosts.NAME]` reaching `host` under the ssh_config alias `alias`.
fn add_alias_host(env: &Env, name: &str, alias: &str, host: &FakeHost) {
    let toml = env.host_toml(name, host).replace("address = \"127.0.0.1\"", &format!("address = \"{alias}\""));
    env.config_append(&toml);
    env.add_brother(&format!("b-{name}"), name, host, "self-test", "read");
}

/// The oracle: the real ssh with the same config and the target's user, key and
/// known_hosts (the inventory's options).
fn ssh_true(env: &Env, cfg: &std::path::Path, alias: &str, target: &FakeHost) -> std::process::Output {
    Command::new("ssh")
        .arg("-F")
        .arg(cfg)
        .args(["-l", target.user()])
        .arg("-i")
        .arg(target.client_key())
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", env.known_hosts.display()))
        .args([alias, "true"])
        .env("HOME", &env.home)
        .output()
        .unwrap()
}

fn assert_ssh_ok(out: &std::process::Output, what: &str) {
    assert!(out.status.success(), "ssh {what} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A self-test task on `brother`, launched and waited for.
fn run_task(env: &Env, brother: &str) {
    let id = launch(env, &[brother, "hello through the route", "--json"]);
    let task = wait_done(env, id);
    assert_eq!(task["status"], "completed", "{task}");
}

#[test]
fn one_and_two_hop_proxyjump_take_the_route_ssh_takes() {
    let (b1, b2, target) = (bastion(), bastion(), FakeHost::start());
    let env = Env::new();
    for h in [&b1, &b2, &target] {
        env.trust(h);
    }
    let mut text = block("b1", &b1, "") + &block("b2", &b2, "");
    // The target's HostName and Port come from its own block; only the jump differs.
    text += &format!("Host tgt-1hop tgt-2hop\n  HostName 127.0.0.1\n  Port {}\n", target.port());
    text += "Host tgt-1hop\n  ProxyJump b1\nHost tgt-2hop\n  ProxyJump b1,b2\n";
    let cfg = write_config(&env, &text);
    add_alias_host(&env, "one", "tgt-1hop", &target);
    add_alias_host(&env, "two", "tgt-2hop", &target);
    let t = target.port();

    assert_ssh_ok(&ssh_true(&env, &cfg, "tgt-1hop", &target), "one hop");
    assert_eq!((forwards(&b1, t), forwards(&b2, t)), (1, 0), "ssh went through b1 only");
    run_task(&env, "b-one");
    let after_one = forwards(&b1, t);
    assert!(after_one >= 2, "delegate's connection did not come through b1:\n{}", b1.sshd_log());
    assert_eq!(forwards(&b2, t), 0, "one hop never touches b2");
    // The warm daemon made that connection, from the route in its request.
    let warm = env.run(&["warm", "status", "--json"]).ok().json();
    assert!(warm["requests_served"].as_u64().unwrap_or(0) >= 1 && warm["connections"] == 1, "{warm}");

    assert_ssh_ok(&ssh_true(&env, &cfg, "tgt-2hop", &target), "two hops");
    assert_eq!((forwards(&b1, b2.port()), forwards(&b2, t)), (1, 1), "ssh: b1 forwards to b2, b2 to the target");
    run_task(&env, "b-two");
    assert!(forwards(&b1, b2.port()) >= 2, "delegate did not reach b2 through b1:\n{}", b1.sshd_log());
    assert!(forwards(&b2, t) >= 2, "delegate did not reach the target through b2:\n{}", b2.sshd_log());
    assert_eq!(forwards(&b1, t), after_one, "two hops: b1 never connects to the target itself");
}

#[test]
fn proxycommand_ssh_w_and_socat_take_the_route_ssh_takes() {
    let (b1, target) = (bastion(), FakeHost::start());
    let env = Env::new();
    env.trust(&b1);
    env.trust(&target);
    let cfg_path = env.home.join(".ssh/config");
    let mut text = block("b1", &b1, "");
    text += &format!(
        "Host tgt-w tgt-socat\n  HostName 127.0.0.1\n  Port {}\n\
         Host tgt-w\n  ProxyCommand ssh -F {} -W %h:%p b1\n\
         Host tgt-socat\n  ProxyCommand socat - TCP:%h:%p\n",
        target.port(),
        cfg_path.display()
    );
    let cfg = write_config(&env, &text);
    add_alias_host(&env, "w", "tgt-w", &target);
    add_alias_host(&env, "socat", "tgt-socat", &target);
    let t = target.port();

    assert_ssh_ok(&ssh_true(&env, &cfg, "tgt-w", &target), "ssh -W");
    assert_eq!(forwards(&b1, t), 1);
    run_task(&env, "b-w");
    assert!(forwards(&b1, t) >= 2, "delegate's ProxyCommand did not go through b1:\n{}", b1.sshd_log());

    let (before_b1, before_target) = (forwards(&b1, t), connections(&target));
    assert_ssh_ok(&ssh_true(&env, &cfg, "tgt-socat", &target), "socat");
    run_task(&env, "b-socat");
    assert_eq!(forwards(&b1, t), before_b1, "socat goes straight to the target");
    assert!(connections(&target) >= before_target + 2, "{}", target.sshd_log());
    assert!(connections(&b1) <= 3, "b1: only the ssh -W connections:\n{}", b1.sshd_log());
}

#[test]
fn proxyjump_none_for_one_host_goes_direct_and_attach_follows_the_same_route() {
    let (b1, target) = (bastion(), FakeHost::start());
    let env = Env::new();
    env.trust(&b1);
    env.trust(&target);
    let mut text = block("b1", &b1, "");
    text += &format!("Host tgt-direct\n  ProxyJump none\nHost tgt-*\n  HostName 127.0.0.1\n  Port {}\n", target.port());
    text += "Host tgt-*\n  ProxyJump b1\n";
    let cfg = write_config(&env, &text);
    add_alias_host(&env, "direct", "tgt-direct", &target);
    add_alias_host(&env, "jumped", "tgt-jumped", &target);
    let t = target.port();

    assert_ssh_ok(&ssh_true(&env, &cfg, "tgt-direct", &target), "direct");
    run_task(&env, "b-direct");
    assert_eq!(forwards(&b1, t), 0, "ProxyJump none: nobody went through b1:\n{}", b1.sshd_log());
    run_task(&env, "b-jumped");
    let jumped = forwards(&b1, t);
    assert!(jumped >= 1, "tgt-jumped goes through b1");

    // attach: the alias and the route, given explicitly; ssh -G with the same options
    // resolves the route delegate took (the resolved HostName would have matched Host *
    // blocks of its own and gone through a bastion the alias switched off).
    let ids: Vec<i64> = env
        .run(&["list", "--json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    for (id, alias, want) in [(ids[0].min(ids[1]), "tgt-direct", None), (ids[0].max(ids[1]), "tgt-jumped", Some("b1"))]
    {
        let printed = env.run(&["attach", &id.to_string(), "--print"]).ok().stdout();
        let words: Vec<&str> = printed.split_whitespace().collect();
        let dash = words.iter().position(|w| *w == "--").unwrap();
        assert_eq!(words[dash + 1], alias, "{printed}");
        let out =
            Command::new("ssh").arg("-G").args(&words[2..dash]).arg(alias).env("HOME", &env.home).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let g = String::from_utf8_lossy(&out.stdout).into_owned();
        let jump = g.lines().find_map(|l| l.strip_prefix("proxyjump ")).map(str::to_string);
        let command = g.lines().find_map(|l| l.strip_prefix("proxycommand ")).map(str::to_string);
        match want {
            None => assert_eq!((jump, command), (None, None), "{printed}\n{g}"),
            Some(b) => {
                let jump = jump.unwrap_or_default();
                assert!(jump.contains(&format!("@{b}:{}", b1.port())), "{printed}\n{g}");
            }
        }
        assert!(g.contains(&format!("\nport {t}\n")), "{g}");
    }
}

#[test]
fn an_unknown_bastion_key_is_refused_naming_the_bastion() {
    let (b1, target) = (bastion(), FakeHost::start());
    let env = Env::new();
    env.trust(&target); // not b1
    let mut text = block("b1", &b1, "");
    text += &format!("Host tgt\n  HostName 127.0.0.1\n  Port {}\n  ProxyJump b1\n", target.port());
    let cfg = write_config(&env, &text);
    add_alias_host(&env, "h", "tgt", &target);
    let before = connections(&target);

    assert!(!ssh_true(&env, &cfg, "tgt", &target).status.success(), "ssh refuses too");
    let run = env.run(&["b-h", "never runs", "--json"]).fails_with(12);
    let err = run.stderr();
    assert!(err.contains(&format!("bastion b1 (127.0.0.1:{}): host key unknown", b1.port())), "{run}");
    assert!(err.contains("ssh b1"), "the advice names the bastion's ssh name:\n{run}");
    assert_eq!(forwards(&b1, target.port()), 0);
    assert_eq!(connections(&target), before, "nothing reached the target");
}

#[test]
fn a_failing_proxycommand_reports_its_exit_and_stderr() {
    let target = FakeHost::start();
    let env = Env::new();
    env.trust(&target);
    let text = "Host tgt\n  HostName 127.0.0.1\n  ProxyCommand sh -c 'echo no route to %h:%p >&2; exit 3'\n";
    write_config(&env, text);
    add_alias_host(&env, "h", "tgt", &target);
    let run = env.run(&["b-h", "never runs", "--json"]).fails_with(10);
    let want = format!(
        "ProxyCommand `sh -c 'echo no route to 127.0.0.1:{p} >&2; exit 3'` exited 3: no route to 127.0.0.1:{p}",
        p = target.port()
    );
    assert!(run.stderr().contains(&want), "{run}");
}

#[test]
fn transport_ssh_launches_and_syncs_through_the_system_ssh() {
    let target = FakeHost::builder().log_level("DEBUG1").start();
    let env = Env::new();
    env.trust(&target);
    // Through an alias, so the system ssh resolves HostName and Port from the config.
    let text = format!("Host tgt\n  HostName 127.0.0.1\n  Port {}\n", target.port());
    write_config(&env, &text);
    let toml = env
        .host_toml("h", &target)
        .replace("address = \"127.0.0.1\"", "address = \"tgt\"")
        .replace(&format!("port = {}\n", target.port()), "transport = \"ssh\"\n");
    env.config_append(&toml);
    env.add_brother("oppy", "h", &target, "self-test", "read");

    let id = launch(&env, &["oppy", "through the system ssh", "--json"]);
    let task = wait_done(&env, id);
    assert_eq!(task["status"], "completed", "{task}");
    env.run(&["sync"]).ok();
    let log = target.sshd_log();
    assert!(log.contains("remote software version OpenSSH"), "{log}");
    assert!(!log.to_lowercase().contains("remote software version russh"), "russh connected:\n{log}");
    assert!(!log.contains("through the system ssh"), "the prompt never reaches argv or the log");

    // Host keys are still checked: forget the key and ssh refuses, nothing ran.
    std::fs::write(&env.known_hosts, "").unwrap();
    let run = env.run(&["oppy", "never runs", "--json"]);
    assert_ne!(run.code(), 0, "{run}");
    assert!(run.stderr().contains("Host key verification failed"), "{run}");
}

/// A bastion's key is checked again too: marked `@revoked` (or replaced) while the warm
/// daemon holds a connection through it, the next command fails naming the bastion (exit
/// 13), nothing is forwarded to the target and nothing runs there.
#[test]
fn a_bastion_key_revoked_or_changed_while_its_connection_is_held_refuses_the_next_command() {
    use crate::support::footprint;
    let (b1, target) = (bastion(), FakeHost::start());
    let env = Env::new();
    let mut text = block("b1", &b1, "");
    text += &format!("Host tgt\n  HostName 127.0.0.1\n  Port {}\n  ProxyJump b1\n", target.port());
    write_config(&env, &text);
    add_alias_host(&env, "one", "tgt", &target);
    let trusted = format!("{}\n{}\n", b1.known_hosts_line(), target.known_hosts_line());
    let (_, impostor) = delegate_testkit::keygen(&env.home, "impostor", "ed25519");
    let b1_name = format!("[127.0.0.1]:{}", b1.port());
    let cases = [
        ("revoked", format!("{trusted}@revoked {b1_name} {}\n", b1.host_public_key()), "is REVOKED"),
        ("changed", format!("{b1_name} {impostor}\n{}\n", target.known_hosts_line()), "HOST KEY CHANGED"),
    ];
    for (case, edited, says) in cases {
        std::fs::write(&env.known_hosts, &trusted).unwrap();
        launch(&env, &["b-one", "first\n@self-test sleep 30", "--json"]);
        let warm = env.run(&["warm", "status", "--json"]).ok().json();
        assert_eq!(warm["connections"], 1, "{case}: the daemon holds the connection: {warm}");
        let (before, forwarded) = (footprint(&target), forwards(&b1, target.port()));

        std::fs::write(&env.known_hosts, &edited).unwrap();
        let run = env.run(&["b-one", "second", "--json"]).fails_with(13);
        let err = run.stderr();
        assert!(err.contains("bastion b1 (127.0.0.1:"), "{case}: {run}");
        assert!(err.contains(says), "{case}: {run}");
        assert_eq!(footprint(&target), before, "{case}: something ran on the target");
        assert_eq!(forwards(&b1, target.port()), forwarded, "{case}: the bastion forwarded again");
        let warm = env.run(&["warm", "status", "--json"]).ok().json();
        assert_eq!(warm["connections"], 0, "{case}: the refused connection is still held: {warm}");
    }
}
