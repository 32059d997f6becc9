//! Output piped into a reader that stops early (`delegate status | head -1`): delegate exits
//! quietly with 141, as a program killed by SIGPIPE would, and prints no "Broken pipe".

use std::process::{Command, Stdio};

use crate::support::Env;

/// Runs `delegate ARGS | head -c 1` in bash; returns delegate's exit status and stderr.
fn piped_into_head(env: &Env, args: &[&str]) -> (i32, String) {
    let err = env.home.join("pipe-stderr");
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#""$DLG" "$@" 2>"$ERR" | head -c 1 >/dev/null; echo "${PIPESTATUS[0]}""#)
        .arg("bash")
        .args(args)
        .env_clear()
        .env("DLG", env!("CARGO_BIN_EXE_delegate"))
        .env("ERR", &err)
        .env("HOME", &env.home)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("DELEGATE_CONFIG", &env.config)
        .env("DELEGATE_HOME", &env.data)
        .current_dir(&env.home)
        .output()
        .expect("bash");
    let code = String::from_utf8_lossy(&out.stdout).trim().parse().expect("an exit status");
    (code, std::fs::read_to_string(&err).unwrap_or_default())
}

/// An inventory with many hosts: `hosts list` then writes far more than a pipe holds, so
/// it is still writing when `head` has gone.
fn env_with_hosts(n: usize) -> Env {
    let env = Env::new();
    env.config_append("");
    for i in 0..n {
        env.config_append(&format!("[hosts.h{i}]\naddress = \"host-{i}.example.org\"\nuser = \"u\"\n"));
    }
    env
}

#[test]
fn a_closed_reader_ends_delegate_quietly() {
    let env = env_with_hosts(3000);
    // println! path (panics without the fix).
    let (code, stderr) = piped_into_head(&env, &["hosts", "list"]);
    assert_eq!((code, stderr.as_str()), (141, ""), "hosts list");
    // writeln!(…)? path, written again after head has gone (an error exit without the fix).
    let (code, stderr) = piped_into_head(&env, &["status", "--watch", "--interval", "1"]);
    assert_eq!((code, stderr.as_str()), (141, ""), "status --watch");
    // print_json (serde_json's writer).
    let (code, stderr) = piped_into_head(&env, &["hosts", "list", "--json"]);
    assert_eq!((code, stderr.as_str()), (141, ""), "hosts list --json");
}

#[test]
fn a_reader_closed_before_the_first_write_ends_delegate_quietly() {
    // Deterministic: the read end is closed before delegate starts.
    let env = Env::new();
    env.config_append("");
    for args in [&["status"][..], &["list"], &["hosts", "list"], &["status", "--json"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_delegate"))
            .args(args)
            .env_clear()
            .env("HOME", &env.home)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("DELEGATE_CONFIG", &env.config)
            .env("DELEGATE_HOME", &env.data)
            .current_dir(&env.home)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(141), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    }
}
