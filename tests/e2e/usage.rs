//! `delegate usage`: the turns, tokens and dollars the runs' streams reported, summed by
//! brother, profile and day; impossible costs from a brother left out and counted.

use serde_json::{Value, json};

use delegate_testkit::FakeHost;

use crate::support::{Env, install_agent, launch, wait_done};

/// A stand-in for Claude that reports, at the end of its stream, the cost written after
/// `cost=` in its prompt, 3 turns and 100/20 tokens.
pub const CLAUDE_REPORTING: &str = r#"#!/bin/bash
p=$(cat)
c=${p##*cost=}
c=${c%%[[:space:]]*}
echo '{"type":"system","subtype":"init","session_id":"s","claude_code_version":"2.1.329"}'
printf '{"type":"result","subtype":"success","is_error":false,"num_turns":3,"result":"done","session_id":"s","total_cost_usd":%s,"usage":{"input_tokens":100,"output_tokens":20}}\n' "$c"
"#;

fn usage(env: &Env, by: &str) -> Vec<Value> {
    env.run(&["usage", "--by", by, "--json"]).ok().json()["rows"].as_array().unwrap().clone()
}

/// The row for `key`, without the float noise of the cost.
fn row(rows: &[Value], key: &str) -> Value {
    let r = rows.iter().find(|r| r["key"] == key).unwrap_or_else(|| panic!("no {key} in {rows:?}"));
    let cents = (r["cost_usd"].as_f64().unwrap() * 100.0).round() as i64;
    json!([r["runs"], r["turns"], cents, r["input_tokens"], r["output_tokens"], r["ignored"]])
}

#[test]
fn usage_sums_what_the_streams_reported_by_brother_profile_and_day() {
    let host = FakeHost::start();
    install_agent(&host, "claude", CLAUDE_REPORTING);
    let env = Env::new();
    env.add_host("h", &host);
    env.add_brother("oppy", "h", &host, "claude", "full");
    env.add_brother("jerry", "h", &host, "self-test", "read");
    env.config_append("[profiles.deep]\nmax_turns = 30\n");
    assert!(env.run(&["usage"]).ok().stdout().contains("no runs yet"));

    let ids = [
        launch(&env, &["oppy", "first cost=0.25", "--json"]),
        launch(&env, &["oppy", "second cost=0.5", "--profile", "deep", "--json"]),
        launch(&env, &["jerry", "look", "--json"]),
    ];
    for id in ids {
        assert_eq!(wait_done(&env, id)["status"], "completed");
    }
    // runs, turns, cents, tokens in, tokens out, ignored
    let by_brother = usage(&env, "brother");
    assert_eq!(row(&by_brother, "oppy"), json!([2, 6, 75, 200, 40, 0]));
    assert_eq!(row(&by_brother, "jerry")[0], 1);
    let by_profile = usage(&env, "profile");
    assert_eq!(row(&by_profile, "deep"), json!([1, 3, 50, 100, 20, 0]));
    assert_eq!(row(&by_profile, "-")[0], 2);
    let by_day = usage(&env, "day");
    assert_eq!(by_day.len(), 1, "{by_day:?}");
    assert_eq!(by_day[0]["runs"], 3);
    assert!(by_day[0]["key"].as_str().unwrap().starts_with("20"), "{by_day:?}");
    let text = env.run(&["usage"]).ok().stdout();
    assert!(text.contains("oppy") && text.contains("$0.7500"), "{text}");
}

#[test]
fn hostile_brother_costs_that_cannot_be_are_left_out_of_usage_and_counted() {
    let host = FakeHost::start();
    install_agent(&host, "claude", CLAUDE_REPORTING);
    let env = Env::with_brother(&host, "claude", "full");
    for cost in ["1e300", "-5", "0.125"] {
        let id = launch(&env, &["oppy", &format!("spend cost={cost}"), "--json"]);
        assert_eq!(wait_done(&env, id)["status"], "completed");
    }
    let rows = usage(&env, "brother");
    // Only the honest eighth of a dollar is summed; the two lies are counted, not added.
    assert_eq!(rows[0]["cost_usd"], 0.125, "{rows:?}");
    assert_eq!((rows[0]["runs"].as_u64(), rows[0]["ignored"].as_u64()), (Some(3), Some(2)), "{rows:?}");
    let text = env.run(&["usage"]).ok().stdout();
    assert!(text.contains("2 run(s) reported an impossible cost"), "{text}");
}
