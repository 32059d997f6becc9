//! Connecting to the NATS server, and the streams delegate's subjects live in.
//!
//! Credentials come from a file, never from the URL or argv: a NATS `.creds` file (user
//! JWT and nkey seed, as `nsc` writes), an nkey seed file (`SU...`), or one line
//! `user:password`, or one line holding a token. The file's contents never appear in an
//! error, a log or the mailbox.

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::wire;
use crate::error::{Error, Result};

/// How long connecting may take before it is an error (the server is down or unreachable).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn nats_err(url: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config {
        path: "(nats)".into(),
        message: format!("{what} at {}: {e}", crate::sanitize::clean_line(url, 200)),
    }
}

/// Connects to `url` with the credentials in `creds` (see the module comment).
pub async fn connect(url: &str, creds: Option<&Path>) -> Result<async_nats::Client> {
    let mut opts = async_nats::ConnectOptions::new()
        .connection_timeout(CONNECT_TIMEOUT)
        .name(concat!("delegate ", env!("CARGO_PKG_VERSION")));
    if let Some(path) = creds {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: format!("cannot read the NATS credentials file: {e}"),
        })?;
        let trimmed = text.trim();
        opts = if trimmed.contains("-----BEGIN NATS USER JWT-----") {
            async_nats::ConnectOptions::with_credentials(trimmed)
                .map_err(|_| Error::Config {
                    path: path.to_path_buf(),
                    message: "not a valid NATS .creds file (a user JWT and an nkey seed)".into(),
                })?
                .connection_timeout(CONNECT_TIMEOUT)
        } else if trimmed.starts_with("SU") && !trimmed.contains(char::is_whitespace) {
            opts.nkey(trimmed.to_string())
        } else if let Some((user, password)) = trimmed.split_once(':')
            && !trimmed.contains('\n')
        {
            opts.user_and_password(user.to_string(), password.to_string())
        } else if !trimmed.is_empty() && !trimmed.contains('\n') {
            opts.token(trimmed.to_string())
        } else {
            return Err(Error::Config {
                path: path.to_path_buf(),
                message: "the NATS credentials file must hold a .creds JWT and seed, an nkey seed (SU...), user:password, or a token".into(),
            });
        };
    }
    opts.connect(url).await.map_err(|e| nats_err(url, "cannot connect to the NATS server", e))
}

/// Makes sure delegate's two streams exist (creating them needs the JetStream API
/// permission; where the user lacks it, an administrator creates them once, see the README).
pub async fn ensure_streams(js: &jetstream::Context, url: &str) -> Result<()> {
    let configs = [
        stream::Config {
            name: wire::TASKS_STREAM.into(),
            subjects: vec![wire::TASKS_SUBJECTS.into()],
            // A task is gone once a worker acknowledged it; replicas share one consumer.
            retention: stream::RetentionPolicy::WorkQueue,
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        },
        stream::Config {
            name: wire::RESULTS_STREAM.into(),
            subjects: vec![wire::RESULTS_SUBJECTS.into()],
            retention: stream::RetentionPolicy::Limits,
            max_age: Duration::from_secs(30 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        },
    ];
    for config in configs {
        let name = config.name.clone();
        js.get_or_create_stream(config).await.map_err(|e| nats_err(url, &format!("cannot open stream {name}"), e))?;
    }
    Ok(())
}
