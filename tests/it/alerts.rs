//! Alerting against a real Alertmanager (Debian `prometheus-alertmanager`, started here on
//! loopback with a temp dir) and a local webhook receiver that verifies the HMAC signature.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{lab, BAD, GOOD};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const AM_BIN: &str = "/usr/bin/prometheus-alertmanager";

struct Alertmanager {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_alertmanager() -> Option<Alertmanager> {
    if !std::path::Path::new(AM_BIN).exists() {
        if std::env::var("MESHGATE_EXTERNAL_TESTS").as_deref() == Ok("skip") {
            eprintln!("skipped: {AM_BIN} missing and MESHGATE_EXTERNAL_TESTS=skip");
            return None;
        }
        panic!("{AM_BIN} is missing: install the Debian package prometheus-alertmanager (apt-get install prometheus-alertmanager), or set MESHGATE_EXTERNAL_TESTS=skip");
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("alertmanager.yml");
    std::fs::write(
        &cfg,
        "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    let port = crate::support::free_port();
    let child = Command::new(AM_BIN)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start alertmanager");
    let am = Alertmanager {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let start = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("{}/-/ready", am.url)).await {
            if r.status() == 200 {
                return Some(am);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "alertmanager did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Default)]
struct Received {
    calls: u32,
    bodies: Vec<Value>,
}

/// A webhook receiver that checks `X-Meshgate-Signature` and fails its first call with 500.
async fn receiver(secret: &'static str) -> (String, Arc<Mutex<Received>>) {
    let got = Arc::new(Mutex::new(Received::default()));
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let g = g.clone();
                async move {
                    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
                    mac.update(&body);
                    let want: String = mac
                        .finalize()
                        .into_bytes()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    let sig = headers
                        .get("x-meshgate-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if sig != format!("sha256={want}") {
                        return axum::http::StatusCode::UNAUTHORIZED;
                    }
                    let mut r = g.lock().unwrap();
                    r.calls += 1;
                    if r.calls == 1 {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    r.bodies.push(serde_json::from_slice(&body).unwrap());
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}/hook"), got)
}

async fn am_alerts(am: &str) -> Vec<Value> {
    reqwest::get(format!("{am}/api/v2/alerts"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Wait (30 s at most) until Alertmanager holds no firing alert of `analysis`: gone, or its
/// `endsAt` passed.
async fn wait_resolved(am: &str, analysis: &str) {
    let start = Instant::now();
    loop {
        let all = am_alerts(am).await;
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        match ours(&all, analysis) {
            None => return,
            Some(a) if a["endsAt"].as_str().unwrap() <= now.as_str() => return,
            Some(_) => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "alert of {analysis} not resolved: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ours<'a>(alerts: &'a [Value], analysis: &str) -> Option<&'a Value> {
    alerts.iter().find(|a| a["labels"]["analysis"] == analysis)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_go_fires_in_alertmanager_and_resolves_on_delete() {
    let Some(am) = start_alertmanager().await else {
        return;
    };
    let (hook, got) = receiver("s3cret").await;
    let l = lab(&format!(
        r#"
        [alerts]
        alertmanager = ["{}"]
        external_url = "https://meshgate.example"
        resend_interval = "1s"
        backoff = "200ms"
        labels = {{ cluster = "lab" }}
        [[alerts.webhooks]]
        url = "{hook}"
        secret = "s3cret"
        "#,
        am.url
    ))
    .await;
    let c = reqwest::Client::new();
    let mk = |name: &str, revs: (&str, &str)| {
        json!({"name": name,
               "baseline": format!("{{role=\"proxy\", namespace=\"shop\", revision=\"{}\"}}", revs.0),
               "canary": format!("{{role=\"proxy\", namespace=\"shop\", revision=\"{}\"}}", revs.1)})
    };
    for (n, r) in [("am-bad", BAD), ("am-good", GOOD)] {
        let r = c
            .post(format!("{}/v1/analyses", l.base))
            .json(&mk(n, r))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let v = l.wait_final("am-bad", Duration::from_secs(150)).await;
    assert_eq!(v["verdict"], "NO-GO");
    // The alert appears in Alertmanager, active, with routable labels.
    let start = Instant::now();
    let first = loop {
        let all = am_alerts(&am.url).await;
        if let Some(a) = ours(&all, "am-bad") {
            break a.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no alert in alertmanager: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(first["status"]["state"], "active", "{first:#}");
    let labels = &first["labels"];
    assert_eq!(labels["alertname"], "MeshgateNoGo");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["baseline_revision"], BAD.0);
    assert_eq!(labels["canary_revision"], BAD.1);
    assert_eq!(labels["namespace"], "shop");
    assert_eq!(labels["cluster"], "lab");
    assert!(
        first["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("error-rate"),
        "{first:#}"
    );
    assert_eq!(
        first["annotations"]["report_url"], "https://meshgate.example/report/analyses/am-bad",
        "{first:#}"
    );
    assert_eq!(
        first["generatorURL"],
        "https://meshgate.example/v1/analyses/am-bad/verdict"
    );
    // Re-sent while active: Alertmanager's updatedAt moves on.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let again = am_alerts(&am.url).await;
    let again = ours(&again, "am-bad").expect("still active");
    assert_ne!(again["updatedAt"], first["updatedAt"], "periodic re-send");
    assert_eq!(
        again["startsAt"], first["startsAt"],
        "same alert, same start"
    );
    // Let the healthy analysis finish: a GO must never alert.
    let g = l.wait_final("am-good", Duration::from_secs(150)).await;
    assert_eq!(g["verdict"], "GO");
    // Deleting the analysis resolves the alert.
    let r = c
        .delete(format!("{}/v1/analyses/am-bad", l.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    wait_resolved(&am.url, "am-bad").await;
    assert!(ours(&am_alerts(&am.url).await, "am-good").is_none());
    // The webhook got exactly one firing and one resolved (after a retried 500), signed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    {
        let r = got.lock().unwrap();
        let statuses: Vec<(String, String)> = r
            .bodies
            .iter()
            .flat_map(|b| b["alerts"].as_array().unwrap().clone())
            .map(|a| {
                (
                    a["labels"]["analysis"].as_str().unwrap().to_owned(),
                    a["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            statuses,
            vec![
                ("am-bad".to_owned(), "firing".to_owned()),
                ("am-bad".to_owned(), "resolved".to_owned())
            ],
            "{:?}",
            r.bodies
        );
        assert_eq!(
            r.calls, 3,
            "one failed try, then the firing and the resolved deliveries"
        );
    }
    l.shutdown().await;
}

/// The alert statuses the webhook received, in order, as (analysis, alertname, status).
fn hook_statuses(r: &Received) -> Vec<(String, String, String)> {
    r.bodies
        .iter()
        .flat_map(|b| b["alerts"].as_array().unwrap().clone())
        .map(|a| {
            (
                a["labels"]["analysis"].as_str().unwrap().to_owned(),
                a["labels"]["alertname"].as_str().unwrap().to_owned(),
                a["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inconclusive_alerts_with_its_reason_and_resolves_on_delete() {
    let Some(am) = start_alertmanager().await else {
        return;
    };
    let (hook, got) = receiver("s3cret").await;
    let l = lab(&format!(
        r#"
        [alerts]
        alertmanager = ["{}"]
        resend_interval = "1s"
        backoff = "200ms"
        [[alerts.webhooks]]
        url = "{hook}"
        secret = "s3cret"
        "#,
        am.url
    ))
    .await;
    let c = reqwest::Client::new();
    // A baseline that never has data: the analysis can only end INCONCLUSIVE at max_duration.
    let r = c
        .post(format!("{}/v1/analyses", l.base))
        .json(&json!({"name": "am-unsure",
               "baseline": "{role=\"proxy\", namespace=\"shop\", revision=\"does-not-exist\"}",
               "canary": format!("{{role=\"proxy\", namespace=\"shop\", revision=\"{}\"}}", GOOD.1),
               "min_duration": "1s", "max_duration": "3s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v = l.wait_final("am-unsure", Duration::from_secs(60)).await;
    assert_eq!(v["verdict"], "INCONCLUSIVE");
    let reason = v["reason"].as_str().unwrap().to_owned();
    let start = Instant::now();
    let first = loop {
        let all = am_alerts(&am.url).await;
        if let Some(a) = ours(&all, "am-unsure") {
            break a.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no alert in alertmanager: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(first["status"]["state"], "active", "{first:#}");
    assert_eq!(first["labels"]["alertname"], "MeshgateInconclusive");
    assert_eq!(first["labels"]["severity"], "warning");
    assert_eq!(first["labels"]["verdict"], "INCONCLUSIVE");
    assert_eq!(
        first["annotations"]["description"],
        reason.as_str(),
        "{first:#}"
    );
    assert!(
        first["annotations"]["report_url"]
            .as_str()
            .unwrap()
            .ends_with("/report/analyses/am-unsure"),
        "{first:#}"
    );
    // The webhook's first call fails; wait for the retried firing before resolving, or the
    // coalescing queue rightly sends only the newer, resolved state.
    let want = |st: &str| {
        (
            "am-unsure".to_owned(),
            "MeshgateInconclusive".to_owned(),
            st.to_owned(),
        )
    };
    let start = Instant::now();
    while hook_statuses(&got.lock().unwrap()) != vec![want("firing")] {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no firing webhook"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c
        .delete(format!("{}/v1/analyses/am-unsure", l.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    wait_resolved(&am.url, "am-unsure").await;
    let start = Instant::now();
    loop {
        let s = hook_statuses(&got.lock().unwrap());
        if s == vec![want("firing"), want("resolved")] {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "webhook got {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    l.shutdown().await;
}

#[tokio::test]
async fn alerts_on_turns_inconclusive_off_and_rejects_other_verdicts() {
    let c = meshgate::config::Config::from_toml("[alerts]\non = [\"NO-GO\"]\n", "t").unwrap();
    assert_eq!(c.alerts.on, vec![meshgate::judge::Verdict::NoGo]);
    let d = meshgate::config::Config::from_toml("", "t").unwrap();
    assert_eq!(
        d.alerts.on,
        vec![
            meshgate::judge::Verdict::NoGo,
            meshgate::judge::Verdict::Inconclusive
        ]
    );
    let e = meshgate::config::Config::from_toml("[alerts]\non = [\"GO\"]\n", "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("alerts.on[0]"), "{e}");
}

#[tokio::test]
async fn bad_alerts_config_names_each_key() {
    let e = meshgate::config::Config::from_toml(
        r#"
        [alerts]
        alertmanager = ["ftp://x"]
        queue = 0
        resend_interval = "1ms"
        labels = { "bad-name" = "x" }
        [[alerts.webhooks]]
        url = "http://ok"
        secret = ""
        "#,
        "t",
    )
    .unwrap_err()
    .to_string();
    for key in [
        "alerts.alertmanager[0]",
        "alerts.queue",
        "alerts.resend_interval",
        "alerts.labels.bad-name",
        "alerts.webhooks[0].secret",
    ] {
        assert!(e.contains(key), "{key} missing in {e}");
    }
}
