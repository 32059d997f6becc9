//! Every shell file in the repo passes shellcheck (bash dialect): the launch and run scripts
//! travel to brothers we do not control, and the scripts are what newcomers run first.

use std::path::Path;
use std::process::Command;

#[test]
fn all_shell_scripts_pass_shellcheck() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = [
        "crates/delegate-core/src/remote/scripts/launch.sh",
        "crates/delegate-core/src/remote/scripts/agent-env.sh",
        "crates/delegate-core/src/remote/scripts/doctor.sh",
        "crates/delegate-core/src/remote/scripts/run.sh",
        "crates/delegate-core/src/remote/scripts/self-test-agent.sh",
        "crates/delegate-core/src/remote/scripts/report.sh",
        "crates/delegate-core/src/remote/scripts/cancel.sh",
        "crates/delegate-core/src/remote/scripts/sync.sh",
        "crates/delegate-core/src/remote/scripts/say.sh",
        "crates/delegate-core/src/remote/scripts/diff.sh",
        "crates/delegate-core/src/remote/scripts/artifacts.sh",
        "crates/delegate-core/src/remote/scripts/cleanup.sh",
        "crates/delegate-core/src/remote/scripts/git-tree.sh",
        "crates/delegate-core/src/remote/scripts/own-root.sh",
        "crates/delegate-core/src/remote/scripts/inbox.sh",
        "crates/delegate-core/src/remote/scripts/scope-guard.sh",
        "hooks/claude-hook.sh",
        "crates/delegate-testkit/src/fake_agent.sh",
        "scripts/demo.sh",
        "scripts/test.sh",
        "scripts/supply-chain.sh",
        "scripts/fuzz.sh",
        "scripts/bench.sh",
        ".ci/run",
    ];
    for f in files {
        assert!(root.join(f).exists(), "{f} is listed here but missing");
    }
    let out =
        Command::new("shellcheck").args(["-s", "bash"]).args(files).current_dir(root).output().unwrap_or_else(|e| {
            panic!("cannot run shellcheck ({e}): install it with apt-get install shellcheck, or run scripts/test.sh")
        });
    assert!(
        out.status.success(),
        "shellcheck found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
