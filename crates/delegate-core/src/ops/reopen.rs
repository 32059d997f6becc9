//! Reopen: a new run of a finished task that resumes the agent's own session, so the agent
//! keeps its context (Claude `--resume <session id>`, Codex `exec ... resume <thread id>`).
//! Each run has its own remote directory, tmux session and launch evidence.

use crate::agents::AgentPlan;
use crate::agents::outcome::StreamFacts;
use crate::delegate::Delegate;
use crate::error::{Error, Result};
use crate::ops::launch::{Delivery, check_prompt, deliver, plan_for_task};
use crate::task::{Run, Task};

/// A follow-up for a finished task.
#[derive(Debug, Clone, Default)]
pub struct ReopenRequest {
    pub task: i64,
    pub prompt: Vec<u8>,
    /// Paths the follow-up may change (relative ones from the task's working directory):
    /// told to the agent (see [`wrap_followup`]) and enforced where the agent allows it
    /// (see [`crate::ops::write_scope`]).
    pub write_scope: Vec<String>,
    /// Who asks (recorded on the run).
    pub author: String,
}

/// The session to resume: what the agent itself reported in its stream, else (Claude) the
/// id delegate assigned at launch.
pub fn resumable_session(task: &Task, run: &Run) -> std::result::Result<String, String> {
    let facts: StreamFacts = serde_json::from_value(run.facts.clone()).unwrap_or_default();
    match task.agent.as_str() {
        "claude" | "codex" | "self-test" => {}
        other => return Err(format!("agent {other} is a custom command: delegate knows no way to resume it")),
    }
    let assigned = run.evidence["agent_plan"]["session_id"].as_str().map(String::from);
    facts.session_id.or(if task.agent == "claude" { assigned } else { None }).ok_or_else(|| {
        format!("run {} recorded no {} id to resume (did the agent start?)", run.run_no, session_word(&task.agent))
    })
}

fn session_word(agent: &str) -> &'static str {
    if agent == "codex" { "thread" } else { "session" }
}

/// Turns a first-launch plan into one that resumes `session`, with the same level flags
/// (a resumed agent does not inherit them: Claude falls back to default tools, Codex to
/// read-only).
pub fn resume_plan(plan: &mut AgentPlan, session: &str) {
    match plan.kind.as_str() {
        "claude" => {
            if let Some(at) = plan.argv.iter().position(|a| a == "--session-id") {
                plan.argv[at] = "--resume".into();
                plan.argv[at + 1] = session.to_string();
            }
        }
        "codex" => {
            // `resume` takes no --sandbox after it, so every flag stays before it.
            let dash = plan.argv.len() - 1;
            plan.argv.splice(dash..dash, ["resume".to_string(), session.to_string()]);
        }
        _ => plan.argv.extend(["--resume".to_string(), session.to_string()]),
    }
    plan.session_id = Some(session.to_string());
}

/// What the agent reads before a follow-up: which task and run, the write scope, and (where
/// it can run them) the helpers by absolute path, as in [`crate::ops::launch::preamble`].
pub fn followup_preamble(task_id: i64, run_no: i64, brother: &str, helpers: bool, write_scope: &[String]) -> String {
    let scope = if write_scope.is_empty() {
        String::new()
    } else {
        format!(
            "For this follow-up you may change only these paths (and nothing outside them): {}.\n",
            write_scope.join(", ")
        )
    };
    let report = if helpers {
        "Report as before, with this run's helper: '{task_dir}/report' (receipt, progress, question, done); \
         messages from your lead: '{task_dir}/inbox'.\n"
    } else {
        "Give what you found and the result in your final answer.\n"
    };
    format!(
        "[delegate] Follow-up on task {task_id} (run {run_no}) for brother {brother}, from your lead. \
         You have the context of your earlier work on it.\n{scope}{report}\
         The follow-up follows.\n\n"
    )
}

/// The whole text an agent reads for a follow-up, with the run's task directory filled in.
pub fn wrap_followup(
    task_id: i64,
    run_no: i64,
    brother: &str,
    helpers: bool,
    task_dir: &str,
    prompt: &[u8],
    write_scope: &[String],
) -> Vec<u8> {
    let mut out =
        followup_preamble(task_id, run_no, brother, helpers, write_scope).replace("{task_dir}", task_dir).into_bytes();
    out.extend_from_slice(prompt);
    out
}

pub(crate) async fn reopen(d: &mut Delegate, req: ReopenRequest) -> Result<Task> {
    check_prompt(&req.prompt)?;
    let task = d.task(req.task)?;
    if !task.status.is_terminal() {
        return Err(Error::RunActive { task: task.id, status: task.status.to_string() });
    }
    let last = task.runs.last().ok_or(Error::TaskNotFound(task.id))?;
    let session = resumable_session(&task, last).map_err(|why| Error::NotResumable { task: task.id, why })?;
    let scope = crate::ops::write_scope::resolve(&req.write_scope, &task.workdir)
        .map_err(|m| Error::Config { path: d.paths().config_file.clone(), message: format!("--write-scope {m}") })?;
    let mut plan = plan_for_task(d, &task)?;
    resume_plan(&mut plan, &session);
    crate::ops::write_scope::apply(&mut plan, task.sandbox, &scope);
    // Resolved before the run is recorded: a host gone from the inventory records nothing.
    let reach = d.reach(&task.host)?;
    let run = d.store_mut().create_run(task.id, task.version, &req.prompt, &req.author, &req.write_scope)?;
    let preamble = followup_preamble(task.id, run.run_no, &task.brother, plan.helpers, &scope);
    let delivery = Delivery::for_task(d, &task, reach, run, &plan, preamble, &req.prompt)?;
    deliver(d, delivery).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::{self, AgentRequest};
    use crate::task::Sandbox;

    fn plan_for(agent: &str) -> AgentPlan {
        agents::plan(&AgentRequest {
            agent,
            model: None,
            sandbox: Sandbox::Write,
            max_turns: 5,
            workdir: "/w",
            custom: None,
            agent_path: None,
            options: &Default::default(),
        })
        .unwrap()
    }

    #[test]
    fn claude_resumes_by_session_id_with_its_level_flags() {
        let mut p = plan_for("claude");
        resume_plan(&mut p, "0b0c-1");
        let a = p.argv.join(" ");
        assert!(a.contains("--resume 0b0c-1") && !a.contains("--session-id"), "{a}");
        assert!(a.contains("--permission-mode acceptEdits") && a.contains("--max-turns 5"), "{a}");
    }

    #[test]
    fn codex_resumes_with_every_flag_before_the_subcommand() {
        let mut p = plan_for("codex");
        resume_plan(&mut p, "thread-9");
        let n = p.argv.len();
        assert_eq!(&p.argv[n - 3..], ["resume", "thread-9", "-"]);
        let sandbox_at = p.argv.iter().position(|a| a == "--sandbox").unwrap();
        assert!(sandbox_at < n - 3 && p.argv[sandbox_at + 1] == "workspace-write");
    }

    #[test]
    fn a_resumed_run_keeps_its_effort_budget_and_extra_args() {
        let opts = agents::AgentOptions {
            reasoning_effort: Some(agents::ReasoningEffort::High),
            max_budget_usd: Some(3.0),
            extra_args: vec!["--fallback-model".into(), "haiku".into()],
            credential_file: None,
            credential_env: None,
            usd_per_mtok: None,
        };
        let with = |agent| {
            agents::plan(&AgentRequest {
                agent,
                model: None,
                sandbox: Sandbox::Write,
                max_turns: 5,
                workdir: "/w",
                custom: None,
                agent_path: None,
                options: &opts,
            })
        };
        let mut p = with("claude").unwrap();
        resume_plan(&mut p, "0b0c-1");
        let a = p.argv.join(" ");
        assert!(
            a.contains("--effort high") && a.contains("--max-budget-usd 3") && a.ends_with("--fallback-model haiku"),
            "{a}"
        );
        let codex_opts = agents::AgentOptions { max_budget_usd: None, extra_args: vec![], ..opts.clone() };
        let mut p = agents::plan(&AgentRequest {
            agent: "codex",
            model: None,
            sandbox: Sandbox::Write,
            max_turns: 5,
            workdir: "/w",
            custom: None,
            agent_path: None,
            options: &codex_opts,
        })
        .unwrap();
        resume_plan(&mut p, "thread-9");
        let resume_at = p.argv.iter().position(|a| a == "resume").unwrap();
        let effort_at = p.argv.iter().position(|a| a == "model_reasoning_effort=\"high\"").unwrap();
        assert!(effort_at < resume_at, "{:?}", p.argv);
    }
}
