//! The TOML inventory: `Inventory::parse` (which validates), then lookups of every brother
//! and host it accepted, and the value checks the CLI applies to flags.
#![no_main]

use std::path::Path;

use delegate_core::hosts::inventory::{Inventory, check_address, check_remote_path, parse_timeout};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("fuzz.toml");
    if let Ok(inv) = Inventory::parse(text, path) {
        inv.validate(path).expect("a parsed inventory validates again");
        for name in inv.brothers.keys() {
            inv.brother(name).expect("every brother of a valid inventory resolves");
        }
        for name in inv.hosts.keys() {
            inv.host(name).expect("every host resolves");
        }
    }
    let _ = parse_timeout(text);
    let _ = check_address(text);
    let _ = check_remote_path(text);
});
