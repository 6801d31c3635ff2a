//! The YAML config file as written by operators: serde shapes only.
//!
//! These types mirror the file one to one and reject unknown keys. They carry no behaviour:
//! `snapshot` compiles them into the runtime structures and is the one place where cross-field
//! checks happen. String values go through `${VAR}` / `${VAR:-default}` expansion while they are
//! deserialized, so a missing variable is reported with the file, line and key like any other
//! error.

mod expand;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_saphyr::{Location, Spanned};

pub use expand::expand_env;

/// The whole config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where the gateway accepts traffic.
    pub listeners: Vec<RawListener>,
    /// Directory holding the JSON Schemas, relative to the config file. Default `schemas`.
    /// Schemas may `$ref` each other inside it, never outside.
    #[serde(default)]
    pub schema_dir: Option<Text>,
    /// Limits and timeouts that every route inherits unless it overrides them.
    #[serde(default)]
    pub defaults: RawDefaults,
    /// Named upstreams that routes forward to.
    pub upstreams: BTreeMap<String, Spanned<RawUpstream>>,
    /// The routes, matched by method and path. May be left out when `openapi:` documents
    /// give every route.
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    /// OpenAPI documents whose operations become routes (`docs/openapi.md`).
    #[serde(default)]
    pub openapi: Vec<Spanned<RawOpenApi>>,
    /// API keys for routes with `auth: api_key`, as SHA-256 hashes (`schemagate hash-key`).
    #[serde(default)]
    pub api_keys: Vec<Spanned<RawApiKey>>,
    /// The admin listener (metrics, health, status, reload, dashboard).
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    /// Access and event logs.
    #[serde(default)]
    pub logging: RawLogging,
    /// The Redis that routes with `rate_limit.store: redis` share their buckets through.
    #[serde(default)]
    pub redis: Option<Spanned<RawRedis>>,
    /// Issuers whose JSON Web Tokens routes with `auth: { jwt: NAME }` verify.
    #[serde(default)]
    pub jwt: Vec<Spanned<RawJwtProvider>>,
}

/// One `jwt:` provider: an issuer, the keys its tokens are signed with, and what a token must
/// hold. Exactly one of `jwks_url`, `jwks_file`, `secret_file` names the keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtProvider {
    /// Routes name the provider with `auth: { jwt: NAME }`.
    pub name: Text,
    /// `iss` must equal it.
    pub issuer: Text,
    /// `aud` must hold one of them; not checked when empty.
    #[serde(default)]
    pub audiences: Vec<Text>,
    /// A JWK Set fetched over HTTP(S) and refreshed.
    #[serde(default)]
    pub jwks_url: Option<Spanned<Text>>,
    /// A JWK Set in a file (relative to the config's directory, watched).
    #[serde(default)]
    pub jwks_file: Option<Spanned<Text>>,
    /// An HMAC secret in a file (HS256/384/512 only; one trailing newline ignored).
    #[serde(default)]
    pub secret_file: Option<Spanned<Text>>,
    /// The algorithms accepted; each key still decides its own. `none` is not one.
    #[serde(default)]
    pub algorithms: Option<Vec<JwtAlgorithm>>,
    /// Clock skew allowed on `exp` and `nbf`. Default 30s.
    #[serde(default)]
    pub leeway: Option<Dur>,
    /// How often a `jwks_url` is fetched again. Default 10m.
    #[serde(default)]
    pub refresh: Option<Dur>,
    /// CA bundle and client certificate for an `https://` `jwks_url` (as an upstream's).
    #[serde(default)]
    pub tls: Option<Spanned<RawUpstreamTls>>,
    /// Claims forwarded to the upstream as headers (`{ sub: X-User-Id }`); a client's own
    /// copies of those headers are removed.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, Text>,
}

/// A JWS signature algorithm a provider may accept (RFC 7518). `none` is deliberately absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// A route's `auth:`: a mode by name, or `{ jwt: NAME, scopes: [...] }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawAuth {
    Mode(AuthMode),
    Jwt(RawJwtAuth),
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth::Mode(AuthMode::None)
    }
}

impl RawAuth {
    /// The mode the route runs in (`Jwt` for the map form).
    pub fn mode(&self) -> AuthMode {
        match self {
            RawAuth::Mode(mode) => *mode,
            RawAuth::Jwt(_) => AuthMode::Jwt,
        }
    }
}

/// `auth: { jwt: NAME, scopes: [...] }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtAuth {
    /// The `jwt:` provider that verifies the token.
    pub jwt: Text,
    /// Scopes the token's `scope` / `scp` claim must all hold (403 otherwise).
    #[serde(default)]
    pub scopes: Vec<Text>,
}

impl<'de> Deserialize<'de> for RawAuth {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = RawAuth;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "one of `none`, `bearer`, `credentials`, `api_key`, or `{ jwt: NAME, scopes: [...] }`",
                )
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<RawAuth, E> {
                use serde::de::IntoDeserializer;
                AuthMode::deserialize(value.into_deserializer()).map(RawAuth::Mode)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawAuth, A::Error> {
                RawJwtAuth::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawAuth::Jwt)
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// `redis:`, the store of rate limits shared by several gateways: one node (`url`) or a
/// Redis Cluster (`cluster`), exactly one of them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://[user:password@]host:port/db`, `rediss://` (TLS) or `unix:///path`.
    #[serde(default)]
    pub url: Option<Spanned<Text>>,
    /// A Redis Cluster's seed URLs (`redis://` or `rediss://`), instead of `url`.
    #[serde(default)]
    pub cluster: Option<Spanned<Vec<Text>>>,
    /// For `rediss://`: the CAs trusted (default: the system's roots) and a client
    /// certificate, as for an upstream.
    #[serde(default)]
    pub tls: Option<Spanned<RawUpstreamTls>>,
    /// Longest one Redis operation (and the first connection) may take; past it, `on_error`
    /// decides. Default 50ms.
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// What a request gets when Redis gives no answer: `local` [default], `allow`, `deny`.
    #[serde(default)]
    pub on_error: OnRedisError,
    /// Keys are `{prefix}:{route:tenant}`. Default `schemagate`.
    #[serde(default)]
    pub key_prefix: Option<Text>,
    /// A file holding the Redis password (one trailing newline ignored), instead of a password
    /// in `url`; relative to the config's directory, read when the config loads and watched.
    #[serde(default)]
    pub password_file: Option<Spanned<Text>>,
}

/// What a request on a `store: redis` route gets when Redis gives no answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRedisError {
    /// This gateway's own limiter with the route's quota decides.
    #[default]
    Local,
    /// Forwarded, without `RateLimit-*` headers.
    Allow,
    /// 503 with `Retry-After: 1`.
    Deny,
}

/// Where a route's buckets live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    /// In this process: each gateway counts alone.
    #[default]
    Local,
    /// In the `redis:` store, shared by every gateway using it.
    Redis,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `host:port`, loopback by default in the shipped config.
    pub address: Spanned<Text>,
    /// When set, admin endpoints other than /healthz and /readyz need `Bearer <token>`.
    #[serde(default)]
    pub token: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    /// `text` (default) or `json` (one JSON object per line), for the access log and the
    /// diagnostics alike. Applies at startup.
    #[serde(default)]
    pub format: LogFormat,
    /// ANSI colour in the diagnostics (stderr): `auto` (default: only when stderr is a
    /// terminal and `NO_COLOR` is unset), `always` or `never`. Access lines have none.
    #[serde(default)]
    pub color: LogColor,
    /// Where the access log goes: `stdout` (default), `stderr`, `off`, or a file path
    /// (appended to; relative to the config file's directory). Applies at startup.
    #[serde(default)]
    pub access: Option<Spanned<Text>>,
    /// The access log's buffer: lines wait here for the writer thread; past it, lines are
    /// dropped and counted (`schemagate_access_log_dropped_total`). Default 1MiB.
    #[serde(default)]
    pub access_buffer: Option<Spanned<Size>>,
}

/// `logging.color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogColor {
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    /// Shown in logs instead of the key.
    pub name: Text,
    /// Lowercase hex SHA-256 of the key, never the key itself.
    pub sha256: Spanned<Text>,
    /// Tenants the key may act for; `*` for any.
    pub tenants: Vec<Text>,
}

/// Where a route's tenant comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    /// `header`, `query`, `path`, `body` (a top-level field), `key` (the API key's binding) or
    /// `client_cert` (the verified TLS client certificate's subject common name).
    pub from: TenantFrom,
    /// The header, parameter or field name (not for `key`).
    #[serde(default)]
    pub name: Option<Text>,
    /// With no tenant: `reject` (400, default) or `shared` (one bucket for all such requests).
    #[serde(default)]
    pub missing: MissingTenant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantFrom {
    Header,
    Query,
    Path,
    Body,
    Key,
    ClientCert,
    /// A claim of the verified JSON Web Token (`name` is a dotted path).
    Claim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MissingTenant {
    #[default]
    Reject,
    Shared,
}

/// A route's rate limit, per tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Requests per period for each tenant: `100/s`, `6000/min`, `10/h`.
    pub quota: Text,
    /// Requests a tenant may make at once. Default: the quota's count.
    #[serde(default)]
    pub burst: Option<u32>,
    /// `enforce` (default, 429) or `report` (log what would be throttled, forward anyway).
    #[serde(default)]
    pub mode: ValidationMode,
    /// A route-wide limit across all tenants, e.g. `1000/s`.
    #[serde(default)]
    pub ceiling: Option<Text>,
    /// Per-tenant quotas that replace `quota` for the tenants named.
    #[serde(default)]
    pub tiers: BTreeMap<String, RawTier>,
    /// Most tenants tracked at once; more share one overflow bucket. Default 100000.
    #[serde(default)]
    pub max_tenants: Option<usize>,
    /// `local` [default]: this process's buckets; `redis`: shared through `redis:`.
    #[serde(default)]
    pub store: Store,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    pub quota: Text,
    #[serde(default)]
    pub burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// `host:port` to bind, e.g. `127.0.0.1:8080` or `0.0.0.0:80`.
    pub address: Spanned<Text>,
    /// Terminate TLS on this listener.
    #[serde(default)]
    pub tls: Option<Spanned<RawListenerTls>>,
}

/// A TLS listener's certificates and client authentication. Files are relative to the config
/// file and watched: a renewed certificate is picked up like any config change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    /// Certificate chains with their keys. The client's SNI name picks the certificate whose
    /// names (subject alternative names) match; the first one serves everything else.
    pub certificates: Vec<RawCertificate>,
    /// Ask clients for a certificate signed by this CA bundle.
    #[serde(default)]
    pub client_auth: Option<RawClientAuth>,
    /// Longest a TLS handshake may take before the connection is closed. Default 10s.
    #[serde(default)]
    pub handshake_timeout: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// PEM certificate chain, leaf first.
    pub cert: Spanned<Text>,
    /// PEM private key: PKCS#8, RSA (PKCS#1) or EC (SEC1).
    pub key: Spanned<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientAuth {
    /// PEM bundle of the CAs that sign client certificates.
    pub ca: Spanned<Text>,
    /// `required` (default: the handshake fails without a valid certificate) or `optional`
    /// (a certificate, when sent, must be valid).
    #[serde(default)]
    pub mode: ClientAuthMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    #[default]
    Required,
    Optional,
}

/// TLS towards an `https://` upstream.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// PEM bundle of the CAs trusted for this upstream. Default: the system's roots.
    #[serde(default)]
    pub ca: Option<Spanned<Text>>,
    /// A client certificate for upstream mTLS (with `key`).
    #[serde(default)]
    pub cert: Option<Spanned<Text>>,
    #[serde(default)]
    pub key: Option<Spanned<Text>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub limits: RawLimits,
}

/// Timeouts; every field is optional and falls back to the level above.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// Time to open a TCP connection to the upstream (504 when exceeded).
    pub connect: Option<Dur>,
    /// Time from sending the request until the upstream's response headers arrive (504).
    pub response_headers: Option<Dur>,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    pub drain: Option<Dur>,
    /// Time a client has to send a request's headers; also how long an idle HTTP/1
    /// keep-alive connection is kept (the connection is closed when exceeded).
    pub header_read: Option<Dur>,
    /// Longest pause in a request body (408 when exceeded).
    pub body_idle: Option<Dur>,
    /// Longest a whole request body may take (408 when exceeded).
    pub body: Option<Dur>,
    /// Longest a response write may stall on a client that does not read (connection closed).
    pub write_stall: Option<Dur>,
    /// How long an idle pooled upstream connection is kept.
    pub pool_idle: Option<Dur>,
}

/// Request limits; every field is optional and falls back to the level above.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Largest request body accepted, e.g. `1MiB` (413 above it).
    pub body: Option<Size>,
    /// Deepest JSON nesting accepted in a body (400 above it).
    pub json_depth: Option<usize>,
    /// Most violations listed in one 422 answer; the rest are summarised as "and N more".
    pub violations: Option<usize>,
    /// Largest upstream answer body kept for `responses: report` (default 1MiB); a larger
    /// one is delivered whole and counted as unchecked.
    pub response_check: Option<Size>,
    /// Most header fields in a request (431 above it).
    pub headers: Option<usize>,
    /// Largest header block, names and values together (431 above it).
    pub header_bytes: Option<Size>,
    /// Longest request target (414 above it).
    pub uri: Option<Size>,
    /// Most client connections open at once; further ones wait in the accept queue.
    pub connections: Option<usize>,
    /// Most requests in flight at once; above it, an immediate 503 with `Retry-After`.
    pub in_flight: Option<usize>,
    /// Most concurrent streams per HTTP/2 connection (further ones are refused by the
    /// client's h2 stack, per the SETTINGS the gateway sends).
    pub h2_streams: Option<u32>,
    /// Most streams an HTTP/2 client may reset (cancel before their answer) per connection
    /// per second; past it the connection is closed (rapid-reset defence).
    pub h2_resets: Option<u32>,
    /// Length of each listener's accept queue (the backlog given to listen(2)): connections
    /// the kernel completes while the gateway is not taking them yet, in a burst or at
    /// `connections`; beyond it, new clients' SYNs are dropped and they retry after a second
    /// or more. Default 511, as nginx's. The kernel silently caps it at
    /// `net.core.somaxconn` (Linux; 4096 by default since 5.4). Applied at start: a change
    /// needs a restart.
    pub backlog: Option<Spanned<u32>>,
    /// Request header fields whose name contains `_` (`X_Tenant`): `drop` [default] removes
    /// them before anything reads the headers (auth, tenant, validation, forwarding) and
    /// counts them in `schemagate_dropped_headers_total{reason="underscore"}`, as nginx does
    /// (`underscores_in_headers off`); `keep` forwards them as sent.
    pub underscore_headers: Option<UnderscoreHeaders>,
}

/// What happens to request header fields whose name contains `_`. CGI, WSGI and the like
/// turn `-` into `_` to name their variables, so such a backend reads `X_Tenant: 999` and a
/// validated `X-Tenant: 7` as one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnderscoreHeaders {
    /// Removed (and counted) before any stage reads the headers.
    #[default]
    Drop,
    /// Forwarded as sent.
    Keep,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// A base URL (`http://backend.internal:8000`, optionally with a path prefix), or the
    /// word `mock` for the built-in mock answering from the `mock` block.
    pub url: Spanned<Text>,
    /// What the built-in mock answers when `url` is `mock`.
    #[serde(default)]
    pub mock: Option<RawMock>,
    /// Upstream connect and response-header timeouts.
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// CA bundle and client certificate for an `https://` upstream.
    #[serde(default)]
    pub tls: Option<Spanned<RawUpstreamTls>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMock {
    /// HTTP status of every mock answer. Default 200.
    #[serde(default)]
    pub status: Option<u16>,
    /// JSON file (relative to the config file) sent as the body.
    pub body_file: Spanned<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique name, used in logs, metrics and errors.
    pub name: Text,
    /// HTTP method, e.g. `POST`.
    pub method: Text,
    /// Path template, e.g. `/v1/items/{id}`; `{*rest}` matches the remainder.
    pub path: Text,
    /// Name of an entry in `upstreams`.
    pub upstream: Text,
    /// Remove this prefix from the path before forwarding.
    #[serde(default)]
    pub strip_prefix: Option<Text>,
    /// Replace the path with this template before forwarding; `{name}` inserts a path parameter.
    #[serde(default)]
    pub rewrite: Option<Text>,
    /// Forward the client's `Host` header instead of the upstream's authority.
    #[serde(default)]
    pub preserve_host: bool,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub limits: RawLimits,
    /// What the caller must present: `none` (default), `bearer`, `credentials`, `api_key`,
    /// or `{ jwt: NAME, scopes: [...] }`.
    #[serde(default)]
    pub auth: RawAuth,
    /// Schema files per location, relative to `schema_dir`.
    #[serde(default)]
    pub schemas: RawSchemas,
    /// `enforce` (default): reject invalid requests. `report`: forward them and report.
    #[serde(default)]
    pub validation: ValidationMode,
    /// `true`: query parameters, (non-standard) headers and top-level body fields the
    /// schemas do not name are violations (422), each named.
    #[serde(default)]
    pub strict: bool,
    /// `off` (default) or `report`: compare the upstream's status and JSON body with the
    /// documented responses, counting and logging each mismatch (the answer is never changed).
    #[serde(default)]
    pub responses: ResponsesMode,
    /// Error body style: `nest` (default, the documented envelope) or `problem` (RFC 9457).
    #[serde(default)]
    pub errors: ErrorStyle,
    /// Where the tenant comes from (for rate limits and API-key bindings).
    #[serde(default)]
    pub tenant: Option<RawTenant>,
    /// Per-tenant rate limit.
    #[serde(default)]
    pub rate_limit: Option<RawRateLimit>,
}

/// One entry of `openapi:`: a document whose operations become routes, and the route keys
/// its operations take (defaults for all, then overrides by operationId).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOpenApi {
    /// The document, JSON or YAML, OpenAPI 3.0.x or 3.1.x; relative to the config's
    /// directory; watched and hot-reloaded.
    pub file: Spanned<Text>,
    /// Routes are named `<name>.<operationId>`. Default: the file name without extension.
    #[serde(default)]
    pub name: Option<Text>,
    /// Name of an entry in `upstreams`.
    pub upstream: Text,
    /// Prepended to every path of the document (`/flextell`).
    #[serde(default)]
    pub path_prefix: Option<Spanned<Text>>,
    // The route keys every operation of the document takes (as in `RawOperationKeys`;
    // serde's `flatten` would lose `deny_unknown_fields`).
    #[serde(default)]
    pub strip_prefix: Option<Text>,
    #[serde(default)]
    pub preserve_host: Option<bool>,
    #[serde(default)]
    pub timeouts: Option<RawTimeouts>,
    #[serde(default)]
    pub limits: Option<RawLimits>,
    /// When absent: derived from the operation's `security`.
    #[serde(default)]
    pub auth: Option<RawAuth>,
    #[serde(default)]
    pub validation: Option<ValidationMode>,
    #[serde(default)]
    pub strict: Option<bool>,
    #[serde(default)]
    pub responses: Option<ResponsesMode>,
    #[serde(default)]
    pub errors: Option<ErrorStyle>,
    #[serde(default)]
    pub tenant: Option<RawTenant>,
    #[serde(default)]
    pub rate_limit: Option<RawRateLimit>,
    /// Overrides by operationId, with the same keys.
    #[serde(default)]
    pub operations: BTreeMap<String, Spanned<RawOperationKeys>>,
}

impl RawOpenApi {
    /// The document-level route keys.
    pub fn keys(&self) -> RawOperationKeys {
        RawOperationKeys {
            skip: None,
            strip_prefix: self.strip_prefix.clone(),
            preserve_host: self.preserve_host,
            timeouts: self.timeouts.clone(),
            limits: self.limits.clone(),
            auth: self.auth.clone(),
            validation: self.validation,
            strict: self.strict,
            responses: self.responses,
            errors: self.errors,
            tenant: self.tenant.clone(),
            rate_limit: self.rate_limit.clone(),
        }
    }
}

/// The route keys an OpenAPI document or one of its operations may set; each falls back to
/// the document's, then to the route's default.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOperationKeys {
    /// `true`: the operation is not a route (only under `operations:`).
    #[serde(default)]
    pub skip: Option<bool>,
    #[serde(default)]
    pub strip_prefix: Option<Text>,
    #[serde(default)]
    pub preserve_host: Option<bool>,
    #[serde(default)]
    pub timeouts: Option<RawTimeouts>,
    #[serde(default)]
    pub limits: Option<RawLimits>,
    /// When absent: derived from the operation's `security`.
    #[serde(default)]
    pub auth: Option<RawAuth>,
    #[serde(default)]
    pub validation: Option<ValidationMode>,
    #[serde(default)]
    pub strict: Option<bool>,
    #[serde(default)]
    pub responses: Option<ResponsesMode>,
    #[serde(default)]
    pub errors: Option<ErrorStyle>,
    #[serde(default)]
    pub tenant: Option<RawTenant>,
    #[serde(default)]
    pub rate_limit: Option<RawRateLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchemas {
    pub body: Option<Spanned<Text>>,
    pub query: Option<Spanned<Text>>,
    pub headers: Option<Spanned<Text>>,
    pub path: Option<Spanned<Text>>,
    /// The upstream's documented success body. Compiled at load like the others, but never
    /// applied to traffic (answers stream through untouched): `schemagate openapi` publishes it.
    pub response: Option<Spanned<Text>>,
}

/// Whether a route's upstream answers are compared with its documented responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponsesMode {
    #[default]
    Off,
    /// Compared, and every mismatch logged and counted; the answer is never changed.
    Report,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidationMode {
    #[default]
    Enforce,
    Report,
}

/// A string value after `${VAR}` expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

/// Looks a variable up for `${VAR}` expansion.
type EnvLookup = Box<dyn Fn(&str) -> Option<String>>;

thread_local! {
    // Set by `parse` for the duration of one (synchronous) deserialization, so that `Text`
    // can expand variables from the caller's environment view instead of the process one.
    static ENV: std::cell::RefCell<Option<EnvLookup>> = const { std::cell::RefCell::new(None) };
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        ENV.with_borrow(|env| match env {
            Some(lookup) => expand_env(&raw, lookup),
            None => expand_env(&raw, |name| std::env::var(name).ok()),
        })
        .map(Text)
        .map_err(serde::de::Error::custom)
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// The longest duration a config may set.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A duration written as `5s`, `250ms`, `1m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Text::deserialize(deserializer)?;
        let duration = humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {:?} ({e}); write e.g. `5s` or `250ms`",
                text.0
            ))
        })?;
        // Deadlines are computed as `now + duration`; an absurd one would overflow there.
        if duration > MAX_DURATION {
            return Err(serde::de::Error::custom(format!(
                "duration {:?} is longer than a year",
                text.0
            )));
        }
        Ok(Dur(duration))
    }
}

/// A byte size written as `1MiB`, `64KiB`, `1000` (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Text::deserialize(deserializer)?;
        parse_size(&text).map(Size).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid size {:?}; write e.g. `1MiB`, `64KiB` or a number of bytes",
                text.0
            ))
        })
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: u64 = text[..digits].parse().ok()?;
    let unit: u64 = match text[digits..].trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(unit)
}

/// One problem found in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// Dotted key path such as `routes[2].upstream`, when known.
    pub key: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub fn at(
        file: &Path,
        location: Location,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: (location.line() > 0).then(|| location.line()),
            key: Some(key.into()),
            message: message.into(),
        }
    }

    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: None,
            key: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Parses config text, expanding `${VAR}` from the process environment. `file` is only used
/// to name the file in errors.
pub fn parse(file: &Path, text: &str) -> Result<RawConfig, ConfigError> {
    parse_with_env(file, text, |name| std::env::var(name).ok())
}

/// Like [`parse`], with variables looked up by `env` (tests use this instead of mutating the
/// process environment).
pub fn parse_with_env(
    file: &Path,
    text: &str,
    env: impl Fn(&str) -> Option<String> + 'static,
) -> Result<RawConfig, ConfigError> {
    ENV.with_borrow_mut(|slot| *slot = Some(Box::new(env)));
    let parsed = parse_inner(file, text);
    ENV.with_borrow_mut(|slot| *slot = None);
    parsed
}

fn parse_inner(file: &Path, text: &str) -> Result<RawConfig, ConfigError> {
    let mut key_path = None;
    let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            // `Spanned<T>` wraps a value in a struct whose field is `value`; no config key is
            // named `value`, so the segment is dropped to give operators the path they wrote.
            let path = e.path().to_string().replace(".value.", ".");
            key_path = Some(path.strip_suffix(".value").unwrap_or(&path).to_string());
            e.into_inner()
        })
    });
    parsed.map_err(|error| {
        let line = error.location().map(|l| l.line()).filter(|&l| l > 0);
        // The error renders with its own "line N column M:" prefix and a snippet; keep only the
        // reason, since we print file and line ourselves.
        let rendered = error.without_snippet().to_string();
        let message = rendered
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .split_once(": ")
            .filter(|(head, _)| head.starts_with("line "))
            .map_or_else(
                || rendered.lines().next().unwrap_or_default().to_string(),
                |(_, rest)| rest.to_string(),
            );
        ConfigError {
            file: file.to_path_buf(),
            line,
            key: key_path.filter(|k| !k.is_empty() && k != "."),
            message,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_size("64 KiB"), Some(64 << 10));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("1 furlong"), None);
        assert_eq!(parse_size("99999999999999999999GiB"), None);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = "listeners: []\nupstreams: {}\nroutes:\n  - name: a\n    mehtod: GET\n";
        let err = parse(Path::new("gw.yaml"), text).unwrap_err();
        assert_eq!(err.line, Some(5));
        assert_eq!(err.key.as_deref(), Some("routes[0].mehtod"));
        assert!(
            err.message.contains("unknown field `mehtod`"),
            "{}",
            err.message
        );
        assert!(
            err.to_string()
                .starts_with("gw.yaml:5: routes[0].mehtod: unknown field"),
            "{err}"
        );
    }

    #[test]
    fn absurd_durations_are_refused() {
        let text = "listeners: []\nupstreams: {}\nroutes: []\ndefaults:\n  timeouts:\n    header_read: 10000000000000000000s\n";
        let err = parse(Path::new("gw.yaml"), text).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("defaults.timeouts.header_read"));
        assert!(
            err.message.contains("longer than a year"),
            "{}",
            err.message
        );
    }

    #[test]
    fn bad_duration_is_located() {
        let text =
            "listeners: []\nupstreams: {}\nroutes: []\ndefaults:\n  timeouts:\n    connect: soon\n";
        let err = parse(Path::new("gw.yaml"), text).unwrap_err();
        assert_eq!(err.line, Some(6));
        assert_eq!(err.key.as_deref(), Some("defaults.timeouts.connect"));
        assert!(
            err.message.contains("invalid duration \"soon\""),
            "{}",
            err.message
        );
    }
}

/// What a route requires of the caller's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Nothing.
    #[default]
    None,
    /// A JSON Web Token verified by a `jwt:` provider (`auth: { jwt: NAME }`); never
    /// written by name.
    #[serde(skip)]
    Jwt,
    /// `Authorization: Bearer <token>`; the scheme name is case-insensitive and the token is
    /// an RFC 6750 token68.
    Bearer,
    /// Any credentials: an `Authorization` header of any scheme or a cookie (Gestiono accepts
    /// signed keys, raw tokens and browser cookies).
    Credentials,
    /// `Authorization: Bearer <key>` where the key's SHA-256 is listed in `api_keys`.
    #[serde(rename = "api_key")]
    ApiKey,
}

/// How a route writes its error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorStyle {
    /// `{"statusCode": N, "message": ..., "error": "..."}` (the documented envelope).
    #[default]
    Nest,
    /// RFC 9457 `application/problem+json`, with violations as an `errors` array.
    Problem,
}
