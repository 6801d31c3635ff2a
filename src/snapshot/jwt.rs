//! `jwt:`: token issuers, each with its keys (a JWK Set URL or file, or an HMAC secret file),
//! issuer, audiences, allowed algorithms and leeway. Key files are read here; a URL is
//! fetched by `jwt::fetch`, never while a snapshot builds.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderName;
use jsonwebtoken::Algorithm;
use serde_saphyr::Spanned;

use http::{HeaderValue, Uri};

use super::defaults::Defaults;
use super::errors::Errors;
use crate::config::{RawJwtProvider, Text};
use crate::jwt::{self, KeySet, KeySource, Provider, Remote, Settings};
use crate::tls;
use crate::upstream::{HttpUpstream, Upstream, UpstreamTarget};

/// Clock skew allowed on `exp` and `nbf` unless `leeway` says otherwise.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// How often a `jwks_url` is fetched again unless `refresh` says otherwise.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(600);
/// The largest JWK Set or secret file read.
const MAX_KEY_FILE: u64 = 1 << 20;

/// The providers that compiled, with the key files they read (watched) and a hash of their
/// bytes (part of the snapshot's fingerprint).
#[derive(Default)]
pub(super) struct Built {
    pub providers: Vec<Arc<Provider>>,
    pub files: Vec<PathBuf>,
    pub hash: u64,
}

pub(super) fn build(
    raw: &[Spanned<RawJwtProvider>],
    base_dir: &Path,
    defaults: &Defaults,
    material: &mut tls::Material,
    errors: &mut Errors<'_>,
) -> Built {
    let mut built = Built::default();
    let mut hasher = DefaultHasher::new();
    for (i, spanned) in raw.iter().enumerate() {
        let provider = &spanned.value;
        let key = |field: &str| format!("jwt[{i}].{field}");
        let mut at = |field: &str, message: String| errors.at(spanned.defined, key(field), message);
        let name = provider.name.0.clone();
        if name.is_empty() {
            at("name", "must not be empty".to_string());
            continue;
        }
        if raw[..i].iter().any(|other| other.value.name.0 == name) {
            at("name", format!("provider name {name:?} is used twice"));
            continue;
        }
        if provider.issuer.trim().is_empty() {
            at(
                "issuer",
                "must not be empty: `iss` must equal it".to_string(),
            );
            continue;
        }
        let sources = [
            provider.jwks_url.as_ref(),
            provider.jwks_file.as_ref(),
            provider.secret_file.as_ref(),
        ];
        if sources.iter().flatten().count() != 1 {
            at(
                "name",
                "set exactly one of `jwks_url`, `jwks_file` or `secret_file`".to_string(),
            );
            continue;
        }
        let secret = provider.secret_file.is_some();
        let allowed: Vec<Algorithm> = match &provider.algorithms {
            Some(list) => list.iter().map(|a| jwt::algorithm(*a)).collect(),
            // The whole family the key source can hold: the key decides among them.
            None if secret => jwt::HMAC.to_vec(),
            None => jwt::ASYMMETRIC.to_vec(),
        };
        if allowed.is_empty() {
            at("algorithms", "must name at least one algorithm".to_string());
            continue;
        }
        if let Some(wrong) = allowed.iter().find(|a| jwt::is_hmac(**a) != secret) {
            let message = if secret {
                format!("{wrong:?} needs a JWK Set (`jwks_url` or `jwks_file`); `secret_file` verifies HS256, HS384 and HS512 only")
            } else {
                format!("{wrong:?} is an HMAC algorithm: its key is a secret, given by `secret_file` (a JWK Set's keys are public)")
            };
            at("algorithms", message);
            continue;
        }
        let mut claims_to_headers = Vec::new();
        let mut headers_ok = true;
        for (claim, header) in &provider.claims_to_headers {
            match HeaderName::from_bytes(header.trim().as_bytes()) {
                Ok(name) if !claim.is_empty() => claims_to_headers.push((claim.clone(), name)),
                _ => {
                    at(
                        &format!("claims_to_headers.{claim}"),
                        format!(
                            "{:?} is not a header name (or the claim is empty)",
                            header.0
                        ),
                    );
                    headers_ok = false;
                }
            }
        }
        if !headers_ok {
            continue;
        }
        if provider.jwks_url.is_none() && (provider.tls.is_some() || provider.refresh.is_some()) {
            at(
                "jwks_url",
                "`tls` and `refresh` apply to a `jwks_url` only".to_string(),
            );
            continue;
        }
        let refresh = provider.refresh.map_or(DEFAULT_REFRESH, |d| d.0);
        if refresh < Duration::from_secs(1) {
            at("refresh", "must be at least 1s".to_string());
            continue;
        }
        let read = |file: &Spanned<Text>| base_dir.join(&*file.value);
        let mut remote = None;
        let (source, keys) = if let Some(url) = &provider.jwks_url {
            let located = format!(
                "{}:{}: {}",
                errors.path().display(),
                url.referenced.line(),
                key("jwks_url")
            );
            match jwks_remote(
                &name, provider, url, base_dir, defaults, material, refresh, located,
            ) {
                Ok(built) => {
                    remote = Some(built);
                    (KeySource::Url(url.value.0.clone()), Vec::new())
                }
                Err((field, message)) => {
                    errors.at(url.referenced, key(field), message);
                    continue;
                }
            }
        } else if let Some(file) = &provider.jwks_file {
            let path = read(file);
            let loaded = crate::files::read_capped(&path, MAX_KEY_FILE).and_then(|bytes| {
                (&path, &bytes).hash(&mut hasher);
                jwt::parse_jwks(&bytes, &allowed).map_err(|e| format!("{}: {e}", path.display()))
            });
            match loaded {
                Ok((keys, skipped)) => {
                    for why in skipped {
                        tracing::warn!(provider = %name, "jwt: key skipped: {why}");
                    }
                    built.files.push(path.clone());
                    (KeySource::File(path), keys)
                }
                Err(message) => {
                    errors.at(file.referenced, key("jwks_file"), message);
                    continue;
                }
            }
        } else if let Some(file) = &provider.secret_file {
            let path = read(file);
            match read_secret(&path) {
                Ok(bytes) => {
                    (&path, &bytes).hash(&mut hasher);
                    built.files.push(path.clone());
                    let key = jwt::secret_key(&bytes, &allowed);
                    (KeySource::Secret(path), vec![key])
                }
                Err(message) => {
                    errors.at(file.referenced, key("secret_file"), message);
                    continue;
                }
            }
        } else {
            continue;
        };
        let settings = Settings {
            name,
            issuer: provider.issuer.0.clone(),
            audiences: provider.audiences.iter().map(|a| a.0.clone()).collect(),
            allowed,
            leeway_secs: provider.leeway.map_or(DEFAULT_LEEWAY, |d| d.0).as_secs(),
            source,
            claims_to_headers,
        };
        // A URL's keys are had by the first fetch; until then, tokens are "unknown key".
        let keys = KeySet {
            fetched_at: remote.is_none().then(SystemTime::now),
            keys,
        };
        built
            .providers
            .push(Arc::new(Provider::new(settings, keys, remote)));
    }
    built.hash = hasher.finish();
    built
}

/// The client of a `jwks_url`: an upstream of its own (the same client as routes', with the
/// `defaults.timeouts` connect and response-header timeouts and the provider's `tls`), built
/// here, first used by the gateway's background task or `schemagate check`.
#[allow(clippy::too_many_arguments)]
fn jwks_remote(
    name: &str,
    provider: &RawJwtProvider,
    url: &Spanned<Text>,
    base_dir: &Path,
    defaults: &Defaults,
    material: &mut tls::Material,
    refresh: Duration,
    located: String,
) -> Result<Remote, (&'static str, String)> {
    let bad = |message: String| ("jwks_url", message);
    let uri: Uri = url
        .value
        .trim()
        .parse()
        .map_err(|e| bad(format!("{:?} is not a URL ({e})", url.value.0)))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(bad(format!(
                "{:?} must start with https:// or http://",
                url.value.0
            )))
        }
    };
    if provider.tls.is_some() && !https {
        return Err((
            "tls",
            "`tls` applies to an https:// `jwks_url` only".to_string(),
        ));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| bad(format!("{:?} has no host", url.value.0)))?;
    let tls = match https {
        true => Some(
            super::upstreams::upstream_tls(
                base_dir,
                provider.tls.as_ref().map(|t| &t.value),
                material,
            )
            .map_err(|message| ("tls", message))?,
        ),
        false => None,
    };
    let target: Uri = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|e| bad(format!("{e}")))?;
    let host = HeaderValue::from_str(authority.as_str())
        .map_err(|_| bad(format!("{:?} has an unusable host", url.value.0)))?;
    let upstream = Upstream {
        name: format!("jwks {name}"),
        target: UpstreamTarget::Http(Box::new(HttpUpstream::new(
            authority,
            "",
            defaults.connect,
            defaults.pool_idle,
            tls,
        ))),
    };
    Ok(Remote::new(
        url.value.0.clone(),
        Arc::new(upstream),
        target,
        host,
        defaults.connect + defaults.response_headers,
        refresh,
        located,
    ))
}

/// The secret in `path` without one trailing newline; errors name the file, never its bytes.
fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = crate::files::read_capped(path, MAX_KEY_FILE)?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.len() < jwt::MIN_SECRET_BYTES {
        return Err(format!(
            "{} holds {} bytes; an HMAC secret needs at least {} (RFC 7518 §3.2)",
            path.display(),
            bytes.len(),
            jwt::MIN_SECRET_BYTES
        ));
    }
    Ok(bytes)
}
