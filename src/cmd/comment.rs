//! `delegate comment N "text"`: a comment in the task's thread, by anyone, with its author.

use std::path::Path;

use anyhow::Result;

use super::open;
use crate::cli::CommentArgs;

pub fn run(config: Option<&Path>, args: CommentArgs) -> Result<()> {
    let mut d = open(config)?;
    let author = args.who.or_local(&d);
    d.comment(args.id, &author, &args.text)?;
    println!("comment added to task {} (see `delegate show {}`)", args.id, args.id);
    Ok(())
}
