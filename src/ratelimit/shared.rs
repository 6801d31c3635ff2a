//! Rate limits shared by several gateways through Redis (issue 18): GCRA in one atomic Lua
//! script (`gcra.lua`) over one multiplexed connection.
//!
//! [`SharedStore`] is what a snapshot holds for the `redis:` section: its settings and a
//! [`SharedLimiter`] connected on first use. The answers are the local limiter's:
//! [`SharedLimiter::check`] returns the same [`Outcome`] and [`LimitInfo`], computed from the
//! script's reply.
//!
//! The script reads the time from Redis and decides and writes in one step, so the gateways'
//! clocks do not matter and two gateways never both admit a tenant's last unit. Every key
//! expires when its bucket is full again, so an idle tenant costs Redis nothing.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};

use super::{ceil_secs, LimitInfo, Outcome, QuotaSpec};
use crate::config::OnRedisError;

/// Why a shared check gave no answer. The caller's `on_error` policy (local, allow, deny)
/// decides what the request gets; these variants let it tell a slow Redis from a broken one.
#[derive(Debug)]
pub enum SharedError {
    /// No reply within the caller's timeout (Redis slow, stopped, or still reconnecting).
    Timeout(Duration),
    /// Redis refused the connection or the command, or the connection broke.
    Redis(redis::RedisError),
    /// Redis answered, but not with the script's four integers.
    BadReply(String),
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SharedError::Timeout(after) => write!(f, "redis gave no answer within {after:?}"),
            SharedError::Redis(error) => write!(f, "redis: {error}"),
            SharedError::BadReply(what) => {
                write!(f, "unexpected reply from the GCRA script: {what}")
            }
        }
    }
}

impl SharedError {
    /// Every value [`SharedError::kind`] gives.
    pub const KINDS: [&'static str; 3] = ["timeout", "redis", "reply"];

    /// A bounded label for the error counter: `timeout`, `redis` or `reply`.
    pub fn kind(&self) -> &'static str {
        match self {
            SharedError::Timeout(_) => "timeout",
            SharedError::Redis(_) => "redis",
            SharedError::BadReply(_) => "reply",
        }
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SharedError::Redis(error) => Some(error),
            SharedError::Timeout(_) | SharedError::BadReply(_) => None,
        }
    }
}

impl From<redis::RedisError> for SharedError {
    fn from(error: redis::RedisError) -> Self {
        SharedError::Redis(error)
    }
}

/// The script's reply, in milliseconds as Redis computed it (see `gcra.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests that could be sent now, after this one.
    pub remaining: u64,
    /// Until the bucket is full again, counted as `(burst - remaining) × interval`.
    pub reset_ms: u64,
    /// Until a request would be admitted; 0 when this one was.
    pub retry_after_ms: u64,
}

impl Decision {
    fn from_reply(reply: Value) -> Result<Decision, SharedError> {
        let Value::Array(items) = reply else {
            return Err(SharedError::BadReply(format!("{reply:?}")));
        };
        let numbers = items
            .iter()
            .map(|item| match item {
                Value::Int(n) => u64::try_from(*n).ok(),
                _ => None,
            })
            .collect::<Option<Vec<u64>>>();
        match numbers.as_deref() {
            Some(&[allowed @ (0 | 1), remaining, reset_ms, retry_after_ms]) => Ok(Decision {
                allowed: allowed == 1,
                remaining,
                reset_ms,
                retry_after_ms,
            }),
            _ => Err(SharedError::BadReply(format!("{items:?}"))),
        }
    }

    /// The local limiter's answer for the same state: `Retry-After` rounded up and at least
    /// 1 s, `RateLimit-Reset` rounded up, `remaining` never above the burst.
    pub fn outcome(&self, spec: &QuotaSpec) -> Outcome {
        let limit = spec.burst;
        let info = LimitInfo {
            limit,
            remaining: u32::try_from(self.remaining).unwrap_or(limit).min(limit),
            reset_secs: ceil_secs(Duration::from_millis(self.reset_ms)),
        };
        if self.allowed {
            Outcome::Allowed(info)
        } else {
            Outcome::Throttled {
                info: LimitInfo {
                    remaining: 0,
                    ..info
                },
                retry_after_secs: ceil_secs(Duration::from_millis(self.retry_after_ms)).max(1),
            }
        }
    }
}

/// Characters escaped in a key's parts: `{` and `}` (so a tenant cannot end or open the
/// hash tag), `:` (so `route:tenant` splits one way only) and `%` (so escaping is reversible).
const KEY_PART: &AsciiSet = &CONTROLS.add(b'{').add(b'}').add(b':').add(b'%');
/// The prefix may contain `:` (`prod:schemagate`), but no brace: it sits before the tag.
const KEY_PREFIX: &AsciiSet = &CONTROLS.add(b'{').add(b'}').add(b'%');

/// The key of one tenant's bucket on one route: `{prefix}:{{route}:{tenant}}`, for example
/// `schemagate:{orders.create:acme}`.
///
/// The braces are a Redis Cluster hash tag: only `route:tenant` decides the slot. A one-key
/// script always runs on one slot; the tag is there so that keys added later for the same
/// tenant on the same route (a tier's own bucket, a report-mode counter) land on the same
/// slot and can be touched by the same script, while different tenants (and routes) still
/// spread over the cluster. Tagging the route alone would put all of a route's tenants on one
/// node; the route-wide `ceiling` is therefore a separate key and a separate call. Route and
/// tenant are percent-escaped where they hold `{`, `}`, `:` or `%`, so two different pairs
/// never share a key and nothing in a tenant can move the tag.
pub fn key(prefix: &str, route: &str, tenant: &str) -> String {
    format!(
        "{}:{{{}:{}}}",
        utf8_percent_encode(prefix, KEY_PREFIX),
        utf8_percent_encode(route, KEY_PART),
        utf8_percent_encode(tenant, KEY_PART)
    )
}

/// The key of a route's `ceiling` bucket, shared by all its tenants: `{prefix}:{{route}}`,
/// for example `schemagate:{orders.create}`. A tenant's key always has a `:` inside its tag
/// and an escaped route never does, so the two kinds never meet.
pub fn ceiling_key(prefix: &str, route: &str) -> String {
    format!(
        "{}:{{{}}}",
        utf8_percent_encode(prefix, KEY_PREFIX),
        utf8_percent_encode(route, KEY_PART)
    )
}

/// How long a connection attempt may take before it counts as failed (a stopped process
/// accepts TCP connections but never answers).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnection backoff: jittered, from 50 ms doubling up to 500 ms, so a restarted Redis is
/// found again within about a second.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);
const RECONNECT_ATTEMPTS: usize = 6;

/// A client of the shared GCRA buckets: one multiplexed connection per Redis node (requests
/// are pipelined on it, none holds it across an await) that reconnects by itself, and the
/// script, sent by its SHA-1 (`EVALSHA`) and loaded again whenever Redis answers `NOSCRIPT`
/// (after a restart or a `SCRIPT FLUSH`).
#[derive(Clone)]
pub struct SharedLimiter {
    connection: Connection,
    script: Script,
}

/// One node through redis-rs's `ConnectionManager`, or a Redis Cluster through its cluster
/// connection, which keeps one multiplexed connection per node, learns the slot map from the
/// seeds and follows `MOVED` and `ASK`. Either is a handle: a clone costs an `Arc`.
#[derive(Clone)]
enum Connection {
    Node(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLimiter")
            .field("script", &self.script.get_hash())
            .finish_non_exhaustive()
    }
}

/// Where the shared buckets live, and how to reach them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// One URL (`redis://`, `rediss://`, `unix://`), or a Redis Cluster's seed URLs.
    pub urls: Vec<String>,
    /// Whether `urls` are a cluster's seeds.
    pub cluster: bool,
    /// From `password_file`: replaces any password in the URLs.
    pub password: Option<String>,
    /// PEM trust roots and client certificate for `rediss://` (`redis.tls`); none: the
    /// system's roots, no client certificate.
    pub tls: Option<TlsPem>,
}

/// `redis.tls` as read from its files.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct TlsPem {
    pub ca: Option<Vec<u8>>,
    /// Certificate chain and key, both PEM.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsPem {
    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }
}

impl SharedLimiter {
    /// Connects to `url` (`redis://host:port/db`, `unix:///path`). Fails if the first
    /// connection cannot be made after the reconnection attempts (about two seconds for a
    /// refused port); later losses are repaired in the background.
    pub async fn connect(url: &str) -> Result<SharedLimiter, SharedError> {
        SharedLimiter::connect_to(&Target {
            urls: vec![url.to_string()],
            cluster: false,
            password: None,
            tls: None,
        })
        .await
    }

    /// Connects to `target`: its one node, or its cluster through the seeds (each node's
    /// connection and answers bounded by `CONNECT_TIMEOUT`; the caller bounds each check).
    pub async fn connect_to(target: &Target) -> Result<SharedLimiter, SharedError> {
        let connection = if target.cluster {
            let mut builder = redis::cluster::ClusterClient::builder(target.urls.clone())
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(CONNECT_TIMEOUT);
            if let Some(password) = &target.password {
                builder = builder.password(password.as_str());
            }
            if let Some(tls) = &target.tls {
                builder = builder.certs(tls.certificates());
            }
            Connection::Cluster(builder.build()?.get_async_connection().await?)
        } else {
            let url = target.urls.first().map_or("", String::as_str);
            let mut info = redis::IntoConnectionInfo::into_connection_info(url)?;
            if let Some(password) = &target.password {
                let settings = info.redis_settings().clone().set_password(password);
                info = info.set_redis_settings(settings);
            }
            let client = match &target.tls {
                Some(tls) => redis::Client::build_with_tls(info, tls.certificates())?,
                None => redis::Client::open(info)?,
            };
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                // Each check carries its caller's timeout; a second, fixed one (500 ms by
                // default) would turn a longer caller's timeout into a Redis error.
                .set_response_timeout(None)
                .set_min_delay(RECONNECT_MIN_DELAY)
                .set_max_delay(RECONNECT_MAX_DELAY)
                .set_number_of_retries(RECONNECT_ATTEMPTS);
            Connection::Node(ConnectionManager::new_with_config(client, config).await?)
        };
        Ok(SharedLimiter {
            connection,
            script: Script::new(include_str!("gcra.lua")),
        })
    }

    /// Takes one request from the bucket at `key` (see [`key`]) and answers as the local
    /// limiter would. Never waits longer than `timeout`.
    pub async fn check(
        &self,
        key: &str,
        spec: &QuotaSpec,
        timeout: Duration,
    ) -> Result<Outcome, SharedError> {
        Ok(self.decide(key, spec, timeout).await?.outcome(spec))
    }

    /// [`check`](Self::check)'s raw answer, in milliseconds.
    pub async fn decide(
        &self,
        key: &str,
        spec: &QuotaSpec,
        timeout: Duration,
    ) -> Result<Decision, SharedError> {
        let mut invocation = self.script.key(key);
        invocation
            .arg(interval_micros(spec))
            .arg(spec.burst.max(1))
            .arg(1);
        // A connection is a handle to the shared one(s); a clone costs an `Arc`.
        let call = async {
            match &self.connection {
                Connection::Node(connection) => {
                    invocation
                        .invoke_async::<Value>(&mut connection.clone())
                        .await
                }
                Connection::Cluster(connection) => {
                    invocation
                        .invoke_async::<Value>(&mut connection.clone())
                        .await
                }
            }
        };
        let reply = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| SharedError::Timeout(timeout))??;
        Decision::from_reply(reply)
    }
}

/// The `redis:` section as compiled: equal settings keep one store (and its connection)
/// across reloads.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// The URLs checked with `IntoConnectionInfo`, the password and TLS files read, when the
    /// snapshot was built.
    pub target: Target,
    /// The files `password_file` and `tls` were read from (watched for hot reload).
    pub files: Vec<std::path::PathBuf>,
    /// Longest a request waits for Redis, the first connection included.
    pub timeout: Duration,
    pub on_error: OnRedisError,
    pub key_prefix: String,
}

const LAST_NONE: u8 = 0;
const LAST_OK: u8 = 1;

/// A shared store as `/status` shows it (see [`SharedStore::state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreState {
    /// `host:port` (or the socket path), a cluster's seeds joined by `, `: never a URL, which
    /// may hold a password.
    pub address: String,
    /// Whether a connection was made (it then reconnects by itself).
    pub connected: bool,
    /// How the last check ended: `ok`, or the error kind; `None` before any check.
    pub last: Option<&'static str>,
}

impl fmt::Debug for StoreSettings {
    // Never the URL or the password: either may hold a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSettings")
            .field("timeout", &self.timeout)
            .field("on_error", &self.on_error)
            .field("key_prefix", &self.key_prefix)
            .field("cluster", &self.target.cluster)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// The shared store of one config generation (carried over while its settings are unchanged).
///
/// The connection is made on first use, inside a request and within its `timeout`, never
/// while the snapshot is built: a gateway starts and serves (by `on_error`) with Redis down.
/// A connection attempt cut short by the timeout is made again by a later request; once made,
/// the connection repairs itself (see [`SharedLimiter`]).
pub struct SharedStore {
    settings: StoreSettings,
    limiter: tokio::sync::OnceCell<SharedLimiter>,
    created: Instant,
    /// Milliseconds after `created` of the last warning logged, plus one (0: never).
    last_warning: AtomicU64,
    /// Errors not logged since the last warning.
    unlogged: AtomicU64,
    /// How the last check ended, for `/status`: `LAST_NONE`, `LAST_OK`, or 1 + the index of
    /// the error kind in `SharedError::KINDS`.
    last: std::sync::atomic::AtomicU8,
}

impl fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedStore")
            .field("timeout", &self.settings.timeout)
            .field("on_error", &self.settings.on_error)
            .field("key_prefix", &self.settings.key_prefix)
            .field("connected", &self.limiter.initialized())
            .finish_non_exhaustive()
    }
}

impl SharedStore {
    pub fn new(settings: StoreSettings) -> SharedStore {
        SharedStore {
            settings,
            limiter: tokio::sync::OnceCell::new(),
            created: Instant::now(),
            last_warning: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
            last: std::sync::atomic::AtomicU8::new(LAST_NONE),
        }
    }

    /// The store as `/status` shows it: where it points (host and port, never credentials),
    /// whether a connection was made, and how the last check ended (`ok`, `timeout`, `redis`,
    /// `reply`; `None` before any).
    pub fn state(&self) -> StoreState {
        let address = self
            .settings
            .target
            .urls
            .iter()
            .map(|url| {
                redis::IntoConnectionInfo::into_connection_info(url.as_str())
                    .map_or_else(|_| "-".to_string(), |info| info.addr().to_string())
            })
            .collect::<Vec<_>>()
            .join(", ");
        let last = match self.last.load(Ordering::Relaxed) {
            LAST_NONE => None,
            LAST_OK => Some("ok"),
            n => SharedError::KINDS.get(usize::from(n) - 2).copied(),
        };
        StoreState {
            address,
            connected: self.limiter.initialized(),
            last,
        }
    }

    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    pub fn on_error(&self) -> OnRedisError {
        self.settings.on_error
    }

    /// Takes one request from `tenant`'s bucket on `route` (held to `spec`, the route's quota
    /// or the tenant's tier) and, when that admits it, from the route's `ceiling` bucket, as
    /// the local limiter does. Connects first if no connection was made yet. Never waits
    /// longer than the store's `timeout` in all.
    pub async fn check(
        &self,
        route: &str,
        tenant: &str,
        spec: &QuotaSpec,
        ceiling: Option<&QuotaSpec>,
    ) -> Result<Outcome, SharedError> {
        let result = self.connect_and_check(route, tenant, spec, ceiling).await;
        self.note(&result);
        result
    }

    async fn connect_and_check(
        &self,
        route: &str,
        tenant: &str,
        spec: &QuotaSpec,
        ceiling: Option<&QuotaSpec>,
    ) -> Result<Outcome, SharedError> {
        let timeout = self.settings.timeout;
        let started = Instant::now();
        let connect = self
            .limiter
            .get_or_try_init(|| SharedLimiter::connect_to(&self.settings.target));
        let limiter = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| SharedError::Timeout(timeout))??;
        let left = || {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                Err(SharedError::Timeout(timeout))
            } else {
                Ok(left)
            }
        };
        let prefix = &self.settings.key_prefix;
        let own = limiter
            .check(&key(prefix, route, tenant), spec, left()?)
            .await?;
        match (own, ceiling) {
            // A second call, not a second key in one script: in a cluster the ceiling's key
            // is on another slot than the tenant's.
            (Outcome::Allowed(_), Some(ceiling)) => {
                let route_wide = limiter
                    .check(&ceiling_key(prefix, route), ceiling, left()?)
                    .await?;
                Ok(match route_wide {
                    Outcome::Allowed(_) => own,
                    throttled @ Outcome::Throttled { .. } => throttled,
                })
            }
            _ => Ok(own),
        }
    }

    /// Notes how a check ended, for [`SharedStore::state`].
    fn note(&self, result: &Result<Outcome, SharedError>) {
        let code = match result {
            Ok(_) => LAST_OK,
            Err(error) => SharedError::KINDS
                .iter()
                .position(|k| *k == error.kind())
                .map_or(LAST_NONE, |i| u8::try_from(i + 2).unwrap_or(LAST_NONE)),
        };
        self.last.store(code, Ordering::Relaxed);
    }

    /// Logs `error` at warn, at most once a second per store; the errors not logged in
    /// between are counted in the next line (and every one in the error metric).
    pub fn warn(&self, route: &str, error: &SharedError) {
        let now = u64::try_from(self.created.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last_warning.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= 1000;
        if due
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
            tracing::warn!(
                route,
                %error,
                on_error = ?self.settings.on_error,
                errors_since_last_warning = unlogged,
                "shared rate limit: no answer from redis; on_error decides"
            );
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The emission interval `per / count` in whole microseconds, at least 1: a quota finer than
/// a million requests a second per tenant is held at that.
fn interval_micros(spec: &QuotaSpec) -> u64 {
    let micros = spec.per.as_micros() / u128::from(spec.count.max(1));
    u64::try_from(micros).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_route_and_tenant_in_one_unambiguous_hash_tag() {
        assert_eq!(
            key("schemagate", "orders.create", "acme"),
            "schemagate:{orders.create:acme}"
        );
        assert_eq!(key("prod:sg", "r", "a:b"), "prod:sg:{r:a%3Ab}");
        // A tenant cannot close the tag early or open another one.
        assert_eq!(key("sg", "r", "x}{y"), "sg:{r:x%7D%7By}");
        // `a:b` + `c` and `a` + `b:c` are different buckets.
        assert_ne!(key("sg", "a:b", "c"), key("sg", "a", "b:c"));
        assert_ne!(key("sg", "r", "%3A"), key("sg", "r", ":"));
        // A route's ceiling is one key for all its tenants, never a tenant's key.
        assert_eq!(ceiling_key("sg", "orders.create"), "sg:{orders.create}");
        assert_eq!(ceiling_key("sg", "a:b"), "sg:{a%3Ab}");
        assert_ne!(ceiling_key("sg", "a:b"), key("sg", "a", "b"));
    }

    #[test]
    fn redis_errors_are_logged_at_most_once_a_second() {
        let store = SharedStore::new(StoreSettings {
            target: Target {
                urls: vec!["redis://127.0.0.1:1/0".to_string()],
                cluster: false,
                password: None,
                tls: None,
            },
            files: Vec::new(),
            timeout: Duration::from_millis(50),
            on_error: OnRedisError::Local,
            key_prefix: "sg".to_string(),
        });
        let error = SharedError::Timeout(Duration::from_millis(50));
        for _ in 0..100 {
            store.warn("r", &error);
        }
        // The first was logged; the other 99 wait to be counted in the next line.
        assert_eq!(store.unlogged.load(Ordering::Relaxed), 99);
        assert_ne!(store.last_warning.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn intervals_in_microseconds() {
        let spec = |text| QuotaSpec::parse(text, None).unwrap();
        assert_eq!(interval_micros(&spec("100/s")), 10_000);
        assert_eq!(interval_micros(&spec("6000/min")), 10_000);
        assert_eq!(interval_micros(&spec("3/s")), 333_333);
        assert_eq!(interval_micros(&spec("4000000/s")), 1);
    }

    #[test]
    fn replies_map_to_the_local_limiters_outcome() {
        let spec = QuotaSpec::parse("10/s", Some(5)).unwrap();
        let reply = |items: &[i64]| Value::Array(items.iter().map(|n| Value::Int(*n)).collect());
        let allowed = Decision::from_reply(reply(&[1, 4, 100, 0])).unwrap();
        assert_eq!(
            allowed.outcome(&spec),
            Outcome::Allowed(LimitInfo {
                limit: 5,
                remaining: 4,
                reset_secs: 1
            })
        );
        let throttled = Decision::from_reply(reply(&[0, 0, 500, 37])).unwrap();
        assert_eq!(
            throttled.outcome(&spec),
            Outcome::Throttled {
                info: LimitInfo {
                    limit: 5,
                    remaining: 0,
                    reset_secs: 1
                },
                retry_after_secs: 1,
            }
        );
        let long = Decision::from_reply(reply(&[0, 0, 10_000, 2_001])).unwrap();
        assert!(matches!(
            long.outcome(&spec),
            Outcome::Throttled {
                retry_after_secs: 3,
                ..
            }
        ));
        // Malformed replies are errors, never panics.
        for bad in [
            reply(&[1, 2, 3]),
            reply(&[2, 0, 0, 0]),
            reply(&[1, -1, 0, 0]),
            Value::Nil,
            Value::Array(vec![Value::Nil; 4]),
        ] {
            assert!(matches!(
                Decision::from_reply(bad),
                Err(SharedError::BadReply(_))
            ));
        }
    }
}
