//! The admin listener: health, readiness, status, metrics, reload and the dashboard page.
//!
//! Separate from traffic (loopback by default). With `admin.token` set, every endpoint but
//! `/healthz` and `/readyz` (which probes call) needs `Authorization: Bearer <token>`.
//! Architecture invariant: nothing here is on the request path; it only reads `Shared`.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use subtle::ConstantTimeEq;

use crate::body::ResponseBody;
use crate::reload::{Reloader, Trigger};
use crate::state::Shared;

const DASHBOARD: &str = include_str!("admin/dashboard.html");

/// Answers one admin request. `reloader` is `None` when the gateway does not reload (then
/// `POST /reload` is a 503 and `/status` has no reload section).
pub async fn handle<B>(
    shared: Arc<Shared>,
    reloader: Option<Arc<Reloader>>,
    request: Request<B>,
) -> Result<Response<ResponseBody>, Infallible> {
    let path = request.uri().path();
    let open = matches!(path, "/healthz" | "/readyz");
    if !open && !authorized(&shared, request.headers()) {
        return Ok(json(
            StatusCode::UNAUTHORIZED,
            r#"{"statusCode":401,"message":"admin token required","error":"Unauthorized"}"#
                .to_string(),
        ));
    }
    let response = match (request.method(), path) {
        (&Method::GET, "/healthz") => json(StatusCode::OK, r#"{"status":"alive"}"#.to_string()),
        (&Method::GET, "/readyz") => {
            if shared.draining.load(Ordering::Relaxed) {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"status":"draining"}"#.to_string(),
                )
            } else {
                json(StatusCode::OK, r#"{"status":"ready"}"#.to_string())
            }
        }
        (&Method::GET, "/status") => json(
            StatusCode::OK,
            status(&shared, reloader.as_deref()).to_string(),
        ),
        (&Method::GET, "/metrics") => text(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            {
                set_jwt_metrics(&shared);
                shared.metrics.encode()
            },
        ),
        (&Method::GET, "/metrics.json") => json(StatusCode::OK, {
            set_jwt_metrics(&shared);
            metrics_json(&shared.metrics.encode()).to_string()
        }),
        (&Method::POST, "/reload") => reload(reloader.as_deref()).await,
        (&Method::GET, "/") => text("text/html; charset=utf-8", DASHBOARD.to_string()),
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"statusCode":404,"message":"no such admin endpoint","error":"Not Found"}"#
                .to_string(),
        ),
    };
    Ok(response)
}

fn authorized(shared: &Shared, headers: &http::HeaderMap) -> bool {
    let snapshot = shared.snapshot.load();
    let Some(token) = snapshot.admin.as_ref().and_then(|a| a.token.as_deref()) else {
        return true;
    };
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.as_bytes().get(7..))
        .unwrap_or_default();
    bool::from(presented.ct_eq(token.as_bytes()))
}

async fn reload(reloader: Option<&Reloader>) -> Response<ResponseBody> {
    let Some(reloader) = reloader else {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"reloaded":false,"errors":["reload is not enabled"]}"#.to_string(),
        );
    };
    match reloader.reload(Trigger::Admin).await {
        Ok(generation) => json(
            StatusCode::OK,
            serde_json::json!({"reloaded": true, "generation": generation}).to_string(),
        ),
        Err(errors) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({"reloaded": false, "errors": errors}).to_string(),
        ),
    }
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `/status`: version, uptime, generation, routes with their schema files and content
/// hashes, the last reload with its result, the directories watched for changes, and the
/// shared rate-limit store (Redis) when one is configured.
/// The JWT providers' fetch counts, key ages and key counts, read from the providers as they
/// are now (a provider a reload removed leaves no series behind).
fn set_jwt_metrics(shared: &Shared) {
    let snapshot = shared.snapshot.load();
    let metrics = &shared.metrics;
    metrics.jwks_fetches.clear();
    metrics.jwks_age.clear();
    metrics.jwt_keys.clear();
    for provider in &snapshot.jwt {
        let name = provider.name().to_string();
        let keys = provider.keys();
        let labels = crate::metrics::ProviderLabels {
            provider: name.clone(),
        };
        metrics
            .jwt_keys
            .get_or_create(&labels)
            .set(keys.keys.len() as i64);
        let Some(remote) = &provider.remote else {
            continue;
        };
        for (result, count) in [
            ("ok", &remote.fetched_ok),
            ("failed", &remote.fetched_failed),
        ] {
            let labels = crate::metrics::FetchLabels {
                provider: name.clone(),
                result,
            };
            let count = count.load(Ordering::Relaxed);
            metrics
                .jwks_fetches
                .get_or_create(&labels)
                .set(count as i64);
        }
        if let Some(age) = keys.fetched_at.and_then(|at| at.elapsed().ok()) {
            metrics
                .jwks_age
                .get_or_create(&labels)
                .set(age.as_secs() as i64);
        }
    }
}

/// Each JWT provider: where its keys come from, each key's `kid` and algorithms (never key
/// material), when they were had, the last fetch of a `jwks_url` and the tokens cached.
fn jwt_status(snapshot: &crate::snapshot::Snapshot) -> Vec<serde_json::Value> {
    use crate::jwt::KeySource;
    snapshot
        .jwt
        .iter()
        .map(|provider| {
            let keys = provider.keys();
            let settings = &provider.settings;
            let (kind, from) = match &settings.source {
                KeySource::Url(url) => ("jwks_url", url.clone()),
                KeySource::File(path) => ("jwks_file", path.display().to_string()),
                KeySource::Secret(path) => ("secret_file", path.display().to_string()),
            };
            let last_fetch = provider.remote.as_ref().map(|remote| {
                let outcome = remote.outcome.lock().map(|o| o.clone()).unwrap_or_default();
                serde_json::json!({
                    "at": outcome.at.map(unix),
                    "error": outcome.error,
                    "ok": remote.fetched_ok.load(Ordering::Relaxed),
                    "failed": remote.fetched_failed.load(Ordering::Relaxed),
                    "refresh_seconds": remote.refresh.as_secs(),
                })
            });
            serde_json::json!({
                "name": settings.name,
                "issuer": settings.issuer,
                "audiences": settings.audiences,
                "source": kind,
                "from": from,
                "keys": keys.keys.iter().map(|key| serde_json::json!({
                    "kid": key.kid,
                    "algorithms": key.algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "fetched_at": keys.fetched_at.map(unix),
                "last_fetch": last_fetch,
                "cached_tokens": provider.cached(),
            })
        })
        .collect()
}

pub fn status(shared: &Shared, reloader: Option<&Reloader>) -> serde_json::Value {
    let snapshot = shared.snapshot.load();
    let routes: Vec<_> = snapshot
        .routes
        .iter()
        .map(|route| {
            serde_json::json!({
                "name": route.name,
                "method": route.method.as_str(),
                "path": route.path,
                "upstream": route.upstream.describe(),
                "schemas": route.schema_files.iter().map(|f| serde_json::json!({
                    "location": f.location, "file": f.file, "sha256": f.sha256,
                })).collect::<Vec<_>>(),
                "validation": if route.report_only { "report" } else { "enforce" },
                "rate_limit": route.limiter.as_ref().map(|l| serde_json::json!({
                    "quota": format!("{}/{}s", l.spec().count, l.spec().per.as_secs()),
                    "burst": l.spec().burst,
                    "tracked_tenants": l.tracked_tenants(),
                })),
            })
        })
        .collect();
    let last_reload = reloader.map(|r| {
        let status = r.status();
        serde_json::json!({
            "at": status.at.map(unix),
            "trigger": status.trigger.map(Trigger::as_str),
            "ok": status.errors.is_empty(),
            "errors": status.errors,
            "restart_required": status.restart_required,
            "succeeded": r.succeeded.load(Ordering::Relaxed),
            "failed": r.failed.load(Ordering::Relaxed),
        })
    });
    // What a change to which file will do: every directory watched, with what it holds.
    let watching: Vec<_> = reloader.map_or_else(Vec::new, |r| {
        r.watching()
            .iter()
            .map(|dir| {
                serde_json::json!({
                    "path": dir.path.display().to_string(),
                    "recursive": dir.recursive,
                    "for": dir.reasons,
                    "error": dir.error,
                })
            })
            .collect()
    });
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": SystemTime::now().duration_since(shared.started).map_or(0, |d| d.as_secs()),
        "generation": snapshot.generation,
        "config": snapshot.source.display().to_string(),
        "draining": shared.draining.load(Ordering::Relaxed),
        "in_flight": shared.metrics.in_flight_now(),
        "listeners": snapshot.listeners.iter().map(|listener| serde_json::json!({
            "address": listener.address.to_string(),
            "tls": listener.tls.as_ref().map(|tls| serde_json::json!({
                "certificates": tls.certificates.iter().map(|c| serde_json::json!({
                    "subject": c.subject,
                    "names": c.names,
                    "not_after": c.not_after,
                    "serial": c.serial,
                })).collect::<Vec<_>>(),
            })),
        })).collect::<Vec<_>>(),
        "routes": routes,
        "last_reload": last_reload,
        "watching": watching,
        "jwt": jwt_status(&snapshot),
        "redis": snapshot.redis.as_ref().map(|store| {
            let state = store.state();
            let settings = store.settings();
            serde_json::json!({
                "address": state.address,
                "connected": state.connected,
                "last_check": state.last,
                "timeout_ms": settings.timeout.as_millis() as u64,
                "on_error": match settings.on_error {
                    crate::config::OnRedisError::Local => "local",
                    crate::config::OnRedisError::Allow => "allow",
                    crate::config::OnRedisError::Deny => "deny",
                },
                "key_prefix": settings.key_prefix,
            })
        }),
    })
}

/// The exposition as JSON samples `{name, labels, value}`, for the dashboard page.
fn metrics_json(exposition: &str) -> serde_json::Value {
    let samples: Vec<_> = exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels: serde_json::Map<String, serde_json::Value> = labels
                .split("\",")
                .filter_map(|pair| {
                    let (key, value) = pair.split_once("=\"")?;
                    Some((
                        key.to_string(),
                        serde_json::Value::String(value.trim_end_matches('"').to_string()),
                    ))
                })
                .collect();
            Some(serde_json::json!({"name": name, "labels": labels, "value": value}))
        })
        .collect();
    serde_json::Value::Array(samples)
}

fn json(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut response = text("application/json", body);
    *response.status_mut() = status;
    response
}

fn text(content_type: &'static str, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_json_parses_samples() {
        let text = "# HELP x y\nschemagate_requests_total{route=\"r\",method=\"GET\",status=\"200\"} 3\nschemagate_config_generation 2\n";
        let json = metrics_json(text);
        assert_eq!(json[0]["name"], "schemagate_requests_total");
        assert_eq!(json[0]["labels"]["status"], "200");
        assert_eq!(json[0]["value"], 3.0);
        assert_eq!(json[1]["value"], 2.0);
    }
}
