//! `delegate mailbox [--unread]`: what brothers reported (receipt, progress, questions,
//! completion), task-linked. Showing a message marks it read.

use std::path::Path;

use anyhow::Result;

use super::open;
use super::sync::before_showing;
use crate::cli::MailboxArgs;

pub fn run(config: Option<&Path>, args: MailboxArgs) -> Result<()> {
    let mut d = open(config)?;
    if !args.no_sync {
        before_showing(&mut d, None)?;
    }
    let messages = d.store().mailbox(args.unread, args.limit)?;
    if args.json {
        super::print_json(&messages)?;
    } else if messages.is_empty() {
        println!("{}", if args.unread { "no unread messages" } else { "no messages" });
    } else {
        for m in &messages {
            let new = if m.read_at.is_none() { "*" } else { " " };
            let text: String = m.text.chars().filter(|c| *c == '\n' || !c.is_control()).collect();
            println!(
                "{new} task {:<4} {:<10} {:<9} {}  {}",
                m.task_id,
                m.author,
                m.kind,
                m.at,
                text.replace('\n', "\n      ")
            );
        }
    }
    let ids: Vec<i64> = messages.iter().filter(|m| m.read_at.is_none()).map(|m| m.id).collect();
    d.store_mut().mark_read(&ids)?;
    Ok(())
}
