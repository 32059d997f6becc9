//! Running one of delegate's scripts on this machine exactly as sshd would for the lead:
//! `bash -c 'eval "$(</dev/stdin)"'` ([`REMOTE_ARGV`]) with the script on stdin, in the
//! worker user's home, with the worker's environment.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::remote::REMOTE_ARGV;
use crate::transport::nats::wire::{self, ExecReply};

/// Runs `script` within `limit`, keeping at most `cap` bytes of each output stream (the rest
/// is read and dropped, and `overflow` says so). Never fails: a script that could not start
/// or ran past its limit comes back with `broken` saying why.
pub async fn run_script(script: &[u8], home: &std::path::Path, limit: Duration, cap: usize) -> ExecReply {
    let mut cmd = tokio::process::Command::new(REMOTE_ARGV[0]);
    cmd.args(&REMOTE_ARGV[1..]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    // sshd starts a command in the user's home; the scripts expand `~/` themselves.
    cmd.current_dir(home);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return broken(format!("cannot start bash: {e}")),
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    let (out, err) = (child.stdout.take().expect("piped stdout"), child.stderr.take().expect("piped stderr"));
    let script = script.to_vec();
    let feed = async move {
        // A script that exits before reading all of its stdin is its own business.
        let _ = stdin.write_all(&script).await;
        drop(stdin);
    };
    let work = async { tokio::join!(feed, read_capped(out, cap), read_capped(err, cap), child.wait()) };
    match tokio::time::timeout(limit, work).await {
        Ok(((), (stdout, cut_out), (stderr, cut_err), status)) => {
            let (exit, signal) = match status {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt as _;
                    (s.code(), s.signal().map(|n| format!("signal {n}")))
                }
                Err(e) => return broken(format!("cannot wait for bash: {e}")),
            };
            ExecReply {
                v: wire::WIRE_VERSION,
                exit,
                signal,
                stdout: wire::b64(&stdout),
                stderr: wire::b64(&stderr),
                overflow: cut_out || cut_err,
                broken: None,
            }
        }
        // Dropping `work` drops the child, which kill_on_drop kills.
        Err(_) => broken(format!("the script did not finish within {}s and was killed", limit.as_secs())),
    }
}

fn broken(why: String) -> ExecReply {
    ExecReply { v: wire::WIRE_VERSION, broken: Some(why), ..Default::default() }
}

/// Reads a stream to its end, keeping the first `cap` bytes; true when more came.
async fn read_capped(mut r: impl AsyncRead + Unpin, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut cut = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, cut),
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                cut |= n > room;
            }
        }
    }
}
