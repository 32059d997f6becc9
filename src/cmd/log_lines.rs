//! Cuts the chunks `logs` reads from a brother into lines, holding at most one bounded
//! partial line between chunks: a file of any size streams through in constant memory, and a
//! line with no end in sight (a brother writing gigabytes without a newline) is passed on in
//! pieces instead of being gathered whole.

/// Longest line held back waiting for its end, the lead's per-line cap elsewhere too
/// (`MAX_SYNC_LINE`): a longer one is passed on in pieces as it arrives.
pub const MAX_HELD_LINE: usize = 1 << 20;

/// What comes out of [`Lines`].
#[derive(Debug, PartialEq, Eq)]
pub enum Segment<'a> {
    /// A whole line, without its newline.
    Whole(&'a [u8]),
    /// Part of a line longer than [`MAX_HELD_LINE`]: `first` on its first piece, `last` on
    /// the piece that ends it (possibly empty).
    Part { bytes: &'a [u8], first: bool, last: bool },
}

#[derive(Default)]
pub struct Lines {
    held: Vec<u8>,
    /// Pieces of the current line were already passed on.
    spilled: bool,
}

impl Lines {
    /// Feeds the next chunk of the file; `emit` gets each segment it completes, in order.
    pub fn push<E>(&mut self, bytes: &[u8], emit: &mut impl FnMut(Segment<'_>) -> Result<(), E>) -> Result<(), E> {
        let mut pieces = bytes.split(|b| *b == b'\n').peekable();
        while let Some(piece) = pieces.next() {
            // Every piece but the last was followed by a newline.
            self.take(piece, pieces.peek().is_some(), emit)?;
        }
        Ok(())
    }

    /// The end of the file: a last line without a newline is passed on as it is.
    pub fn finish<E>(&mut self, emit: &mut impl FnMut(Segment<'_>) -> Result<(), E>) -> Result<(), E> {
        if self.spilled {
            self.spilled = false;
            return emit(Segment::Part { bytes: &[], first: false, last: true });
        }
        if !self.held.is_empty() {
            emit(Segment::Whole(&self.held))?;
            self.held.clear();
        }
        Ok(())
    }

    fn take<E>(
        &mut self,
        piece: &[u8],
        ends: bool,
        emit: &mut impl FnMut(Segment<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.spilled && self.held.len() + piece.len() <= MAX_HELD_LINE {
            match (ends, self.held.is_empty()) {
                (true, true) => emit(Segment::Whole(piece))?,
                (true, false) => {
                    self.held.extend_from_slice(piece);
                    emit(Segment::Whole(&self.held))?;
                    self.held.clear();
                }
                (false, _) => self.held.extend_from_slice(piece),
            }
            return Ok(());
        }
        if !self.held.is_empty() {
            emit(Segment::Part { bytes: &self.held, first: !self.spilled, last: false })?;
            self.held.clear();
            self.spilled = true;
        }
        emit(Segment::Part { bytes: piece, first: !self.spilled, last: ends })?;
        self.spilled = !ends;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks`, then the end, and returns what came out, with pieces marked.
    fn run(chunks: &[&[u8]]) -> (Vec<String>, usize) {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        let mut largest = 0;
        let mut emit = |s: Segment<'_>| -> Result<(), ()> {
            match s {
                Segment::Whole(b) => out.push(String::from_utf8_lossy(b).into_owned()),
                Segment::Part { bytes, first, last } => {
                    out.push(format!("{}{}b{}", if first { "<" } else { "" }, bytes.len(), if last { ">" } else { "" }))
                }
            }
            Ok(())
        };
        for c in chunks {
            lines.push(c, &mut emit).unwrap();
            largest = largest.max(lines.held.capacity());
        }
        lines.finish(&mut emit).unwrap();
        (out, largest)
    }

    #[test]
    fn lines_split_across_chunks_come_out_whole_and_a_last_partial_line_at_the_end() {
        let (out, _) = run(&[b"one\ntw", b"o\n\nthr", b"ee"]);
        assert_eq!(out, ["one", "two", "", "three"]);
        let (out, _) = run(&[b"a\n", b"b\n"]);
        assert_eq!(out, ["a", "b"]);
    }

    #[test]
    fn a_line_longer_than_the_cap_comes_out_in_pieces_and_memory_stays_bounded() {
        let big = vec![b'x'; 3 * MAX_HELD_LINE];
        // 9 MiB without a newline, in 1.5 MiB chunks, then its end and a normal line.
        let mut chunks: Vec<&[u8]> = big.chunks(MAX_HELD_LINE * 3 / 2).collect();
        chunks.extend([&big[..5], &b"\nnext\n"[..]]);
        let (out, largest) = run(&chunks);
        let pieces: usize = out
            .iter()
            .filter(|s| s.contains('b'))
            .map(|s| s.trim_matches(['<', '>']).trim_end_matches('b').parse::<usize>().unwrap())
            .sum();
        assert_eq!(pieces, 3 * MAX_HELD_LINE + 5, "{out:?}");
        assert!(out[0].starts_with('<') && out.iter().filter(|s| s.starts_with('<')).count() == 1, "{out:?}");
        assert_eq!(out.iter().filter(|s| s.ends_with('>')).count(), 1, "{out:?}");
        assert_eq!(out.last().unwrap(), "next");
        assert!(largest <= 2 * MAX_HELD_LINE, "held {largest} bytes");

        // A short start, then the rest of a long line in one chunk: the start is spilled first.
        let (out, _) = run(&[b"abc", &big[..MAX_HELD_LINE], b"\n"]);
        assert_eq!(out, ["<3b", &format!("{MAX_HELD_LINE}b"), "0b>"]);
        // A long line that the file ends in.
        let (out, _) = run(&[&big[..MAX_HELD_LINE + 1]]);
        assert_eq!(out, [format!("<{}b", MAX_HELD_LINE + 1), "0b>".to_string()]);
    }
}
