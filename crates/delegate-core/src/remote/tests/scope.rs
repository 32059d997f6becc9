//! The write-scope guard (`scope-guard.sh`), run as Claude Code runs a PreToolUse hook:
//! by path from another directory, the payload on stdin. It must let writes inside the
//! scope through silently and refuse everything else it cannot prove is inside.

use super::tests_helpers::run_helper;
use crate::ops::write_scope::SCOPE_GUARD;
use serde_json::Value;
use std::path::PathBuf;

struct Task {
    dir: PathBuf,
    work: PathBuf,
}

impl Task {
    /// A task directory with the guard and a scope file, and a working tree beside it.
    fn new(tag: &str, scope: &[&str]) -> Task {
        let root = std::env::temp_dir().join(format!("dlg-scope-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (dir, work) = (root.join("task"), root.join("work"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(work.join("src")).unwrap();
        std::fs::write(dir.join("scope-guard"), SCOPE_GUARD).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("scope-guard"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let lines: String =
            scope.iter().map(|s| format!("{}\n", s.replace("{work}", work.to_str().unwrap()))).collect();
        std::fs::write(dir.join("write-scope"), lines).unwrap();
        Task { dir, work }
    }

    fn w(&self, rel: &str) -> String {
        format!("{}/{rel}", self.work.display())
    }

    /// The guard's decision for a raw payload: None when it lets the call through.
    fn decide_raw(&self, payload: &str) -> Option<Value> {
        let out = run_helper(&self.dir, "scope-guard", &[], payload.as_bytes());
        assert!(out.status.success(), "the guard always exits 0: {out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        if stdout.is_empty() {
            return None;
        }
        assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
        let v: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(v["hookSpecificOutput"]["hookEventName"], "PreToolUse");
        assert_eq!(v["hookSpecificOutput"]["permissionDecision"], "deny");
        Some(v)
    }

    fn decide(&self, tool: &str, key: &str, path: &str) -> Option<Value> {
        let input = serde_json::json!({ key: path, "content": "x", "old_string": "a", "new_string": "b" });
        let payload = serde_json::json!({
            "session_id": "0f3c", "transcript_path": "/t.jsonl", "cwd": self.work, "permission_mode": "acceptEdits",
            "hook_event_name": "PreToolUse", "tool_name": tool, "tool_input": input, "tool_use_id": "toolu_1",
        });
        self.decide_raw(&payload.to_string())
    }

    fn denied_events(&self) -> Vec<Value> {
        let Ok(text) = std::fs::read_to_string(self.dir.join("events.jsonl")) else { return vec![] };
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"))).collect()
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.dir.parent().unwrap());
    }
}

fn reason(v: &Value) -> String {
    v["hookSpecificOutput"]["permissionDecisionReason"].as_str().unwrap().to_string()
}

#[test]
fn writes_inside_the_scope_pass_and_the_rest_is_refused_with_a_reason() {
    let t = Task::new("basic", &["{work}/src/"]);
    for (tool, key) in [("Write", "file_path"), ("Edit", "file_path"), ("MultiEdit", "file_path")] {
        assert_eq!(t.decide(tool, key, &t.w("src/lib.rs")), None, "{tool}");
        assert_eq!(t.decide(tool, key, &t.w("src/new/deep/mod.rs")), None, "{tool}: new dirs inside");
    }
    assert_eq!(t.decide("NotebookEdit", "notebook_path", &t.w("src/a.ipynb")), None);
    assert_eq!(t.decide("Write", "file_path", &t.w("src")), None, "the scope itself");

    let outside = t.decide("Write", "file_path", &t.w("Cargo.toml")).expect("refused");
    let why = reason(&outside);
    assert!(why.contains(&t.w("Cargo.toml")) && why.contains("outside this follow-up's write scope"), "{why}");
    assert!(why.contains(&t.w("src")), "names the scope: {why}");
    // A sibling sharing the prefix is not inside.
    assert!(t.decide("Edit", "file_path", &t.w("srcx/a.rs")).is_some());
    assert!(t.decide("NotebookEdit", "notebook_path", &t.w("b.ipynb")).is_some());

    let events = t.denied_events();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0]["event"], "ScopeDenied");
    assert_eq!(events[0]["tool"], "Write");
    assert_eq!(events[0]["summary"], t.w("Cargo.toml"));
}

#[test]
fn dot_dot_and_symlinks_do_not_lead_out() {
    let t = Task::new("links", &["{work}/src"]);
    assert!(t.decide("Write", "file_path", &t.w("src/../Cargo.toml")).is_some());
    assert!(t.decide("Write", "file_path", &t.w("src/a/../../x")).is_some());
    assert_eq!(t.decide("Write", "file_path", &t.w("src/a/../b.rs")), None);
    // A link inside the scope pointing out of it, to a directory and to a file.
    std::os::unix::fs::symlink(&t.work, t.work.join("src/up")).unwrap();
    std::os::unix::fs::symlink(t.work.join("secret"), t.work.join("src/secret-link")).unwrap();
    assert!(t.decide("Write", "file_path", &t.w("src/up/Cargo.toml")).is_some());
    assert!(t.decide("Edit", "file_path", &t.w("src/secret-link")).is_some());
    // A link from outside into the scope is fine: the write lands inside.
    std::os::unix::fs::symlink(t.work.join("src"), t.work.join("to-src")).unwrap();
    assert_eq!(t.decide("Write", "file_path", &t.w("to-src/ok.rs")), None);
}

#[test]
fn what_cannot_be_checked_is_refused() {
    let t = Task::new("unsure", &["{work}/src"]);
    let inside = t.w("src/a.rs");
    // Two path fields (one could be inside, the other not).
    let two = format!(
        r#"{{"hook_event_name":"PreToolUse","tool_name":"Write","tool_input":{{"file_path":"{inside}","file_path":"/etc/passwd"}}}}"#
    );
    assert!(reason(&t.decide_raw(&two).unwrap()).contains("2 file_path fields"));
    // A path with JSON escapes, a relative path, a non-string, no tool name.
    let escaped = format!(r#"{{"tool_name":"Write","tool_input":{{"file_path":"{inside}\u002f..\u002f..\u002fx"}}}}"#);
    assert!(reason(&t.decide_raw(&escaped).unwrap()).contains("escapes"));
    assert!(reason(&t.decide("Write", "file_path", "src/a.rs").unwrap()).contains("absolute"));
    assert!(t.decide_raw(r#"{"tool_name":"Write","tool_input":{"file_path":["/x"]}}"#).is_some());
    assert!(t.decide_raw(r#"{"tool_input":{"file_path":"/x"}}"#).is_some());
    assert!(t.decide_raw("").is_some());
    assert!(t.decide_raw("\u{0}\u{1}garbage{{{").is_some());
    // Text that merely mentions the key inside a value is not a second field.
    let quoted = format!(
        r#"{{"tool_name":"Edit","tool_input":{{"file_path":"{inside}","old_string":"\"file_path\": \"/etc/passwd\"","new_string":"b"}}}}"#
    );
    assert_eq!(t.decide_raw(&quoted), None);
    // Without its scope file the guard refuses everything.
    std::fs::remove_file(t.dir.join("write-scope")).unwrap();
    assert!(reason(&t.decide("Write", "file_path", &inside).unwrap()).contains("scope of this run is missing"));
}

#[test]
fn other_tools_pass_untouched_and_home_relative_entries_resolve() {
    let t = Task::new("home", &["~/proj"]);
    for tool in ["Bash", "Read", "Grep", "mcp__x__write"] {
        assert_eq!(t.decide(tool, "file_path", "/etc/passwd"), None, "{tool} is not the guard's");
    }
    // run_helper clears the environment but PATH; give the guard a HOME.
    let payload = |p: &str| format!(r#"{{"tool_name":"Write","tool_input":{{"file_path":"{p}"}}}}"#);
    let home = t.work.clone();
    let run = |p: &str| {
        let guard = std::process::Command::new(t.dir.join("scope-guard"));
        let out = super::tests_helpers::run_command(guard, &[], payload(p).as_bytes(), &[("HOME", &home)]);
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run(&format!("{}/proj/a.rs", home.display())), "");
    assert!(run(&format!("{}/other/a.rs", home.display())).contains("deny"));
}
