//! Roles on the shared board ([roles] in the inventory), `delete`, the board's filters
//! (`--mine`, `--review`), `review --count`, `new --profile`, and a rejection of a task whose
//! agent cannot resume.

use delegate_testkit::FakeHost;

use crate::support::{Env, execs, launch, wait_done};

const ROLES: &str =
    "[roles]\nboss = \"manager\"\nrev = \"reviewer\"\nwork = \"worker\"\noppy = \"worker\"\n\"*\" = \"observer\"\n";

fn ids_in(env: &Env, column: &str, extra: &[&str]) -> Vec<i64> {
    let mut args = vec!["board", "--json", "--no-sync"];
    args.extend_from_slice(extra);
    let board = env.run(&args).ok().json();
    let c = board["columns"].as_array().unwrap().iter().find(|c| c["column"] == column).cloned();
    c.map(|c| c["cards"].as_array().unwrap().iter().map(|t| t["id"].as_i64().unwrap()).collect()).unwrap_or_default()
}

fn task_count(env: &Env) -> usize {
    env.run(&["list", "--json", "--no-sync"]).ok().json().as_array().unwrap().len()
}

#[test]
fn each_role_may_do_what_it_is_for_and_a_refusal_names_the_role_and_who_has_it() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    env.add_brother("jerry", "h", &host, "self-test", "read");
    // Before any [roles], everyone is a manager: `work` launches a task of its own.
    let own = launch(&env, &["oppy", "work's own", "--as", "work", "--json"]);
    let other = launch(&env, &["oppy", "somebody else's", "--json"]);
    let jerrys = launch(&env, &["jerry", "on another brother", "--json"]);
    for id in [own, other, jerrys] {
        assert_eq!(wait_done(&env, id)["status"], "completed");
    }
    env.config_append(ROLES);
    let (own_n, other_n) = (own.to_string(), other.to_string());
    let before = task_count(&env);

    // The local user ("tester") is not listed: an observer, by "*".
    let refused = env.run(&["new", "a plan"]).fails_with(38);
    let msg = refused.stderr();
    for part in ["tester is an observer", "creating a task needs the manager role", "Who has it: boss", "[roles]"] {
        assert!(msg.contains(part), "{part:?} in {refused}");
    }
    // A worker: comments anywhere, changes only its own tasks, creates and launches nothing.
    let sent = execs(&host);
    env.run(&["run", "oppy", "go", "--as", "work"]).fails_with(38);
    assert_eq!(execs(&host), sent, "a refused launch sends nothing:\n{}", host.sshd_log());
    env.run(&["comment", &other_n, "looks odd", "--as", "work"]).ok();
    let not_own = env.run(&["reopen", &other_n, "again", "--as", "work"]).fails_with(38);
    assert!(not_own.stderr().contains(&format!("task {other} is not work's")), "{not_own}");
    env.run(&["update", &other_n, "--status", "failed", "--as", "work"]).fails_with(38);
    env.run(&["review", &other_n, "accept", "--as", "work"]).fails_with(38);
    let t = env.run(&["reopen", &own_n, "once more", "--as", "work", "--json"]).ok().json();
    assert_eq!(t["runs"].as_array().unwrap().len(), 2, "{t}");
    assert_eq!(wait_done(&env, own)["status"], "completed");
    // An observer reads, and may not comment; the refusal lists who may.
    env.run(&["board", "--no-sync"]).ok();
    let quiet = env.run(&["comment", &other_n, "me too", "--as", "eve"]).fails_with(38);
    assert!(
        quiet.stderr().contains("needs the worker role") && quiet.stderr().contains("boss, oppy, rev, work"),
        "{quiet}"
    );
    // A reviewer reviews and comments, and moves nothing by hand.
    let v = env.run(&["show", &other_n, "--json", "--no-sync"]).ok().json()["version"].to_string();
    let moved = env.run(&["move", &other_n, "done", "--version", &v, "--as", "rev"]).fails_with(38);
    assert!(moved.stderr().contains("moving a task on the board needs the manager role"), "{moved}");
    env.run(&["new", "x", "--as", "rev"]).fails_with(38);
    env.run(&["delete", &other_n, "--as", "rev"]).fails_with(38);
    env.run(&["review", &other_n, "accept", "fine", "--as", "rev"]).ok();
    // Nothing refused was recorded: no task, no move, no note, no run.
    assert_eq!(task_count(&env), before);
    let show = env.run(&["show", &other_n, "--json", "--no-sync"]).ok().json();
    let notes: Vec<(String, String, String)> = show["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "note")
        .map(|m| (m["author"].to_string(), m["kind"].to_string(), m["text"].to_string()))
        .collect();
    let expected = [
        ("work", "comment", "looks odd"),
        ("rev", "move", "moved from review to done"),
        ("rev", "review", "accepted: fine"),
    ];
    let expected: Vec<(String, String, String)> =
        expected.iter().map(|(a, k, t)| (format!("\"{a}\""), format!("\"{k}\""), format!("\"{t}\""))).collect();
    assert_eq!(notes, expected, "{show}");
    assert_eq!(show["runs"].as_array().unwrap().len(), 1);

    // A manager does it all; DELEGATE_AGENT_ID names the asker as --as does.
    let draft = env.run_with_env(&["new", "the plan", "--json"], &[("DELEGATE_AGENT_ID", "boss")]).ok().json();
    let draft = draft["id"].as_i64().unwrap();
    env.run(&["start", &draft.to_string(), "--assign", "oppy", "--as", "work"]).fails_with(38);
    env.run(&["start", &draft.to_string(), "--assign", "oppy", "--as", "boss"]).ok();
    assert_eq!(wait_done(&env, draft)["status"], "completed");
    let over_env = env.run_with_env(&["cancel", &draft.to_string()], &[("DELEGATE_AGENT_ID", "eve")]).fails_with(38);
    assert!(over_env.stderr().contains("eve is an observer"), "{over_env}");
    env.run(&["delete", &draft.to_string(), "--as", "boss"]).ok();
    env.run(&["show", &draft.to_string(), "--no-sync"]).fails_with(6);

    // An agent on a brother given delegate itself, named after its brother: a worker there.
    // It changes the tasks that run on its brother and nothing else.
    let agent = [("DELEGATE_AGENT_ID", "oppy")];
    for args in [
        vec!["run", "jerry", "more work"],
        vec!["update", &jerrys.to_string(), "--status", "failed"],
        vec!["cancel", &jerrys.to_string()],
        vec!["delete", &jerrys.to_string()],
    ] {
        let r = env.run_with_env(&args, &agent).fails_with(38);
        assert!(r.stderr().contains("oppy is a worker"), "{r}");
    }
    let t = env.run_with_env(&["update", &other_n, "--status", "failed", "--output", "a flaw", "--json"], &agent).ok();
    assert_eq!(t.json()["status"], "failed");
    assert_eq!(task_count(&env), before, "nothing recorded by the refused ones");
}

#[test]
fn roles_that_are_not_roles_are_refused_when_the_inventory_loads() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    env.config_append("[roles]\nalice = \"boss\"\n");
    let bad = env.run(&["board", "--no-sync"]).fails_with(3);
    assert!(bad.stderr().contains("unknown variant `boss`") && bad.stderr().contains("`manager`"), "{bad}");
}

#[test]
fn delete_removes_a_backlog_or_finished_task_and_never_one_an_agent_may_be_working_on() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let busy = launch(&env, &["oppy", "dawdle\n@self-test sleep 60", "--max-turns", "100", "--json"]);
    let refused = env.run(&["delete", &busy.to_string()]).fails_with(16);
    assert!(refused.stderr().contains(&format!("delegate cancel {busy}")), "{refused}");
    let t = env.run(&["show", &busy.to_string(), "--json"]).ok().json();
    assert!(matches!(t["status"].as_str(), Some("launched" | "running")), "still tracked and running: {t}");

    let parent = launch(&env, &["new", "the parent", "--json"]);
    let child = launch(&env, &["new", "a part", "--parent", &parent.to_string(), "--json"]);
    let has_child = env.run(&["delete", &parent.to_string()]).fails_with(2);
    assert!(has_child.stderr().contains(&format!("has children ({child})")), "{has_child}");
    let gone = env.run(&["delete", &child.to_string(), "--json"]).ok().json();
    assert_eq!((gone["deleted"].as_i64(), gone["status"].as_str()), (Some(child), Some("backlog")), "{gone}");
    env.run(&["delete", &parent.to_string()]).ok();

    // A finished task with a thread (events, reports, notes): all of it goes, nothing else.
    env.run(&["cancel", &busy.to_string()]).ok();
    let done = launch(&env, &["oppy", "finish", "--json"]);
    assert_eq!(wait_done(&env, done)["status"], "completed");
    env.run(&["comment", &done.to_string(), "noted"]).ok();
    env.run(&["delete", &done.to_string()]).ok();
    env.run(&["show", &done.to_string(), "--no-sync"]).fails_with(6);
    env.run(&["delete", &done.to_string()]).fails_with(6);
    let left: Vec<i64> = env
        .run(&["list", "--json", "--no-sync"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    assert_eq!(left, [busy], "the cancelled task stays until deleted");
    let mail = env.run(&["mailbox", "--json", "--no-sync"]).ok().json();
    assert!(mail.as_array().unwrap().iter().all(|m| m["task"] != done), "no report of the deleted task: {mail}");
}

#[test]
fn the_board_narrows_to_my_tasks_or_the_review_column_and_review_count_is_a_number() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    env.config_append("[profiles.brief]\nmax_turns = 3\n");
    let alices = launch(&env, &["new", "alice's plan", "--as", "alice", "--json"]);
    let bobs = launch(&env, &["oppy", "bob's run", "--as", "bob", "--json"]);
    let assigned = launch(&env, &["new", "for oppy", "--assign", "oppy", "--as", "carol", "--json"]);
    assert_eq!(wait_done(&env, bobs)["status"], "completed");

    let all = |column: &str, extra: &[&str]| ids_in(&env, column, extra);
    assert_eq!(all("backlog", &["--mine", "--as", "alice"]), [alices]);
    assert_eq!(all("review", &["--mine", "--as", "alice"]), Vec::<i64>::new());
    // The brother's own name finds what runs there.
    assert_eq!(all("backlog", &["--mine", "--as", "oppy"]), [assigned]);
    assert_eq!(all("review", &["--mine", "--as", "oppy"]), [bobs]);
    let review = env.run(&["board", "--review", "--json", "--no-sync"]).ok().json();
    let columns: Vec<&str> =
        review["columns"].as_array().unwrap().iter().map(|c| c["column"].as_str().unwrap()).collect();
    assert_eq!(columns, ["review"], "{review}");
    assert_eq!(review["columns"][0]["cards"][0]["created_by"], "bob", "{review}");
    let text = env.run(&["board", "--review", "--no-sync"]).ok().stdout();
    assert!(text.starts_with("REVIEW (1)") && !text.contains("BACKLOG"), "{text}");

    assert_eq!(env.run(&["review", "--count", "--no-sync"]).ok().stdout(), "1\n");
    env.run(&["review", &bobs.to_string(), "accept"]).ok();
    assert_eq!(env.run(&["review", "--count", "--json", "--no-sync"]).ok().json()["review"], 0);
    env.run(&["review", "--count", &bobs.to_string()]).fails_with(2);
    env.run(&["review"]).fails_with(2);

    // `new --profile`: checked when recorded, kept, and used by `start`.
    let before = task_count(&env);
    let unknown = env.run(&["new", "x", "--profile", "nope"]).fails_with(3);
    assert!(unknown.stderr().contains("brief"), "names the profiles there are: {unknown}");
    let nobody = env.run(&["new", "x", "--assign", "nobody"]).fails_with(3);
    assert!(nobody.stderr().contains("oppy"), "names the brothers there are: {nobody}");
    assert_eq!(task_count(&env), before, "nothing recorded for a refused new");
    let profiled = launch(&env, &["new", "short one", "--assign", "oppy", "--profile", "brief", "--json"]);
    let t = env.run(&["start", &profiled.to_string(), "--json"]).ok().json();
    assert_eq!(t["max_turns"], 3, "{t}");
    assert_eq!(t["settings"]["max_turns"]["from"], "profile brief", "{t}");
    wait_done(&env, profiled);
}

#[test]
fn rejecting_a_task_whose_agent_cannot_resume_keeps_the_verdict_and_loses_nothing() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    env.config_append("[agents.mine]\ncommand = [\"codex\"]\n");
    env.add_brother("jerry", "h", &host, "mine", "full");
    let id = launch(&env, &["jerry", "once", "--json"]);
    let before = wait_done(&env, id);
    let n = id.to_string();
    let run = env.run(&["review", &n, "reject", "add the tests", "--as", "rev"]).fails_with(17);
    assert!(run.stderr().contains("cannot be reopened") && run.stderr().contains("custom command"), "{run}");
    let after = env.run(&["show", &n, "--json", "--no-sync"]).ok().json();
    assert_eq!(
        (after["status"].clone(), after["version"].clone()),
        (before["status"].clone(), before["version"].clone())
    );
    assert_eq!(after["runs"].as_array().unwrap().len(), 1, "no run was added: {after}");
    assert_eq!(ids_in(&env, "review", &[]), [id], "still waiting for review");
    let verdicts: Vec<&str> = after["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "review" && m["author"] == "rev")
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["rejected: add the tests"], "the verdict is kept in the thread: {after}");
}

/// `delegate mcp` as a client named "e2e-lead", with extra environment variables.
async fn mcp_client(
    env: &Env,
    vars: &[(&str, &str)],
) -> rmcp::service::RunningService<rmcp::RoleClient, rmcp::model::ClientConfig> {
    use rmcp::ServiceExt;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_delegate"));
    cmd.arg("mcp").env_clear().envs(env.envs()).envs(vars.iter().copied()).current_dir(&env.home);
    let transport = rmcp::transport::TokioChildProcess::new(cmd).expect("spawn delegate mcp");
    let me = rmcp::model::ClientConfig::new(
        rmcp::model::ClientCapabilities::default(),
        rmcp::model::Implementation::new("e2e-lead", "1.0"),
    );
    tokio::time::timeout(std::time::Duration::from_secs(20), me.serve(transport))
        .await
        .expect("initialize within 20 s")
        .expect("initialize")
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_board_tools_run_the_board_under_the_same_roles() {
    use crate::mcp::{err, ok};
    use serde_json::json;
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    env.config_append("[roles]\nboss = \"manager\"\n\"e2e-lead\" = \"worker\"\n");
    // The client's name is its identity: a worker here.
    let lead = mcp_client(&env, &[]).await;
    let (code, message) = err(&lead, "create_task", json!({"title": "plan it"})).await;
    assert_eq!(code, "role_refused", "{message}");
    assert!(message.contains("e2e-lead is a worker") && message.contains("Who has it: boss"), "{message}");
    assert_eq!(task_count(&env), 0, "nothing recorded");

    let t = ok(
        &lead,
        "create_task",
        json!({"title": "plan it", "description": "in detail", "priority": "high", "assign": "oppy", "as": "boss"}),
    )
    .await;
    let id = t["id"].as_i64().unwrap();
    assert_eq!((t["status"].as_str(), t["priority"].as_str()), (Some("backlog"), Some("high")), "{t}");
    let board = ok(&lead, "board", json!({})).await;
    let backlog = &board["columns"][0];
    assert_eq!((backlog["column"].as_str(), backlog["count"].as_i64()), (Some("backlog"), Some(1)), "{board}");
    assert_eq!(backlog["cards"][0]["created_by"], "boss", "{board}");
    let (code, _) = err(&lead, "start_task", json!({"id": id})).await;
    assert_eq!(code, "role_refused");
    let started = ok(&lead, "start_task", json!({"id": id, "as": "boss"})).await;
    assert!(matches!(started["status"].as_str(), Some("launched" | "queued")), "{started}");
    ok(&lead, "wait_tasks", json!({"ids": [id], "timeout_seconds": 90})).await;
    ok(&lead, "comment", json!({"id": id, "text": "seen it"})).await;

    // DELEGATE_AGENT_ID in the server's environment names the asker before the client's name.
    let boss = mcp_client(&env, &[("DELEGATE_AGENT_ID", "boss")]).await;
    let review = ok(&boss, "board", json!({"review_only": true})).await;
    let columns = review["columns"].as_array().unwrap();
    assert_eq!((columns.len(), columns[0]["cards"][0]["id"].as_i64()), (1, Some(id)), "{review}");
    let version = columns[0]["cards"][0]["version"].as_i64().unwrap();
    let (code, _) = err(&lead, "move_task", json!({"id": id, "column": "done", "version": version})).await;
    assert_eq!(code, "role_refused");
    let (code, _) = err(&lead, "review", json!({"id": id, "verdict": "accept"})).await;
    assert_eq!(code, "role_refused");
    let moved = ok(&boss, "move_task", json!({"id": id, "column": "done", "version": version})).await;
    assert_eq!(moved["column"], "done", "{moved}");
    let (code, message) = err(&boss, "move_task", json!({"id": id, "column": "review", "version": version})).await;
    assert_eq!(code, "stale_version", "{message}");
    let (code, _) = err(&boss, "review", json!({"id": id, "verdict": "accept"})).await;
    assert_eq!(code, "bad_arguments", "not in review any more");
    let show = env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json();
    let notes: Vec<(&str, &str)> = show["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "note")
        .map(|m| (m["author"].as_str().unwrap(), m["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(notes, [("e2e-lead", "comment"), ("boss", "move")], "{show}");
    assert_eq!(show["runs"][0]["author"], "boss", "{show}");

    let (code, _) = err(&lead, "delete_task", json!({"id": id})).await;
    assert_eq!(code, "role_refused");
    let deleted = ok(&boss, "delete_task", json!({"id": id})).await;
    assert_eq!(deleted["deleted"].as_i64(), Some(id), "{deleted}");
    assert_eq!(task_count(&env), 0);
    lead.cancel().await.ok();
    boss.cancel().await.ok();
}
