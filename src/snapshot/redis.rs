//! `redis:`: the store that routes with `rate_limit.store: redis` share with other gateways.
//! The URLs are parsed and the password and TLS files read here; nothing connects while a snapshot is built (the first request
//! that needs Redis does, within `timeout`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redis::IntoConnectionInfo;
use serde_saphyr::Spanned;

use super::errors::Errors;
use crate::config::{RawRedis, Text};
use crate::ratelimit::shared::{SharedStore, StoreSettings, Target, TlsPem};

/// How long a request waits for Redis unless `timeout` says otherwise.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);
/// The first part of every key unless `key_prefix` says otherwise.
pub const DEFAULT_KEY_PREFIX: &str = "schemagate";

pub(super) fn build(
    raw: Option<&Spanned<RawRedis>>,
    base_dir: &Path,
    errors: &mut Errors<'_>,
) -> Option<Arc<SharedStore>> {
    let spanned = raw?;
    let raw = &spanned.value;
    let mut ok = true;
    let (urls, cluster, at) = match (&raw.url, &raw.cluster) {
        (Some(url), None) => (vec![url.value.0.trim().to_string()], false, url.referenced),
        (None, Some(seeds)) if !seeds.value.is_empty() => (
            seeds.value.iter().map(|u| u.0.trim().to_string()).collect(),
            true,
            seeds.referenced,
        ),
        (None, Some(seeds)) => {
            errors.at(seeds.referenced, "redis.cluster", "lists no seed URL");
            return None;
        }
        (Some(_), Some(_)) | (None, None) => {
            errors.at(
                spanned.defined,
                "redis",
                "needs exactly one of `url` (one Redis) and `cluster` (a Redis Cluster's seeds)",
            );
            return None;
        }
    };
    let key = if cluster {
        "redis.cluster"
    } else {
        "redis.url"
    };
    for url in &urls {
        match url.as_str().into_connection_info() {
            Ok(info) if cluster && matches!(info.addr(), redis::ConnectionAddr::Unix(_)) => {
                errors.at(at, key, "a cluster's seeds are redis:// or rediss:// URLs");
                ok = false;
            }
            Ok(_) => {}
            // The error text names the problem, not the URL, so a password in it is not
            // echoed.
            Err(error) => {
                errors.at(
                    at,
                    key,
                    format!("not a Redis URL ({error}); write e.g. redis://127.0.0.1:6379/0"),
                );
                ok = false;
            }
        }
    }
    let tls_urls = urls.iter().filter(|u| u.starts_with("rediss://")).count();
    if cluster && tls_urls != 0 && tls_urls != urls.len() {
        errors.at(at, key, "mixes redis:// and rediss:// seeds");
        ok = false;
    }
    let timeout = raw.timeout.map_or(DEFAULT_REDIS_TIMEOUT, |d| d.0);
    if timeout.is_zero() {
        errors.at(spanned.defined, "redis.timeout", "must be more than 0");
        ok = false;
    }
    let key_prefix = raw
        .key_prefix
        .as_ref()
        .map_or(DEFAULT_KEY_PREFIX, |p| p.0.as_str());
    if key_prefix.is_empty() || key_prefix.contains(['{', '}']) {
        errors.at(
            spanned.defined,
            "redis.key_prefix",
            "must be non-empty and hold no `{` or `}`",
        );
        ok = false;
    }
    let mut files = Vec::new();
    let mut read = |file: &Spanned<Text>, key: &str, errors: &mut Errors<'_>| {
        let path = base_dir.join(&*file.value);
        files.push(path.clone());
        let bytes = crate::files::read_capped(&path, crate::files::MAX_TLS_FILE);
        bytes
            .map_err(|message| errors.at(file.referenced, key, message))
            .ok()
    };
    let password = match &raw.password_file {
        Some(file) => match read(file, "redis.password_file", errors).map(|b| password(&b, file)) {
            Some(Ok(password)) => Some(password),
            Some(Err(message)) => {
                errors.at(file.referenced, "redis.password_file", message);
                None
            }
            None => None,
        },
        None => None,
    };
    ok &= raw.password_file.is_none() || password.is_some();
    let tls = match &raw.tls {
        Some(tls) if tls_urls == 0 => {
            errors.at(
                tls.defined,
                "redis.tls",
                "applies to rediss:// URLs only; this store's are not",
            );
            ok = false;
            None
        }
        Some(tls) => {
            let ca = tls
                .value
                .ca
                .as_ref()
                .map(|f| read(f, "redis.tls.ca", errors));
            let client = match (&tls.value.cert, &tls.value.key) {
                (Some(cert), Some(key)) => Some((
                    read(cert, "redis.tls.cert", errors),
                    read(key, "redis.tls.key", errors),
                )),
                (None, None) => None,
                _ => {
                    errors.at(tls.defined, "redis.tls", "`cert` and `key` go together");
                    ok = false;
                    None
                }
            };
            match (ca, client) {
                (Some(None), _) | (_, Some((None, _) | (_, None))) => {
                    ok = false;
                    None
                }
                (ca, client) => Some(TlsPem {
                    ca: ca.flatten(),
                    client: client.and_then(|(cert, key)| Some((cert?, key?))),
                }),
            }
        }
        None => None,
    };
    ok.then(|| {
        Arc::new(SharedStore::new(StoreSettings {
            target: Target {
                urls,
                cluster,
                password,
                tls,
            },
            files,
            timeout,
            on_error: raw.on_error,
            key_prefix: key_prefix.to_string(),
        }))
    })
}

/// The password in `bytes`, read from `file`: its text without one trailing newline (`echo
/// secret > file` writes one). Errors name the file, never its content.
fn password(bytes: &[u8], file: &Spanned<Text>) -> Result<String, String> {
    let path = &*file.value;
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{path} is not UTF-8"))?;
    let password = text
        .strip_suffix('\n')
        .map_or(text, |t| t.strip_suffix('\r').unwrap_or(t));
    if password.is_empty() {
        return Err(format!("{path} is empty"));
    }
    Ok(password.to_string())
}
