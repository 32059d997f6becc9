//! The resident brother shell: one long-lived session channel per held connection, running a
//! small bash loop (`resident.sh`) that takes framed scripts on its stdin and answers with
//! framed output. A script sent through it costs no channel open, no exec request and no bash
//! start on the brother: one write and the reply, where a fresh exec costs three round trips.
//!
//! Honesty, as for a plain exec:
//! - a request goes out only on a shell that said it is ready and has nothing unexplained
//!   pending; otherwise nothing was sent and the caller may use another way;
//! - once a request's bytes went out, its answer is read or the request is reported `broken`
//!   with `Exit::Unknown`, exactly as a dropped exec channel is: never sent again. The launch
//!   then becomes `launch_unknown` and a sync simply errors (its offsets were not advanced);
//! - every request carries a fresh nonce, and only output framed with that nonce is its
//!   reply, so two requests' replies can never be mixed up;
//! - output is capped per stream ([`super::MAX_EXEC_OUTPUT`]); a brother sending more gets its
//!   shell killed and the request reports `overflow`, with memory bounded by the cap.
//!
//! Requests are served one at a time; [`super::Session::run_script`] sends a request that
//! finds the shell busy over a channel of its own when the server has one free.

use std::time::Duration;

use russh::client;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};

use super::slots::Slot;
use super::{ExecOutput, Exit};

/// The loop, run as `bash -c '<loop>'`.
pub(crate) const LOOP_SH: &str = include_str!("resident.sh");

/// What the loop prints once it runs (after checking the `dd` it needs works).
const READY: &[u8] = b"\x1edlg-ready 1\x1e\n";

/// How long a starting shell may take to say it is ready (capped by the handshake timeout):
/// a forced command that ignores ours never says it, and then this connection uses one exec
/// per command instead.
pub(crate) const READY_WAIT: Duration = Duration::from_secs(5);

/// A shell left idle longer than this is pinged before a script goes to it: a link that
/// died silently meanwhile (a network change) would otherwise swallow the script, and its
/// answer could only be "unknown".
pub(crate) const IDLE_PROBE: Duration = Duration::from_secs(5);

/// The remote command that starts the loop.
pub(crate) fn command() -> String {
    format!("bash -c '{LOOP_SH}'")
}

/// Where the connection's resident shell stands.
#[derive(Default)]
pub(crate) enum State {
    /// None yet, or the last one ended: the next request may start one.
    #[default]
    Down,
    Up(Resident),
}

/// A running resident shell on its own channel (holding one of the connection's channel places).
pub(crate) struct Resident {
    reader: ChannelReadHalf,
    writer: ChannelWriteHalf<client::Msg>,
    _slot: Slot,
    /// When its last reply ended.
    idle_since: std::time::Instant,
    /// The script bodies this shell keeps (`D` frames sent), by id.
    kept: std::collections::HashSet<&'static str>,
}

/// Why a shell could not be started: the connection then runs one exec per command.
pub(crate) struct Refused(pub String);

impl Resident {
    /// Starts the loop on `channel` (already open) and waits up to `wait` for its ready line.
    pub(crate) async fn start(
        channel: russh::Channel<client::Msg>,
        slot: Slot,
        wait: Duration,
    ) -> Result<Resident, Refused> {
        let (mut reader, writer) = channel.split();
        let started = async {
            writer.exec(true, command()).await.map_err(|e| format!("the exec request failed: {e}"))?;
            let (mut seen, mut errors) = (Vec::new(), Vec::new());
            loop {
                match reader.wait().await {
                    Some(ChannelMsg::Data { data }) => {
                        super::keep(&mut seen, &data, READY.len() + 1);
                        if seen.len() >= READY.len() {
                            return if seen == READY {
                                Ok(())
                            } else {
                                Err(format!(
                                    "it printed {}",
                                    crate::sanitize::clean_line(&String::from_utf8_lossy(&seen), 80)
                                ))
                            };
                        }
                    }
                    Some(ChannelMsg::ExtendedData { data, .. }) => super::keep(&mut errors, &data, 200),
                    Some(ChannelMsg::Failure) => return Err("the server refused the command".to_string()),
                    Some(
                        ChannelMsg::ExitStatus { .. }
                        | ChannelMsg::ExitSignal { .. }
                        | ChannelMsg::Eof
                        | ChannelMsg::Close,
                    )
                    | None => {
                        let said = crate::sanitize::clean_line(&String::from_utf8_lossy(&errors), 200);
                        return Err(format!(
                            "it ended before it was ready{}",
                            if said.is_empty() { String::new() } else { format!(": {said}") }
                        ));
                    }
                    Some(_) => {}
                }
            }
        };
        let outcome = match tokio::time::timeout(wait, started).await {
            Ok(r) => r,
            Err(_) => Err(format!("no ready line within {wait:?}")),
        };
        match outcome {
            Ok(()) => Ok(Resident {
                reader,
                writer,
                _slot: slot,
                idle_since: std::time::Instant::now(),
                kept: Default::default(),
            }),
            Err(why) => {
                end(&writer).await;
                Err(Refused(why))
            }
        }
    }

    pub(crate) fn idle_for(&self) -> Duration {
        self.idle_since.elapsed()
    }

    /// Whether a request may be sent: the shell has not ended and has sent nothing since the
    /// last reply (output between requests is unexplained; the shell is then let go).
    pub(crate) fn usable(&mut self) -> bool {
        use futures_util::FutureExt;
        nothing_pending(|| self.reader.wait().now_or_never())
    }

    /// Sends one script and reads its framed reply within `limit`, keeping at most `max`
    /// bytes of each stream. `keep` in the answer says whether the shell may serve another
    /// request; when it is false the caller lets it go ([`Resident::end`]).
    pub(crate) async fn request(&mut self, script: &[u8], limit: Duration, max: usize) -> Answer {
        let nonce = nonce();
        let (frame, body) = frame_request(&nonce, script, &self.kept);
        let mut out = ExecOutput::default();
        let (mut stdout, mut stderr) = (Framer::new(&nonce, max), Framer::new(&nonce, max));
        let reader = &mut self.reader;
        let writer = &self.writer;
        let exchange = async {
            writer.data_bytes(frame).await.map_err(|e| format!("sending the script failed: {e}"))?;
            let mut ended = false;
            while !(stdout.done() && stderr.done()) {
                let next = if ended {
                    // The shell is gone, but sshd may report that before it forwards the
                    // last output the script wrote: what comes within a moment is kept, as
                    // an exec channel keeps it.
                    tokio::time::timeout(Duration::from_millis(200), reader.wait()).await.unwrap_or_default()
                } else {
                    reader.wait().await
                };
                let (framer, data) = match next {
                    Some(ChannelMsg::Data { data }) => (&mut stdout, data),
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => (&mut stderr, data),
                    Some(ChannelMsg::ExitStatus { .. } | ChannelMsg::ExitSignal { .. }) => {
                        ended = true;
                        continue;
                    }
                    Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                        return Err("the channel closed without an exit status".to_string());
                    }
                    Some(_) => continue,
                };
                framer.feed(&data)?;
            }
            // (A reply framed whole before the shell went is its reply; the shell's end is
            // still pending on the channel, so the next request finds it unusable.)
            Ok(())
        };
        let result = tokio::time::timeout(limit, exchange).await;
        let keep = match result {
            Err(_) => {
                out.broken = Some(format!("no end of the command within {limit:?}"));
                false
            }
            Ok(Err(why)) => {
                out.overflow = stdout.over || stderr.over;
                out.broken = Some(why);
                false
            }
            Ok(Ok(())) => {
                out.exit = stdout.code.map(Exit::Code).unwrap_or_default();
                // A reply whose two streams disagree on the status, or that did not begin
                // where it should, came from a shell we can no longer vouch for.
                let agreed = stdout.code.is_some() && stdout.code == stderr.code;
                if !agreed {
                    out.exit = Exit::Unknown;
                    out.broken = Some("the reply's two streams disagree on its exit status".into());
                }
                agreed && !stdout.strays && !stderr.strays
            }
        };
        out.stdout = stdout.body;
        out.stderr = stderr.body;
        self.idle_since = std::time::Instant::now();
        if let Some(id) = body {
            self.kept.insert(id);
        }
        Answer { out, keep }
    }

    /// Lets the shell go: killed (whatever runs in it is not waited for) and its channel closed.
    pub(crate) async fn end(self) {
        end(&self.writer).await;
    }
}

async fn end(writer: &ChannelWriteHalf<client::Msg>) {
    let _ = writer.signal(russh::Sig::KILL).await;
    let _ = writer.eof().await;
    let _ = writer.close().await;
}

/// One request's reply.
pub(crate) struct Answer {
    pub out: ExecOutput,
    /// The shell answered cleanly and may take the next request.
    pub keep: bool,
}

/// The bytes of one request, and the id of the body it asks the shell to keep, if any.
/// A script made of variable lines and one of delegate's own bodies
/// ([`crate::remote::allowlist::split`]) goes as its variable lines naming the body, the
/// body itself first (`D`) when this shell does not keep it yet. A payload goes as `A` or
/// `R` by [`tag`].
fn frame_request(
    nonce: &str,
    script: &[u8],
    kept: &std::collections::HashSet<&'static str>,
) -> (Vec<u8>, Option<&'static str>) {
    if let Some((prefix, body)) = crate::remote::allowlist::split(script) {
        let vars = &script[..prefix];
        let mut frame = Vec::with_capacity(vars.len() + 64);
        let id = body.id.as_str();
        if !kept.contains(id) {
            frame.extend_from_slice(format!("D {id} {}\n", body.resident.len()).as_bytes());
            frame.extend_from_slice(body.resident.as_bytes());
        }
        frame.extend_from_slice(format!("{} {nonce} {} {id}\n", tag(vars), vars.len()).as_bytes());
        frame.extend_from_slice(vars);
        return (frame, Some(id));
    }
    let tag = tag(script);
    let mut frame = format!("{tag} {nonce} {}\n", script.len()).into_bytes();
    frame.extend_from_slice(script);
    (frame, None)
}

/// How the shell reads a payload: `A` (bash's own read, no process) for ASCII up to
/// [`READ_N_MAX`] bytes, else `R` (dd).
fn tag(payload: &[u8]) -> char {
    if payload.len() <= READ_N_MAX && payload.is_ascii() { 'A' } else { 'R' }
}

/// Past this, dd reads a payload faster than bash's `read -N` (which copies it a character
/// at a time).
const READ_N_MAX: usize = 64 * 1024;

/// Nothing but window adjustments and successes came in, `take_now` giving what is already
/// there: looked at with one poll each, not a zero timeout (tokio rounds a timer's deadline
/// up to its next millisecond tick, so `timeout(ZERO, ..)` held every request up to 1 ms).
fn nothing_pending(mut take_now: impl FnMut() -> Option<Option<ChannelMsg>>) -> bool {
    loop {
        match take_now() {
            None => return true,
            Some(Some(ChannelMsg::WindowAdjusted { .. } | ChannelMsg::Success)) => continue,
            Some(_) => return false,
        }
    }
}

/// 128 random bits, hex: the request's id in its frame and in every marker of its reply.
fn nonce() -> String {
    use rand::RngCore;
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads one stream of one reply: `RS dlg-begin N RS`, the output, `RS dlg-end N <status> RS`.
struct Framer {
    begin: Vec<u8>,
    end: Vec<u8>,
    max: usize,
    phase: Phase,
    /// Bytes not yet placed (before the begin marker, or the status digits).
    pending: Vec<u8>,
    body: Vec<u8>,
    /// How far `body` has been searched for the end marker.
    searched: usize,
    code: Option<u32>,
    /// Bytes that belong to no request (before its begin or after its end).
    strays: bool,
    over: bool,
}

#[derive(PartialEq, Debug)]
enum Phase {
    Begin,
    Body,
    Status,
    Done,
}

/// Longest exit status text: `255` and then some slack.
const STATUS_MAX: usize = 12;

impl Framer {
    fn new(nonce: &str, max: usize) -> Framer {
        Framer {
            begin: format!("\x1edlg-begin {nonce}\x1e").into_bytes(),
            end: format!("\x1edlg-end {nonce} ").into_bytes(),
            max,
            phase: Phase::Begin,
            pending: Vec::new(),
            body: Vec::new(),
            searched: 0,
            code: None,
            strays: false,
            over: false,
        }
    }

    fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Takes the next bytes of the stream. An error ends the request (output over the cap,
    /// a malformed status).
    fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        match self.phase {
            Phase::Done => {
                self.strays = true;
                Ok(())
            }
            Phase::Begin => {
                self.pending.extend_from_slice(data);
                match find(&self.pending, &self.begin) {
                    Some(at) => {
                        self.strays |= at > 0;
                        let rest = self.pending.split_off(at + self.begin.len());
                        self.pending.clear();
                        self.phase = Phase::Body;
                        self.feed(&rest)
                    }
                    None if self.pending.len() > self.max => self.overflow(),
                    None => Ok(()),
                }
            }
            Phase::Body => {
                self.body.extend_from_slice(data);
                let from = self.searched.saturating_sub(self.end.len());
                match find(&self.body[from..], &self.end) {
                    Some(at) => {
                        let at = from + at;
                        let rest = self.body.split_off(at);
                        if self.body.len() > self.max {
                            return self.overflow();
                        }
                        self.phase = Phase::Status;
                        self.feed(&rest[self.end.len()..])
                    }
                    None if self.body.len() > self.max + self.end.len() => self.overflow(),
                    None => {
                        self.searched = self.body.len();
                        Ok(())
                    }
                }
            }
            Phase::Status => {
                self.pending.extend_from_slice(data);
                let Some(at) = self.pending.iter().position(|&b| b == 0x1e) else {
                    return if self.pending.len() > STATUS_MAX {
                        Err("the reply's exit status is malformed".into())
                    } else {
                        Ok(())
                    };
                };
                let code = std::str::from_utf8(&self.pending[..at]).ok().and_then(|s| s.parse::<u32>().ok());
                let Some(code) = code else { return Err("the reply's exit status is malformed".into()) };
                self.code = Some(code);
                self.strays |= self.pending.len() > at + 1;
                self.pending.clear();
                self.phase = Phase::Done;
                Ok(())
            }
        }
    }

    fn overflow(&mut self) -> Result<(), String> {
        self.over = true;
        self.body.truncate(self.max);
        self.pending.clear();
        Err(format!("output over {} bytes: stopped reading", self.max))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outside any runtime, so a check that waited on a timer (the zero timeout it was,
    /// which held each request up to a millisecond) would panic here.
    #[test]
    fn the_shell_is_looked_at_without_waiting_on_a_timer() {
        use futures_util::FutureExt;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut pending = || nothing_pending(|| rx.recv().now_or_never());
        assert!(pending(), "nothing came: usable");
        tx.send(ChannelMsg::WindowAdjusted { new_size: 10 }).unwrap();
        tx.send(ChannelMsg::Success).unwrap();
        assert!(pending(), "window adjustments and successes are not output");
        tx.send(ChannelMsg::Data { data: b"stray".as_slice().into() }).unwrap();
        assert!(!pending(), "output between requests is unexplained");
        drop(tx);
        assert!(!pending(), "an ended channel is not usable");
    }

    #[test]
    fn a_known_body_travels_once_per_shell_and_other_scripts_whole() {
        let script = crate::remote::protocol::render_cancel("~/.delegate", "m-1", "dlg-m-1").unwrap();
        let (prefix, body) = crate::remote::allowlist::split(&script).unwrap();
        let mut kept = std::collections::HashSet::new();
        let (first, id) = frame_request("n1", &script, &kept);
        let want = [
            format!("D {} {}\n{}", body.id, body.resident.len(), body.resident).into_bytes(),
            format!("A n1 {prefix} {}\n", body.id).into_bytes(),
            script[..prefix].to_vec(),
        ]
        .concat();
        assert_eq!(first, want);
        kept.insert(id.unwrap());
        let (second, _) = frame_request("n2", &script, &kept);
        assert_eq!(second, [format!("A n2 {prefix} {}\n", body.id).as_bytes(), &script[..prefix]].concat());
        assert_eq!(frame_request("n3", b"echo hi\n", &kept), (b"A n3 8\necho hi\n".to_vec(), None));
        let utf8 = "echo \u{e9}\n".as_bytes();
        assert_eq!(frame_request("n4", utf8, &kept).0, [b"R n4 8\n".as_slice(), utf8].concat());
        // Bodies (D) are always read by read -N: they stay small enough for it.
        assert!(crate::remote::allowlist::known_bodies().iter().all(|b| b.resident.len() <= READ_N_MAX));
        let big = vec![b'#'; READ_N_MAX + 1];
        assert!(frame_request("n5", &big, &kept).0.starts_with(format!("R n5 {}\n", big.len()).as_bytes()));
    }

    #[test]
    fn the_loop_travels_inside_single_quotes() {
        assert!(!LOOP_SH.contains('\''), "resident.sh must not contain a single quote");
    }

    /// Runs the loop with real bash on `requests` (each a nonce and a script, framed as `A`),
    /// in a temporary directory of its own; returns its stdout, the directory's entries
    /// while it ran (seen by the last request) and after it ended, and, where strace runs,
    /// how many processes it made.
    fn run_loop(requests: &[(&str, &str)], traced: bool) -> (String, Vec<String>, Option<usize>) {
        use std::io::Write;
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dlg-resident-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let log = dir.join("strace.log");
        let strace = traced
            && std::process::Command::new("strace")
                .args(["-qq", "-f", "-o", "/dev/null", "true"])
                .output()
                .is_ok_and(|o| o.status.success());
        let mut cmd = if strace {
            let mut c = std::process::Command::new("strace");
            c.args(["-qq", "-f", "-e", "trace=fork,vfork,clone,clone3", "-o"]).arg(&log).arg("bash");
            c
        } else {
            std::process::Command::new("bash")
        };
        let mut child = cmd
            .args(["-c", LOOP_SH])
            .env("TMPDIR", &tmp)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = Vec::new();
        for (nonce, script) in requests {
            input.extend_from_slice(format!("A {nonce} {}\n{script}", script.len()).as_bytes());
        }
        child.stdin.take().unwrap().write_all(&input).unwrap();
        let out = child.wait_with_output().unwrap();
        let after: Vec<String> =
            std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        let forks = strace.then(|| {
            let text = std::fs::read_to_string(&log).unwrap();
            text.lines().filter(|l| [" fork(", " vfork(", " clone(", " clone3("].iter().any(|c| l.contains(c))).count()
        });
        std::fs::remove_dir_all(&dir).unwrap();
        (String::from_utf8_lossy(&out.stdout).replace('\x1e', "|"), after, forks)
    }

    /// A request costs the shell one process (the subshell it runs in), and what a script
    /// keeps travels through a file of the shell's own: taken from a script that ended on its
    /// own, not from a killed one, and removed with the shell.
    #[test]
    fn a_request_costs_one_process_and_keeps_through_a_file_removed_with_the_shell() {
        let (out, after, _) = run_loop(
            &[
                ("a1", "printf \"__dlg_kept_probe=kept\\0\" >&3; echo one\n"),
                ("b2", "echo \"probe=${__dlg_kept_probe-none} files=$(ls \"$TMPDIR\" | wc -l)\"\n"),
                ("c3", "printf \"__dlg_kept_probe=killed\\0\" >&3; kill -9 $BASHPID\n"),
                ("d4", "echo \"probe=${__dlg_kept_probe-none}\"\n"),
                ("e5", "printf \"not_kept=1\\0\" >&3; exit 3\n"),
                ("f6", "echo \"not_kept=${not_kept-unset}\"\n"),
            ],
            false,
        );
        assert_eq!(
            out,
            "|dlg-ready 1|\n|dlg-begin a1|one\n|dlg-end a1 0||dlg-begin b2|probe=kept files=1\n|dlg-end b2 0|\
             |dlg-begin c3||dlg-end c3 137||dlg-begin d4|probe=kept\n|dlg-end d4 0||dlg-begin e5||dlg-end e5 3|\
             |dlg-begin f6|not_kept=unset\n|dlg-end f6 0|"
        );
        assert!(after.is_empty(), "left behind: {after:?}");

        // Processes: the loop's own start (dd, mktemp, the nap pipe), then one per request.
        let one = run_loop(&[("a1", ":\n")], true).2;
        let four = run_loop(&[("a1", ":\n"), ("b2", ":\n"), ("c3", ":\n"), ("d4", ":\n")], true).2;
        match (one, four) {
            (Some(one), Some(four)) => {
                assert_eq!(four - one, 3, "processes per request: {}", (four - one) as f64 / 3.0)
            }
            _ => eprintln!("strace does not run here: the process count is not checked"),
        }
    }

    fn framed(nonce: &str, body: &[u8], code: u32) -> Vec<u8> {
        let mut v = format!("\x1edlg-begin {nonce}\x1e").into_bytes();
        v.extend_from_slice(body);
        v.extend_from_slice(format!("\x1edlg-end {nonce} {code}\x1e").as_bytes());
        v
    }

    #[test]
    fn a_reply_is_read_whatever_the_chunking() {
        let n = "ab12";
        let wire = framed(n, b"hello \x1e world", 7);
        for size in 1..wire.len() {
            let mut f = Framer::new(n, 100);
            for chunk in wire.chunks(size) {
                f.feed(chunk).unwrap();
            }
            assert!(f.done(), "chunks of {size}");
            assert_eq!((f.body.as_slice(), f.code, f.strays), (&b"hello \x1e world"[..], Some(7), false));
        }
    }

    #[test]
    fn another_requests_markers_are_output_and_strays_are_noticed() {
        let mut f = Framer::new("aa", 100);
        let mut wire = b"left over".to_vec();
        wire.extend(framed("aa", &framed("bb", b"x", 0), 3));
        wire.extend(b"late");
        f.feed(&wire).unwrap();
        assert_eq!((f.body, f.code, f.strays), (framed("bb", b"x", 0), Some(3), true));
    }

    #[test]
    fn output_over_the_cap_stops_with_bounded_memory() {
        let mut f = Framer::new("aa", 10);
        f.feed(b"\x1edlg-begin aa\x1e").unwrap();
        let mut err = None;
        for _ in 0..1000 {
            if let Err(e) = f.feed(&[b'x'; 7]) {
                err = Some(e);
                break;
            }
            assert!(f.body.len() <= 10 + f.end.len() + 7);
        }
        assert!(err.unwrap().contains("output over 10 bytes"));
        assert!(f.over && f.body.len() == 10);
        // Exactly the cap is fine.
        let mut f = Framer::new("aa", 10);
        f.feed(&framed("aa", &[b'y'; 10], 0)).unwrap();
        assert!(f.done() && !f.over);
    }

    #[test]
    fn a_malformed_status_is_an_error() {
        let mut f = Framer::new("aa", 100);
        assert!(f.feed(b"\x1edlg-begin aa\x1e\x1edlg-end aa x1\x1e").is_err());
        let mut f = Framer::new("aa", 100);
        assert!(f.feed(b"\x1edlg-begin aa\x1e\x1edlg-end aa 1111111111111111111").is_err());
    }
}
