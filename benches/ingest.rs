//! The whole ingest path, page text to routed cohort deltas: parse + per-series reset-aware
//! deltas + routing, on real-shaped sidecar pages from the simulated mesh; and the live heap per
//! tracked series, counted by the daemon's own allocator (`meshgate::heap`), as the scrape loop
//! holds it (one accumulator per target).
//!
//! `cargo bench --bench ingest -- --warm-up-time 1 --measurement-time 5`

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use meshgate::cohort::{RoutedAnalysis, Routing, Selector, TargetAccumulator};
use meshgate::discovery::Target;
use meshgate::istio::observe::{self, PageReader};
use meshgate::istio::Observer;
use meshgate::judge::Catalog;
use meshgate::sim::{SimConfig, SimMesh};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOC: meshgate::heap::CountingAlloc = meshgate::heap::CountingAlloc;

/// Live heap per tracked series of `targets` accumulators, each a copy of one of the sampled pods
/// (its labels with a pod name of its own), after two pages each. The series keep a key of their
/// label text, not the text, so whether pods share their texts no longer matters.
fn heap_per_series(
    first: &[String],
    second: &[String],
    labels: &[std::collections::BTreeMap<String, String>],
    targets: usize,
) -> (f64, f64, usize) {
    let r = routing(1);
    let live = || {
        meshgate::heap::stats()
            .expect("counting allocator")
            .live_bytes
    };
    let before = live();
    let mut accs = Vec::with_capacity(targets);
    for t in 0..targets {
        let k = t % first.len();
        let mut l = labels[k].clone();
        l.insert("pod".into(), format!("pod-{t}"));
        let mut a = TargetAccumulator::new(l);
        a.ingest(&first[k], &r);
        a.ingest(&second[k], &r);
        accs.push(a);
    }
    let after = live();
    let series: usize = accs.iter().map(TargetAccumulator::series).sum();
    let per = (after - before) as f64 / series as f64;
    // With `[store]` the daemon also keeps each target's last snapshot for the store writer.
    let snaps: Vec<_> = accs.iter().map(TargetAccumulator::export).collect();
    let with_store = (live() - before) as f64 / series as f64;
    drop(snaps);
    drop(accs);
    (per, with_store, series)
}

/// Pages of a few pods, rendered twice so the second round has grown counters.
fn pages() -> (
    Vec<String>,
    Vec<String>,
    Vec<std::collections::BTreeMap<String, String>>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stop = CancellationToken::new();
        let mut cfg = SimConfig::default();
        cfg.baseline.pods = 4;
        cfg.canary.pods = 4;
        let mesh = SimMesh::start(cfg, IpAddr::V4(Ipv4Addr::LOCALHOST), stop.clone())
            .await
            .unwrap();
        let n = mesh
            .targets()
            .iter()
            .filter(|t| t.labels["role"] == "proxy")
            .count();
        let labels = mesh
            .targets()
            .into_iter()
            .take(n)
            .map(|t| t.labels)
            .collect();
        let first = (0..n)
            .map(|i| String::from_utf8(mesh.render(i).unwrap()).unwrap())
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let second = (0..n)
            .map(|i| String::from_utf8(mesh.render(i).unwrap()).unwrap())
            .collect();
        stop.cancel();
        (first, second, labels)
    })
}

fn routing(analyses: usize) -> Routing {
    let cat = Catalog::builtin();
    let checks: Vec<_> = cat.iter().map(|c| Arc::new(c.clone())).collect();
    Routing::new(
        2,
        (0..analyses)
            .map(|i| RoutedAnalysis {
                id: i as u64 + 1,
                since_generation: 0,
                baseline: Selector::parse(r#"{revision="1-24-2"}"#).unwrap(),
                canary: Selector::parse(r#"{revision="1-25-0"}"#).unwrap(),
                checks: checks.clone(),
            })
            .collect(),
    )
}

fn bench_ingest(c: &mut Criterion) {
    let (first, second, labels) = pages();
    let (per, with_store, series) = heap_per_series(&first, &second, &labels, 1000);
    println!(
        "heap per tracked series: {per:.0} bytes, {with_store:.0} with the store's snapshots ({series} series of 1,000 targets)"
    );
    let bytes: usize = second.iter().map(String::len).sum();
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Bytes(bytes as u64));
    for analyses in [1usize, 3] {
        let r = routing(analyses);
        // Steady state: every series already known, routes cached; alternate the two rounds of
        // pages so each ingest sees counters move.
        let mut accs: Vec<TargetAccumulator> = labels
            .iter()
            .map(|l| TargetAccumulator::new(l.clone()))
            .collect();
        for (a, p) in accs.iter_mut().zip(&first) {
            a.ingest(p, &r);
        }
        let mut flip = false;
        group.bench_with_input(
            BenchmarkId::new("steady_state_pages", analyses),
            &analyses,
            |b, _| {
                b.iter(|| {
                    flip = !flip;
                    let round = if flip { &second } else { &first };
                    let mut deltas = 0;
                    for (a, p) in accs.iter_mut().zip(round) {
                        deltas += a.ingest(black_box(p), &r).deltas.len();
                    }
                    black_box(deltas)
                })
            },
        );
    }
    // The Istio observer on (the daemon's default): its gauges (`istio_build`, `pilot_xds`,
    // process/go gauges) read from the same pages. "separate_parse" is how it was done before
    // (a second parse of each page after the ingest); "single_pass" is the scrape loop's path.
    let r = routing(1);
    let targets: Vec<Target> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| Target {
            url: format!("http://127.0.0.1:{}/stats/prometheus", 20000 + i),
            labels: l.clone(),
        })
        .collect();
    for single_pass in [false, true] {
        let mut accs: Vec<TargetAccumulator> = labels
            .iter()
            .map(|l| TargetAccumulator::new(l.clone()))
            .collect();
        for (a, p) in accs.iter_mut().zip(&first) {
            a.ingest(p, &r);
        }
        let observer = Observer::new();
        let mut flip = false;
        let name = if single_pass {
            "observer_single_pass"
        } else {
            "observer_separate_parse"
        };
        group.bench_with_input(BenchmarkId::new(name, 1), &1, |b, _| {
            b.iter(|| {
                flip = !flip;
                let round = if flip { &second } else { &first };
                let mut deltas = 0;
                for ((a, p), t) in accs.iter_mut().zip(round).zip(&targets) {
                    let p = black_box(p);
                    if single_pass {
                        let mut page = PageReader::default();
                        deltas += a
                            .ingest_observing(p, &r, observe::filter(), |s| page.take(s))
                            .deltas
                            .len();
                        observer.commit(t, page);
                    } else {
                        observer.observe(t, p);
                        deltas += a.ingest(p, &r).deltas.len();
                    }
                }
                black_box(deltas)
            })
        });
    }
    group.finish();
    println!(
        "pages: {} sidecar pages, {} bytes in all ({} bytes each on average)",
        second.len(),
        bytes,
        bytes / second.len()
    );
}

criterion_group!(benches, bench_ingest);
criterion_main!(benches);
