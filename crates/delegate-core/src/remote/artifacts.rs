//! `remote/scripts/artifacts.sh`: the files a task declared with `report artifact`, listed
//! (confined to the workdir and task dir, sized and hashed on the brother) or read back in
//! chunks. The replies' framing is documented at the top of the script; everything in them
//! is the brother's word and is checked here (counts, numbers, hashes, base64).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::{Error, Result};

pub const ARTIFACTS_SH: &str = include_str!("scripts/artifacts.sh");

/// Most artifacts listed of one run (the script stops there too).
pub const MAX_LISTED: usize = 200;

/// The script as sent on stdin. `mode` is `list` or `read` (of record `index`, its bytes
/// from `offset`, at most `chunk`); files over `cap` bytes are refused.
pub fn render(workdir: &str, task_dir: &str, read: Option<(usize, u64, u64)>, cap: u64) -> Result<Vec<u8>> {
    if workdir.contains('\0') || task_dir.contains('\0') {
        return Err(Error::Config { path: "(artifacts)".into(), message: "a directory holds a NUL byte".into() });
    }
    let (mode, (index, offset, chunk)) = match read {
        Some(r) => ("read", r),
        None => ("list", (0, 0, 0)),
    };
    let mut vars = Vec::new();
    for f in [workdir, task_dir, mode, &index.to_string(), &offset.to_string(), &chunk.to_string(), &cap.to_string()] {
        vars.extend_from_slice(f.as_bytes());
        vars.push(0);
    }
    let mut out = format!("DLG_VARS='{}'\n", B64.encode(&vars)).into_bytes();
    out.extend_from_slice(ARTIFACTS_SH.as_bytes());
    Ok(out)
}

/// One declared artifact as the brother found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub index: usize,
    /// `ok`, `outside`, `missing`, `not-a-file` or `too-large`.
    pub verdict: String,
    pub size: u64,
    pub sha256: Option<String>,
    /// The path the agent declared, and where it is inside its root (`task/...` for the task
    /// dir), raw bytes read lossily: clean them before showing.
    pub path: String,
    pub rel: Option<String>,
    pub description: String,
}

const VERDICTS: [&str; 5] = ["ok", "outside", "missing", "not-a-file", "too-large"];

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lines a login rc file may print before the header are skipped.
fn after_header<'a>(stdout: &'a [u8], header: &[u8]) -> std::result::Result<&'a [u8], String> {
    let start = if stdout.starts_with(header) {
        0
    } else {
        let at = stdout.windows(header.len() + 1).position(|w| w[0] == b'\n' && &w[1..] == header);
        at.ok_or_else(|| format!("the reply has no {} header", String::from_utf8_lossy(header).trim()))? + 1
    };
    Ok(&stdout[start + header.len()..])
}

/// Reads a `list` reply: strict (a record that does not parse is an error saying which).
pub fn parse_list(stdout: &[u8]) -> std::result::Result<Vec<Listed>, String> {
    let rest = after_header(stdout, b"DELEGATE-ARTIFACTS 1 ")?;
    let text = std::str::from_utf8(rest).map_err(|_| "the list is not text")?;
    let mut lines = text.split('\n');
    let count: usize = lines.next().and_then(|c| c.parse().ok()).ok_or("the list's count is not a number")?;
    if count > MAX_LISTED {
        return Err(format!("the brother listed {count} artifacts, over the {MAX_LISTED} asked for"));
    }
    let decode = |w: &str| -> std::result::Result<String, String> {
        let bytes = B64.decode(w).map_err(|_| "a field is not base64".to_string())?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let line = lines.next().ok_or(format!("the list was cut at record {i} of {count}"))?;
        let w: Vec<&str> = line.split(' ').collect();
        let [index, verdict, size, sum, path, rel, description] = w[..] else {
            return Err(format!("record {i} has {} fields, not 7", w.len()));
        };
        if index != i.to_string() || !VERDICTS.contains(&verdict) {
            return Err(format!("record {i} has a bad index or verdict"));
        }
        let size: u64 = size.parse().map_err(|_| format!("record {i}'s size is not a number"))?;
        let sha256 = match sum {
            "-" if verdict != "ok" => None,
            s if verdict == "ok" && is_sha256(s) => Some(s.to_string()),
            _ => return Err(format!("record {i}'s sha256 is not 64 hex digits")),
        };
        let rel = match rel {
            "-" => None,
            r => Some(decode(r)?),
        };
        if verdict == "ok" && rel.is_none() {
            return Err(format!("record {i} is ok but has no place in its root"));
        }
        out.push(Listed {
            index: i,
            verdict: verdict.into(),
            size,
            sha256,
            path: decode(path)?,
            rel,
            description: decode(description)?,
        });
    }
    if lines.next() != Some("END") || lines.next() != Some("") || lines.next().is_some() {
        return Err("the list does not end with END".into());
    }
    Ok(out)
}

/// One chunk of an artifact's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub size: u64,
    pub sha256: String,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// Reads a `read` reply: exactly one header, the bytes it announces and `END`.
pub fn parse_chunk(stdout: &[u8]) -> std::result::Result<Chunk, String> {
    let rest = after_header(stdout, b"DELEGATE-ARTIFACT 1 ")?;
    let eol = rest.iter().position(|&b| b == b'\n').ok_or("the header line is cut")?;
    let header = std::str::from_utf8(&rest[..eol]).map_err(|_| "the header is not text")?;
    let w: Vec<&str> = header.split(' ').collect();
    let [size, sum, offset, len] = w[..] else {
        return Err(format!("the header has {} fields, not 4", w.len()));
    };
    let number = |w: &str, what: &str| w.parse::<u64>().map_err(|_| format!("the header's {what} is not a number"));
    let (size, offset, len) = (number(size, "size")?, number(offset, "offset")?, number(len, "length")?);
    if !is_sha256(sum) {
        return Err("the header's sha256 is not 64 hex digits".into());
    }
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(format!("the chunk {offset}+{len} runs past the file's {size} bytes"));
    }
    let bytes = super::framed_bytes(rest, eol, len, "bytes")?;
    Ok(Chunk { size, sha256: sum.into(), offset, bytes: bytes.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> String {
        B64.encode(s)
    }

    #[test]
    fn a_list_is_taken_only_whole_with_known_verdicts_and_hashes() {
        let sum = "ab".repeat(32);
        let good = format!(
            "motd\nDELEGATE-ARTIFACTS 1 2\n0 ok 5 {sum} {} {} {}\n1 outside 0 - {} - {}\nEND\n",
            b("/w/out.bin"),
            b("out.bin"),
            b("the build\u{1b}[2J"),
            b("/etc/passwd"),
            b("")
        );
        let l = parse_list(good.as_bytes()).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].rel.as_deref(), l[0].sha256.as_deref()), (Some("out.bin"), Some(sum.as_str())));
        assert_eq!((l[1].verdict.as_str(), l[1].path.as_str()), ("outside", "/etc/passwd"));
        assert!(parse_list(good.replace("END\n", "").as_bytes()).unwrap_err().contains("END"));
        assert!(parse_list(good.replace(" 1 2\n", " 1 3\n").as_bytes()).is_err());
        assert!(parse_list(good.replace("outside", "fine").as_bytes()).is_err());
        assert!(parse_list(good.replace(&sum, "x;rm").as_bytes()).unwrap_err().contains("sha256"));
        assert!(parse_list(format!("DELEGATE-ARTIFACTS 1 {}\n", MAX_LISTED + 1).as_bytes()).is_err());
    }

    #[test]
    fn a_chunk_is_taken_only_with_its_announced_bytes() {
        let sum = "cd".repeat(32);
        let ok = [format!("DELEGATE-ARTIFACT 1 10 {sum} 4 3\n").as_bytes(), b"abc\nEND\n"].concat();
        let c = parse_chunk(&ok).unwrap();
        assert_eq!((c.size, c.offset, c.bytes.as_slice()), (10, 4, &b"abc"[..]));
        let past = [format!("DELEGATE-ARTIFACT 1 5 {sum} 4 3\n").as_bytes(), b"abc\nEND\n"].concat();
        assert!(parse_chunk(&past).unwrap_err().contains("runs past"));
        assert!(parse_chunk(&ok[..ok.len() - 2]).is_err());
    }
}
