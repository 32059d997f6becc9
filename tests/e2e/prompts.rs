//! Prompts arrive byte for byte: whatever bytes the user gives (argument, file or stdin) are
//! the bytes of the remote `prompt` file and the bytes on the agent's stdin, and no byte of
//! them is ever read by a shell, tmux or an argv along the way.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use delegate_testkit::{AgentRecord, FakeHost, Fault, FaultProxy, closed_port, sha256_hex};

use crate::support::{Env, Run, base64_cores, remote_dir};

/// Deterministic pseudo-random bytes (xorshift64*), so a failure can be reproduced.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// The agent record of the task whose remote directory is `dir`.
fn record_for(host: &FakeHost, dir: &Path) -> AgentRecord {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = host
            .agent_records()
            .into_iter()
            .find(|r| r.env.get("DELEGATE_TASK_DIR").is_some_and(|d| Path::new(d) == dir));
        if let Some(r) = found {
            return r;
        }
        assert!(Instant::now() < deadline, "no agent record for {}:\n{}", dir.display(), host.diagnostics());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A successful `--json` launch delivered exactly `input`: in the mailbox's hash and size,
/// and, behind delegate's preamble, in the remote prompt file and on the agent's stdin.
fn assert_delivered(host: &FakeHost, env: &Env, run: Run, input: &[u8]) {
    let task = run.ok().json();
    assert_eq!(task["status"], "launched");
    assert_eq!(task["prompt_bytes"], input.len() as i64);
    assert_eq!(task["prompt_sha256"], sha256_hex(input));
    let id = task["id"].as_i64().unwrap();
    let wrapped = crate::support::agent_reads(env, id, input);
    let dir = remote_dir(env, id);
    let remote = std::fs::read(dir.join("prompt")).unwrap();
    assert!(remote == wrapped, "remote prompt differs: {} bytes vs {} expected", remote.len(), wrapped.len());
    assert!(remote.ends_with(input));
    let rec = record_for(host, &dir);
    assert_eq!(rec.stdin_bytes as usize, wrapped.len());
    assert_eq!(rec.stdin_sha256, sha256_hex(&wrapped));
    assert!(!rec.stdin_is_tty);
}

fn write_prompt(env: &Env, name: &str, bytes: &[u8]) -> PathBuf {
    let p = env.home.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn all_256_byte_values_round_trip_by_file_and_by_stdin() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "claude", "read");
    // Twice over, in order and reversed, so NUL and 0xff sit next to everything.
    let mut all: Vec<u8> = (0..=255u8).collect();
    all.extend((0..=255u8).rev());
    let file = write_prompt(&env, "all-bytes", &all);
    let path = file.to_str().unwrap();
    assert_delivered(&host, &env, env.run(&["oppy", "--prompt-file", path, "--json"]), &all);
    assert_delivered(&host, &env, env.run_with_stdin(&["oppy", "-", "--json"], &all), &all);
    assert_delivered(&host, &env, env.run_with_stdin(&["oppy", "--prompt-file", "-", "--json"], &all), &all);
}

#[test]
fn shell_and_tmux_syntax_in_a_prompt_is_only_text() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "claude", "read");
    let pwned = std::env::temp_dir().join(format!("pwned-prompt-{}", std::process::id()));
    let _ = std::fs::remove_file(&pwned);
    let p = pwned.display();
    let prompt = format!(
        "it's \"quoted\" 'twice' \\ backslash\n$(touch {p})\n`touch {p}`\n${{IFS}}$HOME #{{session_name}} #{{pane_pid}}\n\
         #(touch {p})\n'; touch {p}; '\n\"; touch {p}; \"\n}}\nmain\nEOF\n'EOF'\n-\n--help\r\nwindows line\r\nlone\rcarriage\n\t tab %s %n \u{1b}[31m\n"
    );
    let bytes = prompt.as_bytes();
    assert_delivered(&host, &env, env.run(&["oppy", &prompt, "--json"]), bytes);
    let file = write_prompt(&env, "hostile", bytes);
    assert_delivered(&host, &env, env.run(&["oppy", "--prompt-file", file.to_str().unwrap(), "--json"]), bytes);
    assert_delivered(&host, &env, env.run_with_stdin(&["oppy", "-", "--json"], bytes), bytes);
    // The agents have run (their records are read above); give a stray shell a moment more.
    std::thread::sleep(Duration::from_millis(100));
    assert!(!pwned.exists(), "a prompt was executed: {} exists", pwned.display());
}

#[test]
fn large_prompts_and_the_argv_size_boundary_round_trip() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "claude", "read");
    // 128 KiB is the kernel's limit for one argv string: the prompt must never be one.
    for (n, len) in [131_071usize, 131_072, 131_073, 1024 * 1024].into_iter().enumerate() {
        let bytes = noise(len, 0x5eed + n as u64);
        let file = write_prompt(&env, &format!("p{len}"), &bytes);
        assert_delivered(&host, &env, env.run(&["oppy", "--prompt-file", file.to_str().unwrap(), "--json"]), &bytes);
    }
}

#[test]
fn a_non_utf8_argument_prompt_round_trips() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "claude", "read");
    let raw = b"caf\xe9 \xff\xfe latin-1 and \xc3\x28 broken utf-8 \x80\n\xf0\x9f\x98\x80 ok".to_vec();
    let short = [OsString::from("oppy"), OsString::from_vec(raw.clone()), OsString::from("--json")];
    assert_delivered(&host, &env, env.run_os(&short), &raw);
    let long =
        [OsString::from("run"), OsString::from("oppy"), OsString::from_vec(raw.clone()), OsString::from("--json")];
    assert_delivered(&host, &env, env.run_os(&long), &raw);
}

#[test]
fn empty_and_oversized_prompts_are_exit_5_before_connecting() {
    let env = Env::new();
    // A host nobody listens on: any connection attempt would end in exit 10 instead.
    let port = closed_port();
    env.config_append(&format!(
        "[hosts.h]\naddress = \"127.0.0.1\"\nport = {port}\nknown_hosts = \"{}\"\nconnect_timeout = 5\n\
         [brothers.oppy]\nhost = \"h\"\nworkdir = \"/w\"\nagent = \"claude\"\n",
        env.known_hosts.display()
    ));
    let empty = write_prompt(&env, "empty", b"");
    let runs = [
        env.run(&["oppy", "", "--json"]),
        env.run_with_stdin(&["oppy", "-", "--json"], b""),
        env.run(&["oppy", "--prompt-file", empty.to_str().unwrap(), "--json"]),
    ];
    for run in runs {
        let run = run.fails_with(5);
        assert!(run.stderr().contains("prompt is empty"), "{run}");
    }
    let limit = delegate_core::MAX_PROMPT_BYTES;
    let over = write_prompt(&env, "over", &vec![b'x'; limit + 1]);
    let run = env.run(&["oppy", "--prompt-file", over.to_str().unwrap(), "--json"]).fails_with(5);
    assert!(run.stderr().contains(&format!("{} bytes, over the {limit}-byte limit", limit + 1)), "{run}");
    assert_eq!(env.run(&["list", "--json"]).ok().json(), serde_json::json!([]), "a task was recorded");

    // Exactly at the limit the prompt is accepted, and only then does the connection fail.
    let at = write_prompt(&env, "at", &vec![b'x'; limit]);
    env.run(&["oppy", "--prompt-file", at.to_str().unwrap(), "--json"]).fails_with(10);
    let list = env.run(&["list", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["status"], "failed");
    assert_eq!(list[0]["prompt_bytes"], limit as i64);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn owner_uid(pid_dir: &Path) -> Option<u32> {
    let status = std::fs::read_to_string(pid_dir.join("status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What the /proc scanner found.
#[derive(Default)]
struct Scan {
    samples: usize,
    leaks: BTreeSet<String>,
    /// Pids whose argv looked like the fake claude's (proves the agent was seen alive).
    agent_pids: HashSet<String>,
}

fn scan_proc(needles: &[Vec<u8>], remote_uid: u32, scan: &mut Scan) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let dir = e.path();
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        if contains(&cmdline, b"--session-id") && contains(&cmdline, b"/bin/claude") {
            scan.agent_pids.insert(name.clone());
        }
        let mut sources = vec![("cmdline", cmdline)];
        if owner_uid(&dir) == Some(remote_uid) {
            sources.push(("environ", std::fs::read(dir.join("environ")).unwrap_or_default()));
        }
        for (what, bytes) in &sources {
            for n in needles {
                if contains(bytes, n) {
                    scan.leaks.insert(format!(
                        "/proc/{name}/{what} holds {:?}: {:?}",
                        String::from_utf8_lossy(n),
                        String::from_utf8_lossy(bytes)
                    ));
                }
            }
        }
    }
    scan.samples += 1;
}

#[test]
fn the_prompt_never_appears_in_any_argv_environment_or_log() {
    let host = FakeHost::start();
    host.set_agent_mode("sleep:5");
    let env = Env::with_brother(&host, "claude", "read");
    let canary: String =
        noise(16, std::process::id() as u64 ^ 0xca7a_7a11).iter().map(|b| format!("{b:02x}")).collect();
    // The canary is not on the first line, which becomes the (printed) subject.
    let prompt = format!("find the secret below\nsecret: {canary}\nthat is all\n");
    let mut needles: Vec<Vec<u8>> = vec![canary.clone().into_bytes()];
    needles.extend(base64_cores(canary.as_bytes()).into_iter().map(String::into_bytes));
    assert!(needles.iter().all(|n| n.len() >= 32), "needles too short to be unambiguous");

    let stop = Arc::new(AtomicBool::new(false));
    let scan = Arc::new(Mutex::new(Scan::default()));
    let scanner = {
        let (stop, scan, needles, uid) = (stop.clone(), scan.clone(), needles.clone(), host.uid());
        std::thread::spawn(move || {
            let mut until = None;
            loop {
                let samples = {
                    let mut scan = scan.lock().unwrap();
                    scan_proc(&needles, uid, &mut scan);
                    scan.samples
                };
                if stop.load(Ordering::SeqCst) {
                    // A second more while the agent sleeps, and enough samples even when a
                    // loaded machine makes each pass over /proc slow (bounded: 30 s).
                    let end = *until.get_or_insert_with(|| Instant::now() + Duration::from_secs(1));
                    let now = Instant::now();
                    if (now > end && samples > 20) || now > end + Duration::from_secs(30) {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let run = env.run_with_stdin(&["oppy", "-", "--json"], prompt.as_bytes());
    stop.store(true, Ordering::SeqCst);
    scanner.join().unwrap();
    let out = format!("{}{}", run.stdout(), run.stderr());
    let run = run.ok();
    let task = run.json();
    let dir = remote_dir(&env, task["id"].as_i64().unwrap());
    let rec = record_for(&host, &dir);
    let wrapped = crate::support::agent_reads(&env, task["id"].as_i64().unwrap(), prompt.as_bytes());
    assert_eq!(rec.stdin_sha256, sha256_hex(&wrapped), "the agent did not get the prompt");

    let scan = scan.lock().unwrap();
    assert!(scan.leaks.is_empty(), "prompt leaked:\n{:#?}", scan.leaks);
    assert!(scan.samples > 20, "only {} samples of /proc", scan.samples);
    assert!(
        scan.agent_pids.contains(&rec.pid.to_string()),
        "the scanner never saw the sleeping agent (pid {}); saw {:?}",
        rec.pid,
        scan.agent_pids
    );
    for n in &needles {
        let n = String::from_utf8_lossy(n);
        assert!(!out.contains(&*n), "delegate printed the prompt:\n{run}");
        assert!(!host.sshd_log().contains(&*n), "the sshd log holds the prompt:\n{}", host.sshd_log());
    }
}

/// A prompt given as an argument is in delegate's own argv when it starts; once parsed it is
/// overwritten there, so `ps` and /proc/PID/cmdline no longer show it while the command waits
/// on the network (here: for a host behind a stalled proxy). The other arguments stay
/// readable, and the agent still gets the prompt exactly. Both the short form and `run`.
#[test]
fn a_prompt_argument_is_gone_from_cmdline_while_the_launch_waits() {
    use std::io::Write as _;
    let host = FakeHost::start();
    let proxy = FaultProxy::start(([127, 0, 0, 1], host.port()).into());
    let env = Env::new();
    let mut known = std::fs::OpenOptions::new().append(true).open(&env.known_hosts).unwrap();
    writeln!(known, "[127.0.0.1]:{} {}", proxy.port(), host.host_public_key()).unwrap();
    env.config_append(
        &env.host_toml("h", &host)
            .replace(&format!("port = {}\n", host.port()), &format!("port = {}\n", proxy.port()))
            .replace("connect_timeout = 5\n", "connect_timeout = 30\n"),
    );
    env.add_brother("oppy", "h", &host, "claude", "read");
    // The agents keep running, so the `say` below has a live task to talk to.
    host.set_agent_mode("sleep:120");
    let canary: String = noise(16, std::process::id() as u64 ^ 0xa76f).iter().map(|b| format!("{b:02x}")).collect();
    let prompt = format!("look at this\nsecret: {canary}\n");

    for form in [&["--no-warm", "oppy"][..], &["--no-warm", "run", "oppy"][..]] {
        let mut args: Vec<&str> = form.to_vec();
        args.extend([prompt.as_str(), "--subject", "visible subject", "--json"]);
        let (cmdline, out) = cmdline_while_stalled(&env, &proxy, &args);
        let shown = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !shown.contains(&canary) && !shown.contains("look at this"),
            "{args:?}: cmdline shows the prompt: {shown}"
        );
        let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        for kept in form.iter().copied().chain(["--subject", "visible subject", "--json"]) {
            assert!(words.contains(&kept.as_bytes()), "{kept:?} missing from cmdline: {shown}");
        }
        assert!(words.contains(&&b"[hidden]"[..]), "{shown}");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let task: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = task["id"].as_i64().unwrap();
        let rec = record_for(&host, &remote_dir(&env, id));
        let wrapped = crate::support::agent_reads(&env, id, prompt.as_bytes());
        assert_eq!(rec.stdin_sha256, sha256_hex(&wrapped), "the agent did not get the prompt exactly");
        assert_eq!(task["subject"], "visible subject");
    }

    // A message to a brother likewise.
    let message = format!("psst: {canary}");
    let (cmdline, _) = cmdline_while_stalled(&env, &proxy, &["--no-warm", "say", "1", &message, "--as", "lead"]);
    let shown = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(!shown.contains(&canary), "cmdline shows the message: {shown}");
    assert!(shown.contains("say 1 [hidden]") && shown.contains("--as lead"), "{shown}");
}

/// Runs delegate with `args` while `proxy` stalls its connection, reads its
/// `/proc/PID/cmdline` once it has connected (it parsed its arguments long before), then lets
/// it finish.
fn cmdline_while_stalled(env: &Env, proxy: &FaultProxy, args: &[&str]) -> (Vec<u8>, std::process::Output) {
    proxy.set(Fault::Stall);
    let before = proxy.connections();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_delegate"))
        .env_clear()
        .envs(env.envs())
        .current_dir(&env.home)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while proxy.connections() == before {
        assert!(started.elapsed() < Duration::from_secs(60), "{args:?}: delegate never connected");
        std::thread::sleep(Duration::from_millis(10));
    }
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
    proxy.set(Fault::Pass);
    (cmdline, child.wait_with_output().unwrap())
}
