//! Inputs found by the fuzz targets in `fuzz/` (run with `scripts/fuzz.sh`), replayed
//! through the same parsers as normal tests so a fixed crash stays fixed.
//!
//! To add a crash: copy `fuzz/artifacts/<target>/crash-*` into `REGRESSIONS` below (as a
//! byte string) with the target's name. The seeds in `fuzz/seeds/` are replayed too, so the
//! seed corpus keeps parsing without panics. No crash has been found so far.

use delegate_core::agents::outcome::{ExitRecord, StreamFacts, StreamKind, classify};
use delegate_core::hosts::inventory::Inventory;
use delegate_core::remote::parse_output;
use delegate_core::remote::protocol::{parse_cancel, parse_say, parse_sync, render_say};

/// (target, input) pairs found by fuzzing.
const REGRESSIONS: &[(&str, &[u8])] = &[];

/// The fuzz target `target`'s work on `data`, for the targets that need no files.
fn replay(target: &str, data: &[u8]) {
    match target {
        "stream_claude" => stream(StreamKind::Claude, data),
        "stream_codex" => stream(StreamKind::Codex, data),
        "stream_custom" => stream(StreamKind::None, data),
        "sync_reply" => {
            let _ = parse_sync(data);
            let _ = parse_say(data);
            let _ = parse_cancel(data);
        }
        "say_inbox" => {
            if let Ok(line) = std::str::from_utf8(data) {
                let _ = render_say("/r", "k-1", 3, line);
            }
        }
        "launch_output" => {
            let (stdout, stderr) = match data.iter().position(|b| *b == 0) {
                Some(i) => (&data[..i], &data[i + 1..]),
                None => (data, &b""[..]),
            };
            let _ = parse_output(stdout, stderr);
        }
        "config" => {
            if let Ok(text) = std::str::from_utf8(data) {
                let _ = Inventory::parse(text, std::path::Path::new("fuzz.toml"));
            }
        }
        // known_hosts and ssh_config read files; their crashes get a test of their own.
        _ => {}
    }
}

/// As `fuzz/src/lib.rs`: the exit record's line, a stderr line, then the stream.
fn stream(kind: StreamKind, data: &[u8]) {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let exit = String::from_utf8_lossy(parts.next().unwrap_or(b"")).into_owned();
    let stderr = String::from_utf8_lossy(parts.next().unwrap_or(b"")).into_owned();
    let stream = parts.next().unwrap_or(b"");
    let mut facts = StreamFacts::default();
    let used = facts.feed(kind, stream);
    assert!(used <= stream.len());
    let exit = ExitRecord::parse(&exit).unwrap_or(ExitRecord { code: 1, at: String::new(), reason: None, spend: None });
    let outcome = classify(kind, &facts, &exit, &stderr);
    let _ = (outcome.status(), outcome.reason());
}

#[test]
fn fuzz_crashes_stay_fixed() {
    for (target, data) in REGRESSIONS {
        replay(target, data);
    }
}

#[test]
fn fuzz_seeds_parse_without_panicking() {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    let Ok(targets) = std::fs::read_dir(&seeds) else { return };
    let mut n = 0;
    for target in targets.flatten() {
        let name = target.file_name().to_string_lossy().into_owned();
        for seed in std::fs::read_dir(target.path()).unwrap().flatten() {
            replay(&name, &std::fs::read(seed.path()).unwrap());
            n += 1;
        }
    }
    assert!(n > 0, "no seeds under {}", seeds.display());
}
