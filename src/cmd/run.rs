//! `delegate run BROTHER PROMPT`: launch a task and say where it runs.

use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use delegate_core::{LaunchRequest, Task};

use super::{block_on, open};
use crate::cli::{PromptArgs, RunArgs};
use crate::term::{block, safe};

pub fn run(config: Option<&Path>, mut args: RunArgs) -> Result<()> {
    let named = match &args.environment {
        None => Some(brothers(&mut args)?),
        Some(_) => {
            prompt_first(&mut args)?;
            None
        }
    };
    let prompt = read_prompt(&args.text)?;
    let mut d = open(config)?;
    let (brothers, placement) = match (&args.environment, named) {
        (Some(e), _) if args.all => (d.environment_brothers(e)?, Some("--all: every brother in it".to_string())),
        (Some(e), _) => {
            let p = d.place(e)?;
            (vec![p.brother], Some(p.why))
        }
        (None, names) => (names.unwrap_or_default(), None),
    };
    if let (Some(e), Some(why), false) = (&args.environment, &placement, args.json) {
        println!("environment {}: {}", safe(e), safe(why));
    }
    let reqs: Vec<LaunchRequest> = brothers
        .iter()
        .map(|b| LaunchRequest {
            brother: b.clone(),
            prompt: prompt.clone(),
            subject: args.subject.clone(),
            workdir: args.workdir.clone(),
            max_turns: args.max_turns,
            sandbox: args.sandbox,
            agent: args.agent.clone(),
            model: args.model.clone(),
            timeout: args.timeout,
            author: args.who.author.clone(),
            profile: args.profile.clone(),
            worktree: args.worktree.then_some(true),
            environment: args.environment.clone(),
            placement: placement.clone(),
            reasoning_effort: args.reasoning_effort,
            max_budget_usd: args.max_budget_usd,
            extra_args: args.args_json.clone().map(|a| a.0),
            priority: args.board.priority,
            parent: args.board.parent,
            notify: args.notify.clone().unwrap_or_default(),
        })
        .collect();
    let mut results = block_on(d.launch_many(reqs));
    if results.len() == 1 {
        return match results.pop().expect("one result") {
            Ok(task) => print_launched(&task, args.json),
            Err(e) => super::fail_with_task(&d, e, args.json),
        };
    }
    print_fan_out(&d, &brothers, results, args.json)
}

/// The brothers named by the first argument (comma-separated) and by `--to`; with `--to`,
/// the first argument is the prompt.
fn brothers(args: &mut RunArgs) -> Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    if args.to.is_empty() {
        names.extend(args.brother.split(',').map(str::to_string));
    } else {
        if args.text.prompt.is_some() {
            return Err(usage(
                "give the brothers either as the first argument (`delegate oppy,jerry PROMPT`) or with --to \
                 (`delegate run --to oppy --to jerry PROMPT`), not both",
            ));
        }
        args.text.prompt = Some(std::mem::take(&mut args.brother).into());
        for t in &args.to {
            names.extend(t.split(',').map(str::to_string));
        }
    }
    if let Some(empty) = names.iter().position(|n| n.trim().is_empty()) {
        return Err(usage(&format!(
            "brother {} of {:?} is empty: separate names with single commas",
            empty + 1,
            names.join(",")
        )));
    }
    Ok(names)
}

/// With --environment the first argument is the prompt (the environment picks the brother).
fn prompt_first(args: &mut RunArgs) -> Result<()> {
    if args.text.prompt.is_some() {
        return Err(usage(
            "with --environment, give only the prompt: `delegate --environment dev \"run the tests\"` \
             (the environment picks the brother)",
        ));
    }
    args.text.prompt = Some(std::mem::take(&mut args.brother).into());
    Ok(())
}

/// A command-line mistake: exit 2, like clap's own.
fn usage(message: &str) -> anyhow::Error {
    clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{message}\n")).into()
}

/// Several brothers: a line per brother (or one JSON object), then the first error, if
/// any, decides the exit code. Every task started or queued is listed either way.
fn print_fan_out(
    d: &delegate_core::Delegate,
    brothers: &[String],
    results: Vec<delegate_core::error::Result<Task>>,
    json: bool,
) -> Result<()> {
    let mut tasks = Vec::new();
    let mut errors = Vec::new();
    let mut first_error = None;
    for (brother, r) in brothers.iter().zip(results) {
        match r {
            Ok(task) => tasks.push(task),
            Err(e) => {
                let task = e.task_id().and_then(|id| d.task(id).ok());
                errors.push(serde_json::json!({
                    "brother": brother,
                    "task": task.as_ref().map(|t| t.id),
                    "error": e.to_string(),
                }));
                if let Some(t) = task {
                    tasks.push(t);
                }
                first_error.get_or_insert(e);
            }
        }
    }
    if json {
        super::print_json(&serde_json::json!({ "tasks": tasks, "errors": errors }))?;
    } else {
        for t in &tasks {
            let reason = t.reason.as_deref().map(|r| format!(": {}", safe(r))).unwrap_or_default();
            println!("{:<9} task {} on {} (host {}){}", t.status.as_str(), t.id, t.brother, t.host, reason);
        }
        for e in &errors {
            if e["task"].is_null() {
                println!(
                    "{:<9} {}: {}",
                    "refused",
                    safe(e["brother"].as_str().unwrap_or("")),
                    block(e["error"].as_str().unwrap_or(""), "          ")
                );
            }
        }
        let ids: Vec<String> = tasks.iter().map(|t| t.id.to_string()).collect();
        if !ids.is_empty() {
            println!("collect the outcomes with: delegate wait {}", ids.join(" "));
        }
    }
    match first_error {
        Some(e) if errors.len() > 1 => {
            Err(anyhow::Error::new(e).context(format!("{} of {} launches failed", errors.len(), brothers.len())))
        }
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// The prompt as bytes, exactly: from the argument, a file, or stdin (`-`).
pub fn read_prompt(text: &PromptArgs) -> Result<Vec<u8>> {
    let (prompt, prompt_file) = (text.prompt.as_ref(), text.prompt_file.as_deref());
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
        Some(p) => {
            // Parsed, so other processes need not see it in our argv any longer.
            crate::hide_arg::hide(p);
            Ok(p.clone().into_vec())
        }
        None => bail!("no prompt: give the task text as an argument, with --prompt-file PATH, or on stdin with '-'"),
    }
}

pub(crate) fn print_launched(task: &Task, json: bool) -> Result<()> {
    if json {
        super::print_json(task)?;
        return Ok(());
    }
    if task.status == delegate_core::TaskStatus::Queued {
        println!("queued task {} on {} (host {})", task.id, task.brother, task.host);
        match &task.reason {
            // A daily spend cap: the reason names it and the figures.
            Some(reason) => println!("  waiting  {}", safe(reason)),
            None => {
                println!("  waiting  for a slot under the host's or brother's max_concurrent; the next");
                println!("           delegate sync, wait, status or list that finds one free starts it");
            }
        }
    } else {
        println!("launched task {} on {} (host {})", task.id, task.brother, task.host);
    }
    if let Some(s) = &task.session {
        println!("  session  {s}");
    }
    println!("  subject  {}", safe(&task.subject));
    println!("  agent    {}, sandbox {}, max turns {}", task.agent, task.sandbox, task.max_turns);
    Ok(())
}
