//! The runner's `exit` record on the brother.

use super::*;

/// How the run ended, as the runner recorded it on the brother: the `exit` file holds
/// `<code> <time> [reason]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitRecord {
    pub code: i32,
    /// The runner's UTC timestamp, as written (empty if the record had none).
    pub at: String,
    /// Set when delegate itself stopped the agent.
    pub reason: Option<ExitReason>,
    /// With [`ExitReason::Budget`]: the dollars spent and the limit, as the runner wrote
    /// them (checked to be plain decimal numbers).
    pub spend: Option<(String, String)>,
}

/// Why delegate stopped the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    TimedOut,
    TurnLimit,
    Cancelled,
    /// The runner was hung up on (its tmux session or server was killed) and stopped the agent.
    Hangup,
    /// The runner stopped the agent when the cost of its tokens reached the spend limit.
    Budget,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::TimedOut => "timed_out",
            ExitReason::TurnLimit => "turn_limit",
            ExitReason::Cancelled => "cancelled",
            ExitReason::Hangup => "hangup",
            ExitReason::Budget => "budget",
        }
    }

    pub(super) fn from_word(word: &str) -> Option<ExitReason> {
        [ExitReason::TimedOut, ExitReason::TurnLimit, ExitReason::Cancelled, ExitReason::Hangup, ExitReason::Budget]
            .into_iter()
            .find(|r| r.as_str() == word)
    }
}

impl ExitRecord {
    /// Parse the first non-empty line. The code is required; an unknown reason word reads as
    /// no reason, so a newer runner's reasons do not make the record unreadable.
    pub fn parse(text: &str) -> Option<ExitRecord> {
        let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
        let mut words = line.split_whitespace();
        let code = words.next()?.parse::<i32>().ok()?;
        let (at, reason) = match words.next() {
            Some(word) => match ExitReason::from_word(word) {
                Some(reason) => (String::new(), Some(reason)),
                None => (clip(word, MAX_WORD_CHARS), words.next().and_then(ExitReason::from_word)),
            },
            None => (String::new(), None),
        };
        let spend = match (reason, words.next(), words.next()) {
            (Some(ExitReason::Budget), Some(spent), Some(limit)) if dollars(spent) && dollars(limit) => {
                Some((spent.to_string(), limit.to_string()))
            }
            _ => None,
        };
        Some(ExitRecord { code, at, reason, spend })
    }

    /// The signal that killed the agent: shells report death by signal S as 128 + S.
    pub fn signal(&self) -> Option<i32> {
        (self.code > 128 && self.code < 256).then(|| self.code - 128)
    }

    /// "exited 1" or "was killed by signal 15 (SIGTERM)".
    pub(super) fn describe(&self) -> String {
        match self.signal() {
            Some(sig) => match signal_name(sig) {
                Some(name) => format!("was killed by signal {sig} ({name})"),
                None => format!("was killed by signal {sig}"),
            },
            None => format!("exited {}", self.code),
        }
    }
}

/// A plain decimal amount as the runner writes it (`0.012345`): digits, one dot, digits.
fn dollars(text: &str) -> bool {
    let (whole, cents) = text.split_once('.').unwrap_or((text, "0"));
    (1..=12).contains(&whole.len())
        && (1..=12).contains(&cents.len())
        && whole.bytes().chain(cents.bytes()).all(|b| b.is_ascii_digit())
}

fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return None,
    })
}
