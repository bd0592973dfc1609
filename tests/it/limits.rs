//! Plausibility limits and truncation signals through the real daemon (issue 13, cases 1 and 8):
//! one canary sidecar is scraped through a proxy that rewrites its page (a u64 wrap, 1e308 5xx,
//! OpenMetrics with and without `# EOF`). The broken page never reaches an e-process, the target
//! is shown quarantined or down in `/v1/targets`, GO is blocked while it lasts, and no e-value is
//! ever JSON `null`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshgate::config::{Config, StaticTarget};
use meshgate::judge::Catalog;
use meshgate::sim::{Cohort, Fault, RevisionSpec, SimConfig, SimMesh};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::support::selectors;

const REVS: (&str, &str) = ("3-24-2", "3-25-0");

/// What the proxy does to the next page.
const PASS: u8 = 0;
/// The destination 200s of the next page become 18446744073709551615 (a u64 wrap).
const WRAP_ONCE: u8 = 1;
/// Every page's destination 200s become 18446744073709551615.
const WRAP_ALWAYS: u8 = 2;
/// The destination 5xx of the next page become 1e308.
const HUGE_5XX_ONCE: u8 = 3;
/// Every page served as OpenMetrics without its `# EOF` line (as if cut at a line end).
const OPENMETRICS_NO_EOF: u8 = 4;
/// Every page served as OpenMetrics, whole.
const OPENMETRICS: u8 = 5;

/// Replace the value of every `istio_requests_total` destination line whose response code
/// starts with `code` by `value`; true if one was found.
fn rewrite(page: &str, code: &str, value: &str) -> (String, bool) {
    let mut out = String::with_capacity(page.len());
    let mut found = false;
    let want = format!("response_code=\"{code}");
    for line in page.lines() {
        if line.starts_with("istio_requests_total{")
            && line.contains("reporter=\"destination\"")
            && line.contains(&want)
        {
            let cut = line.rfind(' ').unwrap();
            out.push_str(&line[..cut]);
            out.push(' ');
            out.push_str(value);
            found = true;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    (out, found)
}

/// A proxy in front of `upstream` rewriting its pages as `mode` says.
async fn proxy(upstream: String, mode: Arc<AtomicU8>, stop: CancellationToken) -> String {
    let l = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move || {
        let (client, upstream, mode) = (client.clone(), upstream.clone(), mode.clone());
        async move {
            let page = client
                .get(&upstream)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let m = mode.load(Ordering::SeqCst);
            let (page, found) = match m {
                WRAP_ONCE | WRAP_ALWAYS => rewrite(&page, "200", "18446744073709551615"),
                HUGE_5XX_ONCE => rewrite(&page, "5", "1e308"),
                OPENMETRICS => (format!("{page}# EOF\n"), true),
                _ => (page, true),
            };
            if found && (m == WRAP_ONCE || m == HUGE_5XX_ONCE) {
                mode.store(PASS, Ordering::SeqCst);
            }
            let kind = if m == OPENMETRICS || m == OPENMETRICS_NO_EOF {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            } else {
                "text/plain; version=0.0.4; charset=utf-8"
            };
            ([(axum::http::header::CONTENT_TYPE, kind)], page)
        }
    });
    tokio::spawn(async move {
        axum::serve(l, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .unwrap();
    });
    format!("http://{addr}/stats/prometheus")
}

struct Setup {
    base: String,
    mode: Arc<AtomicU8>,
    proxied: String,
    stop: CancellationToken,
    running: meshgate::daemon::Running,
    _mesh: SimMesh,
}

/// A mesh of two sidecars per cohort serving `rps` each, the canary's with `canary_errors` 5xx, the first canary
/// sidecar scraped through the rewriting proxy.
async fn setup(seed: u64, rps: f64, canary_errors: f64) -> Setup {
    let stop = CancellationToken::new();
    let mut sim = SimConfig {
        rps_per_pod: rps,
        error_rate: 0.001,
        seed,
        ..SimConfig::default()
    };
    sim.baseline = RevisionSpec::new(REVS.0, &REVS.0.replace('-', "."), 2);
    sim.canary = RevisionSpec::new(REVS.1, &REVS.1.replace('-', "."), 2);
    let mesh = SimMesh::start(sim, IpAddr::V4(Ipv4Addr::LOCALHOST), stop.clone())
        .await
        .unwrap();
    mesh.set_fault(
        Cohort::Canary,
        Fault {
            error_rate: Some(canary_errors),
            latency_factor: 1.0,
        },
    );
    let mut cfg = Config::from_toml(
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
        "#,
        "limits",
    )
    .unwrap();
    let mode = Arc::new(AtomicU8::new(PASS));
    let mut proxied = None;
    for t in mesh.targets() {
        let canary_proxy = t.labels["role"] == "proxy" && t.labels["revision"] == REVS.1;
        let url = if canary_proxy && proxied.is_none() {
            let u = proxy(t.url, mode.clone(), stop.clone()).await;
            proxied = Some(u.clone());
            u
        } else {
            t.url
        };
        cfg.targets.push(StaticTarget {
            url,
            labels: t.labels,
        });
    }
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let running = meshgate::daemon::start(cfg, Catalog::builtin(), listener, stop.clone())
        .await
        .unwrap();
    Setup {
        base: format!("http://{}", running.addr),
        mode,
        proxied: proxied.unwrap(),
        stop,
        running,
        _mesh: mesh,
    }
}

impl Setup {
    async fn create(&self, name: &str) {
        let (b, c) = selectors(REVS);
        let r = reqwest::Client::new()
            .post(format!("{}/v1/analyses", self.base))
            .json(&json!({"name": name, "baseline": b, "canary": c, "checks": ["error-rate"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }

    async fn verdict(&self, id: &str) -> Value {
        reqwest::get(format!("{}/v1/analyses/{id}/verdict", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The proxied target's entry in `/v1/targets`.
    async fn target(&self) -> Value {
        let all: Value = reqwest::get(format!("{}/v1/targets", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .find(|t| t["url"] == self.proxied.as_str())
            .cloned()
            .unwrap()
    }

    /// Wait until the canary has sent data (so a rewritten page lands mid-analysis).
    async fn wait_flowing(&self, id: &str) {
        let t0 = Instant::now();
        loop {
            let v = self.verdict(id).await;
            if v["data_quality"]["canary"]["fresh"] == 2 {
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "{v:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn shutdown(self) {
        self.stop.cancel();
        self.running.join().await;
    }
}

/// Every e-value in a verdict document is a number (JSON has no infinity: serde writes `null`).
fn assert_e_values_are_numbers(v: &Value) {
    assert!(v["e_value"].is_number(), "combined e_value: {v:#}");
    for c in v["checks"].as_array().unwrap() {
        assert!(c["e_value"].is_number(), "check e_value: {c:#}");
        for t in c["tests"].as_array().unwrap() {
            assert!(t["e_value"].is_number(), "test e_value: {t:#}");
        }
        for s in c["strata"].as_array().into_iter().flatten() {
            if let Some(e) = s.get("e_value") {
                assert!(e.is_number(), "stratum e_value: {s:#}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_u64_wrap_page_never_makes_a_worse_canary_go() {
    // The canary returns twice the baseline's 5xx (0.2% against 0.1%). Before the limits, one
    // page of one canary pod with 18446744073709551615 requests gave it 1.8e19 requests of
    // exposure, a 5xx rate of 0.00% and a GO at the minimum duration.
    // 200 requests/s per pod: the real difference takes far longer than the test to show.
    let s = setup(41, 200.0, 0.002).await;
    s.create("wrap").await;
    s.wait_flowing("wrap").await;
    s.mode.store(WRAP_ONCE, Ordering::SeqCst);
    let t0 = Instant::now();
    // Well past the minimum duration (4 s): GO would have come by now.
    while t0.elapsed() < Duration::from_secs(12) {
        let v = s.verdict("wrap").await;
        assert_ne!(v["verdict"], "GO", "{v:#}");
        assert_e_values_are_numbers(&v);
        let exposure = v["checks"][0]["tests"][0]["canary"]["exposure"]
            .as_f64()
            .expect("the canary's exposure");
        assert!(exposure < 1e9, "the wrapped value counted: {v:#}");
        if v["decided"] == true {
            assert_eq!(v["verdict"], "NO-GO", "{v:#}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.mode.load(Ordering::SeqCst), PASS, "the page was served");
    let t = s.target().await;
    assert!(t["quarantined_pages"].as_u64().unwrap() >= 1, "{t:#}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_canary_target_blocks_go_until_its_pages_are_clean() {
    // A healthy canary; one of its sidecars serves a u64 wrap on every page.
    let s = setup(42, 2000.0, 0.001).await;
    s.create("held").await;
    s.wait_flowing("held").await;
    s.mode.store(WRAP_ALWAYS, Ordering::SeqCst);
    // Past the minimum duration the analysis is held by data quality, and says why.
    let t0 = Instant::now();
    let mut blocked = None;
    while t0.elapsed() < Duration::from_secs(7) {
        let v = s.verdict("held").await;
        assert_ne!(v["verdict"], "GO", "{v:#}");
        assert_e_values_are_numbers(&v);
        if v["data_quality"]["blocked_by"]["threshold"] == "plausibility_limits" {
            blocked = Some(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = blocked.expect("data quality never named the quarantine");
    let b = &v["data_quality"]["blocked_by"];
    assert_eq!(b["cohort"], "canary", "{b:#}");
    let msg = b["message"].as_str().unwrap();
    assert!(
        msg.contains("quarantined") && msg.contains("max_counter_value"),
        "{msg}"
    );
    assert_eq!(v["data_quality"]["canary"]["quarantined"], 1, "{v:#}");
    let t = s.target().await;
    assert_eq!(t["up"], false, "{t:#}");
    let why = t["quarantine"].as_str().unwrap();
    assert!(
        why.contains("istio_requests_total") && why.contains("max_counter_value"),
        "{why}"
    );
    assert!(t["quarantined_pages"].as_u64().unwrap() >= 5, "{t:#}");

    // Clean pages again: the quarantine lifts and the healthy canary goes on to GO.
    s.mode.store(PASS, Ordering::SeqCst);
    let t0 = Instant::now();
    let v = loop {
        let v = s.verdict("held").await;
        assert_e_values_are_numbers(&v);
        if v["decided"] == true {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(v["verdict"], "GO", "{v:#}");
    assert!(s.target().await["quarantine"].is_null());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1e308_5xx_value_gives_no_false_no_go_and_no_null_e_value() {
    // Before: one 5xx value of 1e308 on a healthy canary gave NO-GO with `e_value: null`.
    let s = setup(43, 2000.0, 0.001).await;
    s.create("huge").await;
    s.wait_flowing("huge").await;
    s.mode.store(HUGE_5XX_ONCE, Ordering::SeqCst);
    let t0 = Instant::now();
    let v = loop {
        let v = s.verdict("huge").await;
        assert_e_values_are_numbers(&v);
        if v["decided"] == true {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(v["verdict"], "GO", "{v:#}");
    assert_eq!(s.mode.load(Ordering::SeqCst), PASS, "the page was served");
    let t = s.target().await;
    assert!(t["quarantined_pages"].as_u64().unwrap() >= 1, "{t:#}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openmetrics_page_without_eof_is_truncated_and_blocks_go() {
    let s = setup(44, 2000.0, 0.001).await;
    s.create("eof").await;
    s.wait_flowing("eof").await;
    s.mode.store(OPENMETRICS_NO_EOF, Ordering::SeqCst);
    let t0 = Instant::now();
    let mut said = None;
    while t0.elapsed() < Duration::from_secs(7) {
        let v = s.verdict("eof").await;
        assert_ne!(v["verdict"], "GO", "{v:#}");
        let t = s.target().await;
        if t["up"] == false {
            said = t["last_error"].as_str().map(str::to_owned);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let said = said.expect("the target never went down");
    assert!(
        said.contains("openmetrics page truncated") && said.contains("# EOF"),
        "{said}"
    );
    // The same pages with their `# EOF`: whole, the target is up and the healthy canary GOes.
    s.mode.store(OPENMETRICS, Ordering::SeqCst);
    let t0 = Instant::now();
    let v = loop {
        let v = s.verdict("eof").await;
        if v["decided"] == true {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(v["verdict"], "GO", "{v:#}");
    let t = s.target().await;
    assert_eq!(t["up"], true, "{t:#}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_every_request_gets_a_numeric_e_value() {
    // Every canary request a 5xx at 100,000 requests/s per pod (under the rate ceiling): one
    // tick's evidence overflows a double, and the e-value was JSON `null`.
    let s = setup(45, 100_000.0, 1.0).await;
    s.create("all-bad").await;
    let t0 = Instant::now();
    let v = loop {
        let v = s.verdict("all-bad").await;
        assert_e_values_are_numbers(&v);
        if v["decided"] == true {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(v["verdict"], "NO-GO", "{v:#}");
    assert!(v["e_value"].as_f64().unwrap() >= 20.0, "{v:#}");
    let (b, c) = selectors(REVS);
    let m: Value = reqwest::Client::new()
        .post(format!("{}/argo/v1/analyses/all-bad-argo", s.base))
        .json(&json!({"baseline": b, "canary": c, "checks": ["error-rate"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(m["e_value"].is_number(), "{m:#}");
    s.shutdown().await;
}
