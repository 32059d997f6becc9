//! [`Delegate`]: the entry type. It owns the mailbox and the inventory, and resolves hosts
//! into SSH targets. Everything it needs from the outside world (config path, data dir,
//! home, user name, ssh-agent socket) comes in [`Paths`]; it reads no environment.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Transport;
use crate::config::{Inventory, expand_local};
use crate::error::{Error, Result};
use crate::known_hosts;
use crate::launch::{self, LaunchRequest};
use crate::pool::Pool;
use crate::ssh::route::{self, JumpHop, Route};
use crate::ssh::{self, SshTarget, Timeouts};
use crate::ssh_config::{self, IdentityAgent, Proxy, SshConfigQuery, StrictHostKeyChecking};
use crate::store::{ListFilter, Store};
use crate::task::Task;

/// Where things live, decided by the caller (the CLI reads the environment for these).
#[derive(Debug, Clone)]
pub struct Paths {
    pub config_file: PathBuf,
    /// The mailbox directory.
    pub data_dir: PathBuf,
    /// The local home directory, for `~/` in the inventory and `~/.ssh`.
    pub home: PathBuf,
    pub local_user: String,
    /// OpenSSH client config; usually `<home>/.ssh/config`. A missing file is fine.
    pub ssh_config: PathBuf,
    /// ssh-agent socket (`SSH_AUTH_SOCK`), if any.
    pub agent_socket: Option<PathBuf>,
}

pub struct Delegate {
    paths: Paths,
    inventory: Inventory,
    store: Store,
    pool: Arc<Pool>,
    launch_grace: std::time::Duration,
    phase_hook: Option<PhaseHook>,
}

/// Called with the name of each launch phase as it is reached (see
/// [`Delegate::set_phase_hook`]).
pub type PhaseHook = Arc<dyn Fn(&str) + Send + Sync>;

/// What the inventory says about a host. It plays the role of ssh's command-line options,
/// so it applies to that host and never to the bastions on the way (ssh passes none of its
/// options to the `ssh -W` it runs for a ProxyJump).
#[derive(Default)]
struct CommandLine<'a> {
    user: Option<&'a str>,
    port: Option<u16>,
    identity: Option<&'a str>,
    known_hosts: Option<&'a str>,
    connect_timeout: Option<u64>,
}

/// More bastions than this in one route is taken for a loop.
const MAX_HOPS: usize = 16;

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
            pool: Arc::new(Pool::new()),
            launch_grace: crate::sync::LAUNCH_GRACE,
            phase_hook: None,
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
    /// brother has (default [`crate::sync::LAUNCH_GRACE`], 180 s): another process may
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

    pub(crate) fn phase(&self, name: &str) {
        if let Some(h) = &self.phase_hook {
            h(name)
        }
    }

    /// Sends every exec through the warm daemon behind `warm` (falling back to direct
    /// connections when it is not available). Call before anything connects: connections
    /// already held are dropped.
    pub fn use_warm(&mut self, warm: crate::warm::WarmClient) {
        self.pool = Arc::new(Pool::with_warm(warm));
    }

    /// The SSH connections held for reuse (one per host).
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Closes the held SSH connections (dropping the `Delegate` also ends them, less
    /// politely).
    pub async fn close(&self) {
        self.pool.close_all().await
    }

    /// Launches a task on a brother; see [`crate::launch`].
    pub async fn launch(&mut self, req: LaunchRequest) -> Result<Task> {
        launch::launch(self, req).await
    }

    /// Launches one task per request (fan-out), concurrently, one SSH connection per host;
    /// one result per request, in order. A task over a host's or brother's concurrency cap
    /// comes back `queued`.
    pub async fn launch_many(&mut self, reqs: Vec<LaunchRequest>) -> Vec<Result<Task>> {
        launch::launch_many(self, reqs).await
    }

    /// Starts queued tasks whose caps have room now, oldest first (sync does this too);
    /// returns what became of each one started.
    pub async fn dispatch_queued(&mut self) -> Result<Vec<Result<Task>>> {
        launch::dispatch_queued(self).await
    }

    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Task>> {
        self.store.list(filter)
    }

    pub fn task(&self, id: i64) -> Result<Task> {
        self.store.task(id)
    }

    /// The inventory entry plus `~/.ssh/config`, resolved like `ssh` would: values in the
    /// inventory win (they play the role of ssh's command-line options), then the ssh
    /// config, then OpenSSH's defaults. ProxyJump hops are resolved the same way under their
    /// own names (see [`crate::ssh::route`]).
    pub fn resolve_target(&self, host_name: &str) -> Result<SshTarget> {
        let h = self.inventory.host(host_name)?;
        let cli = CommandLine {
            user: h.user.as_deref(),
            port: h.port,
            identity: h.identity.as_deref(),
            known_hosts: h.known_hosts.as_deref(),
            connect_timeout: h.connect_timeout,
        };
        let mut base = Timeouts::default();
        if let Some(secs) = h.connect_timeout {
            let d = std::time::Duration::from_secs(secs);
            (base.connect, base.handshake, base.auth) = (d, d, d);
        }
        if h.transport == Some(Transport::Ssh) {
            return self.system_ssh_target(host_name, h, &cli, base);
        }
        self.resolve_name(host_name, &h.address, &cli, None, base, 0)
    }

    /// One name through ssh_config. `jump` is a ProxyJump given "on the command line" (the
    /// earlier hops of a list), which wins over the name's own ProxyJump or ProxyCommand.
    fn resolve_name(
        &self,
        label: &str,
        name: &str,
        cli: &CommandLine,
        jump: Option<&[JumpHop]>,
        base: Timeouts,
        depth: usize,
    ) -> Result<SshTarget> {
        let home = &self.paths.home;
        let resolved = ssh_config::resolve(&SshConfigQuery {
            host: name,
            config_file: &self.paths.ssh_config,
            home,
            local_user: &self.paths.local_user,
            // The inventory's user and port, like ssh's -l and -p: they win, and are what
            // `Match user`, `%r` and `%p` see.
            user: cli.user,
            port: cli.port,
        })?;
        let identity_files = match cli.identity {
            Some(p) => vec![expand_local(p, home)],
            None if !resolved.identity_files.is_empty() => resolved.identity_files.clone(),
            None => ["id_ed25519", "id_ecdsa", "id_rsa"].iter().map(|f| home.join(".ssh").join(f)).collect(),
        };
        let known_hosts = match cli.known_hosts {
            Some(p) => vec![expand_local(p, home)],
            None if !resolved.user_known_hosts_files.is_empty() => resolved.user_known_hosts_files.clone(),
            None => vec![home.join(".ssh/known_hosts"), home.join(".ssh/known_hosts2")],
        };
        let mut timeouts = base;
        if cli.connect_timeout.is_none()
            && let Some(d) = resolved.connect_timeout
        {
            timeouts.connect = d;
        }
        if let Some(d) = resolved.server_alive_interval {
            timeouts.keepalive_interval = d;
        }
        if let Some(n) = resolved.server_alive_count_max {
            timeouts.keepalive_max = n as usize;
        }
        timeouts.connection_attempts = resolved.connection_attempts.unwrap_or(1);
        timeouts.address_family = resolved.address_family.unwrap_or_default();
        let port = cli.port.or(resolved.port).unwrap_or(22);
        let user =
            cli.user.map(str::to_string).or(resolved.user.clone()).unwrap_or_else(|| self.paths.local_user.clone());
        let proxy = match jump {
            Some(hops) => Some(Proxy::Jump(hops.to_vec())),
            None => resolved.proxy.clone(),
        };
        let route = match proxy {
            None => Route::Direct,
            Some(Proxy::Jump(hops)) => Route::Jump(Box::new(self.resolve_hops(&hops, base, depth + 1)?)),
            Some(Proxy::Command(raw)) => Route::Command(
                route::expand_proxy_command(
                    &raw,
                    &resolved.hostname,
                    port,
                    &user,
                    name,
                    resolved.host_key_alias.as_deref(),
                )
                .map_err(|message| Error::Config { path: self.paths.ssh_config.clone(), message })?,
            ),
        };
        Ok(SshTarget {
            host: label.to_string(),
            hostname: resolved.hostname.clone(),
            port,
            user,
            identity_files,
            certificate_files: resolved.certificate_files.clone(),
            agent_socket: match &resolved.identity_agent {
                None => self.paths.agent_socket.clone(),
                Some(IdentityAgent::Disabled) => None,
                Some(IdentityAgent::Socket(p)) => Some(p.clone()),
                Some(IdentityAgent::Env(name)) if name == "SSH_AUTH_SOCK" => self.paths.agent_socket.clone(),
                Some(IdentityAgent::Env(name)) => {
                    return Err(Error::Config {
                        path: self.paths.ssh_config.clone(),
                        message: format!(
                            "IdentityAgent ${name} is not supported by delegate: give the socket path, or use SSH_AUTH_SOCK"
                        ),
                    });
                }
            },
            identities_only: resolved.identities_only,
            known_hosts,
            global_known_hosts: resolved.global_known_hosts_files.clone(),
            hash_known_hosts: resolved.hash_known_hosts,
            host_key_alias: resolved.host_key_alias.clone(),
            accept_new: resolved.strict_host_key_checking == Some(StrictHostKeyChecking::AcceptNew),
            timeouts,
            route,
            system_ssh: None,
        })
    }

    /// The bastion that connects to the next host: the last of `hops`, with the others as
    /// its own ProxyJump, as ssh's `ssh -J <others> -W host:port <last>` does. Only the hop's
    /// user and port from the list apply to it, never the inventory's options.
    fn resolve_hops(&self, hops: &[JumpHop], base: Timeouts, depth: usize) -> Result<SshTarget> {
        if depth > MAX_HOPS {
            return Err(Error::Config {
                path: self.paths.ssh_config.clone(),
                message: format!(
                    "ProxyJump goes through more than {MAX_HOPS} bastions; look for hosts that jump through each other"
                ),
            });
        }
        let (last, before) = hops.split_last().expect("a ProxyJump list is never empty");
        let cli = CommandLine { user: last.user.as_deref(), port: last.port, ..CommandLine::default() };
        self.resolve_name(&last.host, &last.host, &cli, (!before.is_empty()).then_some(before), base, depth)
    }

    /// `transport = "ssh"`: the target as far as delegate can resolve it (for messages), and
    /// the system ssh's argv: the inventory's options as ssh options, the same ssh_config
    /// file delegate reads (`-F`), the inventory address so ssh resolves its own route, and
    /// host keys always checked (`accept-new` only when the config says so).
    fn system_ssh_target(
        &self,
        host_name: &str,
        h: &crate::config::HostEntry,
        cli: &CommandLine,
        base: Timeouts,
    ) -> Result<SshTarget> {
        let mut t = match self.resolve_name(host_name, &h.address, cli, None, base, 0) {
            Ok(t) => t,
            // What delegate cannot honour is the point of this transport: ssh does it.
            Err(Error::SshConfig(ssh_config::SshConfigError::Unsupported { .. })) => SshTarget {
                host: host_name.to_string(),
                hostname: h.address.clone(),
                port: h.port.unwrap_or(22),
                user: h.user.clone().unwrap_or_else(|| self.paths.local_user.clone()),
                identity_files: Vec::new(),
                certificate_files: Vec::new(),
                agent_socket: None,
                identities_only: false,
                known_hosts: Vec::new(),
                global_known_hosts: Vec::new(),
                hash_known_hosts: false,
                host_key_alias: None,
                accept_new: false,
                timeouts: base,
                route: Route::Direct,
                system_ssh: None,
            },
            Err(e) => return Err(e),
        };
        let config = if self.paths.ssh_config.exists() { self.paths.ssh_config.clone() } else { "/dev/null".into() };
        let strict = if t.accept_new { "accept-new" } else { "yes" };
        let mut argv: Vec<String> = vec!["ssh".into(), "-T".into(), "-F".into(), config.display().to_string()];
        for o in ["BatchMode=yes".to_string(), format!("StrictHostKeyChecking={strict}")] {
            argv.extend(["-o".into(), o]);
        }
        if let Some(p) = h.port {
            argv.extend(["-p".into(), p.to_string()]);
        }
        if let Some(u) = &h.user {
            argv.extend(["-l".into(), u.clone()]);
        }
        if let Some(i) = &h.identity {
            argv.extend(["-i".into(), expand_local(i, &self.paths.home).display().to_string()]);
        }
        if let Some(k) = &h.known_hosts {
            argv.extend(["-o".into(), format!("UserKnownHostsFile={}", expand_local(k, &self.paths.home).display())]);
        }
        if let Some(secs) = h.connect_timeout {
            argv.extend(["-o".into(), format!("ConnectTimeout={secs}")]);
        }
        argv.extend(["--".into(), h.address.clone()]);
        t.system_ssh = Some(argv);
        Ok(t)
    }

    /// Checks everything a launch needs on each of `brothers` (all of the inventory's when
    /// empty), changing nothing there: one fresh SSH connection and one exec per host, hosts
    /// in parallel. `Err` only for a name the inventory does not have; every problem on the
    /// way is a [`crate::doctor::Finding`] with its fix. See [`crate::doctor`].
    pub async fn doctor(&self, brothers: &[String]) -> Result<Vec<crate::doctor::BrotherReport>> {
        crate::doctor::doctor(self, brothers).await
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
