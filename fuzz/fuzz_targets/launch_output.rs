//! `runner::parse_output`: the launch script's stdout and stderr (split at the first NUL).
#![no_main]

use delegate_core::remote::parse_output;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (stdout, stderr) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let out = parse_output(stdout, stderr);
    if let Some(m) = &out.marker {
        assert!(!m.nonce.contains(' ') && !m.session.contains(' '));
    }
});
