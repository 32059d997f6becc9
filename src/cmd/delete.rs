//! `delegate delete N`: remove a backlog or finished task and its record (managers only).

use std::path::Path;

use anyhow::Result;

use super::open;
use crate::cli::DeleteArgs;
use crate::term::safe;

pub fn run(config: Option<&Path>, args: DeleteArgs) -> Result<()> {
    let mut d = open(config)?;
    let who = args.who.or_local(&d);
    let task = d.delete(args.id, &who)?;
    if args.json {
        return super::print_json(&serde_json::json!({ "deleted": task.id, "status": task.status }));
    }
    println!("task {} deleted ({}, {})", task.id, task.status, safe(&task.subject));
    Ok(())
}
