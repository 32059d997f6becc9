//! Successful launches, one per agent kind, and what they leave behind.

use std::time::Duration;

use delegate_testkit::{FakeHost, sha256_hex};

use crate::support::{Env, remote_dir, wait_for_file};

#[test]
fn self_test_launch_travels_over_ssh_into_tmux_and_is_recorded() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "write");
    let run = env.run(&["oppy", "review the training config", "--json"]).ok();
    let task = run.json();
    assert_eq!(task["status"], "launched", "{run}");
    assert_eq!(task["brother"], "oppy");
    assert_eq!(task["host"], "h");
    assert_eq!(task["subject"], "review the training config");
    assert_eq!(task["agent"], "self-test");
    assert_eq!(task["sandbox"], "write");
    assert_eq!(task["max_turns"], 7);
    for key in ["id", "session", "workdir", "created_at", "updated_at", "runs"] {
        assert!(!task[key].is_null(), "{key} missing in {task}");
    }
    let session = task["session"].as_str().unwrap();
    assert!(
        session.starts_with("dlg-")
            && session.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    );

    let ev = &task["runs"][0];
    assert_eq!(ev["status"], "launched");
    assert!(ev["marker"].as_str().unwrap().contains(ev["nonce"].as_str().unwrap()), "{ev}");
    assert!(ev["pane_pid"].as_i64().unwrap() > 1);
    assert!(ev["evidence"]["remote"]["tmux_version"].as_str().unwrap().starts_with("tmux "));
    assert!(ev["evidence"]["timings"]["total_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(ev["evidence"]["remote"]["agent_version"], "delegate-self-test 1");
    let argv: Vec<&str> = ev["evidence"]["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(argv[1].ends_with("/self-test-agent") && argv.iter().all(|a| !a.contains('{')), "{argv:?}");

    // The session is really there, on our socket, found by its exact name: or it already
    // ran to completion, which the runner's exit record proves.
    let id = task["id"].as_i64().unwrap();
    let dir = remote_dir(&env, id);
    let exit = String::from_utf8(wait_for_file(&dir.join("exit"))).unwrap();
    assert!(exit.starts_with("0 "), "{exit}");
    let stream = std::fs::read_to_string(dir.join("stream.jsonl")).unwrap();
    let wrapped = crate::support::agent_reads(&env, id, b"review the training config");
    assert!(stream.contains(&sha256_hex(&wrapped)), "{stream}");
    // The agent was told its task number and how to report.
    let given = std::fs::read_to_string(dir.join("prompt")).unwrap();
    assert!(
        given.starts_with(&format!("[delegate] This is task {id} ")) && given.contains("/report' receipt"),
        "{given}"
    );

    // list and show agree with the launch.
    let list = env.run(&["list", "--json"]).ok().json();
    assert_eq!(list[0]["id"], id);
    let text = env.run(&["show", &id.to_string()]).ok().stdout();
    assert!(text.contains("launched") && text.contains(session) && text.contains("DELEGATE-LAUNCHED"), "{text}");
}

#[test]
fn a_running_agent_is_visible_in_tmux_by_exact_name() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let task = env.run(&["oppy", "work a while\n@self-test sleep 30", "--json"]).ok().json();
    let session = task["session"].as_str().unwrap();
    let has = host.tmux(&["has-session", "-t", &format!("={session}")]);
    assert!(has.status.success(), "session {session} not found: {}", host.diagnostics());
    // A prefix of the name is not the session: exact targets only.
    let prefix = &session[..session.len() - 1];
    assert!(!host.tmux(&["has-session", "-t", &format!("={prefix}")]).status.success());
}

#[test]
fn claude_gets_its_documented_argv_and_the_prompt_on_stdin_only() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "claude", "read");
    let prompt = "summarize the repo; canary-7f3a9c";
    let task = env.run(&["oppy", prompt, "--model", "sonnet", "--json"]).ok().json();
    let rec = &host.wait_for_agent_records(1, Duration::from_secs(10))[0];
    assert_eq!(rec.name, "claude");
    let args = rec.args();
    let joined = args.join(" ");
    assert!(joined.starts_with("-p --output-format stream-json --verbose --session-id "), "{joined}");
    assert_eq!(rec.arg_value("--max-turns").as_deref(), Some("7"));
    assert_eq!(rec.arg_value("--permission-mode").as_deref(), Some("dontAsk"));
    assert_eq!(rec.arg_value("--tools").as_deref(), Some("Read,Grep,Glob"));
    assert_eq!(rec.arg_value("--model").as_deref(), Some("sonnet"));
    let session_id = rec.arg_value("--session-id").unwrap();
    assert_eq!(task["runs"][0]["evidence"]["agent_plan"]["session_id"], session_id.as_str());
    assert!(!args.iter().any(|a| a.contains("canary-7f3a9c")), "prompt leaked into argv: {joined}");
    let id = task["id"].as_i64().unwrap();
    assert_eq!(rec.stdin_sha256, sha256_hex(crate::support::agent_reads(&env, id, prompt.as_bytes())));
    assert!(!rec.stdin_is_tty);
    assert_eq!(rec.cwd, host.workdir());
    assert!(rec.env.contains_key("DELEGATE_TASK_DIR"), "{:?}", rec.env);
    let remote = &task["runs"][0]["evidence"]["remote"];
    assert_eq!(remote["agent_version"], "2.1.329 (Claude Code)", "{remote}");
    assert!(remote["argv"].as_array().unwrap().iter().all(|a| !a.as_str().unwrap().contains("canary")));
    // The evidence holds the argv as run: resolved program, real paths, no placeholders.
    let argv = task["runs"][0]["evidence"]["argv"].as_array().unwrap();
    assert!(argv[0].as_str().unwrap().ends_with("/bin/claude"), "{argv:?}");
    assert_eq!(argv[1..].iter().map(|a| a.as_str().unwrap()).collect::<Vec<_>>(), rec.args());
}

#[test]
fn claude_write_mode_passes_its_sandbox_settings() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "claude", "write");
    let task = env.run(&["oppy", "edit things", "--json"]).ok().json();
    let rec = &host.wait_for_agent_records(1, Duration::from_secs(10))[0];
    assert_eq!(rec.arg_value("--permission-mode").as_deref(), Some("acceptEdits"));
    let settings = rec.arg_value("--settings").unwrap();
    let text = std::fs::read_to_string(&settings).unwrap();
    assert!(text.contains("\"failIfUnavailable\":true"), "{text}");
    assert!(settings.starts_with(task["runs"][0]["remote_dir"].as_str().unwrap()));
}

#[test]
fn codex_runs_exec_with_json_and_its_sandbox_and_reads_the_prompt_from_stdin() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "codex", "write");
    let task = env.run(&["oppy", "fix the flaky test", "--json"]).ok().json();
    let rec = &host.wait_for_agent_records(1, Duration::from_secs(10))[0];
    assert_eq!(rec.name, "codex");
    let args = rec.args();
    assert_eq!(&args[..3], ["exec", "--json", "--sandbox"]);
    assert_eq!(args[3], "workspace-write");
    assert!(rec.has_arg("--skip-git-repo-check"));
    assert_eq!(rec.arg_value("-C").unwrap(), host.workdir().to_string_lossy());
    assert_eq!(args.last().unwrap(), "-");
    assert!(!rec.has_arg("--max-turns"));
    let id = task["id"].as_i64().unwrap();
    assert_eq!(rec.stdin_sha256, sha256_hex(crate::support::agent_reads(&env, id, b"fix the flaky test")));
    assert!(!rec.stdin_is_tty);
    assert_eq!(task["runs"][0]["evidence"]["agent_plan"]["turn_limit"], "delegate");
}

#[test]
fn a_custom_agent_reads_its_prompt_file() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    // The fake `codex` stands in for any program; the template names the prompt file.
    env.config_append(
        "[agents.mine]\ncommand = [\"codex\", \"--message-file\", \"{prompt_file}\", \"--turns={max_turns}\"]\n",
    );
    env.add_brother("oppy", "h", &host, "mine", "full");
    let task = env.run(&["oppy", "custom work", "--json"]).ok().json();
    let rec = &host.wait_for_agent_records(1, Duration::from_secs(10))[0];
    let file = rec.arg_value("--message-file").unwrap();
    let id = task["id"].as_i64().unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), crate::support::agent_reads(&env, id, b"custom work"));
    assert!(file.starts_with(task["runs"][0]["remote_dir"].as_str().unwrap()));
    assert!(rec.has_arg("--turns=7"));
    assert_eq!(rec.stdin_bytes, 0, "stdin must be /dev/null when the prompt goes by file");
    assert!(!rec.stdin_is_tty);

    // The same agent at a level it does not declare is refused before anything is sent.
    let refused = env.run(&["oppy", "custom work", "--sandbox", "write"]).fails_with(26);
    assert!(refused.stderr().contains("mine") && refused.stderr().contains("--sandbox full"), "{refused}");
}

#[test]
fn the_agent_version_is_asked_once_per_binary_and_again_after_it_changes() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    let asked = host.workdir().join("version-asked");
    crate::support::install_agent(
        &host,
        "versioned",
        &format!(
            "#!/bin/bash\nif [ \"$1\" = --version ]; then echo x >>{}; echo 'versioned 1.2.3'; fi\nexit 0\n",
            asked.display()
        ),
    );
    env.config_append("[agents.mine]\ncommand = [\"versioned\"]\nversion_probe = true\n");
    env.add_brother("oppy", "h", &host, "mine", "full");
    let version = |t: &serde_json::Value| t["runs"][0]["evidence"]["remote"]["agent_version"].clone();
    let times_asked = || std::fs::read_to_string(&asked).unwrap_or_default().lines().count();

    let first = env.run(&["oppy", "one", "--json"]).ok().json();
    let second = env.run(&["oppy", "two", "--json"]).ok().json();
    assert_eq!(version(&first), "versioned 1.2.3", "{first}");
    assert_eq!(version(&second), "versioned 1.2.3", "{second}");
    assert_eq!(times_asked(), 1, "the second launch must reuse the answer");

    // An upgraded binary (new mtime) is asked again.
    let bin = host.dir().join("bin").join("versioned");
    let status = std::process::Command::new("touch").args(["-d", "2001-01-01"]).arg(&bin).status().unwrap();
    assert!(status.success());
    let third = env.run(&["oppy", "three", "--json"]).ok().json();
    assert_eq!(version(&third), "versioned 1.2.3", "{third}");
    assert_eq!(times_asked(), 2, "a changed binary must be asked again");
}

/// The first launch on a host sends delegate's helper files (the brother keeps them in
/// `<remote_root>/helpers/<sha256>`); later launches name them by hash only; a helper
/// another user replaced there is never run: the brother asks for it and gets it again.
#[test]
fn helper_files_travel_once_per_host_and_again_when_replaced_there() {
    use std::os::unix::fs::MetadataExt;
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let evidence = |id: i64| env.run(&["show", &id.to_string(), "--json"]).ok().json()["runs"][0]["evidence"].clone();

    let first = crate::support::launch(&env, &["oppy", "first", "--json"]);
    assert_eq!(evidence(first)["helpers_sent"], true, "{}", evidence(first));
    let second = crate::support::launch(&env, &["oppy", "second", "--json"]);
    let warm = evidence(second);
    assert_eq!(warm["helpers_sent"], false, "{warm}");
    // What a warm launch sends: the launch body (about 40 KB) and the variables (the
    // preamble, launch.json's half, the prompt: a few KB), none of the helpers (over 45 KB
    // in base64 more).
    assert!(warm["script_bytes"].as_u64().unwrap() < 60_000, "{warm}");
    assert_eq!(crate::support::wait_done(&env, second)["status"], "completed");

    // The runner's body in the store, swapped for another user's file (root's: the tests
    // run as root) that would leave a mark if it ran.
    let store = host.remote_root().join("helpers");
    let body = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| std::fs::read_to_string(p).unwrap().contains("Body of the per-task runner"))
        .expect("the runner's body is in the store");
    let mark = host.dir().join("foreign-runner-ran");
    std::fs::remove_file(&body).unwrap();
    std::fs::write(&body, format!("main() {{ touch {}; }}\nmain\n", mark.display())).unwrap();
    assert_eq!(std::fs::metadata(&body).unwrap().uid(), 0);

    // Without the warm daemon: a resident shell keeps the copies it checked and would not
    // read the store again (tests/e2e/resident.rs), where a fresh exec must.
    let third = crate::support::launch(&env, &["--no-warm", "oppy", "third", "--json"]);
    assert_eq!(evidence(third)["helpers_sent"], true, "{}", evidence(third));
    assert_eq!(crate::support::wait_done(&env, third)["status"], "completed");
    assert!(!mark.exists(), "the replaced runner body ran");
    let meta = std::fs::metadata(&body).unwrap();
    assert_eq!(meta.uid(), host.uid(), "the store's copy is the brother user's again");
    assert_eq!(sha256_hex(std::fs::read(&body).unwrap()), body.file_name().unwrap().to_str().unwrap());
}
