//! `deploy/grafana/meshgate.json` against real servers: a real Prometheus (Debian `prometheus`)
//! scrapes a real daemon judging the lab meshes; every query of every panel and every template
//! variable of the dashboard is run on that Prometheus, as Grafana would send it (instant for
//! table and stat panels, range for time series), and must succeed and return data. The dashboard's
//! structure is checked as Grafana reads it (unique ids, every panel on the `$datasource`, a
//! refId per query, a 24-column grid).
//!
//! Grafana itself is not run (no Debian package). The queries Grafana adds on its own when meshgate
//! is a data source are checked against the same Prometheus: `1+1` (the data-source test) and
//! `/api/v1/status/buildinfo` answer in Prometheus' shape.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{self, prometheus, GOOD};

fn dashboard() -> Value {
    let path = format!(
        "{}/deploy/grafana/meshgate.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        out.push(p.clone());
        for inner in p["panels"].as_array().into_iter().flatten() {
            out.push(inner.clone());
        }
    }
    out
}

/// A query with Grafana's variables replaced as Grafana does with "All" selected and a 1 s
/// scrape interval (`$__rate_interval` is at least four scrape intervals).
fn expand(expr: &str) -> String {
    expr.replace("${job}", ".*")
        .replace("$job", ".*")
        .replace("${analysis}", ".*")
        .replace("$analysis", ".*")
        .replace("$__rate_interval", "20s")
        .replace("$__interval", "1s")
}

/// The dashboard is what Grafana can import: ids unique, every panel reads `$datasource`, each
/// query has its own refId, the grid fits 24 columns, the variables it uses are defined.
#[test]
fn the_dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["uid"], "meshgate");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "job", "analysis"]);
    assert_eq!(d["templating"]["list"][0]["type"], "datasource");
    assert_eq!(d["templating"]["list"][0]["query"], "prometheus");
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in panels(&d) {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate id in {p}");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24 && g["h"].as_u64().unwrap() > 0, "{g}");
        if p["type"] == "row" {
            continue;
        }
        assert!(!p["title"].as_str().unwrap().is_empty());
        assert!(
            !p["description"].as_str().unwrap().is_empty(),
            "{}",
            p["title"]
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let mut refs = BTreeSet::new();
        for t in p["targets"].as_array().unwrap() {
            assert!(refs.insert(t["refId"].as_str().unwrap().to_owned()));
            assert_eq!(t["datasource"]["uid"], "${datasource}");
            let expr = t["expr"].as_str().unwrap();
            for var in expr.split('$').skip(1) {
                let name: String = var
                    .trim_start_matches('{')
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    vars.contains(&name.as_str()) || name.starts_with("__"),
                    "{expr}: ${name} is not a dashboard variable"
                );
            }
            queries += 1;
        }
    }
    assert!(queries >= 15, "{queries} queries");
}

async fn get_json(c: &reqwest::Client, url: &str, params: &[(&str, String)]) -> Value {
    let r = c.get(url).query(params).send().await.unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert!(
        status.is_success() && body["status"] == "success",
        "GET {url} {params:?}: {status} {body}"
    );
    body
}

/// The `meshgate` binary, killed on drop.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_runs_on_a_real_prometheus_scraping_a_real_daemon() {
    let stop = tokio_util::sync::CancellationToken::new();
    let no_fault = meshgate::sim::Fault {
        error_rate: None,
        latency_factor: 1.0,
    };
    let mesh = support::mesh(31, GOOD, no_fault, &stop).await;
    // The shipped binary (its allocator reports the heap), with a store (its panels have data)
    // and a target that never answers (the "down" table has a row).
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let mut cfg = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[scrape]\ninterval = \"250ms\"\ntimeout = \"200ms\"\n\
         [judge]\nmin_duration = \"4s\"\nmax_duration = \"10m\"\nmin_exposure = 1000\n\
         [store]\npath = {:?}\n\
         [[targets]]\nurl = \"http://127.0.0.1:1/metrics\"\nlabels = {{ role = \"proxy\", revision = \"0-0-0\", pod = \"gone\" }}\n",
        dir.path().join("state.redb").display().to_string()
    );
    for t in mesh.targets() {
        cfg.push_str(&format!(
            "[[targets]]\nurl = {:?}\n[targets.labels]\n",
            t.url
        ));
        for (k, v) in &t.labels {
            cfg.push_str(&format!("{k} = {v:?}\n"));
        }
    }
    let cfg_path = dir.path().join("meshgate.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let _daemon = Daemon(
        std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
            .args(["serve", "--config"])
            .arg(&cfg_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn meshgate"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::new();
    let t = Instant::now();
    while !c
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(t.elapsed() < Duration::from_secs(30), "meshgate not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let created: Value = c
        .post(format!("{base}/v1/analyses"))
        .json(&support::analysis("grafana", GOOD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let addr = format!("127.0.0.1:{port}");
    let Some(prom) = prometheus(&json!([{"targets": [addr], "labels": {}}]).to_string()).await
    else {
        return;
    };
    let query = format!("{}/api/v1/query", prom.url);

    // Prometheus' own `up` says its scrapes of the daemon succeed, and enough of them for rates.
    let t = Instant::now();
    loop {
        let b = get_json(
            &c,
            &query,
            &[(
                "query",
                "count_over_time(up{job=\"mesh\"}[1m]) >= 5 and up == 1".into(),
            )],
        )
        .await;
        if !b["data"]["result"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "Prometheus did not scrape the daemon: {b}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let d = dashboard();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut ran = 0;
    for p in panels(&d).iter().filter(|p| p["type"] != "row") {
        for t in p["targets"].as_array().unwrap() {
            let expr = expand(t["expr"].as_str().unwrap());
            let what = format!("panel {:?} query {}: {expr}", p["title"], t["refId"]);
            let body = if t["instant"] == true {
                get_json(
                    &c,
                    &query,
                    &[("query", expr.clone()), ("time", now.to_string())],
                )
                .await
            } else {
                get_json(
                    &c,
                    &format!("{}/api/v1/query_range", prom.url),
                    &[
                        ("query", expr.clone()),
                        ("start", (now - 30.0).to_string()),
                        ("end", now.to_string()),
                        ("step", "1".into()),
                    ],
                )
                .await
            };
            let result = body["data"]["result"].as_array().unwrap();
            assert!(!result.is_empty(), "{what}: no data\n{body}");
            // A query that keeps the analysis label must show the running analysis.
            if result.iter().any(|s| s["metric"].get("analysis").is_some()) {
                assert!(
                    result
                        .iter()
                        .any(|s| s["metric"]["analysis"] == id.as_str()),
                    "{what}: the analysis {id} is missing\n{body}"
                );
            }
            ran += 1;
        }
    }
    assert!(ran >= 15, "{ran} queries ran");

    // The template variables, as Grafana asks for label values.
    for v in d["templating"]["list"].as_array().unwrap() {
        let Some(def) = v["definition"].as_str() else {
            continue;
        };
        let inner = def
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{def}: not label_values(metric, label)"));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let body = get_json(
            &c,
            &format!("{}/api/v1/label/{}/values", prom.url, label.trim()),
            &[("match[]", expand(selector.trim()))],
        )
        .await;
        let values: Vec<&str> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let want = if v["name"] == "job" {
            "mesh"
        } else {
            id.as_str()
        };
        assert!(values.contains(&want), "{def}: {values:?}");
    }

    // What Grafana asks meshgate itself when it is added as a Prometheus data source, answered in
    // the same shape as the real Prometheus answers it.
    for base in [prom.url.as_str(), base.as_str()] {
        let b = get_json(
            &c,
            &format!("{base}/api/v1/query"),
            &[("query", "1+1".into())],
        )
        .await;
        assert_eq!(b["data"]["resultType"], "scalar", "{base}: {b}");
        assert_eq!(b["data"]["result"][1], "2", "{base}: {b}");
        assert!(b["data"]["result"][0].as_f64().unwrap() > 1.7e9);
        let b = get_json(&c, &format!("{base}/api/v1/status/buildinfo"), &[]).await;
        assert!(
            b["data"]["version"].as_str().is_some_and(|v| !v.is_empty()),
            "{base}: {b}"
        );
    }
    drop(prom);
    stop.cancel();
}
