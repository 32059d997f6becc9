//! `delegate run BROTHER PROMPT`: launch a task and say where it runs.

use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use delegate_core::{LaunchRequest, Task};

use super::{block_on, open};
use crate::cli::RunArgs;

pub fn run(config: Option<&Path>, args: RunArgs) -> Result<()> {
    let prompt = read_prompt(args.prompt.as_ref(), args.prompt_file.as_deref())?;
    let timeout = match &args.timeout {
        Some(t) => Some(delegate_core::config::parse_timeout(t).map_err(|m| anyhow::anyhow!("--timeout: {m}"))?),
        None => None,
    };
    let mut d = open(config)?;
    let req = LaunchRequest {
        brother: args.brother.clone(),
        prompt,
        subject: args.subject.clone(),
        workdir: args.workdir.clone(),
        max_turns: args.max_turns,
        sandbox: args.sandbox,
        agent: args.agent.clone(),
        model: args.model.clone(),
        timeout,
        author: args.author.clone(),
    };
    match block_on(d.launch(req)) {
        Ok(task) => {
            print_launched(&task, args.json)?;
            Ok(())
        }
        Err(e) => {
            // The failed task is in the mailbox; a JSON caller gets it on stdout too.
            if args.json
                && let Some(id) = e.task_id()
                && let Ok(task) = d.task(id)
            {
                println!("{}", serde_json::to_string_pretty(&task)?);
            }
            Err(e.into())
        }
    }
}

/// The prompt as bytes, exactly: from the argument, a file, or stdin (`-`).
pub fn read_prompt(prompt: Option<&std::ffi::OsString>, prompt_file: Option<&Path>) -> Result<Vec<u8>> {
    let from_stdin = || -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).context("reading the prompt from stdin")?;
        Ok(buf)
    };
    if let Some(path) = prompt_file {
        if path.as_os_str() == "-" {
            return from_stdin();
        }
        return std::fs::read(path).with_context(|| format!("reading the prompt file {}", path.display()));
    }
    match prompt {
        Some(p) if p == "-" => from_stdin(),
        Some(p) => Ok(p.clone().into_vec()),
        None => bail!("no prompt: give the task text as an argument, with --prompt-file PATH, or on stdin with '-'"),
    }
}

fn print_launched(task: &Task, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(task)?);
        return Ok(());
    }
    println!("launched task {} on {} (host {})", task.id, task.brother, task.host);
    if let Some(s) = &task.session {
        println!("  session  {s}");
    }
    println!("  subject  {}", task.subject);
    println!("  agent    {}, sandbox {}, max turns {}", task.agent, task.sandbox, task.max_turns);
    Ok(())
}
