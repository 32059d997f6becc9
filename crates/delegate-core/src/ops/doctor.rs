//! `delegate doctor`: everything a launch needs, checked on each brother without launching.
//!
//! One fresh SSH connection and one exec per host (the host's brothers share the exec),
//! hosts in parallel. Connecting is itself the first checks: reachable, host key, who
//! authenticated with which key. Then `remote/scripts/doctor.sh`, sent behind
//! `remote/scripts/agent-env.sh` (the functions the launch script finds the agent with, so both
//! find the same one), checks the host's tools and, per brother, the agent and the
//! environment it is found in, its version, the sandbox level's requirements, credentials,
//! the remote root and the workdir. It changes nothing on the brother.
//!
//! The brother answers in a line protocol (see the script's header), read here as untrusted
//! input: the output is bounded, control characters are dropped, every word is checked
//! against what the script can say, and the fixes are this file's text, picked by key.
//!
//! Connections here never go through the pool or the warm daemon: a kept connection would
//! hide what a first connection meets (host key, authentication). A `transport = "ssh"` host
//! is checked through the system ssh, the way its launches go.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;

use crate::agents::{self, AgentRequest};
use crate::delegate::Delegate;
use crate::error::{Error, Result};
use crate::hosts::inventory::{AgentEnvironment, is_builtin_agent};
use crate::ops::launch::clean_line;
use crate::remote::{self, list_field};
use crate::task::Sandbox;
use crate::transport::ssh::{ExecOutput, Exit, Session, SshTarget};

/// How much of the brother's answer is read: a few hundred bytes per finding is plenty.
const MAX_OUTPUT: usize = 256 * 1024;
/// Findings kept per brother from its answer (the script sends about a dozen).
const MAX_REMOTE_FINDINGS: usize = 40;
/// Characters kept of one detail.
const MAX_DETAIL: usize = 600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Worth knowing, but a launch works (no git work tree, no credentials seen, low disk).
    Warn,
    /// A launch would fail, or would run somewhere unsafe.
    Fail,
}

/// One check and what it found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: String,
    pub status: Status,
    pub detail: String,
    /// What to do about it (warnings and failures).
    pub fix: Option<String>,
}

/// Everything found for one brother.
#[derive(Debug, Clone, Serialize)]
pub struct BrotherReport {
    pub brother: String,
    pub host: String,
    /// `user@hostname:port`, when the host resolved.
    pub address: Option<String>,
    pub agent: String,
    pub sandbox: Sandbox,
    /// No finding failed.
    pub can_launch: bool,
    /// The key that authenticated (path or ssh-agent key, with its fingerprint).
    pub identity: Option<String>,
    pub remote_user: Option<String>,
    pub agent_path: Option<String>,
    /// plain, login or interactive: the environment the agent was found in.
    pub environment: Option<String>,
    pub agent_version: Option<String>,
    pub findings: Vec<Finding>,
}

/// Checks `brothers` (every brother in the inventory when empty). Fails only for a name the
/// inventory does not have; everything else is a finding.
pub(crate) async fn doctor(d: &Delegate, brothers: &[String]) -> Result<Vec<BrotherReport>> {
    let inv = d.inventory();
    let names: Vec<String> = if brothers.is_empty() {
        inv.brothers.keys().cloned().collect()
    } else {
        let mut seen = BTreeSet::new();
        brothers.iter().filter(|b| seen.insert(b.as_str())).cloned().collect()
    };
    let mut planned = Vec::with_capacity(names.len());
    for name in &names {
        inv.brother(name)?;
        planned.push(plan(d, name));
    }
    // Brothers by host: one connection and one exec each.
    let mut hosts: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, p) in planned.iter().enumerate() {
        hosts.entry(p.report.host.clone()).or_default().push(i);
    }
    let mut jobs = tokio::task::JoinSet::new();
    for (host, members) in hosts {
        if let Ok(crate::transport::Reach::Nats(t)) = d.reach(&host) {
            // No SSH: what the lead can see from its side of the NATS server.
            let findings = crate::ops::nats_doctor::check(d.transport(), &t).await;
            for &i in &members {
                planned[i].report.address = Some(t.address());
                planned[i].report.findings.extend(findings.iter().cloned());
            }
            continue;
        }
        let target = match d.resolve_target(&host) {
            Ok(t) => t,
            Err(e) => {
                for &i in &members {
                    planned[i].report.findings.push(fail("config", e.to_string(), None));
                }
                continue;
            }
        };
        let address = format!("{}@{}:{}", target.user, target.hostname, target.port);
        let mut vars = Vec::new();
        for &i in &members {
            planned[i].report.address = Some(address.clone());
            planned[i].user = target.user.clone();
            if let Some(v) = &planned[i].vars {
                vars.push((i, v.clone()));
            }
        }
        jobs.spawn(async move { (members, check_host(target, vars).await) });
    }
    while let Some(done) = jobs.join_next().await {
        let (members, outcome) = done.expect("doctor jobs do not panic");
        for i in members {
            apply(&mut planned[i], i, &outcome);
        }
    }
    Ok(planned
        .into_iter()
        .map(|p| {
            let mut r = p.report;
            r.can_launch = !r.findings.iter().any(|f| f.status == Status::Fail);
            r
        })
        .collect())
}

/// One brother before anything is sent: its report so far, what its checks need on the
/// brother, and what its fixes name.
struct Planned {
    report: BrotherReport,
    /// `None` when the brother cannot launch whatever the host says (the inventory's
    /// sandbox level is one its agent refuses).
    vars: Option<BrotherVars>,
    ctx: FixContext,
    user: String,
    /// The level and what enforces it, put in front of the brother's sandbox finding.
    sandbox_summary: String,
}

/// What `doctor.sh` needs for one brother (its fields, in order).
#[derive(Clone)]
struct BrotherVars {
    kind: String,
    sandbox: Sandbox,
    remote_root: String,
    workdir: String,
    environment: AgentEnvironment,
    env_files: Vec<String>,
    agent_cmd: String,
    version_argv: Vec<String>,
    requires: Vec<String>,
    sandbox_probe: Vec<String>,
    refuse_root: bool,
    /// Whose credentials to look for: claude, codex or nothing.
    credentials: String,
    /// The profile's `credential_env`: a variable that must be set for the agent.
    credential_env: String,
}

/// The inventory's facts the fix texts name.
#[derive(Clone, Default)]
struct FixContext {
    brother: String,
    host: String,
    agent: String,
    agent_cmd: String,
    remote_root: String,
    workdir: String,
    environment: String,
    requires_hint: String,
}

fn plan(d: &Delegate, name: &str) -> Planned {
    let inv = d.inventory();
    let (b, h) = inv.brother(name).expect("checked by the caller");
    let remote_root = h.remote_root.clone().unwrap_or_else(|| crate::hosts::inventory::DEFAULT_REMOTE_ROOT.into());
    let (environment, mut env_files) = crate::hosts::inventory::agent_environment(h, Some(b));
    // What a launch naming nothing but the brother runs: its default profile applied.
    let bare = crate::ops::launch::LaunchRequest { brother: name.to_string(), ..Default::default() };
    let settings = crate::ops::settings::resolve(inv, b, &bare, &d.paths().config_file);
    let chosen = settings.as_ref().ok();
    let agent = chosen.map_or(b.agent.clone(), |s| s.agent.clone());
    let sandbox = chosen.map_or(b.sandbox, |s| s.sandbox);
    let options = chosen.map(|s| s.options.clone()).unwrap_or_default();
    env_files.extend(options.credential_file.clone());
    let report = BrotherReport {
        brother: name.to_string(),
        host: b.host.clone(),
        address: None,
        agent: agent.clone(),
        sandbox,
        can_launch: false,
        identity: None,
        remote_user: None,
        agent_path: None,
        environment: None,
        agent_version: None,
        findings: Vec::new(),
    };
    let mut ctx = FixContext {
        brother: name.to_string(),
        host: b.host.clone(),
        agent: agent.clone(),
        remote_root: remote_root.clone(),
        workdir: b.workdir.clone(),
        environment: environment.as_str().to_string(),
        ..FixContext::default()
    };
    let plan = settings.and_then(|s| {
        agents::plan(&AgentRequest {
            agent: &s.agent,
            model: s.model.as_deref(),
            sandbox: s.sandbox,
            max_turns: s.max_turns,
            workdir: &b.workdir,
            custom: inv.agents.get(&s.agent),
            agent_path: crate::ops::launch::agent_path_for(b, &s.agent),
            options: &s.options,
        })
    });
    let mut planned =
        Planned { report, vars: None, ctx: ctx.clone(), user: String::new(), sandbox_summary: String::new() };
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            planned.report.findings.push(fail("sandbox", e.to_string(), None));
            return planned;
        }
    };
    // The self-test agent's program is written by each launch; there is none to ask yet.
    let version_argv = if agent == "self-test" { vec![] } else { plan.version_argv.clone() };
    planned.sandbox_summary = format!("{} (enforced by: {})", plan.effective_sandbox, plan.enforcement);
    ctx.agent_cmd = plan.argv[0].clone();
    ctx.requires_hint = plan.requires_hint.clone();
    planned.ctx = ctx;
    planned.vars = Some(BrotherVars {
        kind: plan.kind.clone(),
        sandbox,
        remote_root,
        workdir: b.workdir.clone(),
        environment,
        env_files,
        agent_cmd: plan.argv[0].clone(),
        version_argv,
        requires: plan.requires.clone(),
        sandbox_probe: plan.sandbox_probe.clone(),
        refuse_root: plan.refuse_root,
        credentials: if is_builtin_agent(&agent) && agent != "self-test" { agent.clone() } else { String::new() },
        credential_env: options.credential_env.clone().unwrap_or_default(),
    });
    planned
}

/// What one host gave: the connection's findings, and the script's answer.
struct HostOutcome {
    connection: Vec<Finding>,
    identity: Option<String>,
    /// Brother index (in the caller's list) to its position in the script's variables.
    slots: BTreeMap<usize, usize>,
    answer: Option<Result<ExecOutput>>,
}

async fn check_host(target: SshTarget, vars: Vec<(usize, BrotherVars)>) -> HostOutcome {
    let slots = vars.iter().enumerate().map(|(slot, (i, _))| (*i, slot)).collect();
    let mut outcome = HostOutcome { connection: Vec::new(), identity: None, slots, answer: None };
    // `transport = "ssh"`: the user chose the system ssh because russh may not get in at all
    // (FIDO keys, GSSAPI, options delegate refuses), so doctor goes the way the launch goes.
    if let Some(argv) = target.system_ssh.clone() {
        check_through_system_ssh(&target, &argv, vars, &mut outcome).await;
        return outcome;
    }
    let session = match Session::connect(&target).await {
        Ok(s) => s,
        Err(e) => {
            outcome.connection.push(connect_failure(&target, &e));
            return outcome;
        }
    };
    let t = &session.timings;
    outcome.connection.push(ok(
        "connect",
        format!(
            "{}@{}:{}: TCP {} ms, key exchange {} ms, authentication {} ms",
            target.user, target.hostname, target.port, t.tcp_ms, t.handshake_ms, t.auth_ms
        ),
    ));
    let files: Vec<String> = target.known_hosts.iter().map(|p| p.display().to_string()).collect();
    outcome
        .connection
        .push(ok("host_key", format!("{} trusted (known_hosts: {})", session.host_key, files.join(", "))));
    outcome.connection.push(ok("auth", format!("as {} with {}", target.user, session.identity)));
    outcome.identity = Some(clean_line(&session.identity, MAX_DETAIL));
    if !vars.is_empty() {
        let script = render(&vars.into_iter().map(|(_, v)| v).collect::<Vec<_>>());
        let limit = script_limit(outcome.slots.len());
        outcome.answer = Some(match script {
            Ok(s) => session.exec_bounded(remote::REMOTE_COMMAND, &s, limit, MAX_OUTPUT).await,
            Err(e) => Err(e),
        });
    }
    session.close().await;
    outcome
}

/// Each brother's probes have 10 s deadlines (shells, version, sandbox): about a minute at
/// worst, run one brother after another.
fn script_limit(brothers: usize) -> Duration {
    Duration::from_secs(30 + 60 * brothers as u64)
}

/// The host's one exec through the system ssh (see [`crate::transport::ssh::system`]). Connecting is not
/// a step of its own there: ssh connects, checks the host key and authenticates, and either
/// starts the command or says why not. So the connection findings come from that one exec,
/// and what ssh does not tell (which key got in) is said to be unknown rather than guessed.
async fn check_through_system_ssh(
    target: &SshTarget,
    argv: &[String],
    vars: Vec<(usize, BrotherVars)>,
    outcome: &mut HostOutcome,
) {
    // With no brother to check (every plan failed already), `true` still checks the way in.
    let (command, stdin, script_error) = if vars.is_empty() {
        ("true", Vec::new(), None)
    } else {
        match render(&vars.into_iter().map(|(_, v)| v).collect::<Vec<_>>()) {
            Ok(s) => (remote::REMOTE_COMMAND, s, None),
            Err(e) => ("true", Vec::new(), Some(e)),
        }
    };
    let limit = script_limit(outcome.slots.len());
    let started = std::time::Instant::now();
    let out = match crate::transport::ssh::system::exec(target, argv, command, &stdin, limit, MAX_OUTPUT).await {
        Ok(out) => out,
        Err(e) => {
            outcome.connection.push(system_ssh_failure(target, argv, &e));
            return;
        }
    };
    let strict = if target.accept_new { "accept-new" } else { "yes" };
    outcome.connection.push(ok(
        "connect",
        format!(
            "through the system ssh (transport = ssh) to {}: connected and ran the checks in {} ms",
            argv.last().map(String::as_str).unwrap_or(&target.hostname),
            started.elapsed().as_millis()
        ),
    ));
    outcome
        .connection
        .push(ok("host_key", format!("checked by ssh itself (StrictHostKeyChecking={strict}, its known_hosts files)")));
    outcome.connection.push(ok(
        "auth",
        "ssh authenticated without a prompt (BatchMode); which key it used is not known to delegate".to_string(),
    ));
    if !outcome.slots.is_empty() {
        outcome.answer = Some(match script_error {
            Some(e) => Err(e),
            None => Ok(out),
        });
    }
}

/// Why the system ssh never started the checks, sorted into the check it belongs to by ssh's
/// own words (its message is the detail either way).
fn system_ssh_failure(t: &SshTarget, argv: &[String], e: &Error) -> Finding {
    let quoted: Vec<String> = argv.iter().map(|w| shell_word(w)).collect();
    let by_hand = format!("{} true", quoted.join(" "));
    let stderr = match e {
        Error::SystemSsh { stderr, .. } => stderr.as_str(),
        _ => "",
    };
    let (check, fix) = if stderr.contains("Host key verification failed") || stderr.contains("HOST IDENTIFICATION") {
        // ssh checks the key itself here, so ssh records it: the same command (same config,
        // known_hosts and key) without what keeps it from asking.
        let mut interactive = Vec::new();
        let mut words = argv.iter();
        while let Some(w) = words.next() {
            let next = words.clone().next().map(String::as_str).unwrap_or_default();
            if w == "-o" && (next.starts_with("BatchMode=") || next.starts_with("StrictHostKeyChecking=")) {
                words.next();
                continue;
            }
            interactive.push(shell_word(w));
        }
        let record = interactive.join(" ");
        (
            "host_key",
            format!(
                "ssh refused the host key: if it is new, connect once with `{record}` and compare the fingerprint it \
                 shows with the host's (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub on it); then check again with: \
                 {by_hand}"
            ),
        )
    } else if stderr.contains("Permission denied") || stderr.contains("Too many authentication failures") {
        ("auth", format!("ssh could not authenticate without a prompt: {}; try: {by_hand}", auth_fix(t)))
    } else {
        ("connect", format!("see what ssh meets by hand: {by_hand}"))
    };
    fail(check, clean_line(&e.to_string(), MAX_DETAIL), Some(fix))
}

/// `w` as one shell word, quoted only when it needs to be.
fn shell_word(w: &str) -> String {
    if !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+%".contains(&b)) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// `DLG_DOCTOR` (14 fields per brother, each followed by NUL), agent-env.sh, doctor.sh.
fn render(brothers: &[BrotherVars]) -> Result<Vec<u8>> {
    let mut vars = Vec::new();
    for (i, b) in brothers.iter().enumerate() {
        remote::field(&mut vars, "index", &i.to_string())?;
        remote::field(&mut vars, "agent", &b.kind)?;
        remote::field(&mut vars, "sandbox", b.sandbox.as_str())?;
        remote::field(&mut vars, "remote root", &b.remote_root)?;
        remote::field(&mut vars, "workdir", &b.workdir)?;
        remote::field(&mut vars, "environment", b.environment.as_str())?;
        list_field(&mut vars, "env files", b.env_files.iter().map(String::as_str))?;
        remote::field(&mut vars, "agent command", &b.agent_cmd)?;
        list_field(&mut vars, "version argv", b.version_argv.iter().map(String::as_str))?;
        list_field(&mut vars, "sandbox requirements", b.requires.iter().map(String::as_str))?;
        list_field(&mut vars, "sandbox probe", b.sandbox_probe.iter().map(String::as_str))?;
        remote::field(&mut vars, "refuse root", if b.refuse_root { "1" } else { "0" })?;
        remote::field(&mut vars, "credentials", &b.credentials)?;
        remote::field(&mut vars, "credential env", &b.credential_env)?;
    }
    let mut out = format!("DLG_DOCTOR='{}'\n", B64.encode(&vars)).into_bytes();
    out.extend_from_slice(remote::AGENT_ENV_SH.as_bytes());
    out.extend_from_slice(remote::DOCTOR_SH.as_bytes());
    Ok(out)
}

/// Adds what the host gave to brother `i`'s report.
fn apply(p: &mut Planned, i: usize, outcome: &HostOutcome) {
    let r = &mut p.report;
    r.findings.splice(0..0, outcome.connection.iter().cloned());
    r.identity = outcome.identity.clone();
    let (Some(answer), Some(&slot)) = (&outcome.answer, outcome.slots.get(&i)) else { return };
    let out = match answer {
        Ok(out) => out,
        Err(e) => {
            r.findings.push(fail("checks", clean_line(&e.to_string(), MAX_DETAIL), None));
            return;
        }
    };
    let answer = parse(&out.stdout);
    let mine = |target: &Target| matches!(target, Target::All) || *target == Target::One(slot);
    let mut kept = 0;
    for (target, line) in &answer.lines {
        if !mine(target) {
            continue;
        }
        match line {
            Line::Finding { check, status, fix, detail } if kept < MAX_REMOTE_FINDINGS => {
                kept += 1;
                let fix = fix.and_then(|key| fix_text(key, &p.ctx, &p.user));
                let detail =
                    if *check == "sandbox" { format!("{}; {detail}", p.sandbox_summary) } else { detail.clone() };
                r.findings.push(Finding { check: check.to_string(), status: *status, detail, fix });
            }
            Line::Finding { .. } => {}
            Line::Fact { key, value } => {
                let field = match *key {
                    "remote_user" => &mut r.remote_user,
                    "agent_path" => &mut r.agent_path,
                    "environment" => &mut r.environment,
                    _ => &mut r.agent_version,
                };
                *field = Some(value.clone());
            }
        }
    }
    if !answer.done.contains(&slot) {
        r.findings.push(unfinished(out));
    }
}

/// Why a brother's checks did not all report.
fn unfinished(out: &ExecOutput) -> Finding {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = stderr
        .lines()
        .map(|l| l.strip_prefix("DOCTOR-ERROR ").unwrap_or(l))
        .find(|l| !l.trim().is_empty())
        .map(|l| clean_line(l, 300));
    let detail = match (&out.exit, &out.broken) {
        (_, Some(broken)) => format!("the checks did not finish: {broken}"),
        (Exit::Code(c), None) => {
            format!("the checks stopped (exit {c}){}", said.as_ref().map(|s| format!(": {s}")).unwrap_or_default())
        }
        (Exit::Signal(s), None) => format!("the checks were killed by {s}"),
        (Exit::Unknown, None) => "the checks ended without an exit status".into(),
    };
    let fix = (out.exit == Exit::Code(127))
        .then(|| "install bash on this host: delegate's scripts run under bash (apt-get install bash)".to_string());
    fail("checks", detail, fix)
}

/// Which brothers a line is about: all on the host (`*`), or one by its position.
#[derive(Debug, PartialEq)]
enum Target {
    All,
    One(usize),
}

#[derive(Debug)]
enum Line {
    Finding { check: &'static str, status: Status, fix: Option<&'static str>, detail: String },
    Fact { key: &'static str, value: String },
}

#[derive(Debug, Default)]
struct Answer {
    lines: Vec<(Target, Line)>,
    done: BTreeSet<usize>,
}

/// What doctor.sh can say; anything else is dropped.
const CHECKS: &[&str] = &[
    "bash",
    "tools",
    "tmux",
    "agent",
    "env_file",
    "credential_env",
    "sandbox",
    "agent_version",
    "credentials",
    "remote_root",
    "disk",
    "workdir",
];
const FACTS: &[&str] = &["remote_user", "agent_path", "environment", "agent_version"];
const FIXES: &[&str] = &[
    "bash_old",
    "tools_missing",
    "tmux_missing",
    "shell_env",
    "agent_path_bad",
    "agent_alias",
    "agent_missing",
    "agent_cannot_run",
    "version_failed",
    "env_file",
    "credential_env",
    "sandbox_tools",
    "sandbox_root",
    "sandbox_probe",
    "credentials",
    "root_symlink",
    "root_owner",
    "root_mode",
    "root_not_writable",
    "disk_low",
    "workdir_missing",
    "workdir_not_git",
];

/// The word from `known` equal to `word`, as a `'static` str (so nothing of the brother's
/// text is kept as a name).
fn known(known: &[&'static str], word: &str) -> Option<&'static str> {
    known.iter().copied().find(|k| *k == word)
}

fn target(word: &str) -> Option<Target> {
    match word {
        "*" => Some(Target::All),
        n if n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit()) => n.parse().ok().map(Target::One),
        _ => None,
    }
}

/// Parses the script's stdout; lines that do not follow the protocol are ignored.
fn parse(stdout: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(&stdout[..stdout.len().min(MAX_OUTPUT)]);
    let mut answer = Answer::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("DOCTOR ") {
            let mut w = rest.splitn(5, ' ');
            let (Some(t), Some(check), Some(status), Some(fix)) = (w.next(), w.next(), w.next(), w.next()) else {
                continue;
            };
            let status = match status {
                "ok" => Status::Ok,
                "warn" => Status::Warn,
                "fail" => Status::Fail,
                _ => continue,
            };
            let (Some(t), Some(check)) = (target(t), known(CHECKS, check)) else { continue };
            let detail = clean_line(w.next().unwrap_or(""), MAX_DETAIL);
            answer.lines.push((t, Line::Finding { check, status, fix: known(FIXES, fix), detail }));
        } else if let Some(rest) = line.strip_prefix("DOCTOR-FACT ") {
            let mut w = rest.splitn(3, ' ');
            let (Some(t), Some(key)) = (w.next().and_then(target), w.next().and_then(|k| known(FACTS, k))) else {
                continue;
            };
            answer.lines.push((t, Line::Fact { key, value: clean_line(w.next().unwrap_or(""), 300) }));
        } else if let Some(Some(Target::One(i))) = line.strip_prefix("DOCTOR-DONE ").map(target) {
            answer.done.insert(i);
        }
    }
    answer
}

fn ok(check: &str, detail: String) -> Finding {
    Finding { check: check.into(), status: Status::Ok, detail: clean_line(&detail, MAX_DETAIL), fix: None }
}

fn fail(check: &str, detail: String, fix: Option<String>) -> Finding {
    Finding { check: check.into(), status: Status::Fail, detail: clean_line(&detail, MAX_DETAIL), fix }
}

/// A connection that did not get through, as the check it failed and its fix.
fn connect_failure(t: &SshTarget, e: &Error) -> Finding {
    let host = &t.host;
    let (check, fix) = match e {
        Error::HostKeyUnknown { fingerprint, .. } => (
            "host_key",
            format!(
                "check that {fingerprint} is the host's key (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub on it), then: \
                 delegate hosts trust {host} --fingerprint {fingerprint}"
            ),
        ),
        Error::HostKeyChanged { lookup, file, .. } => (
            "host_key",
            format!(
                "find out why the key changed; if the host was really re-keyed: ssh-keygen -R '{lookup}' -f {}, then \
                 delegate hosts trust {host} --fingerprint <its new fingerprint>",
                file.display()
            ),
        ),
        Error::HostKeyRevoked { file, .. } => {
            ("host_key", format!("the key is revoked in {}: ask the host's administrator", file.display()))
        }
        Error::KnownHosts(_) => ("host_key", "fix the known_hosts file named above".into()),
        Error::AuthRefused { .. }
        | Error::AuthDisconnected { .. }
        | Error::Timeout { phase: "authenticating", .. }
        | Error::Ssh { phase: "authenticating", .. } => ("auth", auth_fix(t)),
        Error::SshConfig(_) | Error::Config { .. } => ("config", "fix the file named above".into()),
        _ => (
            "connect",
            format!(
                "check the address and port of host {host} (delegate hosts list), that sshd runs there, and that the \
                 network lets you through (ssh -p {} {}@{} true)",
                t.port, t.user, t.hostname
            ),
        ),
    };
    fail(check, e.to_string(), Some(fix))
}

fn auth_fix(t: &SshTarget) -> String {
    format!(
        "check hosts.{}.user ({}) and hosts.{}.identity, or load the key into ssh-agent (ssh-add); its public key \
         must be in ~{}/.ssh/authorized_keys on the host",
        t.host, t.user, t.host, t.user
    )
}

/// The fix for a finding the brother reported, by its key.
fn fix_text(key: &str, c: &FixContext, user: &str) -> Option<String> {
    let (b, h) = (&c.brother, &c.host);
    Some(match key {
        "bash_old" => "install bash 4.4 or newer on this host (apt-get install bash)".into(),
        "tools_missing" => {
            "install coreutils, grep and util-linux (flock) on this host (apt-get install coreutils grep util-linux)"
                .into()
        }
        "tmux_missing" => "install tmux on this host: apt-get install tmux (dnf install tmux)".into(),
        "shell_env" => format!(
            "fix the start-up files of {user}'s {} shell on {h} (they must finish within 10 s without input), or set \
             environment = \"plain\" for host {h} or brother {b}",
            c.environment
        ),
        "agent_path_bad" => {
            format!("fix agent_path of brother {b}: it must name the program's file on {h} (`command -v` there)")
        }
        "agent_alias" => format!(
            "set agent_path of brother {b} to the program's absolute path: delegate runs programs, not aliases \
             (delegate brothers add {b} ... --agent-path PATH)"
        ),
        "agent_missing" => match c.agent.as_str() {
            "claude" => format!(
                "install Claude Code for {user} on {h} (npm install -g @anthropic-ai/claude-code, or its native \
                 installer), or set agent_path of brother {b} to its absolute path"
            ),
            "codex" => format!(
                "install Codex for {user} on {h} (npm install -g @openai/codex), or set agent_path of brother {b} to \
                 its absolute path"
            ),
            other => format!(
                "install {} for {user} on {h}, or fix agents.{other}.command (an absolute path works too)",
                c.agent_cmd
            ),
        },
        "agent_cannot_run" => format!(
            "the program is there but cannot start: if it is a node script, node must be on the PATH of the \
             environment it was found in; reinstall it for {user}, or set agent_path of brother {b}"
        ),
        "version_failed" => {
            format!("run `{} --version` on {h} as {user} to see why (a launch goes ahead anyway)", c.agent_cmd)
        }
        "env_file" => "fix the env_file on the host (NAME=value lines), or remove env_file from the inventory".into(),
        "credential_env" => format!(
            "set the profile's credential_env variable for {user} on {h}: export it in ~/.profile there, or put \
             NAME=value in an env_file or the profile's credential_file; or fix credential_env in the profile"
        ),
        "sandbox_tools" => format!(
            "{}, or choose another sandbox for brother {b} (delegate refuses rather than run with less isolation)",
            if c.requires_hint.is_empty() { "install them" } else { &c.requires_hint }
        ),
        "sandbox_root" => {
            format!("log in to {h} as an unprivileged user (hosts.{h}.user), or use sandbox write for brother {b}")
        }
        "sandbox_probe" => format!(
            "unprivileged user namespaces are probably off (containers, hardened kernels): enable them (sysctl \
             kernel.unprivileged_userns_clone=1, or raise user.max_user_namespaces), or choose another sandbox for \
             brother {b}"
        ),
        "credentials" => match c.agent.as_str() {
            "claude" => format!(
                "log in once on {h} as {user} (run claude, then /login), or export ANTHROPIC_API_KEY in ~/.profile \
                 there or in an env_file; ignore this if the key comes from elsewhere (managed settings, a wrapper)"
            ),
            _ => format!(
                "run `codex login` on {h} as {user}, or export OPENAI_API_KEY in ~/.profile there or in an env_file; \
                 ignore this if the key comes from elsewhere"
            ),
        },
        "root_symlink" => format!(
            "set remote_root of host {h} to the real directory (the link's target), or replace the link with a \
             directory of {user}'s own"
        ),
        "root_owner" => format!("chown {} to {user} on {h}, or set another remote_root for host {h}", c.remote_root),
        "root_mode" => format!("chmod go-w {} on {h} (delegate creates it 0700)", c.remote_root),
        "root_not_writable" => format!(
            "make {} a directory {user} can write on {h}, or set another remote_root for host {h} (delegate hosts \
             add {h} ... --remote-root PATH)",
            c.remote_root
        ),
        "disk_low" => {
            format!("free space on the filesystem holding {} on {h}, or move remote_root of host {h}", c.remote_root)
        }
        "workdir_missing" => format!("create {} on {h}, or fix workdir of brother {b}", c.workdir),
        "workdir_not_git" => format!(
            "agents work best in a git work tree (their changes can be reviewed and undone): git init in {}, or \
             point workdir of brother {b} at a repository",
            c.workdir
        ),
        _ => return None,
    })
}

impl Delegate {
    /// Checks everything a launch needs on each of `brothers` (all of the inventory's when
    /// empty), changing nothing there: one fresh SSH connection and one exec per host, hosts
    /// in parallel. `Err` only for a name the inventory does not have; every problem on the
    /// way is a [`crate::ops::doctor::Finding`] with its fix. See [`crate::ops::doctor`].
    pub async fn doctor(&self, brothers: &[String]) -> Result<Vec<BrotherReport>> {
        doctor(self, brothers).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_protocol_is_read() {
        let out = b"DOCTOR * tmux fail tmux_missing tmux not found\n\
            DOCTOR 0 agent ok - /usr/bin/claude (found by the login environment)\x1b[31m\n\
            DOCTOR 0 rm_rf ok - not a check\n\
            DOCTOR 0 agent maybe - not a status\n\
            DOCTOR 9999999 agent ok - index too long\n\
            DOCTOR 0 workdir warn eval_this detail\n\
            DOCTOR-FACT 0 agent_path /usr/bin/claude\n\
            DOCTOR-FACT 0 secret x\n\
            DOCTOR-DONE 0\n\
            DOCTOR-DONE x\n";
        let a = parse(out);
        assert_eq!(a.lines.len(), 4, "{a:?}");
        assert!(matches!(
            &a.lines[0],
            (Target::All, Line::Finding { check: "tmux", status: Status::Fail, fix: Some("tmux_missing"), .. })
        ));
        match &a.lines[1] {
            (Target::One(0), Line::Finding { detail, .. }) => {
                // The whole escape sequence goes, not only its ESC.
                assert_eq!(detail, "/usr/bin/claude (found by the login environment)")
            }
            other => panic!("{other:?}"),
        }
        // An unknown fix key gives no fix, not the brother's words.
        assert!(matches!(&a.lines[2], (_, Line::Finding { check: "workdir", fix: None, .. })));
        assert!(matches!(&a.lines[3], (_, Line::Fact { key: "agent_path", .. })));
        assert_eq!(a.done, BTreeSet::from([0]));
    }

    #[test]
    fn output_beyond_the_bound_is_not_read() {
        let mut out = vec![b'x'; MAX_OUTPUT];
        out.extend_from_slice(b"\nDOCTOR-DONE 0\n");
        assert!(parse(&out).done.is_empty());
    }

    #[test]
    fn every_fix_key_has_a_text_and_every_script_key_is_known() {
        let c = FixContext { agent: "claude".into(), ..FixContext::default() };
        for key in FIXES {
            assert!(fix_text(key, &c, "u").is_some(), "{key}");
        }
        // Each key, check and fact the script uses is one this side reads.
        let script = remote::DOCTOR_SH;
        for line in script.lines().filter(|l| l.contains("say \"$idx\"") || l.contains("say '*'")) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "say").unwrap();
            assert!(CHECKS.contains(&words[at + 2]), "{line}");
            assert!(words[at + 4] == "-" || FIXES.contains(&words[at + 4]), "{line}");
        }
    }
}
