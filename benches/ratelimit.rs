//! Tenant resolution + limiter check with 1, 1 000 and 100 000 active tenants: the cost
//! should stay flat. Run with `cargo bench --bench ratelimit`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use schemagate::ratelimit::{GatewayClock, LimitSettings, QuotaSpec, RouteLimiter};
use schemagate::tenant::{self, TenantRule, TenantSource};

fn limiter_with(active: usize) -> RouteLimiter {
    let settings = LimitSettings {
        // High enough that the benchmark measures the check, not 429s.
        spec: QuotaSpec::parse("1000000/s", Some(1_000_000)).unwrap(),
        tiers: Vec::new(),
        ceiling: None,
        max_tenants: 200_000,
        report_only: false,
    };
    let limiter = RouteLimiter::new(&settings, &GatewayClock::real()).unwrap();
    for i in 0..active {
        limiter.check(&format!("{i}"));
    }
    limiter
}

fn resolve_and_check(c: &mut Criterion) {
    let rule = TenantRule {
        source: TenantSource::Header(HeaderName::from_static("x-tenant")),
        shared_when_missing: false,
    };
    let params = schemagate::route::Params::default();
    for active in [1usize, 1_000, 100_000] {
        let limiter = limiter_with(active);
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", HeaderValue::from(active as u64 / 2));
        c.bench_function(&format!("tenant+limit/{active} active tenants"), |b| {
            b.iter(|| {
                let inputs = tenant::Inputs {
                    headers: black_box(&headers),
                    query: None,
                    params: &params,
                    body: None,
                    key: None,
                    client: None,
                    claims: None,
                };
                let who = tenant::resolve(&rule, &inputs).unwrap();
                black_box(limiter.check(&who))
            })
        });
    }
}

criterion_group!(benches, resolve_and_check);
criterion_main!(benches);
