//! `delegate brothers add|list|rm`.

use std::path::Path;

use anyhow::Result;
use delegate_core::hosts::inventory::{BrotherEntry, Inventory, InventoryEditor};

use crate::cli::BrothersCommand;

pub fn run(config: Option<&Path>, cmd: BrothersCommand) -> Result<()> {
    let paths = crate::paths::resolve(config)?;
    match cmd {
        BrothersCommand::Add(a) => {
            let a = *a;
            let entry = BrotherEntry {
                host: a.host,
                workdir: a.workdir,
                agent: a.agent,
                model: a.model,
                max_turns: a.max_turns,
                sandbox: a.sandbox,
                timeout: a.timeout,
                max_concurrent: a.max_concurrent,
                agent_path: a.agent_path,
                environment: a.environment,
                env_file: a.env_file,
                default_profile: a.default_profile,
                max_usd_per_day: None,
                over_cap: None,
                notify: None,
                usd_per_mtok: None,
                expect_change: None,
                worktree: None,
            };
            let mut ed = InventoryEditor::open(&paths.config_file)?;
            ed.set("brothers", &a.name, &entry)?;
            ed.save()?;
            println!("brother {} saved in {}", a.name, paths.config_file.display());
        }
        BrothersCommand::List { json } => {
            let inv = Inventory::load(&paths.config_file)?;
            if json {
                super::print_json(&inv.brothers)?;
            } else if inv.brothers.is_empty() {
                println!("no brothers in {}", paths.config_file.display());
            } else {
                println!("{:<14}  {:<12}  {:<10}  {:<8}  {:>5}  WORKDIR", "NAME", "HOST", "AGENT", "SANDBOX", "TURNS");
                for (name, b) in &inv.brothers {
                    println!(
                        "{:<14}  {:<12}  {:<10}  {:<8}  {:>5}  {}",
                        name, b.host, b.agent, b.sandbox, b.max_turns, b.workdir
                    );
                }
            }
        }
        BrothersCommand::Rm { name } => {
            let mut ed = InventoryEditor::open(&paths.config_file)?;
            if !ed.remove("brothers", &name) {
                let inv = Inventory::load(&paths.config_file)?;
                return Err(delegate_core::Error::UnknownBrother {
                    name,
                    known: inv.brothers.keys().cloned().collect(),
                }
                .into());
            }
            ed.save()?;
            println!("brother {name} removed");
        }
    }
    Ok(())
}
