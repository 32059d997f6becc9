//! What the MCP tools send back: results cut to size with a note saying where the whole
//! text is, error results with a code and a fix, and the JSON shapes of tasks and messages.

use super::*;

/// Who is asking: the call's `as`, else `DELEGATE_AGENT_ID` of the server's environment,
/// else the MCP client's name, else the local user. The board's roles are given to this name.
pub(super) fn author(given: Option<String>, ctx: &RequestContext<RoleServer>) -> String {
    let clean = |s: String| -> Option<String> {
        let s: String = s.chars().filter(|c| !c.is_control()).collect();
        let s = s.trim();
        (!s.is_empty()).then(|| s.chars().take(100).collect())
    };
    let (agent_id, local_user) = match IDENTITY_FALLBACK.get() {
        Some((id, user)) => (id.clone(), user.clone()),
        None => (None, DEFAULT_AUTHOR.to_string()),
    };
    given
        .and_then(clean)
        .or_else(|| agent_id.and_then(clean))
        .or_else(|| ctx.client_info().and_then(|i| clean(i.name)))
        .unwrap_or(local_user)
}

/// A success result: the value as pretty JSON, cut at [`MAX_RESULT_CHARS`] with a note.
pub(super) fn text_result(v: &Value, whole: &str) -> CallToolResult {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("unprintable result: {e}"));
    CallToolResult::success(vec![ContentBlock::text(cut(&text, MAX_RESULT_CHARS, whole))])
}

/// Cuts `text` at `limit` characters, saying where the whole of it is.
pub(super) fn cut(text: &str, limit: usize, whole: &str) -> String {
    let n = text.chars().count();
    if n <= limit {
        return text.to_string();
    }
    let kept: String = text.chars().take(limit).collect();
    format!("{kept}\n… [cut at {limit} of {n} characters; the whole text: {whole}]")
}

/// An error result: `error <code>: <message>` as text, and `{error, message}` as structured content.
pub(super) fn error_result(code: &str, message: &str) -> CallToolResult {
    let mut r = CallToolResult::error(vec![ContentBlock::text(format!("error {code}: {message}"))]);
    r.structured_content = Some(json!({ "error": code, "message": message }));
    r
}

pub(super) fn bad_args(tool: &str, why: &str) -> CallToolResult {
    error_result(
        "bad_arguments",
        &format!(
            "bad arguments for {tool}: {why}. Call it again with arguments that match its input schema (tools/list)"
        ),
    )
}

/// A library error as a tool error, with a hint where the message itself has none.
pub(super) fn fail(e: &Error) -> CallToolResult {
    let code = error_code(e);
    let mut message = error_chain(e);
    let hint = match code {
        "task_not_found" => " (list_tasks shows the task numbers)",
        "unknown_brother" | "unknown_environment" => " (list_brothers shows the names)",
        _ => "",
    };
    message.push_str(hint);
    error_result(code, &message)
}

/// The message with its causes, like the CLI prints it.
pub(super) fn error_chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// A short machine-readable name for a library error: its [`delegate_core::ErrorKind`]'s name
/// (the CLI's exit codes follow the same kinds).
pub fn error_code(e: &Error) -> &'static str {
    e.kind().name()
}

pub(super) fn sync_warnings(summary: delegate_core::ops::sync::SyncSummary) -> BTreeMap<String, String> {
    summary.warnings()
}

/// A task in a listing: no launch evidence, no history.
pub(super) fn summary(t: &Task) -> Value {
    json!({
        "id": t.id,
        "status": t.status,
        "reason": t.reason,
        "brother": t.brother,
        "host": t.host,
        "subject": t.subject,
        "agent": t.agent,
        "model": t.model,
        "sandbox": t.sandbox,
        "session": t.session,
        "runs": t.runs.len(),
        "created_at": t.created_at,
        "updated_at": t.updated_at,
        "exit_code": t.exit_code,
        "turns": t.turns,
        "cost_usd": t.cost_usd,
        "last_event": t.last_event,
        "synced_at": t.synced_at,
        "stale": t.stale,
    })
}

/// A task's summary plus the agent's final text (the last result, else its last message).
pub(super) fn outcome(t: &Task) -> Value {
    let mut v = summary(t);
    let facts: Option<delegate_core::agents::outcome::StreamFacts> =
        t.runs.last().and_then(|r| serde_json::from_value(r.facts.clone()).ok());
    v["final_text"] = json!(facts.as_ref().and_then(|f| f.final_text()));
    v
}

pub(super) fn message_state(m: &Message) -> &'static str {
    match (&m.read_at, &m.delivered_at) {
        (Some(_), _) => "read",
        (None, Some(_)) => "delivered",
        (None, None) => "sent",
    }
}

pub(super) fn message_json(m: &Message, limit: usize, whole: &str) -> Value {
    json!({
        "id": m.id,
        "task": m.task_id,
        "run": m.run_no,
        "direction": m.direction,
        "author": m.author,
        "kind": m.kind,
        "text": cut(&m.text, limit, whole),
        "at": m.at,
        "delivered_at": m.delivered_at,
        "read_at": m.read_at,
    })
}

/// `get_task`'s text: the task view as JSON (it carries the final text and each run's
/// denied tool calls and warnings in `results`) with any sync warnings, thinned by [`thin`]
/// to fit [`MAX_RESULT_CHARS`].
pub(super) fn task_view_text(view: &TaskView, warnings: &BTreeMap<String, String>) -> String {
    let id = view.task.id;
    let Ok(mut v) = serde_json::to_value(view) else {
        return format!("task {id}: the view could not be serialized; see `delegate show {id} --json`");
    };
    if !warnings.is_empty() {
        v["sync_warnings"] = json!(warnings);
    }
    thin(v, id)
}

/// Fits a task view into [`MAX_RESULT_CHARS`] as pretty JSON. The thread repeats the
/// history, messages and events, so those go first; then the runs' launch evidence; then
/// the oldest thread items (the prompt and follow-ups stay), chosen in one pass from the
/// newest back, each item measured once. The result says what it left out (with what the
/// view had already left out, `omitted`) and where the whole task is; a plain cut is the
/// last resort.
pub(super) fn thin(mut v: Value, id: i64) -> String {
    let whole = format!("`delegate show {id} --all --json`");
    let size = |v: &Value| serde_json::to_string_pretty(v).map(|s| s.chars().count()).unwrap_or(0);
    // What a value printed `depth` levels deep adds to the whole: its text, indented.
    let nested = |v: &Value, depth: usize| {
        let printed = serde_json::to_string_pretty(v).unwrap_or_default();
        printed.chars().count() + 2 * depth * printed.lines().count()
    };
    // Room for the notes added below, and for the estimates of what each step saves.
    let budget = MAX_RESULT_CHARS - 500;
    let mut left_out: Vec<String> = Vec::new();
    let earlier = ["history", "messages", "events"].iter().filter_map(|k| v["omitted"][k].as_u64()).sum::<u64>();
    let mut total = size(&v);
    for key in ["events", "history", "messages"] {
        if total <= budget {
            break;
        }
        if let Some(removed) = v.as_object_mut().and_then(|obj| obj.remove(key)) {
            left_out.push(format!("{key} (they are in the thread)"));
            total = total.saturating_sub(nested(&removed, 1));
        }
    }
    if total > budget
        && let Some(runs) = v["runs"].as_array_mut()
    {
        for r in runs.iter_mut() {
            if let Some(evidence) = r.as_object_mut().and_then(|o| o.remove("evidence")) {
                total = total.saturating_sub(nested(&evidence, 3));
            }
        }
        left_out.push("the runs' launch evidence".into());
    }
    let Some(items) = v.get_mut("thread").and_then(Value::as_array_mut).map(std::mem::take) else {
        return finish(v, left_out, &whole);
    };
    let is_prompt = |i: &Value| matches!(i["kind"].as_str(), Some("prompt" | "reopen"));
    let mut dropped = 0;
    let kept = if total <= budget {
        items
    } else {
        // Each item is printed at depth 2, followed by ",\n".
        let costs: Vec<usize> = items.iter().map(|i| nested(i, 2) + 2).collect();
        let prompts: usize = items.iter().zip(&costs).filter(|(i, _)| is_prompt(i)).map(|(_, c)| c).sum();
        let mut room = budget.saturating_sub(size(&v) + prompts + 300);
        // From the newest back, while they fit; everything older goes.
        let mut keep = vec![false; items.len()];
        let mut full = false;
        for (k, item) in items.iter().enumerate().rev() {
            if is_prompt(item) {
                keep[k] = true;
            } else if !full && costs[k] <= room {
                keep[k] = true;
                room -= costs[k];
            } else {
                full = true;
                dropped += 1;
            }
        }
        items.into_iter().zip(keep).filter_map(|(i, k)| k.then_some(i)).collect()
    };
    let mut thread = kept;
    if dropped + earlier > 0 {
        let at = thread.iter().take_while(|i| is_prompt(i)).count();
        let note = format!("{} earlier thread item(s) left out; the whole thread: {whole}", dropped + earlier);
        thread.insert(at, json!({ "kind": "omitted", "text": note }));
    }
    if dropped > 0 {
        left_out.push(format!("{dropped} earlier thread item(s)"));
    }
    v["thread"] = Value::Array(thread);
    finish(v, left_out, &whole)
}

/// The thinned view as text, saying what was left out, cut as a last resort.
fn finish(mut v: Value, left_out: Vec<String>, whole: &str) -> String {
    if !left_out.is_empty() {
        v["truncated"] = json!(format!(
            "to stay under {MAX_RESULT_CHARS} characters this result leaves out {}; the whole task: {whole}",
            left_out.join(", ")
        ));
    }
    let text = serde_json::to_string_pretty(&v).unwrap_or_default();
    cut(&text, MAX_RESULT_CHARS, whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(items: usize, text_len: usize) -> Value {
        let item = |n: usize, kind: &str| json!({"at": format!("t{n:05}"), "kind": kind, "text": "x".repeat(text_len)});
        let mut thread = vec![item(0, "prompt")];
        thread.extend((1..items).map(|n| item(n, "event")));
        json!({
            "id": 4,
            "status": "completed",
            "runs": [{"run_no": 1, "evidence": {"argv": ["y".repeat(3000)]}}],
            "history": thread.clone(),
            "messages": thread.clone(),
            "events": thread.clone(),
            "thread": thread,
            "final_text": "the answer",
            "results": [{"run": 1, "final_text": "the answer", "permission_denials": 1,
                         "denials": [{"tool": "Bash", "input": "rm -rf /"}], "sandbox_failed": 0, "warnings": []}],
        })
    }

    #[test]
    fn mcp_a_small_task_view_is_returned_whole() {
        let text = thin(view(5, 10), 4);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v["truncated"].is_null() && v["events"].is_array() && v["runs"][0]["evidence"].is_object(), "{v}");
    }

    #[test]
    fn mcp_a_long_thread_keeps_the_prompt_and_the_newest_items_and_says_where_the_rest_is() {
        let text = thin(view(400, 200), 4);
        assert!(text.chars().count() <= MAX_RESULT_CHARS, "{}", text.len());
        let v: Value = serde_json::from_str(&text).expect("still JSON");
        let thread = v["thread"].as_array().unwrap();
        assert_eq!(thread[0]["kind"], "prompt");
        assert_eq!(thread[1]["kind"], "omitted");
        assert!(thread[1]["text"].as_str().unwrap().contains("delegate show 4 --all --json"), "{}", thread[1]);
        assert_eq!(thread.last().unwrap()["at"], "t00399", "the newest item stays");
        assert!(v["events"].is_null() && v["history"].is_null() && v["messages"].is_null());
        assert!(v["runs"][0]["evidence"].is_null());
        // The answer and the denied calls are what the lead came for: never thinned away.
        assert_eq!(v["final_text"], "the answer");
        assert_eq!(v["results"][0]["denials"][0]["tool"], "Bash");
        assert!(v["truncated"].as_str().unwrap().contains("delegate show 4 --all --json"), "{v}");
        // Not thinner than it needs to be.
        assert!(text.chars().count() > MAX_RESULT_CHARS - 2000, "{}", text.chars().count());
    }

    #[test]
    fn mcp_thinning_a_huge_thread_is_one_pass_that_keeps_the_prompts_and_the_newest() {
        // Removing items one by one from the front cost time growing with the square of
        // their number (12 s here for 100,000, minutes for 600,000); one pass is linear.
        // (Without the lists the thread repeats, only to keep this test quick.)
        let n = 100_000;
        let mut thread = vec![json!({"at": "t00000", "kind": "prompt", "text": "do it"})];
        thread.extend((1..n).map(|n| json!({"at": format!("t{n:05}"), "kind": "event", "text": "x".repeat(20)})));
        let mut v = json!({"id": 4, "runs": [{"run_no": 1, "evidence": {}}], "thread": thread});
        let reopen = json!({"at": "t50000", "kind": "reopen", "text": "follow up"});
        v["thread"].as_array_mut().unwrap().insert(50_000, reopen);
        let started = std::time::Instant::now();
        let text = thin(v, 4);
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "hangs: {:?}", started.elapsed());
        assert!(text.chars().count() <= MAX_RESULT_CHARS, "{}", text.chars().count());
        let v: Value = serde_json::from_str(&text).expect("still JSON, not cut");
        let thread = v["thread"].as_array().unwrap();
        let kinds: Vec<&str> = thread.iter().take(3).map(|i| i["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["prompt", "reopen", "omitted"]);
        assert_eq!(thread.last().unwrap()["at"], format!("t{}", n - 1));
        // The kept items are the newest, contiguous: nothing in between went missing.
        let ats: Vec<&str> = thread[3..].iter().map(|i| i["at"].as_str().unwrap()).collect();
        let first: usize = ats[0][1..].parse().unwrap();
        let expected: Vec<String> = (first..n).map(|n| format!("t{n:05}")).collect();
        assert_eq!(ats, expected);
        let left = n - 1 - ats.len();
        assert!(thread[2]["text"].as_str().unwrap().starts_with(&format!("{left} earlier")), "{}", thread[2]);
    }

    #[test]
    fn mcp_what_the_store_left_out_is_said_even_when_the_rest_fits() {
        let mut v = view(5, 10);
        v["omitted"] = json!({"history": 2, "messages": 0, "events": 599_990});
        let v: Value = serde_json::from_str(&thin(v, 4)).unwrap();
        let thread = v["thread"].as_array().unwrap();
        assert_eq!((thread[0]["kind"].as_str(), thread[1]["kind"].as_str()), (Some("prompt"), Some("omitted")));
        let note = thread[1]["text"].as_str().unwrap();
        assert!(note.starts_with("599992 earlier") && note.contains("delegate show 4 --all --json"), "{note}");
        assert_eq!(thread.len(), 6, "{thread:?}");
        assert!(v["truncated"].is_null(), "nothing of the view itself was left out: {v}");
    }

    #[test]
    fn mcp_cut_says_how_much_was_cut_and_where_the_whole_text_is() {
        let text = cut(&"é".repeat(30), 10, "`delegate mailbox --json`");
        assert!(text.starts_with(&"é".repeat(10)), "{text}");
        assert!(text.contains("cut at 10 of 30 characters") && text.ends_with("`delegate mailbox --json`]"), "{text}");
        assert_eq!(cut("short", 10, "x"), "short");
    }
}
