//! The `schemagate` binary as users run it: `check` and `serve` on the shipped config.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_schemagate");
const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/gateway.yaml");

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    // Tests run in parallel: never the fixed default admin port.
    command.env("SCHEMAGATE_ADMIN", "127.0.0.1:0");
    for var in VENDOR_VARS {
        command.env_remove(var);
    }
    command
}

/// `schemagate check | head`: a reader that goes away before the output is written ends the
/// command quietly; it used to panic ("failed printing to stdout: Broken pipe").
#[test]
fn check_into_a_closed_pipe_does_not_panic() {
    let mut child = command(&["check", "--config", SHIPPED])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before the config is loaded and the summary written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}

#[test]
fn check_prints_the_five_routes() {
    let out = command(&["check", "--config", SHIPPED]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for route in [
        "gestiono.create_conversation_list",
        "leadconnector.create_conversation",
        "leadway.search_conversations",
        "flextell.create_conversation",
        "chatbotx.list_conversations",
    ] {
        assert!(stdout.contains(route), "{route} missing from:\n{stdout}");
    }
    assert!(stdout.contains("5 route(s)"), "{stdout}");
}

#[test]
fn check_fails_with_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listeners:\n  - adress: 127.0.0.1:0\nupstreams: {}\nroutes: []\n",
    )
    .unwrap();
    let out = command(&["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml:2: listeners[0].adress: unknown field `adress`"),
        "{stderr}"
    );
}

/// Starts `serve` on the shipped config with a port picked by the OS.
fn serve(envs: &[(&str, String)]) -> (Child, SocketAddr) {
    let mut command = command(&["serve", "--config", SHIPPED]);
    command
        .env("SCHEMAGATE_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in envs {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    // The banner is on stderr, with the diagnostics (stdout is the access log's).
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    // Keep reading, so the server's later output never meets a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (child, addr)
}

fn terminate(mut child: Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap()
}

#[tokio::test]
async fn serve_answers_with_documented_samples_and_env_picks_an_upstream() {
    let upstream = Upstream::start(Answer::default()).await;
    let (child, addr) = serve(&[("FLEXTELL_UPSTREAM", upstream.url())]);

    let cases = [
        (
            "POST",
            "/v1/conversation-list",
            "gestiono.create_conversation_list.json",
        ),
        (
            "POST",
            "/conversations/",
            "leadconnector.create_conversation.json",
        ),
        (
            "GET",
            "/conversations/search?locationId=abc",
            "leadway.search_conversations.json",
        ),
        (
            "GET",
            "/v1/conversations",
            "chatbotx.list_conversations.json",
        ),
    ];
    for (method, path, sample) in cases {
        let got = send(
            addr,
            request(
                method,
                path,
                &[
                    ("authorization", "Bearer t"),
                    ("version", "2021-07-28"),
                    ("content-type", "application/json"),
                ],
                b"{\"name\":\"x\"}",
            ),
        )
        .await;
        let file = format!("{}/config/mock/{sample}", env!("CARGO_MANIFEST_DIR"));
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        assert_eq!(got.status, 200, "{method} {path}");
        assert_eq!(got.json(), expected, "{method} {path}");
    }

    // FLEXTELL_UPSTREAM points at our recording upstream instead of the mock.
    let body = br#"{"channel_id":2,"address":"a"}"#;
    let got = send(addr, post_conversation(body)).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), serde_json::json!({"ok": true}));
    assert_eq!(&upstream.seen()[0].body[..], body);

    let status = terminate(child);
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
}

#[test]
fn validate_prints_what_the_gateway_would_answer() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"channel_id": 0}"#).unwrap();
    let out = command(&[
        "validate",
        "--config",
        SHIPPED,
        "--route",
        "flextell.create_conversation",
        "--body",
        bad.to_str().unwrap(),
        "--header",
        "Authorization: Bearer t",
        "--header",
        "X-Tenant: 7",
    ])
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("422 Unprocessable Entity"));
    let envelope: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(
        envelope,
        serde_json::json!({"statusCode": 422, "message": ["body.address is required", "body.channel_id must be >= 1"], "error": "Unprocessable Entity"})
    );

    let out = command(&[
        "validate",
        "--config",
        SHIPPED,
        "--route",
        "leadway.search_conversations",
        "--query",
        "locationId=abc&limit=5",
        "--header",
        "Authorization: Bearer t",
        "--header",
        "Version: 2021-07-28",
    ])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("200 forwarded"));

    let out = command(&[
        "validate",
        "--config",
        SHIPPED,
        "--route",
        "chatbotx.list_conversations",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("401 Unauthorized"));

    let out = command(&["validate", "--config", SHIPPED, "--route", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn sighup_reloads_the_config() {
    let mut child = command(&["serve", "--config", SHIPPED])
        .env("SCHEMAGATE_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The banner and the diagnostics are on stderr (stdout is the access log's).
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("listening on"), "{first}");
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    // The reload logs its trigger; the shipped config is unchanged, so no new generation.
    // Lines are read on a thread so a missing line fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = None;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("SIGHUP") => {
                seen = Some(line);
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    let line = seen.expect("a reload triggered by SIGHUP within 10 s");
    assert!(
        line.contains("config unchanged") && line.contains("generation=1"),
        "{line}"
    );
    assert!(terminate(child).success());
}

/// `TOKIO_WORKER_THREADS=1` runs tokio's single-threaded runtime (how `bench/` runs the
/// gateway): on its one thread it still serves requests side by side over HTTP/1.1 and h2,
/// forwards and rejects, and drains an in-flight request on SIGTERM.
#[tokio::test]
async fn one_worker_serves_side_by_side_and_drains() {
    let delay = Duration::from_millis(400);
    let upstream = Upstream::start(Answer {
        delay,
        ..Answer::default()
    })
    .await;
    let (child, addr) = serve(&[
        ("FLEXTELL_UPSTREAM", upstream.url()),
        ("TOKIO_WORKER_THREADS", "1".to_string()),
    ]);
    let valid: &[u8] = br#"{"channel_id":2,"address":"a"}"#;
    let invalid: &[u8] = br#"{"channel_id":0,"address":"a"}"#;

    // Six forwarded requests (each waits `delay` upstream) and two rejected ones at once:
    // one after another they would take 6 x 400 ms.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let body = if i % 4 == 3 { invalid } else { valid };
        let request = post_conversation(body);
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                send(addr, request).await.status
            } else {
                send_h2(addr, request).await.status
            }
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 422, 422]);
    assert!(started.elapsed() < delay * 3, "{:?}", started.elapsed());
    assert_eq!(upstream.seen().len(), 6);
    // And all of that on one thread: the multi-threaded runtime would have started a worker
    // thread (tokio names them `tokio-rt-worker`; nothing here needed its blocking pool).
    let threads = std::fs::read_dir(format!("/proc/{}/task", child.id())).unwrap();
    let workers = threads
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
        .filter(|name| name.starts_with("tokio-"))
        .count();
    assert_eq!(workers, 0, "tokio worker threads in a one-worker gateway");

    // SIGTERM while a request waits on the upstream: it is answered, then the process exits 0.
    let in_flight = tokio::spawn(send(addr, post_conversation(valid)));
    while upstream.seen().len() < 7 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = tokio::task::spawn_blocking(move || terminate(child))
        .await
        .unwrap();
    assert_eq!(in_flight.await.unwrap().status, 200);
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
}

/// `hash-key` hashes one line of stdin: its line break (`\n`, `\r\n`) is dropped silently,
/// so `echo` and `printf %s` agree; what follows the first line break is ignored; spaces are
/// part of the key; no key is exit 2.
#[test]
fn hash_key_hashes_the_first_line_without_its_line_break() {
    use std::io::Write;
    let hash_key = |stdin: &[u8]| {
        let mut child = command(&["hash-key"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // SHA-256("abc"), the FIPS 180-2 test vector.
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n";
    for stdin in [&b"abc"[..], b"abc\n", b"abc\r\n", b"abc\nsecond line\n"] {
        let (code, stdout, stderr) = hash_key(stdin);
        assert_eq!(code, Some(0), "{stdin:?}: {stderr}");
        assert_eq!(stdout, abc, "{stdin:?}");
    }
    let (code, stdout, _) = hash_key(b"abc \n");
    assert_eq!(code, Some(0));
    assert_ne!(stdout, abc, "a trailing space is part of the key");
    for stdin in [&b""[..], b"\n"] {
        let (code, stdout, stderr) = hash_key(stdin);
        assert_eq!(code, Some(2), "{stdin:?}: {stdout}");
        assert!(stderr.contains("no key on stdin"), "{stderr}");
    }
}
