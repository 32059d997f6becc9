//! SSH connections kept for reuse: at most one per host, shared by every command sent to
//! it. A fan-out to several brothers on one host, or a sync followed by a launch, opens one
//! connection and runs each command on its own channel over it (sshd's MaxSessions, 10 by
//! default, bounds how many run at once; more wait for a channel, see `ssh::slots`).
//!
//! Before each use a held connection's host key, and every bastion's, is checked again
//! against known_hosts as it is then (`Session::recheck_host_key`): a key revoked or
//! changed while a warm daemon or an MCP server held the connection stops the next command.
//!
//! Reuse is only safe where it cannot double anything: a connection that turns out to be
//! dead fails when a channel is opened, before a byte of the command was sent, and only
//! then is the command retried once on a fresh connection.
//!
//! A pool may hand its execs to a warm daemon (see [`crate::transport::warm`]), which holds the
//! connections across processes; when the daemon is not available it connects itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::transport::ssh::{ConnectTimings, ExecOutput, Recheck, Session, SshTarget};
use crate::transport::warm::{WarmClient, WarmOutcome};

/// One slot per host; its async lock makes concurrent callers for the same host wait for
/// one connect instead of each opening their own, while other hosts connect in parallel.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Session>>>>;

#[derive(Default)]
pub struct Pool {
    slots: Mutex<HashMap<String, Slot>>,
    warm: Option<WarmClient>,
    /// Every script gets its own exec, as before the resident shell (the CLI's
    /// `DELEGATE_RESIDENT=0`; a benchmark comparator).
    exec_per_command: AtomicBool,
}

/// How the connection for one exec was obtained: `Some` timings when it was opened for it;
/// `warm` when a warm daemon held it.
#[derive(Debug, Clone)]
pub struct Connection {
    pub fresh: Option<ConnectTimings>,
    pub warm: bool,
}

impl Pool {
    pub fn new() -> Pool {
        Pool::default()
    }

    /// A pool that sends its execs through a warm daemon, connecting directly only when
    /// the daemon is not available.
    pub fn with_warm(warm: WarmClient) -> Pool {
        Pool { warm: Some(warm), ..Pool::default() }
    }

    /// `false`: every script on this pool's own connections gets its own exec, as before
    /// the resident shell (see `ssh::resident`).
    pub fn set_resident(&self, on: bool) {
        self.exec_per_command.store(!on, Ordering::Relaxed);
    }

    /// How many hosts have an open connection right now.
    pub fn live_connections(&self) -> usize {
        let slots = self.slots.lock().expect("pool lock");
        slots
            .values()
            .filter(|slot| slot.try_lock().map_or(true, |held| held.as_ref().is_some_and(|s| !s.is_closed())))
            .count()
    }

    /// Connections are keyed by everything that decides where and as whom we log in, so a
    /// changed inventory never reuses a connection made for the old entry.
    fn key(t: &SshTarget) -> String {
        let route = serde_json::to_string(&t.route).unwrap_or_default();
        format!("{}\0{}\0{}\0{}\0{route}", t.host, t.user, t.hostname, t.port)
    }

    fn slot(&self, t: &SshTarget) -> Slot {
        let mut slots = self.slots.lock().expect("pool lock");
        slots.entry(Pool::key(t)).or_default().clone()
    }

    /// A live connection to `t`, opened if there is none.
    pub async fn session(&self, t: &SshTarget) -> Result<(Arc<Session>, Connection)> {
        let slot = self.slot(t);
        let mut held = slot.lock().await;
        if let Some(s) = held.as_ref()
            && !s.is_closed()
            && same_keepalive(s.target(), t)
        {
            // Held for minutes by a warm daemon or an MCP server: the host key (and every
            // bastion's) is checked again against known_hosts as it is now, before each use.
            match s.recheck_host_key(t) {
                Recheck::Trusted => return Ok((s.clone(), Connection { fresh: None, warm: false })),
                Recheck::Refused(e) => {
                    // Nothing more goes to a host known_hosts no longer vouches for: the
                    // connection ends now, commands still running on it included.
                    let s = held.take().expect("checked above");
                    s.disconnect().await;
                    return Err(e);
                }
                Recheck::Reconnect => {}
            }
        }
        // A dead connection, one whose keepalives no longer match what ssh_config asks for
        // now (a warm daemon outlives config edits), or one a fresh connect would ask for
        // other host keys: replaced. Dropping our reference ends it once execs still running
        // on it finish.
        *held = None;
        let s = Arc::new(Session::connect(t).await?);
        *held = Some(s.clone());
        let timings = s.timings.clone();
        Ok((s, Connection { fresh: Some(timings), warm: false }))
    }

    /// Runs `command` on a pooled connection to `t`. A reused connection that fails to
    /// open a channel, or does not answer the open in time (nothing was sent either way), is
    /// dropped and the command tried once more on a fresh one.
    pub async fn exec(
        &self,
        t: &SshTarget,
        command: &str,
        stdin: &[u8],
        limit: Duration,
    ) -> Result<(ExecOutput, Connection)> {
        // `transport = "ssh"`: the system ssh holds no connection of ours to keep warm.
        if let Some(argv) = &t.system_ssh {
            let out = crate::transport::ssh::system::exec(
                t,
                argv,
                command,
                stdin,
                limit,
                crate::transport::ssh::MAX_EXEC_OUTPUT,
            )
            .await?;
            return Ok((out, Connection { fresh: Some(ConnectTimings::default()), warm: false }));
        }
        if let Some(warm) = &self.warm {
            match warm.exec(t, command, stdin, limit).await {
                WarmOutcome::Done(result) => return result,
                // Nothing ran: connect ourselves.
                WarmOutcome::Unavailable(_) => {}
            }
        }
        let (session, conn) = self.session(t).await?;
        match self.run(&session, command, stdin, limit).await {
            Err(
                Error::Ssh { phase: "opening a channel", .. }
                | Error::Timeout { phase: "opening a channel", .. }
                | Error::ChannelRefused { .. },
            ) if conn.fresh.is_none() => {
                self.forget(t, &session);
                let (session, conn) = self.session(t).await?;
                Ok((self.run(&session, command, stdin, limit).await?, conn))
            }
            other => Ok((other?, conn)),
        }
    }

    /// delegate's scripts go through the connection's resident shell (see
    /// `ssh::resident`); any other command gets its own exec.
    async fn run(&self, session: &Arc<Session>, command: &str, stdin: &[u8], limit: Duration) -> Result<ExecOutput> {
        if !self.exec_per_command.load(Ordering::Relaxed) && command == crate::remote::REMOTE_COMMAND {
            session.run_script(stdin, limit).await
        } else {
            session.exec(command, stdin, limit).await
        }
    }

    /// Drops `session` from the pool if it is still the one held for `t`.
    fn forget(&self, t: &SshTarget, session: &Arc<Session>) {
        let slot = self.slot(t);
        if let Ok(mut held) = slot.try_lock()
            && held.as_ref().is_some_and(|s| Arc::ptr_eq(s, session))
        {
            *held = None;
        }
    }

    /// Lets go of the connection held for `t`, if any (not while another caller is
    /// connecting it): after a command on it was abandoned unanswered, whatever still runs
    /// on that connection ends with it instead of holding one of its channels.
    pub fn drop_connection(&self, t: &SshTarget) {
        if let Ok(mut held) = self.slot(t).try_lock() {
            *held = None;
        }
    }

    /// Says goodbye on every held connection.
    pub async fn close_all(&self) {
        let slots: Vec<Slot> = self.slots.lock().expect("pool lock").drain().map(|(_, s)| s).collect();
        for slot in slots {
            if let Some(s) = slot.lock().await.take() {
                s.disconnect().await;
            }
        }
    }
}

/// A live connection carries the keepalive settings it was opened with (russh fixes them at
/// connect). Those decide how soon a silent host is noticed (or that no keepalive is ever
/// sent), so a connection is only reused for a target that asks for the same ones.
fn same_keepalive(held: &SshTarget, wanted: &SshTarget) -> bool {
    let (a, b) = (&held.timeouts, &wanted.timeouts);
    (a.keepalive_interval, a.keepalive_max) == (b.keepalive_interval, b.keepalive_max)
}
