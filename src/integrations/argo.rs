//! Argo Rollouts `web` provider: one call that creates the analysis on first use and answers
//! its verdict, always 200 with JSON while the daemon can answer.
//!
//! The recommended AnalysisTemplate (`deploy/argo/analysistemplate.yaml`) reads `{$.decision}`,
//! a field present only once the verdict is final: GO is Successful, NO-GO and INCONCLUSIVE are
//! Failed. While PENDING the field is absent, so Argo's JSONPath finds no match and records an
//! Error measurement: errors do not count toward `count`, are retried after 10 s, and only abort
//! after `consecutiveErrorLimit` in a row, which the template sets above the analysis' maximum
//! duration. PENDING therefore neither promotes, nor pauses, nor aborts the Rollout, and the
//! first final verdict ends the metric at once (count 1).
//!
//! A definition meshgate cannot run (a bad selector, an unknown check, a malformed body, a name
//! taken by another definition) is a configuration error that waiting cannot fix. webmetric.go
//! makes every non-2xx answer an Error measurement, retried every 10 s until
//! `consecutiveErrorLimit`: with the shipped template, 400 tries, over an hour before the Rollout
//! aborts. So these are answered 200 with `"decision": "INVALID"` and the error, which the
//! template's `failureCondition` (`result != "GO"`) makes a Failed measurement at once. Only
//! answers the daemon truly cannot give now (503, 429) stay non-2xx Errors.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::analysis::AnalysisConfig;
use crate::api::ApiError;
use crate::judge::Verdict;
use crate::state::{AnalysisView, CreateError, Shared};

/// Routes of the Argo `web` provider.
pub fn routes() -> Router<Shared> {
    Router::new().route("/argo/v1/analyses/{id}", post(measure))
}

/// The body Argo sends (`jsonBody`): the analysis spec without its name (the name is in the URL).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ArgoRequest)]
pub(crate) struct MeasureRequest {
    baseline: Option<String>,
    canary: Option<String>,
    #[serde(default)]
    checks: Vec<String>,
    alpha: Option<f64>,
    #[serde(default, with = "humantime_serde::option")]
    #[schema(value_type = Option<String>, example = "5m")]
    min_duration: Option<std::time::Duration>,
    #[serde(default, with = "humantime_serde::option")]
    #[schema(value_type = Option<String>, example = "1h")]
    max_duration: Option<std::time::Duration>,
    min_exposure: Option<f64>,
}

/// What Argo reads: `verdict` through the template's JSONPath, the rest for people.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, utoipa::ToSchema)]
#[schema(as = ArgoMeasurement)]
pub struct Measurement {
    /// Analysis id.
    pub id: String,
    /// PENDING, GO, NO-GO or INCONCLUSIVE.
    pub verdict: Verdict,
    /// True once the verdict is final.
    pub decided: bool,
    /// The final verdict; absent while PENDING (what the AnalysisTemplate's JSONPath reads).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub decision: Option<Verdict>,
    /// Why.
    pub reason: String,
    /// Combined e-value.
    pub e_value: f64,
    /// 1 / alpha.
    pub threshold: f64,
    /// Seconds since the analysis started.
    pub elapsed_seconds: f64,
    /// Where the full evidence is.
    pub evidence: String,
}

impl Measurement {
    /// The measurement of one analysis view.
    pub fn of(v: &AnalysisView) -> Self {
        Self {
            id: v.id.clone(),
            verdict: v.state().verdict(),
            decided: v.state().verdict().is_final(),
            decision: v
                .state()
                .verdict()
                .is_final()
                .then_some(v.state().verdict()),
            reason: v.state().reason().to_owned(),
            e_value: crate::api::e_value(v.state().ln_e()),
            threshold: 1.0 / v.state().settings().alpha,
            elapsed_seconds: v.state().elapsed().as_secs_f64(),
            evidence: format!("/v1/analyses/{}/verdict", v.id),
        }
    }
}

/// The decision of a definition that cannot run (see the module documentation).
pub const INVALID: &str = "INVALID";

async fn measure(State(s): State<Shared>, Path(id): Path<String>, body: Bytes) -> Response {
    match measure_definition(&s, &id, &body).await {
        Ok(m) => Json(m).into_response(),
        Err(e) => match &e {
            ApiError::BadJson(_)
            | ApiError::Invalid(_)
            | ApiError::Missing(_)
            | ApiError::NotFound(_)
            | ApiError::Conflict(_) => {
                let code = match &e {
                    ApiError::BadJson(_) => "bad_json",
                    ApiError::Conflict(_) => "exists",
                    ApiError::Missing(_) | ApiError::NotFound(_) => "not_found",
                    _ => "invalid_analysis",
                };
                let message = e.to_string();
                Json(json!({
                    "id": id,
                    "verdict": INVALID,
                    "decided": true,
                    "decision": INVALID,
                    "reason": format!("the analysis definition cannot run: {message}"),
                    "error": {"code": code, "message": message},
                }))
                .into_response()
            }
            _ => e.into_response(),
        },
    }
}

async fn measure_definition(s: &Shared, id: &str, body: &[u8]) -> Result<Measurement, ApiError> {
    let id = id.to_owned();
    let existing = s.get(&id);
    let req: MeasureRequest = if body.iter().all(|b| b.is_ascii_whitespace()) {
        MeasureRequest::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::BadJson(format!(
                "argo measurement body: {e} (fields: baseline, canary, checks, alpha, min_duration, max_duration, min_exposure)"
            ))
        })?
    };
    if let Some(e) = crate::api::empty_checks(body, "jsonBody.") {
        return Err(e);
    }
    let (Some(baseline), Some(canary)) = (req.baseline, req.canary) else {
        // No definition in the body: follow the analysis of that name.
        if let Some(v) = existing {
            return Ok(Measurement::of(&v));
        }
        return Err(ApiError::Missing(format!(
            "no analysis named {id:?}, and the body has no baseline and canary to create it (the AnalysisTemplate needs a jsonBody)"
        )));
    };
    let spec = AnalysisConfig {
        name: id.clone(),
        baseline,
        canary,
        checks: req.checks,
        alpha: req.alpha,
        min_duration: req.min_duration,
        max_duration: req.max_duration,
        min_exposure: req.min_exposure,
        ..Default::default()
    };
    if let Some(v) = existing {
        // The next measurement of the same run: its analysis. Another definition (a retried
        // rollout with a new canary) must not get the old decision.
        if v.spec == spec {
            return Ok(Measurement::of(&v));
        }
        return Err(ApiError::Conflict(crate::api::conflict_message(
            &v.spec, &spec,
        )));
    }
    match s.create(spec.clone()).await {
        Ok(v) => Ok(Measurement::of(&v)),
        // Two measurements racing to create, or the next measurement of the same run: the
        // analysis of this definition. Another definition under the name (a retried rollout with
        // a new canary) must not get the old decision: INVALID, a Failed measurement for Argo.
        Err(CreateError::Exists(_)) => match s.get(&id) {
            Some(v) if v.spec == spec => Ok(Measurement::of(&v)),
            Some(v) => Err(ApiError::Conflict(crate::api::conflict_message(
                &v.spec, &spec,
            ))),
            None => Err(ApiError::NotFound(id)),
        },
        Err(e) => Err(e.into()),
    }
}
