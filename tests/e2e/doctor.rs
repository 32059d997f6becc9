//! `delegate doctor`: everything a launch needs, checked on real sshd hosts without
//! launching. Each test breaks one thing the way it breaks on real machines and checks the
//! finding names it, with its fix, and that the exit code says whether the brother can
//! launch (0, or 32 when one cannot).

use delegate_testkit::FakeHost;
use delegate_testkit::brothers::{self, Install};
use delegate_testkit::model::{ModelStandIn, Reply, Script};
use serde_json::Value;

use crate::support::{Env, Run, execs};

const PROBLEMS: i32 = 32;

/// `doctor --json` for `args`; the exit code must be `code`.
fn doctor_json(env: &Env, args: &[&str], code: i32) -> (Run, Vec<Value>) {
    let mut all = vec!["doctor", "--json"];
    all.extend_from_slice(args);
    let run = env.run(&all).fails_with(code);
    let reports = run.json().as_array().unwrap_or_else(|| panic!("not an array:\n{run}")).clone();
    (run, reports)
}

/// The report's finding for `check` (the first one), with the report printed on failure.
fn finding<'a>(report: &'a Value, check: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no {check} finding in {report:#}"))
}

fn status_of(report: &Value, check: &str) -> String {
    finding(report, check)["status"].as_str().unwrap().to_string()
}

/// Every report and finding has the documented shape.
fn assert_shape(reports: &[Value]) {
    for r in reports {
        for key in ["brother", "host", "agent", "sandbox"] {
            assert!(r[key].is_string(), "{key} in {r:#}");
        }
        assert!(r["can_launch"].is_boolean(), "{r:#}");
        let findings = r["findings"].as_array().unwrap_or_else(|| panic!("findings in {r:#}"));
        assert!(!findings.is_empty());
        for f in findings {
            assert!(f["check"].is_string() && f["detail"].is_string(), "{f}");
            assert!(matches!(f["status"].as_str(), Some("ok" | "warn" | "fail")), "{f}");
            assert!(f["fix"].is_null() || f["fix"].is_string(), "{f}");
            if f["status"] == "fail" {
                assert!(f["fix"].is_string(), "a failure without its fix: {f}");
            }
        }
        let failed = findings.iter().any(|f| f["status"] == "fail");
        assert_eq!(r["can_launch"], !failed, "{r:#}");
    }
}

#[test]
fn a_healthy_host_passes_in_one_exec_and_names_the_agents_path_environment_and_version() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "claude", "write");
    env.add_brother("spirit", "h", &host, "codex", "write");
    let git = host.ssh(&format!("git init -q {}", host.workdir().display())).output().unwrap();
    assert!(git.status.success(), "git init: {}", String::from_utf8_lossy(&git.stderr));
    let before = execs(&host);
    let (_, reports) = doctor_json(&env, &[], 0);
    // Both brothers of the host in one exec (and nothing launched, nothing written).
    assert_eq!(execs(&host) - before, 1, "{}", host.sshd_log());
    assert!(std::fs::read_dir(host.remote_root()).unwrap().next().is_none(), "doctor wrote into remote_root");
    assert!(host.agent_records().is_empty(), "doctor ran an agent for real");
    assert_shape(&reports);
    assert_eq!(reports.len(), 2);
    let oppy = reports.iter().find(|r| r["brother"] == "oppy").unwrap();
    assert_eq!(oppy["can_launch"], true, "{oppy:#}");
    let bin = host.dir().join("bin");
    assert_eq!(oppy["agent_path"], bin.join("claude").to_str().unwrap(), "{oppy:#}");
    // The default environment is the login shell's, and the fake agent is on sshd's PATH,
    // which the login PATH is joined with: found there, as a launch would find it.
    assert_eq!(oppy["environment"], "login");
    assert_eq!(oppy["agent_version"], "2.1.329 (Claude Code)");
    assert!(oppy["identity"].as_str().unwrap().contains(host.client_key().to_str().unwrap()), "{oppy:#}");
    for check in ["connect", "host_key", "auth", "bash", "tools", "tmux", "agent", "sandbox", "remote_root", "workdir"]
    {
        assert_eq!(status_of(oppy, check), "ok", "{check}: {oppy:#}");
    }
    assert!(finding(oppy, "sandbox")["detail"].as_str().unwrap().contains("bwrap --ro-bind / / true"), "{oppy:#}");
    assert!(finding(oppy, "auth")["detail"].as_str().unwrap().contains(host.user()), "{oppy:#}");
    let spirit = reports.iter().find(|r| r["brother"] == "spirit").unwrap();
    assert_eq!(spirit["agent_version"], "codex-cli 0.169.0", "{spirit:#}");
    assert!(finding(spirit, "sandbox")["detail"].as_str().unwrap().contains("write"), "{spirit:#}");

    // The same, for people: one block per brother, a line per finding.
    let run = env.run(&["doctor", "oppy"]).ok();
    let out = run.stdout();
    assert!(out.contains("oppy (claude agent, sandbox write) on h: can launch"), "{run}");
    assert!(
        out.contains(&format!("agent         {} (found by the login environment)", bin.join("claude").display())),
        "{run}"
    );
    assert!(!out.contains("spirit"), "only the brother named: {run}");
}

#[test]
fn a_missing_agent_fails_with_how_to_install_it() {
    let host = FakeHost::builder().without_fake_agents().start();
    let env = Env::with_brother(&host, "claude", "read");
    let (_, reports) = doctor_json(&env, &[], PROBLEMS);
    assert_shape(&reports);
    let r = &reports[0];
    assert_eq!(r["can_launch"], false);
    let agent = finding(r, "agent");
    assert_eq!(agent["status"], "fail", "{r:#}");
    assert!(agent["detail"].as_str().unwrap().contains("'claude' not found"), "{agent}");
    assert!(agent["fix"].as_str().unwrap().contains("npm install -g @anthropic-ai/claude-code"), "{agent}");
    // The rest of the host was still checked.
    assert_eq!(status_of(r, "tmux"), "ok");

    let run = env.run(&["doctor"]).fails_with(PROBLEMS);
    assert!(run.stdout().contains("CANNOT LAUNCH") && run.stdout().contains("fix: install Claude Code"), "{run}");
}

#[test]
fn an_agent_set_up_in_bashrc_is_reported_as_found_by_the_interactive_shell() {
    let host = FakeHost::builder().own_home().without_fake_agents().start();
    // nvm's layout: PATH set at the end of ~/.bashrc, after Debian's "not interactive:
    // return" guard, so neither sshd's nor the login shell's PATH has it.
    let bin = ".nvm/versions/node/v22.12.0/bin";
    host.write_home_file(&format!("{bin}/claude"), "#!/bin/sh\necho '2.1.329 (Claude Code)'\n", 0o755);
    host.write_home_file(".profile", "if [ -f \"$HOME/.bashrc\" ]; then . \"$HOME/.bashrc\"; fi\n", 0o644);
    host.write_home_file(
        ".bashrc",
        format!("case $- in *i*) ;; *) return;; esac\nexport PATH=\"$HOME/{bin}:$PATH\"\n"),
        0o644,
    );
    let env = Env::with_brother(&host, "claude", "read");
    let (_, reports) = doctor_json(&env, &[], 0);
    let r = &reports[0];
    assert_eq!(r["environment"], "interactive", "{r:#}");
    assert_eq!(r["agent_path"], host.home().join(bin).join("claude").to_str().unwrap());
    assert_eq!(r["agent_version"], "2.1.329 (Claude Code)");
    assert!(finding(r, "agent")["detail"].as_str().unwrap().contains("found by the interactive environment"));

    // `plain` does not read start-up files: not found there, as a launch would say.
    env.config_append("environment = \"plain\"\n");
    let (_, reports) = doctor_json(&env, &[], PROBLEMS);
    assert_eq!(status_of(&reports[0], "agent"), "fail", "{:#}", reports[0]);
}

#[test]
fn the_real_clis_installed_with_nvm_are_found_with_their_versions_and_credentials() {
    let Some(bin) = brothers::real_agents_bin() else { return };
    let host = FakeHost::builder().own_home().without_fake_agents().start();
    let model = ModelStandIn::start(Script::new(|_| Reply::Text("unused".into())));
    brothers::install(&host, Install::Nvm, &bin, &model);
    let env = Env::with_brother(&host, "claude", "write");
    env.add_brother("spirit", "h", &host, "codex", "write");
    let (run, reports) = doctor_json(&env, &[], 0);
    assert_shape(&reports);
    for r in &reports {
        assert_eq!(r["environment"], "interactive", "{r:#}");
        assert!(r["agent_path"].as_str().unwrap().contains("/.nvm/versions/node/"), "{r:#}");
        assert_eq!(status_of(r, "agent_version"), "ok", "{r:#}");
        assert_eq!(status_of(r, "credentials"), "ok", "{r:#}");
    }
    let claude = reports.iter().find(|r| r["brother"] == "oppy").unwrap();
    assert!(claude["agent_version"].as_str().unwrap().contains("Claude Code"), "{claude:#}");
    let creds = finding(claude, "credentials")["detail"].as_str().unwrap();
    assert!(creds.contains("ANTHROPIC_API_KEY"), "{creds}");
    let codex = reports.iter().find(|r| r["brother"] == "spirit").unwrap();
    assert!(codex["agent_version"].as_str().unwrap().contains("codex"), "{codex:#}");
    assert!(finding(codex, "credentials")["detail"].as_str().unwrap().contains("model_provider"), "{codex:#}");
    // Names only: the key's value never leaves the brother.
    assert!(!run.stdout().contains("dummy"), "{run}");
}

#[test]
fn missing_credentials_are_a_warning_with_the_fix_not_a_failure() {
    let host = FakeHost::builder().own_home().start();
    let env = Env::with_brother(&host, "claude", "read");
    env.config_append("environment = \"plain\"\n");
    let (_, reports) = doctor_json(&env, &[], 0);
    let creds = finding(&reports[0], "credentials");
    assert_eq!(creds["status"], "warn", "{creds}");
    assert!(creds["fix"].as_str().unwrap().contains("/login"), "{creds}");

    // A login's credentials file is enough (its content is never read).
    host.write_home_file(".claude/.credentials.json", "{\"secret\":\"do-not-print\"}", 0o600);
    let (run, reports) = doctor_json(&env, &[], 0);
    assert_eq!(status_of(&reports[0], "credentials"), "ok", "{run}");
    assert!(!run.stdout().contains("do-not-print"), "{run}");
}

#[test]
fn a_bubblewrap_that_cannot_sandbox_fails_claude_at_write() {
    let host = FakeHost::builder().own_home().start();
    // Debian's ~/.profile puts ~/bin first, where the broken bwrap is.
    host.write_home_file(".profile", "PATH=\"$HOME/bin:$PATH\"\n", 0o644);
    brothers::break_bubblewrap(&host);
    let env = Env::with_brother(&host, "claude", "write");
    let (_, reports) = doctor_json(&env, &[], PROBLEMS);
    assert_shape(&reports);
    let sandbox = finding(&reports[0], "sandbox");
    assert_eq!(sandbox["status"], "fail", "{sandbox}");
    assert!(sandbox["detail"].as_str().unwrap().contains("setting up uid map"), "{sandbox}");
    assert!(sandbox["fix"].as_str().unwrap().contains("user namespaces"), "{sandbox}");
    // At read, Claude needs no OS sandbox: the same host is fine.
    let env = Env::with_brother(&host, "claude", "read");
    let (_, reports) = doctor_json(&env, &[], 0);
    assert_eq!(status_of(&reports[0], "sandbox"), "ok", "{:#}", reports[0]);
}

#[test]
fn doctor_checks_what_a_launch_runs_with_the_brothers_default_profile() {
    let host = FakeHost::builder().own_home().start();
    host.write_home_file(".profile", "PATH=\"$HOME/bin:$PATH\"\n", 0o644);
    brothers::break_bubblewrap(&host);
    // The brother says write, its default profile read: a launch runs at read, so does doctor.
    let env = Env::new();
    env.add_host("h", &host);
    let brother = |extra: &str| {
        format!(
            "[brothers.oppy]\nhost = \"h\"\nworkdir = \"{}\"\nagent = \"claude\"\nsandbox = \"write\"\n\
             default_profile = \"careful\"\n[profiles.careful]\nsandbox = \"read\"\n{extra}",
            host.workdir().display()
        )
    };
    env.config_append(&brother(""));
    let (_, reports) = doctor_json(&env, &[], 0);
    assert_shape(&reports);
    assert_eq!(reports[0]["sandbox"], "read", "{:#}", reports[0]);
    assert_eq!(status_of(&reports[0], "sandbox"), "ok", "{:#}", reports[0]);

    // The profile's credential file is checked like an env_file.
    let env = Env::new();
    env.add_host("h", &host);
    env.config_append(&brother("credential_file = \"~/missing-team-key.env\"\n"));
    let (_, reports) = doctor_json(&env, &[], PROBLEMS);
    let file = finding(&reports[0], "env_file");
    assert_eq!(file["status"], "fail", "{file}");
    assert!(file["detail"].as_str().unwrap().contains("missing-team-key.env"), "{file}");
}

#[test]
fn missing_tmux_fails_with_the_apt_get_fix() {
    let host = FakeHost::builder().path_without(&["tmux"]).start();
    let env = Env::with_brother(&host, "self-test", "read");
    // A login shell would reset PATH to the system's, where this machine's tmux is.
    env.config_append("environment = \"plain\"\n");
    let (_, reports) = doctor_json(&env, &[], PROBLEMS);
    let tmux = finding(&reports[0], "tmux");
    assert_eq!(tmux["status"], "fail", "{tmux}");
    assert!(tmux["fix"].as_str().unwrap().contains("apt-get install tmux"), "{tmux}");
}

#[test]
fn an_unreachable_host_fails_with_the_connect_error() {
    let env = Env::new();
    let port = delegate_testkit::closed_port();
    env.config_append(&format!(
        "[hosts.h]\naddress = \"127.0.0.1\"\nport = {port}\nuser = \"nobody\"\nknown_hosts = \"{}\"\nconnect_timeout = 3\n",
        env.known_hosts.display()
    ));
    env.config_append("[brothers.oppy]\nhost = \"h\"\nworkdir = \"/w\"\n");
    let (_, reports) = doctor_json(&env, &[], PROBLEMS);
    assert_shape(&reports);
    let connect = finding(&reports[0], "connect");
    assert_eq!(connect["status"], "fail");
    assert!(connect["detail"].as_str().unwrap().contains("cannot reach h"), "{connect}");
    assert!(connect["fix"].as_str().unwrap().contains("sshd runs there"), "{connect}");
    // Nothing past the connection is claimed.
    assert_eq!(reports[0]["findings"].as_array().unwrap().len(), 1, "{:#}", reports[0]);
}

#[test]
fn an_unknown_host_key_fails_with_its_fingerprint_and_the_trust_command() {
    let host = FakeHost::start();
    let env = Env::new();
    env.config_append(&env.host_toml("h", &host)); // not trusted
    env.add_brother("oppy", "h", &host, "claude", "read");
    let (_, reports) = doctor_json(&env, &[], PROBLEMS);
    let key = finding(&reports[0], "host_key");
    assert_eq!(key["status"], "fail");
    let detail = key["detail"].as_str().unwrap();
    let at = detail.find("SHA256:").unwrap_or_else(|| panic!("no fingerprint: {detail}"));
    let fingerprint: String = detail[at..].chars().take_while(|c| !c.is_whitespace() && *c != '.').collect();
    let fix = key["fix"].as_str().unwrap();
    assert!(fix.contains(&format!("delegate hosts trust h --fingerprint {fingerprint}")), "{fix}");
    // Refused before anything ran there.
    assert_eq!(execs(&host), 0);
}

#[test]
fn an_unknown_brother_is_exit_3() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "claude", "read");
    let run = env.run(&["doctor", "jerry"]).fails_with(3);
    assert!(run.stderr().contains("unknown brother \"jerry\""), "{run}");
}

#[test]
fn an_unsafe_remote_root_or_a_missing_workdir_fails_and_a_creatable_root_is_fine() {
    let host = FakeHost::start();
    let with_root = |root: &std::path::Path, workdir: &str| {
        let env = Env::new();
        env.trust(&host);
        let original = format!("remote_root = \"{}\"", host.remote_root().display());
        let toml = env.host_toml("h", &host).replace(&original, &format!("remote_root = \"{}\"", root.display()));
        env.config_append(&toml);
        env.config_append(&format!(
            "[brothers.oppy]\nhost = \"h\"\nworkdir = \"{workdir}\"\nagent = \"claude\"\nsandbox = \"read\"\n"
        ));
        env
    };
    let work = host.workdir().display().to_string();

    // Not there yet, in a directory the user may write: the first launch creates it.
    let env = with_root(&host.remote_root().join("new/deeper"), &work);
    let (_, reports) = doctor_json(&env, &[], 0);
    let root = finding(&reports[0], "remote_root");
    assert!(root["status"] == "ok" && root["detail"].as_str().unwrap().contains("does not exist yet"), "{root}");
    assert!(!host.remote_root().join("new").exists(), "doctor created the remote root");

    // A symlink as the last component: task files (prompts) would land wherever it points.
    let link = host.dir().join("root-link");
    std::os::unix::fs::symlink(host.remote_root(), &link).unwrap();
    let env = with_root(&link, &work);
    let (_, reports) = doctor_json(&env, &[], PROBLEMS);
    let root = finding(&reports[0], "remote_root");
    assert!(root["status"] == "fail" && root["detail"].as_str().unwrap().contains("symbolic link"), "{root}");

    // Writable by others: refused, with the chmod that fixes it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(host.remote_root(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let env = with_root(&host.remote_root(), "/nonexistent/work");
    let (_, reports) = doctor_json(&env, &[], PROBLEMS);
    let root = finding(&reports[0], "remote_root");
    assert_eq!(root["status"], "fail", "{root}");
    assert!(root["fix"].as_str().unwrap().contains("chmod go-w"), "{root}");
    let workdir = finding(&reports[0], "workdir");
    assert_eq!(workdir["status"], "fail", "{workdir}");
    assert!(workdir["fix"].as_str().unwrap().contains("create /nonexistent/work"), "{workdir}");
    std::fs::set_permissions(host.remote_root(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // The launch's rule, for tasks/ too: group-writable fails (as the launch refuses it).
    let tasks = host.remote_root().join("tasks");
    std::fs::create_dir(&tasks).unwrap();
    std::os::unix::fs::chown(&tasks, Some(host.uid()), None).unwrap();
    std::fs::set_permissions(&tasks, std::fs::Permissions::from_mode(0o770)).unwrap();
    let env = with_root(&host.remote_root(), &work);
    let (_, reports) = doctor_json(&env, &[], PROBLEMS);
    let root = finding(&reports[0], "remote_root");
    assert!(
        root["status"] == "fail" && root["detail"].as_str().unwrap().contains("tasks is writable by group"),
        "{root}"
    );
    assert!(root["fix"].as_str().unwrap().contains("chmod go-w"), "{root}");
    std::fs::remove_dir(&tasks).unwrap();
}

#[test]
fn a_transport_ssh_host_is_checked_through_the_system_ssh() {
    use std::os::unix::fs::PermissionsExt;
    // DEBUG1: sshd logs the client's software version.
    let host = FakeHost::builder().log_level("DEBUG1").start();
    let env = Env::new();
    env.trust(&host);
    // Through an ssh_config alias, as for route.rs's transport test: the system ssh resolves
    // HostName and Port itself and checks the host key against the Env's known_hosts.
    let cfg = env.home.join(".ssh/config");
    let text = format!(
        "Host tgt\n  HostName 127.0.0.1\n  Port {}\nHost *\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n",
        host.port(),
        env.known_hosts.display()
    );
    std::fs::write(&cfg, text).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let toml = env
        .host_toml("h", &host)
        .replace("address = \"127.0.0.1\"", "address = \"tgt\"")
        .replace(&format!("port = {}\n", host.port()), "transport = \"ssh\"\n");
    env.config_append(&toml);
    env.add_brother("oppy", "h", &host, "claude", "read");

    let (run, reports) = doctor_json(&env, &[], 0);
    assert_shape(&reports);
    let r = &reports[0];
    assert_eq!(r["can_launch"], true, "{r:#}");
    // The one exec went through the system ssh; russh never connected.
    assert_eq!(execs(&host), 1, "{}", host.sshd_log());
    let log = host.sshd_log();
    assert!(log.contains("remote software version OpenSSH"), "{log}");
    assert!(!log.to_lowercase().contains("remote software version russh"), "russh connected:\n{log}");
    let detail = |check: &str| finding(r, check)["detail"].as_str().unwrap().to_string();
    for check in ["connect", "host_key", "auth", "bash", "tools", "tmux", "agent", "remote_root"] {
        assert_eq!(status_of(r, check), "ok", "{check}: {run}");
    }
    assert!(detail("connect").contains("through the system ssh (transport = ssh)"), "{r:#}");
    assert!(detail("host_key").contains("checked by ssh itself"), "{r:#}");
    // ssh does not say which key got in: said so, not guessed, and not a failure.
    assert!(detail("auth").contains("not known"), "{r:#}");
    assert!(r["identity"].is_null(), "{r:#}");
    assert_eq!(r["agent_version"], "2.1.329 (Claude Code)", "{r:#}");

    // ssh checks the host key itself: forgotten, ssh refuses, and nothing ran.
    std::fs::write(&env.known_hosts, "").unwrap();
    let (_, reports) = doctor_json(&env, &[], PROBLEMS);
    assert_shape(&reports);
    let key = finding(&reports[0], "host_key");
    assert_eq!(key["status"], "fail", "{key}");
    assert!(key["detail"].as_str().unwrap().contains("Host key verification failed"), "{key}");
    let fix = key["fix"].as_str().unwrap();
    // Recorded by ssh itself, asking, with the same options otherwise.
    let record = fix.split('`').nth(1).unwrap_or_else(|| panic!("no command to record the key: {key}"));
    assert!(record.starts_with(&format!("ssh -T -F {}", cfg.display())) && record.ends_with("-- tgt"), "{key}");
    assert!(!record.contains("BatchMode") && !record.contains("StrictHostKeyChecking"), "{key}");
    assert!(fix.contains("BatchMode=yes"), "and the check again, as doctor runs it: {key}");
    assert_eq!(reports[0]["findings"].as_array().unwrap().len(), 1, "{:#}", reports[0]);
    assert_eq!(execs(&host), 1, "nothing ran after the refusal");
}

#[test]
fn doctor_checks_that_the_default_profiles_credential_env_is_set_for_the_agent() {
    let host = FakeHost::start();
    let env = Env::new();
    env.add_host("h", &host);
    let key_file = host.workdir().join("team.env");
    env.config_append(&format!(
        "[brothers.oppy]\nhost = \"h\"\nworkdir = \"{}\"\nagent = \"self-test\"\ndefault_profile = \"team\"\n\
         environment = \"plain\"\n[profiles.team]\ncredential_env = \"DLG_DOCTOR_TEAM_KEY\"\n",
        host.workdir().display()
    ));
    let (_, reports) = doctor_json(&env, &[], PROBLEMS);
    let cred = finding(&reports[0], "credential_env");
    assert_eq!(cred["status"], "fail", "{cred}");
    assert!(cred["detail"].as_str().unwrap().contains("DLG_DOCTOR_TEAM_KEY is not set"), "{cred}");
    assert!(cred["fix"].as_str().unwrap().contains("credential_file"), "{cred}");

    // Set through the profile's credential file: ok, and the value is never shown.
    std::fs::write(&key_file, "DLG_DOCTOR_TEAM_KEY=s3cret-doctor-77\n").unwrap();
    env.config_replace(
        "credential_env = \"DLG_DOCTOR_TEAM_KEY\"\n",
        &format!("credential_env = \"DLG_DOCTOR_TEAM_KEY\"\ncredential_file = \"{}\"\n", key_file.display()),
    );
    let (run, reports) = doctor_json(&env, &[], 0);
    assert_eq!(status_of(&reports[0], "credential_env"), "ok", "{:#}", reports[0]);
    assert!(!run.stdout().contains("s3cret-doctor-77"), "{run}");
}
