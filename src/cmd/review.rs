//! `delegate review N accept|reject "note"`: a reviewer's verdict on a finished task;
//! `delegate review --count`: how many wait for one.

use std::path::Path;

use anyhow::{Context, Result};

use super::{block_on, open};
use crate::cli::ReviewArgs;

pub fn run(config: Option<&Path>, args: ReviewArgs) -> Result<()> {
    let mut d = open(config)?;
    if args.count {
        if !args.no_sync {
            super::sync::before_showing(&mut d, None)?;
        }
        let n = d.review_count()?;
        // A number alone, for scripts: `[ "$(delegate review --count)" -gt 0 ]`.
        if args.json {
            return super::print_json(&serde_json::json!({ "review": n }));
        }
        println!("{n}");
        return Ok(());
    }
    // clap requires both unless --count.
    let id = args.id.context("a task number is required")?;
    let accept = args.verdict.as_deref() == Some("accept");
    let author = args.who.or_local(&d);
    match block_on(d.review(id, accept, args.note.as_deref(), &author)) {
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
