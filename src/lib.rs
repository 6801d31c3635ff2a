//! schemagate: a schema-validating API gateway.
//!
//! The modules in the order a request meets them (ARCHITECTURE.md has the code map, and the
//! request's path with each stage's answers); rustfmt sorts the declarations below.
//!
//! The request's path:
//! - `server`: listeners, connections, HTTP/1's head deadline, HTTP/2's lifetime limits, drain.
//! - `proxy`: the infallible handler around the stages, in order; the access log.
//! - `conformance`: stage 0, what RFC 9112 requires refusing and hyper lets through (400).
//! - `route`: stage 1, method and path to a route (404/405).
//! - `auth`: stage 2, credentials and API keys (401).
//! - `framing`: stage 3, the request body from start to end (415/413/408/400).
//! - `tenant`: who the request acts for (400/403).
//! - `ratelimit`: GCRA per route and tenant (429).
//! - `validate`: schema violations, all at once (422), and the validation mode.
//! - `forward`: the heads as they cross the gateway (hop-by-hop, X-Forwarded-*).
//! - `upstream`: pooled clients, the built-in mock, relaying answers (502/504).
//! - `error`: every failure, its status and its envelope.
//!
//! What the stages read: `snapshot` (the compiled config), `state` (what connections, the
//! admin listener and the reloader share), `schema`, `body` (body types and their guard),
//! `tls`, `metrics`.
//!
//! Building snapshots: `config` (the YAML shapes, a leaf), `files` (reading what a config
//! names, a leaf), `reload` (hot reload and the file watch).
//!
//! Around the gateway: `accesslog` (the access log's buffer and writer thread), `admin` (health, status, metrics, reload, dashboard), `openapi`
//! (`schemagate openapi`), `fuzzing` (the fuzz targets' bodies).

pub mod accesslog;
pub mod admin;
pub mod auth;
pub mod body;
pub mod config;
pub mod conformance;
pub mod error;
pub mod files;
pub mod forward;
pub mod framing;
#[doc(hidden)]
pub mod fuzzing;
pub mod jwt;
pub mod metrics;
pub mod openapi;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod response_check;
pub mod route;
pub mod schema;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod tenant;
pub mod tls;
pub mod upstream;
pub mod validate;

pub use server::Gateway;
pub use snapshot::Snapshot;
