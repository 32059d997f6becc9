//! Fan-out (one task per brother, launched concurrently, one SSH connection per host) and
//! concurrency caps (tasks over a host's or brother's cap queue and start later).

use delegate_testkit::FakeHost;
use serde_json::Value;

use crate::support::{Env, launch, wait_done};

/// Host `h` and `n` self-test brothers b0..b(n-1) on it; their names as one fan-out list.
fn brothers_on(env: &Env, host: &FakeHost, n: usize) -> String {
    env.add_host("h", host);
    let names: Vec<String> = (0..n).map(|i| format!("b{i}")).collect();
    for name in &names {
        env.add_brother(name, "h", host, "self-test", "read");
    }
    names.join(",")
}

fn logins(host: &FakeHost) -> usize {
    host.sshd_log().matches("Accepted publickey").count()
}

#[test]
fn one_prompt_fans_out_to_three_brothers_on_two_hosts_over_one_connection_per_host() {
    let (h1, h2) = (FakeHost::start(), FakeHost::start());
    let env = Env::new();
    env.add_host("h1", &h1);
    env.add_host("h2", &h2);
    env.add_brother("oppy", "h1", &h1, "self-test", "read");
    env.add_brother("jerry", "h1", &h1, "self-test", "read");
    env.add_brother("masuda", "h2", &h2, "self-test", "read");

    let out = env.run(&["oppy,jerry,masuda", "run the test suite", "--json"]).ok().json();
    let tasks = out["tasks"].as_array().unwrap();
    let brothers: Vec<&str> = tasks.iter().map(|t| t["brother"].as_str().unwrap()).collect();
    assert_eq!(brothers, ["oppy", "jerry", "masuda"], "{out}");
    assert!(tasks.iter().all(|t| t["status"] == "launched"), "{out}");
    assert_eq!(out["errors"], serde_json::json!([]));
    // Two brothers on h1 shared one connection, each on its own channel.
    assert_eq!(logins(&h1), 1, "{}", h1.sshd_log());
    assert_eq!(logins(&h2), 1, "{}", h2.sshd_log());
    let reused: Vec<&str> = tasks.iter().map(|t| t["runs"][0]["evidence"]["connection"].as_str().unwrap()).collect();
    assert_eq!(reused.iter().filter(|c| **c == "new").count(), 2, "{reused:?}");

    let ids: Vec<String> = tasks.iter().map(|t| t["id"].to_string()).collect();
    let mut args = vec!["wait", "--timeout", "60s", "--interval-ms", "200", "--json"];
    args.extend(ids.iter().map(String::as_str));
    let waited = env.run(&args).ok().json();
    assert!(waited["tasks"].as_array().unwrap().iter().all(|t| t["status"] == "completed"), "{waited}");

    // The --to form, and its text output listing every task.
    let text = env.run(&["run", "--to", "oppy", "--to", "masuda", "second round"]).ok();
    assert_eq!(text.stdout().matches("launched  task").count(), 2, "{text}");
    assert!(text.stdout().contains("delegate wait "), "{text}");
}

#[test]
fn a_fan_out_with_an_unknown_brother_launches_the_others_and_says_which_failed() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let run = env.run(&["oppy,nobody", "hello", "--json"]);
    assert_eq!(run.code(), 3, "an unknown brother is an inventory (config) error: {run}");
    let out = run.json();
    assert_eq!(out["tasks"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(out["tasks"][0]["status"], "launched");
    assert_eq!(out["errors"][0]["brother"], "nobody");
    assert!(out["errors"][0]["error"].as_str().unwrap().contains("nobody"), "{out}");
    let empty = env.run(&["oppy,,jerry", "hello"]).fails_with(2);
    assert!(empty.stderr().contains("empty"), "{empty}");
}

fn status(env: &Env, id: i64) -> Value {
    env.run(&["show", &id.to_string(), "--json"]).ok().json()
}

#[test]
fn a_host_cap_of_one_queues_the_second_task_and_starts_it_when_the_first_ends() {
    let host = FakeHost::start();
    let env = Env::new();
    env.trust(&host);
    env.config_append(&(env.host_toml("h", &host) + "max_concurrent = 1\n"));
    env.add_brother("oppy", "h", &host, "self-test", "read");
    env.add_brother("jerry", "h", &host, "self-test", "read");

    let first = launch(&env, &["oppy", "dawdle\n@self-test sleep 3", "--json"]);
    let queued = env.run(&["jerry", "then this", "--json"]).ok().json();
    assert_eq!(queued["status"], "queued", "{queued}");
    let second = queued["id"].as_i64().unwrap();
    // Visible, and still waiting while the first runs (a sync does not start it).
    let listed = env.run(&["list", "--json"]).ok().json();
    assert!(listed.as_array().unwrap().iter().any(|t| t["id"] == second && t["status"] == "queued"), "{listed}");
    assert_eq!(status(&env, second)["status"], "queued");
    let text = env.run(&["oppy", "and a third", "--json"]).ok().json();
    assert_eq!(text["status"], "queued", "new work queues behind older work: {text}");
    let third = text["id"].as_i64().unwrap();

    // Waiting on all three: each starts as the one before frees the slot.
    let waited = env
        .run(&[
            "wait",
            &first.to_string(),
            &second.to_string(),
            &third.to_string(),
            "--timeout",
            "90s",
            "--interval-ms",
            "200",
            "--json",
        ])
        .ok()
        .json();
    assert!(waited["tasks"].as_array().unwrap().iter().all(|t| t["status"] == "completed"), "{waited}");
    let history = |id: i64| status(&env, id)["history"].as_array().unwrap().clone();
    let h2 = history(second);
    let steps: Vec<&str> = h2.iter().map(|t| t["to"].as_str().unwrap()).collect();
    assert_eq!(&steps[..2], ["queued", "launching"], "{h2:?}");
    assert_eq!(h2[1]["reason"], "a slot freed up");
    // Never two at once: the second started after the first ended, the third after the second.
    let ended = |h: &[Value]| h.iter().find(|t| t["to"] == "completed").unwrap()["at"].as_str().unwrap().to_string();
    let started = |h: &[Value]| h.iter().find(|t| t["to"] == "launching").unwrap()["at"].as_str().unwrap().to_string();
    assert!(started(&h2) >= ended(&history(first)), "second started before the first ended");
    assert!(started(&history(third)) >= ended(&h2), "third started before the second ended");
}

#[test]
fn a_brother_limited_to_one_task_queues_its_own_work_only_and_a_queued_task_can_be_cancelled() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    env.add_brother("oppy", "h", &host, "self-test", "read");
    env.config_append("max_concurrent = 1\n");
    env.add_brother("jerry", "h", &host, "self-test", "read");

    let busy = launch(&env, &["oppy", "dawdle\n@self-test sleep 20", "--max-turns", "100", "--json"]);
    let waiting = env.run(&["oppy", "next", "--json"]).ok().json();
    assert_eq!(waiting["status"], "queued", "{waiting}");
    let other = env.run(&["jerry", "not held up", "--json"]).ok().json();
    assert_eq!(other["status"], "launched", "another brother on the host is not capped: {other}");

    let id = waiting["id"].as_i64().unwrap();
    let cancelled = env.run(&["cancel", &id.to_string(), "--json"]).ok().json();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(cancelled["reason"].as_str().unwrap().contains("while queued"), "{cancelled}");
    env.run(&["cancel", &busy.to_string()]).ok();
    assert_eq!(wait_done(&env, other["id"].as_i64().unwrap())["status"], "completed");
}

/// A brother limited to one task, busy with one (`busy`), and a second task queued behind it
/// (`id`). The host is returned so it lives as long as the test.
fn a_task_queued_behind_a_busy_one() -> (FakeHost, Env, i64, i64) {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    env.add_brother("oppy", "h", &host, "self-test", "read");
    env.config_append("max_concurrent = 1\n");
    let dawdle = ["oppy", "dawdle\n@self-test sleep 20", "--max-turns", "100", "--json"];
    let busy = launch(&env, &dawdle);
    let queued = env.run(&dawdle).ok().json();
    assert_eq!(queued["status"], "queued", "{queued}");
    let id = queued["id"].as_i64().unwrap();
    (host, env, busy, id)
}

#[test]
fn a_message_to_a_queued_task_is_kept_and_reaches_the_agent_once_it_runs() {
    let (_host, env, busy, id) = a_task_queued_behind_a_busy_one();
    let said = env.run(&["say", &id.to_string(), "first note", "--json"]).ok().json();
    assert_eq!(said["direction"], "to_brother", "{said}");

    // Cancelling the busy task frees the slot (its closing sync starts the queued one); a
    // later sync sends the kept message, and the agent hears it once.
    env.run(&["cancel", &busy.to_string()]).ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let heard = loop {
        let t = status(&env, id);
        let heard: Vec<String> = crate::support::heard(&t);
        if !heard.is_empty() {
            break heard;
        }
        assert!(std::time::Instant::now() < deadline, "the message never arrived: {t}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert_eq!(heard, ["heard: first note"]);
    env.run(&["cancel", &id.to_string()]).ok();
}

#[test]
fn a_queued_task_settled_by_hand_never_starts_and_its_kept_message_says_never_delivered() {
    let (_host, env, busy, id) = a_task_queued_behind_a_busy_one();
    env.run(&["say", &id.to_string(), "first note", "--json"]).ok();

    // A person may record an outcome for it (no agent is at work): it then never starts.
    let settled = env.run(&["update", &id.to_string(), "--status", "cancelled", "--json"]).ok().json();
    assert_eq!(settled["status"], "cancelled", "{settled}");
    env.run(&["cancel", &busy.to_string()]).ok();
    let after = status(&env, id);
    assert_eq!(after["status"], "cancelled", "the freed slot did not start it: {after}");
    assert_eq!(after["runs"][0]["remote_dir"], Value::Null, "{after}");
    // The kept message is not left as `sent` forever.
    let said: Vec<&str> = after["thread"]
        .as_array()
        .expect("a thread")
        .iter()
        .filter(|i| i["kind"] == "said")
        .filter_map(|i| i["text"].as_str())
        .collect();
    assert_eq!(said.len(), 1, "{after}");
    assert!(said[0].contains("first note") && said[0].ends_with("[never delivered: the task ended first]"), "{said:?}");
    // Still refused once it ended without starting: there is nothing to reopen.
    let refused = env.run(&["say", &id.to_string(), "second note"]).fails_with(19);
    assert!(refused.stderr().contains("never started") && refused.stderr().contains("delegate run oppy"), "{refused}");
}

/// A fan-out of 25 brothers on one host runs 25 launches on one connection, more channels
/// than sshd's MaxSessions allows at once (10 by default, and 3 here). A refused channel
/// open waits for another channel to close and opens again (nothing was sent on it), so
/// every task launches, once: through the warm daemon, and directly.
#[test]
fn a_fan_out_wider_than_max_sessions_waits_for_channels_and_launches_every_task() {
    const BROTHERS: usize = 25;
    for (max_sessions, how) in [(10, None), (3, Some("--no-warm"))] {
        let host = FakeHost::builder().max_sessions(max_sessions).start();
        let env = Env::new();
        let list = brothers_on(&env, &host, BROTHERS);
        let mut args = vec![list.as_str(), "stay a while\n@self-test sleep 60", "--json"];
        args.extend(how);
        let run = env.run(&args);
        let out = run.json();
        assert_eq!(out["errors"], serde_json::json!([]), "MaxSessions {max_sessions}: {run}");
        let tasks = out["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), BROTHERS, "{out}");
        assert!(tasks.iter().all(|t| t["status"] == "launched"), "MaxSessions {max_sessions}: {out}");
        run.ok();
        assert_eq!(logins(&host), 1, "one connection: {}", host.sshd_log());
        let (sessions, dirs, _) = crate::support::footprint(&host);
        assert_eq!((sessions.len(), dirs.len()), (BROTHERS, BROTHERS), "one session and one task dir per task");
        // sshd did refuse channels ("no more sessions"): the limit was real.
        let refused = host.sshd_log().matches("no more sessions").count();
        assert!(refused > 0, "MaxSessions {max_sessions}: sshd never refused a channel");
        eprintln!("MaxSessions {max_sessions}: {refused} channel opens refused and retried");
    }
}

/// A channel refused with no other channel of ours open is not a queue to wait in: sshd
/// with `MaxSessions 0` allows no commands at all. The launch fails at once (exit 15) with a
/// message naming MaxSessions, the task is `failed`, and nothing reached the host.
#[test]
fn a_channel_refused_with_none_in_flight_is_an_error_naming_max_sessions() {
    let host = FakeHost::builder().max_sessions(0).start();
    let env = Env::with_brother(&host, "self-test", "read");
    for how in [None, Some("--no-warm")] {
        let mut args = vec!["oppy", "hello", "--json"];
        args.extend(how);
        let run = env.run(&args).fails_with(15);
        assert!(run.stderr().contains("refused to open a session channel"), "{run}");
        assert!(run.stderr().contains("MaxSessions"), "{run}");
        assert_eq!(run.json()["status"], "failed", "{run}");
        let (sessions, dirs, execs) = crate::support::footprint(&host);
        assert!(sessions.is_empty() && dirs.is_empty() && execs == 0, "something ran: {sessions:?} {dirs:?} {execs}");
    }
}

/// A sync of more than 64 tasks on one host reads the quiet ones in bulk: the brother names
/// only the tasks with news and lists the live sessions once, and the lead looks each
/// task's session up itself. Through real sshd: every agent of a wide fan-out is seen
/// running, one whose session was killed is lost, and the rest stay running.
#[test]
fn a_sync_of_more_than_64_tasks_finds_the_running_and_the_lost_among_them() {
    const BROTHERS: usize = 70;
    let host = FakeHost::start();
    let env = Env::new();
    let list = brothers_on(&env, &host, BROTHERS);
    let out = env.run(&[list.as_str(), "stay a while\n@self-test sleep 60", "--json"]).ok().json();
    let tasks = out["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), BROTHERS, "{out}");
    let synced = env.run(&["sync", "--json"]).ok().json();
    let changed = synced["hosts"][0]["changed"].as_array().unwrap();
    assert_eq!(changed.len(), BROTHERS, "{synced}");
    assert!(changed.iter().all(|c| c[1] == "running"), "{synced}");

    let victim = tasks[BROTHERS / 2]["id"].as_i64().unwrap();
    let session = env.run(&["show", &victim.to_string(), "--json"]).ok().json()["runs"][0]["session"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(host.tmux(&["kill-session", "-t", &format!("={session}")]).status.success());
    let synced = env.run(&["sync", "--json"]).ok().json();
    assert_eq!(synced["hosts"][0]["changed"], serde_json::json!([[victim, "lost"]]), "{synced}");
    let listed = env.run(&["list", "--json", "--no-sync", "--limit", "100"]).ok().json();
    let statuses: Vec<&str> = listed.as_array().unwrap().iter().map(|t| t["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.len(), BROTHERS);
    assert_eq!(statuses.iter().filter(|s| **s == "running").count(), BROTHERS - 1, "{statuses:?}");
}
