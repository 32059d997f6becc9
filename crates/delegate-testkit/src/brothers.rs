//! Brothers set up the ways people set them up: the real `claude` and `codex` CLIs (installed
//! from npm by `scripts/test.sh`, see [`real_agents_bin`]) placed on a [`FakeHost`] with a
//! home of its own ([`FakeHostBuilder::own_home`]) as each common install leaves them, and
//! pointed at a [`ModelStandIn`] the way a user's credentials would be: exported in
//! `~/.profile` (Claude) and `~/.codex/config.toml` (Codex).
//!
//! The binaries are not copied (Claude's alone is ~380 MB): each layout links the places a
//! real install would create to the npm cache, which is what PATH lookup, the login and
//! interactive shells, and delegate see.
//!
//! Limits of the bench, said plainly: node is installed system-wide on this machine, so the
//! nvm layout shows PATH discovery from `~/.bashrc` but cannot hide node from the other
//! shells; "system-wide" means on the PATH sshd gives a command (the host's `bin/`), not
//! `/usr/local/bin` itself, which the hosts share.
//!
//! [`FakeHostBuilder::own_home`]: crate::FakeHostBuilder::own_home

use std::path::{Path, PathBuf};

use crate::FakeHost;
use crate::model::ModelStandIn;

/// Where the npm-installed CLIs are: `DELEGATE_TEST_AGENTS_BIN` (the `node_modules/.bin` that
/// `scripts/test.sh` fills with the pinned versions). `None` with a printed reason when it
/// is unset; under `CI` an unset variable is a failure, because CI must run the real CLIs.
pub fn real_agents_bin() -> Option<PathBuf> {
    match std::env::var_os("DELEGATE_TEST_AGENTS_BIN") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("claude").exists() && dir.join("codex").exists(),
                "DELEGATE_TEST_AGENTS_BIN={} holds no claude and codex",
                dir.display()
            );
            Some(dir)
        }
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "DELEGATE_TEST_AGENTS_BIN is unset under CI: run the suite with scripts/test.sh, which installs the real CLIs"
            );
            eprintln!(
                "skipped: DELEGATE_TEST_AGENTS_BIN is unset (scripts/test.sh installs the real CLIs and sets it)"
            );
            None
        }
    }
}

/// How the agents were installed on a brother.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// On the PATH sshd gives every command (as `/usr/local/bin` would be).
    SystemWide,
    /// `npm install -g --prefix ~/.npm-global`, with the PATH line in `~/.profile`.
    NpmUserPrefix,
    /// Claude's native installer: `~/.local/share/claude/versions/<v>` and a
    /// `~/.local/bin/claude` link, found through Debian's `.profile` adding `~/.local/bin`.
    /// Codex goes to the npm user prefix, as people who use both have it.
    NativeInstaller,
    /// nvm: node and the global packages under `~/.nvm/versions/node/<v>/bin`, put on PATH at
    /// the end of `~/.bashrc`, after Debian's "not interactive: return" guard.
    Nvm,
    /// Somewhere of the user's choosing (`~/tools/...`), named by `agent_path` in the
    /// inventory; [`install`] returns the paths.
    AbsolutePath,
}

impl Install {
    pub const ALL: [Install; 5] =
        [Install::SystemWide, Install::NpmUserPrefix, Install::NativeInstaller, Install::Nvm, Install::AbsolutePath];
}

/// Where an [`Install::AbsolutePath`] put each agent (for `agent_path`); for the other
/// layouts both are `None` (the agent is found by name).
#[derive(Debug, Default, Clone)]
pub struct Installed {
    pub claude_path: Option<String>,
    pub codex_path: Option<String>,
}

/// Debian's skeleton `~/.profile`: sources `~/.bashrc` for bash, adds `~/bin` and
/// `~/.local/bin` to PATH when they exist.
const DEBIAN_PROFILE: &str = r#"# ~/.profile (Debian skeleton)
if [ -n "$BASH_VERSION" ]; then
    if [ -f "$HOME/.bashrc" ]; then
        . "$HOME/.bashrc"
    fi
fi
if [ -d "$HOME/bin" ] ; then
    PATH="$HOME/bin:$PATH"
fi
if [ -d "$HOME/.local/bin" ] ; then
    PATH="$HOME/.local/bin:$PATH"
fi
"#;

/// Debian's skeleton `~/.bashrc` begins by returning unless the shell is interactive.
const DEBIAN_BASHRC_GUARD: &str = "# ~/.bashrc (Debian skeleton)\ncase $- in\n    *i*) ;;\n      *) return;;\nesac\n";

/// Sets up `host` (built with `own_home`) as `how` leaves a brother, with both CLIs pointed
/// at `model`.
pub fn install(host: &FakeHost, how: Install, agents_bin: &Path, model: &ModelStandIn) -> Installed {
    let claude = agents_bin.join("claude").canonicalize().expect("claude in the agents bin");
    let codex = agents_bin.join("codex");
    // codex.js finds its platform binary next to itself: link the script, not its target.
    let codex = codex.canonicalize().expect("codex in the agents bin");
    let mut profile = DEBIAN_PROFILE.to_string();
    let mut bashrc = DEBIAN_BASHRC_GUARD.to_string();
    let mut installed = Installed::default();
    match how {
        Install::SystemWide => {
            for (name, target) in [("claude", &claude), ("codex", &codex)] {
                link(&host.dir().join("bin").join(name), target);
            }
        }
        Install::NpmUserPrefix => {
            host.link_home(".npm-global/bin/claude", &claude);
            host.link_home(".npm-global/bin/codex", &codex);
            profile.push_str("export PATH=\"$HOME/.npm-global/bin:$PATH\"\n");
        }
        Install::NativeInstaller => {
            host.link_home(".local/share/claude/versions/current", &claude);
            let versions = host.home().join(".local/share/claude/versions/current");
            host.link_home(".local/bin/claude", &versions);
            host.link_home(".npm-global/bin/codex", &codex);
            profile.push_str("export PATH=\"$HOME/.npm-global/bin:$PATH\"\n");
        }
        Install::Nvm => {
            let bin = ".nvm/versions/node/v22.12.0/bin";
            host.link_home(&format!("{bin}/claude"), &claude);
            host.link_home(&format!("{bin}/codex"), &codex);
            if let Some(node) = ["/usr/bin/node", "/usr/local/bin/node"].iter().map(Path::new).find(|p| p.exists()) {
                host.link_home(&format!("{bin}/node"), node);
            }
            bashrc.push_str(&format!(
                "export NVM_DIR=\"$HOME/.nvm\"\n# what nvm.sh leaves behind for the default alias\nexport PATH=\"$HOME/{bin}:$PATH\"\n"
            ));
        }
        Install::AbsolutePath => {
            let c = host.link_home("tools/claude-code/claude", &claude);
            let x = host.link_home("tools/codex/codex", &codex);
            installed.claude_path = Some(c.display().to_string());
            installed.codex_path = Some(x.display().to_string());
        }
    }
    // The credentials and endpoint, exported in ~/.profile as people do with an API key.
    for (k, v) in model.claude_env() {
        profile.push_str(&format!("export {k}='{v}'\n"));
    }
    host.write_home_file(".profile", profile, 0o644);
    host.write_home_file(".bashrc", bashrc, 0o644);
    host.write_home_file(".codex/config.toml", model.codex_config_toml(), 0o600);
    installed
}

/// Makes `bwrap` on `host` fail the way it does where unprivileged user namespaces are off
/// (containers, hardened kernels): installed, first on PATH, and unable to sandbox anything.
pub fn break_bubblewrap(host: &FakeHost) {
    host.write_home_file(
        "bin/bwrap",
        "#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n",
        0o755,
    );
}

fn link(at: &Path, target: &Path) {
    let _ = std::fs::remove_file(at);
    std::os::unix::fs::symlink(target, at).unwrap_or_else(|e| panic!("symlink {}: {e}", at.display()));
}
