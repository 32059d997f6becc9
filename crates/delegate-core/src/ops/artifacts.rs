//! Artifacts: files an agent declared with `report artifact PATH "what it is"`, listed
//! (`delegate artifacts N`) and copied back (`delegate fetch N --artifacts [DIR]`).
//!
//! The brother decides nothing the lead relies on: it resolves each path (realpath) and
//! serves only regular files inside the task's workdir or task directory
//! (`remote/scripts/artifacts.sh`), but the lead checks again what it can (the place the
//! file is written to, sizes, the SHA-256 of the bytes it received), writes each file under
//! a temporary name and links it into place only if nothing is there (never overwriting a
//! local file), and records what it wrote in the mailbox.

use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::delegate::Delegate;
use crate::error::{Error, Result};
use crate::mailbox::artifacts::ArtifactFetch;
use crate::remote::artifacts::{Listed, parse_chunk, parse_list, render};
use crate::remote::diff::hex;
use crate::sanitize::clean_line;
use crate::transport::ssh::Exit;

/// Largest artifact fetched (the brother refuses larger ones as `too-large`).
pub const FILE_CAP: u64 = 256 << 20;
/// Most bytes one `fetch --artifacts` copies in all; the artifacts past it are refused.
pub const TOTAL_CAP: u64 = 1 << 30;
/// Most bytes one exec answers: under the exec cap, so a reply is never cut.
const CHUNK: u64 = 32 << 20;

/// One declared artifact, cleaned for showing.
#[derive(Debug, Clone, Serialize)]
pub struct Artifact {
    /// The run whose task directory holds the declaration.
    pub run: i64,
    #[serde(skip)]
    index: usize,
    /// The path the agent declared, cleaned to one line.
    pub path: String,
    /// Where it is inside the workdir (`task/...`: inside the task directory).
    pub rel: Option<String>,
    pub description: String,
    /// `ok`, or why it cannot be fetched: `outside` (resolves out of the workdir and task
    /// directory), `missing`, `not-a-file`, `too-large`.
    pub verdict: String,
    pub size: u64,
    pub sha256: Option<String>,
}

/// What `fetch --artifacts` did.
#[derive(Debug, Clone, Serialize)]
pub struct Fetched {
    pub task: i64,
    pub fetched: Vec<ArtifactFetch>,
    /// Each refused artifact: its path and why.
    pub refused: Vec<String>,
}

impl Delegate {
    /// The artifacts task `id` declared, in every run, as its brother finds them now.
    pub async fn artifacts(&mut self, id: i64) -> Result<Vec<Artifact>> {
        let task = self.task(id)?;
        let mut out = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for run in &task.runs {
            let Some(dir) = run.remote_dir.as_deref() else { continue };
            if seen.contains(&dir) {
                continue;
            }
            seen.push(dir);
            let script = render(&task.workdir, dir, None, FILE_CAP)?;
            let stdout = self.artifacts_exec(id, &run.host, &script).await?;
            let listed = parse_list(&stdout).map_err(|why| failed(id, &run.host, None, why))?;
            out.extend(listed.into_iter().map(|l| cleaned(run.run_no, l)));
        }
        Ok(out)
    }

    /// Copies every fetchable artifact of task `id` into `dir` (created if need be), each at
    /// its place inside the workdir (`task/...` for the task directory). An artifact that
    /// is refused (on the brother or over [`TOTAL_CAP`]) is named in [`Fetched::refused`];
    /// the others are fetched anyway. A local file in the way is an error: nothing is
    /// overwritten.
    pub async fn fetch_artifacts(&mut self, id: i64, dir: &Path) -> Result<Fetched> {
        let list = self.artifacts(id).await?;
        if list.is_empty() {
            return Err(Error::NothingToFetch {
                task: id,
                why: "it declared no artifacts (the agent declares one with: report artifact PATH \"what it is\")"
                    .into(),
            });
        }
        let task = self.task(id)?;
        let mut result = Fetched { task: id, fetched: Vec::new(), refused: Vec::new() };
        let mut total = 0u64;
        for a in list {
            let refuse = |why: String| format!("{} ({why})", a.path);
            if a.verdict != "ok" {
                let why = match a.verdict.as_str() {
                    "outside" => "it resolves outside the task's workdir and task directory".to_string(),
                    "too-large" => format!("{} bytes, over the {FILE_CAP}-byte cap per file", a.size),
                    v => v.replace('-', " "),
                };
                result.refused.push(refuse(why));
                continue;
            }
            if total + a.size > TOTAL_CAP {
                result.refused.push(refuse(format!("over the {TOTAL_CAP}-byte cap of one fetch: fetch it alone")));
                continue;
            }
            let Some(dest) = a.rel.as_deref().and_then(|r| local_place(dir, r)) else {
                result.refused.push(refuse("its place in the workdir is not a plain relative path".into()));
                continue;
            };
            if dest.symlink_metadata().is_ok() {
                return Err(Error::PatchFile {
                    path: dest,
                    why: "already exists: nothing was overwritten (move it away, or fetch into another DIR)".into(),
                });
            }
            let run = task.runs.iter().find(|r| r.run_no == a.run).expect("listed from this task's runs");
            let dir_on_brother = run.remote_dir.clone().expect("listed from a run with a task dir");
            let (size, sha256) = self.copy_artifact(id, &run.host, &task.workdir, &dir_on_brother, &a, &dest).await?;
            total += size;
            let f = ArtifactFetch {
                run: a.run,
                path: a.path.clone(),
                description: a.description.clone(),
                size,
                sha256,
                local_path: dest.display().to_string(),
                fetched_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            };
            self.store().record_artifact_fetch(id, &f)?;
            result.fetched.push(f);
        }
        Ok(result)
    }

    /// Reads one artifact in chunks into a temporary file beside `dest`, hashing as it goes;
    /// links it into place when the hash is the brother's. Returns its size and SHA-256.
    async fn copy_artifact(
        &mut self,
        id: i64,
        host: &str,
        workdir: &str,
        task_dir: &str,
        a: &Artifact,
        dest: &Path,
    ) -> Result<(u64, String)> {
        let parent = dest.parent().expect("dest is inside dir");
        let file_error =
            |path: &Path, e: std::io::Error| Error::PatchFile { path: path.to_path_buf(), why: e.to_string() };
        std::fs::create_dir_all(parent).map_err(|e| file_error(parent, e))?;
        let tmp = parent.join(format!(".delegate-artifact.{}.{}", std::process::id(), a.index));
        let mut file = std::fs::File::create(&tmp).map_err(|e| file_error(&tmp, e))?;
        let outcome = async {
            let mut hasher = Sha256::new();
            let mut got = 0u64;
            let mut first: Option<(u64, String)> = None;
            loop {
                let script = render(workdir, task_dir, Some((a.index, got, CHUNK)), FILE_CAP)?;
                let stdout = self.artifacts_exec(id, host, &script).await?;
                let chunk = parse_chunk(&stdout).map_err(|why| failed(id, host, None, why))?;
                if chunk.offset != got {
                    return Err(failed(
                        id,
                        host,
                        None,
                        format!("asked for bytes from {got}, got them from {}", chunk.offset),
                    ));
                }
                if first.as_ref().is_some_and(|f| *f != (chunk.size, chunk.sha256.clone())) {
                    return Err(failed(id, host, None, format!("{} changed while it was read: fetch again", a.path)));
                }
                if chunk.bytes.is_empty() && got < chunk.size {
                    return Err(failed(
                        id,
                        host,
                        None,
                        "the brother sent an empty chunk of a file not yet complete".into(),
                    ));
                }
                hasher.update(&chunk.bytes);
                file.write_all(&chunk.bytes).map_err(|e| file_error(&tmp, e))?;
                got += chunk.bytes.len() as u64;
                first.get_or_insert((chunk.size, chunk.sha256));
                if got >= first.as_ref().expect("set").0 {
                    break;
                }
            }
            let (size, sha256) = first.expect("one chunk at least");
            if hex(&hasher.finalize()) != sha256 {
                return Err(failed(id, host, None, format!("{}: the bytes do not match the brother's sha256", a.path)));
            }
            file.sync_all().map_err(|e| file_error(&tmp, e))?;
            // A hard link fails when something is at `dest`: never an overwrite, even of a
            // file that appeared while this one was read.
            std::fs::hard_link(&tmp, dest).map_err(|e| file_error(dest, e))?;
            Ok((size, sha256))
        }
        .await;
        let _ = std::fs::remove_file(&tmp);
        outcome
    }

    async fn artifacts_exec(&mut self, id: i64, host: &str, script: &[u8]) -> Result<Vec<u8>> {
        let reach = self.task_reach(id, host)?;
        let (out, _) =
            self.transport().exec(&reach, crate::remote::REMOTE_COMMAND, script, Duration::from_secs(180)).await?;
        if out.overflow {
            return Err(Error::OutputTooLarge {
                host: host.to_string(),
                limit: crate::transport::ssh::MAX_EXEC_OUTPUT,
            });
        }
        if out.exit != Exit::Code(0) {
            return Err(match crate::remote::parse_output(&[], &out.stderr).error {
                Some((code, message)) => failed(id, host, Some(code), message),
                None => failed(
                    id,
                    host,
                    None,
                    format!(
                        "the artifacts script ended with {:?}: {}",
                        out.exit,
                        clean_line(&String::from_utf8_lossy(&out.stderr), 300)
                    ),
                ),
            });
        }
        Ok(out.stdout)
    }
}

fn failed(task: i64, host: &str, code: Option<i32>, why: String) -> Error {
    Error::ArtifactFailed { task, host: host.to_string(), code, why: clean_line(&why, 400) }
}

fn cleaned(run: i64, l: Listed) -> Artifact {
    Artifact {
        run,
        index: l.index,
        path: clean_line(&l.path, 500),
        rel: l.rel.map(|r| r.chars().take(4096).collect()),
        description: clean_line(&l.description, 500),
        verdict: l.verdict,
        size: l.size,
        sha256: l.sha256,
    }
}

/// Where an artifact at `rel` (the brother's word) goes under `dir`: only a plain relative
/// path of normal components, each free of control characters and none of them `.git` (DIR
/// may be a checkout: a file under `.git/hooks` would run on the lead), or None.
fn local_place(dir: &Path, rel: &str) -> Option<PathBuf> {
    if rel.is_empty() || rel.chars().any(char::is_control) {
        return None;
    }
    let path = Path::new(rel);
    let plain = |c: Component| matches!(c, Component::Normal(n) if !n.eq_ignore_ascii_case(".git"));
    path.components().all(plain).then(|| dir.join(path))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_artifact_lands_only_at_a_plain_relative_place() {
        let dir = std::path::Path::new("/d");
        assert_eq!(super::local_place(dir, "out/x.bin").unwrap(), dir.join("out/x.bin"));
        assert_eq!(super::local_place(dir, "task/notes.md").unwrap(), dir.join("task/notes.md"));
        for bad in [
            "",
            "../x",
            "out/../../x",
            "/etc/passwd",
            "a\nb",
            "a\u{1b}[2Jb",
            ".git/hooks/pre-commit",
            "sub/.GIT/config",
        ] {
            assert_eq!(super::local_place(dir, bad), None, "{bad:?}");
        }
    }
}
