//! The work comes back, as MCP tools: get_diff (what a task changed in its workdir since its
//! launch) and fetch_result (the change as a patch: its text, a file, or applied to a local
//! checkout). The same library calls as `delegate diff` and `delegate fetch`.

use std::path::PathBuf;

use delegate_core::ops::work_back::{SHOW_CAP, apply_patch, sha256_hex, write_patch};
use delegate_core::remote::diff::DiffMode;

use super::*;

/// The largest patch fetch_result returns as text (under a result's size, so never cut).
const MAX_INLINE_PATCH: usize = 16_000;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GetDiffArgs {
    /// The task number.
    id: i64,
    /// Only the files changed with their line counts (default false: the whole diff).
    stat: Option<bool>,
    /// Since the launch of this run (default: the task's first, so its whole change).
    run: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FetchResultArgs {
    /// The task number.
    id: i64,
    /// Since the launch of this run (default: the task's first, so its whole change).
    run: Option<i64>,
    /// Write the patch to this directory as task-N.patch (an absolute path on this machine).
    into: Option<String>,
    /// Apply the change to the local checkout at this path (all of it or nothing).
    apply_to: Option<String>,
}

#[tool_router(router = work_router, vis = "pub(super)")]
impl DelegateServer {
    /// What a task changed in its workdir on the brother since its launch: committed and uncommitted changes and
    /// new files, binary files named. Works for running, finished, failed, cancelled and lost tasks. Long diffs
    /// are cut (use stat, or fetch_result with into).
    #[tool(annotations(read_only_hint = true, open_world_hint = true))]
    async fn get_diff(&self, Parameters(a): Parameters<GetDiffArgs>) -> Reply {
        let mut d = self.delegate().await?;
        let mode = if a.stat.unwrap_or(false) { DiffMode::Stat } else { DiffMode::Patch };
        let diff = d.diff(a.id, a.run, mode, SHOW_CAP).await.map_err(|e| fail(&e))?;
        let mut v = serde_json::to_value(&diff).unwrap_or_default();
        v["changed"] = diff.changed().into();
        v["diff"] = String::from_utf8_lossy(&diff.bytes).into();
        Ok(text_result(&v, &format!("`delegate diff {}`, or fetch_result with into", a.id)))
    }

    /// A task's change as a binary-safe patch (git diff --binary), hash-checked: its text (up to 16000 bytes), or
    /// written to into/task-N.patch, or applied to the checkout at apply_to (checked first: a change that does
    /// not apply is refused with the files named, and nothing is applied). No git credentials on the brother.
    #[tool(annotations(destructive_hint = false, open_world_hint = true))]
    async fn fetch_result(&self, Parameters(a): Parameters<FetchResultArgs>) -> Reply {
        if a.into.is_some() && a.apply_to.is_some() {
            return Err(bad_args("fetch_result", "into and apply_to exclude each other: give one, or neither"));
        }
        let mut d = self.delegate().await?;
        let diff = d.fetch_patch(a.id, a.run).await.map_err(|e| fail(&e))?;
        let mut v = serde_json::to_value(&diff).unwrap_or_default();
        v["sha256"] = sha256_hex(&diff.bytes).into();
        if let Some(dir) = a.into {
            v["path"] = write_patch(&PathBuf::from(dir), &diff).map_err(|e| fail(&e))?.display().to_string().into();
        } else if let Some(repo) = a.apply_to {
            v["applied_to"] =
                apply_patch(&PathBuf::from(repo), &diff).map_err(|e| fail(&e))?.display().to_string().into();
        } else if diff.bytes.len() <= MAX_INLINE_PATCH {
            v["patch"] = String::from_utf8_lossy(&diff.bytes).into();
        } else {
            // Half a patch is no patch: a long one goes to a file, never cut.
            v["note"] = format!(
                "the patch is {} bytes, over the {MAX_INLINE_PATCH} a result carries: call fetch_result again with \
                 into (a directory) or apply_to (a checkout)",
                diff.bytes.len()
            )
            .into();
        }
        // A change written or applied on the lead is safe there: `cleanup` may remove it.
        if let Some(place) = v.get("path").or(v.get("applied_to")).and_then(|p| p.as_str()).map(String::from) {
            d.record_fetched(diff.task, &diff.tree, &place).map_err(|e| fail(&e))?;
        }
        Ok(text_result(&v, &format!("`delegate fetch {} --into DIR`", a.id)))
    }
}
