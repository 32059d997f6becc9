//! `delegate notify list|test`: what was sent where, and a sample to each target.

use std::path::Path;

use anyhow::Result;

use super::{block_on, open};
use crate::cli::NotifyCommand;
use crate::term::safe;

pub fn run(config: Option<&Path>, c: NotifyCommand) -> Result<u8> {
    match c {
        NotifyCommand::List { limit, json } => list(config, limit, json),
        NotifyCommand::Test { brother, json } => test(config, brother.as_deref(), json),
    }
}

fn list(config: Option<&Path>, limit: u32, json: bool) -> Result<u8> {
    let d = open(config)?;
    let rows = d.notifications(limit)?;
    if json {
        super::print_json(&rows)?;
        return Ok(crate::exit::OK);
    }
    if rows.is_empty() {
        println!("no notifications yet");
    }
    for n in &rows {
        let about = match (n.message.task, &n.message.schedule) {
            (Some(t), _) => format!("task {t}"),
            (None, Some(s)) => format!("schedule {s}"),
            (None, None) => "-".into(),
        };
        let mut line = format!(
            "{:>4}  {:<8} {:<16} {:<10} {:<8} attempts {}  {}",
            n.id,
            n.state,
            n.message.event,
            about,
            n.message.status,
            n.attempts,
            n.target.label()
        );
        if let Some(e) = &n.last_error {
            line.push_str(&format!("\n      last error: {e}"));
        }
        // Subjects and reasons come from brothers.
        println!("{}", safe(&line));
    }
    Ok(crate::exit::OK)
}

fn test(config: Option<&Path>, brother: Option<&str>, json: bool) -> Result<u8> {
    let d = open(config)?;
    let results = block_on(d.notify_test(brother))?;
    if json {
        super::print_json(&results)?;
    } else {
        for r in &results {
            match &r.error {
                None => println!("{}: delivered", safe(&r.target)),
                Some(e) => println!("{}: FAILED: {}", safe(&r.target), safe(e)),
            }
        }
    }
    let failed: Vec<String> =
        results.iter().filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.target))).collect();
    if !failed.is_empty() {
        anyhow::bail!(delegate_core::Error::NotifyFailed { failures: safe(&failed.join("; ")).into_owned() });
    }
    Ok(crate::exit::OK)
}
