//! Just enough HTTP/1.1 for the board page: one request per connection (`Connection:
//! close`), read with a deadline and size caps, so a stuck or greedy client costs one
//! thread for a few seconds and a bounded amount of memory. No keep-alive, no chunked
//! bodies, no pipelining: the page's own script is the only client that gets past the token.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The request line and headers together.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A request body (a move or an answer: an answer is at most 8000 bytes, JSON-escaped).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a client may take to send its whole request.
pub const READ_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The query's `key=value` pairs, percent-decoded.
    pub query: Vec<(String, String)>,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra headers (the page's Content-Security-Policy).
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json; charset=utf-8",
            body: serde_json::to_vec(value).unwrap_or_default(),
            headers: Vec::new(),
        }
    }
    /// `{"error": code, "message": text}`: the page shows the message as it is.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": code, "message": message }))
    }
}

/// Why a request was not read; each maps to the status the client gets.
#[derive(Debug)]
pub enum ReadError {
    /// Malformed, or the connection ended early: 400.
    Bad(String),
    /// Over a size cap: 413 (body) or 431 (head).
    TooLarge(u16),
}

/// A stream whose every read ends by one deadline, so a client trickling a byte at a time
/// cannot hold its thread longer than [`READ_DEADLINE`] in all.
struct Deadline<'a> {
    stream: &'a TcpStream,
    end: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the request took too long"));
        }
        let mut stream = self.stream;
        stream.set_read_timeout(Some(left))?;
        stream.read(buf)
    }
}

/// Reads one request within [`READ_DEADLINE`] and the size caps.
pub fn read_request(stream: &TcpStream) -> Result<Request, ReadError> {
    read_request_within(stream, READ_DEADLINE)
}

fn read_request_within(stream: &TcpStream, limit: Duration) -> Result<Request, ReadError> {
    let timed = Deadline { stream, end: Instant::now() + limit };
    let mut reader = BufReader::new(timed.take((MAX_HEAD_BYTES + MAX_BODY_BYTES + 1) as u64));
    let mut head_bytes = 0;
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = (&mut reader)
            .take((MAX_HEAD_BYTES - head_bytes + 1) as u64)
            .read_until(b'\n', &mut line)
            .map_err(|e| ReadError::Bad(format!("reading the request: {e}")))?;
        head_bytes += n;
        if head_bytes > MAX_HEAD_BYTES {
            return Err(ReadError::TooLarge(431));
        }
        if n == 0 || !line.ends_with(b"\n") {
            return Err(ReadError::Bad("the connection ended inside the request head".into()));
        }
        let line = String::from_utf8(line).map_err(|_| ReadError::Bad("the request head is not UTF-8".into()))?;
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    let mut first = lines.first().ok_or_else(|| ReadError::Bad("no request line".into()))?.split(' ');
    let (Some(method), Some(target), Some(version)) = (first.next(), first.next(), first.next()) else {
        return Err(ReadError::Bad("a request line is METHOD TARGET VERSION".into()));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Bad(format!("unsupported version {version}")));
    }
    let mut headers = Vec::new();
    for line in &lines[1..] {
        let (name, value) = line.split_once(':').ok_or_else(|| ReadError::Bad("a header without ':'".into()))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    if headers.iter().any(|(k, _)| k == "transfer-encoding") {
        return Err(ReadError::Bad("chunked bodies are not accepted: send Content-Length".into()));
    }
    let length = match headers.iter().find(|(k, _)| k == "content-length") {
        Some((_, v)) => v.parse::<usize>().map_err(|_| ReadError::Bad("a bad Content-Length".into()))?,
        None => 0,
    };
    if length > MAX_BODY_BYTES {
        return Err(ReadError::TooLarge(413));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).map_err(|e| ReadError::Bad(format!("reading the body: {e}")))?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Ok(Request { method: method.to_string(), path: percent_decode(path), query, headers, body })
}

/// `%XX` and `+` decoded; anything malformed is kept as it is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn write_response(mut stream: &TcpStream, r: &Response) {
    let reason = match r.status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n\
         X-Frame-Options: DENY\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.set_write_timeout(Some(READ_DEADLINE));
    let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&r.body));
    let _ = stream.flush();
}

/// Closing a socket with unread input makes the kernel reset the connection, which can
/// throw away the response before the client reads it (a 413 for a body never read, say).
/// So: end our side, then read and drop what the client still sends, for a short while.
pub fn linger(mut stream: &TcpStream) {
    const MAX_DRAIN: usize = 1 << 20;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 8192];
    let mut drained = 0;
    while drained < MAX_DRAIN {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that sends a byte every 100 ms never finishes its request line: it is cut
    /// off at the deadline, not kept for as long as it keeps trickling.
    #[test]
    fn a_trickling_client_is_cut_off_at_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            for b in
                b"GET /?token=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1".iter().cycle().take(100)
            {
                if c.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let (server, _) = listener.accept().unwrap();
        let started = Instant::now();
        let read = read_request_within(&server, Duration::from_secs(1));
        assert!(matches!(read, Err(ReadError::Bad(_))), "{read:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "held for {:?}", started.elapsed());
        drop(server);
        client.join().unwrap();
    }

    #[test]
    fn heads_and_bodies_over_the_caps_are_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        for (request, status) in [
            (format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD_BYTES)), 431),
            (format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY_BYTES + 1), 413),
        ] {
            let client = std::thread::spawn(move || {
                let mut c = TcpStream::connect(addr).unwrap();
                let _ = c.write_all(request.as_bytes());
                c
            });
            let (server, _) = listener.accept().unwrap();
            let read = read_request_within(&server, Duration::from_secs(5));
            assert!(matches!(read, Err(ReadError::TooLarge(s)) if s == status), "{read:?}");
            drop(client.join().unwrap());
        }
    }

    #[test]
    fn percent_decoding_keeps_what_is_malformed() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
