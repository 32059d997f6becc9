//! `delegate worker`: runs on a brother that accepts no inbound SSH. It connects out to a
//! NATS server and runs the tasks leads publish for its id (see
//! `delegate_core::worker`). It runs until it is killed; progress goes to stderr, one line
//! per event, never a prompt or a credential.

use std::path::PathBuf;

use anyhow::{Result, bail};
use delegate_core::worker::{self, WorkerConfig};

use super::block_on;
use crate::cli::WorkerArgs;
use crate::term::safe;

/// The server could not be reached or refused the worker: exit code 49.
#[derive(Debug)]
pub struct NatsUnreachable(pub String);

impl std::fmt::Display for NatsUnreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NatsUnreachable {}

pub fn run(args: WorkerArgs) -> Result<()> {
    // Credentials in the URL would sit in argv (ps, the service file): refuse them there.
    if let Some((_, rest)) = args.nats.split_once("://")
        && rest.split('/').next().unwrap_or("").contains('@')
    {
        return Err(delegate_core::Error::Config {
            path: "(--nats)".into(),
            message:
                "the server URL holds credentials: give the URL without them and put them in a file named by --creds"
                    .into(),
        }
        .into());
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let Some(home) = home.filter(|h| h.is_absolute()) else {
        bail!("HOME is not set to an absolute path; the worker keeps its state under --remote-root in it");
    };
    let root = worker::expand_home(&args.remote_root, &home);
    let mut config = WorkerConfig::new(&args.nats, args.creds.clone(), &args.id, root, home.clone());
    config.log = |line| eprintln!("delegate worker: {line}");
    config.ack_wait = args.ack_wait;
    if let Some(instance) = args.instance {
        config.instance = instance;
    }
    if args.agentbus {
        let workdir = worker::expand_home(&args.agentbus_workdir, &home);
        let mut s = worker::agentbus::Settings::new(
            &args.agentbus_agent,
            &workdir.to_string_lossy(),
            &config.remote_root.to_string_lossy(),
        );
        s.sandbox = args.agentbus_sandbox;
        s.agent_path = args.agentbus_agent_path.clone();
        s.log = |line| eprintln!("delegate worker (agentbus): {line}");
        config.agentbus = Some(s);
    }
    let state = worker::prepare(&config)?;
    if args.install_service {
        return install(&config, args.ack_wait, &state.dir());
    }
    let (id, instance, url) = (config.id.clone(), config.instance.clone(), config.url.clone());
    let shared = block_on(worker::connect_worker(config, state))
        .map_err(|e| NatsUnreachable(safe(&e.to_string()).into_owned()))?;
    eprintln!(
        "delegate worker: {} connected to {} as worker {id}, instance {instance}",
        safe(env!("CARGO_PKG_VERSION")),
        safe(&url)
    );
    // Stopped by a signal (the service manager's SIGTERM), which ends the process.
    block_on(worker::run(shared, std::future::pending()))?;
    Ok(())
}

/// The service runs this same worker: every flag as given, paths made absolute.
fn install(config: &WorkerConfig, ack_wait: std::time::Duration, state_dir: &std::path::Path) -> Result<()> {
    let mut args = vec!["worker".to_string(), "--nats".into(), config.url.clone(), "--id".into(), config.id.clone()];
    if let Some(creds) = &config.creds {
        let abs = if creds.is_absolute() { creds.clone() } else { std::env::current_dir()?.join(creds) };
        args.extend(["--creds".into(), abs.to_string_lossy().into_owned()]);
    }
    args.extend([
        "--instance".into(),
        config.instance.clone(),
        "--remote-root".into(),
        config.remote_root.to_string_lossy().into_owned(),
        "--ack-wait".into(),
        format!("{}s", ack_wait.as_secs()),
    ]);
    if let Some(ab) = &config.agentbus {
        args.extend([
            "--agentbus".into(),
            "--agentbus-agent".into(),
            ab.agent.clone(),
            "--agentbus-workdir".into(),
            ab.workdir.clone(),
            "--agentbus-sandbox".into(),
            ab.sandbox.as_str().into(),
        ]);
        if let Some(p) = &ab.agent_path {
            args.extend(["--agentbus-agent-path".into(), p.clone()]);
        }
    }
    super::service::install_worker(&args, &config.id, state_dir)
}
