//! Parser throughput against prometheus-parse and against a memchr line scan of the same bytes
//! (the ceiling: no parser reads a page faster than it finds its line ends), on three pages:
//! - `sidecar_page`: the real Istio 1.11.4 sidecar capture with synthetic Istio series spliced in
//!   (>= 1 MiB, out of L2 like a daemon's pages);
//! - `sidecar_page_escaped`: the same with a `user_agent` label (a dimension users add with
//!   Istio's Telemetry API) on every fourth synthetic series, its value holding escaped quotes;
//! - `capture`: the real capture alone (105 KB, 776 lines; it stays in cache).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meshgate::parse::{parse, render_sample, FamilyFilter};

const CAPTURE: &str =
    include_str!("../tests/fixtures/istio/istio-proxy-1.11.4_merged-stats-15020_datadog.prom");

/// Istio's default `istio_request_duration_milliseconds` bucket bounds.
const BOUNDS: [&str; 20] = [
    "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
    "30000", "60000", "300000", "600000", "1800000", "3600000", "+Inf",
];

const SERVICES: [(&str, &str); 6] = [
    ("reviews", "v1"),
    ("reviews", "v2"),
    ("reviews", "v3"),
    ("ratings", "v1"),
    ("details", "v1"),
    ("productpage", "v1"),
];
const SOURCES: [&str; 4] = [
    "productpage-v1",
    "reviews-v2",
    "reviews-v3",
    "istio-ingressgateway",
];
const CODES: [(&str, &str); 5] = [
    ("200", "-"),
    ("503", "UF,URX"),
    ("503", "UH"),
    ("404", "NR"),
    ("0", "DC"),
];

/// The full 25-label Istio set for synthetic series number `i`, in Istio's order.
fn istio_labels(i: usize) -> Vec<(&'static str, String)> {
    let (svc, version) = SERVICES[i % SERVICES.len()];
    let src = SOURCES[(i / SERVICES.len()) % SOURCES.len()];
    let (code, flags) = CODES[(i / 3) % CODES.len()];
    let src_app = src.rsplit_once('-').map_or(src, |(app, _)| app);
    let src_version = src.rsplit_once('-').map_or("unknown", |(_, v)| v);
    vec![
        ("response_code", code.to_owned()),
        (
            "reporter",
            if i & 1 == 0 { "destination" } else { "source" }.to_owned(),
        ),
        ("source_workload", src.to_owned()),
        ("source_workload_namespace", "default".to_owned()),
        (
            "source_principal",
            format!("spiffe://cluster.local/ns/default/sa/bookinfo-{src_app}"),
        ),
        ("source_app", src_app.to_owned()),
        ("source_version", src_version.to_owned()),
        ("source_cluster", "Kubernetes".to_owned()),
        ("destination_workload", format!("{svc}-{version}")),
        ("destination_workload_namespace", "default".to_owned()),
        (
            "destination_principal",
            format!("spiffe://cluster.local/ns/default/sa/bookinfo-{svc}"),
        ),
        ("destination_app", svc.to_owned()),
        ("destination_version", version.to_owned()),
        (
            "destination_service",
            format!("{svc}.default.svc.cluster.local"),
        ),
        ("destination_service_name", svc.to_owned()),
        ("destination_service_namespace", "default".to_owned()),
        ("destination_cluster", "Kubernetes".to_owned()),
        ("request_protocol", "http".to_owned()),
        ("response_flags", flags.to_owned()),
        ("grpc_response_status", String::new()),
        ("connection_security_policy", "mutual_tls".to_owned()),
        ("source_canonical_service", src_app.to_owned()),
        ("destination_canonical_service", svc.to_owned()),
        ("source_canonical_revision", src_version.to_owned()),
        ("destination_canonical_revision", version.to_owned()),
    ]
}

/// A user agent with quotes, escaped on the page as `\"`.
const USER_AGENT: &str = r#"Mozilla/5.0 (X11; Linux x86_64) "meshgate-bench" probe/1.0"#;

/// The capture with synthetic series spliced in after its own `istio_requests_total` series and
/// after its `istio_request_duration_milliseconds` histogram, so that families stay contiguous,
/// until the page is at least 1 MiB; with `escaped`, every fourth series has a `user_agent`.
fn sidecar_page(escaped: bool) -> String {
    let mut requests = String::new();
    let mut histograms = String::new();
    let mut i = 0;
    while CAPTURE.len() + requests.len() + histograms.len() < 1 << 20 {
        let mut labels = istio_labels(i);
        if escaped && i % 4 == 0 {
            labels.push(("user_agent", USER_AGENT.to_owned()));
        }
        let mut refs: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let count = (i * 37 % 1000 + 1) as f64;
        render_sample(&mut requests, "istio_requests_total", &refs, count, None);
        refs.push(("le", ""));
        for (b, bound) in BOUNDS.iter().enumerate() {
            refs.last_mut().unwrap().1 = bound;
            let cumulative = (count * (b + 1) as f64 / BOUNDS.len() as f64).round();
            render_sample(
                &mut histograms,
                "istio_request_duration_milliseconds_bucket",
                &refs,
                cumulative,
                None,
            );
        }
        refs.pop();
        let name = "istio_request_duration_milliseconds";
        render_sample(
            &mut histograms,
            &format!("{name}_sum"),
            &refs,
            count * 7.5,
            None,
        );
        render_sample(
            &mut histograms,
            &format!("{name}_count"),
            &refs,
            count,
            None,
        );
        i += 1;
    }
    let mut page = String::with_capacity(CAPTURE.len() + requests.len() + histograms.len() + 1);
    for line in CAPTURE.lines() {
        page.push_str(line);
        page.push('\n');
        if line.starts_with("istio_requests_total{") {
            page.push_str(&requests);
        } else if line.starts_with("istio_request_duration_milliseconds_count{") {
            page.push_str(&histograms);
        }
    }
    assert!(page.len() >= 1 << 20);
    page
}

fn bench_parse(c: &mut Criterion) {
    let pages = [
        ("sidecar_page", sidecar_page(false)),
        ("sidecar_page_escaped", sidecar_page(true)),
        ("capture", CAPTURE.to_owned()),
    ];
    let all = FamilyFilter::all();
    let istio = FamilyFilter::new([
        "istio_requests_total",
        "istio_request_duration_milliseconds",
    ]);

    for (group_name, page) in &pages {
        // Sanity: the page parses cleanly, the filter takes the synthetic series, and the
        // escaped page holds the escapes it claims, decoded.
        let full = parse(page, &all, |_| {});
        let filtered = parse(page, &istio, |_| {});
        assert_eq!(full.error_count, 0);
        assert_eq!(filtered.samples + filtered.skipped, full.samples);
        let mut decoded = 0;
        parse(page, &all, |s| {
            decoded += usize::from(s.labels.get("user_agent").as_deref() == Some(USER_AGENT));
        });
        assert_eq!(decoded > 0, *group_name == "sidecar_page_escaped");
        eprintln!(
            "{group_name}: {} bytes, {} lines, {} samples ({} wanted by the istio filter), \
             {} with an escaped value",
            page.len(),
            page.lines().count(),
            full.samples,
            filtered.samples,
            decoded
        );

        let mut group = c.benchmark_group(*group_name);
        group.throughput(Throughput::Bytes(page.len() as u64));
        for (name, filter) in [("meshgate_all", &all), ("meshgate_istio_filter", &istio)] {
            group.bench_function(name, |b| {
                b.iter(|| {
                    let mut sum = 0.0;
                    let mut labels = 0usize;
                    let mut value_bytes = 0usize;
                    let report = parse(black_box(page), filter, |s| {
                        sum += s.value;
                        for (_, value) in s.labels.iter() {
                            labels += 1;
                            value_bytes += value.len();
                        }
                    });
                    black_box((sum, labels, value_bytes, report.samples))
                })
            });
        }
        group.bench_function("prometheus_parse", |b| {
            b.iter(|| {
                let scrape = prometheus_parse::Scrape::parse(
                    black_box(page.as_str()).lines().map(|l| Ok(l.to_owned())),
                )
                .unwrap();
                black_box(scrape.samples.len())
            })
        });
        // The ceiling: every line end found, nothing else.
        group.bench_function("memchr_lines", |b| {
            b.iter(|| black_box(memchr::memchr_iter(b'\n', black_box(page.as_bytes())).count()))
        });
        group.finish();
    }
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
