//! The request path: an infallible outer [`handle`] around [`handle_inner`], which runs the
//! stages in order with `?`.
//!
//! `handle` loads the snapshot once (so a request never sees two config generations), assigns
//! the request id, turns any `GatewayError` into its envelope, and writes the access line.
//! It never returns `Err`: an error that reached hyper would drop the connection without an
//! answer.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use std::sync::atomic::AtomicBool;
use std::sync::{OnceLock, Weak};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::auth;
use crate::body::{RequestBody, ResponseBody};
use crate::error::GatewayError;
use crate::forward::{self, Downstream, X_REQUEST_ID};
use crate::framing;
use crate::metrics::{
    FieldLabels, Metrics, RejectionLabels, RequestLabels, RouteLabels, TenantLabels,
};
use crate::ratelimit::{self, LimitInfo};
use crate::reload::Reloader;
use crate::snapshot::Snapshot;
use crate::tenant;
use crate::upstream::UpstreamTarget;
use crate::validate;

/// State shared by every connection.
pub struct Shared {
    /// The current config generation. Only `reload` (and startup) stores into it.
    pub snapshot: ArcSwap<Snapshot>,
    /// The current generation number, for anyone who wants to wait for a reload.
    pub generation: tokio::sync::watch::Sender<u64>,
    pub metrics: Metrics,
    /// Set when shutdown begins; `/readyz` then answers 503.
    pub draining: AtomicBool,
    /// The reloader, once one is attached (a weak link: it holds `Shared` itself).
    pub reloader: OnceLock<Weak<Reloader>>,
    pub started: SystemTime,
}

impl Shared {
    pub fn new(snapshot: Snapshot) -> Arc<Shared> {
        let (generation, _) = tokio::sync::watch::channel(snapshot.generation);
        let metrics = Metrics::new();
        metrics.generation.set(snapshot.generation as i64);
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            generation,
            metrics,
            draining: AtomicBool::new(false),
            reloader: OnceLock::new(),
            started: SystemTime::now(),
        })
    }
}

/// What the access log records about a request, filled in by the stages as they learn it.
#[derive(Default)]
struct Trace {
    route: Option<usize>,
    tenant: Option<String>,
    limit: Option<LimitInfo>,
    /// The tenant was over its limit (enforced or, in report mode, only counted).
    throttled: bool,
    upstream_latency: Option<std::time::Duration>,
    /// (location, reason) of each report-only problem.
    reported: Vec<(&'static str, &'static str)>,
}

pub async fn handle(
    shared: Arc<Shared>,
    downstream: Downstream,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let _in_flight = shared.metrics.track_in_flight();
    let snapshot = shared.snapshot.load_full();
    let request_id = forward::request_id(request.headers());
    let method = request.method().clone();
    // A clone of the parsed URI shares its bytes: the path is kept for the access line and
    // the router without copying it.
    let uri = request.uri().clone();
    let mut trace = Trace::default();

    let result = handle_inner(
        &snapshot,
        downstream,
        &request_id,
        &mut trace,
        &uri,
        request,
    )
    .await;
    let route = trace.route.and_then(|i| snapshot.routes.get(i));
    let route_name = route.map_or("-", |r| r.name.as_str());
    let (mut response, reason) = match result {
        Ok(response) => (response, None),
        Err(error) => {
            let reason = error.reason();
            count_rejection(&shared.metrics, route_name, &error);
            let style = route.map(|r| r.error_style).unwrap_or_default();
            (error.into_response(style), Some(reason))
        }
    };
    record(
        &shared.metrics,
        route,
        &method,
        response.status().as_u16(),
        started,
        &trace,
    );
    let headers = response.headers_mut();
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    if let Some(limit) = trace.limit {
        headers.insert(RATELIMIT_LIMIT.clone(), HeaderValue::from(limit.limit));
        headers.insert(
            RATELIMIT_REMAINING.clone(),
            HeaderValue::from(limit.remaining),
        );
        headers.insert(RATELIMIT_RESET.clone(), HeaderValue::from(limit.reset_secs));
    }

    tracing::info!(
        target: "access",
        route = route_name,
        tenant = trace.tenant.as_deref().unwrap_or("-"),
        %method,
        path = uri.path(),
        status = response.status().as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
        upstream_us = trace.upstream_latency.map_or(0, |d| d.as_micros() as u64),
        request_id = request_id.to_str().unwrap_or("-"),
        reason = reason.unwrap_or("-"),
    );
    Ok(response)
}

/// Counts one answered request in the route's series.
fn record(
    metrics: &Metrics,
    route: Option<&crate::snapshot::Route>,
    method: &http::Method,
    status: u16,
    started: Instant,
    trace: &Trace,
) {
    let elapsed = started.elapsed().as_secs_f64();
    match route {
        Some(route) => {
            // The route's own series, resolved once: no label allocated or hashed.
            let series = &route.series;
            series.count(metrics, &route.name, method, status);
            series.duration(metrics, &route.name).observe(elapsed);
            if let Some(upstream) = trace.upstream_latency {
                series
                    .upstream_duration(metrics, &route.name)
                    .observe(upstream.as_secs_f64());
            }
        }
        None => {
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    route: "-".to_string(),
                    method: method.to_string(),
                    status,
                })
                .inc();
            let labels = RouteLabels {
                route: "-".to_string(),
            };
            metrics.duration.get_or_create(&labels).observe(elapsed);
        }
    }
    if !trace.throttled && trace.reported.is_empty() {
        return;
    }
    let name = route.map_or("-", |r| r.name.as_str()).to_string();
    if trace.throttled {
        let named = match (
            route.and_then(|r| r.limiter.as_ref()),
            trace.tenant.as_deref(),
        ) {
            (Some(limiter), Some(tenant)) if limiter.is_named(tenant) => tenant.to_string(),
            _ => "other".to_string(),
        };
        metrics
            .rate_limited
            .get_or_create(&TenantLabels {
                route: name.clone(),
                tenant: named,
            })
            .inc();
    }
    for (location, reason) in &trace.reported {
        let labels = RejectionLabels {
            route: name.clone(),
            location: location.to_string(),
            reason: reason.to_string(),
        };
        metrics.report_only.get_or_create(&labels).inc();
    }
}

/// Counts a rejection by location and reason; for schema violations, also by field.
fn count_rejection(metrics: &Metrics, route: &str, error: &GatewayError) {
    if error.side() != crate::error::Side::Downstream {
        return;
    }
    match error {
        GatewayError::Invalid { violations, .. } => {
            for violation in violations {
                let location = violation.location.as_str();
                let labels = RejectionLabels {
                    route: route.to_string(),
                    location: location.to_string(),
                    reason: violation.keyword.to_string(),
                };
                metrics.rejections.get_or_create(&labels).inc();
                let field = crate::metrics::field_label(location, &violation.pointer);
                metrics
                    .rejected_fields
                    .get_or_create(&FieldLabels {
                        route: route.to_string(),
                        field,
                    })
                    .inc();
            }
        }
        other => {
            let labels = RejectionLabels {
                route: route.to_string(),
                location: "request".to_string(),
                reason: other.reason().to_string(),
            };
            metrics.rejections.get_or_create(&labels).inc();
        }
    }
}

/// The longest a client may take to send a validated body.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The limiter key of requests without a tenant ([`tenant::SHARED`]), owned once.
static SHARED_TENANT: String = String::new();

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The stages, in the order PRODUCT.md fixes: route (404/405), auth (401), tenant for
/// non-body sources (400/403), body size (413), framing (415/400), tenant from the body,
/// rate limit (429), schemas (422), then forward (502/504).
async fn handle_inner(
    snapshot: &Snapshot,
    downstream: Downstream,
    request_id: &HeaderValue,
    trace: &mut Trace,
    uri: &http::Uri,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let (mut parts, body) = request.into_parts();
    // Hop-by-hop fields (and every field `Connection` names) belong to the client's
    // connection: they are removed before anything looks at the headers, so what is checked
    // is exactly what is forwarded.
    forward::strip_hop_by_hop(&mut parts.headers);
    let found = snapshot.router.find(&parts.method, uri.path())?;
    trace.route = Some(found.route);
    let route = snapshot
        .routes
        .get(found.route)
        .ok_or(GatewayError::NotFound)?;

    let key = auth::check(route.auth, &parts.headers, &snapshot.api_keys)?;
    let tenant_inputs = |body| tenant::Inputs {
        headers: &parts.headers,
        query: parts.uri.query(),
        params: &found.params,
        body,
        key,
    };
    let mut report = validate::Report::default();
    let media = validate::enforce_or_report(
        route,
        validate::precheck(route, &parts.headers),
        &mut report,
    )?;

    // A route with a body schema reads the body whole (within its limit, 413 above it) to
    // parse it; what goes upstream is those same bytes. Other bodies stream through.
    let (body_bytes, body): (Option<Bytes>, RequestBody) = if route.schemas.body.is_some() {
        let read = framing::read_body(&parts.headers, body, route.limits.body);
        let mut read = std::pin::pin!(read);
        // A small body has usually arrived with the head: then it is read at once and no
        // timer is armed. Otherwise the client has the timeout to send the rest.
        let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
        let bytes = match first {
            Poll::Ready(result) => result?,
            Poll::Pending => tokio::time::timeout(BODY_READ_TIMEOUT, read)
                .await
                .map_err(|_| GatewayError::RequestTimeout)??,
        };
        let full = Full::new(bytes.clone()).map_err(|never| match never {});
        (Some(bytes), full.boxed_unsync())
    } else {
        (None, body.map_err(Into::into).boxed_unsync())
    };
    let view = validate::Parts {
        headers: &parts.headers,
        query: parts.uri.query(),
        params: &found.params,
        body: body_bytes.as_ref(),
    };
    let parsed = match media {
        Some(had_content_type) => validate::enforce_or_report(
            route,
            validate::parse(route, &view, had_content_type),
            &mut report,
        )?
        .flatten(),
        None => None,
    };

    // The tenant is resolved once framing is settled (so 415/413/400 come first), and the
    // limit applies before the schemas (429 before 422).
    let tenant = match &route.tenant {
        Some(rule) => Some(tenant::resolve(rule, &tenant_inputs(parsed.as_ref()))?),
        None => None,
    };
    if let Some(limiter) = &route.limiter {
        let who = tenant.as_ref().unwrap_or(&SHARED_TENANT);
        match limiter.check_owned(who) {
            ratelimit::Outcome::Allowed(info) => trace.limit = Some(info),
            ratelimit::Outcome::Throttled {
                info,
                retry_after_secs,
            } => {
                trace.limit = Some(info);
                trace.throttled = true;
                if !limiter.report_only() {
                    trace.tenant = tenant;
                    return Err(GatewayError::TooManyRequests { retry_after_secs });
                }
                tracing::warn!(
                    route = route.name,
                    tenant = who.as_str(),
                    "report-only: request would have been rate limited"
                );
            }
        }
    }
    trace.tenant = tenant;

    validate::conclude(
        route,
        validate::check(route, &view, parsed.as_ref()),
        &mut report,
    )?;
    trace.reported = std::mem::take(&mut report.labels);
    if !report.is_empty() {
        // Report-only: forward untouched, but say what would have been rejected.
        tracing::warn!(
            route = route.name,
            request_id = request_id.to_str().unwrap_or("-"),
            problems = ?report.messages,
            "report-only: request would have been rejected"
        );
        parts.headers.insert(
            validate::REPORT_HEADER.clone(),
            validate::report_value(&report),
        );
    }

    if let UpstreamTarget::Http(http) = &route.upstream.target {
        forward::upstream_request(
            &mut parts,
            &http.target(),
            &route.forward_path,
            &found.params,
            route.preserve_host,
            downstream,
            request_id,
        )
        .map_err(|e| GatewayError::UpstreamUnavailable {
            reason: format!("cannot build the upstream request: {e}"),
        })?;
    }
    let sent = Instant::now();
    let answer = route
        .upstream
        .send(
            Request::from_parts(parts, body),
            route.response_headers_timeout,
        )
        .await;
    trace.upstream_latency = Some(sent.elapsed());
    answer
}
