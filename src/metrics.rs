//! Prometheus metrics, owned by the app state (never globals), so every test has its own.
//!
//! Architecture invariant: no label value is the client's to choose. Route names come from
//! config (`-` for no route); a matched request's method is its route's, any other request's
//! a standard method or `OTHER` ([`method_label`]); locations, reasons and results are
//! `'static` names; field paths are spelled from the schema (array indices folded to `[*]`,
//! keys the client chose to `*`: `schema::Violation::field`); tenant labels are used only for
//! tenants named in config (tiers), all others fold into `other`. A status is the gateway's
//! own or the upstream's (hyper bounds it to 100..=999).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    pub route: String,
    /// `body`, `query`, `header`, `path`, or `request` for non-schema rejections.
    pub location: String,
    /// The schema keyword, or a framing/auth/limit reason.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FieldLabels {
    pub route: String,
    /// `body.filter.channelTypes[*]`: the schema's path, indices folded.
    pub field: String,
}

/// Why an upstream answer on a `responses: report` route was not compared: `too_large`
/// (over `limits.response_check`), `not_json` (not a JSON media type), `incomplete` (the
/// body ended in an error or the client left before its end), `busy` (the process was
/// already comparing as many answers as it allows). A closed set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UncheckedLabels {
    pub route: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub route: String,
    /// A tenant named in config, or `other`.
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: HistogramFamily<RouteLabels>,
    pub upstream_duration: HistogramFamily<RouteLabels>,
    pub rejections: Family<RejectionLabels, Counter>,
    pub rejected_fields: Family<FieldLabels, Counter>,
    pub report_only: Family<RejectionLabels, Counter>,
    /// `responses: report`: answers unlike the documented responses, by route and field
    /// (`status`, or the body's field as the schema spells it, like `rejected_fields`).
    pub response_mismatches: Family<FieldLabels, Counter>,
    /// `responses: report`: answers not compared, by route and reason.
    pub responses_unchecked: Family<UncheckedLabels, Counter>,
    pub rate_limited: Family<TenantLabels, Counter>,
    pub in_flight: Gauge,
    pub connections: Gauge,
    pub reloads: Family<ResultLabels, Counter>,
    pub generation: Gauge,
    /// TLS handshakes that failed (`error`) or did not finish in time (`timeout`).
    pub tls_handshake_failures: Family<ResultLabels, Counter>,
    /// HTTP/2 connections the gateway closed, by why (see [`H2Close`]).
    pub h2_closed: Family<ReasonLabels, Counter>,
    /// HTTP/2 streams the gateway cut, by reason: `write_stall`, the client took no data of
    /// their answer for `timeouts.write_stall` (the upstream is released).
    pub h2_streams_reset: Family<ReasonLabels, Counter>,
    /// Request header fields removed before any stage read them, `reason="underscore"`
    /// (`limits.underscore_headers: drop`); the one series, resolved once.
    pub dropped_underscore_headers: Counter,
    /// Checks sent to Redis by routes with `store: redis`, answered or not.
    pub redis_calls: Counter,
    /// Redis checks that gave no answer (so `on_error` decided), by `reason`: `timeout`,
    /// `redis` (refused, broken connection, command error) or `reply` (malformed).
    pub redis_errors: Family<ReasonLabels, Counter>,
    /// How long each shared rate-limit check took, answered or not (a timeout shows as the
    /// configured `redis.timeout`).
    pub redis_duration: Histogram,
    /// 1 while a `store: redis` route's last check got no answer from Redis (so `on_error`
    /// decided), 0 once Redis answers again; by route.
    pub ratelimit_fallback: Family<RouteLabels, Gauge>,
    /// JWT checks by provider, result and reason.
    pub jwt_verifications: Family<JwtLabels, Counter>,
    /// `jwks_url` fetches since the provider was configured, by result (`ok`, `failed`):
    /// set from the providers when scraped (see [`Metrics::set_jwks`]).
    pub jwks_fetches: Family<FetchLabels, Gauge>,
    /// Seconds since each `jwks_url` provider's keys were fetched (absent before the first).
    pub jwks_age: Family<ProviderLabels, Gauge>,
    /// Keys each provider verifies with now.
    pub jwt_keys: Family<ProviderLabels, Gauge>,
    in_flight_now: AtomicI64,
}

/// Why the gateway closed an HTTP/2 connection: a closed set, so the label is bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H2Close {
    /// No stream open for `timeouts.header_read` (GOAWAY, then closed).
    Idle,
    /// More than `limits.h2_resets` client stream resets in one second.
    Resets,
    /// A keep-alive PING went unanswered.
    PingTimeout,
    /// A stream's client took no data for `timeouts.write_stall`.
    WriteStall,
}

impl H2Close {
    const ALL: [H2Close; 4] = [
        H2Close::Idle,
        H2Close::Resets,
        H2Close::PingTimeout,
        H2Close::WriteStall,
    ];

    fn as_str(self) -> &'static str {
        match self {
            H2Close::Idle => "idle",
            H2Close::Resets => "resets",
            H2Close::PingTimeout => "ping_timeout",
            H2Close::WriteStall => "write_stall",
        }
    }
}

const WRITE_STALL: ReasonLabels = ReasonLabels {
    reason: "write_stall",
};

/// A JWT check: the provider (a config name), `ok`/`rejected`, and `verified`/`cached` or
/// the rejection's class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwtLabels {
    pub provider: String,
    pub result: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    pub provider: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("schemagate");
        let requests = Family::default();
        registry.register(
            "requests",
            "Requests answered, by route, method and status",
            requests.clone(),
        );
        let duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Whole-request latency, by route",
            duration.clone(),
        );
        let upstream_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_duration_seconds",
            "Time from sending upstream to its response headers, by route",
            upstream_duration.clone(),
        );
        let rejections = Family::default();
        registry.register(
            "rejections",
            "Requests rejected before the upstream, by route, location and reason",
            rejections.clone(),
        );
        let rejected_fields = Family::default();
        registry.register(
            "rejected_fields",
            "Schema violations by route and field (paths from the schema)",
            rejected_fields.clone(),
        );
        let response_mismatches = Family::default();
        registry.register(
            "response_mismatches",
            "Upstream answers unlike their documented response, by route and field (responses: report)",
            response_mismatches.clone(),
        );
        let responses_unchecked = Family::default();
        registry.register(
            "responses_unchecked",
            "Upstream answers not compared (responses: report), by route and reason",
            responses_unchecked.clone(),
        );
        let report_only = Family::default();
        registry.register(
            "report_only_violations",
            "Would-be rejections on report-only routes",
            report_only.clone(),
        );
        let rate_limited = Family::default();
        registry.register(
            "rate_limited",
            "Requests over their tenant's rate limit, by route and configured tenant",
            rate_limited.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Requests being handled now",
            in_flight.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections open now",
            connections.clone(),
        );
        let reloads = Family::default();
        registry.register(
            "reloads",
            "Config reloads, by result (ok, unchanged, failed)",
            reloads.clone(),
        );
        let generation = Gauge::default();
        registry.register(
            "config_generation",
            "The config generation serving now",
            generation.clone(),
        );
        let tls_handshake_failures = Family::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes on client connections that failed, by result (error, timeout)",
            tls_handshake_failures.clone(),
        );
        let h2_closed = Family::<ReasonLabels, Counter>::default();
        // Every reason shows from the start, at 0, so a dashboard can graph it at once.
        for reason in H2Close::ALL {
            let _ = h2_closed.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            });
        }
        registry.register(
            "h2_connections_closed",
            "HTTP/2 connections closed by the gateway, by reason (idle, resets, ping_timeout, write_stall)",
            h2_closed.clone(),
        );
        let h2_streams_reset = Family::<ReasonLabels, Counter>::default();
        let _ = h2_streams_reset.get_or_create(&WRITE_STALL);
        registry.register(
            "h2_streams_reset",
            "HTTP/2 streams cut by the gateway, by reason (write_stall: the client took no data for timeouts.write_stall; the upstream is released)",
            h2_streams_reset.clone(),
        );
        let dropped_headers = Family::<ReasonLabels, Counter>::default();
        let dropped_underscore_headers = dropped_headers
            .get_or_create(&ReasonLabels {
                reason: "underscore",
            })
            .clone();
        registry.register(
            "dropped_headers",
            "Request header fields removed before the gateway read them, by reason (underscore)",
            dropped_headers,
        );
        let redis_calls = Counter::default();
        registry.register(
            "redis_calls",
            "Shared rate-limit checks sent to Redis (routes with store: redis)",
            redis_calls.clone(),
        );
        let redis_errors = Family::default();
        registry.register(
            "redis_errors",
            "Shared rate-limit checks Redis gave no answer to, so on_error decided, by reason (timeout, redis, reply)",
            redis_errors.clone(),
        );
        let redis_duration = latency_histogram();
        registry.register(
            "redis_duration_seconds",
            "Time each shared rate-limit check took, answered or not",
            redis_duration.clone(),
        );
        let ratelimit_fallback = Family::default();
        registry.register(
            "ratelimit_fallback",
            "1 while a store: redis route's last check got no answer from Redis and on_error decided, by route",
            ratelimit_fallback.clone(),
        );
        let jwt_verifications = Family::default();
        registry.register(
            "jwt_verifications",
            "JWT checks, by provider, result (ok, rejected) and reason (verified, cached, or the rejection's class)",
            jwt_verifications.clone(),
        );
        let jwks_fetches = Family::default();
        registry.register(
            "jwks_fetches",
            "JWK Set fetches of each jwks_url provider since it was configured, by result (ok, failed)",
            jwks_fetches.clone(),
        );
        let jwks_age = Family::default();
        registry.register(
            "jwks_age_seconds",
            "Seconds since each jwks_url provider's keys were fetched",
            jwks_age.clone(),
        );
        let jwt_keys = Family::default();
        registry.register(
            "jwt_keys",
            "Keys each JWT provider verifies with now",
            jwt_keys.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register("build_info", "Build information", build);
        generation.set(1);
        Metrics {
            registry,
            requests,
            duration,
            upstream_duration,
            rejections,
            rejected_fields,
            report_only,
            response_mismatches,
            responses_unchecked,
            rate_limited,
            in_flight,
            connections,
            reloads,
            generation,
            tls_handshake_failures,
            h2_closed,
            h2_streams_reset,
            dropped_underscore_headers,
            redis_calls,
            redis_errors,
            redis_duration,
            ratelimit_fallback,
            jwt_verifications,
            jwks_fetches,
            jwks_age,
            jwt_keys,
            in_flight_now: AtomicI64::new(0),
        }
    }

    /// Counts an HTTP/2 connection the gateway closed.
    pub fn h2_closed(&self, why: H2Close) {
        self.h2_closed
            .get_or_create(&ReasonLabels {
                reason: why.as_str(),
            })
            .inc();
    }

    /// Counts an HTTP/2 stream cut because its client stopped taking data.
    pub fn h2_stream_stalled(&self) {
        self.h2_streams_reset.get_or_create(&WRITE_STALL).inc();
    }

    /// Registers the access log's count of dropped lines as
    /// `schemagate_access_log_dropped_total` (the log owns the counter; see `accesslog`).
    pub fn register_access_log(&mut self, dropped: Counter) {
        self.registry.register(
            "access_log_dropped",
            "Access lines dropped: the log's buffer was full (the sink slower than the requests) or the sink refused them",
            dropped,
        );
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a request in flight until the guard drops.
    pub fn track_in_flight(&self) -> InFlight<'_> {
        let before = self.in_flight_now.fetch_add(1, Ordering::Relaxed);
        self.in_flight.inc();
        InFlight(self, before.saturating_add(1))
    }

    pub fn in_flight_now(&self) -> i64 {
        self.in_flight_now.load(Ordering::Relaxed)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Statuses whose request counter a route keeps resolved; others go through the family.
const COMMON_STATUSES: [u16; 16] = [
    200, 201, 202, 204, 400, 401, 403, 404, 408, 413, 415, 422, 429, 500, 502, 504,
];

/// One route's series, resolved from the families the first time each is used and then
/// reused: no label strings allocated, hashed or compared, and no family lock taken per
/// request. A route's name and method are fixed (the router matched both), so only the
/// status varies. Series appear in the exposition exactly when they would through the
/// families, on their first observation. Held by the snapshot's `Route`, so a reloaded
/// route resolves again (to the same series, which the families keep).
#[derive(Debug, Default)]
pub struct RouteSeries {
    statuses: [OnceLock<Counter>; COMMON_STATUSES.len()],
    duration: OnceLock<Histogram>,
    upstream_duration: OnceLock<Histogram>,
    fallback: OnceLock<Gauge>,
}

impl RouteSeries {
    /// Counts one answered request of route `name` (served for `method`) with `status`.
    pub fn count(&self, metrics: &Metrics, name: &str, method: &http::Method, status: u16) {
        let labels = || RequestLabels {
            route: name.to_string(),
            method: method.to_string(),
            status,
        };
        match COMMON_STATUSES.iter().position(|s| *s == status) {
            Some(i) => self.statuses[i]
                .get_or_init(|| metrics.requests.get_or_create(&labels()).clone())
                .inc(),
            None => metrics.requests.get_or_create(&labels()).inc(),
        };
    }

    /// The whole-request latency histogram of route `name`.
    pub fn duration(&self, metrics: &Metrics, name: &str) -> &Histogram {
        self.duration.get_or_init(|| {
            let labels = RouteLabels {
                route: name.to_string(),
            };
            metrics.duration.get_or_create(&labels).clone()
        })
    }

    /// Whether route `name` (`store: redis`) is on its `on_error` fallback.
    pub fn fallback(&self, metrics: &Metrics, name: &str) -> &Gauge {
        self.fallback.get_or_init(|| {
            let labels = RouteLabels {
                route: name.to_string(),
            };
            metrics.ratelimit_fallback.get_or_create(&labels).clone()
        })
    }

    /// The upstream latency histogram of route `name`.
    pub fn upstream_duration(&self, metrics: &Metrics, name: &str) -> &Histogram {
        self.upstream_duration.get_or_init(|| {
            let labels = RouteLabels {
                route: name.to_string(),
            };
            metrics.upstream_duration.get_or_create(&labels).clone()
        })
    }
}

/// Decrements the in-flight gauge when dropped (also when a request is cancelled).
pub struct InFlight<'a>(&'a Metrics, i64);

impl InFlight<'_> {
    /// How many requests were in flight, this one included, when it started.
    pub fn position(&self) -> usize {
        usize::try_from(self.1).unwrap_or(0)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight_now.fetch_sub(1, Ordering::Relaxed);
        self.0.in_flight.dec();
    }
}

/// The methods that label as themselves: RFC 9110's and PATCH.
static STANDARD_METHODS: [http::Method; 9] = [
    http::Method::GET,
    http::Method::HEAD,
    http::Method::POST,
    http::Method::PUT,
    http::Method::DELETE,
    http::Method::CONNECT,
    http::Method::OPTIONS,
    http::Method::TRACE,
    http::Method::PATCH,
];

/// The `method` label of a request no route matched: a standard method as itself, anything
/// else `OTHER`. hyper accepts any token as a method, so labelling it as sent would let a
/// client add a series per request. (A matched request's method is its route's, from config.)
pub fn method_label(method: &http::Method) -> &'static str {
    STANDARD_METHODS
        .iter()
        .find(|standard| *standard == method)
        .map_or("OTHER", http::Method::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_label_as_other() {
        for standard in &STANDARD_METHODS {
            assert_eq!(method_label(standard), standard.as_str());
        }
        for other in ["M17", "PURGE", "get", "PROPFIND"] {
            let method = http::Method::from_bytes(other.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "OTHER", "{other}");
        }
    }

    #[test]
    fn route_series_are_the_family_series() {
        let metrics = Metrics::new();
        let series = RouteSeries::default();
        let text = metrics.encode();
        assert!(
            !text.contains("route=\"r\""),
            "no series before use:\n{text}"
        );
        for status in [200, 200, 422, 299] {
            series.count(&metrics, "r", &http::Method::POST, status);
        }
        series.duration(&metrics, "r").observe(0.001);
        // A second handle (a reloaded route) reaches the same series.
        RouteSeries::default().count(&metrics, "r", &http::Method::POST, 200);
        let text = metrics.encode();
        for line in [
            "schemagate_requests_total{route=\"r\",method=\"POST\",status=\"200\"} 3",
            "schemagate_requests_total{route=\"r\",method=\"POST\",status=\"422\"} 1",
            "schemagate_requests_total{route=\"r\",method=\"POST\",status=\"299\"} 1",
            "schemagate_request_duration_seconds_count{route=\"r\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("schemagate_upstream_duration_seconds_count{route=\"r\"}"));
    }

    #[test]
    fn exposition_has_the_families() {
        let metrics = Metrics::new();
        metrics
            .requests
            .get_or_create(&RequestLabels {
                route: "r".into(),
                method: "GET".into(),
                status: 200,
            })
            .inc();
        let text = metrics.encode();
        for family in [
            "schemagate_requests_total{route=\"r\",method=\"GET\",status=\"200\"} 1",
            "schemagate_build_info{version=",
            "schemagate_config_generation 1",
        ] {
            assert!(text.contains(family), "{family} missing from\n{text}");
        }
        {
            let _guard = metrics.track_in_flight();
            assert_eq!(metrics.in_flight_now(), 1);
        }
        assert_eq!(metrics.in_flight_now(), 0);
    }
}
