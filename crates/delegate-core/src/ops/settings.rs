//! Which settings a launch runs with, and where each came from: the request's own (a
//! command-line flag or an MCP argument), the profile's (`--profile`, else the brother's
//! `default_profile`), the brother's, or delegate's default. The first one given wins.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::agents::AgentOptions;
use crate::error::{Error, Result};
use crate::hosts::inventory::{self, BrotherEntry, Inventory, Profile};
use crate::ops::launch::LaunchRequest;
use crate::task::Sandbox;

/// The settings one launch runs with.
#[derive(Debug, Clone)]
pub struct Effective {
    pub agent: String,
    pub model: Option<String>,
    pub sandbox: Sandbox,
    pub max_turns: u32,
    pub timeout: Duration,
    pub options: AgentOptions,
    /// Run in a git worktree of the workdir of its own ([`crate::ops::launch`]).
    pub worktree: bool,
    /// Each setting's value and source, for the launch evidence and `show`.
    pub sources: Vec<Setting>,
}

/// One setting as it was decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Setting {
    pub name: &'static str,
    pub value: serde_json::Value,
    /// `flag`, `profile NAME`, `brother NAME` or `default`.
    pub from: String,
}

/// Decides each setting for `req` on `brother`, flag > profile > brother > default.
pub fn resolve(inv: &Inventory, brother: &BrotherEntry, req: &LaunchRequest, config: &Path) -> Result<Effective> {
    let environment = req.environment.as_deref().map(|e| inv.environment(e)).transpose()?;
    let env_profile = environment.and_then(|e| e.profile.clone());
    let profile_name = req.profile.clone().or_else(|| env_profile.clone()).or_else(|| brother.default_profile.clone());
    let profile: Option<&Profile> = profile_name.as_deref().map(|n| inv.profile(n)).transpose()?;
    let p = profile.cloned().unwrap_or_default();
    let mut s = Sources { list: Vec::new(), profile: format!("profile {}", profile_name.as_deref().unwrap_or("")) };
    let b = format!("brother {}", req.brother);
    if let Some(e) = &req.environment {
        let from = req.placement.clone().unwrap_or_else(|| "flag".into());
        s.list.push(Setting { name: "environment", value: e.clone().into(), from });
    }
    if let Some(n) = &profile_name {
        let from = match (&req.profile, &env_profile, &req.environment) {
            (Some(_), _, _) => "flag".to_string(),
            (None, Some(_), Some(e)) => format!("environment {e}"),
            _ => format!("{b} (default_profile)"),
        };
        s.list.push(Setting { name: "profile", value: n.clone().into(), from });
    }
    let bad = |message: String| Error::Config { path: config.to_path_buf(), message };
    let secs = |t: &Option<String>, key: &str| -> Result<Option<u64>> {
        t.as_deref()
            .map(|t| inventory::parse_timeout(t).map(|d| d.as_secs()).map_err(|m| bad(format!("{key}: {m}"))))
            .transpose()
    };
    let profile_timeout = secs(&p.timeout, &format!("profiles.{}.timeout", profile_name.as_deref().unwrap_or("")))?;
    let brother_timeout = secs(&brother.timeout, &format!("brothers.{}.timeout", req.brother))?;

    let agent = s.pick("agent", req.agent.clone(), p.agent.clone(), Some((brother.agent.clone(), &b)));
    let model = s.pick("model", req.model.clone(), p.model.clone(), brother.model.clone().map(|m| (m, b.as_str())));
    let sandbox = s.pick("sandbox", req.sandbox, p.sandbox, Some((brother.sandbox, &b)));
    let max_turns = s.pick("max_turns", req.max_turns, p.max_turns, Some((brother.max_turns, &b)));
    let timeout_secs = s.pick(
        "timeout_secs",
        req.timeout.map(|d| d.min(inventory::FOREVER).as_secs()),
        profile_timeout,
        Some(brother_timeout.map_or((inventory::DEFAULT_TIMEOUT.as_secs(), "default"), |t| (t, b.as_str()))),
    );
    let reasoning_effort = s.pick("reasoning_effort", req.reasoning_effort, p.reasoning_effort, None);
    let max_budget_usd = s.pick("max_budget_usd", req.max_budget_usd, p.max_budget_usd, None);
    // Extra arguments are replaced whole, not merged: flags and their values come in pairs
    // that only the one who wrote them knows.
    let extra_args = s.pick("args", req.extra_args.clone(), Some(p.args.clone()).filter(|a| !a.is_empty()), None);
    let credential_file = s.pick("credential_file", None, p.credential_file.clone(), None);
    let credential_env = s.pick("credential_env", None, p.credential_env.clone(), None);
    // Recorded in the task's settings only: `show` reads it there (done without evidence).
    s.pick("expect_change", None, p.expect_change, brother.expect_change.map(|e| (e, b.as_str())));
    let worktree = s.pick("worktree", req.worktree, p.worktree, brother.worktree.map(|w| (w, b.as_str())));
    let usd_per_mtok = s.pick("usd_per_mtok", None, p.usd_per_mtok, brother.usd_per_mtok.map(|u| (u, b.as_str())));

    let (Some(agent), Some(sandbox), Some(max_turns), Some(timeout_secs)) = (agent, sandbox, max_turns, timeout_secs)
    else {
        unreachable!("the brother always gives agent, sandbox, turns and a timeout");
    };
    if max_turns == 0 {
        return Err(bad("--max-turns must be at least 1".into()));
    }
    Ok(Effective {
        agent,
        model,
        sandbox,
        max_turns,
        timeout: Duration::from_secs(timeout_secs),
        worktree: worktree.unwrap_or(false),
        options: AgentOptions {
            reasoning_effort,
            max_budget_usd,
            extra_args: extra_args.unwrap_or_default(),
            credential_file,
            credential_env,
            usd_per_mtok,
        },
        sources: s.list,
    })
}

/// The settings decided so far, and the profile's label.
struct Sources {
    list: Vec<Setting>,
    profile: String,
}

impl Sources {
    /// The first of the request's, the profile's and the brother's (or a default, with its
    /// label) that is set; recorded with where it came from. Unset everywhere: `None`,
    /// and not recorded.
    fn pick<T: Serialize>(
        &mut self,
        name: &'static str,
        flag: Option<T>,
        profile: Option<T>,
        fallback: Option<(T, &str)>,
    ) -> Option<T> {
        let (value, from) = match (flag, profile, fallback) {
            (Some(v), _, _) => (v, "flag".to_string()),
            (None, Some(v), _) => (v, self.profile.clone()),
            (None, None, Some((v, from))) => (v, from.to_string()),
            (None, None, None) => return None,
        };
        let json = serde_json::to_value(&value).unwrap_or_default();
        self.list.push(Setting { name, value: json, from });
        Some(value)
    }
}

/// The evidence form: `{"agent": {"value": "claude", "from": "profile fast"}, ...}`.
pub fn evidence(sources: &[Setting]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for s in sources {
        map.insert(s.name.into(), serde_json::json!({ "value": s.value, "from": s.from }));
    }
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::ReasoningEffort;

    const INVENTORY: &str = r#"
[hosts.h]
address = "h"

[brothers.oppy]
host = "h"
workdir = "/w"
model = "sonnet"
max_turns = 20
timeout = "1h"

[brothers.jerry]
host = "h"
workdir = "/w"
agent = "codex"
default_profile = "deep"

[profiles.deep]
model = "opus"
reasoning_effort = "high"
max_turns = 80
timeout = "3h"
max_budget_usd = 5.0
args = ["--fallback-model", "sonnet"]
credential_file = "~/.config/team-key.env"
credential_env = "TEAM_API_KEY"
"#;

    fn inv() -> Inventory {
        Inventory::parse(INVENTORY, Path::new("c.toml")).unwrap()
    }

    fn from<'a>(e: &'a Effective, name: &str) -> (&'a serde_json::Value, &'a str) {
        let s = e.sources.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no {name} in {:?}", e.sources));
        (&s.value, s.from.as_str())
    }

    #[test]
    fn flag_beats_profile_beats_brother_beats_default() {
        let inv = inv();
        let req = LaunchRequest {
            brother: "oppy".into(),
            profile: Some("deep".into()),
            max_turns: Some(3),
            reasoning_effort: Some(ReasoningEffort::Low),
            ..Default::default()
        };
        let e = resolve(&inv, &inv.brothers["oppy"], &req, Path::new("c.toml")).unwrap();
        assert_eq!((e.max_turns, e.model.as_deref(), e.agent.as_str()), (3, Some("opus"), "claude"));
        assert_eq!(e.timeout, Duration::from_secs(3 * 3600));
        assert_eq!(e.options.reasoning_effort, Some(ReasoningEffort::Low));
        assert_eq!(e.options.max_budget_usd, Some(5.0));
        assert_eq!(e.options.extra_args, ["--fallback-model", "sonnet"]);
        assert_eq!(e.options.credential_file.as_deref(), Some("~/.config/team-key.env"));
        assert_eq!(e.options.credential_env.as_deref(), Some("TEAM_API_KEY"));
        assert_eq!(from(&e, "credential_env"), (&"TEAM_API_KEY".into(), "profile deep"));
        assert_eq!(from(&e, "max_turns"), (&3.into(), "flag"));
        assert_eq!(from(&e, "model"), (&"opus".into(), "profile deep"));
        assert_eq!(from(&e, "agent"), (&"claude".into(), "brother oppy"));
        assert_eq!(from(&e, "sandbox"), (&"write".into(), "brother oppy"));
        assert_eq!(from(&e, "profile"), (&"deep".into(), "flag"));
        assert_eq!(from(&e, "reasoning_effort"), (&"low".into(), "flag"));

        // No profile: the brother's, then the defaults; unset options are not recorded.
        let plain = LaunchRequest { brother: "oppy".into(), ..Default::default() };
        let e = resolve(&inv, &inv.brothers["oppy"], &plain, Path::new("c.toml")).unwrap();
        assert_eq!((e.max_turns, e.model.as_deref()), (20, Some("sonnet")));
        assert_eq!(from(&e, "timeout_secs"), (&3600.into(), "brother oppy"));
        assert_eq!(e.options, AgentOptions::default());
        assert!(
            e.sources.iter().all(|s| !["profile", "reasoning_effort", "args"].contains(&s.name)),
            "{:?}",
            e.sources
        );
        let mut bare = inv.brothers["oppy"].clone();
        bare.timeout = None;
        let e = resolve(&inv, &bare, &plain, Path::new("c.toml")).unwrap();
        assert_eq!(from(&e, "timeout_secs"), (&inventory::DEFAULT_TIMEOUT.as_secs().into(), "default"));
    }

    #[test]
    fn a_brothers_default_profile_applies_and_flag_args_replace_the_profiles() {
        let inv = inv();
        let req = LaunchRequest {
            brother: "jerry".into(),
            extra_args: Some(vec!["--color".into(), "never".into()]),
            ..Default::default()
        };
        let e = resolve(&inv, &inv.brothers["jerry"], &req, Path::new("c.toml")).unwrap();
        assert_eq!(from(&e, "profile"), (&"deep".into(), "brother jerry (default_profile)"));
        assert_eq!(e.agent, "codex");
        assert_eq!(e.options.extra_args, ["--color", "never"]);
        assert_eq!(from(&e, "args").1, "flag");
    }

    #[test]
    fn an_unknown_profile_is_named_with_the_known_ones() {
        let inv = inv();
        let req = LaunchRequest { brother: "oppy".into(), profile: Some("fast".into()), ..Default::default() };
        let err = resolve(&inv, &inv.brothers["oppy"], &req, Path::new("c.toml")).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::UnknownProfile);
        let text = err.to_string();
        assert!(text.contains("\"fast\"") && text.contains("deep") && text.contains("[profiles.fast]"), "{text}");
    }
}
