//! `delegate schedule add|list|rm|logs|run|pause|resume`.

use std::path::Path;

use anyhow::Result;
use delegate_core::ops::schedule::{Fired, ScheduleRequest, ScheduleView};

use super::{block_on, open, print_json};
use crate::cli::ScheduleCommand;
use crate::term::safe;

pub fn run(config: Option<&Path>, command: ScheduleCommand) -> Result<()> {
    match command {
        ScheduleCommand::Add(args) => {
            // Read (and hidden from our argv) before anything else can fail.
            let prompt = super::run::read_prompt(&args.text)?;
            let mut d = open(config)?;
            let view = d.add_schedule(
                ScheduleRequest {
                    name: args.name.clone(),
                    spec: args.when.spec(),
                    tz: args.tz.clone(),
                    brother: args.brother.clone(),
                    profile: args.profile.clone(),
                    catch_up: args.catch_up,
                    prompt,
                    author: args.who.author.clone(),
                },
                crate::paths::now(),
            )?;
            if args.json {
                return print_json(&view);
            }
            println!("added schedule {}: {} ({}) on {}", view.row.name, view.row.spec, view.row.tz, view.row.brother);
            println!("  next     {}", view.next_fire_local.as_deref().unwrap_or("never"));
            println!("  catch-up {}", view.row.catch_up);
            println!("  fires only while a dispatcher runs: `delegate service install` (or `delegate dispatch`)");
        }
        ScheduleCommand::List { json } => {
            let d = open(config)?;
            let all = d.schedules()?;
            if json {
                return print_json(&all);
            }
            if all.is_empty() {
                println!("no schedules (add one with `delegate schedule add`)");
            }
            for s in &all {
                print_line(s);
            }
        }
        ScheduleCommand::Rm { name, who } => {
            open(config)?.remove_schedule(&name, who.author.as_deref())?;
            println!("removed schedule {name} (the tasks it started stay)");
        }
        ScheduleCommand::Logs { name, limit, json } => {
            let d = open(config)?;
            let firings = d.schedule_logs(&name, limit)?;
            let misfires = d.store().schedule_events(Some(&name), 0, limit)?;
            if json {
                return print_json(&serde_json::json!({ "firings": firings, "misfires": misfires }));
            }
            if firings.is_empty() && misfires.is_empty() {
                println!("schedule {name} has not fired yet");
            }
            for f in &firings {
                let task = match (f.task_id, &f.task_status) {
                    (Some(id), Some(st)) => format!("task {id} ({st})"),
                    (Some(id), None) => format!("task {id}"),
                    (None, _) => f.state.clone(),
                };
                let why = f.reason.as_deref().map(|r| format!(": {}", safe(r))).unwrap_or_default();
                println!("{}  {task}{why}", f.slot);
            }
            for m in misfires.iter().rev() {
                println!("{}  misfire: {}", m.at, safe(&m.reason));
            }
        }
        ScheduleCommand::Run { name, json, who } => {
            let mut d = open(config)?;
            let fired = block_on(d.run_schedule(&name, who.author.as_deref()))?;
            if json {
                print_json(&fired)?;
            } else {
                print_fired(&fired);
            }
            if let (None, Some(e)) = (fired.task_id, &fired.error) {
                anyhow::bail!("schedule {name} could not start a task: {}", safe(e));
            }
        }
        ScheduleCommand::Pause { name, who } => {
            let v = open(config)?.pause_schedule(&name, true, crate::paths::now(), who.author.as_deref())?;
            println!("paused schedule {} (`delegate schedule resume {}` to fire again)", v.row.name, v.row.name);
        }
        ScheduleCommand::Resume { name, who } => {
            let v = open(config)?.pause_schedule(&name, false, crate::paths::now(), who.author.as_deref())?;
            println!("resumed schedule {}; next {}", v.row.name, v.next_fire_local.as_deref().unwrap_or("never"));
        }
    }
    Ok(())
}

fn print_line(s: &ScheduleView) {
    let next = if s.row.paused { "paused".to_string() } else { s.next_fire_local.clone().unwrap_or("never".into()) };
    let last = match &s.last_fire {
        Some(f) => match f.task_id {
            Some(id) => format!("last {} task {id}", f.slot),
            None => format!("last {} {}", f.slot, f.state),
        },
        None => "never fired".into(),
    };
    println!("{:<20} {:<28} {:<16} next {next}; {last}", s.row.name, s.row.spec, s.row.brother);
}

pub(crate) fn print_fired(f: &Fired) {
    if f.slot.is_empty() {
        // Not a firing: a schedule the tick could not read.
        println!("schedule {} skipped: {}", f.schedule, safe(f.error.as_deref().unwrap_or("unknown")));
        return;
    }
    match (f.task_id, &f.error) {
        (Some(id), None) => {
            println!("schedule {} fired (slot {}): task {id} {}", f.schedule, f.slot, f.status.as_deref().unwrap_or(""))
        }
        (Some(id), Some(e)) => {
            println!("schedule {} fired (slot {}): task {id} failed: {}", f.schedule, f.slot, safe(e))
        }
        (None, e) => println!(
            "schedule {} (slot {}) could not start a task: {}",
            f.schedule,
            f.slot,
            safe(e.as_deref().unwrap_or("unknown"))
        ),
    }
}
