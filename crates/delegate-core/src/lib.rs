//! `delegate-core`: the library behind the `delegate` CLI.
//!
//! It hands a task to a named remote machine (a "brother") over SSH, starts the brother's
//! coding agent in a detached tmux session there, and records everything in a local SQLite
//! mailbox. It never touches the terminal, never reads environment variables or `$HOME`
//! on its own: the caller passes every path and setting in (see [`Paths`]).
//!
//! Modules in reading order:
//! - [`names`]: validated names (brothers, hosts, tmux sessions) that are safe in paths and tmux.
//! - [`config`]: the TOML inventory of hosts, brothers and custom agents.
//! - [`ssh_config`] and [`known_hosts`]: OpenSSH-compatible resolution and host-key checks.
//! - [`ssh`]: the russh client: connect, verify, authenticate, exec with stdin.
//! - [`agent`]: how each agent kind is started (argv, sandbox mapping, turn limit).
//! - [`runner`]: the bash launch script (a real file) and how its variables are filled in.
//! - [`sync_protocol`]: the sync and cancel scripts and the framing of their replies.
//! - [`store`]: the SQLite mailbox: tasks, runs, transitions.
//! - [`launch`]: the launch path: intent, SSH, evidence.
//! - [`delegate`]: [`Delegate`], the entry type that owns the pieces above.

// Errors here are rare and carry the facts a reader needs (fingerprints, files, lines);
// their size on the cold path matters less than keeping them plain.
#![allow(clippy::result_large_err)]

pub mod agent;
pub mod config;
pub mod control;
pub mod delegate;
pub mod error;
pub mod known_hosts;
pub mod launch;
pub mod names;
pub mod outcome;
pub mod reopen;
pub mod runner;
pub mod say;
pub mod ssh;
pub mod ssh_config;
pub mod store;
pub mod sync;
pub mod sync_protocol;
pub mod task;
pub mod thread;
pub mod write_scope;

pub use delegate::{Delegate, Paths, Trusted};
pub use error::Error;
pub use launch::{LaunchRequest, MAX_PROMPT_BYTES};
pub use store::ListFilter;
pub use task::{Run, Sandbox, Task, TaskStatus};
