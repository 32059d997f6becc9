//! `delegate-bench`: the benchmark harness of issue 7.
//!
//! Starts N real sshd hosts on loopback (one login account, `dlgbench`, isolated per host by
//! `SetEnv HOME=... TMUX_TMPDIR=...`), optionally behind a userspace delay proxy, and runs
//! delegate (library warm and cold, CLI cold with `--no-warm`, CLI through its warm path)
//! side by side with `ssh host bash -s`, OpenSSH ControlMaster and pssh, all on the same
//! launch script that delegate renders (custom agent `sleep 3600`, so sessions stay up).
//! Writes `target/bench/<timestamp>.{json,md}` and copies the markdown to `BENCHMARKS.md`.
//!
//! Run it through `scripts/bench.sh` (installs what is missing, creates the user, builds in
//! release mode). `delegate-bench --help` lists the options.

// delegate-core's Error is large by design (it carries the facts); so are results here.
#![allow(clippy::result_large_err)]

mod before_issue_21;
mod floor;
mod hosts;
mod measure;
mod proxy;
mod report;
mod scenarios;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use delegate_core::{Delegate, Paths};

use crate::hosts::{Account, Hosts};
use crate::measure::Cell;
use crate::proxy::DelayProxy;

const USAGE: &str = "usage: delegate-bench [--quick] [--rtt 0,20] [--hosts N] [--user NAME] [--delegate PATH]
                      [--only BS1,BS2,BS3,BS4,BS5] [--tasks N] [--no-pin] [--keep] [--out DIR]
                      [--benchmarks-md PATH] [--reproduce TEXT] [--sweep-k LIST]

  --quick            fewer runs and smaller sizes (development; minutes, not a report)
  --rtt LIST         round-trip times in ms made by the delay proxy (0 = direct); default 0,20;
                     any of 0,2,20,80
  --hosts N          number of sshd hosts (default 50: the largest fan-out)
  --user NAME        login user of the hosts (default: dlgbench as root, else yourself)
  --delegate PATH    the delegate CLI (default: target/release/delegate next to this binary)
  --only LIST        scenarios to run (default all)
  --tasks N          mailbox size for BS4 (default 100000)
  --no-pin           do not pin the client to CPU 0 and sshd + proxy to CPU 1
  --keep             keep the run directory under /tmp
  --out DIR          where <timestamp>.json/.md go (default target/bench)
  --benchmarks-md P  also copy the markdown there (default BENCHMARKS.md at the repo root;
                     `-` for none)
  --reproduce TEXT   the command line shown in the report
  --sweep-k LIST     BS3's task counts (default 10,100,1000; 10,100 with --quick)";

pub struct Args {
    pub quick: bool,
    pub rtts: Vec<u32>,
    pub hosts: usize,
    pub user: Option<String>,
    pub delegate: PathBuf,
    pub only: Vec<String>,
    pub tasks: usize,
    pub pin: bool,
    pub keep: bool,
    pub out: PathBuf,
    pub benchmarks_md: Option<PathBuf>,
    pub reproduce: String,
    pub sweep_k: Option<Vec<usize>>,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap_or_else(|_| PathBuf::from("."))
}

fn parse_args(argv: Vec<String>) -> Result<Args> {
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf));
    let root = repo_root();
    let mut a = Args {
        quick: false,
        rtts: vec![0, 20],
        hosts: 50,
        user: None,
        delegate: exe_dir.map(|d| d.join("delegate")).unwrap_or_else(|| root.join("target/release/delegate")),
        only: vec![],
        tasks: 100_000,
        pin: true,
        keep: false,
        out: root.join("target/bench"),
        benchmarks_md: Some(root.join("BENCHMARKS.md")),
        reproduce: "scripts/bench.sh".into(),
        sweep_k: None,
    };
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let mut val = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--rtt" => {
                a.rtts = val()?.split(',').map(|s| s.trim().parse::<u32>()).collect::<Result<_, _>>()?;
            }
            "--hosts" => a.hosts = val()?.parse()?,
            "--user" => a.user = Some(val()?),
            "--delegate" => a.delegate = PathBuf::from(val()?),
            "--only" => a.only = val()?.split(',').map(|s| s.trim().to_uppercase()).collect(),
            "--tasks" => a.tasks = val()?.parse()?,
            "--no-pin" => a.pin = false,
            "--keep" => a.keep = true,
            "--out" => a.out = PathBuf::from(val()?),
            "--benchmarks-md" => {
                let v = val()?;
                a.benchmarks_md = if v == "-" { None } else { Some(PathBuf::from(v)) };
            }
            "--reproduce" => a.reproduce = val()?,
            "--sweep-k" => {
                a.sweep_k = Some(val()?.split(',').map(|s| s.trim().parse::<usize>()).collect::<Result<_, _>>()?);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if a.rtts.is_empty() {
        bail!("--rtt needs at least one level");
    }
    Ok(a)
}

/// The client side for one RTT level: inventory, OpenSSH config, known_hosts, and the
/// proxies (none at 0 ms) the ports point at.
pub struct Level {
    pub rtt: u32,
    pub dir: PathBuf,
    pub home: PathBuf,
    pub config: PathBuf,
    pub ssh_cfg: PathBuf,
    pub ssh_cfg_defkex: PathBuf,
    /// Port of host i (index 0 = h1) as the client sees it.
    pub ports: Vec<u16>,
    _proxies: Vec<DelayProxy>,
}

impl Level {
    pub fn pssh_hosts(&self, n: usize) -> PathBuf {
        self.dir.join(format!("pssh-hosts-{n}"))
    }
    pub fn ctl(&self, host: usize) -> PathBuf {
        self.dir.join(format!("cm-{host}"))
    }
}

pub struct Ctx {
    pub args: Args,
    pub hosts: Hosts,
    pub levels: Vec<Level>,
    pub rt: tokio::runtime::Runtime,
    pub no_warm_flag: bool,
    pub cells: Vec<Cell>,
    /// Peak RSS of each kind of CLI run, KiB.
    pub cli_rss: std::collections::BTreeMap<String, i64>,
    pub notes: Vec<String>,
    pub facts: serde_json::Map<String, serde_json::Value>,
    next_task: i64,
}

impl Ctx {
    pub fn open_lib(&self, level: &Level, data: &str) -> Result<Delegate> {
        Ok(Delegate::open(Paths {
            config_file: level.config.clone(),
            data_dir: self.hosts.root.join("data").join(data),
            home: level.home.clone(),
            local_user: "bench".into(),
            ssh_config: level.home.join(".ssh/config"),
            agent_socket: None,
        })?)
    }

    pub fn data_dir(&self, data: &str) -> PathBuf {
        self.hosts.root.join("data").join(data)
    }

    /// The delegate CLI with a hermetic environment; `warm` false adds `--no-warm` (when the
    /// binary has it).
    pub fn cli(&self, level: &Level, data: &str, warm: bool) -> Command {
        let mut c = Command::new(&self.args.delegate);
        if !warm && self.no_warm_flag {
            c.arg("--no-warm");
        }
        c.env_clear()
            .env("HOME", &level.home)
            .env("USER", "bench")
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("DELEGATE_CONFIG", &level.config)
            .env("DELEGATE_HOME", self.data_dir(data))
            .current_dir(&level.home);
        c
    }

    /// OpenSSH with the level's config (pinned kex unless `defkex`).
    pub fn ssh(&self, level: &Level, defkex: bool) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-F").arg(if defkex { &level.ssh_cfg_defkex } else { &level.ssh_cfg });
        c.env_clear().env("HOME", &level.home).env("PATH", "/usr/local/bin:/usr/bin:/bin").current_dir(&level.home);
        c
    }

    /// A fresh task id for scripts sent by other tools (never used by the mailboxes).
    pub fn fresh_task(&mut self) -> i64 {
        self.next_task += 1;
        self.next_task
    }

    /// The CLI's own peak RSS for this kind of command, measured once (see
    /// [`measure::own_peak_rss_kb`]; a run's wait4 figure would include the harness).
    pub fn note_rss(&mut self, kind: &str, cmd: &Command) {
        if self.cli_rss.contains_key(kind) {
            return;
        }
        if let Some(kb) = measure::own_peak_rss_kb(cmd) {
            self.cli_rss.insert(kind.to_string(), kb);
        }
    }

    pub fn want(&self, scenario: &str) -> bool {
        self.args.only.is_empty() || self.args.only.iter().any(|s| s == scenario)
    }
}

fn write_level(hosts: &Hosts, rtt: u32, prt: &tokio::runtime::Runtime) -> Result<Level> {
    let dir = hosts.root.join(format!("c{rtt}"));
    let home = dir.join("home");
    std::fs::create_dir_all(&home)?;
    let mut proxies = Vec::new();
    let mut ports = Vec::new();
    for h in &hosts.hosts {
        if rtt == 0 {
            ports.push(h.port);
        } else {
            let p = DelayProxy::start(prt, ([127, 0, 0, 1], h.port).into(), Duration::from_millis(rtt as u64))?;
            ports.push(p.port);
            proxies.push(p);
        }
    }
    let kh = dir.join("known_hosts");
    let mut known = String::new();
    let mut inv = String::from("[agents.sleeper]\ncommand = [\"sleep\", \"3600\"]\n\n");
    let mut cfg = String::new();
    let key = hosts.client_key.display();
    let user = &hosts.user.name;
    for (h, port) in hosts.hosts.iter().zip(&ports) {
        let name = h.name();
        known.push_str(&format!("[127.0.0.1]:{port} {}\n", h.host_key));
        inv.push_str(&format!(
            "[hosts.{name}]\naddress = \"127.0.0.1\"\nport = {port}\nuser = \"{user}\"\nidentity = \"{key}\"\n\
             known_hosts = \"{}\"\nconnect_timeout = 20\n\n[brothers.b{}]\nhost = \"{name}\"\nworkdir = \"~\"\n\
             agent = \"sleeper\"\nsandbox = \"full\"\n\n",
            kh.display(),
            h.index
        ));
        cfg.push_str(&format!("Host {name}\n  HostName 127.0.0.1\n  Port {port}\n"));
    }
    let common = format!(
        "Host *\n  User {user}\n  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  \
         GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n  LogLevel ERROR\n  \
         ConnectTimeout 20\n",
        kh.display()
    );
    std::fs::write(&kh, known)?;
    let config = dir.join("config.toml");
    std::fs::write(&config, inv)?;
    let ssh_cfg = dir.join("ssh_config");
    std::fs::write(&ssh_cfg, format!("{cfg}{common}  KexAlgorithms curve25519-sha256\n"))?;
    let ssh_cfg_defkex = dir.join("ssh_config_defkex");
    std::fs::write(&ssh_cfg_defkex, format!("{cfg}{common}"))?;
    for n in [1usize, 10, 50, hosts.hosts.len()] {
        let list: String = (1..=n.min(hosts.hosts.len())).map(|i| format!("h{i}\n")).collect();
        std::fs::write(dir.join(format!("pssh-hosts-{n}")), list)?;
    }
    Ok(Level { rtt, dir, home, config, ssh_cfg, ssh_cfg_defkex, ports, _proxies: proxies })
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("hold") {
        if let Err(e) = scenarios::hold_main(&argv[1..]) {
            eprintln!("delegate-bench hold: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    match run(argv) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("delegate-bench: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(argv: Vec<String>) -> Result<()> {
    let mut args = parse_args(argv)?;
    if !args.delegate.exists() {
        bail!("no delegate CLI at {} (build it: cargo build --release)", args.delegate.display());
    }
    // Children run in other directories: a relative path would resolve there.
    args.delegate = args.delegate.canonicalize()?;
    let user: Account = match &args.user {
        Some(u) => hosts::lookup_user(u).with_context(|| format!("no user {u}"))?,
        None if hosts::is_root() => hosts::lookup_user("dlgbench").context(
            "running as root, the hosts log in as `dlgbench`, which does not exist: run scripts/bench.sh \
             (it creates it), or: useradd -m -s /bin/bash dlgbench && usermod -p '*' dlgbench",
        )?,
        None => hosts::current_user()?,
    };
    if user.uid == 0 {
        bail!("refusing to benchmark logging in as root (root's shell rc costs 100-300 ms per exec)");
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let pin = args.pin && cpus >= 2;
    if pin {
        hosts::pin(0, 0);
    }
    let help = Command::new(&args.delegate).arg("--help").output().context("running delegate --help")?;
    let no_warm_flag = String::from_utf8_lossy(&help.stdout).contains("--no-warm");

    eprintln!("delegate-bench: starting {} sshd hosts as {} ...", args.hosts, user.name);
    let hosts = Hosts::start(args.hosts, user, pin.then_some(1), args.keep)?;
    let prt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(move || {
            if pin {
                hosts::pin(0, 1);
            }
        })
        .build()?;
    let mut levels = Vec::new();
    for &rtt in &args.rtts {
        levels.push(write_level(&hosts, rtt, &prt)?);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut ctx = Ctx {
        args,
        hosts,
        levels,
        rt,
        no_warm_flag,
        cells: vec![],
        cli_rss: Default::default(),
        notes: vec![],
        facts: Default::default(),
        next_task: 1_000_000,
    };
    ctx.facts.insert("pinned".into(), serde_json::json!(pin));
    ctx.facts.insert("no_warm_flag".into(), serde_json::json!(no_warm_flag));
    if !no_warm_flag {
        ctx.notes.push(
            "This delegate CLI has no `--no-warm` flag yet (no warm daemon): D2 and D3 ran the same command, \
             both cold."
                .into(),
        );
    }
    let started = std::time::Instant::now();
    let result = scenarios::run_all(&mut ctx);
    if let Err(e) = &result {
        eprintln!("delegate-bench: a scenario failed: {e:#} (writing what was measured)");
        ctx.notes.push(format!("The run stopped early: {e:#}"));
    }
    ctx.facts.insert("run_seconds".into(), serde_json::json!(started.elapsed().as_secs()));
    report::write(&ctx)?;
    // Proxies go before hosts; hosts tear down by recorded pid and by environment.
    let Ctx { levels, hosts, rt, .. } = ctx;
    drop(levels);
    rt.shutdown_timeout(Duration::from_secs(2));
    drop(hosts);
    prt.shutdown_timeout(Duration::from_secs(1));
    result
}
