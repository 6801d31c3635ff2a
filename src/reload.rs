//! Hot reload: build a complete new snapshot off the request path and swap it in atomically.
//!
//! Architecture invariant: only this module (and `Gateway::bind`, for the first one) stores
//! into the snapshot `ArcSwap`. A reload parses the config, expands it, compiles every schema
//! and checks every reference on a blocking thread; it swaps only if all of that succeeds.
//! On failure the previous snapshot keeps serving and the error is logged, counted and kept
//! for the admin status. In-flight requests finish on the snapshot they loaded at entry.
//!
//! Limiter state of routes whose limit settings did not change, and upstream connection
//! pools of upstreams whose settings did not change, carry over to the new snapshot.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify_debouncer_mini::notify::event::{AccessKind, AccessMode, Event, EventKind};
use notify_debouncer_mini::notify::{
    self, EventHandler, RecommendedWatcher, RecursiveMode, Watcher, WatcherKind,
};
use notify_debouncer_mini::{new_debouncer_opt, DebounceEventResult};

use crate::config::ConfigError;
use crate::ratelimit::GatewayClock;
use crate::snapshot::Snapshot;
use crate::state::Shared;

pub mod watch;
use watch::{WatchedDir, Watches};

/// How often the watched directories are checked for having moved (see [`Reloader::watch`]).
pub const RESYNC_EVERY: Duration = Duration::from_secs(1);

/// How `${VAR}` is looked up when a config is (re)loaded.
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Everything needed to build a snapshot from files: the config path, the environment view
/// and the limiters' clock.
#[derive(Clone)]
pub struct Loader {
    pub path: PathBuf,
    pub env: Env,
    pub clock: GatewayClock,
}

impl Loader {
    /// A loader reading the process environment, with real time.
    pub fn new(path: impl Into<PathBuf>) -> Loader {
        Loader {
            path: path.into(),
            env: Arc::new(|name| std::env::var(name).ok()),
            clock: GatewayClock::real(),
        }
    }

    pub fn load(&self) -> Result<Snapshot, Vec<ConfigError>> {
        let env = Arc::clone(&self.env);
        Snapshot::load_with(&self.path, move |name| env(name), &self.clock)
    }
}

/// What started a reload, for logs and the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    FileChange,
    Signal,
    Admin,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::FileChange => "file change",
            Trigger::Signal => "SIGHUP",
            Trigger::Admin => "admin request",
        }
    }
}

/// The outcome of the last reload, for the admin status.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    pub at: Option<SystemTime>,
    pub trigger: Option<Trigger>,
    /// Every problem of the last failed reload; empty when it succeeded.
    pub errors: Vec<String>,
    /// Settings that changed but only apply after a restart (listener addresses).
    pub restart_required: Vec<String>,
}

/// Reloads the config on request, one reload at a time.
pub struct Reloader {
    shared: Arc<Shared>,
    loader: Loader,
    /// Serialises reloads so two triggers never race to swap.
    running: tokio::sync::Mutex<()>,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    /// Reloads attempted so far (successful or not), for waiting on a reload to finish.
    attempts: tokio::sync::watch::Sender<u64>,
    status: Mutex<ReloadStatus>,
    /// What the file watch watches, for `/status`; empty when nothing is watched.
    watching: Mutex<Vec<WatchedDir>>,
}

impl Reloader {
    pub fn new(shared: Arc<Shared>, loader: Loader) -> Arc<Reloader> {
        Arc::new(Reloader {
            shared,
            loader,
            running: tokio::sync::Mutex::new(()),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            attempts: tokio::sync::watch::channel(0).0,
            status: Mutex::new(ReloadStatus::default()),
            watching: Mutex::new(Vec::new()),
        })
    }

    /// Builds a new snapshot and swaps it in. Returns the new generation, or every problem
    /// found (the previous snapshot keeps serving).
    pub async fn reload(&self, trigger: Trigger) -> Result<u64, Vec<String>> {
        let _one_at_a_time = self.running.lock().await;
        let loader = self.loader.clone();
        let built = tokio::task::spawn_blocking(move || loader.load())
            .await
            .map_err(|e| {
                vec![ConfigError::file(
                    &self.loader.path,
                    format!("reload task failed: {e}"),
                )]
            });
        let result = match built {
            Ok(Ok(next)) if next.fingerprint == self.shared.snapshot.load().fingerprint => {
                // Editors and file systems often report one write as several events; an
                // identical rebuild is not a new generation.
                let generation = self.shared.snapshot.load().generation;
                tracing::info!(generation, trigger = trigger.as_str(), "config unchanged");
                self.count("unchanged");
                let restart = self.status().restart_required;
                self.set_status(trigger, Vec::new(), restart);
                Ok(generation)
            }
            Ok(Ok(mut next)) => {
                let current = self.shared.snapshot.load_full();
                carry_over(&mut next, &current);
                // A new or changed `jwks_url` is fetched before the swap, so its routes do not
                // answer "unknown key" meanwhile; a failure is logged and retried in the
                // background, as at startup.
                for provider in &next.jwt {
                    if provider.remote.is_some() && provider.keys().fetched_at.is_none() {
                        let _ = provider.fetch().await;
                    }
                }
                next.generation = current.generation + 1;
                let restart = restart_required(&current, &next);
                for what in &restart {
                    tracing::warn!(
                        change = what.as_str(),
                        "config change needs a restart to apply"
                    );
                }
                let generation = next.generation;
                self.shared.snapshot.store(Arc::new(next));
                self.shared.generation.send_replace(generation);
                self.succeeded.fetch_add(1, Ordering::Relaxed);
                self.count("ok");
                self.shared.metrics.generation.set(generation as i64);
                tracing::info!(generation, trigger = trigger.as_str(), "config reloaded");
                self.set_status(trigger, Vec::new(), restart);
                Ok(generation)
            }
            Ok(Err(errors)) | Err(errors) => {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.count("failed");
                for error in &errors {
                    tracing::error!(trigger = trigger.as_str(), %error, "reload failed; the previous config keeps serving");
                }
                let restart = self.status().restart_required;
                self.set_status(trigger, errors.clone(), restart);
                Err(errors)
            }
        };
        self.attempts.send_modify(|n| *n += 1);
        result
    }

    /// Counts reload attempts, successful or not.
    pub fn attempts(&self) -> tokio::sync::watch::Receiver<u64> {
        self.attempts.subscribe()
    }

    fn count(&self, result: &str) {
        let labels = crate::metrics::ResultLabels {
            result: result.to_string(),
        };
        self.shared.metrics.reloads.get_or_create(&labels).inc();
    }

    fn set_status(&self, trigger: Trigger, errors: Vec<String>, restart_required: Vec<String>) {
        let status = ReloadStatus {
            at: Some(SystemTime::now()),
            trigger: Some(trigger),
            errors,
            restart_required,
        };
        // A poisoned lock only means a panic elsewhere while holding it; the data is plain.
        match self.status.lock() {
            Ok(mut guard) => *guard = status,
            Err(poisoned) => *poisoned.into_inner() = status,
        }
    }

    pub fn status(&self) -> ReloadStatus {
        match self.status.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Watches every directory the current snapshot was read from (see [`watch`]) and
    /// reloads once changes have been quiet for `debounce`. After every reload attempt,
    /// whatever triggered it, the watches follow the new snapshot's files; every
    /// [`RESYNC_EVERY`] they are checked again, so a watched directory that was deleted and
    /// recreated, renamed away and back, or swapped behind a symlink is watched again, and
    /// reloaded from, without a restart. The watch lasts as long as the returned handle.
    pub fn watch(self: &Arc<Self>, debounce: Duration) -> Result<Watch, String> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let events = tx.clone();
        let config = notify_debouncer_mini::Config::default().with_timeout(debounce);
        let debouncer =
            new_debouncer_opt::<_, ChangesOnly>(config, move |result: DebounceEventResult| {
                if result.is_ok_and(|events| !events.is_empty()) {
                    // A full channel already holds a pending reload, which will see this change.
                    let _ = events.try_send(());
                }
            })
            .map_err(|e| format!("cannot watch files: {e}"))?;
        let mut watches = Watches::new(debouncer);
        self.resync(&mut watches, false);
        let reloader = Arc::clone(self);
        let mut attempts = self.attempts();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(RESYNC_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    event = rx.recv() => {
                        if event.is_none() {
                            break;
                        }
                        // Watches renewed before the reload reads the files, so that no
                        // change made after that read goes unseen.
                        reloader.resync(&mut watches, true);
                        // Errors are logged and kept in the status by `reload`.
                        let _ = reloader.reload(Trigger::FileChange).await;
                        // A new snapshot may name new directories: watched only now, they
                        // may have changed since the reload read them.
                        if reloader.resync(&mut watches, false) {
                            let _ = tx.try_send(());
                        }
                    }
                    // A reload from SIGHUP or the admin endpoint may name new files.
                    changed = attempts.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        if reloader.resync(&mut watches, false) {
                            let _ = tx.try_send(());
                        }
                    }
                    _ = tick.tick() => {
                        if reloader.resync(&mut watches, false) {
                            let _ = tx.try_send(());
                        }
                    }
                }
            }
        });
        Ok(Watch { task })
    }

    /// Points the watches at the current snapshot's files (all renewed with `renew`); true
    /// when they moved.
    fn resync<W: Watcher>(&self, watches: &mut Watches<W>, renew: bool) -> bool {
        let snapshot = self.shared.snapshot.load();
        let mut sources = watch::sources(&snapshot);
        // The loader's path, as given, even if the snapshot's differs.
        if self.loader.path != snapshot.source {
            sources.push((self.loader.path.clone(), false, "config file".to_string()));
        }
        let moved = watches.sync(watch::plan(&sources), renew);
        let listed = watches.listed();
        match self.watching.lock() {
            Ok(mut guard) => *guard = listed,
            Err(poisoned) => *poisoned.into_inner() = listed,
        }
        moved
    }

    /// The directories being watched, for `/status`.
    pub fn watching(&self) -> Vec<WatchedDir> {
        match self.watching.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The platform's file watcher without the events that change nothing: a file opened or
/// read. Linux's watcher reports every open (`IN_OPEN`), and a reload opens every file it
/// watches, so unfiltered each reload would trigger the next, every debounce interval,
/// forever. Writes, creations, renames, removals and attribute changes pass through.
struct ChangesOnly(RecommendedWatcher);

impl Watcher for ChangesOnly {
    fn new<F: EventHandler>(mut handler: F, config: notify::Config) -> notify::Result<Self> {
        let filter = move |event: notify::Result<Event>| {
            let reads_only = event.as_ref().is_ok_and(|e| {
                matches!(
                    e.kind,
                    EventKind::Access(
                        AccessKind::Open(_)
                            | AccessKind::Read
                            | AccessKind::Close(AccessMode::Read)
                    )
                )
            });
            if !reads_only {
                handler.handle_event(event);
            }
        };
        RecommendedWatcher::new(filter, config).map(ChangesOnly)
    }

    fn watch(&mut self, path: &Path, mode: RecursiveMode) -> notify::Result<()> {
        self.0.watch(path, mode)
    }

    fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
        self.0.unwatch(path)
    }

    fn kind() -> WatcherKind {
        RecommendedWatcher::kind()
    }
}

/// Keeps a file watch alive (its task owns the watcher); dropping it stops watching.
pub struct Watch {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Moves state that must survive a reload from `old` into `next`: a route's limiter when its
/// limit settings are unchanged, an upstream (and its connection pool) when its settings are,
/// the Redis store (and its connection) when the `redis` section is.
fn carry_over(next: &mut Snapshot, old: &Snapshot) {
    if let (Some(new_store), Some(old_store)) = (&next.redis, &old.redis) {
        if new_store.settings() == old_store.settings() {
            next.redis = Some(Arc::clone(old_store));
        }
    }
    // A `jwks_url` provider whose settings are unchanged keeps its keys and fetch state.
    for provider in &next.jwt {
        let previous = old.jwt.iter().find(|p| p.settings == provider.settings);
        if let (Some(previous), Some(remote)) = (previous, &provider.remote) {
            if let Some(old_remote) = &previous.remote {
                provider.set_keys((*previous.keys()).clone());
                remote.adopt(old_remote);
            }
        }
    }
    for route in &mut next.routes {
        let Some(previous) = old.routes.iter().find(|r| r.name == route.name) else {
            continue;
        };
        if let (Some(new_limiter), Some(old_limiter)) = (&route.limiter, &previous.limiter) {
            if new_limiter.settings() == old_limiter.settings() {
                route.limiter = Some(Arc::clone(old_limiter));
            }
        }
    }
    for route in &mut next.routes {
        let same = old
            .routes
            .iter()
            .map(|r| &r.upstream)
            .find(|u| u.name == route.upstream.name && u.same_settings(&route.upstream));
        if let Some(upstream) = same {
            route.upstream = Arc::clone(upstream);
        }
    }
}

/// Changes a running gateway cannot apply: listeners are bound once (with their backlog).
fn restart_required(current: &Snapshot, next: &Snapshot) -> Vec<String> {
    let mut changes = Vec::new();
    let addresses = |s: &Snapshot| s.listeners.iter().map(|l| l.address).collect::<Vec<_>>();
    if addresses(current) != addresses(next) {
        changes.push(format!(
            "listeners changed from {:?} to {:?}; restart to apply (still serving the old ones)",
            addresses(current),
            addresses(next)
        ));
    }
    let address = |s: &Snapshot| s.admin.as_ref().map(|a| a.address);
    if address(current) != address(next) {
        changes.push("admin.address changed; restart to apply".to_string());
    }
    if current.server.backlog != next.server.backlog {
        changes.push("defaults.limits.backlog changed; restart to apply".to_string());
    }
    if current.logging != next.logging {
        changes.push("logging changed; restart to apply".to_string());
    }
    changes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ratelimit::GatewayClock;

    fn snapshot(redis: &str) -> Snapshot {
        let text = format!(
            "listeners: [{{ address: '127.0.0.1:0' }}]\nupstreams:\n  b: {{ url: 'http://127.0.0.1:1' }}\n{redis}routes:\n  - {{ name: r, method: GET, path: /x, upstream: b, rate_limit: {{ quota: 1/s, store: redis }} }}\n"
        );
        Snapshot::from_text(
            std::path::Path::new("/nonexistent/gateway.yaml"),
            &text,
            |_| None,
            &GatewayClock::real(),
        )
        .unwrap()
    }

    #[test]
    fn an_unchanged_redis_section_keeps_its_store_and_a_changed_one_gets_a_new_one() {
        let section = |timeout: &str| {
            format!("redis: {{ url: 'redis://127.0.0.1:1/0', timeout: {timeout} }}\n")
        };
        let old = snapshot(&section("50ms"));
        let mut same = snapshot(&section("50ms"));
        carry_over(&mut same, &old);
        assert!(Arc::ptr_eq(
            same.redis.as_ref().unwrap(),
            old.redis.as_ref().unwrap()
        ));
        let mut changed = snapshot(&section("60ms"));
        carry_over(&mut changed, &old);
        assert!(!Arc::ptr_eq(
            changed.redis.as_ref().unwrap(),
            old.redis.as_ref().unwrap()
        ));
    }
}
