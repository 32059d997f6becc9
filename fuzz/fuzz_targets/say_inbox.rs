//! `render_say`'s check of an inbox line (the message the lead sends a brother): whatever
//! it accepts travels as one line of JSON with exactly the keys the brother's readers expect.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use delegate_core::remote::protocol::render_say;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    for id in [1, 3] {
        let Ok(script) = render_say("/r", "k-1", id, line) else { continue };
        let first = &script[..script.iter().position(|b| *b == b'\n').expect("a DLG_VARS line")];
        let b64 = first.strip_prefix(b"DLG_VARS='").and_then(|r| r.strip_suffix(b"'")).expect("DLG_VARS='...'");
        let vars = B64.decode(b64).expect("base64");
        let sent = vars.split(|b| *b == 0).nth(3).expect("the line field");
        assert!(!sent.contains(&b'\n') && !sent.contains(&b'\r'), "a multi-line inbox line");
        let v: serde_json::Value = serde_json::from_slice(sent).expect("the sent line is JSON");
        let o = v.as_object().expect("an object");
        let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["at", "author", "id", "text"]);
        assert_eq!(o["id"].as_i64(), Some(id));
        assert!(sent.starts_with(format!("{{\"id\":{id},\"at\":\"").as_bytes()));
    }
});
