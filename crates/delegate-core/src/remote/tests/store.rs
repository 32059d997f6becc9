//! The helper store: `<remote_root>/helpers/<sha256>` keeps the runner's body, the agent's
//! helpers, the Claude hook and the plan's files, so a warm launch names them by hash only.
//! Launch scripts run locally with real bash and tmux; "another user" is uid 65534 (these
//! tests run as root, like the remote_root tests in root.rs).

use super::tests::{Scratch, fake_plan, sha, vars, wait_secs};
use super::*;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

fn store(s: &Scratch) -> PathBuf {
    s.root().join("helpers")
}

/// Runs `script`; the `DELEGATE-NEED` hashes when the brother asked for helpers (exit 34).
fn asked_for(s: &Scratch, script: &[u8]) -> Option<Vec<String>> {
    let out = s.run(script);
    let parsed = parse_output(&out.stdout, &out.stderr);
    if out.status.code() == Some(code::HELPERS_MISSING) {
        assert!(parsed.error.is_some_and(|(c, m)| c == code::HELPERS_MISSING && m.contains("helper")));
        Some(parsed.need)
    } else {
        assert!(out.status.success() && parsed.marker.is_some(), "{}", String::from_utf8_lossy(&out.stderr));
        None
    }
}

fn hash_of(name: &str, plan: &crate::agents::AgentPlan) -> String {
    let files = helper_files(&plan.files);
    sha(files.iter().find(|(n, _)| *n == name).unwrap().1.as_bytes())
}

#[test]
fn a_fresh_store_is_filled_once_and_warm_launches_carry_hashes_only() {
    let s = Scratch::new("store-fresh");
    let plan = fake_plan("exit 0\n");
    let v = vars(&s, "k-1", "dlg-k-1", &plan, b"hi");
    let lean = render(&v).unwrap();
    // What a warm launch carries besides the launch body and the prompt: the variables only.
    let body = AGENT_ENV_SH.len() + GIT_TREE_SH.len() + crate::remote::TMUX_CONTROL_SH.len() + LAUNCH_SH.len();
    assert!(lean.len() - body < 3 * 1024, "{} bytes of variables", lean.len() - body);
    let helpers: usize = helper_files(&plan.files).iter().map(|(_, c)| c.len()).sum();
    assert!(helpers > 30_000, "the helpers are what a warm launch no longer sends: {helpers}");

    // A fresh root: every helper is asked for, and nothing else happened.
    let mut need = asked_for(&s, &lean).expect("a fresh store lacks every helper");
    let mut all: Vec<String> = helper_files(&plan.files).iter().map(|(_, c)| sha(c.as_bytes())).collect();
    need.sort();
    all.sort();
    assert_eq!(need, all);
    assert!(!s.task_dir("k-1").exists(), "a task directory was created before the helpers were there");
    assert!(s.tmux(&["list-sessions"]).stdout.is_empty(), "a session was started");

    // The same launch with them: it runs, and the store keeps each under its hash, 0700/0600.
    assert_eq!(asked_for(&s, &with_helpers(&lean, &helper_files(&plan.files)).unwrap()), None);
    assert!(wait_secs(&s.task_dir("k-1").join("exit"), 5).starts_with("0 "));
    assert_eq!(std::fs::metadata(store(&s)).unwrap().permissions().mode() & 0o777, 0o700);
    for (name, content) in helper_files(&plan.files) {
        let f = store(&s).join(sha(content.as_bytes()));
        assert_eq!(std::fs::read_to_string(&f).unwrap(), content, "{name}");
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600, "{name}");
    }
    assert_eq!(std::fs::read_dir(store(&s)).unwrap().count(), all.len(), "temporary files left behind");
    // The task directory got the helpers as before.
    assert_eq!(std::fs::read_to_string(s.task_dir("k-1").join("report")).unwrap(), REPORT_SH);

    // Warm: the next launch goes through in one script, with no helper in it.
    let v2 = vars(&s, "k-2", "dlg-k-2", &plan, b"hi");
    assert_eq!(asked_for(&s, &render(&v2).unwrap()), None);
    assert!(wait_secs(&s.task_dir("k-2").join("exit"), 5).starts_with("0 "));
}

#[test]
fn a_helper_changed_replaced_or_linked_in_the_store_is_asked_for_again_and_never_used() {
    let s = Scratch::new("store-changed");
    let plan = fake_plan("exit 0\n");
    s.launch(&vars(&s, "k-0", "dlg-k-0", &plan, b"hi"));
    let run_body = hash_of("run-body.sh", &plan);
    let report = hash_of("report", &plan);
    let marker = s.dir.join("pwned");
    let evil = format!("main() {{ touch {}; }}; main\n", marker.display());
    let other_file = s.dir.join("elsewhere");
    std::fs::write(&other_file, &evil).unwrap();

    // Each way the runner's body can stop being ours.
    type Spoil<'a> = Box<dyn Fn(&Path) + 'a>;
    let cases: Vec<(&str, Spoil)> = vec![
        // Changed in place by this user (an agent runs as this user).
        ("changed", Box::new(|f: &Path| std::fs::write(f, &evil).unwrap())),
        // Replaced by a file of another user's.
        (
            "another user's",
            Box::new(|f: &Path| {
                std::fs::remove_file(f).unwrap();
                std::fs::write(f, RUN_SH).unwrap();
                std::os::unix::fs::chown(f, Some(65534), Some(65534)).unwrap();
            }),
        ),
        // A symbolic link to a file with the right content.
        (
            "a link",
            Box::new(|f: &Path| {
                let copy = s.dir.join("copy");
                std::fs::write(&copy, RUN_SH).unwrap();
                std::fs::remove_file(f).unwrap();
                symlink(&copy, f).unwrap();
            }),
        ),
        // Gone.
        ("removed", Box::new(|f: &Path| std::fs::remove_file(f).unwrap())),
    ];
    for (i, (case, spoil)) in cases.iter().enumerate() {
        spoil(&store(&s).join(&run_body));
        let key = format!("k-{}", i + 1);
        let session = format!("dlg-{key}");
        let v = vars(&s, &key, &session, &plan, b"hi");
        let lean = render(&v).unwrap();
        // Only that helper is asked for; nothing is created.
        assert_eq!(asked_for(&s, &lean), Some(vec![run_body.clone()]), "{case}");
        assert!(!s.task_dir(&key).exists(), "{case}: a task directory was created");
        // Sent again, it replaces what was there, and the launch runs our runner.
        assert_eq!(asked_for(&s, &with_helpers(&lean, &helper_files(&plan.files)).unwrap()), None, "{case}");
        assert!(wait_secs(&s.task_dir(&key).join("exit"), 5).starts_with("0 "), "{case}");
        let f = store(&s).join(&run_body);
        let meta = std::fs::symlink_metadata(&f).unwrap();
        assert!(meta.file_type().is_file() && std::os::unix::fs::MetadataExt::uid(&meta) == 0, "{case}");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), RUN_SH, "{case}");
        assert!(!marker.exists(), "{case}: the changed helper ran");
    }
    // Two at once: both named.
    std::fs::write(store(&s).join(&run_body), "x").unwrap();
    std::fs::write(store(&s).join(&report), "y").unwrap();
    let mut need = asked_for(&s, &render(&vars(&s, "k-9", "dlg-k-9", &plan, b"hi")).unwrap()).unwrap();
    need.sort();
    let mut want = vec![run_body, report];
    want.sort();
    assert_eq!(need, want);
}

#[test]
fn a_store_that_is_not_this_users_alone_is_refused_and_left_alone() {
    let plan = fake_plan("exit 0\n");
    type Spoil = fn(&Path, &Path);
    let cases: [(&str, Spoil, &str); 3] = [
        (
            "writable by others",
            |st: &Path, _| std::fs::set_permissions(st, std::fs::Permissions::from_mode(0o777)).unwrap(),
            "writable by group or others",
        ),
        (
            "another user's",
            |st: &Path, _| std::os::unix::fs::chown(st, Some(65534), Some(65534)).unwrap(),
            "belongs to uid 65534",
        ),
        (
            "a link",
            |st: &Path, elsewhere: &Path| {
                std::fs::rename(st, elsewhere).unwrap();
                symlink(elsewhere, st).unwrap();
            },
            "symbolic link",
        ),
    ];
    for (case, spoil, words) in cases {
        let s = Scratch::new("store-foreign");
        s.launch(&vars(&s, "k-0", "dlg-k-0", &plan, b"hi"));
        spoil(&store(&s), &s.dir.join("elsewhere"));
        let before = std::fs::symlink_metadata(store(&s)).unwrap();
        let v = vars(&s, "k-1", "dlg-k-1", &plan, b"hi");
        for script in [render(&v).unwrap(), with_helpers(&render(&v).unwrap(), &helper_files(&plan.files)).unwrap()] {
            let out = s.run(&script);
            let (code, message) = parse_output(&out.stdout, &out.stderr).error.expect("a refusal");
            assert_eq!(code, code::TASK_DIR_NOT_WRITABLE, "{case}: {message}");
            assert!(message.contains("helpers") && message.contains(words), "{case}: {message}");
            assert!(!s.task_dir("k-1").exists(), "{case}");
        }
        let after = std::fs::symlink_metadata(store(&s)).unwrap();
        assert_eq!(before.permissions().mode(), after.permissions().mode(), "{case}: the store was chmodded");
    }
}

#[test]
fn helper_files_that_arrive_damaged_are_refused_and_not_stored() {
    let s = Scratch::new("store-damaged");
    let plan = fake_plan("exit 0\n");
    let v = vars(&s, "k-1", "dlg-k-1", &plan, b"hi");
    let lean = render(&v).unwrap();
    // A bundle claiming the runner body's hash for other bytes.
    let claimed = hash_of("run-body.sh", &plan);
    let bundle = format!("{claimed}\u{1f}echo not the runner\u{1f}");
    use base64::Engine;
    let line = format!("DLG_FILES='{}'\n", base64::engine::general_purpose::STANDARD.encode(bundle));
    let text = String::from_utf8(lean).unwrap().replacen("DLG_FILES=''\n", &line, 1);
    let out = s.run(text.as_bytes());
    let (code, message) = parse_output(&out.stdout, &out.stderr).error.expect("a refusal");
    assert_eq!(code, code::PROMPT_NOT_WRITTEN, "{message}");
    assert!(message.contains(&claimed) && message.contains("damaged"), "{message}");
    assert!(!store(&s).join(&claimed).exists(), "damaged bytes were stored");
    assert_eq!(std::fs::read_dir(store(&s)).unwrap().count(), 0, "temporary files left behind");
    assert!(!s.task_dir("k-1").exists());
}

#[test]
fn a_need_line_yields_only_hashes_and_at_most_64() {
    let h = "a".repeat(64);
    let line = format!("DELEGATE-NEED {h} ../../etc/passwd {} {}\n", "B".repeat(64), "0".repeat(63));
    assert_eq!(parse_output(line.as_bytes(), b"").need, vec![h.clone()]);
    let many = format!("DELEGATE-NEED {}\n", vec![h.as_str(); 1000].join(" "));
    assert_eq!(parse_output(many.as_bytes(), b"").need.len(), 64);
}
