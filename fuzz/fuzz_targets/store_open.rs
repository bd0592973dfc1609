//! Opening a damaged store: bit flips, truncations and overwritten bytes of a real store file.
//! The open returns (never panics), and a refused file is left as it was and refused again.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    meshgate::fuzzing::store_mutations(data);
});
