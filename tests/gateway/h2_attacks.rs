//! HTTP/2 attacks (issue 23) against the real binary: idle connections and the connection cap,
//! keep-alive PINGs, a stream whose window stays at zero, rapid reset, CONTINUATION floods,
//! HPACK bombs, PING and SETTINGS floods. Each test starts `schemagate serve` on 127.0.0.1:0
//! with short limits and attacks it with the `h2` crate where it can produce the attack, and
//! with raw frames over a socket where it refuses to. Every wait is bounded. Each attack
//! prints one `h2 cost:` line (the gateway's RSS and CPU time, a well-behaved client's p99)
//! for docs/configuration.md.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::support::*;

/// `timeouts.header_read` and `timeouts.write_stall` in [`config`].
const HEADER_READ: Duration = Duration::from_secs(1);
const WRITE_STALL: Duration = Duration::from_secs(1);

/// The limits most tests run with; `h2_resets` is the per-connection cap on client resets
/// per second (issue 23).
const LIMITS: &str = "connections: 64, h2_streams: 100";
const LIMITS_WITH_RESETS: &str = "connections: 64, h2_streams: 100, h2_resets: 50";

/// The longest any one attack runs, whatever its frame count.
const BUDGET: Duration = Duration::from_secs(5);

/// What a flood may cost the gateway: resident memory at its peak above where it was before
/// the attack.
const RSS_BOUND_MIB: f64 = 64.0;

fn config(upstream: &str, limits: &str) -> String {
    let header_read = HEADER_READ.as_millis();
    let write_stall = WRITE_STALL.as_millis();
    format!(
        r#"listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
defaults:
  timeouts: {{ header_read: {header_read}ms, write_stall: {write_stall}ms }}
  limits: {{ {limits} }}
upstreams:
  backend: {{ url: '{upstream}' }}
routes:
  - {{ name: big, method: GET, path: /big, upstream: backend }}
  - {{ name: x, method: POST, path: /x, upstream: backend }}
"#
    )
}

/// A large answer, so that a client's flow-control window matters.
static BIG: LazyLock<Vec<u8>> = LazyLock::new(|| vec![b'x'; 4 << 20]);

fn big_answer() -> Answer {
    Answer {
        body: BIG.as_slice(),
        ..Answer::default()
    }
}

/// The binary in front of a real upstream, its config in a temp dir.
struct Target {
    served: Served,
    upstream: Upstream,
    _dir: tempfile::TempDir,
}

impl Target {
    async fn start(answer: Answer, limits: &str) -> Target {
        let upstream = Upstream::start(answer).await;
        let dir = tempfile::tempdir().unwrap();
        let yaml = config(&upstream.url(), limits);
        std::fs::write(dir.path().join("gateway.yaml"), yaml).unwrap();
        // `serve` on a config it refuses only exits; `check` says why.
        let check = std::process::Command::new(env!("CARGO_BIN_EXE_schemagate"))
            .args(["check", "--config", "gateway.yaml"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "the test's config does not load: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let served = Served::start(dir.path(), "gateway.yaml", &[]);
        Target {
            served,
            upstream,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.served.addr
    }

    fn usage(&self) -> Usage {
        Usage::of(self.served.pid())
    }
}

/// Awaits `future` for at most `limit`, failing the test with `what` after that.
async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {limit:?}"))
}

// ---------------------------------------------------------------------------------------
// Raw frames (RFC 9113 §4.1, HPACK literals from RFC 7541 §6.2), for what the h2 crate
// will not send.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
/// ENHANCE_YOUR_CALM, in GOAWAY codes printed.
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame: 24-bit length, type, flags, 31-bit stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    assert!(len < 1 << 24, "frame payload too long");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix, the first byte's high bits being `flags`.
fn hpack_int(flags: u8, n: u32, value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header field as an HPACK literal with a new name; `index` adds it to the dynamic table.
fn literal(name: &str, value: &[u8], index: bool, out: &mut Vec<u8>) {
    out.push(if index { 0x40 } else { 0x00 });
    hpack_int(0, 7, name.len(), out);
    out.extend_from_slice(name.as_bytes());
    hpack_int(0, 7, value.len(), out);
    out.extend_from_slice(value);
}

/// A request's pseudo-header fields as a header block.
fn request_block(method: &str, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in [
        (":method", method),
        (":scheme", "http"),
        (":authority", "gateway.test"),
        (":path", path),
    ] {
        literal(name, value.as_bytes(), false, &mut out);
    }
    out
}

/// A SETTINGS frame's payload.
fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, value) in values {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
    out
}

/// The client preface followed by an empty SETTINGS frame: all an idle client ever sends.
fn preface() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out
}

struct Frame {
    kind: u8,
    flags: u8,
    payload: Vec<u8>,
}

/// Reads one frame; `None` once the connection is closed (EOF or an error).
async fn read_frame(io: &mut (impl AsyncRead + Unpin)) -> Option<Frame> {
    let mut head = [0u8; 9];
    io.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0; len];
    io.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        payload,
    })
}

/// What a raw client that answers nothing saw, timed from when it connected.
#[derive(Debug, Default)]
struct Seen {
    /// The gateway closed the connection (EOF or reset) after this long.
    closed: Option<Duration>,
    /// The first GOAWAY: when, and its error code.
    goaway: Option<(Duration, u32)>,
    /// The first PING (not an ACK) the gateway sent, and how many.
    first_ping: Option<Duration>,
    pings: usize,
    frames: usize,
}

/// Reads and ignores (never ACKs, never answers) what the gateway sends, until it closes the
/// connection or `limit` after `since` passes.
async fn watch(io: &mut (impl AsyncRead + Unpin), since: Instant, limit: Duration) -> Seen {
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::from_std(since + limit);
    loop {
        match tokio::time::timeout_at(deadline, read_frame(io)).await {
            Err(_) => return seen,
            Ok(None) => {
                seen.closed = Some(since.elapsed());
                return seen;
            }
            Ok(Some(frame)) => {
                seen.frames += 1;
                if frame.kind == GOAWAY && seen.goaway.is_none() {
                    let code = frame
                        .payload
                        .get(4..8)
                        .map_or(u32::MAX, |b| u32::from_be_bytes(b.try_into().unwrap()));
                    seen.goaway = Some((since.elapsed(), code));
                } else if frame.kind == PING && frame.flags & ACK == 0 {
                    seen.pings += 1;
                    seen.first_ping.get_or_insert(since.elapsed());
                }
            }
        }
    }
}

/// Opens `n` HTTP/2 connections that send the preface and an empty SETTINGS frame, then
/// nothing; each is read until the gateway's own SETTINGS arrive, so every one has been
/// accepted and holds a connection slot. Returns each with the moment it connected.
async fn idle_connections(addr: SocketAddr, n: usize) -> Vec<(Instant, TcpStream)> {
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        let what = format!("idle connection {i}");
        let mut stream = within(HEADER_READ, &what, TcpStream::connect(addr))
            .await
            .unwrap();
        let connected = Instant::now();
        stream.write_all(&preface()).await.unwrap();
        let first = within(HEADER_READ, &what, read_frame(&mut stream)).await;
        assert!(
            first.is_some_and(|f| f.kind == SETTINGS),
            "{what}: no SETTINGS from the gateway"
        );
        open.push((connected, stream));
    }
    open
}

/// Watches each idle connection until the gateway closes it (or `limit` after it connected).
async fn watch_all(connections: Vec<(Instant, TcpStream)>, limit: Duration) -> Vec<Seen> {
    let mut watching = JoinSet::new();
    for (connected, mut stream) in connections {
        watching.spawn(async move { watch(&mut stream, connected, limit).await });
    }
    watching.join_all().await
}

// ---------------------------------------------------------------------------------------
// What an attack cost the gateway, from /proc.

#[derive(Debug, Clone, Copy)]
struct Usage {
    rss_kib: u64,
    /// The process's peak resident memory so far.
    peak_kib: u64,
    cpu_ms: u64,
}

impl Usage {
    fn of(pid: u32) -> Usage {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        };
        // utime and stime are fields 14 and 15; counting starts after the command name (field
        // 2, in parentheses, which may hold spaces), so they are the 12th and 13th after it.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<u64> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|f| f.parse().unwrap())
            .collect();
        Usage {
            rss_kib: kib("VmRSS:"),
            peak_kib: kib("VmHWM:"),
            // /proc counts CPU time in USER_HZ ticks, 100 a second on every Linux.
            cpu_ms: (fields[0] + fields[1]) * 10,
        }
    }
}

/// The gateway's cost between `before` and `after`.
struct Cost {
    rss_mib: f64,
    /// The peak during the attack above the resident memory before it (an upper bound: the
    /// peak may date from before the attack).
    peak_mib: f64,
    cpu_ms: u64,
}

impl Cost {
    fn between(before: Usage, after: Usage) -> Cost {
        let mib = |kib: f64| kib / 1024.0;
        Cost {
            rss_mib: mib(after.rss_kib as f64 - before.rss_kib as f64),
            peak_mib: mib(after.peak_kib.saturating_sub(before.rss_kib) as f64),
            cpu_ms: after.cpu_ms - before.cpu_ms,
        }
    }

    /// Prints the `h2 cost:` line for `attack`.
    fn report(&self, attack: &str, p99: Option<Duration>, detail: &str) {
        let p99 = p99.map_or("-".to_string(), |p| format!("{:.1} ms", ms(p)));
        eprintln!(
            "h2 cost: {attack}: RSS {:+.1} MiB (peak +{:.1} MiB), CPU {} ms, well-behaved p99 {p99}; {detail}",
            self.rss_mib, self.peak_mib, self.cpu_ms
        );
    }

    fn assert_within(&self, attack: &str, cpu_ms: u64) {
        assert!(
            self.peak_mib <= RSS_BOUND_MIB,
            "{attack}: the gateway's RSS peaked {:.1} MiB above where it was (bound {RSS_BOUND_MIB} MiB)",
            self.peak_mib
        );
        assert!(
            self.cpu_ms <= cpu_ms,
            "{attack}: the gateway spent {} ms of CPU (bound {cpu_ms} ms)",
            self.cpu_ms
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------
// A well-behaved client on its own connection.

/// Sequential small POSTs to /x over one HTTP/2 connection (hyper's client, which ACKs
/// PINGs and SETTINGS), each expected to be a 200 within 2 s.
struct Probe {
    addr: SocketAddr,
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

impl Probe {
    async fn connect(addr: SocketAddr) -> Probe {
        let stream = within(HEADER_READ, "probe connect", TcpStream::connect(addr))
            .await
            .unwrap();
        // Without it, Nagle's algorithm and delayed ACKs add 40 ms to a request whose head and
        // body go out in two writes.
        stream.set_nodelay(true).unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        Probe { addr, sender }
    }

    /// One request's latency. A connection the gateway closed while idle (as an idle one
    /// should be) is opened again first; that is not counted.
    async fn once(&mut self, during: &str) -> Duration {
        if self.sender.is_closed() {
            *self = Probe::connect(self.addr).await;
        }
        let request = request("POST", "/x", &[("content-type", "application/json")], b"{}");
        let started = Instant::now();
        let what = format!("a well-behaved request {during}");
        let status = within(Duration::from_secs(2), &what, async {
            let response = self.sender.send_request(request).await?;
            let status = response.status();
            http_body_util::BodyExt::collect(response.into_body()).await?;
            Ok::<_, hyper::Error>(status)
        })
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(status, 200, "{what}");
        started.elapsed()
    }

    /// `n` latencies.
    async fn run(&mut self, n: usize, during: &str) -> Vec<Duration> {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            samples.push(self.once(during).await);
        }
        samples
    }

    /// Latencies of requests sent one after another until `attack` has finished (at least 5).
    async fn run_while<T>(
        &mut self,
        attack: &tokio::task::JoinHandle<T>,
        during: &str,
    ) -> Vec<Duration> {
        let mut samples = Vec::new();
        while samples.len() < 5 || (!attack.is_finished() && samples.len() < 5_000) {
            samples.push(self.once(during).await);
        }
        samples
    }
}

/// The 99th percentile (nearest rank).
fn p99(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = (sorted.len() * 99).div_ceil(100).max(1);
    sorted[rank - 1]
}

// ---------------------------------------------------------------------------------------
// Attacks a real HTTP/2 client can make (the `h2` crate).

/// An h2 client connection; its driver runs on a task that ends when the connection does.
async fn h2_client(
    addr: SocketAddr,
    builder: &h2::client::Builder,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let stream = within(HEADER_READ, "h2 connect", TcpStream::connect(addr))
        .await
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, connection) = within(HEADER_READ, "h2 handshake", builder.handshake(stream))
        .await
        .unwrap();
    (sender, tokio::spawn(connection))
}

fn get(path: &str) -> http::Request<()> {
    http::Request::get(format!("http://gateway.test{path}"))
        .body(())
        .unwrap()
}

fn post(path: &str) -> http::Request<()> {
    http::Request::post(format!("http://gateway.test{path}"))
        .header("content-type", "application/json")
        .body(())
        .unwrap()
}

/// How a GET of /big ended for a client that never opened its window.
#[derive(Debug)]
enum Stalled {
    /// The gateway reset the stream (RST_STREAM) after this long.
    Reset(h2::Reason, Duration),
    /// It failed another way (the connection closed, no answer).
    Failed(String),
    /// It ended cleanly with this many bytes: a short answer that looks whole.
    Ended(usize),
    /// Still open when the client stopped waiting.
    Open,
}

/// How many streams ended each way, e.g. `200 x reset INTERNAL_ERROR`.
fn tally(ends: &[Stalled]) -> String {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for end in ends {
        let kind = match end {
            Stalled::Reset(reason, _) => format!("reset {reason:?}"),
            Stalled::Failed(error) => format!("failed: {error}"),
            Stalled::Ended(bytes) => format!("clean end after {bytes} bytes"),
            Stalled::Open => "still open".to_string(),
        };
        *kinds.entry(kind).or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} x {k}")).collect();
    kinds.join(", ")
}

/// The streams of [`stalled_streams`]: how each ended, and what the client still holds.
struct Stalls {
    ends: Vec<Stalled>,
    /// Each stream's handles, so that the client does not reset the streams still open (as
    /// dropping them would) before the test has looked at the upstream.
    _held: Vec<Box<dyn Send>>,
}

/// `connections` connections whose streams start with a zero window
/// (`SETTINGS_INITIAL_WINDOW_SIZE = 0`), each sending `streams` GETs of /big and never
/// releasing any capacity; each stream is watched for at most `limit`.
async fn stalled_streams(
    addr: SocketAddr,
    connections: usize,
    streams: usize,
    limit: Duration,
) -> Stalls {
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(0);
    let mut all = JoinSet::new();
    for _ in 0..connections {
        let (sender, _driver) = h2_client(addr, &builder).await;
        for _ in 0..streams {
            let mut sender = within(HEADER_READ, "stream slot", sender.clone().ready())
                .await
                .unwrap();
            let (mut response, sending) = sender.send_request(get("/big"), true).unwrap();
            let started = Instant::now();
            let deadline = tokio::time::Instant::now() + limit;
            all.spawn(async move {
                let ended = |e: h2::Error| match e.reason() {
                    Some(reason) if e.is_reset() => Stalled::Reset(reason, started.elapsed()),
                    _ => Stalled::Failed(e.to_string()),
                };
                let held = (sender, sending);
                let mut body = match tokio::time::timeout_at(deadline, &mut response).await {
                    Err(_) => return (Stalled::Open, Box::new((held, response)) as Box<dyn Send>),
                    Ok(Err(e)) => return (ended(e), Box::new(held)),
                    Ok(Ok(head)) => head.into_body(),
                };
                let mut bytes = 0;
                let end = loop {
                    match tokio::time::timeout_at(deadline, body.data()).await {
                        Err(_) => break Stalled::Open,
                        Ok(None) => break Stalled::Ended(bytes),
                        Ok(Some(Ok(chunk))) => bytes += chunk.len(),
                        Ok(Some(Err(e))) => break ended(e),
                    }
                };
                (end, Box::new((held, body)))
            });
        }
    }
    let (ends, held) = all.join_all().await.into_iter().unzip();
    Stalls { ends, _held: held }
}

/// One rapid-reset connection: how many streams it reset, and how the gateway ended it.
#[derive(Debug)]
struct Resetting {
    resets: usize,
    /// How the gateway closed the connection, and after how long; `None` when it was still
    /// open when the attack's budget ran out.
    closed: Option<(String, Duration)>,
}

/// How a rapid-reset client resets its streams.
#[derive(Clone, Copy)]
enum Resets {
    /// Each stream (a GET of /big) the moment it is opened: the RST_STREAM follows the
    /// HEADERS in the same write, mostly before the gateway has taken the stream.
    AtOnce,
    /// Ten streams (POSTs to /x whose bodies never come) at a time, 2 ms after they were
    /// opened: the gateway has taken them and forwarded them upstream by then, so only a
    /// count of the client's resets stops this (h2's own cap counts resets of streams not yet
    /// taken).
    Accepted,
}

/// Rapid reset: on connection after connection, opens streams and resets them (`CANCEL`) as
/// `how` says, as fast as the client can, until `total` resets or `budget` are spent.
async fn rapid_reset(
    addr: SocketAddr,
    how: Resets,
    total: usize,
    budget: Duration,
) -> Vec<Resetting> {
    let started = Instant::now();
    let mut connections = Vec::new();
    let mut spent = 0;
    while spent < total && started.elapsed() < budget {
        let (mut sender, driver) = h2_client(addr, &h2::client::Builder::new()).await;
        let opened = Instant::now();
        let mut resets = 0;
        let mut waiting = Vec::new();
        while spent < total && started.elapsed() < budget && !driver.is_finished() {
            let ready = std::future::poll_fn(|cx| sender.poll_ready(cx));
            let ready = tokio::time::timeout(Duration::from_secs(1), ready).await;
            let Ok(Ok(())) = ready else { break };
            let request = match how {
                Resets::AtOnce => sender.send_request(get("/big"), true),
                Resets::Accepted => sender.send_request(post("/x"), false),
            };
            let Ok((response, stream)) = request else {
                break;
            };
            waiting.push((response, stream));
            if matches!(how, Resets::Accepted) && waiting.len() < 10 {
                continue;
            }
            if matches!(how, Resets::Accepted) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            for (_, mut stream) in waiting.drain(..) {
                stream.send_reset(h2::Reason::CANCEL);
                resets += 1;
                spent += 1;
            }
            if resets % 32 == 0 {
                // Let the connection's driver write what is queued.
                tokio::task::yield_now().await;
            }
        }
        drop(sender);
        let left = budget.saturating_sub(started.elapsed());
        // A connection still open when the budget is spent is not waited for: it gets a
        // short grace for a GOAWAY already on its way.
        let grace = if left.is_zero() || spent >= total {
            Duration::from_millis(500)
        } else {
            left
        };
        let closed = match tokio::time::timeout(grace, driver).await {
            Ok(Ok(Ok(()))) => Some(("closed".to_string(), opened.elapsed())),
            Ok(Ok(Err(e))) => Some((e.to_string(), opened.elapsed())),
            Ok(Err(join)) => panic!("h2 driver: {join}"),
            Err(_) => None,
        };
        let open = closed.is_none();
        connections.push(Resetting { resets, closed });
        if open {
            break;
        }
    }
    connections
}

// ---------------------------------------------------------------------------------------
// Raw floods.

/// What a raw flood did, across its connections.
#[derive(Debug, Default)]
struct Flooded {
    connections: usize,
    bytes: usize,
    /// GOAWAY codes the gateway sent, one per connection that got one.
    goaways: Vec<u32>,
}

/// On `connections` connections, one after another: the preface, an empty SETTINGS frame,
/// then `batch(0)`, `batch(1)`, ... until it returns `None`, the gateway closes the connection
/// or [`BUDGET`] is spent. What the gateway sends is read by a task of its own and never
/// answered, so its writes do not wait on us.
async fn flood(
    addr: SocketAddr,
    connections: usize,
    batch: impl Fn(usize) -> Option<Vec<u8>>,
) -> Flooded {
    let started = Instant::now();
    let mut flooded = Flooded::default();
    for c in 0..connections {
        if started.elapsed() >= BUDGET {
            break;
        }
        let what = format!("flood connection {c}");
        let stream = within(HEADER_READ, &what, TcpStream::connect(addr))
            .await
            .unwrap();
        let (read, mut write) = stream.into_split();
        let reader = tokio::spawn(async move {
            let mut read = tokio::io::BufReader::new(read);
            watch(&mut read, Instant::now(), BUDGET + Duration::from_secs(2)).await
        });
        flooded.connections += 1;
        let mut next = Some(preface());
        let mut i = 0;
        while let Some(bytes) = next {
            if started.elapsed() >= BUDGET || reader.is_finished() {
                break;
            }
            let wrote = tokio::time::timeout(Duration::from_secs(1), write.write_all(&bytes));
            if !matches!(wrote.await, Ok(Ok(()))) {
                break;
            }
            flooded.bytes += bytes.len();
            next = batch(i);
            i += 1;
        }
        // A GOAWAY may still be on its way.
        let seen = match tokio::time::timeout(Duration::from_millis(300), reader).await {
            Ok(seen) => Some(seen.unwrap()),
            Err(_) => None,
        };
        if let Some((_, code)) = seen.and_then(|s| s.goaway) {
            flooded.goaways.push(code);
        }
    }
    flooded
}

impl Flooded {
    fn describe(&self) -> String {
        let calm = self
            .goaways
            .iter()
            .filter(|c| **c == ENHANCE_YOUR_CALM)
            .count();
        format!(
            "{} connections, {:.1} MiB written, {} GOAWAYs ({calm} ENHANCE_YOUR_CALM)",
            self.connections,
            self.bytes as f64 / (1024.0 * 1024.0),
            self.goaways.len()
        )
    }
}

/// What an attack returned, and a well-behaved client's p99 just before and during it.
struct Attacked<T> {
    result: T,
    baseline: Duration,
    during: Duration,
}

/// Runs `attack` against `target` while a well-behaved client sends requests on its own
/// connection, then checks the gateway still answers, and that the attack cost it at most
/// [`RSS_BOUND_MIB`] and `cpu_ms`. Prints the cost line.
async fn under_attack<T: Send + 'static>(
    target: &Target,
    name: &str,
    cpu_ms: u64,
    attack: impl Future<Output = T> + Send + 'static,
    describe: impl FnOnce(&T) -> String,
) -> Attacked<T> {
    // One measured attack at a time: two floods at once on two cores measure each other.
    let _one = MEASURED.lock().await;
    let mut probe = Probe::connect(target.addr()).await;
    let baseline = p99(&probe.run(100, "before the attack").await);
    let before = target.usage();
    let attacking = tokio::spawn(attack);
    let samples = probe
        .run_while(&attacking, &format!("during the {name}"))
        .await;
    let result = within(BUDGET * 2, name, attacking).await.unwrap();
    let after = target.usage();
    let during = p99(&samples);
    probe.run(20, &format!("after the {name}")).await;
    let cost = Cost::between(before, after);
    let detail = format!(
        "{}; baseline p99 {:.1} ms, {} requests during",
        describe(&result),
        ms(baseline),
        samples.len()
    );
    cost.report(name, Some(during), &detail);
    cost.assert_within(name, cpu_ms);
    Attacked {
        result,
        baseline,
        during,
    }
}

/// A well-behaved client's p99 under attack: at most 10 x its p99 just before (100 ms at
/// least), and 200 ms.
/// Held while an attack's effect on a well-behaved client is measured.
static MEASURED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn assert_latency_kept(name: &str, baseline: Duration, during: Duration) {
    // Ten times the baseline, but never under 100 ms: with the whole suite running on two
    // cores (a debug build), a 3 ms baseline gives a 30 ms bound that scheduling alone breaks
    // (seen: 31.6 and 54.1 ms p99 during a SETTINGS flood, which h2 answers frame by frame
    // with no cap); never over 200 ms, which an attack that starves other connections
    // exceeds.
    let bound = (baseline * 10)
        .max(Duration::from_millis(100))
        .min(Duration::from_millis(200));
    assert!(
        during <= bound,
        "{name}: a well-behaved client's p99 rose to {:.1} ms (baseline {:.1} ms, bound {:.1} ms)",
        ms(during),
        ms(baseline),
        ms(bound)
    );
}

/// The sum of a counter's series whose labels include `label` (0 when there is none).
async fn counter(admin: SocketAddr, name: &str, label: &str) -> f64 {
    let got = within(
        Duration::from_secs(2),
        "GET /metrics",
        send(admin, request("GET", "/metrics", &[], b"")),
    )
    .await;
    let text = String::from_utf8(got.body.to_vec()).unwrap();
    text.lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|l| l.starts_with('{')))
        .filter(|line| line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, n| sum + n)
}

// ---------------------------------------------------------------------------------------
// The tests.

/// 200 connections that send the preface and an empty SETTINGS frame, then nothing, and
/// ignore whatever comes back: each gets a GOAWAY no sooner than half of `header_read` and is
/// closed within 3 x `header_read` of connecting. (Above the connection cap of the other
/// tests, so that every one is accepted at once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2_connections_get_goaway_and_are_closed() {
    let target = Target::start(Answer::default(), "connections: 256, h2_streams: 100").await;
    let before = target.usage();
    let idle = idle_connections(target.addr(), 200).await;
    let holding = target.usage();
    let seen = watch_all(idle, HEADER_READ * 3).await;
    let cost = Cost::between(before, target.usage());
    let open = seen.iter().filter(|s| s.closed.is_none()).count();
    let without_goaway = seen.iter().filter(|s| s.goaway.is_none()).count();
    let early = seen
        .iter()
        .filter(|s| s.goaway.is_some_and(|(at, _)| at < HEADER_READ / 2))
        .count();
    let last = seen.iter().filter_map(|s| s.closed).max();
    cost.report(
        "200 idle connections",
        None,
        &format!(
            "RSS holding them {:+.1} MiB; {open} left open, {without_goaway} without GOAWAY, last closed after {:?}",
            Cost::between(before, holding).rss_mib,
            last
        ),
    );
    assert_eq!(
        open, 0,
        "{open} of 200 idle HTTP/2 connections were still open 3 x header_read after connecting"
    );
    assert_eq!(
        without_goaway, 0,
        "{without_goaway} of 200 idle HTTP/2 connections were closed without a GOAWAY"
    );
    assert_eq!(
        early, 0,
        "{early} idle connections got a GOAWAY before header_read / 2"
    );
}

/// With `limits.connections: 64` and 64 idle HTTP/2 connections holding every slot, a new
/// client is still served within 3 x `header_read`: the idle ones give their slots back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2_connections_do_not_lock_new_clients_out() {
    let target = Target::start(Answer::default(), LIMITS).await;
    let before = target.usage();
    let _idle = idle_connections(target.addr(), 64).await;
    let started = Instant::now();
    let wanted = request("POST", "/x", &[("content-type", "application/json")], b"{}");
    let got = tokio::time::timeout(HEADER_READ * 3, send_h2(target.addr(), wanted))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "64 idle HTTP/2 connections hold every slot (limits.connections: 64): a new \
                 client was not served within 3 x header_read"
            )
        });
    let waited = started.elapsed();
    Cost::between(before, target.usage()).report(
        "connection-cap exhaustion (64 idle)",
        None,
        &format!("a new client served after {:.0} ms", ms(waited)),
    );
    assert_eq!(got.status, 200);
}

/// The idle close counts only connections with no stream open: a request whose upstream
/// answers after 2.5 x `header_read` is answered whole over HTTP/2 (hyper's client ACKs
/// the gateway's PINGs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_request_in_flight_outlives_header_read() {
    let slow = Answer {
        delay: HEADER_READ * 5 / 2,
        ..Answer::default()
    };
    let target = Target::start(slow, LIMITS).await;
    let wanted = request("POST", "/x", &[("content-type", "application/json")], b"{}");
    let got = within(
        HEADER_READ * 5,
        "a slow answer over HTTP/2",
        send_h2(target.addr(), wanted),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], br#"{"ok":true}"#);
}

/// Keep-alive: on a connection with a stream open (a POST whose body never comes, so the
/// request stays in flight; `body_idle` is 10 s), the gateway sends PINGs, and closes the
/// connection of a peer that ACKs none within 6 x `header_read`. This assumes the keep-alive
/// interval and its timeout are each at most a few `header_read`s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_acks_keep_alive_pings_is_closed() {
    let target = Target::start(Answer::default(), LIMITS).await;
    let mut stream = within(HEADER_READ, "connect", TcpStream::connect(target.addr()))
        .await
        .unwrap();
    let connected = Instant::now();
    let mut out = preface();
    out.extend(frame(HEADERS, END_HEADERS, 1, &request_block("POST", "/x")));
    stream.write_all(&out).await.unwrap();
    let seen = watch(&mut stream, connected, HEADER_READ * 6).await;
    eprintln!(
        "h2 keep-alive: first PING after {:?}, {} PINGs, GOAWAY {:?}, closed after {:?}",
        seen.first_ping, seen.pings, seen.goaway, seen.closed
    );
    assert!(
        seen.pings > 0,
        "no PING within 6 x header_read on a connection with a stream open: {seen:?}"
    );
    assert!(
        seen.closed.is_some(),
        "a peer that ACKs no PING was still connected after 6 x header_read: {seen:?}"
    );
}

/// 10 connections x 20 GETs of a 4 MiB answer with `SETTINGS_INITIAL_WINDOW_SIZE = 0`, the
/// window never opened: within 3 x `write_stall` every stream ends in an error the gateway
/// caused and never in a clean end with a short body, and the upstream connections those
/// answers held are released. The error may be an RST_STREAM or the connection's end: hyper
/// 1.12's server holds a polled chunk while it waits for window and polls the body no more
/// (`PipeToSendStream`), so a timer in the body cannot reset the stream by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_held_at_a_zero_window_is_reset_and_its_upstream_released() {
    let target = Target::start(big_answer(), LIMITS).await;
    let before = target.usage();
    let stalls = stalled_streams(target.addr(), 10, 20, WRITE_STALL * 3).await;
    let cost = Cost::between(before, target.usage());
    // The client still holds every stream the gateway left open.
    let held = target.upstream.open_connections();
    let deadline = Instant::now() + Duration::from_secs(2);
    while target.upstream.open_connections() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_upstream = target.upstream.open_connections();
    let ends = &stalls.ends;
    let last_reset = ends
        .iter()
        .filter_map(|e| match e {
            Stalled::Reset(_, after) => Some(*after),
            _ => None,
        })
        .max();
    let not_cut = ends
        .iter()
        .filter(|e| matches!(e, Stalled::Ended(_) | Stalled::Open))
        .count();
    let tally = tally(ends);
    cost.report(
        "window stall (10 x 20 streams of 4 MiB)",
        None,
        &format!(
            "{tally}, last reset after {last_reset:?}; upstream connections: {} opened, {held} open when the client stopped waiting, {open_upstream} 2 s later",
            target.upstream.connections()
        ),
    );
    assert_eq!(
        not_cut, 0,
        "streams held at a zero window and not cut off by the gateway within 3 x write_stall: {tally}"
    );
    assert_eq!(
        open_upstream, 0,
        "upstream connections held 2 s after 3 x write_stall by streams stalled at a zero window"
    );
}

/// How many resets a client may have sent on one connection by the time it sees the
/// gateway close it, with `h2_resets: 50`. Typically ~100: the frames of one read are all
/// processed before the connection's task acts on the cap, and on a loaded two-core machine
/// (the whole suite in parallel) one run reached past 500; without `h2_resets`, one
/// connection took 2 640 resets of accepted streams.
const RESETS_BOUND: usize = 1_000;

/// Runs a rapid-reset attack (at most 5 000 resets or 5 s, on a new connection each time the
/// gateway closes one) beside a well-behaved client; with `h2_resets: 50`, the gateway
/// closes every such connection (GOAWAY or EOF) before the client has sent [`RESETS_BOUND`]
/// resets on it, and the well-behaved client keeps its p99 within 10 x its baseline and
/// 200 ms.
async fn assert_rapid_reset_refused(name: &str, how: Resets, cpu_ms: u64) {
    let target = Target::start(Answer::default(), LIMITS_WITH_RESETS).await;
    let attacked = under_attack(
        &target,
        name,
        cpu_ms,
        rapid_reset(target.addr(), how, 5_000, BUDGET),
        |connections| {
            let resets: usize = connections.iter().map(|c| c.resets).sum();
            let first = connections
                .first()
                .map(|c| format!("the first closed after {} resets: {:?}", c.resets, c.closed));
            format!(
                "{} connections, {resets} resets; {}",
                connections.len(),
                first.unwrap_or_default()
            )
        },
    )
    .await;
    let connections = &attacked.result;
    // The last connection may have been cut short by the budget rather than closed.
    let open = connections.iter().filter(|c| c.closed.is_none()).count();
    assert!(
        open == 0 || (open == 1 && connections.len() > 1),
        "{name}: the gateway kept a connection open until the attack's budget ran out: \
         {:?}",
        &connections[..connections.len().min(3)]
    );
    let most = connections.iter().map(|c| c.resets).max().unwrap_or(0);
    assert!(
        most <= RESETS_BOUND,
        "{name}: a connection took {most} resets before the gateway closed it (h2_resets: 50): \
         {:?}",
        &connections[..connections.len().min(3)]
    );
    assert_latency_kept(name, attacked.baseline, attacked.during);
}

/// Streams reset the moment they are opened (the 2023 rapid reset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_closes_the_connection_and_others_keep_their_latency() {
    assert_rapid_reset_refused("rapid reset", Resets::AtOnce, 1_000).await;
}

/// Streams reset once the gateway has taken them and sent them upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resetting_accepted_streams_closes_the_connection() {
    assert_rapid_reset_refused("rapid reset of accepted streams", Resets::Accepted, 3_000).await;
}

/// Floods a gateway with `batch` (see [`flood`]) on `connections` connections beside a
/// well-behaved client: the flood costs the gateway at most [`RSS_BOUND_MIB`] of peak RSS and
/// `cpu_ms` of CPU, the client keeps its p99 (10 x baseline, 200 ms), and, when `refused`,
/// every flooding connection gets a GOAWAY.
async fn assert_flood_contained(
    name: &str,
    connections: usize,
    cpu_ms: u64,
    refused: bool,
    batch: impl Fn(usize) -> Option<Vec<u8>> + Send + 'static,
) {
    let target = Target::start(Answer::default(), LIMITS).await;
    let attack = flood(target.addr(), connections, batch);
    let attacked = under_attack(&target, name, cpu_ms, attack, Flooded::describe).await;
    let flooded = &attacked.result;
    assert!(
        !refused || flooded.goaways.len() == flooded.connections,
        "{name}: not every connection got a GOAWAY: {}",
        flooded.describe()
    );
    assert_latency_kept(name, attacked.baseline, attacked.during);
}

/// A CONTINUATION flood: HEADERS without END_HEADERS, then up to 10 000 CONTINUATION frames
/// of one small field each, on 50 connections one after another. Each connection gets a
/// GOAWAY; 500 ms of CPU at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_refused_and_costs_little() {
    let headers = frame(HEADERS, 0, 1, &request_block("GET", "/big"));
    let mut field = Vec::new();
    literal("x-c", b"0123456789", false, &mut field);
    let continuations: Vec<u8> = (0..100)
        .flat_map(|_| frame(CONTINUATION, 0, 1, &field))
        .collect();
    let batch = move |i: usize| match i {
        0 => Some(headers.clone()),
        1..=100 => Some(continuations.clone()),
        _ => None,
    };
    assert_flood_contained("CONTINUATION flood", 50, 500, true, batch).await;
}

/// An HPACK bomb: one 4 000-byte field added to the dynamic table, then header blocks of
/// 16 000 one-byte references to it (each would decode to ~64 MB), on 100 streams of each of
/// 10 connections. Each connection gets a GOAWAY; 500 ms of CPU at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpack_bomb_is_refused_and_costs_little() {
    let mut inserting = request_block("GET", "/big");
    literal("x-b", &[b'b'; 4000], true, &mut inserting);
    let insert = frame(HEADERS, END_HEADERS | END_STREAM, 1, &inserting);
    let mut bomb = request_block("GET", "/big");
    // Index 62: the first entry of the dynamic table, the field just added.
    bomb.extend(std::iter::repeat_n(0x80 | 62, 16_000));
    let batch = move |i: usize| match i {
        0 => Some(insert.clone()),
        1..=100 => {
            let stream = u32::try_from(2 * i + 1).unwrap();
            Some(frame(HEADERS, END_HEADERS | END_STREAM, stream, &bomb))
        }
        _ => None,
    };
    assert_flood_contained("HPACK bomb", 10, 500, true, batch).await;
}

/// A PING flood: 25 000 PINGs on each of 4 connections, the ACKs read (and dropped); 2 s of
/// CPU at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_costs_little() {
    let pings: Vec<u8> = (0..500u64)
        .flat_map(|i| frame(PING, 0, 0, &i.to_be_bytes()))
        .collect();
    let batch = move |i: usize| (i < 50).then(|| pings.clone());
    assert_flood_contained("PING flood", 4, 2_000, false, batch).await;
}

/// A SETTINGS flood: 25 000 SETTINGS frames (each setting the initial window) on each of 4
/// connections, the ACKs read (and dropped); 2 s of CPU at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_flood_costs_little() {
    let one = frame(
        SETTINGS,
        0,
        0,
        &settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 65_535)]),
    );
    let frames = one.repeat(500);
    let batch = move |i: usize| (i < 50).then(|| frames.clone());
    assert_flood_contained("SETTINGS flood", 4, 2_000, false, batch).await;
}

/// After idle connections, stalled streams and rapid resets, `/metrics` counts each refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_refusals_are_counted_in_metrics() {
    let target = Target::start(big_answer(), LIMITS_WITH_RESETS).await;
    let addr = target.addr();
    let idle = idle_connections(addr, 3).await;
    tokio::join!(
        watch_all(idle, HEADER_READ * 3),
        stalled_streams(addr, 1, 2, WRITE_STALL * 3),
        rapid_reset(addr, Resets::Accepted, 2_000, Duration::from_secs(3)),
    );
    let admin = target.served.admin;
    let wanted = [
        ("schemagate_h2_connections_closed_total", "reason=\"idle\""),
        (
            "schemagate_h2_connections_closed_total",
            "reason=\"resets\"",
        ),
        (
            "schemagate_h2_streams_reset_total",
            "reason=\"write_stall\"",
        ),
    ];
    // Counted as the connection or stream ends, which the client may see first.
    let deadline = Instant::now() + Duration::from_secs(2);
    for (name, label) in wanted {
        let mut count = counter(admin, name, label).await;
        while count < 1.0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            count = counter(admin, name, label).await;
        }
        assert!(count >= 1.0, "{name}{{{label}}} is {count} in /metrics");
    }
}
