//! Command-line shape. `delegate <brother> "<prompt>"` is short for `delegate run ...`:
//! anything that is not a subcommand is read as a brother name.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use delegate_core::{Sandbox, TaskStatus};

/// Hand tasks to coding agents on named remote machines over SSH
#[derive(Parser, Debug)]
#[command(name = "delegate", version, allow_external_subcommands = true, after_help = SHORT_FORM_HELP)]
pub struct Cli {
    /// Inventory file (default: $DELEGATE_CONFIG, else $XDG_CONFIG_HOME/delegate/config.toml)
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

const SHORT_FORM_HELP: &str =
    "Short form: `delegate BROTHER PROMPT [OPTIONS]` is `delegate run BROTHER PROMPT [OPTIONS]`.";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Launch a task on a brother (an agent on a remote host)
    Run(RunArgs),
    /// List tasks, newest first
    List(ListArgs),
    /// Show one task with its launch evidence and history
    Show(ShowArgs),
    /// Manage hosts in the inventory
    #[command(subcommand)]
    Hosts(HostsCommand),
    /// Manage brothers in the inventory
    #[command(subcommand)]
    Brothers(BrothersCommand),
    #[command(external_subcommand)]
    External(Vec<OsString>),
}

/// The arguments of `run`, also parsed on their own for the short form.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Brother to hand the task to
    pub brother: String,
    /// The task text; `-` reads it from stdin
    pub prompt: Option<OsString>,
    /// Read the task text from a file (`-` for stdin) instead of the command line
    #[arg(long, value_name = "PATH", conflicts_with = "prompt")]
    pub prompt_file: Option<PathBuf>,
    /// One-line subject (default: the prompt's first line)
    #[arg(long)]
    pub subject: Option<String>,
    /// Working directory on the brother (default: the brother's)
    #[arg(long)]
    pub workdir: Option<String>,
    /// Turn limit for the agent (default: the brother's, 50 if unset)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_turns: Option<u32>,
    /// read | write | full (default: the brother's)
    #[arg(long)]
    pub sandbox: Option<Sandbox>,
    /// claude | codex | self-test | a name from [agents] (default: the brother's)
    #[arg(long)]
    pub agent: Option<String>,
    /// Model name passed to the agent (default: the brother's)
    #[arg(long)]
    pub model: Option<String>,
    /// Wall-clock limit, e.g. 90s, 45m, 4h (default: the brother's, else 4h)
    #[arg(long)]
    pub timeout: Option<String>,
    /// Print the task as JSON
    #[arg(long)]
    pub json: bool,
}

/// Parses the short form's arguments as `run` arguments.
#[derive(Parser, Debug)]
#[command(name = "delegate")]
pub struct ShortForm {
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[arg(long)]
    pub brother: Option<String>,
    #[arg(long)]
    pub status: Option<TaskStatus>,
    /// At most this many tasks (default 50)
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Task number
    pub id: i64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum HostsCommand {
    /// Add or replace a host
    Add(HostAddArgs),
    /// List hosts
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a host (refused while a brother uses it)
    Rm { name: String },
    /// Record a host's key in its known_hosts file after checking its fingerprint
    Trust(TrustArgs),
}

#[derive(Args, Debug)]
pub struct HostAddArgs {
    pub name: String,
    /// Hostname, IP address, or an alias from ~/.ssh/config
    #[arg(long)]
    pub address: String,
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub port: Option<u16>,
    /// Private key file
    #[arg(long)]
    pub identity: Option<String>,
    /// known_hosts file (default ~/.ssh/known_hosts)
    #[arg(long)]
    pub known_hosts: Option<String>,
    /// Where task directories live on the host (default ~/.delegate)
    #[arg(long)]
    pub remote_root: Option<String>,
    /// Seconds to wait for connect, handshake and auth (default 10/15/15)
    #[arg(long)]
    pub connect_timeout: Option<u64>,
}

#[derive(Args, Debug)]
pub struct TrustArgs {
    pub name: String,
    /// The SHA256 fingerprint you expect (shown by the unknown-host error, or by
    /// `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host); without it the
    /// presented fingerprint is only shown
    #[arg(long)]
    pub fingerprint: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum BrothersCommand {
    /// Add or replace a brother
    Add(BrotherAddArgs),
    /// List brothers
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a brother
    Rm { name: String },
}

#[derive(Args, Debug)]
pub struct BrotherAddArgs {
    pub name: String,
    /// Host from the inventory
    #[arg(long)]
    pub host: String,
    /// Default working directory on the host (absolute or ~/...)
    #[arg(long)]
    pub workdir: String,
    /// claude | codex | self-test | a name from [agents]
    #[arg(long, default_value = "claude")]
    pub agent: String,
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_turns: u32,
    /// read | write | full
    #[arg(long, default_value = "write")]
    pub sandbox: Sandbox,
    /// Wall-clock limit for its tasks, e.g. 45m or 4h (default 4h)
    #[arg(long)]
    pub timeout: Option<String>,
}
