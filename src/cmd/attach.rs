//! `delegate attach N`: open the task's live tmux session through the system `ssh -t`.

use std::os::unix::process::CommandExt;
use std::path::Path;

use anyhow::{Context, Result};

use super::open;
use crate::cli::AttachArgs;

pub fn run(config: Option<&Path>, args: AttachArgs) -> Result<()> {
    let d = open(config)?;
    let argv = d.attach_argv(args.id)?;
    if args.print {
        println!("{}", argv.iter().map(|a| super::show::display_word(a)).collect::<Vec<_>>().join(" "));
        return Ok(());
    }
    // Replace this process: the terminal belongs to ssh and tmux now.
    let err = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
    Err(err).context("could not start ssh")
}
