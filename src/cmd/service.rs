//! `delegate service install|uninstall|status`: the dispatcher as a per-user service.
//!
//! Where `systemctl --user` works, a systemd user unit (`delegate-dispatch-<mailbox>.service`,
//! restarted on failure, started at login; at boot too once `loginctl enable-linger` is
//! set). Elsewhere a block in the user's crontab: `@reboot` and every minute a
//! `delegate dispatch --once`, between marker comments naming the mailbox, so install
//! replaces only that block and uninstall removes only it: every other line is kept byte
//! for byte. Neither holds a prompt: the dispatcher reads prompts from the mailbox.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use delegate_core::ops::dispatch::{DispatchLock, LOCK_FILE};
use serde::Serialize;

use crate::cli::ServiceCommand;

/// Which kind of service this machine gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Systemd,
    Crontab,
}

#[derive(Serialize)]
struct Status {
    kind: Kind,
    installed: bool,
    /// systemd: the unit is active. crontab: installed, and a dispatcher holds the lock now
    /// or started within the last three minutes (cron starts one every minute).
    running: bool,
    /// The pid of the dispatcher holding the mailbox's lock, if one does.
    dispatcher_pid: Option<String>,
    /// When a dispatcher last started (the lock file's time), RFC 3339.
    last_started: Option<String>,
    /// The unit file or the crontab's managed lines.
    detail: String,
}

pub fn run(config: Option<&Path>, command: ServiceCommand) -> Result<()> {
    let paths = crate::paths::resolve(config)?;
    let d = super::open(config)?;
    let mailbox = d.store().mailbox_id().to_string();
    let data_dir = paths.data_dir.clone();
    drop(d);
    let kind = kind();
    let unit = unit_path(&paths.home, &mailbox);
    match command {
        ServiceCommand::Install { interval } => {
            let argv = dispatcher_argv(config, &data_dir)?;
            match kind {
                Kind::Systemd => install_systemd(&unit, &argv, interval)?,
                Kind::Crontab => install_crontab(&mailbox, &argv, &data_dir)?,
            }
            println!("installed the dispatcher ({}) for mailbox {mailbox}", kind_name(kind));
            if kind == Kind::Systemd {
                println!("  to run it also while you are logged out: loginctl enable-linger");
            }
        }
        ServiceCommand::Uninstall => {
            let removed = match kind {
                Kind::Systemd => uninstall_systemd(&unit)?,
                Kind::Crontab => uninstall_crontab(&mailbox)?,
            };
            if removed {
                println!("uninstalled the dispatcher ({}) for mailbox {mailbox}", kind_name(kind));
            } else {
                println!("no dispatcher service was installed for mailbox {mailbox} ({})", kind_name(kind));
            }
        }
        ServiceCommand::Status { json } => {
            let s = status(kind, &unit, &mailbox, &data_dir)?;
            if json {
                return super::print_json(&s);
            }
            println!(
                "{} ({}): {}",
                if s.installed { "installed" } else { "not installed" },
                kind_name(kind),
                if s.running { "running" } else { "not running now" }
            );
            if let Some(pid) = &s.dispatcher_pid {
                println!("  dispatcher pid {pid}");
            }
            if let Some(at) = &s.last_started {
                println!("  last dispatcher start {at}");
            }
        }
    }
    Ok(())
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Systemd => "systemd user unit",
        Kind::Crontab => "crontab",
    }
}

/// systemd when `systemctl --user` answers, else crontab. Debug builds take
/// `DELEGATE_TEST_SERVICE=crontab|systemd` so tests choose.
fn kind() -> Kind {
    match crate::paths::test_var("DELEGATE_TEST_SERVICE").as_deref() {
        Some("crontab") => return Kind::Crontab,
        Some("systemd") => return Kind::Systemd,
        _ => {}
    }
    let works = Command::new("systemctl")
        .args(["--user", "show-environment"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works { Kind::Systemd } else { Kind::Crontab }
}

fn unit_name(mailbox: &str) -> String {
    format!("delegate-dispatch-{mailbox}.service")
}

fn unit_path(home: &Path, mailbox: &str) -> PathBuf {
    let config = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".config"));
    config.join("systemd/user").join(unit_name(mailbox))
}

/// The dispatcher's command line and environment: this binary, with the config and mailbox
/// this command used, so the service serves the same mailbox.
struct Argv {
    exe: PathBuf,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
}

fn dispatcher_argv(config: Option<&Path>, data_dir: &Path) -> Result<Argv> {
    let exe = std::env::current_exe().context("finding the delegate binary to install")?;
    let mut args = Vec::new();
    if let Some(c) = config {
        args.push("--config".to_string());
        args.push(absolute(c)?.to_string_lossy().into_owned());
    }
    args.push("dispatch".into());
    let mut env = vec![("DELEGATE_HOME", data_dir.to_string_lossy().into_owned())];
    if config.is_none()
        && let Some(c) = std::env::var_os("DELEGATE_CONFIG").filter(|v| !v.is_empty())
    {
        env.push(("DELEGATE_CONFIG", absolute(Path::new(&c))?.to_string_lossy().into_owned()));
    }
    if let Some(p) = std::env::var_os("PATH") {
        env.push(("PATH", p.to_string_lossy().into_owned()));
    }
    for value in std::iter::once(exe.to_string_lossy().into_owned())
        .chain(args.iter().cloned())
        .chain(env.iter().map(|(_, v)| v.clone()))
    {
        // cron turns % into a newline, and a newline would end the line.
        if value.contains(['%', '\n', '\r']) {
            bail!(
                "cannot install the dispatcher: {value:?} contains % or a line break, which a service line cannot carry; move it to a plain path"
            );
        }
    }
    Ok(Argv { exe, args, env })
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir().context("reading the current directory")?.join(p))
}

/// Single-quoted for sh (cron runs its lines with /bin/sh).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn systemctl(args: &[&str]) -> Result<std::process::Output> {
    let out = Command::new("systemctl")
        .arg("--user")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running systemctl --user")?;
    Ok(out)
}

fn install_systemd(unit: &Path, argv: &Argv, interval: Duration) -> Result<()> {
    // systemd unquotes ExecStart words itself: double quotes with backslash escapes.
    let q = |s: &str| format!("\"{}\"", s.replace('\\', r"\\").replace('"', "\\\""));
    let mut exec = q(&argv.exe.to_string_lossy());
    for a in argv.args.iter().map(String::as_str).chain(["--interval", &format!("{}s", interval.as_secs())]) {
        exec.push(' ');
        exec.push_str(&q(a));
    }
    let mut text = String::from(
        "# Installed by `delegate service install`; `delegate service uninstall` removes it.\n[Unit]\n\
         Description=delegate dispatcher (queued tasks, schedules)\n\n[Service]\n",
    );
    for (k, v) in &argv.env {
        text.push_str(&format!("Environment={}\n", q(&format!("{k}={v}"))));
    }
    text.push_str(&format!(
        "ExecStart={exec}\nRestart=on-failure\nRestartSec=30\n# 42: another dispatcher runs for this mailbox.\n\
         RestartPreventExitStatus=42\n\n[Install]\nWantedBy=default.target\n"
    ));
    std::fs::create_dir_all(unit.parent().expect("a directory"))
        .with_context(|| format!("creating {}", unit.display()))?;
    std::fs::write(unit, text).with_context(|| format!("writing {}", unit.display()))?;
    let name = unit.file_name().expect("a file name").to_string_lossy().into_owned();
    for step in [vec!["daemon-reload"], vec!["enable", "--now", &name], vec!["restart", &name]] {
        let out = systemctl(&step)?;
        if !out.status.success() {
            bail!(
                "systemctl --user {} failed: {}",
                step.join(" "),
                crate::term::safe(&String::from_utf8_lossy(&out.stderr))
            );
        }
    }
    Ok(())
}

fn uninstall_systemd(unit: &Path) -> Result<bool> {
    if !unit.exists() {
        return Ok(false);
    }
    let name = unit.file_name().expect("a file name").to_string_lossy().into_owned();
    let _ = systemctl(&["disable", "--now", &name])?;
    std::fs::remove_file(unit).with_context(|| format!("removing {}", unit.display()))?;
    let _ = systemctl(&["daemon-reload"]);
    Ok(true)
}

fn begin_marker(mailbox: &str) -> String {
    format!("# BEGIN delegate dispatcher {mailbox} (managed by `delegate service`; do not edit)")
}

fn end_marker(mailbox: &str) -> String {
    format!("# END delegate dispatcher {mailbox}")
}

/// The crontab program (`crontab`; debug builds take `DELEGATE_TEST_CRONTAB` so tests can
/// point it at a test user's crontab).
fn crontab() -> Command {
    Command::new(crate::paths::test_var("DELEGATE_TEST_CRONTAB").unwrap_or_else(|| "crontab".into()))
}

fn read_crontab() -> Result<String> {
    let out = crontab().arg("-l").stdin(Stdio::null()).output().context("running crontab -l (is cron installed?)")?;
    if out.status.success() {
        return String::from_utf8(out.stdout).context("the crontab is not UTF-8; edit it with crontab -e");
    }
    let err = String::from_utf8_lossy(&out.stderr);
    // "no crontab for USER": an empty one.
    if err.contains("no crontab") {
        return Ok(String::new());
    }
    bail!("crontab -l failed: {}", crate::term::safe(&err))
}

fn write_crontab(text: &str) -> Result<()> {
    let mut child = crontab()
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running crontab -")?;
    child.stdin.take().expect("piped").write_all(text.as_bytes()).context("writing the crontab")?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("crontab - refused the new crontab: {}", crate::term::safe(&String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

/// The crontab without this mailbox's block, and whether it had one.
fn without_block(text: &str, mailbox: &str) -> (String, bool) {
    without_lines(text, &begin_marker(mailbox), &end_marker(mailbox))
}

/// The crontab without the block between `begin` and `end`, and whether it had one.
fn without_lines(text: &str, begin: &str, end: &str) -> (String, bool) {
    let mut out = String::new();
    let mut inside = false;
    let mut found = false;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if bare == begin {
            inside = true;
            found = true;
        } else if inside && bare == end {
            inside = false;
        } else if !inside {
            out.push_str(line);
        }
    }
    (out, found)
}

fn install_crontab(mailbox: &str, argv: &Argv, data_dir: &Path) -> Result<()> {
    let (mut text, _) = without_block(&read_crontab()?, mailbox);
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let env: Vec<String> = argv.env.iter().map(|(k, v)| format!("{k}={}", sh_quote(v))).collect();
    let mut cmd = env.join(" ");
    cmd.push(' ');
    cmd.push_str(&sh_quote(&argv.exe.to_string_lossy()));
    for a in &argv.args {
        cmd.push(' ');
        cmd.push_str(&sh_quote(a));
    }
    let log = sh_quote(&data_dir.join("dispatch.log").to_string_lossy());
    text.push_str(&format!(
        "{}\n@reboot {cmd} --once >>{log} 2>&1\n* * * * * {cmd} --once >>{log} 2>&1\n{}\n",
        begin_marker(mailbox),
        end_marker(mailbox)
    ));
    write_crontab(&text)
}

fn uninstall_crontab(mailbox: &str) -> Result<bool> {
    let (text, found) = without_block(&read_crontab()?, mailbox);
    if found {
        write_crontab(&text)?;
    }
    Ok(found)
}

fn status(kind: Kind, unit: &Path, mailbox: &str, data_dir: &Path) -> Result<Status> {
    let dispatcher_pid = DispatchLock::holder(data_dir);
    let last_started = std::fs::metadata(data_dir.join(LOCK_FILE))
        .and_then(|m| m.modified())
        .ok()
        .map(|t| humantime::format_rfc3339_seconds(t).to_string());
    Ok(match kind {
        Kind::Systemd => {
            let name = unit.file_name().expect("a file name").to_string_lossy().into_owned();
            let active = systemctl(&["is-active", &name]).is_ok_and(|o| o.status.success());
            Status {
                kind,
                installed: unit.exists(),
                running: active,
                dispatcher_pid,
                last_started,
                detail: unit.display().to_string(),
            }
        }
        Kind::Crontab => {
            let text = read_crontab()?;
            let (_, installed) = without_block(&text, mailbox);
            let block: String = text
                .lines()
                .skip_while(|l| *l != begin_marker(mailbox))
                .take_while(|l| *l != end_marker(mailbox))
                .skip(1)
                .collect::<Vec<_>>()
                .join("\n");
            // cron starts a one-tick dispatcher every minute: it runs if one holds the lock
            // now or one started within the last three minutes.
            let recent = std::fs::metadata(data_dir.join(LOCK_FILE))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < Duration::from_secs(180));
            let running = dispatcher_pid.is_some() || (installed && recent);
            Status { kind, installed, running, dispatcher_pid, last_started, detail: block }
        }
    })
}

/// `delegate worker --install-service`: the worker as a per-user service, like the
/// dispatcher's. systemd: `delegate-worker-<id>.service`, restarted whenever it stops (a
/// server that is down now is no reason to give up). Crontab: `@reboot` and every minute
/// the same command under `flock -n` on the worker's lock file, so at most one runs and a
/// dead one is back within a minute. The credentials file is named by its path, never
/// copied into the unit or the crontab.
pub(crate) fn install_worker(args: &[String], id: &str, state_dir: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("finding the delegate binary to install")?;
    let mut env = Vec::new();
    if let Some(p) = std::env::var_os("PATH") {
        env.push(("PATH", p.to_string_lossy().into_owned()));
    }
    for value in std::iter::once(exe.to_string_lossy().into_owned())
        .chain(args.iter().cloned())
        .chain(env.iter().map(|(_, v)| v.clone()))
    {
        if value.contains(['%', '\n', '\r']) {
            bail!(
                "cannot install the worker: {value:?} contains % or a line break, which a service line cannot carry; move it to a plain path"
            );
        }
    }
    let argv = Argv { exe, args: args.to_vec(), env };
    let kind = kind();
    match kind {
        Kind::Systemd => {
            let home = std::env::var_os("HOME").map(PathBuf::from).context("HOME is not set")?;
            let config = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".config"));
            let unit = config.join("systemd/user").join(format!("delegate-worker-{id}.service"));
            install_worker_unit(&unit, &argv)?;
            println!("installed worker {id} as {} ({})", unit.display(), kind_name(kind));
            println!("  to run it also while you are logged out: loginctl enable-linger");
        }
        Kind::Crontab => {
            let (begin, end) = worker_markers(id);
            let (mut text, _) = without_lines(&read_crontab()?, &begin, &end);
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            let mut cmd: Vec<String> = argv.env.iter().map(|(k, v)| format!("{k}={}", sh_quote(v))).collect();
            cmd.push("flock -n".into());
            cmd.push(sh_quote(&state_dir.join("worker.lock").to_string_lossy()));
            cmd.push(sh_quote(&argv.exe.to_string_lossy()));
            cmd.extend(argv.args.iter().map(|a| sh_quote(a)));
            let cmd = cmd.join(" ");
            let log = sh_quote(&state_dir.join("worker.log").to_string_lossy());
            text.push_str(&format!("{begin}\n@reboot {cmd} >>{log} 2>&1\n* * * * * {cmd} >>{log} 2>&1\n{end}\n"));
            write_crontab(&text)?;
            println!("installed worker {id} in the crontab (log: {})", state_dir.join("worker.log").display());
        }
    }
    Ok(())
}

fn worker_markers(id: &str) -> (String, String) {
    (
        format!("# BEGIN delegate worker {id} (managed by `delegate worker --install-service`; do not edit)"),
        format!("# END delegate worker {id}"),
    )
}

fn install_worker_unit(unit: &Path, argv: &Argv) -> Result<()> {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', r"\\").replace('"', "\\\""));
    let mut exec = q(&argv.exe.to_string_lossy());
    for a in &argv.args {
        exec.push(' ');
        exec.push_str(&q(a));
    }
    let mut text = String::from(
        "# Installed by `delegate worker --install-service`.\n[Unit]\nDescription=delegate worker (tasks from a NATS server)\n\n[Service]\n",
    );
    for (k, v) in &argv.env {
        text.push_str(&format!("Environment={}\n", q(&format!("{k}={v}"))));
    }
    text.push_str(&format!("ExecStart={exec}\nRestart=always\nRestartSec=10\n\n[Install]\nWantedBy=default.target\n"));
    std::fs::create_dir_all(unit.parent().expect("a directory"))
        .with_context(|| format!("creating {}", unit.display()))?;
    std::fs::write(unit, text).with_context(|| format!("writing {}", unit.display()))?;
    let name = unit.file_name().expect("a file name").to_string_lossy().into_owned();
    for step in [vec!["daemon-reload"], vec!["enable", "--now", &name], vec!["restart", &name]] {
        let out = systemctl(&step)?;
        if !out.status.success() {
            bail!(
                "systemctl --user {} failed: {}",
                step.join(" "),
                crate::term::safe(&String::from_utf8_lossy(&out.stderr))
            );
        }
    }
    Ok(())
}
