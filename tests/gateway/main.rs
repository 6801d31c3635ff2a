//! One integration-test binary: modules by capability, all over real loopback sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod cli;
mod config_errors;
mod core;
mod pool;
mod reload;
mod support;
mod tenants;
mod validation;
