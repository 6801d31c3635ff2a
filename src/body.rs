//! Body types shared by the stages, and the guard that holds a request body to its limits.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the gateway answers with: an upstream body streamed through, or a small full body.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// What the gateway sends upstream: the client's body streamed through, or bytes it buffered
/// for validation (sent unchanged).
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// A request body broke one of its route's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// More than `limit` bytes arrived.
    TooLarge { limit: u64 },
    /// No data arrived for the idle timeout.
    Idle,
    /// The whole body took longer than the body timeout.
    Total,
}

impl BodyLimit {
    /// The limit named anywhere in an error's source chain (a body error surfaces wrapped in
    /// hyper's and the upstream client's errors).
    pub fn find(error: &(dyn std::error::Error + 'static)) -> Option<BodyLimit> {
        std::iter::successors(Some(error), |e| e.source())
            .find_map(|e| e.downcast_ref::<BodyLimit>().copied())
    }
}

impl fmt::Display for BodyLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyLimit::TooLarge { limit } => write!(f, "request body larger than {limit} bytes"),
            BodyLimit::Idle => f.write_str("request body paused too long"),
            BodyLimit::Total => f.write_str("request body took too long"),
        }
    }
}

impl std::error::Error for BodyLimit {}

pin_project! {
    /// A body held to limits: at most `limit` bytes, no pause longer than `idle`, the whole
    /// of it within `total`. Breaking one ends the body with a [`BodyLimit`] error. Request
    /// bodies get their route's limits; upstream response bodies only the pause limit.
    ///
    /// Cheap when nothing waits: no timer exists until the body first has to wait for data,
    /// and data arriving only notes the time; the one timer is moved when it fires early.
    pub struct Guarded<B> {
        #[pin]
        inner: B,
        seen: u64,
        limit: u64,
        idle: Duration,
        // When data last arrived (or the body started).
        last: Instant,
        // When the whole body must be done, if that is bounded.
        deadline: Option<Instant>,
        #[pin]
        timer: Option<Sleep>,
    }
}

impl<B> Guarded<B> {
    /// `total: None` sets no bound on the whole body (an upstream's response may be long).
    pub fn new(inner: B, limit: u64, idle: Duration, total: Option<Duration>) -> Self {
        let now = Instant::now();
        Guarded {
            inner,
            seen: 0,
            limit,
            idle,
            last: now,
            deadline: total.map(|total| now + total),
            timer: None,
        }
    }
}

impl<B> Body for Guarded<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen = this.seen.saturating_add(data.len() as u64);
                    if *this.seen > *this.limit {
                        let limit = *this.limit;
                        return Poll::Ready(Some(Err(Box::new(BodyLimit::TooLarge { limit }))));
                    }
                    *this.last = Instant::now();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let idle_end = *this.last + *this.idle;
                let wake = this.deadline.map_or(idle_end, |d| d.min(idle_end));
                if this.timer.is_none() {
                    this.timer.set(Some(tokio::time::sleep_until(wake)));
                }
                loop {
                    let Some(mut timer) = this.timer.as_mut().as_pin_mut() else {
                        return Poll::Pending;
                    };
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // The timer fired: a limit is broken, or data came since it was set.
                    let now = Instant::now();
                    if this.deadline.is_some_and(|d| now >= d) {
                        return Poll::Ready(Some(Err(Box::new(BodyLimit::Total))));
                    }
                    if now >= idle_end {
                        return Poll::Ready(Some(Err(Box::new(BodyLimit::Idle))));
                    }
                    timer.reset(wake);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client's request body failed while it was being streamed upstream (broken chunked
/// framing, a body cut short, a reset). `upstream` looks for it in the error's sources so
/// the answer is the client's 400, not a 502 that blames the upstream.
#[derive(Debug)]
pub struct DownstreamBodyError(pub BoxError);

impl std::fmt::Display for DownstreamBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the client's request body failed: {}", self.0)
    }
}

impl std::error::Error for DownstreamBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn chunks(
        parts: Vec<(u64, &'static [u8])>,
    ) -> impl Body<Data = Bytes, Error = std::convert::Infallible> {
        let stream = futures_util::stream::unfold(parts.into_iter(), |mut rest| async move {
            let (delay_ms, bytes) = rest.next()?;
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            Some((Ok(Frame::data(Bytes::from_static(bytes))), rest))
        });
        StreamBody::new(stream)
    }

    async fn outcome(parts: Vec<(u64, &'static [u8])>) -> Result<Bytes, Option<BodyLimit>> {
        let guarded = Guarded::new(
            chunks(parts),
            10,
            Duration::from_secs(1),
            Some(Duration::from_secs(3)),
        );
        match guarded.collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(error) => Err(BodyLimit::find(error.as_ref())),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn holds_a_body_to_size_pause_and_total_time() {
        assert_eq!(
            outcome(vec![(0, b"12345"), (900, b"67890")]).await,
            Ok(Bytes::from_static(b"1234567890"))
        );
        assert_eq!(
            outcome(vec![(0, b"12345"), (0, b"678901")]).await,
            Err(Some(BodyLimit::TooLarge { limit: 10 }))
        );
        assert_eq!(
            outcome(vec![(0, b"1"), (1_500, b"2")]).await,
            Err(Some(BodyLimit::Idle))
        );
        // Each pause is short, but together they pass the total.
        assert_eq!(
            outcome(vec![(900, b"1"), (900, b"2"), (900, b"3"), (900, b"4")]).await,
            Err(Some(BodyLimit::Total))
        );
    }
}
