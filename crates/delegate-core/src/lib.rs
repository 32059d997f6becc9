//! `delegate-core`: the library behind the `delegate` CLI.
//!
//! It hands a task to a named remote machine (a "brother") over SSH, starts the brother's
//! coding agent in a detached tmux session there, and records everything in a local SQLite
//! mailbox. It never touches the terminal, never reads environment variables or `$HOME`
//! on its own: the caller passes every path and setting in (see [`Paths`]).
//!
//! # The API in one type
//!
//! [`Delegate`] is the one entry type. [`Delegate::open`] takes a [`Paths`] and owns the
//! mailbox (SQLite, in [`Paths::data_dir`]), the inventory (the TOML file at
//! [`Paths::config_file`]) and the SSH connections it opens to the hosts (resolved like
//! OpenSSH would, from the inventory, [`Paths::ssh_config`] and known_hosts). What a lead does
//! with it:
//!
//! | method | does |
//! |---|---|
//! | [`launch`](Delegate::launch) | start a task on a brother from a [`LaunchRequest`]; `Ok` once the brother confirmed the start. A refusal is an [`Error`] naming the task, which the mailbox keeps as `failed` with the reason |
//! | [`launch_many`](Delegate::launch_many) | fan-out: one task per request, one result per request, in order |
//! | [`sync`](Delegate::sync) | bring the mailbox up to date: one SSH exec per host with tasks in flight, each host within its sync deadline (a host past it leaves its tasks [`stale`](Task::stale)) |
//! | [`list`](Delegate::list) | tasks, newest first, narrowed by a [`ListFilter`] (mailbox only: sync first for the latest) |
//! | [`show`](Delegate::show) | one task as a [`thread::TaskView`]: history, messages, events and its [`thread`](thread::TaskView::thread), the newest 200 items ([`show_window`](Delegate::show_window) for all) |
//! | [`say`](Delegate::say) | tell a running brother something; delivered once, with receipts |
//! | [`reopen`](Delegate::reopen) | a new run of a finished task that resumes the agent's session ([`reopen::ReopenRequest`]) |
//! | [`cancel`](Delegate::cancel) | stop the agent on its brother and record `cancelled` |
//! | [`wait`](Delegate::wait) | sync until the tasks finish or a timeout passes ([`control::WaitResult`]) |
//! | [`update`](Delegate::update) | set a status by hand, with a note |
//! | [`doctor`](Delegate::doctor) | check everything a launch needs on each brother, changing nothing ([`doctor::BrotherReport`]) |
//!
//! The async methods need a tokio runtime with I/O and timers enabled (`enable_all`, or
//! `#[tokio::main]`); a current-thread runtime is enough. Errors are [`Error`], whose
//! messages carry the facts (files, lines, fingerprints, the brother's reason).
//!
//! Launch a task and wait for it (needs a reachable brother, so not run here):
//!
//! ```no_run
//! use std::path::PathBuf;
//! use std::time::Duration;
//! use delegate_core::{Delegate, LaunchRequest, Paths, TaskStatus};
//!
//! # async fn demo() -> Result<(), delegate_core::Error> {
//! let home = PathBuf::from("/home/ian");
//! let mut d = Delegate::open(Paths {
//!     config_file: home.join(".config/delegate/config.toml"),
//!     data_dir: home.join(".local/share/delegate"),
//!     ssh_config: home.join(".ssh/config"),
//!     home,
//!     local_user: "ian".into(),
//!     agent_socket: None,
//! })?;
//! let task = d
//!     .launch(LaunchRequest { brother: "oppy".into(), prompt: b"review the config".to_vec(), ..Default::default() })
//!     .await?;
//! // Poll every 2 s, give up after 10 minutes (the task keeps running on the brother).
//! let done = d.wait(&[task.id], Some(Duration::from_secs(600)), Duration::from_secs(2)).await?;
//! let t = &done.tasks[0];
//! println!("task {}: {}", t.id, t.status);
//! if t.status == TaskStatus::Completed {
//!     for item in d.show(t.id)?.thread {
//!         println!("{} {}: {}", item.at, item.kind, item.text);
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! List what the mailbox knows, without touching the network (a missing inventory file is
//! an empty inventory, and the mailbox is created on first open):
//!
//! ```
//! use delegate_core::{Delegate, ListFilter, Paths, TaskStatus};
//!
//! let dir = std::env::temp_dir().join(format!("delegate-doctest-{}", std::process::id()));
//! let d = Delegate::open(Paths {
//!     config_file: dir.join("config.toml"),
//!     data_dir: dir.join("data"),
//!     home: dir.clone(),
//!     local_user: "ian".into(),
//!     ssh_config: dir.join(".ssh/config"),
//!     agent_socket: None,
//! })?;
//! let filter = ListFilter { brother: Some("oppy".into()), status: Some(TaskStatus::Running), limit: Some(20) };
//! for t in d.list(&filter)? {
//!     println!("{} {} {} {}", t.id, t.status, t.brother, t.subject);
//! }
//! assert!(d.list(&ListFilter::default())?.is_empty());
//! # drop(d);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), delegate_core::Error>(())
//! ```
//!
//! The runnable version is `examples/embed.rs`
//! (`cargo run -p delegate-core --example embed -- --config FILE --data DIR --home DIR BROTHER PROMPT`).
//!
//! # Modules
//!
//! In reading order:
//! - [`names`]: validated names (brothers, hosts, tmux sessions) that are safe in paths and tmux.
//! - [`config`]: the TOML inventory of hosts, brothers and custom agents ([`user_file`]:
//!   its edits, locked, atomic and through a symlink).
//! - [`ssh_config`] and [`known_hosts`]: OpenSSH-compatible resolution (Match blocks,
//!   ProxyJump/ProxyCommand) and host-key checks (certificates, global files, hashing).
//! - [`ssh`]: the russh client: connect along a route (`ssh::route`: direct, bastions,
//!   proxy command; `ssh::system`: the system ssh for `transport = "ssh"`), verify,
//!   authenticate in OpenSSH's key order (`ssh::auth`), exec with stdin.
//! - [`agent`]: how each agent kind is started (argv, sandbox mapping, turn limit).
//! - [`runner`]: the bash launch script (a real file), the shared code that finds the agent and
//!   its environment on the brother (`runner/agent-env.sh`), and how variables are filled in.
//! - [`sync_protocol`]: the sync and cancel scripts and the framing of their replies.
//! - [`store`]: the SQLite mailbox: tasks, runs, transitions.
//! - [`task`]: plain data: [`Task`], [`Run`], [`TaskStatus`], [`Sandbox`].
//! - [`launch`]: the launch path: intent, SSH, evidence.
//! - [`sync`] and [`outcome`]: reading the brothers' files back and classifying how runs ended;
//!   [`row_caps`]: how many rows one task may add per sync and per run.
//! - [`control`]: sync, wait, cancel, logs, attach and update on launched tasks.
//! - [`say`], [`reopen`] and [`write_scope`]: talking to a brother and following up.
//! - [`thread`]: a task as a conversation ([`Delegate::show`]).
//! - [`doctor`]: what a launch needs, checked on each brother without launching.
//! - [`delegate`]: [`Delegate`], the entry type that owns the pieces above.

// Errors here are rare and carry the facts a reader needs (fingerprints, files, lines);
// their size on the cold path matters less than keeping them plain.
#![allow(clippy::result_large_err)]

pub mod agent;
pub mod config;
pub mod control;
pub mod delegate;
pub mod doctor;
pub mod error;
pub mod known_hosts;
pub mod launch;
pub mod names;
pub mod outcome;
pub mod pool;
pub mod reopen;
pub mod row_caps;
pub mod runner;
pub mod say;
pub mod ssh;
pub mod ssh_config;
pub mod store;
pub mod sync;
pub mod sync_protocol;
pub mod task;
pub mod thread;
pub mod user_file;
pub mod warm;
pub mod write_scope;

pub use delegate::{Delegate, Paths, Trusted};
pub use error::Error;
pub use launch::{LaunchRequest, MAX_PROMPT_BYTES};
pub use store::ListFilter;
pub use task::{Run, Sandbox, Stale, Task, TaskStatus};
