//! `delegate`: parse, run, exit. Errors print once, as `delegate: <error chain>`, and the
//! exit code comes from the table in `exit.rs`.

mod cli;
mod cmd;
mod exit;
mod mcp;
mod paths;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if let Some(clap_err) = err.downcast_ref::<clap::Error>() {
                let _ = clap_err.print();
                return ExitCode::from(exit::USAGE);
            }
            eprintln!("delegate: {err:#}");
            exit::code_for(&err)
        }
    }
}
