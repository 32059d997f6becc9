//! `delegate start N`: launch a backlog task, as a queued task is launched.

use std::path::Path;

use anyhow::{Result, bail};
use delegate_core::TaskStatus;

use super::{block_on, open};
use crate::cli::StartArgs;
use crate::term::safe;

pub fn run(config: Option<&Path>, args: StartArgs) -> Result<()> {
    let mut d = open(config)?;
    let author = args.who.author.clone();
    let task = match block_on(d.start(args.id, args.assign.clone(), author)) {
        Ok(task) => task,
        Err(e) => return super::fail_with_task(&d, e, args.json),
    };
    super::run::print_launched(&task, args.json)?;
    // Refused before anything was sent (the inventory changed under it): the reason says why.
    if task.status == TaskStatus::Failed {
        bail!("task {} failed to start: {}", task.id, safe(task.reason.as_deref().unwrap_or("no reason recorded")));
    }
    Ok(())
}
