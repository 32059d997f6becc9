//! `delegate show N`: one task, its runs with their launch evidence, and its history.

use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use super::open;
use crate::cli::ShowArgs;

pub fn run(config: Option<&Path>, args: ShowArgs) -> Result<()> {
    let mut d = open(config)?;
    let task = d.task(args.id)?;
    if !args.no_sync && !task.status.is_terminal() {
        super::sync::before_showing(&mut d, Some(&[args.id]))?;
    }
    let task = d.task(args.id)?;
    let messages = d.store().messages(args.id)?;
    let events = d.store().events(args.id)?;
    let history = d.store().transitions(args.id)?;
    if args.json {
        let mut v = serde_json::to_value(&task)?;
        v["history"] = serde_json::to_value(&history)?;
        v["messages"] = serde_json::to_value(&messages)?;
        v["events"] = serde_json::to_value(&events)?;
        v["thread"] = serde_json::to_value(thread(&d, &task, &history, &messages, &events)?)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("task {}  {}", task.id, task.status);
    if let Some(r) = &task.reason {
        println!("  reason    {r}");
    }
    println!("  brother   {} (host {})", task.brother, task.host);
    println!("  subject   {}", task.subject);
    let model = task.model.as_deref().map(|m| format!(", model {m}")).unwrap_or_default();
    println!("  agent     {}{model}, sandbox {}, max turns {}", task.agent, task.sandbox, task.max_turns);
    println!("  workdir   {}", task.workdir);
    println!("  prompt    {} bytes, sha256 {}", task.prompt_bytes, task.prompt_sha256);
    println!("  created   {}   updated {}", task.created_at, task.updated_at);
    for run in &task.runs {
        println!("run {}  {}  session {}", run.run_no, run.status, run.session);
        println!("  address   {}", run.address);
        let ev = &run.evidence;
        let remote = &ev["remote"];
        if let Some(m) = &run.marker {
            println!("  marker    {m}");
        }
        if let Some(p) = run.pane_pid {
            println!("  pane pid  {p}");
        }
        if let Some(dir) = &run.remote_dir {
            println!("  task dir  {dir}");
        }
        if let Some(argv) = ev["argv"].as_array().or(ev["agent_plan"]["argv"].as_array()) {
            let words: Vec<String> = argv.iter().map(|a| display_word(a.as_str().unwrap_or(""))).collect();
            println!("  argv      {}", words.join(" "));
        }
        if let Some(v) = remote["agent_version"].as_str() {
            println!("  agent     {} ({v})", remote["agent_path"].as_str().unwrap_or("?"));
        }
        if let Some(v) = remote["tmux_version"].as_str() {
            println!("  tmux      {v}");
        }
        if let Some(s) = ev["agent_plan"]["effective_sandbox"].as_str() {
            println!("  sandbox   {s}; enforcement: {}", ev["agent_plan"]["enforcement"].as_str().unwrap_or("?"));
        }
        if let Some(scope) = ev["agent_plan"]["write_scope"].as_array() {
            let paths: Vec<String> = scope.iter().map(|p| display_word(p.as_str().unwrap_or(""))).collect();
            let how = ev["agent_plan"]["write_scope_enforcement"].as_str().unwrap_or("?");
            println!("  scope     {}; {how}", paths.join(" "));
        }
        if let Some(t) = ev["timings"].as_object() {
            let parts: Vec<String> = ["tcp_ms", "handshake_ms", "auth_ms", "exec_ms", "total_ms"]
                .iter()
                .filter_map(|k| {
                    t.get(*k).and_then(Value::as_f64).map(|v| format!("{} {v} ms", k.trim_end_matches("_ms")))
                })
                .collect();
            println!("  timings   {}", parts.join(", "));
        }
        if let Some(code) = run.launch_exit {
            println!("  exit      {code} (launch script)");
        }
        if let Some(e) = &run.error {
            println!("  error     {e}");
        }
        if let Some(s) = &run.launch_stderr {
            println!("  stderr    {}", s.trim_end().replace('\n', "\n            "));
        }
    }
    if let Some(code) = task.exit_code {
        let turns = task.turns.map(|n| format!(", {n} turn{}", if n == 1 { "" } else { "s" })).unwrap_or_default();
        let cost = task.cost_usd.map(|c| format!(", ${c:.4}")).unwrap_or_default();
        println!("ended     exit {code}{turns}{cost}");
    }
    println!("thread");
    for item in thread(&d, &task, &history, &messages, &events)? {
        let text: String = item.text.chars().filter(|c| *c == '\n' || !c.is_control()).collect();
        println!("  {}  {:<8} {}", item.at, item.kind, text.replace('\n', "\n                                      "));
    }
    Ok(())
}

/// One line of a task's thread: the prompt and follow-ups, every message both ways, status
/// changes and agent events, in the order they happened.
#[derive(serde::Serialize)]
struct ThreadItem {
    at: String,
    kind: &'static str,
    run: Option<i64>,
    author: Option<String>,
    text: String,
}

fn thread(
    d: &delegate_core::Delegate,
    task: &delegate_core::Task,
    history: &[delegate_core::store::Transition],
    messages: &[delegate_core::store::Message],
    events: &[delegate_core::store::Event],
) -> anyhow::Result<Vec<ThreadItem>> {
    let preview = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let mut cut: String = text.chars().take(500).collect();
        if text.chars().count() > 500 {
            cut.push_str(" …");
        }
        cut
    };
    let mut items = Vec::new();
    for run in &task.runs {
        let prompt =
            if run.run_no == 1 { d.store().prompt(task.id)? } else { d.store().run_prompt(task.id, run.run_no)? };
        items.push(ThreadItem {
            at: run.started_at.clone(),
            kind: if run.run_no == 1 { "prompt" } else { "reopen" },
            run: Some(run.run_no),
            author: run.author.clone(),
            text: preview(&prompt),
        });
    }
    for t in history {
        let text = match &t.reason {
            Some(r) => format!("{} ({r})", t.to),
            None => t.to.clone(),
        };
        items.push(ThreadItem { at: t.at.clone(), kind: "status", run: None, author: None, text });
    }
    for m in messages {
        let (kind, mut text) = match m.direction.as_str() {
            "to_brother" => ("said", format!("{} → {}: {}", m.author, task.brother, m.text)),
            "note" => ("note", format!("{} ({}): {}", m.author, m.kind, m.text)),
            _ => ("reported", format!("{} ({}): {}", m.author, m.kind, m.text)),
        };
        if m.direction == "to_brother" {
            let state = match (&m.read_at, &m.delivered_at) {
                (Some(r), _) => format!(" [read {r}]"),
                (None, Some(dl)) => format!(" [delivered {dl}]"),
                (None, None) => " [sent]".into(),
            };
            text.push_str(&state);
        }
        items.push(ThreadItem { at: m.at.clone(), kind, run: Some(m.run_no), author: Some(m.author.clone()), text });
    }
    for e in events {
        let text = if e.summary.is_empty() { e.kind.clone() } else { format!("{} {}", e.kind, e.summary) };
        items.push(ThreadItem { at: e.at.clone(), kind: "event", run: Some(e.run_no), author: None, text });
    }
    items.sort_by(|a, b| a.at.cmp(&b.at));
    Ok(items)
}

/// Quotes a word for display when it would otherwise be ambiguous. Display only: nothing
/// built here is ever run.
pub fn display_word(w: &str) -> String {
    if !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@{}+".contains(&b)) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}
