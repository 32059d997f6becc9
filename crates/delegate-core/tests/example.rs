//! The `embed` example, built and run against a real sshd with the self-test agent: the
//! library embedded the way a Rust tool would use it, end to end.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use delegate_testkit::FakeHost;

/// The example binary, from the cargo that built this test. `cargo test` and `cargo nextest
/// run` build examples with the tests (next to them, in `target/<profile>/examples/`), but
/// `cargo test --test example` does not, and would leave an old binary there: so ask cargo
/// every time (a no-op when it is fresh) and take the path it reports.
fn embed_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build_embed).clone()
}

fn build_embed() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args(["build", "--example", "embed", "--message-format", "json", "--manifest-path"])
        .arg(&manifest)
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build --example embed");
    assert!(out.status.success(), "cargo build --example embed failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "embed")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no executable for the embed example")
}

/// A private client side: its own home, inventory, known_hosts and data dir.
struct Client {
    dir: PathBuf,
}

impl Client {
    fn new(host: &FakeHost) -> Client {
        let dir = std::env::temp_dir().join(format!("dlg-example-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("home/.ssh")).unwrap();
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, format!("{}\n", host.known_hosts_line())).unwrap();
        let mut toml = String::new();
        writeln!(toml, "[hosts.h]").unwrap();
        writeln!(toml, "address = \"{}\"", host.address()).unwrap();
        writeln!(toml, "port = {}", host.port()).unwrap();
        writeln!(toml, "user = \"{}\"", host.user()).unwrap();
        writeln!(toml, "identity = \"{}\"", host.client_key().display()).unwrap();
        writeln!(toml, "known_hosts = \"{}\"", known_hosts.display()).unwrap();
        writeln!(toml, "remote_root = \"{}\"", host.remote_root().display()).unwrap();
        writeln!(toml, "connect_timeout = 5").unwrap();
        writeln!(toml, "\n[brothers.oppy]").unwrap();
        writeln!(toml, "host = \"h\"").unwrap();
        writeln!(toml, "workdir = \"{}\"", host.workdir().display()).unwrap();
        writeln!(toml, "agent = \"self-test\"").unwrap();
        writeln!(toml, "max_turns = 7").unwrap();
        writeln!(toml, "sandbox = \"read\"").unwrap();
        std::fs::write(dir.join("config.toml"), toml).unwrap();
        Client { dir }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("client dir kept for inspection: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs the example with an empty environment (the library must not need one), killing it
/// after `limit`: a hang is a failure, never a slow pass.
fn run_embed(args: &[&std::ffi::OsStr], limit: Duration) -> Output {
    let mut child = Command::new(embed_binary())
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the embed example");
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "embed did not finish within {limit:?}\n--- stdout\n{}\n--- stderr\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn the_embed_example_launches_waits_and_prints_the_thread() {
    let host = FakeHost::start();
    let client = Client::new(&host);
    let data = client.dir.join("data");
    let os = |p: &Path| p.as_os_str().to_owned();
    let (config, home) = (os(&client.dir.join("config.toml")), os(&client.dir.join("home")));
    let data_arg = os(&data);
    let args: Vec<&std::ffi::OsStr> = vec![
        "--config".as_ref(),
        &config,
        "--data".as_ref(),
        &data_arg,
        "--home".as_ref(),
        &home,
        "--user".as_ref(),
        "tester".as_ref(),
        "--timeout".as_ref(),
        "60".as_ref(),
        "oppy".as_ref(),
        "review the training config".as_ref(),
    ];
    let out = run_embed(&args, Duration::from_secs(100));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let shown = format!("status: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}", out.status);
    println!("{shown}");
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(stdout.contains("task 1 launched on oppy (host h), session dlg-"), "{shown}");
    assert!(stdout.contains("task 1: completed (outcome completed)"), "{shown}");
    // The thread: the prompt by its author, then what the self-test agent reported.
    assert!(stdout.contains("prompt by tester: review the training config"), "{shown}");
    assert!(stdout.contains("reported: oppy (done): self-test completed"), "{shown}");
    assert!(data.join("mailbox.db").is_file(), "no mailbox in {}\n{shown}", data.display());
}

#[test]
fn the_embed_example_explains_bad_usage() {
    let out = run_embed(&["--config".as_ref(), "x.toml".as_ref(), "oppy".as_ref()], Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("expected <brother> <prompt>") && stderr.contains("usage: embed"), "{stderr}");
}
