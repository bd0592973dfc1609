//! Fixed-horizon statistics shown beside the e-values for explanation only, never for the decision (statistics.md §5).
//!
//! These are the numbers users know from Kayenta and scipy. Each is valid for one look at a
//! fixed sample; repeated every scrape they inflate false alarms (§0: ~36% at a nominal 5%).
//! All are computed from counts in f64 / log space: histograms are never expanded into samples.

use statrs::function::erf::erfc;
use statrs::function::gamma::gamma_ur;

use super::betabinom::ln_beta;

/// Binned Mann-Whitney U of canary against baseline (scipy `mannwhitneyu(canary, baseline,
/// alternative='greater', method='asymptotic')`, continuity and tie corrections included).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MannWhitney {
    /// U_B = sum_j b_j (A_<j + a_j / 2): canary-over-baseline pairs, ties counted half.
    pub u_b: f64,
    /// (U_B - n_A n_B / 2 - 0.5) / sigma with the tie-corrected sigma.
    pub z: f64,
    /// One-sided p-value for "canary values are stochastically greater".
    pub p_greater: f64,
    /// Common-language effect size U_B / (n_A n_B): P(canary > baseline) + P(tie) / 2.
    pub cles: f64,
}

/// Mann-Whitney U on the bucket counts of two histograms with the same bucket bounds
/// (`baseline[j]`, `canary[j]` = requests in bucket j, buckets in increasing order).
///
/// sigma^2 = (n_A n_B / 12) [(N + 1) - sum_j (c_j^3 - c_j) / (N (N - 1))], c_j = a_j + b_j.
/// None when the slices differ in length, a count is negative or non-finite, a cohort is
/// empty, or every observation falls in one bucket (sigma = 0).
pub fn mann_whitney_binned(baseline: &[f64], canary: &[f64]) -> Option<MannWhitney> {
    if baseline.len() != canary.len() || !counts_ok(baseline) || !counts_ok(canary) {
        return None;
    }
    let n_a: f64 = baseline.iter().sum();
    let n_b: f64 = canary.iter().sum();
    let n = n_a + n_b;
    if n_a <= 0.0 || n_b <= 0.0 {
        return None;
    }
    let mut below = 0.0;
    let mut u_b = 0.0;
    let mut ties = 0.0;
    for (&a, &b) in baseline.iter().zip(canary) {
        u_b += b * (below + 0.5 * a);
        below += a;
        let c = a + b;
        // c^3 - c as c (c - 1)(c + 1): exact in f64 while c < 2^17, and never cancels.
        ties += c * (c - 1.0) * (c + 1.0);
    }
    let var = n_a * n_b / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if var.is_nan() || var <= 0.0 {
        return None;
    }
    let z = (u_b - n_a * n_b / 2.0 - 0.5) / var.sqrt();
    Some(MannWhitney {
        u_b,
        z,
        p_greater: normal_sf(z),
        cles: u_b / (n_a * n_b),
    })
}

/// Pooled two-proportion z test of the canary's event rate against the baseline's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TwoProportion {
    /// (p_B - p_A) / sqrt(p (1 - p) (1/n_A + 1/n_B)) with p the pooled rate.
    pub z: f64,
    /// One-sided p-value for "canary rate is greater".
    pub p_greater: f64,
    /// Two-sided p-value.
    pub p_two_sided: f64,
}

/// Two-proportion z test for x_A events in n_A trials (baseline) against x_B in n_B (canary).
/// None when a cohort has no trials, a count is invalid, or the pooled rate is 0 or 1.
pub fn two_proportion_z(x_a: f64, n_a: f64, x_b: f64, n_b: f64) -> Option<TwoProportion> {
    let valid = |x: f64, n: f64| x >= 0.0 && n > 0.0 && x <= n && n.is_finite();
    if !(valid(x_a, n_a) && valid(x_b, n_b)) {
        return None;
    }
    let pooled = (x_a + x_b) / (n_a + n_b);
    let se = (pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)).sqrt();
    if se.is_nan() || se <= 0.0 {
        return None;
    }
    let z = (x_b / n_b - x_a / n_a) / se;
    Some(TwoProportion {
        z,
        p_greater: normal_sf(z),
        p_two_sided: erfc(z.abs() / std::f64::consts::SQRT_2).min(1.0),
    })
}

/// Fisher's exact test on [[x_A, n_A - x_A], [x_B, n_B - x_B]].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fisher {
    /// One-sided p-value for "canary rate is greater" (scipy `alternative='less'` on this
    /// table, whose odds ratio is baseline over canary).
    pub p_greater: f64,
    /// One-sided p-value for "canary rate is smaller".
    pub p_less: f64,
    /// Two-sided p-value: the probability of all tables no more likely than the observed one
    /// (relative tolerance 1e-7 for ties, as R; scipy uses 1e-14, which only matters for
    /// probabilities equal to ~1e-14 that rounding cannot tell apart anyway).
    pub p_two_sided: f64,
}

/// Fisher's exact test for x_A events in n_A trials (baseline) against x_B in n_B (canary).
///
/// Conditional on the margins, the canary's count X is hypergeometric (population n_A + n_B,
/// x_A + x_B events, n_B draws). Probabilities are summed in log space outwards from the
/// observed count (or the crossing point of the other tail) until terms stop mattering, so
/// the cost is proportional to the tails' spread, not to n. None when x > n for a cohort.
pub fn fisher_exact(x_a: u64, n_a: u64, x_b: u64, n_b: u64) -> Option<Fisher> {
    if x_a > n_a || x_b > n_b {
        return None;
    }
    let h = Hypergeometric::new(n_a + n_b, x_a + x_b, n_b);
    let obs = x_b;
    let ln_obs = h.ln_pmf(obs);
    let upper = h.ln_tail_from(obs, true);
    let lower = h.ln_tail_from(obs, false);
    // Other side: the tail beyond the first count, moving away from obs past the mode, whose
    // probability is at most the observed one.
    let ln_cut = ln_obs + 1e-7f64.ln_1p();
    let mode = h.mode();
    let two = if h.ln_pmf(mode) <= ln_cut {
        // The observed table is (tied for) the most likely: every table counts.
        0.0
    } else if obs >= mode {
        // Lower side: largest k < mode with pmf(k) <= pmf(obs); pmf rises on [lo, mode].
        match h.last_at_most(ln_cut, h.lo, mode) {
            Some(k) => log_add(upper, h.ln_tail_from(k, false)),
            None => upper,
        }
    } else {
        match h.first_at_most(ln_cut, mode, h.hi) {
            Some(k) => log_add(lower, h.ln_tail_from(k, true)),
            None => lower,
        }
    };
    Some(Fisher {
        p_greater: upper.exp().min(1.0),
        p_less: lower.exp().min(1.0),
        p_two_sided: two.exp().min(1.0),
    })
}

/// Pearson chi-square test of homogeneity on a 2 x K table (scipy `chi2_contingency`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChiSquare {
    /// Pearson statistic (with Yates' correction when df = 1, as scipy does by default).
    pub statistic: f64,
    /// Degrees of freedom: non-empty columns - 1.
    pub df: usize,
    /// Upper-tail p-value.
    pub p: f64,
}

/// Chi-square test on baseline and canary counts per column (e.g. histogram buckets).
/// Columns empty in both rows are dropped (they have no expected count). None when the
/// slices differ in length, a count is invalid, a row is empty, or fewer than two columns
/// remain.
pub fn chi_square_2xk(baseline: &[f64], canary: &[f64]) -> Option<ChiSquare> {
    if baseline.len() != canary.len() || !counts_ok(baseline) || !counts_ok(canary) {
        return None;
    }
    let cols: Vec<(f64, f64)> = baseline
        .iter()
        .zip(canary)
        .map(|(&a, &b)| (a, b))
        .filter(|&(a, b)| a + b > 0.0)
        .collect();
    let n_a: f64 = cols.iter().map(|c| c.0).sum();
    let n_b: f64 = cols.iter().map(|c| c.1).sum();
    if cols.len() < 2 || n_a <= 0.0 || n_b <= 0.0 {
        return None;
    }
    let df = cols.len() - 1;
    let n = n_a + n_b;
    let yates = df == 1;
    let mut statistic = 0.0;
    for &(a, b) in &cols {
        let c = a + b;
        for (obs, row) in [(a, n_a), (b, n_b)] {
            let exp = row * c / n;
            let mut d = (obs - exp).abs();
            if yates {
                // scipy moves each observed count up to 0.5 towards its expectation.
                d -= d.min(0.5);
            }
            statistic += d * d / exp;
        }
    }
    let p = if statistic > 0.0 {
        gamma_ur(df as f64 / 2.0, statistic / 2.0)
    } else {
        1.0
    };
    Some(ChiSquare { statistic, df, p })
}

fn counts_ok(v: &[f64]) -> bool {
    v.iter().all(|&c| c >= 0.0 && c.is_finite())
}

/// Standard normal upper tail, accurate far into the tail (erfc, not 1 - cdf).
fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// ln(e^x + e^y).
fn log_add(x: f64, y: f64) -> f64 {
    let (hi, lo) = if x > y { (x, y) } else { (y, x) };
    if lo == f64::NEG_INFINITY {
        hi
    } else {
        hi + (lo - hi).exp().ln_1p()
    }
}

/// Hypergeometric distribution of the successes among `draws` draws from `total` items of which
/// `successes` are successes; support [lo, hi].
struct Hypergeometric {
    total: u64,
    successes: u64,
    draws: u64,
    lo: u64,
    hi: u64,
}

impl Hypergeometric {
    fn new(total: u64, successes: u64, draws: u64) -> Self {
        Hypergeometric {
            total,
            successes,
            draws,
            lo: (draws + successes).saturating_sub(total),
            hi: successes.min(draws),
        }
    }

    /// ln C(K, k) + ln C(N - K, n - k) - ln C(N, n), via the accurate ln B:
    /// ln C(n, k) = -ln(n + 1) - ln B(n - k + 1, k + 1).
    fn ln_pmf(&self, k: u64) -> f64 {
        if k < self.lo || k > self.hi {
            return f64::NEG_INFINITY;
        }
        let ln_choose = |n: u64, k: u64| -> f64 {
            let (n, k) = (n as f64, k as f64);
            -(n + 1.0).ln() - ln_beta(n - k + 1.0, k + 1.0)
        };
        ln_choose(self.successes, k) + ln_choose(self.total - self.successes, self.draws - k)
            - ln_choose(self.total, self.draws)
    }

    /// Most likely count (a mode of the distribution), clamped to the support.
    fn mode(&self) -> u64 {
        let m = ((self.draws + 1) as f64 * (self.successes + 1) as f64 / (self.total + 2) as f64)
            .floor() as u64;
        m.clamp(self.lo, self.hi)
    }

    /// ln P(X >= k) (upward) or ln P(X <= k) (downward), summing from k outwards. Terms past
    /// the mode only shrink, so the sum stops once they fall 40 nats below it; a tail that
    /// contains the mode is taken as the complement of the other, which does not.
    fn ln_tail_from(&self, k: u64, upward: bool) -> f64 {
        let mode = self.mode();
        let contains_mode = if upward { k <= mode } else { k >= mode };
        if contains_mode {
            let other = match upward {
                true if k > self.lo => self.ln_tail_from(k - 1, false),
                false if k < self.hi => self.ln_tail_from(k + 1, true),
                _ => return 0.0,
            };
            return (-other.exp()).ln_1p().min(0.0);
        }
        let mut sum = f64::NEG_INFINITY;
        let mut j = k;
        loop {
            let t = self.ln_pmf(j);
            sum = log_add(sum, t);
            if t < sum - 40.0 {
                break;
            }
            if upward {
                if j == self.hi {
                    break;
                }
                j += 1;
            } else {
                if j == self.lo {
                    break;
                }
                j -= 1;
            }
        }
        sum
    }

    /// Largest k in [from, to) with ln pmf(k) <= cut, where pmf increases on [from, to].
    fn last_at_most(&self, cut: f64, from: u64, to: u64) -> Option<u64> {
        if from >= to || self.ln_pmf(from) > cut {
            return None;
        }
        // Invariant: pmf(lo) <= cut < pmf(hi).
        let (mut lo, mut hi) = (from, to);
        if self.ln_pmf(hi) <= cut {
            return Some(hi.saturating_sub(1).max(from));
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.ln_pmf(mid) <= cut {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    }

    /// Smallest k in (from, to] with ln pmf(k) <= cut, where pmf decreases on [from, to].
    fn first_at_most(&self, cut: f64, from: u64, to: u64) -> Option<u64> {
        if from >= to || self.ln_pmf(to) > cut {
            return None;
        }
        // Invariant: pmf(lo) > cut >= pmf(hi).
        let (mut lo, mut hi) = (from, to);
        if self.ln_pmf(lo) <= cut {
            return Some((lo + 1).min(to));
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.ln_pmf(mid) <= cut {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [f64; 10] = [5.0, 40.0, 300.0, 900.0, 600.0, 120.0, 30.0, 5.0, 0.0, 1.0];
    const B: [f64; 10] = [3.0, 35.0, 250.0, 850.0, 640.0, 160.0, 50.0, 12.0, 2.0, 1.0];

    #[test]
    fn section6_mann_whitney() {
        let mw = mann_whitney_binned(&A, &B).unwrap();
        assert_eq!(mw.u_b, 2_147_953.0);
        assert!(
            (mw.p_greater - 1.41662e-05).abs() < 5e-11,
            "{}",
            mw.p_greater
        );
        assert!((mw.cles - 0.535916).abs() < 5e-7, "{}", mw.cles);
    }

    #[test]
    fn section6_chi_square() {
        let c = chi_square_2xk(&A, &B).unwrap();
        assert_eq!(c.df, 9);
        assert!((c.p - 0.0048134).abs() < 5e-8, "{}", c.p);
        // An extra column empty in both rows changes nothing.
        let mut a = A.to_vec();
        let mut b = B.to_vec();
        a.push(0.0);
        b.push(0.0);
        assert_eq!(chi_square_2xk(&a, &b), Some(c));
    }

    #[test]
    fn degenerate_inputs_give_none() {
        assert!(mann_whitney_binned(&[1.0, 2.0], &[1.0]).is_none());
        assert!(mann_whitney_binned(&[0.0, 0.0], &[1.0, 2.0]).is_none());
        assert!(mann_whitney_binned(&[3.0, 0.0], &[2.0, 0.0]).is_none());
        assert!(two_proportion_z(0.0, 10.0, 0.0, 10.0).is_none());
        assert!(two_proportion_z(1.0, 0.0, 0.0, 10.0).is_none());
        assert!(fisher_exact(3, 2, 0, 1).is_none());
        assert!(chi_square_2xk(&[1.0, 0.0], &[2.0, 0.0]).is_none());
        assert!(chi_square_2xk(&[-1.0, 1.0], &[2.0, 1.0]).is_none());
    }

    #[test]
    fn fisher_tails_are_consistent() {
        for &(xa, na, xb, nb) in &[
            (1u64, 1000u64, 9u64, 1000u64),
            (5, 20, 5, 20),
            (0, 50, 0, 70),
        ] {
            let f = fisher_exact(xa, na, xb, nb).unwrap();
            assert!(f.p_greater <= 1.0 && f.p_less <= 1.0 && f.p_two_sided <= 1.0);
            // The two one-sided tails overlap in the observed table.
            let h = Hypergeometric::new(na + nb, xa + xb, nb);
            let obs = h.ln_pmf(xb).exp();
            assert!((f.p_greater + f.p_less - 1.0 - obs).abs() < 1e-12);
            assert!(f.p_two_sided >= f.p_greater.min(f.p_less) - 1e-15);
        }
    }
}
