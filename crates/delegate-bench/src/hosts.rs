//! The benchmark's hosts: N real OpenSSH `sshd` processes on 127.0.0.1, one login account
//! (`dlgbench`), and per host its own `HOME` and `TMUX_TMPDIR` through sshd's `SetEnv`, so
//! hosts sharing the account share no task directories, dotfiles or tmux servers (and pssh,
//! which sends identical stdin to every host, still lands in a different directory on each).
//!
//! Layout under the run root `/tmp/dlgb-<pid>/` (short: tmux socket paths must fit in 108
//! bytes):
//!
//! ```text
//! client/id_ed25519        the one client key, authorized on every host
//! h<i>/etc/                sshd_config, host key, authorized_keys
//! h<i>/home/               the host's $HOME (a copy of /etc/skel), owned by the login user
//! h<i>/tmux/               the host's TMUX_TMPDIR, owned by the login user
//! h<i>/sshd.log
//! ```
//!
//! Teardown is by recorded PID (each listener) and by environment: every process started
//! through a host carries `TMUX_TMPDIR=<run root>/h<i>/tmux`, including the daemonised tmux
//! servers, so they are found without any pattern match on command lines.

use std::ffi::CString;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

const SSHD: &str = "/usr/sbin/sshd";

/// A passwd entry.
#[derive(Clone, Debug)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

pub fn lookup_user(name: &str) -> Option<Account> {
    let cname = CString::new(name).ok()?;
    let mut buf: Vec<libc::c_char> = vec![0; 1 << 16];
    // SAFETY: passwd is plain old data; all-zero is a valid value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and buf.len() is buf's real size.
    let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some(Account { name: name.to_string(), uid: pwd.pw_uid, gid: pwd.pw_gid })
}

pub fn current_user() -> Result<Account> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    // SAFETY: as in lookup_user.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf: Vec<libc::c_char> = vec![0; 1 << 16];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: as in lookup_user.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        bail!("no passwd entry for uid {uid}");
    }
    // SAFETY: on success pw_name points to a NUL-terminated string in buf.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }.to_string_lossy().into_owned();
    Ok(Account { name, uid, gid: pwd.pw_gid })
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Pins `pid` (0: the calling thread) to one CPU; errors are ignored (pinning is optional).
pub fn pin(pid: i32, cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

pub struct Host {
    pub index: usize,
    pub dir: PathBuf,
    pub port: u16,
    /// `"ssh-ed25519 AAAA..."`.
    pub host_key: String,
    child: Child,
}

impl Host {
    pub fn home(&self) -> PathBuf {
        self.dir.join("home")
    }
    pub fn tmux_dir(&self) -> PathBuf {
        self.dir.join("tmux")
    }
    pub fn name(&self) -> String {
        format!("h{}", self.index)
    }
}

pub struct Hosts {
    pub root: PathBuf,
    pub user: Account,
    pub client_key: PathBuf,
    pub hosts: Vec<Host>,
    as_root: bool,
    keep: bool,
}

fn mkdir(p: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(p).with_context(|| format!("mkdir {}", p.display()))?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", p.display()))
}

/// The helper files a launch of the benchmark's agent names (runner, report, inbox, hook),
/// put in `<home>/.delegate/helpers/<sha256>` as a launch leaves them: the rendered script
/// every comparator sends names them by hash only, as delegate's warm launches do.
fn seed_helpers(home: &Path, a: &Account, as_root: bool) -> Result<()> {
    use sha2::{Digest, Sha256};
    let root = home.join(".delegate");
    let store = root.join("helpers");
    for d in [&root, &store] {
        mkdir(d, 0o700)?;
        if as_root {
            chown(d, a)?;
        }
    }
    for (_, content) in delegate_core::remote::helper_files(&[]) {
        let hash: String = Sha256::digest(content.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        let p = store.join(hash);
        fs::write(&p, content)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600))?;
        if as_root {
            chown(&p, a)?;
        }
    }
    Ok(())
}

fn chown(p: &Path, a: &Account) -> Result<()> {
    std::os::unix::fs::chown(p, Some(a.uid), Some(a.gid)).with_context(|| format!("chown {}", p.display()))
}

/// Copies the regular files of /etc/skel (the Debian skeleton rc) into `home`.
fn copy_skel(home: &Path, a: &Account, as_root: bool) -> Result<()> {
    if let Ok(entries) = fs::read_dir("/etc/skel") {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                let to = home.join(e.file_name());
                fs::copy(e.path(), &to)?;
                if as_root {
                    chown(&to, a)?;
                }
            }
        }
    }
    Ok(())
}

impl Hosts {
    /// Starts `n` hosts logging in as `user`, sshd pinned to `sshd_cpu` when given.
    pub fn start(n: usize, user: Account, sshd_cpu: Option<usize>, keep: bool) -> Result<Hosts> {
        reap_leftovers();
        let as_root = is_root();
        let root = PathBuf::from(format!("/tmp/dlgb-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        mkdir(&root, if as_root { 0o711 } else { 0o700 })?;
        let client = root.join("client");
        mkdir(&client, 0o700)?;
        let client_pub = delegate_testkit::keygen(&client, "id_ed25519", "ed25519").1;
        let mut hosts = Hosts {
            root: root.clone(),
            user: user.clone(),
            client_key: client.join("id_ed25519"),
            hosts: vec![],
            as_root,
            keep,
        };
        for i in 1..=n {
            let dir = root.join(format!("h{i}"));
            mkdir(&dir, if as_root { 0o711 } else { 0o700 })?;
            let etc = dir.join("etc");
            mkdir(&etc, 0o711)?;
            let host_key = delegate_testkit::keygen(&etc, "host_key", "ed25519").1;
            fs::write(etc.join("authorized_keys"), format!("{client_pub}\n"))?;
            fs::set_permissions(etc.join("authorized_keys"), fs::Permissions::from_mode(0o644))?;
            for (sub, mode) in [("home", 0o700), ("tmux", 0o700)] {
                let p = dir.join(sub);
                mkdir(&p, mode)?;
                if as_root {
                    chown(&p, &user)?;
                }
            }
            copy_skel(&dir.join("home"), &user, as_root)?;
            seed_helpers(&dir.join("home"), &user, as_root)?;
            let host = start_sshd(i, &dir, &user, host_key)?;
            if let Some(cpu) = sshd_cpu {
                pin(host.child.id() as i32, cpu);
            }
            hosts.hosts.push(host);
        }
        Ok(hosts)
    }

    /// Kills every process started through the hosts (tmux servers, panes, agents: found by
    /// their `TMUX_TMPDIR`), then clears the tmux socket dirs and the task directories, so
    /// the next measurement starts with no sessions and no tmux server.
    pub fn cleanup_sessions(&self) {
        let marker = format!("TMUX_TMPDIR={}/", self.root.display());
        kill_by_env(&marker, Some(self.user.uid));
        for h in &self.hosts {
            if let Ok(entries) = fs::read_dir(h.tmux_dir()) {
                for e in entries.flatten() {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
            // Everything but the helper store: every launch measured (delegate's and the
            // comparators' alike) is one to a host that keeps the helpers, as a warm one is.
            if let Ok(entries) = fs::read_dir(h.home().join(".delegate")) {
                for e in entries.flatten().filter(|e| e.file_name() != "helpers") {
                    let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
                }
            }
        }
    }

    /// Runs `bash -s` with `stdin` locally as the login user with host 1's environment: the
    /// remote work of a launch without any SSH (a floor).
    pub fn local_bash(&self, host: &Host) -> Command {
        let home = host.home();
        let tmux = host.tmux_dir();
        let mut c = if self.as_root {
            let mut c = Command::new("/usr/sbin/runuser");
            c.args(["-u", &self.user.name, "--", "/usr/bin/env"]);
            c
        } else {
            Command::new("/usr/bin/env")
        };
        c.arg("-i")
            .arg(format!("HOME={}", home.display()))
            .arg(format!("TMUX_TMPDIR={}", tmux.display()))
            .arg(format!("USER={}", self.user.name))
            .arg("PATH=/usr/local/bin:/usr/bin:/bin:/usr/games")
            .args(["bash", "-s"])
            .current_dir(&home);
        c
    }
}

fn sshd_config(dir: &Path, port: u16, user: &str) -> String {
    let d = dir.display();
    format!(
        "# delegate-bench host\n{common}\
         MaxStartups 1000:30:2000\n\
         MaxSessions 64\n\
         LogLevel ERROR\n\
         AllowUsers {user}\n\
         SetEnv TMUX_TMPDIR={d}/tmux HOME={d}/home\n",
        common = delegate_testkit::hardened_sshd_config(dir, &format!("127.0.0.1:{port}")),
    )
}

fn start_sshd(index: usize, dir: &Path, user: &Account, host_key: String) -> Result<Host> {
    if is_root() {
        let _ = fs::create_dir_all("/run/sshd");
    }
    let cfg = dir.join("etc/sshd_config");
    for attempt in 1..=5 {
        let port = delegate_testkit::closed_port();
        fs::write(&cfg, sshd_config(dir, port, &user.name))?;
        if index == 1 && attempt == 1 {
            let out = Command::new(SSHD).arg("-t").arg("-f").arg(&cfg).output()?;
            if !out.status.success() {
                bail!("sshd -t -f {}: {}", cfg.display(), String::from_utf8_lossy(&out.stderr));
            }
        }
        let log = fs::File::create(dir.join("sshd.log"))?;
        let mut cmd = Command::new(SSHD);
        cmd.arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&cfg)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: prctl is async-signal-safe. If the harness dies without tearing down
            // (SIGKILL), the listener goes with it. The main thread spawns every host and
            // lives for the whole run, so the thread-exit caveat of PDEATHSIG does not bite.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().context("spawning sshd")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = child.try_wait()? {
                let log = fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
                if log.contains("Address already in use") || log.contains("Cannot bind") {
                    break;
                }
                bail!("sshd for {} exited ({status}):\n{log}", dir.display());
            }
            if delegate_testkit::banner_ok(port) {
                return Ok(Host { index, dir: dir.to_path_buf(), port, host_key, child });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("sshd for {} did not answer within 5 s", dir.display());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Err(anyhow!("sshd for {} could not bind a port in 5 attempts", dir.display()))
}

fn proc_pids() -> Vec<i32> {
    let me = std::process::id() as i32;
    fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
                .filter(|p| *p > 1 && *p != me)
                .collect()
        })
        .unwrap_or_default()
}

fn proc_uid(pid: i32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|r| r.split_whitespace().next()?.parse().ok())
}

fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// SIGKILLs every process (of `uid`, when given) whose environment has an entry starting
/// with `marker`, and waits up to 3 s for them to go.
pub fn kill_by_env(marker: &str, uid: Option<u32>) -> usize {
    let mut killed = Vec::new();
    for _round in 0..3 {
        let mut found = 0;
        for pid in proc_pids() {
            if uid.is_some_and(|u| proc_uid(pid) != Some(u)) {
                continue;
            }
            let env = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if env.split(|b| *b == 0).any(|e| e.starts_with(marker.as_bytes())) && alive(pid) {
                // SAFETY: kill(2) on a process this run started (it carries our run root).
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
                killed.push(pid);
                found += 1;
            }
        }
        if found == 0 {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while killed.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    killed.len()
}

/// Run roots of earlier runs whose harness is gone: stop what they left behind (found by
/// the run root in the environment or sshd's config path on the command line) and delete them.
fn reap_leftovers() {
    let Ok(entries) = fs::read_dir("/tmp") else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("dlgb-").and_then(|p| p.parse::<i32>().ok()) else { continue };
        if alive(pid) {
            continue;
        }
        let root = format!("/tmp/{name}/");
        kill_by_env(&format!("TMUX_TMPDIR={root}"), None);
        kill_by_env(&format!("DELEGATE_HOME={root}"), None);
        for p in proc_pids() {
            let cmdline = fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            if cmdline.starts_with(SSHD.as_bytes()) && cmdline.windows(root.len()).any(|w| w == root.as_bytes()) {
                // SAFETY: an sshd whose config lives in a dead run's root.
                unsafe {
                    libc::kill(p, libc::SIGKILL);
                }
            }
        }
        let _ = fs::remove_dir_all(format!("/tmp/{name}"));
        eprintln!("delegate-bench: cleaned up the leftovers of an earlier run ({root})");
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.cleanup_sessions();
        // A local daemon the CLI may have started for its warm path carries our DELEGATE_HOME.
        kill_by_env(&format!("DELEGATE_HOME={}/", self.root.display()), None);
        for h in &mut self.hosts {
            let pid = h.child.id() as i32;
            let kids = delegate_testkit::descendants_of(pid);
            // SAFETY: kill(2) on our own child, then on the per-connection sshd processes it forked.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while h.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = h.child.kill();
            let _ = h.child.wait();
            for k in kids {
                if alive(k) {
                    // SAFETY: as above.
                    unsafe {
                        libc::kill(k, libc::SIGKILL);
                    }
                }
            }
        }
        if self.keep {
            eprintln!("delegate-bench: keeping {}", self.root.display());
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
        let _ = std::io::stderr().flush();
    }
}
