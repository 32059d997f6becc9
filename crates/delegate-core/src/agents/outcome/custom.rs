//! A custom agent's stream: only a `{"delegate_result": ...}` line is read; otherwise the exit
//! code and stderr decide.

use super::*;

impl StreamFacts {
    pub(super) fn custom(&mut self, value: &Value) {
        let Some(result) = value.get("delegate_result").and_then(Value::as_str) else { return };
        if !matches!(result, "completed" | "failed") {
            return;
        }
        let reason = value.get("reason").and_then(Value::as_str).map(|r| clip(r, MAX_REASON_CHARS));
        self.last_activity = Some(format!("reported {result}"));
        self.custom_result = Some(CustomResult { result: result.to_owned(), reason });
    }
}

pub(super) fn classify_custom(facts: &StreamFacts, exit: &ExitRecord, stderr: &str) -> Outcome {
    // The agent's own verdict counts, but a declared success with a failing exit code is
    // treated like Claude's: reported, not hidden.
    match &facts.custom_result {
        Some(CustomResult { result, reason }) if result == "failed" => {
            failed(FailKind::AgentError, reason.as_deref().unwrap_or("the agent reported failure"))
        }
        Some(CustomResult { reason, .. }) if exit.code == 0 => Outcome::Completed { final_text: reason.clone() },
        Some(_) => failed(FailKind::AgentError, &format!("the agent reported completed but {}", exit.describe())),
        None if exit.code == 0 => Outcome::Completed { final_text: None },
        None => {
            let reason = stderr_reason(stderr).unwrap_or_else(|| format!("the agent {}", exit.describe()));
            failed(FailKind::AgentError, &reason)
        }
    }
}
