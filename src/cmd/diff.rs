//! `delegate diff N [--stat] [--run R]`: what the task changed in its workdir since its
//! launch, read from the brother. The diff is the brother's text: every line goes through
//! `safe` before it reaches the terminal.

use std::io::Write as _;
use std::path::Path;

use anyhow::Result;
use delegate_core::ops::work_back::SHOW_CAP;
use delegate_core::remote::diff::DiffMode;

use super::{block_on, open};
use crate::cli::DiffArgs;
use crate::term::safe;

pub fn run(config: Option<&Path>, args: DiffArgs) -> Result<()> {
    let mut d = open(config)?;
    let mode = if args.stat { DiffMode::Stat } else { DiffMode::Patch };
    let diff = block_on(d.diff(args.id, args.run, mode, SHOW_CAP))?;
    let text = String::from_utf8_lossy(&diff.bytes);
    if args.json {
        let mut v = serde_json::to_value(&diff)?;
        v["changed"] = diff.changed().into();
        v["diff"] = text.as_ref().into();
        return super::print_json(&v);
    }
    let mut out = std::io::stdout().lock();
    if !diff.changed() {
        writeln!(out, "task {} changed nothing in its workdir since the launch of run {}", diff.task, diff.run)?;
        return Ok(());
    }
    for line in text.lines() {
        writeln!(out, "{}", safe(line))?;
    }
    Ok(())
}
