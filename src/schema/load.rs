//! Loading schema files: the schema directory as a closed set of local resources.
//!
//! Every `*.json` file under the schema directory gets a URI built from its absolute path under
//! a private scheme (`schemagate:///srv/schemas/common/id.json`). A relative `$ref` therefore
//! resolves exactly as a relative path would on disk, including `..`, yet nothing is ever read
//! through a `$ref`: the retriever only hands out files scanned up front. A reference that
//! leaves the directory, names a missing file, uses `file:` or goes to the network fails the
//! load with a message naming the referring file and the reference as written.

use std::collections::HashMap;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use jsonschema::{Retrieve, Uri};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use super::json;

/// The scheme of local schema URIs. It is not `file:` on purpose: a `file:` reference written in
/// a schema then never matches a local resource and is refused, instead of tying the schemas to
/// one machine's absolute paths.
pub(crate) const SCHEME: &str = "schemagate";

/// Schema files nest far less than request bodies; this only stops a pathological file.
const SCHEMA_JSON_MAX_DEPTH: usize = json::SERDE_JSON_MAX_DEPTH;

/// Bounds on the directory walk, so that a schema directory pointed at `/` by mistake fails
/// with a message instead of reading the whole disk.
const MAX_FILES: usize = 10_000;
const MAX_DIR_DEPTH: usize = 32;

/// Characters kept as they are in a URI path segment: RFC 3986 unreserved ones. Everything
/// else is percent-encoded, which is also the form fluent-uri's normalisation keeps, so the
/// strings built here compare equal to the URIs the resolver produces.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A schema that could not be loaded: the file asked for, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    file: PathBuf,
    message: String,
}

impl SchemaError {
    pub(crate) fn new(file: &Path, message: impl Into<String>) -> Self {
        SchemaError {
            file: file.to_path_buf(),
            message: message.into(),
        }
    }

    /// The schema file whose load failed (as the caller named it).
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// What is wrong, without the file name.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

impl std::error::Error for SchemaError {}

/// One scanned file: its path relative to the directory, and its JSON or why it has none.
#[derive(Debug)]
pub(crate) struct Doc {
    pub rel: PathBuf,
    pub parsed: Result<Arc<Value>, String>,
}

/// Every `*.json` file under one directory, read and parsed once.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// The canonical directory.
    pub root: PathBuf,
    /// The URI of the directory itself, ending in `/`.
    pub base: String,
    /// Files by their URI (normalised, without fragment).
    pub by_uri: HashMap<String, Doc>,
    /// URIs of files by the absolute `$id` they declare at their top level, so that a `$ref`
    /// to that `$id` finds the local copy instead of going to the network.
    pub by_id: HashMap<String, String>,
}

impl Scanned {
    /// Reads every `*.json` file under `dir`. A file that cannot be read or parsed is kept with
    /// its error: it only fails the schemas that use it.
    pub fn scan(dir: &Path) -> Result<Scanned, SchemaError> {
        let root = fs::canonicalize(dir)
            .map_err(|e| SchemaError::new(dir, format!("cannot open schema directory: {e}")))?;
        let base = dir_uri(&root);
        let mut files = Vec::new();
        walk(&root, 0, &mut files).map_err(|message| SchemaError::new(dir, message))?;
        let mut scanned = Scanned {
            root,
            base,
            by_uri: HashMap::with_capacity(files.len()),
            by_id: HashMap::new(),
        };
        for path in files {
            let rel = path
                .strip_prefix(&scanned.root)
                .map(Path::to_path_buf)
                .unwrap_or_else(|_| path.clone());
            let uri = scanned.uri_of(&rel);
            let parsed = read_json(&path).map(Arc::new);
            if let Ok(value) = &parsed {
                if let Some(id) = top_level_id(value, &uri) {
                    scanned.by_id.entry(id).or_insert_with(|| uri.clone());
                }
            }
            scanned.by_uri.insert(uri, Doc { rel, parsed });
        }
        Ok(scanned)
    }

    /// The URI of a file given by its path relative to the directory.
    pub fn uri_of(&self, rel: &Path) -> String {
        let mut uri = self.base.clone();
        let mut first = true;
        for component in rel.components() {
            if let Component::Normal(name) = component {
                if !first {
                    uri.push('/');
                }
                first = false;
                uri.extend(utf8_percent_encode(&name.to_string_lossy(), SEGMENT));
            }
        }
        uri
    }

    /// How a URI reads in a message: a path relative to the schema directory when it is local,
    /// else the URI itself.
    pub fn describe(&self, uri: &str) -> String {
        let uri = uri.split('#').next().unwrap_or(uri);
        match uri.strip_prefix(&self.base) {
            Some(rel) => percent_decode_str(rel).decode_utf8_lossy().into_owned(),
            None => match uri.strip_prefix(SCHEME).and_then(|r| r.strip_prefix("://")) {
                Some(path) => percent_decode_str(path).decode_utf8_lossy().into_owned(),
                None => uri.to_string(),
            },
        }
    }

    /// Why a URI that is not a known local resource cannot be used.
    fn refusal(&self, uri: &str) -> String {
        let scheme = uri.split(':').next().unwrap_or_default();
        match scheme {
            "http" | "https" => format!(
                "remote schemas are never fetched ({uri}); copy the schema under the schema directory and refer to it by a relative path"
            ),
            "file" => format!(
                "file: references are not allowed ({uri}); use a path relative to the referring schema"
            ),
            SCHEME if !uri.starts_with(&self.base) => format!(
                "{} is outside the schema directory {}",
                self.describe(uri),
                self.root.display()
            ),
            SCHEME => format!(
                "no schema file {} under {}",
                self.describe(uri),
                self.root.display()
            ),
            _ => format!("{uri} is neither a schema file nor a $id under the schema directory"),
        }
    }
}

/// The only way `$ref` reaches a document: a lookup among the scanned files.
#[derive(Debug, Clone)]
pub(crate) struct LocalRetriever(pub Arc<Scanned>);

impl Retrieve for LocalRetriever {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let key = uri.as_str().split('#').next().unwrap_or_default();
        let scanned = &*self.0;
        let local = scanned
            .by_uri
            .get(key)
            .or_else(|| scanned.by_id.get(key).and_then(|u| scanned.by_uri.get(u)));
        match local {
            Some(Doc {
                parsed: Ok(value), ..
            }) => Ok(Value::clone(value)),
            Some(Doc {
                rel,
                parsed: Err(why),
            }) => Err(format!("{} {why}", rel.display()).into()),
            None => Err(scanned.refusal(key).into()),
        }
    }
}

/// Reads and parses one schema file, with the same strict rules as request bodies (a duplicate
/// key in a schema is an authoring mistake that serde_json would silently resolve).
pub(crate) fn read_json(path: &Path) -> Result<Value, String> {
    let bytes = crate::files::read_capped(path, crate::files::MAX_DATA_FILE)
        .map_err(|e| format!("cannot be read: {e}"))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| "is not valid UTF-8".to_string())?;
    parse_json_text(text)
}

/// Parses a schema (or OpenAPI) document's JSON text with the strict rules of [`read_json`].
pub(crate) fn parse_json_text(text: &str) -> Result<Value, String> {
    json::parse_str(text, SCHEMA_JSON_MAX_DEPTH).map_err(|e| match e {
        json::BodyError::Empty => "is empty".to_string(),
        json::BodyError::InvalidUtf8 => "is not valid UTF-8".to_string(),
        json::BodyError::Syntax { line, column, what } => {
            format!("is not valid JSON: {what} at line {line} column {column}")
        }
        json::BodyError::DuplicateKey { key_pointer } => {
            format!("is not valid JSON: duplicate key at {key_pointer}")
        }
        json::BodyError::TooDeep { limit } => {
            format!("is not valid JSON: nests deeper than {limit} levels")
        }
        json::BodyError::Number { pointer, problem } => {
            let at = if pointer.is_empty() {
                "the top level"
            } else {
                &pointer
            };
            format!("has a number at {at} that {}", problem.describe())
        }
    })
}

/// The absolute form of a document's top-level `$id` (or draft 4 `id`), if it has one.
fn top_level_id(value: &Value, uri: &str) -> Option<String> {
    let id = value
        .get("$id")
        .or_else(|| value.get("id"))
        .and_then(Value::as_str)?;
    let base = jsonschema::uri::from_str(uri).ok()?;
    let resolved = jsonschema::uri::resolve_against(&base.borrow(), id).ok()?;
    let text = resolved.as_str();
    Some(text.split('#').next().unwrap_or(text).to_string())
}

/// The URI of a file given by its canonical path.
pub(crate) fn file_uri(path: &Path) -> String {
    let mut uri = dir_uri(path.parent().unwrap_or(path));
    if let Some(name) = path.file_name() {
        uri.extend(utf8_percent_encode(&name.to_string_lossy(), SEGMENT));
    }
    uri
}

/// The URI of a canonical directory, ending in `/`.
fn dir_uri(root: &Path) -> String {
    let mut uri = format!("{SCHEME}://");
    for component in root.components() {
        match component {
            Component::Prefix(prefix) => {
                uri.push('/');
                uri.extend(utf8_percent_encode(
                    &prefix.as_os_str().to_string_lossy(),
                    SEGMENT,
                ));
            }
            Component::Normal(name) => {
                uri.push('/');
                uri.extend(utf8_percent_encode(&name.to_string_lossy(), SEGMENT));
            }
            Component::RootDir | Component::CurDir | Component::ParentDir => {}
        }
    }
    uri.push('/');
    uri
}

/// Collects `*.json` files under `dir`. Symbolic links to files are followed; links to
/// directories are not, so a link cycle cannot make the walk endless.
fn walk(dir: &Path, depth: usize, files: &mut Vec<PathBuf>) -> Result<(), String> {
    if depth > MAX_DIR_DEPTH {
        return Err(format!(
            "schema directory nests deeper than {MAX_DIR_DEPTH} levels at {}",
            dir.display()
        ));
    }
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        paths.push(entry.path());
    }
    // Sorted, so that which file wins a `$id` declared twice does not depend on the platform.
    paths.sort();
    for path in paths {
        let Ok(link_meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if link_meta.is_dir() {
            walk(&path, depth + 1, files)?;
        } else if path.extension().is_some_and(|ext| ext == "json")
            && fs::metadata(&path).is_ok_and(|m| m.is_file())
        {
            if files.len() == MAX_FILES {
                return Err(format!(
                    "schema directory holds more than {MAX_FILES} .json files"
                ));
            }
            files.push(path);
        }
    }
    Ok(())
}
