//! The shape every sequential test of a canary shares: fed per-scrape counts, read as e-values.

/// A sequential test fed baseline (A) and canary (B) events and exposure, one scrape (or unit) at
/// a time, with an anytime-valid NO-GO e-value and GO certificate. Implemented by the rate-ratio
/// mixture ([`crate::mixture::RatioEProcess`]) and the robust betting test
/// ([`crate::robust::RobustEProcess`]).
pub trait SequentialTest {
    /// One scrape interval: events and exposure per cohort; what cannot inform the test is
    /// skipped and counted by the implementation.
    fn observe(&mut self, events_a: f64, events_b: f64, exposure_a: f64, exposure_b: f64);

    /// ln of the NO-GO e-value (H0: canary not worse beyond the margin).
    fn ln_e(&self) -> f64;

    /// ln of the GO e-value (H0: canary worse beyond the margin).
    fn ln_e_not_worse(&self) -> f64;

    /// The level the test was built with.
    fn alpha(&self) -> f64;

    /// The NO-GO e-value reached 1/alpha.
    fn rejects(&self) -> bool {
        self.ln_e() >= (1.0 / self.alpha()).ln()
    }

    /// The GO e-value reached 1/alpha: canary not worse beyond the margin.
    fn certifies_not_worse(&self) -> bool {
        self.ln_e_not_worse() >= (1.0 / self.alpha()).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::SequentialTest;
    use crate::mixture::{RatioEProcess, RatioParams};
    use crate::robust::{RobustEProcess, RobustParams};

    /// Drives any test through the trait alone: the same regressed stream must end in NO-GO.
    fn feed(t: &mut dyn SequentialTest) {
        for _ in 0..500 {
            t.observe(10.0, 30.0, 1000.0, 1000.0);
        }
    }

    #[test]
    fn both_tests_reject_a_tripled_rate_through_the_trait() {
        let mut ratio = RatioEProcess::try_new(RatioParams {
            alpha: 0.05,
            margin: 0.25,
            target_events: 100.0,
        })
        .unwrap();
        let mut robust = RobustEProcess::try_new(RobustParams {
            alpha: 0.05,
            margin: 0.25,
        })
        .unwrap();
        for t in [&mut ratio as &mut dyn SequentialTest, &mut robust] {
            feed(t);
            assert!(t.rejects() && !t.certifies_not_worse(), "{}", t.ln_e());
            assert_eq!(t.alpha(), 0.05);
        }
    }

    #[test]
    fn try_new_names_the_bad_parameter() {
        let e = RatioEProcess::try_new(RatioParams {
            alpha: 0.05,
            margin: -1.0,
            target_events: 100.0,
        })
        .unwrap_err();
        assert_eq!(e.name, "margin");
        let e = RobustEProcess::try_new(RobustParams {
            alpha: 0.5,
            margin: 0.1,
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "alpha must lie in (0, 0.5), got 0.5");
    }
}
