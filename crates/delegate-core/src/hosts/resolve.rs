//! Where a brother is, as one SSH target: the inventory entry plus `~/.ssh/config`, resolved
//! like `ssh` would. Values in the inventory win (they play the role of ssh's command-line
//! options), then the ssh config (Match, Include, ProxyJump), then OpenSSH's defaults.

use crate::error::{Error, Result};
use crate::hosts::inventory::{Inventory, Transport, expand_local};
use crate::hosts::ssh_config::{self, IdentityAgent, Proxy, SshConfigQuery, StrictHostKeyChecking};
use crate::paths::Paths;
use crate::transport::ssh::route::{self, JumpHop, Route};
use crate::transport::ssh::{SshTarget, Timeouts};

/// Resolves host names of one inventory; borrowed from [`crate::Delegate`].
pub struct Resolver<'a> {
    pub paths: &'a Paths,
    pub inventory: &'a Inventory,
}

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

impl Resolver<'_> {
    /// The inventory entry plus `~/.ssh/config`, resolved like `ssh` would: values in the
    /// inventory win (they play the role of ssh's command-line options), then the ssh
    /// config, then OpenSSH's defaults. ProxyJump hops are resolved the same way under their
    /// own names (see [`crate::transport::ssh::route`]).
    pub fn target(&self, host_name: &str) -> Result<SshTarget> {
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
        h: &crate::hosts::inventory::HostEntry,
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
}
