//! The operations a lead runs, each an `impl Delegate` block over the pieces in `hosts`,
//! `transport`, `remote`, `mailbox` and `agents`: launch, sync (and reading how runs ended),
//! talk (say, reopen with a write scope), control (wait, cancel, logs, update) and doctor.

pub mod board;
pub mod control;
pub mod doctor;
pub mod launch;
pub mod reopen;
pub mod say;
pub mod settings;
pub mod sync;
pub mod work_back;
pub mod write_scope;
