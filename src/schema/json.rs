//! Strict JSON parsing: the request body and schema files.
//!
//! `serde_json::from_slice` into a `Value` silently keeps the last of two duplicate keys and only
//! stops deep nesting at its own fixed limit of 128. A gateway must not forward a body whose
//! meaning depends on which duplicate the upstream keeps, and the depth limit is configurable,
//! so this module builds the `Value` with its own `DeserializeSeed`: it rejects duplicate keys
//! at any depth and stops nesting at the caller's limit, before serde_json's own guard and long
//! before the stack could overflow.
//!
//! It also refuses a number that serde_json reads as a double which prints as another decimal
//! (`0.99999999999999999` is read as `1.0`; see [`super::number`]), or whose literal is too long.
//! serde_json hands a visitor only the double, so the visitor finds the literal in the text
//! itself, in the same pass: every string serde_json borrows from the text (keys and values
//! without escapes) tells where parsing has got to, and from there a short scan over
//! punctuation, whitespace and the rare escaped string reaches the number. Integers that
//! serde_json holds exactly are only counted, so a body without fractions scans nothing.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;

use bytes::Bytes;
use bytestring::ByteString;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::number::{self, NumberProblem};
use super::tree::{Node, Text, Tree, SCAN_MEMBERS};

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
    /// A number is not exactly the double it is read as, or its literal is too long;
    /// `pointer` is the JSON pointer of the number (empty when the body is the number).
    Number {
        pointer: String,
        problem: NumberProblem,
    },
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
            BodyError::Number { pointer, problem } => {
                let problem = problem.describe();
                if pointer.is_empty() {
                    write!(f, "request body is a number that {problem}")
                } else {
                    write!(f, "request body has a number at {pointer} that {problem}")
                }
            }
        }
    }
}

impl std::error::Error for BodyError {}

/// Parses a request body into a `Value`.
///
/// Rejects, in this order: an empty body, bytes that are not UTF-8, then in one pass anything
/// that is not exactly one JSON value (a BOM, single quotes, trailing commas, trailing data),
/// duplicate object keys at any depth, nesting deeper than `max_depth` (capped at
/// [`SERDE_JSON_MAX_DEPTH`]), and numbers that are not exactly the double they are read as or
/// are longer than [`number::MAX_LITERAL_LEN`]. The error never carries body content except a
/// JSON pointer.
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

/// What the parser does with a number that is not exactly the double it is read as (one
/// whose literal is too long is always refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inexact {
    /// Refuse the text (`BodyError::Number`): schema files, and `parse_body`.
    Refuse,
    /// Keep the double and note that there was one (`Parsed::inexact`).
    Note,
    /// Put [`inexact_marker`] in its place, so that schema validation shows where the schema
    /// constrains such a number (a number type, `enum` or `const` fails on the marker; a
    /// place the schema leaves open accepts it).
    Mark,
}

/// What stands for an inexact number under [`Inexact::Mark`]: an object with one key no
/// schema names, so it fails every number, string and array check and passes where anything
/// goes.
pub fn inexact_marker() -> Value {
    serde_json::json!({ INEXACT_KEY: true })
}

/// Whether `value` is [`inexact_marker`].
pub fn is_inexact_marker(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|o| o.len() == 1 && o.contains_key(INEXACT_KEY))
}

const INEXACT_KEY: &str = "\u{fffe}schemagate: a number not exactly a 64-bit float";

/// A request body parsed with [`Inexact::Note`]: its text and the [`Tree`] pointing into it.
#[derive(Debug)]
pub struct Parsed {
    text: ByteString,
    tree: Tree,
    /// Whether some number in it is not exactly the double it was read as.
    pub inexact: bool,
}

impl Parsed {
    /// The body as validators read it, in place.
    pub fn node(&self) -> Node<'_> {
        Node::tree(&self.text, &self.tree)
    }

    /// A member of the body when it is an object, as a `Value`.
    pub fn member(&self, key: &str) -> Option<Value> {
        let Tree::Object(members) = &self.tree else {
            return None;
        };
        super::tree::find(&self.text, members, key).map(|v| v.to_value(&self.text))
    }

    /// The body as a `Value` (built anew on each call: for the rare paths that need one).
    pub fn to_value(&self) -> Value {
        self.tree.to_value(&self.text)
    }
}

/// Parses a request body as [`parse_body`] does, except that numbers not exactly a double are
/// kept and noted (`Parsed::inexact`): they are refused only where the schema constrains them
/// (`CompiledSchema::collect_inexact`), never in a field the schema leaves open. The result
/// shares the body's bytes.
pub fn parse_request_body(bytes: &Bytes, max_depth: usize) -> Result<Parsed, BodyError> {
    let Ok(text) = ByteString::try_from(bytes.clone()) else {
        return Err(BodyError::InvalidUtf8);
    };
    if text.trim_matches([' ', '\t', '\n', '\r']).is_empty() {
        return Err(BodyError::Empty);
    }
    let (tree, inexact) = parse_tree(&text, max_depth, Inexact::Note)?;
    Ok(Parsed {
        text,
        tree,
        inexact,
    })
}

/// Parses text that is known to be UTF-8; see [`parse_body`].
pub(crate) fn parse_str(text: &str, max_depth: usize) -> Result<Value, BodyError> {
    parse_with(text, max_depth, Inexact::Refuse).map(|(value, _)| value)
}

/// Parses text that is known to be UTF-8, doing `inexact` with inexact numbers; returns the
/// value and whether any number was inexact.
pub(crate) fn parse_with(
    text: &str,
    max_depth: usize,
    inexact: Inexact,
) -> Result<(Value, bool), BodyError> {
    parse_tree(text, max_depth, inexact).map(|(tree, seen)| (tree.to_value(text), seen))
}

/// [`parse_with`], keeping the [`Tree`] (which points into `text`).
fn parse_tree(text: &str, max_depth: usize, inexact: Inexact) -> Result<(Tree, bool), BodyError> {
    let limit = max_depth.min(SERDE_JSON_MAX_DEPTH);
    let state = State {
        max_depth: limit,
        failure: RefCell::new(None),
        text,
        cursor: Cell::new(0),
        pending: Cell::new(0),
        inexact,
        seen_inexact: Cell::new(false),
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = TreeSeed {
        depth: 0,
        state: &state,
    }
    .deserialize(&mut deserializer)
    .and_then(|tree| deserializer.end().map(|()| tree));
    match parsed {
        Ok(tree) => Ok((tree, state.seen_inexact.get())),
        Err(error) => Err(match state.failure.into_inner() {
            Some(Failure::TooDeep) => BodyError::TooDeep { limit },
            Some(Failure::Duplicate { mut reversed }) => {
                reversed.reverse();
                BodyError::DuplicateKey {
                    key_pointer: pointer_of(&reversed),
                }
            }
            Some(Failure::Number {
                problem,
                mut reversed,
            }) => {
                reversed.reverse();
                BodyError::Number {
                    pointer: pointer_of(&reversed),
                    problem,
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
    /// A refused number; `reversed` is built as for `Duplicate`, from the number's own
    /// segment (added by its container) up.
    Number {
        problem: NumberProblem,
        reversed: Vec<Segment>,
    },
}

struct State<'t> {
    max_depth: usize,
    failure: RefCell<Option<Failure>>,
    /// The whole text being parsed, where number literals are found.
    text: &'t str,
    /// A byte offset in `text` at or before the next token serde_json has not yet handed
    /// over, with only `pending` numbers between the two: it moves past each string borrowed
    /// from the text and each number checked, so it only ever moves forward.
    cursor: Cell<usize>,
    /// Integers visited since `cursor` was last moved (not located: serde_json holds them
    /// exactly, so they need no check, and are skipped only if a double follows).
    pending: Cell<usize>,
    /// What to do with an inexact number.
    inexact: Inexact,
    /// Whether one was seen.
    seen_inexact: Cell<bool>,
}

impl State<'_> {
    fn fail<E: de::Error>(&self, failure: Failure) -> E {
        *self.failure.borrow_mut() = Some(failure);
        E::custom("rejected by the gateway's JSON rules")
    }

    /// Records `segment` as part of the duplicate key's or refused number's path while an
    /// error unwinds.
    fn unwind(&self, segment: impl FnOnce() -> Segment) {
        if let Some(Failure::Duplicate { reversed } | Failure::Number { reversed, .. }) =
            self.failure.borrow_mut().as_mut()
        {
            reversed.push(segment());
        }
    }

    /// A string serde_json lent from the text (it lends every string without escapes): its
    /// span, with the cursor moved just after its closing quote.
    fn borrowed(&self, string: &str) -> Text {
        let offset = (string.as_ptr() as usize).wrapping_sub(self.text.as_ptr() as usize);
        if offset <= self.text.len() && string.len() < self.text.len() - offset {
            self.cursor.set(offset + string.len() + 1);
            self.pending.set(0);
            Text::Span(offset, offset + string.len())
        } else {
            Text::Owned(string.into())
        }
    }

    /// Checks the literal of the number serde_json has just read as `value` (the next number
    /// after the cursor and the pending integers), and moves the cursor past it. Returns
    /// whether the number is exact; an inexact one is an error only under `Inexact::Refuse`.
    fn check_double<E: de::Error>(&self, value: f64) -> Result<bool, E> {
        let found = find_number(self.text.as_bytes(), self.cursor.get(), self.pending.get());
        // The number serde_json read is always there; not finding it would be a bug here,
        // and refusing the body is then the safe answer.
        debug_assert!(
            found.is_some(),
            "number literal not found in {:?}",
            self.text
        );
        let verdict = match found {
            Some(Literal::Complete { start, end }) => {
                self.cursor.set(end);
                self.pending.set(0);
                self.text
                    .as_bytes()
                    .get(start..end)
                    .map_or(Err(NumberProblem::Inexact), |literal| {
                        number::check(literal, value)
                    })
            }
            Some(Literal::TooLong) => Err(NumberProblem::TooLong),
            None => Err(NumberProblem::Inexact),
        };
        match verdict {
            Ok(()) => Ok(true),
            Err(NumberProblem::Inexact) if self.inexact != Inexact::Refuse => {
                self.seen_inexact.set(true);
                Ok(false)
            }
            Err(problem) => Err(self.fail(Failure::Number {
                problem,
                reversed: Vec::new(),
            })),
        }
    }
}

/// Where a number literal is in the text.
#[derive(Debug, PartialEq, Eq)]
enum Literal {
    Complete {
        start: usize,
        end: usize,
    },
    /// Longer than [`number::MAX_LITERAL_LEN`]: the scan stopped there.
    TooLong,
}

/// Finds the number after `skip` numbers from `from`, which must be at a token boundary of
/// valid JSON (serde_json has read past it): skips whitespace, punctuation, strings (with
/// escapes), `true`, `false`, `null` and `skip` numbers.
fn find_number(text: &[u8], from: usize, mut skip: usize) -> Option<Literal> {
    let mut at = from;
    loop {
        match *text.get(at)? {
            b' ' | b'\t' | b'\n' | b'\r' | b'{' | b'}' | b'[' | b']' | b',' | b':' => at += 1,
            b'"' => {
                at += 1;
                loop {
                    match *text.get(at)? {
                        b'\\' => at += 2,
                        b'"' => break,
                        _ => at += 1,
                    }
                }
                at += 1;
            }
            b't' | b'n' => at += 4,
            b'f' => at += 5,
            b'-' | b'0'..=b'9' => {
                let start = at;
                let limit = if skip == 0 {
                    start + number::MAX_LITERAL_LEN + 1
                } else {
                    usize::MAX
                };
                while at < limit
                    && matches!(
                        text.get(at),
                        Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                    )
                {
                    at += 1;
                }
                if skip == 0 {
                    if at - start > number::MAX_LITERAL_LEN {
                        return Some(Literal::TooLong);
                    }
                    return Some(Literal::Complete { start, end: at });
                }
                skip -= 1;
            }
            _ => return None,
        }
    }
}

/// Builds one [`Tree`] at nesting level `depth` (the number of containers around it).
#[derive(Clone, Copy)]
struct TreeSeed<'s, 't> {
    depth: usize,
    state: &'s State<'t>,
}

impl TreeSeed<'_, '_> {
    /// The seed for the members of a container opened at this level, or the depth failure.
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        let depth = self.depth + 1;
        if depth > self.state.max_depth {
            return Err(self.state.fail(Failure::TooDeep));
        }
        Ok(TreeSeed {
            depth,
            state: self.state,
        })
    }
}

impl<'de> DeserializeSeed<'de> for TreeSeed<'_, '_> {
    type Value = Tree;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Tree, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, 't> Visitor<'de> for TreeSeed<'_, 't> {
    type Value = Tree;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Tree, E> {
        Ok(Tree::Null)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Tree, E> {
        Ok(Tree::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Tree, E> {
        self.state.pending.set(self.state.pending.get() + 1);
        Ok(Tree::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Tree, E> {
        self.state.pending.set(self.state.pending.get() + 1);
        Ok(Tree::Number(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Tree, E> {
        let exact = self.state.check_double(value)?;
        if !exact && self.state.inexact == Inexact::Mark {
            return Ok(Tree::Inexact);
        }
        // JSON text cannot spell a non-finite number, so the `Null` fallback is never taken
        // for input serde_json accepted.
        Ok(serde_json::Number::from_f64(value).map_or(Tree::Null, Tree::Number))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Tree, E> {
        Ok(Tree::String(self.state.borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Tree, E> {
        Ok(Tree::String(Text::Owned(value.into())))
    }

    fn visit_string<E>(self, value: String) -> Result<Tree, E> {
        Ok(Tree::String(Text::Owned(value.into_boxed_str())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let inner = self.enter()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner).inspect_err(|_| {
            self.state.unwind(|| Segment::Index(items.len()));
        })? {
            items.push(item);
        }
        Ok(Tree::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let inner = self.enter()?;
        let text = self.state.text;
        let mut members: Vec<(Text, Tree)> = Vec::new();
        // Past `SCAN_MEMBERS` keys, duplicates are found with a set instead of a scan.
        let mut seen: Option<HashSet<Cow<'t, str>>> = None;
        while let Some(key) = map.next_key_seed(KeySeed(self.state))? {
            // The duplicate is refused before its value is parsed: nothing after it matters.
            let duplicate = match &mut seen {
                Some(seen) => !seen.insert(key_of(text, &key)),
                None => members.iter().any(|(k, _)| k.get(text) == key.get(text)),
            };
            if duplicate {
                return Err(self.state.fail(Failure::Duplicate {
                    reversed: vec![Segment::Key(key.get(text).to_owned())],
                }));
            }
            match map.next_value_seed(inner) {
                Ok(value) => members.push((key, value)),
                Err(error) => {
                    self.state.unwind(|| Segment::Key(key.get(text).to_owned()));
                    return Err(error);
                }
            }
            if seen.is_none() && members.len() > SCAN_MEMBERS {
                seen = Some(members.iter().map(|(k, _)| key_of(text, k)).collect());
            }
        }
        if members.len() > SCAN_MEMBERS {
            members.sort_unstable_by(|(a, _), (b, _)| a.get(text).cmp(b.get(text)));
        }
        Ok(Tree::Object(members))
    }
}

/// A key for the duplicate set: borrowed from the text, copied only when it had escapes.
fn key_of<'t>(text: &'t str, key: &Text) -> Cow<'t, str> {
    match key {
        Text::Span(start, end) => Cow::Borrowed(text.get(*start..*end).unwrap_or_default()),
        Text::Owned(owned) => Cow::Owned(owned.to_string()),
    }
}

/// An object key, moving the cursor past it when it is borrowed from the text.
struct KeySeed<'s, 't>(&'s State<'t>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = Text;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Text, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_> {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Text, E> {
        Ok(self.0.borrowed(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Text, E> {
        Ok(Text::Owned(value.into()))
    }

    fn visit_string<E>(self, value: String) -> Result<Text, E> {
        Ok(Text::Owned(value.into_boxed_str()))
    }
}
