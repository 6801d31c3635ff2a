//! `responses: report` (issue 19): upstream answers compared with the documented responses
//! through the `schemagate` binary, with real upstreams: mismatches counted by route and
//! field and logged, answers too large or not JSON counted as unchecked, and the client
//! always handed the upstream's bytes unchanged.

use std::time::Duration;

use crate::edge::{counted, scrape, serve};
use crate::support::*;

const DOCUMENT: &str = r##"
openapi: 3.0.3
info: { title: things, version: "1" }
paths:
  /thing:
    get:
      operationId: getThing
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: { $ref: "#/components/schemas/Thing" }
        "4XX":
          description: not found
          content:
            application/json:
              schema: { type: object, required: [error], properties: { error: { type: string } } }
components:
  schemas:
    Thing:
      type: object
      required: [id, name, secret]
      properties:
        id: { type: integer, readOnly: true }
        name: { type: string, nullable: true }
        secret: { type: string, writeOnly: true }
"##;

const MISMATCHES: &str = "schemagate_response_mismatches_total";
const UNCHECKED: &str = "schemagate_responses_unchecked_total";

/// An upstream answering `status` with `body` as JSON.
async fn answering(status: u16, body: &'static [u8]) -> Upstream {
    Upstream::start(Answer {
        status,
        body,
        ..Answer::default()
    })
    .await
}

/// One `openapi:` entry: the document under `/<name>`, on upstream `<name>`, with `extra`
/// lines (four spaces in).
fn entry(name: &str, extra: &str) -> String {
    format!(
        "  - file: things.yaml\n    name: {name}\n    upstream: {name}\n    path_prefix: /{name}\n{extra}"
    )
}

/// Waits (up to 10 s) until `metric` with `labels` counts `n` at the admin listener; the
/// check runs after the answer's end, off the client's path.
async fn wait_count(served: &Served, metric: &str, labels: &[(&str, &str)], n: f64) {
    for _ in 0..200 {
        if counted(&scrape(served).await, metric, labels) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{metric}{labels:?} never reached {n}: {:?}",
        counted(&scrape(served).await, metric, labels)
    );
}

#[tokio::test]
async fn responses_report_counts_and_logs_each_mismatch_and_never_changes_the_answer() {
    let conforming: &[u8] = br#"{"id":1,"name":null}"#;
    let wrong_type: &[u8] = br#"{"id":"one","name":"a"}"#;
    let missing: &[u8] = br#"{"name":"a"}"#;
    let undocumented: &[u8] = br#"{"id":1,"name":"a"}"#;
    let big: &[u8] =
        br#"{"id":1,"name":"a name longer than the cap of sixty-four bytes, delivered whole"}"#;
    let ok = answering(200, conforming).await;
    let wrong = answering(200, wrong_type).await;
    let miss = answering(200, missing).await;
    let undoc = answering(500, undocumented).await;
    let large = answering(200, big).await;
    let off = answering(200, wrong_type).await;
    // 404 falls under the documented "4XX"; a body declared JSON that is not.
    let not_found = answering(404, br#"{"error":404}"#).await;
    let broken = answering(200, br#"{"id":"#).await;
    let text = Upstream::start(Answer {
        body: b"not json at all",
        headers: vec![("content-type", "text/plain")],
        ..Answer::default()
    })
    .await;
    let upstreams = [
        ("ok", &ok),
        ("wrong", &wrong),
        ("miss", &miss),
        ("undoc", &undoc),
        ("large", &large),
        ("off", &off),
        ("text", &text),
        ("notfound", &not_found),
        ("broken", &broken),
    ];
    let mut config = String::from(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nupstreams:\n",
    );
    for (name, upstream) in &upstreams {
        config.push_str(&format!("  {name}: {{ url: '{}' }}\n", upstream.url()));
    }
    config.push_str("openapi:\n");
    for (name, _) in &upstreams {
        let extra = match *name {
            "off" => "",
            "large" => "    responses: report\n    limits: { response_check: 64B }\n",
            _ => "    responses: report\n",
        };
        config.push_str(&entry(name, extra));
    }
    let (_dir, gw) = serve(&config, &[("things.yaml", DOCUMENT)]);

    // The client gets the upstream's bytes, whatever the check finds.
    for (name, upstream) in &upstreams {
        let id = format!("req-{name}");
        let got = send(
            gw.addr,
            request(
                "GET",
                &format!("/{name}/thing"),
                &[("x-request-id", &id)],
                b"",
            ),
        )
        .await;
        assert_eq!(upstream.seen().len(), 1, "{name}");
        let expected: &[u8] = match *name {
            "ok" => conforming,
            "wrong" | "off" => wrong_type,
            "miss" => missing,
            "undoc" => undocumented,
            "large" => big,
            "notfound" => br#"{"error":404}"#,
            "broken" => br#"{"id":"#,
            _ => b"not json at all",
        };
        assert_eq!(&got.body[..], expected, "{name}");
        let status = match *name {
            "undoc" => 500,
            "notfound" => 404,
            _ => 200,
        };
        assert_eq!(got.status, status, "{name}");
    }

    wait_count(
        &gw,
        MISMATCHES,
        &[("route", "wrong.getThing"), ("field", "body.id")],
        1.0,
    )
    .await;
    wait_count(
        &gw,
        MISMATCHES,
        &[("route", "miss.getThing"), ("field", "body.id")],
        1.0,
    )
    .await;
    wait_count(
        &gw,
        MISMATCHES,
        &[("route", "undoc.getThing"), ("field", "status")],
        1.0,
    )
    .await;
    // A status under the documented "4XX" is checked against its schema; a body declared
    // JSON that does not parse is a mismatch of the field `body`.
    let not_found = [("route", "notfound.getThing"), ("field", "body.error")];
    wait_count(&gw, MISMATCHES, &not_found, 1.0).await;
    let broken = [("route", "broken.getThing"), ("field", "body")];
    wait_count(&gw, MISMATCHES, &broken, 1.0).await;
    wait_count(
        &gw,
        UNCHECKED,
        &[("route", "large.getThing"), ("reason", "too_large")],
        1.0,
    )
    .await;
    wait_count(
        &gw,
        UNCHECKED,
        &[("route", "text.getThing"), ("reason", "not_json")],
        1.0,
    )
    .await;
    let samples = scrape(&gw).await;
    // Exactly those: nothing for the conforming answer (without its `writeOnly` field; its
    // `readOnly` one stays required, so `miss` is counted), nothing on the route without
    // `responses: report`, one series per (route, field).
    assert_eq!(counted(&samples, MISMATCHES, &[]), 5.0);
    assert_eq!(
        counted(&samples, MISMATCHES, &[("route", "ok.getThing")]),
        0.0
    );
    assert_eq!(
        counted(&samples, MISMATCHES, &[("route", "off.getThing")]),
        0.0
    );
    assert_eq!(counted(&samples, UNCHECKED, &[]), 2.0);

    // Logged with route, status, field pointer and request id; never the values.
    let logged = gw.diagnostics();
    let line = |id: &str| {
        logged
            .lines()
            .find(|l| l.contains(id) && l.contains("does not match"))
            .unwrap_or_else(|| panic!("no mismatch line for {id}: {logged}"))
            .to_string()
    };
    let wrong_line = line("req-wrong");
    assert!(wrong_line.contains("wrong.getThing"), "{wrong_line}");
    assert!(wrong_line.contains("body.id at /id (type)"), "{wrong_line}");
    assert!(
        !wrong_line.contains("one"),
        "a value was logged: {wrong_line}"
    );
    let miss_line = line("req-miss");
    assert!(
        miss_line.contains("body.id") && miss_line.contains("required"),
        "{miss_line}"
    );
    let undoc_line = line("req-undoc");
    assert!(
        undoc_line.contains("500") && undoc_line.contains("status"),
        "{undoc_line}"
    );
    assert!(!line_exists(&logged, "req-ok"), "{logged}");
    assert!(!line_exists(&logged, "req-off"), "{logged}");
}

fn line_exists(logged: &str, id: &str) -> bool {
    logged
        .lines()
        .any(|l| l.contains(id) && l.contains("does not match"))
}

/// A hand-written route compares its 2xx answers with `schemas.response`; other statuses are
/// not compared (it documents only its success).
#[tokio::test]
async fn a_hand_written_route_compares_2xx_answers_with_its_response_schema() {
    let wrong = answering(201, br#"{"id":"x"}"#).await;
    let failing = answering(503, br#"{"anything":1}"#).await;
    let schema = r#"{"type":"object","required":["id"],"properties":{"id":{"type":"integer"}}}"#;
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nschema_dir: schemas\nupstreams:\n  wrong: {{ url: '{}' }}\n  failing: {{ url: '{}' }}\nroutes:\n  - {{ name: made, method: POST, path: /made, upstream: wrong, responses: report, schemas: {{ response: made.json }} }}\n  - {{ name: down, method: POST, path: /down, upstream: failing, responses: report, schemas: {{ response: made.json }} }}\n",
        wrong.url(),
        failing.url()
    );
    let (_dir, gw) = serve(&config, &[("schemas/made.json", schema)]);
    let got = send(gw.addr, request("POST", "/made", &[], b"")).await;
    assert_eq!((got.status, &got.body[..]), (201, &br#"{"id":"x"}"#[..]));
    let got = send(gw.addr, request("POST", "/down", &[], b"")).await;
    assert_eq!(
        (got.status, &got.body[..]),
        (503, &br#"{"anything":1}"#[..])
    );
    wait_count(
        &gw,
        MISMATCHES,
        &[("route", "made"), ("field", "body.id")],
        1.0,
    )
    .await;
    let samples = scrape(&gw).await;
    assert_eq!(counted(&samples, MISMATCHES, &[]), 1.0);
    assert_eq!(counted(&samples, UNCHECKED, &[]), 0.0);
}

/// Chunked answers (no `Content-Length`): the copy is kept as the chunks stream; one over the
/// cap is dropped as it passes and counted unchecked, and both reach the client whole.
#[tokio::test]
async fn chunked_answers_are_checked_as_they_stream_and_counted_unchecked_past_the_cap() {
    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n6\r\n{\"id\":\r\nf\r\n\"x\",\"name\":\"a\"}\r\n0\r\n\r\n";
    let whole: &[u8] = br#"{"id":"x","name":"a"}"#;
    let small = crate::faults::answers(CHUNKED, false).await;
    let capped = crate::faults::answers(CHUNKED, false).await;
    let mut config = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nupstreams:\n  small: {{ url: '{}' }}\n  capped: {{ url: '{}' }}\nopenapi:\n",
        small.url(),
        capped.url()
    );
    config.push_str(&entry("small", "    responses: report\n"));
    config.push_str(&entry(
        "capped",
        "    responses: report\n    limits: { response_check: 10B }\n",
    ));
    let (_dir, gw) = serve(&config, &[("things.yaml", DOCUMENT)]);
    for name in ["small", "capped"] {
        let got = send(gw.addr, request("GET", &format!("/{name}/thing"), &[], b"")).await;
        assert_eq!((got.status, &got.body[..]), (200, whole), "{name}");
    }
    wait_count(
        &gw,
        MISMATCHES,
        &[("route", "small.getThing"), ("field", "body.id")],
        1.0,
    )
    .await;
    wait_count(
        &gw,
        UNCHECKED,
        &[("route", "capped.getThing"), ("reason", "too_large")],
        1.0,
    )
    .await;
    let samples = scrape(&gw).await;
    assert_eq!(
        counted(&samples, MISMATCHES, &[("route", "capped.getThing")]),
        0.0
    );
    // `secret` is writeOnly: its absence is no mismatch; `id`'s type is the only one.
    assert_eq!(counted(&samples, MISMATCHES, &[]), 1.0);
}

/// A component shared by a strict operation's request body and its documented response:
/// strict mode closes the request's objects only, so an answer with a field the component
/// does not declare is no mismatch (JSON Schema allows it), while the same field in the
/// request is refused.
#[tokio::test]
async fn strict_requests_leave_the_documented_responses_open() {
    let document = r##"
openapi: 3.1.0
info: { title: things, version: "1" }
paths:
  /thing:
    post:
      operationId: putThing
      requestBody:
        content:
          application/json:
            schema: { $ref: "#/components/schemas/Thing" }
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: { $ref: "#/components/schemas/Thing" }
components:
  schemas:
    Thing:
      type: object
      properties:
        id: { type: integer }
        owner: { type: object, properties: { name: { type: string } } }
"##;
    // `id` is wrong, so the check is known to have run once its mismatch is counted;
    // `extra` and `owner.since` are fields Thing does not declare.
    let upstream = answering(
        200,
        br#"{"id":"x","extra":1,"owner":{"name":"a","since":2}}"#,
    )
    .await;
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nupstreams:\n  things: {{ url: '{}' }}\nopenapi:\n{}",
        upstream.url(),
        entry("things", "    strict: true\n    responses: report\n")
    )
    .replace("things.yaml", "strict.yaml");
    let (_dir, gw) = serve(&config, &[("strict.yaml", document)]);
    let post = |body: &'static [u8]| {
        send(
            gw.addr,
            request(
                "POST",
                "/things/thing",
                &[("content-type", "application/json")],
                body,
            ),
        )
    };
    let got = post(br#"{"id":1,"owner":{"name":"a","since":2}}"#).await;
    assert_eq!(got.status, 422);
    assert_eq!(got.json()["message"][0], "body.owner.since is not allowed");
    let got = post(br#"{"id":1,"owner":{"name":"a"}}"#).await;
    assert_eq!(got.status, 200, "{:?}", String::from_utf8_lossy(&got.body));
    let route = ("route", "things.putThing");
    wait_count(&gw, MISMATCHES, &[route, ("field", "body.id")], 1.0).await;
    let samples = scrape(&gw).await;
    assert_eq!(counted(&samples, MISMATCHES, &[route]), 1.0);
}
