//! The HTTP/1 head deadline: a connection that has no request in flight must bring a whole
//! request head within `header_read`, counted from when it was last busy, or it is closed.
//! That bounds both a slow head (a client trickling its request line) and an idle keep-alive
//! connection, as hyper's own `header_read_timeout` does, which closes such connections the
//! same way, with no answer.
//!
//! hyper's version cost ~1 370 instructions per request (2.5 %, `bench/callgrind.sh`, fat
//! LTO): a new boxed timer per request head, and, with any header timeout set, one more pass
//! of its dispatcher each time a connection goes idle. Here the connection notes when it was
//! last busy: when a response ends (its body dropped), and when a stalled write goes on (a
//! response that takes long to flush to a slow reader keeps its connection busy, as it does
//! for hyper, whose timer starts only after the flush). One timer per connection checks it.
//!
//! Also here: [`Stoppable`], the graceful shutdown of an HTTP/1 connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Sleep;

/// What one connection is doing: requests in flight, when it was last busy, and how many
/// requests its client abandoned lately.
#[derive(Debug)]
pub struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Microseconds after `started` when a response last ended or a stalled write went on.
    last_busy: AtomicU64,
    /// Requests abandoned before their answer (an HTTP/2 stream reset) in the current second:
    /// the second's number after `started` in the high 32 bits, the count in the low ones.
    resets: AtomicU64,
    /// Most abandoned requests allowed in one second.
    reset_cap: u32,
    /// Told once when `reset_cap` is exceeded.
    pub too_many_resets: tokio::sync::Notify,
    /// Told when an HTTP/2 stream's client took no data for the write-stall timeout.
    pub stalled: tokio::sync::Notify,
}

impl Activity {
    pub fn new(reset_cap: u32) -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_busy: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            reset_cap,
            too_many_resets: tokio::sync::Notify::new(),
            stalled: tokio::sync::Notify::new(),
        })
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request abandoned before its answer; past the cap in one second, tells
    /// `too_many_resets` (once: the connection is closed then).
    fn note_reset(&self) {
        let second = self.started.elapsed().as_secs() & u64::from(u32::MAX);
        let mut count = 0;
        let _ = self
            .resets
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
                count = if packed >> 32 == second {
                    (packed & u64::from(u32::MAX)).saturating_add(1)
                } else {
                    1
                };
                Some((second << 32) | count)
            });
        if count == u64::from(self.reset_cap) + 1 {
            self.too_many_resets.notify_one();
        }
    }

    /// Notes that the connection is busy now (a response ended, a stalled write went on).
    pub fn touch(&self) {
        let micros = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_busy.store(micros, Ordering::Relaxed);
    }

    /// Counts a request in flight until the returned guard is dropped (with the response
    /// body, or with the request's future if it never made one: then it counts as a reset).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            activity: Arc::clone(self),
            answered: false,
        }
    }

    /// When the connection has been quiet for `limit`: `limit` after it was last busy (for
    /// HTTP/1, when a request head is due; for HTTP/2, when it is idle).
    pub fn quiet_at(&self, limit: Duration) -> Instant {
        let last = self.last_busy.load(Ordering::Relaxed);
        Duration::from_micros(last)
            .checked_add(limit)
            .and_then(|after| self.started.checked_add(after))
            // Beyond what an Instant can say: in practice never.
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365))
    }
}

/// One request in flight on a connection (see [`Activity::begin`]).
#[derive(Debug)]
pub struct InFlight {
    activity: Arc<Activity>,
    /// Whether a response was made; dropped without one, the client abandoned the request.
    answered: bool,
}

impl InFlight {
    /// Notes that the request has its response (its body may still be flowing).
    pub fn answered(mut self) -> InFlight {
        self.answered = true;
        self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.activity.touch();
        if !self.answered {
            self.activity.note_reset();
        }
    }
}

pin_project! {
    /// A response body that keeps its request counted in flight until it is dropped.
    pub struct Tracked<B> {
        #[pin]
        body: B,
        in_flight: Option<InFlight>,
    }
}

impl<B> Tracked<B> {
    pub fn new(body: B, in_flight: Option<InFlight>) -> Self {
        Tracked { body, in_flight }
    }
}

impl<B: Body<Data = Bytes>> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pin_project! {
    /// `connection` (an HTTP/1 connection's future), closed by dropping it when no request
    /// head arrives within `limit` of the connection's last busy moment. `None` then.
    ///
    /// The timer is set lazily: it may run early (the connection was busy since it was set,
    /// which only ever moves the due time later), and is moved to the real due time when it
    /// fires. So a busy connection resets it about once per `limit`, not once per request.
    pub struct HeadDeadline<F> {
        #[pin]
        connection: F,
        #[pin]
        timer: Sleep,
        activity: Arc<Activity>,
        limit: Duration,
    }
}

impl<F> HeadDeadline<F> {
    /// The connection's first head is due within `limit` of now.
    pub fn new(connection: F, activity: Arc<Activity>, limit: Duration) -> Self {
        activity.touch();
        HeadDeadline {
            connection,
            timer: tokio::time::sleep(limit),
            activity,
            limit,
        }
    }
}

impl<F: Future> Future for HeadDeadline<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(output) = this.connection.poll(cx) {
            return Poll::Ready(Some(output));
        }
        // A request in flight has its own limits (body, upstream, write stall); the timer
        // may still fire and wake this task, which then finds nothing to do.
        if this.activity.in_flight.load(Ordering::Relaxed) > 0 {
            return Poll::Pending;
        }
        if this.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let due = this.activity.quiet_at(*this.limit);
        if Instant::now() >= due {
            return Poll::Ready(None);
        }
        // Busy since the timer was set: run it again to the real due time, and poll it so
        // that it wakes this task (due already by the timer's clock: closed now).
        this.timer
            .as_mut()
            .reset(tokio::time::Instant::from_std(due));
        match this.timer.poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

pin_project! {
    /// An HTTP/1 connection that shuts down gracefully (finishes the request in hand, then
    /// closes) once `stopped` completes. hyper-util's `GracefulShutdown::watch` polls its
    /// watch channel's `changed()` on every poll of the connection, which takes the channel's
    /// waiter lock each time (~590 instructions per request, `bench/callgrind.sh`). Here
    /// `stopped` is polled once to register the task's waker, then again only when `draining()`
    /// says so (the server is draining: it is set before the stop is sent) or the connection
    /// is polled by another waker.
    pub struct Stoppable<C, S, D> {
        #[pin]
        connection: C,
        #[pin]
        stopped: S,
        draining: D,
        // The waker `stopped` last registered; `None` until the first poll.
        armed: Option<Waker>,
        stopping: bool,
    }
}

impl<C, S, D> Stoppable<C, S, D> {
    pub fn new(connection: C, stopped: S, draining: D) -> Self {
        Stoppable {
            connection,
            stopped,
            draining,
            armed: None,
            stopping: false,
        }
    }
}

impl<I, Svc, B, S, D> Future for Stoppable<hyper::server::conn::http1::Connection<I, Svc>, S, D>
where
    Svc: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    Svc::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S: Future<Output = ()>,
    D: Fn() -> bool,
{
    type Output = hyper::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if !*this.stopping {
            let armed = this.armed.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
            if !armed || (this.draining)() {
                match this.stopped.poll(cx) {
                    Poll::Ready(()) => {
                        *this.stopping = true;
                        this.connection.as_mut().graceful_shutdown();
                    }
                    Poll::Pending => *this.armed = Some(cx.waker().clone()),
                }
            }
        }
        this.connection.poll(cx)
    }
}
