//! `delegate new "title"`: record a task in the backlog without launching it.

use std::path::Path;

use anyhow::Result;
use delegate_core::Draft;

use super::open;
use crate::cli::NewArgs;
use crate::term::safe;

pub fn run(config: Option<&Path>, args: NewArgs) -> Result<()> {
    // Title and description are the agent's prompt: out of our argv as soon as parsed.
    crate::hide_arg::hide(std::ffi::OsStr::new(&args.title));
    if let Some(text) = &args.description {
        crate::hide_arg::hide(std::ffi::OsStr::new(text));
    }
    let mut d = open(config)?;
    let task = d.create_draft(Draft {
        title: args.title.clone(),
        description: args.description.clone(),
        priority: args.board.priority,
        parent: args.board.parent,
        assign: args.assign.clone(),
        author: args.who.author.clone(),
        profile: args.profile.clone(),
    })?;
    if args.json {
        return super::print_json(&task);
    }
    println!("task {} in the backlog ({} priority): {}", task.id, task.priority, safe(&task.subject));
    match task.brother.as_str() {
        "" => println!("  launch it with: delegate start {} --assign BROTHER", task.id),
        b => println!("  assigned to {}; launch it with: delegate start {}", safe(b), task.id),
    }
    Ok(())
}
