//! What the engine publishes and the API reads: the analyses' views, the snapshot after each
//! tick, verdict events, and the handles of [`Shared`]. Below both the daemon (which writes it)
//! and the API (which reads it), so the API never imports the daemon.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::analysis::AnalysisConfig;
use crate::judge::{Analysis, Catalog, CheckSpec, Verdict};
use crate::scrape::HealthMap;
use crate::store::writer::StoreHandle;
use crate::telemetry::Metrics;

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
        }
    }

    /// The verdict (always current: ticks never defer it), without building the evidence.
    pub fn verdict(&self) -> Verdict {
        self.state.verdict
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
            Some(a) => a.ln_e,
            None => {
                let specs: Vec<&CheckSpec> = self.specs.iter().map(|s| s.as_ref()).collect();
                self.state.current_ln_e(&specs)
            }
        }
    }
}

impl Serialize for AnalysisView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("AnalysisView", 4)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("spec", &self.spec)?;
        st.serialize_field("created_at", &self.created_at)?;
        st.serialize_field("state", self.state())?;
        st.end()
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
