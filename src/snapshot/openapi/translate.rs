//! OpenAPI 3.0 schemas as JSON Schema 2020-12, and the request view of a document.
//!
//! The walk is over the whole document rather than only where schemas sit: each rewrite is
//! triggered by a keyword with a boolean value (`nullable: true`, `exclusiveMinimum: true`,
//! `readOnly: true`), which a non-schema object of an OpenAPI document (a `properties` map,
//! `paths`, `responses`) never holds, since their members are objects.

use serde_json::{json, Value};

/// Every `$ref` string with the JSON pointer of the object holding it.
pub(super) fn collect_refs(value: &Value, pointer: String, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, member) in map {
                match (key.as_str(), member) {
                    ("$ref", Value::String(reference)) => {
                        out.push((pointer.clone(), reference.clone()))
                    }
                    _ => collect_refs(member, format!("{pointer}/{}", super::escape(key)), out),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_refs(item, format!("{pointer}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Rewrites 3.0 keywords as 2020-12 says them, everywhere in `value`:
/// - `nullable: true` adds `null` to `type` (and to `enum`); without `type` (beside `allOf`,
///   `$ref`, ...) the schema becomes `anyOf: [<schema>, {type: null}]`;
/// - `exclusiveMinimum: true` with `minimum: n` becomes `exclusiveMinimum: n` (and the same for
///   maximum); `false` is dropped;
/// - a `$ref`'s sibling keywords are dropped (3.0 ignores them).
///
/// `x-` keywords need nothing: 2020-12 ignores unknown keywords, and `discriminator` is one.
pub(super) fn from_30(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for member in map.values_mut() {
                from_30(member);
            }
            if map.get("$ref").is_some_and(Value::is_string) && map.len() > 1 {
                map.retain(|k, _| k == "$ref");
                return;
            }
            for (flag, bound) in [
                ("exclusiveMinimum", "minimum"),
                ("exclusiveMaximum", "maximum"),
            ] {
                if let Some(Value::Bool(exclusive)) = map.get(flag) {
                    let exclusive = *exclusive;
                    map.remove(flag);
                    if exclusive {
                        if let Some(limit) = map.remove(bound) {
                            map.insert(flag.to_string(), limit);
                        }
                    }
                }
            }
            if let Some(Value::Bool(nullable)) = map.get("nullable") {
                let nullable = *nullable;
                map.remove("nullable");
                if !nullable {
                    return;
                }
                if let Some(Value::Array(options)) = map.get_mut("enum") {
                    if !options.contains(&Value::Null) {
                        options.push(Value::Null);
                    }
                }
                match map.get_mut("type") {
                    Some(Value::String(name)) => {
                        let name = std::mem::take(name);
                        map.insert("type".to_string(), json!([name, "null"]));
                    }
                    Some(Value::Array(names)) => {
                        if !names.contains(&json!("null")) {
                            names.push(json!("null"));
                        }
                    }
                    _ => {
                        let inner = Value::Object(std::mem::take(map));
                        map.insert("anyOf".to_string(), json!([inner, { "type": "null" }]));
                    }
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(from_30),
        _ => {}
    }
}

/// Properties marked `readOnly` are not required in requests (the server sets them).
pub(super) fn read_only_not_required(value: &mut Value) {
    not_required(value, "readOnly");
}

/// Properties marked `writeOnly` are not required in responses (the mirror of `readOnly`).
pub(super) fn write_only_not_required(value: &mut Value) {
    not_required(value, "writeOnly");
}

/// Removes from every `required` the properties beside it marked `keyword: true`.
fn not_required(value: &mut Value, keyword: &str) {
    match value {
        Value::Object(map) => {
            let marked: Vec<String> = match map.get("properties") {
                Some(Value::Object(properties)) => properties
                    .iter()
                    .filter(|(_, p)| p.get(keyword) == Some(&Value::Bool(true)))
                    .map(|(name, _)| name.clone())
                    .collect(),
                _ => Vec::new(),
            };
            if !marked.is_empty() {
                if let Some(Value::Array(required)) = map.get_mut("required") {
                    required.retain(|r| !r.as_str().is_some_and(|r| marked.iter().any(|n| n == r)));
                }
            }
            map.values_mut().for_each(|v| not_required(v, keyword));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| not_required(v, keyword)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nullable_adds_null_to_type_and_enum() {
        let mut schema = json!({"type": "string", "enum": ["a"], "nullable": true});
        from_30(&mut schema);
        assert_eq!(
            schema,
            json!({"type": ["string", "null"], "enum": ["a", null]})
        );
    }

    #[test]
    fn nullable_without_type_becomes_any_of() {
        let mut schema = json!({"allOf": [{"$ref": "#/x"}], "nullable": true});
        from_30(&mut schema);
        assert_eq!(
            schema,
            json!({"anyOf": [{"allOf": [{"$ref": "#/x"}]}, {"type": "null"}]})
        );
    }

    #[test]
    fn boolean_exclusive_bounds_become_numbers() {
        let mut schema = json!({"minimum": 1, "exclusiveMinimum": true, "maximum": 5, "exclusiveMaximum": false});
        from_30(&mut schema);
        assert_eq!(schema, json!({"exclusiveMinimum": 1, "maximum": 5}));
    }

    #[test]
    fn ref_siblings_are_dropped_and_properties_named_like_keywords_kept() {
        let mut schema = json!({"properties": {"nullable": {"type": "boolean"}, "a": {"$ref": "#/b", "description": "d"}}});
        from_30(&mut schema);
        assert_eq!(
            schema,
            json!({"properties": {"nullable": {"type": "boolean"}, "a": {"$ref": "#/b"}}})
        );
    }

    #[test]
    fn read_only_properties_are_not_required() {
        let mut schema = json!({"required": ["id", "name"], "properties": {"id": {"readOnly": true}, "name": {}}});
        read_only_not_required(&mut schema);
        assert_eq!(schema["required"], json!(["name"]));
    }
}
