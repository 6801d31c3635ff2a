//! Listeners, connections and graceful shutdown.
//!
//! Each listener accepts HTTP/1.1 and h2c (prior knowledge) on the same port. On shutdown the
//! accept loops stop at once, open connections are told to finish their in-flight requests
//! (HTTP/1 stops keep-alive, HTTP/2 sends GOAWAY), and the server waits up to the configured
//! drain timeout for them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::forward::Downstream;
use crate::proxy::{self, Shared};
use crate::snapshot::Snapshot;

/// How often idle rate-limit state is swept.
const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// A gateway whose listeners are bound but not yet serving.
pub struct Gateway {
    listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
}

impl Gateway {
    /// Binds every listener of `snapshot`. A port of 0 picks a free port (see `local_addrs`).
    pub async fn bind(snapshot: Snapshot) -> std::io::Result<Gateway> {
        let mut listeners = Vec::with_capacity(snapshot.listeners.len());
        for addr in &snapshot.listeners {
            let listener = TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
            })?;
            listeners.push(listener);
        }
        Ok(Gateway {
            listeners,
            shared: Shared::new(snapshot),
        })
    }

    /// The state requests read; reloads store new snapshots into it.
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// The addresses actually bound, in config order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` completes, then drains. Returns `true` when every in-flight
    /// request finished within the drain timeout.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> bool {
        let graceful = Arc::new(GracefulShutdown::new());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut accept_tasks = Vec::new();
        for listener in self.listeners {
            let shared = Arc::clone(&self.shared);
            let graceful = Arc::clone(&graceful);
            let mut stop = stop_rx.clone();
            accept_tasks.push(tokio::spawn(async move {
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder.http1().timer(hyper_util::rt::TokioTimer::new());
                loop {
                    let (stream, peer) = tokio::select! {
                        _ = stop.changed() => break,
                        accepted = listener.accept() => match accepted {
                            Ok(pair) => pair,
                            Err(error) => {
                                // EMFILE and friends: back off briefly instead of spinning.
                                tracing::warn!(%error, "accept failed");
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                                continue;
                            }
                        },
                    };
                    let _ = stream.set_nodelay(true);
                    let downstream = Downstream {
                        peer: peer.ip(),
                        tls: false,
                    };
                    let shared = Arc::clone(&shared);
                    let service = service_fn(move |request| {
                        proxy::handle(Arc::clone(&shared), downstream, request)
                    });
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    let connection = graceful.watcher().watch(connection);
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, %peer, "connection ended with an error");
                        }
                    });
                }
                // Dropping the listener here closes the port at once.
            }));
        }

        // Idle tenants' limiter state is reclaimed every few seconds (a full store also sweeps
        // itself, at most once a second).
        let sweeper = {
            let shared = Arc::clone(&self.shared);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SWEEP_INTERVAL);
                loop {
                    tick.tick().await;
                    let snapshot = shared.snapshot.load();
                    for limiter in snapshot.routes.iter().filter_map(|r| r.limiter.as_ref()) {
                        limiter.sweep();
                    }
                }
            })
        };

        shutdown.await;
        sweeper.abort();
        let drain = self.shared.snapshot.load().drain_timeout;
        tracing::info!(drain_timeout = ?drain, "shutting down: no longer accepting, draining");
        let _ = stop_tx.send(true);
        for task in accept_tasks {
            let _ = task.await;
        }
        // The accept tasks have ended, so this is the last reference.
        let Ok(graceful) = Arc::try_unwrap(graceful) else {
            tracing::error!("accept loops still hold the shutdown handle; not draining");
            return false;
        };
        match tokio::time::timeout(drain, graceful.shutdown()).await {
            Ok(()) => {
                tracing::info!("drained");
                true
            }
            Err(_) => {
                tracing::warn!("drain timeout reached with requests still in flight");
                false
            }
        }
    }
}
