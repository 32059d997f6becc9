//! `delegate mailbox [--unread]`: what brothers reported (receipt, progress, questions,
//! completion), task-linked. Showing a message marks it read.

use std::path::Path;

use anyhow::Result;

use super::open;
use super::sync::before_showing;
use crate::cli::MailboxArgs;
use crate::term::{block, safe};

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
            // The lead's clock (when it landed), not the brother's claim; the text's own
            // lines are indented so none reads as another entry.
            println!(
                "{new} task {:<4} {:<10} {:<9} {}  {}",
                m.task_id,
                safe(&m.author),
                safe(&m.kind),
                safe(m.landed_at()),
                block(&m.text, "      ")
            );
        }
    }
    let ids: Vec<i64> = messages.iter().filter(|m| m.read_at.is_none()).map(|m| m.id).collect();
    d.store_mut().mark_read(&ids)?;
    Ok(())
}
