//! `delegate artifacts N` lists the files a task declared; `delegate fetch N --artifacts
//! [DIR]` copies them back (see delegate_core::ops::artifacts). Paths and descriptions are
//! the brother's words: cleaned in the core, and through `safe` again here.

use std::path::Path;

use anyhow::Result;
use delegate_core::Delegate;

use super::{block_on, open};
use crate::cli::ArtifactsArgs;
use crate::term::safe;

pub fn run(config: Option<&Path>, args: ArtifactsArgs) -> Result<()> {
    let mut d = open(config)?;
    let list = block_on(d.artifacts(args.id))?;
    let fetched = d.store().artifact_fetches(args.id)?;
    if args.json {
        return super::print_json(&serde_json::json!({ "artifacts": list, "fetched": fetched }));
    }
    if list.is_empty() {
        println!("task {} declared no artifacts", args.id);
    }
    for a in &list {
        let state = if a.verdict == "ok" {
            format!("{} bytes  sha256 {}", a.size, a.sha256.as_deref().unwrap_or("-"))
        } else {
            format!("REFUSED: {}", a.verdict)
        };
        println!("run {}  {}  {state}", a.run, safe(&a.path));
        if !a.description.is_empty() {
            println!("    {}", safe(&a.description));
        }
    }
    for f in &fetched {
        println!("fetched {}  {} bytes  sha256 {}  -> {}", f.fetched_at, f.size, f.sha256, safe(&f.local_path));
    }
    Ok(())
}

pub fn fetch(d: &mut Delegate, id: i64, dir: &Path, json: bool) -> Result<()> {
    let done = block_on(d.fetch_artifacts(id, dir))?;
    if json {
        super::print_json(&serde_json::to_value(&done)?)?;
    } else {
        for f in &done.fetched {
            println!("{}  {} bytes  sha256 {}  <- {}", safe(&f.local_path), f.size, f.sha256, safe(&f.path));
        }
    }
    if !done.refused.is_empty() {
        // The fetched ones are written; the exit code says that some were not.
        return Err(delegate_core::error::Error::ArtifactRefused { task: id, refused: done.refused }.into());
    }
    Ok(())
}
