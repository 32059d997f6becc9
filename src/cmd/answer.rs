//! `delegate answer N "text"`: answer the question a task's agent asked: said to it while it
//! runs, or a new run resuming it with the answer once it has stopped.

use std::path::Path;

use anyhow::{Context, Result};

use super::{block_on, open};
use crate::cli::AnswerArgs;

pub fn run(config: Option<&Path>, args: AnswerArgs) -> Result<()> {
    let text = super::run::read_prompt(&args.text)?;
    let text = String::from_utf8(text).context("the answer is not UTF-8 text")?;
    let mut d = open(config)?;
    // Whether the agent still runs decides how the answer travels: ask the brother first.
    super::sync::before_showing(&mut d, Some(&[args.id]))?;
    let author = args.who.or_local(&d);
    let answered = block_on(d.answer(args.id, &text, &author))?;
    if args.json {
        return super::print_json(&answered);
    }
    match (answered.message_id, answered.run) {
        (Some(m), _) => println!(
            "answered task {}: message {m} queued for the running agent (delivery shows in `delegate show {}`)",
            answered.task, answered.task
        ),
        (_, Some(run)) => println!("answered task {}: resumed the agent with the answer as run {run}", answered.task),
        _ => println!("answered task {}", answered.task),
    }
    Ok(())
}
