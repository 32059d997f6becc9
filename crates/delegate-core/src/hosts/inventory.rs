//! The inventory: hosts, brothers and custom agents, kept in a TOML file.
//!
//! Reading uses serde with unknown keys refused (a typo such as `max_turn` must not be
//! silently ignored). Editing (`delegate hosts add`, ...) goes through `toml_edit`, so the
//! comments and layout of a hand-edited file survive. Paths in the file may start with `~/`;
//! they are expanded against the home directory the caller passes in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::names::{AgentName, BrotherName, HostName};
use crate::task::Sandbox;

pub const DEFAULT_MAX_TURNS: u32 = 50;
/// How long a state command (`status`, `list`, `show`, `wait`, `mailbox`, the MCP tools)
/// waits for one host's sync, connecting included, unless the host's `sync_deadline` says
/// otherwise; past it the command goes on with what it has, the host's tasks shown as last
/// heard (stale). A healthy host answers in well under a second over a kept connection and
/// in a few over a fresh one (TCP, key exchange and authentication, through bastions too),
/// so 10 s only cuts off a host that is hung or badly overloaded, while a lead polling
/// several hosts (and an MCP client that times tool calls out at 60 s) is never held long
/// by one.
pub const DEFAULT_SYNC_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
pub const DEFAULT_REMOTE_ROOT: &str = "~/.delegate";
/// The wall-clock limit when neither the brother nor the command gives one.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4 * 3600);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    #[serde(default)]
    pub hosts: BTreeMap<String, HostEntry>,
    #[serde(default)]
    pub brothers: BTreeMap<String, BrotherEntry>,
    #[serde(default)]
    pub agents: BTreeMap<String, CustomAgent>,
    /// `[profiles.NAME]`: named sets of run settings a launch picks with `--profile` (or a
    /// brother's `default_profile`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub profiles: BTreeMap<String, Profile>,
    /// `[environments.NAME]`: a group of brothers (or hosts: all their brothers) a launch
    /// names instead of one brother; delegate places it on the least loaded with room.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environments: BTreeMap<String, Environment>,
    /// `[warm]`: the background process that keeps SSH connections between CLI commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<WarmSettings>,
    /// `[roles]`: who may do what on the board (`alice = "manager"`, `"*" = "observer"`);
    /// empty: everyone is a manager. See [`crate::roles`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, crate::roles::Role>,
    /// `[notify]`: where notifications of finished tasks go (see [`crate::notify`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<crate::notify::NotifySettings>,
}

/// How long the CLI's warm daemon keeps connections (see `delegate_core::transport::warm`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmSettings {
    /// `false` makes every command connect directly (as `--no-warm` does). Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Idle time after which the daemon exits, like "10m" (the default) or "1h".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist: Option<String>,
}

/// The warm daemon's idle time when `[warm] persist` is not set (OpenSSH users often pick
/// ControlPersist 10m).
pub const DEFAULT_WARM_PERSIST: std::time::Duration = std::time::Duration::from_secs(600);

/// A machine reachable over SSH (or, with `transport = "nats"`, through a NATS server its
/// `delegate worker` connects out to).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    /// A hostname, an IP address, or an alias from `~/.ssh/config` (unused, and may be left
    /// out, for `transport = "nats"`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// Private key file; when absent, `~/.ssh/config` and then the usual defaults apply.
    pub identity: Option<String>,
    /// known_hosts file; default `~/.ssh/known_hosts` (or UserKnownHostsFile from ssh config).
    pub known_hosts: Option<String>,
    /// Where task directories live on the host; default `~/.delegate`.
    pub remote_root: Option<String>,
    /// Seconds to wait for TCP connect and for the SSH handshake; default 10.
    pub connect_timeout: Option<u64>,
    /// At most this many tasks in flight on the host; more wait as `queued` and start as
    /// slots free up. Default: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Seconds a state command (`status`, `list`, `show`, `wait`, the MCP tools) waits for
    /// this host's sync before showing its tasks as last heard, marked stale; default
    /// [`DEFAULT_SYNC_DEADLINE`]. Raise it for a host that is slow but healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_deadline: Option<u64>,
    /// Which environment agents run in on this host (default `login`); see [`AgentEnvironment`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<AgentEnvironment>,
    /// A file on the host of `NAME=value` lines exported to every agent there (after the
    /// shell's environment). The inventory names the file; the values never leave the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<String>,
    /// How delegate talks to the host (default `russh`); see [`Transport`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// At most this many US dollars a day of spend (as the runs' streams reported it) on
    /// the host, all its brothers together; see [`OverCap`] for what a launch over it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_usd_per_day: Option<f64>,
    /// What a launch does once the day's spend reached `max_usd_per_day` (default refuse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over_cap: Option<OverCap>,
    /// `transport = "nats"`: the NATS server, `nats://host:port` or `tls://host:port`, with no
    /// credentials in it (they go in the file `creds` names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `transport = "nats"`: a file with the lead's NATS credentials (a `.creds` file, an nkey
    /// seed, `user:password` or a token); never its contents in argv, logs or the mailbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creds: Option<String>,
    /// `transport = "nats"`: the id the brother's `delegate worker --id` runs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// `transport = "nats"`: how long a task may wait for a worker to take it ("1h"); past
    /// it the task fails visibly. Default: it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_ttl: Option<String>,
    /// `transport = "nats"`: how long a launch waits for the worker's `launched` result
    /// before it reports the task `queued` ("5s", the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_wait: Option<String>,
    /// `transport = "nats"`: what the worker speaks: `"delegate"` (a `delegate worker`, the
    /// default) or `"agentbus"` (an agentbus worker: tasks go to `agentbus.<worker_id>.tasks`
    /// and only its final result comes back; no say, no cancel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<NatsProtocol>,
}

/// What a NATS host's worker speaks (`protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NatsProtocol {
    Delegate,
    Agentbus,
}

/// How long a launch on a NATS host waits for the worker's `launched` result by default.
pub const DEFAULT_LAUNCH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The NATS keys of a host: all required ones with `transport = "nats"`, none without.
fn check_nats_keys(name: &str, h: &HostEntry) -> std::result::Result<(), String> {
    let given: Vec<&str> = [
        ("url", h.url.is_some()),
        ("creds", h.creds.is_some()),
        ("worker_id", h.worker_id.is_some()),
        ("task_ttl", h.task_ttl.is_some()),
        ("launch_wait", h.launch_wait.is_some()),
        ("protocol", h.protocol.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    if h.transport != Some(Transport::Nats) {
        return match given.first() {
            Some(k) => Err(format!("hosts.{name}.{k} is a NATS setting: add transport = \"nats\" or remove it")),
            None => Ok(()),
        };
    }
    let url = h.url.as_deref().ok_or(format!(
        "hosts.{name}: transport = \"nats\" needs url = \"nats://host:port\" (the NATS server the worker connects to)"
    ))?;
    check_nats_url(url).map_err(|m| format!("hosts.{name}.url: {m}"))?;
    let worker = h.worker_id.as_deref().ok_or(format!(
        "hosts.{name}: transport = \"nats\" needs worker_id = \"ID\" (the id its `delegate worker --id` runs with)"
    ))?;
    crate::transport::nats::wire::check_token("worker_id", worker).map_err(|m| format!("hosts.{name}.{m}"))?;
    for (key, value) in [("task_ttl", &h.task_ttl), ("launch_wait", &h.launch_wait)] {
        if let Some(v) = value {
            parse_timeout(v).map_err(|m| format!("hosts.{name}.{key}: {m}"))?;
        }
    }
    if h.user.is_some() || h.port.is_some() || h.identity.is_some() || h.known_hosts.is_some() {
        return Err(format!(
            "hosts.{name}: user, port, identity and known_hosts are SSH settings; a NATS host is reached through its url"
        ));
    }
    Ok(())
}

/// A NATS server URL as the inventory takes it: `nats://`, `tls://`, `ws://` or `wss://`,
/// host and port, and never credentials (a `user:password@` or token in a URL ends up in
/// process listings, logs and error messages).
pub fn check_nats_url(url: &str) -> std::result::Result<(), String> {
    // No message repeats the URL: a malformed one may hold a secret anywhere.
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("not a NATS URL: use nats://host:port".into());
    };
    if !["nats", "tls", "ws", "wss"].contains(&scheme) {
        return Err("the scheme is not a NATS URL scheme: use nats://host:port (or tls://)".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        // The message never repeats the URL: it holds a secret.
        return Err("the URL holds credentials: remove them from the URL and put them in a file named by \
                    `creds = \"PATH\"` (a .creds file, an nkey seed, user:password or a token)"
            .into());
    }
    let ok = !authority.is_empty()
        && authority.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b))
        && rest.len() == authority.len();
    if !ok {
        return Err("give only scheme, host and port, like nats://broker.example.org:4222".into());
    }
    Ok(())
}

/// What a launch over a daily spend cap does: `refuse` (the default) fails it with the
/// figures, recording nothing; `queue` records it `queued` until the day rolls over (or the
/// cap is raised), when the queue dispatch starts it like any queued task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverCap {
    Refuse,
    Queue,
}

/// `russh` (the default) is delegate's own SSH client. `ssh` runs every command through the
/// system `ssh` binary instead (`ssh -T -o BatchMode=yes ... ADDRESS`, the script on
/// stdin): the escape hatch for what russh cannot do (FIDO or PKCS#11 keys, GSSAPI,
/// ssh_config options delegate does not know). Host keys are then checked by ssh itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Russh,
    Ssh,
    /// Through a NATS server with JetStream: the brother runs `delegate worker`, which
    /// connects out to it (no inbound SSH); see [`crate::transport::nats`].
    Nats,
}

/// The environment an agent runs in on the brother.
///
/// `login` (the default) is what the user's login shell sets up (`$SHELL -l`: /etc/profile,
/// ~/.profile and what they source), so a CLI and its credentials that work at the user's
/// prompt work under delegate; when the agent is not on that PATH, the interactive shell's
/// environment (`$SHELL -il`, where nvm, fnm, volta and asdf set PATH) is used instead and
/// the launch evidence says so. `interactive` always takes the interactive shell's; `plain`
/// keeps what sshd gives a command (no start-up files), for hosts whose shell start-up is
/// slow or noisy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentEnvironment {
    Login,
    Interactive,
    Plain,
}

impl AgentEnvironment {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentEnvironment::Login => "login",
            AgentEnvironment::Interactive => "interactive",
            AgentEnvironment::Plain => "plain",
        }
    }
}

/// A named agent on a host, with its defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrotherEntry {
    pub host: String,
    pub workdir: String,
    #[serde(default = "default_agent")]
    pub agent: String,
    pub model: Option<String>,
    #[serde(default = "default_max_turns")]
    pub max_turns: u32,
    #[serde(default = "default_sandbox")]
    pub sandbox: Sandbox,
    /// Wall-clock limit for every task, like "45m" or "4h" (default 4h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// At most this many of the brother's tasks in flight (1: one at a time); more wait as
    /// `queued`. Default: no cap beyond the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Absolute path (or `~/...`) of the agent's program on the host, instead of looking its
    /// name up on PATH; a built-in agent keeps its stream parsing, resume, hooks, sandbox
    /// mapping and native turn limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_path: Option<String>,
    /// Overrides the host's `environment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<AgentEnvironment>,
    /// Another env file for this brother's agents, read after the host's (its values win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<String>,
    /// The profile a launch on this brother uses when it names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
    /// At most this many US dollars a day of spend on this brother (see the host's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_usd_per_day: Option<f64>,
    /// What a launch over this brother's daily cap does (default refuse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over_cap: Option<OverCap>,
    /// `[brothers.X.notify]`: overrides `[notify]` key by key for this brother's tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<crate::notify::NotifySettings>,
    /// What this brother's model charges per million tokens; lets delegate enforce
    /// `max_budget_usd` for Codex, which has no spend limit of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_mtok: Option<crate::agents::options::TokenPrices>,
    /// This brother's tasks are meant to change their workdir: `show` flags one that ends
    /// `completed` with no change and no report (done without evidence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_change: Option<bool>,
    /// Each task runs in its own git worktree on the brother (see `--worktree`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<bool>,
}

/// A worker profile: run settings that override the brother's and are overridden by the
/// command's own flags (flag > profile > brother > built-in default). Every field is
/// optional; what a profile leaves out comes from the brother.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<crate::agents::ReasoningEffort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Wall-clock limit, like "45m".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget_usd: Option<f64>,
    /// Extra arguments for the agent's command line (checked like `--args-json`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// A file on the brother of `NAME=value` lines with this profile's credentials (an API
    /// key, say), read after the host's and brother's env files. The inventory holds the
    /// path only; the values never leave the brother.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_file: Option<String>,
    /// The NAME of an environment variable on the brother holding this profile's credential
    /// (`ANTHROPIC_API_KEY`, say); a launch refuses when it is unset in the agent's
    /// environment there. Never a value: one that looks like a secret is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_env: Option<String>,
    /// What the profile's model charges per million tokens (over the brother's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_mtok: Option<crate::agents::options::TokenPrices>,
    /// Over the brother's `expect_change`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_change: Option<bool>,
    /// Over the brother's `worktree`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<bool>,
}

/// A named group of brothers: `--environment NAME` places a launch on the least loaded of
/// them that has room under its caps; `--all` sends it to each.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// Brother names, or host names standing for every brother on that host.
    pub brothers: Vec<String>,
    /// The profile a launch placed here uses when it names none (over the brother's
    /// `default_profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// An agent command of the user's own, as an argv template.
///
/// Placeholders: `{prompt_file}` (the prompt is then not sent on stdin), `{model}`,
/// `{max_turns}`, `{workdir}`, `{task_dir}`. delegate knows nothing about how such a command
/// confines itself, so it runs only at sandbox `full` unless `sandboxes` declares the levels
/// the command enforces on its own; that declaration is recorded in the launch evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomAgent {
    pub command: Vec<String>,
    #[serde(default = "default_custom_sandboxes")]
    pub sandboxes: Vec<Sandbox>,
    /// Run `<command[0]> --version` at launch and record the answer; default false because an
    /// arbitrary command may not understand the flag.
    #[serde(default)]
    pub version_probe: bool,
}

fn default_true() -> bool {
    true
}
fn default_agent() -> String {
    "claude".to_string()
}
fn default_max_turns() -> u32 {
    DEFAULT_MAX_TURNS
}
fn default_sandbox() -> Sandbox {
    Sandbox::Write
}
fn default_custom_sandboxes() -> Vec<Sandbox> {
    vec![Sandbox::Full]
}

impl Inventory {
    /// Reads the file; a missing file is an empty inventory.
    pub fn load(path: &Path) -> Result<Inventory> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Inventory::default()),
            Err(e) => return Err(Error::io(path, e)),
        };
        Inventory::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Inventory> {
        let inv: Inventory =
            toml::from_str(text).map_err(|e| Error::Config { path: path.to_path_buf(), message: e.to_string() })?;
        inv.validate(path)?;
        Ok(inv)
    }

    /// Whether commands should use the warm daemon, and its idle time.
    pub fn warm(&self) -> (bool, std::time::Duration) {
        match &self.warm {
            None => (true, DEFAULT_WARM_PERSIST),
            Some(w) => {
                let persist = w.persist.as_deref().and_then(|p| parse_timeout(p).ok());
                (w.enabled, persist.unwrap_or(DEFAULT_WARM_PERSIST))
            }
        }
    }

    /// Checks names and cross references, so a bad file fails at load with the key named.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |message: String| Error::Config { path: path.to_path_buf(), message };
        if let Some(p) = self.warm.as_ref().and_then(|w| w.persist.as_deref()) {
            parse_timeout(p).map_err(|m| bad(format!("warm.persist: {m}")))?;
        }
        for name in self.roles.keys() {
            crate::roles::check_identity(name).map_err(|m| bad(format!("roles: {m} is not an identity")))?;
        }
        for (name, h) in &self.hosts {
            HostName::new(name).map_err(|e| bad(e.to_string()))?;
            check_nats_keys(name, h).map_err(bad)?;
            if h.transport != Some(Transport::Nats) {
                check_address(&h.address).map_err(|m| bad(format!("hosts.{name}.address: {m}")))?;
            }
            if let Some(u) = &h.user {
                check_user(u).map_err(|m| bad(format!("hosts.{name}.user: {m}")))?;
            }
            if h.port == Some(0) {
                return Err(bad(format!("hosts.{name}.port: 0 is not a port")));
            }
            if let Some(r) = &h.remote_root {
                check_remote_path(r).map_err(|m| bad(format!("hosts.{name}.remote_root: {m}")))?;
            }
            if h.max_concurrent == Some(0) {
                return Err(bad(format!("hosts.{name}.max_concurrent: 0 would start nothing; use 1 or more")));
            }
            if h.sync_deadline == Some(0) {
                return Err(bad(format!(
                    "hosts.{name}.sync_deadline: 0 seconds would never hear from the host; use 1 or more (default {})",
                    DEFAULT_SYNC_DEADLINE.as_secs()
                )));
            }
            if let Some(f) = &h.env_file {
                check_remote_path(f).map_err(|m| bad(format!("hosts.{name}.env_file: {m}")))?;
            }
            if let Some(usd) = h.max_usd_per_day {
                check_daily_cap(usd).map_err(|m| bad(format!("hosts.{name}.max_usd_per_day: {m}")))?;
            }
        }
        for (name, b) in &self.brothers {
            BrotherName::new(name).map_err(|e| bad(e.to_string()))?;
            if b.max_concurrent == Some(0) {
                return Err(bad(format!("brothers.{name}.max_concurrent: 0 would start nothing; use 1 or more")));
            }
            if !self.hosts.contains_key(&b.host) {
                return Err(bad(format!(
                    "brothers.{name}.host = {:?} is not a host in this file (hosts: {})",
                    b.host,
                    self.hosts.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            check_remote_path(&b.workdir).map_err(|m| bad(format!("brothers.{name}.workdir: {m}")))?;
            if let Some(p) = &b.agent_path {
                check_remote_path(p).map_err(|m| bad(format!("brothers.{name}.agent_path: {m}")))?;
            }
            if let Some(f) = &b.env_file {
                check_remote_path(f).map_err(|m| bad(format!("brothers.{name}.env_file: {m}")))?;
            }
            if let Some(t) = &b.timeout {
                parse_timeout(t).map_err(|m| bad(format!("brothers.{name}.timeout: {m}")))?;
            }
            if let Some(usd) = b.max_usd_per_day {
                check_daily_cap(usd).map_err(|m| bad(format!("brothers.{name}.max_usd_per_day: {m}")))?;
            }
            if let Some(prices) = &b.usd_per_mtok {
                prices.check().map_err(|m| bad(format!("brothers.{name}.usd_per_mtok.{m}")))?;
            }
            if b.max_turns == 0 {
                return Err(bad(format!("brothers.{name}.max_turns must be at least 1")));
            }
            if !is_builtin_agent(&b.agent) && !self.agents.contains_key(&b.agent) {
                return Err(bad(format!(
                    "brothers.{name}.agent = {:?}: use claude, codex, self-test or a name from [agents]",
                    b.agent
                )));
            }
        }
        for (name, b) in &self.brothers {
            if let Some(p) = &b.default_profile
                && !self.profiles.contains_key(p)
            {
                return Err(bad(format!(
                    "brothers.{name}.default_profile = {p:?} is not a profile in this file (profiles: {})",
                    names_or_none(self.profiles.keys())
                )));
            }
        }
        if let Some(n) = &self.notify {
            crate::notify::check("notify", n).map_err(bad)?;
        }
        for (name, b) in &self.brothers {
            if let Some(n) = &b.notify {
                crate::notify::check(&format!("brothers.{name}.notify"), n).map_err(bad)?;
            }
        }
        for (name, p) in &self.profiles {
            self.check_profile(name, p).map_err(|m| bad(format!("profiles.{name}.{m}")))?;
        }
        for (name, e) in &self.environments {
            self.check_environment(name, e).map_err(|m| bad(format!("environments.{name}{m}")))?;
        }
        for (name, a) in &self.agents {
            AgentName::new(name).map_err(|e| bad(e.to_string()))?;
            if is_builtin_agent(name) {
                return Err(bad(format!("agents.{name}: that name belongs to a built-in agent")));
            }
            if a.command.is_empty() || a.command[0].is_empty() {
                return Err(bad(format!("agents.{name}.command must name a program")));
            }
            if a.sandboxes.is_empty() {
                return Err(bad(format!("agents.{name}.sandboxes must list at least one level")));
            }
        }
        Ok(())
    }

    /// What is wrong with one profile, starting with the key's name.
    fn check_profile(&self, name: &str, p: &Profile) -> std::result::Result<(), String> {
        AgentName::new(name).map_err(|e| format!(" {e}"))?;
        if let Some(a) = &p.agent
            && !is_builtin_agent(a)
            && !self.agents.contains_key(a)
        {
            return Err(format!("agent = {a:?}: use claude, codex, self-test or a name from [agents]"));
        }
        if p.max_turns == Some(0) {
            return Err("max_turns must be at least 1".into());
        }
        if let Some(t) = &p.timeout {
            parse_timeout(t).map_err(|m| format!("timeout: {m}"))?;
        }
        if let Some(usd) = p.max_budget_usd {
            crate::agents::options::check_budget(usd).map_err(|m| format!("max_budget_usd: {m}"))?;
        }
        if let Some(a) = &p.agent {
            crate::agents::options::check_extra_args(a, &p.args).map_err(|m| format!("args: {m}"))?;
        }
        if let Some(f) = &p.credential_file {
            check_remote_path(f).map_err(|m| format!("credential_file: {m}"))?;
        }
        if let Some(n) = &p.credential_env {
            crate::agents::options::check_env_name(n).map_err(|m| format!("credential_env {m}"))?;
        }
        if let Some(prices) = &p.usd_per_mtok {
            prices.check().map_err(|m| format!("usd_per_mtok.{m}"))?;
        }
        Ok(())
    }

    /// What is wrong with one environment, starting with the key's name (or a space).
    fn check_environment(&self, name: &str, e: &Environment) -> std::result::Result<(), String> {
        AgentName::new(name).map_err(|e| format!(": {e}"))?;
        if e.brothers.is_empty() {
            return Err(".brothers is empty: list at least one brother or host".into());
        }
        for member in &e.brothers {
            if !self.brothers.contains_key(member) && !self.hosts.contains_key(member) {
                return Err(format!(
                    ".brothers: {member:?} is neither a brother nor a host in this file (brothers: {})",
                    names_or_none(self.brothers.keys())
                ));
            }
        }
        if let Some(p) = &e.profile
            && !self.profiles.contains_key(p)
        {
            return Err(format!(
                ".profile = {p:?} is not a profile in this file (profiles: {})",
                names_or_none(self.profiles.keys())
            ));
        }
        if self.environment_brothers(name).is_ok_and(|b| b.is_empty()) {
            return Err(".brothers: its hosts have no brothers yet".into());
        }
        Ok(())
    }

    /// An environment by name, or an error listing the known ones.
    pub fn environment(&self, name: &str) -> Result<&Environment> {
        self.environments.get(name).ok_or_else(|| Error::UnknownEnvironment {
            name: name.to_string(),
            known: self.environments.keys().cloned().collect(),
        })
    }

    /// The brothers of an environment, a host standing for each brother on it; sorted by
    /// name, each once.
    pub fn environment_brothers(&self, name: &str) -> Result<Vec<String>> {
        let e = self.environment(name)?;
        let mut out = std::collections::BTreeSet::new();
        for member in &e.brothers {
            if self.brothers.contains_key(member) {
                out.insert(member.clone());
            } else {
                out.extend(self.brothers.iter().filter(|(_, b)| &b.host == member).map(|(n, _)| n.clone()));
            }
        }
        Ok(out.into_iter().collect())
    }

    /// A profile by name, or an error listing the known ones.
    pub fn profile(&self, name: &str) -> Result<&Profile> {
        self.profiles.get(name).ok_or_else(|| Error::UnknownProfile {
            name: name.to_string(),
            known: self.profiles.keys().cloned().collect(),
        })
    }

    pub fn brother(&self, name: &str) -> Result<(&BrotherEntry, &HostEntry)> {
        let b = self.brothers.get(name).ok_or_else(|| Error::UnknownBrother {
            name: name.to_string(),
            known: self.brothers.keys().cloned().collect(),
        })?;
        let h = self.host(&b.host)?;
        Ok((b, h))
    }

    pub fn host(&self, name: &str) -> Result<&HostEntry> {
        self.hosts
            .get(name)
            .ok_or_else(|| Error::UnknownHost { name: name.to_string(), known: self.hosts.keys().cloned().collect() })
    }
}

/// A century: every duration delegate is given is capped here, so "wait forever" written as
/// `u64::MAX` seconds means what it says instead of overflowing a clock (a deadline of
/// `now + d`, or the runner's microsecond arithmetic in bash's signed 64 bits).
pub const FOREVER: std::time::Duration = std::time::Duration::from_secs(100 * 366 * 24 * 3600);

/// A duration such as `90s`, `45m`, `4h`, `1h 30m` or plain seconds; zero allowed. One too
/// large to represent, or over [`FOREVER`], is [`FOREVER`].
pub fn parse_duration(t: &str) -> std::result::Result<std::time::Duration, String> {
    let t = t.trim();
    let parsed = match t.parse::<u64>() {
        Ok(secs) => Ok(std::time::Duration::from_secs(secs)),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => Ok(FOREVER),
        Err(_) => match humantime::parse_duration(t) {
            Err(humantime::DurationError::NumberOverflow) => Ok(FOREVER),
            other => other,
        },
    };
    let d = parsed.map_err(|_| format!("{t:?} is not a duration: use e.g. 90s, 45m or 4h"))?;
    Ok(d.min(FOREVER))
}

/// A wall-clock limit: [`parse_duration`], at least one second.
pub fn parse_timeout(t: &str) -> std::result::Result<std::time::Duration, String> {
    let d = parse_duration(t)?;
    if d.as_secs() == 0 {
        return Err(format!("{t:?} is shorter than one second"));
    }
    Ok(d)
}

/// A daily cap is a finite amount of dollars, zero allowed (nothing may spend today).
fn check_daily_cap(usd: f64) -> std::result::Result<(), String> {
    if !usd.is_finite() || usd < 0.0 {
        return Err(format!("{usd} must be a number of dollars, 0 or more, e.g. 20.0"));
    }
    Ok(())
}

fn names_or_none<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = names.map(String::as_str).collect();
    if list.is_empty() { "none".into() } else { list.join(", ") }
}

pub fn is_builtin_agent(name: &str) -> bool {
    matches!(name, "claude" | "codex" | "self-test")
}

/// An address reaches ssh_config lookups and `connect()`, and later `ssh -t` for attach:
/// refuse anything a program could read as an option or a shell could read as syntax.
pub fn check_address(a: &str) -> std::result::Result<(), String> {
    if a.is_empty() {
        return Err("empty address".into());
    }
    if a.starts_with('-') {
        return Err(format!("{a:?} starts with '-', which ssh would read as an option"));
    }
    if a.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    if !a.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:%".contains(&b)) {
        return Err(format!("{a:?}: only letters, digits and . _ - : % are allowed in a host address"));
    }
    Ok(())
}

fn check_user(u: &str) -> std::result::Result<(), String> {
    let ok = !u.is_empty()
        && u.len() <= 64
        && !u.starts_with('-')
        && u.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok { Ok(()) } else { Err(format!("{u:?} is not a valid user name")) }
}

/// Remote paths are carried base64-encoded, so any byte is safe in transit; still refuse
/// control characters and relative paths that would depend on the remote cwd.
pub fn check_remote_path(p: &str) -> std::result::Result<(), String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(format!("{p:?} contains control characters"));
    }
    if !(p.starts_with('/') || p == "~" || p.starts_with("~/")) {
        return Err(format!("{p:?} must be absolute or start with ~/"));
    }
    Ok(())
}

/// Expands a leading `~/` against `home` (local paths only; remote ones expand remotely).
pub fn expand_local(p: &str, home: &Path) -> PathBuf {
    if p == "~" {
        home.to_path_buf()
    } else if let Some(rest) = p.strip_prefix("~/") {
        home.join(rest)
    } else {
        PathBuf::from(p)
    }
}

/// Edits the inventory file in place, keeping comments and layout, then re-validates the
/// whole result before writing it so a bad edit never lands. From `open` to `save` the editor
/// holds the inventory's edit lock, so concurrent edits happen one after the other and none
/// is lost; the file is replaced atomically, through a symlink if it is one
/// ([`crate::hosts::user_file`]).
pub struct InventoryEditor {
    path: PathBuf,
    doc: toml_edit::DocumentMut,
    lock: crate::hosts::user_file::EditLock,
}

impl InventoryEditor {
    pub fn open(path: &Path) -> Result<InventoryEditor> {
        let lock = crate::hosts::user_file::EditLock::acquire(path).map_err(|e| Error::io(path, e))?;
        // Read under the lock: what another process saved before we got it is included.
        let text = match std::fs::read_to_string(&lock.target) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(path, e)),
        };
        let doc = text
            .parse::<toml_edit::DocumentMut>()
            .map_err(|e| Error::Config { path: path.to_path_buf(), message: e.to_string() })?;
        Ok(InventoryEditor { path: path.to_path_buf(), doc, lock })
    }

    fn table(&mut self, section: &str) -> &mut toml_edit::Table {
        let item = self.doc.entry(section).or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        });
        item.as_table_mut().expect("inventory sections are tables")
    }

    /// Adds or replaces `[section.name]` with the serialized entry.
    pub fn set<T: Serialize>(&mut self, section: &str, name: &str, entry: &T) -> Result<()> {
        let text =
            toml::to_string(entry).map_err(|e| Error::Config { path: self.path.clone(), message: e.to_string() })?;
        let parsed = text
            .parse::<toml_edit::DocumentMut>()
            .map_err(|e| Error::Config { path: self.path.clone(), message: e.to_string() })?;
        let mut t = parsed.as_table().clone();
        t.set_implicit(false);
        self.table(section).insert(name, toml_edit::Item::Table(t));
        Ok(())
    }

    /// Removes `[section.name]`; returns whether it existed.
    pub fn remove(&mut self, section: &str, name: &str) -> bool {
        self.table(section).remove(name).is_some()
    }

    pub fn save(self) -> Result<Inventory> {
        let text = self.doc.to_string();
        let inv = Inventory::parse(&text, &self.path)?;
        self.lock.replace(text.as_bytes()).map_err(|e| Error::io(&self.lock.target, e))?;
        Ok(inv)
    }
}

/// How a brother's agents get their environment: the mode (brother over host, default
/// `login`) and the env files to read on the host, the host's first.
pub fn agent_environment(host: &HostEntry, brother: Option<&BrotherEntry>) -> (AgentEnvironment, Vec<String>) {
    let mode = brother.and_then(|b| b.environment).or(host.environment).unwrap_or(AgentEnvironment::Login);
    let files = [host.env_file.clone(), brother.and_then(|b| b.env_file.clone())].into_iter().flatten().collect();
    (mode, files)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[hosts.masuda]
address = "masuda.example.org"    # or an alias from ~/.ssh/config
user = "ian"
port = 22
identity = "~/.ssh/id_ed25519"
known_hosts = "~/.ssh/known_hosts"
remote_root = "~/.delegate"

[brothers.oppy]
host = "masuda"
workdir = "~/projects/test"
agent = "claude"
model = "sonnet"
max_turns = 50
sandbox = "write"

[agents.my-aider]
command = ["aider", "--yes", "--message-file", "{prompt_file}"]
"#;

    #[test]
    fn the_documented_example_parses() {
        let inv = Inventory::parse(EXAMPLE, Path::new("c.toml")).unwrap();
        let (b, h) = inv.brother("oppy").unwrap();
        assert_eq!(h.address, "masuda.example.org");
        assert_eq!(b.sandbox, Sandbox::Write);
        assert_eq!(inv.agents["my-aider"].sandboxes, vec![Sandbox::Full]);
    }

    #[test]
    fn defaults_apply() {
        let inv = Inventory::parse(
            "[hosts.h]\naddress = \"h\"\n[brothers.b]\nhost = \"h\"\nworkdir = \"/w\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let b = &inv.brothers["b"];
        assert_eq!((b.agent.as_str(), b.max_turns, b.sandbox), ("claude", 50, Sandbox::Write));
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("[hosts.h]\naddress = \"h\"\nprot = 22\n", "prot"),
            ("[hosts.h]\naddress = \"-oProxyCommand=x\"\n", "option"),
            ("[hosts.h]\naddress = \"h;id\"\n", "only letters"),
            ("[brothers.b]\nhost = \"nope\"\nworkdir = \"/w\"\n", "not a host"),
            ("[hosts.h]\naddress = \"h\"\n[brothers.b]\nhost = \"h\"\nworkdir = \"rel\"\n", "absolute"),
            ("[hosts.h]\naddress = \"h\"\n[brothers.b]\nhost = \"h\"\nworkdir = \"/w\"\nsandbox = \"most\"\n", "most"),
            ("[hosts.h]\naddress = \"h\"\n[brothers.b]\nhost = \"h\"\nworkdir = \"/w\"\nagent = \"gpt\"\n", "agent"),
            ("[hosts.\"a b\"]\naddress = \"h\"\n", "invalid host name"),
            ("[hosts.h]\naddress = \"h\"\nsync_deadline = 0\n", "hosts.h.sync_deadline: 0 seconds"),
            ("[profiles.p]\nreasoning_effort = \"huge\"\n", "huge"),
            ("[profiles.p]\nmax_budget_usd = -1.0\n", "profiles.p.max_budget_usd"),
            (
                "[profiles.p]\nusd_per_mtok = { input = -1.0, cached_input = 0.1, output = 4.0 }\n",
                "profiles.p.usd_per_mtok.input = -1 must be a price",
            ),
            ("[profiles.p]\nusd_per_mtok = { input = 1.0, output = 4.0 }\n", "cached_input"),
            ("[profiles.p]\nusd_per_mtok = { input = 1.0, cached_input = 0.1, output = 4.0, extra = 1.0 }\n", "extra"),
            (
                "[hosts.h]\naddress = \"h\"\n[brothers.b]\nhost = \"h\"\nworkdir = \"/w\"\n\
                 usd_per_mtok = { input = 1.0, cached_input = 0.1, output = inf }\n",
                "brothers.b.usd_per_mtok.output = inf",
            ),
            (
                "[hosts.h]\naddress = \"h\"\n[brothers.b]\nhost = \"h\"\nworkdir = \"/w\"\n\
                 usd_per_mtok = { input = 1.0, cached_input = nan, output = 1.0 }\n",
                "brothers.b.usd_per_mtok.cached_input = NaN",
            ),
            (
                "[hosts.h]\naddress = \"h\"\n[brothers.b]\nhost = \"h\"\nworkdir = \"/w\"\n\
                 usd_per_mtok = { input = 1001.0, cached_input = 0.1, output = 1.0 }\n",
                "from 0 to 1000",
            ),
            ("[profiles.p]\nmax_turns = 0\n", "profiles.p.max_turns"),
            ("[profiles.p]\ntimeout = \"soon\"\n", "profiles.p.timeout"),
            ("[profiles.p]\nagent = \"gpt\"\n", "profiles.p.agent"),
            (
                "[profiles.p]\nagent = \"claude\"\nargs = [\"--permission-mode\", \"bypassPermissions\"]\n",
                "profiles.p.args: extra argument --permission-mode",
            ),
            ("[profiles.p]\ncredential_file = \"key.env\"\n", "profiles.p.credential_file"),
            ("[hosts.h]\naddress = \"h\"\nmax_usd_per_day = -1.0\n", "hosts.h.max_usd_per_day"),
            ("[hosts.h]\naddress = \"h\"\nover_cap = \"wait\"\n", "wait"),
            (
                "[hosts.h]\naddress = \"h\"\n[brothers.b]\nhost = \"h\"\nworkdir = \"/w\"\nmax_usd_per_day = nan\n",
                "brothers.b.max_usd_per_day",
            ),
            // A secret value has no key to go in: only a reference to where it lives.
            ("[profiles.p]\napi_key = \"sk-123\"\n", "api_key"),
            ("[environments.dev]\nbrothers = []\n", "environments.dev.brothers is empty"),
            ("[environments.dev]\nbrothers = [\"nope\"]\n", "\"nope\" is neither a brother nor a host"),
            (
                "[hosts.h]\naddress = \"h\"\n[brothers.b]\nhost = \"h\"\nworkdir = \"/w\"\n\
                 [environments.dev]\nbrothers = [\"b\"]\nprofile = \"fast\"\n",
                "environments.dev.profile = \"fast\"",
            ),
            ("[hosts.h]\naddress = \"h\"\n[environments.dev]\nbrothers = [\"h\"]\n", "have no brothers"),
            ("[environments.dev]\nbrother = [\"b\"]\n", "brother"),
            ("[profiles.p]\ncredential_env = \"sk-ant-123\"\n", "profiles.p.credential_env is not an environment"),
            (
                "[profiles.p]\ncredential_env = \"AKIAIOSFODNN7EXAMPLE\"\n",
                "profiles.p.credential_env looks like a secret",
            ),
            (
                "[hosts.h]\naddress = \"h\"\n[brothers.b]\nhost = \"h\"\nworkdir = \"/w\"\ndefault_profile = \"p\"\n",
                "brothers.b.default_profile",
            ),
        ];
        for (text, needle) in cases {
            let err = Inventory::parse(text, Path::new("c.toml")).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err:?}, wanted {needle:?}");
        }
    }

    #[test]
    fn the_agents_environment_comes_from_brother_then_host() {
        let text = "[hosts.h]\naddress = \"h\"\nenvironment = \"plain\"\nenv_file = \"~/host.env\"\n\
                    [brothers.a]\nhost = \"h\"\nworkdir = \"/w\"\nagent_path = \"~/.local/bin/claude\"\n\
                    [brothers.b]\nhost = \"h\"\nworkdir = \"/w\"\nenvironment = \"interactive\"\nenv_file = \"/etc/b.env\"\n";
        let inv = Inventory::parse(text, Path::new("c.toml")).unwrap();
        let h = &inv.hosts["h"];
        assert_eq!(agent_environment(h, inv.brothers.get("a")), (AgentEnvironment::Plain, vec!["~/host.env".into()]));
        assert_eq!(
            agent_environment(h, inv.brothers.get("b")),
            (AgentEnvironment::Interactive, vec!["~/host.env".into(), "/etc/b.env".into()])
        );
        let bare = Inventory::parse("[hosts.h]\naddress = \"h\"\n", Path::new("c.toml")).unwrap();
        assert_eq!(agent_environment(&bare.hosts["h"], None), (AgentEnvironment::Login, vec![]));
        assert_eq!(inv.brothers["a"].agent_path.as_deref(), Some("~/.local/bin/claude"));
        for (text, needle) in [
            ("[hosts.h]\naddress = \"h\"\nenvironment = \"zsh\"\n", "zsh"),
            ("[hosts.h]\naddress = \"h\"\nenv_file = \"rel.env\"\n", "env_file"),
            (
                "[hosts.h]\naddress = \"h\"\n[brothers.b]\nhost = \"h\"\nworkdir = \"/w\"\nagent_path = \"claude\"\n",
                "agent_path",
            ),
        ] {
            let err = Inventory::parse(text, Path::new("c.toml")).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err:?}, wanted {needle:?}");
        }
    }

    #[test]
    fn durations_too_large_for_a_clock_are_a_century() {
        let secs = |t: &str| parse_duration(t).map(|d| d.as_secs());
        assert_eq!(secs("90"), Ok(90));
        assert_eq!(secs("1h 30m"), Ok(5400));
        assert_eq!(secs("0s"), Ok(0));
        for huge in ["18446744073709551615", "99999999999999999999999", "99999999999999999999999h", "584942417356y"] {
            assert_eq!(parse_duration(huge), Ok(FOREVER), "{huge}");
        }
        assert!(parse_duration("soon").unwrap_err().contains("is not a duration"));
        assert!(parse_duration("-5").is_err());
        assert!(parse_timeout("0").unwrap_err().contains("shorter than one second"));
        assert_eq!(parse_timeout("18446744073709551615"), Ok(FOREVER));
    }

    #[test]
    fn an_environments_hosts_stand_for_their_brothers() {
        let text = "[hosts.h]\naddress = \"h\"\n[hosts.g]\naddress = \"g\"\n\
                    [brothers.zed]\nhost = \"h\"\nworkdir = \"/w\"\n[brothers.ann]\nhost = \"h\"\nworkdir = \"/w\"\n\
                    [brothers.bob]\nhost = \"g\"\nworkdir = \"/w\"\n\
                    [environments.dev]\nbrothers = [\"h\", \"zed\", \"bob\"]\n";
        let inv = Inventory::parse(text, Path::new("c.toml")).unwrap();
        assert_eq!(inv.environment_brothers("dev").unwrap(), ["ann", "bob", "zed"]);
        let err = inv.environment_brothers("prod").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::UnknownEnvironment);
        assert!(err.to_string().contains("dev"), "{err}");
    }

    #[test]
    fn unknown_brother_lists_known_ones() {
        let inv = Inventory::parse(EXAMPLE, Path::new("c.toml")).unwrap();
        let err = inv.brother("jerry").unwrap_err().to_string();
        assert!(err.contains("\"jerry\"") && err.contains("oppy"), "{err}");
    }

    #[test]
    fn nats_hosts_need_their_keys_and_never_hold_credentials_in_the_url() {
        let nats = "[hosts.n]\ntransport = \"nats\"\nurl = \"nats://broker:4222\"\nworker_id = \"laptop\"\n";
        let inv = Inventory::parse(nats, Path::new("c.toml")).unwrap();
        assert_eq!(inv.hosts["n"].worker_id.as_deref(), Some("laptop"));
        for (text, wanted) in [
            (nats.replace("nats://broker", "nats://lead:hunter2@broker"), "creds"),
            (nats.replace("nats://broker", "nats://tok3n@broker"), "creds"),
            (nats.replace("nats://broker:4222", "http://broker"), "scheme"),
            (nats.replace("nats://broker:4222", "nats://broker:4222/?token=tok3n"), "only scheme, host and port"),
            (nats.replace("worker_id = \"laptop\"\n", ""), "needs worker_id"),
            (nats.replace("worker_id = \"laptop\"", "worker_id = \"a.b\""), "subject token"),
            (nats.replace("url = \"nats://broker:4222\"\n", ""), "needs url"),
            (format!("{nats}task_ttl = \"soon\"\n"), "task_ttl"),
            (format!("{nats}port = 22\n"), "SSH settings"),
            ("[hosts.h]\naddress = \"h\"\nworker_id = \"w\"\n".to_string(), "NATS setting"),
        ] {
            let err = Inventory::parse(&text, Path::new("c.toml")).unwrap_err().to_string();
            assert!(err.contains(wanted), "{text}: {err}");
            assert!(!err.contains("hunter2") && !err.contains("tok3n"), "the secret is repeated: {err}");
        }
    }

    #[test]
    fn editing_keeps_comments_and_validates() {
        let dir = std::env::temp_dir().join(format!("dlg-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, EXAMPLE).unwrap();
        let mut ed = InventoryEditor::open(&path).unwrap();
        let host = HostEntry {
            address: "10.0.0.2".into(),
            user: None,
            port: Some(2222),
            identity: None,
            known_hosts: None,
            remote_root: None,
            connect_timeout: None,
            max_concurrent: None,
            sync_deadline: None,
            environment: None,
            env_file: None,
            transport: None,
            max_usd_per_day: None,
            over_cap: None,
            ..HostEntry::default()
        };
        ed.set("hosts", "jerry-box", &host).unwrap();
        let inv = ed.save().unwrap();
        assert_eq!(inv.hosts["jerry-box"].port, Some(2222));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("# or an alias from ~/.ssh/config"), "{text}");

        // Removing a host a brother still uses is refused and leaves the file alone.
        let mut ed = InventoryEditor::open(&path).unwrap();
        assert!(ed.remove("hosts", "masuda"));
        assert!(ed.save().is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
