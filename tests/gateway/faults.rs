//! Upstream faults, each from a small hand-written server on 127.0.0.1:0 that misbehaves on
//! purpose: the client gets a 502 / 504 envelope, or a connection that ends without a
//! complete-looking response; never a wrong answer that looks whole. A POST is never sent
//! twice, and the gateway recovers as soon as the upstream does.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::raw::*;
use crate::support::*;

/// The gateway's upstream timeouts in these tests.
const RESPONSE_HEADERS_TIMEOUT: Duration = Duration::from_secs(1);

fn config(upstream: &str) -> String {
    backend_config(
        upstream,
        r#"  - { name: get, method: GET, path: /g, upstream: backend }
  - { name: post, method: POST, path: /p, upstream: backend }
"#,
    )
}

/// A misbehaving upstream: `serve` runs for every accepted connection, with the connection's
/// number (from 0) and the count of request heads read so far on any connection.
pub(crate) struct Rogue {
    addr: SocketAddr,
    heads: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
}

impl Rogue {
    async fn start<F, Fut>(serve: F) -> Rogue
    where
        F: Fn(TcpStream, usize, Arc<AtomicUsize>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Rogue::on(listener, serve)
    }

    fn on<F, Fut>(listener: TcpListener, serve: F) -> Rogue
    where
        F: Fn(TcpStream, usize, Arc<AtomicUsize>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (h, c) = (Arc::clone(&heads), Arc::clone(&connections));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, n, Arc::clone(&h)));
            }
        });
        Rogue {
            addr,
            heads,
            connections,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn heads(&self) -> usize {
        self.heads.load(Ordering::SeqCst)
    }
}

/// Reads one request (head, then a Content-Length body) within 5 s; counts the head.
/// Returns `None` when the peer closes or the time runs out first.
async fn read_request(stream: &mut TcpStream, heads: &AtomicUsize) -> Option<String> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let head_end = loop {
        if let Some(end) = find(&data, b"\r\n\r\n") {
            break end + 4;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => data.extend_from_slice(&buf[..n]),
            _ => return None,
        }
        assert!(data.len() < 64 * 1024, "request head too long");
    };
    heads.fetch_add(1, Ordering::SeqCst);
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while data.len() < head_end + length {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => data.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    Some(head)
}

/// An upstream that reads a request and answers `bytes`, then closes the connection
/// (with a reset when `reset`).
pub(crate) async fn answers(bytes: &'static [u8], reset: bool) -> Rogue {
    Rogue::start(move |mut stream, _, heads| async move {
        if read_request(&mut stream, &heads).await.is_some() {
            let _ = stream.write_all(bytes).await;
            let _ = stream.flush().await;
            if reset {
                let _ = stream.set_zero_linger();
            }
        }
    })
    .await
}

async fn get(gw: &TestGateway) -> RawAnswer {
    exchange(
        gw.addr,
        b"GET /g HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
}

const UNAVAILABLE: &str = r#"{"statusCode":502,"message":"upstream unavailable: upstream backend closed the connection or sent an invalid response","error":"Bad Gateway"}"#;

fn assert_body(answer: &RawAnswer, status: u16, body: &str) {
    assert_eq!(answer.statuses(), [status], "{}", answer.text());
    assert_eq!(
        answer.header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(answer.header("x-request-id").is_some());
    assert_eq!(String::from_utf8_lossy(&answer.body()), body);
}

#[tokio::test]
async fn refused_is_502() {
    let port = closed_port().await;
    let gw = TestGateway::start(&config(&format!("http://{port}")), &[]).await;
    assert_body(
        &get(&gw).await,
        502,
        r#"{"statusCode":502,"message":"upstream unavailable: could not connect to upstream backend","error":"Bad Gateway"}"#,
    );
}

#[tokio::test]
async fn closed_before_or_after_reading_the_request_is_502() {
    // Accepts, then closes without reading.
    let rogue = Rogue::start(|stream, _, _| async move { drop(stream) }).await;
    let gw = TestGateway::start(&config(&rogue.url()), &[]).await;
    assert_body(&get(&gw).await, 502, UNAVAILABLE);

    // Reads the request, then closes without a word; with a reset, too.
    for reset in [false, true] {
        let rogue = answers(b"", reset).await;
        let gw = TestGateway::start(&config(&rogue.url()), &[]).await;
        assert_body(&get(&gw).await, 502, UNAVAILABLE);
        assert_eq!(rogue.heads(), 1);
    }
}

#[tokio::test]
async fn malformed_responses_are_502() {
    for bytes in [
        &b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n"[..],
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    ] {
        let rogue = answers(bytes, false).await;
        let gw = TestGateway::start(&config(&rogue.url()), &[]).await;
        let answer = get(&gw).await;
        let shown = String::from_utf8_lossy(bytes);
        if answer.bytes.is_empty() {
            // The body broke before the first byte of the answer was written: the connection
            // is dropped without one.
            assert!(answer.closed, "{shown}");
        } else if answer.statuses() == [200] {
            // The head was valid and the body framing broke later: the status has gone out
            // already, so the connection must end without a complete body.
            assert!(answer.closed, "{shown}");
            assert!(
                dechunk(&answer.bytes[find(&answer.bytes, b"\r\n\r\n").unwrap() + 4..]).is_none(),
                "{shown}: {}",
                answer.text()
            );
        } else {
            assert_body(&answer, 502, UNAVAILABLE);
        }
    }
}

/// The upstream sent its head, then part of the body, then closed or reset. The client got
/// the status already; it must see the connection end before the declared length, or
/// without the final chunk: never a response that looks complete.
#[tokio::test]
async fn bodies_cut_short_abort_the_client_connection() {
    for (bytes, chunked) in [
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"[..],
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
            true,
        ),
    ] {
        for reset in [false, true] {
            let rogue = answers(bytes, reset).await;
            let gw = TestGateway::start(&config(&rogue.url()), &[]).await;
            let answer = get(&gw).await;
            let case = format!("chunked={chunked} reset={reset}");
            assert_eq!(answer.statuses(), [200], "{case}: {}", answer.text());
            assert!(answer.closed, "{case}: connection left open");
            let start = find(&answer.bytes, b"\r\n\r\n").unwrap() + 4;
            let rest = &answer.bytes[start..];
            if chunked {
                assert_eq!(
                    answer.header("transfer-encoding").as_deref(),
                    Some("chunked")
                );
                assert!(dechunk(rest).is_none(), "{case}: {}", answer.text());
            } else {
                assert_eq!(answer.header("content-length").as_deref(), Some("100"));
                assert!(rest.len() < 100, "{case}: {}", answer.text());
            }
        }
    }
}

/// A GET through `gw` gets the response-header 504, once the timeout (and not much more) has
/// passed.
async fn assert_504_after_the_timeout(gw: &TestGateway) {
    let started = Instant::now();
    let answer = get(gw).await;
    let took = started.elapsed();
    assert_body(
        &answer,
        504,
        r#"{"statusCode":504,"message":"upstream timed out (response headers)","error":"Gateway Timeout"}"#,
    );
    assert!(
        took >= RESPONSE_HEADERS_TIMEOUT && took < RESPONSE_HEADERS_TIMEOUT * 2,
        "{took:?}"
    );
}

#[tokio::test]
async fn hung_after_accept_is_504_within_the_timeout() {
    let hung = silent_upstream().await;
    let gw = TestGateway::start(&config(&format!("http://{hung}")), &[]).await;
    assert_504_after_the_timeout(&gw).await;

    // Reads the request and never answers: the same.
    let rogue = Rogue::start(|mut stream, _, heads| async move {
        let _ = read_request(&mut stream, &heads).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    let gw = TestGateway::start(&config(&rogue.url()), &[]).await;
    assert_eq!(get(&gw).await.statuses(), [504]);
}

/// The response-header deadline holds on a reused (pooled) connection too, also on one that
/// sat idle past the timeout before being reused (its timer came due in the pool).
#[tokio::test]
async fn a_pooled_connection_that_stops_answering_is_504_within_the_timeout() {
    // Answers two requests, the second after an idle spell, then never answers the third.
    let rogue = Rogue::start(|mut stream, _, heads| async move {
        for _ in 0..2 {
            if read_request(&mut stream, &heads).await.is_none() {
                return;
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        }
        let _ = read_request(&mut stream, &heads).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    let gw = TestGateway::start(&config(&rogue.url()), &[]).await;
    assert_eq!(get(&gw).await.statuses(), [200]);
    tokio::time::sleep(RESPONSE_HEADERS_TIMEOUT + Duration::from_millis(300)).await;
    assert_eq!(get(&gw).await.statuses(), [200]);

    assert_504_after_the_timeout(&gw).await;
    assert_eq!(rogue.heads(), 3);
    assert_eq!(
        rogue.connections.load(Ordering::SeqCst),
        1,
        "all three requests on one pooled connection"
    );
}

/// An upstream that switches protocols although the gateway never asks it to (it strips
/// `Upgrade`): a protocol violation, so a 502, and nothing it sends after is relayed.
#[tokio::test]
async fn an_unrequested_101_is_502_and_never_tunnelled() {
    let rogue = answers(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\ntunnelled-bytes",
        false,
    )
    .await;
    let gw = TestGateway::start(&config(&rogue.url()), &[]).await;
    let answer = exchange(
        gw.addr,
        b"GET /g HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .await;
    assert!(
        !answer.text().contains("tunnelled-bytes"),
        "{}",
        answer.text()
    );
    assert_eq!(answer.statuses(), [502], "{}", answer.text());
    assert_eq!(
        answer.json()["message"],
        "upstream unavailable: upstream backend switched protocols without being asked"
    );
}

/// An upstream that keeps no connection alive but does not say so (no `Connection: close`):
/// it answers one request per connection, then closes. Pooled connections it closed are
/// noticed before reuse (or the unsent request is retried on a new one), so requests spaced
/// as a client would send them all succeed.
#[tokio::test]
async fn pooled_connections_closed_by_the_upstream_are_not_reused() {
    let rogue = answers(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        false,
    )
    .await;
    let gw = TestGateway::start(&config(&rogue.url()), &[]).await;
    for i in 0..20 {
        let answer = get(&gw).await;
        assert_eq!(answer.statuses(), [200], "GET {i}: {}", answer.text());
        let answer = exchange(
            gw.addr,
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        .await;
        assert_eq!(answer.statuses(), [200], "POST {i}: {}", answer.text());
        // The upstream's close races the next request only if they meet within
        // microseconds; a client's pace leaves the pool time to see it.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // One connection and one arrival per request: nothing was sent twice.
    assert_eq!(rogue.heads(), 40);
    assert_eq!(rogue.connections.load(Ordering::SeqCst), 40);
}

/// The upstream reads a second request on a kept-alive connection, then closes without
/// answering it: the request was sent, so it is not retried. A 502, and the upstream has seen
/// the POST exactly once.
#[tokio::test]
async fn a_post_that_reached_the_upstream_is_never_sent_twice() {
    let rogue = Rogue::start(|mut stream, n, heads| async move {
        if n == 0 && read_request(&mut stream, &heads).await.is_some() {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                .await;
        }
        // Every other request (on this connection or a new one) is read, then dropped.
        let _ = read_request(&mut stream, &heads).await;
    })
    .await;
    let gw = TestGateway::start(&config(&rogue.url()), &[]).await;
    assert_eq!(get(&gw).await.statuses(), [200]);
    let answer = exchange(
        gw.addr,
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert_body(&answer, 502, UNAVAILABLE);
    // Give a retry, if one were coming, the time to arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rogue.heads(),
        2,
        "the POST reached the upstream more than once"
    );
    assert_eq!(rogue.connections.load(Ordering::SeqCst), 1);
}

/// Upstream down: 502. Upstream up again on the same port: the next request succeeds, with
/// no back-off or cached failure in between.
#[tokio::test]
async fn recovers_as_soon_as_the_upstream_is_back() {
    let port = closed_port().await;
    let gw = TestGateway::start(&config(&format!("http://{port}")), &[]).await;
    for _ in 0..3 {
        assert_eq!(get(&gw).await.statuses(), [502]);
    }
    let listener = TcpListener::bind(port).await.unwrap();
    let rogue = Rogue::on(listener, |mut stream, _, heads| async move {
        while read_request(&mut stream, &heads).await.is_some() {
            let ok =
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
            if stream.write_all(ok).await.is_err() {
                break;
            }
        }
    });
    let answer = get(&gw).await;
    assert_eq!(answer.statuses(), [200], "{}", answer.text());
    assert_eq!(rogue.heads(), 1);
}

/// Headers and ten bytes of a hundred, then silence with the connection held open.
async fn stalling_mid_body() -> Rogue {
    Rogue::start(|mut stream, _, heads| async move {
        if read_request(&mut stream, &heads).await.is_some() {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                .await;
            tokio::time::sleep(Duration::from_secs(8)).await;
        }
    })
    .await
}

/// The answer is cut off after a pause as long as the response-header timeout, not when the
/// upstream finally gives up: a short body is never relayed as if whole.
fn assert_cut_off_after_the_pause_limit(answer: &RawAnswer, took: Duration) {
    assert_eq!(answer.statuses(), [200], "{}", answer.text());
    assert!(answer.closed, "connection left open");
    let start = find(&answer.bytes, b"\r\n\r\n").unwrap() + 4;
    assert!(answer.bytes[start..].len() < 100, "{}", answer.text());
    assert!(
        took >= RESPONSE_HEADERS_TIMEOUT && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn an_upstream_that_stalls_mid_body_is_cut_off() {
    let rogue = stalling_mid_body().await;
    let gw = TestGateway::start(&config(&rogue.url()), &[]).await;
    let started = std::time::Instant::now();
    let answer = get(&gw).await;
    assert_cut_off_after_the_pause_limit(&answer, started.elapsed());
}

/// On a route that streams its request body, the wait for the upstream's headers is longer
/// (the upload is the client's time, up to `timeouts.body`), but the response body's pause
/// limit stays `response_headers`: the two deadlines are separate.
#[tokio::test]
async fn a_streamed_upload_does_not_stretch_the_response_pause_limit() {
    let rogue = stalling_mid_body().await;
    let gw = TestGateway::start(&config(&rogue.url()), &[]).await;
    let started = std::time::Instant::now();
    let answer = exchange(
        gw.addr,
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .await;
    assert_cut_off_after_the_pause_limit(&answer, started.elapsed());
}
