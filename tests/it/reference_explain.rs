//! Differential test of the explanation statistics against committed scipy.stats vectors (tests/reference/generate.py).

use meshgate::judge::explain::{
    chi_square_2xk, fisher_exact, mann_whitney_binned, two_proportion_z,
};
use serde::Deserialize;

const VECTORS: &str = include_str!("../reference/betabinom.json");

#[derive(Deserialize)]
struct File {
    explain: Explain,
}

#[derive(Deserialize)]
struct Explain {
    mann_whitney: Vec<MwCase>,
    chi_square: Vec<ChiCase>,
    fisher: Vec<FisherCase>,
    two_proportion: Vec<PropCase>,
}

#[derive(Deserialize)]
struct MwCase {
    baseline: Vec<f64>,
    canary: Vec<f64>,
    u_b: f64,
    p_greater: f64,
    cles: f64,
}

#[derive(Deserialize)]
struct ChiCase {
    baseline: Vec<f64>,
    canary: Vec<f64>,
    statistic: f64,
    df: usize,
    p: f64,
}

#[derive(Deserialize)]
struct FisherCase {
    x_a: u64,
    n_a: u64,
    x_b: u64,
    n_b: u64,
    p_greater: f64,
    p_less: f64,
    p_two_sided: f64,
}

#[derive(Deserialize)]
struct PropCase {
    x_a: f64,
    n_a: f64,
    x_b: f64,
    n_b: f64,
    z: f64,
    p_greater: f64,
    p_two_sided: f64,
}

fn explain() -> Explain {
    serde_json::from_str::<File>(VECTORS)
        .expect("reference vectors parse")
        .explain
}

/// 1e-9 relative, 1e-15 absolute (p-values of order 1e-16 are rounding noise in scipy too).
fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs() + 1e-15
}

#[test]
fn mann_whitney_matches_scipy() {
    let cases = explain().mann_whitney;
    assert!(cases.len() >= 10);
    for c in &cases {
        let r = mann_whitney_binned(&c.baseline, &c.canary).expect("defined");
        assert_eq!(r.u_b, c.u_b, "{:?} {:?}", c.baseline, c.canary);
        assert!(
            close(r.p_greater, c.p_greater),
            "{:?} {:?}: p {} vs {}",
            c.baseline,
            c.canary,
            r.p_greater,
            c.p_greater
        );
        assert!(close(r.cles, c.cles));
    }
}

#[test]
fn chi_square_matches_scipy() {
    let cases = explain().chi_square;
    assert!(cases.len() >= 10);
    for c in &cases {
        let r = chi_square_2xk(&c.baseline, &c.canary).expect("defined");
        assert_eq!(r.df, c.df);
        assert!(
            close(r.statistic, c.statistic) && close(r.p, c.p),
            "{:?} {:?}: {r:?} vs {} {}",
            c.baseline,
            c.canary,
            c.statistic,
            c.p
        );
    }
}

#[test]
fn fisher_matches_scipy() {
    let cases = explain().fisher;
    assert!(cases.len() >= 10);
    for c in &cases {
        let r = fisher_exact(c.x_a, c.n_a, c.x_b, c.n_b).expect("defined");
        assert!(
            close(r.p_greater, c.p_greater)
                && close(r.p_less, c.p_less)
                && close(r.p_two_sided, c.p_two_sided),
            "({}, {}, {}, {}): {r:?} vs {} {} {}",
            c.x_a,
            c.n_a,
            c.x_b,
            c.n_b,
            c.p_greater,
            c.p_less,
            c.p_two_sided
        );
    }
}

#[test]
fn two_proportion_matches_scipy() {
    let cases = explain().two_proportion;
    assert!(cases.len() >= 10);
    for c in &cases {
        let r = two_proportion_z(c.x_a, c.n_a, c.x_b, c.n_b).expect("defined");
        assert!(
            close(r.z, c.z)
                && close(r.p_greater, c.p_greater)
                && close(r.p_two_sided, c.p_two_sided),
            "({}, {}, {}, {}): {r:?} vs {} {} {}",
            c.x_a,
            c.n_a,
            c.x_b,
            c.n_b,
            c.z,
            c.p_greater,
            c.p_two_sided
        );
    }
}
