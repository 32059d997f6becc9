//! `delegate review N accept|reject "note"`: a reviewer's verdict on a finished task.

use std::path::Path;

use anyhow::Result;

use super::{block_on, open};
use crate::cli::ReviewArgs;

pub fn run(config: Option<&Path>, args: ReviewArgs) -> Result<()> {
    let mut d = open(config)?;
    let author = args.who.or_local(&d);
    let accept = args.verdict == "accept";
    match block_on(d.review(args.id, accept, args.note.as_deref(), &author)) {
        Ok(task) if args.json => super::print_json(&task),
        Ok(task) if accept => {
            println!("task {} accepted: done", task.id);
            Ok(())
        }
        Ok(task) => {
            println!("task {} rejected: reopened on {} with the note as its follow-up", task.id, task.brother);
            Ok(())
        }
        Err(e) => super::fail_with_task(&d, e, args.json),
    }
}
