//! The floor: a bare russh client with nothing of delegate on top (no mailbox, no
//! known_hosts logic, no pool), to measure what an exec costs on the same connection type.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use russh::ChannelMsg;
use russh::client::{self, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};

pub struct AcceptAll;

impl client::Handler for AcceptAll {
    type Error = russh::Error;
    async fn check_server_key(&mut self, _key: &PublicKeyOrCertificate) -> Result<bool, russh::Error> {
        // A floor measurement against our own loopback sshd; delegate itself checks keys.
        Ok(true)
    }
}

pub struct Bare {
    handle: Handle<AcceptAll>,
}

impl Bare {
    pub async fn connect(port: u16, user: &str, key: &Path, nodelay: bool) -> Result<Bare> {
        let config = client::Config { nodelay, ..Default::default() };
        let mut handle = client::connect(Arc::new(config), ("127.0.0.1", port), AcceptAll).await?;
        let key = russh::keys::load_secret_key(key, None).context("client key")?;
        let r = handle.authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), None)).await?;
        if !r.success() {
            bail!("bare russh: authentication refused");
        }
        Ok(Bare { handle })
    }

    /// One channel, one exec with `stdin` and EOF, read to the end; returns (exit, stdout).
    pub async fn exec(&self, command: &str, stdin: &[u8]) -> Result<(Option<u32>, Vec<u8>)> {
        let mut ch = self.handle.channel_open_session().await?;
        ch.exec(true, command).await?;
        if !stdin.is_empty() {
            ch.data(stdin).await?;
        }
        ch.eof().await?;
        let mut out = Vec::new();
        let mut code = None;
        let read = async {
            while let Some(msg) = ch.wait().await {
                match msg {
                    ChannelMsg::Data { data } => out.extend_from_slice(&data),
                    ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                    _ => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read).await.context("bare russh exec timed out")?;
        Ok((code, out))
    }

    pub async fn close(self) {
        let _ = self.handle.disconnect(russh::Disconnect::ByApplication, "", "en").await;
    }
}
