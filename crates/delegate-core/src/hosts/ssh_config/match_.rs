//! `Match` lines, evaluated as OpenSSH's readconf.c `match_cfg_line` does.
//!
//! Criteria are checked left to right and all must hold; `!` negates one. `exec` runs its
//! command only when every earlier criterion on the line held (ssh skips it otherwise), with
//! `/bin/sh -c`, stdin and stdout on /dev/null, the process's environment inherited, and
//! exit status 0 meaning "matches". `canonical` and `final` hold only in the second pass,
//! which a non-negated `Match final` requests (see [`super::resolve`]).

use std::process::{Command, Stdio};

use super::{Loc, Parser, SshConfigError};
use crate::hosts::known_hosts::wildcard_match;

/// What a criterion compares against, gathered from the settings read so far.
pub(super) struct MatchState {
    /// `HostName` (with `%h` expanded) once one applies, else the host as typed.
    pub host: String,
    /// The remote user so far: the inventory's, a `User` already read, or the local user.
    pub remote_user: String,
    /// The `Tag` read so far, or empty.
    pub tag: String,
    pub final_pass: bool,
}

/// Criteria that take an argument, also accepted as `name=value` (OpenSSH 10).
const WITH_ARGUMENT: &[&str] = &[
    "host",
    "originalhost",
    "user",
    "localuser",
    "localnetwork",
    "version",
    "tagged",
    "command",
    "exec",
    "sessiontype",
];

impl Parser<'_, '_> {
    /// Whether a Match line applies; `Err` for a malformed line, as ssh refuses the whole file.
    /// Sets `want_final` for a non-negated `final`.
    pub(super) fn match_line(&mut self, args: &[String], at: &Loc) -> Result<bool, SshConfigError> {
        let state = self.match_state(at)?;
        let mut result = true;
        let mut attributes = 0;
        let mut words = args.iter().map(String::as_str);
        while let Some(word) = words.next() {
            let (negate, attrib) = word.strip_prefix('!').map_or((false, word), |a| (true, a));
            if attrib.eq_ignore_ascii_case("all") {
                // ssh's check lets one criterion come before `all` (it is then ignored).
                if attributes > 1 || words.next().is_some() {
                    return Err(
                        at.invalid(format!("Match \"{word}\" cannot be combined with other criteria; use it alone"))
                    );
                }
                return Ok(result && !negate);
            }
            attributes += 1;
            if attrib.eq_ignore_ascii_case("canonical") || attrib.eq_ignore_ascii_case("final") {
                if attrib.eq_ignore_ascii_case("final") && !negate {
                    self.want_final = true;
                }
                result &= state.final_pass != negate;
                continue;
            }
            let (name, arg) = match attrib.split_once('=') {
                Some((n, a)) if WITH_ARGUMENT.iter().any(|c| c.eq_ignore_ascii_case(n)) => (n, a),
                _ => match words.next() {
                    Some(a) => (attrib, a),
                    None => return Err(at.invalid(format!("Match \"{word}\" needs an argument"))),
                },
            };
            let name = name.to_ascii_lowercase();
            if arg.is_empty() && name != "tagged" && name != "command" {
                return Err(at.invalid(format!("Match \"{word}\" needs an argument")));
            }
            let hit = match name.as_str() {
                "host" => pattern_list(&state.host.to_ascii_lowercase(), arg, true),
                "originalhost" => pattern_list(&self.q.host.to_ascii_lowercase(), arg, true),
                "user" => pattern_list(&state.remote_user, arg, false),
                "localuser" => pattern_list(self.q.local_user, arg, false),
                "tagged" if state.tag.is_empty() => arg.is_empty(),
                "tagged" => pattern_list(&state.tag, arg, false),
                // delegate only ever runs commands (never a shell or a subsystem).
                "sessiontype" => pattern_list("exec", arg, false),
                "exec" => {
                    let command = self.expand_exec(arg, &state, at)?;
                    // ssh expands the command either way but runs it only when the line can
                    // still match.
                    if !result {
                        continue;
                    }
                    run_exec(&command, at)?
                }
                "localnetwork" | "version" | "command" => {
                    if !result {
                        continue;
                    }
                    return Err(at.unsupported(
                        format!("Match {name}"),
                        "cannot be evaluated by delegate (it depends on the ssh binary or the command line); use Host or Match exec instead",
                    ));
                }
                _ => return Err(at.invalid(format!("unsupported Match criterion \"{attrib}\"; check the spelling"))),
            };
            result &= hit != negate;
        }
        if attributes == 0 {
            return Err(at.invalid("Match needs one or more criteria, or \"all\""));
        }
        Ok(result)
    }
}

/// OpenSSH's match_pattern_list: comma-separated patterns, `!` negates and wins. With `lower`,
/// patterns are lowercased (match_hostname; the caller lowercases the string).
pub(super) fn pattern_list(s: &str, list: &str, lower: bool) -> bool {
    let mut matched = false;
    for pattern in list.split(',') {
        let (negated, pattern) = pattern.strip_prefix('!').map_or((false, pattern), |p| (true, p));
        let pattern = if lower { pattern.to_ascii_lowercase() } else { pattern.to_string() };
        if wildcard_match(pattern.as_bytes(), s.as_bytes()) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// Runs a `Match exec` command like ssh's execute_in_shell. ssh runs `$SHELL`; the library
/// reads no environment, so it is always `/bin/sh` (the default ssh falls back to).
fn run_exec(command: &str, at: &Loc) -> Result<bool, SshConfigError> {
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| at.invalid(format!("Match exec \"{command}\": cannot run /bin/sh: {e}")))?;
    match status.code() {
        Some(code) => Ok(code == 0),
        // ssh treats a command killed by a signal as a bad Match line.
        None => Err(at.invalid(format!("Match exec \"{command}\" exited abnormally ({status})"))),
    }
}

#[cfg(test)]
mod unit {
    use super::pattern_list;

    #[test]
    fn pattern_lists_negate_and_fold_case_like_ssh() {
        assert!(pattern_list("web1", "db*,WEB*", true));
        assert!(!pattern_list("web1", "WEB*", false));
        assert!(!pattern_list("web1", "web*,!web1", false));
        assert!(!pattern_list("web1", "!db", false), "a list of only negations never matches");
    }
}
