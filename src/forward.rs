//! Header and URI rules for forwarding (RFC 9110 §7.6): pure functions over the request and
//! response parts, so they are tested without sockets.
//!
//! Architecture invariant: this module edits header maps in place; it never rebuilds them and
//! never touches bodies.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{request, Uri, Version};

/// How the path sent upstream is derived from the client's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardPath {
    /// Unchanged.
    Same,
    /// With this prefix removed (when present).
    StripPrefix(String),
    /// Replaced by a template whose `{name}` parts are filled from path parameters.
    Rewrite(String),
}

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop fields (RFC 9110 §7.6.1, plus `Trailer` and the legacy `Keep-Alive` and
/// `Proxy-Connection`): they describe one connection and never cross the gateway.
fn fixed_hop_by_hop() -> [&'static HeaderName; 7] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ]
}

/// Whether `name` is as long as one of [`fixed_hop_by_hop`].
fn has_fixed_length(name: &HeaderName) -> bool {
    matches!(name.as_str().len(), 2 | 7 | 10 | 16 | 17)
}

/// Removes hop-by-hop fields, including every field named in `Connection`, and a
/// `Content-Length` sent beside `Transfer-Encoding`.
///
/// RFC 9112 §6.1: a message with `Transfer-Encoding` is framed by it, and a `Content-Length`
/// beside it must not be forwarded. hyper's server drops it from requests, but its client
/// keeps it on responses: an upstream answering with both would have its whole de-chunked
/// body relayed under the stale length, which the client takes for a complete, short answer.
/// Without it the body is framed anew on the way out (chunked, or by its exact size).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none, and a response usually only `Connection: keep-alive`: one
    // pass over the names (standard names compare as enums) finds which are present, and
    // only those are removed, instead of seven hashed removals.
    let fixed = fixed_hop_by_hop();
    let mut present = 0u8;
    for name in headers.keys() {
        // The fixed names are 2, 7, 10, 16 or 17 bytes long: most fields are ruled out by
        // their length alone.
        if !has_fixed_length(name) {
            continue;
        }
        if let Some(i) = fixed.iter().position(|hop| *hop == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Names listed in Connection: the values are taken out first (removing Connection would
    // lose them), then each named field is removed by its text, with no name allocated.
    if let http::header::Entry::Occupied(entry) = headers.entry(header::CONNECTION) {
        let (_, mut values) = entry.remove_entry_mult();
        // Usually one line: the first is held apart so the common case allocates nothing.
        let first = values.next();
        let rest: Vec<HeaderValue> = values.collect();
        for value in first.iter().chain(&rest) {
            let Ok(text) = value.to_str() else { continue };
            // A name that is not a valid field name matches nothing and removes nothing.
            for name in text.split(',') {
                let name = name.trim();
                // A fixed name (usually `keep-alive`) is removed below if present: no need to
                // parse and hash it here.
                if fixed
                    .iter()
                    .any(|hop| hop.as_str().eq_ignore_ascii_case(name))
                {
                    continue;
                }
                headers.remove(name);
            }
        }
    }
    for (i, name) in fixed.iter().enumerate().skip(1) {
        if present & (1 << i) != 0 {
            headers.remove(*name);
            if **name == header::TRANSFER_ENCODING {
                headers.remove(header::CONTENT_LENGTH);
            }
        }
    }
}

/// Removes every field whose name contains `_` (`limits.underscore_headers: drop`); returns
/// how many field lines went.
///
/// CGI, WSGI and the like turn `-` into `_` to name their variables, so `X_Tenant: 999` sent
/// beside a validated `X-Tenant: 7` reaches such a backend as one field with either value.
/// nginx drops them by default for this reason (`underscores_in_headers off`). The names are
/// scanned first: the usual request has none, and then nothing is allocated.
pub fn drop_underscored(headers: &mut HeaderMap) -> usize {
    let underscored = |name: &HeaderName| name.as_str().as_bytes().contains(&b'_');
    if !headers.keys().any(underscored) {
        return 0;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| underscored(n)).cloned().collect();
    let mut dropped = 0;
    for name in names {
        if let header::Entry::Occupied(entry) = headers.entry(name) {
            dropped += entry.remove_entry_mult().1.count();
        }
    }
    dropped
}

/// What the gateway knows about the downstream connection.
#[derive(Debug, Clone)]
pub struct Downstream {
    pub peer: IpAddr,
    pub tls: bool,
    /// The subject of the client certificate verified during the TLS handshake.
    pub client_subject: Option<std::sync::Arc<str>>,
}

/// How to address a request to the upstream: its `Host` and base path.
pub struct Target<'a> {
    pub host_header: &'a HeaderValue,
    /// The upstream URL's path without a trailing `/` (empty for none).
    pub base_path: &'a str,
}

/// Turns the client's request parts into the upstream request parts, in place. The caller has
/// already removed hop-by-hop fields (`strip_hop_by_hop`), before any stage read the headers.
pub fn upstream_request(
    parts: &mut request::Parts,
    target: &Target<'_>,
    forward: &ForwardPath,
    params: &crate::route::Params<'_>,
    preserve_host: bool,
    downstream: &Downstream,
    request_id: &HeaderValue,
) -> Result<(), http::Error> {
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });

    let unchanged = target.base_path.is_empty() && matches!(forward, ForwardPath::Same);
    let path_and_query = match parts.uri.path_and_query() {
        // The common case: the upstream sees the client's path and query as they are, so
        // the parsed value is reused (a reference count, not a copy and a re-parse).
        Some(original) if unchanged => original.clone(),
        _ => PathAndQuery::try_from(rewritten_path(&parts.uri, target, forward, params))?,
    };
    // Origin form (`/path?query`): the upstream connection is already chosen by the pool,
    // and HTTP/1.1 requests to an origin server carry only the path.
    parts.uri = Uri::from(path_and_query);
    // The upstream pool speaks HTTP/1.1 whatever the client used.
    parts.version = Version::HTTP_11;

    // Hop-by-hop fields were removed by the caller before any check (`proxy::handle_inner`),
    // so what was validated is exactly what is forwarded; they are not stripped twice.
    let headers = &mut parts.headers;
    append_forwarded_for(headers, downstream.peer);
    let proto = if downstream.tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    match &original_host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
    match (preserve_host, original_host) {
        (true, Some(host)) => headers.insert(header::HOST, host),
        _ => headers.insert(header::HOST, target.host_header.clone()),
    };
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    Ok(())
}

/// The upstream path and query for a rewritten or prefixed route.
fn rewritten_path(
    uri: &Uri,
    target: &Target<'_>,
    forward: &ForwardPath,
    params: &crate::route::Params<'_>,
) -> String {
    let path = uri.path();
    let mut path_and_query = String::with_capacity(target.base_path.len() + path.len() + 32);
    path_and_query.push_str(target.base_path);
    match forward {
        ForwardPath::Same => path_and_query.push_str(path),
        ForwardPath::StripPrefix(prefix) => {
            let rest = path.strip_prefix(prefix.as_str()).unwrap_or(path);
            if !rest.starts_with('/') {
                path_and_query.push('/');
            }
            path_and_query.push_str(rest);
        }
        ForwardPath::Rewrite(template) => fill_template(template, params, &mut path_and_query),
    }
    if let Some(query) = uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    path_and_query
}

/// Appends the peer address to any `X-Forwarded-For` the client sent (all lines joined).
fn append_forwarded_for(headers: &mut HeaderMap, peer: IpAddr) {
    let mut value = Vec::with_capacity(64);
    for existing in headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(text) = existing.to_str() {
            value.extend_from_slice(text.trim().as_bytes());
            value.extend_from_slice(b", ");
        }
    }
    write_ip(&mut value, peer);
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
}

/// Writes `ip` as text; IPv4 without the formatting machinery (the usual case), IPv6
/// through `Display`.
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(_) => {
            use std::io::Write;
            let _ = write!(out, "{ip}");
        }
    }
}

/// Writes `template` with each `{name}` replaced by the path parameter of that name.
/// Names were checked against the route's path when the snapshot was built.
fn fill_template(template: &str, params: &crate::route::Params<'_>, out: &mut String) {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return;
        };
        let name = after[..close].trim_start_matches('*');
        out.push_str(params.get(name).unwrap_or_default());
        rest = &after[close + 1..];
    }
    out.push_str(rest);
}

/// The `{name}` parameters a template uses, for checking a rewrite against its route's path.
pub fn template_params(template: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        names.push(after[..close].trim_start_matches('*'));
        rest = &after[close + 1..];
    }
    names
}

/// A client's `X-Request-Id` is kept when it is short printable ASCII; otherwise one is made.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(value) = headers.get(&X_REQUEST_ID) {
        let bytes = value.as_bytes();
        if !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic()) {
            return value.clone();
        }
    }
    generate_request_id()
}

fn generate_request_id() -> HeaderValue {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    // A per-process random prefix plus a counter: unique within the process, unguessable
    // across restarts, and one atomic increment per request.
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // `{prefix:016x}-{n:08x}`, written by hand on the stack and copied once into the value:
    // this runs for every request without an id.
    let mut text = [0u8; 33];
    write_hex(&mut text[..16], prefix);
    text[16] = b'-';
    let digits = (64 - (n | 0xffff_ffff).leading_zeros()).div_ceil(4) as usize;
    write_hex(&mut text[17..17 + digits], n);
    HeaderValue::from_bytes(&text[..17 + digits])
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Fills `out` with the low `out.len()` hex digits of `value`, most significant first.
fn write_hex(out: &mut [u8], value: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = out.len();
    for (i, byte) in out.iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        *byte = HEX[((value >> shift) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_fixed_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-end-to-end", HeaderValue::from_static("stays"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-end-to-end"], "stays");
    }

    #[test]
    fn transfer_encoding_takes_a_stale_content_length_with_it() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-end-to-end", HeaderValue::from_static("stays"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        // Without Transfer-Encoding the length is the framing, and stays.
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h[header::CONTENT_LENGTH], "3");
    }

    #[test]
    fn underscored_names_are_dropped_every_line() {
        let mut h = HeaderMap::new();
        h.insert("x-tenant", HeaderValue::from_static("7"));
        h.insert("x_tenant", HeaderValue::from_static("999"));
        h.append("_a", HeaderValue::from_static("1"));
        h.append("_a", HeaderValue::from_static("2"));
        assert_eq!(drop_underscored(&mut h), 3);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-tenant"], "7");
        assert_eq!(drop_underscored(&mut h), 0);
    }

    #[test]
    fn request_id_kept_or_generated() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("has space"));
        let generated = request_id(&h);
        assert_ne!(generated, "has space");
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }

    #[test]
    fn generated_ids_and_peer_addresses_read_as_before() {
        let mut out = [0u8; 16];
        write_hex(&mut out, 0xab);
        assert_eq!(&out, b"00000000000000ab");
        let id = generate_request_id();
        let text = id.to_str().unwrap();
        let (prefix, n) = text.split_once('-').unwrap();
        assert_eq!(prefix.len(), 16);
        assert!(n.len() >= 8 && u64::from_str_radix(n, 16).is_ok(), "{text}");
        for ip in [
            "127.0.0.1",
            "10.0.200.9",
            "255.255.255.255",
            "0.0.0.0",
            "::1",
        ] {
            let mut out = Vec::new();
            write_ip(&mut out, ip.parse().unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), ip);
        }
    }

    #[test]
    fn hop_by_hop_fields_named_twice_or_in_several_lines_go() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("x-a"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static(" X-B ,, bad name"),
        );
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("2"));
        h.insert("x-c", HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        // Nothing hop-by-hop: untouched.
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
        assert!(fixed_hop_by_hop().into_iter().all(has_fixed_length));
        // Fixed names listed in Connection (any case) go, with what Connection names beside.
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, x-c"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn template_fill_and_names() {
        let mut router = crate::route::Router::new();
        router
            .add(http::Method::GET, "/v1/items/{id}/{*rest}", 0)
            .unwrap();
        let m = router
            .find(&http::Method::GET, "/v1/items/7/a/b")
            .ok()
            .unwrap();
        let mut out = String::new();
        fill_template("/api/{id}/x/{rest}", &m.params, &mut out);
        assert_eq!(out, "/api/7/x/a/b");
        assert_eq!(template_params("/api/{id}/x/{*rest}"), vec!["id", "rest"]);
    }
}
