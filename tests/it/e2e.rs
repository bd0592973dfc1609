//! End to end over real sockets: the simulated mesh, the daemon scraping it, the API judging it.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use meshgate::config::{Config, StaticTarget};
use meshgate::judge::Catalog;
use meshgate::sim::{Cohort, Fault, SimConfig, SimMesh};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

struct Setup {
    base: String,
    stop: CancellationToken,
    running: meshgate::daemon::Running,
    _mesh: SimMesh,
}

async fn setup(seed: u64, fault: Fault, extra_targets: Vec<StaticTarget>) -> Setup {
    let stop = CancellationToken::new();
    let sim = SimConfig::small(seed, 2, 2000.0);
    let mesh = SimMesh::start(sim, IpAddr::V4(Ipv4Addr::LOCALHOST), stop.clone())
        .await
        .unwrap();
    mesh.set_fault(Cohort::Canary, fault);
    let mut cfg = Config::from_toml(
        r#"
        [scrape]
        interval = "250ms"
        timeout = "200ms"
        [judge]
        # GO by SLO, as these plumbing tests need it fast (the default is off).
        slo_go = true
        min_duration = "5s"
        max_duration = "40s"
        min_exposure = 1000
        "#,
        "e2e",
    )
    .unwrap();
    cfg.targets = mesh.targets().into_iter().map(StaticTarget::from).collect();
    cfg.targets.extend(extra_targets);
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let running = meshgate::daemon::start(cfg, Catalog::builtin(), listener, stop.clone())
        .await
        .unwrap();
    Setup {
        base: format!("http://{}", running.addr),
        stop,
        running,
        _mesh: mesh,
    }
}

async fn follow(base: &str, body: Value, limit: Duration) -> (Vec<String>, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/analyses"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    crate::support::follow_verdicts(base, body["name"].as_str().unwrap(), limit).await
}

/// Revisions are the simulator's defaults (baseline 1-24-2, canary 1-25-0).
fn analysis(name: &str) -> Value {
    json!({
        "name": name,
        "baseline": "{role=\"proxy\", revision=\"1-24-2\"}",
        "canary": "{role=\"proxy\", revision=\"1-25-0\"}",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_regression_is_no_go_and_names_the_check() {
    let s = setup(
        11,
        Fault {
            error_rate: Some(0.01),
            latency_factor: 1.0,
        },
        vec![],
    )
    .await;
    let (seen, v) = follow(&s.base, analysis("errors"), Duration::from_secs(40)).await;
    assert_eq!(v["verdict"], "NO-GO", "{v:#}");
    assert!(!seen.iter().any(|x| x == "GO"));
    let ev = &v["checks"][0];
    assert_eq!(ev["name"], "error-rate");
    // The error check carries the evidence (the combined e-value may cross 20 just before the
    // check's own 40 when the latency check adds a little).
    assert!(
        ev["e_value"].as_f64().unwrap() > v["checks"][1]["e_value"].as_f64().unwrap(),
        "{v:#}"
    );
    assert!(
        ev["tests"][0]["ratio_lower_bound"].as_f64().unwrap() > 1.0,
        "{ev:#}"
    );
    // The simulated pods are Poisson: the dispersion factor measured across them through the
    // daemon's per-pod deltas stays near one (it is reported, and it is a number).
    let phi = ev["tests"][0]["dispersion"].as_f64().unwrap();
    assert!((1.0..1.5).contains(&phi), "dispersion {phi}: {ev:#}");
    // The counts come from the simulated traffic: the canary's 5xx share is near the fault's 1%.
    let canary_rate = ev["tests"][0]["canary"]["rate"].as_f64().unwrap();
    assert!((0.004..0.02).contains(&canary_rate), "{canary_rate}");
    assert!(v["reason"].as_str().unwrap().contains("error-rate"));
    assert_eq!(v["data_quality"]["canary"]["targets"], 2);
    s.stop.cancel();
    s.running.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_regression_is_no_go() {
    let s = setup(
        12,
        Fault {
            error_rate: None,
            latency_factor: 2.0,
        },
        vec![],
    )
    .await;
    let (_, v) = follow(&s.base, analysis("slow"), Duration::from_secs(40)).await;
    assert_eq!(v["verdict"], "NO-GO", "{v:#}");
    assert_eq!(v["checks"][1]["name"], "latency-tail");
    assert_eq!(v["checks"][1]["status"], "regression", "{v:#}");
    s.stop.cancel();
    s.running.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canary_is_go_after_min_duration() {
    let s = setup(
        13,
        Fault {
            error_rate: None,
            latency_factor: 1.0,
        },
        vec![],
    )
    .await;
    let (seen, v) = follow(&s.base, analysis("healthy"), Duration::from_secs(45)).await;
    assert_eq!(v["verdict"], "GO", "{v:#}");
    assert!(v["decided_after_seconds"].as_f64().unwrap() >= 5.0);
    assert!(seen.iter().all(|x| x == "PENDING" || x == "GO"));
    for c in v["checks"].as_array().unwrap() {
        assert_eq!(c["status"], "certified", "{c:#}");
    }
    s.stop.cancel();
    s.running.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dark_canary_pod_blocks_go() {
    let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dark = StaticTarget {
        url: format!("http://127.0.0.1:{port}/stats/prometheus"),
        labels: [("role", "proxy"), ("revision", "1-25-0"), ("pod", "dark-0")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let s = setup(
        14,
        Fault {
            error_rate: None,
            latency_factor: 1.0,
        },
        vec![dark],
    )
    .await;
    let (seen, v) = follow(&s.base, analysis("dark"), Duration::from_secs(12)).await;
    assert!(!seen.iter().any(|x| x == "GO"), "{seen:?}");
    assert_eq!(v["verdict"], "PENDING", "{v:#}");
    assert_eq!(v["data_quality"]["canary"]["unreachable"], 1, "{v:#}");
    // The dark pod is the reason; on a machine so loaded that the 250 ms scrapes of the live
    // pods also went stale (seen in CI under load), a staleness reason comes first.
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("never scraped successfully")
            || reason.contains("no freshly scraped target"),
        "{v:#}"
    );
    s.stop.cancel();
    s.running.join().await;
}
