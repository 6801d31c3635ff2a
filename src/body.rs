//! Body types shared by the stages.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the gateway answers with: an upstream body streamed through, or a small full body.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// What the gateway sends upstream: the client's body streamed through, or bytes it buffered
/// for validation (sent unchanged).
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;
