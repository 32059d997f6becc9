//! The lead side of the NATS transport (issue 20) against a real nats-server with
//! JetStream. The worker's part is played by the test through the wire types
//! (`delegate_core::transport::nats::wire`): it takes the task message from the worker's
//! durable consumer, runs the launch and sync scripts locally exactly as a worker would
//! (`bash -c 'eval "$(</dev/stdin)"'`, real tmux, the self-test agent), and publishes the
//! results. That is also how the lead is shown a hostile or broken worker (a spoofed nonce,
//! garbage, a gap, a result for another mailbox) and an offline one.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use delegate_core::remote::protocol::{SyncRequest, SyncTaskRequest, parse_sync, render_sync};
use delegate_core::transport::nats::wire::{self, ExecReply, ExecRequest, ResultMessage, TaskMessage};
use delegate_testkit::nats::NatsServer;
use futures_util::StreamExt;

use crate::support::Env;

const WORKER: &str = "w1";

/// What a worker machine has: a remote root, a workdir and its own tmux server.
struct Machine {
    dir: PathBuf,
}

impl Machine {
    fn new(env: &Env) -> Machine {
        let dir = env.home.join("worker");
        for d in ["root", "work", "tmux"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        Machine { dir }
    }
    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// Runs one of delegate's scripts as a worker does (as sshd would run it).
    fn run(&self, script: &[u8]) -> ExecReply {
        let mut child = Command::new("bash")
            .args(delegate_core::remote::REMOTE_ARGV[1..].iter())
            .env("TMUX_TMPDIR", self.dir.join("tmux"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(script).unwrap();
        let out = child.wait_with_output().unwrap();
        ExecReply {
            v: wire::WIRE_VERSION,
            exit: out.status.code(),
            signal: None,
            stdout: wire::b64(&out.stdout),
            stderr: wire::b64(&out.stderr),
            overflow: false,
            broken: None,
        }
    }

    /// The worker's own sync of one task from `offsets`: the sync script's stdout, and the
    /// offsets it reached.
    fn sync(&self, key: &str, session: &str, offsets: &BTreeMap<String, u64>) -> (Vec<u8>, BTreeMap<String, u64>) {
        let req = SyncRequest {
            remote_root: self.root().display().to_string(),
            tasks: vec![SyncTaskRequest {
                task_key: key.into(),
                session: session.into(),
                offsets: offsets.clone(),
                want_launch_json: false,
                clock_ms: None,
            }],
            max_bytes_per_file: 1 << 20,
            max_bytes_total: 4 << 20,
        };
        let reply = self.run(&render_sync(&req).unwrap());
        let stdout = wire::unb64(&reply.stdout).unwrap();
        let parsed = parse_sync(&stdout).unwrap();
        let mut next = offsets.clone();
        for d in &parsed.tasks[0].deltas {
            next.insert(d.file.clone(), d.offset + d.bytes.len() as u64);
        }
        (stdout, next)
    }

    fn finished(&self, key: &str) -> bool {
        self.root().join("tasks").join(key).join("exit").exists()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", "delegate", "kill-server"])
            .env("TMUX_TMPDIR", self.dir.join("tmux"))
            .stderr(Stdio::null())
            .status();
    }
}

/// The test's stand-in for `delegate worker`, on a tokio runtime of its own.
struct Worker {
    rt: tokio::runtime::Runtime,
    js: jetstream::Context,
    client: async_nats::Client,
}

impl Worker {
    fn connect(server: &NatsServer) -> Worker {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let client = rt.block_on(async_nats::connect(server.url())).unwrap();
        let js = rt.block_on(async { jetstream::new(client.clone()) });
        Worker { rt, js, client }
    }

    /// Takes the next task message for the worker id (waiting up to 5 s), acknowledged.
    fn take(&self) -> Option<TaskMessage> {
        self.rt.block_on(async {
            let stream = self.js.get_stream(wire::TASKS_STREAM).await.ok()?;
            let consumer = stream
                .get_or_create_consumer(
                    &wire::consumer_name(WORKER),
                    pull::Config {
                        durable_name: Some(wire::consumer_name(WORKER)),
                        filter_subject: wire::task_subject(WORKER),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let mut batch = consumer.fetch().max_messages(1).expires(Duration::from_secs(5)).messages().await.unwrap();
            let m = batch.next().await?.unwrap();
            m.double_ack().await.unwrap();
            Some(serde_json::from_slice(&m.payload).unwrap())
        })
    }

    /// How many task messages the stream holds.
    fn tasks_stored(&self) -> u64 {
        self.rt.block_on(async {
            let mut s = self.js.get_stream(wire::TASKS_STREAM).await.unwrap();
            s.info().await.unwrap().state.messages
        })
    }

    fn publish(&self, mailbox: &str, bytes: Vec<u8>) {
        self.rt.block_on(async {
            let ack = self.js.publish(wire::results_subject(mailbox, WORKER), bytes.into()).await.unwrap();
            ack.await.unwrap();
        })
    }

    fn result(&self, mailbox: &str, m: &ResultMessage) {
        self.publish(mailbox, serde_json::to_vec(m).unwrap());
    }

    /// Answers exec requests on `subject` in the background (as the worker's responder),
    /// running each script on `machine`'s root.
    fn respond(&self, subject: String, machine_dir: PathBuf) {
        let client = self.client.clone();
        let mut sub = self.rt.block_on(client.subscribe(subject)).unwrap();
        self.rt.block_on(client.flush()).unwrap();
        self.rt.spawn(async move {
            while let Some(m) = sub.next().await {
                let req: ExecRequest = serde_json::from_slice(&m.payload).unwrap();
                let script = wire::unb64(&req.script).unwrap();
                let dir = machine_dir.clone();
                let reply = tokio::task::spawn_blocking(move || Machine { dir }.run_keep(&script)).await.unwrap();
                client.publish(m.reply.unwrap(), serde_json::to_vec(&reply).unwrap().into()).await.unwrap();
            }
        });
    }
}

impl Machine {
    /// [`Machine::run`] for a borrowed directory that must outlive this value (no tmux
    /// teardown on drop).
    fn run_keep(self, script: &[u8]) -> ExecReply {
        let reply = self.run(script);
        std::mem::forget(self);
        reply
    }
}

/// An inventory with one NATS host `nb` (worker `w1`) and brother `oppy` (self-test agent).
fn env_for(server: &NatsServer, extra: &str) -> (Env, Machine) {
    let env = Env::new();
    let m = Machine::new(&env);
    // Long enough for the test's worker thread on a loaded machine: a launch returns as
    // soon as the `launched` result arrives. Tests of a worker that never answers set
    // task_ttl or their own launch_wait.
    let wait = if extra.contains("launch_wait") {
        ""
    } else if extra.contains("task_ttl") {
        "launch_wait = \"3s\"\n"
    } else {
        "launch_wait = \"30s\"\n"
    };
    env.config_append(&format!(
        "[hosts.nb]\ntransport = \"nats\"\nurl = \"{}\"\nworker_id = \"{WORKER}\"\nremote_root = \"{}\"\n\
         environment = \"plain\"\n{wait}{extra}\n\
         [brothers.oppy]\nhost = \"nb\"\nworkdir = \"{}\"\nagent = \"self-test\"\nsandbox = \"full\"\n",
        server.url(),
        m.root().display(),
        m.dir.join("work").display()
    ));
    (env, m)
}

/// The lead's mailbox id (created by the first command that opens the mailbox).
fn mailbox_of(env: &Env) -> String {
    env.run(&["list", "--json"]).ok();
    let conn = rusqlite::Connection::open(env.data.join("mailbox.db")).unwrap();
    conn.query_row("SELECT value FROM meta WHERE key = 'mailbox_id'", [], |r| r.get(0)).unwrap()
}

/// The worker's side of one task after its launch: sync until the agent's exit record was
/// read and published, each new read published as a `delegate.sync` result. Returns every
/// result it published.
fn sync_until_done(w: &Worker, m: &Machine, mailbox: &str, msg: &TaskMessage, instance: &str) -> Vec<ResultMessage> {
    let mut offsets = BTreeMap::new();
    let mut sent = Vec::new();
    for _ in 0..300 {
        let done = m.finished(&msg.task_key);
        let (stdout, next) = m.sync(&msg.task_key, &msg.session, &offsets);
        if next != offsets || done {
            let r = ResultMessage::Sync {
                v: wire::WIRE_VERSION,
                task_key: msg.task_key.clone(),
                instance: instance.into(),
                offsets: offsets.clone(),
                stdout: wire::b64(&stdout),
            };
            w.result(mailbox, &r);
            sent.push(r);
            offsets = next;
        }
        if done {
            return sent;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("task {} never finished on the worker", msg.task_key);
}

fn launched(msg: &TaskMessage, instance: &str, exec: ExecReply) -> ResultMessage {
    ResultMessage::Launched {
        v: wire::WIRE_VERSION,
        task_key: msg.task_key.clone(),
        nonce: msg.nonce.clone(),
        instance: instance.into(),
        exec,
    }
}

fn show(env: &Env, id: i64) -> serde_json::Value {
    env.run(&["show", &id.to_string(), "--json", "--no-sync", "--all"]).ok().json()
}

fn task_id(run: &crate::support::Run) -> i64 {
    run.json()["id"].as_i64().unwrap_or_else(|| panic!("no id in:\n{run}"))
}

#[test]
fn a_task_for_an_online_worker_launches_through_the_server_takes_say_and_completes() {
    let server = NatsServer::start();
    let (env, m) = env_for(&server, "");
    let mailbox = mailbox_of(&env);
    let w = Worker::connect(&server);
    let instance = "box-a1";
    // The worker: takes the task as soon as it is published, runs it, says `launched`.
    let worker = std::thread::scope(|s| {
        let handle = s.spawn(|| {
            let msg = loop {
                if let Some(msg) = w.take() {
                    break msg;
                }
            };
            let script = wire::unb64(&msg.script).unwrap();
            let reply = m.run(&script);
            w.result(&mailbox, &launched(&msg, instance, reply));
            msg
        });
        let run = env.run(&["run", "oppy", "@self-test sleep 3\nsay hello through NATS", "--json"]).ok();
        (handle.join().unwrap(), run)
    });
    let (msg, run) = worker;
    let id = task_id(&run);
    assert_eq!(run.json()["status"], "launched", "{run}");
    // What went over the wire: the launch script, with the task's own nonce and session.
    assert_eq!((msg.task, msg.run_no, msg.mailbox.as_str()), (id, 1, mailbox.as_str()));
    let task = show(&env, id);
    assert_eq!(task["runs"][0]["nonce"], msg.nonce.as_str());
    assert_eq!(task["runs"][0]["evidence"]["nats"]["instance"], instance, "{task}");
    assert!(task["runs"][0]["marker"].as_str().unwrap().contains(&msg.nonce), "{task}");

    // `say` goes to the replica that ran it, through request/reply.
    w.respond(wire::exec_subject(WORKER, Some(instance)), m.dir.clone());
    env.run(&["say", &id.to_string(), "a note from the lead"]).ok();
    let inbox = std::fs::read_to_string(m.root().join("tasks").join(&msg.task_key).join("inbox.jsonl")).unwrap();
    assert!(inbox.contains("a note from the lead"), "{inbox}");

    let published = sync_until_done(&w, &m, &mailbox, &msg, instance);
    let waited = env.run(&["wait", &id.to_string(), "--timeout", "60s", "--json"]).ok();
    let t = &waited.json()["tasks"][0];
    assert_eq!(t["status"], "completed", "{waited}");
    let before = show(&env, id);
    let (events, messages) = (before["events"].as_array().unwrap().len(), before["messages"].as_array().unwrap().len());
    assert!(messages >= 2, "the agent's reports came back: {before}");

    // Every result delivered again (a worker that re-sent after a crash): nothing added.
    for r in &published {
        w.result(&mailbox, r);
    }
    env.run(&["sync"]).ok();
    let after = show(&env, id);
    assert_eq!(after["events"].as_array().unwrap().len(), events, "{after}");
    assert_eq!(after["messages"].as_array().unwrap().len(), messages, "{after}");
    assert_eq!(after["status"], "completed");
}

#[test]
fn a_task_for_an_offline_worker_waits_queued_is_published_once_and_fails_at_its_ttl_with_exit_48() {
    let server = NatsServer::start();
    let (env, _m) = env_for(&server, "task_ttl = \"3s\"\nmax_concurrent = 1");
    let w = Worker::connect(&server);
    let run = env.run(&["run", "oppy", "nobody takes this", "--json"]).ok();
    let id = task_id(&run);
    assert_eq!(run.json()["status"], "queued", "{run}");
    let reason = run.json()["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("waiting for worker w1") && reason.contains("3s"), "{reason}");
    // Handed to the broker: it holds the host's one slot (a second task waits behind it,
    // unsent), and neither sync nor the dispatcher publishes it again.
    let second = env.run(&["run", "oppy", "behind the cap", "--json"]).ok();
    assert_eq!(second.json()["status"], "queued", "{second}");
    assert!(second.json()["reason"].as_str().unwrap_or("").is_empty(), "{second}");
    env.run(&["sync"]).ok();
    env.run(&["dispatch", "--once"]).ok();
    assert_eq!(w.tasks_stored(), 1, "the first task's message only, once");
    let shown = show(&env, id);
    assert_eq!(shown["runs"][0]["evidence"]["nats"]["msg_id"].as_str().unwrap().split('.').count(), 2, "{shown}");

    std::thread::sleep(Duration::from_secs(4));
    let waited = env.run(&["wait", &id.to_string(), "--timeout", "30s", "--json"]).fails_with(48);
    let t = &waited.json()["tasks"][0];
    assert_eq!(t["status"], "failed", "{waited}");
    assert!(t["reason"].as_str().unwrap().contains("no worker took the task within its task_ttl"), "{waited}");
    // Its slot freed: the task behind it was handed over now, once.
    let second_id = task_id(&second);
    let s = env.run(&["show", &second_id.to_string(), "--json", "--no-sync"]).ok().json();
    assert_eq!(s["status"], "queued");
    assert!(s["reason"].as_str().unwrap().contains("waiting for worker"), "{s}");
    assert_eq!(w.tasks_stored(), 2);
}

#[test]
fn results_published_while_the_lead_was_offline_are_picked_up_by_the_next_command_once() {
    let server = NatsServer::start();
    let (env, m) = env_for(&server, "launch_wait = \"1s\"");
    let run = env.run(&["run", "oppy", "@self-test sleep 4\ndone while the lead is away", "--json"]).ok();
    let id = task_id(&run);
    assert_eq!(run.json()["status"], "queued", "{run}");
    // A message to the task while it waits is kept, and sent once it runs.
    env.run(&["say", &id.to_string(), "kept for later"]).ok();
    // The worker comes online with no lead process running: takes, launches, finishes.
    let w = Worker::connect(&server);
    let msg = w.take().expect("the task waited in the stream");
    let instance = "box-b";
    w.respond(wire::exec_subject(WORKER, Some(instance)), m.dir.clone());
    w.result(&msg.mailbox, &launched(&msg, instance, m.run(&wire::unb64(&msg.script).unwrap())));
    env.run(&["sync"]).ok();
    let inbox = std::fs::read_to_string(m.root().join("tasks").join(&msg.task_key).join("inbox.jsonl")).unwrap();
    assert!(inbox.contains("kept for later"), "{inbox}");
    sync_until_done(&w, &m, &msg.mailbox, &msg, instance);
    // The next command reads it all.
    let status = env.run(&["show", &id.to_string(), "--json"]).ok();
    assert_eq!(status.json()["status"], "completed", "{status}");
    let first = show(&env, id);
    assert_eq!(first["runs"][0]["evidence"]["nats"]["instance"], instance, "{first}");
    let counts =
        |v: &serde_json::Value| (v["events"].as_array().unwrap().len(), v["messages"].as_array().unwrap().len());
    env.run(&["sync"]).ok();
    assert_eq!(counts(&show(&env, id)), counts(&first), "read once");
    // The mailbox stored where it stopped: the last result in the stream.
    let conn = rusqlite::Connection::open(env.data.join("mailbox.db")).unwrap();
    let cursor: i64 = conn.query_row("SELECT nats_seq FROM host_syncs WHERE host = 'nb'", [], |r| r.get(0)).unwrap();
    let last = w.rt.block_on(async {
        let mut s = w.js.get_stream(wire::RESULTS_STREAM).await.unwrap();
        s.info().await.unwrap().state.last_sequence
    });
    assert_eq!(cursor as u64, last);
}

#[test]
fn a_hostile_worker_s_results_are_refused_or_bounded() {
    let server = NatsServer::start();
    let (env, m) = env_for(&server, "launch_wait = \"1s\"");
    let run = env.run(&["run", "oppy", "@self-test sleep 2\nwork", "--json"]).ok();
    let id = task_id(&run);
    let w = Worker::connect(&server);
    let msg = w.take().unwrap();
    let mailbox = msg.mailbox.clone();
    let reply = m.run(&wire::unb64(&msg.script).unwrap());

    // A launched result with another nonce, one for another mailbox, garbage, a result of
    // another wire version: none of them launches the task.
    let mut spoofed = msg.clone();
    spoofed.nonce = "0".repeat(32);
    w.result(&mailbox, &launched(&spoofed, "box", reply.clone()));
    w.result("ffffff", &launched(&msg, "box", reply.clone()));
    w.publish(&mailbox, b"{not json".to_vec());
    let mut other_version = serde_json::to_value(launched(&msg, "box", reply.clone())).unwrap();
    other_version["v"] = 99.into();
    w.publish(&mailbox, serde_json::to_vec(&other_version).unwrap());
    // A replica name that is no subject token is refused too.
    w.result(&mailbox, &launched(&msg, "box.>", reply.clone()));
    let synced = env.run(&["sync", "--json"]).ok();
    assert_eq!(show(&env, id)["status"], "queued", "{synced}");
    assert!(synced.stdout().contains("skipped_results"), "{synced}");

    // The real one launches it.
    w.result(&mailbox, &launched(&msg, "box", reply));
    env.run(&["sync"]).ok();
    assert_eq!(show(&env, id)["status"], "launched", "{}", show(&env, id));

    // A sync result whose stdout is not base64, and one from another replica: ignored. A
    // sync that starts past what the lead has (a gap): applied from there, the gap an event.
    let sync = |instance: &str, offsets: BTreeMap<String, u64>, stdout: String| ResultMessage::Sync {
        v: wire::WIRE_VERSION,
        task_key: msg.task_key.clone(),
        instance: instance.into(),
        offsets,
        stdout,
    };
    w.result(&mailbox, &sync("box", BTreeMap::new(), "@@@".into()));
    let (stdout, _) = m.sync(&msg.task_key, &msg.session, &BTreeMap::new());
    w.result(&mailbox, &sync("other-box", BTreeMap::new(), wire::b64(&stdout)));
    env.run(&["sync"]).ok();
    assert!(show(&env, id)["messages"].as_array().unwrap().iter().all(|x| x["author"] != "oppy"), "nothing applied");
    for _ in 0..100 {
        if m.finished(&msg.task_key) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let skip = BTreeMap::from([("outbox.jsonl".to_string(), 5u64)]);
    let (stdout, _) = m.sync(&msg.task_key, &msg.session, &skip);
    w.result(&mailbox, &sync("box", skip, wire::b64(&stdout)));
    env.run(&["sync"]).ok();
    let after = show(&env, id);
    let gap: Vec<&serde_json::Value> =
        after["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "gap").collect();
    assert_eq!(gap.len(), 1, "{after}");
    assert!(gap[0]["summary"].as_str().unwrap().contains("bytes 0..5 of outbox.jsonl"), "{after}");
    assert_eq!(after["status"], "completed", "{after}");
}

#[test]
fn nats_errors_name_the_problem_and_the_fix() {
    let mut server = NatsServer::start();
    // Credentials in the URL: refused at load, the secret not repeated.
    let (env, _m) = env_for(&server, "");
    env.config_replace("url = \"nats://127.0.0.1", "url = \"nats://lead:s3cret@127.0.0.1");
    let bad = env.run(&["run", "oppy", "x"]).fails_with(3);
    assert!(bad.stderr().contains("creds") && !bad.stderr().contains("s3cret"), "{bad}");
    env.config_replace("nats://lead:s3cret@127.0.0.1", "nats://127.0.0.1");

    // The server down: the launch fails certain (nothing was stored), exit 49.
    server.stop();
    let down = env.run(&["run", "oppy", "x", "--json"]).fails_with(49);
    assert!(down.stderr().contains("NATS server of nb"), "{down}");
    server.start_again();
}

#[test]
fn say_to_a_running_nats_task_without_its_worker_exits_48_naming_the_worker() {
    let server = NatsServer::start();
    let (env, m) = env_for(&server, "");
    let w = Worker::connect(&server);
    let (msg, run) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let msg = (0..100).find_map(|_| {
                w.take().or_else(|| {
                    std::thread::sleep(Duration::from_millis(100));
                    None
                })
            });
            let msg = msg.unwrap();
            w.result(&msg.mailbox, &launched(&msg, "gone-box", m.run(&wire::unb64(&msg.script).unwrap())));
            msg
        });
        let run = env.run(&["run", "oppy", "@self-test sleep 20\nx", "--json"]).ok();
        (h.join().unwrap(), run)
    });
    let id = task_id(&run);
    assert_eq!(run.json()["status"], "launched", "{run}");
    let say = env.run(&["say", &id.to_string(), "hello"]).fails_with(48);
    assert!(say.stderr().contains("worker w1 (replica gone-box") && say.stderr().contains("delegate worker"), "{say}");
    drop(msg);
}

#[test]
fn credentials_come_from_the_creds_file_and_never_reach_the_mailbox_or_output() {
    let server = NatsServer::builder().config("authorization {\n  user: lead\n  password: \"s3cretpw-77\"\n}").start();
    let (env, _m) = env_for(&server, "launch_wait = \"1s\"");
    let creds = env.home.join("lead.creds");
    std::fs::write(&creds, "lead:wrong-password\n").unwrap();
    env.config_replace("worker_id = ", &format!("creds = \"{}\"\nworker_id = ", creds.display()));
    // Refused credentials: exit 49, nothing stored on the server.
    let refused = env.run(&["run", "oppy", "x", "--json"]).fails_with(49);
    assert!(!refused.stderr().contains("wrong-password"), "{refused}");
    std::fs::write(&creds, "lead:s3cretpw-77\n").unwrap();
    let run = env.run(&["run", "oppy", "with the right credentials", "--json"]).ok();
    assert_eq!(run.json()["status"], "queued", "{run}");
    let shown = env.run(&["show", "2", "--json", "--all"]).ok();
    let db = std::fs::read(env.data.join("mailbox.db")).unwrap();
    for text in [shown.stdout(), shown.stderr(), run.stdout(), run.stderr(), String::from_utf8_lossy(&db).into_owned()]
    {
        assert!(!text.contains("s3cretpw-77") && !text.contains("wrong-password"), "a credential leaked: {text:.400}");
    }
}

#[test]
fn doctor_checks_a_nats_host_from_the_lead_s_side_of_the_server() {
    let mut server = NatsServer::start();
    let (env, _m) = env_for(&server, "launch_wait = \"1s\"");
    let finding = |run: &crate::support::Run, check: &str| -> serde_json::Value {
        let reports = run.json();
        let f = reports[0]["findings"].as_array().unwrap().iter().find(|f| f["check"] == check).cloned();
        f.unwrap_or_else(|| panic!("no {check} finding in {run}"))
    };
    // A task published, but no worker ever connected: it cannot launch, and says how to fix it.
    env.run(&["run", "oppy", "x", "--json"]).ok();
    let never = env.run(&["doctor", "--json"]).fails_with(32);
    assert_eq!(finding(&never, "nats_server")["status"], "ok", "{never}");
    assert_eq!(finding(&never, "nats_streams")["status"], "ok", "{never}");
    let worker = finding(&never, "nats_worker");
    assert_eq!(worker["status"], "fail", "{never}");
    assert!(worker["fix"].as_str().unwrap().contains("delegate worker --nats"), "{never}");

    // A worker pulling right now (a pull request waiting at the server): ok.
    let w = Worker::connect(&server);
    let msg = w.take().unwrap();
    assert_eq!(msg.task, 1);
    let pulling = std::thread::scope(|s| {
        s.spawn(|| w.take());
        std::thread::sleep(Duration::from_millis(500));
        env.run(&["doctor", "--json"])
    });
    let worker = finding(&pulling, "nats_worker");
    assert_eq!(worker["status"], "ok", "{pulling}");
    assert!(worker["detail"].as_str().unwrap().contains("is pulling now"), "{pulling}");

    // The server down: a clear failure naming it.
    server.stop();
    let down = env.run(&["doctor", "--json"]).fails_with(32);
    assert_eq!(finding(&down, "nats_server")["status"], "fail", "{down}");
}

#[test]
fn cancel_reaches_a_running_nats_task_through_the_server() {
    let server = NatsServer::start();
    let (env, m) = env_for(&server, "");
    let w = Worker::connect(&server);
    let instance = "box-c";
    w.respond(wire::exec_subject(WORKER, Some(instance)), m.dir.clone());
    let (msg, run) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let msg = (0..100)
                .find_map(|_| {
                    w.take().or_else(|| {
                        std::thread::sleep(Duration::from_millis(100));
                        None
                    })
                })
                .unwrap();
            w.result(&msg.mailbox, &launched(&msg, instance, m.run(&wire::unb64(&msg.script).unwrap())));
            msg
        });
        let run = env.run(&["run", "oppy", "@self-test sleep 60\nlong work", "--json"]).ok();
        (h.join().unwrap(), run)
    });
    let id = task_id(&run);
    assert_eq!(run.json()["status"], "launched", "{run}");
    let cancelled = env.run(&["cancel", &id.to_string(), "--json"]).ok();
    // The session is gone on the worker's machine, stopped by the cancel script it ran.
    let alive = Command::new("tmux")
        .args(["-L", "delegate", "has-session", "-t", &msg.session])
        .env("TMUX_TMPDIR", m.dir.join("tmux"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!alive.success(), "the agent still runs after cancel:\n{cancelled}");
    sync_until_done(&w, &m, &msg.mailbox, &msg, instance);
    let t = env.run(&["show", &id.to_string(), "--json"]).ok().json();
    assert_eq!(t["status"], "cancelled", "{t}");
}

#[test]
fn a_task_cancelled_while_it_waited_for_a_worker_is_stopped_if_a_worker_launches_it_anyway() {
    let server = NatsServer::start();
    let (env, m) = env_for(&server, "launch_wait = \"1s\"");
    let run = env.run(&["run", "oppy", "@self-test sleep 60\nnot wanted any more", "--json"]).ok();
    let id = task_id(&run);
    assert_eq!(run.json()["status"], "queued", "{run}");
    env.run(&["cancel", &id.to_string()]).ok();
    // A worker comes online later and takes the message still in the stream.
    let w = Worker::connect(&server);
    let instance = "box-late";
    w.respond(wire::exec_subject(WORKER, Some(instance)), m.dir.clone());
    let msg = w.take().unwrap();
    w.result(&msg.mailbox, &launched(&msg, instance, m.run(&wire::unb64(&msg.script).unwrap())));
    let alive = || {
        Command::new("tmux")
            .args(["-L", "delegate", "has-session", "-t", &msg.session])
            .env("TMUX_TMPDIR", m.dir.join("tmux"))
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(alive(), "the late launch started the agent");
    env.run(&["sync"]).ok();
    assert!(!alive(), "the lead stopped the agent of a cancelled task");
    assert_eq!(show(&env, id)["status"], "cancelled");
}
