//! `delegate`: parse, run, exit. Errors print once, as `delegate: <error chain>`, and the
//! exit code comes from the table in `exit.rs`.

mod board_page;
mod cli;
mod cmd;
mod exit;
mod hide_arg;
mod mcp;
mod paths;
mod term;

use std::process::ExitCode;

use clap::Parser;

// When stdout's reader goes away (`delegate status | head -1`), delegate exits quietly with
// exit::CLOSED_STDOUT, 141: what a shell reports for a program killed by SIGPIPE (128 + 13).
// Rust ignores SIGPIPE, so without this every write to the closed pipe would print "Broken
// pipe" errors or panic in `println!`. The conventional status rather than 0: output was
// lost, and a script with `set -o pipefail` sees delegate exactly as it sees `cat` or `grep`.
// SIGPIPE itself is not restored to its default, because that would also kill the process on
// a write to a closed SSH or warm-daemon socket, where an error is what we want.
use exit::CLOSED_STDOUT;

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = cli::Cli::parse_from(short_form_with_environment(std::env::args_os().collect()));
    match cmd::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if let Some(clap_err) = err.downcast_ref::<clap::Error>() {
                let _ = clap_err.print();
                return ExitCode::from(exit::USAGE);
            }
            if is_broken_pipe(&err) && stdout_is_closed() {
                return ExitCode::from(CLOSED_STDOUT);
            }
            // Errors carry brother text (launch and sync replies, paths it echoed).
            eprintln!("delegate: {}", term::block(&format!("{err:#}"), "  "));
            exit::code_for(&err)
        }
    }
}

/// `delegate --environment dev "prompt"` names no brother first: it is `delegate run
/// --environment dev "prompt"` (clap would read the flag as the top level's and refuse it).
fn short_form_with_environment(mut argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    // Past the global options that may come first.
    let mut i = 1;
    while let Some(a) = argv.get(i).and_then(|a| a.to_str()) {
        match a {
            "--no-warm" => i += 1,
            "--config" => i += 2,
            _ if a.starts_with("--config=") => i += 1,
            _ => break,
        }
    }
    let at = argv.get(i).and_then(|a| a.to_str()).unwrap_or("");
    if at == "--environment" || at.starts_with("--environment=") {
        argv.insert(i, "run".into());
    }
    argv
}

/// `println!` panics when stdout is a closed pipe; turn exactly that panic into a quiet
/// exit. Any other panic reports as usual.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or("");
        if message.starts_with("failed printing to stdout") && stdout_is_closed() {
            std::process::exit(CLOSED_STDOUT.into());
        }
        default(info)
    }));
}

/// The error, or one of its causes, is a write to a pipe without a reader.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || e.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}

/// Stdout is a pipe or socket whose reader is gone. Checked so that a broken pipe elsewhere
/// (an SSH channel, the warm daemon's socket) still reports as an error.
fn stdout_is_closed() -> bool {
    let mut fd = libc::pollfd { fd: libc::STDOUT_FILENO, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout; poll only reads and writes that struct.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n == 1 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}
