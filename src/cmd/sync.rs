//! `delegate sync`, and the sync-before-showing that every state command does.

use std::path::Path;

use anyhow::Result;
use delegate_core::Delegate;
use delegate_core::sync::SyncSummary;

use super::{block_on, open};

pub fn run(config: Option<&Path>, json: bool) -> Result<()> {
    let mut d = open(config)?;
    let summary = block_on(d.sync(None))?;
    if json {
        super::print_json(&summary)?;
    } else if summary.hosts.is_empty() {
        println!("nothing in flight: no host to sync");
    } else {
        for h in &summary.hosts {
            match &h.error {
                Some(e) => {
                    println!("{}: {} task(s), not synced: {}", h.host, h.tasks, crate::term::safe(&e.to_string()))
                }
                None => {
                    let changed: Vec<String> = h.changed.iter().map(|(id, s)| format!("{id}→{s}")).collect();
                    let changed = if changed.is_empty() { "no change".into() } else { changed.join(", ") };
                    println!("{}: {} task(s) in {} exec, {changed}", h.host, h.tasks, h.execs);
                }
            }
        }
    }
    if summary.errors().next().is_some() {
        anyhow::bail!(delegate_core::Error::SyncFailed {
            host: summary.errors().map(|(h, _)| h).collect::<Vec<_>>().join(", "),
            why: "see above".into(),
        });
    }
    Ok(())
}

/// Syncs before a command shows state. An unreachable host is a warning, not a failure:
/// the command still shows what the mailbox knows, and says how fresh it is.
pub fn before_showing(d: &mut Delegate, only: Option<&[i64]>) -> Result<SyncSummary> {
    let summary = block_on(d.sync(only))?;
    for (host, e) in summary.errors() {
        eprintln!(
            "delegate: warning: could not sync {} ({}); its tasks show the last known state",
            crate::term::safe(host),
            crate::term::safe(e)
        );
    }
    Ok(summary)
}
