//! Turning wire strings (query, headers, path parameters, cookies) into the JSON the schema
//! expects. A `deepObject` query parameter (`filter[limit]=5`) becomes one object whose values
//! are coerced by its own properties' types; only plans with one look at such keys. So does an
//! object parameter in OpenAPI's default `form` style, whose properties are query keys of
//! their own (`?status=open&limit=5`: the keys it declares, or with `additionalProperties`
//! every key nothing else names; for a cookie object, the cookies it declares), and one without
//! explode (`filter=status,open,limit,5`, a cookie `prefs=theme,dark`, a header or path
//! parameter in `simple` style, `size,10` or exploded `size=10`).
//!
//! At load, [`Plan::build`] reads which JSON types each top-level property of the schema allows.
//! It follows `type` (a string or an array), `const` and `enum` values when there is no `type`,
//! `$ref` (to the schema files of the directory, by JSON pointer), and the members of `allOf`, `anyOf`
//! and `oneOf`, taking the union of what it finds. The union is deliberately permissive: it
//! only decides how a string is *read*; the schema still decides whether the result is valid.
//! A property with no type information at all stays a string.
//!
//! Per value, the order of preference is: null (for an empty value or `null`), boolean
//! (`true`/`false`), number (JSON number syntax; `1.0` is a number the schema treats as an
//! integer), object or array (JSON text), and finally the string as sent. Anything that does not
//! coerce stays a string, so the schema reports the type error. A number that is not exactly
//! the double it is read as (`0.99999999999999999`, see [`super::number`]) is a violation
//! (`precision`), as a body's would be a 400.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

use super::number::{self, NumberProblem};
use super::tree::Field as FieldValue;
use super::{json, Location, Violation};

/// Request fields coerced by a schema's types, keyed by the schema's own names (which they
/// borrow): an object for the validator (`tree::Node::Fields`) with no key copied, and the
/// values the schema takes as strings borrowed from the request.
#[derive(Debug)]
pub struct Fields<'a>(pub Vec<(&'a str, FieldValue<'a>)>);

impl Fields<'_> {
    /// The same object as a `Value`.
    pub fn to_value(&self) -> Value {
        super::tree::fields_value(&self.0)
    }
}

/// How deep JSON text in a query or header value may nest. Such values are small filters and
/// sort orders; the limit only keeps a hostile value cheap.
const VALUE_JSON_MAX_DEPTH: usize = 32;

/// How many `$ref`/combinator levels the plan follows before giving up on a property: enough
/// for any sane schema, and a stop for reference cycles.
const MAX_PLAN_DEPTH: usize = 16;

/// Finds what a `$ref` points to, for the plan only: `base` is the URI of the document holding
/// the reference; the answer is the target's document URI (the base for references inside it)
/// and the target itself. `None` when it cannot be found; the validator, which resolves
/// references fully, has already refused the schema in that case.
pub(crate) trait Resolve {
    fn resolve(&self, base: &str, reference: &str) -> Option<(String, &Value)>;
}

/// A set of JSON types, as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Types(u8);

impl Types {
    pub const NULL: Types = Types(1);
    pub const BOOLEAN: Types = Types(1 << 1);
    pub const INTEGER: Types = Types(1 << 2);
    pub const NUMBER: Types = Types(1 << 3);
    pub const STRING: Types = Types(1 << 4);
    pub const ARRAY: Types = Types(1 << 5);
    pub const OBJECT: Types = Types(1 << 6);

    fn has(self, other: Types) -> bool {
        self.0 & other.0 != 0
    }

    fn union(self, other: Types) -> Types {
        Types(self.0 | other.0)
    }

    fn without(self, other: Types) -> Types {
        Types(self.0 & !other.0)
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether a single value is taken as the text it is (`coerce` turns it into nothing else).
    fn is_string_only(self) -> bool {
        self.0 == Types::STRING.0 || self.is_empty()
    }

    fn named(name: &str) -> Types {
        match name {
            "null" => Types::NULL,
            "boolean" => Types::BOOLEAN,
            "integer" => Types::INTEGER,
            "number" => Types::NUMBER,
            "string" => Types::STRING,
            "array" => Types::ARRAY,
            "object" => Types::OBJECT,
            _ => Types::default(),
        }
    }

    fn of_value(value: &Value) -> Types {
        match value {
            Value::Null => Types::NULL,
            Value::Bool(_) => Types::BOOLEAN,
            Value::Number(_) => Types::NUMBER,
            Value::String(_) => Types::STRING,
            Value::Array(_) => Types::ARRAY,
            Value::Object(_) => Types::OBJECT,
        }
    }
}

/// What a property accepts: its own types and, when it may be an array, its items' types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Shape {
    pub types: Types,
    pub items: Types,
}

impl Shape {
    fn union(self, other: Shape) -> Shape {
        Shape {
            types: self.types.union(other.types),
            items: self.items.union(other.items),
        }
    }
}

/// A property the schema names, with the header name it matches when used for headers.
#[derive(Debug, Clone)]
struct Property {
    shape: Shape,
    /// `None` when the name is not a valid HTTP field name: such a property can never be
    /// present in headers.
    header: Option<http::HeaderName>,
    /// For a list sent in one value (`a,b,c`: OpenAPI's `simple`, `form` without explode,
    /// `pipeDelimited`, `spaceDelimited`), the character between items.
    delimiter: Option<char>,
    /// For an object sent as `name[key]=value` pairs (OpenAPI's `deepObject`), the plan of
    /// the object's own properties.
    deep: Option<Box<Plan>>,
    /// For an object sent as `key,value` pairs in one value (OpenAPI's `form` without
    /// explode: `filter=status,open,limit,5`), the plan of the object's own properties.
    pairs: Option<Box<Plan>>,
    /// With `pairs`: the pairs are written `key=value,key=value` (OpenAPI's `simple` with
    /// explode) rather than `key,value,key,value`.
    assigned: bool,
    /// With `pairs`: the character between items (`,`; `|` and ` ` for `pipeDelimited` and
    /// `spaceDelimited`).
    pair_delimiter: char,
    /// A path parameter in OpenAPI's `label` or `matrix` style: its prefix is taken off, and
    /// its list or object spelled as `simple`'s, before the value is read.
    path_style: Option<PathStyle>,
}

/// OpenAPI's path styles besides `simple`, with their `explode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathStyle {
    /// `.5`, `.3,4,5` (`.3.4.5` exploded), `.role,admin` (`.role=admin.id=7` exploded).
    Label { explode: bool },
    /// `;id=5`, `;id=3,4,5` (`;id=3;id=4;id=5` exploded), `;who=role,admin`
    /// (`;role=admin;id=7` exploded).
    Matrix { explode: bool },
}

impl PathStyle {
    /// The value of parameter `name` as `simple` spells it: `3,4,5` for a list,
    /// `role,admin,id,7` (or, exploded, `role=admin,id=7`) for an object. A value without
    /// the style's prefix is read as it is.
    fn to_simple(self, name: &str, value: &str, list: bool, object: bool) -> String {
        match self {
            PathStyle::Label { explode } => {
                let rest = value.strip_prefix('.').unwrap_or(value);
                if explode && (list || object) {
                    rest.replace('.', ",")
                } else {
                    rest.to_string()
                }
            }
            PathStyle::Matrix { explode } if explode && object => value
                .split(';')
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join(","),
            PathStyle::Matrix { explode } if explode && list => value
                .split(';')
                .filter(|part| !part.is_empty())
                .map(|part| {
                    part.strip_prefix(name)
                        .and_then(|r| r.strip_prefix('='))
                        .unwrap_or(part)
                })
                .collect::<Vec<_>>()
                .join(","),
            PathStyle::Matrix { .. } => value
                .strip_prefix(';')
                .and_then(|r| r.strip_prefix(name))
                .map(|r| r.strip_prefix('=').unwrap_or(r))
                .unwrap_or(value)
                .to_string(),
        }
    }
}

/// An object parameter whose properties arrive as query keys of their own (OpenAPI's `form`
/// with explode, the default: `?status=open&limit=5` for `filter`).
#[derive(Debug, Clone)]
struct Exploded {
    name: String,
    plan: Plan,
    /// Whether it also takes the keys no other parameter names (its schema allows more
    /// properties than it declares, or declares none).
    rest: bool,
}

/// How a parameter's value is spelled on the wire, beside one value per key.
#[derive(Debug, Clone)]
pub enum Decode {
    /// A list in one value, items separated by this character (`a,b,c`).
    Delimited(char),
    /// An object as `name[key]=value` query pairs (OpenAPI `style: deepObject`).
    DeepObject,
    /// An object whose properties are query keys, or cookies, of their own (OpenAPI
    /// `style: form`, `explode: true`): `?status=open&limit=5`, `Cookie: theme=dark; size=2`.
    /// The location says which.
    Exploded(Location),
    /// An object as `key,value` pairs in one value (OpenAPI `style: form`, `explode: false`,
    /// and `simple`): `filter=status,open,limit,5`, a cookie `c=a,1,b,2`, a header
    /// `X-Page: size,10,from,2`; `assigned`: `key=value` pairs (`simple` with explode,
    /// `X-Page: size=10,from=2`).
    Pairs { assigned: bool, delimiter: char },
    /// A path parameter in `label` or `matrix` style (beside its list or pairs decoding).
    Path(PathStyle),
}

/// The coercion plan of one schema: its top-level properties by name, in the schema's spelling.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    properties: BTreeMap<String, Property>,
    /// Whether some property is a `deepObject`: only then are `a[b]` keys looked into, so
    /// that other queries pay nothing for it.
    deep: bool,
    /// Object parameters exploded into query keys; empty for nearly every plan, which then
    /// pays nothing for them.
    exploded: Vec<Exploded>,
    /// When the schema allows properties beyond those it declares (an `additionalProperties`
    /// other than `false`, somewhere it applies in place): what their values are read as.
    /// Used only for an exploded object's own keys, which are all its.
    others: Option<Shape>,
}

/// One raw value from the wire. `opaque` marks a header value that is not visible ASCII: it is
/// kept as (lossy) text and never coerced, so it can only ever validate as a string.
struct Raw<'a> {
    text: Cow<'a, str>,
    opaque: bool,
}

impl Plan {
    /// Reads the property types of `schema`, whose URI is `base`.
    pub fn build(schema: &Value, base: &str, resolver: &impl Resolve) -> Plan {
        let mut found = BTreeMap::new();
        let ctx = Ctx { base, resolver };
        collect_properties(schema, &ctx, 0, &mut found);
        let others = allows_more(schema, &ctx, 0);
        let properties = found
            .into_iter()
            .map(|(name, shape)| {
                let header = http::HeaderName::from_bytes(name.as_bytes()).ok();
                (
                    name,
                    Property {
                        shape,
                        header,
                        delimiter: None,
                        deep: None,
                        pairs: None,
                        assigned: false,
                        pair_delimiter: ',',
                        path_style: None,
                    },
                )
            })
            .collect();
        Plan {
            properties,
            deep: false,
            exploded: Vec::new(),
            others,
        }
    }

    /// Reads path parameter `name` in `style` (its prefix taken off before anything else).
    pub fn set_path_style(&mut self, name: &str, style: PathStyle) {
        if let Some(property) = self.properties.get_mut(name) {
            property.path_style = Some(style);
        }
    }

    /// Reads `name`'s value from `key,value` pairs in one string (`key=value` ones when
    /// `assigned`), each value coerced by `nested` (the plan of the object's own properties).
    pub fn set_pairs(&mut self, name: &str, nested: Plan, assigned: bool, delimiter: char) {
        if let Some(property) = self.properties.get_mut(name) {
            property.pairs = Some(Box::new(nested));
            property.assigned = assigned;
            property.pair_delimiter = delimiter;
        }
    }

    /// Assembles `name` from the query keys (or cookies) that are `nested`'s properties (and,
    /// for a query, when its schema allows more than it declares or declares nothing, from
    /// every key nothing else names). Fails when a key could belong to two parameters, and
    /// for a cookie object that would take undeclared cookies (every cookie of the site).
    pub fn set_exploded(
        &mut self,
        name: &str,
        nested: Plan,
        location: Location,
    ) -> Result<(), String> {
        let rest = nested.others.is_some() || nested.properties.is_empty();
        let (key_word, what) = match location {
            Location::Cookie => ("cookie", "cookies"),
            _ => ("query key", "query keys"),
        };
        if rest && location == Location::Cookie {
            return Err(format!(
                "object cookie parameter {name:?} (style form, explode: true) would take every cookie it does not declare (`additionalProperties`, or no `properties`), and browsers send many: declare its properties, and no others"
            ));
        }
        for key in nested.properties.keys() {
            if self.properties.contains_key(key) {
                return Err(format!(
                    "the {key_word} {key:?} would be both parameter {key:?} and a property of object parameter {name:?} (style form, explode: true)"
                ));
            }
            if let Some(other) = self
                .exploded
                .iter()
                .find(|e| e.plan.properties.contains_key(key))
            {
                return Err(format!(
                    "object parameters {:?} and {name:?} (style form, explode: true) both have a property {key:?}: a {key_word} {key:?} cannot be assigned to one of them",
                    other.name
                ));
            }
        }
        if let Some(other) = self.exploded.iter().find(|e| e.rest).filter(|_| rest) {
            return Err(format!(
                "object parameters {:?} and {name:?} (style form, explode: true) both take {what} they do not declare (`additionalProperties`, or no `properties`): such a key cannot be assigned to one of them",
                other.name
            ));
        }
        self.exploded.push(Exploded {
            name: name.to_string(),
            plan: nested,
            rest,
        });
        Ok(())
    }

    /// A violation found in an exploded object parameter named as its query key (or cookie)
    /// was sent: `query.filter.limit` becomes `query.limit` (the client sent `?limit=`).
    pub fn unexplode(&self, violation: &mut Violation) {
        if self.exploded.is_empty() {
            return;
        }
        let location = violation.location;
        for exploded in &self.exploded {
            let segment = super::message::escape_pointer_segment(&exploded.name);
            let head = format!("/{segment}");
            let Some(rest) = violation.pointer.strip_prefix(&head) else {
                continue;
            };
            if !rest.starts_with('/') {
                continue;
            }
            violation.pointer = rest.to_string();
            let named = super::message::field(location, &head, None);
            let label = super::message::field_label(location, &head, |_| true);
            for (text, prefix) in [
                (&mut violation.message, named),
                (&mut violation.field, label),
            ] {
                if let Some(tail) = text.strip_prefix(&prefix) {
                    *text = format!("{}{tail}", location.as_str());
                }
            }
            return;
        }
    }

    /// Reads `name`'s value from `name[key]=value` pairs, each key's value coerced by
    /// `nested` (the plan of the object's own properties).
    pub fn set_deep(&mut self, name: &str, nested: Plan) {
        if let Some(property) = self.properties.get_mut(name) {
            property.deep = Some(Box::new(nested));
            self.deep = true;
        }
    }

    /// Makes `name`'s values lists in one string, items separated by `delimiter`, when its
    /// schema allows an array.
    pub fn set_delimiter(&mut self, name: &str, delimiter: char) {
        if let Some(property) = self.properties.get_mut(name) {
            if property.shape.types.has(Types::ARRAY) {
                property.delimiter = Some(delimiter);
            }
        }
    }

    /// Whether the schema names `name` as a top-level property (`headers`: case-insensitive).
    pub fn names(&self, name: &str, headers: bool) -> bool {
        if headers {
            self.properties.values().any(|p| {
                p.header
                    .as_ref()
                    .is_some_and(|h| h.as_str().eq_ignore_ascii_case(name))
            })
        } else {
            self.properties.contains_key(name)
                || (self.deep && deep_key(name).is_some_and(|(n, _)| self.deep_plan(n).is_some()))
                || self
                    .exploded
                    .iter()
                    .any(|e| e.rest || e.plan.properties.contains_key(name))
        }
    }

    fn deep_plan(&self, name: &str) -> Option<&Plan> {
        self.properties.get(name)?.deep.as_deref()
    }

    /// The object for a raw query string (`a=1&b=x+y`, undecoded).
    pub fn query(&self, raw: Option<&str>) -> (Value, Vec<Violation>) {
        let mut grouped: BTreeMap<Cow<'_, str>, Vec<Raw<'_>>> = BTreeMap::new();
        for pair in raw.unwrap_or_default().split('&') {
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            grouped.entry(form_decode(key)).or_default().push(Raw {
                text: form_decode(value),
                opaque: false,
            });
        }
        let exploded = self.take_exploded(&mut grouped);
        if !self.deep && exploded.is_empty() {
            return self.object(Location::Query, grouped);
        }
        // `deepObject`: `filter[status]=open` goes into `filter` as `status`.
        let mut nested: BTreeMap<String, BTreeMap<Cow<'_, str>, Vec<Raw<'_>>>> = BTreeMap::new();
        grouped.retain(|key, values| {
            let Some((name, inner)) = deep_key(key) else {
                return true;
            };
            if self.deep_plan(name).is_none() {
                return true;
            }
            nested
                .entry(name.to_string())
                .or_default()
                .insert(Cow::Owned(inner.to_string()), std::mem::take(values));
            false
        });
        let (mut value, mut violations) = self.object(Location::Query, grouped);
        for (name, pairs) in nested {
            let Some(plan) = self.deep_plan(&name) else {
                continue;
            };
            let (inner, found) = plan.object(Location::Query, pairs);
            violations.extend(found.into_iter().map(|v| nest(&name, v)));
            if let Value::Object(object) = &mut value {
                // A plain `filter=...` beside `filter[...]` pairs gives way to the pairs.
                object.insert(name, inner);
            }
        }
        self.insert_exploded(Location::Query, exploded, &mut value, &mut violations);
        (value, violations)
    }

    /// Puts each exploded object parameter that has keys in `groups` (as `take_exploded`
    /// returns them) into `value`.
    fn insert_exploded(
        &self,
        location: Location,
        groups: Vec<BTreeMap<Cow<'_, str>, Vec<Raw<'_>>>>,
        value: &mut Value,
        violations: &mut Vec<Violation>,
    ) {
        for (exploded, pairs) in self.exploded.iter().zip(groups) {
            if pairs.is_empty() {
                continue;
            }
            // Problems are named by the keys as sent (`query.limit`); keys it does not declare
            // are read by its `additionalProperties`.
            let (inner, found) = exploded.plan.object_with(location, pairs, true);
            violations.extend(found);
            if let Value::Object(object) = value {
                object.insert(exploded.name.clone(), inner);
            }
        }
    }

    /// Takes the keys of exploded object parameters out of `grouped`: one group per
    /// parameter, in the order of `self.exploded` (all empty when there are none).
    #[allow(clippy::type_complexity)]
    fn take_exploded<'q>(
        &self,
        grouped: &mut BTreeMap<Cow<'q, str>, Vec<Raw<'q>>>,
    ) -> Vec<BTreeMap<Cow<'q, str>, Vec<Raw<'q>>>> {
        if self.exploded.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<BTreeMap<Cow<'q, str>, Vec<Raw<'q>>>> =
            self.exploded.iter().map(|_| BTreeMap::new()).collect();
        let rest = self.exploded.iter().position(|e| e.rest);
        let keys: Vec<Cow<'q, str>> = grouped.keys().cloned().collect();
        for key in keys {
            let owner = self
                .exploded
                .iter()
                .position(|e| e.plan.properties.contains_key(key.as_ref()))
                .or_else(|| {
                    let other = self.properties.contains_key(key.as_ref())
                        || (self.deep
                            && deep_key(&key).is_some_and(|(n, _)| self.deep_plan(n).is_some()));
                    rest.filter(|_| !other)
                });
            let Some(owner) = owner else {
                continue;
            };
            let Some(values) = grouped.remove(&key) else {
                continue;
            };
            if let Some(group) = out.get_mut(owner) {
                group.insert(key, values);
            }
        }
        out
    }

    /// The object for `Cookie` headers (`a=1; b=2`, RFC 6265): only the cookies the schema
    /// names (browsers send many others), values percent-decoded and coerced like query
    /// values. A cookie sent twice counts as a repeated key.
    pub fn cookies(&self, headers: &http::HeaderMap) -> (Value, Vec<Violation>) {
        let mut grouped: BTreeMap<Cow<'_, str>, Vec<Raw<'_>>> = BTreeMap::new();
        for line in headers.get_all(http::header::COOKIE) {
            match line.to_str() {
                Ok(line) => {
                    for (name, value) in self.cookie_pairs(line) {
                        grouped.entry(Cow::Borrowed(name)).or_default().push(Raw {
                            text: percent_encoding::percent_decode_str(value).decode_utf8_lossy(),
                            opaque: false,
                        });
                    }
                }
                // Not visible ASCII: the cookies it names are kept as lossy text, never
                // coerced (as such header values are).
                Err(_) => {
                    let line = String::from_utf8_lossy(line.as_bytes());
                    for (name, value) in self.cookie_pairs(&line) {
                        let key = Cow::Owned(name.to_string());
                        grouped.entry(key).or_default().push(Raw {
                            text: Cow::Owned(value.to_string()),
                            opaque: true,
                        });
                    }
                }
            }
        }
        if self.exploded.is_empty() {
            return self.object(Location::Cookie, grouped);
        }
        let exploded = self.take_exploded(&mut grouped);
        let (mut value, mut violations) = self.object(Location::Cookie, grouped);
        self.insert_exploded(Location::Cookie, exploded, &mut value, &mut violations);
        (value, violations)
    }

    /// The (name, value) pairs of one `Cookie` line whose names the schema has, values
    /// unquoted.
    fn cookie_pairs<'l>(&'l self, line: &'l str) -> impl Iterator<Item = (&'l str, &'l str)> {
        line.split(';').filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = name.trim();
            let exploded = || {
                self.exploded
                    .iter()
                    .any(|e| e.plan.properties.contains_key(name))
            };
            if !self.properties.contains_key(name) && !exploded() {
                return None;
            }
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            Some((name, value))
        })
    }

    /// The object for path parameters, already percent-decoded by the router.
    pub fn params<'a>(
        &self,
        location: Location,
        pairs: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> (Value, Vec<Violation>) {
        let mut grouped: BTreeMap<Cow<'_, str>, Vec<Raw<'_>>> = BTreeMap::new();
        for (key, value) in pairs {
            let property = self.properties.get(key);
            let text = match property.and_then(|p| Some((p, p.path_style?))) {
                Some((p, style)) => {
                    let (list, object) = (p.delimiter.is_some(), p.pairs.is_some());
                    Cow::Owned(style.to_simple(key, value, list, object))
                }
                None => Cow::Borrowed(value),
            };
            grouped.entry(Cow::Borrowed(key)).or_default().push(Raw {
                text,
                opaque: false,
            });
        }
        self.object(location, grouped)
    }

    /// The object for headers: only the headers the schema names, under the schema's spelling.
    pub fn headers<'a>(&'a self, headers: &'a http::HeaderMap) -> (Fields<'a>, Vec<Violation>) {
        let mut object = Vec::new();
        let mut violations = Vec::new();
        for (name, property) in &self.properties {
            let Some(header) = &property.header else {
                continue;
            };
            let mut lines = headers
                .get_all(header)
                .iter()
                .map(|value| match value.to_str() {
                    Ok(text) => Raw {
                        text: Cow::Borrowed(text),
                        opaque: false,
                    },
                    Err(_) => Raw {
                        text: String::from_utf8_lossy(value.as_bytes()),
                        opaque: true,
                    },
                });
            let Some(first) = lines.next() else {
                continue;
            };
            let shape = Some(property.shape);
            if let Some(nested) = property.pairs.as_deref() {
                let all: Vec<Raw<'_>> = std::iter::once(first).chain(lines).collect();
                let spelling = (property.assigned, property.pair_delimiter);
                let found = &mut violations;
                let value = pairs_value(Location::Header, name, nested, spelling, &all, found);
                object.push((name.as_str(), FieldValue::Value(value)));
                continue;
            }
            if let Some(delimiter) = property.delimiter {
                let all: Vec<Raw<'_>> = split(std::iter::once(first).chain(lines), delimiter);
                let value = property_value(Location::Header, name, shape, &all, &mut violations);
                object.push((name.as_str(), FieldValue::Value(value)));
                continue;
            }
            // Nearly always one line: the list is only gathered when there are more.
            let value = match lines.next() {
                // Taken as a string, the text as sent is the value: borrowed, not copied.
                None if !first.opaque && property.shape.types.is_string_only() => {
                    match first.text {
                        Cow::Borrowed(text) => FieldValue::Str(text),
                        Cow::Owned(text) => FieldValue::Value(Value::String(text)),
                    }
                }
                None => {
                    let one = std::slice::from_ref(&first);
                    FieldValue::Value(property_value(
                        Location::Header,
                        name,
                        shape,
                        one,
                        &mut violations,
                    ))
                }
                Some(second) => {
                    let all: Vec<Raw<'_>> = [first, second].into_iter().chain(lines).collect();
                    FieldValue::Value(property_value(
                        Location::Header,
                        name,
                        shape,
                        &all,
                        &mut violations,
                    ))
                }
            };
            object.push((name.as_str(), value));
        }
        (Fields(object), violations)
    }

    fn object(
        &self,
        location: Location,
        grouped: BTreeMap<Cow<'_, str>, Vec<Raw<'_>>>,
    ) -> (Value, Vec<Violation>) {
        self.object_with(location, grouped, false)
    }

    /// The object for `grouped` keys; with `others`, keys the schema does not name are read
    /// by its `additionalProperties` (else they stay strings).
    fn object_with(
        &self,
        location: Location,
        grouped: BTreeMap<Cow<'_, str>, Vec<Raw<'_>>>,
        others: bool,
    ) -> (Value, Vec<Violation>) {
        let mut object = Map::new();
        let mut violations = Vec::new();
        for (key, values) in grouped {
            let property = self.properties.get(key.as_ref());
            let shape = match property {
                Some(property) => Some(property.shape),
                None => self.others.filter(|_| others),
            };
            if let Some((nested, spelling)) =
                property.and_then(|p| Some((p.pairs.as_deref()?, (p.assigned, p.pair_delimiter))))
            {
                let value = pairs_value(location, &key, nested, spelling, &values, &mut violations);
                object.insert(key.into_owned(), value);
                continue;
            }
            let value = match property.and_then(|p| p.delimiter) {
                Some(delimiter) => {
                    let all = split(values.into_iter(), delimiter);
                    property_value(location, &key, shape, &all, &mut violations)
                }
                None => property_value(location, &key, shape, &values, &mut violations),
            };
            object.insert(key.into_owned(), value);
        }
        (Value::Object(object), violations)
    }
}

/// The object for `key,value` pairs in one value (`status,open,limit,5`; `key=value` ones,
/// `status=open,limit=5`, when `assigned`), each value coerced by `nested`; problems inside it
/// are placed under `key` (`query.filter.limit`). An odd number of items (an item without
/// `=`) is not such an object: it stays the string sent, for the schema to refuse.
fn pairs_value(
    location: Location,
    key: &str,
    nested: &Plan,
    (assigned, delimiter): (bool, char),
    values: &[Raw<'_>],
    violations: &mut Vec<Violation>,
) -> Value {
    if values.len() > 1 {
        violations.push(repeated(location, key));
    }
    let Some(first) = values.first() else {
        return Value::Null;
    };
    if first.opaque {
        return Value::String(first.text.to_string());
    }
    // JSON text, as every object-typed value may be sent (and as `schemagate openapi` writes
    // such parameters back).
    if first.text.starts_with('{') {
        if let Ok(object @ Value::Object(_)) = json::parse_str(&first.text, VALUE_JSON_MAX_DEPTH) {
            return object;
        }
    }
    let items: Vec<&str> = first.text.split(delimiter).collect();
    let pairs: Option<Vec<(&str, &str)>> = if first.text.is_empty() {
        None
    } else if assigned {
        items.iter().map(|item| item.split_once('=')).collect()
    } else if items.len() % 2 == 0 {
        Some(
            items
                .chunks(2)
                .filter_map(|p| Some((*p.first()?, *p.get(1)?)))
                .collect(),
        )
    } else {
        None
    };
    let Some(pairs) = pairs else {
        return Value::String(first.text.to_string());
    };
    let mut grouped: BTreeMap<Cow<'_, str>, Vec<Raw<'_>>> = BTreeMap::new();
    for (name, value) in pairs {
        grouped.entry(Cow::Borrowed(name)).or_default().push(Raw {
            text: Cow::Borrowed(value),
            opaque: false,
        });
    }
    let (value, found) = nested.object(location, grouped);
    violations.extend(found.into_iter().map(|v| nest(key, v)));
    value
}

/// `query.x must not be repeated`: a key sent more than once where the schema does not say
/// array.
fn repeated(location: Location, key: &str) -> Violation {
    let pointer = format!("/{}", super::message::escape_pointer_segment(key));
    Violation {
        location,
        message: format!(
            "{} must not be repeated",
            super::message::field(location, &pointer, None)
        ),
        // The key is one of the schema's properties (unnamed keys are not coerced).
        field: super::message::field_label(location, &pointer, |_| true),
        pointer,
        keyword: "repeated",
    }
}

/// `name[key]` split into `name` and `key`.
fn deep_key(key: &str) -> Option<(&str, &str)> {
    let (name, rest) = key.split_once('[')?;
    Some((name, rest.strip_suffix(']')?))
}

/// A violation found inside the deep object `name`, placed under it: `query.limit` becomes
/// `query.filter.limit`.
fn nest(name: &str, mut violation: Violation) -> Violation {
    let location = violation.location.as_str();
    let segment = super::message::escape_pointer_segment(name);
    violation.pointer = format!("/{segment}{}", violation.pointer);
    let head = super::message::field(violation.location, &format!("/{segment}"), None);
    for text in [&mut violation.message, &mut violation.field] {
        if let Some(rest) = text.strip_prefix(location) {
            *text = format!("{head}{rest}");
        }
    }
    violation
}

/// Each value split at `delimiter` into items (an opaque header value stays whole).
fn split<'a>(values: impl Iterator<Item = Raw<'a>>, delimiter: char) -> Vec<Raw<'a>> {
    let mut out = Vec::new();
    for raw in values {
        if raw.opaque || !raw.text.contains(delimiter) {
            out.push(raw);
            continue;
        }
        for item in raw.text.split(delimiter) {
            out.push(Raw {
                text: Cow::Owned(item.to_string()),
                opaque: false,
            });
        }
    }
    out
}

/// The JSON value of one key from all its occurrences (`values` is never empty).
fn property_value(
    location: Location,
    key: &str,
    shape: Option<Shape>,
    values: &[Raw<'_>],
    violations: &mut Vec<Violation>,
) -> Value {
    // A key the schema does not name is kept as sent, so that a strict schema
    // (`additionalProperties: false`) can reject it; repeating it is not this stage's business.
    let Some(shape) = shape else {
        if let [single] = values {
            return Value::String(single.text.to_string());
        }
        return Value::Array(
            values
                .iter()
                .map(|raw| Value::String(raw.text.to_string()))
                .collect(),
        );
    };
    let at = |index: Option<usize>| Field {
        location,
        key,
        index,
    };
    if shape.types.has(Types::ARRAY) {
        if let [single] = values {
            // A scalar type listed beside `array` takes a single occurrence as itself.
            let scalar = shape.types.without(Types::ARRAY);
            if !scalar.is_empty() {
                let value = coerce(single, scalar);
                if scalar.has(Types::STRING) || !value.is_string() {
                    at(None).check_number(single, &value, violations);
                    return value;
                }
            }
            // An array of objects (or of arrays) may come as one JSON text: `sort=[{...}]`.
            if shape.items.has(Types::OBJECT.union(Types::ARRAY))
                && !single.opaque
                && single.text.starts_with('[')
            {
                if let Ok(array @ Value::Array(_)) =
                    json::parse_str(&single.text, VALUE_JSON_MAX_DEPTH)
                {
                    return array;
                }
            }
        }
        return Value::Array(
            values
                .iter()
                .enumerate()
                .map(|(index, raw)| {
                    let value = coerce(raw, shape.items);
                    at(Some(index)).check_number(raw, &value, violations);
                    value
                })
                .collect(),
        );
    }
    if values.len() > 1 {
        violations.push(repeated(location, key));
    }
    // The first occurrence stands for the key, so that its other problems are reported too.
    // Callers never pass an empty list; `Null` only keeps this free of a panicking index.
    values.first().map_or(Value::Null, |first| {
        let value = coerce(first, shape.types);
        at(None).check_number(first, &value, violations);
        value
    })
}

/// Where a coerced value goes: the key and, for an item of a repeated key, its index.
struct Field<'k> {
    location: Location,
    key: &'k str,
    index: Option<usize>,
}

impl Field<'_> {
    /// Adds the violation of a number coerced from `raw` that is not as written: the value
    /// stays the number, so the schema's own checks are reported beside it. Integers serde_json
    /// holds exactly are not looked at.
    fn check_number(&self, raw: &Raw<'_>, value: &Value, violations: &mut Vec<Violation>) {
        let Value::Number(coerced) = value else {
            return;
        };
        let Some(double) = coerced.as_f64().filter(|_| coerced.is_f64()) else {
            return;
        };
        if let Err(problem) = number::check(raw.text.as_bytes(), double) {
            violations.push(self.violation(problem));
        }
    }

    fn violation(&self, problem: NumberProblem) -> Violation {
        let mut pointer = format!("/{}", super::message::escape_pointer_segment(self.key));
        let mut name = super::message::field(self.location, &pointer, None);
        // The key is one of the schema's properties (unnamed keys are not coerced); an index
        // in a repeated key is not part of the label.
        let field = super::message::field_label(self.location, &pointer, |_| true);
        if let Some(index) = self.index {
            pointer.push_str(&format!("/{index}"));
            name.push_str(&format!("[{index}]"));
        }
        Violation {
            location: self.location,
            message: format!("{name} {}", problem.requirement()),
            field,
            pointer,
            keyword: "precision",
        }
    }
}

/// One string read as the most specific of `types` it spells (see the module docs).
fn coerce(raw: &Raw<'_>, types: Types) -> Value {
    let text = raw.text.as_ref();
    if raw.opaque || types.is_empty() {
        return Value::String(text.to_owned());
    }
    if types.has(Types::NULL) && (text.is_empty() || text == "null") {
        return Value::Null;
    }
    if types.has(Types::BOOLEAN) {
        match text {
            "true" => return Value::Bool(true),
            "false" => return Value::Bool(false),
            _ => {}
        }
    }
    if types.has(Types::INTEGER.union(Types::NUMBER)) && is_json_number(text) {
        // serde_json refuses numbers out of f64 range (`1e400`); those stay strings.
        if let Ok(number) = text.parse::<Number>() {
            return Value::Number(number);
        }
    }
    let json_object = types.has(Types::OBJECT) && text.starts_with('{');
    let json_array = types.has(Types::ARRAY) && text.starts_with('[');
    if json_object || json_array {
        if let Ok(value) = json::parse_str(text, VALUE_JSON_MAX_DEPTH) {
            if types.has(Types::of_value(&value)) {
                return value;
            }
        }
    }
    Value::String(text.to_owned())
}

/// Whether `text` is exactly a JSON number (RFC 8259 §6): no whitespace, no `+`, no leading
/// zeros, no bare `.`, no `NaN` or `Infinity`.
fn is_json_number(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < bytes.len() && bytes[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if bytes.first() == Some(&b'-') {
        i += 1;
    }
    match bytes.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == bytes.len()
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, then percent-decoding. Bytes
/// that do not decode to UTF-8 become U+FFFD rather than an error: the schema then judges the
/// text. Borrowed when there is nothing to decode, which is the common case.
fn form_decode(text: &str) -> Cow<'_, str> {
    if !text.contains(['+', '%']) {
        return Cow::Borrowed(text);
    }
    // `+` is replaced before percent-decoding so that an encoded `%2B` stays a plus sign.
    let spaced = text.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&spaced).decode_utf8_lossy();
    Cow::Owned(decoded.into_owned())
}

/// Where a walk of the schema is: the URI of the current document, and how to leave it.
struct Ctx<'c, R> {
    base: &'c str,
    resolver: &'c R,
}

/// Adds the properties `schema` names (directly, through `$ref`, or in its combinators).
fn collect_properties<R: Resolve>(
    schema: &Value,
    ctx: &Ctx<'_, R>,
    depth: usize,
    found: &mut BTreeMap<String, Shape>,
) {
    let Some(object) = schema.as_object() else {
        return;
    };
    if depth > MAX_PLAN_DEPTH {
        return;
    }
    if let Some(Value::Object(properties)) = object.get("properties") {
        for (name, subschema) in properties {
            let shape = shape_of(subschema, ctx, depth + 1);
            let entry = found.entry(name.clone()).or_default();
            *entry = entry.union(shape);
        }
    }
    if let Some(Value::String(reference)) = object.get("$ref") {
        if let Some((base, target)) = ctx.resolver.resolve(ctx.base, reference) {
            let inner = Ctx {
                base: &base,
                resolver: ctx.resolver,
            };
            collect_properties(target, &inner, depth + 1, found);
        }
    }
    for combinator in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(members)) = object.get(combinator) {
            for member in members {
                collect_properties(member, ctx, depth + 1, found);
            }
        }
    }
}

/// Whether `schema` (or what it applies in place: `$ref`, `allOf`, `anyOf`, `oneOf`)
/// allows properties beyond those it declares: an `additionalProperties` that is not `false`.
/// The answer is the types those other properties' values may have (`Shape::default()` for
/// `true`), or `None` when the schema allows none.
fn allows_more<R: Resolve>(schema: &Value, ctx: &Ctx<'_, R>, depth: usize) -> Option<Shape> {
    let object = schema.as_object()?;
    if depth > MAX_PLAN_DEPTH {
        return None;
    }
    match object.get("additionalProperties") {
        None | Some(Value::Bool(false)) => {}
        Some(other) => return Some(shape_of(other, ctx, depth + 1)),
    }
    if let Some(Value::String(reference)) = object.get("$ref") {
        if let Some((base, target)) = ctx.resolver.resolve(ctx.base, reference) {
            let inner = Ctx {
                base: &base,
                resolver: ctx.resolver,
            };
            if let Some(shape) = allows_more(target, &inner, depth + 1) {
                return Some(shape);
            }
        }
    }
    ["allOf", "anyOf", "oneOf"].iter().find_map(|combinator| {
        let members = object.get(*combinator)?.as_array()?;
        members.iter().find_map(|m| allows_more(m, ctx, depth + 1))
    })
}

/// The types (and item types) one property schema allows; empty when it does not say.
fn shape_of<R: Resolve>(schema: &Value, ctx: &Ctx<'_, R>, depth: usize) -> Shape {
    let mut shape = Shape::default();
    let Some(object) = schema.as_object() else {
        return shape;
    };
    if depth > MAX_PLAN_DEPTH {
        return shape;
    }
    match object.get("type") {
        Some(Value::String(name)) => shape.types = Types::named(name),
        Some(Value::Array(names)) => {
            for name in names.iter().filter_map(Value::as_str) {
                shape.types = shape.types.union(Types::named(name));
            }
        }
        _ => {
            // Without `type`, the values a schema lists still say what they are.
            if let Some(value) = object.get("const") {
                shape.types = Types::of_value(value);
            }
            if let Some(Value::Array(values)) = object.get("enum") {
                for value in values {
                    shape.types = shape.types.union(Types::of_value(value));
                }
            }
        }
    }
    if shape.types.has(Types::ARRAY) {
        match object.get("items") {
            Some(Value::Array(tuple)) => {
                for item in tuple {
                    shape.items = shape.items.union(shape_of(item, ctx, depth + 1).types);
                }
            }
            Some(items) => shape.items = shape_of(items, ctx, depth + 1).types,
            None => {}
        }
    }
    if let Some(Value::String(reference)) = object.get("$ref") {
        if let Some((base, target)) = ctx.resolver.resolve(ctx.base, reference) {
            let inner = Ctx {
                base: &base,
                resolver: ctx.resolver,
            };
            shape = shape.union(shape_of(target, &inner, depth + 1));
        }
    }
    for combinator in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(members)) = object.get(combinator) {
            for member in members {
                shape = shape.union(shape_of(member, ctx, depth + 1));
            }
        }
    }
    shape
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Schemas here have no `$ref`s.
    struct NoRefs;

    impl Resolve for NoRefs {
        fn resolve(&self, _: &str, _: &str) -> Option<(String, &Value)> {
            None
        }
    }

    fn plan(schema: Value) -> Plan {
        Plan::build(&schema, "test:", &NoRefs)
    }

    fn deep_plan() -> Plan {
        let filter = json!({"type": "object", "properties": {
            "limit": {"type": "integer"},
            "open": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
        }});
        let mut plan = plan(json!({"properties": {"filter": filter, "page": {"type": "integer"}}}));
        plan.set_deep("filter", Plan::build(&filter, "test:", &NoRefs));
        plan
    }

    #[test]
    fn deep_object_pairs_become_one_object() {
        let plan = deep_plan();
        let (value, found) = plan.query(Some(
            "filter[limit]=5&filter%5Bopen%5D=true&filter[tags]=a&filter[tags]=b+c&filter[x]=1&page=2",
        ));
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(
            value,
            json!({"filter": {"limit": 5, "open": true, "tags": ["a", "b c"], "x": "1"}, "page": 2})
        );
        // Keys of other properties, or not closed, stay as sent.
        let (value, _) = plan.query(Some("page[a]=1&filter[limit=2&sort[x]=y"));
        assert_eq!(
            value,
            json!({"page[a]": "1", "filter[limit": "2", "sort[x]": "y"})
        );
        assert!(plan.names("filter[limit]", false));
        assert!(!plan.names("page[a]", false));
    }

    #[test]
    fn deep_object_coercion_problems_are_placed_under_the_object() {
        let (value, found) = deep_plan().query(Some("filter[limit]=1&filter[limit]=2"));
        assert_eq!(value, json!({"filter": {"limit": 1}}));
        let found: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|v| (v.message.as_str(), v.pointer.as_str(), v.field.as_str()))
            .collect();
        assert_eq!(
            found,
            [(
                "query.filter.limit must not be repeated",
                "/filter/limit",
                "query.filter.limit"
            )]
        );
    }

    fn exploded_plan() -> Plan {
        let filter = json!({"type": "object", "properties": {
            "limit": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
        }});
        let map = json!({"type": "object", "additionalProperties": {"type": "boolean"}});
        let mut plan = plan(json!({"properties": {
            "filter": filter, "flags": map, "page": {"type": "integer"},
        }}));
        let nested = Plan::build(&filter, "test:", &NoRefs);
        assert!(plan.set_exploded("filter", nested, Location::Query).is_ok());
        let nested = Plan::build(&map, "test:", &NoRefs);
        assert!(plan.set_exploded("flags", nested, Location::Query).is_ok());
        plan
    }

    #[test]
    fn exploded_object_keys_are_assembled_into_their_parameter() {
        let plan = exploded_plan();
        let (value, found) = plan.query(Some("limit=5&tags=a&tags=b&page=2&debug=true"));
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(
            value,
            json!({"filter": {"limit": 5, "tags": ["a", "b"]}, "flags": {"debug": true}, "page": 2})
        );
        // No key of its own: the parameter is absent (so `required` can say so).
        assert_eq!(plan.query(Some("page=1")).0, json!({"page": 1}));
        assert!(plan.names("limit", false) && plan.names("anything", false));
        // Problems name the key as sent.
        let (_, found) = plan.query(Some("limit=1&limit=2"));
        assert_eq!(found[0].message, "query.limit must not be repeated");
        let mut violation = Violation {
            location: Location::Query,
            pointer: "/filter/limit".into(),
            field: "query.filter.limit".into(),
            keyword: "maximum",
            message: "query.filter.limit must be <= 50".into(),
        };
        plan.unexplode(&mut violation);
        assert_eq!(
            (
                violation.pointer.as_str(),
                violation.field.as_str(),
                violation.message.as_str()
            ),
            ("/limit", "query.limit", "query.limit must be <= 50")
        );
    }

    #[test]
    fn exploded_objects_that_could_share_a_key_are_refused() {
        let mut plan = exploded_plan();
        let other = Plan::build(
            &json!({"properties": {"limit": {"type": "string"}}}),
            "test:",
            &NoRefs,
        );
        let refused = plan.set_exploded("other", other, Location::Query);
        assert!(refused.is_err_and(|e| e.contains("both have a property \"limit\"")));
        let free = Plan::build(&json!({"type": "object"}), "test:", &NoRefs);
        let refused = plan.set_exploded("free", free, Location::Query);
        assert!(refused.is_err_and(|e| e.contains("do not declare")));
    }

    #[test]
    fn exploded_object_cookies_are_the_cookies_they_declare() {
        let view = json!({"type": "object", "properties": {"zoom": {"type": "integer"}}});
        let mut plan = plan(json!({"properties": {"view": view, "session": {"type": "string"}}}));
        let nested = Plan::build(&view, "test:", &NoRefs);
        assert!(plan.set_exploded("view", nested, Location::Cookie).is_ok());
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            http::HeaderValue::from_static("_ga=1; zoom=2; session=s"),
        );
        let (value, found) = plan.cookies(&headers);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(value, json!({"view": {"zoom": 2}, "session": "s"}));
        // One that would take every cookie of the site is refused.
        let free = Plan::build(&json!({"type": "object"}), "test:", &NoRefs);
        let refused = plan.set_exploded("any", free, Location::Cookie);
        assert!(refused.is_err_and(|e| e.contains("every cookie")));
    }

    #[test]
    fn label_and_matrix_paths_are_read_as_simple_ones() {
        let schema = json!({"properties": {
            "id": {"type": "integer"},
            "ids": {"type": "array", "items": {"type": "integer"}},
            "who": {"type": "object", "properties": {"id": {"type": "integer"}}},
        }});
        let who = json!({"type": "object", "properties": {"id": {"type": "integer"}}});
        let read = |style: fn(bool) -> PathStyle, explode: bool, values: [&str; 3]| {
            let mut plan = plan(schema.clone());
            for name in ["id", "ids", "who"] {
                plan.set_path_style(name, style(explode));
            }
            plan.set_delimiter("ids", ',');
            plan.set_pairs("who", Plan::build(&who, "test:", &NoRefs), explode, ',');
            let pairs = ["id", "ids", "who"].into_iter().zip(values);
            let (value, found) = plan.params(Location::Path, pairs);
            assert!(found.is_empty(), "{found:?}");
            value
        };
        let label = |explode| PathStyle::Label { explode };
        let matrix = |explode| PathStyle::Matrix { explode };
        let want = json!({"id": 5, "ids": [3, 4], "who": {"id": 7, "r": "a"}});
        assert_eq!(read(label, false, [".5", ".3,4", ".id,7,r,a"]), want);
        assert_eq!(read(label, true, [".5", ".3.4", ".id=7.r=a"]), want);
        let values = [";id=5", ";ids=3,4", ";who=id,7,r,a"];
        assert_eq!(read(matrix, false, values), want);
        let values = [";id=5", ";ids=3;ids=4", ";id=7;r=a"];
        assert_eq!(read(matrix, true, values), want);
    }

    #[test]
    fn simple_objects_are_pairs_in_headers_and_paths() {
        let page = json!({"type": "object", "properties": {"size": {"type": "integer"}}});
        let mut plan = plan(json!({"properties": {"X-Page": page.clone(), "who": page.clone()}}));
        plan.set_pairs("X-Page", Plan::build(&page, "test:", &NoRefs), false, ',');
        plan.set_pairs("who", Plan::build(&page, "test:", &NoRefs), true, ',');
        let mut headers = http::HeaderMap::new();
        headers.insert("x-page", http::HeaderValue::from_static("size,10,from,2"));
        assert_eq!(
            plan.headers(&headers).0.to_value(),
            json!({"X-Page": {"size": 10, "from": "2"}})
        );
        let pairs = [("who", "size=3,x=y")].into_iter();
        let (value, found) = plan.params(Location::Path, pairs);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(value, json!({"who": {"size": 3, "x": "y"}}));
        // An item without `=` is not an object.
        let (value, _) = plan.params(Location::Path, [("who", "size=3,x")].into_iter());
        assert_eq!(value, json!({"who": "size=3,x"}));
        // JSON text is an object too.
        headers.insert(
            "x-page",
            http::HeaderValue::from_static(r#"{"size":1,"a":[2,3]}"#),
        );
        assert_eq!(
            plan.headers(&headers).0.to_value(),
            json!({"X-Page": {"size": 1, "a": [2, 3]}})
        );
    }

    #[test]
    fn form_objects_without_explode_are_key_value_pairs() {
        let range = json!({"type": "object", "properties": {"from": {"type": "integer"}}});
        let mut plan = plan(json!({"properties": {"range": range}}));
        plan.set_pairs("range", Plan::build(&range, "test:", &NoRefs), false, ',');
        let (value, found) = plan.query(Some("range=from,1,to,x%2Cy"));
        assert!(found.is_empty(), "{found:?}");
        // The comma a value holds is a delimiter once decoded (as for arrays).
        assert_eq!(value, json!({"range": "from,1,to,x,y"}));
        let (value, _) = plan.query(Some("range=from,1,to,z"));
        assert_eq!(value, json!({"range": {"from": 1, "to": "z"}}));
        let (value, found) = plan.query(Some("range=from,1.00000000000000001"));
        assert_eq!(value, json!({"range": {"from": 1.0}}));
        assert_eq!(found[0].pointer, "/range/from");
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            http::HeaderValue::from_static("range=from,3"),
        );
        assert_eq!(plan.cookies(&headers).0, json!({"range": {"from": 3}}));
    }

    #[test]
    fn without_deep_objects_brackets_are_plain_keys() {
        let plan = plan(json!({"properties": {"filter": {"type": "object"}}}));
        let (value, _) = plan.query(Some("filter[limit]=5"));
        assert_eq!(value, json!({"filter[limit]": "5"}));
    }

    #[test]
    fn cookies_named_by_the_schema_are_read_and_coerced() {
        let plan = plan(json!({"properties": {
            "session": {"type": "string"},
            "zoom": {"type": "number"},
            "ids": {"type": "array", "items": {"type": "integer"}},
        }}));
        let mut headers = http::HeaderMap::new();
        headers.append(
            http::header::COOKIE,
            http::HeaderValue::from_static("_ga=GA1; session=a%20b;zoom=1.5"),
        );
        headers.append(
            http::header::COOKIE,
            http::HeaderValue::from_static("ids=\"1\"; ids=2"),
        );
        let (value, found) = plan.cookies(&headers);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(value, json!({"session": "a b", "zoom": 1.5, "ids": [1, 2]}));
        let mut twice = http::HeaderMap::new();
        twice.insert(
            http::header::COOKIE,
            http::HeaderValue::from_static("zoom=1; zoom=2"),
        );
        let (value, found) = plan.cookies(&twice);
        assert_eq!(value, json!({"zoom": 1}));
        assert_eq!(found[0].message, "cookie.zoom must not be repeated");
        // Not visible ASCII: still read, as text only.
        let mut odd = http::HeaderMap::new();
        odd.insert(
            http::header::COOKIE,
            http::HeaderValue::from_bytes(b"session=\xc3\xa9; zoom=2").unwrap(),
        );
        assert_eq!(
            plan.cookies(&odd).0,
            json!({"session": "\u{e9}", "zoom": "2"})
        );
        assert_eq!(plan.cookies(&http::HeaderMap::new()).0, json!({}));
    }
}
