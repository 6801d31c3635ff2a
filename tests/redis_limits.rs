//! The shared (Redis) rate limiter against a real `redis-server` on a free loopback port:
//! GCRA's answers, accuracy with two clients standing for two gateways, key expiry, and
//! faults (Redis killed and restarted, script cache flushed, Redis slow).
//!
//! `./test.sh` installs Debian's `redis-server` when missing and runs these tests; they are
//! `#[ignore]`d in a plain `cargo test`, which needs nothing installed. Run by hand with
//! `cargo test --test redis_limits -- --include-ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use schemagate::ratelimit::shared::{key, SharedError, SharedLimiter};
use schemagate::ratelimit::{Outcome, QuotaSpec};

const TIMEOUT: Duration = Duration::from_millis(500);

#[path = "common/redis_server.rs"]
mod redis_server;

use redis_server::RedisServer;

impl RedisServer {
    /// A limiter of its own: a new connection, as another gateway would have.
    async fn limiter(&self) -> SharedLimiter {
        SharedLimiter::connect(&self.url()).await.unwrap()
    }

    /// A plain connection of the test's own, for commands beside the limiter's.
    async fn admin(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection_with_config(
                // Long enough for `DEBUG SLEEP 1` (the default is 500 ms).
                &redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(Duration::from_secs(5))),
            )
            .await
            .unwrap()
    }
}

fn quota(text: &str, burst: u32) -> QuotaSpec {
    QuotaSpec::parse(text, Some(burst)).unwrap()
}

async fn admitted(limiter: &SharedLimiter, key: &str, spec: &QuotaSpec, n: usize) -> usize {
    let mut count = 0;
    for _ in 0..n {
        if let Outcome::Allowed(_) = limiter.check(key, spec, TIMEOUT).await.unwrap() {
            count += 1;
        }
    }
    count
}

/// (a) A fresh tenant may send `burst` requests at once, then waits about one interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: ./test.sh installs it and runs ignored tests"]
async fn a_fresh_tenant_gets_its_burst_then_waits_one_interval() {
    let redis = RedisServer::start();
    let limiter = redis.limiter().await;
    let spec = quota("10/s", 5);
    let k = key("sg", "route", "fresh");
    let mut remaining = Vec::new();
    for _ in 0..5 {
        match limiter.check(&k, &spec, TIMEOUT).await.unwrap() {
            Outcome::Allowed(info) => {
                assert_eq!(info.limit, 5);
                remaining.push(info.remaining);
            }
            other => panic!("expected the burst to be admitted, got {other:?}"),
        }
    }
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    let decision = limiter.decide(&k, &spec, TIMEOUT).await.unwrap();
    assert!(!decision.allowed, "{decision:?}");
    // About one interval (100 ms), less the time the five checks took.
    assert!(
        (50..=100).contains(&decision.retry_after_ms),
        "{decision:?}"
    );
    match limiter.check(&k, &spec, TIMEOUT).await.unwrap() {
        Outcome::Throttled {
            info,
            retry_after_secs,
        } => {
            assert_eq!((info.limit, info.remaining, info.reset_secs), (5, 0, 1));
            assert_eq!(retry_after_secs, 1, "rounded up to at least 1 s");
        }
        other => panic!("expected throttled, got {other:?}"),
    }

    // A slow quota shows Retry-After rounded up: 30/min is one every 2 s.
    let slow = quota("30/min", 2);
    let k = key("sg", "route", "slow");
    assert_eq!(admitted(&limiter, &k, &slow, 5).await, 2);
    match limiter.check(&k, &slow, TIMEOUT).await.unwrap() {
        Outcome::Throttled {
            info,
            retry_after_secs,
        } => {
            assert_eq!(retry_after_secs, 2);
            assert_eq!(info.reset_secs, 4);
        }
        other => panic!("expected throttled, got {other:?}"),
    }
}

/// (b) After one interval, exactly one more request is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: ./test.sh installs it and runs ignored tests"]
async fn one_more_after_one_interval() {
    let redis = RedisServer::start();
    let limiter = redis.limiter().await;
    let spec = quota("5/s", 3); // one every 200 ms
    let k = key("sg", "route", "t");
    assert_eq!(admitted(&limiter, &k, &spec, 10).await, 3);
    tokio::time::sleep(Duration::from_millis(230)).await;
    assert_eq!(admitted(&limiter, &k, &spec, 10).await, 1);
}

/// (c) Two limiters (two connections: two gateways) drive one tenant concurrently at eight
/// times its quota; together they admit `burst + quota × elapsed`, and a second tenant on the
/// same route, under its quota, is never throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: ./test.sh installs it and runs ignored tests"]
async fn two_gateways_share_one_quota() {
    let redis = RedisServer::start();
    let gateways = [redis.limiter().await, redis.limiter().await];
    let spec = quota("500/s", 25);
    let hot = key("sg", "route", "hot");
    let run_for = Duration::from_secs(1);
    let admitted = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    // Four tasks, each sending one request a millisecond: ~4000/s against 500/s.
    for gateway in gateways.iter().cycle().take(4) {
        let (gateway, hot, admitted, sent) =
            (gateway.clone(), hot.clone(), admitted.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut last = start;
            while start.elapsed() < run_for {
                tick.tick().await;
                let outcome = gateway.check(&hot, &spec, TIMEOUT).await.unwrap();
                last = Instant::now();
                sent.fetch_add(1, Ordering::Relaxed);
                if let Outcome::Allowed(_) = outcome {
                    admitted.fetch_add(1, Ordering::Relaxed);
                }
            }
            last
        }));
    }
    // The second tenant sends 20/s through the other gateway.
    let quiet = {
        let (gateway, quiet) = (gateways[1].clone(), key("sg", "route", "quiet"));
        tokio::spawn(async move {
            let mut throttled = 0;
            for _ in 0..20 {
                if let Outcome::Throttled { .. } =
                    gateway.check(&quiet, &spec, TIMEOUT).await.unwrap()
                {
                    throttled += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            throttled
        })
    };
    let mut end = start;
    for task in tasks {
        end = end.max(task.await.unwrap());
    }
    let elapsed = end.duration_since(start).as_secs_f64();
    let admitted = admitted.load(Ordering::Relaxed) as f64;
    let sent = sent.load(Ordering::Relaxed) as f64;
    let expected = f64::from(spec.burst) + f64::from(spec.count) * elapsed;
    let error = (admitted - expected) / expected;
    eprintln!(
        "two gateways: sent {sent} in {elapsed:.3} s ({:.1} x quota), admitted {admitted}, \
         expected {expected:.1}, error {:+.2} %",
        sent / elapsed / f64::from(spec.count),
        error * 100.0
    );
    assert!(
        sent / elapsed > 2.0 * f64::from(spec.count),
        "the load was not over the quota: sent {sent} in {elapsed:.3} s"
    );
    assert!(
        error.abs() <= 0.02 || (admitted - expected).abs() <= 1.0,
        "admitted {admitted}, expected {expected:.1} ({:+.2} %)",
        error * 100.0
    );
    assert_eq!(quiet.await.unwrap(), 0, "the quiet tenant was throttled");
}

/// (d) A key lives exactly until its bucket is full again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: ./test.sh installs it and runs ignored tests"]
async fn keys_expire_when_the_bucket_is_full_again() {
    let redis = RedisServer::start();
    let limiter = redis.limiter().await;
    let mut admin = redis.admin().await;
    let spec = quota("10/s", 2);
    let k = key("sg", "route", "idle");
    assert!(matches!(
        limiter.check(&k, &spec, TIMEOUT).await.unwrap(),
        Outcome::Allowed(_)
    ));
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&k)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!((1..=100).contains(&ttl), "PTTL {ttl} after one request");
    limiter.check(&k, &spec, TIMEOUT).await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&k)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!((100..=200).contains(&ttl), "PTTL {ttl} after two requests");
    // A throttled request writes nothing and so does not extend the key's life.
    assert!(matches!(
        limiter.check(&k, &spec, TIMEOUT).await.unwrap(),
        Outcome::Throttled { .. }
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&k)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(exists, 0, "an idle tenant's key is still there");
    let keys: i64 = redis::cmd("DBSIZE").query_async(&mut admin).await.unwrap();
    assert_eq!(keys, 0);
}

/// (e) Redis killed: `check` fails within its timeout, never hangs. Redis back on the same
/// port: the same limiter works again within 5 s (the connection manager reconnects, the
/// script is loaded again on `NOSCRIPT`), and again after a `SCRIPT FLUSH`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: ./test.sh installs it and runs ignored tests"]
async fn survives_redis_restart_and_script_flush() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let limiter = redis.limiter().await;
    let spec = quota("100/s", 10);
    let k = key("sg", "route", "t");
    limiter.check(&k, &spec, TIMEOUT).await.unwrap();

    redis.kill();
    let timeout = Duration::from_millis(200);
    for _ in 0..5 {
        let started = Instant::now();
        let result = limiter.check(&k, &spec, timeout).await;
        let took = started.elapsed();
        assert!(
            result.is_err(),
            "a check succeeded with Redis dead: {result:?}"
        );
        assert!(
            took < timeout + Duration::from_millis(100),
            "a check took {took:?} with a timeout of {timeout:?}: {result:?}"
        );
    }

    let redis = RedisServer::start_on(port);
    let back = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match limiter.check(&k, &spec, timeout).await {
            Ok(Outcome::Allowed(_)) => break,
            other => assert!(
                back.elapsed() < Duration::from_secs(5),
                "no answer 5 s after Redis came back: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "redis back: checks succeed again after {:?} ({attempts} attempts)",
        back.elapsed()
    );

    let mut admin = redis.admin().await;
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(matches!(
        limiter.check(&k, &spec, TIMEOUT).await,
        Ok(Outcome::Allowed(_))
    ));
}

/// (f) A slow Redis (`DEBUG SLEEP`): `check` gives up at its timeout, and answers again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: ./test.sh installs it and runs ignored tests"]
async fn a_slow_redis_is_cut_at_the_timeout() {
    let redis = RedisServer::start();
    let limiter = redis.limiter().await;
    let spec = quota("100/s", 10);
    let k = key("sg", "route", "t");
    limiter.check(&k, &spec, TIMEOUT).await.unwrap();

    let mut admin = redis.admin().await;
    let sleeper = tokio::spawn(async move {
        let () = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(1)
            .query_async(&mut admin)
            .await
            .unwrap();
    });
    // Give the server time to start sleeping.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let timeout = Duration::from_millis(50);
    let started = Instant::now();
    let result = limiter.check(&k, &spec, timeout).await;
    let took = started.elapsed();
    eprintln!("slow redis: check gave up after {took:?}");
    assert!(
        matches!(result, Err(SharedError::Timeout(t)) if t == timeout),
        "{result:?}"
    );
    assert!(
        took >= timeout && took <= Duration::from_millis(150),
        "took {took:?}"
    );
    sleeper.await.unwrap();
    assert!(matches!(
        limiter.check(&k, &spec, TIMEOUT).await,
        Ok(Outcome::Allowed(_))
    ));
}
