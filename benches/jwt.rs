//! JWT verification per algorithm, cached (the token seen before: a SHA-256 and a lookup)
//! and uncached (a signature check and the claim checks), against a baseline in the same
//! run: `auth: bearer`'s shape check of the same header, what a route costs without JWT.
//! Keys are generated here (ring); RSA needs a key generator ring lacks, so RS256 is not
//! measured. Run with `cargo bench --bench jwt`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use schemagate::auth::{self, AuthMode};
use schemagate::jwt::{self, KeySet, KeySource, Provider, Settings};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-bench";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn provider(allowed: Vec<Algorithm>, keys: Vec<jwt::Key>) -> Provider {
    let settings = Settings {
        name: "bench".into(),
        issuer: "https://id.example.test/".into(),
        audiences: vec!["conversations-api".into()],
        allowed,
        leeway_secs: 30,
        source: KeySource::File("jwks.json".into()),
        claims_to_headers: Vec::new(),
    };
    let keys = KeySet {
        keys,
        fetched_at: Some(std::time::SystemTime::now()),
    };
    Provider::new(settings, keys, None)
}

/// A token like an identity provider's: a dozen claims, a few scopes.
fn claims() -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    serde_json::json!({
        "iss": "https://id.example.test/", "aud": "conversations-api",
        "sub": "user-42", "exp": now + 3600, "iat": now, "nbf": now,
        "jti": "7f1c2a9e-4b8d-4d1e-9a3c-2f6b8e0d5c71",
        "scope": "conversations:read conversations:write",
        "tenant_id": "acme", "email": "someone@example.test",
    })
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, &claims(), key).unwrap()
}

/// (algorithm, provider, token) per algorithm measured.
fn cases() -> Vec<(&'static str, Arc<Provider>, String)> {
    let rng = SystemRandom::new();
    let es_alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let es_doc = EcdsaKeyPair::generate_pkcs8(es_alg, &rng).unwrap();
    let es_pair = EcdsaKeyPair::from_pkcs8(es_alg, es_doc.as_ref(), &rng).unwrap();
    let point = es_pair.public_key().as_ref().to_vec();
    let ed_doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed_pair = Ed25519KeyPair::from_pkcs8(ed_doc.as_ref()).unwrap();
    let set = serde_json::json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "es", "x": b64(&point[1..33]), "y": b64(&point[33..65])},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(ed_pair.public_key().as_ref())},
    ]});
    let allowed = vec![Algorithm::ES256, Algorithm::EdDSA];
    let (keys, _) = jwt::parse_jwks(set.to_string().as_bytes(), &allowed).unwrap();
    let asymmetric = Arc::new(provider(allowed, keys));
    let hmac = Arc::new(provider(
        jwt::HMAC.to_vec(),
        vec![jwt::secret_key(SECRET, &jwt::HMAC)],
    ));
    vec![
        (
            "HS256",
            hmac,
            sign(Algorithm::HS256, "hs", &EncodingKey::from_secret(SECRET)),
        ),
        (
            "ES256",
            Arc::clone(&asymmetric),
            sign(
                Algorithm::ES256,
                "es",
                &EncodingKey::from_ec_der(es_doc.as_ref()),
            ),
        ),
        (
            "EdDSA",
            asymmetric,
            sign(
                Algorithm::EdDSA,
                "ed",
                &EncodingKey::from_ed_der(ed_doc.as_ref()),
            ),
        ),
    ]
}

fn verification(c: &mut Criterion) {
    let cases = cases();
    // The baseline: what `auth: bearer` does with the same header (shape only).
    let mut headers = HeaderMap::new();
    let value = format!("Bearer {}", cases[0].2);
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
    c.bench_function("baseline: auth bearer shape check", |b| {
        b.iter(|| auth::check(AuthMode::Bearer, black_box(&headers), &[]).unwrap())
    });
    for (alg, provider, token) in &cases {
        c.bench_function(&format!("{alg} uncached"), |b| {
            b.iter(|| provider.verify_uncached(black_box(token)).unwrap())
        });
        provider.verify(token).unwrap();
        assert!(provider.cached() >= 1);
        c.bench_function(&format!("{alg} cached"), |b| {
            b.iter(|| provider.verify(black_box(token)).unwrap())
        });
    }
}

criterion_group!(benches, verification);
criterion_main!(benches);
