//! The board's columns and how a task's state places it in one. Only the state (and
//! whether somebody accepted a finished task) decides: a column is never stored on its own,
//! so the board cannot say something the task's state contradicts.

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

use crate::task::TaskStatus;

/// A column of the board, in board order; `NeedsYou` is the lane of tasks whose agent
/// waits for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Column {
    Backlog,
    Todo,
    InProgress,
    NeedsYou,
    Review,
    Done,
}

impl Column {
    pub const ALL: [Column; 6] =
        [Column::Backlog, Column::Todo, Column::InProgress, Column::NeedsYou, Column::Review, Column::Done];

    pub fn as_str(self) -> &'static str {
        match self {
            Column::Backlog => "backlog",
            Column::Todo => "todo",
            Column::InProgress => "in_progress",
            Column::NeedsYou => "needs_you",
            Column::Review => "review",
            Column::Done => "done",
        }
    }

    /// Where a task in `status` sits: recorded only (backlog), waiting for a slot (todo),
    /// an agent at work or being started (in progress), its agent waiting for an answer
    /// (needs you), finished in any way and not yet accepted (review), accepted (done).
    pub fn of(status: TaskStatus, accepted: bool) -> Column {
        use TaskStatus::*;
        match status {
            Backlog => Column::Backlog,
            Queued => Column::Todo,
            Launching | Launched | Running | LaunchUnknown => Column::InProgress,
            NeedsInput => Column::NeedsYou,
            Completed | Failed | TurnLimit | TimedOut | Cancelled | Lost if accepted => Column::Done,
            Completed | Failed | TurnLimit | TimedOut | Cancelled | Lost => Column::Review,
        }
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Column {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.replace(['-', ' '], "_");
        Column::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| {
            let names: Vec<_> = Column::ALL.iter().map(|c| c.as_str()).collect();
            format!("unknown column {s:?}: use one of {}", names.join(", "))
        })
    }
}

/// Why a task in column `from` (state `status`) cannot be moved to `to` by hand, naming
/// what does it instead; `None` when it can. Only the review/done step is a person's
/// decision: every other column follows the agent's state.
pub fn refuse_move(task: i64, status: TaskStatus, from: Column, to: Column) -> Option<String> {
    if from == to {
        return None;
    }
    Some(match (from, to) {
        (Column::Review, Column::Done) | (Column::Done, Column::Review) => return None,
        (_, Column::Done | Column::Review) => format!(
            "only a finished task is reviewed; task {task} is {status} (stop it with `delegate cancel {task}`, or \
             wait for it with `delegate wait {task}`)"
        ),
        (Column::Backlog, Column::Todo | Column::InProgress) => {
            format!("a backlog task is launched with `delegate start {task}`")
        }
        (_, Column::Backlog) => format!(
            "task {task} was started; it cannot go back to the backlog (cancel it with `delegate cancel {task}`, or \
             follow up a finished one with `delegate reopen {task}`)"
        ),
        (_, Column::Todo | Column::InProgress | Column::NeedsYou) => format!(
            "{to} follows the agent's state, not a move (task {task} is {status}; a finished task is followed up \
             with `delegate reopen {task}`)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_one_column_and_finished_tasks_wait_for_review_until_accepted() {
        use TaskStatus::*;
        let expected = |s: TaskStatus| match s {
            Backlog => ("backlog", "backlog"),
            Queued => ("todo", "todo"),
            Launching | Launched | Running | LaunchUnknown => ("in_progress", "in_progress"),
            NeedsInput => ("needs_you", "needs_you"),
            _ => ("review", "done"),
        };
        for s in TaskStatus::ALL {
            let (plain, accepted) = expected(s);
            assert_eq!((Column::of(s, false).as_str(), Column::of(s, true).as_str()), (plain, accepted), "{s}");
        }
    }

    #[test]
    fn only_review_and_done_are_moved_by_hand() {
        for from in Column::ALL {
            for to in Column::ALL {
                let refused = refuse_move(7, TaskStatus::Running, from, to);
                let allowed =
                    from == to || matches!((from, to), (Column::Review, Column::Done) | (Column::Done, Column::Review));
                assert_eq!(refused.is_none(), allowed, "{from} -> {to}: {refused:?}");
            }
        }
        let why = refuse_move(7, TaskStatus::Backlog, Column::Backlog, Column::Todo).unwrap();
        assert!(why.contains("delegate start 7"), "{why}");
        let why = refuse_move(7, TaskStatus::Running, Column::InProgress, Column::Done).unwrap();
        assert!(why.contains("delegate cancel 7"), "{why}");
    }

    #[test]
    fn columns_parse_with_dashes_or_underscores() {
        assert_eq!("in-progress".parse::<Column>(), Ok(Column::InProgress));
        assert_eq!("needs_you".parse::<Column>(), Ok(Column::NeedsYou));
        assert!("doing".parse::<Column>().unwrap_err().contains("backlog, todo, in_progress"));
    }
}
