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
//! | [`usage`](Delegate::usage) | turns, tokens and dollars the runs reported, by brother, profile or day ([`mailbox::usage`]) |
//! | [`show`](Delegate::show) | one task as a [`thread::TaskView`]: history, messages, events and its [`thread`](thread::TaskView::thread), the newest 200 items ([`show_window`](Delegate::show_window) for all) |
//! | [`say`](Delegate::say) | tell a running brother something; delivered once, with receipts |
//! | [`reopen`](Delegate::reopen) | a new run of a finished task that resumes the agent's session ([`reopen::ReopenRequest`]) |
//! | [`cancel`](Delegate::cancel) | stop the agent on its brother and record `cancelled` |
//! | [`wait`](Delegate::wait) | sync until the tasks finish or a timeout passes ([`control::WaitResult`]) |
//! | [`update`](Delegate::update) | set a status by hand, with a note |
//! | [`add_schedule`](Delegate::add_schedule), [`fire_due`](Delegate::fire_due) | recurring tasks ([`schedule`]): each due slot claimed once in the mailbox, then launched as an ordinary task |
//! | [`dispatch_tick`](Delegate::dispatch_tick) | one tick of the background dispatcher: sync while work is in flight, fire due schedules ([`ops::dispatch`]) |
//! | [`deliver_notifications`](Delegate::deliver_notifications) | send the notifications that are due (every sync ends with it; [`notify`]) |
//! | [`notifications`](Delegate::notifications) | recent notifications and their delivery state |
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
//! The folders follow the path of a task, each answering one question:
//!
//! | folder | answers | holds |
//! |---|---|---|
//! | [`hosts`] | where is a brother, and which host keys are its? | [`hosts::inventory`] (the TOML file; [`hosts::user_file`]: its edits, locked, atomic, through a symlink), [`hosts::resolve`] (a host as one SSH target), [`hosts::ssh_config`] (OpenSSH's resolution: Match, Include, ProxyJump), [`hosts::known_hosts`] (host-key decisions: revoked, CA, hashed) |
//! | [`transport`] | how is it reached? | [`transport::ssh`] (the russh client: routes, OpenSSH's key order, the system ssh), [`transport::pool`] (one connection per host), [`transport::warm`] (the daemon holding connections across processes) |
//! | [`remote`] | what runs there? | the bash scripts in `remote/scripts/` (launch, run, sync, cancel, say, the agent's helpers) with their tests, how they are filled in, and [`remote::protocol`] (what their replies look like) |
//! | [`mailbox`] | what does the lead remember? | the SQLite mailbox, its migrations, the feed, [`mailbox::thread`] (a task as one conversation), [`mailbox::usage`] (what runs reported spending) and [`mailbox::board`] (backlog, parent links, cards) |
//! | [`agents`] | how is each agent driven and read? | argv, prompt delivery and sandbox mapping per agent; [`agents::options`] (reasoning effort, spend limit, extra arguments: who takes what); [`agents::outcome`] (each agent's stream classified) |
//! | [`ops`] | what can a lead do? | [`ops::launch`] (its settings decided by [`ops::settings`]: flag > profile > brother > default), [`ops::sync`], [`ops::say`], [`ops::reopen`], [`ops::control`] (wait, cancel, logs, update), [`ops::doctor`], [`ops::board`] (backlog tasks, start, comment, the board and moves) |
//!
//! Beside them: [`delegate`] ([`Delegate`], the entry type that owns the pieces), [`task`]
//! (plain data: [`Task`], [`Run`], [`TaskStatus`], [`Sandbox`]), [`column`](mod@column) (the board's
//! columns and how a task's state places it), [`names`] (validated names,
//! safe in paths and tmux), [`schedule`] (when recurring tasks fire: specs, time zones, DST, catch-up)
//! and [`error`].

// Errors here are rare and carry the facts a reader needs (fingerprints, files, lines);
// their size on the cold path matters less than keeping them plain.
#![allow(clippy::result_large_err)]

pub mod agents;
pub mod column;
pub mod delegate;
pub mod error;
pub mod hosts;
pub mod mailbox;
pub mod names;
// Notifications: [notify] settings, task plans, delivery (command, webhook).
pub mod notify;
pub mod ops;
pub mod paths;
pub mod remote;
pub mod roles;
pub mod sanitize;
pub mod schedule;
pub mod task;
pub mod transport;
pub mod worker;

// The flat module paths of earlier releases, kept so embedders' imports still resolve.
#[doc(hidden)]
pub use agents as agent;
#[doc(hidden)]
pub use agents::outcome;
#[doc(hidden)]
pub use hosts::inventory as config;
#[doc(hidden)]
pub use hosts::user_file;
#[doc(hidden)]
pub use hosts::{known_hosts, ssh_config};
#[doc(hidden)]
pub use mailbox as store;
#[doc(hidden)]
pub use mailbox::row_caps;
#[doc(hidden)]
pub use mailbox::thread;
#[doc(hidden)]
pub use ops::{control, doctor, launch, reopen, say, sync, write_scope};
#[doc(hidden)]
pub use remote as runner;
#[doc(hidden)]
pub use remote::protocol as sync_protocol;
#[doc(hidden)]
pub use transport::{pool, ssh, warm};

pub use column::Column;
pub use delegate::{Delegate, Paths, Trusted};
pub use error::{Error, ErrorKind};
pub use launch::{LaunchRequest, MAX_PROMPT_BYTES};
pub use ops::board::Draft;
pub use store::ListFilter;
pub use task::{Priority, Run, Sandbox, Stale, Task, TaskStatus};
