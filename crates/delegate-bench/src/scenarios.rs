//! The scenarios BS1-BS5 (see `shared/testplan.md` section 3 and issue 7).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use delegate_core::mailbox::{Caps, LaunchRecord, NewTask};
use delegate_core::ops::launch::{RenderedLaunch, render_launch_script};
use delegate_core::{Delegate, LaunchRequest, ListFilter, Paths, Sandbox, TaskStatus};
use serde_json::{Value, json};

use crate::floor::Bare;
use crate::measure::{self, Collector, ProcOut};
use crate::{Ctx, Level};

const PROMPT: &[u8] = b"benchmark task: the agent is `sleep 3600`\n";
const PROC_LIMIT: Duration = Duration::from_secs(180);

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

struct Plan {
    warm: usize,
    n_launch: usize,
    n_fan: usize,
    n_sweep: usize,
    budget: Duration,
    fan_budget: Duration,
    fanouts: Vec<usize>,
    sweep_k: Vec<usize>,
    sweep_m: Vec<usize>,
    writes: usize,
}

fn plan(ctx: &Ctx) -> Plan {
    let max = ctx.hosts.hosts.len();
    let mut fanouts: Vec<usize> = [1usize, 10, 50].into_iter().filter(|n| *n <= max).collect();
    if fanouts.is_empty() {
        fanouts.push(max);
    }
    let sweep_m: Vec<usize> = [1usize, 10].into_iter().filter(|m| *m <= max).collect();
    if ctx.args.quick {
        Plan {
            warm: 2,
            n_launch: 8,
            n_fan: 3,
            n_sweep: 3,
            budget: Duration::from_secs(12),
            fan_budget: Duration::from_secs(12),
            fanouts,
            sweep_k: vec![10, 100],
            sweep_m,
            writes: 300,
        }
    } else {
        Plan {
            warm: 5,
            n_launch: 30,
            n_fan: 10,
            n_sweep: 10,
            budget: Duration::from_secs(40),
            fan_budget: Duration::from_secs(15),
            fanouts,
            sweep_k: vec![10, 100, 1000],
            sweep_m,
            writes: 2000,
        }
    }
}

pub fn run_all(ctx: &mut Ctx) -> Result<()> {
    let mut p = plan(ctx);
    if let Some(k) = &ctx.args.sweep_k {
        p.sweep_k = k.clone();
    }
    ctx.facts.insert(
        "plan".into(),
        json!({"warmup": p.warm, "n_launch": p.n_launch, "n_fanout": p.n_fan, "n_sweep": p.n_sweep,
               "cell_budget_s": p.budget.as_secs(), "fanouts": p.fanouts, "sweep_k": p.sweep_k, "sweep_m": p.sweep_m}),
    );
    // The script every comparator sends (size is a fact of its own).
    {
        let d = ctx.open_lib(&ctx.levels[0], "render-0")?;
        let r = render_launch_script(&d, "b1", 999_999, PROMPT)?;
        ctx.facts.insert("launch_script_bytes".into(), json!(r.script.len()));
        ctx.facts.insert("launch_script_with_helpers_bytes".into(), json!(r.script_with_helpers.len()));
    }
    // Each host keeps delegate's helper files by hash and a launch sends them only when they
    // are missing: fill every host's store first, so every comparator sends what a warm
    // launch sends.
    {
        let d = ctx.open_lib(&ctx.levels[0], "render-prime")?;
        for h in 0..ctx.hosts.hosts.len() {
            let s = script(ctx, &d, "b1")?;
            let mut cmd = ctx.hosts.local_bash(&ctx.hosts.hosts[h]);
            let out = measure::run(&mut cmd, Some(&s.script_with_helpers), PROC_LIMIT)?;
            if !(out.ok() && launched(&out.stdout, &s.nonce)) {
                anyhow::bail!("could not fill host {h}'s helper store: {}", proc_failure(&out));
            }
        }
        ctx.hosts.cleanup_sessions();
    }
    for li in 0..ctx.levels.len() {
        if ctx.want("BS1") {
            eprintln!("== BS1 single launch, RTT {} ms", ctx.levels[li].rtt);
            bs1(ctx, li, &p)?;
        }
        if ctx.want("BS2") {
            eprintln!("== BS2 fan-out, RTT {} ms", ctx.levels[li].rtt);
            bs2(ctx, li, &p)?;
        }
    }
    if ctx.want("BS3") {
        eprintln!("== BS3 status sweep");
        bs3(ctx, &p)?;
    }
    if ctx.want("BS4") {
        eprintln!("== BS4 mailbox");
        bs4(ctx, &p)?;
    }
    if ctx.want("BS5") {
        eprintln!("== BS5 memory of a process holding connections");
        bs5(ctx)?;
    }
    ctx.hosts.cleanup_sessions();
    Ok(())
}

fn req(brother: &str) -> LaunchRequest {
    LaunchRequest { brother: brother.into(), prompt: PROMPT.to_vec(), ..Default::default() }
}

fn phases(c: &mut Collector, evidence: &Value) {
    if let Some(t) = evidence.get("timings") {
        for k in ["tcp_ms", "handshake_ms", "auth_ms", "exec_ms", "total_ms"] {
            if let Some(v) = t.get(k).and_then(Value::as_f64) {
                c.extra(k, v);
            }
        }
    }
}

/// A script for host `brother` with a task id no mailbox uses.
fn script(ctx: &mut Ctx, renderer: &Delegate, brother: &str) -> Result<RenderedLaunch> {
    let id = ctx.fresh_task();
    let rendered = render_launch_script(renderer, brother, id, PROMPT)?;
    // For profiling the brother's side by hand: the script as sent, once per run.
    if let Some(path) = std::env::var_os("DELEGATE_BENCH_DUMP_SCRIPT")
        && !std::path::Path::new(&path).exists()
    {
        std::fs::write(&path, &rendered.script)?;
    }
    Ok(rendered)
}

/// O2h's remote command: a hand-rolled honest launch (the runner reports from inside tmux).
const HAND_ROLLED: &str = r#"d=$(mktemp -d "$HOME/hand.XXXXXX") && cat >"$d/prompt" && tmux -L delegate new-session -d -s "hand-${d##*.}" "echo up >$d/runner; exec sleep 3600" && until [ -s "$d/runner" ]; do sleep 0.001; done && echo runner-up"#;

fn launched(out: &[u8], nonce: &str) -> bool {
    let needle = format!("DELEGATE-LAUNCHED {nonce} ");
    String::from_utf8_lossy(out).contains(&needle)
}

fn proc_failure(out: &ProcOut) -> String {
    format!("exit {}: {}{}", out.code, out.stderr_str(), out.stdout_str().chars().take(200).collect::<String>())
}

// ---------------------------------------------------------------------------------------
// BS1
// ---------------------------------------------------------------------------------------

/// Times `total` OpenSSH launches, each of a freshly rendered script (the first `warm` are
/// not counted); `ssh` builds one launch's command line.
fn time_openssh_launches(
    ctx: &mut Ctx,
    renderer: &Delegate,
    c: &mut Collector,
    total: usize,
    warm: usize,
    ssh: impl Fn(&Ctx) -> Command,
) -> Result<()> {
    for i in 0..total {
        let s = script(ctx, renderer, "b1")?;
        let out = measure::run(&mut ssh(ctx), Some(&s.script), PROC_LIMIT)?;
        if i < warm {
            continue;
        }
        if out.ok() && launched(&out.stdout, &s.nonce) {
            c.sample(out.wall_ms);
            c.extra("client_cpu_ms", out.cpu_ms);
        } else {
            c.fail(&proc_failure(&out));
        }
    }
    Ok(())
}

fn bs1(ctx: &mut Ctx, li: usize, p: &Plan) -> Result<()> {
    let rtt = ctx.levels[li].rtt;
    let total = p.warm + p.n_launch;
    // Every comparator starts against a tmux server with no sessions (cleaned here and before
    // each cell): each launch leaves one (a sleeping agent), and a server holding hundreds
    // makes every new client slower (it polls every pane), so the comparators run later
    // would otherwise pay for the sessions of those before them.
    ctx.hosts.cleanup_sessions();
    let renderer = ctx.open_lib(&ctx.levels[li], &format!("render-{rtt}"))?;

    // D1: the library on a warm pooled connection.
    {
        let mut d = ctx.open_lib(&ctx.levels[li], &format!("bs1-lib-{rtt}"))?;
        let mut c = Collector::new("BS1", rtt, "", "D1", "delegate library, warm pooled connection");
        for i in 0..total {
            let t = Instant::now();
            let r = ctx.rt.block_on(d.launch(req("b1")));
            let wall = ms(t);
            if i < p.warm {
                if let Ok(task) = &r
                    && i == 0
                {
                    ctx.facts.insert("example_evidence".into(), task.runs[0].evidence.clone());
                }
                continue;
            }
            match r {
                Ok(task) => {
                    c.sample(wall);
                    let ev = &task.runs.last().expect("a run").evidence;
                    phases(&mut c, ev);
                    if let Some(total) = ev["timings"]["total_ms"].as_f64() {
                        c.extra("mailbox_and_render_ms", wall - total);
                    }
                    if ev["connection"] != "reused" {
                        c.note("a launch opened a new connection");
                    }
                }
                Err(e) => c.fail(&e.to_string()),
            }
        }
        ctx.cells.push(c.finish());
        ctx.rt.block_on(d.close());
    }
    // D1x: the same with one exec per launch (the path before the resident shell, issue 21).
    {
        let mut d = ctx.open_lib(&ctx.levels[li], &format!("bs1-libx-{rtt}"))?;
        d.transport().ssh_pool().set_resident(false);
        ctx.hosts.cleanup_sessions();
        let mut c =
            Collector::new("BS1", rtt, "", "D1x", "delegate library, warm pooled connection, one exec per launch");
        for i in 0..total {
            let t = Instant::now();
            let r = ctx.rt.block_on(d.launch(req("b1")));
            let wall = ms(t);
            if i >= p.warm {
                match r {
                    Ok(_) => c.sample(wall),
                    Err(e) => c.fail(&e.to_string()),
                }
            }
        }
        ctx.cells.push(c.finish());
        ctx.rt.block_on(d.close());
    }
    // D1c: the library cold (a new Delegate per launch: open the mailbox, connect, launch).
    {
        ctx.hosts.cleanup_sessions();
        let mut c = Collector::new("BS1", rtt, "", "D1c", "delegate library, cold (new Delegate + connect)");
        for i in 0..total {
            let t = Instant::now();
            let r = ctx.open_lib(&ctx.levels[li], &format!("bs1-libcold-{rtt}")).map(|mut d| {
                let r = ctx.rt.block_on(d.launch(req("b1")));
                (r, d)
            });
            let wall = ms(t);
            match r {
                Ok((Ok(task), d)) => {
                    if i >= p.warm {
                        c.sample(wall);
                        phases(&mut c, &task.runs.last().expect("a run").evidence);
                    }
                    ctx.rt.block_on(d.close());
                }
                Ok((Err(e), _)) => c.fail(&e.to_string()),
                Err(e) => c.fail(&e.to_string()),
            }
        }
        ctx.cells.push(c.finish());
    }
    // D2 / D3: the CLI, cold (--no-warm) and through its warm path.
    for (id, warm, label) in [
        ("D2", false, "delegate CLI, new process, cold connect (--no-warm)"),
        ("D3", true, "delegate CLI, new process, warm path (daemon when present)"),
    ] {
        ctx.hosts.cleanup_sessions();
        let mut c = Collector::new("BS1", rtt, "", id, label);
        let data = format!("bs1-cli-{rtt}");
        for i in 0..total {
            let mut cmd = ctx.cli(&ctx.levels[li], &data, warm);
            cmd.args(["run", "b1", "--json"]).arg(String::from_utf8_lossy(PROMPT).as_ref());
            let out = measure::run(&mut cmd, None, PROC_LIMIT)?;
            if i < p.warm {
                continue;
            }
            if !out.ok() {
                c.fail(&proc_failure(&out));
                continue;
            }
            c.sample(out.wall_ms);
            c.extra("client_cpu_ms", out.cpu_ms);
            ctx.note_rss("run (single launch)", &cmd);
            if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout)
                && let Some(run) = v["runs"].as_array().and_then(|r| r.last())
            {
                phases(&mut c, &run["evidence"]);
                c.extra("reused_connection", if run["evidence"]["connection"] == "reused" { 1.0 } else { 0.0 });
            }
        }
        ctx.cells.push(c.finish());
    }
    // O1: ssh host bash -s, a new process and connection per task (pinned kex, then defaults).
    for (id, defkex, label) in [
        ("O1", false, "ssh h bash -s < script (OpenSSH, kex curve25519-sha256)"),
        ("O1d", true, "ssh h bash -s < script (OpenSSH default kex, sntrup761)"),
    ] {
        ctx.hosts.cleanup_sessions();
        let mut c = Collector::new("BS1", rtt, "", id, label);
        time_openssh_launches(ctx, &renderer, &mut c, total, p.warm, |ctx| {
            let mut cmd = ctx.ssh(&ctx.levels[li], defkex);
            cmd.args(["h1", "bash -s"]);
            cmd
        })?;
        ctx.cells.push(c.finish());
    }
    // O2: ControlMaster, pre-warmed; the first command that creates the master timed apart.
    {
        let level = &ctx.levels[li];
        let t = Instant::now();
        start_master(ctx, level, 1)?;
        let setup = ms(t);
        ctx.hosts.cleanup_sessions();
        let mut c = Collector::new("BS1", rtt, "", "O2", "ssh -S ctl h bash -s < script (ControlMaster, warm)");
        c.note(&format!("creating the master (ssh -fN) took {setup:.1} ms"));
        time_openssh_launches(ctx, &renderer, &mut c, total, p.warm, |ctx| {
            let level = &ctx.levels[li];
            let mut cmd = ctx.ssh(level, false);
            cmd.arg("-S").arg(level.ctl(1)).args(["h1", "bash -s"]);
            cmd
        })?;
        ctx.cells.push(c.finish());
        // O2f: the fair one: ControlMaster running delegate's own remote command.
        ctx.hosts.cleanup_sessions();
        let mut c = Collector::new(
            "BS1",
            rtt,
            "",
            "O2f",
            "ssh -S ctl h 'bash -c eval \"$(</dev/stdin)\"' < script (ControlMaster, delegate's remote command)",
        );
        time_openssh_launches(ctx, &renderer, &mut c, total, p.warm, |ctx| {
            let level = &ctx.levels[li];
            let mut cmd = ctx.ssh(level, false);
            cmd.arg("-S").arg(level.ctl(1)).args(["h1", delegate_core::remote::REMOTE_COMMAND]);
            cmd
        })?;
        ctx.cells.push(c.finish());
        // O2h: the simplest launch a user could hand-roll through ControlMaster: make a
        // directory, write the prompt, `tmux new-session -d`, wait for the runner's first line.
        ctx.hosts.cleanup_sessions();
        let mut c = Collector::new(
            "BS1",
            rtt,
            "",
            "O2h",
            "hand-rolled launch through ControlMaster (mkdir, prompt, tmux, first line)",
        );
        for i in 0..total {
            let level = &ctx.levels[li];
            let mut cmd = ctx.ssh(level, false);
            cmd.arg("-S").arg(level.ctl(1)).arg("h1").arg(HAND_ROLLED);
            let out = measure::run(&mut cmd, Some(PROMPT), PROC_LIMIT)?;
            if i >= p.warm {
                if out.ok() && out.stdout_str().contains("runner-up") {
                    c.sample(out.wall_ms)
                } else {
                    c.fail(&proc_failure(&out))
                }
            }
        }
        ctx.cells.push(c.finish());
        // F0: ControlMaster `true`.
        ctx.hosts.cleanup_sessions();
        let mut c = Collector::new("BS1", rtt, "", "F0-cm-true", "floor: ssh -S ctl h true (ControlMaster)");
        for i in 0..total {
            let level = &ctx.levels[li];
            let mut cmd = ctx.ssh(level, false);
            cmd.arg("-S").arg(level.ctl(1)).args(["h1", "true"]);
            let out = measure::run(&mut cmd, None, PROC_LIMIT)?;
            if i >= p.warm {
                if out.ok() { c.sample(out.wall_ms) } else { c.fail(&proc_failure(&out)) }
            }
        }
        ctx.cells.push(c.finish());
        stop_master(ctx, &ctx.levels[li], 1);
    }
    // F0: OpenSSH cold `true` and client start-up alone.
    for (id, args, label) in [
        ("F0-ssh-true", vec!["h1", "true"], "floor: ssh h true (cold OpenSSH)"),
        ("F0-ssh-G", vec!["-G", "h1"], "floor: ssh -G h (client start-up only)"),
    ] {
        ctx.hosts.cleanup_sessions();
        let mut c = Collector::new("BS1", rtt, "", id, label);
        for i in 0..total {
            let mut cmd = ctx.ssh(&ctx.levels[li], false);
            cmd.args(&args);
            let out = measure::run(&mut cmd, None, PROC_LIMIT)?;
            if i >= p.warm {
                if out.ok() { c.sample(out.wall_ms) } else { c.fail(&proc_failure(&out)) }
            }
        }
        ctx.cells.push(c.finish());
    }
    // F0: bare russh.
    let port = ctx.levels[li].ports[0];
    let user = ctx.hosts.user.name.clone();
    let key = ctx.hosts.client_key.clone();
    for (id, nodelay, label) in [
        ("F0-russh-true", true, "floor: bare russh exec `true`, warm, nodelay"),
        ("F0n-russh-true", false, "floor: bare russh exec `true`, warm, nodelay=false (D1n stand-in)"),
    ] {
        ctx.hosts.cleanup_sessions();
        let mut c = Collector::new("BS1", rtt, "", id, label);
        let bare = ctx.rt.block_on(Bare::connect(port, &user, &key, nodelay))?;
        for i in 0..total {
            let t = Instant::now();
            let r = ctx.rt.block_on(bare.exec("true", b""));
            let wall = ms(t);
            if i >= p.warm {
                match r {
                    Ok((Some(0), _)) => c.sample(wall),
                    Ok((code, _)) => c.fail(&format!("exit {code:?}")),
                    Err(e) => c.fail(&e.to_string()),
                }
            }
        }
        ctx.rt.block_on(bare.close());
        ctx.cells.push(c.finish());
    }
    {
        ctx.hosts.cleanup_sessions();
        let mut c = Collector::new("BS1", rtt, "", "F0-russh-script", "floor: bare russh exec of the script, warm");
        let bare = ctx.rt.block_on(Bare::connect(port, &user, &key, true))?;
        for i in 0..total {
            let s = script(ctx, &renderer, "b1")?;
            let t = Instant::now();
            let r = ctx.rt.block_on(bare.exec("bash -s", &s.script));
            let wall = ms(t);
            if i >= p.warm {
                match r {
                    Ok((Some(0), out)) if launched(&out, &s.nonce) => c.sample(wall),
                    Ok((code, out)) => c.fail(&format!("exit {code:?}: {}", String::from_utf8_lossy(&out))),
                    Err(e) => c.fail(&e.to_string()),
                }
            }
        }
        ctx.rt.block_on(bare.close());
        ctx.cells.push(c.finish());
    }
    {
        // The honest launch's necessary parts alone (the hand-rolled launch of O2h, its
        // prompt on stdin) on a warm bare connection: the report's launch floor is this at
        // 0 ms plus one round trip.
        ctx.hosts.cleanup_sessions();
        let mut c =
            Collector::new("BS1", rtt, "", "F0h", "floor: bare russh exec of the hand-rolled honest launch, warm");
        let bare = ctx.rt.block_on(Bare::connect(port, &user, &key, true))?;
        for i in 0..total {
            let t = Instant::now();
            let r = ctx.rt.block_on(bare.exec(HAND_ROLLED, PROMPT));
            let wall = ms(t);
            if i >= p.warm {
                match r {
                    Ok((Some(0), out)) if out.ends_with(b"runner-up\n") => c.sample(wall),
                    Ok((code, out)) => c.fail(&format!("exit {code:?}: {}", String::from_utf8_lossy(&out))),
                    Err(e) => c.fail(&e.to_string()),
                }
            }
        }
        ctx.rt.block_on(bare.close());
        ctx.cells.push(c.finish());
    }
    {
        ctx.hosts.cleanup_sessions();
        let mut c = Collector::new("BS1", rtt, "", "F0-russh-cold", "floor: bare russh connect + auth + exec `true`");
        for i in 0..total {
            let t = Instant::now();
            let r = ctx.rt.block_on(async {
                let b = Bare::connect(port, &user, &key, true).await?;
                let r = b.exec("true", b"").await;
                b.close().await;
                r
            });
            let wall = ms(t);
            if i >= p.warm {
                match r {
                    Ok((Some(0), _)) => c.sample(wall),
                    Ok((code, _)) => c.fail(&format!("exit {code:?}")),
                    Err(e) => c.fail(&e.to_string()),
                }
            }
        }
        ctx.cells.push(c.finish());
    }
    // F0: the remote work alone: the script run locally as the login user, no SSH.
    if li == 0 {
        ctx.hosts.cleanup_sessions();
        let mut c =
            Collector::new("BS1", 0, "", "F0-local", "floor: bash -s < script locally as the host user (no SSH)");
        for i in 0..total {
            let s = script(ctx, &renderer, "b1")?;
            let mut cmd = ctx.hosts.local_bash(&ctx.hosts.hosts[0]);
            let out = measure::run(&mut cmd, Some(&s.script), PROC_LIMIT)?;
            if i >= p.warm {
                if out.ok() && launched(&out.stdout, &s.nonce) {
                    c.sample(out.wall_ms)
                } else {
                    c.fail(&proc_failure(&out))
                }
            }
        }
        ctx.cells.push(c.finish());
    }
    ctx.hosts.cleanup_sessions();
    Ok(())
}

fn start_master(ctx: &Ctx, level: &Level, host: usize) -> Result<()> {
    let mut cmd = ctx.ssh(level, false);
    cmd.args(["-o", "ControlMaster=yes", "-o", "ControlPersist=600", "-S"])
        .arg(level.ctl(host))
        .args(["-fN", &format!("h{host}")]);
    let out = measure::run(&mut cmd, None, PROC_LIMIT)?;
    if !out.ok() {
        bail!("ControlMaster to h{host}: {}", proc_failure(&out));
    }
    Ok(())
}

fn stop_master(ctx: &Ctx, level: &Level, host: usize) {
    let mut cmd = ctx.ssh(level, false);
    cmd.arg("-S").arg(level.ctl(host)).args(["-O", "exit", &format!("h{host}")]);
    let _ = measure::run(&mut cmd, None, Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------------
// BS2
// ---------------------------------------------------------------------------------------

/// Runs `jobs` closures on threads at once; returns their results in order.
fn parallel<T: Send + 'static>(jobs: Vec<Box<dyn FnOnce() -> T + Send>>) -> Vec<T> {
    let handles: Vec<_> = jobs.into_iter().map(std::thread::spawn).collect();
    handles.into_iter().map(|h| h.join().expect("job thread")).collect()
}

fn bs2(ctx: &mut Ctx, li: usize, p: &Plan) -> Result<()> {
    let rtt = ctx.levels[li].rtt;
    let renderer = ctx.open_lib(&ctx.levels[li], &format!("render-{rtt}"))?;
    let fan_warm = 1;
    for &n in &p.fanouts.clone() {
        let size = format!("N={n}");
        let brothers: Vec<String> = (1..=n).map(|i| format!("b{i}")).collect();
        // D1 warm library fan-out (the warm-up iteration connects to every host).
        ctx.hosts.cleanup_sessions();
        {
            let mut d = ctx.open_lib(&ctx.levels[li], &format!("bs2-lib-{rtt}-{n}"))?;
            let mut c = Collector::new("BS2", rtt, &size, "D1", "delegate library launch_many, warm pool");
            let mut i = 0;
            while i < fan_warm || c.more(p.n_fan, 3, p.fan_budget) {
                let reqs = brothers.iter().map(|b| req(b)).collect();
                let t = Instant::now();
                let rs = ctx.rt.block_on(d.launch_many(reqs));
                let wall = ms(t);
                let bad: Vec<String> = rs.iter().filter_map(|r| r.as_ref().err().map(|e| e.to_string())).collect();
                if i >= fan_warm {
                    if bad.is_empty() {
                        c.sample(wall);
                        c.extra("per_host_ms", wall / n as f64);
                    } else {
                        c.fail(&format!("{} of {n} failed: {}", bad.len(), bad[0]));
                    }
                }
                i += 1;
            }
            ctx.cells.push(c.finish());
            ctx.rt.block_on(d.close());
        }
        ctx.hosts.cleanup_sessions();
        {
            let mut c = Collector::new("BS2", rtt, &size, "D1c", "delegate library launch_many, cold (new Delegate)");
            let mut i = 0;
            while i < fan_warm || c.more(p.n_fan, 3, p.fan_budget) {
                let t = Instant::now();
                let mut d = ctx.open_lib(&ctx.levels[li], &format!("bs2-libcold-{rtt}-{n}"))?;
                let rs = ctx.rt.block_on(d.launch_many(brothers.iter().map(|b| req(b)).collect()));
                let wall = ms(t);
                ctx.rt.block_on(d.close());
                let bad: Vec<String> = rs.iter().filter_map(|r| r.as_ref().err().map(|e| e.to_string())).collect();
                if i >= fan_warm {
                    if bad.is_empty() {
                        c.sample(wall)
                    } else {
                        c.fail(&format!("{} of {n} failed: {}", bad.len(), bad[0]))
                    }
                }
                i += 1;
            }
            ctx.cells.push(c.finish());
        }
        // D2 / D3: CLI fan-out.
        for (id, warm, label) in [
            ("D2", false, "delegate CLI run b1,b2,... (cold, --no-warm)"),
            ("D3", true, "delegate CLI run b1,b2,... (warm path)"),
        ] {
            ctx.hosts.cleanup_sessions();
            let mut c = Collector::new("BS2", rtt, &size, id, label);
            let data = format!("bs2-cli-{rtt}-{n}");
            let mut i = 0;
            while i < fan_warm || c.more(p.n_fan, 3, p.fan_budget) {
                let mut cmd = ctx.cli(&ctx.levels[li], &data, warm);
                cmd.args(["run", &brothers.join(","), "--json"]).arg(String::from_utf8_lossy(PROMPT).as_ref());
                let out = measure::run(&mut cmd, None, PROC_LIMIT)?;
                ctx.note_rss(&format!("run fan-out N={n}"), &cmd);
                if i >= fan_warm {
                    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                    let ok_tasks = if n == 1 {
                        usize::from(v["status"] == "launched")
                    } else {
                        v["tasks"].as_array().map_or(0, |t| t.iter().filter(|t| t["status"] == "launched").count())
                    };
                    if out.ok() && ok_tasks == n {
                        c.sample(out.wall_ms);
                        c.extra("client_cpu_ms", out.cpu_ms);
                        c.extra("client_cpu_per_host_ms", out.cpu_ms / n as f64);
                    } else {
                        c.fail(&format!("{ok_tasks} of {n} launched; {}", proc_failure(&out)));
                    }
                }
                i += 1;
            }
            ctx.cells.push(c.finish());
        }
        // O1: N ssh processes at once.
        ctx.hosts.cleanup_sessions();
        {
            let mut c = Collector::new("BS2", rtt, &size, "O1", "N parallel `ssh h bash -s` processes");
            let mut i = 0;
            while i < fan_warm || c.more(p.n_fan, 3, p.fan_budget) {
                let s = script(ctx, &renderer, "b1")?;
                let level = &ctx.levels[li];
                let script = Arc::new(s.script.clone());
                let jobs: Vec<Box<dyn FnOnce() -> std::io::Result<ProcOut> + Send>> = (1..=n)
                    .map(|h| {
                        let mut cmd = ctx.ssh(level, false);
                        cmd.args([format!("h{h}"), "bash -s".into()]);
                        let script = script.clone();
                        Box::new(move || measure::run(&mut cmd, Some(&script), PROC_LIMIT))
                            as Box<dyn FnOnce() -> std::io::Result<ProcOut> + Send>
                    })
                    .collect();
                let t = Instant::now();
                let outs = parallel(jobs);
                let wall = ms(t);
                if i >= fan_warm {
                    let mut cpu = 0.0;
                    let mut bad = None;
                    let mut fails = 0;
                    for o in outs {
                        match o {
                            Ok(o) if o.ok() && launched(&o.stdout, &s.nonce) => cpu += o.cpu_ms,
                            Ok(o) => {
                                fails += 1;
                                bad.get_or_insert(proc_failure(&o));
                            }
                            Err(e) => {
                                fails += 1;
                                bad.get_or_insert(e.to_string());
                            }
                        }
                    }
                    if fails == 0 {
                        c.sample(wall);
                        c.extra("client_cpu_per_host_ms", cpu / n as f64);
                    } else {
                        c.fail(&format!("{fails} of {n} failed: {}", bad.unwrap_or_default()));
                    }
                }
                i += 1;
            }
            ctx.cells.push(c.finish());
        }
        // O2: N ssh processes through pre-warmed ControlMasters.
        ctx.hosts.cleanup_sessions();
        {
            for h in 1..=n {
                start_master(ctx, &ctx.levels[li], h)?;
            }
            let mut c = Collector::new("BS2", rtt, &size, "O2", "N parallel `ssh -S ctl h bash -s` (warm masters)");
            let mut i = 0;
            while i < fan_warm || c.more(p.n_fan, 3, p.fan_budget) {
                let s = script(ctx, &renderer, "b1")?;
                let level = &ctx.levels[li];
                let script = Arc::new(s.script.clone());
                let jobs: Vec<Box<dyn FnOnce() -> std::io::Result<ProcOut> + Send>> = (1..=n)
                    .map(|h| {
                        let mut cmd = ctx.ssh(level, false);
                        cmd.arg("-S").arg(level.ctl(h)).args([format!("h{h}"), "bash -s".into()]);
                        let script = script.clone();
                        Box::new(move || measure::run(&mut cmd, Some(&script), PROC_LIMIT))
                            as Box<dyn FnOnce() -> std::io::Result<ProcOut> + Send>
                    })
                    .collect();
                let t = Instant::now();
                let outs = parallel(jobs);
                let wall = ms(t);
                if i >= fan_warm {
                    let fails: Vec<String> = outs
                        .into_iter()
                        .filter_map(|o| match o {
                            Ok(o) if o.ok() && launched(&o.stdout, &s.nonce) => None,
                            Ok(o) => Some(proc_failure(&o)),
                            Err(e) => Some(e.to_string()),
                        })
                        .collect();
                    if fails.is_empty() {
                        c.sample(wall)
                    } else {
                        c.fail(&format!("{} of {n} failed: {}", fails.len(), fails[0]))
                    }
                }
                i += 1;
            }
            ctx.cells.push(c.finish());
            for h in 1..=n {
                stop_master(ctx, &ctx.levels[li], h);
            }
        }
        // O3: pssh at -p N (and at its default parallelism for the largest N).
        let mut variants = vec![("O3", Some(n), "parallel-ssh -p N -I < script")];
        if n == *p.fanouts.last().expect("a fan-out size") && n > 32 {
            variants.push(("O3d", None, "parallel-ssh -I < script (default -p 32)"));
        }
        for (id, par, label) in variants {
            ctx.hosts.cleanup_sessions();
            let mut c = Collector::new("BS2", rtt, &size, id, label);
            let mut i = 0;
            while i < fan_warm || c.more(p.n_fan, 3, p.fan_budget) {
                let s = script(ctx, &renderer, "b1")?;
                let level = &ctx.levels[li];
                let mut cmd = std::process::Command::new("parallel-ssh");
                cmd.arg("-h").arg(level.pssh_hosts(n));
                if let Some(par) = par {
                    cmd.args(["-p", &par.to_string()]);
                }
                cmd.args(["-t", "120", "-I", "-x"])
                    .arg(format!("-F {}", level.ssh_cfg.display()))
                    .env_clear()
                    .env("HOME", &level.home)
                    .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                    .current_dir(&level.home)
                    .arg("bash -s");
                let out = measure::run(&mut cmd, Some(&s.script), PROC_LIMIT)?;
                if i >= fan_warm {
                    let ok = out.stdout_str().matches("[SUCCESS]").count();
                    if out.ok() && ok == n {
                        c.sample(out.wall_ms);
                        c.extra("client_cpu_per_host_ms", out.cpu_ms / n as f64);
                    } else {
                        c.fail(&format!("{ok} of {n} succeeded; {}", proc_failure(&out)));
                    }
                }
                i += 1;
            }
            ctx.cells.push(c.finish());
        }
        ctx.hosts.cleanup_sessions();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// BS3
// ---------------------------------------------------------------------------------------

/// Runs `cmds` (one per task) through a pool of `width` threads; returns failures.
fn pool_run(cmds: Vec<std::process::Command>, width: usize) -> (usize, Option<String>) {
    let queue = Arc::new(Mutex::new(cmds));
    let fails = Arc::new(AtomicUsize::new(0));
    let first = Arc::new(Mutex::new(None));
    let handles: Vec<_> = (0..width)
        .map(|_| {
            let (queue, fails, first) = (queue.clone(), fails.clone(), first.clone());
            std::thread::spawn(move || {
                loop {
                    let Some(mut cmd) = queue.lock().expect("queue").pop() else { return };
                    match measure::run(&mut cmd, None, PROC_LIMIT) {
                        Ok(o) if o.ok() => {}
                        Ok(o) => {
                            fails.fetch_add(1, Ordering::SeqCst);
                            first.lock().expect("first").get_or_insert(proc_failure(&o));
                        }
                        Err(e) => {
                            fails.fetch_add(1, Ordering::SeqCst);
                            first.lock().expect("first").get_or_insert(e.to_string());
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let first = first.lock().expect("first").take();
    (fails.load(Ordering::SeqCst), first)
}

fn bs3(ctx: &mut Ctx, p: &Plan) -> Result<()> {
    for &m in &p.sweep_m.clone() {
        ctx.hosts.cleanup_sessions();
        let data = format!("sweep-m{m}");
        let _ = std::fs::remove_dir_all(ctx.data_dir(&data));
        let mut setup = ctx.open_lib(&ctx.levels[0], &data)?;
        let mut have = 0usize;
        for &k in &p.sweep_k.clone() {
            // Launch up to K tasks, round-robin over M hosts, 50 at a time.
            let t = Instant::now();
            let mut failed = 0;
            while have < k {
                let batch: Vec<LaunchRequest> =
                    (have..k.min(have + 50)).map(|i| req(&format!("b{}", i % m + 1))).collect();
                let nb = batch.len();
                failed += ctx.rt.block_on(setup.launch_many(batch)).iter().filter(|r| r.is_err()).count();
                have += nb;
            }
            eprintln!(
                "  sweep setup: {k} tasks on {m} host(s) ({failed} failed) in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            let size = format!("K={k} M={m}");
            for li in 0..ctx.levels.len() {
                sweep_level(ctx, li, &data, &size, k, m, p)?;
            }
        }
        ctx.rt.block_on(setup.close());
    }
    ctx.hosts.cleanup_sessions();
    Ok(())
}

fn sweep_level(ctx: &mut Ctx, li: usize, data: &str, size: &str, k: usize, m: usize, p: &Plan) -> Result<()> {
    let rtt = ctx.levels[li].rtt;
    // D1: library sync on a warm pool (the warm-up syncs also move launched -> running).
    let mut d = ctx.open_lib(&ctx.levels[li], data)?;
    {
        let mut c = Collector::new("BS3", rtt, size, "D1", "delegate library sync(), warm pool");
        let mut i = 0;
        while i < 2 || c.more(p.n_sweep, 3, p.budget) {
            let t = Instant::now();
            let r = ctx.rt.block_on(d.sync(None));
            let wall = ms(t);
            if i >= 2 {
                match r {
                    Ok(s) if s.errors().next().is_none() => {
                        c.sample(wall);
                        c.extra("execs", s.hosts.iter().map(|h| h.execs as f64).sum());
                        c.extra("hosts", s.hosts.len() as f64);
                    }
                    Ok(s) => c.fail(&format!("{:?}", s.errors().next())),
                    Err(e) => c.fail(&e.to_string()),
                }
            }
            i += 1;
        }
        let running = d
            .list(&ListFilter { status: Some(TaskStatus::Running), ..Default::default() })
            .map(|v| v.len())
            .unwrap_or(0);
        if running != k {
            c.note(&format!("{running} of {k} tasks running after sync"));
        }
        ctx.cells.push(c.finish());
    }
    let tasks = d.list(&ListFilter::default())?;
    ctx.rt.block_on(d.close());
    drop(d);
    // D1x: the path before issue 21, as it was: its sync script (a frozen copy), one exec
    // per host on the warm pool, every file of every task looked at; the lead's mailbox work
    // of that path is not counted (see before_issue_21.rs).
    {
        let d = ctx.open_lib(&ctx.levels[li], data)?;
        d.transport().ssh_pool().set_resident(false);
        let mut by_host: BTreeMap<String, Vec<crate::before_issue_21::Task>> = BTreeMap::new();
        for r in d.store().in_flight()? {
            by_host.entry(r.host.clone()).or_default().push(crate::before_issue_21::Task {
                key: delegate_core::remote::task_key(d.store().mailbox_id(), r.task_id, r.run_no),
                session: r.session,
                offsets: r.offsets,
            });
        }
        let mut jobs = Vec::new();
        for (host, tasks) in &by_host {
            let root = d
                .inventory()
                .host(host)?
                .remote_root
                .clone()
                .unwrap_or_else(|| delegate_core::hosts::inventory::DEFAULT_REMOTE_ROOT.into());
            jobs.push((d.reach(host)?, crate::before_issue_21::render(&root, tasks), tasks.len()));
        }
        let mut c = Collector::new(
            "BS3",
            rtt,
            size,
            "D1x",
            "the sync path before issue 21: its script, one exec per host on the warm pool (brother side only)",
        );
        let transport = d.transport().clone();
        let mut i = 0;
        while i < 2 || c.more(p.n_sweep, 3, p.budget) {
            let t = Instant::now();
            // Every host at once, as a sync does.
            let replies = ctx.rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for (reach, script, n) in &jobs {
                    let (transport, reach, script, n) = (transport.clone(), reach.clone(), script.clone(), *n);
                    set.spawn(async move {
                        let limit = Duration::from_secs(60);
                        let out = transport.exec(&reach, delegate_core::remote::REMOTE_COMMAND, &script, limit).await;
                        (out, n)
                    });
                }
                set.join_all().await
            });
            let wall = ms(t);
            if i >= 2 {
                let checked = replies.into_iter().try_for_each(|(r, n)| {
                    let (out, _) = r.map_err(|e| anyhow::anyhow!(e.to_string()))?;
                    crate::before_issue_21::check(&out.stdout, n)
                });
                match checked {
                    Ok(()) => c.sample(wall),
                    Err(e) => c.fail(&e.to_string()),
                }
            }
            i += 1;
        }
        ctx.cells.push(c.finish());
        ctx.rt.block_on(d.close());
    }
    // D1t: today's sync with one exec per sync and no clocks (every file looked at), which
    // shares today's script: what the resident shell and the clocks alone bring.
    {
        let mut d = ctx.open_lib(&ctx.levels[li], data)?;
        d.transport().ssh_pool().set_resident(false);
        d.set_sync_clocks(false);
        let mut c = Collector::new(
            "BS3",
            rtt,
            size,
            "D1t",
            "delegate library sync(), warm pool, one exec per sync, every file looked at (today's script)",
        );
        let mut i = 0;
        while i < 2 || c.more(p.n_sweep, 3, p.budget) {
            let t = Instant::now();
            let r = ctx.rt.block_on(d.sync(None));
            let wall = ms(t);
            if i >= 2 {
                match r {
                    Ok(s) if s.errors().next().is_none() => c.sample(wall),
                    Ok(s) => c.fail(&format!("{:?}", s.errors().next())),
                    Err(e) => c.fail(&e.to_string()),
                }
            }
            i += 1;
        }
        ctx.cells.push(c.finish());
        ctx.rt.block_on(d.close());
    }
    // D2 / D3: CLI sync; D2s: CLI status (sync + listing).
    for (id, args, warm, label, n) in [
        ("D2", vec!["sync", "--json"], false, "delegate CLI sync (cold, --no-warm)", p.n_sweep),
        ("D3", vec!["sync", "--json"], true, "delegate CLI sync (warm path)", p.n_sweep),
        ("D2s", vec!["status", "--json"], false, "delegate CLI status (cold)", p.n_sweep.min(3)),
    ] {
        let mut c = Collector::new("BS3", rtt, size, id, label);
        let mut i = 0;
        while i < 1 || c.more(n, 3, p.budget) {
            let mut cmd = ctx.cli(&ctx.levels[li], data, warm);
            cmd.args(&args);
            let out = measure::run(&mut cmd, None, PROC_LIMIT)?;
            ctx.note_rss(&format!("{} K={k}", args[0]), &cmd);
            if i >= 1 {
                if out.ok() {
                    c.sample(out.wall_ms);
                    c.extra("client_cpu_ms", out.cpu_ms);
                } else {
                    c.fail(&proc_failure(&out));
                }
            }
            i += 1;
        }
        ctx.cells.push(c.finish());
    }
    // O1 / O2: one `has-session && cat state` per task, 32 at a time.
    let per_task: Vec<(usize, String, String)> = tasks
        .iter()
        .filter_map(|t| {
            let host: usize = t.host.trim_start_matches('h').parse().ok()?;
            let dir = t.runs.last()?.remote_dir.clone()?;
            Some((host, t.session.clone()?, dir))
        })
        .collect();
    if per_task.len() != k {
        ctx.notes.push(format!("BS3 {size}: only {} of {k} tasks have a session and a remote dir", per_task.len()));
    }
    for (id, cm, label) in [
        ("O1", false, "per task: ssh h 'tmux has-session && cat state', 32 at a time"),
        ("O2", true, "per task: the same through ControlMaster, 32 at a time"),
    ] {
        if !cm && k >= 1000 && li > 0 {
            // ~1000 cold handshakes per sample on one sshd core: measured at the first RTT only.
            ctx.notes
                .push(format!("BS3 {size} O1 at {rtt} ms skipped to keep the run short (see the first RTT level)"));
            continue;
        }
        if cm {
            for h in 1..=m {
                start_master(ctx, &ctx.levels[li], h)?;
            }
        }
        let mut c = Collector::new("BS3", rtt, size, id, label);
        let mut i = 0;
        let warm = usize::from(cm);
        while i < warm || c.more(p.n_sweep.min(5), 1, p.fan_budget) {
            let level = &ctx.levels[li];
            let cmds: Vec<std::process::Command> = per_task
                .iter()
                .map(|(h, session, dir)| {
                    let mut cmd = ctx.ssh(level, false);
                    if cm {
                        cmd.arg("-S").arg(level.ctl(*h));
                    }
                    cmd.arg(format!("h{h}"))
                        .arg(format!("tmux -L delegate has-session -t '={session}' && cat '{dir}/state'"));
                    cmd
                })
                .collect();
            let t = Instant::now();
            let (fails, first) = pool_run(cmds, 32);
            let wall = ms(t);
            if i >= warm {
                if fails == 0 {
                    c.sample(wall)
                } else {
                    c.fail(&format!("{fails} of {k} failed: {}", first.unwrap_or_default()))
                }
            }
            i += 1;
        }
        ctx.cells.push(c.finish());
        if cm {
            for h in 1..=m {
                stop_master(ctx, &ctx.levels[li], h);
            }
        }
    }
    // Floor: one warm exec round trip per host, all hosts in parallel.
    {
        let mut c = Collector::new("BS3", rtt, size, "F0", "floor: one warm russh exec `true` per host, in parallel");
        let user = ctx.hosts.user.name.clone();
        let key = ctx.hosts.client_key.clone();
        let ports: Vec<u16> = ctx.levels[li].ports[..m].to_vec();
        let conns: Vec<Bare> = ctx.rt.block_on(async {
            let mut v = Vec::new();
            for port in ports {
                v.push(Bare::connect(port, &user, &key, true).await?);
            }
            anyhow::Ok(v)
        })?;
        let conns = Arc::new(conns);
        for i in 0..(p.warm + p.n_launch) {
            let conns2 = conns.clone();
            let t = Instant::now();
            let r = ctx.rt.block_on(async move {
                let futs = conns2.iter().map(|b| b.exec("true", b""));
                let all = futures_join_all(futs).await;
                all.into_iter().all(|r| matches!(r, Ok((Some(0), _))))
            });
            let wall = ms(t);
            if i >= p.warm {
                if r { c.sample(wall) } else { c.fail("an exec failed") }
            }
        }
        if let Ok(conns) = Arc::try_unwrap(conns) {
            ctx.rt.block_on(async {
                for b in conns {
                    b.close().await;
                }
            });
        }
        ctx.cells.push(c.finish());
    }
    Ok(())
}

/// Awaits every future concurrently (on the current task), results in order.
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let futs: Vec<_> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..futs.len()).map(|_| None).collect();
    let mut pending: Vec<(usize, std::pin::Pin<Box<F>>)> = futs.into_iter().enumerate().collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|(i, f)| match f.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => {
                out[*i] = Some(v);
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    out.into_iter().map(|o| o.expect("every future finished")).collect()
}

// ---------------------------------------------------------------------------------------
// BS4
// ---------------------------------------------------------------------------------------

fn bs4(ctx: &mut Ctx, p: &Plan) -> Result<()> {
    let data = "bs4";
    let _ = std::fs::remove_dir_all(ctx.data_dir(data));
    let mut d = ctx.open_lib(&ctx.levels[0], data)?;
    let evidence = ctx.facts.get("example_evidence").cloned().unwrap_or_else(|| json!({"timings": {"exec_ms": 10.0}}));
    let target = ctx.args.tasks.max(p.writes);
    let mut create = Collector::new("BS4", 0, "", "W-create", "Store::create_task (one BEGIN IMMEDIATE commit, FULL)");
    let mut record = Collector::new("BS4", 0, "", "W-record", "Store::record_launch (commit with evidence)");
    let mut finish = Collector::new("BS4", 0, "", "W-finish", "Store::transition to completed (commit)");
    let prompt_sha = delegate_core::ops::launch::sha256_hex(PROMPT);
    let options = delegate_core::agents::AgentOptions::default();
    let started = Instant::now();
    let mut written = 0usize;
    while written < p.writes && (written < 100 || started.elapsed() < Duration::from_secs(30)) {
        let store = d.store_mut();
        let t = Instant::now();
        let run = store.create_task(&NewTask {
            brother: "b1",
            host: "h1",
            address: "dlgbench@127.0.0.1:22",
            subject: "benchmark task",
            agent: "sleeper",
            model: None,
            sandbox: Sandbox::Full,
            max_turns: 50,
            workdir: "~",
            prompt: PROMPT,
            prompt_sha256: &prompt_sha,
            timeout_secs: 4 * 3600,
            author: "bench",
            caps: Caps::default(),
            options: &options,
            settings: &serde_json::Value::Null,
            priority: Default::default(),
            parent: None,
            notify: None,
        })?;
        create.sample(ms(t));
        let t = Instant::now();
        let marker = format!("DELEGATE-LAUNCHED {} {} 4242", run.nonce, run.session);
        let version = store.record_launch(
            &run,
            &LaunchRecord {
                status: TaskStatus::Launched,
                reason: None,
                remote_dir: Some("/home/x/.delegate/tasks/x"),
                pane_pid: Some(4242),
                marker: Some(&marker),
                launch_exit: Some(0),
                evidence: &evidence,
                launch_stderr: None,
            },
        )?;
        record.sample(ms(t));
        let t = Instant::now();
        store.transition(run.task_id, version, TaskStatus::Completed, Some("benchmark"))?;
        finish.sample(ms(t));
        written += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    ctx.facts.insert(
        "bs4_library_writes".into(),
        json!({"tasks": written, "seconds": secs, "tasks_per_s": written as f64 / secs, "commits_per_s": 3.0 * written as f64 / secs}),
    );
    ctx.cells.push(create.finish());
    ctx.cells.push(record.finish());
    ctx.cells.push(finish.finish());
    drop(d);

    // Fill up to the target by copying rows in one transaction (no library batch API).
    let db = ctx.data_dir(data).join("mailbox.db");
    let t = Instant::now();
    let rows = bulk_fill(&db, target)?;
    let fill_s = t.elapsed().as_secs_f64();
    ctx.facts.insert(
        "bs4_bulk_fill".into(),
        json!({"tasks": rows, "seconds": fill_s, "tasks_per_s": (rows as f64 - written as f64) / fill_s,
               "db_bytes": std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0)}),
    );
    eprintln!("  mailbox filled to {rows} tasks in {fill_s:.1} s");
    let size = format!("tasks={rows}");

    // Library list in process.
    {
        let d = ctx.open_lib(&ctx.levels[0], data)?;
        let mut c = Collector::new("BS4", 0, &size, "L-lib", "library Delegate::list (limit 50)");
        for i in 0..(p.warm + p.n_launch) {
            let t = Instant::now();
            let r = d.list(&ListFilter { limit: Some(50), ..Default::default() });
            let wall = ms(t);
            if i >= p.warm {
                match r {
                    Ok(v) if v.len() == 50 => c.sample(wall),
                    Ok(v) => c.fail(&format!("{} tasks listed", v.len())),
                    Err(e) => c.fail(&e.to_string()),
                }
            }
        }
        ctx.cells.push(c.finish());
        let mut c = Collector::new("BS4", 0, &size, "L-open", "library Delegate::open of the 100k mailbox");
        for i in 0..(p.warm + p.n_launch) {
            let t = Instant::now();
            let r = ctx.open_lib(&ctx.levels[0], data);
            let wall = ms(t);
            if i >= p.warm {
                match r {
                    Ok(_) => c.sample(wall),
                    Err(e) => c.fail(&e.to_string()),
                }
            }
        }
        ctx.cells.push(c.finish());
    }
    for (id, args, label) in [
        ("L-cli", vec!["list"], "delegate list (syncs first: no task in flight)"),
        ("L-cli-nosync", vec!["list", "--no-sync"], "delegate list --no-sync"),
        ("L-cli-json", vec!["list", "--json"], "delegate list --json"),
        ("L-cli-1000", vec!["list", "--json", "--limit", "1000"], "delegate list --json --limit 1000"),
        ("S-cli", vec!["status", "--json"], "delegate status --json (nothing in flight)"),
    ] {
        let mut c = Collector::new("BS4", 0, &size, id, label);
        for i in 0..(p.warm + p.n_launch) {
            let mut cmd = ctx.cli(&ctx.levels[0], data, false);
            cmd.args(&args);
            let out = measure::run(&mut cmd, None, PROC_LIMIT)?;
            ctx.note_rss(&format!("{} (100k mailbox)", args.join(" ")), &cmd);
            if i >= p.warm {
                if out.ok() {
                    c.sample(out.wall_ms);
                    c.extra("client_cpu_ms", out.cpu_ms);
                    c.extra("stdout_bytes", out.stdout.len() as f64);
                } else {
                    c.fail(&proc_failure(&out));
                }
            }
        }
        ctx.cells.push(c.finish());
    }
    Ok(())
}

/// Copies the mailbox's tasks (with their runs and transitions) until it holds `target`
/// tasks, in one transaction; returns the task count.
fn bulk_fill(db: &std::path::Path, target: usize) -> Result<usize> {
    let mut conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    let cols = |conn: &rusqlite::Connection, table: &str| -> Result<Vec<String>> {
        let mut st = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
        let v = st.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    };
    let task_cols: Vec<String> = cols(&conn, "tasks")?.into_iter().filter(|c| c != "id").collect();
    let run_cols: Vec<String> = cols(&conn, "runs")?.into_iter().filter(|c| c != "task_id").collect();
    let tr_cols: Vec<String> =
        cols(&conn, "transitions")?.into_iter().filter(|c| c != "id" && c != "task_id").collect();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    loop {
        let (count, max): (i64, i64) =
            tx.query_row("SELECT count(*), coalesce(max(id), 0) FROM tasks", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if count as usize >= target || count == 0 {
            break;
        }
        let take = (target - count as usize).min(count as usize) as i64;
        let min: i64 = tx.query_row("SELECT min(id) FROM tasks", [], |r| r.get(0))?;
        let upto = min + take - 1;
        let tc = task_cols.join(", ");
        tx.execute(&format!("INSERT INTO tasks ({tc}) SELECT {tc} FROM tasks WHERE id <= ?1 ORDER BY id"), [upto])?;
        // New ids follow max in the same order as the copied ones: old id + (max + 1 - min).
        let off = max + 1 - min;
        let rc = run_cols.join(", ");
        tx.execute(
            &format!("INSERT INTO runs (task_id, {rc}) SELECT task_id + ?1, {rc} FROM runs WHERE task_id <= ?2"),
            [off, upto],
        )?;
        let trc = tr_cols.join(", ");
        tx.execute(
            &format!(
                "INSERT INTO transitions (task_id, {trc}) SELECT task_id + ?1, {trc} FROM transitions WHERE task_id <= ?2"
            ),
            [off, upto],
        )?;
    }
    tx.commit()?;
    let n: i64 = conn.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))?;
    Ok(n as usize)
}

// ---------------------------------------------------------------------------------------
// BS5
// ---------------------------------------------------------------------------------------

fn bs5(ctx: &mut Ctx) -> Result<()> {
    ctx.hosts.cleanup_sessions();
    let n = ctx.hosts.hosts.len();
    let level = &ctx.levels[0];
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("hold")
        .arg(&level.config)
        .arg(ctx.data_dir("bs5"))
        .arg(&level.home)
        .arg(n.to_string())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin");
    let out = measure::run(&mut cmd, None, PROC_LIMIT)?;
    if !out.ok() {
        bail!("hold: {}", proc_failure(&out));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("hold output")?;
    eprintln!("  long-lived process: {v}");
    ctx.facts.insert("bs5_hold".into(), v);
    ctx.hosts.cleanup_sessions();
    Ok(())
}

/// `delegate-bench hold CONFIG DATA HOME N`: a long-lived library process: connect to N
/// hosts and keep the connections, launch one task on each, and report RSS at each step.
pub fn hold_main(args: &[String]) -> Result<()> {
    let [config, data, home, n] = args else { bail!("usage: delegate-bench hold CONFIG DATA HOME N") };
    let n: usize = n.parse()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (rss0, _) = measure::self_rss();
    let mut d = Delegate::open(Paths {
        config_file: PathBuf::from(config),
        data_dir: PathBuf::from(data),
        home: PathBuf::from(home),
        local_user: "bench".into(),
        ssh_config: PathBuf::from(home).join(".ssh/config"),
        agent_socket: None,
    })?;
    let (rss_open, _) = measure::self_rss();
    let t = Instant::now();
    let targets: Vec<_> = (1..=n).map(|i| d.resolve_target(&format!("h{i}"))).collect::<Result<_, _>>()?;
    let pool = d.pool().clone();
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for t in targets {
            let pool = pool.clone();
            set.spawn(async move { pool.session(&t).await.map(|_| ()) });
        }
        while let Some(r) = set.join_next().await {
            r.expect("connect task")?;
        }
        anyhow::Ok(())
    })?;
    let connect_ms = ms(t);
    let (rss_conn, hwm_conn) = measure::self_rss();
    let reqs = (1..=n).map(|i| req(&format!("b{i}"))).collect();
    let rs = rt.block_on(d.launch_many(reqs));
    let failed = rs.iter().filter(|r| r.is_err()).count();
    // Idle for a moment holding everything, as a long-lived process would.
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(500)).await });
    let (rss_launch, hwm) = measure::self_rss();
    rt.block_on(d.close());
    println!(
        "{}",
        json!({"connections": n, "rss_start_kb": rss0, "rss_open_kb": rss_open, "rss_connected_kb": rss_conn,
               "hwm_connected_kb": hwm_conn, "rss_after_launch_kb": rss_launch, "hwm_kb": hwm,
               "connect_all_ms": connect_ms, "launch_failures": failed,
               "per_connection_kb": (rss_conn - rss_open) as f64 / n as f64})
    );
    Ok(())
}
