//! `delegate reopen N "follow-up"`: a new run of a finished task that resumes the agent's
//! own session, so it keeps its context.

use std::path::Path;

use anyhow::Result;
use delegate_core::ops::reopen::ReopenRequest;

use super::{block_on, open};
use crate::cli::ReopenArgs;

pub fn run(config: Option<&Path>, args: ReopenArgs) -> Result<()> {
    let prompt = super::run::read_prompt(&args.text)?;
    let mut d = open(config)?;
    // A run still in flight must be seen as it is now, not as the mailbox last knew it.
    super::sync::before_showing(&mut d, Some(&[args.id]))?;
    let author = args.who.or_local(&d);
    let req = ReopenRequest { task: args.id, prompt, write_scope: args.write_scope.clone(), author };
    match block_on(d.reopen(req)) {
        Ok(task) => {
            if args.json {
                super::print_json(&task)?;
            } else {
                let run = task.runs.last().expect("a reopened task has runs");
                println!("reopened task {} on {}: run {}, session {}", task.id, task.brother, run.run_no, run.session);
                if let Some(how) = run.evidence["agent_plan"]["write_scope_enforcement"].as_str() {
                    println!("write scope: {how}");
                }
            }
            Ok(())
        }
        Err(e) => super::fail_with_task(&d, e, args.json),
    }
}
