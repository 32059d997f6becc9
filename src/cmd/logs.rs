//! `delegate logs N [--follow]`: what the agent wrote so far, read from the brother: its
//! stream (rendered, or `--raw`), its stderr, or the task's hook events and reports, which
//! the brother keeps whole even where the mailbox's row caps left lines out.
//!
//! The file is read in chunks ([`MAX_READ_CHUNK`], one exec each) and written out as it
//! comes, so a file of any size is shown whole in bounded memory: without `--follow`, up
//! to the size it had at the first read; with it, until the agent ends.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use delegate_core::agents::outcome::{clip, input_summary, printable, tool_result_text};
use delegate_core::ops::control::MAX_READ_CHUNK;
use serde_json::Value;

use super::log_lines::{Lines, MAX_HELD_LINE, Segment};
use super::{block_on, open};
use crate::cli::LogsArgs;

pub fn run(config: Option<&Path>, args: LogsArgs) -> Result<()> {
    let mut d = open(config)?;
    let file = match (args.stderr, args.events, args.reports) {
        (true, _, _) => "stderr.log",
        (_, true, _) => "events.jsonl",
        (_, _, true) => "outbox.jsonl",
        _ => "stream.jsonl",
    };
    // Only the agent's stream has a rendering; the other files are shown line by line. Raw
    // lines stay whole (for jq) but are made printable: a valid JSON line has no control
    // characters, so only junk loses anything.
    let raw = args.raw || file != "stream.jsonl";
    let mut lines = Lines::default();
    let mut offset = 0u64;
    // Without --follow: the file's size at the first read, where this command stops.
    let mut end = None;
    loop {
        let (chunk, report) = block_on(d.read_remote(args.id, file, offset))?;
        let end = *end.get_or_insert(chunk.size);
        offset = chunk.next_offset;
        let mut out = std::io::stdout().lock();
        // A closed reader (`logs N | head`) ends here; main exits quietly.
        lines.push(&chunk.bytes, &mut |s| show(&mut out, s, raw))?;
        out.flush()?;
        // A chunk the cap cut short: the rest is there now, no reason to wait for it.
        let more_waiting = chunk.bytes.len() as u64 == MAX_READ_CHUNK && offset < chunk.size;
        let finished = report.deltas.iter().any(|d| d.file == "exit") || !report.session_alive;
        let done =
            if args.follow { finished && chunk.bytes.is_empty() } else { offset >= end || chunk.bytes.is_empty() };
        if done {
            lines.finish(&mut |s| show(&mut out, s, raw))?;
            out.flush()?;
            if args.follow {
                // Let the mailbox learn how it ended.
                let _ = block_on(d.sync(Some(&[args.id])));
            }
            return Ok(());
        }
        if args.follow && !more_waiting {
            std::thread::sleep(Duration::from_millis(1000));
        }
    }
}

/// Writes one segment of the file: a line rendered (or printable, when raw), or a piece of a
/// line too long to hold, streamed through when raw and announced once otherwise.
fn show(out: &mut impl Write, segment: Segment<'_>, raw: bool) -> std::io::Result<()> {
    match segment {
        Segment::Whole(line) => {
            let shown = if raw { printable(&String::from_utf8_lossy(line)) } else { render(line) };
            if shown.is_empty() { Ok(()) } else { writeln!(out, "{shown}") }
        }
        Segment::Part { bytes, last, .. } if raw => {
            write!(out, "{}", printable(&String::from_utf8_lossy(bytes)))?;
            if last { writeln!(out) } else { Ok(()) }
        }
        Segment::Part { first: true, .. } => {
            writeln!(out, "[a line of more than {MAX_HELD_LINE} bytes, not rendered: --raw shows it]")
        }
        Segment::Part { .. } => Ok(()),
    }
}

/// Longest rendered line, in characters: one stream line can hold a whole file.
const MAX_LINE_CHARS: usize = 400;
/// At most this many lines of one rendered stream line (a long message or reasoning).
const MAX_LINES: usize = 60;
/// Free text quoted inside a summary (hook output, tool results, unknown fields).
const MAX_SNIPPET_CHARS: usize = 200;

/// One stream line as a person would like to read it, for both Claude's `stream-json` and
/// `codex exec --json` (agent-clis.md §1.1, §1.2). Everything comes from the brother: the
/// result is made printable (no terminal escapes) and bounded in line length and count.
/// Empty means "nothing worth a line" (partial updates the completed item repeats).
fn render(line: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(line) {
        Ok(v) if v.is_object() => render_json(&v),
        _ => String::from_utf8_lossy(line).into_owned(),
    };
    bound(&text)
}

fn render_json(v: &Value) -> String {
    let str_at = |ptr: &str| v.pointer(ptr).and_then(Value::as_str).unwrap_or("");
    match str_at("/type") {
        // ---- Claude ----
        "system" => render_system(v),
        "assistant" => {
            let prefix = if v["parent_tool_use_id"].is_string() { "(sub-agent) " } else { "" };
            let mut out: Vec<String> = Vec::new();
            if let Some(e) = v["error"].as_str() {
                out.push(format!("{prefix}[error] {}", snippet(e)));
            }
            for b in v["message"]["content"].as_array().into_iter().flatten() {
                match b["type"].as_str() {
                    Some("text") => out.push(format!("{prefix}{}", b["text"].as_str().unwrap_or(""))),
                    Some("tool_use") => out.push(format!(
                        "{prefix}→ {}: {}",
                        word(b["name"].as_str().unwrap_or("tool")),
                        input_summary(&b["input"])
                    )),
                    Some("thinking") => {
                        out.push(format!("{prefix}[thinking] {}", snippet(b["thinking"].as_str().unwrap_or(""))))
                    }
                    Some(other) => out.push(format!("{prefix}[{}]", word(other))),
                    None => {}
                }
            }
            out.join("\n")
        }
        "user" => {
            let content = &v["message"]["content"];
            if let Some(text) = content.as_str() {
                return format!("[user] {}", snippet(text));
            }
            let mut out: Vec<String> = Vec::new();
            for b in content.as_array().into_iter().flatten() {
                match b["type"].as_str() {
                    Some("tool_result") => {
                        let text = tool_result_text(&b["content"]);
                        let first = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
                        let more = text.lines().filter(|l| !l.trim().is_empty()).count().saturating_sub(1);
                        let more = if more > 0 { format!(" (+{more} lines)") } else { String::new() };
                        if b["is_error"].as_bool() == Some(true) {
                            // The whole head: an error's cause is often on its second line
                            // (`Exit code 1` then `bwrap: …`).
                            out.push(format!("← error: {}", snippet(&text)));
                        } else {
                            out.push(format!("← {}{more}", snippet(first)));
                        }
                    }
                    Some("text") => out.push(format!("[user] {}", snippet(b["text"].as_str().unwrap_or("")))),
                    _ => {}
                }
            }
            out.join("\n")
        }
        "result" => {
            let mut facts = vec![str_at("/subtype").to_string()];
            if v["is_error"].as_bool() == Some(true) {
                facts.push("error".into());
            }
            if let Some(n) = v["num_turns"].as_u64() {
                facts.push(format!("{n} turn{}", if n == 1 { "" } else { "s" }));
            }
            if let Some(c) = v["total_cost_usd"].as_f64() {
                facts.push(format!("${c:.4}"));
            }
            if let Some(d) = v["permission_denials"].as_array().filter(|d| !d.is_empty()) {
                facts.push(format!("{} permission denial{}", d.len(), if d.len() == 1 { "" } else { "s" }));
            }
            let text = v["result"].as_str().unwrap_or(str_at("/terminal_reason"));
            format!("[result {}] {text}", facts.join(", "))
        }
        // ---- Codex ----
        "thread.started" => format!("[thread started] {}", word(str_at("/thread_id"))),
        "turn.started" => "[turn started]".into(),
        "turn.completed" => {
            let u = &v["usage"];
            match (u["input_tokens"].as_u64(), u["output_tokens"].as_u64()) {
                (Some(i), Some(o)) => {
                    let cached =
                        u["cached_input_tokens"].as_u64().map(|c| format!(" (cached {c})")).unwrap_or_default();
                    format!("[turn completed] tokens in {i}{cached}, out {o}")
                }
                _ => "[turn completed]".into(),
            }
        }
        "turn.failed" => format!("[turn failed] {}", error_text(&v["error"])),
        // The completed item carries everything the started and updated ones said.
        "item.started" | "item.updated" => String::new(),
        "item.completed" => render_item(&v["item"]),
        "request_user_input" => format!("[needs input] {}", other_fields(v, &["type"])),
        "error" => format!("[error] {}", snippet(str_at("/message"))),
        // Claude's partial messages (only with --include-partial-messages): the whole
        // message follows.
        "stream_event" => String::new(),
        "" if v.get("type").is_none() => serde_json::to_string(v).unwrap_or_default(),
        other => format!("[{}] {}", word(other), other_fields(v, &["type", "uuid", "session_id"])),
    }
}

/// Claude `system` lines: `init`, hook lines (which may come before `init`), permission
/// denials, and whatever subtype a newer build adds.
fn render_system(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("");
    match s("subtype") {
        "init" => {
            let mut parts = vec![format!("model {}", word(v["model"].as_str().unwrap_or("?")))];
            if let Some(m) = v["permissionMode"].as_str() {
                parts.push(format!("permission mode {}", word(m)));
            }
            if let Some(t) = v["tools"].as_array() {
                parts.push(format!("{} tools", t.len()));
            }
            if let Some(ver) = v["claude_code_version"].as_str() {
                parts.push(format!("claude {}", word(ver)));
            }
            format!("[init] {}", parts.join(", "))
        }
        "hook_started" => format!("[hook] {} {} started", word(s("hook_event")), word(s("hook_name"))),
        "hook_response" => {
            let mut line = format!("[hook] {} {} {}", word(s("hook_event")), word(s("hook_name")), word(s("outcome")));
            if let Some(code) = v["exit_code"].as_i64() {
                line.push_str(&format!(", exit {code}"));
            }
            // Hook output can be anything the hook printed: a bounded first line only.
            if !s("stderr").trim().is_empty() {
                line.push_str(&format!(": stderr: {}", snippet(s("stderr"))));
            } else if !s("stdout").trim().is_empty() {
                line.push_str(&format!(": {}", snippet(s("stdout"))));
            }
            line
        }
        "permission_denied" => {
            let tool = v["tool_name"].as_str().or(v["tool"].as_str()).unwrap_or("?");
            let input = v.get("tool_input").or(v.get("input")).map(input_summary).unwrap_or_default();
            let reason = ["reason", "message", "decision_reason"].iter().find_map(|k| v[*k].as_str()).unwrap_or("");
            let mut line = format!("[permission denied] {}", word(tool));
            if !input.is_empty() {
                line.push_str(&format!(": {input}"));
            }
            if !reason.is_empty() {
                line.push_str(&format!(" ({})", snippet(reason)));
            }
            line
        }
        other => {
            let skip = ["type", "subtype", "uuid", "session_id"];
            format!("[system:{}] {}", word(if other.is_empty() { "?" } else { other }), other_fields(v, &skip))
        }
    }
}

/// A completed Codex item, for every type of `exec_events.rs`.
fn render_item(item: &Value) -> String {
    let s = |k: &str| item[k].as_str().unwrap_or("");
    match s("type") {
        "agent_message" => s("text").to_string(),
        "reasoning" => format!("[reasoning] {}", s("text")),
        "command_execution" => {
            let end = match item["exit_code"].as_i64() {
                Some(code) => format!("exit {code}"),
                None => word(if s("status").is_empty() { "?" } else { s("status") }),
            };
            let mut line = format!("$ {} → {end}", snippet(s("command")));
            // A failed command's last output line usually says why.
            if item["exit_code"].as_i64().is_some_and(|c| c != 0)
                && let Some(last) = s("aggregated_output").lines().rev().find(|l| !l.trim().is_empty())
            {
                line.push_str(&format!("\n  {}", snippet(last)));
            }
            line
        }
        "file_change" => {
            let changes: Vec<String> = item["changes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    format!("{} {}", word(c["kind"].as_str().unwrap_or("change")), c["path"].as_str().unwrap_or("?"))
                })
                .collect();
            format!("[edit] {}", snippet(&changes.join(", ")))
        }
        "mcp_tool_call" => {
            let mut line = format!("[mcp] {}.{} {}", word(s("server")), word(s("tool")), word(s("status")));
            if !item["error"].is_null() {
                line.push_str(&format!(": {}", error_text(&item["error"])));
            }
            line
        }
        "web_search" => format!("[web search] {}", snippet(s("query"))),
        "todo_list" => {
            let mut out = vec!["[todo]".to_string()];
            for t in item["items"].as_array().into_iter().flatten() {
                let mark = if t["completed"].as_bool() == Some(true) { "x" } else { " " };
                out.push(format!("  [{mark}] {}", snippet(t["text"].as_str().unwrap_or(""))));
            }
            out.join("\n")
        }
        "plan" => format!("[plan] {}", s("text")),
        // Non-fatal notices, such as the fallback from WebSockets to HTTPS.
        "error" => format!("[error, non-fatal] {}", snippet(s("message"))),
        "" => String::new(),
        other => format!("[item:{}] {}", word(other), other_fields(item, &["type", "id"])),
    }
}

/// `error.message`, or the error itself when it is a plain string.
fn error_text(e: &Value) -> String {
    snippet(e["message"].as_str().or(e.as_str()).unwrap_or("?"))
}

/// The fields not already shown, as compact JSON in one bounded line.
fn other_fields(v: &Value, skip: &[&str]) -> String {
    let rest: serde_json::Map<String, Value> = v
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if rest.is_empty() { String::new() } else { snippet(&Value::Object(rest).to_string()) }
}

/// Free text in one bounded line.
fn snippet(text: &str) -> String {
    clip(printable(text).split_whitespace().collect::<Vec<_>>().join(" ").as_str(), MAX_SNIPPET_CHARS)
}

/// A name or id: one short line.
fn word(text: &str) -> String {
    clip(&snippet(text), 80)
}

/// Printable, each line at most [`MAX_LINE_CHARS`], at most [`MAX_LINES`] lines; lines after
/// the first are indented, so an agent's text cannot start a line that passes for delegate's.
fn bound(text: &str) -> String {
    let clean = printable(text);
    let lines: Vec<&str> = clean.lines().collect();
    let mut out: Vec<String> = lines.iter().take(MAX_LINES).map(|l| clip(l, MAX_LINE_CHARS)).collect();
    if lines.len() > MAX_LINES {
        out.push(format!("… {} more lines (--raw shows them)", lines.len() - MAX_LINES));
    }
    out.join("\n  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<String> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/delegate-core/tests/fixtures/streams/");
        let bytes = std::fs::read(format!("{dir}{name}.jsonl")).unwrap();
        bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(render).collect()
    }

    #[test]
    fn logs_render_every_line_of_every_recorded_and_synthetic_stream() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/delegate-core/tests/fixtures/streams/");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "jsonl") {
                continue;
            }
            for line in std::fs::read(&path).unwrap().split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let shown = render(line);
                let is_typed_json = serde_json::from_slice::<Value>(line).is_ok_and(|v| v["type"].is_string());
                let at = format!("{}: {}", path.display(), String::from_utf8_lossy(line));
                // No raw JSON passes through, and nothing claims an unknown model.
                assert!(!(is_typed_json && shown.starts_with('{')), "{at}\n→ {shown}");
                assert!(!shown.contains("model ?") || shown.starts_with("[init]"), "{at}\n→ {shown}");
                for l in shown.lines() {
                    assert!(l.chars().count() <= MAX_LINE_CHARS, "{at}");
                    assert!(!l.chars().any(|c| c.is_control() && c != '\t'), "{at}");
                }
                seen += 1;
            }
        }
        assert!(seen > 50, "{seen}");
    }

    #[test]
    fn logs_render_claude_system_hook_denial_and_result_lines() {
        let lines = fixture("synthetic-claude-denied");
        assert_eq!(lines[0], "[hook] SessionStart SessionStart:startup started");
        assert_eq!(lines[1], "[hook] SessionStart SessionStart:startup success, exit 0: logger ready");
        assert_eq!(lines[2], "[init] model claude-opus-5-5, permission mode acceptEdits, 6 tools, claude 2.1.332");
        assert_eq!(lines[3], r#"→ Bash: "$DELEGATE_TASK_DIR/report" receipt "run the tests and fix the failure""#);
        assert_eq!(
            lines[4],
            r#"[permission denied] Bash: "$DELEGATE_TASK_DIR/report" receipt "run the tests and fix the failure" (A variable in this command can't be checked before it runs)"#
        );
        assert_eq!(lines[5], "← error: A variable in this command can't be checked before it runs");
        assert_eq!(lines[7], "← test result: ok. 12 passed; 0 failed");
        assert!(lines[8].starts_with(r#"[system:compact_boundary] {"compact_metadata":"#), "{}", lines[8]);
        assert_eq!(
            lines[10],
            "[result success, 3 turns, $0.0287, 1 permission denial] All 12 tests pass. I could not send the receipt: the report helper was refused."
        );
        let sandbox = fixture("synthetic-claude-sandbox-broken");
        assert_eq!(sandbox[4], "← error: Exit code 1 bwrap: setting up uid map: Permission denied");
        // Hook output is quoted as one bounded line, never dumped.
        let hook = format!(
            r#"{{"type":"system","subtype":"hook_response","hook_name":"PreToolUse:Bash","hook_event":"PreToolUse","exit_code":2,"outcome":"error","stdout":"{}","stderr":"blocked\n\u001b[31mby policy"}}"#,
            "x\\n".repeat(10_000)
        );
        assert_eq!(
            render(hook.as_bytes()),
            "[hook] PreToolUse PreToolUse:Bash error, exit 2: stderr: blocked by policy"
        );
        let odd = br#"{"type":"system","subtype":"status_change","status":"compacting","uuid":"u","session_id":"s"}"#;
        assert_eq!(render(odd), r#"[system:status_change] {"status":"compacting"}"#);
    }

    #[test]
    fn logs_render_every_codex_item_type() {
        let lines = fixture("synthetic-codex-items");
        let expected = [
            "[thread started] 0199b3c4-d5e6-7f80-9a1b-2c3d4e5f6a7b",
            "[turn started]",
            "[error, non-fatal] Falling back from WebSockets to HTTPS transport. stream disconnected before completion: connection reset",
            "[reasoning] **Planning the fix**\n  \n  The failing test is in src/lib.rs.",
            "",
            "",
            "",
            "$ bash -lc 'cargo test' → exit 101\n    test result: FAILED. 11 passed; 1 failed",
            "",
            "[mcp] docs.search failed: server not connected",
            "",
            "[web search] rust off-by-one range inclusive",
            "[edit] update /work/repo/src/lib.rs, add /work/repo/tests/edge.rs",
            "[plan] 1. fix the range\n  2. add an edge-case test",
            "[todo]\n    [x] Run the tests\n    [x] Fix the off-by-one",
            "Fixed the off-by-one in src/lib.rs and added tests/edge.rs; all 13 tests pass.",
            "[turn completed] tokens in 30112 (cached 28800), out 410",
        ];
        assert_eq!(lines, expected);
        assert_eq!(render(br#"{"type":"turn.failed","error":{"message":"HTTP 400"}}"#), "[turn failed] HTTP 400");
        assert_eq!(render(br#"{"type":"error","message":"Reconnecting... 2/5"}"#), "[error] Reconnecting... 2/5");
    }

    #[test]
    fn logs_strip_terminal_escapes_and_bound_lines() {
        let evil = br#"{"type":"item.completed","item":{"type":"agent_message","text":"ok\u001b]0;pwned\u0007 \u001b[2Jdone\r"}}"#;
        assert_eq!(render(evil), "ok done");
        let long =
            format!(r#"{{"type":"item.completed","item":{{"type":"agent_message","text":"{}"}}}}"#, "a".repeat(5000));
        assert_eq!(render(long.as_bytes()).chars().count(), MAX_LINE_CHARS);
        let many =
            format!(r#"{{"type":"item.completed","item":{{"type":"agent_message","text":"{}"}}}}"#, "l\\n".repeat(500));
        let shown = render(many.as_bytes());
        assert_eq!(shown.lines().count(), MAX_LINES + 1);
        assert!(shown.ends_with("… 440 more lines (--raw shows them)"), "{shown}");
        assert_eq!(render(b"plain \x1b[1mtext\x07"), "plain text");
    }
}
