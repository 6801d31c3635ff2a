//! The request path: an infallible outer [`handle`] around [`handle_inner`], which runs the
//! stages in order with `?`.
//!
//! `handle` loads the snapshot once (so a request never sees two config generations), assigns
//! the request id, turns any `GatewayError` into its envelope, and writes the access line.
//! It never returns `Err`: an error that reached hyper would drop the connection without an
//! answer. A panic inside the stages is caught there too and becomes a 500 for that request
//! alone; the connection and the process carry on.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use crate::accesslog;
use crate::auth;
use crate::body::ResponseBody;
use crate::config::{OnRedisError, Store, UnderscoreHeaders};
use crate::error::GatewayError;
use crate::forward::{self, Downstream, X_REQUEST_ID};
use crate::framing;
use crate::metrics::{
    FieldLabels, Metrics, RejectionLabels, RequestLabels, RouteLabels, TenantLabels,
};
use crate::ratelimit::{self, LimitInfo};
use crate::snapshot::{ServerLimits, Snapshot};
pub use crate::state::Shared;
use crate::tenant;
use crate::upstream::UpstreamTarget;
use crate::validate;

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
    /// Header field lines dropped for an `_` in their name.
    dropped_headers: usize,
    /// A shared (Redis) rate-limit check was made: `Ok`, or the error's kind.
    redis: Option<(Result<(), &'static str>, std::time::Duration)>,
    /// A JWT was checked: `(result, reason)` (see `jwt::outcome`).
    jwt: Option<(&'static str, &'static str)>,
}

/// Answers one request.
///
/// Memory: this future is allocated for every request (`server` boxes it), so it is kept
/// small. The request's own values are taken before the `async` block, which then holds them
/// once: an `async fn` keeps each argument twice (as passed and as its local), and so do the
/// functions this one awaits (`handle_inner`, `Upstream::send`).
pub fn handle(
    shared: Arc<Shared>,
    downstream: Downstream,
    request: Request<Incoming>,
) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> + Send {
    let started = Instant::now();
    let snapshot = shared.snapshot.load_full();
    let request_id = forward::request_id(request.headers());
    let method = request.method().clone();
    let version = request.version();
    // A clone of the parsed URI shares its bytes: the path is kept for the access line and
    // the router without copying it.
    let uri = request.uri().clone();
    async move {
        let in_flight = shared.metrics.track_in_flight();
        let mut trace = Trace::default();

        // Over the in-flight cap: refused at once, never queued.
        let result = if in_flight.position() > snapshot.server.in_flight {
            Err(GatewayError::Unavailable {
                retry_after_secs: 1,
            })
        } else {
            let inner = handle_inner(
                &snapshot,
                &downstream,
                &request_id,
                &mut trace,
                &uri,
                request,
            );
            match catch_panic(inner).await {
                Ok(result) => result,
                Err(payload) => {
                    tracing::error!(
                        request_id = request_id.to_str().unwrap_or("-"),
                        %method,
                        path = uri.path(),
                        panic = panic_message(payload.as_ref()),
                        "request handling panicked; answering 500"
                    );
                    Err(GatewayError::Internal)
                }
            }
        };
        let route = trace.route.and_then(|i| snapshot.routes.get(i));
        let route_name = route.map_or("-", |r| r.name.as_str());
        let (mut response, reason) = match result {
            // `responses: report`: only those routes' answers are looked at (and wrapped).
            Ok(response) => match (route, trace.route) {
                (Some(r), Some(index)) if r.responses.is_some() => {
                    let response = crate::response_check::watch(
                        &shared,
                        &snapshot,
                        index,
                        &method,
                        &request_id,
                        response,
                    );
                    (response, None)
                }
                _ => (response, None),
            },
            Err(error) => {
                let reason = error.reason();
                count_rejection(&shared.metrics, route_name, &error);
                let style = route.map(|r| r.error_style).unwrap_or_default();
                // HTTP/2 has no `Connection` field; its streams do not share framing.
                let close = error.closes_connection() && version <= http::Version::HTTP_11;
                let mut response = error.into_response(style);
                if close {
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                }
                (response, Some(reason))
            }
        };
        // One clock reading for the metrics and the access line.
        let elapsed = started.elapsed();
        record(
            &shared.metrics,
            route,
            &method,
            response.status().as_u16(),
            elapsed,
            &trace,
        );
        let headers = response.headers_mut();
        headers.insert(X_REQUEST_ID.clone(), request_id.clone());
        if let Some(limit) = trace.limit {
            headers.insert(RATELIMIT_LIMIT.clone(), count_value(limit.limit.into()));
            headers.insert(
                RATELIMIT_REMAINING.clone(),
                count_value(limit.remaining.into()),
            );
            headers.insert(RATELIMIT_RESET.clone(), count_value(limit.reset_secs));
        }

        if shared.access_log.is_on() {
            shared.access_log.record(&accesslog::Entry {
                route: route_name,
                tenant: trace.tenant.as_deref().unwrap_or("-"),
                method: method.as_str(),
                path: uri.path(),
                status: response.status().as_u16(),
                latency_us: elapsed.as_micros() as u64,
                upstream_us: trace.upstream_latency.map_or(0, |d| d.as_micros() as u64),
                request_id: request_id.to_str().unwrap_or("-"),
                reason: reason.unwrap_or("-"),
            });
        }
        Ok(response)
    }
}

/// Polls `inner`, turning a panic in any poll into `Err` with the panic's payload.
///
/// Unwind safety is asserted: what a stage may leave half-done is its own request's state
/// (the trace, the request parts), which is thrown away; shared state (snapshot, limiters,
/// metrics) is only touched through atomics and locks that release on unwind.
fn catch_panic<F: Future>(inner: F) -> CatchPanic<F> {
    CatchPanic { inner }
}

pin_project! {
    /// See [`catch_panic`]. A future of its own rather than an `async fn`, which would hold
    /// `inner` twice (its argument and the pinned local): 2.3 KB more in every connection's
    /// request slot.
    struct CatchPanic<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// The text of a panic payload (`panic!` with a literal or a format string), if it has one.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Counts one answered request in the route's series.
fn record(
    metrics: &Metrics,
    route: Option<&crate::snapshot::Route>,
    method: &http::Method,
    status: u16,
    elapsed: std::time::Duration,
    trace: &Trace,
) {
    let elapsed = elapsed.as_secs_f64();
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
                    method: crate::metrics::method_label(method).to_string(),
                    status,
                })
                .inc();
            let labels = RouteLabels {
                route: "-".to_string(),
            };
            metrics.duration.get_or_create(&labels).observe(elapsed);
        }
    }
    if let Some((call, took)) = trace.redis {
        if let Some(route) = route {
            route
                .series
                .fallback(metrics, &route.name)
                .set(i64::from(call.is_err()));
        }
        metrics.redis_calls.inc();
        metrics.redis_duration.observe(took.as_secs_f64());
        if let Err(reason) = call {
            metrics
                .redis_errors
                .get_or_create(&crate::metrics::ReasonLabels { reason })
                .inc();
        }
    }
    if let (Some((result, reason)), Some(rule)) = (trace.jwt, route.and_then(|r| r.jwt.as_ref())) {
        metrics
            .jwt_verifications
            .get_or_create(&crate::metrics::JwtLabels {
                provider: rule.provider.name().to_string(),
                result,
                reason,
            })
            .inc();
    }
    if trace.dropped_headers > 0 {
        metrics
            .dropped_underscore_headers
            .inc_by(trace.dropped_headers as u64);
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
                metrics
                    .rejected_fields
                    .get_or_create(&FieldLabels {
                        route: route.to_string(),
                        field: violation.field.clone(),
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

/// The limiter key of requests without a tenant ([`tenant::SHARED`]), owned once.
static SHARED_TENANT: String = String::new();

/// Stage: the route's rate limit for `tenant` (429 over it, with `Retry-After`). With
/// `store: redis` the shared bucket decides; when Redis gives no answer within its timeout,
/// `on_error` does: the local limiter (`local`), forward (`allow`) or 503 (`deny`).
async fn rate_limit(
    snapshot: &Snapshot,
    route: &crate::snapshot::Route,
    tenant: Option<String>,
    trace: &mut Trace,
) -> Result<(), GatewayError> {
    if let Some(limiter) = &route.limiter {
        let who = tenant.as_ref().unwrap_or(&SHARED_TENANT);
        let outcome = match (route.store, &snapshot.redis) {
            // Boxed: only these requests pay for the Redis call's state, not every request's
            // future (see `handle`).
            (Store::Redis, Some(redis)) => {
                let started = Instant::now();
                let spec = limiter.spec_for(who);
                let ceiling = limiter.ceiling();
                let answer = Box::pin(redis.check(&route.name, who, &spec, ceiling.as_ref())).await;
                let took = started.elapsed();
                match answer {
                    Ok(outcome) => {
                        trace.redis = Some((Ok(()), took));
                        Some(outcome)
                    }
                    Err(error) => {
                        trace.redis = Some((Err(error.kind()), took));
                        redis.warn(&route.name, &error);
                        match redis.on_error() {
                            OnRedisError::Local => Some(limiter.check_owned(who)),
                            // Forwarded unlimited: no `RateLimit-*` headers claim a state.
                            OnRedisError::Allow => None,
                            OnRedisError::Deny => {
                                trace.tenant = tenant;
                                return Err(GatewayError::Unavailable {
                                    retry_after_secs: 1,
                                });
                            }
                        }
                    }
                }
            }
            // `store: local`, or (never, by `snapshot`) `store: redis` without a store.
            _ => Some(limiter.check_owned(who)),
        };
        match outcome {
            Some(ratelimit::Outcome::Allowed(info)) => trace.limit = Some(info),
            Some(ratelimit::Outcome::Throttled {
                info,
                retry_after_secs,
            }) => {
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
            None => {}
        }
    }
    trace.tenant = tenant;
    Ok(())
}

/// The counts below this are written once, at first use, and shared by every answer after:
/// the `RateLimit-*` values of usual quotas (limit, remaining, seconds to reset) are small,
/// and `HeaderValue::from(u64)` allocates each time.
const SMALL_COUNTS: usize = 1024;

static SMALL_COUNTS_TEXT: LazyLock<String> =
    LazyLock::new(|| (0..SMALL_COUNTS).map(|n| n.to_string()).collect());

static SMALL_COUNT_VALUES: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    let text: &'static str = SMALL_COUNTS_TEXT.as_str();
    let mut start = 0;
    (0..SMALL_COUNTS)
        .map(|n| {
            let end = start + n.to_string().len();
            // Digits only: a valid header value, so `from_static` cannot panic here.
            let value = HeaderValue::from_static(text.get(start..end).unwrap_or("0"));
            start = end;
            value
        })
        .collect()
});

/// A count as a header value, without an allocation when it is small.
fn count_value(n: u64) -> HeaderValue {
    usize::try_from(n)
        .ok()
        .and_then(|i| SMALL_COUNT_VALUES.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(n))
}

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The stages, in the order PRODUCT.md fixes. This function is that order in code; the one
/// description of it, with each stage's answers, is ARCHITECTURE.md's "The request's path".
/// [`dry_run`] runs the same stages offline minus tenant, rate limit and forward.
fn handle_inner<'a>(
    snapshot: &'a Snapshot,
    downstream: &'a Downstream,
    request_id: &'a HeaderValue,
    trace: &'a mut Trace,
    uri: &'a http::Uri,
    request: Request<Incoming>,
) -> impl Future<Output = Result<Response<ResponseBody>, GatewayError>> + Send + 'a {
    // Split before the `async` block, which then holds the parts once (see `handle`).
    let (mut parts, body) = request.into_parts();
    async move {
        // What hyper let through but RFC 9112 does not (400, connection closed), while the
        // framing fields are still there to look at.
        crate::conformance::check(&parts)?;
        // The head's size is judged as the client sent it, before anything is removed.
        check_head(&snapshot.server, &parts)?;
        // Hop-by-hop fields (and every field `Connection` names) belong to the client's
        // connection: they are removed before anything looks at the headers, so what is checked
        // is exactly what is forwarded.
        forward::strip_hop_by_hop(&mut parts.headers);
        // Names with `_` read as their dashed twins to CGI/WSGI backends (`X_Tenant` beside a
        // validated `X-Tenant`): unless kept on purpose, they go before anything reads them.
        if snapshot.server.underscore_headers == UnderscoreHeaders::Drop {
            trace.dropped_headers = forward::drop_underscored(&mut parts.headers);
        }
        let found = snapshot.router.find(&parts.method, uri.path())?;
        trace.route = Some(found.route);
        // Only in this crate's unit tests: the way `tests::a_panic_is_a_500_for_that_request_only`
        // makes a stage panic. Never compiled into the gateway.
        #[cfg(test)]
        if parts.headers.contains_key(tests::PANIC_HEADER) {
            panic!("test panic requested");
        }
        let route = snapshot
            .routes
            .get(found.route)
            .ok_or(GatewayError::NotFound)?;

        let key = auth::check(route.auth, &parts.headers, &snapshot.api_keys)?;
        let claims = match &route.jwt {
            Some(rule) => {
                let checked = rule.check(&mut parts.headers).await;
                trace.jwt = Some(crate::jwt::outcome(&checked));
                Some(checked?.claims)
            }
            None => None,
        };
        let tenant_inputs = |body| tenant::Inputs {
            headers: &parts.headers,
            query: parts.uri.query(),
            params: &found.params,
            body,
            key,
            client: downstream.client_subject.as_deref(),
            claims: claims.as_deref(),
        };
        let mut report = validate::Report::default();
        let framing::Settled {
            bytes,
            upstream: body,
            streamed,
            parsed,
        } = framing::settle(route, &parts.headers, body, &mut report).await?;
        let view = validate::Parts {
            headers: &parts.headers,
            query: parts.uri.query(),
            params: &found.params,
            body: bytes.as_ref(),
        };

        // The tenant is resolved once framing is settled (so 415/413/400 come first), and the
        // limit applies before the schemas (429 before 422).
        let tenant = match &route.tenant {
            Some(rule) => Some(tenant::resolve(rule, &tenant_inputs(parsed.as_ref()))?),
            None => None,
        };
        rate_limit(snapshot, route, tenant, trace).await?;

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
        // The wait for the upstream's headers starts when the request does; a streamed body is
        // still being sent for up to the body timeout, which is the client's time, not the
        // upstream's (a slow upload past it is a 408 from the body guard, not a 504).
        let wait = if streamed {
            route.response_headers_timeout + route.body_timeout
        } else {
            route.response_headers_timeout
        };
        let sent = Instant::now();
        let answer = route
            .upstream
            .send(
                Request::from_parts(parts, body),
                wait,
                route.response_headers_timeout,
            )
            .await;
        trace.upstream_latency = Some(sent.elapsed());
        answer
    }
}

/// Refuses request heads over the connection-level limits: too many header fields or header
/// bytes (431), a request target too long (414). hyper's own parser limits are at or above
/// these (see `server::http1`), so the answer here is the envelope.
fn check_head(limits: &ServerLimits, parts: &http::request::Parts) -> Result<(), GatewayError> {
    let target = parts.uri.path_and_query().map_or(0, |p| p.as_str().len())
        + parts.uri.authority().map_or(0, |a| a.as_str().len());
    if target > limits.uri {
        return Err(GatewayError::UriTooLong { limit: limits.uri });
    }
    if parts.headers.len() > limits.headers {
        return Err(GatewayError::HeadersTooLarge {
            message: format!("more than {} header fields", limits.headers),
        });
    }
    let bytes: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if bytes > limits.header_bytes {
        return Err(GatewayError::HeadersTooLarge {
            message: format!("header fields larger than {} bytes", limits.header_bytes),
        });
    }
    Ok(())
}

/// What the gateway would answer to a request, decided offline (`schemagate validate`):
/// auth, body size, framing, then the schemas. `Ok` holds the report-only problems, if any.
/// Tenants and rate limits are not applied offline.
pub fn dry_run(
    route: &crate::snapshot::Route,
    keys: &[auth::ApiKey],
    parts: &validate::Parts<'_>,
) -> Result<validate::Report, GatewayError> {
    auth::check(route.auth, parts.headers, keys)?;
    if let Some(rule) = &route.jwt {
        rule.check_offline(&mut parts.headers.clone())?;
    }
    let mut report = validate::Report::default();
    // The same checks as `framing::settle`, in its order, on a body already in hand.
    let media = validate::enforce_or_report(
        route,
        framing::accepted_media_type(route, parts.headers),
        &mut report,
    )?;
    if let Some(body) = parts.body {
        if body.len() as u64 > route.limits.body {
            return Err(GatewayError::PayloadTooLarge {
                limit: route.limits.body,
            });
        }
    }
    let parses = framing::parses(route, parts.headers);
    let body = match (media, parses, parts.body) {
        (Some(had_content_type), true, Some(bytes)) => validate::enforce_or_report(
            route,
            framing::parse(route, bytes, had_content_type),
            &mut report,
        )?
        .flatten(),
        _ => None,
    };
    validate::conclude(
        route,
        validate::check(route, parts, body.as_ref()),
        &mut report,
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    /// The request header that makes `handle_inner` panic, in this crate's unit tests only.
    pub(super) const PANIC_HEADER: &str = "x-schemagate-test-panic";

    /// Collects formatted log lines.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A gateway whose access log writes to `access` (text lines); finish the writer before
    /// reading them.
    fn mock_gateway(access: Logs) -> (tempfile::TempDir, Arc<Shared>, crate::accesslog::Writer) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mock.json"), r#"{"ok":true}"#).unwrap();
        let config = dir.path().join("gateway.yaml");
        std::fs::write(
            &config,
            "listeners:\n  - address: 127.0.0.1:0\n\
             upstreams:\n  demo:\n    url: mock\n    mock: { status: 200, body_file: mock.json }\n\
             routes:\n  - { name: r, method: GET, path: /x, upstream: demo }\n",
        )
        .unwrap();
        let snapshot = Snapshot::load(&config).unwrap();
        let (log, writer) = crate::accesslog::AccessLog::start(
            Box::new(access),
            None,
            crate::config::LogFormat::Text,
            crate::accesslog::DEFAULT_BUFFER,
        )
        .unwrap();
        (dir, Shared::with_access_log(snapshot, log), writer)
    }

    /// A current-thread runtime, so the thread's log subscriber sees every task.
    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_is_a_500_for_that_request_only() {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let _logging = tracing::subscriber::set_default(subscriber);

        let access = Logs::default();
        let (_dir, shared, access_writer) = mock_gateway(access.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Arc::clone(&shared);
        tokio::spawn(async move {
            let (stream, peer) = listener.accept().await.unwrap();
            let downstream = Downstream {
                peer: peer.ip(),
                tls: false,
                client_subject: None,
            };
            let service =
                service_fn(move |request| handle(Arc::clone(&server), downstream.clone(), request));
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
        });

        // Three requests on one connection: two panic, then one is served as usual.
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        for panics in [true, true, false] {
            let mut request = Request::builder().uri("/x").header("host", "gw");
            if panics {
                request = request.header(PANIC_HEADER, "1");
            }
            let request = request.body(Full::new(Bytes::new())).unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status().as_u16();
            assert!(response.headers().contains_key(&X_REQUEST_ID));
            let body = response.into_body().collect().await.unwrap().to_bytes();
            if panics {
                assert_eq!(status, 500);
                assert_eq!(
                    &body[..],
                    br#"{"statusCode":500,"message":"the gateway failed while handling this request","error":"Internal Server Error"}"#
                );
            } else {
                assert_eq!((status, &body[..]), (200, &br#"{"ok":true}"#[..]));
            }
        }

        let count = |status| {
            shared
                .metrics
                .requests
                .get_or_create(&RequestLabels {
                    route: "r".into(),
                    method: "GET".into(),
                    status,
                })
                .get()
        };
        assert_eq!((count(500), count(200)), (2, 1));
        let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let panicked: Vec<_> = logs
            .lines()
            .filter(|l| l.contains("request handling panicked"))
            .collect();
        assert_eq!(panicked.len(), 2, "{logs}");
        assert!(panicked[0].contains("ERROR"), "{logs}");
        assert!(panicked[0].contains("test panic requested"), "{logs}");
        // The access log has a line for each, with the reason; diagnostics have none.
        assert!(access_writer.finish(std::time::Duration::from_secs(10)));
        let access = String::from_utf8(access.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            access
                .lines()
                .filter(|l| l.contains(" status=500 ") && l.ends_with(" reason=internal"))
                .count(),
            2,
            "{access}"
        );
        assert_eq!(access.lines().count(), 3, "{access}");
        assert!(!logs.contains("status=500"), "{logs}");
    }

    #[tokio::test]
    async fn catch_panic_passes_output_through_and_catches_string_payloads() {
        assert_eq!(catch_panic(async { 7 }).await.ok(), Some(7));
        let payload = catch_panic(async {
            tokio::task::yield_now().await;
            panic!("after {} polls", 2)
        })
        .await
        .unwrap_err();
        assert_eq!(panic_message(payload.as_ref()), "after 2 polls");
    }

    #[test]
    fn count_values_read_as_their_numbers() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            999,
            1000,
            1023,
            1024,
            65_536,
            u64::MAX,
        ] {
            assert_eq!(count_value(n).to_str().unwrap(), n.to_string(), "{n}");
        }
    }
}
