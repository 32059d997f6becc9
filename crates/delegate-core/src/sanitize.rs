//! Text from a brother, made safe before it reaches the mailbox or a terminal. Everything a
//! brother writes is untrusted; this is the one sanitizer (the CLI's `term.rs` builds on it).

/// Text from a brother made safe to print on a terminal: ANSI escape sequences (CSI, OSC
/// and the rest), other control characters and bidirectional overrides are removed;
/// newlines and tabs stay. Everything a brother writes is untrusted.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC, DCS, SOS, PM, APC: a string up to BEL or ST (ESC \\).
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                // Any other escape is two characters long.
                _ => {}
            },
            '\n' | '\t' => out.push(c),
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {}
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters; a cut text ends in "…" (counted in `max`).
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some(_) => {
            let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
            out.push('…');
            out
        }
    }
}

/// One line from the brother for a message: escape sequences dropped whole (the one
/// sanitizer, [`printable`]), line breaks as spaces, at most `max` characters.
pub fn clean_line(s: &str, max: usize) -> String {
    let clean: String = printable(s).chars().map(|c| if c.is_control() { ' ' } else { c }).take(max).collect();
    clean.trim().to_string()
}
