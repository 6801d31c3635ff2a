//! Hostile HTTP/1 as raw bytes (in the style of HAProxy's reg-tests): each case is written
//! on its own connection, and the test checks the status, whether the answer is our envelope
//! or hyper's bare one, that the connection is closed afterwards, and what (if anything)
//! reached the upstream.

use crate::raw::*;
use crate::support::*;

const BODY_SCHEMA: &str = r#"{"type":"object"}"#;

/// Routes for every kind of stage: a streamed body, a validated body, a GET, bearer auth and
/// a tenant header.
fn config(upstream: &str) -> String {
    format!(
        r#"listeners:
  - address: 127.0.0.1:0
defaults:
  timeouts: {{ connect: 1s, response_headers: 2s, drain: 5s }}
upstreams:
  backend:
    url: {upstream}
routes:
  - {{ name: stream, method: POST, path: /s, upstream: backend }}
  - {{ name: checked, method: POST, path: /v, upstream: backend, schemas: {{ body: b.json }} }}
  - {{ name: plain, method: GET, path: /g, upstream: backend }}
  - {{ name: bearer, method: GET, path: /a, upstream: backend, auth: bearer }}
  - {{ name: tenant, method: GET, path: /t, upstream: backend, tenant: {{ from: header, name: X-Tenant }} }}
"#
    )
}

struct Setup {
    upstream: Upstream,
    gw: TestGateway,
}

async fn setup() -> Setup {
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::start(&config(&upstream.url()), &[("schemas/b.json", BODY_SCHEMA)]).await;
    Setup { upstream, gw }
}

/// How the gateway must answer a case.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// hyper's own parse-error answer: this status, an empty body, no envelope.
    Bare(u16),
    /// Our 400 envelope.
    Envelope,
}

struct Case {
    name: &'static str,
    raw: &'static [u8],
    expect: Expect,
}

const fn bare(name: &'static str, raw: &'static [u8], status: u16) -> Case {
    Case {
        name,
        raw,
        expect: Expect::Bare(status),
    }
}

const fn envelope(name: &'static str, raw: &'static [u8]) -> Case {
    Case {
        name,
        raw,
        expect: Expect::Envelope,
    }
}

/// Runs each case on a fresh gateway: the answer, a closed connection, and no complete
/// request at the upstream (a streamed route may have opened a connection and sent part of a
/// request before the client's framing broke; the upstream never sees it whole).
async fn run(cases: &[Case]) {
    for case in cases {
        let Setup { upstream, gw } = setup().await;
        let answer = exchange(gw.addr, case.raw).await;
        let name = case.name;
        match case.expect {
            Expect::Bare(status) => {
                assert_eq!(answer.status(), Some(status), "{name}: {}", answer.text());
                assert_eq!(
                    answer.header("content-length").as_deref(),
                    Some("0"),
                    "{name}: {}",
                    answer.text()
                );
                assert!(answer.header("x-request-id").is_none(), "{name}");
                assert!(answer.closed, "{name}: connection left open");
                assert_eq!(answer.statuses().len(), 1, "{name}: {}", answer.text());
                assert_eq!(upstream.connections(), 0, "{name}: upstream was contacted");
            }
            Expect::Envelope => {
                answer.assert_envelope_and_closed(400, "Bad Request");
                assert_eq!(
                    answer.header("connection").as_deref(),
                    Some("close"),
                    "{name}"
                );
            }
        }
        let seen = upstream.seen();
        assert!(
            seen.iter().all(|s| !s.body_ok),
            "{name}: a complete request reached the upstream: {seen:?}"
        );
    }
}

/// Everything hyper's HTTP/1 parser (hyper 1.12, `proto/h1/role.rs`) refuses before our
/// service is called. These answers are hyper's: no envelope, no X-Request-Id.
#[tokio::test]
async fn hyper_refuses_broken_framing_and_fields_itself() {
    run(&[
        bare(
            "two different Content-Length",
            b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            400,
        ),
        bare(
            "Content-Length abc",
            b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nhello",
            400,
        ),
        bare(
            "Content-Length -1",
            b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nhello",
            400,
        ),
        bare(
            "Content-Length +5",
            b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
            400,
        ),
        bare(
            "Content-Length as a list",
            b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
            400,
        ),
        bare(
            "Content-Length above u64",
            b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\nhello",
            400,
        ),
        // Parses as a u64 but is above hyper's MAX_LEN (u64::MAX - 2): "too large", 431.
        bare(
            "Content-Length u64::MAX",
            b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\nhello",
            431,
        ),
        bare(
            "Content-Length before Transfer-Encoding, invalid",
            b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        bare(
            "Transfer-Encoding chunked, gzip",
            b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        bare(
            "Transfer-Encoding identity",
            b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        bare(
            "Transfer-Encoding unknown",
            b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        bare(
            "Transfer-Encoding chunked then gzip lines",
            b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        bare(
            "Transfer-Encoding in HTTP/1.0",
            b"POST /s HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        bare(
            "obs-fold",
            b"GET /g HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
            400,
        ),
        bare(
            "obs-fold with a tab",
            b"GET /g HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n",
            400,
        ),
        bare(
            "NUL in a value",
            b"GET /g HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
            400,
        ),
        bare(
            "bare CR in a value",
            b"GET /g HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
            400,
        ),
        bare(
            "space before the colon",
            b"GET /g HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n",
            400,
        ),
        bare(
            "space in the request target",
            b"GET /g x HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
        ),
    ])
    .await;
}

/// hyper frames a request that has both Content-Length and Transfer-Encoding by the
/// chunking alone, drops Content-Length before our service sees the request, and closes the
/// connection after the answer (RFC 9112 §6.1 allows this instead of a 400). The upstream gets
/// one request framed by what hyper decoded; nothing after it on the connection is read.
#[tokio::test]
async fn content_length_with_transfer_encoding_is_framed_by_the_chunking_then_closed() {
    for raw in [
        &b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
        b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: abc\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ] {
        let Setup { upstream, gw } = setup().await;
        let answer = exchange(gw.addr, raw).await;
        assert_eq!(answer.statuses(), [200], "{}", answer.text());
        assert_eq!(answer.header("connection").as_deref(), Some("close"));
        assert!(answer.closed);
        let seen = upstream.seen();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].body_ok);
        assert_eq!(&seen[0].body[..], b"hello");
        assert!(!seen[0].headers.contains_key("content-length"));
    }
}

/// CL.TE: a front end that trusted Content-Length would forward the second request inside
/// the first one's body; TE.CL the other way round. hyper reads the chunking, and closes the
/// connection after the first answer, so the second request is never parsed, let alone
/// forwarded.
#[tokio::test]
async fn smuggled_second_requests_are_never_forwarded() {
    let cl_te: &[u8] = b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 42\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /g?smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let Setup { upstream, gw } = setup().await;
    let answer = exchange(gw.addr, cl_te).await;
    assert_eq!(answer.statuses(), [200], "{}", answer.text());
    assert!(answer.closed);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].target, "/s");
    assert!(seen[0].body.is_empty());

    // TE.CL: the chunk carries what a Content-Length reader would take as a new request;
    // here it stays the first request's body, framed anew for the upstream.
    let te_cl: &[u8] = b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n25\r\nGET /g?smuggled HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n";
    let Setup { upstream, gw } = setup().await;
    let answer = exchange(gw.addr, te_cl).await;
    assert_eq!(answer.statuses(), [200], "{}", answer.text());
    assert!(answer.closed);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].target, "/s");
    assert_eq!(
        &seen[0].body[..],
        b"GET /g?smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    );
}

#[tokio::test]
async fn two_different_tenant_headers_are_400() {
    let Setup { upstream, gw } = setup().await;
    let answer = exchange(
        gw.addr,
        b"GET /t HTTP/1.1\r\nHost: x\r\nX-Tenant: a\r\nX-Tenant: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    answer.assert_envelope_and_closed(400, "Bad Request");
    assert_eq!(
        answer.json()["message"],
        "the request names two different tenants"
    );
    // The same tenant twice is one tenant.
    let answer = exchange(
        gw.addr,
        b"GET /t HTTP/1.1\r\nHost: x\r\nX-Tenant: a\r\nx-tenant: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.statuses(), [200], "{}", answer.text());
    assert_eq!(upstream.seen().len(), 1);
}

/// `Upgrade` is hop-by-hop: the upstream gets a plain request, and what the client sends
/// after it is parsed as HTTP again, never tunnelled.
#[tokio::test]
async fn upgrade_is_forwarded_as_a_plain_request_never_tunnelled() {
    let Setup { upstream, gw } = setup().await;
    let answer = exchange(
        gw.addr,
        b"GET /g HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nGET /g?after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.statuses(), [200, 200], "{}", answer.text());
    assert!(answer.closed);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].target, "/g?after");
    for request in &seen {
        assert!(!request.headers.contains_key("upgrade"), "{request:?}");
        assert!(!request.headers.contains_key("connection"), "{request:?}");
    }

    // WebSocket frames after the request: never relayed to the upstream.
    let Setup { upstream, gw } = setup().await;
    let answer = exchange(
        gw.addr,
        b"GET /g HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello",
    )
    .await;
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
    assert!(!answer.statuses().contains(&101), "{}", answer.text());
    assert!(answer.closed);
    assert_eq!(upstream.seen().len(), 1);
    assert_eq!(upstream.connections(), 1);
}

/// hyper accepts any coding list that ends in `chunked` and decodes only the chunking; the
/// rest would reach the upstream still encoded, with the coding removed (Transfer-Encoding
/// is hop-by-hop). Anything but one `chunked` is our 400, and the connection closes.
#[tokio::test]
async fn transfer_codings_other_than_one_chunked_are_400() {
    run(&[
        envelope(
            "gzip, chunked",
            b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        envelope(
            "gzip, chunked on a validated route",
            b"POST /v HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        ),
        envelope(
            "chunked twice in one line",
            b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        envelope(
            "chunked on two lines",
            b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        envelope(
            "gzip line then chunked line",
            b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        envelope(
            "unknown coding before chunked, with a pipelined request after",
            b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /g?smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
    ])
    .await;
}

/// RFC 9112 §3.2: an HTTP/1.1 request without Host, with more than one Host line, or with an
/// invalid one is a 400. A Host that names another authority than an absolute-form target
/// is one too: the gateway never picks one of two names for a request.
#[tokio::test]
async fn host_missing_repeated_invalid_or_contradicting_the_target_is_400() {
    run(&[
        envelope("no Host", b"GET /g HTTP/1.1\r\n\r\n"),
        envelope(
            "two different Hosts",
            b"GET /g HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        ),
        envelope(
            "the same Host twice",
            b"GET /g HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n",
        ),
        envelope("empty Host", b"GET /g HTTP/1.1\r\nHost: \r\n\r\n"),
        envelope("Host with a space", b"GET /g HTTP/1.1\r\nHost: a b\r\n\r\n"),
        envelope(
            "Host with userinfo",
            b"GET /g HTTP/1.1\r\nHost: user@x\r\n\r\n",
        ),
        envelope(
            "absolute-form naming another host",
            b"GET http://evil.example/g HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        envelope(
            "absolute-form without Host",
            b"GET http://x/g HTTP/1.1\r\n\r\n",
        ),
        envelope(
            "no Host on a validated route",
            b"POST /v HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        ),
    ])
    .await;
}

/// An absolute-form target that agrees with Host is routed by its path and forwarded to the
/// configured upstream only; HTTP/1.0 may omit Host.
#[tokio::test]
async fn absolute_form_and_http10_without_host_reach_only_the_configured_upstream() {
    let Setup { upstream, gw } = setup().await;
    let answer = exchange(
        gw.addr,
        b"GET http://X:80/g?q=1 HTTP/1.1\r\nHost: x:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.statuses(), [200], "{}", answer.text());
    let answer = exchange(gw.addr, b"GET /g HTTP/1.0\r\n\r\n").await;
    assert_eq!(answer.statuses(), [200], "{}", answer.text());
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].target, "/g?q=1");
    assert_eq!(seen[0].headers["host"], upstream.addr.to_string());
    assert_eq!(seen[0].headers["x-forwarded-host"], "x:80");
    assert!(!seen[1].headers.contains_key("x-forwarded-host"));
}

/// Broken chunked framing is found while the body is read: whole, on a validated route, or
/// while it streams upstream on the others. Either way it is the client's 400, never a 502,
/// and the upstream never receives a complete request.
#[tokio::test]
async fn malformed_chunks_are_400_on_streamed_and_validated_routes() {
    run(&[
        envelope(
            "chunk size not hex",
            b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
        envelope(
            "chunk size not hex, validated",
            b"POST /v HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        ),
        envelope(
            "no CRLF after the chunk data",
            b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        ),
        envelope(
            "no CRLF after the chunk data, validated",
            b"POST /v HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
        ),
        envelope(
            "chunk size overflows u64",
            b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nhello\r\n0\r\n\r\n",
        ),
        envelope(
            "chunk size overflows u64, validated",
            b"POST /v HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
        ),
        envelope(
            "second chunk broken after a good one",
            b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n-1\r\nx\r\n0\r\n\r\n",
        ),
        envelope(
            "chunk longer than its size, carrying a request",
            b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nGET /g?smuggled HTTP/1.1\r\nHost: x\r\n\r\n0\r\n\r\n",
        ),
    ])
    .await;

    // A body cut short by the client's half-close is no request either.
    for path in ["/s", "/v"] {
        let Setup { upstream, gw } = setup().await;
        let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{{}}");
        tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes())
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::shutdown(&mut stream)
            .await
            .unwrap();
        let answer = read_answer(&mut stream, CLOSE_WAIT).await;
        answer.assert_envelope_and_closed(400, "Bad Request");
        assert!(upstream.seen().iter().all(|s| !s.body_ok), "{path}");
    }
}

/// Two different `Authorization` values: the gateway would check the first and the
/// upstream might act on the second. A 400, never "pick one"; the same value twice is one.
#[tokio::test]
async fn two_different_authorization_headers_are_400() {
    let Setup { upstream, gw } = setup().await;
    for path in ["/a", "/g"] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\nAuthorization: Bearer other\r\nConnection: close\r\n\r\n");
        let answer = exchange(gw.addr, raw.as_bytes()).await;
        answer.assert_envelope_and_closed(400, "Bad Request");
        assert_eq!(
            answer.json()["message"],
            "the request has two different Authorization headers"
        );
    }
    assert_eq!(upstream.connections(), 0);
    let answer = exchange(
        gw.addr,
        b"GET /a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\nauthorization: Bearer good\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.statuses(), [200], "{}", answer.text());
    assert_eq!(upstream.seen().len(), 1);
}

/// Past the gateway's own head limits (envelope answers, see `limits.rs`), hyper's parser
/// limits: more than 100 fields (with the default `limits.headers`, 100) is a bare 431, a
/// request target longer than 65534 bytes a bare 414.
#[tokio::test]
async fn hyper_limits_on_the_head_are_bare_431_and_414() {
    let mut many = String::from("GET /g HTTP/1.1\r\nHost: x\r\n");
    // Host and 100 more: 101 fields.
    for i in 0..100 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let long = format!("GET /g?{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    for (raw, status) in [(many, 431), (long, 414)] {
        let Setup { upstream, gw } = setup().await;
        let answer = exchange(gw.addr, raw.as_bytes()).await;
        assert_eq!(answer.statuses(), [status], "{}", answer.text());
        assert_eq!(answer.header("content-length").as_deref(), Some("0"));
        assert!(answer.closed);
        assert_eq!(upstream.connections(), 0);
    }
}
