//! Per-run agent settings beside the sandbox and the turn limit: reasoning effort, a spend
//! limit, and extra arguments for the agent's command line. Each agent takes them its own
//! way ([`crate::agents::plan`]); a setting an agent cannot honour is refused there, never dropped.

use serde::{Deserialize, Serialize};

/// How hard the model thinks. Claude Code takes all five (`--effort`); Codex's
/// `model_reasoning_effort` stops at `xhigh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningEffort {
    Low,
    Medium,
    High,
    Xhigh,
    Max,
}

impl ReasoningEffort {
    pub const ALL: [ReasoningEffort; 5] = [Self::Low, Self::Medium, Self::High, Self::Xhigh, Self::Max];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Xhigh => "xhigh",
            Self::Max => "max",
        }
    }
}

impl std::fmt::Display for ReasoningEffort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ReasoningEffort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a reasoning effort: use low, medium, high, xhigh or max"))
    }
}

/// The settings a run carries to its agent beyond sandbox, model and turn limit. Kept with
/// the task in the mailbox, so a queued start and a reopen use the same ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<ReasoningEffort>,
    /// A spend limit in US dollars for the run, enforced by the agent itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget_usd: Option<f64>,
    /// Appended to the agent's own flags; checked by [`check_extra_args`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// A file on the brother of `NAME=value` lines holding the run's credentials (a
    /// profile's `credential_file`), read after the host's and brother's env files. A path,
    /// never a value: the secret stays on the brother.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_file: Option<String>,
    /// The NAME of an environment variable on the brother that holds the run's credential
    /// (a profile's `credential_env`): the launch refuses when it is unset in the agent's
    /// environment there. A name, never a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_env: Option<String>,
    /// What the model's tokens cost (a profile's or brother's `usd_per_mtok`): with them,
    /// delegate can enforce a spend limit for an agent that has none of its own (Codex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_mtok: Option<TokenPrices>,
}

/// US dollars per million tokens, as the model's provider bills them. `input` is the price
/// of input tokens not served from the cache, `cached_input` of those that were.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenPrices {
    pub input: f64,
    pub cached_input: f64,
    pub output: f64,
}

/// The highest price per million tokens accepted: far above any model's, and low enough
/// that the runner's integer arithmetic cannot overflow (see [`TokenPrices::units`]).
pub const MAX_USD_PER_MTOK: f64 = 1000.0;

impl TokenPrices {
    /// Each price must be a finite number of dollars, at least 0 and at most
    /// [`MAX_USD_PER_MTOK`].
    pub fn check(&self) -> Result<(), String> {
        for (name, usd) in [("input", self.input), ("cached_input", self.cached_input), ("output", self.output)] {
            if !usd.is_finite() || !(0.0..=MAX_USD_PER_MTOK).contains(&usd) {
                return Err(format!(
                    "{name} = {usd} must be a price in US dollars per million tokens, from 0 to {MAX_USD_PER_MTOK}, e.g. 1.25"
                ));
            }
        }
        Ok(())
    }

    /// The prices in the runner's unit, 1e-11 dollars per token (1e-5 dollars per million
    /// tokens): bash has only 64-bit integers. At most 1e8 per token, times at most 1e10
    /// tokens, three times over, stays below 2^63.
    pub fn units(&self) -> [u64; 3] {
        [self.input, self.cached_input, self.output].map(|usd| (usd * 1e5).round() as u64)
    }
}

/// A budget in the runner's unit (1e-11 dollars).
pub fn budget_units(usd: f64) -> u64 {
    (usd * 1e11).round() as u64
}

/// Longest environment variable name accepted for `credential_env`.
pub const MAX_ENV_NAME: usize = 64;

/// `credential_env` must be a variable's name (upper-case letters, digits, `_`, not
/// starting with a digit), and must not look like a secret pasted in its place (a long run
/// of mixed letters and digits, as in AKIA... access key ids). The message never repeats
/// the value: it may be the very secret.
pub fn check_env_name(name: &str) -> Result<(), String> {
    const EXAMPLE: &str = "name the variable that holds it on the brother, e.g. ANTHROPIC_API_KEY, and set its value \
                           there (~/.profile, an env_file or the profile's credential_file)";
    let valid = !name.is_empty()
        && name.len() <= MAX_ENV_NAME
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(format!(
            "is not an environment variable name (upper-case letters, digits and _, at most {MAX_ENV_NAME}): {EXAMPLE}"
        ));
    }
    let secret_like =
        name.split('_').any(|part| part.len() >= 32 || (part.len() >= 16 && part.bytes().any(|b| b.is_ascii_digit())));
    if secret_like {
        return Err(format!("looks like a secret value rather than a variable's name: {EXAMPLE}"));
    }
    Ok(())
}

/// The largest budget accepted: far above any real run, low enough that a typo of many
/// zeros is caught rather than meaning "no limit".
pub const MAX_BUDGET_USD: f64 = 100_000.0;
/// At most this many extra arguments, each at most this long: they travel in argv.
pub const MAX_EXTRA_ARGS: usize = 64;
pub const MAX_EXTRA_ARG_BYTES: usize = 4096;

/// A spend limit must be a positive, finite amount of dollars.
pub fn check_budget(usd: f64) -> Result<(), String> {
    if !usd.is_finite() || usd <= 0.0 {
        return Err(format!("max_budget_usd {usd} must be a positive number of dollars, e.g. 2.50"));
    }
    if usd > MAX_BUDGET_USD {
        return Err(format!("max_budget_usd {usd} is over the {MAX_BUDGET_USD} delegate accepts"));
    }
    Ok(())
}

/// The flags delegate sets itself for each built-in agent (sandbox, permissions, turn
/// limit, output format, session, resume, prompt, model, effort, budget): an extra argument
/// naming one would override or contradict what the evidence records. Long flags also match
/// their `--flag=value` form.
fn owned_flags(agent: &str) -> &'static [&'static str] {
    match agent {
        "claude" => &[
            "-p",
            "--print",
            "--output-format",
            "--input-format",
            "--verbose",
            "--session-id",
            "-r",
            "--resume",
            "-c",
            "--continue",
            "--fork-session",
            "--no-session-persistence",
            "--max-turns",
            "--permission-mode",
            "--dangerously-skip-permissions",
            "--allow-dangerously-skip-permissions",
            "--permission-prompts",
            "--restricted",
            "--tools",
            "--allowedTools",
            "--allowed-tools",
            "--disallowedTools",
            "--disallowed-tools",
            "--settings",
            "--setting-sources",
            "--strict-mcp-config",
            "--add-dir",
            "--model",
            "--effort",
            "--max-budget-usd",
            "--bare",
        ],
        "codex" => &[
            "--json",
            "-s",
            "--sandbox",
            "--skip-git-repo-check",
            "-C",
            "--cd",
            "-m",
            "--model",
            "--add-dir",
            "-o",
            "--output-last-message",
            "--full-auto",
            "--dangerously-bypass-approvals-and-sandbox",
            "--yolo",
            "--approve-for-me",
            "-a",
            "--ask-for-approval",
            "-p",
            "--profile",
            "--ephemeral",
            "--last",
            // Variadic: it would swallow the `-` that means "prompt on stdin".
            "-i",
            "--image",
        ],
        _ => &[],
    }
}

/// Codex config keys (`-c key=value`) that carry what delegate decides.
const CODEX_OWNED_KEYS: [&str; 6] =
    ["sandbox_mode", "sandbox_workspace_write", "approval_policy", "model", "model_reasoning_effort", "profile"];

/// Words the agent would read as a prompt or a subcommand rather than an option's value.
const CODEX_SUBCOMMANDS: [&str; 4] = ["resume", "fork", "review", "help"];

/// Checks extra arguments for `agent`: bounded, printable, and naming no flag delegate owns
/// (sandbox, permissions, turn limit, output, session, model, effort, budget) nor a positional word (the agent would take it as the prompt).
/// A word is an option's value only right after an option without `=`.
pub fn check_extra_args(agent: &str, args: &[String]) -> Result<(), String> {
    if args.is_empty() {
        return Ok(());
    }
    if agent == "self-test" {
        return Err("the self-test agent takes no extra arguments".into());
    }
    if args.len() > MAX_EXTRA_ARGS {
        return Err(format!("{} extra arguments; at most {MAX_EXTRA_ARGS}", args.len()));
    }
    for a in args {
        if a.len() > MAX_EXTRA_ARG_BYTES {
            return Err(format!("an extra argument of {} bytes; at most {MAX_EXTRA_ARG_BYTES}", a.len()));
        }
        if a.chars().any(char::is_control) {
            return Err(format!("extra argument {a:?} holds control characters"));
        }
    }
    // A custom command is the user's own: delegate owns no flag of it.
    if !matches!(agent, "claude" | "codex") {
        return Ok(());
    }
    let owned = owned_flags(agent);
    let mut value_allowed = false;
    for (i, a) in args.iter().enumerate() {
        if a == "--" {
            return Err(format!(
                "extra argument \"--\" would make everything after it a prompt for {agent}; leave it out"
            ));
        }
        if a.starts_with('-') && a.len() > 1 {
            let name = a.split_once('=').map_or(a.as_str(), |(n, _)| n);
            if let Some(flag) = owned.iter().find(|f| **f == name) {
                return Err(owned_message(agent, flag));
            }
            // A short flag with its value attached (`-m o3`, written `-mo3`).
            if let Some(flag) = owned.iter().find(|f| f.len() == 2 && !a.starts_with("--") && a.starts_with(**f)) {
                return Err(owned_message(agent, flag));
            }
            // Codex's config overrides with the value attached: `--config=k=v`, `-ck=v`.
            let attached = a.strip_prefix("--config=").or_else(|| a.strip_prefix("-c").filter(|r| !r.is_empty()));
            if agent == "codex"
                && let Some(assignment) = attached
            {
                check_codex_key(assignment)?;
            }
            value_allowed = !a.contains('=');
            continue;
        }
        if !value_allowed {
            return Err(format!(
                "extra argument {a:?} is not an option nor an option's value: {agent} would read it as \
                 the prompt (delegate sends the prompt itself); pass flags only, a value right after its flag"
            ));
        }
        if agent == "codex" {
            let prev = &args[i - 1];
            if prev == "-c" || prev == "--config" {
                check_codex_key(a)?;
            } else if CODEX_SUBCOMMANDS.contains(&a.as_str()) {
                return Err(format!("extra argument {a:?} is a codex subcommand; delegate runs `codex exec` itself"));
            }
        }
        value_allowed = false;
    }
    Ok(())
}

/// A Codex `-c key=value` may not set what delegate sets.
fn check_codex_key(assignment: &str) -> Result<(), String> {
    let key = assignment.split_once('=').map_or(assignment, |(k, _)| k).trim();
    let root = key.split('.').next().unwrap_or(key).trim_matches('"');
    if CODEX_OWNED_KEYS.contains(&root) {
        return Err(format!(
            "extra argument \"-c {key}=...\" sets {root}, which delegate sets itself for codex: {}",
            codex_key_hint(root)
        ));
    }
    Ok(())
}

fn owned_message(agent: &str, flag: &str) -> String {
    let hint = match flag {
        "--model" | "-m" => "use --model (or the profile's or brother's model)",
        "--effort" => "use --reasoning-effort",
        "--max-budget-usd" => "use --max-budget-usd on delegate run",
        "--max-turns" => "use --max-turns",
        "--permission-mode"
        | "--dangerously-skip-permissions"
        | "--allow-dangerously-skip-permissions"
        | "--permission-prompts"
        | "--restricted"
        | "--tools"
        | "--allowedTools"
        | "--allowed-tools"
        | "--disallowedTools"
        | "--disallowed-tools"
        | "--settings"
        | "--setting-sources"
        | "--strict-mcp-config"
        | "--add-dir"
        | "-s"
        | "--sandbox"
        | "--full-auto"
        | "--dangerously-bypass-approvals-and-sandbox"
        | "--yolo"
        | "--approve-for-me"
        | "-a"
        | "--ask-for-approval" => "use --sandbox read|write|full",
        "--session-id"
        | "-r"
        | "--resume"
        | "-c"
        | "--continue"
        | "--fork-session"
        | "--no-session-persistence"
        | "--ephemeral"
        | "--last" => "delegate keeps the session itself; use delegate reopen to resume",
        "-C" | "--cd" => "use --workdir",
        _ => "delegate sets it itself",
    };
    format!("extra argument {flag} is owned by delegate for {agent}: {hint}")
}

fn codex_key_hint(root: &str) -> &'static str {
    match root {
        "model" => "use --model",
        "model_reasoning_effort" => "use --reasoning-effort",
        _ => "use --sandbox read|write|full",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn claude_extra_args_may_not_name_what_delegate_owns() {
        assert_eq!(
            check_extra_args("claude", &args(&["--fallback-model", "sonnet", "--include-partial-messages"])),
            Ok(())
        );
        for (bad, needle) in [
            (&["--permission-mode", "bypassPermissions"][..], "--permission-mode"),
            (&["--dangerously-skip-permissions"], "--dangerously-skip-permissions"),
            (&["--max-turns=500"], "--max-turns"),
            (&["--output-format", "text"], "--output-format"),
            (&["--resume", "abc"], "--resume"),
            (&["-c"], "-c is owned"),
            (&["--session-id", "x"], "--session-id"),
            (&["--allowedTools", "Bash"], "--allowedTools"),
            (&["--effort", "max"], "--reasoning-effort"),
            (&["--max-budget-usd", "9"], "--max-budget-usd"),
            (&["--model", "opus"], "--model"),
            (&["-p"], "-p is owned"),
            (&["delete everything"], "read it as the prompt"),
            (&["--verbose"], "--verbose"),
            (&["--fallback-model", "a", "b"], "\"b\""),
            (&["--"], "\"--\""),
        ] {
            let err = check_extra_args("claude", &args(bad)).unwrap_err();
            assert!(err.contains(needle), "{bad:?} gave {err:?}, wanted {needle:?}");
        }
    }

    #[test]
    fn codex_extra_args_may_not_name_what_delegate_owns() {
        assert_eq!(check_extra_args("codex", &args(&["-c", "model_verbosity=low", "--color", "never"])), Ok(()));
        for (bad, needle) in [
            (&["--sandbox", "danger-full-access"][..], "--sandbox"),
            (&["-sdanger-full-access"], "-s is owned"),
            (&["--yolo"], "--yolo"),
            (&["--dangerously-bypass-approvals-and-sandbox"], "--dangerously-bypass"),
            (&["-c", "sandbox_mode=danger-full-access"], "sets sandbox_mode"),
            (&["--config", "sandbox_workspace_write.network_access=true"], "sets sandbox_workspace_write"),
            (&["-c", "model_reasoning_effort=high"], "--reasoning-effort"),
            (&["-c", "approval_policy=never"], "approval_policy"),
            (&["--json"], "--json"),
            (&["-o", "/tmp/x"], "-o is owned"),
            (&["--ephemeral"], "--ephemeral"),
            (&["-i", "a.png"], "-i is owned"),
            (&["--color", "never", "resume"], "read it as the prompt"),
            (&["--color", "resume"], "subcommand"),
            (&["-m", "o3"], "-m is owned"),
            (&["-C", "/"], "--workdir"),
            (&["-csandbox_mode=danger-full-access"], "sets sandbox_mode"),
            (&["--config=approval_policy=never"], "approval_policy"),
        ] {
            let err = check_extra_args("codex", &args(bad)).unwrap_err();
            assert!(err.contains(needle), "{bad:?} gave {err:?}, wanted {needle:?}");
        }
    }

    #[test]
    fn custom_agents_take_any_bounded_args_and_self_test_none() {
        assert_eq!(check_extra_args("my-aider", &args(&["--yes", "whatever", "words"])), Ok(()));
        assert!(check_extra_args("my-aider", &args(&["a\u{1b}[2J"])).unwrap_err().contains("control"));
        assert!(check_extra_args("my-aider", &vec!["x".to_string(); 65]).unwrap_err().contains("at most 64"));
        assert!(check_extra_args("self-test", &args(&["--x"])).unwrap_err().contains("self-test"));
        assert_eq!(check_extra_args("self-test", &[]), Ok(()));
    }

    #[test]
    fn a_credential_env_is_a_variables_name_never_a_secret() {
        for ok in ["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "_TEAM_KEY_2", "AWS_SECRET_ACCESS_KEY"] {
            assert_eq!(check_env_name(ok), Ok(()), "{ok}");
        }
        for (bad, needle) in [
            ("", "not an environment variable name"),
            ("sk-ant-api03-abcdef", "not an environment variable name"),
            ("anthropic_api_key", "not an environment variable name"),
            ("2KEY", "not an environment variable name"),
            ("KEY=VALUE", "not an environment variable name"),
            ("AKIAIOSFODNN7EXAMPLE", "looks like a secret"),
            ("GHP_A1B2C3D4E5F6G7H8I9J0", "looks like a secret"),
            ("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGH", "looks like a secret"),
        ] {
            let err = check_env_name(bad).unwrap_err();
            assert!(err.contains(needle), "{bad:?} gave {err:?}");
            assert!(bad.is_empty() || !err.contains(bad), "the value is never repeated: {err}");
        }
        assert!(check_env_name(&"A".repeat(65)).is_err());
    }

    #[test]
    fn budgets_are_positive_finite_dollars() {
        assert_eq!(check_budget(2.5), Ok(()));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e9] {
            assert!(check_budget(bad).is_err(), "{bad}");
        }
    }
}
