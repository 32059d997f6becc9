//! Plain data about tasks: sandbox levels, task states, and what the store hands back.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How much an agent may do on its brother. Each agent maps these onto its own flags; a
/// level an agent cannot honour is refused, never silently downgraded (see [`crate::agents`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sandbox {
    /// Read files only.
    Read,
    /// Edit files in the working directory; shell commands sandboxed where the agent can.
    Write,
    /// No isolation at all.
    Full,
}

impl Sandbox {
    pub fn as_str(self) -> &'static str {
        match self {
            Sandbox::Read => "read",
            Sandbox::Write => "write",
            Sandbox::Full => "full",
        }
    }
}

impl fmt::Display for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Sandbox {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Sandbox::Read),
            "write" => Ok(Sandbox::Write),
            "full" => Ok(Sandbox::Full),
            other => Err(format!("unknown sandbox mode {other:?}: use read, write or full")),
        }
    }
}

/// Where a task stands. Transitions are checked against a version column in the store, so
/// two processes never overwrite each other's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Recorded with `new`, not launched: no run, nothing sent. Only `start` moves it on (no
    /// sync or dispatcher ever does).
    Backlog,
    /// Over a host's or brother's concurrency cap: recorded, nothing sent; starts when a
    /// slot frees up.
    Queued,
    /// Intent recorded; nothing confirmed on the brother yet.
    Launching,
    /// The launch script reported the runner started in tmux, with our nonce.
    Launched,
    Running,
    NeedsInput,
    Completed,
    Failed,
    TurnLimit,
    TimedOut,
    Cancelled,
    /// No session and no exit record on the brother.
    Lost,
    /// The connection dropped after the launch script was sent: the agent may or may not
    /// be running. Never reported as launched until the brother confirms it.
    LaunchUnknown,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 13] = [
        TaskStatus::Backlog,
        TaskStatus::Queued,
        TaskStatus::Launching,
        TaskStatus::Launched,
        TaskStatus::Running,
        TaskStatus::NeedsInput,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::TurnLimit,
        TaskStatus::TimedOut,
        TaskStatus::Cancelled,
        TaskStatus::Lost,
        TaskStatus::LaunchUnknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Backlog => "backlog",
            TaskStatus::Queued => "queued",
            TaskStatus::Launching => "launching",
            TaskStatus::Launched => "launched",
            TaskStatus::Running => "running",
            TaskStatus::NeedsInput => "needs_input",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::TurnLimit => "turn_limit",
            TaskStatus::TimedOut => "timed_out",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::Lost => "lost",
            TaskStatus::LaunchUnknown => "launch_unknown",
        }
    }

    /// States no run will leave on its own.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed
                | TaskStatus::Failed
                | TaskStatus::TurnLimit
                | TaskStatus::TimedOut
                | TaskStatus::Cancelled
                | TaskStatus::Lost
        )
    }
}

impl TaskStatus {
    /// States in which an agent may be at work (or about to be) on the brother.
    pub fn has_agent_in_flight(self) -> bool {
        matches!(self, TaskStatus::Launching | TaskStatus::Launched | TaskStatus::Running | TaskStatus::NeedsInput)
    }

    /// The outcomes a person may record with `update`. Every other state is delegate's own
    /// finding (`queued` would make the dispatcher start the agent again; `running` or
    /// `launched` by hand would claim an agent nobody started).
    pub const SETTABLE_BY_HAND: [TaskStatus; 3] = [TaskStatus::Completed, TaskStatus::Failed, TaskStatus::Cancelled];
}

/// Whether `update` may move a task from `from` to `to`: only to an outcome a person may
/// record, and only while no agent is believed to be at work (a task in flight is stopped
/// with `cancel`, or waited for, first).
pub fn check_update(task: i64, from: TaskStatus, to: TaskStatus) -> crate::error::Result<()> {
    if !TaskStatus::SETTABLE_BY_HAND.contains(&to) {
        return Err(crate::error::Error::StatusNotSettable { status: to.to_string() });
    }
    if from.has_agent_in_flight() {
        return Err(crate::error::Error::UpdateInFlight { task, status: from.to_string() });
    }
    Ok(())
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TaskStatus::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            let names: Vec<_> = TaskStatus::ALL.iter().map(|t| t.as_str()).collect();
            format!("unknown status {s:?}: use one of {}", names.join(", "))
        })
    }
}

/// How much a task matters next to the others on the board (ordered high first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Medium,
    High,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "low" => Ok(Priority::Low),
            "medium" => Ok(Priority::Medium),
            "high" => Ok(Priority::High),
            other => Err(format!("unknown priority {other:?}: use low, medium or high")),
        }
    }
}

/// A task as the store holds it. The prompt itself is kept out of this struct (it can be
/// megabytes and is never printed by listings); [`crate::mailbox::Store::prompt`] reads it.
#[derive(Debug, Clone, Serialize)]
pub struct Task {
    pub id: i64,
    pub status: TaskStatus,
    pub reason: Option<String>,
    pub brother: String,
    pub host: String,
    pub session: Option<String>,
    pub subject: String,
    pub agent: String,
    pub model: Option<String>,
    pub sandbox: Sandbox,
    pub max_turns: u32,
    pub workdir: String,
    pub prompt_bytes: i64,
    pub prompt_sha256: String,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
    /// Wall-clock limit in seconds (0: none).
    pub timeout_secs: i64,
    /// The agent's exit code, once its run ended.
    pub exit_code: Option<i64>,
    /// Turns used, as the agent reported them (or as delegate counted them).
    pub turns: Option<i64>,
    pub cost_usd: Option<f64>,
    /// The latest thing the agent did, in a few words.
    pub last_event: Option<String>,
    /// When a sync last heard from the brother about this task.
    pub synced_at: Option<String>,
    /// Set when the task's host did not answer its latest sync (in time): its state is the
    /// last one heard.
    pub stale: Option<Stale>,
    /// Reasoning effort, spend limit, extra arguments and credential file the task runs with.
    pub options: crate::agents::AgentOptions,
    /// Each setting's value and where it came from (flag, profile, brother, default):
    /// `{"model": {"value": "opus", "from": "profile deep"}, ...}`; null for older tasks.
    pub settings: serde_json::Value,
    /// Where it stands on the board next to others (default medium).
    pub priority: Priority,
    /// The task this one is part of (`--parent`).
    pub parent: Option<i64>,
    pub runs: Vec<Run>,
}

/// A task whose host did not answer its latest sync: what is shown is what was last heard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stale {
    /// When this task's state last came from its host (its last sync, else its launch).
    pub last_heard_at: String,
    /// When the host last failed to answer a sync.
    pub failed_at: String,
    /// Why (a timeout, unreachable, ...), control characters removed.
    pub why: String,
}

/// One launch of a task (reopen adds more later), with its launch evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub run_no: i64,
    pub session: String,
    pub nonce: String,
    pub status: TaskStatus,
    pub host: String,
    pub address: String,
    pub remote_dir: Option<String>,
    pub pane_pid: Option<i64>,
    pub marker: Option<String>,
    /// Exit code of the launch script (not of the agent).
    pub launch_exit: Option<i64>,
    pub error: Option<String>,
    /// Everything else the brother reported: argv, versions, effective sandbox, timings.
    pub evidence: serde_json::Value,
    pub launch_stderr: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// How the agent ended: its exit code, the runner's reason (timed_out, turn_limit,
    /// cancelled) and the time, and the classified outcome.
    pub exit_code: Option<i64>,
    pub exit_reason: Option<String>,
    pub ended_at: Option<String>,
    pub outcome: Option<serde_json::Value>,
    /// Facts read from the agent's stream so far (session id, turns, cost, last message).
    pub facts: serde_json::Value,
    /// Who asked for this run (reopen), and the paths it was allowed to change.
    pub author: Option<String>,
    pub write_scope: Vec<String>,
}

/// A launch younger than this may still be in progress in another process (or its script
/// still arriving on the brother after the link broke); leave it alone. The default of
/// [`crate::Delegate::set_launch_grace`].
pub const LAUNCH_GRACE: std::time::Duration = std::time::Duration::from_secs(180);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn update_records_only_outcomes_and_only_when_no_agent_is_at_work() {
        use TaskStatus::*;
        for from in TaskStatus::ALL {
            for to in TaskStatus::ALL {
                let got = check_update(7, from, to);
                match (to, from) {
                    (Completed | Failed | Cancelled, Launching | Launched | Running | NeedsInput) => {
                        assert!(matches!(got, Err(Error::UpdateInFlight { task: 7, .. })), "{from} -> {to}: {got:?}");
                        assert!(got.unwrap_err().to_string().contains("delegate cancel 7"));
                    }
                    // Finished, lost, launch_unknown (after checking) and queued take an outcome.
                    (Completed | Failed | Cancelled, _) => assert!(got.is_ok(), "{from} -> {to}: {got:?}"),
                    _ => {
                        assert!(matches!(got, Err(Error::StatusNotSettable { .. })), "{from} -> {to}: {got:?}");
                        assert!(got.unwrap_err().to_string().contains("completed, failed or cancelled"));
                    }
                }
            }
        }
    }
}
