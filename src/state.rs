//! What the engine publishes and the API reads: the analyses' views, the snapshot after each
//! tick, verdict events, and the handles of [`Shared`]. Below both the daemon (which writes it)
//! and the API (which reads it), so the API never imports the daemon.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::analysis::AnalysisConfig;
use crate::judge::{Analysis, Catalog, CheckSpec, Verdict};
use crate::scrape::HealthMap;
use crate::store::writer::StoreHandle;
use crate::telemetry::{metric, Telemetry};
use meshgate_core::history::History;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// What the API can ask the engine.
#[derive(Debug)]
pub enum Command {
    /// Start an analysis, counted against the quota of the scope that asked (if any). The reply
    /// comes once the state holding the analysis is in the store.
    Create(
        Box<AnalysisConfig>,
        Option<crate::auth::Quota>,
        oneshot::Sender<Result<Arc<AnalysisView>, CreateError>>,
    ),
    /// Stop and forget an analysis: `Ok(false)` when unknown; the reply comes once the state
    /// without it is in the store.
    Delete(String, oneshot::Sender<Result<bool, CreateError>>),
}

/// Why an analysis cannot be created.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CreateError {
    /// The request is well-formed JSON but not a valid analysis.
    #[error("{0}")]
    Invalid(String),
    /// The name is taken.
    #[error("an analysis named {0:?} already exists")]
    Exists(String),
    /// The store cannot be written, so the change is not on disk (it is held in memory and
    /// written once the store works again).
    #[error("{0}")]
    Unavailable(String),
    /// The cap on analyses held (or the scope's) is reached and none of them is finished.
    #[error("{0}")]
    TooMany(String),
}

/// An analysis as the API shows it.
///
/// Holds the analysis as of its last tick. A tick that cannot decide leaves the evidence to
/// be built by whoever reads it: [`AnalysisView::state`] builds it on the first read, once per
/// tick, however many readers there are.
#[derive(Clone, Debug)]
pub struct AnalysisView {
    /// Id (the name).
    pub id: String,
    /// The request it was created from.
    pub spec: AnalysisConfig,
    /// Unix time of creation.
    pub created_at: f64,
    state: Analysis,
    specs: Vec<Arc<CheckSpec>>,
    current: std::sync::OnceLock<Analysis>,
    /// Its per-tick history (shared with the engine, copied only when it records a point while
    /// a reader holds this one).
    pub history: Arc<History>,
}

impl AnalysisView {
    /// A view of `state`, whose checks are `specs`.
    pub fn new(
        id: String,
        spec: AnalysisConfig,
        created_at: f64,
        state: Analysis,
        specs: Vec<Arc<CheckSpec>>,
    ) -> Self {
        AnalysisView {
            id,
            spec,
            created_at,
            state,
            specs,
            current: std::sync::OnceLock::new(),
            history: Arc::default(),
        }
    }

    /// This view with its history.
    pub fn with_history(mut self, history: Arc<History>) -> Self {
        self.history = history;
        self
    }

    /// The verdict (always current: ticks never defer it), without building the evidence.
    pub fn verdict(&self) -> Verdict {
        self.state.verdict()
    }

    /// State, verdict and evidence, current to the last tick.
    pub fn state(&self) -> &Analysis {
        if self.state.is_current() {
            return &self.state;
        }
        self.current.get_or_init(|| {
            let mut a = self.state.clone();
            let specs: Vec<&CheckSpec> = self.specs.iter().map(|s| s.as_ref()).collect();
            a.refresh(&specs);
            a
        })
    }
}

impl AnalysisView {
    /// ln of the combined e-value now: from the current state when it is built, computed
    /// without the evidence document otherwise (so `/metrics` does not build it every tick).
    pub fn ln_e(&self) -> f64 {
        match self.current.get() {
            Some(a) => a.ln_e(),
            None => {
                let specs: Vec<&CheckSpec> = self.specs.iter().map(|s| s.as_ref()).collect();
                self.state.current_ln_e(&specs)
            }
        }
    }
}

/// What happened to an analysis, for alert sinks and other listeners.
#[derive(Clone, Debug)]
pub enum VerdictEvent {
    /// The verdict changed (including to the first PENDING at creation).
    Changed {
        /// The analysis after the change.
        view: Arc<AnalysisView>,
        /// The verdict before, `None` at creation.
        previous: Option<Verdict>,
    },
    /// The analysis was deleted.
    Deleted {
        /// The analysis as it was last seen.
        view: Arc<AnalysisView>,
    },
}

/// Everything the API reads, republished after each tick and command.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// True after the engine's first tick.
    pub ready: bool,
    /// Analyses by id.
    pub analyses: BTreeMap<String, Arc<AnalysisView>>,
    /// The version skew report of the last tick.
    pub skew: Option<Arc<meshgate_core::istio::SkewReport>>,
    /// The upgrade plan's status of the last tick, when a plan is configured.
    pub plan: Option<Arc<crate::plan::PlanStatus>>,
}

/// Handles the API needs.
#[derive(Clone)]
pub struct Shared {
    /// Commands to the engine.
    pub commands: mpsc::Sender<Command>,
    /// Latest snapshot.
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// Target health.
    pub health: HealthMap,
    /// Own metrics.
    pub metrics: Arc<Metrics>,
    /// Known checks.
    pub catalog: Arc<Catalog>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Verdict changes and deletions; subscribe for alerting.
    pub events: tokio::sync::broadcast::Sender<VerdictEvent>,
    /// What each target's page says about Istio builds and istiod resources.
    pub observer: meshgate_core::istio::Observer,
    /// The configured upgrade plan.
    pub plan: Option<Arc<crate::plan::Plan>>,
    /// The store's writer, when a store is configured: its health gates readiness and changes.
    pub store: Option<StoreHandle>,
}

impl Shared {
    /// Create an analysis through the engine.
    pub async fn create(&self, spec: AnalysisConfig) -> Result<Arc<AnalysisView>, CreateError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Create(
                Box::new(spec),
                crate::auth::current_quota(),
                tx,
            ))
            .await
            .map_err(|_| CreateError::Invalid("the engine is shutting down".into()))?;
        rx.await
            .map_err(|_| CreateError::Invalid("the engine is shutting down".into()))?
    }

    /// Delete an analysis; false when unknown, or when the deletion is not in the store yet.
    pub async fn delete(&self, id: &str) -> bool {
        self.try_delete(id).await.unwrap_or(false)
    }

    /// Delete an analysis: `Ok(false)` when unknown, [`CreateError::Unavailable`] when the store
    /// cannot be written (it is gone from memory, and from the store once a write succeeds).
    pub async fn try_delete(&self, id: &str) -> Result<bool, CreateError> {
        let gone = || CreateError::Invalid("the engine is shutting down".into());
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Delete(id.to_owned(), tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// The current view of an analysis.
    pub fn get(&self, id: &str) -> Option<Arc<AnalysisView>> {
        self.snapshot.borrow().analyses.get(id).cloned()
    }
}

// === impl Metrics ===

/// What `/metrics` serves: the registry every component registered into, and the analyses'
/// gauges, whose e-values the API refreshes when `/metrics` is read.
#[derive(Clone)]
pub struct Metrics {
    telemetry: Arc<Telemetry>,
    /// The engine's metrics.
    pub analyses: AnalysisMetrics,
}

impl Metrics {
    /// Over `telemetry`, with the analyses' metrics registered in it.
    pub fn new(telemetry: Arc<Telemetry>, analyses: AnalysisMetrics) -> Self {
        Metrics {
            telemetry,
            analyses,
        }
    }

    /// Text exposition of every metric.
    pub fn encode(&self) -> String {
        self.telemetry.encode()
    }

    /// Set the combined e-value gauge of an analysis.
    pub fn set_e_value(&self, analysis: &str, ln_e: f64) {
        self.analyses.set_e_value(analysis, ln_e);
    }
}

/// Per-analysis label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnalysisLabels {
    /// Analysis name.
    pub analysis: String,
}

/// Per-analysis verdict labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// Analysis name.
    pub analysis: String,
    /// PENDING, GO, NO-GO, INCONCLUSIVE.
    pub verdict: String,
}

/// The engine's metrics: verdicts, e-values, ticks and the scrape-to-verdict delay.
#[derive(Clone, Debug)]
pub struct AnalysisMetrics {
    /// 1 for the current verdict of each analysis.
    pub verdict: Family<VerdictLabels, Gauge>,
    /// Combined e-value of each analysis.
    pub e_value: Family<AnalysisLabels, Gauge<f64, AtomicU64>>,
    /// Analysis ticks.
    pub ticks: Counter,
    /// Delay from reading a page to the tick that judged its deltas.
    pub ingest_delay: Histogram,
}

const VERDICTS: [&str; 4] = ["PENDING", "GO", "NO-GO", "INCONCLUSIVE"];

impl AnalysisMetrics {
    /// Create and register them.
    pub fn register(reg: &mut Registry) -> Self {
        AnalysisMetrics {
            verdict: metric(
                reg,
                "analysis_verdict",
                "1 for the current verdict of each analysis",
                Family::default(),
            ),
            e_value: metric(
                reg,
                "analysis_e_value",
                "Combined e-value of each analysis",
                Family::default(),
            ),
            ticks: metric(
                reg,
                "analysis_ticks",
                "Analysis ticks taken",
                Counter::default(),
            ),
            ingest_delay: metric(
                reg,
                "scrape_to_verdict_seconds",
                "Delay from reading a page to the analysis tick that judged its deltas",
                Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            ),
        }
    }

    /// Set the verdict gauge of an analysis (1 for the current verdict, series for others removed).
    pub fn set_verdict(&self, analysis: &str, verdict: &str) {
        for v in VERDICTS {
            let l = VerdictLabels {
                analysis: analysis.to_owned(),
                verdict: v.to_owned(),
            };
            if v == verdict {
                self.verdict.get_or_create(&l).set(1);
            } else {
                self.verdict.remove(&l);
            }
        }
    }

    /// Set the combined e-value gauge of an analysis (the API sets it from the analyses'
    /// current state when `/metrics` is read).
    pub fn set_e_value(&self, analysis: &str, ln_e: f64) {
        self.e_value
            .get_or_create(&AnalysisLabels {
                analysis: analysis.to_owned(),
            })
            .set(ln_e.exp());
    }

    /// Forget a deleted analysis.
    pub fn remove_analysis(&self, analysis: &str) {
        for v in VERDICTS {
            self.verdict.remove(&VerdictLabels {
                analysis: analysis.to_owned(),
                verdict: v.to_owned(),
            });
        }
        self.e_value.remove(&AnalysisLabels {
            analysis: analysis.to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_with_prefix_and_labels() {
        let t = Arc::new(Telemetry::new());
        let scrape = t.register(crate::scrape::ScrapeMetrics::register);
        let m = Metrics::new(t.clone(), t.register(AnalysisMetrics::register));
        scrape
            .scrapes
            .get_or_create(&crate::scrape::OutcomeLabels {
                outcome: "ok".into(),
            })
            .inc();
        m.analyses.set_verdict("wave-1", "NO-GO");
        m.set_e_value("wave-1", 3.0);
        let text = m.encode();
        assert!(
            text.contains("meshgate_scrapes_total{outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("meshgate_analysis_verdict{analysis=\"wave-1\",verdict=\"NO-GO\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("meshgate_analysis_e_value{analysis=\"wave-1\"} 20.08"),
            "{text}"
        );
        m.analyses.set_verdict("wave-1", "PENDING");
        assert!(!m.encode().contains("verdict=\"NO-GO\""));
    }
}
