//! The upstream connection pool over real sockets: a connection is reused once its response
//! has been read, and a connection the upstream closed while idle costs no request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

/// A raw HTTP/1.1 upstream answering bodiless requests with `{}`, counting connections.
/// With `one_per_connection` it closes each connection after its first answer, without a
/// `Connection: close` (as servers do when a keep-alive timeout passes).
async fn counting_upstream(one_per_connection: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let end = loop {
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    buf.drain(..end);
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                   content-length: 2\r\n\r\n{}";
                    if stream.write_all(answer).await.is_err() || one_per_connection {
                        return;
                    }
                }
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn a_connection_is_reused_once_its_response_was_read() {
    let (addr, connections) = counting_upstream(false).await;
    let gw = TestGateway::start(&one_route(&format!("http://{addr}"), "GET", "/x", ""), &[]).await;
    for i in 0..5 {
        let got = send(gw.addr, request("GET", "/x", &[], b"")).await;
        assert_eq!(
            (got.status, &got.body[..]),
            (200, &b"{}"[..]),
            "request {i}"
        );
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one upstream connection"
    );
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_costs_no_request() {
    let (addr, connections) = counting_upstream(true).await;
    let gw = TestGateway::start(&one_route(&format!("http://{addr}"), "GET", "/x", ""), &[]).await;
    for i in 0..5 {
        let got = send(gw.addr, request("GET", "/x", &[], b"")).await;
        assert_eq!(
            (got.status, &got.body[..]),
            (200, &b"{}"[..]),
            "request {i}"
        );
    }
    assert_eq!(connections.load(Ordering::SeqCst), 5);
}
