//! `delegate show N`: one task, its runs with their launch evidence, and its thread: the
//! prompts and the newest 200 items (`--all` for every one), so a task with a huge history
//! still shows at once.

use std::path::Path;

use anyhow::Result;
use delegate_core::agents::outcome::clip;
use delegate_core::mailbox::thread::{RunResult, SHOW_ITEMS, Window};
use serde_json::Value;

use super::open;
use crate::cli::ShowArgs;
use crate::term::{block, safe};

pub fn run(config: Option<&Path>, args: ShowArgs) -> Result<()> {
    let mut d = open(config)?;
    let task = d.task(args.id)?;
    if !args.no_sync && !task.status.is_terminal() {
        super::sync::before_showing(&mut d, Some(&[args.id]))?;
    }
    let window = if args.all { Window::All } else { Window::Newest(SHOW_ITEMS) };
    let mut view = d.show_window(args.id, window)?;
    // It reads the brother's workdir: `--no-sync` asks no brother anything.
    if !args.no_sync {
        view.done_without_evidence = super::block_on(d.done_without_evidence(args.id))?;
    }
    if args.json {
        super::print_json(&view)?;
        return Ok(());
    }
    let task = &view.task;
    println!("task {}  {}", task.id, task.status);
    if let (Some(note), Some(s)) = (super::sync::stale_note(task), &task.stale) {
        println!("  {note} (at {}); host {}: {}", s.last_heard_at, safe(&task.host), safe(&s.why));
    }
    if let Some(why) = &view.done_without_evidence {
        println!("  warning   {}", safe(why));
    }
    if let Some(r) = &task.reason {
        println!("  reason    {}", block(r, "            "));
    }
    if task.brother.is_empty() {
        println!("  brother   (none assigned: `delegate start {} --assign BROTHER`)", task.id);
    } else {
        println!("  brother   {} (host {})", safe(&task.brother), safe(&task.host));
    }
    let parent = task.parent.map(|p| format!(", part of task {p}")).unwrap_or_default();
    println!("  priority  {}{parent}", task.priority);
    println!("  subject   {}", safe(&task.subject));
    let model = task.model.as_deref().map(|m| format!(", model {}", safe(m))).unwrap_or_default();
    println!("  agent     {}{model}, sandbox {}, max turns {}", task.agent, task.sandbox, task.max_turns);
    if let Some(line) = settings_line(&task.settings) {
        println!("  settings  {line}");
    }
    println!("  workdir   {}", safe(&task.workdir));
    println!("  prompt    {} bytes, sha256 {}", task.prompt_bytes, task.prompt_sha256);
    println!("  created   {}   updated {}", task.created_at, task.updated_at);
    for run in &task.runs {
        println!("run {}  {}  session {}", run.run_no, run.status, safe(&run.session));
        println!("  address   {}", safe(&run.address));
        let ev = &run.evidence;
        let remote = &ev["remote"];
        if let Some(m) = &run.marker {
            println!("  marker    {}", safe(m));
        }
        if let Some(p) = run.pane_pid {
            println!("  pane pid  {p}");
        }
        if let Some(dir) = &run.remote_dir {
            println!("  task dir  {}", safe(dir));
        }
        if let Some(git) = delegate_core::ops::work_back::git_state_line(&run.evidence) {
            println!("  git       {}", safe(&git));
        }
        if let Some(argv) = ev["argv"].as_array().or(ev["agent_plan"]["argv"].as_array()) {
            let words: Vec<String> = argv.iter().map(|a| display_word(a.as_str().unwrap_or(""))).collect();
            println!("  argv      {}", words.join(" "));
        }
        if let Some(v) = remote["agent_version"].as_str() {
            println!("  agent     {} ({})", safe(remote["agent_path"].as_str().unwrap_or("?")), safe(v));
        }
        if let Some(v) = remote["tmux_version"].as_str() {
            println!("  tmux      {}", safe(v));
        }
        if let Some(s) = ev["agent_plan"]["effective_sandbox"].as_str() {
            println!(
                "  sandbox   {}; enforcement: {}",
                safe(s),
                safe(ev["agent_plan"]["enforcement"].as_str().unwrap_or("?"))
            );
        }
        if let Some(scope) = ev["agent_plan"]["write_scope"].as_array() {
            let paths: Vec<String> = scope.iter().map(|p| display_word(p.as_str().unwrap_or(""))).collect();
            let how = ev["agent_plan"]["write_scope_enforcement"].as_str().unwrap_or("?");
            println!("  scope     {}; {}", paths.join(" "), safe(how));
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
            println!("  error     {}", block(e, "            "));
        }
        if let Some(s) = &run.launch_stderr {
            println!("  stderr    {}", block(s.trim_end(), "            "));
        }
        if let Some(result) = view.results.iter().find(|r| r.run == run.run_no) {
            for line in result_lines(task.id, result) {
                println!("{line}");
            }
        }
    }
    if let Some(code) = task.exit_code {
        let turns = task.turns.map(|n| format!(", {n} turn{}", if n == 1 { "" } else { "s" })).unwrap_or_default();
        let cost = task.cost_usd.map(|c| format!(", ${c:.4}")).unwrap_or_default();
        println!("ended     exit {code}{turns}{cost}");
    }
    if let Some(text) = &view.final_text {
        println!("answer");
        println!("  {}", block(text, "  "));
    }
    if !view.children.is_empty() {
        println!("children  {} of {} done", view.children_done, view.children.len());
        for c in &view.children {
            println!("  {:<6} {:<14} {:<6} {}", c.id, c.status.as_str(), c.priority.as_str(), safe(&c.subject));
        }
    }
    println!("thread");
    // The note goes where the left-out items were: after the prompts that open the thread.
    let opening = view.thread.iter().take_while(|i| matches!(i.kind, "prompt" | "reopen")).count();
    for (n, item) in view.thread.iter().enumerate() {
        if n == opening && view.omitted.items() > 0 {
            println!("  … {} earlier items: `delegate show {} --all`", view.omitted.items(), task.id);
        }
        // `at` is the lead's clock; a text's own lines are indented under it.
        println!(
            "  {}  {:<8} {}",
            safe(&item.at),
            item.kind,
            block(&item.text, "                                      ")
        );
    }
    Ok(())
}

/// A run's denied tool calls and warnings, one printed line each. Tool names and inputs
/// come from the brother: made printable, and each cut to one bounded line.
fn result_lines(task: i64, r: &RunResult) -> Vec<String> {
    let one_line = |s: &str| clip(&safe(s), 300);
    let mut lines = Vec::new();
    if r.permission_denials > 0 {
        let calls = if r.permission_denials == 1 { "tool call" } else { "tool calls" };
        lines.push(format!("  denied    {} {calls}", r.permission_denials));
        for d in &r.denials {
            lines.push(format!("            {}: {}", one_line(&d.tool), one_line(&d.input)));
        }
        let unlisted = r.permission_denials as usize - r.denials.len().min(r.permission_denials as usize);
        if unlisted > 0 {
            lines.push(format!("            … and {unlisted} more (`delegate logs {task} --raw` has them all)"));
        }
    }
    for w in &r.warnings {
        lines.push(format!("  warning   {}", one_line(w)));
    }
    lines
}

/// Quotes a word for display when it would otherwise be ambiguous. Display only: nothing
/// built here is ever run.
pub fn display_word(w: &str) -> String {
    if !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@{}+".contains(&b)) {
        w.to_string()
    } else {
        format!("'{}'", safe(w).replace('\'', "'\\''"))
    }
}

/// Each setting the task runs with and where it came from: `model opus (profile deep),
/// max_turns 50 (brother oppy), ...`. None for tasks older than the record.
fn settings_line(settings: &Value) -> Option<String> {
    let map = settings.as_object().filter(|m| !m.is_empty())?;
    let parts: Vec<String> = map
        .iter()
        .map(|(name, s)| {
            let value = match &s["value"] {
                Value::String(v) => display_word(v),
                Value::Array(words) => {
                    let words: Vec<String> = words.iter().map(|w| display_word(w.as_str().unwrap_or(""))).collect();
                    format!("[{}]", words.join(" "))
                }
                other => safe(&other.to_string()).to_string(),
            };
            format!("{} {value} ({})", safe(name), safe(s["from"].as_str().unwrap_or("?")))
        })
        .collect();
    Some(parts.join(", "))
}

#[cfg(test)]
mod tests {
    use delegate_core::agents::outcome::Denial;
    use delegate_core::mailbox::thread::RunResult;

    #[test]
    fn show_lists_denials_and_warnings_on_clean_bounded_lines() {
        let denial = |tool: &str, input: &str| Denial { tool: tool.into(), input: input.into() };
        let r = RunResult {
            run: 1,
            final_text: Some("done".into()),
            permission_denials: 3,
            denials: vec![
                denial("Bash", "\"$DELEGATE_TASK_DIR/report\" receipt \"x\""),
                denial("We\u{1b}[2Jb", &"y".repeat(1000)),
            ],
            sandbox_failed: 1,
            warnings: vec![
                "1 tool call failed because the sandbox could not start on the brother: bwrap: \u{7}no".into(),
            ],
        };
        let lines = super::result_lines(7, &r);
        assert_eq!(lines[0], "  denied    3 tool calls");
        assert_eq!(lines[1], "            Bash: \"$DELEGATE_TASK_DIR/report\" receipt \"x\"");
        assert!(lines[2].starts_with("            Web: yyy") && lines[2].chars().count() < 330, "{}", lines[2]);
        assert_eq!(lines[3], "            … and 1 more (`delegate logs 7 --raw` has them all)");
        assert_eq!(
            lines[4],
            "  warning   1 tool call failed because the sandbox could not start on the brother: bwrap: no"
        );
        assert_eq!(lines.len(), 5);
        let quiet = RunResult { permission_denials: 0, denials: vec![], sandbox_failed: 0, warnings: vec![], ..r };
        assert!(super::result_lines(7, &quiet).is_empty());
    }
}
