//! The board: tasks recorded without launching (`new`), launched later (`start`),
//! priorities, and parent/child links.

use delegate_testkit::FakeHost;

use crate::support::{Env, execs, install_agent, launch, remote_dir, wait_done};

#[test]
fn a_backlog_task_waits_until_started_then_launches_like_any_other() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let t = env
        .run(&["new", "fix the parser", "--description", "the details\non two lines", "--priority", "high", "--json"])
        .ok()
        .json();
    let id = t["id"].as_i64().unwrap();
    let n = id.to_string();
    assert_eq!(
        (t["status"].as_str(), t["priority"].as_str(), t["brother"].as_str()),
        (Some("backlog"), Some("high"), Some(""))
    );
    assert_eq!(t["runs"].as_array().unwrap().len(), 0, "{t}");
    // Nothing starts it: not a sync, not the dispatcher that list and status run.
    env.run(&["sync"]).ok();
    env.run(&["list"]).ok();
    env.run(&["status"]).ok();
    let t = env.run(&["show", &n, "--json"]).ok().json();
    assert_eq!(t["status"], "backlog", "{t}");
    assert_eq!(execs(&host), 0, "nothing was sent to the host:\n{}", host.sshd_log());
    // The thread shows what the agent will read, and who recorded it.
    assert_eq!(t["thread"][0]["kind"], "prompt");
    assert_eq!(t["thread"][0]["text"], "fix the parser\n\nthe details\non two lines");
    assert_eq!(t["history"][0]["reason"], "recorded by tester", "{t}");
    // Waiting on it would never end; starting it needs a brother.
    let wait = env.run(&["wait", &n, "--timeout", "60s"]).fails_with(19);
    assert!(wait.stderr().contains(&format!("delegate start {id}")), "{wait}");
    let start = env.run(&["start", &n]).fails_with(35);
    assert!(start.stderr().contains(&format!("delegate start {id} --assign BROTHER")), "{start}");
    assert_eq!(env.run(&["show", &n, "--json"]).ok().json()["status"], "backlog", "a refused start changes nothing");

    let t = env.run(&["start", &n, "--assign", "oppy", "--as", "lead-2", "--json"]).ok().json();
    assert_eq!((t["status"].as_str(), t["brother"].as_str()), (Some("launched"), Some("oppy")), "{t}");
    // The brother's settings, as for `run`.
    assert_eq!((t["agent"].as_str(), t["sandbox"].as_str()), (Some("self-test"), Some("read")), "{t}");
    let done = wait_done(&env, id);
    assert_eq!(done["status"], "completed", "{done}");
    let prompt = std::fs::read(remote_dir(&env, id).join("prompt")).unwrap();
    assert!(prompt.ends_with(b"fix the parser\n\nthe details\non two lines"), "{}", String::from_utf8_lossy(&prompt));
    let show = env.run(&["show", &n, "--json"]).ok().json();
    let history: Vec<&str> = show["history"].as_array().unwrap().iter().map(|h| h["to"].as_str().unwrap()).collect();
    assert_eq!(history[..3], ["backlog", "queued", "launching"], "{show}");
    assert_eq!(show["history"][1]["reason"], "started from the backlog by lead-2");
    assert_eq!(show["runs"][0]["author"], "lead-2");
    // Once only.
    let again = env.run(&["start", &n, "--assign", "oppy"]).fails_with(35);
    assert!(again.stderr().contains("it is completed, not in the backlog"), "{again}");
    assert_eq!(env.run(&["show", &n, "--json"]).ok().json()["runs"].as_array().unwrap().len(), 1);
}

#[test]
fn an_assigned_backlog_task_starts_on_its_brother_and_one_can_be_cancelled_unstarted() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let unknown = env.run(&["new", "t", "--assign", "nobody"]).fails_with(3);
    assert!(unknown.stderr().contains("nobody"), "{unknown}");
    let id = launch(&env, &["new", "write the docs", "--assign", "oppy", "--json"]);
    let text = env.run(&["show", &id.to_string(), "--no-sync"]).ok().stdout();
    assert!(text.contains("brother   oppy") && text.contains("priority  medium"), "{text}");
    let t = env.run(&["start", &id.to_string(), "--json"]).ok().json();
    assert_eq!((t["status"].as_str(), t["brother"].as_str()), (Some("launched"), Some("oppy")), "{t}");
    assert_eq!(wait_done(&env, id)["status"], "completed");

    let other = launch(&env, &["new", "never mind", "--json"]);
    let t = env.run(&["cancel", &other.to_string(), "--json"]).ok().json();
    assert_eq!(t["status"], "cancelled", "{t}");
    assert_eq!(t["reason"], "cancelled in the backlog; it was never started");
    env.run(&["start", &other.to_string(), "--assign", "oppy"]).fails_with(35);
}

#[test]
fn a_parent_lists_its_children_with_their_states_and_how_many_are_done() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let parent = launch(&env, &["new", "the release", "--json"]);
    let p = parent.to_string();
    let first = launch(&env, &["run", "oppy", "part one", "--parent", &p, "--priority", "low", "--json"]);
    assert_eq!(wait_done(&env, first)["status"], "completed");
    let second = launch(&env, &["new", "part two", "--parent", &p, "--json"]);
    let child = env.run(&["show", &second.to_string(), "--json"]).ok().json();
    assert_eq!(child["parent"], parent, "{child}");

    let show = env.run(&["show", &p, "--json"]).ok().json();
    let children: Vec<(i64, &str, &str)> = show["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_i64().unwrap(), c["status"].as_str().unwrap(), c["priority"].as_str().unwrap()))
        .collect();
    assert_eq!(children, [(first, "completed", "low"), (second, "backlog", "medium")], "{show}");
    assert_eq!(show["children_done"], 1);
    let text = env.run(&["show", &p]).ok().stdout();
    assert!(text.contains("children  1 of 2 done"), "{text}");
    assert!(text.contains(&format!("  {first:<6} completed      low    part one")), "{text}");
    // A child shows nothing of its own children; a parent must exist.
    assert_eq!(env.run(&["show", &first.to_string(), "--json"]).ok().json()["children"], serde_json::json!([]));
    for args in [vec!["run", "oppy", "x", "--parent", "999"], vec!["new", "x", "--parent", "999"]] {
        let refused = env.run(&args).fails_with(2);
        assert!(refused.stderr().contains("no task 999 to be the parent"), "{refused}");
    }
    assert_eq!(env.run(&["list", "--json"]).ok().json().as_array().unwrap().len(), 3, "a refused task is not recorded");
}

#[test]
fn a_backlog_task_started_over_its_brothers_cap_queues_then_runs_when_the_slot_frees() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    env.add_brother("oppy", "h", &host, "self-test", "read");
    env.config_append("max_concurrent = 1\n");
    let busy = launch(&env, &["oppy", "dawdle\n@self-test sleep 20", "--max-turns", "100", "--json"]);
    let id = launch(&env, &["new", "after that", "--assign", "oppy", "--json"]);
    let t = env.run(&["start", &id.to_string(), "--json"]).ok().json();
    assert_eq!(t["status"], "queued", "the cap holds it like any queued task: {t}");
    env.run(&["cancel", &busy.to_string()]).ok();
    // The next command that finds the slot free starts it.
    assert_eq!(wait_done(&env, id)["status"], "completed");
}

#[test]
fn waiting_on_a_parents_children_waits_for_each_of_them_and_says_if_all_completed() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let parent = launch(&env, &["new", "the release", "--json"]);
    let p = parent.to_string();
    let none = env.run(&["wait", &p, "--children"]).fails_with(2);
    assert!(none.stderr().contains(&format!("task {parent} has no children")), "{none}");
    let slow = launch(&env, &["oppy", "slow part\n@self-test sleep 2", "--parent", &p, "--json"]);
    let quick = launch(&env, &["oppy", "quick part", "--parent", &p, "--json"]);
    let all = env.run(&["wait", &p, "--children", "--timeout", "60s", "--interval-ms", "200", "--json"]).ok().json();
    let got: Vec<(i64, &str)> = all["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_i64().unwrap(), t["status"].as_str().unwrap()))
        .collect();
    assert_eq!(got, [(slow, "completed"), (quick, "completed")], "the parent itself is not waited on: {all}");
    // One child failing makes the whole not completed (exit 7), as for `wait` of several.
    launch(&env, &["oppy", "broken part\n@self-test fail 3", "--parent", &p, "--json"]);
    env.run(&["wait", &p, "--children", "--timeout", "60s", "--interval-ms", "200"]).fails_with(7);
}

#[test]
fn comments_go_in_the_thread_with_their_author_and_bad_ones_are_refused() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let draft = launch(&env, &["new", "plan the work", "--json"]);
    let done = launch(&env, &["oppy", "do it", "--json"]);
    assert_eq!(wait_done(&env, done)["status"], "completed");
    let execs_before = execs(&host);
    env.run(&["comment", &draft.to_string(), "split it in two", "--as", "reviewer-1"]).ok();
    env.run(&["comment", &done.to_string(), "looks right \u{1b}]52;c;SGk=\u{7}to me"]).ok();
    assert_eq!(execs(&host), execs_before, "a comment is not sent to the brother");

    let show = env.run(&["show", &draft.to_string(), "--json"]).ok().json();
    let m = &show["messages"][0];
    assert_eq!((m["direction"].as_str(), m["kind"].as_str()), (Some("note"), Some("comment")), "{show}");
    assert_eq!((m["author"].as_str(), m["text"].as_str()), (Some("reviewer-1"), Some("split it in two")));
    let last = show["thread"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["kind"].as_str(), last["text"].as_str()),
        (Some("note"), Some("reviewer-1 (comment): split it in two"))
    );
    // The local user by default; shown in the thread without the escape sequence.
    let text = env.run(&["show", &done.to_string()]).ok().stdout();
    let line = text.lines().find(|l| l.contains("(comment)")).unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("tester (comment): looks right") && !line.contains('\u{1b}') && !line.contains('\u{7}'),
        "{line:?}"
    );

    let empty = env.run(&["comment", &done.to_string(), "  "]).fails_with(2);
    assert!(empty.stderr().contains("the comment is empty"), "{empty}");
    let big = "x".repeat(8001);
    let long = env.run(&["comment", &done.to_string(), &big]).fails_with(2);
    assert!(long.stderr().contains("over the 8000-byte limit"), "{long}");
    env.run(&["comment", "999", "hello"]).fails_with(6);
    let show = env.run(&["show", &done.to_string(), "--json"]).ok().json();
    let comments = show["messages"].as_array().unwrap().iter().filter(|m| m["kind"] == "comment").count();
    assert_eq!(comments, 1, "refused comments are not recorded: {show}");
}

/// The board's columns as (column, [task ids]) pairs, from `board --json`.
fn columns(env: &Env, extra: &[&str]) -> Vec<(String, Vec<i64>)> {
    let mut args = vec!["board", "--json"];
    args.extend_from_slice(extra);
    let board = env.run(&args).ok().json();
    board["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["cards"].as_array().unwrap().iter().map(|t| t["id"].as_i64().unwrap()).collect();
            (c["column"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

fn version(env: &Env, id: i64) -> String {
    env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json()["version"].to_string()
}

#[test]
fn the_board_places_each_task_by_its_state_and_orders_by_priority_then_age() {
    let host = FakeHost::start();
    install_agent(
        &host,
        "claude",
        "#!/bin/bash\ncat >/dev/null\n\"$DELEGATE_TASK_DIR/report\" status needs_input \"which one?\"\n\
         echo '{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s\"}'\nsleep 30\n",
    );
    let env = Env::new();
    env.add_host("h", &host);
    env.add_brother("oppy", "h", &host, "self-test", "read");
    env.config_append("max_concurrent = 1\n");
    env.add_brother("asker", "h", &host, "claude", "read");

    let low = launch(&env, &["new", "low one", "--priority", "low", "--json"]);
    let high_old = launch(&env, &["new", "high, older", "--priority", "high", "--json"]);
    let medium = launch(&env, &["new", "medium one", "--json"]);
    let high_new = launch(&env, &["new", "high, newer", "--priority", "high", "--json"]);
    let done = launch(&env, &["oppy", "finish", "--json"]);
    assert_eq!(wait_done(&env, done)["status"], "completed");
    let busy = launch(&env, &["oppy", "dawdle\n@self-test sleep 20", "--max-turns", "100", "--json"]);
    let waiting = launch(&env, &["oppy", "next in line", "--json"]);
    let asking = launch(&env, &["asker", "ask me", "--json"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while env.run(&["show", &asking.to_string(), "--json"]).ok().json()["status"] != "needs_input" {
        assert!(std::time::Instant::now() < deadline, "the asking agent never reached needs_input");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // As the mailbox has it now: the next sync may take the asking task back to running
    // (the brother's needs_input report is read once; see the report).
    let board = columns(&env, &["--no-sync"]);
    let expected: Vec<(String, Vec<i64>)> = [
        ("backlog", vec![high_old, high_new, medium, low]),
        ("todo", vec![waiting]),
        ("in_progress", vec![busy]),
        ("needs_you", vec![asking]),
        ("review", vec![done]),
        ("done", vec![]),
    ]
    .into_iter()
    .map(|(c, ids)| (c.to_string(), ids))
    .collect();
    assert_eq!(board, expected);
    // One brother's tasks only; the text form has every column, needs-you included.
    let asker = columns(&env, &["--brother", "asker", "--no-sync"]);
    assert_eq!(asker.iter().map(|(_, ids)| ids.len()).sum::<usize>(), 1, "{asker:?}");
    let text = env.run(&["board", "--no-sync"]).ok().stdout();
    for header in ["BACKLOG (4)", "TODO (1)", "IN PROGRESS (1)", "NEEDS YOU (1)", "REVIEW (1)", "DONE (0)"] {
        assert!(text.contains(header), "{header} in:\n{text}");
    }
    let limited = env.run(&["board", "--json", "--limit", "1", "--no-sync"]).ok().json();
    assert_eq!(limited["columns"][0]["count"], 4);
    assert_eq!(limited["columns"][0]["cards"].as_array().unwrap().len(), 1);
    for id in [busy, waiting, asking] {
        env.run(&["cancel", &id.to_string()]).ok();
    }
}

#[test]
fn a_finished_task_moves_from_review_to_done_only_at_the_version_read() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = launch(&env, &["oppy", "finish", "--json"]);
    assert_eq!(wait_done(&env, id)["status"], "completed");
    let n = id.to_string();
    let v = version(&env, id);
    let moved = env.run(&["move", &n, "done", "--version", &v, "--as", "rev", "--json"]).ok().json();
    assert_eq!(moved["column"], "done", "{moved}");
    assert_eq!(moved["version"].as_i64(), Some(v.parse::<i64>().unwrap() + 1));
    assert_eq!(columns(&env, &["--no-sync"])[5], ("done".to_string(), vec![id]));
    // The old version is stale: a conflict with its own exit code, telling to re-read.
    let stale = env.run(&["move", &n, "review", "--version", &v]).fails_with(34);
    assert!(stale.stderr().contains("Re-read it"), "{stale}");
    assert_eq!(columns(&env, &["--no-sync"])[5].1, [id], "the stale move changed nothing");
    let show = env.run(&["show", &n, "--json", "--no-sync"]).ok().json();
    let notes: Vec<&str> = show["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "move")
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(notes, ["moved from review to done"], "{show}");
    // Columns that follow the state are not moved by hand; the refusal says what does it.
    let back = env.run(&["move", &n, "backlog", "--version", &version(&env, id)]).fails_with(2);
    assert!(back.stderr().contains(&format!("delegate reopen {id}")), "{back}");
    let draft = launch(&env, &["new", "later", "--json"]);
    let start = env.run(&["move", &draft.to_string(), "todo", "--version", "1"]).fails_with(2);
    assert!(start.stderr().contains(&format!("delegate start {draft}")), "{start}");
    env.run(&["move", &n, "doing", "--version", "1"]).fails_with(2);
    // A reopened task is under review again once it finishes.
    env.run(&["reopen", &n, "once more"]).ok();
    assert_eq!(wait_done(&env, id)["status"], "completed");
    assert_eq!(columns(&env, &["--no-sync"])[4].1, [id]);
}

#[test]
fn two_processes_moving_one_task_at_once_exactly_one_wins() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let ids: Vec<i64> = (0..3).map(|i| launch(&env, &["oppy", &format!("task {i}"), "--json"])).collect();
    for id in &ids {
        assert_eq!(wait_done(&env, *id)["status"], "completed");
    }
    for id in ids {
        let (n, v) = (id.to_string(), version(&env, id));
        // Both read version v, then both move: whichever commits first wins.
        let children: Vec<_> = ["a", "b"]
            .iter()
            .map(|who| {
                env.command()
                    .args(["move", &n, "done", "--version", &v, "--as", who])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
        let mut codes: Vec<i32> = outs.iter().map(|o| o.status.code().unwrap()).collect();
        codes.sort();
        assert_eq!(codes, [0, 34], "{outs:?}");
        let show = env.run(&["show", &n, "--json", "--no-sync"]).ok().json();
        assert_eq!(show["version"].to_string(), (v.parse::<i64>().unwrap() + 1).to_string());
        let moves = show["messages"].as_array().unwrap().iter().filter(|m| m["kind"] == "move").count();
        assert_eq!(moves, 1, "{show}");
    }
}

#[test]
fn a_review_accepts_a_finished_task_or_rejects_it_back_to_the_agent_with_the_note() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let good = launch(&env, &["oppy", "write it", "--json"]);
    let bad = launch(&env, &["oppy", "write the other", "--json"]);
    for id in [good, bad] {
        assert_eq!(wait_done(&env, id)["status"], "completed");
    }
    env.run(&["review", &good.to_string(), "accept", "fine", "--as", "rev"]).ok();
    assert_eq!(columns(&env, &["--no-sync"])[5].1, [good]);
    let again = env.run(&["review", &good.to_string(), "accept"]).fails_with(2);
    assert!(again.stderr().contains("not waiting for review (it is in done)"), "{again}");

    let bare = env.run(&["review", &bad.to_string(), "reject"]).fails_with(2);
    assert!(bare.stderr().contains("a rejection needs a note"), "{bare}");
    let t = env.run(&["review", &bad.to_string(), "reject", "add the tests too", "--as", "rev", "--json"]).ok().json();
    assert_eq!(t["status"], "launched", "reopened: {t}");
    assert_eq!(columns(&env, &["--no-sync"])[2].1, [bad], "in progress again");
    let done = wait_done(&env, bad);
    assert_eq!(done["runs"].as_array().unwrap().len(), 2, "{done}");
    let follow_up =
        std::fs::read_to_string(format!("{}/prompt", done["runs"][1]["remote_dir"].as_str().unwrap())).unwrap();
    assert!(follow_up.ends_with("add the tests too"), "{follow_up}");
    assert_eq!(columns(&env, &["--no-sync"])[4].1, [bad], "back in review once the new run ended");
    let show = env.run(&["show", &bad.to_string(), "--json", "--no-sync"]).ok().json();
    let reviews: Vec<(&str, &str)> = show["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "review")
        .map(|m| (m["author"].as_str().unwrap(), m["text"].as_str().unwrap()))
        .collect();
    assert_eq!(reviews, [("rev", "rejected: add the tests too")], "{show}");
    let show = env.run(&["show", &good.to_string(), "--json", "--no-sync"]).ok().json();
    assert!(
        show["messages"].as_array().unwrap().iter().any(|m| m["kind"] == "review" && m["text"] == "accepted: fine"),
        "{show}"
    );
}
