//! One tick of an analysis with 10 histogram checks over Envoy's 20-bucket latency histograms.
//!
//! `tick/full` is `Analysis::tick` as the daemon calls it on a tick that ends PENDING (most
//! ticks): observe, verdict rules, GO certificates, with the evidence document left for its
//! first reader; `tick/with_evidence` is that tick plus `Analysis::refresh`, the evidence
//! document (anytime-valid confidence bounds, fixed-horizon statistics, reasons) as the first
//! API read after the tick builds it, and as every deciding tick does;
//! `tick/decision` is the e-process part alone (observe, NO-GO rule on the mean e-value, GO
//! certificates) with the bracket shortcuts of `mixture`; `tick/decision_exact` the same
//! decisions from the exact e-values; `tick/full_pods` is `tick/full` with each cohort's deltas
//! also split among five pods, as the engine passes them, so the tick measures the dispersion
//! factor (`dispersion = "pods"`, the default) across the pods too.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use meshgate::judge::mixture::{weighted_e_reaches, RatioEProcess, RatioParams};
use meshgate::judge::{Analysis, CheckSpec, DataQuality, PodGroup, Settings, TickInput};

/// Slot deltas of one tick for a 4-boundary histogram check: 750 requests per cohort, a tail
/// of 12% above 100 ms, 2% above 250 ms, 0.5% above 500 ms, 0.03% above 1 s.
fn slots(i: u64) -> [Vec<f64>; 2] {
    let side = |n: f64| {
        let above = [0.12, 0.02, 0.005, 0.0003];
        let mut v = vec![n];
        v.extend(above.iter().map(|a| (n * (1.0 - a)).round()));
        v.extend(above.iter().map(|_| n));
        v
    };
    let wobble = (i % 7) as f64;
    [side(750.0 + wobble), side(740.0 + 2.0 * wobble)]
}

/// The tick's deltas split among five pods per cohort, per check (what `PodPending::take` gives).
fn pods(input: &[[Vec<f64>; 2]]) -> Vec<Vec<PodGroup>> {
    input
        .iter()
        .map(|sides| {
            sides
                .iter()
                .enumerate()
                .map(|(side, slots)| PodGroup {
                    side,
                    pods: (0..5)
                        .map(|p| {
                            let share = [0.3, 0.25, 0.2, 0.15, 0.1][p];
                            slots.iter().map(|v| (v * share).round()).collect()
                        })
                        .collect(),
                })
                .collect()
        })
        .collect()
}

fn specs() -> Vec<CheckSpec> {
    (0..10)
        .map(|i| {
            CheckSpec::from_toml(
                &format!(
                    "name='lat{i}'\nkind='histogram_tail'\nmetric='m{i}'\nboundaries=[100.0, 250.0, 500.0, 1000.0]\nslo=0.002\n"
                ),
                "bench.toml",
            )
            .expect("valid check")
        })
        .collect()
}

fn quality() -> DataQuality {
    DataQuality::all_fresh(5)
}

fn bench(c: &mut Criterion) {
    let owned = specs();
    let specs: Vec<&CheckSpec> = owned.iter().collect();
    let settings = Settings {
        alpha: 0.05,
        min_duration: Duration::from_secs(300),
        max_duration: Duration::from_secs(7200),
        min_exposure: 100.0,
        slo_go: false,
        go_certificate: Default::default(),
        design: Default::default(),
        soak: std::time::Duration::ZERO,
    };
    let mut warm = Analysis::new(settings, &specs);
    // Ten minutes of data first, as in a running analysis.
    for i in 0..40u64 {
        let input: Vec<[Vec<f64>; 2]> = (0..10).map(|_| slots(i)).collect();
        warm.tick(
            &specs,
            TickInput {
                pods: &[],
                strata: &[],
                slots: &input,
                quality: quality(),
                elapsed: Duration::from_secs(15 * (i + 1)),
            },
        );
    }
    let input: Vec<[Vec<f64>; 2]> = (0..10).map(|_| slots(41)).collect();
    // The measured tick is a PENDING one that leaves the evidence to its reader.
    {
        let mut a = warm.clone();
        let v = a.tick(
            &specs,
            TickInput {
                pods: &[],
                strata: &[],
                slots: &input,
                quality: quality(),
                elapsed: Duration::from_secs(615),
            },
        );
        assert_eq!(v, meshgate::judge::Verdict::Pending, "{}", a.reason());
        assert!(!a.is_current(), "the measured tick builds no evidence");
    }
    let mut g = c.benchmark_group("tick");
    g.measurement_time(Duration::from_secs(5));
    g.sample_size(30);
    // A fresh copy of the warm analysis per iteration, made and dropped outside the timing.
    // `full` takes it from a batch of copies made beforehand, so its state is mostly out of
    // the cache, as in the daemon, which ticks an analysis once per interval among other
    // work; `full_hot` gets a copy made just before, like `decision` below.
    let tick = |a: &mut meshgate::judge::Analysis| {
        a.tick(
            &specs,
            TickInput {
                pods: &[],
                strata: &[],
                slots: &input,
                quality: quality(),
                elapsed: Duration::from_secs(615),
            },
        )
    };
    g.bench_function("full", |b| {
        b.iter_batched_ref(
            || warm.clone(),
            |a| black_box(tick(a)),
            BatchSize::SmallInput,
        )
    });
    let per_pod = pods(&input);
    g.bench_function("full_pods", |b| {
        b.iter_batched_ref(
            || warm.clone(),
            |a| {
                black_box(a.tick(
                    &specs,
                    TickInput {
                        pods: &per_pod,
                        strata: &[],
                        slots: &input,
                        quality: quality(),
                        elapsed: Duration::from_secs(615),
                    },
                ))
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("full_hot", |b| {
        b.iter_batched_ref(
            || warm.clone(),
            |a| black_box(tick(a)),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("with_evidence", |b| {
        b.iter_batched_ref(
            || warm.clone(),
            |a| {
                tick(a);
                a.refresh(&specs);
                black_box(a.ln_e())
            },
            BatchSize::SmallInput,
        )
    });
    // The decision path alone on the same data: 40 e-processes (10 checks x 4 boundaries).
    // Each iteration gets a fresh copy made just before it and dropped after it, outside the
    // timing (`iter_batched_ref`, one input per batch): what is timed is the tick's work on
    // state that sits in cache, not the copying, allocating and freeing of 40 processes (which
    // dominated these two figures when they were timed with `iter_batched` and small batches).
    let mut procs: Vec<RatioEProcess> = (0..40)
        .map(|_| {
            RatioEProcess::new(RatioParams {
                alpha: 0.05,
                margin: 0.25,
                target_events: 100.0,
            })
        })
        .collect();
    for i in 0..40u64 {
        let [a, b] = slots(i);
        for (j, p) in procs.iter_mut().enumerate() {
            let k = j % 4;
            p.observe(a[0] - a[1 + k], b[0] - b[1 + k], a[0], b[0]);
        }
    }
    let [a, b] = slots(41);
    // The verdict's rule: NO-GO when the mean of the 40 e-values (10 checks of equal weight,
    // 4 boundaries of equal weight each) reaches 1/alpha; GO needs every certificate.
    let level = 1.0 / 0.05;
    g.bench_function("decision", |bch| {
        bch.iter_batched_ref(
            || procs.clone(),
            |ps| {
                for (j, p) in ps.iter_mut().enumerate() {
                    let k = j % 4;
                    p.observe(a[0] - a[1 + k], b[0] - b[1 + k], a[0], b[0]);
                }
                let w = 1.0 / ps.len() as f64;
                let nogo = weighted_e_reaches(ps.iter().map(|p| (p, w)), level);
                let go = ps.iter().all(|p| p.certifies_not_worse());
                black_box((nogo, go))
            },
            BatchSize::PerIteration,
        )
    });
    // The same decisions from the exact e-values (what `decision` measured before the
    // shortcuts): the difference is what the brackets save.
    let thr = level.ln();
    g.bench_function("decision_exact", |bch| {
        bch.iter_batched_ref(
            || procs.clone(),
            |ps| {
                let mut go = true;
                let mut e = 0.0;
                for (j, p) in ps.iter_mut().enumerate() {
                    let k = j % 4;
                    p.observe(a[0] - a[1 + k], b[0] - b[1 + k], a[0], b[0]);
                    e += p.ln_e().exp();
                    go &= p.ln_e_not_worse() >= thr;
                }
                black_box((e / ps.len() as f64 >= level, go))
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    go_certificates(c);
}

/// The cost of `go_certificate = "horizon"` against the default: one tick of an analysis with
/// the built-in `error-rate` check after an hour of a busy service (7,500 requests per cohort
/// per 15 s tick, ~1% 5xx: 150 errors per tick, 36,000 by then), in one stratum, with the canary
/// exactly at the margin (1.25x: 83 vs 67 errors a tick), so that neither certificate has fired
/// and the horizon one still keeps its null law (about 16 standard deviations of C wide). The
/// analysis is fed as the engine does (`Analysis::tick`).
fn go_certificates(c: &mut Criterion) {
    use meshgate::judge::{Catalog, GoCertificate};
    let spec = Catalog::builtin()
        .get("error-rate")
        .expect("the built-in check")
        .clone();
    let specs = [&spec];
    let input = |i: u64| {
        let e = 66.0 + (i % 3) as f64;
        [[vec![7500.0, e], vec![7500.0, 150.0 - e]]]
    };
    let mut g = c.benchmark_group("go_certificate");
    g.measurement_time(Duration::from_secs(5));
    g.sample_size(30);
    for go in [GoCertificate::Anytime, GoCertificate::Horizon] {
        let settings = Settings {
            alpha: 0.05,
            min_duration: Duration::from_secs(300),
            max_duration: Duration::from_secs(4 * 3600),
            min_exposure: 100.0,
            slo_go: false,
            go_certificate: go,
            design: Default::default(),
            soak: Duration::ZERO,
        };
        let mut warm = Analysis::new(settings, &specs);
        for i in 1..=240u64 {
            warm.tick(
                &specs,
                TickInput {
                    pods: &[],
                    strata: &[],
                    slots: &input(i),
                    quality: quality(),
                    elapsed: Duration::from_secs(15 * i),
                },
            );
        }
        assert_eq!(
            warm.verdict(),
            meshgate::judge::Verdict::Pending,
            "{}",
            warm.reason()
        );
        assert!(
            warm.reason().contains("not yet certified"),
            "the measured tick is one before any certificate: {}",
            warm.reason()
        );
        let next = input(241);
        g.bench_function(go.as_str(), |b| {
            b.iter_batched_ref(
                || warm.clone(),
                |a| {
                    black_box(a.tick(
                        &specs,
                        TickInput {
                            pods: &[],
                            strata: &[],
                            slots: &next,
                            quality: quality(),
                            elapsed: Duration::from_secs(15 * 241),
                        },
                    ))
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
