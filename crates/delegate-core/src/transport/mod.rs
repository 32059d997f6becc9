//! How a brother is reached: the russh client (`ssh`: routes, authentication, the system ssh
//! for `transport = "ssh"`), the per-host connection `pool`, and the `warm` daemon that holds
//! connections across processes.
//!
//! # The seam
//!
//! The operations (launch, sync, say, cancel, logs) never talk SSH. They ask the entry type
//! for a host's [`Reach`] and hand it to [`Transport::exec`]: run this bash command with these
//! stdin bytes within this limit, and give back what it printed and how it ended
//! ([`ExecOutput`]). Everything on the far side of that call (connections, routes, host keys,
//! channels, the warm daemon) lives in this folder. A second way to reach brothers (a queue
//! that workers without inbound SSH pull from) is a new [`Reach`] variant with its arm in
//! [`Transport::exec`]; the launch and sync logic do not change.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;

pub mod nats;
pub mod pool;
pub mod ssh;
pub mod warm;

pub use nats::NatsTarget;
pub use pool::{Connection, Pool};
pub use ssh::{ExecOutput, Exit, SshTarget};

/// How one host is reached, resolved from the inventory (see [`crate::hosts::resolve`]).
#[derive(Debug, Clone)]
pub enum Reach {
    /// Over SSH: russh on a pooled connection (or the warm daemon's), or the system `ssh`.
    Ssh(SshTarget),
    /// Through a NATS server that a `delegate worker` on the brother connects out to.
    Nats(NatsTarget),
}

impl Reach {
    /// The host's inventory name.
    pub fn host(&self) -> &str {
        match self {
            Reach::Ssh(t) => &t.host,
            Reach::Nats(t) => &t.host,
        }
    }

    /// Where commands go, for the launch evidence: `user@hostname:port`.
    pub fn address(&self) -> String {
        match self {
            Reach::Ssh(t) => format!("{}@{}:{}", t.user, t.hostname, t.port),
            Reach::Nats(t) => t.address(),
        }
    }
}

/// Runs commands on brothers, whichever way each is reached. Cheap to clone: clones share
/// the held connections.
#[derive(Clone, Default)]
pub struct Transport {
    ssh: Arc<Pool>,
    /// NATS connections, one per (server, credentials).
    nats: Arc<nats::Clients>,
}

impl Transport {
    /// SSH connections kept in `pool` (a warm daemon's client when it has one).
    pub fn new(pool: Pool) -> Transport {
        Transport { ssh: Arc::new(pool), nats: Arc::default() }
    }

    /// Runs `command` (bash, see [`crate::remote::REMOTE_COMMAND`]) on the host with `stdin`,
    /// within `limit`. Output is capped per stream ([`ssh::MAX_EXEC_OUTPUT`]).
    pub async fn exec(
        &self,
        reach: &Reach,
        command: &str,
        stdin: &[u8],
        limit: Duration,
    ) -> Result<(ExecOutput, Connection)> {
        match reach {
            Reach::Ssh(t) => self.ssh.exec(t, command, stdin, limit).await,
            Reach::Nats(t) => nats::exec(&self.nats, t, command, stdin, limit).await,
        }
    }

    /// Lets go of what is held for the host after a command on it was abandoned unanswered,
    /// so whatever still runs there ends instead of holding a slot.
    pub fn abandon(&self, reach: &Reach) {
        match reach {
            Reach::Ssh(t) => self.ssh.drop_connection(t),
            // Nothing is held per command: a request left unanswered just times out.
            Reach::Nats(_) => {}
        }
    }

    /// The SSH connections held for reuse (one per host).
    pub fn ssh_pool(&self) -> &Arc<Pool> {
        &self.ssh
    }

    /// The NATS connections held for reuse (one per server and credentials).
    pub fn nats_clients(&self) -> &Arc<nats::Clients> {
        &self.nats
    }

    /// Says goodbye on everything held.
    pub async fn close_all(&self) {
        self.ssh.close_all().await;
        self.nats.close_all().await;
    }
}
