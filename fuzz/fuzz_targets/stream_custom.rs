//! `StreamFacts::feed` and `classify` on a custom stream (see `delegate_fuzz::stream`).
#![no_main]

use delegate_core::agents::outcome::StreamKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| delegate_fuzz::stream(StreamKind::None, data));
