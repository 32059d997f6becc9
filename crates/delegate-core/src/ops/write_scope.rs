//! `reopen --write-scope`: the paths a follow-up may change. Every agent is told (see
//! [`crate::ops::reopen::wrap_followup`]); where the agent offers a way, delegate also enforces
//! it, and the run's evidence says which (`agent_plan.write_scope_enforcement`):
//!
//! - Claude Code: a PreToolUse hook (`remote/scripts/scope-guard.sh`) refuses Edit, MultiEdit,
//!   Write and NotebookEdit outside the scope, in every permission mode. Bash is not path
//!   checked: at the `write` level the OS sandbox bounds it to the working directory.
//! - Codex: its sandbox has no path limit narrower than the workspace, so the scope is only
//!   told; at `read` nothing may be written at all.
//! - The self-test agent writes nothing; custom agents are told only.

use crate::agents::AgentPlan;
use crate::task::Sandbox;

/// The guard, written into the task directory as `scope-guard`.
pub const SCOPE_GUARD: &str = include_str!("../remote/scripts/scope-guard.sh");

/// The tools whose writes the guard checks (a Claude hook matcher, a regex).
const GUARDED_TOOLS: &str = "Edit|MultiEdit|Write|NotebookEdit";

/// Scope entries as the brother resolves them: relative ones are taken from the task's
/// working directory. Errors name the entry that cannot be used.
pub fn resolve(scope: &[String], workdir: &str) -> Result<Vec<String>, String> {
    scope
        .iter()
        .map(|p| {
            let full = if p.starts_with('/') || p == "~" || p.starts_with("~/") {
                p.clone()
            } else {
                format!("{}/{p}", workdir.trim_end_matches('/'))
            };
            crate::hosts::inventory::check_remote_path(&full).map_err(|m| format!("{p:?}: {m}"))?;
            Ok(full)
        })
        .collect()
}

/// Adds what enforces `scope` (already [`resolve`]d) to the plan and records how far it
/// goes. An empty scope changes nothing.
pub fn apply(plan: &mut AgentPlan, sandbox: Sandbox, scope: &[String]) {
    if scope.is_empty() {
        return;
    }
    plan.write_scope = scope.to_vec();
    let how = match plan.kind.as_str() {
        _ if sandbox == Sandbox::Read => "nothing to enforce: the read level allows no writes at all",
        "claude" => {
            install_claude_guard(plan, scope);
            if sandbox == Sandbox::Write {
                "Edit/MultiEdit/Write/NotebookEdit outside the scope refused by delegate's PreToolUse hook; \
                 Bash writes bounded by the OS sandbox to the working directory, not to the scope"
            } else {
                "Edit/MultiEdit/Write/NotebookEdit outside the scope refused by delegate's PreToolUse hook; \
                 Bash unconfined (full level)"
            }
        }
        "self-test" => "nothing to enforce: the self-test agent writes nothing",
        "codex" => "told only: Codex's sandbox has no write limit narrower than its workspace",
        _ => "told only: delegate cannot confine a custom command",
    };
    plan.write_scope_enforcement = Some(how.into());
}

/// The guard script, the scope file it reads, and a PreToolUse entry in the per-task
/// settings that runs it.
fn install_claude_guard(plan: &mut AgentPlan, scope: &[String]) {
    let Some(at) = plan.files.iter().position(|(name, _)| name == "claude-settings.json") else {
        return;
    };
    let mut settings: serde_json::Value =
        serde_json::from_str(&plan.files[at].1).expect("delegate writes the Claude settings as JSON");
    settings["hooks"]["PreToolUse"] = serde_json::json!([{
        "matcher": GUARDED_TOOLS,
        "hooks": [{"type": "command", "command": "bash '{task_dir}/scope-guard'", "timeout": 10}],
    }]);
    plan.files[at].1 = settings.to_string();
    plan.files.push(("scope-guard".into(), SCOPE_GUARD.into()));
    // One entry a line; entries hold no control characters (checked by `resolve`).
    plan.files.push(("write-scope".into(), scope.iter().map(|p| format!("{p}\n")).collect()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::{AgentRequest, plan};

    fn plan_for(agent: &str, sandbox: Sandbox) -> AgentPlan {
        plan(&AgentRequest {
            agent,
            model: None,
            sandbox,
            max_turns: 3,
            workdir: "/w",
            custom: None,
            agent_path: None,
            options: &Default::default(),
        })
        .unwrap()
    }

    #[test]
    fn relative_entries_are_taken_from_the_working_directory() {
        let s = ["src/".to_string(), "/etc/app".into(), "~/notes".into()];
        assert_eq!(resolve(&s, "/w/").unwrap(), ["/w/src/", "/etc/app", "~/notes"]);
        assert_eq!(resolve(&["a".into()], "~").unwrap(), ["~/a"]);
        let bad = resolve(&["src\nx".into()], "/w").unwrap_err();
        assert!(bad.contains("control characters"), "{bad}");
    }

    #[test]
    fn claude_gets_a_pre_tool_use_guard_and_the_scope_file() {
        let mut p = plan_for("claude", Sandbox::Write);
        apply(&mut p, Sandbox::Write, &["/w/src".into()]);
        let settings: serde_json::Value = serde_json::from_str(&p.files[0].1).unwrap();
        let pre = &settings["hooks"]["PreToolUse"][0];
        assert_eq!(pre["matcher"], GUARDED_TOOLS);
        assert_eq!(pre["hooks"][0]["command"], "bash '{task_dir}/scope-guard'");
        // The rest of the settings stay: the activity hooks and the sandbox.
        assert!(settings["hooks"]["PostToolUse"].is_array() && settings["sandbox"]["enabled"] == true);
        let file = |n: &str| p.files.iter().find(|(name, _)| name == n).map(|(_, c)| c.clone());
        assert_eq!(file("write-scope").as_deref(), Some("/w/src\n"));
        assert_eq!(file("scope-guard").as_deref(), Some(SCOPE_GUARD));
        assert!(p.write_scope_enforcement.unwrap().contains("PreToolUse"));
    }

    #[test]
    fn agents_without_a_way_to_enforce_say_so() {
        for (agent, sandbox, says) in [
            ("codex", Sandbox::Write, "told only"),
            ("codex", Sandbox::Read, "allows no writes"),
            ("claude", Sandbox::Read, "allows no writes"),
            ("self-test", Sandbox::Write, "writes nothing"),
        ] {
            let mut p = plan_for(agent, sandbox);
            let files = p.files.len();
            apply(&mut p, sandbox, &["/w/src".into()]);
            assert!(p.write_scope_enforcement.as_deref().unwrap().contains(says), "{agent} {sandbox}");
            assert_eq!(p.files.len(), files, "{agent} {sandbox} gets no guard");
        }
        let mut p = plan_for("claude", Sandbox::Write);
        apply(&mut p, Sandbox::Write, &[]);
        assert!(p.write_scope_enforcement.is_none() && p.files.len() == 1);
    }
}
