//! Every way a request can fail, and the one function that turns a failure into a response.
//!
//! Architecture invariant: stages return `GatewayError`; only [`GatewayError::into_response`]
//! builds error responses, so every rejection carries the same envelope
//! `{"statusCode": N, "message": ..., "error": "..."}`. Messages never echo credentials or
//! request bodies.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::body::ResponseBody;
use crate::schema::{render_messages, Violation};

/// Named by the config (`errors:`); defined there, as config names only its own types.
pub use crate::config::ErrorStyle;

/// Who failed: the caller (downstream), the backend (upstream), or the gateway itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
    Internal,
}

#[derive(Debug)]
pub enum GatewayError {
    /// No route has this path.
    NotFound,
    /// Credentials are missing or malformed.
    Unauthorized { message: &'static str },
    /// An API key acts for a tenant outside its binding.
    Forbidden { message: &'static str },
    /// A bearer token failed verification (`auth: { jwt: NAME }`): 401 with RFC 6750's
    /// `WWW-Authenticate: Bearer error="invalid_token"`; the message names the class only.
    InvalidToken { reason: TokenProblem },
    /// A verified token lacks a scope the route requires: 403 with
    /// `error="insufficient_scope"`. `required` is the route's list (config, not a claim).
    InsufficientScope { required: String },
    /// The tenant is over its rate limit.
    TooManyRequests { retry_after_secs: u64 },
    /// The client did not send its body in time.
    RequestTimeout,
    /// The body's media type is not one the route accepts. `accepted` is the message of an
    /// OpenAPI operation that lists media types other than `application/json` (built at
    /// load: `Content-Type must be application/json or text/plain`); `None` for JSON only.
    UnsupportedMediaType {
        accepted: Option<std::sync::Arc<str>>,
    },
    /// The body is larger than the route's limit.
    PayloadTooLarge { limit: u64 },
    /// Too many header fields, or too many bytes of them.
    HeadersTooLarge { message: String },
    /// The request target is longer than the limit.
    UriTooLong { limit: usize },
    /// The request is malformed: unparseable, empty or too deep JSON, a failed body read.
    BadRequest { message: String },
    /// The HTTP message itself is ambiguous (its framing or its Host): 400, and the
    /// connection is closed, since what follows on it cannot be trusted.
    Malformed { message: &'static str },
    /// The request fails its schemas. `violations` holds those worded (about `cap` at
    /// most), `omitted` counts the rest; `cap` limits how many are listed.
    Invalid {
        violations: Vec<Violation>,
        omitted: usize,
        cap: usize,
    },
    /// A route has this path, but not for this method. Carries the `Allow` value.
    MethodNotAllowed { allow: HeaderValue },
    /// The upstream refused the connection, reset it, or answered something that is not HTTP.
    UpstreamUnavailable { reason: String },
    /// The upstream did not connect or did not send response headers in time.
    UpstreamTimeout { phase: &'static str },
    /// The gateway is shutting down or otherwise cannot take the request.
    Unavailable { retry_after_secs: u64 },
    /// The gateway itself failed while handling the request (a panic caught in `proxy`).
    Internal,
}

/// Why a bearer token was refused, as answered ("Invalid token: <class>"). Never more
/// precise than this: the answer must not help forge a token or echo a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    Expired,
    NotYetValid,
    BadSignature,
    /// No trusted key for the token's `kid` and `alg` (or no keys had yet).
    UnknownKey,
    WrongIssuer,
    WrongAudience,
    /// Not a JWT (or too long, or an algorithm such as `none`).
    Malformed,
}

impl TokenProblem {
    pub const ALL: [TokenProblem; 7] = [
        TokenProblem::Expired,
        TokenProblem::NotYetValid,
        TokenProblem::BadSignature,
        TokenProblem::UnknownKey,
        TokenProblem::WrongIssuer,
        TokenProblem::WrongAudience,
        TokenProblem::Malformed,
    ];

    /// The class as written in the answer.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenProblem::Expired => "expired",
            TokenProblem::NotYetValid => "not yet valid",
            TokenProblem::BadSignature => "bad signature",
            TokenProblem::UnknownKey => "unknown key",
            TokenProblem::WrongIssuer => "wrong issuer",
            TokenProblem::WrongAudience => "wrong audience",
            TokenProblem::Malformed => "malformed",
        }
    }

    /// The class as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            TokenProblem::Expired => "expired",
            TokenProblem::NotYetValid => "not_yet_valid",
            TokenProblem::BadSignature => "bad_signature",
            TokenProblem::UnknownKey => "unknown_key",
            TokenProblem::WrongIssuer => "wrong_issuer",
            TokenProblem::WrongAudience => "wrong_audience",
            TokenProblem::Malformed => "malformed",
        }
    }
}

impl From<crate::body::BodyLimit> for GatewayError {
    fn from(limit: crate::body::BodyLimit) -> GatewayError {
        use crate::body::BodyLimit;
        match limit {
            BodyLimit::TooLarge { limit } => GatewayError::PayloadTooLarge { limit },
            BodyLimit::Idle | BodyLimit::Total => GatewayError::RequestTimeout,
        }
    }
}

impl GatewayError {
    /// What a failed client request body means, wherever it failed (read here, or streamed
    /// upstream): a broken limit is 413 or 408; anything else (broken chunked framing, a
    /// connection cut mid-body) leaves nothing readable after it: 400, and the connection
    /// closes. The one place that decides it.
    pub fn from_body_error(error: &(dyn std::error::Error + 'static)) -> GatewayError {
        crate::body::BodyLimit::find(error).map_or(
            GatewayError::Malformed {
                message: "the request body could not be read",
            },
            GatewayError::from,
        )
    }

    pub fn status(&self) -> StatusCode {
        // Exhaustive on purpose: a new variant must choose its status here.
        match self {
            GatewayError::NotFound => StatusCode::NOT_FOUND,
            GatewayError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden { .. } => StatusCode::FORBIDDEN,
            GatewayError::InvalidToken { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            GatewayError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            GatewayError::BadRequest { .. } | GatewayError::Malformed { .. } => {
                StatusCode::BAD_REQUEST
            }
            GatewayError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::UpstreamUnavailable { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn side(&self) -> Side {
        match self {
            GatewayError::NotFound
            | GatewayError::MethodNotAllowed { .. }
            | GatewayError::Unauthorized { .. }
            | GatewayError::Forbidden { .. }
            | GatewayError::InvalidToken { .. }
            | GatewayError::InsufficientScope { .. }
            | GatewayError::TooManyRequests { .. }
            | GatewayError::RequestTimeout
            | GatewayError::UnsupportedMediaType { .. }
            | GatewayError::PayloadTooLarge { .. }
            | GatewayError::HeadersTooLarge { .. }
            | GatewayError::UriTooLong { .. }
            | GatewayError::BadRequest { .. }
            | GatewayError::Malformed { .. }
            | GatewayError::Invalid { .. } => Side::Downstream,
            GatewayError::UpstreamUnavailable { .. } | GatewayError::UpstreamTimeout { .. } => {
                Side::Upstream
            }
            GatewayError::Unavailable { .. } | GatewayError::Internal => Side::Internal,
        }
    }

    /// Whether an HTTP/1 connection should close after this answer: the request's head or
    /// body was not read as a well-behaved client sends it, so the rest of the stream cannot
    /// be trusted to start at a request boundary.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            GatewayError::RequestTimeout
                | GatewayError::PayloadTooLarge { .. }
                | GatewayError::HeadersTooLarge { .. }
                | GatewayError::UriTooLong { .. }
                | GatewayError::Malformed { .. }
        )
    }

    /// A short, stable label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::NotFound => "no_route",
            GatewayError::Unauthorized { .. } => "unauthorized",
            GatewayError::Forbidden { .. } => "forbidden",
            GatewayError::InvalidToken { .. } => "invalid_token",
            GatewayError::InsufficientScope { .. } => "insufficient_scope",
            GatewayError::TooManyRequests { .. } => "rate_limited",
            GatewayError::RequestTimeout => "body_timeout",
            GatewayError::UnsupportedMediaType { .. } => "media_type",
            GatewayError::PayloadTooLarge { .. } => "body_too_large",
            GatewayError::HeadersTooLarge { .. } => "headers_too_large",
            GatewayError::UriTooLong { .. } => "uri_too_long",
            GatewayError::BadRequest { .. } => "bad_request",
            GatewayError::Malformed { .. } => "malformed_http",
            GatewayError::Invalid { .. } => "schema",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::UpstreamUnavailable { .. } => "upstream_unavailable",
            GatewayError::UpstreamTimeout { .. } => "upstream_timeout",
            GatewayError::Unavailable { .. } => "unavailable",
            GatewayError::Internal => "internal",
        }
    }

    fn message(&self) -> serde_json::Value {
        let text = match self {
            GatewayError::NotFound => "no route matches this path".to_string(),
            GatewayError::Unauthorized { message }
            | GatewayError::Forbidden { message }
            | GatewayError::Malformed { message } => (*message).to_string(),
            GatewayError::InvalidToken { reason } => format!("Invalid token: {}", reason.as_str()),
            GatewayError::InsufficientScope { required } => {
                format!("Insufficient scope: this route requires {required}")
            }
            GatewayError::TooManyRequests { retry_after_secs } => {
                format!("rate limit exceeded: retry in {retry_after_secs} s")
            }
            GatewayError::RequestTimeout => "the request body did not arrive in time".to_string(),
            GatewayError::UnsupportedMediaType { accepted: None } => {
                "Content-Type must be application/json or application/*+json".to_string()
            }
            GatewayError::UnsupportedMediaType {
                accepted: Some(message),
            } => message.to_string(),
            GatewayError::PayloadTooLarge { limit } => {
                format!("request body is larger than {limit} bytes")
            }
            GatewayError::HeadersTooLarge { message } => message.clone(),
            GatewayError::UriTooLong { limit } => {
                format!("the request target is longer than {limit} bytes")
            }
            GatewayError::BadRequest { message } => message.clone(),
            GatewayError::Invalid {
                violations,
                omitted,
                cap,
            } => {
                return serde_json::Value::from(render_messages(violations, *omitted, *cap));
            }
            GatewayError::MethodNotAllowed { .. } => {
                "this path does not accept this method".to_string()
            }
            GatewayError::UpstreamUnavailable { reason } => {
                format!("upstream unavailable: {reason}")
            }
            GatewayError::UpstreamTimeout { phase } => format!("upstream timed out ({phase})"),
            GatewayError::Unavailable { .. } => {
                "the gateway cannot take this request now".to_string()
            }
            GatewayError::Internal => "the gateway failed while handling this request".to_string(),
        };
        serde_json::Value::String(text)
    }

    /// The error body in `style`, and its media type.
    pub fn body(&self, style: ErrorStyle) -> (Bytes, &'static str) {
        let status = self.status();
        match style {
            ErrorStyle::Nest => (envelope(status, self.message()), "application/json"),
            ErrorStyle::Problem => (self.problem(status), "application/problem+json"),
        }
    }

    /// The envelope response for this error, in the route's style.
    pub fn into_response(self, style: ErrorStyle) -> Response<ResponseBody> {
        let status = self.status();
        let (body, content_type) = self.body(style);
        let mut response = Response::new(
            Full::new(body)
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        match self {
            GatewayError::MethodNotAllowed { allow } => {
                headers.insert(ALLOW, allow);
            }
            GatewayError::Unavailable { retry_after_secs }
            | GatewayError::TooManyRequests { retry_after_secs } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            // RFC 9110 §15.5.2: a 401 carries at least one challenge. Every route that
            // answers 401 for missing or malformed credentials takes a bearer token (or, with
            // `auth: credentials`, accepts one), so the challenge is `Bearer`, without an
            // error code when credentials were missing or unusable (RFC 6750 §3.1).
            GatewayError::Unauthorized { .. } => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            GatewayError::InvalidToken { .. } => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            GatewayError::InsufficientScope { required } => {
                // RFC 6750 §3: the scopes needed. Config text that `snapshot` checked to be
                // scope-tokens (no quote, backslash or space inside one), so always valid.
                let value = HeaderValue::from_str(&format!(
                    "Bearer error=\"insufficient_scope\", scope=\"{required}\""
                ))
                .unwrap_or(HeaderValue::from_static(
                    "Bearer error=\"insufficient_scope\"",
                ));
                headers.insert(WWW_AUTHENTICATE, value);
            }
            GatewayError::NotFound
            | GatewayError::Forbidden { .. }
            | GatewayError::RequestTimeout
            | GatewayError::UnsupportedMediaType { .. }
            | GatewayError::PayloadTooLarge { .. }
            | GatewayError::HeadersTooLarge { .. }
            | GatewayError::UriTooLong { .. }
            | GatewayError::BadRequest { .. }
            | GatewayError::Malformed { .. }
            | GatewayError::Invalid { .. }
            | GatewayError::UpstreamUnavailable { .. }
            | GatewayError::UpstreamTimeout { .. }
            | GatewayError::Internal => {}
        }
        response
    }

    /// RFC 9457 problem details; 422 lists each violation with its location, JSON pointer,
    /// schema keyword and message.
    fn problem(&self, status: StatusCode) -> Bytes {
        let (detail, errors) = match self {
            GatewayError::Invalid {
                violations,
                omitted,
                cap,
            } => {
                let errors = violations
                    .iter()
                    .take(*cap)
                    .map(|v| ProblemError {
                        location: v.location.as_str(),
                        pointer: &v.pointer,
                        keyword: v.keyword,
                        message: &v.message,
                    })
                    .collect();
                let detail = match violations.len() + omitted {
                    1 => "the request fails its schema in 1 place".to_string(),
                    n => format!("the request fails its schema in {n} places"),
                };
                (serde_json::Value::String(detail), Some(errors))
            }
            _ => (self.message(), None),
        };
        let problem = Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
            errors,
        };
        Bytes::from(serde_json::to_vec(&problem).unwrap_or_default())
    }
}

/// RFC 9457 problem details, fields in the RFC's order.
#[derive(serde::Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Vec<ProblemError<'a>>>,
}

#[derive(serde::Serialize)]
struct ProblemError<'a> {
    location: &'static str,
    pointer: &'a str,
    keyword: &'static str,
    message: &'a str,
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.message() {
            serde_json::Value::String(text) => f.write_str(&text),
            other => write!(f, "{other}"),
        }
    }
}

/// The documented envelope, with its fields in the documented order (serde_json's `json!`
/// map would sort them).
#[derive(serde::Serialize)]
struct Envelope<'a> {
    #[serde(rename = "statusCode")]
    status_code: u16,
    message: &'a serde_json::Value,
    error: &'a str,
}

/// Serialises `{"statusCode": N, "message": ..., "error": "<reason phrase>"}`.
pub fn envelope(status: StatusCode, message: serde_json::Value) -> Bytes {
    let envelope = Envelope {
        status_code: status.as_u16(),
        message: &message,
        error: status.canonical_reason().unwrap_or("Error"),
    };
    // Serialising a struct of strings and numbers cannot fail; an empty body would still
    // carry the status.
    Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(response: Response<ResponseBody>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn each_variant_has_its_status_and_envelope() {
        let cases = [
            (GatewayError::NotFound, 404, "Not Found"),
            (
                GatewayError::Unauthorized { message: "m" },
                401,
                "Unauthorized",
            ),
            (GatewayError::Forbidden { message: "m" }, 403, "Forbidden"),
            (
                GatewayError::InvalidToken {
                    reason: TokenProblem::Expired,
                },
                401,
                "Unauthorized",
            ),
            (
                GatewayError::InsufficientScope {
                    required: "a:write".into(),
                },
                403,
                "Forbidden",
            ),
            (
                GatewayError::TooManyRequests {
                    retry_after_secs: 3,
                },
                429,
                "Too Many Requests",
            ),
            (
                GatewayError::UnsupportedMediaType { accepted: None },
                415,
                "Unsupported Media Type",
            ),
            (
                GatewayError::UnsupportedMediaType {
                    accepted: Some("Content-Type must be text/plain".into()),
                },
                415,
                "Unsupported Media Type",
            ),
            (GatewayError::RequestTimeout, 408, "Request Timeout"),
            (
                GatewayError::PayloadTooLarge { limit: 1 },
                413,
                "Payload Too Large",
            ),
            (
                GatewayError::BadRequest {
                    message: "m".into(),
                },
                400,
                "Bad Request",
            ),
            (
                GatewayError::HeadersTooLarge {
                    message: "m".into(),
                },
                431,
                "Request Header Fields Too Large",
            ),
            (GatewayError::UriTooLong { limit: 8 }, 414, "URI Too Long"),
            (
                GatewayError::Invalid {
                    violations: Vec::new(),
                    omitted: 1,
                    cap: 20,
                },
                422,
                "Unprocessable Entity",
            ),
            (
                GatewayError::MethodNotAllowed {
                    allow: HeaderValue::from_static("GET"),
                },
                405,
                "Method Not Allowed",
            ),
            (
                GatewayError::UpstreamUnavailable {
                    reason: "refused".into(),
                },
                502,
                "Bad Gateway",
            ),
            (
                GatewayError::UpstreamTimeout { phase: "connect" },
                504,
                "Gateway Timeout",
            ),
            (
                GatewayError::Unavailable {
                    retry_after_secs: 1,
                },
                503,
                "Service Unavailable",
            ),
            (GatewayError::Malformed { message: "m" }, 400, "Bad Request"),
            (GatewayError::Internal, 500, "Internal Server Error"),
        ];
        for (error, status, phrase) in cases {
            let response = error.into_response(ErrorStyle::Nest);
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
            let json = body_json(response).await;
            assert_eq!(json["statusCode"], status);
            assert_eq!(json["error"], phrase);
            assert_eq!(json["message"].is_array(), status == 422, "{json}");
        }
    }

    #[tokio::test]
    async fn envelope_fields_are_in_the_documented_order() {
        let response = GatewayError::NotFound.into_response(ErrorStyle::Nest);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            &bytes[..],
            br#"{"statusCode":404,"message":"no route matches this path","error":"Not Found"}"#
        );
    }

    #[tokio::test]
    async fn token_answers_carry_rfc_6750_challenges() {
        for reason in TokenProblem::ALL {
            let response = GatewayError::InvalidToken { reason }.into_response(ErrorStyle::Nest);
            assert_eq!(
                response.headers()[WWW_AUTHENTICATE],
                "Bearer error=\"invalid_token\""
            );
            let json = body_json(response).await;
            assert_eq!(
                json["message"],
                format!("Invalid token: {}", reason.as_str())
            );
        }
        let response = GatewayError::InsufficientScope {
            required: "a:write b".into(),
        }
        .into_response(ErrorStyle::Nest);
        assert_eq!(response.status(), 403);
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            "Bearer error=\"insufficient_scope\", scope=\"a:write b\""
        );
    }

    #[test]
    fn method_not_allowed_sets_allow() {
        let response = GatewayError::MethodNotAllowed {
            allow: HeaderValue::from_static("GET, POST"),
        }
        .into_response(ErrorStyle::Nest);
        assert_eq!(response.headers()[ALLOW], "GET, POST");
    }
}
