//! `delegate fetch N [--into DIR | --apply [--repo PATH]]`: the task's change as a patch
//! file, or applied to a local checkout (checked first: all of it or nothing).

use std::path::{Path, PathBuf};

use anyhow::Result;
use delegate_core::ops::work_back::{apply_patch, sha256_hex, write_patch};

use super::{block_on, open};
use crate::cli::FetchArgs;

pub fn run(config: Option<&Path>, args: FetchArgs) -> Result<()> {
    let mut d = open(config)?;
    if let Some(dir) = &args.artifacts {
        return super::artifacts::fetch(&mut d, args.id, dir, args.json);
    }
    let diff = block_on(d.fetch_patch(args.id, args.run))?;
    // The brother's hash was checked against the bytes when they arrived; this is the
    // lead's own, of what it writes or applies.
    let sha256 = sha256_hex(&diff.bytes);
    let (verb, path) = if args.apply {
        let repo = match args.repo {
            Some(r) => r,
            None => std::env::current_dir()?,
        };
        ("applied to", apply_patch(&repo, &diff)?)
    } else {
        let dir = args.into.unwrap_or_else(|| PathBuf::from("."));
        ("written to", write_patch(&dir, &diff)?)
    };
    // So `cleanup` knows this change is safe on the lead (the tree names it exactly).
    d.record_fetched(diff.task, &diff.tree, &format!("{verb} {}", path.display()))?;
    if args.json {
        let mut v = serde_json::to_value(&diff)?;
        v[if args.apply { "applied_to" } else { "path" }] = path.display().to_string().into();
        v["sha256"] = sha256.into();
        return super::print_json(&v);
    }
    println!(
        "task {}: change since the launch of run {} ({} bytes, sha256 {sha256}) {verb} {}",
        diff.task,
        diff.run,
        diff.size,
        path.display()
    );
    Ok(())
}
