//! The version skew guard over real Istio captures (tests/fixtures/istio) and synthetic pages.

use std::collections::BTreeMap;
use std::time::Instant;

use meshgate::discovery::Target;
use meshgate::istio::observe::read_page;
use meshgate::istio::skew::{report, supported, Topology, Version};
use meshgate::istio::TargetObservation;
use meshgate::judge::Verdict;

const ISTIOD_1_5: &str = include_str!("../fixtures/istio/istiod-1.5.0_metrics-15014_datadog.prom");
const PROXY_1_11: &str =
    include_str!("../fixtures/istio/istio-proxy-1.11.4_merged-stats-15020_datadog.prom");
const PROXY_1_5_EXCERPT: &str = include_str!(
    "../fixtures/istio/istio-proxy-1.5-era_stats-15090_datadog_EXCERPT-first-16000-chars.prom"
);

fn target(url: &str, role: &str, cluster: &str, rev: &str) -> Target {
    let labels: BTreeMap<String, String> = [
        ("role", role),
        ("cluster", cluster),
        ("revision", rev),
        ("pod", url),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    Target {
        url: format!("http://{url}/metrics"),
        labels,
    }
}

fn obs(url: &str, role: &str, cluster: &str, rev: &str, page: &str) -> TargetObservation {
    read_page(&target(url, role, cluster, rev), page, None, Instant::now())
}

fn istiod_page(version: &str, connected: &[(&str, u32)]) -> String {
    let mut p = format!(
        "# TYPE istio_build gauge\nistio_build{{component=\"pilot\",tag=\"{version}\"}} 1\n# TYPE pilot_xds gauge\n"
    );
    for (v, n) in connected {
        p.push_str(&format!("pilot_xds{{version=\"{v}\"}} {n}\n"));
    }
    p
}

fn proxy_page(version: &str) -> String {
    format!("# TYPE istio_build gauge\nistio_build{{component=\"proxy\",tag=\"{version}\"}} 1\n")
}

#[test]
fn real_captures_read_builds_and_unlabelled_pilot_xds() {
    let i = obs("istiod", "istiod", "c1", "default", ISTIOD_1_5);
    assert_eq!(i.build("pilot"), Some("1.5.0"));
    assert_eq!(i.build("citadel"), Some("1.5.0"));
    assert_eq!(
        i.xds,
        vec![(None, 5.0)],
        "1.5 exports pilot_xds without a version label"
    );
    assert_eq!(i.resident_bytes, Some(8.828928e7));
    assert_eq!(i.heap_inuse_bytes, Some(3.3161216e7));
    assert_eq!(i.cpu_seconds, Some(22.28));
    let p = obs("proxy", "proxy", "c1", "default", PROXY_1_11);
    assert_eq!(p.build("proxy"), Some("1.11.4"));
    assert!(
        p.xds.is_empty(),
        "the agent's istio_agent_pilot_xds is not istiod's pilot_xds"
    );
    assert_eq!(
        p.resident_bytes, None,
        "the agent's metrics carry the istio_agent_ prefix"
    );
}

#[test]
fn real_captures_proxy_1_11_ahead_of_istiod_1_5_is_no_go() {
    let all = vec![
        obs("istiod", "istiod", "c1", "default", ISTIOD_1_5),
        obs("proxy", "proxy", "c1", "default", PROXY_1_11),
    ];
    let r = report(&all, &Topology::default());
    assert_eq!(r.verdict, Verdict::NoGo, "{}", r.reason);
    assert!(
        r.reason.contains("data plane ahead of its control plane"),
        "{}",
        r.reason
    );
    assert!(
        r.reason.contains("proxy 1.11.4 is newer than istiod 1.5.0"),
        "{}",
        r.reason
    );
    let rev = &r.clusters["c1"][0];
    assert_eq!(rev.proxies["1.11.4"], 1);
    assert_eq!(rev.istiods[0].connected["unlabelled"], 5.0);
}

#[test]
fn real_capture_without_istio_build_keeps_it_pending() {
    // The 1.5-era sidecar excerpt has no istio_build line: its version is unknown.
    let all = vec![
        obs("istiod", "istiod", "c1", "default", ISTIOD_1_5),
        obs("proxy", "proxy", "c1", "default", PROXY_1_5_EXCERPT),
    ];
    let r = report(&all, &Topology::default());
    assert_eq!(r.verdict, Verdict::Pending, "{}", r.reason);
    assert!(r.reason.contains("version is unknown"), "{}", r.reason);
}

#[test]
fn supported_pairings_are_go_and_two_minors_behind_is_no_go() {
    let all = vec![
        obs(
            "istiod",
            "istiod",
            "c1",
            "1-11",
            &istiod_page("1.11.4", &[("1.11.4", 1)]),
        ),
        obs("proxy", "proxy", "c1", "1-11", PROXY_1_11),
        obs(
            "istiod2",
            "istiod",
            "c1",
            "1-12",
            &istiod_page("1.12.0", &[("1.11.4", 1)]),
        ),
        obs("proxy2", "proxy", "c1", "1-12", &proxy_page("1.11.4")),
    ];
    let r = report(&all, &Topology::default());
    assert_eq!(r.verdict, Verdict::Go, "{}", r.reason);
    let all = vec![
        obs(
            "istiod",
            "istiod",
            "c1",
            "1-13",
            &istiod_page("1.13.2", &[]),
        ),
        obs("proxy", "proxy", "c1", "1-13", PROXY_1_11),
    ];
    let r = report(&all, &Topology::default());
    assert_eq!(r.verdict, Verdict::NoGo);
    assert!(
        r.reason
            .contains("proxy 1.11.4 is 2 minor versions behind istiod 1.13.2; Istio supports one"),
        "{}",
        r.reason
    );
}

#[test]
fn pilot_xds_versions_are_judged_too() {
    // Proxies not scraped still show in istiod's pilot_xds{version}.
    let all = vec![
        obs(
            "istiod",
            "istiod",
            "c1",
            "1-25-0",
            &istiod_page("1.25.0", &[("1.25.0", 3), ("1.26.1", 2)]),
        ),
        obs("proxy", "proxy", "c1", "1-25-0", &proxy_page("1.25.0")),
    ];
    let r = report(&all, &Topology::default());
    assert_eq!(r.verdict, Verdict::NoGo);
    assert!(
        r.reason
            .contains("reports 2 connected proxies of version 1.26.1 (pilot_xds)"),
        "{}",
        r.reason
    );
}

#[test]
fn unparseable_versions_are_no_go_with_a_clear_message() {
    let all = vec![
        obs("istiod", "istiod", "c1", "r", &istiod_page("1.25.0", &[])),
        obs("proxy", "proxy", "c1", "r", &proxy_page("a1b2c3d-dirty")),
    ];
    let r = report(&all, &Topology::default());
    assert_eq!(r.verdict, Verdict::NoGo);
    assert!(
        r.reason.contains("cannot parse istio_build{component=\"proxy\"}: \"a1b2c3d-dirty\" is not an Istio version"),
        "{}",
        r.reason
    );
}

#[test]
fn remote_cluster_needs_its_primary_upgraded_first() {
    let topo = Topology {
        remotes: [("west".to_string(), "east".to_string())].into(),
    };
    assert!(topo.problems().is_empty());
    let mut all = vec![
        obs(
            "istiod-old",
            "istiod",
            "east",
            "1-24-2",
            &istiod_page("1.24.2", &[]),
        ),
        obs("p-east", "proxy", "east", "1-24-2", &proxy_page("1.24.2")),
        obs("p-west", "proxy", "west", "1-25-0", &proxy_page("1.25.0")),
    ];
    let r = report(&all, &topo);
    assert_eq!(r.verdict, Verdict::NoGo);
    assert!(
        r.reason.contains("in remote cluster west, but its primary east runs no istiod of revision 1-25-0: upgrade the primary first"),
        "{}",
        r.reason
    );
    assert_eq!(r.problems.iter().filter(|p| p.blocking).count(), 1);
    assert_eq!(r.problems[0].targets, vec!["http://p-west/metrics"]);
    // Once the primary runs the new revision, the remote's proxies are served by it.
    all.push(obs(
        "istiod-new",
        "istiod",
        "east",
        "1-25-0",
        &istiod_page("1.25.0", &[]),
    ));
    let r = report(&all, &topo);
    assert_eq!(r.verdict, Verdict::Go, "{}", r.reason);
    assert_eq!(r.clusters["west"][0].control_plane_cluster, "east");
    // An istiod that discovery lists but that is not scraped yet: PENDING, not NO-GO.
    let r = meshgate::istio::skew::report_known(
        &all[..3],
        &topo,
        Some(&[("east".to_string(), "1-25-0".to_string())]),
    );
    assert_eq!(r.verdict, Verdict::Pending, "{}", r.reason);
    assert!(
        r.reason.contains("discovered but not scraped yet"),
        "{}",
        r.reason
    );
    let bad = Topology {
        remotes: [
            ("a".to_string(), "b".to_string()),
            ("b".to_string(), "c".to_string()),
        ]
        .into(),
    };
    assert!(bad.problems()[0].contains("is itself a remote"));
}

#[test]
fn versions_parse_and_skew_rules() {
    assert_eq!(Version::parse("1.25.0").unwrap().minor, 25);
    assert_eq!(Version::parse("v1.24.2-distroless").unwrap().patch, 2);
    assert_eq!(Version::parse("1.26-alpha.0").unwrap().minor, 26);
    assert!(Version::parse("latest").is_err());
    assert!(Version::parse("1").is_err());
    assert!(Version::parse("").is_err());
    let v = |s| Version::parse(s).unwrap();
    assert!(supported(&v("1.24.0"), &v("1.25.1")).is_ok());
    assert!(
        supported(&v("1.25.9"), &v("1.25.0")).is_ok(),
        "patch differences are fine"
    );
    assert!(supported(&v("1.26.0"), &v("1.25.0")).is_err());
    assert!(supported(&v("1.23.0"), &v("1.25.0")).is_err());
    assert!(supported(&v("2.0.0"), &v("1.25.0")).is_err());
}
