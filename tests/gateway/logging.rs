//! Logs as a file or a pipe sees them, through the binary: access lines on stdout, one per
//! request and whole, diagnostics on stderr, no colour off a terminal, every line out at
//! SIGTERM, and lines dropped (and counted) rather than memory grown when nobody reads.

use std::collections::BTreeSet;
use std::io::Read;
use std::time::Duration;

use crate::support::*;

/// Writes `config` as `gateway.yaml` into a new temp dir and starts the binary on it, its
/// stdout handed back unread.
fn serve(config: &str) -> (tempfile::TempDir, Served, std::process::ChildStdout) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), config).unwrap();
    let (served, stdout) = Served::start_keeping_stdout(dir.path(), "gateway.yaml", &[]);
    (dir, served, stdout)
}

/// Reads `stdout` to its end on a thread (so the pipe never fills); join for the bytes.
fn read_all(mut stdout: std::process::ChildStdout) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).unwrap();
        out
    })
}

/// A config with an admin listener and `logging_lines` (under `logging:`): `items.get`
/// (GET /items/{id}, tenant from X-Tenant) in front of `upstream`, and `slow.get` (GET
/// /slow) in front of `slow`.
fn config(upstream: &str, slow: &str, logging_lines: &str) -> String {
    format!(
        r#"listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
logging:
{logging_lines}
defaults:
  timeouts: {{ connect: 1s, response_headers: 5s, drain: 10s }}
upstreams:
  backend: {{ url: "{upstream}" }}
  slow: {{ url: "{slow}" }}
routes:
  - name: items.get
    method: GET
    path: /items/{{id}}
    upstream: backend
    tenant: {{ from: header, name: X-Tenant }}
  - name: slow.get
    method: GET
    path: /slow
    upstream: slow
"#
    )
}

/// Sends `tasks` x `each` requests side by side, each with its own X-Request-Id; one in five
/// to a path no route has (404). The ids sent.
async fn traffic(addr: std::net::SocketAddr, tasks: usize, each: usize) -> BTreeSet<String> {
    let mut handles = Vec::new();
    for task in 0..tasks {
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..each {
                let id = format!("req-{task}-{i}");
                let (path, status) = if i % 5 == 0 {
                    ("/nowhere".to_string(), 404)
                } else {
                    (format!("/items/{i}"), 200)
                };
                let got = send(
                    addr,
                    request(
                        "GET",
                        &path,
                        &[("x-request-id", &id), ("x-tenant", &task.to_string())],
                        b"",
                    ),
                )
                .await;
                assert_eq!(got.status, status);
                ids.push(id);
            }
            ids
        }));
    }
    let mut all = BTreeSet::new();
    for handle in handles {
        all.extend(handle.await.unwrap());
    }
    all
}

/// One text access line as (key, value) pairs: the bare timestamp first, then `key=value`
/// with values bare or quoted as JSON strings.
fn parse_text(line: &str) -> Vec<(String, String)> {
    let (timestamp, mut rest) = line.split_once(' ').unwrap();
    let mut fields = vec![("timestamp".to_string(), timestamp.to_string())];
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').unwrap_or_else(|| panic!("{line}"));
        let (value, after) = if after.starts_with('"') {
            // The shortest prefix that is a whole JSON string.
            let end = (1..after.len())
                .find(|&i| {
                    after.as_bytes()[i] == b'"'
                        && serde_json::from_str::<String>(&after[..=i]).is_ok()
                })
                .unwrap_or_else(|| panic!("unterminated value in {line}"));
            let value: String = serde_json::from_str(&after[..=end]).unwrap();
            (value, &after[end + 1..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        fields.push((key.to_string(), value));
        rest = after.strip_prefix(' ').unwrap_or(after);
    }
    fields
}

const FIELDS: [&str; 10] = [
    "timestamp",
    "route",
    "tenant",
    "method",
    "path",
    "status",
    "latency_us",
    "upstream_us",
    "request_id",
    "reason",
];

/// Checks one access line's fields (in the order written) against the request it is for.
fn check_line(fields: &[(String, String)], line: &str) {
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, FIELDS, "{line}");
    let get = |key: &str| &fields.iter().find(|(k, _)| k == key).unwrap().1;
    assert!(humantime::parse_rfc3339(get("timestamp")).is_ok(), "{line}");
    assert_eq!(get("method"), "GET", "{line}");
    let latency: u64 = get("latency_us").parse().unwrap();
    let upstream: u64 = get("upstream_us").parse().unwrap();
    let (task, _) = get("request_id")
        .strip_prefix("req-")
        .and_then(|rest| rest.split_once('-'))
        .unwrap_or_else(|| panic!("{line}"));
    match get("status").as_str() {
        "200" => {
            assert_eq!(get("route"), "items.get", "{line}");
            assert!(get("path").starts_with("/items/"), "{line}");
            assert_eq!(get("tenant"), task, "{line}");
            assert_eq!(get("reason"), "-", "{line}");
            assert!(upstream > 0 && upstream <= latency, "{line}");
        }
        "404" => {
            assert_eq!(get("route"), "-", "{line}");
            assert_eq!(get("path"), "/nowhere", "{line}");
            assert_eq!(get("reason"), "no_route", "{line}");
            assert_eq!(upstream, 0, "{line}");
        }
        other => panic!("status {other} in {line}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn text_access_lines_are_whole_on_stdout_and_diagnostics_on_stderr_without_colour() {
    let upstream = Upstream::start(Answer::default()).await;
    let (_dir, mut served, stdout) =
        serve(&config(&upstream.url(), &upstream.url(), "  format: text"));
    let output = read_all(stdout);

    let sent = traffic(served.addr, 8, 25).await;
    // A diagnostic (the reload's info line), so stderr has more than the banner.
    let got = send(served.admin, request("POST", "/reload", &[], b"")).await;
    assert_eq!(got.status, 200);
    assert!(served.terminate().success());

    let output = String::from_utf8(output.join().unwrap()).unwrap();
    let diagnostics = served.diagnostics();
    assert!(!output.contains('\u{1b}'), "escape codes on stdout");
    assert!(!diagnostics.contains('\u{1b}'), "escape codes on stderr");
    assert!(diagnostics.contains("schemagate listening on"));
    assert!(diagnostics.contains("reload"), "{diagnostics}");
    assert!(
        !diagnostics.contains("latency_us"),
        "access lines on stderr"
    );
    assert!(!output.contains("listening"), "the banner on stdout");

    assert!(output.ends_with('\n'));
    let mut ids = BTreeSet::new();
    for line in output.lines() {
        let fields = parse_text(line);
        check_line(&fields, line);
        let id = fields.iter().find(|(k, _)| k == "request_id").unwrap();
        assert!(ids.insert(id.1.clone()), "two lines for {}", id.1);
    }
    assert_eq!(ids, sent, "one line per request, every request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_access_lines_parse_and_every_request_is_written_at_sigterm() {
    let upstream = Upstream::start(Answer::default()).await;
    let slow = Upstream::start(Answer {
        delay: Duration::from_millis(500),
        ..Answer::default()
    })
    .await;
    let (_dir, mut served, stdout) = serve(&config(&upstream.url(), &slow.url(), "  format: json"));
    let output = read_all(stdout);

    let sent = traffic(served.addr, 8, 25).await;
    // One request still in flight when SIGTERM arrives: drained, answered and logged.
    let addr = served.addr;
    let in_flight = tokio::spawn(async move {
        send(
            addr,
            request("GET", "/slow", &[("x-request-id", "the-slow-one")], b""),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = served.terminate();
        (served, status)
    })
    .await
    .unwrap();
    let (served, exit) = status;
    assert!(exit.success());
    assert_eq!(in_flight.await.unwrap().status, 200);

    let output = String::from_utf8(output.join().unwrap()).unwrap();
    assert!(!output.contains('\u{1b}'), "escape codes in access lines");
    // The diagnostics are JSON lines too (after the two banner lines).
    let diagnostics = served.diagnostics();
    let events: Vec<serde_json::Value> = diagnostics
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e["message"] == "drained"),
        "{diagnostics}"
    );

    let mut ids = BTreeSet::new();
    let mut slow_seen = false;
    for line in output.lines() {
        let json: serde_json::Value = serde_json::from_str(line).unwrap();
        let object = json.as_object().unwrap();
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut expected = FIELDS.to_vec();
        expected.sort_unstable();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        assert_eq!(keys_sorted, expected, "{line}");
        assert!(
            json["status"].is_u64() && json["latency_us"].is_u64(),
            "{line}"
        );
        assert!(json["upstream_us"].is_u64(), "{line}");
        let id = json["request_id"].as_str().unwrap().to_string();
        if id == "the-slow-one" {
            slow_seen = true;
            assert_eq!(json["route"], "slow.get");
            assert!(json["upstream_us"].as_u64().unwrap() >= 500_000, "{line}");
            continue;
        }
        let fields: Vec<(String, String)> = FIELDS
            .iter()
            .map(|k| {
                let v = &json[*k];
                let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                (k.to_string(), text)
            })
            .collect();
        check_line(&fields, line);
        assert!(ids.insert(id.clone()), "two lines for {id}");
    }
    assert!(slow_seen, "the request drained at SIGTERM has no line");
    assert_eq!(ids, sent, "one line per request, every request");
}

/// The access log's dropped-lines counter, from `/metrics`.
async fn dropped(served: &Served) -> u64 {
    let got = send(served.admin, request("GET", "/metrics", &[], b"")).await;
    let text = String::from_utf8(got.body.to_vec()).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("schemagate_access_log_dropped_total "))
        .unwrap_or_else(|| panic!("no dropped counter in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_stdout_nobody_reads_drops_and_counts_lines_and_requests_go_on() {
    let upstream = Upstream::start(Answer::default()).await;
    let (_dir, mut served, stdout) = serve(&config(
        &upstream.url(),
        &upstream.url(),
        "  access_buffer: 64KiB",
    ));
    assert_eq!(dropped(&served).await, 0);
    // ~3 KB lines: 300 of them are far more than the pipe (64 KiB), the batch the writer is
    // stuck writing and the buffer (64 KiB each) hold.
    let path = format!("/{}", "a".repeat(3000));
    let sent = 300u64;
    for _ in 0..sent {
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            send(served.addr, request("GET", &path, &[], b"")),
        )
        .await
        .expect("a request waited for the access log");
        assert_eq!(got.status, 404);
    }
    let lost = dropped(&served).await;
    assert!(lost > 0, "nothing dropped with stdout unread");
    assert!(lost < sent, "everything dropped");

    // Read now, the pipe gets every line that was not counted, each whole.
    let output = read_all(stdout);
    assert!(served.terminate().success());
    let output = String::from_utf8(output.join().unwrap()).unwrap();
    let mut lines = 0;
    for line in output.lines() {
        let fields = parse_text(line);
        assert_eq!(fields.len(), FIELDS.len(), "{line}");
        assert!(line.contains(&path));
        lines += 1;
    }
    assert_eq!(lines + lost, sent, "{lines} lines written, {lost} dropped");
}

#[tokio::test]
async fn a_file_gets_the_access_log_appended_reopened_on_sighup_and_no_colour() {
    let upstream = Upstream::start(Answer::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let log = dir.path().join("logs/access.log");
    std::fs::write(&log, "an older line\n").unwrap();
    let yaml = config(
        &upstream.url(),
        &upstream.url(),
        "  access: logs/access.log\n  color: always",
    );
    std::fs::write(dir.path().join("gateway.yaml"), yaml).unwrap();
    let (mut served, stdout) = Served::start_keeping_stdout(dir.path(), "gateway.yaml", &[]);
    let output = read_all(stdout);
    let sent = traffic(served.addr, 2, 10).await;

    // Log rotation: the file moved away, SIGHUP, and later lines go to a new file.
    let rotated = dir.path().join("logs/access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &served.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !log.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no new access log after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = send(
        served.addr,
        request(
            "GET",
            "/items/1",
            &[("x-request-id", "after-rotation"), ("x-tenant", "1")],
            b"",
        ),
    )
    .await;
    assert_eq!(got.status, 200);

    assert!(served.terminate().success());
    assert_eq!(output.join().unwrap(), b"", "access lines on stdout");
    let after = std::fs::read_to_string(&log).unwrap();
    assert_eq!(after.lines().count(), 1, "{after}");
    assert!(after.contains("request_id=\"after-rotation\""), "{after}");
    // `color: always` colours the diagnostics even on a pipe (which also shows the other
    // tests would see escape codes where there are some).
    let diagnostics = served.diagnostics();
    assert!(diagnostics.contains("\u{1b}["), "{diagnostics}");

    let written = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        !written.contains('\u{1b}'),
        "escape codes in the access log"
    );
    let mut lines = written.lines();
    assert_eq!(
        lines.next(),
        Some("an older line"),
        "the file was not appended to"
    );
    let ids: BTreeSet<String> = lines
        .map(|line| {
            let fields = parse_text(line);
            check_line(&fields, line);
            fields[8].1.clone()
        })
        .collect();
    assert_eq!(ids, sent);
}
