//! The remote_root and what delegate keeps in it (tasks/, cache/) are used only when they
//! are this user's alone, as OpenSSH's StrictModes and tmux's socket directory require: the
//! launch, sync, say and cancel scripts run locally against roots another user made first
//! (owned by uid 65534 when these tests run as root), symbolic links, and roots writable by
//! group or others. A fresh root is created 0700.

use super::tests::{Scratch, fake_plan, render_sent, vars};
use super::*;
use crate::remote::protocol::{SyncRequest, render_cancel, render_say, render_sync};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Launches task `key` with the scratch's remote_root; the refusal's code and message.
fn refused(s: &Scratch, key: &str) -> (i32, String) {
    let plan = fake_plan("");
    let out = s.run(&render_sent(&vars(s, key, &format!("dlg-{key}"), &plan, b"hi")).unwrap());
    assert!(!out.status.success(), "launched in an unsafe root: {}", String::from_utf8_lossy(&out.stdout));
    let (code, message) = parse_output(&out.stdout, &out.stderr)
        .error
        .unwrap_or_else(|| panic!("no DELEGATE-ERROR; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(code));
    assert!(s.tmux(&["list-sessions"]).stdout.is_empty(), "a session was started");
    (code, message)
}

fn assert_refusal(s: &Scratch, key: &str, words: &[&str]) {
    let (code, message) = refused(s, key);
    assert_eq!(code, code::TASK_DIR_NOT_WRITABLE, "{message}");
    assert!(message.contains("remote_root refused") && message.contains("Fix:"), "{message}");
    for w in words {
        assert!(message.contains(w), "message lacks {w:?}: {message}");
    }
    assert!(!s.task_dir(key).exists(), "a task directory was created");
}

#[test]
fn a_fresh_root_and_its_tasks_and_cache_are_created_0700() {
    let s = Scratch::new("root-fresh");
    let plan = {
        let mut p = fake_plan("");
        p.version_argv = vec!["bash".into(), "-c".into(), "echo 1.2.3".into()];
        p
    };
    let root = s.root();
    let dir = s.launch(&vars(&s, "k-fresh", "dlg-k-fresh", &plan, b"hi"));
    for d in [root.clone(), root.join("tasks"), root.join("cache"), dir] {
        assert_eq!(mode_of(&d), 0o700, "{}", d.display());
    }
    // A second launch in the same root is fine (the cache is now read).
    s.launch(&vars(&s, "k-fresh2", "dlg-k-fresh2", &plan, b"hi"));
    let _ = s.tmux(&["kill-server"]);
}

#[test]
fn a_root_or_tasks_or_cache_that_is_a_symbolic_link_is_refused() {
    let s = Scratch::new("root-link");
    let real = s.dir.join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    // The root itself, even to a directory of our own.
    symlink(&real, s.root()).unwrap();
    assert_refusal(&s, "k-l1", &[&s.root().display().to_string(), "symbolic link", "replace the link"]);
    assert!(std::fs::read_dir(&real).unwrap().next().is_none(), "something was written through the link");

    // tasks/ or cache/ inside a root of our own.
    std::fs::remove_file(s.root()).unwrap();
    std::fs::create_dir(s.root()).unwrap();
    std::fs::set_permissions(s.root(), std::fs::Permissions::from_mode(0o700)).unwrap();
    symlink(&real, s.root().join("tasks")).unwrap();
    assert_refusal(&s, "k-l2", &["/root/tasks is a symbolic link"]);
    std::fs::remove_file(s.root().join("tasks")).unwrap();
    symlink(&real, s.root().join("cache")).unwrap();
    assert_refusal(&s, "k-l3", &["/root/cache is a symbolic link"]);
    assert!(std::fs::read_dir(&real).unwrap().next().is_none(), "something was written through a link");
}

#[test]
fn a_root_writable_by_group_or_others_is_refused_and_never_chmodded() {
    let s = Scratch::new("root-mode");
    std::fs::create_dir(s.root()).unwrap();
    for mode in [0o1777, 0o770, 0o707] {
        std::fs::set_permissions(s.root(), std::fs::Permissions::from_mode(mode)).unwrap();
        assert_refusal(&s, "k-m", &["writable by group or others", &format!("mode {mode:o}"), "chmod go-w"]);
        assert_eq!(mode_of(&s.root()), mode, "the launch changed the root's mode");
    }
    // The same for tasks/ and cache/ in a root that is fine.
    std::fs::set_permissions(s.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for sub in ["tasks", "cache"] {
        let d = s.root().join(sub);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o775)).unwrap();
        assert_refusal(&s, "k-m2", &[&format!("/root/{sub} is writable by group or others (mode 775)")]);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    // Fixed by hand: now it launches.
    let plan = fake_plan("");
    s.launch(&vars(&s, "k-m3", "dlg-k-m3", &plan, b"hi"));
    let _ = s.tmux(&["kill-server"]);
}

#[test]
fn a_root_tasks_or_cache_owned_by_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to make a directory owned by another uid");
        return;
    }
    let s = Scratch::new("root-owner");
    std::fs::create_dir(s.root()).unwrap();
    std::fs::set_permissions(s.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(s.root(), Some(65534), Some(65534)).unwrap();
    assert_refusal(&s, "k-o1", &["belongs to uid 65534, not to this user (uid 0)", "chown"]);
    assert!(!s.root().join("tasks").exists(), "tasks/ was created in another user's root");

    std::os::unix::fs::chown(s.root(), Some(0), Some(0)).unwrap();
    for sub in ["tasks", "cache"] {
        let d = s.root().join(sub);
        std::fs::create_dir(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
        assert_refusal(&s, "k-o2", &[&format!("/root/{sub} belongs to uid 65534")]);
        std::os::unix::fs::chown(&d, Some(0), Some(0)).unwrap();
    }
}

#[test]
fn sync_say_and_cancel_refuse_a_root_that_is_not_this_users() {
    let s = Scratch::new("root-others");
    let real = s.dir.join("real");
    std::fs::create_dir_all(real.join("tasks/k-1")).unwrap();
    symlink(&real, s.root()).unwrap();
    let root = s.root().to_string_lossy().into_owned();
    let req = SyncRequest { remote_root: root.clone(), tasks: vec![], max_bytes_per_file: 10, max_bytes_total: 10 };
    let say_line = r#"{"id":3,"at":"2024-01-01T00:00:00Z","author":"lead","text":"hi"}"#;
    for script in [
        render_sync(&req).unwrap(),
        render_say(&root, "k-1", 3, say_line).unwrap(),
        render_cancel(&root, "k-1", "dlg-k-1").unwrap(),
    ] {
        let out = s.run(&script);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(25), "{err}");
        assert!(err.contains("DELEGATE-ERROR 25 remote_root refused") && err.contains(&root), "{err}");
    }
    assert!(!real.join("tasks/k-1/inbox.jsonl").exists() && !real.join("tasks/k-1/cancel").exists());
}
