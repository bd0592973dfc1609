//! Istio upgrade intelligence end to end over real sockets: the simulated mesh with a sick canary
//! istiod, a version skew, rollback triggers and an upgrade plan, judged by the daemon's API.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use meshgate::config::{Config, StaticTarget};
use meshgate::judge::Catalog;
use meshgate::sim::{Cohort, Fault, IstiodFault, SimConfig, SimMesh};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

struct Setup {
    base: String,
    stop: CancellationToken,
    _running: meshgate::daemon::Running,
}

async fn setup(
    sim: SimConfig,
    extra_toml: &str,
    relabel: impl Fn(&mut StaticTarget),
) -> (Setup, SimMesh) {
    let stop = CancellationToken::new();
    let mesh = SimMesh::start(sim.clone(), IpAddr::V4(Ipv4Addr::LOCALHOST), stop.clone())
        .await
        .unwrap();
    let toml = format!(
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
        {extra_toml}
        "#
    );
    let mut cfg = Config::from_toml(&toml, "istio-e2e").unwrap();
    cfg.targets = mesh
        .targets()
        .into_iter()
        .map(|t| {
            let mut s = StaticTarget {
                url: t.url,
                labels: t.labels,
            };
            relabel(&mut s);
            s
        })
        .collect();
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let running = meshgate::daemon::start(cfg, Catalog::builtin(), listener, stop.clone())
        .await
        .unwrap();
    let base = format!("http://{}", running.addr);
    (
        Setup {
            base,
            stop,
            _running: running,
        },
        mesh,
    )
}

fn sim(seed: u64) -> SimConfig {
    let mut s = SimConfig {
        rps_per_pod: 2000.0,
        seed,
        ..SimConfig::default()
    };
    s.baseline.pods = 2;
    s.canary.pods = 2;
    s.baseline.connected_proxies = Some(200);
    s.canary.connected_proxies = Some(200);
    s
}

async fn follow(base: &str, body: Value, limit: Duration) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/analyses"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (_, v) = crate::support::follow_verdicts(base, body["name"].as_str().unwrap(), limit).await;
    assert_eq!(v["decided"], true, "undecided after {limit:?}: {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sick_canary_istiod_is_no_go_naming_control_plane_checks() {
    let (s, mesh) = setup(sim(11), "", |_| {}).await;
    mesh.set_istiod_fault(
        Cohort::Canary,
        IstiodFault {
            rejects_per_min: 120.0,
            convergence_factor: 4.0,
            ..Default::default()
        },
    );
    let v = follow(
        &s.base,
        json!({
            "name": "cp",
            "baseline": "{role=\"istiod\", revision=\"1-24-2\"}",
            "canary": "{role=\"istiod\", revision=\"1-25-0\"}",
            "checks": ["istiod-xds-rejects", "istiod-convergence", "istiod-push-errors"],
        }),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(v["verdict"], "NO-GO", "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("istiod-convergence") || reason.contains("istiod-xds-rejects"),
        "{reason}"
    );
    let rejects = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "istiod-xds-rejects")
        .unwrap();
    assert_eq!(
        rejects["tests"][0]["baseline"]["events"], 0.0,
        "the healthy istiod has no rejects"
    );
    assert!(
        rejects["tests"][0]["baseline"]["exposure"]
            .as_f64()
            .unwrap()
            > 0.0,
        "pushes counted"
    );
    // Control-plane resources of both revisions side by side.
    let cp: Value = reqwest::get(format!("{}/v1/control-plane", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let c = &cp["clusters"]["cluster-1"];
    assert_eq!(c["istiods"].as_array().unwrap().len(), 2, "{cp}");
    assert!(c["total_resident_bytes"].as_f64().unwrap() > 1e7, "{cp}");
    assert!(c["overhead_of_running_all"].as_f64().unwrap() > 0.5, "{cp}");
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skew_turns_the_data_plane_analysis_no_go_at_once() {
    let mut cfg = sim(12);
    cfg.canary.proxy_version = Some("1.26.0".into());
    let (s, _mesh) = setup(cfg, "", |_| {}).await;
    let v = follow(
        &s.base,
        json!({
            "name": "dp",
            "baseline": "{role=\"proxy\", revision=\"1-24-2\"}",
            "canary": "{role=\"proxy\", revision=\"1-25-0\"}",
        }),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(v["verdict"], "NO-GO", "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.starts_with("version skew guard:"), "{reason}");
    assert!(
        reason.contains("proxy 1.26.0 is newer than istiod 1.25.0"),
        "{reason}"
    );
    let skew: Value = reqwest::get(format!("{}/v1/skew", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(skew["verdict"], "NO-GO");
    let revs = skew["clusters"]["cluster-1"].as_array().unwrap();
    let canary = revs.iter().find(|r| r["revision"] == "1-25-0").unwrap();
    assert_eq!(canary["istiods"][0]["connected"]["1.26.0"], 200.0, "{skew}");
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_trigger_fires_before_the_e_process() {
    let (s, mesh) = setup(sim(13), "", |_| {}).await;
    mesh.set_fault(
        Cohort::Canary,
        Fault {
            error_rate: Some(0.0015),
            latency_factor: 1.0,
        },
    );
    let v = follow(
        &s.base,
        json!({
            "name": "trig",
            "baseline": "{role=\"proxy\", revision=\"1-24-2\"}",
            "canary": "{role=\"proxy\", revision=\"1-25-0\"}",
            "checks": ["error-rate"],
            "rollback": [{"name": "no-5xx-on-canary", "check": "error-rate", "when": "canary_events", "above": 0}],
        }),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(v["verdict"], "NO-GO", "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("rollback trigger \"no-5xx-on-canary\" fired"),
        "{reason}"
    );
    // A trigger on a check the analysis does not run is refused with its key.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/analyses", s.base))
        .json(&json!({
            "name": "bad",
            "baseline": "{role=\"proxy\", revision=\"1-24-2\"}",
            "canary": "{role=\"proxy\", revision=\"1-25-0\"}",
            "checks": ["error-rate"],
            "rollback": [{"name": "p99", "check": "latency-tail", "when": "quantile_ratio", "quantile": 0.99, "factor": 1.5}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let text = r.text().await.unwrap();
    assert!(text.contains("analysis.rollback[0].check"), "{text}");
    s.stop.cancel();
}

/// file_sd JSON of these simulated targets (`__metrics_path__` from each URL).
fn file_sd(targets: &[meshgate::sim::SimTarget]) -> String {
    let groups: Vec<Value> = targets
        .iter()
        .map(|t| {
            let rest = t.url.strip_prefix("http://").unwrap();
            let (addr, path) = rest.split_at(rest.find('/').unwrap());
            let mut labels = t.labels.clone();
            labels.insert("__metrics_path__".into(), path.into());
            json!({"targets": [addr], "labels": labels})
        })
        .collect();
    serde_json::to_string(&groups).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_status_follows_discovery_and_starts_wave_analyses() {
    // Namespaces "staging" (1.6% 5xx) and "shop" (0.4%): different services. Discovery (file_sd)
    // first lists the old revision's pods only; the wave's analysis must exist before staging
    // moves (the before/after design needs its pre-move rate). Then staging moves: its new pods
    // replace its old ones in discovery and in the traffic. The wave must end GO (nothing
    // changed), judged before/after, and the next wave's analysis start before shop moves.
    // A/A at alpha 0.01 (the line lands in `[judge]`): a chance NO-GO in at most 1% of runs.
    let stop = CancellationToken::new();
    let mut sim = sim(14);
    sim.namespaces = vec!["staging".into(), "shop".into()];
    sim.baseline.pods = 4;
    sim.canary.pods = 4;
    sim.rps_per_pod = 50_000.0;
    sim.error_rate = 0.004;
    sim.namespace_error_factors = [("staging".to_string(), 4.0)].into();
    sim.staged = true;
    let mesh = SimMesh::start(sim, IpAddr::V4(Ipv4Addr::LOCALHOST), stop.clone())
        .await
        .unwrap();
    let all = mesh.targets();
    let is = |t: &meshgate::sim::SimTarget, k: &str, v: &str| {
        t.labels.get(k).map(String::as_str) == Some(v)
    };
    let before: Vec<_> = all
        .iter()
        .filter(|t| !(is(t, "role", "proxy") && is(t, "revision", "1-25-0")))
        .cloned()
        .collect();
    let after: Vec<_> = all
        .iter()
        .filter(|t| {
            !is(t, "role", "proxy")
                || (is(t, "namespace", "staging") == is(t, "revision", "1-25-0"))
        })
        .cloned()
        .collect();
    let dir = std::env::temp_dir().join(format!("meshgate-plan-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sd = dir.join("targets.json");
    std::fs::write(&sd, file_sd(&before)).unwrap();
    let toml = format!(
        r#"
        [scrape]
        interval = "250ms"
        timeout = "200ms"
        [discovery]
        file_sd = ["{}"]
        refresh = "250ms"
        [judge]
        alpha = 0.01
        min_duration = "5s"
        max_duration = "120s"
        min_exposure = 1000
        [plan]
        name = "1.24 to 1.25"
        from_revision = "1-24-2"
        to_revision = "1-25-0"
        [[plan.waves]]
        name = "staging"
        namespaces = ["staging"]
        soak = "2s"
        checks = ["error-rate"]
        [[plan.waves]]
        name = "critical"
        namespaces = ["shop"]
        soak = "1h"
        checks = ["error-rate"]
        "#,
        sd.display()
    );
    let cfg = Config::from_toml(&toml, "plan-e2e").unwrap();
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let running = meshgate::daemon::start(cfg, Catalog::builtin(), listener, stop.clone())
        .await
        .unwrap();
    let base = format!("http://{}", running.addr);
    let c = reqwest::Client::new();
    let p: Value = c
        .get(format!("{base}/v1/plan"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(p["waves"][0]["name"], "staging");
    // The first wave's analysis starts before anything moves, in the before/after design.
    let start = Instant::now();
    let a: Value = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let r = c
            .get(format!("{base}/v1/analyses/plan-staging/verdict"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let v: Value = r.json().await.unwrap();
            if v["reason"]
                .as_str()
                .unwrap_or("")
                .contains("workloads with a pre-move window")
            {
                break v;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no wave analysis before the move"
        );
    };
    assert_eq!(a["verdict"], "PENDING", "{a}");
    // Twenty seconds of pre-move window (~16,000 5xx per staging workload, ~8,000 of the
    // controls: bounds on each workload's relative rate within a few percent), then staging
    // moves.
    tokio::time::sleep(Duration::from_secs(20)).await;
    mesh.move_namespace("staging");
    std::fs::write(&sd, file_sd(&after)).unwrap();
    let start = Instant::now();
    let status = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = c
            .get(format!("{base}/v1/plan/status"))
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            continue;
        }
        let st: Value = r.json().await.unwrap();
        if st["waves"][0]["phase"] == "done" || st["waves"][0]["phase"] == "failed" {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(110), "{st}");
    };
    assert_eq!(status["waves"][0]["phase"], "done", "{status}");
    assert_eq!(status["waves"][0]["verdict"], "GO", "{status}");
    assert_eq!(status["waves"][0]["namespaces"]["staging"][0], "moved");
    assert_eq!(status["current_wave"], "critical");
    assert_eq!(status["next_wave_may_start"], true, "{status}");
    // `meshgate plan status` reads the same answer as the core's plan status document.
    let url = base.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
            .args(["plan", "status", "--url", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("staging") && text.contains("done") && text.contains("verdict GO"),
        "{text}"
    );
    assert_eq!(status["waves"][1]["namespaces"]["shop"][0], "not_started");
    assert!(status["waves"][1]["rollback"][0]
        .as_str()
        .unwrap()
        .contains("kubectl label namespace shop istio.io/rev=1-24-2 --overwrite"));
    // The GO was a before/after comparison of the moved workloads with themselves.
    let v: Value = c
        .get(format!("{base}/v1/analyses/plan-staging/verdict"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let strata = v["checks"][0]["strata"].as_array().unwrap();
    assert!(!strata.is_empty(), "{v}");
    assert!(
        strata
            .iter()
            .all(|s| s["name"].as_str().unwrap().starts_with("staging/") && s["certified"] == true),
        "{v}"
    );
    // The next wave's analysis is already watching shop on the old revision.
    let next: Value = c
        .get(format!("{base}/v1/analyses/plan-critical/verdict"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(next["verdict"], "PENDING", "{next}");
    assert!(
        next["reason"]
            .as_str()
            .unwrap()
            .contains("no workload of shop has moved"),
        "{next}"
    );
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

/// "Any certificate signing error on the canary istiod": a rollback trigger on
/// `istiod-csr-sign-errors` stays quiet while istiod is healthy and turns the analysis NO-GO,
/// naming the trigger, once the canary's CA fails to sign CSRs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_signing_errors_fire_the_mtls_rollback_trigger() {
    let (s, mesh) = setup(sim(15), "", |_| {}).await;
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/v1/analyses", s.base))
        .json(&json!({
            "name": "certs",
            "baseline": "{role=\"istiod\", revision=\"1-24-2\"}",
            "canary": "{role=\"istiod\", revision=\"1-25-0\"}",
            "checks": ["istiod-xds-rejects", "istiod-csr-sign-errors"],
            "rollback": [{"name": "no-cert-signing-errors-on-canary", "check": "istiod-csr-sign-errors", "when": "canary_events"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let url = format!("{}/v1/analyses/certs/verdict", s.base);
    let verdict = |c: reqwest::Client| {
        let url = url.clone();
        async move {
            c.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    // Healthy for a few seconds (several ticks): no trigger.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let v = verdict(c.clone()).await;
    assert_ne!(v["verdict"], "NO-GO", "healthy istiod: {v}");
    mesh.set_istiod_fault(
        Cohort::Canary,
        IstiodFault {
            csr_sign_errors_per_min: 120.0,
            ..Default::default()
        },
    );
    let start = Instant::now();
    let v = loop {
        let v = verdict(c.clone()).await;
        if v["decided"] == true {
            break v;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "undecided: {v}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(v["verdict"], "NO-GO", "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("rollback trigger \"no-cert-signing-errors-on-canary\" fired"),
        "{reason}"
    );
    assert!(reason.contains("CSR sign errors"), "{reason}");
    let check = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "istiod-csr-sign-errors")
        .unwrap();
    assert_eq!(check["tests"][0]["baseline"]["events"], 0.0, "{check}");
    s.stop.cancel();
}
