//! The API's handlers through `Router::oneshot`, without a socket between the test and the
//! router (the daemon behind it is the one `api.rs` starts): the answers read as the core
//! documents, and the error shapes.

use axum::body::{to_bytes, Body};
use axum::http::{Method, Request, StatusCode};
use meshgate::config::AnalysisConfig;
use meshgate_core::api::{AnalysisDoc, AnalysisSummary, ErrorDoc, VerdictDoc};
use meshgate_core::judge::Verdict;
use serde::de::DeserializeOwned;
use serde_json::json;
use tower::ServiceExt;

use super::api::{analysis, daemon};

/// One request to a fresh router over `running`'s handles: the status and the body as a `T`.
async fn call<T: DeserializeOwned>(
    running: &meshgate::daemon::Running,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, T) {
    let req = Request::builder().method(method).uri(path);
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = meshgate::daemon::router(running.shared.clone())
        .oneshot(req)
        .await
        .unwrap();
    let status = resp.status();
    let bytes = to_bytes(resp.into_body(), 1 << 24).await.unwrap();
    let doc = meshgate::client::parse_doc(path, &bytes).unwrap_or_else(|e| {
        panic!("{status}: {e}: {}", String::from_utf8_lossy(&bytes));
    });
    (status, doc)
}

#[tokio::test]
async fn a_fresh_analysis_reads_as_the_core_documents() {
    let (_, stop, running) = daemon("").await;
    let (status, created): (_, AnalysisDoc<AnalysisConfig>) = call(
        &running,
        Method::POST,
        "/v1/analyses",
        Some(analysis("h-fresh")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created.id, "h-fresh");
    assert_eq!(created.spec.canary, "{revision=\"new\"}");
    assert_eq!(created.state.verdict(), Verdict::Pending);

    let (status, doc): (_, VerdictDoc) =
        call(&running, Method::GET, "/v1/analyses/h-fresh/verdict", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc.id, "h-fresh");
    assert_eq!(doc.verdict, Verdict::Pending);
    assert!(!doc.decided);
    assert_eq!(doc.decided_after_seconds, None);
    assert!(!doc.checks.is_empty(), "the default set has checks");
    assert!((doc.threshold - 1.0 / doc.alpha).abs() < 1e-9, "{doc:?}");

    let (_, shown): (_, AnalysisDoc<AnalysisConfig>) =
        call(&running, Method::GET, "/v1/analyses/h-fresh", None).await;
    assert_eq!(shown.spec, created.spec);
    let (_, list): (_, Vec<AnalysisSummary>) =
        call(&running, Method::GET, "/v1/analyses", None).await;
    assert!(
        list.iter()
            .any(|s| s.id == "h-fresh" && s.baseline == "{revision=\"old\"}"),
        "{list:?}"
    );
    stop.cancel();
    running.join().await;
}

#[tokio::test]
async fn errors_are_json_error_documents() {
    let (_, stop, running) = daemon("").await;
    let cases = [
        (
            Method::GET,
            "/v1/nowhere",
            StatusCode::NOT_FOUND,
            "no_route",
        ),
        (
            Method::GET,
            "/v1/analyses/missing/verdict",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::DELETE,
            "/v1/checks",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (method, path, want, code) in cases {
        let (status, e): (_, ErrorDoc) = call(&running, method.clone(), path, None).await;
        assert_eq!(status, want, "{method} {path}: {e:?}");
        assert_eq!(e.error.code, code, "{method} {path}: {e:?}");
        assert!(!e.error.message.is_empty());
    }
    let (_, e): (_, ErrorDoc) = call(&running, Method::DELETE, "/v1/checks", None).await;
    assert!(
        e.error
            .message
            .contains("DELETE is not allowed on /v1/checks"),
        "{e:?}"
    );
    stop.cancel();
    running.join().await;
}

#[tokio::test]
async fn an_empty_check_list_is_422() {
    let (_, stop, running) = daemon("").await;
    let mut body = analysis("h-empty");
    body["checks"] = json!([]);
    let (status, e): (_, ErrorDoc) = call(&running, Method::POST, "/v1/analyses", Some(body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(e.error.code, "invalid_analysis");
    assert!(e.error.message.contains("checks"), "{e:?}");
    let (status, _): (_, ErrorDoc) =
        call(&running, Method::GET, "/v1/analyses/h-empty", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was created");
    stop.cancel();
    running.join().await;
}
