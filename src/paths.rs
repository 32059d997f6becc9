//! The only code that reads environment variables or `$HOME`: it turns them into the plain
//! [`Paths`] the library takes.
//!
//! - config: `--config`, else `DELEGATE_CONFIG`, else `$XDG_CONFIG_HOME/delegate/config.toml`,
//!   else `~/.config/delegate/config.toml`
//! - mailbox: `DELEGATE_HOME`, else `$XDG_DATA_HOME/delegate`, else `~/.local/share/delegate`
//! - ssh: `~/.ssh/config`, and the agent at `SSH_AUTH_SOCK`
//! - `DELEGATE_AGENT_ID`: who is asking, when `--as` (MCP: `as`) names nobody
//! - a webhook's token variable (`webhook_token_env`), read when a notification is sent
//! - `DELEGATE_LAUNCH_GRACE` (e.g. `30s`): how long sync leaves an unconfirmed launch alone
//! - debug (test) builds only: `DELEGATE_TEST_NOW` (the schedules' clock),
//!   `DELEGATE_TEST_CRONTAB` and `DELEGATE_TEST_SERVICE` (`delegate service`'s crontab program
//!   and kind); `DELEGATE_TEST_STOP_AT=<phase>` stops the process at that
//!   phase of a launch (see [`stop_at`]), so tests can kill it at an exact point

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use delegate_core::Paths;

fn var(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// Webhook tokens named by `webhook_token_env` are read from delegate's own environment,
/// when a notification is sent (never stored).
pub fn env_lookup() -> delegate_core::notify::deliver::EnvLookup {
    std::sync::Arc::new(|name: &str| std::env::var(name).ok())
}

pub fn resolve(config_flag: Option<&Path>) -> Result<Paths> {
    let home =
        var("HOME").map(PathBuf::from).context("HOME is not set: delegate needs it to find ~/.ssh and its files")?;
    let config_file = match config_flag {
        Some(p) => p.to_path_buf(),
        None => match var("DELEGATE_CONFIG") {
            Some(p) => PathBuf::from(p),
            None => var("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".config"))
                .join("delegate/config.toml"),
        },
    };
    let data_dir = match var("DELEGATE_HOME") {
        Some(p) => PathBuf::from(p),
        None => var("XDG_DATA_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".local/share")).join("delegate"),
    };
    let local_user = var("USER")
        .or_else(|| var("LOGNAME"))
        .map(|u| u.to_string_lossy().into_owned())
        .or_else(user_from_passwd)
        .context("cannot tell the local user name: set USER")?;
    Ok(Paths {
        config_file,
        data_dir,
        ssh_config: home.join(".ssh/config"),
        home,
        local_user,
        agent_socket: var("SSH_AUTH_SOCK").map(PathBuf::from),
    })
}

/// `DELEGATE_AGENT_ID`, if set: who is asking when a command names nobody with `--as` (the
/// CLI reads it through clap; the MCP server through this).
pub fn agent_id() -> Option<String> {
    var("DELEGATE_AGENT_ID").map(|v| v.to_string_lossy().into_owned())
}

/// `DELEGATE_RESIDENT`: `0`, `off`, `no` or `false` turns the resident brother shell off
/// (every script an exec of its own); anything else, or unset, keeps it.
pub fn resident() -> bool {
    !var("DELEGATE_RESIDENT").is_some_and(|v| {
        matches!(v.to_string_lossy().trim().to_ascii_lowercase().as_str(), "0" | "off" | "no" | "false")
    })
}

/// `DELEGATE_LAUNCH_GRACE`, if set.
pub fn launch_grace() -> Result<Option<std::time::Duration>> {
    let Some(v) = var("DELEGATE_LAUNCH_GRACE") else { return Ok(None) };
    let text = v.to_string_lossy();
    let d = humantime::parse_duration(&text)
        .map_err(|_| anyhow::anyhow!("DELEGATE_LAUNCH_GRACE={text:?} is not a duration: use e.g. 30s or 3m"))?;
    Ok(Some(d))
}

/// Test builds only (`debug_assertions`): the launch phase named by
/// `DELEGATE_TEST_STOP_AT` (`recorded`: task rows committed, nothing sent; `answered`: the
/// brother replied, nothing recorded yet). At that phase the process writes the phase name
/// to `DELEGATE_TEST_STOP_FILE` and sleeps until killed, or, with `DELEGATE_TEST_RESUME_FILE`,
/// until that file exists and then goes on (so a test can race another command against an
/// exact point of a launch). Release builds never stop.
pub fn stop_at() -> Option<StopAt> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let phase = var("DELEGATE_TEST_STOP_AT")?.to_string_lossy().into_owned();
    Some(StopAt {
        phase,
        file: var("DELEGATE_TEST_STOP_FILE").map(PathBuf::from),
        resume: var("DELEGATE_TEST_RESUME_FILE").map(PathBuf::from),
    })
}

/// A variable tests set to steer this build (debug builds only; release builds ignore it).
pub fn test_var(name: &str) -> Option<String> {
    if !cfg!(debug_assertions) {
        return None;
    }
    var(name).map(|v| v.to_string_lossy().into_owned())
}

/// The clock schedules are decided by: now, or in debug builds `DELEGATE_TEST_NOW` (an RFC
/// 3339 time), so tests step it without sleeping.
pub fn now() -> delegate_core::schedule::Timestamp {
    test_var("DELEGATE_TEST_NOW").and_then(|t| t.parse().ok()).unwrap_or_else(delegate_core::schedule::Timestamp::now)
}

/// See [`stop_at`].
pub struct StopAt {
    pub phase: String,
    pub file: Option<PathBuf>,
    pub resume: Option<PathBuf>,
}

fn user_from_passwd() -> Option<String> {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy out at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr((*pw).pw_name);
        Some(name.to_string_lossy().into_owned())
    }
}
