//! `api_keys:`: SHA-256 digests of the keys, each bound to its tenants.

use serde_saphyr::Spanned;

use super::errors::Errors;
use crate::auth::{self, ApiKey};
use crate::config::RawApiKey;

pub(super) fn build(raw: &[Spanned<RawApiKey>], errors: &mut Errors<'_>) -> Vec<ApiKey> {
    let mut api_keys = Vec::new();
    for (i, spanned) in raw.iter().enumerate() {
        let raw_key = &spanned.value;
        match auth::parse_sha256(&raw_key.sha256.value) {
            Some(sha256) => api_keys.push(ApiKey {
                name: raw_key.name.0.clone(),
                sha256,
                tenants: raw_key.tenants.iter().map(|t| t.0.clone()).collect(),
            }),
            None => errors.at(
                raw_key.sha256.referenced,
                format!("api_keys[{i}].sha256"),
                "must be 64 hex digits: the SHA-256 of the key (`schemagate hash-key`), never the key itself",
            ),
        }
    }
    api_keys
}
