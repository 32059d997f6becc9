//! [`FaultProxy`]: a TCP relay on 127.0.0.1 between a client and one upstream
//! (normally a [`FakeHost`](crate::FakeHost)'s sshd) whose behaviour can be
//! switched at run time with [`FaultProxy::set`]. A new mode applies to new
//! connections and to the ones already open.
//!
//! Plain std threads: one accept thread, and per connection one supervisor
//! thread that owns the two sockets plus one pump thread per direction. Every
//! socket read and write has a short timeout, so each thread notices a mode
//! change (or the proxy being dropped) within about 10 ms.
//!
//! ```no_run
//! use std::time::Duration;
//! use delegate_testkit::{FakeHost, Fault, FaultProxy};
//!
//! let host = FakeHost::start();
//! let proxy = FaultProxy::start(([127, 0, 0, 1], host.port()).into());
//! // ... point the client at proxy.port() ...
//! proxy.set(Fault::Stall);
//! proxy.set(Fault::Delay(Duration::from_millis(20)));
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How often blocked threads look at the mode and the stop flag.
const POLL: Duration = Duration::from_millis(10);
/// How long the proxy waits for the upstream TCP connect.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the proxy does with the bytes of every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Relay everything as it comes.
    Pass,
    /// Hold each chunk this long before writing it on, in each direction
    /// (order kept: one thread per direction).
    Delay(Duration),
    /// A silent blackhole: keep the sockets open, forward nothing, send
    /// nothing. New connections are accepted (and connected upstream, so a
    /// later `Pass` resumes them); bytes read before the switch are held
    /// until the mode changes.
    Stall,
    /// Close every connection with FIN on both sides, now; new connections
    /// are closed as soon as they are accepted.
    Close,
    /// Close every connection with RST (`SO_LINGER 0`) on both sides, now;
    /// new connections are reset as soon as they are accepted.
    Reset,
    /// Forward at most this many bytes server→client over a connection's
    /// whole life (client→server passes freely), then reset both sides. A
    /// connection already past the count is reset at once.
    CutAfter { server_to_client: usize },
    /// New connections are accepted and held, never connected upstream, and
    /// never sent a byte (a port that is open but has no SSH server behind
    /// it). Existing connections are treated as [`Fault::Stall`].
    NoBanner,
    /// Like [`Fault::NoBanner`], but each new connection is sent `lines` junk lines (never an
    /// `SSH-` version line), one every `gap` (all at once for a zero gap), then nothing more
    /// (F6). RFC 4253 lets a server send other lines before its version line, so a client has
    /// to bound how many it reads. The bytes sent count as server→client.
    BannerFlood { lines: usize, gap: Duration },
}

struct Shared {
    upstream: SocketAddr,
    mode: Mutex<Fault>,
    stop: AtomicBool,
    accepted: AtomicUsize,
    server_to_client: AtomicU64,
    client_to_server: AtomicU64,
}

impl Shared {
    fn mode(&self) -> Fault {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// A TCP relay with faults switchable at run time. Dropping it closes every
/// connection and stops every thread it started.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("port", &self.port)
            .field("upstream", &self.shared.upstream)
            .field("mode", &self.shared.mode())
            .field("connections", &self.connections())
            .finish()
    }
}

impl FaultProxy {
    /// Listen on `127.0.0.1:0` and relay to `upstream`, starting in [`Fault::Pass`].
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .unwrap_or_else(|e| panic!("delegate-testkit: proxy cannot bind 127.0.0.1:0: {e}"));
        listener.set_nonblocking(true).expect("delegate-testkit: proxy listener nonblocking");
        let port = listener.local_addr().expect("delegate-testkit: proxy local addr").port();
        let shared = Arc::new(Shared {
            upstream,
            mode: Mutex::new(Fault::Pass),
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            server_to_client: AtomicU64::new(0),
            client_to_server: AtomicU64::new(0),
        });
        let s = shared.clone();
        let acceptor = thread::Builder::new()
            .name(format!("dlgtk-proxy-{port}"))
            .spawn(move || accept_loop(listener, s))
            .expect("delegate-testkit: spawn proxy thread");
        FaultProxy { port, shared, acceptor: Some(acceptor) }
    }

    /// Switch the mode; it applies to new and open connections.
    pub fn set(&self, fault: Fault) {
        *self.shared.mode.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// The current mode.
    pub fn mode(&self) -> Fault {
        self.shared.mode()
    }

    /// The port the proxy listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// How many client connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Bytes forwarded server→client so far, over all connections.
    pub fn bytes_server_to_client(&self) -> u64 {
        self.shared.server_to_client.load(Ordering::SeqCst)
    }

    /// Bytes forwarded client→server so far, over all connections.
    pub fn bytes_client_to_server(&self) -> u64 {
        self.shared.client_to_server.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let stop = shared.clone();
    crate::accept::accept_until(
        listener,
        move || stop.stopping(),
        "dlgtk-proxy-conn",
        move |client| {
            shared.accepted.fetch_add(1, Ordering::SeqCst);
            connection(client, shared.clone())
        },
    );
}

/// RST instead of FIN when the last descriptor of `s` is closed.
fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a descriptor we own, with a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast::<libc::c_void>(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// How a connection ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Open,
    Fin,
    Rst,
}

/// Per-connection state shared by the supervisor and its two pumps.
struct Conn {
    shared: Arc<Shared>,
    /// How it ends (the first decision wins).
    end: Mutex<End>,
    done: AtomicBool,
    server_to_client: AtomicUsize,
}

impl Conn {
    fn finish(&self, how: End) {
        let mut end = self.end.lock().unwrap_or_else(|e| e.into_inner());
        if *end == End::Open {
            *end = how;
        }
        self.done.store(true, Ordering::SeqCst);
    }
    fn is_done(&self) -> bool {
        self.done.load(Ordering::SeqCst) || self.shared.stopping()
    }
    fn end(&self) -> End {
        *self.end.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Looks at the mode for connection-wide actions (Close, Reset, an exceeded
    /// CutAfter); true when the connection is over.
    fn check(&self) -> bool {
        match self.shared.mode() {
            Fault::Close => self.finish(End::Fin),
            Fault::Reset => self.finish(End::Rst),
            // Exactly at the count is fine until more bytes would have to pass (the pump
            // resets then); already past it (the mode was set after the fact): now.
            Fault::CutAfter { server_to_client } if self.server_to_client.load(Ordering::SeqCst) > server_to_client => {
                self.finish(End::Rst)
            }
            _ => {}
        }
        self.is_done()
    }
}

fn connection(client: TcpStream, shared: Arc<Shared>) {
    let conn = Arc::new(Conn {
        shared: shared.clone(),
        end: Mutex::new(End::Open),
        done: AtomicBool::new(false),
        server_to_client: AtomicUsize::new(0),
    });
    let _ = client.set_nodelay(true);
    let flood = match shared.mode() {
        Fault::BannerFlood { lines, gap } => Some((lines, gap)),
        _ => None,
    };
    let upstream = match shared.mode() {
        Fault::NoBanner | Fault::BannerFlood { .. } => None,
        Fault::Close => {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        Fault::Reset => {
            set_linger_zero(&client);
            return;
        }
        _ => match TcpStream::connect_timeout(&shared.upstream, UPSTREAM_CONNECT_TIMEOUT) {
            Ok(s) => Some(s),
            Err(_) => {
                set_linger_zero(&client);
                return;
            }
        },
    };
    let Some(server) = upstream else {
        // NoBanner: hold the client, read and drop what it sends, answer nothing.
        // BannerFlood: the same, after (or while) sending the junk lines.
        let _ = client.set_read_timeout(Some(POLL));
        let _ = client.set_write_timeout(Some(POLL));
        let mut buf = [0u8; 4096];
        let started = std::time::Instant::now();
        let mut sent_lines = 0usize;
        while !conn.check() {
            if let Some((lines, gap)) = flood {
                let due = if gap.is_zero() {
                    lines
                } else {
                    lines.min((started.elapsed().as_nanos() / gap.as_nanos()) as usize + 1)
                };
                let mut text = Vec::new();
                for n in sent_lines..due {
                    text.extend_from_slice(
                        format!("junk line {n} from dlgtk-proxy, not a version line\r\n").as_bytes(),
                    );
                }
                if !text.is_empty() {
                    if !write_all(&client, &text, &conn) {
                        break;
                    }
                    sent_lines = due;
                    shared.server_to_client.fetch_add(text.len() as u64, Ordering::SeqCst);
                }
            }
            match (&client).read(&mut buf) {
                Ok(0) => {
                    conn.finish(End::Fin);
                    break;
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(_) => {
                    conn.finish(End::Fin);
                    break;
                }
            }
        }
        close(&[&client], conn.end());
        return;
    };
    let _ = server.set_nodelay(true);
    for s in [&client, &server] {
        let _ = s.set_read_timeout(Some(POLL));
        let _ = s.set_write_timeout(Some(POLL));
    }
    let client = Arc::new(client);
    let server = Arc::new(server);
    let up = {
        let (c, s, k) = (client.clone(), server.clone(), conn.clone());
        thread::spawn(move || pump(&c, &s, &k, false))
    };
    let down = {
        let (c, s, k) = (client.clone(), server.clone(), conn.clone());
        thread::spawn(move || pump(&s, &c, &k, true))
    };
    let _ = up.join();
    let _ = down.join();
    close(&[&client, &server], conn.end());
}

fn close(sockets: &[&TcpStream], end: End) {
    for s in sockets {
        match end {
            End::Rst => set_linger_zero(s),
            // Open (proxy dropped, or a peer went away) or Fin: a clean FIN.
            End::Open | End::Fin => {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Copies `from` → `to` under the current mode until the connection ends.
fn pump(from: &TcpStream, to: &TcpStream, conn: &Conn, server_to_client: bool) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if conn.check() {
            return;
        }
        // Stall and NoBanner: read nothing, so the sender's buffers fill as on a dead link.
        if matches!(conn.shared.mode(), Fault::Stall | Fault::NoBanner | Fault::BannerFlood { .. }) {
            thread::sleep(POLL);
            continue;
        }
        let n = match (&*from).read(&mut buf) {
            Ok(0) => {
                // Half-close: pass the FIN on, keep the other direction going.
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // A reset from one peer is passed on as a reset to the other.
                let how = if e.kind() == io::ErrorKind::ConnectionReset { End::Rst } else { End::Fin };
                conn.finish(how);
                return;
            }
        };
        let mut chunk = &buf[..n];
        // Wait out a stall with the chunk in hand; then apply the mode it ends in.
        let delay = loop {
            if conn.check() {
                return;
            }
            match conn.shared.mode() {
                Fault::Stall | Fault::NoBanner | Fault::BannerFlood { .. } => thread::sleep(POLL),
                Fault::Delay(d) => break Some(d),
                Fault::CutAfter { server_to_client: limit } if server_to_client => {
                    let sent = conn.server_to_client.load(Ordering::SeqCst);
                    let room = limit.saturating_sub(sent);
                    if room < chunk.len() {
                        chunk = &chunk[..room];
                        if !write_all(to, chunk, conn) {
                            return;
                        }
                        conn.server_to_client.fetch_add(room, Ordering::SeqCst);
                        conn.shared.server_to_client.fetch_add(room as u64, Ordering::SeqCst);
                        conn.finish(End::Rst);
                        return;
                    }
                    break None;
                }
                _ => break None,
            }
        };
        if let Some(d) = delay {
            sleep_unless_done(d, conn);
        }
        if !write_all(to, chunk, conn) {
            return;
        }
        let counter = if server_to_client {
            conn.server_to_client.fetch_add(chunk.len(), Ordering::SeqCst);
            &conn.shared.server_to_client
        } else {
            &conn.shared.client_to_server
        };
        counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
    }
}

fn sleep_unless_done(d: Duration, conn: &Conn) {
    let deadline = std::time::Instant::now() + d;
    while !conn.is_done() {
        let now = std::time::Instant::now();
        if now >= deadline {
            return;
        }
        thread::sleep((deadline - now).min(POLL));
    }
}

/// Writes all of `data`, giving up when the connection ends; false if it did.
fn write_all(to: &TcpStream, mut data: &[u8], conn: &Conn) -> bool {
    while !data.is_empty() {
        if conn.is_done() {
            return false;
        }
        match (&*to).write(data) {
            Ok(0) => {
                conn.finish(End::Fin);
                return false;
            }
            Ok(n) => data = &data[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => {
                conn.finish(End::Rst);
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server on 127.0.0.1:0 that prefixes nothing; returns its address.
    fn echo_server() -> SocketAddr {
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                thread::spawn(move || {
                    let mut s = s;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn client(p: &FaultProxy) -> TcpStream {
        let s = TcpStream::connect(p.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        s
    }

    fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
        s.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn passes_delays_stalls_and_resumes() {
        let p = FaultProxy::start(echo_server());
        let mut c = client(&p);
        assert_eq!(roundtrip(&mut c, b"hello").unwrap(), b"hello");
        p.set(Fault::Delay(Duration::from_millis(100)));
        let t = Instant::now();
        assert_eq!(roundtrip(&mut c, b"slow").unwrap(), b"slow");
        assert!(t.elapsed() >= Duration::from_millis(200), "{:?}", t.elapsed());
        p.set(Fault::Stall);
        thread::sleep(Duration::from_millis(50));
        assert!(roundtrip(&mut c, b"lost?").is_err(), "stall forwarded");
        p.set(Fault::Pass);
        let mut got = vec![0u8; 5];
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.read_exact(&mut got).unwrap();
        assert_eq!(got, b"lost?");
        assert_eq!(p.connections(), 1);
    }

    #[test]
    fn close_is_eof_and_reset_is_rst() {
        let p = FaultProxy::start(echo_server());
        let mut c = client(&p);
        assert_eq!(roundtrip(&mut c, b"x").unwrap(), b"x");
        p.set(Fault::Close);
        let mut b = [0u8; 1];
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(c.read(&mut b).unwrap(), 0);

        p.set(Fault::Pass);
        let mut c = client(&p);
        assert_eq!(roundtrip(&mut c, b"y").unwrap(), b"y");
        p.set(Fault::Reset);
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let e = c.read(&mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    }

    #[test]
    fn cut_after_forwards_exactly_n_bytes_then_resets() {
        let p = FaultProxy::start(echo_server());
        p.set(Fault::CutAfter { server_to_client: 3 });
        let mut c = client(&p);
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.write_all(b"abcdef").unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 16];
        let err = loop {
            match c.read(&mut b) {
                Ok(0) => panic!("FIN instead of RST after {got:?}"),
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(got, b"abc");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    }

    #[test]
    fn banner_flood_sends_junk_lines_and_never_a_version_line() {
        let p = FaultProxy::start(echo_server());
        p.set(Fault::BannerFlood { lines: 5, gap: Duration::from_millis(20) });
        let mut c = client(&p);
        c.write_all(b"SSH-2.0-x\r\n").unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 256];
        let e = loop {
            match c.read(&mut b) {
                Ok(0) => panic!("closed after {got:?}"),
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(e) => break e,
            }
        };
        assert!(matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut), "{e}");
        let text = String::from_utf8(got).unwrap();
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.split_inclusive('\n').all(|l| l.starts_with("junk line ") && l.ends_with("\r\n")), "{text}");
        assert!(!text.contains("SSH-"), "a version line was sent: {text}");
        assert_eq!(p.bytes_server_to_client(), text.len() as u64);
        drop(p); // must not hang
    }

    #[test]
    fn no_banner_accepts_and_says_nothing() {
        let p = FaultProxy::start(echo_server());
        p.set(Fault::NoBanner);
        let mut c = client(&p);
        c.write_all(b"SSH-2.0-x\r\n").unwrap();
        let mut b = [0u8; 1];
        let e = c.read(&mut b).unwrap_err();
        assert!(matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut), "{e}");
        assert_eq!(p.connections(), 1);
        drop(p); // must not hang
    }
}
