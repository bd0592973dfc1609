//! The running daemon: wires discovery, scraping, the engine (analyses and ticks) and the API.
//!
//! The engine is one task that owns every analysis. Scrape loops send it routed deltas over a
//! bounded channel; the API sends it commands and reads verdicts from a published snapshot, so a
//! slow reader never blocks the data path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::analysis::AnalysisConfig;
use crate::cohort::{RoutedAnalysis, Routing, Selector, SeriesSnapshot, Side};
use crate::config::Config;
use crate::discovery::{Discovery, TargetSet};
use crate::judge::{
    Analysis, Catalog, CheckSpec, CohortQuality, DataQuality, QualityBlock, Settings, TickInput,
    Verdict,
};
use crate::scrape::ScrapeMetrics;
use crate::scrape::{HealthMap, Scraper, TargetReport};
use crate::state::{AnalysisMetrics, Metrics};
use crate::store::writer::StoreMetrics;
use crate::store::writer::Writer;
use crate::store::{Loaded, Store, StoreState, StoredAnalysis};
use crate::telemetry::Telemetry;

pub use crate::state::{AnalysisView, Command, CreateError, Shared, Snapshot, VerdictEvent};

/// The whole API router over a running daemon's handles: the core API with the integrations'
/// routes and the Istio routes (assembled here, above the three, so none imports another).
pub fn router(shared: Shared) -> axum::Router {
    crate::api::router(
        shared,
        crate::integrations::routes().merge(crate::istio::api::routes()),
    )
}

/// A started daemon.
pub struct Running {
    /// Address the API listens on.
    pub addr: SocketAddr,
    /// API handles (also for in-process callers such as the demo).
    pub shared: Shared,
    /// Cancel to stop everything.
    pub shutdown: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Running {
    /// Wait for every task to end (after `shutdown` is cancelled).
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Why the daemon could not start; [`StartError::exit_code`] is what `meshgate serve` exits with.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration file cannot be read or is invalid (exit 64).
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// The check files of `queries.dir` are invalid (exit 64); the message lists each problem.
    #[error("{0}")]
    Checks(String),
    /// The `[[analyses]]` of the configuration do not fit the checks or the judge (exit 64): the
    /// problems `check-config` reports.
    #[error("{} problem(s) in the configuration: {}", .0.len(), .0.join("; "))]
    Analyses(Vec<String>),
    /// The `[auth]` section is unusable (exit 64).
    #[error("{0}")]
    Auth(#[from] crate::auth::AuthError),
    /// The store file is damaged or cannot be opened (exit 65).
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// The API's address cannot be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// The listener handed in is unusable (no local address).
    #[error("{0}")]
    Listener(#[source] std::io::Error),
    /// The API's certificate or key cannot be loaded.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The store's writer thread cannot be started.
    #[error("{0}")]
    StoreWriter(#[source] std::io::Error),
    /// The scrape client cannot be built.
    #[error("{0}")]
    Scrape(#[from] crate::scrape::ScrapeError),
    /// The Prometheus backend's client cannot be built.
    #[error("{0}")]
    Prometheus(#[from] crate::promsource::QueryError),
    /// Kubernetes discovery cannot be set up (service account, CA, URL).
    #[error("{0}")]
    Discovery(String),
    /// An alert sink's client cannot be built.
    #[error("{0}")]
    Alerts(String),
}

impl StartError {
    /// The exit code `meshgate serve` uses for it: 64 for a configuration `check-config`
    /// rejects, 65 for a damaged store, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Config(_)
            | StartError::Checks(_)
            | StartError::Analyses(_)
            | StartError::Auth(_) => crate::config::EXIT_BAD_CONFIG as u8,
            StartError::Store(_) => crate::store::EXIT_BAD_STORE,
            StartError::Bind { .. }
            | StartError::Listener(_)
            | StartError::Tls(_)
            | StartError::StoreWriter(_)
            | StartError::Scrape(_)
            | StartError::Prometheus(_)
            | StartError::Discovery(_)
            | StartError::Alerts(_) => 1,
        }
    }
}

/// Where the API listens.
pub enum Listener {
    /// Bind this address once the configuration and the store are known good (`serve`).
    Bind(SocketAddr),
    /// A listener the caller bound (tests bind `127.0.0.1:0`).
    Bound(tokio::net::TcpListener),
}

/// Grace period for the tasks to stop after `shutdown` is cancelled.
const GRACE: Duration = Duration::from_secs(10);

/// The daemon: checks the configuration the way `check-config` does (its checks, its analyses,
/// `[auth]`), opens the store, binds the API, runs every task until `shutdown` is cancelled and
/// waits up to ten seconds for them to stop.
pub async fn run(
    cfg: Config,
    listener: Listener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let catalog = check(&cfg)?;
    crate::auth::Auth::from_config(&cfg.auth)?;
    let store = match &cfg.store.path {
        Some(p) => Some(Store::open(p)?),
        None => None,
    };
    let listener = match listener {
        Listener::Bound(l) => l,
        Listener::Bind(addr) => tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?,
    };
    // After the checks that refuse to start, so a refusal says only why.
    open_files(&cfg);
    let running = start_with_store(cfg, catalog, listener, shutdown.clone(), store).await?;
    shutdown.cancelled().await;
    info!("shutting down");
    if tokio::time::timeout(GRACE, running.join()).await.is_err() {
        warn!("tasks did not stop within 10s");
    }
    Ok(())
}

/// Raise the open-file limit for one connection per target (`fdlimit`), and say how many
/// targets fit; a warning when the configured static targets alone do not.
fn open_files(cfg: &Config) {
    match crate::fdlimit::raise() {
        Ok(l) => {
            let fit = l.targets_that_fit(cfg.server.max_connections);
            if l.now > l.before {
                info!(
                    "open-file limit raised from {} to {} (hard {}): room for {fit} scrape targets",
                    l.before, l.now, l.hard
                );
            } else {
                info!(
                    "open-file limit {} (hard {}): room for {fit} scrape targets",
                    l.now, l.hard
                );
            }
            if cfg.targets.len() as u64 > fit {
                warn!(
                    "{} static targets need more open files than the limit {} leaves (room for {fit} beside server.max_connections {}): raise the hard limit (docs/operations.md, \"Open files\")",
                    cfg.targets.len(),
                    l.now,
                    cfg.server.max_connections
                );
            }
        }
        Err(e) => warn!("cannot read or raise the open-file limit: {e}"),
    }
}

/// What `check-config` rejects and `serve` refuses: the check files, and the `[[analyses]]`
/// against them and the judge (the configuration itself was validated when loaded). Gives the
/// checks the configuration runs.
pub fn check(cfg: &Config) -> Result<Catalog, StartError> {
    let catalog = cfg.catalog().map_err(StartError::Checks)?;
    let problems = config_problems(cfg, &catalog);
    if !problems.is_empty() {
        return Err(StartError::Analyses(problems));
    }
    Ok(catalog)
}

/// Start everything on `listener` and return the handles (for in-process callers: the demo,
/// the tests, the benches). Analyses in the config start at once; with a `[store]`, the stored
/// ones resume first.
pub async fn start(
    cfg: Config,
    catalog: Catalog,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    let store = match &cfg.store.path {
        Some(p) => Some(Store::open(p)?),
        None => None,
    };
    start_with_store(cfg, catalog, listener, shutdown, store).await
}

/// [`start`] with a store already opened.
async fn start_with_store(
    cfg: Config,
    catalog: Catalog,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
    store: Option<(Store, Loaded)>,
) -> Result<Running, StartError> {
    let auth = crate::auth::Auth::from_config(&cfg.auth)?
        .map(|a| Arc::new(a.with_secure_cookie(cfg.server.tls_files().is_some())));
    // Loaded before anything starts: a bad certificate or key is a start-up error.
    let tls = match cfg.server.tls_files() {
        Some(f) => Some(crate::tls::ServerTls::new(f)?),
        None => None,
    };
    let addr = listener.local_addr().map_err(StartError::Listener)?;
    // Each component registers its own metrics, in the order `/metrics` has always listed them.
    let telemetry = Arc::new(Telemetry::new());
    let scrape_metrics = telemetry.register(ScrapeMetrics::register);
    let analysis_metrics = telemetry.register(AnalysisMetrics::register);
    telemetry.register_heap();
    let metrics = Arc::new(Metrics::new(telemetry.clone(), analysis_metrics.clone()));
    let (writer, loaded) = match store {
        Some((s, l)) => (
            Some(
                Writer::spawn(s, telemetry.register(StoreMetrics::register))
                    .map_err(StartError::StoreWriter)?,
            ),
            Some(l),
        ),
        None => (None, None),
    };
    let store_handle = writer.as_ref().map(|w| w.handle().clone());
    let health: HealthMap = Arc::new(RwLock::new(HashMap::new()));
    let catalog = Arc::new(catalog);
    let discovery = Discovery::new(&cfg.targets, &cfg.discovery);
    let (initial, errors) = discovery.initial();
    for e in errors {
        warn!(error = %e, "file_sd");
    }
    let (targets_tx, targets_rx) = watch::channel(initial);
    let (routing_tx, routing_rx) = watch::channel(Arc::new(Routing::empty()));
    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (report_tx, report_rx) = mpsc::channel(1024);
    let (events_tx, _) = tokio::sync::broadcast::channel(256);
    let observer = crate::istio::Observer::new();
    let scraper = Scraper::build(cfg.scrape.clone(), health.clone(), scrape_metrics.clone())?
        .with_observer(observer.clone());

    let mut engine = Engine {
        catalog: catalog.clone(),
        defaults: cfg.judge.clone(),
        stale_after: cfg.scrape.stale_after(),
        analyses: BTreeMap::new(),
        generation: 0,
        routing_tx,
        snapshot_tx,
        health: health.clone(),
        metrics: analysis_metrics,
        targets: targets_rx.clone(),
        ticked: false,
        events: events_tx.clone(),
        waiting: Vec::new(),
        observer: observer.clone(),
        topology: cfg.topology.clone(),
        plan: cfg.plan.clone().map(Arc::new),
        wave_moved_at: Vec::new(),
        skew: None,
        plan_status: None,
        plan_labels: Default::default(),
        writer,
        seq: 0,
        last_delete_seq: 0,
        retention: cfg.retention.clone(),
        direct: cfg.prometheus.is_none(),
        latest_state: HashMap::new(),
    };
    let mut restored_targets = HashMap::new();
    if let Some(loaded) = loaded {
        for a in loaded.analyses {
            engine.restore(a);
        }
        restored_targets = loaded.targets;
        engine.plan_labels = loaded.plan_labels.unwrap_or_default();
    }
    for a in &cfg.analyses {
        if engine.analyses.contains_key(&a.name) {
            continue; // resumed from the store
        }
        if let Err(e) = engine.create(a.clone()) {
            warn!(analysis = %a.name, error = %e, "configured analysis not started");
        }
    }
    engine.publish_routing();
    engine.publish_snapshot();
    let scraper = if engine.writer.is_some() {
        let generation = engine.generation;
        scraper.persisting(restored_targets, generation)
    } else {
        scraper
    };

    let shared = Shared {
        commands: cmd_tx,
        snapshot: snapshot_rx,
        health,
        metrics,
        catalog,
        max_body_bytes: cfg.server.max_body_bytes,
        events: events_tx,
        observer,
        plan: cfg.plan.clone().map(Arc::new),
        store: store_handle,
    };
    let mut tasks = tokio::task::JoinSet::new();
    let tick = cfg.tick();
    match cfg.discovery.kubernetes.clone() {
        None => {
            tasks.spawn(
                discovery
                    .run(targets_tx, shutdown.clone())
                    .instrument(tracing::info_span!("discovery")),
            );
        }
        Some(kcfg) => {
            // Static and file_sd targets on one channel, Kubernetes' on another, merged.
            let kube = crate::discovery::kubernetes::KubeDiscovery::build(kcfg)
                .map_err(StartError::Discovery)?;
            let (file_tx, file_rx) = watch::channel(targets_tx.borrow().clone());
            let (kube_tx, kube_rx) = watch::channel(Vec::new());
            tasks.spawn(
                discovery
                    .run(file_tx, shutdown.clone())
                    .instrument(tracing::info_span!("discovery")),
            );
            tasks.spawn(
                kube.run(kube_tx, shutdown.clone())
                    .instrument(tracing::info_span!("kubernetes")),
            );
            tasks.spawn(crate::discovery::kubernetes::merge(
                file_rx,
                kube_rx,
                targets_tx,
                shutdown.clone(),
            ));
        }
    }
    match &cfg.prometheus {
        // A backend replaces direct scraping: same routing, same deltas, same engine.
        Some(p) => {
            let source = crate::promsource::PromSource::new(
                p.clone(),
                tick,
                shared.health.clone(),
                scrape_metrics.clone(),
            )?;
            tasks.spawn(
                source
                    .run(routing_rx, report_tx, shutdown.clone())
                    .instrument(tracing::info_span!("prometheus")),
            );
        }
        None => {
            tasks.spawn(
                scraper
                    .run(targets_rx, routing_rx, report_tx, shutdown.clone())
                    .instrument(tracing::info_span!("scraper")),
            );
        }
    }
    tasks.spawn(
        engine
            .run(tick, cmd_rx, report_rx, shutdown.clone())
            .instrument(tracing::info_span!("engine")),
    );
    if crate::alert::Alerter::enabled(&cfg.alerts) {
        crate::alert::Alerter::spawn(
            cfg.alerts.clone(),
            shared.events.subscribe(),
            shared.snapshot.clone(),
            &mut tasks,
            shutdown.clone(),
        )
        .map_err(StartError::Alerts)?;
    }
    let router = router(shared.clone());
    let router = match auth {
        Some(a) => a.protect(router),
        None => router,
    };
    if let Some(tls) = &tls {
        tasks.spawn(
            tls.clone()
                .watch(cfg.server.tls_reload_interval, shutdown.clone()),
        );
    }
    // With TLS, TLS only: a plain-HTTP client on this port fails its handshake.
    tasks.spawn(
        crate::server::serve(listener, router, tls, cfg.server.limits(), shutdown.clone())
            .instrument(tracing::info_span!("api")),
    );
    info!(%addr, tls = cfg.server.tls_cert.is_some(), "meshgate listening");
    Ok(Running {
        addr,
        shared,
        shutdown,
        tasks,
    })
}

struct Slot {
    view: Arc<AnalysisView>,
    analysis: Analysis,
    specs: Vec<Arc<CheckSpec>>,
    baseline: Selector,
    canary: Selector,
    since_generation: u64,
    started: Instant,
    /// Elapsed time before this process (resumed from the store).
    elapsed_base: Duration,
    pending: Vec<[Vec<f64>; 2]>,
    /// The same deltas per stratum (checks with strata), for like-for-like comparison.
    strata: crate::cohort::StrataPending,
    /// The same deltas per pod, for the dispersion factor.
    pods: crate::cohort::PodPending,
    members: [HashSet<Arc<str>>; 2],
    resets: [u64; 2],
    overlaps: u64,
    /// Rollback triggers with the index of their check.
    triggers: Vec<(crate::istio::trigger::TriggerConfig, usize)>,
    /// Cumulative slots per check and cohort (what the triggers read).
    cumulative: Vec<[Vec<f64>; 2]>,
    /// What retention and the store need to know about it.
    kept: Kept,
    /// Since when a selector of this analysis matches no target (the no-target rule).
    unmatched_since: Option<Instant>,
    /// Its per-tick history (the report page's curves).
    history: Arc<meshgate_core::history::History>,
}

/// Retention and persistence facts of one analysis.
#[derive(Debug, Default)]
struct Kept {
    /// Sequence number of the first store state holding it (0: nothing to wait for).
    stored_seq: u64,
    /// Unix time its verdict became final.
    finished_at: Option<f64>,
    /// The `[[auth.scopes]]` scope that created it.
    scope: Option<String>,
    /// A wave analysis of the plan: the plan's status needs it, so retention leaves it.
    pinned: bool,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

struct Engine {
    catalog: Arc<Catalog>,
    defaults: crate::config::JudgeConfig,
    stale_after: Duration,
    analyses: BTreeMap<String, Slot>,
    generation: u64,
    routing_tx: watch::Sender<Arc<Routing>>,
    snapshot_tx: watch::Sender<Arc<Snapshot>>,
    health: HealthMap,
    metrics: AnalysisMetrics,
    targets: watch::Receiver<TargetSet>,
    ticked: bool,
    events: tokio::sync::broadcast::Sender<VerdictEvent>,
    /// When the pages whose deltas wait for the next tick were read.
    waiting: Vec<Instant>,
    observer: crate::istio::Observer,
    topology: crate::istio::Topology,
    plan: Option<Arc<crate::plan::Plan>>,
    wave_moved_at: Vec<Option<Instant>>,
    skew: Option<Arc<crate::istio::SkewReport>>,
    plan_status: Option<Arc<crate::plan::PlanStatus>>,
    /// Namespace labels recorded before each namespace of the plan moved (the rollback).
    plan_labels: crate::plan::RecordedLabels,
    /// The store writer; states go to it, the engine never waits on the disk.
    writer: Option<Writer>,
    /// Sequence number of the last state handed to the writer.
    seq: u64,
    /// The state of the last deletion (a repeated delete waits for it like the first).
    last_delete_seq: u64,
    retention: crate::config::RetentionConfig,
    /// Targets come from discovery and are scraped here (not from a Prometheus backend): the
    /// no-target rule can read the target set.
    direct: bool,
    /// Each target's series values after the last page whose deltas were taken.
    latest_state: HashMap<Arc<str>, Arc<SeriesSnapshot>>,
}

/// Ids double as URL path segments.
fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// An analysis definition that passed [`validate`]: what `Engine::create` starts.
struct Validated {
    names: Vec<String>,
    specs: Vec<Arc<CheckSpec>>,
    settings: Settings,
    triggers: Vec<(crate::istio::trigger::TriggerConfig, usize)>,
}

/// Every problem of an analysis definition against the loaded checks and the judge defaults,
/// each naming its key under `prefix` (`analysis` for the API, `analyses[2]` for a config
/// file): what `POST /v1/analyses` answers 422 with, and what `check-config` and `serve`
/// refuse a config file for.
pub fn analysis_problems(
    spec: &AnalysisConfig,
    catalog: &Catalog,
    defaults: &crate::config::JudgeConfig,
    prefix: &str,
) -> Vec<String> {
    validate(spec, catalog, defaults, prefix)
        .err()
        .unwrap_or_default()
}

/// The problems of a config file's `[[analyses]]` against the loaded checks ([`analysis_problems`]
/// of each, keyed `analyses[i]`): `check-config` reports them, and `serve` refuses to start on
/// them rather than run without an analysis the file asks for.
pub fn config_problems(cfg: &Config, catalog: &Catalog) -> Vec<String> {
    cfg.analyses
        .iter()
        .enumerate()
        .flat_map(|(i, a)| analysis_problems(a, catalog, &cfg.judge, &format!("analyses[{i}]")))
        .collect()
}

fn validate(
    spec: &AnalysisConfig,
    catalog: &Catalog,
    d: &crate::config::JudgeConfig,
    prefix: &str,
) -> Result<Validated, Vec<String>> {
    let mut problems: Vec<String> = spec
        .problems(prefix)
        .iter()
        .map(|p| p.to_string())
        .collect();
    if !valid_id(&spec.name) {
        problems.push(format!(
            "{prefix}.name: {:?} must be 1-128 characters of [A-Za-z0-9._-]",
            spec.name
        ));
    }
    let defaulted = spec.checks.is_empty();
    let names = if defaulted {
        catalog.default_names()
    } else {
        spec.checks.clone()
    };
    let mut specs = Vec::new();
    for n in &names {
        match catalog.get(n) {
            Some(c) => specs.push(Arc::new(c.clone())),
            None => problems.push(format!(
                "{prefix}.checks: unknown check {n:?}, known: {}",
                catalog.names().join(", ")
            )),
        }
    }
    // A check whose families only targets of one role export, over a cohort whose `role`
    // matcher excludes that role, could only ever say "no data" (issue 13).
    for (cohort, text) in [("baseline", &spec.baseline), ("canary", &spec.canary)] {
        let Ok(sel) = Selector::parse(text) else {
            continue; // reported by spec.problems
        };
        let mismatched: Vec<String> = specs
            .iter()
            .filter_map(|c| c.cohort_mismatch(cohort, &sel))
            .collect();
        if mismatched.is_empty() {
            continue;
        }
        let hint = if defaulted {
            " (no checks named: the default set was used; name the checks that read what this cohort selects, e.g. the istiod-* checks for role=\"istiod\", or select other targets)"
        } else {
            " (pair control-plane checks with role=\"istiod\" cohorts and the request checks with role=\"proxy\" ones)"
        };
        problems.push(format!("{prefix}.checks: {}{hint}", mismatched.join("; ")));
    }
    let settings = Settings {
        alpha: spec.alpha.unwrap_or(d.alpha),
        min_duration: spec.min_duration.unwrap_or(d.min_duration),
        max_duration: spec.max_duration.unwrap_or(d.max_duration),
        min_exposure: spec.min_exposure.unwrap_or(d.min_exposure),
        slo_go: d.slo_go,
        go_certificate: d.go_certificate,
        design: spec.judge_design(),
        soak: spec.soak.unwrap_or_default(),
    };
    if settings.min_duration >= settings.max_duration {
        problems.push(format!(
            "{prefix}.min_duration: must be shorter than max_duration"
        ));
    }
    let mut triggers = Vec::new();
    for (i, t) in spec.rollback.iter().enumerate() {
        let idx = names.iter().position(|n| *n == t.check);
        let check = idx.and_then(|i| specs.get(i)).map(|c| c.as_ref());
        let p = t.problems(&format!("{prefix}.rollback[{i}]"), check);
        if p.is_empty() {
            if let Some(idx) = idx {
                triggers.push((t.clone(), idx));
            }
        }
        problems.extend(p);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Validated {
        names,
        specs,
        settings,
        triggers,
    })
}

// === impl Engine ===

impl Engine {
    async fn run(
        mut self,
        tick: Duration,
        mut commands: mpsc::Receiver<Command>,
        mut reports: mpsc::Receiver<TargetReport>,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval_at(Instant::now() + tick, tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.persist();
                    if let Some(w) = self.writer.take() {
                        // The last state is written (or its failure logged) before the task ends.
                        let _ = tokio::task::spawn_blocking(move || w.finish()).await;
                    }
                    return;
                }
                Some(cmd) = commands.recv() => self.command(cmd),
                Some(rep) = reports.recv() => self.take(rep),
                _ = ticker.tick() => self.tick(),
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Create(spec, quota, reply) => {
                let room = if self.analyses.contains_key(&spec.name) {
                    Ok(Vec::new())
                } else {
                    self.room_for_one(quota.as_ref())
                };
                let victims = match room {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                match self.create(*spec) {
                    Ok(view) => {
                        for id in &victims {
                            self.remove(id, "removed early: the cap on analyses held was reached and it was the oldest finished one");
                        }
                        self.publish_routing();
                        self.publish_snapshot();
                        if let Some(slot) = self.analyses.get_mut(&view.id) {
                            slot.kept.scope = quota.map(|q| q.scope);
                        }
                        let seq = self.persist();
                        if let Some(slot) = self.analyses.get_mut(&view.id) {
                            slot.kept.stored_seq = seq;
                        }
                        self.reply_when_stored(seq, reply, Ok(view));
                    }
                    // The same name again: answered once the analysis is in the store (a retry
                    // after a 503 gets its 200 only when the store has it).
                    Err(CreateError::Exists(n)) => {
                        let seq = self.analyses.get(&n).map_or(0, |s| s.kept.stored_seq);
                        self.reply_when_stored(seq, reply, Err(CreateError::Exists(n)));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Delete(id, reply) => {
                // Known to fail: refused before anything changes (a delete answered 503 did
                // nothing, unless the store broke during its own write).
                if let Some(Err(why)) = self.writer.as_ref().map(|w| w.handle().health()) {
                    let _ = reply.send(Err(CreateError::Unavailable(why)));
                    return;
                }
                if self.analyses.contains_key(&id) {
                    self.remove(&id, "analysis deleted");
                    self.publish_routing();
                    self.publish_snapshot();
                    let seq = self.persist();
                    self.last_delete_seq = seq;
                    self.reply_when_stored(seq, reply, Ok(true));
                } else {
                    let seq = self.last_delete_seq;
                    self.reply_when_stored(seq, reply, Ok(false));
                }
            }
        }
    }

    /// Send `r` once the store state `seq` is on disk; a store fault replaces it with
    /// [`CreateError::Unavailable`]. Without a store, at once.
    fn reply_when_stored<T: Send + 'static>(
        &self,
        seq: u64,
        reply: oneshot::Sender<Result<T, CreateError>>,
        r: Result<T, CreateError>,
    ) {
        match &self.writer {
            None => {
                let _ = reply.send(r);
            }
            Some(w) => w.handle().when_stored(
                seq,
                Box::new(move |stored| {
                    let _ = reply.send(match stored {
                        Ok(()) => r,
                        Err(why) => Err(CreateError::Unavailable(why)),
                    });
                }),
            ),
        }
    }

    /// Forget an analysis (delete, retention): alert sinks hear of it, its metrics go.
    fn remove(&mut self, id: &str, why: &'static str) {
        if let Some(slot) = self.analyses.remove(id) {
            self.metrics.remove_analysis(id);
            info!(analysis = %id, verdict = slot.analysis.verdict().as_str(), reason = why, "analysis removed");
            let _ = self.events.send(VerdictEvent::Deleted { view: slot.view });
        }
    }

    /// The finished analyses to remove so that one more fits under the cap on analyses held
    /// (and under `quota`'s), oldest verdict first; a 429 when the running ones alone fill it.
    fn room_for_one(&self, quota: Option<&crate::auth::Quota>) -> Result<Vec<String>, CreateError> {
        let finished = |pick: &dyn Fn(&Slot) -> bool| -> Vec<String> {
            let mut v: Vec<(f64, &String)> = self
                .analyses
                .iter()
                .filter(|(_, s)| !s.kept.pinned && pick(s))
                .filter_map(|(id, s)| s.kept.finished_at.map(|t| (t, id)))
                .collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            v.into_iter().map(|(_, id)| id.clone()).collect()
        };
        let mut victims = Vec::new();
        if let Some(q) = quota {
            let mine = |s: &Slot| s.kept.scope.as_deref() == Some(q.scope.as_str());
            let held = self.analyses.values().filter(|s| mine(s)).count();
            if held >= q.max_analyses {
                let need = held + 1 - q.max_analyses;
                victims = finished(&mine).into_iter().take(need).collect();
                if victims.len() < need {
                    return Err(CreateError::TooMany(format!(
                        "the {:?} scope holds {held} analyses, its limit ([[auth.scopes]] max_analyses = {}), and none of them is finished: wait for one to finish or delete one",
                        q.scope, q.max_analyses
                    )));
                }
            }
        }
        let max = self.retention.max_analyses;
        let held = self.analyses.len() - victims.len();
        if held >= max {
            let need = held + 1 - max;
            let more: Vec<String> = finished(&|_| true)
                .into_iter()
                .filter(|id| !victims.contains(id))
                .take(need)
                .collect();
            if more.len() < need {
                return Err(CreateError::TooMany(format!(
                    "{held} analyses are held, the limit ([retention] max_analyses = {max}), and none of them is finished: wait for one to finish or delete one (DELETE /v1/analyses/{{id}})"
                )));
            }
            victims.extend(more);
        }
        Ok(victims)
    }

    fn create(&mut self, spec: AnalysisConfig) -> Result<Arc<AnalysisView>, CreateError> {
        let Validated {
            names,
            specs,
            settings,
            triggers,
        } = validate(&spec, &self.catalog, &self.defaults, "analysis")
            .map_err(|p| CreateError::Invalid(p.join("; ")))?;
        if self.analyses.contains_key(&spec.name) {
            return Err(CreateError::Exists(spec.name));
        }
        let baseline = Selector::parse(&spec.baseline).expect("validated");
        let canary = Selector::parse(&spec.canary).expect("validated");
        let spec_refs: Vec<&CheckSpec> = specs.iter().map(|s| s.as_ref()).collect();
        let analysis = Analysis::new(settings, &spec_refs);
        let created_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let view = Arc::new(AnalysisView::new(
            spec.name.clone(),
            spec.clone(),
            created_at,
            analysis.clone(),
            specs.clone(),
        ));
        self.generation += 1;
        let pending = specs
            .iter()
            .map(|c| [vec![0.0; c.slots()], vec![0.0; c.slots()]])
            .collect();
        info!(analysis = %spec.name, baseline = %spec.baseline, canary = %spec.canary, checks = ?names, "analysis started");
        self.metrics
            .set_verdict(&spec.name, Verdict::Pending.as_str());
        let _ = self.events.send(VerdictEvent::Changed {
            view: view.clone(),
            previous: None,
        });
        let cumulative = specs
            .iter()
            .map(|c| [vec![0.0; c.slots()], vec![0.0; c.slots()]])
            .collect();
        let strata = crate::cohort::StrataPending::new(&specs);
        let pods = crate::cohort::PodPending::new(&specs);
        self.analyses.insert(
            spec.name.clone(),
            Slot {
                view: view.clone(),
                analysis,
                specs,
                baseline,
                canary,
                since_generation: self.generation,
                started: Instant::now(),
                elapsed_base: Duration::ZERO,
                pending,
                strata,
                pods,
                members: Default::default(),
                resets: [0; 2],
                overlaps: 0,
                triggers,
                cumulative,
                kept: Kept::default(),
                unmatched_since: None,
                history: Arc::default(),
            },
        );
        Ok(view)
    }

    /// Resume a stored analysis: its e-process state, evidence, elapsed time and pending deltas.
    fn restore(&mut self, stored: StoredAnalysis) {
        let id = stored.spec.name.clone();
        if let Err(e) = self.create(stored.spec.clone()) {
            warn!(analysis = %id, error = %e, "stored analysis cannot be resumed");
            return;
        }
        let slot = self.analyses.get_mut(&id).expect("just created");
        if stored.state.checks().len() != slot.specs.len() {
            warn!(analysis = %id, "stored analysis has other checks than the current pack; restarted from zero");
            return;
        }
        slot.elapsed_base = stored.state.elapsed();
        if stored.pending.len() == slot.pending.len()
            && stored
                .pending
                .iter()
                .zip(&slot.pending)
                .all(|(a, b)| a[0].len() == b[0].len() && a[1].len() == b[1].len())
        {
            slot.pending = stored.pending;
        }
        slot.members = stored.members.map(|m| {
            m.into_iter()
                .map(|u| Arc::<str>::from(u.as_str()))
                .collect()
        });
        slot.resets = stored.resets;
        slot.overlaps = stored.overlaps;
        slot.kept.scope = stored.scope;
        // A store from before retention has no finish time: retention counts from now.
        slot.kept.finished_at = stored
            .finished_at
            .or_else(|| stored.state.verdict().is_final().then(unix_now));
        slot.kept.pinned = self.plan.as_ref().is_some_and(|p| {
            p.waves
                .iter()
                .any(|w| crate::plan::Plan::analysis_id(w) == id)
        });
        slot.analysis = stored.state;
        slot.history = Arc::new(stored.history);
        slot.view = Arc::new(
            AnalysisView::new(
                id.clone(),
                stored.spec,
                stored.created_at,
                slot.analysis.clone(),
                slot.specs.clone(),
            )
            .with_history(slot.history.clone()),
        );
        self.metrics
            .set_verdict(&id, slot.analysis.verdict().as_str());
        info!(analysis = %id, verdict = slot.analysis.verdict().as_str(), elapsed = ?slot.elapsed_base, "analysis resumed from the store");
    }

    /// Hand the whole state (every analysis, every target's series values, the plan's labels) to
    /// the store writer; returns its sequence number (0 without a store). Only clones: the
    /// encoding and the commit happen on the writer's thread.
    fn persist(&mut self) -> u64 {
        let Some(writer) = &self.writer else {
            return 0;
        };
        {
            let targets = self.targets.borrow();
            let current: HashSet<&str> = targets.iter().map(|t| t.url.as_str()).collect();
            self.latest_state
                .retain(|u, _| current.contains(u.as_ref()));
        }
        let analyses = self
            .analyses
            .iter()
            .map(|(id, s)| {
                (
                    id.clone(),
                    StoredAnalysis {
                        spec: s.view.spec.clone(),
                        created_at: s.view.created_at,
                        state: s.analysis.clone(),
                        pending: s.pending.clone(),
                        members: s.members.clone().map(|m| {
                            let mut v: Vec<String> = m.iter().map(|u| u.to_string()).collect();
                            v.sort();
                            v
                        }),
                        resets: s.resets,
                        overlaps: s.overlaps,
                        finished_at: s.kept.finished_at,
                        scope: s.kept.scope.clone(),
                        history: (*s.history).clone(),
                    },
                )
            })
            .collect();
        let state = StoreState {
            analyses,
            targets: self
                .latest_state
                .iter()
                .map(|(u, s)| (u.clone(), s.clone()))
                .collect(),
            plan_labels: self.plan.as_ref().map(|_| self.plan_labels.clone()),
        };
        self.seq += 1;
        writer.handle().submit(self.seq, state);
        self.seq
    }

    fn take(&mut self, rep: TargetReport) {
        if !rep.deltas.is_empty() {
            self.waiting.push(rep.scraped_at);
        }
        if let Some(state) = &rep.state {
            self.latest_state.insert(rep.url.clone(), state.clone());
        }
        if !rep.strata.is_empty() {
            for slot in self.analyses.values_mut() {
                slot.strata.learn(&rep.strata);
            }
        }
        // Deltas are attributed by analysis id, so a report computed under an older routing
        // generation still lands in the right place; deleted analyses simply drop theirs.
        // A report's deltas come grouped by analysis: the pod's number and its cohort membership
        // are looked up once per analysis and side, not once per delta.
        let mut last: Option<(u64, u32, [bool; 2])> = None;
        for d in &rep.deltas {
            let Some(slot) = self.analyses.values_mut().find(|s| s_id(s) == d.analysis) else {
                continue;
            };
            if slot.analysis.verdict().is_final() {
                continue;
            }
            crate::cohort::add_delta(&mut slot.pending, d);
            slot.strata.add(d);
            let (pod, mut known) = match last {
                Some((a, pod, known)) if a == d.analysis => (pod, known),
                _ => (slot.pods.pod_id(&rep.url), [false; 2]),
            };
            slot.pods.add(pod, d);
            let side = d.side.index();
            if !known[side] {
                if !slot.members[side].contains(&rep.url) {
                    slot.members[side].insert(rep.url.clone());
                }
                known[side] = true;
            }
            last = Some((d.analysis, pod, known));
        }
        if rep.resets > 0 || rep.overlaps > 0 {
            for slot in self.analyses.values_mut() {
                for side in [Side::Baseline, Side::Canary] {
                    if slot.members[side.index()].contains(&rep.url) {
                        slot.resets[side.index()] += rep.resets as u64;
                    }
                }
                slot.overlaps += rep.overlaps as u64;
            }
        }
    }

    fn quality(&self, slot: &Slot) -> DataQuality {
        let targets = self.targets.borrow().clone();
        let health = self.health.read().expect("health lock");
        let now = Instant::now();
        let cohort = |side: Side, sel: &Selector| {
            let mut q = CohortQuality {
                resets: slot.resets[side.index()],
                ..Default::default()
            };
            for url in &slot.members[side.index()] {
                // A target without a health entry left the target set (a pod that went away
                // during the upgrade: not stale, gone). Health covers scraped targets and the
                // virtual targets of a Prometheus backend alike.
                let Some(h) = health.get(url.as_ref()) else {
                    continue;
                };
                q.targets += 1;
                quarantined(&mut q, h);
                let fresh = h
                    .last_success_at
                    .is_some_and(|at| now.saturating_duration_since(at) <= self.stale_after)
                    && h.consecutive_reset_pages < crate::scrape::UNRELIABLE_RESET_PAGES;
                if fresh {
                    q.fresh += 1;
                } else {
                    q.stale += 1;
                }
            }
            for t in targets.iter() {
                if slot.members[side.index()].contains(t.url.as_str())
                    || !sel.may_match(|n| t.label(n))
                {
                    continue;
                }
                // Not a member: never scraped successfully, or gone dark before it sent this
                // analysis anything (a pod that died before the analysis started still counts).
                if let Some(h) = health.get(&t.url) {
                    // A target whose every page is quarantined never becomes a member.
                    quarantined(&mut q, h);
                    if is_dark(h, now, self.stale_after) {
                        q.unreachable += 1;
                    }
                }
            }
            q
        };
        let spec = &slot.view.spec;
        DataQuality {
            baseline: cohort(Side::Baseline, &slot.baseline),
            canary: cohort(Side::Canary, &slot.canary),
            overlapping_series: slot.overlaps,
            thresholds: crate::judge::QualityThresholds {
                max_stale_fraction: spec
                    .max_stale_fraction
                    .unwrap_or(self.defaults.max_stale_fraction),
                min_fresh_targets: spec
                    .min_fresh_targets
                    .unwrap_or(self.defaults.min_fresh_targets),
            },
            blocked_by: None,
            hold: None,
        }
    }

    fn tick(&mut self) {
        self.ticked = true;
        let now = Instant::now();
        for at in self.waiting.drain(..) {
            self.metrics
                .ingest_delay
                .observe(now.saturating_duration_since(at).as_secs_f64());
        }
        self.plan_tick();
        let targets = self.targets.borrow().clone();
        let discovered: Vec<(String, String)> = targets
            .iter()
            .filter(|t| t.label("role") == Some("istiod"))
            .map(|t| {
                (
                    t.label("cluster").unwrap_or("default").to_owned(),
                    t.label("revision").unwrap_or("default").to_owned(),
                )
            })
            .collect();
        let skew = Arc::new(crate::istio::skew::report_known(
            &self.observer.all(),
            &self.topology,
            Some(&discovered),
        ));
        self.skew = Some(skew.clone());
        let mut routing_changed = false;
        let ids: Vec<String> = self.analyses.keys().cloned().collect();
        for id in ids {
            let (quality, unmatched) = {
                let slot = &self.analyses[&id];
                if slot.analysis.verdict().is_final() {
                    continue;
                }
                let mut quality = self.quality(slot);
                let unmatched = if self.direct {
                    unmatched(slot, &targets)
                } else {
                    None
                };
                quality.hold = unmatched.clone().or_else(|| {
                    if self.defaults.allow_go_without_istiod_skew_check {
                        None
                    } else {
                        skew_hold(&skew, &targets, &slot.baseline, &slot.canary)
                    }
                });
                (quality, unmatched)
            };
            let slot = self.analyses.get_mut(&id).expect("present");
            let specs: Vec<&CheckSpec> = slot.specs.iter().map(|s| s.as_ref()).collect();
            let before = slot.analysis.verdict();
            let strata = slot.strata.take();
            let pods = slot.pods.take();
            let v = slot.analysis.tick(
                &specs,
                TickInput {
                    pods: &pods,
                    strata: &strata,
                    slots: &slot.pending,
                    quality,
                    elapsed: slot.elapsed_base + slot.started.elapsed(),
                },
            );
            for (cum, c) in slot.cumulative.iter_mut().zip(&slot.pending) {
                for (a, b) in cum.iter_mut().zip(c) {
                    a.iter_mut().zip(b).for_each(|(x, y)| *x += y.max(0.0));
                }
            }
            // Rollback triggers and the version skew guard turn the verdict NO-GO at once.
            let fired = slot
                .triggers
                .iter()
                .find_map(|(t, i)| {
                    crate::istio::trigger::evaluate(t, &slot.specs[*i], &slot.cumulative[*i])
                })
                .or_else(|| skew_reason(&skew, &targets, &slot.baseline, &slot.canary));
            let mut v = match fired {
                Some(reason) => slot.analysis.trip(reason),
                None => v,
            };
            // A selector that matches no target past the grace period: INCONCLUSIVE, saying so
            // (no data can come, and PENDING for max_duration would say nothing new).
            match unmatched {
                Some(block) => {
                    let since = *slot.unmatched_since.get_or_insert(now);
                    let grace = self.defaults.no_target_grace;
                    if v == Verdict::Pending && now.saturating_duration_since(since) >= grace {
                        v = slot.analysis.abandon(format!(
                            "{} for {} (judge.no_target_grace)",
                            block.message,
                            humantime::format_duration(grace)
                        ));
                    }
                }
                None => slot.unmatched_since = None,
            }
            for c in &mut slot.pending {
                for side in c.iter_mut() {
                    side.iter_mut().for_each(|x| *x = 0.0);
                }
            }
            self.metrics.ticks.inc();
            self.metrics.set_verdict(&id, v.as_str());
            // A point when the history's stride says so (every tick for the first 256), read
            // from the e-processes: the evidence document stays for its first reader.
            if slot.history.due(slot.analysis.ticks(), v) {
                Arc::make_mut(&mut slot.history).record(&slot.analysis, &specs);
            }
            slot.view = Arc::new(
                AnalysisView::new(
                    slot.view.id.clone(),
                    slot.view.spec.clone(),
                    slot.view.created_at,
                    slot.analysis.clone(),
                    slot.specs.clone(),
                )
                .with_history(slot.history.clone()),
            );
            if v != before {
                if v.is_final() {
                    slot.kept.finished_at = Some(unix_now());
                }
                info!(analysis = %id, verdict = v.as_str(), reason = %slot.analysis.reason(), "verdict");
                routing_changed |= v.is_final();
                let _ = self.events.send(VerdictEvent::Changed {
                    view: slot.view.clone(),
                    previous: Some(before),
                });
            }
        }
        if routing_changed {
            self.publish_routing();
        }
        self.expire();
        self.publish_snapshot();
        self.persist();
    }

    /// Remove the finished analyses whose verdict is older than `[retention] finished_ttl`
    /// (from memory here, from the store with the next state written).
    fn expire(&mut self) {
        let now = unix_now();
        let ttl = self.retention.finished_ttl.as_secs_f64();
        let expired: Vec<String> = self
            .analyses
            .iter()
            .filter(|(_, s)| !s.kept.pinned && s.kept.finished_at.is_some_and(|t| now - t >= ttl))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.remove(&id, "finished longer than [retention] finished_ttl ago");
        }
    }

    fn publish_routing(&mut self) {
        let analyses = self
            .analyses
            .values()
            .filter(|s| !s.analysis.verdict().is_final())
            .map(|s| RoutedAnalysis {
                id: s_id(s),
                since_generation: s.since_generation,
                baseline: s.baseline.clone(),
                canary: s.canary.clone(),
                checks: s.specs.clone(),
            })
            .collect();
        self.generation += 1;
        self.routing_tx
            .send_replace(Arc::new(Routing::new(self.generation, analyses)));
    }

    fn publish_snapshot(&self) {
        let analyses = self
            .analyses
            .iter()
            .map(|(k, s)| (k.clone(), s.view.clone()))
            .collect();
        self.snapshot_tx.send_replace(Arc::new(Snapshot {
            ready: self.ticked,
            analyses,
            skew: self.skew.clone(),
            plan: self.plan_status.clone(),
        }));
    }

    /// Follow the upgrade plan: which waves moved (from discovery), start each wave's analysis
    /// when its namespaces start moving, and publish the plan's status.
    fn plan_tick(&mut self) {
        let Some(plan) = self.plan.clone() else {
            return;
        };
        use crate::istio::plan;
        let targets = self.targets.borrow().clone();
        let refs: Vec<&crate::discovery::Target> = targets.iter().map(|t| t.as_ref()).collect();
        let counts = plan::namespace_counts(&plan, &refs);
        match plan::record_labels(&plan, &mut self.plan_labels, &refs, &counts) {
            Ok(false) => {}
            // Stored with the state at the end of this tick.
            Ok(true) => {}
            Err(e) => warn!(error = %e, "namespace labels not recorded"),
        }
        self.wave_moved_at.resize(plan.waves.len(), None);
        let now = Instant::now();
        let mut runtime = Vec::new();
        for (i, w) in plan.waves.iter().enumerate() {
            if plan::wave_moved(w, &counts) {
                self.wave_moved_at[i].get_or_insert(now);
            } else {
                self.wave_moved_at[i] = None;
            }
            let id = plan::Plan::analysis_id(w);
            // A wave's analysis starts when the wave is next (every earlier wave moved), before
            // its namespaces move: the before/after design needs each workload's rate before its
            // move. A wave found already moving starts at once (its moved workloads then have no
            // pre-move window and say so).
            let next = plan.waves[..i].iter().all(|e| plan::wave_moved(e, &counts));
            if (next || plan::wave_started(w, &counts)) && !self.analyses.contains_key(&id) {
                match self.create(plan.analysis_for(w)) {
                    Ok(_) => {
                        if let Some(slot) = self.analyses.get_mut(&id) {
                            slot.kept.pinned = true;
                        }
                        self.publish_routing()
                    }
                    Err(e) => warn!(wave = %w.name, error = %e, "wave analysis not started"),
                }
            }
            runtime.push(plan::WaveRuntime {
                verdict: self
                    .analyses
                    .get(&id)
                    .map(|s| (s.analysis.verdict(), s.analysis.reason().to_owned())),
                moved_for: self.wave_moved_at[i].map(|at| now.saturating_duration_since(at)),
            });
        }
        self.plan_status = Some(Arc::new(plan::status(
            &plan,
            &counts,
            &runtime,
            &self.plan_labels,
        )));
    }
}

/// The version skew NO-GO that concerns an analysis: a blocking skew problem about a target its
/// baseline or canary selector may select.
/// Whether a target that sent an analysis no data counts as unreachable for it: never scraped
/// successfully, including a target whose first scrape has not ended yet (its data is missing;
/// a hung first scrape on a starved machine once let a GO through without it), or failing since
/// before the staleness limit.
/// Count `h` in `q`'s quarantined targets if its data is quarantined now.
fn quarantined(q: &mut CohortQuality, h: &crate::scrape::TargetHealth) {
    if let Some(why) = &h.quarantine {
        q.quarantined += 1;
        q.quarantine
            .get_or_insert_with(|| format!("{}: {why}", h.url));
    }
}

fn is_dark(h: &crate::scrape::TargetHealth, now: Instant, stale_after: Duration) -> bool {
    match h.last_success_at {
        None => true,
        Some(at) => now.saturating_duration_since(at) > stale_after && h.consecutive_failures > 0,
    }
}

fn skew_reason(
    skew: &crate::istio::SkewReport,
    targets: &TargetSet,
    baseline: &Selector,
    canary: &Selector,
) -> Option<String> {
    let concerned = |url: &str| {
        targets.iter().any(|t| {
            t.url == url && (baseline.may_match(|n| t.label(n)) || canary.may_match(|n| t.label(n)))
        })
    };
    let msgs: Vec<&str> = skew
        .problems
        .iter()
        .filter(|p| p.blocking && p.targets.iter().any(|u| concerned(u)))
        .map(|p| p.message.as_str())
        .collect();
    (!msgs.is_empty()).then(|| format!("version skew guard: {}", msgs.join("; ")))
}

/// The no-target rule: a cohort whose selector no target of the set may match, and that has had
/// no data, as the hold that says so. The canary of a before/after analysis is left alone: it is
/// empty until the first namespace moves.
fn unmatched(slot: &Slot, targets: &TargetSet) -> Option<QualityBlock> {
    let concurrent = slot.view.spec.design == crate::analysis::DesignName::Concurrent;
    let sides = [
        (Side::Baseline, &slot.baseline, "baseline", true),
        (Side::Canary, &slot.canary, "canary", concurrent),
    ];
    for (side, sel, name, judged) in sides {
        if !judged
            || !slot.members[side.index()].is_empty()
            || targets.iter().any(|t| sel.may_match(|n| t.label(n)))
        {
            continue;
        }
        // What the targets have instead, for the labels the selector names.
        let mut labels: Vec<&str> = sel.matchers().iter().map(|m| m.name.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        let seen: Vec<String> = labels
            .iter()
            .filter_map(|l| {
                let mut values: Vec<&str> = targets.iter().filter_map(|t| t.label(l)).collect();
                values.sort_unstable();
                values.dedup();
                (!values.is_empty()).then(|| {
                    let more = values.len().saturating_sub(8);
                    values.truncate(8);
                    format!(
                        "{l}: {}{}",
                        values.join(", "),
                        if more > 0 {
                            format!(" and {more} more")
                        } else {
                            String::new()
                        }
                    )
                })
            })
            .collect();
        let seen = if seen.is_empty() {
            String::new()
        } else {
            format!("; the targets have {}", seen.join("; "))
        };
        return Some(QualityBlock {
            threshold: "no_matching_target".into(),
            cohort: name.into(),
            value: 0.0,
            limit: 1.0,
            message: format!(
                "no scraped target matches the {name} selector {sel} ({} targets known{seen})",
                targets.len()
            ),
        });
    }
    None
}

/// The version skew guard's hold on GO for an analysis: it cannot judge a revision that the
/// proxies its cohorts may select use, because no istiod of that revision is observed.
fn skew_hold(
    skew: &crate::istio::SkewReport,
    targets: &TargetSet,
    baseline: &Selector,
    canary: &Selector,
) -> Option<QualityBlock> {
    let selects = |sel: &Selector, url: &str| {
        targets
            .iter()
            .any(|t| t.url == url && sel.may_match(|n| t.label(n)))
    };
    skew.problems
        .iter()
        .filter(|p| p.holds_go)
        .find_map(|p| {
            let cohort = if p.targets.iter().any(|u| selects(canary, u)) {
                "canary"
            } else if p.targets.iter().any(|u| selects(baseline, u)) {
                "baseline"
            } else {
                return None;
            };
            Some(QualityBlock {
                threshold: "skew_guard".into(),
                cohort: cohort.into(),
                value: 0.0,
                limit: 0.0,
                message: format!(
                    "version skew guard cannot judge revision {} of the {cohort} cohort: {}; GO is held until an istiod of revision {} is scraped ([judge] allow_go_without_istiod_skew_check = true accepts the risk)",
                    p.revision, p.message, p.revision
                ),
            })
        })
}

/// A stable numeric id for routing, derived from the analysis' creation generation.
fn s_id(s: &Slot) -> u64 {
    s.since_generation
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::TargetHealth;

    #[test]
    fn a_target_without_a_good_scrape_is_dark_even_before_its_first_failure() {
        let t = crate::discovery::Target {
            url: "http://10.0.0.9:15020/stats/prometheus".into(),
            labels: Default::default(),
        };
        let stale = Duration::from_secs(30);
        let now = Instant::now();
        let mut h = TargetHealth::new(&t);
        // First scrape still in flight: no success, no failure yet.
        assert!(is_dark(&h, now, stale));
        h.failures = 1;
        h.consecutive_failures = 1;
        assert!(is_dark(&h, now, stale));
        // Scraped recently: not dark, even while failing now (it is a stale member instead).
        h.last_success_at = Some(now - Duration::from_secs(5));
        assert!(!is_dark(&h, now, stale));
        // Failing since before the staleness limit: dark; succeeding again: not dark.
        h.last_success_at = Some(now - Duration::from_secs(60));
        assert!(is_dark(&h, now, stale));
        h.consecutive_failures = 0;
        assert!(!is_dark(&h, now, stale));
    }
}
