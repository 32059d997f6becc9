//! owned by the ssh_config helper
