//! Network faults between the lead and a real sshd, injected by the testkit's `FaultProxy`
//! (or by killing sshd itself). Every CLI run here must end well inside 30 s: a hang is a
//! failure. Timeouts are shortened through the inventory (`connect_timeout = 3`: connect,
//! handshake and auth) and `~/.ssh/config` (`ServerAliveInterval 1`, `ServerAliveCountMax 2`).
//!
//! | test | testplan | fault | expected |
//! |---|---|---|---|
//! | `f5_port_open_without_banner_fails_at_the_handshake_deadline` | F5 | `NoBanner` | exit 10 naming the key exchange; task `failed`; no tmux session |
//! | `f3_stall_before_connecting_is_an_error_not_a_hang` | F3 | `Stall` before connect | exit 10; task `failed`; no tmux session |
//! | `f3_stall_while_running_keeps_the_last_known_state_then_recovers` | F3 | `Stall` with a task running | `sync` exit 10, `status`/`show` warn and exit 0, task keeps `running`; `Pass` → sync works, task `completed`, one session |
//! | `f3_stall_of_an_open_connection_is_noticed_by_keepalives` | F3 | `Stall` under a running `wait` (pooled connection) | `wait` does not hang: it still ends, `completed`, once `Pass` is back |
//! | `f4_reset_at_connect_is_a_clear_error` | F4 | `Reset` | exit 10 or 15 naming the host; task `failed`; nothing ran |
//! | `f4_cut_during_launch_is_never_launched_and_reconciles_to_one_session` | F4/F2 | `CutAfter` at several points inside the launch's last reply | exit 10/14/15, task `failed` or `launch_unknown`, never `launched`; after `Pass` a sync resolves it: running/completed with exactly one session, or failed/lost with none |
//! | `f1_link_lost_inside_key_exchange_fails_without_remote_trace` | F1 | `CutAfter { 100 }` (inside the key exchange) | exit 10 or 15; task `failed`; no remote task directory |
//! | `f1_link_lost_during_authentication_is_not_an_auth_refusal` (ignored: bug) | F1/F4 | `CutAfter` at 1/2, 1/3, 1/4 of a launch's server bytes (auth, channel open) | exit 10 or 15, task `failed`; today: exit 11 "refused authentication" |
//! | `fanout_with_one_blackholed_host_launches_the_healthy_one` | F3/F4 | one host `Stall`ed, then `Reset`, one healthy | the healthy brother's task is `launched`; the bad one is `failed` with an error naming its host |
//! | `sshd_killed_then_restarted_sync_warns_then_recovers` | F4/F15-lite | sshd killed and restarted on the same port | sync exit 10 while down, tasks keep their state; after restart the next sync works and the task completes |
//! | `f16_rekey_during_a_multi_megabyte_prompt_delivers_it_byte_exact` | F16 | sshd `RekeyLimit 256K`, 6 MiB prompt | launched; several key exchanges in the sshd log; remote prompt and agent stdin byte-exact (SHA-256) |
//! | `f6_banner_flood_is_a_clear_error_never_a_hang` | F6 | `BannerFlood` of 10k lines, fast then slow | fast: exit 15 "invalid SSH version string" (russh reads at most 20 pre-banner lines); slow: exit 10 at the handshake deadline; child memory bounded |
//! | `f7_first_address_blackholed_times_out_per_address_then_uses_the_second` | F7 | a name resolving to `::1` (backlog-0 blackhole) then `127.0.0.1` (sshd), via a private `/etc/hosts` in a mount namespace (root only) | launched after the per-address connect timeout |
//! | `warm_daemon::a_silent_host_is_noticed_by_keepalives_then_the_daemon_reconnects_or_fails_fast` | F3 | `Stall` of the daemon's held connection, idle and just before a command | dropped by keepalives in about 3 s; `Pass` reconnects; a command meeting the stall exits 10 in under 10 s (never the 15 s key exchange default) |
//! | `warm_daemon::keepalives_off_send_nothing_on_the_held_connection_and_it_still_works` | - | `ServerAliveInterval` 1, then 0 | pings at 1; after the edit a new connection, silent while idle, reused |
//! | `warm_daemon::a_slow_host_works_through_the_daemon_with_a_short_connect_timeout` | - | `Delay(300 ms)`, `ConnectTimeout 2` | launched and completed over one kept connection |

use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use delegate_testkit::{FakeHost, Fault, FaultProxy};
use serde_json::Value;

use crate::support::{Env, Run};

/// Loose bound for any single CLI run here.
const BOUND: Duration = Duration::from_secs(30);

/// `~/.ssh/config` with fast keepalives (1 s × 2) for every host.
fn fast_keepalives(env: &Env) {
    std::fs::write(env.home.join(".ssh/config"), "Host *\n  ServerAliveInterval 1\n  ServerAliveCountMax 2\n").unwrap();
}

/// `[hosts.NAME]` reaching `host` through `proxy`: the port is the proxy's, and the host key
/// is trusted under `[127.0.0.1]:<proxy port>`, which is what the client looks up.
fn add_proxied_host(env: &Env, name: &str, host: &FakeHost, proxy: &FaultProxy) {
    env.config_append(
        &proxied_host_toml(env, name, host, proxy).replace("connect_timeout = 5\n", "connect_timeout = 3\n"),
    );
}

/// The `[hosts.NAME]` of [`add_proxied_host`] with the usual `connect_timeout = 5`, and the
/// proxy's host key line written.
fn proxied_host_toml(env: &Env, name: &str, host: &FakeHost, proxy: &FaultProxy) -> String {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().append(true).open(&env.known_hosts).unwrap();
    writeln!(f, "[127.0.0.1]:{} {}", proxy.port(), host.host_public_key()).unwrap();
    let toml =
        env.host_toml(name, host).replace(&format!("port = {}\n", host.port()), &format!("port = {}\n", proxy.port()));
    assert!(toml.contains(&format!("port = {}", proxy.port())), "{toml}");
    toml
}

/// One host "h" behind `proxy`, one self-test brother "oppy".
fn proxied(host: &FakeHost) -> (Env, FaultProxy) {
    let proxy = FaultProxy::start(([127, 0, 0, 1], host.port()).into());
    let env = Env::new();
    fast_keepalives(&env);
    add_proxied_host(&env, "h", host, &proxy);
    env.add_brother("oppy", "h", host, "self-test", "read");
    (env, proxy)
}

/// Runs the CLI and asserts it finished within [`BOUND`].
fn timed(env: &Env, args: &[&str]) -> Run {
    let started = Instant::now();
    let run = env.run(args);
    assert!(started.elapsed() < BOUND, "took {:?} (a hang?):\n{run}", started.elapsed());
    run
}

fn show(env: &Env, id: i64) -> Value {
    env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json()
}

/// Session names on the host's delegate tmux server (none when there is no server).
fn sessions(host: &FakeHost) -> Vec<String> {
    let out = host.tmux(&["list-sessions", "-F", "#{session_name}"]);
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// Task directories under the host's remote root.
fn remote_task_dirs(host: &FakeHost) -> Vec<String> {
    match std::fs::read_dir(host.remote_root().join("tasks")) {
        Ok(rd) => rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

fn status_of(v: &Value) -> &str {
    v["status"].as_str().unwrap_or_else(|| panic!("no status in {v}"))
}

#[test]
fn f5_port_open_without_banner_fails_at_the_handshake_deadline() {
    let host = FakeHost::start();
    let (env, proxy) = proxied(&host);
    proxy.set(Fault::NoBanner);
    let run = timed(&env, &["oppy", "hello", "--json"]).fails_with(10);
    assert!(proxy.connections() >= 1);
    let err = run.stderr();
    assert!(err.contains("h did not answer") && err.contains("exchanging keys"), "{run}");
    let task = run.json();
    assert_eq!(task["status"], "failed", "{run}");
    let shown = show(&env, task["id"].as_i64().unwrap());
    assert_eq!(shown["status"], "failed", "{shown}");
    assert!(shown["reason"].as_str().unwrap_or_default().contains("exchanging keys"), "{shown}");
    assert!(sessions(&host).is_empty(), "{}", host.diagnostics());
    assert!(!host.tmux(&["ls"]).status.success(), "a tmux server exists");
    assert!(remote_task_dirs(&host).is_empty());
    assert!(host.agent_records().is_empty());
}

#[test]
fn f3_stall_before_connecting_is_an_error_not_a_hang() {
    let host = FakeHost::start();
    let (env, proxy) = proxied(&host);
    proxy.set(Fault::Stall);
    let run = timed(&env, &["oppy", "hello", "--json"]).fails_with(10);
    assert!(run.stderr().contains("did not answer"), "{run}");
    assert_eq!(run.json()["status"], "failed", "{run}");
    assert!(sessions(&host).is_empty());
    assert!(remote_task_dirs(&host).is_empty());
}

#[test]
fn f3_stall_while_running_keeps_the_last_known_state_then_recovers() {
    let host = FakeHost::start();
    let (env, proxy) = proxied(&host);
    let task = timed(&env, &["oppy", "work a while\n@self-test sleep 6", "--json"]).ok().json();
    assert_eq!(task["status"], "launched", "{task}");
    let id = task["id"].as_i64().unwrap();
    let ids = id.to_string();
    // Let the runner report, so the last known state is `running`.
    timed(&env, &["sync"]).ok();
    assert_eq!(show(&env, id)["status"], "running");

    proxy.set(Fault::Stall);
    let sync = timed(&env, &["sync"]).fails_with(10);
    assert!(sync.stdout().contains("not synced") || sync.stderr().contains("h"), "{sync}");
    let status = timed(&env, &["status", "--json"]).ok();
    assert!(status.stderr().contains("warning: could not sync h"), "{status}");
    let shown = timed(&env, &["show", &ids, "--json"]).ok();
    assert!(shown.stderr().contains("warning"), "{shown}");
    assert_eq!(shown.json()["status"], "running", "the task must keep its last known state: {shown}");

    proxy.set(Fault::Pass);
    timed(&env, &["sync"]).ok();
    let run = timed(&env, &["wait", &ids, "--timeout", "25s", "--interval-ms", "200", "--json"]).ok();
    assert_eq!(run.json()["tasks"][0]["status"], "completed", "{run}");
    assert!(sessions(&host).len() <= 1, "{:?}", sessions(&host));
}

/// `delegate wait` spawned in the background (the Env runner blocks); `--no-warm` makes it
/// hold its own connection instead of the warm daemon's.
fn spawn_wait(env: &Env, id: i64, warm: bool) -> Child {
    let no_warm = if warm { None } else { Some("--no-warm") };
    Command::new(env!("CARGO_BIN_EXE_delegate"))
        .env_clear()
        .envs(env.envs())
        .current_dir(&env.home)
        .args(["wait", &id.to_string(), "--timeout", "25s", "--interval-ms", "200", "--json"])
        .args(no_warm)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn f3_stall_of_an_open_connection_is_noticed_by_keepalives() {
    stall_under_a_running_wait(false);
}

#[test]
fn f3_stall_of_the_warm_daemons_connection_is_noticed_too() {
    stall_under_a_running_wait(true);
}

fn stall_under_a_running_wait(warm: bool) {
    let host = FakeHost::start();
    let (env, proxy) = proxied(&host);
    let id = timed(&env, &["oppy", "work a while\n@self-test sleep 6", "--json"]).ok().json()["id"].as_i64().unwrap();
    let before = proxy.connections();
    let started = Instant::now();
    let child = spawn_wait(&env, id, warm);
    if warm {
        // The daemon's connection from the launch serves the wait's polls.
        thread::sleep(Duration::from_millis(800));
        assert_eq!(proxy.connections(), before, "the wait reused the daemon's connection");
    } else {
        // Wait until the `wait` has its connection (it syncs every 200 ms over it).
        let deadline = Instant::now() + Duration::from_secs(10);
        while proxy.connections() == before && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(proxy.connections() > before, "wait never connected");
        thread::sleep(Duration::from_millis(500));
    }
    proxy.set(Fault::Stall);
    // Keepalives (1 s × 2) must drop the dead connection; 4 s of blackhole is enough. A
    // `wait` stuck on the dead connection would hit the 30 s bound instead.
    thread::sleep(Duration::from_secs(4));
    proxy.set(Fault::Pass);
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < BOUND, "wait took {:?}", started.elapsed());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "wait:\n{stdout}\n{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["tasks"][0]["status"], "completed", "{v}");
}

#[test]
fn f4_reset_at_connect_is_a_clear_error() {
    let host = FakeHost::start();
    let (env, proxy) = proxied(&host);
    proxy.set(Fault::Reset);
    let run = timed(&env, &["oppy", "hello", "--json"]);
    assert!(matches!(run.code(), 10 | 15), "{run}");
    assert!(run.stderr().contains(" h ") || run.stderr().contains("h "), "{run}");
    assert_eq!(run.json()["status"], "failed", "{run}");
    assert!(sessions(&host).is_empty());
    assert!(remote_task_dirs(&host).is_empty());
    // The same with FIN.
    proxy.set(Fault::Close);
    let run = timed(&env, &["oppy", "hello", "--json"]);
    assert!(matches!(run.code(), 10 | 15), "{run}");
    assert_eq!(run.json()["status"], "failed", "{run}");
    assert!(sessions(&host).is_empty());
}

#[test]
fn f4_cut_during_launch_is_never_launched_and_reconciles_to_one_session() {
    let host = FakeHost::start();
    let (env, proxy) = proxied(&host);
    // One exec per script: the cuts are placed by the byte count of a whole launch, and a
    // resident shell started after the launch (and reused by the next one) moves them.
    env.no_resident();
    // A clean launch measures how many bytes the server sends in a whole launch.
    let before = proxy.bytes_server_to_client();
    let first = timed(&env, &["oppy", "measure\n@self-test sleep 1", "--json"]).ok().json();
    assert_eq!(first["status"], "launched");
    let total = (proxy.bytes_server_to_client() - before) as usize;
    assert!(total > 1000, "{total}");

    // Cuts inside the final reply (marker, exit status, close; the first one byte short).
    let cuts = [total - 1, total - 40, total - 200, total - 600];
    let mut ids = Vec::new();
    for cut in cuts {
        proxy.set(Fault::CutAfter { server_to_client: cut });
        let conns = proxy.connections();
        let run = timed(&env, &["oppy", &format!("cut at {cut}\n@self-test sleep 3"), "--json"]);
        assert_eq!(proxy.connections(), conns + 1, "one connection per launch: {run}");
        let task = run.json();
        let status = status_of(&task).to_string();
        eprintln!("cut {cut}/{total}: exit {} status {status}", run.code());
        match run.code() {
            14 => assert_eq!(status, "launch_unknown", "{run}"),
            10 | 15 => assert_eq!(status, "failed", "{run}"),
            // The cut may fall after everything delegate needed (the final close).
            0 => assert_eq!(status, "launched", "{run}"),
            _ => panic!("unexpected exit at cut {cut}:\n{run}"),
        }
        if run.code() != 0 {
            assert_ne!(status, "launched", "{run}");
        }
        ids.push((cut, task["id"].as_i64().unwrap(), task["session"].as_str().unwrap_or_default().to_string()));
    }

    proxy.set(Fault::Pass);
    timed(&env, &["sync"]).ok();
    let live = sessions(&host);
    for (cut, id, session) in &ids {
        let shown = show(&env, *id);
        let status = status_of(&shown);
        eprintln!("cut {cut}: after sync task {id} is {status}");
        let mine = live.iter().filter(|s| *s == session).count();
        assert!(mine <= 1, "cut {cut}: two sessions for task {id}: {live:?}");
        match status {
            // Its agent may have finished between the sync and the session listing (a loaded
            // machine): then the next sync must say so; a task left running is the bug.
            "running" | "launched" if mine == 0 => {
                timed(&env, &["sync"]).ok();
                let again = show(&env, *id);
                assert!(
                    matches!(status_of(&again), "completed" | "failed" | "lost"),
                    "cut {cut}: task {id} {status} without its session: {again}"
                );
            }
            "running" | "launched" => {}
            "completed" | "failed" | "lost" => {}
            _ => panic!("cut {cut}: task {id} not reconciled: {shown}"),
        }
        // A task whose session is live must not be failed or lost.
        if mine == 1 {
            assert!(matches!(status, "running" | "launched"), "cut {cut}: live session but {status}: {shown}");
        }
    }
    // Everything that started finishes.
    for (_, id, _) in &ids {
        let run = timed(&env, &["wait", &id.to_string(), "--timeout", "25s", "--interval-ms", "200", "--json"]);
        assert!(matches!(run.code(), 0 | 7), "{run}");
    }
}

#[test]
fn f1_link_lost_inside_key_exchange_fails_without_remote_trace() {
    let host = FakeHost::start();
    let (env, proxy) = proxied(&host);
    proxy.set(Fault::CutAfter { server_to_client: 100 });
    let run = timed(&env, &["oppy", "hello", "--json"]);
    assert!(matches!(run.code(), 10 | 15), "{run}");
    let task = run.json();
    assert_eq!(task["status"], "failed", "{run}");
    assert!(run.stderr().contains("h"), "{run}");
    assert!(remote_task_dirs(&host).is_empty(), "{}", host.diagnostics());
    assert!(sessions(&host).is_empty());
    // A sync does not resurrect it.
    proxy.set(Fault::Pass);
    timed(&env, &["sync"]);
    assert_eq!(show(&env, task["id"].as_i64().unwrap())["status"], "failed");
}

#[test]
fn fanout_with_one_blackholed_host_launches_the_healthy_one() {
    let (bad, good) = (FakeHost::start(), FakeHost::start());
    let proxy = FaultProxy::start(([127, 0, 0, 1], bad.port()).into());
    let env = Env::new();
    fast_keepalives(&env);
    add_proxied_host(&env, "hb", &bad, &proxy);
    env.add_host("hg", &good);
    env.add_brother("a", "hb", &bad, "self-test", "read");
    env.add_brother("b", "hg", &good, "self-test", "read");

    for fault in [Fault::Stall, Fault::Reset] {
        proxy.set(fault);
        let run = timed(&env, &["a,b", "hello", "--json"]);
        assert_ne!(run.code(), 0, "{fault:?}: {run}");
        let out = run.json();
        let tasks = out["tasks"].as_array().unwrap();
        let by = |b: &str| tasks.iter().find(|t| t["brother"] == b).cloned();
        let good_task = by("b").unwrap_or_else(|| panic!("{fault:?}: no task for b: {out}"));
        assert_eq!(good_task["status"], "launched", "{fault:?}: {out}");
        if let Some(t) = by("a") {
            assert_eq!(t["status"], "failed", "{fault:?}: {out}");
        }
        let err_text = out["errors"].to_string();
        assert!(err_text.contains("hb") || run.stderr().contains("hb"), "{fault:?}: the error must name hb: {run}");
        assert!(sessions(&bad).is_empty());
    }
    assert_eq!(remote_task_dirs(&good).len(), 2, "both healthy launches reached hg");
    assert!(remote_task_dirs(&bad).is_empty(), "nothing reached hb");
}

#[test]
fn sshd_killed_then_restarted_sync_warns_then_recovers() {
    let mut host = FakeHost::start();
    let env = Env::new();
    fast_keepalives(&env);
    env.trust(&host);
    env.config_append(&env.host_toml("h", &host).replace("connect_timeout = 5\n", "connect_timeout = 3\n"));
    env.add_brother("oppy", "h", &host, "self-test", "read");
    let id = timed(&env, &["oppy", "work a while\n@self-test sleep 6", "--json"]).ok().json()["id"].as_i64().unwrap();
    timed(&env, &["sync"]).ok();
    let before = status_of(&show(&env, id)).to_string();
    assert!(matches!(before.as_str(), "launched" | "running"), "{before}");

    host.kill_sshd();
    let sync = timed(&env, &["sync"]).fails_with(10);
    assert!(sync.stdout().contains("h:") && sync.stdout().contains("not synced"), "{sync}");
    let status = timed(&env, &["status", "--json"]).ok();
    assert!(status.stderr().contains("warning: could not sync h"), "{status}");
    assert_eq!(status_of(&show(&env, id)), before, "the task keeps its last known state");
    assert_eq!(sessions(&host).len(), 1, "the agent keeps running while sshd is down");

    host.restart_sshd();
    timed(&env, &["sync"]).ok();
    let run = timed(&env, &["wait", &id.to_string(), "--timeout", "25s", "--interval-ms", "200", "--json"]).ok();
    assert_eq!(run.json()["tasks"][0]["status"], "completed", "{run}");
}

#[test]
fn f1_link_lost_during_authentication_is_not_an_auth_refusal() {
    let host = FakeHost::start();
    let (env, proxy) = proxied(&host);
    // Every launch on a connection of its own (no warm daemon): a connection the daemon
    // held from an earlier launch would be cut mid-reply instead, when the proxy gets to it
    // only after the next launch went out on it (launch_unknown, another test's case).
    let before = proxy.bytes_server_to_client();
    timed(&env, &["--no-warm", "oppy", "measure", "--json"]).ok();
    let total = (proxy.bytes_server_to_client() - before) as usize;
    for cut in [total / 2, total / 3, total / 4] {
        proxy.set(Fault::CutAfter { server_to_client: cut });
        let run = timed(&env, &["--no-warm", "oppy", "hello", "--json"]);
        assert!(matches!(run.code(), 10 | 15), "cut {cut}/{total}:\n{run}");
        assert!(!run.stderr().contains("refused authentication"), "cut {cut}/{total}:\n{run}");
        assert_eq!(run.json()["status"], "failed", "{run}");
    }
}

/// The agent record of the task whose remote directory is `dir` (polled: the agent may
/// still be starting).
fn record_for(host: &FakeHost, dir: &std::path::Path) -> delegate_testkit::AgentRecord {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = host
            .agent_records()
            .into_iter()
            .find(|r| r.env.get("DELEGATE_TASK_DIR").is_some_and(|d| std::path::Path::new(d) == dir));
        if let Some(r) = found {
            return r;
        }
        assert!(Instant::now() < deadline, "no agent record for {}:\n{}", dir.display(), host.diagnostics());
        thread::sleep(Duration::from_millis(20));
    }
}

/// Key exchanges sshd logged (LogLevel DEBUG1 or more): the first one, plus one per rekey.
fn key_exchanges(host: &FakeHost) -> usize {
    host.sshd_log().matches("SSH2_MSG_NEWKEYS received").count()
}

#[test]
fn f16_rekey_during_a_multi_megabyte_prompt_delivers_it_byte_exact() {
    let host = FakeHost::builder().extra_config("RekeyLimit 256K").log_level("DEBUG1").start();
    let env = Env::with_brother(&host, "claude", "read");
    // 6 MiB of incompressible bytes: about 24 rekeys at 256 KiB.
    let mut x: u64 = 0x00f1_6f16;
    let prompt: Vec<u8> = (0..6 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    let file = env.home.join("big-prompt");
    std::fs::write(&file, &prompt).unwrap();
    let before = key_exchanges(&host);
    let run = timed(&env, &["oppy", "--prompt-file", file.to_str().unwrap(), "--json"]);
    let task = run.ok().json();
    assert_eq!(task["status"], "launched", "{task}");
    assert_eq!(task["prompt_sha256"], delegate_testkit::sha256_hex(&prompt));
    let id = task["id"].as_i64().unwrap();
    let rekeys = key_exchanges(&host) - before;
    eprintln!("F16: {} byte prompt, {rekeys} key exchanges on the launch's connection", prompt.len());
    assert!(rekeys >= 4, "sshd never rekeyed (RekeyLimit not in effect?); {rekeys} key exchanges");

    let wrapped = crate::support::agent_reads(&env, id, &prompt);
    let dir = crate::support::remote_dir(&env, id);
    let remote = std::fs::read(dir.join("prompt")).unwrap();
    assert!(remote == wrapped, "remote prompt differs: {} bytes, {} expected", remote.len(), wrapped.len());
    let rec = record_for(&host, &dir);
    assert_eq!(rec.stdin_bytes as usize, wrapped.len());
    assert_eq!(rec.stdin_sha256, delegate_testkit::sha256_hex(&wrapped), "the agent did not get the prompt");
}

/// Largest resident set of any child this test process has waited for, in KiB.
fn children_max_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) }, 0);
    u.ru_maxrss
}

#[test]
fn f6_banner_flood_is_a_clear_error_never_a_hang() {
    let host = FakeHost::start();
    let (env, proxy) = proxied(&host);

    // A fast flood: russh reads at most 20 lines before the version line (RFC 4253 allows
    // such lines), each at most 255 bytes, in a 256-byte buffer; then it gives up.
    proxy.set(Fault::BannerFlood { lines: 10_000, gap: Duration::from_millis(1) });
    let sent_before = proxy.bytes_server_to_client();
    let run = timed(&env, &["oppy", "hello", "--json"]);
    eprintln!("F6 fast flood: exit {}: {}", run.code(), run.stderr().trim());
    assert!(matches!(run.code(), 10 | 15), "{run}");
    assert!(run.stderr().contains("h ") && run.stderr().contains("exchanging keys"), "{run}");
    assert!(run.stderr().contains("version") || run.stderr().contains("did not answer"), "unclear error:\n{run}");
    assert_eq!(run.json()["status"], "failed", "{run}");
    let sent = proxy.bytes_server_to_client() - sent_before;
    eprintln!("F6 fast flood: the proxy had sent {sent} bytes of junk when delegate gave up");

    // A slow flood (one line every 400 ms, never 20 of them within the deadline): the
    // handshake deadline (3 s here) ends it.
    proxy.set(Fault::BannerFlood { lines: 10_000, gap: Duration::from_millis(400) });
    let run = timed(&env, &["oppy", "hello", "--json"]).fails_with(10);
    eprintln!("F6 slow flood: {}", run.stderr().trim());
    assert!(run.stderr().contains("h did not answer") && run.stderr().contains("exchanging keys"), "{run}");
    assert_eq!(run.json()["status"], "failed", "{run}");

    let rss = children_max_rss_kib();
    eprintln!("F6: largest child resident set {rss} KiB");
    assert!(rss < 512 * 1024, "a child grew to {rss} KiB");
    assert!(sessions(&host).is_empty());
    assert!(remote_task_dirs(&host).is_empty());
    assert!(host.agent_records().is_empty());
}

/// A TCP listener on `[::1]:port` with a backlog of 0 that never accepts, its one queue
/// slot taken: later SYNs are dropped, so a connect hangs until the client's own timeout.
struct Blackhole {
    fd: libc::c_int,
    _filler: std::net::TcpStream,
}

impl Blackhole {
    fn on_ipv6_loopback(port: u16) -> std::io::Result<Blackhole> {
        use std::net::{Ipv6Addr, SocketAddr, TcpStream};
        // SAFETY: plain socket calls on a descriptor we own; the address struct is zeroed
        // and then filled in full.
        let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        addr.sin6_port = port.to_be();
        addr.sin6_addr.s6_addr = Ipv6Addr::LOCALHOST.octets();
        let len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        let ok = unsafe {
            libc::bind(fd, (&addr as *const libc::sockaddr_in6).cast(), len) == 0 && libc::listen(fd, 0) == 0
        };
        if !ok {
            let e = std::io::Error::last_os_error();
            unsafe { libc::close(fd) };
            return Err(e);
        }
        let target = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
        let filler = TcpStream::connect_timeout(&target, Duration::from_secs(2));
        let filler = match filler {
            Ok(s) => s,
            Err(e) => {
                unsafe { libc::close(fd) };
                return Err(e);
            }
        };
        // The queue is full now: a second connect must hang.
        match TcpStream::connect_timeout(&target, Duration::from_millis(500)) {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(Blackhole { fd, _filler: filler }),
            other => {
                unsafe { libc::close(fd) };
                Err(std::io::Error::other(format!("the backlog-0 listener is no blackhole here: {other:?}")))
            }
        }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// Runs `command` in a private mount namespace where `/etc/hosts` is `hosts` (root only).
fn with_private_etc_hosts(command: &mut Command, hosts: &std::path::Path) {
    use std::os::unix::process::CommandExt as _;
    let src = std::ffi::CString::new(hosts.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: unshare and mount are async-signal-safe system calls; the strings were built
    // before the fork.
    unsafe {
        command.pre_exec(move || {
            let root = c"/";
            let target = c"/etc/hosts";
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                || libc::mount(src.as_ptr(), target.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn f7_first_address_blackholed_times_out_per_address_then_uses_the_second() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: F7 needs root for a private /etc/hosts (mount namespace)");
        return;
    }
    let host = FakeHost::start();
    let blackhole = match Blackhole::on_ipv6_loopback(host.port()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skipped: no blackhole on [::1]:{}: {e}", host.port());
            return;
        }
    };
    let env = Env::new();
    let name = "dlg-f7-twoaddr";
    let hosts = env.home.join("hosts");
    std::fs::write(&hosts, format!("::1 {name}\n127.0.0.1 {name}\n")).unwrap();
    // The resolver must give the blackholed address first, as it does with glibc's default
    // RFC 6724 order (::1 before 127.0.0.1).
    let mut getent = Command::new("getent");
    getent.args(["ahosts", name]);
    with_private_etc_hosts(&mut getent, &hosts);
    let order = match getent.output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        other => {
            eprintln!("skipped: cannot resolve {name} in a private mount namespace: {other:?}");
            return;
        }
    };
    let first = order.split_whitespace().next().unwrap_or_default();
    assert!(order.contains("127.0.0.1"), "{order}");
    if first != "::1" {
        eprintln!("skipped: the resolver orders {first} first here:\n{order}");
        return;
    }

    std::fs::write(&env.known_hosts, format!("[{name}]:{} {}\n", host.port(), host.host_public_key())).unwrap();
    let toml = env
        .host_toml("h", &host)
        .replace("address = \"127.0.0.1\"\n", &format!("address = \"{name}\"\n"))
        .replace("connect_timeout = 5\n", "connect_timeout = 2\n");
    assert!(toml.contains(name), "{toml}");
    env.config_append(&toml);
    env.add_brother("oppy", "h", &host, "self-test", "read");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_delegate"));
    cmd.env_clear().envs(env.envs()).current_dir(&env.home).args(["oppy", "hello over the second address", "--json"]);
    with_private_etc_hosts(&mut cmd, &hosts);
    let started = Instant::now();
    let out = cmd.output().unwrap();
    let took = started.elapsed();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("F7: exit {:?} after {took:?}\n{stderr}", out.status.code());
    assert!(took < BOUND, "took {took:?}: the blackholed address ate the kernel's SYN retries");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let task: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(task["status"], "launched", "{task}");
    // The evidence: TCP took the blackholed address's full 2 s timeout before the second
    // address answered (proof the first address really was tried first).
    let shown = show(&env, task["id"].as_i64().unwrap());
    let tcp_ms = shown["runs"][0]["evidence"]["timings"]["tcp_ms"].as_f64().unwrap_or(0.0);
    eprintln!("F7: tcp_ms {tcp_ms}");
    assert!(tcp_ms >= 1900.0, "the blackholed ::1 was not tried first (tcp {tcp_ms} ms): {shown}");
    drop(blackhole);
}

/// The warm daemon's connection under a silent or slow host (keepalive and timeout options,
/// with the daemon holding the connection between commands).
mod warm_daemon {
    use super::*;

    /// Keepalives 1 s × 2 (a silent host is dropped after about 3 s) and a `ConnectTimeout`
    /// of 2 s for the TCP connect and the banner.
    const KEEPALIVE_1X2: &str = "Host *\n  ServerAliveInterval 1\n  ServerAliveCountMax 2\n  ConnectTimeout 2\n";

    /// One host "h" behind a proxy, brother "oppy", with `ssh_config` as `~/.ssh/config` and
    /// no `connect_timeout` in the inventory: the key exchange and authentication keep their
    /// 15 s defaults, so a command stuck on a dead connection until such a deadline is told
    /// apart from one whose keepalives noticed it.
    fn proxied_by_ssh_config(host: &FakeHost, ssh_config: &str) -> (Env, FaultProxy) {
        let proxy = FaultProxy::start(([127, 0, 0, 1], host.port()).into());
        let env = Env::new();
        std::fs::write(env.home.join(".ssh/config"), ssh_config).unwrap();
        env.config_append(&proxied_host_toml(&env, "h", host, &proxy).replace("connect_timeout = 5\n", ""));
        env.add_brother("oppy", "h", host, "self-test", "read");
        (env, proxy)
    }

    /// Launches a task that keeps running, so that every `sync` has this host to ask (with
    /// no unfinished task a sync connects nowhere); the launch leaves the daemon holding the
    /// connection.
    fn hold_a_connection(env: &Env) {
        let task = timed(env, &["oppy", "keep the host busy\n@self-test sleep 60", "--json"]).ok().json();
        assert_eq!(task["runs"][0]["evidence"]["warm"], true, "{task}");
    }

    /// Connections the daemon holds right now (`warm status`; asks the daemon, not a host).
    fn held(env: &Env) -> u64 {
        let s = env.run(&["warm", "status", "--json"]).ok().json();
        s["connections"].as_u64().unwrap_or_else(|| panic!("no daemon: {s}"))
    }

    #[test]
    fn a_silent_host_is_noticed_by_keepalives_then_the_daemon_reconnects_or_fails_fast() {
        let host = FakeHost::start();
        let (env, proxy) = proxied_by_ssh_config(&host, KEEPALIVE_1X2);
        // One exec per script: what is counted below is the exec path's retry on a fresh
        // connection. Through the resident shell a request already written is never
        // repeated (its answer was lost, not refused), so there the stalled sync fails
        // without the retry.
        env.no_resident();
        hold_a_connection(&env);
        assert_eq!(held(&env), 1);

        // Silent while idle: the daemon's keepalives drop the connection with no command
        // asking, after about 1 s × (2 + 1).
        proxy.set(Fault::Stall);
        let stalled = Instant::now();
        let deadline = stalled + Duration::from_secs(8);
        while held(&env) != 0 {
            assert!(Instant::now() < deadline, "the daemon still holds the dead connection after 8 s");
            thread::sleep(Duration::from_millis(100));
        }
        eprintln!("dropped after {:?}", stalled.elapsed());
        assert!(stalled.elapsed() >= Duration::from_millis(1500), "dropped before any keepalive went unanswered");

        // Passing again: the next command reconnects (the dead connection is not reused).
        proxy.set(Fault::Pass);
        let before = proxy.connections();
        timed(&env, &["sync"]).ok();
        assert_eq!(proxy.connections(), before + 1, "a fresh connection");
        assert_eq!(held(&env), 1);

        // Silent just before a command: the command meets the held connection before a
        // keepalive went unanswered. It must not wait for the 15 s deadlines: keepalives drop
        // the connection (about 3 s), the retry on a fresh one hears no banner within
        // ConnectTimeout (2 s), and the host is reported unreachable.
        proxy.set(Fault::Stall);
        let started = Instant::now();
        let sync = timed(&env, &["sync"]).fails_with(10);
        let took = started.elapsed();
        eprintln!("stalled sync failed after {took:?}");
        assert!(took < Duration::from_secs(10), "took {took:?}:\n{sync}");
        assert!(sync.stdout().contains("not synced"), "{sync}");
        assert_eq!(proxy.connections(), before + 2, "one retry on a fresh connection");

        proxy.set(Fault::Pass);
        timed(&env, &["sync"]).ok();
        assert_eq!(held(&env), 1);
    }

    #[test]
    fn keepalives_off_send_nothing_on_the_held_connection_and_it_still_works() {
        let host = FakeHost::start();
        let (env, proxy) = proxied_by_ssh_config(&host, KEEPALIVE_1X2);
        let idle_bytes = |secs: f64| {
            let before = (proxy.bytes_client_to_server(), proxy.bytes_server_to_client());
            thread::sleep(Duration::from_secs_f64(secs));
            let after = (proxy.bytes_client_to_server(), proxy.bytes_server_to_client());
            (after.0 - before.0, after.1 - before.1)
        };
        hold_a_connection(&env);
        // The daemon's connection carries the command's keepalive settings: at 1 s, an idle
        // connection is pinged (and sshd answers).
        let (up, down) = idle_bytes(2.5);
        assert!(up > 0 && down > 0, "no keepalive in 2.5 s at ServerAliveInterval 1: {up} {down}");

        // ServerAliveInterval 0 now: the daemon outlives the edit, and must not keep using a
        // connection that pings (nor one with the old settings at all).
        std::fs::write(env.home.join(".ssh/config"), "Host *\n  ServerAliveInterval 0\n  ConnectTimeout 2\n").unwrap();
        let conns = proxy.connections();
        timed(&env, &["sync"]).ok();
        assert_eq!(proxy.connections(), conns + 1, "a connection with the new settings");
        thread::sleep(Duration::from_millis(300)); // the old one's goodbye
        let (up, down) = idle_bytes(2.5);
        assert_eq!((up, down), (0, 0), "bytes on idle connections with keepalives off");
        // And the quiet connection still works, reused.
        timed(&env, &["sync"]).ok();
        assert_eq!(proxy.connections(), conns + 1, "the quiet connection was reused");
        assert_eq!(held(&env), 1);
    }

    #[test]
    fn a_slow_host_works_through_the_daemon_with_a_short_connect_timeout() {
        let host = FakeHost::start();
        let (env, proxy) = proxied_by_ssh_config(&host, KEEPALIVE_1X2);
        // 300 ms each way: the banner comes well inside ConnectTimeout 2 s, but the key
        // exchange and authentication (several round trips) take longer than 2 s. They have
        // their own deadlines: ConnectTimeout must not cut them off. Keepalives (1 s) are
        // answered within a 600 ms round trip, so the connection is not dropped either.
        proxy.set(Fault::Delay(Duration::from_millis(300)));
        let started = Instant::now();
        let task = timed(&env, &["oppy", "slowly\n@self-test sleep 1", "--json"]).ok().json();
        eprintln!("launch over the slow link took {:?}", started.elapsed());
        assert_eq!(task["status"], "launched", "{task}");
        assert_eq!(task["runs"][0]["evidence"]["warm"], true, "{task}");
        let conns = proxy.connections();
        // Idle longer than the keepalive interval: pings, answered late, keep it alive.
        thread::sleep(Duration::from_secs(3));
        let id = task["id"].as_i64().unwrap().to_string();
        let run = timed(&env, &["wait", &id, "--timeout", "25s", "--interval-ms", "200", "--json"]).ok();
        assert_eq!(run.json()["tasks"][0]["status"], "completed", "{run}");
        assert_eq!(proxy.connections(), conns, "the slow connection was kept and reused");
    }
}
