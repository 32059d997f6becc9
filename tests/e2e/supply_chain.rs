//! S12, the part that needs no network and no cargo-deny: what `Cargo.lock` pins.
//! (`scripts/supply-chain.sh` runs `cargo deny` with `deny.toml` where it is installed,
//! and the advisories check against a vendored advisory DB when one is given.)

/// The oldest russh the test plan accepts (fixes for the advisories known when it was written).
const RUSSH_FLOOR: (u64, u64, u64) = (0, 63, 1);
const CRATES_IO: &str = "registry+https://github.com/rust-lang/crates.io-index";

struct Package {
    name: String,
    version: String,
    source: Option<String>,
}

/// The `[[package]]` entries of a Cargo.lock (format v3/v4): name, version, source.
fn packages(lock: &str) -> Vec<Package> {
    let mut out: Vec<Package> = Vec::new();
    let mut current: Option<Package> = None;
    for line in lock.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            out.extend(current.take());
            if line == "[[package]]" {
                current = Some(Package { name: String::new(), version: String::new(), source: None });
            }
            continue;
        }
        let Some(p) = current.as_mut() else { continue };
        let Some((key, value)) = line.split_once(" = ") else { continue };
        let value = value.trim_matches('"').to_string();
        match key {
            "name" => p.name = value,
            "version" => p.version = value,
            "source" => p.source = Some(value),
            _ => {}
        }
    }
    out.extend(current);
    out
}

/// (major, minor, patch) and whether it is a pre-release.
fn semver(v: &str) -> ((u64, u64, u64), bool) {
    let (core, pre) = match v.split_once(['-', '+']) {
        Some((c, rest)) => (c, v.as_bytes()[c.len()] == b'-' && !rest.is_empty()),
        None => (v, false),
    };
    let n: Vec<u64> = core.split('.').map(|x| x.parse().unwrap_or_else(|_| panic!("bad version {v}"))).collect();
    assert_eq!(n.len(), 3, "bad version {v}");
    ((n[0], n[1], n[2]), pre)
}

fn at_least(v: &str, floor: (u64, u64, u64)) -> bool {
    let (core, pre) = semver(v);
    core > floor || (core == floor && !pre)
}

fn lock() -> Vec<Package> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let pkgs = packages(&text);
    assert!(pkgs.len() > 50 && pkgs.iter().all(|p| !p.name.is_empty() && !p.version.is_empty()), "unparsed lock");
    pkgs
}

fn versions_of<'a>(pkgs: &'a [Package], name: &str) -> Vec<&'a str> {
    pkgs.iter().filter(|p| p.name == name).map(|p| p.version.as_str()).collect()
}

#[test]
fn supply_chain_lock_has_exactly_one_russh_at_or_above_the_floor() {
    let pkgs = lock();
    let russh = versions_of(&pkgs, "russh");
    assert_eq!(russh.len(), 1, "Cargo.lock must hold exactly one russh, has {russh:?}");
    assert!(
        at_least(russh[0], RUSSH_FLOOR),
        "russh {} in Cargo.lock is older than the floor {}.{}.{}",
        russh[0],
        RUSSH_FLOOR.0,
        RUSSH_FLOOR.1,
        RUSSH_FLOOR.2
    );
    let ssh_key = versions_of(&pkgs, "ssh-key");
    assert!(ssh_key.len() <= 1, "two ssh-key versions in Cargo.lock: {ssh_key:?}");
}

#[test]
fn supply_chain_every_locked_package_comes_from_crates_io() {
    let foreign: Vec<String> = lock()
        .into_iter()
        .filter_map(|p| p.source.filter(|s| s != CRATES_IO).map(|s| format!("{} {} from {s}", p.name, p.version)))
        .collect();
    assert!(foreign.is_empty(), "packages not from crates.io (git or another registry): {foreign:?}");
}

#[test]
fn supply_chain_version_comparison() {
    assert!(at_least("0.65.1", RUSSH_FLOOR));
    assert!(at_least("0.63.1", RUSSH_FLOOR));
    assert!(at_least("1.0.0", RUSSH_FLOOR));
    assert!(!at_least("0.63.0", RUSSH_FLOOR));
    assert!(!at_least("0.63.1-beta.1", RUSSH_FLOOR));
    assert!(at_least("0.63.2-beta.1", RUSSH_FLOOR));
    assert!(!at_least("0.9.99", RUSSH_FLOOR));
    let pkgs = packages(
        "version = 4\n\n[[package]]\nname = \"a\"\nversion = \"1.2.3\"\n\n[[package]]\nname = \"b\"\nversion = \"0.1.0\"\nsource = \"x\"\n\n[metadata]\n",
    );
    assert_eq!(pkgs.len(), 2);
    assert_eq!((pkgs[1].name.as_str(), pkgs[1].version.as_str(), pkgs[1].source.as_deref()), ("b", "0.1.0", Some("x")));
}
