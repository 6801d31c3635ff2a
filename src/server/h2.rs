//! HTTP/2 connections: how long one may hold a connection slot, and a stream its upstream.
//!
//! hyper's HTTP/2 server closes nothing on its own: a client that sends the preface and then
//! nothing keeps its connection (and one of `limits.connections`) forever, and a stream whose
//! flow-control window stays at zero is never polled again, so its response body, and the
//! pooled upstream connection behind it, are held for as long as the client likes. Here:
//! - a connection with no request in flight for `timeouts.header_read` gets GOAWAY and, if it
//!   has not closed `header_read` later, is dropped: an idle HTTP/2 connection holds a slot no
//!   longer than an idle HTTP/1 one;
//! - a client that abandons more than `limits.h2_resets` requests in one second (rapid reset)
//!   has its connection dropped at once;
//! - every response body is fed to its stream by a small task through a one-frame channel:
//!   when the stream takes no frame for `timeouts.write_stall`, the task drops the body (the
//!   upstream connection is released) and the connection is closed, as a stalled write closes
//!   an HTTP/1 one: hyper polls a stream at a zero window for nothing, so it cannot be reset
//!   alone, and its client never sees a short body that looks whole. At most one frame waits
//!   beyond the client's window.
//!
//! hyper's own limits (concurrent streams, header list size, pending-accept and local-error
//! resets, keep-alive PINGs) are set in `server::http2`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::deadline::{Activity, InFlight};
use crate::body::{BoxError, ResponseBody};
use crate::metrics::{H2Close, Metrics};
use crate::state::Shared;

/// Serves an HTTP/2 connection until it ends: closed when idle, when its client resets too
/// many streams or stops taking a stream's data, and told GOAWAY when the server shuts down (`stop` turns true), after which
/// its streams finish within the server's drain timeout.
pub async fn serve<C>(
    connection: C,
    graceful_shutdown: impl Fn(Pin<&mut C>),
    activity: Arc<Activity>,
    idle: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    metrics: &Metrics,
) -> Result<(), hyper::Error>
where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
{
    let mut connection = std::pin::pin!(connection);
    let timer = tokio::time::sleep_until(activity.quiet_at(idle).into());
    let mut timer = std::pin::pin!(timer);
    let mut stopping = false;
    // Set once the connection was told GOAWAY for being idle: when it is dropped.
    let mut idle_closing = false;
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                // A connection already counted as idle may end by its PING timing out too.
                if ended.as_ref().is_err_and(hyper::Error::is_timeout) && !idle_closing {
                    metrics.h2_closed(H2Close::PingTimeout);
                }
                return ended;
            }
            () = activity.too_many_resets.notified() => {
                metrics.h2_closed(H2Close::Resets);
                return Ok(());
            }
            () = activity.stalled.notified() => {
                metrics.h2_closed(H2Close::WriteStall);
                return Ok(());
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                graceful_shutdown(connection.as_mut());
            }
            () = timer.as_mut() => {
                if idle_closing {
                    // Told GOAWAY `idle` ago and still open: the client ignores it.
                    return Ok(());
                }
                let now = tokio::time::Instant::now();
                let due = tokio::time::Instant::from_std(activity.quiet_at(idle));
                if activity.in_flight() > 0 {
                    // Streams open: they have their own limits; look again later.
                    timer.as_mut().reset(now + idle);
                } else if now < due {
                    timer.as_mut().reset(due);
                } else {
                    metrics.h2_closed(H2Close::Idle);
                    idle_closing = true;
                    graceful_shutdown(connection.as_mut());
                    timer.as_mut().reset(now + idle);
                }
            }
        }
    }
}

/// `body`, fed to its HTTP/2 stream by a task that gives up when the stream takes no frame
/// for `stall` (and tells `activity`, which closes the connection). The request counts in
/// flight (`in_flight`) until the task ends.
pub fn fed(
    body: ResponseBody,
    stall: Duration,
    in_flight: InFlight,
    activity: Arc<Activity>,
    shared: Arc<Shared>,
) -> FedBody {
    let (frames, receiver) = mpsc::channel(1);
    let finished = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&finished);
    tokio::spawn(async move {
        let _in_flight = in_flight;
        let mut body = std::pin::pin!(body);
        loop {
            let Some(frame) = body.frame().await else {
                done.store(true, Ordering::Release);
                return;
            };
            let failed = frame.is_err();
            match tokio::time::timeout(stall, frames.send(frame)).await {
                Ok(Ok(())) if !failed => {}
                // The body failed (passed on), or the stream is gone (client reset).
                Ok(_) => return,
                Err(_) => {
                    shared.metrics.h2_stream_stalled();
                    activity.stalled.notify_one();
                    tracing::debug!(
                        "an HTTP/2 client took no data for the write-stall timeout; closing"
                    );
                    // Returning drops the body: its upstream connection is released.
                    return;
                }
            }
        }
    });
    FedBody { receiver, finished }
}

/// The stream's side of [`fed`].
pub struct FedBody {
    receiver: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
    finished: Arc<AtomicBool>,
}

impl Body for FedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.receiver.poll_recv(cx) {
            Poll::Ready(None) if !self.finished.load(Ordering::Acquire) => {
                // The feeder gave up: an error, so the stream is reset rather than ended.
                Poll::Ready(Some(Err(
                    "the client took no data for the write-stall timeout".into(),
                )))
            }
            other => other,
        }
    }
}
