//! Config errors name the file, the line and the key, and every error is reported at once.

use schemagate::Snapshot;

/// (yaml, expected line, expected key, a fragment of the message)
const CASES: &[(&str, u64, &str, &str)] = &[
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  b: { url: 'http://127.0.0.1:1' }\nroutes:\n  - name: r\n    method: GET\n    path: /x\n    upstream: b\n    responses: report\n",
        6,
        "routes[0].responses",
        "`responses: report` on a hand-written route needs `schemas.response`",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  b: { url: 'http://127.0.0.1:1' }\nroutes:\n  - name: r\n    method: GET\n    path: /x\n    upstream: b\n    responses: always\n",
        10,
        "routes[0].responses",
        "unknown variant `always`",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams: {}\nroutes: []\nlogging:\n  access: /no/such/dir/access.log\n",
        6,
        "logging.access",
        "/no/such/dir/access.log is not a file in an existing directory",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams: {}\nroutes: []\nlogging:\n  format: json\n  access_buffer: 1KiB\n",
        7,
        "logging.access_buffer",
        "1024 bytes is outside 64KiB..1GiB",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams: {}\nroutes: []\nlogging:\n  color: rainbow\n",
        6,
        "logging.color",
        "unknown variant `rainbow`",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams: {}\nroutes: []\nlistener: x\n",
        5,
        "listener",
        "unknown field `listener`",
    ),
    (
        "listeners:\n  - address: nowhere\nupstreams: {}\nroutes: []\n",
        2,
        "listeners[0].address",
        "is not an address of the form host:port",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  b:\n    url: ftp://x\nroutes: []\n",
        5,
        "upstreams.b.url",
        "must start with http://",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  b: { url: 'http://127.0.0.1:1' }\nroutes:\n  - name: r\n    method: GET\n    path: /x\n    upstream: c\n",
        6,
        "routes[0].upstream",
        "no upstream named \"c\"",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams: {}\nroutes: []\ndefaults:\n  limits:\n    body: lots\n",
        7,
        "defaults.limits.body",
        "invalid size \"lots\"",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams: {}\nroutes: []\ndefaults:\n  limits:\n    backlog: 0\n",
        7,
        "defaults.limits.backlog",
        "must be at least 1",
    ),
    (
        "listeners:\n  - address: ${SCHEMAGATE_TEST_SURELY_UNSET_VAR}\nupstreams: {}\nroutes: []\n",
        2,
        "listeners[0].address",
        "SCHEMAGATE_TEST_SURELY_UNSET_VAR is not set",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  m: { url: mock, mock: { body_file: missing.json } }\nroutes: []\n",
        4,
        "upstreams.m.mock.body_file",
        "cannot read",
    ),
    (
        // An endless file is refused at its size cap, not read until memory runs out.
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  m: { url: mock, mock: { body_file: /dev/zero } }\nroutes: []\n",
        4,
        "upstreams.m.mock.body_file",
        "/dev/zero is larger than 16777216 bytes",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  b: { url: 'http://127.0.0.1:1' }\nroutes:\n  - { name: r, method: GET, path: '/x/{id}', upstream: b, rewrite: '/y/{other}' }\n",
        6,
        "routes[0].rewrite",
        "rewrite uses {other}",
    ),
    (
        // A missing field is reported at the last line of the mapping that lacks it.
        "listeners:\n  - address: 127.0.0.1:0\nupstreams: {}\nroutes:\n  - name: r\n    method: GET\n",
        6,
        "routes[0]",
        "missing field `path`",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  b: { url: 'http://127.0.0.1:1' }\nroutes:\n  - { name: r, method: GET, path: /x, upstream: b, rate_limit: { quota: 1/s, store: redis } }\n",
        6,
        "routes[0].rate_limit",
        "`store: redis` needs a top-level `redis:` section",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams: {}\nroutes: []\nredis:\n  url: 'http://127.0.0.1:6379'\n",
        6,
        "redis.url",
        "not a Redis URL",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams: {}\nroutes: []\nredis:\n  url: 'redis://127.0.0.1:6379'\n  cluster: ['redis://127.0.0.1:7000']\n",
        6,
        "redis",
        "needs exactly one of `url` (one Redis) and `cluster`",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams: {}\nroutes: []\nredis:\n  cluster: ['redis://127.0.0.1:7000', 'unix:///tmp/r.sock']\n",
        6,
        "redis.cluster",
        "a cluster's seeds are redis:// or rediss:// URLs",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams: {}\nroutes: []\nredis:\n  url: 'redis://127.0.0.1:6379'\n  tls: { ca: ca.pem }\n",
        7,
        "redis.tls",
        "applies to rediss:// URLs only",
    ),
    (
        // A password file that cannot be read is located; its content is never echoed.
        "listeners:\n  - address: 127.0.0.1:0\nupstreams: {}\nroutes: []\nredis:\n  url: 'redis://127.0.0.1:6379'\n  password_file: /run/secrets/redis\n",
        7,
        "redis.password_file",
        "cannot read /run/secrets/redis",
    ),
    (
        // `none` is not an algorithm a provider can allow.
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  b: { url: 'http://127.0.0.1:1' }\nroutes: []\njwt:\n  - name: corp\n    issuer: https://id.test/\n    jwks_file: jwks.json\n    algorithms: [RS256, none]\n",
        10,
        "jwt[0].algorithms[1]",
        "unknown variant `none`",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  b: { url: 'http://127.0.0.1:1' }\nroutes: []\njwt:\n  - name: corp\n    issuer: https://id.test/\n    jwks_file: /nonexistent/jwks.json\n",
        9,
        "jwt[0].jwks_file",
        "cannot read /nonexistent/jwks.json",
    ),
    (
        // A JWK Set's keys are public: HMAC needs `secret_file`.
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  b: { url: 'http://127.0.0.1:1' }\nroutes: []\njwt:\n  - name: corp\n    issuer: https://id.test/\n    jwks_file: jwks.json\n    algorithms: [HS256]\n",
        7,
        "jwt[0].algorithms",
        "HMAC",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  b: { url: 'http://127.0.0.1:1' }\nroutes: []\njwt:\n  - name: corp\n    issuer: https://id.test/\n",
        7,
        "jwt[0].name",
        "exactly one of `jwks_url`, `jwks_file` or `secret_file`",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  b: { url: 'http://127.0.0.1:1' }\nroutes: []\njwt:\n  - name: corp\n    issuer: https://id.test/\n    secret_file: /nonexistent/hs.key\n    leeway: soon\n",
        10,
        "jwt[0].leeway",
        "invalid duration",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  b: { url: 'http://127.0.0.1:1' }\nroutes:\n  - name: r\n    method: GET\n    path: /x\n    upstream: b\n    auth: { jwt: corp }\n",
        6,
        "routes[0].auth",
        "no `jwt:` provider named \"corp\" (known: none)",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  b: { url: 'http://127.0.0.1:1' }\nroutes:\n  - name: r\n    method: GET\n    path: /x\n    upstream: b\n    auth: { jwt: corp, scope: [a] }\n",
        10,
        "routes[0].auth.scope",
        "unknown field `scope`",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  b: { url: 'http://127.0.0.1:1' }\nroutes:\n  - name: r\n    method: GET\n    path: /x\n    upstream: b\n    auth: token\n",
        10,
        "routes[0].auth",
        "unknown variant `token`",
    ),
    (
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  b: { url: 'http://127.0.0.1:1' }\nroutes:\n  - name: r\n    method: GET\n    path: /x\n    upstream: b\n    tenant: { from: claim, name: org.id }\n",
        6,
        "routes[0].tenant",
        "`from: claim` needs `auth: { jwt: NAME }`",
    ),
];

#[test]
fn each_error_names_file_line_and_key() {
    for (yaml, line, key, fragment) in CASES {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, yaml).unwrap();
        let errors = Snapshot::load(&path).expect_err(yaml);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let error = &errors[0];
        assert_eq!(error.file, path);
        assert_eq!(error.line, Some(*line), "{yaml}\n{error}");
        assert_eq!(error.key.as_deref(), Some(*key), "{yaml}\n{error}");
        assert!(error.message.contains(fragment), "{yaml}\n{error}");
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("{}:{line}: {key}: ", path.display())),
            "{text}"
        );
    }
}

#[test]
fn all_semantic_errors_are_reported_together() {
    let yaml = "listeners:\n  - address: bad\nupstreams:\n  b: { url: 'ftp://x' }\nroutes:\n  - { name: r, method: GET, path: /x, upstream: nope }\n  - { name: s, method: 'B A D', path: /y, upstream: b }\n";
    let (keys, errors) = error_keys(yaml);
    assert_eq!(
        keys,
        [
            "listeners[0].address",
            "upstreams.b.url",
            "routes[0].upstream",
            "routes[1].method"
        ],
        "{errors:?}"
    );
}

/// A route with several problems reports each of them, not only its first.
#[test]
fn every_problem_of_one_route_is_reported() {
    let yaml = r#"listeners:
  - address: 127.0.0.1:0
upstreams: {}
routes:
  - name: r
    method: "B A D"
    path: /x/{id}
    upstream: nope
    rewrite: /y/{other}
    auth: api_key
    rate_limit: { quota: lots }
    timeouts: { header_read: 1s }
"#;
    let (keys, errors) = error_keys(yaml);
    assert_eq!(
        keys,
        [
            "routes[0].method",
            "routes[0].upstream",
            "routes[0].timeouts",
            "routes[0].rewrite",
            "routes[0].auth",
            "routes[0].rate_limit",
        ],
        "{errors:?}"
    );
}

/// Loads `yaml` (which must fail) and returns the key of each error, in order.
fn error_keys(yaml: &str) -> (Vec<String>, Vec<schemagate::config::ConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    let errors = Snapshot::load(&path).unwrap_err();
    let keys = errors
        .iter()
        .map(|e| e.key.clone().unwrap_or_default())
        .collect();
    (keys, errors)
}

#[test]
fn missing_file_is_reported() {
    let errors = Snapshot::load(std::path::Path::new("/nonexistent/gateway.yaml")).unwrap_err();
    assert!(
        errors[0].to_string().contains("cannot read config file"),
        "{errors:?}"
    );
}
