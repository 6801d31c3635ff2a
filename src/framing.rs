//! Stage 3, the request body, owned here from start to end: media type (415), declared
//! length (413 before reading), the guard that holds it to the route's size and time limits
//! (413, 408, and 400 for the client's own broken framing), then either reading it whole and
//! parsing it as strict JSON (400), for routes with a body schema, or streaming it upstream.
//! [`settle`] runs those steps in that order; `proxy::dry_run` runs the same checks on a
//! body it already holds.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use http_body::Body;
use http_body_util::{BodyExt, Full};

use crate::body::{BoxError, DownstreamBodyError, Guarded, RequestBody};
use crate::error::GatewayError;
use crate::schema::Parsed;
use crate::snapshot::Route;
use crate::validate::{enforce_or_report, Report};

/// A request body once its framing is settled.
pub struct Settled {
    /// The bytes, read whole, for a route with a body schema.
    pub bytes: Option<Bytes>,
    /// What goes upstream: those same bytes, or the client's body streamed through.
    pub upstream: RequestBody,
    /// Whether the body streams (the upstream then waits longer for it: `proxy`).
    pub streamed: bool,
    /// The parsed body, for a route with a body schema (`None` in report-only mode when it
    /// did not parse).
    pub parsed: Option<Parsed>,
}

/// The body stage: media type, declared length, guard, read or stream, parse. In report-only
/// mode a failed check is added to `report` and the request goes on.
pub async fn settle<B>(
    route: &Route,
    headers: &HeaderMap,
    body: B,
    report: &mut Report,
) -> Result<Settled, GatewayError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let media = enforce_or_report(route, accepted_media_type(route, headers), report)?;
    // Every body is held to the route's size limit and body timeouts (413, 408), whether it
    // is read here or streamed upstream. A failure of the client's own stream (bad chunking,
    // a reset) is marked as such, so it is answered as the client's 400, never a 502.
    let guarded = |body: B| {
        let marked = body.map_err(|e| DownstreamBodyError(e.into()));
        Guarded::new(
            marked,
            route.limits.body,
            route.body_idle_timeout,
            Some(route.body_timeout),
        )
    };
    if parses(route, headers) {
        // Read whole (within its limit) to parse it; what goes upstream is those same bytes.
        check_declared_length(headers, route.limits.body)?;
        let bytes = read_body(guarded(body)).await?;
        let parsed = match media {
            Some(had_content_type) => {
                enforce_or_report(route, parse(route, &bytes, had_content_type), report)?.flatten()
            }
            None => None,
        };
        let upstream = Full::new(bytes.clone())
            .map_err(|never| match never {})
            .boxed_unsync();
        return Ok(Settled {
            bytes: Some(bytes),
            upstream,
            streamed: false,
            parsed,
        });
    }
    if body.is_end_stream() {
        return Ok(Settled {
            bytes: None,
            upstream: body.map_err(Into::into).boxed_unsync(),
            streamed: false,
            parsed: None,
        });
    }
    check_declared_length(headers, route.limits.body)?;
    Ok(Settled {
        bytes: None,
        upstream: guarded(body).boxed_unsync(),
        streamed: true,
        parsed: None,
    })
}

/// Before the body is read, for a route with a body schema: a declared media type it does
/// not accept (415) or two different Content-Type headers (400). A route from an OpenAPI
/// document takes the media types its request body lists. Returns whether a Content-Type
/// was sent.
pub fn accepted_media_type(route: &Route, headers: &HeaderMap) -> Result<bool, GatewayError> {
    match &route.body_media {
        Some(media) => match declared_essence(headers)? {
            Some(essence) if media.find(essence).is_none() => Err(media.unsupported()),
            Some(_) => Ok(true),
            None => Ok(false),
        },
        None if route.schemas.body.is_none() => Ok(true),
        None => check_media_type(headers),
    }
}

/// Whether the body is read whole and parsed as JSON: on a route with a body schema, unless
/// its OpenAPI document lists the declared media type as one that is not JSON (streamed).
pub fn parses(route: &Route, headers: &HeaderMap) -> bool {
    if route.schemas.body.is_none() {
        return false;
    }
    let Some(media) = &route.body_media else {
        return true;
    };
    match declared_essence(headers) {
        // A wildcard range (`*/*`, `application/*`) validates only what is itself JSON.
        Ok(Some(essence)) => {
            media.find(essence).is_some_and(|range| range.json)
                && crate::snapshot::MediaRange::parse(essence).is_some_and(|r| r.json)
        }
        _ => true,
    }
}

/// The declared media type without parameters; 400 for two different Content-Type headers.
fn declared_essence(headers: &HeaderMap) -> Result<Option<&str>, GatewayError> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.any(|other| other != value) {
        return Err(GatewayError::BadRequest {
            message: "the request has two different Content-Type headers".to_string(),
        });
    }
    Ok(Some(
        value
            .to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .map(str::trim)
            .unwrap_or_default(),
    ))
}

/// After the body is read, for a route with a body schema: a body without Content-Type
/// (415), then strict JSON (400). A number that is not exactly the double it is read as is
/// noted, not refused here: `validate` refuses it where the schema constrains it (422).
/// `None`: an empty body an OpenAPI operation does not require (nothing to validate).
pub fn parse(
    route: &Route,
    bytes: &Bytes,
    had_content_type: bool,
) -> Result<Option<Parsed>, GatewayError> {
    check_missing_media_type(had_content_type, bytes).map_err(|e| {
        route
            .body_media
            .as_ref()
            .map_or(e, crate::snapshot::BodyMedia::unsupported)
    })?;
    if bytes.is_empty() && route.body_media.as_ref().is_some_and(|m| !m.required) {
        return Ok(None);
    }
    crate::schema::parse_request_body(bytes, route.limits.json_depth)
        .map(Some)
        .map_err(|e| GatewayError::BadRequest {
            message: e.to_string(),
        })
}

/// Before reading the body: accepts `application/json` and `application/*+json`, with
/// parameters (415 for any other media type, 400 for two different Content-Type headers).
/// Returns whether a Content-Type was sent; without one, [`check_missing_media_type`]
/// decides once the body is read.
pub fn check_media_type(headers: &HeaderMap) -> Result<bool, GatewayError> {
    let Some(essence) = declared_essence(headers)? else {
        return Ok(false);
    };
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
        Err(GatewayError::UnsupportedMediaType { accepted: None })
    }
}

/// After reading the body: a body without Content-Type is 415 (an empty one goes on to fail
/// as empty, 400). Decided on the bytes received, not on framing headers, so HTTP/2 bodies
/// and `Content-Length: 00` are judged alike.
pub fn check_missing_media_type(had_content_type: bool, body: &[u8]) -> Result<(), GatewayError> {
    if had_content_type || body.is_empty() {
        Ok(())
    } else {
        Err(GatewayError::UnsupportedMediaType { accepted: None })
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
                    Err(GatewayError::UnsupportedMediaType { .. })
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
