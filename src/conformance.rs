//! Stage 0: the message rules RFC 9112 sets for servers that hyper leaves to us.
//!
//! hyper refuses on its own, before any of our code runs and with a bare 400 (431 for a
//! Content-Length above `u64::MAX - 2`) that carries no envelope: a malformed, signed or
//! repeated-but-different Content-Length, a Transfer-Encoding whose last coding is not
//! `chunked`, Transfer-Encoding in HTTP/1.0, obs-fold lines and control characters in fields.
//! It processes Content-Length together with Transfer-Encoding by the latter alone and closes
//! the connection afterwards (RFC 9112 §6.1); it removes Content-Length before we see the
//! request, so that case cannot be told apart here.
//!
//! This stage rejects, with 400 and a closed connection, what hyper lets through:
//! - Transfer-Encoding other than exactly one `chunked`: hyper decodes the chunking of
//!   `gzip, chunked` and would hand over still-gzipped bytes whose coding `forward` then
//!   removes; `chunked, chunked` claims chunking twice.
//!
//! Architecture invariant: runs first, before hop-by-hop fields (Transfer-Encoding among
//! them) are removed.

use http::header::TRANSFER_ENCODING;
use http::request;

use crate::error::GatewayError;

pub fn check(parts: &request::Parts) -> Result<(), GatewayError> {
    check_transfer_encoding(parts)
}

fn check_transfer_encoding(parts: &request::Parts) -> Result<(), GatewayError> {
    let mut codings = parts
        .headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        // Empty list elements carry nothing (RFC 9110 §5.6.1).
        .filter(|coding| !coding.is_empty());
    let Some(first) = codings.next() else {
        return Ok(());
    };
    if first.eq_ignore_ascii_case(b"chunked") && codings.next().is_none() {
        Ok(())
    } else {
        Err(GatewayError::Malformed {
            message: "unsupported Transfer-Encoding: only a single `chunked` is accepted",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http::Version;

    fn parts(version: Version, uri: &str, headers: &[(&str, &str)]) -> request::Parts {
        let mut builder = http::Request::builder().version(version).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn transfer_codings() {
        let te = |values: &[&str]| {
            let headers: Vec<_> = values.iter().map(|v| ("transfer-encoding", *v)).collect();
            check(&parts(
                Version::HTTP_11,
                "/",
                &[&[("host", "x")], &headers[..]].concat(),
            ))
        };
        for ok in [&[][..], &["chunked"], &["Chunked"], &[" chunked ,"]] {
            assert!(te(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            &["gzip, chunked"][..],
            &["chunked, chunked"],
            &["chunked", "chunked"],
            &["gzip", "chunked"],
            &["identity"],
            &["chunkedx"],
        ] {
            assert!(
                matches!(te(bad), Err(GatewayError::Malformed { .. })),
                "{bad:?}"
            );
        }
    }
}
