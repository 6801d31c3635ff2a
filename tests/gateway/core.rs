//! The core over real sockets: routing, forwarding fidelity, hop-by-hop rules, forwarded
//! headers, request ids, upstream failures and graceful drain.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn forwards_request_and_response_unchanged() {
    let upstream = Upstream::start(Answer {
        status: 201,
        headers: vec![
            ("content-type", "application/json"),
            ("x-upstream", "yes"),
            ("set-cookie", "a=1"),
        ],
        body: br#"{"created":1}"#,
        ..Answer::default()
    })
    .await;
    let gw = TestGateway::start(
        &one_route(&upstream.url(), "POST", "/v1/items/{id}", ""),
        &[],
    )
    .await;
    // Body bytes that are not even UTF-8: the gateway must not care on an unvalidated route.
    let body: &[u8] = b"{\"a\": 1,   \"b\":\xff\x00 }";
    let got = send(
        gw.addr,
        request(
            "POST",
            "/v1/items/42?b=%20x&a=1&a=2&empty=",
            &[
                ("content-type", "application/json"),
                ("x-custom", "one"),
                ("authorization", "Bearer t0k"),
            ],
            body,
        ),
    )
    .await;

    assert_eq!(got.status, 201);
    assert_eq!(got.headers["x-upstream"], "yes");
    assert_eq!(got.headers["set-cookie"], "a=1");
    assert_eq!(&got.body[..], br#"{"created":1}"#);

    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    let seen = &seen[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/v1/items/42?b=%20x&a=1&a=2&empty=");
    assert_eq!(&seen.body[..], body);
    assert_eq!(seen.headers["x-custom"], "one");
    assert_eq!(seen.headers["authorization"], "Bearer t0k");
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(seen.headers["host"], upstream.addr.to_string());
}

#[tokio::test]
async fn h2c_clients_are_served_and_forwarded_as_http1() {
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::start(&one_route(&upstream.url(), "GET", "/v1/x", ""), &[]).await;
    let req = http::Request::builder()
        .method("GET")
        .uri(format!("http://gateway.test:{}/v1/x?q=1", gw.addr.port()))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let got = send_h2(gw.addr, req).await;
    assert_eq!(got.status, 200);
    let seen = upstream.seen();
    assert_eq!(seen[0].target, "/v1/x?q=1");
    assert_eq!(
        seen[0].headers["x-forwarded-host"],
        format!("gateway.test:{}", gw.addr.port())
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_both_ways() {
    let upstream = Upstream::start(Answer {
        headers: vec![
            ("connection", "x-upstream-hop"),
            ("x-upstream-hop", "secret"),
            ("keep-alive", "timeout=5"),
            ("x-end", "kept"),
        ],
        ..Answer::default()
    })
    .await;
    let gw = TestGateway::start(&one_route(&upstream.url(), "GET", "/h", ""), &[]).await;
    let got = send(
        gw.addr,
        request(
            "GET",
            "/h",
            &[
                ("connection", "keep-alive, x-client-hop"),
                ("x-client-hop", "secret"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("proxy-connection", "keep-alive"),
                ("x-end", "kept"),
            ],
            b"",
        ),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["x-end"], "kept");
    assert!(!got.headers.contains_key("x-upstream-hop"));
    assert!(!got.headers.contains_key("keep-alive"));

    let seen = &upstream.seen()[0];
    assert_eq!(seen.headers["x-end"], "kept");
    for name in ["x-client-hop", "keep-alive", "te", "proxy-connection"] {
        assert!(
            !seen.headers.contains_key(name),
            "{name} reached the upstream"
        );
    }
}

#[tokio::test]
async fn forwarded_headers_and_host() {
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::start(&one_route(&upstream.url(), "GET", "/f", ""), &[]).await;
    send(
        gw.addr,
        request(
            "GET",
            "/f",
            &[("host", "api.example"), ("x-forwarded-for", "10.0.0.1")],
            b"",
        ),
    )
    .await;
    let seen = &upstream.seen()[0];
    assert_eq!(seen.headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "api.example");
    assert_eq!(seen.headers["host"], upstream.addr.to_string());

    let preserve = one_route(&upstream.url(), "GET", "/p", "    preserve_host: true\n");
    let gw = TestGateway::start(&preserve, &[]).await;
    send(
        gw.addr,
        request("GET", "/p", &[("host", "api.example")], b""),
    )
    .await;
    let seen = &upstream.seen()[1];
    assert_eq!(seen.headers["host"], "api.example");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn request_id_is_kept_or_generated_and_returned() {
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::start(&one_route(&upstream.url(), "GET", "/r", ""), &[]).await;
    let got = send(
        gw.addr,
        request("GET", "/r", &[("x-request-id", "client-id-1")], b""),
    )
    .await;
    assert_eq!(got.headers["x-request-id"], "client-id-1");
    assert_eq!(upstream.seen()[0].headers["x-request-id"], "client-id-1");

    let got = send(gw.addr, request("GET", "/r", &[], b"")).await;
    let generated = got.headers["x-request-id"].to_str().unwrap().to_string();
    assert!(generated.len() >= 16, "{generated}");
    assert_eq!(
        upstream.seen()[1].headers["x-request-id"],
        generated.as_str()
    );

    // Errors carry one too.
    let got = send(
        gw.addr,
        request("GET", "/nowhere", &[("x-request-id", "e-1")], b""),
    )
    .await;
    assert_eq!(got.headers["x-request-id"], "e-1");
}

#[tokio::test]
async fn strip_prefix_and_rewrite_and_base_path() {
    let upstream = Upstream::start(Answer::default()).await;
    let base = format!("{}/base/", upstream.url());
    let strip = one_route(&base, "GET", "/api/{*rest}", "    strip_prefix: /api\n");
    let gw = TestGateway::start(&strip, &[]).await;
    send(gw.addr, request("GET", "/api/v1/things?x=1", &[], b"")).await;
    assert_eq!(upstream.seen()[0].target, "/base/v1/things?x=1");

    let rewrite = one_route(
        &upstream.url(),
        "GET",
        "/items/{id}",
        "    rewrite: /v2/item/{id}/detail\n",
    );
    let gw = TestGateway::start(&rewrite, &[]).await;
    send(gw.addr, request("GET", "/items/a%20b?z", &[], b"")).await;
    assert_eq!(upstream.seen()[1].target, "/v2/item/a%20b/detail?z");
}

#[tokio::test]
async fn no_route_is_404_and_wrong_method_is_405_with_allow() {
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::start(
        &one_route(&upstream.url(), "POST", "/conversations/", ""),
        &[],
    )
    .await;
    let got = send(gw.addr, request("GET", "/nope", &[], b"")).await;
    assert_envelope(&got, 404, "Not Found");
    // Paths match exactly: no trailing-slash redirect.
    let got = send(gw.addr, request("POST", "/conversations", &[], b"")).await;
    assert_envelope(&got, 404, "Not Found");
    let got = send(gw.addr, request("DELETE", "/conversations/", &[], b"")).await;
    assert_envelope(&got, 405, "Method Not Allowed");
    assert_eq!(got.headers["allow"], "POST");
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn refused_upstream_is_502() {
    let port = closed_port().await;
    let gw = TestGateway::start(&one_route(&format!("http://{port}"), "GET", "/x", ""), &[]).await;
    let got = send(gw.addr, request("GET", "/x", &[], b"")).await;
    assert_envelope(&got, 502, "Bad Gateway");
}

#[tokio::test]
async fn silent_upstream_is_504_within_the_timeout() {
    let addr = silent_upstream().await;
    // The fixture sets response_headers: 1s; the client gives up after 10 s.
    let gw = TestGateway::start(&one_route(&format!("http://{addr}"), "GET", "/x", ""), &[]).await;
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        send(gw.addr, request("GET", "/x", &[], b"")),
    )
    .await
    .expect("a dead upstream must not hang the client");
    assert_envelope(&got, 504, "Gateway Timeout");
}

#[tokio::test]
async fn garbage_from_upstream_is_502() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let _ = stream.write_all(b"this is not http\r\n\r\n").await;
        }
    });
    let gw = TestGateway::start(&one_route(&format!("http://{addr}"), "GET", "/x", ""), &[]).await;
    let got = send(gw.addr, request("GET", "/x", &[], b"")).await;
    assert_envelope(&got, 502, "Bad Gateway");
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_stops_accepting() {
    let upstream = Upstream::start(Answer {
        delay: Duration::from_millis(700),
        ..Answer::default()
    })
    .await;
    let gw = TestGateway::start(&one_route(&upstream.url(), "GET", "/slow", ""), &[]).await;
    let addr = gw.addr;
    let in_flight = tokio::spawn(send(addr, request("GET", "/slow", &[], b"")));
    // Wait until the upstream has the request, so it is truly in flight.
    for _ in 0..200 {
        if !upstream.seen().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(upstream.seen().len(), 1);
    let done = gw.shutdown();
    let got = in_flight.await.unwrap();
    assert_eq!(got.status, 200, "the in-flight request finishes");
    assert!(done.await.unwrap(), "drain completed within the timeout");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// An idle keep-alive HTTP/1 connection is closed as soon as shutdown begins (it has no
/// request in hand), so the drain ends at once instead of waiting out the drain timeout
/// (5 s here) or the connection's head deadline.
#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::start(&one_route(&upstream.url(), "GET", "/x", ""), &[]).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    // Idle now, kept alive. Let the server see it idle, then shut down.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let done = gw.shutdown();
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the idle connection was not closed on shutdown"
    );
    assert!(done.await.unwrap(), "drain completed");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "drain took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn mock_upstream_answers_from_config() {
    let yaml = r#"listeners:
  - address: 127.0.0.1:0
upstreams:
  m:
    url: mock
    mock: { status: 201, body_file: answer.json }
routes:
  - { name: m.create, method: POST, path: /things, upstream: m }
"#;
    let gw = TestGateway::start(yaml, &[("answer.json", r#"{"id": "<value>"}"#)]).await;
    let got = send(
        gw.addr,
        request(
            "POST",
            "/things",
            &[("content-type", "application/json")],
            b"{}",
        ),
    )
    .await;
    assert_eq!(got.status, 201);
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(got.json(), serde_json::json!({"id": "<value>"}));
}
