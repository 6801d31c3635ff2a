//! The floor under schemagate's forwarding cost: a reverse proxy made of hyper's HTTP/1 server
//! and hyper's HTTP/1 client and nothing else, on the same runtime and allocator as the gateway
//! (tokio's current-thread runtime, mimalloc). No routing, validation, auth, rate limit, header
//! rewriting, timeouts or pool lookup: each client connection gets one upstream connection of
//! its own. `bench/callgrind.sh` counts its instructions per request beside schemagate's and
//! nginx's, to show how much of the gateway's cost is the HTTP library itself.
//!
//!   cargo run --release --example hyper_floor -- 127.0.0.1:8081 127.0.0.1:8080
//!
//! A benchmark fixture, not a product: errors end the connection they happen on.

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: hyper_floor LISTEN_ADDR UPSTREAM_ADDR".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let upstream: SocketAddr = upstream.parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(listen, upstream))
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> Result<(), Error> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (client, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(error) = proxy_connection(client, upstream).await {
                eprintln!("connection ended: {error}");
            }
        });
    }
}

/// Serves one client connection over one upstream connection of its own.
async fn proxy_connection(client: TcpStream, upstream: SocketAddr) -> Result<(), Error> {
    client.set_nodelay(true)?;
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    // HTTP/1 serves one request at a time per connection, so the lock is never contended.
    let sender = std::sync::Arc::new(Mutex::new(sender));
    let service = service_fn(move |request: Request<Incoming>| {
        let sender = std::sync::Arc::clone(&sender);
        async move { forward(&sender, request).await }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(client), service)
        .await?;
    Ok(())
}

async fn forward(
    sender: &Mutex<SendRequest<Incoming>>,
    request: Request<Incoming>,
) -> Result<Response<Incoming>, hyper::Error> {
    let mut sender = sender.lock().await;
    sender.ready().await?;
    let response = sender.send_request(request);
    drop(sender);
    response.await
}
