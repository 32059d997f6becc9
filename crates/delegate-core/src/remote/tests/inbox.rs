//! Lead-to-agent messages on a real task directory: the say script queues them in
//! `inbox.jsonl`, the agent's `inbox` helper and the Claude hook hand them over and write
//! receipts to `delivered.jsonl`, and the sync carries the receipts back. Everything runs
//! as it would on a brother: scripts from a real launch, real tmux, real flock.

use super::tests::{Scratch, fake_plan, self_test_plan, vars, wait_secs};
use crate::remote::protocol::{
    MAX_SAY_LINE, SayState, SyncRequest, SyncTaskRequest, parse_say, parse_sync, render_say, render_sync, say_line,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

/// A launched task whose agent sleeps, so it is running while we message it.
fn live_task(s: &Scratch, key: &'static str) -> PathBuf {
    let plan = Box::leak(Box::new(fake_plan("exec sleep 30\n")));
    s.launch(&vars(s, key, Box::leak(format!("dlg-{key}").into_boxed_str()), plan, b"x"))
}

fn say(s: &Scratch, key: &str, id: i64, line: &str) -> SayState {
    let root = s.root().to_string_lossy().into_owned();
    let out = s.run(&render_say(&root, key, id, line).unwrap());
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    parse_say(&out.stdout).unwrap_or_else(|| panic!("no state in {:?}", String::from_utf8_lossy(&out.stdout)))
}

fn run(dir: &Path, program: &str, args: &[&str], stdin: &[u8]) -> Output {
    super::tests_helpers::run_helper(dir, program, args, stdin)
}

fn text(out: &Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The receipts as (id, via), in file order; every line must be valid JSON of the shape.
fn receipts(dir: &Path) -> Vec<(i64, String)> {
    let Ok(body) = std::fs::read_to_string(dir.join("delivered.jsonl")) else { return vec![] };
    body.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            let at = v["at"].as_str().unwrap();
            assert!(at.len() == 27 && at.ends_with('Z'), "{l}");
            assert_eq!(v.as_object().unwrap().len(), 3, "{l}");
            (v["id"].as_i64().unwrap(), v["via"].as_str().unwrap().to_string())
        })
        .collect()
}

fn via(r: &[(i64, String)], how: &str) -> Vec<i64> {
    r.iter().filter(|(_, v)| v == how).map(|(id, _)| *id).collect()
}

const AT: &str = "2026-11-21T10:00:00.000001Z";

/// A PostToolUse payload as Claude Code 2.1 sends it.
const POST_TOOL_USE: &str = r#"{"session_id":"0f3c8a51-7a2e-4c55-9a53-1d9e2b6f8c10","transcript_path":"/home/u/.claude/projects/-w/0f3c8a51.jsonl","cwd":"/w","permission_mode":"acceptEdits","hook_event_name":"PostToolUse","tool_name":"Bash","tool_input":{"command":"cargo test","description":"run the tests"},"tool_response":{"stdout":"test result: ok. \"Message 9 from\" 3 passed\n","stderr":"","interrupted":false,"isImage":false},"tool_use_id":"toolu_01"}"#;

fn stop_payload(active: bool) -> String {
    format!(
        r#"{{"session_id":"0f3c8a51-7a2e-4c55-9a53-1d9e2b6f8c10","transcript_path":"/t.jsonl","cwd":"/w","permission_mode":"acceptEdits","hook_event_name":"Stop","stop_hook_active":{active},"last_assistant_message":"all done \"stop_hook_active\":false"}}"#
    )
}

/// Runs the hook as Claude's settings do; returns its stdout, which must be empty or ONE
/// line of JSON.
fn hook(dir: &Path, event: &str, payload: &str) -> Option<Value> {
    let mut bash = Command::new("bash");
    bash.arg(dir.join("hook"));
    let out = super::tests_helpers::run_command(bash, &[event], payload.as_bytes(), &[]);
    assert_eq!((out.status.code(), out.stderr.len()), (Some(0), 0), "{out:?}");
    if out.stdout.is_empty() {
        return None;
    }
    let s = String::from_utf8(out.stdout).unwrap();
    assert_eq!(s.matches('\n').count(), 1, "more than one line: {s:?}");
    assert!(s.ends_with('\n'));
    Some(serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}")))
}

/// The context a PostToolUse hook call handed over (panics on any other shape).
fn context(v: &Value) -> String {
    let o = &v["hookSpecificOutput"];
    assert_eq!(o["hookEventName"], "PostToolUse", "{v}");
    assert_eq!((v.as_object().unwrap().len(), o.as_object().unwrap().len()), (1, 2), "{v}");
    o["additionalContext"].as_str().unwrap().to_string()
}

fn lines_of(dir: &Path, file: &str) -> usize {
    std::fs::read_to_string(dir.join(file)).map(|t| t.lines().count()).unwrap_or(0)
}

#[test]
fn say_queues_a_message_once_and_refuses_finished_or_missing_tasks() {
    let s = Scratch::new("say");
    let dir = live_task(&s, "k-1");
    let line = say_line(1, AT, "lead", "hello \"agent\"\nsecond line");
    assert_eq!(say(&s, "k-1", 1, &line), SayState::Queued);
    assert_eq!(std::fs::read_to_string(dir.join("inbox.jsonl")).unwrap(), format!("{line}\n"));
    // A retry (same id; even if the lead rebuilt the line) appends nothing.
    assert_eq!(say(&s, "k-1", 1, &line), SayState::AlreadyQueued);
    assert_eq!(say(&s, "k-1", 1, &say_line(1, AT, "lead", "other")), SayState::AlreadyQueued);
    assert_eq!(lines_of(&dir, "inbox.jsonl"), 1);
    // Ids are matched whole: 1 is not a prefix of 10.
    assert_eq!(say(&s, "k-1", 10, &say_line(10, AT, "lead", "ten")), SayState::Queued);
    assert_eq!(lines_of(&dir, "inbox.jsonl"), 2);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(dir.join("inbox.jsonl")).unwrap().permissions().mode() & 0o077, 0);

    // The largest line the lead may send goes through whole.
    let prefix = say_line(11, AT, "lead", "").len();
    let big = say_line(11, AT, "lead", &"y".repeat(MAX_SAY_LINE - prefix));
    assert_eq!(big.len(), MAX_SAY_LINE);
    assert_eq!(say(&s, "k-1", 11, &big), SayState::Queued);
    let inbox = std::fs::read_to_string(dir.join("inbox.jsonl")).unwrap();
    assert!(inbox.ends_with(&format!("\n{big}\n")));

    // A line left without its newline (a full disk) is neither a match nor glued to.
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("inbox.jsonl"))
        .unwrap()
        .write_all(br#"{"id":12,"at":"t","author":"a","text":"cut"#)
        .unwrap();
    assert_eq!(say(&s, "k-1", 12, &say_line(12, AT, "lead", "whole")), SayState::Queued);
    let inbox = std::fs::read_to_string(dir.join("inbox.jsonl")).unwrap();
    assert!(
        inbox.ends_with(&format!("\"cut\n{}\n", say_line(12, AT, "lead", "whole"))),
        "{}",
        &inbox[inbox.len() - 200..]
    );

    // A finished run: nobody would read it, so nothing is written.
    let done_plan = self_test_plan(1);
    let done = s.launch(&vars(&s, "k-2", "dlg-k-2", &done_plan, b"x"));
    wait_secs(&done.join("exit"), 5);
    assert_eq!(say(&s, "k-2", 1, &line), SayState::Finished);
    assert!(!done.join("inbox.jsonl").exists());
    // ...unless it was queued before the end: then a retry still says so.
    std::fs::write(done.join("inbox.jsonl"), format!("{line}\n")).unwrap();
    assert_eq!(say(&s, "k-2", 1, &line), SayState::AlreadyQueued);
    assert_eq!(say(&s, "k-2", 2, &say_line(2, AT, "lead", "late")), SayState::Finished);
    assert_eq!(lines_of(&done, "inbox.jsonl"), 1);

    assert_eq!(say(&s, "k-3", 1, &line), SayState::NoTask);
    assert!(!s.task_dir("k-3").exists());
}

#[test]
fn a_say_script_cut_anywhere_queues_nothing() {
    let s = Scratch::new("say-cut");
    let dir = live_task(&s, "k-1");
    let root = s.root().to_string_lossy().into_owned();
    let script = render_say(&root, "k-1", 1, &say_line(1, AT, "lead", "hi")).unwrap();
    let last_line = script[..script.len() - 1].iter().rposition(|b| *b == b'\n').unwrap() + 1;
    let mut cuts: Vec<usize> = script.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1).collect();
    cuts.extend((0..script.len()).step_by(37));
    cuts.extend(last_line..script.len());
    cuts.retain(|&k| k < script.len() - 1);
    cuts.sort_unstable();
    cuts.dedup();
    for k in cuts {
        let out = s.run(&script[..k]);
        assert!(parse_say(&out.stdout).is_none(), "a script cut at byte {k} of {} said {out:?}", script.len());
        assert!(!dir.join("inbox.jsonl").exists(), "a script cut at byte {k} of {} wrote the inbox", script.len());
    }
    assert_eq!(parse_say(&s.run(&script).stdout), Some(SayState::Queued));
}

#[test]
fn inbox_prints_new_messages_decoded_exactly_once() {
    let s = Scratch::new("inbox");
    let dir = live_task(&s, "k-1");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(dir.join("inbox")).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(text(&run(&dir, "inbox", &[], b"")), "no new messages\n");

    // serde's escaping: quotes, backslashes, control characters as escapes, UTF-8 raw.
    let t1 = "quotes \" and \\ backslashes, \\\" and \\n literally,\nnew line\ttab \r cr, bell \u{7}, \
              del \u{7f}, ünïcødé €, emoji 😀, $(id) `id` %s %b \\u0041";
    let l1 = say_line(1, AT, "the \"lead\"", t1);
    // Another valid escaping, ASCII only: \uXXXX for everything else, a surrogate pair for
    // the emoji, \/ \b \f, an escaped backslash before a u.
    let e2 = r#"caf\u00e9 \u20ac \ud83d\ude00\ud83c\udf89 \/ \b\f \\u00e9 \u0022q\u0022 \u005c end\\"#;
    let t2: String = serde_json::from_str(&format!("\"{e2}\"")).unwrap();
    let l2 = format!(r#"{{"id":2,"at":"{AT}","author":"l\u00e9ad","text":"{e2}"}}"#);
    // Long, with an escape every few bytes: decoding stays linear.
    let t3 = "line \"x\" \\ é 😀\n".repeat(4000);
    let l3 = say_line(3, AT, "lead", &t3);
    for (id, l) in [(1, &l1), (2, &l2), (3, &l3)] {
        assert_eq!(say(&s, "k-1", id, l), SayState::Queued);
    }

    let started = Instant::now();
    let out = text(&run(&dir, "inbox", &[], b""));
    eprintln!("inbox printed {} bytes in {:?}", out.len(), started.elapsed());
    let want = format!(
        "--- message 1 from the \"lead\" at {AT} ---\n{t1}\n--- message 2 from léad at {AT} ---\n{t2}\n\
         --- message 3 from lead at {AT} ---\n{t3}\n"
    );
    assert!(out == want, "got:\n{out:.600}\nwant:\n{want:.600}");
    assert_eq!(receipts(&dir), [(1, "inbox".into()), (2, "inbox".into()), (3, "inbox".into())]);
    assert_eq!(text(&run(&dir, "inbox", &[], b"")), "no new messages\n");
    assert_eq!(receipts(&dir).len(), 3);

    // --all prints everything again and writes no receipt.
    assert_eq!(text(&run(&dir, "inbox", &["--all"], b"")), want);
    assert_eq!(receipts(&dir).len(), 3);

    // ack: a receipt once, however often it is said; bad ids are usage errors.
    assert_eq!(text(&run(&dir, "inbox", &["ack", "1"], b"")), "acknowledged 1\n");
    assert_eq!(text(&run(&dir, "inbox", &["ack", "1"], b"")), "acknowledged 1\n");
    assert_eq!(receipts(&dir)[3], (1, "ack".into()));
    for bad in [
        &["ack"][..],
        &["ack", "0"],
        &["ack", "x"],
        &["ack", "-1"],
        &["ack", "01"],
        &["ack", "4"],
        &["ack", "1", "2"],
        &["--all", "x"],
        &["bogus"],
    ] {
        let out = run(&dir, "inbox", bad, b"");
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage: inbox"), "{out:?}");
    }
    assert_eq!(receipts(&dir).len(), 4);

    // A new message after all that: only it is new.
    assert_eq!(say(&s, "k-1", 4, &say_line(4, AT, "lead", "four")), SayState::Queued);
    assert_eq!(text(&run(&dir, "inbox", &[], b"")), format!("--- message 4 from lead at {AT} ---\nfour\n"));
    assert_eq!(via(&receipts(&dir), "inbox"), [1, 2, 3, 4]);
}

#[test]
fn concurrent_readers_deliver_each_message_exactly_once() {
    let s = Scratch::new("inbox-race");
    let dir = live_task(&s, "k-1");
    for id in 1..=3 {
        assert_eq!(say(&s, "k-1", id, &say_line(id, AT, "lead", &format!("message {id}"))), SayState::Queued);
    }
    let children: Vec<_> = (0..10)
        .map(|_| Command::new(dir.join("inbox")).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    let outs: Vec<String> = children.into_iter().map(|c| text(&c.wait_with_output().unwrap())).collect();
    let mut shown: Vec<i64> = outs
        .iter()
        .flat_map(|o| o.lines().filter_map(|l| l.strip_prefix("--- message ")).map(|l| l[..1].parse().unwrap()))
        .collect();
    shown.sort_unstable();
    assert_eq!(shown, [1, 2, 3], "{outs:?}");
    assert_eq!(outs.iter().filter(|o| *o == "no new messages\n").count(), outs.len() - 1, "{outs:?}");
    let mut got = via(&receipts(&dir), "inbox");
    got.sort_unstable();
    assert_eq!(got, [1, 2, 3]);

    // The hook and the helper share the lock: five of each at once, three new messages.
    for id in 4..=6 {
        assert_eq!(say(&s, "k-1", id, &say_line(id, AT, "lead", &format!("message {id}"))), SayState::Queued);
    }
    let threads: Vec<_> = (0..10)
        .map(|i| {
            let dir = dir.clone();
            std::thread::spawn(move || -> Vec<i64> {
                if i % 2 == 0 {
                    let out = text(&run(&dir, "inbox", &[], b""));
                    out.lines()
                        .filter_map(|l| l.strip_prefix("--- message "))
                        .map(|l| l[..1].parse().unwrap())
                        .collect()
                } else {
                    let Some(v) = hook(&dir, "PostToolUse", POST_TOOL_USE) else { return vec![] };
                    let c = context(&v);
                    c.split("Message ").skip(1).map(|m| m[..1].parse().unwrap()).collect()
                }
            })
        })
        .collect();
    let mut shown: Vec<i64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    shown.sort_unstable();
    assert_eq!(shown, [4, 5, 6]);
    let r = receipts(&dir);
    let mut late: Vec<i64> = r[3..].iter().map(|(id, _)| *id).collect();
    late.sort_unstable();
    assert_eq!(late, [4, 5, 6], "{r:?}");
}

#[test]
fn the_hook_hands_undelivered_messages_to_claude_once() {
    let s = Scratch::new("hook-say");
    let dir = live_task(&s, "k-1");
    // Nothing queued: the hook logs and prints nothing.
    assert_eq!(hook(&dir, "PostToolUse", POST_TOOL_USE), None);

    let t1 = "stop editing src/lib.rs: \"it is generated\"\n\\ path C:\\tmp, tab\t, 😀 é \u{1}";
    let t2 = "then run `cargo test` & report";
    assert_eq!(say(&s, "k-1", 1, &say_line(1, AT, "the \"lead\"", t1)), SayState::Queued);
    // An ASCII-escaped line: its escapes are copied into the hook's JSON as they are.
    let e2 = serde_json::to_string(t2).unwrap().replace('&', "\\u0026").replace('`', "\\u0060");
    let l2 = format!(r#"{{"id":2,"at":"{AT}","author":"lead","text":{e2}}}"#);
    assert_eq!(say(&s, "k-1", 2, &l2), SayState::Queued);

    let v = hook(&dir, "PostToolUse", POST_TOOL_USE).expect("a delivery");
    assert_eq!(
        context(&v),
        format!(
            "Message 1 from the \"lead\" (delegate say{}): {t1}\n\nMessage 2 from lead (delegate say{}): {t2}",
            ack(&dir, 1),
            ack(&dir, 2)
        )
    );
    assert_eq!(receipts(&dir), [(1, "hook".into()), (2, "hook".into())]);
    // Delivered once: the next tool call hears nothing, and neither does the helper.
    assert_eq!(hook(&dir, "PostToolUse", POST_TOOL_USE), None);
    assert_eq!(text(&run(&dir, "inbox", &[], b"")), "no new messages\n");
    assert_eq!(receipts(&dir).len(), 2);
    // Every call was still logged, the tool's response never.
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert_eq!(events.lines().count(), 3, "{events}");
    assert!(events.lines().all(|l| l.contains(r#""event":"PostToolUse","tool":"Bash","summary":"cargo""#)));

    // Other events never deliver.
    assert_eq!(say(&s, "k-1", 3, &say_line(3, AT, "lead", "three")), SayState::Queued);
    for event in ["PostToolUseFailure", "SessionStart", "Notification", "StopFailure", "SessionEnd"] {
        assert_eq!(hook(&dir, event, "{}"), None, "{event}");
    }
    assert_eq!(receipts(&dir).len(), 2);
}

#[test]
fn the_stop_hook_delivers_only_when_claude_is_not_already_continuing() {
    let s = Scratch::new("hook-stop");
    let dir = live_task(&s, "k-1");
    assert_eq!(say(&s, "k-1", 1, &say_line(1, AT, "lead", "one more thing")), SayState::Queued);
    // Already continuing because of a Stop hook: let it stop (no loop).
    assert_eq!(hook(&dir, "Stop", &stop_payload(true)), None);
    // No field at all: no evidence it is safe, so nothing either.
    assert_eq!(hook(&dir, "Stop", r#"{"hook_event_name":"Stop"}"#), None);
    assert!(receipts(&dir).is_empty());
    let v = hook(&dir, "Stop", &stop_payload(false)).expect("a delivery");
    assert_eq!(
        v,
        serde_json::json!({"decision": "block", "reason": format!("Message 1 from lead (delegate say{}): one more thing", ack(&dir, 1))})
    );
    assert_eq!(receipts(&dir), [(1, "hook".into())]);
    assert_eq!(hook(&dir, "Stop", &stop_payload(false)), None);
}

#[test]
fn the_hook_keeps_within_its_cap_in_order_and_points_at_what_never_fits() {
    let s = Scratch::new("hook-cap");
    let dir = live_task(&s, "k-1");
    const CAP: usize = 9000;
    let prefix = |id: i64| format!("Message {id} from lead (delegate say{}): ", ack(&dir, id)).len();
    // 1 and 2 fill the cap exactly (4000 + the 4-byte separator + 4996).
    let t1 = "a".repeat(4000 - prefix(1));
    let t2 = "b".repeat(CAP - 4000 - 4 - prefix(2));
    let t4 = "d".repeat(CAP + 1 - prefix(4)); // one byte too many, ever
    let msgs = [(1, t1.clone()), (2, t2.clone()), (3, "late".to_string()), (4, t4.clone()), (5, "after".to_string())];
    for (id, t) in &msgs {
        assert_eq!(say(&s, "k-1", *id, &say_line(*id, AT, "lead", t)), SayState::Queued);
    }
    let entry = |id: i64, t: &str| format!("Message {id} from lead (delegate say{}): {t}", ack(&dir, id));
    let notice = format!(
        "Message 4 from lead (delegate say) is too long to show here ({} bytes): run '{}/inbox' to read it.",
        t4.len(),
        dir.display()
    );

    let c = context(&hook(&dir, "PostToolUse", POST_TOOL_USE).unwrap());
    // The cap counts escaped bytes, as they sit in the hook's JSON (\n\n is 4 of them).
    assert_eq!(serde_json::to_string(&c).unwrap().len(), CAP + 2);
    assert_eq!(c, format!("{}\n\n{}", entry(1, &t1), entry(2, &t2)));
    assert_eq!(via(&receipts(&dir), "hook"), [1, 2]);
    // 3 did not fit and waited; 4 never fits and is pointed at; 5 comes with 3.
    let c = context(&hook(&dir, "PostToolUse", POST_TOOL_USE).unwrap());
    assert_eq!(c, format!("{}\n\n{notice}\n\n{}", entry(3, "late"), entry(5, "after")));
    assert_eq!(via(&receipts(&dir), "hook"), [1, 2, 3, 5]);
    // Until the agent reads it, every tool call repeats the pointer, with no receipt.
    assert_eq!(context(&hook(&dir, "PostToolUse", POST_TOOL_USE).unwrap()), notice);
    assert_eq!(receipts(&dir).len(), 4);
    assert_eq!(text(&run(&dir, "inbox", &[], b"")), format!("--- message 4 from lead at {AT} ---\n{t4}\n"));
    assert_eq!(receipts(&dir)[4], (4, "inbox".into()));
    assert_eq!(hook(&dir, "PostToolUse", POST_TOOL_USE), None);
}

#[test]
fn the_readers_skip_lines_that_are_not_what_say_writes() {
    let s = Scratch::new("inbox-junk");
    let dir = live_task(&s, "k-1");
    // Someone (the agent?) wrote into the inbox by hand: bad escapes, a raw quote, a lone
    // backslash at the end, another shape, a cut line. None of it may reach the hook's
    // JSON or the helper's output; the good line between them still does.
    let junk = [
        r#"{"id":1,"at":"t","author":"a","text":"bad \q escape"}"#,
        r#"{"id":2,"at":"t","author":"a","text":"raw " quote"}"#,
        r#"{"id":3,"at":"t","author":"a","text":"dangling \"}"#,
        r#"{"id":4,"at":"t","author":"a","text":"short \u12"}"#,
        r#"{"id":5, "at":"t","author":"a","text":"spaced"}"#,
        "{\"id\":6,\"at\":\"t\",\"author\":\"a\",\"text\":\"raw\ttab\"}",
        r#"{"id":7,"at":"t","author":"a\q","text":"bad author"}"#,
        r#"{"id":8,"at":"t","author":"a","text":"good"}"#,
        r#"{"id":9,"at":"t","author":"a","text":"cut"#,
    ];
    std::fs::write(dir.join("inbox.jsonl"), junk.join("\n")).unwrap();
    let v = hook(&dir, "PostToolUse", POST_TOOL_USE).expect("the good one");
    assert_eq!(context(&v), format!("Message 8 from a (delegate say{}): good", ack(&dir, 8)));
    assert_eq!(text(&run(&dir, "inbox", &["--all"], b"")), "--- message 8 from a at t ---\ngood\n");
    assert_eq!(text(&run(&dir, "inbox", &[], b"")), "no new messages\n");
    assert_eq!(receipts(&dir), [(8, "hook".into())]);
    // A receipt cut short is not mistaken for one, and the next starts on its own line.
    std::fs::write(dir.join("delivered.jsonl"), "{\"id\":8,\"at\":\"x\",\"via\":\"hook\"}\n{\"id\":3,\"at\"").unwrap();
    std::fs::write(dir.join("inbox.jsonl"), format!("{}\n", say_line(3, AT, "a", "three"))).unwrap();
    assert_eq!(text(&run(&dir, "inbox", &[], b"")), format!("--- message 3 from a at {AT} ---\nthree\n"));
    let body = std::fs::read_to_string(dir.join("delivered.jsonl")).unwrap();
    assert!(body.starts_with("{\"id\":8,\"at\":\"x\",\"via\":\"hook\"}\n{\"id\":3,\"at\"\n{\"id\":3,"), "{body}");
}

#[test]
fn receipts_come_back_with_the_sync() {
    let s = Scratch::new("inbox-sync");
    let dir = live_task(&s, "k-1");
    assert_eq!(say(&s, "k-1", 1, &say_line(1, AT, "lead", "hi")), SayState::Queued);
    run(&dir, "inbox", &[], b"");
    run(&dir, "inbox", &["ack", "1"], b"");
    let req = SyncRequest {
        remote_root: s.root().to_string_lossy().into_owned(),
        tasks: vec![SyncTaskRequest {
            task_key: "k-1".into(),
            session: "dlg-k-1".into(),
            offsets: BTreeMap::new(),
            want_launch_json: false,
            clock_ms: None,
        }],
        max_bytes_per_file: 1 << 20,
        max_bytes_total: 1 << 20,
    };
    let out = s.run(&render_sync(&req).unwrap());
    let reply = parse_sync(&out.stdout).unwrap();
    let d = reply.tasks[0].deltas.iter().find(|d| d.file == "delivered.jsonl").expect("a delivered.jsonl delta");
    assert_eq!(d.bytes, std::fs::read(dir.join("delivered.jsonl")).unwrap());
    assert_eq!(receipts(&dir), [(1, "inbox".into()), (1, "ack".into())]);
    // The inbox itself stays on the brother: the lead wrote it.
    assert!(reply.tasks[0].deltas.iter().all(|d| d.file != "inbox.jsonl"));
    // From the offset it now holds, nothing new.
    let mut again = req.clone();
    again.tasks[0].offsets = BTreeMap::from([("delivered.jsonl".to_string(), d.size)]);
    let out = s.run(&render_sync(&again).unwrap());
    assert!(parse_sync(&out.stdout).unwrap().tasks[0].deltas.iter().all(|d| d.file != "delivered.jsonl"));
}

/// How the hook tells Claude to acknowledge message `id`: the helper by absolute path.
fn ack(dir: &std::path::Path, id: i64) -> String {
    format!("; acknowledge it with '{}/inbox' ack {id}", dir.display())
}
