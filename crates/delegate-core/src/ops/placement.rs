//! Environments: `--environment NAME` places a launch on the least loaded brother of the
//! group (fewest tasks in flight, ties by name) that has room under its caps (concurrency
//! and daily spend), and says why; `--all` sends it to each of them (a fan-out).
//!
//! Placing reads the mailbox and then launches: another lead can take the last slot in
//! between, and the task then queues on the brother chosen, as any launch over a cap does.

use crate::delegate::Delegate;
use crate::error::{Error, Result};

/// Where a launch goes, and why there.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub brother: String,
    /// Each brother's load and room, the chosen one first:
    /// `placed on oppy: 0 in flight, room; jerry: 2 in flight, full (brother jerry at max_concurrent 2)`.
    pub why: String,
}

pub(crate) fn place(d: &Delegate, environment: &str) -> Result<Placement> {
    let inv = d.inventory();
    let mut loads = Vec::new();
    for name in inv.environment_brothers(environment)? {
        let (b, _) = inv.brother(&name)?;
        let caps = crate::ops::launch::caps_for(d, &b.host, &name);
        loads.push((name.clone(), d.store().load(&b.host, &name, caps)?));
    }
    let describe = |(name, load): &(String, crate::mailbox::Load)| match &load.full {
        None => format!("{name}: {} in flight, room", load.in_flight),
        Some(why) => format!("{name}: {} in flight, full ({why})", load.in_flight),
    };
    // Fewest in flight first; environment_brothers gives names in order, and the sort is stable.
    let mut ranked: Vec<&(String, crate::mailbox::Load)> = loads.iter().collect();
    ranked.sort_by_key(|(_, l)| (l.full.is_some(), l.in_flight));
    let all: Vec<String> = ranked.iter().map(|x| describe(x)).collect();
    match ranked.first() {
        Some((name, load)) if load.full.is_none() => {
            Ok(Placement { brother: name.clone(), why: format!("placed on {}", all.join("; ")) })
        }
        _ => Err(Error::NoRoomInEnvironment { environment: environment.to_string(), why: all.join("; ") }),
    }
}

impl Delegate {
    /// The brother of `environment` a launch goes to now, and why; see [`crate::ops::placement`].
    pub fn place(&self, environment: &str) -> Result<Placement> {
        place(self, environment)
    }

    /// Every brother of `environment` (hosts stand for their brothers), sorted.
    pub fn environment_brothers(&self, environment: &str) -> Result<Vec<String>> {
        self.inventory().environment_brothers(environment)
    }
}
