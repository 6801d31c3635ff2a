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

const ROUTES: &str = r#"  - name: corp
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

fn config(upstream: &str, providers: &str) -> String {
    format!("{}{providers}", backend_config(upstream, ROUTES))
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

    // No token, or not a bearer one: the route's 401 for missing credentials, with a bare
    // `Bearer` challenge (RFC 9110 §15.5.2; no error code for missing credentials, RFC 6750
    // §3.1).
    let got = send(gw.addr, request("GET", "/corp", &[], b"")).await;
    assert_envelope(&got, 401, "Unauthorized");
    assert_eq!(got.headers["www-authenticate"], "Bearer");
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

/// The issuer's JWK Set endpoint: a real HTTP server on 127.0.0.1 that serves whatever set
/// the test gives it and counts the fetches; `stop` closes it and every connection.
pub struct JwksServer {
    pub addr: std::net::SocketAddr,
    body: std::sync::Arc<std::sync::Mutex<String>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl JwksServer {
    pub async fn start(set: String) -> JwksServer {
        JwksServer::start_on(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            set,
        )
    }

    pub fn start_on(listener: tokio::net::TcpListener, set: String) -> JwksServer {
        use std::sync::atomic::Ordering;
        let addr = listener.local_addr().unwrap();
        let body = std::sync::Arc::new(std::sync::Mutex::new(set));
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (serving, counting, held) = (body.clone(), hits.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (serving, counting) = (serving.clone(), counting.clone());
                let service = hyper::service::service_fn(move |request: http::Request<_>| {
                    let _: &hyper::body::Incoming = request.body();
                    counting.fetch_add(1, Ordering::SeqCst);
                    let set = serving.lock().unwrap().clone();
                    let found = request.uri().path() == "/.well-known/jwks.json";
                    async move {
                        let mut response = http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(if found { set } else { String::new() }),
                        ));
                        if !found {
                            *response.status_mut() = http::StatusCode::NOT_FOUND;
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let connection = tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
                held.lock().unwrap().push(connection);
            }
        });
        tasks.lock().unwrap().push(accept);
        JwksServer {
            addr,
            body,
            hits,
            tasks,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    pub fn set(&self, set: String) {
        *self.body.lock().unwrap() = set;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The issuer goes down: the port closes and open connections are cut.
    pub fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

fn remote_providers(url: &str, extra: &str) -> String {
    format!(
        "jwt:\n  - name: corp\n    issuer: https://id.example.test/\n    audiences: [conversations-api]\n    jwks_url: {url}\n{extra}  - name: shared\n    issuer: https://id.example.test/\n    secret_file: keys/hs256.key\n"
    )
}

/// A gateway whose `corp` provider fetches from `issuer` (`extra`: more provider keys;
/// `top`: more top-level config).
async fn remote_gateway(
    upstream: &Upstream,
    issuer: &JwksServer,
    extra: &str,
    top: &str,
) -> TestGateway {
    let secret = String::from_utf8_lossy(SECRET).to_string();
    let yaml = format!(
        "{}{top}",
        config(&upstream.url(), &remote_providers(&issuer.url(), extra))
    );
    TestGateway::start(&yaml, &[("keys/hs256.key", &secret)]).await
}

/// Waits (up to 10 s) until `token` is accepted on `/corp`.
async fn wait_accepted(gw: &TestGateway, token: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = get(gw, "/corp", token).await;
        if got.status == 200 {
            return;
        }
        assert_invalid(&got, "unknown key", token);
        assert!(tokio::time::Instant::now() < deadline, "never accepted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The issuer adds a key and signs with it: accepted at the first token, without a restart.
/// A stream of made-up `kid`s then costs the issuer no more fetches (the floor is a minute).
#[tokio::test]
async fn jwks_url_rotation_and_the_unknown_kid_floor() {
    let upstream = Upstream::start(Answer::default()).await;
    let old = Signer::es256("2026-01");
    let issuer = JwksServer::start(jwks(&[&old])).await;
    let gw = remote_gateway(&upstream, &issuer, "", "").await;
    wait_accepted(&gw, &old.sign(&claims(|_| {}))).await;
    assert_eq!(issuer.hits(), 1);

    let new = Signer::eddsa("2026-02");
    issuer.set(jwks(&[&old, &new]));
    let token = new.sign(&claims(|_| {}));
    let got = get(&gw, "/corp", &token).await;
    assert_eq!(
        got.status,
        200,
        "{:?} hits {} outcome {:?}",
        got.body,
        issuer.hits(),
        gw.shared.snapshot.load().jwt[0]
            .remote
            .as_ref()
            .unwrap()
            .outcome
            .lock()
            .unwrap()
    );
    assert_eq!(issuer.hits(), 2, "one fetch for the new kid");
    assert_eq!(
        get(&gw, "/corp", &old.sign(&claims(|_| {}))).await.status,
        200
    );

    // Made-up kids, signed by a key the issuer never published, several at a time.
    let stranger = Signer::es256("x");
    let mut waiting = Vec::new();
    for i in 0..60 {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(format!("random-{i}"));
        let token = jsonwebtoken::encode(&header, &claims(|_| {}), &stranger.key).unwrap();
        let addr = gw.addr;
        waiting.push(tokio::spawn(async move {
            let auth = format!("Bearer {token}");
            (
                send(
                    addr,
                    request("GET", "/corp", &[("authorization", &auth)], b""),
                )
                .await,
                token,
            )
        }));
    }
    for task in waiting {
        let (got, token) = task.await.unwrap();
        assert_invalid(&got, "unknown key", &token);
    }
    assert!(
        issuer.hits() <= 3,
        "{} fetches for 60 unknown kids",
        issuer.hits()
    );
    assert_eq!(get(&gw, "/corp", &token).await.status, 200);
}

/// The issuer goes down: the last good keys keep working while every refresh fails.
#[tokio::test]
async fn jwks_url_down_keeps_the_last_good_keys() {
    let upstream = Upstream::start(Answer::default()).await;
    let key = Signer::es256("k1");
    let issuer = JwksServer::start(jwks(&[&key])).await;
    let gw = remote_gateway(&upstream, &issuer, "    refresh: 1s\n", "").await;
    let token = key.sign(&claims(|_| {}));
    wait_accepted(&gw, &token).await;
    // A refresh a second: it reaches the issuer while up.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while issuer.hits() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no refresh");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    issuer.stop();
    // Several refreshes fail meanwhile.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(get(&gw, "/corp", &token).await.status, 200);
    let fresh = key.sign(&claims(|c| c["sub"] = json!("another")));
    assert_eq!(get(&gw, "/corp", &fresh).await.status, 200);
    let provider = &gw.shared.snapshot.load().jwt[0];
    let remote = provider.remote.as_ref().unwrap();
    assert!(
        remote
            .fetched_failed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    assert!(remote.outcome.lock().unwrap().error.is_some());
}

/// Through the binary: `check` fails, naming the key, when the JWK Set cannot be had; `serve`
/// starts anyway, answers 401 ("unknown key") and retries until the issuer is up.
#[tokio::test]
async fn check_fails_and_serve_retries_while_the_issuer_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let url = format!("http://{addr}/.well-known/jwks.json");
    let upstream = Upstream::start(Answer::default()).await;
    let yaml = format!(
        "listeners:\n  - address: ${{SCHEMAGATE_LISTEN}}\nadmin:\n  address: ${{SCHEMAGATE_ADMIN}}\nupstreams:\n  backend: {{ url: '{}' }}\nroutes:\n  - {{ name: corp, method: GET, path: /corp, upstream: backend, auth: {{ jwt: corp }} }}\n{}",
        upstream.url(),
        remote_providers(&url, "")
    );
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/hs256.key"), SECRET).unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), yaml).unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_schemagate"))
        .args(["check", "--config", "gateway.yaml"])
        .current_dir(dir.path())
        .env("SCHEMAGATE_LISTEN", "127.0.0.1:0")
        .env("SCHEMAGATE_ADMIN", "127.0.0.1:0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "gateway.yaml:13: jwt[0].jwks_url: cannot fetch the JWK Set from {url}"
        )),
        "{stderr}"
    );

    let served = Served::start(dir.path(), "gateway.yaml", &[]);
    let key = Signer::es256("k1");
    let token = key.sign(&claims(|_| {}));
    let auth = format!("Bearer {token}");
    let got = send(
        served.addr,
        request("GET", "/corp", &[("authorization", &auth)], b""),
    )
    .await;
    assert_invalid(&got, "unknown key", &token);
    // The issuer comes up on the configured port: the next retry (every 5 s without keys)
    // finds it.
    let issuer = JwksServer::start_on(
        tokio::net::TcpListener::bind(addr).await.unwrap(),
        jwks(&[&key]),
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let got = send(
            served.addr,
            request("GET", "/corp", &[("authorization", &auth)], b""),
        )
        .await;
        if got.status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never fetched");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(issuer.hits() >= 1);
    // Off the test's one runtime thread, which also serves the issuer.
    let cwd = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_schemagate"))
            .args(["check", "--config", "gateway.yaml"])
            .current_dir(cwd)
            .env("SCHEMAGATE_LISTEN", "127.0.0.1:0")
            .env("SCHEMAGATE_ADMIN", "127.0.0.1:0")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A verified token is cached until its `exp`, but a key the issuer withdraws stops verifying
/// at the next fetch: a new key set empties the cache.
#[tokio::test]
async fn a_withdrawn_key_stops_verifying_despite_the_cache() {
    let upstream = Upstream::start(Answer::default()).await;
    let old = Signer::es256("old");
    let new = Signer::es256("new");
    let issuer = JwksServer::start(jwks(&[&old, &new])).await;
    let gw = remote_gateway(&upstream, &issuer, "    refresh: 1s\n", "").await;
    let token = old.sign(&claims(|_| {}));
    wait_accepted(&gw, &token).await;
    assert_eq!(get(&gw, "/corp", &token).await.status, 200);
    let provider = std::sync::Arc::clone(&gw.shared.snapshot.load().jwt[0]);
    assert_eq!(provider.cached(), 1, "the token is cached once verified");
    issuer.set(jwks(&[&new]));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = get(&gw, "/corp", &token).await;
        if got.status == 401 {
            assert_invalid(&got, "unknown key", &token);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still accepted");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        get(&gw, "/corp", &new.sign(&claims(|_| {}))).await.status,
        200
    );
}

async fn metrics(admin: std::net::SocketAddr) -> String {
    let got = send(admin, request("GET", "/metrics", &[], b"")).await;
    String::from_utf8(got.body.to_vec()).unwrap()
}

/// `/status` shows each provider's keys (kid, algorithms, fetched at) and its last fetch;
/// `/metrics` counts checks by result and reason, fetches, and the keys' age.
#[tokio::test]
async fn status_and_metrics_show_providers_keys_and_checks() {
    let upstream = Upstream::start(Answer::default()).await;
    let key = Signer::eddsa("ed-7");
    let issuer = JwksServer::start(jwks(&[&key])).await;
    let gw = remote_gateway(&upstream, &issuer, "", "admin:\n  address: 127.0.0.1:0\n").await;
    let secret = String::from_utf8_lossy(SECRET).to_string();
    let admin = gw.admin.unwrap();
    let token = key.sign(&claims(|_| {}));
    wait_accepted(&gw, &token).await;
    assert_eq!(get(&gw, "/corp", &token).await.status, 200);
    let expired = key.sign(&claims(|c| c["exp"] = json!(now() - 600)));
    assert_eq!(get(&gw, "/corp", &expired).await.status, 401);
    assert_eq!(get(&gw, "/scoped", &token).await.status, 403);

    let status = send(admin, request("GET", "/status", &[], b""))
        .await
        .json();
    let corp = &status["jwt"][0];
    assert_eq!(corp["name"], "corp");
    assert_eq!(corp["source"], "jwks_url");
    assert_eq!(
        corp["keys"],
        json!([{"kid": "ed-7", "algorithms": ["EdDSA"]}])
    );
    assert!(corp["fetched_at"].as_u64().unwrap() > 0);
    assert_eq!(corp["last_fetch"]["ok"], 1);
    assert_eq!(corp["last_fetch"]["error"], Value::Null);
    let shared = &status["jwt"][1];
    assert_eq!(shared["source"], "secret_file");
    assert_eq!(shared["keys"][0]["kid"], Value::Null);
    assert!(
        !status.to_string().contains(&secret),
        "the secret is never shown"
    );

    let text = metrics(admin).await;
    for line in [
        r#"schemagate_jwt_verifications_total{provider="corp",result="ok",reason="verified"} 1"#,
        r#"schemagate_jwt_verifications_total{provider="corp",result="rejected",reason="expired"} 1"#,
        r#"schemagate_jwt_verifications_total{provider="corp",result="rejected",reason="insufficient_scope"} 1"#,
        r#"schemagate_jwks_fetches{provider="corp",result="ok"} 1"#,
        r#"schemagate_jwks_fetches{provider="corp",result="failed"} 0"#,
        r#"schemagate_jwt_keys{provider="corp"} 1"#,
        r#"schemagate_jwt_keys{provider="shared"} 1"#,
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    assert!(text.contains(r#"schemagate_jwks_age_seconds{provider="corp"} "#));
    // The same token again is a cache hit.
    assert_eq!(get(&gw, "/corp", &token).await.status, 200);
    let text = metrics(admin).await;
    assert!(text.contains(
        r#"schemagate_jwt_verifications_total{provider="corp",result="ok",reason="cached"}"#
    ));
}

/// `schemagate openapi` describes a JWT route's security as an HTTP bearer scheme with
/// `bearerFormat: JWT`, and lists its 401 and (with scopes) 403 answers.
#[test]
fn openapi_exports_the_jwt_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let key = Signer::es256("k1");
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/jwks.json"), jwks(&[&key])).unwrap();
    std::fs::write(dir.path().join("keys/hs256.key"), SECRET).unwrap();
    let yaml = config("http://127.0.0.1:1", PROVIDERS).replace("ES256, EdDSA, RS256", "ES256");
    std::fs::write(dir.path().join("gateway.yaml"), yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_schemagate"))
        .args(["openapi", "--config", "gateway.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let scheme = &doc["components"]["securitySchemes"]["jwt"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(scheme["bearerFormat"], "JWT");
    let scoped = &doc["paths"]["/scoped"]["get"];
    assert_eq!(scoped["security"], json!([{"jwt": []}]));
    assert!(scoped["responses"].get("401").is_some(), "{scoped}");
    assert!(scoped["responses"].get("403").is_some(), "{scoped}");
    assert!(doc["paths"]["/corp"]["get"]["responses"]
        .get("403")
        .is_none());
}

/// Writes `text` to `path` the way editors do: a temp file renamed over the original.
fn write_by_rename(path: &std::path::Path, text: &str) {
    let temp = path.with_extension("tmp-write");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// `jwt:` reloads like the rest: a rotated `jwks_file` is watched and applies; a config
/// change that leaves a `jwks_url` provider as it was keeps its keys (no fetch, no 401 gap);
/// a changed one is fetched before the new config takes traffic.
#[tokio::test]
async fn jwt_config_and_key_files_reload() {
    let upstream = Upstream::start(Answer::default()).await;
    let first = Signer::es256("f1");
    let second = Signer::eddsa("f2");
    let remote_key = Signer::es256("r1");
    let issuer = JwksServer::start(jwks(&[&remote_key])).await;
    let secret = String::from_utf8_lossy(SECRET).to_string();
    let providers = |url: &str| {
        format!(
            "{PROVIDERS}  - name: remote\n    issuer: https://id.example.test/\n    jwks_url: {url}\n"
        )
    };
    let routes = format!(
        "{ROUTES}  - {{ name: remote, method: GET, path: /remote, upstream: backend, auth: {{ jwt: remote }} }}\n"
    );
    let yaml = format!(
        "{}{}",
        backend_config(&upstream.url(), &routes),
        providers(&issuer.url())
    );
    let (gw, reloading) = TestGateway::start_reloadable(
        &yaml,
        &[
            ("keys/jwks.json", &jwks(&[&first])),
            ("keys/hs256.key", &secret),
        ],
    )
    .await;
    let remote_token = remote_key.sign(&claims(|_| {}));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while get(&gw, "/remote", &remote_token).await.status != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never fetched");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let fetched = issuer.hits();
    let old = first.sign(&claims(|_| {}));
    assert_eq!(get(&gw, "/corp", &old).await.status, 200);

    // The issuer rotates the file: the old key goes, the new one comes.
    write_by_rename(&gw.dir().join("keys/jwks.json"), &jwks(&[&second]));
    reloading.wait_generation(2).await;
    let new = second.sign(&claims(|_| {}));
    assert_eq!(get(&gw, "/corp", &new).await.status, 200);
    assert_invalid(&get(&gw, "/corp", &old).await, "unknown key", &old);
    // The unchanged `jwks_url` provider kept its keys: no fetch, no gap.
    assert_eq!(get(&gw, "/remote", &remote_token).await.status, 200);
    assert_eq!(issuer.hits(), fetched);

    // A new issuer URL is fetched before the new config serves.
    let moved = JwksServer::start(jwks(&[&remote_key])).await;
    let yaml = std::fs::read_to_string(gw.dir().join("gateway.yaml"))
        .unwrap()
        .replace(&issuer.url(), &moved.url());
    write_by_rename(&gw.dir().join("gateway.yaml"), &yaml);
    reloading.wait_generation(3).await;
    assert_eq!(moved.hits(), 1);
    assert_eq!(get(&gw, "/remote", &remote_token).await.status, 200);
}

/// `tenant: { from: claim }` keys a limit shared through Redis: two gateways, one bucket per
/// verified tenant.
#[tokio::test]
#[ignore = "needs redis-server: ./test.sh installs it and runs ignored tests"]
async fn claim_tenants_share_a_redis_limit() {
    let redis = crate::redis_server::RedisServer::start();
    let upstream = Upstream::start(Answer::default()).await;
    let key = Signer::es256("k1");
    let routes = "  - name: shared\n    method: GET\n    path: /corp\n    upstream: backend\n    auth: { jwt: corp }\n    tenant: { from: claim, name: org.id }\n    rate_limit: { quota: 1/h, burst: 2, store: redis }\n";
    let yaml = format!(
        "{}redis:\n  url: {}\n  timeout: 1s\njwt:\n  - name: corp\n    issuer: https://id.example.test/\n    jwks_file: keys/jwks.json\n",
        backend_config(&upstream.url(), routes),
        redis.url()
    );
    let set = jwks(&[&key]);
    let one = TestGateway::start(&yaml, &[("keys/jwks.json", &set)]).await;
    let two = TestGateway::start(&yaml, &[("keys/jwks.json", &set)]).await;
    let acme = key.sign(&claims(|_| {}));
    let globex = key.sign(&claims(|c| c["org"]["id"] = json!("globex")));
    assert_eq!(get(&one, "/corp", &acme).await.status, 200);
    assert_eq!(get(&two, "/corp", &acme).await.status, 200);
    assert_envelope(&get(&one, "/corp", &acme).await, 429, "Too Many Requests");
    assert_envelope(&get(&two, "/corp", &acme).await, 429, "Too Many Requests");
    assert_eq!(get(&two, "/corp", &globex).await.status, 200);
}
