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
