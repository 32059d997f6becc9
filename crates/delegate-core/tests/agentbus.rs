//! agentbus interop, worker side: the real `agentbus` CLI (PyPI 0.1.12) publishes tasks to a
//! real nats-server, delegate's agentbus worker ([`delegate_core::worker::agentbus::serve`])
//! launches each with delegate's own launch script and the real `claude` against the model
//! stand-in, and `agentbus result get` prints the result. Without DELEGATE_TEST_AGENTBUS_BIN
//! or DELEGATE_TEST_AGENTS_BIN these tests say so and pass (outside CI only).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use delegate_core::hosts::inventory::AgentEnvironment;
use delegate_core::task::Sandbox;
use delegate_core::transport::nats::{agentbus as ab, connect, wire};
use delegate_core::worker::agentbus::{Settings, serve};
use delegate_testkit::agentbus::{agentbus_bin, results, run};
use delegate_testkit::model::{ModelStandIn, Reply, Script};
use delegate_testkit::nats::NatsServer;
use serde_json::Value;

struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        // This test's own tmux server (see `settings`) goes with it.
        let _ = std::process::Command::new("tmux").arg("kill-server").env("TMUX_TMPDIR", self.0.join("tmux")).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(tag: &str) -> Scratch {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("dlg-ab-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["home", "work", "root", "tmux"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    // The launch script wants the task tree this user's alone.
    std::fs::set_permissions(dir.join("root"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    Scratch(dir)
}

/// The real claude at `read` (no shell: it answers in text), in a fresh HOME, talking to `model`.
fn settings(dir: &Path, agents: &Path, model: &ModelStandIn) -> Settings {
    let mut s = Settings::new("claude", dir.join("work").to_str().unwrap(), dir.join("root").to_str().unwrap());
    s.sandbox = Sandbox::Read;
    s.max_turns = 5;
    s.timeout = Duration::from_secs(120);
    s.environment = AgentEnvironment::Plain;
    s.tick = Duration::from_millis(200);
    s.log = |line| eprintln!("{line}");
    s.env = model.claude_env();
    s.env.push(("HOME".into(), dir.join("home").display().to_string()));
    // A tmux server of its own: a session's environment is its server's, and a server another
    // test started would point the agent at that test's model stand-in.
    s.env.push(("TMUX_TMPDIR".into(), dir.join("tmux").display().to_string()));
    s.env.push(("PATH".into(), format!("{}:/usr/local/bin:/usr/bin:/bin", agents.display())));
    s
}

/// A worker serving in the background until dropped (or [`Worker::stop`]).
struct Worker {
    stop: tokio::sync::watch::Sender<bool>,
    done: Option<tokio::task::JoinHandle<Result<(), delegate_core::Error>>>,
}

impl Worker {
    async fn start(url: &str, id: &str, s: Settings) -> Worker {
        let client = connect::connect(url, None).await.unwrap();
        let js = async_nats::jetstream::new(client.clone());
        let (stop, rx) = tokio::sync::watch::channel(false);
        let id = id.to_string();
        let done = tokio::spawn(async move { serve(client, js, &id, s, rx).await });
        Worker { stop, done: Some(done) }
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        let done = self.done.take().unwrap();
        tokio::time::timeout(Duration::from_secs(60), done).await.expect("serve stops").unwrap().unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Polls `agentbus result get` (the real CLI, on a blocking thread) until `agent` has a
/// result for `task_id`.
async fn result_for(bin: &Path, url: &str, agent: &str, task_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (b, u, a) = (bin.to_path_buf(), url.to_string(), agent.to_string());
        let found = tokio::task::spawn_blocking(move || results(&b, &u, &a, 20)).await.unwrap();
        if let Some(r) = found.into_iter().find(|r| r["task"]["id"] == task_id) {
            return r;
        }
        assert!(Instant::now() < deadline, "no result for {task_id} within 120 s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn publish(bin: &Path, url: &str, to: &str, content: &str) -> Value {
    let out = run(bin, &["task", "publish", content, "--server-url", url, "--to", to, "--from", "main"]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("agentbus task publish printed {out:?}: {e}"))
}

/// How many messages the results stream holds for `agent` and task `task_id`.
async fn stored_results(url: &str, agent: &str, task_id: &str) -> usize {
    let client = connect::connect(url, None).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(wire::AGENTBUS_RESULTS_STREAM).await.unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut n = 0;
    for seq in 1..=last {
        if let Ok(m) = stream.get_raw_message(seq).await
            && m.subject.as_str() == wire::agentbus_result_subject(agent)
            && ab::TaskResult::parse(&m.payload).is_ok_and(|r| r.task_id() == Some(task_id))
        {
            n += 1;
        }
    }
    n
}

fn needs_tools() -> Option<(PathBuf, PathBuf)> {
    let agentbus = agentbus_bin()?;
    let agents = delegate_testkit::brothers::real_agents_bin()?;
    Some((agentbus, agents))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentbus_publish_reaches_delegate_s_worker_and_agentbus_reads_the_result() {
    let Some((bin, agents)) = needs_tools() else { return };
    let server = NatsServer::start();
    let url = server.url();
    let model = ModelStandIn::start(Script::text("the capital is Paris"));
    let dir = scratch("roundtrip");
    let worker = Worker::start(&url, "w1", settings(&dir.0, &agents, &model)).await;

    let task = publish(&bin, &url, "w1", "what is the capital of France?");
    let result = result_for(&bin, &url, "main", task["id"].as_str().unwrap()).await;

    assert_eq!(result["type"], "task.result", "{result}");
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["result"], "the capital is Paris", "{result}");
    // The task as agentbus's worker puts it in a result (its as_dict: created_at null).
    let mut sent = task.clone();
    sent["created_at"] = Value::Null;
    assert_eq!(result["task"], sent, "the result carries the task: {result}");
    // The agent got agentbus's own prompt for the task, and ran under delegate's runner.
    let seen = model.requests();
    assert!(
        seen.iter().any(|r| r.contains("You are w1. You received an asynchronous AgentBus task from main.")
            && r.contains("what is the capital of France?")),
        "the model never saw agentbus's prompt"
    );
    let key_dirs: Vec<_> = std::fs::read_dir(dir.0.join("root/tasks")).unwrap().flatten().collect();
    assert_eq!(key_dirs.len(), 1, "one task directory: {key_dirs:?}");
    assert!(key_dirs[0].path().join("exit").exists(), "the runner recorded the exit");
    worker.stop().await;
    assert_eq!(stored_results(&url, "main", task["id"].as_str().unwrap()).await, 1, "exactly one result");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_oversized_agentbus_tasks_are_terminated_and_the_next_one_runs() {
    let Some((bin, agents)) = needs_tools() else { return };
    // Room for a message over agentbus's 1 MiB task limit.
    let server = NatsServer::builder().config("max_payload: 2MB").start();
    let url = server.url();
    let model = ModelStandIn::start(Script::text("fine"));
    let dir = scratch("invalid");
    let client = connect::connect(&url, None).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    ab::ensure_streams(&js, &url).await.unwrap();
    let subject = wire::agentbus_task_subject("w2");
    for bad in [
        b"{not json".to_vec(),
        br#"{"id":"x","from":"main","to":"w2","type":"task.request"}"#.to_vec(),
        format!(r#"{{"id":"big","from":"main","to":"w2","type":"task.request","task_type":"d","payload":{{"content":"{}"}}}}"#, "a".repeat(ab::MAX_TASK_BYTES))
            .into_bytes(),
    ] {
        js.publish(subject.clone(), bad.into()).await.unwrap().await.unwrap();
    }
    let worker = Worker::start(&url, "w2", settings(&dir.0, &agents, &model)).await;
    let task = publish(&bin, &url, "w2", "the good one");
    let result = result_for(&bin, &url, "main", task["id"].as_str().unwrap()).await;
    assert_eq!(result["status"], "completed", "{result}");

    // The three bad ones were terminated: none waits for an ack or comes back, none ran.
    let stream = js.get_stream(wire::AGENTBUS_TASKS_STREAM).await.unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream.get_consumer("w2").await.unwrap();
    let info = consumer.info().await.unwrap().clone();
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    assert_eq!(info.num_redelivered, 0, "{info:?}");
    assert_eq!(info.num_pending, 0, "{info:?}");
    assert_eq!(std::fs::read_dir(dir.0.join("root/tasks")).unwrap().count(), 1, "only the good task ran");
    assert_eq!(results(&bin, &url, "main", 10).len(), 1, "no result for the refused ones");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_publishes_the_result_of_a_task_that_ended_while_it_was_down() {
    let Some((bin, agents)) = needs_tools() else { return };
    let server = NatsServer::start();
    let url = server.url();
    // The model holds its answer until the test lets it go.
    let release = Arc::new(AtomicBool::new(false));
    let asked = Arc::new(AtomicUsize::new(0));
    let (r, a) = (release.clone(), asked.clone());
    let model = ModelStandIn::start(Script::new(move |_| {
        a.fetch_add(1, Ordering::SeqCst);
        while !r.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        Reply::Text("answered after the restart".into())
    }));
    let dir = scratch("restart");
    let pending = dir.0.join("root/workers/agentbus-w3/pending.json");
    let worker = Worker::start(&url, "w3", settings(&dir.0, &agents, &model)).await;
    let task = publish(&bin, &url, "w3", "take your time");
    let id = task["id"].as_str().unwrap().to_string();

    // Launched, written down, and the agent is waiting on the model: stop the worker.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(asked.load(Ordering::SeqCst) > 0 && std::fs::read_to_string(&pending).is_ok_and(|p| p.contains(&id))) {
        assert!(Instant::now() < deadline, "the task never launched");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&pending).unwrap().permissions().mode() & 0o777, 0o600);
    worker.stop().await;

    // The agent finishes while no worker runs.
    release.store(true, Ordering::SeqCst);
    let tasks = dir.0.join("root/tasks");
    let task_dir = std::fs::read_dir(&tasks).unwrap().flatten().next().unwrap().path();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !task_dir.join("exit").exists() {
        assert!(Instant::now() < deadline, "the agent never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored_results(&url, "main", &id).await, 0, "nobody answered yet");

    let worker = Worker::start(&url, "w3", settings(&dir.0, &agents, &model)).await;
    let result = result_for(&bin, &url, "main", &id).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["result"], "answered after the restart", "{result}");
    // A few more rounds change nothing: one result, one agent, nothing pending.
    tokio::time::sleep(Duration::from_secs(1)).await;
    worker.stop().await;
    assert_eq!(stored_results(&url, "main", &id).await, 1);
    assert_eq!(std::fs::read_dir(&tasks).unwrap().count(), 1, "one agent");
    assert!(!std::fs::read_to_string(&pending).unwrap().contains(&id), "no longer pending");
}

// --- lead side: delegate hands tasks to the real `agentbus worker run` ---------------------

/// The real agentbus worker, its chat command the real `claude -p {input}` against `model`.
struct AgentbusWorker(std::process::Child);

impl AgentbusWorker {
    fn start(bin: &Path, agents: &Path, dir: &Path, url: &str, id: &str, model: &ModelStandIn) -> AgentbusWorker {
        let config = dir.join("agentbus.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\nid = \"{id}\"\nchat_cmd = [\"claude\", \"-p\", \"{{input}}\"]\n\n[worker]\nserver_url = \"{url}\"\ntask_timeout_seconds = 120\n\n[log]\ndir = \"{}\"\n",
                dir.join("logs").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("worker.out")).unwrap();
        let child = std::process::Command::new(bin.join("agentbus"))
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
            .expect("start agentbus worker run");
        AgentbusWorker(child)
    }
}

impl Drop for AgentbusWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lead(dir: &Path) -> delegate_core::Delegate {
    delegate_core::Delegate::open(delegate_core::Paths {
        config_file: dir.join("config.toml"),
        data_dir: dir.join("data"),
        ssh_config: dir.join("ssh_config"),
        home: dir.join("home"),
        local_user: "lead".into(),
        agent_socket: None,
    })
    .unwrap()
}

fn draft(d: &mut delegate_core::Delegate, title: &str) -> i64 {
    d.create_draft(delegate_core::Draft { title: title.into(), ..Default::default() }).unwrap().id
}

/// Polls until `agentbus result get --agent AGENT` holds `n` results (the lead reads none
/// meanwhile: it is "offline").
async fn wait_results(bin: &Path, url: &str, agent: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (b, u, a) = (bin.to_path_buf(), url.to_string(), agent.to_string());
        let have = tokio::task::spawn_blocking(move || results(&b, &u, &a, 50).len()).await.unwrap();
        if have >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{agent} has {have} results, not {n}, after 120 s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_hands_tasks_to_the_real_agentbus_worker_and_records_each_result_once() {
    use delegate_core::ops::agentbus::{collect, hand_over, reply_agent};
    let Some((bin, agents)) = needs_tools() else { return };
    let server = NatsServer::start();
    let url = server.url();
    let model = ModelStandIn::start(Script::new(|req| {
        if req.contains("please fail") {
            Reply::HttpError(400, "this request is refused by the stand-in".into())
        } else {
            Reply::Text("\u{1b}[31mthe report\u{1b}[0m: all good".into())
        }
    }));
    let dir = scratch("lead");
    let client = connect::connect(&url, None).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut d = lead(&dir.0);
    let good = draft(&mut d, "write the report");
    let bad = draft(&mut d, "please fail");

    // Handed over while no agentbus worker runs: stored in AGENTBUS_TASKS, launched.
    let good_id = hand_over(d.store_mut(), &js, "ab1", good).await.unwrap();
    hand_over(d.store_mut(), &js, "ab1", bad).await.unwrap();
    assert_eq!(d.task(good).unwrap().status, delegate_core::TaskStatus::Launched);
    assert!(good_id.starts_with("task-"), "{good_id}");

    // agentbus has no say and no cancel: both refused, naming why (exit 50 in the CLI).
    let e = d.say(good, "hurry up", "lead").await.unwrap_err();
    assert_eq!(e.kind(), delegate_core::ErrorKind::Agentbus, "{e}");
    assert!(e.to_string().contains("agentbus worker ab1"), "{e}");
    let e = d.cancel(good).await.unwrap_err();
    assert_eq!(e.kind(), delegate_core::ErrorKind::Agentbus, "{e}");
    assert_eq!(d.task(good).unwrap().status, delegate_core::TaskStatus::Launched, "nothing changed");

    // The worker answers both while the lead reads nothing ("offline").
    let reply = reply_agent(d.store().mailbox_id());
    let _worker = AgentbusWorker::start(&bin, &agents, &dir.0, &url, "ab1", &model);
    wait_results(&bin, &url, &reply, 2).await;

    // The next sync records both; the ones after it nothing more.
    let mut recorded = collect(d.store_mut(), &js).await.unwrap();
    recorded.sort();
    assert_eq!(recorded, vec![good, bad]);
    assert!(collect(d.store_mut(), &js).await.unwrap().is_empty(), "read again: nothing new");

    let t = d.task(good).unwrap();
    assert_eq!(t.status, delegate_core::TaskStatus::Completed, "{t:?}");
    let view = d.show(good).unwrap();
    let done: Vec<_> = view.messages.iter().filter(|m| m.kind == "done").collect();
    assert_eq!(done.len(), 1, "one final report: {:?}", view.messages);
    // The escape sequences the agent wrote are gone (sanitized before the mailbox).
    assert_eq!(done[0].text, "the report: all good");
    let t = d.task(bad).unwrap();
    assert_eq!(t.status, delegate_core::TaskStatus::Failed, "{t:?}");
    assert!(t.reason.as_deref().unwrap_or("").contains("agentbus worker ab1 failed"), "{t:?}");

    // The same result published once more (a worker retrying): still recorded once.
    let stream = js.get_stream(wire::AGENTBUS_RESULTS_STREAM).await.unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.unwrap();
        js.publish(m.subject.to_string(), m.payload.clone()).await.unwrap().await.unwrap();
    }
    assert!(collect(d.store_mut(), &js).await.unwrap().is_empty(), "a duplicate result records nothing");
    let view = d.show(good).unwrap();
    assert_eq!(view.messages.iter().filter(|m| m.kind == "done").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_agent_cannot_start_is_answered_failed_with_delegate_s_reason_once() {
    let Some((bin, agents)) = needs_tools() else { return };
    let server = NatsServer::start();
    let url = server.url();
    let model = ModelStandIn::start(Script::text("never asked"));
    let dir = scratch("missing");
    let mut s = settings(&dir.0, &agents, &model);
    s.agent_path = Some(dir.0.join("no-such-claude").display().to_string());
    let worker = Worker::start(&url, "w4", s).await;
    let task = publish(&bin, &url, "w4", "anything");
    let id = task["id"].as_str().unwrap();
    let result = result_for(&bin, &url, "main", id).await;
    assert_eq!(result["status"], "failed", "{result}");
    let error = result["error"].as_str().unwrap_or("");
    assert!(error.contains("could not start the agent (error 21)") && error.contains("no-such-claude"), "{result}");
    assert!(result.get("result").is_none(), "{result}");
    // Answered, so terminated: not redelivered, nothing pending, no second answer.
    tokio::time::sleep(Duration::from_secs(1)).await;
    worker.stop().await;
    let client = connect::connect(&url, None).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        js.get_stream(wire::AGENTBUS_TASKS_STREAM).await.unwrap().get_consumer("w4").await.unwrap();
    let info = consumer.info().await.unwrap().clone();
    assert_eq!((info.num_ack_pending, info.num_redelivered, info.num_pending), (0, 0, 0), "{info:?}");
    assert_eq!(stored_results(&url, "main", id).await, 1);
    assert!(model.requests().is_empty(), "no agent ran");
}
