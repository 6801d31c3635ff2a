//! `defaults:`: the connection-level limits, and the timeouts and limits every route and
//! upstream falls back on.

use std::path::Path;
use std::time::Duration;

use super::errors::Errors;
use super::*;
use crate::config::{self, ConfigError, RawDefaults, RawLimits};

/// The `defaults` section compiled.
pub(super) struct Defaults {
    pub server: ServerLimits,
    pub drain: Duration,
    pub connect: Duration,
    pub response_headers: Duration,
    pub body_idle: Duration,
    pub body: Duration,
    pub pool_idle: Duration,
    pub limits: Limits,
}

pub(super) fn build(raw: &RawDefaults, errors: &mut Errors<'_>) -> Defaults {
    let t = &raw.timeouts;
    let server = server_limits(errors.path(), t, &raw.limits);
    Defaults {
        server: errors.keep(server).unwrap_or_default(),
        drain: t.drain.map_or(DEFAULT_DRAIN_TIMEOUT, |d| d.0),
        connect: t.connect.map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0),
        response_headers: t
            .response_headers
            .map_or(DEFAULT_RESPONSE_HEADERS_TIMEOUT, |d| d.0),
        body_idle: t.body_idle.map_or(DEFAULT_BODY_IDLE_TIMEOUT, |d| d.0),
        body: t.body.map_or(DEFAULT_BODY_TIMEOUT, |d| d.0),
        pool_idle: t.pool_idle.map_or(DEFAULT_POOL_IDLE_TIMEOUT, |d| d.0),
        limits: Limits {
            body: DEFAULT_BODY_LIMIT,
            json_depth: DEFAULT_JSON_DEPTH,
            violations: DEFAULT_VIOLATIONS,
            response_check: DEFAULT_RESPONSE_CHECK,
        }
        .layered(&raw.limits),
    }
}

/// The connection-level limits from `defaults`; every count and size must be at least 1.
fn server_limits(
    path: &Path,
    timeouts: &config::RawTimeouts,
    limits: &RawLimits,
) -> Result<ServerLimits, ConfigError> {
    let d = ServerLimits::default();
    let unlocated = |message: String| ConfigError::file(path, format!("defaults: {message}"));
    let positive = |name: &str, value: Option<u64>, default: usize| match value {
        Some(0) => Err(unlocated(format!("limits.{name} must be at least 1"))),
        Some(n) => usize::try_from(n).map_err(|_| unlocated(format!("limits.{name} is too large"))),
        None => Ok(default),
    };
    let backlog = match &limits.backlog {
        Some(backlog) if backlog.value == 0 => {
            return Err(ConfigError::at(
                path,
                backlog.referenced,
                "defaults.limits.backlog",
                "must be at least 1 (the kernel caps it at net.core.somaxconn)",
            ))
        }
        Some(backlog) => backlog.value,
        None => d.backlog,
    };
    let size = |s: Option<config::Size>| s.map(|s| s.0);
    let count = |c: Option<usize>| c.map(|c| c as u64);
    let h2_streams = positive(
        "h2_streams",
        limits.h2_streams.map(u64::from),
        d.h2_streams as usize,
    )?;
    let header_read = timeouts.header_read.map_or(d.header_read, |t| t.0);
    let write_stall = timeouts.write_stall.map_or(d.write_stall, |t| t.0);
    if header_read.is_zero() || write_stall.is_zero() {
        return Err(unlocated(
            "timeouts.header_read and timeouts.write_stall must be above zero".to_string(),
        ));
    }
    Ok(ServerLimits {
        header_read,
        write_stall,
        headers: positive("headers", count(limits.headers), d.headers)?,
        header_bytes: positive("header_bytes", size(limits.header_bytes), d.header_bytes)?,
        uri: positive("uri", size(limits.uri), d.uri)?,
        connections: positive("connections", count(limits.connections), d.connections)?,
        in_flight: positive("in_flight", count(limits.in_flight), d.in_flight)?,
        h2_streams: u32::try_from(h2_streams).unwrap_or(u32::MAX),
        h2_resets: u32::try_from(positive(
            "h2_resets",
            limits.h2_resets.map(u64::from),
            d.h2_resets as usize,
        )?)
        .unwrap_or(u32::MAX),
        backlog,
        underscore_headers: limits.underscore_headers.unwrap_or_default(),
    })
}
