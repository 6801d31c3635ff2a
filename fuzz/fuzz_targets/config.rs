//! Config YAML text: parsing, `${VAR}` expansion and compilation into a Snapshot.
//! The logic lives in `schemagate::fuzzing::config`, which `tests/fuzz_corpus.rs` replays.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| schemagate::fuzzing::config(data));
