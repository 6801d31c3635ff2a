//! Stage: who the request is for. The tenant comes from one configured source (a header, a
//! query parameter, a path parameter, a top-level body field, or the API key's binding).
//!
//! Rejects with 400 when the tenant is missing on a route that requires it, when one request
//! names two different tenants, or when the value is unusable; with 403 when an API key acts
//! for a tenant outside its binding. The value is only used as a rate-limit key and in logs.

use http::header::{HeaderMap, HeaderName};
use serde_json::Value;

use crate::auth::ApiKey;
use crate::error::GatewayError;
use crate::jwt::Claims;

/// Longest tenant value accepted; longer ones are refused rather than stored as keys.
const MAX_TENANT_LEN: usize = 128;

/// The bucket used by a route's requests that carry no tenant, when it shares one.
pub const SHARED: &str = "";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSource {
    Header(HeaderName),
    Query(String),
    Path(String),
    Body(String),
    /// The API key's binding: its one tenant, or its name when bound to several.
    Key,
    /// The verified TLS client certificate's subject (common name).
    ClientCert,
    /// A claim of the verified JSON Web Token, by dotted path.
    Claim(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRule {
    pub source: TenantSource,
    /// With no tenant: `false` rejects (400), `true` uses the route's shared bucket.
    pub shared_when_missing: bool,
}

impl TenantRule {
    fn describe(&self) -> String {
        match &self.source {
            TenantSource::Header(name) => format!("the {name} header"),
            TenantSource::Query(name) => format!("the query parameter {name}"),
            TenantSource::Path(name) => format!("the path parameter {name}"),
            TenantSource::Body(name) => format!("the body field {name}"),
            TenantSource::Key => "an API key".to_string(),
            TenantSource::ClientCert => "a TLS client certificate".to_string(),
            TenantSource::Claim(path) => format!("a token with the claim {path}"),
        }
    }
}

/// Where to look, for one request.
pub struct Inputs<'a> {
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub params: &'a crate::route::Params<'a>,
    pub body: Option<&'a crate::schema::Parsed>,
    pub key: Option<&'a ApiKey>,
    /// The verified client certificate's subject, on a TLS listener that asked for one.
    pub client: Option<&'a str>,
    /// The verified token's claims, on a route with `auth: { jwt: NAME }`.
    pub claims: Option<&'a Claims>,
}

/// Resolves the tenant (or [`SHARED`]) and checks the API key may act for it.
///
/// Never rejects a value for its shape: the schemas judge values (a wrong-typed body field
/// or a repeated query key is their 422). A tenant longer than [`MAX_TENANT_LEN`] bytes is
/// keyed by its SHA-256, so limiter memory per tenant stays small.
pub fn resolve(rule: &TenantRule, inputs: &Inputs<'_>) -> Result<String, GatewayError> {
    let found = match &rule.source {
        TenantSource::Header(name) => single(
            inputs
                .headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string()),
        )?,
        TenantSource::Query(name) => query_values(inputs.query, name).next(),
        TenantSource::Path(name) => inputs.params.get(name).map(str::to_string),
        TenantSource::Body(field) => match inputs.body.and_then(|b| b.member(field)) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        },
        TenantSource::Key => inputs.key.map(|key| match key.tenants.as_slice() {
            [one] if one != "*" => one.clone(),
            _ => key.name.clone(),
        }),
        TenantSource::ClientCert => inputs.client.map(str::to_string),
        TenantSource::Claim(path) => inputs.claims.and_then(|claims| claims.text(path)),
    };
    let tenant = match found.filter(|t| !t.is_empty()) {
        Some(tenant) if tenant.len() > MAX_TENANT_LEN => {
            format!("sha256:{}", crate::auth::hash_key(tenant.as_bytes()))
        }
        Some(tenant) => tenant,
        None if rule.shared_when_missing => return Ok(SHARED.to_string()),
        None => {
            return Err(GatewayError::BadRequest {
                message: format!("missing tenant: send {}", rule.describe()),
            })
        }
    };
    if let Some(key) = inputs.key {
        if rule.source != TenantSource::Key && !key.allows(&tenant) {
            return Err(GatewayError::Forbidden {
                message: "this API key may not act for this tenant",
            });
        }
    }
    Ok(tenant)
}

/// The one value of an identity header; two different values are a 400, never "pick one".
fn single(mut values: impl Iterator<Item = String>) -> Result<Option<String>, GatewayError> {
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.any(|other| other != first) {
        return Err(GatewayError::BadRequest {
            message: "the request names two different tenants".to_string(),
        });
    }
    Ok(Some(first))
}

/// Decoded values of `name` in a raw query string (`+` is a space).
fn query_values<'a>(query: Option<&'a str>, name: &'a str) -> impl Iterator<Item = String> + 'a {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(move |pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key) == name).then(|| decode(value))
        })
}

fn decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_with(
        rule: &TenantRule,
        headers: &HeaderMap,
        query: Option<&str>,
        body: Option<&Value>,
        key: Option<&ApiKey>,
    ) -> Result<String, GatewayError> {
        let body =
            body.map(|b| crate::schema::parse_request_body(&b.to_string().into(), 64).unwrap());
        let router = {
            let mut r = crate::route::Router::new();
            r.add(http::Method::GET, "/t/{tenant}", 0).unwrap();
            r
        };
        let matched = router.find(&http::Method::GET, "/t/acme").ok().unwrap();
        resolve(
            rule,
            &Inputs {
                headers,
                query,
                params: &matched.params,
                body: body.as_ref(),
                key,
                client: None,
                claims: None,
            },
        )
    }

    fn rule(source: TenantSource) -> TenantRule {
        TenantRule {
            source,
            shared_when_missing: false,
        }
    }

    #[test]
    fn each_source() {
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", "7".parse().unwrap());
        let header = rule(TenantSource::Header(HeaderName::from_static("x-tenant")));
        assert_eq!(
            resolve_with(&header, &headers, None, None, None).unwrap(),
            "7"
        );
        let query = rule(TenantSource::Query("locationId".into()));
        assert_eq!(
            resolve_with(&query, &headers, Some("a=1&locationId=loc%201"), None, None).unwrap(),
            "loc 1"
        );
        let path = rule(TenantSource::Path("tenant".into()));
        assert_eq!(
            resolve_with(&path, &headers, None, None, None).unwrap(),
            "acme"
        );
        let body = rule(TenantSource::Body("locationId".into()));
        let value = serde_json::json!({"locationId": 42});
        assert_eq!(
            resolve_with(&body, &headers, None, Some(&value), None).unwrap(),
            "42"
        );
        // A wrong-typed field is keyed by its JSON text; the schema answers 422 for it.
        let value = serde_json::json!({"locationId": {"no": 1}});
        assert_eq!(
            resolve_with(&body, &headers, None, Some(&value), None).unwrap(),
            r#"{"no":1}"#
        );
    }

    #[test]
    fn missing_duplicate_and_shared() {
        let headers = HeaderMap::new();
        let mut query = rule(TenantSource::Query("locationId".into()));
        match resolve_with(&query, &headers, Some("x=1"), None, None) {
            Err(GatewayError::BadRequest { message }) => {
                assert_eq!(
                    message,
                    "missing tenant: send the query parameter locationId"
                )
            }
            other => panic!("{other:?}"),
        }
        // A repeated query key is the schema's 422 to give; the limiter keys the first value.
        let repeated = Some("locationId=a&locationId=b");
        assert_eq!(
            resolve_with(&query, &headers, repeated, None, None).unwrap(),
            "a"
        );
        // Two different tenant headers are a 400 (an identity header never picks one).
        let mut two = HeaderMap::new();
        two.append("x-tenant", "1".parse().unwrap());
        two.append("x-tenant", "2".parse().unwrap());
        let header = rule(TenantSource::Header(HeaderName::from_static("x-tenant")));
        assert!(matches!(
            resolve_with(&header, &two, None, None, None),
            Err(GatewayError::BadRequest { .. })
        ));
        assert_eq!(
            resolve_with(
                &query,
                &headers,
                Some("locationId=a&locationId=a"),
                None,
                None
            )
            .unwrap(),
            "a"
        );
        query.shared_when_missing = true;
        assert_eq!(
            resolve_with(&query, &headers, None, None, None).unwrap(),
            SHARED
        );
        // Long values are keyed by their hash, never refused.
        let long = format!("locationId={}", "x".repeat(200));
        let keyed = resolve_with(&query, &headers, Some(&long), None, None).unwrap();
        assert_eq!(
            keyed,
            format!(
                "sha256:{}",
                crate::auth::hash_key("x".repeat(200).as_bytes())
            )
        );
    }

    #[test]
    fn keys_act_only_for_their_tenants() {
        let key = ApiKey {
            name: "acme-key".into(),
            sha256: [0; 32],
            tenants: vec!["7".into(), "8".into()],
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", "8".parse().unwrap());
        let header = rule(TenantSource::Header(HeaderName::from_static("x-tenant")));
        assert_eq!(
            resolve_with(&header, &headers, None, None, Some(&key)).unwrap(),
            "8"
        );
        headers.insert("x-tenant", "9".parse().unwrap());
        assert!(matches!(
            resolve_with(&header, &headers, None, None, Some(&key)),
            Err(GatewayError::Forbidden { .. })
        ));
        let by_key = rule(TenantSource::Key);
        assert_eq!(
            resolve_with(&by_key, &headers, None, None, Some(&key)).unwrap(),
            "acme-key"
        );
        let single = ApiKey {
            tenants: vec!["7".into()],
            ..key
        };
        assert_eq!(
            resolve_with(&by_key, &headers, None, None, Some(&single)).unwrap(),
            "7"
        );
    }
}
