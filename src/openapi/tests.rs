use super::*;

use http::HeaderValue;

use crate::error::GatewayError;
use crate::schema::{Location, Violation};

const CONFIG: &str = r#"
listeners:
  - address: 0.0.0.0:8080
schema_dir: schemas
api_keys:
  - name: k
    sha256: 0000000000000000000000000000000000000000000000000000000000000000
    tenants: ['*']
upstreams:
  items:
    url: mock
    mock: { status: 201, body_file: mock/item.json }
  backend:
    url: http://127.0.0.1:9
routes:
  - name: items.get
    method: GET
    path: /v1/items/{id}
    upstream: items
    auth: bearer
    schemas:
      path: item.path.json
      query: item.query.json
      headers: item.headers.json
      response: item.response.json
    rate_limit: { quota: 10/s }
  - name: items.put
    method: PUT
    path: /v1/items/{id}
    upstream: items
    auth: api_key
    errors: problem
    schemas:
      body: item.body.json
    tenant: { from: path, name: id }
  - name: files.get
    method: GET
    path: /files/{*rest}
    upstream: backend
    auth: credentials
  - name: purge
    method: PURGE
    path: /open
    upstream: backend
  - name: open
    method: POST
    path: /open
    upstream: backend
    validation: report
    schemas:
      body: item.body.json
      headers: open.headers.json
"#;

fn files() -> Vec<(&'static str, Value)> {
    vec![
        (
            "schemas/common.json",
            json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$defs": {
                    "id": { "type": "integer", "minimum": 1 },
                    "tag": { "$anchor": "tag", "type": "string", "maxLength": 8 },
                },
            }),
        ),
        (
            "schemas/shared.json",
            json!({
                "$id": "https://example.test/shared.json",
                "$defs": { "name": { "type": "string", "minLength": 1 } },
            }),
        ),
        (
            "schemas/item.path.json",
            json!({
                "type": "object",
                "required": ["id"],
                "properties": { "id": { "$ref": "common.json#/$defs/id" } },
            }),
        ),
        (
            "schemas/item.query.json",
            json!({
                "type": "object",
                "required": ["verbose"],
                "properties": {
                    "verbose": { "type": "boolean", "description": "Say more." },
                    "filter": { "type": "object" },
                    "sort": { "type": ["array", "null"], "items": { "type": "object" } },
                    "status": { "type": "array", "items": { "enum": ["a", "b"] } },
                    "perPage": { "type": ["integer", "null"], "minimum": 1 },
                    "anything": { "description": "No type." },
                    "tag": { "$ref": "common.json#tag" },
                    "looks": { "const": { "$ref": "not-a-reference.json" } },
                },
                "allOf": [{ "properties": { "extra": { "type": "string" } }, "required": ["extra"] }],
                "anyOf": [{ "properties": { "maybe": { "type": "string" } }, "required": ["maybe"] }],
            }),
        ),
        (
            "schemas/item.headers.json",
            json!({
                "type": "object",
                "required": ["Authorization", "X-Tenant"],
                "properties": {
                    "Authorization": { "type": "string" },
                    "Content-Type": { "type": "string" },
                    "X-Tenant": { "type": "number" },
                    "X-Filter": { "type": "object" },
                },
            }),
        ),
        (
            "schemas/open.headers.json",
            json!({
                "type": "object",
                "required": ["Authorization"],
                "properties": { "Authorization": { "type": "string" } },
            }),
        ),
        (
            "schemas/item.body.json",
            json!({
                "$id": "https://example.test/item.body.json",
                "type": "object",
                "properties": {
                    "name": { "$ref": "shared.json#/$defs/name" },
                    "self": { "$ref": "#" },
                },
            }),
        ),
        (
            "schemas/item.response.json",
            json!({
                "type": "object",
                "properties": { "id": { "$ref": "common.json#/$defs/id" } },
            }),
        ),
        ("mock/item.json", json!({ "id": 7 })),
    ]
}

struct Exported {
    _dir: tempfile::TempDir,
    doc: Value,
}

fn export() -> Exported {
    let dir = tempfile::tempdir().unwrap();
    for (path, value) in files() {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
    }
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let snapshot = Snapshot::load(&config).unwrap();
    let scanned = SchemaDir::scan(snapshot.schema_dir.as_ref().unwrap()).unwrap();
    let doc = document(&snapshot, &SchemaDocs::from_dir(&scanned)).unwrap();
    Exported { _dir: dir, doc }
}

/// Every `$ref` string in the document, with where it is.
fn refs(value: &Value, at: String, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, member) in map {
                match (key.as_str(), member) {
                    ("$ref", Value::String(r)) => out.push((at.clone(), r.clone())),
                    // Values, not schemas: whatever they hold is not a reference.
                    ("const" | "enum" | "examples" | "example", _) => {}
                    _ => refs(member, format!("{at}/{key}"), out),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                refs(item, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn parameter<'a>(op: &'a Value, location: &str, name: &str) -> Option<&'a Value> {
    op["parameters"]
        .as_array()?
        .iter()
        .find(|p| p["in"] == location && p["name"] == name)
}

fn statuses(op: &Value) -> Vec<String> {
    op["responses"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[test]
fn every_reference_points_inside_the_document() {
    let Exported { doc, .. } = export();
    let mut found = Vec::new();
    refs(&doc, String::new(), &mut found);
    assert!(found.len() > 10, "{found:?}");
    for (at, reference) in found {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: {reference} leaves the document"));
        let pointer = percent_encoding::percent_decode_str(pointer)
            .decode_utf8()
            .unwrap();
        assert!(
            doc.pointer(&pointer).is_some(),
            "{at}: {reference} points to nothing"
        );
    }
}

#[test]
fn schema_files_become_components_without_ids() {
    let Exported { doc, .. } = export();
    let schemas = &doc["components"]["schemas"];
    for name in [
        "common",
        "shared",
        "item.path",
        "item.query",
        "item.headers",
        "item.body",
        "item.response",
    ] {
        let schema = &schemas[name];
        assert!(schema.is_object(), "{name} missing: {schemas}");
        assert!(schema.get("$schema").is_none() && schema.get("$id").is_none());
    }
    // References by relative path, by `$id`, by anchor and to the file itself.
    assert_eq!(
        schemas["item.path"]["properties"]["id"]["$ref"],
        "#/components/schemas/common/$defs/id"
    );
    assert_eq!(
        schemas["item.body"]["properties"]["name"]["$ref"],
        "#/components/schemas/shared/$defs/name"
    );
    assert_eq!(
        schemas["item.body"]["properties"]["self"]["$ref"],
        "#/components/schemas/item.body"
    );
    assert_eq!(
        schemas["item.query"]["properties"]["tag"]["$ref"],
        "#/components/schemas/common/$defs/tag"
    );
    // A value that only looks like a reference is left as it is.
    assert_eq!(
        schemas["item.query"]["properties"]["looks"]["const"]["$ref"],
        "not-a-reference.json"
    );
    // Files no route reaches are not copied.
    assert!(schemas.get("open.headers").is_some());
    assert_eq!(
        schemas
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !k.starts_with("error-") && !k.starts_with("problem-"))
            .count(),
        8
    );
}

#[test]
fn paths_and_operations_follow_the_routes() {
    let Exported { doc, .. } = export();
    let paths = doc["paths"].as_object().unwrap();
    let mut keys: Vec<&String> = paths.keys().collect();
    keys.sort();
    assert_eq!(keys, ["/files/{rest}", "/open", "/v1/items/{id}"]);
    assert_eq!(paths["/v1/items/{id}"]["get"]["operationId"], "items.get");
    assert_eq!(paths["/v1/items/{id}"]["put"]["operationId"], "items.put");
    assert_eq!(paths["/v1/items/{id}"]["get"]["tags"], json!(["items"]));
    assert_eq!(doc["openapi"], "3.1.0");
    // A method OpenAPI 3.1 has no field for is named, not written as an invalid key.
    assert_eq!(paths["/open"].as_object().unwrap().len(), 1);
    let description = doc["info"]["description"].as_str().unwrap();
    assert!(description.contains("PURGE /open (purge)"), "{description}");
    assert_eq!(doc["servers"][0]["url"], "http://localhost:8080");
    // The catch-all is a plain, required path parameter.
    let rest = parameter(&paths["/files/{rest}"]["get"], "path", "rest").unwrap();
    assert_eq!(rest["required"], true);
    assert_eq!(rest["schema"], json!({ "type": "string" }));
}

#[test]
fn parameters_come_from_the_schemas_properties() {
    let Exported { doc, .. } = export();
    let op = &doc["paths"]["/v1/items/{id}"]["get"];
    let id = parameter(op, "path", "id").unwrap();
    assert_eq!(id["required"], true);
    assert_eq!(id["schema"]["$ref"], "#/components/schemas/common/$defs/id");

    let verbose = parameter(op, "query", "verbose").unwrap();
    assert_eq!(verbose["required"], true);
    assert_eq!(verbose["description"], "Say more.");
    assert_eq!(verbose["schema"]["type"], "boolean");
    // Required through `allOf`; optional through `anyOf`.
    assert_eq!(parameter(op, "query", "extra").unwrap()["required"], true);
    assert_eq!(parameter(op, "query", "maybe").unwrap()["required"], false);
    // Read as JSON text by the gateway: content, not schema.
    for name in ["filter", "sort"] {
        let p = parameter(op, "query", name).unwrap();
        assert!(p.get("schema").is_none(), "{p}");
        assert!(
            p["content"]["application/json"]["schema"].is_object(),
            "{p}"
        );
    }
    let status = parameter(op, "query", "status").unwrap();
    assert_eq!(
        (&status["style"], &status["explode"]),
        (&json!("form"), &json!(true))
    );
    // Where null is allowed, so are its wire spellings.
    assert_eq!(
        parameter(op, "query", "perPage").unwrap()["schema"]["anyOf"][1]["enum"],
        json!(["", "null"])
    );
    assert!(parameter(op, "query", "verbose").unwrap()["schema"]
        .get("anyOf")
        .is_none());
    // No type at all: the gateway keeps the string sent (and refuses a repeat).
    assert_eq!(
        parameter(op, "query", "anything").unwrap()["schema"]["type"],
        "string"
    );
    // A `$ref` whose target has a type keeps it.
    assert!(parameter(op, "query", "tag").unwrap()["schema"]
        .get("type")
        .is_none());

    assert_eq!(
        parameter(op, "header", "X-Tenant").unwrap()["required"],
        true
    );
    assert!(parameter(op, "header", "X-Filter").unwrap()["content"].is_object());
    // Authorization is the security scheme's; Content-Type the body's.
    assert!(parameter(op, "header", "Authorization").is_none());
    assert!(parameter(op, "header", "Content-Type").is_none());
}

#[test]
fn security_follows_the_auth_mode() {
    let Exported { doc, .. } = export();
    let paths = &doc["paths"];
    assert_eq!(
        paths["/v1/items/{id}"]["get"]["security"],
        json!([{ "bearer": [] }])
    );
    assert_eq!(
        paths["/v1/items/{id}"]["put"]["security"],
        json!([{ "apiKey": [] }])
    );
    assert_eq!(
        paths["/files/{rest}"]["get"]["security"],
        json!([{ "authorization": [] }, { "cookie": [] }])
    );
    // `auth: none`, but the header schema requires Authorization.
    assert_eq!(
        paths["/open"]["post"]["security"],
        json!([{ "authorization": [] }])
    );
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["apiKey"]["scheme"], "bearer");
    assert_eq!(schemes["cookie"]["name"], "Cookie");
}

#[test]
fn responses_are_those_the_route_can_give() {
    let Exported { doc, .. } = export();
    let paths = &doc["paths"];
    let get = &paths["/v1/items/{id}"]["get"];
    // 400 (ambiguous HTTP), 414, 431 and 503 can answer on every route.
    assert_eq!(
        statuses(get),
        ["201", "400", "401", "404", "414", "422", "429", "431", "503"]
    );
    assert!(get["responses"]["503"]["headers"]["Retry-After"].is_object());
    let success = &get["responses"]["201"];
    assert_eq!(
        success["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/item.response"
    );
    assert_eq!(
        success["content"]["application/json"]["examples"]["mock"]["value"],
        json!({ "id": 7 })
    );
    // The limit ran before the upstream answered and before the schemas.
    for status in ["201", "422", "429"] {
        let headers = get["responses"][status]["headers"].as_object().unwrap();
        assert!(headers.contains_key("RateLimit-Remaining"), "{status}");
        assert!(headers.contains_key("X-Request-Id"), "{status}");
    }
    let unauthorized = get["responses"]["401"]["headers"].as_object().unwrap();
    assert!(!unauthorized.contains_key("RateLimit-Remaining"));
    assert!(get["responses"]["429"]["headers"]["Retry-After"].is_object());
    assert_eq!(
        get["responses"]["422"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/error-422"
    );

    let put = &paths["/v1/items/{id}"]["put"];
    assert_eq!(
        statuses(put),
        ["201", "400", "401", "403", "404", "408", "413", "414", "415", "422", "431", "503"]
    );
    assert_eq!(
        put["responses"]["422"]["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/problem-422"
    );

    // A real upstream: any 2XX, and 502/504 when it fails.
    let files = &paths["/files/{rest}"]["get"];
    assert_eq!(
        statuses(files),
        ["2XX", "400", "401", "404", "414", "431", "502", "503", "504"]
    );
    // Report-only: nothing is rejected for its content, but 413 still holds.
    let open = &paths["/open"]["post"];
    assert_eq!(
        statuses(open),
        ["2XX", "400", "408", "413", "414", "431", "502", "503", "504"]
    );

    let responses = &doc["components"]["responses"];
    assert!(responses["MethodNotAllowed"]["headers"]["Allow"].is_object());
    assert!(responses["NotFound"].is_object());
}

fn all_errors() -> Vec<GatewayError> {
    let violation = |location, message: &str| Violation {
        location,
        pointer: "/a".into(),
        field: "x.a".into(),
        keyword: "type",
        message: message.into(),
    };
    vec![
        GatewayError::BadRequest {
            message: "bad".into(),
        },
        GatewayError::Unauthorized { message: "who" },
        GatewayError::Forbidden { message: "no" },
        GatewayError::NotFound,
        GatewayError::MethodNotAllowed {
            allow: HeaderValue::from_static("GET"),
        },
        GatewayError::RequestTimeout,
        GatewayError::PayloadTooLarge { limit: 10 },
        GatewayError::UnsupportedMediaType { accepted: None },
        GatewayError::UnsupportedMediaType {
            accepted: Some("Content-Type must be text/plain".into()),
        },
        GatewayError::Invalid {
            violations: vec![
                violation(Location::Body, "body.a must be integer"),
                violation(Location::Query, "query.a must be integer"),
            ],
            omitted: 0,
            cap: 20,
        },
        GatewayError::Invalid {
            violations: vec![violation(Location::Header, "header.a must be integer")],
            omitted: 3,
            cap: 1,
        },
        GatewayError::TooManyRequests {
            retry_after_secs: 2,
        },
        GatewayError::UpstreamUnavailable {
            reason: "refused".into(),
        },
        GatewayError::UpstreamTimeout { phase: "connect" },
    ]
}

#[test]
fn error_schemas_match_what_the_gateway_sends() {
    for style in [ErrorStyle::Nest, ErrorStyle::Problem] {
        for error in all_errors() {
            let status = error.status();
            let (body, _) = error.body(style);
            let body: Value = serde_json::from_slice(&body).unwrap();
            let validator = jsonschema::validator_for(&error_body_schema(status, style)).unwrap();
            let problems: Vec<String> = validator
                .iter_errors(&body)
                .map(|e| e.to_string())
                .collect();
            assert!(
                problems.is_empty(),
                "{status} {style:?}: {body}: {problems:?}"
            );
            // And not against another status's schema: the schemas tell the answers apart.
            let other = if status == StatusCode::UNPROCESSABLE_ENTITY {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            let validator = jsonschema::validator_for(&error_body_schema(other, style)).unwrap();
            assert!(
                !validator.is_valid(&body),
                "{status} {style:?} passes as {other}"
            );
        }
    }
}

#[test]
fn the_nest_envelope_has_exactly_three_fields() {
    let schema = error_body_schema(StatusCode::NOT_FOUND, ErrorStyle::Nest);
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(
        &json!({ "statusCode": 404, "message": "no route matches this path", "error": "Not Found" })
    ));
    assert!(!validator
        .is_valid(&json!({ "statusCode": 404, "message": "x", "error": "Not Found", "extra": 1 })));
    assert!(
        !validator.is_valid(&json!({ "statusCode": 404, "message": ["x"], "error": "Not Found" }))
    );
}

#[test]
fn render_puts_the_top_level_keys_in_order() {
    let Exported { doc, .. } = export();
    let text = render(&doc);
    let at = |key: &str| text.find(&format!("\n  \"{key}\":")).unwrap();
    assert!(
        text.starts_with("{\n  \"openapi\": \"3.1.0\""),
        "{}",
        &text[..40]
    );
    assert!(at("info") < at("servers"));
    assert!(at("servers") < at("paths"));
    assert!(at("paths") < at("components"));
    let reparsed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reparsed, doc);
}

#[test]
fn an_unknown_schema_file_is_an_error_not_a_dangling_reference() {
    let dir = tempfile::tempdir().unwrap();
    for (path, value) in files() {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
    }
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let snapshot = Snapshot::load(&config).unwrap();
    // The files the snapshot compiled, less one.
    let scanned = SchemaDir::scan(snapshot.schema_dir.as_ref().unwrap()).unwrap();
    let docs = SchemaDocs::new(
        scanned
            .documents()
            .into_iter()
            .filter(|(rel, _)| rel != "common.json"),
    );
    let error = document(&snapshot, &docs).unwrap_err().to_string();
    assert!(error.contains("common.json"), "{error}");
}
