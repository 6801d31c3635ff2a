//! A raw query string: form decoding, coercion to the schema's types, validation.
//! The logic lives in `schemagate::fuzzing::query`, which `tests/fuzz_corpus.rs` replays.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| schemagate::fuzzing::query(data));
