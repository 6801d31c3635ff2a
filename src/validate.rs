//! Stage 5: the request against its route's schemas.
//!
//! Runs after auth and after the body was read within its size limit. Rejects a body of the
//! wrong media type (415), an empty, unparseable, duplicate-key, invalid UTF-8 or too deep
//! body (400), and collects every schema violation of path, query, headers and body at once
//! (422). It only reads the compiled snapshot: no schema is compiled and no file is read here.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};

use crate::error::GatewayError;
use crate::framing;
use crate::schema::{self, Location, Violation};
use crate::snapshot::Route;

/// The request parts validation looks at.
pub struct Parts<'a> {
    pub headers: &'a HeaderMap,
    /// The raw query string, as on the wire.
    pub query: Option<&'a str>,
    /// Path parameters captured by the router.
    pub params: &'a matchit::Params<'a, 'a>,
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

/// Returns the schema violations (none when valid), or the framing error that prevents
/// validating the body at all.
pub fn check(route: &Route, parts: &Parts<'_>) -> Result<Findings, GatewayError> {
    let schemas = &route.schemas;
    let cap = route.limits.violations;
    let mut violations = Vec::new();
    let mut omitted = 0;
    // Framing first: a 400/415 outranks any 422 (PRODUCT.md, "Order of checks").
    let body = match (&schemas.body, parts.body) {
        (Some(schema), Some(bytes)) => {
            framing::check_media_type(parts.headers)?;
            let value = schema::parse_body(bytes, route.limits.json_depth).map_err(|e| {
                GatewayError::BadRequest {
                    message: e.to_string(),
                }
            })?;
            Some((schema, value))
        }
        _ => None,
    };
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
        let (value, mut found) = schema.coerce_headers(parts.headers);
        violations.append(&mut found);
        omitted += schema.collect_violations(Location::Header, &value, &mut violations, cap);
    }
    if let Some((schema, value)) = &body {
        omitted += schema.collect_violations(Location::Body, value, &mut violations, cap);
    }
    Ok(Findings {
        violations,
        omitted,
    })
}

/// What a report-only route would have rejected: the worded problems (up to the route's cap)
/// and how many there were in all.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub total: usize,
    pub messages: Vec<String>,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// Applies the route's validation mode: in `enforce` mode any problem is the error to answer
/// with; in `report` mode the request goes on and the problems are returned for reporting.
pub fn decide(route: &Route, parts: &Parts<'_>) -> Result<Report, GatewayError> {
    match check(route, parts) {
        Ok(found) if found.violations.is_empty() && found.omitted == 0 => Ok(Report::default()),
        Ok(Findings {
            violations,
            omitted,
        }) if !route.report_only => Err(GatewayError::Invalid {
            violations,
            omitted,
            cap: route.limits.violations,
        }),
        Ok(Findings {
            violations,
            omitted,
        }) => Ok(Report {
            total: violations.len() + omitted,
            messages: violations.into_iter().map(|v| v.message).collect(),
        }),
        Err(error) if !route.report_only => Err(error),
        Err(error) => Ok(Report {
            total: 1,
            messages: vec![error.to_string()],
        }),
    }
}

/// What the gateway would answer to a request, decided offline (`schemagate validate`):
/// auth, body size, then [`decide`]. `Ok` holds the report-only problems, if any.
pub fn dry_run(route: &Route, parts: &Parts<'_>) -> Result<Report, GatewayError> {
    crate::auth::check(route.auth, parts.headers)?;
    if let Some(body) = parts.body {
        if body.len() as u64 > route.limits.body {
            return Err(GatewayError::PayloadTooLarge {
                limit: route.limits.body,
            });
        }
    }
    decide(route, parts)
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
