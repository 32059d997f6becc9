//! known_hosts content (written to a scratch file, since `check` reads files as ssh does),
//! looked up for a few hosts, ports and keys.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use delegate_core::hosts::known_hosts::{HostKeyStatus, PublicKey, check, recorded_algorithms};
use libfuzzer_sys::fuzz_target;

const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO1+bdUzA9khVpOlmitG4s3ipxrqL07tfRUNRrQaGtPQ";
const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBCmiwKN7FD8xaEQJR4hHk7W73k0+oTwB1pA/Dbs/261lPQJhjzBZ011jjRxsEU3I/8NjxTvjJ8VobsXkl4MIXTQ=";

fn file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("delegate-fuzz-kh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("known_hosts")
    })
}

fn keys() -> &'static [PublicKey; 2] {
    static KEYS: OnceLock<[PublicKey; 2]> = OnceLock::new();
    KEYS.get_or_init(|| [PublicKey::from_openssh(ED25519).unwrap(), PublicKey::from_openssh(ECDSA).unwrap()])
}

fuzz_target!(|data: &[u8]| {
    let path = file();
    std::fs::write(path, data).unwrap();
    let files = [path.clone()];
    for (host, port) in [("example.com", 22), ("example.com", 2222), ("EXAMPLE.com", 0), ("10.0.0.1", 22), ("", 22)] {
        for key in keys() {
            match check(&files, host, port, key).expect("a readable file") {
                HostKeyStatus::Changed { line, .. } | HostKeyStatus::Revoked { line, .. } => {
                    assert!(line >= 1 && line <= data.split(|b| *b == b'\n').count(), "line {line} out of range");
                }
                HostKeyStatus::Known | HostKeyStatus::Unknown => {}
            }
        }
        let _ = recorded_algorithms(&files, host, port).expect("a readable file");
    }
});
