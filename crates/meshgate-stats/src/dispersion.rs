//! The dispersion factor phi of event counts, measured across pods (statistics.md, section 7a).
//!
//! The ratio e-process of [`crate::mixture`] assumes Poisson counts. Real counts are
//! overdispersed: a retried failure is counted two or three times, a pod's error rate varies
//! from one interval to the next, one pod bursts. Its e-value is then no longer an e-value: a
//! cluster of three errors moves it as three independent errors would.
//!
//! # What phi is, and why dividing by it helps
//!
//! Call a count X *sub-Poisson with factor phi* when `ln E[e^(t X / phi)] <= (E[X] / phi) (e^t -
//! 1)` for the t the test uses. Poisson counts are, with phi = 1. A compound Poisson count
//! (independent clusters, each of at most K events: retries) is, with phi = K: for x = k / K in
//! [0, 1], `e^(t x) - 1 <= x (e^t - 1)` (the chord of a convex function), so `E[e^(t X / K)] =
//! exp(nu E[e^(t k / K) - 1]) <= exp(nu E[k] / K (e^t - 1))`. A Poisson count whose rate varies
//! from one interval to the next with coefficient of variation c matches the bound to second
//! order with phi = 1 + mu c^2 (its variance over its mean, mu the expected count per pod and
//! interval). When both cohorts' counts are sub-Poisson with factor phi, the ratio test's
//! likelihood-ratio factor on the counts divided by phi has expectation at most one under the
//! null (the factor is `a^(X / phi) b^(Y / phi)` with `mu_X (a - 1) + mu_Y (b - 1) <= 0`), so the
//! e-process on `X / phi`, `Y / phi` keeps its level.
//!
//! # How phi is measured: pods as units
//!
//! Within one cohort and one workload, each pod serves the same traffic at the same time, so
//! Pearson's statistic across the pods, `sum (x_i - m_i)^2 / m_i` with `m_i` the pod's share of
//! the cohort's events, has expectation `k - 1` for Poisson counts *given their total* (k pods
//! with requests), and about `phi (k - 1)` for overdispersed ones. A regression that makes every
//! canary pod worse moves all the m_i alike and does not inflate it (a time-series estimate would
//! take the regression itself for dispersion). Persistent differences between pods inflate it:
//! that errs on the safe side.
//!
//! The estimate pools every cohort, stratum and tick so far, including the tick about to be
//! judged. That keeps the level for Poisson counts *exactly*: given each cohort's total, the split
//! of its events among its pods is multinomial with the pods' shares of the requests, whatever
//! the ratio between the cohorts (the split is ancillary), so any phi computed from the splits
//! is independent of the totals the test reads. For overdispersed counts the split carries the
//! dispersion of this very tick: a first tick of a busy pod with clustered errors is judged with
//! its own clusters in view.
//!
//! Poisson noise in the statistic would cost power (phi > 1 by chance), so phi is Pearson's
//! estimate less [`NOISE_SDS`] standard deviations of the statistic under Poisson counts
//! (`2 (k - 1) (1 - 1/n)` per group of n events among k pods: a group with one event carries no
//! information and adds no noise), and never below one. It is an estimate, not a bound: the level
//! is approximate where the dispersion has not shown in the pods' splits yet (a burst shape that
//! has never happened before moves the test as Poisson counts would), where it is only in time
//! (every pod of a cohort bursting together), and where higher moments matter more than the
//! variance. docs/benchmarks.md measures the level on overdispersed streams.

use serde::{Deserialize, Serialize};

/// Standard deviations of Poisson noise taken off Pearson's statistic before it counts as
/// dispersion.
pub const NOISE_SDS: f64 = 2.0;

/// Pooled Pearson statistic across pods: the state of one test's phi.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Dispersion {
    /// Sum of the Pearson statistics.
    pub x2: f64,
    /// Their degrees of freedom.
    pub df: f64,
    /// The statistic's variance for Poisson counts.
    #[serde(default)]
    pub var: f64,
}

impl Dispersion {
    /// The factor to divide this tick's counts by: at least one.
    pub fn phi(&self) -> f64 {
        if self.df <= 0.0 {
            return 1.0;
        }
        let phi = (self.x2 - NOISE_SDS * self.var.sqrt()) / self.df;
        if phi.is_finite() {
            phi.max(1.0)
        } else {
            1.0
        }
    }

    /// Learn one cohort's pods in one stratum and tick: each pod's (events, exposure). Pods
    /// without exposure, non-finite or negative values, and groups with no events or fewer than
    /// two pods teach nothing.
    pub fn add<I>(&mut self, pods: I)
    where
        I: IntoIterator<Item = (f64, f64)>,
        I::IntoIter: Clone,
    {
        let pods = pods.into_iter();
        let usable = |&(e, x): &(f64, f64)| e >= 0.0 && e.is_finite() && x > 0.0 && x.is_finite();
        let (mut events, mut exposure, mut k) = (0.0, 0.0, 0u32);
        for (e, x) in pods.clone().filter(usable) {
            events += e;
            exposure += x;
            k += 1;
        }
        if k < 2 || events <= 0.0 {
            return;
        }
        let rate = events / exposure;
        let x2: f64 = pods
            .filter(usable)
            .map(|(e, x)| {
                let m = x * rate;
                (e - m) * (e - m) / m
            })
            .sum();
        if x2.is_finite() {
            let df = f64::from(k - 1);
            self.x2 += x2;
            self.df += df;
            self.var += 2.0 * df * (1.0 - 1.0 / events.max(1.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed: one event among five equal pods is exactly k - 1 (no information); three
    /// events in one pod of five, 12 on 4 degrees of freedom.
    #[test]
    fn pearson_by_hand() {
        let mut d = Dispersion::default();
        d.add([
            (1.0, 10.0),
            (0.0, 10.0),
            (0.0, 10.0),
            (0.0, 10.0),
            (0.0, 10.0),
        ]);
        assert!((d.x2 - 4.0).abs() < 1e-12 && d.df == 4.0, "{d:?}");
        let mut d = Dispersion::default();
        d.add([
            (3.0, 10.0),
            (0.0, 10.0),
            (0.0, 10.0),
            (0.0, 10.0),
            (0.0, 10.0),
        ]);
        assert!((d.x2 - 12.0).abs() < 1e-12 && d.df == 4.0, "{d:?}");
        // Noise: 2 * 4 * (1 - 1/3) = 16/3; phi = (12 - 2 sqrt(16/3)) / 4.
        assert!((d.phi() - (12.0 - 2.0 * (16.0f64 / 3.0).sqrt()) / 4.0).abs() < 1e-12);
        // One event carries no noise and no information: phi stays at one.
        let mut one = Dispersion::default();
        one.add([(1.0, 10.0), (0.0, 10.0), (0.0, 10.0)]);
        assert!(one.var == 0.0 && (one.phi() - 1.0).abs() < 1e-12, "{one:?}");
        // Unequal exposures: m = (2, 6), x2 = (4-2)^2/2 + (4-6)^2/6 = 2 + 2/3.
        let mut d = Dispersion::default();
        d.add([(4.0, 1.0), (4.0, 3.0)]);
        assert!(
            (d.x2 - (2.0 + 2.0 / 3.0)).abs() < 1e-12 && d.df == 1.0,
            "{d:?}"
        );
    }

    #[test]
    fn nothing_to_learn_from_is_ignored() {
        let mut d = Dispersion::default();
        d.add([(0.0, 10.0), (0.0, 10.0)]);
        d.add([(5.0, 10.0)]);
        d.add([(5.0, 10.0), (1.0, 0.0)]);
        d.add([(f64::NAN, 10.0), (1.0, 10.0), (2.0, f64::INFINITY)]);
        assert_eq!(d, Dispersion::default());
        assert_eq!(d.phi(), 1.0);
    }

    /// Poisson pods: phi stays near one; clusters of three (every event counted three times):
    /// phi near three. Simulated with a small generator of our own (no dependency).
    #[test]
    fn phi_tracks_the_variance_over_the_mean() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut uniform = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut poisson = |mean: f64| {
            let (l, mut k, mut p) = ((-mean).exp(), 0.0, 1.0);
            loop {
                p *= uniform();
                if p <= l {
                    return k;
                }
                k += 1.0;
            }
        };
        for (cluster, lo, hi) in [(1.0, 0.9, 1.1), (3.0, 2.6, 3.4)] {
            let mut d = Dispersion::default();
            for _ in 0..2000 {
                let pods: Vec<(f64, f64)> =
                    (0..5).map(|_| (cluster * poisson(0.6), 750.0)).collect();
                d.add(pods);
            }
            let phi = d.phi();
            assert!((lo..hi).contains(&phi), "clusters of {cluster}: phi {phi}");
        }
    }
}
