//! Tests of the testkit itself: real sshd, real OpenSSH client.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use delegate_testkit::{FakeHost, closed_port, keygen, sha256_hex, test_user};

/// Single-quote `s` for a POSIX shell.
fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Run `cmd` with `stdin` fed from a thread; 30 s deadline.
fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ssh");
    let mut pipe = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&data);
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("command timed out: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    writer.join().unwrap();
    child.wait_with_output().unwrap()
}

fn ssh_ok(host: &FakeHost, remote: &str, stdin: &[u8]) -> String {
    let out = run(host.ssh(remote), stdin);
    assert!(
        out.status.success(),
        "ssh {remote:?} failed: {}\nstdout: {}\nstderr: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        host.sshd_log()
    );
    String::from_utf8(out.stdout).unwrap()
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')).unwrap_or(true),
        Err(_) => false,
    }
}

fn wait_dead(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Plain OpenSSH client, our own known_hosts file, StrictHostKeyChecking=yes.
fn strict_ssh(host: &FakeHost, known_hosts: &Path, remote: &str) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args(["-F", "/dev/null", "-i"])
        .arg(host.client_key())
        .arg("-p")
        .arg(host.port().to_string())
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .arg(format!("{}@{}", host.user(), host.address()))
        .arg(remote);
    cmd
}

#[test]
fn ssh_with_strict_host_key_checking_sees_setenv_path_and_tmux_tmpdir() {
    let t0 = Instant::now();
    let host = FakeHost::start();
    eprintln!("host start took {:?}", t0.elapsed());

    assert_eq!(host.address(), "127.0.0.1");
    assert_eq!(host.user(), test_user());
    assert!(host.remote_root().is_dir());
    assert!(host.workdir().is_dir());
    let mode = std::fs::metadata(host.client_key()).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
    assert!(host.host_public_key().starts_with("ssh-ed25519 AAAA"));
    assert_eq!(host.known_hosts_line(), format!("[127.0.0.1]:{} {}", host.port(), host.host_public_key()));
    assert!(host.tmux_socket().as_os_str().len() < 100);

    let scratch = host.dir().join("client");
    let kh = scratch.join("kh-test");
    std::fs::write(&kh, format!("{}\n", host.known_hosts_line())).unwrap();
    let out = run(strict_ssh(&host, &kh, "true"), b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = run(
        strict_ssh(
            &host,
            &kh,
            r#"printf '%s\n' "$PATH" "$TMUX_TMPDIR" "$(whoami)" "$HOME" "$(command -v claude)" "$(command -v codex)"; pwd"#,
        ),
        b"",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    let bin = host.dir().join("bin");
    assert_eq!(lines[0], host.remote_path());
    assert!(lines[0].starts_with(&format!("{}:", bin.display())), "{}", lines[0]);
    assert_eq!(lines[1], host.tmux_tmpdir().to_str().unwrap());
    assert_eq!(lines[2], host.user());
    assert_eq!(lines[3], host.home().to_str().unwrap());
    assert_eq!(lines[4], bin.join("claude").to_str().unwrap());
    assert_eq!(lines[5], bin.join("codex").to_str().unwrap());

    // A wrong host key is refused under StrictHostKeyChecking=yes.
    let (_, other) = keygen(&scratch, "other", "ed25519");
    let bad = scratch.join("kh-bad");
    std::fs::write(&bad, format!("[127.0.0.1]:{} {other}\n", host.port())).unwrap();
    let out = run(strict_ssh(&host, &bad, "true"), b"");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tmux_session_started_over_ssh_is_visible_and_drop_kills_everything() {
    let host = FakeHost::start();
    ssh_ok(&host, "tmux -L delegate new-session -d -s x 'sleep 300'", b"");
    let has = host.tmux(&["has-session", "-t", "=x"]);
    assert!(has.status.success(), "{}", String::from_utf8_lossy(&has.stderr));
    assert!(!host.tmux(&["has-session", "-t", "=nope"]).status.success());
    assert!(host.tmux_socket().exists(), "{}", host.tmux_socket().display());

    let server = host.tmux(&["display-message", "-p", "#{pid}"]);
    let server_pid: u32 = String::from_utf8_lossy(&server.stdout).trim().parse().unwrap();
    let panes = host.tmux(&["list-panes", "-a", "-F", "#{pane_pid}"]);
    let pane_pid: u32 = String::from_utf8_lossy(&panes.stdout).trim().parse().unwrap();
    assert!(alive(server_pid) && alive(pane_pid));

    // A process escaping both tmux and the SSH session (double fork, new
    // session) is still found via the host's TMUX_TMPDIR in its environment.
    host.set_agent_mode("sleep:300");
    ssh_ok(&host, "cd ~; setsid claude -p detached </dev/null >/dev/null 2>&1 &", b"");
    let records = host.wait_for_agent_records(1, Duration::from_secs(5));
    let detached = records[0].pid;
    assert!(alive(detached));

    let dir = host.dir().to_path_buf();
    drop(host);
    assert!(wait_dead(server_pid), "tmux server {server_pid} survived");
    assert!(wait_dead(pane_pid), "pane {pane_pid} survived");
    assert!(wait_dead(detached), "detached agent {detached} survived");
    assert!(!dir.exists(), "{} not removed", dir.display());
}

#[test]
fn fake_claude_records_exact_argv_env_cwd_and_stdin() {
    let host = FakeHost::start();
    let weird = "it's a \"quoted\" arg with  spaces\tand $dollar \\ back";
    let stdin: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let work = host.workdir();
    let remote = format!(
        "cd {} && DELEGATE_TASK_ID=t-1 DELEGATE_EMPTY= claude -p --session-id sess-1 {} '' $'\\xff\\x01'",
        sq(work.to_str().unwrap()),
        sq(weird)
    );
    let stdout = ssh_ok(&host, &remote, &stdin);

    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0]["type"], "system");
    assert_eq!(lines[0]["subtype"], "init");
    assert_eq!(lines[0]["session_id"], "sess-1");
    assert_eq!(lines[0]["claude_code_version"], "2.1.329");
    assert_eq!(lines[1]["type"], "assistant");
    assert_eq!(lines[2]["type"], "result");
    assert_eq!(lines[2]["subtype"], "success");
    assert_eq!(lines[2]["is_error"], false);
    assert_eq!(lines[2]["session_id"], "sess-1");

    let records = host.agent_records();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.name, "claude");
    let expected: Vec<Vec<u8>> = vec![
        b"-p".to_vec(),
        b"--session-id".to_vec(),
        b"sess-1".to_vec(),
        weird.as_bytes().to_vec(),
        Vec::new(),
        vec![0xff, 0x01],
    ];
    assert_eq!(r.argv, expected);
    assert_eq!(r.arg_value("--session-id").as_deref(), Some("sess-1"));
    assert_eq!(r.cwd, work);
    assert_eq!(r.stdin_bytes, stdin.len() as u64);
    assert_eq!(r.stdin_sha256, sha256_hex(&stdin));
    assert!(!r.stdin_is_tty);
    assert_eq!(r.env["DELEGATE_TASK_ID"], "t-1");
    assert_eq!(r.env["DELEGATE_EMPTY"], "");
    assert_eq!(r.env["PATH"], host.remote_path());
    assert_eq!(r.env["HOME"], host.home().to_str().unwrap());
    assert_eq!(r.mode, "ok");
    assert!(r.pid > 1);

    // --version: printed, not recorded.
    let v = ssh_ok(&host, "claude --version; codex --version", b"");
    assert_eq!(v, "2.1.329 (Claude Code)\ncodex-cli 0.169.0\n");

    // codex persona, empty stdin.
    let out = ssh_ok(&host, "codex exec --json - </dev/null", b"");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["thread.started", "turn.started", "item.completed", "turn.completed"]);
    assert!(lines[0]["thread_id"].as_str().unwrap().len() >= 32);
    assert_eq!(lines[2]["item"]["type"], "agent_message");
    let records = host.agent_records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].name, "codex");
    assert_eq!(records[1].stdin_bytes, 0);
    assert_eq!(records[1].stdin_sha256, sha256_hex(b""));
}

#[test]
fn agent_modes_fail_and_sleep() {
    let host = FakeHost::start();
    host.set_agent_mode("fail:3");
    let out = run(host.ssh("claude -p x"), b"");
    assert_eq!(out.status.code(), Some(3));
    let records = host.agent_records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].mode, "fail:3");

    // sleep: the record exists while the agent still runs (in a tmux pane).
    host.set_agent_mode("sleep:0.3");
    ssh_ok(&host, "tmux -L delegate new-session -d -s s 'claude -p slow </dev/null > out.txt'", b"");
    let records = host.wait_for_agent_records(2, Duration::from_secs(5));
    assert!(alive(records[1].pid));
    assert_eq!(records[1].mode, "sleep:0.3");
    assert!(wait_dead(records[1].pid));
    let home_out = ssh_ok(&host, "cat out.txt; rm -f out.txt", b"");
    assert!(home_out.contains("\"type\":\"result\""), "{home_out}");

    host.set_agent_mode("ok");
    assert!(run(host.ssh("claude -p y"), b"").status.success());
    assert_eq!(host.agent_records().len(), 3);

    // In a tmux pane without redirection stdin is a terminal: recorded, not read.
    ssh_ok(&host, "tmux -L delegate new-session -d -s t 'claude -p tty'", b"");
    let records = host.wait_for_agent_records(4, Duration::from_secs(5));
    assert!(records[3].stdin_is_tty);
    assert_eq!(records[3].stdin_bytes, 0);
    assert!(records[3].env.contains_key("TERM"));
}

#[test]
fn path_without_hides_tools_but_keeps_the_rest() {
    let host = FakeHost::builder().path_without(&["tmux", "bwrap"]).start();
    let out = ssh_ok(
        &host,
        "command -v tmux; echo tmux=$?; command -v bwrap; echo bwrap=$?; \
         command -v bash base64 sha256sum ssh >/dev/null; echo rest=$?; /usr/bin/tmux -V >/dev/null; echo abs=$?",
        b"",
    );
    assert_eq!(out, "tmux=1\nbwrap=1\nrest=0\nabs=0\n");
    // The fake agents still work.
    ssh_ok(&host, "printf abc | claude -p z", b"");
    let r = host.wait_for_agent_records(1, Duration::from_secs(5));
    assert_eq!(r[0].stdin_sha256, sha256_hex(b"abc"));
}

#[test]
fn without_fake_agents_has_no_claude_or_codex() {
    let host = FakeHost::builder().without_fake_agents().start();
    let out = ssh_ok(&host, "command -v claude; echo c=$?; command -v codex; echo x=$?", b"");
    assert_eq!(out, "c=1\nx=1\n");
}

#[test]
fn other_host_key_types_work_with_strict_checking() {
    for (ty, prefix) in [("ecdsa", "ecdsa-sha2-nistp256 "), ("rsa", "ssh-rsa ")] {
        let host = FakeHost::builder().host_key_type(ty).start();
        assert!(host.host_public_key().starts_with(prefix), "{}", host.host_public_key());
        let kh = host.dir().join("client/kh-test");
        std::fs::write(&kh, format!("{}\n", host.known_hosts_line())).unwrap();
        let out = run(strict_ssh(&host, &kh, "true"), b"");
        assert!(out.status.success(), "{ty}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn hosts_start_in_parallel_and_closed_port_is_closed() {
    let hosts: Vec<FakeHost> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(FakeHost::start)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ports: Vec<u16> = hosts.iter().map(|h| h.port()).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 4);
    for h in &hosts {
        assert_eq!(ssh_ok(h, "echo hi", b""), "hi\n");
    }
    let port = closed_port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
#[should_panic(expected = "expected 1 agent record(s) within")]
fn wait_for_agent_records_panics_with_diagnostics_on_timeout() {
    let host = FakeHost::start();
    host.wait_for_agent_records(1, Duration::from_millis(100));
}

#[test]
fn an_own_home_is_the_sessions_home_and_its_start_up_files_run() {
    let host = FakeHost::builder().own_home().start();
    assert_eq!(host.home(), host.dir().join("home"));
    host.write_home_file(".profile", "export DLGTK_MARK=from-profile\n", 0o644);
    let out = host.ssh("bash -lc 'printf \"%s %s\" \"$HOME\" \"$DLGTK_MARK\"'").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{} from-profile", host.home().display()));
}
