//! `delegate hosts add|list|rm|trust`.

use std::path::Path;

use anyhow::Result;
use delegate_core::hosts::inventory::{HostEntry, Inventory, InventoryEditor, Transport};

use super::{block_on, open};
use crate::cli::HostsCommand;

pub fn run(config: Option<&Path>, cmd: HostsCommand) -> Result<()> {
    let paths = crate::paths::resolve(config)?;
    match cmd {
        HostsCommand::Add(a) => {
            let nats = a.nats.is_some();
            let entry = HostEntry {
                address: a.address.unwrap_or_default(),
                user: a.user,
                port: a.port,
                identity: a.identity,
                known_hosts: a.known_hosts,
                remote_root: a.remote_root,
                connect_timeout: a.connect_timeout,
                max_concurrent: a.max_concurrent,
                sync_deadline: a.sync_deadline,
                environment: a.environment,
                env_file: a.env_file,
                transport: nats.then_some(Transport::Nats),
                max_usd_per_day: None,
                over_cap: None,
                url: a.nats,
                creds: a.creds,
                worker_id: a.worker_id,
                task_ttl: a.task_ttl,
                launch_wait: None,
                protocol: a.agentbus.then_some(delegate_core::hosts::inventory::NatsProtocol::Agentbus),
            };
            let mut ed = InventoryEditor::open(&paths.config_file)?;
            ed.set("hosts", &a.name, &entry)?;
            ed.save()?;
            println!("host {} saved in {}", a.name, paths.config_file.display());
        }
        HostsCommand::List { json } => {
            let inv = Inventory::load(&paths.config_file)?;
            if json {
                super::print_json(&inv.hosts)?;
            } else if inv.hosts.is_empty() {
                println!("no hosts in {}", paths.config_file.display());
            } else {
                println!("{:<14}  {:<28}  {:<10}  {:>5}  REMOTE ROOT", "NAME", "ADDRESS", "USER", "PORT");
                for (name, h) in &inv.hosts {
                    println!(
                        "{:<14}  {:<28}  {:<10}  {:>5}  {}",
                        name,
                        match (&h.transport, &h.url) {
                            (Some(Transport::Nats), Some(url)) =>
                                format!("{url} worker {}", h.worker_id.as_deref().unwrap_or("-")),
                            _ => h.address.clone(),
                        },
                        h.user.as_deref().unwrap_or("-"),
                        h.port.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                        h.remote_root.as_deref().unwrap_or("~/.delegate")
                    );
                }
            }
        }
        HostsCommand::Rm { name } => {
            let mut ed = InventoryEditor::open(&paths.config_file)?;
            if !ed.remove("hosts", &name) {
                let inv = Inventory::load(&paths.config_file)?;
                return Err(
                    delegate_core::Error::UnknownHost { name, known: inv.hosts.keys().cloned().collect() }.into()
                );
            }
            ed.save()?;
            println!("host {name} removed");
        }
        HostsCommand::Trust(a) => {
            let d = open(config)?;
            let t = block_on(d.trust_host(&a.name, a.fingerprint.as_deref()))?;
            if a.json {
                super::print_json(&t)?;
            } else if t.added {
                println!(
                    "trusted {} key {} for {} in {}",
                    t.key_type,
                    t.fingerprint,
                    t.lookup,
                    t.known_hosts.display()
                );
            } else if a.fingerprint.is_some() {
                println!("{} key {} for {} was already trusted", t.key_type, t.fingerprint, t.lookup);
            } else {
                println!(
                    "{} ({}) presents {} key {}: {} in {}",
                    a.name,
                    t.lookup,
                    t.key_type,
                    t.fingerprint,
                    t.status,
                    t.known_hosts.display()
                );
                if t.status == "unknown" {
                    println!(
                        "if that is the host's real key, run: delegate hosts trust {} --fingerprint {}",
                        a.name, t.fingerprint
                    );
                }
            }
        }
    }
    Ok(())
}
