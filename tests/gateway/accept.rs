//! The accept loop when the process runs out of file descriptors: the `schemagate` binary
//! under `ulimit -n`, saturated with loopback connections. It must back off (not spin on
//! EMFILE) and answer again as soon as descriptors are free.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::raw::*;

const BIN: &str = env!("CARGO_BIN_EXE_schemagate");
/// Low enough that the held connections below exhaust it.
const FD_LIMIT: usize = 48;
const HELD: usize = 100;
const SATURATED_FOR: Duration = Duration::from_secs(2);

/// User + system CPU time of `pid`, from /proc/PID/stat (fields 14 and 15).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    let per_second: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    Duration::from_millis(ticks * 1000 / per_second)
}

async fn get_x(addr: SocketAddr) -> Option<u16> {
    exchange(
        addr,
        b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .status()
}

#[tokio::test]
async fn accept_backs_off_on_emfile_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mock.json"), r#"{"ok":true}"#).unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        r#"listeners:
  - address: 127.0.0.1:0
upstreams:
  demo:
    url: mock
    mock: { status: 200, body_file: mock.json }
routes:
  - { name: r, method: GET, path: /x, upstream: demo }
"#,
    )
    .unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n {FD_LIMIT} && exec \"$0\" serve --config \"$1\""
        ))
        .arg(BIN)
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    // Diagnostics follow the "listening" line on stderr.
    let warnings = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&warnings);
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("accept failed") {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let addr: SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));

    assert_eq!(get_x(addr).await, Some(200));

    // More connections than the gateway has descriptors: the rest wait in the backlog, and
    // every accept() fails with EMFILE while they do.
    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = cpu_time(pid);
    tokio::time::sleep(SATURATED_FOR).await;
    let spent = cpu_time(pid) - before;
    let failures = warnings.load(Ordering::SeqCst);
    assert!(
        failures > 0,
        "accept never failed: the limit was not reached"
    );
    // A loop retrying EMFILE without pause burns a whole core; the back-off sleeps 50 ms.
    assert!(
        spent < SATURATED_FOR / 10,
        "{spent:?} of CPU in {SATURATED_FOR:?} while saturated"
    );
    assert!(
        failures < 200,
        "{failures} accept failures logged: no back-off"
    );

    // Descriptors free again: answered within a few back-off rounds.
    drop(held);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let recovered = loop {
        let status = tokio::time::timeout(Duration::from_secs(1), get_x(addr))
            .await
            .ok()
            .flatten();
        if status == Some(200) {
            break true;
        }
        if tokio::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    assert!(
        recovered,
        "no answer within 5 s after the connections closed"
    );
    eprintln!("saturated {SATURATED_FOR:?}: {spent:?} CPU, {failures} accept failures logged");
}
