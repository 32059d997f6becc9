//! The one path from brother-derived text to a terminal. Everything a brother wrote (reports,
//! events, launch and sync errors, stderr, paths it echoed) goes through [`safe`] (one line)
//! or [`block`] (several lines, each indented) before it is printed: no escape sequence (OSC
//! 52 clipboard writes, titles, hyperlinks, screen clears), no control character and no bidi
//! override survives, and no text can start a line of its own that looks like delegate's.

use std::borrow::Cow;

use delegate_core::agents::outcome::printable;

/// Characters that pass untouched: anything but controls and bidi overrides.
fn plain(c: char) -> bool {
    !c.is_control() && !matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// One line: escapes and controls dropped, line breaks and tabs made spaces.
pub fn safe(s: &str) -> Cow<'_, str> {
    if s.chars().all(plain) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(printable(s).replace(['\n', '\t'], " "))
}

/// Several lines: each made [`safe`]; every line after the first starts with `indent`, so
/// none can pass for a line of delegate's own (a forged mailbox entry, say).
pub fn block(s: &str, indent: &str) -> String {
    let clean = printable(s);
    let mut out = String::with_capacity(clean.len());
    for (i, line) in clean.trim_end_matches('\n').split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            out.push_str(indent);
        }
        out.push_str(&line.replace('\t', " "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{block, safe};

    #[test]
    fn safe_drops_every_escape_and_control_and_keeps_text() {
        assert!(matches!(safe("plain text é €"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(safe("a\u{1b}]52;c;SGVsbG8=\u{7}b"), "ab");
        assert_eq!(safe("a\u{1b}]8;;http://evil\u{1b}\\link\u{1b}]8;;\u{1b}\\b"), "alinkb");
        assert_eq!(safe("\u{1b}]0;title\u{7}x\u{1b}[2J\u{1b}[H"), "x");
        assert_eq!(safe("one\ntwo\tthree\r\u{0}\u{9b}31m\u{202e}"), "one two three31m");
        assert_eq!(safe("\u{1b}"), "");
    }

    #[test]
    fn block_indents_every_line_after_the_first() {
        assert_eq!(
            block("done\n* task 9    bob  done  all good\n", "      "),
            "done\n      * task 9    bob  done  all good"
        );
        assert_eq!(block("a\u{1b}[2J\r\nb\u{7}", "  "), "a\n  b");
        for line in block("x\n\u{1b}[1A\rforged\n\n", "    ").lines().skip(1) {
            assert!(line.starts_with("    "), "{line:?}");
        }
    }
}
