//! Issue 23's edge defects, each through the `schemagate` binary on a config written to a temp
//! dir, with upstreams on 127.0.0.1:0: metric labels a client cannot multiply, an upstream's
//! stale `Content-Length` beside chunking, the listen backlog, and header names with
//! underscores.

use std::collections::BTreeSet;
use std::time::Duration;

use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::faults::answers;
use crate::raw::exchange;
use crate::support::*;

/// Writes `config` as `gateway.yaml` (and `files`, paths relative to it) into a new temp dir
/// and starts the binary on it.
pub(crate) fn serve(config: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, Served) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::write(dir.path().join("gateway.yaml"), config).unwrap();
    let served = Served::start(dir.path(), "gateway.yaml", &[]);
    (dir, served)
}

/// A config with an admin listener, `upstream` as `backend`, `defaults_extra` (lines under
/// `defaults:`) and `routes` (lines under `routes:`).
fn config(upstream: &str, defaults_extra: &str, routes: &str) -> String {
    format!(
        r#"listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
defaults:
  timeouts: {{ connect: 1s, response_headers: 2s, header_read: 60s }}
{defaults_extra}upstreams:
  backend: {{ url: "{upstream}" }}
routes:
{routes}"#
    )
}

/// The admin listener's `/metrics`, parsed.
pub(crate) async fn scrape(served: &Served) -> Vec<prometheus_parse::Sample> {
    let got = send(served.admin, request("GET", "/metrics", &[], b"")).await;
    assert_eq!(got.status, 200);
    let text = String::from_utf8(got.body.to_vec()).unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text")
        .samples
}

/// Every value `label` takes in `metric`'s samples.
fn label_values(
    samples: &[prometheus_parse::Sample],
    metric: &str,
    label: &str,
) -> BTreeSet<String> {
    samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter_map(|s| s.labels.get(label).map(str::to_string))
        .collect()
}

/// The sum of `metric`'s counter samples whose labels include `labels`.
pub(crate) fn counted(
    samples: &[prometheus_parse::Sample],
    metric: &str,
    labels: &[(&str, &str)],
) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .sum()
}

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| v.to_string()).collect()
}

/// Defect 3: a client's method never becomes a label of its own. Hundreds of made-up methods,
/// on a path with a route (405) and on one without (404), all count as `OTHER`; standard
/// methods keep their names. Before, each was a new series (`method="M17"`).
#[tokio::test]
async fn request_method_labels_are_a_closed_set() {
    const CUSTOM: usize = 300;
    let upstream = Upstream::start(Answer::default()).await;
    let routes = "  - { name: r, method: GET, path: /x, upstream: backend }\n";
    let (_dir, gw) = serve(&config(&upstream.url(), "", routes), &[]);
    assert_eq!(
        send(gw.addr, request("GET", "/x", &[], b"")).await.status,
        200
    );
    for i in 0..CUSTOM {
        let path = if i % 2 == 0 { "/x" } else { "/elsewhere" };
        let status = send(gw.addr, request(&format!("M{i}"), path, &[], b""))
            .await
            .status;
        assert_eq!(status, if i % 2 == 0 { 405 } else { 404 }, "M{i} {path}");
    }
    let status = send(gw.addr, request("DELETE", "/elsewhere", &[], b""))
        .await
        .status;
    assert_eq!(status, 404);

    let samples = scrape(&gw).await;
    let requests = "schemagate_requests_total";
    assert_eq!(
        label_values(&samples, requests, "method"),
        set(&["DELETE", "GET", "OTHER"])
    );
    assert_eq!(
        counted(&samples, requests, &[("method", "OTHER")]),
        CUSTOM as f64
    );
    // No family took a made-up method as a label value.
    let sent: BTreeSet<String> = (0..CUSTOM).map(|i| format!("M{i}")).collect();
    for sample in &samples {
        for (label, value) in sample.labels.iter() {
            assert!(
                !sent.contains(value),
                "{}{{{label}={value}}}",
                sample.metric
            );
        }
    }
}

const NAMED_N: &str = r#""properties":{"n":{"type":"integer"}}"#;

/// Defect 3, the field label: a rejected field is labelled by the schema's names, never by a
/// key the client chose. Distinct unknown keys under `additionalProperties: false` (body and
/// query) and under an `additionalProperties` schema all count as `*`. Before, each key was a
/// series (`field="body.k17"`).
#[tokio::test]
async fn rejected_field_labels_are_the_schemas_names() {
    const KEYS: usize = 50;
    let upstream = Upstream::start(Answer::default()).await;
    let strict = format!(r#"{{"type":"object",{NAMED_N},"additionalProperties":false}}"#);
    let map =
        format!(r#"{{"type":"object",{NAMED_N},"additionalProperties":{{"type":"integer"}}}}"#);
    let routes = r#"  - { name: strict, method: POST, path: /strict, upstream: backend, schemas: { body: strict.json } }
  - { name: map, method: POST, path: /map, upstream: backend, schemas: { body: map.json } }
  - { name: query, method: GET, path: /q, upstream: backend, schemas: { query: strict.json } }
"#;
    let (_dir, gw) = serve(
        &config(&upstream.url(), "", routes),
        &[("schemas/strict.json", &strict), ("schemas/map.json", &map)],
    );
    let json = [("content-type", "application/json")];
    for i in 0..KEYS {
        for path in ["/strict", "/map"] {
            let body = format!(r#"{{"k{i}":"x"}}"#);
            let got = send(gw.addr, request("POST", path, &json, body.as_bytes())).await;
            assert_eq!(got.status, 422, "{path} {body}");
        }
        let got = send(gw.addr, request("GET", &format!("/q?k{i}=1"), &[], b"")).await;
        assert_eq!(got.status, 422, "/q?k{i}=1");
    }
    for path in ["/strict", "/map"] {
        let got = send(gw.addr, request("POST", path, &json, br#"{"n":"x"}"#)).await;
        assert_eq!(got.status, 422, "{path}");
    }

    let samples = scrape(&gw).await;
    let fields = "schemagate_rejected_fields_total";
    assert_eq!(
        label_values(&samples, fields, "field"),
        set(&["body.*", "body.n", "query.*"])
    );
    assert_eq!(
        counted(&samples, fields, &[("route", "map"), ("field", "body.*")]),
        KEYS as f64
    );
}

/// Defect 4: an upstream answer framed both ways (`Content-Length: 3` and chunked) is relayed
/// whole. RFC 9112 §6.1: the chunking wins; the stale length must not go out with it, or the
/// client reads 3 bytes of 20 and takes them for the whole answer. The upstream is written by
/// hand: hyper would never send both.
#[tokio::test]
async fn chunking_wins_over_an_upstreams_stale_content_length() {
    let rogue = answers(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
          a\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n",
        false,
    )
    .await;
    let routes = "  - { name: g, method: GET, path: /g, upstream: backend }\n";
    let (_dir, gw) = serve(&config(&rogue.url(), "", routes), &[]);

    let answer = exchange(
        gw.addr,
        b"GET /g HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.statuses(), [200], "{}", answer.text());
    assert_ne!(
        answer.header("content-length").as_deref(),
        Some("3"),
        "{}",
        answer.text()
    );
    assert_eq!(answer.body(), b"0123456789abcdefghij", "{}", answer.text());

    // A client library reads the same.
    let got = send(gw.addr, request("GET", "/g", &[], b"")).await;
    assert_eq!(&got.body[..], b"0123456789abcdefghij");
}

/// Defect 6: `defaults.limits.backlog` reaches listen(2).
///
/// How it is observed with nothing installed: the gateway is made to stop accepting (at
/// `limits.connections: 1`, with one keep-alive connection held open), so every further
/// connection can only wait in the kernel's accept queue, whose length is the listen backlog
/// (Linux queues backlog + 1, capped at `net.core.somaxconn`). Then a burst of connects: with
/// `backlog: 1024` every one of them completes its handshake; with the old fixed 128 only 129
/// do, and the kernel drops the SYNs of the rest, whose connects time out here (its first SYN
/// retry comes after 1 s, into a queue still full). Reading the backlog itself needs netlink
/// (`ss`); `/proc/net/tcp` shows only the queue's current length. The burst (300) is well
/// above 129 and well under the test's descriptor limit. Where `somaxconn` is lower than the
/// burst (kernels before 5.4 defaulted to 128), the kernel's cap is what can be expected.
#[tokio::test]
async fn the_listen_backlog_is_the_configured_one() {
    const BURST: usize = 300;
    let upstream = Upstream::start(Answer::default()).await;
    let routes = "  - { name: r, method: GET, path: /x, upstream: backend }\n";
    let limits = "  limits: { backlog: 1024, connections: 1 }\n";
    let (_dir, gw) = serve(&config(&upstream.url(), limits, routes), &[]);

    // The one connection the gateway will accept, answered (so counted) and kept open.
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut held, connection) =
        hyper::client::conn::http1::handshake::<_, Full<bytes::Bytes>>(TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = held
        .send_request(request("GET", "/x", &[], b""))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let connects: Vec<_> = (0..BURST)
        .map(|_| {
            let addr = gw.addr;
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
            })
        })
        .collect();
    let mut queued = Vec::with_capacity(BURST);
    for connect in connects {
        if let Ok(Ok(stream)) = connect.await.unwrap() {
            queued.push(stream);
        }
    }
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    let expected = BURST.min(somaxconn.saturating_add(1));
    assert!(
        queued.len() >= expected,
        "{} of {BURST} connects queued (somaxconn {somaxconn}): the backlog is not 1024",
        queued.len()
    );
    eprintln!(
        "{} of {BURST} connects queued behind a full gateway",
        queued.len()
    );
    drop(held);
}

/// Defect 7: a header name with `_` (`X_Tenant: 999` beside `X-Tenant: 7`) is dropped before
/// anything reads the headers, as nginx does, unless `underscore_headers: keep`; the drops are
/// counted. A CGI/WSGI backend would read both names as one `HTTP_X_TENANT`.
#[tokio::test]
async fn header_names_with_underscores_are_dropped_unless_kept() {
    for (limits, kept) in [
        ("", false),
        ("  limits: { underscore_headers: keep }\n", true),
    ] {
        let upstream = Upstream::start(Answer::default()).await;
        let routes = r#"  - name: r
    method: GET
    path: /x
    upstream: backend
    tenant: { from: header, name: X-Tenant }
"#;
        let (_dir, gw) = serve(&config(&upstream.url(), limits, routes), &[]);
        let headers = [
            ("x-tenant", "7"),
            ("X_Tenant", "999"),
            ("x_trace", "a"),
            ("x_trace", "b"),
        ];
        let got = send(gw.addr, request("GET", "/x", &headers, b"")).await;
        assert_eq!(got.status, 200, "{limits}");

        let seen = upstream.seen();
        let seen = &seen[0].headers;
        assert_eq!(seen["x-tenant"], "7");
        assert_eq!(seen.contains_key("x_tenant"), kept, "{limits}: {seen:?}");
        assert_eq!(
            seen.get_all("x_trace").iter().count(),
            if kept { 2 } else { 0 }
        );

        let samples = scrape(&gw).await;
        let dropped = counted(
            &samples,
            "schemagate_dropped_headers_total",
            &[("reason", "underscore")],
        );
        assert_eq!(dropped, if kept { 0.0 } else { 3.0 }, "{limits}");
    }
}
