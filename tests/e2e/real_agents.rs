//! The real `claude` and `codex` CLIs (pinned, installed from npm by scripts/test.sh) on
//! brothers set up the ways people set them up, talking to the test kit's model stand-in:
//! every sandbox level, receipts and progress through the report helper, `say` delivered and
//! acknowledged, `reopen` resuming, the turn limit, cancel, denied tool calls, each install
//! layout, and reasoning effort, budget and extra arguments reaching each agent. Without
//! `DELEGATE_TEST_AGENTS_BIN` these tests say so and pass (outside CI only: under CI the kit
//! refuses to skip).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use delegate_testkit::FakeHost;
use delegate_testkit::brothers::{self, Install};
use delegate_testkit::model::{ModelStandIn, Reply, Script, SeenRequest};
use serde_json::Value;

use crate::support::{Env, launch, wait_done};

/// A command that runs for a while. Not `sleep 30`: Claude Code refuses a long standalone
/// sleep and tells the model to run it in the background instead.
const LONG_COMMAND: &str = "timeout 30 tail -f /dev/null";

/// One brother on its own host, its agents installed `how`, talking to its own stand-in.
pub(crate) struct Brother {
    pub(crate) env: Env,
    pub(crate) model: ModelStandIn,
    _host: FakeHost,
}

pub(crate) fn brother(how: Install, agent: &str, sandbox: &str, script: Script) -> Option<Brother> {
    let bin = brothers::real_agents_bin()?;
    let host = FakeHost::builder().own_home().without_fake_agents().start();
    let model = ModelStandIn::start(script);
    let installed = brothers::install(&host, how, &bin, &model);
    let env = Env::with_brother(&host, agent, sandbox);
    let path = if agent == "claude" { installed.claude_path } else { installed.codex_path };
    if let Some(p) = path {
        env.config_append(&format!("agent_path = \"{p}\"\n"));
    }
    Some(Brother { env, model, _host: host })
}

/// The task directory the preamble names (the helpers are given by absolute path).
pub(crate) fn task_dir(req: &SeenRequest) -> String {
    let end = req.text.find("/report' receipt").unwrap_or_else(|| panic!("no report helper in: {}", req.text));
    let start = req.text[..end].rfind('\'').expect("quoted helper path") + 1;
    req.text[start..end].to_string()
}

/// A reply that runs the report helper, as the preamble tells the agent to.
pub(crate) fn report(req: &SeenRequest, kind: &str, text: &str) -> Reply {
    Reply::Shell(format!("'{}/report' {kind} \"{text}\"", task_dir(req)))
}

pub(crate) fn show(env: &Env, id: i64) -> Value {
    env.run(&["show", &id.to_string(), "--json"]).ok().json()
}

pub(crate) fn show_until(env: &Env, id: i64, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = show(env, id);
        if check(&t) {
            return t;
        }
        assert!(Instant::now() < deadline, "never {what}: {t}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn message_kinds(t: &Value) -> Vec<(String, String)> {
    t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] != "to_brother")
        .map(|m| (m["kind"].as_str().unwrap_or("").to_string(), m["text"].as_str().unwrap_or("").to_string()))
        .collect()
}

/// Receipt, progress and done through the helper, then a final answer: what the preamble
/// asks for, which the real Claude Code at `write` refused while the helper was named by a
/// variable.
pub(crate) fn reporting_script() -> Script {
    Script::new(|req| match req.assistant_turns {
        0 => report(req, "receipt", "on it"),
        1 => report(req, "progress", "half way"),
        2 => report(req, "done", "all good"),
        _ => Reply::Text("finished: all good".into()),
    })
}

fn assert_reported_and_completed(b: &Brother, id: i64) {
    let task = wait_done(&b.env, id);
    assert_eq!(task["status"], "completed", "{task}");
    let t = show(&b.env, id);
    let kinds = message_kinds(&t);
    assert_eq!(
        kinds,
        [
            ("receipt".into(), "on it".into()),
            ("progress".into(), "half way".into()),
            ("done".into(), "all good".into())
        ],
        "{t}"
    );
    assert!(t.to_string().contains("finished: all good"), "no final answer in show: {t}");
    // Nothing the agent ran was refused.
    assert!(!t.to_string().contains("can't be checked"), "{t}");
}

#[test]
fn claude_at_write_reports_through_the_helper() {
    let Some(b) = brother(Install::NpmUserPrefix, "claude", "write", reporting_script()) else { return };
    let id = launch(&b.env, &["oppy", "review the config", "--json"]);
    assert_reported_and_completed(&b, id);
    // The evidence says which environment found the agent, and its real version.
    let run = &show(&b.env, id)["runs"][0]["evidence"]["remote"];
    assert_eq!(run["environment"], "login", "{run}");
    assert!(run["agent_version"].as_str().unwrap().contains("Claude Code"), "{run}");
}

#[test]
fn claude_at_full_reports_through_the_helper() {
    let Some(b) = brother(Install::SystemWide, "claude", "full", reporting_script()) else { return };
    let id = launch(&b.env, &["oppy", "review the config", "--json"]);
    assert_reported_and_completed(&b, id);
}

#[test]
fn codex_at_write_and_full_reports_through_the_helper() {
    for sandbox in ["write", "full"] {
        let Some(b) = brother(Install::NpmUserPrefix, "codex", sandbox, reporting_script()) else { return };
        let id = launch(&b.env, &["oppy", "review the config", "--json"]);
        assert_reported_and_completed(&b, id);
    }
}

#[test]
fn at_read_no_helper_is_asked_for_and_the_final_answer_is_the_report() {
    for agent in ["claude", "codex"] {
        let script = Script::new(|req| {
            assert!(!req.text.contains("/report'"), "the read preamble asked for a helper: {}", req.text);
            Reply::Text("read it all: looks fine".into())
        });
        let Some(b) = brother(Install::NpmUserPrefix, agent, "read", script) else { return };
        let id = launch(&b.env, &["oppy", "read the config", "--json"]);
        let task = wait_done(&b.env, id);
        assert_eq!(task["status"], "completed", "{agent}: {task}");
        let t = show(&b.env, id);
        assert!(t.to_string().contains("read it all: looks fine"), "{agent}: {t}");
        assert!(b.model.requests().iter().any(|r| r.contains("You cannot run commands")), "{agent}");
    }
}

#[test]
fn say_reaches_claude_mid_run_and_it_acknowledges() {
    let said = Arc::new(AtomicBool::new(false));
    let gate = said.clone();
    let script = Script::new(move |req| {
        if let Some(at) = req.text.find("Message ") {
            // The hook handed the message over as additional context; acknowledge it as that
            // context says.
            let id: String = req.text[at + 8..].chars().take_while(char::is_ascii_digit).collect();
            assert!(req.text.contains(&format!("'{}/inbox' ack {id}", task_dir(req))), "{}", req.text);
            if !req.text.contains("acknowledged") {
                return Reply::Shell(format!("'{}/inbox' ack {id} && echo acknowledged", task_dir(req)));
            }
            return Reply::Text("done, with the lead's change".into());
        }
        if req.assistant_turns == 0 {
            return report(req, "receipt", "on it");
        }
        // Work on (one tool call at a time) until the lead has spoken.
        wait_for(&gate);
        Reply::Shell("true".into())
    });
    let Some(b) = brother(Install::NpmUserPrefix, "claude", "write", script) else { return };
    say_mid_run_and_check(&b, &said);
    assert!(b.model.requests().iter().any(|r| r.contains("use storage v2")), "the model never saw the message");
}

#[test]
fn reopen_resumes_claudes_session_with_its_earlier_turns() {
    reopen_resumes(Install::NativeInstaller, "claude");
}

#[test]
fn the_turn_limit_stops_both_agents() {
    for agent in ["claude", "codex"] {
        let Some(b) = brother(Install::NpmUserPrefix, agent, "write", Script::new(|_| Reply::Shell("true".into())))
        else {
            return;
        };
        let id = launch(&b.env, &["oppy", "loop forever", "--max-turns", "2", "--json"]);
        let task = wait_done(&b.env, id);
        assert_eq!(task["status"], "turn_limit", "{agent}: {task}");
    }
}

#[test]
fn cancel_stops_a_real_agent() {
    let script = Script::new(|_| Reply::Shell(LONG_COMMAND.into()));
    let Some(b) = brother(Install::NpmUserPrefix, "claude", "full", script) else { return };
    let id = launch(&b.env, &["oppy", "work slowly", "--json"]);
    show_until(&b.env, id, "running", |t| t["status"] == "running");
    b.env.run(&["cancel", &id.to_string()]).ok();
    assert_eq!(wait_done(&b.env, id)["status"], "cancelled");
}

#[test]
fn a_denied_tool_call_shows_in_show() {
    // The form the preamble used to give: Claude Code cannot check a command starting with
    // a variable, and refuses it at `write`.
    let script = Script::new(|req| match req.assistant_turns {
        0 => Reply::Shell("\"$DELEGATE_TASK_DIR/report\" receipt \"on it\"".into()),
        _ => Reply::Text("could not report".into()),
    });
    let Some(b) = brother(Install::NpmUserPrefix, "claude", "write", script) else { return };
    let id = launch(&b.env, &["oppy", "try", "--json"]);
    wait_done(&b.env, id);
    let t = show(&b.env, id);
    assert!(t.to_string().contains("permission_denials") || t.to_string().contains("denial"), "{t}");
    let text = b.env.run(&["show", &id.to_string()]).ok().stdout();
    assert!(text.to_lowercase().contains("denied"), "{text}");
}

#[test]
fn every_install_layout_launches_both_agents() {
    for how in Install::ALL {
        for agent in ["claude", "codex"] {
            let Some(b) = brother(how, agent, "write", Script::text("installed fine")) else { return };
            let run = b.env.run(&["oppy", "hello", "--json"]);
            assert_eq!(run.code(), 0, "{how:?} {agent}:\n{run}");
            let id = run.json()["id"].as_i64().unwrap();
            let task = wait_done(&b.env, id);
            assert_eq!(task["status"], "completed", "{how:?} {agent}: {task}");
            let env = show(&b.env, id)["runs"][0]["evidence"]["remote"]["environment"].clone();
            let expected = if how == Install::Nvm { "interactive" } else { "login" };
            assert_eq!(env, expected, "{how:?} {agent}");
        }
    }
}

#[test]
fn bubblewrap_that_cannot_sandbox_is_refused_before_claude_starts() {
    let Some(b) = brother(Install::NpmUserPrefix, "claude", "write", Script::text("should not run")) else { return };
    brothers::break_bubblewrap(&b._host);
    let run = b.env.run(&["oppy", "edit things", "--json"]).fails_with(26);
    assert!(run.stderr().contains("setting up uid map"), "{run}");
    assert!(b.model.requests().is_empty(), "Claude started without its sandbox");
}

#[test]
fn the_wall_clock_stops_a_real_agent() {
    for agent in ["claude", "codex"] {
        let Some(b) =
            brother(Install::NpmUserPrefix, agent, "full", Script::new(|_| Reply::Shell(LONG_COMMAND.into())))
        else {
            return;
        };
        let id = launch(&b.env, &["oppy", "dawdle", "--timeout", "3s", "--json"]);
        assert_eq!(wait_done(&b.env, id)["status"], "timed_out", "{agent}");
    }
}

#[test]
fn codex_reads_a_message_with_the_inbox_helper_and_acknowledges_it() {
    let said = Arc::new(AtomicBool::new(false));
    let gate = said.clone();
    let script = Script::new(move |req| {
        let dir = task_dir(req);
        if let Some(at) = req.text.find("--- message ") {
            let id: String = req.text[at + 12..].chars().take_while(char::is_ascii_digit).collect();
            if !req.text.contains("acknowledged") {
                return Reply::Shell(format!("'{dir}/inbox' ack {id} && echo acknowledged"));
            }
            return Reply::Text("done, with the lead's change".into());
        }
        if req.assistant_turns == 0 {
            return report(req, "receipt", "on it");
        }
        // Between steps, as the preamble says: check the inbox once the lead has spoken.
        wait_for(&gate);
        Reply::Shell(format!("'{dir}/inbox'"))
    });
    let Some(b) = brother(Install::NpmUserPrefix, "codex", "write", script) else { return };
    say_mid_run_and_check(&b, &said);
}

#[test]
fn reopen_resumes_codexs_thread() {
    reopen_resumes(Install::Nvm, "codex");
}

#[test]
fn a_write_scope_stops_claudes_write_outside_it() {
    let script = Script::new(|req| {
        if !req.contains("second part") {
            return Reply::Text("first done".into());
        }
        let work = req
            .text
            .split("may change only these paths (and nothing outside them): ")
            .nth(1)
            .map(|r| r.split(&['.', ','][..]).next().unwrap().trim_end_matches("/src").to_string());
        let work = work.expect("the write scope is told to the agent");
        if req.contains("outside.txt") {
            Reply::Text("could not write there".into())
        } else {
            Reply::Tool {
                name: "Write".into(),
                input: serde_json::json!({"file_path": format!("{work}/outside.txt"), "content": "x"}),
            }
        }
    });
    let Some(b) = brother(Install::NpmUserPrefix, "claude", "write", script) else { return };
    let work = b._host.workdir();
    std::fs::create_dir_all(work.join("src")).unwrap();
    let id = launch(&b.env, &["oppy", "first part", "--json"]);
    assert_eq!(wait_done(&b.env, id)["status"], "completed");
    b.env.run(&["reopen", &id.to_string(), "second part", "--write-scope", "src", "--json"]).ok();
    let t = show_until(&b.env, id, "the second run ended", |t| {
        t["runs"].as_array().unwrap().len() == 2 && t["status"] != "launched" && t["status"] != "running"
    });
    assert!(!work.join("outside.txt").exists(), "a write outside the scope got through: {t}");
    assert!(t.to_string().contains("ScopeDenied"), "{t}");
}

/// Holds the model's next reply until the lead has spoken (at most 20 s).
pub(crate) fn wait_for(said: &AtomicBool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !said.load(Ordering::SeqCst) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Launches a task whose script waits on `said`, says "use storage v2" once the receipt is
/// in, and checks the task completed with the message delivered and acknowledged.
fn say_mid_run_and_check(b: &Brother, said: &AtomicBool) {
    let id = launch(&b.env, &["oppy", "work on it", "--max-turns", "20", "--json"]);
    show_until(&b.env, id, "receipt", |t| !message_kinds(t).is_empty());
    let msg = b.env.run(&["say", &id.to_string(), "use storage v2", "--json"]).ok().json();
    said.store(true, Ordering::SeqCst);
    let task = wait_done(&b.env, id);
    assert_eq!(task["status"], "completed", "{task}");
    let t = show(&b.env, id);
    let m = t["messages"].as_array().unwrap().iter().find(|m| m["id"] == msg["id"]).unwrap().clone();
    assert!(!m["delivered_at"].is_null() && !m["read_at"].is_null(), "not delivered and read: {m}");
}

/// A finished task reopened: the agent's resumed request carries the earlier turns.
fn reopen_resumes(how: Install, agent: &str) {
    let script = Script::new(|req| {
        if req.contains("second part") {
            assert!(req.assistant_turns > 0, "the resumed request has no earlier turns");
            Reply::Text("second done".into())
        } else {
            Reply::Text("first done".into())
        }
    });
    let Some(b) = brother(how, agent, "write", script) else { return };
    let id = launch(&b.env, &["oppy", "first part", "--json"]);
    assert_eq!(wait_done(&b.env, id)["status"], "completed");
    b.env.run(&["reopen", &id.to_string(), "second part", "--json"]).ok();
    let t = show_until(&b.env, id, "the second run completed", |t| {
        t["runs"].as_array().unwrap().len() == 2 && t["status"] == "completed"
    });
    assert!(t.to_string().contains("second done"), "{agent}: {t}");
}

/// The bodies of the main requests the model got.
fn request_bodies(model: &ModelStandIn) -> Vec<Value> {
    model.requests().into_iter().map(|r| r.body).collect()
}

#[test]
fn claude_runs_with_the_effort_budget_and_extra_args_it_was_given() {
    let Some(b) = brother(Install::SystemWide, "claude", "full", Script::text("finished")) else { return };
    let args = r#"["--fallback-model", "haiku"]"#;
    let flags = ["oppy", "say hi", "--reasoning-effort", "max", "--max-budget-usd", "5", "--args-json", args];
    let id = launch(&b.env, &[&flags[..], &["--json"]].concat());
    let task = wait_done(&b.env, id);
    assert_eq!(task["status"], "completed", "the real claude took the argv: {task}");
    let t = show(&b.env, id);
    let argv: Vec<&str> =
        t["runs"][0]["evidence"]["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    for pair in [["--effort", "max"], ["--max-budget-usd", "5"], ["--fallback-model", "haiku"]] {
        assert!(argv.windows(2).any(|w| w == pair), "{pair:?} not in {argv:?}");
    }
    assert_eq!(t["settings"]["reasoning_effort"]["from"], "flag", "{}", t["settings"]);
    // The effort reached the model, in the request Claude Code sent.
    let bodies = request_bodies(&b.model);
    assert!(!bodies.is_empty() && bodies.iter().all(|r| r["output_config"]["effort"] == "max"), "{bodies:?}");
}

#[test]
fn claude_stops_itself_at_the_budget_it_was_given() {
    let Some(b) = brother(Install::SystemWide, "claude", "full", reporting_script()) else { return };
    let id = launch(&b.env, &["oppy", "review the config", "--max-budget-usd", "0.000001", "--json"]);
    let task = wait_done(&b.env, id);
    // Claude Code ends the run after the turn that went over, with error_max_budget_usd; the
    // script wanted four turns.
    assert_eq!(task["status"], "failed", "{task}");
    assert!(task["reason"].as_str().unwrap().contains("budget limit reached"), "{task}");
    assert!(b.model.requests().len() < 4, "claude went on past its budget: {task}");
    // Recorded as a budget stop, with the amount the stream reported.
    let shown = b.env.run(&["show", &id.to_string(), "--json"]).ok().json();
    let outcome = &shown["runs"][0]["outcome"];
    assert_eq!((outcome["outcome"].as_str(), outcome["kind"].as_str()), (Some("failed"), Some("budget")), "{shown}");
    assert!(outcome["reason"].as_str().unwrap().contains("after spending $"), "{shown}");
    // The limit it was given is named too.
    assert!(task["reason"].as_str().unwrap().contains(" of $0.000001"), "{task}");
}

#[test]
fn codex_runs_with_the_reasoning_effort_it_was_given() {
    let Some(b) = brother(Install::SystemWide, "codex", "full", Script::text("finished")) else { return };
    let id = launch(&b.env, &["oppy", "say hi", "--reasoning-effort", "low", "--json"]);
    let task = wait_done(&b.env, id);
    assert_eq!(task["status"], "completed", "the real codex took the argv: {task}");
    let bodies = request_bodies(&b.model);
    assert!(!bodies.is_empty() && bodies.iter().all(|r| r["reasoning"]["effort"] == "low"), "{bodies:?}");
}

/// Prices for the stand-in's model: $10 per million input tokens, $1 cached, $40 output.
/// Codex's first request alone is some 6,700 input tokens (its instructions and tools).
const PRICES: &str = "usd_per_mtok = { input = 10.0, cached_input = 1.0, output = 40.0 }\n";

#[test]
fn delegate_stops_codex_at_its_budget_from_the_token_counts() {
    // Unique to this test, so no other test's command is mistaken for a survivor.
    const WORK: &str = "timeout 33 tail -f /dev/null";
    let Some(b) = brother(Install::SystemWide, "codex", "full", Script::new(|_| Reply::Shell(WORK.into()))) else {
        return;
    };
    b.env.config_append(PRICES);
    let id = launch(&b.env, &["oppy", "work on it", "--max-budget-usd", "0.05", "--timeout", "50s", "--json"]);
    let task = wait_done(&b.env, id);
    // Stopped by the runner once the session log's token counts cost more than $0.05; without
    // it the command would run on and the wall clock would end the task.
    assert_eq!(task["status"], "failed", "{task}");
    let reason = task["reason"].as_str().unwrap();
    assert!(reason.starts_with("stopped after spending $0.0") && reason.contains(" of $0.05 "), "{reason}");
    let shown = show(&b.env, id);
    let outcome = &shown["runs"][0]["outcome"];
    assert_eq!((outcome["outcome"].as_str(), outcome["kind"].as_str()), (Some("failed"), Some("budget")), "{shown}");
    assert_eq!(shown["runs"][0]["evidence"]["remote"]["spend_limit"]["max_budget_usd"], 0.05, "{shown}");
    assert_eq!(shown["settings"]["usd_per_mtok"]["value"]["input"], 10.0, "{}", shown["settings"]);
    // Nothing the agent started is left running.
    let left = std::process::Command::new("pgrep").args(["-f", WORK]).output().unwrap();
    assert!(left.stdout.is_empty(), "still running: {}", String::from_utf8_lossy(&left.stdout));
}

#[test]
fn codex_under_its_budget_completes() {
    let Some(b) = brother(Install::SystemWide, "codex", "full", Script::text("finished")) else { return };
    b.env.config_append(PRICES);
    let id = launch(&b.env, &["oppy", "say hi", "--max-budget-usd", "5", "--json"]);
    let task = wait_done(&b.env, id);
    assert_eq!(task["status"], "completed", "{task}");
}

#[test]
fn a_codex_budget_without_prices_is_refused_naming_the_fix() {
    let Some(b) = brother(Install::SystemWide, "codex", "full", Script::text("finished")) else { return };
    let run = b.env.run(&["oppy", "say hi", "--max-budget-usd", "5", "--json"]).fails_with(33);
    assert!(run.stderr().contains("usd_per_mtok = { input"), "{run}");
    assert!(b.model.requests().is_empty(), "codex started without a way to hold its budget");
}
