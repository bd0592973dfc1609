//! Differential test of the Beta-binomial e-values and the rate bound against committed scipy/mpmath vectors (tests/reference/generate.py).

use meshgate::judge::betabinom::ln_beta;
use meshgate::judge::betabinom::{choose_k, ln_e_one_sided, ln_e_two_sided};
use meshgate::judge::rate::rate_upper_bound;
use serde::Deserialize;

const VECTORS: &str = include_str!("../reference/betabinom.json");

#[derive(Deserialize)]
struct Vectors {
    choose_k: Vec<KCase>,
    two_sided: Vec<ECase>,
    one_sided: Vec<ECase>,
    rate_upper_bound: Vec<RateCase>,
}

#[derive(Deserialize)]
struct KCase {
    alpha: f64,
    rho_b: f64,
    target_events: f64,
    one_sided: bool,
    k: f64,
}

#[derive(Deserialize)]
struct ECase {
    n_a: f64,
    n_b: f64,
    rho_b: f64,
    k: f64,
    #[serde(default)]
    margin: f64,
    /// mpmath value at 60 digits.
    ln_e: f64,
    /// scipy's value, absent where its betainc underflows.
    scipy: Option<f64>,
}

#[derive(Deserialize)]
struct RateCase {
    events: f64,
    trials: f64,
    alpha: f64,
    bound: f64,
}

fn vectors() -> Vectors {
    serde_json::from_str(VECTORS).expect("reference vectors parse")
}

/// Relative tolerance everywhere.
const REL: f64 = 1e-9;
/// Absolute floor for values near zero.
const ABS: f64 = 1e-12;
/// Error allowed per unit of cancelling magnitude (see `scale`): one ulp.
///
/// Where ln E is close to 0 at 1e5 events, it is the difference of terms of size ~1e5 (the
/// posterior lnB and N ln rho), and the inputs themselves (k rho_A + N_A, ...) are rounded to
/// ~1e-11 before any function sees them, so neither this code nor scipy can meet 1e-9 relative
/// or 1e-12 absolute there: the worst such case here is off by 1.7e-11 (0.6 ulp of its terms),
/// scipy by 2.9e-10. Everywhere else 1e-9 relative / 1e-12 absolute holds, with room to spare.
const CANCEL: f64 = f64::EPSILON;

#[test]
fn choose_k_matches() {
    let v = vectors();
    assert!(v.choose_k.len() >= 100);
    for c in &v.choose_k {
        let got = choose_k(c.alpha, c.rho_b, c.target_events, c.one_sided);
        assert!(
            (got - c.k).abs() <= REL * c.k.abs(),
            "choose_k({}, {}, {}, {}) = {got}, want {}",
            c.alpha,
            c.rho_b,
            c.target_events,
            c.one_sided,
            c.k
        );
    }
}

/// Magnitude of the terms that cancel inside ln E (posterior lnB and the null log-likelihood):
/// a double carries about 1e-16 of it as rounding error whatever the algorithm, scipy included.
fn scale(c: &ECase) -> f64 {
    let x = 1.0 - c.rho_b;
    ln_beta(c.k * x + c.n_a, c.k * c.rho_b + c.n_b).abs()
        + (c.n_a * x.ln()).abs()
        + (c.n_b * c.rho_b.ln()).abs()
}

/// Allowed error: 1e-9 relative, absolute 1e-12 near zero, and never less than CANCEL times the
/// magnitude of the terms that cancel (see `scale`).
fn tolerance(c: &ECase) -> f64 {
    (REL * c.ln_e.abs() + ABS).max(CANCEL * scale(c))
}

fn check(kind: &str, cases: &[ECase], f: impl Fn(&ECase) -> f64) {
    let mut failures = Vec::new();
    let mut worst = (0.0, 0.0, 0.0);
    for c in cases {
        let got = f(c);
        let err = (got - c.ln_e).abs();
        let used = err / tolerance(c);
        if used > worst.0 {
            worst = (used, err, c.ln_e);
        }
        if err.is_nan() || err > tolerance(c) {
            failures.push(format!(
                "{kind} n_a {} n_b {} rho_b {} k {} m {}: got {got}, want {} (scipy {:?}), err {err:.3e}, err/scale {:.2e}",
                c.n_a, c.n_b, c.rho_b, c.k, c.margin, c.ln_e, c.scipy, err / scale(c)
            ));
        }
    }
    println!(
        "{kind}: worst case uses {:.3} of the tolerance (error {:.2e} at ln E {})",
        worst.0, worst.1, worst.2
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases off:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn two_sided_matches() {
    let v = vectors();
    assert!(v.two_sided.len() >= 100);
    check("two-sided", &v.two_sided, |c| {
        ln_e_two_sided(c.n_a, c.n_b, c.rho_b, c.k)
    });
}

#[test]
fn one_sided_matches() {
    let v = vectors();
    assert!(v.one_sided.len() >= 300);
    check("one-sided", &v.one_sided, |c| {
        ln_e_one_sided(c.n_a, c.n_b, c.rho_b, c.k, c.margin)
    });
}

#[test]
fn rate_bound_matches() {
    let v = vectors();
    for c in &v.rate_upper_bound {
        let got = rate_upper_bound(c.events, c.trials, c.alpha);
        assert!(
            (got - c.bound).abs() <= REL * c.bound,
            "rate_upper_bound({}, {}, {}) = {got}, want {}",
            c.events,
            c.trials,
            c.alpha,
            c.bound
        );
    }
}
