//! A `jwks_url`: fetched through the gateway's own upstream client (`upstream::Upstream`, with
//! the `defaults.timeouts` connect and response-header timeouts and the provider's `tls` CA
//! settings), refreshed every `refresh`, and again when a token names a `kid` no key has, at
//! most once per [`UNKNOWN_KID_FLOOR`]. A failed fetch keeps the last good keys.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, HOST};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};

use super::{parse_jwks, KeySet, Provider};
use crate::upstream::Upstream;

/// Least time between two fetches caused by unknown `kid`s: a stream of made-up `kid`s costs
/// the issuer one request a minute, and a real rotation is picked up at the first token.
pub const UNKNOWN_KID_FLOOR: Duration = Duration::from_secs(60);
/// How often a provider that has no keys yet tries again (at most; `refresh` if shorter).
pub const RETRY_WITHOUT_KEYS: Duration = Duration::from_secs(5);
/// The largest JWK Set read.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// A provider's JWK Set URL and its fetch state.
#[derive(Debug)]
pub struct Remote {
    pub url: String,
    pub upstream: Arc<Upstream>,
    /// `path?query` of the URL (origin form) and its authority for `Host`.
    pub target: Uri,
    pub host: HeaderValue,
    /// Longest a fetch may take, from the request to the last byte of the body.
    pub timeout: Duration,
    pub refresh: Duration,
    /// Where `jwks_url` is in the config (`file:line: key`), for `schemagate check`.
    pub located: String,
    state: tokio::sync::Mutex<State>,
    /// What the status page and metrics show.
    pub outcome: Mutex<Outcome>,
    pub fetched_ok: AtomicU64,
    pub fetched_failed: AtomicU64,
}

#[derive(Debug, Default, Clone)]
struct State {
    last_attempt: Option<Instant>,
    last_unknown_kid: Option<Instant>,
}

/// The last fetch, as reported.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub at: Option<SystemTime>,
    /// Why the last fetch failed; `None` after a success.
    pub error: Option<String>,
}

impl Remote {
    pub fn new(
        url: String,
        upstream: Arc<Upstream>,
        target: Uri,
        host: HeaderValue,
        timeout: Duration,
        refresh: Duration,
        located: String,
    ) -> Remote {
        Remote {
            url,
            upstream,
            target,
            host,
            timeout,
            refresh,
            located,
            state: tokio::sync::Mutex::new(State::default()),
            outcome: Mutex::new(Outcome::default()),
            fetched_ok: AtomicU64::new(0),
            fetched_failed: AtomicU64::new(0),
        }
    }

    /// Takes over `old`'s fetch state (a reload that left the URL as it was).
    pub fn adopt(&self, old: &Remote) {
        if let (Ok(mut state), Ok(old_state)) = (self.state.try_lock(), old.state.try_lock()) {
            *state = old_state.clone();
        }
        if let (Ok(mut outcome), Ok(old_outcome)) = (self.outcome.lock(), old.outcome.lock()) {
            *outcome = old_outcome.clone();
        }
        self.fetched_ok
            .store(old.fetched_ok.load(Ordering::Relaxed), Ordering::Relaxed);
        self.fetched_failed.store(
            old.fetched_failed.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }

    /// GETs the JWK Set: status 200, a body of at most [`MAX_JWKS_BYTES`], all within
    /// `timeout`.
    async fn get(&self) -> Result<Bytes, String> {
        let mut request =
            Request::new(Empty::<Bytes>::new().map_err(|n| match n {}).boxed_unsync());
        *request.uri_mut() = self.target.clone();
        request.headers_mut().insert(HOST, self.host.clone());
        request
            .headers_mut()
            .insert(ACCEPT, HeaderValue::from_static("application/json"));
        let exchange = async {
            let response = self
                .upstream
                .send(request, self.timeout, self.timeout)
                .await
                .map_err(|e| e.to_string())?;
            if response.status() != StatusCode::OK {
                return Err(format!("the issuer answered {}", response.status()));
            }
            let mut body = response.into_body();
            let mut bytes = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("reading the JWK Set: {e}"))?;
                if let Ok(data) = frame.into_data() {
                    if bytes.len() + data.len() > MAX_JWKS_BYTES {
                        return Err(format!("the JWK Set is larger than {MAX_JWKS_BYTES} bytes"));
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            Ok(Bytes::from(bytes))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no JWK Set within {:?}", self.timeout))?
    }
}

impl Provider {
    /// Fetches the JWK Set once and puts its keys in use; on failure the keys in use stay.
    /// Returns how many keys it holds.
    pub async fn fetch(&self) -> Result<usize, String> {
        let Some(remote) = &self.remote else {
            return Ok(self.keys().keys.len());
        };
        let mut state = remote.state.lock().await;
        self.fetch_locked(remote, &mut state).await
    }

    async fn fetch_locked(&self, remote: &Remote, state: &mut State) -> Result<usize, String> {
        state.last_attempt = Some(Instant::now());
        let result = remote
            .get()
            .await
            .and_then(|bytes| parse_jwks(&bytes, &self.settings.allowed));
        let now = SystemTime::now();
        let outcome = match result {
            Ok((keys, skipped)) => {
                for why in skipped {
                    tracing::warn!(provider = %self.settings.name, "jwt: key skipped: {why}");
                }
                let count = keys.len();
                self.set_keys(KeySet {
                    keys,
                    fetched_at: Some(now),
                });
                remote.fetched_ok.fetch_add(1, Ordering::Relaxed);
                Ok(count)
            }
            Err(error) => {
                remote.fetched_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    provider = %self.settings.name,
                    url = %remote.url,
                    %error,
                    have_keys = self.keys().fetched_at.is_some(),
                    "jwt: JWK Set fetch failed; the last good keys stay in use, retrying"
                );
                Err(error)
            }
        };
        if let Ok(mut last) = remote.outcome.lock() {
            *last = Outcome {
                at: Some(now),
                error: outcome.as_ref().err().cloned(),
            };
        }
        outcome
    }

    /// Fetches when due: `refresh` after the last attempt, or sooner while no keys were ever
    /// had. Called every second by the gateway's background task.
    pub async fn refresh_if_due(&self) {
        let Some(remote) = &self.remote else {
            return;
        };
        let Ok(mut state) = remote.state.try_lock() else {
            return; // a fetch is under way
        };
        let every = match self.keys().fetched_at {
            Some(_) => remote.refresh,
            None => remote.refresh.min(RETRY_WITHOUT_KEYS),
        };
        if state.last_attempt.is_none_or(|at| at.elapsed() >= every) {
            let _ = self.fetch_locked(remote, &mut state).await;
        }
    }

    /// A token named a `kid` no key has: fetch again unless one such fetch happened within
    /// [`UNKNOWN_KID_FLOOR`]. Returns whether keys were fetched (so the token is worth
    /// verifying again).
    ///
    /// Boxed: it is rare, and its future would otherwise enlarge every request's.
    pub fn refetch_for_unknown_kid(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        Box::pin(self.refetch_inner())
    }

    async fn refetch_inner(&self) -> bool {
        let Some(remote) = &self.remote else {
            return false;
        };
        // No keys were ever had: the background task is retrying on its own schedule, and
        // requests must not turn an issuer outage into a fetch each.
        if self.keys().fetched_at.is_none() {
            return false;
        }
        let asked = Instant::now();
        let mut state = remote.state.lock().await;
        // Another request's fetch finished while this one waited: its keys are as new.
        if state.last_attempt.is_some_and(|at| at >= asked) {
            return true;
        }
        if state
            .last_unknown_kid
            .is_some_and(|at| at.elapsed() < UNKNOWN_KID_FLOOR)
        {
            return false;
        }
        state.last_unknown_kid = Some(Instant::now());
        self.fetch_locked(remote, &mut state).await.is_ok()
    }
}
