//! One notification's words, and how each target shape carries them: placeholders in a
//! command's arguments, and the webhook bodies. Every value is made one printable line of
//! bounded length first: the subject and reason may come from a brother.

use serde_json::json;

use super::WebhookFormat;
use crate::sanitize::clean_line;

/// The longest value substituted or sent (characters).
const MAX_VALUE: usize = 500;

/// What a notification says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Message {
    /// The task (none for a schedule misfire).
    pub task: Option<i64>,
    pub brother: String,
    /// The task's status (`completed`, `failed`, `turn_limit`, ...), or `misfire`.
    pub status: String,
    pub event: String,
    pub subject: String,
    pub reason: String,
    /// The schedule that misfired, if that is what this is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

impl Message {
    /// The same message with every value one clean line of at most [`MAX_VALUE`] characters.
    pub fn cleaned(&self) -> Message {
        let c = |s: &str| clean_line(s, MAX_VALUE);
        Message {
            task: self.task,
            brother: c(&self.brother),
            status: c(&self.status),
            event: c(&self.event),
            subject: c(&self.subject),
            reason: c(&self.reason),
            schedule: self.schedule.as_deref().map(c),
        }
    }

    /// One line: `task 7 on oppy completed: fix the tests` (with the reason when there is one).
    pub fn summary(&self) -> String {
        let head = match (self.task, &self.schedule) {
            (Some(id), _) => format!("task {id} on {} {}", self.brother, self.status),
            (None, Some(s)) => format!("schedule {s} missed a slot"),
            (None, None) => format!("delegate: {}", self.event),
        };
        let mut line = format!("{head}: {}", self.subject);
        if !self.reason.is_empty() {
            line.push_str(&format!(" ({})", self.reason));
        }
        clean_line(&line, MAX_VALUE * 2)
    }

    /// A command argument with its placeholders replaced. Replaced text is never scanned
    /// again, so a subject holding `{reason}` stays as written.
    pub fn fill(&self, template: &str) -> String {
        let m = self.cleaned();
        let task = m.task.map(|t| t.to_string()).unwrap_or_default();
        let summary = m.summary();
        let mut out = String::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let value = after.find('}').and_then(|close| {
                let v = match &after[..close] {
                    "task" => &task,
                    "brother" => &m.brother,
                    "status" => &m.status,
                    "event" => &m.event,
                    "subject" => &m.subject,
                    "summary" => &summary,
                    "reason" => &m.reason,
                    _ => return None,
                };
                Some((v.clone(), close))
            });
            match value {
                Some((v, close)) => {
                    out.push_str(&v);
                    rest = &after[close + 1..];
                }
                None => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// The webhook body and the URL it goes to, for `format` (ntfy's JSON shape is posted to
    /// the server root, with the URL's last path segment as the topic).
    pub fn webhook_body(&self, format: WebhookFormat, url: &str) -> (String, serde_json::Value) {
        let m = self.cleaned();
        let summary = m.summary();
        match format {
            WebhookFormat::Json => (
                url.to_string(),
                json!({
                    "source": "delegate",
                    "task": m.task,
                    "brother": m.brother,
                    "status": m.status,
                    "event": m.event,
                    "subject": m.subject,
                    "summary": summary,
                    "reason": m.reason,
                    "schedule": m.schedule,
                }),
            ),
            WebhookFormat::Slack => (url.to_string(), json!({ "text": summary })),
            WebhookFormat::Ntfy => {
                let bare = url.split(['?', '#']).next().unwrap_or(url).trim_end_matches('/');
                let (root, topic) = bare.rsplit_once('/').unwrap_or((bare, ""));
                let root = if root.ends_with(':') || root.ends_with("//") { bare } else { root };
                let tags = if m.event == "completed" { "white_check_mark" } else { "warning" };
                (
                    root.to_string(),
                    json!({ "topic": topic, "title": m.subject, "message": summary, "tags": [tags, m.event] }),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(subject: &str) -> Message {
        Message {
            task: Some(7),
            brother: "oppy".into(),
            status: "completed".into(),
            event: "completed".into(),
            subject: subject.into(),
            reason: String::new(),
            schedule: None,
        }
    }

    #[test]
    fn placeholders_are_replaced_once_and_values_are_one_clean_bounded_line() {
        let m = sample("fix {reason}\x1b]52;c;AAAA\x07 now\nsecond line");
        assert_eq!(m.fill("[{task}] {subject} {nope}"), "[7] fix {reason} now second line {nope}");
        let long = sample(&"x".repeat(10_000));
        assert!(long.fill("{subject}").chars().count() <= 500);
        assert_eq!(m.fill("{summary}"), "task 7 on oppy completed: fix {reason} now second line");
    }

    #[test]
    fn ntfy_posts_to_the_server_root_with_the_topic() {
        let (url, body) = sample("s").webhook_body(WebhookFormat::Ntfy, "https://ntfy.sh/team-alerts");
        assert_eq!(url, "https://ntfy.sh");
        assert_eq!(body["topic"], "team-alerts");
        assert_eq!(body["title"], "s");
    }
}
