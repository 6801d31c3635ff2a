//! What every connection, the admin listener and the reloader share: the snapshot serving
//! now, its generation number, the metrics, the draining flag and the access log.
//!
//! Architecture invariant: nothing here points back at what holds it. The reloader holds
//! `Shared`, never the other way round; the admin listener is handed the reloader by
//! `Gateway`, which owns both.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::accesslog::AccessLog;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// State shared by every connection.
pub struct Shared {
    /// The current config generation. Only `reload` (and startup) stores into it.
    pub snapshot: ArcSwap<Snapshot>,
    /// The current generation number, for anyone who wants to wait for a reload.
    pub generation: tokio::sync::watch::Sender<u64>,
    pub metrics: Metrics,
    /// Set when shutdown begins; `/readyz` then answers 503.
    pub draining: AtomicBool,
    pub started: SystemTime,
    /// The access log (off unless the binary started its writer).
    pub access_log: AccessLog,
}

impl Shared {
    pub fn new(snapshot: Snapshot) -> Arc<Shared> {
        Shared::with_access_log(snapshot, AccessLog::off())
    }

    /// Like [`Shared::new`], with requests written to `access_log`.
    pub fn with_access_log(snapshot: Snapshot, access_log: AccessLog) -> Arc<Shared> {
        let (generation, _) = tokio::sync::watch::channel(snapshot.generation);
        let mut metrics = Metrics::new();
        metrics.register_access_log(access_log.dropped().clone());
        metrics.generation.set(snapshot.generation as i64);
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            generation,
            metrics,
            draining: AtomicBool::new(false),
            started: SystemTime::now(),
            access_log,
        })
    }
}
