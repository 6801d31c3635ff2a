//! The compiled, immutable view of one config generation.
//!
//! `Snapshot::load` is the one place config is checked: it parses the YAML, resolves names,
//! reads mock bodies, builds the router and the upstream clients, and collects every error it
//! finds (with file, line and key) instead of stopping at the first. The request path only reads
//! a `Snapshot`; it never parses config or touches files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, Uri};
use serde_saphyr::Spanned;

use crate::auth::{self, ApiKey, AuthMode};
use crate::config::{
    self, ConfigError, LogFormat, MissingTenant, RawConfig, RawLimits, RawListenerTls,
    RawRateLimit, RawRoute, RawSchemas, RawTenant, RawUpstream, RawUpstreamTls, TenantFrom,
    UnderscoreHeaders, ValidationMode,
};
use crate::error::ErrorStyle;
use crate::forward::{self, ForwardPath};
use crate::ratelimit::{GatewayClock, LimitSettings, QuotaSpec, RouteLimiter};
use crate::route::Router;
use crate::schema::{CompiledSchema, SchemaDir};
use crate::tenant::{TenantRule, TenantSource};
use crate::tls::{self, ServerTls};
use crate::upstream::{HttpUpstream, Upstream, UpstreamTarget, UpstreamTls};

use http::HeaderName;

/// Defaults named in PRODUCT.md and the issues.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_RESPONSE_HEADERS_TIMEOUT: Duration = Duration::from_secs(15);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_BODY_LIMIT: u64 = 1 << 20;
pub const DEFAULT_JSON_DEPTH: usize = 64;
pub const DEFAULT_VIOLATIONS: usize = 20;
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
    pub log_format: LogFormat,
    /// A hash of everything the snapshot was built from (config text, every schema file,
    /// mock bodies, TLS files): a reload that finds it unchanged keeps the current generation.
    pub fingerprint: u64,
    /// Certificate, key and CA files read for TLS (watched for hot reload).
    pub tls_files: Vec<PathBuf>,
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
    pub schemas: RouteSchemas,
    /// Forward invalid requests anyway, reporting what would have been rejected.
    pub report_only: bool,
    pub error_style: ErrorStyle,
    /// Where the tenant comes from; `None` means every request is the shared tenant.
    pub tenant: Option<TenantRule>,
    pub limiter: Option<Arc<RouteLimiter>>,
    pub schema_files: Vec<SchemaFile>,
    /// This route's metric series, resolved on first use (see `metrics::RouteSeries`).
    pub series: crate::metrics::RouteSeries,
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
    /// The upstream's documented success body: checked at load, used only by the OpenAPI
    /// export, never on the request path.
    pub response: Option<CompiledSchema>,
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
}

impl Limits {
    fn layered(&self, raw: &RawLimits) -> Limits {
        Limits {
            body: raw.body.map_or(self.body, |s| s.0),
            json_depth: raw.json_depth.unwrap_or(self.json_depth),
            violations: raw.violations.unwrap_or(self.violations),
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

fn compile(
    path: &Path,
    raw: RawConfig,
    clock: &GatewayClock,
) -> Result<Snapshot, Vec<ConfigError>> {
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut errors = Vec::new();

    let mut material = tls::Material::default();
    let mut listeners = Vec::new();
    if raw.listeners.is_empty() {
        errors.push(ConfigError::file(
            path,
            "`listeners` is empty: name at least one address",
        ));
    }
    for (i, listener) in raw.listeners.iter().enumerate() {
        let address = &listener.address;
        let tls = match &listener.tls {
            Some(raw_tls) => match listener_tls(&base_dir, &raw_tls.value, &mut material) {
                Ok(tls) => Some(Arc::new(tls)),
                Err(message) => {
                    errors.push(ConfigError::at(
                        path,
                        raw_tls.referenced,
                        format!("listeners[{i}].tls"),
                        message,
                    ));
                    None
                }
            },
            None => None,
        };
        match address.value.parse::<SocketAddr>() {
            Ok(address) => listeners.push(Listener { address, tls }),
            Err(_) => errors.push(ConfigError::at(
                path,
                address.referenced,
                format!("listeners[{i}].address"),
                format!(
                    "{:?} is not an address of the form host:port (e.g. 127.0.0.1:8080)",
                    address.value.0
                ),
            )),
        }
    }

    let defaults = &raw.defaults;
    let connect_default = defaults
        .timeouts
        .connect
        .map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0);
    let response_default = defaults
        .timeouts
        .response_headers
        .map_or(DEFAULT_RESPONSE_HEADERS_TIMEOUT, |d| d.0);
    let drain_timeout = defaults
        .timeouts
        .drain
        .map_or(DEFAULT_DRAIN_TIMEOUT, |d| d.0);
    let server = match server_limits(path, &defaults.timeouts, &defaults.limits) {
        Ok(server) => server,
        Err(error) => {
            errors.push(error);
            ServerLimits::default()
        }
    };
    let body_idle_default = defaults
        .timeouts
        .body_idle
        .map_or(DEFAULT_BODY_IDLE_TIMEOUT, |d| d.0);
    let body_default = defaults.timeouts.body.map_or(DEFAULT_BODY_TIMEOUT, |d| d.0);
    let default_limits = Limits {
        body: DEFAULT_BODY_LIMIT,
        json_depth: DEFAULT_JSON_DEPTH,
        violations: DEFAULT_VIOLATIONS,
    }
    .layered(&defaults.limits);

    let mut upstreams: Vec<(String, Arc<Upstream>, Duration)> = Vec::new();
    for (name, spanned) in &raw.upstreams {
        let pool_idle = defaults
            .timeouts
            .pool_idle
            .map_or(DEFAULT_POOL_IDLE_TIMEOUT, |d| d.0);
        match compile_upstream(
            path,
            &base_dir,
            name,
            spanned,
            connect_default,
            pool_idle,
            &mut material,
        ) {
            Ok(upstream) => {
                let response = spanned
                    .value
                    .timeouts
                    .response_headers
                    .map_or(response_default, |d| d.0);
                upstreams.push((name.clone(), Arc::new(upstream), response));
            }
            Err(e) => errors.push(e),
        }
    }

    // The schema directory is read once per snapshot, and only if some route names a schema.
    let schema_path = base_dir.join(raw.schema_dir.as_deref().unwrap_or("schemas"));
    let any_schema = raw.routes.iter().any(|r| {
        let s = &r.value.schemas;
        s.body.is_some()
            || s.query.is_some()
            || s.headers.is_some()
            || s.path.is_some()
            || s.response.is_some()
    });
    let schema_dir = match any_schema.then(|| SchemaDir::scan(&schema_path)) {
        Some(Ok(dir)) => Some(dir),
        Some(Err(error)) => {
            errors.push(ConfigError::file(path, format!("schema_dir: {error}")));
            None
        }
        None => None,
    };

    let mut router = Router::new();
    let mut routes = Vec::new();
    for (i, spanned) in raw.routes.iter().enumerate() {
        let raw_route = &spanned.value;
        let key = |field: &str| format!("routes[{i}].{field}");
        if routes.iter().any(|r: &Route| r.name == raw_route.name.0) {
            errors.push(ConfigError::at(
                path,
                spanned.defined,
                key("name"),
                format!("route name {:?} is used twice", raw_route.name.0),
            ));
            continue;
        }
        let method =
            match Method::from_bytes(raw_route.method.trim().to_ascii_uppercase().as_bytes()) {
                Ok(m) => m,
                Err(_) => {
                    errors.push(ConfigError::at(
                        path,
                        spanned.defined,
                        key("method"),
                        format!("{:?} is not an HTTP method", raw_route.method.0),
                    ));
                    continue;
                }
            };
        let Some((_, upstream, response_timeout)) = upstreams
            .iter()
            .find(|(n, _, _)| *n == raw_route.upstream.0)
        else {
            // A failed upstream was already reported; only report names that do not exist.
            if !raw.upstreams.contains_key(&raw_route.upstream.0) {
                let known = raw.upstreams.keys().cloned().collect::<Vec<_>>().join(", ");
                errors.push(ConfigError::at(
                    path,
                    spanned.defined,
                    key("upstream"),
                    format!(
                        "no upstream named {:?} (known: {known})",
                        raw_route.upstream.0
                    ),
                ));
            }
            continue;
        };
        if let Err((field, message)) = route_overrides(raw_route) {
            errors.push(ConfigError::at(path, spanned.defined, key(field), message));
            continue;
        }
        let forward_path = match forward_path(raw_route) {
            Ok(f) => f,
            Err(message) => {
                errors.push(ConfigError::at(
                    path,
                    spanned.defined,
                    key("rewrite"),
                    message,
                ));
                continue;
            }
        };
        let schemas = match compile_schemas(
            path,
            &schema_path,
            schema_dir.as_ref(),
            &raw_route.schemas,
            i,
        ) {
            Ok(schemas) => schemas,
            Err(mut schema_errors) => {
                errors.append(&mut schema_errors);
                continue;
            }
        };
        let tenant = match &raw_route.tenant {
            Some(raw_tenant) => match tenant_rule(raw_route, raw_tenant) {
                Ok(rule) => Some(rule),
                Err(message) => {
                    errors.push(ConfigError::at(
                        path,
                        spanned.defined,
                        key("tenant"),
                        message,
                    ));
                    continue;
                }
            },
            None => None,
        };
        if raw_route.auth == AuthMode::ApiKey && raw.api_keys.is_empty() {
            errors.push(ConfigError::at(
                path,
                spanned.defined,
                key("auth"),
                "`auth: api_key` needs at least one entry in `api_keys`",
            ));
            continue;
        }
        let limiter = match &raw_route.rate_limit {
            Some(raw_limit) => {
                match limit_settings(raw_limit).and_then(|s| RouteLimiter::new(&s, clock)) {
                    Ok(limiter) => Some(Arc::new(limiter)),
                    Err(message) => {
                        errors.push(ConfigError::at(
                            path,
                            spanned.defined,
                            key("rate_limit"),
                            message,
                        ));
                        continue;
                    }
                }
            }
            None => None,
        };
        if let Err(message) = router.add(method.clone(), &raw_route.path, routes.len()) {
            errors.push(ConfigError::at(path, spanned.defined, key("path"), message));
            continue;
        }
        routes.push(Route {
            name: raw_route.name.0.clone(),
            method,
            path: raw_route.path.0.clone(),
            upstream: Arc::clone(upstream),
            forward_path,
            preserve_host: raw_route.preserve_host,
            response_headers_timeout: raw_route
                .timeouts
                .response_headers
                .map_or(*response_timeout, |d| d.0),
            limits: default_limits.layered(&raw_route.limits),
            body_idle_timeout: raw_route
                .timeouts
                .body_idle
                .map_or(body_idle_default, |d| d.0),
            body_timeout: raw_route.timeouts.body.map_or(body_default, |d| d.0),
            auth: raw_route.auth,
            schemas,
            report_only: raw_route.validation == ValidationMode::Report,
            error_style: raw_route.errors,
            tenant,
            limiter,
            schema_files: schema_files(&schema_path, &raw_route.schemas),
            series: Default::default(),
        });
    }

    let admin = match &raw.admin {
        Some(raw_admin) => match raw_admin.address.value.parse::<SocketAddr>() {
            Ok(address) => Some(AdminSettings {
                address,
                token: raw_admin
                    .token
                    .as_ref()
                    .map(|t| t.0.clone())
                    .filter(|t| !t.is_empty()),
            }),
            Err(_) => {
                errors.push(ConfigError::at(
                    path,
                    raw_admin.address.referenced,
                    "admin.address",
                    format!(
                        "{:?} is not an address of the form host:port",
                        raw_admin.address.value.0
                    ),
                ));
                None
            }
        },
        None => None,
    };

    let mut api_keys = Vec::new();
    for (i, spanned) in raw.api_keys.iter().enumerate() {
        let raw_key = &spanned.value;
        match auth::parse_sha256(&raw_key.sha256.value) {
            Some(sha256) => api_keys.push(ApiKey {
                name: raw_key.name.0.clone(),
                sha256,
                tenants: raw_key.tenants.iter().map(|t| t.0.clone()).collect(),
            }),
            None => errors.push(ConfigError::at(
                path,
                raw_key.sha256.referenced,
                format!("api_keys[{i}].sha256"),
                "must be 64 hex digits: the SHA-256 of the key (`schemagate hash-key`), never the key itself",
            )),
        }
    }

    if errors.is_empty() {
        Ok(Snapshot {
            source: path.to_path_buf(),
            listeners,
            drain_timeout,
            server,
            router,
            routes,
            api_keys,
            generation: 1,
            schema_dir: any_schema.then_some(schema_path),
            admin,
            log_format: raw.logging.format,
            // The schemas' and TLS files' share of the fingerprint, from the very bytes used.
            fingerprint: schema_dir.as_ref().map_or(0, SchemaDir::content_hash) ^ material.hash(),
            tls_files: material.files,
        })
    } else {
        Err(errors)
    }
}

/// Hashes the config text, the schema files as they were scanned for this snapshot (see
/// `SchemaDir::content_hash`, stored in `fingerprint` by `compile`) and the mock bodies.
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
    hasher.finish()
}

/// Checks a route's tenant source against the rest of the route.
fn tenant_rule(route: &RawRoute, raw: &RawTenant) -> Result<TenantRule, String> {
    let name = raw.name.as_ref().map(|n| n.0.clone());
    let need_name = |what: &str| {
        name.clone()
            .ok_or_else(|| format!("`from: {what}` needs `name`"))
    };
    let source = match raw.from {
        TenantFrom::Header => {
            let name = need_name("header")?;
            TenantSource::Header(
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("{name:?} is not a header name"))?,
            )
        }
        TenantFrom::Query => TenantSource::Query(need_name("query")?),
        TenantFrom::Path => {
            let name = need_name("path")?;
            if !forward::template_params(&route.path).contains(&name.as_str()) {
                return Err(format!(
                    "the path {:?} has no parameter {{{name}}}",
                    route.path.0
                ));
            }
            TenantSource::Path(name)
        }
        TenantFrom::Body => {
            if route.schemas.body.is_none() {
                return Err(
                    "`from: body` needs `schemas.body`: only a validated body is parsed"
                        .to_string(),
                );
            }
            TenantSource::Body(need_name("body")?)
        }
        TenantFrom::Key => {
            if route.auth != AuthMode::ApiKey {
                return Err("`from: key` needs `auth: api_key`".to_string());
            }
            if name.is_some() {
                return Err("`from: key` takes no `name`".to_string());
            }
            TenantSource::Key
        }
        TenantFrom::ClientCert => {
            if name.is_some() {
                return Err("`from: client_cert` takes no `name`".to_string());
            }
            TenantSource::ClientCert
        }
    };
    Ok(TenantRule {
        source,
        shared_when_missing: raw.missing == MissingTenant::Shared,
    })
}

fn limit_settings(raw: &RawRateLimit) -> Result<LimitSettings, String> {
    let spec = QuotaSpec::parse(&raw.quota, raw.burst)?;
    let mut tiers = Vec::new();
    for (tenant, tier) in &raw.tiers {
        let tier_spec = QuotaSpec::parse(&tier.quota, tier.burst)
            .map_err(|e| format!("tiers.{tenant}: {e}"))?;
        tiers.push((tenant.clone(), tier_spec));
    }
    let ceiling = match &raw.ceiling {
        Some(text) => Some(QuotaSpec::parse(text, None).map_err(|e| format!("ceiling: {e}"))?),
        None => None,
    };
    let max_tenants = raw.max_tenants.unwrap_or(DEFAULT_MAX_TENANTS);
    if max_tenants == 0 {
        return Err("max_tenants must be at least 1".to_string());
    }
    Ok(LimitSettings {
        spec,
        tiers,
        ceiling,
        max_tenants,
        report_only: raw.mode == ValidationMode::Report,
    })
}

/// The schema files a route names, with the SHA-256 of their content (read after they
/// compiled, so they exist).
fn schema_files(schema_path: &Path, raw: &RawSchemas) -> Vec<SchemaFile> {
    let named = [
        ("body", &raw.body),
        ("query", &raw.query),
        ("headers", &raw.headers),
        ("path", &raw.path),
        ("response", &raw.response),
    ];
    named
        .into_iter()
        .filter_map(|(location, file)| {
            let file = &file.as_ref()?.value.0;
            let bytes = std::fs::read(schema_path.join(file)).unwrap_or_default();
            Some(SchemaFile {
                location,
                file: file.clone(),
                sha256: auth::hash_key(&bytes),
            })
        })
        .collect()
}

/// Compiles every schema a route names, reporting each failure at its key.
fn compile_schemas(
    path: &Path,
    schema_path: &Path,
    schema_dir: Option<&SchemaDir>,
    raw: &RawSchemas,
    route: usize,
) -> Result<RouteSchemas, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut load = |location: &str, file: &Option<Spanned<config::Text>>| {
        let file = file.as_ref()?;
        // Without a readable schema directory (already reported) nothing can compile.
        let dir = schema_dir?;
        match dir.compile(&schema_path.join(&*file.value)) {
            Ok(schema) => Some(schema),
            Err(error) => {
                let key = format!("routes[{route}].schemas.{location}");
                errors.push(ConfigError::at(
                    path,
                    file.referenced,
                    key,
                    error.to_string(),
                ));
                None
            }
        }
    };
    let schemas = RouteSchemas {
        body: load("body", &raw.body),
        query: load("query", &raw.query),
        headers: load("headers", &raw.headers),
        path: load("path", &raw.path),
        response: load("response", &raw.response),
    };
    if errors.is_empty() {
        Ok(schemas)
    } else {
        Err(errors)
    }
}

fn forward_path(route: &RawRoute) -> Result<ForwardPath, String> {
    match (&route.strip_prefix, &route.rewrite) {
        (Some(_), Some(_)) => Err("set either `strip_prefix` or `rewrite`, not both".to_string()),
        (Some(prefix), None) if prefix.starts_with('/') => {
            Ok(ForwardPath::StripPrefix(prefix.0.clone()))
        }
        (Some(prefix), None) => Err(format!("strip_prefix {:?} must start with `/`", prefix.0)),
        (None, Some(template)) if template.starts_with('/') => {
            let known = forward::template_params(&route.path);
            match forward::template_params(template)
                .into_iter()
                .find(|p| !known.contains(p))
            {
                Some(missing) => Err(format!(
                    "rewrite uses {{{missing}}}, which the path {:?} does not capture",
                    route.path.0
                )),
                None => Ok(ForwardPath::Rewrite(template.0.clone())),
            }
        }
        (None, Some(template)) => Err(format!("rewrite {:?} must start with `/`", template.0)),
        (None, None) => Ok(ForwardPath::Same),
    }
}

fn compile_upstream(
    path: &Path,
    base_dir: &Path,
    name: &str,
    spanned: &Spanned<RawUpstream>,
    connect_default: Duration,
    pool_idle_default: Duration,
    material: &mut tls::Material,
) -> Result<Upstream, ConfigError> {
    let raw = &spanned.value;
    let at_line = |location, field: &str, message: String| {
        ConfigError::at(path, location, format!("upstreams.{name}.{field}"), message)
    };
    let at = |field: &str, message: String| at_line(spanned.defined, field, message);
    let url = &raw.url.value;
    let at_url = |message: String| at_line(raw.url.referenced, "url", message);
    let target = if url.trim() == "mock" {
        let mock = raw.mock.as_ref().ok_or_else(|| {
            at(
                "mock",
                "`url: mock` needs a `mock` block naming `body_file`".to_string(),
            )
        })?;
        let at_file =
            |message: String| at_line(mock.body_file.referenced, "mock.body_file", message);
        let file = base_dir.join(&*mock.body_file.value);
        let body =
            crate::files::read_capped(&file, crate::files::MAX_DATA_FILE).map_err(at_file)?;
        serde_json::from_slice::<serde_json::Value>(&body)
            .map_err(|e| at_file(format!("{} is not valid JSON: {e}", file.display())))?;
        let status = StatusCode::from_u16(mock.status.unwrap_or(200)).map_err(|_| {
            at(
                "mock.status",
                format!("{:?} is not an HTTP status", mock.status),
            )
        })?;
        UpstreamTarget::Mock {
            status,
            body: Bytes::from(body),
            file,
        }
    } else {
        let uri: Uri = url.parse().map_err(|e| {
            at_url(format!(
                "{:?} is not a URL ({e}); write e.g. http://backend:8000 or `mock`",
                url.0
            ))
        })?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(at_url(format!(
                    "{:?} must start with http:// or https:// (or be `mock`)",
                    url.0
                )))
            }
        };
        let tls = match (&raw.tls, https) {
            (Some(tls), false) => {
                return Err(at_line(
                    tls.referenced,
                    "tls",
                    "`tls` applies to https:// upstreams only".to_string(),
                ))
            }
            (tls, true) => Some(
                upstream_tls(base_dir, tls.as_ref().map(|t| &t.value), material).map_err(
                    |message| {
                        let location = tls.as_ref().map_or(raw.url.referenced, |t| t.referenced);
                        at_line(location, "tls", message)
                    },
                )?,
            ),
            (None, false) => None,
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| at_url(format!("{:?} has no host", url.0)))?;
        if uri.query().is_some() {
            return Err(at_url(
                "an upstream URL cannot carry a query string".to_string(),
            ));
        }
        let connect = raw.timeouts.connect.map_or(connect_default, |d| d.0);
        let pool_idle = raw.timeouts.pool_idle.map_or(pool_idle_default, |d| d.0);
        UpstreamTarget::Http(Box::new(HttpUpstream::new(
            authority,
            uri.path(),
            connect,
            pool_idle,
            tls,
        )))
    };
    let t = &raw.timeouts;
    if t.drain.is_some()
        || t.header_read.is_some()
        || t.body_idle.is_some()
        || t.body.is_some()
        || t.write_stall.is_some()
    {
        return Err(at(
            "timeouts",
            "an upstream sets only `connect`, `response_headers` and `pool_idle`; client-side timeouts belong to defaults.timeouts or the route".to_string(),
        ));
    }
    Ok(Upstream {
        name: name.to_string(),
        target,
    })
}

/// Client TLS settings for an `https://` upstream, and a hash of the files they came from
/// (so a reload keeps the connection pool only when nothing changed).
fn upstream_tls(
    base_dir: &Path,
    raw: Option<&RawUpstreamTls>,
    material: &mut tls::Material,
) -> Result<UpstreamTls, String> {
    let mut own = tls::Material::default();
    let raw = raw.map_or((None, None, None), |r| {
        (r.ca.as_ref(), r.cert.as_ref(), r.key.as_ref())
    });
    let ca = raw.0.map(|ca| base_dir.join(&*ca.value));
    let identity = match (raw.1, raw.2) {
        (Some(cert), Some(key)) => Some((base_dir.join(&*cert.value), base_dir.join(&*key.value))),
        (None, None) => None,
        _ => return Err("a client certificate needs both `cert` and `key`".to_string()),
    };
    let config = tls::client(
        ca.as_deref(),
        identity
            .as_ref()
            .map(|(cert, key)| tls::CertFiles { cert, key }),
        &mut own,
    )?;
    material.absorb(&own);
    Ok(UpstreamTls {
        config,
        files_hash: own.hash(),
    })
}

/// A TLS listener's settings from its config block.
fn listener_tls(
    base_dir: &Path,
    raw: &RawListenerTls,
    material: &mut tls::Material,
) -> Result<tls::ServerTls, String> {
    let paths: Vec<(PathBuf, PathBuf)> = raw
        .certificates
        .iter()
        .map(|c| (base_dir.join(&*c.cert.value), base_dir.join(&*c.key.value)))
        .collect();
    let files: Vec<tls::CertFiles<'_>> = paths
        .iter()
        .map(|(cert, key)| tls::CertFiles { cert, key })
        .collect();
    let client_ca = raw
        .client_auth
        .as_ref()
        .map(|auth| (base_dir.join(&*auth.ca.value), auth.mode));
    tls::server(
        &files,
        client_ca.as_ref().map(|(ca, mode)| (ca.as_path(), *mode)),
        raw.handshake_timeout
            .map_or(tls::DEFAULT_HANDSHAKE_TIMEOUT, |d| d.0),
        material,
    )
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

/// A route may override only what applies once it is known: its body and response timeouts,
/// body size, JSON depth and violation count. An error names the key (`timeouts` or
/// `limits`) that holds the misplaced setting.
fn route_overrides(route: &RawRoute) -> Result<(), (&'static str, String)> {
    let t = &route.timeouts;
    if t.connect.is_some() || t.pool_idle.is_some() {
        return Err((
            "timeouts",
            "`connect` and `pool_idle` belong to the route's upstream".to_string(),
        ));
    }
    if t.drain.is_some() || t.header_read.is_some() || t.write_stall.is_some() {
        return Err((
            "timeouts",
            "`drain`, `header_read` and `write_stall` apply before a route is known: set them in defaults.timeouts"
                .to_string(),
        ));
    }
    let l = &route.limits;
    if l.headers.is_some()
        || l.header_bytes.is_some()
        || l.uri.is_some()
        || l.connections.is_some()
        || l.in_flight.is_some()
        || l.h2_streams.is_some()
        || l.h2_resets.is_some()
        || l.backlog.is_some()
        || l.underscore_headers.is_some()
    {
        return Err((
            "limits",
            "a route's `limits` set only `body`, `json_depth` and `violations`; the others apply before a route is known: set them in defaults.limits".to_string(),
        ));
    }
    Ok(())
}
