//! Say: a message from the lead to a running brother (kept for a queued task until it
//! starts; refused, with nothing stored, while a launch is unconfirmed or when no agent ever
//! started). It is recorded in the mailbox first (its row id becomes its inbox id), then appended to the run's remote `inbox.jsonl` by a
//! small script that refuses a second copy of the same id. The agent's side records delivery
//! (Claude's hook hands it over at the next tool call; other agents run the `inbox` helper)
//! and acknowledgement in `delivered.jsonl`, which sync reads back. Never `tmux send-keys`.

use std::time::Duration;

use crate::delegate::Delegate;
use crate::error::{Error, Result};
use crate::mailbox::Message;
use crate::ops::sync::task_key;
use crate::remote::protocol::{SayState, parse_say, render_say};
use crate::transport::ssh::Exit;

/// The longest message `say` sends (it travels in a hook's context, capped near 10k chars).
pub const MAX_SAY_BYTES: usize = 8000;

pub(crate) async fn say(d: &mut Delegate, id: i64, text: &str, author: &str) -> Result<Message> {
    if text.trim().is_empty() {
        return Err(Error::PromptEmpty);
    }
    if text.len() > MAX_SAY_BYTES {
        return Err(Error::PromptTooLarge { bytes: text.len(), limit: MAX_SAY_BYTES });
    }
    let task = d.task(id)?;
    // Refused before anything is recorded: a message nobody can read would sit as `sent`.
    if let Some(why) = not_started(d, &task)? {
        return Err(Error::SayNotStarted { task: id, status: task.status.to_string(), why });
    }
    if task.status.is_terminal() {
        return Err(Error::SayToFinished { task: id, status: task.status.to_string() });
    }
    let run = task.runs.last().ok_or(Error::TaskNotFound(id))?.clone();
    let message = d.store_mut().add_outgoing(id, run.run_no, author, text)?;
    if task.status == crate::task::TaskStatus::Queued {
        // Kept unsent: once the task starts, the first sync sends it (as for any message the
        // brother has not confirmed). If the task ends without starting, the thread says the
        // message was never delivered.
        return Ok(message);
    }
    // Earlier messages that never got confirmed go first, with their own ids: the brother
    // keeps one copy of each, so a resend after a lost connection cannot duplicate.
    let pending = d.store().unqueued(id, run.run_no)?;
    let reach = d.task_reach(id, &task.host)?;
    let root = d.remote_root(&task.host)?;
    let key = task_key(d.store().mailbox_id(), id, run.run_no);
    let mut outcome = Ok(());
    for m in &pending {
        let line = crate::remote::protocol::say_line(m.id, &m.at, &m.author, &m.text);
        let script = render_say(&root, &key, m.id, &line)?;
        let out =
            match d.transport().exec(&reach, crate::remote::REMOTE_COMMAND, &script, Duration::from_secs(30)).await {
                Ok((out, _)) => out,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
        match (out.exit, parse_say(&out.stdout)) {
            (Exit::Code(0), Some(SayState::Queued | SayState::AlreadyQueued)) => {
                d.store_mut().mark_outgoing(m.id, true)?
            }
            (Exit::Code(0), Some(SayState::Finished)) => {
                d.store_mut().mark_outgoing(m.id, false)?;
                outcome = Err(Error::SayToFinished { task: id, status: "finished on the brother".into() });
                break;
            }
            (_, state) => {
                outcome = Err(Error::SyncFailed {
                    host: task.host.clone(),
                    why: format!("say got {state:?}: {}", String::from_utf8_lossy(&out.stderr).trim()),
                });
                break;
            }
        }
    }
    outcome?;
    Ok(d.store().message(message.id)?.unwrap_or(message))
}

/// Why a task has no agent to hear a message and never had one, with what to do instead;
/// `None` when an agent runs or ran (a finished one is [`Error::SayToFinished`]: reopen).
fn not_started(d: &Delegate, task: &crate::task::Task) -> Result<Option<String>> {
    use crate::task::TaskStatus::*;
    let id = task.id;
    Ok(Some(match task.status {
        Launching | LaunchUnknown => format!(
            "its agent is not confirmed started yet. Wait until `delegate status` shows it running (a \
             `delegate sync` settles a launch_unknown task) and say it then; `delegate show {id}` has the launch record"
        ),
        s if s.is_terminal() && !d.store().ever_started(id)? => format!(
            "its agent never started ({}), so there is nobody to tell and no session for `delegate reopen` to \
             resume. Launch a new task with the work instead (`delegate run {} ...`)",
            task.reason
                .as_deref()
                .map(|r| crate::ops::launch::clean_line(r, 200))
                .unwrap_or_else(|| "no reason recorded".into()),
            task.brother
        ),
        _ => return Ok(None),
    }))
}
