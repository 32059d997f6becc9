//! `delegate update N --status S [--output TEXT]`: set a task's status by hand.

use std::path::Path;

use anyhow::Result;

use super::open;
use crate::cli::UpdateArgs;

pub fn run(config: Option<&Path>, args: UpdateArgs) -> Result<()> {
    let mut d = open(config)?;
    let author = args.who.or_local(&d);
    let task = d.update(args.id, args.status, args.output.as_deref(), &author)?;
    if args.json {
        super::print_json(&task)?;
    } else {
        println!("task {} {}", task.id, task.status);
    }
    Ok(())
}
