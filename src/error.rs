//! Every way a request can fail, and the one function that turns a failure into a response.
//!
//! Architecture invariant: stages return `GatewayError`; only [`GatewayError::into_response`]
//! builds error responses, so every rejection carries the same envelope
//! `{"statusCode": N, "message": ..., "error": "..."}`. Messages never echo credentials or
//! request bodies.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::body::ResponseBody;

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
    /// A route has this path, but not for this method. Carries the `Allow` value.
    MethodNotAllowed { allow: HeaderValue },
    /// The upstream refused the connection, reset it, or answered something that is not HTTP.
    UpstreamUnavailable { reason: String },
    /// The upstream did not connect or did not send response headers in time.
    UpstreamTimeout { phase: &'static str },
    /// The gateway is shutting down or otherwise cannot take the request.
    Unavailable { retry_after_secs: u64 },
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        // Exhaustive on purpose: a new variant must choose its status here.
        match self {
            GatewayError::NotFound => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::UpstreamUnavailable { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn side(&self) -> Side {
        match self {
            GatewayError::NotFound | GatewayError::MethodNotAllowed { .. } => Side::Downstream,
            GatewayError::UpstreamUnavailable { .. } | GatewayError::UpstreamTimeout { .. } => {
                Side::Upstream
            }
            GatewayError::Unavailable { .. } => Side::Internal,
        }
    }

    /// A short, stable label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::NotFound => "no_route",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::UpstreamUnavailable { .. } => "upstream_unavailable",
            GatewayError::UpstreamTimeout { .. } => "upstream_timeout",
            GatewayError::Unavailable { .. } => "unavailable",
        }
    }

    fn message(&self) -> serde_json::Value {
        let text = match self {
            GatewayError::NotFound => "no route matches this path".to_string(),
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
        };
        serde_json::Value::String(text)
    }

    /// The envelope response for this error.
    pub fn into_response(self) -> Response<ResponseBody> {
        let status = self.status();
        let body = envelope(status, self.message());
        let mut response = Response::new(
            Full::new(body)
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self {
            GatewayError::MethodNotAllowed { allow } => {
                headers.insert(ALLOW, allow);
            }
            GatewayError::Unavailable { retry_after_secs } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            GatewayError::NotFound
            | GatewayError::UpstreamUnavailable { .. }
            | GatewayError::UpstreamTimeout { .. } => {}
        }
        response
    }
}

/// Serialises `{"statusCode": N, "message": ..., "error": "<reason phrase>"}`.
pub fn envelope(status: StatusCode, message: serde_json::Value) -> Bytes {
    let value = serde_json::json!({
        "statusCode": status.as_u16(),
        "message": message,
        "error": status.canonical_reason().unwrap_or("Error"),
    });
    Bytes::from(value.to_string())
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
        ];
        for (error, status, phrase) in cases {
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
            let json = body_json(response).await;
            assert_eq!(json["statusCode"], status);
            assert_eq!(json["error"], phrase);
            assert!(json["message"].is_string());
        }
    }

    #[test]
    fn method_not_allowed_sets_allow() {
        let response = GatewayError::MethodNotAllowed {
            allow: HeaderValue::from_static("GET, POST"),
        }
        .into_response();
        assert_eq!(response.headers()[ALLOW], "GET, POST");
    }
}
