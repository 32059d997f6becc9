//! The wire protocol of the scripts that follow a launch: `remote/scripts/sync.sh` (one SSH exec
//! reports on every task of a host: which task directories exist, which tmux sessions live,
//! and the bytes each task file gained since the offsets the lead holds),
//! `remote/scripts/cancel.sh` (stop one task's agent) and `remote/scripts/say.sh` (queue a message for one
//! task's agent in its `inbox.jsonl`; the receipts come back in `delivered.jsonl` with the
//! sync).
//!
//! All are real bash files sent on stdin to bash (`runner::REMOTE_COMMAND`), shaped like the launch script:
//! Rust prepends only `DLG_VARS='<base64>'`, the variable parts as separated fields, and
//! the body ends in `main <sentinel>` so a script cut off in transit runs nothing. The sync
//! fields are newline-separated (each is checked to be a single line) and escaped text
//! (`remote::escape`), decoded by one `printf %b` and split by bash's word splitting: no
//! process and no byte-per-syscall pipe read, which a sync of hundreds of tasks would feel;
//! the cancel and say fields are NUL-separated base64.
//!
//! The sync reply is framed by lengths, never by delimiters, so a file's bytes may hold
//! anything (newlines, `END`, NULs):
//!
//! ```text
//! DELEGATE-SYNC 1 <tasks> <tmux server running 0|1> <remote utc time> <fs clock|-|=>
//! A <len>\n<len bytes>\n                                    (large sync) the live tmux sessions,
//!                                                            ":"-separated
//! Q <count>                                                  (large sync) the tasks not named by
//!                                                            a T line: quiet, alive when A lists them
//! T <task key> <dir exists 0|1> <session alive 0|1|?>      per task (not counted by Q), in
//!                                                            request order; ? = look it up in A
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

pub const SYNC_SH: &str = include_str!("scripts/sync.sh");
pub const CANCEL_SH: &str = include_str!("scripts/cancel.sh");
pub const SAY_SH: &str = include_str!("scripts/say.sh");
/// `foreign_root`, put in front of the three scripts above.
pub const OWN_ROOT_SH: &str = include_str!("scripts/own-root.sh");

/// The task files a sync reads, in the order their offsets travel to the script.
/// `delivered.jsonl` holds the receipts of the lead's messages (see `remote/scripts/inbox.sh`).
pub const SYNCED_FILES: [&str; 7] =
    ["state", "exit", "stream.jsonl", "events.jsonl", "outbox.jsonl", "stderr.log", "delivered.jsonl"];

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
    /// The brother's file-system clock ([`SyncReply::clock_ms`]) of the last sync that read
    /// every one of this task's files to the end, when there was one: the script then looks
    /// only at files modified since (less [`SINCE_MARGIN_SECS`]). `None` looks at all.
    pub clock_ms: Option<u64>,
}

/// How far before a task's stored clock its files are looked at again: room for the
/// coarse clock file systems stamp files with (a jiffy behind the real time) and for a
/// file written while the clock file was. On a file system that keeps whole seconds (or
/// two, FAT), or when the clock's milliseconds are 0 by chance: this.
pub const SINCE_MARGIN_SECS: u64 = 2;
/// The margin where the clock file's time had milliseconds: the file system keeps fine
/// times, which come from a clock at most a tick (a few ms) behind, so a file written
/// after the clock file is stamped no earlier than a tick before it. A short margin keeps
/// a file written a moment before a sync from being looked at by every poll after it.
pub const SINCE_MARGIN_FINE_MS: u64 = 100;

/// A sync of at most this many tasks looks at them with bash builtins first (sync.sh's
/// SMALL_SYNC, the same number): its quiet tasks need no find while their files are older
/// than their clocks, so the lead keeps every clock such a sync brings.
pub const SMALL_SYNC: usize = 32;

/// A sync of more than this many tasks (sync.sh's LARGE_SYNC) names only the tasks with
/// something to say and counts the rest in a `Q` line, and sends the live sessions for the
/// lead to look its tasks' sessions up in ([`parse_sync_for`]).
pub const LARGE_SYNC: usize = 64;

/// Every task of one host, for one exec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncRequest {
    pub remote_root: String,
    pub tasks: Vec<SyncTaskRequest>,
    /// At most this many bytes of one file per sync; the rest comes next time.
    pub max_bytes_per_file: u64,
    /// At most this many file bytes in the whole reply (the budget). Files past it are
    /// announced with no bytes (`F ... 0`), so the lead knows to ask again.
    pub max_bytes_total: u64,
}

/// New bytes of one task file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileDelta {
    pub file: String,
    pub offset: u64,
    /// The file's size when the script looked.
    pub size: u64,
    /// `file[offset..offset + len]`, `len` at most `size - offset`, `max_bytes_per_file` and
    /// what was left of `max_bytes_total`.
    pub bytes: Vec<u8>,
}

impl FileDelta {
    /// The file holds more than this reply carried (a cap or the budget cut it).
    pub fn cut(&self) -> bool {
        self.offset.saturating_add(self.bytes.len() as u64) < self.size
    }
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
    /// The brother's file-system clock (milliseconds since the epoch) before the script
    /// looked at any task file: the modification time of a file it wrote. `None` when it
    /// could not write one. A file changed after the script looked is stamped later.
    pub clock_ms: Option<u64>,
    /// The script needed no clock (`=`): a small sync found every quiet task unchanged
    /// since the since it was given, so it read no file and asked no find. The clocks the
    /// lead holds stand (`clock_ms` is then `None` without meaning "could not").
    pub clock_skipped: bool,
}

/// What a large sync's reply says in bulk, before [`parse_sync_for`] settles it against the
/// request: the live sessions (`A`), the tasks counted by `Q`, and which `T` lines said `?`.
#[derive(Debug, Default)]
struct Bulk {
    live: Option<std::collections::HashSet<String>>,
    quiet: u64,
    unknown_alive: Vec<usize>,
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
    crate::hosts::inventory::check_remote_path(root).map_err(|m| refuse(what, format!("remote root: {m}")))
}

/// The fields, each followed by `sep`.
fn joined(fields: &[String], sep: u8) -> Vec<u8> {
    let mut vars = Vec::with_capacity(fields.iter().map(|f| f.len() + 1).sum());
    for f in fields {
        vars.extend_from_slice(f.as_bytes());
        vars.push(sep);
    }
    vars
}

/// `DLG_VARS='<value>'` and a newline, own-root.sh, then the body. `value` is base64 (cancel,
/// say) or escaped text (sync: `remote::escape`, decoded by one `printf %b`, no process).
fn script(value: &str, body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + OWN_ROOT_SH.len() + body.len() + 16);
    out.extend_from_slice(format!("DLG_VARS='{value}'\n").as_bytes());
    out.extend_from_slice(OWN_ROOT_SH.as_bytes());
    out.extend_from_slice(body.as_bytes());
    out
}

/// The sync script for one host, as sent on stdin. Refuses keys that are not plain file
/// names, session names with spaces, unknown file names in `offsets`, duplicate tasks and a
/// zero `max_bytes_per_file` or `max_bytes_total`.
pub fn render_sync(req: &SyncRequest) -> Result<Vec<u8>> {
    check_root("sync", &req.remote_root)?;
    if req.max_bytes_per_file == 0 {
        return Err(refuse("sync", "max_bytes_per_file must be at least 1".into()));
    }
    if req.max_bytes_total == 0 {
        return Err(refuse("sync", "max_bytes_total must be at least 1".into()));
    }
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
    }
    // The tasks whose files are all looked at first, then the quiet ones, looked at since
    // the oldest of their clocks (less the margin).
    let since_of = |t: &SyncTaskRequest| {
        let margin = |c: u64| if c.is_multiple_of(1000) { SINCE_MARGIN_SECS * 1000 } else { SINCE_MARGIN_FINE_MS };
        t.clock_ms.map(|c| c.saturating_sub(margin(c))).filter(|s| *s >= 1000)
    };
    let (full, quiet): (Vec<&SyncTaskRequest>, Vec<&SyncTaskRequest>) =
        req.tasks.iter().partition(|t| since_of(t).is_none());
    // Seconds, with milliseconds when there are any (find's -newermt and touch -d take both).
    let since = match quiet.iter().filter_map(|t| since_of(t)).min().unwrap_or(0) {
        ms if ms.is_multiple_of(1000) => (ms / 1000).to_string(),
        ms => format!("{}.{:03}", ms / 1000, ms % 1000),
    };
    let mut fields = Vec::with_capacity(6 + req.tasks.len() * (3 + SYNCED_FILES.len()));
    fields.push(req.remote_root.clone());
    fields.push(req.max_bytes_per_file.min(i64::MAX as u64).to_string());
    fields.push(req.max_bytes_total.min(i64::MAX as u64).to_string());
    fields.push(since);
    fields.push(full.len().to_string());
    fields.push(req.tasks.len().to_string());
    fields.push(req.tasks.iter().filter(|t| t.want_launch_json).count().to_string());
    let ordered: Vec<&SyncTaskRequest> = full.into_iter().chain(quiet).collect();
    // What the request need not carry, for it to fit fewer TCP windows (a thousand tasks'
    // ~78 KB took three round trips after an idle spell): the keys' common prefix (the
    // mailbox id) once, and for a large sync no session names (the lead looks them up in
    // the brother's list itself; `-` in their place).
    let prefix = key_prefix(ordered.iter().map(|t| t.task_key.as_str()));
    fields.push(format!("p{prefix}"));
    fields.extend(ordered.iter().map(|t| t.task_key[prefix.len()..].to_string()));
    let large = req.tasks.len() > LARGE_SYNC;
    for t in &ordered {
        fields.push(if large { "-".into() } else { t.session.clone() });
        fields.push(if t.want_launch_json { "1" } else { "0" }.into());
        for f in SYNCED_FILES {
            let off = t.offsets.get(f).copied().unwrap_or(0).min(i64::MAX as u64);
            fields.push(off.to_string());
        }
    }
    // Keys and sessions are checked above, the root has no control characters: every field
    // is one line, so newlines can separate them.
    Ok(script(&super::escape::escape(&joined(&fields, b'\n')), &[super::TMUX_CONTROL_SH, SYNC_SH].concat()))
}

/// The longest prefix shared by every key that ends just after a `-` and leaves each key
/// something (keys are `<mailbox id>-<task>[-r<run>]`): sent once for all of them.
fn key_prefix<'a>(mut keys: impl Iterator<Item = &'a str>) -> &'a str {
    let Some(first) = keys.next() else { return "" };
    let (mut common, mut shortest) = (first.len(), first.len());
    for k in keys {
        common = first.bytes().zip(k.bytes()).take(common).take_while(|(a, b)| a == b).count();
        shortest = shortest.min(k.len());
    }
    // Shorter than every key, so that none is sent empty.
    match first[..common.min(shortest.saturating_sub(1))].rfind('-') {
        Some(dash) => &first[..=dash],
        None => "",
    }
}

/// Reads a reply of the sync script. Strict: anything but the framing above (a missing
/// `END`, bytes after it, a length running past the end, a delta for a task not announced,
/// a task count that does not match the header) is an error naming what was wrong.
pub fn parse_sync(stdout: &[u8]) -> std::result::Result<SyncReply, String> {
    let (reply, bulk) = parse_raw(stdout)?;
    if bulk.quiet > 0 || !bulk.unknown_alive.is_empty() {
        return Err("a large sync's reply (Q or ? lines) where one task was asked for".into());
    }
    Ok(reply)
}

/// Reads the reply of a sync that asked about `asked` (task key, tmux session) in its
/// request: a large sync's `Q` tasks become reports (directory there, nothing new), and
/// each `?` and each of those is alive when the `A` block lists its session. The count
/// `Q` gives must be exactly the asked tasks no `T` line named, and a task not asked about
/// is refused.
pub fn parse_sync_for(stdout: &[u8], asked: &[(&str, &str)]) -> std::result::Result<SyncReply, String> {
    let (mut reply, bulk) = parse_raw(stdout)?;
    let session: std::collections::HashMap<&str, &str> = asked.iter().copied().collect();
    if let Some(t) = reply.tasks.iter().find(|t| !session.contains_key(t.task_key.as_str())) {
        return Err(format!("task {} was not asked about", t.task_key));
    }
    let live = |key: &str| match (&bulk.live, session.get(key)) {
        (Some(live), Some(s)) => live.contains(*s),
        _ => false,
    };
    for &i in &bulk.unknown_alive {
        reply.tasks[i].session_alive = live(&reply.tasks[i].task_key);
    }
    if bulk.quiet > 0 {
        let named: std::collections::HashSet<&str> = reply.tasks.iter().map(|t| t.task_key.as_str()).collect();
        let rest: Vec<&str> = asked.iter().map(|(k, _)| *k).filter(|k| !named.contains(k)).collect();
        if rest.len() as u64 != bulk.quiet {
            return Err(format!(
                "the reply counts {} quiet tasks, but {} asked for were not named",
                bulk.quiet,
                rest.len()
            ));
        }
        let quiet: Vec<TaskReport> = rest
            .into_iter()
            .map(|key| TaskReport {
                task_key: key.to_string(),
                dir_exists: true,
                session_alive: live(key),
                ..Default::default()
            })
            .collect();
        reply.tasks.extend(quiet);
    }
    Ok(reply)
}

/// The most sessions an `A` block may list (a tmux server of a brother holds far fewer).
const MAX_LISTED_SESSIONS: usize = 1 << 20;

fn parse_raw(stdout: &[u8]) -> std::result::Result<(SyncReply, Bulk), String> {
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
    let (count, running, remote_time, clock_ms) = match header.as_slice() {
        ["DELEGATE-SYNC", "1", n, running, time, clock] => {
            (num(n, "task count")?, flag(running)?, time.to_string(), clock_millis(clock)?)
        }
        ["DELEGATE-SYNC", version, ..] => return Err(format!("unknown sync protocol version {version:?}")),
        _ => return Err(format!("malformed header {:?}", header.join(" "))),
    };
    let clock_skipped = header.last() == Some(&"=");
    let mut reply = SyncReply { tasks: Vec::new(), tmux_server_running: running, remote_time, clock_ms, clock_skipped };
    let mut bulk = Bulk::default();
    let mut quiet_seen = false;
    let mut keys = std::collections::HashSet::new();
    loop {
        let words = r.line()?;
        match words.as_slice() {
            ["A", len] => {
                if bulk.live.is_some() || quiet_seen || !reply.tasks.is_empty() || !running {
                    return Err("a session list (A) out of place".into());
                }
                let len = num(len, "length")?;
                let names = r.block(len)?;
                let names = std::str::from_utf8(&names).map_err(|_| "the session list is not UTF-8".to_string())?;
                let live: std::collections::HashSet<String> =
                    names.split(':').filter(|n| !n.is_empty()).take(MAX_LISTED_SESSIONS).map(str::to_string).collect();
                bulk.live = Some(live);
            }
            ["Q", count] => {
                if quiet_seen || !reply.tasks.is_empty() {
                    return Err("a quiet count (Q) out of place".into());
                }
                quiet_seen = true;
                bulk.quiet = num(count, "quiet count")?;
            }
            ["T", key, dir, alive] => {
                if !keys.insert(key.to_string()) {
                    return Err(format!("task {key} reported twice"));
                }
                let session_alive = match *alive {
                    "?" if bulk.live.is_some() => {
                        bulk.unknown_alive.push(reply.tasks.len());
                        false
                    }
                    "?" => return Err(format!("task {key}: alive is ? with no session list")),
                    alive => flag(alive)?,
                };
                reply.tasks.push(TaskReport {
                    task_key: key.to_string(),
                    dir_exists: flag(dir)?,
                    session_alive,
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
                let held = (reply.tasks.len() as u64).saturating_add(bulk.quiet);
                if held != count {
                    return Err(format!("the header announced {count} tasks, the reply holds {held}"));
                }
                return Ok((reply, bulk));
            }
            other => return Err(format!("unexpected line {:?}", other.join(" "))),
        }
    }
}

/// The header's file-system clock, `<seconds>[.<fraction>]`, `-` or `=`, in milliseconds.
fn clock_millis(word: &str) -> std::result::Result<Option<u64>, String> {
    if word == "-" || word == "=" {
        return Ok(None);
    }
    let (secs, frac) = word.split_once('.').unwrap_or((word, "0"));
    let digits = |s: &str, max: usize| !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(secs, 12) || !digits(frac, 10) {
        return Err(format!("clock {word:?} is not a time"));
    }
    let millis: u64 = format!("{frac:0<3}")[..3].parse().unwrap_or(0);
    Ok(Some(secs.parse::<u64>().unwrap_or(0) * 1000 + millis))
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
    let fields = [remote_root.to_string(), task_key.to_string(), session.to_string()];
    Ok(script(&B64.encode(joined(&fields, 0)), CANCEL_SH))
}

/// The state in the cancel script's output, if it printed one.
pub fn parse_cancel(stdout: &[u8]) -> Option<CancelState> {
    let text = String::from_utf8_lossy(stdout);
    let word = text.lines().find_map(|l| l.strip_prefix("DELEGATE-CANCEL "))?.trim();
    [CancelState::Signalled, CancelState::AlreadyFinished, CancelState::NotStarted, CancelState::NoTask]
        .into_iter()
        .find(|s| s.as_str() == word)
}

/// What `say.sh` did (its one `DELEGATE-SAY <state>` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SayState {
    /// Appended to the task's `inbox.jsonl`.
    Queued,
    /// A line with this id was there already (a retry): nothing appended. Whether it was
    /// delivered shows in `delivered.jsonl`.
    AlreadyQueued,
    /// The runner has written `exit`: the run is over and nobody would read the message
    /// (resume the agent instead).
    Finished,
    /// No task directory on the brother.
    NoTask,
}

impl SayState {
    pub fn as_str(self) -> &'static str {
        match self {
            SayState::Queued => "queued",
            SayState::AlreadyQueued => "already-queued",
            SayState::Finished => "finished",
            SayState::NoTask => "no-task",
        }
    }
}

/// The longest inbox line `render_say` accepts. A message is text for an agent, not a file
/// transfer, and the brother decodes it in bash, in time linear in its escapes but not fast.
pub const MAX_SAY_LINE: usize = 256 * 1024;
/// Limits on the raw (escaped) `at` and `author` of an inbox line: the brother's readers
/// find the text within the first KiB of a line.
const MAX_SAY_AT: usize = 64;
const MAX_SAY_AUTHOR: usize = 256;

/// One inbox line for message `id`, in the exact shape `say.sh` and the brother's readers
/// expect: `{"id":<id>,"at":"<at>","author":<json>,"text":<json>}`.
pub fn say_line(id: i64, at: &str, author: &str, text: &str) -> String {
    let json = |s: &str| serde_json::Value::from(s).to_string();
    format!("{{\"id\":{id},\"at\":{},\"author\":{},\"text\":{}}}", json(at), json(author), json(text))
}

/// The say script for message `id` of one task, as sent on stdin. `line` must be one line
/// of JSON: an object with exactly the keys `id` (an integer equal to `id`), `at`, `author`
/// and `text` (strings). The brother's readers take the line apart by position and copy the
/// text's escapes verbatim into the Claude hook's JSON, so it travels in the exact shape
/// [`say_line`] builds: a line already in that shape (with any valid escaping) is sent as
/// it is; the same object in another key order or spacing (`serde_json::json!` sorts its
/// keys) is rebuilt with [`say_line`]; anything else is refused here rather than misread
/// there.
pub fn render_say(remote_root: &str, task_key: &str, id: i64, line: &str) -> Result<Vec<u8>> {
    check_root("say", remote_root)?;
    check_key(task_key).map_err(|_| refuse("say", format!("task key {task_key:?} is not a plain file name")))?;
    let line = inbox_line(id, line).map_err(|m| refuse("say", format!("message {id}: {m}")))?;
    let fields = [remote_root.to_string(), task_key.to_string(), id.to_string(), line];
    Ok(script(&B64.encode(joined(&fields, 0)), SAY_SH))
}

/// `line` in the exact inbox shape (see [`render_say`]), or why it cannot be.
fn inbox_line(id: i64, line: &str) -> std::result::Result<String, String> {
    if line.contains(['\n', '\r']) {
        return Err("the inbox line must be a single line".into());
    }
    let not_exact = match check_say_line(id, line) {
        Ok(()) => return Ok(line.to_string()),
        Err(why) => why,
    };
    let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(line) else {
        // Not a JSON object either: say why it is not the shape.
        return Err(not_exact);
    };
    let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != ["at", "author", "id", "text"] {
        return Err(format!("the inbox line must hold exactly the keys id, at, author and text, not {keys:?}"));
    }
    if o["id"].as_i64() != Some(id) {
        return Err(format!("the inbox line's id is {}", o["id"]));
    }
    let (Some(at), Some(author), Some(text)) = (o["at"].as_str(), o["author"].as_str(), o["text"].as_str()) else {
        return Err("at, author and text must be JSON strings".into());
    };
    let rebuilt = say_line(id, at, author, text);
    check_say_line(id, &rebuilt)?;
    Ok(rebuilt)
}

/// The state in the say script's output, if it printed one.
pub fn parse_say(stdout: &[u8]) -> Option<SayState> {
    let text = String::from_utf8_lossy(stdout);
    let word = text.lines().find_map(|l| l.strip_prefix("DELEGATE-SAY "))?.trim();
    [SayState::Queued, SayState::AlreadyQueued, SayState::Finished, SayState::NoTask]
        .into_iter()
        .find(|s| s.as_str() == word)
}

fn check_say_line(id: i64, line: &str) -> std::result::Result<(), String> {
    if id < 1 {
        return Err("the id must be a positive integer".into());
    }
    if line.len() > MAX_SAY_LINE {
        return Err(format!("the inbox line is {} bytes, more than {MAX_SAY_LINE}", line.len()));
    }
    let shape = "the inbox line must be exactly {\"id\":N,\"at\":\"..\",\"author\":\"..\",\"text\":\"..\"} \
                 (these keys in this order, no spaces)";
    let prefix = format!("{{\"id\":{id},\"at\":");
    let rest = line.strip_prefix(&prefix).ok_or_else(|| format!("{shape}, with id {id}"))?;
    let (at, rest) = json_string(rest, "at")?;
    if at.is_empty() || at.len() > MAX_SAY_AT || at.contains('\\') || at.chars().any(char::is_control) {
        return Err(format!("\"at\" must be a plain timestamp of at most {MAX_SAY_AT} bytes, without escapes"));
    }
    let rest = rest.strip_prefix(",\"author\":").ok_or(shape)?;
    let (author, rest) = json_string(rest, "author")?;
    if author.len() > MAX_SAY_AUTHOR {
        return Err(format!("\"author\" is longer than {MAX_SAY_AUTHOR} bytes"));
    }
    let rest = rest.strip_prefix(",\"text\":").ok_or(shape)?;
    let (_text, rest) = json_string(rest, "text")?;
    if rest != "}" {
        return Err(shape.into());
    }
    Ok(())
}

/// Splits the JSON string literal at the start of `s` into its body (still escaped) and
/// what follows it; an error unless the literal is a valid JSON string (no raw control
/// characters, known escapes only, no lone surrogates).
fn json_string<'a>(s: &'a str, what: &str) -> std::result::Result<(&'a str, &'a str), String> {
    let b = s.as_bytes();
    if b.first() != Some(&b'"') {
        return Err(format!("\"{what}\" is not a JSON string"));
    }
    let mut i = 1;
    while i < b.len() && b[i] != b'"' {
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    if i >= b.len() {
        return Err(format!("\"{what}\" is not a closed JSON string"));
    }
    serde_json::from_str::<String>(&s[..=i]).map_err(|e| format!("\"{what}\" is not a valid JSON string: {e}"))?;
    Ok((&s[1..i], &s[i + 1..]))
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
            b"DELEGATE-SYNC 1 2 1 2026-11-21T10:00:00.000001Z 1796623589.5952936020\n",
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
        assert_eq!(r.clock_ms, Some(1_796_623_589_595));
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
    fn a_file_past_the_budget_comes_with_no_bytes_and_counts_as_cut() {
        let out = reply(&[
            b"DELEGATE-SYNC 1 1 1 t -\n",
            b"T k-1 1 1\n",
            b"F k-1 stream.jsonl 0 10 4\nab\nc\n",
            b"F k-1 events.jsonl 3 9 0\n\n",
            b"F k-1 outbox.jsonl 0 2 2\nx\n\n",
            b"END\n",
        ]);
        let r = parse_sync(&out).unwrap();
        let d = &r.tasks[0].deltas;
        assert_eq!((d[0].bytes.as_slice(), d[0].cut()), (&b"ab\nc"[..], true));
        assert_eq!((d[1].offset, d[1].size, d[1].bytes.len(), d[1].cut()), (3, 9, 0, true));
        assert!(!d[2].cut(), "a file read to its size has nothing waiting");
    }

    #[test]
    fn the_small_sync_size_is_the_scripts() {
        assert!(SYNC_SH.contains(&format!("local -r SMALL_SYNC={SMALL_SYNC}\n")));
    }

    #[test]
    fn the_file_system_clock_is_read_or_refused() {
        assert_eq!(clock_millis("-"), Ok(None));
        assert_eq!(clock_millis("="), Ok(None));
        assert_eq!(clock_millis("1796623589"), Ok(Some(1_796_623_589_000)));
        assert_eq!(clock_millis("1796623589.5"), Ok(Some(1_796_623_589_500)));
        for bad in ["", ".5", "1.", "x", "1e9", "-1", "1.2.3", "9999999999999", "==", "=1"] {
            assert!(clock_millis(bad).is_err(), "{bad:?}");
        }
        // "=" (no clock needed) is told apart from "-" (none could be read).
        let reply =
            |clock: &str| parse_sync(format!("DELEGATE-SYNC 1 0 1 2026-12-07T00:00:00.0Z {clock}\nEND\n").as_bytes());
        assert!(reply("=").unwrap().clock_skipped && reply("=").unwrap().clock_ms.is_none());
        assert!(!reply("-").unwrap().clock_skipped && !reply("12.5").unwrap().clock_skipped);
    }

    /// The variables line of a rendered sync script, decoded.
    fn vars_text(script: &[u8]) -> String {
        let line = script.split(|b| *b == b'\n').next().unwrap();
        let text = std::str::from_utf8(&line[b"DLG_VARS='".len()..line.len() - 1]).unwrap();
        String::from_utf8(crate::remote::escape::unescape(text).unwrap()).unwrap()
    }

    #[test]
    fn tasks_with_a_clock_go_last_and_are_looked_at_since_the_oldest() {
        let task = |key: &str, clock_ms: Option<u64>| SyncTaskRequest {
            task_key: key.into(),
            session: format!("dlg-{key}"),
            clock_ms,
            ..Default::default()
        };
        let vars_of = |tasks: Vec<SyncTaskRequest>| {
            let script = render_sync(&SyncRequest {
                remote_root: "~/.delegate".into(),
                tasks,
                max_bytes_per_file: 10,
                max_bytes_total: 10,
            })
            .unwrap();
            vars_text(&script)
        };
        let vars =
            vars_of(vec![task("a", Some(50_000)), task("b", None), task("c", Some(20_900)), task("d", Some(1_000))]);
        let fields: Vec<&str> = vars.split('\n').collect();
        // since = 20.9 - 0.1 (c's clock has milliseconds: a file system with fine times;
        // a's has none: 50 - 2), the oldest; d's clock is within the margin of the epoch:
        // looked at whole. b and d first, all four keys, then a row of nine per task in
        // that order.
        // No launch.json wanted: nwant 0; no prefix shared.
        assert_eq!(&fields[3..12], ["20.800", "2", "4", "0", "p", "b", "d", "a", "c"]);
        assert_eq!(fields[12], "dlg-b");
        assert_eq!(fields[12 + 9 * 3], "dlg-c");
        assert_eq!(fields.len(), 8 + 4 + 4 * 9 + 1, "each field ends with a newline");
        // Whole seconds when the oldest is a clock without milliseconds.
        let vars = vars_of(vec![task("a", Some(50_000)), task("c", Some(52_050))]);
        assert_eq!(vars.split('\n').nth(3), Some("48"));
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
    fn the_keys_prefix_travels_once_and_a_large_sync_sends_no_sessions() {
        assert_eq!(key_prefix(["76ed57-1", "76ed57-12", "76ed57-3-r2"].into_iter()), "76ed57-");
        assert_eq!(key_prefix(["76ed57-1"].into_iter()), "76ed57-");
        assert_eq!(key_prefix(["a-b-1", "a-c-1"].into_iter()), "a-");
        // Never a whole key, even one ending in `-`; nothing when no `-` is shared.
        assert_eq!(key_prefix(["ab-", "ab-1"].into_iter()), "");
        assert_eq!(key_prefix(["a-1", "b-1"].into_iter()), "");
        assert_eq!(key_prefix(std::iter::empty()), "");

        let fields_of = |n: usize| {
            let tasks = (0..n)
                .map(|i| SyncTaskRequest {
                    task_key: format!("m1-{i}"),
                    session: format!("dlg-m1-{i}-1"),
                    ..Default::default()
                })
                .collect();
            let script = render_sync(&SyncRequest {
                remote_root: "~/r".into(),
                tasks,
                max_bytes_per_file: 1,
                max_bytes_total: 1,
            })
            .unwrap();
            vars_text(&script).split('\n').map(String::from).collect::<Vec<_>>()
        };
        let small = fields_of(LARGE_SYNC);
        assert_eq!(&small[7..10], ["pm1-", "0", "1"]);
        assert_eq!(small[8 + LARGE_SYNC], "dlg-m1-0-1");
        let large = fields_of(LARGE_SYNC + 1);
        assert_eq!(large[8 + LARGE_SYNC + 1], "-");
        assert!(large.iter().all(|f| !f.starts_with("dlg-")), "no session travels");
    }

    #[test]
    fn a_large_reply_is_read_against_its_request() {
        let asked = [("k-1", "dlg-k-1"), ("k-2", "dlg-k-2"), ("k-3", "dlg-k-3"), ("k-4", "dlg-k-4")];
        // k-2 named (dead, its directory gone), the other three counted; k-1 and k-3 listed.
        let reply = b"DELEGATE-SYNC 1 4 1 t 5.5\nA 23\ndlg-k-1:dlg-k-3:dlg-zzz\nQ 3\nT k-2 0 ?\nEND\n";
        let r = parse_sync_for(reply, &asked).unwrap();
        let got: Vec<(&str, bool, bool)> =
            r.tasks.iter().map(|t| (t.task_key.as_str(), t.dir_exists, t.session_alive)).collect();
        assert_eq!(got, [("k-2", false, false), ("k-1", true, true), ("k-3", true, true), ("k-4", true, false)]);
        assert!(r.tasks.iter().all(|t| t.deltas.is_empty() && t.launch_json.is_none()));
        // A named task may still say 0 or 1 itself (k-1 is not listed); k-2 is.
        let r = parse_sync_for(b"DELEGATE-SYNC 1 4 1 t -\nA 7\ndlg-k-2\nQ 3\nT k-1 1 1\nEND\n", &asked).unwrap();
        let alive: Vec<(&str, bool)> = r.tasks.iter().map(|t| (t.task_key.as_str(), t.session_alive)).collect();
        assert_eq!(alive, [("k-1", true), ("k-2", true), ("k-3", false), ("k-4", false)]);
        // A reply that names every task needs no request to be read, with or without Q 0.
        assert!(parse_sync(b"DELEGATE-SYNC 1 1 0 t -\nQ 0\nT k-1 1 0\nEND\n").is_ok());

        for bad in [
            // Counts that do not add up (the header, or the tasks left unnamed).
            &b"DELEGATE-SYNC 1 4 1 t -\nA 7\ndlg-k-1\nQ 2\nT k-2 1 ?\nEND\n"[..],
            b"DELEGATE-SYNC 1 4 1 t -\nA 7\ndlg-k-1\nQ 4\nT k-2 1 ?\nEND\n",
            b"DELEGATE-SYNC 1 5 1 t -\nA 7\ndlg-k-1\nQ 4\nT k-9 1 ?\nEND\n",
            // ? with no session list; a list when no server runs; a list or Q out of place.
            b"DELEGATE-SYNC 1 4 1 t -\nQ 3\nT k-2 1 ?\nEND\n",
            b"DELEGATE-SYNC 1 4 0 t -\nA 7\ndlg-k-1\nQ 4\nEND\n",
            b"DELEGATE-SYNC 1 4 1 t -\nQ 3\nA 7\ndlg-k-1\nT k-2 1 ?\nEND\n",
            b"DELEGATE-SYNC 1 4 1 t -\nA 7\ndlg-k-1\nT k-2 1 ?\nQ 3\nEND\n",
            b"DELEGATE-SYNC 1 4 1 t -\nA 7\ndlg-k-1\nA 7\ndlg-k-1\nQ 4\nEND\n",
            b"DELEGATE-SYNC 1 4 1 t -\nA 7\ndlg-k-1\nQ 3\nQ 0\nT k-2 1 ?\nEND\n",
            // A list that is not text, or cut short.
            b"DELEGATE-SYNC 1 4 1 t -\nA 2\n\xff\xfe\nQ 4\nEND\n",
            b"DELEGATE-SYNC 1 4 1 t -\nA 99\ndlg-k-1\nQ 4\nEND\n",
            b"DELEGATE-SYNC 1 4 1 t -\nA 7\ndlg-k-1\nQ x\nEND\n",
        ] {
            assert!(parse_sync_for(bad, &asked).is_err(), "{:?} parsed", String::from_utf8_lossy(bad));
        }
        // Read without its request, a reply that counts tasks or defers liveness is refused.
        assert!(parse_sync(b"DELEGATE-SYNC 1 4 1 t -\nA 7\ndlg-k-1\nQ 3\nT k-2 1 1\nEND\n").is_err());
        assert!(parse_sync(b"DELEGATE-SYNC 1 1 1 t -\nA 7\ndlg-k-1\nT k-2 1 ?\nEND\n").is_err());
    }

    #[test]
    fn malformed_replies_are_refused_without_panicking() {
        let bad: &[&[u8]] = &[
            b"DELEGATE-SYNC 2 0 0 t\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t -\nEND\n",
            b"DELEGATE-SYNC 1 0 2 t -\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t -\nF k state 0 1 1\nx\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t -\nT k 1 1\nF k nosuch 0 1 1\nx\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t -\nT k 1 1\nF k state 0 1 2\nxy\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t -\nT k 1 1\nF k state 18446744073709551615 18446744073709551615 9\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t -\nT k 1 1\nF k state 0 3 3\nxyzEND\n",
            b"DELEGATE-SYNC 1 1 0 t -\nT k 1 1\nF k state 0 99999999999999999999 1\nx\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t -\nT k 1 1\nS k state 0\nEND\n",
            b"DELEGATE-SYNC 1 2 0 t -\nT k 1 1\nT k 1 1\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t -\nT k 1 1\nL k 99\n{}\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t -\nT k 1 1\n\xff\nEND\n",
            b"DELEGATE-SYNC 1 1 0 t -\nT k 1 1\nEND \n",
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
            clock_ms: None,
        };
        let req = SyncRequest {
            remote_root: "~/.delegate".into(),
            tasks: vec![task("ab-1")],
            max_bytes_per_file: 10,
            max_bytes_total: 20,
        };
        let s = render_sync(&req).unwrap();
        let first = std::str::from_utf8(&s[..s.iter().position(|b| *b == b'\n').unwrap()]).unwrap();
        let text = first.strip_prefix("DLG_VARS='").unwrap().strip_suffix('\'').unwrap();
        let vars = crate::remote::escape::unescape(text).unwrap();
        let fields: Vec<&[u8]> = vars.split(|b| *b == b'\n').collect();
        let fields: Vec<String> =
            fields[..fields.len() - 1].iter().map(|f| String::from_utf8_lossy(f).into()).collect();
        let max = (i64::MAX as u64).to_string();
        // root, caps, since, nfull, n, nwant, p and the keys' prefix, the keys less it, then
        // a row per task.
        let want = [
            "~/.delegate",
            "10",
            "20",
            "0",
            "1",
            "1",
            "1",
            "pab-",
            "1",
            "dlg-k",
            "1",
            "0",
            "3",
            "0",
            "0",
            "0",
            &max,
            "0",
        ];
        assert_eq!(fields, want);
        assert!(s.ends_with(b"main delegate-sync-complete\n"));

        for bad in [
            SyncRequest { tasks: vec![task("a b")], ..req.clone() },
            SyncRequest { tasks: vec![task("..")], ..req.clone() },
            SyncRequest { tasks: vec![task("a/b")], ..req.clone() },
            SyncRequest { tasks: vec![task("k"), task("k")], ..req.clone() },
            SyncRequest { max_bytes_per_file: 0, ..req.clone() },
            SyncRequest { max_bytes_total: 0, ..req.clone() },
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

    #[test]
    fn say_lines_must_have_the_shape_the_brother_reads() {
        let ok = say_line(3, "2026-11-21T10:00:00.000001Z", "lead", "a \"b\" \\ c\n\u{1}é😀");
        assert_eq!(
            ok,
            r#"{"id":3,"at":"2026-11-21T10:00:00.000001Z","author":"lead","text":"a \"b\" \\ c\n\u0001é😀"}"#
        );
        let s = render_say("~/.delegate", "k-1", 3, &ok).unwrap();
        assert!(s.ends_with(b"main delegate-say-complete\n"));
        let first = std::str::from_utf8(&s[..s.iter().position(|b| *b == b'\n').unwrap()]).unwrap();
        let vars = B64.decode(first.strip_prefix("DLG_VARS='").unwrap().strip_suffix('\'').unwrap()).unwrap();
        let fields: Vec<&[u8]> = vars.split(|b| *b == 0).collect();
        assert_eq!(fields, [&b"~/.delegate"[..], b"k-1", b"3", ok.as_bytes(), b""]);
        // Other valid escapings of the same strings are fine too.
        let escaped = r#"{"id":3,"at":"t","author":"\u006cead","text":"\ud83d\ude00 \/ \b\f\r\t"}"#;
        assert!(render_say("/r", "k-1", 3, escaped).is_ok());

        // The same object in another order or spacing (serde_json::json! sorts its keys) is
        // rebuilt in the exact shape; other escapings of that shape travel as they are.
        let sorted = serde_json::json!({"id": 3, "at": "t", "author": "le \"ad\"", "text": "a\u{1}😀"}).to_string();
        assert!(sorted.starts_with(r#"{"at":"t","#), "{sorted}");
        for (given, sent) in [
            (sorted.as_str(), say_line(3, "t", "le \"ad\"", "a\u{1}😀")),
            (r#"{ "text" : "x", "author":"a","at":"t", "id":3 } "#, say_line(3, "t", "a", "x")),
            (escaped, escaped.to_string()),
        ] {
            let s = render_say("/r", "k-1", 3, given).unwrap();
            let first = std::str::from_utf8(&s[..s.iter().position(|b| *b == b'\n').unwrap()]).unwrap();
            let vars = B64.decode(first.strip_prefix("DLG_VARS='").unwrap().strip_suffix('\'').unwrap()).unwrap();
            assert_eq!(vars.split(|b| *b == 0).nth(3).unwrap(), sent.as_bytes(), "{given}");
        }

        let big = say_line(1, "t", "lead", &"x".repeat(MAX_SAY_LINE));
        for (id, line) in [
            (4, ok.as_str()),                                                       // another id
            (4, sorted.as_str()),                                                   // another id
            (0, r#"{"id":0,"at":"t","author":"a","text":"x"}"#),                    // not positive
            (3, &format!("{ok}\n")),                                                // two lines
            (3, "{\"id\":3,\n\"at\":\"t\",\"author\":\"a\",\"text\":\"x\"}"),       // pretty-printed
            (3, r#"{"id":3,"at":"t","author":"a","text":"x","more":1}"#),           // extra key
            (3, r#"{"id":3,"at":"t","author":"a"}"#),                               // missing key
            (3, r#"{"id":3,"at":"t","author":"a","text":"x"} x"#),                  // trailing bytes
            (3, r#"{"id":3,"at":"t","author":"a","text":"x"#),                      // cut
            (3, r#"{"id":3,"at":"t","author":"a","text":"a\qb"}"#),                 // unknown escape
            (3, r#"{"id":3,"at":"t","author":"a","text":"\ud800"}"#),               // lone surrogate
            (3, "{\"id\":3,\"at\":\"t\",\"author\":\"a\",\"text\":\"tab\there\"}"), // raw control
            (3, r#"{"id":3,"at":"t\"x","author":"a","text":"x"}"#),                 // escape in at
            (3, r#"{"id":3,"at":"","author":"a","text":"x"}"#),                     // empty at
            (3, &say_line(3, "t", &"a".repeat(257), "x")),                          // long author
            (3, r#"{"id":3,"at":"t","author":"a","text":5}"#),                      // not a string
            (3, r#"{"id":03,"at":"t","author":"a","text":"x"}"#),                   // another spelling
            (1, big.as_str()),                                                      // too long
        ] {
            assert!(render_say("/r", "k-1", id, line).is_err(), "{id} {line:.80}");
        }
        assert!(render_say("/r", "../x", 3, &ok).is_err());
        assert!(render_say("relative", "k-1", 3, &ok).is_err());
    }

    #[test]
    fn say_output_parses() {
        assert_eq!(parse_say(b"motd\nDELEGATE-SAY queued\n"), Some(SayState::Queued));
        assert_eq!(parse_say(b"DELEGATE-SAY already-queued\n"), Some(SayState::AlreadyQueued));
        assert_eq!(parse_say(b"DELEGATE-SAY finished\n"), Some(SayState::Finished));
        assert_eq!(parse_say(b"DELEGATE-SAY no-task\n"), Some(SayState::NoTask));
        assert_eq!(parse_say(b"DELEGATE-SAY maybe\n"), None);
        assert_eq!(parse_say(b""), None);
    }
}
