//! The daemon's whole ingest path per core, as its scrape loop runs it: `Scraper::scrape_once`
//! (HTTP GET over a loopback socket with gzip, the body cap, the UTF-8 and page-end checks, one
//! parse pass feeding the cohort accumulator and the Istio observer) on the simulated mesh's
//! sidecar and istiod pages; and its parts on the same pages in the same run: the HTTP exchange
//! with gzip alone (`fetch_page` with the scrapers' client), gzip alone (inflating the bodies the
//! mesh served, with the flate2 backend reqwest decodes with), and the ingest alone.
//!
//! Time is the CPU time of the bench's own thread (user + system, `CLOCK_THREAD_CPUTIME_ID`),
//! which runs the client's whole runtime (a current-thread tokio runtime: its socket reads,
//! hyper, gzip, the parse); the simulated mesh serves from a runtime of its own on other threads,
//! so rendering and compressing the pages is not counted. Throughput is bytes after
//! decompression, so "MB/s per core" reads as in the issue.
//!
//! `cargo bench --bench scrape -- --warm-up-time 1 --measurement-time 5`

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use meshgate::cohort::{RoutedAnalysis, Routing, Selector, TargetAccumulator};
use meshgate::discovery::Target;
use meshgate::istio::observe::{self, PageReader};
use meshgate::istio::Observer;
use meshgate::judge::Catalog;
use meshgate::scrape::{fetch_page, http_client, ScrapeConfig, ScrapeMetrics, Scraper};
use meshgate::sim::{SimConfig, SimMesh};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// CPU time used by the calling thread so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Three analyses over the two revisions with every built-in check, as the scale bench's daemon.
fn routing() -> Routing {
    let cat = Catalog::builtin();
    let checks: Vec<_> = cat.iter().map(|c| Arc::new(c.clone())).collect();
    Routing::new(
        2,
        (0..3)
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

fn bench_scrape(c: &mut Criterion) {
    // The mesh on a runtime of its own (two worker threads): its work is not on this thread.
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let mesh = sim_rt.block_on(async {
        let mut cfg = SimConfig::default();
        cfg.baseline.pods = 8;
        cfg.canary.pods = 8;
        SimMesh::start(cfg, IpAddr::V4(Ipv4Addr::LOCALHOST), stop.clone())
            .await
            .unwrap()
    });
    let targets: Vec<Target> = mesh
        .targets()
        .into_iter()
        .map(|t| Target {
            url: t.url,
            labels: t.labels,
        })
        .collect();

    // The client side on this thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = ScrapeConfig::default();
    // The simulated sidecars serve more requests per second than the plausibility ceiling
    // allows real ones; raised so no page is quarantined (as the demo does).
    cfg.limits.max_increase_per_second = 1e9;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ScrapeMetrics::register(&mut registry);
    let scraper = Scraper::build(cfg.clone(), Default::default(), metrics)
        .unwrap()
        .with_observer(Observer::new());
    let (_routing_tx, routing_rx) = watch::channel(Arc::new(routing()));
    let mut accs: Vec<TargetAccumulator> = targets
        .iter()
        .map(|t| TargetAccumulator::new(t.labels.clone()).with_limits(cfg.limits.clone()))
        .collect();
    let clock = std::time::Instant::now();
    // Two rounds first: every series known, routes cached, connections open (steady state).
    let mut bytes = 0usize;
    let mut series = 0usize;
    for _ in 0..2 {
        bytes = 0;
        series = 0;
        rt.block_on(async {
            for (t, a) in targets.iter().zip(accs.iter_mut()) {
                let s = scraper
                    .scrape_once(t, a, &routing_rx, clock.elapsed().as_secs_f64())
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", t.url));
                bytes += s.bytes;
                series += s.rep.series;
            }
        });
    }

    // The bodies as the mesh sends them (gzip), and decompressed, for the parts below.
    let raw = reqwest::Client::builder().gzip(false).build().unwrap();
    let gz: Vec<Vec<u8>> = rt.block_on(async {
        let mut out = Vec::new();
        for t in &targets {
            let r = raw
                .get(&t.url)
                .header("Accept-Encoding", "gzip")
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.headers()
                    .get("content-encoding")
                    .map(|v| v.to_str().unwrap()),
                Some("gzip"),
                "{} served without gzip",
                t.url
            );
            out.push(r.bytes().await.unwrap().to_vec());
        }
        out
    });
    let inflate = |z: &[u8]| {
        let mut text = Vec::with_capacity(256 * 1024);
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(z), &mut text).unwrap();
        text
    };
    let texts: Vec<String> = gz
        .iter()
        .map(|z| String::from_utf8(inflate(z)).unwrap())
        .collect();
    let gz_bytes: usize = gz.iter().map(Vec::len).sum();
    println!(
        "pages: {} targets, {bytes} bytes a round after decompression ({} KB each on average), {gz_bytes} bytes gzipped ({:.1}x), {series} wanted series",
        targets.len(),
        bytes / targets.len() / 1000,
        bytes as f64 / gz_bytes as f64
    );

    let mut group = c.benchmark_group("scrape");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("daemon_path", |b| {
        b.iter_custom(|iters| {
            let t0 = thread_cpu();
            rt.block_on(async {
                for _ in 0..iters {
                    for (t, a) in targets.iter().zip(accs.iter_mut()) {
                        let s = scraper
                            .scrape_once(t, a, &routing_rx, clock.elapsed().as_secs_f64())
                            .await
                            .unwrap();
                        black_box(s.rep.deltas.len());
                    }
                }
            });
            thread_cpu() - t0
        })
    });
    let client = http_client(&cfg).unwrap();
    group.bench_function("http_and_gzip", |b| {
        b.iter_custom(|iters| {
            let t0 = thread_cpu();
            rt.block_on(async {
                for _ in 0..iters {
                    for t in &targets {
                        let p = fetch_page(&client, &t.url, cfg.timeout, cfg.max_body_bytes)
                            .await
                            .unwrap();
                        black_box(p.body.len());
                    }
                }
            });
            thread_cpu() - t0
        })
    });
    group.bench_function("gzip_alone", |b| {
        b.iter_custom(|iters| {
            let t0 = thread_cpu();
            for _ in 0..iters {
                for z in &gz {
                    black_box(inflate(black_box(z)).len());
                }
            }
            thread_cpu() - t0
        })
    });
    let routing = routing();
    let observer = Observer::new();
    group.bench_function("ingest_alone", |b| {
        b.iter_custom(|iters| {
            let t0 = thread_cpu();
            for _ in 0..iters {
                for ((t, a), text) in targets.iter().zip(accs.iter_mut()).zip(&texts) {
                    let mut page = PageReader::default();
                    let rep = a.ingest_at(
                        black_box(text),
                        &routing,
                        clock.elapsed().as_secs_f64(),
                        Some(observe::filter()),
                        |s| page.take(s),
                    );
                    observer.commit(t, page);
                    black_box(rep.deltas.len());
                }
            }
            thread_cpu() - t0
        })
    });
    group.finish();
    stop.cancel();
    drop(sim_rt);
}

criterion_group!(benches, bench_scrape);
criterion_main!(benches);
