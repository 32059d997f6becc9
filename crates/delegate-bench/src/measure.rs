//! Timing: child processes with their own rusage (peak RSS, CPU), and per-cell statistics.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// One finished child process.
#[derive(Debug, Clone)]
pub struct ProcOut {
    pub wall_ms: f64,
    /// Exit code, or 128 + signal.
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// User + system CPU of the child (and its waited-for children), ms.
    pub cpu_ms: f64,
}

impl ProcOut {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

fn tv_ms(t: libc::timeval) -> f64 {
    t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0
}

/// Peak RSS (KiB) of the program `cmd` runs, on its own: run once more under GNU time, whose
/// small process forks it. The ru_maxrss that wait4 gives for a child of this harness is not
/// that: a child spawned from a big process starts as a copy (or, with posix_spawn, a
/// sharer) of its memory, and Linux keeps that high-water mark across exec. `cmd` must
/// start from a cleared environment (as every CLI command here does).
pub fn own_peak_rss_kb(cmd: &Command) -> Option<i64> {
    let out = std::env::temp_dir().join(format!("dlgb-rss-{}", std::process::id()));
    let mut w = Command::new("/usr/bin/time");
    w.arg("-f").arg("%M").arg("-o").arg(&out).arg(cmd.get_program()).args(cmd.get_args()).env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            w.env(k, v);
        }
    }
    if let Some(d) = cmd.get_current_dir() {
        w.current_dir(d);
    }
    w.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    w.status().ok()?;
    let text = std::fs::read_to_string(&out).ok();
    let _ = std::fs::remove_file(&out);
    text?.lines().last()?.trim().parse().ok()
}

/// Runs `cmd` with `stdin` (or /dev/null), captures both outputs, and reaps it with wait4 to
/// get its own rusage. Killed after `limit`. Wall time runs from just before the spawn to
/// the reap: a new process's start-up is part of what it costs.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>, limit: Duration) -> std::io::Result<ProcOut> {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    let writer = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => {
            let data = data.to_vec();
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            }))
        }
        _ => None,
    };
    let mut out_pipe = child.stdout.take().expect("piped");
    let mut err_pipe = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out_pipe.read_to_end(&mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err_pipe.read_to_end(&mut b);
        b
    });
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while !done.load(Ordering::SeqCst) {
                if Instant::now() >= deadline {
                    // SAFETY: kill(2) on our own child, not yet reaped (done is false).
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child; status and ru are valid out-pointers.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    done.store(true, Ordering::SeqCst);
    let _ = watchdog.join();
    // The child is reaped: make sure std never waits for it again.
    std::mem::forget(child);
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if let Some(w) = writer {
        let _ = w.join();
    }
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
    // Outputs: a daemonised grandchild may hold the pipes open; do not wait for it forever.
    let stdout = join_with_grace(t_out);
    let stderr = join_with_grace(t_err);
    Ok(ProcOut { wall_ms, code, stdout, stderr, cpu_ms: tv_ms(ru.ru_utime) + tv_ms(ru.ru_stime) })
}

fn join_with_grace(t: std::thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !t.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    if t.is_finished() { t.join().unwrap_or_default() } else { Vec::new() }
}

/// VmRSS and VmHWM of this process, KiB.
pub fn self_rss() -> (i64, i64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |k: &str| {
        s.lines().find_map(|l| l.strip_prefix(k)).and_then(|r| r.split_whitespace().next()?.parse().ok()).unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

/// Summary of one set of samples.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Stats {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

pub fn stats(samples: &[f64]) -> Stats {
    if samples.is_empty() {
        return Stats::default();
    }
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        // Nearest rank.
        let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    };
    Stats { n: v.len(), p50: q(0.5), p90: q(0.9), p99: q(0.99), min: v[0], max: v[v.len() - 1] }
}

/// One cell of the report: a comparator in a scenario at one RTT and size.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub scenario: &'static str,
    pub rtt_ms: u32,
    /// e.g. `N=10` or `K=1000 M=10`; empty for single launches.
    pub size: String,
    pub id: String,
    pub label: String,
    pub unit: &'static str,
    pub stats: Stats,
    pub failures: usize,
    /// Medians of extra per-sample metrics (phases, CPU, RSS).
    pub extra: serde_json::Map<String, serde_json::Value>,
    pub samples: Vec<f64>,
    pub note: String,
}

/// Collects samples for one cell, with a time budget so a slow comparator cannot blow the
/// run's time limit (the report shows the n actually reached).
pub struct Collector {
    pub cell: Cell,
    extras: std::collections::BTreeMap<String, Vec<f64>>,
    started: Instant,
}

impl Collector {
    pub fn new(scenario: &'static str, rtt_ms: u32, size: &str, id: &str, label: &str) -> Collector {
        Collector {
            cell: Cell {
                scenario,
                rtt_ms,
                size: size.to_string(),
                id: id.to_string(),
                label: label.to_string(),
                unit: "ms",
                stats: Stats::default(),
                failures: 0,
                extra: Default::default(),
                samples: vec![],
                note: String::new(),
            },
            extras: Default::default(),
            started: Instant::now(),
        }
    }
    pub fn sample(&mut self, ms: f64) {
        self.cell.samples.push(ms);
    }
    pub fn fail(&mut self, why: &str) {
        if self.cell.failures == 0 {
            let mut w = why.trim().replace('\n', " ");
            w.truncate(300);
            self.cell.note = format!("first failure: {w}");
        }
        self.cell.failures += 1;
    }
    pub fn extra(&mut self, key: &str, v: f64) {
        self.extras.entry(key.to_string()).or_default().push(v);
    }
    pub fn note(&mut self, n: &str) {
        if !self.cell.note.is_empty() {
            self.cell.note.push_str("; ");
        }
        self.cell.note.push_str(n);
    }
    /// Keep going? Until `n` samples, or `budget` spent with at least `min_n`.
    pub fn more(&self, n: usize, min_n: usize, budget: Duration) -> bool {
        let have = self.cell.samples.len() + self.cell.failures;
        have < n && (have < min_n || self.started.elapsed() < budget)
    }
    pub fn finish(mut self) -> Cell {
        self.cell.stats = stats(&self.cell.samples);
        for (k, v) in self.extras {
            let s = stats(&v);
            let value = if k.ends_with("_max") || k.starts_with("max_") { s.max } else { s.p50 };
            self.cell.extra.insert(k, serde_json::json!((value * 10.0).round() / 10.0));
        }
        let target_n = self.cell.samples.len();
        eprintln!(
            "  {:<6} {:<44} {:>6} ms p50 {:>8.1} p90 {:>8.1} min {:>8.1} n {:>3} fail {}",
            format!("{}ms", self.cell.rtt_ms),
            format!("{} {} {}", self.cell.scenario, self.cell.size, self.cell.id),
            "",
            self.cell.stats.p50,
            self.cell.stats.p90,
            self.cell.stats.min,
            target_n,
            self.cell.failures
        );
        self.cell
    }
}
