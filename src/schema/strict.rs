//! Strict mode on bodies (`strict: true`): unknown fields are refused at every depth, not only
//! at the top.
//!
//! Design: a compile-time transform, not a walk of each request. A strict route's body schema
//! is compiled against a copy of its documents in which every object the body can hold (the
//! body itself, each `properties` value, `items`, `prefixItems`, `additionalProperties`, ...)
//! says `unevaluatedProperties: false`. JSON Schema 2020-12 then decides what is unknown,
//! and it sees through `$ref`, `allOf`, `anyOf`, `oneOf` and `if`/`then`/`else` exactly as
//! the specification says: a field of the `oneOf` branch that matched is known, one of a
//! branch that did not is not. Objects are closed only where that can only make the schema
//! stricter: not inside `oneOf`, `not`, `if` or `contains`, where a stricter subschema can
//! make the whole looser (those objects keep the fields the branch allows; the object holding
//! the `oneOf` is still closed). A schema file older than 2019-09 (`draft-07` and before) has
//! no `unevaluatedProperties`: strict mode refuses it at load. A walk of the value against the declared properties would have
//! to re-implement that (which branch matched) or take the union of all branches, which lets
//! through fields of the wrong branch. The copy is made only when some route is strict, so
//! other routes and `responses: report` compile against the documents as written and pay
//! nothing.
//!
//! An object stays open where the schema itself opens it (`additionalProperties` other than
//! `false`, `patternProperties` for the keys they match, its own `unevaluatedProperties`), and
//! where it declares no property at all: `type: object` alone is OpenAPI's free-form object
//! (a map of anything), not an object with no fields.
//!
//! Messages stay ours: the `unevaluatedProperties` errors are worded like every other
//! (`body.customer.nickname is not allowed`). When an object has other errors, a failed
//! branch evaluates nothing, so its declared fields would look unknown; [`Closed`] keeps each
//! closed object's declared names so that those are not reported (fields no branch declares
//! still are).

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value;

use super::message::escape_pointer_segment;

/// How many `$ref`/combinator levels are followed to find an object's declared fields.
const MAX_DEPTH: usize = 32;

/// The objects a transform closed: for each, by `uri#pointer` (pointer not percent-encoded),
/// the field names it declares through any branch.
#[derive(Debug, Default)]
pub(crate) struct Closed {
    declared: HashMap<String, BTreeSet<String>>,
}

impl Closed {
    /// The names the closed object whose `unevaluatedProperties` keyword is at `location`
    /// (an absolute URI with a JSON-pointer fragment) declares.
    pub fn declared_at(&self, location: &str) -> Option<&BTreeSet<String>> {
        let (uri, fragment) = location.split_once('#')?;
        let pointer = percent_encoding::percent_decode_str(fragment).decode_utf8_lossy();
        let node = pointer.strip_suffix("/unevaluatedProperties")?;
        self.declared.get(&format!("{uri}#{node}"))
    }
}

/// Documents by URI, and other names (a top-level `$id`) for some of them.
pub(crate) struct Docs<'d> {
    pub by_uri: &'d mut HashMap<String, Value>,
    pub aliases: &'d HashMap<String, String>,
}

/// Closes every object reachable from `roots` (document URI, JSON pointer of a body schema)
/// in `docs`, and says which names each closed object declares.
pub(crate) fn close(docs: Docs<'_>, roots: &[(String, String)]) -> Closed {
    let mut closed = Closed::default();
    let mut to_close = Vec::new();
    let mut seen: HashSet<(String, String, bool)> = HashSet::new();
    let mut pending: Vec<(String, String, bool)> = roots
        .iter()
        .map(|(uri, pointer)| (uri.clone(), pointer.clone(), true))
        .collect();
    let view = View {
        by_uri: &*docs.by_uri,
        aliases: docs.aliases,
    };
    while let Some((uri, pointer, boundary)) = pending.pop() {
        if !seen.insert((uri.clone(), pointer.clone(), boundary)) {
            continue;
        }
        let Some(Value::Object(node)) = view.node(&uri, &pointer) else {
            continue;
        };
        // The schema's own `additionalProperties` or `unevaluatedProperties` decides there.
        let open = ["unevaluatedProperties", "additionalProperties"]
            .iter()
            .any(|k| node.contains_key(*k));
        if boundary && !open {
            let mut names = BTreeSet::new();
            if view.declares(&uri, &pointer, 0, &mut HashSet::new(), &mut names) {
                closed.declared.insert(format!("{uri}#{pointer}"), names);
                to_close.push((uri.clone(), pointer.clone()));
            }
        }
        let mut referenced = None;
        let mut child = |keys: &[&str], boundary: bool| {
            let mut at = pointer.clone();
            for key in keys {
                at.push('/');
                at.push_str(&escape_pointer_segment(key));
            }
            pending.push((uri.clone(), at, boundary));
        };
        for (keyword, member) in node {
            let keyword = keyword.as_str();
            match (keyword, member) {
                ("properties" | "patternProperties" | "dependentSchemas", Value::Object(map)) => {
                    let boundary = keyword != "dependentSchemas";
                    for name in map.keys() {
                        child(&[keyword, name], boundary);
                    }
                }
                ("prefixItems" | "items", Value::Array(list)) => {
                    for index in 0..list.len() {
                        child(&[keyword, &index.to_string()], true);
                    }
                }
                (
                    "items"
                    | "additionalProperties"
                    | "unevaluatedItems"
                    | "additionalItems"
                    | "unevaluatedProperties",
                    Value::Object(_),
                ) => child(&[keyword], true),
                // Only where a stricter subschema makes the whole schema stricter. Under
                // `oneOf`, `not`, `if` and `contains` (with `maxContains`) it can make it
                // looser: two `oneOf` branches that both matched (a failure) may leave one,
                // a `not` or an `if` may stop matching. Objects there are left as written.
                ("allOf" | "anyOf", Value::Array(list)) => {
                    for index in 0..list.len() {
                        child(&[keyword, &index.to_string()], false);
                    }
                }
                ("then" | "else", Value::Object(_)) => child(&[keyword], false),
                ("$ref", Value::String(reference)) => {
                    referenced = view.resolve(&uri, reference);
                }
                _ => {}
            }
        }
        if let Some((target, fragment)) = referenced {
            pending.push((target, fragment, false));
        }
    }
    for (uri, pointer) in to_close {
        let node = docs
            .by_uri
            .get_mut(&uri)
            .and_then(|doc| doc.pointer_mut(&pointer))
            .and_then(Value::as_object_mut);
        if let Some(node) = node {
            node.insert("unevaluatedProperties".to_string(), Value::Bool(false));
        }
    }
    closed
}

struct View<'d> {
    by_uri: &'d HashMap<String, Value>,
    aliases: &'d HashMap<String, String>,
}

impl View<'_> {
    fn node(&self, uri: &str, pointer: &str) -> Option<&Value> {
        self.by_uri.get(uri)?.pointer(pointer)
    }

    /// A `$ref` written in the document `base`, as (document URI, decoded pointer).
    fn resolve(&self, base: &str, reference: &str) -> Option<(String, String)> {
        let (target, fragment) = super::split_reference(base, reference)?;
        let target = match self.aliases.get(&target) {
            Some(uri) => uri.clone(),
            None => target,
        };
        let pointer = percent_encoding::percent_decode_str(fragment)
            .decode_utf8()
            .ok()?
            .into_owned();
        // Anchors (`#name`) are not followed: the object is then left open, never wrongly
        // closed.
        (pointer.is_empty() || pointer.starts_with('/')).then_some((target, pointer))
    }

    /// Whether the schema at `uri#pointer`, with what it applies in place (`$ref`, `allOf`,
    /// `anyOf`, `oneOf`, `if`/`then`/`else`, `dependentSchemas`), declares fields
    /// (`properties` or `patternProperties`); their names are added to `names`.
    fn declares(
        &self,
        uri: &str,
        pointer: &str,
        depth: usize,
        seen: &mut HashSet<(String, String)>,
        names: &mut BTreeSet<String>,
    ) -> bool {
        if depth > MAX_DEPTH || !seen.insert((uri.to_string(), pointer.to_string())) {
            return false;
        }
        let Some(Value::Object(node)) = self.node(uri, pointer) else {
            return false;
        };
        let mut found = false;
        if let Some(Value::Object(properties)) = node.get("properties") {
            found |= !properties.is_empty();
            names.extend(properties.keys().cloned());
        }
        found |= node.get("patternProperties").is_some_and(Value::is_object);
        let mut inner = |at: String, seen: &mut HashSet<(String, String)>| {
            self.declares(uri, &at, depth + 1, seen, names)
        };
        for keyword in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(list)) = node.get(keyword) {
                for index in 0..list.len() {
                    found |= inner(format!("{pointer}/{keyword}/{index}"), seen);
                }
            }
        }
        for keyword in ["if", "then", "else"] {
            if node.get(keyword).is_some_and(Value::is_object) {
                found |= inner(format!("{pointer}/{keyword}"), seen);
            }
        }
        if let Some(Value::Object(map)) = node.get("dependentSchemas") {
            for name in map.keys() {
                let at = format!(
                    "{pointer}/dependentSchemas/{}",
                    escape_pointer_segment(name)
                );
                found |= inner(at, seen);
            }
        }
        if let Some(Value::String(reference)) = node.get("$ref") {
            if let Some((target, fragment)) = self.resolve(uri, reference) {
                found |= self.declares(&target, &fragment, depth + 1, seen, names);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn closed(schema: Value) -> (Value, Closed) {
        let mut by_uri = HashMap::from([("test:/doc".to_string(), schema)]);
        let aliases = HashMap::new();
        let docs = Docs {
            by_uri: &mut by_uri,
            aliases: &aliases,
        };
        let closed = close(docs, &[("test:/doc".to_string(), String::new())]);
        (by_uri.remove("test:/doc").unwrap_or_default(), closed)
    }

    #[test]
    fn objects_at_every_depth_are_closed_and_components_are_not() {
        let (doc, closed) = closed(json!({
            "$defs": {
                "Item": {"properties": {"sku": {"type": "string"}}},
                "Map": {"type": "object"},
            },
            "properties": {
                "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
                "customer": {"properties": {"name": {}}, "additionalProperties": true},
                "free": {"$ref": "#/$defs/Map"},
                "pet": {"oneOf": [{"properties": {"meow": {}}}, {"properties": {"bark": {}}}]},
            },
        }));
        assert_eq!(doc["unevaluatedProperties"], false);
        assert_eq!(
            doc["properties"]["items"]["items"]["unevaluatedProperties"],
            false
        );
        assert_eq!(doc["properties"]["pet"]["unevaluatedProperties"], false);
        // Components are applied in place; the place that uses them is closed instead.
        assert!(doc["$defs"]["Item"].get("unevaluatedProperties").is_none());
        // Opened by the schema, and free-form: left alone.
        assert!(doc["properties"]["customer"]
            .get("unevaluatedProperties")
            .is_none());
        assert!(doc["properties"]["free"]
            .get("unevaluatedProperties")
            .is_none());
        let names = closed
            .declared_at("test:/doc#/properties/pet/unevaluatedProperties")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            names,
            BTreeSet::from(["bark".to_string(), "meow".to_string()])
        );
        assert!(closed
            .declared_at("test:/doc#/unevaluatedProperties")
            .is_some());
    }

    #[test]
    fn reference_cycles_end() {
        let (doc, _) = closed(json!({
            "$defs": {"Node": {"properties": {"next": {"$ref": "#/$defs/Node"}}}},
            "$ref": "#/$defs/Node",
        }));
        assert_eq!(doc["unevaluatedProperties"], false);
        assert_eq!(
            doc["$defs"]["Node"]["properties"]["next"]["unevaluatedProperties"],
            false
        );
    }
}
