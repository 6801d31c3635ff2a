//! `schema_dir:` and `routes:`: each route with its method and path in the router, its
//! upstream, schemas, auth, tenant rule, rate limiter and overrides. A route reports every
//! problem it has, not only its first.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::defaults::Defaults;
use super::errors::Errors;
use super::upstreams::Compiled;
use super::*;

/// The schema directory, scanned once per snapshot and only if some route names a schema.
pub(super) struct Schemas {
    /// Where the directory is (relative paths resolve against the config's directory).
    pub path: PathBuf,
    /// Whether any route names a schema.
    pub used: bool,
    /// The scanned directory; `None` when unused or unreadable (reported).
    pub dir: Option<SchemaDir>,
    /// Its strict view, for the bodies of routes with `strict: true` (only when there are).
    pub strict: Option<SchemaDir>,
}

pub(super) fn schema_dir(raw: &RawConfig, base_dir: &Path, errors: &mut Errors<'_>) -> Schemas {
    let path = base_dir.join(raw.schema_dir.as_deref().unwrap_or("schemas"));
    let used = raw.routes.iter().any(|r| {
        let s = &r.value.schemas;
        s.body.is_some()
            || s.query.is_some()
            || s.headers.is_some()
            || s.path.is_some()
            || s.response.is_some()
    });
    let dir = match used.then(|| SchemaDir::scan(&path)) {
        Some(Ok(dir)) => Some(dir),
        Some(Err(error)) => {
            errors.file(format!("schema_dir: {error}"));
            None
        }
        None => None,
    };
    let strict_bodies: Vec<PathBuf> = raw
        .routes
        .iter()
        .filter(|r| r.value.strict)
        .filter_map(|r| r.value.schemas.body.as_ref())
        .map(|file| path.join(&*file.value))
        .collect();
    let strict = match &dir {
        Some(dir) if !strict_bodies.is_empty() => Some(dir.strict(&strict_bodies)),
        _ => None,
    };
    Schemas {
        path,
        used,
        dir,
        strict,
    }
}

/// What every route is compiled against.
pub(super) struct Context<'a> {
    pub raw: &'a RawConfig,
    pub jwt: &'a [Arc<crate::jwt::Provider>],
    pub defaults: &'a Defaults,
    pub upstreams: &'a [Compiled],
    pub schemas: &'a Schemas,
    pub clock: &'a GatewayClock,
}

/// Where a route's schemas come from.
pub(super) enum Source<'r> {
    /// Hand-written: schema files named in `routes[i].schemas`.
    Files(&'r RawSchemas),
    /// From an OpenAPI document: compiled already, with the body's media types.
    Compiled(Box<RouteSchemas>, Option<BodyMedia>),
}

/// Every route that compiled (hand-written, then from `openapi:` documents), and the router
/// over them.
pub(super) fn build(
    context: &Context<'_>,
    imported: Vec<super::openapi::Operation>,
    errors: &mut Errors<'_>,
) -> (Router, Vec<Route>) {
    let mut router = Router::new();
    let mut routes: Vec<Route> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    let hand_written = context.raw.routes.iter().enumerate().map(|(i, spanned)| {
        let source = Source::Files(&spanned.value.schemas);
        (format!("routes[{i}]"), spanned, source)
    });
    let (heads, sources): (Vec<_>, Vec<_>) = imported
        .into_iter()
        .map(|op| {
            (
                (op.key, op.route),
                Source::Compiled(Box::new(op.schemas), op.body),
            )
        })
        .unzip();
    let from_documents = heads
        .iter()
        .zip(sources)
        .map(|((key, route), source)| (key.clone(), route, source));
    for (prefix, spanned, source) in hand_written.chain(from_documents) {
        let key = |field: &str| format!("{prefix}.{field}");
        let name = &spanned.value.name.0;
        if routes.iter().any(|r| r.name == *name) {
            errors.at(
                spanned.defined,
                key("name"),
                format!("route name {name:?} is used twice"),
            );
            continue;
        }
        let Some(route) = build_route(context, &prefix, spanned, source, errors) else {
            continue;
        };
        let place = crate::route::place(&route.path);
        let clash = routes.iter().position(|r| {
            r.method == route.method && place.is_some() && crate::route::place(&r.path) == place
        });
        if let Some(other) = clash {
            errors.at(
                spanned.defined,
                key("path"),
                format!(
                    "{} {} is both route {:?} ({}) and route {:?} ({prefix})",
                    route.method, route.path, routes[other].name, keys[other], route.name
                ),
            );
            continue;
        }
        match router.add(route.method.clone(), &route.path, routes.len()) {
            Ok(()) => {
                routes.push(route);
                keys.push(prefix);
            }
            Err(message) => errors.at(spanned.defined, key("path"), message),
        }
    }
    (router, routes)
}

/// One route; `None` when any part of it is wrong, each problem reported at its key.
fn build_route(
    context: &Context<'_>,
    prefix: &str,
    spanned: &Spanned<RawRoute>,
    source: Source<'_>,
    errors: &mut Errors<'_>,
) -> Option<Route> {
    let raw = &spanned.value;
    let key = |field: &str| format!("{prefix}.{field}");
    let has_body = match &source {
        Source::Files(files) => files.body.is_some(),
        Source::Compiled(schemas, _) => schemas.body.is_some(),
    };
    // A hand-written route documents only its success body (`schemas.response`).
    let success_only = matches!(source, Source::Files(_));
    let responses_known = !(success_only
        && raw.responses == ResponsesMode::Report
        && matches!(&source, Source::Files(files) if files.response.is_none()));
    // Each part is checked whatever became of the others, so that all are reported.
    let mut at = |field: &str, message: String| errors.at(spanned.defined, key(field), message);
    let method = Method::from_bytes(raw.method.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| {
            at(
                "method",
                format!("{:?} is not an HTTP method", raw.method.0),
            )
        })
        .ok();
    let upstream = context.upstreams.iter().find(|u| u.name == raw.upstream.0);
    // A failed upstream was already reported; only report names that do not exist.
    if upstream.is_none() && !context.raw.upstreams.contains_key(&raw.upstream.0) {
        let known = context.raw.upstreams.keys().cloned().collect::<Vec<_>>();
        at(
            "upstream",
            format!(
                "no upstream named {:?} (known: {})",
                raw.upstream.0,
                known.join(", ")
            ),
        );
    }
    let overrides = route_overrides(raw)
        .map_err(|(field, message)| at(field, message))
        .is_ok();
    let forward_path = forward_path(raw)
        .map_err(|message| at("rewrite", message))
        .ok();
    let tenant = match &raw.tenant {
        Some(raw_tenant) => match tenant_rule(raw, raw_tenant, has_body) {
            Ok(rule) => Some(Some(rule)),
            Err(message) => {
                at("tenant", message);
                None
            }
        },
        None => Some(None),
    };
    let jwt = match &raw.auth {
        config::RawAuth::Jwt(rule) => match jwt_rule(context, rule) {
            Ok(rule) => Some(Some(rule)),
            Err(Some(message)) => {
                at("auth", message);
                None
            }
            // The provider failed to compile: already reported at its own key.
            Err(None) => None,
        },
        config::RawAuth::Mode(_) => Some(None),
    };
    let keys_known = !(raw.auth.mode() == AuthMode::ApiKey && context.raw.api_keys.is_empty());
    if !keys_known {
        at(
            "auth",
            "`auth: api_key` needs at least one entry in `api_keys`".to_string(),
        );
    }
    if !responses_known {
        at(
            "responses",
            "`responses: report` on a hand-written route needs `schemas.response` (the documented success body)".to_string(),
        );
    }
    let limiter = match &raw.rate_limit {
        Some(raw_limit) => {
            let built = store_allowed(raw_limit, context.raw.redis.is_some())
                .and_then(|()| limit_settings(raw_limit))
                .and_then(|s| RouteLimiter::new(&s, context.clock));
            match built {
                Ok(limiter) => Some(Some(Arc::new(limiter))),
                Err(message) => {
                    at("rate_limit", message);
                    None
                }
            }
        }
        None => Some(None),
    };
    let schemas = &context.schemas;
    let (compiled, body_media, files) = match source {
        Source::Files(files) => {
            let dirs = SchemaDirs {
                all: schemas.dir.as_ref(),
                body: match raw.strict {
                    true => schemas.strict.as_ref(),
                    false => schemas.dir.as_ref(),
                },
            };
            let compiled = compile_schemas(errors.path(), &schemas.path, dirs, files, prefix);
            let compiled = match compiled {
                Ok(compiled) => Some(compiled),
                Err(schema_errors) => {
                    for error in schema_errors {
                        errors.push(error);
                    }
                    None
                }
            };
            (compiled, None, schema_files(&schemas.path, files))
        }
        Source::Compiled(compiled, body_media) => (Some(*compiled), body_media, Vec::new()),
    };
    let (
        Some(method),
        Some(upstream),
        true,
        Some(forward_path),
        Some(tenant),
        true,
        Some(limiter),
        Some(compiled),
        Some(jwt),
    ) = (
        method,
        upstream,
        overrides,
        forward_path,
        tenant,
        keys_known && responses_known,
        limiter,
        compiled,
        jwt,
    )
    else {
        return None;
    };
    let defaults = context.defaults;
    let limits = defaults.limits.layered(&raw.limits);
    Some(Route {
        name: raw.name.0.clone(),
        method,
        path: raw.path.0.clone(),
        upstream: Arc::clone(&upstream.upstream),
        forward_path,
        preserve_host: raw.preserve_host,
        response_headers_timeout: raw
            .timeouts
            .response_headers
            .map_or(upstream.response_headers, |d| d.0),
        limits,
        body_idle_timeout: raw.timeouts.body_idle.map_or(defaults.body_idle, |d| d.0),
        body_timeout: raw.timeouts.body.map_or(defaults.body, |d| d.0),
        auth: raw.auth.mode(),
        jwt,
        schemas: compiled,
        report_only: raw.validation == ValidationMode::Report,
        strict: raw.strict,
        responses: (raw.responses == ResponsesMode::Report).then_some(ResponseChecks {
            cap: limits.response_check,
            success_only,
        }),
        error_style: raw.errors,
        tenant,
        limiter,
        store: raw
            .rate_limit
            .as_ref()
            .map_or(Store::Local, |limit| limit.store),
        schema_files: files,
        body_media,
        series: Default::default(),
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
            "a route's `limits` set only `body`, `json_depth`, `violations` and `response_check`; the others apply before a route is known: set them in defaults.limits".to_string(),
        ));
    }
    Ok(())
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

/// The schema directory a route's schemas compile against: its body's is the strict view
/// for a strict route.
#[derive(Clone, Copy)]
struct SchemaDirs<'d> {
    all: Option<&'d SchemaDir>,
    body: Option<&'d SchemaDir>,
}

/// Compiles every schema a route names, reporting each failure at its key.
fn compile_schemas(
    path: &Path,
    schema_path: &Path,
    dirs: SchemaDirs<'_>,
    raw: &RawSchemas,
    prefix: &str,
) -> Result<RouteSchemas, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut load = |location: &str, file: &Option<Spanned<config::Text>>| {
        let file = file.as_ref()?;
        // Without a readable schema directory (already reported) nothing can compile.
        let dir = match location {
            "body" => dirs.body?,
            _ => dirs.all?,
        };
        match dir.compile(&schema_path.join(&*file.value)) {
            Ok(schema) => Some(schema),
            Err(error) => {
                let key = format!("{prefix}.schemas.{location}");
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
        cookies: None,
        response: load("response", &raw.response),
        responses: Vec::new(),
    };
    if errors.is_empty() {
        Ok(schemas)
    } else {
        Err(errors)
    }
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

/// Checks a route's tenant source against the rest of the route.
fn tenant_rule(route: &RawRoute, raw: &RawTenant, has_body: bool) -> Result<TenantRule, String> {
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
            if !has_body {
                return Err(
                    "`from: body` needs `schemas.body` (or a JSON request body schema): only a validated body is parsed"
                        .to_string(),
                );
            }
            TenantSource::Body(need_name("body")?)
        }
        TenantFrom::Key => {
            if route.auth.mode() != AuthMode::ApiKey {
                return Err("`from: key` needs `auth: api_key`".to_string());
            }
            if name.is_some() {
                return Err("`from: key` takes no `name`".to_string());
            }
            TenantSource::Key
        }
        TenantFrom::Claim => {
            if route.auth.mode() != AuthMode::Jwt {
                return Err("`from: claim` needs `auth: { jwt: NAME }`: only a verified token's claims name tenants".to_string());
            }
            let name = need_name("claim")?;
            if name.split('.').any(str::is_empty) {
                return Err(format!(
                    "{name:?} is not a claim path (`tenant_id`, `org.id`)"
                ));
            }
            TenantSource::Claim(name)
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

/// `auth: { jwt: NAME, scopes }`: the provider by name, and scopes that can be written in a
/// `WWW-Authenticate` answer (RFC 6749 §3.3 scope-tokens). `Err(None)`: the provider exists
/// in the config but failed to compile (reported there).
fn jwt_rule(
    context: &Context<'_>,
    raw: &config::RawJwtAuth,
) -> Result<crate::jwt::JwtRule, Option<String>> {
    for scope in &raw.scopes {
        let token = |b: u8| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b);
        if scope.is_empty() || !scope.bytes().all(token) {
            return Err(Some(format!(
                "scope {:?} is not a scope-token (printable ASCII without spaces, `\"` or `\\`)",
                scope.0
            )));
        }
    }
    match context.jwt.iter().find(|p| p.name() == raw.jwt.0) {
        Some(provider) => Ok(crate::jwt::JwtRule {
            provider: Arc::clone(provider),
            scopes: raw.scopes.iter().map(|s| s.0.clone()).collect(),
        }),
        None if context.raw.jwt.iter().any(|p| p.value.name.0 == raw.jwt.0) => Err(None),
        None => {
            let known: Vec<&str> = context
                .raw
                .jwt
                .iter()
                .map(|p| p.value.name.0.as_str())
                .collect();
            Err(Some(format!(
                "no `jwt:` provider named {:?} (known: {})",
                raw.jwt.0,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )))
        }
    }
}

/// `store: redis` needs the `redis:` section.
fn store_allowed(raw: &RawRateLimit, redis_configured: bool) -> Result<(), String> {
    if raw.store == Store::Redis && !redis_configured {
        return Err("`store: redis` needs a top-level `redis:` section with its `url`".to_string());
    }
    Ok(())
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
