//! `delegate list`: tasks, newest first.

use std::path::Path;

use anyhow::Result;
use delegate_core::ListFilter;

use super::open;
use crate::cli::ListArgs;

pub fn run(config: Option<&Path>, args: ListArgs) -> Result<()> {
    let mut d = open(config)?;
    if !args.no_sync {
        super::sync::before_showing(&mut d, None)?;
    }
    let tasks = d.list(&ListFilter { brother: args.brother, status: args.status, limit: Some(args.limit) })?;
    if args.json {
        super::print_json(&tasks)?;
        return Ok(());
    }
    if tasks.is_empty() {
        println!("no tasks");
        return Ok(());
    }
    println!("{:>5}  {:<14}  {:<12}  {:<12}  {:<16}  SUBJECT", "ID", "STATUS", "BROTHER", "HOST", "CREATED");
    for t in tasks {
        let stale = super::sync::stale_note(&t).map(|n| format!("  [{n}]")).unwrap_or_default();
        println!(
            "{:>5}  {:<14}  {:<12}  {:<12}  {:<16}  {}{stale}",
            t.id,
            t.status.as_str(),
            t.brother,
            t.host,
            short_time(&t.created_at),
            crate::term::safe(&t.subject)
        );
    }
    Ok(())
}

/// `2026-11-21T10:02:17.123Z` as `2026-11-21 10:02`.
pub fn short_time(rfc3339: &str) -> String {
    rfc3339.get(..16).map(|s| s.replace('T', " ")).unwrap_or_else(|| rfc3339.to_string())
}
