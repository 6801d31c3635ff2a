//! OpenAPI documents as the source of routes (`openapi:`): the shipped `config/openapi/`
//! against the hand-written `config/gateway.yaml` through the binary (the differential
//! test), document features over real sockets, config errors naming the JSON pointer, hot
//! reload of a document, and GitHub's REST description from npm.

use std::collections::BTreeSet;
use std::path::Path;

use schemagate::snapshot::Snapshot;

use crate::support::*;
use crate::validation::CASES;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Header fields of a request, as `request` takes them.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// Status, `error` and the set of messages of an answer: what the differential compares.
fn outcome(got: &Got) -> (u16, String, BTreeSet<String>) {
    let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap_or_default();
    let messages = match &body["message"] {
        serde_json::Value::Array(items) => items
            .iter()
            .map(|m| m.as_str().unwrap_or_default().to_string())
            .collect(),
        serde_json::Value::String(one) => BTreeSet::from([one.clone()]),
        _ => BTreeSet::new(),
    };
    let error = body["error"].as_str().unwrap_or_default().to_string();
    (got.status, error, messages)
}

#[tokio::test]
async fn openapi_config_answers_every_request_as_the_hand_written_one() {
    let upstream = Upstream::start(Answer::default()).await;
    let url = upstream.url();
    let envs: Vec<(&str, &str)> = VENDOR_VARS.iter().map(|v| (*v, url.as_str())).collect();
    let root = Path::new(ROOT);
    let hand_written = Served::start(root, "config/gateway.yaml", &envs);
    let from_documents = Served::start(root, "config/openapi/gateway.yaml", &envs);
    let flextell: &[(&str, &str)] = &[
        ("authorization", "Bearer t"),
        ("x-tenant", "7"),
        ("content-type", "application/json"),
    ];
    // The bodies of the bad-body catalogue and the number rules, on top of the table.
    let extra: Vec<(&str, &str, Headers<'_>, String)> = vec![
        ("POST", "/v1/conversations", flextell, String::new()),
        (
            "POST",
            "/v1/conversations",
            flextell,
            r#"{"channel_id": 2, "address": "a", "channel_id": 3}"#.into(),
        ),
        (
            "POST",
            "/v1/conversations",
            flextell,
            format!(
                "{{\"channel_id\":1,\"address\":\"a\",\"x\":{}{}}}",
                "[".repeat(64),
                "]".repeat(64)
            ),
        ),
        (
            "POST",
            "/v1/conversations",
            flextell,
            r#"{"channel_id":1.00000000000000001,"address":"a"}"#.into(),
        ),
        (
            "POST",
            "/v1/conversations",
            flextell,
            r#"{"channel_id":2,"address":"a","free":0.1000000000000000055511151231257827}"#.into(),
        ),
        (
            "POST",
            "/v1/conversations",
            flextell,
            format!(
                r#"{{"channel_id":3,"address":"{}","last_name":"{}"}}"#,
                "a".repeat(256),
                "é".repeat(256)
            ),
        ),
        (
            "POST",
            "/v1/conversations",
            flextell,
            r#"{"channel_id":2,"address":"a","first_name":[]}"#.into(),
        ),
        (
            "GET",
            "/v1/conversations?perPage=1.00000000000000001",
            &[("authorization", "Bearer t")],
            String::new(),
        ),
        (
            "GET",
            "/v1/conversations?sort=%5B1%5D&tags=a&tags=b",
            &[("authorization", "Bearer t")],
            String::new(),
        ),
        (
            "DELETE",
            "/v1/conversations",
            &[("authorization", "Bearer t")],
            String::new(),
        ),
    ];
    let requests = CASES
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.method,
                c.target,
                c.headers,
                c.body.to_string(),
            )
        })
        .chain(
            extra
                .into_iter()
                .enumerate()
                .map(|(i, (method, target, headers, body))| {
                    (format!("extra #{i}"), method, target, headers, body)
                }),
        );
    let mut differences = Vec::new();
    let mut compared = 0;
    for (name, method, target, headers, body) in requests {
        let send_to = |addr| send(addr, request(method, target, headers, body.as_bytes()));
        let expected = outcome(&send_to(hand_written.addr).await);
        let got = outcome(&send_to(from_documents.addr).await);
        compared += 1;
        if expected != got {
            differences.push(format!(
                "{name}: hand-written {expected:?}\n    openapi {got:?}"
            ));
        }
    }
    assert!(compared > 60, "only {compared} requests compared");
    assert!(
        differences.is_empty(),
        "{} of {compared} request(s) answered differently:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

#[test]
fn check_lists_the_operations_and_validate_takes_them() {
    let bin = env!("CARGO_BIN_EXE_schemagate");
    let out = std::process::Command::new(bin)
        .args(["check", "--config", "config/openapi/gateway.yaml"])
        .current_dir(ROOT)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "gestiono.create_conversation_list",
        "leadconnector.create_conversation",
        "leadway.search_conversations",
        "flextell.create_conversation",
        "chatbotx.list_conversations",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    let out = std::process::Command::new(bin)
        .args([
            "validate",
            "--config",
            "config/openapi/gateway.yaml",
            "--route",
            "chatbotx.list_conversations",
            "--query",
            "perPage=0",
            "--header",
            "Authorization: Bearer t",
        ])
        .current_dir(ROOT)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("422"), "{text}");
    assert!(text.contains("query.perPage must be >= 1"), "{text}");
}

/// A 3.0 document exercising parameter styles, media types, translation and cycles.
const FEATURES: &str = r##"
openapi: 3.0.3
info: { title: features, version: "1" }
paths:
  /items/{ids}:
    parameters:
      - { name: ids, in: path, required: true, schema: { type: array, items: { type: integer } } }
    put:
      operationId: putItems
      parameters:
        - { name: tags, in: query, style: form, explode: false, schema: { type: array, items: { type: string, enum: [a, b] } } }
        - { name: pipes, in: query, style: pipeDelimited, explode: false, schema: { type: array, items: { type: integer } } }
        - { name: spaces, in: query, style: spaceDelimited, explode: false, schema: { type: array, items: { type: integer } } }
        - { name: flag, in: query, allowEmptyValue: true, schema: { type: boolean } }
        - { name: X-Ids, in: header, schema: { type: array, items: { type: integer }, maxItems: 2 } }
        - { name: Content-Type, in: header, required: true, schema: { type: string, enum: [never] } }
      requestBody:
        required: true
        content:
          application/json: { schema: { $ref: "#/components/schemas/Item" } }
          application/*+json: { schema: { $ref: "#/components/schemas/Item" } }
          text/plain: { schema: { type: string } }
      responses: { "200": { description: ok } }
  /items/{name}:
    delete:
      operationId: deleteItem
      parameters:
        - { name: name, in: path, required: true, schema: { type: string, minLength: 3 } }
      responses: { "204": { description: gone } }
  /compare/{base}...{head}:
    get:
      operationId: compare
      parameters:
        - { name: base, in: path, required: true, schema: { type: string, enum: [main] } }
        - { name: head, in: path, required: true, schema: { type: string } }
      responses: { "200": { description: ok } }
  /nodes:
    post:
      operationId: postNode
      requestBody:
        content:
          application/json: { schema: { $ref: "#/components/schemas/Node" } }
          application/*: { schema: { $ref: "#/components/schemas/Node" } }
      responses: { "200": { description: ok } }
    get:
      responses: { "200": { description: ok } }
components:
  schemas:
    Item:
      type: object
      required: [id, name, price]
      properties:
        id: { type: integer, readOnly: true }
        name: { type: string, nullable: true, x-internal: true }
        price: { type: number, minimum: 0, exclusiveMinimum: true }
        nullable: { type: boolean }
    Node:
      type: object
      required: [value]
      properties:
        value: { type: integer }
        next: { $ref: "#/components/schemas/Node" }
"##;

fn features_config(upstream: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  api: {{ url: '{upstream}' }}\nopenapi:\n  - file: features.yaml\n    upstream: api\n    path_prefix: /v2\n"
    )
}

#[tokio::test]
async fn document_features_validate_as_documented() {
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::start(
        &features_config(&upstream.url()),
        &[("features.yaml", FEATURES)],
    )
    .await;
    let json = ("content-type", "application/json");
    let put = |target: &str, headers: &[(&str, &str)], body: &str| {
        send(gw.addr, request("PUT", target, headers, body.as_bytes()))
    };
    let valid = r#"{"name":null,"price":1}"#;
    // Path simple, form without explode, pipes, spaces, an empty allowed value; readOnly
    // `id` not required; `nullable` (the property) kept; 3.0 nullable read.
    let got = put(
        "/v2/items/1,2?tags=a,b&pipes=1|2&spaces=3%204&flag=",
        &[json, ("x-ids", "1,2")],
        valid,
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let cases: &[(&str, Headers<'_>, &str, &str)] = &[
        (
            "/v2/items/1,x",
            &[json],
            valid,
            "path.ids[1] must be of type integer",
        ),
        (
            "/v2/items/1?tags=a,c",
            &[json],
            valid,
            "query.tags[1] must be one of: \"a\", \"b\"",
        ),
        (
            "/v2/items/1?pipes=1|z",
            &[json],
            valid,
            "query.pipes[1] must be of type integer",
        ),
        (
            "/v2/items/1?spaces=1+z",
            &[json],
            valid,
            "query.spaces[1] must be of type integer",
        ),
        (
            "/v2/items/1?flag=maybe",
            &[json],
            valid,
            "query.flag must be of type boolean or null",
        ),
        (
            "/v2/items/1",
            &[json, ("x-ids", "1,2,3")],
            valid,
            "header.X-Ids must have at most 2 items",
        ),
        (
            "/v2/items/1",
            &[json],
            r#"{"name":5,"price":1}"#,
            "body.name must be of type string or null",
        ),
        (
            "/v2/items/1",
            &[json],
            r#"{"name":"n","price":0}"#,
            "body.price must be > 0",
        ),
        (
            "/v2/items/1",
            &[json],
            r#"{"price":1}"#,
            "body.name is required",
        ),
        (
            "/v2/items/1",
            &[json],
            r#"{"name":"n","price":1,"nullable":1}"#,
            "body.nullable must be of type boolean",
        ),
        (
            "/v2/items/1",
            &[("content-type", "application/vnd.item+json")],
            r#"{"name":"n"}"#,
            "body.price is required",
        ),
    ];
    for (target, headers, body, message) in cases {
        let got = put(target, headers, body).await;
        assert_eq!(got.status, 422, "{target} {body}: {:?}", got.body);
        let messages = got.json()["message"].clone();
        assert!(
            messages.as_array().unwrap().iter().any(|m| m == message),
            "{target} {body}: {messages} lacks {message}"
        );
    }
    let post = |body: &str, headers: &[(&str, &str)]| {
        send(
            gw.addr,
            request("POST", "/v2/nodes", headers, body.as_bytes()),
        )
    };
    // A listed media type that is not JSON is checked for type only and streamed.
    let got = put("/v2/items/1", &[("content-type", "text/plain")], "not json").await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(upstream.seen().last().unwrap().body, b"not json".to_vec());
    // A wildcard takes other types too: validated only when they are JSON.
    let got = post("<a/>", &[("content-type", "application/xml")]).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let got = post(r#"{"value":"x"}"#, &[("content-type", "application/json")]).await;
    assert_eq!(got.status, 422);
    // One the operation does not list: 415, naming what it lists (not JSON only); a body
    // without Content-Type too.
    let accepts = "Content-Type must be application/*+json, application/json or text/plain";
    let got = put(
        "/v2/items/1",
        &[("content-type", "application/xml")],
        "<a/>",
    )
    .await;
    assert_envelope(&got, 415, "Unsupported Media Type");
    assert_eq!(got.json()["message"], accepts);
    let got = put("/v2/items/1", &[], "<a/>").await;
    assert_eq!(
        (got.status, got.json()["message"].clone()),
        (415, accepts.into())
    );
    // A cyclic schema validates at every depth.
    let post = |body: &str, headers: &[(&str, &str)]| {
        send(
            gw.addr,
            request("POST", "/v2/nodes", headers, body.as_bytes()),
        )
    };
    let got = post(
        r#"{"value":1,"next":{"value":2,"next":{"value":"x"}}}"#,
        &[json],
    )
    .await;
    assert_eq!(got.status, 422);
    assert_eq!(
        got.json()["message"][0],
        "body.next.next.value must be of type integer"
    );
    // A body the operation does not require may be left out.
    let got = post("", &[]).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    // Another parameter name at the same place, and two parameters in one segment.
    let got = send(gw.addr, request("DELETE", "/v2/items/ab", &[], b"")).await;
    assert_eq!(
        got.json()["message"][0],
        "path.name must be at least 3 characters long"
    );
    let got = send(gw.addr, request("GET", "/v2/compare/main...dev", &[], b"")).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let got = send(gw.addr, request("GET", "/v2/compare/dev...main", &[], b"")).await;
    assert_eq!(
        got.json()["message"][0],
        "path.base must be one of: \"main\""
    );
    let got = send(gw.addr, request("GET", "/v2/compare/main", &[], b"")).await;
    assert_eq!(got.status, 404);
    // An operation without operationId is still a route.
    let got = send(gw.addr, request("GET", "/v2/nodes", &[], b"")).await;
    assert_eq!(got.status, 200);
    assert_eq!(upstream.seen().last().unwrap().target, "/v2/nodes");
}

/// Loads `config` with `files` beside it; the errors, each as `key: message`.
fn errors_of(config: &str, files: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, config).unwrap();
    match Snapshot::load(&path) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

const BASE: &str =
    "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  api: { url: 'http://127.0.0.1:1' }\n";

fn one_op(extra: &str) -> String {
    format!(
        "openapi: 3.1.0\ninfo: {{ title: t, version: '1' }}\npaths:\n  /a:\n    get:\n      operationId: getA\n{extra}      responses: {{ '200': {{ description: ok }} }}\n"
    )
}

#[test]
fn unsupported_or_broken_documents_are_located_errors() {
    let config = format!("{BASE}openapi:\n  - file: doc.yaml\n    upstream: api\n");
    let cases: Vec<(String, &str, Vec<&str>)> = vec![
        (
            one_op("      parameters:\n        - { name: f, in: query, style: deepObject, explode: false, schema: { type: object } }\n"),
            "deepObject without explode",
            vec!["gateway.yaml:6: openapi[0]:", "#/paths/~1a/get/parameters/0/style", "getA", "`explode: false` is undefined"],
        ),
        (
            one_op("      parameters:\n        - { name: f, in: query, schema: { $ref: 'https://example.com/s.json' } }\n"),
            "remote",
            vec!["openapi[0].file", "#/paths/~1a/get/parameters/0/schema", "never fetched"],
        ),
        (
            one_op("      parameters:\n        - { name: f, in: query, schema: { $ref: '#/components/schemas/Missing' } }\n"),
            "dangling",
            vec!["openapi[0]", "points to nothing", "getA"],
        ),
        (
            one_op("      parameters:\n        - { name: s, in: cookie, schema: { type: object } }\n"),
            "object cookie",
            vec!["#/paths/~1a/get: cookies parameters", "object cookie parameter \"s\"", "every cookie it does not declare"],
        ),
        (
            one_op("      parameters:
        - { name: f, in: query, schema: { type: object, properties: { limit: { type: integer } } } }
        - { name: g, in: query, schema: { type: object, properties: { limit: { type: string } } } }
"),
            "two exploded objects with one property",
            vec!["gateway.yaml:6: openapi[0]:", "#/paths/~1a/get: query parameters", "getA", "\"f\" and \"g\"", "both have a property \"limit\""],
        ),
        (
            one_op("      parameters:
        - { name: f, in: query, schema: { type: object, additionalProperties: { type: string } } }
        - { name: g, in: query, schema: { type: object } }
"),
            "two exploded objects taking any key",
            vec!["#/paths/~1a/get: query parameters", "\"f\" and \"g\"", "do not declare"],
        ),
        (
            one_op("      parameters:
        - { name: limit, in: query, schema: { type: integer } }
        - { name: f, in: query, schema: { type: object, properties: { limit: { type: integer } } } }
"),
            "an exploded property that is also a parameter",
            vec!["#/paths/~1a/get: query parameters", "\"limit\" would be both parameter"],
        ),
        (
            one_op("      parameters:\n        - { name: f, in: query, style: matrix, schema: { type: string } }\n"),
            "a style not defined for the location",
            vec!["#/paths/~1a/get/parameters/0/style", "\"matrix\" is not defined for a query parameter"],
        ),
        (
            one_op("      parameters:\n        - { name: id, in: path, schema: { type: string } }\n"),
            "optional path parameter",
            vec!["#/paths/~1a/get/parameters/0/required"],
        ),
        (
            "swagger: '2.0'\npaths: {}\n".to_string(),
            "swagger 2",
            vec!["openapi[0].file", "not an OpenAPI 3 document"],
        ),
        (
            one_op("      requestBody: { content: { application/json: { schema: { type: wrong } } } }\n"),
            "bad schema",
            vec!["#/paths/~1a/get/requestBody", "invalid schema"],
        ),
        ("openapi: 3.1.0\npaths: [\n".to_string(), "bad YAML", vec!["openapi[0].file", "YAML"]),
    ];
    for (document, what, wanted) in cases {
        let errors = errors_of(&config, &[("doc.yaml", &document)]);
        let text = errors.join("\n");
        assert!(!errors.is_empty(), "{what}: loaded");
        for part in wanted {
            assert!(text.contains(part), "{what}: {part:?} not in:\n{text}");
        }
    }
    let missing = errors_of(&config, &[]);
    assert!(
        missing
            .join("\n")
            .contains("openapi[0].file: cannot read OpenAPI document"),
        "{missing:?}"
    );
}

#[test]
fn method_and_path_clash_names_both_routes() {
    let config = format!(
        "{BASE}routes:\n  - {{ name: hand, method: GET, path: /a, upstream: api }}\nopenapi:\n  - file: doc.yaml\n    upstream: api\n    operations:\n      nothing: {{ auth: bearer }}\n"
    );
    let errors = errors_of(&config, &[("doc.yaml", &one_op(""))]).join("\n");
    assert!(
        errors.contains(
            "GET /a is both route \"hand\" (routes[0]) and route \"doc.getA\" (openapi[0])"
        ),
        "{errors}"
    );
    assert!(
        errors.contains("`operations` names \"nothing\""),
        "{errors}"
    );
    // Two documents whose paths meet through path_prefix clash the same way.
    let config = format!(
        "{BASE}openapi:\n  - {{ file: doc.yaml, upstream: api, path_prefix: /x }}\n  - {{ file: other.yaml, upstream: api }}\n"
    );
    let other = one_op("").replace("/a:", "/x/a:");
    let errors = errors_of(
        &config,
        &[("doc.yaml", &one_op("")), ("other.yaml", &other)],
    )
    .join("\n");
    assert!(errors.contains("GET /x/a is both route \"doc.getA\" (openapi[0]) and route \"other.getA\" (openapi[1])"), "{errors}");
}

#[test]
fn relative_refs_across_files_and_operation_overrides() {
    let config = format!(
        "{BASE}openapi:\n  - file: specs/doc.yaml\n    upstream: api\n    name: shop\n    auth: credentials\n    operations:\n      getA: {{ auth: bearer, validation: report }}\n"
    );
    let document = one_op("      parameters:\n        - { name: count, in: query, schema: { $ref: 'common/types.yaml#/Count' } }\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("specs/common")).unwrap();
    std::fs::write(dir.path().join("specs/doc.yaml"), document).unwrap();
    std::fs::write(
        dir.path().join("specs/common/types.yaml"),
        "Count: { type: integer, maximum: 3 }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), config).unwrap();
    let snapshot = Snapshot::load(&dir.path().join("gateway.yaml")).unwrap();
    let route = &snapshot.routes[0];
    assert_eq!(route.name, "shop.getA");
    assert_eq!(route.auth, schemagate::auth::AuthMode::Bearer);
    assert!(route.report_only);
    let files: Vec<String> = snapshot
        .openapi_files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with("specs/common/types.yaml")),
        "{files:?}"
    );
    let query = route.schemas.query.as_ref().unwrap();
    let (value, _) = query.coerce_query(Some("count=4"));
    let found = query.violations(schemagate::schema::Location::Query, &value);
    assert_eq!(found[0].message, "query.count must be <= 3");
}

#[tokio::test]
async fn an_edited_document_is_reloaded_by_the_binary() {
    let upstream = Upstream::start(Answer::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let document = |max: u32| {
        one_op(&format!(
            "      parameters:\n        - {{ name: count, in: query, schema: {{ type: integer, maximum: {max} }} }}\n"
        ))
    };
    std::fs::create_dir_all(dir.path().join("specs")).unwrap();
    std::fs::write(dir.path().join("specs/doc.yaml"), document(3)).unwrap();
    let config = format!(
        "listeners:\n  - address: ${{SCHEMAGATE_LISTEN}}\nadmin:\n  address: ${{SCHEMAGATE_ADMIN}}\nupstreams:\n  api: {{ url: '{}' }}\nopenapi:\n  - {{ file: specs/doc.yaml, upstream: api }}\n",
        upstream.url()
    );
    std::fs::write(dir.path().join("gateway.yaml"), config).unwrap();
    let served = Served::start(dir.path(), "gateway.yaml", &[]);
    let get = || send(served.addr, request("GET", "/a?count=5", &[], b""));
    assert_eq!(get().await.status, 422);
    std::fs::write(dir.path().join("specs/doc.yaml"), document(9)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while served.generation().await < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the edit was not reloaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(get().await.status, 200);
    let status = served.status().await.to_string();
    assert!(status.contains("OpenAPI document"), "{status}");
}

/// The npm packages of real documents, installed by `./test.sh` under `target/npm`.
fn npm_document(package_path: &str) -> std::path::PathBuf {
    let path = Path::new(ROOT)
        .join("target/npm/node_modules")
        .join(package_path);
    assert!(
        path.exists(),
        "{} is missing: ./test.sh installs it (npm install --prefix target/npm, see test.sh)",
        path.display()
    );
    path
}

/// How many operations a document's `paths` hold.
fn operation_count(document: &serde_json::Value) -> usize {
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| methods.iter().filter(|m| item.get(**m).is_some()).count())
        .sum()
}

fn load_real(file: &Path, extra: &str) -> Result<Snapshot, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{BASE}openapi:\n  - file: {}\n    upstream: api\n    name: real\n{extra}",
        file.display()
    );
    std::fs::write(dir.path().join("gateway.yaml"), config).unwrap();
    Snapshot::load(&dir.path().join("gateway.yaml"))
        .map_err(|errors| errors.iter().map(ToString::to_string).collect())
}

/// GitHub's REST description (OpenAPI 3.0.3, ~1000 operations, written by no one here):
/// every operation compiles into a route that validates. Its two GET operations on
/// `/repos/{owner}/{repo}/compare/...` match the same paths: a clash until one is skipped.
/// Loading time and memory are measured by `bench/openapi_load.sh`, not here.
#[test]
#[ignore = "needs npm: ./test.sh installs @octokit/openapi"]
fn githubs_rest_description_compiles_every_operation() {
    let file = npm_document("@octokit/openapi/generated/api.github.com.json");
    let text = std::fs::read_to_string(&file).unwrap();
    let document: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.0."));
    let operations = operation_count(&document);
    assert!(operations > 900, "{operations} operations");

    let clash = load_real(&file, "").unwrap_err().join("\n");
    assert!(
        clash.contains("GET /repos/{owner}/{repo}/compare/{base}...{head} is both route \"real.repos/compare-commits-with-basehead\""),
        "{clash}"
    );
    let skip = "    operations:\n      repos/compare-commits: { skip: true }\n";
    let snapshot = load_real(&file, skip).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    assert_eq!(snapshot.routes.len(), operations - 1);
    // Bearer from the document's security; a query enum and a path integer, validated.
    let route = |name: &str| {
        snapshot
            .routes
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no route {name}"))
    };
    let issues = route("real.issues/list-for-repo");
    assert_eq!(issues.path, "/repos/{owner}/{repo}/issues");
    let query = issues.schemas.query.as_ref().unwrap();
    let (value, _) = query.coerce_query(Some("state=bogus&per_page=20&labels=bug,ui"));
    let found = query.violations(schemagate::schema::Location::Query, &value);
    let messages: Vec<_> = found.iter().map(|v| v.message.as_str()).collect();
    assert_eq!(
        messages,
        vec!["query.state must be one of: \"open\", \"closed\", \"all\""]
    );
    let get_issue = route("real.issues/get");
    let path = get_issue.schemas.path.as_ref().unwrap();
    let pairs = [("owner", "o"), ("repo", "r"), ("issue_number", "x")];
    let (value, _) = path.coerce_params(schemagate::schema::Location::Path, pairs.into_iter());
    let found = path.violations(schemagate::schema::Location::Path, &value);
    assert_eq!(
        found[0].message,
        "path.issue_number must be of type integer"
    );
    // A JSON request body with a 3.0 `nullable` field.
    let create = route("real.issues/create");
    let body = create.schemas.body.as_ref().unwrap();
    let found = body.violations(
        schemagate::schema::Location::Body,
        &serde_json::json!({"title": "t", "milestone": null, "labels": 5}),
    );
    let messages: Vec<_> = found.iter().map(|v| v.message.as_str()).collect();
    assert_eq!(
        messages,
        vec!["body.labels must be of type array"],
        "{found:?}"
    );
    // Strict on the whole document: every operation still compiles, and unknown fields are
    // named at any depth (a label object is one branch of a `oneOf` in an array's items).
    let strict = format!("    strict: true\n{skip}");
    let snapshot = load_real(&file, &strict).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    assert_eq!(snapshot.routes.len(), operations - 1);
    let create = snapshot
        .routes
        .iter()
        .find(|r| r.name == "real.issues/create")
        .unwrap();
    let body = create.schemas.body.as_ref().unwrap();
    let found = body.violations(
        schemagate::schema::Location::Body,
        &serde_json::json!({"title": "t", "labels": ["bug", {"name": "x", "colour": "red"}], "draft": true}),
    );
    let messages: BTreeSet<_> = found.iter().map(|v| v.message.as_str()).collect();
    assert_eq!(
        messages,
        BTreeSet::from([
            "body.draft is not allowed",
            "body.labels[1].colour is not allowed"
        ]),
        "{found:?}"
    );
}

/// Scalar's Galaxy example (OpenAPI 3.1.1, YAML and JSON, from npm): every operation compiles.
#[test]
#[ignore = "needs npm: ./test.sh installs @scalar/galaxy"]
fn an_openapi_31_document_from_npm_compiles_every_operation() {
    for variant in ["3.1.yaml", "3.1.json"] {
        let file = npm_document(&format!("@scalar/galaxy/dist/{variant}"));
        let json = npm_document("@scalar/galaxy/dist/3.1.json");
        let document: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
        assert!(document["openapi"].as_str().unwrap().starts_with("3.1."));
        let snapshot = load_real(&file, "").unwrap_or_else(|e| panic!("{}", e.join("\n")));
        assert_eq!(
            snapshot.routes.len(),
            operation_count(&document),
            "{variant}"
        );
    }
}

/// Follows `$ref`s (pointers into `document`) from `value` until a schema without one.
fn follow<'v>(
    document: &'v serde_json::Value,
    mut value: &'v serde_json::Value,
) -> &'v serde_json::Value {
    while let Some(reference) = value.get("$ref").and_then(|r| r.as_str()) {
        let pointer = reference.strip_prefix('#').unwrap();
        value = document
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{reference} resolves to nothing"));
    }
    value
}

/// Every `$ref` string under `value`.
fn refs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, member) in map {
                match (key.as_str(), member) {
                    ("$ref", serde_json::Value::String(r)) => out.push(r.clone()),
                    _ => refs(member, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| refs(i, out)),
        _ => {}
    }
}

/// What `schemagate openapi --config <config>` writes, run in `dir`.
fn export(dir: &Path, config: &str) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_schemagate"))
        .args(["openapi", "--config", config])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn openapi_reexports_the_imported_routes_self_contained() {
    let document = export(Path::new(ROOT), "config/openapi/gateway.yaml");
    let mut all = Vec::new();
    refs(&document, &mut all);
    assert!(all.len() > 100, "{} refs", all.len());
    for reference in &all {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{reference} is not local"));
        assert!(
            document.pointer(pointer).is_some(),
            "{reference} resolves to nothing"
        );
    }
    let operations: usize = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(operations, 5);
    // Flextell's body, followed to the document's 3.0 schema, translated.
    let body = &document["paths"]["/v1/conversations"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"];
    let body = follow(&document, follow(&document, body));
    assert_eq!(body["properties"]["channel_id"]["minimum"], 1);
    assert_eq!(
        body["properties"]["first_name"]["type"],
        serde_json::json!(["string", "null"])
    );
    // Leadway's sort order, from the file its document names.
    let parameters = document["paths"]["/conversations/search"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let sort = parameters.iter().find(|p| p["name"] == "sort").unwrap();
    let sort = follow(&document, follow(&document, &sort["schema"]));
    assert_eq!(sort["enum"], serde_json::json!(["asc", "desc"]));
}

#[tokio::test]
async fn strict_mode_names_each_unknown_field_parameter_and_header() {
    let upstream = Upstream::start(Answer::default()).await;
    let document = r#"
openapi: 3.1.0
info: { title: s, version: "1" }
paths:
  /things:
    post:
      operationId: createThing
      parameters:
        - { name: dryRun, in: query, schema: { type: boolean } }
        - { name: X-Trace-Tag, in: header, schema: { type: string } }
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              properties:
                name: { type: string }
                spec: { type: object, properties: { size: { type: integer } } }
      responses: { "200": { description: ok } }
    get:
      operationId: listThings
      responses: { "200": { description: ok } }
"#;
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  api: {{ url: '{}' }}\nopenapi:\n  - file: s.yaml\n    upstream: api\n    strict: true\n    operations:\n      listThings: {{ strict: false }}\nroutes:\n  - {{ name: hand, method: GET, path: /hand, upstream: api, strict: true }}\n",
        upstream.url()
    );
    let gw = TestGateway::start(&config, &[("s.yaml", document)]).await;
    let json = ("content-type", "application/json");
    // Known names and standard headers pass.
    let got = send(
        gw.addr,
        request(
            "POST",
            "/things?dryRun=true",
            &[
                json,
                ("x-trace-tag", "a"),
                ("user-agent", "t"),
                ("x-forwarded-for", "1.2.3.4"),
            ],
            br#"{"name":"n","spec":{"size":1}}"#,
        ),
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let got = send(
        gw.addr,
        request(
            "POST",
            "/things?dryRun=true&debug=1",
            &[json, ("x-debug", "1")],
            br#"{"name":"n","extra":1,"more":true,"spec":{"size":1,"colour":"red"}}"#,
        ),
    )
    .await;
    assert_eq!(got.status, 422, "{:?}", got.body);
    let messages: BTreeSet<String> = got.json()["message"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = [
        "query.debug is not allowed",
        "header.x-debug is not allowed",
        "body.extra is not allowed",
        "body.more is not allowed",
        "body.spec.colour is not allowed",
    ]
    .map(String::from)
    .into();
    assert_eq!(messages, expected);
    // The override turns it off for one operation; a hand-written route takes it too.
    let got = send(
        gw.addr,
        request("GET", "/things?any=1", &[("x-any", "1")], b""),
    )
    .await;
    assert_eq!(got.status, 200);
    let got = send(gw.addr, request("GET", "/hand?any=1", &[], b"")).await;
    assert_eq!(got.json()["message"][0], "query.any is not allowed");
}

/// Strict mode at every depth of a body: through `$ref`, `allOf`, `oneOf` and arrays of
/// objects, with the objects the schema opens itself (and free-form ones) left open, the
/// same for a hand-written route, and no unknown-field noise from a failed `oneOf` branch.
#[tokio::test]
async fn strict_mode_names_unknown_fields_at_every_depth() {
    let upstream = Upstream::start(Answer::default()).await;
    let document = r##"
openapi: 3.1.0
info: { title: o, version: "1" }
paths:
  /orders:
    post:
      operationId: createOrder
      requestBody:
        required: true
        content:
          application/json:
            schema:
              allOf:
                - $ref: "#/components/schemas/Base"
                - type: object
                  properties:
                    customer:
                      type: object
                      properties:
                        name: { type: string }
                        address: { $ref: "#/components/schemas/Address" }
                    lines:
                      type: array
                      items: { type: object, properties: { sku: { type: string }, qty: { type: integer } } }
                    pet: { oneOf: [ { $ref: "#/components/schemas/Cat" }, { $ref: "#/components/schemas/Dog" } ] }
                    labels: { type: object, additionalProperties: { type: string } }
                    extra: { type: object, properties: { a: { type: string } }, additionalProperties: true }
                    metadata: { type: object }
      responses: { "200": { description: ok } }
  /loose:
    post:
      operationId: loose
      requestBody:
        content:
          application/json:
            schema: { $ref: "#/components/schemas/Address" }
      responses: { "200": { description: ok } }
components:
  schemas:
    Base: { type: object, required: [id], properties: { id: { type: integer } } }
    Address: { type: object, properties: { city: { type: string } } }
    Cat: { type: object, required: [kind], properties: { kind: { const: cat }, meow: { type: boolean } } }
    Dog: { type: object, required: [kind], properties: { kind: { const: dog }, bark: { type: boolean } } }
"##;
    let hand = r#"{"type":"object","properties":{"user":{"$ref":"user.json"}}}"#;
    let user = r#"{"type":"object","properties":{"name":{"type":"string"},"tags":{"type":"array","items":{"type":"object","properties":{"k":{}}}}}}"#;
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  api: {{ url: '{}' }}\nopenapi:\n  - file: o.yaml\n    upstream: api\n    operations:\n      createOrder: {{ strict: true }}\nroutes:\n  - {{ name: hand, method: POST, path: /hand, upstream: api, strict: true, schemas: {{ body: hand.json }} }}\n  - {{ name: open, method: POST, path: /open, upstream: api, schemas: {{ body: hand.json }} }}\n",
        upstream.url()
    );
    let gw = TestGateway::start(
        &config,
        &[
            ("o.yaml", document),
            ("schemas/hand.json", hand),
            ("schemas/user.json", user),
        ],
    )
    .await;
    let post = |path: &'static str, body: &'static str| {
        send(
            gw.addr,
            request(
                "POST",
                path,
                &[("content-type", "application/json")],
                body.as_bytes(),
            ),
        )
    };
    let messages = |got: &Got| -> BTreeSet<String> {
        got.json()["message"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    // Everything known, or opened by the schema itself: forwarded.
    let valid = r#"{"id":1,"customer":{"name":"a","address":{"city":"c"}},"lines":[{"sku":"s","qty":1}],"pet":{"kind":"dog","bark":true},"labels":{"any":"x"},"extra":{"a":"1","b":2},"metadata":{"free":{"form":1}}}"#;
    let got = post("/orders", valid).await;
    assert_eq!(got.status, 200, "{:?}", String::from_utf8_lossy(&got.body));
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "/orders",
            r#"{"id":1,"nick":"n","customer":{"name":"a","nickname":"b","address":{"city":"c","zip":"1"}},"lines":[{"sku":"s"},{"sku":"t","colour":"red"}]}"#,
            &[
                "body.nick is not allowed",
                "body.customer.nickname is not allowed",
                "body.customer.address.zip is not allowed",
                "body.lines[1].colour is not allowed",
            ],
        ),
        // The branch that matched decides: a Dog's field on a Cat is unknown.
        (
            "/orders",
            r#"{"id":1,"pet":{"kind":"cat","meow":true,"bark":false}}"#,
            &["body.pet.bark is not allowed"],
        ),
        // No branch matched: its fields are not called unknown, a field no branch has is.
        (
            "/orders",
            r#"{"id":1,"pet":{"kind":"bird","meow":true,"wings":2}}"#,
            &[
                "body.pet is invalid (oneOf)",
                "body.pet.wings is not allowed",
            ],
        ),
        // Other errors are reported beside unknown fields, and a failed `allOf` member does
        // not make its fields unknown.
        (
            "/orders",
            r#"{"id":"x","customer":{"name":5,"zz":1}}"#,
            &[
                "body.id must be of type integer",
                "body.customer.name must be of type string",
                "body.customer.zz is not allowed",
            ],
        ),
        (
            "/hand",
            r#"{"user":{"name":"a","tags":[{"k":1,"v":2}],"age":3},"x":1}"#,
            &[
                "body.x is not allowed",
                "body.user.age is not allowed",
                "body.user.tags[0].v is not allowed",
            ],
        ),
    ];
    for (path, body, wanted) in cases {
        let got = post(path, body).await;
        assert_eq!(
            got.status,
            422,
            "{path} {body}: {:?}",
            String::from_utf8_lossy(&got.body)
        );
        let wanted: BTreeSet<String> = wanted.iter().map(|m| m.to_string()).collect();
        assert_eq!(messages(&got), wanted, "{path} {body}");
    }
    // The same schemas on routes that are not strict stay open: the operation that shares
    // the `Address` component, and a hand-written route on the same files.
    let got = post("/loose", r#"{"city":"c","zip":"1"}"#).await;
    assert_eq!(got.status, 200, "{:?}", String::from_utf8_lossy(&got.body));
    let got = post("/open", r#"{"user":{"age":3,"tags":[{"v":1}]},"x":1}"#).await;
    assert_eq!(got.status, 200, "{:?}", String::from_utf8_lossy(&got.body));
}

/// Object query parameters in OpenAPI's default style (`form`, explode: their properties as
/// query keys of their own) and without explode (`filter=status,open,limit,5`), and object
/// cookies both ways (`Cookie: mode=light; zoom=3`, `Cookie: prefs=theme,dark,size,2`).
#[tokio::test]
async fn form_object_parameters_are_assembled_coerced_and_validated() {
    let upstream = Upstream::start(Answer::default()).await;
    let document = r#"
openapi: 3.0.3
info: { title: f, version: "1" }
paths:
  /tickets:
    get:
      operationId: listTickets
      parameters:
        - name: filter
          in: query
          schema:
            type: object
            required: [status]
            properties:
              status: { type: string, enum: [open, closed] }
              limit: { type: integer, maximum: 50 }
              tags: { type: array, items: { type: string } }
        - { name: page, in: query, schema: { type: integer } }
        - name: colour
          in: query
          style: pipeDelimited
          explode: false
          schema: { type: object, properties: { R: { type: integer }, G: { type: integer } } }
        - name: range
          in: query
          explode: false
          schema: { type: object, properties: { from: { type: integer }, to: { type: integer } } }
        - name: prefs
          in: cookie
          explode: false
          schema: { type: object, properties: { theme: { type: string }, size: { type: integer, minimum: 1 } } }
        - name: view
          in: cookie
          schema: { type: object, properties: { mode: { type: string, enum: [dark, light] }, zoom: { type: integer, minimum: 1 } } }
      responses: { "200": { description: ok } }
  /users/{who}:
    get:
      operationId: getUser
      parameters:
        - name: who
          in: path
          required: true
          explode: true
          schema: { type: object, properties: { role: { type: string, enum: [admin, user] }, id: { type: integer } } }
        - name: X-Page
          in: header
          schema: { type: object, properties: { size: { type: integer, maximum: 100 }, from: { type: integer } } }
      responses: { "200": { description: ok } }
  /l/{ids}:
    get:
      operationId: labelled
      parameters:
        - { name: ids, in: path, required: true, style: label, explode: true, schema: { type: array, items: { type: integer, maximum: 9 } } }
      responses: { "200": { description: ok } }
  /m/{who}:
    get:
      operationId: matrixed
      parameters:
        - { name: who, in: path, required: true, style: matrix, explode: true, schema: { type: object, properties: { id: { type: integer } } } }
      responses: { "200": { description: ok } }
  /search:
    get:
      operationId: search
      parameters:
        - { name: q, in: query, required: true, schema: { type: string } }
        - name: extra
          in: query
          schema: { type: object, additionalProperties: { type: integer } }
      responses: { "200": { description: ok } }
"#;
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  api: {{ url: '{}' }}\nopenapi:\n  - file: f.yaml\n    upstream: api\n    strict: true\n",
        upstream.url()
    );
    let gw = TestGateway::start(&config, &[("f.yaml", document)]).await;
    let forwarded = [
        ("/tickets?status=open&limit=5&tags=a&tags=b&page=2", ""),
        ("/tickets?page=1&colour=R|100|G|200", ""),
        (
            "/tickets?status=closed&range=from,1,to,9",
            "prefs=theme,dark,size,2; _ga=1; mode=light; zoom=3",
        ),
        ("/search?q=x&a=1&b=2", ""),
        ("/users/role=admin,id=7", ""),
        ("/l/.3.4", ""),
        ("/m/;id=7;x=1", ""),
    ];
    assert_forwarded(gw.addr, &upstream, &forwarded).await;
    let cases: &[(&str, &str, &[&str])] = &[
        // Exploded: named by the keys as sent.
        (
            "/tickets?status=lost&limit=99",
            "",
            &[
                "query.status must be one of: \"open\", \"closed\"",
                "query.limit must be <= 50",
            ],
        ),
        (
            "/tickets?limit=x",
            "",
            &[
                "query.limit must be of type integer",
                "query.status is required",
            ],
        ),
        (
            "/tickets?status=open&status=closed",
            "",
            &["query.status must not be repeated"],
        ),
        // Strict: keys no parameter names are still unknown.
        (
            "/tickets?status=open&debug=1",
            "",
            &["query.debug is not allowed"],
        ),
        // Not exploded: named under the parameter, as sent.
        (
            "/tickets?range=from,x,to,2",
            "",
            &["query.range.from must be of type integer"],
        ),
        (
            "/tickets?range=from,1,to",
            "",
            &["query.range must be of type object"],
        ),
        (
            "/tickets",
            "prefs=size,0",
            &["cookie.prefs.size must be >= 1"],
        ),
        // An exploded object cookie: named by the cookies as sent.
        (
            "/tickets",
            "mode=dim; zoom=0; _ga=1",
            &[
                "cookie.mode must be one of: \"dark\", \"light\"",
                "cookie.zoom must be >= 1",
            ],
        ),
        // `simple` objects: a path with explode (`key=value`), a header without.
        (
            "/users/role=boss,id=x",
            "",
            &[
                "path.who.role must be one of: \"admin\", \"user\"",
                "path.who.id must be of type integer",
            ],
        ),
        (
            "/users/role,admin",
            "",
            &["path.who must be of type object"],
        ),
        (
            "/tickets?colour=R|x|G|1",
            "",
            &["query.colour.R must be of type integer"],
        ),
        // `label` and `matrix` paths.
        ("/l/.3.40", "", &["path.ids[1] must be <= 9"]),
        ("/m/;id=x", "", &["path.who.id must be of type integer"]),
        // An exploded map takes every key no other parameter names.
        (
            "/search?q=x&a=one",
            "",
            &["query.a must be of type integer"],
        ),
    ];
    assert_rejected(gw.addr, cases).await;
    // A header object without explode: `size,10,from,2`.
    let page = |value: &'static str| {
        send(
            gw.addr,
            request("GET", "/users/id=1", &[("x-page", value)], b""),
        )
    };
    assert_eq!(page("size,10,from,2").await.status, 200);
    let got = page("size,500,from,2").await;
    assert_eq!(
        got.json()["message"][0],
        "header.X-Page.size must be <= 100"
    );
}

/// A GET of `target`, with `cookie` as its `Cookie` header unless empty.
async fn get_with_cookie(addr: std::net::SocketAddr, target: &str, cookie: &str) -> Got {
    let headers: Vec<(&str, &str)> = if cookie.is_empty() {
        Vec::new()
    } else {
        vec![("cookie", cookie)]
    };
    send(addr, request("GET", target, &headers, b"")).await
}

/// Each (target, cookie) GET reaches the upstream with its target as sent.
async fn assert_forwarded(addr: std::net::SocketAddr, upstream: &Upstream, cases: &[(&str, &str)]) {
    for (target, cookie) in cases {
        let got = get_with_cookie(addr, target, cookie).await;
        assert_eq!(
            got.status,
            200,
            "{target} {cookie}: {:?}",
            String::from_utf8_lossy(&got.body)
        );
        assert_eq!(upstream.seen().last().unwrap().target, *target);
    }
}

/// Each (target, cookie) GET is a 422 with exactly these messages.
async fn assert_rejected(addr: std::net::SocketAddr, cases: &[(&str, &str, &[&str])]) {
    for (target, cookie, wanted) in cases {
        let got = get_with_cookie(addr, target, cookie).await;
        let wanted: BTreeSet<String> = wanted.iter().map(|m| m.to_string()).collect();
        let expected = (422, "Unprocessable Entity".to_string(), wanted);
        assert_eq!(outcome(&got), expected, "{target} {cookie}");
    }
}

/// Query parameters in `style: deepObject` and `in: cookie` parameters, through the binary.
#[tokio::test]
async fn deep_object_queries_and_cookies_are_coerced_and_validated() {
    let upstream = Upstream::start(Answer::default()).await;
    let document = r#"
openapi: 3.0.3
info: { title: p, version: "1" }
paths:
  /tickets:
    get:
      operationId: listTickets
      parameters:
        - name: filter
          in: query
          style: deepObject
          schema:
            type: object
            additionalProperties: false
            properties:
              status: { type: string, enum: [open, closed] }
              limit: { type: integer, maximum: 50 }
              tags: { type: array, items: { type: string } }
        - { name: page, in: query, schema: { type: integer } }
        - { name: session, in: cookie, required: true, schema: { type: string, minLength: 3 } }
        - { name: zoom, in: cookie, schema: { type: number, minimum: 1 } }
      responses: { "200": { description: ok } }
"#;
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  api: {{ url: '{}' }}\nopenapi:\n  - file: p.yaml\n    upstream: api\n    strict: true\n",
        upstream.url()
    );
    let gw = TestGateway::start(&config, &[("p.yaml", document)]).await;
    // Valid: nested keys coerced, encoded brackets, other cookies ignored even in strict mode.
    let forwarded = [
        (
            "/tickets?filter[status]=open&filter[limit]=5&page=2",
            "theme=dark; session=abc; zoom=1.5",
        ),
        (
            "/tickets?filter%5Bstatus%5D=closed&filter[tags]=a&filter[tags]=b",
            "session=abc",
        ),
        ("/tickets", "_ga=GA1.2; session=%61bc"),
    ];
    assert_forwarded(gw.addr, &upstream, &forwarded).await;
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "/tickets?filter[limit]=x",
            "session=abc",
            &["query.filter.limit must be of type integer"],
        ),
        (
            "/tickets?filter[limit]=99&filter[status]=lost",
            "session=abc",
            &[
                "query.filter.limit must be <= 50",
                "query.filter.status must be one of: \"open\", \"closed\"",
            ],
        ),
        (
            "/tickets?filter[limit]=1&filter[limit]=2",
            "session=abc",
            &["query.filter.limit must not be repeated"],
        ),
        (
            "/tickets?filter[colour]=red",
            "session=abc",
            &["query.filter.colour is not allowed"],
        ),
        ("/tickets", "", &["cookie.session is required"]),
        ("/tickets", "theme=dark", &["cookie.session is required"]),
        (
            "/tickets",
            "session=ab; zoom=big",
            &[
                "cookie.session must be at least 3 characters long",
                "cookie.zoom must be of type number",
            ],
        ),
        (
            "/tickets",
            "session=abc; zoom=0",
            &["cookie.zoom must be >= 1"],
        ),
    ];
    assert_rejected(gw.addr, cases).await;
    // `schemagate openapi` writes the cookie parameters back.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), document).unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), &config).unwrap();
    let exported = export(dir.path(), "gateway.yaml");
    let cookies: Vec<(String, bool)> = exported["paths"]["/tickets"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "cookie")
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["required"] == true,
            )
        })
        .collect();
    assert_eq!(
        cookies,
        [("session".to_string(), true), ("zoom".to_string(), false)]
    );
}

/// Strict mode never lets through a body the schema as written refuses (review findings):
/// objects under `if`, `not` and `oneOf` are not closed (a stricter subschema there can make
/// the whole schema looser), and a body refused only by two closings of one object is still
/// refused with its fields named. A strict route whose file is older than 2019-09 is refused
/// at load: `unevaluatedProperties` would be ignored there.
#[tokio::test]
async fn strict_mode_never_forwards_what_the_schema_refuses() {
    let upstream = Upstream::start(Answer::default()).await;
    let files = [
        (
            "schemas/if.json",
            r#"{"type":"object","properties":{"payment":{"type":"object","properties":{"type":{"enum":["card","cash"]},"amount":{"type":"integer"}}},"card_number":{"type":"string"}},"if":{"properties":{"payment":{"properties":{"type":{"const":"card"}}}}},"then":{"required":["card_number"]}}"#,
        ),
        (
            "schemas/not.json",
            r#"{"type":"object","properties":{"x":{}},"not":{"properties":{"x":{"properties":{"y":{"const":1}},"required":["y"]}},"required":["x"]}}"#,
        ),
        (
            "schemas/oneof.json",
            r#"{"type":"object","properties":{"o":{}},"oneOf":[{"properties":{"o":{"properties":{"p":{}}}}},{"properties":{"o":{"properties":{"q":{}}}}}]}"#,
        ),
        (
            "schemas/twice.json",
            r##"{"type":"object","properties":{"o":{"$ref":"#/$defs/c"}},"allOf":[{"properties":{"o":{"$ref":"#/$defs/c"}}}],"$defs":{"c":{"anyOf":[{"properties":{"a":{"type":"string"}}},{"properties":{"b":{}}}]}}}"##,
        ),
    ];
    let mut routes = String::new();
    for name in ["if", "not", "oneof", "twice"] {
        routes.push_str(&format!(
            "  - {{ name: {name}, method: POST, path: /{name}, upstream: api, strict: true, schemas: {{ body: {name}.json }} }}\n"
        ));
    }
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  api: {{ url: '{}' }}\nroutes:\n{routes}",
        upstream.url()
    );
    let gw = TestGateway::start(&config, &files).await;
    let cases = [
        ("/if", r#"{"payment":{"type":"card","amount":5}}"#, 422),
        ("/if", r#"{"payment":{"type":"cash","amount":5}}"#, 200),
        ("/not", r#"{"x":{"y":1,"z":2}}"#, 422),
        ("/not", r#"{"x":{"y":2}}"#, 200),
        ("/oneof", r#"{"o":{"p":1}}"#, 422),
        ("/twice", r#"{"o":{"a":1}}"#, 422),
        ("/twice", r#"{"o":{"b":1}}"#, 200),
    ];
    for (path, body, status) in cases {
        let got = send(
            gw.addr,
            request(
                "POST",
                path,
                &[("content-type", "application/json")],
                body.as_bytes(),
            ),
        )
        .await;
        assert_eq!(
            got.status,
            status,
            "{path} {body}: {:?}",
            String::from_utf8_lossy(&got.body)
        );
        if status == 422 {
            let messages = got.json()["message"].as_array().map_or(0, Vec::len);
            assert!(messages > 0, "{path} {body}: a 422 names what is wrong");
        }
    }
    // Before 2019-09: a config error at load, naming the route's body schema.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("schemas")).unwrap();
    std::fs::write(
        dir.path().join("schemas/old.json"),
        r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":{"a":{}}}"#,
    )
    .unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  api: { url: 'http://127.0.0.1:1' }\nroutes:\n  - { name: old, method: POST, path: /old, upstream: api, strict: true, schemas: { body: old.json } }\n",
    )
    .unwrap();
    let errors = schemagate::Snapshot::load(&config).unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|e| e.contains("strict: true needs JSON Schema 2019-09")),
        "{text:?}"
    );
}
