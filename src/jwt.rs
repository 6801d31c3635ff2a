//! Stage 2 for `auth: { jwt: NAME }`: verifying a bearer JSON Web Token against its issuer's
//! keys (issue 20), with the `jsonwebtoken` crate over `ring`.
//!
//! Architecture invariant: the algorithm comes from the key, never from the token. Each key
//! carries the algorithms it may verify (its type and curve, narrowed by its JWK `alg` and the
//! provider's `algorithms`); a token is only tried against keys whose set holds the `alg` its
//! header names, so an HS256 token "signed" with an RSA public key finds no key, and `none`
//! is not an algorithm at all. HMAC secrets come only from `secret_file`, never from a JWK
//! Set. Header fields that point elsewhere (`jku`, `x5u`, `jwk`) are never followed.
//!
//! Answers never echo the token or a claim: a failure is one of the [`TokenProblem`] classes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

mod fetch;

pub use fetch::{Outcome, Remote, MAX_JWKS_BYTES, UNKNOWN_KID_FLOOR};

pub use crate::config::JwtAlgorithm;
use crate::error::GatewayError;
pub use crate::error::TokenProblem;

/// The longest token verified; a longer one is malformed before any decoding (a JWT of a few
/// claims is well under 2 KiB; 8 KiB leaves room for large `scope` lists).
pub const MAX_TOKEN_BYTES: usize = 8 << 10;

/// Every algorithm a JWK Set's keys may verify; its first six are RSA's. The default
/// `algorithms:` of a `jwks_url` or `jwks_file` provider.
pub const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
/// What an HMAC secret may verify; the default `algorithms:` of a `secret_file` provider.
pub const HMAC: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// The shortest HMAC secret accepted: RFC 7518 §3.2 wants a key at least as long as the
/// hash, and HS256's is 32 bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// The verified claims of a token.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims(pub Map<String, Value>);

impl Claims {
    /// The claim at a dotted path (`tenant_id`, `org.id`): strings as they are, numbers and
    /// booleans as JSON text; objects, arrays and null are not values.
    pub fn text(&self, path: &str) -> Option<String> {
        let mut parts = path.split('.');
        let first = parts.next()?;
        let mut value = self.0.get(first)?;
        for part in parts {
            value = value.as_object()?.get(part)?;
        }
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null | Value::Array(_) | Value::Object(_) => None,
        }
    }

    /// Whether the token grants every scope in `required`: `scope` is a space-separated
    /// string (RFC 8693), `scp` a list or such a string (Azure AD, Okta).
    pub fn has_scopes(&self, required: &[String]) -> bool {
        let mut granted: Vec<&str> = Vec::new();
        for claim in ["scope", "scp"] {
            match self.0.get(claim) {
                Some(Value::String(s)) => granted.extend(s.split_ascii_whitespace()),
                Some(Value::Array(items)) => granted.extend(items.iter().filter_map(Value::as_str)),
                _ => {}
            }
        }
        required
            .iter()
            .all(|scope| granted.contains(&scope.as_str()))
    }
}

/// One verification key and the algorithms it verifies.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// The keys a provider verifies with, and when they were had.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
    /// When the keys were read or fetched; `None` before the first success.
    pub fetched_at: Option<SystemTime>,
}

/// Where a provider's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWK Set at this URL, fetched and refreshed.
    Url(String),
    /// A JWK Set file, read when the config loads (and watched).
    File(PathBuf),
    /// An HMAC secret file, read when the config loads (and watched).
    Secret(PathBuf),
}

/// A `jwt:` provider, compiled.
#[derive(Debug)]
pub struct Provider {
    pub settings: Settings,
    /// The keys in use: swapped whole when a JWK Set is fetched again.
    keys: ArcSwap<KeySet>,
    /// One validation per allowed algorithm, built once.
    validations: Vec<(Algorithm, Validation)>,
    /// With `jwks_url`: where the keys are fetched from, and the fetch state.
    pub remote: Option<Remote>,
    /// Verified tokens by the SHA-256 of their text, each until its `exp` plus leeway.
    cache: DashMap<[u8; 32], Cached>,
}

/// A verified token's claims, and whether they came from the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub claims: Arc<Claims>,
    pub cached: bool,
}

/// `(result, reason)` labels of a check, for `schemagate_jwt_verifications`: `ok` with
/// `verified` or `cached`, `rejected` with the token's class or `insufficient_scope`.
pub fn outcome(result: &Result<Verified, GatewayError>) -> (&'static str, &'static str) {
    match result {
        Ok(verified) if verified.cached => ("ok", "cached"),
        Ok(_) => ("ok", "verified"),
        Err(GatewayError::InvalidToken { reason }) => ("rejected", reason.label()),
        Err(GatewayError::InsufficientScope { .. }) => ("rejected", "insufficient_scope"),
        Err(_) => ("rejected", "other"),
    }
}

/// A verified token's claims, and until when (Unix seconds) they may be reused.
#[derive(Debug)]
struct Cached {
    claims: Arc<Claims>,
    until: u64,
}

/// The most verified tokens a provider keeps: at ~1 KB each, about 10 MB at worst.
pub const CACHE_ENTRIES: usize = 10_000;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a provider is built from, checked by `snapshot`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    /// The allow-list (`algorithms:`).
    pub allowed: Vec<Algorithm>,
    pub leeway_secs: u64,
    pub source: KeySource,
    /// `(claim path, header)` pairs forwarded to the upstream.
    pub claims_to_headers: Vec<(String, HeaderName)>,
}

impl Provider {
    pub fn new(settings: Settings, keys: KeySet, remote: Option<Remote>) -> Provider {
        let validations = settings
            .allowed
            .iter()
            .map(|&alg| (alg, validation(alg, &settings)))
            .collect();
        Provider {
            settings,
            keys: ArcSwap::from_pointee(keys),
            validations,
            remote,
            cache: DashMap::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The keys in use now.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Puts a new key set in use (a JWK Set fetched again). Cached tokens are forgotten: a
    /// key the issuer withdrew must stop verifying at once.
    pub fn set_keys(&self, keys: KeySet) {
        self.keys.store(Arc::new(keys));
        self.cache.clear();
    }

    /// Verifies `token`, from the cache of verified tokens when it is there and its `exp`
    /// (plus leeway) has not passed: a client reusing its token pays a SHA-256 and a lookup,
    /// not a signature check.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenProblem> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenProblem::Malformed);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = unix_now();
        if let Some(hit) = self.cache.get(&digest) {
            if now <= hit.until {
                return Ok(Verified {
                    claims: Arc::clone(&hit.claims),
                    cached: true,
                });
            }
        }
        let claims = Arc::new(self.verify_uncached(token)?);
        // `exp` is required, so a verified token has one; it may be written as a float.
        if let Some(exp) = claims.0.get("exp").and_then(Value::as_f64) {
            self.remember(
                digest,
                &claims,
                (exp as u64).saturating_add(self.settings.leeway_secs),
                now,
            );
        }
        Ok(Verified {
            claims,
            cached: false,
        })
    }

    /// Keeps a verified token until `until`. A full cache first drops what has expired; if it
    /// is still full, the token is not kept (verified again next time) rather than evicting.
    fn remember(&self, digest: [u8; 32], claims: &Arc<Claims>, until: u64, now: u64) {
        if self.cache.len() >= CACHE_ENTRIES {
            self.cache.retain(|_, cached| cached.until >= now);
            if self.cache.len() >= CACHE_ENTRIES {
                return;
            }
        }
        self.cache.insert(
            digest,
            Cached {
                claims: Arc::clone(claims),
                until,
            },
        );
    }

    /// How many verified tokens are cached.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Verifies `token` without the cache: its size, its header, a key that may verify its
    /// `alg`, the signature, then `exp`, `nbf`, `iss` and `aud` (with `leeway`).
    pub fn verify_uncached(&self, token: &str) -> Result<Claims, TokenProblem> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenProblem::Malformed);
        }
        // `alg: none` and unknown algorithms fail here: `Algorithm` has no such variant.
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenProblem::Malformed)?;
        if has_crit(token) {
            return Err(TokenProblem::Malformed);
        }
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == header.alg) else {
            return Err(TokenProblem::UnknownKey);
        };
        let keys = self.keys.load();
        let mut tried = false;
        for key in keys.keys.iter().filter(|key| {
            key.algorithms.contains(&header.alg)
                && match (&key.kid, &header.kid) {
                    (Some(have), Some(want)) => have == want,
                    // A key without `kid` (an HMAC secret, a one-key set) serves any token; a
                    // token without `kid` is tried against every key of its algorithm.
                    _ => true,
                }
        }) {
            tried = true;
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, validation) {
                Ok(data) => return Ok(Claims(data.claims)),
                // Another key with the same `kid` (or none) may still verify it.
                Err(e) if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature => {}
                Err(e) => return Err(problem(e.kind())),
            }
        }
        Err(if tried {
            TokenProblem::BadSignature
        } else {
            TokenProblem::UnknownKey
        })
    }

    /// Whether the token names a `kid` no key has (a JWK Set refetch may find it).
    pub fn kid_unknown(&self, token: &str) -> bool {
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return false;
        };
        header.kid.is_some_and(|kid| {
            !self
                .keys
                .load()
                .keys
                .iter()
                .any(|key| key.kid.as_deref() == Some(kid.as_str()))
        })
    }
}

fn validation(alg: Algorithm, settings: &Settings) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = settings.leeway_secs;
    validation.validate_nbf = true;
    validation.validate_exp = true;
    validation.set_issuer(&[&settings.issuer]);
    let mut required = vec!["exp", "iss"];
    if settings.audiences.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&settings.audiences);
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// The class of a `jsonwebtoken` failure, as answered.
fn problem(kind: &jsonwebtoken::errors::ErrorKind) -> TokenProblem {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => TokenProblem::Expired,
        K::ImmatureSignature => TokenProblem::NotYetValid,
        K::InvalidSignature => TokenProblem::BadSignature,
        K::InvalidIssuer => TokenProblem::WrongIssuer,
        K::InvalidAudience => TokenProblem::WrongAudience,
        K::MissingRequiredClaim(claim) if claim == "iss" => TokenProblem::WrongIssuer,
        K::MissingRequiredClaim(claim) if claim == "aud" => TokenProblem::WrongAudience,
        K::InvalidAlgorithm | K::InvalidEcdsaKey | K::InvalidRsaKey(_) | K::InvalidKeyFormat => {
            TokenProblem::UnknownKey
        }
        _ => TokenProblem::Malformed,
    }
}

/// The algorithm a JWK's `alg` names, `None` for one that is not a signature algorithm.
fn signature_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        KeyAlgorithm::RSA1_5 | KeyAlgorithm::RSA_OAEP | KeyAlgorithm::RSA_OAEP_256 => return None,
    })
}

/// The crate's algorithm for a configured one.
pub fn algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// Whether `alg` is an HMAC algorithm (its key is a shared secret).
pub fn is_hmac(alg: Algorithm) -> bool {
    HMAC.contains(&alg)
}

/// The keys of a JWK Set document, each with the algorithms it may verify among `allowed`.
/// Keys that cannot verify anything allowed (encryption keys, `oct` secrets, other curves,
/// unreadable entries) are skipped and named in the second list, so one odd key in an
/// issuer's set does not take the others down. Errors: not a JWK Set at all, or no usable key.
pub fn parse_jwks(bytes: &[u8], allowed: &[Algorithm]) -> Result<(Vec<Key>, Vec<String>), String> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<Value>,
    }
    let set: Set = serde_json::from_slice(bytes)
        .map_err(|e| format!("not a JWK Set (a JSON object with `keys`): {e}"))?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, value) in set.keys.into_iter().enumerate() {
        let name = value
            .get("kid")
            .and_then(Value::as_str)
            .map_or_else(|| format!("keys[{i}]"), |kid| format!("kid {kid:?}"));
        match jwk_key(value, allowed) {
            Ok(key) => keys.push(key),
            Err(why) => skipped.push(format!("{name}: {why}")),
        }
    }
    if keys.is_empty() {
        return Err(match skipped.is_empty() {
            true => "the JWK Set has no keys".to_string(),
            false => format!("the JWK Set has no usable key ({})", skipped.join("; ")),
        });
    }
    Ok((keys, skipped))
}

fn jwk_key(value: Value, allowed: &[Algorithm]) -> Result<Key, String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("not a JWK ({e})"))?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (`use: enc`)".to_string());
    }
    let family: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &ASYMMETRIC[..6],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return Err("an EC curve other than P-256 or P-384".to_string()),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => return Err("an OKP curve other than Ed25519".to_string()),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric (`oct`) key: HMAC secrets go in `secret_file`".to_string())
        }
    };
    let declared = match jwk.common.key_algorithm {
        Some(alg) => Some(signature_algorithm(alg).ok_or("not a signature algorithm")?),
        None => None,
    };
    let algorithms: Vec<Algorithm> = family
        .iter()
        .copied()
        .filter(|alg| allowed.contains(alg) && declared.is_none_or(|d| d == *alg))
        .collect();
    if algorithms.is_empty() {
        return Err("its algorithm is not in `algorithms`".to_string());
    }
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unreadable ({e})"))?;
    Ok(Key {
        kid: jwk.common.key_id,
        algorithms,
        decoding,
    })
}

/// The key of an HMAC secret: every allowed HMAC algorithm, no `kid`.
pub fn secret_key(secret: &[u8], allowed: &[Algorithm]) -> Key {
    Key {
        kid: None,
        algorithms: allowed.iter().copied().filter(|a| is_hmac(*a)).collect(),
        decoding: DecodingKey::from_secret(secret),
    }
}

/// A route's `auth: { jwt: NAME, scopes: [...] }`, compiled.
#[derive(Debug, Clone)]
pub struct JwtRule {
    pub provider: Arc<Provider>,
    pub scopes: Vec<String>,
}

impl JwtRule {
    /// Verifies the request's bearer token (its shape already checked by `auth::check`) and
    /// the route's scopes; then removes the client's copies of the claim headers and sets
    /// them from the verified claims. A `kid` no key has may refetch a `jwks_url` first
    /// (at most once per [`UNKNOWN_KID_FLOOR`]); this is the one wait of this stage.
    pub async fn check(&self, headers: &mut HeaderMap) -> Result<Verified, GatewayError> {
        let token = bearer(headers);
        let provider = &self.provider;
        let verified = match provider.verify(token) {
            Err(TokenProblem::UnknownKey)
                if provider.remote.is_some()
                    && provider.kid_unknown(token)
                    && provider.refetch_for_unknown_kid().await =>
            {
                provider.verify(token)
            }
            other => other,
        };
        self.admit(verified, headers)
    }

    /// [`JwtRule::check`] with the keys in hand, never fetching (`schemagate validate`).
    pub fn check_offline(&self, headers: &mut HeaderMap) -> Result<Verified, GatewayError> {
        let verified = self.provider.verify(bearer(headers));
        self.admit(verified, headers)
    }

    /// The route's scopes, then the claim headers in place of the client's.
    fn admit(
        &self,
        verified: Result<Verified, TokenProblem>,
        headers: &mut HeaderMap,
    ) -> Result<Verified, GatewayError> {
        let verified = verified.map_err(|reason| GatewayError::InvalidToken { reason })?;
        let claims = &verified.claims;
        if !claims.has_scopes(&self.scopes) {
            return Err(GatewayError::InsufficientScope {
                required: self.scopes.join(" "),
            });
        }
        for (claim, header) in &self.provider.settings.claims_to_headers {
            headers.remove(header);
            if let Some(value) = claims
                .text(claim)
                .and_then(|text| HeaderValue::from_str(&text).ok())
            {
                headers.insert(header.clone(), value);
            }
        }
        Ok(verified)
    }
}

/// Whether the token's header has `crit`: RFC 7515 §4.1.11 wants a token refused when it
/// names extensions the recipient does not understand, and we understand none (`b64: false`
/// of RFC 7797 among them). jsonwebtoken's `Header` drops the field, so it is read here.
fn has_crit(token: &str) -> bool {
    use base64::Engine;
    #[derive(serde::Deserialize)]
    struct Crit {
        crit: Option<serde::de::IgnoredAny>,
    }
    let segment = token.split('.').next().unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .ok()
        .and_then(|json| serde_json::from_slice::<Crit>(&json).ok())
        .is_some_and(|header| header.crit.is_some())
}

/// The token of an `Authorization: Bearer <token>` already checked for shape.
fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.get(6..))
        .map(str::trim)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_by_dotted_path() {
        let claims = Claims(
            serde_json::json!({"sub": "u1", "org": {"id": 7, "x": null}, "n": true})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(claims.text("sub").as_deref(), Some("u1"));
        assert_eq!(claims.text("org.id").as_deref(), Some("7"));
        assert_eq!(claims.text("n").as_deref(), Some("true"));
        assert_eq!(claims.text("org"), None);
        assert_eq!(claims.text("org.x"), None);
        assert_eq!(claims.text("org.id.deeper"), None);
        assert_eq!(claims.text("missing"), None);
    }

    #[test]
    fn scopes_from_scope_or_scp() {
        let claims = |v: Value| Claims(v.as_object().unwrap().clone());
        let need = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let space = claims(serde_json::json!({"scope": "a b  c"}));
        assert!(space.has_scopes(&need(&["a", "c"])));
        assert!(!space.has_scopes(&need(&["a", "d"])));
        let list = claims(serde_json::json!({"scp": ["a", "b"]}));
        assert!(list.has_scopes(&need(&["b"])));
        assert!(!list.has_scopes(&need(&["a b"])));
        assert!(claims(serde_json::json!({})).has_scopes(&[]));
        assert!(!claims(serde_json::json!({"scope": 3})).has_scopes(&need(&["3"])));
    }

    fn hs_provider(leeway_secs: u64) -> Provider {
        let settings = Settings {
            name: "t".into(),
            issuer: "iss".into(),
            audiences: Vec::new(),
            allowed: HMAC.to_vec(),
            leeway_secs,
            source: KeySource::Secret("k".into()),
            claims_to_headers: Vec::new(),
        };
        let keys = KeySet {
            keys: vec![secret_key(&[7; 32], &HMAC)],
            fetched_at: None,
        };
        Provider::new(settings, keys, None)
    }

    fn hs_token(claims: Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_secret(&[7; 32]);
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    }

    #[test]
    fn verified_tokens_are_cached_until_exp_and_forgotten_with_the_keys() {
        let provider = hs_provider(0);
        let now = unix_now();
        let token = hs_token(serde_json::json!({"iss": "iss", "exp": now + 60}));
        let first = provider.verify(&token).unwrap();
        assert!(!first.cached);
        assert_eq!(provider.cached(), 1);
        // The same claims, from the cache: the very same allocation.
        let again = provider.verify(&token).unwrap();
        assert!(again.cached);
        assert!(Arc::ptr_eq(&first.claims, &again.claims));
        // Failures are not cached.
        let wrong = hs_token(serde_json::json!({"iss": "other", "exp": now + 60}));
        assert_eq!(provider.verify(&wrong), Err(TokenProblem::WrongIssuer));
        assert_eq!(provider.cached(), 1);
        // An entry past its `exp` is not used: the token is verified again, and refused.
        provider.remember([1; 32], &first.claims, now - 1, now);
        assert_eq!(provider.cached(), 2);
        provider.set_keys(KeySet::default());
        assert_eq!(provider.cached(), 0);
        assert_eq!(provider.verify(&token), Err(TokenProblem::UnknownKey));
    }

    #[test]
    fn a_full_cache_drops_expired_entries_and_then_stops_adding() {
        let provider = hs_provider(0);
        let now = unix_now();
        let claims = Arc::new(Claims(Map::new()));
        for i in 0..CACHE_ENTRIES {
            let mut digest = [0; 32];
            digest[..8].copy_from_slice(&(i as u64).to_le_bytes());
            // Half of them already expired.
            provider.remember(
                digest,
                &claims,
                if i % 2 == 0 { now - 1 } else { now + 60 },
                now,
            );
        }
        assert_eq!(provider.cached(), CACHE_ENTRIES);
        provider.remember([0xff; 32], &claims, now + 60, now);
        assert_eq!(provider.cached(), CACHE_ENTRIES / 2 + 1);
        for i in 0..CACHE_ENTRIES {
            let mut digest = [0xee; 32];
            digest[..8].copy_from_slice(&(i as u64).to_le_bytes());
            provider.remember(digest, &claims, now + 60, now);
        }
        assert_eq!(provider.cached(), CACHE_ENTRIES, "bounded");
    }

    /// Whatever a client sends as a token is an answer, never a panic: random segments,
    /// valid-looking headers with odd fields (`crit`, `jku`, a huge `kid`, `alg: none`).
    #[test]
    fn arbitrary_tokens_are_refused_without_panicking() {
        let provider = hs_provider(0);
        let b64 = |text: &str| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
        };
        let headers = [
            r#"{"alg":"HS256","crit":["exp"],"jku":"http://evil.test/jwks"}"#.to_string(),
            format!(r#"{{"alg":"HS256","kid":"{}"}}"#, "k".repeat(5000)),
            r#"{"alg":"none"}"#.to_string(),
            r#"{"alg":"HS256","jwk":{"kty":"oct","k":"AAAA"}}"#.to_string(),
            r#"{"alg":["HS256"]}"#.to_string(),
            "[]".to_string(),
            "\u{0}".to_string(),
        ];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..5000 {
            let token = match i % 3 {
                0 => (0..next() % 200)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char)
                    .collect::<String>(),
                1 => format!(
                    "{}.{}.{}",
                    b64(&headers[i % headers.len()]),
                    b64(r#"{"iss":"iss","exp":99999999999}"#),
                    b64("sig")
                ),
                _ => format!("{}..", b64(&headers[i % headers.len()])),
            };
            assert!(provider.verify(&token).is_err(), "{token}");
        }
    }

    #[test]
    fn jwks_keys_get_their_own_algorithms() {
        let allowed = [Algorithm::RS256, Algorithm::ES256, Algorithm::HS256];
        let set = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB"},
            {"kty": "oct", "kid": "s", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "e384", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": "sXch", "e": "AQAB"},
            {"kty": "weird"}
        ]});
        let (keys, skipped) = parse_jwks(set.to_string().as_bytes(), &allowed).unwrap();
        assert_eq!(keys.len(), 1, "{skipped:?}");
        assert_eq!(keys[0].kid.as_deref(), Some("r"));
        assert_eq!(keys[0].algorithms, vec![Algorithm::RS256]);
        assert_eq!(skipped.len(), 5, "{skipped:?}");
        assert!(parse_jwks(b"{\"keys\": []}", &allowed).is_err());
        assert!(parse_jwks(b"[]", &allowed).is_err());
    }

    #[test]
    fn a_crit_header_is_malformed() {
        let provider = hs_provider(0);
        let key = jsonwebtoken::EncodingKey::from_secret(&[7; 32]);
        let claims = serde_json::json!({"iss": "iss", "exp": unix_now() + 60});
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
        assert!(provider.verify(&token).is_ok());
        // The same claims and key, with a header naming a critical extension.
        let header =
            serde_json::json!({"alg": "HS256", "typ": "JWT", "crit": ["b64"], "b64": false});
        let signing_input = {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            format!(
                "{}.{}",
                b64.encode(header.to_string()),
                b64.encode(claims.to_string())
            )
        };
        let signature =
            jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::HS256).unwrap();
        let critical = format!("{signing_input}.{signature}");
        assert_eq!(
            provider.verify_uncached(&critical),
            Err(TokenProblem::Malformed)
        );
    }
}
