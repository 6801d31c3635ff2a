//! Stage 1: find the route for a method and path.
//!
//! Rejects with 404 when no route has the path and 405 (with `Allow`) when the path is known
//! but not for this method. Paths match exactly as configured: `/conversations/` and
//! `/conversations` are different paths.

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
    template: String,
    /// (method, index into the snapshot's routes); a handful at most, so a Vec beats a map.
    methods: Vec<(Method, usize)>,
    allow: HeaderValue,
}

/// The route found for a request, with the path parameters it captured.
pub struct Found<'p> {
    pub route: usize,
    pub params: matchit::Params<'p, 'p>,
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
        let existing = self.paths.iter().position(|p| p.template == template);
        let index = match existing {
            Some(index) => index,
            None => {
                let index = self.paths.len();
                self.tree
                    .insert(template, index)
                    .map_err(|e| format!("path {template:?}: {e}"))?;
                self.paths.push(PathEntry {
                    template: template.to_string(),
                    methods: Vec::new(),
                    allow: HeaderValue::from_static(""),
                });
                index
            }
        };
        let entry = &mut self.paths[index];
        if entry.methods.iter().any(|(m, _)| *m == method) {
            return Err(format!("another route already serves {method} {template}"));
        }
        entry.methods.push((method, route));
        let allow = entry
            .methods
            .iter()
            .map(|(m, _)| m.as_str())
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
        match entry.methods.iter().find(|(m, _)| m == method) {
            Some(&(_, route)) => Ok(Found {
                route,
                params: matched.params,
            }),
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
    }
}
