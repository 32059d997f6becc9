//! One file per subcommand; this module only dispatches.

mod brothers;
mod hosts;
mod list;
mod run;
mod show;

use anyhow::Result;
use clap::Parser;

use crate::cli::{Cli, Command, ShortForm};

pub fn dispatch(cli: Cli) -> Result<()> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Run(args) => run::run(config, args),
        Command::External(words) => {
            // `delegate oppy "prompt" --json` is `delegate run oppy "prompt" --json`.
            let argv = std::iter::once("delegate".into()).chain(words);
            let short = ShortForm::try_parse_from(argv)?;
            run::run(config, short.run)
        }
        Command::List(args) => list::run(config, args),
        Command::Show(args) => show::run(config, args),
        Command::Hosts(c) => hosts::run(config, c),
        Command::Brothers(c) => brothers::run(config, c),
    }
}

/// The library is async only at the SSH edge; the CLI blocks on it with a small runtime.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime").block_on(f)
}

pub(crate) fn open(config: Option<&std::path::Path>) -> Result<delegate_core::Delegate> {
    let paths = crate::paths::resolve(config)?;
    Ok(delegate_core::Delegate::open(paths)?)
}
