//! The page parser and the accumulator on arbitrary bytes: no panic, deltas never negative.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        meshgate::fuzzing::parse_and_ingest(text);
    }
});
