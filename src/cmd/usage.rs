//! `delegate usage [--by brother|profile|day]`: what the agents reported spending, summed
//! from every run's stream (turns, tokens, Claude's dollars).

use std::path::Path;

use anyhow::Result;
use delegate_core::mailbox::usage::UsageBy;

use super::open;
use crate::cli::{UsageArgs, UsageGroup};
use crate::term::safe;

pub fn run(config: Option<&Path>, args: UsageArgs) -> Result<()> {
    let mut d = open(config)?;
    if !args.no_sync {
        super::sync::before_showing(&mut d, None)?;
    }
    let by = match args.by {
        UsageGroup::Brother => UsageBy::Brother,
        UsageGroup::Profile => UsageBy::Profile,
        UsageGroup::Day => UsageBy::Day,
    };
    let rows = d.usage(by)?;
    if args.json {
        super::print_json(&serde_json::json!({ "by": format!("{by:?}").to_lowercase(), "rows": rows }))?;
        return Ok(());
    }
    if rows.is_empty() {
        println!("no runs yet");
        return Ok(());
    }
    let heading = format!("{by:?}").to_uppercase();
    println!("{heading:<16}  {:>5}  {:>7}  {:>12}  {:>12}  {:>12}", "RUNS", "TURNS", "COST", "TOKENS IN", "TOKENS OUT");
    let mut ignored = 0;
    for r in &rows {
        // Only runs that reported a cost (Claude's) are in the dollars: say when some did not.
        let cost =
            if r.runs_with_cost == r.runs { format!("${:.4}", r.cost_usd) } else { format!("${:.4}*", r.cost_usd) };
        println!(
            "{:<16}  {:>5}  {:>7}  {:>12}  {:>12}  {:>12}",
            safe(&r.key),
            r.runs,
            r.turns,
            cost,
            r.input_tokens,
            r.output_tokens
        );
        ignored += r.ignored;
    }
    if rows.iter().any(|r| r.runs_with_cost < r.runs) {
        println!("* some runs reported no cost (Codex reports tokens only; runs still going report at the end)");
    }
    if ignored > 0 {
        println!(
            "{ignored} run(s) reported an impossible cost (negative, not a number, or over ${}), left out",
            delegate_core::mailbox::usage::MAX_RUN_COST_USD
        );
    }
    Ok(())
}
