//! Stage 2: credentials are present and well formed, and API keys are known (401 otherwise).
//!
//! `bearer` and `credentials` check presence and shape only; the upstream checks the token.
//! `api_key` looks the bearer token up among keys configured as SHA-256 hashes. `jwt` checks
//! the shape here like `bearer`; `jwt::JwtRule::check` then verifies the token. Messages never
//! echo what the client sent.

use http::header::{HeaderMap, HeaderValue, AUTHORIZATION, COOKIE};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Named by the config (`auth:`); defined there, as config names only its own types.
pub use crate::config::AuthMode;
use crate::error::GatewayError;

/// An API key from config: never the key itself, only its SHA-256.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub name: String,
    pub sha256: [u8; 32],
    /// Tenants this key may act for; `*` means any.
    pub tenants: Vec<String>,
}

impl ApiKey {
    /// Whether the key may act for `tenant`.
    pub fn allows(&self, tenant: &str) -> bool {
        self.tenants.iter().any(|t| t == "*" || t == tenant)
    }
}

/// SHA-256 of `key`, as lowercase hex (what config stores and `schemagate hash-key` prints).
pub fn hash_key(key: &[u8]) -> String {
    Sha256::digest(key)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Parses 64 hex digits into a SHA-256 digest.
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// Checks the caller's credentials; for `api_key`, returns the key that matched.
///
/// Two different `Authorization` values are a 400 on every route, whatever its mode: the
/// gateway would check one and the upstream might act on the other.
pub fn check<'k>(
    mode: AuthMode,
    headers: &HeaderMap,
    keys: &'k [ApiKey],
) -> Result<Option<&'k ApiKey>, GatewayError> {
    // One lookup: every check below reads the first value.
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let authorization = values.next();
    if let Some(first) = authorization {
        if values.any(|other| other != first) {
            return Err(GatewayError::BadRequest {
                message: "the request has two different Authorization headers".to_string(),
            });
        }
    }
    match mode {
        AuthMode::ApiKey => {
            check_presence(AuthMode::Bearer, authorization, headers)?;
            // A well-formed bearer value is `Bearer` (6 bytes), spaces, then the token.
            let token = authorization
                .and_then(|v| v.as_bytes().get(6..))
                .map(<[u8]>::trim_ascii)
                .unwrap_or_default();
            find_key(keys, token)
                .map(Some)
                .ok_or(GatewayError::Unauthorized {
                    message: "unknown API key",
                })
        }
        other => check_presence(other, authorization, headers).map(|()| None),
    }
}

/// Hashes the presented key, then compares it with every configured hash in constant time,
/// so neither the secret nor which key matched shows in the timing.
fn find_key<'k>(keys: &'k [ApiKey], token: &[u8]) -> Option<&'k ApiKey> {
    let presented: [u8; 32] = Sha256::digest(token).into();
    let mut found = None;
    for key in keys {
        if bool::from(key.sha256.ct_eq(&presented)) {
            found = Some(key);
        }
    }
    found
}

fn check_presence(
    mode: AuthMode,
    authorization: Option<&HeaderValue>,
    headers: &HeaderMap,
) -> Result<(), GatewayError> {
    match mode {
        AuthMode::None | AuthMode::ApiKey => Ok(()),
        // The token itself is verified next, by the route's `jwt::JwtRule`.
        AuthMode::Bearer | AuthMode::Jwt => {
            let value = authorization.ok_or(GatewayError::Unauthorized {
                message: "missing Authorization header: send `Authorization: Bearer <token>`",
            })?;
            if is_bearer(value.as_bytes()) {
                Ok(())
            } else {
                Err(GatewayError::Unauthorized {
                    message: "malformed Authorization header: expected `Bearer <token>`",
                })
            }
        }
        AuthMode::Credentials => {
            let present = |value: Option<&HeaderValue>| {
                value.is_some_and(|v| !v.as_bytes().trim_ascii().is_empty())
            };
            // Any scheme is accepted, but `Bearer` with no token is malformed (PRODUCT.md).
            let empty_bearer = authorization.is_some_and(|v| {
                let value = v.as_bytes().trim_ascii();
                value.len() >= 6
                    && value[..6].eq_ignore_ascii_case(b"bearer")
                    && value[6..].trim_ascii().is_empty()
            });
            if empty_bearer {
                Err(GatewayError::Unauthorized {
                    message: "malformed Authorization header: `Bearer` needs a token",
                })
            } else if present(authorization) || present(headers.get(COOKIE)) {
                Ok(())
            } else {
                Err(GatewayError::Unauthorized {
                    message:
                        "missing credentials: send an Authorization header or a session cookie",
                })
            }
        }
    }
}

/// `Bearer` (any case), one or more spaces, then a token68: `[A-Za-z0-9-._~+/]+=*`.
fn is_bearer(value: &[u8]) -> bool {
    let Some((scheme, rest)) = value.split_at_checked(6) else {
        return false;
    };
    let space_follows = rest.first() == Some(&b' ');
    if !scheme.eq_ignore_ascii_case(b"bearer") || !space_follows {
        return false;
    }
    let token = rest.trim_ascii();
    let body_len = token.iter().take_while(|&&b| b != b'=').count();
    body_len > 0
        && token[..body_len]
            .iter()
            .all(|&b| TOKEN68_BODY[usize::from(b)])
        && token[body_len..].iter().all(|&b| b == b'=')
}

/// The bytes of a token68 (RFC 9110 §11.2) before its `=` padding: letters, digits and
/// `-._~+/`. A table, so each byte of a token costs one load, not a search of six.
static TOKEN68_BODY: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token68_table_is_the_rfc_set() {
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            assert_eq!(TOKEN68_BODY[usize::from(b)], expected, "byte {b}");
        }
    }

    #[test]
    fn bearer_shapes() {
        for ok in [
            "Bearer abc",
            "bearer abc.def-ghi_~+/==",
            "BEARER  t",
            "Bearer t ",
        ] {
            assert!(is_bearer(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "Bearer",
            "Bearer ",
            "Bearer  ",
            "Basic abc",
            "Bearerabc",
            "Bearer a b",
            "Bearer =abc",
            "Bearer a=b",
        ] {
            assert!(!is_bearer(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn modes() {
        let check = |mode, headers: &HeaderMap| check(mode, headers, &[]).map(|_| ());
        let mut headers = HeaderMap::new();
        assert!(check(AuthMode::None, &headers).is_ok());
        assert!(matches!(
            check(AuthMode::Bearer, &headers),
            Err(GatewayError::Unauthorized { .. })
        ));
        assert!(check(AuthMode::Credentials, &headers).is_err());
        headers.insert(COOKIE, "session=1".parse().unwrap());
        assert!(check(AuthMode::Credentials, &headers).is_ok());
        headers.insert(AUTHORIZATION, "Bearer".parse().unwrap());
        assert!(
            check(AuthMode::Credentials, &headers).is_err(),
            "Bearer without a token"
        );
        headers.remove(AUTHORIZATION);
        assert!(check(AuthMode::Bearer, &headers).is_err());
        headers.insert(AUTHORIZATION, "Token xyz".parse().unwrap());
        assert!(check(AuthMode::Bearer, &headers).is_err());
        headers.insert(AUTHORIZATION, "bEaReR xyz".parse().unwrap());
        assert!(check(AuthMode::Bearer, &headers).is_ok());
    }

    #[test]
    fn two_different_authorizations_are_refused_in_every_mode() {
        let keys = [ApiKey {
            name: "a".into(),
            sha256: parse_sha256(&hash_key(b"one")).unwrap(),
            tenants: vec!["*".into()],
        }];
        let mut two = HeaderMap::new();
        two.append(AUTHORIZATION, "Bearer one".parse().unwrap());
        two.append(AUTHORIZATION, "Bearer two".parse().unwrap());
        for mode in [
            AuthMode::None,
            AuthMode::Bearer,
            AuthMode::Credentials,
            AuthMode::ApiKey,
        ] {
            assert!(
                matches!(
                    check(mode, &two, &keys),
                    Err(GatewayError::BadRequest { .. })
                ),
                "{mode:?}"
            );
        }
        let mut same = HeaderMap::new();
        same.append(AUTHORIZATION, "Bearer one".parse().unwrap());
        same.append(AUTHORIZATION, "Bearer one".parse().unwrap());
        assert_eq!(
            check(AuthMode::ApiKey, &same, &keys).unwrap().unwrap().name,
            "a"
        );
    }

    #[test]
    fn api_keys_are_found_by_hash() {
        let key = |name: &str, secret: &str| ApiKey {
            name: name.into(),
            sha256: parse_sha256(&hash_key(secret.as_bytes())).unwrap(),
            tenants: vec!["t1".into()],
        };
        let keys = [key("a", "alpha-secret"), key("b", "beta-secret")];
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "Bearer beta-secret".parse().unwrap());
        assert_eq!(
            check(AuthMode::ApiKey, &headers, &keys)
                .unwrap()
                .unwrap()
                .name,
            "b"
        );
        headers.insert(AUTHORIZATION, "Bearer gamma".parse().unwrap());
        assert!(matches!(
            check(AuthMode::ApiKey, &headers, &keys),
            Err(GatewayError::Unauthorized {
                message: "unknown API key"
            })
        ));
        headers.remove(AUTHORIZATION);
        assert!(check(AuthMode::ApiKey, &headers, &keys).is_err());
        assert_eq!(
            hash_key(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(parse_sha256("zz").is_none());
        assert!(keys[0].allows("t1") && !keys[0].allows("t2"));
    }
}
