//! Body types shared by the stages.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the gateway answers with: an upstream body streamed through, or a small full body.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// What the gateway sends upstream: the client's body streamed through, or bytes it buffered
/// for validation (sent unchanged).
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

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
