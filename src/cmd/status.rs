//! `delegate status [--watch]`: the tasks in flight, refreshed.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use delegate_core::{ListFilter, Task, TaskStatus};

use super::open;
use super::sync::before_showing;
use crate::cli::StatusArgs;

pub fn run(config: Option<&Path>, args: StatusArgs) -> Result<()> {
    let mut d = open(config)?;
    loop {
        if !args.no_sync {
            before_showing(&mut d, None)?;
        }
        let tasks: Vec<Task> = d
            .list(&ListFilter { limit: Some(args.limit), ..Default::default() })?
            .into_iter()
            .filter(|t| args.all || !t.status.is_terminal() || recently_finished(t))
            .collect();
        let mut out = std::io::stdout().lock();
        if args.watch {
            // Clear the screen and go home: a refreshing table, like `watch`.
            write!(out, "\x1b[H\x1b[2J")?;
        }
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&tasks)?)?;
        } else {
            print_table(&mut out, &tasks)?;
        }
        out.flush()?;
        if !args.watch {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(args.interval.max(1)));
    }
}

fn recently_finished(t: &Task) -> bool {
    age(&t.updated_at).is_some_and(|a| a < Duration::from_secs(600))
}

fn age(rfc3339: &str) -> Option<Duration> {
    let t = humantime::parse_rfc3339(rfc3339).ok()?;
    SystemTime::now().duration_since(t).ok()
}

pub fn short_age(rfc3339: &str) -> String {
    match age(rfc3339) {
        None => "-".into(),
        Some(d) if d.as_secs() < 60 => format!("{}s", d.as_secs()),
        Some(d) if d.as_secs() < 3600 => format!("{}m", d.as_secs() / 60),
        Some(d) if d.as_secs() < 86400 => format!("{}h{:02}m", d.as_secs() / 3600, d.as_secs() % 3600 / 60),
        Some(d) => format!("{}d", d.as_secs() / 86400),
    }
}

fn print_table(out: &mut impl Write, tasks: &[Task]) -> Result<()> {
    if tasks.is_empty() {
        writeln!(out, "nothing in flight")?;
        return Ok(());
    }
    writeln!(out, "{:>5}  {:<14}  {:<12}  {:>6}  {:>5}  LAST EVENT", "ID", "STATE", "BROTHER", "AGE", "TURNS")?;
    for t in tasks {
        let turns = t.turns.map(|n| format!("{n}/{}", t.max_turns)).unwrap_or_else(|| "-".into());
        let last = match t.status {
            TaskStatus::Failed | TaskStatus::Lost | TaskStatus::TimedOut => t.reason.clone().unwrap_or_default(),
            _ => t.last_event.clone().unwrap_or_default(),
        };
        let last: String = crate::term::safe(&last).chars().take(60).collect();
        let last = match super::sync::stale_note(t) {
            Some(note) => format!("[{note}] {last}"),
            None => last,
        };
        writeln!(
            out,
            "{:>5}  {:<14}  {:<12}  {:>6}  {:>5}  {last}",
            t.id,
            t.status.as_str(),
            t.brother,
            short_age(&t.created_at),
            turns
        )?;
    }
    Ok(())
}
