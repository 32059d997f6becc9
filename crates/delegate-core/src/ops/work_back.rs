//! The work comes back: what a task changed in its workdir since its launch (`diff`), as a
//! patch file or applied to a local checkout (`fetch`).
//!
//! At launch the brother stores the workdir's files as a commit (`refs/delegate/<task
//! key>/base`, see `remote/scripts/launch.sh`: git_state) and the launch evidence records
//! it. A diff compares that base with the workdir's files now, staged into a private index
//! on the brother (`remote/scripts/diff.sh`), over the same connection as every other
//! command: no git credentials, no push, nothing changed in the brother's index or branch.
//! The reply is checked whole (length, SHA-256 computed again here) before it is used.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::delegate::Delegate;
use crate::error::{Error, Result};
use crate::remote::diff::{DiffMode, hex, is_object_id};
use crate::sanitize::clean_line;
use crate::task::Run;
use crate::transport::ssh::Exit;

/// Most bytes of a diff shown (`delegate diff`, the MCP `get_diff`): more is for `fetch`.
pub const SHOW_CAP: u64 = 8 << 20;
/// Most bytes of a patch `fetch` carries (in chunks), and held in memory.
pub const FETCH_CAP: u64 = 256 << 20;
/// Most bytes of the `--stat` diff `done_without_evidence` reads: any change is enough.
const STAT_CHECK_CAP: u64 = 1 << 20;
/// Most bytes of a diff one exec answers: under the exec cap
/// ([`crate::transport::ssh::MAX_EXEC_OUTPUT`]), so a reply is never cut.
const CHUNK: u64 = 32 << 20;

/// What a task changed since the launch of one of its runs.
#[derive(Debug, Clone, Serialize)]
pub struct TaskDiff {
    pub task: i64,
    /// The run whose launch is the base.
    pub run: i64,
    /// The commit holding the workdir's files at that launch, and its tree.
    pub base: String,
    pub base_tree: String,
    /// The tree of the workdir's files now (equal to `base_tree`: nothing changed).
    pub tree: String,
    /// The diff's size and SHA-256 (computed on the brother and checked here).
    pub size: u64,
    pub sha256: String,
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

impl TaskDiff {
    pub fn changed(&self) -> bool {
        self.base_tree != self.tree
    }
}

/// The workdir's git state a run's launch evidence records, for `show`: one line, or None
/// when the launch recorded none. Ids must be git object ids and the rest is cleaned to one
/// bounded line: the brother wrote it.
pub fn git_state_line(evidence: &serde_json::Value) -> Option<String> {
    let git = &evidence["remote"]["git"];
    let state = git["state"].as_str()?;
    if state != "repo" {
        return Some(clean_line(state, 60));
    }
    let id = |k: &str| git[k].as_str().filter(|s| is_object_id(s));
    let head = id("head").map(|h| h[..12].to_string()).unwrap_or_else(|| "no commit yet".into());
    let branch = git["branch"].as_str().filter(|b| !b.is_empty()).map(|b| clean_line(b, 200));
    let branch = branch.map(|b| format!("branch {b}")).unwrap_or_else(|| "detached HEAD".into());
    let clean = match git["clean"].as_bool() {
        Some(true) => "clean",
        Some(false) => "uncommitted changes (kept in the base)",
        None => "clean: unknown",
    };
    let base = id("base").map(|b| format!(", base {}", &b[..12])).unwrap_or_default();
    Some(format!("HEAD {head} on {branch}, {clean}{base}"))
}

impl Delegate {
    /// What task `id` changed in its workdir since the launch of run `run` (default: its
    /// first run with a git base, so the whole task's change), as `mode` shows it, up to
    /// `cap` bytes ([`Error::DiffTooLarge`] past it). Works whatever the task's state:
    /// running, finished, failed, cancelled or lost.
    pub async fn diff(&mut self, id: i64, run: Option<i64>, mode: DiffMode, cap: u64) -> Result<TaskDiff> {
        let task = self.task(id)?;
        let chosen = match run {
            Some(n) => task.runs.iter().find(|r| r.run_no == n).ok_or_else(|| Error::NothingToFetch {
                task: id,
                why: format!("it has no run {n} (runs: {})", task.runs.len()),
            })?,
            None => task
                .runs
                .iter()
                .find(|r| r.evidence["remote"]["git"]["state"].as_str() == Some("repo"))
                .or(task.runs.first())
                .ok_or_else(|| Error::NothingToFetch { task: id, why: "it never ran: nothing changed".into() })?,
        };
        let base = launch_base(id, chosen)?;
        let reach = self.task_reach(id, &chosen.host)?;
        let failed =
            |code: Option<i32>, why: String| Error::DiffFailed { task: id, host: chosen.host.clone(), code, why };
        // One exec answers at most CHUNK bytes; a larger diff takes several, each made
        // again on the brother, and must be the same diff each time.
        let mut bytes: Vec<u8> = Vec::new();
        let mut first: Option<crate::remote::diff::DiffReply> = None;
        loop {
            let script = crate::remote::diff::render(&task.workdir, &base, mode, cap, bytes.len() as u64, CHUNK)?;
            let (out, _) =
                self.transport().exec(&reach, crate::remote::REMOTE_COMMAND, &script, Duration::from_secs(180)).await?;
            if out.overflow {
                return Err(Error::OutputTooLarge {
                    host: chosen.host.clone(),
                    limit: crate::transport::ssh::MAX_EXEC_OUTPUT,
                });
            }
            if out.exit != Exit::Code(0) {
                let said = crate::remote::parse_output(&[], &out.stderr).error;
                return Err(match said {
                    Some((code, message)) => failed(Some(code), message),
                    None => failed(
                        None,
                        format!(
                            "the diff script ended with {:?}: {}",
                            out.exit,
                            clean_line(&String::from_utf8_lossy(&out.stderr), 300)
                        ),
                    ),
                });
            }
            let reply = crate::remote::diff::parse(&out.stdout).map_err(|why| failed(None, why))?;
            if reply.offset != bytes.len() as u64 {
                return Err(failed(
                    None,
                    format!("asked for bytes from {}, got them from {}", bytes.len(), reply.offset),
                ));
            }
            if let Some(f) = &first
                && (f.tree != reply.tree || f.sha256 != reply.sha256 || f.size != reply.size)
            {
                return Err(failed(None, "the workdir changed while its diff was read: ask again".into()));
            }
            if reply.size > cap {
                return Err(Error::DiffTooLarge { task: id, size: reply.size, limit: cap });
            }
            if reply.bytes.is_empty() && (bytes.len() as u64) < reply.size {
                return Err(failed(None, "the brother sent an empty chunk of a diff not yet complete".into()));
            }
            bytes.extend_from_slice(&reply.bytes);
            let done = bytes.len() as u64 >= reply.size;
            first.get_or_insert(reply);
            if done {
                break;
            }
        }
        let reply = first.expect("one reply at least");
        crate::remote::diff::check_whole(&bytes, &reply.sha256).map_err(|why| failed(None, why))?;
        Ok(TaskDiff {
            task: id,
            run: chosen.run_no,
            base,
            base_tree: reply.base_tree,
            tree: reply.tree,
            size: reply.size,
            sha256: reply.sha256,
            bytes,
        })
    }

    /// Why a finished task should not be believed yet, or None: it ended `completed`, its
    /// settings say a change was expected (`expect_change`, profile or brother), its agent
    /// wrote no report beyond the receipt, and its workdir shows no change since the launch.
    /// The change is read at this moment over the connection (a `--stat` diff, bounded like
    /// every diff), not stored at sync: nothing new in the mailbox, and the answer is about
    /// the workdir as it is now. Only a task meeting the other three conditions costs a
    /// connection; a brother that cannot be read is said so, not taken as "no change".
    pub async fn done_without_evidence(&mut self, id: i64) -> Result<Option<String>> {
        let task = self.task(id)?;
        let expected = task.settings["expect_change"]["value"].as_bool() == Some(true);
        if task.status != crate::task::TaskStatus::Completed || !expected {
            return Ok(None);
        }
        if self.store().reports_beyond_receipt(id)? > 0 {
            return Ok(None);
        }
        Ok(match self.diff(id, None, DiffMode::Stat, STAT_CHECK_CAP).await {
            Ok(diff) if diff.changed() => None,
            Ok(_) => Some("completed, but no change and no report: check before believing it".into()),
            // Too large to show is a change all the same.
            Err(Error::DiffTooLarge { .. }) => None,
            Err(e) => Some(format!(
                "completed with no report, and its change could not be read ({}): check before believing it",
                clean_line(&e.to_string(), 300)
            )),
        })
    }

    /// The task's change as a binary-safe patch (`git diff --binary`), hash-checked; a task
    /// that changed nothing is [`Error::NothingToFetch`].
    pub async fn fetch_patch(&mut self, id: i64, run: Option<i64>) -> Result<TaskDiff> {
        let diff = match self.diff(id, run, DiffMode::Binary, FETCH_CAP).await {
            Err(Error::DiffTooLarge { size, limit, .. }) => {
                let task = self.task(id)?;
                return Err(Error::DiffFailed {
                    task: id,
                    host: task.host.clone(),
                    code: None,
                    why: format!(
                        "the patch is {size} bytes, over the {limit} one fetch carries: copy the files by hand \
                         (the task's base is kept in the brother's repository as refs/delegate/*/base; \
                         `delegate diff {id} --stat` lists what changed)"
                    ),
                });
            }
            other => other?,
        };
        if !diff.changed() || diff.bytes.is_empty() {
            return Err(Error::NothingToFetch {
                task: id,
                why: "it changed nothing in its workdir since its launch: no change to fetch".into(),
            });
        }
        Ok(diff)
    }
}

/// The base commit a run's launch recorded, or why there is none.
fn launch_base(task: i64, run: &Run) -> Result<String> {
    let git = &run.evidence["remote"]["git"];
    let nothing = |why: String| Error::NothingToFetch { task, why };
    match git["state"].as_str() {
        Some("repo") => git["base"].as_str().filter(|b| is_object_id(b)).map(String::from).ok_or_else(|| {
            nothing(format!("run {}'s launch recorded no usable git base: nothing to compare with", run.run_no))
        }),
        Some("not a git work tree") => Err(nothing(format!(
            "its workdir was not a git work tree at the launch of run {}: nothing to diff (use `git init` in the \
             workdir before launching)",
            run.run_no
        ))),
        Some(other) => {
            let why = git["why"].as_str().map(|w| format!(": {}", clean_line(w, 200))).unwrap_or_default();
            Err(nothing(format!(
                "no git base was recorded at the launch of run {} ({}{why})",
                run.run_no,
                clean_line(other, 40)
            )))
        }
        None => Err(nothing(format!(
            "no git state was recorded at the launch of run {} (launched by an older delegate, or the launch never \
             reached the brother): nothing to compare with",
            run.run_no
        ))),
    }
}

/// Writes the patch to `DIR/task-N.patch` (created whole under a temporary name, then
/// renamed, so a reader never sees half a patch); returns the path.
pub fn write_patch(dir: &Path, diff: &TaskDiff) -> Result<PathBuf> {
    let file_error = |path: &Path, e: std::io::Error| Error::PatchFile { path: path.to_path_buf(), why: e.to_string() };
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    let path = dir.join(format!("task-{}.patch", diff.task));
    let tmp = dir.join(format!(".task-{}.patch.{}", diff.task, std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(&diff.bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|_| std::fs::rename(&tmp, &path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(file_error(&path, e));
    }
    Ok(path)
}

/// Applies the patch to the checkout at `repo` (its top level: applying from a
/// subdirectory would skip the files outside it): `git apply --check` first, so a change
/// that does not apply is refused whole ([`Error::PatchRefused`], the files named) and
/// nothing is written; then `git apply`, which is all-or-nothing itself.
pub fn apply_patch(repo: &Path, diff: &TaskDiff) -> Result<PathBuf> {
    let git_error = |why: String| Error::PatchFile { path: repo.to_path_buf(), why };
    if !repo.is_dir() {
        return Err(git_error("not a directory: --repo takes the local checkout to apply the change to".into()));
    }
    let top = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "--show-toplevel"])
        .stderr(Stdio::null())
        .output()
        .map_err(|e| git_error(format!("cannot run git here ({e}): install git to apply a task's change")))?;
    let top = if top.status.success() {
        PathBuf::from(String::from_utf8_lossy(&top.stdout).trim_end_matches('\n'))
    } else {
        repo.to_path_buf()
    };
    let run = |check: bool| -> Result<std::process::Output> {
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(&top).arg("apply");
        if check {
            cmd.arg("--check");
        }
        let mut child = cmd
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| git_error(format!("cannot run git ({e})")))?;
        let mut stdin = child.stdin.take().expect("piped");
        let bytes = diff.bytes.clone();
        let feeder = std::thread::spawn(move || stdin.write_all(&bytes));
        let out = child.wait_with_output().map_err(|e| git_error(format!("git apply: {e}")))?;
        let _ = feeder.join();
        Ok(out)
    };
    let check = run(true)?;
    if !check.status.success() {
        let stderr = String::from_utf8_lossy(&check.stderr);
        return Err(Error::PatchRefused {
            task: diff.task,
            repo: top,
            files: refused_files(&stderr),
            why: clean_line(stderr.lines().find(|l| l.starts_with("error:")).unwrap_or(&stderr), 300),
        });
    }
    let applied = run(false)?;
    if !applied.status.success() {
        return Err(git_error(format!(
            "git apply failed after its check passed (the checkout changed meanwhile?): {}",
            clean_line(&String::from_utf8_lossy(&applied.stderr), 300)
        )));
    }
    Ok(top)
}

/// The files `git apply --check` names in its errors (`error: patch failed: F:12`,
/// `error: F: already exists in working directory`, ...), each once, sanitized.
fn refused_files(stderr: &str) -> Vec<String> {
    let mut files: Vec<String> = Vec::new();
    for line in stderr.lines() {
        let Some(rest) = line.strip_prefix("error: ") else { continue };
        let file = if let Some(f) = rest.strip_prefix("patch failed: ") {
            f.rsplit_once(':').map_or(f, |(f, _)| f)
        } else if let Some((f, _)) = rest.split_once(": ") {
            f
        } else {
            continue;
        };
        let file = clean_line(file, 300);
        if !files.contains(&file) && files.len() < 50 {
            files.push(file);
        }
    }
    files
}

/// SHA-256 of bytes, as lowercase hex (the lead's own check of what it writes).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let ok = Command::new("git").arg("-C").arg(dir).args(args).env("GIT_CONFIG_GLOBAL", "/dev/null").status();
        assert!(ok.unwrap().success(), "git {args:?}");
    }

    fn patch(task: i64, bytes: &str) -> TaskDiff {
        TaskDiff {
            task,
            run: 1,
            base: "a".repeat(40),
            base_tree: "b".repeat(40),
            tree: "c".repeat(40),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes.as_bytes()),
            bytes: bytes.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_git_line_of_show_takes_only_ids_and_clean_words_from_the_brother() {
        let ev = |git: serde_json::Value| serde_json::json!({"remote": {"git": git}});
        let head = "0123456789abcdef0123456789abcdef01234567";
        let line = git_state_line(&ev(serde_json::json!({
            "state": "repo", "head": head, "branch": "main\u{1b}]52;c;eA==\u{7}\nforged", "clean": true, "base": "x;rm -rf /",
        })))
        .unwrap();
        assert_eq!(line, "HEAD 0123456789ab on branch main forged, clean");
        let line =
            git_state_line(&ev(serde_json::json!({"state": "repo", "head": "not-an-id", "clean": false}))).unwrap();
        assert_eq!(line, "HEAD no commit yet on detached HEAD, uncommitted changes (kept in the base)");
        assert_eq!(
            git_state_line(&ev(serde_json::json!({"state": "not a git work tree"}))).unwrap(),
            "not a git work tree"
        );
        assert_eq!(git_state_line(&serde_json::json!({})), None);
    }

    /// A hostile brother can send any patch with a matching hash: one reaching into `.git`
    /// (a hook) or out of the checkout (`..`) is refused whole by `git apply --check`, and
    /// the good file in the same patch is not written either.
    #[test]
    fn a_patch_reaching_out_of_the_checkout_or_into_git_is_refused_whole() {
        let dir = std::env::temp_dir().join(format!("dlg-apply-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "."]);
        let good = "diff --git a/ok.txt b/ok.txt\nnew file mode 100644\nindex 0000000..1111111\n--- /dev/null\n+++ b/ok.txt\n@@ -0,0 +1 @@\n+fine\n";
        for evil in [".git/hooks/post-checkout", "../escaped.txt"] {
            let text = format!(
                "{good}diff --git a/{evil} b/{evil}\nnew file mode 100755\nindex 0000000..1111111\n--- /dev/null\n+++ b/{evil}\n@@ -0,0 +1 @@\n+echo pwned\n"
            );
            let err = apply_patch(&dir, &patch(7, &text)).unwrap_err();
            assert!(matches!(err, Error::PatchRefused { .. }), "{err}");
            assert!(err.to_string().contains("Nothing was applied"), "{err}");
            assert!(!dir.join("ok.txt").exists(), "half applied");
            assert!(!dir.join(".git/hooks/post-checkout").exists());
            assert!(!dir.parent().unwrap().join("escaped.txt").exists());
        }
        apply_patch(&dir, &patch(7, good)).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("ok.txt")).unwrap(), "fine\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refused_files_names_each_file_once() {
        let stderr = "error: patch failed: src/a.rs:12\nerror: src/a.rs: patch does not apply\n\
                      error: new.txt: already exists in working directory\nerror: \u{1b}[31mx: does not exist in index\n";
        assert_eq!(super::refused_files(stderr), vec!["src/a.rs", "new.txt", "x"]);
    }
}
