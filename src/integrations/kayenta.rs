//! A Kayenta-compatible API, as Argo Rollouts' `kayenta` provider calls it: list canary configs,
//! start an execution, poll it until `complete`.
//!
//! A config is a set of meshgate checks: `meshgate` (all checks) and one per check. An execution
//! is a live meshgate analysis with the control scope as baseline selector and the experiment
//! scope as canary selector (a bare revision such as `1-24-2` means `{revision="1-24-2"}`).
//! It is complete when the verdict is final. The score (0-100) is documented in the README:
//! GO scores 100, NO-GO 0, INCONCLUSIVE the request's `marginal` threshold (Argo: Inconclusive).
//!
//! Every scope of a request is judged. In Kayenta a request's `scopes` map names scopes that the
//! config's metrics refer to (`scopeName`), and one judgment scores every metric of every scope
//! together; meshgate's checks name no scope, so each scope gets its own analysis of the config's
//! checks, and the execution scores the worst of them: it passes only if every scope passes. It
//! is complete when every scope's verdict is final, or at once when one is NO-GO.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::analysis::AnalysisConfig;
use crate::api::ApiError;
use crate::judge::Verdict;
use crate::state::{AnalysisView, CreateError, Shared};

/// Executions kept for polling (oldest forgotten first).
const MAX_EXECUTIONS: usize = 1024;
/// Config id of the all-checks config.
pub const ALL_CHECKS: &str = "meshgate";

/// Started executions: id to what it runs.
#[derive(Default)]
pub struct Executions {
    inner: Mutex<(u64, BTreeMap<String, Execution>, VecDeque<String>)>,
}

/// One execution: its thresholds and, per scope (in name order), the analysis judging it.
#[derive(Clone, Debug)]
struct Execution {
    thresholds: Thresholds,
    scopes: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
struct Thresholds {
    pass: f64,
    marginal: f64,
}

/// Routes of the Kayenta-compatible API.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/canaryConfig", get(configs))
        .route("/canary/{id}", post(start).get(execution))
}

async fn configs(State(s): State<Shared>) -> Json<Value> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ms = now.as_millis() as u64;
    let iso = humantime::format_rfc3339_millis(std::time::SystemTime::UNIX_EPOCH + now).to_string();
    let mut out = vec![json!({
        "id": ALL_CHECKS, "name": ALL_CHECKS, "updatedTimestamp": ms,
        "updatedTimestampIso": iso, "applications": ["meshgate"],
    })];
    for c in s.catalog.names() {
        out.push(json!({
            "id": c, "name": c, "updatedTimestamp": ms,
            "updatedTimestampIso": iso, "applications": ["meshgate"],
        }));
    }
    Json(Value::Array(out))
}

#[derive(Deserialize)]
struct StartRequest {
    scopes: BTreeMap<String, ScopePair>,
    thresholds: Thresholds,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScopePair {
    control_scope: Scope,
    experiment_scope: Scope,
}

#[derive(Deserialize)]
struct Scope {
    scope: String,
}

/// A scope is a meshgate selector, or a bare revision.
fn selector(scope: &str) -> String {
    let t = scope.trim();
    if t.starts_with('{') {
        t.to_owned()
    } else {
        format!("{{revision={t:?}}}")
    }
}

async fn start(
    State(s): State<Shared>,
    Extension(st): Extension<Arc<super::State>>,
    Path(config): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: StartRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadJson(format!(
            "canary execution request: {e} (expected scopes.<name>.controlScope/experimentScope and thresholds.pass/marginal)"
        ))
    })?;
    let checks = if config == ALL_CHECKS {
        Vec::new()
    } else if s.catalog.get(&config).is_some() {
        vec![config.clone()]
    } else {
        return Err(ApiError::Missing(format!(
            "no canary config {config:?} (known: {ALL_CHECKS}, {})",
            s.catalog.names().join(", ")
        )));
    };
    if req.scopes.is_empty() {
        return Err(ApiError::Invalid(
            "scopes: at least one scope is needed".into(),
        ));
    }
    let t = req.thresholds;
    if !(0.0..=100.0).contains(&t.marginal) || !(t.marginal..=100.0).contains(&t.pass) {
        return Err(ApiError::Invalid(format!(
            "thresholds: need 0 <= marginal ({}) <= pass ({}) <= 100",
            t.marginal, t.pass
        )));
    }
    let id = {
        let mut g = st.kayenta.inner.lock().expect("kayenta lock");
        g.0 += 1;
        let n = g.0;
        format!("kayenta-{}-{n}", std::process::id())
    };
    // One scope: the analysis is the execution's id (as before); more: `<id>-<i>` per scope.
    let many = req.scopes.len() > 1;
    let mut scopes: Vec<(String, String)> = Vec::with_capacity(req.scopes.len());
    for (i, (name, scope)) in req.scopes.iter().enumerate() {
        let analysis = if many {
            format!("{id}-{i}")
        } else {
            id.clone()
        };
        let spec = AnalysisConfig {
            name: analysis.clone(),
            baseline: selector(&scope.control_scope.scope),
            canary: selector(&scope.experiment_scope.scope),
            checks: checks.clone(),
            alpha: None,
            min_duration: None,
            max_duration: None,
            min_exposure: None,
            ..Default::default()
        };
        let failed = match s.create(spec).await {
            Ok(_) => None,
            Err(CreateError::Invalid(m)) => Some(ApiError::Invalid(format!("scopes.{name}: {m}"))),
            Err(CreateError::Exists(n)) => Some(ApiError::Conflict(n)),
            Err(e) => Some(e.into()),
        };
        if let Some(e) = failed {
            // All scopes or none: the ones already started go.
            for (_, a) in &scopes {
                s.delete(a.as_str()).await;
            }
            return Err(e);
        }
        scopes.push((name.clone(), analysis));
    }
    let forget = {
        let mut g = st.kayenta.inner.lock().expect("kayenta lock");
        g.1.insert(
            id.clone(),
            Execution {
                thresholds: t,
                scopes,
            },
        );
        g.2.push_back(id.clone());
        if g.2.len() > MAX_EXECUTIONS {
            g.2.pop_front().and_then(|old| g.1.remove(&old))
        } else {
            None
        }
    };
    if let Some(old) = forget {
        for (_, a) in &old.scopes {
            s.delete(a).await;
        }
    }
    Ok(Json(json!({ "canaryExecutionId": id })))
}

/// The 0-100 score of an analysis: the verdict decides, the checks explain.
///
/// GO 100; NO-GO 0; INCONCLUSIVE exactly `marginal` (so Argo says Inconclusive and pauses for a
/// person); PENDING has no score (`complete` is false). `check_score` per check is 100 when
/// certified, 0 on a regression, 50 while still collecting, weighted by the check weights.
pub fn score(v: &AnalysisView, marginal: f64) -> Option<f64> {
    match v.verdict() {
        Verdict::Go => Some(100.0),
        Verdict::NoGo => Some(0.0),
        Verdict::Inconclusive => Some(marginal),
        Verdict::Pending => None,
    }
}

fn check_scores(v: &AnalysisView) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    for c in v.state().evidence() {
        let s = match c.status.as_str() {
            "certified" => 100.0,
            "regression" => 0.0,
            _ => 50.0,
        };
        m.insert(
            c.name.clone(),
            json!({"score": s, "weight": c.weight, "eValue": crate::api::saturate(c.e_value), "reason": c.reason}),
        );
    }
    m
}

async fn execution(
    State(s): State<Shared>,
    Extension(st): Extension<Arc<super::State>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let ex = st
        .kayenta
        .inner
        .lock()
        .expect("kayenta lock")
        .1
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(id.clone()))?;
    let t = ex.thresholds;
    let mut views = Vec::with_capacity(ex.scopes.len());
    for (scope, analysis) in &ex.scopes {
        let v = s.get(analysis).ok_or_else(|| {
            ApiError::NotFound(format!(
                "{id} (scope {scope}: analysis {analysis} was deleted)"
            ))
        })?;
        views.push((scope.as_str(), v));
    }
    // Complete when every scope is decided, or as soon as one fails.
    let failed = views.iter().any(|(_, v)| v.verdict() == Verdict::NoGo);
    let complete = failed || views.iter().all(|(_, v)| v.verdict().is_final());
    let many = views.len() > 1;
    let per_scope: Vec<Value> = views
        .iter()
        .map(|(scope, v)| {
            json!({
                "scope": scope, "analysis": v.id, "verdict": v.state().verdict(),
                "reason": v.state().reason(), "evidence": format!("/v1/analyses/{}/verdict", v.id),
            })
        })
        .collect();
    let (_, first) = &views[0];
    let mut doc = json!({
        "id": id,
        "complete": complete,
        "status": if complete { "succeeded" } else { "running" },
        "meshgate": if many {
            json!({ "scopes": per_scope })
        } else {
            json!({ "verdict": first.state().verdict(), "reason": first.state().reason(), "evidence": format!("/v1/analyses/{}/verdict", first.id) })
        },
    });
    if complete {
        // The worst scope decides (a NO-GO scores 0 whatever the others say).
        // (complete: every scope is final, or one is NO-GO and it is chosen here.)
        let (scope, worst, score) = views
            .iter()
            .filter(|(_, v)| !failed || v.verdict() == Verdict::NoGo)
            .filter_map(|(scope, v)| Some((*scope, v, score(v, t.marginal)?)))
            .min_by(|a, b| a.2.total_cmp(&b.2))
            .expect("a final scope");
        let classification = if score >= t.pass {
            "Pass"
        } else if score >= t.marginal {
            "Marginal"
        } else {
            "Fail"
        };
        let st = worst.state();
        let reason = if many {
            format!(
                "meshgate {} (worst of {} scopes: {scope}): {}",
                st.verdict().as_str(),
                views.len(),
                st.reason()
            )
        } else {
            format!("meshgate {}: {}", st.verdict().as_str(), st.reason())
        };
        let mut checks = serde_json::Map::new();
        for (scope, v) in &views {
            for (name, c) in check_scores(v) {
                let key = if many {
                    format!("{scope}/{name}")
                } else {
                    name
                };
                checks.insert(key, c);
            }
        }
        doc["result"] = json!({
            "judgeResult": {
                "score": {
                    "score": score,
                    "classification": classification,
                    "classificationReason": reason,
                },
                "checkScores": checks,
            }
        });
    }
    Ok(Json(doc))
}
