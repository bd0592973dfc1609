//! Argo's `kayenta` provider and Flagger (webhooks and the prometheus MetricTemplate provider),
//! each played as the peer's code does it (docs/integrations.md sections 2-4), against a real
//! daemon judging two simulated meshes.

use std::time::{Duration, Instant};

use crate::support::{lab, selectors, BAD, GOOD};
use serde_json::{json, Value};

// ---- Argo's kayenta provider ----

#[derive(Debug, PartialEq)]
enum Phase {
    Successful,
    Inconclusive,
    Failed,
    Error(String),
}

/// kayenta.go: find the config id by name, start an execution, poll until complete, score it.
async fn kayenta_run(
    address: &str,
    config_name: &str,
    control: &str,
    experiment: &str,
) -> (Phase, Value) {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let r = c
        .get(format!(
            "{address}/canaryConfig?application=bookinfo&configurationAccountName=my-storage"
        ))
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        return (
            Phase::Error(format!("canaryConfig {}", r.status())),
            Value::Null,
        );
    }
    let configs: Vec<Value> = r.json().await.unwrap();
    let Some(id) = configs
        .iter()
        .find(|x| x["name"] == config_name)
        .and_then(|x| x["id"].as_str())
    else {
        return (Phase::Error("no config".into()), Value::Null);
    };
    for k in ["updatedTimestamp", "updatedTimestampIso", "applications"] {
        assert!(!configs[0][k].is_null(), "{k} missing in {configs:?}");
    }
    let body = json!({
        "scopes": {"default": {
            "controlScope": {"scope": control, "location": "bookinfo", "step": 60, "start": "2026-11-27T07:00:00Z", "end": "2026-11-27T08:00:00Z"},
            "experimentScope": {"scope": experiment, "location": "bookinfo", "step": 60, "start": "2026-11-27T07:00:00Z", "end": "2026-11-27T08:00:00Z"},
        }},
        "thresholds": {"pass": 90, "marginal": 75},
    });
    let r = c
        .post(format!("{address}/canary/{id}?application=bookinfo&metricsAccountName=prom&configurationAccountName=my-storage&storageAccountName=my-storage"))
        .json(&body)
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        return (
            Phase::Error(format!(
                "canary {}: {}",
                r.status(),
                r.text().await.unwrap()
            )),
            Value::Null,
        );
    }
    let exec: Value = r.json().await.unwrap();
    let exec_id = exec["canaryExecutionId"].as_str().unwrap().to_owned();
    let start = Instant::now();
    loop {
        // Argo polls every 15 s; the test polls faster, the calls are the same.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = c
            .get(format!("{address}/canary/{exec_id}"))
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            return (Phase::Error(format!("poll {}", r.status())), Value::Null);
        }
        let doc: Value = r.json().await.unwrap();
        let Some(complete) = doc["complete"].as_bool() else {
            return (Phase::Error("complete missing".into()), doc);
        };
        if !complete {
            assert!(doc["result"].is_null(), "no score before completion: {doc}");
            assert!(start.elapsed() < Duration::from_secs(150), "{doc}");
            continue;
        }
        let score = doc["result"]["judgeResult"]["score"]["score"]
            .as_f64()
            .unwrap();
        let phase = if score >= 90.0 {
            Phase::Successful
        } else if score >= 75.0 {
            Phase::Inconclusive
        } else {
            Phase::Failed
        };
        return (phase, doc);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kayenta_provider_scores_go_and_no_go() {
    let l = lab("").await;
    let (gb, gc) = selectors(GOOD);
    let ((pg, dg), (pb, db), (pr, dr)) = tokio::join!(
        kayenta_run(&l.base, "meshgate", &gb, &gc),
        kayenta_run(&l.base, "error-rate", BAD.0, BAD.1),
        kayenta_run(&l.base, "no-such-config", GOOD.0, GOOD.1),
    );
    assert_eq!(pg, Phase::Successful, "{dg:#}");
    assert_eq!(dg["result"]["judgeResult"]["score"]["score"], 100.0);
    assert_eq!(
        dg["result"]["judgeResult"]["score"]["classification"],
        "Pass"
    );
    assert_eq!(pb, Phase::Failed, "{db:#}");
    assert_eq!(db["result"]["judgeResult"]["score"]["score"], 0.0);
    assert_eq!(
        db["result"]["judgeResult"]["score"]["classification"],
        "Fail"
    );
    assert_eq!(
        db["result"]["judgeResult"]["checkScores"]["error-rate"]["score"], 0.0,
        "{db:#}"
    );
    assert!(
        db["result"]["judgeResult"]["checkScores"]["latency-tail"].is_null(),
        "config error-rate has one check"
    );
    assert_eq!(pr, Phase::Error("no config".into()), "{dr}");
    // Unknown execution and unknown config are 404s with the JSON error.
    let r = reqwest::get(format!("{}/canary/nope", l.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = reqwest::Client::new()
        .post(format!("{}/canary/nope", l.base))
        .json(&json!({"scopes": {"d": {"controlScope": {"scope": "a"}, "experimentScope": {"scope": "b"}}}, "thresholds": {"pass": 90, "marginal": 75}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    l.shutdown().await;
}

// ---- Flagger webhooks ----

/// webhook.go: POST the payload; success is status <= 202.
async fn flagger_hook(
    base: &str,
    gate: &str,
    name: &str,
    checksum: &str,
    metadata: Value,
) -> (bool, u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/flagger/{gate}"))
        .json(&json!({"name": name, "namespace": "shop", "phase": "Progressing", "checksum": checksum, "metadata": metadata}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (s <= 202, s, v)
}

fn meta(revs: (&str, &str)) -> Value {
    let (b, c) = selectors(revs);
    json!({"baseline": b, "canary": c, "minDuration": "4s", "maxDuration": "120s"})
}

async fn verdict(base: &str, id: &str) -> String {
    let v: Value = reqwest::get(format!("{base}/v1/analyses/{id}/verdict"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["verdict"].as_str().unwrap_or("?").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagger_gates_answer_with_flagger_status_semantics() {
    let l = lab("").await;
    let b = &l.base;
    // Before any data: confirm-rollout lets the canary start, pre-rollout and rollout pass
    // (PENDING is not NO-GO), promotion and traffic increase wait, rollback does not fire.
    for (name, revs) in [("good", GOOD), ("bad", BAD)] {
        assert_eq!(
            flagger_hook(b, "confirm-rollout", name, "c1", meta(revs))
                .await
                .1,
            200
        );
        let (ok, s, v) = flagger_hook(b, "pre-rollout", name, "c1", meta(revs)).await;
        assert!(ok, "{s} {v}");
        assert_eq!(v["verdict"], "PENDING");
        assert_eq!(v["analysis"], format!("{name}.shop"));
        let (ok, s, _) = flagger_hook(b, "confirm-promotion", name, "c1", json!({})).await;
        assert!(!ok && s == 412, "{s}");
        let (ok, _, _) = flagger_hook(b, "confirm-traffic-increase", name, "c1", json!({})).await;
        assert!(!ok);
        let (ok, _, v) = flagger_hook(b, "rollback", name, "c1", json!({})).await;
        assert!(!ok, "PENDING must not roll back: {v}");
    }
    let g = l.wait_final("good.shop", Duration::from_secs(150)).await;
    let n = l.wait_final("bad.shop", Duration::from_secs(150)).await;
    assert_eq!(g["verdict"], "GO", "{g:#}");
    assert_eq!(n["verdict"], "NO-GO", "{n:#}");
    let expect = [
        ("rollout", true, false),
        ("pre-rollout", true, false),
        ("confirm-traffic-increase", true, false),
        ("confirm-promotion", true, false),
        ("rollback", false, true),
        ("event", true, true),
        ("post-rollout", true, true),
    ];
    for (gate, good_ok, bad_ok) in expect {
        let (ok, s, v) = flagger_hook(
            b,
            gate,
            "good",
            "c1",
            json!({"eventMessage": "x", "eventType": "Normal", "timestamp": "1"}),
        )
        .await;
        assert_eq!(ok, good_ok, "{gate} on GO: {s} {v}");
        let (ok, s, v) = flagger_hook(b, gate, "bad", "c1", json!({})).await;
        assert_eq!(ok, bad_ok, "{gate} on NO-GO: {s} {v}");
        if !ok {
            assert_eq!(s, 412, "failure is 412, which Flagger does not retry");
        } else if gate == "event" || gate == "post-rollout" {
            assert_eq!(s, 202, "{gate} is recorded: {v}");
        }
    }
    // A new checksum is a new rollout: the analysis starts over.
    let (ok, _, v) = flagger_hook(b, "pre-rollout", "bad", "c2", meta(BAD)).await;
    assert!(ok, "{v}");
    assert_eq!(v["verdict"], "PENDING");
    assert_eq!(verdict(b, "bad.shop").await, "PENDING");
    // Without selectors in metadata, a new canary cannot be judged: a failed check, saying why.
    let (ok, s, v) = flagger_hook(b, "rollout", "orphan", "c1", json!({})).await;
    assert!(!ok && s == 422, "{s} {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("baselineRevision"),
        "{v}"
    );
    // Revisions in metadata are enough.
    let (ok, _, v) = flagger_hook(
        b,
        "rollout",
        "byrev",
        "c1",
        json!({"baselineRevision": GOOD.0, "canaryRevision": GOOD.1}),
    )
    .await;
    assert!(ok, "{v}");
    let a: Value = reqwest::get(format!("{b}/v1/analyses/byrev.shop"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["spec"]["canary"], format!("{{revision=\"{}\"}}", GOOD.1));
    // Unknown gate, bad payload.
    assert_eq!(
        flagger_hook(b, "promote-now", "good", "c1", json!({}))
            .await
            .1,
        404
    );
    let r = reqwest::Client::new()
        .post(format!("{b}/flagger/rollout"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Every call was recorded.
    let rec: Vec<Value> = reqwest::get(format!("{b}/v1/flagger/records"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(rec
        .iter()
        .any(|r| r["gate"] == "event" && r["payload"]["metadata"]["eventType"] == "Normal"));
    assert!(rec
        .iter()
        .any(|r| r["gate"] == "rollback" && r["status"] == 200 && r["verdict"] == "NO-GO"));
    l.shutdown().await;
}

// ---- Flagger's prometheus provider ----

/// prometheus.go: GET /api/v1/query?query=...; >= 400 is an error; vector only; last series wins;
/// no values or NaN is an error.
async fn flagger_query(address: &str, q: &str) -> Result<f64, String> {
    let r = reqwest::Client::new()
        .get(format!("{address}/api/v1/query"))
        .query(&[("query", q)])
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body: Value = r.json().await.map_err(|e| e.to_string())?;
    if status >= 400 {
        return Err(format!("error response: {body}"));
    }
    if body["data"]["resultType"] != "vector" {
        return Err("not a vector".into());
    }
    let mut value = None;
    for s in body["data"]["result"].as_array().unwrap() {
        let v: f64 = s["value"][1]
            .as_str()
            .unwrap()
            .parse()
            .map_err(|e| format!("{e}"))?;
        value = Some(v);
    }
    match value {
        None => Err("no values found".into()),
        Some(v) if v.is_nan() => Err("value is NaN".into()),
        Some(v) => Ok(v),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_endpoint_serves_flagger_metric_templates() {
    let l = lab("").await;
    let b = &l.base;
    assert_eq!(
        flagger_query(b, "vector(1)").await,
        Ok(1.0),
        "Flagger's start-up probe"
    );
    let c = reqwest::Client::new();
    for (name, revs) in [("q-good", GOOD), ("q-bad", BAD)] {
        let r = c
            .post(format!("{b}/v1/analyses"))
            .json(&crate::support::analysis(name, revs))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    assert_eq!(
        flagger_query(b, r#"meshgate_verdict{analysis="q-good"}"#).await,
        Ok(1.0),
        "PENDING is 1"
    );
    l.wait_final("q-good", Duration::from_secs(150)).await;
    l.wait_final("q-bad", Duration::from_secs(150)).await;
    // The MetricTemplate of deploy/flagger: thresholdRange max 1 passes GO (0) and PENDING (1).
    assert_eq!(
        flagger_query(b, r#"meshgate_verdict{analysis="q-good"}"#).await,
        Ok(0.0)
    );
    assert_eq!(
        flagger_query(b, r#"meshgate_verdict{analysis="q-bad"}"#).await,
        Ok(3.0)
    );
    assert_eq!(
        flagger_query(b, r#"meshgate_no_go{analysis="q-bad"}"#).await,
        Ok(1.0)
    );
    assert_eq!(
        flagger_query(b, r#"meshgate_go{analysis="q-bad"}"#).await,
        Ok(0.0)
    );
    let e = flagger_query(b, r#"meshgate_e_value{analysis="q-bad"}"#)
        .await
        .unwrap();
    assert!(
        e >= 20.0,
        "NO-GO means the combined e-value reached 1/alpha: {e}"
    );
    let ce = flagger_query(
        b,
        r#"meshgate_check_e_value{analysis="q-bad", check="error-rate"}"#,
    )
    .await
    .unwrap();
    assert!(ce > 1.0, "{ce}");
    let rate = flagger_query(
        b,
        r#"meshgate_check_rate{analysis="q-bad", check="error-rate", cohort="canary"}"#,
    )
    .await
    .unwrap();
    assert!(
        (0.004..0.02).contains(&rate),
        "canary 5xx share near the injected 1%: {rate}"
    );
    let ub = flagger_query(
        b,
        r#"meshgate_ratio_upper_bound{analysis="q-good", check="error-rate"}"#,
    )
    .await
    .unwrap();
    assert!(ub > 0.0 && ub.is_finite(), "{ub}");
    // Unknown analysis: empty, which Flagger treats as a failed check (never a pass).
    assert_eq!(
        flagger_query(b, r#"meshgate_verdict{analysis="nope"}"#).await,
        Err("no values found".into())
    );
    // Unsupported queries are 400 bad_data with the reason.
    let r = c
        .get(format!("{b}/api/v1/query"))
        .query(&[("query", "rate(x[5m])")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "error");
    assert_eq!(v["errorType"], "bad_data");
    let r = c
        .get(format!("{b}/api/v1/query"))
        .query(&[("query", r#"up{job=~"x"}"#)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    l.shutdown().await;
}

/// Prometheus' `/api/v1/query` contract beyond Flagger's GET: POST forms, `time`, and infinities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_endpoint_takes_post_forms_time_and_writes_infinities_as_prometheus() {
    let l = lab("").await;
    let b = &l.base;
    let c = reqwest::Client::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // POST with a form body, as Prometheus accepts it; time as float seconds and as RFC 3339.
    let rfc = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    for t in [format!("{now}"), rfc] {
        let r = c
            .post(format!("{b}/api/v1/query"))
            .form(&[("query", "vector(1)"), ("time", t.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "time={t}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["data"]["result"][0]["value"][1], "1", "{v}");
    }
    // A time that is not one, or one meshgate has no data for: Prometheus' error shape, 400.
    for t in ["notatime".to_owned(), format!("{}", now - 86400.0)] {
        let r = c
            .get(format!("{b}/api/v1/query"))
            .query(&[("query", "vector(1)"), ("time", t.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "time={t}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["errorType"], "bad_data");
        assert!(v["error"].as_str().unwrap().contains("time"), "{v}");
    }
    // POST without a form body and no query in the URL: bad_data, not 405.
    let r = c
        .post(format!("{b}/api/v1/query"))
        .json(&json!({"query": "vector(1)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // An analysis without baseline data has an unbounded ratio: "+Inf", not an empty result.
    let r = c
        .post(format!("{b}/v1/analyses"))
        .json(&json!({"name": "unbounded",
               "baseline": "{role=\"proxy\", revision=\"does-not-exist\"}",
               "canary": selectors(GOOD).1, "max_duration": "60s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let start = Instant::now();
    loop {
        let v: Value = c
            .get(format!("{b}/api/v1/query"))
            .query(&[(
                "query",
                r#"meshgate_ratio_upper_bound{analysis="unbounded"}"#,
            )])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let res = v["data"]["result"].as_array().unwrap();
        if !res.is_empty() {
            assert!(res.iter().all(|s| s["value"][1] == "+Inf"), "{v}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no series: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    l.shutdown().await;
}
