//! `openapi:`: OpenAPI 3.0 and 3.1 documents as the source of routes. Each operation becomes
//! a route named `<document>.<operationId>`, its parameters and request body the same compiled
//! schemas a hand-written route has (one object schema per location whose properties `$ref`
//! the document), so envelopes, messages and field paths are the same.
//!
//! A document is read with every file its `$ref`s name (relative paths only; remote references
//! are refused), 3.0 schemas are translated to JSON Schema 2020-12 (`translate`), and the
//! documents are registered once for all the operation's schemas (`schema::DocumentSet`).
//! A feature not supported is an error naming the document and the JSON pointer: an operation
//! is never left unchecked.

mod translate;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::errors::Errors;
use super::*;
use crate::config::{RawOpenApi, RawOperationKeys};
use crate::schema::{Decode, DocumentSet, PathStyle};

/// The HTTP methods a path item may hold, in the order the specification lists them.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One operation, ready to be built as a route.
pub(super) struct Operation {
    /// The config key errors about it are reported at (`openapi[0].operations.createX`).
    pub key: String,
    pub route: Spanned<RawRoute>,
    pub schemas: RouteSchemas,
    pub body: Option<BodyMedia>,
}

/// What the documents gave: the operations, and every file read (watched, fingerprinted).
#[derive(Default)]
pub(super) struct Imported {
    pub operations: Vec<Operation>,
    pub files: Vec<PathBuf>,
    pub hash: u64,
    /// With `keep`: the schemas the routes were compiled from, as files for the exporter
    /// (`openapi/<name>.json`, the translated document, and `openapi/<name>/<operation>.
    /// <location>.json`, each location's schema with `$ref`s relative to it).
    pub export: Vec<(String, std::sync::Arc<Value>)>,
}

/// Reads every document of `openapi:` and turns its operations into routes-to-be.
pub(super) fn import(
    raw: &RawConfig,
    base_dir: &Path,
    keep: bool,
    errors: &mut Errors<'_>,
) -> Imported {
    let mut imported = Imported::default();
    for (i, spanned) in raw.openapi.iter().enumerate() {
        let entry = &spanned.value;
        let key = format!("openapi[{i}]");
        let file = &entry.file;
        let read = Documents::read(&base_dir.join(&*file.value)).and_then(|mut documents| {
            let strict_bodies = strict_bodies(&documents, entry);
            // The set holds the documents from now on (one copy fewer of a large document).
            let mut docs: Vec<(String, Value)> =
                std::mem::take(&mut documents.by_uri).into_iter().collect();
            // With `responses: report` somewhere, a second view of the documents for the
            // responses' schemas: `writeOnly` properties not required, `readOnly` ones kept.
            let response_docs = entry.wants_responses().then(|| {
                let mut copy = docs.clone();
                copy.iter_mut()
                    .for_each(|(_, v)| translate::write_only_not_required(v));
                copy
            });
            docs.iter_mut()
                .for_each(|(_, v)| translate::read_only_not_required(v));
            if keep {
                documents.kept = docs.clone();
            }
            let shown = &documents.shown;
            // With strict operations, a third view for their bodies: objects closed.
            if !strict_bodies.is_empty() {
                let set = DocumentSet::strict(docs.clone(), &strict_bodies)
                    .map_err(|e| format!("{shown}: {e}"))?;
                documents.strict_set = Some(set);
            }
            let set = DocumentSet::new(docs).map_err(|e| format!("{shown}: {e}"))?;
            let response_set = response_docs
                .map(DocumentSet::new)
                .transpose()
                .map_err(|e| format!("{shown}: {e}"))?;
            documents.set = Some(set);
            documents.response_set = response_set;
            Ok(documents)
        });
        let documents = match read {
            Ok(documents) => documents,
            Err(message) => {
                errors.at(file.referenced, format!("{key}.file"), message);
                continue;
            }
        };
        imported.files.extend(documents.files.iter().cloned());
        imported.hash ^= documents.hash;
        let name = match &entry.name {
            Some(name) => name.0.clone(),
            None => Path::new(&*file.value)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let mut problems = Vec::new();
        let operations = operations(&documents, entry, &name, &key, spanned, &mut problems);
        for (at, message) in problems {
            errors.at(at, key.clone(), message);
        }
        if keep {
            match export_files(&documents, &name, &operations) {
                Ok(files) => imported.export.extend(files),
                Err(message) => errors.at(spanned.defined, key.clone(), message),
            }
        }
        imported
            .operations
            .extend(operations.into_iter().map(|(operation, _)| operation));
    }
    imported
}

/// A document and the files its references name, translated, by URI.
struct Documents {
    /// The main document's URI.
    root: String,
    /// Its path, as messages name it.
    shown: String,
    by_uri: HashMap<String, Value>,
    /// Every file read, canonical.
    files: Vec<PathBuf>,
    hash: u64,
    set: Option<DocumentSet>,
    /// The responses' view (`writeOnly` not required), with `responses: report` only.
    response_set: Option<DocumentSet>,
    /// The strict operations' bodies' view (objects closed), with `strict: true` only.
    strict_set: Option<DocumentSet>,
    /// The translated documents by URI, kept for the exporter.
    kept: Vec<(String, Value)>,
    /// The file of each document by URI (canonical).
    paths: HashMap<String, PathBuf>,
}

impl Documents {
    fn read(path: &Path) -> Result<Documents, String> {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let shown = path.display().to_string();
        let canonical = std::fs::canonicalize(path)
            .map_err(|e| format!("cannot read OpenAPI document {shown}: {e}"))?;
        let root = DocumentSet::uri_of(&canonical);
        let mut hasher = DefaultHasher::new();
        let mut by_uri = HashMap::new();
        let mut files = Vec::new();
        let mut paths = HashMap::new();
        let mut pending = vec![(canonical, root.clone())];
        let mut version = None;
        while let Some((file, uri)) = pending.pop() {
            if by_uri.contains_key(&uri) {
                continue;
            }
            let text = crate::files::read_capped(&file, crate::files::MAX_OPENAPI_FILE)
                .and_then(|b| String::from_utf8(b).map_err(|_| "is not valid UTF-8".to_string()))
                .map_err(|e| format!("cannot read OpenAPI document {}: {e}", file.display()))?;
            text.hash(&mut hasher);
            let mut value = parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            if version.is_none() {
                version = Some(Version::of(&value).map_err(|e| format!("{shown}: {e}"))?);
            }
            let mut refs = Vec::new();
            translate::collect_refs(&value, String::new(), &mut refs);
            for (pointer, reference) in refs {
                let target = reference.split('#').next().unwrap_or_default();
                if target.is_empty() {
                    continue;
                }
                if target.contains(':') {
                    return Err(format!(
                        "{}: #{pointer}: $ref {reference:?} is refused: remote references are never fetched; copy the document next to this one and refer to it by a relative path",
                        file.display()
                    ));
                }
                let dir = file.parent().unwrap_or(Path::new("/"));
                let decoded = percent_encoding::percent_decode_str(target).decode_utf8_lossy();
                let next = std::fs::canonicalize(dir.join(&*decoded)).map_err(|e| {
                    format!(
                        "{}: #{pointer}: $ref {reference:?} cannot be read: {e}",
                        file.display()
                    )
                })?;
                let next_uri = DocumentSet::uri_of(&next);
                pending.push((next, next_uri));
            }
            if version == Some(Version::V30) {
                translate::from_30(&mut value);
            }
            paths.insert(uri.clone(), file.clone());
            // The main document as configured, so that the watch sees the symbolic links on
            // its way; the files it names as resolved.
            files.push(if uri == root {
                path.to_path_buf()
            } else {
                file
            });
            by_uri.insert(uri, value);
        }
        Ok(Documents {
            root,
            shown,
            by_uri,
            files,
            hash: hasher.finish(),
            set: None,
            response_set: None,
            strict_set: None,
            kept: Vec::new(),
            paths,
        })
    }

    /// A document read, by URI: from the set once it is registered.
    fn document(&self, uri: &str) -> Option<&Value> {
        match &self.set {
            Some(set) => set.document(uri),
            None => self.by_uri.get(uri),
        }
    }

    fn root(&self) -> &Value {
        self.document(&self.root).unwrap_or(&Value::Null)
    }

    /// Follows `value`'s `$ref` (if it has one, and those of its target) to the object it
    /// names: (its document's URI, its pointer, the object).
    fn deref<'d>(
        &'d self,
        uri: &str,
        pointer: String,
        value: &'d Value,
    ) -> Result<(String, String, &'d Value), String> {
        let (mut uri, mut pointer, mut value) = (uri.to_string(), pointer, value);
        for _ in 0..32 {
            let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
                return Ok((uri, pointer, value));
            };
            let (path, fragment) = reference.split_once('#').unwrap_or((reference, ""));
            if !path.is_empty() {
                let base = jsonschema::uri::from_str(&uri).map_err(|e| e.to_string())?;
                uri = jsonschema::uri::resolve_against(&base.borrow(), path)
                    .map_err(|e| format!("#{pointer}: bad $ref {reference:?}: {e}"))?
                    .as_str()
                    .to_string();
            }
            let fragment = percent_encoding::percent_decode_str(fragment)
                .decode_utf8_lossy()
                .into_owned();
            let document = self
                .document(&uri)
                .ok_or_else(|| format!("#{pointer}: $ref {reference:?} names no document read"))?;
            value = document
                .pointer(&fragment)
                .ok_or_else(|| format!("#{pointer}: $ref {reference:?} points to nothing"))?;
            pointer = fragment;
        }
        Err(format!("#{pointer}: $ref chain longer than 32 steps"))
    }
}

/// The exporter's files for one document: `openapi/<name>.json`, holding the translated
/// document under `/root` and the files it names under `/files/<path relative to it>`, and
/// each operation's schemas (`openapi/<name>/<operation>.<location>.json`) with `$ref`s into
/// that file. The exporter copies a file as one component, walking only schema keywords, so
/// every `$ref` inside the documents is written here as its final pointer into the exported
/// document (`#/components/schemas/openapi.<name>/root/...`).
fn export_files(
    documents: &Documents,
    name: &str,
    operations: &[(Operation, Vec<(String, Value)>)],
) -> Result<Vec<(String, std::sync::Arc<Value>)>, String> {
    let root_dir = documents
        .paths
        .get(&documents.root)
        .and_then(|p| p.parent())
        .unwrap_or(Path::new("/"));
    // Where each document goes inside the export file, as a JSON pointer.
    let mut places: HashMap<String, String> = HashMap::new();
    for (uri, _) in &documents.kept {
        let place = if *uri == documents.root {
            "/root".to_string()
        } else {
            let path = documents.paths.get(uri).map(PathBuf::as_path);
            let inside = path.and_then(|p| p.strip_prefix(root_dir).ok());
            let inside = inside.ok_or_else(|| {
                format!(
                    "{}: exporting a document whose $refs name files outside its directory is not supported yet",
                    documents.shown
                )
            })?;
            let key = inside
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            format!("/files/{}", escape(&key))
        };
        places.insert(uri.clone(), place);
    }
    let component = format!("#/components/schemas/openapi.{name}");
    // The final pointer of a reference written in the document at `base`.
    let target = |base: &str, reference: &str| -> Option<String> {
        let (path, fragment) = reference.split_once('#').unwrap_or((reference, ""));
        let uri = if path.is_empty() {
            base.to_string()
        } else {
            let base = jsonschema::uri::from_str(base).ok()?;
            jsonschema::uri::resolve_against(&base.borrow(), path)
                .ok()?
                .as_str()
                .to_string()
        };
        Some(format!("{}{fragment}", places.get(&uri)?))
    };
    let mut root = Map::new();
    let mut files = Map::new();
    for (uri, document) in &documents.kept {
        let mut copy = document.clone();
        rewrite_refs(&mut copy, &mut |reference| {
            target(uri, reference).map(|pointer| format!("{component}{pointer}"))
        });
        match places.get(uri).and_then(|p| p.strip_prefix("/files/")) {
            Some(key) => {
                files.insert(key.replace("~1", "/").replace("~0", "~"), copy);
            }
            None => {
                root.insert("root".to_string(), copy);
            }
        }
    }
    root.insert("files".to_string(), Value::Object(files));
    let mut out = Vec::new();
    for (_, wrappers) in operations {
        for (file, wrapper) in wrappers {
            let mut copy = wrapper.clone();
            rewrite_refs(&mut copy, &mut |reference| {
                let (uri, _) = reference.split_once('#')?;
                target(uri, reference).map(|pointer| format!("../{name}.json#{pointer}"))
            });
            out.push((file.clone(), std::sync::Arc::new(copy)));
        }
    }
    out.push((
        format!("openapi/{name}.json"),
        std::sync::Arc::new(Value::Object(root)),
    ));
    Ok(out)
}

/// Replaces every `$ref` string in `value` by what `rewrite` makes of it (kept when `None`).
fn rewrite_refs(value: &mut Value, rewrite: &mut impl FnMut(&str) -> Option<String>) {
    match value {
        Value::Object(map) => {
            for (key, member) in map.iter_mut() {
                match (key.as_str(), &mut *member) {
                    ("$ref", Value::String(reference)) => {
                        if let Some(new) = rewrite(reference) {
                            *reference = new;
                        }
                    }
                    _ => rewrite_refs(member, rewrite),
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| rewrite_refs(item, rewrite)),
        _ => {}
    }
}

/// JSON (a document starting with `{`) or YAML.
fn parse(text: &str) -> Result<Value, String> {
    if text.trim_start().starts_with('{') {
        crate::schema::parse_document_json(text)
    } else {
        serde_saphyr::from_str::<Value>(text).map_err(|e| {
            let line = e.location().map(|l| l.line()).unwrap_or_default();
            format!(
                "is not valid YAML (line {line}): {}",
                e.without_snippet()
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
            )
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V30,
    V31,
}

impl Version {
    fn of(document: &Value) -> Result<Version, String> {
        match document.get("openapi").and_then(Value::as_str) {
            Some(v) if v.starts_with("3.0.") => Ok(Version::V30),
            Some(v) if v.starts_with("3.1.") => Ok(Version::V31),
            Some(v) => Err(format!(
                "#/openapi: version {v:?} is not supported (3.0.x and 3.1.x are)"
            )),
            None => Err("#/openapi: not an OpenAPI 3 document (no `openapi` version)".to_string()),
        }
    }
}

/// `~` and `/` escaped for a JSON pointer.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Every operation of one document as a route-to-be; problems are pushed with the location
/// to report them at.
fn operations(
    documents: &Documents,
    entry: &RawOpenApi,
    name: &str,
    key: &str,
    spanned: &Spanned<RawOpenApi>,
    problems: &mut Vec<(serde_saphyr::Location, String)>,
) -> Vec<(Operation, Vec<(String, Value)>)> {
    let shown = &documents.shown;
    let mut fail =
        |message: String| problems.push((spanned.defined, format!("{shown}: {message}")));
    let root = documents.root();
    let Some(paths) = root.get("paths").and_then(Value::as_object) else {
        fail("#/paths: the document has no paths".to_string());
        return Vec::new();
    };
    let prefix = entry
        .path_prefix
        .as_ref()
        .map(|p| p.value.0.trim_end_matches('/').to_string())
        .unwrap_or_default();
    if !prefix.is_empty() && !prefix.starts_with('/') {
        fail(format!("path_prefix {prefix:?} must start with `/`"));
        return Vec::new();
    }
    let defaults = entry.keys();
    let mut used = BTreeSet::new();
    let mut out = Vec::new();
    for (path, item) in paths {
        let item_pointer = format!("/paths/{}", escape(path));
        let (item_uri, item_pointer, item) =
            match documents.deref(&documents.root, item_pointer, item) {
                Ok(found) => found,
                Err(message) => {
                    fail(message);
                    continue;
                }
            };
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let op_pointer = format!("{item_pointer}/{method}");
            let id = operation_id(operation, method, path);
            let over = entry.operations.get(&id);
            if over.is_some() {
                used.insert(id.clone());
            }
            if over.and_then(|o| o.value.skip) == Some(true) {
                continue;
            }
            let keys = match over {
                Some(over) => defaults.clone().overridden(&over.value),
                None => defaults.clone(),
            };
            let site = Site {
                responses: keys.responses == Some(ResponsesMode::Report),
                strict: keys.strict == Some(true),
                name,
                id: &id,
                documents,
                uri: &item_uri,
                item,
                item_pointer: &item_pointer,
                operation,
                pointer: &op_pointer,
            };
            match site.build() {
                Ok(built) => {
                    let at = over.map_or(spanned.defined, |o| o.defined);
                    let route = raw_route(
                        format!("{name}.{id}"),
                        method,
                        format!("{prefix}{path}"),
                        &entry.upstream,
                        keys,
                        built.auth,
                    );
                    let operation = Operation {
                        key: match over {
                            Some(_) => format!("{key}.operations.{id}"),
                            None => key.to_string(),
                        },
                        route: Spanned {
                            value: route,
                            referenced: at,
                            defined: at,
                        },
                        schemas: built.schemas,
                        body: built.body,
                    };
                    out.push((operation, built.wrappers));
                }
                Err(message) => fail(format!("{message} (operation {id})")),
            }
        }
    }
    for (id, over) in &entry.operations {
        if !used.contains(id) {
            problems.push((
                over.defined,
                format!(
                    "{shown}: `operations` names {id:?}, which the document has no operation for"
                ),
            ));
        }
    }
    out
}

/// The name an operation's route takes after the document's: its `operationId`, or its
/// method and path (`GET /v1/health`).
fn operation_id(operation: &Value, method: &str, path: &str) -> String {
    operation
        .get("operationId")
        .and_then(Value::as_str)
        .map_or_else(
            || format!("{} {path}", method.to_uppercase()),
            str::to_string,
        )
}

/// Where the JSON body schemas of the document's strict operations are (document URI,
/// JSON pointer): what the strict view of the documents closes.
fn strict_bodies(documents: &Documents, entry: &RawOpenApi) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !entry.wants_strict() {
        return out;
    }
    let root = documents.root();
    let Some(paths) = root.get("paths").and_then(Value::as_object) else {
        return out;
    };
    for (path, item) in paths {
        let at = format!("/paths/{}", escape(path));
        let Ok((uri, at, item)) = documents.deref(&documents.root, at, item) else {
            continue;
        };
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let id = operation_id(operation, method, path);
            let over = entry.operations.get(&id).and_then(|o| o.value.strict);
            if over.or(entry.strict) != Some(true) {
                continue;
            }
            let Some(body) = operation.get("requestBody") else {
                continue;
            };
            let at = format!("{at}/{method}/requestBody");
            let Ok((uri, at, body)) = documents.deref(&uri, at, body) else {
                continue;
            };
            let content = body.get("content").and_then(Value::as_object);
            for (media, entry) in content.into_iter().flatten() {
                if is_json(media) && entry.get("schema").is_some() {
                    out.push((
                        uri.clone(),
                        format!("{at}/content/{}/schema", escape(media)),
                    ));
                }
            }
        }
    }
    out
}

impl RawOpenApi {
    /// Whether the document or any of its operations has `strict: true`.
    fn wants_strict(&self) -> bool {
        self.strict == Some(true)
            || self
                .operations
                .values()
                .any(|o| o.value.strict == Some(true))
    }

    /// Whether the document or any of its operations has `responses: report`.
    fn wants_responses(&self) -> bool {
        self.responses == Some(ResponsesMode::Report)
            || self
                .operations
                .values()
                .any(|o| o.value.responses == Some(ResponsesMode::Report))
    }
}

impl RawOperationKeys {
    /// These keys with each one `over` sets replacing ours.
    fn overridden(self, over: &RawOperationKeys) -> RawOperationKeys {
        RawOperationKeys {
            skip: over.skip.or(self.skip),
            strip_prefix: over.strip_prefix.clone().or(self.strip_prefix),
            preserve_host: over.preserve_host.or(self.preserve_host),
            timeouts: over.timeouts.clone().or(self.timeouts),
            limits: over.limits.clone().or(self.limits),
            auth: over.auth.clone().or(self.auth),
            validation: over.validation.or(self.validation),
            strict: over.strict.or(self.strict),
            responses: over.responses.or(self.responses),
            errors: over.errors.or(self.errors),
            tenant: over.tenant.clone().or(self.tenant),
            rate_limit: over.rate_limit.clone().or(self.rate_limit),
        }
    }
}

fn raw_route(
    name: String,
    method: &str,
    path: String,
    upstream: &config::Text,
    keys: RawOperationKeys,
    auth: AuthMode,
) -> RawRoute {
    RawRoute {
        name: config::Text(name),
        method: config::Text(method.to_ascii_uppercase()),
        path: config::Text(path),
        upstream: upstream.clone(),
        strip_prefix: keys.strip_prefix,
        rewrite: None,
        preserve_host: keys.preserve_host.unwrap_or(false),
        timeouts: keys.timeouts.unwrap_or_default(),
        limits: keys.limits.unwrap_or_default(),
        auth: keys.auth.unwrap_or(config::RawAuth::Mode(auth)),
        schemas: RawSchemas::default(),
        validation: keys.validation.unwrap_or_default(),
        strict: keys.strict.unwrap_or(false),
        responses: keys.responses.unwrap_or_default(),
        errors: keys.errors.unwrap_or_default(),
        tenant: keys.tenant,
        rate_limit: keys.rate_limit,
    }
}

/// One operation in its document.
struct Site<'d> {
    /// `responses: report`: compile the documented responses' schemas.
    responses: bool,
    /// `strict: true`: the body compiles against the strict view of the documents.
    strict: bool,
    /// The document's name, and the operation's id (for the exporter's file names).
    name: &'d str,
    id: &'d str,
    documents: &'d Documents,
    /// The URI of the document holding the path item.
    uri: &'d str,
    item: &'d Value,
    item_pointer: &'d str,
    operation: &'d Value,
    pointer: &'d str,
}

/// What an operation compiles to.
struct Built {
    schemas: RouteSchemas,
    /// (file name for the exporter, the schema compiled) of each location.
    wrappers: Vec<(String, Value)>,
    body: Option<BodyMedia>,
    auth: AuthMode,
}

/// The wrapper schemas of path, query, header and cookie parameters, being built.
#[derive(Default)]
struct Wrapper {
    properties: Map<String, Value>,
    required: Vec<Value>,
    decodes: Vec<(String, Decode)>,
}

impl Wrapper {
    fn schema(&self) -> Option<Value> {
        if self.properties.is_empty() {
            return None;
        }
        Some(json!({
            "type": "object",
            "properties": self.properties,
            "required": self.required,
        }))
    }
}

impl Site<'_> {
    fn set(&self) -> Result<&DocumentSet, String> {
        self.documents
            .set
            .as_ref()
            .ok_or_else(|| "documents not registered".to_string())
    }

    fn build(&self) -> Result<Built, String> {
        let mut path = Wrapper::default();
        let mut query = Wrapper::default();
        let mut header = Wrapper::default();
        let mut cookie = Wrapper::default();
        // Operation-level parameters override path-level ones of the same name and location.
        let mut seen = BTreeSet::new();
        let lists = [
            (self.operation, self.pointer.to_string()),
            (self.item, self.item_pointer.to_string()),
        ];
        for (holder, holder_pointer) in lists {
            let Some(list) = holder.get("parameters") else {
                continue;
            };
            let Some(list) = list.as_array() else {
                return Err(format!("#{holder_pointer}/parameters: is not an array"));
            };
            for (n, parameter) in list.iter().enumerate() {
                let at = format!("{holder_pointer}/parameters/{n}");
                let (uri, at, parameter) = self.documents.deref(self.uri, at, parameter)?;
                let name = parameter
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("#{at}: a parameter needs a `name`"))?;
                let location = parameter
                    .get("in")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("#{at}: a parameter needs `in`"))?;
                if !seen.insert((name.to_ascii_lowercase(), location.to_string())) {
                    continue;
                }
                let target = match location {
                    "path" => &mut path,
                    "query" => &mut query,
                    "header" => {
                        // The specification: these three are described elsewhere, and ignored here.
                        let ignored = ["accept", "content-type", "authorization"];
                        if ignored.contains(&name.to_ascii_lowercase().as_str()) {
                            continue;
                        }
                        &mut header
                    }
                    "cookie" => &mut cookie,
                    other => {
                        return Err(format!("#{at}/in: {other:?} is not a parameter location"))
                    }
                };
                self.parameter(&uri, &at, parameter, name, location, target)?;
            }
        }
        let set = self.set()?;
        // A URI of its own for each schema (unreserved characters only, so any path is one).
        let base = format!(
            "{}.operation.{}",
            self.documents.root,
            percent_encoding::utf8_percent_encode(self.pointer, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
                .replace('%', "_")
        );
        // What status pages and the exporter call each schema.
        let id: String = self
            .id
            .chars()
            .map(|c| match c {
                c if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') => c,
                _ => '_',
            })
            .collect();
        let source = |location: &str| format!("openapi/{}/{id}.{location}.json", self.name);
        let mut wrappers = Vec::new();
        let mut compile =
            |location: &str, wrapper: &Wrapper| -> Result<Option<CompiledSchema>, String> {
                let Some(schema) = wrapper.schema() else {
                    return Ok(None);
                };
                let compiled = set
                    .compile(
                        &schema,
                        &format!("{base}.{location}"),
                        PathBuf::from(source(location)),
                        &wrapper.decodes,
                    )
                    .map_err(|e| format!("#{}: {location} parameters: {e}", self.pointer))?;
                wrappers.push((source(location), schema));
                Ok(Some(compiled))
            };
        let mut schemas = RouteSchemas {
            path: compile("path", &path)?,
            query: compile("query", &query)?,
            headers: compile("headers", &header)?,
            cookies: compile("cookies", &cookie)?,
            ..RouteSchemas::default()
        };
        let body = match self.operation.get("requestBody") {
            Some(body) => {
                let at = format!("{}/requestBody", self.pointer);
                let (uri, at, body) = self.documents.deref(self.uri, at, body)?;
                let (media, schema) = self.body(&uri, &at, body)?;
                if let Some(target) = schema {
                    let wrapper = json!({ "$ref": target });
                    let body_set = match self.strict {
                        true => self.documents.strict_set.as_ref().ok_or_else(|| {
                            "documents not registered for strict mode".to_string()
                        })?,
                        false => set,
                    };
                    let compiled = body_set
                        .compile(
                            &wrapper,
                            &format!("{base}.body"),
                            PathBuf::from(source("body")),
                            &[],
                        )
                        .map_err(|e| format!("#{at}: {e}"))?;
                    wrappers.push((source("body"), wrapper));
                    schemas.body = Some(compiled);
                }
                Some(media)
            }
            None => None,
        };
        if self.responses {
            schemas.responses = self.responses(&base, &source)?;
        }
        Ok(Built {
            schemas,
            wrappers,
            body,
            auth: self.auth(),
        })
    }

    /// Each documented response (`"200"`, `"2XX"`, `default`) with its JSON body's schema,
    /// compiled like the request body's (used by `responses: report`).
    fn responses(
        &self,
        base: &str,
        source: &dyn Fn(&str) -> String,
    ) -> Result<Vec<DocumentedResponse>, String> {
        let set = self
            .documents
            .response_set
            .as_ref()
            .ok_or_else(|| "documents not registered for responses".to_string())?;
        let Some(responses) = self.operation.get("responses") else {
            return Ok(Vec::new());
        };
        let at = format!("{}/responses", self.pointer);
        let Some(responses) = responses.as_object() else {
            return Err(format!("#{at}: is not an object"));
        };
        let mut out = Vec::new();
        for (code, response) in responses {
            let here = format!("{at}/{}", escape(code));
            let status = status_match(code).ok_or_else(|| {
                format!("#{here}: {code:?} is not a status, a range like 2XX, or `default`")
            })?;
            let (uri, here, response) = self.documents.deref(self.uri, here, response)?;
            let content = response.get("content").and_then(Value::as_object);
            let found = content
                .into_iter()
                .flatten()
                .find(|(media, entry)| is_json(media) && entry.get("schema").is_some());
            let schema = match found {
                Some((media, _)) => {
                    let pointer = format!("{here}/content/{}/schema", escape(media));
                    let target = format!("{uri}#{}", pointer_fragment(&pointer));
                    let location = format!("response.{code}");
                    let compiled = set
                        .compile(
                            &json!({ "$ref": target }),
                            &format!("{base}.{location}"),
                            PathBuf::from(source(&location)),
                            &[],
                        )
                        .map_err(|e| format!("#{pointer}: {e}"))?;
                    Some(compiled)
                }
                None => None,
            };
            out.push(DocumentedResponse { status, schema });
        }
        Ok(out)
    }

    /// Adds one parameter to its location's wrapper.
    fn parameter(
        &self,
        uri: &str,
        at: &str,
        parameter: &Value,
        name: &str,
        location: &str,
        wrapper: &mut Wrapper,
    ) -> Result<(), String> {
        let required = parameter
            .get("required")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if location == "path" && !required {
            return Err(format!(
                "#{at}/required: a path parameter must be `required: true`"
            ));
        }
        let (schema_pointer, schema, json_content) =
            match (parameter.get("schema"), parameter.get("content")) {
                (Some(schema), None) => (format!("{at}/schema"), schema, false),
                (None, Some(Value::Object(content))) if content.len() == 1 => {
                    let (media, entry) = content
                        .iter()
                        .next()
                        .ok_or_else(|| format!("#{at}/content: is empty"))?;
                    if !is_json(media) {
                        return Err(format!(
                            "#{at}/content: parameters in {media:?} are not supported (only JSON)"
                        ));
                    }
                    let schema = entry
                        .get("schema")
                        .ok_or_else(|| format!("#{at}/content/{}: has no schema", escape(media)))?;
                    (
                        format!("{at}/content/{}/schema", escape(media)),
                        schema,
                        true,
                    )
                }
                _ => {
                    return Err(format!(
                        "#{at}: a parameter needs either `schema` or `content` with one media type"
                    ))
                }
            };
        let (_, _, resolved) = self.documents.deref(uri, schema_pointer.clone(), schema)?;
        let is_object = resolved.get("type").and_then(Value::as_str) == Some("object");
        let default_style = match location {
            "path" | "header" => "simple",
            _ => "form",
        };
        let style = parameter
            .get("style")
            .and_then(Value::as_str)
            .unwrap_or(default_style);
        let explode = parameter
            .get("explode")
            .and_then(Value::as_bool)
            // deepObject is only defined exploded; documents nearly always leave `explode`
            // out for it (the specification's default, false, would make it undefined).
            .unwrap_or(matches!(style, "form" | "deepObject"));
        let decode = if json_content {
            None
        } else {
            let delimiter = match (location, style, explode) {
                ("query", "form", true) if is_object => {
                    let exploded = Decode::Exploded(crate::schema::Location::Query);
                    wrapper.decodes.push((name.to_string(), exploded));
                    None
                }
                ("cookie", "form", true) if is_object => {
                    let exploded = Decode::Exploded(crate::schema::Location::Cookie);
                    wrapper.decodes.push((name.to_string(), exploded));
                    None
                }
                ("query" | "cookie", "form", false) if is_object => {
                    let pairs = Decode::Pairs {
                        assigned: false,
                        delimiter: ',',
                    };
                    wrapper.decodes.push((name.to_string(), pairs));
                    None
                }
                ("query", "deepObject", true) if is_object => {
                    wrapper.decodes.push((name.to_string(), Decode::DeepObject));
                    None
                }
                ("query", "deepObject", _) => {
                    return Err(format!(
                        "#{at}/style: style deepObject is for object parameters, exploded (`explode: false` is undefined for it)"
                    ))
                }
                ("query", "form" | "pipeDelimited" | "spaceDelimited", true) => None,
                ("cookie", "form", true) => None,
                ("cookie", "form", false) => Some(','),
                ("query", "form", false) => Some(','),
                ("query", "pipeDelimited" | "spaceDelimited", false) if is_object => {
                    let delimiter = if style == "pipeDelimited" { '|' } else { ' ' };
                    let pairs = Decode::Pairs {
                        assigned: false,
                        delimiter,
                    };
                    wrapper.decodes.push((name.to_string(), pairs));
                    None
                }
                ("query", "pipeDelimited", false) => Some('|'),
                ("query", "spaceDelimited", false) => Some(' '),
                ("path" | "header", "simple", explode) if is_object => {
                    let pairs = Decode::Pairs {
                        assigned: explode,
                        delimiter: ',',
                    };
                    wrapper.decodes.push((name.to_string(), pairs));
                    None
                }
                ("path" | "header", "simple", _) => Some(','),
                ("path", "label" | "matrix", explode) => {
                    let style = match style {
                        "label" => PathStyle::Label { explode },
                        _ => PathStyle::Matrix { explode },
                    };
                    wrapper.decodes.push((name.to_string(), Decode::Path(style)));
                    if is_object {
                        // Exploded objects are `key=value` pairs once the style's own
                        // separators are read.
                        let pairs = Decode::Pairs {
                        assigned: explode,
                        delimiter: ',',
                    };
                        wrapper.decodes.push((name.to_string(), pairs));
                        None
                    } else {
                        Some(',')
                    }
                }
                (_, style, _) => {
                    return Err(format!(
                        "#{at}/style: style {style:?} is not defined for a {location} parameter (OpenAPI: path matrix, label, simple; query form, spaceDelimited, pipeDelimited, deepObject; header simple; cookie form)"
                    ))
                }
            };
            delimiter.map(Decode::Delimited)
        };
        let target = format!("{uri}#{}", pointer_fragment(&schema_pointer));
        let allow_empty = location == "query"
            && parameter.get("allowEmptyValue").and_then(Value::as_bool) == Some(true);
        let property = if allow_empty {
            // An empty value (`?a=`) is read as null, which this accepts beside the schema.
            json!({ "anyOf": [ { "$ref": target }, { "type": "null" } ] })
        } else {
            json!({ "$ref": target })
        };
        wrapper.properties.insert(name.to_string(), property);
        if required {
            wrapper.required.push(Value::String(name.to_string()));
        }
        if let Some(decode) = decode {
            wrapper.decodes.push((name.to_string(), decode));
        }
        Ok(())
    }

    /// The media types a request body may have, and the JSON schema (a URI with fragment)
    /// JSON bodies are validated against.
    fn body(
        &self,
        uri: &str,
        at: &str,
        body: &Value,
    ) -> Result<(BodyMedia, Option<String>), String> {
        let required = body
            .get("required")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let content = body
            .get("content")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("#{at}/content: a request body needs `content`"))?;
        let mut ranges = Vec::new();
        let mut schema: Option<(String, &Value)> = None;
        for (media, entry) in content {
            let range = MediaRange::parse(media).ok_or_else(|| {
                format!(
                    "#{at}/content/{}: {media:?} is not a media type",
                    escape(media)
                )
            })?;
            let json = range.json;
            ranges.push(range);
            if !json {
                continue;
            }
            let Some(found) = entry.get("schema") else {
                continue;
            };
            let pointer = format!("{at}/content/{}/schema", escape(media));
            match &schema {
                Some((_, other)) if *other != found => {
                    return Err(format!(
                        "#{pointer}: JSON media types with different schemas in one request body are not supported yet"
                    ))
                }
                Some(_) => {}
                None => schema = Some((format!("{uri}#{}", pointer_fragment(&pointer)), found)),
            }
        }
        Ok((
            BodyMedia::new(ranges, required),
            schema.map(|(target, _)| target),
        ))
    }

    /// `auth` derived from the operation's `security` (or the document's): bearer when every
    /// alternative needs a bearer token, credentials when every one needs some credentials
    /// the gateway can see, else none (the upstream checks what it asks for).
    fn auth(&self) -> AuthMode {
        let root = self.documents.root();
        let security = self
            .operation
            .get("security")
            .or_else(|| root.get("security"))
            .and_then(Value::as_array);
        let Some(alternatives) = security else {
            return AuthMode::None;
        };
        let schemes = root.pointer("/components/securitySchemes");
        let scheme_mode = |name: &str| -> AuthMode {
            let Some(scheme) = schemes.and_then(|s| s.get(name)) else {
                return AuthMode::None;
            };
            let scheme = self
                .documents
                .deref(&self.documents.root, String::new(), scheme)
                .map(|(_, _, s)| s)
                .unwrap_or(scheme);
            let field = |k: &str| scheme.get(k).and_then(Value::as_str).unwrap_or_default();
            match field("type") {
                "http" if field("scheme").eq_ignore_ascii_case("bearer") => AuthMode::Bearer,
                "oauth2" | "openIdConnect" => AuthMode::Bearer,
                "http" => AuthMode::Credentials,
                "apiKey" if field("in") == "cookie" => AuthMode::Credentials,
                "apiKey"
                    if field("in") == "header"
                        && field("name").eq_ignore_ascii_case("authorization") =>
                {
                    AuthMode::Credentials
                }
                _ => AuthMode::None,
            }
        };
        let mut modes = Vec::new();
        for alternative in alternatives {
            let Some(requirement) = alternative.as_object() else {
                continue;
            };
            let names: Vec<AuthMode> = requirement.keys().map(|n| scheme_mode(n)).collect();
            modes.push(if names.contains(&AuthMode::Bearer) {
                AuthMode::Bearer
            } else if names.contains(&AuthMode::Credentials) {
                AuthMode::Credentials
            } else {
                AuthMode::None
            });
        }
        if modes.is_empty() || modes.contains(&AuthMode::None) {
            AuthMode::None
        } else if modes.iter().all(|m| *m == AuthMode::Bearer) {
            AuthMode::Bearer
        } else {
            AuthMode::Credentials
        }
    }
}

/// `"200"`, `"2XX"` (any case) or `default`.
fn status_match(code: &str) -> Option<StatusMatch> {
    if code == "default" {
        return Some(StatusMatch::Default);
    }
    let bytes = code.as_bytes();
    match bytes {
        [d @ b'1'..=b'5', b'X' | b'x', b'X' | b'x'] => {
            Some(StatusMatch::Range(u16::from(d - b'0')))
        }
        [b'1'..=b'5', b'0'..=b'9', b'0'..=b'9'] => code.parse().ok().map(StatusMatch::Exact),
        _ => None,
    }
}

/// A JSON pointer as a URI fragment (percent-encoded where a URI needs it).
fn pointer_fragment(pointer: &str) -> String {
    const FRAGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'<')
        .add(b'>')
        .add(b'`')
        .add(b'{')
        .add(b'}')
        .add(b'%')
        .add(b'|')
        .add(b'\\')
        .add(b'^')
        .add(b'[')
        .add(b']');
    percent_encoding::utf8_percent_encode(pointer, FRAGMENT).to_string()
}

/// Whether a media type (or range) is JSON: `application/json`, `*/*`, `application/*`, or a
/// `+json` suffix.
fn is_json(media: &str) -> bool {
    MediaRange::parse(media).is_some_and(|r| r.json)
}

impl MediaRange {
    /// Parses `type/subtype` (parameters dropped, case-insensitive); `json` for JSON types
    /// and the wildcards that take them.
    pub fn parse(text: &str) -> Option<MediaRange> {
        let essence = text.split(';').next()?.trim().to_ascii_lowercase();
        let (kind, subtype) = essence.split_once('/')?;
        if kind.is_empty() || subtype.is_empty() {
            return None;
        }
        let json = subtype == "json" && (kind == "application" || kind == "*")
            || subtype.ends_with("+json")
            || (kind == "*" && subtype == "*")
            || (kind == "application" && subtype == "*");
        Some(MediaRange {
            kind: kind.to_string(),
            subtype: subtype.to_string(),
            json,
        })
    }
}
