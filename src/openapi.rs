//! `schemagate openapi`: the configured routes as an OpenAPI 3.1 document.
//!
//! Pure: [`document`] reads a compiled [`Snapshot`] and the schema files ([`SchemaDocs`]) and
//! returns the document as JSON. It does no IO; the CLI reads the files and prints the result.
//!
//! What the document says, and where each part comes from:
//! - one path per public path template (matchit's `{*rest}` is written `{rest}`), one
//!   operation per route, named by the route (`operationId`), tagged with the vendor (the route
//!   name up to its first `.`);
//! - path, query and header parameters: one per top-level property of the route's `path`,
//!   `query` and `headers` schema (also through `$ref` and `allOf`), `required` from the
//!   schema's `required`, the property's schema as the parameter's schema. Query values the
//!   gateway reads as JSON text (object-typed, arrays of objects) are `content:
//!   application/json` parameters; arrays of scalars are repeated keys (`style: form`,
//!   `explode: true`). `Authorization` is not a parameter but the route's security scheme;
//! - the request body (`application/json`, required) from the `body` schema;
//! - the success response: the route's `response` schema; for the built-in mock, its status
//!   and its body as the example; for a real upstream, any `2XX`;
//! - the gateway's own error responses, only those the route can produce, each with the exact
//!   body [`GatewayError`](crate::error::GatewayError) writes in the route's error style and
//!   the headers the gateway sets (`X-Request-Id` always, `Allow` on 405, `Retry-After` on 429,
//!   `RateLimit-*` wherever the rate limit ran).
//!
//! Schema files become `components/schemas` entries named after their path
//! (`flextell/create_conversation.body.json` is `flextell.create_conversation.body`), without
//! `$schema` and `$id`, and every `$ref` between files is rewritten to a pointer into the
//! document, so the result is self-contained. Like the coercion plan, the export follows
//! JSON-pointer fragments, `$anchor`s and top-level `$id`s, not `$id`s nested inside a file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use http::StatusCode;
use serde_json::{json, Map, Value};

use crate::auth::AuthMode;
use crate::error::ErrorStyle;
use crate::schema::{CompiledSchema, SchemaDir};
use crate::snapshot::{Route, Snapshot};
use crate::upstream::UpstreamTarget;

/// The OpenAPI version written.
pub const OPENAPI_VERSION: &str = "3.1.0";

/// The methods an OpenAPI 3.1 path item can hold.
const OPENAPI_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// How deep `$ref`/`allOf` chains are followed to find a schema's properties: a stop for
/// reference cycles, far beyond any real schema.
const MAX_PROPERTY_DEPTH: usize = 16;

/// Headers OpenAPI forbids as parameters (`Authorization` is the security scheme's,
/// `Content-Type` the request body's, `Accept` the responses').
const RESERVED_HEADERS: [&str; 3] = ["authorization", "content-type", "accept"];

/// Why the document could not be written. The snapshot already proved every reference
/// resolves, so this only happens for references the export cannot follow (nested `$id`s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportError(String);

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ExportError {}

/// The schema files the export may copy: every parsed file of the schema directory.
#[derive(Debug, Default, Clone)]
pub struct SchemaDocs {
    /// Files by their path relative to the schema directory, `/`-separated.
    files: BTreeMap<String, Arc<Value>>,
    /// File paths by the absolute `$id` the file declares at its top level.
    ids: BTreeMap<String, String>,
}

impl SchemaDocs {
    /// The documents, given as (path relative to the schema directory, parsed JSON).
    pub fn new(files: impl IntoIterator<Item = (String, Arc<Value>)>) -> SchemaDocs {
        let mut docs = SchemaDocs::default();
        for (rel, value) in files {
            if let Some(id) = top_level_id(&value, &rel) {
                docs.ids.entry(id).or_insert_with(|| rel.clone());
            }
            docs.files.insert(rel, value);
        }
        docs
    }

    /// Every file of a scanned schema directory.
    pub fn from_dir(dir: &SchemaDir) -> SchemaDocs {
        SchemaDocs::new(dir.documents())
    }
}

/// The OpenAPI 3.1 document of every route in `snapshot`.
pub fn document(snapshot: &Snapshot, docs: &SchemaDocs) -> Result<Value, ExportError> {
    let mut components = Components::new(docs);
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut tags = BTreeSet::new();
    let mut unlisted = Vec::new();
    for route in &snapshot.routes {
        let method = route.method.as_str().to_ascii_lowercase();
        if !OPENAPI_METHODS.contains(&method.as_str()) {
            unlisted.push(format!("{} {} ({})", route.method, route.path, route.name));
            continue;
        }
        let operation = operation(route, &mut components)?;
        if let Some(tag) = vendor(route) {
            tags.insert(tag.to_string());
        }
        paths
            .entry(openapi_path(&route.path))
            .or_default()
            .insert(method, operation);
    }
    let servers: Vec<Value> = snapshot
        .listeners
        .iter()
        .map(|listener| {
            let addr = listener.address;
            let scheme = if listener.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let host = if addr.ip().is_unspecified() {
                "localhost".to_string()
            } else {
                match addr.ip() {
                    std::net::IpAddr::V4(ip) => ip.to_string(),
                    std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                }
            };
            json!({
                "url": format!("{scheme}://{host}:{}", addr.port()),
                "description": format!("schemagate listener {addr}"),
            })
        })
        .collect();
    let mut description = "The routes schemagate serves. Requests are validated against the \
        schemas below before they reach the upstream; an invalid request is answered by the \
        gateway itself with the error responses documented for each operation. Other query \
        parameters, headers and body fields are allowed and forwarded unless a schema says \
        otherwise."
        .to_string();
    if !unlisted.is_empty() {
        description.push_str(&format!(
            " Routes whose method OpenAPI 3.1 cannot describe are not listed: {}.",
            unlisted.join(", ")
        ));
    }
    let mut document = Map::new();
    document.insert("openapi".into(), json!(OPENAPI_VERSION));
    document.insert(
        "info".into(),
        json!({
            "title": "schemagate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": description,
        }),
    );
    if !servers.is_empty() {
        document.insert("servers".into(), Value::Array(servers));
    }
    if !tags.is_empty() {
        let tags: Vec<Value> = tags
            .into_iter()
            .map(|name| json!({ "name": name }))
            .collect();
        document.insert("tags".into(), Value::Array(tags));
    }
    document.insert(
        "paths".into(),
        Value::Object(
            paths
                .into_iter()
                .map(|(path, item)| (path, Value::Object(item)))
                .collect(),
        ),
    );
    document.insert("components".into(), components.finish()?);
    Ok(Value::Object(document))
}

/// Pretty JSON with the top-level keys in the conventional order (`openapi`, `info`, ...),
/// which a `serde_json::Map` would otherwise sort.
pub fn render(document: &Value) -> String {
    const ORDER: [&str; 6] = ["openapi", "info", "servers", "tags", "paths", "components"];
    let Value::Object(map) = document else {
        return serde_json::to_string_pretty(document).unwrap_or_default();
    };
    let mut ordered: Vec<(&String, &Value)> = map.iter().collect();
    ordered.sort_by_key(|(key, _)| {
        ORDER
            .iter()
            .position(|k| *k == key.as_str())
            .unwrap_or(ORDER.len())
    });
    let members: Vec<String> = ordered
        .into_iter()
        .map(|(key, value)| {
            let value = serde_json::to_string_pretty(value).unwrap_or_default();
            format!(
                "  {}: {}",
                Value::String(key.clone()),
                value.replace('\n', "\n  ")
            )
        })
        .collect();
    format!("{{\n{}\n}}\n", members.join(",\n"))
}

/// The route's path as an OpenAPI template: `{*rest}` (matchit's catch-all) becomes `{rest}`.
fn openapi_path(template: &str) -> String {
    template.replace("{*", "{")
}

fn vendor(route: &Route) -> Option<&str> {
    route.name.split_once('.').map(|(vendor, _)| vendor)
}

/// The operation object of one route.
fn operation(route: &Route, components: &mut Components<'_>) -> Result<Value, ExportError> {
    let mut op = Map::new();
    op.insert("operationId".into(), json!(route.name));
    if let Some(tag) = vendor(route) {
        op.insert("tags".into(), json!([tag]));
    }
    let title = [
        &route.schemas.body,
        &route.schemas.query,
        &route.schemas.headers,
    ]
    .into_iter()
    .flatten()
    .find_map(|schema| components.title(schema));
    op.insert(
        "summary".into(),
        json!(title.map_or_else(|| route.name.clone(), |t| strip_location(&t))),
    );
    op.insert("description".into(), json!(describe_route(route)));

    let mut parameters = Vec::new();
    path_parameters(route, components, &mut parameters)?;
    if let Some(schema) = &route.schemas.query {
        let name = components.add(schema)?;
        for property in components.properties(&name) {
            let (property, shape) = components.wire(property);
            parameters.push(query_parameter(property, &shape));
        }
    }
    let mut authorization_required = false;
    if let Some(schema) = &route.schemas.headers {
        let name = components.add(schema)?;
        for property in components.properties(&name) {
            let lower = property.name.to_ascii_lowercase();
            if lower == "authorization" {
                authorization_required |= property.required;
            }
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                continue;
            }
            let (property, shape) = components.wire(property);
            parameters.push(header_parameter(property, &shape));
        }
    }
    if let Some(schema) = &route.schemas.cookies {
        let name = components.add(schema)?;
        for property in components.properties(&name) {
            let (property, shape) = components.wire(property);
            parameters.push(simple_parameter("cookie", property, &shape));
        }
    }
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }

    if let Some(schema) = &route.schemas.body {
        let name = components.add(schema)?;
        op.insert(
            "requestBody".into(),
            json!({
                "required": true,
                "description": "JSON (`application/json` or `application/*+json`, parameters \
                    allowed), validated against the schema and forwarded byte for byte.",
                "content": { "application/json": { "schema": schema_ref(&name) } },
            }),
        );
    }

    if let Some(security) = security(route.auth, authorization_required, components) {
        op.insert("security".into(), security);
    }
    op.insert("responses".into(), responses(route, components)?);
    Ok(Value::Object(op))
}

/// A schema title without its `(body)` / `(headers)` suffix, for the operation summary.
fn strip_location(title: &str) -> String {
    match title.rsplit_once(" (") {
        Some((head, tail)) if tail.ends_with(')') => head.to_string(),
        _ => title.to_string(),
    }
}

fn describe_route(route: &Route) -> String {
    let upstream = match &route.upstream.target {
        UpstreamTarget::Mock { .. } => format!(
            "the built-in mock `{}`, which answers every request with the documented sample",
            route.upstream.name
        ),
        UpstreamTarget::Http(_) => format!("upstream `{}`", route.upstream.name),
    };
    let mut text = format!("Route `{}`, forwarded to {upstream}.", route.name);
    if route.report_only {
        text.push_str(
            " Validation is report-only: invalid requests are forwarded with an \
             `X-Schemagate-Violations` header instead of being rejected.",
        );
    }
    if let Some(rule) = &route.tenant {
        use crate::tenant::TenantSource;
        let from = match &rule.source {
            TenantSource::Header(name) => format!("the `{name}` header"),
            TenantSource::Query(name) => format!("the query parameter `{name}`"),
            TenantSource::Path(name) => format!("the path parameter `{name}`"),
            TenantSource::Body(name) => format!("the body field `{name}`"),
            TenantSource::Key => "the API key's binding".to_string(),
            TenantSource::ClientCert => {
                "the verified TLS client certificate's subject common name".to_string()
            }
            TenantSource::Claim(path) => format!("the verified token's claim `{path}`"),
        };
        text.push_str(&format!(" The tenant is {from}"));
        text.push_str(if rule.shared_when_missing {
            "; requests without one share a bucket."
        } else {
            "; it is required (400 without it)."
        });
    }
    if route.limiter.is_some() {
        text.push_str(" Rate limited per tenant (GCRA).");
    }
    text
}

/// The JSON types a property schema allows, and its items' types when it is an array: what
/// decides how the gateway reads the property's string from the wire (see `schema::coerce`).
#[derive(Debug, Default)]
struct Shape {
    types: BTreeSet<&'static str>,
    items: BTreeSet<&'static str>,
}

/// A top-level property of a parameter schema.
struct Property {
    name: String,
    schema: Value,
    required: bool,
}

fn parameter(location: &str, property: &Property) -> Map<String, Value> {
    let mut parameter = Map::new();
    parameter.insert("name".into(), json!(property.name));
    parameter.insert("in".into(), json!(location));
    if let Some(description) = property.schema.get("description") {
        parameter.insert("description".into(), description.clone());
    }
    parameter.insert("required".into(), json!(property.required));
    parameter
}

fn path_parameters(
    route: &Route,
    components: &mut Components<'_>,
    out: &mut Vec<Value>,
) -> Result<(), ExportError> {
    let names = crate::forward::template_params(&route.path);
    if names.is_empty() {
        return Ok(());
    }
    let mut declared = BTreeMap::new();
    if let Some(schema) = &route.schemas.path {
        let name = components.add(schema)?;
        for property in components.properties(&name) {
            declared.insert(property.name.clone(), property);
        }
    }
    for name in names {
        let property = declared.remove(name).unwrap_or_else(|| Property {
            name: name.to_string(),
            schema: json!({ "type": "string" }),
            required: true,
        });
        let (property, shape) = components.wire(property);
        // OpenAPI requires every path parameter; the router never matches without one.
        let mut parameter = parameter("path", &property);
        parameter.insert("required".into(), json!(true));
        parameter.insert(
            "schema".into(),
            with_null_spellings(property.schema, &shape),
        );
        out.push(Value::Object(parameter));
    }
    Ok(())
}

fn query_parameter(property: Property, shape: &Shape) -> Value {
    let mut parameter = parameter("query", &property);
    let types = &shape.types;
    let json_text = types.contains("object")
        || (types.contains("array")
            && (shape.items.contains("object") || shape.items.contains("array")));
    if json_text {
        // The gateway reads these as JSON text (`contactFilter={"email":"a@b.c"}`).
        parameter.insert(
            "content".into(),
            json!({ "application/json": { "schema": property.schema } }),
        );
    } else {
        if types.contains("array") {
            // A repeated key (`status=a&status=b`); one occurrence is a one-item array.
            parameter.insert("style".into(), json!("form"));
            parameter.insert("explode".into(), json!(true));
        }
        parameter.insert("schema".into(), with_null_spellings(property.schema, shape));
    }
    Value::Object(parameter)
}

fn header_parameter(property: Property, shape: &Shape) -> Value {
    simple_parameter("header", property, shape)
}

/// A header or cookie parameter: one value, JSON text for an object.
fn simple_parameter(location: &str, property: Property, shape: &Shape) -> Value {
    let mut parameter = parameter(location, &property);
    if shape.types.contains("object") {
        parameter.insert(
            "content".into(),
            json!({ "application/json": { "schema": property.schema } }),
        );
    } else {
        parameter.insert("schema".into(), with_null_spellings(property.schema, shape));
    }
    Value::Object(parameter)
}

/// A parameter schema as the gateway reads plain (not JSON-text) values: where null is
/// allowed but a string is not, an empty value and the text `null` are read as null
/// (`perPage=`), so the schema admits those two strings as well. Otherwise the document would
/// call `perPage=` invalid while the gateway accepts it.
fn with_null_spellings(schema: Value, shape: &Shape) -> Value {
    if !shape.types.contains("null") || shape.types.contains("string") {
        return schema;
    }
    let description = schema.get("description").cloned();
    let mut wrapped = json!({
        "anyOf": [
            schema,
            {
                "type": "string",
                "enum": ["", "null"],
                "description": "An empty value or `null`: read as null.",
            },
        ],
    });
    if let Some(description) = description {
        wrapped["description"] = description;
    }
    wrapped
}

/// The operation's `security`, adding the schemes it uses to the components.
fn security(
    mode: AuthMode,
    authorization_required: bool,
    components: &mut Components<'_>,
) -> Option<Value> {
    let mut use_scheme = |name: &'static str| {
        let scheme = match name {
            "bearer" => json!({
                "type": "http",
                "scheme": "bearer",
                "description": "`Authorization: Bearer <token>` (the scheme name in any case). \
                    The gateway checks that a well-formed token is present (401 otherwise); \
                    the upstream checks the token itself.",
            }),
            "apiKey" => json!({
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "API key",
                "description": "`Authorization: Bearer <key>`, where the key's SHA-256 is \
                    listed in the gateway's `api_keys` (401 for an unknown key; 403 when the \
                    key acts for a tenant outside its binding).",
            }),
            "jwt" => json!({
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "`Authorization: Bearer <JWT>`, verified by the gateway against \
                    the issuer's keys (signature, `exp`, `nbf`, `iss`, `aud`): 401 with \
                    `WWW-Authenticate: Bearer error=\"invalid_token\"` otherwise; 403 \
                    `insufficient_scope` when the route's scopes are missing.",
            }),
            "authorization" => json!({
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "Any credentials in `Authorization` (any scheme; `Bearer` needs \
                    a token). The gateway checks presence only; the upstream checks them.",
            }),
            _ => json!({
                "type": "apiKey",
                "in": "header",
                "name": "Cookie",
                "description": "Any cookie. The gateway checks presence only; the upstream \
                    checks it.",
            }),
        };
        components.security_schemes.insert(name.to_string(), scheme);
        json!({ name: [] })
    };
    match mode {
        AuthMode::Bearer => Some(json!([use_scheme("bearer")])),
        AuthMode::ApiKey => Some(json!([use_scheme("apiKey")])),
        AuthMode::Jwt => Some(json!([use_scheme("jwt")])),
        AuthMode::Credentials => Some(json!([use_scheme("authorization"), use_scheme("cookie")])),
        // No gateway auth, but a header schema that requires `Authorization`: OpenAPI only
        // lets a security scheme describe that header.
        AuthMode::None if authorization_required => Some(json!([use_scheme("authorization")])),
        AuthMode::None => None,
    }
}

/// Which error statuses a route can answer with, in order, and whether the rate limit has run
/// by then (so the `RateLimit-*` headers are set).
fn error_statuses(route: &Route) -> Vec<(StatusCode, bool)> {
    let body = route.schemas.body.is_some();
    let schemas = body
        || route.schemas.query.is_some()
        || route.schemas.headers.is_some()
        || route.schemas.path.is_some();
    let limited = route.limiter.is_some();
    let enforced_limit = route.limiter.as_ref().is_some_and(|l| !l.report_only());
    let enforced = !route.report_only;
    let http_upstream = matches!(route.upstream.target, UpstreamTarget::Http(_));
    let key_binding = route.auth == AuthMode::ApiKey
        && route
            .tenant
            .as_ref()
            .is_some_and(|rule| rule.source != crate::tenant::TenantSource::Key);
    let has_params = !crate::forward::template_params(&route.path).is_empty();
    // Every body, validated or streamed, is held to the size limit and the body timeouts.
    let may_have_body = body
        || matches!(
            route.method,
            http::Method::POST | http::Method::PUT | http::Method::PATCH
        );
    let candidates = [
        // Ambiguous HTTP (Host, Transfer-Encoding), on every route; empty, unparseable or too
        // deep JSON, two Content-Types; a missing or doubled tenant.
        (StatusCode::BAD_REQUEST, true, false),
        (
            StatusCode::UNAUTHORIZED,
            route.auth != AuthMode::None,
            false,
        ),
        (
            StatusCode::FORBIDDEN,
            key_binding || route.jwt.as_ref().is_some_and(|j| !j.scopes.is_empty()),
            false,
        ),
        // An empty path parameter leaves no route to match.
        (StatusCode::NOT_FOUND, has_params, false),
        (StatusCode::REQUEST_TIMEOUT, may_have_body, false),
        (StatusCode::PAYLOAD_TOO_LARGE, may_have_body, false),
        // The head limits and the in-flight cap apply before a route is known.
        (StatusCode::URI_TOO_LONG, true, false),
        (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, true, false),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, body && enforced, false),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            schemas && enforced,
            limited,
        ),
        (StatusCode::TOO_MANY_REQUESTS, enforced_limit, true),
        (StatusCode::BAD_GATEWAY, http_upstream, limited),
        (StatusCode::GATEWAY_TIMEOUT, http_upstream, limited),
        (StatusCode::SERVICE_UNAVAILABLE, true, false),
    ];
    candidates
        .into_iter()
        .filter(|(_, applies, _)| *applies)
        .map(|(status, _, limited)| (status, limited))
        .collect()
}

/// The operation's responses: the upstream's success answer, then the gateway's errors.
fn responses(route: &Route, components: &mut Components<'_>) -> Result<Value, ExportError> {
    let mut responses = Map::new();
    let limited = route.limiter.is_some();

    let (key, mock_body) = match &route.upstream.target {
        UpstreamTarget::Mock { status, body, .. } => (
            status.as_str().to_string(),
            serde_json::from_slice::<Value>(body).ok(),
        ),
        UpstreamTarget::Http(_) => ("2XX".to_string(), None),
    };
    let mut success = Map::new();
    success.insert(
        "description".into(),
        json!(match &route.upstream.target {
            UpstreamTarget::Mock { .. } =>
                "The upstream's answer (here the built-in mock's documented sample).",
            UpstreamTarget::Http(_) =>
                "The upstream's answer, passed through unchanged (status, headers, body).",
        }),
    );
    success.insert("headers".into(), headers(components, limited, &[]));
    let schema = match &route.schemas.response {
        Some(schema) => Some(schema_ref(&components.add(schema)?)),
        // The mock always answers JSON; without a schema, any JSON.
        None if mock_body.is_some() => Some(json!({})),
        None => None,
    };
    if let Some(schema) = schema {
        let mut media = Map::new();
        media.insert("schema".into(), schema);
        if let Some(body) = mock_body {
            media.insert(
                "examples".into(),
                json!({ "mock": { "summary": "what the built-in mock answers", "value": body } }),
            );
        }
        success.insert(
            "content".into(),
            json!({ "application/json": Value::Object(media) }),
        );
    }
    responses.insert(key, Value::Object(success));

    for (status, after_limit) in error_statuses(route) {
        let name = components.error_schema(status, route.error_style);
        let mut extra: Vec<&str> = Vec::new();
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            extra.push("Retry-After");
        }
        let media_type = match route.error_style {
            ErrorStyle::Nest => "application/json",
            ErrorStyle::Problem => "application/problem+json",
        };
        responses.insert(
            status.as_str().to_string(),
            json!({
                "description": error_description(status),
                "headers": headers(components, after_limit, &extra),
                "content": { media_type: { "schema": schema_ref(&name) } },
            }),
        );
    }
    Ok(Value::Object(responses))
}

/// The headers of one response: `X-Request-Id` always, `RateLimit-*` when the limit ran,
/// and any `extra` named ones; each a `$ref` to `components/headers`.
fn headers(components: &mut Components<'_>, limited: bool, extra: &[&str]) -> Value {
    let mut names = vec!["X-Request-Id"];
    if limited {
        names.extend(["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"]);
    }
    names.extend_from_slice(extra);
    let mut out = Map::new();
    for name in names {
        components.use_header(name);
        out.insert(
            name.to_string(),
            json!({ "$ref": format!("#/components/headers/{name}") }),
        );
    }
    Value::Object(out)
}

fn header_definition(name: &str) -> Value {
    let count = |description: &str| {
        json!({
            "description": description,
            "required": true,
            "schema": { "type": "integer", "minimum": 0 },
        })
    };
    match name {
        "X-Request-Id" => json!({
            "description": "The client's X-Request-Id when it is 1 to 128 visible ASCII \
                characters, otherwise one the gateway made.",
            "required": true,
            "schema": { "type": "string", "pattern": "^[!-~]{1,128}$" },
        }),
        "RateLimit-Limit" => count("The tenant's burst capacity."),
        "RateLimit-Remaining" => count("Requests the tenant may still make at once."),
        "RateLimit-Reset" => count("Seconds until the tenant's bucket is full again."),
        "Retry-After" => count("Seconds to wait before retrying (rounded up)."),
        _ => json!({
            "description": "The methods this path accepts, comma-separated.",
            "required": true,
            "schema": { "type": "string", "minLength": 1 },
        }),
    }
}

fn error_description(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => {
            "Bad Request: an empty or unparseable JSON body (single quotes, trailing data, \
            duplicate keys, invalid UTF-8, nesting too deep), two Content-Type headers, or a \
            missing or doubled tenant."
        }
        401 => {
            "Unauthorized: credentials missing or malformed, an unknown API key, or a JWT \
            that fails verification (\"Invalid token: <class>\")."
        }
        403 => {
            "Forbidden: the API key may not act for this tenant, or the token lacks a scope \
            the route requires (`WWW-Authenticate: Bearer error=\"insufficient_scope\"`)."
        }
        404 => "Not Found: no route has this path (an empty path parameter).",
        405 => "Method Not Allowed: the path exists for other methods (see `Allow`).",
        408 => {
            "Request Timeout: the body paused longer than `timeouts.body_idle` or took longer \
            than `timeouts.body`."
        }
        413 => "Payload Too Large: the body is over the route's limit.",
        414 => "URI Too Long: the request target is over `limits.uri`.",
        431 => {
            "Request Header Fields Too Large: more header fields than `limits.headers`, or \
            more bytes of them than `limits.header_bytes`."
        }
        503 => {
            "Service Unavailable: more requests in flight than `limits.in_flight`; retry \
            after `Retry-After` seconds."
        }
        415 => {
            "Unsupported Media Type: a body whose Content-Type is not application/json or \
            application/*+json, or a body without Content-Type."
        }
        422 => {
            "Unprocessable Entity: the request fails its schemas; every violation is listed \
            with its location and field."
        }
        429 => "Too Many Requests: the tenant is over its rate limit.",
        502 => {
            "Bad Gateway: the upstream refused the connection, reset it, or answered \
            something that is not HTTP."
        }
        504 => {
            "Gateway Timeout: the upstream did not connect or send its response headers in \
            time."
        }
        _ => "An error answered by the gateway.",
    }
}

/// The body the gateway writes for `status` in `style` (see `crate::error`), as a schema.
/// `statusCode`/`status`, `error`/`title` are constants; the 422 envelope's `message` is an
/// array of strings and the problem's `errors` lists each violation; nothing else is sent.
pub fn error_body_schema(status: StatusCode, style: ErrorStyle) -> Value {
    let reason = status.canonical_reason().unwrap_or("Error");
    let invalid = status == StatusCode::UNPROCESSABLE_ENTITY;
    match style {
        ErrorStyle::Nest => {
            let message = if invalid {
                json!({
                    "type": "array",
                    "items": { "type": "string" },
                    "minItems": 1,
                    "description": "One string per violation, each naming the location and \
                        field (`body.channel_id must be >= 1`); past the route's limit, a last \
                        `and N more`.",
                })
            } else {
                json!({ "type": "string" })
            };
            json!({
                "type": "object",
                "required": ["statusCode", "message", "error"],
                "additionalProperties": false,
                "properties": {
                    "statusCode": { "type": "integer", "const": status.as_u16() },
                    "message": message,
                    "error": { "type": "string", "const": reason },
                },
            })
        }
        ErrorStyle::Problem => {
            let mut properties = json!({
                "type": { "type": "string", "const": "about:blank" },
                "title": { "type": "string", "const": reason },
                "status": { "type": "integer", "const": status.as_u16() },
                "detail": { "type": "string" },
            });
            let mut required = vec!["type", "title", "status", "detail"];
            if invalid {
                properties["errors"] = json!({
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["location", "pointer", "keyword", "message"],
                        "additionalProperties": false,
                        "properties": {
                            "location": { "enum": ["body", "query", "header", "path"] },
                            "pointer": { "type": "string" },
                            "keyword": { "type": "string" },
                            "message": { "type": "string" },
                        },
                    },
                });
                required.push("errors");
            }
            json!({
                "type": "object",
                "description": "RFC 9457 problem details.",
                "required": required,
                "additionalProperties": false,
                "properties": properties,
            })
        }
    }
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// What the document's `components` collect while the operations are written.
struct Components<'d> {
    docs: &'d SchemaDocs,
    /// Component name of each schema file taken so far.
    names: BTreeMap<String, String>,
    /// Schemas by component name, with their references rewritten.
    schemas: BTreeMap<String, Value>,
    /// Files named but not yet copied.
    pending: Vec<String>,
    headers: BTreeSet<String>,
    security_schemes: BTreeMap<String, Value>,
}

impl<'d> Components<'d> {
    fn new(docs: &'d SchemaDocs) -> Self {
        Components {
            docs,
            names: BTreeMap::new(),
            schemas: BTreeMap::new(),
            pending: Vec::new(),
            headers: BTreeSet::new(),
            security_schemes: BTreeMap::new(),
        }
    }

    fn use_header(&mut self, name: &str) {
        self.headers.insert(name.to_string());
    }

    /// The component holding `schema`'s file (copied, with the files it references).
    fn add(&mut self, schema: &CompiledSchema) -> Result<String, ExportError> {
        let rel: Vec<String> = schema
            .source()
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let name = self.name_of(&rel.join("/"))?;
        self.drain()?;
        Ok(name)
    }

    /// The component name for a file, reserving it (and queueing the copy) the first time.
    fn name_of(&mut self, rel: &str) -> Result<String, ExportError> {
        if let Some(name) = self.names.get(rel) {
            return Ok(name.clone());
        }
        if !self.docs.files.contains_key(rel) {
            return Err(ExportError(format!(
                "schema file {rel} is not in the schema directory"
            )));
        }
        let stem = rel.strip_suffix(".json").unwrap_or(rel);
        let base: String = stem
            .chars()
            .map(|c| match c {
                '/' => '.',
                c if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') => c,
                _ => '_',
            })
            .collect();
        let taken: BTreeSet<&String> = self.names.values().collect();
        let mut name = base.clone();
        let mut n = 2;
        while taken.contains(&name) || name.starts_with("error-") || name.starts_with("problem-") {
            name = format!("{base}_{n}");
            n += 1;
        }
        self.names.insert(rel.to_string(), name.clone());
        self.pending.push(rel.to_string());
        Ok(name)
    }

    /// Copies every queued file, which may queue the files it references.
    fn drain(&mut self) -> Result<(), ExportError> {
        while let Some(rel) = self.pending.pop() {
            let Some(doc) = self.docs.files.get(&rel).cloned() else {
                continue;
            };
            let mut copy = Value::clone(&doc);
            if let Value::Object(map) = &mut copy {
                // The document's own dialect is OpenAPI 3.1's (JSON Schema 2020-12), and an
                // `$id` would re-base the rewritten references.
                map.remove("$schema");
                map.remove("$id");
                map.remove("id");
            }
            self.rewrite_schema(&mut copy, &rel, &doc)?;
            let name = self.names.get(&rel).cloned().unwrap_or_default();
            self.schemas.insert(name, copy);
        }
        Ok(())
    }

    /// Rewrites every `$ref` in `schema` (part of file `rel`, whose original is `doc`), walking
    /// only where JSON Schema puts subschemas, so `const`/`enum`/`examples` values that merely
    /// look like references are left alone.
    fn rewrite_schema(
        &mut self,
        schema: &mut Value,
        rel: &str,
        doc: &Value,
    ) -> Result<(), ExportError> {
        let Value::Object(map) = schema else {
            return Ok(());
        };
        for (key, value) in map.iter_mut() {
            match key.as_str() {
                "$ref" | "$dynamicRef" => {
                    if let Value::String(reference) = value {
                        *reference = self.rewrite_ref(reference, rel, doc)?;
                    }
                }
                "not"
                | "if"
                | "then"
                | "else"
                | "contains"
                | "additionalProperties"
                | "propertyNames"
                | "unevaluatedItems"
                | "unevaluatedProperties"
                | "contentSchema"
                | "additionalItems" => self.rewrite_schema(value, rel, doc)?,
                "items" => match value {
                    Value::Array(items) => {
                        for item in items {
                            self.rewrite_schema(item, rel, doc)?;
                        }
                    }
                    other => self.rewrite_schema(other, rel, doc)?,
                },
                "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                    if let Value::Array(items) = value {
                        for item in items {
                            self.rewrite_schema(item, rel, doc)?;
                        }
                    }
                }
                "properties" | "patternProperties" | "$defs" | "definitions"
                | "dependentSchemas" | "dependencies" => {
                    if let Value::Object(members) = value {
                        for member in members.values_mut() {
                            self.rewrite_schema(member, rel, doc)?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `reference`, written in file `rel`, as a pointer into this document.
    fn rewrite_ref(
        &mut self,
        reference: &str,
        rel: &str,
        doc: &Value,
    ) -> Result<String, ExportError> {
        let fail = |why: &str| ExportError(format!("$ref \"{reference}\" in {rel}: {why}"));
        let (path, fragment) = reference.split_once('#').unwrap_or((reference, ""));
        let target = if path.is_empty() {
            rel.to_string()
        } else {
            self.resolve_file(rel, doc, path)
                .ok_or_else(|| fail("no such file under the schema directory"))?
        };
        let name = self.name_of(&target)?;
        let decoded = percent_encoding::percent_decode_str(fragment)
            .decode_utf8()
            .map_err(|_| fail("the fragment is not UTF-8"))?;
        let pointer = if decoded.is_empty() || decoded.starts_with('/') {
            fragment.to_string()
        } else {
            let document = self
                .docs
                .files
                .get(&target)
                .ok_or_else(|| fail("no such file"))?;
            let found = find_anchor(document, &decoded, String::new())
                .ok_or_else(|| fail("no such $anchor"))?;
            percent_encoding::utf8_percent_encode(&found, FRAGMENT).to_string()
        };
        Ok(format!("#/components/schemas/{name}{pointer}"))
    }

    /// The file a reference's path part names, resolved as the gateway does: against the
    /// referring file's top-level `$id` if it has one, else its own path; then among the files,
    /// or by the `$id`s they declare.
    fn resolve_file(&self, rel: &str, doc: &Value, path: &str) -> Option<String> {
        let own = file_uri(rel);
        let base = top_level_id(doc, rel).unwrap_or(own);
        let base = jsonschema::uri::from_str(&base).ok()?;
        let resolved = jsonschema::uri::resolve_against(&base.borrow(), path).ok()?;
        let resolved = resolved.as_str();
        let resolved = resolved.split('#').next().unwrap_or(resolved);
        if let Some(local) = resolved.strip_prefix(FILE_BASE) {
            let local = percent_encoding::percent_decode_str(local)
                .decode_utf8()
                .ok()?
                .into_owned();
            if self.docs.files.contains_key(&local) {
                return Some(local);
            }
        }
        self.docs.ids.get(resolved).cloned()
    }

    /// The `title` of a schema's file, for summaries.
    fn title(&self, schema: &CompiledSchema) -> Option<String> {
        let rel: Vec<String> = schema
            .source()
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        self.docs
            .files
            .get(&rel.join("/"))?
            .get("title")?
            .as_str()
            .map(str::to_string)
    }

    /// The top-level properties of component `name` (directly, through `$ref` and `allOf`;
    /// `anyOf`/`oneOf` members add optional ones), in name order.
    fn properties(&self, name: &str) -> Vec<Property> {
        let mut found: BTreeMap<String, (Value, bool)> = BTreeMap::new();
        if let Some(schema) = self.schemas.get(name) {
            self.collect_properties(schema, true, 0, &mut found);
        }
        found
            .into_iter()
            .map(|(name, (schema, required))| Property {
                name,
                schema,
                required,
            })
            .collect()
    }

    fn collect_properties(
        &self,
        schema: &Value,
        binding: bool,
        depth: usize,
        found: &mut BTreeMap<String, (Value, bool)>,
    ) {
        let Some(object) = schema.as_object() else {
            return;
        };
        if depth > MAX_PROPERTY_DEPTH {
            return;
        }
        if let Some(Value::Object(properties)) = object.get("properties") {
            for (name, subschema) in properties {
                found
                    .entry(name.clone())
                    .or_insert_with(|| (subschema.clone(), false));
            }
        }
        if binding {
            if let Some(Value::Array(required)) = object.get("required") {
                for name in required.iter().filter_map(Value::as_str) {
                    let entry = found
                        .entry(name.to_string())
                        .or_insert_with(|| (json!({}), false));
                    entry.1 = true;
                }
            }
        }
        if let Some(Value::String(reference)) = object.get("$ref") {
            if let Some(target) = self.lookup(reference) {
                self.collect_properties(target, binding, depth + 1, found);
            }
        }
        if let Some(Value::Array(members)) = object.get("allOf") {
            for member in members {
                self.collect_properties(member, binding, depth + 1, found);
            }
        }
        for combinator in ["anyOf", "oneOf"] {
            if let Some(Value::Array(members)) = object.get(combinator) {
                for member in members {
                    self.collect_properties(member, false, depth + 1, found);
                }
            }
        }
    }

    /// A parameter as the gateway reads it from the wire, with its shape. A property whose
    /// schema names no type at all is read as the string sent (and a repeated key is a 422),
    /// so its parameter schema says `string`: the document then promises what the gateway
    /// accepts rather than what the bare JSON Schema would.
    fn wire(&self, mut property: Property) -> (Property, Shape) {
        let shape = self.shape(&property.schema, 0);
        if shape.types.is_empty() {
            match &mut property.schema {
                Value::Object(map) => {
                    map.insert("type".into(), json!("string"));
                }
                Value::Bool(true) => property.schema = json!({ "type": "string" }),
                _ => {}
            }
        }
        (property, shape)
    }

    /// The types `schema` allows, following `type`, `const`/`enum` values without `type`,
    /// `$ref`, `allOf`/`anyOf`/`oneOf` (the union), like the gateway's coercion plan.
    fn shape(&self, schema: &Value, depth: usize) -> Shape {
        fn named(text: &str) -> Option<&'static str> {
            [
                "null", "boolean", "integer", "number", "string", "array", "object",
            ]
            .into_iter()
            .find(|t| *t == text)
        }
        fn of_value(value: &Value) -> &'static str {
            match value {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            }
        }
        let mut shape = Shape::default();
        let Some(object) = schema.as_object() else {
            return shape;
        };
        if depth > MAX_PROPERTY_DEPTH {
            return shape;
        }
        match object.get("type") {
            Some(Value::String(name)) => shape.types.extend(named(name)),
            Some(Value::Array(names)) => {
                shape
                    .types
                    .extend(names.iter().filter_map(Value::as_str).filter_map(named));
            }
            _ => {
                if let Some(value) = object.get("const") {
                    shape.types.insert(of_value(value));
                }
                if let Some(Value::Array(values)) = object.get("enum") {
                    shape.types.extend(values.iter().map(of_value));
                }
            }
        }
        if shape.types.contains("array") {
            match object.get("items") {
                Some(Value::Array(tuple)) => {
                    for item in tuple {
                        shape.items.extend(self.shape(item, depth + 1).types);
                    }
                }
                Some(items) => shape.items.extend(self.shape(items, depth + 1).types),
                None => {}
            }
        }
        let mut merge = |other: Shape| {
            shape.types.extend(other.types);
            shape.items.extend(other.items);
        };
        if let Some(Value::String(reference)) = object.get("$ref") {
            if let Some(target) = self.lookup(reference) {
                merge(self.shape(target, depth + 1));
            }
        }
        for combinator in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(members)) = object.get(combinator) {
                for member in members {
                    merge(self.shape(member, depth + 1));
                }
            }
        }
        shape
    }

    /// What a rewritten `#/components/schemas/...` reference points to.
    fn lookup(&self, reference: &str) -> Option<&Value> {
        let rest = reference.strip_prefix("#/components/schemas/")?;
        let (name, pointer) = rest.split_once('/').map_or((rest, ""), |(n, p)| (n, p));
        let schema = self.schemas.get(name)?;
        if pointer.is_empty() {
            return Some(schema);
        }
        let pointer = percent_encoding::percent_decode_str(pointer)
            .decode_utf8()
            .ok()?;
        schema.pointer(&format!("/{pointer}"))
    }

    /// The schema of the gateway's error body for `status` in `style`, as a component name.
    fn error_schema(&mut self, status: StatusCode, style: ErrorStyle) -> String {
        let name = match style {
            ErrorStyle::Nest => format!("error-{}", status.as_u16()),
            ErrorStyle::Problem => format!("problem-{}", status.as_u16()),
        };
        self.schemas
            .entry(name.clone())
            .or_insert_with(|| error_body_schema(status, style));
        name
    }

    fn finish(mut self) -> Result<Value, ExportError> {
        self.drain()?;
        // 404 and 405 answer requests that match no operation; they are listed here so the
        // document names every answer the gateway itself writes.
        let style = ErrorStyle::Nest;
        let mut responses = Map::new();
        for status in [StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED] {
            let name = self.error_schema(status, style);
            let mut headers = vec!["X-Request-Id"];
            if status == StatusCode::METHOD_NOT_ALLOWED {
                headers.push("Allow");
            }
            let headers: Map<String, Value> = headers
                .into_iter()
                .map(|h| {
                    self.use_header(h);
                    (
                        h.to_string(),
                        json!({ "$ref": format!("#/components/headers/{h}") }),
                    )
                })
                .collect();
            responses.insert(
                match status.as_u16() {
                    404 => "NotFound".to_string(),
                    _ => "MethodNotAllowed".to_string(),
                },
                json!({
                    "description": error_description(status),
                    "headers": headers,
                    "content": { "application/json": { "schema": schema_ref(&name) } },
                }),
            );
        }
        let headers: Map<String, Value> = self
            .headers
            .iter()
            .map(|name| (name.clone(), header_definition(name)))
            .collect();
        let mut components = Map::new();
        components.insert(
            "schemas".into(),
            Value::Object(self.schemas.into_iter().collect()),
        );
        components.insert("responses".into(), Value::Object(responses));
        components.insert("headers".into(), Value::Object(headers));
        if !self.security_schemes.is_empty() {
            components.insert(
                "securitySchemes".into(),
                Value::Object(self.security_schemes.into_iter().collect()),
            );
        }
        Ok(Value::Object(components))
    }
}

/// The private base the export resolves relative references against (as the gateway's own
/// `schemagate:` URIs, rooted at the schema directory).
const FILE_BASE: &str = "schemagate:///";

/// Characters a JSON pointer keeps in a URI fragment.
const FRAGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'[')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

fn file_uri(rel: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let segments: Vec<String> = rel
        .split('/')
        .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
        .collect();
    format!("{FILE_BASE}{}", segments.join("/"))
}

/// The absolute form of a file's top-level `$id`, resolved against its own URI.
fn top_level_id(value: &Value, rel: &str) -> Option<String> {
    let id = value
        .get("$id")
        .or_else(|| value.get("id"))
        .and_then(Value::as_str)?;
    let base = jsonschema::uri::from_str(&file_uri(rel)).ok()?;
    let resolved = jsonschema::uri::resolve_against(&base.borrow(), id).ok()?;
    let text = resolved.as_str();
    Some(text.split('#').next().unwrap_or(text).to_string())
}

/// The JSON pointer of the subschema declaring `$anchor` (or `$dynamicAnchor`) `name`.
fn find_anchor(value: &Value, name: &str, at: String) -> Option<String> {
    match value {
        Value::Object(map) => {
            let declares = |keyword| map.get(keyword).and_then(Value::as_str) == Some(name);
            if declares("$anchor") || declares("$dynamicAnchor") {
                return Some(at);
            }
            map.iter().find_map(|(key, member)| {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                find_anchor(member, name, format!("{at}/{escaped}"))
            })
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| find_anchor(item, name, format!("{at}/{i}"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
