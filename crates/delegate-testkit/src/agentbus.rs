//! The real `agentbus` CLI (PyPI, pinned in scripts/agent-versions.env) for the NATS interop
//! tests: scripts/install-agentbus.sh installs it into a venv and scripts/test.sh sets
//! `DELEGATE_TEST_AGENTBUS_BIN` to that venv's bin/. Without it the tests say so and pass,
//! except under CI, where agentbus is required.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The directory holding the `agentbus` executable, or `None` (after saying so) outside CI.
pub fn agentbus_bin() -> Option<PathBuf> {
    match std::env::var_os("DELEGATE_TEST_AGENTBUS_BIN") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            assert!(dir.join("agentbus").exists(), "DELEGATE_TEST_AGENTBUS_BIN={} holds no agentbus", dir.display());
            Some(dir)
        }
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "DELEGATE_TEST_AGENTBUS_BIN is unset under CI: run the suite with scripts/test.sh, which installs agentbus"
            );
            eprintln!("skipped: DELEGATE_TEST_AGENTBUS_BIN is unset (scripts/test.sh installs agentbus and sets it)");
            None
        }
    }
}

/// Runs `agentbus ARGS` and returns its stdout; panics with its stderr when it fails.
pub fn run(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin.join("agentbus")).args(args).stdin(Stdio::null()).output().expect("run agentbus");
    assert!(
        out.status.success(),
        "agentbus {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `agentbus result get --agent AGENT --limit LIMIT`: the stored results, oldest first.
pub fn results(bin: &Path, url: &str, agent: &str, limit: usize) -> Vec<serde_json::Value> {
    run(bin, &["result", "get", "--server-url", url, "--agent", agent, "--limit", &limit.to_string()])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("agentbus printed {l:?}: {e}")))
        .collect()
}
