//! The dispersion factor (`dispersion = "pods"`, `meshgate_stats::dispersion`) checked by
//! simulation through `Analysis::tick`, at small scale: a few hundred runs, bounds that fail for
//! a test that takes overdispersed counts as Poisson. The decision benchmark
//! (`meshgate-bench judge`, scenarios `aa-cv1*`) has the 10,000-run figures.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Gamma};

use super::testkit::{draw, quality, settings};
use super::{Analysis, Catalog, CheckSpec, DispersionMode, PodGroup, Stratum, TickInput, Verdict};

const TICK_S: u64 = 15;
const PODS: usize = 5;

fn spec(mode: DispersionMode) -> CheckSpec {
    let s = Catalog::builtin().get("error-rate").unwrap().clone();
    // Without the pack's SLO and incident ceiling: the comparison alone decides here.
    CheckSpec {
        slo: None,
        incident_ceiling: None,
        dispersion: mode,
        ..s
    }
}

/// A stream: requests per pod and tick, the baseline's and the canary's 5xx rates, the
/// coefficient of variation of each pod's rate from one tick to the next (a Gamma factor), and
/// retries (each failure retried twice, each retry failing with probability 1/2: clusters of
/// one to three errors).
struct Stream {
    requests: f64,
    rates: [f64; 2],
    cv: f64,
    retries: bool,
}

/// One run: the tick at which the analysis ended NO-GO, if it did.
fn nogo_tick(seed: u64, stream: &Stream, mode: DispersionMode) -> Option<u64> {
    let spec = spec(mode);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut a = Analysis::new(
        settings(Duration::from_secs(3600), Default::default()),
        &[&spec],
    );
    let factor = (stream.cv > 0.0).then(|| {
        let k = 1.0 / (stream.cv * stream.cv);
        Gamma::new(k, 1.0 / k).unwrap()
    });
    for i in 1..=240u64 {
        let mut pooled = [vec![0.0, 0.0], vec![0.0, 0.0]];
        let mut groups = vec![
            PodGroup {
                side: 0,
                pods: Vec::new(),
            },
            PodGroup {
                side: 1,
                pods: Vec::new(),
            },
        ];
        for side in 0..2 {
            for _ in 0..PODS {
                let mut n = (stream.requests * rng.random_range(0.9..1.1f64)).round();
                let xi = factor.map_or(1.0, |g| g.sample(&mut rng));
                let mut e = draw(&mut rng, n * stream.rates[side] * xi).min(n);
                if stream.retries {
                    let extra: f64 = (0..(2 * e as u64))
                        .map(|_| f64::from(rng.random_bool(0.5)))
                        .sum();
                    e += extra;
                    n += extra;
                }
                pooled[side][0] += n;
                pooled[side][1] += e;
                groups[side].pods.push(vec![n, e]);
            }
        }
        let strata = [vec![Stratum {
            name: Arc::from("shop/web"),
            slots: pooled.clone(),
        }]];
        let v = a.tick(
            &[&spec],
            TickInput {
                pods: &[groups],
                slots: &[pooled],
                strata: &strata,
                quality: quality(PODS),
                elapsed: Duration::from_secs(TICK_S * i),
            },
        );
        if v == Verdict::NoGo {
            return Some(i);
        }
        if v.is_final() {
            return None;
        }
    }
    None
}

fn false_nogos(stream: &Stream, mode: DispersionMode, runs: u64) -> usize {
    (0..runs)
        .filter(|&s| nogo_tick(s, stream, mode).is_some())
        .count()
}

/// Busy pods (1,500 requests per scrape at 1% 5xx, ~15 errors each) whose rate varies with CV 1
/// from one scrape to the next, no upgrade effect: with the dispersion factor NO-GO in at most
/// alpha of the runs (bound 10 of 200); taken as Poisson, in far more (the scenario is not too
/// easy).
#[test]
fn busy_overdispersed_pods_hold_alpha() {
    let stream = Stream {
        requests: 1500.0,
        rates: [0.01, 0.01],
        cv: 1.0,
        retries: false,
    };
    let pods = false_nogos(&stream, DispersionMode::Pods, 200);
    let plain = false_nogos(&stream, DispersionMode::Poisson, 100);
    eprintln!("busy CV 1: NO-GO {pods}/200 with pods, {plain}/100 as Poisson");
    assert!(pods <= 10, "with the dispersion factor: NO-GO {pods}/200");
    assert!(plain >= 15, "as Poisson: NO-GO only {plain}/100");
}

/// Retried failures (clusters of one to three errors) at 0.1% and 50 req/s per cohort, CV 1:
/// NO-GO in at most alpha of the runs.
#[test]
fn retry_clusters_hold_alpha() {
    let stream = Stream {
        requests: 150.0,
        rates: [0.001, 0.001],
        cv: 1.0,
        retries: true,
    };
    let pods = false_nogos(&stream, DispersionMode::Pods, 300);
    eprintln!("retries CV 1: NO-GO {pods}/300 with pods");
    assert!(pods <= 15, "with the dispersion factor: NO-GO {pods}/300");
}

/// Poisson pods lose no speed: 0.1% -> 0.5% at 50 req/s per cohort is found as soon as by the
/// Poisson test, to within one scrape in the median; and a real regression on overdispersed busy
/// pods (1% -> 2%, CV 1) is still found in most runs within the hour.
#[test]
fn the_factor_costs_little_power() {
    let poisson_stream = Stream {
        requests: 150.0,
        rates: [0.001, 0.005],
        cv: 0.0,
        retries: false,
    };
    let median = |mode| {
        let mut t: Vec<u64> = (0..60)
            .map(|s| nogo_tick(s, &poisson_stream, mode).unwrap_or(u64::MAX))
            .collect();
        t.sort_unstable();
        t[t.len() / 2]
    };
    let (pods, plain) = (
        median(DispersionMode::Pods),
        median(DispersionMode::Poisson),
    );
    eprintln!("0.1% -> 0.5%: median NO-GO tick {pods} with pods, {plain} as Poisson");
    assert!(pods <= plain + 1, "pods {pods} vs Poisson {plain}");
    let busy = Stream {
        requests: 1500.0,
        rates: [0.01, 0.02],
        cv: 1.0,
        retries: false,
    };
    let found = (0..40)
        .filter(|&s| nogo_tick(s, &busy, DispersionMode::Pods).is_some())
        .count();
    assert!(found >= 32, "1% -> 2% at CV 1: found in {found}/40");
}
