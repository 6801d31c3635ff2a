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
//! - An HTTP/1.1 request without Host; more than one Host line; a Host that is not
//!   `host[:port]`; a Host that names another authority than the request target
//!   (absolute-form, or HTTP/2's `:authority`). Two names for one request are never
//!   resolved by picking one.
//!
//! Architecture invariant: runs first, before hop-by-hop fields (Transfer-Encoding among
//! them) are removed.

use http::header::{HOST, TRANSFER_ENCODING};
use http::uri::Authority;
use http::{request, Version};

use crate::error::GatewayError;

pub fn check(parts: &request::Parts) -> Result<(), GatewayError> {
    check_transfer_encoding(parts)?;
    check_host(parts)
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

fn check_host(parts: &request::Parts) -> Result<(), GatewayError> {
    let mut hosts = parts.headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(GatewayError::Malformed {
            message: "the request has more than one Host header",
        });
    }
    let Some(host) = host else {
        // HTTP/1.0 may omit Host; HTTP/2 carries the authority in `:authority`.
        return if parts.version == Version::HTTP_11 {
            Err(GatewayError::Malformed {
                message: "HTTP/1.1 requests need a Host header",
            })
        } else {
            Ok(())
        };
    };
    // The common `name[:port]` is checked in place; anything else (IP literals, percent
    // escapes, odd ports) goes through the full authority parser, which allocates.
    let valid = plain_host(host.as_bytes())
        || std::str::from_utf8(host.as_bytes())
            .ok()
            .filter(|text| !text.contains('@'))
            .is_some_and(|text| text.parse::<Authority>().is_ok());
    if !valid {
        return Err(GatewayError::Malformed {
            message: "the Host header is not a valid host[:port]",
        });
    }
    match parts.uri.authority() {
        Some(target)
            if !target
                .as_str()
                .as_bytes()
                .eq_ignore_ascii_case(host.as_bytes()) =>
        {
            Err(GatewayError::Malformed {
                message: "the Host header names another host than the request target",
            })
        }
        _ => Ok(()),
    }
}

/// `name` or `name:port`: letters, digits, `-` and `.` in a non-empty name, and a port of one
/// to five digits. Every such value is a valid authority, so no parse is needed for it.
fn plain_host(bytes: &[u8]) -> bool {
    let (name, port) = match bytes.iter().position(|&b| b == b':') {
        Some(colon) => (&bytes[..colon], Some(&bytes[colon + 1..])),
        None => (bytes, None),
    };
    let name_ok = !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.iter().all(u8::is_ascii_digit));
    name_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_fast_host_check_accepts_only_valid_authorities() {
        for host in [
            "x",
            "a.b-c.example",
            "X:1",
            "x:65535",
            "x:99999",
            "1.2.3.4:80",
            "-",
            ".",
            "a..b",
        ] {
            assert!(plain_host(host.as_bytes()), "{host}");
            assert!(host.parse::<Authority>().is_ok(), "{host}");
        }
        for host in [
            "", ":80", "x:", "x:123456", "x:8a", "[::1]:80", "x y", "x@y", "x/y", "x:1:2",
        ] {
            assert!(!plain_host(host.as_bytes()), "{host}");
        }
    }

    #[test]
    fn hosts() {
        let ok = [
            parts(Version::HTTP_11, "/", &[("host", "x")]),
            parts(Version::HTTP_11, "/", &[("host", "Example.COM:8080")]),
            parts(Version::HTTP_11, "http://x:1/p", &[("host", "X:1")]),
            parts(Version::HTTP_10, "/", &[]),
            parts(Version::HTTP_2, "http://x/p", &[]),
            parts(Version::HTTP_2, "http://x/p", &[("host", "x")]),
        ];
        for p in &ok {
            assert!(check(p).is_ok(), "{p:?}");
        }
        let bad = [
            parts(Version::HTTP_11, "/", &[]),
            parts(Version::HTTP_11, "http://x/p", &[]),
            parts(Version::HTTP_11, "/", &[("host", "x"), ("host", "x")]),
            parts(Version::HTTP_11, "/", &[("host", "x"), ("host", "y")]),
            parts(Version::HTTP_10, "/", &[("host", "x"), ("host", "y")]),
            parts(Version::HTTP_11, "/", &[("host", "")]),
            parts(Version::HTTP_11, "/", &[("host", "a b")]),
            parts(Version::HTTP_11, "/", &[("host", "user@x")]),
            parts(Version::HTTP_11, "/", &[("host", "x/y")]),
            parts(Version::HTTP_11, "http://evil/p", &[("host", "x")]),
            parts(Version::HTTP_2, "http://evil/p", &[("host", "x")]),
        ];
        for p in &bad {
            assert!(
                matches!(check(p), Err(GatewayError::Malformed { .. })),
                "{p:?}"
            );
        }
    }
}
