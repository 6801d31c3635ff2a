//! Schemas compiled against documents held in memory: an OpenAPI document and the files its
//! `$ref`s name, already translated to JSON Schema 2020-12 by the importer. The documents are
//! registered once ([`DocumentSet::new`]); each [`DocumentSet::compile`] adds only its own
//! small schema (`{"$ref": "<document>#/paths/..."}` and the like), so a document of a
//! thousand operations is not copied a thousand times.
//!
//! Nothing is ever retrieved: every document is given up front, and a reference to anything
//! else fails the compile.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonschema::{Draft, PatternOptions, ReferencingError, Registry, Retrieve, Uri};
use serde_json::Value;

use super::coerce::{self, Decode, Plan};
use super::CompiledSchema;

/// Documents by URI, registered once for many compiles.
pub struct DocumentSet {
    docs: HashMap<String, Arc<Value>>,
    registry: Registry<'static>,
    /// In a strict set ([`DocumentSet::strict`]), what each closed object declares.
    closed: Option<Arc<super::strict::Closed>>,
}

impl std::fmt::Debug for DocumentSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentSet")
            .field("docs", &self.docs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The retriever of a [`DocumentSet`]: every document was given up front.
struct Nothing;

impl Retrieve for Nothing {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let uri = uri.as_str();
        let scheme = uri.split(':').next().unwrap_or_default();
        Err(match scheme {
            "http" | "https" => format!("remote schemas are never fetched ({uri})"),
            _ => format!("{} is not a document of this set", describe(uri)),
        }
        .into())
    }
}

/// A local URI as a path, for messages.
fn describe(uri: &str) -> String {
    match uri
        .strip_prefix(super::load::SCHEME)
        .and_then(|r| r.strip_prefix("://"))
    {
        Some(path) => percent_encoding::percent_decode_str(path)
            .decode_utf8_lossy()
            .into_owned(),
        None => uri.to_string(),
    }
}

impl DocumentSet {
    /// The URI a document at `path` (absolute, canonical) is registered under; a relative
    /// `$ref` in it resolves as a relative path would on disk.
    pub fn uri_of(path: &Path) -> String {
        super::load::file_uri(path)
    }

    /// Registers `docs` (URI, document) for the compiles to come.
    pub fn new(docs: Vec<(String, Value)>) -> Result<DocumentSet, String> {
        let mut by_uri = HashMap::new();
        for (uri, value) in docs {
            by_uri.insert(uri, Arc::new(value));
        }
        let registry = Registry::new()
            .retriever(Nothing)
            .draft(Draft::Draft202012)
            .extend(
                by_uri
                    .iter()
                    .map(|(uri, value)| (uri.clone(), Value::clone(value))),
            )
            .and_then(|builder| builder.prepare())
            .map_err(|e| reference_problem(&e))?;
        Ok(DocumentSet {
            docs: by_uri,
            registry,
            closed: None,
        })
    }

    /// The set for strict operations' bodies: `docs` with every object that the body
    /// schemas at `bodies` (document URI, JSON pointer) can hold closed to fields it does not
    /// declare (see `schema/strict.rs`).
    pub fn strict(
        docs: Vec<(String, Value)>,
        bodies: &[(String, String)],
    ) -> Result<DocumentSet, String> {
        let mut by_uri: HashMap<String, Value> = docs.into_iter().collect();
        let aliases = HashMap::new();
        let docs = super::strict::Docs {
            by_uri: &mut by_uri,
            aliases: &aliases,
        };
        let closed = super::strict::close(docs, bodies);
        let mut set = DocumentSet::new(by_uri.into_iter().collect())?;
        set.closed = Some(Arc::new(closed));
        Ok(set)
    }

    /// The document registered under `uri`.
    pub fn document(&self, uri: &str) -> Option<&Value> {
        self.docs.get(uri).map(|d| &**d)
    }

    /// Compiles `schema` (whose `$ref`s name the set's documents by absolute URI), known to
    /// messages and the status page as `source`; `decodes` names the properties whose
    /// values are not one value per key: lists in one string (`a,b,c`) and the character
    /// between items, or objects as `name[key]=value` pairs.
    pub fn compile(
        &self,
        schema: &Value,
        uri: &str,
        source: PathBuf,
        decodes: &[(String, Decode)],
    ) -> Result<CompiledSchema, String> {
        let validator = jsonschema::options_for::<super::Instance>()
            .with_draft(Draft::Draft202012)
            .with_registry(&self.registry)
            .with_base_uri(uri.to_string())
            .with_retriever(Nothing)
            .with_pattern_options(PatternOptions::regex())
            .should_validate_formats(true)
            .build(schema)
            .map_err(|e| match e.kind() {
                jsonschema::error::ValidationErrorKind::Referencing(inner) => {
                    reference_problem(inner)
                }
                _ => {
                    let at = e.instance_path().as_str();
                    let at = if at.is_empty() { "the top level" } else { at };
                    format!("invalid schema at {at}: {e}")
                }
            })?;
        let mut plan = Plan::build(schema, uri, self);
        for (name, decode) in decodes {
            // The plan of an object parameter's own properties.
            let nested = || {
                let property = schema.pointer(&format!(
                    "/properties/{}",
                    super::message::escape_pointer_segment(name)
                ));
                property.map(|property| Plan::build(property, uri, self))
            };
            match decode {
                Decode::Delimited(delimiter) => plan.set_delimiter(name, *delimiter),
                Decode::DeepObject => {
                    if let Some(nested) = nested() {
                        plan.set_deep(name, nested);
                    }
                }
                Decode::Path(style) => plan.set_path_style(name, *style),
                Decode::Pairs {
                    assigned,
                    delimiter,
                } => {
                    if let Some(nested) = nested() {
                        plan.set_pairs(name, nested, *assigned, *delimiter);
                    }
                }
                Decode::Exploded(location) => {
                    if let Some(nested) = nested() {
                        plan.set_exploded(name, nested, *location)?;
                    }
                }
            }
        }
        Ok(CompiledSchema {
            validator,
            plan,
            closed: self.closed.clone(),
            source,
        })
    }
}

fn reference_problem(error: &ReferencingError) -> String {
    match error {
        ReferencingError::Unretrievable { uri, source } => {
            format!("a $ref to {} cannot be used: {source}", describe(uri))
        }
        ReferencingError::PointerToNowhere { pointer } => {
            format!("a $ref points to nothing: {pointer} does not exist")
        }
        other => format!("bad $ref: {other}"),
    }
}

impl coerce::Resolve for DocumentSet {
    fn resolve(&self, base: &str, reference: &str) -> Option<(String, &Value)> {
        let (target, fragment) = super::split_reference(base, reference)?;
        let value = super::at_fragment(self.docs.get(&target)?, fragment)?;
        Some((target, value))
    }
}
