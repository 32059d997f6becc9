//! Schedules, the dispatcher and the service (issue 18), against real sshd, tmux, SQLite
//! and the self-test agent. The schedules' clock is injected (`DELEGATE_TEST_NOW`, debug
//! builds), so missed slots are simulated without sleeping.

use std::io::Read as _;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use delegate_testkit::FakeHost;
use serde_json::Value;

use crate::support::{Env, execs, launch};

const T0: &str = "2026-03-02T08:00:00Z";

/// `T0` plus hours and minutes, as `DELEGATE_TEST_NOW` takes it.
fn at(hours: u64, minutes: u64) -> String {
    let t: delegate_core::schedule::Timestamp = T0.parse().unwrap();
    t.checked_add(Duration::from_secs(hours * 3600 + minutes * 60)).unwrap().to_string()
}

fn tasks(env: &Env) -> Vec<Value> {
    env.run(&["list", "--no-sync", "--json"]).ok().json().as_array().unwrap().clone()
}

/// A dispatcher in the background; killed (by its pid) when dropped.
struct Dispatcher(Child);

impl Dispatcher {
    fn start(env: &Env, extra_env: &[(&str, &str)]) -> Dispatcher {
        let mut c = env.command();
        c.envs(extra_env.iter().copied());
        c.args(["dispatch", "--interval", "1s"]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        Dispatcher(c.spawn().expect("spawn delegate dispatch"))
    }

    fn stop(mut self) -> (String, String) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let (mut out, mut err) = (String::new(), String::new());
        self.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        self.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        (out, err)
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls the mailbox (without syncing, so nothing but the dispatcher moves tasks) until
/// `done` holds, for at most a minute: a hang is a failure.
fn until(env: &Env, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = tasks(env);
        if done(&t) {
            return t;
        }
        assert!(Instant::now() < deadline, "{what} never happened: {t:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn status_of(tasks: &[Value], id: i64) -> String {
    tasks.iter().find(|t| t["id"] == id).map(|t| t["status"].as_str().unwrap().to_string()).unwrap_or_default()
}

#[test]
fn the_dispatcher_starts_queued_work_with_no_other_command_running_and_is_idle_without_ssh() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    env.config_append("max_concurrent = 1\n");
    let busy = launch(&env, &["oppy", "short\n@self-test sleep 2", "--max-turns", "50", "--json"]);
    let queued = env.run(&["oppy", "next in line", "--json"]).ok().json();
    assert_eq!(queued["status"], "queued", "{queued}");
    let id = queued["id"].as_i64().unwrap();

    // From here on only the dispatcher syncs (the polls read the mailbox with --no-sync).
    let d = Dispatcher::start(&env, &[]);
    let t = until(&env, "the queued task finishing", |t| status_of(t, id) == "completed");
    assert_eq!(status_of(&t, busy), "completed");

    // Idle: nothing in flight, no schedule. Ticks go on (every second) without SSH.
    let before = execs(&host);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(execs(&host), before, "an idle dispatcher contacted the host");

    // Only one dispatcher per mailbox: a second one says who runs, and exits 42.
    let second = env.run(&["dispatch", "--once"]).fails_with(42);
    assert!(second.stderr().contains(&format!("pid {}", d.0.id())), "{second}");
    let status = env.run(&["service", "status", "--json"]).ok().json();
    assert_eq!(status["dispatcher_pid"], d.0.id().to_string(), "{status}");
    let (out, _) = d.stop();
    assert!(out.contains(&format!("task {id} on h: completed")), "{out}");
}

#[test]
fn a_due_slot_fires_one_ordinary_task_even_with_dispatchers_racing_and_catch_up_follows_the_policy() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let now = [("DELEGATE_TEST_NOW", T0)];
    env.run_with_env(
        &["schedule", "add", "hourly", "--every", "1h", "--brother", "oppy", "--catch-up", "once", "hourly triage"],
        &now,
    )
    .ok();
    env.run_with_env(&["schedule", "add", "skipper", "--every", "1h", "--brother", "oppy", "skipped triage"], &now)
        .ok();
    let list = env.run_with_env(&["schedule", "list", "--json"], &now).ok().json();
    assert_eq!(list[0]["next_fire"], at(1, 0), "{list}");

    // The lead was off from 08:00 to 13:30: slots 09:00 to 13:00 were missed. Six dispatchers
    // start at once: one holds the lock, the others exit 42 or find nothing left to fire.
    let later = at(5, 30);
    let racers: Vec<_> = (0..6)
        .map(|_| {
            let mut c = env.command();
            c.env("DELEGATE_TEST_NOW", &later)
                .args(["dispatch", "--once"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for r in racers {
        let out = r.wait_with_output().unwrap();
        assert!(matches!(out.status.code(), Some(0 | 42)), "{out:?}");
    }
    let all = tasks(&env);
    assert_eq!(all.len(), 1, "once: one task for the newest missed slot; skip: none (13:00 is 30 min late): {all:#?}");
    let logs = env.run(&["schedule", "logs", "hourly", "--json"]).ok().json();
    let firings = logs["firings"].as_array().unwrap();
    assert_eq!(firings.len(), 1, "{logs}");
    assert_eq!(firings[0]["slot"], at(5, 0));
    assert_eq!(firings[0]["task_id"], all[0]["id"]);
    assert_eq!(logs["misfires"][0]["kind"], "schedule_misfire");
    assert_eq!(logs["misfires"][0]["count"], 4, "{logs}");
    let skipped = env.run(&["schedule", "logs", "skipper", "--json"]).ok().json();
    assert_eq!(skipped["firings"].as_array().unwrap().len(), 0, "{skipped}");
    assert_eq!(skipped["misfires"][0]["count"], 5, "{skipped}");

    // The firing is an ordinary task on the brother, by its schedule; it runs to the end.
    let id = all[0]["id"].as_i64().unwrap();
    let done = crate::support::wait_done(&env, id);
    assert_eq!(done["status"], "completed", "{done}");
    let show = env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json();
    assert_eq!(show["runs"][0]["author"], "schedule:hourly", "{show}");

    // A restart at the same clock fires nothing again; the next slot fires on time.
    env.run_with_env(&["dispatch", "--once"], &[("DELEGATE_TEST_NOW", &later)]).ok();
    assert_eq!(tasks(&env).len(), 1);
    env.run_with_env(&["dispatch", "--once"], &[("DELEGATE_TEST_NOW", &at(6, 1))]).ok();
    let fired = tasks(&env);
    assert_eq!(fired.len(), 3, "13:00+1h for each schedule, on time: {fired:#?}");
    env.run(&["wait", &fired[0]["id"].to_string(), &fired[1]["id"].to_string(), "--timeout", "60s"]).ok();
}

#[test]
fn schedule_commands_refuse_bad_input_and_pause_run_rm_do_what_they_say() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    for (args, code, says) in [
        (vec!["a b", "--at", "09:00"], 41, "only letters, digits"),
        (vec!["-x", "--at", "09:00"], 2, ""),
        (vec!["ok", "--at", "9am"], 41, "HH:MM"),
        (vec!["ok", "--cron", "61 * * * *"], 41, "minute field"),
        (vec!["ok", "--every", "5s"], 41, "from 1m"),
        (vec!["ok", "--at", "09:00", "--tz", "Nowhere/City"], 41, "unknown time zone"),
    ] {
        let mut full = vec!["schedule", "add"];
        full.extend(&args);
        full.extend(["--brother", "oppy", "p"]);
        let r = env.run(&full).fails_with(code);
        assert!(r.stderr().contains(says), "{r}");
    }
    let r =
        env.run(&["schedule", "add", "ok", "--at", "09:00", "--every", "1h", "--brother", "oppy", "p"]).fails_with(2);
    assert!(r.stderr().contains("cannot be used with"), "{r}");
    env.run(&["schedule", "add", "ok", "--at", "09:00", "--brother", "ghost", "p"]).fails_with(3);
    env.run(&["schedule", "add", "ok", "--at", "09:00", "--brother", "oppy", "--profile", "nope", "p"]).fails_with(3);
    assert_eq!(env.run(&["schedule", "list", "--json"]).ok().json(), serde_json::json!([]), "nothing was added");

    env.run(&["schedule", "add", "ok", "--weekdays", "09:00", "--tz", "America/New_York", "--brother", "oppy", "p"])
        .ok();
    env.run(&["schedule", "add", "ok", "--at", "10:00", "--brother", "oppy", "p"]).fails_with(41);
    env.run(&["schedule", "pause", "ok"]).ok();
    let paused = env.run(&["schedule", "list", "--json"]).ok().json();
    assert_eq!((paused[0]["paused"].clone(), paused[0]["next_fire"].clone()), (Value::Bool(true), Value::Null));
    assert!(env.run(&["schedule", "list"]).ok().stdout().contains("next paused"));
    // Run now fires even a paused schedule, as an ordinary task.
    let fired = env.run(&["schedule", "run", "ok", "--json"]).ok().json();
    assert!(fired["slot"].as_str().unwrap().starts_with("manual:"), "{fired}");
    let id = fired["task_id"].as_i64().unwrap();
    assert_eq!(crate::support::wait_done(&env, id)["status"], "completed");
    env.run(&["schedule", "resume", "ok"]).ok();
    assert!(env.run(&["schedule", "list", "--json"]).ok().json()[0]["next_fire"].is_string());
    for verb in ["rm", "logs", "run", "pause", "resume"] {
        let r = env.run(&["schedule", verb, "nope"]).fails_with(41);
        assert!(r.stderr().contains("schedules: ok"), "{r}");
    }
    // A brother removed from under a schedule: the firing is a misfire with the reason.
    env.run(&["brothers", "rm", "oppy"]).ok();
    let r = env.run(&["schedule", "run", "ok"]).fails_with(1);
    assert!(r.stdout().contains("could not start a task: unknown brother \"oppy\""), "{r}");
    let logs = env.run(&["schedule", "logs", "ok", "--json"]).ok().json();
    assert!(logs["misfires"][0]["reason"].as_str().unwrap().contains("unknown brother"), "{logs}");
    env.run(&["schedule", "rm", "ok"]).ok();
    assert_eq!(env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json()["id"], id, "its task stays");
}

/// Every process's command line on this machine (the fake hosts' sshd, bash, tmux and
/// agents run here too), except this test's own.
fn all_cmdlines() -> Vec<(String, Vec<u8>)> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter(|e| e.file_name().to_string_lossy() != me)
        .filter_map(|e| {
            Some((e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path().join("cmdline")).ok()?))
        })
        .collect()
}

#[test]
fn a_scheduled_prompt_is_in_no_process_argv_no_service_line_and_no_schedule_event() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    let canary: String =
        (0..24).map(|i| char::from(b'a' + ((std::process::id() as usize * 3 + i * 7) % 26) as u8)).collect();
    let file = env.home.join("prompt.txt");
    std::fs::write(&file, format!("nightly check\n@self-test sleep 4\n{canary}\n")).unwrap();
    let now = [("DELEGATE_TEST_NOW", T0)];
    env.run_with_env(
        &["schedule", "add", "nightly", "--every", "1h", "--brother", "oppy", "--prompt-file", file.to_str().unwrap()],
        &now,
    )
    .ok();
    let d = Dispatcher::start(&env, &[("DELEGATE_TEST_NOW", &at(1, 1))]);
    let t = until(&env, "the firing running", |t| t.first().is_some_and(|t| t["status"] == "running"));
    let mut seen = 0;
    for (pid, cmdline) in all_cmdlines() {
        seen += 1;
        assert!(
            !cmdline.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "pid {pid} has the prompt in its argv: {}",
            String::from_utf8_lossy(&cmdline)
        );
    }
    assert!(seen > 5, "read the other processes");
    let id = t[0]["id"].as_i64().unwrap();
    let (out, err) = d.stop();
    let logs = env.run(&["schedule", "logs", "nightly", "--json"]).ok().stdout();
    let list = env.run(&["schedule", "list", "--json"]).ok().stdout();
    for (what, text) in [("dispatcher stdout", &out), ("dispatcher stderr", &err), ("logs", &logs), ("list", &list)] {
        assert!(!text.contains(&canary), "{what} has the prompt: {text}");
    }
    // It did travel: the agent on the brother read it from its prompt file.
    let given = std::fs::read_to_string(crate::support::remote_dir(&env, id).join("prompt")).unwrap();
    assert!(given.contains(&canary), "{given}");
    env.run(&["cancel", &id.to_string()]).ok();
}

/// `crontab` for the test user `dlgtest`, run as root: a real crontab in cron's real spool,
/// never root's own. `None` (the test says why, loudly) without root or cron.
pub(crate) fn test_user_crontab(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let root = unsafe { libc::geteuid() } == 0;
    let have =
        std::process::Command::new("sh").args(["-c", "command -v crontab"]).output().is_ok_and(|o| o.status.success());
    let user = std::process::Command::new("id").arg("dlgtest").output().is_ok_and(|o| o.status.success());
    if !(root && have && user) {
        eprintln!(
            "SKIPPED: the crontab test needs root, the cron package and the dlgtest user (scripts/test.sh sets them up)"
        );
        return None;
    }
    let wrapper = dir.join("crontab-dlgtest");
    std::fs::write(&wrapper, "#!/bin/sh\nexec crontab -u dlgtest \"$@\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(wrapper)
}

pub(crate) fn crontab_of(wrapper: &std::path::Path) -> String {
    let out = std::process::Command::new(wrapper).arg("-l").output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn set_crontab(wrapper: &std::path::Path, text: &str) {
    use std::io::Write;
    let mut c = std::process::Command::new(wrapper).arg("-").stdin(Stdio::piped()).spawn().unwrap();
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success());
}

#[test]
fn service_install_on_a_real_crontab_keeps_other_lines_and_its_line_runs_a_dispatcher_tick() {
    let env = Env::new();
    let Some(crontab) = test_user_crontab(&env.home) else { return };
    let _serial = crate::support::crontab_lock();
    let before_test = crontab_of(&crontab);
    let others = "# someone's own\nMAILTO=\"\"\n17 3 * * * /usr/bin/true backup  # keep me\n";
    set_crontab(&crontab, others);
    let vars = [("DELEGATE_TEST_CRONTAB", crontab.to_str().unwrap()), ("DELEGATE_TEST_SERVICE", "crontab")];

    env.run_with_env(&["service", "install"], &vars).ok();
    env.run_with_env(&["service", "install"], &vars).ok(); // again: replaced, not doubled
    let installed = crontab_of(&crontab);
    assert!(installed.starts_with(others), "other lines kept as they were:\n{installed}");
    assert_eq!(installed.matches("# BEGIN delegate dispatcher").count(), 1, "{installed}");
    let tick = installed.lines().find(|l| l.starts_with("* * * * * ")).expect("a per-minute line");
    assert!(installed.lines().any(|l| l.starts_with("@reboot ")), "{installed}");
    assert!(tick.contains("dispatch") && tick.contains("--once"), "{tick}");
    let status = env.run_with_env(&["service", "status", "--json"], &vars).ok().json();
    assert_eq!((status["kind"].as_str(), status["installed"].as_bool()), (Some("crontab"), Some(true)), "{status}");
    assert_eq!(status["running"], false, "no tick has run yet: {status}");

    // The line as cron would run it (sh -c, cron's sparse environment): one dispatcher tick
    // for this mailbox, its output in the mailbox's dispatch.log.
    let cmd = tick.trim_start_matches("* * * * * ");
    let ran = std::process::Command::new("sh")
        .args(["-c", cmd])
        .env_clear()
        .env("HOME", &env.home)
        .env("USER", "tester")
        .output()
        .unwrap();
    assert!(ran.status.success(), "{ran:?}");
    assert!(env.data.join("dispatch.lock").exists(), "the tick ran for this mailbox");
    assert!(env.data.join("dispatch.log").exists());
    let status = env.run_with_env(&["service", "status", "--json"], &vars).ok().json();
    assert_eq!(status["running"], true, "a tick ran just now: {status}");

    env.run_with_env(&["service", "uninstall"], &vars).ok();
    assert_eq!(crontab_of(&crontab), others, "uninstall removed only its own block");
    let again = env.run_with_env(&["service", "uninstall"], &vars).ok();
    assert!(again.stdout().contains("no dispatcher service was installed"), "{again}");
    set_crontab(&crontab, &before_test);
}

#[test]
fn service_install_as_a_systemd_user_unit_where_systemd_runs() {
    let works = std::process::Command::new("systemctl")
        .args(["--user", "show-environment"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !works {
        eprintln!(
            "SKIPPED: no systemd user instance here (`systemctl --user` does not answer); the crontab test covers the fallback"
        );
        return;
    }
    let env = Env::new();
    let vars = [("DELEGATE_TEST_SERVICE", "systemd"), ("XDG_CONFIG_HOME", env.home.to_str().unwrap())];
    env.run_with_env(&["service", "install"], &vars).ok();
    let status = env.run_with_env(&["service", "status", "--json"], &vars).ok().json();
    assert_eq!((status["kind"].as_str(), status["installed"].as_bool()), (Some("systemd"), Some(true)), "{status}");
    env.run_with_env(&["service", "uninstall"], &vars).ok();
    let status = env.run_with_env(&["service", "status", "--json"], &vars).ok().json();
    assert_eq!(status["installed"], false, "{status}");
}

#[test]
fn under_roles_a_schedule_is_added_by_a_manager_and_fires_with_its_adders_role() {
    let host = FakeHost::start();
    let env = Env::with_brother(&host, "self-test", "read");
    env.config_append("\n[roles]\nalice = \"manager\"\n\"*\" = \"observer\"\n");
    let add = |who: &str| {
        let mut c = env.command();
        c.args(["schedule", "add", "nightly", "--at", "03:00", "--brother", "oppy", "--as", who, "tidy up"]);
        c.output().unwrap()
    };
    // An observer may not add what would launch agents: refused, nothing stored.
    let refused = add("eve");
    assert_eq!(refused.status.code(), Some(38), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("manager"), "{refused:?}");
    let list = env.run(&["schedule", "list", "--json"]).ok().json();
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");

    // A manager's schedule fires (here: run now) although `schedule:nightly` is named in no
    // [roles] line: it acts with alice's role.
    assert!(add("alice").status.success());
    // An observer may not run, pause, resume or remove it either.
    for verb in ["run", "pause", "resume", "rm"] {
        env.run(&["schedule", verb, "nightly", "--as", "eve"]).fails_with(38);
    }
    let fired = env.run(&["schedule", "run", "nightly", "--as", "alice", "--json"]).ok().json();
    let id = fired["task_id"].as_i64().unwrap_or_else(|| panic!("{fired}"));
    let done = crate::support::wait_done(&env, id);
    assert_eq!(done["status"], "completed", "{done}");
}
