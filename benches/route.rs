//! Route match (stage 1): method + path over the shipped config's router, for a hit, a
//! wrong method (405) and a miss (404), and a hit on a templated path. Target: < 200 ns.
//! Run with `cargo bench --bench route`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use schemagate::route::Router;
use schemagate::Snapshot;

fn shipped(c: &mut Criterion) {
    // The shipped config with its built-in mock upstreams (no *_UPSTREAM set): the router
    // is the one `schemagate serve` builds.
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.yaml");
    let snapshot = Snapshot::load(&config).unwrap();
    let router = &snapshot.router;
    let cases = [
        (
            "hit POST /v1/conversations",
            Method::POST,
            "/v1/conversations",
        ),
        (
            "hit GET /conversations/search",
            Method::GET,
            "/conversations/search",
        ),
        (
            "405 DELETE /v1/conversations",
            Method::DELETE,
            "/v1/conversations",
        ),
        ("404 /v1/unknown", Method::GET, "/v1/unknown"),
    ];
    for (name, method, path) in cases {
        c.bench_function(&format!("route/shipped {name}"), |b| {
            b.iter(|| black_box(router.find(black_box(&method), black_box(path)).is_ok()))
        });
    }
}

fn templated(c: &mut Criterion) {
    let mut router = Router::new();
    router.add(Method::GET, "/v1/items", 0).unwrap();
    router.add(Method::GET, "/v1/items/{id}", 1).unwrap();
    router.add(Method::PUT, "/v1/items/{id}", 2).unwrap();
    router
        .add(Method::GET, "/v1/items/{id}/parts/{part}", 3)
        .unwrap();
    c.bench_function("route/templated GET /v1/items/{id}/parts/{part}", |b| {
        b.iter(|| {
            let found = router
                .find(black_box(&Method::GET), black_box("/v1/items/42/parts/7"))
                .unwrap();
            black_box(found.params.get("part"))
        })
    });
}

criterion_group!(benches, shipped, templated);
criterion_main!(benches);
