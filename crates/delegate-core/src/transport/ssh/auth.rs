//! Public-key authentication in OpenSSH's order (sshconnect2.c `pubkey_prepare`).
//!
//! The identities are, in the order offered:
//! 1. user certificates from `CertificateFile`;
//! 2. agent keys and certificates that are also an `IdentityFile` (or its `-cert.pub`), in
//!    the agent's order;
//! 3. the agent's other identities, certificates first, unless `IdentitiesOnly yes`;
//! 4. the `IdentityFile`s the agent does not hold, each followed by its `-cert.pub`.
//!
//! An `IdentityFile` is known by its public key, read like ssh reads it: the file itself (a
//! `.pub` stub, as 1Password, Secretive or a YubiKey setup leaves, or the unencrypted public
//! part of an OpenSSH private key, encrypted or not), then `<file>.pub`. So a key in the agent
//! is recognised without decrypting anything, and a server's `MaxAuthTries` is not spent on
//! keys meant for other hosts. Nothing secret reaches a message: only paths, agent comments,
//! key types and fingerprints.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use russh::client::Handle;
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{Certificate, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use tokio::net::UnixStream;

use super::{SshTarget, Verifier, key_label};
use crate::error::{Error, Result};

/// What an identity presents to the server.
#[derive(Clone)]
enum Offer {
    Key(PublicKey),
    Cert(Box<Certificate>),
}

impl Offer {
    fn same(&self, other: &Offer) -> bool {
        match (self, other) {
            (Offer::Key(a), Offer::Key(b)) => a.key_data() == b.key_data(),
            (Offer::Cert(a), Offer::Cert(b)) => a == b,
            _ => false,
        }
    }

    fn plain(&self) -> &KeyData {
        match self {
            Offer::Key(k) => k.key_data(),
            Offer::Cert(c) => c.public_key(),
        }
    }

    fn is_cert(&self) -> bool {
        matches!(self, Offer::Cert(_))
    }

    fn describe(&self) -> String {
        match self {
            Offer::Key(k) => key_label(k),
            Offer::Cert(c) => {
                let plain = PublicKey::new(c.public_key().clone(), "");
                format!("certificate ID \"{}\" for {}", c.key_id(), key_label(&plain))
            }
        }
    }
}

struct Identity {
    /// `None`: a file whose public key could not be read; only its private key can tell.
    offer: Option<Offer>,
    /// Where the private key is: the `IdentityFile` (also for its `-cert.pub`).
    file: Option<PathBuf>,
    /// The agent holds exactly this key or certificate.
    in_agent: Option<AgentIdentity>,
    /// For messages: a path or `ssh-agent key <comment>`.
    name: String,
}

/// The identities in the order ssh offers them; see the module comment.
fn prepare(t: &SshTarget, agent_ids: Vec<AgentIdentity>) -> Vec<Identity> {
    let mut files = Vec::new();
    for path in &t.identity_files {
        let offer = read_public(path).map(Offer::Key);
        files.push(Identity { offer, file: Some(path.clone()), in_agent: None, name: path.display().to_string() });
        if t.certificate_files.is_empty() {
            let cert_path = PathBuf::from(format!("{}-cert.pub", path.display()));
            if let Some(cert) = read_user_cert(&cert_path) {
                let name = cert_path.display().to_string();
                files.push(Identity { offer: Some(cert), file: Some(path.clone()), in_agent: None, name });
            }
        }
    }
    let mut preferred: Vec<Identity> = t
        .certificate_files
        .iter()
        .filter_map(|p| {
            let offer = read_user_cert(p)?;
            Some(Identity { offer: Some(offer), file: None, in_agent: None, name: p.display().to_string() })
        })
        .collect();
    let mut matched = Vec::new();
    let mut others = Vec::new();
    for id in agent_ids {
        let (offer, comment) = match &id {
            AgentIdentity::PublicKey { key, comment } => (Offer::Key(key.clone()), comment.clone()),
            AgentIdentity::Certificate { certificate, comment } => {
                (Offer::Cert(Box::new(certificate.clone())), comment.clone())
            }
        };
        // A CertificateFile the agent also holds is offered once, signed by the agent.
        if let Some(c) = preferred.iter_mut().find(|c| c.offer.as_ref().is_some_and(|o| o.same(&offer))) {
            c.in_agent = Some(id);
            continue;
        }
        if let Some(i) = files.iter().position(|f| f.offer.as_ref().is_some_and(|o| o.same(&offer))) {
            let mut f = files.remove(i);
            f.in_agent = Some(id);
            matched.push(f);
        } else if !t.identities_only {
            let kind = if offer.is_cert() { "certificate" } else { "key" };
            let fp = crate::hosts::known_hosts::fingerprint(&PublicKey::new(offer.plain().clone(), ""));
            let name = format!("ssh-agent {kind} {comment} ({fp})");
            others.push(Identity { offer: Some(offer), file: None, in_agent: Some(id), name });
        }
    }
    others.sort_by_key(|id| !id.offer.as_ref().is_some_and(Offer::is_cert)); // stable
    preferred.extend(matched);
    preferred.extend(others);
    preferred.extend(files);
    preferred
}

/// The public key of an IdentityFile, as ssh's `sshkey_load_public`: the file itself (a
/// public key, or an OpenSSH private key whose public part is stored unencrypted), then
/// `<file>.pub`. Never decrypts anything.
fn read_public(path: &Path) -> Option<PublicKey> {
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Ok(k) = PublicKey::from_openssh(text.trim()) {
            return Some(k);
        }
        if let Ok(k) = PrivateKey::from_openssh(text.trim()) {
            return Some(k.public_key().clone());
        }
        if let Ok(k) = russh::keys::decode_secret_key(&text, None) {
            return Some(k.public_key().clone());
        }
    }
    let text = std::fs::read_to_string(format!("{}.pub", path.display())).ok()?;
    PublicKey::from_openssh(text.trim()).ok()
}

/// A user certificate file (`ssh-keygen -s ... ` output); host certificates are skipped, as
/// ssh skips them.
fn read_user_cert(path: &Path) -> Option<Offer> {
    let text = std::fs::read_to_string(path).ok()?;
    let cert = Certificate::from_openssh(text.trim()).ok()?;
    (cert.cert_type() == CertType::User).then(|| Offer::Cert(Box::new(cert)))
}

/// Signs with the agent's plain key for a certificate the agent does not hold itself.
struct PlainKeyInAgent<'a> {
    agent: &'a mut AgentClient<UnixStream>,
    key: AgentIdentity,
}

impl russh::Signer for PlainKeyInAgent<'_> {
    type Error = russh::AgentAuthError;

    async fn auth_sign(
        &mut self,
        _cert: &AgentIdentity,
        hash_alg: Option<HashAlg>,
        to_sign: Vec<u8>,
    ) -> std::result::Result<Vec<u8>, Self::Error> {
        Ok(self.agent.sign_request(&self.key, hash_alg, to_sign).await?)
    }
}

enum Attempt {
    Accepted,
    Refused,
    /// Not offered; the note says why.
    Skipped(String),
}

/// Authenticates and says which identity worked. `disconnect` holds the reason the server
/// gave if it closed the connection (sshd: "Too many authentication failures").
pub(super) async fn authenticate(
    handle: &mut Handle<Verifier>,
    t: &SshTarget,
    disconnect: &Arc<Mutex<Option<String>>>,
) -> Result<String> {
    let mut tried = Vec::new();
    let mut agent = None;
    let mut agent_ids = Vec::new();
    if let Some(sock) = &t.agent_socket {
        match AgentClient::connect_uds(sock).await {
            Ok(mut a) => {
                agent_ids = a.request_identities().await.unwrap_or_default();
                if agent_ids.is_empty() {
                    tried.push("ssh-agent (holds no keys)".to_string());
                }
                agent = Some(a);
            }
            Err(e) => tried.push(format!("ssh-agent at {} ({e})", sock.display())),
        }
    }
    let plain_in_agent: Vec<AgentIdentity> =
        agent_ids.iter().filter(|i| matches!(i, AgentIdentity::PublicKey { .. })).cloned().collect();
    let identities = prepare(t, agent_ids);
    let mut offered = 0;
    for id in &identities {
        let attempt = attempt(handle, t, id, &identities, &plain_in_agent, agent.as_mut()).await;
        match attempt {
            Ok(Attempt::Accepted) => {
                let what = id.offer.as_ref().map(Offer::describe).unwrap_or_default();
                return Ok(if what.is_empty() { id.name.clone() } else { format!("{} ({what})", id.name) });
            }
            Ok(Attempt::Refused) => {
                offered += 1;
                tried.push(id.name.clone());
            }
            Ok(Attempt::Skipped(note)) => tried.push(format!("{} ({note})", id.name)),
            Err(_) => {
                offered += 1;
                tried.push(id.name.clone());
            }
        }
        if handle.is_closed() {
            break;
        }
    }
    if handle.is_closed() {
        let said = disconnect.lock().expect("disconnect reason").clone();
        // The link itself dropped mid-exchange: say so, so nobody goes looking at their keys.
        let Some(message) = said else {
            return Err(Error::Ssh { host: t.host.clone(), phase: "authenticating", source: russh::Error::Disconnect });
        };
        return Err(Error::AuthDisconnected { host: t.host.clone(), user: t.user.clone(), offered, message, tried });
    }
    Err(Error::AuthRefused { host: t.host.clone(), user: t.user.clone(), tried })
}

/// One identity offered once. Errors are the connection's (it closed under us).
async fn attempt(
    handle: &mut Handle<Verifier>,
    t: &SshTarget,
    id: &Identity,
    all: &[Identity],
    plain_in_agent: &[AgentIdentity],
    mut agent: Option<&mut AgentClient<UnixStream>>,
) -> std::result::Result<Attempt, Box<dyn std::error::Error + Send + Sync>> {
    let user = t.user.clone();
    let verdict = |ok: bool| if ok { Attempt::Accepted } else { Attempt::Refused };
    let hash = match &id.offer {
        Some(o) => rsa_hash(handle, o.plain()).await?,
        None => None,
    };
    // Held by the agent: the agent signs.
    if let Some(held) = &id.in_agent
        && let Some(agent) = agent.as_deref_mut()
    {
        let res = match held {
            AgentIdentity::PublicKey { key, .. } => {
                handle.authenticate_publickey_with(user, key.clone(), hash, agent).await?
            }
            AgentIdentity::Certificate { certificate, .. } => {
                handle.authenticate_certificate_with(user, certificate.clone(), hash, agent).await?
            }
        };
        return Ok(verdict(res.success()));
    }
    // A certificate whose plain key the agent holds.
    if let Some(Offer::Cert(cert)) = &id.offer
        && let Some(agent) = agent
        && let Some(key) = plain_in_agent.iter().find(|k| match k {
            AgentIdentity::PublicKey { key, .. } => key.key_data() == cert.public_key(),
            AgentIdentity::Certificate { .. } => false,
        })
    {
        let mut signer = PlainKeyInAgent { agent, key: key.clone() };
        let res = handle.authenticate_certificate_with(user, (**cert).clone(), hash, &mut signer).await?;
        return Ok(verdict(res.success()));
    }
    // Otherwise the private key comes from a file: the identity's own, or for a
    // CertificateFile, the IdentityFile with the certificate's key.
    let file = match (&id.file, &id.offer) {
        (Some(f), _) => f.clone(),
        (None, Some(offer)) => {
            let owner = all.iter().find(|o| {
                o.file.is_some() && o.offer.as_ref().is_some_and(|k| !k.is_cert() && k.plain() == offer.plain())
            });
            match owner.and_then(|o| o.file.clone()) {
                Some(f) => f,
                None => return Ok(Attempt::Skipped("no private key for it in ssh-agent or an IdentityFile".into())),
            }
        }
        (None, None) => return Ok(Attempt::Skipped("unreadable".into())),
    };
    let key = match load_private(&file) {
        Ok(k) => k,
        Err(note) => return Ok(Attempt::Skipped(note)),
    };
    if let Some(offer) = &id.offer
        && offer.plain() != key.public_key().key_data()
    {
        return Ok(Attempt::Skipped(format!("its key is not the one in {}", file.display())));
    }
    let hash = rsa_hash(handle, key.public_key().key_data()).await?;
    let res = match &id.offer {
        Some(Offer::Cert(cert)) => handle.authenticate_openssh_cert(user, Arc::new(key), (**cert).clone()).await?,
        _ => handle.authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash)).await?,
    };
    Ok(verdict(res.success()))
}

/// The private key in `path`, or why not (a note for the "tried" list).
fn load_private(path: &Path) -> std::result::Result<PrivateKey, String> {
    if !path.exists() {
        return Err("missing".into());
    }
    match russh::keys::load_secret_key(path, None) {
        Ok(k) => Ok(k),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            Err("encrypted: delegate does not ask for passphrases; add it to ssh-agent with ssh-add".into())
        }
        Err(_) if PublicKey::from_openssh(std::fs::read_to_string(path).unwrap_or_default().trim()).is_ok() => {
            Err("a public key only, and ssh-agent does not hold its private key".into())
        }
        Err(e) => Err(format!("unreadable: {e}")),
    }
}

async fn rsa_hash(handle: &Handle<Verifier>, key: &KeyData) -> std::result::Result<Option<HashAlg>, russh::Error> {
    if key.algorithm().is_rsa() { Ok(handle.best_supported_rsa_hash().await?.flatten()) } else { Ok(None) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn keygen(dir: &Path, name: &str, passphrase: &str) -> PublicKey {
        let path = dir.join(name);
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f"])
            .arg(&path)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        PublicKey::from_openssh(&std::fs::read_to_string(dir.join(format!("{name}.pub"))).unwrap()).unwrap()
    }

    fn target(files: Vec<PathBuf>, identities_only: bool) -> SshTarget {
        SshTarget { identity_files: files, identities_only, ..SshTarget::for_tests() }
    }

    fn agent_key(k: &PublicKey, comment: &str) -> AgentIdentity {
        AgentIdentity::PublicKey { key: k.clone(), comment: comment.into() }
    }

    #[test]
    fn agent_keys_of_identity_files_go_first_then_other_agent_keys_then_files() {
        let dir = std::env::temp_dir().join(format!("delegate-auth-order-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        keygen(&dir, "a", "");
        let b = keygen(&dir, "b", "secret");
        let c = keygen(&dir, "c", "");
        let other = keygen(&dir, "other", "");
        // b: encrypted, and its .pub gone: the public part still comes from the key file.
        std::fs::remove_file(dir.join("b.pub")).unwrap();
        // c: only the .pub stub on disk, named directly.
        std::fs::remove_file(dir.join("c")).unwrap();
        let files = vec![dir.join("a"), dir.join("b"), dir.join("c.pub")];
        let agent = vec![agent_key(&other, "other"), agent_key(&c, "c"), agent_key(&b, "b")];
        let names = |ids: Vec<Identity>| ids.into_iter().map(|i| i.name).collect::<Vec<_>>();
        let order = names(prepare(&target(files.clone(), false), agent.clone()));
        let p = |n: &str| dir.join(n).display().to_string();
        let other_name = format!("ssh-agent key other ({})", crate::hosts::known_hosts::fingerprint(&other));
        assert_eq!(order, vec![p("c.pub"), p("b"), other_name, p("a")]);
        let only = names(prepare(&target(files, true), agent));
        assert_eq!(only, vec![p("c.pub"), p("b"), p("a")]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
