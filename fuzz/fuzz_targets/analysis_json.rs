//! `POST /v1/analyses` bodies: decoding and validation never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    meshgate::fuzzing::analysis_body(data);
});
