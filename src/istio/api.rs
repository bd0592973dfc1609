//! HTTP routes of the Istio features: `/v1/skew`, `/v1/control-plane`, `/v1/plan`, `/v1/plan/status`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use super::observe::TargetObservation;
use crate::state::Shared;
use meshgate_core::api::ErrorDoc;

/// The routes, merged into the API router.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/skew", get(skew))
        .route("/v1/control-plane", get(control_plane))
        .route("/v1/plan", get(plan))
        .route("/v1/plan/status", get(plan_status))
}

fn not_ready(what: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(ErrorDoc::new(
            "unavailable",
            format!("{what}: the engine has not ticked yet"),
        )),
    )
        .into_response()
}

async fn skew(State(s): State<Shared>) -> Response {
    match s.snapshot.borrow().skew.clone() {
        Some(r) => Json(r.as_ref().clone()).into_response(),
        None => not_ready("skew"),
    }
}

fn no_plan() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(ErrorDoc::new("not_found", "no [plan] in the configuration")),
    )
        .into_response()
}

async fn plan(State(s): State<Shared>) -> Response {
    match &s.plan {
        Some(p) => Json(p.as_ref().clone()).into_response(),
        None => no_plan(),
    }
}

async fn plan_status(State(s): State<Shared>) -> Response {
    if s.plan.is_none() {
        return no_plan();
    }
    match s.snapshot.borrow().plan.clone() {
        Some(p) => Json(p.as_ref().clone()).into_response(),
        None => not_ready("plan status"),
    }
}

/// One istiod's resource use.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct IstiodResources {
    /// Target URL.
    pub url: String,
    /// Revision.
    pub revision: String,
    /// Version (`istio_build{component="pilot"}`).
    pub version: Option<String>,
    /// Resident memory, bytes.
    pub resident_bytes: Option<f64>,
    /// Go heap in use, bytes.
    pub heap_inuse_bytes: Option<f64>,
    /// CPU cores (rate of `process_cpu_seconds_total` between the last two scrapes).
    pub cpu_cores: Option<f64>,
    /// Goroutines.
    pub goroutines: Option<f64>,
    /// Connected proxies (sum of `pilot_xds`).
    pub connected_proxies: f64,
}

/// Resource use of the control planes of one cluster.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ClusterControlPlane {
    /// Every istiod.
    pub istiods: Vec<IstiodResources>,
    /// Sum of resident memory over all revisions (what running them side by side costs).
    pub total_resident_bytes: f64,
    /// Sum of CPU cores.
    pub total_cpu_cores: f64,
    /// Per revision: resident bytes.
    pub resident_by_revision: BTreeMap<String, f64>,
    /// Extra memory of running every revision at once over the largest one alone (0.5 = +50%).
    pub overhead_of_running_all: Option<f64>,
}

/// The control-plane resource report from observations (pure).
pub fn control_plane_report(obs: &[TargetObservation]) -> BTreeMap<String, ClusterControlPlane> {
    let mut out: BTreeMap<String, ClusterControlPlane> = BTreeMap::new();
    for o in obs
        .iter()
        .filter(|o| o.label("role") == Some("istiod") || o.build("pilot").is_some())
    {
        let cluster = o.label("cluster").unwrap_or("default").to_owned();
        let revision = o.label("revision").unwrap_or("default").to_owned();
        let c = out.entry(cluster).or_insert_with(|| ClusterControlPlane {
            istiods: Vec::new(),
            total_resident_bytes: 0.0,
            total_cpu_cores: 0.0,
            resident_by_revision: BTreeMap::new(),
            overhead_of_running_all: None,
        });
        c.total_resident_bytes += o.resident_bytes.unwrap_or(0.0);
        c.total_cpu_cores += o.cpu_cores.unwrap_or(0.0);
        *c.resident_by_revision.entry(revision.clone()).or_default() +=
            o.resident_bytes.unwrap_or(0.0);
        c.istiods.push(IstiodResources {
            url: o.url.clone(),
            revision,
            version: o.build("pilot").map(str::to_owned),
            resident_bytes: o.resident_bytes,
            heap_inuse_bytes: o.heap_inuse_bytes,
            cpu_cores: o.cpu_cores,
            goroutines: o.goroutines,
            connected_proxies: o.xds.iter().map(|(_, n)| n).sum(),
        });
    }
    for c in out.values_mut() {
        let max = c
            .resident_by_revision
            .values()
            .copied()
            .fold(0.0_f64, f64::max);
        if max > 0.0 && c.resident_by_revision.len() > 1 {
            c.overhead_of_running_all = Some(c.total_resident_bytes / max - 1.0);
        }
    }
    out
}

async fn control_plane(State(s): State<Shared>) -> Response {
    Json(json!({ "clusters": control_plane_report(&s.observer.all()) })).into_response()
}
