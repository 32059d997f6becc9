//! The agent's environment and where the agent is found: the launch script run locally by
//! bash with a scratch `$HOME` holding the start-up files people have (`~/.profile` adding
//! an npm prefix, `~/.bashrc` where nvm sits after the "not interactive: return" guard, an
//! alias), env files, version and sandbox probes, and an unexpected stop.

use super::tests::*;
use super::*;
use crate::hosts::inventory::AgentEnvironment;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Debian's skeleton `.profile` (sources `.bashrc` for bash) and a `.bashrc` that returns
/// early unless interactive, like Debian's, followed by `tail` (where nvm puts itself).
fn debian_home(home: &Path, profile_extra: &str, bashrc_tail: &str) {
    let profile = r#"if [ -n "$BASH_VERSION" ] && [ -f "$HOME/.bashrc" ]; then . "$HOME/.bashrc"; fi"#;
    std::fs::write(home.join(".profile"), [profile, profile_extra, ""].join("\n")).unwrap();
    let guard = "case $- in *i*) ;; *) return;; esac";
    std::fs::write(home.join(".bashrc"), [guard, bashrc_tail, ""].join("\n")).unwrap();
}

/// An agent program `name` in `dir` that records its argv and environment in the task dir.
fn recording_agent(dir: &Path, name: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(
        &path,
        // Written aside and renamed: the test reads each file as soon as it exists.
        "#!/bin/bash\nd=$DELEGATE_TASK_DIR\nprintf '%s\\n' \"$0\" \"$@\" >\"$d/argv.tmp\" && mv \"$d/argv.tmp\" \"$d/argv.txt\"\n\
         env >\"$d/env.tmp\" && mv \"$d/env.tmp\" \"$d/env.txt\"\ncat >/dev/null\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A plan running program `name` (looked up on PATH unless it holds a `/`).
fn program_plan(name: &str, args: &[&str]) -> AgentPlan {
    let mut p = fake_plan("");
    p.argv = std::iter::once(name).chain(args.iter().copied()).map(String::from).collect();
    p.files = vec![];
    p
}

fn run_env(s: &Scratch, v: &LaunchVars) -> std::process::Output {
    s.run_with(&render_sent(v).unwrap(), &[("SHELL", OsStr::new("/bin/bash"))])
}

fn error_of(out: &std::process::Output) -> (i32, String) {
    parse_output(&out.stdout, &out.stderr)
        .error
        .unwrap_or_else(|| panic!("no DELEGATE-ERROR; stderr: {}", String::from_utf8_lossy(&out.stderr)))
}

fn launched(out: &std::process::Output) -> serde_json::Value {
    let parsed = parse_output(&out.stdout, &out.stderr);
    assert!(parsed.marker.is_some(), "not launched: {}", String::from_utf8_lossy(&out.stderr));
    parsed.evidence.expect("evidence")
}

#[test]
fn an_agent_only_on_the_login_path_launches_with_the_login_environment() {
    let s = Scratch::new("env-login");
    recording_agent(&s.dir.join(".npm-global/bin"), "myagent");
    debian_home(&s.dir, "PATH=\"$HOME/.npm-global/bin:$PATH\"\nexport MY_API_KEY=from-profile", "");
    let plan = program_plan("myagent", &["-C", "{workdir}"]);
    let mut v = vars(&s, "k-login", "dlg-k-login", &plan, b"hi");
    v.environment = AgentEnvironment::Login;
    v.workdir = "~/work";
    let evidence = launched(&run_env(&s, &v));
    let dir = s.task_dir("k-login");
    assert_eq!(evidence["environment"], "login", "{evidence}");
    assert_eq!(evidence["agent_path"], s.dir.join(".npm-global/bin/myagent").to_str().unwrap());
    let argv = wait_secs(&dir.join("argv.txt"), 10);
    // `{workdir}` reached the agent with `~` expanded on the brother.
    assert!(argv.contains(&format!("-C\n{}\n", s.work())), "{argv}");
    let env = wait_secs(&dir.join("env.txt"), 10);
    assert!(env.contains("MY_API_KEY=from-profile"), "{env}");
    assert!(env.contains(&format!("DELEGATE_TASK_DIR={}", dir.display())), "{env}");
    // The captured environment may hold credentials: emptied once the runner read it.
    assert_eq!(std::fs::read(dir.join("agent.env")).unwrap(), b"", "agent.env still holds the environment");
}

#[test]
fn an_agent_set_up_in_bashrc_is_found_by_the_interactive_shell() {
    let s = Scratch::new("env-nvm");
    recording_agent(&s.dir.join(".nvm/versions/node/v22/bin"), "myagent");
    debian_home(&s.dir, "", "export NVM_DIR=\"$HOME/.nvm\"\nPATH=\"$NVM_DIR/versions/node/v22/bin:$PATH\"");
    let plan = program_plan("myagent", &[]);
    let mut v = vars(&s, "k-nvm", "dlg-k-nvm", &plan, b"hi");
    v.environment = AgentEnvironment::Login;
    let evidence = launched(&run_env(&s, &v));
    assert_eq!(evidence["environment"], "interactive", "{evidence}");
    let env = wait_secs(&s.task_dir("k-nvm").join("env.txt"), 10);
    assert!(env.contains("NVM_DIR="), "{env}");

    // `plain` does not look in start-up files: refused, naming the fix.
    let mut v = vars(&s, "k-nvm2", "dlg-k-nvm2", &plan, b"hi");
    v.environment = AgentEnvironment::Plain;
    let (code, message) = error_of(&run_env(&s, &v));
    assert_eq!(code, code::AGENT_MISSING);
    assert!(message.contains("'myagent' not found") && message.contains("agent_path"), "{message}");
}

#[test]
fn an_alias_is_refused_with_the_fix() {
    let s = Scratch::new("env-alias");
    debian_home(&s.dir, "", "alias myagent=\"$HOME/opt/myagent\"");
    let plan = program_plan("myagent", &[]);
    let mut v = vars(&s, "k-alias", "dlg-k-alias", &plan, b"hi");
    v.environment = AgentEnvironment::Login;
    let (code, message) = error_of(&run_env(&s, &v));
    assert_eq!(code, code::AGENT_MISSING);
    assert!(message.contains("alias") && message.contains("agent_path"), "{message}");
}

#[test]
fn an_absolute_agent_path_wins_over_path_lookup() {
    let s = Scratch::new("env-abs");
    recording_agent(&s.dir.join("old"), "myagent");
    recording_agent(&s.dir.join(".local/bin"), "myagent");
    debian_home(&s.dir, &format!("PATH=\"{}:$PATH\"", s.dir.join("old").display()), "");
    let plan = program_plan("~/.local/bin/myagent", &[]);
    let mut v = vars(&s, "k-abs", "dlg-k-abs", &plan, b"hi");
    v.environment = AgentEnvironment::Login;
    let evidence = launched(&run_env(&s, &v));
    assert_eq!(evidence["agent_path"], s.dir.join(".local/bin/myagent").to_str().unwrap());

    let plan = program_plan("/nowhere/myagent", &[]);
    let v = vars(&s, "k-abs2", "dlg-k-abs2", &plan, b"hi");
    let (code, message) = error_of(&run_env(&s, &v));
    assert_eq!(code, code::AGENT_MISSING);
    assert!(message.contains("/nowhere/myagent is not an executable file"), "{message}");
}

#[test]
fn env_files_are_read_literally_and_bad_ones_refused() {
    let s = Scratch::new("env-file");
    recording_agent(&s.dir.join("bin"), "myagent");
    let file = s.dir.join("agent.env");
    std::fs::write(
        &file,
        "# credentials\nexport TOKEN_A=\"quoted value\"\nTOKEN_B='single $HOME'\nTOKEN_C=plain=with=equals\n\n",
    )
    .unwrap();
    let plan = program_plan(s.dir.join("bin/myagent").to_str().unwrap(), &[]);
    let files = vec!["~/agent.env".to_string()];
    let mut v = vars(&s, "k-envf", "dlg-k-envf", &plan, b"hi");
    v.env_files = &files;
    let evidence = launched(&run_env(&s, &v));
    // Names only in the evidence; values never leave the brother.
    assert_eq!(evidence["env_file_vars"], "TOKEN_A,TOKEN_B,TOKEN_C", "{evidence}");
    assert!(!evidence.to_string().contains("quoted value"));
    let env = wait_secs(&s.task_dir("k-envf").join("env.txt"), 10);
    for line in ["TOKEN_A=quoted value", "TOKEN_B=single $HOME", "TOKEN_C=plain=with=equals"] {
        assert!(env.lines().any(|l| l == line), "{line} missing in {env}");
    }

    std::fs::write(&file, "OK=1\nthis is not an assignment\n").unwrap();
    let v = LaunchVars { env_files: &files, ..vars(&s, "k-envf2", "dlg-k-envf2", &plan, b"hi") };
    let (code, message) = error_of(&run_env(&s, &v));
    assert_eq!(code, code::ENVIRONMENT);
    assert!(message.contains("line 2 is not NAME=value"), "{message}");

    let missing = vec!["/nowhere/env".to_string()];
    let v = LaunchVars { env_files: &missing, ..vars(&s, "k-envf3", "dlg-k-envf3", &plan, b"hi") };
    let (code, message) = error_of(&run_env(&s, &v));
    assert_eq!(code, code::ENVIRONMENT);
    assert!(message.contains("/nowhere/env does not exist"), "{message}");
}

#[test]
fn an_agent_that_cannot_run_is_refused_with_its_own_words() {
    let s = Scratch::new("env-127");
    // A node CLI whose node is not on PATH: `/usr/bin/env: 'node-nowhere': No such file...`.
    let bin = s.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let agent = bin.join("codexish");
    std::fs::write(&agent, "#!/usr/bin/env node-nowhere\n").unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut plan = program_plan(agent.to_str().unwrap(), &[]);
    plan.version_argv = vec![agent.to_str().unwrap().into(), "--version".into()];
    let v = vars(&s, "k-127", "dlg-k-127", &plan, b"hi");
    let (code, message) = error_of(&run_env(&s, &v));
    assert_eq!(code, code::AGENT_MISSING);
    assert!(message.contains("cannot run on this host (exit 127") && message.contains("node-nowhere"), "{message}");
    // Nothing is left that could pass for a launch.
    assert!(!s.task_dir("k-127").exists());
}

#[test]
fn sandbox_tools_missing_are_named_together_and_a_failing_probe_refuses() {
    let s = Scratch::new("env-sbx");
    let mut plan = program_plan("bash", &["-c", "true"]);
    plan.requires = vec!["no-such-bwrap".into(), "no-such-socat".into()];
    plan.requires_hint = "install the bubblewrap and socat packages".into();
    let (code, message) = error_of(&run_env(&s, &vars(&s, "k-sbx", "dlg-k-sbx", &plan, b"hi")));
    assert_eq!(code, code::SANDBOX_REFUSED);
    assert!(message.contains("needs no-such-bwrap no-such-socat") && message.contains("bubblewrap and socat packages"));

    // Installed but unable to work, as bwrap is without user namespaces.
    plan.requires = vec![];
    plan.sandbox_probe =
        vec!["bash".into(), "-c".into(), "echo 'bwrap: setting up uid map: Permission denied' >&2; exit 1".into()];
    let (code, message) = error_of(&run_env(&s, &vars(&s, "k-sbx2", "dlg-k-sbx2", &plan, b"hi")));
    assert_eq!(code, code::SANDBOX_REFUSED);
    assert!(message.contains("cannot start on this host") && message.contains("setting up uid map"), "{message}");
}

#[test]
fn an_unexpected_stop_before_tmux_is_a_certain_failure() {
    // A brother whose sshd gives no HOME makes the script stop on `set -u` (home_path reads
    // it), which it never expects.
    let s = Scratch::new("env-30");
    let plan = program_plan("bash", &["-c", "true"]);
    let script =
        [b"unset HOME\n".as_slice(), &render_sent(&vars(&s, "k-30", "dlg-k-30", &plan, b"hi")).unwrap()].concat();
    let out = s.run_with(&script, &[]);
    let (code, message) = error_of(&out);
    assert_eq!(code, code::LAUNCH_SCRIPT_ERROR, "{message}");
    assert!(message.contains("before starting the agent"), "{message}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOME"), "bash's own words: {out:?}");
    assert!(!s.task_dir("k-30").exists());
}

#[test]
fn the_login_path_wins_over_an_older_copy_on_sshds_path() {
    // An old system-wide install on the PATH sshd gives commands, the user's newer one in
    // ~/.local/bin (Debian's .profile puts it first): the user's is what they run, and ours.
    let s = Scratch::new("env-shadow");
    recording_agent(&s.dir.join("system-bin"), "myagent");
    recording_agent(&s.dir.join(".local/bin"), "myagent");
    debian_home(&s.dir, "PATH=\"$HOME/.local/bin:$PATH\"", "");
    let path = format!("{}:{}", s.dir.join("system-bin").display(), std::env::var("PATH").unwrap());
    let plan = program_plan("myagent", &[]);
    let mut v = vars(&s, "k-shadow", "dlg-k-shadow", &plan, b"hi");
    v.environment = AgentEnvironment::Login;
    let out = s.run_with(&render_sent(&v).unwrap(), &[("SHELL", OsStr::new("/bin/bash")), ("PATH", OsStr::new(&path))]);
    let evidence = launched(&out);
    assert_eq!(evidence["agent_path"], s.dir.join(".local/bin/myagent").to_str().unwrap(), "{evidence}");
}

/// A resident shell keeps a captured environment as an assignment it evaluates later
/// (agent-env.sh: keep_env, env_kept): every entry comes back exactly, whatever it holds
/// (spaces, quotes, `;`, `$(...)`, newlines), and nothing in it runs.
#[test]
fn a_kept_environment_comes_back_exactly_and_runs_nothing() {
    let s = Scratch::new("env-keep");
    let mark = s.dir.join("ran");
    let entries = [
        "PLAIN=1".to_string(),
        "SPACES=a b  c".into(),
        "QUOTES=it's \"x\"".into(),
        format!("CODE=$(touch {}); `touch {}`", mark.display(), mark.display()),
        "SEMI=a;b&c|d".into(),
        "LINES=one\ntwo".into(),
        "EMPTY=".into(),
    ];
    let stamp = s.dir.join(".env-stamp-l");
    std::fs::write(&stamp, "").unwrap();
    std::fs::write(s.dir.join("agent-env.sh"), AGENT_ENV_SH).unwrap();
    // keep() as launch.sh has it, but writing the NUL-ended records to a file; a second
    // shell evaluates them as the resident shell does, and env_kept gives the entries back.
    let keeper = "source ./agent-env.sh\nset -euo pipefail\n__dlg_resident=1\n\
                  keep() { printf '%s\\0' \"$1\" >>records; }\nagent_env=(\"$@\")\nkeep_env l\n";
    let reader = "source ./agent-env.sh\nset -euo pipefail\n\
                  while IFS= read -r -d '' r; do eval \"$r\"; done <records\n\
                  agent_env=()\nenv_kept l \"$1\"\nprintf '%s\\0' \"${agent_env[@]}\"\n";
    let bash = |script: &str, args: &[&OsStr]| {
        std::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg("test")
            .args(args)
            .current_dir(&s.dir)
            .env("HOME", &s.dir)
            .output()
            .unwrap()
    };
    let kept = bash(keeper, &entries.iter().map(OsStr::new).collect::<Vec<_>>());
    assert!(kept.status.success(), "{kept:?}");
    let out = bash(reader, &[stamp.as_os_str()]);
    assert!(out.status.success(), "{out:?}");
    let back: Vec<String> =
        out.stdout.split(|b| *b == 0).filter(|e| !e.is_empty()).map(|e| String::from_utf8_lossy(e).into()).collect();
    let empty_kept = back.iter().any(|e| e == "EMPTY=");
    assert!(empty_kept, "{back:?}");
    assert_eq!(back, entries, "the kept environment");
    assert!(!mark.exists(), "a kept value ran as code");
}
