//! The API documents: what the HTTP API answers, owned and Serialize + Deserialize, so the server
//! builds them and every client (`gate`, `demo`, `plan status`) reads them as the same types.
//!
//! A field renamed here changes both sides at once; a client talking to a daemon that answers
//! another shape gets a serde error naming the field, never a silent `?`. The field names are
//! the wire format (Argo, Flagger and Kayenta templates depend on them): the tests below pin them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::judge::{Analysis, CheckEvidence, DataQuality, Design, GoCertificate, Verdict};

pub use crate::istio::skew::{IstiodView, RevisionView, SkewProblem, SkewReport};

/// `GET /v1/analyses/{id}/verdict`: the verdict with its evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VerdictDoc {
    /// Analysis id.
    pub id: String,
    /// PENDING, GO, NO-GO, INCONCLUSIVE.
    pub verdict: Verdict,
    /// True for GO, NO-GO and INCONCLUSIVE.
    pub decided: bool,
    /// Why.
    pub reason: String,
    /// Seconds since the analysis started.
    pub elapsed_seconds: f64,
    /// Seconds until the verdict became final.
    pub decided_after_seconds: Option<f64>,
    /// With a soak: seconds until every critical check first certified GO. The verdict stays
    /// PENDING ("soaking") for the soak after that, and a NO-GO found meanwhile still ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certified_after_seconds: Option<f64>,
    /// Combined e-value (saturated at `f64::MAX`, see [`e_value`]).
    pub e_value: f64,
    /// The combined e-value at which it is NO-GO: 1 / alpha (1 / (alpha / 2) in the before/after
    /// design, whose intervals take the other half).
    pub threshold: f64,
    /// Alpha.
    pub alpha: f64,
    /// What is compared with what, in one line (`concurrent: ...` or `before/after ...`).
    pub design: String,
    /// Per-check evidence.
    pub checks: Vec<CheckEvidence>,
    /// Data quality.
    pub data_quality: DataQuality,
}

/// One entry of `GET /v1/analyses`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AnalysisSummary {
    /// Analysis id.
    pub id: String,
    /// Current verdict.
    pub verdict: Verdict,
    /// Why.
    pub reason: String,
    /// Seconds since the analysis started.
    pub elapsed_seconds: f64,
    /// Baseline selector.
    pub baseline: String,
    /// Canary selector.
    pub canary: String,
}

/// `GET /v1/analyses/{id}` (and the answer to `POST /v1/analyses`): the request an analysis was
/// created from and its whole state. `S` is the request type, which lives with the daemon's
/// configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AnalysisDoc<S> {
    /// Analysis id (its name).
    pub id: String,
    /// The request it was created from.
    pub spec: S,
    /// Unix time of creation.
    pub created_at: f64,
    /// State, verdict and evidence, current to the last tick.
    #[schema(value_type = AnalysisStateSchema)]
    pub state: Analysis,
}

/// The documented fields of an analysis' `state` in [`AnalysisDoc`]. The state holds more: the
/// e-processes and counts as persisted, internal, whose shape may change between versions. The
/// verdict document (`GET /v1/analyses/{id}/verdict`) is the stable view of the evidence.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AnalysisStateSchema {
    /// Current verdict.
    verdict: Verdict,
    /// Why.
    reason: String,
    /// Evidence per check, as of the last deciding tick.
    evidence: Vec<CheckEvidence>,
    /// Data quality at the last tick.
    quality: DataQuality,
}

/// Every API error: `{"error": {"code", "message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDoc {
    /// What went wrong.
    pub error: ErrorBody,
}

/// The body of an [`ErrorDoc`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code (`not_found`, `invalid_analysis`, ...). A string, not an enum: the codes
    /// are an open set across the integrations, and a client must still read one it does not
    /// know.
    pub code: String,
    /// For people.
    pub message: String,
}

impl ErrorDoc {
    /// The error document of `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorDoc {
            error: ErrorBody {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

/// Where one namespace of an upgrade wave stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceState {
    /// Every discovered proxy runs the old revision (or its label says so).
    NotStarted,
    /// Some proxies run the new revision, some the old (pods restarting).
    Moving,
    /// Every discovered proxy runs the new revision.
    Moved,
    /// No proxy discovered in it.
    Empty,
}

/// Where one upgrade wave stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WavePhase {
    /// No namespace of the wave has moved.
    NotStarted,
    /// Some namespaces or pods have moved, not all.
    Moving,
    /// Every namespace moved; the soak runs (or the verdict is not GO yet).
    Soaking,
    /// GO and soaked.
    Done,
    /// The wave's analysis is NO-GO or INCONCLUSIVE.
    Failed,
}

impl WavePhase {
    /// The word the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "not_started",
            Self::Moving => "moving",
            Self::Soaking => "soaking",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

/// A namespace's Istio injection labels as written on the namespace (a revision tag stays a
/// tag): what a wave's rollback restores.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NamespaceLabels {
    /// `istio-injection` (e.g. `enabled`), if set.
    pub istio_injection: Option<String>,
    /// `istio.io/rev` (a revision or a tag), if set.
    pub rev: Option<String>,
}

/// `istio-injection=enabled,istio.io/rev=1-24-2` (only the labels set; empty when none): the
/// form of the `namespace_labels` target label that Kubernetes discovery sets.
impl std::fmt::Display for NamespaceLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sep = "";
        if let Some(v) = &self.istio_injection {
            write!(f, "istio-injection={v}")?;
            sep = ",";
        }
        if let Some(v) = &self.rev {
            write!(f, "{sep}istio.io/rev={v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for NamespaceLabels {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = NamespaceLabels::default();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("istio-injection", v)) => out.istio_injection = Some(v.to_owned()),
                Some(("istio.io/rev", v)) => out.rev = Some(v.to_owned()),
                _ => {
                    return Err(format!(
                        "namespace_labels {s:?}: {part:?} is not istio-injection=... or istio.io/rev=..."
                    ))
                }
            }
        }
        Ok(out)
    }
}

impl NamespaceLabels {
    /// The `kubectl` command that puts these labels back on namespace `ns` (a label that was
    /// not set is removed).
    pub fn kubectl(&self, ns: &str) -> String {
        let inj = match &self.istio_injection {
            Some(v) => format!("istio-injection={v}"),
            None => "istio-injection-".into(),
        };
        let rev = match &self.rev {
            Some(v) => format!("istio.io/rev={v}"),
            None => "istio.io/rev-".into(),
        };
        format!("kubectl label namespace {ns} {inj} {rev} --overwrite")
    }
}

/// One wave in `GET /v1/plan/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WaveStatus {
    /// Name.
    pub name: String,
    /// Per namespace: `[state, [proxies on the old revision, on the new, on another]]`.
    #[schema(value_type = BTreeMap<String, Vec<Value>>)]
    pub namespaces: BTreeMap<String, (NamespaceState, [usize; 3])>,
    /// Where the wave stands.
    pub phase: WavePhase,
    /// The wave analysis' verdict, if it exists.
    pub verdict: Option<Verdict>,
    /// Its reason.
    pub reason: Option<String>,
    /// Seconds left of the soak, while soaking.
    pub soak_left_seconds: Option<f64>,
    /// What to run to roll this wave back (advice; meshgate never relabels).
    pub rollback: Vec<String>,
    /// Per namespace, the labels the rollback restores: as recorded before the namespace moved,
    /// or `null` when none were recorded (then `istio.io/rev=<from_revision>` is assumed).
    #[schema(value_type = Object)]
    pub rollback_labels: BTreeMap<String, Option<NamespaceLabels>>,
}

/// `GET /v1/plan/status`: the upgrade plan's status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanStatus {
    /// Plan name.
    pub name: String,
    /// From -> to.
    pub from_revision: String,
    /// To.
    pub to_revision: String,
    /// The wave in progress (first not done), if any.
    pub current_wave: Option<String>,
    /// Whether the next wave may start now, and why (not).
    pub next_wave_may_start: bool,
    /// Explanation.
    pub advice: String,
    /// Every wave.
    pub waves: Vec<WaveStatus>,
}

/// An e-value from its log, saturated: evidence beyond what a double holds (a tick of 10,000
/// canary requests all failing already overflows `exp`) is reported as `f64::MAX`, never as
/// infinity, which JSON cannot carry (serde writes `null`, which clients read as no evidence).
pub fn e_value(ln_e: f64) -> f64 {
    saturate(ln_e.exp())
}

/// `x`, or `f64::MAX` when it is not finite (an overflow; NaN only comes of one, inf - inf).
pub fn saturate(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else if x == f64::NEG_INFINITY {
        0.0
    } else {
        f64::MAX
    }
}

/// The evidence with every e-value saturated (see [`e_value`]).
pub fn finite_evidence(evidence: &[CheckEvidence]) -> Vec<CheckEvidence> {
    let mut out = evidence.to_vec();
    for c in &mut out {
        c.e_value = saturate(c.e_value);
        for t in &mut c.tests {
            t.e_value = saturate(t.e_value);
            t.e_value_drop = t.e_value_drop.map(saturate);
            if let Some(r) = &mut t.robust {
                r.e_value_not_worse = saturate(r.e_value_not_worse);
            }
        }
    }
    out
}

// === impl Analysis ===

impl Analysis {
    /// The verdict document of this analysis, named `id` (e-values saturated).
    pub fn verdict_doc(&self, id: &str) -> VerdictDoc {
        let settings = self.settings();
        VerdictDoc {
            id: id.to_owned(),
            verdict: self.verdict(),
            decided: self.verdict().is_final(),
            reason: self.reason().to_owned(),
            elapsed_seconds: self.elapsed().as_secs_f64(),
            decided_after_seconds: self.decided_after().map(|d| d.as_secs_f64()),
            certified_after_seconds: self.certified_after().map(|d| d.as_secs_f64()),
            e_value: e_value(self.ln_e()),
            threshold: 1.0 / settings.test_alpha(),
            alpha: settings.alpha,
            design: match (settings.go_certificate, &settings.design) {
                (GoCertificate::Horizon, Design::Concurrent) => format!(
                    "{}; GO certified by alpha spent over max_duration ({} s, go_certificate = \"horizon\"; histogram and robust checks keep the anytime certificate)",
                    settings.design.describe(),
                    settings.max_duration.as_secs()
                ),
                _ => settings.design.describe(),
            },
            checks: finite_evidence(self.evidence()),
            data_quality: self.quality().clone(),
        }
    }

    /// The line of this analysis in the list, named `id`, comparing `baseline` with `canary`.
    pub fn summary(&self, id: &str, baseline: &str, canary: &str) -> AnalysisSummary {
        AnalysisSummary {
            id: id.to_owned(),
            verdict: self.verdict(),
            reason: self.reason().to_owned(),
            elapsed_seconds: self.elapsed().as_secs_f64(),
            baseline: baseline.to_owned(),
            canary: canary.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use serde::de::DeserializeOwned;
    use serde_json::Value;

    use super::*;
    use crate::istio::skew::{report, Topology};
    use crate::judge::{Catalog, CheckSpec, Design, Settings};

    /// `doc` serializes with exactly the `fields` at its top level and reads back equal.
    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(doc: &T, fields: &[&str]) {
        let v = serde_json::to_value(doc).unwrap();
        let mut got: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = fields.to_vec();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(
            got,
            want,
            "the field names of {}",
            std::any::type_name::<T>()
        );
        let text = serde_json::to_string(doc).unwrap();
        let back: T = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, doc);
    }

    fn settings() -> Settings {
        Settings {
            alpha: 0.05,
            min_duration: std::time::Duration::from_secs(60),
            max_duration: std::time::Duration::from_secs(600),
            min_exposure: 100.0,
            slo_go: false,
            go_certificate: Default::default(),
            design: Design::default(),
            soak: std::time::Duration::ZERO,
        }
    }

    fn analysis() -> Analysis {
        let catalog = Catalog::builtin();
        Analysis::new(settings(), &[catalog.get("error-rate").unwrap()])
    }

    #[test]
    fn verdict_doc_round_trips_with_its_field_names() {
        let doc = analysis().verdict_doc("a");
        assert_eq!(doc.verdict, Verdict::Pending);
        assert!(!doc.decided);
        round_trip(
            &doc,
            &[
                "id",
                "verdict",
                "decided",
                "reason",
                "elapsed_seconds",
                "decided_after_seconds",
                "e_value",
                "threshold",
                "alpha",
                "design",
                "checks",
                "data_quality",
            ],
        );
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(v["verdict"], "PENDING");
        assert_eq!(v["decided_after_seconds"], Value::Null);
    }

    #[test]
    fn a_robust_checks_unbounded_rate_reads_back() {
        // serde_json writes the infinite bound as null; the document must still parse.
        let spec = CheckSpec::from_toml(
            "name='e'\nkind='ratio'\nmetric='m'\nbad='{code=\"5\"}'\nrobust=true",
            "e.toml",
        )
        .unwrap();
        let a = Analysis::new(settings(), &[&spec]);
        let doc = a.verdict_doc("r");
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            v["checks"][0]["tests"][0]["canary_rate_upper_bound"],
            Value::Null
        );
        let back: VerdictDoc = serde_json::from_value(v).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn summary_and_analysis_doc_round_trip_with_their_field_names() {
        let a = analysis();
        round_trip(
            &a.summary("a", "{revision=\"1\"}", "{revision=\"2\"}"),
            &[
                "id",
                "verdict",
                "reason",
                "elapsed_seconds",
                "baseline",
                "canary",
            ],
        );
        let doc = AnalysisDoc {
            id: "a".into(),
            spec: serde_json::json!({"name": "a"}),
            created_at: 1.5,
            state: a,
        };
        round_trip(&doc, &["id", "spec", "created_at", "state"]);
    }

    #[test]
    fn error_doc_keeps_its_shape() {
        let doc = ErrorDoc::new("not_found", "no analysis with id \"x\"");
        round_trip(&doc, &["error"]);
        assert_eq!(
            serde_json::to_value(&doc).unwrap(),
            serde_json::json!({"error": {"code": "not_found", "message": "no analysis with id \"x\""}})
        );
    }

    #[test]
    fn skew_report_round_trips_with_its_field_names() {
        let r = report(&[], &Topology::default());
        round_trip(&r, &["verdict", "reason", "clusters", "problems"]);
        let problem = SkewProblem {
            cluster: "c".into(),
            revision: "1-25-0".into(),
            blocking: true,
            holds_go: false,
            message: "m".into(),
            targets: vec!["t".into()],
        };
        round_trip(
            &problem,
            &[
                "cluster", "revision", "blocking", "holds_go", "message", "targets",
            ],
        );
        let rev = RevisionView {
            revision: "1-25-0".into(),
            control_plane_cluster: "c".into(),
            istiods: vec![IstiodView {
                url: "http://i".into(),
                pod: None,
                version: Some("1.25.0".into()),
                connected: BTreeMap::from([("1.25.0".into(), 3.0)]),
            }],
            proxies: BTreeMap::from([("1.25.0".into(), 3)]),
        };
        round_trip(
            &rev,
            &["revision", "control_plane_cluster", "istiods", "proxies"],
        );
        round_trip(&rev.istiods[0], &["url", "pod", "version", "connected"]);
    }

    #[test]
    fn plan_status_round_trips_with_its_field_names() {
        let wave = WaveStatus {
            name: "w1".into(),
            namespaces: BTreeMap::from([("shop".into(), (NamespaceState::Moving, [1, 2, 0]))]),
            phase: WavePhase::Soaking,
            verdict: Some(Verdict::Go),
            reason: Some("ok".into()),
            soak_left_seconds: Some(12.0),
            rollback: vec!["kubectl ...".into()],
            rollback_labels: BTreeMap::from([
                (
                    "shop".into(),
                    Some(NamespaceLabels {
                        istio_injection: None,
                        rev: Some("1-24-2".into()),
                    }),
                ),
                ("pay".into(), None),
            ]),
        };
        round_trip(
            &wave,
            &[
                "name",
                "namespaces",
                "phase",
                "verdict",
                "reason",
                "soak_left_seconds",
                "rollback",
                "rollback_labels",
            ],
        );
        let v = serde_json::to_value(&wave).unwrap();
        assert_eq!(v["phase"], "soaking");
        assert_eq!(v["verdict"], "GO");
        assert_eq!(
            v["namespaces"]["shop"],
            serde_json::json!(["moving", [1, 2, 0]])
        );
        let status = PlanStatus {
            name: "p".into(),
            from_revision: "1-24-2".into(),
            to_revision: "1-25-0".into(),
            current_wave: Some("w1".into()),
            next_wave_may_start: false,
            advice: "wait".into(),
            waves: vec![wave],
        };
        round_trip(
            &status,
            &[
                "name",
                "from_revision",
                "to_revision",
                "current_wave",
                "next_wave_may_start",
                "advice",
                "waves",
            ],
        );
    }

    #[test]
    fn each_enum_shows_the_word_it_serializes_to() {
        use crate::judge::{Certificate, CheckStatus, EvidenceKind, StratumStatus};
        fn same<T: Serialize>(x: T, word: &str) {
            assert_eq!(serde_json::to_value(x).unwrap(), word);
        }
        for v in [
            Verdict::Pending,
            Verdict::Go,
            Verdict::NoGo,
            Verdict::Inconclusive,
        ] {
            same(v, v.as_str());
        }
        for p in [
            WavePhase::NotStarted,
            WavePhase::Moving,
            WavePhase::Soaking,
            WavePhase::Done,
            WavePhase::Failed,
        ] {
            same(p, p.as_str());
        }
        for s in [
            CheckStatus::Policy,
            CheckStatus::Regression,
            CheckStatus::Certified,
            CheckStatus::Collecting,
        ] {
            same(s, s.as_str());
        }
        for k in [EvidenceKind::Ratio, EvidenceKind::HistogramTail] {
            same(k, k.as_str());
        }
        for c in [Certificate::Ratio, Certificate::Slo] {
            same(c, c.as_str());
        }
        for s in [
            StratumStatus::Compared,
            StratumStatus::CanaryOnly,
            StratumStatus::BaselineOnly,
            StratumStatus::TooLittleData,
            StratumStatus::NoPreWindow,
            StratumStatus::NotMoved,
        ] {
            same(s, s.as_str());
        }
    }

    #[test]
    fn saturated_e_values_stay_finite() {
        assert_eq!(e_value(1e6), f64::MAX);
        assert_eq!(saturate(f64::NEG_INFINITY), 0.0);
        assert_eq!(saturate(f64::NAN), f64::MAX);
        assert_eq!(e_value(0.0), 1.0);
    }
}
