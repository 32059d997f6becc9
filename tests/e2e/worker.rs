//! `delegate worker` against a real nats-server with JetStream: the worker runs as the
//! brother user (like sshd would run the scripts), with the fake host's PATH, tmux and
//! remote root; the test plays the lead: it renders launch scripts exactly as a lead does,
//! publishes task messages, and reads the result stream.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use delegate_core::remote::protocol::parse_sync;
use delegate_core::transport::nats::wire::{self, ExecReply, ExecRequest, ResultMessage, TaskMessage};
use delegate_core::{Delegate, Paths};
use delegate_testkit::FakeHost;
use delegate_testkit::nats::NatsServer;

use crate::support::{Env, install_agent};

pub(crate) const WORKER: &str = "w1";

/// A custom agent that runs until stopped (installed with `install_agent` as dlg-sleeper).
const SLEEPER: &str = "[agents.sleeper]\ncommand = [\"dlg-sleeper\"]\n";

/// The test's side of the server: publishes tasks and reads results like a lead.
struct Bus {
    rt: tokio::runtime::Runtime,
    client: async_nats::Client,
    js: jetstream::Context,
}

impl Bus {
    fn new(url: &str, creds: Option<&Path>) -> Bus {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (client, js) = rt.block_on(async {
            let client = delegate_core::transport::nats::connect::connect(url, creds).await.unwrap();
            let js = jetstream::new(client.clone());
            delegate_core::transport::nats::connect::ensure_streams(&js, url).await.unwrap();
            (client, js)
        });
        Bus { rt, client, js }
    }

    fn publish_raw(&self, worker: &str, body: Vec<u8>, msg_id: &str) {
        self.rt.block_on(async {
            let publish = jetstream::message::PublishMessage::build().payload(body.into()).message_id(msg_id);
            self.js.send_publish(wire::task_subject(worker), publish).await.unwrap().await.unwrap();
        });
    }

    fn publish_task(&self, t: &TaskMessage) {
        self.publish_raw(WORKER, serde_json::to_vec(t).unwrap(), &format!("{}.{}", t.task_key, t.nonce));
    }

    /// Every result published so far for `mailbox`, in stream order.
    /// Every result so far, read by stream sequence (`None` while the server is away).
    fn try_results(&self, mailbox: &str) -> Option<Vec<ResultMessage>> {
        self.rt.block_on(async {
            let stream = self.js.get_stream(wire::RESULTS_STREAM).await.ok()?;
            let last = stream.cached_info().state.last_sequence;
            let subject = wire::results_subject(mailbox, WORKER);
            let mut out = Vec::new();
            for seq in 1..=last {
                match stream.get_raw_message(seq).await {
                    Ok(m) if m.subject.as_str() == subject => out.push(serde_json::from_slice(&m.payload).unwrap()),
                    Ok(_) => {}
                    // Gone (deleted) sequences are skipped; anything else is the server away.
                    Err(e) if e.to_string().contains("no message found") => {}
                    Err(_) => return None,
                }
            }
            Some(out)
        })
    }

    /// Waits (generously) until the results satisfy `done`.
    fn wait_results(&self, mailbox: &str, what: &str, done: impl Fn(&[ResultMessage]) -> bool) -> Vec<ResultMessage> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = self.try_results(mailbox).unwrap_or_default();
            if done(&r) {
                return r;
            }
            assert!(Instant::now() < deadline, "no {what} within 120 s; results so far: {r:#?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The worker consumer's counters: (pending, ack pending, redelivered).
    fn consumer_counts(&self) -> (u64, usize, usize) {
        self.rt.block_on(async {
            let stream = self.js.get_stream(wire::TASKS_STREAM).await.unwrap();
            let mut c: consumer::PullConsumer = stream.get_consumer(&wire::consumer_name(WORKER)).await.unwrap();
            let info = c.info().await.unwrap();
            (info.num_pending, info.num_ack_pending, info.num_redelivered)
        })
    }

    fn tasks_in_stream(&self) -> u64 {
        self.rt.block_on(async {
            let mut s = self.js.get_stream(wire::TASKS_STREAM).await.unwrap();
            s.info().await.unwrap().state.messages
        })
    }

    fn exec(&self, subject: &str, script: &[u8]) -> ExecReply {
        self.rt.block_on(async {
            let req = ExecRequest { v: wire::WIRE_VERSION, script: wire::b64(script), limit_ms: 30_000 };
            let reply = tokio::time::timeout(
                Duration::from_secs(60),
                self.client.request(subject.to_string(), serde_json::to_vec(&req).unwrap().into()),
            )
            .await
            .expect("an exec reply within 60 s")
            .unwrap();
            serde_json::from_slice(&reply.payload).unwrap()
        })
    }
}

/// A `delegate worker` process run as the brother user with the fake host's environment.
pub(crate) struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    pub(crate) fn start(host: &FakeHost, url: &str, extra: &[&str], name: &str) -> Worker {
        let log = host.dir().join(format!("worker-{name}.log"));
        let mut args: Vec<String> = vec![
            format!("HOME={}", host.home().display()),
            format!("PATH={}", host.remote_path()),
            format!("TMUX_TMPDIR={}", host.tmux_tmpdir().display()),
            format!("USER={}", host.user()),
            format!("LOGNAME={}", host.user()),
            env!("CARGO_BIN_EXE_delegate").into(),
            "worker".into(),
            "--nats".into(),
            url.into(),
            "--id".into(),
            WORKER.into(),
            "--remote-root".into(),
            host.remote_root().display().to_string(),
            "--instance".into(),
            name.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = if unsafe { libc::geteuid() } == 0 {
            let mut c = Command::new("runuser");
            c.args(["-u", host.user(), "--", "env", "-i"]);
            c
        } else {
            let mut c = Command::new("env");
            c.arg("-i");
            c
        };
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd.args(&args).stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap();
        let w = Worker { child, log };
        w.wait_log("connected to");
        w
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log().contains(needle) {
            assert!(Instant::now() < deadline, "worker log never said {needle:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `delegate worker` process itself (runuser's child when run as root).
    fn worker_pid(&self) -> i32 {
        let root = self.child.id() as i32;
        std::iter::once(root)
            .chain(delegate_testkit::descendants_of(root))
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    c.split(|b| *b == 0).any(|a| a == b"worker")
                        && c.starts_with(env!("CARGO_BIN_EXE_delegate").as_bytes())
                })
            })
            .expect("the worker process")
    }

    /// SIGKILL, as a crash: no goodbye, nothing cleaned up.
    pub(crate) fn crash(&mut self) {
        let pid = self.worker_pid();
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(pid) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.worker_pid())) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- worker log {}\n{}", self.log.display(), self.log());
        }
    }
}

/// The lead: an inventory with brother "oppy" on the fake host (its remote root) and a
/// mailbox, to render launch scripts exactly as a launch does.
fn lead(host: &FakeHost, agent: &str) -> (Env, Delegate) {
    lead_with(host, agent, "")
}

/// [`lead`] with more inventory (custom agents).
fn lead_with(host: &FakeHost, agent: &str, extra: &str) -> (Env, Delegate) {
    let env = Env::with_brother(host, agent, "full");
    // sshd's PATH (the kit's bin directory first), as the worker has.
    env.config_append("environment = \"plain\"\n");
    env.config_append(extra);
    let d = open_lead(&env);
    (env, d)
}

fn open_lead(env: &Env) -> Delegate {
    Delegate::open(Paths {
        config_file: env.config.clone(),
        data_dir: env.data.clone(),
        ssh_config: env.home.join(".ssh/config"),
        home: env.home.clone(),
        local_user: "tester".into(),
        agent_socket: None,
    })
    .unwrap()
}

fn task_message(d: &Delegate, task: i64, prompt: &str) -> TaskMessage {
    let r = delegate_core::ops::launch::render_launch_script(d, "oppy", task, prompt.as_bytes()).unwrap();
    TaskMessage {
        v: wire::WIRE_VERSION,
        kind: wire::LAUNCH_KIND.into(),
        mailbox: d.store().mailbox_id().to_string(),
        task,
        run_no: 1,
        task_key: r.task_key,
        nonce: r.nonce,
        session: r.session,
        script: wire::b64(&r.script_with_helpers),
        created_at: "2026-01-01T00:00:00Z".into(),
        expires_at: None,
    }
}

fn launched<'a>(results: &'a [ResultMessage], key: &str) -> Vec<&'a ExecReply> {
    results
        .iter()
        .filter_map(|r| match r {
            ResultMessage::Launched { task_key, exec, .. } if task_key == key => Some(exec),
            _ => None,
        })
        .collect()
}

fn stdout(e: &ExecReply) -> String {
    String::from_utf8(wire::unb64(&e.stdout).unwrap()).unwrap()
}

/// What a lead would hold after applying every sync result for `key` in order, keeping
/// only bytes past its own offsets. Panics on a gap (bytes skipped). Also gives how many
/// results carried only bytes it already had.
fn applied(results: &[ResultMessage], key: &str) -> (BTreeMap<String, Vec<u8>>, usize) {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut repeats = 0;
    for r in results {
        let ResultMessage::Sync { task_key, stdout, .. } = r else { continue };
        if task_key != key {
            continue;
        }
        let reply = parse_sync(&wire::unb64(stdout).unwrap()).unwrap();
        let mut new = false;
        for d in &reply.tasks[0].deltas {
            let have = files.entry(d.file.clone()).or_default();
            assert!(
                d.offset <= have.len() as u64,
                "{}: bytes {}..{} were skipped; results: {:?}",
                d.file,
                have.len(),
                d.offset,
                sync_offsets(results, key)
            );
            let skip = (have.len() as u64 - d.offset) as usize;
            if d.bytes.len() > skip {
                have.extend_from_slice(&d.bytes[skip..]);
                new = true;
            }
        }
        repeats += usize::from(!new && !reply.tasks[0].deltas.is_empty());
    }
    (files, repeats)
}

/// (offsets the worker said it read from, deltas as (file, offset, len)) of each sync result.
fn sync_offsets(results: &[ResultMessage], key: &str) -> Vec<String> {
    results
        .iter()
        .filter_map(|r| match r {
            ResultMessage::Sync { task_key, stdout, offsets, .. } if task_key == key => {
                let reply = parse_sync(&wire::unb64(stdout).unwrap()).unwrap();
                let d: Vec<_> =
                    reply.tasks[0].deltas.iter().map(|d| (d.file.clone(), d.offset, d.bytes.len())).collect();
                Some(format!("{offsets:?} {d:?}"))
            }
            _ => None,
        })
        .collect()
}

fn task_dir(host: &FakeHost, key: &str) -> PathBuf {
    host.remote_root().join("tasks").join(key)
}

/// Waits until the task's exit record was published and the result stream holds every
/// byte of its files as they are on the brother.
fn wait_for_whole_task(bus: &Bus, mailbox: &str, host: &FakeHost, key: &str) -> Vec<ResultMessage> {
    let dir = task_dir(host, key);
    bus.wait_results(mailbox, "exit record with every byte", |r| {
        let (files, _) = applied(r, key);
        files.get("exit").is_some_and(|e| !e.is_empty())
            && ["stream.jsonl", "events.jsonl", "outbox.jsonl", "state", "exit"]
                .iter()
                .all(|f| files.get(*f).cloned().unwrap_or_default() == std::fs::read(dir.join(f)).unwrap_or_default())
    })
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "{what} did not happen within 120 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sessions(host: &FakeHost) -> Vec<String> {
    let out = host.tmux(&["list-sessions", "-F", "#{session_name}"]);
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// The worker's state file (tasks it still watches).
fn watched(host: &FakeHost) -> serde_json::Value {
    let path = host.remote_root().join("workers").join(WORKER).join("tasks.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_worker_launches_a_task_reports_it_to_its_exit_and_acks_it() {
    let host = FakeHost::start();
    // The worker logs in with user:password from a file; the password is nowhere else.
    let secret = "pw-canary-5d1e7a";
    let server =
        NatsServer::builder().config(&format!("authorization {{\n  user: w1\n  password: {secret}\n}}\n")).start();
    let creds = host.remote_root().join("nats.creds");
    std::fs::write(&creds, format!("w1:{secret}\n")).unwrap();
    std::os::unix::fs::chown(&creds, Some(host.uid()), None).unwrap();
    let bus = Bus::new(&server.url(), Some(&creds));
    let (_env, d) = lead(&host, "self-test");
    let mailbox = d.store().mailbox_id().to_string();
    let worker = Worker::start(&host, &server.url(), &["--creds", creds.to_str().unwrap()], "a");

    let t = task_message(&d, 7, "review the training config");
    bus.publish_task(&t);
    let results = wait_for_whole_task(&bus, &mailbox, &host, &t.task_key);

    // The launch result is the launch script's reply: marker with the nonce, evidence.
    let l = launched(&results, &t.task_key);
    assert_eq!(l.len(), 1, "{results:#?}");
    let out =
        delegate_core::remote::parse_output(&wire::unb64(&l[0].stdout).unwrap(), &wire::unb64(&l[0].stderr).unwrap());
    assert_eq!(out.marker.as_ref().map(|m| m.nonce.as_str()), Some(t.nonce.as_str()), "{}", stdout(l[0]));
    let evidence = out.evidence.unwrap();
    assert_eq!(evidence["nonce"], t.nonce.as_str());
    assert!(evidence.to_string().contains("delegate-self-test 1"), "{evidence}");
    assert!(matches!(&results[0], ResultMessage::Launched { instance, .. } if instance == "a"));
    // Acked: the work queue is empty and nothing waits for an ack or was redelivered.
    assert_eq!(bus.tasks_in_stream(), 0);
    assert_eq!(bus.consumer_counts(), (0, 0, 0));
    let exit = std::fs::read_to_string(task_dir(&host, &t.task_key).join("exit")).unwrap();
    assert!(exit.starts_with("0 "), "{exit}");

    // Finished: no longer watched; the state file is the worker user's alone.
    wait_until("the task to leave the worker's state", || watched(&host)["tasks"].as_object().unwrap().is_empty());
    let meta = std::fs::metadata(host.remote_root().join("workers").join(WORKER).join("tasks.json")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o600);

    // The credentials are in no argv and no log.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", worker.worker_pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(secret));
    assert!(String::from_utf8_lossy(&cmdline).contains(creds.to_str().unwrap()));
    assert!(!worker.log().contains(secret), "{}", worker.log());
    assert!(!server.log().contains(secret));
}

#[test]
fn a_url_with_credentials_or_an_unreachable_server_is_refused_with_its_exit_code() {
    let host = FakeHost::start();
    let env = Env::new();
    let run = env.run(&[
        "worker",
        "--nats",
        "nats://u:hunter2@127.0.0.1:4222",
        "--id",
        "w1",
        "--remote-root",
        env.home.join("r").to_str().unwrap(),
    ]);
    let run = run.fails_with(3);
    assert!(run.stderr().contains("--creds") && !run.stderr().contains("hunter2"), "{run}");
    let port = delegate_testkit::closed_port();
    let run = env
        .run(&[
            "worker",
            "--nats",
            &format!("nats://127.0.0.1:{port}"),
            "--id",
            "w1",
            "--remote-root",
            env.home.join("r").to_str().unwrap(),
        ])
        .fails_with(49);
    assert!(run.stderr().contains("cannot connect to the NATS server"), "{run}");
    let run = env
        .run(&[
            "worker",
            "--nats",
            "nats://127.0.0.1:1",
            "--id",
            "w.>",
            "--remote-root",
            env.home.join("r").to_str().unwrap(),
        ])
        .fails_with(3);
    assert!(run.stderr().contains("subject token"), "{run}");
    drop(host);
}

#[test]
fn invalid_and_oversized_task_messages_are_terminated_with_a_reason() {
    let host = FakeHost::start();
    let server = NatsServer::builder().config("max_payload: 4MB\n").start();
    let bus = Bus::new(&server.url(), None);
    let (_env, d) = lead(&host, "self-test");
    let mailbox = d.store().mailbox_id().to_string();
    let _worker = Worker::start(&host, &server.url(), &[], "a");

    let good = task_message(&d, 1, "x");
    let mut other_version = serde_json::to_value(&good).unwrap();
    other_version["v"] = 2.into();
    let mut missing = serde_json::to_value(&good).unwrap();
    missing.as_object_mut().unwrap().remove("nonce");
    // A script of its own, dressed as a task: it would leave a mark if it ever ran.
    let mark = host.dir().join("ran");
    let mut foreign = good.clone();
    foreign.task_key = format!("{mailbox}-2");
    foreign.script = wire::b64(format!("touch {}\n", mark.display()).as_bytes());
    let mut big = serde_json::to_value(&good).unwrap();
    big["task_key"] = format!("{mailbox}-3").into();
    big["pad"] = "x".repeat(wire::MAX_TASK_MESSAGE).into();
    let mut expired = task_message(&d, 4, "y");
    expired.expires_at = Some("2020-01-01T00:00:00Z".into());

    bus.publish_raw(WORKER, b"not json {".to_vec(), "bad-1");
    bus.publish_raw(WORKER, serde_json::to_vec(&other_version).unwrap(), "bad-2");
    bus.publish_raw(WORKER, serde_json::to_vec(&missing).unwrap(), "bad-3");
    bus.publish_raw(WORKER, serde_json::to_vec(&foreign).unwrap(), "bad-4");
    bus.publish_raw(WORKER, serde_json::to_vec(&big).unwrap(), "bad-5");
    bus.publish_task(&expired);

    let refused = |r: &[ResultMessage]| -> Vec<(Option<String>, String)> {
        r.iter()
            .filter_map(|m| match m {
                ResultMessage::Refused { task_key, reason, .. } => Some((task_key.clone(), reason.clone())),
                _ => None,
            })
            .collect()
    };
    // The mailbox named in the message gets the refusal; one that could not be read goes to
    // the unknown mailbox.
    let named = bus.wait_results(&mailbox, "five refusals", |r| refused(r).len() == 5);
    let unknown = bus.wait_results("_unknown", "one refusal", |r| refused(r).len() == 1);
    assert!(refused(&unknown)[0].1.contains("not JSON"), "{unknown:?}");
    let reasons = refused(&named);
    assert!(reasons[0].1.contains("version 2"), "{reasons:?}");
    assert!(reasons[1].1.contains("nonce"), "{reasons:?}");
    assert_eq!(reasons[2].0.as_deref(), Some(foreign.task_key.as_str()));
    assert!(reasons[2].1.contains("not one of this delegate's scripts"), "{reasons:?}");
    assert!(reasons[3].1.contains("over the limit"), "{reasons:?}");
    assert!(reasons[4].1.contains("expired"), "{reasons:?}");
    // Terminated, not left for redelivery; nothing ran.
    wait_until("every message to be settled", || bus.consumer_counts() == (0, 0, 0));
    assert_eq!(bus.tasks_in_stream(), 0);
    assert!(!mark.exists());
    assert!(!task_dir(&host, &expired.task_key).exists());
    assert!(sessions(&host).is_empty());
}

#[test]
fn exec_requests_run_delegates_scripts_and_refuse_anything_else() {
    let host = FakeHost::start();
    let server = NatsServer::start();
    let bus = Bus::new(&server.url(), None);
    install_agent(&host, "dlg-sleeper", "#!/bin/bash\ncat >/dev/null\nsleep 600\n");
    let (_env, d) = lead_with(&host, "sleeper", SLEEPER);
    let mailbox = d.store().mailbox_id().to_string();
    let _worker = Worker::start(&host, &server.url(), &[], "a");
    let t = task_message(&d, 1, "sleep");
    bus.publish_task(&t);
    bus.wait_results(&mailbox, "launch", |r| !launched(r, &t.task_key).is_empty());
    assert_eq!(sessions(&host), std::slice::from_ref(&t.session));

    // A foreign script is refused and does not run, on either subject.
    let mark = host.dir().join("ran");
    for subject in [wire::exec_subject(WORKER, None), wire::exec_subject(WORKER, Some("a"))] {
        let reply = bus.exec(&subject, format!("touch {}\n", mark.display()).as_bytes());
        assert!(reply.broken.as_deref().unwrap_or("").contains("refused"), "{reply:?}");
        assert_eq!(reply.exit, None);
    }
    // So is a launch script: launches come only through the task stream.
    let again = task_message(&d, 2, "again");
    let reply = bus.exec(&wire::exec_subject(WORKER, None), &wire::unb64(&again.script).unwrap());
    assert!(reply.broken.as_deref().unwrap_or("").contains("task stream"), "{reply:?}");
    assert!(!mark.exists());
    assert!(!task_dir(&host, &again.task_key).exists());

    // The cancel script, sent to the instance that ran the task, stops its agent.
    let root = host.remote_root().display().to_string();
    let cancel = delegate_core::remote::protocol::render_cancel(&root, &t.task_key, &t.session).unwrap();
    let reply = bus.exec(&wire::exec_subject(WORKER, Some("a")), &cancel);
    assert_eq!(reply.exit, Some(0), "{reply:?}");
    assert!(
        delegate_core::remote::protocol::parse_cancel(&wire::unb64(&reply.stdout).unwrap()).is_some(),
        "{}",
        stdout(&reply)
    );
    wait_until("the session to end", || sessions(&host).is_empty());
}

/// An agent that counts its starts in the workdir and writes `lines` lines, one every
/// 0.1 s, on its stdout (the task's stream.jsonl).
fn counting_agent(host: &FakeHost, lines: u32) {
    install_agent(
        host,
        "dlg-counter",
        &format!(
            "#!/bin/bash\ncat >/dev/null\necho start >>'{}/agent-starts'\nfor i in $(seq {lines}); do echo \"{{\\\"line\\\":$i}}\"; sleep 0.1; done\n",
            host.workdir().display()
        ),
    );
}

const COUNTER: &str = "[agents.counter]\ncommand = [\"dlg-counter\"]\n";

fn agent_starts(host: &FakeHost) -> usize {
    std::fs::read_to_string(host.workdir().join("agent-starts")).unwrap_or_default().lines().count()
}

/// Holds every launch script at its `tmux new-session` (before the session starts) until
/// `<workdir>/go` exists; `<workdir>/reached` says one got there.
fn gate_tmux(host: &FakeHost) {
    let gate = host.workdir();
    let real =
        ["/usr/bin/tmux", "/bin/tmux", "/usr/local/bin/tmux"].into_iter().find(|p| Path::new(p).exists()).unwrap();
    install_agent(
        host,
        "tmux",
        &format!(
            "#!/bin/bash\nif [[ \" $* \" == *\" new-session \"* ]]; then\n  : >'{g}/reached'\n  for _ in $(seq 1200); do [ -e '{g}/go' ] && break; sleep 0.1; done\nfi\nexec {real} \"$@\"\n",
            g = gate.display()
        ),
    );
}

#[test]
fn a_worker_killed_mid_launch_has_the_task_redelivered_and_one_agent_runs() {
    let host = FakeHost::start();
    let server = NatsServer::start();
    let bus = Bus::new(&server.url(), None);
    counting_agent(&host, 5);
    gate_tmux(&host);
    let (_env, d) = lead_with(&host, "counter", COUNTER);
    let mailbox = d.store().mailbox_id().to_string();
    let mut first = Worker::start(&host, &server.url(), &["--ack-wait", "2s"], "a");
    let t = task_message(&d, 1, "count");
    bus.publish_task(&t);
    wait_until("the launch script to reach tmux", || host.workdir().join("reached").exists());
    first.crash();
    // Its launch script is still held at the gate; the message was never acked.
    std::fs::remove_file(host.workdir().join("reached")).unwrap();
    let second = Worker::start(&host, &server.url(), &["--ack-wait", "2s"], "a");
    second.wait_log("(delivery 2)");
    std::fs::write(host.workdir().join("go"), "").unwrap();

    let results = wait_for_whole_task(&bus, &mailbox, &host, &t.task_key);
    let l = launched(&results, &t.task_key);
    assert!(!l.is_empty() && l.len() <= 2, "{results:#?}");
    for e in &l {
        assert!(stdout(e).contains(&format!("DELEGATE-LAUNCHED {} {}", t.nonce, t.session)), "{e:?}");
    }
    assert_eq!(agent_starts(&host), 1);
    assert_eq!(bus.tasks_in_stream(), 0);
    let (pending, ack_pending, _) = bus.consumer_counts();
    assert_eq!((pending, ack_pending), (0, 0));
}

#[test]
fn a_restarted_worker_resumes_publishing_from_its_saved_offsets() {
    let host = FakeHost::start();
    let server = NatsServer::start();
    let bus = Bus::new(&server.url(), None);
    counting_agent(&host, 60);
    let (_env, d) = lead_with(&host, "counter", COUNTER);
    let mailbox = d.store().mailbox_id().to_string();
    let mut first = Worker::start(&host, &server.url(), &[], "a");
    let t = task_message(&d, 1, "count");
    bus.publish_task(&t);
    bus.wait_results(&mailbox, "some lines", |r| {
        applied(r, &t.task_key).0.get("stream.jsonl").is_some_and(|s| s.len() > 20)
    });
    first.crash();
    // The agent goes on writing while no worker watches.
    std::thread::sleep(Duration::from_secs(1));
    let second = Worker::start(&host, &server.url(), &[], "a");
    // Every byte arrives, none skipped (`applied` checks each offset), the agent ran once.
    let results = wait_for_whole_task(&bus, &mailbox, &host, &t.task_key);
    let (files, _repeats) = applied(&results, &t.task_key);
    let lines = String::from_utf8(files["stream.jsonl"].clone()).unwrap();
    assert_eq!(lines.lines().count(), 60, "{lines}");
    assert_eq!(agent_starts(&host), 1);
    second.wait_log("finished; no longer watched");
    assert_eq!(launched(&results, &t.task_key).len(), 1);
}

#[test]
fn two_replicas_of_one_id_share_the_tasks_and_each_runs_once() {
    let host = FakeHost::start();
    let server = NatsServer::start();
    let bus = Bus::new(&server.url(), None);
    counting_agent(&host, 2);
    // Slow launches: while one replica launches, the other takes the next task.
    let real =
        ["/usr/bin/tmux", "/bin/tmux", "/usr/local/bin/tmux"].into_iter().find(|p| Path::new(p).exists()).unwrap();
    install_agent(
        &host,
        "tmux",
        &format!("#!/bin/bash\n[[ \" $* \" == *\" new-session \"* ]] && sleep 1\nexec {real} \"$@\"\n"),
    );
    let (_env, d) = lead_with(&host, "counter", COUNTER);
    let mailbox = d.store().mailbox_id().to_string();
    let a = Worker::start(&host, &server.url(), &[], "a");
    let b = Worker::start(&host, &server.url(), &[], "b");
    let tasks: Vec<TaskMessage> = (1..=4).map(|i| task_message(&d, i, "count")).collect();
    for t in &tasks {
        bus.publish_task(t);
    }
    let results =
        bus.wait_results(&mailbox, "four launches", |r| tasks.iter().all(|t| launched(r, &t.task_key).len() == 1));
    let instances: std::collections::BTreeSet<String> = results
        .iter()
        .filter_map(|r| match r {
            ResultMessage::Launched { instance, .. } => Some(instance.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(instances.into_iter().collect::<Vec<_>>(), ["a", "b"], "{}\n{}", a.log(), b.log());
    for t in &tasks {
        wait_for_whole_task(&bus, &mailbox, &host, &t.task_key);
    }
    assert_eq!(agent_starts(&host), 4);
    assert_eq!(bus.consumer_counts(), (0, 0, 0));
}

#[test]
fn a_server_restart_during_a_run_loses_nothing() {
    let host = FakeHost::start();
    let mut server = NatsServer::start();
    let bus = Bus::new(&server.url(), None);
    counting_agent(&host, 60);
    let (_env, d) = lead_with(&host, "counter", COUNTER);
    let mailbox = d.store().mailbox_id().to_string();
    let worker = Worker::start(&host, &server.url(), &[], "a");
    let t = task_message(&d, 1, "count");
    bus.publish_task(&t);
    bus.wait_results(&mailbox, "some lines", |r| {
        applied(r, &t.task_key).0.get("stream.jsonl").is_some_and(|s| s.len() > 20)
    });
    server.stop();
    std::thread::sleep(Duration::from_secs(2));
    server.start_again();
    let results = wait_for_whole_task(&bus, &mailbox, &host, &t.task_key);
    let (files, _) = applied(&results, &t.task_key);
    assert_eq!(String::from_utf8(files["stream.jsonl"].clone()).unwrap().lines().count(), 60);
    worker.wait_log("finished; no longer watched");
    assert_eq!(agent_starts(&host), 1);
}

#[test]
fn the_real_claude_cli_runs_through_a_worker_and_reports_to_its_exit() {
    use delegate_testkit::brothers::{self, Install};
    let Some(bin) = brothers::real_agents_bin() else { return };
    let host = FakeHost::builder().own_home().without_fake_agents().start();
    let model = delegate_testkit::model::ModelStandIn::start(crate::real_agents::reporting_script());
    let installed = brothers::install(&host, Install::SystemWide, &bin, &model);
    let env = Env::with_brother(&host, "claude", "full");
    if let Some(p) = installed.claude_path {
        env.config_append(&format!("agent_path = \"{p}\"\n"));
    }
    let d = open_lead(&env);
    let mailbox = d.store().mailbox_id().to_string();
    let server = NatsServer::start();
    let bus = Bus::new(&server.url(), None);
    let _worker = Worker::start(&host, &server.url(), &[], "a");
    let t = task_message(&d, 1, "review the config");
    bus.publish_task(&t);
    let results = wait_for_whole_task(&bus, &mailbox, &host, &t.task_key);
    let l = launched(&results, &t.task_key);
    assert!(stdout(l[0]).contains("Claude Code"), "{}", stdout(l[0]));
    let (files, _) = applied(&results, &t.task_key);
    let outbox = String::from_utf8_lossy(files.get("outbox.jsonl").map(Vec::as_slice).unwrap_or_default()).into_owned();
    for said in ["on it", "half way", "all good"] {
        assert!(outbox.contains(said), "{outbox}");
    }
    assert!(String::from_utf8_lossy(&files["exit"]).starts_with("0 "), "{files:?}");
    assert!(String::from_utf8_lossy(&files["stream.jsonl"]).contains("finished: all good"));
}

/// The permissions the README gives a worker's NATS user (for id w1).
const WORKER_PERMISSIONS: &str = r#"publish: [
    "delegate.results.*.w1",
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.DELEGATE_TASKS", "$JS.API.STREAM.INFO.DELEGATE_RESULTS",
    "$JS.API.CONSUMER.INFO.DELEGATE_TASKS.delegate-worker-w1",
    "$JS.API.CONSUMER.CREATE.DELEGATE_TASKS.delegate-worker-w1.delegate.tasks.w1",
    "$JS.API.CONSUMER.DURABLE.CREATE.DELEGATE_TASKS.delegate-worker-w1",
    "$JS.API.CONSUMER.MSG.NEXT.DELEGATE_TASKS.delegate-worker-w1",
    "$JS.ACK.DELEGATE_TASKS.delegate-worker-w1.>"
  ]
  subscribe: [ "_INBOX.>", "delegate.exec.w1", "delegate.exec.w1.*" ]
  allow_responses: true"#;

#[test]
fn a_worker_with_only_the_documented_permissions_launches_reports_and_answers() {
    let host = FakeHost::start();
    let server = NatsServer::builder()
        .config(&format!(
            "authorization {{ users = [\n  {{ user: lead, password: leadpw }}\n  {{ user: w1, password: workerpw, permissions: {{ {WORKER_PERMISSIONS} }} }}\n] }}\n"
        ))
        .start();
    let lead_creds = server.dir().join("lead.creds");
    std::fs::write(&lead_creds, "lead:leadpw\n").unwrap();
    let creds = host.remote_root().join("w1.creds");
    std::fs::write(&creds, "w1:workerpw\n").unwrap();
    std::os::unix::fs::chown(&creds, Some(host.uid()), None).unwrap();
    // The lead (an administrator here) made the streams; the worker only looks them up.
    let bus = Bus::new(&server.url(), Some(&lead_creds));
    let (_env, d) = lead(&host, "self-test");
    let mailbox = d.store().mailbox_id().to_string();
    let _worker = Worker::start(&host, &server.url(), &["--creds", creds.to_str().unwrap()], "a");
    let t = task_message(&d, 1, "hello");
    bus.publish_task(&t);
    wait_for_whole_task(&bus, &mailbox, &host, &t.task_key);
    let root = host.remote_root().display().to_string();
    let sync = delegate_core::remote::protocol::render_sync(&delegate_core::remote::protocol::SyncRequest {
        remote_root: root,
        tasks: vec![delegate_core::remote::protocol::SyncTaskRequest {
            task_key: t.task_key.clone(),
            session: t.session.clone(),
            ..Default::default()
        }],
        max_bytes_per_file: 1000,
        max_bytes_total: 1000,
    })
    .unwrap();
    let reply = bus.exec(&wire::exec_subject(WORKER, Some("a")), &sync);
    assert_eq!(reply.exit, Some(0), "{reply:?}");
    assert!(parse_sync(&wire::unb64(&reply.stdout).unwrap()).unwrap().tasks[0].dir_exists);
    wait_until("the consumer to settle", || bus.consumer_counts() == (0, 0, 0));
}

#[test]
fn install_service_puts_one_worker_line_in_the_crontab_that_runs_one_worker_at_a_time() {
    use crate::schedules::{crontab_of, set_crontab, test_user_crontab};
    let env = Env::new();
    let Some(crontab) = test_user_crontab(&env.home) else { return };
    let _serial = crate::support::crontab_lock();
    let before_test = crontab_of(&crontab);
    let others = "# someone's own\n17 3 * * * /usr/bin/true backup\n";
    set_crontab(&crontab, others);
    let server = NatsServer::start();
    let root = env.home.join("wroot");
    let creds = env.home.join("w.creds");
    std::fs::write(&creds, "token-canary-93f1\n").unwrap();
    let vars = [("DELEGATE_TEST_CRONTAB", crontab.to_str().unwrap()), ("DELEGATE_TEST_SERVICE", "crontab")];
    let args = [
        "worker",
        "--nats",
        &server.url(),
        "--creds",
        creds.to_str().unwrap(),
        "--id",
        "w1",
        "--remote-root",
        root.to_str().unwrap(),
        "--install-service",
    ];
    env.run_with_env(&args, &vars).ok();
    env.run_with_env(&args, &vars).ok(); // again: replaced, not doubled
    let installed = crontab_of(&crontab);
    set_crontab(&crontab, &before_test);
    assert!(installed.starts_with(others), "{installed}");
    assert_eq!(installed.matches("# BEGIN delegate worker w1").count(), 1, "{installed}");
    assert!(installed.contains(creds.to_str().unwrap()) && !installed.contains("token-canary"), "{installed}");
    let tick = installed.lines().find(|l| l.starts_with("* * * * * ")).expect("a per-minute line");
    assert!(installed.lines().any(|l| l.starts_with("@reboot ")), "{installed}");

    // The line as cron runs it: a worker that connects and stays; the next minute's run
    // finds it holding the lock and starts none.
    let cmd = tick.trim_start_matches("* * * * * ").to_string();
    let sh = |c: &str| {
        Command::new("sh").args(["-c", c]).env_clear().env("HOME", &env.home).stdin(Stdio::null()).spawn().unwrap()
    };
    let mut first = sh(&cmd);
    let log = root.join("workers/w1/worker.log");
    wait_until("the cron-started worker to connect", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("connected to")
    });
    let second = sh(&cmd).wait().unwrap();
    assert_eq!(second.code(), Some(1), "flock -n refuses a second worker");
    assert_eq!(std::fs::read_to_string(&log).unwrap().matches("connected to").count(), 1);
    assert_eq!(first.try_wait().unwrap(), None, "the first worker still runs");
    for pid in delegate_testkit::descendants_of(first.id() as i32) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = first.kill();
    let _ = first.wait();
}
