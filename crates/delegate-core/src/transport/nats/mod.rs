//! The NATS JetStream transport: brothers that accept no inbound connection run
//! `delegate worker`, which connects out to a NATS server, pulls launch tasks from a durable
//! consumer, runs delegate's own scripts locally, and publishes what happened to a result
//! stream the lead reads from its stored sequence. The shapes on the wire are in [`wire`].

pub mod agentbus;
pub mod clients;
pub mod connect;
pub mod exec;
pub mod publish;
pub mod results;
pub mod wire;

pub use clients::Clients;
pub use exec::exec;

use std::path::PathBuf;
use std::time::Duration;

/// A host reached through a NATS server (`transport = "nats"` in the inventory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsTarget {
    /// The inventory's host name.
    pub host: String,
    /// `nats://host:port` or `tls://host:port`, without credentials (they come from `creds`).
    pub url: String,
    /// A file with the credentials to connect with (never its contents in argv or logs).
    pub creds: Option<PathBuf>,
    /// The worker id (`delegate worker --id`): its subjects are `delegate.*.<worker_id>`.
    pub worker_id: String,
    /// How long a published task may wait for a worker before it fails visibly.
    pub task_ttl: Option<Duration>,
    /// How long a launch waits for the worker's `launched` result before it reports the
    /// task `queued`.
    pub launch_wait: Duration,
    /// The replica a task's later commands go to (its `launched` result named it); `None`
    /// for commands about the host (any replica answers).
    pub instance: Option<String>,
    /// `protocol = "agentbus"`: the worker is an agentbus worker (see
    /// [`crate::ops::agentbus`]), not a `delegate worker`.
    pub agentbus: bool,
}

impl NatsTarget {
    /// For the launch evidence and messages: `nats://host:port worker <id>`.
    pub fn address(&self) -> String {
        format!("{} worker {}", self.url, self.worker_id)
    }
}
