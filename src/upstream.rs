//! The last stage: send the request upstream and stream the answer back.
//!
//! Architecture invariant: only this module opens outbound connections. Each HTTP upstream owns
//! one pooled hyper-util client; the built-in mock answers in process without any socket.
//! Failures become 502 (refused, reset, not HTTP) or 504 (connect or response-header timeout),
//! so a dead upstream never hangs a client.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::body::{DownstreamBodyError, Guarded, RequestBody, ResponseBody};
use crate::error::GatewayError;
use crate::forward::{self, Target};

#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub target: UpstreamTarget,
}

#[derive(Debug)]
pub enum UpstreamTarget {
    Http(Box<HttpUpstream>),
    /// The built-in mock: every request gets this status and JSON body.
    Mock {
        status: StatusCode,
        body: Bytes,
    },
}

#[derive(Debug)]
pub struct HttpUpstream {
    scheme: Scheme,
    authority: Authority,
    host_header: HeaderValue,
    base_path: String,
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    /// A hash of the TLS files (CA bundle, client certificate) the pool was built with.
    tls_files: Option<u64>,
    pool: Pool,
}

/// Client TLS settings for an `https://` upstream (see `tls::client`).
pub struct UpstreamTls {
    pub config: rustls::ClientConfig,
    pub files_hash: u64,
}

/// One pooled client per upstream: plain TCP, or TLS with ALPN offering `h2` and `http/1.1`
/// (HTTP/2 is used when the upstream picks it).
#[derive(Debug)]
enum Pool {
    Plain(Client<HttpConnector, RequestBody>),
    Tls(Client<HttpsConnector<HttpConnector>, RequestBody>),
}

impl HttpUpstream {
    pub fn new(
        authority: Authority,
        base_path: &str,
        connect_timeout: Duration,
        pool_idle_timeout: Duration,
        tls: Option<UpstreamTls>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(pool_idle_timeout)
            .pool_timer(hyper_util::rt::TokioTimer::new());
        let (scheme, tls_files, pool) = match tls {
            None => (Scheme::HTTP, None, Pool::Plain(builder.build(connector))),
            Some(tls) => {
                // The TLS connector also dials http:// URIs, but only https:// ones reach it.
                connector.enforce_http(false);
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls.config)
                    .https_only()
                    .enable_all_versions()
                    .wrap_connector(connector);
                (
                    Scheme::HTTPS,
                    Some(tls.files_hash),
                    Pool::Tls(builder.build(https)),
                )
            }
        };
        let host_header = HeaderValue::from_str(authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        HttpUpstream {
            scheme,
            authority,
            host_header,
            base_path: base_path.trim_end_matches('/').to_string(),
            connect_timeout,
            pool_idle_timeout,
            tls_files,
            pool,
        }
    }

    pub fn target(&self) -> Target<'_> {
        Target {
            scheme: &self.scheme,
            authority: &self.authority,
            host_header: &self.host_header,
            base_path: &self.base_path,
        }
    }
}

impl Upstream {
    /// Whether `other` was built from the same settings, so a reload can keep this one (and
    /// its pool of open connections) instead.
    pub fn same_settings(&self, other: &Upstream) -> bool {
        match (&self.target, &other.target) {
            (UpstreamTarget::Http(a), UpstreamTarget::Http(b)) => {
                a.scheme == b.scheme
                    && a.authority == b.authority
                    && a.base_path == b.base_path
                    && a.connect_timeout == b.connect_timeout
                    && a.pool_idle_timeout == b.pool_idle_timeout
                    && a.tls_files == b.tls_files
            }
            (
                UpstreamTarget::Mock {
                    status: sa,
                    body: ba,
                },
                UpstreamTarget::Mock {
                    status: sb,
                    body: bb,
                },
            ) => sa == sb && ba == bb,
            _ => false,
        }
    }

    /// One line for `schemagate check`.
    pub fn describe(&self) -> String {
        match &self.target {
            UpstreamTarget::Http(http) => {
                format!(
                    "{} ({}://{}{})",
                    self.name, http.scheme, http.authority, http.base_path
                )
            }
            UpstreamTarget::Mock { status, .. } => {
                format!("{} (built-in mock, {})", self.name, status.as_u16())
            }
        }
    }

    /// Sends `request` (already rewritten by `forward::upstream_request`) and returns the
    /// upstream's response with hop-by-hop headers removed and the body streamed.
    pub async fn send(
        &self,
        request: Request<RequestBody>,
        response_headers_timeout: Duration,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let http = match &self.target {
            UpstreamTarget::Http(http) => http,
            UpstreamTarget::Mock { status, body } => return Ok(mock_response(*status, body)),
        };
        let pending = match &http.pool {
            Pool::Plain(client) => client.request(request),
            Pool::Tls(client) => client.request(request),
        };
        let response = match tokio::time::timeout(response_headers_timeout, pending).await {
            Err(_) => {
                return Err(GatewayError::UpstreamTimeout {
                    phase: "response headers",
                })
            }
            Ok(Err(error)) => return Err(classify(&self.name, &error)),
            Ok(Ok(response)) => response,
        };
        // The gateway never forwards `Upgrade` (it is hop-by-hop), so a 101 breaks RFC 9110
        // §15.2.2; relaying it would end the client's HTTP exchange with no tunnel behind it.
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Err(GatewayError::UpstreamUnavailable {
                reason: format!(
                    "upstream {} switched protocols without being asked",
                    self.name
                ),
            });
        }
        let (mut parts, body) = response.into_parts();
        forward::strip_hop_by_hop(&mut parts.headers);
        // An upstream that stops sending mid-body for as long as it may take to send its
        // headers is cut off: the client's connection is aborted, never left hanging or
        // handed a short body that looks complete.
        let body = Guarded::new(body, u64::MAX, response_headers_timeout, None);
        Ok(Response::from_parts(parts, body.boxed_unsync()))
    }
}

fn mock_response(status: StatusCode, body: &Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(body.clone())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Turns a client error into 502 or 504. A connect that timed out is a 504; every other
/// failure (refused, reset, not HTTP) is a 502. When it was the client's streamed body that
/// failed, the answer is the client's 400.
fn classify(upstream: &str, error: &hyper_util::client::legacy::Error) -> GatewayError {
    // The client's streamed body broke its limit while being sent: that is the client's 413
    // or 408, not the upstream's fault.
    if let Some(limit) = crate::body::BodyLimit::find(error) {
        return limit.to_error();
    }
    if source_chain(error).any(|e| e.is::<DownstreamBodyError>()) {
        return GatewayError::Malformed {
            message: "the request body could not be read",
        };
    }
    let timed_out = source_chain(error).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    });
    if error.is_connect() && timed_out {
        GatewayError::UpstreamTimeout { phase: "connect" }
    } else if error.is_connect() {
        GatewayError::UpstreamUnavailable {
            reason: format!("could not connect to upstream {upstream}"),
        }
    } else {
        GatewayError::UpstreamUnavailable {
            reason: format!(
                "upstream {upstream} closed the connection or sent an invalid response"
            ),
        }
    }
}

fn source_chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}
