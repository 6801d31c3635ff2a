//! Stage: per-tenant rate limits (GCRA, governor), 429 when a tenant is over its quota.
//!
//! Each limited route owns one [`RouteLimiter`]: a keyed limiter for tenants on the route's
//! quota, one direct limiter per tier (tenants named in config with their own quota), and an
//! optional route-wide ceiling. Memory is bounded: the keyed store holds at most
//! `max_tenants` keys; tenants arriving when it is full share one overflow bucket, and idle
//! keys are swept (`retain_recent`) periodically and whenever the store fills up.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, FakeRelativeClock, Reference};
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{NotUntil, Quota, RateLimiter};

pub mod shared;

/// The clock limiters run on: real time, or a fake one that tests advance by hand.
#[derive(Debug, Clone)]
pub enum GatewayClock {
    Real(std::time::Instant),
    Fake(FakeRelativeClock),
}

impl GatewayClock {
    pub fn real() -> Self {
        GatewayClock::Real(std::time::Instant::now())
    }
}

impl Default for GatewayClock {
    fn default() -> Self {
        GatewayClock::real()
    }
}

impl Clock for GatewayClock {
    type Instant = Nanos;
    fn now(&self) -> Nanos {
        match self {
            GatewayClock::Real(start) => Nanos::from(start.elapsed()),
            GatewayClock::Fake(fake) => fake.now(),
        }
    }
}

/// A quota as written in config: `100/s`, `6000/min`, `10/h`, with an optional burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaSpec {
    pub count: u32,
    pub per: Duration,
    pub burst: u32,
}

impl QuotaSpec {
    /// Parses `N/unit` (unit `s`, `sec`, `second`, `m`, `min`, `minute`, `h`, `hour`).
    pub fn parse(text: &str, burst: Option<u32>) -> Result<QuotaSpec, String> {
        let bad = || format!("invalid quota {text:?}; write e.g. `100/s`, `6000/min` or `10/h`");
        let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!("quota {text:?} admits nothing; use at least 1"));
        }
        let burst = burst.unwrap_or(count);
        if burst == 0 {
            return Err("burst must be at least 1".to_string());
        }
        Ok(QuotaSpec { count, per, burst })
    }

    fn quota(&self) -> Result<Quota, String> {
        let interval = self.per / self.count;
        let burst = NonZeroU32::new(self.burst).ok_or("burst must be at least 1")?;
        Quota::with_period(interval)
            .map(|q| q.allow_burst(burst))
            .ok_or_else(|| "quota is too fine-grained".to_string())
    }
}

type Direct = RateLimiter<NotKeyed, InMemoryState, GatewayClock, StateInformationMiddleware>;
type Keyed = RateLimiter<String, BoundedStore<String>, GatewayClock, StateInformationMiddleware>;

/// A keyed state store with at most `cap` keys. Keys arriving when it is full share one
/// overflow bucket instead of growing memory; keys already present keep their own state.
pub struct BoundedStore<K: Hash + Eq + Clone> {
    keys: DashMapStateStore<K>,
    overflow: DashMapStateStore<()>,
    cap: usize,
    /// Set when a key was sent to the overflow bucket; the limiter then sweeps (at most once
    /// a second) and clears it. Shared with the [`RouteLimiter`], which cannot reach its
    /// store through governor's limiter.
    full: Arc<AtomicBool>,
}

impl<K: Hash + Eq + Clone> StateStore for BoundedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        // `len` may lag concurrent inserts by a few keys; the bound is approximate by at most
        // the number of worker threads.
        if self.keys.contains_key(key) || self.keys.len() < self.cap {
            self.keys.measure_and_replace(key, f)
        } else {
            self.full.store(true, Ordering::Relaxed);
            self.overflow.measure_and_replace(&(), f)
        }
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for BoundedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.keys.retain_recent(drop_below);
        self.overflow.retain_recent(drop_below);
    }

    fn shrink_to_fit(&self) {
        self.keys.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// What the limiter tells the client on every response of a limited route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitInfo {
    /// The burst capacity (`RateLimit-Limit`).
    pub limit: u32,
    /// Requests that could be made now (`RateLimit-Remaining`).
    pub remaining: u32,
    /// Seconds until the bucket is full again (`RateLimit-Reset`).
    pub reset_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed(LimitInfo),
    /// Over the quota; `retry_after_secs` is rounded up and at least 1.
    Throttled {
        info: LimitInfo,
        retry_after_secs: u64,
    },
}

/// The rate limit of one route. Built once per snapshot.
pub struct RouteLimiter {
    /// What it was built from; a reload with equal settings keeps this limiter (and its state).
    settings: LimitSettings,
    keyed: Keyed,
    tiers: HashMap<String, (QuotaSpec, Direct)>,
    ceiling: Option<(QuotaSpec, Direct)>,
    clock: GatewayClock,
    /// Clock reading (ns) of the last sweep, so a full store sweeps at most once a second.
    last_sweep: AtomicU64,
    /// The keyed store's [`BoundedStore::full`]: one atomic load per check instead of
    /// counting the keys of every shard.
    full: Arc<AtomicBool>,
}

impl std::fmt::Debug for RouteLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteLimiter")
            .field("spec", &self.settings.spec)
            .field("tiers", &self.tiers.keys().collect::<Vec<_>>())
            .field("ceiling", &self.ceiling.as_ref().map(|(s, _)| s))
            .field("max_tenants", &self.settings.max_tenants)
            .finish_non_exhaustive()
    }
}

/// The settings a [`RouteLimiter`] is built from; equal settings can share limiter state
/// across config reloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSettings {
    pub spec: QuotaSpec,
    pub tiers: Vec<(String, QuotaSpec)>,
    pub ceiling: Option<QuotaSpec>,
    pub max_tenants: usize,
    pub report_only: bool,
}

impl RouteLimiter {
    pub fn new(settings: &LimitSettings, clock: &GatewayClock) -> Result<RouteLimiter, String> {
        let direct = |spec: &QuotaSpec| -> Result<Direct, String> {
            Ok(RateLimiter::direct_with_clock(spec.quota()?, clock.clone())
                .with_middleware::<StateInformationMiddleware>())
        };
        let full = Arc::new(AtomicBool::new(false));
        let store = BoundedStore {
            keys: DashMap::default(),
            overflow: DashMap::default(),
            cap: settings.max_tenants,
            full: Arc::clone(&full),
        };
        let keyed: Keyed =
            RateLimiter::<_, _, _, governor::middleware::NoOpMiddleware<Nanos>>::new(
                settings.spec.quota()?,
                store,
                clock.clone(),
            )
            .with_middleware::<StateInformationMiddleware>();
        let mut tiers = HashMap::new();
        for (tenant, spec) in &settings.tiers {
            tiers.insert(tenant.clone(), (*spec, direct(spec)?));
        }
        let ceiling = match &settings.ceiling {
            Some(spec) => Some((*spec, direct(spec)?)),
            None => None,
        };
        Ok(RouteLimiter {
            settings: settings.clone(),
            keyed,
            tiers,
            ceiling,
            clock: clock.clone(),
            last_sweep: AtomicU64::new(0),
            full,
        })
    }

    /// Takes one request from `tenant`'s bucket (and the route ceiling, if any).
    pub fn check(&self, tenant: &str) -> Outcome {
        self.check_with(tenant, None)
    }

    /// [`check`](Self::check) for a tenant the caller already owns (the request path's):
    /// the keyed store is searched with it as it is, not with a copy.
    pub fn check_owned(&self, tenant: &String) -> Outcome {
        self.check_with(tenant, Some(tenant))
    }

    fn check_with(&self, tenant: &str, owned: Option<&String>) -> Outcome {
        let own = match self.tiers.get(tenant) {
            Some((_, limiter)) => limiter.check(),
            None => {
                if self.full.load(Ordering::Relaxed) {
                    self.sweep_if_due();
                }
                match owned {
                    Some(key) => self.keyed.check_key(key),
                    None => self.keyed.check_key(&tenant.to_string()),
                }
            }
        };
        let outcome = self.outcome(own);
        if let (Outcome::Allowed(_), Some((_, ceiling))) = (&outcome, &self.ceiling) {
            if let Err(not_until) = ceiling.check() {
                return self.throttled(&not_until);
            }
        }
        outcome
    }

    fn outcome(&self, result: Result<StateSnapshot, NotUntil<Nanos>>) -> Outcome {
        match result {
            Ok(snapshot) => Outcome::Allowed(info(&snapshot)),
            Err(not_until) => self.throttled(&not_until),
        }
    }

    fn throttled(&self, not_until: &NotUntil<Nanos>) -> Outcome {
        let quota = not_until.quota();
        let wait = not_until.wait_time_from(self.clock.now());
        let limit = quota.burst_size().get();
        Outcome::Throttled {
            info: LimitInfo {
                limit,
                remaining: 0,
                reset_secs: ceil_secs(quota.replenish_interval() * limit),
            },
            retry_after_secs: ceil_secs(wait).max(1),
        }
    }

    /// Drops the state of tenants idle long enough to be back at a full bucket.
    pub fn sweep(&self) {
        self.full.store(false, Ordering::Relaxed);
        self.keyed.retain_recent();
        self.keyed.shrink_to_fit();
        self.last_sweep
            .store(self.clock.now().as_u64(), Ordering::Relaxed);
    }

    fn sweep_if_due(&self) {
        let now = self.clock.now();
        let last = Nanos::new(self.last_sweep.load(Ordering::Relaxed));
        if now.duration_since(last) >= Nanos::from(Duration::from_secs(1)) {
            self.sweep();
        }
    }

    /// Whether `tenant` is named in config (has a tier), so it may be a metric label.
    pub fn is_named(&self, tenant: &str) -> bool {
        self.tiers.contains_key(tenant)
    }

    /// Tenants with their own state right now (bounded by `max_tenants`).
    pub fn tracked_tenants(&self) -> usize {
        self.keyed.len()
    }

    pub fn spec(&self) -> QuotaSpec {
        self.settings.spec
    }

    /// The quota `tenant` is held to: its tier's when config names it, else the route's.
    pub fn spec_for(&self, tenant: &str) -> QuotaSpec {
        self.tiers
            .get(tenant)
            .map_or(self.settings.spec, |(spec, _)| *spec)
    }

    /// The route-wide quota every tenant's admitted requests also count against.
    pub fn ceiling(&self) -> Option<QuotaSpec> {
        self.settings.ceiling
    }

    /// Count and log what would be throttled, but forward anyway.
    pub fn report_only(&self) -> bool {
        self.settings.report_only
    }

    pub fn settings(&self) -> &LimitSettings {
        &self.settings
    }
}

fn info(snapshot: &StateSnapshot) -> LimitInfo {
    let quota = snapshot.quota();
    let limit = quota.burst_size().get();
    let remaining = snapshot.remaining_burst_capacity();
    LimitInfo {
        limit,
        remaining,
        reset_secs: ceil_secs(quota.replenish_interval() * (limit - remaining.min(limit))),
    }
}

fn ceil_secs(duration: Duration) -> u64 {
    let secs = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(quota: &str, burst: Option<u32>) -> LimitSettings {
        LimitSettings {
            spec: QuotaSpec::parse(quota, burst).unwrap(),
            tiers: Vec::new(),
            ceiling: None,
            max_tenants: 1000,
            report_only: false,
        }
    }

    fn fake() -> (GatewayClock, FakeRelativeClock) {
        let fake = FakeRelativeClock::default();
        (GatewayClock::Fake(fake.clone()), fake)
    }

    fn admitted(limiter: &RouteLimiter, tenant: &str, n: usize) -> usize {
        (0..n)
            .filter(|_| matches!(limiter.check(tenant), Outcome::Allowed(_)))
            .count()
    }

    #[test]
    fn quota_parsing() {
        let q = QuotaSpec::parse("100/s", None).unwrap();
        assert_eq!(
            (q.count, q.per, q.burst),
            (100, Duration::from_secs(1), 100)
        );
        assert_eq!(QuotaSpec::parse("6000/min", Some(5)).unwrap().burst, 5);
        for bad in ["100", "x/s", "10/day", "0/s", "-1/s"] {
            assert!(QuotaSpec::parse(bad, None).is_err(), "{bad}");
        }
        assert!(QuotaSpec::parse("1/s", Some(0)).is_err());
    }

    #[test]
    fn burst_then_steady_rate_on_a_fake_clock() {
        let (clock, fake) = fake();
        let limiter = RouteLimiter::new(&settings("10/s", Some(20)), &clock).unwrap();
        assert_eq!(admitted(&limiter, "a", 200), 20);
        // Other tenants are unaffected.
        assert_eq!(admitted(&limiter, "b", 5), 5);
        // 10/s replenishes one request per 100 ms.
        fake.advance(Duration::from_millis(1000));
        assert_eq!(admitted(&limiter, "a", 50), 10);
        match limiter.check("a") {
            Outcome::Throttled {
                retry_after_secs,
                info,
            } => {
                assert_eq!(retry_after_secs, 1);
                assert_eq!((info.limit, info.remaining), (20, 0));
                assert_eq!(info.reset_secs, 2);
            }
            other => panic!("expected throttled, got {other:?}"),
        }
    }

    #[test]
    fn remaining_counts_down() {
        let (clock, _) = fake();
        let limiter = RouteLimiter::new(&settings("5/min", None), &clock).unwrap();
        let remaining: Vec<u32> = (0..5)
            .map(|_| match limiter.check("t") {
                Outcome::Allowed(info) => info.remaining,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(remaining, [4, 3, 2, 1, 0]);
        match limiter.check("t") {
            Outcome::Throttled {
                retry_after_secs, ..
            } => assert_eq!(retry_after_secs, 12),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tiers_and_ceiling() {
        let (clock, _) = fake();
        let mut s = settings("1/min", Some(2));
        s.tiers
            .push(("gold".into(), QuotaSpec::parse("1/min", Some(10)).unwrap()));
        let limiter = RouteLimiter::new(&s, &clock).unwrap();
        assert_eq!(admitted(&limiter, "gold", 50), 10);
        assert_eq!(admitted(&limiter, "plain", 50), 2);

        let mut s = settings("1/min", Some(5));
        s.ceiling = Some(QuotaSpec::parse("1/min", Some(7)).unwrap());
        let limiter = RouteLimiter::new(&s, &clock).unwrap();
        assert_eq!(admitted(&limiter, "a", 50), 5);
        // The route-wide ceiling stops the next tenant after 2 more.
        assert_eq!(admitted(&limiter, "b", 50), 2);
    }

    #[test]
    fn distinct_tenants_never_exceed_the_cap() {
        let (clock, fake) = fake();
        let mut s = settings("1/s", Some(1));
        s.max_tenants = 1000;
        let limiter = RouteLimiter::new(&s, &clock).unwrap();
        for i in 0..200_000 {
            limiter.check(&format!("tenant-{i}"));
            if i % 50_000 == 0 {
                fake.advance(Duration::from_millis(10));
            }
        }
        assert!(
            limiter.tracked_tenants() <= 1000,
            "{}",
            limiter.tracked_tenants()
        );
        // Tenants admitted before the store filled keep their own state.
        assert!(matches!(
            limiter.check("tenant-0"),
            Outcome::Throttled { .. }
        ));
        // Once idle tenants are back at a full bucket, a sweep reclaims them.
        fake.advance(Duration::from_secs(5));
        limiter.sweep();
        assert_eq!(limiter.tracked_tenants(), 0);
        assert!(matches!(limiter.check("new"), Outcome::Allowed(_)));
    }
}
