//! A lab for the integration tests: two simulated meshes on loopback (one healthy canary, one
//! with a 1% 5xx canary) scraped by one real daemon, so GO and NO-GO analyses run side by side.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshgate::config::{Config, StaticTarget};
use meshgate::judge::Catalog;
use meshgate::sim::{Cohort, Fault, RevisionSpec, SimConfig, SimMesh};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Revisions of the healthy mesh.
pub const GOOD: (&str, &str) = ("1-24-2", "1-25-0");
/// Revisions of the mesh whose canary returns 1% 5xx.
pub const BAD: (&str, &str) = ("7-24-2", "7-25-0");

pub struct Lab {
    pub base: String,
    pub stop: CancellationToken,
    pub running: Option<meshgate::daemon::Running>,
    _meshes: Vec<SimMesh>,
}

/// A simulated mesh: two pods per revision and one istiod each, 0.1% 5xx, `fault` on the canary.
pub async fn mesh(
    seed: u64,
    revs: (&str, &str),
    fault: Fault,
    stop: &CancellationToken,
) -> SimMesh {
    let mut sim = SimConfig {
        rps_per_pod: 2000.0,
        error_rate: 0.001,
        seed,
        ..SimConfig::default()
    };
    sim.baseline = RevisionSpec::new(revs.0, &revs.0.replace('-', "."), 2);
    sim.canary = RevisionSpec::new(revs.1, &revs.1.replace('-', "."), 2);
    let m = SimMesh::start(sim, IpAddr::V4(Ipv4Addr::LOCALHOST), stop.clone())
        .await
        .unwrap();
    m.set_fault(Cohort::Canary, fault);
    m
}

/// Start both meshes and a daemon; `extra_toml` is appended to the config (e.g. `[alerts]`).
pub async fn lab(extra_toml: &str) -> Lab {
    let stop = CancellationToken::new();
    let good = mesh(
        21,
        GOOD,
        Fault {
            error_rate: None,
            latency_factor: 1.0,
        },
        &stop,
    )
    .await;
    let bad = mesh(
        22,
        BAD,
        Fault {
            error_rate: Some(0.01),
            latency_factor: 1.0,
        },
        &stop,
    )
    .await;
    let text = format!(
        r#"
        [scrape]
        interval = "250ms"
        timeout = "200ms"
        [judge]
        # GO by SLO, as these plumbing tests need it fast (the default is off).
        slo_go = true
        min_duration = "4s"
        max_duration = "120s"
        min_exposure = 1000
        {extra_toml}
        "#
    );
    let mut cfg = Config::from_toml(&text, "lab").unwrap();
    for m in [&good, &bad] {
        cfg.targets
            .extend(m.targets().into_iter().map(|t| StaticTarget {
                url: t.url,
                labels: t.labels,
            }));
    }
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let running = meshgate::daemon::start(cfg, Catalog::builtin(), listener, stop.clone())
        .await
        .unwrap();
    Lab {
        base: format!("http://{}", running.addr),
        stop,
        running: Some(running),
        _meshes: vec![good, bad],
    }
}

impl Lab {
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(r) = self.running.take() {
            r.join().await;
        }
    }

    /// Wait until the analysis' verdict is final.
    pub async fn wait_final(&self, id: &str, limit: Duration) -> Value {
        let c = reqwest::Client::new();
        let start = Instant::now();
        loop {
            let v: Value = c
                .get(format!("{}/v1/analyses/{id}/verdict", self.base))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["decided"] == true {
                return v;
            }
            assert!(
                start.elapsed() < limit,
                "{id} undecided after {limit:?}: {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Selectors of a mesh's baseline and canary sidecars.
pub fn selectors(revs: (&str, &str)) -> (String, String) {
    (
        format!("{{role=\"proxy\", revision=\"{}\"}}", revs.0),
        format!("{{role=\"proxy\", revision=\"{}\"}}", revs.1),
    )
}

/// A create body for `POST /v1/analyses`.
pub fn analysis(name: &str, revs: (&str, &str)) -> Value {
    let (b, c) = selectors(revs);
    json!({"name": name, "baseline": b, "canary": c})
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon with `cfg` on 127.0.0.1:0, and the token that stops it.
pub async fn daemon(cfg: Config) -> (meshgate::daemon::Running, CancellationToken) {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let running = meshgate::daemon::start(cfg, Catalog::builtin(), listener, stop.clone())
        .await
        .unwrap();
    (running, stop)
}

/// The verdicts an analysis went through (each change once) until it is final or `limit`
/// passes, and its last verdict document.
pub async fn follow_verdicts(base: &str, id: &str, limit: Duration) -> (Vec<String>, Value) {
    let c = reqwest::Client::new();
    let t = Instant::now();
    let mut seen = Vec::new();
    loop {
        let v: Value = c
            .get(format!("{base}/v1/analyses/{id}/verdict"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let verdict = v["verdict"].as_str().unwrap().to_owned();
        if seen.last() != Some(&verdict) {
            seen.push(verdict);
        }
        if v["decided"] == true || t.elapsed() > limit {
            return (seen, v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// === a real Prometheus ===

const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";

/// A Prometheus server on loopback, killed on drop.
pub struct Prometheus {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start Prometheus scraping the targets of `file_sd` every second; `None` when the binary is
/// missing and MESHGATE_EXTERNAL_TESTS=skip.
pub async fn prometheus(file_sd: &str) -> Option<Prometheus> {
    if !std::path::Path::new(PROMETHEUS_BIN).exists() {
        if std::env::var("MESHGATE_EXTERNAL_TESTS").as_deref() == Ok("skip") {
            eprintln!("skipped: {PROMETHEUS_BIN} missing (MESHGATE_EXTERNAL_TESTS=skip)");
            return None;
        }
        panic!("{PROMETHEUS_BIN} is missing: install the Debian package `prometheus` (apt-get install prometheus), or set MESHGATE_EXTERNAL_TESTS=skip");
    }
    let dir = tempfile::tempdir().unwrap();
    let sd = dir.path().join("targets.json");
    std::fs::write(&sd, file_sd).unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: mesh\n    file_sd_configs:\n      - files: [\"{}\"]\n        refresh_interval: 1s\n",
            sd.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(PROMETHEUS_BIN)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("{url}/-/ready")).await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "prometheus did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Some(Prometheus {
        child,
        url,
        _dir: dir,
    })
}
