//! Black-box tests of the built `delegate` binary against real OpenSSH sshd hosts on
//! loopback (delegate-testkit), real tmux on each host, and a real SQLite mailbox.

mod support;

mod launch;
mod preflight;
mod ssh_errors;
mod auth;
mod faults;
mod prompts;
mod shell;
mod inventory;
