//! The compiled, immutable view of one config generation.
//!
//! `Snapshot::load` is the one place config is checked: it parses the YAML, resolves names,
//! reads mock bodies, builds the router and the upstream clients, and collects every error it
//! finds (with file, line and key) instead of stopping at the first. The request path only reads
//! a `Snapshot`; it never parses config or touches files.
//!
//! `compile` runs one build step per config section, each in its own file under
//! `snapshot/` (listeners, defaults, upstreams, redis, routes, admin, keys), all reporting into one
//! `Errors` collector. A new section is a new file and one line in `compile`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, Uri};
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::accesslog::AccessTarget;
use crate::auth::{self, ApiKey, AuthMode};
use crate::config::{
    self, ConfigError, LogColor, LogFormat, MissingTenant, RawConfig, RawLimits, RawRateLimit,
    RawRoute, RawSchemas, RawTenant, RawUpstream, RawUpstreamTls, ResponsesMode, Store, TenantFrom,
    UnderscoreHeaders, ValidationMode,
};
use crate::error::ErrorStyle;
use crate::forward::{self, ForwardPath};
use crate::ratelimit::shared::SharedStore;
use crate::ratelimit::{GatewayClock, LimitSettings, QuotaSpec, RouteLimiter};
use crate::route::Router;
use crate::schema::{CompiledSchema, SchemaDir};
use crate::tenant::{TenantRule, TenantSource};
use crate::tls::{self, ServerTls};
use crate::upstream::{HttpUpstream, Upstream, UpstreamTarget, UpstreamTls};

use http::HeaderName;

mod admin;
mod defaults;
mod errors;
mod jwt;
mod keys;
mod listeners;
mod logging;
mod openapi;
mod redis;
mod routes;
mod upstreams;

use errors::Errors;

/// Defaults named in PRODUCT.md and the issues.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_RESPONSE_HEADERS_TIMEOUT: Duration = Duration::from_secs(15);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_BODY_LIMIT: u64 = 1 << 20;
pub const DEFAULT_JSON_DEPTH: usize = 64;
pub const DEFAULT_VIOLATIONS: usize = 20;
/// Largest upstream answer body `responses: report` keeps to check (1 MiB).
pub const DEFAULT_RESPONSE_CHECK: u64 = 1024 * 1024;
pub const DEFAULT_MAX_TENANTS: usize = 100_000;
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_HEADERS: usize = 100;
pub const DEFAULT_HEADER_BYTES: u64 = 64 << 10;
pub const DEFAULT_URI_BYTES: u64 = 8 << 10;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1_024;
pub const DEFAULT_H2_STREAMS: u32 = 100;
/// Client stream resets allowed per HTTP/2 connection per second: far above what a browser
/// or gRPC client cancels, far below a rapid-reset attack (tens of thousands a second).
pub const DEFAULT_H2_RESETS: u32 = 100;
/// nginx's default listen backlog.
pub const DEFAULT_BACKLOG: u32 = 511;

#[derive(Debug)]
pub struct Snapshot {
    /// The config file this snapshot was built from.
    pub source: PathBuf,
    pub listeners: Vec<Listener>,
    pub drain_timeout: Duration,
    /// Connection-level limits: they apply before a route is known, so only `defaults` sets them.
    pub server: ServerLimits,
    pub router: Router,
    pub routes: Vec<Route>,
    pub api_keys: Vec<ApiKey>,
    /// 1 for the first snapshot, one more for each successful reload.
    pub generation: u64,
    /// The schema directory, when some route names a schema (watched for hot reload).
    pub schema_dir: Option<PathBuf>,
    pub admin: Option<AdminSettings>,
    /// `logging:`, applied at startup only.
    pub logging: Logging,
    /// A hash of everything the snapshot was built from (config text, every schema file,
    /// mock bodies, TLS files): a reload that finds it unchanged keeps the current generation.
    pub fingerprint: u64,
    /// OpenAPI documents and the files their `$ref`s name (watched for hot reload).
    pub openapi_files: Vec<PathBuf>,
    /// Certificate, key and CA files read for TLS (watched for hot reload).
    pub tls_files: Vec<PathBuf>,
    /// The `redis:` store of routes with `store: redis` (carried over while unchanged).
    pub redis: Option<Arc<SharedStore>>,
    /// The `jwt:` providers (token issuers and their keys).
    pub jwt: Vec<Arc<crate::jwt::Provider>>,
    /// JWK Set and secret files read for `jwt:` (watched for hot reload).
    pub jwt_files: Vec<PathBuf>,
}

/// `logging:` as the binary applies it at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    pub format: LogFormat,
    pub color: LogColor,
    pub access: AccessTarget,
    /// Bytes of access lines held for the writer thread before lines are dropped.
    pub access_buffer: usize,
    /// The config line of `logging.access`, for an error opening its file at startup.
    pub access_line: Option<u64>,
}

/// A listener as configured: where to bind and whether to terminate TLS.
#[derive(Debug)]
pub struct Listener {
    pub address: SocketAddr,
    pub tls: Option<Arc<ServerTls>>,
}

/// One route, with everything the request path needs already resolved.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub method: Method,
    pub path: String,
    pub upstream: Arc<Upstream>,
    pub forward_path: ForwardPath,
    pub preserve_host: bool,
    pub response_headers_timeout: Duration,
    pub limits: Limits,
    /// Longest pause in the request body, and longest the whole body may take (408).
    pub body_idle_timeout: Duration,
    pub body_timeout: Duration,
    pub auth: AuthMode,
    /// With `auth: { jwt: NAME }`: the provider and the scopes required.
    pub jwt: Option<crate::jwt::JwtRule>,
    pub schemas: RouteSchemas,
    /// Forward invalid requests anyway, reporting what would have been rejected.
    pub report_only: bool,
    /// Reject query parameters, (non-standard) headers and top-level body fields the
    /// route's schemas do not name (422).
    pub strict: bool,
    /// `responses: report`: answers compared with the documented responses (`None`: off, and
    /// the answer's body is passed on as the upstream's, unwrapped).
    pub responses: Option<ResponseChecks>,
    pub error_style: ErrorStyle,
    /// Where the tenant comes from; `None` means every request is the shared tenant.
    pub tenant: Option<TenantRule>,
    /// With `store: redis`, the limiter answers only when Redis does not (`on_error: local`).
    pub limiter: Option<Arc<RouteLimiter>>,
    /// Where the route's buckets live: this process, or the snapshot's `redis` store.
    pub store: Store,
    pub schema_files: Vec<SchemaFile>,
    /// For a route from an OpenAPI document with a request body: the media types it takes
    /// (others are 415) and whether the body is required. `None`: a hand-written route,
    /// whose body schema takes JSON only.
    pub body_media: Option<BodyMedia>,
    /// This route's metric series, resolved on first use (see `metrics::RouteSeries`).
    pub series: crate::metrics::RouteSeries,
}

/// The media types an OpenAPI operation's request body may have.
#[derive(Debug, Clone)]
pub struct BodyMedia {
    pub ranges: Vec<MediaRange>,
    /// An empty body without Content-Type is refused (400) when the body is required.
    pub required: bool,
    /// The 415 message naming what the operation accepts, when it lists media types other
    /// than `application/json` (`None`: the JSON-only message hand-written routes give).
    pub refusal: Option<std::sync::Arc<str>>,
}

/// A media type or range (`application/json`, `application/*+json`, `*/*`), lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRange {
    pub kind: String,
    pub subtype: String,
    /// Whether bodies of this type are parsed as JSON and validated.
    pub json: bool,
}

impl MediaRange {
    /// Whether `kind/subtype` (lowercase) is in this range; `application/*+json` takes any
    /// `+json` subtype.
    pub fn matches(&self, kind: &str, subtype: &str) -> bool {
        let kind_ok = self.kind == "*" || self.kind == kind;
        let subtype_ok = self.subtype == "*"
            || self.subtype == subtype
            || (self.subtype == "*+json" && subtype.ends_with("+json"));
        kind_ok && subtype_ok
    }
}

impl BodyMedia {
    /// The media types `ranges` lists, and the 415 message naming them when one is not
    /// `application/json`: `Content-Type must be application/json or text/plain`.
    pub fn new(ranges: Vec<MediaRange>, required: bool) -> BodyMedia {
        let json_only = ranges
            .iter()
            .all(|r| r.kind == "application" && r.subtype == "json");
        let refusal = (!json_only && !ranges.is_empty()).then(|| {
            let mut names: Vec<String> = Vec::new();
            for range in &ranges {
                let name = format!("{}/{}", range.kind, range.subtype);
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            let list = match names.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            };
            std::sync::Arc::from(format!("Content-Type must be {list}"))
        });
        BodyMedia {
            ranges,
            required,
            refusal,
        }
    }

    /// The 415 for a body of a media type this operation does not list.
    pub fn unsupported(&self) -> crate::error::GatewayError {
        crate::error::GatewayError::UnsupportedMediaType {
            accepted: self.refusal.clone(),
        }
    }

    /// The range a declared media type falls in, most specific first (exact type, then a
    /// `+json` or subtype wildcard, then `*/*`).
    pub fn find(&self, essence: &str) -> Option<&MediaRange> {
        let lower = essence.trim().to_ascii_lowercase();
        let (kind, subtype) = lower.split_once('/')?;
        let rank = |r: &MediaRange| (r.kind == "*") as u8 * 2 + (r.subtype.contains('*')) as u8;
        self.ranges
            .iter()
            .filter(|r| r.matches(kind, subtype))
            .min_by_key(|r| rank(r))
    }
}

/// Where the admin listener is and who may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub address: SocketAddr,
    pub token: Option<String>,
}

/// A schema file a route uses, for the status page.
#[derive(Debug, Clone)]
pub struct SchemaFile {
    pub location: &'static str,
    pub file: String,
    pub sha256: String,
}

/// The compiled schema of each location a route validates.
#[derive(Debug, Default)]
pub struct RouteSchemas {
    pub body: Option<CompiledSchema>,
    pub query: Option<CompiledSchema>,
    pub headers: Option<CompiledSchema>,
    pub path: Option<CompiledSchema>,
    /// From an OpenAPI document's `in: cookie` parameters.
    pub cookies: Option<CompiledSchema>,
    /// The upstream's documented success body: published by the OpenAPI export, and with
    /// `responses: report` compared with 2xx answers.
    pub response: Option<CompiledSchema>,
    /// From an OpenAPI document: each documented response (status, JSON body schema).
    pub responses: Vec<DocumentedResponse>,
}

/// One documented response of an operation: `"200"`, `"2XX"` or `default`.
#[derive(Debug)]
pub struct DocumentedResponse {
    pub status: StatusMatch,
    /// The JSON body's schema; `None` when the response documents no JSON body.
    pub schema: Option<CompiledSchema>,
}

/// Which statuses a documented response is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    Exact(u16),
    /// `2XX`: the first digit.
    Range(u16),
    Default,
}

/// `responses: report`: how a route's upstream answers are compared.
#[derive(Debug)]
pub struct ResponseChecks {
    /// Largest body kept for the check (`limits.response_check`).
    pub cap: u64,
    /// Hand-written: 2xx answers against `schemas.response`, other statuses not compared.
    pub success_only: bool,
}

/// What a route documents for an answer's status.
#[derive(Debug, Clone, Copy)]
pub enum Documented<'r> {
    /// Nothing: the status is a mismatch.
    Undocumented,
    /// Documented, without a JSON body schema (or not compared: a hand-written route's
    /// non-2xx answers).
    NoSchema,
    /// Documented, with this JSON body schema.
    Body(&'r CompiledSchema),
}

impl Route {
    /// The documented response `status` falls under (exact code first, then its range, then
    /// `default`), and its body schema.
    pub fn documented_response(&self, status: u16) -> Documented<'_> {
        let Some(checks) = &self.responses else {
            return Documented::NoSchema;
        };
        let schema = if checks.success_only {
            if !(200..300).contains(&status) {
                return Documented::NoSchema;
            }
            self.schemas.response.as_ref()
        } else {
            let documented = &self.schemas.responses;
            let find = |m: StatusMatch| documented.iter().find(|d| d.status == m);
            let found = find(StatusMatch::Exact(status))
                .or_else(|| find(StatusMatch::Range(status / 100)))
                .or_else(|| find(StatusMatch::Default));
            match found {
                Some(d) => d.schema.as_ref(),
                None => return Documented::Undocumented,
            }
        };
        schema.map_or(Documented::NoSchema, Documented::Body)
    }
}

/// Limits on connections and request heads, from `defaults` (see the config reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    pub header_read: Duration,
    pub write_stall: Duration,
    pub headers: usize,
    pub header_bytes: usize,
    pub uri: usize,
    pub connections: usize,
    pub in_flight: usize,
    pub h2_streams: u32,
    pub h2_resets: u32,
    /// The listen(2) backlog of every listener; used only when binding (a restart applies it).
    pub backlog: u32,
    /// Whether request header fields with `_` in their name are dropped.
    pub underscore_headers: UnderscoreHeaders,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub body: u64,
    pub json_depth: usize,
    pub violations: usize,
    /// Largest upstream answer kept for `responses: report`.
    pub response_check: u64,
}

impl Limits {
    fn layered(&self, raw: &RawLimits) -> Limits {
        Limits {
            body: raw.body.map_or(self.body, |s| s.0),
            json_depth: raw.json_depth.unwrap_or(self.json_depth),
            violations: raw.violations.unwrap_or(self.violations),
            response_check: raw.response_check.map_or(self.response_check, |s| s.0),
        }
    }
}

impl Snapshot {
    /// Reads and compiles the config at `path`. Returns every problem found.
    pub fn load(path: &Path) -> Result<Snapshot, Vec<ConfigError>> {
        Snapshot::load_with_env(path, |name| std::env::var(name).ok())
    }

    /// Like [`Snapshot::load`], with `${VAR}` looked up by `env`.
    pub fn load_with_env(
        path: &Path,
        env: impl Fn(&str) -> Option<String> + 'static,
    ) -> Result<Snapshot, Vec<ConfigError>> {
        Snapshot::load_with(path, env, &GatewayClock::real())
    }

    /// Like [`Snapshot::load_with_env`], with rate limiters on `clock` (tests pass a fake one).
    pub fn load_with(
        path: &Path,
        env: impl Fn(&str) -> Option<String> + 'static,
        clock: &GatewayClock,
    ) -> Result<Snapshot, Vec<ConfigError>> {
        let text = crate::files::read_capped(path, crate::files::MAX_CONFIG_FILE)
            .and_then(|bytes| {
                String::from_utf8(bytes).map_err(|_| "is not valid UTF-8".to_string())
            })
            .map_err(|e| {
                vec![ConfigError::file(
                    path,
                    format!("cannot read config file: {e}"),
                )]
            })?;
        Snapshot::from_text(path, &text, env, clock)
    }

    /// Like [`Snapshot::load_with`], from config text already read: `path` names the file in
    /// errors, and relative paths (schema directory, mock bodies) resolve against its
    /// directory, which is still read. The fuzz targets use this to avoid a file per input.
    pub fn from_text(
        path: &Path,
        text: &str,
        env: impl Fn(&str) -> Option<String> + 'static,
        clock: &GatewayClock,
    ) -> Result<Snapshot, Vec<ConfigError>> {
        let raw = config::parse_with_env(path, text, env).map_err(|e| vec![e])?;
        let mut snapshot = compile(path, raw, clock)?;
        snapshot.fingerprint = fingerprint(text, &snapshot);
        Ok(snapshot)
    }

    /// The schemas of the routes from `openapi:` documents, as files for `schemagate
    /// openapi` (`openapi/<name>.json` and `openapi/<name>/<operation>.<location>.json`):
    /// the config and its documents read again (the snapshot keeps no copy of them).
    pub fn openapi_export_files(&self) -> Result<Vec<(String, Arc<Value>)>, Vec<ConfigError>> {
        let path = &self.source;
        let text = crate::files::read_capped(path, crate::files::MAX_CONFIG_FILE)
            .and_then(|b| String::from_utf8(b).map_err(|_| "is not valid UTF-8".to_string()))
            .map_err(|e| {
                vec![ConfigError::file(
                    path,
                    format!("cannot read config file: {e}"),
                )]
            })?;
        let raw = config::parse_with_env(path, &text, |name| std::env::var(name).ok())
            .map_err(|e| vec![e])?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut errors = Errors::new(path);
        let imported = openapi::import(&raw, &base_dir, true, &mut errors);
        errors.finish()?;
        Ok(imported.export)
    }

    /// A human-readable route table, for `schemagate check`.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{}: OK, {} route(s), listening on {}\n",
            self.source.display(),
            self.routes.len(),
            self.listeners
                .iter()
                .map(|l| match l.tls {
                    Some(_) => format!("{} (TLS)", l.address),
                    None => l.address.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        let width = self.routes.iter().map(|r| r.name.len()).max().unwrap_or(0);
        for route in &self.routes {
            out.push_str(&format!(
                "  {:width$}  {:6} {}  -> {}\n",
                route.name,
                route.method.as_str(),
                route.path,
                route.upstream.describe(),
            ));
        }
        out
    }
}

/// Compiles the raw config, one build step per section, each in its own file under
/// `snapshot/`. Every step runs whatever the others found, so one run reports every problem.
fn compile(
    path: &Path,
    raw: RawConfig,
    clock: &GatewayClock,
) -> Result<Snapshot, Vec<ConfigError>> {
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut errors = Errors::new(path);
    // The TLS files read, by listeners and upstreams alike: watched, and fingerprinted.
    let mut material = tls::Material::default();
    let listeners = listeners::build(&raw.listeners, &base_dir, &mut material, &mut errors);
    let defaults = defaults::build(&raw.defaults, &mut errors);
    let upstreams = upstreams::build(
        &raw.upstreams,
        &base_dir,
        &defaults,
        &mut material,
        &mut errors,
    );
    let redis = redis::build(raw.redis.as_ref(), &base_dir, &mut errors);
    let schemas = routes::schema_dir(&raw, &base_dir, &mut errors);
    let jwt = jwt::build(&raw.jwt, &base_dir, &defaults, &mut material, &mut errors);
    let context = routes::Context {
        raw: &raw,
        jwt: &jwt.providers,
        defaults: &defaults,
        upstreams: &upstreams,
        schemas: &schemas,
        clock,
    };
    let imported = openapi::import(&raw, &base_dir, false, &mut errors);
    let (router, routes) = routes::build(&context, imported.operations, &mut errors);
    let admin = admin::build(raw.admin.as_ref(), &mut errors);
    let api_keys = keys::build(&raw.api_keys, &mut errors);
    let logging = logging::build(&raw.logging, &base_dir, &mut errors);
    errors.finish()?;
    Ok(Snapshot {
        source: path.to_path_buf(),
        listeners,
        drain_timeout: defaults.drain,
        server: defaults.server,
        router,
        routes,
        api_keys,
        generation: 1,
        schema_dir: schemas.used.then_some(schemas.path),
        admin,
        logging,
        // The schemas' and TLS files' share of the fingerprint, from the very bytes used.
        fingerprint: schemas.dir.as_ref().map_or(0, SchemaDir::content_hash)
            ^ material.hash()
            ^ imported.hash
            ^ jwt.hash,
        openapi_files: imported.files,
        tls_files: material.files,
        redis,
        jwt: jwt.providers,
        jwt_files: jwt.files,
    })
}

/// Hashes the config text, the schema files as they were scanned for this snapshot (see
/// `SchemaDir::content_hash`, stored in `fingerprint` by `compile`), the mock bodies and the
/// Redis password and TLS files.
fn fingerprint(config_text: &str, snapshot: &Snapshot) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    config_text.hash(&mut hasher);
    snapshot.fingerprint.hash(&mut hasher);
    for route in &snapshot.routes {
        if let UpstreamTarget::Mock { status, body, .. } = &route.upstream.target {
            (status.as_u16(), body).hash(&mut hasher);
        }
    }
    // A new password in `redis.password_file` or a new `redis.tls` file is a new generation
    // (and a new connection).
    if let Some(store) = &snapshot.redis {
        store.settings().target.hash(&mut hasher);
    }
    hasher.finish()
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read: DEFAULT_HEADER_READ_TIMEOUT,
            write_stall: DEFAULT_WRITE_STALL_TIMEOUT,
            headers: DEFAULT_MAX_HEADERS,
            header_bytes: DEFAULT_HEADER_BYTES as usize,
            uri: DEFAULT_URI_BYTES as usize,
            connections: DEFAULT_MAX_CONNECTIONS,
            in_flight: DEFAULT_MAX_IN_FLIGHT,
            h2_streams: DEFAULT_H2_STREAMS,
            h2_resets: DEFAULT_H2_RESETS,
            backlog: DEFAULT_BACKLOG,
            underscore_headers: UnderscoreHeaders::default(),
        }
    }
}
