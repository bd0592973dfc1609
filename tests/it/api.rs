//! The HTTP API over a real socket: status codes, error bodies, the analysis life cycle, and
//! that an analysis with no data never says GO.

use std::net::Ipv4Addr;
use std::time::Duration;

use meshgate::config::Config;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub async fn daemon(extra: &str) -> (String, CancellationToken, meshgate::daemon::Running) {
    let cfg = Config::from_toml(
        &format!(
            "[scrape]\ninterval = \"200ms\"\ntimeout = \"150ms\"\n[judge]\nmin_duration = \"1s\"\nmax_duration = \"3s\"\n{extra}"
        ),
        "test",
    )
    .unwrap();
    let (running, stop) = crate::support::daemon(cfg).await;
    (format!("http://{}", running.addr), stop, running)
}

pub fn analysis(name: &str) -> Value {
    json!({"name": name, "baseline": "{revision=\"old\"}", "canary": "{revision=\"new\"}"})
}

#[tokio::test]
async fn analysis_life_cycle_and_errors() {
    let (base, stop, running) = daemon("").await;
    let c = reqwest::Client::new();

    let r = c.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Malformed JSON: 400, with serde's position.
    let r = c
        .post(format!("{base}/v1/analyses"))
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1"),
        "{body}"
    );

    // Unknown field: 400 naming it.
    let mut bad = analysis("x");
    bad["colour"] = json!("red");
    let r = c
        .post(format!("{base}/v1/analyses"))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("colour"));

    // Unknown check: 422 naming it and the known ones.
    let mut bad = analysis("x");
    bad["checks"] = json!(["error-rate", "nope"]);
    let r = c
        .post(format!("{base}/v1/analyses"))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let msg = r.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        msg.contains("unknown check \"nope\"") && msg.contains("latency-tail"),
        "{msg}"
    );

    // Bad selector: 422 with the column.
    let mut bad = analysis("x");
    bad["canary"] = json!("{revision=\"new\"");
    let r = c
        .post(format!("{base}/v1/analyses"))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("analysis.canary: selector column"));

    // Create, read, conflict.
    let r = c
        .post(format!("{base}/v1/analyses"))
        .json(&analysis("wave-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["id"], "wave-1");
    assert_eq!(created["state"]["verdict"], "PENDING");
    let r = c
        .post(format!("{base}/v1/analyses"))
        .json(&analysis("wave-1"))
        .send()
        .await
        .unwrap();
    // The same definition again is the running analysis (issue 13: idempotent, not a 409).
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["id"], "wave-1");
    let mut other = analysis("wave-1");
    other["canary"] = json!("{revision=\"other\"}");
    let r = c
        .post(format!("{base}/v1/analyses"))
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let list: Value = c
        .get(format!("{base}/v1/analyses"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let v: Value = c
        .get(format!("{base}/v1/analyses/wave-1/verdict"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["verdict"], "PENDING");
    assert_eq!(v["threshold"], 20.0);
    assert_eq!(v["checks"].as_array().unwrap().len(), 2);

    // With no targets at all the analysis must end INCONCLUSIVE at max_duration, never GO.
    let mut seen = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let v: Value = c
            .get(format!("{base}/v1/analyses/wave-1/verdict"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen.push(v["verdict"].as_str().unwrap().to_owned());
        if v["decided"] == true {
            assert!(
                v["reason"].as_str().unwrap().contains("no decision after"),
                "{v}"
            );
            break;
        }
    }
    assert!(!seen.iter().any(|s| s == "GO"), "{seen:?}");
    assert_eq!(seen.last().unwrap(), "INCONCLUSIVE");

    let r = c.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains("meshgate_analysis_verdict{analysis=\"wave-1\",verdict=\"INCONCLUSIVE\"} 1"),
        "{metrics}"
    );

    // Delete, then 404.
    let r = c
        .delete(format!("{base}/v1/analyses/wave-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .get(format!("{base}/v1/analyses/wave-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .delete(format!("{base}/v1/analyses/wave-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c.get(format!("{base}/v1/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let checks: Value = c
        .get(format!("{base}/v1/checks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(checks[0]["name"], "error-rate");

    stop.cancel();
    running.join().await;
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let (base, stop, running) = daemon("[server]\nmax_body_bytes = 1024\n").await;
    let mut big = analysis("big");
    big["name"] = json!("x".repeat(4096));
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/analyses"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    stop.cancel();
    running.join().await;
}

#[tokio::test]
async fn unreachable_target_is_reported_and_blocks_go() {
    // A port nothing listens on: bind, note the port, close.
    let port = {
        let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let (base, stop, running) = daemon(&format!(
        "[[targets]]\nurl = \"http://127.0.0.1:{port}/stats/prometheus\"\nlabels = {{ revision = \"new\" }}\n"
    ))
    .await;
    let c = reqwest::Client::new();
    c.post(format!("{base}/v1/analyses"))
        .json(&analysis("dark"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let targets: Value = c
        .get(format!("{base}/v1/targets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(targets[0]["up"], false);
    assert!(
        targets[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("request failed"),
        "{targets}"
    );
    assert!(targets[0]["failures"].as_u64().unwrap() >= 2);
    let v: Value = c
        .get(format!("{base}/v1/analyses/dark/verdict"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data_quality"]["canary"]["unreachable"], 1, "{v}");
    assert_ne!(v["verdict"], "GO");
    stop.cancel();
    running.join().await;
}

#[tokio::test]
async fn verdict_events_are_broadcast() {
    let (base, stop, running) = daemon("").await;
    let mut events = running.shared.events.subscribe();
    let c = reqwest::Client::new();
    c.post(format!("{base}/v1/analyses"))
        .json(&analysis("ev"))
        .send()
        .await
        .unwrap();
    let first = events.recv().await.unwrap();
    assert!(
        matches!(&first, meshgate::daemon::VerdictEvent::Changed { previous: None, view } if view.id == "ev")
    );
    // No data: INCONCLUSIVE at max_duration (3 s).
    let second = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    match second {
        meshgate::daemon::VerdictEvent::Changed { previous, view } => {
            assert_eq!(previous, Some(meshgate::judge::Verdict::Pending));
            assert_eq!(
                view.state().verdict(),
                meshgate::judge::Verdict::Inconclusive
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    c.delete(format!("{base}/v1/analyses/ev"))
        .send()
        .await
        .unwrap();
    let third = events.recv().await.unwrap();
    assert!(matches!(
        third,
        meshgate::daemon::VerdictEvent::Deleted { .. }
    ));
    stop.cancel();
    running.join().await;
}

/// `/metrics` answers OpenMetrics to a scraper that asks for it (Prometheus' own Accept header) and
/// the text format 0.0.4 to anyone else; `promtool check metrics` (the real one) finds nothing to
/// say about the 0.0.4 page of a daemon that scraped a mesh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_negotiate_openmetrics_or_text_004_and_are_promtool_clean() {
    let lab = crate::support::lab("").await;
    let c = reqwest::Client::new();
    // Let a few scrapes happen so every family has samples.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let get = |accept: &'static str| {
        let c = c.clone();
        let url = format!("{}/metrics", lab.base);
        async move {
            let r = c.get(url).header("accept", accept).send().await.unwrap();
            let kind = r.headers()["content-type"].to_str().unwrap().to_owned();
            (kind, r.text().await.unwrap())
        }
    };
    let (kind, om) = get("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1").await;
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE meshgate_scrapes counter"), "{om}");
    let (kind, text) = get("*/*").await;
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        text.contains("# TYPE meshgate_scrapes_total counter"),
        "{text}"
    );
    assert!(text.contains("# HELP meshgate_scrapes_total "), "{text}");
    // The same samples in both.
    let samples = |page: &str| -> Vec<String> {
        page.lines()
            .filter(|l| !l.starts_with('#') && !l.contains("_created"))
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(samples(&om), samples(&text));
    if which("promtool") {
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        assert_eq!(
            std::env::var("MESHGATE_EXTERNAL_TESTS").as_deref(),
            Ok("skip"),
            "promtool (Debian package prometheus) is missing"
        );
    }
    lab.shutdown().await;
}

fn which(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
