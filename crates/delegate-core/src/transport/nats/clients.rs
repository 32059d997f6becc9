//! NATS connections kept for reuse, one per (server URL, credentials file), like the SSH
//! pool keeps one connection per host: a fan-out to several NATS hosts on one server, or a
//! sync followed by a `say`, connects once. async-nats reconnects a kept connection by
//! itself after a server restart.

use std::collections::HashMap;
use std::path::PathBuf;

use super::{NatsTarget, connect};
use crate::error::{Error, Result};

type Key = (String, Option<PathBuf>);

#[derive(Default)]
pub struct Clients {
    held: tokio::sync::Mutex<HashMap<Key, async_nats::Client>>,
}

impl Clients {
    /// A connection to `t`'s server with its credentials, opened if none is held.
    pub async fn client(&self, t: &NatsTarget) -> Result<async_nats::Client> {
        let key = (t.url.clone(), t.creds.clone());
        let mut held = self.held.lock().await;
        if let Some(c) = held.get(&key) {
            if c.connection_state() != async_nats::connection::State::Disconnected {
                return Ok(c.clone());
            }
            // Connected once but not now: a fresh connect says why (it may be down).
            held.remove(&key);
        }
        let client = connect::connect(&t.url, t.creds.as_deref()).await.map_err(|e| as_nats_error(t, e))?;
        held.insert(key, client.clone());
        Ok(client)
    }

    /// Drains and drops every held connection.
    pub async fn close_all(&self) {
        let held: Vec<async_nats::Client> = self.held.lock().await.drain().map(|(_, c)| c).collect();
        for c in held {
            let _ = c.drain().await;
        }
    }
}

/// A failure to connect is a NATS error (exit 49); an unreadable or malformed credentials
/// file stays a configuration error (exit 3) naming the file.
pub fn as_nats_error(t: &NatsTarget, e: Error) -> Error {
    match e {
        Error::Config { path, message } if path.as_os_str() == "(nats)" => Error::Nats {
            host: t.host.clone(),
            url: t.url.clone(),
            what: format!("{message}; check that the server runs and that the credentials in `creds` are accepted"),
        },
        other => other,
    }
}

/// What a JetStream call's error means for `t`: a permission the lead's NATS user lacks
/// is named with its fix.
pub fn js_error(t: &NatsTarget, doing: &str, e: impl std::fmt::Display) -> Error {
    let text = crate::sanitize::clean_line(&e.to_string(), 300);
    let hint = if text.to_ascii_lowercase().contains("permission") || text.contains("authorization") {
        " (the lead's NATS user lacks a permission: see \"NATS permissions\" in the README)"
    } else {
        ""
    };
    Error::Nats { host: t.host.clone(), url: t.url.clone(), what: format!("{doing}: {text}{hint}") }
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clients")
    }
}
