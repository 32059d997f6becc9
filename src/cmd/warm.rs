//! `delegate warm status|stop`, the hidden `warm serve` that runs the daemon, and how a
//! command starts one on demand.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use delegate_core::transport::warm::{self, WarmClient};

use super::block_on;
use crate::cli::WarmCommand;

pub fn run(config: Option<&Path>, command: WarmCommand) -> Result<()> {
    if let WarmCommand::Serve { socket, persist_secs, mailbox } = command {
        return serve(socket, Duration::from_secs(persist_secs), mailbox);
    }
    let paths = crate::paths::resolve(config)?;
    let client = WarmClient::new(warm::socket_path(&paths.data_dir));
    match command {
        WarmCommand::Status { json } => {
            let status = block_on(client.status());
            if json {
                super::print_json(&status)?;
            } else {
                match status {
                    Some(s) => println!(
                        "warm daemon pid {} ({}): {} host connection(s), {} request(s) served, idle {}s of {}s, socket {}",
                        s.pid,
                        s.build,
                        s.connections,
                        s.requests_served,
                        s.idle_secs,
                        s.persist_secs,
                        client.socket().display()
                    ),
                    None => println!("no warm daemon (the next command that connects starts one)"),
                }
            }
        }
        WarmCommand::Stop => {
            if block_on(client.stop()) {
                println!("warm daemon stopping");
            } else {
                println!("no warm daemon was running");
            }
        }
        WarmCommand::Serve { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// The client commands use: through the daemon for `data_dir`, starting it when absent.
pub(crate) fn client(data_dir: &Path, persist: Duration) -> WarmClient {
    let mailbox = data_dir.to_path_buf();
    WarmClient::new(warm::socket_path(data_dir)).with_starter(Arc::new(move |socket| start(socket, persist, &mailbox)))
}

/// Starts `delegate warm serve` detached: its own session (a terminal's Ctrl-C or hangup
/// does not reach it), no stdio (a caller reading our output is not held open by it), and
/// `/` as its directory (it must not pin the caller's).
fn start(socket: &Path, persist: Duration, mailbox: &Path) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["warm", "serve", "--persist-secs", &persist.as_secs().max(1).to_string(), "--socket"])
        .arg(socket)
        .arg("--mailbox")
        .arg(mailbox)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/");
    // SAFETY: setsid is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    // Reap it if it exits while we still run (a long-lived `delegate mcp`).
    std::thread::spawn(move || child.wait());
    Ok(())
}

fn serve(socket: PathBuf, persist: Duration, mailbox: Option<PathBuf>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("a tokio runtime")?;
    runtime
        .block_on(warm::serve(warm::ServeOptions {
            socket: socket.clone(),
            persist,
            resident: crate::paths::resident(),
            mailbox,
        }))
        .with_context(|| format!("warm daemon on {}", socket.display()))
}
