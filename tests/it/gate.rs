//! `meshgate gate` exit codes, running the real binary against a real daemon on loopback.

use std::time::Duration;

use crate::support::{lab, selectors, BAD, GOOD};
use serde_json::Value;

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

fn create_args(base: &str, name: &str, revs: (&str, &str), extra: &[&str]) -> Vec<String> {
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
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_follow_the_verdict() {
    let l = lab("").await;
    let b = l.base.clone();
    let (good, bad, inconclusive, follow_missing) = tokio::join!(
        gate(create_args(&b, "gate-good", GOOD, &["--json"])),
        gate(create_args(&b, "gate-bad", BAD, &[])),
        gate(create_args(
            &b,
            "gate-dark",
            ("nothing-here", GOOD.1),
            &["--min-duration", "1s", "--max-duration", "3s"]
        )),
        gate(vec![
            "--server".into(),
            b.clone(),
            "--name".into(),
            "never-created".into()
        ]),
    );
    assert_eq!(good.0, 0, "{good:?}");
    let doc: Value = serde_json::from_str(&good.1).expect("--json prints the verdict document");
    assert_eq!(doc["verdict"], "GO");
    assert!(doc["checks"].as_array().unwrap().len() == 2);
    assert!(good.2.contains("PENDING"), "a progress line: {}", good.2);
    assert_eq!(bad.0, 1, "{bad:?}");
    assert!(bad.1.starts_with("NO-GO: "), "{}", bad.1);
    assert_eq!(inconclusive.0, 2, "{inconclusive:?}");
    assert_eq!(follow_missing.0, 64, "{follow_missing:?}");
    // Following an existing analysis (no selectors) gives the same answer.
    let again = gate(vec![
        "--server".into(),
        b.clone(),
        "--name".into(),
        "gate-bad".into(),
        "--delete".into(),
    ])
    .await;
    assert_eq!(again.0, 1, "{again:?}");
    let r = reqwest::get(format!("{b}/v1/analyses/gate-bad"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "--delete removed it");
    // An invalid analysis is a usage error naming the problem.
    let bad_check = gate(create_args(&b, "gate-x", GOOD, &["--checks", "nope"])).await;
    assert_eq!(bad_check.0, 64, "{bad_check:?}");
    assert!(bad_check.2.contains("nope"), "{}", bad_check.2);
    // --timeout while PENDING is 5, not INCONCLUSIVE's 2: no verdict exists yet.
    let t = gate(create_args(
        &b,
        "gate-slow",
        GOOD,
        &["--min-duration", "100s", "--timeout", "1s"],
    ))
    .await;
    assert_eq!(t.0, 5, "{t:?}");
    assert!(t.2.contains("still PENDING"), "{t:?}");
    l.shutdown().await;
}

/// A `--server` that is no http(s) URL is a usage error (64) naming the flag, before any request;
/// a well-formed URL nobody answers stays "unreachable" (3, below).
#[tokio::test]
async fn malformed_server_is_exit_64() {
    for bad in [
        "htp:/x",
        "localhost:9400",
        "ftp://meshgate:9400",
        "not a url",
        "http://",
    ] {
        let (code, _, err) = gate(vec![
            "--server".into(),
            bad.into(),
            "--name".into(),
            "x".into(),
        ])
        .await;
        assert_eq!(code, 64, "{bad}: {err}");
        assert!(err.contains("--server"), "{bad}: {err}");
    }
}

#[tokio::test]
async fn unreachable_daemon_is_exit_3() {
    let port = crate::support::free_port();
    let start = std::time::Instant::now();
    let (code, _, err) = gate(vec![
        "--server".into(),
        format!("http://127.0.0.1:{port}"),
        "--name".into(),
        "x".into(),
        "--poll".into(),
        "100ms".into(),
        "--unreachable-after".into(),
        "1s".into(),
    ])
    .await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach the daemon"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(30));
}

/// `--moving` makes the gate's analysis a before/after one (the design a namespace wave needs),
/// which its verdict document states; `--design before-after` without namespaces is refused with
/// the key named (exit 64).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_namespaces_make_a_before_after_analysis() {
    let l = lab("").await;
    let b = l.base.clone();
    let (wave, refused) = tokio::join!(
        gate(create_args(
            &b,
            "gate-wave",
            GOOD,
            &["--moving", "shop,pay", "--timeout", "2s"]
        )),
        gate(create_args(
            &b,
            "gate-wave-empty",
            GOOD,
            &["--design", "before-after"]
        )),
    );
    // Nothing moves in this mesh: PENDING until the timeout (exit 5).
    assert_eq!(wave.0, 5, "{wave:?}");
    let a: Value = reqwest::get(format!("{b}/v1/analyses/gate-wave"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["spec"]["design"], "before_after", "{a}");
    assert_eq!(
        a["spec"]["moving"],
        serde_json::json!(["shop", "pay"]),
        "{a}"
    );
    let v: Value = reqwest::get(format!("{b}/v1/analyses/gate-wave/verdict"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        v["design"].as_str().unwrap().starts_with("before/after"),
        "{v}"
    );
    assert_eq!(v["threshold"], 40.0, "alpha / 2 for the tests: {v}");
    assert_eq!(refused.0, 64, "{refused:?}");
    assert!(refused.2.contains("moving"), "{refused:?}");
}
