//! Stage 3: the body's framing, for routes with a body schema: media type (415), size (413,
//! decided from Content-Length before reading and enforced while streaming), and reading it
//! whole so it can be parsed and forwarded byte for byte.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use http_body::Body;
use http_body_util::BodyExt;

use crate::body::BoxError;
use crate::error::GatewayError;

/// Before reading the body: accepts `application/json` and `application/*+json`, with
/// parameters (415 for any other media type, 400 for two different Content-Type headers).
/// Returns whether a Content-Type was sent; without one, [`check_missing_media_type`]
/// decides once the body is read.
pub fn check_media_type(headers: &HeaderMap) -> Result<bool, GatewayError> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let Some(value) = values.next() else {
        return Ok(false);
    };
    if values.any(|other| other != value) {
        return Err(GatewayError::BadRequest {
            message: "the request has two different Content-Type headers".to_string(),
        });
    }
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    // Media types are case-insensitive; compared without lowercasing a copy.
    let json = essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > "application/".len() + "+json".len()
            && essence
                .get(..12)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/"))
            && essence
                .get(essence.len() - 5..)
                .is_some_and(|s| s.eq_ignore_ascii_case("+json")));
    if json {
        Ok(true)
    } else {
        Err(GatewayError::UnsupportedMediaType)
    }
}

/// After reading the body: a body without Content-Type is 415 (an empty one goes on to fail
/// as empty, 400). Decided on the bytes received, not on framing headers, so HTTP/2 bodies
/// and `Content-Length: 00` are judged alike.
pub fn check_missing_media_type(had_content_type: bool, body: &[u8]) -> Result<(), GatewayError> {
    if had_content_type || body.is_empty() {
        Ok(())
    } else {
        Err(GatewayError::UnsupportedMediaType)
    }
}

/// Refuses (413) a body whose declared Content-Length is over `limit`, before reading any of
/// it. Bodies without one are held to the limit as they stream (`body::Guarded`).
pub fn check_declared_length(headers: &HeaderMap, limit: u64) -> Result<(), GatewayError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > limit => Err(GatewayError::PayloadTooLarge { limit }),
        _ => Ok(()),
    }
}

/// Reads a (guarded) body whole. A broken limit is its 413 or 408; any other read failure
/// (the client went away, bad framing) is a 400 that closes the connection.
pub async fn read_body<B>(body: B) -> Result<Bytes, GatewayError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    // A small body usually arrives as one frame: it is kept as it came, without the
    // collecting buffer list; several frames are joined into one buffer.
    let mut whole = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            let error: BoxError = error.into();
            GatewayError::from_body_error(error.as_ref())
        })?;
        // Trailers carry no body bytes.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match &mut joined {
            Some(buffer) => buffer.extend_from_slice(&data),
            None if whole.is_empty() => whole = data,
            None => {
                let mut buffer = BytesMut::with_capacity(whole.len() + data.len());
                buffer.extend_from_slice(&whole);
                buffer.extend_from_slice(&data);
                joined = Some(buffer);
            }
        }
    }
    Ok(joined.map_or(whole, BytesMut::freeze))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn media_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.api+json",
            "application/merge-patch+json;x=1",
            "APPLICATION/VND.API+JSON",
        ] {
            assert_eq!(
                check_media_type(&headers(&[("content-type", ok)])).ok(),
                Some(true),
                "{ok}"
            );
        }
        for bad in [
            "text/plain",
            "application/xml",
            "application/+json",
            "application/jsonx",
            "application/é+json",
            "text/vnd.x+json",
            "multipart/form-data",
        ] {
            assert!(
                matches!(
                    check_media_type(&headers(&[("content-type", bad)])),
                    Err(GatewayError::UnsupportedMediaType)
                ),
                "{bad}"
            );
        }
        assert_eq!(check_media_type(&headers(&[])).ok(), Some(false));
        let two = headers(&[
            ("content-type", "application/json"),
            ("content-type", "text/plain"),
        ]);
        assert!(matches!(
            check_media_type(&two),
            Err(GatewayError::BadRequest { .. })
        ));
        // Without Content-Type: judged by the bytes received.
        assert!(check_missing_media_type(false, b"").is_ok());
        assert!(check_missing_media_type(false, b"{}").is_err());
        assert!(check_missing_media_type(true, b"{}").is_ok());
    }

    #[tokio::test]
    async fn size_limit() {
        let guarded = |limit| {
            let body = http_body_util::Full::new(Bytes::from_static(b"12345"));
            crate::body::Guarded::new(body, limit, Duration::from_secs(1), None)
        };
        assert_eq!(read_body(guarded(5)).await.unwrap(), "12345");
        assert!(matches!(
            read_body(guarded(4)).await,
            Err(GatewayError::PayloadTooLarge { limit: 4 })
        ));
        // Declared too large: refused before reading.
        assert!(check_declared_length(&headers(&[("content-length", "5")]), 5).is_ok());
        assert!(matches!(
            check_declared_length(&headers(&[("content-length", "99")]), 5),
            Err(GatewayError::PayloadTooLarge { .. })
        ));
    }
}
