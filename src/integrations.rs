//! The routes other tools call: Argo Rollouts (`web` and `kayenta` providers), Flagger webhooks,
//! a Prometheus-style query endpoint for Flagger MetricTemplates, and the OpenAPI document.
//!
//! Each peer's contract is in `docs/integrations.md`; handlers live in one submodule per peer and
//! only read the daemon through [`Shared`].

pub mod argo;
pub mod flagger;
pub mod kayenta;
pub mod openapi;
pub mod promql;

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Router};

use crate::state::Shared;

/// State the integrations keep between calls (Kayenta executions, Flagger records).
#[derive(Default)]
pub struct State {
    kayenta: kayenta::Executions,
    flagger: flagger::Records,
}

/// Every integration route, to be merged into the API router.
pub fn routes() -> Router<Shared> {
    let state = Arc::new(State::default());
    Router::new()
        .route(
            "/openapi.json",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    openapi::DOCUMENT.as_str(),
                )
                    .into_response()
            }),
        )
        .merge(argo::routes())
        .merge(kayenta::routes())
        .merge(flagger::routes())
        .merge(promql::routes())
        .layer(Extension(state))
}

/// A verdict as a small integer, worst last: 0 GO, 1 PENDING, 2 INCONCLUSIVE, 3 NO-GO.
/// `<= 1` means "nothing wrong so far"; used by the query endpoint and documented in the README.
pub fn verdict_code(v: crate::judge::Verdict) -> f64 {
    use crate::judge::Verdict::*;
    match v {
        Go => 0.0,
        Pending => 1.0,
        Inconclusive => 2.0,
        NoGo => 3.0,
    }
}
