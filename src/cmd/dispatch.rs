//! `delegate dispatch`: the background loop. One per mailbox (a lock file; a second one
//! exits at once with code 42 saying which process runs).
//!
//! Each tick re-opens the inventory and mailbox (edits made meanwhile apply), syncs when
//! tasks are in flight or queued, and fires due schedules. Between ticks it sleeps the
//! interval while work is in flight, else until the next schedule slot, waking at least
//! every interval to read the local mailbox for work other commands added (a read of a local
//! file, no SSH).

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use delegate_core::ops::dispatch::DispatchLock;

use super::{block_on, open};
use crate::cli::DispatchArgs;
use crate::term::safe;

pub fn run(config: Option<&Path>, args: DispatchArgs) -> Result<()> {
    let paths = crate::paths::resolve(config)?;
    let _lock = DispatchLock::acquire(&paths.data_dir)?;
    loop {
        let wait = match tick(config, &args) {
            Ok(wait) => wait,
            Err(e) => {
                // A broken inventory or a locked mailbox now is no reason to stop for good.
                eprintln!("delegate dispatch: {}", safe(&format!("{e:#}")));
                if args.once {
                    return Err(e);
                }
                args.interval
            }
        };
        if args.once {
            return Ok(());
        }
        std::thread::sleep(wait);
    }
}

/// One tick; returns how long to sleep before the next.
fn tick(config: Option<&Path>, args: &DispatchArgs) -> Result<Duration> {
    let mut d = open(config)?;
    let now = crate::paths::now();
    let t = block_on(d.dispatch_tick(now))?;
    block_on(d.close());
    let synced_something = t.synced.as_ref().is_some_and(|s| s.hosts.iter().any(|h| !h.changed.is_empty()));
    if args.json {
        if synced_something || !t.fired.is_empty() || t.synced.as_ref().is_some_and(|s| s.errors().next().is_some()) {
            println!("{}", serde_json::to_string(&t)?);
        }
    } else {
        if let Some(s) = &t.synced {
            for h in &s.hosts {
                for (id, status) in &h.changed {
                    println!("task {id} on {}: {status}", h.host);
                }
            }
            for w in s.warnings().values() {
                eprintln!("delegate dispatch: warning: {}", safe(w));
            }
        }
        for f in &t.fired {
            super::schedule::print_fired(f);
        }
    }
    if t.busy {
        return Ok(args.interval);
    }
    let until_due = t
        .next_due
        .and_then(|n| n.parse::<delegate_core::schedule::Timestamp>().ok())
        .map(|n| Duration::from_secs(n.as_second().saturating_sub(crate::paths::now().as_second()).max(1) as u64));
    Ok(until_due.map_or(args.interval, |u| u.min(args.interval)))
}
