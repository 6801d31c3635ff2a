//! `upstreams:`: each backend (or the built-in mock) with its connect and response
//! timeouts, TLS settings and connection pool.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::defaults::Defaults;
use super::errors::Errors;
use super::*;

/// An upstream that compiled, with the response-header timeout its routes inherit.
pub(super) struct Compiled {
    pub name: String,
    pub upstream: Arc<Upstream>,
    pub response_headers: Duration,
}

pub(super) fn build(
    raw: &BTreeMap<String, Spanned<RawUpstream>>,
    base_dir: &Path,
    defaults: &Defaults,
    material: &mut tls::Material,
    errors: &mut Errors<'_>,
) -> Vec<Compiled> {
    let mut upstreams = Vec::new();
    for (name, spanned) in raw {
        let compiled = compile_upstream(
            errors.path(),
            base_dir,
            name,
            spanned,
            defaults.connect,
            defaults.pool_idle,
            material,
        );
        if let Some(upstream) = errors.keep(compiled) {
            upstreams.push(Compiled {
                name: name.clone(),
                upstream: Arc::new(upstream),
                response_headers: spanned
                    .value
                    .timeouts
                    .response_headers
                    .map_or(defaults.response_headers, |d| d.0),
            });
        }
    }
    upstreams
}

fn compile_upstream(
    path: &Path,
    base_dir: &Path,
    name: &str,
    spanned: &Spanned<RawUpstream>,
    connect_default: Duration,
    pool_idle_default: Duration,
    material: &mut tls::Material,
) -> Result<Upstream, ConfigError> {
    let raw = &spanned.value;
    let at_line = |location, field: &str, message: String| {
        ConfigError::at(path, location, format!("upstreams.{name}.{field}"), message)
    };
    let at = |field: &str, message: String| at_line(spanned.defined, field, message);
    let url = &raw.url.value;
    let at_url = |message: String| at_line(raw.url.referenced, "url", message);
    let target = if url.trim() == "mock" {
        let mock = raw.mock.as_ref().ok_or_else(|| {
            at(
                "mock",
                "`url: mock` needs a `mock` block naming `body_file`".to_string(),
            )
        })?;
        let at_file =
            |message: String| at_line(mock.body_file.referenced, "mock.body_file", message);
        let file = base_dir.join(&*mock.body_file.value);
        let body =
            crate::files::read_capped(&file, crate::files::MAX_DATA_FILE).map_err(at_file)?;
        serde_json::from_slice::<serde_json::Value>(&body)
            .map_err(|e| at_file(format!("{} is not valid JSON: {e}", file.display())))?;
        let status = StatusCode::from_u16(mock.status.unwrap_or(200)).map_err(|_| {
            at(
                "mock.status",
                format!("{:?} is not an HTTP status", mock.status),
            )
        })?;
        UpstreamTarget::Mock {
            status,
            body: Bytes::from(body),
            file,
        }
    } else {
        let uri: Uri = url.parse().map_err(|e| {
            at_url(format!(
                "{:?} is not a URL ({e}); write e.g. http://backend:8000 or `mock`",
                url.0
            ))
        })?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(at_url(format!(
                    "{:?} must start with http:// or https:// (or be `mock`)",
                    url.0
                )))
            }
        };
        let tls = match (&raw.tls, https) {
            (Some(tls), false) => {
                return Err(at_line(
                    tls.referenced,
                    "tls",
                    "`tls` applies to https:// upstreams only".to_string(),
                ))
            }
            (tls, true) => Some(
                upstream_tls(base_dir, tls.as_ref().map(|t| &t.value), material).map_err(
                    |message| {
                        let location = tls.as_ref().map_or(raw.url.referenced, |t| t.referenced);
                        at_line(location, "tls", message)
                    },
                )?,
            ),
            (None, false) => None,
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| at_url(format!("{:?} has no host", url.0)))?;
        if uri.query().is_some() {
            return Err(at_url(
                "an upstream URL cannot carry a query string".to_string(),
            ));
        }
        let connect = raw.timeouts.connect.map_or(connect_default, |d| d.0);
        let pool_idle = raw.timeouts.pool_idle.map_or(pool_idle_default, |d| d.0);
        UpstreamTarget::Http(Box::new(HttpUpstream::new(
            authority,
            uri.path(),
            connect,
            pool_idle,
            tls,
        )))
    };
    let t = &raw.timeouts;
    if t.drain.is_some()
        || t.header_read.is_some()
        || t.body_idle.is_some()
        || t.body.is_some()
        || t.write_stall.is_some()
    {
        return Err(at(
            "timeouts",
            "an upstream sets only `connect`, `response_headers` and `pool_idle`; client-side timeouts belong to defaults.timeouts or the route".to_string(),
        ));
    }
    Ok(Upstream {
        name: name.to_string(),
        target,
    })
}

/// Client TLS settings for an `https://` upstream, and a hash of the files they came from
/// (so a reload keeps the connection pool only when nothing changed).
pub(super) fn upstream_tls(
    base_dir: &Path,
    raw: Option<&RawUpstreamTls>,
    material: &mut tls::Material,
) -> Result<UpstreamTls, String> {
    let mut own = tls::Material::default();
    let raw = raw.map_or((None, None, None), |r| {
        (r.ca.as_ref(), r.cert.as_ref(), r.key.as_ref())
    });
    let ca = raw.0.map(|ca| base_dir.join(&*ca.value));
    let identity = match (raw.1, raw.2) {
        (Some(cert), Some(key)) => Some((base_dir.join(&*cert.value), base_dir.join(&*key.value))),
        (None, None) => None,
        _ => return Err("a client certificate needs both `cert` and `key`".to_string()),
    };
    let config = tls::client(
        ca.as_deref(),
        identity
            .as_ref()
            .map(|(cert, key)| tls::CertFiles { cert, key }),
        &mut own,
    )?;
    material.absorb(&own);
    Ok(UpstreamTls {
        config,
        files_hash: own.hash(),
    })
}
