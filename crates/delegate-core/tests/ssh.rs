//! The russh client against a real OpenSSH sshd: exec results, channel hygiene, socket options.

use std::time::Duration;

use delegate_core::transport::ssh::{Exit, Session, SshTarget};
use delegate_testkit::FakeHost;

mod common;
use common::target;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

#[test]
fn exec_returns_both_streams_and_the_exact_exit() {
    let host = FakeHost::start();
    block_on(async {
        let s = Session::connect(&target(&host)).await.unwrap();
        let out = s.exec("cat; echo err >&2; exit 7", b"in\x00put", Duration::from_secs(10)).await.unwrap();
        assert_eq!(out.stdout, b"in\x00put");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.exit, Exit::Code(7));
        assert!(out.broken.is_none());
        let killed = s.exec("kill -KILL $$", b"", Duration::from_secs(10)).await.unwrap();
        assert!(matches!(killed.exit, Exit::Signal(ref sig) if sig.contains("KILL")), "{killed:?}");
        s.close().await;
    });
}

/// sshd allows `MaxSessions` open channels per connection (64 on test hosts) and keeps a
/// session channel until its command exits, whatever CLOSE says. 70 commands abandoned at
/// their deadline exhaust the connection unless each one is ended (we send SIGKILL).
#[test]
fn abandoned_channels_are_closed_so_one_connection_keeps_working() {
    let host = FakeHost::start();
    block_on(async {
        let s = Session::connect(&target(&host)).await.unwrap();
        // More abandoned commands than the host's MaxSessions (64). Each limit is short next
        // to the command's 30 s but long enough to open a channel on a loaded machine (50 ms
        // was not, twice, with the suite running on 2 cores).
        for i in 0..70 {
            let out =
                s.exec("sleep 30", b"", Duration::from_millis(250)).await.unwrap_or_else(|e| panic!("exec {i}: {e}"));
            assert_eq!(out.exit, Exit::Unknown, "exec {i}");
            assert!(out.broken.as_deref().unwrap_or("").contains("no end"), "{out:?}");
        }
        let out = s.exec("true", b"", Duration::from_secs(10)).await.unwrap();
        assert_eq!(out.exit, Exit::Code(0));
        s.close().await;
    });
}

#[test]
fn a_wrong_known_hosts_file_refuses_before_authenticating() {
    let host = FakeHost::start();
    let mut t = target(&host);
    t.known_hosts = vec![host.dir().join("no-such-known-hosts")];
    let err = block_on(Session::connect(&t)).err().expect("unknown host must be refused");
    assert!(matches!(err, delegate_core::Error::HostKeyUnknown { .. }), "{err}");
    // No session was opened: the log shows no accepted key for our user.
    assert!(!host.sshd_log().contains("Accepted publickey"), "{}", host.sshd_log());
}

#[test]
fn the_pool_reuses_one_connection_and_replaces_a_dead_one_without_running_twice() {
    use delegate_core::transport::pool::Pool;
    let mut host = FakeHost::start();
    let t = target(&host);
    let log = host.remote_root().join("ran.log");
    let append = format!("echo ran >> '{}'", log.display());
    let limit = Duration::from_secs(10);
    let pool = Pool::new();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (out, first) = runtime.block_on(pool.exec(&t, &append, b"", limit)).unwrap();
    assert_eq!(out.exit, Exit::Code(0), "{out:?}");
    let (out, second) = runtime.block_on(pool.exec(&t, &append, b"", limit)).unwrap();
    assert_eq!(out.exit, Exit::Code(0), "{out:?}");
    assert!(first.fresh.is_some() && second.fresh.is_none(), "the second exec reuses the connection");
    assert_eq!(host.sshd_log().matches("Accepted publickey").count(), 1);

    // The server goes away under the held connection and comes back.
    host.kill_sshd();
    host.restart_sshd();
    let (out, third) = runtime.block_on(pool.exec(&t, &append, b"", limit)).unwrap();
    assert_eq!(out.exit, Exit::Code(0), "{out:?}");
    assert!(third.fresh.is_some(), "a dead connection is replaced, not used");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ran\nran\nran\n", "each command ran exactly once");
    runtime.block_on(pool.close_all());
}

/// `target` through a fault proxy, with short deadlines as the test plan asks.
fn proxied(host: &FakeHost, proxy: &delegate_testkit::FaultProxy) -> SshTarget {
    let mut t = target(host);
    t.hostname = "127.0.0.1".into();
    t.port = proxy.port();
    t.timeouts.connect = Duration::from_secs(2);
    t.timeouts.handshake = Duration::from_secs(10);
    // The host key, recorded under the proxy's port.
    let line = host.known_hosts_line().replace(&format!(":{}", host.port()), &format!(":{}", proxy.port()));
    let file = host.dir().join(format!("known_hosts_{}", proxy.port()));
    std::fs::write(&file, format!("{line}\n")).unwrap();
    t.known_hosts = vec![file];
    t
}

#[test]
fn connect_timeout_covers_the_banner_like_ssh() {
    let host = FakeHost::start();
    let proxy = delegate_testkit::FaultProxy::start(([127, 0, 0, 1], host.port()).into());
    proxy.set(delegate_testkit::Fault::NoBanner);
    let t = proxied(&host, &proxy);
    let started = std::time::Instant::now();
    let err = block_on(Session::connect(&t)).err().expect("a silent server is refused");
    let took = started.elapsed();
    assert!(err.to_string().contains("exchanging keys") && err.to_string().contains("2s"), "{err}");
    assert!(took < Duration::from_secs(4), "ConnectTimeout 2 s, not the 10 s handshake deadline: {took:?}");
}

#[test]
fn connection_attempts_retry_one_second_apart() {
    let mut t = target(&FakeHost::start());
    t.hostname = "127.0.0.1".into();
    t.port = delegate_testkit::closed_port();
    t.timeouts.connection_attempts = 3;
    let started = std::time::Instant::now();
    assert!(block_on(Session::connect(&t)).is_err());
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(4), "{took:?}");
    t.timeouts.address_family = delegate_core::hosts::ssh_config::AddressFamily::Inet6;
    let err = block_on(Session::connect(&t)).err().unwrap().to_string();
    assert!(err.contains("AddressFamily"), "127.0.0.1 has no IPv6 address: {err}");
}

#[test]
fn a_stalled_server_is_declared_dead_after_interval_times_count_plus_one() {
    let host = FakeHost::start();
    let proxy = delegate_testkit::FaultProxy::start(([127, 0, 0, 1], host.port()).into());
    let mut t = proxied(&host, &proxy);
    t.timeouts.keepalive_interval = Duration::from_secs(1);
    t.timeouts.keepalive_max = 2;
    block_on(async {
        let s = Session::connect(&t).await.unwrap();
        proxy.set(delegate_testkit::Fault::Stall);
        let started = std::time::Instant::now();
        while !s.is_closed() && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = started.elapsed();
        assert!(s.is_closed(), "still open after {took:?}");
        assert!(took >= Duration::from_millis(2500) && took < Duration::from_secs(5), "{took:?}");
    });
}

#[test]
fn server_alive_count_zero_drops_at_the_first_check() {
    let host = FakeHost::start();
    let proxy = delegate_testkit::FaultProxy::start(([127, 0, 0, 1], host.port()).into());
    let mut t = proxied(&host, &proxy);
    t.timeouts.keepalive_interval = Duration::from_secs(1);
    t.timeouts.keepalive_max = 0;
    block_on(async {
        let s = Session::connect(&t).await.unwrap();
        proxy.set(delegate_testkit::Fault::Stall);
        let started = std::time::Instant::now();
        while !s.is_closed() && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = started.elapsed();
        assert!(s.is_closed() && took < Duration::from_millis(2500), "{took:?}");
    });
}

#[test]
fn server_alive_interval_zero_sends_no_keepalives() {
    let host = FakeHost::start();
    let proxy = delegate_testkit::FaultProxy::start(([127, 0, 0, 1], host.port()).into());
    let mut t = proxied(&host, &proxy);
    t.timeouts.keepalive_interval = Duration::ZERO;
    block_on(async {
        let s = Session::connect(&t).await.unwrap();
        let before = proxy.bytes_client_to_server();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(proxy.bytes_client_to_server(), before, "an idle connection with keepalives off sends nothing");
        assert!(!s.is_closed());
        let out = s.exec("echo alive", b"", Duration::from_secs(5)).await.unwrap();
        assert_eq!(out.stdout, b"alive\n");
    });
}

/// Whether `pid` is still a live process (a zombie waiting to be reaped counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

#[test]
fn a_proxycommand_carries_the_connection_and_dies_with_it() {
    let host = FakeHost::start();
    let pidfile = host.dir().join("proxy.pid");
    let mut t = target(&host);
    // `exec` is prepended as ssh does, so the pid written is the proxy's own: a shell that
    // would outlive the connection (it sleeps after socat) unless it is killed.
    t.route = delegate_core::transport::ssh::route::Route::Command(format!(
        "sh -c 'echo $$ > {}; socat - TCP:127.0.0.1:{}; sleep 600'",
        pidfile.display(),
        host.port()
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let pid: u32 = runtime.block_on(async {
        let s = Session::connect(&t).await.unwrap();
        let out = s.exec("echo via proxy", b"", Duration::from_secs(10)).await.unwrap();
        assert_eq!((out.exit, out.stdout), (Exit::Code(0), b"via proxy\n".to_vec()));
        let pid = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        assert!(alive(pid), "the proxy runs while the connection does");
        s.close().await;
        pid
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while alive(pid) && std::time::Instant::now() < deadline {
        runtime.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
    }
    assert!(!alive(pid), "the proxy command outlived its connection");
}

#[test]
fn a_dead_proxycommand_explains_itself() {
    let mut t = target(&FakeHost::start());
    // ssh runs `exec COMMAND`: a compound command needs its own shell, as with ssh.
    t.route = delegate_core::transport::ssh::route::Route::Command(
        "sh -c 'echo cannot reach the bastion >&2; exit 5'".into(),
    );
    let err = block_on(Session::connect(&t)).err().expect("the proxy exits at once");
    assert!(matches!(err, delegate_core::Error::ProxyCommand { .. }), "{err}");
    assert!(err.to_string().contains("exited 5: cannot reach the bastion"), "{err}");
}

/// A pool's held connection is used again only while known_hosts, as it is at that moment,
/// vouches for the key the server presented when it was opened; otherwise the exec fails as
/// a fresh connect would (same error), the connection is let go and nothing runs.
#[test]
fn a_held_connection_checks_its_host_key_again_before_each_use() {
    use delegate_core::Error;
    use delegate_core::transport::pool::Pool;
    let host = FakeHost::start();
    let dir = host.dir().join("recheck");
    std::fs::create_dir_all(&dir).unwrap();
    let (user, global) = (dir.join("known_hosts"), dir.join("ssh_known_hosts"));
    let trusted = format!("{}\n", host.known_hosts_line());
    let name = format!("[127.0.0.1]:{}", host.port());
    let (_, impostor) = delegate_testkit::keygen(&dir, "impostor", "ed25519");
    let mut t = target(&host);
    t.known_hosts = vec![user.clone()];
    t.global_known_hosts = vec![global.clone()];
    let log = host.remote_root().join("recheck.log");
    let append = format!("echo ran >> '{}'", log.display());
    let ran = || std::fs::read_to_string(&log).unwrap_or_default().lines().count();
    let logins = || host.sshd_log().matches("Accepted publickey").count();
    let pool = Pool::new();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let exec = |t: &SshTarget| runtime.block_on(pool.exec(t, &append, b"", Duration::from_secs(10))).map_err(Box::new);

    // Each edit, made while the pool holds a trusted connection, and what the next exec gets.
    type Verdict = fn(&Error) -> bool;
    let refusals: [(&str, String, String, Verdict); 5] = [
        (
            "@revoked in the user file",
            format!("{trusted}@revoked {name} {}\n", host.host_public_key()),
            String::new(),
            |e| matches!(e, Error::HostKeyRevoked { .. }),
        ),
        ("@revoked in the global file", trusted.clone(), format!("@revoked * {}\n", host.host_public_key()), |e| {
            matches!(e, Error::HostKeyRevoked { .. })
        }),
        ("another key recorded", format!("{name} {impostor}\n"), String::new(), |e| {
            matches!(e, Error::HostKeyChanged { .. })
        }),
        ("another key in the global file", String::new(), format!("{name} {impostor}\n"), |e| {
            matches!(e, Error::HostKeyChanged { .. })
        }),
        ("entry removed, StrictHostKeyChecking yes", String::new(), String::new(), |e| {
            matches!(e, Error::HostKeyUnknown { .. })
        }),
    ];
    for (case, user_text, global_text, expected) in refusals {
        std::fs::write(&user, &trusted).unwrap();
        std::fs::write(&global, "").unwrap();
        exec(&t).unwrap_or_else(|e| panic!("{case}: the trusted exec: {e}"));
        let (out, conn) = exec(&t).unwrap();
        assert!(out.exit == Exit::Code(0) && conn.fresh.is_none(), "{case}: the second exec reuses the connection");
        let before = (ran(), logins());
        std::fs::write(&user, &user_text).unwrap();
        std::fs::write(&global, &global_text).unwrap();
        let err = exec(&t).err().unwrap_or_else(|| panic!("{case}: the held connection was used"));
        assert!(expected(&err), "{case}: {err}");
        // A fresh connect decides the same, before authenticating.
        let fresh = block_on(Session::connect(&t)).err().unwrap_or_else(|| panic!("{case}: fresh connect accepted"));
        assert_eq!(fresh.to_string(), err.to_string(), "{case}");
        assert_eq!((ran(), logins()), before, "{case}: something ran, or a login happened");
        assert_eq!(pool.live_connections(), 0, "{case}: the refused connection is still held");
    }

    // accept-new: a removed entry is learned again, as a fresh connect would, and the held
    // connection stays in use.
    std::fs::write(&user, &trusted).unwrap();
    std::fs::write(&global, "").unwrap();
    exec(&t).unwrap();
    std::fs::write(&user, "").unwrap();
    t.accept_new = true;
    let (out, conn) = exec(&t).unwrap();
    assert!(out.exit == Exit::Code(0) && conn.fresh.is_none(), "accept-new: {out:?}");
    assert_eq!(std::fs::read_to_string(&user).unwrap(), trusted, "accept-new learns the key again");
    runtime.block_on(pool.close_all());
}

/// The same for a host known through `@cert-authority`: revoking the CA refuses the held
/// connection's certificate.
#[test]
fn a_held_connection_refuses_a_certificate_whose_ca_was_revoked() {
    use delegate_core::transport::pool::Pool;
    let dir = std::env::temp_dir().join(format!("dlg-recheck-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, ca_pub) = delegate_testkit::keygen(&dir, "ca", "ed25519");
    let host = FakeHost::builder().host_certificate(&ca, "127.0.0.1", None).start();
    let user = dir.join("known_hosts");
    let authority = format!("@cert-authority [127.0.0.1]:{} {ca_pub}\n", host.port());
    std::fs::write(&user, &authority).unwrap();
    let mut t = target(&host);
    t.known_hosts = vec![user.clone()];
    let pool = Pool::new();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let exec = |t: &SshTarget| runtime.block_on(pool.exec(t, "true", b"", Duration::from_secs(10))).map_err(Box::new);
    exec(&t).unwrap();
    let (_, conn) = exec(&t).unwrap();
    assert!(conn.fresh.is_none());
    let starts = host.sshd_log().matches("Starting session").count();
    std::fs::write(&user, format!("{authority}@revoked * {ca_pub}\n")).unwrap();
    let err = exec(&t).expect_err("a certificate from a revoked CA");
    assert!(matches!(*err, delegate_core::Error::HostKeyRevoked { line: 2, .. }), "{err}");
    assert_eq!(host.sshd_log().matches("Starting session").count(), starts, "a command ran");
    let _ = std::fs::remove_dir_all(&dir);
}
