//! The Prometheus backend against a real Prometheus server (Debian package `prometheus`) that
//! scrapes the simulated mesh: same verdicts as direct scraping, counts that agree within scrape
//! timing, PromQL errors reported clearly, no data never GO.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use meshgate::config::{Config, StaticTarget};
use meshgate::judge::Catalog;
use meshgate::promsource::{PromClient, PrometheusConfig, QueryError};
use meshgate::sim::{Cohort, Fault, SimConfig, SimMesh};

use crate::support::{prometheus, Prometheus};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

async fn daemon(cfg: Config, stop: &CancellationToken) -> (String, meshgate::daemon::Running) {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let running = meshgate::daemon::start(cfg, Catalog::builtin(), listener, stop.clone())
        .await
        .unwrap();
    (format!("http://{}", running.addr), running)
}

fn base_config() -> Config {
    Config::from_toml(
        "[scrape]\ninterval = \"1s\"\ntimeout = \"900ms\"\n[judge]\nslo_go = true\nmin_duration = \"8s\"\nmax_duration = \"90s\"\nmin_exposure = 1000\n",
        "t",
    )
    .unwrap()
}

fn analysis() -> Value {
    json!({
        "name": "wave",
        "baseline": "{role=\"proxy\", revision=\"1-24-2\"}",
        "canary": "{role=\"proxy\", revision=\"1-25-0\"}",
    })
}

async fn verdict(c: &reqwest::Client, base: &str) -> Value {
    c.get(format!("{base}/v1/analyses/wave/verdict"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Start a mesh, Prometheus scraping it, a direct daemon and a Prometheus-backed daemon.
async fn both(
    fault: Fault,
    seed: u64,
) -> Option<(
    Prometheus,
    SimMesh,
    [(String, meshgate::daemon::Running); 2],
    CancellationToken,
)> {
    let stop = CancellationToken::new();
    let sim = SimConfig::small(seed, 2, 1500.0);
    let mesh = SimMesh::start(sim, IpAddr::V4(Ipv4Addr::LOCALHOST), stop.clone())
        .await
        .unwrap();
    mesh.set_fault(Cohort::Canary, fault);
    let prom = prometheus(&mesh.file_sd_json()).await?;
    // Give Prometheus two scrapes of every target before the analyses start.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut direct = base_config();
    direct.targets = mesh.targets().into_iter().map(StaticTarget::from).collect();
    let mut backed = base_config();
    backed.prometheus = Some(PrometheusConfig {
        url: prom.url.clone(),
        bearer_token_file: None,
        headers: Default::default(),
        timeout: Duration::from_secs(5),
        retries: 2,
        tls: Default::default(),
    });
    let d = daemon(direct, &stop).await;
    let p = daemon(backed, &stop).await;
    let c = reqwest::Client::new();
    for (base, _) in [&d, &p] {
        let r = c
            .post(format!("{base}/v1/analyses"))
            .json(&analysis())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    Some((prom, mesh, [d, p], stop))
}

async fn until_decided(c: &reqwest::Client, base: &str, limit: Duration) -> (Value, Vec<String>) {
    let started = Instant::now();
    let mut seen = Vec::new();
    loop {
        let v = verdict(c, base).await;
        seen.push(v["verdict"].as_str().unwrap().to_owned());
        if v["decided"] == true || started.elapsed() > limit {
            return (v, seen);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_is_no_go_through_prometheus_as_through_scraping() {
    let Some((_prom, _mesh, [d, p], stop)) = both(
        Fault {
            error_rate: Some(0.01),
            latency_factor: 1.0,
        },
        21,
    )
    .await
    else {
        return;
    };
    let c = reqwest::Client::new();
    let (vd, _) = until_decided(&c, &d.0, Duration::from_secs(60)).await;
    let (vp, seen) = until_decided(&c, &p.0, Duration::from_secs(60)).await;
    assert_eq!(vd["verdict"], "NO-GO", "direct: {vd:#}");
    assert_eq!(vp["verdict"], "NO-GO", "prometheus: {vp:#}");
    assert!(!seen.iter().any(|s| s == "GO"));
    assert_eq!(vp["checks"][0]["name"], "error-rate");
    assert!(
        vp["checks"][0]["tests"][0]["canary"]["rate"]
            .as_f64()
            .unwrap()
            > 0.004,
        "{vp:#}"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_is_go_both_ways_and_counts_agree() {
    let Some((_prom, _mesh, [d, p], stop)) = both(
        Fault {
            error_rate: None,
            latency_factor: 1.0,
        },
        22,
    )
    .await
    else {
        return;
    };
    let c = reqwest::Client::new();
    // While both are still collecting, their request counts cover the same traffic up to the
    // timing of the scrapes: at 3,000 req/s per cohort, both sources start within about two
    // scrape intervals of each other (the daemon's own scrape and Prometheus' 1 s scrape plus the
    // 1 s query tick), so the totals may differ by a few seconds of traffic, not more.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (a, b) = (verdict(&c, &d.0).await, verdict(&c, &p.0).await);
    for side in ["baseline", "canary"] {
        let x = a["checks"][0]["tests"][0][side]["exposure"]
            .as_f64()
            .unwrap();
        let y = b["checks"][0]["tests"][0][side]["exposure"]
            .as_f64()
            .unwrap();
        assert!(x > 5_000.0 && y > 5_000.0, "{side}: {x} vs {y}");
        assert!(
            (x - y).abs() <= 4.0 * 3_000.0,
            "{side}: direct {x} vs prometheus {y}"
        );
    }
    let (vd, sd) = until_decided(&c, &d.0, Duration::from_secs(80)).await;
    let (vp, sp) = until_decided(&c, &p.0, Duration::from_secs(80)).await;
    assert_eq!(vd["verdict"], "GO", "direct: {vd:#}");
    assert_eq!(vp["verdict"], "GO", "prometheus: {vp:#}");
    assert!(!sd.iter().chain(&sp).any(|s| s == "NO-GO"));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_errors_and_no_data() {
    let stop = CancellationToken::new();
    let Some(prom) = prometheus("[]").await else {
        return;
    };
    let client = PromClient::new(PrometheusConfig {
        url: prom.url.clone(),
        bearer_token_file: None,
        headers: Default::default(),
        timeout: Duration::from_secs(5),
        retries: 0,
        tls: Default::default(),
    })
    .unwrap();
    match client.query("sum(").await {
        Err(QueryError::Api {
            status,
            error_type,
            error,
        }) => {
            assert_eq!(status, 400);
            assert_eq!(error_type, "bad_data");
            assert!(error.contains("parse error"), "{error}");
        }
        other => panic!("expected a PromQL error, got {other:?}"),
    }
    match client.query("up[1m]").await {
        Err(QueryError::Decode { message, .. }) => {
            assert!(message.contains("expected an instant vector"), "{message}")
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert!(client.query("up").await.unwrap().is_empty());

    // A backed daemon whose cohorts match nothing in Prometheus never says GO.
    let mut cfg = base_config();
    cfg.judge.min_duration = Duration::from_secs(1);
    cfg.judge.slo_go = true;
    cfg.judge.max_duration = Duration::from_secs(8);
    cfg.prometheus = Some(PrometheusConfig {
        url: prom.url.clone(),
        bearer_token_file: None,
        headers: Default::default(),
        timeout: Duration::from_secs(5),
        retries: 0,
        tls: Default::default(),
    });
    let (base, _running) = daemon(cfg, &stop).await;
    let c = reqwest::Client::new();
    c.post(format!("{base}/v1/analyses"))
        .json(&analysis())
        .send()
        .await
        .unwrap();
    // While the analysis runs, its virtual targets say why there is no data.
    let started = Instant::now();
    let (targets, errors) = loop {
        let targets: Value = c
            .get(format!("{base}/v1/targets"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let errors: Vec<String> = targets
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["last_error"].as_str().map(str::to_owned))
            .collect();
        if !errors.is_empty() || started.elapsed() > Duration::from_secs(7) {
            break (targets, errors);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (v, seen) = until_decided(&c, &base, Duration::from_secs(20)).await;
    assert_eq!(v["verdict"], "INCONCLUSIVE", "{v:#}");
    assert!(!seen.iter().any(|s| s == "GO"));
    assert!(
        errors.iter().any(|e| e.contains("up{...} is empty")),
        "{targets:#}"
    );
    stop.cancel();
}

#[tokio::test]
async fn auth_header_and_custom_headers_are_sent() {
    use axum::http::HeaderMap;
    use axum::routing::post;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<HeaderMap>();
    let app = axum::Router::new().route(
        "/prom/api/v1/query",
        post(move |h: HeaderMap| {
            let tx = tx.clone();
            async move {
                tx.send(h).unwrap();
                // Prometheus' documented answer shape (integrations.md section 6).
                axum::Json(
                    json!({"status": "success", "data": {"resultType": "vector", "result": []}}),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let client = PromClient::new(PrometheusConfig {
        url: format!("http://{addr}/prom/"),
        bearer_token_file: Some(token),
        headers: [("X-Scope-OrgID".to_string(), "tenant-a".to_string())].into(),
        timeout: Duration::from_secs(5),
        retries: 0,
        tls: Default::default(),
    })
    .unwrap();
    assert!(client.query("up").await.unwrap().is_empty());
    let h = rx.recv().await.unwrap();
    assert_eq!(h["authorization"], "Bearer s3cret");
    assert_eq!(h["x-scope-orgid"], "tenant-a");
}
