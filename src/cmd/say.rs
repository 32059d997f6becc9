//! `delegate say N "message"`: tell a running brother something mid-task.

use std::path::Path;

use anyhow::Result;

use super::{block_on, open};
use crate::cli::SayArgs;

pub fn run(config: Option<&Path>, args: SayArgs) -> Result<()> {
    // A message can be as private as a prompt: out of our argv before any thread starts.
    crate::hide_arg::hide(std::ffi::OsStr::new(&args.message));
    let mut d = open(config)?;
    // No sync first: the brother's say script itself refuses a run that has ended, so a
    // message to a task that ended meanwhile fails now (and is kept as undeliverable).
    let author = args.who.or_local(&d);
    let m = block_on(d.say(args.id, &args.message, &author))?;
    if args.json {
        super::print_json(&m)?;
    } else {
        println!(
            "message {} to task {} queued on the brother (delivery shows in `delegate show {}`)",
            m.id, m.task_id, m.task_id
        );
    }
    Ok(())
}
