//! `transport = "ssh"`: commands run through the system `ssh` binary, for hosts that need
//! what russh cannot do (FIDO or PKCS#11 keys, GSSAPI, options delegate does not know).
//!
//! The same contract as [`super::Session::exec`]: the script goes on stdin (never in argv),
//! output comes back as an [`ExecOutput`], and `Err` means nothing ran on the host. ssh's
//! own failures and the remote command's exit both come back as exit codes (255 for ssh's),
//! so the remote side first writes a marker on stderr: without it ssh never started the
//! command (host key refused, authentication, network), which is safe to report as an
//! error; after it, a 255 is a connection lost mid-command and the outcome is unknown.
//! Host keys are checked by ssh itself, with `BatchMode` so it never prompts.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ExecOutput, Exit, SshTarget};
use crate::error::{Error, Result};

/// Written by the remote shell on stderr before it starts the command.
const STARTED: &[u8] = b"delegate-ssh-started-3c1f9e\n";

/// ssh's own messages kept for an error (its stderr before the marker).
const MAX_SSH_STDERR: usize = 4096;

/// Runs `command` on `t` through `argv` (`ssh ... HOST`) with `stdin` fed to it; see the
/// module documentation. Each output stream keeps at most `max_bytes`.
pub async fn exec(
    t: &SshTarget,
    argv: &[String],
    command: &str,
    stdin: &[u8],
    limit: Duration,
    max_bytes: usize,
) -> Result<ExecOutput> {
    let marker = String::from_utf8_lossy(STARTED);
    let remote = format!("printf '%s\\n' {} >&2; exec {command}", marker.trim_end());
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .arg(remote)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::SystemSsh {
            host: t.host.clone(),
            status: format!("could not be started ({e})"),
            stderr: String::new(),
        })?;
    let mut input = child.stdin.take().expect("piped");
    let mut out_pipe = child.stdout.take().expect("piped");
    let mut err_pipe = child.stderr.take().expect("piped");
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let write = async {
        // A command that does not read its stdin closes the pipe: not an error here.
        let _ = input.write_all(stdin).await;
        drop(input);
    };
    let read_out = read_bounded(&mut out_pipe, &mut stdout, max_bytes);
    // stderr also holds ssh's own messages and the marker: keep a little more.
    let read_err = read_bounded(&mut err_pipe, &mut stderr, max_bytes.saturating_add(MAX_SSH_STDERR + STARTED.len()));
    let all = async {
        tokio::join!(write, read_out, read_err);
        child.wait().await
    };
    let status = tokio::time::timeout(limit, all).await;
    let Some(at) = find(&stderr, STARTED) else {
        let status = match status {
            Ok(Ok(s)) => match s.code() {
                Some(c) => format!("exited {c}"),
                None => "was killed by a signal".to_string(),
            },
            Ok(Err(e)) => format!("could not be waited for ({e})"),
            Err(_) => format!("did not connect within {limit:?}"),
        };
        let text = String::from_utf8_lossy(&stderr[..stderr.len().min(MAX_SSH_STDERR)]).into_owned();
        let stderr = crate::sanitize::clean_line(text.trim(), MAX_SSH_STDERR);
        return Err(Error::SystemSsh { host: t.host.clone(), status, stderr });
    };
    let mut remote_err = stderr[..at].to_vec();
    remote_err.extend_from_slice(&stderr[at + STARTED.len()..]);
    remote_err.truncate(max_bytes);
    let overflow = stdout.len() >= max_bytes && max_bytes < usize::MAX;
    let mut out = ExecOutput { stdout, stderr: remote_err, ..ExecOutput::default() };
    match status {
        Err(_) => out.broken = Some(format!("no end of the command within {limit:?}")),
        Ok(Err(e)) => out.broken = Some(format!("waiting for ssh failed: {e}")),
        Ok(Ok(s)) => match s.code() {
            Some(255) => {
                out.broken = Some("ssh exited 255: the connection was lost (or the command exited 255)".into())
            }
            Some(code) => out.exit = Exit::Code(code as u32),
            None => out.broken = Some("ssh was killed by a signal".into()),
        },
    }
    if overflow {
        out.exit = Exit::Unknown;
        out.overflow = true;
        out.broken = Some(format!("output over {max_bytes} bytes: the rest was dropped"));
    }
    // kill_on_drop ends an ssh still running after a timeout.
    Ok(out)
}

async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(r: &mut R, into: &mut Vec<u8>, max: usize) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = max.saturating_sub(into.len());
        into.extend_from_slice(&buf[..n.min(room)]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
