//! `delegate doctor [BROTHER...] [--json]`: what a launch needs, checked on each brother.
//! Exit 0 when every brother checked can launch, else exit::DOCTOR_FOUND_PROBLEMS.

use std::path::Path;

use anyhow::Result;
use delegate_core::ops::doctor::{BrotherReport, Status};

use super::{block_on, open};
use crate::cli::DoctorArgs;

pub fn run(config: Option<&Path>, args: DoctorArgs) -> Result<u8> {
    let d = open(config)?;
    let reports = block_on(d.doctor(&args.brothers))?;
    if args.json {
        super::print_json(&reports)?;
    } else if reports.is_empty() {
        println!(
            "no brothers in {}: add one with `delegate brothers add NAME --host HOST --workdir DIR`",
            d.paths().config_file.display()
        );
    } else {
        print_human(&reports);
    }
    Ok(if reports.iter().all(|r| r.can_launch) { crate::exit::OK } else { crate::exit::DOCTOR_FOUND_PROBLEMS })
}

fn print_human(reports: &[BrotherReport]) {
    for r in reports {
        let verdict = if r.can_launch { "can launch" } else { "CANNOT LAUNCH" };
        println!("{} ({} agent, sandbox {}) on {}: {verdict}", r.brother, r.agent, r.sandbox, r.host);
        for f in &r.findings {
            let mark = match f.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            // The library already dropped control characters; printing stays defensive.
            println!("  {mark}  {:<13} {}", f.check, printable(&f.detail));
            if f.status != Status::Ok
                && let Some(fix) = &f.fix
            {
                println!("        {:<13} fix: {}", "", printable(fix));
            }
        }
        println!();
    }
    let blocked: Vec<&str> = reports.iter().filter(|r| !r.can_launch).map(|r| r.brother.as_str()).collect();
    if blocked.is_empty() {
        println!("all {} brother(s) can launch", reports.len());
    } else {
        println!("{} of {} brother(s) cannot launch: {}", blocked.len(), reports.len(), blocked.join(", "));
    }
}

fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    crate::term::safe(s)
}
