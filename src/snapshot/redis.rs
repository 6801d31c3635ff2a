//! `redis:`: the store that routes with `rate_limit.store: redis` share with other gateways.
//! The URL is parsed here; nothing connects while a snapshot is built (the first request
//! that needs Redis does, within `timeout`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redis::IntoConnectionInfo;
use serde_saphyr::Spanned;

use super::errors::Errors;
use crate::config::RawRedis;
use crate::ratelimit::shared::{SharedStore, StoreSettings};

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
    let url = raw.url.value.0.trim();
    if url.starts_with("rediss://") {
        // redis-rs is built without TLS; say so rather than let it fail at the first request.
        errors.at(
            raw.url.referenced,
            "redis.url",
            "rediss:// (TLS to Redis) is not built yet; use redis:// or unix://",
        );
        ok = false;
    } else if let Err(error) = url.into_connection_info() {
        // The error text names the problem, not the URL, so a password in it is not echoed.
        errors.at(
            raw.url.referenced,
            "redis.url",
            format!("not a Redis URL ({error}); write e.g. redis://127.0.0.1:6379/0"),
        );
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
    let password_file = raw
        .password_file
        .as_ref()
        .map(|file| (base_dir.join(&*file.value), file.referenced));
    let password = match &password_file {
        Some((path, at)) => match read_password(path) {
            Ok(password) => Some(password),
            Err(message) => {
                errors.at(*at, "redis.password_file", message);
                ok = false;
                None
            }
        },
        None => None,
    };
    ok.then(|| {
        Arc::new(SharedStore::new(StoreSettings {
            url: url.to_string(),
            password,
            password_file: password_file.map(|(path, _)| path),
            timeout,
            on_error: raw.on_error,
            key_prefix: key_prefix.to_string(),
        }))
    })
}

/// The password in `path`: its text without one trailing newline (`echo secret > file`
/// writes one). Errors name the file, never its content.
fn read_password(path: &Path) -> Result<String, String> {
    let bytes = crate::files::read_capped(path, crate::files::MAX_TLS_FILE)?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8", path.display()))?;
    let password = text
        .strip_suffix('\n')
        .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
    if password.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(password.to_string())
}
