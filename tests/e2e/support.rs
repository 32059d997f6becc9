//! A hermetic client side for the `delegate` binary: its own HOME, config, known_hosts and
//! mailbox, an explicit environment (nothing inherited), and helpers that print everything
//! useful when a command does not do what the test expected.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use delegate_testkit::FakeHost;

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub struct Env {
    pub home: PathBuf,
    pub config: PathBuf,
    pub data: PathBuf,
    pub known_hosts: PathBuf,
    toml: std::cell::RefCell<String>,
    umask: std::cell::Cell<Option<u32>>,
    /// Run every script as an exec of its own (`DELEGATE_RESIDENT=0`).
    no_resident: std::cell::Cell<bool>,
}

/// The result of one CLI run, printable in full for assertion messages.
pub struct Run {
    pub args: Vec<String>,
    pub out: Output,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
    /// Asserts success and returns self.
    pub fn ok(self) -> Run {
        assert!(self.out.status.success(), "command failed:\n{self}");
        self
    }
    /// Asserts the exit code and returns self.
    pub fn fails_with(self, code: i32) -> Run {
        assert_eq!(self.code(), code, "wrong exit code:\n{self}");
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "$ delegate {}", self.args.join(" "))?;
        writeln!(f, "status: {}", self.out.status)?;
        writeln!(f, "--- stdout\n{}", self.stdout())?;
        writeln!(f, "--- stderr\n{}", self.stderr())
    }
}

impl Env {
    pub fn new() -> Env {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let home = std::env::temp_dir().join(format!("dlg-e2e-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        let env = Env {
            config: home.join("config.toml"),
            data: home.join("data"),
            known_hosts: home.join("known_hosts"),
            home,
            toml: std::cell::RefCell::new(String::new()),
            umask: std::cell::Cell::new(None),
            no_resident: std::cell::Cell::new(false),
        };
        std::fs::write(&env.known_hosts, "").unwrap();
        env
    }

    /// Appends raw TOML to the config file.
    pub fn config_append(&self, text: &str) {
        let mut t = self.toml.borrow_mut();
        t.push_str(text);
        t.push('\n');
        std::fs::write(&self.config, t.as_bytes()).unwrap();
    }

    /// Replaces the one occurrence of `from` in the config file with `to` (editing a key).
    pub fn config_replace(&self, from: &str, to: &str) {
        let mut t = self.toml.borrow_mut();
        assert_eq!(t.matches(from).count(), 1, "{from:?} once in:\n{t}");
        *t = t.replacen(from, to, 1);
        std::fs::write(&self.config, t.as_bytes()).unwrap();
    }

    pub fn trust(&self, host: &FakeHost) {
        let mut f = std::fs::OpenOptions::new().append(true).open(&self.known_hosts).unwrap();
        writeln!(f, "{}", host.known_hosts_line()).unwrap();
    }

    /// `[hosts.NAME]` for a fake host, trusted, with its client key and remote root.
    pub fn add_host(&self, name: &str, host: &FakeHost) {
        self.trust(host);
        self.config_append(&self.host_toml(name, host));
    }

    pub fn host_toml(&self, name: &str, host: &FakeHost) -> String {
        let mut s = String::new();
        writeln!(s, "[hosts.{name}]").unwrap();
        writeln!(s, "address = \"{}\"", host.address()).unwrap();
        writeln!(s, "port = {}", host.port()).unwrap();
        writeln!(s, "user = \"{}\"", host.user()).unwrap();
        writeln!(s, "identity = \"{}\"", host.client_key().display()).unwrap();
        writeln!(s, "known_hosts = \"{}\"", self.known_hosts.display()).unwrap();
        writeln!(s, "remote_root = \"{}\"", host.remote_root().display()).unwrap();
        writeln!(s, "connect_timeout = 5").unwrap();
        s
    }

    /// `[brothers.NAME]` on `host_name`, working in the fake host's workdir.
    pub fn add_brother(&self, name: &str, host_name: &str, host: &FakeHost, agent: &str, sandbox: &str) {
        self.config_append(&format!(
            "[brothers.{name}]\nhost = \"{host_name}\"\nworkdir = \"{}\"\nagent = \"{agent}\"\nmax_turns = 7\nsandbox = \"{sandbox}\"\n",
            host.workdir().display()
        ));
    }

    /// One host "h" with one brother "oppy".
    pub fn with_brother(host: &FakeHost, agent: &str, sandbox: &str) -> Env {
        let env = Env::new();
        env.add_host("h", host);
        env.add_brother("oppy", "h", host, agent, sandbox);
        env
    }

    /// The hermetic environment `command` runs the binary with, for clients that spawn it
    /// themselves (the MCP test); start from an empty environment and run in `home`.
    pub fn envs(&self) -> Vec<(String, String)> {
        let path = |p: &Path| p.display().to_string();
        [
            ("HOME", path(&self.home)),
            ("USER", "tester".to_string()),
            ("PATH", "/usr/local/bin:/usr/bin:/bin".to_string()),
            ("DELEGATE_CONFIG", path(&self.config)),
            ("DELEGATE_HOME", path(&self.data)),
        ]
        .into_iter()
        .chain(self.no_resident.get().then(|| ("DELEGATE_RESIDENT", "0".to_string())))
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Every script gets an exec of its own, as before the resident shell, for tests that
    /// count SSH execs in the sshd log (scripts through the shell start none, and the shell's
    /// own start, after a connection's first script, would land at any time).
    pub fn no_resident(&self) {
        self.no_resident.set(true);
    }

    /// Every later command of this Env starts with this umask, as from a shell (S10).
    pub fn set_umask(&self, umask: u32) {
        self.umask.set(Some(umask));
    }

    /// The command with this Env's hermetic environment, for a test that runs it itself
    /// (in the background, say).
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_delegate"));
        if let Some(mask) = self.umask.get() {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: umask is async-signal-safe and changes only the child.
            unsafe {
                c.pre_exec(move || {
                    libc::umask(mask as libc::mode_t);
                    Ok(())
                });
            }
        }
        c.env_clear()
            .env("HOME", &self.home)
            .env("USER", "tester")
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("DELEGATE_CONFIG", &self.config)
            .env("DELEGATE_HOME", &self.data)
            .current_dir(&self.home);
        if self.no_resident.get() {
            c.env("DELEGATE_RESIDENT", "0");
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, b"")
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        self.run_full(args, stdin, &[])
    }

    /// Runs with extra environment variables on top of the hermetic set.
    pub fn run_with_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        self.run_full(args, b"", vars)
    }

    fn run_full(&self, args: &[&str], stdin: &[u8], vars: &[(&str, &str)]) -> Run {
        let mut c = self.command();
        c.envs(vars.iter().copied());
        c.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn delegate");
        let mut pipe = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
        let out = wait_with_deadline(child, std::time::Duration::from_secs(120));
        writer.join().unwrap();
        Run { args: args.iter().map(|s| s.to_string()).collect(), out }
    }

    /// Runs with raw bytes as arguments (for prompts that are not UTF-8).
    pub fn run_os(&self, args: &[std::ffi::OsString]) -> Run {
        let mut c = self.command();
        c.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = c.spawn().expect("spawn delegate");
        let out = wait_with_deadline(child, std::time::Duration::from_secs(120));
        Run { args: args.iter().map(|s| s.to_string_lossy().into_owned()).collect(), out }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // The warm daemon this Env's commands started would otherwise idle for minutes.
        let _ = self.command().args(["warm", "stop"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.home);
        } else {
            eprintln!("client dir kept for inspection: {}", self.home.display());
        }
    }
}

/// Waits for a child, killing it after `limit`: a hang is a failure, never a slow pass.
fn wait_with_deadline(mut child: std::process::Child, limit: std::time::Duration) -> Output {
    let deadline = std::time::Instant::now() + limit;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut b);
        b
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("delegate did not finish within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    Output { status, stdout: t_out.join().unwrap(), stderr: t_err.join().unwrap() }
}

/// The remote task directory of a task launched by `env` (read from `show --json`).
pub fn remote_dir(env: &Env, id: i64) -> PathBuf {
    let show = env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json();
    PathBuf::from(show["runs"][0]["remote_dir"].as_str().unwrap_or_else(|| panic!("no remote_dir in {show}")))
}

/// What the agent of task `id`'s first run read: delegate's preamble (helpers or not, as
/// its plan said, with its task directory) and then `prompt` exactly.
pub fn agent_reads(env: &Env, id: i64, prompt: &[u8]) -> Vec<u8> {
    let show = env.run(&["show", &id.to_string(), "--json", "--no-sync"]).ok().json();
    let run = &show["runs"][0];
    let helpers = run["evidence"]["agent_plan"]["helpers"].as_bool().unwrap_or_else(|| panic!("no plan in {show}"));
    let dir = run["remote_dir"].as_str().unwrap_or_else(|| panic!("no remote_dir in {show}"));
    delegate_core::ops::launch::wrap_prompt(id, show["brother"].as_str().unwrap(), helpers, dir, prompt)
}

/// Waits until a file exists on the "remote" side and returns its bytes.
pub fn wait_for_file(path: &Path) -> Vec<u8> {
    for _ in 0..1000 {
        if let Ok(b) = std::fs::read(path) {
            return b;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{} never appeared", path.display());
}

/// Blanks the start time in a runner's `started` line (`state`, the task directory's), as a
/// runner of an older delegate wrote it: a sync then cannot see that runner alive in /proc
/// and lists the tmux sessions. Blanked with spaces, not cut: the file keeps its size (the
/// runner only appends, and the lead's offsets stay valid). False when the line has none.
pub fn blank_runner_start_time(state: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(state) else { return false };
    let Some((first, rest)) = text.split_once('\n') else { return false };
    let old = first.split(" start=").next().unwrap();
    if old == first {
        return false;
    }
    std::fs::write(state, format!("{old}{}\n{rest}", " ".repeat(first.len() - old.len()))).unwrap();
    true
}

/// Replaces the fake agent `name` on the host with a script of our own (run as the remote
/// user; the testkit's bin dir comes first on the host's PATH).
pub fn install_agent(host: &FakeHost, name: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = host.dir().join("bin").join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Remote commands the host ran (one per SSH exec), from its sshd log. What an operation
/// costs in execs holds whether its connection was fresh or kept by the warm daemon.
pub fn execs(host: &FakeHost) -> usize {
    host.sshd_log().matches("Starting session: command").count()
}

/// Launches with `args` (which must include `--json`) and returns the task number.
pub fn launch(env: &Env, args: &[&str]) -> i64 {
    env.run(args).ok().json()["id"].as_i64().unwrap()
}

/// `delegate wait` with a deadline; returns the task JSON (wait exits 0 or 7 when it ended).
pub fn wait_done(env: &Env, id: i64) -> serde_json::Value {
    let run = env.run(&["wait", &id.to_string(), "--timeout", "60s", "--interval-ms", "200", "--json"]);
    assert!(matches!(run.code(), 0 | 7), "wait failed:\n{run}");
    run.json()["tasks"][0].clone()
}

/// Base64 text that appears inside the encoding of any byte string containing `secret`,
/// whatever its offset: one string per alignment, without the partial groups at the ends
/// (to look for a secret that travelled base64-encoded).
pub fn base64_cores(secret: &[u8]) -> Vec<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..3)
        .map(|skip| {
            let body = &secret[skip..];
            let body = &body[..body.len() / 3 * 3];
            let mut s = String::new();
            for g in body.chunks(3) {
                let n = (u32::from(g[0]) << 16) | (u32::from(g[1]) << 8) | u32::from(g[2]);
                for shift in [18, 12, 6, 0] {
                    s.push(ALPHABET[((n >> shift) & 63) as usize] as char);
                }
            }
            s
        })
        .collect()
}

/// What the self-test agent reported hearing (its `heard: <message>` reports), in order.
pub fn heard(task: &serde_json::Value) -> Vec<String> {
    task["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "from_brother" && m["text"].as_str().unwrap().starts_with("heard"))
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect()
}

/// What has run on `host` so far: its tmux session names, its task directories and how many
/// SSH execs it started. A command refused before sending anything changes none of them.
pub fn footprint(host: &FakeHost) -> (Vec<String>, Vec<String>, usize) {
    let ls = host.tmux(&["list-sessions", "-F", "#{session_name}"]);
    let mut sessions: Vec<String> = String::from_utf8_lossy(&ls.stdout).lines().map(str::to_string).collect();
    sessions.sort();
    let mut dirs: Vec<String> = std::fs::read_dir(host.remote_root().join("tasks"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    dirs.sort();
    (sessions, dirs, execs(host))
}

/// TCP connections `host`'s sshd accepted (a refused host key still counts one).
pub fn connections(host: &FakeHost) -> usize {
    host.sshd_log().matches("Connection from ").count()
}

/// Held while a test edits the dlgtest user's real crontab: tests run in parallel
/// processes, and each one's read-modify-write must not interleave with another's.
pub fn crontab_lock() -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("delegate-e2e-crontab.lock"))
        .unwrap();
    f.lock().unwrap();
    f
}
