//! `cancel` of a task that is still launching wins against the launch, wherever the cancel
//! lands: (a) before the launch script reaches the brother, (b) while it runs there before
//! tmux starts, (c) after the agent started but before the launch recorded it. Each time the
//! launch is really held at that point (a test build pauses at a named phase; a `tmux` on the
//! brother's PATH waits at `tmux new-session`), the cancel runs, and the launch goes on. Afterwards
//! the task is `cancelled`, no session or process of it is left (checked a few seconds
//! later), and the launch says it was cancelled, without inviting a retry.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use delegate_testkit::FakeHost;
use serde_json::Value;

use crate::support::Env;

/// A `delegate run` in the background, optionally paused at a launch phase until resumed.
struct Launch {
    child: Child,
    stop: PathBuf,
    resume: PathBuf,
}

impl Launch {
    fn start(env: &Env, pause_at: Option<&str>, args: &[&str]) -> Launch {
        let tag = format!("{}-{}", std::process::id(), env.home.file_name().unwrap().to_string_lossy());
        let stop = std::env::temp_dir().join(format!("dlg-race-stop-{tag}"));
        let resume = std::env::temp_dir().join(format!("dlg-race-resume-{tag}"));
        let _ = std::fs::remove_file(&stop);
        let _ = std::fs::remove_file(&resume);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_delegate"));
        cmd.args(args).env_clear().envs(env.envs()).current_dir(&env.home);
        if let Some(phase) = pause_at {
            cmd.env("DELEGATE_TEST_STOP_AT", phase)
                .env("DELEGATE_TEST_STOP_FILE", &stop)
                .env("DELEGATE_TEST_RESUME_FILE", &resume);
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        Launch { child, stop, resume }
    }

    /// Waits until the launch is paused at its phase.
    fn paused(&mut self) {
        wait_until("the launch to pause", || {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("delegate ended ({status}) before its pause");
            }
            self.stop.exists()
        });
    }

    /// Lets it go on and collects its exit code, stdout and stderr.
    fn finish(mut self) -> (i32, String, String) {
        std::fs::write(&self.resume, "go").unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "the launch hangs after the cancel");
            std::thread::sleep(Duration::from_millis(20));
        };
        let (mut out, mut err) = (String::new(), String::new());
        self.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let _ = std::fs::remove_file(&self.stop);
        let _ = std::fs::remove_file(&self.resume);
        (status.code().unwrap_or(-1), out, err)
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        // A failed test must not leave the launch behind (it may be paused for good).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The one task of the env, as the mailbox has it (no sync).
fn the_task(env: &Env) -> Value {
    let list = env.run(&["list", "--json", "--no-sync"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    list[0].clone()
}

/// Processes whose command line names the task's directory (its runner or its agent).
fn processes_of(task_dir: &Path) -> Vec<String> {
    let needle = task_dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.contains(&needle) {
            found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
        }
    }
    found
}

/// What every case ends with: the launch reports the cancel (exit 18) and does not invite a
/// retry; after a few seconds the task is still `cancelled` (after a sync too), and no session
/// or process of it exists on the brother.
fn assert_cancel_won(host: &FakeHost, env: &Env, launch: (i32, String, String)) {
    let (code, out, err) = launch;
    assert_eq!(code, 18, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("was cancelled while it was launching") && err.contains("no agent runs"), "{err}");
    assert!(!err.contains("try again") && !out.contains("launched task"), "invites a retry: {out}\n{err}");
    std::thread::sleep(Duration::from_secs(3));
    let t = the_task(env);
    let id = t["id"].as_i64().unwrap();
    let synced = env.run(&["show", &id.to_string(), "--json"]).ok().json();
    assert_eq!(synced["status"], "cancelled", "{synced}");
    let session = synced["session"].as_str().unwrap();
    let listed = host.tmux(&["list-sessions", "-F", "#{session_name}"]);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(session), "session {session} is still there");
    let key = session.strip_prefix("dlg-").unwrap().rsplit_once('-').unwrap().0;
    let dir = host.remote_root().join("tasks").join(key);
    assert_eq!(processes_of(&dir), Vec::<String>::new(), "the task's runner or agent still runs");
    assert!(host.remote_root().join("tasks").join(format!("{key}.cancelled")).exists(), "no cancel mark");
}

const DAWDLE: [&str; 5] = ["oppy", "dawdle\n@self-test sleep 30", "--max-turns", "100", "--json"];

#[test]
fn a_cancel_before_the_launch_script_reaches_the_brother_wins() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let mut launch = Launch::start(&env, Some("recorded"), &DAWDLE);
    launch.paused();
    let id = the_task(&env)["id"].as_i64().unwrap();
    let cancelled = env.run(&["cancel", &id.to_string(), "--json"]).ok().json();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(cancelled["reason"].as_str().unwrap().contains("before its agent started"), "{cancelled}");
    let result = launch.finish();
    // Refused before anything was created on the brother.
    let key = the_task(&env)["session"]
        .as_str()
        .unwrap()
        .strip_prefix("dlg-")
        .unwrap()
        .rsplit_once('-')
        .unwrap()
        .0
        .to_string();
    assert!(!host.remote_root().join("tasks").join(&key).exists(), "a task directory was made");
    assert_cancel_won(&host, &env, result);
}

#[test]
fn a_cancel_while_the_launch_script_runs_before_tmux_starts_wins() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    // sshd's PATH, where the kit's bin directory comes first (a login shell's would not
    // have it), so the launch script meets the `tmux` below.
    env.config_append("environment = \"plain\"\n");
    // The launch script starts the session with `tmux new-session`: hold it there.
    let gate = host.workdir();
    let real =
        ["/usr/bin/tmux", "/bin/tmux", "/usr/local/bin/tmux"].into_iter().find(|p| Path::new(p).exists()).unwrap();
    crate::support::install_agent(
        &host,
        "tmux",
        &format!(
            "#!/bin/bash\nif [[ \" $* \" == *\" new-session \"* ]]; then\n  : >'{g}/reached'\n  for _ in $(seq 600); do [ -e '{g}/go' ] && break; sleep 0.1; done\nfi\nexec {real} \"$@\"\n",
            g = gate.display()
        ),
    );
    let launch = Launch::start(&env, None, &DAWDLE);
    wait_until("the launch script to reach tmux", || gate.join("reached").exists());
    // A sync meanwhile leaves the launch alone.
    let id = the_task(&env)["id"].as_i64().unwrap();
    let seen = env.run(&["show", &id.to_string(), "--json"]).ok().json();
    assert_eq!(seen["status"], "launching", "{seen}");
    let cancelled = env.run(&["cancel", &id.to_string(), "--json"]).ok().json();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    std::fs::write(gate.join("go"), "").unwrap();
    let result = launch.finish();
    // The runner found the mark under its start lock; the run keeps the brother's word.
    let run = &env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json()["runs"][0];
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(run["error"].as_str().unwrap_or("").contains("started no agent"), "{run}");
    assert_cancel_won(&host, &env, result);
}

#[test]
fn a_cancel_after_the_agent_started_but_before_the_launch_recorded_it_wins() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let mut launch = Launch::start(&env, Some("answered"), &DAWDLE);
    launch.paused();
    let t = the_task(&env);
    assert_eq!(t["status"], "launching", "the answer is not recorded yet: {t}");
    let id = t["id"].as_i64().unwrap();
    let cancelled = env.run(&["cancel", &id.to_string(), "--json"]).ok().json();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(cancelled["reason"].as_str().unwrap().contains("signalled"), "{cancelled}");
    let key = t["session"].as_str().unwrap().strip_prefix("dlg-").unwrap().rsplit_once('-').unwrap().0.to_string();
    let exit = std::fs::read_to_string(host.remote_root().join("tasks").join(&key).join("exit")).unwrap();
    assert!(exit.trim_end().ends_with(" cancelled"), "the runner stopped the agent it had started: {exit}");
    assert_cancel_won(&host, &env, launch.finish());
}
