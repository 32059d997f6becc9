//! `delegate cancel N`: stop the agent and record `cancelled`.

use std::path::Path;

use anyhow::Result;

use super::{block_on, open};
use crate::cli::CancelArgs;
use crate::term::safe;

pub fn run(config: Option<&Path>, args: CancelArgs) -> Result<()> {
    let mut d = open(config)?;
    let who = args.who.or_local(&d);
    let task = block_on(d.cancel_as(args.id, &who))?;
    if args.json {
        super::print_json(&task)?;
    } else {
        let why = task.reason.as_deref().map(|r| format!(" ({})", safe(r))).unwrap_or_default();
        println!("task {} {}{why}", task.id, task.status);
    }
    Ok(())
}
