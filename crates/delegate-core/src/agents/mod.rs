//! How each agent kind is started on the brother: argv (never holding the prompt), how the
//! prompt is delivered, what the sandbox level maps to, and what must exist on the host for
//! that mapping to be honest. The mapping follows `shared/agent-clis.md` §2; a level an
//! agent cannot honour is refused here or by the brother's preflight, never downgraded.

use crate::error::{Error, Result};
use crate::hosts::inventory::CustomAgent;
use crate::task::Sandbox;

// Reasoning effort, spend limit and extra arguments, and which agent takes which.
pub mod options;
// How each agent's stream is read back: turns, the final answer, denied calls, how a run ended.
pub mod outcome;

pub use options::{AgentOptions, ReasoningEffort};

/// The self-test agent's script, written into the task directory by the launch script.
pub const SELF_TEST_AGENT: &str = include_str!("../remote/scripts/self-test-agent.sh");

/// The Claude Code hook (`hooks/claude-hook.sh`), written into every task directory as
/// `hook`; the per-task Claude settings run it for each event.
pub const CLAUDE_HOOK: &str = include_str!("../../../../hooks/claude-hook.sh");

/// What marks one agentic step in Codex's `--json` stream, as an extended regular
/// expression the runner counts lines with, to enforce the turn limit Codex lacks. A
/// `codex exec` turn is the whole task (one `turn.started`, however many tool calls it
/// makes), so a step is a tool call starting (shell, MCP, web search) or a file change
/// completing; Claude Code's `--max-turns` likewise counts model round trips, not prompts.
pub const CODEX_TURN_MARKER: &str = r#""type":"item\.started".*"type":"(command_execution|mcp_tool_call|web_search)"|"type":"item\.completed".*"type":"file_change""#;

/// Which tools Claude Code needs for its `write` sandbox (Bash runs inside bubblewrap).
const CLAUDE_WRITE_TOOLS: [&str; 2] = ["bwrap", "socat"];
/// What to install when they are missing (the packages, not the program names).
const CLAUDE_WRITE_HINT: &str =
    "install the bubblewrap and socat packages (apt-get install bubblewrap socat; dnf install bubblewrap socat)";
/// Installed is not enough: where unprivileged user namespaces are off (containers, hardened
/// kernels) bwrap exists but every sandboxed command fails with "setting up uid map:
/// Permission denied", and Claude Code starts anyway. One fork shows it before launch.
const BWRAP_PROBE: [&str; 5] = ["bwrap", "--ro-bind", "/", "/", "true"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptDelivery {
    /// The prompt file is the agent's stdin.
    Stdin,
    /// The agent reads the prompt file named in its argv; stdin is /dev/null.
    File,
}

/// Everything the launch script needs to start one agent, plus what goes into the evidence.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentPlan {
    /// `claude`, `codex`, `self-test` or the custom agent's name.
    pub kind: String,
    /// argv without the prompt. `{task_dir}` and `{prompt_file}` are filled in remotely,
    /// where the task directory's real path is known.
    pub argv: Vec<String>,
    pub delivery: PromptDelivery,
    /// Programs the sandbox level needs on the brother (checked in preflight), and what to
    /// install when some are missing.
    pub requires: Vec<String>,
    #[serde(skip)]
    pub requires_hint: String,
    /// A command that must succeed on the brother for the level to be real (bwrap creating
    /// a namespace); empty: none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sandbox_probe: Vec<String>,
    /// Whether the agent can run the report and inbox helpers at this level (a shell tool and
    /// a writable task directory). Where it cannot, the preamble does not ask it to, and the
    /// lead learns the state from the agent's stream alone.
    pub helpers: bool,
    /// The level is refused when the remote user is root (Claude's bypass mode).
    pub refuse_root: bool,
    /// Files written into the task directory before start: (name, contents).
    #[serde(skip)]
    pub files: Vec<(String, String)>,
    /// The level actually obtained, and what enforces it.
    pub effective_sandbox: String,
    pub enforcement: String,
    /// Who enforces the turn limit: the agent itself ("native") or delegate (Codex, custom).
    pub turn_limit: String,
    /// When delegate enforces the turn limit: a literal substring that marks one turn in the
    /// agent's stdout. The runner stops the agent when turn N+1 starts.
    pub turn_marker: Option<String>,
    /// Pre-assigned conversation id (Claude's `--session-id`), for resume later.
    pub session_id: Option<String>,
    /// How to ask the agent its version on the brother (placeholders allowed); empty: don't.
    pub version_argv: Vec<String>,
    /// A follow-up's write scope (resolved entries) and how far it is enforced; see
    /// [`crate::ops::write_scope`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub write_scope: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_scope_enforcement: Option<String>,
    /// The variable that must be set in the agent's environment on the brother (a
    /// profile's `credential_env`): its name only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_env: Option<String>,
    /// A spend limit the runner enforces on the brother (Codex has none of its own): it sums
    /// the cost of the token counts in Codex's session log and stops the agent at the limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spend_limit: Option<SpendLimit>,
}

/// A spend limit delegate enforces, and the prices it counts the tokens at.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SpendLimit {
    pub max_budget_usd: f64,
    pub usd_per_mtok: options::TokenPrices,
}

/// Inputs that shape the argv.
pub struct AgentRequest<'a> {
    pub agent: &'a str,
    pub model: Option<&'a str>,
    pub sandbox: Sandbox,
    pub max_turns: u32,
    pub workdir: &'a str,
    pub custom: Option<&'a CustomAgent>,
    /// The program's path on the brother (`agent_path` in the inventory), replacing the name
    /// looked up on PATH; a built-in agent keeps everything else (stream parsing, resume,
    /// hooks, sandbox mapping, native turn limit).
    pub agent_path: Option<&'a str>,
    /// Reasoning effort, spend limit, extra arguments.
    pub options: &'a AgentOptions,
}

pub fn plan(req: &AgentRequest) -> Result<AgentPlan> {
    options::check_extra_args(req.agent, &req.options.extra_args)
        .map_err(|why| refused(req.agent, "--args-json", why))?;
    if let Some(usd) = req.options.max_budget_usd {
        options::check_budget(usd).map_err(|why| refused(req.agent, "--max-budget-usd", why))?;
    }
    let mut plan = match req.agent {
        "claude" => claude(req),
        "codex" => codex(req)?,
        "self-test" => self_test(req)?,
        other => {
            let custom = req.custom.ok_or_else(|| Error::UnknownAgent { name: other.into(), known: vec![] })?;
            custom_agent(other, custom, req)?
        }
    };
    plan.credential_env = req.options.credential_env.clone();
    if let Some(path) = req.agent_path {
        let path = home_placeholder(path);
        if plan.version_argv.first() == plan.argv.first()
            && let Some(v) = plan.version_argv.first_mut()
        {
            *v = path.clone();
        }
        plan.argv[0] = path;
    }
    Ok(plan)
}

fn refused(agent: &str, setting: &str, why: String) -> Error {
    Error::SettingRefused { agent: agent.into(), setting: setting.into(), why }
}

/// A budget as the agents' flags want it: plain decimal dollars.
fn dollars(usd: f64) -> String {
    format!("{usd}")
}

/// A leading `~/` (or a lone `~`) becomes `{home}`, which the launch script fills with the
/// brother's home: argv is never run through a shell there, so nothing else would expand it.
pub fn home_placeholder(arg: &str) -> String {
    if arg == "~" {
        "{home}".into()
    } else if let Some(rest) = arg.strip_prefix("~/") {
        format!("{{home}}/{rest}")
    } else {
        arg.to_string()
    }
}

fn uuid_v4() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// The per-task Claude settings (`claude-settings.json`): delegate's hook for every event
/// it logs, and for `write` the OS sandbox. `{task_dir}` is filled in by the launch script,
/// which refuses task directories holding quotes or backslashes, so the path needs no
/// escaping in this JSON nor in the single-quoted shell command.
fn claude_settings(sandbox: bool) -> String {
    let run = |event: &str| serde_json::json!([{"type": "command", "command": format!("bash '{{task_dir}}/hook' {event}"), "timeout": 10}]);
    let mut hooks = serde_json::Map::new();
    for event in
        ["SessionStart", "PostToolUse", "PostToolUseFailure", "Stop", "StopFailure", "SessionEnd", "Notification"]
    {
        let entry = if event.starts_with("PostToolUse") {
            serde_json::json!([{"matcher": "*", "hooks": run(event)}])
        } else {
            serde_json::json!([{"hooks": run(event)}])
        };
        hooks.insert(event.into(), entry);
    }
    let mut settings = serde_json::json!({ "hooks": hooks });
    if sandbox {
        settings["sandbox"] = serde_json::json!({
            "enabled": true,
            "failIfUnavailable": true,
            "allowUnsandboxedCommands": false,
            "autoAllowBashIfSandboxed": true,
        });
    }
    settings.to_string()
}

fn claude(req: &AgentRequest) -> AgentPlan {
    let session_id = uuid_v4();
    let mut argv: Vec<String> =
        ["claude", "-p", "--output-format", "stream-json", "--verbose", "--session-id"].map(String::from).into();
    argv.push(session_id.clone());
    argv.extend(["--max-turns".into(), req.max_turns.to_string()]);
    let mut requires = Vec::new();
    let mut sandbox_probe = Vec::new();
    let (effective, enforcement, refuse_root);
    match req.sandbox {
        Sandbox::Read => {
            // Variadic flags get one comma-joined value, or the next argument is swallowed.
            argv.extend(
                ["--permission-mode", "dontAsk", "--tools", "Read,Grep,Glob", "--allowedTools", "Read,Grep,Glob"]
                    .map(String::from),
            );
            // An untrusted repo's own settings and MCP servers must not widen a read-only run;
            // the user's own settings stay (people keep `env` and `apiKeyHelper` there, and
            // without them Claude is "Not logged in"). --tools bounds the tool set whatever
            // their allow rules say.
            argv.extend(["--setting-sources", "user", "--strict-mcp-config"].map(String::from));
            effective = "read: tools Read,Grep,Glob only, permission mode dontAsk";
            enforcement = "app (Claude Code tool allowlist)";
            refuse_root = false;
        }
        Sandbox::Write => {
            // The task directory joins the working dirs so the report helper may write its
            // outbox; one value, as --add-dir is variadic.
            argv.extend(["--permission-mode", "acceptEdits", "--add-dir", "{task_dir}"].map(String::from));
            requires = CLAUDE_WRITE_TOOLS.map(String::from).into();
            sandbox_probe = BWRAP_PROBE.map(String::from).into();
            effective = "write: edits accepted, Bash sandboxed by bubblewrap (failIfUnavailable)";
            enforcement = "mixed (OS sandbox for Bash, app rules for Edit/Write)";
            refuse_root = false;
        }
        Sandbox::Full => {
            argv.extend(["--permission-mode", "bypassPermissions"].map(String::from));
            effective = "full: no isolation";
            enforcement = "none";
            // Claude Code itself refuses bypassPermissions as root; say so before starting.
            refuse_root = true;
        }
    }
    // Every level gets the per-task settings: the hooks log activity; `write` adds its sandbox.
    // One value without commas, so the flag cannot swallow the next argument.
    argv.extend(["--settings".into(), "{task_dir}/claude-settings.json".into()]);
    let files = vec![("claude-settings.json".to_string(), claude_settings(req.sandbox == Sandbox::Write))];
    if let Some(m) = req.model {
        argv.extend(["--model".into(), m.to_string()]);
    }
    if let Some(e) = req.options.reasoning_effort {
        argv.extend(["--effort".into(), e.to_string()]);
    }
    if let Some(usd) = req.options.max_budget_usd {
        // Claude Code stops the run itself, with result subtype error_max_budget_usd.
        argv.extend(["--max-budget-usd".into(), dollars(usd)]);
    }
    // Last, where a variadic flag among them can swallow nothing of delegate's (the prompt
    // is on stdin).
    argv.extend(req.options.extra_args.iter().cloned());
    AgentPlan {
        kind: "claude".into(),
        argv,
        delivery: PromptDelivery::Stdin,
        requires,
        requires_hint: CLAUDE_WRITE_HINT.into(),
        sandbox_probe,
        // At read Claude has no Bash tool; the hooks still hand it the lead's messages.
        helpers: req.sandbox != Sandbox::Read,
        refuse_root,
        files,
        effective_sandbox: effective.into(),
        enforcement: enforcement.into(),
        turn_limit: "native".into(),
        turn_marker: None,
        session_id: Some(session_id),
        version_argv: vec!["claude".into(), "--version".into()],
        write_scope: vec![],
        write_scope_enforcement: None,
        credential_env: None,
        spend_limit: None,
    }
}

fn codex(req: &AgentRequest) -> Result<AgentPlan> {
    // Codex has no spend limit of its own and reports tokens, not dollars: delegate's runner
    // enforces the budget from the token counts, priced with the profile's or brother's
    // usd_per_mtok. Without prices there is no amount to stop at.
    let spend_limit = match (req.options.max_budget_usd, req.options.usd_per_mtok) {
        (None, _) => None,
        (Some(max_budget_usd), Some(usd_per_mtok)) => {
            usd_per_mtok.check().map_err(|why| refused("codex", "usd_per_mtok", why))?;
            Some(SpendLimit { max_budget_usd, usd_per_mtok })
        }
        (Some(_), None) => {
            return Err(refused(
                "codex",
                "--max-budget-usd",
                "codex exec has no spend limit of its own and reports tokens, not dollars, so delegate needs \
                 the model's prices to enforce one: set usd_per_mtok = { input = X, cached_input = Y, output = Z } \
                 (US dollars per million tokens) in the profile or brother, or leave the budget out"
                    .into(),
            ));
        }
    };
    if req.options.reasoning_effort == Some(ReasoningEffort::Max) {
        return Err(refused(
            "codex",
            "--reasoning-effort max",
            "codex's model_reasoning_effort goes up to xhigh; use --reasoning-effort xhigh".into(),
        ));
    }
    let (mode, effective, enforcement) = match req.sandbox {
        Sandbox::Read => ("read-only", "read: no writes, no network", "os (codex sandbox)"),
        Sandbox::Write => ("workspace-write", "write: workspace and tmp only, no network", "os (codex sandbox)"),
        Sandbox::Full => ("danger-full-access", "full: no isolation", "none"),
    };
    let mut argv: Vec<String> =
        // `{workdir}` is filled on the brother after `~` is expanded there: Codex takes `-C`
        // literally, and `-C '~/work'` fails every task with "No such file or directory".
        ["codex", "exec", "--json", "--sandbox", mode, "--skip-git-repo-check", "-C", "{workdir}"]
            .map(String::from)
            .into();
    if let Some(m) = req.model {
        argv.extend(["-m".into(), m.to_string()]);
    }
    if req.sandbox == Sandbox::Write {
        // delegate's own task directory, so the report helper can write the outbox from
        // inside the sandbox; nothing of the user's is widened.
        argv.extend(["--add-dir", "{task_dir}"].map(String::from));
    }
    if let Some(e) = req.options.reasoning_effort {
        // Codex takes any string here without complaint, so only the checked names get in.
        argv.extend(["-c".into(), format!("model_reasoning_effort=\"{e}\"")]);
    }
    // Before `-o ... -`: the `-` (prompt on stdin) and a resume's subcommand stay last.
    argv.extend(req.options.extra_args.iter().cloned());
    argv.extend(["-o", "{task_dir}/last-message.txt", "-"].map(String::from));
    Ok(AgentPlan {
        kind: "codex".into(),
        argv,
        delivery: PromptDelivery::Stdin,
        requires: vec![],
        requires_hint: String::new(),
        sandbox_probe: vec![],
        // read-only: Codex's sandbox lets it write nowhere, the task directory included.
        helpers: req.sandbox != Sandbox::Read,
        refuse_root: false,
        files: vec![],
        effective_sandbox: effective.into(),
        enforcement: enforcement.into(),
        // Codex has no turn limit of its own (openai/codex#33294).
        turn_limit: "delegate".into(),
        turn_marker: Some(CODEX_TURN_MARKER.into()),
        session_id: None,
        version_argv: vec!["codex".into(), "--version".into()],
        write_scope: vec![],
        write_scope_enforcement: None,
        credential_env: None,
        spend_limit,
    })
}

fn self_test(req: &AgentRequest) -> Result<AgentPlan> {
    if let Some(setting) = model_setting(req.options) {
        return Err(refused("self-test", setting, "the self-test agent runs no model; leave it out".into()));
    }
    Ok(AgentPlan {
        kind: "self-test".into(),
        argv: vec!["bash".into(), "{task_dir}/self-test-agent".into(), "--max-turns".into(), req.max_turns.to_string()],
        delivery: PromptDelivery::Stdin,
        requires: vec![],
        requires_hint: String::new(),
        sandbox_probe: vec![],
        helpers: true,
        refuse_root: false,
        files: vec![("self-test-agent".into(), SELF_TEST_AGENT.into())],
        effective_sandbox: format!("{}: the self-test agent reads its prompt and touches nothing", req.sandbox),
        enforcement: "nothing to enforce".into(),
        turn_limit: "native".into(),
        turn_marker: None,
        session_id: None,
        version_argv: vec!["bash".into(), "{task_dir}/self-test-agent".into(), "--version".into()],
        write_scope: vec![],
        write_scope_enforcement: None,
        credential_env: None,
        spend_limit: None,
    })
}

/// The first model setting given (effort, budget), by its flag name.
fn model_setting(o: &AgentOptions) -> Option<&'static str> {
    if o.reasoning_effort.is_some() {
        Some("--reasoning-effort")
    } else if o.max_budget_usd.is_some() {
        Some("--max-budget-usd")
    } else {
        None
    }
}

fn custom_agent(name: &str, c: &CustomAgent, req: &AgentRequest) -> Result<AgentPlan> {
    if !c.sandboxes.contains(&req.sandbox) {
        let declared: Vec<_> = c.sandboxes.iter().map(|s| s.as_str()).collect();
        return Err(Error::SandboxRefused {
            agent: name.into(),
            sandbox: req.sandbox.to_string(),
            why: format!(
                "delegate cannot confine a custom command; it declares only [{}]. Use --sandbox {}, or add \
                 the level to agents.{name}.sandboxes if the command enforces it itself",
                declared.join(", "),
                declared[0]
            ),
        });
    }
    // A custom command takes effort and budget only where its template has a place for them.
    for (given, placeholder, flag) in [
        (req.options.reasoning_effort.is_some(), "{reasoning_effort}", "--reasoning-effort"),
        (req.options.max_budget_usd.is_some(), "{max_budget_usd}", "--max-budget-usd"),
    ] {
        if given && !c.command.iter().any(|a| a.contains(placeholder)) {
            return Err(refused(
                name,
                flag,
                format!(
                    "agents.{name}.command has no {placeholder} placeholder, so delegate has no way to pass it; \
                     add one to the command, or leave the setting out"
                ),
            ));
        }
    }
    let effort = req.options.reasoning_effort.map(|e| e.to_string()).unwrap_or_default();
    let budget = req.options.max_budget_usd.map(dollars).unwrap_or_default();
    let mut delivery = PromptDelivery::Stdin;
    let mut argv: Vec<String> = c
        .command
        .iter()
        .map(|a| {
            if a.contains("{prompt_file}") {
                delivery = PromptDelivery::File;
            }
            // `{workdir}` stays for the brother to fill, after expanding its `~` there.
            home_placeholder(a)
                .replace("{model}", req.model.unwrap_or(""))
                .replace("{max_turns}", &req.max_turns.to_string())
                .replace("{reasoning_effort}", &effort)
                .replace("{max_budget_usd}", &budget)
        })
        .collect();
    argv.extend(req.options.extra_args.iter().cloned());
    Ok(AgentPlan {
        kind: name.into(),
        argv,
        delivery,
        requires: vec![],
        requires_hint: String::new(),
        sandbox_probe: vec![],
        helpers: true,
        refuse_root: false,
        files: vec![],
        effective_sandbox: req.sandbox.to_string(),
        enforcement: if req.sandbox == Sandbox::Full { "none".into() } else { "declared by the agents config".into() },
        turn_limit: "delegate (wall clock)".into(),
        turn_marker: None,
        session_id: None,
        version_argv: if c.version_probe { vec![home_placeholder(&c.command[0]), "--version".into()] } else { vec![] },
        write_scope: vec![],
        write_scope_enforcement: None,
        credential_env: None,
        spend_limit: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(agent: &str, sandbox: Sandbox) -> AgentRequest<'_> {
        AgentRequest {
            agent,
            model: Some("sonnet"),
            sandbox,
            max_turns: 7,
            workdir: "/w",
            custom: None,
            agent_path: None,
            options: &NO_OPTIONS,
        }
    }

    static NO_OPTIONS: AgentOptions = AgentOptions {
        reasoning_effort: None,
        max_budget_usd: None,
        extra_args: vec![],
        credential_file: None,
        credential_env: None,
        usd_per_mtok: None,
    };

    #[test]
    fn claude_levels() {
        let r = plan(&req("claude", Sandbox::Read)).unwrap();
        let a = r.argv.join(" ");
        assert!(a.starts_with("claude -p --output-format stream-json --verbose --session-id "), "{a}");
        assert!(a.contains("--max-turns 7") && a.contains("--tools Read,Grep,Glob") && a.contains("--model sonnet"));
        assert!(r.requires.is_empty() && !r.refuse_root);
        let w = plan(&req("claude", Sandbox::Write)).unwrap();
        assert_eq!(w.requires, vec!["bwrap", "socat"]);
        assert!(w.argv.iter().any(|a| a == "{task_dir}/claude-settings.json"));
        assert!(w.files[0].1.contains("\"failIfUnavailable\":true"));
        assert!(plan(&req("claude", Sandbox::Full)).unwrap().refuse_root);
    }

    #[test]
    fn claude_gets_its_hook_settings_at_every_level() {
        for s in [Sandbox::Read, Sandbox::Write, Sandbox::Full] {
            let p = plan(&req("claude", s)).unwrap();
            let at = p.argv.iter().position(|a| a == "--settings").expect("--settings");
            assert_eq!(p.argv[at + 1], "{task_dir}/claude-settings.json");
            assert_eq!(p.files.len(), 1);
            let (name, text) = &p.files[0];
            assert_eq!(name, "claude-settings.json");
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            for event in [
                "SessionStart",
                "PostToolUse",
                "PostToolUseFailure",
                "Stop",
                "StopFailure",
                "SessionEnd",
                "Notification",
            ] {
                let hook = &v["hooks"][event][0]["hooks"][0];
                assert_eq!(hook["command"], format!("bash '{{task_dir}}/hook' {event}"), "{v}");
                assert_eq!(hook["timeout"], 10);
            }
            assert_eq!(v["hooks"]["PostToolUse"][0]["matcher"], "*");
            assert_eq!(v.get("sandbox").is_some(), s == Sandbox::Write, "{v}");
            assert_eq!(p.turn_marker, None);
        }
        // Read loads the user's own settings (env, apiKeyHelper) but not the project's.
        let r = plan(&req("claude", Sandbox::Read)).unwrap();
        assert!(r.argv.windows(2).any(|w| w[0] == "--setting-sources" && w[1] == "user"));
        assert!(CLAUDE_HOOK.contains("events.jsonl"));
    }

    #[test]
    fn codex_levels_and_no_native_turn_limit() {
        for (s, m) in
            [(Sandbox::Read, "read-only"), (Sandbox::Write, "workspace-write"), (Sandbox::Full, "danger-full-access")]
        {
            let p = plan(&req("codex", s)).unwrap();
            assert!(p.argv.windows(2).any(|w| w[0] == "--sandbox" && w[1] == m), "{:?}", p.argv);
            assert_eq!(p.argv.last().unwrap(), "-");
            assert!(!p.argv.iter().any(|a| a == "--max-turns"));
            assert_eq!(p.turn_limit, "delegate");
            // Steps, not Codex turns (one per task): tool calls starting, file changes.
            assert_eq!(p.turn_marker.as_deref(), Some(CODEX_TURN_MARKER));
            assert!(CODEX_TURN_MARKER.contains("command_execution") && !CODEX_TURN_MARKER.contains("turn.started"));
        }
    }

    #[test]
    fn custom_agents_refuse_undeclared_levels() {
        let c = CustomAgent {
            command: vec!["aider".into(), "--message-file".into(), "{prompt_file}".into(), "--model={model}".into()],
            sandboxes: vec![Sandbox::Full],
            version_probe: false,
        };
        let mut r = req("my-aider", Sandbox::Write);
        r.custom = Some(&c);
        let err = plan(&r).unwrap_err().to_string();
        assert!(err.contains("my-aider") && err.contains("--sandbox full"), "{err}");
        r.sandbox = Sandbox::Full;
        let p = plan(&r).unwrap();
        assert_eq!(p.delivery, PromptDelivery::File);
        assert_eq!(p.argv[3], "--model=sonnet");
    }

    #[test]
    fn effort_and_budget_reach_each_agent_its_own_way_or_are_refused() {
        let opts = AgentOptions {
            reasoning_effort: Some(ReasoningEffort::Xhigh),
            max_budget_usd: Some(2.5),
            extra_args: vec!["--fallback-model".into(), "haiku".into()],
            credential_file: None,
            credential_env: None,
            usd_per_mtok: None,
        };
        let mut r = req("claude", Sandbox::Write);
        r.options = &opts;
        let a = plan(&r).unwrap().argv;
        let n = a.len();
        assert!(a.windows(2).any(|w| w == ["--effort", "xhigh"]), "{a:?}");
        assert!(a.windows(2).any(|w| w == ["--max-budget-usd", "2.5"]), "{a:?}");
        assert_eq!(&a[n - 2..], ["--fallback-model", "haiku"], "extra args come last: {a:?}");

        // Codex: effort as its config key, no budget of its own, nothing above xhigh.
        let codex_opts =
            AgentOptions { max_budget_usd: None, extra_args: vec!["--color".into(), "never".into()], ..opts.clone() };
        let mut r = req("codex", Sandbox::Write);
        r.options = &codex_opts;
        let a = plan(&r).unwrap().argv;
        let n = a.len();
        assert!(a.windows(2).any(|w| w == ["-c", "model_reasoning_effort=\"xhigh\""]), "{a:?}");
        assert_eq!(&a[n - 5..], ["--color", "never", "-o", "{task_dir}/last-message.txt", "-"], "{a:?}");
        r.options = &opts;
        let err = plan(&r).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::SettingRefused);
        assert!(err.to_string().contains("--max-budget-usd"), "{err}");
        // Without prices there is no amount to stop at: refused, naming the setting to add.
        assert!(err.to_string().contains("set usd_per_mtok = { input = X"), "{err}");
        // With them, delegate's runner holds the budget: recorded in the plan, not in argv.
        let prices = options::TokenPrices { input: 1.25, cached_input: 0.125, output: 10.0 };
        let priced = AgentOptions { usd_per_mtok: Some(prices), ..opts.clone() };
        r.options = &priced;
        let p = plan(&r).unwrap();
        assert_eq!(p.spend_limit, Some(SpendLimit { max_budget_usd: 2.5, usd_per_mtok: prices }));
        assert!(!p.argv.iter().any(|a| a.contains("budget")), "{:?}", p.argv);
        assert_eq!(prices.units(), [125_000, 12_500, 1_000_000]);
        assert_eq!(options::budget_units(2.5), 250_000_000_000);
        // Prices alone change nothing; bad prices are refused by name.
        let unpriced_budget = AgentOptions { max_budget_usd: None, ..priced.clone() };
        r.options = &unpriced_budget;
        assert_eq!(plan(&r).unwrap().spend_limit, None);
        let bad =
            AgentOptions { usd_per_mtok: Some(options::TokenPrices { output: f64::NAN, ..prices }), ..priced.clone() };
        r.options = &bad;
        assert!(plan(&r).unwrap_err().to_string().contains("output = NaN"));
        let max = AgentOptions { reasoning_effort: Some(ReasoningEffort::Max), ..Default::default() };
        r.options = &max;
        assert!(plan(&r).unwrap_err().to_string().contains("use --reasoning-effort xhigh"));

        // self-test runs no model; a custom command only with a placeholder for it.
        let mut r = req("self-test", Sandbox::Write);
        r.options = &max;
        assert!(plan(&r).unwrap_err().to_string().contains("self-test cannot take --reasoning-effort"));
        let c = CustomAgent { command: vec!["aider".into()], sandboxes: vec![Sandbox::Full], version_probe: false };
        let mut r = req("my-aider", Sandbox::Full);
        r.custom = Some(&c);
        r.options = &max;
        assert!(plan(&r).unwrap_err().to_string().contains("no {reasoning_effort} placeholder"));
        let with = CustomAgent { command: vec!["aider".into(), "--effort={reasoning_effort}".into()], ..c.clone() };
        r.custom = Some(&with);
        assert_eq!(plan(&r).unwrap().argv, ["aider", "--effort=max"]);
    }

    #[test]
    fn owned_flags_in_extra_args_are_refused_before_anything_runs() {
        let opts = AgentOptions { extra_args: vec!["--dangerously-skip-permissions".into()], ..Default::default() };
        let mut r = req("claude", Sandbox::Read);
        r.options = &opts;
        let err = plan(&r).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::SettingRefused);
        assert!(err.to_string().contains("--dangerously-skip-permissions is owned by delegate"), "{err}");
    }
}
