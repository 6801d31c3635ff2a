//! One integration-test binary: modules by capability, all over real loopback sockets.
//! Each line says what goes there; a new test goes in the module whose line fits it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// Running out of file descriptors in the accept loop (the binary under a low ulimit).
#[cfg(target_os = "linux")]
mod accept;
// The admin listener: metrics, health, status, reload, token, the dashboard (chromium).
mod admin;
// The binary as users run it: `check`, `serve`, `validate`, SIGHUP, one worker.
mod cli;
// Config errors: file, line and key; every error at once.
mod config_errors;
// Routing, forwarding fidelity, hop-by-hop, X-Forwarded-*, request ids.
mod core;
// Edge defects through the binary: metric labels, CL+TE answers, backlog, underscores.
mod edge;
// Misbehaving upstreams (hand-written servers): resets, garbage, stalls, timeouts.
mod faults;
// HTTP/2 attacks on the binary; reads its memory and CPU time from /proc.
#[cfg(target_os = "linux")]
mod h2_attacks;
// Hostile HTTP/1 as raw bytes: smuggling, malformed heads, bare answers.
mod hostile;
// Hot reload through the binary on real layouts, under steady traffic.
mod hot_reload;
// `auth: { jwt: NAME }`: tokens per algorithm and class, scopes, claim headers and tenants.
mod jwt;
// Limits and timeouts: heads, bodies, connections, in-flight, write stalls.
mod limits;
// `schemagate openapi` and the document's error bodies.
mod openapi;
// Logs through the binary: access lines on stdout (or a file), diagnostics on stderr,
// colour, flushing at SIGTERM, lines dropped and counted when nobody reads.
mod logging;
// OpenAPI documents as routes: the differential test against the hand-written routes,
// document features, config errors, hot reload, and GitHub's REST description (npm).
mod openapi_import;
// The upstream connection pool: reuse, eviction, closed connections.
mod pool;
// Raw HTTP/1 framing a client library will not produce.
mod raw;
// The examples of README.md and docs/*.md, run with real curl against the binary.
mod readme;
mod redis;
#[path = "../common/redis_server.rs"]
mod redis_server;
// Hot reload in process: new routes and schemas, broken ones refused, carry-over.
mod reload;
// `responses: report`: upstream answers compared with the documented responses.
mod responses;
// Fixtures: upstreams, gateways (in process and the binary), requests.
mod support;
// API keys, tenants and per-tenant rate limits, on a fake clock.
mod tenants;
// TLS on both sides: ALPN, SNI, key formats, rotation, client certificates, h2 upstreams.
mod tls;
// Validation of the five documented endpoints, as data: request in, answer out.
mod validation;
