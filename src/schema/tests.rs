//! Unit tests of the schema module: message formats, coercion, strict body parsing and loading.
//! Every assertion compares exact text, so a changed wording fails here first.

use super::*;
use serde_json::json;
use std::fs;
use std::path::PathBuf;

/// A schema directory holding `files` (relative path, JSON value).
fn dir_with(files: &[(&str, Value)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, value) in files {
        write(
            dir.path(),
            name,
            &serde_json::to_string_pretty(value).unwrap(),
        );
    }
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, text).unwrap();
    path
}

/// Compiles one schema from a directory of its own.
fn compile(schema: Value) -> CompiledSchema {
    let dir = dir_with(&[("s.json", schema)]);
    CompiledSchema::load(dir.path(), &dir.path().join("s.json")).unwrap()
}

fn load_err(dir: &tempfile::TempDir, file: &str) -> String {
    CompiledSchema::load(dir.path(), &dir.path().join(file))
        .unwrap_err()
        .to_string()
}

fn messages(schema: &CompiledSchema, location: Location, instance: &Value) -> Vec<String> {
    schema
        .violations(location, instance)
        .into_iter()
        .map(|v| v.message)
        .collect()
}

/// The messages for one property `x` with `subschema`, given `value`.
fn body_x(subschema: Value, value: Value) -> Vec<String> {
    let schema = compile(json!({"type": "object", "properties": {"x": subschema}}));
    messages(&schema, Location::Body, &json!({ "x": value }))
}

// ---- message formats ----

#[test]
fn numeric_limits() {
    assert_eq!(
        body_x(json!({"minimum": 1}), json!(0)),
        ["body.x must be >= 1"]
    );
    assert_eq!(
        body_x(json!({"exclusiveMinimum": 1}), json!(1)),
        ["body.x must be > 1"]
    );
    assert_eq!(
        body_x(json!({"maximum": 10}), json!(11)),
        ["body.x must be <= 10"]
    );
    assert_eq!(
        body_x(json!({"exclusiveMaximum": 2.5}), json!(3)),
        ["body.x must be < 2.5"]
    );
    assert_eq!(
        body_x(json!({"multipleOf": 5}), json!(7)),
        ["body.x must be a multiple of 5"]
    );
}

#[test]
fn required_names_the_missing_property() {
    let schema = compile(json!({"type": "object", "required": ["name", "a/b"]}));
    let found = schema.violations(Location::Body, &json!({}));
    assert_eq!(
        found,
        [
            Violation {
                location: Location::Body,
                pointer: "/name".into(),
                field: "body.name".into(),
                keyword: "required",
                message: "body.name is required".into(),
            },
            Violation {
                location: Location::Body,
                pointer: "/a~1b".into(),
                field: "body.a/b".into(),
                keyword: "required",
                message: "body.a/b is required".into(),
            },
        ]
    );
}

#[test]
fn string_lengths_count_code_points() {
    assert_eq!(
        body_x(json!({"maxLength": 3}), json!("abcd")),
        ["body.x must be at most 3 characters long"]
    );
    assert_eq!(
        body_x(json!({"minLength": 2}), json!("a")),
        ["body.x must be at least 2 characters long"]
    );
    assert_eq!(
        body_x(json!({"minLength": 1}), json!("")),
        ["body.x must be at least 1 character long"]
    );
    // Three code points, six bytes: within `maxLength: 3`.
    assert!(body_x(json!({"maxLength": 3}), json!("ééé")).is_empty());
    assert_eq!(
        body_x(json!({"maxLength": 3}), json!("éééé")),
        ["body.x must be at most 3 characters long"]
    );
}

#[test]
fn types() {
    assert_eq!(
        body_x(json!({"type": "integer"}), json!("1")),
        ["body.x must be of type integer"]
    );
    assert_eq!(
        body_x(json!({"type": ["string", "null"]}), json!(1)),
        ["body.x must be of type string or null"]
    );
    assert_eq!(
        body_x(json!({"type": ["null", "integer", "string"]}), json!(true)),
        ["body.x must be of type integer or string or null"]
    );
    // JSON Schema: a number with a zero fractional part is an integer.
    assert!(body_x(json!({"type": "integer"}), json!(1.0)).is_empty());
    let schema = compile(json!({"type": "object"}));
    assert_eq!(
        messages(&schema, Location::Body, &json!([])),
        ["body must be of type object"]
    );
    assert_eq!(
        messages(&schema, Location::Body, &Value::Null),
        ["body must be of type object"]
    );
}

#[test]
fn enum_and_const_print_the_schema_values() {
    assert_eq!(
        body_x(json!({"enum": ["a", "b", 3]}), json!("A")),
        [r#"body.x must be one of: "a", "b", 3"#]
    );
    assert_eq!(
        body_x(json!({"const": "2021-04-15"}), json!("x")),
        [r#"body.x must be equal to "2021-04-15""#]
    );
    let many: Vec<Value> = (0..25).map(Value::from).collect();
    assert_eq!(
        body_x(json!({ "enum": many }), json!(-1)),
        ["body.x must be one of: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19 (and 5 more)"]
    );
}

#[test]
fn array_sizes_and_items() {
    assert_eq!(
        body_x(json!({"maxItems": 2}), json!([1, 2, 3])),
        ["body.x must have at most 2 items"]
    );
    assert_eq!(
        body_x(json!({"minItems": 1}), json!([])),
        ["body.x must have at least 1 item"]
    );
    assert_eq!(
        body_x(json!({"uniqueItems": true}), json!([1, 1])),
        ["body.x must not contain duplicate items"]
    );
    assert_eq!(
        body_x(
            json!({"items": {"properties": {"id": {"type": "integer"}}}}),
            json!([{"id": 1}, {"id": "2"}])
        ),
        ["body.x[1].id must be of type integer"]
    );
}

#[test]
fn additional_properties_each_named() {
    let schema = compile(json!({"properties": {"a": {}}, "additionalProperties": false}));
    let found = schema.violations(Location::Body, &json!({"a": 1, "b": 2, "c.d": 3}));
    let pairs: Vec<_> = found
        .iter()
        .map(|v| (v.pointer.as_str(), v.keyword, v.message.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("/b", "additionalProperties", "body.b is not allowed"),
            (
                "/c.d",
                "additionalProperties",
                r#"body["c.d"] is not allowed"#
            ),
        ]
    );
}

#[test]
fn format_is_asserted() {
    let email = json!({"type": "string", "format": "email"});
    assert_eq!(
        body_x(email.clone(), json!("not-an-address")),
        ["body.x must be a valid email"]
    );
    assert!(body_x(email, json!("a@example.com")).is_empty());
    assert_eq!(
        body_x(json!({"format": "date-time"}), json!("yesterday")),
        ["body.x must be a valid date-time"]
    );
    // Unknown format names are annotations, as the specification says: no error.
    assert!(body_x(json!({"format": "int64"}), json!("x")).is_empty());
}

#[test]
fn pattern_and_generic_keywords() {
    assert_eq!(
        body_x(json!({"pattern": "^[A-Z]{3}$"}), json!("abc")),
        ["body.x must match the pattern ^[A-Z]{3}$"]
    );
    assert_eq!(
        body_x(json!({"not": {"type": "string"}}), json!("s")),
        ["body.x is invalid (not)"]
    );
    assert_eq!(
        body_x(json!({"minProperties": 1}), json!({})),
        ["body.x must have at least 1 property"]
    );
}

#[test]
fn any_of_reports_the_branch_that_fits_or_the_types() {
    let nullable = json!({"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}]});
    assert_eq!(
        body_x(nullable.clone(), json!("toolong")),
        ["body.x must be at most 3 characters long"]
    );
    assert_eq!(
        body_x(nullable.clone(), json!(5)),
        ["body.x must be of type string or null"]
    );
    assert!(body_x(nullable, Value::Null).is_empty());
    let ambiguous =
        json!({"oneOf": [{"type": "string", "minLength": 5}, {"type": "string", "pattern": "^a"}]});
    assert_eq!(body_x(ambiguous, json!("b")), ["body.x is invalid (oneOf)"]);
}

#[test]
fn messages_never_echo_values() {
    let secret = "sk_live_0123456789";
    let schema = compile(json!({"type": "object", "properties": {
        "token": {"type": "integer"},
        "other": {"enum": ["a"]},
        "p": {"pattern": "^x$"},
        "m": {"format": "email"},
        "n": {"not": {}},
    }}));
    let instance = json!({"token": secret, "other": secret, "p": secret, "m": secret, "n": secret});
    let found = messages(&schema, Location::Body, &instance);
    assert_eq!(found.len(), 5);
    for message in found {
        assert!(!message.contains(secret), "{message}");
    }
}

/// The metrics label of each violation names only what the schema names: keys the client
/// chose (under `additionalProperties`, `patternProperties`, or unexpected) are `*`, indices
/// `[*]`, through `$ref` and a nullable `anyOf` alike.
#[test]
fn field_labels_are_spelled_from_the_schema() {
    let schema = compile(json!({
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": {"type": "integer"},
            "filter": {"properties": {"channelTypes": {"items": {"type": "string"}}}},
            "tags": {"additionalProperties": {"type": "integer"}},
            "labels": {"patternProperties": {"^x": {"type": "integer"}}},
            "maybe": {"anyOf": [
                {"type": "null"},
                {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
            ]},
            "items": {"$ref": "#/$defs/items"},
            "a/b": {"type": "integer"}
        },
        "additionalProperties": false,
        "$defs": {"items": {"items": {"properties": {"sku": {"type": "string"}}}}}
    }));
    let found = schema.violations(
        Location::Body,
        &json!({
            "filter": {"channelTypes": ["a", 7]},
            "tags": {"client-key-1": "x", "12": "y"},
            "labels": {"x-client": "y"},
            "maybe": {},
            "items": [{"sku": 1}],
            "a/b": "x",
            "unknown": true,
            "unknown-too": true
        }),
    );
    let mut fields: Vec<&str> = found.iter().map(|v| v.field.as_str()).collect();
    fields.sort_unstable();
    fields.dedup();
    assert_eq!(
        fields,
        [
            "body.*",
            "body.a/b",
            "body.filter.channelTypes[*]",
            "body.id",
            "body.items[*].sku",
            "body.labels.*",
            "body.maybe.n",
            "body.tags.*",
            "body.tags[*]",
        ],
        "{found:#?}"
    );
}

#[test]
fn field_paths() {
    let schema = compile(json!({"properties": {
        "0": {"type": "integer"},
        "list": {"items": {"type": "integer"}},
        "a b": {"type": "integer"},
    }}));
    let found = messages(
        &schema,
        Location::Body,
        &json!({"0": "x", "list": [1, "x"], "a b": "x"}),
    );
    assert_eq!(
        found,
        [
            "body.0 must be of type integer",
            r#"body["a b"] must be of type integer"#,
            "body.list[1] must be of type integer",
        ]
    );
}

#[test]
fn render_messages_caps_and_counts() {
    let schema = compile(json!({"required": ["a", "b", "c"]}));
    let found = schema.violations(Location::Body, &json!({}));
    assert_eq!(
        render_messages(&found, 0, 2),
        ["body.a is required", "body.b is required", "and 1 more"]
    );
    assert_eq!(render_messages(&found, 0, 3).len(), 3);
    assert_eq!(render_messages(&found, 0, 0), ["and 3 more"]);
    assert_eq!(render_messages(&found, 4, 3).last().unwrap(), "and 4 more");
    assert!(render_messages(&[], 0, 5).is_empty());
}

#[test]
fn collect_stops_wording_at_the_cap_but_counts_the_rest() {
    let schema = compile(json!({"items": {"type": "integer"}}));
    let instance = json!(["a", "b", "c", "d", "e"]);
    let mut out = Vec::new();
    let omitted = schema.collect_violations(Location::Body, &instance, &mut out, 2);
    assert_eq!(out.len(), 2);
    assert_eq!(omitted, 3);
    assert_eq!(
        render_messages(&out, omitted, 2).last().unwrap(),
        "and 3 more"
    );
}

#[test]
fn compiled_schemas_can_be_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<CompiledSchema>();
    shared::<SchemaDir>();
    shared::<Violation>();
}

#[test]
fn location_names() {
    let names: Vec<String> = [
        Location::Body,
        Location::Query,
        Location::Header,
        Location::Path,
        Location::Cookie,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(names, ["body", "query", "header", "path", "cookie"]);
}

// ---- coercion ----

fn query_schema() -> CompiledSchema {
    compile(json!({
        "type": "object",
        "properties": {
            "limit": {"type": "integer", "minimum": 1},
            "ratio": {"type": "number"},
            "active": {"type": "boolean"},
            "cursor": {"type": ["integer", "null"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "ids": {"type": "array", "items": {"type": "integer"}},
            "contactFilter": {"type": "object"},
            "sort": {"type": "array", "items": {"type": "object"}},
            "q": {"type": "string"},
            "status": {"enum": ["open", "closed", 1]},
        }
    }))
}

#[test]
fn query_scalars_are_coerced() {
    let schema = query_schema();
    let (value, found) = schema.coerce_query(Some(
        "limit=5&ratio=2.5&active=true&cursor=&q=a+b%2Bc%26d&status=1",
    ));
    assert!(found.is_empty());
    assert_eq!(
        value,
        json!({"limit": 5, "ratio": 2.5, "active": true, "cursor": null, "q": "a b+c&d", "status": 1})
    );
    let (value, _) = schema.coerce_query(Some("cursor=null&active=false&limit=1.0"));
    assert_eq!(
        value,
        json!({"cursor": null, "active": false, "limit": 1.0})
    );
    // `1.0` is an integer to JSON Schema.
    assert!(schema.violations(Location::Query, &value).is_empty());
}

#[test]
fn query_values_that_do_not_coerce_stay_strings() {
    let schema = query_schema();
    let (value, found) =
        schema.coerce_query(Some("limit=abc&ratio=+1&active=True&cursor=01&status=open"));
    assert!(found.is_empty());
    assert_eq!(
        value,
        json!({"limit": "abc", "ratio": " 1", "active": "True", "cursor": "01", "status": "open"})
    );
    assert_eq!(
        messages(&schema, Location::Query, &value),
        [
            "query.active must be of type boolean",
            "query.cursor must be of type integer or null",
            "query.limit must be of type integer",
            "query.ratio must be of type number",
        ]
    );
    // Not JSON number syntax: leading zeros, bare dot, exponent without digits, out of range.
    for text in ["01", ".5", "1.", "1e", "-", "1e400", "NaN", " 1"] {
        let (value, _) = schema.coerce_query(Some(&format!("ratio={}", text.replace(' ', "%20"))));
        assert_eq!(value, json!({ "ratio": text }), "{text}");
    }
    for text in ["-0", "1e3", "-1.5E-2", "0.0"] {
        let (value, _) = schema.coerce_query(Some(&format!("ratio={text}")));
        assert!(value["ratio"].is_number(), "{text}");
    }
}

#[test]
fn query_arrays_collect_repeated_keys() {
    let schema = query_schema();
    let (value, found) = schema.coerce_query(Some("tags=a&ids=2&tags=b&ids=x&ids=3"));
    assert!(found.is_empty());
    assert_eq!(value, json!({"tags": ["a", "b"], "ids": [2, "x", 3]}));
    assert_eq!(
        messages(&schema, Location::Query, &value),
        ["query.ids[1] must be of type integer"]
    );
    let (value, _) = schema.coerce_query(Some("tags=only&ids=7"));
    assert_eq!(value, json!({"tags": ["only"], "ids": [7]}));
}

#[test]
fn query_repeated_scalar_is_a_violation() {
    let schema = query_schema();
    let (value, found) = schema.coerce_query(Some("limit=5&limit=0"));
    assert_eq!(
        found,
        [Violation {
            location: Location::Query,
            pointer: "/limit".into(),
            field: "query.limit".into(),
            keyword: "repeated",
            message: "query.limit must not be repeated".into(),
        }]
    );
    // The first occurrence stands for the key.
    assert_eq!(value, json!({"limit": 5}));
}

#[test]
fn query_and_header_numbers_are_as_written() {
    let schema = query_schema();
    let precision = |pointer: &str, message: &str| Violation {
        location: Location::Query,
        // The label names the key, never an index of a repeated one.
        field: format!(
            "query.{}",
            pointer[1..].split('/').next().unwrap_or_default()
        ),
        pointer: pointer.into(),
        keyword: "precision",
        message: message.into(),
    };
    for &(literal, as_written) in NUMBERS {
        let query = format!("limit={}", literal.replace('+', "%2B"));
        let (value, found) = schema.coerce_query(Some(&query));
        assert!(value["limit"].is_number(), "{literal}: {value}");
        if as_written {
            assert!(found.is_empty(), "{literal}: {found:?}");
        } else {
            assert_eq!(
                found,
                [precision(
                    "/limit",
                    "query.limit must be a number that round-trips through a 64-bit float"
                )],
                "{literal}"
            );
        }
    }
    // Each item of a repeated key, and a literal too long to read.
    let long = format!("0.{}", "9".repeat(1_000_000));
    let (_, found) = schema.coerce_query(Some(&format!(
        "ids=1&ids=1.0000000000000001&ids=2&ratio={long}"
    )));
    assert_eq!(
        found,
        [
            precision(
                "/ids/1",
                "query.ids[1] must be a number that round-trips through a 64-bit float"
            ),
            precision(
                "/ratio",
                "query.ratio must be a number of at most 64 characters"
            ),
        ]
    );
    // Headers go through the same coercion.
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "x-count",
        http::HeaderValue::from_static("0.99999999999999999"),
    );
    let (_, found) = header_schema().coerce_headers(&headers);
    assert_eq!(
        found.iter().map(|v| v.message.as_str()).collect::<Vec<_>>(),
        ["header.X-Count must be a number that round-trips through a 64-bit float"]
    );
}

#[test]
fn query_json_text_for_objects_and_arrays_of_objects() {
    let schema = query_schema();
    let (value, found) = schema.coerce_query(Some(
        "contactFilter=%7B%22a%22%3A1%7D&sort=%5B%7B%22field%22%3A%22x%22%7D%5D",
    ));
    assert!(found.is_empty());
    assert_eq!(
        value,
        json!({"contactFilter": {"a": 1}, "sort": [{"field": "x"}]})
    );
    let (value, _) = schema.coerce_query(Some(r#"sort={"a":1}&sort={"b":2}"#));
    assert_eq!(value, json!({"sort": [{"a": 1}, {"b": 2}]}));
    // Not JSON, a duplicate key, or JSON of another type: left as text for the schema to refuse.
    let (value, _) = schema.coerce_query(Some(r#"contactFilter={a:1}&sort=[1]"#));
    assert_eq!(value, json!({"contactFilter": "{a:1}", "sort": [1]}));
    let (value, _) = schema.coerce_query(Some(r#"contactFilter={"a":1,"a":2}"#));
    assert_eq!(value, json!({"contactFilter": r#"{"a":1,"a":2}"#}));
    assert_eq!(
        messages(&schema, Location::Query, &value),
        ["query.contactFilter must be of type object"]
    );
}

#[test]
fn query_unknown_keys_are_strings_for_strict_schemas() {
    let schema = compile(json!({
        "properties": {"limit": {"type": "integer"}},
        "additionalProperties": false
    }));
    let (value, found) = schema.coerce_query(Some("limit=1&debug=1&x=a&x=b&&flag"));
    assert!(found.is_empty());
    assert_eq!(
        value,
        json!({"limit": 1, "debug": "1", "x": ["a", "b"], "flag": ""})
    );
    assert_eq!(
        messages(&schema, Location::Query, &value),
        [
            "query.debug is not allowed",
            "query.flag is not allowed",
            "query.x is not allowed",
        ]
    );
    assert_eq!(schema.coerce_query(None), (json!({}), Vec::new()));
}

#[test]
fn query_types_follow_refs_and_combinators() {
    let dir = dir_with(&[
        (
            "q.json",
            json!({
                "allOf": [{"$ref": "common.json#/$defs/paging"}],
                "properties": {
                    "id": {"$ref": "common.json#/$defs/id"},
                    "maybe": {"anyOf": [{"type": "boolean"}, {"type": "null"}]},
                    "untyped": {"minLength": 1},
                }
            }),
        ),
        (
            "common.json",
            json!({"$defs": {
                "id": {"type": "integer"},
                "paging": {"properties": {"page": {"type": "integer"}}},
            }}),
        ),
    ]);
    let schema = CompiledSchema::load(dir.path(), &dir.path().join("q.json")).unwrap();
    let (value, _) = schema.coerce_query(Some("id=3&page=2&maybe=&untyped=4"));
    assert_eq!(
        value,
        json!({"id": 3, "page": 2, "maybe": null, "untyped": "4"})
    );
}

fn header_schema() -> CompiledSchema {
    compile(json!({
        "type": "object",
        "required": ["X-Tenant", "Authorization"],
        "properties": {
            "X-Tenant": {"type": "string", "minLength": 2},
            "Authorization": {"type": "string"},
            "X-Count": {"type": "integer"},
            "Version": {"const": "2021-04-15"},
        }
    }))
}

#[test]
fn headers_match_case_insensitively_under_the_schema_spelling() {
    let schema = header_schema();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-tenant", "acme".parse().unwrap());
    headers.insert("x-count", "12".parse().unwrap());
    headers.insert("x-unrelated", "1".parse().unwrap());
    let (fields, found) = schema.coerce_headers(&headers);
    let value = fields.to_value();
    assert!(found.is_empty());
    assert_eq!(value, json!({"X-Tenant": "acme", "X-Count": 12}));
    assert_eq!(
        messages(&schema, Location::Header, &value),
        ["header.Authorization is required"]
    );
    let value = schema.coerce_headers(&http::HeaderMap::new()).0.to_value();
    assert_eq!(
        messages(&schema, Location::Header, &value),
        [
            "header.X-Tenant is required",
            "header.Authorization is required"
        ]
    );
}

/// Headers are validated as coerced fields (no key copied) and turned into a `Value` only to
/// word errors: the verdicts and messages must be the `Value`'s.
#[test]
fn header_fields_validate_as_their_value() {
    let schema = header_schema();
    let cases: [&[(&str, &str)]; 4] = [
        &[
            ("x-tenant", "acme"),
            ("x-count", "12"),
            ("authorization", "Bearer x"),
        ],
        &[
            ("x-tenant", "acme"),
            ("x-count", "twelve"),
            ("authorization", "Bearer x"),
        ],
        &[("x-count", "12")],
        &[],
    ];
    let mut invalid = 0;
    for case in cases {
        let mut headers = http::HeaderMap::new();
        for (name, value) in case {
            headers.insert(*name, value.parse().unwrap());
        }
        let (fields, _) = schema.coerce_headers(&headers);
        let mut found = Vec::new();
        schema.collect_fields_violations(Location::Header, &fields, &mut found, 20);
        let found: Vec<_> = found.iter().map(|v| v.message.clone()).collect();
        assert_eq!(
            found,
            messages(&schema, Location::Header, &fields.to_value())
        );
        invalid += usize::from(!found.is_empty());
    }
    assert!(invalid >= 3, "{invalid}");
}

#[test]
fn headers_opaque_and_repeated() {
    let schema = header_schema();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-count", http::HeaderValue::from_bytes(b"1\xff2").unwrap());
    headers.append("x-tenant", "a".parse().unwrap());
    headers.append("x-tenant", "b".parse().unwrap());
    headers.insert("version", "2021-04-15".parse().unwrap());
    let (fields, found) = schema.coerce_headers(&headers);
    let value = fields.to_value();
    assert_eq!(
        found.iter().map(|v| v.message.as_str()).collect::<Vec<_>>(),
        ["header.X-Tenant must not be repeated"]
    );
    // Not visible ASCII: kept as lossy text and never coerced, so the type check fails.
    assert_eq!(
        value,
        json!({"X-Count": "1\u{fffd}2", "X-Tenant": "a", "Version": "2021-04-15"})
    );
    assert_eq!(
        messages(&schema, Location::Header, &value),
        [
            "header.Authorization is required",
            "header.X-Count must be of type integer",
            "header.X-Tenant must be at least 2 characters long",
        ]
    );
}

#[test]
fn path_params_are_coerced() {
    let schema = compile(json!({"properties": {"id": {"type": "integer", "minimum": 1}}}));
    let (value, found) =
        schema.coerce_params(Location::Path, [("id", "0"), ("slug", "a b")].into_iter());
    assert!(found.is_empty());
    assert_eq!(value, json!({"id": 0, "slug": "a b"}));
    assert_eq!(
        messages(&schema, Location::Path, &value),
        ["path.id must be >= 1"]
    );
}

// ---- parse_body ----

const DEPTH: usize = 64;

fn parse(text: &[u8]) -> Result<Value, BodyError> {
    parse_body(text, DEPTH)
}

#[test]
fn body_accepts_plain_json() {
    assert_eq!(
        parse(br#" {"a": [1, 2.5, "x", null, true]} "#),
        Ok(json!({"a": [1, 2.5, "x", null, true]}))
    );
    assert_eq!(parse(b"null"), Ok(Value::Null));
    assert_eq!(parse(br#""\u00e9""#), Ok(json!("é")));
}

#[test]
fn body_empty() {
    assert_eq!(parse(b""), Err(BodyError::Empty));
    assert_eq!(parse(b" \r\n\t"), Err(BodyError::Empty));
    assert_eq!(BodyError::Empty.to_string(), "request body is empty");
}

#[test]
fn body_syntax_errors() {
    let cases: [(&[u8], &str); 6] = [
        (
            br#"{"a":"#,
            "request body is not valid JSON: EOF while parsing a value at line 1 column 5",
        ),
        (
            b"{'a': 1}",
            "request body is not valid JSON: key must be a string at line 1 column 2",
        ),
        (
            b"[1, 2,]",
            "request body is not valid JSON: trailing comma at line 1 column 7",
        ),
        (
            br#"{"a": 1,}"#,
            "request body is not valid JSON: trailing comma at line 1 column 9",
        ),
        (
            b"\xEF\xBB\xBF{}",
            "request body is not valid JSON: expected value at line 1 column 1",
        ),
        (
            b"{} {}",
            "request body is not valid JSON: trailing characters at line 1 column 4",
        ),
    ];
    for (text, expected) in cases {
        let error = parse(text).unwrap_err();
        assert!(matches!(error, BodyError::Syntax { .. }), "{error:?}");
        assert_eq!(error.to_string(), expected);
    }
    assert_eq!(
        parse(b"[\n  1,\n  2 3]"),
        Err(BodyError::Syntax {
            line: 3,
            column: 5,
            what: "expected `,` or `]`".into()
        })
    );
}

#[test]
fn body_invalid_utf8() {
    assert_eq!(parse(b"{\"a\": \"\xff\"}"), Err(BodyError::InvalidUtf8));
    assert_eq!(
        BodyError::InvalidUtf8.to_string(),
        "request body is not valid UTF-8"
    );
}

#[test]
fn body_duplicate_keys() {
    assert_eq!(
        parse(br#"{"name": 1, "name": 2}"#),
        Err(BodyError::DuplicateKey {
            key_pointer: "/name".into()
        })
    );
    assert_eq!(
        parse(br#"{"x": [{"b": 1}, {"c": {}, "a/b~": 1, "a/b~": 2}]}"#),
        Err(BodyError::DuplicateKey {
            key_pointer: "/x/1/a~1b~0".into()
        })
    );
    assert_eq!(
        BodyError::DuplicateKey {
            key_pointer: "/name".into()
        }
        .to_string(),
        "request body has a duplicate key at /name"
    );
    // The same key in sibling objects is not a duplicate.
    assert!(parse(br#"[{"a": 1}, {"a": 2}]"#).is_ok());
}

#[test]
fn body_duplicate_keys_in_large_objects_and_escaped_spellings() {
    // Past 16 members duplicates are found with a set, not a scan; both must catch them.
    let mut members: Vec<String> = (0..40).map(|i| format!("\"k{i}\": {i}")).collect();
    members.push("\"k3\": 0".into());
    let text = format!("{{{}}}", members.join(","));
    assert_eq!(
        parse(text.as_bytes()),
        Err(BodyError::DuplicateKey {
            key_pointer: "/k3".into()
        })
    );
    // A key spelled with an escape is the same key.
    for text in [
        &br#"{"a": 1, "\u0061": 2}"#[..],
        &br#"{"\u0061": 1, "a": 2}"#[..],
    ] {
        assert_eq!(
            parse(text),
            Err(BodyError::DuplicateKey {
                key_pointer: "/a".into()
            })
        );
    }
}

/// A request body is validated in place (a tree pointing into its text) and turned into a
/// `Value` only to word errors: the verdicts and messages must be those of the `Value`.
#[test]
fn body_validated_in_place_agrees_with_the_value() {
    let schema = compile(json!({
        "type": "object",
        "required": ["k39", "name"],
        "properties": {
            "k39": {"type": "integer", "maximum": 100},
            "k2": {"type": "integer"},
            "name": {"type": "string", "maxLength": 3},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
            "kind": {"enum": ["a", "b"]},
            "nested": {"type": "object", "properties": {"x": {"const": "é"}}}
        },
        "additionalProperties": {"type": ["integer", "string", "array", "object"]}
    }));
    let many: String = (0..40).map(|i| format!(r#""k{i}":{i},"#)).collect();
    let bodies = [
        format!(r#"{{{many}"name":"ab","tags":["x","y"],"kind":"a","nested":{{"x":"é"}}}}"#),
        format!(r#"{{{many}"name":"abcd","tags":["x","x"],"kind":"c","nested":{{"x":"e"}}}}"#),
        r#"{"k39":7,"name":"a\"b","extra":null}"#.to_string(),
        r#"{"k39":7,"name":"éé","k2":1.5}"#.to_string(),
        r#"{"k39":7,"name":"ok","tags":[],"nested":{"x":"é"}}"#.to_string(),
        r#"{"name":"ok"}"#.to_string(),
        r#"[1,2]"#.to_string(),
    ];
    let mut invalid = 0;
    for body in &bodies {
        let bytes = bytes::Bytes::from(body.clone());
        let parsed = super::parse_request_body(&bytes, 64).unwrap();
        let value: Value = serde_json::from_str(body).unwrap();
        assert_eq!(parsed.to_value(), value, "{body}");
        let mut in_place = Vec::new();
        schema.collect_body_violations(&parsed, &mut in_place, 100);
        let expected = schema.violations(Location::Body, &value);
        let words = |v: &[Violation]| v.iter().map(|v| v.message.clone()).collect::<Vec<_>>();
        assert_eq!(words(&in_place), words(&expected), "{body}");
        invalid += usize::from(!expected.is_empty());
    }
    assert_eq!(
        invalid, 5,
        "the cases must include valid and invalid bodies"
    );
}

#[test]
fn body_depth_limit() {
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(parse(nested(DEPTH).as_bytes()).is_ok());
    assert_eq!(
        parse(nested(DEPTH + 1).as_bytes()),
        Err(BodyError::TooDeep { limit: DEPTH })
    );
    let objects = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
    assert!(parse(objects(DEPTH).as_bytes()).is_ok());
    assert_eq!(
        parse(objects(DEPTH + 1).as_bytes()),
        Err(BodyError::TooDeep { limit: DEPTH })
    );
    // Hostile depth, unterminated: refused at the limit, no stack overflow.
    assert_eq!(
        parse("[".repeat(100_000).as_bytes()),
        Err(BodyError::TooDeep { limit: DEPTH })
    );
    assert_eq!(
        parse(r#"{"a":"#.repeat(100_000).as_bytes()),
        Err(BodyError::TooDeep { limit: DEPTH })
    );
    assert_eq!(
        BodyError::TooDeep { limit: 64 }.to_string(),
        "request body nests deeper than 64 levels"
    );
}

#[test]
fn body_depth_limit_is_capped_at_serde_json_guard() {
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(parse_body(nested(SERDE_JSON_MAX_DEPTH).as_bytes(), 1000).is_ok());
    assert_eq!(
        parse_body(nested(SERDE_JSON_MAX_DEPTH + 1).as_bytes(), 1000),
        Err(BodyError::TooDeep {
            limit: SERDE_JSON_MAX_DEPTH
        })
    );
    assert_eq!(
        parse_body("[".repeat(100_000).as_bytes(), 1000),
        Err(BodyError::TooDeep {
            limit: SERDE_JSON_MAX_DEPTH
        })
    );
    assert_eq!(parse_body(b"[]", 0), Err(BodyError::TooDeep { limit: 0 }));
    assert_eq!(parse_body(b"1", 0), Ok(json!(1)));
}

// ---- numbers as written ----

/// The literals of issue 23 and their neighbours: (literal, validated as written). Integers
/// serde_json holds exactly (`9007199254740993`, `12345678901234567891`, both within u64) are
/// as written whatever a double makes of them; everything else must be the shortest form of
/// its double.
const NUMBERS: &[(&str, bool)] = &[
    ("0.1", true),
    ("1e2", true),
    ("1E+2", true),
    ("-0", true),
    ("-0.0", true),
    ("0e10", true),
    ("100", true),
    ("1", true),
    ("1.0", true),
    ("2e0", true),
    ("100.000", true),
    ("1.50E+1", true),
    ("1.5e-7", true),
    ("-1.5", true),
    ("0.3", true),
    ("0.30000000000000004", true),
    ("0.000001", true),
    ("1e23", true),
    ("5e-324", true),
    ("2.2250738585072014e-308", true),
    ("1.7976931348623157e308", true),
    ("-9223372036854775808", true),
    ("18446744073709551615", true),
    ("9007199254740993", true),
    ("12345678901234567891", true),
    ("18446744073709552000", true),
    ("0.99999999999999999", false),
    ("1.0000000000000001", false),
    ("0.10000000000000001", false),
    ("0.1000000000000000055511151231257827", false),
    ("9007199254740993.0", false),
    ("9007199254740993e0", false),
    ("18446744073709551616", false),
    ("-9223372036854775809", false),
    ("123456789012345678901", false),
    ("1e-400", false),
    ("-1e-400", false),
    ("2.4703282292062328e-324", false),
];

#[test]
fn numbers_as_written_in_a_body() {
    for &(literal, as_written) in NUMBERS {
        let body = format!(r#"{{"n": [1, "x\"", {literal}]}}"#);
        let got = parse(body.as_bytes());
        if as_written {
            assert!(got.is_ok(), "{literal}: {got:?}");
        } else {
            assert_eq!(
                got,
                Err(BodyError::Number {
                    pointer: "/n/2".into(),
                    problem: NumberProblem::Inexact
                }),
                "{literal}"
            );
        }
        // The reference the fuzz target checks against agrees.
        assert_eq!(
            crate::fuzzing::number_as_written(literal),
            as_written,
            "{literal}"
        );
    }
}

#[test]
fn number_check_of_doubles() {
    // `number::check` judges the literals serde_json reads as doubles; integers in range never
    // reach it, and as doubles these two are not as written.
    for literal in ["9007199254740993", "12345678901234567891"] {
        let double: f64 = literal.parse().unwrap();
        assert_eq!(
            number::check(literal.as_bytes(), double),
            Err(NumberProblem::Inexact),
            "{literal}"
        );
    }
    for &(literal, as_written) in NUMBERS {
        let double: f64 = literal.parse().unwrap();
        let integer = literal.parse::<i64>().is_ok() || literal.parse::<u64>().is_ok();
        if !integer || literal == "-0" {
            assert_eq!(
                number::check(literal.as_bytes(), double).is_ok(),
                as_written,
                "{literal}"
            );
        }
    }
    // Not a JSON number: refused rather than guessed at.
    assert_eq!(number::check(b"1x", 1.0), Err(NumberProblem::Inexact));
    assert_eq!(number::check(b"1e", 1.0), Err(NumberProblem::Inexact));
    // A double that is not the literal's at all.
    assert_eq!(number::check(b"0.5", 0.25), Err(NumberProblem::Inexact));
    assert_eq!(number::check(b"-0.5", 0.5), Err(NumberProblem::Inexact));
    assert_eq!(number::check(b"0.5", 0.0), Err(NumberProblem::Inexact));
}

#[test]
fn number_literal_length_is_bounded() {
    let fits = format!("0.{}", "5".repeat(MAX_LITERAL_LEN - 2));
    let long = format!("0.{}", "5".repeat(MAX_LITERAL_LEN - 1));
    assert_eq!(fits.len(), 64);
    // 62 significant digits: not a double's shortest form, but not too long either.
    assert_eq!(
        parse(fits.as_bytes()),
        Err(BodyError::Number {
            pointer: String::new(),
            problem: NumberProblem::Inexact
        })
    );
    let trailing_zeros = format!("0.5{}", "0".repeat(MAX_LITERAL_LEN - 3));
    assert_eq!(parse(trailing_zeros.as_bytes()), Ok(json!(0.5)));
    for body in [long.clone(), format!("1.{}", "0".repeat(200))] {
        assert_eq!(
            parse(body.as_bytes()),
            Err(BodyError::Number {
                pointer: String::new(),
                problem: NumberProblem::TooLong
            })
        );
    }
    assert_eq!(
        parse(format!(r#"{{"a": {{"b": {long}}}}}"#).as_bytes())
            .unwrap_err()
            .to_string(),
        "request body has a number at /a/b that is longer than 64 characters"
    );
}

#[test]
fn a_million_digit_fraction_is_refused_quickly() {
    let body = format!(
        r#"{{"channel_id": 0.{}1, "address": "a"}}"#,
        "9".repeat(1_000_000)
    );
    let started = std::time::Instant::now();
    assert_eq!(
        parse(body.as_bytes()),
        Err(BodyError::Number {
            pointer: "/channel_id".into(),
            problem: NumberProblem::TooLong
        })
    );
    // serde_json reads the digits once (linear); the check never reads past 65 of them.
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn number_messages() {
    assert_eq!(
        parse(br#"{"channel_id": 0.99999999999999999}"#)
            .unwrap_err()
            .to_string(),
        "request body has a number at /channel_id that does not round-trip through a 64-bit float"
    );
    assert_eq!(
        parse(b"1.0000000000000001").unwrap_err().to_string(),
        "request body is a number that does not round-trip through a 64-bit float"
    );
    assert_eq!(
        parse(br#"{"a~/b": [0, {"c": 1e-999}]}"#).unwrap_err(),
        BodyError::Number {
            pointer: "/a~0~1b/1/c".into(),
            problem: NumberProblem::Inexact
        }
    );
}

/// The literal is found however the text around it is written: escaped strings and keys
/// (which serde_json does not lend), literals, integers, whitespace.
#[test]
fn number_literals_are_found_wherever_they_are() {
    let bodies = [
        r#"{"\u0061": 0.99999999999999999}"#,
        r#"{"a\"b": "\"0.5\"", "n": 0.99999999999999999}"#,
        r#"[true, false, null, 1, -2, 3, "4", "\\", 0.99999999999999999]"#,
        "[ 1 ,\n\t2,\r\n 0.99999999999999999 ]",
        r#"{"a": {"b": [[1e2, 0.5], {"c": 7}]}, "d": 0.99999999999999999}"#,
        r#"{"a": 1, "b": 2, "c": 3, "d": 0.99999999999999999}"#,
        r#"{"x": "\ud83d\ude00", "y": [1, 2], "z": 0.99999999999999999}"#,
    ];
    for body in bodies {
        let got = parse(body.as_bytes());
        assert!(
            matches!(
                got,
                Err(BodyError::Number {
                    problem: NumberProblem::Inexact,
                    ..
                })
            ),
            "{body}: {got:?}"
        );
        // The same body with the number as written parses.
        let fine = body.replace("0.99999999999999999", "0.5");
        assert!(parse(fine.as_bytes()).is_ok(), "{fine}");
    }
}

/// Every double's shortest form, in every notation the standard library prints, is accepted;
/// one more significant digit never is; and the check agrees with the slow reference on
/// literals near them.
#[test]
fn number_check_agrees_with_the_reference() {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..10_000 {
        let bits = next();
        // Half of them near ordinary magnitudes, half anywhere in the range of doubles.
        let double = if round % 2 == 0 {
            (bits >> 11) as f64 / (1u64 << 53) as f64 * 10f64.powi((bits % 24) as i32 - 8)
        } else {
            f64::from_bits(bits)
        };
        if !double.is_finite() {
            continue;
        }
        for literal in [
            format!("{double}"),
            format!("{double:e}"),
            format!("{double:E}"),
            format!("{double:?}"),
        ] {
            if literal.len() > MAX_LITERAL_LEN {
                continue;
            }
            assert_eq!(
                number::check(literal.as_bytes(), double),
                Ok(()),
                "{literal}"
            );
            assert!(crate::fuzzing::number_as_written(&literal), "{literal}");
        }
        let shortest = format!("{double:e}");
        let (digits, exponent) = shortest.split_once('e').unwrap();
        let digits = if digits.contains('.') {
            digits.to_string()
        } else {
            format!("{digits}.")
        };
        for extra in ["1", "5", "9", "49", "000000000001"] {
            let literal = format!("{digits}{extra}e{exponent}");
            let read: f64 = literal.parse().unwrap();
            let ours = number::check(literal.as_bytes(), read).is_ok();
            assert_eq!(
                ours,
                crate::fuzzing::number_as_written(&literal),
                "{literal}"
            );
            // No double's shortest form has more than 17 significant digits; with 17 the
            // literal may be a neighbour's shortest form.
            let all: String = digits.chars().filter(char::is_ascii_digit).collect();
            let significant = all.trim_start_matches('0').len();
            if significant + extra.len() > 17 {
                assert!(!ours, "{literal} ({read:e})");
            }
        }
    }
}

// ---- loading ----

#[test]
fn refs_between_local_files() {
    let dir = dir_with(&[
        (
            "gestiono/body.json",
            json!({
                "type": "object",
                "properties": {
                    "id": {"$ref": "../common/id.json"},
                    "kind": {"$ref": "../common/defs.json#/$defs/kind"},
                }
            }),
        ),
        ("common/id.json", json!({"type": "integer", "minimum": 1})),
        (
            "common/defs.json",
            json!({"$defs": {"kind": {"enum": ["a", "b"]}}}),
        ),
    ]);
    let schema = CompiledSchema::load(dir.path(), &dir.path().join("gestiono/body.json")).unwrap();
    assert_eq!(schema.source(), Path::new("gestiono/body.json"));
    assert_eq!(
        messages(&schema, Location::Body, &json!({"id": 0, "kind": "c"})),
        [
            "body.id must be >= 1",
            r#"body.kind must be one of: "a", "b""#
        ]
    );
    assert!(schema
        .violations(Location::Body, &json!({"id": 1, "kind": "a"}))
        .is_empty());
}

#[test]
fn ref_to_a_local_id_and_a_shared_scan() {
    let dir = dir_with(&[
        (
            "a.json",
            json!({"properties": {"x": {"$ref": "https://example.com/common.json"}}}),
        ),
        (
            "b.json",
            json!({"properties": {"y": {"$ref": "https://example.com/common.json"}}}),
        ),
        (
            "common.json",
            json!({"$id": "https://example.com/common.json", "type": "string"}),
        ),
    ]);
    let set = SchemaDir::scan(dir.path()).unwrap();
    let a = set.compile(&dir.path().join("a.json")).unwrap();
    let b = set.compile(&dir.path().join("b.json")).unwrap();
    assert_eq!(
        messages(&a, Location::Body, &json!({"x": 1})),
        ["body.x must be of type string"]
    );
    assert_eq!(
        messages(&b, Location::Body, &json!({"y": 1})),
        ["body.y must be of type string"]
    );
}

#[test]
fn remote_file_and_escaping_refs_are_load_errors() {
    let dir = dir_with(&[
        ("remote.json", json!({"$ref": "https://example.com/s.json"})),
        (
            "file.json",
            json!({"properties": {"p": {"$ref": "file:///etc/passwd"}}}),
        ),
        ("sub/escape.json", json!({"$ref": "../../outside.json"})),
        ("missing.json", json!({"$ref": "nope.json"})),
        ("pointer.json", json!({"$ref": "defs.json#/$defs/x"})),
        ("defs.json", json!({"$defs": {"y": {}}})),
    ]);
    let path = |name: &str| dir.path().join(name).display().to_string();
    let root = fs::canonicalize(dir.path()).unwrap();
    assert_eq!(
        load_err(&dir, "remote.json"),
        format!(
            "{}: $ref \"https://example.com/s.json\" in remote.json cannot be used: remote schemas are never fetched (https://example.com/s.json); copy the schema under the schema directory and refer to it by a relative path",
            path("remote.json")
        )
    );
    assert_eq!(
        load_err(&dir, "file.json"),
        format!(
            "{}: $ref \"file:///etc/passwd\" in file.json cannot be used: file: references are not allowed (file:///etc/passwd); use a path relative to the referring schema",
            path("file.json")
        )
    );
    assert_eq!(
        load_err(&dir, "sub/escape.json"),
        format!(
            "{}: $ref \"../../outside.json\" in sub/escape.json cannot be used: {} is outside the schema directory {}",
            path("sub/escape.json"),
            root.parent().unwrap().join("outside.json").display(),
            root.display()
        )
    );
    assert_eq!(
        load_err(&dir, "missing.json"),
        format!(
            "{}: $ref \"nope.json\" in missing.json cannot be used: no schema file nope.json under {}",
            path("missing.json"),
            root.display()
        )
    );
    assert_eq!(
        load_err(&dir, "pointer.json"),
        format!(
            "{}: $ref \"defs.json#/$defs/x\" in pointer.json points to nothing: /$defs/x does not exist",
            path("pointer.json")
        )
    );
}

#[test]
fn escaping_ref_is_refused_even_when_the_file_exists() {
    let outer = tempfile::tempdir().unwrap();
    write(outer.path(), "outside.json", r#"{"type": "string"}"#);
    let schemas = outer.path().join("schemas");
    write(&schemas, "a.json", r#"{"$ref": "../outside.json"}"#);
    let error = CompiledSchema::load(&schemas, &schemas.join("a.json")).unwrap_err();
    assert!(
        error.message().contains("is outside the schema directory"),
        "{error}"
    );
}

#[test]
fn broken_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "syntax.json", "{\n  \"type\": \"object\",\n}");
    write(
        dir.path(),
        "dup.json",
        r#"{"type": "object", "type": "string"}"#,
    );
    write(dir.path(), "uses.json", r#"{"$ref": "syntax.json"}"#);
    write(dir.path(), "meta.json", r#"{"type": "strin"}"#);
    write(dir.path(), "fine.json", r#"{"type": "string"}"#);
    let path = |name: &str| dir.path().join(name).display().to_string();
    let error = CompiledSchema::load(dir.path(), &dir.path().join("syntax.json")).unwrap_err();
    assert_eq!(error.file(), dir.path().join("syntax.json"));
    assert_eq!(
        error.to_string(),
        format!(
            "{}: is not valid JSON: trailing comma at line 3 column 1",
            path("syntax.json")
        )
    );
    assert_eq!(
        load_err(&dir, "dup.json"),
        format!(
            "{}: is not valid JSON: duplicate key at /type",
            path("dup.json")
        )
    );
    assert_eq!(
        load_err(&dir, "uses.json"),
        format!(
            "{}: $ref \"syntax.json\" in uses.json cannot be used: syntax.json is not valid JSON: trailing comma at line 3 column 1",
            path("uses.json")
        )
    );
    assert!(load_err(&dir, "meta.json")
        .starts_with(&format!("{}: invalid schema at /type: ", path("meta.json"))),);
    // Broken neighbours do not stop a schema that does not use them.
    assert!(CompiledSchema::load(dir.path(), &dir.path().join("fine.json")).is_ok());
    let error = CompiledSchema::load(dir.path(), &dir.path().join("absent.json")).unwrap_err();
    assert!(
        error.message().starts_with("cannot open schema file: "),
        "{error}"
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let other = write(elsewhere.path(), "x.json", "{}");
    let error = CompiledSchema::load(dir.path(), &other).unwrap_err();
    assert!(
        error
            .message()
            .starts_with("is outside the schema directory "),
        "{error}"
    );
}

#[test]
fn pattern_engine_does_not_backtrack() {
    let schema = compile(json!({"properties": {"x": {"type": "string", "pattern": "^(a+)+$"}}}));
    let mut hostile = "a".repeat(100_000);
    hostile.push('!');
    assert_eq!(
        messages(&schema, Location::Body, &json!({ "x": hostile })),
        ["body.x must match the pattern ^(a+)+$"]
    );
}

#[test]
fn patterns_the_linear_engine_cannot_run_are_load_errors() {
    let dir = dir_with(&[("s.json", json!({"pattern": "^(?=a)"}))]);
    assert!(load_err(&dir, "s.json").contains("invalid schema at /pattern"));
}

/// A body number that is not exactly its double is refused where the schema constrains it
/// (a number type, `enum`) and left alone where the schema leaves the value open.
#[test]
fn inexact_numbers_count_only_where_the_schema_constrains_them() {
    let schema = compile(json!({
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 1},
            "e": {"enum": [1, 2]},
            "s": {"type": "string"},
            "free": {}
        }
    }));
    let text = br#"{"n":0.99999999999999999,"e":1.0000000000000001,"s":"x","free":1.0000000000000001,"other":[0.99999999999999999]}"#;
    let parsed = super::parse_request_body(&bytes::Bytes::from_static(text), 64).unwrap();
    assert!(parsed.inexact);
    let mut violations = Vec::new();
    // Judged as the doubles they were read as (1.0), everything passes...
    assert_eq!(
        schema.collect_body_violations(&parsed, &mut violations, 20),
        0
    );
    assert!(violations.is_empty(), "{violations:?}");
    // ...but not as written.
    schema.collect_inexact(text, 64, &mut violations, 20);
    let found: Vec<_> = violations
        .iter()
        .map(|v| (v.pointer.as_str(), v.keyword, v.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (
                "/e",
                "precision",
                "body.e must be a number that round-trips through a 64-bit float"
            ),
            (
                "/n",
                "precision",
                "body.n must be a number that round-trips through a 64-bit float"
            ),
        ]
    );
    // An exact body notes nothing.
    let exact =
        super::parse_request_body(&bytes::Bytes::from_static(br#"{"n":1.0,"x":0.1}"#), 64).unwrap();
    assert!(!exact.inexact);
}
