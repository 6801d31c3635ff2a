//! Prometheus metrics, owned by the app state (never globals), so every test has its own.
//!
//! Architecture invariant: every label value is bounded: route names come from config,
//! statuses and locations are small sets, reasons are schema keywords or framing labels,
//! field paths come from the schema (array indices folded to `*`), and tenant labels are
//! used only for tenants named in config (tiers); all others are folded into `other`.

use std::sync::atomic::{AtomicI64, Ordering};

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
    pub rate_limited: Family<TenantLabels, Counter>,
    pub in_flight: Gauge,
    pub connections: Gauge,
    pub reloads: Family<ResultLabels, Counter>,
    pub generation: Gauge,
    /// TLS handshakes that failed (`error`) or did not finish in time (`timeout`).
    pub tls_handshake_failures: Family<ResultLabels, Counter>,
    in_flight_now: AtomicI64,
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
            rate_limited,
            in_flight,
            connections,
            reloads,
            generation,
            tls_handshake_failures,
            in_flight_now: AtomicI64::new(0),
        }
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

/// A violation's JSON pointer as a bounded field label: `body.a.b[*]`.
pub fn field_label(location: &str, pointer: &str) -> String {
    let mut out = String::from(location);
    for segment in pointer.split('/').skip(1) {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str("[*]");
        } else {
            out.push('.');
            out.push_str(&segment.replace("~1", "/").replace("~0", "~"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_labels_fold_indices() {
        assert_eq!(
            field_label("body", "/filter/channelTypes/12"),
            "body.filter.channelTypes[*]"
        );
        assert_eq!(field_label("query", "/status/0"), "query.status[*]");
        assert_eq!(field_label("body", ""), "body");
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
