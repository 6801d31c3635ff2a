//! A lower floor than `hyper_floor.rs`: an HTTP/1.1 relay written by hand on tokio, with
//! httparse reading both heads. It finds where each message ends (the head, then a
//! `Content-Length` body) and copies the bytes across: no `http::Request`, no header map, no
//! chunked bodies, no timeouts; one upstream connection per client connection. It is what a
//! hand-written HTTP/1 path could cost at the very least, measured beside hyper-floor,
//! schemagate and nginx by `bench/callgrind.sh` (target `relay-floor`).
//!
//!   cargo run --release --example relay_floor -- 127.0.0.1:8082 127.0.0.1:8080
//!
//! A benchmark fixture, not a product: anything it does not understand ends the connection.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The largest head or message this fixture buffers.
const MAX_MESSAGE: usize = 1 << 20;

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: relay_floor LISTEN_ADDR UPSTREAM_ADDR".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let upstream: SocketAddr = upstream.parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (client, _) = listener.accept().await?;
            tokio::spawn(async move {
                if let Err(error) = relay(client, upstream).await {
                    eprintln!("connection ended: {error}");
                }
            });
        }
    })
}

/// Relays request after request: one from the client to the upstream, its answer back.
async fn relay(mut client: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    client.set_nodelay(true)?;
    let mut upstream = TcpStream::connect(upstream).await?;
    upstream.set_nodelay(true)?;
    let mut from_client = Vec::with_capacity(8192);
    let mut from_upstream = Vec::with_capacity(8192);
    loop {
        let Some(request) = read_message(&mut client, &mut from_client, Kind::Request).await?
        else {
            return Ok(());
        };
        upstream.write_all(&from_client[..request]).await?;
        from_client.drain(..request);
        let Some(response) =
            read_message(&mut upstream, &mut from_upstream, Kind::Response).await?
        else {
            return Ok(());
        };
        client.write_all(&from_upstream[..response]).await?;
        from_upstream.drain(..response);
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Request,
    Response,
}

/// Reads until `buf` holds one whole message; its length, or `None` at end of stream or on
/// anything unparseable.
async fn read_message(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    kind: Kind,
) -> io::Result<Option<usize>> {
    loop {
        if let Some(length) = message_length(buf, kind) {
            match length {
                Some(length) if length <= buf.len() => return Ok(Some(length)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
        if buf.len() >= MAX_MESSAGE {
            return Ok(None);
        }
        buf.reserve(8192);
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// `None` while the head is incomplete; `Some(None)` for a head this fixture refuses;
/// `Some(Some(n))` for a message of `n` bytes (head and `Content-Length` body).
fn message_length(buf: &[u8], kind: Kind) -> Option<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let parsed = match kind {
        Kind::Request => httparse::Request::new(&mut headers).parse(buf),
        Kind::Response => httparse::Response::new(&mut headers).parse(buf),
    };
    let head = match parsed {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(None),
    };
    let mut body = 0usize;
    for header in headers.iter().take_while(|h| !h.name.is_empty()) {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Some(None);
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            let Some(length) = std::str::from_utf8(header.value)
                .ok()
                .and_then(|text| text.trim().parse::<usize>().ok())
            else {
                return Some(None);
            };
            body = length;
        }
    }
    Some(head.checked_add(body))
}
