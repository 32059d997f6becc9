//! The brother's preflight: each way a host cannot run a task ends the launch with its own
//! exit code and a message saying what to do, and the task is recorded `failed` with that
//! reason. Plus the one local refusal that never reaches a host: an unknown brother.

use std::path::{Path, PathBuf};
use std::process::Command;

use delegate_testkit::FakeHost;

use crate::support::{Env, Run};

/// The failed task from a `--json` run's stdout, checked against `show --json`: both say
/// `failed`, and the recorded reason contains every word in `words`.
fn assert_recorded_failed(env: &Env, run: &Run, words: &[&str]) -> serde_json::Value {
    let task = run.json();
    assert_eq!(task["status"], "failed", "{run}");
    let id = task["id"].as_i64().unwrap_or_else(|| panic!("no id in {task}"));
    let show = env.run(&["show", &id.to_string(), "--json"]).ok().json();
    assert_eq!(show["status"], "failed", "{show}");
    let reason = show["reason"].as_str().unwrap_or_else(|| panic!("no reason in {show}"));
    for w in words {
        assert!(reason.contains(w), "reason lacks {w:?}: {reason}");
    }
    show
}

fn no_tmux_server(host: &FakeHost) {
    let ls = host.tmux(&["list-sessions"]);
    assert!(
        !ls.status.success() || ls.stdout.is_empty(),
        "a tmux session exists after a refused launch: {}",
        String::from_utf8_lossy(&ls.stdout)
    );
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false)
}

/// The config of one host "h" (from `host`, remote root replaced) with brother "oppy".
fn env_with_remote_root(host: &FakeHost, root: &Path, agent: &str, sandbox: &str) -> Env {
    let env = Env::new();
    env.trust(host);
    let toml = env.host_toml("h", host);
    let original = format!("remote_root = \"{}\"", host.remote_root().display());
    assert!(toml.contains(&original), "{toml}");
    env.config_append(&toml.replace(&original, &format!("remote_root = \"{}\"", root.display())));
    env.add_brother("oppy", "h", host, agent, sandbox);
    env
}

#[test]
fn missing_tmux_is_exit_20_with_how_to_install_and_no_session() {
    let host = FakeHost::builder().path_without(&["tmux"]).start();
    let env = Env::with_brother(&host, "self-test", "read");
    let run = env.run(&["oppy", "needs tmux", "--json"]).fails_with(20);
    let err = run.stderr();
    assert!(err.contains("tmux not found") && err.contains("install tmux"), "{run}");
    let show = assert_recorded_failed(&env, &run, &["tmux", "install"]);
    assert_eq!(show["runs"][0]["launch_exit"], 20, "{show}");
    no_tmux_server(&host);
}

/// The base tools are looked up together first (one lookup for all of them): one missing,
/// even the last, is still found and named.
#[test]
fn a_missing_base_tool_is_exit_23_naming_it_and_nothing_starts() {
    let host = FakeHost::builder().path_without(&["flock"]).start();
    let env = Env::with_brother(&host, "self-test", "read");
    let run = env.run(&["oppy", "needs flock", "--json"]).fails_with(23);
    assert!(run.stderr().contains("'flock' not found on PATH"), "{run}");
    assert_recorded_failed(&env, &run, &["'flock'", "not found"]);
    no_tmux_server(&host);
}

#[test]
fn missing_agent_is_exit_21_naming_the_command() {
    let host = FakeHost::builder().without_fake_agents().start();
    let env = Env::with_brother(&host, "claude", "read");
    let run = env.run(&["oppy", "needs claude", "--json"]).fails_with(21);
    assert!(run.stderr().contains("agent command 'claude' not found"), "{run}");
    assert_recorded_failed(&env, &run, &["'claude'", "not found"]);
    no_tmux_server(&host);
}

#[test]
fn missing_workdir_is_exit_24_naming_the_directory() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "claude", "read");
    let run = env.run(&["oppy", "work elsewhere", "--workdir", "/nonexistent/x", "--json"]).fails_with(24);
    assert!(run.stderr().contains("/nonexistent/x") && run.stderr().contains("does not exist"), "{run}");
    let show = assert_recorded_failed(&env, &run, &["/nonexistent/x"]);
    assert_eq!(show["workdir"], "/nonexistent/x");
    assert!(host.agent_records().is_empty(), "the agent ran anyway");
    no_tmux_server(&host);
}

#[test]
fn an_unwritable_remote_root_is_exit_25() {
    let host = FakeHost::start();
    // Nobody, root included, can create directories in /proc.
    let mut roots = vec![PathBuf::from("/proc/delegate-cannot-write")];
    if is_root() {
        // A root-owned 0755 directory the remote user (dlgtest) can enter but not write.
        let locked = host.dir().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        roots.push(locked.join("root"));
        roots.push(locked);
    }
    for root in roots {
        let env = env_with_remote_root(&host, &root, "claude", "read");
        let run = env.run(&["oppy", "cannot store this", "--json"]).fails_with(25);
        let shown = root.display().to_string();
        assert!(run.stderr().contains(&shown), "message does not name {shown}:\n{run}");
        assert_recorded_failed(&env, &run, &[&shown, "remote_root"]);
    }
    assert!(host.agent_records().is_empty(), "the agent ran anyway");
    no_tmux_server(&host);
}

/// A remote_root another local user made first (a shared /tmp path: world-writable and
/// sticky, or theirs) is refused before anything is written in it: otherwise that user could
/// swap the helpers a task runs, read its prompt and forge its results.
#[test]
fn a_shared_or_foreign_remote_root_is_exit_25_and_nothing_starts() {
    let host = FakeHost::start();
    let shared = host.dir().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    if is_root() {
        // The remote user's own, so that the mode is what is wrong with it.
        std::os::unix::fs::chown(&shared, Some(host.uid()), None).unwrap();
    }
    let mut cases = vec![(shared.clone(), "writable by group or others (mode 1777)".to_string())];
    if is_root() {
        // Root-owned and closed to others, as another user's private directory is.
        let foreign = host.dir().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::set_permissions(&foreign, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        cases.push((foreign, format!("belongs to uid 0, not to this user (uid {})", host.uid())));
    }
    for (root, problem) in cases {
        let env = env_with_remote_root(&host, &root, "claude", "read");
        let run = env.run(&["oppy", "keep this private", "--json"]).fails_with(25);
        let shown = root.display().to_string();
        for w in [shown.as_str(), problem.as_str(), "remote_root refused", "this user's home"] {
            assert!(run.stderr().contains(w), "message lacks {w:?}:\n{run}");
        }
        assert_recorded_failed(&env, &run, &[&shown, &problem]);
        assert!(std::fs::read_dir(&root).unwrap().next().is_none(), "the launch wrote into {shown}");
    }
    assert!(host.agent_records().is_empty(), "the agent ran anyway");
    no_tmux_server(&host);
}

#[test]
fn claude_write_without_bwrap_is_refused_with_exit_26_not_downgraded() {
    let host = FakeHost::builder().path_without(&["bwrap"]).start();
    let env = Env::with_brother(&host, "claude", "write");
    // The brother's login shell would reset PATH to the system's, where this machine's bwrap
    // is: the plain environment is the one that lacks it.
    env.config_append("environment = \"plain\"\n");
    let run = env.run(&["oppy", "edit but unsandboxed?", "--json"]).fails_with(26);
    let err = run.stderr();
    assert!(err.contains("needs bwrap") && err.contains("refuses rather than run with less isolation"), "{run}");
    // The packages to install are named, not only the programs.
    assert!(err.contains("bubblewrap and socat packages"), "{run}");
    let show = assert_recorded_failed(&env, &run, &["bwrap", "refuses"]);
    assert_eq!(show["sandbox"], "write");
    assert!(host.agent_records().is_empty(), "the agent ran without its sandbox: {:?}", host.agent_records());
    no_tmux_server(&host);
}

/// Unmounts (and removes the mount point) on drop, so a failing test leaves no mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let out = Command::new("umount").arg(&self.0).output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).output();
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn files_named(dir: &Path, names: &[&str], found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if names.iter().any(|n| entry.file_name() == *n) {
            found.push(p.clone());
        }
        if entry.file_type().unwrap().is_dir() {
            files_named(&p, names, found);
        }
    }
}

#[test]
fn a_full_disk_is_exit_22_and_leaves_no_partial_prompt() {
    if !is_root() {
        eprintln!("skipped: mounting a tiny tmpfs needs root");
        return;
    }
    let host = FakeHost::start();
    let root = host.dir().join("tiny");
    std::fs::create_dir(&root).unwrap();
    let gid = Command::new("id").args(["-g", host.user()]).output().unwrap().stdout;
    let gid = String::from_utf8(gid).unwrap();
    // Owned by the remote user, so only the 64 KiB limit stands in the way.
    let opts = format!("size=64k,mode=0700,uid={},gid={}", host.uid(), gid.trim());
    let out = Command::new("mount").args(["-t", "tmpfs", "-o", &opts, "tmpfs"]).arg(&root).output().unwrap();
    if !out.status.success() {
        eprintln!("skipped: mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr));
        let _ = std::fs::remove_dir(&root);
        return;
    }
    let _mount = Mount(root.clone());
    let env = env_with_remote_root(&host, &root, "claude", "read");
    let prompt_file = env.home.join("big-prompt");
    let prompt: Vec<u8> = (0..1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    std::fs::write(&prompt_file, &prompt).unwrap();
    let run = env.run(&["oppy", "--prompt-file", prompt_file.to_str().unwrap(), "--json"]).fails_with(22);
    assert!(run.stderr().contains("disk full"), "{run}");
    assert_recorded_failed(&env, &run, &["prompt", "disk full"]);

    // The launch got as far as its task directory, and cleaned the partial prompt away.
    let tasks: Vec<_> = std::fs::read_dir(root.join("tasks")).unwrap().flatten().collect();
    assert_eq!(tasks.len(), 1, "expected one task directory in {}", root.display());
    let mut leftovers = Vec::new();
    files_named(&root, &["prompt", "prompt.tmp"], &mut leftovers);
    assert!(leftovers.is_empty(), "partial prompt left behind: {leftovers:?}");
    assert!(host.agent_records().is_empty(), "the agent ran on a damaged prompt");
    no_tmux_server(&host);
}

#[test]
fn an_unknown_brother_is_exit_3_and_lists_the_known_ones() {
    let env = Env::new();
    env.config_append("[hosts.h]\naddress = \"127.0.0.1\"\nport = 1\n");
    env.config_append(
        "[brothers.oppy]\nhost = \"h\"\nworkdir = \"/w\"\n[brothers.spirit]\nhost = \"h\"\nworkdir = \"/w\"\n",
    );
    let run = env.run(&["jerry", "hello", "--json"]).fails_with(3);
    let err = run.stderr();
    assert!(err.contains("unknown brother \"jerry\"") && err.contains("oppy, spirit"), "{run}");
    assert!(run.stdout().is_empty(), "{run}");
    assert_eq!(env.run(&["list", "--json"]).ok().json(), serde_json::json!([]));
}
