//! Shared drivers of the fuzz targets in `fuzz_targets/`. Each one calls the library's real
//! parser on bytes an attacker or a broken remote could send; a panic or a broken invariant
//! is a crash. `crates/delegate-core/tests/fuzz_regressions.rs` replays crashes found here.

use delegate_core::agents::outcome::{ExitRecord, StreamFacts, StreamKind, classify};

/// Input layout: first line the runner's `exit` record (as on the brother), second line the
/// head of the agent's stderr, the rest the agent's `stream.jsonl`.
pub fn split_stream_input(data: &[u8]) -> (String, String, &[u8]) {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let exit = String::from_utf8_lossy(parts.next().unwrap_or(b"")).into_owned();
    let stderr = String::from_utf8_lossy(parts.next().unwrap_or(b"")).into_owned();
    let stream = parts.next().unwrap_or(b"");
    (exit, stderr, stream)
}

/// Feeds `stream` whole and in two chunks (re-sending the unconsumed tail, as sync does),
/// checks both give the same facts and offsets, then classifies the run.
pub fn stream(kind: StreamKind, data: &[u8]) {
    let (exit_text, stderr, stream) = split_stream_input(data);

    let mut whole = StreamFacts::default();
    let used = whole.feed(kind, stream);
    assert!(used <= stream.len());

    let cut = stream.first().map_or(0, |b| (*b as usize * 257) % (stream.len() + 1));
    let mut chunked = StreamFacts::default();
    let first = chunked.feed(kind, &stream[..cut]);
    assert!(first <= cut);
    let second = chunked.feed(kind, &stream[first..]);
    assert_eq!(first + second, used, "consumed bytes depend on the chunking");
    assert_eq!(chunked, whole, "facts depend on the chunking (cut at {cut})");

    // The facts are stored as JSON between syncs and must load again.
    let json = serde_json::to_string(&whole).expect("facts serialize");
    let _: StreamFacts = serde_json::from_str(&json).expect("stored facts load");

    let exit = ExitRecord::parse(&exit_text).unwrap_or(ExitRecord { code: 1, at: String::new(), reason: None, spend: None });
    let _ = exit.signal();
    let outcome = classify(kind, &whole, &exit, &stderr);
    let _ = (outcome.status(), outcome.reason());
    serde_json::to_value(&outcome).expect("outcome serializes");
}
