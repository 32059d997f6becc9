//! The wire protocol of the two scripts that follow a launch: `runner/sync.sh` (one SSH exec
//! reports on every task of a host: which task directories exist, which tmux sessions live,
//! and the bytes each task file gained since the offsets the lead holds) and
//! `runner/cancel.sh` (stop one task's agent).
//!
//! Both are real bash files sent on stdin to `bash -s`, shaped like the launch script:
//! Rust prepends only `DLG_VARS='<base64>'`, the variable parts as separated fields, and
//! the body ends in `main <sentinel>` so a script cut off in transit runs nothing. The sync
//! fields are newline-separated (each is checked to be a single line) because bash reads a
//! command substitution in blocks but a pipe into `mapfile -d ''` one byte per syscall,
//! which a sync of hundreds of tasks would feel; the cancel fields are NUL-separated.
//!
//! The sync reply is framed by lengths, never by delimiters, so a file's bytes may hold
//! anything (newlines, `END`, NULs):
//!
//! ```text
//! DELEGATE-SYNC 1 <tasks> <tmux server running 0|1> <remote utc time>
//! T <task key> <dir exists 0|1> <session alive 0|1>        one per task, in request order
//! F <task key> <file> <offset> <size> <len>\n<len bytes>\n  one per file grown past its offset
//! S <task key> <file> <got>                                  (rare) that file shrank while read:
//!                                                            keep only the first <got> bytes
//! L <task key> <len>\n<len bytes>\n                          launch.json, when asked for
//! END
//! ```
//!
//! A reply without `END` (or with anything after it) was cut short and is refused whole.
//! Lines a login rc file may print before the header are skipped.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::{Error, Result};

pub const SYNC_SH: &str = include_str!("runner/sync.sh");
pub const CANCEL_SH: &str = include_str!("runner/cancel.sh");

/// The task files a sync reads, in the order their offsets travel to the script.
pub const SYNCED_FILES: [&str; 6] = ["state", "exit", "stream.jsonl", "events.jsonl", "outbox.jsonl", "stderr.log"];

/// One task of a sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncTaskRequest {
    pub task_key: String,
    pub session: String,
    /// Bytes of each of [`SYNCED_FILES`] the lead already holds. A file missing here is
    /// read from 0; an offset at or past the file's size reads nothing (so `u64::MAX` skips
    /// a file). Offsets above `i64::MAX` count as `i64::MAX`, which is bash's ceiling.
    pub offsets: BTreeMap<String, u64>,
    /// Also send `launch.json` (for reconciling a launch whose outcome is unknown).
    pub want_launch_json: bool,
}

/// Every task of one host, for one exec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncRequest {
    pub remote_root: String,
    pub tasks: Vec<SyncTaskRequest>,
    /// At most this many bytes of one file per sync; the rest comes next time.
    pub max_bytes_per_file: u64,
}

/// New bytes of one task file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileDelta {
    pub file: String,
    pub offset: u64,
    /// The file's size when the script looked.
    pub size: u64,
    /// `file[offset..min(size, offset + max_bytes_per_file)]`.
    pub bytes: Vec<u8>,
}

/// What the brother said about one task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskReport {
    pub task_key: String,
    pub dir_exists: bool,
    pub session_alive: bool,
    pub deltas: Vec<FileDelta>,
    pub launch_json: Option<Vec<u8>>,
}

/// A whole sync reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReply {
    pub tasks: Vec<TaskReport>,
    pub tmux_server_running: bool,
    /// The brother's clock (UTC, microseconds) when it wrote the reply.
    pub remote_time: String,
}

fn refuse(what: &str, message: String) -> Error {
    Error::Config { path: format!("({what})").into(), message }
}

/// Task keys are file names in the task tree and words of the reply's lines.
fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 200
        && key != "."
        && key != ".."
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok { Ok(()) } else { Err(refuse("sync", format!("task key {key:?} is not a plain file name"))) }
}

/// Session names are matched against tmux's one-per-line listing.
fn check_session(what: &str, session: &str) -> Result<()> {
    if session.is_empty() || session.len() > 200 || session.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refuse(
            what,
            format!("tmux session name {session:?} is empty or holds spaces or control characters"),
        ));
    }
    Ok(())
}

fn check_root(what: &str, root: &str) -> Result<()> {
    crate::config::check_remote_path(root).map_err(|m| refuse(what, format!("remote root: {m}")))
}

/// `DLG_VARS='<base64 of the fields, each followed by sep>'` and a newline, then the body.
fn script(fields: &[String], sep: u8, body: &str) -> Vec<u8> {
    let mut vars = Vec::with_capacity(fields.iter().map(|f| f.len() + 1).sum());
    for f in fields {
        vars.extend_from_slice(f.as_bytes());
        vars.push(sep);
    }
    let mut out = Vec::with_capacity(vars.len() * 4 / 3 + body.len() + 16);
    out.extend_from_slice(format!("DLG_VARS='{}'\n", B64.encode(&vars)).as_bytes());
    out.extend_from_slice(body.as_bytes());
    out
}

/// The sync script for one host, as sent on stdin. Refuses keys that are not plain file
/// names, session names with spaces, unknown file names in `offsets`, duplicate tasks and a
/// zero `max_bytes_per_file`.
pub fn render_sync(req: &SyncRequest) -> Result<Vec<u8>> {
    check_root("sync", &req.remote_root)?;
    if req.max_bytes_per_file == 0 {
        return Err(refuse("sync", "max_bytes_per_file must be at least 1".into()));
    }
    let mut fields = Vec::with_capacity(2 + req.tasks.len() * 9);
    fields.push(req.remote_root.clone());
    fields.push(req.max_bytes_per_file.min(i64::MAX as u64).to_string());
    let mut seen = std::collections::BTreeSet::new();
    for t in &req.tasks {
        check_key(&t.task_key)?;
        check_session("sync", &t.session)?;
        if !seen.insert(t.task_key.as_str()) {
            return Err(refuse("sync", format!("task {} is listed twice", t.task_key)));
        }
        if let Some(unknown) = t.offsets.keys().find(|f| !SYNCED_FILES.contains(&f.as_str())) {
            return Err(refuse("sync", format!("{unknown:?} is not a synced task file ({})", SYNCED_FILES.join(", "))));
        }
        fields.push(t.task_key.clone());
        fields.push(t.session.clone());
        fields.push(if t.want_launch_json { "1" } else { "0" }.into());
        for f in SYNCED_FILES {
            let off = t.offsets.get(f).copied().unwrap_or(0).min(i64::MAX as u64);
            fields.push(off.to_string());
        }
    }
    // Keys and sessions are checked above, the root has no control characters: every field
    // is one line, so newlines can separate them.
    Ok(script(&fields, b'\n', SYNC_SH))
}

/// Reads a reply of the sync script. Strict: anything but the framing above (a missing
/// `END`, bytes after it, a length running past the end, a delta for a task not announced,
/// a task count that does not match the header) is an error naming what was wrong.
pub fn parse_sync(stdout: &[u8]) -> std::result::Result<SyncReply, String> {
    const HEADER: &[u8] = b"DELEGATE-SYNC ";
    let start = if stdout.starts_with(HEADER) {
        0
    } else {
        match stdout.windows(HEADER.len() + 1).position(|w| w[0] == b'\n' && &w[1..] == HEADER) {
            Some(p) => p + 1,
            None => {
                let head: String = String::from_utf8_lossy(&stdout[..stdout.len().min(200)]).into_owned();
                return Err(format!(
                    "no DELEGATE-SYNC header in the reply ({} bytes, starting {head:?})",
                    stdout.len()
                ));
            }
        }
    };
    let mut r = Reader { buf: stdout, pos: start };
    let header = r.line()?;
    let (count, running, remote_time) = match header.as_slice() {
        ["DELEGATE-SYNC", "1", n, running, time] => (num(n, "task count")?, flag(running)?, time.to_string()),
        ["DELEGATE-SYNC", version, ..] => return Err(format!("unknown sync protocol version {version:?}")),
        _ => return Err(format!("malformed header {:?}", header.join(" "))),
    };
    let mut reply = SyncReply { tasks: Vec::new(), tmux_server_running: running, remote_time };
    loop {
        let words = r.line()?;
        match words.as_slice() {
            ["T", key, dir, alive] => {
                if reply.tasks.iter().any(|t| t.task_key == *key) {
                    return Err(format!("task {key} reported twice"));
                }
                reply.tasks.push(TaskReport {
                    task_key: key.to_string(),
                    dir_exists: flag(dir)?,
                    session_alive: flag(alive)?,
                    ..Default::default()
                });
            }
            ["F", key, file, offset, size, len] => {
                let task = current(&mut reply, key)?;
                if !SYNCED_FILES.contains(file) {
                    return Err(format!("task {key}: unknown file {file:?}"));
                }
                if task.deltas.iter().any(|d| d.file == *file) {
                    return Err(format!("task {key}: {file} sent twice"));
                }
                let (offset, size, len) = (num(offset, "offset")?, num(size, "size")?, num(len, "length")?);
                if offset.checked_add(len).is_none_or(|end| end > size) {
                    return Err(format!("task {key}: {file} claims bytes {offset}+{len} of a {size}-byte file"));
                }
                let bytes = r.block(len)?;
                task.deltas.push(FileDelta { file: file.to_string(), offset, size, bytes });
            }
            ["S", key, file, got] => {
                let task = current(&mut reply, key)?;
                let got = num(got, "short count")?;
                match task.deltas.last_mut() {
                    Some(d) if d.file == *file && got <= d.bytes.len() as u64 => d.bytes.truncate(got as usize),
                    _ => return Err(format!("task {key}: a short-read note for {file} that follows no delta of it")),
                }
            }
            ["L", key, len] => {
                let len = num(len, "length")?;
                let task = current(&mut reply, key)?;
                if task.launch_json.is_some() {
                    return Err(format!("task {key}: launch.json sent twice"));
                }
                task.launch_json = Some(r.block(len)?);
            }
            ["END"] => {
                if r.pos != stdout.len() {
                    return Err(format!("{} unexpected bytes after END", stdout.len() - r.pos));
                }
                if reply.tasks.len() as u64 != count {
                    return Err(format!("the header announced {count} tasks, the reply holds {}", reply.tasks.len()));
                }
                return Ok(reply);
            }
            other => return Err(format!("unexpected line {:?}", other.join(" "))),
        }
    }
}

/// The task the last `T` line announced, which must be `key`.
fn current<'a>(reply: &'a mut SyncReply, key: &str) -> std::result::Result<&'a mut TaskReport, String> {
    match reply.tasks.last_mut() {
        Some(t) if t.task_key == key => Ok(t),
        _ => Err(format!("data for task {key} outside its T block")),
    }
}

fn num(word: &str, what: &str) -> std::result::Result<u64, String> {
    if word.is_empty() || word.len() > 19 || !word.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} {word:?} is not a number"));
    }
    word.parse().map_err(|_| format!("{what} {word:?} is out of range"))
}

fn flag(word: &str) -> std::result::Result<bool, String> {
    match word {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(format!("{word:?} is not 0 or 1")),
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// The next line, split on single spaces; a line without its newline means a cut reply.
    fn line(&mut self) -> std::result::Result<Vec<&'a str>, String> {
        let rest = &self.buf[self.pos..];
        let Some(n) = rest.iter().position(|b| *b == b'\n') else {
            return Err(if rest.is_empty() {
                "the reply ends without END: it was cut short".into()
            } else {
                format!(
                    "the reply was cut short inside a line ({:?})",
                    String::from_utf8_lossy(&rest[..rest.len().min(80)])
                )
            });
        };
        let line = std::str::from_utf8(&rest[..n]).map_err(|_| "a protocol line is not text".to_string())?;
        self.pos += n + 1;
        Ok(line.split(' ').collect())
    }

    /// Exactly `len` bytes and the newline that closes them.
    fn block(&mut self, len: u64) -> std::result::Result<Vec<u8>, String> {
        let rest = self.buf.len() - self.pos;
        let len = usize::try_from(len).map_err(|_| format!("a length of {len} bytes"))?;
        if len >= rest {
            return Err(format!("the reply was cut short: {len} bytes announced, {rest} left"));
        }
        let bytes = self.buf[self.pos..self.pos + len].to_vec();
        if self.buf[self.pos + len] != b'\n' {
            return Err("a data block does not end where its length says".into());
        }
        self.pos += len + 1;
        Ok(bytes)
    }
}

/// What `cancel.sh` found (its one `DELEGATE-CANCEL <state>` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CancelState {
    /// The agent's group got SIGTERM; the runner records `cancelled` and escalates to SIGKILL
    /// after its grace period.
    Signalled,
    /// The runner had written `exit`, or the agent's group was already gone.
    AlreadyFinished,
    /// No agent started yet; the `cancel` file makes the runner stop it as soon as it does.
    NotStarted,
    /// No task directory on the brother.
    NoTask,
}

impl CancelState {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelState::Signalled => "signalled",
            CancelState::AlreadyFinished => "already-finished",
            CancelState::NotStarted => "not-started",
            CancelState::NoTask => "no-task",
        }
    }
}

/// The cancel script for one task, as sent on stdin.
pub fn render_cancel(remote_root: &str, task_key: &str, session: &str) -> Result<Vec<u8>> {
    check_root("cancel", remote_root)?;
    check_key(task_key).map_err(|_| refuse("cancel", format!("task key {task_key:?} is not a plain file name")))?;
    check_session("cancel", session)?;
    Ok(script(&[remote_root.to_string(), task_key.to_string(), session.to_string()], 0, CANCEL_SH))
}

/// The state in the cancel script's output, if it printed one.
pub fn parse_cancel(stdout: &[u8]) -> Option<CancelState> {
    let text = String::from_utf8_lossy(stdout);
    let word = text.lines().find_map(|l| l.strip_prefix("DELEGATE-CANCEL "))?.trim();
    [CancelState::Signalled, CancelState::AlreadyFinished, CancelState::NotStarted, CancelState::NoTask]
        .into_iter()
        .find(|s| s.as_str() == word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn sample() -> Vec<u8> {
        // Payloads hold newlines, a fake END and NUL bytes: only lengths frame them.
        reply(&[
            b"DELEGATE-SYNC 1 2 1 2026-11-21T10:00:00.000001Z\n",
            b"T k-1 1 0\n",
            b"F k-1 state 0 12 12\nab\nEND\nT x\0\n\n",
            b"F k-1 stream.jsonl 5 20 10\n0123456789\n",
            b"S k-1 stream.jsonl 4\n",
            b"L k-1 2\n{}\n",
            b"T k-2 0 0\n",
            b"END\n",
        ])
    }

    #[test]
    fn a_reply_parses_with_binary_payloads() {
        // A line an rc file printed before the header is skipped.
        let mut out = b"welcome to the brother\n".to_vec();
        out.extend(sample());
        let r = parse_sync(&out).unwrap();
        assert!(r.tmux_server_running);
        assert_eq!(r.remote_time, "2026-11-21T10:00:00.000001Z");
        assert_eq!(r.tasks.len(), 2);
        let t = &r.tasks[0];
        assert!(t.dir_exists && !t.session_alive);
        assert_eq!(
            t.deltas[0],
            FileDelta { file: "state".into(), offset: 0, size: 12, bytes: b"ab\nEND\nT x\0\n".to_vec() }
        );
        assert_eq!(t.deltas[1].bytes, b"0123", "the short-read note truncates");
        assert_eq!((t.deltas[1].offset, t.deltas[1].size), (5, 20));
        assert_eq!(t.launch_json.as_deref(), Some(&b"{}"[..]));
        assert_eq!(r.tasks[1], TaskReport { task_key: "k-2".into(), ..Default::default() });
    }

    #[test]
    fn every_truncation_is_refused() {
        let full = sample();
        for cut in 0..full.len() {
            assert!(parse_sync(&full[..cut]).is_err(), "a reply cut at {cut} of {} parsed", full.len());
        }
        let mut extra = full.clone();
        extra.extend(b"T k-3 0 0\n");
        assert!(parse_sync(&extra).unwrap_err().contains("after END"));
    }

    #[test]
    fn malformed_replies_are_refused_without_panicking() {
        let bad: &[&[u8]] = &[
            b"DELEGATE-SYNC 2 0 0 t\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t\nEND\n",
            b"DELEGATE-SYNC 1 0 2 t\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t\nF k state 0 1 1\nx\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t\nT k 1 1\nF k nosuch 0 1 1\nx\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t\nT k 1 1\nF k state 0 1 2\nxy\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t\nT k 1 1\nF k state 18446744073709551615 18446744073709551615 9\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t\nT k 1 1\nF k state 0 3 3\nxyzEND\n",
            b"DELEGATE-SYNC 1 1 0 t\nT k 1 1\nF k state 0 99999999999999999999 1\nx\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t\nT k 1 1\nS k state 0\nEND\n",
            b"DELEGATE-SYNC 1 2 0 t\nT k 1 1\nT k 1 1\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t\nT k 1 1\nL k 99\n{}\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t\nT k 1 1\n\xff\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t\nT k 1 1\nEND \n",
            b"no header at all",
        ];
        for b in bad {
            assert!(parse_sync(b).is_err(), "{:?} parsed", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn requests_render_as_base64_fields_and_refuse_what_the_script_cannot_carry() {
        let task = |key: &str| SyncTaskRequest {
            task_key: key.into(),
            session: "dlg-k".into(),
            offsets: BTreeMap::from([("exit".to_string(), 3), ("stderr.log".to_string(), u64::MAX)]),
            want_launch_json: true,
        };
        let req = SyncRequest { remote_root: "~/.delegate".into(), tasks: vec![task("ab-1")], max_bytes_per_file: 10 };
        let s = render_sync(&req).unwrap();
        let first = std::str::from_utf8(&s[..s.iter().position(|b| *b == b'\n').unwrap()]).unwrap();
        let b64 = first.strip_prefix("DLG_VARS='").unwrap().strip_suffix('\'').unwrap();
        let vars = B64.decode(b64).unwrap();
        let fields: Vec<&[u8]> = vars.split(|b| *b == b'\n').collect();
        let fields: Vec<String> =
            fields[..fields.len() - 1].iter().map(|f| String::from_utf8_lossy(f).into()).collect();
        let max = (i64::MAX as u64).to_string();
        assert_eq!(fields, ["~/.delegate", "10", "ab-1", "dlg-k", "1", "0", "3", "0", "0", "0", &max]);
        assert!(s.ends_with(b"main delegate-sync-complete\n"));

        for bad in [
            SyncRequest { tasks: vec![task("a b")], ..req.clone() },
            SyncRequest { tasks: vec![task("..")], ..req.clone() },
            SyncRequest { tasks: vec![task("a/b")], ..req.clone() },
            SyncRequest { tasks: vec![task("k"), task("k")], ..req.clone() },
            SyncRequest { max_bytes_per_file: 0, ..req.clone() },
            SyncRequest { remote_root: "relative".into(), ..req.clone() },
            SyncRequest {
                tasks: vec![SyncTaskRequest { offsets: BTreeMap::from([("prompt".to_string(), 0)]), ..task("k") }],
                ..req.clone()
            },
            SyncRequest { tasks: vec![SyncTaskRequest { session: "a\nb".into(), ..task("k") }], ..req.clone() },
        ] {
            assert!(render_sync(&bad).is_err(), "{bad:?}");
        }
        assert!(render_cancel("/r", "k-1", "dlg-k-1").unwrap().ends_with(b"main delegate-cancel-complete\n"));
        assert!(render_cancel("/r", "../x", "dlg").is_err());
    }

    #[test]
    fn cancel_output_parses() {
        assert_eq!(parse_cancel(b"noise\nDELEGATE-CANCEL signalled\n"), Some(CancelState::Signalled));
        assert_eq!(parse_cancel(b"DELEGATE-CANCEL already-finished\n"), Some(CancelState::AlreadyFinished));
        assert_eq!(parse_cancel(b"DELEGATE-CANCEL maybe\n"), None);
        assert_eq!(parse_cancel(b""), None);
    }
}
