//! `schemagate openapi` as users run it, on the shipped config; and the document's error
//! schemas against what a live gateway answers.

use std::process::Command;

use serde_json::{json, Value};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_schemagate");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/gateway.yaml");

fn openapi(config: &str) -> std::process::Output {
    let mut command = Command::new(BIN);
    command
        .args(["openapi", "--config", config])
        .current_dir(ROOT);
    for var in VENDOR_VARS {
        command.env_remove(var);
    }
    command.env_remove("SCHEMAGATE_LISTEN");
    command.output().unwrap()
}

fn shipped_document() -> Value {
    let out = openapi(SHIPPED);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Follows a local `$ref` (`#/components/...`) to what it names.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').unwrap();
            doc.pointer(pointer)
                .unwrap_or_else(|| panic!("{reference} points to nothing"))
        }
        None => value,
    }
}

fn names(op: &Value, location: &str) -> Vec<String> {
    op["parameters"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter(|p| p["in"] == location)
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn statuses(op: &Value) -> Vec<&str> {
    op["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

#[test]
fn openapi_documents_the_shipped_routes() {
    let doc = shipped_document();
    assert_eq!(doc["openapi"], "3.1.0");
    let operations = [
        (
            "/v1/conversation-list",
            "post",
            "gestiono.create_conversation_list",
        ),
        (
            "/conversations/",
            "post",
            "leadconnector.create_conversation",
        ),
        (
            "/conversations/search",
            "get",
            "leadway.search_conversations",
        ),
        ("/v1/conversations", "post", "flextell.create_conversation"),
        ("/v1/conversations", "get", "chatbotx.list_conversations"),
    ];
    assert_eq!(doc["paths"].as_object().unwrap().len(), 4);
    for (path, method, route) in operations {
        let op = &doc["paths"][path][method];
        assert_eq!(op["operationId"], route, "{method} {path}");

        // The success answer: the mock's status, the documented schema, the sample as example.
        let vendor_endpoint = route.replace('.', "/");
        let success = &op["responses"]["200"]["content"]["application/json"];
        assert_eq!(
            success["schema"]["$ref"],
            format!(
                "#/components/schemas/{}",
                format!("{vendor_endpoint}.response").replace('/', ".")
            ),
            "{route}"
        );
        let sample: Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{ROOT}/config/mock/{route}.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(success["examples"]["mock"]["value"], sample, "{route}");
        // The documented sample fits the documented response schema.
        let mut schema = doc.clone();
        schema["$ref"] = success["schema"]["$ref"].clone();
        let validator = jsonschema::validator_for(&schema).unwrap();
        assert!(
            validator.is_valid(&sample),
            "{route}: sample fails its schema"
        );

        // Every route is authenticated, validated and rate limited; none has a body-less 400
        // or a real upstream (so no 502/504) in the shipped config.
        let got = statuses(op);
        for status in ["401", "422", "429"] {
            assert!(got.contains(&status), "{route}: {got:?}");
        }
        assert!(
            !got.contains(&"502") && !got.contains(&"504"),
            "{route}: {got:?}"
        );
        for header in ["X-Request-Id", "RateLimit-Limit"] {
            assert!(
                op["responses"]["200"]["headers"][header].is_object(),
                "{route}: {header}"
            );
        }
        let envelope = resolve(
            &doc,
            &op["responses"]["422"]["content"]["application/json"]["schema"],
        );
        assert_eq!(
            envelope["properties"]["message"]["type"], "array",
            "{route}"
        );
        let envelope = resolve(
            &doc,
            &op["responses"]["401"]["content"]["application/json"]["schema"],
        );
        assert_eq!(
            envelope["properties"]["message"]["type"], "string",
            "{route}"
        );
        assert_eq!(envelope["properties"]["error"]["const"], "Unauthorized");
    }

    let flextell = &doc["paths"]["/v1/conversations"]["post"];
    assert_eq!(names(flextell, "header"), ["X-Tenant"]);
    let tenant = &flextell["parameters"][0];
    assert_eq!(tenant["required"], true);
    assert_eq!(tenant["schema"]["type"], "number");
    assert_eq!(flextell["security"], json!([{ "bearer": [] }]));
    assert_eq!(flextell["requestBody"]["required"], true);
    let body = resolve(
        &doc,
        &flextell["requestBody"]["content"]["application/json"]["schema"],
    );
    assert_eq!(body["required"], json!(["channel_id", "address"]));
    assert_eq!(body["properties"]["channel_id"]["minimum"], 1);
    let got = statuses(flextell);
    for status in ["400", "408", "413", "415"] {
        assert!(got.contains(&status), "flextell: {got:?}");
    }

    let chatbotx = &doc["paths"]["/v1/conversations"]["get"];
    assert!(chatbotx.get("requestBody").is_none());
    assert!(names(chatbotx, "header").is_empty());
    let query = names(chatbotx, "query");
    assert_eq!(query.len(), 11, "{query:?}");
    let parameter = |name: &str| {
        chatbotx["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(parameter("status")["explode"], true);
    assert!(parameter("contactFilter")["content"]["application/json"].is_object());
    assert!(parameter("sort")["content"]["application/json"].is_object());
    assert_eq!(
        parameter("perPage")["schema"]["anyOf"][0]["maximum"],
        9007199254740991_u64
    );

    let leadway = &doc["paths"]["/conversations/search"]["get"];
    assert_eq!(names(leadway, "header"), ["Version"]);
    let required: Vec<&Value> = leadway["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["required"] == true)
        .map(|p| &p["name"])
        .collect();
    assert_eq!(required, [&json!("locationId"), &json!("Version")]);

    let gestiono = &doc["paths"]["/v1/conversation-list"]["post"];
    assert_eq!(
        gestiono["security"],
        json!([{ "authorization": [] }, { "cookie": [] }])
    );
    assert!(gestiono.get("parameters").is_none());

    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(
        schemes["bearer"],
        json!({
            "type": "http",
            "scheme": "bearer",
            "description": schemes["bearer"]["description"].clone(),
        })
    );
    let responses = &doc["components"]["responses"];
    assert!(responses["MethodNotAllowed"]["headers"]["Allow"].is_object());
    assert!(responses["NotFound"]["content"]["application/json"].is_object());
}

#[test]
fn openapi_fails_like_check_on_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listeners:\n  - address: 127.0.0.1:0\nupstreams: {}\nroutes:\n  - name: r\n    method: GET\n    path: /x\n    upstream: nowhere\n",
    )
    .unwrap();
    let out = openapi(path.to_str().unwrap());
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("routes[0].upstream: no upstream named \"nowhere\""),
        "{stderr}"
    );
}

/// What a live gateway answers, checked against the schema and headers the document gives
/// for that status on that operation.
#[tokio::test]
async fn live_error_answers_match_the_document() {
    let doc = shipped_document();
    let upstream = Upstream::start(Answer::default()).await;
    let gateway = TestGateway::shipped(&upstream.url()).await;
    let flextell = &doc["paths"]["/v1/conversations"]["post"];
    let json = ("content-type", "application/json");
    let bearer = ("authorization", "Bearer t");
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a [u8]);
    let cases: Vec<Case<'_>> = vec![
        ("401", vec![json], br#"{"channel_id":2,"address":"a"}"#),
        ("415", vec![bearer, ("content-type", "text/plain")], b"x"),
        ("400", vec![bearer, json], b"{\"channel_id\":2,"),
        (
            "422",
            vec![bearer, json, ("x-tenant", "7")],
            br#"{"channel_id":0}"#,
        ),
    ];
    for (status, headers, body) in cases {
        let got = send(
            gateway.addr,
            request("POST", "/v1/conversations", &headers, body),
        )
        .await;
        assert_eq!(got.status.to_string(), status, "{:?}", got.body);
        let documented = &flextell["responses"][status];
        let mut schema = doc.clone();
        schema["$ref"] = documented["content"]["application/json"]["schema"]["$ref"].clone();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let answer = got.json();
        assert!(validator.is_valid(&answer), "{status}: {answer}");
        for (name, header) in documented["headers"].as_object().unwrap() {
            let header = resolve(&doc, header);
            if header["required"] == true {
                assert!(
                    got.headers.contains_key(name.as_str()),
                    "{status}: no {name}"
                );
            }
        }
    }
}
