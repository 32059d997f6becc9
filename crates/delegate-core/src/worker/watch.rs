//! Reporting on launched tasks: every tick, for each task in the state file, run the sync
//! script for that task alone from the offsets already published, and when anything
//! changed publish `delegate.sync` (the script's stdout and the offsets it read from). Only
//! after the server acknowledged the publish do the offsets advance on disk, so a crash
//! re-publishes (the stream drops the duplicate by its message id) and never skips.
//!
//! A task stops being watched once its exit record was published and its session is gone
//! (or its directory is gone, or its session died without an exit record and that was
//! already reported).

use std::collections::BTreeMap;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::state::Watched;
use super::{Shared, local};
use crate::error::{Error, Result};
use crate::remote::protocol::{SyncRequest, SyncTaskRequest, parse_sync, render_sync};
use crate::transport::nats::wire::{self, ResultMessage};

/// How long one task's sync script may run.
const SYNC_LIMIT: Duration = Duration::from_secs(60);

pub async fn run(s: Shared) -> Result<()> {
    let mut watching = None;
    let mut tick = tokio::time::interval(s.config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // One watcher per task tree: the first replica to take the lock keeps it.
        if watching.is_none() {
            match s.state.lock("watch", false) {
                Ok(lock) => watching = lock,
                Err(e) => s.log(&e.to_string()),
            }
        }
        if watching.is_none() {
            continue;
        }
        let state = {
            let dir = s.state.clone();
            match tokio::task::spawn_blocking(move || dir.read()).await {
                Ok(Ok(state)) => state,
                Ok(Err(e)) => {
                    s.log(&e.to_string());
                    continue;
                }
                Err(e) => return Err(Error::Config { path: "(worker)".into(), message: e.to_string() }),
            }
        };
        for (key, w) in &state.tasks {
            if let Err(e) = watch_one(&s, key, w).await {
                s.log(&format!("task {key}: {e}"));
            }
        }
    }
}

/// One task's round: sync, publish if anything changed, then advance (or stop watching).
pub async fn watch_one(s: &Shared, key: &str, w: &Watched) -> Result<()> {
    let budget = super::tasks::reply_cap(s.max_payload()) as u64;
    let script = render_sync(&SyncRequest {
        remote_root: w.root.clone(),
        tasks: vec![SyncTaskRequest {
            task_key: key.to_string(),
            session: w.session.clone(),
            offsets: w.offsets.clone(),
            want_launch_json: false,
            clock_ms: None,
        }],
        max_bytes_per_file: budget,
        max_bytes_total: budget,
    })?;
    let reply = local::run_script(&script, &s.config.home, SYNC_LIMIT, budget as usize + 64 * 1024).await;
    let failed = |why: String| Error::Config { path: "(worker sync)".into(), message: why };
    if let Some(why) = reply.broken {
        return Err(failed(why));
    }
    let stdout = wire::unb64(&reply.stdout).map_err(failed)?;
    if reply.exit != Some(0) || reply.overflow {
        let stderr = wire::unb64(&reply.stderr).unwrap_or_default();
        return Err(failed(format!(
            "the sync script ended with {:?}: {}",
            reply.exit,
            crate::sanitize::clean_line(&String::from_utf8_lossy(&stderr), 500)
        )));
    }
    let parsed = parse_sync(&stdout).map_err(failed)?;
    let report = parsed.tasks.first().ok_or_else(|| failed("the sync reply has no task".into()))?;
    let mut offsets = w.offsets.clone();
    let mut grew = false;
    for d in &report.deltas {
        if !d.bytes.is_empty() {
            grew = true;
            offsets.insert(d.file.clone(), d.offset + d.bytes.len() as u64);
        }
    }
    let alive_changed = w.session_alive != Some(report.session_alive);
    let exit_read = offsets.get("exit").is_some_and(|n| *n > 0);
    let cut = report.deltas.iter().any(|d| d.cut());
    let finished = !report.dir_exists
        || (!report.session_alive && !cut && (exit_read || (w.session_alive == Some(false) && !grew)));
    if grew || alive_changed || !report.dir_exists {
        let result = ResultMessage::Sync {
            v: wire::WIRE_VERSION,
            task_key: key.to_string(),
            instance: s.config.instance.clone(),
            offsets: w.offsets.clone(),
            stdout: wire::b64(&stdout),
        };
        s.publish_result(&w.mailbox, &msg_id(key, &w.offsets, report.session_alive), &result).await?;
    }
    if !(grew || alive_changed || finished) {
        return Ok(());
    }
    let (owned, alive, dir) = (key.to_string(), report.session_alive, s.state.clone());
    tokio::task::spawn_blocking(move || {
        dir.update(|tasks| {
            if finished {
                tasks.remove(&owned);
            } else if let Some(t) = tasks.get_mut(&owned) {
                t.offsets = offsets;
                t.session_alive = Some(alive);
            }
        })
    })
    .await
    .map_err(|e| failed(e.to_string()))??;
    if finished {
        s.log(&format!("task {key} finished; no longer watched"));
    }
    Ok(())
}

/// The same offsets (and session state) give the same id: a re-publish after a crash is a
/// duplicate the stream drops.
fn msg_id(key: &str, offsets: &BTreeMap<String, u64>, alive: bool) -> String {
    let mut h = Sha256::new();
    for (f, n) in offsets {
        h.update(format!("{f}={n};").as_bytes());
    }
    h.update([alive as u8]);
    let hex: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{key}.sync.{hex}")
}
