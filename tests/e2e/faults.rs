//! A connection that breaks after the launch script was sent must leave the task
//! `launch_unknown`, never `launched` and never `failed`: the agent may well be running.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use delegate_testkit::FakeHost;

use crate::support::Env;

/// A one-connection TCP relay to `upstream` that, once the client has sent more than
/// `cut_after` bytes, stops passing anything back to the client and then drops the link:
/// the brother receives the whole script, the lead never hears how it ended.
struct CutProxy {
    port: u16,
}

impl CutProxy {
    fn start(upstream: u16, cut_after: usize) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            let Ok((client, _)) = listener.accept() else {
                return;
            };
            let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
            let sent = Arc::new(AtomicUsize::new(0));
            let cut = Arc::new(AtomicBool::new(false));
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (sent2, cut2) = (sent.clone(), cut.clone());
            // client -> server, counting.
            let up = thread::spawn(move || {
                let (mut from, mut to) = (c2, s2);
                let mut buf = [0u8; 16384];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    if sent2.fetch_add(n, Ordering::SeqCst) + n > cut_after {
                        cut2.store(true, Ordering::SeqCst);
                    }
                }
            });
            // server -> client, until the cut.
            let (mut from, mut to) = (server.try_clone().unwrap(), client.try_clone().unwrap());
            let mut buf = [0u8; 16384];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || cut.load(Ordering::SeqCst) {
                    break;
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            // Give the brother time to run the script it already has, then drop everything.
            thread::sleep(Duration::from_millis(500));
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            let _ = up.join();
        });
        CutProxy { port }
    }
}

#[test]
fn a_link_lost_after_the_script_was_sent_is_launch_unknown() {
    let host = FakeHost::start();
    let env = Env::new();
    let proxy = CutProxy::start(host.port(), 300_000);
    // The host is known under the proxy's port too, since that is what the client dials.
    std::fs::write(&env.known_hosts, format!("[127.0.0.1]:{} {}\n", proxy.port, host.host_public_key())).unwrap();
    env.config_append(
        &env.host_toml("h", &host).replace(&format!("port = {}", host.port()), &format!("port = {}", proxy.port)),
    );
    env.add_brother("oppy", "h", &host, "self-test", "read");
    // A 400 kB prompt makes the script far longer than the cut-off point.
    let prompt = format!("long task\n@self-test sleep 20\n{}", "x".repeat(400_000));
    let run = env.run_with_stdin(&["oppy", "-", "--json"], prompt.as_bytes()).fails_with(14);
    let task = run.json();
    assert_eq!(task["status"], "launch_unknown", "{run}");
    assert!(run.stderr().contains("unknown"), "{run}");

    // And indeed the agent did start on the brother: calling it failed would have been a lie.
    let session = task["session"].as_str().unwrap();
    let mut found = false;
    for _ in 0..100 {
        if host.tmux(&["has-session", "-t", &format!("={session}")]).status.success() {
            found = true;
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(found, "the brother never started {session}: {}", host.diagnostics());

    // Reconcile: with the host reachable again (directly, not through the dead proxy), the
    // next look at the task reads the remote launch.json nonce and the live session and
    // resolves launch_unknown to running, without starting anything.
    let direct = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace(&format!("port = {}", proxy.port), &format!("port = {}", host.port()));
    std::fs::write(&env.config, direct).unwrap();
    std::fs::write(&env.known_hosts, format!("{}\n", host.known_hosts_line())).unwrap();
    let id = task["id"].as_i64().unwrap().to_string();
    let shown = env.run(&["show", &id, "--json"]).ok().json();
    assert_eq!(shown["status"], "running", "{shown}");
    let history: Vec<&str> = shown["history"].as_array().unwrap().iter().map(|h| h["to"].as_str().unwrap()).collect();
    assert_eq!(history, ["launching", "launch_unknown", "running"], "{shown}");
    let sessions = host.tmux(&["list-sessions", "-F", "#{session_name}"]);
    assert_eq!(String::from_utf8_lossy(&sessions.stdout).lines().count(), 1, "one agent, never two");
    env.run(&["cancel", &id]).ok();
}
