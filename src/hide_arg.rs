//! Hides a prompt given on the command line (`delegate oppy "text"`) from other processes
//! once it has been parsed.
//!
//! `ps` and `/proc/PID/cmdline` read the process's original argv memory, the area from
//! `arg_start` to `arg_end` in `/proc/self/stat`, which the kernel filled at exec. Parsing
//! copied the prompt out of it, so its bytes there can be overwritten (as `setproctitle`
//! overwrites that area). Only the bytes of that one argument are touched: it keeps its
//! length, so the other arguments stay where they are and stay readable. Between exec and
//! this call (a few milliseconds of start-up) the prompt is visible; `--prompt-file` or stdin
//! never puts it there at all.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// What the argument reads as afterwards (cut to the argument's length, NUL-padded).
const PLACEHOLDER: &[u8] = b"[hidden]";

/// Overwrites the last argument equal to `secret` in this process's argv area; returns
/// whether it did. Does nothing when the area does not hold exactly the arguments this
/// process was given (something rewrote it) or on systems without `/proc/self/stat`.
/// Call it before starting any thread: nothing may read the area while it is written.
pub fn hide(secret: &OsStr) -> bool {
    let secret = secret.as_bytes();
    if secret.is_empty() || secret == b"-" {
        return false;
    }
    let Ok(stat) = std::fs::read("/proc/self/stat") else { return false };
    let Some((start, end)) = arg_area(&stat) else { return false };
    // Our arguments as the kernel laid them out: each followed by a NUL.
    let args: Vec<Vec<u8>> = std::env::args_os().map(|a| a.as_bytes().to_vec()).collect();
    let expected: Vec<u8> = args.iter().flat_map(|a| a.iter().copied().chain([0])).collect();
    if end.checked_sub(start) != Some(expected.len()) {
        return false;
    }
    // SAFETY: [start, end) is this process's argv area, as the kernel reports it for the
    // running process: mapped, readable and writable (the top of the main thread's stack).
    // Its length was checked against our argument list just above. No Rust reference points
    // into it: the standard library keeps only raw C pointers to these strings and copies
    // them in `args_os()`. The shared slice lives only until the comparison below is done.
    let area = unsafe { std::slice::from_raw_parts(start as *const u8, expected.len()) };
    if area != expected.as_slice() {
        return false;
    }
    let mut at = 0;
    let mut found = None;
    for a in &args {
        if a.as_slice() == secret {
            found = Some(at);
        }
        at += a.len() + 1;
    }
    let Some(offset) = found else { return false };
    let shown = &PLACEHOLDER[..PLACEHOLDER.len().min(secret.len())];
    // SAFETY: `offset..offset + secret.len()` lies inside the area checked above (it is one
    // argument's bytes, not its NUL), no reference into the area exists any more, and the
    // caller runs this before any other thread could read it.
    unsafe {
        let dst = (start as *mut u8).add(offset);
        std::ptr::copy_nonoverlapping(shown.as_ptr(), dst, shown.len());
        std::ptr::write_bytes(dst.add(shown.len()), 0, secret.len() - shown.len());
    }
    true
}

/// `arg_start` and `arg_end` (fields 48 and 49 of proc(5)) from `/proc/self/stat`. The
/// command name (field 2) may hold spaces and parentheses, so fields are counted after its
/// last `)`, where field 3 begins.
fn arg_area(stat: &[u8]) -> Option<(usize, usize)> {
    let close = stat.iter().rposition(|b| *b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace().skip(48 - 3);
    let start: usize = fields.next()?.parse().ok()?;
    let end: usize = fields.next()?.parse().ok()?;
    (start != 0 && start < end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_argv_area_is_found_after_a_command_name_with_spaces_and_parentheses() {
        let fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        let stat = format!("4242 (de) le (gate)) {}\n", fields.join(" "));
        assert_eq!(arg_area(stat.as_bytes()), Some((48, 49)));
        assert_eq!(arg_area(b"4242 (x) S 1 2"), None, "too short");
        let real = std::fs::read("/proc/self/stat").unwrap();
        let (start, end) = arg_area(&real).expect("this process's own argv area");
        let len: usize = std::env::args_os().map(|a| a.len() + 1).sum();
        assert_eq!(end - start, len);
    }
}
