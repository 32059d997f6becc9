//! Notifications: telling a lead who is not watching that a task completed, failed or needs
//! input (and that a schedule missed a slot).
//!
//! - [`NotifySettings`] is the inventory's `[notify]` table (and `[brothers.X.notify]`,
//!   which overrides it key by key): a command (an argv template, never a shell string), a
//!   webhook (its token named by an environment variable or a file, never written in the
//!   inventory), and the events wanted.
//! - At launch the settings that apply to the brother, narrowed by the task's own choice
//!   (`--notify`), become the task's [`Plan`], stored with the task. The mailbox turns each
//!   state change the plan wants into notification rows in the same transaction
//!   ([`crate::mailbox`]), so nothing is lost when no lead runs at that moment.
//! - [`deliver`] sends what is due after each sync: a few per call, each with a bounded
//!   timeout, retried with capped exponential backoff.

mod check;
pub mod deliver;
mod message;

use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hosts::inventory::Inventory;
use crate::task::TaskStatus;

pub use check::check;
pub use message::Message;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    Completed,
    /// Failed, lost, timed out or stopped at its turn limit: the status says which.
    Failed,
    NeedsInput,
    /// A schedule could not fire a slot (reported by the scheduler).
    ScheduleMisfire,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 4] =
        [NotifyEvent::Completed, NotifyEvent::Failed, NotifyEvent::NeedsInput, NotifyEvent::ScheduleMisfire];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Completed => "completed",
            NotifyEvent::Failed => "failed",
            NotifyEvent::NeedsInput => "needs_input",
            NotifyEvent::ScheduleMisfire => "schedule_misfire",
        }
    }

    /// The event a task entering `status` raises, if any. A cancel is a person's own act and
    /// raises none.
    pub fn for_status(status: TaskStatus) -> Option<NotifyEvent> {
        match status {
            TaskStatus::Completed => Some(NotifyEvent::Completed),
            TaskStatus::Failed | TaskStatus::Lost | TaskStatus::TimedOut | TaskStatus::TurnLimit => {
                Some(NotifyEvent::Failed)
            }
            TaskStatus::NeedsInput => Some(NotifyEvent::NeedsInput),
            _ => None,
        }
    }
}

impl FromStr for NotifyEvent {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        NotifyEvent::ALL.into_iter().find(|e| e.as_str() == s).ok_or_else(|| {
            format!("unknown notification event {s:?}: use completed, failed, needs_input or schedule_misfire")
        })
    }
}

/// The body a webhook gets (see the README for each shape).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// delegate's own JSON object: task, brother, status, event, subject, summary, reason.
    #[default]
    Json,
    /// Slack's incoming-webhook shape: `{"text": ...}`.
    Slack,
    /// ntfy's JSON publishing shape, posted to the server root: `{"topic", "title", "message", "tags"}`.
    Ntfy,
}

/// `[notify]` or `[brothers.X.notify]` in the inventory. Every key is optional; a brother's
/// key replaces the global one (`command = []` or `on = []` turns that off for the brother;
/// a brother's `webhook` brings its own token and format keys).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// argv template: `{task} {brother} {status} {event} {subject} {summary} {reason}`,
    /// substituted inside each argument; no shell ever sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// `http://` or `https://` URL POSTed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// The environment variable holding the webhook's bearer token (read when sending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_token_env: Option<String>,
    /// A local file holding the webhook's bearer token (read when sending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_token_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<WebhookFormat>,
    /// Events that notify; default all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<NotifyEvent>>,
}

/// Where one notification goes. It names a token (a variable or a file) and never holds
/// one, because it is stored in the mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    Command {
        argv: Vec<String>,
    },
    Webhook {
        url: String,
        format: WebhookFormat,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_env: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_file: Option<String>,
    },
}

impl Target {
    /// A short description for `notify list`: the program, or the webhook's scheme, host and
    /// path (a query string is left out).
    pub fn label(&self) -> String {
        match self {
            Target::Command { argv } => format!("command {}", argv.first().map(String::as_str).unwrap_or("")),
            Target::Webhook { url, format, .. } => {
                let format = serde_json::to_value(format).ok().and_then(|v| v.as_str().map(String::from));
                format!("webhook {} ({})", Target::label_url(url), format.unwrap_or_default())
            }
        }
    }

    /// A URL without its query string or fragment, to show.
    pub fn label_url(url: &str) -> &str {
        url.split(['?', '#']).next().unwrap_or(url)
    }
}

/// A task's notifications, decided at launch and stored with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub on: Vec<NotifyEvent>,
    pub targets: Vec<Target>,
}

/// A task's own say (`--notify`): follow the inventory, none at all, or these events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Choice {
    #[default]
    Inherit,
    Off,
    /// The inventory's targets with every task event, whatever its `on` says.
    On,
    Events(Vec<NotifyEvent>),
}

impl FromStr for Choice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "on" => Ok(Choice::On),
            "off" => Ok(Choice::Off),
            list => {
                let events = list.split(',').map(|e| e.trim().parse()).collect::<std::result::Result<Vec<_>, _>>()?;
                Ok(Choice::Events(events))
            }
        }
    }
}

/// The settings that apply to `brother` (`None`: the global ones), key by key.
pub fn effective(inv: &Inventory, brother: Option<&str>) -> NotifySettings {
    let global = inv.notify.clone().unwrap_or_default();
    let Some(own) = brother.and_then(|b| inv.brothers.get(b)).and_then(|b| b.notify.clone()) else {
        return global;
    };
    let webhook_from = if own.webhook.is_some() { &own } else { &global };
    NotifySettings {
        command: own.command.clone().or(global.command.clone()),
        webhook: webhook_from.webhook.clone(),
        webhook_token_env: webhook_from.webhook_token_env.clone(),
        webhook_token_file: webhook_from.webhook_token_file.clone(),
        format: webhook_from.format,
        on: own.on.clone().or(global.on.clone()),
    }
}

/// The targets the settings name (an empty command or webhook is none).
pub fn targets(s: &NotifySettings) -> Vec<Target> {
    let mut out = Vec::new();
    if let Some(argv) = s.command.as_ref().filter(|a| !a.is_empty()) {
        out.push(Target::Command { argv: argv.clone() });
    }
    if let Some(url) = s.webhook.as_ref().filter(|u| !u.is_empty()) {
        out.push(Target::Webhook {
            url: url.clone(),
            format: s.format.unwrap_or_default(),
            token_env: s.webhook_token_env.clone(),
            token_file: s.webhook_token_file.clone(),
        });
    }
    out
}

/// The plan a task on `brother` gets, given its own `choice`; `None` when nothing would be
/// sent. `--notify on` or an event list with no target configured is an error naming the fix.
pub fn plan_for(inv: &Inventory, brother: &str, choice: &Choice, config: &Path) -> Result<Option<Plan>> {
    let settings = effective(inv, Some(brother));
    let targets = targets(&settings);
    let task_events = |on: Vec<NotifyEvent>| -> Vec<NotifyEvent> {
        on.into_iter().filter(|e| *e != NotifyEvent::ScheduleMisfire).collect()
    };
    let on = match choice {
        Choice::Off => return Ok(None),
        Choice::Inherit => task_events(settings.on.unwrap_or_else(|| NotifyEvent::ALL.to_vec())),
        Choice::On => task_events(NotifyEvent::ALL.to_vec()),
        Choice::Events(events) => task_events(events.clone()),
    };
    if targets.is_empty() {
        if *choice == Choice::Inherit {
            return Ok(None);
        }
        return Err(Error::NotifyMisconfigured {
            why: format!(
                "--notify asks for notifications but brother {brother} has no target: add `command = [...]` or \
                 `webhook = \"URL\"` to [notify] (or [brothers.{brother}.notify]) in {}",
                config.display()
            ),
        });
    }
    if on.is_empty() {
        return Ok(None);
    }
    Ok(Some(Plan { on, targets }))
}

/// Placeholders a command argument may hold.
pub const PLACEHOLDERS: [&str; 7] = ["task", "brother", "status", "event", "subject", "summary", "reason"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_brothers_keys_replace_the_global_ones_and_its_webhook_brings_its_own_token() {
        let inv = Inventory::parse(
            r#"
            [notify]
            command = ["notify-send", "{subject}"]
            webhook = "https://global.example/hook"
            webhook_token_env = "GLOBAL_TOKEN"
            on = ["completed"]
            [hosts.h]
            address = "h.example"
            [brothers.quiet]
            host = "h"
            workdir = "/w"
            notify = { on = [] }
            [brothers.own]
            host = "h"
            workdir = "/w"
            notify = { webhook = "https://own.example/hook", format = "slack" }
            "#,
            Path::new("c.toml"),
        )
        .unwrap();
        let p = Path::new("c.toml");
        assert_eq!(plan_for(&inv, "quiet", &Choice::Inherit, p).unwrap(), None);
        // The task's own choice wins over the brother's `on`.
        let on = plan_for(&inv, "quiet", &Choice::On, p).unwrap().unwrap();
        assert_eq!(on.on, [NotifyEvent::Completed, NotifyEvent::Failed, NotifyEvent::NeedsInput]);
        let own = plan_for(&inv, "own", &Choice::Inherit, p).unwrap().unwrap();
        assert_eq!(own.on, [NotifyEvent::Completed]);
        assert_eq!(
            own.targets[1],
            Target::Webhook {
                url: "https://own.example/hook".into(),
                format: WebhookFormat::Slack,
                token_env: None,
                token_file: None
            }
        );
        assert_eq!(plan_for(&inv, "own", &Choice::Off, p).unwrap(), None);
    }
}
