//! The runner's spend limit for Codex: it prices the cumulative token counts Codex writes to
//! its session log and stops the agent at the budget. A fake agent plays Codex here (the
//! stream's `thread.started`, a rollout file under `$HOME/.codex`); the real CLI is in the
//! e2e suite (tests/e2e/real_agents.rs).

use super::tests::{Scratch, fake_plan, group_alive, vars, wait_secs};
use crate::agents::SpendLimit;
use crate::agents::options::TokenPrices;
use std::path::Path;

/// A fake Codex: announces its thread, then runs `body`, where `tc IN CACHED OUT` appends a
/// token_count event to its session log and `raw TEXT` appends a line as is.
fn fake_codex(body: &str) -> String {
    format!(
        r#"log="${{CODEX_HOME:-$HOME/.codex}}/sessions/2026/12/07"
mkdir -p "$log"
f="$log/rollout-2026-12-07T00-00-00-01a2-thread-9.jsonl"
printf '{{"type":"thread.started","thread_id":"01a2-thread-9"}}\n'
printf '{{"type":"session_meta","payload":{{"id":"01a2-thread-9"}}}}\n' >>"$f"
tc() {{ printf '{{"timestamp":"t","type":"event_msg","payload":{{"type":"token_count","info":{{"total_token_usage":{{"input_tokens":%s,"cached_input_tokens":%s,"cache_write_input_tokens":0,"output_tokens":%s,"reasoning_output_tokens":0,"total_tokens":0}},"last_token_usage":{{}}}}}}}}\n' "$1" "$2" "$3" >>"$f"; }}
raw() {{ printf '%s\n' "$1" >>"$f"; }}
{body}
"#
    )
}

/// $10 per million input tokens, $1 cached, $40 output; a budget of $0.05.
fn limited(script: &str) -> crate::agents::AgentPlan {
    let mut plan = fake_plan(script);
    plan.spend_limit = Some(SpendLimit {
        max_budget_usd: 0.05,
        usd_per_mtok: TokenPrices { input: 10.0, cached_input: 1.0, output: 40.0 },
    });
    plan
}

fn exit_words(dir: &Path, secs: u64) -> Vec<String> {
    wait_secs(&dir.join("exit"), secs).split_whitespace().map(String::from).collect()
}

#[test]
fn the_runner_stops_codex_when_its_token_cost_reaches_the_budget() {
    let s = Scratch::new("spend");
    // $0.0104, $0.023, $0.046, then $0.07: over. The last one arrives in two writes, so the
    // runner meets half a line first. Nothing stops the fake by itself for 30 s.
    let plan = limited(&fake_codex(
        r#"tc 1000 0 10; sleep 0.6
tc 3000 1000 50; sleep 0.6
tc 6000 2000 100; sleep 1.2
printf '{"type":"event_msg","payload":{"type":"token_count","info":{"total_token_usage":{"input_tokens":8000,' >>"$f"
sleep 0.7
printf '"cached_input_tokens":2000,"output_tokens":200}}}}\n' >>"$f"
echo "$$" >"$DELEGATE_TASK_DIR/fake.pid"
sleep 30"#,
    ));
    let v = vars(&s, "k-1", "dlg-k-1", &plan, b"x");
    let dir = s.launch(&v);
    // Under 30 s, so the record cannot be the fake's own end; generous for a loaded machine.
    let w = exit_words(&dir, 25);
    assert_eq!(w.len(), 5, "{w:?}");
    assert_eq!((w[0].as_str(), &w[2..]), ("143", &["budget".to_string(), "0.070000".into(), "0.050000".into()][..]));
    let state = std::fs::read_to_string(dir.join("state")).unwrap();
    assert!(
        state.contains(" stopping budget\n") && state.ends_with(" exited 143 budget 0.070000 0.050000\n"),
        "{state}"
    );
    let pgid: i32 = std::fs::read_to_string(dir.join("agent.pgid")).unwrap().trim().parse().unwrap();
    assert!(!group_alive(pgid), "the agent outlived its budget stop");
    // The runner's record reads back as a budget stop with both amounts.
    let rec = crate::agents::outcome::ExitRecord::parse(&w.join(" ")).unwrap();
    assert_eq!(rec.spend, Some(("0.070000".into(), "0.050000".into())));
}

#[test]
fn hostile_token_counts_neither_crash_the_runner_nor_stop_the_agent() {
    let s = Scratch::new("spend-hostile");
    // Each of these, read as a number, would be far over the budget; none is a count.
    let long = format!(
        "{}{}",
        "x".repeat(6000),
        r#"{"type":"token_count","info":{"total_token_usage":{"input_tokens":9999999999,"cached_input_tokens":0,"output_tokens":9999999999}}}"#
    );
    let plan = limited(&fake_codex(&format!(
        r#"tc -5000000 0 10
tc 99999999999 0 0
tc '"5000000"' 0 0
tc 5e9 0 0
tc 5000000.5 0 0
tc 0 0 -1
tc 0x7fffffff 0 0
tc 100 99999999 0
raw '{{"type":"event_msg","payload":{{"type":"token_count","info":{{"total_token_usage":{{"input_tokens":00000000000000000000000000000000000000000000000000009}}}}}}}}'
raw '{long}'
raw 'not json at all {{"type":"token_count"'
printf '\001\002\377\n' >>"$f"
tc 1000 0 10
sleep 1.5
echo '{{"type":"turn.completed"}}'"#
    )));
    let v = vars(&s, "k-1", "dlg-k-1", &plan, b"x");
    let dir = s.launch(&v);
    let w = exit_words(&dir, 15);
    assert_eq!(w.len(), 2, "stopped wrongly: {w:?}");
    assert_eq!(w[0], "0", "{w:?}");
    let state = std::fs::read_to_string(dir.join("state")).unwrap();
    assert!(!state.contains("stopping"), "{state}");
}

#[test]
fn the_runner_outlives_polls_made_before_the_stream_file_exists() {
    let s = Scratch::new("spend-early");
    // The stream reader's `tee` creates stream.jsonl, and it may not have yet when the runner
    // first looks for the thread id (seen with the real Codex: the runner ended under
    // `set -u` without an exit record). The fake takes the file away for the first polls.
    let plan = limited(&format!(
        "rm -f \"$DELEGATE_TASK_DIR/stream.jsonl\"\nsleep 1.2\n{}",
        fake_codex("tc 1000 0 10\nsleep 0.6\necho '{\"type\":\"turn.completed\"}'")
    ));
    let v = vars(&s, "k-1", "dlg-k-1", &plan, b"x");
    let dir = s.launch(&v);
    let w = exit_words(&dir, 15);
    assert_eq!((w.len(), w.first().map(String::as_str)), (2, Some("0")), "{w:?}");
}

/// A reopen resumes the thread: its log already holds the earlier runs' counts ($1.00 here,
/// twenty times the budget), which are not this run's spend.
fn resumed(s: &Scratch, body: &str) -> crate::agents::AgentPlan {
    let log = s.dir.join(".codex/sessions/2026/12/06");
    std::fs::create_dir_all(&log).unwrap();
    let earlier = r#"{"type":"event_msg","payload":{"type":"token_count","info":{"total_token_usage":{"input_tokens":100000,"cached_input_tokens":0,"output_tokens":0}}}}"#;
    std::fs::write(log.join("rollout-2026-12-06T00-00-00-01a2-thread-9.jsonl"), format!("{earlier}\n")).unwrap();
    // The fake appends to the same file, as Codex does on resume.
    let script = fake_codex(body).replace("sessions/2026/12/07", "sessions/2026/12/06");
    let script = script.replace("rollout-2026-12-07T00-00-00-01a2", "rollout-2026-12-06T00-00-00-01a2");
    let mut plan = limited(&script);
    plan.session_id = Some("01a2-thread-9".into());
    plan
}

#[test]
fn a_resumed_thread_counts_only_this_runs_spend() {
    // Counts going on from the earlier runs': $0.02 more completes, $0.06 more is stopped
    // with $0.06 as this run's spend.
    let s = Scratch::new("spend-resume");
    let plan = resumed(
        &s,
        "for fd in /proc/$$/fd/*; do readlink \"$fd\"; done >\"$DELEGATE_TASK_DIR/fds\"\ntc 102000 0 0\nsleep 1.5\necho done",
    );
    let dir = s.launch(&vars(&s, "k-1", "dlg-k-1", &plan, b"x"));
    let w = exit_words(&dir, 15);
    assert_eq!((w.len(), w[0].as_str()), (2, "0"), "stopped for the earlier runs' spend: {w:?}");
    // The runner's read of the session log is not handed to the agent.
    let fds = std::fs::read_to_string(dir.join("fds")).unwrap();
    assert!(fds.contains("/prompt") && !fds.contains("rollout"), "{fds}");

    let s = Scratch::new("spend-resume-over");
    let plan = resumed(&s, "tc 102000 0 0\nsleep 0.6\ntc 106000 0 0\nsleep 30");
    let dir = s.launch(&vars(&s, "k-1", "dlg-k-1", &plan, b"x"));
    let w = exit_words(&dir, 15);
    assert_eq!(w[2..], ["budget", "0.060000", "0.050000"], "{w:?}");

    // Counts that start afresh below the earlier total are this run's from zero.
    let s = Scratch::new("spend-resume-afresh");
    let plan = resumed(&s, "tc 2000 0 0\nsleep 0.6\ntc 7000 0 0\nsleep 30");
    let dir = s.launch(&vars(&s, "k-1", "dlg-k-1", &plan, b"x"));
    let w = exit_words(&dir, 15);
    assert_eq!(w[2..], ["budget", "0.070000", "0.050000"], "{w:?}");
}
