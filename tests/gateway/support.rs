//! Test fixture: a recording upstream, a gateway on 127.0.0.1:0 from a temp config dir, and a
//! small HTTP/1.1 client. Everything runs over real loopback sockets.

use std::convert::Infallible;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use schemagate::{Gateway, Snapshot};

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and raw query exactly as received.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body arrived whole (a cut or malformed body is recorded with what arrived).
    pub body_ok: bool,
}

/// What the recording upstream answers.
#[derive(Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: &'static [u8],
    pub delay: Duration,
}

impl Default for Answer {
    fn default() -> Self {
        Answer {
            status: 200,
            headers: vec![("content-type", "application/json")],
            body: br#"{"ok":true}"#,
            delay: Duration::ZERO,
        }
    }
}

/// A real HTTP server on 127.0.0.1:0 that records every request.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    open: Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    pub async fn start(answer: Answer) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = Arc::clone(&connections);
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let gauge = Arc::clone(&open);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                gauge.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let closed = Arc::clone(&gauge);
                let record = Arc::clone(&record);
                let answer = answer.clone();
                let service = service_fn(move |request: Request<Incoming>| {
                    let record = Arc::clone(&record);
                    let answer = answer.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes());
                        record.lock().unwrap().push(Seen {
                            method: parts.method.to_string(),
                            target: parts.uri.to_string(),
                            headers: parts.headers,
                            body_ok: body.is_ok(),
                            body: body.unwrap_or_default(),
                        });
                        tokio::time::sleep(answer.delay).await;
                        let mut response =
                            Response::new(Full::new(Bytes::from_static(answer.body)));
                        *response.status_mut() = StatusCode::from_u16(answer.status).unwrap();
                        for (name, value) in &answer.headers {
                            response.headers_mut().append(*name, value.parse().unwrap());
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    closed.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        Upstream {
            addr,
            seen,
            connections,
            open,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many TCP connections the upstream has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many of those connections are open now (served until the gateway closes them).
    pub fn open_connections(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A port that accepts connections and never answers (bounded by the test's own timeouts).
pub async fn silent_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// A loopback port with nothing listening on it.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A running gateway and the temp dir holding its config.
pub struct TestGateway {
    pub addr: SocketAddr,
    /// The admin listener, when the config has one.
    pub admin: Option<SocketAddr>,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<bool>,
    pub shared: std::sync::Arc<schemagate::proxy::Shared>,
}

/// A gateway's reload machinery, as a test drives it.
pub struct Reloading {
    pub reloader: std::sync::Arc<schemagate::reload::Reloader>,
    _watch: schemagate::reload::Watch,
    shared: std::sync::Arc<schemagate::proxy::Shared>,
}

impl Reloading {
    pub fn generation(&self) -> u64 {
        *self.shared.generation.borrow()
    }

    /// Waits (up to 10 s) until the generation reaches `n`.
    pub async fn wait_generation(&self, n: u64) {
        let mut rx = self.shared.generation.subscribe();
        let reached = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|g| *g >= n)).await;
        assert!(
            reached.is_ok(),
            "generation {n} not reached (at {})",
            self.generation()
        );
    }

    /// Waits (up to 10 s) until `n` reloads have failed.
    pub async fn wait_failures(&self, n: u64) {
        self.wait_until(|| async {
            self.reloader
                .failed
                .load(std::sync::atomic::Ordering::Relaxed)
                >= n
        })
        .await;
    }

    /// Waits (up to 10 s), re-checking after each reload attempt, until `check` holds.
    pub async fn wait_until<F, Fut>(&self, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut attempts = self.reloader.attempts();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !check().await {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(!left.is_zero(), "condition not reached within 10 s");
            let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), attempts.changed())
                .await;
        }
    }
}

impl TestGateway {
    /// Writes `yaml` (which should listen on 127.0.0.1:0) and `files` into a temp dir, then
    /// loads and starts the gateway.
    pub async fn start(yaml: &str, files: &[(&str, &str)]) -> TestGateway {
        TestGateway::start_inner(yaml, files, false).await.0
    }

    /// Starts on real time, with a reloader when `reloadable`.
    async fn start_inner(
        yaml: &str,
        files: &[(&str, &str)],
        reloadable: bool,
    ) -> (TestGateway, Option<Arc<schemagate::reload::Reloader>>) {
        let clock = schemagate::ratelimit::GatewayClock::real();
        let (dir, snapshot) = write_and_load(yaml, files, &clock);
        let loader =
            reloadable.then(|| schemagate::reload::Loader::new(dir.path().join("gateway.yaml")));
        TestGateway::from_snapshot(snapshot, dir, loader).await
    }

    /// Like [`TestGateway::start`], and watching its files for hot reload (50 ms debounce).
    pub async fn start_reloadable(yaml: &str, files: &[(&str, &str)]) -> (TestGateway, Reloading) {
        let (gw, reloader) = TestGateway::start_inner(yaml, files, true).await;
        let reloader = reloader.unwrap();
        let watch = reloader.watch(Duration::from_millis(50)).unwrap();
        let reloading = Reloading {
            reloader,
            _watch: watch,
            shared: gw.shared.clone(),
        };
        (gw, reloading)
    }

    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Like [`TestGateway::start`], with rate limiters on a fake clock the test advances.
    pub async fn start_with_clock(
        yaml: &str,
        files: &[(&str, &str)],
        clock: &schemagate::ratelimit::GatewayClock,
    ) -> TestGateway {
        let (dir, snapshot) = write_and_load(yaml, files, clock);
        TestGateway::from_snapshot(snapshot, dir, None).await.0
    }

    /// Starts the shipped `config/gateway.yaml` on 127.0.0.1:0 with every vendor upstream
    /// pointed at `upstream_url`.
    pub async fn shipped(upstream_url: &str) -> TestGateway {
        let url = upstream_url.to_string();
        let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/config/gateway.yaml"));
        let snapshot = Snapshot::load_with_env(&path, move |name| match name {
            "SCHEMAGATE_LISTEN" | "SCHEMAGATE_ADMIN" => Some("127.0.0.1:0".to_string()),
            name if name.ends_with("_UPSTREAM") => Some(url.clone()),
            _ => None,
        })
        .unwrap_or_else(|errors| panic!("config: {errors:?}"));
        TestGateway::from_snapshot(snapshot, tempfile::tempdir().unwrap(), None)
            .await
            .0
    }

    async fn from_snapshot(
        snapshot: Snapshot,
        dir: tempfile::TempDir,
        loader: Option<schemagate::reload::Loader>,
    ) -> (TestGateway, Option<Arc<schemagate::reload::Reloader>>) {
        let mut gateway = Gateway::bind(snapshot).await.unwrap();
        let reloader = loader.map(|loader| gateway.reloadable(loader));
        let shared = gateway.shared();
        let addr = gateway.local_addrs()[0];
        let admin = gateway.admin_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(gateway.run(async {
            let _ = stopped.await;
        }));
        let gw = TestGateway {
            addr,
            admin,
            _dir: dir,
            stop: Some(stop),
            done,
            shared,
        };
        (gw, reloader)
    }

    /// Begins shutdown and returns the task that reports whether the drain completed.
    pub fn shutdown(mut self) -> tokio::task::JoinHandle<bool> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.done
    }
}

/// A config in front of `upstream_url` as `backend`, with short timeouts and `routes` (the
/// lines under `routes:`).
pub fn backend_config(upstream_url: &str, routes: &str) -> String {
    format!(
        r#"listeners:
  - address: 127.0.0.1:0
defaults:
  timeouts: {{ connect: 1s, response_headers: 1s, drain: 5s }}
upstreams:
  backend:
    url: {upstream_url}
routes:
{routes}"#
    )
}

/// A one-route config in front of `upstream_url`, with extra route keys.
pub fn one_route(upstream_url: &str, method: &str, path: &str, route_extra: &str) -> String {
    backend_config(
        upstream_url,
        &format!(
            r#"  - name: test.route
    method: {method}
    path: {path}
    upstream: backend
{route_extra}"#
        ),
    )
}

/// The answer as the client saw it.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends one HTTP/1.1 request on a new connection.
pub async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> Got {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    collect(response).await
}

/// Sends one request over h2c (HTTP/2 prior knowledge).
pub async fn send_h2(addr: SocketAddr, request: Request<Full<Bytes>>) -> Got {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    collect(response).await
}

async fn collect(response: Response<Incoming>) -> Got {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// Writes `yaml` as `gateway.yaml` and `files` into a new temp dir, and loads it.
fn write_and_load(
    yaml: &str,
    files: &[(&str, &str)],
    clock: &schemagate::ratelimit::GatewayClock,
) -> (tempfile::TempDir, Snapshot) {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, yaml).unwrap();
    let snapshot = Snapshot::load_with(&config, |name| std::env::var(name).ok(), clock)
        .unwrap_or_else(|errors| panic!("config: {errors:?}"));
    (dir, snapshot)
}

/// Builds a request to `path` with headers and a body.
pub fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(path);
    let has_host = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host"));
    if !has_host {
        builder = builder.header("host", "gateway.test");
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap()
}

/// Asserts the documented envelope.
pub fn assert_envelope(got: &Got, status: u16, error: &str) {
    assert_eq!(
        got.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&got.body)
    );
    assert_eq!(got.headers["content-type"], "application/json");
    let json = got.json();
    assert_eq!(json["statusCode"], status);
    assert_eq!(json["error"], error);
    assert!(
        json["message"].is_string() || json["message"].is_array(),
        "{json}"
    );
    assert!(got.headers.contains_key("x-request-id"));
}

/// Writes raw bytes on a new connection and reads the whole answer (the request should ask
/// for `Connection: close`). For framing that a well-behaved client library will not produce.
pub async fn send_raw(addr: SocketAddr, raw: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The gateway may answer (413) and close before it has read everything we send.
    let _ = stream.write_all(raw).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The environment variables that point the shipped config's vendors at real upstreams;
/// tests of the shipped config remove them so that the built-in mock answers.
pub const VENDOR_VARS: [&str; 5] = [
    "GESTIONO_UPSTREAM",
    "LEADCONNECTOR_UPSTREAM",
    "LEADWAY_UPSTREAM",
    "FLEXTELL_UPSTREAM",
    "CHATBOTX_UPSTREAM",
];

/// Flextell's `POST /v1/conversations` with `body`, as the shipped config expects it.
pub fn post_conversation(body: &[u8]) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    request(
        "POST",
        "/v1/conversations",
        &[
            ("authorization", "Bearer t"),
            ("x-tenant", "7"),
            ("content-type", "application/json"),
        ],
        body,
    )
}

/// The `schemagate serve` process, with its listener and admin addresses.
pub struct Served {
    child: std::process::Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Everything the process wrote to stderr so far.
    diagnostics: Arc<Mutex<String>>,
}

impl Served {
    /// Starts `schemagate serve --config CONFIG` in `cwd` and waits until it listens;
    /// `SCHEMAGATE_LISTEN`/`SCHEMAGATE_ADMIN` pick free ports, the vendors' variables are
    /// removed (`envs` may set them again). Its stdout (the access log) and stderr are read
    /// and thrown away.
    pub fn start(cwd: &Path, config: &str, envs: &[(&str, &str)]) -> Served {
        let (served, mut stdout) = Served::start_keeping_stdout(cwd, config, envs);
        // Keep reading, so the access log never meets a full or closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        served
    }

    /// Like [`Served::start`], handing back the process's stdout (the access log) unread.
    /// The banner (the listening addresses) is read from stderr, with the diagnostics.
    pub fn start_keeping_stdout(
        cwd: &Path,
        config: &str,
        envs: &[(&str, &str)],
    ) -> (Served, std::process::ChildStdout) {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_schemagate"));
        command
            .args(["serve", "--config", config])
            .current_dir(cwd)
            .env("SCHEMAGATE_LISTEN", "127.0.0.1:0")
            .env("SCHEMAGATE_ADMIN", "127.0.0.1:0")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for var in VENDOR_VARS {
            command.env_remove(var);
        }
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let address = |line: &str| -> SocketAddr {
            line.split("http://")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no address in {line:?}"))
        };
        let (mut addr, mut admin) = (None, None);
        let mut line = String::new();
        let mut diagnostics = String::new();
        while admin.is_none() {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "schemagate exited before it listened: {diagnostics}"
            );
            diagnostics.push_str(&line);
            if line.contains("schemagate listening on") {
                addr = Some(address(&line));
            } else if line.contains("schemagate admin on") {
                admin = Some(address(&line));
            }
        }
        // Keep reading, so the diagnostics never meet a full pipe; kept for `diagnostics`.
        let kept = Arc::new(Mutex::new(diagnostics));
        let more = Arc::clone(&kept);
        std::thread::spawn(move || {
            let mut line = Vec::new();
            while stderr.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                more.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        });
        let served = Served {
            child,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            diagnostics: kept,
        };
        (served, stdout)
    }

    /// Sends SIGTERM and waits (up to 30 s) for the process to exit; its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "schemagate did not exit within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the process wrote to stderr so far (the banner, then the diagnostics).
    pub fn diagnostics(&self) -> String {
        self.diagnostics.lock().unwrap().clone()
    }

    /// The process id, to read its memory and CPU time from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn status(&self) -> serde_json::Value {
        send(self.admin, request("GET", "/status", &[], b""))
            .await
            .json()
    }

    pub async fn generation(&self) -> u64 {
        self.status().await["generation"].as_u64().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The admin dashboard at `admin` as a real headless Chromium renders it after five seconds
/// of virtual time: its DOM (or, with `SCHEMAGATE_SCREENSHOT=path`, a screenshot there and
/// no DOM) and Chromium's log. `./test.sh` installs Debian's chromium when it is missing.
pub async fn render_in_chromium(admin: SocketAddr) -> (String, String) {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromium is needed for this test: run ./test.sh, which installs it");
    let url = format!("http://{admin}/");
    let profile = tempfile::tempdir().unwrap();
    let screenshot = std::env::var("SCHEMAGATE_SCREENSHOT").ok();
    let output = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(chromium);
        command.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--window-size=1280,900",
        ]);
        command.arg(format!("--user-data-dir={}", profile.path().display()));
        match screenshot {
            Some(path) => command.arg(format!("--screenshot={path}")),
            None => command.arg("--dump-dom"),
        };
        command.arg(&url).output().unwrap()
    })
    .await
    .unwrap();
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
