//! One integration-test binary: modules by capability, all over real loopback sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(target_os = "linux")]
mod accept;
mod admin;
mod cli;
mod config_errors;
mod core;
mod edge;
mod faults;
// HTTP/2 attacks (issue 23) on the binary; reads its memory and CPU time from /proc.
#[cfg(target_os = "linux")]
mod h2_attacks;
mod hostile;
mod hot_reload;
mod limits;
mod openapi;
mod pool;
mod raw;
mod reload;
mod support;
mod tenants;
mod tls;
mod validation;
