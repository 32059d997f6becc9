//! Embedding `delegate-core` in a Rust tool: launch one task on a brother, wait for it, and
//! print its outcome and its thread.
//!
//! ```text
//! embed --config <inventory.toml> --data <dir> --home <dir> [--user NAME]
//!       [--ssh-config FILE] [--agent-socket SOCKET] [--timeout SECS] <brother> <prompt>
//! ```
//!
//! The library reads no environment: every path comes from the command line here.
//! `--user` (default: the last component of `--home`) is the author of the task and the SSH
//! user for hosts that name none; `--ssh-config` defaults to `<home>/.ssh/config` (a missing
//! file is fine); without `--agent-socket` only identity files are tried. Exits 0 when the
//! task completed, 1 when it ended otherwise, could not be launched or did not finish within
//! `--timeout` (default 300 s), and 2 on bad usage.
//!
//! ```sh
//! cargo run -p delegate-core --example embed -- \
//!     --config ~/.config/delegate/config.toml --data ~/.local/share/delegate --home ~ \
//!     oppy "review the training config"
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use delegate_core::{Delegate, LaunchRequest, Paths};

const USAGE: &str = "usage: embed --config <inventory.toml> --data <dir> --home <dir> [--user NAME] \
                     [--ssh-config FILE] [--agent-socket SOCKET] [--timeout SECS] <brother> <prompt>";

struct Args {
    paths: Paths,
    timeout: Duration,
    brother: String,
    prompt: String,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut config, mut data, mut home, mut user, mut ssh_config, mut socket) = (None, None, None, None, None, None);
    let mut timeout = Duration::from_secs(300);
    let mut positional = Vec::new();
    while let Some(arg) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--config" => config = Some(PathBuf::from(value()?)),
            "--data" => data = Some(PathBuf::from(value()?)),
            "--home" => home = Some(PathBuf::from(value()?)),
            "--user" => user = Some(value()?),
            "--ssh-config" => ssh_config = Some(PathBuf::from(value()?)),
            "--agent-socket" => socket = Some(PathBuf::from(value()?)),
            "--timeout" => {
                let v = value()?;
                let secs: u64 = v.parse().map_err(|_| format!("--timeout takes whole seconds, not {v:?}"))?;
                timeout = Duration::from_secs(secs);
            }
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ => positional.push(arg),
        }
    }
    let [brother, prompt]: [String; 2] = positional
        .try_into()
        .map_err(|p: Vec<String>| format!("expected <brother> <prompt>, got {} arguments", p.len()))?;
    let home = home.ok_or("--home is required")?;
    let local_user = match user {
        Some(u) => u,
        None => home
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or("--user is required when --home has no last component")?,
    };
    let paths = Paths {
        config_file: config.ok_or("--config is required")?,
        data_dir: data.ok_or("--data is required")?,
        ssh_config: ssh_config.unwrap_or_else(|| home.join(".ssh/config")),
        home,
        local_user,
        agent_socket: socket,
    };
    Ok(Args { paths, timeout, brother, prompt })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("embed: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("embed: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Launches, waits and prints; true when the task completed.
async fn run(args: Args) -> Result<bool, delegate_core::Error> {
    let mut d = Delegate::open(args.paths)?;
    // `Ok` means the brother confirmed the start (or the task is `queued` behind a
    // concurrency cap); a refusal is an `Err` naming the task, which the mailbox keeps as
    // `failed` with the brother's reason.
    let task = d
        .launch(LaunchRequest { brother: args.brother, prompt: args.prompt.into_bytes(), ..Default::default() })
        .await?;
    println!(
        "task {} {} on {} (host {}), session {}",
        task.id,
        task.status,
        task.brother,
        task.host,
        task.session.as_deref().unwrap_or("-")
    );
    let waited = d.wait(&[task.id], Some(args.timeout), Duration::from_secs(1)).await?;
    for (host, e) in &waited.sync_errors {
        eprintln!("embed: warning: could not sync host {host}: {e}");
    }
    let view = d.show(task.id)?;
    let t = &view.task;
    let outcome =
        t.runs.last().and_then(|r| r.outcome.as_ref()).and_then(|o| o.get("outcome")).and_then(|o| o.as_str());
    if waited.pending.is_empty() {
        println!("task {}: {} (outcome {})", t.id, t.status, outcome.unwrap_or("unknown"));
    } else {
        println!("task {}: still {} after {:?}", t.id, t.status, args.timeout);
    }
    if let Some(reason) = &t.reason {
        println!("  reason   {reason}");
    }
    if let Some(turns) = t.turns {
        println!("  turns    {turns}");
    }
    println!("thread:");
    for item in &view.thread {
        // Messages name their author in the text; prompts and follow-ups do not.
        let by = match (item.kind, &item.author) {
            ("prompt" | "reopen", Some(a)) => format!(" by {a}"),
            _ => String::new(),
        };
        println!("  {} {}{by}: {}", item.at, item.kind, item.text.replace('\n', " "));
    }
    Ok(waited.all_completed())
}
