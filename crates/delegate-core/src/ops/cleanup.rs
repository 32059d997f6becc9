//! `delegate cleanup N`: removes a finished task's git worktree (`--worktree`) with its
//! branch, and its `refs/delegate/<key>/*` refs, on the brother. Only when nothing would be
//! lost: the task's change is empty, or was fetched (`fetch` records the tree it brought
//! back; the change must still be that tree). Otherwise refused, saying why; `force`
//! throws the change away.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;

use crate::delegate::Delegate;
use crate::error::{Error, Result};
use crate::remote::diff::DiffMode;
use crate::sanitize::clean_line;
use crate::transport::ssh::Exit;

use crate::remote::CLEANUP_SH;
/// The mailbox note `fetch` leaves: `tree <id> ...`.
pub const FETCHED_NOTE: &str = "fetched";
/// Most bytes of the `--stat` diff read to decide whether there is a change.
const STAT_CAP: u64 = 1 << 20;

/// What a cleanup removed.
#[derive(Debug, Clone, Serialize)]
pub struct Cleanup {
    pub task: i64,
    /// The worktree removed, if the task had one that was still there.
    pub worktree: Option<String>,
    /// How many `refs/delegate/<key>/*` refs were deleted.
    pub refs: u64,
}

impl Delegate {
    /// Records that task `id`'s change as of `tree` was brought back (`fetch`), so a later
    /// `cleanup` knows it may remove the worktree.
    pub fn record_fetched(&mut self, id: i64, tree: &str, place: &str) -> Result<()> {
        let author = self.paths().local_user.clone();
        self.store_mut().add_note(id, &author, FETCHED_NOTE, &format!("tree {tree} {place}"))
    }

    /// Removes task `id`'s worktree and refs on its brother (see the module).
    pub async fn cleanup(&mut self, id: i64, force: bool) -> Result<Cleanup> {
        let task = self.task(id)?;
        let refused = |why: String| Error::CleanupRefused { task: id, why };
        if !task.status.is_terminal() {
            return Err(refused(format!(
                "it is {}: cancel it or wait for it to finish (`delegate cancel {id}`)",
                task.status
            )));
        }
        if !force {
            match self.diff(id, None, DiffMode::Stat, STAT_CAP).await {
                Ok(diff) if diff.changed() => {
                    let fetched = self.store().messages(id)?.iter().any(|m| {
                        m.direction == "note"
                            && m.kind == FETCHED_NOTE
                            && m.text.starts_with(&format!("tree {} ", diff.tree))
                    });
                    if !fetched {
                        return Err(refused(format!(
                            "its change (tree {}) was never fetched: `delegate fetch {id}` first, or `--force` to throw it away",
                            &diff.tree[..12.min(diff.tree.len())]
                        )));
                    }
                }
                Ok(_) | Err(Error::NothingToFetch { .. }) => {}
                Err(Error::DiffTooLarge { .. }) => {
                    return Err(refused(format!(
                        "its change is too large to check against what was fetched: `--force` to remove it anyway \
                         (`delegate fetch {id}` first to keep it)"
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        let worktree_of = task.settings["worktree_of"]["value"].as_str().unwrap_or("");
        let keys: Vec<String> =
            task.runs.iter().map(|r| crate::ops::sync::task_key(self.store().mailbox_id(), id, r.run_no)).collect();
        if keys.is_empty() {
            return Ok(Cleanup { task: id, worktree: None, refs: 0 });
        }
        let mut vars = Vec::new();
        for f in [task.workdir.as_str(), worktree_of].into_iter().chain(keys.iter().map(String::as_str)) {
            if f.contains('\0') {
                return Err(refused("the task's workdir holds a NUL byte".into()));
            }
            vars.extend_from_slice(f.as_bytes());
            vars.push(0);
        }
        let mut script = format!("DLG_VARS='{}'\n", B64.encode(&vars)).into_bytes();
        script.extend_from_slice(CLEANUP_SH.as_bytes());
        let reach = self.task_reach(task.id, &task.host)?;
        let (out, _) =
            self.transport().exec(&reach, crate::remote::REMOTE_COMMAND, &script, Duration::from_secs(120)).await?;
        let failed = |why: String| Error::DiffFailed { task: id, host: task.host.clone(), code: None, why };
        if out.exit != Exit::Code(0) {
            let said = crate::remote::parse_output(&[], &out.stderr).error;
            return Err(failed(match said {
                Some((code, message)) => format!("the cleanup script ended with {code}: {message}"),
                None => format!("the cleanup script ended with {:?}", out.exit),
            }));
        }
        // The brother's answer: one bounded line of two numbers, else refused.
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().rev().find(|l| l.starts_with("DELEGATE-CLEANUP ")).unwrap_or("");
        let nums: Vec<u64> = line.split(' ').skip(1).filter_map(|n| n.parse().ok()).collect();
        let [removed, refs] = nums[..] else {
            return Err(failed(format!("the cleanup script's reply is unusable: {}", clean_line(&text, 200))));
        };
        let worktree = (removed == 1 && !worktree_of.is_empty()).then(|| task.workdir.clone());
        let author = self.paths().local_user.clone();
        let what = match &worktree {
            Some(w) => format!("removed worktree {w} and {refs} ref(s)"),
            None => format!("removed {refs} ref(s)"),
        };
        self.store_mut().add_note(id, &author, "cleanup", &what)?;
        Ok(Cleanup { task: id, worktree, refs })
    }
}
