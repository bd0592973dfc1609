//! The per-bucket product of two-sided Beta-binomial e-values (the judge's whole-distribution detector) against mpmath vectors (tests/reference/generate.py).

use meshgate::judge::distribution_ln_e;
use serde::Deserialize;

const VECTORS: &str = include_str!("../reference/distribution.json");

#[derive(Deserialize)]
struct Vectors {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    baseline: Vec<f64>,
    canary: Vec<f64>,
    target_events: f64,
    alpha: f64,
    ln_e: f64,
}

#[test]
fn per_bucket_product_matches_mpmath() {
    let v: Vectors = serde_json::from_str(VECTORS).expect("vectors parse");
    assert!(v.cases.len() >= 10);
    for c in &v.cases {
        let got = distribution_ln_e(&c.baseline, &c.canary, c.target_events, c.alpha);
        // 1e-9 relative, plus the rounding of the lnB terms that cancel: each is of order
        // n ln n for n requests in a bucket, so f64 leaves ~1e-16 n ln n absolute.
        let n: f64 = c.baseline.iter().chain(&c.canary).sum();
        let tol = 1e-9 * c.ln_e.abs().max(1.0) + 1e-14 * n * n.ln().max(1.0);
        assert!(
            (got - c.ln_e).abs() <= tol,
            "{:?} / {:?}: {got} vs {} (tol {tol})",
            c.baseline,
            c.canary,
            c.ln_e
        );
    }
    // The shifted Envoy histogram carries more evidence of a different distribution than an identical one.
    assert!(
        v.cases[0].ln_e > v.cases[1].ln_e + 1.0,
        "{} {}",
        v.cases[0].ln_e,
        v.cases[1].ln_e
    );
}
