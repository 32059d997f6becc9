//! `delegate worker`: the brother side of the NATS transport (see
//! [`crate::transport::nats`] and its [`wire`] for the subjects and shapes).
//!
//! A worker connects out to a NATS server and runs three loops until it is stopped:
//! - [`tasks`]: pulls launch tasks from its id's durable consumer (shared by replicas), checks
//!   each, runs the launch script locally, publishes `delegate.launched`, then acks;
//! - [`watch`]: every tick, runs the sync script for each task it launched and publishes what
//!   grew (`delegate.sync`), keeping its offsets in a state file ([`state`]);
//! - [`exec`]: answers the lead's requests to run one of delegate's scripts now (say,
//!   cancel, logs, diff, doctor).
//!
//! Every script a worker runs passes [`crate::remote::allowlist::check`] first. Each loop is
//! one spawned task in [`run`]'s list; another consumer (agentbus) is one more entry.

// agentbus tasks (`delegate worker --agentbus`), wire-compatible with the agentbus package.
pub mod agentbus;
pub mod exec;
pub mod local;
pub mod state;
pub mod tasks;
pub mod watch;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::transport::nats::{connect, wire};

/// How a worker runs (the CLI's flags).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `nats://host:port` (credentials come from `creds`, never the URL).
    pub url: String,
    pub creds: Option<PathBuf>,
    /// The worker id: its subjects are `delegate.*.<id>`.
    pub id: String,
    /// This replica's name for exec requests about the tasks it ran.
    pub instance: String,
    /// The worker's own state lives under `<remote_root>/workers/<id>/` (local path, `~`
    /// already expanded).
    pub remote_root: PathBuf,
    /// How often launched tasks are synced and their news published.
    pub tick: Duration,
    /// How long the server waits for an ack before it redelivers a task (progress acks
    /// keep a long launch alive).
    pub ack_wait: Duration,
    /// The worker user's home: scripts start there (as sshd starts them) and `~/` in a
    /// remote root means it. The library reads no environment: the caller says.
    pub home: PathBuf,
    /// Where the worker's one-line events go (the CLI: stderr). Never a prompt or a
    /// credential is passed to it.
    pub log: fn(&str),
    /// Also serve agentbus tasks for this id (`agentbus.<id>.tasks`), run as these
    /// settings say (`delegate worker --agentbus`).
    pub agentbus: Option<agentbus::Settings>,
}

impl WorkerConfig {
    /// The defaults for `id` on this machine: instance from [`default_instance`], a
    /// one-second tick, a 30-second ack wait.
    pub fn new(url: &str, creds: Option<PathBuf>, id: &str, remote_root: PathBuf, home: PathBuf) -> WorkerConfig {
        WorkerConfig {
            url: url.into(),
            creds,
            id: id.into(),
            instance: default_instance(&remote_root),
            remote_root,
            tick: Duration::from_secs(1),
            ack_wait: Duration::from_secs(30),
            home,
            log: |_| {},
            agentbus: None,
        }
    }
}

/// The machine's hostname and a short hash of the remote root: replicas on one machine
/// sharing one task tree are one instance (any of them can answer for its tasks).
pub fn default_instance(remote_root: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String =
        host.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(40).collect();
    let hash = Sha256::digest(remote_root.as_os_str().as_encoded_bytes());
    let hex: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", if host.is_empty() { "worker" } else { &host })
}

/// Expands a leading `~/` with `home` (what the scripts do on their side).
pub fn expand_home(path: &str, home: &Path) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if path == "~" => home.to_path_buf(),
        None => PathBuf::from(path),
    }
}

/// What the loops share: the connection, JetStream, the config and the state directory.
#[derive(Clone)]
pub struct Shared {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub config: std::sync::Arc<WorkerConfig>,
    pub state: state::StateDir,
}

impl Shared {
    /// Publishes a result to `delegate.results.<mailbox>.<worker>` and waits for the
    /// stream's ack. `msg_id` makes a re-publish (after a crash) a duplicate the stream drops.
    pub async fn publish_result(&self, mailbox: &str, msg_id: &str, result: &wire::ResultMessage) -> Result<()> {
        let subject = wire::results_subject(mailbox, &self.config.id);
        let body = serde_json::to_vec(result).map_err(|e| nats_error(&self.config.url, "cannot encode a result", e))?;
        let publish = jetstream::message::PublishMessage::build().payload(body.into()).message_id(msg_id);
        let ack = self
            .js
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| nats_error(&self.config.url, &format!("cannot publish to {subject}"), e))?;
        ack.await.map_err(|e| nats_error(&self.config.url, &format!("no ack for the publish to {subject}"), e))?;
        Ok(())
    }

    /// One event line, bounded and on one line, to the config's log.
    pub fn log(&self, line: &str) {
        (self.config.log)(&crate::sanitize::clean_line(line, 2000))
    }

    /// The largest message the server takes.
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload.max(64 * 1024)
    }
}

pub fn nats_error(url: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config {
        path: "(nats)".into(),
        message: format!(
            "{what} (server {}): {}",
            crate::sanitize::clean_line(url, 200),
            crate::sanitize::clean_line(&e.to_string(), 500)
        ),
    }
}

/// Checks the config (ids are subject tokens) and opens the state directory; nothing on
/// the network yet.
pub fn prepare(config: &WorkerConfig) -> Result<state::StateDir> {
    let bad = |m: String| Error::Config { path: "(worker)".into(), message: m };
    wire::check_token("worker id (--id)", &config.id).map_err(bad)?;
    wire::check_token("instance (--instance)", &config.instance).map_err(bad)?;
    state::StateDir::open(&config.remote_root, &config.id)
}

/// Connects and makes sure what the worker needs exists: the streams (created when missing
/// and the user may) and the durable consumer. An error here means the server is
/// unreachable or refused (the CLI exits 49).
pub async fn connect_worker(config: WorkerConfig, state: state::StateDir) -> Result<Shared> {
    let client = connect::connect(&config.url, config.creds.as_deref()).await?;
    let js = jetstream::new(client.clone());
    connect::ensure_streams(&js, &config.url).await?;
    let shared = Shared { client, js, config: std::sync::Arc::new(config), state };
    tasks::consumer(&shared).await?;
    Ok(shared)
}

/// Runs the worker's loops until `stop` resolves or one of them fails for good.
pub async fn run(shared: Shared, stop: impl std::future::Future<Output = ()>) -> Result<()> {
    let mut loops = tokio::task::JoinSet::new();
    loops.spawn(tasks::run(shared.clone()));
    loops.spawn(watch::run(shared.clone()));
    loops.spawn(exec::run(shared.clone()));
    // agentbus's consumer stops when this function returns (the sender drops with it).
    let (_stop_agentbus, stopped) = tokio::sync::watch::channel(false);
    if let Some(settings) = shared.config.agentbus.clone() {
        let (client, js, id) = (shared.client.clone(), shared.js.clone(), shared.config.id.clone());
        loops.spawn(async move { agentbus::serve(client, js, &id, settings, stopped).await });
    }
    tokio::select! {
        () = stop => Ok(()),
        done = loops.join_next() => match done {
            Some(Ok(result)) => result,
            Some(Err(e)) => Err(Error::Config { path: "(worker)".into(), message: format!("a worker loop stopped: {e}") }),
            None => Ok(()),
        },
    }
}
