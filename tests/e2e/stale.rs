//! A host that accepts the connection but whose sync never answers (its sync script hangs:
//! the brother is untrusted) beside a healthy host: commands that show state give it a short
//! deadline, show the healthy host's tasks fresh and the hung host's as last heard (stale),
//! with a warning naming the host and the fix; the MCP server is not held by it either.
//!
//! The hang is real: on the hung host a `tmux` earlier on PATH (the test kit's bin dir comes
//! first) stalls the sync script's session listing while a flag file exists, after SSH
//! connected and authenticated, so only a deadline on the whole sync cuts it short.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use delegate_testkit::FakeHost;
use serde_json::{Value, json};

use crate::support::{Env, blank_runner_start_time, install_agent, launch, remote_dir, wait_done, wait_for_file};

/// Well under the 60 s a sync could take before, with room for a loaded machine.
const BOUND: Duration = Duration::from_secs(30);

/// Makes the host's sync hang while it is switched on; released (and so every stalled
/// script ends) when dropped.
struct SyncStall {
    flag: PathBuf,
    tasks: PathBuf,
}

impl SyncStall {
    fn install(host: &FakeHost) -> SyncStall {
        let real = ["/usr/bin/tmux", "/bin/tmux", "/usr/local/bin/tmux"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("tmux installed");
        let flag = host.dir().join("stall-sync");
        // Only the sync lists sessions (remote/scripts/sync.sh); launches and the runner pass
        // through. A resident shell's control client would list them with no process: none
        // starts here (the shell then uses a plain client).
        let script = format!(
            "#!/bin/bash\n[[ \" $* \" != *' -C '* ]] || exit 1\nif [[ \" $* \" == *' list-sessions '* ]]; then\n\
             \tfor _ in $(seq 1200); do [ -e '{flag}' ] || break; sleep 0.1; done\nfi\nexec {real} \"$@\"\n",
            flag = flag.display()
        );
        install_agent(host, "tmux", &script);
        SyncStall { flag, tasks: host.remote_root().join("tasks") }
    }

    /// Also blanks the start time in each runner's `started` line (same length: the runner
    /// only appends), as a runner of an older delegate has it: a small sync of running tasks
    /// sees them alive in /proc and starts no program, so it lists the sessions only where a
    /// runner is not seen so.
    fn on(&self) {
        for dir in std::fs::read_dir(&self.tasks).unwrap().flatten() {
            blank_runner_start_time(&dir.path().join("state"));
        }
        std::fs::write(&self.flag, "").unwrap();
    }

    fn off(&self) {
        let _ = std::fs::remove_file(&self.flag);
    }
}

impl Drop for SyncStall {
    fn drop(&mut self) {
        self.off();
    }
}

/// Hosts "a" (healthy, brother "fast") and "b" (brother "slow", its sync stallable, with
/// `b_extra` in its `[hosts.b]`).
fn two_hosts(b_extra: &str) -> (FakeHost, FakeHost, Env, SyncStall) {
    let (healthy, hung) = (FakeHost::start(), FakeHost::start());
    let env = Env::new();
    env.add_host("a", &healthy);
    env.add_brother("fast", "a", &healthy, "self-test", "read");
    env.trust(&hung);
    env.config_append(&(env.host_toml("b", &hung) + b_extra));
    env.add_brother("slow", "b", &hung, "self-test", "read");
    let stall = SyncStall::install(&hung);
    (healthy, hung, env, stall)
}

/// A task on "slow" that works for `secs`, synced once as running while its host still
/// answers.
fn slow_task_seen_running(env: &Env, secs: u32) -> i64 {
    let prompt = format!("dawdle\n@self-test sleep {secs}");
    let slow = launch(env, &["slow", &prompt, "--max-turns", "200", "--json"]);
    for _ in 0..100 {
        let s = env.run(&["show", &slow.to_string(), "--json"]).ok().json();
        if s["status"] == "running" {
            assert!(s["synced_at"].is_string() && s["stale"].is_null(), "{s}");
            return slow;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("task {slow} never showed running");
}

fn task(tasks: &Value, id: i64) -> &Value {
    tasks.as_array().unwrap().iter().find(|t| t["id"] == id).unwrap_or_else(|| panic!("no task {id} in {tasks}"))
}

#[test]
fn a_hung_host_does_not_hold_status_and_its_tasks_show_stale() {
    let (_healthy, _hung, env, stall) = two_hosts("");
    let slow = slow_task_seen_running(&env, 90);
    // A quick task on the healthy host that ends on its brother before the mailbox hears.
    let fast = launch(&env, &["fast", "quick", "--json"]);
    wait_for_file(&remote_dir(&env, fast).join("exit"));
    stall.on();

    let started = Instant::now();
    let run = env.run(&["status", "--json"]).ok();
    assert!(started.elapsed() < BOUND, "status took {:?} with one host hung:\n{run}", started.elapsed());
    let tasks = run.json();
    let (f, s) = (task(&tasks, fast), task(&tasks, slow));
    assert_eq!((f["status"].as_str(), &f["stale"]), (Some("completed"), &Value::Null), "fresh from a: {tasks}");
    assert_eq!(s["status"], "running", "the last known state: {tasks}");
    assert_eq!(s["stale"]["last_heard_at"], s["synced_at"], "{tasks}");
    assert!(s["stale"]["why"].as_str().unwrap().contains("did not answer within 10s"), "{tasks}");
    let warning = run.stderr();
    assert!(
        warning.contains("warning: could not sync b: it did not answer within 10 s")
            && warning.contains("sync_deadline under [hosts.b]")
            && warning.matches("warning:").count() == 1,
        "one warning, for b: {run}"
    );

    // What the mailbox knows says so without syncing again, in every view.
    let run = env.run(&["status", "--no-sync"]).ok();
    let line = run.stdout().lines().find(|l| l.trim_start().starts_with(&slow.to_string())).unwrap().to_string();
    assert!(line.contains("running") && line.contains("[stale: last heard "), "{run}");
    let line = run.stdout().lines().find(|l| l.trim_start().starts_with(&fast.to_string())).unwrap().to_string();
    assert!(line.contains("completed") && !line.contains("stale"), "{run}");
    let run = env.run(&["list", "--no-sync"]).ok();
    assert_eq!(run.stdout().matches("[stale: last heard ").count(), 1, "{run}");
    let run = env.run(&["show", &slow.to_string(), "--no-sync"]).ok();
    assert!(run.stdout().contains("stale: last heard ") && run.stdout().contains("host b: "), "{run}");

    // wait: the hung host's task stays pending (not failed) when the time is up.
    let started = Instant::now();
    let run = env.run(&["wait", &fast.to_string(), &slow.to_string(), "--timeout", "3s", "--json"]).fails_with(8);
    assert!(started.elapsed() < BOUND, "wait took {:?}:\n{run}", started.elapsed());
    let w = run.json();
    assert_eq!(w["pending"], json!([slow]), "{w}");
    assert_eq!(task(&w["tasks"], fast)["status"], "completed", "{w}");
    assert_eq!(task(&w["tasks"], slow)["status"], "running", "{w}");
    assert!(task(&w["tasks"], slow)["stale"].is_object(), "{w}");
    assert!(w["sync_errors"]["b"].as_str().unwrap().contains("could not sync b: it did not answer"), "{w}");
}

#[test]
fn sync_deadline_is_per_host_and_delegate_sync_waits_longer_then_the_task_is_fresh_again() {
    let (_healthy, _hung, env, stall) = two_hosts("sync_deadline = 2\n");
    let slow = slow_task_seen_running(&env, 12);
    stall.on();
    let run = env.run(&["status"]).ok();
    assert!(run.stderr().contains("could not sync b: it did not answer within 2 s"), "{run}");
    assert!(run.stdout().contains("[stale: last heard "), "{run}");

    // `delegate sync` was asked for: it waits past the 2 s for the host to answer.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(5));
        drop(stall);
    });
    let run = env.run(&["sync"]).ok();
    release.join().unwrap();
    assert!(run.stdout().contains("b: 1 task(s) in "), "{run}");
    let s = env.run(&["show", &slow.to_string(), "--json", "--no-sync"]).ok().json();
    assert!(s["stale"].is_null() && s["status"] == "running", "the host answered: {s}");

    // The syncs cut off moved no offset: the task ends with every report once, in order.
    assert_eq!(wait_done(&env, slow)["status"], "completed");
    let done = env.run(&["show", &slow.to_string(), "--json", "--no-sync"]).ok().json();
    let texts: Vec<&str> =
        done["messages"].as_array().unwrap().iter().skip(1).map(|m| m["text"].as_str().unwrap()).collect();
    let mut expected: Vec<String> = (2..=12).map(|t| format!("turn {t} of 12")).collect();
    expected.push("self-test worked for 12 seconds".into());
    assert_eq!(texts, expected, "after the receipt: {done}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_a_hung_host_holds_no_tool_call_for_long_and_its_tasks_show_stale() {
    let (_healthy, _hung, env, stall) = two_hosts("");
    let slow = slow_task_seen_running(&env, 90);
    let fast = launch(&env, &["fast", "quick", "--json"]);
    wait_for_file(&remote_dir(&env, fast).join("exit"));
    stall.on();
    let client = crate::mcp::connect(&env).await;

    // Two calls at once: the list syncs both hosts, the other needs only the healthy one.
    let started = Instant::now();
    let timed = |tool: &'static str, args: Value| {
        let client = &client;
        async move {
            let v = crate::mcp::ok(client, tool, args).await;
            (v, started.elapsed())
        }
    };
    let ((list, list_took), (one, one_took)) =
        tokio::join!(timed("list_tasks", json!({})), timed("get_task", json!({"id": fast})));
    assert!(list_took < BOUND && one_took < BOUND, "list_tasks {list_took:?}, get_task {one_took:?}");
    let (f, s) = (task(&list["tasks"], fast), task(&list["tasks"], slow));
    assert_eq!((f["status"].as_str(), &f["stale"]), (Some("completed"), &Value::Null), "{list}");
    assert_eq!(s["status"], "running", "{list}");
    assert!(s["stale"]["last_heard_at"].is_string(), "{list}");
    assert!(list["sync_warnings"]["b"].as_str().unwrap().contains("sync_deadline under [hosts.b]"), "{list}");
    assert!(list["sync_warnings"].get("a").is_none(), "{list}");
    assert_eq!((one["status"].as_str(), &one["stale"]), (Some("completed"), &Value::Null), "{one}");

    let started = Instant::now();
    let view = crate::mcp::ok(&client, "get_task", json!({"id": slow})).await;
    assert!(started.elapsed() < BOUND, "get_task took {:?}", started.elapsed());
    assert!(view["stale"]["why"].as_str().unwrap().contains("did not answer"), "{view}");
    assert!(view["sync_warnings"]["b"].is_string(), "{view}");
    client.cancel().await.ok();
}
