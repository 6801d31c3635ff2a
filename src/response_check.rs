//! `responses: report`: the upstream's answer compared with the route's documented responses
//! (its OpenAPI operation's, or a hand-written route's `schemas.response` for 2xx), never
//! changing or delaying what the client receives.
//!
//! [`watch`] decides from the answer's head: an undocumented status is a mismatch at once; a
//! body that is documented as JSON and arrives as JSON is wrapped in [`Checked`], which hands
//! every frame on as it comes while keeping a copy up to `limits.response_check`. At the end
//! of the body the copy is parsed and validated on a blocking thread (off the client's path),
//! and each mismatch is logged (route, status, field pointers, request id; never values) and
//! counted in `schemagate_response_mismatches_total{route,field}`. Answers not compared are
//! counted in `schemagate_responses_unchecked_total{route,reason}`. Routes without
//! `responses: report` never come here: their answer body is not wrapped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{BoxError, ResponseBody};
use crate::metrics::{FieldLabels, UncheckedLabels};
use crate::schema::Location;
use crate::snapshot::{Documented, MediaRange, Snapshot};
use crate::state::Shared;

/// Most body mismatches counted and logged for one answer.
const MAX_MISMATCHES: usize = 50;

/// Most answers being compared at once, process-wide (each holds a copy of up to
/// `limits.response_check` bytes and a blocking thread).
const MAX_CHECKS_IN_FLIGHT: usize = 32;

static CHECKS_IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One of the `MAX_CHECKS_IN_FLIGHT` places, given back on drop.
struct CheckSlot;

impl CheckSlot {
    fn take() -> Option<CheckSlot> {
        use std::sync::atomic::Ordering;
        CHECKS_IN_FLIGHT
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_CHECKS_IN_FLIGHT).then_some(n + 1)
            })
            .ok()
            .map(|_| CheckSlot)
    }
}

impl Drop for CheckSlot {
    fn drop(&mut self) {
        CHECKS_IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The answer of route `index` (which has `responses: report`), wrapped for the check when
/// its body is to be compared; counted at once when it cannot be or its status is undocumented.
pub fn watch(
    shared: &Arc<Shared>,
    snapshot: &Arc<Snapshot>,
    index: usize,
    method: &Method,
    request_id: &HeaderValue,
    response: Response<ResponseBody>,
) -> Response<ResponseBody> {
    let Some(route) = snapshot.routes.get(index) else {
        return response;
    };
    let Some(checks) = &route.responses else {
        return response;
    };
    let status = response.status().as_u16();
    let job = Job {
        shared: Arc::clone(shared),
        snapshot: Arc::clone(snapshot),
        index,
        status,
        request_id: request_id.clone(),
    };
    match route.documented_response(status) {
        Documented::Undocumented => {
            job.mismatches(&[Mismatch {
                field: "status".to_string(),
                pointer: String::new(),
                keyword: "status",
            }]);
            return response;
        }
        Documented::NoSchema => return response,
        Documented::Body(_) => {}
    }
    // No body to compare: a HEAD answer, or a status that has none.
    if *method == Method::HEAD || status == 204 || status == 304 {
        return response;
    }
    let headers = response.headers();
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(MediaRange::parse)
        .is_some_and(|r| r.json);
    if !json {
        job.unchecked("not_json");
        return response;
    }
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|n| n > checks.cap) {
        job.unchecked("too_large");
        return response;
    }
    let cap = checks.cap;
    response.map(|inner| {
        Checked {
            inner,
            kept: Vec::new(),
            cap,
            over: false,
            job: Some(job),
        }
        .boxed_unsync()
    })
}

/// What the check needs once the body has ended.
struct Job {
    shared: Arc<Shared>,
    snapshot: Arc<Snapshot>,
    index: usize,
    status: u16,
    request_id: HeaderValue,
}

/// One difference from the documented response.
struct Mismatch {
    /// `status`, or the body's field as the schema spells it (`body.items[*].id`).
    field: String,
    /// Where in the body (`/items/0/id`); empty for the status.
    pointer: String,
    keyword: &'static str,
}

impl Job {
    fn route_name(&self) -> &str {
        self.snapshot
            .routes
            .get(self.index)
            .map_or("-", |r| r.name.as_str())
    }

    fn unchecked(&self, reason: &'static str) {
        self.shared
            .metrics
            .responses_unchecked
            .get_or_create(&UncheckedLabels {
                route: self.route_name().to_string(),
                reason,
            })
            .inc();
    }

    fn mismatches(&self, found: &[Mismatch]) {
        if found.is_empty() {
            return;
        }
        let route = self.route_name();
        for mismatch in found {
            self.shared
                .metrics
                .response_mismatches
                .get_or_create(&FieldLabels {
                    route: route.to_string(),
                    field: mismatch.field.clone(),
                })
                .inc();
        }
        let fields = found
            .iter()
            .map(|m| match m.pointer.as_str() {
                "" => format!("{} ({})", m.field, m.keyword),
                pointer => format!("{} at {pointer} ({})", m.field, m.keyword),
            })
            .collect::<Vec<_>>()
            .join(", ");
        tracing::warn!(
            route,
            status = self.status,
            fields,
            request_id = self.request_id.to_str().unwrap_or("-"),
            "response does not match the documented response"
        );
    }

    /// Parses and validates the kept body (on a blocking thread: off the client's path).
    fn check(self, body: Vec<u8>) {
        let Some(route) = self.snapshot.routes.get(self.index) else {
            return;
        };
        let Documented::Body(schema) = route.documented_response(self.status) else {
            return;
        };
        let found = match crate::schema::parse_body(&body, route.limits.json_depth) {
            Err(_) => vec![Mismatch {
                field: "body".to_string(),
                pointer: String::new(),
                keyword: "json",
            }],
            Ok(value) => {
                let mut violations = Vec::new();
                schema.collect_violations(Location::Body, &value, &mut violations, MAX_MISMATCHES);
                violations
                    .into_iter()
                    .map(|v| Mismatch {
                        field: v.field,
                        pointer: v.pointer,
                        keyword: v.keyword,
                    })
                    .collect()
            }
        };
        self.mismatches(&found);
    }
}

/// The upstream's answer body, every frame handed on unchanged as it arrives, a copy kept up
/// to `cap` bytes for the check at its end.
struct Checked {
    inner: ResponseBody,
    kept: Vec<u8>,
    cap: u64,
    /// More than `cap` bytes arrived: the copy was dropped.
    over: bool,
    /// Taken when the body ends (checked) or fails (unchecked).
    job: Option<Job>,
}

impl Checked {
    fn finish(&mut self) {
        let Some(job) = self.job.take() else {
            return;
        };
        if self.over {
            job.unchecked("too_large");
            return;
        }
        let body = std::mem::take(&mut self.kept);
        // At most `MAX_CHECKS_IN_FLIGHT` checks at once: past it an answer is counted as not
        // compared (`busy`) rather than queueing blocking threads (tokio allows 512) and
        // copies of bodies without bound under a flood of large answers.
        let Some(slot) = CheckSlot::take() else {
            job.unchecked("busy");
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || {
                    job.check(body);
                    drop(slot);
                });
            }
            Err(_) => {
                job.check(body);
                drop(slot);
            }
        }
    }
}

impl Body for Checked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), false) = (frame.data_ref(), this.over) {
                    if (this.kept.len() + data.len()) as u64 > this.cap {
                        this.over = true;
                        this.kept = Vec::new();
                    } else {
                        this.kept.extend_from_slice(data);
                    }
                }
                // The server may not poll again once the body says it has ended.
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(_))) => {
                if let Some(job) = this.job.take() {
                    job.unchecked("incomplete");
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Checked {
    fn drop(&mut self) {
        if self.job.is_none() {
            return;
        }
        if self.inner.is_end_stream() {
            self.finish();
        } else if let Some(job) = self.job.take() {
            job.unchecked("incomplete");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_in_flight_are_bounded() {
        // Other tests in this process may hold places; take what is left, then one more.
        let mut held = Vec::new();
        while let Some(slot) = CheckSlot::take() {
            held.push(slot);
            assert!(held.len() <= MAX_CHECKS_IN_FLIGHT);
        }
        assert!(CheckSlot::take().is_none());
        held.pop();
        assert!(
            CheckSlot::take().is_some(),
            "a place given back is taken again"
        );
    }
}
