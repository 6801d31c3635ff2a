//! Limits and timeouts over raw loopback sockets, with short configured values: request heads
//! too large (431, 414), slow headers, slow and oversized bodies (408, 413) on validated and
//! streamed routes, the in-flight cap (503), the connection cap, and clients that stop
//! reading. Every rejection is the envelope.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::raw::{dechunk, find};
use crate::support::*;

/// A gateway with two routes (POST /v with a body schema, POST /s streamed) and `defaults`.
fn config(upstream: &str, defaults: &str) -> String {
    format!(
        r#"listeners:
  - address: 127.0.0.1:0
defaults:
{defaults}upstreams:
  backend: {{ url: '{upstream}' }}
routes:
  - {{ name: r.v, method: POST, path: /v, upstream: backend, schemas: {{ body: s.json }} }}
  - {{ name: r.s, method: POST, path: /s, upstream: backend }}
  - {{ name: r.g, method: GET, path: /g, upstream: backend }}
"#
    )
}

const SCHEMA: (&str, &str) = ("schemas/s.json", r#"{"type":"object"}"#);

/// Reads what the gateway sends until it closes (bounded by `wait`).
async fn read_all(stream: &mut TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The JSON body of a raw HTTP/1.1 answer with Content-Length.
fn envelope_of(raw: &str) -> serde_json::Value {
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {raw}"))
}

#[tokio::test]
async fn oversized_heads_get_431_and_414_envelopes() {
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::start(
        &config(
            &upstream.url(),
            "  limits: { headers: 20, header_bytes: 2KiB, uri: 256 }\n",
        ),
        &[SCHEMA],
    )
    .await;
    let many: String = (0..21).map(|i| format!("x-h{i}: v\r\n")).collect();
    let big = format!("x-big: {}\r\n", "a".repeat(2100));
    let long_uri = format!("/g?{}", "q".repeat(300));
    let cases = [
        (format!("GET /g HTTP/1.1\r\nhost: t\r\n{many}\r\n"), 431),
        (format!("GET /g HTTP/1.1\r\nhost: t\r\n{big}\r\n"), 431),
        (format!("GET {long_uri} HTTP/1.1\r\nhost: t\r\n\r\n"), 414),
        // Within every limit: forwarded.
        (
            "GET /g?q=1 HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".to_string(),
            200,
        ),
    ];
    for (raw, status) in cases {
        let answer = send_raw(gw.addr, raw.as_bytes()).await;
        assert_eq!(status_of(&answer), status, "{answer}");
        if status != 200 {
            let json = envelope_of(&answer);
            assert_eq!(json["statusCode"], status, "{answer}");
            let lower = answer.to_ascii_lowercase();
            assert!(lower.contains("x-request-id"), "{answer}");
            assert!(lower.contains("connection: close"), "{answer}");
        }
    }
    assert_eq!(upstream.seen().len(), 1);
}

/// hyper's own cap on header fields (100 by default) must not undercut a higher configured
/// limit: 120 fields pass a limit of 150, and 151 get the envelope, not hyper's bare 431.
/// (The built-in mock answers: a test upstream built on hyper would refuse 120 fields.)
#[tokio::test]
async fn a_header_limit_above_hypers_default_is_the_gateways() {
    let gw = TestGateway::start(
        r#"listeners:
  - address: 127.0.0.1:0
defaults:
  limits: { headers: 150 }
upstreams:
  m: { url: mock, mock: { status: 200, body_file: ok.json } }
routes:
  - { name: r.g, method: GET, path: /g, upstream: m }
"#,
        &[("ok.json", r#"{"ok":true}"#)],
    )
    .await;
    let fields = |n: usize| -> String { (0..n).map(|i| format!("x-h{i}: v\r\n")).collect() };
    // Host, Connection and 118 more: 120 fields.
    let within = format!(
        "GET /g HTTP/1.1\r\nhost: t\r\nconnection: close\r\n{}\r\n",
        fields(118)
    );
    let answer = send_raw(gw.addr, within.as_bytes()).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    // Host and 150 more: 151 fields.
    let over = format!("GET /g HTTP/1.1\r\nhost: t\r\n{}\r\n", fields(150));
    let answer = send_raw(gw.addr, over.as_bytes()).await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    assert_eq!(envelope_of(&answer)["statusCode"], 431, "{answer}");
}

#[tokio::test]
async fn slow_headers_and_idle_keep_alive_connections_are_closed() {
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::start(
        &config(&upstream.url(), "  timeouts: { header_read: 300ms }\n"),
        &[SCHEMA],
    )
    .await;
    // Half a request head, then nothing.
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET /g HTTP/1.1\r\nhost: t\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_all(&mut slow, Duration::from_secs(5)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(!answer.contains("200"), "{answer}");

    // A keep-alive connection idle after its request is closed after the same time.
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(b"GET /g HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_all(&mut idle, Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(upstream.seen().len(), 1);
}

/// Reads one answer to a keep-alive request to the default upstream (its body ends the
/// answer); `None` when the connection closes or nothing comes within 3 s.
async fn read_ok(stream: &mut TcpStream) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !out.ends_with(br#"{"ok":true}"#) {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The head deadline counts from the end of the last response, not from the connection's
/// start: three requests 200 ms apart on one connection pass a 300 ms `header_read`, and
/// the connection closes once it stays idle.
#[tokio::test]
async fn the_head_deadline_restarts_after_each_response() {
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::start(
        &config(&upstream.url(), "  timeouts: { header_read: 300ms }\n"),
        &[SCHEMA],
    )
    .await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stream
            .write_all(b"GET /g HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let answer = read_ok(&mut stream).await;
        let answer = answer.unwrap_or_else(|| panic!("request {i}: no answer"));
        assert_eq!(status_of(&answer), 200, "request {i}: {answer}");
    }
    let started = Instant::now();
    let rest = read_all(&mut stream, Duration::from_secs(5)).await;
    let waited = started.elapsed();
    assert!(rest.is_empty(), "{rest}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(upstream.seen().len(), 3);
}

/// A large response flushed to a slow reader for longer than `header_read` after its body has
/// ended (the built-in mock hands over 16 MiB at once) arrives whole: a write that stalled
/// and went on keeps the connection busy.
#[tokio::test]
async fn a_slow_reader_gets_a_large_response_whole() {
    const SIZE: usize = 16 << 20;
    let body = format!("\"{}\"", "a".repeat(SIZE - 2));
    let gw = TestGateway::start(
        r#"listeners:
  - address: 127.0.0.1:0
defaults:
  timeouts: { header_read: 1s, write_stall: 5s }
upstreams:
  m: { url: mock, mock: { status: 200, body_file: big.json } }
routes:
  - { name: r.g, method: GET, path: /g, upstream: m }
"#,
        &[("big.json", &body)],
    )
    .await;
    // A small receive buffer, so that most of the response waits on the gateway's side.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut stream = socket.connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /g HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    // 512 KiB per 100 ms: about 3.2 s in all, three times `header_read`, never a long stall.
    let mut received = Vec::with_capacity(SIZE + 1024);
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(20);
    'reading: while Instant::now() < deadline {
        let mut this_round = 0;
        while this_round < 512 << 10 {
            match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {
                    received.extend_from_slice(&buf[..n]);
                    this_round += n;
                }
                _ => break 'reading,
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let head_end = find(&received, b"\r\n\r\n").map_or(0, |end| end + 4);
    assert_eq!(
        status_of(&String::from_utf8_lossy(&received[..head_end])),
        200
    );
    assert_eq!(received.len() - head_end, SIZE, "response cut short");
}

/// A response that streams for longer than `header_read`, pausing longer than it between
/// pieces, is not cut off by the head deadline: the connection is busy until the response's
/// body ends, written or not.
#[tokio::test]
async fn a_response_streamed_for_longer_than_header_read_arrives_whole() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while find(&head, b"\r\n\r\n").is_none() {
            match stream.read(&mut buf).await {
                Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        // Three pieces 450 ms apart (the body's own pause limit is `response_headers`, 2 s).
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(450)).await;
            let _ = stream.write_all(b"5\r\nhello\r\n").await;
        }
        let _ = stream.write_all(b"0\r\n\r\n").await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let gw = TestGateway::start(
        &config(
            &format!("http://{upstream}"),
            "  timeouts: { header_read: 300ms, response_headers: 2s }\n",
        ),
        &[SCHEMA],
    )
    .await;
    let answer = send_raw(
        gw.addr,
        b"GET /g HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let body = &answer.as_bytes()[find(answer.as_bytes(), b"\r\n\r\n").unwrap_or(0) + 4..];
    assert_eq!(
        dechunk(body).as_deref(),
        Some("hello".repeat(3).as_bytes()),
        "{answer}"
    );
}

#[tokio::test]
async fn slow_bodies_get_408_on_validated_and_streamed_routes() {
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::start(
        &config(
            &upstream.url(),
            "  timeouts: { body_idle: 300ms, body: 900ms, response_headers: 5s }\n",
        ),
        &[SCHEMA],
    )
    .await;
    for path in ["/v", "/s"] {
        // A pause longer than body_idle.
        let mut stalled = TcpStream::connect(gw.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n{{\"a\":"
        );
        stalled.write_all(head.as_bytes()).await.unwrap();
        let answer = read_all(&mut stalled, Duration::from_secs(5)).await;
        assert_eq!(status_of(&answer), 408, "{path}: {answer}");
        assert_eq!(envelope_of(&answer)["error"], "Request Timeout");

        // A trickle: no pause is long, but the whole body takes longer than `body`.
        let mut trickle = TcpStream::connect(gw.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n"
        );
        trickle.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let mut answer = String::new();
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if trickle.write_all(b" ").await.is_err() {
                break;
            }
            let mut buf = [0u8; 1024];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), trickle.read(&mut buf)).await
            {
                answer.push_str(&String::from_utf8_lossy(&buf[..n]));
                break;
            }
        }
        answer.push_str(&read_all(&mut trickle, Duration::from_secs(3)).await);
        assert_eq!(status_of(&answer), 408, "{path}: {answer}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    // Neither validated body reached the upstream complete.
    assert!(upstream.seen().iter().all(|s| s.body.len() < 20));
}

#[tokio::test]
async fn oversized_bodies_get_413_on_streamed_routes_too() {
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::start(
        &config(&upstream.url(), "  limits: { body: 64 }\n"),
        &[SCHEMA],
    )
    .await;
    let big = "x".repeat(100);
    // Declared too large: refused before a byte goes upstream.
    let declared = format!(
        "POST /s HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: 100\r\n\r\n{big}"
    );
    let answer = send_raw(gw.addr, declared.as_bytes()).await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    assert!(upstream.seen().is_empty());
    // Chunked: found out while streaming.
    let chunked = format!(
        "POST /s HTTP/1.1\r\nhost: t\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n40\r\n{}\r\n40\r\n{}\r\n0\r\n\r\n",
        "x".repeat(64),
        "x".repeat(64)
    );
    let answer = send_raw(gw.addr, chunked.as_bytes()).await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    assert_eq!(envelope_of(&answer)["error"], "Payload Too Large");
    // Within the limit: forwarded whole.
    let small =
        "POST /s HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello";
    assert_eq!(status_of(&send_raw(gw.addr, small.as_bytes()).await), 200);
    assert_eq!(upstream.seen().last().unwrap().body, "hello");
}

#[tokio::test]
async fn requests_over_the_in_flight_cap_get_an_immediate_503() {
    let upstream = Upstream::start(Answer {
        delay: Duration::from_millis(600),
        ..Answer::default()
    })
    .await;
    let gw = TestGateway::start(
        &config(&upstream.url(), "  limits: { in_flight: 2 }\n"),
        &[SCHEMA],
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let got = send(addr, request("GET", "/g", &[], b"")).await;
            (got, started.elapsed())
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        let (got, took) = task.await.unwrap();
        if got.status == 503 {
            assert_envelope(&got, 503, "Service Unavailable");
            assert_eq!(got.headers["retry-after"], "1");
            assert!(took < Duration::from_millis(500), "queued: {took:?}");
        }
        statuses.push(got.status);
    }
    statuses.sort();
    assert_eq!(statuses, vec![200, 200, 503, 503, 503]);
    // Once they finish, requests are taken again.
    assert_eq!(
        send(gw.addr, request("GET", "/g", &[], b"")).await.status,
        200
    );
}

#[tokio::test]
async fn the_connection_cap_holds_new_clients_until_one_closes() {
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::start(
        &config(&upstream.url(), "  limits: { connections: 2 }\n"),
        &[SCHEMA],
    )
    .await;
    let mut first = TcpStream::connect(gw.addr).await.unwrap();
    let mut second = TcpStream::connect(gw.addr).await.unwrap();
    for stream in [&mut first, &mut second] {
        stream
            .write_all(b"GET /g HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    // The third connects (the kernel queues it) but is not served while two are open.
    let mut third = TcpStream::connect(gw.addr).await.unwrap();
    third
        .write_all(b"GET /g HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let early = tokio::time::timeout(Duration::from_millis(400), third.read(&mut buf)).await;
    assert!(early.is_err(), "served over the cap");
    drop(first);
    let answer = read_all(&mut third, Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off() {
    // 32 MiB: more than loopback socket buffers hold.
    let body: &'static [u8] = Box::leak(vec![b'x'; 32 << 20].into_boxed_slice());
    let upstream = Upstream::start(Answer {
        body,
        ..Answer::default()
    })
    .await;
    let gw = TestGateway::start(
        &config(&upstream.url(), "  timeouts: { write_stall: 300ms }\n"),
        &[SCHEMA],
    )
    .await;
    let mut lazy = TcpStream::connect(gw.addr).await.unwrap();
    lazy.write_all(b"GET /g HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), lazy.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => received += n,
        }
    }
    assert!(received < body.len(), "the whole response arrived");
    // The gateway is still serving others.
    assert_eq!(
        send(gw.addr, request("GET", "/g", &[], b"")).await.status,
        200
    );
}

#[tokio::test]
async fn limits_in_the_wrong_place_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("schemas")).unwrap();
    std::fs::write(dir.path().join("schemas/s.json"), SCHEMA.1).unwrap();
    let path = dir.path().join("gateway.yaml");
    let base = config("http://127.0.0.1:9", "  limits: { body: 1KiB }\n");
    let cases = [
        (
            base.replace(
                "/g, upstream: backend",
                "/g, upstream: backend, timeouts: { header_read: 1s }",
            ),
            "apply before a route is known",
        ),
        (
            base.replace(
                "/g, upstream: backend",
                "/g, upstream: backend, limits: { in_flight: 3 }",
            ),
            "set only `body`",
        ),
        (
            config("http://127.0.0.1:9", "  limits: { in_flight: 0 }\n"),
            "in_flight must be at least 1",
        ),
        (
            base.replace(
                "backend: { url: 'http://127.0.0.1:9' }",
                "backend: { url: 'http://127.0.0.1:9', timeouts: { body: 1s } }",
            ),
            "an upstream sets only",
        ),
    ];
    for (yaml, needle) in cases {
        std::fs::write(&path, &yaml).unwrap();
        let errors = schemagate::Snapshot::load(&path).unwrap_err();
        let text = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(text.contains(needle), "{needle}:\n{text}\n{yaml}");
    }
}

#[tokio::test]
async fn silent_clients_and_partial_h2_prefaces_are_dropped_after_header_read() {
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::start(
        &config(&upstream.url(), "  timeouts: { header_read: 300ms }\n"),
        &[SCHEMA],
    )
    .await;
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    let mut partial = TcpStream::connect(gw.addr).await.unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    for stream in [&mut silent, &mut partial] {
        let started = Instant::now();
        let answer = read_all(stream, Duration::from_secs(5)).await;
        let waited = started.elapsed();
        assert!(answer.is_empty(), "{answer}");
        assert!(waited < Duration::from_secs(3), "held for {waited:?}");
    }
    // h2c prior knowledge and HTTP/1.1 are both still served.
    assert_eq!(
        send_h2(gw.addr, request("GET", "/g", &[], b""))
            .await
            .status,
        200
    );
    assert_eq!(
        send(gw.addr, request("GET", "/g", &[], b"")).await.status,
        200
    );
}
