//! Usage: the turns, tokens and dollars each run's stream reported, summed by brother,
//! profile or day. The numbers come from brothers, which are untrusted: a cost that is not
//! a finite number of dollars between 0 and [`MAX_RUN_COST_USD`] is left out of the sums and
//! counted in [`UsageRow::ignored`], never added.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Store;
use crate::error::Result;

/// A cost one run could really have reported; above it the number is a brother's lie or a
/// corrupt line, and summing it would hide every honest number beside it.
pub const MAX_RUN_COST_USD: f64 = 100_000.0;

/// What the rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageBy {
    Brother,
    /// The profile the task ran with (`-` for none).
    Profile,
    /// The UTC day the run started, on the lead's clock.
    Day,
}

/// The sums for one brother, profile or day.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageRow {
    pub key: String,
    pub runs: u64,
    /// Turns (Claude) or steps (Codex) as the streams reported them.
    pub turns: u64,
    /// Dollars, from the runs that reported a cost (Claude's `total_cost_usd`).
    pub cost_usd: f64,
    pub runs_with_cost: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Runs whose reported cost was impossible (negative, not finite, over
    /// [`MAX_RUN_COST_USD`]) and was left out.
    pub ignored: u64,
}

impl Store {
    /// Every run's reported usage, summed by `by`, keys in order.
    pub fn usage(&self, by: UsageBy) -> Result<Vec<UsageRow>> {
        let mut st = self.conn.prepare(
            "SELECT t.brother, t.settings, r.started_at, r.facts FROM runs r JOIN tasks t ON t.id = r.task_id",
        )?;
        let mut rows: BTreeMap<String, UsageRow> = BTreeMap::new();
        let mut q = st.query([])?;
        while let Some(r) = q.next()? {
            let (brother, settings, started, facts): (String, Option<String>, String, Option<String>) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            let key = match by {
                UsageBy::Brother => brother,
                UsageBy::Profile => profile_of(settings.as_deref()),
                UsageBy::Day => started.get(..10).unwrap_or("?").to_string(),
            };
            let facts: serde_json::Value =
                facts.and_then(|f| serde_json::from_str(&f).ok()).unwrap_or(serde_json::Value::Null);
            let row = rows.entry(key.clone()).or_insert_with(|| UsageRow { key, ..Default::default() });
            add_run(row, &facts);
        }
        Ok(rows.into_values().collect())
    }
}

/// The profile recorded with a task, `-` for none (or a task older than the record).
fn profile_of(settings: Option<&str>) -> String {
    settings
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|v| v["profile"]["value"].as_str().map(String::from))
        .unwrap_or_else(|| "-".into())
}

/// A reported cost a run could really have had: a finite number of dollars between 0 and
/// [`MAX_RUN_COST_USD`]; anything else (a lie, a corrupt line, no cost) is `None`.
pub(super) fn valid_cost(v: &serde_json::Value) -> Option<f64> {
    v.as_f64().filter(|c| c.is_finite() && (0.0..=MAX_RUN_COST_USD).contains(c))
}

/// Adds one run's stream facts to `row`.
fn add_run(row: &mut UsageRow, facts: &serde_json::Value) {
    let count = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    row.runs += 1;
    // Claude counts turns; Codex's steps are what its turn limit counts.
    row.turns = row.turns.saturating_add(count(&facts["turns"]).max(count(&facts["steps"])));
    match valid_cost(&facts["cost_usd"]) {
        Some(c) => {
            row.cost_usd += c;
            row.runs_with_cost += 1;
        }
        None if !facts["cost_usd"].is_null() => row.ignored += 1,
        None => {}
    }
    let usage = &facts["usage"];
    row.input_tokens = row.input_tokens.saturating_add(count(&usage["input_tokens"]));
    row.output_tokens = row.output_tokens.saturating_add(count(&usage["output_tokens"]));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn runs_add_up_and_impossible_costs_are_left_out() {
        let mut row = UsageRow::default();
        add_run(&mut row, &json!({"turns": 3, "cost_usd": 0.25, "usage": {"input_tokens": 100, "output_tokens": 20}}));
        add_run(
            &mut row,
            &json!({"steps": 4, "turns": 1, "usage": {"input_tokens": 7, "cached_input_tokens": 5, "output_tokens": 2}}),
        );
        add_run(&mut row, &json!({"turns": 1, "cost_usd": 0.5}));
        for lie in [json!(-1.0), json!(1e300), json!("12"), json!(MAX_RUN_COST_USD * 2.0)] {
            add_run(
                &mut row,
                &json!({"turns": 1, "cost_usd": lie, "usage": {"input_tokens": -5, "output_tokens": "9"}}),
            );
        }
        add_run(&mut row, &json!({"turns": u64::MAX, "usage": {"output_tokens": u64::MAX}}));
        add_run(&mut row, &serde_json::Value::Null);
        assert_eq!((row.runs, row.runs_with_cost, row.ignored), (9, 2, 4));
        assert_eq!(row.cost_usd, 0.75);
        assert_eq!(row.turns, u64::MAX, "saturates, never wraps");
        assert_eq!((row.input_tokens, row.output_tokens), (107, u64::MAX));
    }

    #[test]
    fn the_profile_comes_from_the_recorded_settings() {
        assert_eq!(profile_of(Some(r#"{"profile":{"value":"deep","from":"flag"}}"#)), "deep");
        assert_eq!(profile_of(Some("null")), "-");
        assert_eq!(profile_of(None), "-");
    }
}
