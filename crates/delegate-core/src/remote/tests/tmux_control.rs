//! When a resident shell asks for a tmux control client (tmux-control.sh's `control_wanted`):
//! only on a tmux whose server survives one (3.7 and later), or on 3.2 to 3.6 where the
//! brother's user opted in. Run with real bash; the request is the `keep` record the
//! function writes on fd 3.

use super::TMUX_CONTROL_SH;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What `control_wanted VERSION task-1` hands the resident shell, in a home with or without
/// the opt-in file.
fn wanted(version: &str, opted_in: bool, resident: bool) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let home = std::env::temp_dir().join(format!(
        "dlg-tmux-control-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&home).unwrap();
    if opted_in {
        std::fs::write(home.join(".delegate-tmux-control"), "").unwrap();
    }
    let script = home.join("tmux-control.sh");
    std::fs::write(&script, TMUX_CONTROL_SH).unwrap();
    let out = Command::new("bash")
        .args(["-c", r#". "$1"; [ "$3" = 0 ] || __dlg_resident=1; control_wanted "$2" task-1 3>&1"#, "-"])
        .arg(&script)
        .arg(version)
        .arg(if resident { "1" } else { "0" })
        .env_clear()
        .env("HOME", &home)
        .env("PATH", std::env::var_os("PATH").unwrap())
        .output()
        .unwrap();
    std::fs::remove_dir_all(&home).unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

const START: &str = "__dlg_kept_ctl=start\\ task-1\0";

#[test]
fn a_control_client_is_wanted_by_default_only_from_tmux_3_7() {
    for version in ["3.7", "3.7c", "3.10", "4.0", "next-3.8"] {
        assert_eq!(wanted(version, false, true), START, "tmux {version}");
    }
    // 3.2 to 3.6 crash when a session is made while a control client introduces itself.
    for version in ["3.3a", "3.2", "3.6b", "2.9a", "master", "", "3"] {
        assert_eq!(wanted(version, false, true), "", "tmux {version}");
    }
}

#[test]
fn before_3_7_a_control_client_is_wanted_only_where_the_user_opted_in() {
    for version in ["3.2", "3.3a", "3.6b", "3.7"] {
        assert_eq!(wanted(version, true, true), START, "tmux {version}");
    }
    // Control mode with `attach -f no-output` is 3.2's: before it, not even opted in.
    for version in ["3.1c", "2.9a", "1.8"] {
        assert_eq!(wanted(version, true, true), "", "tmux {version}");
    }
}

#[test]
fn only_a_resident_shell_is_asked_for_a_control_client() {
    assert_eq!(wanted("3.7", true, false), "");
}
