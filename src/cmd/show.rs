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
    let view = d.show(args.id)?;
    if args.json {
        super::print_json(&view)?;
        return Ok(());
    }
    let task = &view.task;
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
    for item in &view.thread {
        let text: String = item.text.chars().filter(|c| *c == '\n' || !c.is_control()).collect();
        println!("  {}  {:<8} {}", item.at, item.kind, text.replace('\n', "\n                                      "));
    }
    Ok(())
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
