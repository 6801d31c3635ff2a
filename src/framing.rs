//! Stage 3: the body's framing, for routes with a body schema: media type (415), size (413,
//! decided from Content-Length before reading and enforced while streaming), and reading it
//! whole so it can be parsed and forwarded byte for byte.

use bytes::Bytes;
use http::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::body::BoxError;
use crate::error::GatewayError;

/// Accepts `application/json` and `application/*+json`, with parameters. A request without
/// Content-Type passes only if it has no body (it then fails as an empty body, 400).
pub fn check_media_type(headers: &HeaderMap) -> Result<(), GatewayError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return if declares_body(headers) {
            Err(GatewayError::UnsupportedMediaType)
        } else {
            Ok(())
        };
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let json = essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.len() > 5 && sub.ends_with("+json"));
    if json {
        Ok(())
    } else {
        Err(GatewayError::UnsupportedMediaType)
    }
}

fn declares_body(headers: &HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// Reads the whole body, refusing (413) as soon as it is known to exceed `limit`.
pub async fn read_body<B>(headers: &HeaderMap, body: B, limit: u64) -> Result<Bytes, GatewayError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit_usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => {
            Err(GatewayError::PayloadTooLarge { limit })
        }
        Err(_) => Err(GatewayError::BadRequest {
            message: "the request body could not be read".to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn media_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.api+json",
            "application/merge-patch+json;x=1",
        ] {
            assert!(
                check_media_type(&headers(&[("content-type", ok)])).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "text/plain",
            "application/xml",
            "application/+json",
            "application/jsonx",
            "multipart/form-data",
        ] {
            assert!(
                check_media_type(&headers(&[("content-type", bad)])).is_err(),
                "{bad}"
            );
        }
        assert!(check_media_type(&headers(&[])).is_ok());
        assert!(check_media_type(&headers(&[("content-length", "0")])).is_ok());
        assert!(check_media_type(&headers(&[("content-length", "3")])).is_err());
        assert!(check_media_type(&headers(&[("transfer-encoding", "chunked")])).is_err());
    }

    #[tokio::test]
    async fn size_limit() {
        let body = http_body_util::Full::new(Bytes::from_static(b"12345"));
        assert_eq!(
            read_body(&headers(&[]), body.clone(), 5).await.unwrap(),
            "12345"
        );
        assert!(matches!(
            read_body(&headers(&[]), body.clone(), 4).await,
            Err(GatewayError::PayloadTooLarge { limit: 4 })
        ));
        // Declared too large: refused before reading.
        assert!(matches!(
            read_body(&headers(&[("content-length", "99")]), body, 5).await,
            Err(GatewayError::PayloadTooLarge { .. })
        ));
    }
}
