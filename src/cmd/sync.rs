//! `delegate sync`, and the sync-before-showing that every state command does.

use std::path::Path;

use anyhow::Result;
use delegate_core::Delegate;
use delegate_core::ops::sync::{Patience, SyncSummary};

use super::{block_on, open};

pub fn run(config: Option<&Path>, json: bool) -> Result<()> {
    let mut d = open(config)?;
    // Asked for, so it may wait for a slow host longer than a command that shows state.
    let summary = block_on(d.sync_with(None, Patience::Long))?;
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

/// Syncs before a command shows state, each host within its sync deadline. A host that is
/// unreachable or does not answer in time is a warning, not a failure: the command still
/// shows what the mailbox knows, its tasks marked stale with when they were last heard of.
pub fn before_showing(d: &mut Delegate, only: Option<&[i64]>) -> Result<SyncSummary> {
    let summary = block_on(d.sync(only))?;
    for warning in summary.warnings().values() {
        eprintln!("delegate: warning: {}", crate::term::safe(warning));
    }
    Ok(summary)
}

/// `stale: last heard 4m ago` for a task whose host did not answer its latest sync.
pub fn stale_note(t: &delegate_core::Task) -> Option<String> {
    let s = t.stale.as_ref()?;
    Some(format!("stale: last heard {} ago", super::status::short_age(&s.last_heard_at)))
}
