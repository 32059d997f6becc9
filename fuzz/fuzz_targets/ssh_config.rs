//! An ssh_config file (written as `~/.ssh/config` of a scratch home, since `resolve` reads
//! files as ssh does), resolved for a few hosts.
//!
//! `Include` reads other files: inputs that could reach outside the scratch home (absolute
//! paths, `~`, `%` tokens, `$` variables) are skipped, so the fuzzer never opens
//! `/dev/zero` or walks the real file system.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use delegate_core::hosts::ssh_config::{SshConfigQuery, resolve};
use libfuzzer_sys::fuzz_target;

fn home() -> &'static PathBuf {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("delegate-fuzz-ssh-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(".ssh/conf.d")).unwrap();
        std::fs::write(dir.join(".ssh/conf.d/10-web.conf"), "Host web\n  HostName web.example\n  Port 2201\n").unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let lower = data.to_ascii_lowercase();
    if lower.windows(7).any(|w| w == b"include") && data.iter().any(|b| b"/~%$".contains(b) || *b == b'.') {
        return;
    }
    let home = home();
    let config = home.join(".ssh/config");
    std::fs::write(&config, data).unwrap();
    for host in ["web", "example.com", "Alias", "10.0.0.1"] {
        let q = SshConfigQuery { host, config_file: &config, home, local_user: "fuzz", user: None, port: None };
        let _ = resolve(&q);
    }
});
