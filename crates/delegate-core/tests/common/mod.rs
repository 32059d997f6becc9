//! What the sshd tests share.

use delegate_core::transport::ssh::{SshTarget, Timeouts};
use delegate_testkit::FakeHost;

/// The test kit's host as a target: its key, its known_hosts, default timeouts.
pub fn target(host: &FakeHost) -> SshTarget {
    SshTarget {
        host: "h".into(),
        hostname: host.address().into(),
        port: host.port(),
        user: host.user().into(),
        identity_files: vec![host.client_key().to_path_buf()],
        certificate_files: vec![],
        agent_socket: None,
        identities_only: false,
        known_hosts: vec![host.known_hosts_file()],
        global_known_hosts: vec![],
        hash_known_hosts: false,
        host_key_alias: None,
        accept_new: false,
        timeouts: Timeouts::default(),
        route: Default::default(),
        system_ssh: None,
    }
}
