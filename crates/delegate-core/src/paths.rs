//! [`Paths`]: everything the library needs from the outside world, decided by the caller (the
//! CLI reads the environment for these; the library reads none).

use std::path::PathBuf;

/// Where things live, decided by the caller (the CLI reads the environment for these).
#[derive(Debug, Clone)]
pub struct Paths {
    pub config_file: PathBuf,
    /// The mailbox directory.
    pub data_dir: PathBuf,
    /// The local home directory, for `~/` in the inventory and `~/.ssh`.
    pub home: PathBuf,
    pub local_user: String,
    /// OpenSSH client config; usually `<home>/.ssh/config`. A missing file is fine.
    pub ssh_config: PathBuf,
    /// ssh-agent socket (`SSH_AUTH_SOCK`), if any.
    pub agent_socket: Option<PathBuf>,
}
