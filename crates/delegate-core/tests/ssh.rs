//! The russh client against a real OpenSSH sshd: exec results, channel hygiene, socket options.

use std::time::Duration;

use delegate_core::ssh::{Exit, Session, SshTarget, Timeouts};
use delegate_testkit::FakeHost;

fn target(host: &FakeHost) -> SshTarget {
    SshTarget {
        host: "h".into(),
        hostname: host.address().into(),
        port: host.port(),
        user: host.user().into(),
        identity_files: vec![host.client_key().to_path_buf()],
        agent_socket: None,
        identities_only: false,
        known_hosts: vec![host.known_hosts_file()],
        host_key_alias: None,
        accept_new: false,
        timeouts: Timeouts::default(),
    }
}

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
        for i in 0..70 {
            let out =
                s.exec("sleep 30", b"", Duration::from_millis(50)).await.unwrap_or_else(|e| panic!("exec {i}: {e}"));
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
