//! `delegate inbox`: the questions agents asked across every brother that nobody answered
//! yet (report-helper questions, Claude's permission denials, tasks waiting for input),
//! oldest first.

use std::path::Path;

use anyhow::Result;

use super::open;
use crate::cli::InboxArgs;
use crate::term::{block, safe};

pub fn run(config: Option<&Path>, args: InboxArgs) -> Result<()> {
    let mut d = open(config)?;
    if !args.no_sync {
        super::sync::before_showing(&mut d, None)?;
    }
    let questions = d.inbox(args.brother.as_deref())?;
    if args.json {
        return super::print_json(&serde_json::json!({ "questions": questions }));
    }
    if questions.is_empty() {
        println!("nothing waits for you: no agent asked a question that is still open");
        return Ok(());
    }
    for q in &questions {
        let age = humantime::format_duration(std::time::Duration::from_secs(q.age_secs));
        let kind = serde_json::to_value(q.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        println!("task {}  {}  {}  {} ago  {}", q.task, safe(&q.brother), kind, age, safe(&q.subject));
        println!("    {}", block(&q.question, "    "));
    }
    println!("answer with: delegate answer N \"text\"");
    Ok(())
}
