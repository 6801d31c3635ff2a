//! The last stage: send the request upstream and stream the answer back.
//!
//! Architecture invariant: only this module opens outbound connections. Each HTTP upstream owns
//! its pool: hyper HTTP/1.1 client connections for `http://` ([`ConnPool`]), hyper-util's
//! client behind hyper-rustls for `https://`; the built-in mock answers without any socket.
//! Failures become 502 (refused, reset, not HTTP) or 504 (connect or response-header timeout),
//! so a dead upstream never hangs a client.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::body::{DownstreamBodyError, Guarded, RequestBody, ResponseBody};
use crate::error::GatewayError;
use crate::forward::{self, Target};

/// Idle connections kept per plain upstream; a connection freed when this many wait is closed.
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
        /// The file the body was read from (watched for hot reload).
        file: PathBuf,
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

/// The connections to one upstream.
#[derive(Debug)]
enum Pool {
    /// `http://`: keep-alive HTTP/1.1 connections in our own pool (see [`ConnPool`]).
    Plain(Arc<ConnPool>),
    /// `https://`: hyper-util's client behind hyper-rustls, offering `h2` and `http/1.1` by
    /// ALPN (HTTP/2 is used when the upstream picks it). It wants absolute-form URIs.
    Tls(Box<Client<HttpsConnector<HttpConnector>, RequestBody>>),
}

/// Keep-alive HTTP/1.1 connections to one upstream, idle and ready for a request.
///
/// hyper's own low-level client connections, pooled here rather than through hyper-util's
/// legacy client: that one hashes its pool key (scheme and authority, byte by byte) three
/// times per request and spawns a task per response to return the connection, which cost
/// more instructions than everything else the forwarding does. A connection returns to the
/// pool when the upstream's response body has been read to its end; a response dropped
/// earlier closes its connection. The lock is held only to push or pop one entry.
struct ConnPool {
    idle: Mutex<Vec<(Conn, Instant)>>,
    /// A connection idle longer than this is closed instead of reused.
    idle_timeout: Duration,
}

/// One keep-alive connection to the upstream.
struct Conn {
    sender: SendRequest<RequestBody>,
    /// The response-headers deadline of the request on this connection: one tokio timer for
    /// the connection's life, moved to each request's deadline. Moving a filed timer later
    /// only updates its entry; a new timer per request (`tokio::time::timeout`) was filed in
    /// the runtime's timer wheel and taken out again, ~500 instructions more per request
    /// (bench/callgrind.sh). A pooled connection's timer may come due while it is idle: a
    /// wake-up of a finished task, once.
    deadline: Pin<Box<Sleep>>,
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.idle.lock().map_or(0, |idle| idle.len());
        f.debug_struct("ConnPool").field("idle", &idle).finish()
    }
}

impl ConnPool {
    fn new(idle_timeout: Duration) -> Self {
        ConnPool {
            idle: Mutex::new(Vec::new()),
            idle_timeout,
        }
    }

    /// The most recently freed connection that is still open and not idle for too long.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = match self.idle.lock() {
            Ok(idle) => idle,
            // A panic while holding the lock left at worst a connection too many or too few.
            Err(poisoned) => poisoned.into_inner(),
        };
        while let Some((conn, since)) = idle.pop() {
            // Not ready means its last request body is still being sent (the upstream
            // answered early): waiting for it could take as long as the client does. Dropped,
            // it closes once that exchange ends.
            let sender = &conn.sender;
            if !sender.is_closed() && sender.is_ready() && since.elapsed() < self.idle_timeout {
                return Some(conn);
            }
        }
        None
    }

    /// Closes the connections idle for longer than the idle timeout (the sweeper calls
    /// this, so an upstream that keeps connections open does not keep them all forever).
    fn evict_expired(&self) {
        let mut idle = match self.idle.lock() {
            Ok(idle) => idle,
            Err(poisoned) => poisoned.into_inner(),
        };
        let timeout = self.idle_timeout;
        idle.retain(|(conn, since)| !conn.sender.is_closed() && since.elapsed() < timeout);
    }

    fn checkin(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let mut idle = match self.idle.lock() {
            Ok(idle) => idle,
            Err(poisoned) => poisoned.into_inner(),
        };
        if idle.len() < POOL_MAX_IDLE {
            idle.push((conn, Instant::now()));
        }
    }
}

impl HttpUpstream {
    pub fn new(
        authority: Authority,
        base_path: &str,
        connect_timeout: Duration,
        pool_idle_timeout: Duration,
        tls: Option<UpstreamTls>,
    ) -> Self {
        let (scheme, tls_files, pool) = match tls {
            None => (
                Scheme::HTTP,
                None,
                Pool::Plain(Arc::new(ConnPool::new(pool_idle_timeout))),
            ),
            Some(tls) => {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(connect_timeout));
                connector.set_nodelay(true);
                let mut builder = Client::builder(TokioExecutor::new());
                builder
                    .pool_idle_timeout(pool_idle_timeout)
                    .pool_timer(hyper_util::rt::TokioTimer::new());
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
                    Pool::Tls(Box::new(builder.build(https))),
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
            host_header: &self.host_header,
            base_path: &self.base_path,
        }
    }

    /// Sends `request` on a pooled connection, or a new one, and waits for the response head
    /// until `timeout` has passed (504). (Not an `async fn`, which would hold `request` twice;
    /// see `proxy::handle`.)
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn holds its arguments twice"
    )]
    fn exchange<'a>(
        &'a self,
        pool: &'a Arc<ConnPool>,
        name: &'a str,
        mut request: Request<RequestBody>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response<PooledBody>, GatewayError>> + Send + 'a {
        let deadline = tokio::time::Instant::now() + timeout;
        async move {
            while let Some(mut conn) = pool.checkout() {
                // A connection is pooled once its last response was read; it is ready at once or
                // closed (the upstream hung up while it was idle).
                if conn.sender.ready().await.is_err() {
                    continue;
                }
                conn.deadline.as_mut().reset(deadline);
                let sent = conn.sender.try_send_request(request);
                match within(conn.deadline.as_mut(), sent).await? {
                    Ok(response) => return Ok(pooled(pool, conn, response)),
                    // Closed before the request was written: it goes on another connection, as
                    // nothing reached the upstream.
                    Err(mut error) => match error.take_message() {
                        Some(unsent) => request = unsent,
                        None => return Err(send_error(name, error.error())),
                    },
                }
            }
            // Boxed: a new connection is the rare case, and its future would otherwise enlarge
            // every request's future.
            let mut timer = Box::pin(tokio::time::sleep_until(deadline));
            let connecting = Box::pin(self.connect(name));
            let mut sender = within(timer.as_mut(), connecting).await??;
            let sent = sender.try_send_request(request);
            match within(timer.as_mut(), sent).await? {
                Ok(response) => {
                    let conn = Conn {
                        sender,
                        deadline: timer,
                    };
                    Ok(pooled(pool, conn, response))
                }
                Err(error) => Err(send_error(name, error.error())),
            }
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
}

impl Upstream {
    /// Closes pooled connections idle past the upstream's `pool_idle` (see the sweeper).
    pub fn evict_idle(&self) {
        if let UpstreamTarget::Http(http) = &self.target {
            if let Pool::Plain(pool) = &http.pool {
                pool.evict_expired();
            }
        }
    }

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
                    ..
                },
                UpstreamTarget::Mock {
                    status: sb,
                    body: bb,
                    ..
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
    /// upstream's response with hop-by-hop headers removed and the body streamed. The
    /// response headers must arrive within `headers_within` of now; the response body may
    /// then pause for at most `body_pause` at a time (two deadlines: a streamed upload
    /// stretches the first by the client's body time, never the second).
    /// (Not an `async fn`, which would hold `request` twice; see `proxy::handle`.)
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn holds its arguments twice"
    )]
    pub fn send(
        &self,
        request: Request<RequestBody>,
        headers_within: Duration,
        body_pause: Duration,
    ) -> impl Future<Output = Result<Response<ResponseBody>, GatewayError>> + Send + '_ {
        async move {
            let http = match &self.target {
                UpstreamTarget::Http(http) => http,
                UpstreamTarget::Mock { status, body, .. } => {
                    return Ok(mock_response(*status, body))
                }
            };
            match &http.pool {
                Pool::Plain(pool) => {
                    let wait = headers_within;
                    let response = http.exchange(pool, &self.name, request, wait).await?;
                    self.relay(response, body_pause)
                }
                Pool::Tls(client) => {
                    let (mut parts, body) = request.into_parts();
                    parts.uri = absolute(&http.scheme, &http.authority, &parts.uri)?;
                    let witness = BodyWitness::default();
                    let body = witness.watch(body);
                    // Boxed so that plain upstreams' request futures do not carry room for the
                    // TLS client's.
                    let pending = Box::pin(client.request(Request::from_parts(parts, body)));
                    let response = tokio::time::timeout(headers_within, pending)
                        .await
                        .map_err(|_| headers_timed_out())?
                        .map_err(|error| {
                            witness
                                .failure()
                                .unwrap_or_else(|| classify(&self.name, &error))
                        })?;
                    self.relay(response, body_pause)
                }
            }
        }
    }

    /// The upstream's response as it goes to the client: hop-by-hop fields removed, the body
    /// streamed under a pause limit.
    fn relay<B>(
        &self,
        response: Response<B>,
        body_pause: Duration,
    ) -> Result<Response<ResponseBody>, GatewayError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<crate::body::BoxError>,
    {
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
        // headers (`body_pause`) is cut off: the client's connection is aborted, never left
        // hanging or handed a short body that looks complete.
        let body = Guarded::new(body, u64::MAX, body_pause, None);
        Ok(Response::from_parts(parts, body.boxed_unsync()))
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
    back: Option<(Conn, Arc<ConnPool>)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((conn, pool)) = self.back.take() {
            pool.checkin(conn);
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

/// The response, with a body that returns `conn` to the pool once read to its end.
fn pooled(pool: &Arc<ConnPool>, conn: Conn, response: Response<Incoming>) -> Response<PooledBody> {
    response.map(|body| PooledBody {
        body,
        back: Some((conn, Arc::clone(pool))),
    })
}

pin_project! {
    /// `inner`, or a 504 once `timer` comes due.
    struct Within<'t, F> {
        timer: Pin<&'t mut Sleep>,
        #[pin]
        inner: F,
    }
}

fn within<F: Future>(timer: Pin<&mut Sleep>, inner: F) -> Within<'_, F> {
    Within { timer, inner }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Result<F::Output, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.inner.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(headers_timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The 504 for an upstream that sent no response head within the route's timeout.
fn headers_timed_out() -> GatewayError {
    GatewayError::UpstreamTimeout {
        phase: "response headers",
    }
}

/// What a failed send on a pooled connection means: the client's body broke its limit (413,
/// 408) or its own framing (400), or else the upstream closed or garbled the exchange (502).
fn send_error(upstream: &str, error: &hyper::Error) -> GatewayError {
    client_body_failure(error).unwrap_or_else(|| invalid_response(upstream))
}

/// The client's side of a failed exchange, if the client's streamed body caused it: its
/// limit broken (413, 408) or its own framing (400), as `GatewayError::from_body_error`
/// says.
fn client_body_failure(error: &(dyn std::error::Error + 'static)) -> Option<GatewayError> {
    source_chain(error)
        .any(|e| e.is::<crate::body::BodyLimit>() || e.is::<DownstreamBodyError>())
        .then(|| GatewayError::from_body_error(error))
}

/// Keeps why a request body failed while being sent. hyper's HTTP/1 client passes the body's
/// error on in its own, but its HTTP/2 client resets the stream and reports only that, so
/// for `https://` upstreams (which may speak h2) the body tells its failure here.
#[derive(Clone, Default)]
struct BodyWitness(Arc<Mutex<Option<GatewayError>>>);

impl BodyWitness {
    /// `body`, reporting its first error to this witness.
    fn watch(&self, body: RequestBody) -> RequestBody {
        let witness = self.clone();
        body.map_err(move |error| {
            if let Some(failure) = client_body_failure(error.as_ref()) {
                // A poisoned lock holds a plain Option: take it over.
                let mut slot = witness.0.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert(failure);
            }
            error
        })
        .boxed_unsync()
    }

    fn failure(&self) -> Option<GatewayError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The absolute-form URI hyper-util's client routes by.
fn absolute(scheme: &Scheme, authority: &Authority, uri: &Uri) -> Result<Uri, GatewayError> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Uri::builder()
        .scheme(scheme.clone())
        .authority(authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|e| GatewayError::UpstreamUnavailable {
            reason: format!("cannot build the upstream request: {e}"),
        })
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
    if let Some(failure) = client_body_failure(error) {
        return failure;
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
