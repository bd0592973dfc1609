//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the proptest fallback
//! (`tests/fuzz_regressions.rs`); not part of the stable API.

use std::sync::Arc;

use crate::cohort::{RoutedAnalysis, Routing, Selector, TargetAccumulator};
use crate::config::AnalysisConfig;
use crate::judge::Catalog;

/// Parse `page` with the built-in checks' families and ingest it twice into an accumulator:
/// must not panic, and no delta may be negative or non-finite.
pub fn parse_and_ingest(page: &str) {
    let cat = Catalog::builtin();
    let routing = Routing::new(
        1,
        vec![RoutedAnalysis {
            id: 1,
            since_generation: 1,
            baseline: Selector::parse(r#"{revision="old"}"#).expect("valid"),
            canary: Selector::parse(r#"{reporter=~"dest.*"}"#).expect("valid"),
            checks: cat.iter().map(|c| Arc::new(c.clone())).collect(),
        }],
    );
    let mut acc = TargetAccumulator::new([("revision".to_string(), "new".to_string())].into());
    acc.ingest(page, &routing);
    let rep = acc.ingest(page, &routing);
    for d in &rep.deltas {
        assert!(d.value >= 0.0 && d.value.is_finite(), "bad delta {d:?}");
    }
    let _ = crate::parse::parse(page, &routing.filter, |_| {});
    // Pages separated by NUL bytes: successive scrapes of one target, so values going up,
    // down (resets, dips) and back reach the reset logic; then the same in reverse.
    if page.contains('\0') {
        for order in [false, true] {
            let mut acc =
                TargetAccumulator::new([("revision".to_string(), "new".to_string())].into());
            let pages: Vec<&str> = if order {
                page.rsplit('\0').collect()
            } else {
                page.split('\0').collect()
            };
            for p in pages {
                for d in &acc.ingest(p, &routing).deltas {
                    assert!(d.value >= 0.0 && d.value.is_finite(), "bad delta {d:?}");
                }
            }
        }
    }
}

/// Decode and validate an analysis body as `POST /v1/analyses` does: must not panic.
pub fn analysis_body(data: &[u8]) {
    if let Ok(spec) = serde_json::from_slice::<AnalysisConfig>(data) {
        let problems = spec.problems("analysis");
        if problems.is_empty() {
            Selector::parse(&spec.baseline).expect("validated selector parses");
            Selector::parse(&spec.canary).expect("validated selector parses");
        }
    }
}
