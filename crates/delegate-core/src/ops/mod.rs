//! The operations a lead runs, each an `impl Delegate` block over the pieces in `hosts`,
//! `transport`, `remote`, `mailbox` and `agents`: launch, sync (and reading how runs ended),
//! talk (say, reopen with a write scope), control (wait, cancel, logs, update), doctor and notify (delivering and listing
//! notifications).

pub mod agentbus;
pub mod artifacts;
pub mod board;
pub mod cleanup;
pub mod control;
pub mod dispatch;
pub mod doctor;
pub mod inbox;
pub mod launch;
pub mod nats;
mod nats_doctor;
// Environments: which brother of a group a launch goes to.
pub mod notify;
pub mod placement;
pub mod reopen;
pub mod say;
pub mod schedule;
pub mod settings;
pub mod sync;
pub mod work_back;
pub mod write_scope;
