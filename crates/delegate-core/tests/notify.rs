//! Notifications against real things: a real SQLite mailbox, a real HTTP server on a
//! loopback port (delegate_testkit::webhook), real commands. The clock is injected so a
//! retry's backoff is passed without sleeping.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use delegate_core::mailbox::notifications::{LEASE_MS, now_ms};
use delegate_core::mailbox::{Caps, NewTask, Store};
use delegate_core::notify::deliver::{Secrets, deliver_due};
use delegate_core::notify::{NotifyEvent, Plan, Target, WebhookFormat};
use delegate_core::{Sandbox, TaskStatus};
use delegate_testkit::webhook::{WebhookServer, refused_port};

const TOKEN: &str = "tok-3f9a1c77-never-stored";

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dlg-notify-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn secrets(home: PathBuf) -> Secrets {
    Secrets { env: Arc::new(|name| (name == "HOOK_TOKEN").then(|| TOKEN.to_string())), home }
}

fn webhook(url: String) -> Target {
    Target::Webhook { url, format: WebhookFormat::Json, token_env: Some("HOOK_TOKEN".into()), token_file: None }
}

/// A running task whose plan sends `on` to `targets`; returns its id and version.
fn task(store: &mut Store, subject: &str, on: Vec<NotifyEvent>, targets: Vec<Target>) -> (i64, i64) {
    let plan = serde_json::to_string(&Plan { on, targets }).unwrap();
    let options = Default::default();
    let run = store
        .create_task(&NewTask {
            brother: "oppy",
            host: "h",
            address: "a",
            subject,
            agent: "self-test",
            model: None,
            sandbox: Sandbox::Read,
            max_turns: 5,
            workdir: "/w",
            prompt: b"p",
            prompt_sha256: "x",
            timeout_secs: 60,
            author: "ian",
            caps: Caps::default(),
            options: &options,
            settings: &serde_json::Value::Null,
            priority: Default::default(),
            parent: None,
            notify: Some(&plan),
        })
        .unwrap();
    let v = store.transition(run.task_id, run.version, TaskStatus::Running, None).unwrap();
    (run.task_id, v)
}

fn mailbox_bytes(d: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        all.extend(std::fs::read(e.unwrap().path()).unwrap_or_default());
    }
    all
}

#[test]
fn a_completed_task_posts_one_json_body_with_the_token_as_bearer_and_the_token_is_never_stored() {
    let d = dir("json");
    let server = WebhookServer::start();
    let mut store = Store::open(&d).unwrap();
    let (id, v) = task(&mut store, "fix the flaky test", NotifyEvent::ALL.to_vec(), vec![webhook(server.url("/hook"))]);
    // Running raises nothing; completed raises one notification per target.
    assert!(store.notifications(10).unwrap().is_empty());
    store.transition(id, v, TaskStatus::Completed, Some("done")).unwrap();
    let out = deliver_due(&mut store, &secrets(d.clone()), &now_ms, Duration::from_secs(30)).unwrap();
    assert_eq!((out.sent, out.failed.len()), (1, 0), "{out:?}");

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].line, "POST /hook HTTP/1.1");
    assert_eq!(reqs[0].header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
    let body = reqs[0].json();
    assert_eq!(body["task"], id);
    assert_eq!(body["brother"], "oppy");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["event"], "completed");
    assert_eq!(body["subject"], "fix the flaky test");
    assert_eq!(body["reason"], "done");
    assert_eq!(body["summary"], format!("task {id} on oppy completed: fix the flaky test (done)"));

    let rows = store.notifications(10).unwrap();
    assert_eq!((rows.len(), rows[0].state.as_str(), rows[0].attempts), (1, "sent", 1), "{rows:?}");
    // Nothing more is due: a second delivery sends nothing.
    assert_eq!(deliver_due(&mut store, &secrets(d.clone()), &now_ms, Duration::from_secs(30)).unwrap().sent, 0);
    assert_eq!(server.requests().len(), 1);
    drop(store);
    let bytes = mailbox_bytes(&d);
    assert!(!bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()), "the token reached the mailbox files");
    assert!(bytes.windows(10).any(|w| w == b"HOOK_TOKEN"), "the token's variable name is what is stored");
}

#[test]
fn a_webhook_that_was_down_is_retried_after_the_backoff_and_recorded_sent_once() {
    let d = dir("retry");
    let port = refused_port();
    let mut store = Store::open(&d).unwrap();
    let (id, v) = task(&mut store, "s", vec![NotifyEvent::Failed], vec![webhook(format!("http://127.0.0.1:{port}/h"))]);
    store.transition(id, v, TaskStatus::Failed, Some("exit 3")).unwrap();
    let base = Duration::from_secs(30);
    let t0 = now_ms();
    let clock = std::cell::Cell::new(t0);
    let now = || clock.get();

    // Down: the attempt fails, is recorded with its error, and is due again after the backoff.
    let out = deliver_due(&mut store, &secrets(d.clone()), &now, base).unwrap();
    assert_eq!((out.sent, out.failed.len()), (0, 1), "{out:?}");
    let row = &store.notifications(1).unwrap()[0];
    assert_eq!((row.state.as_str(), row.attempts), ("pending", 1), "{row:?}");
    assert_eq!(row.next_attempt_at, t0 + 30_000);
    assert!(row.last_error.as_deref().unwrap_or("").contains("127.0.0.1"), "{row:?}");
    // Not due yet: nothing is tried before the backoff has passed.
    clock.set(t0 + 29_000);
    assert_eq!(deliver_due(&mut store, &secrets(d.clone()), &now, base).unwrap().failed.len(), 0);
    // Still down after the backoff: the next wait doubles.
    clock.set(t0 + 30_000);
    assert_eq!(deliver_due(&mut store, &secrets(d.clone()), &now, base).unwrap().failed.len(), 1);
    assert_eq!(store.notifications(1).unwrap()[0].next_attempt_at, t0 + 30_000 + 60_000);

    // Up again: the next due attempt goes through, exactly once.
    let server = WebhookServer::start_on(port);
    clock.set(t0 + 90_000);
    let out = deliver_due(&mut store, &secrets(d.clone()), &now, base).unwrap();
    assert_eq!(out.sent, 1, "{out:?}");
    clock.set(t0 + 10_000_000);
    assert_eq!(deliver_due(&mut store, &secrets(d.clone()), &now, base).unwrap().sent, 0);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].json()["status"], "failed");
    let rows = store.notifications(10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].state.as_str(), rows[0].attempts, rows[0].last_error.as_deref()), ("sent", 3, None));
}

#[test]
fn two_processes_delivering_at_once_send_each_notification_once() {
    let d = dir("race");
    let server = WebhookServer::start();
    let mut store = Store::open(&d).unwrap();
    let mut ids = Vec::new();
    for n in 0..12 {
        let (id, v) = task(&mut store, &format!("t{n}"), NotifyEvent::ALL.to_vec(), vec![webhook(server.url("/"))]);
        store.transition(id, v, TaskStatus::Completed, None).unwrap();
        ids.push(id);
    }
    // Four deliverers, each with its own connection (as separate processes have), all at once.
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (d, barrier) = (d.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut s = Store::open(&d).unwrap();
                barrier.wait();
                let mut sent = 0;
                loop {
                    let out = deliver_due(&mut s, &secrets(d.clone()), &now_ms, Duration::from_secs(30)).unwrap();
                    sent += out.sent;
                    if out.sent == 0 {
                        return sent;
                    }
                }
            })
        })
        .collect();
    let sent: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(sent, 12);
    let mut got: Vec<i64> = server.requests().iter().map(|r| r.json()["task"].as_i64().unwrap()).collect();
    got.sort();
    assert_eq!(got, ids, "each task's notification exactly once");
}

#[test]
fn a_claim_left_by_a_process_that_died_is_taken_again_after_its_lease() {
    let d = dir("lease");
    let mut store = Store::open(&d).unwrap();
    let (id, v) = task(&mut store, "s", NotifyEvent::ALL.to_vec(), vec![webhook("http://127.0.0.1:9/".into())]);
    store.transition(id, v, TaskStatus::NeedsInput, None).unwrap();
    let t0 = now_ms();
    let first = store.claim_notification(t0).unwrap().expect("due");
    assert_eq!(first.message.event, "needs_input");
    // The claimer "dies" here. Within the lease nobody else takes it; after it, someone does.
    let mut other = Store::open(&d).unwrap();
    assert!(other.claim_notification(t0 + LEASE_MS - 1).unwrap().is_none());
    let again = other.claim_notification(t0 + LEASE_MS).unwrap().expect("reclaimed after the lease");
    assert_eq!((again.id, again.attempts), (first.id, 2));
}

#[test]
fn events_the_plan_does_not_want_and_a_cancel_notify_nobody() {
    let d = dir("events");
    let mut store = Store::open(&d).unwrap();
    let (a, va) = task(&mut store, "a", vec![NotifyEvent::Failed], vec![webhook("http://127.0.0.1:9/".into())]);
    store.transition(a, va, TaskStatus::Completed, None).unwrap();
    let (b, vb) = task(&mut store, "b", NotifyEvent::ALL.to_vec(), vec![webhook("http://127.0.0.1:9/".into())]);
    store.transition(b, vb, TaskStatus::Cancelled, None).unwrap();
    let (c, vc) = task(&mut store, "c", vec![NotifyEvent::Failed], vec![webhook("http://127.0.0.1:9/".into())]);
    store.transition(c, vc, TaskStatus::TurnLimit, Some("50 turns")).unwrap();
    let rows = store.notifications(10).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].message.task, rows[0].message.event.as_str(), rows[0].message.status.as_str()),
        (Some(c), "failed", "turn_limit")
    );
}

/// A small program that writes each argument it got, NUL-terminated, to `out`.
fn argv_recorder(d: &std::path::Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let script = d.join("record-argv");
    let out = d.join("argv.bin");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done > '{}'\n", out.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, out)
}

#[test]
fn a_command_gets_each_placeholder_as_one_literal_argument_and_no_shell_runs_the_subject() {
    let d = dir("argv");
    let (script, out) = argv_recorder(&d);
    let pwned = d.join("pwned");
    let subject = format!("$(touch {p}); `touch {p}` \"q\" 'x' | & ; > {p} *", p = pwned.display());
    let mut store = Store::open(&d).unwrap();
    let argv = vec![script.display().to_string(), "{subject}".into(), "[{task}] {status}".into(), "{reason}".into()];
    let (id, v) = task(&mut store, &subject, NotifyEvent::ALL.to_vec(), vec![Target::Command { argv }]);
    store.transition(id, v, TaskStatus::Failed, Some("reason\x1b[31m red\nnext")).unwrap();
    let res = deliver_due(&mut store, &secrets(d.clone()), &now_ms, Duration::from_secs(30)).unwrap();
    assert_eq!(res.sent, 1, "{res:?}");
    let got = std::fs::read(&out).unwrap();
    let args: Vec<String> =
        got.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    assert_eq!(args, [subject.clone(), format!("[{id}] failed"), "reason red next".into()]);
    assert!(!pwned.exists(), "the subject was run by a shell");
}

#[test]
fn a_failing_command_is_recorded_with_its_stderr_and_a_hung_one_is_killed_in_bounded_time() {
    let d = dir("cmdfail");
    let mut store = Store::open(&d).unwrap();
    let fail = Target::Command { argv: vec!["sh".into(), "-c".into(), "echo no display >&2; exit 4".into()] };
    let (id, v) = task(&mut store, "s", NotifyEvent::ALL.to_vec(), vec![fail]);
    store.transition(id, v, TaskStatus::Completed, None).unwrap();
    let res = deliver_due(&mut store, &secrets(d.clone()), &now_ms, Duration::from_secs(30)).unwrap();
    assert_eq!(res.failed.len(), 1);
    let err = store.notifications(1).unwrap()[0].last_error.clone().unwrap();
    assert!(err.contains("exit status: 4") && err.contains("no display"), "{err}");

    let hang = Target::Command { argv: vec!["sh".into(), "-c".into(), "sleep 300 & sleep 300".into()] };
    let (id, v) = task(&mut store, "s", NotifyEvent::ALL.to_vec(), vec![hang]);
    store.transition(id, v, TaskStatus::Completed, None).unwrap();
    let started = Instant::now();
    let res = deliver_due(&mut store, &secrets(d.clone()), &now_ms, Duration::from_secs(30)).unwrap();
    assert!(started.elapsed() < Duration::from_secs(60), "a hung command held delivery for {:?}", started.elapsed());
    assert!(res.failed.iter().any(|(_, e)| e.contains("killed")), "{res:?}");
}

fn delegate_with(d: &std::path::Path, config: &str) -> delegate_core::Delegate {
    std::fs::write(d.join("config.toml"), config).unwrap();
    delegate_core::Delegate::open(delegate_core::Paths {
        config_file: d.join("config.toml"),
        data_dir: d.join("data"),
        home: d.to_path_buf(),
        local_user: "ian".into(),
        ssh_config: d.join("ssh_config"),
        agent_socket: None,
    })
    .unwrap()
}

#[test]
fn a_schedule_misfire_is_recorded_once_per_slot_and_posted_with_the_schedule() {
    let d = dir("misfire");
    let server = WebhookServer::start();
    // Not wanted: `on` leaves schedule_misfire out, so nothing is recorded.
    let mut quiet = delegate_with(&d, &format!("[notify]\nwebhook = \"{}\"\non = [\"completed\"]\n", server.url("/")));
    assert_eq!(quiet.enqueue_misfire("triage", "2026-12-07T09:00Z", "lead was asleep").unwrap(), 0);
    drop(quiet);
    let mut dl = delegate_with(&d, &format!("[notify]\nwebhook = \"{}\"\n", server.url("/")));
    assert_eq!(dl.enqueue_misfire("triage", "2026-12-07T09:00Z", "lead was asleep").unwrap(), 1);
    // The same slot again (a second lead, a restart) is not recorded twice.
    assert_eq!(dl.enqueue_misfire("triage", "2026-12-07T09:00Z", "lead was asleep").unwrap(), 0);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let out = rt.block_on(dl.deliver_notifications()).unwrap();
    assert_eq!(out.sent, 1, "{out:?}");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let body = reqs[0].json();
    assert_eq!(
        (body["event"].as_str(), body["schedule"].as_str()),
        (Some("schedule_misfire"), Some("triage")),
        "{body}"
    );
    assert_eq!(body["task"], serde_json::Value::Null);
    assert!(body["summary"].as_str().unwrap().contains("schedule triage missed a slot"), "{body}");
    assert_eq!(body["reason"], "lead was asleep");
}

#[test]
fn a_token_file_under_home_is_read_when_sending_and_a_missing_one_is_named() {
    let d = dir("tokfile");
    let server = WebhookServer::start();
    let mut store = Store::open(&d.join("data")).unwrap();
    let target = Target::Webhook {
        url: server.url("/t"),
        format: WebhookFormat::Ntfy,
        token_env: None,
        token_file: Some("~/hook-token".into()),
    };
    let (id, v) = task(&mut store, "s", NotifyEvent::ALL.to_vec(), vec![target]);
    store.transition(id, v, TaskStatus::Completed, None).unwrap();
    // Missing: the attempt fails naming the file, and nothing is sent.
    let out = deliver_due(&mut store, &Secrets::none(d.clone()), &now_ms, Duration::from_secs(30)).unwrap();
    assert!(out.failed[0].1.contains(&d.join("hook-token").display().to_string()), "{out:?}");
    assert!(server.requests().is_empty());
    std::fs::write(d.join("hook-token"), "  file-token-1\n").unwrap();
    let later = now_ms() + 60_000;
    let out = deliver_due(&mut store, &Secrets::none(d.clone()), &|| later, Duration::from_secs(30)).unwrap();
    assert_eq!(out.sent, 1, "{out:?}");
    let reqs = server.requests();
    assert_eq!(reqs[0].header("authorization"), Some("Bearer file-token-1"));
    // ntfy: posted to the server root with the topic from the URL's last segment.
    assert_eq!((reqs[0].line.as_str(), reqs[0].json()["topic"].as_str()), ("POST / HTTP/1.1", Some("t")));
}
