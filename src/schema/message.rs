//! Schema errors as violations: a location, a JSON pointer, the failing keyword and a message.
//!
//! Messages are built from the error's kind and the schema's own limits, never from
//! jsonschema's `Display`, which quotes the offending value: request values may be secrets
//! (tokens in headers, personal data in bodies). Property names do appear, as part of the
//! field's path; values never do.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{JsonType, ValidationError};
use serde_json::Value;

use super::{Location, Violation};

/// Enum values listed in one message, at most; the rest are counted.
const MAX_ENUM_SHOWN: usize = 20;

/// Appends the violations one validation error stands for (a `required` or
/// `additionalProperties` error may name several properties).
pub(crate) fn push_violations(
    location: Location,
    instance: &Value,
    error: &ValidationError<'_>,
    out: &mut Vec<Violation>,
) {
    push_violations_keeping(location, instance, error, out, &mut |_, _| true);
}

/// [`push_violations`], with the names an `additionalProperties` or `unevaluatedProperties`
/// error gives filtered by `keep` (the object's pointer, the name): strict mode drops the
/// declared fields a failed branch left unevaluated, and names reported twice.
pub(crate) fn push_violations_keeping(
    location: Location,
    instance: &Value,
    error: &ValidationError<'_>,
    out: &mut Vec<Violation>,
    keep: &mut dyn FnMut(&str, &str) -> bool,
) {
    let pointer = error.instance_path().as_str();
    let kind = error.kind();
    // The metrics label of the value at `pointer`; a child's label adds one segment to it.
    let evaluation_path = error.evaluation_path().as_str();
    let label = || field_label(location, pointer, |name| names_on(evaluation_path, name));
    let mut push =
        |pointer: String, field_label: String, keyword: &'static str, problem: String| {
            let message = format!("{} {problem}", field(location, &pointer, Some(instance)));
            out.push(Violation {
                location,
                pointer,
                field: field_label,
                keyword,
                message,
            });
        };
    match kind {
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_string);
            // The name comes from the schema's `required`.
            let field = format!("{}.{name}", label());
            push(
                child(pointer, &name),
                field,
                "required",
                "is required".to_string(),
            );
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            let keyword = keyword_of(kind);
            // The names are the client's: one label for them all.
            let field = format!("{}.*", label());
            for name in unexpected.iter().filter(|name| keep(pointer, name)) {
                let problem = "is not allowed".to_string();
                push(child(pointer, name), field.clone(), keyword, problem);
            }
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            match explain_alternatives(pointer, context) {
                Alternatives::Types(types) => {
                    let problem = type_problem(&types);
                    push(pointer.to_string(), label(), keyword_of(kind), problem);
                }
                Alternatives::Branch(errors) => {
                    for inner in errors {
                        push_violations_keeping(location, instance, inner, out, keep);
                    }
                }
                Alternatives::Unclear => push(
                    pointer.to_string(),
                    label(),
                    keyword_of(kind),
                    format!("is invalid ({})", keyword_of(kind)),
                ),
            }
        }
        _ => push(
            pointer.to_string(),
            label(),
            keyword_of(kind),
            problem(kind),
        ),
    }
}

/// A field's metrics label (`body.filter.channelTypes[*]`): the location, then per segment of
/// `pointer` `[*]` for an array index, `.name` for a property the schema names (`named`
/// says which), and `.*` for a key the client chose (one under `additionalProperties` or
/// `patternProperties`). Labels are thus spelled from the schema alone: a client sending a
/// thousand distinct keys adds one series, not a thousand.
pub(crate) fn field_label(
    location: Location,
    pointer: &str,
    named: impl Fn(&str) -> bool,
) -> String {
    let mut out = String::from(location.as_str());
    for segment in pointer.split('/').skip(1) {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str("[*]");
        } else if named(segment) {
            out.push('.');
            out.push_str(&segment.replace("~1", "/").replace("~0", "~"));
        } else {
            out.push_str(".*");
        }
    }
    out
}

/// The violation for a number that is not exactly the double it was read as, found where the
/// schema constrains it (see `CompiledSchema::collect_inexact`): at `pointer` in `instance`,
/// reached by the schema at `evaluation_path`.
pub(crate) fn inexact_number(
    location: Location,
    pointer: &str,
    evaluation_path: &str,
    instance: &Value,
) -> Violation {
    Violation {
        location,
        pointer: pointer.to_string(),
        field: field_label(location, pointer, |name| names_on(evaluation_path, name)),
        keyword: "precision",
        message: format!(
            "{} {}",
            field(location, pointer, Some(instance)),
            super::number::NumberProblem::Inexact.requirement()
        ),
    }
}

/// Whether `segment` (escaped as in a JSON pointer) is a property name the schema spells on
/// `evaluation_path`: the token after a `properties` keyword.
fn names_on(evaluation_path: &str, segment: &str) -> bool {
    let mut tokens = evaluation_path.split('/').skip(1);
    while let Some(token) = tokens.next() {
        // The name after `properties` is consumed here, so it is never read as a keyword.
        if token == "properties" && tokens.next() == Some(segment) {
            return true;
        }
    }
    false
}

/// What the branches of a failed `anyOf`/`oneOf` say together.
enum Alternatives<'e> {
    /// Every branch wants another type for this very value: name them all.
    Types(Vec<JsonType>),
    /// Exactly one branch accepts the value's type: its errors are the real problems (the
    /// common `anyOf: [{...}, {"type": "null"}]` nullable pattern).
    Branch(&'e [ValidationError<'static>]),
    /// Anything else; reported as the combinator failing.
    Unclear,
}

fn explain_alternatives<'e>(
    pointer: &str,
    context: &'e [Vec<ValidationError<'static>>],
) -> Alternatives<'e> {
    let type_errors_here = |errors: &[ValidationError<'_>]| -> Option<Vec<JsonType>> {
        let here: Vec<_> = errors
            .iter()
            .filter(|e| e.instance_path().as_str() == pointer)
            .filter_map(|e| match e.kind() {
                ValidationErrorKind::Type { kind } => Some(types_of(kind)),
                _ => None,
            })
            .collect();
        if here.is_empty() {
            None
        } else {
            Some(here.into_iter().flatten().collect())
        }
    };
    let mut wanted = Vec::new();
    let mut type_matched = Vec::new();
    for branch in context {
        match type_errors_here(branch) {
            Some(types) => wanted.extend(types),
            None => type_matched.push(branch.as_slice()),
        }
    }
    match type_matched.as_slice() {
        [] if !wanted.is_empty() => Alternatives::Types(wanted),
        [only] if !only.is_empty() => Alternatives::Branch(only),
        _ => Alternatives::Unclear,
    }
}

/// The problem text for every kind but those handled in [`push_violations`].
fn problem(kind: &ValidationErrorKind) -> String {
    match kind {
        ValidationErrorKind::Type { kind } => type_problem(&types_of(kind)),
        ValidationErrorKind::Minimum { limit } => format!("must be >= {limit}"),
        ValidationErrorKind::ExclusiveMinimum { limit } => format!("must be > {limit}"),
        ValidationErrorKind::Maximum { limit } => format!("must be <= {limit}"),
        ValidationErrorKind::ExclusiveMaximum { limit } => format!("must be < {limit}"),
        ValidationErrorKind::MaxLength { limit } => {
            format!(
                "must be at most {limit} {} long",
                plural(*limit, "character")
            )
        }
        ValidationErrorKind::MinLength { limit } => {
            format!(
                "must be at least {limit} {} long",
                plural(*limit, "character")
            )
        }
        ValidationErrorKind::MaxItems { limit } => {
            format!("must have at most {limit} {}", plural(*limit, "item"))
        }
        ValidationErrorKind::MinItems { limit } => {
            format!("must have at least {limit} {}", plural(*limit, "item"))
        }
        ValidationErrorKind::AdditionalItems { limit } => {
            format!(
                "must have at most {limit} {}",
                plural(*limit as u64, "item")
            )
        }
        ValidationErrorKind::MaxProperties { limit } => {
            format!("must have at most {limit} {}", properties_word(*limit))
        }
        ValidationErrorKind::MinProperties { limit } => {
            format!("must have at least {limit} {}", properties_word(*limit))
        }
        ValidationErrorKind::Enum { options } => enum_problem(options),
        ValidationErrorKind::Constant { expected_value } => {
            format!("must be equal to {expected_value}")
        }
        ValidationErrorKind::Format { format } => format!("must be a valid {format}"),
        ValidationErrorKind::Pattern { pattern } => format!("must match the pattern {pattern}"),
        ValidationErrorKind::MultipleOf { multiple_of } => {
            format!("must be a multiple of {multiple_of}")
        }
        ValidationErrorKind::UniqueItems => "must not contain duplicate items".to_string(),
        ValidationErrorKind::FalseSchema => "is not allowed".to_string(),
        ValidationErrorKind::AdditionalProperties { .. }
        | ValidationErrorKind::AnyOf { .. }
        | ValidationErrorKind::BacktrackLimitExceeded { .. }
        | ValidationErrorKind::RegexEngineFailure { .. }
        | ValidationErrorKind::Contains
        | ValidationErrorKind::ContentEncoding { .. }
        | ValidationErrorKind::ContentMediaType { .. }
        | ValidationErrorKind::Custom { .. }
        | ValidationErrorKind::FromUtf8 { .. }
        | ValidationErrorKind::Not { .. }
        | ValidationErrorKind::OneOfMultipleValid { .. }
        | ValidationErrorKind::OneOfNotValid { .. }
        | ValidationErrorKind::PropertyNames { .. }
        | ValidationErrorKind::Required { .. }
        | ValidationErrorKind::UnevaluatedItems { .. }
        | ValidationErrorKind::UnevaluatedProperties { .. }
        | ValidationErrorKind::Referencing(_) => format!("is invalid ({})", keyword_of(kind)),
    }
}

/// The schema keyword behind an error kind, as a `'static` name for the problem+json output.
fn keyword_of(kind: &ValidationErrorKind) -> &'static str {
    match kind {
        ValidationErrorKind::AdditionalItems { .. } => "additionalItems",
        ValidationErrorKind::AdditionalProperties { .. } => "additionalProperties",
        ValidationErrorKind::AnyOf { .. } => "anyOf",
        ValidationErrorKind::BacktrackLimitExceeded { .. }
        | ValidationErrorKind::RegexEngineFailure { .. }
        | ValidationErrorKind::Pattern { .. } => "pattern",
        ValidationErrorKind::Constant { .. } => "const",
        ValidationErrorKind::Contains => "contains",
        ValidationErrorKind::ContentEncoding { .. } | ValidationErrorKind::FromUtf8 { .. } => {
            "contentEncoding"
        }
        ValidationErrorKind::ContentMediaType { .. } => "contentMediaType",
        // The gateway registers no custom keywords, so this arm is never taken.
        ValidationErrorKind::Custom { .. } => "custom",
        ValidationErrorKind::Enum { .. } => "enum",
        ValidationErrorKind::ExclusiveMaximum { .. } => "exclusiveMaximum",
        ValidationErrorKind::ExclusiveMinimum { .. } => "exclusiveMinimum",
        ValidationErrorKind::FalseSchema => "false",
        ValidationErrorKind::Format { .. } => "format",
        ValidationErrorKind::MaxItems { .. } => "maxItems",
        ValidationErrorKind::Maximum { .. } => "maximum",
        ValidationErrorKind::MaxLength { .. } => "maxLength",
        ValidationErrorKind::MaxProperties { .. } => "maxProperties",
        ValidationErrorKind::MinItems { .. } => "minItems",
        ValidationErrorKind::Minimum { .. } => "minimum",
        ValidationErrorKind::MinLength { .. } => "minLength",
        ValidationErrorKind::MinProperties { .. } => "minProperties",
        ValidationErrorKind::MultipleOf { .. } => "multipleOf",
        ValidationErrorKind::Not { .. } => "not",
        ValidationErrorKind::OneOfMultipleValid { .. }
        | ValidationErrorKind::OneOfNotValid { .. } => "oneOf",
        ValidationErrorKind::PropertyNames { .. } => "propertyNames",
        ValidationErrorKind::Required { .. } => "required",
        ValidationErrorKind::Type { .. } => "type",
        ValidationErrorKind::UnevaluatedItems { .. } => "unevaluatedItems",
        ValidationErrorKind::UnevaluatedProperties { .. } => "unevaluatedProperties",
        ValidationErrorKind::UniqueItems => "uniqueItems",
        ValidationErrorKind::Referencing(_) => "$ref",
    }
}

fn types_of(kind: &TypeKind) -> Vec<JsonType> {
    match kind {
        TypeKind::Single(single) => vec![*single],
        TypeKind::Multiple(set) => set.iter().collect(),
    }
}

/// `must be of type string or null`: types in jsonschema's order, except that `null` comes
/// last, as "X or null" is how people say nullable.
fn type_problem(types: &[JsonType]) -> String {
    let mut names: Vec<&'static str> = Vec::with_capacity(types.len());
    let mut nullable = false;
    for ty in types {
        match ty {
            JsonType::Null => nullable = true,
            other => {
                let name = other.as_str();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    if nullable {
        names.push("null");
    }
    format!("must be of type {}", names.join(" or "))
}

fn enum_problem(options: &Value) -> String {
    let Value::Array(values) = options else {
        return format!("must be one of: {options}");
    };
    let shown: Vec<String> = values
        .iter()
        .take(MAX_ENUM_SHOWN)
        .map(Value::to_string)
        .collect();
    let mut text = format!("must be one of: {}", shown.join(", "));
    if values.len() > MAX_ENUM_SHOWN {
        text.push_str(&format!(" (and {} more)", values.len() - MAX_ENUM_SHOWN));
    }
    text
}

fn plural(count: u64, word: &str) -> String {
    if count == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

fn properties_word(count: u64) -> &'static str {
    if count == 1 {
        "property"
    } else {
        "properties"
    }
}

/// The pointer of a child property of the value at `parent`.
fn child(parent: &str, name: &str) -> String {
    format!("{parent}/{}", escape_pointer_segment(name))
}

/// Escapes one JSON pointer segment (RFC 6901: `~` as `~0`, `/` as `~1`).
pub(crate) fn escape_pointer_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The field a pointer designates, as messages write it: the location, then `.name` per
/// property and `[i]` per array item (`body.items[0].id`). Walking `instance` tells an array
/// index from a property whose name is digits; without an instance, digits read as names.
/// A name that would be ambiguous in that notation (empty, or holding `.`, `[`, `]`, `"`,
/// whitespace or control characters) is written as `["name"]`.
pub(crate) fn field(location: Location, pointer: &str, instance: Option<&Value>) -> String {
    let mut out = String::from(location.as_str());
    let mut current = instance;
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        match current {
            Some(Value::Array(items)) => {
                if let Ok(index) = segment.parse::<usize>() {
                    out.push_str(&format!("[{index}]"));
                    current = items.get(index);
                    continue;
                }
                push_name(&mut out, &segment);
                current = None;
            }
            Some(Value::Object(map)) => {
                push_name(&mut out, &segment);
                current = map.get(&segment);
            }
            _ => {
                push_name(&mut out, &segment);
                current = None;
            }
        }
    }
    out
}

fn push_name(out: &mut String, name: &str) {
    let plain = !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '[' | ']' | '"'));
    if plain {
        out.push('.');
        out.push_str(name);
    } else {
        out.push('[');
        // Serialising a `&str` cannot fail; the fallback only keeps this free of `unwrap`.
        out.push_str(&serde_json::to_string(name).unwrap_or_else(|_| format!("\"{name}\"")));
        out.push(']');
    }
}
