//! A parsed JSON body that points into its own text, and the instance representation the
//! validators read (`Instance`): either such a body or a `serde_json::Value`.
//!
//! Building a `Value` for a request body cost a `String` per key and per string value and a
//! node per `BTreeMap`: 9 of the valid request's ~30 allocations and about half the cost of
//! reading the body (`bench/callgrind.sh`). A [`Tree`] keeps strings and keys as spans of the
//! body's text (only strings with escapes are copied) and each object's members in one `Vec`,
//! and jsonschema validates it in place through its `Json` trait (jsonschema's own mechanism
//! for custom representations). A `Value` is still built when one is needed: for wording the
//! errors of an invalid body, strict mode, and a tenant read from the body.
//!
//! One validator per schema serves both kinds of instance ([`Node`] is either), so schemas
//! are compiled once, as before.

use std::borrow::Cow;
use std::sync::LazyLock;

use jsonschema::json::{Array, Json, Node as JsonNode, NodeIdentity, Object};
use jsonschema::JsonType;
use serde_json::{Map, Number, Value};

/// Objects with more members than this are sorted by key once parsed, and looked up by
/// binary search; smaller ones are scanned (fewer comparisons than a search's setup).
pub(crate) const SCAN_MEMBERS: usize = 16;

/// A string of the parsed text: a span of it, or (for a string with escapes) its own copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    Span(usize, usize),
    Owned(Box<str>),
}

impl Text {
    pub(crate) fn get<'a>(&'a self, text: &'a str) -> &'a str {
        match self {
            // Spans are made from slices of this same text, so they are always in it and on
            // character boundaries; the empty fallback is never taken.
            Text::Span(start, end) => text.get(*start..*end).unwrap_or_default(),
            Text::Owned(owned) => owned,
        }
    }
}

/// One JSON value of a parsed text (the text is kept beside it, in [`super::Parsed`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Tree {
    Null,
    Bool(bool),
    Number(Number),
    String(Text),
    Array(Vec<Tree>),
    /// Members in text order, or sorted by key when there are more than [`SCAN_MEMBERS`];
    /// never two with the same key (the parser refuses duplicates).
    Object(Vec<(Text, Tree)>),
    /// A number that is not exactly the double it is read as, under `Inexact::Mark`: it reads
    /// as [`super::json::inexact_marker`].
    Inexact,
}

static INEXACT: LazyLock<Value> = LazyLock::new(super::json::inexact_marker);

impl Tree {
    /// The same value as a `serde_json::Value`.
    pub(crate) fn to_value(&self, text: &str) -> Value {
        match self {
            Tree::Null => Value::Null,
            Tree::Bool(b) => Value::Bool(*b),
            Tree::Number(n) => Value::Number(n.clone()),
            Tree::String(s) => Value::String(s.get(text).to_owned()),
            Tree::Array(items) => Value::Array(items.iter().map(|i| i.to_value(text)).collect()),
            Tree::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.get(text).to_owned(), v.to_value(text)))
                    .collect(),
            ),
            Tree::Inexact => INEXACT.clone(),
        }
    }
}

/// The instance representation of every validator: a parsed body in place, or a `Value`
/// (coerced query, headers and cookies, response bodies, the marked body of
/// `collect_inexact`).
pub struct Instance;

/// One node of an instance.
#[derive(Debug, Clone, Copy)]
pub enum Node<'a> {
    Tree(&'a str, &'a Tree),
    Value(&'a Value),
    /// An object of coerced request fields (headers), keyed by the schema's own names.
    Fields(&'a [(&'a str, Field<'a>)]),
    /// A string borrowed from the request (a header value taken as it is).
    Str(&'a str),
}

/// A coerced request field: the text as sent, when the schema takes it as a string, or the
/// value it was coerced to.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    Str(&'a str),
    Value(Value),
}

impl<'a> Field<'a> {
    fn node(&'a self) -> Node<'a> {
        match self {
            Field::Str(s) => Node::Str(s),
            Field::Value(v) => Node::Value(v),
        }
    }

    pub(crate) fn to_value(&self) -> Value {
        match self {
            Field::Str(s) => Value::String((*s).to_owned()),
            Field::Value(v) => v.clone(),
        }
    }
}

/// The members of an object of coerced fields, as a `Value`.
pub(crate) fn fields_value(fields: &[(&str, Field<'_>)]) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_value()))
            .collect(),
    )
}

impl<'a> Node<'a> {
    pub(crate) fn tree(text: &'a str, tree: &'a Tree) -> Node<'a> {
        match tree {
            Tree::Inexact => Node::Value(&INEXACT),
            tree => Node::Tree(text, tree),
        }
    }
}

impl<'a> From<&'a Value> for Node<'a> {
    fn from(value: &'a Value) -> Self {
        Node::Value(value)
    }
}

impl Json for Instance {
    type Node<'a> = Node<'a>;
    type PreparedKey = String;
    type StringBuffer = Value;

    // As for serde_json's `Value` (a `BTreeMap`): a small object is cheaper to walk once than
    // to probe key by key.
    const KEYS_PER_LOOKUP: usize = 2;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>(buffer: &mut Value, string: &str, f: impl FnOnce(Node<'_>) -> T) -> T {
        if let Value::String(existing) = buffer {
            existing.clear();
            existing.push_str(string);
        } else {
            *buffer = Value::String(string.to_owned());
        }
        f(Node::Value(buffer))
    }
}

impl<'a> JsonNode<'a, Instance> for Node<'a> {
    type Object = Members<'a>;
    type Array = Items<'a>;
    type Number = &'a Number;

    fn as_object(&self) -> Option<Members<'a>> {
        match *self {
            Node::Tree(text, Tree::Object(members)) => Some(Members::Tree(text, members)),
            Node::Value(Value::Object(map)) => Some(Members::Value(map)),
            Node::Fields(fields) => Some(Members::Fields(fields)),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<Items<'a>> {
        match *self {
            Node::Tree(text, Tree::Array(items)) => Some(Items::Tree(text, items)),
            Node::Value(Value::Array(items)) => Some(Items::Value(items)),
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        match *self {
            Node::Tree(text, Tree::String(s)) => Some(Cow::Borrowed(s.get(text))),
            Node::Value(Value::String(s)) => Some(Cow::Borrowed(s)),
            Node::Str(s) => Some(Cow::Borrowed(s)),
            _ => None,
        }
    }

    fn as_number(&self) -> Option<&'a Number> {
        match *self {
            Node::Tree(_, Tree::Number(n)) | Node::Value(Value::Number(n)) => Some(n),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match *self {
            Node::Tree(_, Tree::Bool(b)) | Node::Value(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, Node::Tree(_, Tree::Null) | Node::Value(Value::Null))
    }

    fn json_type(&self) -> JsonType {
        match *self {
            Node::Tree(_, tree) => match tree {
                Tree::Null => JsonType::Null,
                Tree::Bool(_) => JsonType::Boolean,
                Tree::Number(_) => JsonType::Number,
                Tree::String(_) => JsonType::String,
                Tree::Array(_) => JsonType::Array,
                Tree::Object(_) | Tree::Inexact => JsonType::Object,
            },
            Node::Value(value) => match value {
                Value::Null => JsonType::Null,
                Value::Bool(_) => JsonType::Boolean,
                Value::Number(_) => JsonType::Number,
                Value::String(_) => JsonType::String,
                Value::Array(_) => JsonType::Array,
                Value::Object(_) => JsonType::Object,
            },
            Node::Fields(_) => JsonType::Object,
            Node::Str(_) => JsonType::String,
        }
    }

    fn equals_value(&self, expected: &Value) -> bool {
        jsonschema::json::cmp::equal(&self.to_value(), expected)
    }

    fn to_value(&self) -> Cow<'a, Value> {
        match *self {
            Node::Tree(text, tree) => Cow::Owned(tree.to_value(text)),
            Node::Value(value) => Cow::Borrowed(value),
            Node::Fields(fields) => Cow::Owned(fields_value(fields)),
            Node::Str(s) => Cow::Owned(Value::String(s.to_owned())),
        }
    }

    fn identity(&self) -> Option<NodeIdentity> {
        Some(match *self {
            Node::Tree(_, tree) => NodeIdentity::new(std::ptr::from_ref(tree) as usize),
            Node::Value(value) => NodeIdentity::new(std::ptr::from_ref(value) as usize),
            Node::Fields(fields) => NodeIdentity::new(fields.as_ptr() as usize),
            // Borrowed from the header map, apart from every node above.
            Node::Str(s) => NodeIdentity::tagged(s.as_ptr() as usize, 1),
        })
    }
}

/// The value of `key` among an object's `members`.
pub(crate) fn find<'a>(text: &str, members: &'a [(Text, Tree)], key: &str) -> Option<&'a Tree> {
    let found = if members.len() > SCAN_MEMBERS {
        members
            .binary_search_by(|(k, _)| k.get(text).cmp(key))
            .ok()
            .and_then(|i| members.get(i))
    } else {
        members.iter().find(|(k, _)| k.get(text) == key)
    };
    found.map(|(_, value)| value)
}

/// An object's members.
#[derive(Debug, Clone, Copy)]
pub enum Members<'a> {
    Tree(&'a str, &'a [(Text, Tree)]),
    Value(&'a Map<String, Value>),
    Fields(&'a [(&'a str, Field<'a>)]),
}

impl<'a> Object<'a, Instance> for Members<'a> {
    type Node = Node<'a>;
    type MemberName = &'a str;
    type MembersIter = MembersIter<'a>;

    fn len(&self) -> usize {
        match self {
            Members::Tree(_, members) => members.len(),
            Members::Value(map) => map.len(),
            Members::Fields(fields) => fields.len(),
        }
    }

    fn get(&self, key: &String) -> Option<Node<'a>> {
        match *self {
            Members::Tree(text, members) => find(text, members, key).map(|v| Node::tree(text, v)),
            Members::Value(map) => map.get(key.as_str()).map(Node::Value),
            Members::Fields(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.node()),
        }
    }

    fn members(&self) -> MembersIter<'a> {
        match *self {
            Members::Tree(text, members) => MembersIter::Tree(text, members.iter()),
            Members::Value(map) => MembersIter::Value(map.iter()),
            Members::Fields(fields) => MembersIter::Fields(fields.iter()),
        }
    }
}

pub enum MembersIter<'a> {
    Tree(&'a str, std::slice::Iter<'a, (Text, Tree)>),
    Value(serde_json::map::Iter<'a>),
    Fields(std::slice::Iter<'a, (&'a str, Field<'a>)>),
}

impl<'a> Iterator for MembersIter<'a> {
    type Item = (&'a str, Node<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            MembersIter::Tree(text, iter) => {
                let text: &'a str = text;
                iter.next().map(|(k, v)| (k.get(text), Node::tree(text, v)))
            }
            MembersIter::Value(iter) => iter.next().map(|(k, v)| (k.as_str(), Node::Value(v))),
            MembersIter::Fields(iter) => iter.next().map(|(k, v)| (*k, v.node())),
        }
    }
}

/// An array's items.
#[derive(Debug, Clone, Copy)]
pub enum Items<'a> {
    Tree(&'a str, &'a [Tree]),
    Value(&'a [Value]),
}

impl<'a> Array<'a, Instance> for Items<'a> {
    type Node = Node<'a>;
    type ElementsIter = ItemsIter<'a>;

    fn len(&self) -> usize {
        match self {
            Items::Tree(_, items) => items.len(),
            Items::Value(items) => items.len(),
        }
    }

    fn elements(&self) -> ItemsIter<'a> {
        match *self {
            Items::Tree(text, items) => ItemsIter::Tree(text, items.iter()),
            Items::Value(items) => ItemsIter::Value(items.iter()),
        }
    }
}

pub enum ItemsIter<'a> {
    Tree(&'a str, std::slice::Iter<'a, Tree>),
    Value(std::slice::Iter<'a, Value>),
}

impl<'a> Iterator for ItemsIter<'a> {
    type Item = Node<'a>;

    fn next(&mut self) -> Option<Node<'a>> {
        match self {
            ItemsIter::Tree(text, iter) => {
                let text: &'a str = text;
                iter.next().map(|item| Node::tree(text, item))
            }
            ItemsIter::Value(iter) => iter.next().map(Node::Value),
        }
    }
}
