//! The NATS transport end to end: the real `delegate` CLI as the lead and a real
//! `delegate worker` process on the brother (run as the brother user with the fake host's
//! PATH, tmux and remote root), both connected to a real nats-server with JetStream. The
//! lead never reaches the brother any other way: no sshd is asked anything.

use std::time::{Duration, Instant};

use delegate_testkit::FakeHost;
use delegate_testkit::nats::NatsServer;
use serde_json::Value;

use crate::support::{Env, install_agent};
use crate::worker::{WORKER, Worker};

/// A lead whose brother `oppy` (agent `agent`) sits on NATS host `nb`, served by worker
/// `w1` on `host`'s account. `extra` goes into the host's table.
fn lead(host: &FakeHost, server: &NatsServer, agent: &str, extra: &str) -> Env {
    let env = Env::new();
    // A launch returns as soon as the worker's `launched` result arrives; a loaded machine
    // may take longer than the default 5 s to start the agent.
    let wait = if extra.contains("launch_wait") { String::new() } else { "launch_wait = \"60s\"\n".into() };
    let extra = format!("{wait}{extra}");
    env.config_append(&format!(
        "[hosts.nb]\ntransport = \"nats\"\nurl = \"{}\"\nworker_id = \"{WORKER}\"\nremote_root = \"{}\"\n\
         environment = \"plain\"\n{extra}\n\
         [brothers.oppy]\nhost = \"nb\"\nworkdir = \"{}\"\nagent = \"{agent}\"\nsandbox = \"full\"\n",
        server.url(),
        host.remote_root().display(),
        host.workdir().display()
    ));
    env
}

fn id_of(run: &crate::support::Run) -> i64 {
    run.json()["id"].as_i64().unwrap_or_else(|| panic!("no id in:\n{run}"))
}

fn show(env: &Env, id: i64) -> Value {
    env.run(&["show", &id.to_string(), "--json", "--all"]).ok().json()
}

fn wait_status(env: &Env, id: i64, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let t = show(env, id);
        if t["status"] == status {
            return t;
        }
        assert!(Instant::now() < deadline, "task {id} never {status}: {t}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn texts(t: &Value) -> Vec<String> {
    t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] != "to_brother")
        .map(|m| format!("{}: {}", m["kind"].as_str().unwrap_or(""), m["text"].as_str().unwrap_or("")))
        .collect()
}

fn counts(t: &Value) -> (usize, usize) {
    (t["events"].as_array().unwrap().len(), t["messages"].as_array().unwrap().len())
}

/// sshd's exec count on the host: the lead must not use SSH for a NATS host.
fn sshd_execs(host: &FakeHost) -> usize {
    crate::support::execs(host)
}

#[test]
fn a_task_runs_through_a_worker_with_launch_evidence_say_reports_and_its_outcome() {
    let host = FakeHost::start();
    let server = NatsServer::start();
    let worker = Worker::start(&host, &server.url(), &[], "a");
    let env = lead(&host, &server, "self-test", "");
    let before = sshd_execs(&host);

    let run = env.run(&["run", "oppy", "@self-test sleep 4\nreview the configs", "--json"]).ok();
    let id = id_of(&run);
    assert_eq!(run.json()["status"], "launched", "{run}\n{}", worker.log());
    let t = show(&env, id);
    let evidence = &t["runs"][0]["evidence"];
    assert_eq!(evidence["nats"]["instance"], "a", "{t}");
    assert!(evidence["remote"]["agent_version"].as_str().unwrap_or("").contains("delegate-self-test"), "{t}");
    assert!(t["runs"][0]["marker"].as_str().unwrap().contains(t["runs"][0]["nonce"].as_str().unwrap()), "{t}");

    // `say` reaches the running agent through the server (the replica that ran it).
    env.run(&["say", &id.to_string(), "a note through NATS"]).ok();
    let done = env.run(&["wait", &id.to_string(), "--timeout", "120s", "--json"]).ok();
    assert_eq!(done.json()["tasks"][0]["status"], "completed", "{done}\n{}", worker.log());
    let t = show(&env, id);
    let said = texts(&t);
    assert!(said.iter().any(|m| m.starts_with("receipt")), "{said:?}");
    assert!(said.iter().any(|m| m.starts_with("done")), "{said:?}");
    // The agent read the lead's message: its receipt came back through the result stream.
    let note = t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["direction"] == "to_brother" && m["text"] == "a note through NATS")
        .unwrap_or_else(|| panic!("the note is in the thread: {t}"));
    assert!(!note["delivered_at"].is_null(), "the agent read it: {note}");

    // `logs` reads the task's files through the server too.
    let logs = env.run(&["logs", &id.to_string()]).ok();
    assert!(!logs.stdout().is_empty(), "{logs}");
    assert_eq!(sshd_execs(&host), before, "nothing went over SSH");
}

#[test]
fn a_task_waits_queued_while_no_worker_runs_and_runs_once_when_one_starts() {
    let host = FakeHost::start();
    let server = NatsServer::start();
    let env = lead(&host, &server, "self-test", "launch_wait = \"1s\"\n");
    let run = env.run(&["run", "oppy", "@self-test sleep 1\nwhile nobody listened", "--json"]).ok();
    let id = id_of(&run);
    assert_eq!(run.json()["status"], "queued", "{run}");
    // Syncs and the dispatcher while it waits publish nothing more.
    env.run(&["sync"]).ok();
    env.run(&["dispatch", "--once"]).ok();
    let worker = Worker::start(&host, &server.url(), &[], "a");
    let t = wait_status(&env, id, "completed");
    assert_eq!(t["runs"].as_array().unwrap().len(), 1, "{t}");
    // One task directory, one agent: launched once.
    let dirs = std::fs::read_dir(host.remote_root().join("tasks")).unwrap().count();
    assert_eq!(dirs, 1, "{}", worker.log());
}

#[test]
fn a_task_that_ends_while_the_lead_is_away_is_read_once_by_the_next_command() {
    let host = FakeHost::start();
    let server = NatsServer::start();
    let worker = Worker::start(&host, &server.url(), &[], "a");
    let env = lead(&host, &server, "self-test", "");
    let run = env.run(&["run", "oppy", "@self-test sleep 2\nfinish without me", "--json"]).ok();
    let id = id_of(&run);
    // No lead process runs while the agent works and ends; the worker publishes it all.
    worker.wait_log("finished; no longer watched");
    let first = env.run(&["status", "--json"]).ok();
    assert!(first.stdout().contains("completed"), "{first}");
    let t = show(&env, id);
    assert_eq!(t["status"], "completed", "{t}");
    let c = counts(&t);
    env.run(&["sync"]).ok();
    env.run(&["sync"]).ok();
    assert_eq!(counts(&show(&env, id)), c, "nothing read twice");
}

#[test]
fn a_worker_killed_mid_run_and_started_again_finishes_the_task_with_one_agent() {
    let host = FakeHost::start();
    let server = NatsServer::start();
    install_agent(
        &host,
        "dlg-counter",
        &format!(
            "#!/bin/bash\ncat >/dev/null\necho start >>'{}/agent-starts'\nfor i in $(seq 40); do echo \"{{\\\"line\\\":$i}}\"; sleep 0.1; done\n",
            host.workdir().display()
        ),
    );
    let mut first = Worker::start(&host, &server.url(), &[], "a");
    let env = lead(&host, &server, "counter", "");
    env.config_append("[agents.counter]\ncommand = [\"dlg-counter\"]\n");
    let run = env.run(&["run", "oppy", "count", "--json"]).ok();
    let id = id_of(&run);
    assert_eq!(run.json()["status"], "launched", "{run}");
    first.crash();
    std::thread::sleep(Duration::from_secs(1));
    let second = Worker::start(&host, &server.url(), &[], "a");
    let t = wait_status(&env, id, "completed");
    let starts = std::fs::read_to_string(host.workdir().join("agent-starts")).unwrap();
    assert_eq!(starts.lines().count(), 1, "{}", second.log());
    assert_eq!(t["runs"].as_array().unwrap().len(), 1, "{t}");
    // Every line the agent wrote arrived once.
    let logs = env.run(&["logs", &id.to_string()]).ok().stdout();
    for i in [1, 20, 40] {
        assert_eq!(logs.matches(&format!("{{\"line\":{i}}}")).count(), 1, "line {i} in:\n{logs}");
    }
}

#[test]
fn cancel_through_the_server_stops_the_agent() {
    let host = FakeHost::start();
    let server = NatsServer::start();
    let worker = Worker::start(&host, &server.url(), &[], "a");
    let env = lead(&host, &server, "self-test", "");
    let run = env.run(&["run", "oppy", "@self-test sleep 60\nlong work", "--json"]).ok();
    let id = id_of(&run);
    assert_eq!(run.json()["status"], "launched", "{run}");
    let session = show(&env, id)["runs"][0]["session"].as_str().unwrap().to_string();
    env.run(&["cancel", &id.to_string()]).ok();
    let alive = host.tmux(&["has-session", "-t", &format!("={session}")]);
    assert!(!alive.status.success(), "the agent still runs after cancel\n{}", worker.log());
    assert_eq!(show(&env, id)["status"], "cancelled");
}

#[test]
fn the_real_claude_cli_installed_per_user_runs_through_a_worker_at_write_and_reports() {
    use delegate_testkit::brothers::{self, Install};
    let Some(bin) = brothers::real_agents_bin() else { return };
    let host = FakeHost::builder().own_home().without_fake_agents().start();
    let model = delegate_testkit::model::ModelStandIn::start(crate::real_agents::reporting_script());
    // npm with a user prefix: found through the login shell's PATH, as on a real machine.
    let installed = brothers::install(&host, Install::NpmUserPrefix, &bin, &model);
    let server = NatsServer::start();
    let worker = Worker::start(&host, &server.url(), &[], "a");
    let env = Env::new();
    env.config_append(&format!(
        "[hosts.nb]\ntransport = \"nats\"\nurl = \"{}\"\nworker_id = \"{WORKER}\"\nremote_root = \"{}\"\n\
         launch_wait = \"60s\"\n\n\
         [brothers.oppy]\nhost = \"nb\"\nworkdir = \"{}\"\nagent = \"claude\"\nsandbox = \"write\"\n{}",
        server.url(),
        host.remote_root().display(),
        host.workdir().display(),
        installed.claude_path.map(|p| format!("agent_path = \"{p}\"\n")).unwrap_or_default()
    ));
    let run = env.run(&["run", "oppy", "review the config", "--json"]).ok();
    let id = id_of(&run);
    assert_eq!(run.json()["status"], "launched", "{run}\n{}", worker.log());
    let done = env.run(&["wait", &id.to_string(), "--timeout", "180s", "--json"]).ok();
    assert_eq!(done.json()["tasks"][0]["status"], "completed", "{done}\n{}", worker.log());
    let t = show(&env, id);
    let said = texts(&t);
    for expected in ["receipt: on it", "progress: half way", "done: all good"] {
        assert!(said.iter().any(|m| m == expected), "{expected} missing from {said:?}");
    }
    assert!(t.to_string().contains("finished: all good"), "{t}");
    assert!(t["runs"][0]["evidence"]["remote"]["agent_version"].as_str().unwrap().contains("Claude Code"), "{t}");
}

#[test]
fn agentbus_publish_reaches_delegate_worker_run_with_agentbus_and_agentbus_reads_the_result() {
    let Some(bin) = delegate_testkit::agentbus::agentbus_bin() else { return };
    let host = FakeHost::start();
    let server = NatsServer::start();
    let workdir = host.workdir().display().to_string();
    let worker = Worker::start(
        &host,
        &server.url(),
        &["--agentbus", "--agentbus-agent", "self-test", "--agentbus-workdir", &workdir, "--agentbus-sandbox", "full"],
        "a",
    );
    // agentbus's own CLI publishes to agentbus.w1.tasks and reads agentbus.main.results.
    let published = delegate_testkit::agentbus::run(
        &bin,
        &["task", "publish", "check the build", "--server-url", &server.url(), "--to", WORKER, "--from", "main"],
    );
    let task: Value = serde_json::from_str(published.trim()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let result = loop {
        let results = delegate_testkit::agentbus::results(&bin, &server.url(), "main", 5);
        if let Some(r) = results.into_iter().find(|r| r["task"]["id"] == task["id"]) {
            break r;
        }
        assert!(Instant::now() < deadline, "no agentbus result within 120 s\n{}", worker.log());
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(result["type"], "task.result", "{result}");
    assert_eq!(result["status"], "completed", "{result}\n{}", worker.log());
    assert!(!result["result"].as_str().unwrap_or("").is_empty(), "{result}");
    // The agent ran through delegate's launch script: a task directory with its launch.
    let tasks: Vec<_> = std::fs::read_dir(host.remote_root().join("tasks")).unwrap().collect();
    assert_eq!(tasks.len(), 1, "{}", worker.log());
}

#[test]
fn a_lead_hands_a_task_to_the_real_agentbus_worker_from_the_cli_and_records_its_result_once() {
    use delegate_testkit::model::{ModelStandIn, Reply, Script};
    let Some(bin) = delegate_testkit::agentbus::agentbus_bin() else { return };
    let Some(agents) = delegate_testkit::brothers::real_agents_bin() else { return };
    let server = NatsServer::start();
    let model = ModelStandIn::start(Script::new(|_| Reply::Text("the build is green".into())));
    let env = Env::new();
    let dir = env.home.join("agentbus-worker");
    for d in ["home", "work", "logs"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let config = dir.join("agentbus.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nid = \"{WORKER}\"\nchat_cmd = [\"claude\", \"-p\", \"{{input}}\"]\n\n[worker]\nserver_url = \"{}\"\ntask_timeout_seconds = 120\n\n[log]\ndir = \"{}\"\n",
            server.url(),
            dir.join("logs").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("worker.out")).unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _worker = Kill(
        std::process::Command::new(bin.join("agentbus"))
            .args(["worker", "run", "--config"])
            .arg(&config)
            .envs(model.claude_env())
            .env("HOME", dir.join("home"))
            .env("PATH", format!("{}:/usr/local/bin:/usr/bin:/bin", agents.display()))
            .current_dir(dir.join("work"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    env.config_append(&format!(
        "[hosts.ab]\ntransport = \"nats\"\nurl = \"{}\"\nworker_id = \"{WORKER}\"\nprotocol = \"agentbus\"\n\n\
         [brothers.coder]\nhost = \"ab\"\nworkdir = \"/tmp\"\nagent = \"claude\"\n",
        server.url()
    ));
    let run = env.run(&["run", "coder", "is the build green?", "--json"]).ok();
    let id = id_of(&run);
    assert_eq!(run.json()["status"], "launched", "{run}");
    // `say` and `cancel` cannot reach an agentbus task: exit 50, nothing changes.
    env.run(&["say", &id.to_string(), "hurry"]).fails_with(50);
    let done = env.run(&["wait", &id.to_string(), "--timeout", "150s", "--json"]);
    let out = std::fs::read_to_string(dir.join("worker.out")).unwrap_or_default();
    let done = done.ok();
    assert_eq!(done.json()["tasks"][0]["status"], "completed", "{done}\n{out}");
    let t = show(&env, id);
    assert!(t.to_string().contains("the build is green"), "{t}");
    let c = counts(&t);
    env.run(&["sync"]).ok();
    assert_eq!(counts(&show(&env, id)), c, "recorded once");
}
