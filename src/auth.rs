//! Stage 2: credentials are present and well formed (401 otherwise).
//!
//! This stage checks presence and shape only; the upstream checks that a token is valid.
//! Messages never echo what the client sent.

use http::header::{HeaderMap, AUTHORIZATION, COOKIE};

use crate::error::GatewayError;

/// What a route requires of the caller's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Nothing.
    #[default]
    None,
    /// `Authorization: Bearer <token>`; the scheme name is case-insensitive and the token is
    /// an RFC 6750 token68.
    Bearer,
    /// Any credentials: an `Authorization` header of any scheme or a cookie (Gestiono accepts
    /// signed keys, raw tokens and browser cookies).
    Credentials,
}

pub fn check(mode: AuthMode, headers: &HeaderMap) -> Result<(), GatewayError> {
    match mode {
        AuthMode::None => Ok(()),
        AuthMode::Bearer => {
            let value = headers
                .get(AUTHORIZATION)
                .ok_or(GatewayError::Unauthorized {
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
            let present = |name| {
                headers
                    .get(name)
                    .is_some_and(|v: &http::HeaderValue| !v.as_bytes().trim_ascii().is_empty())
            };
            if present(AUTHORIZATION) || present(COOKIE) {
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
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
        && token[body_len..].iter().all(|&b| b == b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut headers = HeaderMap::new();
        assert!(check(AuthMode::None, &headers).is_ok());
        assert!(matches!(
            check(AuthMode::Bearer, &headers),
            Err(GatewayError::Unauthorized { .. })
        ));
        assert!(check(AuthMode::Credentials, &headers).is_err());
        headers.insert(COOKIE, "session=1".parse().unwrap());
        assert!(check(AuthMode::Credentials, &headers).is_ok());
        assert!(check(AuthMode::Bearer, &headers).is_err());
        headers.insert(AUTHORIZATION, "Token xyz".parse().unwrap());
        assert!(check(AuthMode::Bearer, &headers).is_err());
        headers.insert(AUTHORIZATION, "bEaReR xyz".parse().unwrap());
        assert!(check(AuthMode::Bearer, &headers).is_ok());
    }
}
