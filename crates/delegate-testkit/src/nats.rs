//! A real `nats-server` with JetStream for the NATS transport's tests: started on a free
//! loopback port with its own store directory and a config the test chooses (the default
//! has no authentication; [`NatsServerBuilder::config`] adds accounts, users and
//! permissions). It can be stopped and started again on the same port and store (a server
//! restart during a run), and is killed when dropped.
//!
//! The binary is Debian's `nats-server` package (scripts/test.sh installs it) or
//! `$DELEGATE_TEST_NATS_SERVER`.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nats-server binary the tests run.
pub fn nats_server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("DELEGATE_TEST_NATS_SERVER") {
        return PathBuf::from(p);
    }
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "nats-server is not installed: run scripts/test.sh (it installs Debian's nats-server) or set DELEGATE_TEST_NATS_SERVER"
    )
}

pub struct NatsServerBuilder {
    extra: String,
}

impl NatsServerBuilder {
    /// Lines added to the server's config file (accounts, authorization, limits such as
    /// `max_payload`). `jetstream` and `listen` are set by the kit.
    pub fn config(mut self, lines: &str) -> Self {
        self.extra.push_str(lines);
        self.extra.push('\n');
        self
    }

    pub fn start(self) -> NatsServer {
        let dir = scratch_dir();
        let port = crate::closed_port();
        let mut server = NatsServer { dir, port, extra: self.extra, child: None };
        server.start_again();
        server
    }
}

/// `/tmp/dlgnats-<pid>-<n>`, removed when the server is dropped.
fn scratch_dir() -> PathBuf {
    let pid = std::process::id();
    for n in 0..100_000u32 {
        let dir = PathBuf::from(format!("/tmp/dlgnats-{pid}-{n}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("delegate-testkit: cannot create {}: {e}", dir.display()),
        }
    }
    panic!("delegate-testkit: no free /tmp/dlgnats-{pid}-<n> directory name");
}

pub struct NatsServer {
    dir: PathBuf,
    port: u16,
    extra: String,
    child: Option<Child>,
}

impl NatsServer {
    /// No authentication, JetStream on.
    pub fn start() -> NatsServer {
        NatsServer::builder().start()
    }

    pub fn builder() -> NatsServerBuilder {
        NatsServerBuilder { extra: String::new() }
    }

    /// `nats://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A directory for the test's own files (creds, configs), removed with the server.
    pub fn dir(&self) -> &Path {
        self.dir.as_path()
    }

    /// The server's log (stderr and stdout).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.as_path().join("server.log")).unwrap_or_default()
    }

    /// Kills the server (SIGKILL: no goodbye to clients, as a crash or a lost link).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server (again) on the same port and JetStream store, and waits until it
    /// accepts clients.
    pub fn start_again(&mut self) {
        self.stop();
        let store = self.dir.as_path().join("store");
        let conf = self.dir.as_path().join("server.conf");
        let config = format!(
            "listen: \"127.0.0.1:{}\"\njetstream {{\n  store_dir: \"{}\"\n  max_mem_store: 64MiB\n  max_file_store: 1GiB\n}}\n{}",
            self.port,
            store.display(),
            self.extra
        );
        std::fs::write(&conf, config).expect("write nats config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.as_path().join("server.log"))
            .expect("nats log");
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The server greets every client with an INFO line once it is up.
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).is_ok() && &buf == b"INFO" {
                    return;
                }
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("nats-server exited ({status}) before accepting clients:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "nats-server did not accept clients within 20 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_restarts_on_its_port_and_stops() {
        let mut s = NatsServer::start();
        assert!(TcpStream::connect(("127.0.0.1", s.port())).is_ok());
        s.stop();
        assert!(TcpStream::connect(("127.0.0.1", s.port())).is_err(), "stopped means refused");
        s.start_again();
        assert!(s.log().contains("JetStream"), "JetStream is on: {}", s.log());
    }
}
