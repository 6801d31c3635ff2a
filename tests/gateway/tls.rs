//! TLS on both sides over real loopback sockets, with certificates generated at test time:
//! HTTP/1.1 and h2 over a TLS listener, SNI, key formats, rotation without touching open
//! connections, a bad certificate refused, client certificates, an HTTPS upstream behind a
//! private CA (with HTTP/2 and mTLS), and clients that never speak TLS.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::support::*;

/// A private CA that signs server and client certificates.
pub struct Pki {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key, both PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn server(&self, names: &[&str]) -> Leaf {
        self.leaf(names, names[0], ExtendedKeyUsagePurpose::ServerAuth, None)
    }

    fn client(&self, common_name: &str) -> Leaf {
        self.leaf(&[], common_name, ExtendedKeyUsagePurpose::ClientAuth, None)
    }

    fn leaf(
        &self,
        names: &[&str],
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
        key: Option<KeyPair>,
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages.push(usage);
        let key = key.unwrap_or_else(|| KeyPair::generate().unwrap());
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A TLS listener config in front of `upstream`; `tls_extra` is appended to the `tls` block.
fn tls_config(upstream: &str, tls_extra: &str, route_extra: &str) -> String {
    format!(
        r#"listeners:
  - address: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: certs/a.pem, key: certs/a.key }}
{tls_extra}upstreams:
  backend: {{ url: '{upstream}' }}
routes:
  - name: r.x
    method: GET
    path: /x
    upstream: backend
{route_extra}"#
    )
}

fn client_config(
    ca_pem: &str,
    identity: Option<&Leaf>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(schemagate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    TlsConnector::from(config).connect(name, tcp).await
}

/// The common name of the certificate the server presented.
fn served_name(stream: &TlsStream<TcpStream>) -> String {
    let cert = &stream.get_ref().1.peer_certificates().unwrap()[0];
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
    let name = parsed.subject().iter_common_name().next().unwrap();
    name.as_str().unwrap().to_string()
}

/// One request per call on an open TLS connection, HTTP/1.1 or h2 by the negotiated ALPN.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn over(stream: TlsStream<TcpStream>) -> Result<Sender, hyper::Error> {
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        if h2 {
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(connection);
            Ok(Sender::H2(sender))
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(connection);
            Ok(Sender::H1(sender))
        }
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Got, hyper::Error> {
        let response = match self {
            Sender::H1(sender) => sender.send_request(request).await?,
            Sender::H2(sender) => sender.send_request(request).await?,
        };
        let version = response.version();
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        let got = Got {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        };
        assert!(version == Version::HTTP_11 || version == Version::HTTP_2);
        Ok(got)
    }
}

fn get(path: &str) -> Request<Full<Bytes>> {
    request("GET", path, &[], b"")
}

/// Sends one GET on a new TLS connection; an error means the handshake or request failed.
async fn try_get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<Got, String> {
    let stream = connect(addr, config, "localhost")
        .await
        .map_err(|e| e.to_string())?;
    let mut sender = Sender::over(stream).await.map_err(|e| e.to_string())?;
    sender.send(get(path)).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn serves_http1_and_h2_over_tls_and_says_https_upstream() {
    let pki = Pki::new("test ca");
    let leaf = pki.server(&["localhost"]);
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::start(
        &tls_config(&upstream.url(), "", ""),
        &[("certs/a.pem", &leaf.cert), ("certs/a.key", &leaf.key)],
    )
    .await;

    for (alpn, version) in [(&b"http/1.1"[..], "HTTP/1.1"), (&b"h2"[..], "HTTP/2")] {
        let config = client_config(&pki.ca_pem, None, &[alpn]);
        let stream = connect(gw.addr, config, "localhost").await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn), "{version}");
        let mut sender = Sender::over(stream).await.unwrap();
        let got = sender.send(get("/x")).await.unwrap();
        assert_eq!(got.status, 200, "{version}");
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.headers["x-forwarded-proto"], "https");
    }
}

#[tokio::test]
async fn sni_picks_the_certificate_and_the_first_is_the_default() {
    let pki = Pki::new("test ca");
    let a = pki.server(&["a.test", "localhost"]);
    let b = pki.server(&["*.b.test"]);
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::start(
        &tls_config(
            &upstream.url(),
            "        - { cert: certs/b.pem, key: certs/b.key }\n",
            "",
        ),
        &[
            ("certs/a.pem", &a.cert),
            ("certs/a.key", &a.key),
            ("certs/b.pem", &b.cert),
            ("certs/b.key", &b.key),
        ],
    )
    .await;
    let config = client_config(&pki.ca_pem, None, &[b"http/1.1"]);
    let stream = connect(gw.addr, config.clone(), "api.b.test")
        .await
        .unwrap();
    assert_eq!(served_name(&stream), "*.b.test");
    let stream = connect(gw.addr, config.clone(), "a.test").await.unwrap();
    assert_eq!(served_name(&stream), "a.test");
    // A name no certificate covers gets the first one, which the client then rejects.
    let refused = connect(gw.addr, config, "other.test").await;
    assert!(refused.is_err(), "a certificate for other.test was served");
}

/// The gateway loads RSA (PKCS#1) and EC (SEC1) keys as well as PKCS#8 ones. openssl turns
/// generated keys into those encodings.
#[tokio::test]
#[ignore = "needs the openssl CLI: ./test.sh installs it and runs ignored tests"]
async fn loads_pkcs8_rsa_and_ec_private_keys() {
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl is installed by test.sh");
        assert!(status.success(), "openssl {args:?}");
    };
    let pki = Pki::new("test ca");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "rsa8.pem",
    ]);
    openssl(&[
        "pkey",
        "-in",
        "rsa8.pem",
        "-traditional",
        "-out",
        "rsa1.pem",
    ]);
    let ec = pki.server(&["localhost"]);
    std::fs::write(dir.path().join("ec8.pem"), &ec.key).unwrap();
    openssl(&["ec", "-in", "ec8.pem", "-out", "sec1.pem"]);
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    let rsa_key = KeyPair::from_pem(&read("rsa8.pem")).unwrap();
    let rsa = pki.leaf(
        &["localhost"],
        "rsa",
        ExtendedKeyUsagePurpose::ServerAuth,
        Some(rsa_key),
    );

    let upstream = Upstream::start(Answer::default()).await;
    for (cert, key, marker) in [
        (&rsa.cert, read("rsa1.pem"), "BEGIN RSA PRIVATE KEY"),
        (&ec.cert, read("sec1.pem"), "BEGIN EC PRIVATE KEY"),
        (&ec.cert, ec.key.clone(), "BEGIN PRIVATE KEY"),
    ] {
        assert!(key.contains(marker), "{key}");
        let gw = TestGateway::start(
            &tls_config(&upstream.url(), "", ""),
            &[("certs/a.pem", cert), ("certs/a.key", &key)],
        )
        .await;
        let config = client_config(&pki.ca_pem, None, &[b"http/1.1"]);
        let got = try_get(gw.addr, config, "/x").await.unwrap();
        assert_eq!(got.status, 200, "{marker}");
    }
}

#[tokio::test]
async fn a_renewed_certificate_serves_new_connections_and_open_ones_keep_theirs() {
    let pki = Pki::new("test ca");
    let first = pki.leaf(
        &["localhost"],
        "first",
        ExtendedKeyUsagePurpose::ServerAuth,
        None,
    );
    let second = pki.leaf(
        &["localhost"],
        "second",
        ExtendedKeyUsagePurpose::ServerAuth,
        None,
    );
    let upstream = Upstream::start(Answer::default()).await;
    let (gw, reloading) = TestGateway::start_reloadable(
        &tls_config(&upstream.url(), "", ""),
        &[("certs/a.pem", &first.cert), ("certs/a.key", &first.key)],
    )
    .await;
    let config = client_config(&pki.ca_pem, None, &[b"http/1.1"]);
    let old = connect(gw.addr, config.clone(), "localhost").await.unwrap();
    assert_eq!(served_name(&old), "first");
    let mut old = Sender::over(old).await.unwrap();
    assert_eq!(old.send(get("/x")).await.unwrap().status, 200);

    let generation = reloading.generation();
    let certs = gw.dir().join("certs");
    std::fs::write(certs.join("a.key"), &second.key).unwrap();
    std::fs::write(certs.join("a.pem"), &second.cert).unwrap();
    reloading.wait_generation(generation + 1).await;

    let new = connect(gw.addr, config.clone(), "localhost").await.unwrap();
    assert_eq!(served_name(&new), "second");
    // The admin status says which certificate is live.
    let status = schemagate::admin::status(&gw.shared, None);
    let live = &status["listeners"][0]["tls"]["certificates"][0];
    assert_eq!(live["subject"], "CN=second", "{status}");
    assert_eq!(live["names"], serde_json::json!(["localhost"]));
    assert!(live["not_after"].as_i64().unwrap() > 1_700_000_000);
    let mut new = Sender::over(new).await.unwrap();
    assert_eq!(new.send(get("/x")).await.unwrap().status, 200);
    // The connection opened before the renewal still works, on its own certificate.
    assert_eq!(old.send(get("/x")).await.unwrap().status, 200);
}

#[tokio::test]
async fn a_bad_certificate_file_is_reported_and_the_old_one_keeps_serving() {
    let pki = Pki::new("test ca");
    let leaf = pki.server(&["localhost"]);
    let other = pki.server(&["localhost"]);
    let upstream = Upstream::start(Answer::default()).await;
    let (gw, reloading) = TestGateway::start_reloadable(
        &tls_config(&upstream.url(), "", ""),
        &[("certs/a.pem", &leaf.cert), ("certs/a.key", &leaf.key)],
    )
    .await;
    let config = client_config(&pki.ca_pem, None, &[b"http/1.1"]);

    // A truncated certificate, then a key that belongs to another certificate.
    let certs = gw.dir().join("certs");
    std::fs::write(certs.join("a.pem"), &leaf.cert[..leaf.cert.len() / 2]).unwrap();
    reloading.wait_failures(1).await;
    assert_eq!(
        try_get(gw.addr, config.clone(), "/x").await.unwrap().status,
        200
    );
    std::fs::write(certs.join("a.pem"), &leaf.cert).unwrap();
    std::fs::write(certs.join("a.key"), &other.key).unwrap();
    // Reloads may see the files half written first; wait for the one that sees both.
    let key_refused = || {
        let errors = reloading.reloader.status().errors;
        errors
            .iter()
            .any(|e| e.contains("listeners[0].tls") && e.contains("do not match"))
    };
    reloading.wait_until(|| async { key_refused() }).await;
    assert_eq!(try_get(gw.addr, config, "/x").await.unwrap().status, 200);
    assert_eq!(reloading.generation(), 1);
}

#[tokio::test]
async fn required_client_certificates_are_checked_and_name_the_tenant() {
    let pki = Pki::new("test ca");
    let clients = Pki::new("client ca");
    let strangers = Pki::new("stranger ca");
    let leaf = pki.server(&["localhost"]);
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::start(
        &tls_config(
            &upstream.url(),
            "      client_auth: { ca: certs/clients.pem, mode: required }\n",
            "    tenant: { from: client_cert }\n    rate_limit: { quota: 1/min, burst: 1 }\n",
        ),
        &[
            ("certs/a.pem", &leaf.cert),
            ("certs/a.key", &leaf.key),
            ("certs/clients.pem", &clients.ca_pem),
        ],
    )
    .await;
    let acme = clients.client("acme");
    let globex = clients.client("globex");
    let as_client = |leaf: Option<&Leaf>| client_config(&pki.ca_pem, leaf, &[b"http/1.1"]);

    assert!(try_get(gw.addr, as_client(None), "/x").await.is_err());
    let stranger = strangers.client("acme");
    assert!(try_get(gw.addr, as_client(Some(&stranger)), "/x")
        .await
        .is_err());
    assert!(upstream.seen().is_empty());

    // Each certificate's subject is its own tenant, with its own bucket.
    let got = try_get(gw.addr, as_client(Some(&acme)), "/x")
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    let got = try_get(gw.addr, as_client(Some(&acme)), "/x")
        .await
        .unwrap();
    assert_envelope(&got, 429, "Too Many Requests");
    let got = try_get(gw.addr, as_client(Some(&globex)), "/x")
        .await
        .unwrap();
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn optional_client_certificates_admit_anonymous_clients() {
    let pki = Pki::new("test ca");
    let clients = Pki::new("client ca");
    let leaf = pki.server(&["localhost"]);
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::start(
        &tls_config(
            &upstream.url(),
            "      client_auth: { ca: certs/clients.pem, mode: optional }\n",
            "    tenant: { from: client_cert, missing: shared }\n",
        ),
        &[
            ("certs/a.pem", &leaf.cert),
            ("certs/a.key", &leaf.key),
            ("certs/clients.pem", &clients.ca_pem),
        ],
    )
    .await;
    let anonymous = client_config(&pki.ca_pem, None, &[b"h2"]);
    assert_eq!(try_get(gw.addr, anonymous, "/x").await.unwrap().status, 200);
    let acme = clients.client("acme");
    let known = client_config(&pki.ca_pem, Some(&acme), &[b"h2"]);
    assert_eq!(try_get(gw.addr, known, "/x").await.unwrap().status, 200);
    let stranger = Pki::new("stranger ca").client("acme");
    let refused = client_config(&pki.ca_pem, Some(&stranger), &[b"h2"]);
    assert!(try_get(gw.addr, refused, "/x").await.is_err());
    assert_eq!(upstream.seen().len(), 2);
}

/// A TLS upstream: records the HTTP version of each request, optionally requires a client
/// certificate from `client_ca`.
struct TlsUpstream {
    addr: SocketAddr,
    versions: Arc<Mutex<Vec<Version>>>,
}

impl TlsUpstream {
    async fn start(leaf: &Leaf, client_ca: Option<&str>) -> TlsUpstream {
        let chain: Vec<_> = CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(schemagate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    roots.add(cert.unwrap()).unwrap();
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    schemagate::tls::provider(),
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let versions = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&versions);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |request: Request<Incoming>| {
                        record.lock().unwrap().push(request.version());
                        // The body is read before answering, as a backend that parses it does.
                        async {
                            let read = request.into_body().collect().await;
                            let body: &'static [u8] = match read {
                                Ok(_) => br#"{"secure":true}"#,
                                Err(_) => br#"{"body":"broken"}"#,
                            };
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(body))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TlsUpstream { addr, versions }
    }
}

fn https_upstream_config(port: u16, tls: &str) -> String {
    format!(
        r#"listeners:
  - address: 127.0.0.1:0
defaults:
  timeouts: {{ connect: 2s, response_headers: 2s }}
upstreams:
  backend:
    url: https://localhost:{port}
    tls: {{ {tls} }}
routes:
  - name: r.x
    method: GET
    path: /x
    upstream: backend
"#
    )
}

#[tokio::test]
async fn forwards_to_an_https_upstream_behind_a_private_ca_over_http2() {
    let pki = Pki::new("upstream ca");
    let upstream = TlsUpstream::start(&pki.server(&["localhost"]), None).await;
    let gw = TestGateway::start(
        &https_upstream_config(upstream.addr.port(), "ca: certs/upstream-ca.pem"),
        &[("certs/upstream-ca.pem", &pki.ca_pem)],
    )
    .await;
    for _ in 0..3 {
        let got = send(gw.addr, get("/x")).await;
        assert_eq!(got.status, 200, "{:?}", got.body);
        assert_eq!(got.body, Bytes::from_static(br#"{"secure":true}"#));
    }
    // The upstream offered h2 by ALPN, so the pool speaks HTTP/2 to it.
    let versions = upstream.versions.lock().unwrap().clone();
    assert_eq!(versions, vec![Version::HTTP_2; 3]);
}

/// A streamed client body that breaks its limit while going to an HTTP/2 upstream gets the
/// same 413 as over HTTP/1, not a 502: hyper's HTTP/2 client reports only a reset stream, so
/// the cause comes from the body itself.
#[tokio::test]
async fn a_streamed_body_over_its_limit_to_an_h2_upstream_is_a_413() {
    let pki = Pki::new("upstream ca");
    let upstream = TlsUpstream::start(&pki.server(&["localhost"]), None).await;
    let config = https_upstream_config(upstream.addr.port(), "ca: certs/upstream-ca.pem")
        .replace("method: GET", "method: POST")
        + "    limits: { body: 1KiB }\n";
    let gw = TestGateway::start(&config, &[("certs/upstream-ca.pem", &pki.ca_pem)]).await;
    let chunk = "a".repeat(512);
    let mut raw = String::from(
        "POST /x HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
    );
    for _ in 0..8 {
        raw.push_str(&format!("200\r\n{chunk}\r\n"));
    }
    raw.push_str("0\r\n\r\n");
    let answer = send_raw(gw.addr, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""statusCode":413"#), "{answer}");
    // This upstream is spoken to over h2 (pinned by the test above); the stream was reset
    // before or after its service saw it, so it may have recorded nothing.
    assert!(upstream.versions.lock().unwrap().len() <= 1);
}

#[tokio::test]
async fn an_upstream_certificate_from_another_ca_is_a_502() {
    let pki = Pki::new("upstream ca");
    let impostor = Pki::new("impostor ca");
    let upstream = TlsUpstream::start(&impostor.server(&["localhost"]), None).await;
    let gw = TestGateway::start(
        &https_upstream_config(upstream.addr.port(), "ca: certs/upstream-ca.pem"),
        &[("certs/upstream-ca.pem", &pki.ca_pem)],
    )
    .await;
    let got = send(gw.addr, get("/x")).await;
    assert_envelope(&got, 502, "Bad Gateway");
    assert!(upstream.versions.lock().unwrap().is_empty());
}

#[tokio::test]
async fn upstream_mtls_presents_the_configured_client_certificate() {
    let pki = Pki::new("upstream ca");
    let gateway_ids = Pki::new("gateway client ca");
    let upstream = TlsUpstream::start(&pki.server(&["localhost"]), Some(&gateway_ids.ca_pem)).await;
    let identity = gateway_ids.client("schemagate");
    let with_cert = TestGateway::start(
        &https_upstream_config(
            upstream.addr.port(),
            "ca: certs/ca.pem, cert: certs/me.pem, key: certs/me.key",
        ),
        &[
            ("certs/ca.pem", &pki.ca_pem),
            ("certs/me.pem", &identity.cert),
            ("certs/me.key", &identity.key),
        ],
    )
    .await;
    assert_eq!(send(with_cert.addr, get("/x")).await.status, 200);

    let without = TestGateway::start(
        &https_upstream_config(upstream.addr.port(), "ca: certs/ca.pem"),
        &[("certs/ca.pem", &pki.ca_pem)],
    )
    .await;
    assert_envelope(&send(without.addr, get("/x")).await, 502, "Bad Gateway");
    assert_eq!(upstream.versions.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn plaintext_and_silent_clients_on_the_tls_port_disturb_no_one() {
    let pki = Pki::new("test ca");
    let leaf = pki.server(&["localhost"]);
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::start(
        &tls_config(&upstream.url(), "      handshake_timeout: 300ms\n", ""),
        &[("certs/a.pem", &leaf.cert), ("certs/a.key", &leaf.key)],
    )
    .await;
    // A client that never sends a byte is dropped after the handshake timeout.
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    // A plaintext HTTP request is not TLS: the connection is closed without an HTTP answer.
    let mut plain = TcpStream::connect(gw.addr).await.unwrap();
    plain
        .write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // Meanwhile a TLS client is served.
    let config = client_config(&pki.ca_pem, None, &[b"http/1.1"]);
    assert_eq!(try_get(gw.addr, config, "/x").await.unwrap().status, 200);

    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "plaintext connection left open");
    assert!(
        !String::from_utf8_lossy(&out).contains("HTTP/1.1"),
        "{out:?}"
    );
    let started = std::time::Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "silent connection held past the handshake timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(upstream.seen().len(), 1);
    let metrics = gw.shared.metrics.encode();
    for result in ["error", "timeout"] {
        let line = format!("schemagate_tls_handshake_failures_total{{result=\"{result}\"}} 1");
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
}

#[tokio::test]
async fn tls_config_errors_name_the_file_and_key() {
    let pki = Pki::new("test ca");
    let a = pki.server(&["localhost"]);
    let b = pki.server(&["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("certs/a.pem", &a.cert);
    write("certs/a.key", &b.key);
    write("certs/garbage.pem", "not a certificate\n");
    let cases = [
        (
            tls_config("http://127.0.0.1:9", "", ""),
            "listeners[0].tls",
            "do not match",
        ),
        (
            tls_config("http://127.0.0.1:9", "", "").replace("certs/a.pem", "certs/missing.pem"),
            "listeners[0].tls",
            "cannot read",
        ),
        (
            tls_config("http://127.0.0.1:9", "", "").replace("certs/a.pem", "certs/garbage.pem"),
            "listeners[0].tls",
            "no CERTIFICATE",
        ),
        (
            https_upstream_config(9, "cert: certs/a.pem"),
            "upstreams.backend.tls",
            "both `cert` and `key`",
        ),
        (
            tls_config("http://127.0.0.1:9", "", "").replace(
                "url: 'http://127.0.0.1:9'",
                "url: 'http://127.0.0.1:9', tls: {}",
            ),
            "upstreams.backend.tls",
            "https:// upstreams only",
        ),
    ];
    for (yaml, key, needle) in cases {
        let config = dir.path().join("gateway.yaml");
        std::fs::write(&config, &yaml).unwrap();
        let errors = schemagate::Snapshot::load(&config).unwrap_err();
        let text = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            text.contains(key) && text.contains(needle) && text.contains("gateway.yaml:"),
            "{key} / {needle}:\n{text}"
        );
    }
}

#[tokio::test]
async fn certificates_rotate_under_load_without_a_failed_request() {
    let pki = Pki::new("test ca");
    let leaves: Vec<Leaf> = (0..4)
        .map(|i| {
            pki.leaf(
                &["localhost"],
                &format!("gen{i}"),
                ExtendedKeyUsagePurpose::ServerAuth,
                None,
            )
        })
        .collect();
    let upstream = Upstream::start(Answer::default()).await;
    // Certificate and key in one file, so each rotation is a single atomic rename.
    let bundle = |leaf: &Leaf| format!("{}{}", leaf.cert, leaf.key);
    let (gw, reloading) = TestGateway::start_reloadable(
        &tls_config(&upstream.url(), "", "").replace("certs/a.key", "certs/a.pem"),
        &[("certs/a.pem", &bundle(&leaves[0]))],
    )
    .await;
    let config = client_config(&pki.ca_pem, None, &[b"http/1.1", b"h2"]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (config, stop, addr) = (config.clone(), Arc::clone(&stop), gw.addr);
        clients.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut names) =
                (0, Vec::new(), std::collections::BTreeSet::new());
            // Bounded: at most 2 000 connections per client.
            for _ in 0..2_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match connect(addr, config.clone(), "localhost").await {
                    Ok(stream) => {
                        names.insert(served_name(&stream));
                        let result = async {
                            let mut sender = Sender::over(stream).await?;
                            sender.send(get("/x")).await
                        }
                        .await;
                        match result {
                            Ok(got) if got.status == 200 => ok += 1,
                            other => failed.push(format!("{other:?}")),
                        }
                    }
                    Err(error) => failed.push(error.to_string()),
                }
            }
            (ok, failed, names)
        }));
    }
    let certs = gw.dir().join("certs");
    for (i, leaf) in leaves.iter().enumerate().skip(1) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let temp = certs.join("a.pem.new");
        std::fs::write(&temp, bundle(leaf)).unwrap();
        std::fs::rename(&temp, certs.join("a.pem")).unwrap();
        reloading.wait_generation(i as u64 + 1).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut names) = (0, std::collections::BTreeSet::new());
    for client in clients {
        let (done, failed, seen) = client.await.unwrap();
        assert!(failed.is_empty(), "{failed:?}");
        ok += done;
        names.extend(seen);
    }
    assert!(ok > 0);
    // Every generation's certificate was served to some new connection.
    assert_eq!(names.len(), 4, "{names:?}");
}

#[tokio::test]
async fn a_reload_that_moves_a_tls_listener_keeps_the_bound_port_on_tls() {
    let pki = Pki::new("test ca");
    let leaf = pki.server(&["localhost"]);
    let upstream = Upstream::start(Answer::default()).await;
    let yaml = tls_config(&upstream.url(), "", "");
    let (gw, reloading) = TestGateway::start_reloadable(
        &yaml,
        &[("certs/a.pem", &leaf.cert), ("certs/a.key", &leaf.key)],
    )
    .await;
    // The new config names another address (applied only on restart).
    let moved = yaml.replace("address: 127.0.0.1:0", "address: 127.0.0.1:1");
    let path = gw.dir().join("gateway.yaml");
    std::fs::write(path.with_extension("new"), moved).unwrap();
    std::fs::rename(path.with_extension("new"), &path).unwrap();
    reloading.wait_generation(2).await;
    assert!(!reloading.reloader.status().restart_required.is_empty());
    // The bound port still speaks TLS only.
    let config = client_config(&pki.ca_pem, None, &[b"http/1.1"]);
    assert_eq!(try_get(gw.addr, config, "/x").await.unwrap().status, 200);
    let answer = send_raw(
        gw.addr,
        b"GET /x HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(
        !answer.starts_with("HTTP/1.1"),
        "served plaintext: {answer}"
    );
    assert_eq!(upstream.seen().len(), 1);
}
