use super::*;

/// A recorded or hand-written run: stdout, stderr and the exit status the shell saw.
struct Fixture {
    name: &'static str,
    kind: StreamKind,
    stream: &'static [u8],
    stderr: &'static str,
    code: i32,
}

macro_rules! fixture {
    ($name:literal, $kind:expr) => {
        Fixture {
            name: $name,
            kind: $kind,
            stream: include_bytes!(concat!("../../../tests/fixtures/streams/", $name, ".jsonl")),
            stderr: include_str!(concat!("../../../tests/fixtures/streams/", $name, ".stderr")),
            code: include_str!(concat!("../../../tests/fixtures/streams/", $name, ".exit")).trim().parse().unwrap(),
        }
    };
}

fn fixtures() -> Vec<Fixture> {
    use StreamKind::{Claude, Codex};
    vec![
        fixture!("claude-not-logged-in", Claude),
        fixture!("claude-hooks-not-logged-in", Claude),
        fixture!("claude-bogus-flag", Claude),
        fixture!("claude-resume-unknown", Claude),
        fixture!("codex-offline-killed", Codex),
        fixture!("codex-offline-waiting", Codex),
        fixture!("codex-full-auto", Codex),
        fixture!("codex-untrusted-dir", Codex),
        fixture!("self-test-ok", Claude),
        fixture!("self-test-turns", Claude),
        fixture!("self-test-fail", Claude),
        fixture!("synthetic-claude-success", Claude),
        fixture!("synthetic-claude-max-turns", Claude),
        fixture!("synthetic-claude-budget", Claude),
        fixture!("synthetic-claude-crash", Claude),
        fixture!("synthetic-codex-success", Codex),
        fixture!("synthetic-codex-turn-failed", Codex),
        fixture!("synthetic-codex-unauthorized", Codex),
        fixture!("synthetic-custom-failed", StreamKind::None),
        fixture!("synthetic-claude-sandbox-broken", Claude),
        fixture!("synthetic-claude-denied", Claude),
        fixture!("synthetic-codex-items", Codex),
    ]
}

fn get(name: &str) -> Fixture {
    fixtures().into_iter().find(|f| f.name == name).unwrap()
}

fn exit(code: i32) -> ExitRecord {
    ExitRecord::parse(&format!("{code} 2026-11-21T10:00:00.1Z\n")).unwrap()
}

fn facts_of(f: &Fixture) -> StreamFacts {
    let mut facts = StreamFacts::default();
    let used = facts.feed(f.kind, f.stream);
    assert_eq!(used, f.stream.len(), "{}: every fixture ends in a newline", f.name);
    facts
}

fn run(f: &Fixture, code: i32) -> Outcome {
    classify(f.kind, &facts_of(f), &exit(code), f.stderr)
}

/// Feed the way the sync loop does: the bytes synced so far from the stored offset on,
/// with the facts stored as JSON and loaded again in between (a CLI restart).
fn feed_in_chunks(
    kind: StreamKind,
    bytes: &[u8],
    mut next: impl FnMut() -> usize,
    reload: bool,
) -> (StreamFacts, usize) {
    let mut facts = StreamFacts::default();
    let (mut offset, mut synced) = (0, 0);
    while synced < bytes.len() {
        synced = (synced + next().max(1)).min(bytes.len());
        offset += facts.feed(kind, &bytes[offset..synced]);
        if reload {
            facts = serde_json::from_str(&serde_json::to_string(&facts).unwrap()).unwrap();
        }
    }
    (facts, offset)
}

/// How many more bytes the next sync brings.
type NextChunk = Box<dyn FnMut() -> usize>;

/// A small deterministic generator, so failures reproduce.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn assert_failed(outcome: &Outcome, kind: FailKind, reason_start: &str) {
    match outcome {
        Outcome::Failed { kind: k, reason } => {
            assert_eq!(*k, kind, "{outcome:?}");
            assert!(reason.starts_with(reason_start), "reason {reason:?} should start with {reason_start:?}");
        }
        other => panic!("expected Failed {kind:?}, got {other:?}"),
    }
}

// ---- real Claude ----

#[test]
fn claude_not_logged_in_is_auth_whatever_the_exit_code() {
    let f = get("claude-not-logged-in");
    assert_eq!(f.code, 1, "2.1.329 exited 1 when recorded");
    let facts = facts_of(&f);
    assert!(facts.init && facts.auth_error && facts.saw_json);
    assert_eq!(facts.lines, 3);
    assert_eq!(facts.agent_version.as_deref(), Some("2.1.329"));
    assert_eq!(facts.session_id.as_deref(), Some("6e56322c-be3f-401a-a53c-77d9f448eac2"));
    assert_eq!(facts.permission_mode.as_deref(), Some("default"));
    assert_eq!(facts.tools.as_ref().map(Vec::len), Some(23));
    assert_eq!(facts.turns, 1);
    assert_eq!(facts.cost_usd, Some(0.0));
    let r = facts.result.as_ref().unwrap();
    assert_eq!((r.subtype.as_deref(), r.is_error), (Some("success"), Some(true)));
    assert_eq!(r.terminal_reason.as_deref(), Some("api_error"));
    for code in [0, 1] {
        let outcome = run(&f, code);
        assert_failed(&outcome, FailKind::Auth, "Not logged in");
        assert_eq!(outcome.reason().as_deref(), Some("Not logged in · Please run /login"));
    }
    // Either signal alone is enough.
    let mut only_text = facts.clone();
    only_text.auth_error = false;
    assert_failed(&classify(f.kind, &only_text, &exit(0), ""), FailKind::Auth, "Not logged in");
    let mut only_flag = facts;
    only_flag.result.as_mut().unwrap().result = Some("Invalid API key".into());
    assert_failed(&classify(f.kind, &only_flag, &exit(0), ""), FailKind::Auth, "Invalid API key");
}

#[test]
fn claude_bogus_flag_is_launch_rejected() {
    let f = get("claude-bogus-flag");
    let facts = facts_of(&f);
    assert_eq!((facts.lines, facts.saw_json), (0, false));
    assert_failed(&run(&f, f.code), FailKind::LaunchRejected, "error: unknown option '--bogus-flag'");
    // No stderr at all still gives a reason.
    assert_failed(&classify(f.kind, &facts, &exit(1), ""), FailKind::LaunchRejected, "the agent exited 1");
}

#[test]
fn claude_unknown_resume_is_launch_rejected() {
    let f = get("claude-resume-unknown");
    let facts = facts_of(&f);
    assert!(!facts.init);
    let r = facts.result.as_ref().unwrap();
    assert_eq!(r.num_turns, Some(0));
    assert_eq!(r.errors.len(), 1);
    assert_failed(&run(&f, f.code), FailKind::LaunchRejected, "No conversation found with session ID: a21ff72a");
    // Without stderr the result's errors[] explain it.
    assert_failed(&classify(f.kind, &facts, &exit(1), ""), FailKind::LaunchRejected, "No conversation found");
}

// ---- self-test agent (Claude stream) ----

#[test]
fn self_test_streams() {
    let ok = get("self-test-ok");
    assert_eq!(run(&ok, ok.code), Outcome::Completed { final_text: Some("self-test completed".into()) });
    let facts = facts_of(&ok);
    assert_eq!(facts.agent_version.as_deref(), Some("delegate-self-test 1"));
    assert_eq!(facts.session_id.as_deref(), Some("self-test"));
    assert_eq!(facts.tools, Some(vec![]));

    let turns = get("self-test-turns");
    let facts = facts_of(&turns);
    assert_eq!(facts.turns, 3);
    assert_eq!(facts.last_message.as_deref(), Some("turn 3"));
    let outcome = run(&turns, turns.code);
    assert_eq!(outcome, Outcome::TurnLimit { turns: 3, enforced_by: Enforcer::Native });
    assert_eq!(outcome.reason().as_deref(), Some("stopped after 3 turns (the agent's own limit)"));

    let fail = get("self-test-fail");
    assert_eq!(fail.code, 4);
    assert_failed(&run(&fail, fail.code), FailKind::AgentError, "self-test failure requested (exit 4)");
}

// ---- synthetic Claude ----

#[test]
fn claude_success() {
    let f = get("synthetic-claude-success");
    let facts = facts_of(&f);
    // Two lines share msg_01AbC: one turn; msg_02DeF is the second.
    assert_eq!(facts.turns, 2);
    assert_eq!(facts.permission_mode.as_deref(), Some("dontAsk"));
    assert_eq!(facts.cost_usd, Some(0.0421));
    assert_eq!(facts.usage.as_ref().and_then(|u| u["output_tokens"].as_u64()), Some(66));
    assert_eq!(facts.result.as_ref().unwrap().permission_denials, 1);
    assert_eq!(facts.last_message.as_deref(), Some("All 12 tests pass; nothing to change."));
    assert_eq!(facts.last_activity.as_deref(), Some("result: success"));
    let outcome = run(&f, 0);
    assert_eq!(outcome, Outcome::Completed { final_text: Some("All 12 tests pass; nothing to change.".into()) });
    assert_eq!((outcome.status(), outcome.reason()), ("completed", None));
    // Decided: a success result with a failing exit code is reported, not hidden.
    assert_failed(&run(&f, 1), FailKind::AgentError, "the result was success but the agent exited 1");
    // A missing is_error counts as false.
    let mut no_flag = facts;
    no_flag.result.as_mut().unwrap().is_error = None;
    assert!(matches!(classify(f.kind, &no_flag, &exit(0), ""), Outcome::Completed { .. }));
}

#[test]
fn claude_activity_follows_the_stream() {
    let f = get("synthetic-claude-success");
    let mut facts = StreamFacts::default();
    let lines: Vec<&[u8]> = f.stream.split_inclusive(|&b| b == b'\n').collect();
    let mut seen = vec![];
    for line in lines {
        facts.feed(f.kind, line);
        seen.push(facts.last_activity.clone().unwrap_or_default());
    }
    assert_eq!(
        seen,
        [
            "session started (2.1.329)",
            "assistant: I'll run the tests first.",
            "tool: Bash",
            "tool: Bash",
            "assistant: All 12 tests pass; nothing to change.",
            "result: success",
        ]
    );
}

#[test]
fn claude_max_turns_budget_and_crash() {
    let f = get("synthetic-claude-max-turns");
    assert_eq!(facts_of(&f).turns, 7);
    let outcome = run(&f, f.code);
    assert_eq!(outcome, Outcome::TurnLimit { turns: 7, enforced_by: Enforcer::Native });
    assert_eq!(outcome.status(), "turn_limit");
    assert_eq!(outcome.reason().as_deref(), Some("stopped after 7 turns (the agent's own limit)"));

    let f = get("synthetic-claude-budget");
    assert_failed(&run(&f, f.code), FailKind::Budget, "budget limit reached after spending $0.51");

    let f = get("synthetic-claude-crash");
    let facts = facts_of(&f);
    assert!(facts.init && facts.result.is_none());
    assert_eq!(facts.last_activity.as_deref(), Some("tool: Bash"));
    assert_eq!(facts.last_message.as_deref(), Some("Building the workspace."));
    assert_failed(
        &run(&f, 143),
        FailKind::Crashed,
        "the agent was killed by signal 15 (SIGTERM) before reporting a result; \
         session 4e2a5f9c-3d6b-4a0c-85e8-7f9ab13c4d5e can be resumed",
    );
    assert_failed(&run(&f, 137), FailKind::Crashed, "the agent was killed by signal 9 (SIGKILL) before");
    let outcome = classify(f.kind, &facts, &exit(1), "TypeError: x is undefined\n    at foo\n");
    assert_failed(&outcome, FailKind::Crashed, "the agent exited 1 before reporting a result: TypeError");
}

#[test]
fn claude_is_error_without_text_falls_back() {
    let mut facts = facts_of(&get("synthetic-claude-success"));
    let r = facts.result.as_mut().unwrap();
    r.is_error = Some(true);
    r.result = None;
    r.terminal_reason = Some("api_error".into());
    assert_failed(&classify(StreamKind::Claude, &facts, &exit(0), ""), FailKind::AgentError, "api_error");
    facts.result.as_mut().unwrap().terminal_reason = None;
    assert_failed(&classify(StreamKind::Claude, &facts, &exit(0), ""), FailKind::AgentError, "success");
}

#[test]
fn claude_no_stream_and_exit_zero() {
    let outcome = classify(StreamKind::Claude, &StreamFacts::default(), &exit(0), "");
    assert_failed(&outcome, FailKind::AgentError, "the agent exited 0 without");
}

#[test]
fn claude_sub_agent_lines_are_not_turns() {
    let stream = concat!(
        r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"tool_use","name":"Task"}]}}"#,
        "\n",
        r#"{"type":"assistant","parent_tool_use_id":"toolu_1","message":{"id":"s1","content":[{"type":"text","text":"inner"}]}}"#,
        "\n",
        r#"{"type":"assistant","message":{"id":"m2","content":[{"type":"text","text":"outer"}]}}"#,
        "\n",
    );
    let mut facts = StreamFacts::default();
    facts.feed(StreamKind::Claude, stream.as_bytes());
    assert_eq!(facts.turns, 2);
    assert_eq!(facts.last_message.as_deref(), Some("outer"));
}

// ---- real Codex ----

#[test]
fn codex_offline_facts() {
    let f = get("codex-offline-killed");
    let facts = facts_of(&f);
    assert_eq!(facts.session_id.as_deref(), Some("01a1fd9c-f41a-7522-88dc-07649ba8717e"));
    assert_eq!(facts.turns, 1);
    assert_eq!(facts.lines, 6);
    assert!(!facts.codex_turn_completed && facts.codex_turn_failed.is_none());
    let last = "Reconnecting... 5/5 (stream disconnected before completion: \
                failed to lookup address information: Name does not resolve)";
    assert_eq!(facts.last_error.as_deref(), Some(last));
    assert!(facts.last_activity.as_deref().unwrap().starts_with("error: Reconnecting... 5/5"));

    // The item of type error is a notice: it shows as activity, never as last_error.
    let f = get("codex-offline-waiting");
    let facts = facts_of(&f);
    assert_eq!(facts.session_id.as_deref(), Some("01a1fd9d-176e-77b2-89f9-cf89f5137122"));
    assert_eq!(
        facts.last_error.as_deref(),
        Some("Reconnecting... waiting for network (Connection failed: error sending request)")
    );
    let mut partial = StreamFacts::default();
    let cut = f.stream.windows(13).position(|w| w == b"item.complete").unwrap();
    let line_end = cut + f.stream[cut..].iter().position(|&b| b == b'\n').unwrap() + 1;
    partial.feed(f.kind, &f.stream[..line_end]);
    assert!(partial.last_activity.as_deref().unwrap().starts_with("notice: Falling back from WebSockets"));
    assert!(partial.last_error.as_deref().unwrap().starts_with("Reconnecting... 5/5"));
}

#[test]
fn codex_offline_outcomes() {
    let f = get("codex-offline-killed");
    let facts = facts_of(&f);
    let timed_out = ExitRecord::parse("143 2026-11-21T10:18:09.9Z timed_out\n").unwrap();
    assert_eq!(classify(f.kind, &facts, &timed_out, f.stderr), Outcome::TimedOut);
    let outcome = classify(f.kind, &facts, &exit(101), f.stderr);
    assert_eq!(outcome, Outcome::Failed { kind: FailKind::AgentError, reason: facts.last_error.clone().unwrap() });
    // Killed by someone else (no runner reason): still a failure with the last error.
    assert_failed(&classify(f.kind, &facts, &exit(143), f.stderr), FailKind::AgentError, "Reconnecting... 5/5");
    // Stopped at the limit before any step (a recorded offline stream never got one).
    let limit = ExitRecord::parse("143 2026-11-21T10:18:09.9Z turn_limit").unwrap();
    assert_eq!(
        classify(f.kind, &facts, &limit, f.stderr),
        Outcome::TurnLimit { turns: 0, enforced_by: Enforcer::Delegate }
    );
}

#[test]
fn codex_launch_rejections() {
    let f = get("codex-full-auto");
    assert_eq!(f.code, 2);
    assert_failed(&run(&f, f.code), FailKind::LaunchRejected, "error: unexpected argument '--full-auto' found");
    let f = get("codex-untrusted-dir");
    assert_eq!(f.code, 1);
    assert_failed(
        &run(&f, f.code),
        FailKind::LaunchRejected,
        "Not inside a trusted directory and --skip-git-repo-check was not specified.",
    );
    // Decided: no JSON and a non-zero exit is a refusal; the PATH-alias warning is skipped.
    let stderr = "WARNING: proceeding, even though we could not create PATH aliases\n\
                  Error: thread/resume: no rollout found for thread id 0199\n";
    assert_failed(
        &classify(StreamKind::Codex, &StreamFacts::default(), &exit(1), stderr),
        FailKind::LaunchRejected,
        "Error: thread/resume: no rollout found",
    );
}

// ---- synthetic Codex ----

#[test]
fn codex_turns_shown_are_its_steps() {
    // One `codex exec` turn, two tool calls and a file change: three steps, as the
    // runner counts them against --max-turns.
    let mut facts = StreamFacts::default();
    let cmd = |ev: &str, id: u32| {
        format!(r#"{{"type":"item.{ev}","item":{{"id":"item_{id}","type":"command_execution","command":"true"}}}}"#)
    };
    let stream = [
        r#"{"type":"turn.started"}"#.to_string(),
        cmd("started", 1),
        cmd("completed", 1),
        cmd("started", 2),
        cmd("completed", 2),
        r#"{"type":"item.completed","item":{"id":"item_3","type":"file_change","changes":[{"path":"a.rs","kind":"update"}]}}"#.into(),
        r#"{"type":"item.completed","item":{"id":"item_4","type":"agent_message","text":"done"}}"#.into(),
    ]
    .join("\n")
        + "\n";
    facts.feed(StreamKind::Codex, stream.as_bytes());
    assert_eq!((facts.turns, facts.steps), (1, 3));
    assert_eq!(facts.turns_used(StreamKind::Codex), 3);
    assert_eq!(facts.turns_used(StreamKind::Claude), 1);
    let stopped = ExitRecord::parse("143 2026-12-01T00:00:00Z turn_limit").unwrap();
    assert_eq!(
        classify(StreamKind::Codex, &facts, &stopped, ""),
        Outcome::TurnLimit { turns: 3, enforced_by: Enforcer::Delegate }
    );
}

#[test]
fn codex_success() {
    let f = get("synthetic-codex-success");
    let facts = facts_of(&f);
    assert_eq!(facts.session_id.as_deref(), Some("0199a213-81c0-7800-8aa1-bbab2a035a53"));
    assert!(facts.codex_turn_completed);
    assert_eq!(facts.usage.as_ref().and_then(|u| u["output_tokens"].as_u64()), Some(122));
    assert_eq!(facts.last_activity.as_deref(), Some("turn 1 completed"));
    let text = "Fixed the off-by-one in src/lib.rs; all 12 tests pass now.";
    assert_eq!(run(&f, 0), Outcome::Completed { final_text: Some(text.into()) });
    assert_failed(&run(&f, 1), FailKind::AgentError, "the turn completed but the agent exited 1");
}

#[test]
fn codex_turn_failed() {
    let f = get("synthetic-codex-turn-failed");
    assert_failed(&run(&f, f.code), FailKind::AgentError, "unexpected status 400 Bad Request");
    // Exit 0 does not rescue a failed turn.
    assert_failed(&run(&f, 0), FailKind::AgentError, "unexpected status 400");
    let f = get("synthetic-codex-unauthorized");
    assert_failed(&run(&f, f.code), FailKind::Auth, "unexpected status 401 Unauthorized");
    assert!(!mentions_unauthorized("took 4015 ms"));
    assert!(mentions_unauthorized("HTTP 401: token expired"));
}

#[test]
fn codex_turn_state_resets_on_a_new_turn() {
    let mut facts = facts_of(&get("synthetic-codex-turn-failed"));
    let more = concat!(r#"{"type":"turn.started"}"#, "\n", r#"{"type":"request_user_input","questions":[]}"#, "\n",);
    facts.feed(StreamKind::Codex, more.as_bytes());
    assert_eq!((facts.turns, facts.codex_turn_failed.is_none(), facts.needs_input), (2, true, true));
    assert_failed(
        &classify(StreamKind::Codex, &facts, &exit(0), ""),
        FailKind::AgentError,
        "the agent asked for input",
    );
    facts.feed(StreamKind::Codex, b"{\"type\":\"turn.started\"}\n{\"type\":\"turn.completed\"}\n");
    assert!(!facts.needs_input);
    assert_eq!(classify(StreamKind::Codex, &facts, &exit(0), ""), Outcome::Completed { final_text: None });
}

// ---- custom agents ----

#[test]
fn custom_agents() {
    let f = get("synthetic-custom-failed");
    let facts = facts_of(&f);
    assert_eq!((facts.lines, facts.saw_json), (3, true));
    assert_eq!(
        facts.custom_result,
        Some(CustomResult { result: "failed".into(), reason: Some("tests still failing after 3 attempts".into()) })
    );
    assert_failed(&run(&f, 0), FailKind::AgentError, "tests still failing after 3 attempts");

    let none = StreamKind::None;
    let empty = StreamFacts::default();
    assert_eq!(classify(none, &empty, &exit(0), "noise"), Outcome::Completed { final_text: None });
    assert_failed(&classify(none, &empty, &exit(3), "\n  boom: disk full\nmore\n"), FailKind::AgentError, "boom");
    assert_failed(&classify(none, &empty, &exit(3), ""), FailKind::AgentError, "the agent exited 3");

    let mut done = StreamFacts::default();
    done.feed(none, b"{\"delegate_result\":\"completed\",\"reason\":\"all green\"}\n{\"delegate_result\":\"maybe\"}\n");
    assert_eq!(classify(none, &done, &exit(0), ""), Outcome::Completed { final_text: Some("all green".into()) });
    assert_failed(&classify(none, &done, &exit(1), ""), FailKind::AgentError, "the agent reported completed but");
    // A Claude stream read as custom is just output.
    let claude = get("self-test-ok");
    let mut facts = StreamFacts::default();
    facts.feed(none, claude.stream);
    assert!(facts.saw_json && !facts.init && facts.result.is_none() && facts.turns == 0);
}

// ---- denials, final text, sandbox ----

#[test]
fn denials_are_kept_with_tool_and_bounded_input() {
    let facts = facts_of(&get("synthetic-claude-denied"));
    let r = facts.result.as_ref().unwrap();
    assert_eq!(r.permission_denials, 1);
    assert_eq!(
        r.denials,
        [Denial {
            tool: "Bash".into(),
            input: r#""$DELEGATE_TASK_DIR/report" receipt "run the tests and fix the failure""#.into()
        }]
    );
    assert_eq!(
        facts.final_text(),
        Some("All 12 tests pass. I could not send the receipt: the report helper was refused.")
    );
    // Hook and other system lines before init do not disturb the facts.
    assert!(facts.init && facts.permission_mode.as_deref() == Some("acceptEdits"));
    assert_eq!((facts.bash_calls, facts.sandbox_failed), (2, 0));

    // Many denials with huge inputs: all counted, at most MAX_DENIALS kept, each bounded.
    let one = serde_json::json!({"tool_name": "Write", "tool_input": {"file_path": format!("/x/{}\u{1b}[2J", "a".repeat(5000)), "content": "b".repeat(10_000)}});
    let line = serde_json::json!({"type": "result", "subtype": "success", "is_error": false, "permission_denials": vec![one; 50]});
    let mut facts = StreamFacts::default();
    facts.feed(StreamKind::Claude, format!("{line}\n").as_bytes());
    let r = facts.result.unwrap();
    assert_eq!((r.permission_denials, r.denials.len()), (50, MAX_DENIALS));
    for d in &r.denials {
        assert_eq!(d.tool, "Write");
        assert_eq!(d.input.chars().count(), MAX_DENIAL_CHARS);
        assert!(d.input.starts_with("/x/aaa") && !d.input.contains('\u{1b}'), "{}", d.input);
    }
    // Odd shapes read as "?" and compact JSON, never a panic.
    assert_eq!(
        denial(&serde_json::json!({"tool_input": ["rm", "-rf"]})),
        Denial { tool: "?".into(), input: r#"["rm","-rf"]"#.into() }
    );
    assert_eq!(denial(&serde_json::json!(7)), Denial { tool: "?".into(), input: String::new() });
}

#[test]
fn codex_final_text_is_the_last_agent_message() {
    let facts = facts_of(&get("synthetic-codex-items"));
    assert_eq!(
        facts.final_text(),
        Some("Fixed the off-by-one in src/lib.rs and added tests/edge.rs; all 13 tests pass.")
    );
    // The item-level error notice is not a top-level error.
    assert_eq!(facts.last_error, None);
}

#[test]
fn a_sandbox_that_never_started_fails_the_run_even_when_the_agent_says_success() {
    let f = get("synthetic-claude-sandbox-broken");
    let facts = facts_of(&f);
    assert_eq!((facts.bash_calls, facts.sandbox_failed), (2, 2));
    assert_eq!(facts.sandbox_error.as_deref(), Some("bwrap: setting up uid map: Permission denied"));
    assert_eq!(
        run(&f, 0),
        failed(
            FailKind::Sandbox,
            "the sandbox could not start on the brother: bwrap: setting up uid map: Permission denied"
        )
    );
    assert_eq!(serde_json::to_value(run(&f, 0)).unwrap()["kind"], "sandbox");

    // One Bash call failed on the sandbox, another ran: completed, with the count kept
    // so show and get_task can warn.
    let mut stream = f.stream.to_vec();
    let extra = br#"{"type":"assistant","message":{"id":"msg_x","content":[{"type":"tool_use","id":"t3","name":"Bash","input":{"command":"true"}}]}}
{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t3","content":"","is_error":false}]}}
"#;
    let at = stream.windows(17).position(|w| w == br#"{"type":"result","#).unwrap();
    stream.splice(at..at, extra.iter().copied());
    let mut facts = StreamFacts::default();
    facts.feed(StreamKind::Claude, &stream);
    assert_eq!((facts.bash_calls, facts.sandbox_failed, facts.sandbox_broken()), (3, 2, false));
    assert_eq!(classify(StreamKind::Claude, &facts, &exit(0), "").status(), "completed");

    // Only the head of a result counts: output that mentions bwrap later does not.
    let later = "build ok\nstep 2\nstep 3\nbwrap: setting up uid map: Permission denied";
    assert_eq!(sandbox_failure(later), None);
    assert_eq!(
        sandbox_failure("\n  bwrap: No permissions to creating new namespace\n").as_deref(),
        Some("bwrap: No permissions to creating new namespace")
    );
    assert_eq!(
        tool_result_text(&serde_json::json!([{"type":"text","text":"a"},{"type":"image"},{"text":"b"}])),
        "a\nb"
    );
}

#[test]
fn printable_drops_escapes_and_controls() {
    assert_eq!(printable("a\u{1b}[31mred\u{1b}[0m b"), "ared b");
    assert_eq!(printable("x\u{1b}]0;title\u{7}y\u{1b}]8;;http://e\u{1b}\\z"), "xyz");
    assert_eq!(printable("tab\tnl\ncr\r\u{0}\u{9b}2J\u{202e}rev"), "tab\tnl\ncr2Jrev");
    assert_eq!(printable("\u{1b}"), "");
    assert_eq!(printable("é€😀"), "é€😀");
}

// ---- precedence, exit records, serialization ----

#[test]
fn the_runner_reason_wins_first() {
    for f in fixtures() {
        let facts = facts_of(&f);
        let at = "2026-11-21T10:00:00.1Z";
        let rec = |r: &str| ExitRecord::parse(&format!("143 {at} {r}")).unwrap();
        assert_eq!(classify(f.kind, &facts, &rec("cancelled"), f.stderr), Outcome::Cancelled, "{}", f.name);
        assert_eq!(classify(f.kind, &facts, &rec("timed_out"), f.stderr), Outcome::TimedOut, "{}", f.name);
        assert_eq!(
            classify(f.kind, &facts, &rec("turn_limit"), f.stderr),
            Outcome::TurnLimit { turns: facts.turns_used(f.kind), enforced_by: Enforcer::Delegate },
            "{}",
            f.name
        );
    }
}

#[test]
fn every_fixture_classifies_as_expected() {
    use FailKind::*;
    let expected: &[(&str, &str, Option<FailKind>)] = &[
        ("claude-not-logged-in", "failed", Some(Auth)),
        ("claude-hooks-not-logged-in", "failed", Some(Auth)),
        ("claude-bogus-flag", "failed", Some(LaunchRejected)),
        ("claude-resume-unknown", "failed", Some(LaunchRejected)),
        ("codex-offline-killed", "failed", Some(AgentError)),
        ("codex-offline-waiting", "failed", Some(AgentError)),
        ("codex-full-auto", "failed", Some(LaunchRejected)),
        ("codex-untrusted-dir", "failed", Some(LaunchRejected)),
        ("self-test-ok", "completed", None),
        ("self-test-turns", "turn_limit", None),
        ("self-test-fail", "failed", Some(AgentError)),
        ("synthetic-claude-success", "completed", None),
        ("synthetic-claude-max-turns", "turn_limit", None),
        ("synthetic-claude-budget", "failed", Some(Budget)),
        ("synthetic-claude-crash", "failed", Some(Crashed)),
        ("synthetic-codex-success", "completed", None),
        ("synthetic-codex-turn-failed", "failed", Some(AgentError)),
        ("synthetic-codex-unauthorized", "failed", Some(Auth)),
        ("synthetic-custom-failed", "failed", Some(AgentError)),
        ("synthetic-claude-sandbox-broken", "failed", Some(Sandbox)),
        ("synthetic-claude-denied", "completed", None),
        ("synthetic-codex-items", "completed", None),
    ];
    let all = fixtures();
    assert_eq!(all.len(), expected.len());
    for (f, (name, status, kind)) in all.iter().zip(expected) {
        assert_eq!(f.name, *name);
        let outcome = run(f, f.code);
        assert_eq!(outcome.status(), *status, "{name}: {outcome:?}");
        if let Outcome::Failed { kind: k, reason } = &outcome {
            assert_eq!(Some(*k), *kind, "{name}");
            assert!(!reason.is_empty() && outcome.reason().as_deref() == Some(reason.as_str()));
        }
    }
}

#[test]
fn exit_records() {
    let r = ExitRecord::parse("0 2026-11-21T10:00:00.1Z\n").unwrap();
    assert_eq!(r, ExitRecord { code: 0, at: "2026-11-21T10:00:00.1Z".into(), reason: None, spend: None });
    let r = ExitRecord::parse("143 2026-11-21T10:00:00.1Z timed_out").unwrap();
    assert_eq!((r.code, r.reason, r.signal()), (143, Some(ExitReason::TimedOut), Some(15)));
    let r = ExitRecord::parse("\n137 2026-11-21T10:00:00.1Z cancelled\n").unwrap();
    assert_eq!(
        (r.reason, r.signal(), r.describe()),
        (Some(ExitReason::Cancelled), Some(9), "was killed by signal 9 (SIGKILL)".into())
    );
    let r = ExitRecord::parse("143 2026-11-21T10:00:00.1Z turn_limit").unwrap();
    assert_eq!(r.reason, Some(ExitReason::TurnLimit));
    // A budget stop carries the amounts; anything but plain decimals is dropped.
    let r = ExitRecord::parse("143 2026-11-21T10:00:00.1Z budget 0.071200 0.050000").unwrap();
    assert_eq!((r.reason, r.spend), (Some(ExitReason::Budget), Some(("0.071200".into(), "0.050000".into()))));
    for hostile in
        ["-1.0 0.05", "0.07 1e9", "0.07", "NaN 0.05", "0.07 0.05\u{1b}[2J", "1234567890123.0 1.0", "0.07. 0.05"]
    {
        let r = ExitRecord::parse(&format!("143 t budget {hostile}")).unwrap();
        assert_eq!((r.reason, r.spend), (Some(ExitReason::Budget), None), "{hostile}");
    }
    // Unknown reasons and missing times still give the code.
    assert_eq!(ExitRecord::parse("1 2026-11-21T10:00:00.1Z oom_killed").unwrap().reason, None);
    assert_eq!(
        ExitRecord::parse("126").unwrap(),
        ExitRecord { code: 126, at: String::new(), reason: None, spend: None }
    );
    assert_eq!(ExitRecord::parse("143 timed_out").unwrap().reason, Some(ExitReason::TimedOut));
    assert_eq!(ExitRecord::parse("1 2026").unwrap().signal(), None);
    assert_eq!(ExitRecord::parse("170 x").unwrap().describe(), "was killed by signal 42");
    for bad in ["", "\n\n", "x 2026", "99999999999 t", "-", "\u{0}\u{ff}"] {
        assert_eq!(ExitRecord::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn a_budget_stop_by_delegate_fails_with_kind_budget_and_the_amounts() {
    let facts = StreamFacts::default();
    let stopped = |text: &str| classify(StreamKind::Codex, &facts, &ExitRecord::parse(text).unwrap(), "");
    let o = stopped("143 t budget 0.071200 0.050000");
    assert_eq!(o.status(), "failed");
    let Outcome::Failed { kind, reason } = &o else { panic!("{o:?}") };
    assert_eq!(*kind, FailKind::Budget);
    assert!(reason.starts_with("stopped after spending $0.0712 of $0.05 "), "{reason}");
    // Amounts unreadable: still a budget stop, without figures.
    let Outcome::Failed { kind, reason } = stopped("137 t budget x y") else { panic!() };
    assert_eq!((kind, reason.contains('$')), (FailKind::Budget, false), "{reason}");
    // Claude's own stop names only what it spent; the run's limit is added. Delegate's
    // already names it, and other outcomes are left alone.
    let claude = failed(FailKind::Budget, "budget limit reached after spending $0.52");
    assert_eq!(claude.with_budget(Some(0.5)).reason().unwrap(), "budget limit reached after spending $0.52 of $0.5");
    let bare = failed(FailKind::Budget, "budget limit reached");
    assert_eq!(bare.with_budget(Some(2.0)).reason().unwrap(), "budget limit reached (limit $2)");
    assert_eq!(o.clone().with_budget(Some(9.0)), o);
    let other = failed(FailKind::AgentError, "boom");
    assert_eq!(other.clone().with_budget(Some(1.0)), other);
    assert_eq!(trim_cents("5.000000"), "5.00");
    assert_eq!(trim_cents("0.000001"), "0.000001");
    assert_eq!(trim_cents("12.5"), "12.5");
}

#[test]
fn outcome_serializes_with_its_state_name() {
    let json = |o: &Outcome| serde_json::to_value(o).unwrap();
    assert_eq!(
        json(&failed(FailKind::LaunchRejected, "x")),
        serde_json::json!({"outcome": "failed", "kind": "launch_rejected", "reason": "x"})
    );
    assert_eq!(
        json(&Outcome::TurnLimit { turns: 7, enforced_by: Enforcer::Delegate }),
        serde_json::json!({"outcome": "turn_limit", "turns": 7, "enforced_by": "delegate"})
    );
    assert_eq!(json(&Outcome::TimedOut), serde_json::json!({"outcome": "timed_out"}));
    assert_eq!(json(&Outcome::Cancelled)["outcome"], "cancelled");
    assert_eq!(json(&Outcome::Completed { final_text: None })["outcome"], "completed");
    for o in [Outcome::TimedOut, Outcome::Cancelled, Outcome::Completed { final_text: None }] {
        assert!(crate::TaskStatus::ALL.iter().any(|s| s.as_str() == o.status()));
        assert_eq!(json(&o)["outcome"], o.status());
    }
}

#[test]
fn facts_round_trip_through_json() {
    for f in fixtures() {
        let facts = facts_of(&f);
        let text = serde_json::to_string(&facts).unwrap();
        assert_eq!(serde_json::from_str::<StreamFacts>(&text).unwrap(), facts, "{}", f.name);
    }
    // Stored by another build: missing and unknown keys are fine.
    let old: StreamFacts = serde_json::from_str(r#"{"lines":4,"turns":2,"future_key":true}"#).unwrap();
    assert_eq!((old.lines, old.turns, old.init), (4, 2, false));
}

// ---- chunking ----

#[test]
fn any_chunking_gives_the_same_facts() {
    for f in fixtures() {
        let whole = facts_of(&f);
        let mut rng = Lcg(f.stream.len() as u64);
        let cases: [(&str, NextChunk, bool); 4] = [
            ("1 byte", Box::new(|| 1), false),
            ("7 bytes", Box::new(|| 7), true),
            ("random", Box::new(move || (rng.next() % 300) as usize), true),
            ("whole", Box::new(|| usize::MAX / 2), false),
        ];
        for (label, next, reload) in cases {
            let (facts, used) = feed_in_chunks(f.kind, f.stream, next, reload);
            assert_eq!(facts, whole, "{} fed {label}", f.name);
            assert_eq!(used, f.stream.len(), "{} fed {label}", f.name);
        }
    }
}

#[test]
fn only_complete_lines_are_consumed() {
    let f = get("self-test-ok");
    let cut = f.stream.len() - 10; // inside the result line
    let mut facts = StreamFacts::default();
    let used = facts.feed(f.kind, &f.stream[..cut]);
    let last_newline = f.stream[..cut].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    assert_eq!(used, last_newline);
    assert_eq!(facts.lines, 2);
    assert!(facts.result.is_none());
    assert_eq!(facts.feed(f.kind, &f.stream[used..]), f.stream.len() - used);
    assert!(facts.result.is_some());
    assert_eq!(facts.feed(f.kind, b""), 0);
    assert_eq!(facts.feed(f.kind, b"{\"type\":"), 0);
    // CRLF line ends parse too.
    let mut crlf = StreamFacts::default();
    crlf.feed(StreamKind::Codex, b"{\"type\":\"turn.started\"}\r\n\r\n");
    assert_eq!((crlf.lines, crlf.turns), (2, 1));
}

// ---- hostile input ----

#[test]
fn over_long_lines_are_skipped_in_any_chunking() {
    let result = br#"{"type":"result","subtype":"success","is_error":false,"result":"done"}"#;
    let mut stream = vec![b'x'; MAX_LINE_BYTES + 5];
    stream.push(b'\n');
    // A valid but over-long JSON line is skipped too.
    stream.extend_from_slice(br#"{"type":"result","result":""#);
    stream.extend(std::iter::repeat_n(b'a', MAX_LINE_BYTES));
    stream.extend_from_slice(b"\"}\n");
    stream.extend_from_slice(result);
    stream.push(b'\n');
    let kind = StreamKind::Claude;
    let mut whole = StreamFacts::default();
    assert_eq!(whole.feed(kind, &stream), stream.len());
    assert_eq!(whole.lines, 3);
    assert_eq!(whole.result.as_ref().and_then(|r| r.result.as_deref()), Some("done"));
    assert!(!whole.in_long_line);
    for chunk in [4096, 65_537, MAX_LINE_BYTES] {
        let (facts, used) = feed_in_chunks(kind, &stream, || chunk, false);
        assert_eq!((facts, used), (whole.clone(), stream.len()), "chunk {chunk}");
    }
    // Without its newline yet, a runaway line is consumed so the offset moves on.
    let mut facts = StreamFacts::default();
    let runaway = vec![b'{'; MAX_LINE_BYTES + 1];
    assert_eq!(facts.feed(kind, &runaway), runaway.len());
    assert!(facts.in_long_line);
    assert_eq!(facts.feed(kind, b"}}}"), 3);
    let rest: &[u8] = b"}\n{\"type\":\"system\",\"subtype\":\"init\"}\n";
    assert_eq!(facts.feed(kind, rest), rest.len());
    assert_eq!((facts.lines, facts.init, facts.in_long_line), (2, true, false));
    // Exactly at the limit the line still waits for its newline.
    let mut facts = StreamFacts::default();
    assert_eq!(facts.feed(kind, &vec![b' '; MAX_LINE_BYTES]), 0);
}

#[test]
fn garbage_never_panics() {
    let mut inputs: Vec<Vec<u8>> = vec![
        b"\xff\xfe\xfd\n\x00\x01\n".to_vec(),
        b"{\"type\":\"result\",\"result\":\"\xff\"}\n".to_vec(),
        b"[1,2]\n\"s\"\n42\nnull\n{}\n{\"type\":7}\n{\"type\":null}\n".to_vec(),
        format!("{}\n", "[".repeat(200_000)).into_bytes(),
        format!("{}\n", "{\"a\":".repeat(100_000)).into_bytes(),
        br#"{"type":"result","num_turns":-1,"is_error":"yes","total_cost_usd":"1","permission_denials":{},"errors":[1,"e",null],"usage":null}
{"type":"result","num_turns":99999999999,"total_cost_usd":1e400,"result":{"a":1}}
{"type":"assistant","message":{"content":"text"},"error":5}
{"type":"assistant","message":{"id":7,"content":[{"type":"text","text":null},{"type":"tool_use","name":["x"]},17,{"type":"image"}]}}
{"type":"system","subtype":"init","tools":["a",1,null,"b"],"session_id":{"x":1}}
{"type":"thread.started","thread_id":5}
{"type":"turn.failed","error":"flat string"}
{"type":"turn.failed"}
{"type":"item.completed","item":{"type":"agent_message","text":42}}
{"type":"item.completed","item":{"type":"file_change","changes":[{"path":3},{"path":"a"}]}}
{"type":"item.completed","item":"nope"}
{"type":"error"}
{"delegate_result":["completed"]}
"#
        .to_vec(),
        "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"é€😀\\n\\u0000\"}]}}\n".into(),
    ];
    let mut rng = Lcg(7);
    for _ in 0..200 {
        let alphabet = b"{}[]\":,\\ \n\rtypeuls0123456789.-e\xff\xc3";
        let len = (rng.next() % 400) as usize;
        inputs.push((0..len).map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize]).collect());
    }
    // Every fixture with random bytes overwritten, and cut short.
    for f in fixtures() {
        let mut bytes = f.stream.to_vec();
        for _ in 0..bytes.len() / 50 {
            let i = (rng.next() as usize) % bytes.len().max(1);
            if let Some(b) = bytes.get_mut(i) {
                *b = rng.next() as u8;
            }
        }
        let cut = bytes.len() * 2 / 3;
        inputs.push(bytes[..cut].to_vec());
        inputs.push(bytes);
    }
    for input in &inputs {
        for kind in [StreamKind::Claude, StreamKind::Codex, StreamKind::None] {
            let mut facts = StreamFacts::default();
            let used = facts.feed(kind, input);
            assert!(used <= input.len());
            // Small chunks make the tail re-scan quadratic; keep the big inputs quick.
            let chunk = if input.len() < 20_000 { 7 } else { 4096 };
            let (chunked, used_chunked) = feed_in_chunks(kind, input, || chunk, false);
            assert_eq!((&chunked, used_chunked), (&facts, used));
            let stderr = String::from_utf8_lossy(input);
            for code in [0, 1, 2, 101, 143, 255, 256, -1, i32::MIN, i32::MAX] {
                let outcome = classify(kind, &facts, &exit(code), &stderr);
                let _ = (outcome.status(), outcome.reason(), serde_json::to_string(&outcome).unwrap());
            }
            let text = serde_json::to_string(&facts).unwrap();
            assert_eq!(serde_json::from_str::<StreamFacts>(&text).unwrap(), facts);
        }
    }
}

#[test]
fn kept_text_is_bounded_and_cut_on_char_boundaries() {
    let long = "é".repeat(5000);
    let line = format!(
        "{{\"type\":\"assistant\",\"message\":{{\"content\":[{{\"type\":\"text\",\"text\":\"{long}\"}}]}}}}\n\
         {{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":true,\"result\":\"{long}\"}}\n"
    );
    let mut facts = StreamFacts::default();
    facts.feed(StreamKind::Claude, line.as_bytes());
    let msg = facts.last_message.as_deref().unwrap();
    assert_eq!(msg.chars().count(), MAX_TEXT_CHARS);
    assert!(msg.ends_with('…'));
    assert_eq!(facts.result.as_ref().unwrap().result.as_deref().unwrap().chars().count(), MAX_TEXT_CHARS);
    assert_eq!(facts.last_activity.as_deref().unwrap().chars().count(), "result: success (is_error)".len());
    let Outcome::Failed { reason, .. } = classify(StreamKind::Claude, &facts, &exit(0), "") else { panic!() };
    assert_eq!(reason.chars().count(), MAX_REASON_CHARS);
    assert_eq!(summary("a\nb\tc"), "a b c");
    assert_eq!(clip("abc", 3), "abc");
    assert_eq!(clip("abcd", 3), "ab…");
    assert_eq!(StreamKind::for_agent("self-test"), StreamKind::Claude);
    assert_eq!(StreamKind::for_agent("codex"), StreamKind::Codex);
    assert_eq!(StreamKind::for_agent("aider"), StreamKind::None);
}
