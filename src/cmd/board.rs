//! `delegate board`: every task in its column (backlog, todo, in progress, needs you,
//! review, done), by priority then age; `--serve` serves it as a live page (board_page/).

use std::path::Path;

use anyhow::Result;
use delegate_core::Column;
use delegate_core::ops::board::BoardFilter;

use super::open;
use crate::cli::BoardArgs;
use crate::term::safe;

pub fn run(config: Option<&Path>, args: BoardArgs) -> Result<()> {
    if args.serve {
        return crate::board_page::serve(config, args.port, args.who.author);
    }
    let mut d = open(config)?;
    if !args.no_sync {
        super::sync::before_showing(&mut d, None)?;
    }
    let me = args.mine.then(|| args.who.or_local(&d));
    let columns = d.board_of(&BoardFilter {
        brother: args.brother.as_deref(),
        mine: me.as_deref(),
        column: args.review.then_some(Column::Review),
        limit: args.limit as usize,
    })?;
    if args.json {
        return super::print_json(&serde_json::json!({ "columns": columns }));
    }
    for c in &columns {
        println!("{} ({})", c.column.as_str().replace('_', " ").to_uppercase(), c.count);
        for card in &c.cards {
            let brother = if card.brother.is_empty() { "-" } else { card.brother.as_str() };
            println!(
                "  {:>5}  v{:<4} {:<6}  {:<14}  {:<12}  {}",
                card.id,
                card.version,
                card.priority.as_str(),
                card.status.as_str(),
                safe(brother),
                safe(&card.subject)
            );
        }
        if c.count > c.cards.len() {
            println!("  … {} more (--limit)", c.count - c.cards.len());
        }
    }
    Ok(())
}
