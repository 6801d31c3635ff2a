//! schemagate: a schema-validating API gateway.
//!
//! The modules follow the request's path: `server` accepts connections, `proxy` runs the
//! stages (`route`, `auth`, `tenant`, `framing`, `validate`, `ratelimit`, then `forward` +
//! `upstream`), and `error` turns failures into envelopes.
//! `config` holds the YAML shapes and `snapshot` compiles them into what requests read.

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
pub mod metrics;
pub mod openapi;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
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
