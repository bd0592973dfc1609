//! The cost of strata (issue 16): one tick of an analysis with the default pack's checks
//! (`error-rate`, `latency-tail`, both stratified by destination workload), as the engine calls
//! `Analysis::tick`, for 1 to 1,000 workloads, each served by two pods per cohort; and the
//! analysis' heap per workload, counted by the daemon's own allocator accounting
//! (`meshgate::heap`).
//!
//! `strata/tick/W` takes the warm analysis from a batch of copies made beforehand (mostly out of
//! cache, as in the daemon); the heap figures print before the timings.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use meshgate::judge::{
    Analysis, Catalog, CheckKind, CheckSpec, DataQuality, PodGroup, Settings, Stratum, TickInput,
};

#[global_allocator]
static ALLOC: meshgate::heap::CountingAlloc = meshgate::heap::CountingAlloc;

const WORKLOADS: [usize; 5] = [1, 10, 100, 200, 1000];

/// One cohort's slot deltas for `check` in one tick: `n` requests, 0.1% 5xx, a latency tail of
/// 12%, 2%, 0.5%, 0.03% above the tested boundaries.
fn side(check: &CheckSpec, n: f64) -> Vec<f64> {
    match &check.kind {
        CheckKind::HistogramTail { boundaries } => {
            let above = [0.12, 0.02, 0.005, 0.0003];
            let mut v = vec![n];
            v.extend((0..boundaries.len()).map(|i| (n * (1.0 - above[i % 4])).round()));
            v.extend((0..boundaries.len()).map(|_| n));
            v
        }
        _ => vec![n, (n * 0.001).round()],
    }
}

struct Input {
    slots: Vec<[Vec<f64>; 2]>,
    strata: Vec<Vec<Stratum>>,
    pods: Vec<Vec<PodGroup>>,
}

/// Tick `i`'s input for `w` workloads (about 100 requests per workload and cohort).
fn input(checks: &[&CheckSpec], w: usize, i: u64) -> Input {
    let names: Vec<Arc<str>> = (0..w)
        .map(|k| Arc::from(format!("ns{}/wl{k}", k % 7)))
        .collect();
    let mut slots = Vec::new();
    let mut strata = Vec::new();
    let mut pods = Vec::new();
    for c in checks {
        let per: Vec<Stratum> = names
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let wobble = ((i + k as u64) % 7) as f64;
                Stratum {
                    name: name.clone(),
                    slots: [side(c, 1000.0 + wobble), side(c, 990.0 + 2.0 * wobble)],
                }
            })
            .collect();
        let mut total = [vec![0.0; c.slots()], vec![0.0; c.slots()]];
        for st in &per {
            for (total, slots) in total.iter_mut().zip(&st.slots) {
                for (t, v) in total.iter_mut().zip(slots) {
                    *t += v;
                }
            }
        }
        pods.push(
            per.iter()
                .flat_map(|st| {
                    (0..2).map(move |s| PodGroup {
                        side: s,
                        pods: (0..2)
                            .map(|p| {
                                let share = if p == 0 { 0.55 } else { 0.45 };
                                st.slots[s].iter().map(|v| (v * share).round()).collect()
                            })
                            .collect(),
                    })
                })
                .collect(),
        );
        slots.push(total);
        strata.push(per);
    }
    Input {
        slots,
        strata,
        pods,
    }
}

fn quality() -> DataQuality {
    DataQuality::all_fresh(10)
}

fn tick(a: &mut Analysis, checks: &[&CheckSpec], x: &Input, i: u64) {
    a.tick(
        checks,
        TickInput {
            slots: &x.slots,
            strata: &x.strata,
            pods: &x.pods,
            quality: quality(),
            elapsed: Duration::from_secs(15 * (i + 1)),
        },
    );
}

fn bench(c: &mut Criterion) {
    let catalog = Catalog::builtin();
    let owned: Vec<CheckSpec> = catalog
        .default_names()
        .iter()
        .filter_map(|n| catalog.get(n).cloned())
        .filter(|c| !c.strata.is_empty())
        .collect();
    assert!(owned.len() >= 2, "the default pack's stratified checks");
    let checks: Vec<&CheckSpec> = owned.iter().collect();
    let settings = Settings {
        alpha: 0.05,
        min_duration: Duration::from_secs(3600),
        max_duration: Duration::from_secs(7200),
        min_exposure: 100.0,
        slo_go: false,
        go_certificate: Default::default(),
        design: Default::default(),
        soak: std::time::Duration::ZERO,
    };
    let mut g = c.benchmark_group("strata");
    g.measurement_time(Duration::from_secs(4));
    g.sample_size(20);
    for w in WORKLOADS {
        let mut warm = Analysis::new(settings.clone(), &checks);
        // Ten minutes of data first, as in a running analysis.
        for i in 0..40 {
            tick(&mut warm, &checks, &input(&checks, w, i), i);
        }
        let before = meshgate::heap::stats()
            .expect("counting allocator")
            .live_bytes;
        let copy = warm.clone();
        let after = meshgate::heap::stats().unwrap().live_bytes;
        eprintln!(
            "strata/{w}: analysis heap {} bytes, {} bytes per workload ({} checks)",
            after - before,
            (after - before) / w as u64,
            checks.len()
        );
        drop(copy);
        let x = input(&checks, w, 41);
        g.bench_with_input(BenchmarkId::new("tick", w), &w, |b, _| {
            b.iter_batched_ref(
                || warm.clone(),
                |a| {
                    tick(a, &checks, &x, 41);
                    black_box(a.ln_e())
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
