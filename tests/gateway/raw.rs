//! Raw HTTP/1 over a loopback socket, for framing that a client library will not produce and
//! for upstreams that misbehave on purpose. Every read is bounded by a timeout.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for the gateway to answer and close. A gateway that keeps the
/// connection open is reported as `closed: false` after this.
pub const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// What came back on one connection.
#[derive(Debug)]
pub struct RawAnswer {
    pub bytes: Vec<u8>,
    /// The gateway closed (or reset) the connection within [`CLOSE_WAIT`].
    pub closed: bool,
}

impl RawAnswer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The status of each response on the connection, in order (a response follows the
    /// previous body directly, so any `HTTP/1.x NNN ` counts; test bodies never contain one).
    pub fn statuses(&self) -> Vec<u16> {
        let text = self.text();
        text.match_indices("HTTP/1.")
            .filter(|(i, _)| text.as_bytes().get(i + 12) == Some(&b' '))
            .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
            .collect()
    }

    /// The first response's status.
    pub fn status(&self) -> Option<u16> {
        self.statuses().first().copied()
    }

    /// The first response's header block (lowercased), without the status line.
    pub fn head(&self) -> String {
        let text = self.text();
        let end = text.find("\r\n\r\n").unwrap_or(text.len());
        let start = text.find("\r\n").map_or(end, |i| (i + 2).min(end));
        text[start..end].to_ascii_lowercase()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head().lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            (n.trim() == name).then(|| v.trim().to_string())
        })
    }

    /// The first response's body, de-chunked when it is chunked.
    pub fn body(&self) -> Vec<u8> {
        let Some(start) = find(&self.bytes, b"\r\n\r\n") else {
            return Vec::new();
        };
        let rest = &self.bytes[start + 4..];
        if self.header("transfer-encoding").as_deref() == Some("chunked") {
            return dechunk(rest).unwrap_or_default();
        }
        match self
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            Some(len) => rest[..len.min(rest.len())].to_vec(),
            None => rest.to_vec(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Asserts a 400 with the documented envelope, then that the connection was closed.
    pub fn assert_envelope_and_closed(&self, status: u16, error: &str) {
        assert_eq!(self.status(), Some(status), "{}", self.text());
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/json"),
            "{}",
            self.text()
        );
        let json = self.json();
        assert_eq!(json["statusCode"], status, "{json}");
        assert_eq!(json["error"], error, "{json}");
        assert!(json["message"].is_string(), "{json}");
        assert!(self.header("x-request-id").is_some(), "{}", self.text());
        assert!(self.closed, "connection left open: {}", self.text());
        assert_eq!(self.statuses().len(), 1, "{}", self.text());
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a complete chunked body; `None` when it is cut short or malformed.
pub fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// Writes `raw` on a new connection, then reads until the peer closes or [`CLOSE_WAIT`]
/// passes.
pub async fn exchange(addr: SocketAddr, raw: &[u8]) -> RawAnswer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The gateway may answer and close before it has read everything.
    let _ = stream.write_all(raw).await;
    read_answer(&mut stream, CLOSE_WAIT).await
}

/// Reads until close, reset or `wait`.
pub async fn read_answer(stream: &mut TcpStream, wait: Duration) -> RawAnswer {
    let mut bytes = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => {
                return RawAnswer {
                    bytes,
                    closed: false,
                }
            }
            Ok(Ok(0)) => {
                return RawAnswer {
                    bytes,
                    closed: true,
                }
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => {
                return RawAnswer {
                    bytes,
                    closed: true,
                }
            }
        }
    }
}
