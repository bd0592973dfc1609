//! Flagger webhooks: one URL per gate (`/flagger/{gate}`), since Flagger's payload does not say
//! which hook it is. Flagger counts any status <= 202 as success and 203 and above as failure;
//! meshgate answers 200 to let Flagger go on and 412 to hold it (412 is never retried by Flagger,
//! unlike 429 and 5xx).
//!
//! The analysis is `{name}.{namespace}` of the Canary, created on first use from the webhook's
//! metadata (`baseline`/`canary` selectors, or `baselineRevision`/`canaryRevision`, plus optional
//! `checks`, `alpha`, `minDuration`, `maxDuration`, `minExposure`). A new checksum (a new rollout of
//! the Canary) replaces an analysis that belonged to the previous one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::analysis::AnalysisConfig;
use crate::api::ApiError;
use crate::judge::Verdict;
use crate::state::{AnalysisView, CreateError, Shared};

/// Calls kept for `GET /v1/flagger/records`.
const MAX_RECORDS: usize = 256;

/// The gates, one URL each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Gate {
    /// Before the canary is scaled up.
    ConfirmRollout,
    /// Weight 0, iteration 0.
    PreRollout,
    /// Every iteration.
    Rollout,
    /// Before each weight increase.
    ConfirmTrafficIncrease,
    /// Before promotion.
    ConfirmPromotion,
    /// A 2xx answer makes Flagger roll back.
    Rollback,
    /// After Succeeded / Failed.
    PostRollout,
    /// Every event.
    Event,
}

impl Gate {
    /// Every gate with its URL segment.
    pub const ALL: [(&'static str, Gate); 8] = [
        ("confirm-rollout", Gate::ConfirmRollout),
        ("pre-rollout", Gate::PreRollout),
        ("rollout", Gate::Rollout),
        ("confirm-traffic-increase", Gate::ConfirmTrafficIncrease),
        ("confirm-promotion", Gate::ConfirmPromotion),
        ("rollback", Gate::Rollback),
        ("post-rollout", Gate::PostRollout),
        ("event", Gate::Event),
    ];

    fn parse(s: &str) -> Option<Gate> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, g)| *g)
    }

    /// Whether this gate lets Flagger go on with this verdict.
    pub fn passes(self, v: Verdict) -> bool {
        match self {
            Gate::ConfirmRollout => true,
            Gate::PreRollout | Gate::Rollout => v != Verdict::NoGo,
            Gate::ConfirmTrafficIncrease | Gate::ConfirmPromotion => v == Verdict::Go,
            Gate::Rollback => v == Verdict::NoGo,
            Gate::PostRollout | Gate::Event => true,
        }
    }
}

/// Flagger's webhook payload.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[schema(as = FlaggerPayload)]
pub struct Payload {
    /// Canary name.
    pub name: String,
    /// Canary namespace.
    pub namespace: String,
    /// Canary phase.
    #[serde(default)]
    pub phase: String,
    /// Canary checksum (changes with each new rollout).
    #[serde(default)]
    pub checksum: String,
    /// The webhook's metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// One call of a gate, as `GET /v1/flagger/records` lists it.
#[derive(Clone, Serialize, utoipa::ToSchema)]
#[schema(as = FlaggerRecord)]
pub(crate) struct Record {
    gate: Gate,
    status: u16,
    verdict: Option<Verdict>,
    at: String,
    payload: Payload,
}

/// Recent calls and the checksum each Flagger analysis was created for.
#[derive(Default)]
pub struct Records {
    inner: Mutex<(VecDeque<Record>, HashMap<String, String>)>,
}

/// Routes of the Flagger gates.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/flagger/{gate}", post(hook))
        .route("/v1/flagger/records", get(records))
}

async fn records(Extension(st): Extension<Arc<super::State>>) -> Response {
    let g = st.flagger.inner.lock().expect("flagger lock");
    Json(g.0.iter().cloned().collect::<Vec<_>>()).into_response()
}

/// The analysis id of a Canary.
pub fn analysis_id(p: &Payload) -> String {
    format!("{}.{}", p.name, p.namespace)
}

fn spec_of(p: &Payload) -> Result<AnalysisConfig, ApiError> {
    let m = &p.metadata;
    let sel = |key: &str, rev: &str| -> Result<String, ApiError> {
        if let Some(s) = m.get(key) {
            return Ok(s.clone());
        }
        if let Some(r) = m.get(rev) {
            return Ok(format!("{{revision={r:?}}}"));
        }
        Err(ApiError::Invalid(format!(
            "webhook metadata: neither {key:?} (a selector) nor {rev:?} is set; add one to the Canary's webhook metadata"
        )))
    };
    let dur = |key: &str| -> Result<Option<std::time::Duration>, ApiError> {
        m.get(key)
            .map(|s| {
                humantime::parse_duration(s)
                    .map_err(|e| ApiError::Invalid(format!("webhook metadata.{key}: {s:?}: {e}")))
            })
            .transpose()
    };
    let num = |key: &str| -> Result<Option<f64>, ApiError> {
        m.get(key)
            .map(|s| {
                s.trim()
                    .parse::<f64>()
                    .map_err(|e| ApiError::Invalid(format!("webhook metadata.{key}: {s:?}: {e}")))
            })
            .transpose()
    };
    Ok(AnalysisConfig {
        name: analysis_id(p),
        baseline: sel("baseline", "baselineRevision")?,
        canary: sel("canary", "canaryRevision")?,
        checks: m
            .get("checks")
            .map(|c| {
                c.split(',')
                    .map(|x| x.trim().to_owned())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        alpha: num("alpha")?,
        min_duration: dur("minDuration")?,
        max_duration: dur("maxDuration")?,
        min_exposure: num("minExposure")?,
        ..Default::default()
    })
}

/// Find the Canary's analysis, or create it from the payload.
async fn ensure(s: &Shared, st: &super::State, p: &Payload) -> Result<Arc<AnalysisView>, ApiError> {
    let id = analysis_id(p);
    let known = st
        .flagger
        .inner
        .lock()
        .expect("flagger lock")
        .1
        .get(&id)
        .cloned();
    if let Some(v) = s.get(&id) {
        match known {
            Some(sum) if !p.checksum.is_empty() && sum != p.checksum => {
                // A new revision of the Canary: the old analysis judged something else.
                s.delete(&id).await;
            }
            _ => return Ok(v),
        }
    }
    let spec = spec_of(p)?;
    let v = match s.create(spec).await {
        Ok(v) => v,
        Err(CreateError::Exists(_)) => s.get(&id).ok_or(ApiError::NotFound(id.clone()))?,
        Err(e) => return Err(e.into()),
    };
    st.flagger
        .inner
        .lock()
        .expect("flagger lock")
        .1
        .insert(id, p.checksum.clone());
    Ok(v)
}

async fn hook(
    State(s): State<Shared>,
    Extension(st): Extension<Arc<super::State>>,
    Path(gate): Path<String>,
    body: Bytes,
) -> Response {
    let Some(g) = Gate::parse(&gate) else {
        let names: Vec<&str> = Gate::ALL.iter().map(|(n, _)| *n).collect();
        return ApiError::Missing(format!(
            "no flagger gate {gate:?} (known: {})",
            names.join(", ")
        ))
        .into_response();
    };
    let p: Payload = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return ApiError::BadJson(format!(
                "flagger webhook payload: {e} (expected name, namespace, phase, checksum, metadata)"
            ))
            .into_response()
        }
    };
    let (status, verdict, resp) = match g {
        Gate::Event | Gate::PostRollout => (
            StatusCode::ACCEPTED,
            s.get(&analysis_id(&p)).map(|v| v.verdict()),
            (
                StatusCode::ACCEPTED,
                Json(json!({"accepted": true, "analysis": analysis_id(&p)})),
            )
                .into_response(),
        ),
        Gate::Rollback => match s.get(&analysis_id(&p)) {
            // No analysis: nothing says roll back.
            None => (
                StatusCode::PRECONDITION_FAILED,
                None,
                (
                    StatusCode::PRECONDITION_FAILED,
                    Json(json!({"analysis": analysis_id(&p), "verdict": null, "rollback": false, "reason": "no analysis for this canary"})),
                )
                    .into_response(),
            ),
            Some(v) => answer(g, &v),
        },
        _ => match ensure(&s, &st, &p).await {
            Ok(v) => answer(g, &v),
            Err(e) => {
                let r = e.into_response();
                (r.status(), None, r)
            }
        },
    };
    let mut guard = st.flagger.inner.lock().expect("flagger lock");
    guard.0.push_back(Record {
        gate: g,
        status: status.as_u16(),
        verdict,
        at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        payload: p,
    });
    while guard.0.len() > MAX_RECORDS {
        guard.0.pop_front();
    }
    resp
}

fn answer(g: Gate, v: &AnalysisView) -> (StatusCode, Option<Verdict>, Response) {
    let verdict = v.verdict();
    let status = if g.passes(verdict) {
        StatusCode::OK
    } else {
        StatusCode::PRECONDITION_FAILED
    };
    let body = json!({
        "analysis": v.id, "gate": g, "verdict": verdict, "reason": v.state().reason(),
        "pass": status == StatusCode::OK, "evidence": format!("/v1/analyses/{}/verdict", v.id),
    });
    (status, Some(verdict), (status, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_table_matches_flagger_semantics() {
        use Verdict::*;
        let row = |g: Gate| [Pending, Go, NoGo, Inconclusive].map(|v| g.passes(v));
        assert_eq!(row(Gate::ConfirmRollout), [true, true, true, true]);
        assert_eq!(row(Gate::PreRollout), [true, true, false, true]);
        assert_eq!(row(Gate::Rollout), [true, true, false, true]);
        assert_eq!(
            row(Gate::ConfirmTrafficIncrease),
            [false, true, false, false]
        );
        assert_eq!(row(Gate::ConfirmPromotion), [false, true, false, false]);
        assert_eq!(row(Gate::Rollback), [false, false, true, false]);
        assert_eq!(row(Gate::Event), [true, true, true, true]);
        assert_eq!(row(Gate::PostRollout), [true, true, true, true]);
    }

    #[test]
    fn metadata_builds_the_analysis_or_names_the_missing_key() {
        let p = |m: &[(&str, &str)]| Payload {
            name: "reviews".into(),
            namespace: "shop".into(),
            phase: String::new(),
            checksum: String::new(),
            metadata: m
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let s = spec_of(&p(&[
            ("baselineRevision", "1-24-2"),
            ("canary", r#"{pod=~"x-.*"}"#),
            ("checks", "error-rate, latency-tail"),
            ("minDuration", "2m"),
        ]))
        .unwrap();
        assert_eq!(s.name, "reviews.shop");
        assert_eq!(s.baseline, r#"{revision="1-24-2"}"#);
        assert_eq!(s.canary, r#"{pod=~"x-.*"}"#);
        assert_eq!(s.checks, vec!["error-rate", "latency-tail"]);
        assert_eq!(s.min_duration, Some(std::time::Duration::from_secs(120)));
        let e = spec_of(&p(&[("baselineRevision", "a")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("canaryRevision"), "{e}");
        let e = spec_of(&p(&[
            ("baselineRevision", "a"),
            ("canaryRevision", "b"),
            ("alpha", "x"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("metadata.alpha"), "{e}");
    }
}
