//! Notifications from the built binary: a task that ends on a real brother (sshd, tmux, the
//! self-test agent) is announced once to each `[notify]` target by the command that syncs,
//! a webhook received by a real HTTP server in the test and a command whose argv is
//! recorded; the webhook's token never reaches the mailbox; `--notify`, `notify test` and
//! a token written into the URL.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use delegate_testkit::FakeHost;
use delegate_testkit::webhook::WebhookServer;

use crate::support::{Env, launch};

const TOKEN: &str = "e2e-tok-51c0ffee-not-for-the-mailbox";

/// A program that writes each argument it got, NUL-terminated, to a file beside it.
fn argv_recorder(dir: &Path) -> (PathBuf, PathBuf) {
    let script = dir.join("record-argv");
    let out = dir.join("argv.bin");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done >> '{}'\n", out.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, out)
}

fn recorded_args(out: &Path) -> Vec<String> {
    let bytes = std::fs::read(out).unwrap_or_default();
    bytes.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

fn wait_with_token(env: &Env, id: i64) -> serde_json::Value {
    let run = env.run_with_env(
        &["wait", &id.to_string(), "--timeout", "60s", "--interval-ms", "200", "--json"],
        &[("DLG_HOOK_TOKEN", TOKEN)],
    );
    assert!(matches!(run.code(), 0 | 7), "wait failed:\n{run}");
    run.json()["tasks"][0].clone()
}

#[test]
fn a_task_ending_on_a_real_brother_notifies_each_target_once_and_the_token_stays_out_of_the_mailbox() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let server = WebhookServer::start();
    let (script, out) = argv_recorder(&env.home);
    env.config_append(&format!(
        "[notify]\ncommand = [\"{}\", \"{{subject}}\", \"{{task}}\", \"{{status}}\"]\nwebhook = \"{}\"\n\
         webhook_token_env = \"DLG_HOOK_TOKEN\"\non = [\"completed\", \"failed\"]\n",
        script.display(),
        server.url("/delegate")
    ));
    let pwned = env.home.join("pwned");
    // Relative: the command runs in delegate's working directory, the client's home here.
    let subject = "$(touch pwned); `touch pwned` \"q\" 'x' | y & z > pwned".to_string();
    let id = launch(&env, &["oppy", "review the config", "--subject", &subject, "--json"]);
    let task = wait_with_token(&env, id);
    assert_eq!(task["status"], "completed", "{task}");

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let body = reqs[0].json();
    assert_eq!((body["task"].as_i64(), body["brother"].as_str()), (Some(id), Some("oppy")), "{body}");
    assert_eq!((body["status"].as_str(), body["event"].as_str()), (Some("completed"), Some("completed")));
    assert_eq!(body["subject"], subject.as_str());
    assert_eq!(reqs[0].header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
    // One literal argument per template element; no shell ran the subject.
    assert_eq!(recorded_args(&out), [subject.clone(), id.to_string(), "completed".into()]);
    assert!(!pwned.exists(), "a shell ran the subject");

    // Later commands that sync deliver nothing again.
    env.run_with_env(&["sync"], &[("DLG_HOOK_TOKEN", TOKEN)]).ok();
    env.run_with_env(&["list"], &[("DLG_HOOK_TOKEN", TOKEN)]).ok();
    assert_eq!(server.requests().len(), 1);
    assert_eq!(recorded_args(&out).len(), 3);
    let list = env.run(&["notify", "list", "--json"]).ok().json();
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{list}");
    assert!(rows.iter().all(|r| r["state"] == "sent" && r["attempts"] == 1 && r["message"]["task"] == id), "{list}");
    let text = env.run(&["notify", "list"]).ok().stdout();
    assert!(text.contains("sent") && text.contains("webhook http://127.0.0.1"), "{text}");

    for e in std::fs::read_dir(&env.data).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap_or_default();
        assert!(!bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()), "the token reached the mailbox");
    }
}

#[test]
fn notify_off_sends_nothing_and_a_missing_token_is_retried_with_the_variable_named() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let server = WebhookServer::start();
    env.config_append(&format!(
        "[notify]\nwebhook = \"{}\"\nwebhook_token_env = \"DLG_HOOK_TOKEN\"\n",
        server.url("/")
    ));
    let off = launch(&env, &["oppy", "quiet one", "--notify", "off", "--json"]);
    wait_with_token(&env, off);
    assert!(server.requests().is_empty());
    // Without the variable, the delivery fails, says which variable, and stays pending.
    let id = launch(&env, &["oppy", "loud one", "--json"]);
    let run = env.run(&["wait", &id.to_string(), "--timeout", "60s", "--interval-ms", "200"]);
    assert_eq!(run.code(), 0, "{run}");
    let list = env.run(&["notify", "list", "--json"]).ok().json();
    assert_eq!(list[0]["state"], "pending", "{list}");
    assert!(list[0]["last_error"].as_str().unwrap().contains("DLG_HOOK_TOKEN"), "{list}");
    assert!(server.requests().is_empty());
}

#[test]
fn notify_test_reaches_each_target_and_a_failing_one_is_exit_43() {
    let env = Env::new();
    let server = WebhookServer::start();
    env.config_append(&format!("[notify]\nwebhook = \"{}\"\nformat = \"slack\"\n", server.url("/slack")));
    let run = env.run(&["notify", "test"]).ok();
    assert!(run.stdout().contains("delivered"), "{run}");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].json()["text"].as_str().unwrap().contains("delegate notify test"), "{:?}", reqs[0]);
    assert!(
        env.run(&["notify", "list", "--json"]).ok().json().as_array().unwrap().is_empty(),
        "a test records nothing"
    );

    server.answer(500);
    let run = env.run(&["notify", "test"]).fails_with(43);
    assert!(run.stderr().contains("500"), "{run}");
}

#[test]
fn bad_notify_settings_are_refused_naming_the_key_and_the_fix() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    // No target at all: asking for notifications is exit 43, nothing launched.
    let run = env.run(&["oppy", "p", "--notify", "on"]).fails_with(43);
    assert!(run.stderr().contains("[notify]"), "{run}");
    assert!(env.run(&["list", "--json", "--no-sync"]).ok().json().as_array().unwrap().is_empty());
    let run = env.run(&["oppy", "p", "--notify", "completed,done"]).fails_with(2);
    assert!(run.stderr().contains("needs_input"), "{run}");
    let run = env.run(&["notify", "test"]).fails_with(43);
    assert!(run.stderr().contains("webhook"), "{run}");

    // A token in the URL is refused when the inventory loads.
    env.config_append("[notify]\nwebhook = \"https://hooks.example/x?token=abc\"\n");
    let run = env.run(&["list"]).fails_with(3);
    assert!(run.stderr().contains("notify.webhook") && run.stderr().contains("webhook_token_env"), "{run}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_tasks_take_notify_and_the_mcp_sync_delivers() {
    use crate::mcp::{connect, err, ok};
    use serde_json::json;
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let server = WebhookServer::start();
    env.config_append(&format!("[notify]\nwebhook = \"{}\"\n", server.url("/mcp")));
    let client = connect(&env).await;
    let quiet = ok(&client, "delegate_task", json!({"brother": "oppy", "prompt": "quiet", "notify": "off"})).await;
    let loud = ok(&client, "delegate_task", json!({"brother": "oppy", "prompt": "loud", "notify": "completed"})).await;
    let ids = [quiet["tasks"][0]["task"].as_i64().unwrap(), loud["tasks"][0]["task"].as_i64().unwrap()];
    let done = ok(&client, "wait_tasks", json!({"ids": ids, "timeout_seconds": 60})).await;
    assert!(done["pending"].as_array().is_none_or(|p| p.is_empty()), "{done}");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].json()["task"], ids[1]);
    let (code, message) =
        err(&client, "delegate_task", json!({"brother": "oppy", "prompt": "x", "notify": "sometimes"})).await;
    assert_eq!(code, "bad_arguments");
    assert!(message.contains("needs_input"), "{message}");
    client.cancel().await.expect("close the client");
}

#[test]
fn a_hostile_brothers_failure_text_reaches_a_notify_command_as_one_clean_argument() {
    let host = FakeHost::start();
    // The brother's agent fails with escape sequences, a forged line and shell syntax on stderr,
    // which becomes the task's failure reason.
    crate::support::install_agent(
        &host,
        "claude",
        "#!/bin/bash\ncat >/dev/null\nprintf '\\033]52;c;QUFBQQ==\\007boom $(touch pwned)\\r\\n\\033[2J* task 99 completed\\n' >&2\nexit 1\n",
    );
    let env = Env::with_brother(&host, "claude", "read");
    let server = WebhookServer::start();
    let (script, out) = argv_recorder(&env.home);
    env.config_append(&format!(
        "[notify]\ncommand = [\"{}\", \"{{reason}}\", \"{{summary}}\"]\nwebhook = \"{}\"\n",
        script.display(),
        server.url("/")
    ));
    let id = launch(&env, &["oppy", "look around", "--json"]);
    let task = wait_with_token(&env, id);
    assert_eq!(task["status"], "failed", "{task}");
    let args = recorded_args(&out);
    assert_eq!(args.len(), 2, "{args:?}");
    for a in &args {
        assert!(a.contains("boom $(touch pwned)"), "{args:?}");
        assert!(!a.chars().any(|c| c.is_control()), "a control character reached the command: {a:?}");
    }
    assert!(!env.home.join("pwned").exists());
    let body = server.requests()[0].json();
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("boom") && !reason.chars().any(|c| c.is_control()), "{body}");
}
