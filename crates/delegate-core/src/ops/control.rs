//! What a lead does with launched tasks: sync, wait, cancel, read output, attach, update.
//! These are [`Delegate`] methods; this file keeps them apart from construction and launch.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::delegate::Delegate;
use crate::error::{Error, Result};
use crate::ops::sync::{self, SyncSummary, task_key};
use crate::remote::protocol::{
    CancelState, SyncRequest, SyncTaskRequest, TaskReport, parse_cancel, parse_sync, render_cancel, render_sync,
};
use crate::roles::Action;
use crate::task::{Task, TaskStatus};
use crate::transport::ssh::Exit;

/// How `wait` ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WaitResult {
    /// The tasks as the mailbox knows them after the last sync, in the order asked for.
    pub tasks: Vec<Task>,
    /// Tasks not finished when the time ran out.
    pub pending: Vec<i64>,
    /// Hosts whose latest sync during the wait failed or ran out of time: the warning
    /// ([`crate::ops::sync::HostSync::warning`]) with the cause and the fix.
    pub sync_errors: BTreeMap<String, String>,
}

impl WaitResult {
    /// True when every task finished, and finished `completed`.
    pub fn all_completed(&self) -> bool {
        self.pending.is_empty() && self.tasks.iter().all(|t| t.status == TaskStatus::Completed)
    }
}

/// Bytes of a remote task file from an offset, and where to continue.
#[derive(Debug, Clone)]
pub struct RemoteChunk {
    /// The bytes read (an empty chunk when nothing is new).
    pub bytes: Vec<u8>,
    /// The offset to ask for next.
    pub next_offset: u64,
    /// The file's size when the brother looked (`next_offset` when it had nothing new).
    pub size: u64,
}

/// Most bytes of one file one [`Delegate::read_remote`] carries: well under the exec cap,
/// so a reply is never cut; a larger file takes several reads.
pub const MAX_READ_CHUNK: u64 = 8 * 1024 * 1024;

impl Delegate {
    /// Brings the mailbox up to date for every host with unfinished tasks (or only `only`),
    /// giving each host its sync deadline ([`sync::Patience::Deadline`]): a host that has
    /// not answered by then is reported in the summary, and its tasks show their last known
    /// state with [`Task::stale`] set. Then starts queued tasks that have room (their
    /// results are in the mailbox).
    pub async fn sync(&mut self, only: Option<&[i64]>) -> Result<SyncSummary> {
        self.sync_with(only, sync::Patience::Deadline).await
    }

    /// [`Delegate::sync`] with the given patience: [`sync::Patience::Long`] for a sync that
    /// was asked for and may wait for a slow host.
    pub async fn sync_with(&mut self, only: Option<&[i64]>, patience: sync::Patience) -> Result<SyncSummary> {
        let summary = sync::sync(self, only, patience).await?;
        self.dispatch_queued().await?;
        // What this sync (or an earlier command, or another lead) made due: a failed
        // delivery is recorded on its notification and retried later, never this sync's error.
        self.deliver_notifications().await?;
        Ok(summary)
    }

    /// Syncs until every task in `ids` is finished or `timeout` passes (`None`, or one too
    /// large for the clock: no limit),
    /// every `poll`. An unknown id fails at once with [`Error::TaskNotFound`]. A host that
    /// cannot be synced (or not within its sync deadline) is not an error here: it is named
    /// in [`WaitResult::sync_errors`] and its tasks stay pending, marked stale, until it
    /// answers or the time runs out; the other hosts' tasks finish meanwhile.
    pub async fn wait(&mut self, ids: &[i64], timeout: Option<Duration>, poll: Duration) -> Result<WaitResult> {
        for id in ids {
            // Unknown ids fail now, not after the timeout; so does a backlog task, which
            // nothing finishes until somebody starts it.
            if self.task(*id)?.status == TaskStatus::Backlog {
                return Err(Error::WaitOnBacklog { task: *id });
            }
        }
        // A deadline past what the clock can hold is no deadline (`Instant + Duration::MAX`
        // would panic).
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut sync_errors = BTreeMap::new();
        loop {
            let pending: Vec<i64> = ids
                .iter()
                .copied()
                .filter(|id| self.task(*id).map(|t| !t.status.is_terminal()).unwrap_or(false))
                .collect();
            if !pending.is_empty() {
                let summary = self.sync(Some(&pending)).await?;
                for h in &summary.hosts {
                    match h.warning() {
                        Some(w) => sync_errors.insert(h.host.clone(), w),
                        None => sync_errors.remove(&h.host),
                    };
                }
            }
            let tasks: Vec<Task> = ids.iter().map(|id| self.task(*id)).collect::<Result<_>>()?;
            let pending: Vec<i64> = tasks.iter().filter(|t| !t.status.is_terminal()).map(|t| t.id).collect();
            let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
            if pending.is_empty() || out_of_time {
                return Ok(WaitResult { tasks, pending, sync_errors });
            }
            let nap = deadline.map(|d| d.saturating_duration_since(Instant::now()).min(poll)).unwrap_or(poll);
            tokio::time::sleep(nap).await;
        }
    }

    /// Stops a task's agent on its brother and records `cancelled`. A task already finished
    /// is [`Error::AlreadyFinished`].
    ///
    /// On the brother the cancel leaves a mark for the task's run that a launch still on its
    /// way (or sent again) and the runner check before starting the agent, under a lock the
    /// runner also holds while it records its start: a cancel of a `launching` task wins, and
    /// no agent runs for it afterwards. The launch then reports
    /// [`Error::CancelledWhileLaunching`].
    /// The asker is the local user ([`Delegate::cancel_as`] names another).
    pub async fn cancel(&mut self, id: i64) -> Result<Task> {
        let who = self.paths().local_user.clone();
        self.cancel_as(id, &who).await
    }

    /// [`Delegate::cancel`], asked by `who` (a manager, or a worker on its own task).
    pub async fn cancel_as(&mut self, id: i64, who: &str) -> Result<Task> {
        let task = self.task(id)?;
        self.authorize(who, Action::Update, Some(&task))?;
        if task.status.is_terminal() {
            return Err(Error::AlreadyFinished { task: id, status: task.status.to_string() });
        }
        crate::ops::agentbus::refuse(self.store(), id, "cancel")?;
        // A task handed to a NATS server waits `queued` in its stream: a worker on the way
        // to it gets the cancel mark (best effort: any replica, if one is connected), and
        // one that launches it anyway is stopped when its `launched` result is read.
        let handed = match task.runs.last() {
            Some(run) if task.status == TaskStatus::Queued => self.store().handed(id, run.run_no)?,
            _ => None,
        };
        // Nothing was sent for a queued or backlog task: it is settled here alone.
        if matches!(task.status, TaskStatus::Queued | TaskStatus::Backlog) && self.store_mut().cancel_queued(id)? {
            if let Some(h) = handed {
                let key = task_key(self.store().mailbox_id(), id, h.run_no);
                let (reach, root) = (self.reach(&task.host)?, self.remote_root(&task.host)?);
                let script = render_cancel(&root, &key, &h.session)?;
                let _ = self
                    .transport()
                    .exec(&reach, crate::remote::REMOTE_COMMAND, &script, Duration::from_secs(10))
                    .await;
            }
            return self.task(id);
        }
        let run = task.runs.last().ok_or(Error::TaskNotFound(id))?;
        let reach = self.task_reach(id, &task.host)?;
        let root = self.remote_root(&task.host)?;
        let script = render_cancel(&root, &task_key(self.store().mailbox_id(), id, run.run_no), &run.session)?;
        // The script waits up to 30 s for the runner to record the ending.
        let (out, _) =
            self.transport().exec(&reach, crate::remote::REMOTE_COMMAND, &script, Duration::from_secs(45)).await?;
        if out.overflow {
            return Err(Error::OutputTooLarge {
                host: task.host.clone(),
                limit: crate::transport::ssh::MAX_EXEC_OUTPUT,
            });
        }
        let state = parse_cancel(&out.stdout);
        let Some(state) = state.filter(|_| out.exit == Exit::Code(0)) else {
            return Err(Error::SyncFailed {
                host: task.host.clone(),
                why: format!(
                    "cancel did not answer: {}",
                    crate::ops::launch::clean_line(&String::from_utf8_lossy(&out.stderr), 2000)
                ),
            });
        };
        let reason = match state {
            // Nothing ran and, with the mark in place, nothing will: no exit record to read.
            CancelState::NoTask | CancelState::NotStarted => {
                "cancelled before its agent started (the brother keeps a cancel mark, so it never will)".to_string()
            }
            // The cancel script waited for the runner's exit record, so one sync reads it.
            _ => {
                self.sync(Some(&[id])).await?;
                format!("cancelled by the lead (brother said: {})", state.as_str())
            }
        };
        // A launch of this task may record its own ending meanwhile (`launched`, or
        // `cancelled` when the brother refused it): read again and retry.
        for _ in 0..5 {
            let t = self.task(id)?;
            if t.status.is_terminal() {
                return Ok(t);
            }
            match self.store_mut().transition(id, t.version, TaskStatus::Cancelled, Some(&reason)) {
                Err(Error::Conflict { .. }) => continue,
                other => {
                    other?;
                    return self.task(id);
                }
            }
        }
        self.task(id)
    }

    /// Reads up to [`MAX_READ_CHUNK`] bytes of a task file on the brother from `offset` (for
    /// `logs`), without touching the mailbox's own offsets.
    pub async fn read_remote(&self, id: i64, file: &str, offset: u64) -> Result<(RemoteChunk, TaskReport)> {
        let task = self.task(id)?;
        let run = task.runs.last().ok_or(Error::TaskNotFound(id))?;
        let reach = self.task_reach(id, &task.host)?;
        let req = SyncRequest {
            remote_root: self.remote_root(&task.host)?,
            tasks: vec![SyncTaskRequest {
                task_key: task_key(self.store().mailbox_id(), id, run.run_no),
                session: run.session.clone(),
                // Only the asked-for file: an offset past any size skips the others.
                offsets: crate::remote::protocol::SYNCED_FILES
                    .iter()
                    .map(|f| (f.to_string(), if *f == file { offset } else { u64::MAX }))
                    .collect(),
                want_launch_json: false,
                clock_ms: None,
            }],
            max_bytes_per_file: MAX_READ_CHUNK,
            max_bytes_total: MAX_READ_CHUNK,
        };
        let script = render_sync(&req)?;
        let (out, _) =
            self.transport().exec(&reach, crate::remote::REMOTE_COMMAND, &script, Duration::from_secs(60)).await?;
        // Say why the reply is unusable rather than that it was cut short.
        if out.overflow {
            return Err(Error::OutputTooLarge {
                host: task.host.clone(),
                limit: crate::transport::ssh::MAX_EXEC_OUTPUT,
            });
        }
        let reply = parse_sync(&out.stdout).map_err(|why| Error::SyncFailed { host: task.host.clone(), why })?;
        let report = reply.tasks.into_iter().next().ok_or_else(|| Error::SyncFailed {
            host: task.host.clone(),
            why: "the brother did not report on the task".into(),
        })?;
        let chunk = report
            .deltas
            .iter()
            .find(|d| d.file == file)
            .map(|d| RemoteChunk { bytes: d.bytes.clone(), next_offset: d.offset + d.bytes.len() as u64, size: d.size })
            .unwrap_or(RemoteChunk { bytes: vec![], next_offset: offset, size: offset });
        Ok((chunk, report))
    }

    /// The system `ssh` command that opens the task's live tmux session (`attach`).
    pub fn attach_argv(&self, id: i64) -> Result<Vec<String>> {
        let task = self.task(id)?;
        let run = task.runs.last().ok_or(Error::TaskNotFound(id))?;
        let t = self.resolve_target(&task.host)?;
        let address = self.inventory().host(&task.host)?.address.clone();
        let mut argv: Vec<String> = vec!["ssh".into(), "-t".into()];
        // The ssh_config delegate resolved with, and the route it took, so ssh reaches the
        // host the same way even where its own reading would differ (it reads the passwd
        // home's config, and a HostName given to it would match other Host blocks).
        if self.paths().ssh_config.exists() {
            argv.extend(["-F".into(), self.paths().ssh_config.display().to_string()]);
        }
        if t.system_ssh.is_none() {
            argv.extend(route_options(&t.route));
        }
        argv.extend(["-p".into(), t.port.to_string()]);
        for f in t.identity_files.iter().filter(|f| f.exists()) {
            argv.extend(["-i".into(), f.display().to_string()]);
        }
        let known: Vec<String> = t.known_hosts.iter().map(|p| p.display().to_string()).collect();
        argv.extend(["-o".into(), format!("UserKnownHostsFile={}", known.join(" "))]);
        argv.extend(["-o".into(), "StrictHostKeyChecking=yes".into()]);
        if let Some(alias) = &t.host_key_alias {
            argv.extend(["-o".into(), format!("HostKeyAlias={alias}")]);
        }
        // The alias, not its HostName: ssh then applies the same Host blocks delegate did.
        argv.extend(["-l".into(), t.user.clone(), "--".into(), address]);
        // Our socket and the exact session: `=name`, or tmux would match a prefix.
        argv.extend(["tmux", "-L", "delegate", "attach-session", "-t"].map(String::from));
        argv.push(format!("={}", run.session));
        Ok(argv)
    }

    /// Sends a message to a task's running agent (see [`crate::ops::say`]). The message is in the
    /// mailbox before anything is sent, and its delivery and reading show up with later syncs
    /// ([`Delegate::show`]). A finished task is [`Error::SayToFinished`]: use
    /// [`Delegate::reopen`].
    pub async fn say(&mut self, id: i64, text: &str, author: &str) -> Result<crate::mailbox::Message> {
        let task = self.task(id)?;
        self.authorize(author, Action::Update, Some(&task))?;
        crate::ops::agentbus::refuse(self.store(), id, "say")?;
        crate::ops::say::say(self, id, text, author).await
    }

    /// Starts a new run of a finished task that resumes the agent's own session. Refused
    /// with [`Error::RunActive`] while a run is in progress, and with [`Error::NotResumable`]
    /// when the agent recorded no session to resume.
    pub async fn reopen(&mut self, req: crate::ops::reopen::ReopenRequest) -> Result<Task> {
        let task = self.task(req.task)?;
        self.authorize(&req.author, Action::Update, Some(&task))?;
        crate::ops::reopen::reopen(self, req).await
    }

    /// Records an outcome a person learned out of band (completed, failed or cancelled), with
    /// an optional output text kept as a note. Refused for any other status
    /// ([`Error::StatusNotSettable`]) and while an agent may be at work on the task
    /// ([`Error::UpdateInFlight`]: cancel it or wait first); see [`crate::task::check_update`].
    pub fn update(&mut self, id: i64, status: TaskStatus, output: Option<&str>, author: &str) -> Result<Task> {
        let task = self.task(id)?;
        self.authorize(author, Action::Update, Some(&task))?;
        crate::task::check_update(id, task.status, status)?;
        let reason = output.map(|o| o.chars().take(200).collect::<String>());
        let reason = reason.unwrap_or_else(|| format!("set by {author}"));
        self.store_mut().transition(id, task.version, status, Some(&reason))?;
        if let Some(text) = output {
            self.store_mut().add_note(id, author, "output", text)?;
        }
        self.task(id)
    }

    pub(crate) fn remote_root(&self, host: &str) -> Result<String> {
        Ok(self
            .inventory()
            .host(host)?
            .remote_root
            .clone()
            .unwrap_or_else(|| crate::hosts::inventory::DEFAULT_REMOTE_ROOT.into()))
    }
}

/// `-J` or `-o ProxyCommand=` for the route delegate resolved, explicitly: given on ssh's
/// command line they win over its config, so `ssh` takes exactly this route.
fn route_options(route: &crate::transport::ssh::route::Route) -> Vec<String> {
    let (hops, command) = route.hops();
    let mut argv = Vec::new();
    if !hops.is_empty() {
        // Each hop by its ssh_config name with the user and port delegate used for it.
        let spec = |h: &crate::transport::ssh::SshTarget| {
            let host = if h.host.contains(':') { format!("[{}]", h.host) } else { h.host.clone() };
            format!("{}@{host}:{}", h.user, h.port)
        };
        argv.extend(["-J".into(), hops.iter().map(|h| spec(h)).collect::<Vec<_>>().join(",")]);
        // The first bastion's own ProxyCommand is its config's, which ssh reads too.
        return argv;
    }
    // ssh expands % tokens again: the expanded command must survive that unchanged.
    let command = command.map_or("none".to_string(), |c| c.replace('%', "%%"));
    argv.extend(["-o".into(), format!("ProxyCommand={command}")]);
    argv
}
