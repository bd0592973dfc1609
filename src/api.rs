//! The HTTP API (axum): analyses, verdicts with evidence, targets, checks, own metrics, probes.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::analysis::AnalysisConfig;
use crate::judge::CheckInfo;
use crate::state::{AnalysisView, CreateError, Shared};
pub(crate) use meshgate_core::api::{e_value, saturate};
pub use meshgate_core::api::{AnalysisSummary, ErrorDoc, VerdictDoc};

/// `GET /v1/analyses/{id}`: the core document with this daemon's request type.
pub type AnalysisDoc = meshgate_core::api::AnalysisDoc<AnalysisConfig>;

/// Every API error, mapped to a status and a JSON body `{"error": {"code", "message"}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not the JSON expected.
    #[error("{0}")]
    BadJson(String),
    /// Well-formed but invalid.
    #[error("{0}")]
    Invalid(String),
    /// No such analysis.
    #[error("no analysis with id {0:?}")]
    NotFound(String),
    /// Something else that does not exist (a gate, a canary config); the message names it.
    #[error("{0}")]
    Missing(String),
    /// No route has this path (or this method on it).
    #[error("{0}")]
    NoRoute(String),
    /// The body is larger than `server.max_body_bytes`.
    #[error("{0}")]
    TooLarge(String),
    /// The request URI is longer than [`MAX_URI_BYTES`].
    #[error("{0}")]
    UriTooLong(String),
    /// Name taken.
    #[error("{0}")]
    Conflict(String),
    /// The engine is gone.
    #[error("{0}")]
    Unavailable(String),
    /// The store cannot be written: the change is not on disk.
    #[error("{0}; meshgate takes no change it cannot keep: retry once the store works again (GET /readyz says when)")]
    StoreUnavailable(String),
    /// The cap on analyses held is reached by running ones.
    #[error("{0}")]
    TooMany(String),
}

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::Invalid(m) => ApiError::Invalid(m),
            CreateError::Exists(n) => {
                ApiError::Conflict(format!("an analysis named {n:?} already exists"))
            }
            CreateError::Unavailable(m) => ApiError::StoreUnavailable(m),
            CreateError::TooMany(m) => ApiError::TooMany(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadJson(_) => (StatusCode::BAD_REQUEST, "bad_json"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_analysis"),
            ApiError::NotFound(_) | ApiError::Missing(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::NoRoute(_) => (StatusCode::NOT_FOUND, "no_route"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::UriTooLong(_) => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "exists"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::StoreUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            ApiError::TooMany(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_analyses"),
        };
        (status, Json(ErrorDoc::new(code, self.to_string()))).into_response()
    }
}

/// Longest request URI (path and query) routed; longer ones get a JSON 414. No route needs more
/// than a few hundred bytes; a request head beyond hyper's read buffer never reaches the router
/// (see `server::MAX_HEAD_BYTES`).
pub const MAX_URI_BYTES: usize = 8192;

/// The core API's routes merged with `extra` (the integrations' and Istio's, given by the
/// daemon, which builds the whole router: `daemon::router`), under the JSON error shape and the
/// body limit.
pub fn router(shared: Shared, extra: Router<Shared>) -> Router {
    let limit = shared.max_body_bytes;
    let json_errors = axum::middleware::from_fn(move |req, next| json_errors(limit, req, next));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/analyses", get(list).post(create))
        .route("/v1/analyses/{id}", get(show).delete(delete))
        .route("/v1/analyses/{id}/verdict", get(verdict))
        .route("/v1/analyses/{id}/history", get(history))
        .route("/v1/targets", get(targets))
        .route("/v1/checks", get(checks))
        .merge(extra)
        .merge(crate::report::routes())
        .fallback(|req: axum::extract::Request| async move {
            ApiError::NoRoute(format!(
                "no such route: {} {} (GET /openapi.json lists the routes)",
                req.method(),
                req.uri().path()
            ))
            .into_response()
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(json_errors)
        .with_state(shared)
}

/// Gives the errors that axum and the body limit answer themselves (413 from a body extractor,
/// 405 for a known path with another method) the API's JSON error shape, and answers an
/// overlong URI with 414 before any route sees it.
async fn json_errors(
    max_body_bytes: usize,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri_len = req.uri().to_string().len();
    if uri_len > MAX_URI_BYTES {
        return ApiError::UriTooLong(format!(
            "request URI is {uri_len} bytes, longer than the {MAX_URI_BYTES} bytes accepted"
        ))
        .into_response();
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let resp = next.run(req).await;
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return resp;
    }
    match resp.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(format!(
            "request body is larger than server.max_body_bytes ({max_body_bytes} bytes)"
        ))
        .into_response(),
        // axum adds the Allow header on the way out, after this layer.
        StatusCode::METHOD_NOT_ALLOWED => (
            StatusCode::METHOD_NOT_ALLOWED,
            Json(ErrorDoc::new(
                "method_not_allowed",
                format!("{method} is not allowed on {path} (the Allow header lists the methods it takes)"),
            )),
        )
            .into_response(),
        _ => resp,
    }
}

/// The 422 for `"checks": []` in a request body: an empty list is not the default set (omit the
/// field for that), and an analysis with no check could never decide anything.
pub(crate) fn empty_checks(body: &[u8], prefix: &str) -> Option<ApiError> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let empty = v.get("checks")?.as_array()?.is_empty();
    empty.then(|| {
        ApiError::Invalid(format!(
            "{prefix}checks: is an empty list; name at least one check (GET /v1/checks lists them), or omit the field for the default set"
        ))
    })
}

async fn readyz(State(s): State<Shared>) -> Response {
    if let Some(Err(why)) = s.store.as_ref().map(|h| h.health()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": why, "error": { "code": "store_unavailable", "message": why } })),
        )
            .into_response();
    }
    if s.snapshot.borrow().ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "engine has not ticked yet\n",
        )
            .into_response()
    }
}

/// `/metrics`: OpenMetrics when the `Accept` header asks for it (Prometheus does), else the text
/// format 0.0.4.
async fn metrics(State(s): State<Shared>, headers: axum::http::HeaderMap) -> Response {
    // The e-value gauges from each analysis' e-processes as of its last tick.
    let snapshot = s.snapshot.borrow().clone();
    for v in snapshot.analyses.values() {
        s.metrics.set_e_value(&v.id, v.ln_e());
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let om = s.metrics.encode();
    if crate::telemetry::wants_openmetrics(accept) {
        ([(header::CONTENT_TYPE, crate::telemetry::OPENMETRICS)], om).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, crate::telemetry::TEXT_004)],
            crate::telemetry::to_text_004(&om),
        )
            .into_response()
    }
}

async fn list(State(s): State<Shared>) -> Json<Vec<AnalysisSummary>> {
    let snap = s.snapshot.borrow().clone();
    Json(
        snap.analyses
            .values()
            .map(|v| v.state().summary(&v.id, &v.spec.baseline, &v.spec.canary))
            .collect(),
    )
}

async fn create(
    State(s): State<Shared>,
    body: Bytes,
) -> Result<(StatusCode, Json<AnalysisDoc>), ApiError> {
    let spec: AnalysisConfig = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadJson(format!("request body is not a valid analysis: {e} (fields: name, baseline, canary, checks, alpha, min_duration, max_duration, min_exposure)"))
    })?;
    if let Some(e) = empty_checks(&body, "analysis.") {
        return Err(e);
    }
    match s.create(spec.clone()).await {
        Ok(v) => Ok((StatusCode::CREATED, Json(analysis_doc(&v)))),
        Err(CreateError::Exists(n)) => match s.get(&n) {
            // The same definition again (a retried request, a re-run script): the one running.
            Some(v) if v.spec == spec => Ok((StatusCode::OK, Json(analysis_doc(&v)))),
            Some(v) => Err(ApiError::Conflict(conflict_message(&v.spec, &spec))),
            None => Err(ApiError::Conflict(format!(
                "an analysis named {n:?} already exists"
            ))),
        },
        Err(e) => Err(e.into()),
    }
}

/// The fields in which `requested` differs from `existing` (same name), as `field: existing
/// ... requested ...`, compared as their JSON so that every field counts, new ones included.
pub(crate) fn differences(existing: &AnalysisConfig, requested: &AnalysisConfig) -> Vec<String> {
    let (a, b) = (
        serde_json::to_value(existing).unwrap_or_default(),
        serde_json::to_value(requested).unwrap_or_default(),
    );
    let empty = serde_json::Map::new();
    let (a, b) = (
        a.as_object().unwrap_or(&empty),
        b.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let none = serde_json::Value::Null;
    keys.into_iter()
        .filter_map(|k| {
            let (x, y) = (a.get(k).unwrap_or(&none), b.get(k).unwrap_or(&none));
            (x != y).then(|| format!("{k}: existing {x}, requested {y}"))
        })
        .collect()
}

/// The 409 message for a name taken by another definition: what differs and the ways out.
pub(crate) fn conflict_message(existing: &AnalysisConfig, requested: &AnalysisConfig) -> String {
    format!(
        "an analysis named {:?} already exists with another definition ({}); its verdict is not this request's: delete it (DELETE /v1/analyses/{}) or use another name",
        existing.name,
        differences(existing, requested).join("; "),
        existing.name
    )
}

async fn show(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<AnalysisDoc>, ApiError> {
    s.get(&id)
        .map(|v| Json(analysis_doc(&v)))
        .ok_or(ApiError::NotFound(id))
}

/// The document of one analysis: its request and its state, current to the last tick.
fn analysis_doc(v: &AnalysisView) -> AnalysisDoc {
    AnalysisDoc {
        id: v.id.clone(),
        spec: v.spec.clone(),
        created_at: v.created_at,
        state: v.state().clone(),
    }
}

async fn delete(State(s): State<Shared>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    if s.try_delete(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(id))
    }
}

async fn verdict(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<VerdictDoc>, ApiError> {
    let v = s.get(&id).ok_or(ApiError::NotFound(id))?;
    Ok(Json(v.state().verdict_doc(&v.id)))
}

/// `GET /v1/analyses/{id}/history`.
async fn history(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<meshgate_core::history::History>, ApiError> {
    let v = s.get(&id).ok_or(ApiError::NotFound(id))?;
    Ok(Json(v.history.as_ref().clone()))
}

async fn targets(State(s): State<Shared>) -> Json<Vec<crate::scrape::TargetHealth>> {
    let mut v: Vec<_> = s
        .health
        .read()
        .expect("health lock")
        .values()
        .cloned()
        .collect();
    v.sort_by(|a, b| a.url.cmp(&b.url));
    Json(v)
}

async fn checks(State(s): State<Shared>) -> Json<Vec<CheckInfo>> {
    Json(s.catalog.iter().map(CheckInfo::from).collect())
}
