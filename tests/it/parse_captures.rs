//! Parses real Istio/Envoy scrapes (see tests/fixtures/istio/README.md) and checks counts and values.

use std::borrow::Cow;

use meshgate::parse::{parse, FamilyFilter, MetricType, ParseReport, Sample};

/// Istio 1.11.4 sidecar, merged agent + Envoy endpoint (port 15020). No trailing newline.
const PROXY_1_11_4: &str =
    include_str!("../fixtures/istio/istio-proxy-1.11.4_merged-stats-15020_datadog.prom");
/// First 251 lines of an Istio ~1.5 Envoy /stats/prometheus page (port 15090).
const PROXY_1_5_EXCERPT: &str = include_str!(
    "../fixtures/istio/istio-proxy-1.5-era_stats-15090_datadog_EXCERPT-first-16000-chars.prom"
);
/// Istio 1.5.0 istiod /metrics (port 15014).
const ISTIOD_1_5_0: &str =
    include_str!("../fixtures/istio/istiod-1.5.0_metrics-15014_datadog.prom");

/// Sample-line counts, each from `grep -v '^#' FILE | grep -c .` run on the fixture file.
const PROXY_1_11_4_SAMPLES: usize = 461;
const PROXY_1_5_EXCERPT_SAMPLES: usize = 132;
const ISTIOD_1_5_0_SAMPLES: usize = 413;

/// Distinct `# TYPE` families, each from `grep '^# TYPE' FILE | awk '{print $3}' | sort -u | wc -l`.
const PROXY_1_11_4_FAMILIES: usize = 258;
const PROXY_1_5_EXCERPT_FAMILIES: usize = 119;
const ISTIOD_1_5_0_FAMILIES: usize = 75;

fn parse_all(page: &'static str) -> (Vec<Sample<'static>>, ParseReport) {
    let mut samples = Vec::new();
    let report = parse(page, &FamilyFilter::all(), |s| samples.push(s));
    assert_eq!(report.samples, samples.len());
    (samples, report)
}

/// An independent, naive reading of each sample line: the name is everything before the first `{`
/// or space, the value is the last space-separated token (none of the captures has timestamps).
fn naive(page: &str) -> Vec<(&str, f64)> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let name_end = l.find(['{', ' ']).unwrap();
            let value = l.rsplit(' ').next().unwrap();
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap(),
            };
            (&l[..name_end], value)
        })
        .collect()
}

fn assert_matches_naive(page: &str, samples: &[Sample<'_>]) {
    let expected = naive(page);
    assert_eq!(expected.len(), samples.len());
    for (s, (name, value)) in samples.iter().zip(expected) {
        assert_eq!(s.name, name);
        assert!(
            s.value == value || (s.value.is_nan() && value.is_nan()),
            "{name}: {} != {value}",
            s.value
        );
        assert_eq!(s.timestamp_ms, None);
    }
}

fn find<'a>(samples: &[Sample<'a>], name: &str, labels: &[(&str, &str)]) -> Sample<'a> {
    let hits: Vec<_> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(k).as_deref() == Some(*v))
        })
        .collect();
    assert_eq!(hits.len(), 1, "{name} {labels:?}");
    *hits[0]
}

#[test]
fn proxy_1_11_4_counts() {
    let (samples, report) = parse_all(PROXY_1_11_4);
    assert_eq!(report.errors, vec![]);
    assert_eq!(report.error_count, 0);
    assert_eq!(report.samples, PROXY_1_11_4_SAMPLES);
    assert_eq!(report.skipped, 0);
    assert_eq!(report.families, PROXY_1_11_4_FAMILIES);
    assert!(!report.eof_marker);
    assert_matches_naive(PROXY_1_11_4, &samples);
    // Every sample line of this page follows a TYPE line for its family.
    assert!(samples.iter().all(|s| s.kind != MetricType::Untyped));
}

#[test]
fn proxy_1_11_4_istio_requests_total() {
    let (samples, _) = parse_all(PROXY_1_11_4);
    let s = find(
        &samples,
        "istio_requests_total",
        &[("response_code", "200")],
    );
    assert_eq!(s.value, 1.0);
    assert_eq!(s.kind, MetricType::Counter);
    assert_eq!(s.labels.iter().count(), 25);
    assert_eq!(s.labels.len(), 25);
    assert_eq!(s.labels.get("response_flags").as_deref(), Some("-"));
    assert_eq!(s.labels.get("grpc_response_status").as_deref(), Some(""));
    assert_eq!(s.labels.get("reporter").as_deref(), Some("destination"));
    assert_eq!(
        s.labels.get("source_principal").as_deref(),
        Some("spiffe://cluster.local/ns/default/sa/bookinfo-productpage")
    );
    assert_eq!(
        s.labels.get("destination_service").as_deref(),
        Some("reviews.default.svc.cluster.local")
    );
    let names: Vec<&str> = s.labels.iter().map(|(n, _)| n).collect();
    assert_eq!(names.first(), Some(&"response_code"));
    assert_eq!(names.last(), Some(&"destination_canonical_revision"));
    // No escapes on this page: every value is borrowed from the page.
    assert!(s.labels.iter().all(|(_, v)| matches!(v, Cow::Borrowed(_))));
    assert!(s
        .labels
        .raw()
        .starts_with("response_code=\"200\",reporter=\"destination\""));
}

#[test]
fn proxy_1_11_4_duration_histogram() {
    let (samples, _) = parse_all(PROXY_1_11_4);
    let family: Vec<_> = samples
        .iter()
        .filter(|s| s.name.starts_with("istio_request_duration_milliseconds"))
        .collect();
    // 20 buckets, _sum and _count (lines 686-707).
    assert_eq!(family.len(), 22);
    assert!(family.iter().all(|s| s.kind == MetricType::Histogram));
    let inf = find(
        &samples,
        "istio_request_duration_milliseconds_bucket",
        &[("le", "+Inf")],
    );
    let count = find(&samples, "istio_request_duration_milliseconds_count", &[]);
    let sum = find(&samples, "istio_request_duration_milliseconds_sum", &[]);
    assert_eq!(inf.value, count.value);
    assert_eq!(count.value, 1.0);
    assert_eq!(sum.value, 1050.0);
    assert_eq!(inf.labels.len(), 26);
    // Same series apart from `le`.
    let without_le: Vec<_> = inf.labels.iter().filter(|(n, _)| *n != "le").collect();
    assert_eq!(without_le, count.labels.iter().collect::<Vec<_>>());
    // Buckets are cumulative and end at the +Inf bucket.
    let buckets: Vec<f64> = family
        .iter()
        .filter(|s| s.name.ends_with("_bucket"))
        .map(|s| s.value)
        .collect();
    assert_eq!(buckets.len(), 20);
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(*buckets.last().unwrap(), inf.value);
}

#[test]
fn proxy_1_11_4_build_info_and_huge_integers() {
    let (samples, _) = parse_all(PROXY_1_11_4);
    let build = find(&samples, "istio_build", &[]);
    assert_eq!(build.labels.raw(), "component=\"proxy\",tag=\"1.11.4\"");
    assert_eq!(build.labels.get("component").as_deref(), Some("proxy"));
    assert_eq!(build.labels.get("tag").as_deref(), Some("1.11.4"));
    assert_eq!(build.value, 1.0);
    assert_eq!(build.kind, MetricType::Gauge);

    // Envoy prints config versions as u64 hashes, larger than i64::MAX.
    for name in [
        "envoy_cluster_manager_cds_version",
        "envoy_listener_manager_lds_version",
    ] {
        let v = find(&samples, name, &[]);
        assert_eq!(v.value, 16440392441958861461u64 as f64, "{name}");
        assert!(v.value > i64::MAX as f64);
        assert!(v.labels.is_empty());
        assert_eq!(v.labels.raw(), "");
        assert_eq!(v.kind, MetricType::Gauge);
    }
    let update = find(&samples, "envoy_cluster_manager_cds_update_time", &[]);
    assert_eq!(update.value, 1636743449133.0);

    let gc = find(
        &samples,
        "istio_agent_go_gc_duration_seconds",
        &[("quantile", "0")],
    );
    assert_eq!(gc.value, 7.754e-05);
    assert_eq!(gc.kind, MetricType::Summary);
    let gc_count = find(&samples, "istio_agent_go_gc_duration_seconds_count", &[]);
    assert_eq!(gc_count.value, 13.0);
    assert_eq!(gc_count.kind, MetricType::Summary);
}

#[test]
fn proxy_1_11_4_filtered() {
    let filter = FamilyFilter::new([
        "istio_requests_total",
        "istio_request_duration_milliseconds",
    ]);
    let mut samples = Vec::new();
    let report = parse(PROXY_1_11_4, &filter, |s| samples.push(s));
    // 1 istio_requests_total series + 20 buckets + _sum + _count.
    assert_eq!(report.samples, 23);
    assert_eq!(samples.len(), 23);
    assert_eq!(report.skipped, PROXY_1_11_4_SAMPLES - 23);
    assert_eq!(report.error_count, 0);
    assert_eq!(report.families, PROXY_1_11_4_FAMILIES);
    assert_eq!(samples[0].name, "istio_requests_total");
    assert_eq!(samples[0].kind, MetricType::Counter);
    assert!(samples[1..].iter().all(|s| s
        .name
        .starts_with("istio_request_duration_milliseconds_")
        && s.kind == MetricType::Histogram));
    // The filter agrees with the name-only rule on this page.
    let by_name = samples
        .iter()
        .filter(|s| filter.wants_sample_name(s.name))
        .count();
    assert_eq!(by_name, 23);
}

#[test]
fn proxy_1_11_4_with_crlf_line_endings() {
    let crlf: &'static str = Box::leak(PROXY_1_11_4.replace('\n', "\r\n").into_boxed_str());
    let (samples, report) = parse_all(crlf);
    let (lf_samples, _) = parse_all(PROXY_1_11_4);
    assert_eq!(report.error_count, 0);
    assert_eq!(samples.len(), PROXY_1_11_4_SAMPLES);
    for (a, b) in samples.iter().zip(&lf_samples) {
        assert_eq!(
            (a.name, a.labels.raw(), a.kind),
            (b.name, b.labels.raw(), b.kind)
        );
        assert_eq!(a.value.to_bits(), b.value.to_bits());
    }
}

#[test]
fn istiod_1_5_0() {
    let (samples, report) = parse_all(ISTIOD_1_5_0);
    assert_eq!(report.errors, vec![]);
    assert_eq!(report.error_count, 0);
    assert_eq!(report.samples, ISTIOD_1_5_0_SAMPLES);
    assert_eq!(report.families, ISTIOD_1_5_0_FAMILIES);
    assert!(!report.eof_marker);
    assert_matches_naive(ISTIOD_1_5_0, &samples);

    let xds = find(&samples, "pilot_xds", &[]);
    assert_eq!(xds.value, 5.0);
    assert!(xds.labels.is_empty());
    assert_eq!(xds.kind, MetricType::Gauge);

    let bucket = find(
        &samples,
        "pilot_proxy_convergence_time_bucket",
        &[("le", "0.1")],
    );
    assert_eq!(bucket.value, 6.0);
    assert_eq!(bucket.kind, MetricType::Histogram);
    let sum = find(&samples, "pilot_proxy_convergence_time_sum", &[]);
    assert_eq!(sum.value, 0.019777191);
    assert_eq!(sum.kind, MetricType::Histogram);

    let pilot = find(&samples, "istio_build", &[("component", "pilot")]);
    assert_eq!(pilot.labels.get("tag").as_deref(), Some("1.5.0"));
    assert_eq!(pilot.value, 1.0);
    let citadel = find(&samples, "istio_build", &[("component", "citadel")]);
    assert_eq!(citadel.labels.raw(), "component=\"citadel\",tag=\"1.5.0\"");

    let info = find(&samples, "pilot_info", &[]);
    assert_eq!(
        info.labels.get("version").as_deref(),
        Some("1.5.0-c3c353285578eb68b334fc8766746b754b6b3789-Clean")
    );
    let expiry = find(&samples, "citadel_server_cert_chain_expiry_timestamp", &[]);
    assert_eq!(expiry.value, 2.310923901e+09);
}

#[test]
fn proxy_1_5_excerpt_non_contiguous_families() {
    let (samples, report) = parse_all(PROXY_1_5_EXCERPT);
    assert_eq!(report.errors, vec![]);
    assert_eq!(report.error_count, 0);
    assert_eq!(report.samples, PROXY_1_5_EXCERPT_SAMPLES);
    assert_eq!(report.families, PROXY_1_5_EXCERPT_FAMILIES);
    assert_matches_naive(PROXY_1_5_EXCERPT, &samples);
    // Every family on this page is declared `counter` (line 1 onwards).
    assert!(samples.iter().all(|s| s.kind == MetricType::Counter));

    // `# TYPE envoy_cluster_upstream_rq counter` is on line 42; its 2xx series straggles in on
    // line 128, after 40 other families.
    let rq: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "envoy_cluster_upstream_rq")
        .collect();
    assert_eq!(rq.len(), 2);
    assert_eq!(
        rq[0].labels.get("response_code_class").as_deref(),
        Some("5xx")
    );
    assert_eq!(rq[0].value, 1.0);
    assert_eq!(
        rq[1].labels.get("response_code_class").as_deref(),
        Some("2xx")
    );
    assert_eq!(
        rq[1].labels.get("cluster_name").as_deref(),
        Some("xds-grpc")
    );
    assert_eq!(rq[1].value, 2.0);
    assert_eq!(rq[1].kind, MetricType::Counter);

    // envoy_cluster_internal_upstream_rq: TYPE on line 148, 2xx on 149, the 5xx straggler on 152.
    let internal = find(
        &samples,
        "envoy_cluster_internal_upstream_rq",
        &[("response_code_class", "5xx")],
    );
    assert_eq!(internal.value, 1.0);
    assert_eq!(internal.kind, MetricType::Counter);

    // envoy_cluster_client_ssl_socket_factory_ssl_context_update_by_sds is split over lines 2-9,
    // 137 and 249-251.
    let sds: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "envoy_cluster_client_ssl_socket_factory_ssl_context_update_by_sds")
        .collect();
    assert_eq!(sds.len(), 12);
    assert!(sds.iter().all(|s| s.kind == MetricType::Counter));
    assert_eq!(
        sds[11].labels.get("cluster_name").as_deref(),
        Some("outbound|443||istio-ingressgateway.istio-system.svc.cluster.local")
    );
    assert_eq!(sds[11].value, 2.0);
}

#[test]
fn proxy_1_5_excerpt_filter_uses_declared_families() {
    // Both `envoy_cluster_upstream_rq` and `envoy_cluster_upstream_rq_total` are declared
    // counters on this page: asking for the first must not also take the second.
    let filter = FamilyFilter::new(["envoy_cluster_upstream_rq"]);
    assert!(filter.wants_sample_name("envoy_cluster_upstream_rq_total"));
    let mut names = Vec::new();
    let report = parse(PROXY_1_5_EXCERPT, &filter, |s| names.push(s.name));
    assert_eq!(
        names,
        ["envoy_cluster_upstream_rq", "envoy_cluster_upstream_rq"]
    );
    assert_eq!(report.skipped, PROXY_1_5_EXCERPT_SAMPLES - 2);

    // The straggler family is filtered in at all three of its places.
    let filter =
        FamilyFilter::new(["envoy_cluster_client_ssl_socket_factory_ssl_context_update_by_sds"]);
    let report = parse(PROXY_1_5_EXCERPT, &filter, |s| {
        assert_eq!(s.kind, MetricType::Counter)
    });
    assert_eq!(report.samples, 12);
}
