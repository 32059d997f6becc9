//! How fresh a task's state is: each host's latest sync outcome is recorded, so a task whose
//! host stopped answering is shown with its last known state marked [`Stale`], by every
//! command and across processes (a later `--no-sync` listing still says so).

use rusqlite::params;

use super::{Store, now};
use crate::error::Result;
use crate::task::{Stale, TaskStatus};

/// At most this many characters of why a host's sync failed are kept: the reason can carry
/// what the brother wrote on stderr, which is untrusted.
const MAX_WHY_CHARS: usize = 300;

impl Store {
    /// Records how a sync of `host` went: `None` when it answered, else why it did not.
    ///
    /// An answer is written only when it changes what [`stale`] says: the host's first, or
    /// the first since a failure. A host answering poll after poll then costs no commit
    /// (SQLite syncs nothing for a statement that changed no row): `answered_at` is read
    /// only against `failed_at`, and the tasks' own `synced_at` says when each was heard of.
    pub fn record_host_sync(&mut self, host: &str, failure: Option<&str>) -> Result<()> {
        let at = now();
        match failure {
            None => self.conn.execute(
                "INSERT INTO host_syncs (host, answered_at) VALUES (?1, ?2)
                 ON CONFLICT (host) DO UPDATE SET answered_at = excluded.answered_at
                 WHERE host_syncs.answered_at IS NULL OR host_syncs.failed_at >= host_syncs.answered_at",
                params![host, at],
            )?,
            Some(why) => {
                let why =
                    crate::sanitize::clip(&crate::sanitize::printable(why).replace(['\n', '\t'], " "), MAX_WHY_CHARS);
                self.conn.execute(
                    "INSERT INTO host_syncs (host, failed_at, error) VALUES (?1, ?2, ?3)
                     ON CONFLICT (host) DO UPDATE SET failed_at = excluded.failed_at, error = excluded.error",
                    params![host, at, why],
                )?
            }
        };
        Ok(())
    }
}

/// The columns [`stale`] needs, as scalar subqueries on `tasks` (a join would make the
/// task columns' names ambiguous).
pub(super) const HOST_SYNC_COLUMNS: &str = "(SELECT answered_at FROM host_syncs s WHERE s.host = tasks.host),
     (SELECT failed_at FROM host_syncs s WHERE s.host = tasks.host),
     (SELECT error FROM host_syncs s WHERE s.host = tasks.host)";

/// A task is stale when sync covers its status (started, not finished), its host's latest
/// sync failed after the host last answered, and after this task was last heard of (a task
/// launched since then is fresh: the launch was an answer).
pub(super) fn stale(
    status: TaskStatus,
    synced_at: Option<&str>,
    updated_at: &str,
    answered_at: Option<&str>,
    failed_at: Option<String>,
    why: Option<String>,
) -> Option<Stale> {
    let synced = !status.is_terminal() && !matches!(status, TaskStatus::Queued | TaskStatus::Backlog);
    let failed_at = failed_at?;
    let last_heard_at = synced_at.unwrap_or(updated_at);
    // All timestamps are the lead's, in one RFC 3339 shape: they compare as text.
    let latest_failed = failed_at.as_str() > answered_at.unwrap_or("") && failed_at.as_str() > last_heard_at;
    (synced && latest_failed).then(|| Stale {
        last_heard_at: last_heard_at.to_string(),
        failed_at,
        why: why.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "2026-12-06T18:00:00.000Z";
    const T2: &str = "2026-12-06T18:05:00.000Z";
    const T3: &str = "2026-12-06T18:10:00.000Z";

    fn s(status: TaskStatus, synced: Option<&str>, answered: Option<&str>, failed: Option<&str>) -> Option<Stale> {
        stale(status, synced, T1, answered, failed.map(str::to_string), Some("h did not answer".into()))
    }

    #[test]
    fn a_task_is_stale_only_when_its_hosts_latest_sync_failed_after_it_was_heard_of() {
        let stale = s(TaskStatus::Running, Some(T2), Some(T2), Some(T3)).expect("failed after the last answer");
        assert_eq!((stale.last_heard_at.as_str(), stale.failed_at.as_str()), (T2, T3));
        assert_eq!(stale.why, "h did not answer");
        // Never synced: last heard of at its launch (updated_at).
        assert_eq!(s(TaskStatus::Launched, None, None, Some(T3)).unwrap().last_heard_at, T1);
        // The host answered since it failed.
        assert_eq!(s(TaskStatus::Running, Some(T3), Some(T3), Some(T2)), None);
        // Never failed.
        assert_eq!(s(TaskStatus::Running, Some(T2), Some(T2), None), None);
        // Heard of (launched) after the failure.
        assert_eq!(s(TaskStatus::Launched, Some(T3), Some(T1), Some(T2)), None);
        // Finished or queued tasks are not synced: their state is not the host's to update.
        assert_eq!(s(TaskStatus::Completed, Some(T1), Some(T1), Some(T3)), None);
        assert_eq!(s(TaskStatus::Queued, None, None, Some(T3)), None);
    }
}
