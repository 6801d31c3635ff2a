//! Hot reload over real files and sockets: new routes and schemas take effect, broken ones
//! are refused while the old snapshot keeps answering, and nothing is dropped under load.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::*;

const SCHEMA_MIN_1: &str =
    r#"{"type":"object","required":["n"],"properties":{"n":{"type":"integer","minimum":1}}}"#;
const SCHEMA_MIN_5: &str =
    r#"{"type":"object","required":["n"],"properties":{"n":{"type":"integer","minimum":5}}}"#;

fn config(upstream: &str, extra_routes: &str) -> String {
    format!(
        r#"listeners:
  - address: 127.0.0.1:0
upstreams:
  backend: {{ url: '{upstream}' }}
routes:
  - name: r.x
    method: POST
    path: /x
    upstream: backend
    schemas: {{ body: s.json }}
    rate_limit: {{ quota: 1/min, burst: 3 }}
{extra_routes}"#
    )
}

/// Writes `text` to `path` the way editors do: a temp file renamed over the original.
fn write_by_rename(path: &Path, text: &str) {
    let temp = path.with_extension("tmp-write");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

async fn post_n(gw: &TestGateway, n: i64) -> u16 {
    let body = format!(r#"{{"n":{n}}}"#);
    send(
        gw.addr,
        request(
            "POST",
            "/x",
            &[("content-type", "application/json")],
            body.as_bytes(),
        ),
    )
    .await
    .status
}

#[tokio::test]
async fn new_route_and_tightened_schema_take_effect_after_a_write() {
    let upstream = Upstream::start(Answer::default()).await;
    let files = [("schemas/s.json", SCHEMA_MIN_1)];
    let (gw, reload) = TestGateway::start_reloadable(&config(&upstream.url(), ""), &files).await;
    assert_eq!(post_n(&gw, 2).await, 200);
    assert_eq!(
        send(gw.addr, request("GET", "/y", &[], b"")).await.status,
        404
    );

    std::fs::write(gw.dir().join("schemas/s.json"), SCHEMA_MIN_5).unwrap();
    reload.wait_generation(2).await;
    assert_eq!(post_n(&gw, 2).await, 422, "the tightened schema is live");

    let extra = "  - { name: r.y, method: GET, path: /y, upstream: backend }\n";
    write_by_rename(
        &gw.dir().join("gateway.yaml"),
        &config(&upstream.url(), extra),
    );
    reload.wait_generation(3).await;
    assert_eq!(
        send(gw.addr, request("GET", "/y", &[], b"")).await.status,
        200,
        "the new route is live"
    );
    assert_eq!(
        reload.generation(),
        3,
        "one generation per change: duplicate events do not count"
    );
    assert!(reload.reloader.status().errors.is_empty());
}

#[tokio::test]
async fn reading_the_watched_files_does_not_reload() {
    let upstream = Upstream::start(Answer::default()).await;
    let files = [("schemas/s.json", SCHEMA_MIN_1)];
    let (gw, reload) = TestGateway::start_reloadable(&config(&upstream.url(), ""), &files).await;
    let attempts = reload.reloader.attempts();
    // Reading is what a reload itself does to every watched file: were it taken for a change,
    // each reload would trigger the next, forever.
    for _ in 0..3 {
        std::fs::read(gw.dir().join("gateway.yaml")).unwrap();
        std::fs::read(gw.dir().join("schemas/s.json")).unwrap();
    }
    // Nothing to wait for but time: ten debounce intervals.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(*attempts.borrow(), 0, "a read triggered a reload");
    // A write still does. (One write may reach the watcher as events far enough apart, on a
    // busy machine, to make two reloads; what must not happen is reloads going on after it.)
    write_by_rename(&gw.dir().join("schemas/s.json"), SCHEMA_MIN_5);
    reload.wait_generation(2).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let settled = *attempts.borrow();
    assert!(
        (1..=2).contains(&settled),
        "{settled} reloads for one write"
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(*attempts.borrow(), settled, "the reload triggered another");
    assert_eq!(post_n(&gw, 2).await, 422);
}

#[tokio::test]
async fn broken_config_schema_and_remote_ref_are_refused_and_the_old_snapshot_serves() {
    let upstream = Upstream::start(Answer::default()).await;
    let files = [("schemas/s.json", SCHEMA_MIN_1)];
    let good = config(&upstream.url(), "").replace("burst: 3", "burst: 1000000");
    let (gw, reload) = TestGateway::start_reloadable(&good, &files).await;
    let config_path = gw.dir().join("gateway.yaml");
    let schema_path = gw.dir().join("schemas/s.json");

    let breakages: [(&Path, String, &str); 3] = [
        (
            &config_path,
            good.replace("routes:", "routes:\n  - oops: [\n"),
            "gateway.yaml",
        ),
        (&schema_path, "{\"type\": ".to_string(), "s.json"),
        (
            &schema_path,
            r#"{"properties":{"n":{"$ref":"https://example.com/n.json"}}}"#.to_string(),
            "https://example.com/n.json",
        ),
    ];
    for (attempt, (path, text, fragment)) in breakages.into_iter().enumerate() {
        let generation = reload.generation();
        // Written whole (by rename): a reload that caught a half-written file would fail for
        // another reason than the one under test.
        write_by_rename(path, &text);
        let names_it = || {
            let errors = reload.reloader.status().errors;
            errors.iter().any(|e| e.contains(fragment))
        };
        reload.wait_until(|| async { names_it() }).await;
        assert_eq!(
            reload.generation(),
            generation,
            "nothing was swapped in ({attempt})"
        );
        assert_eq!(
            post_n(&gw, 2).await,
            200,
            "the old snapshot keeps answering"
        );
        assert_eq!(post_n(&gw, 0).await, 422);
        // Repair (with a new comment, so it is a change) before the next breakage.
        std::fs::write(&config_path, format!("{good}# repair {attempt}\n")).unwrap();
        std::fs::write(&schema_path, SCHEMA_MIN_1).unwrap();
        reload
            .wait_until(|| async { reload.reloader.status().errors.is_empty() })
            .await;
    }
    assert!(reload.reloader.failed.load(Ordering::Relaxed) >= 3);
}

#[tokio::test]
async fn rate_limit_state_survives_a_reload_when_its_quota_is_unchanged() {
    let upstream = Upstream::start(Answer::default()).await;
    let files = [("schemas/s.json", SCHEMA_MIN_1)];
    let (gw, reload) = TestGateway::start_reloadable(&config(&upstream.url(), ""), &files).await;
    for _ in 0..3 {
        assert_eq!(post_n(&gw, 1).await, 200);
    }
    assert_eq!(post_n(&gw, 1).await, 429);
    let extra = "  - { name: r.y, method: GET, path: /y, upstream: backend }\n";
    std::fs::write(
        gw.dir().join("gateway.yaml"),
        config(&upstream.url(), extra),
    )
    .unwrap();
    reload.wait_generation(2).await;
    assert_eq!(
        post_n(&gw, 1).await,
        429,
        "the bucket was carried over, not refilled"
    );

    // A changed quota starts a fresh bucket.
    let changed = config(&upstream.url(), extra).replace("burst: 3", "burst: 4");
    std::fs::write(gw.dir().join("gateway.yaml"), changed).unwrap();
    reload.wait_generation(3).await;
    assert_eq!(post_n(&gw, 1).await, 200);
}

#[tokio::test]
async fn reload_under_load_drops_nothing_and_counts_valid_rewrites() {
    let upstream = Upstream::start(Answer::default()).await;
    let files = [("schemas/s.json", SCHEMA_MIN_1)];
    let base = config(&upstream.url(), "").replace("burst: 3", "burst: 1000000");
    let (gw, reload) = TestGateway::start_reloadable(&base, &files).await;
    let addr = gw.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        clients.push(tokio::spawn(async move {
            // Bounded: stops when told, and after 20 000 requests whatever happens.
            let mut failures = Vec::new();
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let got = send(
                    addr,
                    request(
                        "POST",
                        "/x",
                        &[("content-type", "application/json")],
                        br#"{"n":3}"#,
                    ),
                )
                .await;
                if got.status != 200 {
                    failures.push(got.status);
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }
    let path = gw.dir().join("gateway.yaml");
    let mut valid = 0;
    for i in 0..50 {
        let failed_before = reload.reloader.failed.load(Ordering::Relaxed);
        if i % 2 == 0 {
            // Each valid rewrite differs, and half of them go through a rename.
            let text = format!("{base}# rewrite {i}\n");
            if i % 4 == 0 {
                write_by_rename(&path, &text)
            } else {
                std::fs::write(&path, text).unwrap()
            }
            valid += 1;
            reload.wait_generation(1 + valid).await;
        } else {
            std::fs::write(&path, format!("{base}  - this is: [not valid\n")).unwrap();
            reload.wait_failures(failed_before + 1).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let failures = client.await.unwrap();
        assert!(
            failures.is_empty(),
            "failed requests during reloads: {failures:?}"
        );
    }
    assert!(sent.load(Ordering::Relaxed) > 50, "the load ran throughout");
    assert_eq!(
        reload.generation(),
        1 + valid,
        "one generation per valid rewrite"
    );
    // A write seen as two events (truncate, then data) may be read half-written once more;
    // that is refused like any broken file and never swapped in.
    assert!(reload.reloader.failed.load(Ordering::Relaxed) >= 25);
}
