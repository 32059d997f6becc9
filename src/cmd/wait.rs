//! `delegate wait N... [--timeout D]`: block until the tasks finish; the exit code says
//! whether all completed.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};

use super::{block_on, open};
use crate::cli::WaitArgs;
use crate::exit;
use crate::term::safe;

pub fn run(config: Option<&Path>, args: WaitArgs) -> Result<u8> {
    let mut d = open(config)?;
    if args.ids.is_empty() {
        bail!("give at least one task number");
    }
    let ids = if args.children {
        let mut all = Vec::new();
        for id in &args.ids {
            all.extend(d.children_of(*id)?);
        }
        all
    } else {
        args.ids.clone()
    };
    let result = block_on(d.wait(&ids, args.timeout, Duration::from_millis(args.interval_ms.max(200))))?;
    for warning in result.sync_errors.values() {
        eprintln!("delegate: warning: {}", safe(warning));
    }
    if args.json {
        super::print_json(&result)?;
    } else {
        for t in &result.tasks {
            let why = t.reason.as_deref().map(|r| format!(": {}", safe(r))).unwrap_or_default();
            let turns = t.turns.map(|n| format!(", {n} turn{}", if n == 1 { "" } else { "s" })).unwrap_or_default();
            let code = t.exit_code.map(|c| format!(", exit {c}")).unwrap_or_default();
            let stale = super::sync::stale_note(t).map(|n| format!(" [{n}]")).unwrap_or_default();
            println!("task {} {}{why}{turns}{code}{stale}", t.id, safe(t.status.as_str()));
        }
        if !result.pending.is_empty() {
            println!("still running after the timeout: {:?}", result.pending);
        }
    }
    Ok(if !result.pending.is_empty() {
        exit::WAIT_TIMEOUT
    } else if result.all_completed() {
        exit::OK
    } else if result.tasks.iter().any(delegate_core::ops::nats::untaken) {
        // A NATS task no worker took (its task_ttl passed) or the worker refused.
        exit::NO_WORKER
    } else {
        exit::NOT_ALL_COMPLETED
    })
}
