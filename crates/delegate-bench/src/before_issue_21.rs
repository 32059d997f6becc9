//! The sync path before issue 21, kept as BS3's comparator D1x: its script (a frozen copy,
//! `before_issue_21/sync.sh`) rendered as it was then (fields base64 in `DLG_VARS`, one
//! line each) and run with one exec per host on delegate's warm pooled connection, every
//! file of every task looked at. Only the brother's side and the connection are measured:
//! that path's mailbox reads and writes on the lead are not, so D1 / D1x errs against
//! today's path.

use anyhow::{Result, bail};

const SCRIPT: &str = include_str!("before_issue_21/sync.sh");
/// The synced files, in the order the old script took their offsets.
const FILES: [&str; 7] =
    ["state", "exit", "stream.jsonl", "events.jsonl", "outbox.jsonl", "stderr.log", "delivered.jsonl"];

/// One task as the old request carried it.
pub struct Task {
    pub key: String,
    pub session: String,
    pub offsets: std::collections::BTreeMap<String, u64>,
}

/// The script for one host, as the old `render_sync` made it (caps as today's sync's).
pub fn render(root: &str, tasks: &[Task]) -> Vec<u8> {
    let mut fields = vec![
        root.to_string(),
        delegate_core::ops::sync::MAX_BYTES_PER_FILE.to_string(),
        delegate_core::ops::sync::MAX_SYNC_REPLY.to_string(),
    ];
    for t in tasks {
        fields.push(t.key.clone());
        fields.push(t.session.clone());
        fields.push("0".into());
        fields.extend(FILES.iter().map(|f| t.offsets.get(*f).copied().unwrap_or(0).to_string()));
    }
    let vars: String = fields.iter().map(|f| format!("{f}\n")).collect();
    let mut out = format!("DLG_VARS='{}'\n", delegate_core::transport::nats::wire::b64(vars.as_bytes())).into_bytes();
    out.extend_from_slice(SCRIPT.as_bytes());
    out
}

/// Checks a reply did the whole job: its header, a T line per task, END last.
pub fn check(stdout: &[u8], tasks: usize) -> Result<()> {
    let text = String::from_utf8_lossy(stdout);
    let header = format!("DELEGATE-SYNC 1 {tasks} ");
    if !text.starts_with(&header) || !text.ends_with("\nEND\n") {
        bail!("not a whole reply of the old sync script: {:?}", &text[..text.len().min(200)]);
    }
    let t_lines = text.lines().filter(|l| l.starts_with("T ")).count();
    if t_lines != tasks {
        bail!("the old sync script reported {t_lines} of {tasks} tasks");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frozen script still runs against today's task directories (the layout it reads
    /// has not changed): a whole reply, a T line per task, a missing task reported missing.
    #[test]
    fn the_old_script_reports_on_every_task_of_todays_layout() {
        let dir = std::env::temp_dir().join(format!("dlg-bench-old-sync-{}", std::process::id()));
        let root = dir.join("root");
        let mut tasks = Vec::new();
        for i in 0..3 {
            let key = format!("k-{i}");
            let task_dir = root.join("tasks").join(&key);
            std::fs::create_dir_all(&task_dir).unwrap();
            std::fs::write(task_dir.join("state"), "started\n").unwrap();
            tasks.push(Task { key, session: format!("dlg-k-{i}"), offsets: Default::default() });
        }
        tasks.push(Task { key: "k-gone".into(), session: "dlg-k-gone".into(), offsets: Default::default() });
        let script = render(root.to_str().unwrap(), &tasks);
        let mut child = std::process::Command::new("bash")
            .args(["-c", r#"eval "$(</dev/stdin)""#])
            .env("TMUX_TMPDIR", &dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &script).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        std::fs::remove_dir_all(&dir).unwrap();
        check(&out.stdout, 4).unwrap();
        assert!(text.contains("\nT k-0 1 0\nF k-0 state 0 8 8\nstarted\n\n"), "{text}");
        assert!(text.contains("\nT k-gone 0 0\n"), "{text}");
        // A reply cut short, or one with a task fewer, is not a sample.
        assert!(check(&out.stdout[..out.stdout.len() - 1], 4).is_err());
        assert!(check(&out.stdout, 5).is_err());
    }
}
