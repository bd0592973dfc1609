//! What the judge's simulation tests share: settings, data quality, a Poisson draw.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand_distr::{Distribution, Poisson};

use super::{DataQuality, Design, Settings};

/// The shipped defaults that matter here (alpha 0.05, 5 min minimum, no GO by SLO), with the
/// given maximum duration and design.
pub fn settings(max_duration: Duration, design: Design) -> Settings {
    Settings {
        alpha: 0.05,
        min_duration: Duration::from_secs(300),
        max_duration,
        min_exposure: 100.0,
        slo_go: false,
        go_certificate: Default::default(),
        design,
        soak: Duration::ZERO,
    }
}

/// Both cohorts with `targets` fresh targets and nothing wrong.
pub fn quality(targets: usize) -> DataQuality {
    DataQuality::all_fresh(targets)
}

/// A Poisson count (zero for a zero mean).
pub fn draw(rng: &mut SmallRng, mean: f64) -> f64 {
    if mean > 0.0 {
        Poisson::new(mean).unwrap().sample(rng)
    } else {
        0.0
    }
}
