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

/// Returns every schema violation (empty when valid), or the framing error that prevents
/// validating the body at all.
pub fn check(route: &Route, parts: &Parts<'_>) -> Result<Vec<Violation>, GatewayError> {
    let schemas = &route.schemas;
    let mut violations = Vec::new();
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
        violations.extend(schema.violations(Location::Path, &value));
    }
    if let Some(schema) = &schemas.query {
        let (value, mut found) = schema.coerce_query(parts.query);
        violations.append(&mut found);
        violations.extend(schema.violations(Location::Query, &value));
    }
    if let Some(schema) = &schemas.headers {
        let (value, mut found) = schema.coerce_headers(parts.headers);
        violations.append(&mut found);
        violations.extend(schema.violations(Location::Header, &value));
    }
    if let Some((schema, value)) = &body {
        violations.extend(schema.violations(Location::Body, value));
    }
    Ok(violations)
}

/// Applies the route's validation mode: in `enforce` mode any problem is the error to answer
/// with; in `report` mode the request goes on and the problems are returned for reporting.
pub fn decide(route: &Route, parts: &Parts<'_>) -> Result<Vec<String>, GatewayError> {
    match check(route, parts) {
        Ok(violations) if violations.is_empty() => Ok(Vec::new()),
        Ok(violations) if !route.report_only => Err(GatewayError::Invalid {
            violations,
            cap: route.limits.violations,
        }),
        Ok(violations) => Ok(violations.into_iter().map(|v| v.message).collect()),
        Err(error) if !route.report_only => Err(error),
        Err(error) => Ok(vec![error.to_string()]),
    }
}

/// What the gateway would answer to a request, decided offline (`schemagate validate`):
/// auth, body size, then [`decide`]. `Ok` holds the report-only problems, if any.
pub fn dry_run(route: &Route, parts: &Parts<'_>) -> Result<Vec<String>, GatewayError> {
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
pub fn report_value(problems: &[String]) -> HeaderValue {
    let mut line = match problems.len() {
        1 => "1 violation: ".to_string(),
        n => format!("{n} violations: "),
    };
    line.push_str(&problems.join("; "));
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
