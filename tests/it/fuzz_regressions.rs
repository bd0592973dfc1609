//! Fuzzing without libFuzzer: the cargo-fuzz targets' entry points (`meshgate::fuzzing`) run on
//! every input committed under `tests/fixtures/fuzz/` and on proptest-generated pages and JSON
//! bodies built from the grammar's pieces (random, not coverage-guided).

use proptest::prelude::*;

#[test]
fn committed_inputs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let data = std::fs::read(&p).unwrap();
        if let Ok(t) = std::str::from_utf8(&data) {
            meshgate::fuzzing::parse_and_ingest(t);
        }
        meshgate::fuzzing::analysis_body(&data);
        n += 1;
    }
    assert!(n >= 3, "the seed inputs are missing from {}", dir.display());
}

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("istio_requests_total".to_string()),
        Just("istio_request_duration_milliseconds_bucket".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("reporter=\"destination\"".to_string()),
        Just("le=\"+Inf\"".to_string()),
        Just("le=\"250\"".to_string()),
        Just(",".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just(" ".to_string()),
        Just("\n".to_string()),
        Just("# TYPE istio_requests_total counter\n".to_string()),
        Just("# EOF\n".to_string()),
        Just("NaN".to_string()),
        Just("-Inf".to_string()),
        Just("1e308".to_string()),
        Just("-5".to_string()),
        // The plausibility limits (issue 13): a u64 wrap, just past 2^53, a page boundary (the
        // NUL splits successive scrapes), an overlong label value.
        Just("18446744073709551615".to_string()),
        Just("9007199254740993".to_string()),
        Just("\0".to_string()),
        Just(format!("x=\"{}\"", "v".repeat(2100))),
        Just(" # {trace_id=\"x\"} 1 2".to_string()),
        "[0-9]{1,6}",
        "[ -~]{0,8}",
        "\\PC{0,3}",
    ]
}

fn json_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{\"name\":\"a\",\"baseline\":\"{revision=\\\"old\\\"}\",\"canary\":\"{revision=\\\"new\\\"}\"".to_string()),
        Just(",\"checks\":[\"error-rate\"]".to_string()),
        Just(",\"alpha\":".to_string()),
        Just(",\"min_duration\":\"".to_string()),
        Just(",\"max_duration\":\"1h\"".to_string()),
        Just(",\"min_exposure\":".to_string()),
        Just("1e999".to_string()),
        Just("-0".to_string()),
        Just("\"5s\"".to_string()),
        Just("}".to_string()),
        Just("\\u0000".to_string()),
        "[ -~]{0,10}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn pages_from_grammar_pieces(parts in proptest::collection::vec(piece(), 0..60)) {
        meshgate::fuzzing::parse_and_ingest(&parts.concat());
    }

    #[test]
    fn arbitrary_bytes_as_page(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        meshgate::fuzzing::parse_and_ingest(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn analysis_bodies(parts in proptest::collection::vec(json_piece(), 0..12)) {
        meshgate::fuzzing::analysis_body(parts.concat().as_bytes());
    }
}

/// The `store_open` fuzz target's property on a deterministic set of damaged copies of a real
/// store file: a few hundred single and multiple bit flips, truncations and overwritten bytes.
/// Every open returns (no panic), a refused file is unchanged and refused again the same way, and
/// the undamaged file opens (so the loop does test something that can be refused).
#[test]
fn damaged_store_files_are_refused_cleanly_and_the_same_way_twice() {
    use rand::{Rng, SeedableRng};
    let sample = meshgate::fuzzing::sample_store();
    assert!(
        meshgate::fuzzing::open_store_file(sample),
        "the sample store opens"
    );
    let mut rng = rand::rngs::SmallRng::seed_from_u64(13);
    let (mut opened, mut refused) = (0, 0);
    for case in 0..300 {
        let n = match case % 3 {
            0 => 1,
            1 => 8,
            _ => 200,
        };
        let ops: Vec<u8> = (0..n)
            .flat_map(|_| {
                // Mostly flips; truncations in one case in ten.
                let kind: u8 = if rng.random_ratio(1, 10 * n) {
                    6
                } else {
                    rng.random_range(0..8)
                };
                let kind = if kind == 6 && rng.random_ratio(9, 10) {
                    0
                } else {
                    kind
                };
                let mut op = vec![kind];
                op.extend(rng.random::<u32>().to_le_bytes());
                op
            })
            .collect();
        if meshgate::fuzzing::store_mutations(&ops) {
            opened += 1;
        } else {
            refused += 1;
        }
    }
    // Truncation at every 1/16 of the file, and the empty file.
    for i in 0..16 {
        let len = sample.len() * i / 16;
        if meshgate::fuzzing::open_store_file(&sample[..len]) {
            opened += 1;
        } else {
            refused += 1;
        }
    }
    eprintln!("damaged copies: {opened} opened, {refused} refused");
    assert!(
        refused >= 150,
        "only {refused} of the damaged copies were refused"
    );
}
