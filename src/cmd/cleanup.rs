//! `delegate cleanup N [--force]`: removes a finished task's worktree and refs on the
//! brother (refused, exit 47, while its change was never fetched).

use std::path::Path;

use anyhow::Result;

use super::{block_on, open};
use crate::cli::CleanupArgs;
use crate::term::safe;

pub fn run(config: Option<&Path>, args: CleanupArgs) -> Result<()> {
    let mut d = open(config)?;
    let done = block_on(d.cleanup(args.id, args.force))?;
    if args.json {
        return super::print_json(&done);
    }
    match &done.worktree {
        Some(w) => println!("task {}: removed worktree {} and {} ref(s)", done.task, safe(w), done.refs),
        None => println!("task {}: no worktree to remove; removed {} ref(s)", done.task, done.refs),
    }
    Ok(())
}
