//! Notifications as a lead sees them: delivering what is due (after every sync), listing
//! recent ones, sending a test to each target, and recording a schedule's misfire.

use std::time::{Duration, Instant};

use crate::delegate::Delegate;
use crate::error::{Error, Result};
use crate::mailbox::notifications::{Notification, now_ms};
use crate::notify::deliver::{self, CALL_BUDGET, Delivered, MAX_PER_CALL, Secrets};
use crate::notify::{self, NotifyEvent, Target};

/// One target's answer to `notify test`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestDelivery {
    pub target: String,
    /// `None`: delivered.
    pub error: Option<String>,
}

impl Delegate {
    /// Sets how webhook tokens named by `webhook_token_env` are looked up (the library
    /// reads no environment; the CLI passes its own). Without it such a webhook fails,
    /// naming the variable.
    pub fn set_env_lookup(&mut self, lookup: deliver::EnvLookup) {
        self.env_lookup = Some(lookup);
    }

    /// Sets the first retry's wait (default [`deliver::BACKOFF_BASE`]; doubled per attempt).
    pub fn set_notify_backoff(&mut self, base: Duration) {
        self.notify_backoff = base;
    }

    pub(crate) fn secrets(&self) -> Secrets {
        match &self.env_lookup {
            Some(env) => Secrets { env: env.clone(), home: self.paths().home.clone() },
            None => Secrets::none(self.paths().home.clone()),
        }
    }

    /// Sends the notifications that are due: at most [`MAX_PER_CALL`], none started after
    /// [`CALL_BUDGET`], each on a blocking thread within its own timeout. Every sync ends
    /// with this, so any command that syncs (and the dispatcher) delivers.
    pub async fn deliver_notifications(&mut self) -> Result<Delivered> {
        let started = Instant::now();
        let secrets = self.secrets();
        let base = self.notify_backoff.as_millis() as i64;
        let mut out = Delivered::default();
        for _ in 0..MAX_PER_CALL {
            if started.elapsed() > CALL_BUDGET {
                break;
            }
            let Some(n) = self.store_mut().claim_notification(now_ms())? else { break };
            let (id, secrets) = (n.id, secrets.clone());
            let result = tokio::task::spawn_blocking(move || deliver::send(&n, &secrets))
                .await
                .unwrap_or_else(|e| Err(format!("delivery thread failed: {e}")));
            self.store_mut().settle_notification(id, result.as_ref().err().map(String::as_str), now_ms(), base)?;
            match result {
                Ok(()) => out.sent += 1,
                Err(e) => out.failed.push((id, e)),
            }
        }
        Ok(out)
    }

    /// The newest `limit` notifications with their delivery state, newest first.
    pub fn notifications(&self, limit: u32) -> Result<Vec<Notification>> {
        self.store().notifications(limit)
    }

    /// Sends a sample notification to each target that applies to `brother` (or the global
    /// `[notify]` table), now, recording nothing. No target configured is an error naming
    /// the fix; a target that fails is reported in its [`TestDelivery`].
    pub async fn notify_test(&self, brother: Option<&str>) -> Result<Vec<TestDelivery>> {
        if let Some(b) = brother {
            self.inventory().brother(b)?;
        }
        let targets = notify::targets(&notify::effective(self.inventory(), brother));
        if targets.is_empty() {
            return Err(Error::NotifyMisconfigured {
                why: format!(
                    "no notification target: add `command = [...]` or `webhook = \"URL\"` to [notify] in {}",
                    self.paths().config_file.display()
                ),
            });
        }
        let secrets = self.secrets();
        let mut out = Vec::new();
        for target in targets {
            let (t, s) = (target.clone(), secrets.clone());
            let result = tokio::task::spawn_blocking(move || deliver::send_to(&t, &deliver::sample(), &s))
                .await
                .unwrap_or_else(|e| Err(format!("delivery thread failed: {e}")));
            out.push(TestDelivery { target: target.label(), error: result.err() });
        }
        Ok(out)
    }

    /// Records that `schedule` missed `slot` (and why) for each global target that wants
    /// `schedule_misfire`; delivered like any notification. The same slot twice is recorded
    /// once. Returns how many were recorded.
    pub fn enqueue_misfire(&mut self, schedule: &str, slot: &str, reason: &str) -> Result<usize> {
        enqueue_misfire(self, schedule, slot, reason)
    }
}

/// Where a schedule's misfires are told: each global target that wants `schedule_misfire`.
pub fn misfire_targets(d: &Delegate) -> Vec<Target> {
    let settings = notify::effective(d.inventory(), None);
    let wanted = settings.on.as_ref().is_none_or(|on| on.contains(&NotifyEvent::ScheduleMisfire));
    if wanted { notify::targets(&settings) } else { Vec::new() }
}

/// [`Delegate::enqueue_misfire`] as a function.
pub fn enqueue_misfire(d: &mut Delegate, schedule: &str, slot: &str, reason: &str) -> Result<usize> {
    let targets = misfire_targets(d);
    if targets.is_empty() {
        return Ok(0);
    }
    d.store_mut().enqueue_misfire(&targets, schedule, slot, reason)
}
