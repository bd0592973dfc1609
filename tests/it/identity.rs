//! Analysis identity (issue 13, case 3): a name taken by another definition is a 409 saying what
//! differs, never the old verdict; the same definition again is the running analysis; `gate`
//! exits 4 on the 409 unless `--replace`. Through the real HTTP API and the real binary.

use serde_json::{json, Value};

use crate::support::{analysis, lab, selectors, BAD, GOOD};

async fn gate(args: Vec<String>) -> (i32, String, String) {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
            .arg("gate")
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn gate_args(base: &str, name: &str, revs: (&str, &str), extra: &[&str]) -> Vec<String> {
    let (b, c) = selectors(revs);
    let mut v: Vec<String> = [
        "--server",
        base,
        "--name",
        name,
        "--baseline",
        &b,
        "--canary",
        &c,
        "--poll",
        "300ms",
        "--checks",
        "error-rate",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_name_is_a_409_that_says_what_differs_and_the_same_definition_is_idempotent() {
    let l = lab("").await;
    let c = reqwest::Client::new();
    let post = |body: Value| c.post(format!("{}/v1/analyses", l.base)).json(&body).send();
    let r = post(analysis("wave-1", GOOD)).await.unwrap();
    assert_eq!(r.status(), 201);
    let r = post(analysis("wave-1", GOOD)).await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "the same definition again is the running one"
    );
    assert_eq!(r.json::<Value>().await.unwrap()["id"], "wave-1");
    let r = post(analysis("wave-1", BAD)).await.unwrap();
    assert_eq!(r.status(), 409);
    let e: Value = r.json().await.unwrap();
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("another definition"), "{msg}");
    assert!(
        msg.contains("baseline: existing") && msg.contains("canary: existing"),
        "{msg}"
    );
    assert!(msg.contains(GOOD.1) && msg.contains(BAD.1), "{msg}");
    let mut other = analysis("wave-1", GOOD);
    other["alpha"] = json!(0.01);
    let r = post(other).await.unwrap();
    assert_eq!(r.status(), 409);
    let msg = r.text().await.unwrap();
    assert!(
        msg.contains("alpha: existing null, requested 0.01"),
        "{msg}"
    );
    assert!(
        !msg.contains("canary: existing"),
        "only what differs: {msg}"
    );

    // Argo's measurement route: the same body is the same analysis; another body under the same
    // name is a definition that cannot run: 200 with decision INVALID (a Failed measurement, at
    // once), never the old decision.
    let argo = |revs: (&str, &str)| {
        let (b, cn) = selectors(revs);
        c.post(format!("{}/argo/v1/analyses/roll-7", l.base))
            .json(&json!({"baseline": b, "canary": cn, "checks": ["error-rate"]}))
            .send()
    };
    let r = argo(BAD).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = argo(BAD).await.unwrap();
    assert_eq!(r.status(), 200, "the next measurement of the same run");
    let r = argo(GOOD).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["decision"], "INVALID",
        "no old decision in a conflict: {body}"
    );
    assert_eq!(body["error"]["code"], "exists", "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("canary: existing") && msg.contains(GOOD.1),
        "{msg}"
    );
    l.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_refuses_a_taken_name_unless_told_to_replace() {
    let l = lab("").await;
    let b = l.base.clone();
    let (code, _, err) = gate(gate_args(&b, "wave-1", BAD, &[])).await;
    assert_eq!(code, 1, "NO-GO: {err}");
    // Before: the re-run with other selectors printed the old NO-GO and exited 1 at once.
    let (code, out, err) = gate(gate_args(&b, "wave-1", GOOD, &[])).await;
    assert_eq!(code, 4, "{out} {err}");
    assert!(out.is_empty(), "no verdict printed: {out}");
    assert!(
        err.contains("another definition") && err.contains("--replace") && err.contains(GOOD.1),
        "{err}"
    );
    let (code, out, err) = gate(gate_args(&b, "wave-1", GOOD, &["--replace"])).await;
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.starts_with("GO"), "{out}");
    assert!(err.contains("--replace: deleting"), "{err}");
    // The same definition again follows the (finished) analysis instead of a new one.
    let (code, _, err) = gate(gate_args(&b, "wave-1", GOOD, &[])).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("already running"), "{err}");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["gate", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--replace") && help.contains("exit 4"),
        "{help}"
    );
    l.shutdown().await;
}
