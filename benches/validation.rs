//! Validation cost per endpoint: parse + validate one typical valid body or query, and the
//! worst invalid body within the 1 MiB limit. Run with `cargo bench --bench validation`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use schemagate::schema::{parse_body, CompiledSchema, Location, SchemaDir};
use std::hint::black_box;

fn schema(dir: &SchemaDir, file: &str) -> CompiledSchema {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    dir.compile(&root.join(file)).unwrap()
}

fn bodies(c: &mut Criterion) {
    let dir = SchemaDir::scan(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).unwrap();
    let cases = [
        ("flextell body", "flextell/create_conversation.body.json", r#"{"channel_id":2,"address":"Main St 1","first_name":"Ada","last_name":null}"#.to_string()),
        ("gestiono body", "gestiono/create_conversation_list.body.json", r#"{"name":"vip","source":"contact","filter":{"channelTypes":["whatsapp"],"form":{"id":1,"phoneField":"p","nameField":"n"}}}"#.to_string()),
        ("leadconnector body", "leadconnector/create_conversation.body.json", r#"{"locationId":"tDtDnQdgm2LXpyiqYvZ6","contactId":"tDtDnQdgm2LXpyiqYvZ6"}"#.to_string()),
        // Worst case within the 1 MiB limit: every array item violates its type.
        ("gestiono worst invalid 1MiB", "gestiono/create_conversation_list.body.json", {
            let items = vec!["1"; (1 << 20) / 2 - 64].join(",");
            format!(r#"{{"name":"n","filter":{{"channelTypes":[{items}]}}}}"#)
        }),
    ];
    // Baseline for ratios: serde_json parsing the typical Flextell body, nothing else.
    let typical = cases[0].2.clone();
    c.bench_function("baseline/serde_json parse flextell body", |b| {
        b.iter(|| {
            black_box(
                serde_json::from_slice::<serde_json::Value>(black_box(typical.as_bytes())).unwrap(),
            )
        })
    });
    // Strict mode (nested objects closed) on the Gestiono body, valid and with one unknown
    // nested field, beside the same body on the schema as written.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let gestiono = "gestiono/create_conversation_list.body.json";
    let strict_dir = dir.strict(&[root.join(gestiono)]);
    let strict = strict_dir.compile(&root.join(gestiono)).unwrap();
    let plain = schema(&dir, gestiono);
    let valid = cases[1].2.clone();
    let unknown = valid.replace(r#""nameField":"n""#, r#""nameField":"n","nick":"x""#);
    for (name, compiled, body) in [
        ("gestiono body strict", &strict, &valid),
        (
            "gestiono body strict, unknown nested field",
            &strict,
            &unknown,
        ),
        (
            "gestiono body not strict, unknown nested field",
            &plain,
            &unknown,
        ),
    ] {
        c.bench_function(&format!("validate/{name}"), |b| {
            b.iter(|| {
                let value = parse_body(black_box(body.as_bytes()), 64).unwrap();
                let mut found = Vec::new();
                let omitted = compiled.collect_violations(Location::Body, &value, &mut found, 20);
                black_box((found, omitted))
            })
        });
    }
    // Worst case for strict mode within 1 MiB: every item of an array of objects has a field
    // its schema does not declare (each is an error the strict collector places).
    let scratch = tempfile::tempdir().unwrap();
    let items = r#"{"type":"object","properties":{"items":{"type":"array","items":{"type":"object","properties":{"a":{"type":"integer"}}}}}}"#;
    std::fs::write(scratch.path().join("items.json"), items).unwrap();
    let file = scratch.path().join("items.json");
    let worst = SchemaDir::scan(scratch.path())
        .unwrap()
        .strict(std::slice::from_ref(&file))
        .compile(&file)
        .unwrap();
    let body = format!(
        r#"{{"items":[{}]}}"#,
        vec![r#"{"a":1,"b":2}"#; (1 << 20) / 14 - 2].join(",")
    );
    c.bench_function("validate/strict worst invalid 1MiB", |b| {
        b.iter(|| {
            let value = parse_body(black_box(body.as_bytes()), 64).unwrap();
            let mut found = Vec::new();
            let omitted = worst.collect_violations(Location::Body, &value, &mut found, 20);
            black_box((found, omitted))
        })
    });
    for (name, file, body) in cases {
        let compiled = schema(&dir, file);
        c.bench_function(&format!("validate/{name}"), |b| {
            b.iter(|| {
                // As the gateway does: word at most the shipped cap of 20, count the rest.
                let value = parse_body(black_box(body.as_bytes()), 64).unwrap();
                let mut found = Vec::new();
                let omitted = compiled.collect_violations(Location::Body, &value, &mut found, 20);
                black_box((found, omitted))
            })
        });
    }
}

fn queries(c: &mut Criterion) {
    let dir = SchemaDir::scan(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).unwrap();
    let cases = [
        ("leadway query", "leadway/search_conversations.query.json", "locationId=ABCHkzuJQ8ZMd4Te84GK&limit=20&sort=desc&status=unread&startDate=1640995200000"),
        ("chatbotx query", "chatbotx/list_conversations.query.json", "botCategory=human&status=unread&status=archived&perPage=50&botEnabled=true"),
    ];
    for (name, file, query) in cases {
        let compiled = schema(&dir, file);
        c.bench_function(&format!("validate/{name}"), |b| {
            b.iter(|| {
                let (value, mut found) = compiled.coerce_query(Some(black_box(query)));
                let omitted = compiled.collect_violations(Location::Query, &value, &mut found, 20);
                black_box((found, omitted))
            })
        });
    }
}

/// OpenAPI parameters: a `deepObject` query against the same values as flat query keys, and
/// cookies read from a browser-like `Cookie` header.
fn openapi_parameters(c: &mut Criterion) {
    let document = r#"
openapi: 3.1.0
info: { title: p, version: "1" }
paths:
  /deep:
    get:
      operationId: deep
      parameters:
        - name: filter
          in: query
          style: deepObject
          schema:
            type: object
            properties:
              status: { type: string, enum: [open, closed] }
              limit: { type: integer, maximum: 50 }
              since: { type: integer }
        - { name: page, in: query, schema: { type: integer } }
        - { name: session, in: cookie, required: true, schema: { type: string, minLength: 3 } }
        - { name: zoom, in: cookie, schema: { type: number } }
      responses: { "200": { description: ok } }
  /exploded:
    get:
      operationId: exploded
      parameters:
        - name: filter
          in: query
          schema:
            type: object
            properties:
              status: { type: string, enum: [open, closed] }
              limit: { type: integer, maximum: 50 }
              since: { type: integer }
        - { name: page, in: query, schema: { type: integer } }
      responses: { "200": { description: ok } }
  /flat:
    get:
      operationId: flat
      parameters:
        - { name: status, in: query, schema: { type: string, enum: [open, closed] } }
        - { name: limit, in: query, schema: { type: integer, maximum: 50 } }
        - { name: since, in: query, schema: { type: integer } }
        - { name: page, in: query, schema: { type: integer } }
      responses: { "200": { description: ok } }
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), document).unwrap();
    let config = "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  api: { url: 'http://127.0.0.1:1' }\nopenapi:\n  - file: p.yaml\n    upstream: api\n";
    std::fs::write(dir.path().join("gateway.yaml"), config).unwrap();
    let snapshot = schemagate::snapshot::Snapshot::load(&dir.path().join("gateway.yaml")).unwrap();
    let route = |name: &str| {
        snapshot
            .routes
            .iter()
            .find(|r| r.name.ends_with(name))
            .unwrap()
    };
    let (deep, flat) = (route(".deep"), route(".flat"));
    let cases = [
        (
            "openapi flat query",
            flat.schemas.query.as_ref().unwrap(),
            "status=open&limit=20&since=1640995200000&page=2",
        ),
        (
            "openapi deepObject query",
            deep.schemas.query.as_ref().unwrap(),
            "filter[status]=open&filter[limit]=20&filter[since]=1640995200000&page=2",
        ),
        (
            "openapi exploded form object query",
            route(".exploded").schemas.query.as_ref().unwrap(),
            "status=open&limit=20&since=1640995200000&page=2",
        ),
    ];
    for (name, compiled, query) in cases {
        c.bench_function(&format!("validate/{name}"), |b| {
            b.iter(|| {
                let (value, mut found) = compiled.coerce_query(Some(black_box(query)));
                let omitted = compiled.collect_violations(Location::Query, &value, &mut found, 20);
                black_box((found, omitted))
            })
        });
    }
    let cookies = deep.schemas.cookies.as_ref().unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::COOKIE,
        http::HeaderValue::from_static(
            "_ga=GA1.2.1234567890.1640995200; theme=dark; session=abcdef0123456789; zoom=1.5; _gid=GA1.2.987654321",
        ),
    );
    c.bench_function("validate/openapi cookies", |b| {
        b.iter(|| {
            let (value, mut found) = cookies.coerce_cookies(black_box(&headers));
            let omitted = cookies.collect_violations(Location::Cookie, &value, &mut found, 20);
            black_box((found, omitted))
        })
    });
}

criterion_group!(benches, bodies, queries, openapi_parameters);
criterion_main!(benches);
