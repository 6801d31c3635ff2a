//! JSON Schemas: compiled once when the config loads, run on every request.
//!
//! This module is pure on the request path: [`CompiledSchema::violations`], the `coerce_*`
//! methods, [`parse_body`] and [`render_messages`] do no IO, take no locks and never compile
//! anything. All file reading happens in [`CompiledSchema::load`] (or [`SchemaDir`]), which the
//! snapshot builder calls off the request path.
//!
//! Architecture invariant: no schema reaches the network or the file system through `$ref`.
//! References resolve only among the `*.json` files found under the schema directory; remote,
//! `file:` and escaping references fail the load.
//!
//! Architecture invariant: a violation message never quotes a request value. It names the
//! location and the field's path, then the problem in the schema's terms.

mod coerce;
mod documents;
mod json;
mod load;
mod message;
mod number;
mod strict;
mod tree;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use jsonschema::{PatternOptions, ReferencingError, Registry, ValidationError, Validator};

use jsonschema::json::Node as _;
use serde_json::Value;
pub use tree::Instance;
use tree::Node;

pub use coerce::{Decode, Fields, PathStyle};
pub use documents::DocumentSet;
pub use json::{parse_body, parse_request_body, BodyError, Parsed, SERDE_JSON_MAX_DEPTH};
pub use load::SchemaError;

/// Parses a document's JSON text with the strict rules schema files follow (duplicate keys,
/// numbers not as written); the error says what and where.
pub fn parse_document_json(text: &str) -> Result<Value, String> {
    load::parse_json_text(text)
}
pub use number::{NumberProblem, MAX_LITERAL_LEN};

use coerce::Plan;
use load::{LocalRetriever, Scanned};

/// Where in the request a value was found. Messages start with its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    Body,
    Query,
    Header,
    Path,
    Cookie,
}

impl Location {
    /// The name messages and problem details use: `body`, `query`, `header`, `path`,
    /// `cookie`.
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Body => "body",
            Location::Query => "query",
            Location::Header => "header",
            Location::Path => "path",
            Location::Cookie => "cookie",
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One schema violation, ready for both envelope styles (the 422 `message` array and RFC 9457
/// problem details).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub location: Location,
    /// JSON pointer of the offending value in the location's object; for `required`, the
    /// pointer the missing property would have.
    pub pointer: String,
    /// The field as the `rejected_fields` metric labels it (`body.items[*].id`), spelled from
    /// the schema alone: a key the client chose is `*`.
    pub field: String,
    /// The schema keyword that failed (`required`, `type`, `minimum`, ...), `repeated` for a
    /// query key or header that occurs more than once where the schema does not say array, or
    /// `precision` for a query, header or path value read as a number that is not exactly the
    /// 64-bit float it is read as.
    pub keyword: &'static str,
    /// The full text: `body.channel_id must be >= 1`.
    pub message: String,
}

/// The `*.json` files of one schema directory, read once so that many schemas can be compiled
/// against them. [`CompiledSchema::load`] is this plus one [`SchemaDir::compile`].
#[derive(Debug, Clone)]
pub struct SchemaDir {
    scanned: Arc<Scanned>,
    /// In a strict view ([`SchemaDir::strict`]), what each closed object declares.
    closed: Option<Arc<strict::Closed>>,
}

impl SchemaDir {
    /// Reads and parses every `*.json` file under `dir` (following symlinked files, not
    /// symlinked directories). Fails only if the directory itself cannot be listed; a broken
    /// file fails the schemas that use it, when they are compiled.
    pub fn scan(dir: &Path) -> Result<SchemaDir, SchemaError> {
        Ok(SchemaDir {
            scanned: Arc::new(Scanned::scan(dir)?),
            closed: None,
        })
    }

    /// The strict view of the directory, for the bodies of routes with `strict: true`
    /// (`bodies`, paths as given to [`SchemaDir::compile`]): a copy of the files in which
    /// every object those bodies can hold is closed to fields it does not declare (see
    /// `schema/strict.rs`). Schemas compiled from it word unknown fields like the rest.
    pub fn strict(&self, bodies: &[std::path::PathBuf]) -> SchemaDir {
        let scanned = &*self.scanned;
        let mut by_uri: std::collections::HashMap<String, Value> = scanned
            .by_uri
            .iter()
            .filter_map(|(uri, doc)| Some((uri.clone(), Value::clone(doc.parsed.as_ref().ok()?))))
            .collect();
        let roots: Vec<(String, String)> = bodies
            .iter()
            .filter_map(|file| {
                let canonical = std::fs::canonicalize(file).ok()?;
                let rel = canonical.strip_prefix(&scanned.root).ok()?;
                Some((scanned.uri_of(rel), String::new()))
            })
            .collect();
        let docs = strict::Docs {
            by_uri: &mut by_uri,
            aliases: &scanned.by_id,
        };
        let closed = strict::close(docs, &roots);
        let mut copy = Scanned {
            root: scanned.root.clone(),
            base: scanned.base.clone(),
            by_uri: std::collections::HashMap::with_capacity(scanned.by_uri.len()),
            by_id: scanned.by_id.clone(),
        };
        for (uri, doc) in &scanned.by_uri {
            let parsed = match by_uri.remove(uri) {
                Some(value) => Ok(Arc::new(value)),
                None => doc.parsed.clone(),
            };
            let rel = doc.rel.clone();
            copy.by_uri.insert(uri.clone(), load::Doc { rel, parsed });
        }
        SchemaDir {
            scanned: Arc::new(copy),
            closed: Some(Arc::new(closed)),
        }
    }

    /// A hash of what the scan read (each file's URI and parsed content, or its error), so a
    /// caller can tell whether two scans saw the same schemas without reading the files again
    /// (a second read could see a newer file than the one compiled).
    pub fn content_hash(&self) -> u64 {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut docs: Vec<_> = self.scanned.by_uri.iter().collect();
        docs.sort_by(|a, b| a.0.cmp(b.0));
        let mut hasher = DefaultHasher::new();
        for (uri, doc) in docs {
            uri.hash(&mut hasher);
            match &doc.parsed {
                Ok(value) => value.to_string().hash(&mut hasher),
                Err(error) => error.hash(&mut hasher),
            }
        }
        hasher.finish()
    }

    /// Every file the scan could parse, by its path relative to the directory with `/`
    /// between segments, for tools that publish the schemas (`schemagate openapi`).
    pub fn documents(&self) -> Vec<(String, Arc<Value>)> {
        let mut documents: Vec<(String, Arc<Value>)> = self
            .scanned
            .by_uri
            .values()
            .filter_map(|doc| {
                let value = doc.parsed.as_ref().ok()?;
                let segments: Vec<String> = doc
                    .rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                Some((segments.join("/"), Arc::clone(value)))
            })
            .collect();
        documents.sort_by(|a, b| a.0.cmp(&b.0));
        documents
    }

    /// Compiles `file`, a path inside the directory (as given to `scan`, or absolute).
    /// Errors name `file` as the caller wrote it.
    pub fn compile(&self, file: &Path) -> Result<CompiledSchema, SchemaError> {
        let scanned = &self.scanned;
        let fail = |message: String| SchemaError::new(file, message);
        let canonical = std::fs::canonicalize(file)
            .map_err(|e| fail(format!("cannot open schema file: {e}")))?;
        let rel = canonical.strip_prefix(&scanned.root).map_err(|_| {
            fail(format!(
                "is outside the schema directory {}",
                scanned.root.display()
            ))
        })?;
        let uri = scanned.uri_of(rel);
        // A file the scan did not take (another extension, or created since) is read now.
        let root = match scanned.by_uri.get(&uri) {
            Some(doc) => doc.parsed.clone().map_err(&fail)?,
            None => Arc::new(load::read_json(&canonical).map_err(fail)?),
        };
        // Strict mode closes objects with `unevaluatedProperties`, which drafts before
        // 2019-09 ignore: such a file would be checked as if strict were off.
        if self.closed.is_some() {
            let dialect = root
                .get("$schema")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if ["draft-03", "draft-04", "draft-06", "draft-07"]
                .iter()
                .any(|old| dialect.contains(old))
            {
                return Err(fail(format!(
                    "strict: true needs JSON Schema 2019-09 or later (it closes objects with \
                     unevaluatedProperties), and this file declares {dialect}"
                )));
            }
        }
        let retriever = LocalRetriever(Arc::clone(scanned));
        let refs = |error: &ReferencingError| fail(self.reference_problem(&uri, &root, error));
        let registry = Registry::new()
            .retriever(retriever.clone())
            .add(&uri, Value::clone(&root))
            .map_err(|e| refs(&e))?
            .prepare()
            .map_err(|e| refs(&e))?;
        let validator = jsonschema::options_for::<Instance>()
            .with_registry(&registry)
            .with_base_uri(uri.clone())
            .with_retriever(retriever)
            // The `regex` crate runs in time linear in the input: a pattern such as `^(a+)+$`
            // cannot be turned against the gateway. Look-around and back-references are refused
            // at load instead.
            .with_pattern_options(PatternOptions::regex())
            .should_validate_formats(true)
            .build(&root)
            .map_err(|e| fail(self.build_problem(&uri, &root, &e)))?;
        let plan = Plan::build(
            &root,
            &uri,
            &PlanDocs {
                scanned,
                root_uri: &uri,
                root: &root,
            },
        );
        Ok(CompiledSchema {
            validator,
            plan,
            closed: self.closed.clone(),
            source: rel.to_path_buf(),
        })
    }

    /// Explains a compile failure: a bad reference, or the schema breaking its meta-schema.
    fn build_problem(&self, uri: &str, root: &Value, error: &ValidationError<'_>) -> String {
        if let jsonschema::error::ValidationErrorKind::Referencing(inner) = error.kind() {
            return self.reference_problem(uri, root, inner);
        }
        let at = error.instance_path().as_str();
        let at = if at.is_empty() { "the top level" } else { at };
        format!("invalid schema at {at}: {error}")
    }

    /// Explains a reference that could not be resolved, naming the `$ref` as written and the
    /// file holding it when it can be found.
    fn reference_problem(&self, uri: &str, root: &Value, error: &ReferencingError) -> String {
        let scanned = &*self.scanned;
        match error {
            ReferencingError::Unretrievable {
                uri: target,
                source,
            } => {
                let target = target.split('#').next().unwrap_or(target);
                let why = source.to_string();
                match self.find_ref(uri, root, |resolved, _| resolved == target) {
                    Some((raw, holder)) => {
                        format!("$ref \"{raw}\" in {holder} cannot be used: {why}")
                    }
                    None => format!(
                        "a $ref to {} cannot be used: {why}",
                        scanned.describe(target)
                    ),
                }
            }
            ReferencingError::PointerToNowhere { pointer } => {
                match self.find_ref(uri, root, |_, fragment| fragment == pointer) {
                    Some((raw, holder)) => {
                        format!("$ref \"{raw}\" in {holder} points to nothing: {pointer} does not exist")
                    }
                    None => format!("a $ref points to nothing: {pointer} does not exist"),
                }
            }
            other => format!("bad $ref: {other}"),
        }
    }

    /// The first `$ref` (in the compiled file, then in the other files, in path order) whose
    /// fragment-less target and fragment satisfy `matches`, with the file holding it. Only used
    /// to word an error, so it ignores nested `$id`s, which a plain search cannot follow.
    fn find_ref(
        &self,
        uri: &str,
        root: &Value,
        matches: impl Fn(&str, &str) -> bool,
    ) -> Option<(String, String)> {
        let scanned = &*self.scanned;
        let mut others: Vec<(&String, &load::Doc)> = scanned
            .by_uri
            .iter()
            .filter(|(other, _)| other.as_str() != uri)
            .collect();
        others.sort_by(|a, b| a.1.rel.cmp(&b.1.rel));
        let docs =
            std::iter::once((uri, root)).chain(others.into_iter().filter_map(|(other, doc)| {
                doc.parsed.as_ref().ok().map(|v| (other.as_str(), &**v))
            }));
        for (doc_uri, value) in docs {
            let Ok(base) = jsonschema::uri::from_str(doc_uri) else {
                continue;
            };
            let mut refs = Vec::new();
            collect_refs(value, &mut refs);
            for raw in refs {
                let (path, fragment) = raw.split_once('#').unwrap_or((raw, ""));
                let resolved = if path.is_empty() {
                    Some(doc_uri.to_string())
                } else {
                    jsonschema::uri::resolve_against(&base.borrow(), path)
                        .ok()
                        .map(|u| u.as_str().to_string())
                };
                if resolved.is_some_and(|r| matches(&r, fragment)) {
                    return Some((raw.to_string(), scanned.describe(doc_uri)));
                }
            }
        }
        None
    }
}

/// The documents the coercion plan may follow `$ref`s into: the compiled file and the scanned
/// ones. Only JSON-pointer fragments are followed; anchors and nested `$id`s are not, which
/// leaves such properties uncoerced (strings) rather than wrong.
struct PlanDocs<'a> {
    scanned: &'a Scanned,
    root_uri: &'a str,
    root: &'a Value,
}

/// A reference split into its target document's URI (resolved against `base`) and its
/// fragment.
fn split_reference<'r>(base: &str, reference: &'r str) -> Option<(String, &'r str)> {
    let (path, fragment) = reference.split_once('#').unwrap_or((reference, ""));
    let target = if path.is_empty() {
        base.split('#').next().unwrap_or(base).to_string()
    } else {
        let base = jsonschema::uri::from_str(base).ok()?;
        jsonschema::uri::resolve_against(&base.borrow(), path)
            .ok()?
            .as_str()
            .to_string()
    };
    Some((target, fragment))
}

/// The value a JSON-pointer fragment (percent-encoded as in a URI) names in `document`.
fn at_fragment<'v>(document: &'v Value, fragment: &str) -> Option<&'v Value> {
    let fragment = percent_encoding::percent_decode_str(fragment)
        .decode_utf8()
        .ok()?;
    if fragment.is_empty() {
        Some(document)
    } else if fragment.starts_with('/') {
        document.pointer(&fragment)
    } else {
        None
    }
}

impl coerce::Resolve for PlanDocs<'_> {
    fn resolve(&self, base: &str, reference: &str) -> Option<(String, &Value)> {
        let (target, fragment) = split_reference(base, reference)?;
        let document = if target == self.root_uri {
            self.root
        } else {
            let scanned = self.scanned;
            let key = scanned.by_id.get(&target).unwrap_or(&target);
            scanned.by_uri.get(key)?.parsed.as_deref().ok()?
        };
        let value = at_fragment(document, fragment)?;
        Some((target, value))
    }
}

/// Every `$ref` and `$dynamicRef` string in a document, in document order.
fn collect_refs<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
    match value {
        Value::Object(map) => {
            for (key, member) in map {
                match (key.as_str(), member) {
                    ("$ref" | "$dynamicRef", Value::String(raw)) => out.push(raw),
                    _ => collect_refs(member, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, out)),
        _ => {}
    }
}

/// A schema compiled once at config load, with the coercion plan derived from it.
pub struct CompiledSchema {
    validator: Validator<Instance>,
    plan: Plan,
    /// For a strict route's body: compiled against documents whose objects are closed
    /// (`strict`), with what each closed object declares.
    closed: Option<Arc<strict::Closed>>,
    /// The file, relative to the schema directory, for status pages and logs.
    source: std::path::PathBuf,
}

impl fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledSchema")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl CompiledSchema {
    /// Compiles `file` (a path inside `schema_dir`). Every `*.json` file under `schema_dir` is
    /// available to relative `$ref`s (`"../common/id.json"`, `"common.json#/$defs/x"`), and to
    /// `$ref`s naming a file's top-level `$id`. Remote (`http:`, `https:`) and `file:` references,
    /// and relative ones that leave `schema_dir`, are errors naming the file and the `$ref`.
    /// Formats are asserted (unknown format names are ignored, as the specification says);
    /// `pattern` uses the linear-time `regex` engine.
    ///
    /// To compile many schemas of one directory, [`SchemaDir`] reads the directory only once.
    pub fn load(schema_dir: &Path, file: &Path) -> Result<CompiledSchema, SchemaError> {
        SchemaDir::scan(schema_dir)?.compile(file)
    }

    /// The file this schema was compiled from, relative to the schema directory.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Every violation of `instance` (not just the first), worded for `location`.
    pub fn violations(&self, location: Location, instance: &Value) -> Vec<Violation> {
        let mut out = Vec::new();
        self.collect_violations(location, instance, &mut out, usize::MAX);
        out
    }

    /// Appends violations of `instance` to `out` until it holds `cap`, and returns how many
    /// further errors there were: those are counted, never worded. A 1 MiB body can hold half
    /// a million errors; wording each cost ~0.5 s of CPU for one request (measured by
    /// `benches/validation.rs`). jsonschema collects every error before yielding the first, so
    /// the count is exact at no extra cost.
    pub fn collect_violations(
        &self,
        location: Location,
        instance: &Value,
        out: &mut Vec<Violation>,
        cap: usize,
    ) -> usize {
        self.collect_node(location, Node::Value(instance), out, cap)
    }

    /// Validates `node` as it is (a parsed body in place, borrowed header fields, a `Value`)
    /// and, only when it is invalid, words the errors from it as a `Value`.
    fn collect_node(
        &self,
        location: Location,
        node: Node<'_>,
        out: &mut Vec<Violation>,
        cap: usize,
    ) -> usize {
        // The common case is a valid request; `is_valid` is much cheaper than collecting.
        if self.validator.is_valid(node) {
            return 0;
        }
        self.word_errors(location, &node.to_value(), out, cap)
    }

    /// The errors of an instance known to be invalid, worded up to `cap`; returns how many
    /// were left out.
    fn word_errors(
        &self,
        location: Location,
        instance: &Value,
        out: &mut Vec<Violation>,
        cap: usize,
    ) -> usize {
        let start = out.len();
        let omitted = match &self.closed {
            Some(closed) => {
                let omitted = self.collect_strict(closed, location, instance, out, cap, true);
                // Every error left out as a declared field of a troubled object, each
                // counting the others as the trouble (two closed schemas of one object):
                // the body is invalid all the same, so they are named rather than none.
                if out.len() == start && omitted == 0 {
                    self.collect_strict(closed, location, instance, out, cap, false)
                } else {
                    omitted
                }
            }
            None => {
                let mut omitted = 0;
                for error in self.validator.iter_errors(Node::Value(instance)) {
                    if out.len() < cap {
                        message::push_violations(location, instance, &error, out);
                    } else {
                        omitted += 1;
                    }
                }
                omitted
            }
        };
        if let Some(found) = out.get_mut(start..) {
            found.iter_mut().for_each(|v| self.plan.unexplode(v));
        }
        omitted
    }

    /// [`CompiledSchema::collect_violations`] for a strict body: an unknown field is named
    /// once (a schema of its own may close the object too), and a field the object declares
    /// is not called unknown when the object has other errors (a failed `oneOf` branch
    /// evaluates nothing: its fields are not unknown, the branch is wrong), unless
    /// `spare_declared` is false.
    fn collect_strict(
        &self,
        closed: &strict::Closed,
        location: Location,
        instance: &Value,
        out: &mut Vec<Violation>,
        cap: usize,
        spare_declared: bool,
    ) -> usize {
        use jsonschema::error::ValidationErrorKind as Kind;
        let errors: Vec<ValidationError<'_>> =
            self.validator.iter_errors(Node::Value(instance)).collect();
        // Where each error is, sorted: whether an object has other errors is two binary
        // searches, so a body with many errors stays linearithmic. An unknown field deeper
        // down fails the branch holding it, too.
        let mut paths: Vec<&str> = errors.iter().map(|e| e.instance_path().as_str()).collect();
        paths.sort_unstable();
        let within = |from: &str, to: &str| {
            paths.partition_point(|p| *p < to) - paths.partition_point(|p| *p < from)
        };
        let mut named: std::collections::HashSet<(String, String)> = Default::default();
        let mut omitted = 0;
        for error in &errors {
            if out.len() >= cap {
                omitted += 1;
                continue;
            }
            let declared = match error.kind() {
                Kind::UnevaluatedProperties { .. } => error
                    .absolute_keyword_location()
                    .and_then(|at| closed.declared_at(at.as_str())),
                _ => None,
            };
            let at = error.instance_path().as_str();
            // Besides this error: others at `at`, or under it (`at/...` sorts between
            // `at/` and `at0`, `0` following `/`).
            let troubled_here = spare_declared && declared.is_some() && {
                let here = within(at, &format!("{at}\0")).saturating_sub(1);
                here + within(&format!("{at}/"), &format!("{at}0")) > 0
            };
            let mut keep = |pointer: &str, name: &str| {
                if troubled_here && declared.is_some_and(|d| d.contains(name)) {
                    return false;
                }
                named.insert((pointer.to_string(), name.to_string()))
            };
            message::push_violations_keeping(location, instance, error, out, &mut keep);
        }
        omitted
    }

    /// [`Self::collect_violations`] for a parsed body: validated in place, and turned into a
    /// `Value` only when it is invalid, to word the errors.
    pub fn collect_body_violations(
        &self,
        body: &Parsed,
        out: &mut Vec<Violation>,
        cap: usize,
    ) -> usize {
        self.collect_node(Location::Body, body.node(), out, cap)
    }

    /// [`Self::collect_violations`] for coerced fields (headers): validated as they are, and
    /// turned into a `Value` only when invalid, to word the errors.
    pub fn collect_fields_violations(
        &self,
        location: Location,
        fields: &Fields<'_>,
        out: &mut Vec<Violation>,
        cap: usize,
    ) -> usize {
        self.collect_node(location, Node::Fields(&fields.0), out, cap)
    }

    /// For a body with numbers that are not exactly the double they were read as
    /// (`Parsed::inexact`): a `precision` violation for each such number where the schema
    /// constrains it (a number type, `enum`, `const`), none where the schema leaves the
    /// value open (a field it does not name). Found by validating the body again with each
    /// such number replaced by a marker no constraint on a number accepts; the rare body that
    /// needs this pays a second parse and validation. Places already reported in `out` are
    /// not reported twice. Returns how many were left out past `cap`.
    pub fn collect_inexact(
        &self,
        text: &[u8],
        max_depth: usize,
        out: &mut Vec<Violation>,
        cap: usize,
    ) -> usize {
        let Ok(text) = std::str::from_utf8(text) else {
            return 0;
        };
        let Ok((marked, _)) = json::parse_with(text, max_depth, json::Inexact::Mark) else {
            return 0;
        };
        let mut omitted = 0;
        for error in self.validator.iter_errors(Node::Value(&marked)) {
            if !json::is_inexact_marker(error.instance()) {
                continue;
            }
            let pointer = error.instance_path().as_str();
            let reported = out
                .iter()
                .any(|v| v.location == Location::Body && v.pointer == pointer);
            if reported {
                continue;
            }
            if out.len() >= cap {
                omitted += 1;
                continue;
            }
            out.push(message::inexact_number(
                Location::Body,
                pointer,
                error.evaluation_path().as_str(),
                &marked,
            ));
        }
        omitted
    }

    /// The query's keys and values as strings, uncoerced (strict mode's view of a route
    /// without a query schema).
    pub fn raw_query(raw: Option<&str>) -> Value {
        Plan::default().query(raw).0
    }

    /// The object for a raw query string (undecoded, as on the wire; `None` when the URI has
    /// none): `application/x-www-form-urlencoded` decoding, then each value coerced to the
    /// types the schema allows. Keys the schema does not name are kept as strings. A key that
    /// repeats where the schema does not allow an array is a violation (`repeated`).
    pub fn coerce_query(&self, raw: Option<&str>) -> (Value, Vec<Violation>) {
        self.plan.query(raw)
    }

    /// The object for headers: only the headers the schema names as properties, matched
    /// case-insensitively and keyed by the schema's spelling (so messages say
    /// `header.X-Tenant`). A value that is not visible ASCII is kept as lossy text and never
    /// coerced. A header sent more than once counts as a repeated key.
    pub fn coerce_headers<'a>(
        &'a self,
        headers: &'a http::HeaderMap,
    ) -> (Fields<'a>, Vec<Violation>) {
        self.plan.headers(headers)
    }

    /// The object for the `Cookie` header's cookies the schema names (others are left
    /// out: browsers send many), coerced like query values.
    pub fn coerce_cookies(&self, headers: &http::HeaderMap) -> (Value, Vec<Violation>) {
        self.plan.cookies(headers)
    }

    /// The object for path parameters, given as (name, value) pairs the router has already
    /// percent-decoded; coerced like query values.
    pub fn coerce_params<'a>(
        &self,
        location: Location,
        pairs: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> (Value, Vec<Violation>) {
        self.plan.params(location, pairs)
    }
}

/// Strict mode: a violation for each top-level key of `value` (a query's object) that
/// `schema` does not name as a property (every key, without a schema). A body's unknown
/// fields, at every depth, are its strict schema's own (`schema/strict.rs`).
pub fn unknown_keys(
    schema: Option<&CompiledSchema>,
    location: Location,
    value: &Value,
) -> Vec<Violation> {
    let Value::Object(map) = value else {
        return Vec::new();
    };
    map.keys()
        .filter(|key| !schema.is_some_and(|s| s.plan.names(key, false)))
        .map(|key| not_allowed(location, key))
        .collect()
}

/// Strict mode: a violation for each header `schema` does not name, other than the
/// `standard` ones (HTTP's own, and those proxies and browsers add).
pub fn unknown_headers(
    schema: Option<&CompiledSchema>,
    headers: &http::HeaderMap,
    standard: impl Fn(&str) -> bool,
) -> Vec<Violation> {
    headers
        .keys()
        .map(http::HeaderName::as_str)
        .filter(|name| !standard(name) && !schema.is_some_and(|s| s.plan.names(name, true)))
        .map(|name| not_allowed(Location::Header, name))
        .collect()
}

/// `query.x is not allowed`: a key the route does not name, in strict mode.
fn not_allowed(location: Location, key: &str) -> Violation {
    let pointer = format!("/{}", message::escape_pointer_segment(key));
    Violation {
        location,
        message: format!(
            "{} is not allowed",
            message::field(location, &pointer, None)
        ),
        field: format!("{}.*", location.as_str()),
        pointer,
        keyword: "additionalProperties",
    }
}

/// The 422 `message` array: the first `cap` messages, then `and N more` when some were left
/// out (those beyond `cap` in `violations`, plus `omitted` ones that were only counted).
pub fn render_messages(violations: &[Violation], omitted: usize, cap: usize) -> Vec<String> {
    let mut messages: Vec<String> = violations
        .iter()
        .take(cap)
        .map(|v| v.message.clone())
        .collect();
    let more = violations.len().saturating_sub(cap) + omitted;
    if more > 0 {
        messages.push(format!("and {more} more"));
    }
    messages
}

#[cfg(test)]
mod tests;
