//! The library reads no environment and prints nothing: the caller passes every path in
//! (`Paths`) and decides what reaches the terminal. This scans the library's sources (test
//! modules excluded) for the calls that would break that.

use std::path::{Path, PathBuf};

/// Calls the library must not make outside its tests.
const FORBIDDEN: &[&str] = &[
    "std::env::var",
    "env::var(",
    "env::var_os(",
    "env::vars(",
    "std::env::home_dir",
    // The `e` forms first: `println!` is inside `eprintln!`, and lines are named once.
    "eprintln!",
    "eprint!(",
    "println!",
    "print!(",
    "dbg!(",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `file:line: text` for each forbidden call in `text`, up to its first `#[cfg(test)]` line
/// (test modules sit at the end of a file here). Comment lines are skipped.
fn violations(file: &Path, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break;
        }
        if code.starts_with("//") {
            continue;
        }
        for pat in FORBIDDEN {
            // Each line once, with the first pattern that hits.
            if code.contains(pat) {
                found.push(format!("{}:{}: {pat}: {}", file.display(), n + 1, code));
                break;
            }
        }
    }
    found
}

#[test]
fn the_library_reads_no_environment_and_prints_nothing() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.iter().any(|f| f.ends_with("lib.rs")), "no sources found under {}", src.display());
    let mut found = Vec::new();
    for file in &files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let in_tests_dir = file.parent().and_then(|d| d.file_name()).is_some_and(|d| d == "tests");
        if name.starts_with("tests") || in_tests_dir {
            continue; // tests.rs, tests_*.rs, tests/*.rs: test modules in their own files
        }
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        found.extend(violations(file.strip_prefix(&src).unwrap_or(file), &text));
    }
    assert!(found.is_empty(), "the library must not read the environment or print:\n{}", found.join("\n"));
}

#[test]
fn the_no_env_scan_finds_what_it_should() {
    let text = "fn f() {\n    let h = std::env::var(\"HOME\");\n    eprintln!(\"x\");\n}\n// println! in a comment\n\
                #[cfg(test)]\nmod tests { fn g() { println!(\"fine in tests\"); } }\n";
    let found = violations(Path::new("x.rs"), text);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("x.rs:2: std::env::var"), "{found:?}");
    assert!(found[1].starts_with("x.rs:3: eprintln!"), "{found:?}");
}
