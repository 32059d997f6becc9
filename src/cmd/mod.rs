//! One file per subcommand; this module only dispatches.

mod answer;
mod artifacts;
mod attach;
mod board;
mod brothers;
mod cancel;
mod cleanup;
mod comment;
mod delete;
mod diff;
mod dispatch;
mod doctor;
mod fetch;
mod hosts;
mod inbox;
mod list;
mod log_lines;
mod logs;
mod mailbox;
mod mcp;
mod monitor;
mod move_task;
mod new;
mod notify;
mod reopen;
mod review;
mod run;
mod say;
mod schedule;
pub(crate) mod service;
mod show;
mod start;
mod status;
mod sync;
mod update;
mod usage;
mod wait;
mod warm;
pub(crate) mod worker;

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use clap::Parser;

use crate::cli::{Cli, Command, ShortForm};

/// Runs the command; `Ok` carries the exit code (non-zero only for `wait`'s and `doctor`'s
/// verdicts).
pub fn dispatch(cli: Cli) -> Result<u8> {
    let config = cli.config.as_deref();
    if cli.no_warm {
        NO_WARM.store(true, Ordering::Relaxed);
    }
    match cli.command {
        Command::Wait(args) => return wait::run(config, args),
        Command::Doctor(args) => return doctor::run(config, args),
        Command::Run(args) => run::run(config, args),
        Command::External(words) => {
            // `delegate oppy "prompt" --json` is `delegate run oppy "prompt" --json`.
            let argv = std::iter::once("delegate".into()).chain(words);
            let short = ShortForm::try_parse_from(argv)?;
            if short.no_warm {
                NO_WARM.store(true, Ordering::Relaxed);
            }
            run::run(config, short.run)
        }
        Command::New(args) => new::run(config, args),
        Command::Start(args) => start::run(config, args),
        Command::Comment(args) => comment::run(config, args),
        Command::Delete(args) => delete::run(config, args),
        Command::Inbox(args) => inbox::run(config, args),
        Command::Answer(args) => answer::run(config, args),
        Command::Review(args) => review::run(config, args),
        Command::Board(args) => board::run(config, args),
        Command::Move(args) => move_task::run(config, args),
        Command::List(args) => list::run(config, args),
        Command::Show(args) => show::run(config, args),
        Command::Diff(args) => diff::run(config, args),
        Command::Fetch(args) => fetch::run(config, args),
        Command::Cleanup(args) => cleanup::run(config, args),
        Command::Artifacts(args) => artifacts::run(config, args),
        Command::Usage(args) => usage::run(config, args),
        Command::Sync { json } => sync::run(config, json),
        Command::Status(args) => status::run(config, args),
        Command::Monitor(args) => monitor::run(config, args),
        Command::Logs(args) => logs::run(config, args),
        Command::Attach(args) => attach::run(config, args),
        Command::Cancel(args) => cancel::run(config, args),
        Command::Mailbox(args) => mailbox::run(config, args),
        Command::Update(args) => update::run(config, args),
        Command::Reopen(args) => reopen::run(config, args),
        Command::Say(args) => say::run(config, args),
        Command::Mcp => mcp::run(config),
        Command::Warm(c) => warm::run(config, c),
        Command::Hosts(c) => hosts::run(config, c),
        Command::Brothers(c) => brothers::run(config, c),
        Command::Schedule(c) => schedule::run(config, c),
        Command::Dispatch(args) => dispatch::run(config, args),
        Command::Service(c) => service::run(config, c),
        Command::Notify(c) => return notify::run(config, c),
        Command::Worker(args) => worker::run(args),
    }?;
    Ok(crate::exit::OK)
}

/// The library is async only at the SSH edge; the CLI blocks on it with a small runtime.
/// One runtime for the whole process: the library keeps SSH connections for reuse, and a
/// connection lives on the runtime that opened it, so a command that syncs and then
/// launches (or reopens, or cancels) uses one connection per host.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime"))
        .block_on(f)
}

/// Pretty JSON on stdout, written as it is serialised (a thousand tasks with their evidence
/// would otherwise sit in memory twice: as values and as one big string).
pub(crate) fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// A launch or reopen that failed after recording its task: the task is in the mailbox,
/// and a JSON caller gets it on stdout too; the error decides the exit code.
pub(crate) fn fail_with_task(d: &delegate_core::Delegate, e: delegate_core::Error, json: bool) -> Result<()> {
    if json
        && let Some(id) = e.task_id()
        && let Ok(task) = d.task(id)
    {
        print_json(&task)?;
    }
    Err(e.into())
}

/// `--no-warm`, set once from the command line before any command opens the mailbox (a
/// process-wide flag rather than one more argument threaded through every command).
static NO_WARM: AtomicBool = AtomicBool::new(false);

pub(crate) fn open(config: Option<&std::path::Path>) -> Result<delegate_core::Delegate> {
    let paths = crate::paths::resolve(config)?;
    let mut d = delegate_core::Delegate::open(paths)?;
    let (enabled, persist) = d.inventory().warm();
    if enabled && !NO_WARM.load(Ordering::Relaxed) {
        d.use_warm(warm::client(&d.paths().data_dir, persist));
    }
    d.transport().ssh_pool().set_resident(crate::paths::resident());
    d.set_env_lookup(crate::paths::env_lookup());
    if let Some(grace) = crate::paths::launch_grace()? {
        d.set_launch_grace(grace);
    }
    if let Some(stop) = crate::paths::stop_at() {
        d.set_phase_hook(std::sync::Arc::new(move |at: &str| {
            if at == stop.phase {
                if let Some(f) = &stop.file {
                    let _ = std::fs::write(f, at);
                }
                loop {
                    if stop.resume.as_ref().is_some_and(|r| r.exists()) {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        }));
    }
    Ok(d)
}
