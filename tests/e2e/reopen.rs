//! Reopen: follow-up runs that resume the agent's own session.

use std::time::Duration;

use delegate_testkit::FakeHost;

use crate::support::{Env, install_agent, launch, wait_done};

#[test]
fn a_reopened_self_test_task_runs_again_with_its_own_evidence() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let id = launch(&env, &["oppy", "first part", "--json"]);
    assert_eq!(wait_done(&env, id)["status"], "completed");
    let t = env.run(&["reopen", &id.to_string(), "second part", "--as", "lead-2", "--json"]).ok().json();
    assert_eq!(t["status"], "launched", "{t}");
    let t = wait_done(&env, id);
    assert_eq!(t["status"], "completed", "{t}");
    let runs = t["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{t}");
    assert_ne!(runs[0]["session"], runs[1]["session"]);
    assert_ne!(runs[0]["remote_dir"], runs[1]["remote_dir"]);
    for r in runs {
        assert!(r["marker"].as_str().unwrap().contains(r["nonce"].as_str().unwrap()), "{r}");
        assert_eq!(r["exit_code"], 0);
    }
    // Each run reported on its own: two receipts, in run order.
    let show = env.run(&["show", &id.to_string(), "--json"]).ok().json();
    let receipts: Vec<i64> = show["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "receipt")
        .map(|m| m["run_no"].as_i64().unwrap())
        .collect();
    assert_eq!(receipts, [1, 2], "{show}");
    let history: Vec<&str> = show["history"].as_array().unwrap().iter().map(|h| h["to"].as_str().unwrap()).collect();
    assert_eq!(history.iter().filter(|s| **s == "launching").count(), 2, "{history:?}");
    // The thread reads in order: prompt, ..., completed, reopen (by lead-2), ..., completed.
    let thread: Vec<(String, String)> = show["thread"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["kind"].as_str().unwrap().to_string(), i["text"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(thread[0], ("prompt".to_string(), "first part".to_string()), "{thread:?}");
    let reopen_at = thread.iter().position(|(k, _)| k == "reopen").expect("a reopen item");
    assert_eq!(thread[reopen_at].1, "second part");
    assert!(thread[..reopen_at].iter().any(|(k, t)| k == "status" && t == "completed"), "{thread:?}");
    assert_eq!(show["thread"][reopen_at]["author"], "lead-2");
    // The first prompt's author is the local user when nobody says otherwise.
    assert_eq!(show["thread"][0]["author"], "tester");
    assert!(thread[reopen_at..].iter().any(|(k, t)| k == "reported" && t.contains("(receipt)")), "{thread:?}");
    let follow_up = std::fs::read_to_string(format!("{}/prompt", runs[1]["remote_dir"].as_str().unwrap())).unwrap();
    assert!(follow_up.contains("Follow-up on task") && follow_up.ends_with("second part"), "{follow_up}");
}

#[test]
fn reopening_claude_resumes_its_session_with_the_same_level_flags() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "claude", "read");
    let id = launch(&env, &["oppy", "look around", "--json"]);
    assert_eq!(wait_done(&env, id)["status"], "completed");
    env.run(&["reopen", &id.to_string(), "now the tests", "--write-scope", "src/", "--json"]).ok();
    let recs = host.wait_for_agent_records(2, Duration::from_secs(10));
    let first = recs[0].arg_value("--session-id").expect("first run assigns a session id");
    assert_eq!(recs[1].arg_value("--resume").as_deref(), Some(first.as_str()), "{:?}", recs[1].args());
    assert!(recs[1].arg_value("--session-id").is_none());
    assert_eq!(recs[1].arg_value("--permission-mode").as_deref(), Some("dontAsk"));
    assert_eq!(recs[1].arg_value("--tools").as_deref(), Some("Read,Grep,Glob"));
    let t = wait_done(&env, id);
    let prompt = std::fs::read_to_string(format!("{}/prompt", t["runs"][1]["remote_dir"].as_str().unwrap())).unwrap();
    assert!(prompt.contains("you may change only these paths") && prompt.contains("src/"), "{prompt}");
}

#[test]
fn reopening_codex_uses_exec_resume_with_the_thread_id() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "codex", "write");
    let id = launch(&env, &["oppy", "fix it", "--json"]);
    let t = wait_done(&env, id);
    let thread = t["runs"][0]["facts"]["session_id"].as_str().expect("thread id from thread.started").to_string();
    env.run(&["reopen", &id.to_string(), "and the docs", "--json"]).ok();
    let recs = host.wait_for_agent_records(2, Duration::from_secs(10));
    let args = recs[1].args();
    let n = args.len();
    assert_eq!(&args[n - 3..], ["resume", thread.as_str(), "-"], "{args:?}");
    let sandbox_at = args.iter().position(|a| a == "--sandbox").unwrap();
    assert!(sandbox_at < n - 3 && args[sandbox_at + 1] == "workspace-write", "{args:?}");
}

#[test]
fn reopen_refuses_a_running_task_and_an_agent_without_sessions() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    env.add_brother("oppy", "h", &host, "self-test", "read");
    env.config_append("[agents.mine]\ncommand = [\"codex\"]\n");
    env.add_brother("jerry", "h", &host, "mine", "full");
    let busy = launch(&env, &["oppy", "dawdle\n@self-test sleep 60", "--json"]);
    let run = env.run(&["reopen", &busy.to_string(), "more"]).fails_with(16);
    assert!(run.stderr().contains("still running") && run.stderr().contains("cancel"), "{run}");
    env.run(&["cancel", &busy.to_string()]).ok();

    let custom = launch(&env, &["jerry", "once", "--json"]);
    wait_done(&env, custom);
    let run = env.run(&["reopen", &custom.to_string(), "again"]).fails_with(17);
    assert!(run.stderr().contains("custom command"), "{run}");
    // Nothing was recorded for the refused reopens.
    let t = env.run(&["show", &custom.to_string(), "--json", "--no-sync"]).ok().json();
    assert_eq!(t["runs"].as_array().unwrap().len(), 1);
}

/// Like Claude Code with respect to hooks: reads `--settings`, and before each file write
/// runs the PreToolUse hooks whose matcher fits the tool, through a shell, with the hook
/// payload on stdin; a `deny` decision blocks the write. Only a resumed run writes: a real
/// file inside the scope, one beside it, and one reached through `..`.
const CLAUDE_WITH_PRE_TOOL_USE: &str = r#"#!/usr/bin/env python3
import json, os, re, subprocess, sys
sys.stdin.read()
argv = sys.argv[1:]
settings = json.load(open(argv[argv.index("--settings") + 1]))
print(json.dumps({"type": "system", "subtype": "init", "session_id": "5e55", "claude_code_version": "2.1.329"}), flush=True)
def allowed(tool, path):
    for entry in settings.get("hooks", {}).get("PreToolUse", []):
        if not re.fullmatch(entry.get("matcher", ""), tool):
            continue
        for h in entry["hooks"]:
            payload = {"session_id": "5e55", "cwd": os.getcwd(), "permission_mode": "bypassPermissions",
                       "hook_event_name": "PreToolUse", "tool_name": tool,
                       "tool_input": {"file_path": path, "content": "x"}, "tool_use_id": "toolu_1"}
            out = subprocess.run(h["command"], shell=True, input=json.dumps(payload), capture_output=True, text=True).stdout
            if out.strip() and json.loads(out)["hookSpecificOutput"]["permissionDecision"] == "deny":
                return False
    return True
if "--resume" in argv:
    cwd = os.getcwd()
    for path in [cwd + "/src/ok.txt", cwd + "/outside.txt", cwd + "/src/../escape.txt"]:
        if allowed("Write", path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "w").write("written\n")
print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "num_turns": 1, "result": "ok", "session_id": "5e55"}), flush=True)
"#;

#[test]
fn a_write_scope_is_enforced_on_claude_by_its_pre_tool_use_hook() {
    let host = FakeHost::start();
    install_agent(&host, "claude", CLAUDE_WITH_PRE_TOOL_USE);
    let env = Env::with_brother(&host, "claude", "full");
    let id = launch(&env, &["oppy", "look around", "--json"]);
    assert_eq!(wait_done(&env, id)["status"], "completed");
    let out = env.run(&["reopen", &id.to_string(), "now fix src only", "--write-scope", "src"]).ok();
    assert!(out.stdout().contains("write scope: Edit/MultiEdit/Write/NotebookEdit outside the scope refused"), "{out}");
    let t = wait_done(&env, id);
    assert_eq!(t["runs"][1]["status"], "completed", "{t}");

    let work = host.workdir();
    assert_eq!(std::fs::read_to_string(work.join("src/ok.txt")).unwrap(), "written\n");
    assert!(!work.join("outside.txt").exists(), "a write beside the scope got through");
    assert!(!work.join("escape.txt").exists(), "a write through .. got through");
    let plan = &t["runs"][1]["evidence"]["agent_plan"];
    assert_eq!(plan["write_scope"][0], format!("{}/src", work.display()));
    // The refusals are in the task's history, with the path the agent tried.
    let show = env.run(&["show", &id.to_string(), "--json"]).ok().json();
    let denied: Vec<String> = show["thread"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["text"].as_str().unwrap_or("").contains("ScopeDenied"))
        .map(|i| i["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(denied.len(), 2, "{:#}", show["thread"]);
    assert!(denied[0].contains("outside.txt") && denied[1].contains("escape.txt"), "{denied:?}");
    let text = env.run(&["show", &id.to_string()]).ok();
    assert!(text.stdout().contains("scope     ") && text.stdout().contains("PreToolUse"), "{text}");
}
