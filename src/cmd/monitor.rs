//! `delegate monitor --format json`: one JSON line per state change, event or message, for
//! another program to follow. Syncs on an interval and prints what landed since.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::open;
use super::sync::before_showing;
use crate::cli::MonitorArgs;

pub fn run(config: Option<&Path>, args: MonitorArgs) -> Result<()> {
    let mut d = open(config)?;
    // From now on, unless asked for the history too.
    let mut cursor = if args.from_start { Default::default() } else { d.store().feed_end()? };
    let mut polls = 0u64;
    loop {
        if !args.no_sync {
            before_showing(&mut d, None)?;
        }
        let (items, next) = d.store().feed_since(cursor)?;
        cursor = next;
        let mut out = std::io::stdout().lock();
        for item in items {
            // A closed pipe (the reader went away) ends the monitor quietly.
            if writeln!(out, "{}", serde_json::to_string(&item)?).is_err() {
                return Ok(());
            }
        }
        if out.flush().is_err() {
            return Ok(());
        }
        polls += 1;
        if args.count.is_some_and(|c| polls >= c) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(args.interval_ms.max(100)));
    }
}
