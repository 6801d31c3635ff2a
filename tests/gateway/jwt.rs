//! `auth: { jwt: NAME }` over real sockets: keys generated here (ECDSA P-256, Ed25519, an HMAC
//! secret; RSA with the openssl CLI), tokens signed per algorithm, each refused for its class.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};

use crate::support::*;

pub const ISSUER: &str = "https://id.example.test/";
pub const AUDIENCE: &str = "conversations-api";

/// A signing key of the test's issuer, with its public JWK.
pub struct Signer {
    pub alg: Algorithm,
    pub kid: String,
    pub key: EncodingKey,
    pub jwk: Value,
    /// The public key's bytes, for the algorithm-confusion token.
    pub public: Vec<u8>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Signer {
    pub fn es256(kid: &str) -> Signer {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let doc = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, doc.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        Signer {
            alg: Algorithm::ES256,
            kid: kid.to_string(),
            key: EncodingKey::from_ec_der(doc.as_ref()),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
            public: point,
        }
    }

    pub fn eddsa(kid: &str) -> Signer {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        let public = pair.public_key().as_ref().to_vec();
        Signer {
            alg: Algorithm::EdDSA,
            kid: kid.to_string(),
            key: EncodingKey::from_ed_der(doc.as_ref()),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(&public)}),
            public,
        }
    }

    pub fn hs256(secret: &[u8]) -> Signer {
        Signer {
            alg: Algorithm::HS256,
            kid: "hs".to_string(),
            key: EncodingKey::from_secret(secret),
            jwk: Value::Null,
            public: secret.to_vec(),
        }
    }

    /// A token with `claims`, this key's `alg` and `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims a valid token carries; `edit` changes them.
pub fn claims(edit: impl FnOnce(&mut Value)) -> Value {
    let mut claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "user-42",
        "exp": now() + 600, "iat": now(),
        "scope": "conversations:read conversations:write",
        "org": {"id": "acme"},
    });
    edit(&mut claims);
    claims
}

pub fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// The token with its payload swapped for other claims, the signature kept.
fn swapped_payload(token: &str, claims: &Value) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1] = b64(claims.to_string().as_bytes());
    parts.join(".")
}

fn unsigned(alg: &str, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// An HS256 token whose HMAC key is `public`: the classic RS/HS confusion, where a verifier
/// that takes the algorithm from the header checks it with the public key as the secret.
fn confused(kid: &str, public: &[u8], claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(public)).unwrap()
}

async fn get(gw: &TestGateway, path: &str, token: &str) -> Got {
    let auth = format!("Bearer {token}");
    send(
        gw.addr,
        request(
            "GET",
            path,
            &[("authorization", &auth), ("x-user-id", "forged")],
            b"",
        ),
    )
    .await
}

/// A 401 for `class`, with RFC 6750's header, echoing neither the token nor a claim.
pub fn assert_invalid(got: &Got, class: &str, token: &str) {
    assert_envelope(got, 401, "Unauthorized");
    assert_eq!(got.json()["message"], format!("Invalid token: {class}"));
    assert_eq!(
        got.headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    let body = String::from_utf8_lossy(&got.body);
    assert!(
        !body.contains("user-42") && !body.contains("acme"),
        "{body}"
    );
    let tail = &token[token.len().saturating_sub(12)..];
    assert!(tail.is_empty() || !body.contains(tail), "{body}");
}

fn config(upstream: &str, providers: &str) -> String {
    let routes = r#"  - name: corp
    method: GET
    path: /corp
    upstream: backend
    auth: { jwt: corp }
  - name: scoped
    method: GET
    path: /scoped
    upstream: backend
    auth: { jwt: corp, scopes: [conversations:write, admin] }
  - name: hs
    method: GET
    path: /hs
    upstream: backend
    auth: { jwt: shared }
  - name: tenant
    method: GET
    path: /tenant
    upstream: backend
    auth: { jwt: corp }
    tenant: { from: claim, name: org.id }
    rate_limit: { quota: 1/h, burst: 1 }
"#;
    format!("{}{providers}", backend_config(upstream, routes))
}

const PROVIDERS: &str = r#"jwt:
  - name: corp
    issuer: https://id.example.test/
    audiences: [conversations-api, other-api]
    jwks_file: keys/jwks.json
    algorithms: [ES256, EdDSA, RS256]
    leeway: 5s
    claims_to_headers: { sub: X-User-Id, org.id: X-Org }
  - name: shared
    issuer: https://id.example.test/
    audiences: [conversations-api]
    secret_file: keys/hs256.key
"#;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";

/// Every class of bad token, per algorithm, against one gateway.
#[tokio::test]
async fn tokens_are_verified_per_algorithm_and_refused_by_class() {
    let upstream = Upstream::start(Answer::default()).await;
    let es = Signer::es256("es-1");
    let ed = Signer::eddsa("ed-1");
    let hs = Signer::hs256(SECRET);
    let set = jwks(&[&es, &ed]);
    let secret = format!("{}\n", String::from_utf8_lossy(SECRET));
    let gw = TestGateway::start(
        &config(&upstream.url(), PROVIDERS),
        &[("keys/jwks.json", &set), ("keys/hs256.key", &secret)],
    )
    .await;
    for (signer, path) in [(&es, "/corp"), (&ed, "/corp"), (&hs, "/hs")] {
        let what = format!("{:?}", signer.alg);
        let valid = signer.sign(&claims(|_| {}));
        let got = get(&gw, path, &valid).await;
        assert_eq!(got.status, 200, "{what} valid: {:?}", got.body);
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "expired beyond the leeway",
                signer.sign(&claims(|c| c["exp"] = json!(now() - 60))),
                "expired",
            ),
            (
                "not yet valid",
                signer.sign(&claims(|c| c["nbf"] = json!(now() + 300))),
                "not yet valid",
            ),
            (
                "wrong issuer",
                signer.sign(&claims(|c| c["iss"] = json!("https://evil.test/"))),
                "wrong issuer",
            ),
            (
                "no issuer",
                signer.sign(&claims(|c| {
                    c.as_object_mut().unwrap().remove("iss");
                })),
                "wrong issuer",
            ),
            (
                "wrong audience",
                signer.sign(&claims(|c| c["aud"] = json!("billing-api"))),
                "wrong audience",
            ),
            (
                "bad signature",
                swapped_payload(&valid, &claims(|c| c["sub"] = json!("admin"))),
                "bad signature",
            ),
            ("alg none", unsigned("none", &claims(|_| {})), "malformed"),
            (
                "oversized",
                signer.sign(&claims(|c| c["pad"] = json!("x".repeat(9000)))),
                "malformed",
            ),
            ("garbage", "abc.def.ghi".to_string(), "malformed"),
            ("one segment", "abcdef".to_string(), "malformed"),
        ];
        for (case, token, class) in cases {
            let got = get(&gw, path, &token).await;
            assert_eq!(got.status, 401, "{what} {case}");
            assert_invalid(&got, class, &token);
        }
        // Within the leeway, an expired token still passes.
        let late = signer.sign(&claims(|c| c["exp"] = json!(now() - 2)));
        assert_eq!(get(&gw, path, &late).await.status, 200, "{what} leeway");
    }
    // Asymmetric keys: a kid the set does not hold, and the RS/HS confusion (an HS256 token
    // keyed with the public key or the JWK Set itself) find no key.
    for signer in [&es, &ed] {
        let other = match signer.alg {
            Algorithm::ES256 => Signer::es256("nope"),
            _ => Signer::eddsa("nope"),
        };
        let unknown = other.sign(&claims(|_| {}));
        assert_invalid(&get(&gw, "/corp", &unknown).await, "unknown key", &unknown);
        for key in [&signer.public[..], set.as_bytes()] {
            let token = confused(&signer.kid, key, &claims(|_| {}));
            assert_invalid(&get(&gw, "/corp", &token).await, "unknown key", &token);
        }
    }
    // An asymmetric token on the HMAC provider: its algorithm has no key there.
    let es_token = es.sign(&claims(|_| {}));
    assert_invalid(&get(&gw, "/hs", &es_token).await, "unknown key", &es_token);
    // Signed with another secret.
    let wrong = Signer::hs256(b"another-secret-of-at-least-32-bytes!!");
    let token = wrong.sign(&claims(|_| {}));
    assert_invalid(&get(&gw, "/hs", &token).await, "bad signature", &token);
    // Only valid tokens reached the upstream: 3 valid + 3 within the leeway.
    assert_eq!(upstream.seen().len(), 6);
}

#[tokio::test]
async fn scopes_claim_headers_and_claim_tenants() {
    let upstream = Upstream::start(Answer::default()).await;
    let es = Signer::es256("es-1");
    let secret = String::from_utf8_lossy(SECRET).to_string();
    let gw = TestGateway::start(
        &config(&upstream.url(), PROVIDERS),
        &[
            ("keys/jwks.json", &jwks(&[&es])),
            ("keys/hs256.key", &secret),
        ],
    )
    .await;

    // The scopes must all be granted: by `scope` or by `scp`.
    let partial = es.sign(&claims(|_| {}));
    let got = get(&gw, "/scoped", &partial).await;
    assert_envelope(&got, 403, "Forbidden");
    assert_eq!(
        got.headers["www-authenticate"],
        "Bearer error=\"insufficient_scope\", scope=\"conversations:write admin\""
    );
    let full = es.sign(&claims(|c| {
        c["scope"] = Value::Null;
        c["scp"] = json!(["admin", "conversations:write"]);
    }));
    assert_eq!(get(&gw, "/scoped", &full).await.status, 200);

    // Claims become headers; the client's own copies are gone.
    let seen = upstream.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.headers.get_all("x-user-id").iter().count(), 1);
    assert_eq!(last.headers["x-user-id"], "user-42");
    assert_eq!(last.headers["x-org"], "acme");
    // A token without the claim forwards no such header, not the client's.
    let anonymous = es.sign(&claims(|c| {
        c.as_object_mut().unwrap().remove("sub");
    }));
    assert_eq!(get(&gw, "/corp", &anonymous).await.status, 200);
    assert!(!upstream
        .seen()
        .last()
        .unwrap()
        .headers
        .contains_key("x-user-id"));

    // The tenant is the verified claim: one request per tenant per hour.
    let acme = es.sign(&claims(|_| {}));
    let globex = es.sign(&claims(|c| c["org"]["id"] = json!("globex")));
    assert_eq!(get(&gw, "/tenant", &acme).await.status, 200);
    assert_envelope(&get(&gw, "/tenant", &acme).await, 429, "Too Many Requests");
    assert_eq!(get(&gw, "/tenant", &globex).await.status, 200);
    // A verified token without the claim has no tenant: 400, as any missing tenant.
    let none = es.sign(&claims(|c| {
        c.as_object_mut().unwrap().remove("org");
    }));
    assert_envelope(&get(&gw, "/tenant", &none).await, 400, "Bad Request");
    // 401 comes before the tenant and the limit.
    let expired = es.sign(&claims(|c| c["exp"] = json!(now() - 600)));
    assert_invalid(&get(&gw, "/tenant", &expired).await, "expired", &expired);

    // No token, or not a bearer one: the route's 401 for missing credentials.
    let got = send(gw.addr, request("GET", "/corp", &[], b"")).await;
    assert_envelope(&got, 401, "Unauthorized");
}

/// RS256 and PS256 with keys openssl makes, and the RS/HS confusion with the RSA public key
/// (its PEM and its DER) as the HMAC secret.
#[tokio::test]
#[ignore = "needs the openssl CLI: ./test.sh installs it and runs ignored tests"]
async fn rsa_tokens_and_the_rs_hs_confusion() {
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .stderr(std::process::Stdio::null())
            .output()
            .expect("openssl is installed by test.sh");
        assert!(out.status.success(), "openssl {args:?}");
        out.stdout
    };
    openssl(&["genrsa", "-out", "rsa.pem", "2048"]);
    openssl(&[
        "rsa",
        "-in",
        "rsa.pem",
        "-traditional",
        "-outform",
        "DER",
        "-out",
        "rsa.der",
    ]);
    openssl(&["rsa", "-in", "rsa.pem", "-pubout", "-out", "pub.pem"]);
    let modulus =
        String::from_utf8(openssl(&["rsa", "-in", "rsa.pem", "-noout", "-modulus"])).unwrap();
    let hex = modulus.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let der = std::fs::read(dir.path().join("rsa.der")).unwrap();
    let pem = std::fs::read(dir.path().join("pub.pem")).unwrap();
    let signer = |alg: Algorithm, kid: &str| Signer {
        alg,
        kid: kid.to_string(),
        key: EncodingKey::from_rsa_der(&der),
        jwk: json!({"kty": "RSA", "kid": kid, "n": b64(&n), "e": "AQAB"}),
        public: pem.clone(),
    };
    let rs = signer(Algorithm::RS256, "rsa-1");
    let ps = signer(Algorithm::PS256, "rsa-1");
    let upstream = Upstream::start(Answer::default()).await;
    let providers = PROVIDERS.replace("[ES256, EdDSA, RS256]", "[RS256, PS256, HS256]");
    // HS256 beside a JWK Set is refused at load: the confusion cannot even be configured.
    let errors = schemagate::Snapshot::from_text(
        &dir.path().join("gateway.yaml"),
        &config(&upstream.url(), &providers),
        |_| None,
        &schemagate::ratelimit::GatewayClock::real(),
    )
    .unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.key.as_deref() == Some("jwt[0].algorithms") && e.message.contains("HMAC")),
        "{errors:?}"
    );
    let providers = PROVIDERS.replace("[ES256, EdDSA, RS256]", "[RS256, PS256]");
    let secret = String::from_utf8_lossy(SECRET).to_string();
    let gw = TestGateway::start(
        &config(&upstream.url(), &providers),
        &[
            ("keys/jwks.json", &jwks(&[&rs])),
            ("keys/hs256.key", &secret),
        ],
    )
    .await;
    for signer in [&rs, &ps] {
        let valid = signer.sign(&claims(|_| {}));
        assert_eq!(
            get(&gw, "/corp", &valid).await.status,
            200,
            "{:?}",
            signer.alg
        );
        let expired = signer.sign(&claims(|c| c["exp"] = json!(now() - 60)));
        assert_invalid(&get(&gw, "/corp", &expired).await, "expired", &expired);
        let forged = swapped_payload(&valid, &claims(|c| c["sub"] = json!("root")));
        assert_invalid(&get(&gw, "/corp", &forged).await, "bad signature", &forged);
    }
    let der_public = openssl(&["rsa", "-in", "rsa.pem", "-pubout", "-outform", "DER"]);
    for key in [&pem[..], &der_public[..], &n[..]] {
        let token = confused("rsa-1", key, &claims(|_| {}));
        assert_invalid(&get(&gw, "/corp", &token).await, "unknown key", &token);
    }
    assert_eq!(upstream.seen().len(), 2);
}
