//! Black-box tests of the built `delegate` binary against real OpenSSH sshd hosts on
//! loopback (delegate-testkit), real tmux on each host, and a real SQLite mailbox.

mod support;

mod auth;
mod board;
mod bounds;
mod cancel_race;
mod doctor;
mod durations;
mod fanout;
mod faults;
mod file_modes;
mod host_keys;
mod hostile_text;
mod inventory;
mod kill_phases;
mod launch;
mod lifecycle;
mod local_disk;
mod log_canary;
mod mcp;
mod net_faults;
mod no_forwarding;
mod pipes;
mod preflight;
mod profiles;
mod prompts;
mod real_agents;
mod reopen;
mod results;
mod roles;
mod route;
mod rows;
mod say;
mod shell;
mod ssh_errors;
mod stale;
mod supply_chain;
mod usage;
mod warm;
mod work_back;
