//! Kayenta executions with several scopes (issue 13, case 2): every scope is judged and the
//! execution passes only if every scope passes. Before, only the first scope (by name) was judged:
//! a healthy scope `a` and a scope `b` whose canary returns 1% 5xx scored 100, Pass.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{lab, selectors, BAD, GOOD};

fn scope(control: &str, experiment: &str) -> Value {
    json!({"controlScope": {"scope": control, "location": "shop", "step": 60},
           "experimentScope": {"scope": experiment, "location": "shop", "step": 60}})
}

/// Start an execution of config `meshgate` with `scopes` and poll it until complete.
async fn run(base: &str, scopes: Value) -> Value {
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{base}/canary/error-rate?application=shop"))
        .json(&json!({"scopes": scopes, "thresholds": {"pass": 90, "marginal": 75}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let id = r.json::<Value>().await.unwrap()["canaryExecutionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let t0 = Instant::now();
    loop {
        let doc: Value = c
            .get(format!("{base}/canary/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if doc["complete"] == true {
            return doc;
        }
        assert!(
            doc["result"].is_null(),
            "a score before completion: {doc:#}"
        );
        assert!(t0.elapsed() < Duration::from_secs(120), "{doc:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scope_is_judged_and_the_worst_decides() {
    let l = lab("").await;
    let (gb, gc) = selectors(GOOD);
    let (bb, bc) = selectors(BAD);
    let (mixed, good) = tokio::join!(
        run(&l.base, json!({"a": scope(&gb, &gc), "b": scope(&bb, &bc)})),
        run(
            &l.base,
            json!({"a": scope(&gb, &gc), "z": scope(GOOD.0, GOOD.1)})
        ),
    );
    let score = &mixed["result"]["judgeResult"]["score"];
    assert_eq!(score["score"], 0.0, "{mixed:#}");
    assert_eq!(score["classification"], "Fail", "{mixed:#}");
    let why = score["classificationReason"].as_str().unwrap();
    assert!(why.contains("NO-GO") && why.contains("scopes: b"), "{why}");
    let checks = &mixed["result"]["judgeResult"]["checkScores"];
    assert_eq!(checks["b/error-rate"]["score"], 0.0, "{checks:#}");
    assert!(checks["a/error-rate"].is_object(), "{checks:#}");
    let scopes = mixed["meshgate"]["scopes"].as_array().unwrap();
    assert_eq!(scopes.len(), 2);
    assert_eq!(scopes[1]["scope"], "b");
    assert_eq!(scopes[1]["verdict"], "NO-GO", "{mixed:#}");

    // Two healthy scopes: complete only once both are GO, and a pass.
    let score = &good["result"]["judgeResult"]["score"];
    assert_eq!(score["classification"], "Pass", "{good:#}");
    assert_eq!(score["score"], 100.0);
    for s in good["meshgate"]["scopes"].as_array().unwrap() {
        assert_eq!(s["verdict"], "GO", "{good:#}");
    }

    // A bad scope among good ones fails the whole request before any analysis starts.
    let r = reqwest::Client::new()
        .post(format!("{}/canary/meshgate", l.base))
        .json(
            &json!({"scopes": {"a": scope(&gb, &gc), "b": scope("{revision=~\"(\"}", "x")},
                      "thresholds": {"pass": 90, "marginal": 75}}),
        )
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_client_error(), "{status} {text}");
    assert!(text.contains("scopes.b"), "{text}");
    let all: Value = reqwest::get(format!("{}/v1/analyses", l.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let live = all.as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(
        live, 4,
        "scope a of the refused request left no analysis: {all:#}"
    );
    l.shutdown().await;
}
