//! `delegate logs N [--follow]`: what the agent wrote so far, read from the brother.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::{block_on, open};
use crate::cli::LogsArgs;

pub fn run(config: Option<&Path>, args: LogsArgs) -> Result<()> {
    let mut d = open(config)?;
    let file = if args.stderr { "stderr.log" } else { "stream.jsonl" };
    let mut offset = 0u64;
    let mut pending = Vec::new();
    loop {
        let (chunk, report) = block_on(d.read_remote(args.id, file, offset))?;
        offset = chunk.next_offset;
        pending.extend_from_slice(&chunk.bytes);
        let mut out = std::io::stdout().lock();
        // Render complete lines; keep a partial last line for the next read.
        let cut = pending.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
        for line in pending[..cut].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let shown = if args.raw || args.stderr { String::from_utf8_lossy(line).into_owned() } else { render(line) };
            if !shown.is_empty() && writeln!(out, "{shown}").is_err() {
                return Ok(());
            }
        }
        pending.drain(..cut);
        let _ = out.flush();
        let finished = report.deltas.iter().any(|d| d.file == "exit") || !report.session_alive;
        if !args.follow || (finished && chunk.bytes.is_empty()) {
            if !pending.is_empty() {
                println!("{}", String::from_utf8_lossy(&pending));
            }
            if args.follow {
                // Let the mailbox learn how it ended.
                let _ = block_on(d.sync(Some(&[args.id])));
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
}

/// One stream line as a person would like to read it; unknown lines pass through.
fn render(line: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
        return String::from_utf8_lossy(line).into_owned();
    };
    let clean = |s: &str| s.chars().filter(|c| *c == '\n' || *c == '\t' || !c.is_control()).collect::<String>();
    match v["type"].as_str().unwrap_or("") {
        "system" => {
            format!("[{}] model {}", v["subtype"].as_str().unwrap_or("system"), v["model"].as_str().unwrap_or("?"))
        }
        "assistant" => v["message"]["content"]
            .as_array()
            .map(|blocks| {
                blocks
                    .iter()
                    .filter_map(|b| match b["type"].as_str() {
                        Some("text") => b["text"].as_str().map(clean),
                        Some("tool_use") => Some(format!("→ {}", b["name"].as_str().unwrap_or("tool"))),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default(),
        "user" => String::new(),
        "result" => format!(
            "[result {}{}] {}",
            v["subtype"].as_str().unwrap_or("?"),
            if v["is_error"].as_bool() == Some(true) { ", error" } else { "" },
            clean(v["result"].as_str().unwrap_or(""))
        ),
        "item.completed" => match v["item"]["type"].as_str() {
            Some("agent_message") => clean(v["item"]["text"].as_str().unwrap_or("")),
            Some("command_execution") => format!("→ {}", clean(v["item"]["command"].as_str().unwrap_or(""))),
            Some(other) => format!("[{other}]"),
            None => String::new(),
        },
        "thread.started" | "turn.started" | "turn.completed" | "item.started" | "item.updated" => String::new(),
        "turn.failed" => format!("[turn failed] {}", clean(v["error"]["message"].as_str().unwrap_or(""))),
        "error" => format!("[error] {}", clean(v["message"].as_str().unwrap_or(""))),
        _ => String::from_utf8_lossy(line).into_owned(),
    }
}
