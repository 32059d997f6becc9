//! Which scripts a `delegate worker` runs: only delegate's own. A script that travels
//! through a NATS server is a few `NAME='<base64>'` lines (the variable parts) followed by
//! one of the bodies below, byte for byte as this build of delegate renders it. Anything
//! else (another version's body, a body with a line added, a variable line that is not
//! plain base64) is refused, so a publisher on a worker's subjects can hand it data for
//! delegate's scripts, never a script of its own.
//!
//! Over SSH the lead runs what it likes anyway (it holds a login); through a server shared
//! by many clients, this is what keeps the worker's subjects from being a remote shell.

use sha2::{Digest, Sha256};

use super::artifacts::ARTIFACTS_SH;
use super::diff::DIFF_SH;
use super::protocol::{CANCEL_SH, OWN_ROOT_SH, SAY_SH, SYNC_SH};
use super::{AGENT_ENV_SH, DOCTOR_SH, GIT_TREE_SH, LAUNCH_SH, TMUX_CONTROL_SH};

/// Every body a script of delegate ends with, by name: the same concatenations the
/// renderers write after their variable lines.
pub fn bodies() -> Vec<(&'static str, String)> {
    vec![
        ("launch", [AGENT_ENV_SH, GIT_TREE_SH, TMUX_CONTROL_SH, LAUNCH_SH].concat()),
        ("sync", [OWN_ROOT_SH, TMUX_CONTROL_SH, SYNC_SH].concat()),
        ("cancel", [OWN_ROOT_SH, CANCEL_SH].concat()),
        ("say", [OWN_ROOT_SH, SAY_SH].concat()),
        ("doctor", [AGENT_ENV_SH, DOCTOR_SH].concat()),
        ("diff", [GIT_TREE_SH, DIFF_SH].concat()),
        ("artifacts", ARTIFACTS_SH.to_string()),
        ("cleanup", super::CLEANUP_SH.to_string()),
    ]
}

/// One of [`bodies`] with a short name for it: the first 16 hex digits of its SHA-256.
pub struct KnownBody {
    pub id: String,
    pub text: String,
    /// The body as a resident shell keeps it ([`resident_form`]).
    pub resident: String,
}

/// `text` (a body: function definitions, then one line calling its entry function with a
/// sentinel) as a resident shell keeps it (transport/ssh/resident.sh, `D`): the same
/// definitions with the entry function renamed `__dlg_main_<id>`, and no call, but a
/// function `__dlg_body_<id>` making it. The shell evaluates this once, so a request runs
/// the body without defining its functions again: bash copies a function's whole parsed
/// body each time its definition runs (about 1.5 ms for the launch's). Renamed because
/// every body's entry is called `main`; the other top-level functions are shared files,
/// the same in every body that has them (tested).
pub fn resident_form(text: &str, id: &str) -> Option<String> {
    let defs = text.strip_suffix('\n')?;
    let (defs, call) = defs.rsplit_once('\n')?;
    let (entry, sentinel) = call.split_once(' ')?;
    let plain = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'-');
    if !plain(entry) || !plain(sentinel) {
        return None;
    }
    let head = format!("\n{entry}() {{\n");
    if defs.matches(&head).count() != 1 {
        return None;
    }
    let defs = defs.replacen(&head, &format!("\n__dlg_main_{id}() {{\n"), 1);
    Some(format!("{defs}\n__dlg_body_{id}() {{\n\t__dlg_main_{id} {sentinel}\n}}\n"))
}

/// [`bodies`], hashed once.
pub(crate) fn known_bodies() -> &'static [KnownBody] {
    static KNOWN: std::sync::OnceLock<Vec<KnownBody>> = std::sync::OnceLock::new();
    KNOWN.get_or_init(|| {
        bodies()
            .into_iter()
            .map(|(_, text)| {
                let id: String = Sha256::digest(text.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
                let resident = resident_form(&text, &id).expect("every body ends calling its entry function");
                KnownBody { id, text, resident }
            })
            .collect()
    })
}

/// Splits `script` into its variable lines and its body when the body is one of
/// [`bodies`]: the length of the variable lines, and the body. The resident shell keeps
/// such a body parsed and is sent only the variable lines.
pub fn split(script: &[u8]) -> Option<(usize, &'static KnownBody)> {
    let mut prefix = 0usize;
    for _ in 0..16 {
        match var_line_len(&script[prefix..]) {
            Some(len) => prefix += len,
            None => break,
        }
    }
    let rest = &script[prefix..];
    known_bodies().iter().find(|b| rest == b.text.as_bytes()).map(|b| (prefix, b))
}

/// A fingerprint of this build's scripts, to name in a refusal ("the lead runs scripts
/// X, this worker Y"): the first 12 hex digits of SHA-256 over every body.
pub fn scripts_version() -> String {
    let mut h = Sha256::new();
    for (name, body) in bodies() {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(body.as_bytes());
    }
    h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Checks that `script` is variable lines and one of [`bodies`]; gives the body's name.
pub fn check(script: &[u8]) -> Result<&'static str, String> {
    let mut rest = script;
    let mut vars = 0usize;
    while let Some(len) = var_line_len(rest) {
        rest = &rest[len..];
        vars += 1;
        if vars > 16 {
            return Err("more than 16 variable lines: not a script of delegate".into());
        }
    }
    for (name, body) in bodies() {
        if rest == body.as_bytes() {
            return Ok(name);
        }
    }
    Err(format!(
        "not one of this delegate's scripts (this worker's scripts are version {}); is the lead running another version of delegate?",
        scripts_version()
    ))
}

/// The length of a leading `NAME='<base64>'\n` line (NAME in `[A-Z_]`), or `None`.
fn var_line_len(s: &[u8]) -> Option<usize> {
    let name = s.iter().take_while(|b| b.is_ascii_uppercase() || **b == b'_').count();
    if name == 0 || s.get(name) != Some(&b'=') || s.get(name + 1) != Some(&b'\'') {
        return None;
    }
    let start = name + 2;
    // base64, or the launch's escaped text (`remote::escape`): never a quote or a newline.
    let value = s[start..].iter().take_while(|b| super::escape::inert(**b)).count();
    let end = start + value;
    (s.get(end) == Some(&b'\'') && s.get(end + 1) == Some(&b'\n')).then_some(end + 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::protocol::{SyncRequest, SyncTaskRequest, render_cancel, render_say, render_sync};

    #[test]
    fn delegates_own_scripts_pass_and_name_their_body() {
        let sync = render_sync(&SyncRequest {
            remote_root: "~/.delegate".into(),
            tasks: vec![SyncTaskRequest { task_key: "m-1".into(), session: "dlg-m-1".into(), ..Default::default() }],
            max_bytes_per_file: 10,
            max_bytes_total: 10,
        })
        .unwrap();
        assert_eq!(check(&sync), Ok("sync"));
        assert_eq!(check(&render_cancel("~/.delegate", "m-1", "dlg-m-1").unwrap()), Ok("cancel"));
        assert_eq!(
            check(
                &render_say(
                    "~/.delegate",
                    "m-1",
                    3,
                    &crate::remote::protocol::say_line(3, "2026-01-01T00:00:00Z", "lead", "hi")
                )
                .unwrap()
            ),
            Ok("say")
        );
        let diff =
            crate::remote::diff::render("/w", &"a".repeat(40), crate::remote::diff::DiffMode::Stat, 1, 0, 1).unwrap();
        assert_eq!(check(&diff), Ok("diff"));
    }

    #[test]
    fn a_script_splits_into_its_variable_lines_and_a_known_body() {
        let cancel = render_cancel("~/.delegate", "m-1", "dlg-m-1").unwrap();
        let (prefix, body) = split(&cancel).unwrap();
        assert!(cancel[..prefix].starts_with(b"DLG_VARS='") && cancel[..prefix].ends_with(b"'\n"));
        assert_eq!(&cancel[prefix..], body.text.as_bytes());
        assert_eq!(body.id.len(), 16);
        // Every body is ASCII: the resident shell reads it as characters.
        assert!(bodies().iter().all(|(_, b)| b.is_ascii()));
        let mut changed = cancel.clone();
        changed.extend_from_slice(b"echo more\n");
        assert!(split(&changed).is_none());
        assert!(split(b"echo hi\n").is_none());
    }

    #[test]
    fn anything_else_is_refused() {
        let cancel = render_cancel("~/.delegate", "m-1", "dlg-m-1").unwrap();
        // A command added after the body, before it, or in a variable's value.
        let mut after = cancel.clone();
        after.extend_from_slice(b"rm -rf ~\n");
        assert!(check(&after).is_err());
        let mut before = b"rm -rf ~\n".to_vec();
        before.extend_from_slice(&cancel);
        assert!(check(&before).is_err());
        // (Inside the quotes `$(...)` is only text; a value that leaves them is refused.)
        for value in
            [&b"DLG_VARS='x'$(rm -rf ~)'y'\n"[..], b"DLG_VARS='x\nrm -rf ~\n'\n", b"DLG_VARS=\"$(rm -rf ~)\"\n"]
        {
            let mut in_value = value.to_vec();
            in_value.extend_from_slice(&[OWN_ROOT_SH, CANCEL_SH].concat().into_bytes());
            assert!(check(&in_value).is_err(), "{}", String::from_utf8_lossy(value));
        }
        assert!(check(b"echo hi\n").is_err());
        assert!(check(b"").is_err());
        let e = check(b"true").unwrap_err();
        assert!(e.contains(&scripts_version()), "{e}");
    }

    /// Top-level functions as `name -> definition` (a definition starts at `name() {` at the
    /// start of a line and ends at the next line that is `}`: the style of every script).
    fn top_level_functions(text: &str) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let mut open: Option<(String, String)> = None;
        for line in text.lines() {
            if let Some((name, def)) = open.as_mut() {
                def.push_str(line);
                def.push('\n');
                if line == "}" {
                    found.push((std::mem::take(name), std::mem::take(def)));
                    open = None;
                }
            } else if let Some(name) = line.split_once("() {").map(|(n, _)| n)
                && !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                open = Some((name.to_string(), format!("{line}\n")));
            }
        }
        assert!(open.is_none(), "a definition never ended");
        found
    }

    #[test]
    fn a_resident_shell_can_keep_every_body_defined_at_once() {
        // Each body's entry is renamed; every other top-level function is the same text in
        // every body that defines it, so keeping one body never changes another's.
        let mut seen = std::collections::HashMap::<String, String>::new();
        for body in known_bodies() {
            let functions = top_level_functions(&body.resident);
            assert!(functions.iter().any(|(n, _)| *n == format!("__dlg_main_{}", body.id)), "{}", body.id);
            for (name, def) in functions {
                if let Some(earlier) = seen.insert(name.clone(), def.clone()) {
                    assert_eq!(earlier, def, "{name} is defined differently by two bodies");
                }
            }
        }
        assert!(seen.contains_key("locate_agent") && seen.contains_key("foreign_root"), "{:?}", seen.keys());
    }

    #[test]
    fn keeping_a_body_runs_none_of_it() {
        // bash -x traces every command it runs; defining a function is not one.
        for body in known_bodies() {
            let check = format!("{}\ndeclare -F __dlg_body_{} >/dev/null || echo missing", body.resident, body.id);
            let out = std::process::Command::new("bash").args(["-xc", &check]).output().unwrap();
            assert!(out.status.success(), "{}", body.id);
            assert_eq!(
                (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr).lines().count()),
                ("".into(), 1),
                "{}: only definitions, then the one check: {}",
                body.id,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let (text, id) = ("f() {\n\t:\n}\nmain() {\n\tf\n}\nmain delegate-x-complete\n", "ab");
        assert_eq!(
            resident_form(text, id).unwrap(),
            "f() {\n\t:\n}\n__dlg_main_ab() {\n\tf\n}\n__dlg_body_ab() {\n\t__dlg_main_ab delegate-x-complete\n}\n"
        );
        assert!(resident_form("main() {\n}\nmain $(rm -rf ~)\n", id).is_none());
        assert!(resident_form("main() {\n}\n", id).is_none());
    }
}
