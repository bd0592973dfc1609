//! The OpenAPI 3.1 document of the whole HTTP API.
//!
//! The schemas of every body that has a Rust type are generated from that type (utoipa's
//! `ToSchema`), so a field added, renamed or made optional is in the document the moment it is in
//! the code. The paths, their statuses and examples, and the few bodies built without a type (the
//! Kayenta and Flagger answers, the Prometheus-style vectors) are in `openapi-paths.json`. The test
//! `tests/it/openapi.rs` walks every router in the source and fails on a route that is not
//! documented or documented but not served, and calls every documented operation on a running
//! daemon, checking each answer against this document.

use std::sync::LazyLock;

use serde_json::Value;
use utoipa::OpenApi;

use crate::analysis::AnalysisConfig;

/// Paths and hand-written schemas.
const PATHS: &str = include_str!("openapi-paths.json");

/// The generated component schemas.
#[derive(OpenApi)]
#[openapi(components(schemas(
    meshgate_core::api::VerdictDoc,
    meshgate_core::api::AnalysisSummary,
    meshgate_core::api::AnalysisDoc<AnalysisConfig>,
    meshgate_core::api::ErrorDoc,
    meshgate_core::api::PlanStatus,
    meshgate_core::judge::CheckInfo,
    meshgate_core::istio::skew::SkewReport,
    AnalysisConfig,
    crate::plan::Plan,
    crate::scrape::TargetHealth,
    crate::istio::api::ClusterControlPlane,
    super::argo::MeasureRequest,
    super::argo::Measurement,
    super::flagger::Payload,
    super::flagger::Record,
)))]
struct Schemas;

/// The document, built once: the paths file with the generated schemas added to its components.
pub static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    let mut doc: Value = serde_json::from_str(PATHS).expect("openapi-paths.json is JSON");
    let generated = serde_json::to_value(Schemas::openapi()).expect("the generated document");
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("openapi-paths.json has components.schemas");
    for (name, schema) in generated["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let previous = schemas.insert(name.clone(), schema.clone());
        assert!(
            previous.is_none(),
            "schema {name} is both generated and in openapi-paths.json"
        );
    }
    doc["info"]["version"] = Value::String(env!("CARGO_PKG_VERSION").to_owned());
    serde_json::to_string_pretty(&doc).expect("the document serializes")
});

#[cfg(test)]
mod tests {
    /// Every `$ref` names a schema of the document, and the generated ones are there.
    #[test]
    fn every_reference_resolves() {
        let doc: serde_json::Value = serde_json::from_str(&super::DOCUMENT).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in [
            "VerdictDoc",
            "CheckEvidence",
            "AnalysisConfig",
            "PlanStatus",
            "SkewReport",
        ] {
            assert!(schemas.contains_key(name), "{name}");
        }
        let text = super::DOCUMENT.as_str();
        let mut rest = text;
        let mut refs = 0;
        while let Some(i) = rest.find("#/components/schemas/") {
            let after = &rest[i + "#/components/schemas/".len()..];
            let name = &after[..after.find('"').unwrap()];
            assert!(schemas.contains_key(name), "unresolved $ref {name}");
            refs += 1;
            rest = after;
        }
        assert!(refs > 40, "{refs}");
    }
}
