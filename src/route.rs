//! Stage 1: find the route for a method and path.
//!
//! Rejects with 404 when no route has the path and 405 (with `Allow`) when the path is known
//! but not for this method. Paths match exactly as configured: `/conversations/` and
//! `/conversations` are different paths.
//!
//! Templates are entered in the tree with their parameters renamed by position (`{p0}`), so
//! that `GET /a/{id}` and `DELETE /a/{name}` share one path (matchit refuses two names at one
//! place); each route keeps its own names. A segment with several parameters or with text
//! around one (`{base}...{head}`, as OpenAPI documents write) is one tree parameter, split
//! after the match at its literal text (the first occurrence of each); a value that does not
//! split is no match (404).

use http::header::HeaderValue;
use http::Method;

use crate::error::GatewayError;

/// Method + path lookup over a radix tree (matchit), compiled once per snapshot.
#[derive(Debug)]
pub struct Router {
    tree: matchit::Router<usize>,
    paths: Vec<PathEntry>,
}

#[derive(Debug)]
struct PathEntry {
    /// The template as entered in the tree (parameters renamed by position).
    template: String,
    /// (method, index into the snapshot's routes, the route's names for the tree's
    /// parameters); a handful at most, so a Vec beats a map.
    methods: Vec<(Method, usize, Vec<Capture>)>,
    allow: HeaderValue,
}

/// What one tree parameter stands for in a route's template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Capture {
    /// A whole segment (or the catch-all rest): one parameter.
    Name(String),
    /// A segment of literal text and parameters, in order.
    Pattern(Vec<Piece>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Name(String),
}

/// The path parameters a request's path gave, by the route's names.
#[derive(Debug, Default)]
pub struct Params<'p> {
    pairs: Vec<(&'p str, &'p str)>,
}

impl<'p> Params<'p> {
    /// The value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&'p str> {
        self.pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// Every (name, value), in template order.
    pub fn iter(&self) -> impl Iterator<Item = (&'p str, &'p str)> + '_ {
        self.pairs.iter().copied()
    }
}

/// The route found for a request, with the path parameters it captured.
pub struct Found<'p> {
    pub route: usize,
    pub params: Params<'p>,
}

/// The form two templates share when they match the same paths (parameters renamed by
/// position), so that a clash between routes can name both; `None` for a bad template.
pub fn place(template: &str) -> Option<String> {
    canonical(template).ok().map(|(place, _)| place)
}

/// `template` with each parameter segment renamed by position, and what each stands for.
fn canonical(template: &str) -> Result<(String, Vec<Capture>), String> {
    let mut out = String::with_capacity(template.len());
    let mut captures = Vec::new();
    for (i, segment) in template.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if !segment.contains('{') {
            out.push_str(segment);
            continue;
        }
        let mut pieces = Vec::new();
        let mut rest = segment;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("path {template:?}: unclosed `{{`"))?;
            pieces.push(Piece::Name(after[..close].to_string()));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        let position = captures.len();
        match pieces.as_slice() {
            [Piece::Name(name)] if name.starts_with('*') => {
                out.push_str(&format!("{{*p{position}}}"));
                captures.push(Capture::Name(name[1..].to_string()));
            }
            [Piece::Name(name)] => {
                out.push_str(&format!("{{p{position}}}"));
                captures.push(Capture::Name(name.clone()));
            }
            _ => {
                let names_ok = pieces.iter().all(|p| match p {
                    Piece::Name(n) => !n.is_empty() && !n.starts_with('*'),
                    Piece::Text(_) => true,
                });
                let adjacent = pieces
                    .windows(2)
                    .any(|w| matches!(w, [Piece::Name(_), Piece::Name(_)]));
                if !names_ok || adjacent {
                    return Err(format!(
                        "path {template:?}: segment {segment:?} cannot be split into its parameters"
                    ));
                }
                out.push_str(&format!("{{p{position}}}"));
                captures.push(Capture::Pattern(pieces));
            }
        }
    }
    Ok((out, captures))
}

/// Splits one segment's value by its pattern; `None` when the literal text is not there.
fn split<'p>(pieces: &[Piece], value: &'p str, out: &mut Vec<(&'p str, &'p str)>) -> Option<()> {
    let mut rest = value;
    let mut pending: Option<&Piece> = None;
    for piece in pieces {
        match piece {
            Piece::Text(text) => {
                let at = if pending.is_some() {
                    rest.find(text.as_str())?
                } else if rest.starts_with(text.as_str()) {
                    0
                } else {
                    return None;
                };
                if let Some(Piece::Name(_)) = pending.take() {
                    out.push(("", &rest[..at]));
                }
                rest = &rest[at + text.len()..];
            }
            Piece::Name(_) => pending = Some(piece),
        }
    }
    match pending {
        Some(_) => out.push(("", rest)),
        None if !rest.is_empty() => return None,
        None => {}
    }
    Some(())
}

impl Router {
    pub fn new() -> Self {
        Router {
            tree: matchit::Router::new(),
            paths: Vec::new(),
        }
    }

    /// Adds `method template` as route number `route`. Errors are written for operators.
    pub fn add(&mut self, method: Method, template: &str, route: usize) -> Result<(), String> {
        if !template.starts_with('/') {
            return Err(format!("path {template:?} must start with `/`"));
        }
        let (canonical, captures) = canonical(template)?;
        let existing = self.paths.iter().position(|p| p.template == canonical);
        let index = match existing {
            Some(index) => index,
            None => {
                let index = self.paths.len();
                self.tree
                    .insert(&canonical, index)
                    .map_err(|e| format!("path {template:?}: {e}"))?;
                self.paths.push(PathEntry {
                    template: canonical,
                    methods: Vec::new(),
                    allow: HeaderValue::from_static(""),
                });
                index
            }
        };
        let entry = &mut self.paths[index];
        if entry.methods.iter().any(|(m, _, _)| *m == method) {
            return Err(format!("another route already serves {method} {template}"));
        }
        entry.methods.push((method, route, captures));
        let allow = entry
            .methods
            .iter()
            .map(|(m, _, _)| m.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        entry.allow = HeaderValue::from_str(&allow).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Finds the route for `method` and `path`.
    pub fn find<'p>(&'p self, method: &Method, path: &'p str) -> Result<Found<'p>, GatewayError> {
        let matched = self.tree.at(path).map_err(|_| GatewayError::NotFound)?;
        let entry = self
            .paths
            .get(*matched.value)
            .ok_or(GatewayError::NotFound)?;
        match entry.methods.iter().find(|(m, _, _)| m == method) {
            Some((_, route, captures)) => {
                let mut pairs = Vec::new();
                for ((_, value), capture) in matched.params.iter().zip(captures) {
                    match capture {
                        Capture::Name(name) => pairs.push((name.as_str(), value)),
                        Capture::Pattern(pieces) => {
                            let from = pairs.len();
                            split(pieces, value, &mut pairs).ok_or(GatewayError::NotFound)?;
                            let names = pieces.iter().filter_map(|p| match p {
                                Piece::Name(name) => Some(name.as_str()),
                                Piece::Text(_) => None,
                            });
                            for (pair, name) in pairs[from..].iter_mut().zip(names) {
                                pair.0 = name;
                            }
                        }
                    }
                }
                Ok(Found {
                    route: *route,
                    params: Params { pairs },
                })
            }
            None => Err(GatewayError::MethodNotAllowed {
                allow: entry.allow.clone(),
            }),
        }
    }
}

impl Default for Router {
    fn default() -> Self {
        Router::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        let mut r = Router::new();
        r.add(Method::POST, "/v1/conversations", 0).unwrap();
        r.add(Method::GET, "/v1/conversations", 1).unwrap();
        r.add(Method::POST, "/conversations/", 2).unwrap();
        r.add(Method::GET, "/v1/items/{id}", 3).unwrap();
        r
    }

    #[test]
    fn matches_method_and_path() {
        let r = router();
        assert_eq!(
            r.find(&Method::POST, "/v1/conversations")
                .ok()
                .map(|f| f.route),
            Some(0)
        );
        assert_eq!(
            r.find(&Method::GET, "/v1/conversations")
                .ok()
                .map(|f| f.route),
            Some(1)
        );
        let found = r.find(&Method::GET, "/v1/items/42").ok().unwrap();
        assert_eq!((found.route, found.params.get("id")), (3, Some("42")));
    }

    #[test]
    fn trailing_slash_is_a_different_path() {
        let r = router();
        assert!(matches!(
            r.find(&Method::POST, "/conversations"),
            Err(GatewayError::NotFound)
        ));
        assert!(matches!(
            r.find(&Method::GET, "/nope"),
            Err(GatewayError::NotFound)
        ));
    }

    #[test]
    fn wrong_method_lists_allowed() {
        let r = router();
        match r.find(&Method::DELETE, "/v1/conversations") {
            Err(GatewayError::MethodNotAllowed { allow }) => assert_eq!(allow, "POST, GET"),
            _ => panic!("expected 405"),
        }
    }

    #[test]
    fn duplicate_and_bad_templates_are_errors() {
        let mut r = router();
        assert!(r
            .add(Method::POST, "/v1/conversations", 9)
            .unwrap_err()
            .contains("already serves"));
        assert!(r
            .add(Method::GET, "v1", 9)
            .unwrap_err()
            .contains("must start with"));
        assert!(r.add(Method::GET, "/v1/items/{other}", 9).is_err());
        assert!(r.add(Method::GET, "/v1/x/{a}{b}", 9).is_err());
    }

    #[test]
    fn other_names_at_one_place_and_several_in_one_segment() {
        let mut r = router();
        r.add(Method::DELETE, "/v1/items/{name}", 4).unwrap();
        r.add(Method::GET, "/compare/{base}...{head}", 5).unwrap();
        r.add(Method::GET, "/files/{*path}", 6).unwrap();
        let found = r.find(&Method::DELETE, "/v1/items/a").ok().unwrap();
        assert_eq!((found.route, found.params.get("name")), (4, Some("a")));
        assert_eq!(found.params.get("id"), None);
        let found = r.find(&Method::GET, "/compare/main...dev").ok().unwrap();
        let pairs: Vec<_> = found.params.iter().collect();
        assert_eq!(pairs, vec![("base", "main"), ("head", "dev")]);
        assert!(matches!(
            r.find(&Method::GET, "/compare/main"),
            Err(GatewayError::NotFound)
        ));
        let found = r.find(&Method::GET, "/files/a/b").ok().unwrap();
        assert_eq!(found.params.get("path"), Some("a/b"));
    }
}
