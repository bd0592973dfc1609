//! The store's write per tick: every analysis (3, all built-in checks) and the last value of
//! every wanted series of every target, in one redb transaction with its fsync, as the daemon
//! writes after each tick. Series come from real-shaped sidecar pages of the simulated mesh run
//! through the accumulator, so their label text and count per target are what the daemon keeps.
//!
//! Each size runs twice: analyses without history, and with full per-tick histories (256 points,
//! as an analysis holds once it has run that many recorded ticks), which the store rewrites with
//! its analysis on every tick.
//!
//! `cargo bench --bench store -- --warm-up-time 1 --measurement-time 5`
//! (prints the bytes of the first write, which puts the series keys, and of a steady tick, which
//! writes values only, for each size before the timings; the timings are steady ticks).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use meshgate::cohort::{RoutedAnalysis, Routing, Selector, SeriesSnapshot, TargetAccumulator};
use meshgate::config::AnalysisConfig;
use meshgate::judge::{Analysis, Catalog, Settings};
use meshgate::sim::{SimConfig, SimMesh};
use meshgate::store::{Store, StoredAnalysis};
use meshgate_core::history::synthetic_full;
use tokio_util::sync::CancellationToken;

/// One page per simulated sidecar (8 distinct pods), and their target labels.
fn pages() -> Vec<(String, BTreeMap<String, String>)> {
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
        let out = mesh
            .targets()
            .into_iter()
            .enumerate()
            .filter(|(_, t)| t.labels["role"] == "proxy")
            .map(|(i, t)| {
                (
                    String::from_utf8(mesh.render(i).unwrap()).unwrap(),
                    t.labels,
                )
            })
            .collect();
        stop.cancel();
        out
    })
}

fn analyses(n_targets: usize, with_history: bool) -> Vec<(String, StoredAnalysis)> {
    let cat = Catalog::builtin();
    let checks: Vec<_> = cat.iter().collect();
    (0..3)
        .map(|i| {
            let spec = AnalysisConfig {
                name: format!("bench-{i}"),
                baseline: r#"{revision="1-24-2"}"#.into(),
                canary: r#"{revision="1-25-0"}"#.into(),
                ..Default::default()
            };
            let settings = Settings {
                alpha: 0.05,
                min_duration: Duration::from_secs(600),
                max_duration: Duration::from_secs(3600),
                min_exposure: 1000.0,
                slo_go: false,
                go_certificate: Default::default(),
                design: Default::default(),
                soak: std::time::Duration::ZERO,
            };
            let urls = |side: &str| -> Vec<String> {
                (0..n_targets / 2)
                    .map(|t| {
                        format!(
                            "http://10.0.{}.{}:15090/stats/prometheus#{side}",
                            t / 250,
                            t % 250
                        )
                    })
                    .collect()
            };
            let a = StoredAnalysis {
                spec,
                created_at: 1.7e9,
                state: Analysis::new(settings, &checks),
                pending: checks
                    .iter()
                    .map(|c| [vec![1.0; c.slots()], vec![1.0; c.slots()]])
                    .collect(),
                members: [urls("b"), urls("c")],
                resets: [0, 0],
                overlaps: 0,
                finished_at: None,
                scope: None,
                history: if with_history {
                    let names: Vec<(&str, f64)> =
                        checks.iter().map(|c| (c.name.as_str(), c.margin)).collect();
                    synthetic_full(&names)
                } else {
                    Default::default()
                },
            };
            (format!("bench-{i}"), a)
        })
        .collect()
}

fn bench_store(c: &mut Criterion) {
    let pages = pages();
    let cat = Catalog::builtin();
    let checks: Vec<_> = cat.iter().map(|c| Arc::new(c.clone())).collect();
    let routing = Routing::new(
        1,
        (0..3)
            .map(|i| RoutedAnalysis {
                id: i + 1,
                since_generation: 0,
                baseline: Selector::parse(r#"{revision="1-24-2"}"#).unwrap(),
                canary: Selector::parse(r#"{revision="1-25-0"}"#).unwrap(),
                checks: checks.clone(),
            })
            .collect(),
    );
    let snaps: Vec<SeriesSnapshot> = pages
        .iter()
        .map(|(page, labels)| {
            let mut acc = TargetAccumulator::new(labels.clone());
            acc.ingest(page, &routing);
            acc.export()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("store_write_per_tick");
    group.sample_size(10);
    for (n, with_history) in [(100usize, false), (100, true), (1000, false), (1000, true)] {
        let path = dir.path().join(format!("bench-{n}-{with_history}.redb"));
        let (store, _) = Store::open(&path).unwrap();
        let urls: Vec<String> = (0..n)
            .map(|t| format!("http://10.1.{}.{}:15090/stats/prometheus", t / 250, t % 250))
            .collect();
        let analyses = analyses(n, with_history);
        let write = |store: &Store| {
            store
                .write(
                    analyses.iter().map(|(id, a)| (id.as_str(), a.clone())),
                    urls.iter()
                        .enumerate()
                        .map(|(i, u)| (u.as_str(), &snaps[i % snaps.len()])),
                )
                .unwrap()
        };
        // The first write puts every target's series keys; later ones only values (layout 2).
        let first = write(&store);
        let st = write(&store);
        let file = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "store write, 3 analyses ({}), {n} targets, {} series: first write {} bytes ({:.1} ms), steady tick {} bytes ({} per target, {:.1} ms), file {} bytes",
            if with_history { "full histories" } else { "no history" },
            st.series,
            first.bytes,
            first.seconds * 1e3,
            st.bytes,
            st.bytes / n,
            st.seconds * 1e3,
            file
        );
        let name = if with_history {
            "targets_full_histories"
        } else {
            "targets"
        };
        group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
            b.iter(|| write(&store))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
