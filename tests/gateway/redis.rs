//! Rate limits shared through Redis, through the real binary: several `schemagate` processes
//! on one `redis-server` (accuracy), and Redis killed and restarted under traffic (each
//! `on_error` policy, then shared limiting again).
//!
//! `#[ignore]`d like `tests/redis_limits.rs`: they need Debian's `redis-server`, which
//! `./test.sh` installs before running them with `--include-ignored`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::redis_server::RedisServer;
use crate::support::*;

/// One route, `GET /x`, limited per `X-Tenant` to 20/s with a burst of 10 in the `redis:`
/// store at `url`, with `on_error` and `timeout`.
fn config(upstream: &str, url: &str, on_error: &str, timeout: &str) -> String {
    format!(
        r#"listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
upstreams:
  backend: {{ url: "{upstream}" }}
redis:
  url: {url}
  timeout: {timeout}
  on_error: {on_error}
routes:
  - name: shared
    method: GET
    path: /x
    upstream: backend
    tenant: {{ from: header, name: X-Tenant }}
    rate_limit: {{ quota: 20/s, burst: 10, store: redis }}
"#
    )
}

/// A gateway process on `config`, with the temp dir that holds its file.
fn serve(config: &str) -> (tempfile::TempDir, Served) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), config).unwrap();
    let served = Served::start(dir.path(), "gateway.yaml", &[]);
    (dir, served)
}

async fn get(addr: SocketAddr, tenant: &str) -> Got {
    send(addr, request("GET", "/x", &[("x-tenant", tenant)], b"")).await
}

/// 30 requests from `tenant` at once; their answers and the slowest one's time.
async fn burst(addr: SocketAddr, tenant: &'static str) -> (Vec<Got>, Duration) {
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            tokio::spawn(async move {
                let at = Instant::now();
                let got = get(addr, tenant).await;
                (got, at.elapsed())
            })
        })
        .collect();
    let mut answers = Vec::new();
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let (got, took) = task.await.unwrap();
        slowest = slowest.max(took);
        answers.push(got);
    }
    (answers, slowest)
}

/// `schemagate_ratelimit_fallback{route="shared"}` of `gateway`, if it has that series.
async fn fallback(gateway: &Served) -> Option<f64> {
    let metrics = send(gateway.admin, request("GET", "/metrics", &[], b"")).await;
    String::from_utf8_lossy(&metrics.body)
        .lines()
        .find_map(|l| {
            l.strip_prefix("schemagate_ratelimit_fallback{route=\"shared\"} ")?
                .trim()
                .parse()
                .ok()
        })
}

/// A 429 as the local limiter gives it: envelope, `Retry-After`, `RateLimit-*`.
fn assert_throttled(got: &Got) {
    assert_envelope(got, 429, "Too Many Requests");
    assert!(got.headers.contains_key("retry-after"), "{:?}", got.headers);
    assert_eq!(got.headers["ratelimit-limit"], "10");
    assert_eq!(got.headers["ratelimit-remaining"], "0");
}

/// How closely a shared quota holds: one tenant driven through all of `gateways` at three
/// times its quota (50/s, burst 20) for 10 s, each gateway by its own task, is admitted
/// `burst + quota × elapsed` ± 2 %, not once per gateway; meanwhile a second tenant on the same
/// route, below its quota, is never throttled. Every answer is a 200 or the limiter's 429
/// (`deny`: a check Redis does not answer would be a 503 and fail the test).
async fn assert_accurate(gateways: &[SocketAddr]) {
    let (quota, burst) = (50.0, 20.0);
    let each = Duration::from_secs_f64(gateways.len() as f64 / (3.0 * quota));
    let run = Duration::from_secs(10);
    let started = Instant::now();
    let drivers: Vec<_> = gateways
        .iter()
        .map(|&gateway| {
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(each);
                let (mut first, mut last) = (None, None);
                let (mut admitted, mut sent) = (0u32, 0u32);
                while started.elapsed() < run {
                    ticks.tick().await;
                    let at = Instant::now();
                    first.get_or_insert(at);
                    last = Some(at);
                    let got = get(gateway, "acme").await;
                    sent += 1;
                    match got.status {
                        200 => admitted += 1,
                        429 => {
                            assert_envelope(&got, 429, "Too Many Requests");
                            assert!(got.headers.contains_key("retry-after"));
                            assert_eq!(got.headers["ratelimit-limit"], "20");
                            assert_eq!(got.headers["ratelimit-remaining"], "0");
                        }
                        other => panic!("status {other}: {:?}", got.body),
                    }
                }
                (first, last, admitted, sent)
            })
        })
        .collect();
    // The second tenant: 10/s, round the gateways, for the same 10 s.
    let quiet = tokio::spawn({
        let gateways = gateways.to_vec();
        async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(100));
            let mut sent = 0;
            while started.elapsed() < run {
                ticks.tick().await;
                let got = get(gateways[sent % gateways.len()], "globex").await;
                assert_eq!(got.status, 200, "the second tenant, request {sent}");
                sent += 1;
            }
            sent
        }
    });
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    let (mut admitted, mut sent) = (0, 0);
    for driver in drivers {
        let (f, l, a, s) = driver.await.unwrap();
        first = match (first, f) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last = last.max(l);
        admitted += a;
        sent += s;
    }
    let quiet = quiet.await.unwrap();
    let elapsed = last.unwrap().duration_since(first.unwrap()).as_secs_f64();
    let expected = burst + quota * elapsed;
    eprintln!(
        "{} gateways: {sent} sent in {elapsed:.3} s, {admitted} admitted; expected {expected:.1} \
         (each gateway alone: about {:.1}); the second tenant: {quiet} of {quiet} admitted",
        gateways.len(),
        gateways.len() as f64 * expected
    );
    let admitted = f64::from(admitted);
    assert!(
        (admitted - expected).abs() <= 0.02 * expected,
        "admitted {admitted}, expected {expected:.1} ± 2 %"
    );
    assert!(
        f64::from(sent) > 2.5 * expected,
        "not driven hard enough: {sent} sent"
    );
}

/// A config for [`assert_accurate`]: the route's quota 50/s with a burst of 20.
fn accuracy_config(upstream: &str, url: &str) -> String {
    config(upstream, url, "deny", "1s").replace("quota: 20/s, burst: 10", "quota: 50/s, burst: 20")
}

/// (a) Three gateways, one Redis: accurate to 2 % (see [`assert_accurate`]); `/status` and
/// `/metrics` show the store working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: ./test.sh installs it and runs ignored tests"]
async fn three_gateways_hold_one_tenant_to_its_quota() {
    let redis = RedisServer::start();
    let upstream = Upstream::start(Answer::default()).await;
    let config = accuracy_config(&upstream.url(), &redis.url());
    let (_d1, one) = serve(&config);
    let (_d2, two) = serve(&config);
    let (_d3, three) = serve(&config);
    assert_accurate(&[one.addr, two.addr, three.addr]).await;

    // `/status` says where the store points (never the URL's credentials) and that it works;
    // `/metrics` has each call's duration.
    let status = one.status().await;
    assert_eq!(
        status["redis"]["address"],
        format!("127.0.0.1:{}", redis.port),
        "{status}"
    );
    assert_eq!(status["redis"]["connected"], true, "{status}");
    assert_eq!(status["redis"]["last_check"], "ok", "{status}");
    assert_eq!(status["redis"]["on_error"], "deny", "{status}");
    let metrics = send(one.admin, request("GET", "/metrics", &[], b"")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    let count = text
        .lines()
        .find_map(|l| l.strip_prefix("schemagate_redis_duration_seconds_count "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .unwrap_or_default();
    assert!(count >= 400.0, "{count} durations on one of three gateways");
}

/// (b) Redis killed under traffic: `allow` forwards every request, `deny` answers 503 with
/// `Retry-After`, `local` applies the local quota, none waits past `timeout` (+200 ms); a
/// gateway started meanwhile serves too. Redis back on the same port: within 5 s a tenant
/// exhausted through one gateway is throttled by Redis through another, and the late gateway
/// has connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: ./test.sh installs it and runs ignored tests"]
async fn redis_killed_each_policy_holds_then_sharing_resumes() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let upstream = Upstream::start(Answer::default()).await;
    let timeout = Duration::from_millis(50);
    let bound = timeout + Duration::from_millis(200);
    let (_da, allow) = serve(&config(&upstream.url(), &redis.url(), "allow", "50ms"));
    let (_dd, deny) = serve(&config(&upstream.url(), &redis.url(), "deny", "50ms"));
    let (_dl, local) = serve(&config(&upstream.url(), &redis.url(), "local", "50ms"));
    // Each connects on its first request; all answer from Redis.
    for gateway in [&allow, &deny, &local] {
        let got = get(gateway.addr, "warm").await;
        assert_eq!(got.status, 200);
        assert!(got.headers.contains_key("ratelimit-limit"));
    }

    redis.kill();
    let killed = Instant::now();
    // 30 requests at once through each gateway: traffic, not one request at a time (which
    // at 50 ms each would stay within the local quota).
    let (allowed, slow_allow) = burst(allow.addr, "a").await;
    for got in &allowed {
        assert_eq!(got.status, 200);
        assert!(!got.headers.contains_key("ratelimit-limit"));
    }
    let (denied, slow_deny) = burst(deny.addr, "d").await;
    for got in &denied {
        assert_envelope(got, 503, "Service Unavailable");
        assert_eq!(got.headers["retry-after"], "1");
    }
    let (locally, slow_local) = burst(local.addr, "l").await;
    let ok = locally.iter().filter(|g| g.status == 200).count();
    for got in locally.iter().filter(|g| g.status != 200) {
        assert_throttled(got);
    }
    // A gateway started while Redis is down: it serves (by `on_error`), connecting later.
    let (_dn, late) = serve(&config(&upstream.url(), &redis.url(), "allow", "50ms"));
    let (started_late, slow_late) = burst(late.addr, "n").await;
    assert!(started_late.iter().all(|g| g.status == 200));
    let slowest = slow_allow.max(slow_deny).max(slow_local).max(slow_late);
    eprintln!(
        "redis down: slowest answer {slowest:?} (allow {slow_allow:?}, deny {slow_deny:?}, \
         local {slow_local:?}; timeout {timeout:?}); local: {ok} of 30 admitted"
    );
    assert!(
        slowest <= bound,
        "an answer took {slowest:?}, over {bound:?}"
    );
    assert!((10..=13).contains(&ok), "local admitted {ok} of 30");

    // Down longer than the connection manager's own reconnection attempts (about 2 s), so
    // that requests must start it reconnecting again.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(killed.elapsed())).await;
    for gateway in [&allow, &late] {
        assert_eq!(get(gateway.addr, "still-down").await.status, 200);
    }
    // `/status` shows the store failing.
    let status = allow.status().await;
    let last = status["redis"]["last_check"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(last == "timeout" || last == "redis", "{status}");
    assert_eq!(
        fallback(&allow).await,
        Some(1.0),
        "the route is on its fallback"
    );
    let _redis = RedisServer::start_on(port);
    let back = Instant::now();
    loop {
        // Exhausted through `deny` (only Redis admits there), then asked through `allow`
        // (only Redis throttles there).
        for _ in 0..11 {
            get(deny.addr, "back").await;
        }
        let got = get(allow.addr, "back").await;
        if got.status == 429 {
            assert_throttled(&got);
            break;
        }
        assert_eq!(got.status, 200);
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "shared limiting did not resume within 5 s of Redis coming back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The gateway that never reached Redis connects now, on a later request.
    loop {
        let got = get(late.addr, "n2").await;
        assert_eq!(got.status, 200);
        if got.headers.contains_key("ratelimit-limit") {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "a gateway started without Redis did not connect within 5 s of it coming up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "redis back: a tenant exhausted through one gateway is throttled by another after {:?}",
        back.elapsed()
    );

    assert_eq!(
        fallback(&allow).await,
        Some(0.0),
        "the route is back on Redis"
    );
    // Every call and every error was counted.
    let metrics = send(allow.admin, request("GET", "/metrics", &[], b"")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("schemagate_redis_calls_total"), "{text}");
    assert!(text.contains("schemagate_redis_errors_total{"), "{text}");
}

/// `redis.password_file`: the password comes from a file next to the config (its trailing
/// newline ignored), never from the URL; a new password in the file is a reload, and a new
/// connection with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: ./test.sh installs it and runs ignored tests"]
async fn the_password_comes_from_password_file_and_reloads() {
    let redis = RedisServer::start();
    assert_eq!(
        redis.commands(&[&["CONFIG", "SET", "requirepass", "pw-alpha-1"]]),
        ["+OK"]
    );
    let upstream = Upstream::start(Answer::default()).await;
    // `deny`: a request that Redis does not answer (wrong password) is a 503, not a silent
    // local admission.
    let config = config(&upstream.url(), &redis.url(), "deny", "1s").replace(
        "  on_error: deny\n",
        "  on_error: deny\n  password_file: redis.pass\n",
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), &config).unwrap();
    std::fs::write(dir.path().join("redis.pass"), "pw-alpha-1\n").unwrap();
    let served = Served::start(dir.path(), "gateway.yaml", &[]);

    let got = get(served.addr, "acme").await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(
        got.headers["ratelimit-limit"], "10",
        "limited through Redis"
    );

    // The password changes on the server and in the file: the gateway reloads and reconnects.
    assert_eq!(
        redis.commands(&[
            &["AUTH", "pw-alpha-1"],
            &["CONFIG", "SET", "requirepass", "pw-beta-2"]
        ]),
        ["+OK", "+OK"]
    );
    std::fs::write(dir.path().join("redis.pass"), "pw-beta-2\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while served.generation().await < 2 {
        assert!(
            Instant::now() < deadline,
            "the password file change was not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = get(served.addr, "acme").await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    // `deny` makes an unanswered check a 503: this 200 was decided by Redis, with the new
    // password.
    assert_eq!(
        got.headers["ratelimit-limit"], "10",
        "limited through Redis"
    );
    let status = served.status().await;
    assert!(
        !status.to_string().contains("pw-beta-2") && !status.to_string().contains("pw-alpha-1"),
        "/status shows no password: {status}"
    );
}

/// `tiers`, `ceiling` and `mode: report` with `store: redis` answer as with `store: local`:
/// the same sequence of requests gets the same statuses and `RateLimit-*` headers from one
/// gateway counting alone and from two gateways sharing Redis (taking turns).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: ./test.sh installs it and runs ignored tests"]
async fn tiers_ceiling_and_report_answer_as_the_local_limiter() {
    let redis = RedisServer::start();
    let upstream = Upstream::start(Answer::default()).await;
    // Per minute, so that nothing refills while the test runs: `gold` has a burst of 5,
    // everyone else 2, and all tenants together 8 (`ceiling`). `/r` only reports.
    let config = |store: &str| {
        format!(
            r#"listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
upstreams:
  backend: {{ url: "{upstream}" }}
redis:
  url: {redis}
  timeout: 1s
  on_error: deny
routes:
  - name: tiered
    method: GET
    path: /x
    upstream: backend
    tenant: {{ from: header, name: X-Tenant }}
    rate_limit:
      quota: 1/min
      burst: 2
      store: {store}
      tiers: {{ gold: {{ quota: 1/min, burst: 5 }} }}
      ceiling: 8/min
  - name: reported
    method: GET
    path: /r
    upstream: backend
    tenant: {{ from: header, name: X-Tenant }}
    rate_limit: {{ quota: 1/min, burst: 1, store: {store}, mode: report }}
"#,
            upstream = upstream.url(),
            redis = redis.url(),
        )
    };
    let sequence: Vec<(&str, &str)> = [
        ("/x", "gold"),
        ("/x", "a"),
        ("/x", "gold"),
        ("/x", "a"),
        ("/x", "a"),
        ("/x", "gold"),
        ("/x", "gold"),
        ("/x", "gold"),
        ("/x", "gold"),
        ("/x", "b"),
        ("/x", "b"),
        ("/x", "c"),
        ("/r", "a"),
        ("/r", "a"),
        ("/r", "a"),
    ]
    .to_vec();
    let answers = |gateways: Vec<SocketAddr>| {
        let sequence = sequence.clone();
        async move {
            let mut answers = Vec::new();
            for (i, (path, tenant)) in sequence.iter().enumerate() {
                let got = send(
                    gateways[i % gateways.len()],
                    request("GET", path, &[("x-tenant", tenant)], b""),
                )
                .await;
                let header = |name: &str| {
                    got.headers
                        .get(name)
                        .map_or("-".to_string(), |v| v.to_str().unwrap_or("?").to_string())
                };
                if got.status == 429 {
                    assert_envelope(&got, 429, "Too Many Requests");
                    assert!(got.headers.contains_key("retry-after"));
                }
                answers.push(format!(
                    "{path} {tenant}: {} limit {} remaining {}",
                    got.status,
                    header("ratelimit-limit"),
                    header("ratelimit-remaining")
                ));
            }
            answers
        }
    };
    let (_dl, local) = serve(&config("local"));
    let expected = answers(vec![local.addr]).await;
    let (_d1, one) = serve(&config("redis"));
    let (_d2, two) = serve(&config("redis"));
    let shared = answers(vec![one.addr, two.addr]).await;
    assert_eq!(shared, expected);
    // What the local limiter answers, spelled out, so that the comparison cannot pass on two
    // equally wrong sides: gold's own burst of 5, `a`'s 2, then the ceiling of 8 stops `b`'s
    // second request and `c`'s first; report mode forwards what it would have throttled.
    let statuses: Vec<&str> = expected
        .iter()
        .map(|a| a.split(' ').nth(2).unwrap_or("?"))
        .collect();
    assert_eq!(
        statuses,
        [
            "200", "200", "200", "200", "429", "200", "200", "200", "429", "200", "429", "429",
            "200", "200", "200"
        ],
        "{expected:#?}"
    );
    assert!(
        expected[10].ends_with("limit 8 remaining 0"),
        "{expected:#?}"
    );
    assert!(
        expected[13].ends_with("limit 1 remaining 0"),
        "{expected:#?}"
    );
}

/// The dashboard shows the Redis store: where it points, that it is connected and answering,
/// and then, with Redis gone, the route on its fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server and chromium: ./test.sh installs them and runs ignored tests"]
async fn the_dashboard_shows_redis_and_routes_on_fallback() {
    let mut redis = RedisServer::start();
    let upstream = Upstream::start(Answer::default()).await;
    let (_d, gateway) = serve(&config(&upstream.url(), &redis.url(), "local", "50ms"));
    assert_eq!(get(gateway.addr, "acme").await.status, 200);
    let (dom, log) = render_in_chromium(gateway.admin).await;
    assert!(!log.contains("Uncaught"), "console errors:\n{log}");
    let address = format!("127.0.0.1:{}", redis.port);
    let row = |dom: &str| {
        let table = dom.split("id=\"redis\"").nth(1).unwrap_or_default();
        table
            .split("</table>")
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let up = row(&dom);
    assert!(up.contains(&address), "{up}");
    assert!(up.contains(">yes<") && up.contains(">ok<"), "{up}");
    assert!(up.contains("<td>none</td>"), "no route on fallback: {up}");

    redis.kill();
    assert_eq!(
        get(gateway.addr, "acme").await.status,
        200,
        "on_error: local"
    );
    let (dom, _) = render_in_chromium(gateway.admin).await;
    let down = row(&dom);
    assert!(
        down.contains(">shared<"),
        "the route on its fallback: {down}"
    );
    assert!(!down.contains(">ok<"), "{down}");
}

/// `rediss://`: the gateway reaches Redis over TLS (rustls), trusting the CA in `redis.tls.ca`;
/// without it (the system's roots) the same server is not trusted, and `deny` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: ./test.sh installs it and runs ignored tests"]
async fn rediss_verifies_the_server_against_the_configured_ca() {
    let pki = crate::tls::Pki::new("redis test CA");
    let leaf = pki.server(&["127.0.0.1"]);
    let certs = tempfile::tempdir().unwrap();
    std::fs::write(certs.path().join("redis.pem"), &leaf.cert).unwrap();
    std::fs::write(certs.path().join("redis.key"), &leaf.key).unwrap();
    let redis = RedisServer::start_tls(
        &certs.path().join("redis.pem"),
        &certs.path().join("redis.key"),
    );
    let upstream = Upstream::start(Answer::default()).await;
    let plain = config(&upstream.url(), &redis.tls_url(), "deny", "1s");
    let trusted = plain.replace(
        "  on_error: deny\n",
        "  on_error: deny\n  tls: { ca: ca.pem }\n",
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), &trusted).unwrap();
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
    let gateway = Served::start(dir.path(), "gateway.yaml", &[]);
    for remaining in ["9", "8"] {
        let got = get(gateway.addr, "acme").await;
        assert_eq!(got.status, 200, "{:?}", got.body);
        assert_eq!(got.headers["ratelimit-remaining"], remaining);
    }
    // With `deny`, a count going down is Redis answering: over TLS, the only port it was given.

    // The system's roots do not know the test CA: no answer from Redis, so `deny` says 503.
    let (_d, untrusting) = serve(&plain);
    let got = get(untrusting.addr, "acme").await;
    assert_envelope(&got, 503, "Service Unavailable");
    let status = untrusting.status().await;
    // Refused at the handshake, and again on each reconnection attempt within the timeout.
    let last = status["redis"]["last_check"].as_str().unwrap_or_default();
    assert!(last == "redis" || last == "timeout", "{status}");
}

/// Redis Cluster (three nodes joined by `redis-cli --cluster create`): three gateways are as
/// accurate as on one Redis (see [`assert_accurate`]); two gateways share each tenant's
/// quota, tenants' keys spread over the nodes, and when a tenant's slot moves to
/// another node (its key migrated), both gateways follow the `MOVED` answer: the tenant stays
/// throttled, and `deny` turns any unanswered check into a 503 that would show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: ./test.sh installs it and runs ignored tests"]
async fn a_cluster_shares_quotas_and_follows_a_moved_slot() {
    let nodes = RedisServer::cluster(3);
    let upstream = Upstream::start(Answer::default()).await;
    let seeds: Vec<String> = nodes
        .iter()
        .map(|n| format!("redis://127.0.0.1:{}", n.port))
        .collect();
    let cluster = format!("  cluster: [{}]\n", seeds.join(", "));
    // The accuracy test, against the cluster.
    {
        let config = accuracy_config(&upstream.url(), "SEEDS").replace("  url: SEEDS\n", &cluster);
        let (_d1, one) = serve(&config);
        let (_d2, two) = serve(&config);
        let (_d3, three) = serve(&config);
        assert_accurate(&[one.addr, two.addr, three.addr]).await;
    }
    for node in &nodes {
        assert_eq!(node.query(&["FLUSHALL"]), "+OK");
    }
    // Per minute: nothing refills while the test runs, and keys live a minute.
    let config = config(&upstream.url(), "SEEDS", "deny", "1s")
        .replace(
            "  url: SEEDS\n",
            &format!("  cluster: [{}]\n", seeds.join(", ")),
        )
        .replace("quota: 20/s", "quota: 10/min");
    let (_d1, one) = serve(&config);
    let (_d2, two) = serve(&config);
    let gateways = [one.addr, two.addr];
    let tenants: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    for tenant in &tenants {
        let statuses: Vec<u16> = {
            let mut statuses = Vec::new();
            for i in 0..11 {
                statuses.push(get(gateways[i % 2], tenant).await.status);
            }
            statuses
        };
        assert_eq!(
            statuses,
            [[200; 10].as_slice(), &[429]].concat(),
            "{tenant}"
        );
    }
    let per_node: Vec<u64> = nodes
        .iter()
        .map(|n| {
            n.query(&["DBSIZE"])
                .trim_start_matches(':')
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(per_node.iter().sum::<u64>(), 12, "{per_node:?}");
    assert!(
        per_node.iter().filter(|n| **n > 0).count() >= 2,
        "keys spread over the nodes: {per_node:?}"
    );
    let status = one.status().await;
    assert_eq!(
        status["redis"]["address"],
        seeds
            .iter()
            .map(|s| s.trim_start_matches("redis://"))
            .collect::<Vec<_>>()
            .join(", "),
        "{status}"
    );

    // Move t0's slot, with its key, to another node.
    let key = "schemagate:{shared:t0}";
    let slot = nodes[0].query(&["CLUSTER", "KEYSLOT", key]);
    let slot = slot.trim_start_matches(':');
    let from = nodes
        .iter()
        .position(|n| n.query(&["EXISTS", key]) == ":1")
        .expect("the key is on one node");
    let to = (from + 1) % nodes.len();
    let (source, target) = (&nodes[from], &nodes[to]);
    let source_id = source.query(&["CLUSTER", "MYID"]);
    let target_id = target.query(&["CLUSTER", "MYID"]);
    assert_eq!(
        target.query(&["CLUSTER", "SETSLOT", slot, "IMPORTING", &source_id]),
        "+OK"
    );
    assert_eq!(
        source.query(&["CLUSTER", "SETSLOT", slot, "MIGRATING", &target_id]),
        "+OK"
    );
    let port = target.port.to_string();
    assert_eq!(
        source.query(&[
            "MIGRATE",
            "127.0.0.1",
            &port,
            "\"\"",
            "0",
            "5000",
            "KEYS",
            key
        ]),
        "+OK"
    );
    for node in &nodes {
        assert_eq!(
            node.query(&["CLUSTER", "SETSLOT", slot, "NODE", &target_id]),
            "+OK"
        );
    }
    assert_eq!(target.query(&["EXISTS", key]), ":1", "the key moved");
    for gateway in gateways {
        let got = get(gateway, "t0").await;
        assert_throttled(&got);
    }
    // A tenant never seen, on the moved slot's new owner or any other: its own full bucket.
    for gateway in gateways {
        let got = get(gateway, "fresh").await;
        assert_eq!(got.status, 200, "{:?}", got.body);
    }
}
