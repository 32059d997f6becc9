//! Worker profiles: `[profiles.NAME]` settings under the command's flags and over the
//! brother's, chosen with `--profile` or a brother's `default_profile`; each setting's value
//! and source kept with the task and shown by `show`; settings an agent cannot take refused
//! before anything is recorded or sent.

use serde_json::Value;

use delegate_testkit::FakeHost;

use crate::support::{Env, launch, wait_done};

fn show(env: &Env, id: i64) -> Value {
    env.run(&["show", &id.to_string(), "--json"]).ok().json()
}

/// `(value, from)` of one setting in a task's record.
fn setting(task: &Value, name: &str) -> (Value, String) {
    let s = &task["settings"][name];
    assert!(!s.is_null(), "no setting {name} in {}", task["settings"]);
    (s["value"].clone(), s["from"].as_str().unwrap().to_string())
}

#[test]
fn a_profile_sets_what_the_flags_leave_and_show_says_where_each_setting_came_from() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "write");
    // The credential file lives on the brother; the inventory names it only.
    std::fs::write(host.workdir().join("team.env"), "DLG_TEAM_KEY=s3cret-value-42\n").unwrap();
    env.config_append(&format!(
        "[profiles.quick]\nmax_turns = 3\nsandbox = \"read\"\ntimeout = \"20m\"\ncredential_file = \"{}\"\n",
        host.workdir().join("team.env").display()
    ));

    let id = launch(&env, &["oppy", "check the lint", "--profile", "quick", "--sandbox", "full", "--json"]);
    let task = &show(&env, id);
    assert_eq!((task["max_turns"].as_i64(), task["sandbox"].as_str()), (Some(3), Some("full")), "{task}");
    assert_eq!(task["timeout_secs"], 1200);
    assert_eq!(setting(task, "profile"), ("quick".into(), "flag".into()));
    assert_eq!(setting(task, "max_turns"), (3.into(), "profile quick".into()));
    assert_eq!(setting(task, "timeout_secs"), (1200.into(), "profile quick".into()));
    assert_eq!(setting(task, "sandbox"), ("full".into(), "flag".into()));
    assert_eq!(setting(task, "agent"), ("self-test".into(), "brother oppy".into()));
    let run = &task["runs"][0]["evidence"];
    assert_eq!(run["settings"], task["settings"], "the launch evidence records the same: {run}");
    // The agent ran with the profile's turn limit, and got the credential file's variable.
    let argv: Vec<&str> = run["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(argv.windows(2).any(|w| w == ["--max-turns", "3"]), "{argv:?}");
    assert!(run["remote"]["env_file_vars"].as_str().unwrap().contains("DLG_TEAM_KEY"), "{run}");
    wait_done(&env, id);

    let text = env.run(&["show", &id.to_string()]).ok().stdout();
    assert!(
        text.contains("max_turns 3 (profile quick)") && text.contains("sandbox full (flag)"),
        "show names each setting's source:\n{text}"
    );
    // The secret's value never reaches the lead: not in show, not in the mailbox.
    let all = env.run(&["show", &id.to_string(), "--json", "--all"]).ok().stdout();
    assert!(!all.contains("s3cret-value-42") && !text.contains("s3cret-value-42"));
    let db = std::fs::read(env.home.join("data/mailbox.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains("s3cret-value-42"));
}

#[test]
fn a_brothers_default_profile_applies_without_a_flag_and_an_unknown_profile_records_nothing() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    env.config_append(&format!(
        "[brothers.oppy]\nhost = \"h\"\nworkdir = \"{}\"\nagent = \"self-test\"\ndefault_profile = \"careful\"\n\
         [profiles.careful]\nsandbox = \"read\"\nmax_turns = 4\n",
        host.workdir().display()
    ));
    let id = launch(&env, &["oppy", "look around", "--json"]);
    let task = &show(&env, id);
    assert_eq!(setting(task, "profile"), ("careful".into(), "brother oppy (default_profile)".into()));
    assert_eq!(setting(task, "sandbox"), ("read".into(), "profile careful".into()));
    assert_eq!(task["max_turns"], 4);
    wait_done(&env, id);

    let refused = env.run(&["oppy", "look around", "--profile", "fast"]).fails_with(3);
    let err = refused.stderr();
    assert!(err.contains("\"fast\"") && err.contains("careful") && err.contains("[profiles.fast]"), "{refused}");
    assert_eq!(env.run(&["list", "--json"]).ok().json().as_array().unwrap().len(), 1, "nothing recorded");
}

#[test]
fn settings_an_agent_cannot_take_are_refused_before_anything_is_recorded() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "write");
    let cases: [(&[&str], i32, &str); 7] = [
        (&["--reasoning-effort", "high"], 33, "self-test cannot take --reasoning-effort"),
        (&["--agent", "codex", "--max-budget-usd", "2"], 33, "codex cannot take --max-budget-usd"),
        (&["--agent", "codex", "--reasoning-effort", "max"], 33, "use --reasoning-effort xhigh"),
        (
            &["--agent", "claude", "--args-json", r#"["--permission-mode","bypassPermissions"]"#],
            33,
            "--permission-mode is owned",
        ),
        (&["--agent", "claude", "--max-budget-usd", "nan"], 33, "positive number of dollars"),
        (&["--args-json", r#"{"not":"a list"}"#], 2, "JSON array of strings"),
        (&["--reasoning-effort", "extreme"], 2, "low, medium, high, xhigh or max"),
    ];
    for (flags, code, needle) in cases {
        let mut args = vec!["oppy", "do it"];
        args.extend_from_slice(flags);
        let r = env.run(&args).fails_with(code);
        assert!(r.stderr().contains(needle), "{flags:?}: wanted {needle:?}\n{r}");
    }
    assert_eq!(env.run(&["list", "--json"]).ok().json().as_array().unwrap().len(), 0, "nothing recorded");
}

#[test]
fn a_queued_task_starts_later_with_the_settings_it_was_given() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    env.add_brother("oppy", "h", &host, "self-test", "read");
    env.config_append("max_concurrent = 1\n");
    std::fs::write(host.workdir().join("q.env"), "DLG_QUEUED_KEY=x\n").unwrap();
    env.config_append(&format!(
        "[profiles.later]\nmax_turns = 9\ncredential_file = \"{}\"\n",
        host.workdir().join("q.env").display()
    ));
    let busy = launch(&env, &["oppy", "dawdle\n@self-test sleep 20", "--max-turns", "100", "--json"]);
    let queued = env.run(&["oppy", "next", "--profile", "later", "--json"]).ok().json();
    assert_eq!(queued["status"], "queued", "{queued}");
    let id = queued["id"].as_i64().unwrap();
    env.run(&["cancel", &busy.to_string()]).ok();
    let done = wait_done(&env, id);
    assert_eq!(done["status"], "completed", "{done}");
    let task = &show(&env, id);
    let run = &task["runs"][0]["evidence"];
    assert_eq!(setting(task, "max_turns"), (9.into(), "profile later".into()));
    assert_eq!(run["settings"], task["settings"], "{run}");
    let argv: Vec<&str> = run["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(argv.windows(2).any(|w| w == ["--max-turns", "9"]), "{argv:?}");
    assert!(run["remote"]["env_file_vars"].as_str().unwrap().contains("DLG_QUEUED_KEY"), "{run}");
}

#[test]
fn a_backlog_task_started_later_runs_with_its_brothers_default_profile() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    std::fs::write(host.workdir().join("team.env"), "DLG_TEAM_KEY=s3cret-value-42\n").unwrap();
    env.config_append(&format!(
        "[brothers.oppy]\nhost = \"h\"\nworkdir = \"{}\"\nagent = \"self-test\"\ndefault_profile = \"careful\"\n\
         [profiles.careful]\nsandbox = \"read\"\nmax_turns = 4\ncredential_file = \"{}\"\n",
        host.workdir().display(),
        host.workdir().join("team.env").display()
    ));
    let new = env.run(&["new", "look around", "--assign", "oppy", "--json"]).ok().json();
    let id = new["id"].as_i64().unwrap();
    env.run(&["start", &id.to_string(), "--json"]).ok();
    let task = &show(&env, id);
    assert_eq!(setting(task, "profile"), ("careful".into(), "brother oppy (default_profile)".into()));
    assert_eq!(setting(task, "max_turns"), (4.into(), "profile careful".into()));
    // The profile's credential file reached the agent, as for a task launched at once.
    let run = &task["runs"][0]["evidence"];
    assert!(run["remote"]["env_file_vars"].as_str().unwrap_or("").contains("DLG_TEAM_KEY"), "{run}");
    wait_done(&env, id);
}

#[test]
fn a_profiles_credential_env_must_be_set_on_the_brother_and_only_its_name_is_kept() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "write");
    env.config_append("[profiles.team]\ncredential_env = \"DLG_TEAM_TOKEN\"\n");
    // Unset in the agent's environment on the brother: refused before anything starts.
    let refused = env.run(&["oppy", "use the key", "--profile", "team"]).fails_with(31);
    assert!(
        refused.stderr().contains("credential_env DLG_TEAM_TOKEN is not set in the agent's environment"),
        "{refused}"
    );
    let failed = env.run(&["list", "--json"]).ok().json();
    assert_eq!(failed[0]["status"], "failed", "the refusal is recorded as the brother said: {failed}");

    // Set (here through the profile's credential file): the run starts, and only the name is kept.
    let key_file = host.workdir().join("token.env");
    std::fs::write(&key_file, "DLG_TEAM_TOKEN=tok-s3cret-55\n").unwrap();
    env.config_replace(
        "credential_env = \"DLG_TEAM_TOKEN\"\n",
        &format!("credential_env = \"DLG_TEAM_TOKEN\"\ncredential_file = \"{}\"\n", key_file.display()),
    );
    let id = launch(&env, &["oppy", "use the key", "--profile", "team", "--json"]);
    let task = &show(&env, id);
    assert_eq!(setting(task, "credential_env"), ("DLG_TEAM_TOKEN".into(), "profile team".into()));
    assert_eq!(task["runs"][0]["evidence"]["agent_plan"]["credential_env"], "DLG_TEAM_TOKEN", "{task}");
    assert_eq!(wait_done(&env, id)["status"], "completed");
    let all = env.run(&["show", &id.to_string(), "--json", "--all"]).ok().stdout();
    assert!(!all.contains("tok-s3cret-55"), "{all}");
    let db = std::fs::read(env.home.join("data/mailbox.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains("tok-s3cret-55"));

    // A secret pasted where the name goes is refused by the inventory, without repeating it.
    env.config_replace("credential_env = \"DLG_TEAM_TOKEN\"\n", "credential_env = \"AKIAIOSFODNN7EXAMPLE\"\n");
    let bad = env.run(&["oppy", "x", "--profile", "team"]).fails_with(3);
    assert!(bad.stderr().contains("profiles.team.credential_env looks like a secret"), "{bad}");
    assert!(!bad.stderr().contains("AKIAIOSFODNN7EXAMPLE"), "{bad}");
}
