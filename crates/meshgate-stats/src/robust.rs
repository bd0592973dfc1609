//! A distribution-free e-process on the canary/baseline rate comparison: betting on the bounded
//! per-unit difference of rates (Waudby-Smith & Ramdas 2023), valid without any Poisson
//! assumption. The `robust = true` check option and the `meshgate-robust` benchmark row.
//!
//! # Units and the statistic
//!
//! A *unit* is one observation of both cohorts over the same stretch of time: in the daemon one
//! scrape interval of the cohorts (the cohort deltas of one tick); a caller with per-pod data may
//! feed one unit per (canary pod, baseline pod) pair instead. For unit i with events e and
//! exposure x (requests) per cohort, r = e / x is a rate in [0, 1] (errors or requests slower
//! than a bound are among the requests), and
//!
//! ```text
//! Z_i = r_B,i / (1 + m) - r_A,i        in [-1, 1 / (1 + m)]
//! ```
//!
//! # Why it is valid (the argument)
//!
//! H0 (canary not worse beyond the margin m): for every unit, given everything observed before
//! it (and the unit's exposures), E\[r_B,i\] <= (1 + m) E\[r_A,i\], i.e. E[Z_i | past] <= 0. Nothing
//! else is assumed: the events may be overdispersed, clumped by retries, bursty, come from one
//! noisy pod, follow any per-interval error-rate distribution; the only requirement is that a
//! unit's expected difference given the past is <= 0 (e.g. units conditionally independent with
//! those means). The NO-GO wealth is
//!
//! ```text
//! W_n = prod_{i <= n} (1 + lambda_i Z_i),   0 <= lambda_i <= CAP < 1,
//! ```
//!
//! with lambda_i computed from units 1..i-1 only (predictable). Each factor is >= 1 - CAP > 0
//! because Z_i >= -1, and E[1 + lambda_i Z_i | past] = 1 + lambda_i E[Z_i | past] <= 1, so W is
//! a non-negative supermartingale under H0 with W_0 = 1; by Ville's inequality
//! P(sup_n W_n >= 1/alpha) <= alpha. The GO certificate is the mirror image: H0' (canary worse
//! beyond the margin) is E[Z_i | past] >= 0, the wealth prod (1 - mu_i Z_i) with
//! 0 <= mu_i <= CAP (1 + m) (each factor >= 1 - CAP since -Z_i >= -1 / (1 + m)), certified at
//! 1/alpha.
//!
//! The bets are aGRAPA (Waudby-Smith & Ramdas 2023, section 5): lambda_i = S1 / (S0 + S2)
//! clipped to [0, CAP], S1 and S2 the sums of Z and Z^2 over earlier units, S0 a prior second
//! moment. The bets affect only power, never validity.
//!
//! # The price of validity
//!
//! The factor must stay non-negative for a unit where every baseline request failed (r_A = 1),
//! which nothing rules out without a model; so lambda can never exceed 1, and the wealth grows by
//! at most about lambda E\[Z\] per unit. For rare events (0.1% errors) E\[Z\] is of the order of the
//! rates themselves (0.003 for 0.1% -> 0.5% at margin 0.25), so about ln(1/alpha) / 0.003 ~ 1,000
//! units are needed, where the Poisson test needs ~30 events. This is not a weakness of the bets:
//! any test of a *mean* that holds alpha whatever the distribution of per-unit rates must allow
//! for the baseline's mean being carried by rare, large values (an outage minute, a noisy pod's
//! burst), and can only rule that out slowly. The test is fast when rates are large (tail
//! boundaries near the median, error budgets of percents) and slow for rare events; it is the
//! check option for streams on which the Poisson test is known not to hold alpha.

use serde::{Deserialize, Serialize};

use crate::params::{self, ParamsError};
use crate::SequentialTest;

/// Largest bet fraction: one unit can lose at most ln(1 / (1 - CAP)) of log-wealth.
pub const CAP: f64 = 0.9;
/// Prior second moment S0 of Z in the aGRAPA bet (one pseudo-unit with |Z| = 0.01).
pub const PRIOR_SECOND_MOMENT: f64 = 1e-4;

/// Settings of one robust test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobustParams {
    /// Level of the NO-GO test and of the GO certificate, in (0, 0.5).
    pub alpha: f64,
    /// Tolerated relative regression m: H0 is E\[r_B\] <= (1 + m) E\[r_A\].
    pub margin: f64,
}

impl RobustParams {
    /// Checks the ranges the test relies on ([`crate::params`]).
    pub fn validate(&self) -> Result<(), ParamsError> {
        params::ALPHA.check("alpha", self.alpha)?;
        params::MARGIN.check("margin", self.margin)
    }
}

/// Betting e-process on the per-unit rate difference; see the module documentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobustEProcess {
    params: RobustParams,
    /// ln of the NO-GO wealth.
    ln_w: f64,
    /// ln of the GO (not-worse) wealth.
    ln_w_go: f64,
    /// Sum of Z over usable units.
    s1: f64,
    /// Sum of Z^2 over usable units.
    s2: f64,
    /// Usable units.
    units: u64,
    /// Units skipped because a cohort had no exposure.
    skipped: u64,
    /// Units whose events exceeded the exposure (rate clipped to 1).
    clipped: u64,
    /// Totals over usable units: baseline events, canary events, baseline and canary exposure.
    totals: [f64; 4],
}

impl SequentialTest for RobustEProcess {
    fn observe(&mut self, events_a: f64, events_b: f64, exposure_a: f64, exposure_b: f64) {
        RobustEProcess::observe(self, events_a, events_b, exposure_a, exposure_b);
    }

    fn ln_e(&self) -> f64 {
        self.ln_w
    }

    fn ln_e_not_worse(&self) -> f64 {
        self.ln_w_go
    }

    fn alpha(&self) -> f64 {
        self.params.alpha
    }

    fn rejects(&self) -> bool {
        RobustEProcess::rejects(self)
    }

    fn certifies_not_worse(&self) -> bool {
        RobustEProcess::certifies_not_worse(self)
    }
}

impl RobustEProcess {
    /// A fresh test (wealth 1), or the first parameter out of its range.
    pub fn try_new(params: RobustParams) -> Result<Self, ParamsError> {
        params.validate()?;
        Ok(RobustEProcess {
            params,
            ln_w: 0.0,
            ln_w_go: 0.0,
            s1: 0.0,
            s2: 0.0,
            units: 0,
            skipped: 0,
            clipped: 0,
            totals: [0.0; 4],
        })
    }

    /// A fresh test for parameters validated before (the analysis builds its tests from checked
    /// configuration).
    ///
    /// # Panics
    /// When `params` fail [`RobustParams::validate`]; use [`Self::try_new`] for unchecked ones.
    pub fn new(params: RobustParams) -> Self {
        match Self::try_new(params) {
            Ok(t) => t,
            Err(e) => panic!("invalid robust test parameters: {e}"),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &RobustParams {
        &self.params
    }

    /// The NO-GO bet for the next unit (predictable: from earlier units only).
    pub fn next_bet(&self) -> f64 {
        (self.s1 / (PRIOR_SECOND_MOMENT + self.s2)).clamp(0.0, CAP)
    }

    /// The GO bet for the next unit.
    pub fn next_bet_go(&self) -> f64 {
        (-self.s1 / (PRIOR_SECOND_MOMENT + self.s2)).clamp(0.0, CAP * (1.0 + self.params.margin))
    }

    /// One unit: baseline (A) and canary (B) events and exposure over the same stretch of time.
    /// A unit where a cohort has no exposure carries no information and is skipped (counted).
    pub fn observe(&mut self, events_a: f64, events_b: f64, exposure_a: f64, exposure_b: f64) {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        let pos = |v: f64| v.is_finite() && v > 0.0;
        if !(ok(events_a) && ok(events_b) && pos(exposure_a) && pos(exposure_b)) {
            self.skipped += 1;
            return;
        }
        let rate = |e: f64, x: f64, clipped: &mut u64| {
            if e > x {
                *clipped += 1;
                1.0
            } else {
                e / x
            }
        };
        let ra = rate(events_a, exposure_a, &mut self.clipped);
        let rb = rate(events_b, exposure_b, &mut self.clipped);
        let z = rb / (1.0 + self.params.margin) - ra;
        let (lambda, mu) = (self.next_bet(), self.next_bet_go());
        self.ln_w += (lambda * z).ln_1p();
        self.ln_w_go += (-mu * z).ln_1p();
        self.s1 += z;
        self.s2 += z * z;
        self.units += 1;
        for (t, v) in self
            .totals
            .iter_mut()
            .zip([events_a, events_b, exposure_a, exposure_b])
        {
            *t += v;
        }
    }

    /// ln of the NO-GO e-value (H0: canary not worse beyond the margin).
    pub fn ln_e(&self) -> f64 {
        self.ln_w
    }

    /// ln of the GO e-value (H0: canary worse beyond the margin).
    pub fn ln_e_not_worse(&self) -> f64 {
        self.ln_w_go
    }

    /// The NO-GO test crossed 1/alpha.
    pub fn rejects(&self) -> bool {
        self.ln_w >= (1.0 / self.params.alpha).ln()
    }

    /// The GO certificate crossed 1/alpha: canary not worse beyond the margin.
    pub fn certifies_not_worse(&self) -> bool {
        self.ln_w_go >= (1.0 / self.params.alpha).ln()
    }

    /// Usable units, skipped units (no exposure on a side), units with a rate clipped to 1.
    pub fn unit_counts(&self) -> (u64, u64, u64) {
        (self.units, self.skipped, self.clipped)
    }

    /// Totals over usable units: (baseline events, canary events, baseline exposure, canary
    /// exposure).
    pub fn totals(&self) -> (f64, f64, f64, f64) {
        let [a, b, c, d] = self.totals;
        (a, b, c, d)
    }

    /// Mean of Z over the usable units (the effect estimate on the test's scale), if any.
    pub fn mean_difference(&self) -> Option<f64> {
        (self.units > 0).then(|| self.s1 / self.units as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn p(margin: f64) -> RobustParams {
        RobustParams {
            alpha: 0.05,
            margin,
        }
    }

    #[test]
    fn first_bet_is_zero_and_bets_follow_the_past() {
        let mut t = RobustEProcess::new(p(0.25));
        assert_eq!(t.next_bet(), 0.0);
        t.observe(0.0, 10.0, 100.0, 100.0);
        // Wealth unchanged by the first unit (bet 0), then the bet is S1 / (S0 + S2) clipped.
        assert_eq!(t.ln_e(), 0.0);
        let z: f64 = 0.1 / 1.25;
        assert!((t.next_bet() - (z / (PRIOR_SECOND_MOMENT + z * z)).min(CAP)).abs() < 1e-15);
        assert_eq!(t.next_bet_go(), 0.0);
    }

    #[test]
    fn skips_units_without_exposure_and_clips_impossible_rates() {
        let mut t = RobustEProcess::new(p(0.0));
        t.observe(1.0, 1.0, 0.0, 10.0);
        t.observe(1.0, f64::NAN, 10.0, 10.0);
        t.observe(20.0, 1.0, 10.0, 10.0);
        assert_eq!(t.unit_counts(), (1, 2, 1));
        assert_eq!(t.mean_difference(), Some(0.1 - 1.0));
    }

    #[test]
    fn detects_a_large_shift_and_certifies_a_clean_canary() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut bad = RobustEProcess::new(p(0.25));
        let mut good = RobustEProcess::new(p(0.25));
        for _ in 0..400 {
            let n = 1000.0;
            let binom = |rng: &mut SmallRng, q: f64| {
                (0..1000).filter(|_| rng.random::<f64>() < q).count() as f64
            };
            let (a, b) = (binom(&mut rng, 0.1), binom(&mut rng, 0.2));
            bad.observe(a, b, n, n);
            let (a, b) = (binom(&mut rng, 0.1), binom(&mut rng, 0.05));
            good.observe(a, b, n, n);
        }
        assert!(bad.rejects(), "{}", bad.ln_e());
        assert!(!bad.certifies_not_worse());
        assert!(good.certifies_not_worse(), "{}", good.ln_e_not_worse());
        assert!(!good.rejects());
    }

    /// Under the least favourable null (E[Z] = 0 exactly) with heavy, skewed per-unit rates the
    /// crossing rate stays below alpha: Ville's inequality, measured.
    #[test]
    fn holds_alpha_on_skewed_units_at_the_null_boundary() {
        let mut rng = SmallRng::seed_from_u64(11);
        let runs = 2000;
        let mut crossed = 0;
        for _ in 0..runs {
            let mut t = RobustEProcess::new(p(0.25));
            for _ in 0..400 {
                // Baseline: rate 0.001 most of the time, 0.2 in 1% of units (mean 0.00299);
                // canary at exactly (1 + m) times that mean, smooth.
                let ra = if rng.random::<f64>() < 0.01 {
                    0.2
                } else {
                    0.001
                };
                let mean_a = 0.99 * 0.001 + 0.01 * 0.2;
                let rb = 1.25 * mean_a * (0.5 + rng.random::<f64>());
                t.observe(ra * 1000.0, rb * 1000.0, 1000.0, 1000.0);
                if t.rejects() {
                    crossed += 1;
                    break;
                }
            }
        }
        // alpha = 0.05; the binomial sd at 2000 runs is 0.5%.
        assert!((crossed as f64) / (runs as f64) <= 0.05, "{crossed}");
    }
}
