//! Closed-form Beta-binomial e-values for "which cohort did this event come from" (statistics.md §1).
//!
//! Given that an event happened, it came from the canary (B) with probability theta; with canary
//! exposure share rho_B the null "canary not worse" is theta <= rho_B. The e-values mix the
//! binomial likelihood of (N_A, N_B) over a Beta prior and divide by the null likelihood.

use statrs::function::beta;
use statrs::function::gamma::ln_gamma;

/// Smallest mixing concentration `choose_k` returns.
///
/// For small target counts the formula gives k near zero or negative. A Beta(k rho_B, k rho_A)
/// prior with k -> 0 piles its mass at theta = 0 and theta = 1, i.e. it only bets on "every event
/// comes from the canary", which wastes power on any realistic regression, and k <= 0 is not a
/// distribution at all. 0.5 keeps both shape parameters positive and the prior still reacts within
/// a handful of events (k = 0.5 rejects a zero-baseline stream after 5 canary events at
/// alpha = 0.05, rho_B = 0.5; k = 1.5 after 6).
pub const MIN_K: f64 = 0.5;

/// Mixing concentration k whose boundary is tightest near `target_events` events.
///
/// a = alpha (two-sided) or 2 alpha (one-sided); v = t* rho_A rho_B;
/// rho_opt = v / (2 ln(1/a) + ln(1 + 2 ln(1/a))); k = (rho_opt - rho_A rho_B) / (rho_A rho_B),
/// clamped below at [`MIN_K`]. Returns `MIN_K` when the inputs make the formula meaningless
/// (rho_b outside (0, 1), a outside (0, 1), non-finite values).
pub fn choose_k(alpha: f64, rho_b: f64, target_events: f64, one_sided: bool) -> f64 {
    let a = if one_sided { 2.0 * alpha } else { alpha };
    let rho_a = 1.0 - rho_b;
    let var = rho_a * rho_b;
    if !(a > 0.0 && a < 1.0 && var > 0.0 && target_events.is_finite()) {
        return MIN_K;
    }
    let l = (1.0 / a).ln();
    let v = target_events * var;
    let rho_opt = v / (2.0 * l + (2.0 * l).ln_1p());
    let k = (rho_opt - var) / var;
    // `max` also maps a NaN k (it cannot arise from finite inputs, but be safe) to MIN_K.
    k.max(MIN_K)
}

/// Two-sided Beta-binomial e-value (log) of H0: theta = rho_B, prior theta ~ Beta(k rho_B, k rho_A).
///
/// ln E = lnB(k rho_A + N_A, k rho_B + N_B) - lnB(k rho_A, k rho_B) - N_A ln rho_A - N_B ln rho_B.
/// Returns NaN when rho_b is not in (0, 1), k <= 0 or a count is negative, so a caller comparing
/// `ln_e >= threshold` never rejects on nonsense input.
pub fn ln_e_two_sided(n_a: f64, n_b: f64, rho_b: f64, k: f64) -> f64 {
    if !valid_inputs(n_a, n_b, rho_b, k) {
        return f64::NAN;
    }
    let rho_a = 1.0 - rho_b;
    let (a0, b0) = (k * rho_a, k * rho_b);
    ln_beta(a0 + n_a, b0 + n_b) - ln_beta(a0, b0) - xlogy(n_a, rho_a) - xlogy(n_b, rho_b)
}

/// One-sided Beta-binomial e-value (log) of H0: rate ratio <= 1 + margin, i.e. theta <= theta_m.
///
/// theta_m = (1+m) rho_B / ((1+m) rho_B + rho_A). This is the margin-0 formula of §1 with rho_B
/// replaced by theta_m everywhere: prior Beta(k theta_m, k (1 - theta_m)) truncated to
/// theta >= theta_m, null likelihood at theta_m. Returns NaN on invalid input (see
/// [`ln_e_two_sided`]) or a negative margin.
pub fn ln_e_one_sided(n_a: f64, n_b: f64, rho_b: f64, k: f64, margin: f64) -> f64 {
    if !(valid_inputs(n_a, n_b, rho_b, k) && margin >= 0.0 && margin.is_finite()) {
        return f64::NAN;
    }
    let (x, y) = null_split(rho_b, margin);
    // x = 1 - theta_m is the baseline's share under the null, y = theta_m the canary's.
    let (a0, b0) = (k * x, k * y);
    // ln E = ln B_x(a0 + N_A, b0 + N_B) - ln B_x(a0, b0) - N_A ln x - N_B ln y with B_x the
    // unregularized incomplete beta: I_x(a, b) B(a, b) = B_x(a, b), which is how §1's
    // "ln I + lnB" pairs combine. Keeping them together avoids cancelling two large lnB terms.
    ln_inc_beta(a0 + n_a, b0 + n_b, x, y)
        - ln_inc_beta(a0, b0, x, y)
        - xlogy(n_a, x)
        - xlogy(n_b, y)
}

/// Null split (1 - theta_m, theta_m) for margin m, each computed directly so that neither is
/// obtained as 1 minus the other (which would lose digits when theta_m is close to 0 or 1).
pub(crate) fn null_split(rho_b: f64, margin: f64) -> (f64, f64) {
    let rho_a = 1.0 - rho_b;
    let up = (1.0 + margin) * rho_b;
    let total = up + rho_a;
    (rho_a / total, up / total)
}

fn valid_inputs(n_a: f64, n_b: f64, rho_b: f64, k: f64) -> bool {
    n_a >= 0.0
        && n_b >= 0.0
        && n_a.is_finite()
        && n_b.is_finite()
        && rho_b > 0.0
        && rho_b < 1.0
        && k > 0.0
        && k.is_finite()
}

/// n ln p with the convention 0 ln p = 0 (a cohort without events contributes nothing).
fn xlogy(n: f64, p: f64) -> f64 {
    if n == 0.0 {
        0.0
    } else {
        n * p.ln()
    }
}

/// ln B(a, b), accurate to a few ulp of its value also for large arguments.
///
/// statrs' `ln_beta` is lnGamma(a) + lnGamma(b) - lnGamma(a + b) with a Lanczos lnGamma whose
/// terms reach ~1e6 at a = 1e5, so the difference carries absolute errors of ~1e-10 (that was
/// the largest error against the mpmath vectors). For an argument >= 10 this uses Stirling's
/// series for the correction delta(x) = lnGamma(x) - ((x - 1/2) ln x - x + ln sqrt(2 pi)),
/// where the large parts cancel analytically (the algorithm of R's `lbeta`); statrs is used
/// when both arguments are small and the plain sum does not cancel.
pub fn ln_beta(a: f64, b: f64) -> f64 {
    let (p, q) = if a < b { (a, b) } else { (b, a) };
    if p.is_nan() || p <= 0.0 {
        return f64::NAN;
    }
    let s = p + q;
    if p >= 10.0 {
        let corr = stirling_delta(p) + stirling_delta(q) - stirling_delta(s);
        -0.5 * q.ln() + LN_SQRT_2PI + corr + (p - 0.5) * (p / s).ln() + q * (-p / s).ln_1p()
    } else if q >= 10.0 {
        let corr = stirling_delta(q) - stirling_delta(s);
        ln_gamma(p) + corr + p - p * s.ln() + (q - 0.5) * (-p / s).ln_1p()
    } else {
        beta::ln_beta(p, q)
    }
}

/// ln sqrt(2 pi).
const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// delta(x) = lnGamma(x) - ((x - 1/2) ln x - x + ln sqrt(2 pi)) for x >= 10, by Stirling's
/// series B_2n / (2n (2n - 1) x^(2n - 1)); eight terms leave an error below 2e-18 at x = 10.
fn stirling_delta(x: f64) -> f64 {
    const C: [f64; 8] = [
        1.0 / 12.0,
        -1.0 / 360.0,
        1.0 / 1260.0,
        -1.0 / 1680.0,
        1.0 / 1188.0,
        -691.0 / 360_360.0,
        1.0 / 156.0,
        -3617.0 / 122_400.0,
    ];
    let inv2 = 1.0 / (x * x);
    C.iter().rev().fold(0.0, |acc, &c| acc * inv2 + c) / x
}

/// Relative precision the continued fraction iterates to.
const CF_EPS: f64 = 1e-16;
/// Guard against division by zero inside the modified Lentz iteration.
const CF_TINY: f64 = 1e-300;
/// Iteration cap of the continued fraction. On the side where it is used it needs
/// O(sqrt(max(a, b))) steps, about 1,000 for shapes near 1e6; statrs stops at 140, which is why
/// its `beta_reg` is not accurate for counts of 1e5 and more.
const CF_MAX_ITER: usize = 100_000;

/// Continued fraction of the incomplete beta (Numerical Recipes `betacf`, modified Lentz):
/// B_x(a, b) = x^a y^b / a * cf, converging fast for x < (a + 1) / (a + b + 2).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    let qab = a + b;
    let qap = a + 1.0;
    let qam = a - 1.0;
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < CF_TINY {
        d = CF_TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=CF_MAX_ITER {
        let m = m as f64;
        let m2 = 2.0 * m;
        // Even step.
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < CF_TINY {
            d = CF_TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < CF_TINY {
            c = CF_TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        // Odd step.
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < CF_TINY {
            d = CF_TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < CF_TINY {
            c = CF_TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() <= CF_EPS {
            break;
        }
    }
    h
}

/// ln B_x(a, b) by the continued fraction, for the side where it converges.
fn ln_inc_beta_cf(a: f64, b: f64, x: f64, y: f64) -> f64 {
    a * x.ln() + b * y.ln() - a.ln() + beta_cf(a, b, x).ln()
}

/// ln of the unregularized incomplete beta B_x(a, b) = int_0^x t^(a-1) (1-t)^(b-1) dt, with
/// y = 1 - x passed separately so that neither tail is computed as 1 minus the other endpoint.
///
/// statrs' `beta_reg` is not used here: it forms x^a y^b / B(a, b) with `exp`, which underflows to
/// 0 (ln = -inf) once ln I < -745, i.e. as soon as the baseline clearly outnumbers the canary at
/// counts of a few thousand; it caps the continued fraction at 140 steps; and it returns the upper
/// region as 1 - (small), losing relative precision in exactly the tails e-values live in.
pub(crate) fn ln_inc_beta(a: f64, b: f64, x: f64, y: f64) -> f64 {
    if x <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if y <= 0.0 {
        return ln_beta(a, b);
    }
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_inc_beta_cf(a, b, x, y)
    } else {
        // B_x(a, b) = B(a, b) - B_y(b, a); the subtracted part is the tail the fraction handles.
        let lb = ln_beta(a, b);
        lb + ln_1m_exp(ln_inc_beta_cf(b, a, y, x) - lb)
    }
}

/// Both regularized tails in log space: (ln I_x(a, b), ln (1 - I_x(a, b))), given lnB(a, b).
///
/// One tail comes from the continued fraction on the side where it converges; the other from
/// the complement, which is then at least about one half, so no relative precision is lost.
pub(crate) fn ln_beta_reg_tails(a: f64, b: f64, x: f64, y: f64, ln_beta_ab: f64) -> (f64, f64) {
    if x <= 0.0 {
        return (f64::NEG_INFINITY, 0.0);
    }
    if y <= 0.0 {
        return (0.0, f64::NEG_INFINITY);
    }
    if x < (a + 1.0) / (a + b + 2.0) {
        let lower = ln_inc_beta_cf(a, b, x, y) - ln_beta_ab;
        (lower, ln_1m_exp(lower))
    } else {
        let upper = ln_inc_beta_cf(b, a, y, x) - ln_beta_ab;
        (ln_1m_exp(upper), upper)
    }
}

/// ln(1 - e^t) for t <= 0, accurate at both ends (Mächler's log1mexp).
pub(crate) fn ln_1m_exp(t: f64) -> f64 {
    if t >= 0.0 {
        f64::NEG_INFINITY
    } else if t > -std::f64::consts::LN_2 {
        (-t.exp_m1()).ln()
    } else {
        (-t.exp()).ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use statrs::function::beta::beta_reg;

    #[test]
    fn ln_beta_agrees_with_statrs_where_both_are_accurate() {
        for &(a, b) in &[
            (0.3, 0.7),
            (2.0, 3.0),
            (9.9, 10.1),
            (10.0, 10.0),
            (3.5, 40.0),
            (12.5, 300.0),
        ] {
            let ours = ln_beta(a, b);
            let theirs = beta::ln_beta(a, b);
            assert!(
                (ours - theirs).abs() <= 1e-13 * theirs.abs().max(1.0),
                "{a} {b}: {ours} {theirs}"
            );
        }
        // Exact: B(1, n + 1) = 1 / (n + 1).
        for n in [9.0, 99.0, 9_999.0, 999_999.0] {
            assert!((ln_beta(1.0, n + 1.0) + (n + 1.0f64).ln()).abs() < 1e-14 * (n + 1.0f64).ln());
        }
        assert!(ln_beta(0.0, 1.0).is_nan());
    }

    fn close(got: f64, want: f64, rel: f64) -> bool {
        (got - want).abs() <= rel * want.abs().max(1e-3)
    }

    #[test]
    fn section6_choose_k() {
        let k2 = choose_k(0.05, 0.5, 200.0, false);
        let k1 = choose_k(0.05, 0.5, 200.0, true);
        assert!((k2 - 24.201122).abs() < 5e-7, "two-sided k {k2}");
        assert!((k1 - 30.601270).abs() < 5e-7, "one-sided k {k1}");
        // §1's other two-sided examples.
        assert!((choose_k(0.05, 0.5, 50.0, false) - 5.3).abs() < 0.05);
        assert!((choose_k(0.05, 0.5, 1000.0, false) - 125.0).abs() < 1.0);
    }

    #[test]
    fn choose_k_clamps_degenerate_inputs() {
        assert_eq!(choose_k(0.05, 0.5, 1.0, true), MIN_K);
        assert_eq!(choose_k(0.05, 0.0, 200.0, true), MIN_K);
        assert_eq!(choose_k(0.6, 0.5, 200.0, true), MIN_K);
        assert_eq!(choose_k(f64::NAN, 0.5, 200.0, true), MIN_K);
    }

    #[test]
    fn section6_ln_e() {
        let k2 = choose_k(0.05, 0.5, 200.0, false);
        let k1 = choose_k(0.05, 0.5, 200.0, true);
        let two = ln_e_two_sided(30.0, 55.0, 0.5, k2);
        let one = ln_e_one_sided(30.0, 55.0, 0.5, k1, 0.0);
        assert!(close(two, 2.152881263859, 1e-9), "two-sided {two}");
        assert!(close(one, 2.761801540143, 1e-9), "one-sided {one}");
    }

    #[test]
    fn zero_baseline_rejection_counts() {
        let threshold = 20f64.ln();
        // First canary count at which the one-sided test rejects with no baseline events.
        let first = |k: f64| {
            (0..100)
                .find(|&n| ln_e_one_sided(0.0, n as f64, 0.5, k, 0.0) >= threshold)
                .unwrap()
        };
        assert_eq!(first(1.5), 6);
        assert_eq!(first(24.0), 14);
        assert_eq!(first(MIN_K), 5);
    }

    #[test]
    fn no_data_is_no_evidence() {
        assert_eq!(ln_e_two_sided(0.0, 0.0, 0.3, 10.0), 0.0);
        assert!(ln_e_one_sided(0.0, 0.0, 0.3, 10.0, 0.25).abs() < 1e-14);
    }

    #[test]
    fn invalid_input_is_nan() {
        assert!(ln_e_two_sided(-1.0, 3.0, 0.5, 10.0).is_nan());
        assert!(ln_e_two_sided(1.0, 3.0, 1.0, 10.0).is_nan());
        assert!(ln_e_one_sided(1.0, 3.0, 0.5, 0.0, 0.0).is_nan());
        assert!(ln_e_one_sided(1.0, 3.0, 0.5, 10.0, -0.1).is_nan());
    }

    #[test]
    fn margin_zero_equals_plain_one_sided_and_margin_lowers_evidence() {
        let k = 12.0;
        let mut last = f64::INFINITY;
        for m in [0.0, 0.1, 0.25, 1.0] {
            let e = ln_e_one_sided(40.0, 80.0, 0.4, k, m);
            assert!(e < last, "margin {m} gave {e} after {last}");
            last = e;
        }
    }

    #[test]
    fn tails_match_statrs_where_statrs_is_accurate() {
        for &(a, b, x) in &[
            (2.0, 3.0, 0.2),
            (2.0, 3.0, 0.7),
            (15.3, 15.3, 0.5),
            (0.45, 29.5, 0.01),
            (0.45, 29.5, 0.2),
            (29.5, 0.45, 0.99),
            (40.0, 90.0, 0.3),
        ] {
            let lb = ln_beta(a, b);
            let (lo, up) = ln_beta_reg_tails(a, b, x, 1.0 - x, lb);
            let want = beta_reg(a, b, x);
            assert!((lo.exp() - want).abs() < 1e-13, "{a} {b} {x}");
            assert!((up.exp() - (1.0 - want)).abs() < 1e-13, "{a} {b} {x}");
            assert!((ln_inc_beta(a, b, x, 1.0 - x) - lb - lo).abs() < 1e-12);
        }
    }

    proptest::proptest! {
        /// The two log tails are complementary, and ln E moves the right way with each count.
        #[test]
        fn tails_complement_and_ln_e_is_monotone(
            n_a in 0u32..5_000,
            n_b in 0u32..5_000,
            rho in 0.02f64..0.98,
            k in 0.5f64..500.0,
            margin in 0.0f64..1.0,
        ) {
            let (na, nb) = (f64::from(n_a), f64::from(n_b));
            let (x, y) = null_split(rho, margin);
            let (a, b) = (k * x + na, k * y + nb);
            let (lo, up) = ln_beta_reg_tails(a, b, x, y, ln_beta(a, b));
            proptest::prop_assert!((lo.exp() + up.exp() - 1.0).abs() < 1e-12);
            let e = ln_e_one_sided(na, nb, rho, k, margin);
            proptest::prop_assert!(ln_e_one_sided(na, nb + 1.0, rho, k, margin) > e);
            proptest::prop_assert!(ln_e_one_sided(na + 1.0, nb, rho, k, margin) < e);
            proptest::prop_assert!(ln_e_one_sided(na, nb, rho, k, margin + 0.1) < e);
        }
    }

    #[test]
    fn deep_tails_stay_finite() {
        // statrs' beta_reg underflows here; the log-space path must not.
        let (lo, up) = ln_beta_reg_tails(5000.0, 100.0, 0.5, 0.5, ln_beta(5000.0, 100.0));
        assert!(lo.is_finite() && lo < -2000.0, "{lo}");
        assert_eq!(up, 0.0);
        let e = ln_e_one_sided(5000.0, 100.0, 0.5, 30.0, 0.0);
        assert!(e.is_finite() && e < -5.0, "{e}");
    }

    #[test]
    fn ln_1m_exp_both_branches() {
        assert!((ln_1m_exp(-1e-20) - (1e-20f64).ln()).abs() < 1e-12);
        assert!((ln_1m_exp(-50.0) + (-50.0f64).exp()).abs() < 1e-30);
        assert_eq!(ln_1m_exp(0.0), f64::NEG_INFINITY);
    }
}
