//! A userspace delay proxy: the kernel here has no `netem`, so RTT comes from a relay on
//! 127.0.0.1 that holds every chunk for `one_way` in each direction.
//!
//! Unlike the testkit's `FaultProxy` (a fault injector that sleeps per chunk in the pump
//! thread, so back-to-back chunks queue behind each other's delay and a 55 KB launch script
//! pays the delay once per 16 KB chunk), this one timestamps each chunk when it arrives and
//! releases it at arrival + `one_way`: a pipe with latency, not a pipe with per-read stalls.
//! The upstream connect is delayed by one RTT to stand in for the TCP handshake. It runs on
//! its own tokio runtime (pinned to the "server" CPU by the caller); tokio's 1 ms timer
//! adds up to ~1 ms of slack per hop.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub struct DelayProxy {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DelayProxy {
    /// Listens on 127.0.0.1:0 (on `rt`) and relays to `upstream` with `rtt / 2` each way.
    pub fn start(rt: &tokio::runtime::Runtime, upstream: SocketAddr, rtt: Duration) -> std::io::Result<DelayProxy> {
        let listener = rt.block_on(TcpListener::bind(("127.0.0.1", 0)))?;
        let port = listener.local_addr()?.port();
        let one_way = rtt / 2;
        let task = rt.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    let _ = client.set_nodelay(true);
                    tokio::time::sleep(one_way * 2).await;
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = tokio::spawn(relay(cr, sw, one_way));
                    let down = tokio::spawn(relay(sr, cw, one_way));
                    let _ = tokio::join!(up, down);
                });
            }
        });
        Ok(DelayProxy { port, task })
    }
}

/// Reads chunks as they come, and writes each one `one_way` after it arrived, in order.
async fn relay(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, one_way: Duration) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at + one_way).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
