//! A request body: strict JSON parsing, then validation against each shipped body schema.
//! The logic lives in `schemagate::fuzzing::body`, which `tests/fuzz_corpus.rs` replays.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| schemagate::fuzzing::body(data));
