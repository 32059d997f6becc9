//! The variable lines of the launch (`DLG_VARS`, `DLG_PROMPT`) and of the sync (`DLG_VARS`)
//! in a form the brother decodes with bash's own `printf %b`, so neither starts a `base64`
//! process: printable
//! ASCII but the quote, the backslash and `|` stays as it is; every other byte (control
//! characters, newlines, anything past ASCII) is written `\xHH`.
//!
//! The text is as inert to the shell as base64 was: it travels inside single quotes and holds
//! no quote, no newline and no backslash but those of `\xHH` (which `%b` reads as one byte,
//! never more than two hex digits), so no byte of a prompt or path reaches the parser. It
//! stays ASCII, which the resident shell reads without a process (`transport/ssh/resident.sh`).
//! The launch's `DLG_VARS` is its fields, each escaped and followed by a raw `|` (a `|` inside
//! a field is escaped like any other byte; its fields may hold newlines), which the brother
//! splits with word splitting and decodes one by one. The sync's fields are single lines: it
//! escapes them joined by newlines, decoded in one `printf` and split at the newlines, which
//! for ten thousand fields is much cheaper than a `printf` each.

/// Bytes written as they are (inside single quotes every one of them is literal);
/// everything else is `\xHH`.
fn plain(b: u8) -> bool {
    (b' '..=b'~').contains(&b) && !matches!(b, b'\'' | b'\\' | b'|')
}

/// A byte a variable line's quoted value may hold: base64's alphabet and [`escape`]'s
/// (which includes it), the backslash of `\xHH` and the field separator.
pub fn inert(b: u8) -> bool {
    plain(b) || b == b'\\' || b == b'|'
}

/// `bytes` with every byte outside the safe set written `\xHH`.
pub fn escape(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() + bytes.len() / 8 + 8);
    for &b in bytes {
        if plain(b) {
            out.push(b as char);
        } else {
            out.push_str("\\x");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
    out
}

/// The bytes [`escape`] wrote `text` from; `None` for text it could not have written.
pub fn unescape(text: &str) -> Option<Vec<u8>> {
    let s = text.as_bytes();
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' {
            let hex = std::str::from_utf8(s.get(i + 1..i + 4)?).ok()?;
            let digits = hex.strip_prefix('x')?;
            if digits.len() != 2 || !digits.bytes().all(|d| d.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(digits, 16).ok()?);
            i += 4;
        } else if plain(s[i]) {
            out.push(s[i]);
            i += 1;
        } else {
            return None;
        }
    }
    Some(out)
}

/// Fields as `DLG_VARS` carries them: each escaped, then `|`. `nul_terminated` is the fields
/// each followed by a NUL (as `remote::field` builds them).
pub fn fields(nul_terminated: &[u8]) -> String {
    let mut out = String::with_capacity(nul_terminated.len() + 64);
    let mut rest = nul_terminated;
    while let Some(end) = rest.iter().position(|b| *b == 0) {
        out.push_str(&escape(&rest[..end]));
        out.push('|');
        rest = &rest[end + 1..];
    }
    out
}

/// Field `n` of a `DLG_VARS` value written by [`fields`].
pub fn field(text: &str, n: usize) -> Option<Vec<u8>> {
    let raw = text.strip_suffix('|')?.split('|').nth(n)?;
    unescape(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_survives_and_the_text_is_inert_ascii() {
        let all: Vec<u8> = (0..=255u8).chain(b"'\\x41|\n$(id)`".iter().copied()).collect();
        let text = escape(&all);
        assert!(text.is_ascii());
        assert!(!text.contains('\'') && !text.contains('\n') && !text.contains('|'));
        assert!(text.split("\\x").skip(1).all(|h| h.len() >= 2 && h.as_bytes()[..2].iter().all(u8::is_ascii_hexdigit)));
        assert_eq!(unescape(&text).as_deref(), Some(&all[..]));
        assert_eq!(escape(b"a b/c $(x) {\"k\":[1]}"), "a b/c $(x) {\"k\":[1]}");
        assert_eq!(escape(b"\xc3\xa9'"), "\\xc3\\xa9\\x27");
        assert_eq!(unescape("\\x4"), None);
        assert_eq!(unescape("\\y41"), None);
        assert_eq!(unescape("a'b"), None);
    }

    #[test]
    fn fields_are_split_by_a_raw_bar_and_keep_their_own_bars_and_empties() {
        let vars = b"one\0a|b\0\0last\0";
        let text = fields(vars);
        assert_eq!(text, "one|a\\x7cb||last|");
        assert_eq!(field(&text, 1).as_deref(), Some(&b"a|b"[..]));
        assert_eq!(field(&text, 2).as_deref(), Some(&b""[..]));
        assert_eq!(field(&text, 3).as_deref(), Some(&b"last"[..]));
        assert_eq!(field(&text, 4), None);
    }

    /// bash's `printf %b` gives back exactly the bytes (the brother's decoder).
    #[test]
    fn bash_printf_decodes_what_escape_wrote() {
        let all: Vec<u8> = (0..=255u8).chain(*b"tail").collect();
        let script = format!("printf '%b' '{}'", escape(&all));
        let out = std::process::Command::new("bash").args(["-c", &script]).env("LC_ALL", "C.UTF-8").output().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, all);
    }
}
