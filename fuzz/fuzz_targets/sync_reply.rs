//! The replies of the sync, cancel and say scripts, as read back from a brother's stdout.
#![no_main]

use delegate_core::remote::protocol::{SYNCED_FILES, parse_cancel, parse_say, parse_sync};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(reply) = parse_sync(data) {
        for t in &reply.tasks {
            for d in &t.deltas {
                assert!(SYNCED_FILES.contains(&d.file.as_str()), "unknown file {:?} accepted", d.file);
                assert!(d.offset + d.bytes.len() as u64 <= d.size, "a delta past its file's size: {d:?}");
            }
        }
    }
    let _ = parse_say(data);
    let _ = parse_cancel(data);
});
