//! `remote/scripts/diff.sh`: what a task changed in its workdir since its launch, and the
//! framing of its reply (documented at the top of the script).
//!
//! The brother is untrusted: a reply is refused unless it is exactly one header, the bytes
//! it announces and `END`; ids are checked to be git object ids. A diff larger than one
//! exec may answer comes in chunks ([`parse`] reads one; the caller puts them together,
//! refuses chunks of different diffs, and checks the SHA-256 of the whole against the
//! brother's: [`check_whole`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub const DIFF_SH: &str = include_str!("scripts/diff.sh");

/// What the diff shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffMode {
    /// A text diff; binary files are named, not shown.
    Patch,
    /// Files changed with their line counts (`--stat --summary`).
    Stat,
    /// `git diff --binary`: every byte, for `git apply`.
    Binary,
}

impl DiffMode {
    fn as_str(self) -> &'static str {
        match self {
            DiffMode::Patch => "patch",
            DiffMode::Stat => "stat",
            DiffMode::Binary => "binary",
        }
    }
}

/// A git object id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
pub fn is_object_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The script as sent on stdin: the diff's bytes from `offset`, at most `chunk` of them, or
/// none when the whole is over `cap`.
pub fn render(workdir: &str, base: &str, mode: DiffMode, cap: u64, offset: u64, chunk: u64) -> Result<Vec<u8>> {
    if !is_object_id(base) {
        return Err(Error::Config { path: "(diff)".into(), message: format!("{base:?} is not a git object id") });
    }
    if workdir.contains('\0') {
        return Err(Error::Config { path: "(diff)".into(), message: "the workdir holds a NUL byte".into() });
    }
    let mut vars = Vec::new();
    for f in [workdir, base, mode.as_str(), &cap.to_string(), &offset.to_string(), &chunk.to_string()] {
        vars.extend_from_slice(f.as_bytes());
        vars.push(0);
    }
    let mut out = Vec::with_capacity(vars.len() * 4 / 3 + super::GIT_TREE_SH.len() + DIFF_SH.len() + 16);
    out.extend_from_slice(format!("DLG_VARS='{}'\n", B64.encode(&vars)).as_bytes());
    out.extend_from_slice(super::GIT_TREE_SH.as_bytes());
    out.extend_from_slice(DIFF_SH.as_bytes());
    Ok(out)
}

/// One chunk of a diff as the brother reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffReply {
    /// The tree of the workdir at launch, and now: equal when nothing changed.
    pub base_tree: String,
    pub tree: String,
    /// The whole diff's size and SHA-256 on the brother.
    pub size: u64,
    pub sha256: String,
    /// Where these bytes start in the diff.
    pub offset: u64,
    /// The diff's bytes from `offset` (none when the whole was over the cap).
    pub bytes: Vec<u8>,
}

/// The whole diff put together from its chunks matches the brother's SHA-256.
pub fn check_whole(bytes: &[u8], sha256: &str) -> std::result::Result<(), String> {
    if hex(&Sha256::digest(bytes)) == sha256 {
        Ok(())
    } else {
        Err("the diff's sha256 does not match the brother's: damaged in transit, or the workdir changed while it was read".into())
    }
}

/// Reads a reply of the diff script. Strict: a header that does not parse, bytes that do not
/// match the announced size or hash, a missing `END` or anything after it is an error saying
/// what was wrong. Lines a login rc file may print before the header are skipped.
pub fn parse(stdout: &[u8]) -> std::result::Result<DiffReply, String> {
    const HEADER: &[u8] = b"DELEGATE-DIFF 1 ";
    let start = if stdout.starts_with(HEADER) {
        0
    } else {
        let at = stdout.windows(HEADER.len() + 1).position(|w| w[0] == b'\n' && &w[1..] == HEADER);
        at.ok_or("the reply has no DELEGATE-DIFF header")? + 1
    };
    let rest = &stdout[start..];
    let eol = rest.iter().position(|&b| b == b'\n').ok_or("the header line is cut")?;
    let header = std::str::from_utf8(&rest[HEADER.len()..eol]).map_err(|_| "the header is not text")?;
    let words: Vec<&str> = header.split(' ').collect();
    let [base_tree, tree, size, sha256, offset, len] = words[..] else {
        return Err(format!("the header has {} fields, not 6", words.len()));
    };
    if !is_object_id(base_tree) || !is_object_id(tree) {
        return Err("the header's tree ids are not git object ids".into());
    }
    let number = |w: &str, what: &str| w.parse::<u64>().map_err(|_| format!("the header's {what} is not a number"));
    let (size, offset, len) = (number(size, "size")?, number(offset, "offset")?, number(len, "length")?);
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the header's sha256 is not 64 hex digits".into());
    }
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(format!("the chunk {offset}+{len} runs past the diff's {size} bytes"));
    }
    let bytes = super::framed_bytes(rest, eol, len, "diff")?;
    Ok(DiffReply {
        base_tree: base_tree.into(),
        tree: tree.into(),
        size,
        sha256: sha256.to_lowercase(),
        offset,
        bytes: bytes.to_vec(),
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(size: usize, offset: usize, body: &[u8], sum: &str, tail: &[u8]) -> Vec<u8> {
        let (t, u) = ("a".repeat(40), "b".repeat(40));
        let mut out = format!("motd\nDELEGATE-DIFF 1 {t} {u} {size} {sum} {offset} {}\n", body.len()).into_bytes();
        out.extend_from_slice(body);
        out.extend_from_slice(tail);
        out
    }

    #[test]
    fn a_reply_is_taken_only_whole_and_the_diff_only_with_its_hash() {
        let diff = b"diff --git a/x b/x\n\x00END\n";
        let sum = hex(&Sha256::digest(diff));
        // In two chunks, put together and checked.
        let first = parse(&reply(diff.len(), 0, &diff[..10], &sum, b"\nEND\n")).unwrap();
        let second = parse(&reply(diff.len(), 10, &diff[10..], &sum, b"\nEND\n")).unwrap();
        assert_eq!((first.offset, second.offset), (0, 10));
        let whole = [first.bytes, second.bytes].concat();
        assert_eq!(whole, diff);
        check_whole(&whole, &sum).unwrap();
        assert!(check_whole(&whole[1..], &sum).unwrap_err().contains("sha256"));
        // Over the cap: announced, no bytes.
        let over = parse(&reply(diff.len(), 0, b"", &sum, b"\nEND\n")).unwrap();
        assert!(over.bytes.is_empty() && over.size == diff.len() as u64);
        assert!(parse(&reply(diff.len(), 0, diff, &sum, b"\nEND\nmore")).unwrap_err().contains("END"));
        assert!(parse(&reply(diff.len(), 0, diff, &sum, b"")).unwrap_err().contains("END"));
        assert!(parse(&reply(4, 0, diff, &sum, b"\nEND\n")).unwrap_err().contains("runs past"));
        let mut cut = reply(diff.len(), 0, diff, &sum, b"");
        cut.truncate(cut.len() - 5);
        assert!(parse(&cut).unwrap_err().contains("cut"));
        assert!(parse(b"nothing here").is_err());
        let bad_id = String::from_utf8(reply(diff.len(), 0, diff, &sum, b"\nEND\n")).unwrap().replacen(
            &"a".repeat(40),
            "x;rm",
            1,
        );
        assert!(parse(bad_id.as_bytes()).unwrap_err().contains("object ids"));
    }

    #[test]
    fn render_refuses_a_base_that_is_not_an_object_id() {
        assert!(render("/w", "HEAD; rm -rf /", DiffMode::Patch, 10, 0, 10).is_err());
        assert!(render("/w", &"c".repeat(40), DiffMode::Stat, 10, 0, 10).is_ok());
    }
}
