//! Entry points for the cargo-fuzz targets in `fuzz/` and for the corpus replay in
//! `tests/fuzz_corpus.rs`, so that both run exactly the same code.
//!
//! Each function takes arbitrary bytes, runs one pure stage the way the request path (or the
//! config loader) runs it, and panics only when an invariant breaks. The shipped config
//! (`config/gateway.yaml`, with every upstream left on its mock) is loaded once and gives the
//! schemas and limits of the real routes.
//!
//! Not part of the gateway's API: hidden from the docs and free to change with the targets.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

use crate::config;
use crate::ratelimit::GatewayClock;
use crate::schema::{self, BodyError, CompiledSchema, Location, Violation};
use crate::snapshot::Snapshot;

/// Characters the fixed parts of violation messages use (`must be >= 1`, `is invalid (type)`,
/// `query.items[0]`): with the schemas' own text and the value's keys, all a message may hold.
const TEMPLATE_CHARS: &str =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;()<>=[]\"-+";

/// The repository this crate was built from: the shipped config and schemas live there.
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped config, compiled once, with the text of every schema its routes use.
struct Shipped {
    snapshot: Snapshot,
    /// The source of every schema file that a route names.
    schema_texts: Vec<String>,
    /// Every character of the schema texts and of [`TEMPLATE_CHARS`].
    message_chars: BTreeSet<char>,
}

fn shipped() -> &'static Shipped {
    static SHIPPED: OnceLock<Shipped> = OnceLock::new();
    SHIPPED.get_or_init(|| {
        let path = repo().join("config/gateway.yaml");
        // Every `${VAR:-default}` takes its default: mock upstreams, loopback listeners.
        let snapshot = match Snapshot::load_with_env(&path, |_| None) {
            Ok(snapshot) => snapshot,
            Err(errors) => panic!("the shipped config does not load: {errors:?}"),
        };
        let dir = snapshot.schema_dir.clone().unwrap_or_default();
        let schema_texts = snapshot
            .routes
            .iter()
            .flat_map(|route| &route.schema_files)
            .map(|file| std::fs::read_to_string(dir.join(&file.file)).unwrap_or_default())
            .collect::<Vec<String>>();
        let message_chars = schema_texts
            .iter()
            .flat_map(|text| text.chars())
            .chain(TEMPLATE_CHARS.chars())
            .collect();
        Shipped {
            snapshot,
            schema_texts,
            message_chars,
        }
    })
}

/// Query string → coerced JSON → validation, for every schema of the shipped routes.
///
/// The query schemas are the real path; the header and body schemas are run too because the
/// same coercion code then meets more shapes (objects and arrays sent as JSON text).
pub fn query(data: &[u8]) {
    let shipped = shipped();
    // A query string on the wire is ASCII; anything else is a superset worth trying.
    let raw = String::from_utf8_lossy(data);
    for route in &shipped.snapshot.routes {
        let schemas = &route.schemas;
        for schema in [
            &schemas.query,
            &schemas.headers,
            &schemas.body,
            &schemas.path,
        ]
        .into_iter()
        .flatten()
        {
            let (value, found) = schema.coerce_query(Some(&raw));
            let Value::Object(object) = &value else {
                panic!("coerce_query gave a non-object: {value}");
            };
            check_keys(&raw, object);
            for violation in &found {
                assert!(
                    ["repeated", "precision"].contains(&violation.keyword),
                    "{violation:?}"
                );
            }
            check_violations(Location::Query, &value, &found, shipped);
            validate(
                schema,
                Location::Query,
                &value,
                route.limits.violations,
                shipped,
            );
        }
    }
}

/// Body bytes → strict JSON parse → validation, for every body schema of the shipped routes,
/// with each route's depth and violation limits.
pub fn body(data: &[u8]) {
    let shipped = shipped();
    // Compared with serde_json once, at the largest depth any route allows.
    let mut compared = false;
    for route in &shipped.snapshot.routes {
        let Some(schema) = &route.schemas.body else {
            continue;
        };
        let parsed = schema::parse_body(data, route.limits.json_depth);
        if !compared {
            compare_with_serde_json(data, route.limits.json_depth, &parsed);
            compared = true;
        }
        match parsed {
            Ok(value) => {
                in_place_agrees(schema, data, route.limits.json_depth, &value);
                validate(
                    schema,
                    Location::Body,
                    &value,
                    route.limits.violations,
                    shipped,
                )
            }
            Err(error) => check_body_error(&error),
        }
    }
}

/// The gateway validates a request body in place (`Parsed`, a tree pointing into the text)
/// and builds a `Value` only to word errors: both must be the same JSON, with the same verdict.
fn in_place_agrees(schema: &schema::CompiledSchema, data: &[u8], depth: usize, value: &Value) {
    let bytes = bytes::Bytes::copy_from_slice(data);
    let parsed = match schema::parse_request_body(&bytes, depth) {
        Ok(parsed) => parsed,
        Err(error) => panic!("parse_body accepted what parse_request_body refused: {error}"),
    };
    assert_eq!(&parsed.to_value(), value);
    let mut in_place = Vec::new();
    let mut from_value = Vec::new();
    let omitted = schema.collect_body_violations(&parsed, &mut in_place, usize::MAX);
    let omitted_value =
        schema.collect_violations(Location::Body, value, &mut from_value, usize::MAX);
    assert_eq!((omitted, in_place.len()), (omitted_value, from_value.len()));
}

/// Config YAML text → `Snapshot`, resolved against the shipped `config/` directory.
///
/// Inputs whose schema directory or mock bodies would be read from outside the repository's
/// `config/` and `schemas/` directories are parsed but not compiled: the fuzzer would
/// otherwise read `/dev/zero` or scan `/` (an operator may; a fuzzer should not).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = repo().join("config/fuzz.yaml");
    // YAML breaks lines at LF, CRLF and a lone CR (which `str::lines` does not count).
    let lines = text.replace("\r\n", "\n").matches(['\n', '\r']).count() as u64 + 1;
    let check_error = |error: &config::ConfigError| {
        assert_eq!(error.file, path);
        assert!(!error.message.is_empty(), "{error:?}");
        if let Some(line) = error.line {
            assert!(line <= lines, "line {line} of {lines}: {error}");
        }
        let _ = error.to_string();
    };
    let raw = match config::parse_with_env(&path, text, fuzz_env) {
        Ok(raw) => raw,
        Err(error) => {
            check_error(&error);
            return;
        }
    };
    if !confined(&path, &raw) {
        return;
    }
    match Snapshot::from_text(&path, text, fuzz_env, &GatewayClock::real()) {
        Ok(snapshot) => {
            assert!(!snapshot.listeners.is_empty());
            assert!(snapshot.routes.len() <= raw.routes.len());
            let names: BTreeSet<&str> = snapshot.routes.iter().map(|r| r.name.as_str()).collect();
            assert_eq!(names.len(), snapshot.routes.len(), "route names repeat");
            let summary = snapshot.summary();
            for route in &snapshot.routes {
                assert!(summary.contains(&route.name));
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "a failed load must say why");
            errors.iter().for_each(check_error);
        }
    }
}

/// The environment config inputs see: two variables, everything else unset.
fn fuzz_env(name: &str) -> Option<String> {
    match name {
        "FUZZ_UPSTREAM" => Some("mock".to_string()),
        "FUZZ_LISTEN" => Some("127.0.0.1:0".to_string()),
        _ => None,
    }
}

/// Whether every file the config would read lies under the repository's `config/` or
/// `schemas/` directory (compared lexically: neither holds symlinks).
fn confined(path: &Path, raw: &config::RawConfig) -> bool {
    let base = path.parent().unwrap_or(Path::new(""));
    let allowed = [repo().join("config"), repo().join("schemas")];
    let inside = |relative: &str| {
        let resolved = normalize(&base.join(relative));
        allowed.iter().any(|root| resolved.starts_with(root))
    };
    let schema_dir = raw.schema_dir.as_deref().unwrap_or("schemas");
    inside(schema_dir)
        && raw
            .upstreams
            .values()
            .filter_map(|upstream| upstream.value.mock.as_ref())
            .all(|mock| inside(&mock.body_file.value))
}

/// `path` with `.` and `..` applied (no file system access).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The query keys as the gateway decodes them: every non-empty `&`-separated pair gives one
/// key, so the object has at most that many, and a pair with nothing to decode keeps its key.
fn check_keys(raw: &str, object: &serde_json::Map<String, Value>) {
    let pairs: Vec<&str> = raw.split('&').filter(|p| !p.is_empty()).collect();
    assert!(object.len() <= pairs.len());
    for pair in pairs {
        let key = pair.split_once('=').map_or(pair, |(key, _)| key);
        if !key.contains(['%', '+']) {
            assert!(object.contains_key(key), "key {key:?} lost");
        }
    }
}

/// Runs the schema as `validate::check` does (violations worded up to `cap`, the rest
/// counted) and checks what comes back.
fn validate(
    schema: &CompiledSchema,
    location: Location,
    value: &Value,
    cap: usize,
    shipped: &Shipped,
) {
    let mut worded = Vec::new();
    let omitted = schema.collect_violations(location, value, &mut worded, cap);
    // With a cap of 0 every error is only counted: the total.
    let total = schema.collect_violations(location, value, &mut Vec::new(), 0);
    assert_eq!(
        worded.is_empty(),
        total == 0,
        "an invalid value got no message"
    );
    assert!(omitted <= total);
    let errors_worded = total - omitted;
    assert!(
        errors_worded <= cap,
        "{errors_worded} errors worded past the cap of {cap}"
    );
    assert!(worded.len() >= errors_worded, "an error was not worded");
    check_violations(location, value, &worded, shipped);
    let messages = schema::render_messages(&worded, omitted, cap);
    assert!(messages.len() <= cap + 1);
}

/// Per violation: its location, a pointer into the value, and no request value in the text
/// (schema.rs: "a violation message never quotes a request value").
///
/// The value check is exact rather than a substring search, which libFuzzer's comparison
/// tracing learns to satisfy with a slice of the message itself: a message may not hold a
/// string value as a JSON string (the way jsonschema's own messages quote values) unless the
/// schema or a key holds the same JSON string, and it may hold no character that neither the
/// schema, the keys nor the fixed wording have.
fn check_violations(location: Location, value: &Value, found: &[Violation], shipped: &Shipped) {
    if found.is_empty() {
        return;
    }
    let mut keys = Vec::new();
    let mut strings = Vec::new();
    collect_strings(value, &mut keys, &mut strings);
    let quote = |text: &str| serde_json::to_string(text).unwrap_or_default();
    let quoted_keys: Vec<String> = keys.iter().map(|k| quote(k)).collect();
    let key_chars: BTreeSet<char> = quoted_keys.iter().flat_map(|k| k.chars()).collect();
    let quoted_values: Vec<String> = strings
        .iter()
        .map(|s| quote(s))
        .filter(|q| !quoted_keys.contains(q))
        .filter(|q| !shipped.schema_texts.iter().any(|t| t.contains(q.as_str())))
        .collect();
    for violation in found {
        assert_eq!(violation.location, location);
        let message = &violation.message;
        assert!(message.starts_with(location.as_str()), "{violation:?}");
        let pointer = &violation.pointer;
        assert!(
            pointer.is_empty() || pointer.starts_with('/'),
            "{pointer:?}"
        );
        // A missing property's pointer names where it would be: its parent exists.
        let target = if violation.keyword == "required" {
            pointer.rsplit_once('/').map_or("", |(parent, _)| parent)
        } else {
            pointer
        };
        assert!(
            value.pointer(target).is_some(),
            "pointer {target:?} of {violation:?} is not in the value"
        );
        for quoted in &quoted_values {
            assert!(
                !message.contains(quoted.as_str()),
                "message {message:?} quotes the request value {quoted}"
            );
        }
        if let Some(odd) = message
            .chars()
            .find(|c| !shipped.message_chars.contains(c) && !key_chars.contains(c))
        {
            panic!("message {message:?} holds {odd:?}, which only a request value can have given");
        }
    }
}

fn collect_strings<'v>(value: &'v Value, keys: &mut Vec<&'v str>, strings: &mut Vec<&'v str>) {
    match value {
        Value::String(text) => strings.push(text),
        Value::Array(items) => items
            .iter()
            .for_each(|item| collect_strings(item, keys, strings)),
        Value::Object(map) => {
            for (key, member) in map {
                keys.push(key);
                collect_strings(member, keys, strings);
            }
        }
        _ => {}
    }
}

/// `parse_body` is serde_json with stricter rules: whatever it accepts, serde_json accepts as
/// the same value, and every number in it is as written; whatever serde_json accepts, it
/// refuses only for a duplicate key, depth, or a number that is not as written.
fn compare_with_serde_json(data: &[u8], depth: usize, ours: &Result<Value, BodyError>) {
    let theirs = serde_json::from_slice::<Value>(data);
    let numbers = || {
        let text = std::str::from_utf8(data).unwrap_or_default();
        number_literals(text)
            .into_iter()
            .map(|literal| (literal, number_as_written(literal)))
    };
    match (ours, &theirs) {
        (Ok(value), Ok(same)) => {
            assert_eq!(value, same);
            assert!(nesting(value) <= depth.min(schema::SERDE_JSON_MAX_DEPTH));
            for (literal, as_written) in numbers() {
                assert!(as_written, "accepted the number {literal:?}");
            }
        }
        (Ok(value), Err(error)) => panic!("accepted {value} where serde_json says {error}"),
        (Err(BodyError::DuplicateKey { .. }), Ok(_)) => {}
        (Err(BodyError::TooDeep { limit }), Ok(value)) => {
            assert!(nesting(value) > *limit, "refused as too deep: {value}");
        }
        (Err(BodyError::Number { .. }), Ok(value)) => {
            assert!(
                numbers().any(|(_, as_written)| !as_written),
                "refused a number in {value}"
            );
        }
        (Err(error), Ok(value)) => panic!("refused {value}: {error}"),
        (Err(_), Err(_)) => {}
    }
}

/// Every number literal of valid JSON text, found by a scan of its own (independent of the
/// parser's, which only looks from where serde_json has got to).
pub fn number_literals(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    let mut in_string = false;
    while let Some(&byte) = bytes.get(at) {
        match (in_string, byte) {
            (true, b'\\') => at += 1,
            (_, b'"') => in_string = !in_string,
            (false, b'-' | b'0'..=b'9') => {
                let start = at;
                while bytes
                    .get(at + 1)
                    .is_some_and(|b| b.is_ascii_digit() || b"+-.eE".contains(b))
                {
                    at += 1;
                }
                found.push(text.get(start..=at).unwrap_or_default());
            }
            _ => {}
        }
        at += 1;
    }
    found
}

/// Whether a JSON number literal is validated as written, decided the slow and obvious way
/// (the reference for `parse_body`'s check): an integer serde_json holds exactly (i64/u64),
/// or a literal of at most 64 bytes whose significant digits and exponent are those of the
/// shortest form of the double the standard library parses it to.
pub fn number_as_written(literal: &str) -> bool {
    let integer = !literal.contains(['.', 'e', 'E']);
    if integer && (literal.parse::<u64>().is_ok() || literal.parse::<i64>().is_ok()) {
        return true;
    }
    if literal.len() > schema::MAX_LITERAL_LEN {
        return false;
    }
    let Ok(double) = literal.parse::<f64>() else {
        return false;
    };
    let written = significant(literal);
    if written.1.is_empty() {
        return double == 0.0;
    }
    double != 0.0 && significant(&format!("{double:e}")) == written
}

/// (negative, significant digits, power of ten of the first one); no digits for zero.
fn significant(number: &str) -> (bool, String, i64) {
    let (negative, rest) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number),
    };
    let (mantissa, exponent) = rest.split_once(['e', 'E']).unwrap_or((rest, "0"));
    // Exponents past any double's range say the same as a large one.
    let exponent = exponent
        .parse::<i64>()
        .unwrap_or(if exponent.starts_with('-') {
            -1_000_000
        } else {
            1_000_000
        });
    let whole = mantissa.split('.').next().unwrap_or_default().len() as i64;
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let trimmed = digits.trim_start_matches('0');
    let leading = (digits.len() - trimmed.len()) as i64;
    let trimmed = trimmed.trim_end_matches('0');
    if trimmed.is_empty() {
        return (false, String::new(), 0);
    }
    (
        negative,
        trimmed.to_string(),
        whole - 1 - leading + exponent.clamp(-1_000_000, 1_000_000),
    )
}

/// Containers around the deepest value: `1` is 0, `[]` is 1, `[[1]]` is 2.
fn nesting(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

/// A 400 never carries body content, except the keys of a duplicate's pointer.
fn check_body_error(error: &BodyError) {
    let text = error.to_string();
    match error {
        BodyError::DuplicateKey { key_pointer } => {
            assert!(key_pointer.starts_with('/'), "{key_pointer:?}");
            assert!(text.ends_with(key_pointer.as_str()));
        }
        _ => assert!(text.len() <= 200, "a long 400 message: {text}"),
    }
}
