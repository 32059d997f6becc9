//! S9 (testplan §2.4): a prompt canary never reaches a log. sshd runs at LogLevel DEBUG3 (its
//! most verbose), delegate's stdout and stderr are kept for every run, and the launches go
//! through the fault proxy's error paths (F1, F3, F4, F5, F6) plus an unknown host key and a
//! clean launch. Afterwards the canary (and its base64 form at each alignment) may appear only
//! in the mailbox (by design), the remote `prompt` file and agent output: not in any delegate
//! output, not in the sshd log, not in any other file of the client home or the host.
//! delegate has no verbose or trace logging flag, so its stderr is the most it ever says.

use std::path::{Path, PathBuf};
use std::time::Duration;

use delegate_testkit::{FakeHost, Fault, FaultProxy};

use crate::support::{Env, base64_cores};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file under `dir`, recursively (symlinks not followed).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            files(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

#[test]
fn s9_the_prompt_canary_is_in_no_log_on_any_error_path() {
    let host = FakeHost::builder().log_level("DEBUG3").start();
    let proxy = FaultProxy::start(([127, 0, 0, 1], host.port()).into());
    let env = Env::new();
    // The cuts below are placed by counting the bytes of one launch on a fresh connection;
    // a resident shell starting beside it would add its own and move them.
    env.no_resident();
    std::fs::write(env.home.join(".ssh/config"), "Host *\n  ServerAliveInterval 1\n  ServerAliveCountMax 2\n").unwrap();
    env.trust(&host);
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().append(true).open(&env.known_hosts).unwrap();
        writeln!(f, "[127.0.0.1]:{} {}", proxy.port(), host.host_public_key()).unwrap();
    }
    env.config_append(&env.host_toml("direct", &host));
    let via_proxy = env
        .host_toml("proxied", &host)
        .replace(&format!("port = {}\n", host.port()), &format!("port = {}\n", proxy.port()))
        .replace("connect_timeout = 5\n", "connect_timeout = 3\n");
    env.config_append(&via_proxy);
    // A third name for the same host whose key is recorded nowhere (unknown host key).
    env.config_append(
        &env.host_toml("stranger", &host).replace("address = \"127.0.0.1\"\n", "address = \"localhost\"\n"),
    );
    env.add_brother("ok", "direct", &host, "claude", "read");
    env.add_brother("px", "proxied", &host, "claude", "read");
    env.add_brother("unk", "stranger", &host, "claude", "read");

    let canary: String =
        (0..32).map(|i| char::from(b'a' + ((std::process::id() as usize * 7 + i * 11) % 26) as u8)).collect();
    let canary = format!("CANARY{canary}");
    let prompt = format!("a task with a secret inside\nsecret: {canary}\nend\n");
    let mut needles: Vec<Vec<u8>> = vec![canary.clone().into_bytes()];
    needles.extend(base64_cores(canary.as_bytes()).into_iter().map(String::into_bytes));

    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut launch = |label: &str, brother: &str| {
        let run = env.run_with_stdin(&[brother, "-", "--json"], prompt.as_bytes());
        eprintln!("S9 {label}: exit {}", run.code());
        let mut out = run.out.stdout.clone();
        out.extend_from_slice(&run.out.stderr);
        outputs.push((label.to_string(), out));
        run
    };
    // How many bytes the server sends in a whole launch, to cut inside one.
    let before = proxy.bytes_server_to_client();
    launch("launch through the proxy", "px").ok();
    let total = (proxy.bytes_server_to_client() - before) as usize;
    // The error paths.
    for (label, fault) in [
        ("F5 no banner", Fault::NoBanner),
        ("F6 banner flood", Fault::BannerFlood { lines: 1000, gap: Duration::from_millis(1) }),
        ("F3 stall", Fault::Stall),
        ("F4 reset", Fault::Reset),
        ("F4 close", Fault::Close),
        ("F1 cut in key exchange", Fault::CutAfter { server_to_client: 100 }),
        ("F1 cut in authentication", Fault::CutAfter { server_to_client: total / 3 }),
        ("F2 cut in the launch reply", Fault::CutAfter { server_to_client: total - 200 }),
    ] {
        proxy.set(fault);
        let run = launch(label, "px");
        assert_ne!(run.code(), 0, "{label}: {run}");
    }
    proxy.set(Fault::Pass);
    let run = launch("S1 unknown host key", "unk");
    assert_eq!(run.code(), 12, "{run}");
    // A clean launch, so the canary really travels (and lands where it may).
    let run = launch("clean launch", "ok").ok();
    let id = run.json()["id"].as_i64().unwrap();
    let dir = crate::support::remote_dir(&env, id);
    let remote_prompt = dir.join("prompt"); // every task's `prompt` file is allowed to hold it
    assert!(contains(&std::fs::read(&remote_prompt).unwrap(), canary.as_bytes()), "the canary never travelled");
    env.run(&["sync"]);

    let mut leaks = Vec::new();
    for (label, out) in &outputs {
        for n in &needles {
            if contains(out, n) {
                leaks.push(format!("delegate output of {label}: {}", String::from_utf8_lossy(out)));
            }
        }
    }
    // Every file of the client home except the mailbox, and of the host except the prompt
    // file itself (the sshd log is one of them).
    let mut scanned = Vec::new();
    files(&env.home, &mut scanned);
    files(host.dir(), &mut scanned);
    let tasks = host.remote_root().join("tasks");
    let allowed = |p: &Path| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        (p.starts_with(&tasks) && name == "prompt") || (p.starts_with(&env.data) && name.starts_with("mailbox.db"))
    };
    for p in &scanned {
        if allowed(p) {
            continue;
        }
        let bytes = std::fs::read(p).unwrap_or_default();
        for n in &needles {
            if contains(&bytes, n) {
                leaks.push(format!("{} holds {}", p.display(), String::from_utf8_lossy(n)));
            }
        }
    }
    eprintln!("S9: {} runs' output and {} files scanned", outputs.len(), scanned.len());
    assert!(host.sshd_log().contains("debug3"), "sshd is not logging at DEBUG3");
    assert!(scanned.iter().any(|p| p.ends_with("sshd.log")), "the sshd log was not scanned");
    assert!(leaks.is_empty(), "the canary leaked:\n{}", leaks.join("\n"));
}
