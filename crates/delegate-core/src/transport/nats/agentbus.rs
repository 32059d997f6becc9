//! agentbus 0.1.12's messages (the PyPI package), exactly as it reads and writes them, so a
//! delegate worker serves `agentbus task publish` and `agentbus result get`, and a lead hands
//! tasks to an `agentbus worker run`.
//!
//! | what | subject | stream | shape |
//! |---|---|---|---|
//! | a task | `agentbus.<agent>.tasks` | `AGENTBUS_TASKS` (`agentbus.*.tasks`, max age 7 days) | [`Task`]: `id`, `from`, `to`, `reply_to`, `type` (`task.request`), `task_type`, `payload.content`, `created_at` |
//! | a result | `agentbus.<reply_to>.results` | `AGENTBUS_RESULTS` (`agentbus.*.results`, max age 30 days) | [`TaskResult`]: `id`, `type` (`task.result`), `status` (`completed`/`failed`), `task`, `result` or `error`, `completed_at` |
//!
//! A worker's durable pull consumer is named after its agent id (agentbus's own name), so a
//! delegate worker and an agentbus worker with one id share the same queue.
//!
//! Everything read here comes from a NATS server and is untrusted: sizes are bounded before
//! parsing, ids must be one subject token, and texts kept from a result are sanitized by the
//! caller ([`crate::sanitize`]).

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::wire;
use crate::error::{Error, Result};

/// agentbus's default `max_task_bytes`: a larger task is terminated unread.
pub const MAX_TASK_BYTES: usize = 1024 * 1024;
/// The largest result message read back (NATS's default `max_payload`).
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;
/// The `type` of a task and of a result.
pub const TASK_TYPE: &str = "task.request";
pub const RESULT_TYPE: &str = "task.result";
/// `agentbus task publish`'s default `--task-type`.
pub const DEFAULT_TASK_TYPE: &str = "default";

/// The two streams as agentbus's `scripts/stream-setup.sh` creates them.
pub fn stream_configs() -> [stream::Config; 2] {
    [
        stream::Config {
            name: wire::AGENTBUS_TASKS_STREAM.into(),
            subjects: vec![wire::AGENTBUS_TASKS_SUBJECTS.into()],
            max_age: Duration::from_secs(7 * 24 * 3600),
            ..Default::default()
        },
        stream::Config {
            name: wire::AGENTBUS_RESULTS_STREAM.into(),
            subjects: vec![wire::AGENTBUS_RESULTS_SUBJECTS.into()],
            max_age: Duration::from_secs(30 * 24 * 3600),
            ..Default::default()
        },
    ]
}

/// Makes sure agentbus's two streams exist (an existing one is used as it is: agentbus's
/// setup may have made it).
pub async fn ensure_streams(js: &jetstream::Context, url: &str) -> Result<()> {
    for config in stream_configs() {
        let name = config.name.clone();
        js.get_or_create_stream(config).await.map_err(|e| Error::Config {
            path: "(nats)".into(),
            message: format!("cannot open stream {name} at {}: {e}", crate::sanitize::clean_line(url, 200)),
        })?;
    }
    Ok(())
}

/// One agentbus task message. The field order is agentbus's `as_dict` order, which the
/// prompt and the result's `task` reproduce.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    pub id: String,
    #[serde(rename = "from")]
    pub from_agent: String,
    pub to: String,
    pub reply_to: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub task_type: String,
    pub payload: Map<String, Value>,
    pub created_at: Option<String>,
}

/// The longest id, agent name or task type kept (agentbus has no limit; these become
/// subjects, file names and prompt lines here).
const MAX_WORD: usize = 256;

impl Task {
    /// Reads a task as agentbus's `load_task` does (the required fields `id`, `from`, `to`,
    /// `type`, `task_type` non-empty; `payload` an object, absent or empty meaning `{}`),
    /// and refuses what a worker cannot answer safely: a message over [`MAX_TASK_BYTES`],
    /// a required field that is not a string, and a reply agent that is not one subject
    /// token. The error is the reason recorded when the message is terminated.
    pub fn parse(raw: &[u8]) -> std::result::Result<Task, String> {
        if raw.len() > MAX_TASK_BYTES {
            return Err(format!("message exceeds max task bytes: {} > {MAX_TASK_BYTES}", raw.len()));
        }
        let value: Value = serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(mut data) = value else { return Err("task message must be a JSON object".into()) };
        let missing: Vec<&str> =
            ["id", "from", "to", "type", "task_type"].into_iter().filter(|f| !truthy(data.get(*f))).collect();
        if !missing.is_empty() {
            return Err(format!("missing required fields: {}", missing.join(", ")));
        }
        let word = |data: &Map<String, Value>, f: &str| -> std::result::Result<String, String> {
            match data.get(f) {
                Some(Value::String(s)) if s.len() <= MAX_WORD => Ok(s.clone()),
                Some(Value::String(s)) => Err(format!("field {f} is {} bytes long (at most {MAX_WORD})", s.len())),
                Some(Value::Number(n)) => Ok(n.to_string()),
                _ => Err(format!("field {f} must be a string")),
            }
        };
        let payload = match data.remove("payload") {
            Some(Value::Object(m)) => m,
            // agentbus: `data.get("payload") or {}`
            Some(v) if !truthy(Some(&v)) => Map::new(),
            None => Map::new(),
            Some(_) => return Err("payload must be an object".into()),
        };
        let reply_to = match data.get("reply_to") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err("reply_to must be a string".into()),
        };
        let created_at = match data.get("created_at") {
            Some(Value::String(s)) => Some(crate::sanitize::clean_line(s, 64)),
            _ => None,
        };
        let task = Task {
            id: word(&data, "id")?,
            from_agent: word(&data, "from")?,
            to: word(&data, "to")?,
            reply_to,
            kind: word(&data, "type")?,
            task_type: word(&data, "task_type")?,
            payload,
            created_at,
        };
        wire::check_token("reply agent", task.reply_agent())?;
        Ok(task)
    }

    /// Who gets the result: `reply_to`, else `from` (agentbus: `task.reply_to or task.from_agent`).
    pub fn reply_agent(&self) -> &str {
        match self.reply_to.as_deref().map(str::trim) {
            Some(r) if !r.is_empty() => r,
            _ => self.from_agent.trim(),
        }
    }

    /// `payload.content` when it is a string.
    pub fn content(&self) -> Option<&str> {
        self.payload.get("content").and_then(Value::as_str)
    }

    /// A new task as `agentbus task publish` builds it (`id` `task-<uuid>`, no `created_at`).
    pub fn new(from_agent: &str, to: &str, reply_to: &str, content: &str) -> Task {
        let mut payload = Map::new();
        payload.insert("content".into(), Value::String(content.into()));
        Task {
            id: format!("task-{}", uuid4()),
            from_agent: from_agent.into(),
            to: to.into(),
            reply_to: Some(reply_to.into()),
            kind: TASK_TYPE.into(),
            task_type: DEFAULT_TASK_TYPE.into(),
            payload,
            created_at: None,
        }
    }

    /// The message bytes (compact JSON, as agentbus's `dump_json`).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Python's truthiness for a JSON value: null, false, 0, "", [] and {} are false.
fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// The prompt agentbus's worker gives its agent for a task (`build_agent_prompt`), byte for
/// byte for agentbus's own tasks. (The task JSON is pretty-printed with two spaces like
/// Python's `json.dumps(indent=2, ensure_ascii=False)`; keys inside `payload` come out
/// sorted, which differs from Python only for payloads with several keys.)
pub fn agent_prompt(task: &Task, agent_id: &str, extra_instruction: &str) -> String {
    let payload_json = serde_json::to_string_pretty(task).unwrap_or_default();
    let mut parts = vec![
        format!("You are {agent_id}. You received an asynchronous AgentBus task from {}.", task.from_agent),
        String::new(),
        format!("Task type: {}\nMessage ID: {}\n\nFull task JSON:\n{payload_json}", task.task_type, task.id),
        String::new(),
        "Handle the task and return a clear result.\n\n\
         Default behavior:\n\
         - Do not perform irreversible, external, production, financial, or unclear-permission actions without confirmation.\n\
         - If confirmation is needed, explain what needs confirmation and why.\n\
         - Do not include secrets, tokens, cookies, or Authorization headers in the result."
            .to_string(),
    ];
    if !extra_instruction.is_empty() {
        parts.extend([String::new(), "Extra instruction:".into(), extra_instruction.trim().into()]);
    }
    parts.join("\n")
}

/// How a task ended, as agentbus says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Completed,
    Failed,
}

/// One agentbus result message (`build_result_message`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: Status,
    /// The task as it was received (its `as_dict`).
    pub task: Value,
    #[serde(default)]
    pub completed_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TaskResult {
    /// `completed` with the agent's final text, or `failed` with the reason.
    pub fn new(task: &Task, outcome: std::result::Result<String, String>) -> TaskResult {
        TaskResult::from_value(serde_json::to_value(task).unwrap_or(Value::Null), outcome)
    }

    /// The same for a task kept as JSON (a worker's pending file).
    pub fn from_value(task: Value, outcome: std::result::Result<String, String>) -> TaskResult {
        let (status, result, error) = match outcome {
            Ok(text) => (Status::Completed, Some(text), None),
            Err(why) => (Status::Failed, None, Some(why)),
        };
        TaskResult {
            id: uuid4(),
            kind: RESULT_TYPE.into(),
            status,
            task,
            completed_at: python_utc_now(),
            result,
            error,
        }
    }

    /// Reads a result from the results stream: bounded, `type` must be `task.result`, the
    /// task's `id` a string. Texts are kept as sent; sanitize them before showing or storing.
    pub fn parse(raw: &[u8]) -> std::result::Result<TaskResult, String> {
        if raw.len() > MAX_RESULT_BYTES {
            return Err(format!("result message is {} bytes (at most {MAX_RESULT_BYTES})", raw.len()));
        }
        let r: TaskResult = serde_json::from_slice(raw).map_err(|e| format!("not an agentbus result: {e}"))?;
        if r.kind != RESULT_TYPE {
            return Err(format!("type is {:?}, not {RESULT_TYPE:?}", crate::sanitize::clean_line(&r.kind, 64)));
        }
        if r.task_id().is_none() {
            return Err("the result names no task id".into());
        }
        Ok(r)
    }

    /// The `id` of the task this answers.
    pub fn task_id(&self) -> Option<&str> {
        self.task.get("id").and_then(Value::as_str)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A random UUID v4 in its usual text form.
pub fn uuid4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Now as Python's `datetime.now(timezone.utc).isoformat()`: `2026-12-07T02:53:50.123456+00:00`.
pub fn python_utc_now() -> String {
    let now = jiff::Timestamp::now();
    format!("{}+00:00", now.strftime("%Y-%m-%dT%H:%M:%S%.6f"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_of_agentbus_publish_parses_and_its_prompt_is_agentbus_s() {
        let raw = br#"{"id":"task-1","from":"main","to":"w1","type":"task.request","task_type":"default","payload":{"content":"say \"hi\"\nplease"},"reply_to":"main"}"#;
        let t = Task::parse(raw).unwrap();
        assert_eq!(t.reply_agent(), "main");
        assert_eq!(t.content(), Some("say \"hi\"\nplease"));
        // What agentbus 0.1.12's build_agent_prompt prints for this task (Python, by hand).
        let expected = "You are w1. You received an asynchronous AgentBus task from main.\n\nTask type: default\nMessage ID: task-1\n\nFull task JSON:\n{\n  \"id\": \"task-1\",\n  \"from\": \"main\",\n  \"to\": \"w1\",\n  \"reply_to\": \"main\",\n  \"type\": \"task.request\",\n  \"task_type\": \"default\",\n  \"payload\": {\n    \"content\": \"say \\\"hi\\\"\\nplease\"\n  },\n  \"created_at\": null\n}\n\nHandle the task and return a clear result.\n\nDefault behavior:\n- Do not perform irreversible, external, production, financial, or unclear-permission actions without confirmation.\n- If confirmation is needed, explain what needs confirmation and why.\n- Do not include secrets, tokens, cookies, or Authorization headers in the result.\n\nExtra instruction:\nbe brief";
        assert_eq!(agent_prompt(&t, "w1", " be brief\n"), expected);
    }

    #[test]
    fn invalid_tasks_are_refused_with_the_reason() {
        let cases: [(&[u8], &str); 6] = [
            (b"not json", "not JSON"),
            (b"[1]", "must be a JSON object"),
            (br#"{"id":"x","from":"a","to":"b","type":"task.request"}"#, "missing required fields: task_type"),
            (br#"{"id":"","from":"a","to":"b","type":"t","task_type":"d"}"#, "missing required fields: id"),
            (
                br#"{"id":"x","from":"a","to":"b","type":"t","task_type":"d","payload":[1]}"#,
                "payload must be an object",
            ),
            (br#"{"id":"x","from":"a","to":"b","type":"t","task_type":"d","reply_to":"a.b"}"#, "reply agent"),
        ];
        for (raw, why) in cases {
            let e = Task::parse(raw).unwrap_err();
            assert!(e.contains(why), "{e} should say {why}");
        }
        let big = vec![b' '; MAX_TASK_BYTES + 1];
        assert!(Task::parse(&big).unwrap_err().contains("exceeds max task bytes"));
    }

    #[test]
    fn a_result_round_trips_and_foreign_messages_are_refused() {
        let t = Task::new("lead", "w1", "lead-box", "hello");
        let r = TaskResult::new(&t, Ok("done".into()));
        let back = TaskResult::parse(&r.to_bytes()).unwrap();
        assert_eq!(back.task_id(), Some(t.id.as_str()));
        assert_eq!(back.status, Status::Completed);
        assert!(
            TaskResult::parse(
                br#"{"id":"1","type":"task.request","status":"completed","task":{"id":"x"},"completed_at":""}"#
            )
            .is_err()
        );
        assert!(
            TaskResult::parse(br#"{"id":"1","type":"task.result","status":"completed","task":{},"completed_at":""}"#)
                .is_err()
        );
        assert!(
            TaskResult::parse(
                br#"{"id":"1","type":"task.result","status":"maybe","task":{"id":"x"},"completed_at":""}"#
            )
            .is_err()
        );
    }
}
