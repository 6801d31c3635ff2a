//! Strict JSON parsing: the request body and schema files.
//!
//! `serde_json::from_slice` into a `Value` silently keeps the last of two duplicate keys and only
//! stops deep nesting at its own fixed limit of 128. A gateway must not forward a body whose
//! meaning depends on which duplicate the upstream keeps, and the depth limit is configurable,
//! so this module builds the `Value` with its own `DeserializeSeed`: it rejects duplicate keys
//! at any depth and stops nesting at the caller's limit, before serde_json's own guard and long
//! before the stack could overflow.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The deepest nesting serde_json itself accepts: it counts down from 128 and fails when the
/// count reaches zero, so 127 nested containers parse and the 128th is refused. A configured
/// limit above this is capped here, so that the answer is always our `TooDeep` with the limit
/// actually applied.
pub const SERDE_JSON_MAX_DEPTH: usize = 127;

/// Why a body (or schema file) is not acceptable JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// No bytes at all, or only JSON whitespace.
    Empty,
    /// The bytes are not UTF-8, which RFC 8259 requires of JSON exchanged between systems.
    InvalidUtf8,
    /// Not JSON: `what` is serde_json's description of the problem, without its position.
    Syntax {
        line: usize,
        column: usize,
        what: String,
    },
    /// An object repeats a key; `key_pointer` is the JSON pointer of the second occurrence.
    DuplicateKey { key_pointer: String },
    /// Containers nest deeper than `limit` levels (`[]` is one level).
    TooDeep { limit: usize },
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Empty => f.write_str("request body is empty"),
            BodyError::InvalidUtf8 => f.write_str("request body is not valid UTF-8"),
            BodyError::Syntax { line, column, what } => write!(
                f,
                "request body is not valid JSON: {what} at line {line} column {column}"
            ),
            BodyError::DuplicateKey { key_pointer } => {
                write!(f, "request body has a duplicate key at {key_pointer}")
            }
            BodyError::TooDeep { limit } => {
                write!(f, "request body nests deeper than {limit} levels")
            }
        }
    }
}

impl std::error::Error for BodyError {}

/// Parses a request body into a `Value`.
///
/// Rejects, in this order: an empty body, bytes that are not UTF-8, then in one pass anything
/// that is not exactly one JSON value (a BOM, single quotes, trailing commas, trailing data),
/// duplicate object keys at any depth, and nesting deeper than `max_depth` (capped at
/// [`SERDE_JSON_MAX_DEPTH`]). The error never carries body content except a JSON pointer.
pub fn parse_body(bytes: &[u8], max_depth: usize) -> Result<Value, BodyError> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(BodyError::InvalidUtf8);
    };
    // Whitespace alone says nothing more than an empty body does, and "empty" is the clearer
    // answer for the client.
    if text.trim_matches([' ', '\t', '\n', '\r']).is_empty() {
        return Err(BodyError::Empty);
    }
    parse_str(text, max_depth)
}

/// Parses text that is known to be UTF-8; see [`parse_body`].
pub(crate) fn parse_str(text: &str, max_depth: usize) -> Result<Value, BodyError> {
    let limit = max_depth.min(SERDE_JSON_MAX_DEPTH);
    let state = State {
        max_depth: limit,
        failure: RefCell::new(None),
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = ValueSeed {
        depth: 0,
        state: &state,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match parsed {
        Ok(value) => Ok(value),
        Err(error) => Err(match state.failure.into_inner() {
            Some(Failure::TooDeep) => BodyError::TooDeep { limit },
            Some(Failure::Duplicate { mut reversed }) => {
                reversed.reverse();
                BodyError::DuplicateKey {
                    key_pointer: pointer_of(&reversed),
                }
            }
            None => syntax_error(&error, limit),
        }),
    }
}

/// Turns serde_json's error into `Syntax`, dropping the position suffix its `Display` adds so
/// that the position is written once, by our own `Display`.
fn syntax_error(error: &serde_json::Error, limit: usize) -> BodyError {
    let full = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    let what = full.strip_suffix(&suffix).unwrap_or(&full);
    // serde_json's own depth guard can only fire when our limit is not below it; the client
    // should still see the depth answer, not a syntax one.
    if what == "recursion limit exceeded" {
        return BodyError::TooDeep { limit };
    }
    BodyError::Syntax {
        line: error.line(),
        column: error.column(),
        what: what.to_string(),
    }
}

/// One JSON pointer segment of a duplicate key's path, collected while the error unwinds.
#[derive(Debug)]
enum Segment {
    Key(String),
    Index(usize),
}

fn pointer_of(segments: &[Segment]) -> String {
    let mut pointer = String::new();
    for segment in segments {
        pointer.push('/');
        match segment {
            Segment::Key(key) => {
                for c in key.chars() {
                    match c {
                        '~' => pointer.push_str("~0"),
                        '/' => pointer.push_str("~1"),
                        c => pointer.push(c),
                    }
                }
            }
            Segment::Index(index) => pointer.push_str(&index.to_string()),
        }
    }
    pointer
}

/// What the visitor rejected. serde's error type only carries a message, so the precise cause
/// travels beside it; when this is set, the serde error is just the vehicle that stops parsing.
#[derive(Debug)]
enum Failure {
    TooDeep,
    /// Segments from the duplicate key up to the root: each enclosing container adds its own
    /// segment as the error passes through it, so the happy path tracks no path at all.
    Duplicate {
        reversed: Vec<Segment>,
    },
}

struct State {
    max_depth: usize,
    failure: RefCell<Option<Failure>>,
}

impl State {
    fn fail<E: de::Error>(&self, failure: Failure) -> E {
        *self.failure.borrow_mut() = Some(failure);
        E::custom("rejected by the gateway's JSON rules")
    }

    /// Records `segment` as part of the duplicate key's path while an error unwinds.
    fn unwind(&self, segment: impl FnOnce() -> Segment) {
        if let Some(Failure::Duplicate { reversed }) = self.failure.borrow_mut().as_mut() {
            reversed.push(segment());
        }
    }
}

/// Builds one `Value` at nesting level `depth` (the number of containers around it).
#[derive(Clone, Copy)]
struct ValueSeed<'s> {
    depth: usize,
    state: &'s State,
}

impl ValueSeed<'_> {
    /// The seed for the members of a container opened at this level, or the depth failure.
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        let depth = self.depth + 1;
        if depth > self.state.max_depth {
            return Err(self.state.fail(Failure::TooDeep));
        }
        Ok(ValueSeed {
            depth,
            state: self.state,
        })
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        // JSON text cannot spell a non-finite number, so the `Null` fallback of `Value::from`
        // is never taken for input serde_json accepted.
        Ok(Value::from(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner).inspect_err(|_| {
            self.state.unwind(|| Segment::Index(items.len()));
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // The duplicate is refused before its value is parsed: nothing after it matters.
            // One lookup per key: the vacant slot found here takes the value.
            let slot = match object.entry(key) {
                serde_json::map::Entry::Vacant(slot) => slot,
                serde_json::map::Entry::Occupied(taken) => {
                    return Err(self.state.fail(Failure::Duplicate {
                        reversed: vec![Segment::Key(taken.key().clone())],
                    }));
                }
            };
            match map.next_value_seed(inner) {
                Ok(value) => {
                    slot.insert(value);
                }
                Err(error) => {
                    self.state.unwind(|| Segment::Key(slot.key().clone()));
                    return Err(error);
                }
            }
        }
        Ok(Value::Object(object))
    }
}
