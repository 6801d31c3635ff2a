//! API keys, tenants and per-tenant rate limits over real sockets, on a fake clock.

use std::time::Duration;

use governor::clock::FakeRelativeClock;
use schemagate::ratelimit::GatewayClock;

use crate::support::*;

fn fake_clock() -> (GatewayClock, FakeRelativeClock) {
    let fake = FakeRelativeClock::default();
    (GatewayClock::Fake(fake.clone()), fake)
}

const BODY_SCHEMA: &str = r#"{"type":"object","required":["n"],"properties":{"n":{"type":"integer","minimum":1},"locationId":{"type":"string"}}}"#;

fn limited(upstream: &str, route_extra: &str, top_extra: &str) -> String {
    format!(
        "{}{top_extra}",
        one_route(
            upstream,
            "POST",
            "/x",
            &format!("    schemas: {{ body: s.json }}\n{route_extra}")
        )
    )
}

async fn post(gw: &TestGateway, headers: &[(&str, &str)], body: &str) -> Got {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    send(gw.addr, request("POST", "/x", &all, body.as_bytes())).await
}

#[tokio::test]
async fn burst_is_admitted_then_429_with_retry_after_and_other_tenants_unaffected() {
    let upstream = Upstream::start(Answer::default()).await;
    let (clock, fake) = fake_clock();
    let yaml = limited(
        &upstream.url(),
        "    tenant: { from: header, name: X-Tenant }\n    rate_limit: { quota: 10/s, burst: 20 }\n",
        "",
    );
    let gw = TestGateway::start_with_clock(&yaml, &[("schemas/s.json", BODY_SCHEMA)], &clock).await;
    let mut admitted = 0;
    for i in 0..200 {
        let got = post(&gw, &[("x-tenant", "a")], r#"{"n":1}"#).await;
        match got.status {
            200 => {
                admitted += 1;
                assert_eq!(got.headers["ratelimit-limit"], "20");
                assert_eq!(
                    got.headers["ratelimit-remaining"],
                    (19 - i).to_string().as_str()
                );
            }
            429 => {
                assert_envelope(&got, 429, "Too Many Requests");
                assert_eq!(got.headers["retry-after"], "1");
                assert_eq!(got.headers["ratelimit-remaining"], "0");
                assert_eq!(got.headers["ratelimit-reset"], "2");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(admitted, 20);
    assert_eq!(
        upstream.seen().len(),
        20,
        "throttled requests never reach the upstream"
    );

    // Another tenant has its own bucket.
    assert_eq!(
        post(&gw, &[("x-tenant", "b")], r#"{"n":1}"#).await.status,
        200
    );
    // Time refills tenant a at 10/s.
    fake.advance(Duration::from_millis(500));
    let refilled = admitted_count(&gw, "a", 10).await;
    assert_eq!(refilled, 5);
}

async fn admitted_count(gw: &TestGateway, tenant: &str, n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        if post(gw, &[("x-tenant", tenant)], r#"{"n":1}"#).await.status == 200 {
            ok += 1;
        }
    }
    ok
}

#[tokio::test]
async fn tiers_ceiling_and_report_only() {
    let upstream = Upstream::start(Answer::default()).await;
    let (clock, _) = fake_clock();
    let yaml = limited(
        &upstream.url(),
        "    tenant: { from: header, name: X-Tenant }\n    rate_limit:\n      quota: 1/min\n      burst: 2\n      tiers: { gold: { quota: 1/min, burst: 5 } }\n",
        "",
    );
    let gw = TestGateway::start_with_clock(&yaml, &[("schemas/s.json", BODY_SCHEMA)], &clock).await;
    assert_eq!(admitted_count(&gw, "gold", 10).await, 5);
    assert_eq!(admitted_count(&gw, "plain", 10).await, 2);

    let report = limited(
        &upstream.url(),
        "    tenant: { from: header, name: X-Tenant }\n    rate_limit: { quota: 1/min, burst: 1, mode: report }\n",
        "",
    );
    let gw =
        TestGateway::start_with_clock(&report, &[("schemas/s.json", BODY_SCHEMA)], &clock).await;
    assert_eq!(
        admitted_count(&gw, "t", 5).await,
        5,
        "report-only forwards anyway"
    );
}

#[tokio::test]
async fn body_sourced_tenant_is_limited_before_schema_validation() {
    let upstream = Upstream::start(Answer::default()).await;
    let (clock, _) = fake_clock();
    let yaml = limited(
        &upstream.url(),
        "    tenant: { from: body, name: locationId }\n    rate_limit: { quota: 1/min, burst: 1 }\n",
        "",
    );
    let gw = TestGateway::start_with_clock(&yaml, &[("schemas/s.json", BODY_SCHEMA)], &clock).await;
    assert_eq!(
        post(&gw, &[], r#"{"n":1,"locationId":"loc"}"#).await.status,
        200
    );
    // Over the limit and invalid: 429 comes first.
    let got = post(&gw, &[], r#"{"n":0,"locationId":"loc"}"#).await;
    assert_envelope(&got, 429, "Too Many Requests");
    // Unparseable bodies are 400 before any tenant is known.
    assert_envelope(&post(&gw, &[], "{").await, 400, "Bad Request");
    // No tenant in the body: 400 naming the source.
    let got = post(&gw, &[], r#"{"n":1}"#).await;
    assert_envelope(&got, 400, "Bad Request");
    assert_eq!(
        got.json()["message"],
        "missing tenant: send the body field locationId"
    );
    // Another tenant, invalid body: 422.
    assert_envelope(
        &post(&gw, &[], r#"{"n":0,"locationId":"other"}"#).await,
        422,
        "Unprocessable Entity",
    );
}

#[tokio::test]
async fn missing_tenant_may_share_a_bucket() {
    let upstream = Upstream::start(Answer::default()).await;
    let (clock, _) = fake_clock();
    let yaml = limited(
        &upstream.url(),
        "    tenant: { from: query, name: locationId, missing: shared }\n    rate_limit: { quota: 1/min, burst: 2 }\n",
        "",
    );
    let gw = TestGateway::start_with_clock(&yaml, &[("schemas/s.json", BODY_SCHEMA)], &clock).await;
    let statuses: Vec<u16> = [
        post(&gw, &[], r#"{"n":1}"#).await.status,
        post(&gw, &[], r#"{"n":1}"#).await.status,
        post(&gw, &[], r#"{"n":1}"#).await.status,
    ]
    .to_vec();
    assert_eq!(statuses, [200, 200, 429]);
}

#[tokio::test]
async fn api_keys_are_hashed_and_bound_to_tenants() {
    let upstream = Upstream::start(Answer::default()).await;
    let hash = schemagate::auth::hash_key(b"acme-secret");
    let keys = format!("api_keys:\n  - {{ name: acme, sha256: {hash}, tenants: ['7', '8'] }}\n");
    let yaml = limited(
        &upstream.url(),
        "    auth: api_key\n    tenant: { from: header, name: X-Tenant }\n    rate_limit: { quota: 100/s }\n",
        &keys,
    );
    assert!(!yaml.contains("acme-secret"), "config holds only the hash");
    let gw = TestGateway::start(&yaml, &[("schemas/s.json", BODY_SCHEMA)]).await;
    let ok = post(
        &gw,
        &[("authorization", "Bearer acme-secret"), ("x-tenant", "8")],
        r#"{"n":1}"#,
    )
    .await;
    assert_eq!(ok.status, 200);
    let got = post(
        &gw,
        &[("authorization", "Bearer acme-secret"), ("x-tenant", "9")],
        r#"{"n":1}"#,
    )
    .await;
    assert_envelope(&got, 403, "Forbidden");
    let got = post(
        &gw,
        &[("authorization", "Bearer other"), ("x-tenant", "7")],
        r#"{"n":1}"#,
    )
    .await;
    assert_envelope(&got, 401, "Unauthorized");
    assert!(
        !String::from_utf8_lossy(&got.body).contains("other"),
        "never echoes the key"
    );
    let got = post(&gw, &[("x-tenant", "7")], r#"{"n":1}"#).await;
    assert_envelope(&got, 401, "Unauthorized");
    // Two different tenant headers: 400, never "pick one".
    let got = post(
        &gw,
        &[
            ("authorization", "Bearer acme-secret"),
            ("x-tenant", "7"),
            ("x-tenant", "9"),
        ],
        r#"{"n":1}"#,
    )
    .await;
    assert_envelope(&got, 400, "Bad Request");
    assert_eq!(upstream.seen().len(), 1);
}

#[test]
fn tenant_and_limit_config_errors_are_located() {
    let cases = [
        (
            "    tenant: { from: header }\n",
            "routes[0].tenant",
            "needs `name`",
        ),
        (
            "    tenant: { from: key }\n",
            "routes[0].tenant",
            "needs `auth: api_key`",
        ),
        (
            "    tenant: { from: path, name: id }\n",
            "routes[0].tenant",
            "has no parameter {id}",
        ),
        (
            "    rate_limit: { quota: lots }\n",
            "routes[0].rate_limit",
            "invalid quota",
        ),
        (
            "    rate_limit: { quota: 1/s, tiers: { a: { quota: 0/s } } }\n",
            "routes[0].rate_limit",
            "tiers.a",
        ),
        (
            "    auth: api_key\n",
            "routes[0].auth",
            "needs at least one entry in `api_keys`",
        ),
    ];
    for (extra, key, fragment) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("schemas")).unwrap();
        std::fs::write(dir.path().join("schemas/s.json"), BODY_SCHEMA).unwrap();
        std::fs::write(
            dir.path().join("gateway.yaml"),
            limited("http://127.0.0.1:1", extra, ""),
        )
        .unwrap();
        let errors = schemagate::Snapshot::load(&dir.path().join("gateway.yaml")).expect_err(extra);
        assert_eq!(errors[0].key.as_deref(), Some(key), "{extra}: {errors:?}");
        assert!(
            errors[0].message.contains(fragment),
            "{extra}: {}",
            errors[0]
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}api_keys:\n  - {{ name: k, sha256: plaintext-key, tenants: ['*'] }}\n",
        one_route("http://127.0.0.1:1", "GET", "/x", "")
    );
    std::fs::write(dir.path().join("gateway.yaml"), yaml).unwrap();
    let errors = schemagate::Snapshot::load(&dir.path().join("gateway.yaml")).unwrap_err();
    assert_eq!(errors[0].key.as_deref(), Some("api_keys[0].sha256"));
    assert!(errors[0].message.contains("never the key itself"));
}
