//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the functions the
//! cargo-fuzz targets call, so that `cargo test` catches a regression on any seed or on any
//! crash input kept there, without libFuzzer.

#![allow(clippy::unwrap_used)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Runs every file of one target's corpus through `run`; fails naming each input that
/// panicked, or when the corpus is missing or empty.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        // libFuzzer's temporary files and editors' leftovers start with a dot.
        .filter(|path| !path.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no corpus", dir.display());
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} inputs failed: {failed:#?}",
        failed.len(),
        files.len()
    );
}

#[test]
fn query_corpus() {
    replay("query", schemagate::fuzzing::query);
}

#[test]
fn body_corpus() {
    replay("body", schemagate::fuzzing::body);
}

#[test]
fn config_corpus() {
    replay("config", schemagate::fuzzing::config);
}
