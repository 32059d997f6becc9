//! Where a brother is: the inventory (hosts, brothers, custom agents), `~/.ssh/config` resolved
//! as OpenSSH would, and the known_hosts files that say which host keys to trust.

pub mod inventory;
pub mod known_hosts;
pub mod resolve;
pub mod ssh_config;
pub mod user_file;
