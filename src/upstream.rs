//! The last stage: send the request upstream and stream the answer back.
//!
//! Architecture invariant: only this module opens outbound connections. Each HTTP upstream owns
//! a pool of keep-alive HTTP/1.1 connections (hyper's client connections); the built-in mock
//! answers in process without any socket.
//! Failures become 502 (refused, reset, not HTTP) or 504 (connect or response-header timeout),
//! so a dead upstream never hangs a client.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::uri::Authority;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::body::{RequestBody, ResponseBody};
use crate::error::GatewayError;
use crate::forward::{self, Target};

/// How long an idle pooled connection is kept: one idle longer is closed instead of reused.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle connections kept per upstream; a connection freed when this many wait is closed.
/// Sized above any concurrency two cores serve, so steady load never reconnects.
const POOL_MAX_IDLE: usize = 1024;

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
    authority: Authority,
    host_header: HeaderValue,
    base_path: String,
    connect_timeout: Duration,
    pool: Arc<Pool>,
}

/// Keep-alive HTTP/1.1 connections to one upstream, idle and ready for a request.
///
/// hyper's own low-level client connections, pooled here rather than through hyper-util's
/// legacy client: that one hashes its pool key (scheme and authority, byte by byte) three
/// times per request and spawns a task per response to return the connection, which cost
/// more instructions than everything else the forwarding does. A connection returns to the
/// pool when the upstream's response body has been read to its end; a response dropped
/// earlier closes its connection. The lock is held only to push or pop one entry.
#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<(SendRequest<RequestBody>, Instant)>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.idle.lock().map_or(0, |idle| idle.len());
        f.debug_struct("Pool").field("idle", &idle).finish()
    }
}

impl Pool {
    /// The most recently freed connection that is still open and not idle for too long.
    fn checkout(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = match self.idle.lock() {
            Ok(idle) => idle,
            // A panic while holding the lock left at worst a connection too many or too few.
            Err(poisoned) => poisoned.into_inner(),
        };
        while let Some((sender, since)) = idle.pop() {
            if !sender.is_closed() && since.elapsed() < POOL_IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    }

    fn checkin(&self, sender: SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = match self.idle.lock() {
            Ok(idle) => idle,
            Err(poisoned) => poisoned.into_inner(),
        };
        if idle.len() < POOL_MAX_IDLE {
            idle.push((sender, Instant::now()));
        }
    }
}

impl HttpUpstream {
    pub fn new(authority: Authority, base_path: &str, connect_timeout: Duration) -> Self {
        let host_header = HeaderValue::from_str(authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        HttpUpstream {
            authority,
            host_header,
            base_path: base_path.trim_end_matches('/').to_string(),
            connect_timeout,
            pool: Arc::default(),
        }
    }

    pub fn target(&self) -> Target<'_> {
        Target {
            host_header: &self.host_header,
            base_path: &self.base_path,
        }
    }

    /// Sends `request` on a pooled connection, or a new one, and waits for the response head.
    async fn exchange(
        &self,
        name: &str,
        mut request: Request<RequestBody>,
    ) -> Result<Response<PooledBody>, GatewayError> {
        while let Some(mut sender) = self.pool.checkout() {
            // A connection is pooled once its last response was read; it is ready at once or
            // closed (the upstream hung up while it was idle).
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.pooled(sender, response)),
                // Closed before the request was written: it goes on another connection, as
                // nothing reached the upstream.
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(invalid_response(name)),
                },
            }
        }
        let mut sender = self.connect(name).await?;
        match sender.try_send_request(request).await {
            Ok(response) => Ok(self.pooled(sender, response)),
            Err(_) => Err(invalid_response(name)),
        }
    }

    /// Opens a new connection: 504 when the connect timeout passes, 502 when it fails.
    async fn connect(&self, name: &str) -> Result<SendRequest<RequestBody>, GatewayError> {
        let host = self.authority.host();
        // `Authority::host` keeps the brackets of an IPv6 literal.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = self.authority.port_u16().unwrap_or(80);
        let connecting = tokio::net::TcpStream::connect((host, port));
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Err(_) => return Err(GatewayError::UpstreamTimeout { phase: "connect" }),
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::TimedOut => {
                return Err(GatewayError::UpstreamTimeout { phase: "connect" })
            }
            Ok(Err(_)) => {
                return Err(GatewayError::UpstreamUnavailable {
                    reason: format!("could not connect to upstream {name}"),
                })
            }
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| invalid_response(name))?;
        // The connection runs on its own task until either side closes it.
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// The response, with a body that returns `sender` to the pool once read to its end.
    fn pooled(
        &self,
        sender: SendRequest<RequestBody>,
        response: Response<Incoming>,
    ) -> Response<PooledBody> {
        response.map(|body| PooledBody {
            body,
            back: Some((sender, Arc::clone(&self.pool))),
        })
    }
}

fn invalid_response(upstream: &str) -> GatewayError {
    GatewayError::UpstreamUnavailable {
        reason: format!("upstream {upstream} closed the connection or sent an invalid response"),
    }
}

/// An upstream response body that hands its connection back to the pool when it ends.
struct PooledBody {
    body: Incoming,
    back: Option<(SendRequest<RequestBody>, Arc<Pool>)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((sender, pool)) = self.back.take() {
            pool.checkin(sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            // The end, announced or reached: the connection may serve the next request.
            None => this.release(),
            Some(Ok(_)) if this.body.is_end_stream() => this.release(),
            // An error mid-body leaves the connection unusable; it closes with the body.
            Some(Err(_)) => this.back = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Dropped unread (a HEAD or 204 answer, or a body of known length the server did not
        // poll past its end) the connection is reusable only if nothing is left to read.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

impl Upstream {
    /// Whether `other` was built from the same settings, so a reload can keep this one (and
    /// its pool of open connections) instead.
    pub fn same_settings(&self, other: &Upstream) -> bool {
        match (&self.target, &other.target) {
            (UpstreamTarget::Http(a), UpstreamTarget::Http(b)) => {
                a.authority == b.authority
                    && a.base_path == b.base_path
                    && a.connect_timeout == b.connect_timeout
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
                    "{} (http://{}{})",
                    self.name, http.authority, http.base_path
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
        let exchange = http.exchange(&self.name, request);
        let response = match tokio::time::timeout(response_headers_timeout, exchange).await {
            Err(_) => {
                return Err(GatewayError::UpstreamTimeout {
                    phase: "response headers",
                })
            }
            Ok(result) => result?,
        };
        let (mut parts, body) = response.into_parts();
        forward::strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(
            parts,
            body.map_err(Into::into).boxed_unsync(),
        ))
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
