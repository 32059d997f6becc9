//! `delegate move N COLUMN --version V`: accept a finished task (review → done) or take
//! the acceptance back, if nobody changed the task since the caller read it.

use std::path::Path;

use anyhow::Result;

use super::open;
use crate::cli::MoveArgs;

pub fn run(config: Option<&Path>, args: MoveArgs) -> Result<()> {
    let mut d = open(config)?;
    let author = args.who.or_local(&d);
    let card = d.move_task(args.id, args.column, args.version, &author)?;
    if args.json {
        return super::print_json(&card);
    }
    println!("task {} is in {} (version {})", card.id, card.column, card.version);
    Ok(())
}
