//! Validation: [`check`] collects every schema violation of path, query, headers, cookies and body at
//! once (422), after the rate limit (PRODUCT.md, "Order of checks"); the body's own framing
//! and parse (415, 413, 400) are `framing`'s. Also the validation mode (enforce or report)
//! every stage's result goes through. Only reads the compiled snapshot: no schema is compiled
//! and no file is read here.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};

use crate::error::GatewayError;
use crate::schema::{Location, Parsed, Violation};
use crate::snapshot::Route;

/// The request parts validation looks at.
pub struct Parts<'a> {
    pub headers: &'a HeaderMap,
    /// The raw query string, as on the wire.
    pub query: Option<&'a str>,
    /// Path parameters captured by the router.
    pub params: &'a crate::route::Params<'a>,
    /// The body, read whole, when the route has a body schema.
    pub body: Option<&'a Bytes>,
}

/// What validation found: worded violations (up to the route's cap) and how many more
/// there were.
#[derive(Debug, Default)]
pub struct Findings {
    pub violations: Vec<Violation>,
    pub omitted: usize,
}

/// What a report-only route would have rejected: the worded problems (up to the route's cap)
/// and how many there were in all.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub total: usize,
    pub messages: Vec<String>,
    /// (location, reason) of each worded problem, for metrics.
    pub labels: Vec<(&'static str, &'static str)>,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// Every schema violation of path, query, headers and (parsed) body, worded up to the cap.
pub fn check(route: &Route, parts: &Parts<'_>, body: Option<&Parsed>) -> Findings {
    let schemas = &route.schemas;
    let cap = route.limits.violations;
    let mut violations = Vec::new();
    let mut omitted = 0;
    if let Some(schema) = &schemas.path {
        let (value, mut found) = schema.coerce_params(Location::Path, parts.params.iter());
        violations.append(&mut found);
        omitted += schema.collect_violations(Location::Path, &value, &mut violations, cap);
    }
    if let Some(schema) = &schemas.query {
        let (value, mut found) = schema.coerce_query(parts.query);
        violations.append(&mut found);
        omitted += schema.collect_violations(Location::Query, &value, &mut violations, cap);
    }
    if let Some(schema) = &schemas.headers {
        let (fields, mut found) = schema.coerce_headers(parts.headers);
        violations.append(&mut found);
        omitted +=
            schema.collect_fields_violations(Location::Header, &fields, &mut violations, cap);
    }
    if let Some(schema) = &schemas.cookies {
        let (value, mut found) = schema.coerce_cookies(parts.headers);
        violations.append(&mut found);
        omitted += schema.collect_violations(Location::Cookie, &value, &mut violations, cap);
    }
    if route.strict {
        let query = crate::schema::CompiledSchema::raw_query(parts.query);
        violations.extend(crate::schema::unknown_keys(
            schemas.query.as_ref(),
            Location::Query,
            &query,
        ));
        violations.extend(crate::schema::unknown_headers(
            schemas.headers.as_ref(),
            parts.headers,
            standard_header,
        ));
        // Unknown body fields, at every depth, are the strict body schema's own
        // (`unevaluatedProperties`, see `schema/strict.rs`).
    }
    if let (Some(schema), Some(parsed)) = (&schemas.body, body) {
        omitted += schema.collect_body_violations(parsed, &mut violations, cap);
        if let (true, Some(bytes)) = (parsed.inexact, parts.body) {
            let depth = route.limits.json_depth;
            omitted += schema.collect_inexact(bytes, depth, &mut violations, cap);
        }
    }
    Findings {
        violations,
        omitted,
    }
}

/// Request headers strict mode leaves alone: HTTP's own (RFC 9110, 9111, 9112, 6265,
/// 7239), the CORS and fetch-metadata ones browsers send, and the forwarding and tracing ones
/// proxies add. Names arrive lowercase.
fn standard_header(name: &str) -> bool {
    const STANDARD: &[&str] = &[
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "authorization",
        "cache-control",
        "connection",
        "content-encoding",
        "content-language",
        "content-length",
        "content-type",
        "cookie",
        "date",
        "dnt",
        "expect",
        "forwarded",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "keep-alive",
        "max-forwards",
        "origin",
        "pragma",
        "priority",
        "proxy-authorization",
        "range",
        "referer",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "upgrade-insecure-requests",
        "user-agent",
        "via",
        "access-control-request-method",
        "access-control-request-headers",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-real-ip",
        "x-request-id",
        "traceparent",
        "tracestate",
        "baggage",
    ];
    STANDARD.contains(&name) || name.starts_with("sec-")
}

/// Applies the route's validation mode to a stage's result: in `enforce` mode an error
/// stands; in `report` mode it is added to `report` and the request goes on.
pub fn enforce_or_report<T>(
    route: &Route,
    result: Result<T, GatewayError>,
    report: &mut Report,
) -> Result<Option<T>, GatewayError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(error) if !route.report_only => Err(error),
        Err(error) => {
            report.total += 1;
            report.messages.push(error.to_string());
            report.labels.push(("request", error.reason()));
            Ok(None)
        }
    }
}

/// Turns findings into the 422 (enforce) or adds them to `report` (report-only).
pub fn conclude(route: &Route, found: Findings, report: &mut Report) -> Result<(), GatewayError> {
    if found.violations.is_empty() && found.omitted == 0 {
        return Ok(());
    }
    if !route.report_only {
        return Err(GatewayError::Invalid {
            violations: found.violations,
            omitted: found.omitted,
            cap: route.limits.violations,
        });
    }
    report.total += found.violations.len() + found.omitted;
    for violation in found.violations {
        report
            .labels
            .push((violation.location.as_str(), violation.keyword));
        report.messages.push(violation.message);
    }
    Ok(())
}

/// The header that tells the upstream, in report-only mode, what would have been rejected.
pub static REPORT_HEADER: http::HeaderName =
    http::HeaderName::from_static("x-schemagate-violations");

/// One line summarising what would have been rejected: `2 violations: a; b`. Header values
/// must be visible ASCII, so anything else becomes `?`; the line is capped at 2 KiB.
pub fn report_value(report: &Report) -> HeaderValue {
    let mut line = match report.total {
        1 => "1 violation: ".to_string(),
        n => format!("{n} violations: "),
    };
    line.push_str(&report.messages.join("; "));
    let mut clean: String = line
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if clean.len() > 2048 {
        clean.truncate(2045);
        clean.push_str("...");
    }
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("invalid request"))
}
