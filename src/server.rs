//! Listeners, connections and graceful shutdown.
//!
//! Each listener accepts HTTP/1.1 and h2c (prior knowledge) on the same port. On shutdown the
//! accept loops stop at once, open connections are told to finish their in-flight requests
//! (HTTP/1 stops keep-alive, HTTP/2 sends GOAWAY), and the server waits up to the configured
//! drain timeout for them.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Sleep;

use crate::accesslog::AccessLog;
use crate::body::ResponseBody;
use crate::forward::Downstream;
use crate::proxy;
use crate::reload::{Loader, Reloader};
use crate::snapshot::{ServerLimits, Snapshot};
use crate::state::Shared;
use crate::tls::ServerTls;
use deadline::{Activity, HeadDeadline, InFlight, Stoppable, Tracked};

mod deadline;
mod h2;

/// How often idle rate-limit state is swept.
const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// A gateway whose listeners are bound but not yet serving.
pub struct Gateway {
    /// Each bound socket with the address it was configured as (to find its TLS settings in
    /// later snapshots).
    listeners: Vec<(SocketAddr, Option<Arc<ServerTls>>, TcpListener)>,
    admin: Option<TcpListener>,
    shared: Arc<Shared>,
    /// Set by [`Gateway::reloadable`]; the admin listener triggers and reports reloads with it.
    reloader: Option<Arc<Reloader>>,
}

impl Gateway {
    /// Binds every listener of `snapshot` (the admin one too) with its `limits.backlog`. A
    /// port of 0 picks a free port (see `local_addrs`).
    pub async fn bind(snapshot: Snapshot) -> std::io::Result<Gateway> {
        Gateway::bind_with_access_log(snapshot, AccessLog::off()).await
    }

    /// Like [`Gateway::bind`], writing an access line per request to `access_log`.
    pub async fn bind_with_access_log(
        snapshot: Snapshot,
        access_log: AccessLog,
    ) -> std::io::Result<Gateway> {
        let backlog = snapshot.server.backlog;
        let mut listeners = Vec::with_capacity(snapshot.listeners.len());
        for configured in &snapshot.listeners {
            let addr = configured.address;
            let listener = listen(addr, backlog).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
            })?;
            listeners.push((addr, configured.tls.clone(), listener));
        }
        let admin = match &snapshot.admin {
            Some(settings) => Some(listen(settings.address, backlog).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on {} (admin): {e}", settings.address),
                )
            })?),
            None => None,
        };
        Ok(Gateway {
            listeners,
            admin,
            shared: Shared::with_access_log(snapshot, access_log),
            reloader: None,
        })
    }

    /// Makes the gateway reloadable from `loader`'s files: returns the reloader (to watch
    /// files, answer SIGHUP), which `POST /reload` and `/status` on the admin listener use.
    pub fn reloadable(&mut self, loader: Loader) -> Arc<Reloader> {
        let reloader = Reloader::new(Arc::clone(&self.shared), loader);
        self.reloader = Some(Arc::clone(&reloader));
        reloader
    }

    /// The admin listener's address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The state requests read; reloads store new snapshots into it.
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// The addresses actually bound, in config order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(_, _, l)| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` completes, then drains. Returns `true` when every in-flight
    /// request finished within the drain timeout.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> bool {
        let graceful = Arc::new(GracefulShutdown::new());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut accept_tasks = Vec::new();
        let open = Arc::new(OpenConnections::default());
        for (configured, bound_tls, listener) in self.listeners {
            let shared = Arc::clone(&self.shared);
            let graceful = Arc::clone(&graceful);
            let open = Arc::clone(&open);
            let mut stop = stop_rx.clone();
            accept_tasks.push(tokio::spawn(async move {
                loop {
                    // At the connection cap, stop accepting until one closes: new clients wait
                    // in the kernel's accept queue instead of costing memory here.
                    while open.count() >= shared.snapshot.load().server.connections {
                        tokio::select! {
                            _ = stop.changed() => return,
                            _ = open.wait_for_close() => {}
                        }
                    }
                    let (stream, peer) = tokio::select! {
                        _ = stop.changed() => break,
                        accepted = listener.accept() => match accepted {
                            Ok(pair) => pair,
                            Err(error) => {
                                // EMFILE and friends: back off briefly instead of spinning.
                                tracing::warn!(%error, "accept failed");
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                                continue;
                            }
                        },
                    };
                    let _ = stream.set_nodelay(true);
                    // Each connection uses the TLS settings current when it is accepted: a
                    // renewed certificate applies to new connections, never to open ones.
                    // Limits and timeouts likewise come from the snapshot current at accept.
                    let snapshot = shared.snapshot.load();
                    // A reload that dropped or moved this listener (a restart applies that)
                    // leaves it with the settings it was bound with: a TLS port never turns
                    // plaintext by accident.
                    let tls = match snapshot.listeners.iter().find(|l| l.address == configured) {
                        Some(current) => current.tls.clone(),
                        None => bound_tls.clone(),
                    };
                    let limits = snapshot.server;
                    let activity = Activity::new(limits.h2_resets);
                    let connection = Connection {
                        shared: Arc::clone(&shared),
                        limits,
                        watcher: graceful.watcher(),
                        stop: stop.clone(),
                        peer,
                        activity: Arc::clone(&activity),
                    };
                    let stream = WriteStall::new(stream, limits.write_stall, activity);
                    let held = open.hold();
                    tokio::spawn(async move {
                        connection.shared.metrics.connections.inc();
                        let shared = Arc::clone(&connection.shared);
                        // The task's future is allocated for the connection's whole life, at
                        // the size of its largest branch: TLS state (and HTTP/2's, below) is
                        // boxed so that plaintext HTTP/1 connections do not carry its room.
                        match tls {
                            None => connection.serve_plain(stream, limits.header_read).await,
                            Some(tls) => Box::pin(connection.serve_tls(stream, &tls)).await,
                        }
                        shared.metrics.connections.dec();
                        drop(held);
                    });
                }
                // Dropping the listener here closes the port at once.
            }));
        }

        // Idle tenants' limiter state is reclaimed every few seconds (a full store also sweeps
        // itself, at most once a second).
        let sweeper = {
            let shared = Arc::clone(&self.shared);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SWEEP_INTERVAL);
                loop {
                    tick.tick().await;
                    let snapshot = shared.snapshot.load();
                    for limiter in snapshot.routes.iter().filter_map(|r| r.limiter.as_ref()) {
                        limiter.sweep();
                    }
                    for route in &snapshot.routes {
                        route.upstream.evict_idle();
                    }
                }
            })
        };

        // `jwks_url` providers: the first fetch at once, then every `refresh` (sooner while
        // no keys were had); each fetch on its own task, bounded by its timeout.
        let jwks = {
            let shared = Arc::clone(&self.shared);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let snapshot = shared.snapshot.load();
                    for provider in snapshot.jwt.iter().filter(|p| p.remote.is_some()) {
                        let provider = Arc::clone(provider);
                        tokio::spawn(async move { provider.refresh_if_due().await });
                    }
                }
            })
        };

        let admin = self.admin.map(|listener| {
            tokio::spawn(serve_admin(
                listener,
                Arc::clone(&self.shared),
                self.reloader.clone(),
            ))
        });

        shutdown.await;
        sweeper.abort();
        jwks.abort();
        // Set before the stop is sent: HTTP/1 connections read it when woken (`Stoppable`).
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Release);
        let drain = self.shared.snapshot.load().drain_timeout;
        tracing::info!(drain_timeout = ?drain, "shutting down: no longer accepting, draining");
        let _ = stop_tx.send(true);
        for task in accept_tasks {
            let _ = task.await;
        }
        // The accept tasks have ended, so this is the last reference.
        let Ok(graceful) = Arc::try_unwrap(graceful) else {
            tracing::error!("accept loops still hold the shutdown handle; not draining");
            return false;
        };
        // The admin listener keeps answering while draining (`/readyz` says so), then stops.
        let drained = match tokio::time::timeout(drain, graceful.shutdown()).await {
            Ok(()) => {
                tracing::info!("drained");
                true
            }
            Err(_) => {
                tracing::warn!("drain timeout reached with requests still in flight");
                false
            }
        };
        if let Some(admin) = admin {
            admin.abort();
        }
        drained
    }
}

/// A listening socket on `addr` with an accept queue of `backlog` (the kernel caps it at
/// `net.core.somaxconn`). `TcpListener::bind` would fix the backlog at 128; otherwise this is
/// what it does: `SO_REUSEADDR` on Unix (a restarted gateway rebinds a port whose old
/// connections are still in TIME_WAIT), never on Windows (where it lets another process take
/// over a port in use). Must run inside the runtime, which registers the socket.
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Serves the admin endpoints (HTTP/1.1) until aborted.
async fn serve_admin(listener: TcpListener, shared: Arc<Shared>, reloader: Option<Arc<Reloader>>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        let reloader = reloader.clone();
        let service = service_fn(move |request| {
            crate::admin::handle(Arc::clone(&shared), reloader.clone(), request)
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One accepted connection, before its protocol (and TLS) is settled.
struct Connection {
    shared: Arc<Shared>,
    limits: ServerLimits,
    watcher: hyper_util::server::graceful::Watcher,
    /// Turns true when the server shuts down (HTTP/2 connections watch it themselves).
    stop: tokio::sync::watch::Receiver<bool>,
    peer: SocketAddr,
    /// Shared with the stream's `WriteStall`: HTTP/1's head deadline, HTTP/2's idle timeout
    /// and reset cap.
    activity: Arc<Activity>,
}

impl Connection {
    /// Runs the TLS handshake (bounded by the listener's handshake timeout), then serves.
    async fn serve_tls(self, stream: WriteStall<TcpStream>, tls: &ServerTls) {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.config));
        let stream =
            match tokio::time::timeout(tls.handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%error, peer = %self.peer, "TLS handshake failed");
                    self.count_handshake_failure("error");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                    self.count_handshake_failure("timeout");
                    return;
                }
            };
        let subject = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(<[_]>::first)
            .and_then(crate::tls::client_subject);
        // Over TLS the protocol was agreed by ALPN: h2, or else HTTP/1.1.
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        self.serve(stream, Some(subject), h2).await;
    }

    /// Tells HTTP/2 prior knowledge from HTTP/1 by the first bytes, within `within`: a client
    /// that sends nothing (or only part of the HTTP/2 preface) is dropped then, instead of
    /// holding one of the connection slots. (hyper-util's own detection has no deadline.)
    ///
    /// This future and `serve`'s live as long as the connection, so neither is an `async fn`
    /// (which stores every argument twice).
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn holds its arguments twice"
    )]
    fn serve_plain(
        self,
        stream: WriteStall<TcpStream>,
        within: Duration,
    ) -> impl Future<Output = ()> + Send {
        async move {
            match sniff_h2(stream.get_ref(), within).await {
                Some(h2) => self.serve(stream, None, h2).await,
                None => {
                    tracing::debug!(peer = %self.peer, "no request within the header-read timeout")
                }
            }
        }
    }

    fn count_handshake_failure(&self, result: &str) {
        let labels = crate::metrics::ResultLabels {
            result: result.to_string(),
        };
        let failures = &self.shared.metrics.tls_handshake_failures;
        failures.get_or_create(&labels).inc();
    }

    /// Serves HTTP/1.1 or HTTP/2 on `io`. `tls` holds the client certificate's subject when
    /// the connection is TLS.
    fn serve<I>(
        self,
        io: I,
        tls: Option<Option<Arc<str>>>,
        h2: bool,
    ) -> impl Future<Output = ()> + Send
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            shared,
            limits,
            watcher,
            stop,
            peer,
            activity,
        } = self;
        let downstream = Downstream {
            peer: peer.ip(),
            tls: tls.is_some(),
            client_subject: tls.flatten(),
        };
        // The protocol is known (sniffed or agreed by ALPN), so hyper's own connection types
        // serve it directly: no version detection, no rewind buffer, no enum of both states.
        let io = TokioIo::new(io);
        async move {
            let ended = if h2 {
                // Boxed: most connections are HTTP/1 and should not carry room for this.
                let ended =
                    Box::pin(serve_h2(io, shared, downstream, limits, activity, stop)).await;
                // Held until now, so that a graceful shutdown waits for this connection.
                drop(watcher);
                ended
            } else {
                let drain_flag = Arc::clone(&shared);
                // Each request counts in flight until its response body is dropped, for the
                // head deadline.
                let service = service(shared, downstream, Arc::clone(&activity), |body, done| {
                    Tracked::new(body, Some(done))
                });
                // The head is due within header_read of now (after the TLS handshake or the
                // HTTP/2 sniff), then of each response's end.
                let connection = http1(&limits).serve_connection(io, service);
                let mut stop = stop;
                let stopped = async move {
                    // `run` sends the stop before it could drop the sender; a sender dropped
                    // without it (the server's future dropped) is seen when draining is set.
                    let _ = stop.wait_for(|stop| *stop).await;
                };
                let draining = move || drain_flag.draining.load(Ordering::Acquire);
                let serving = Stoppable::new(connection, stopped, draining);
                let ended = match HeadDeadline::new(serving, activity, limits.header_read).await {
                    Some(ended) => ended,
                    None => {
                        tracing::debug!(%peer, "no request head within the header-read timeout");
                        Ok(())
                    }
                };
                // Held until now, so that a graceful shutdown waits for this connection.
                drop(watcher);
                ended
            };
            if let Err(error) = ended {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        }
    }
}

/// The service of one connection: each request counts in flight on `activity` (dropped
/// before its answer, it counts as a reset), is handled by `proxy::handle` in a boxed future,
/// and has its response body wrapped by `wrap` with the request's in-flight guard, which the
/// wrapper holds until the body is done.
fn service<B>(
    shared: Arc<Shared>,
    downstream: Downstream,
    activity: Arc<Activity>,
    wrap: impl Fn(ResponseBody, InFlight) -> B + Clone + Send + Sync + 'static,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<B>,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Clone
where
    B: http_body::Body + Send + 'static,
{
    service_fn(move |request| {
        let in_flight = activity.begin();
        // Boxed: hyper keeps a slot of the service future's size in every HTTP/1 connection
        // for its whole life, so unboxed, each idle connection would hold the request
        // future's 2.3 KB. Boxed, a request allocates it and frees it when answered: ~340
        // instructions per request (0.5 %) for 2.2 MiB less at 1 000 idle connections.
        let handling = Box::pin(proxy::handle(
            Arc::clone(&shared),
            downstream.clone(),
            request,
        ));
        let wrap = wrap.clone();
        async move {
            let response = handling.await?;
            let in_flight = in_flight.answered();
            Ok::<_, std::convert::Infallible>(response.map(|body| wrap(body, in_flight)))
        }
    })
}

/// Serves HTTP/2 on `io` (see `h2`): each response body is fed to its stream under the write
/// stall limit, the connection closes when idle or reset too often, and when `stop` turns
/// true it gets GOAWAY and its streams finish.
async fn serve_h2<I>(
    io: TokioIo<I>,
    shared: Arc<Shared>,
    downstream: Downstream,
    limits: ServerLimits,
    activity: Arc<Activity>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let metrics_of = Arc::clone(&shared);
    let (feeding, fed_by) = (Arc::clone(&shared), Arc::clone(&activity));
    let service = service(
        shared,
        downstream,
        Arc::clone(&activity),
        move |body, done| {
            let (shared, activity) = (Arc::clone(&feeding), Arc::clone(&fed_by));
            h2::fed(body, limits.write_stall, done, activity, shared)
        },
    );
    let connection = http2(&limits).serve_connection(io, service);
    h2::serve(
        connection,
        |connection| connection.graceful_shutdown(),
        activity,
        limits.header_read,
        stop,
        &metrics_of.metrics,
    )
    .await
}

/// hyper's own cap on header fields when none is set.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// The HTTP/1 settings for `limits`: hyper's own parser limits sit at or above the gateway's,
/// so requests between the two get the envelope from `proxy::check_head`; heads beyond
/// them get hyper's bare answer.
fn http1(limits: &ServerLimits) -> hyper::server::conn::http1::Builder {
    let head = limits.header_bytes.saturating_add(limits.uri);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        // Our own head deadline replaces hyper's (see `deadline`). No timer is set; the
        // explicit None keeps hyper's own 30 s default off should one ever be.
        .header_read_timeout(None)
        .max_buf_size(head.saturating_mul(2).max(8192));
    // hyper's field cap is left at its default (100) unless the gateway's limit is above it:
    // once a cap is set, hyper allocates and fills two arrays of that many entries for every
    // request head, where the default ones sit on the stack uninitialised. Setting 2 x 100
    // cost ~540 instructions per request, 1 % (bench/callgrind.sh, fat LTO; ~2 550 without
    // LTO). So with the default limit (100), a head of 101 fields or more gets hyper's bare
    // 431.
    if limits.headers > HYPER_DEFAULT_MAX_HEADERS {
        builder.max_headers(limits.headers.saturating_mul(2).min(10_000));
    }
    builder
}

/// Streams a client may reset before the gateway accepts them; past it, h2 answers GOAWAY
/// `ENHANCE_YOUR_CALM` (h2's own rapid-reset defence; 20 is its default, set on purpose).
const H2_PENDING_RESETS: usize = 20;
/// Streams the gateway may reset for a client's protocol errors before h2 closes the
/// connection with GOAWAY `ENHANCE_YOUR_CALM` (h2's default, set on purpose).
const H2_LOCAL_ERROR_RESETS: usize = 1024;
/// Bytes queued per stream beyond what the client's window lets through. hyper's default is
/// 400 KiB per stream (40 MiB for a connection of 100 stalled streams); the response feeder
/// (`h2::fed`) already holds at most one frame, so a small queue costs no throughput.
const H2_SEND_BUFFER: usize = 64 << 10;

/// The HTTP/2 settings for `limits`. The header list is bounded in bytes, at twice the head
/// (a larger HEADERS block is refused by h2 with a stream error, whatever HPACK decodes it
/// to); keep-alive PINGs go out every `header_read` and a peer that leaves one unanswered for
/// `header_read` is closed.
fn http2(limits: &ServerLimits) -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let head = limits.header_bytes.saturating_add(limits.uri);
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_streams)
        .max_header_list_size(u32::try_from(head.saturating_mul(2)).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(H2_PENDING_RESETS)
        .max_local_error_reset_streams(H2_LOCAL_ERROR_RESETS)
        .max_send_buf_size(H2_SEND_BUFFER)
        .keep_alive_interval(limits.header_read)
        .keep_alive_timeout(limits.header_read);
    builder
}

/// Open client connections across all listeners, for the connection cap.
#[derive(Default)]
struct OpenConnections {
    count: AtomicUsize,
    closed: tokio::sync::Notify,
}

impl OpenConnections {
    fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn hold(self: &Arc<Self>) -> HeldConnection {
        self.count.fetch_add(1, Ordering::Relaxed);
        HeldConnection(Arc::clone(self))
    }

    /// Returns when a connection closes, or after a short while (re-checking covers a close
    /// that happened between the caller's check and this wait).
    async fn wait_for_close(&self) {
        let _ = tokio::time::timeout(Duration::from_millis(50), self.closed.notified()).await;
    }
}

/// Counts one open connection until dropped.
struct HeldConnection(Arc<OpenConnections>);

impl Drop for HeldConnection {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::Relaxed);
        self.0.closed.notify_waiters();
    }
}

pin_project! {
    /// A client stream whose writes may not stall longer than `limit`: a client that stops
    /// reading its response has its connection closed instead of holding it forever.
    struct WriteStall<I> {
        #[pin]
        io: I,
        limit: Duration,
        armed: bool,
        // Made the first time a write stalls (most connections never see one), and boxed so
        // the stream stays `Unpin`, as hyper and rustls want.
        timer: Option<Pin<Box<Sleep>>>,
        // Told when a stalled write goes on: a connection flushing a response is busy.
        activity: Arc<Activity>,
    }
}

impl<I> WriteStall<I> {
    fn get_ref(&self) -> &I {
        &self.io
    }

    fn new(io: I, limit: Duration, activity: Arc<Activity>) -> Self {
        WriteStall {
            io,
            limit,
            armed: false,
            timer: None,
            activity,
        }
    }
}

impl<I> WriteStall<I> {
    /// Passes a write-side poll through; while it stays pending, the stall timer runs.
    fn guard<T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut I>, &mut Context<'_>) -> Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        let this = self.project();
        match poll(this.io, cx) {
            Poll::Pending => {
                if !*this.armed {
                    *this.armed = true;
                    let deadline = tokio::time::Instant::now() + *this.limit;
                    match this.timer {
                        Some(timer) => timer.as_mut().reset(deadline),
                        None => *this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                // Armed just above if it was not, so the timer exists.
                if let Some(timer) = this.timer.as_mut() {
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the client stopped reading its response",
                        )));
                    }
                }
                Poll::Pending
            }
            ready => {
                if *this.armed {
                    // A stalled write went on: flushing a response keeps the connection
                    // busy (see `deadline`). Writes that never wait need no note: they
                    // follow the end of a response, which is noted.
                    this.activity.touch();
                }
                *this.armed = false;
                ready
            }
        }
    }
}

impl<I: AsyncRead> AsyncRead for WriteStall<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<I: AsyncWrite> AsyncWrite for WriteStall<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.guard(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.guard(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.guard(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.guard(cx, |io, cx| io.poll_shutdown(cx))
    }
}

/// Whether a plaintext client opens with the HTTP/2 preface (`Some(true)`), with anything
/// else (`Some(false)`: HTTP/1), or sends nothing within `within` / closes (`None`). Peeks,
/// so the bytes stay for hyper to read.
async fn sniff_h2(stream: &TcpStream, within: Duration) -> Option<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 24];
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != PREFACE[..n] {
            return Some(false);
        }
        if n == PREFACE.len() {
            return Some(true);
        }
        // Part of the preface so far; peeking again at once would see the same bytes.
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
