//! The accept loop the test kit's servers share (the fault proxy, the model stand-in): a
//! non-blocking listener polled until `stopped`, one thread per connection, every
//! connection thread joined before returning so Drop leaves nothing running.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Accepts on `listener` (already non-blocking) until `stopped()` says so; each connection,
/// back in blocking mode, is handed to `serve` on a thread named `name`.
pub(crate) fn accept_until(
    listener: TcpListener,
    stopped: impl Fn() -> bool,
    name: &str,
    serve: impl Fn(TcpStream) + Clone + Send + 'static,
) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !stopped() {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let serve = serve.clone();
                if let Ok(t) = thread::Builder::new().name(name.into()).spawn(move || serve(stream)) {
                    conns.push(t);
                }
                conns.retain(|t| !t.is_finished());
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
    for t in conns {
        let _ = t.join();
    }
}
