//! Issue 23's edge defects, each through the `schemagate` binary on a config written to a temp
//! dir, with upstreams on 127.0.0.1:0.

use crate::faults::answers;
use crate::raw::exchange;
use crate::support::*;

/// Writes `config` as `gateway.yaml` (and `files`, paths relative to it) into a new temp dir
/// and starts the binary on it.
fn serve(config: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, Served) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::write(dir.path().join("gateway.yaml"), config).unwrap();
    let served = Served::start(dir.path(), "gateway.yaml", &[]);
    (dir, served)
}

/// A config with an admin listener, `upstream` as `backend`, `defaults_extra` (lines under
/// `defaults:`) and `routes` (lines under `routes:`).
fn config(upstream: &str, defaults_extra: &str, routes: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\n\
         defaults:\n  timeouts: {{ connect: 1s, response_headers: 2s, header_read: 60s }}\n\
         {defaults_extra}\
         upstreams:\n  backend: {{ url: \"{upstream}\" }}\nroutes:\n{routes}"
    )
}

/// Defect 4: an upstream answer framed both ways (`Content-Length: 3` and chunked) is relayed
/// whole. RFC 9112 §6.1: the chunking wins; the stale length must not go out with it, or the
/// client reads 3 bytes of 20 and takes them for the whole answer. The upstream is written by
/// hand: hyper would never send both.
#[tokio::test]
async fn chunking_wins_over_an_upstreams_stale_content_length() {
    let rogue = answers(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
          a\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n",
        false,
    )
    .await;
    let routes = "  - { name: g, method: GET, path: /g, upstream: backend }\n";
    let (_dir, gw) = serve(&config(&rogue.url(), "", routes), &[]);

    let answer = exchange(
        gw.addr,
        b"GET /g HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.statuses(), [200], "{}", answer.text());
    assert_ne!(
        answer.header("content-length").as_deref(),
        Some("3"),
        "{}",
        answer.text()
    );
    assert_eq!(answer.body(), b"0123456789abcdefghij", "{}", answer.text());

    // A client library reads the same.
    let got = send(gw.addr, request("GET", "/g", &[], b"")).await;
    assert_eq!(&got.body[..], b"0123456789abcdefghij");
}
