//! owned by the known_hosts helper
