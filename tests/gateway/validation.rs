//! Validation of the five documented endpoints over real sockets, as data: request in,
//! status and message out, and whether the upstream saw it.

use crate::support::*;

const BEARER: (&str, &str) = ("authorization", "Bearer tok3n");
const JSON: (&str, &str) = ("content-type", "application/json");

/// One request to the five documented endpoints and what it must get (also replayed by
/// `openapi_import`'s differential test against the OpenAPI-sourced config).
pub(crate) struct Case {
    pub name: &'static str,
    pub method: &'static str,
    pub target: &'static str,
    pub headers: &'static [(&'static str, &'static str)],
    pub body: &'static str,
    pub status: u16,
    /// Each must equal one line of the 422 `message` array, or be in the message string.
    pub messages: &'static [&'static str],
}

const fn ok(
    name: &'static str,
    method: &'static str,
    target: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
) -> Case {
    Case {
        name,
        method,
        target,
        headers,
        body,
        status: 200,
        messages: &[],
    }
}

const fn bad(
    name: &'static str,
    method: &'static str,
    target: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    status: u16,
    messages: &'static [&'static str],
) -> Case {
    Case {
        name,
        method,
        target,
        headers,
        body,
        status,
        messages,
    }
}

const GESTIONO: &str = "/v1/conversation-list";
const LC: &str = "/conversations/";
const FLEX: &str = "/v1/conversations";

pub(crate) const CASES: &[Case] = &[
    // Gestiono: credentials of any kind; body validated.
    ok("gestiono minimal", "POST", GESTIONO, &[("authorization", "sk_signed_key"), JSON], r#"{"name":"vip"}"#),
    ok("gestiono cookie auth", "POST", GESTIONO, &[("cookie", "session=abc"), JSON], r#"{"name":"vip"}"#),
    ok("gestiono full", "POST", GESTIONO, &[BEARER, JSON], r#"{"name":"n","source":"contact","filter":{"channelTypes":["whatsapp"],"form":{"id":1,"phoneField":"p","nameField":"n"},"purchases":{"resourceIds":[1,2.5],"match":"ANY","dateRange":{"from":"2024-01-01","to":"2024-02-01"}}},"extra":true}"#),
    ok("gestiono undocumented source value", "POST", GESTIONO, &[BEARER, JSON], r#"{"name":"n","source":"anything"}"#),
    bad("gestiono no credentials", "POST", GESTIONO, &[JSON], r#"{"name":"vip"}"#, 401, &["missing credentials"]),
    bad("gestiono missing name", "POST", GESTIONO, &[BEARER, JSON], r#"{}"#, 422, &["body.name is required"]),
    bad("gestiono name type", "POST", GESTIONO, &[BEARER, JSON], r#"{"name":5}"#, 422, &["body.name must be of type string"]),
    bad("gestiono nested required", "POST", GESTIONO, &[BEARER, JSON], r#"{"name":"n","filter":{"form":{"id":1,"nameField":"x"}}}"#, 422, &["body.filter.form.phoneField is required"]),
    bad("gestiono form id type", "POST", GESTIONO, &[BEARER, JSON], r#"{"name":"n","filter":{"form":{"id":"1","phoneField":"p","nameField":"x"}}}"#, 422, &["body.filter.form.id must be of type number"]),
    bad("gestiono purchases required", "POST", GESTIONO, &[BEARER, JSON], r#"{"name":"n","filter":{"purchases":{"match":"ANY"}}}"#, 422, &["body.filter.purchases.resourceIds is required"]),
    bad("gestiono array item types", "POST", GESTIONO, &[BEARER, JSON], r#"{"name":"n","filter":{"channelTypes":[1],"purchases":{"resourceIds":["a"]}}}"#, 422, &["body.filter.channelTypes[0] must be of type string", "body.filter.purchases.resourceIds[0] must be of type number"]),
    bad("gestiono root type", "POST", GESTIONO, &[BEARER, JSON], r#"[]"#, 422, &["body must be of type object"]),
    bad("gestiono null body", "POST", GESTIONO, &[BEARER, JSON], r#"null"#, 422, &["body must be of type object"]),

    // LeadConnector: bearer; Version has one allowed value when present; body fields typed.
    ok("leadconnector valid", "POST", LC, &[BEARER, ("version", "2021-07-28"), JSON], r#"{"locationId":"tDtDnQdgm2LXpyiqYvZ6","contactId":"tDtDnQdgm2LXpyiqYvZ6"}"#),
    ok("leadconnector no version", "POST", LC, &[BEARER, JSON], r#"{}"#),
    ok("leadconnector bearer any case", "POST", LC, &[("authorization", "bEARer abc"), JSON], r#"{}"#),
    bad("leadconnector wrong version", "POST", LC, &[BEARER, ("version", "2020-01-01"), JSON], r#"{}"#, 422, &["header.Version must be one of: \"2021-07-28\""]),
    bad("leadconnector field type", "POST", LC, &[BEARER, JSON], r#"{"locationId":5,"contactId":true}"#, 422, &["body.locationId must be of type string", "body.contactId must be of type string"]),
    bad("leadconnector no auth", "POST", LC, &[JSON], r#"{}"#, 401, &["missing Authorization header"]),
    bad("leadconnector basic auth", "POST", LC, &[("authorization", "Basic dXNlcjpwYXNz"), JSON], r#"{}"#, 401, &["malformed Authorization header"]),
    bad("leadconnector bearer without token", "POST", LC, &[("authorization", "Bearer "), JSON], r#"{}"#, 401, &["malformed Authorization header"]),
    bad("leadconnector trailing slash matters", "POST", "/conversations", &[BEARER, JSON], r#"{}"#, 404, &["no route"]),

    // Leadway: bearer; Version header required; query coerced and validated.
    ok("leadway minimal", "GET", "/conversations/search?locationId=ABCHkzuJQ8ZMd4Te84GK", &[BEARER, ("version", "2021-07-28")], ""),
    ok("leadway full query", "GET", "/conversations/search?locationId=a&contactId=c&assignedTo=u1,u2&limit=20&startDate=1640995200000&endDate=1.6e12&sort=desc&status=starred&startAfterDate=anything&scoreProfileMin=1.5&query=hello+world", &[BEARER, ("version", "2021-07-28")], ""),
    bad("leadway version missing", "GET", "/conversations/search?locationId=a", &[BEARER], "", 422, &["header.Version is required"]),
    bad("leadway locationId missing", "GET", "/conversations/search?limit=5", &[BEARER, ("version", "2021-07-28")], "", 422, &["query.locationId is required"]),
    bad("leadway limit not a number", "GET", "/conversations/search?locationId=a&limit=twenty", &[BEARER, ("version", "2021-07-28")], "", 422, &["query.limit must be of type number"]),
    bad("leadway repeated scalar", "GET", "/conversations/search?locationId=a&limit=1&limit=2", &[BEARER, ("version", "2021-07-28")], "", 422, &["query.limit must not be repeated"]),
    bad("leadway sort enum", "GET", "/conversations/search?locationId=a&sort=up", &[BEARER, ("version", "2021-07-28")], "", 422, &["query.sort must be one of: \"asc\", \"desc\""]),
    bad("leadway enums are case-sensitive", "GET", "/conversations/search?locationId=a&status=Unread", &[BEARER, ("version", "2021-07-28")], "", 422, &["query.status must be one of: \"all\", \"read\", \"unread\", \"starred\""]),
    bad("leadway all violations at once", "GET", "/conversations/search?limit=x&endDate=y", &[BEARER], "", 422, &["query.locationId is required", "query.limit must be of type number", "query.endDate must be of type number", "header.Version is required"]),

    // Flextell: bearer; X-Tenant number required; body constraints.
    ok("flextell minimal", "POST", FLEX, &[BEARER, ("x-tenant", "7"), JSON], r#"{"channel_id":2,"address":"Main St 1"}"#),
    ok("flextell full with nulls", "POST", FLEX, &[BEARER, ("X-TENANT", "7.5"), ("content-type", "application/json; charset=utf-8")], r#"{"channel_id":1,"address":"a","first_name":null,"last_name":"Doe"}"#),
    ok("flextell 1.0 is an integer", "POST", FLEX, &[BEARER, ("x-tenant", "7"), JSON], r#"{"channel_id":1.0,"address":"a"}"#),
    bad("flextell tenant missing", "POST", FLEX, &[BEARER, JSON], r#"{"channel_id":2,"address":"a"}"#, 422, &["header.X-Tenant is required"]),
    bad("flextell tenant not a number", "POST", FLEX, &[BEARER, ("x-tenant", "acme"), JSON], r#"{"channel_id":2,"address":"a"}"#, 422, &["header.X-Tenant must be of type number"]),
    bad("flextell channel_id minimum", "POST", FLEX, &[BEARER, ("x-tenant", "7"), JSON], r#"{"channel_id":0,"address":"a"}"#, 422, &["body.channel_id must be >= 1"]),
    bad("flextell channel_id integer", "POST", FLEX, &[BEARER, ("x-tenant", "7"), JSON], r#"{"channel_id":1.5,"address":"a"}"#, 422, &["body.channel_id must be of type integer"]),
    bad("flextell channel_id string", "POST", FLEX, &[BEARER, ("x-tenant", "7"), JSON], r#"{"channel_id":"2","address":"a"}"#, 422, &["body.channel_id must be of type integer"]),
    bad("flextell required both", "POST", FLEX, &[BEARER, ("x-tenant", "7"), JSON], r#"{}"#, 422, &["body.channel_id is required", "body.address is required"]),
    bad("flextell name type", "POST", FLEX, &[BEARER, ("x-tenant", "7"), JSON], r#"{"channel_id":2,"address":"a","first_name":5}"#, 422, &["body.first_name must be of type string or null"]),
    bad("flextell text/plain", "POST", FLEX, &[BEARER, ("x-tenant", "7"), ("content-type", "text/plain")], r#"{"channel_id":2,"address":"a"}"#, 415, &["Content-Type must be application/json"]),
    bad("flextell no content-type", "POST", FLEX, &[BEARER, ("x-tenant", "7")], r#"{"channel_id":2,"address":"a"}"#, 415, &[]),
    bad("flextell 401 before 415", "POST", FLEX, &[("content-type", "text/plain")], r#"x"#, 401, &[]),
    bad("flextell 400 before 422", "POST", FLEX, &[BEARER, JSON], r#"{"channel_id":"#, 400, &["not valid JSON"]),

    // ChatbotX: bearer; query enums, arrays, nullable types, JSON-text objects.
    ok("chatbotx no query", "GET", "/v1/conversations", &[BEARER], ""),
    ok("chatbotx full query", "GET", "/v1/conversations?botCategory=human&channel=whatsapp&status=unread&status=archived&tags=followUp&keyword=hi&botEnabled=false&assignedId=&perPage=50&cursor=abc&contactFilter=%7B%22email%22%3A%22a%40b.c%22%7D&sort=%5B%7B%22field%22%3A%22createdAt%22%7D%5D", &[BEARER], ""),
    ok("chatbotx nullable", "GET", "/v1/conversations?botEnabled=null&perPage=&assignedId=null&sort=null", &[BEARER], ""),
    bad("chatbotx enum", "GET", "/v1/conversations?botCategory=robot&channel=fax", &[BEARER], "", 422, &["query.botCategory must be one of: \"bot\", \"human\", \"all\""]),
    bad("chatbotx array item enum", "GET", "/v1/conversations?status=unread&status=nope", &[BEARER], "", 422, &["query.status[1] must be one of: \"noAdminReply\", \"unread\", \"followUp\", \"archived\", \"blocked\""]),
    bad("chatbotx boolean", "GET", "/v1/conversations?botEnabled=yes", &[BEARER], "", 422, &["query.botEnabled must be of type boolean or null"]),
    bad("chatbotx perPage range", "GET", "/v1/conversations?perPage=0", &[BEARER], "", 422, &["query.perPage must be >= 1"]),
    bad("chatbotx perPage integer", "GET", "/v1/conversations?perPage=2.5", &[BEARER], "", 422, &["query.perPage must be of type integer or null"]),
    bad("chatbotx perPage max", "GET", "/v1/conversations?perPage=9007199254740992", &[BEARER], "", 422, &["query.perPage must be <= 9007199254740991"]),
    bad("chatbotx contactFilter not JSON", "GET", "/v1/conversations?contactFilter=email", &[BEARER], "", 422, &["query.contactFilter must be of type object"]),
    bad("chatbotx no auth", "GET", "/v1/conversations", &[], "", 401, &[]),
];

#[tokio::test]
async fn documented_endpoints_table() {
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::shipped(&upstream.url()).await;
    let mut failures = Vec::new();
    for case in CASES {
        let before = upstream.seen().len();
        let got = send(
            gw.addr,
            request(case.method, case.target, case.headers, case.body.as_bytes()),
        )
        .await;
        let seen = upstream.seen();
        let forwarded = seen.len() > before;
        let problem = check_case(case, &got, forwarded, seen.last());
        if let Some(problem) = problem {
            failures.push(format!(
                "{}: {problem}\n    got {} {}",
                case.name,
                got.status,
                String::from_utf8_lossy(&got.body)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn check_case(case: &Case, got: &Got, forwarded: bool, seen: Option<&Seen>) -> Option<String> {
    if got.status != case.status {
        return Some(format!("expected status {}", case.status));
    }
    if case.status == 200 {
        if !forwarded {
            return Some("valid request did not reach the upstream".into());
        }
        let seen = seen?;
        if seen.body != case.body.as_bytes() {
            return Some("body was not forwarded byte for byte".into());
        }
        return None;
    }
    if forwarded {
        return Some("a rejected request reached the upstream".into());
    }
    let json = got.json();
    if json["statusCode"] != case.status || got.headers["content-type"] != "application/json" {
        return Some("not the documented envelope".into());
    }
    let message = &json["message"];
    for expected in case.messages {
        let found = match message {
            serde_json::Value::Array(lines) => lines.iter().any(|l| l == expected),
            serde_json::Value::String(text) => text.contains(expected),
            _ => false,
        };
        if !found {
            return Some(format!("message lacks {expected:?}"));
        }
    }
    if case.status == 422 {
        let lines = message.as_array()?;
        if lines.len() < case.messages.len() || json["error"] != "Unprocessable Entity" {
            return Some("422 must list every violation".into());
        }
    } else if !message.is_string() {
        return Some("non-422 message must be one string".into());
    }
    None
}

const FLEX_HEADERS: &[(&str, &str)] = &[BEARER, ("x-tenant", "7"), JSON];

#[tokio::test]
async fn bad_body_catalogue_is_400_and_never_forwarded() {
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::shipped(&upstream.url()).await;
    let deep_arrays = "[".repeat(100_000) + &"]".repeat(100_000);
    let deep_objects = "{\"a\":".repeat(100_000) + "1" + &"}".repeat(100_000);
    let nested_65 = format!(
        "{{\"channel_id\":1,\"address\":\"a\",\"x\":{}{}}}",
        "[".repeat(64),
        "]".repeat(64)
    );
    let bodies: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", b"".to_vec(), "empty"),
        (
            "truncated",
            br#"{"channel_id": 2, "address": "#.to_vec(),
            "not valid JSON",
        ),
        (
            "single quotes",
            br#"{'channel_id': 2, 'address': 'a'}"#.to_vec(),
            "not valid JSON",
        ),
        (
            "trailing comma",
            br#"{"channel_id": 2, "address": "a",}"#.to_vec(),
            "not valid JSON",
        ),
        (
            "duplicate keys",
            br#"{"channel_id": 2, "address": "a", "channel_id": 3}"#.to_vec(),
            "duplicate key",
        ),
        (
            "invalid utf-8",
            b"{\"channel_id\": 2, \"address\": \"\xff\xfe\"}".to_vec(),
            "UTF-8",
        ),
        (
            "BOM",
            b"\xef\xbb\xbf{\"channel_id\": 2, \"address\": \"a\"}".to_vec(),
            "not valid JSON",
        ),
        (
            "100 000-deep arrays",
            deep_arrays.into_bytes(),
            "deeper than 64",
        ),
        (
            "100 000-deep objects",
            deep_objects.into_bytes(),
            "deeper than 64",
        ),
        ("65 levels", nested_65.into_bytes(), "deeper than 64"),
        (
            "trailing data",
            br#"{"channel_id": 2, "address": "a"} {}"#.to_vec(),
            "not valid JSON",
        ),
    ];
    for (name, body, fragment) in bodies {
        let got = send(gw.addr, request("POST", FLEX, FLEX_HEADERS, &body)).await;
        assert_envelope(&got, 400, "Bad Request");
        let message = got.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains(fragment), "{name}: {message}");
    }
    assert!(
        upstream.seen().is_empty(),
        "a malformed body reached the upstream"
    );
}

#[tokio::test]
async fn body_size_limit_by_length_and_while_streaming() {
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::shipped(&upstream.url()).await;
    // Exactly 1 MiB of valid JSON is accepted.
    let filler = 1024 * 1024 - r#"{"channel_id":2,"address":"a","pad":""}"#.len();
    let body = format!(
        r#"{{"channel_id":2,"address":"a","pad":"{}"}}"#,
        "x".repeat(filler)
    );
    assert_eq!(body.len(), 1024 * 1024);
    let got = send(
        gw.addr,
        request("POST", FLEX, FLEX_HEADERS, body.as_bytes()),
    )
    .await;
    assert_eq!(got.status, 200);
    // One byte more: 413, decided from Content-Length.
    let body = format!(
        r#"{{"channel_id":2,"address":"a","pad":"{}"}}"#,
        "x".repeat(filler + 1)
    );
    let got = send(
        gw.addr,
        request("POST", FLEX, FLEX_HEADERS, body.as_bytes()),
    )
    .await;
    assert_envelope(&got, 413, "Payload Too Large");

    // Chunked, no Content-Length: 413 once the stream passes the limit.
    let mut raw = format!(
        "POST {FLEX} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer t\r\nx-tenant: 7\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..17 {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(&chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let answer = send_raw(gw.addr, &raw).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains(r#""error":"Payload Too Large""#),
        "{answer}"
    );
    assert_eq!(
        upstream.seen().len(),
        1,
        "only the 1 MiB request was forwarded"
    );
}

#[tokio::test]
async fn max_length_counts_code_points() {
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::shipped(&upstream.url()).await;
    // 255 two-byte characters: 510 bytes, but 255 code points, so valid.
    let body = format!(r#"{{"channel_id":3,"address":"{}"}}"#, "é".repeat(255));
    let got = send(
        gw.addr,
        request("POST", FLEX, FLEX_HEADERS, body.as_bytes()),
    )
    .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let body = format!(
        r#"{{"channel_id":3,"address":"{}","last_name":"{}"}}"#,
        "a".repeat(256),
        "b".repeat(300)
    );
    let got = send(
        gw.addr,
        request("POST", FLEX, FLEX_HEADERS, body.as_bytes()),
    )
    .await;
    assert_envelope(&got, 422, "Unprocessable Entity");
    assert_eq!(
        got.json()["message"],
        serde_json::json!([
            "body.address must be at most 255 characters long",
            "body.last_name must be at most 255 characters long"
        ])
    );
    assert_eq!(upstream.seen().len(), 1);
}

const STRICT_SCHEMA: &str = r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","required":["n"],"properties":{"n":{"type":"integer","minimum":1}}}"#;

fn custom_route(upstream: &str, extra: &str) -> String {
    one_route(
        upstream,
        "POST",
        "/x",
        &format!("    schemas: {{ body: s.json }}\n{extra}"),
    )
}

#[tokio::test]
async fn report_only_forwards_untouched_and_reports_upstream() {
    let upstream = Upstream::start(Answer::default()).await;
    let yaml = custom_route(&upstream.url(), "    validation: report\n");
    let gw = TestGateway::start(&yaml, &[("schemas/s.json", STRICT_SCHEMA)]).await;
    let body = br#"{"n": 0}"#;
    let got = send(gw.addr, request("POST", "/x", &[JSON], body)).await;
    assert_eq!(got.status, 200);
    let seen = &upstream.seen()[0];
    assert_eq!(&seen.body[..], body);
    assert_eq!(
        seen.headers["x-schemagate-violations"],
        "1 violation: body.n must be >= 1"
    );
    // Framing problems are reported too, not enforced.
    let got = send(
        gw.addr,
        request("POST", "/x", &[("content-type", "text/plain")], b"nope"),
    )
    .await;
    assert_eq!(got.status, 200);
    assert!(upstream.seen()[1].headers["x-schemagate-violations"]
        .to_str()
        .unwrap()
        .starts_with("1 violation: Content-Type"));
    // A valid request carries no report.
    send(gw.addr, request("POST", "/x", &[JSON], br#"{"n": 1}"#)).await;
    assert!(!upstream.seen()[2]
        .headers
        .contains_key("x-schemagate-violations"));
}

#[tokio::test]
async fn problem_style_lists_each_violation() {
    let upstream = Upstream::start(Answer::default()).await;
    let yaml = custom_route(&upstream.url(), "    errors: problem\n");
    let gw = TestGateway::start(&yaml, &[("schemas/s.json", STRICT_SCHEMA)]).await;
    let got = send(gw.addr, request("POST", "/x", &[JSON], br#"{"n": "one"}"#)).await;
    assert_eq!(got.status, 422);
    assert_eq!(got.headers["content-type"], "application/problem+json");
    let json = got.json();
    assert_eq!(json["status"], 422);
    assert_eq!(json["title"], "Unprocessable Entity");
    assert_eq!(
        json["errors"],
        serde_json::json!([{"location": "body", "pointer": "/n", "keyword": "type", "message": "body.n must be of type integer"}])
    );
    let got = send(gw.addr, request("POST", "/x", &[JSON], b"{")).await;
    assert_eq!(got.status, 400);
    assert_eq!(got.headers["content-type"], "application/problem+json");
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn violations_are_capped_with_a_count_of_the_rest() {
    let upstream = Upstream::start(Answer::default()).await;
    let schema = r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"string"},"c":{"type":"string"},"d":{"type":"string"}}}"#;
    let yaml = custom_route(&upstream.url(), "    limits: { violations: 2 }\n");
    let gw = TestGateway::start(&yaml, &[("schemas/s.json", schema)]).await;
    let got = send(
        gw.addr,
        request("POST", "/x", &[JSON], br#"{"a":1,"b":2,"c":3,"d":4}"#),
    )
    .await;
    assert_envelope(&got, 422, "Unprocessable Entity");
    assert_eq!(
        got.json()["message"],
        serde_json::json!([
            "body.a must be of type string",
            "body.b must be of type string",
            "and 2 more"
        ])
    );
}

#[test]
fn schemas_that_reach_outside_are_load_errors() {
    let refs = [
        ("https://example.com/s.json", "https"),
        ("file:///etc/passwd", "file"),
        ("../outside.json", "outside"),
    ];
    for (reference, fragment) in refs {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("schemas")).unwrap();
        std::fs::write(dir.path().join("outside.json"), r#"{"type":"string"}"#).unwrap();
        std::fs::write(
            dir.path().join("schemas/s.json"),
            format!(r#"{{"properties":{{"a":{{"$ref":"{reference}"}}}}}}"#),
        )
        .unwrap();
        let yaml = custom_route("http://127.0.0.1:1", "");
        std::fs::write(dir.path().join("gateway.yaml"), yaml).unwrap();
        let errors =
            schemagate::Snapshot::load(&dir.path().join("gateway.yaml")).expect_err(reference);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].key.as_deref(), Some("routes[0].schemas.body"));
        assert!(
            errors[0].message.to_lowercase().contains(fragment),
            "{reference}: {}",
            errors[0]
        );
    }
}

#[test]
fn local_refs_between_schema_files_work() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("schemas/common")).unwrap();
    std::fs::write(
        dir.path().join("schemas/common/id.json"),
        r#"{"type":"integer","minimum":1}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("schemas/s.json"),
        r#"{"properties":{"id":{"$ref":"common/id.json"}}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("gateway.yaml"),
        custom_route("http://127.0.0.1:1", ""),
    )
    .unwrap();
    let snapshot = schemagate::Snapshot::load(&dir.path().join("gateway.yaml")).unwrap();
    let schema = snapshot.routes[0].schemas.body.as_ref().unwrap();
    let bad = schema.violations(
        schemagate::schema::Location::Body,
        &serde_json::json!({"id": 0}),
    );
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].message, "body.id must be >= 1");
}

#[tokio::test]
async fn many_violations_are_capped_and_counted_exactly() {
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::shipped(&upstream.url()).await;
    let items = vec!["1"; 1000].join(",");
    let body = format!(r#"{{"filter":{{"channelTypes":[{items}]}}}}"#);
    let got = send(
        gw.addr,
        request("POST", GESTIONO, &[BEARER, JSON], body.as_bytes()),
    )
    .await;
    assert_envelope(&got, 422, "Unprocessable Entity");
    let message = got.json()["message"].as_array().unwrap().clone();
    // The shipped cap is 20: 20 worded violations, then the exact count of the other 981
    // (1000 wrong items and the missing name).
    assert_eq!(message.len(), 21);
    assert_eq!(message[20], "and 981 more");
    assert!(upstream.seen().is_empty());
}

/// Requests a review found answered against the contract, pinned to the contract's answer.
#[tokio::test]
async fn review_regressions() {
    let upstream = Upstream::start(Answer::default()).await;
    let gw = TestGateway::shipped(&upstream.url()).await;
    const VALID: &[u8] = br#"{"channel_id":1,"address":"x"}"#;
    type Headers<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(&str, Headers, Vec<u8>, u16)> = vec![
        // Fields named in Connection are hop-by-hop: removed before validation, so the
        // request is judged without them (here: no Authorization, 401).
        (
            "connection-named auth",
            vec![
                BEARER,
                ("x-tenant", "5"),
                JSON,
                ("connection", "Authorization, Content-Type, X-Tenant"),
            ],
            VALID.to_vec(),
            401,
        ),
        (
            "connection-named tenant",
            vec![BEARER, ("x-tenant", "5"), JSON, ("connection", "X-Tenant")],
            VALID.to_vec(),
            422,
        ),
        // 415 comes before 413 (PRODUCT.md: framing 415, 413, 400).
        (
            "text/plain and too large",
            vec![BEARER, ("x-tenant", "5"), ("content-type", "text/plain")],
            vec![b'x'; 2 << 20],
            415,
        ),
        (
            "two content types",
            vec![
                BEARER,
                ("x-tenant", "5"),
                JSON,
                ("content-type", "text/plain"),
            ],
            VALID.to_vec(),
            400,
        ),
        (
            "two tenants",
            vec![BEARER, ("x-tenant", "1"), ("x-tenant", "2"), JSON],
            VALID.to_vec(),
            400,
        ),
        (
            "two tenants, wrong media type first",
            vec![
                BEARER,
                ("x-tenant", "1"),
                ("x-tenant", "2"),
                ("content-type", "text/plain"),
            ],
            VALID.to_vec(),
            415,
        ),
    ];
    for (name, headers, body, status) in cases {
        let got = send(gw.addr, request("POST", FLEX, &headers, &body)).await;
        assert_eq!(
            got.status,
            status,
            "{name}: {}",
            String::from_utf8_lossy(&got.body)
        );
    }
    let leadway = [BEARER, ("version", "2021-07-28")];
    let got = send(
        gw.addr,
        request(
            "GET",
            "/conversations/search?locationId=a&locationId=b",
            &leadway,
            b"",
        ),
    )
    .await;
    assert_eq!(
        got.status, 422,
        "a repeated scalar query key is the schema's 422"
    );
    assert_eq!(
        got.json()["message"],
        serde_json::json!(["query.locationId must not be repeated"])
    );
    let long = format!("/conversations/search?locationId={}", "a".repeat(200));
    assert_eq!(
        send(gw.addr, request("GET", &long, &leadway, b""))
            .await
            .status,
        200,
        "long tenant ids are fine"
    );
    let got = send(
        gw.addr,
        request("POST", LC, &[BEARER, JSON], br#"{"locationId":{"a":1}}"#),
    )
    .await;
    assert_eq!(
        got.status, 422,
        "a wrong-typed tenant field is the schema's 422"
    );
    let got = send(
        gw.addr,
        request(
            "POST",
            GESTIONO,
            &[("authorization", "Bearer"), JSON],
            br#"{"name":"x"}"#,
        ),
    )
    .await;
    assert_envelope(&got, 401, "Unauthorized");
    assert_eq!(got.headers["www-authenticate"], "Bearer");

    // HTTP/2 body without Content-Type: 415, decided on the bytes, not on framing headers.
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1:{}{FLEX}", gw.addr.port()))
        .header("authorization", "Bearer t")
        .header("x-tenant", "5")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(VALID)))
        .unwrap();
    assert_eq!(send_h2(gw.addr, req).await.status, 415);
    // `Content-Length: 00` without Content-Type is an empty body: 400.
    let raw = format!("POST {FLEX} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer t\r\nx-tenant: 5\r\ncontent-length: 00\r\nconnection: close\r\n\r\n");
    let answer = send_raw(gw.addr, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(
        upstream.seen().len(),
        1,
        "only the long-tenant GET was forwarded"
    );
}

/// Issue 23, item 5: numbers are validated as written, through the `schemagate` binary on the
/// shipped config. A body number that a 64-bit float does not hold as written (serde_json reads
/// `0.99999999999999999` as `1.0`, which passes Flextell's `channel_id: integer, minimum 1`)
/// is a 422 naming it where the schema constrains it, and never reaches the upstream; under a
/// field the schema leaves open it is forwarded like any unknown field. A literal too long to
/// read is a 400. Numbers that are what they say pass and are forwarded byte for byte,
/// including integers serde_json holds exactly (within u64), which are judged exactly. A query
/// value coerced to a number gets the same rule as a 422.
#[tokio::test]
async fn numbers_are_validated_as_written() {
    let upstream = Upstream::start(Answer::default()).await;
    let served = Served::start(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
        "config/gateway.yaml",
        &[
            ("FLEXTELL_UPSTREAM", &upstream.url()),
            ("CHATBOTX_UPSTREAM", &upstream.url()),
        ],
    );
    let inexact = "body.channel_id must be a number that round-trips through a 64-bit float";
    // Where the schema constrains the number (`channel_id`: integer, minimum 1): a 422.
    for number in [
        "0.99999999999999999",
        "1.0000000000000001",
        "9007199254740993.0",
        "123456789012345678901",
        "18446744073709551616",
    ] {
        let body = format!(r#"{{"channel_id":{number},"address":"a"}}"#);
        let got = send(served.addr, post_conversation(body.as_bytes())).await;
        assert_envelope(&got, 422, "Unprocessable Entity");
        assert_eq!(
            got.json()["message"],
            serde_json::json!([inexact]),
            "{number}"
        );
    }
    // Where the double already breaks the schema, that is the one message for the place.
    let got = send(
        served.addr,
        post_conversation(br#"{"channel_id":1e-400,"address":"a"}"#),
    )
    .await;
    assert_envelope(&got, 422, "Unprocessable Entity");
    assert_eq!(
        got.json()["message"],
        serde_json::json!(["body.channel_id must be >= 1"])
    );
    // A literal too long to read is refused unread, wherever it is: a 400.
    let million = format!("0.{}", "9".repeat(1_000_000));
    let body = format!(r#"{{"channel_id":{million},"address":"a"}}"#);
    let got = send(served.addr, post_conversation(body.as_bytes())).await;
    assert_envelope(&got, 400, "Bad Request");
    assert_eq!(
        got.json()["message"],
        "request body has a number at /channel_id that is longer than 64 characters"
    );
    assert!(
        upstream.seen().is_empty(),
        "an inexact number was forwarded"
    );
    // Under a field the schema does not name, a number is the upstream's business, as any
    // unknown field is: forwarded as sent (schemathesis found this one).
    let open = br#"{"channel_id":2,"address":"a","extra":{"list":[1,0.99999999999999999,-2349731029582932168671232]}}"#;
    let got = send(served.addr, post_conversation(open)).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(upstream.seen().len(), 1);
    assert_eq!(upstream.seen()[0].body, &open[..], "forwarded as sent");

    let passed = [
        "1",
        "1.0",
        "2e0",
        "1E+2",
        "1.5e1",
        "9007199254740993",
        "12345678901234567891",
    ];
    for number in passed {
        let body = format!(r#"{{"channel_id":{number},"address":"a","x":[-0,0.1,1.5e-7]}}"#);
        let got = send(served.addr, post_conversation(body.as_bytes())).await;
        assert_eq!(
            got.status,
            200,
            "{number}: {}",
            String::from_utf8_lossy(&got.body)
        );
        let seen = upstream.seen();
        let last = seen.last().unwrap();
        assert_eq!(
            last.body,
            body.as_bytes(),
            "{number} was not forwarded as sent"
        );
    }
    assert_eq!(upstream.seen().len(), passed.len() + 1);

    // Query values coerced to numbers: the same rule, a 422 naming the parameter.
    let list = |query: &str| {
        request(
            "GET",
            &format!("/v1/conversations?{query}"),
            &[("authorization", "Bearer t")],
            b"",
        )
    };
    let got = send(served.addr, list("perPage=0.99999999999999999")).await;
    assert_envelope(&got, 422, "Unprocessable Entity");
    assert_eq!(
        got.json()["message"],
        serde_json::json!([
            "query.perPage must be a number that round-trips through a 64-bit float"
        ])
    );
    // An integer serde_json holds exactly is compared exactly: one past the maximum is refused.
    let got = send(served.addr, list("perPage=9007199254740993")).await;
    assert_envelope(&got, 422, "Unprocessable Entity");
    assert_eq!(
        got.json()["message"],
        serde_json::json!(["query.perPage must be <= 9007199254740991"])
    );
    let got = send(served.addr, list("perPage=1.0")).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(upstream.seen().len(), passed.len() + 2);
}
