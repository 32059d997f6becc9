//! [`Delegate`]: the entry type. It composes the pieces: the mailbox, the inventory (and how
//! its hosts are reached), the transport. Everything it needs from the outside world (config
//! path, data dir, home, user name, ssh-agent socket) comes in [`Paths`]; it reads no
//! environment. The operations a lead runs are `impl Delegate` blocks in [`crate::ops`]; this
//! file imports none of them.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::hosts::inventory::Inventory;
use crate::hosts::known_hosts;
use crate::hosts::resolve::Resolver;
use crate::mailbox::thread::{self, TaskView, Window};
use crate::mailbox::{ListFilter, Store};
pub use crate::paths::Paths;
use crate::task::Task;
use crate::transport::pool::Pool;
use crate::transport::ssh::{self, SshTarget};
use crate::transport::{Reach, Transport};

pub struct Delegate {
    paths: Paths,
    inventory: Inventory,
    store: Store,
    transport: Transport,
    launch_grace: std::time::Duration,
    phase_hook: Option<PhaseHook>,
    pub(crate) env_lookup: Option<crate::notify::deliver::EnvLookup>,
    pub(crate) notify_backoff: std::time::Duration,
    /// Syncs send each run's clock (only files changed since are looked at); off, every
    /// file of every task is looked at, as before the clocks (a benchmark comparator).
    sync_clocks: bool,
}

/// Called with the name of each launch phase as it is reached (see
/// [`Delegate::set_phase_hook`]).
pub type PhaseHook = Arc<dyn Fn(&str) + Send + Sync>;

/// The result of trusting a host key.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Trusted {
    pub host: String,
    pub lookup: String,
    pub key_type: String,
    pub fingerprint: String,
    pub known_hosts: PathBuf,
    /// known, unknown, changed or revoked (after any change made here).
    pub status: &'static str,
    /// True when this call added the key.
    pub added: bool,
}

impl Delegate {
    pub fn open(paths: Paths) -> Result<Delegate> {
        let inventory = Inventory::load(&paths.config_file)?;
        let store = Store::open(&paths.data_dir)?;
        Ok(Delegate {
            paths,
            inventory,
            store,
            transport: Transport::default(),
            launch_grace: crate::task::LAUNCH_GRACE,
            phase_hook: None,
            env_lookup: None,
            notify_backoff: crate::notify::deliver::BACKOFF_BASE,
            sync_clocks: true,
        })
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }
    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }
    /// How long sync leaves an unconfirmed launch alone before deciding it from what the
    /// brother has (default [`crate::task::LAUNCH_GRACE`], 180 s): another process may
    /// still be sending it, or its script still arriving after the link broke. Shorter
    /// settles the state of a killed CLI's launches sooner, at the risk of calling a launch
    /// failed that then starts (sync would later see it running and correct it).
    pub fn set_launch_grace(&mut self, grace: std::time::Duration) {
        self.launch_grace = grace;
    }
    pub fn launch_grace(&self) -> std::time::Duration {
        self.launch_grace
    }

    /// Calls `hook` at each phase of a launch: `recorded` (the task rows are committed,
    /// nothing was sent) and `answered` (the brother replied to the launch script, nothing
    /// of it is recorded yet). For fault tests that stop or kill the process at an exact
    /// point; the CLI installs one only in test builds.
    pub fn set_phase_hook(&mut self, hook: PhaseHook) {
        self.phase_hook = Some(hook);
    }

    /// `false`: every sync looks at every file of every task, as before runs kept the
    /// brother's clock (a benchmark comparator for the path before it).
    pub fn set_sync_clocks(&mut self, on: bool) {
        self.sync_clocks = on;
    }

    pub(crate) fn sync_clocks(&self) -> bool {
        self.sync_clocks
    }

    pub(crate) fn phase(&self, name: &str) {
        if let Some(h) = &self.phase_hook {
            h(name)
        }
    }

    /// Sends every exec through the warm daemon behind `warm` (falling back to direct
    /// connections when it is not available). Call before anything connects: connections
    /// already held are dropped.
    pub fn use_warm(&mut self, warm: crate::transport::warm::WarmClient) {
        self.transport = Transport::new(Pool::with_warm(warm));
    }

    /// Where commands for the brothers go (see [`crate::transport`]: the one seam where a
    /// brother is reached).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The SSH connections held for reuse (one per host).
    pub fn pool(&self) -> &Arc<Pool> {
        self.transport.ssh_pool()
    }

    /// Closes the held SSH connections (dropping the `Delegate` also ends them, less
    /// politely).
    pub async fn close(&self) {
        self.transport.close_all().await
    }

    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Task>> {
        self.store.list(filter)
    }

    /// The turns, tokens and dollars the runs' streams reported, summed by brother,
    /// profile or day (mailbox only: sync first for the latest).
    pub fn usage(&self, by: crate::mailbox::usage::UsageBy) -> Result<Vec<crate::mailbox::usage::UsageRow>> {
        self.store.usage(by)
    }

    pub fn task(&self, id: i64) -> Result<Task> {
        self.store.task(id)
    }

    /// The task with its newest [`thread::SHOW_ITEMS`] thread items, as the mailbox knows it
    /// (sync first for the latest). [`Delegate::show_window`] for more or all.
    pub fn show(&self, id: i64) -> Result<TaskView> {
        self.show_window(id, Window::Newest(thread::SHOW_ITEMS))
    }

    /// The task with the part of its thread `window` asks for, and counts of what it left
    /// out. Only that part is read from the mailbox.
    pub fn show_window(&self, id: i64, window: Window) -> Result<TaskView> {
        thread::view(&self.store, id, window)
    }

    /// The inventory entry plus `~/.ssh/config`, resolved like `ssh` would (see
    /// [`crate::hosts::resolve`]).
    pub fn resolve_target(&self, host_name: &str) -> Result<SshTarget> {
        Resolver { paths: &self.paths, inventory: &self.inventory }.target(host_name)
    }

    /// How the inventory's host `host_name` is reached, for [`Transport::exec`].
    pub fn reach(&self, host_name: &str) -> Result<Reach> {
        let h = self.inventory.host(host_name)?;
        if h.transport != Some(crate::hosts::inventory::Transport::Nats) {
            return self.resolve_target(host_name).map(Reach::Ssh);
        }
        let parse = |key: &str, v: &Option<String>| -> Result<Option<std::time::Duration>> {
            v.as_deref().map(crate::hosts::inventory::parse_timeout).transpose().map_err(|m| Error::Config {
                path: self.paths.config_file.clone(),
                message: format!("hosts.{host_name}.{key}: {m}"),
            })
        };
        Ok(Reach::Nats(crate::transport::NatsTarget {
            host: host_name.to_string(),
            // Both checked when the inventory was loaded.
            url: h.url.clone().unwrap_or_default(),
            creds: h.creds.as_deref().map(|p| crate::hosts::inventory::expand_local(p, &self.paths.home)),
            worker_id: h.worker_id.clone().unwrap_or_default(),
            task_ttl: parse("task_ttl", &h.task_ttl)?,
            launch_wait: parse("launch_wait", &h.launch_wait)?.unwrap_or(crate::hosts::inventory::DEFAULT_LAUNCH_WAIT),
            instance: None,
            agentbus: h.protocol == Some(crate::hosts::inventory::NatsProtocol::Agentbus),
        }))
    }

    /// How a task's commands (say, cancel, logs, diff, artifacts) reach it: its host, and on
    /// a NATS host the worker replica that ran it (its `launched` result named it).
    pub fn task_reach(&self, task_id: i64, host_name: &str) -> Result<Reach> {
        let mut reach = self.reach(host_name)?;
        if let Reach::Nats(t) = &mut reach {
            t.instance = self.store.instance(task_id)?;
        }
        Ok(reach)
    }

    /// Fetches the host's key. With `expected`, records it in the host's known_hosts file,
    /// but only if its fingerprint equals `expected` (as printed by the unknown-host error);
    /// without, only reports what the host presents. A key that conflicts with a recorded
    /// one is never replaced here.
    pub async fn trust_host(&self, host_name: &str, expected: Option<&str>) -> Result<Trusted> {
        let mut target = self.resolve_target(host_name)?;
        target.accept_new = false;
        let key = ssh::fetch_host_key(&target).await?;
        let fingerprint = known_hosts::fingerprint(&key);
        let (lookup_host, lookup_port) = (target.lookup_host().to_string(), target.lookup_port());
        let file = target.known_hosts[0].clone();
        let status = known_hosts::check(&target.all_known_hosts(), &lookup_host, lookup_port, &key)?;
        let mut trusted = Trusted {
            host: host_name.to_string(),
            lookup: known_hosts::lookup_name(&lookup_host, lookup_port),
            key_type: key.algorithm().to_string(),
            fingerprint: fingerprint.clone(),
            known_hosts: file.clone(),
            status: match &status {
                known_hosts::HostKeyStatus::Known => "known",
                known_hosts::HostKeyStatus::Unknown => "unknown",
                known_hosts::HostKeyStatus::Changed { .. } => "changed",
                known_hosts::HostKeyStatus::Revoked { .. } => "revoked",
            },
            added: false,
        };
        let Some(expected) = expected else { return Ok(trusted) };
        if fingerprint != expected {
            return Err(Error::FingerprintMismatch {
                host: host_name.to_string(),
                presented: fingerprint,
                expected: expected.to_string(),
            });
        }
        match status {
            known_hosts::HostKeyStatus::Known => {}
            known_hosts::HostKeyStatus::Unknown => {
                known_hosts::append_as(&file, &lookup_host, lookup_port, &key, target.hash_known_hosts)?;
                trusted.added = true;
                trusted.status = "known";
            }
            // Trusting never overrides a recorded key or a revocation.
            refused => return Err(ssh::refusal(&target, &key, refused).expect("changed and revoked are refusals")),
        }
        Ok(trusted)
    }
}
