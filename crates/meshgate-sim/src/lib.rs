//! Simulated Istio mesh: istiod (:15014-like) and sidecar (:15020-like) Prometheus endpoints on loopback.
//!
//! Every sidecar and every istiod gets its own listener (port 0) so a scraper sees one target per
//! pod, as in Kubernetes. Traffic is generated lazily: a pod's counters advance by the time elapsed
//! since its previous scrape (`tokio::time::Instant`, so paused-clock tests work), each pod behind
//! its own `std::sync::Mutex` with a short critical section (advance + copy of its state); the text
//! is formatted outside the lock from a precompiled template that the replicas of one workload on
//! one revision share (the page shows no pod name), so thousands of pods stay cheap.

pub mod istiod;
pub mod kubeapi;
pub mod multicluster;
pub mod page;
pub mod traffic;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use istiod::IstiodFault;
pub use page::{CONTENT_TYPE, DESTINATION_ONLY_LABELS, REQUEST_LABELS};
pub use traffic::HistogramTags;

use istiod::{IstiodModel, IstiodParams};
use page::{IstiodInfo, PodLabels, SidecarIdentity, Template, Workload};
use traffic::{default_mix, mix64, Advance, SidecarModel, TrafficParams};

/// Path of the sidecar endpoint (istio-agent merged stats, port 15020 in a real pod).
pub const PROXY_PATH: &str = "/stats/prometheus";
/// Path of the istiod endpoint (port 15014 in a real cluster).
pub const ISTIOD_PATH: &str = "/metrics";

/// App names given to pods (pod j of each cohort runs the same app, so baseline and canary pods
/// of one workload differ only by their sidecar revision, as in a revision-based upgrade).
const APPS: [&str; 8] = [
    "cart", "checkout", "catalog", "payments", "shipping", "reviews", "currency", "ads",
];

/// Configuration of a simulated mesh.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    /// Cluster name (`source_cluster`/`destination_cluster`, target label `cluster`).
    pub cluster: String,
    /// Namespaces the pods are spread over (round robin).
    pub namespaces: Vec<String>,
    /// The running revision.
    pub baseline: RevisionSpec,
    /// The revision being evaluated.
    pub canary: RevisionSpec,
    /// Inbound requests per second per pod (outbound is half of it).
    pub rps_per_pod: f64,
    /// Share of 5xx (inbound and outbound) without faults.
    pub error_rate: f64,
    /// Median latency of a 2xx request (ms); lognormal.
    pub latency_median_ms: f64,
    /// Log-sd of the latency.
    pub latency_sigma: f64,
    /// Mean seconds between restarts of one pod's sidecar (exponential); a restart resets that
    /// pod's counters to 0 and moves `istio_agent_process_start_time_seconds`.
    pub restart_mean_interval_s: Option<f64>,
    /// RNG seed; the same seed and scrape times give the same pages.
    pub seed: u64,
    /// Seconds of traffic every pod has already served when the mesh starts (so the first scrape
    /// sees non-zero counters and a full-size page, like attaching to a running mesh).
    pub warmup_s: f64,
    /// Label set of the `istio_*` histograms (see [`HistogramTags`]).
    pub histogram_tags: HistogramTags,
    /// Per namespace, a factor on `error_rate` (and on a cohort fault's): services with different
    /// inherent 5xx rates. Namespaces not listed: 1.
    pub namespace_error_factors: BTreeMap<String, f64>,
    /// Namespace waves: every namespace starts with its traffic on the baseline revision's pods
    /// (the canary's pods are idle), until [`SimMesh::move_namespace`] moves it to the canary's.
    pub staged: bool,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            cluster: "cluster-1".to_string(),
            namespaces: vec!["shop".to_string()],
            baseline: RevisionSpec::new("1-24-2", "1.24.2", 3),
            canary: RevisionSpec::new("1-25-0", "1.25.0", 3),
            rps_per_pod: 100.0,
            error_rate: 0.001,
            latency_median_ms: 20.0,
            latency_sigma: 0.9,
            restart_mean_interval_s: None,
            seed: 1,
            warmup_s: 60.0,
            histogram_tags: HistogramTags::DestinationOnly,
            namespace_error_factors: BTreeMap::new(),
            staged: false,
        }
    }
}

/// One Istio control-plane revision and the pods whose sidecars it injected.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RevisionSpec {
    /// Revision name ("1-25-0"), as in `istio.io/rev`.
    pub revision: String,
    /// Istio version of istiod and of the sidecars ("1.25.0").
    pub version: String,
    /// Number of pods on this revision.
    pub pods: usize,
    /// Version of the sidecars when it differs from istiod's (a version skew to inject);
    /// `None`: the same as `version`.
    #[serde(default)]
    pub proxy_version: Option<String>,
    /// Proxies connected to this istiod (`pilot_xds`, pushes, convergences), when more than the
    /// scraped pods (a real istiod serves far more proxies than one scrapes); `None`: `pods`.
    #[serde(default)]
    pub connected_proxies: Option<u64>,
    /// Whether this mesh runs the revision's istiod (false in a remote cluster, whose proxies
    /// its primary's istiod serves, or before the revision's control plane is installed).
    #[serde(default = "yes")]
    pub istiod: bool,
}

fn yes() -> bool {
    true
}

impl RevisionSpec {
    /// A revision whose sidecars run istiod's version and whose istiod serves only its pods.
    pub fn new(revision: &str, version: &str, pods: usize) -> RevisionSpec {
        RevisionSpec {
            revision: revision.into(),
            version: version.into(),
            pods,
            proxy_version: None,
            connected_proxies: None,
            istiod: true,
        }
    }

    /// The sidecars' version.
    pub fn sidecar_version(&self) -> &str {
        self.proxy_version.as_deref().unwrap_or(&self.version)
    }

    /// Proxies connected to the revision's istiod.
    pub fn connected(&self) -> u64 {
        self.connected_proxies.unwrap_or(self.pods as u64)
    }
}

/// A fault applied to one cohort's pods, changeable at run time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Share of 5xx replacing [`SimConfig::error_rate`]; `None` keeps the config's.
    pub error_rate: Option<f64>,
    /// Multiplier on the median latency; 1.0 = none, 0 (the `Default`) is treated as 1.
    pub latency_factor: f64,
}

/// The two revisions being compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cohort {
    /// [`SimConfig::baseline`].
    Baseline,
    /// [`SimConfig::canary`].
    Canary,
}

impl Cohort {
    fn idx(self) -> usize {
        match self {
            Cohort::Baseline => 0,
            Cohort::Canary => 1,
        }
    }
}

/// A scrape target with its labels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimTarget {
    /// Full URL including the path.
    pub url: String,
    /// role ("proxy" | "istiod"), namespace, pod, revision, cluster, version.
    pub labels: BTreeMap<String, String>,
}

/// Ground truth of one cohort: what the simulation generated so far (restarts do not reset it).
///
/// Traffic is generated lazily, so this covers each pod up to its latest scrape (or
/// [`SimMesh::advance_all`]), including the warm-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truth {
    /// Inbound requests (the `reporter="destination"` series of the cohort's pods).
    pub requests: u64,
    /// Inbound 5xx.
    pub errors_5xx: u64,
    /// Outbound requests (`reporter="source"`).
    pub outbound_requests: u64,
    /// Outbound 5xx.
    pub outbound_5xx: u64,
    /// Sidecar restarts.
    pub restarts: u64,
}

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration cannot be simulated.
    #[error("invalid simulation config: {0}")]
    InvalidConfig(String),
}

impl From<SimError> for io::Error {
    fn from(e: SimError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

impl SimConfig {
    /// The defaults with `pods` sidecars per revision, each serving `rps_per_pod` requests/s at a
    /// 0.1% error rate: the small mesh of the demo and the tests.
    pub fn small(seed: u64, pods: usize, rps_per_pod: f64) -> SimConfig {
        let mut sim = SimConfig {
            rps_per_pod,
            error_rate: 0.001,
            seed,
            ..SimConfig::default()
        };
        sim.baseline.pods = pods;
        sim.canary.pods = pods;
        sim
    }

    /// Check ranges (rates finite and non-negative, probabilities in [0, 1], ...).
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: &str| Err(SimError::InvalidConfig(m.to_string()));
        if self.namespaces.is_empty() || self.namespaces.iter().any(|n| n.is_empty()) {
            return bad("namespaces must be non-empty names");
        }
        if !(self.rps_per_pod.is_finite() && self.rps_per_pod >= 0.0) {
            return bad("rps_per_pod must be finite and >= 0");
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            return bad("error_rate must be in [0, 1]");
        }
        if !(self.latency_median_ms.is_finite() && self.latency_median_ms > 0.0) {
            return bad("latency_median_ms must be > 0");
        }
        if !(self.latency_sigma.is_finite() && self.latency_sigma > 0.0) {
            return bad("latency_sigma must be > 0");
        }
        if let Some(m) = self.restart_mean_interval_s {
            if m.is_nan() || m <= 0.0 {
                return bad("restart_mean_interval_s must be > 0");
            }
        }
        if !(self.warmup_s.is_finite() && self.warmup_s >= 0.0) {
            return bad("warmup_s must be finite and >= 0");
        }
        if self.baseline.revision == self.canary.revision {
            return bad("baseline and canary need different revisions");
        }
        Ok(())
    }

    fn revision(&self, c: Cohort) -> &RevisionSpec {
        match c {
            Cohort::Baseline => &self.baseline,
            Cohort::Canary => &self.canary,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a pod lock leaves plain numbers behind: keep serving them.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct CohortState {
    fault: Mutex<Fault>,
    istiod_fault: Mutex<IstiodFault>,
    requests: AtomicU64,
    errors: AtomicU64,
    out_requests: AtomicU64,
    out_errors: AtomicU64,
    restarts: AtomicU64,
}

struct Shared {
    cfg: SimConfig,
    start: Instant,
    epoch_unix: f64,
    cohorts: [CohortState; 2],
    /// `staged` meshes: the namespaces moved to the canary revision.
    moved: Mutex<HashSet<String>>,
}

impl Shared {
    /// A pod's parameters from its cohort's: its namespace's error factor, and no traffic while
    /// a staged mesh has the namespace on the other revision.
    fn pod_params(&self, c: Cohort, namespace: &str, mut p: TrafficParams) -> TrafficParams {
        if let Some(f) = self.cfg.namespace_error_factors.get(namespace) {
            p.error_rate = (p.error_rate * f).clamp(0.0, 1.0);
        }
        if self.cfg.staged {
            let moved = lock(&self.moved).contains(namespace);
            if moved != (c == Cohort::Canary) {
                p.rps = 0.0;
            }
        }
        p
    }

    /// Sim seconds since the mesh started.
    fn now(&self) -> f64 {
        Instant::now().duration_since(self.start).as_secs_f64()
    }

    fn params(&self, c: Cohort, fault: Fault, ifault: IstiodFault) -> TrafficParams {
        let pods = self.cfg.revision(c).pods.max(1) as f64;
        TrafficParams {
            rps: self.cfg.rps_per_pod,
            error_rate: fault.error_rate.unwrap_or(self.cfg.error_rate),
            latency_median_ms: self.cfg.latency_median_ms,
            latency_sigma: self.cfg.latency_sigma,
            latency_factor: if fault.latency_factor > 0.0 {
                fault.latency_factor
            } else {
                1.0
            },
            restart_mean_interval_s: self.cfg.restart_mean_interval_s,
            xds_rejects_per_s: ifault.rejects_per_min.max(0.0) / 60.0 / pods,
        }
    }

    fn current_params(&self, c: Cohort) -> TrafficParams {
        let st = &self.cohorts[c.idx()];
        let fault = *lock(&st.fault);
        let ifault = *lock(&st.istiod_fault);
        self.params(c, fault, ifault)
    }

    fn add_truth(&self, c: Cohort, a: Advance) {
        let st = &self.cohorts[c.idx()];
        st.requests.fetch_add(a.inbound, Ordering::Relaxed);
        st.errors.fetch_add(a.inbound_5xx, Ordering::Relaxed);
        st.out_requests.fetch_add(a.outbound, Ordering::Relaxed);
        st.out_errors.fetch_add(a.outbound_5xx, Ordering::Relaxed);
        st.restarts.fetch_add(a.restarts, Ordering::Relaxed);
    }
}

/// What replicas of one workload on one revision share: labels and compiled templates.
struct IdentityEntry {
    identity: SidecarIdentity,
    labels: PodLabels,
    /// Templates by presence mask. Locked only when a pod's set of series changes (rare), and
    /// only by the replicas of this identity. Bounded: cleared past [`MAX_TEMPLATES`].
    templates: Mutex<HashMap<u64, Arc<Template>>>,
}

/// Bound on cached templates per identity (pods keep their own `Arc`, so clearing is safe).
const MAX_TEMPLATES: usize = 32;

impl IdentityEntry {
    fn template(
        &self,
        specs: &[traffic::SeriesSpec],
        layout: traffic::Layout,
        present: u64,
    ) -> Arc<Template> {
        let mut map = lock(&self.templates);
        if let Some(t) = map.get(&present) {
            return t.clone();
        }
        if map.len() >= MAX_TEMPLATES {
            map.clear();
        }
        let t = Arc::new(page::sidecar_template(
            &self.identity,
            &self.labels,
            specs,
            layout,
            present,
        ));
        map.insert(present, t.clone());
        t
    }
}

struct PodState {
    model: SidecarModel,
    /// Template for the presence mask it was built for.
    template: Option<(u64, Arc<Template>)>,
}

struct Pod {
    shared: Arc<Shared>,
    cohort: Cohort,
    namespace: String,
    name: String,
    identity: Arc<IdentityEntry>,
    addr: SocketAddr,
    state: Mutex<PodState>,
}

impl Pod {
    fn advance_locked(&self, st: &mut PodState, p: &TrafficParams) -> f64 {
        let t = self.shared.now();
        let p = self.shared.pod_params(self.cohort, &self.namespace, *p);
        let a = st.model.advance(t, &p);
        self.shared.add_truth(self.cohort, a);
        t
    }

    /// Advance to now and render the page (uncompressed).
    fn scrape(&self) -> Vec<u8> {
        let p = self.shared.current_params(self.cohort);
        let (tpl, snapshot) = {
            let mut st = lock(&self.state);
            // Time is read under the lock so concurrent scrapes of one pod see increasing times.
            let t = self.advance_locked(&mut st, &p);
            st.model.fill_scalars(t, self.shared.epoch_unix);
            let present = st.model.present();
            let tpl = match &st.template {
                Some((mask, tpl)) if *mask == present => tpl.clone(),
                _ => {
                    // A series appeared (or a restart removed some): look up or compile, rare.
                    let tpl = self
                        .identity
                        .template(st.model.specs(), st.model.layout(), present);
                    st.template = Some((present, tpl.clone()));
                    tpl
                }
            };
            (tpl, st.model.values().to_vec())
        };
        tpl.render(&snapshot)
    }
}

struct Istiod {
    shared: Arc<Shared>,
    cohort: Cohort,
    pod: String,
    info: IstiodInfo,
    addr: SocketAddr,
    state: Mutex<IstiodModel>,
}

impl Istiod {
    fn params(&self, fault: IstiodFault) -> IstiodParams {
        IstiodParams {
            proxies: self.shared.cfg.revision(self.cohort).connected(),
            fault,
        }
    }

    fn scrape(&self) -> Vec<u8> {
        let fault = *lock(&self.shared.cohorts[self.cohort.idx()].istiod_fault);
        let p = self.params(fault);
        let mut out = Vec::new();
        let mut m = lock(&self.state);
        let t = self.shared.now();
        m.advance(t, &p);
        // ~18 KB, written directly; istiods are few, so rendering under the lock is fine.
        page::render_istiod(&m, &self.info, t, self.shared.epoch_unix, &mut out);
        out
    }
}

/// A running simulated mesh; servers stop when the `shutdown` token passed to
/// [`start`](SimMesh::start) is cancelled.
pub struct SimMesh {
    shared: Arc<Shared>,
    pods: Vec<Arc<Pod>>,
    istiods: Vec<Arc<Istiod>>,
    tracker: TaskTracker,
}

/// Kubernetes-style random name part from the alphabet Kubernetes uses for generated names.
fn k8s_suffix(seed: u64, len: usize) -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = mix64(seed);
    (0..len)
        .map(|_| {
            let c = ALPHA[(x % ALPHA.len() as u64) as usize] as char;
            x = mix64(x);
            c
        })
        .collect()
}

impl SimMesh {
    /// Bind one listener per sidecar (serving GET /stats/prometheus, like the istio-agent merged
    /// port 15020) and one per istiod revision (GET /metrics, like :15014) on `bind` with port 0,
    /// and serve until `shutdown` is cancelled.
    pub async fn start(
        cfg: SimConfig,
        bind: IpAddr,
        shutdown: CancellationToken,
    ) -> io::Result<SimMesh> {
        cfg.validate()?;
        let epoch_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            start: Instant::now(),
            epoch_unix,
            cohorts: Default::default(),
            moved: Mutex::new(HashSet::new()),
        });
        let tracker = TaskTracker::new();
        let mut names = HashSet::new();
        let mut identities: HashMap<SidecarIdentity, Arc<IdentityEntry>> = HashMap::new();
        let mut pods = Vec::new();
        let mut istiods = Vec::new();
        let specs = default_mix(cfg.histogram_tags);
        let n_ns = cfg.namespaces.len();
        let services = (APPS.len().min(cfg.baseline.pods.max(cfg.canary.pods)) * n_ns + 1) as u64;

        for cohort in [Cohort::Baseline, Cohort::Canary] {
            let rev = cfg.revision(cohort).clone();
            let cseed = mix64(cfg.seed ^ (cohort.idx() as u64 + 1).wrapping_mul(0xA5A5_5A5A));
            let params = shared.current_params(cohort);
            for j in 0..rev.pods {
                let ns = &cfg.namespaces[j % n_ns];
                let app_i = (j / n_ns) % APPS.len();
                let app = APPS[app_i];
                let rs = k8s_suffix(cseed ^ mix64(app_i as u64 * 31 + (j % n_ns) as u64), 9);
                let mut salt = 0u64;
                let pod_name = loop {
                    let name = format!(
                        "{app}-v1-{rs}-{}",
                        k8s_suffix(mix64(cseed ^ 0x90D) ^ mix64(j as u64) ^ salt, 5)
                    );
                    if names.insert(name.clone()) {
                        break name;
                    }
                    salt += 1;
                };
                let seed = mix64(cseed ^ mix64(j as u64 + 7));
                let identity = SidecarIdentity {
                    cluster: cfg.cluster.clone(),
                    proxy_version: rev.sidecar_version().to_owned(),
                    me: Workload::app(app, ns),
                    inbound_peers: vec![Workload::ingress_gateway(), Workload::app("frontend", ns)],
                    outbound_peers: vec![Workload::app(APPS[(app_i + 1) % APPS.len()], ns)],
                };
                let entry = identities
                    .entry(identity.clone())
                    .or_insert_with(|| {
                        Arc::new(IdentityEntry {
                            labels: PodLabels::new(&identity, &specs, cfg.histogram_tags),
                            identity,
                            templates: Mutex::new(HashMap::new()),
                        })
                    })
                    .clone();
                let start_t = -cfg.warmup_s - (seed % 30_000) as f64 / 1000.0;
                let mut model = SidecarModel::new(specs.clone(), seed, start_t);
                // Warm-up: the traffic before the mesh started, with the fault-free parameters.
                let a = model.advance(0.0, &shared.pod_params(cohort, ns, params));
                shared.add_truth(cohort, a);
                let listener = tokio::net::TcpListener::bind(SocketAddr::new(bind, 0)).await?;
                let addr = listener.local_addr()?;
                let pod = Arc::new(Pod {
                    shared: shared.clone(),
                    cohort,
                    namespace: ns.clone(),
                    name: pod_name,
                    identity: entry,
                    addr,
                    state: Mutex::new(PodState {
                        model,
                        template: None,
                    }),
                });
                let app = Router::new()
                    .route(PROXY_PATH, get(proxy_handler))
                    .with_state(pod.clone());
                spawn_server(&tracker, listener, app, shutdown.clone());
                pods.push(pod);
            }
            if !rev.istiod {
                continue;
            }
            // The istiod of this revision.
            let iseed = mix64(cseed ^ 0x0015_710D);
            let pod = format!(
                "istiod-{}-{}-{}",
                rev.revision,
                k8s_suffix(iseed, 10),
                k8s_suffix(iseed ^ 1, 5)
            );
            let start_t = -cfg.warmup_s - 600.0 - (iseed % 3_600_000) as f64 / 1000.0;
            let mut model = IstiodModel::new(iseed, start_t, rev.connected());
            model.advance(
                0.0,
                &IstiodParams {
                    proxies: rev.connected(),
                    fault: IstiodFault::default(),
                },
            );
            let listener = tokio::net::TcpListener::bind(SocketAddr::new(bind, 0)).await?;
            let addr = listener.local_addr()?;
            let proxies_by_version = if rev.connected() > 0 {
                vec![(rev.sidecar_version().to_owned(), rev.connected())]
            } else {
                vec![]
            };
            let istiod = Arc::new(Istiod {
                shared: shared.clone(),
                cohort,
                pod,
                info: IstiodInfo {
                    version: rev.version.clone(),
                    proxies_by_version,
                    services,
                    seed: iseed,
                },
                addr,
                state: Mutex::new(model),
            });
            let app = Router::new()
                .route(ISTIOD_PATH, get(istiod_handler))
                .with_state(istiod.clone());
            spawn_server(&tracker, listener, app, shutdown.clone());
            istiods.push(istiod);
        }
        tracker.close();
        tracing::debug!(
            pods = pods.len(),
            istiods = istiods.len(),
            "simulated mesh serving"
        );
        Ok(SimMesh {
            shared,
            pods,
            istiods,
            tracker,
        })
    }

    /// Target URLs with labels: role ("proxy" | "istiod"), namespace, pod, revision, cluster,
    /// version (proxies: their sidecar version; istiod: its version). Proxies first, in cohort
    /// order (baseline then canary), then the istiods.
    pub fn targets(&self) -> Vec<SimTarget> {
        self.target_list()
            .into_iter()
            .map(|(addr, path, labels)| SimTarget {
                url: format!("http://{addr}{path}"),
                labels,
            })
            .collect()
    }

    fn target_list(&self) -> Vec<(SocketAddr, &'static str, BTreeMap<String, String>)> {
        let cfg = &self.shared.cfg;
        let labels = |role: &str, ns: &str, pod: &str, c: Cohort| {
            let rev = cfg.revision(c);
            BTreeMap::from([
                ("role".to_string(), role.to_string()),
                ("namespace".to_string(), ns.to_string()),
                ("pod".to_string(), pod.to_string()),
                ("revision".to_string(), rev.revision.clone()),
                ("cluster".to_string(), cfg.cluster.clone()),
                (
                    "version".to_string(),
                    if role == "proxy" {
                        rev.sidecar_version().to_owned()
                    } else {
                        rev.version.clone()
                    },
                ),
            ])
        };
        let mut v: Vec<_> = self
            .pods
            .iter()
            .map(|p| {
                (
                    p.addr,
                    PROXY_PATH,
                    labels("proxy", &p.namespace, &p.name, p.cohort),
                )
            })
            .collect();
        v.extend(self.istiods.iter().map(|i| {
            (
                i.addr,
                ISTIOD_PATH,
                labels("istiod", "istio-system", &i.pod, i.cohort),
            )
        }));
        v
    }

    /// Change the fault of one cohort's pods. Traffic up to now is first generated with the old
    /// fault, so the change takes effect exactly now despite the lazy advancing.
    pub fn set_fault(&self, cohort: Cohort, fault: Fault) {
        let st = &self.shared.cohorts[cohort.idx()];
        let mut f = lock(&st.fault);
        let p = self.shared.params(cohort, *f, *lock(&st.istiod_fault));
        for pod in self.pods.iter().filter(|p| p.cohort == cohort) {
            pod.advance_locked(&mut lock(&pod.state), &p);
        }
        *f = fault;
    }

    /// The current fault of a cohort.
    pub fn fault(&self, cohort: Cohort) -> Fault {
        *lock(&self.shared.cohorts[cohort.idx()].fault)
    }

    /// Change the control-plane fault of one revision's istiod (and the xDS rejects its proxies see).
    pub fn set_istiod_fault(&self, cohort: Cohort, fault: IstiodFault) {
        let st = &self.shared.cohorts[cohort.idx()];
        // Read the pod fault before taking the istiod-fault lock: set_fault nests them the
        // other way round (fault, then istiod_fault), so nesting here could deadlock.
        let pod_fault = *lock(&st.fault);
        let mut f = lock(&st.istiod_fault);
        let old = *f;
        let p = self.shared.params(cohort, pod_fault, old);
        for pod in self.pods.iter().filter(|p| p.cohort == cohort) {
            pod.advance_locked(&mut lock(&pod.state), &p);
        }
        for i in self.istiods.iter().filter(|i| i.cohort == cohort) {
            let ip = i.params(old);
            lock(&i.state).advance(self.shared.now(), &ip);
        }
        *f = fault;
    }

    /// The current control-plane fault of a cohort.
    pub fn istiod_fault(&self, cohort: Cohort) -> IstiodFault {
        *lock(&self.shared.cohorts[cohort.idx()].istiod_fault)
    }

    /// Prometheus file_sd JSON: one group per target with `__metrics_path__` and the target labels.
    pub fn file_sd_json(&self) -> String {
        let groups: Vec<serde_json::Value> = self
            .target_list()
            .into_iter()
            .map(|(addr, path, mut labels)| {
                labels.insert("__metrics_path__".to_string(), path.to_string());
                serde_json::json!({ "targets": [addr.to_string()], "labels": labels })
            })
            .collect();
        serde_json::to_string_pretty(&groups).expect("plain JSON values")
    }

    /// Ground truth for tests: cumulative requests and 5xx per cohort generated so far (not reset
    /// by restarts). Call [`advance_all`](Self::advance_all) first to include traffic up to now.
    pub fn truth(&self, cohort: Cohort) -> Truth {
        let st = &self.shared.cohorts[cohort.idx()];
        Truth {
            requests: st.requests.load(Ordering::Relaxed),
            errors_5xx: st.errors.load(Ordering::Relaxed),
            outbound_requests: st.out_requests.load(Ordering::Relaxed),
            outbound_5xx: st.out_errors.load(Ordering::Relaxed),
            restarts: st.restarts.load(Ordering::Relaxed),
        }
    }

    /// Staged meshes: move a namespace's traffic to the canary revision's pods now (its baseline
    /// pods go idle), as relabelling the namespace and restarting its workloads does. Traffic up
    /// to now is generated first, so the move takes effect exactly now.
    pub fn move_namespace(&self, namespace: &str) {
        self.advance_all();
        lock(&self.shared.moved).insert(namespace.to_string());
    }

    /// Staged meshes: the reverse of [`move_namespace`](Self::move_namespace), as a rollback
    /// does (its labels restored, its workloads restarted onto the old revision): the namespace's
    /// traffic goes back to the baseline revision's pods now, its canary pods go idle.
    pub fn move_namespace_back(&self, namespace: &str) {
        self.advance_all();
        lock(&self.shared.moved).remove(namespace);
    }

    /// Staged meshes: whether the namespace's traffic is on the canary revision's pods.
    pub fn is_moved(&self, namespace: &str) -> bool {
        lock(&self.shared.moved).contains(namespace)
    }

    /// Generate every pod's traffic up to now without scraping it.
    pub fn advance_all(&self) {
        for pod in &self.pods {
            let p = self.shared.current_params(pod.cohort);
            pod.advance_locked(&mut lock(&pod.state), &p);
        }
    }

    /// Render target `i` (index into [`targets`](Self::targets)) in-process, exactly as a scrape
    /// would (advances its traffic); for benchmarks that want no sockets. `None` if out of range.
    pub fn render(&self, i: usize) -> Option<Vec<u8>> {
        if let Some(p) = self.pods.get(i) {
            return Some(p.scrape());
        }
        self.istiods.get(i - self.pods.len()).map(|s| s.scrape())
    }

    /// The configuration the mesh runs with.
    pub fn config(&self) -> &SimConfig {
        &self.shared.cfg
    }

    /// Wait until every server has stopped (after the shutdown token was cancelled and open
    /// connections finished).
    pub async fn stopped(&self) {
        self.tracker.wait().await;
    }
}

fn spawn_server(
    tracker: &TaskTracker,
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
) {
    tracker.spawn(async move {
        let addr = listener.local_addr().ok();
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            tracing::warn!(?addr, error = %e, "simulated endpoint failed");
        }
    });
}

async fn proxy_handler(State(pod): State<Arc<Pod>>, headers: HeaderMap) -> Response {
    respond(pod.scrape(), &headers)
}

async fn istiod_handler(State(istiod): State<Arc<Istiod>>, headers: HeaderMap) -> Response {
    respond(istiod.scrape(), &headers)
}

/// Whether `Accept-Encoding` allows gzip (a `gzip` or `*` coding with q > 0).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',').any(|part| {
                let mut it = part.split(';');
                let coding = it.next().unwrap_or("").trim();
                let q = it
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f64>().ok())
                    .unwrap_or(1.0);
                (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
            })
        })
}

fn respond(body: Vec<u8>, headers: &HeaderMap) -> Response {
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    let body = if accepts_gzip(headers) {
        // Level 1: pages are very repetitive, so it still compresses ~10x at a fraction of the CPU.
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 8),
            flate2::Compression::fast(),
        );
        match io::Write::write_all(&mut enc, &body).and_then(|_| enc.finish()) {
            Ok(gz) => {
                builder =
                    builder.header(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                gz
            }
            Err(_) => body,
        }
    } else {
        body
    };
    builder
        .header(header::VARY, HeaderValue::from_static("Accept-Encoding"))
        .body(Body::from(body))
        .expect("static headers are valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn localhost() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    /// `name{labels} value` lines of a page whose name is `name`, as (labels, value).
    fn samples<'a>(text: &'a str, name: &str) -> Vec<(&'a str, f64)> {
        let prefix = format!("{name}{{");
        text.lines()
            .filter(|l| l.starts_with(&prefix))
            .map(|l| {
                let (series, v) = l.rsplit_once(' ').unwrap();
                (&series[prefix.len()..series.len() - 1], v.parse().unwrap())
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_staged_namespace_moves_to_the_canary_and_back() {
        let token = CancellationToken::new();
        let mut cfg = SimConfig::small(3, 1, 10_000.0);
        cfg.staged = true;
        let mesh = SimMesh::start(cfg, localhost(), token.clone())
            .await
            .unwrap();
        let requests = |c: Cohort| {
            mesh.advance_all();
            mesh.truth(c).requests
        };
        let pause = || std::thread::sleep(std::time::Duration::from_millis(50));
        let (b0, c0) = (requests(Cohort::Baseline), requests(Cohort::Canary));
        pause();
        assert!(requests(Cohort::Baseline) > b0);
        assert_eq!(requests(Cohort::Canary), c0, "canary idle before the move");
        mesh.move_namespace("shop");
        assert!(mesh.is_moved("shop"));
        let (b1, c1) = (requests(Cohort::Baseline), requests(Cohort::Canary));
        pause();
        assert_eq!(
            requests(Cohort::Baseline),
            b1,
            "baseline idle after the move"
        );
        assert!(requests(Cohort::Canary) > c1);
        mesh.move_namespace_back("shop");
        assert!(!mesh.is_moved("shop"));
        let (b2, c2) = (requests(Cohort::Baseline), requests(Cohort::Canary));
        pause();
        assert!(requests(Cohort::Baseline) > b2, "back on the baseline");
        assert_eq!(requests(Cohort::Canary), c2, "canary idle again");
        token.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_every_target_over_real_sockets() {
        let token = CancellationToken::new();
        let mesh = SimMesh::start(SimConfig::default(), localhost(), token.clone())
            .await
            .unwrap();
        let targets = mesh.targets();
        assert_eq!(targets.len(), 3 + 3 + 2);
        let client = reqwest::Client::builder().gzip(true).build().unwrap();
        let mut first_pages = Vec::new();
        for t in &targets {
            let resp = client.get(&t.url).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{}", t.url);
            assert_eq!(resp.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
            let body = resp.text().await.unwrap();
            match t.labels["role"].as_str() {
                "proxy" => {
                    assert!(body.contains("istio_requests_total{"), "{}", t.url);
                    let want = format!(
                        "istio_build{{component=\"proxy\",tag=\"{}\"}} 1",
                        t.labels["version"]
                    );
                    assert!(body.contains(&want), "{}: {want}", t.url);
                    if t.labels["revision"] == "1-25-0" {
                        assert!(body.contains("istio_build{component=\"proxy\",tag=\"1.25.0\"}"));
                    }
                    assert!(
                        body.contains(&format!("destination_cluster=\"{}\"", t.labels["cluster"]))
                    );
                }
                "istiod" => {
                    assert!(body.contains(&format!(
                        "pilot_xds{{version=\"{}\"}} 3\n",
                        t.labels["version"]
                    )));
                    assert!(body.contains("pilot_proxy_convergence_time_bucket{le=\"0.1\"} "));
                    assert!(body.contains("pilot_proxy_convergence_time_bucket{le=\"+Inf\"} "));
                    assert_eq!(t.labels["namespace"], "istio-system");
                    assert!(
                        t.labels["pod"].starts_with(&format!("istiod-{}-", t.labels["revision"]))
                    );
                }
                r => panic!("role {r}"),
            }
            first_pages.push(body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (t, before) in targets.iter().zip(&first_pages) {
            let after = client
                .get(&t.url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let name = if t.labels["role"] == "proxy" {
                "istio_requests_total"
            } else {
                "pilot_xds_pushes"
            };
            let a: BTreeMap<_, _> = samples(before, name).into_iter().collect();
            let b: BTreeMap<_, _> = samples(&after, name).into_iter().collect();
            assert!(!a.is_empty());
            for (k, v) in &a {
                assert!(
                    b.get(k).copied().unwrap_or(f64::NEG_INFINITY) >= *v,
                    "{name}{{{k}}} decreased"
                );
            }
            if t.labels["role"] == "proxy" {
                let sum = |m: &BTreeMap<&str, f64>| m.values().sum::<f64>();
                assert!(sum(&b) > sum(&a), "200 ms at 150 rps adds requests");
            }
        }

        // Raw gzip: the header is set and the body inflates to a page.
        let raw = reqwest::Client::builder().gzip(false).build().unwrap();
        let resp = raw
            .get(&targets[0].url)
            .header("Accept-Encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
        let gz = resp.bytes().await.unwrap();
        let mut text = String::new();
        io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text).unwrap();
        assert!(text.contains("istio_requests_total{") && gz.len() * 5 < text.len());
        let plain = raw.get(&targets[0].url).send().await.unwrap();
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        assert!(
            raw.get(targets[0].url.replace(PROXY_PATH, "/nope"))
                .send()
                .await
                .unwrap()
                .status()
                == 404
        );
        drop((client, raw));

        // Cancelling stops every listener.
        token.cancel();
        tokio::time::timeout(Duration::from_secs(10), mesh.stopped())
            .await
            .expect("servers stop");
        for t in &targets {
            let addr = t
                .url
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap()
                .to_string();
            let err = tokio::net::TcpStream::connect(&addr)
                .await
                .expect_err("listener closed");
            assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{addr}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lazy_time_faults_and_truth_follow_the_paused_clock() {
        let cfg = SimConfig {
            warmup_s: 0.0,
            ..SimConfig::default()
        };
        let mesh = SimMesh::start(cfg, localhost(), CancellationToken::new())
            .await
            .unwrap();
        let t0 = mesh.truth(Cohort::Canary);
        // Nothing happens while no time passes (start jitter aside, which is warm-up).
        mesh.advance_all();
        assert_eq!(mesh.truth(Cohort::Canary), t0);
        mesh.set_fault(
            Cohort::Canary,
            Fault {
                error_rate: Some(0.05),
                latency_factor: 3.0,
            },
        );
        tokio::time::advance(Duration::from_secs(600)).await;
        mesh.advance_all();
        let (b, c) = (mesh.truth(Cohort::Baseline), mesh.truth(Cohort::Canary));
        let dc = c.requests - t0.requests;
        assert!(
            (dc as f64 - 3.0 * 100.0 * 600.0).abs() < 5.0 * 424.0,
            "canary requests {dc}"
        );
        let share = (c.errors_5xx - t0.errors_5xx) as f64 / dc as f64;
        assert!((share - 0.05).abs() < 0.005, "canary 5xx share {share}");
        assert!((b.errors_5xx as f64) < b.requests as f64 * 0.003);
        // The page of a canary pod reflects the truth: its 5xx counters sum to at least the fault's.
        let page = String::from_utf8(mesh.render(3).unwrap()).unwrap();
        let errs: f64 = samples(&page, "istio_requests_total")
            .iter()
            .filter(|(l, _)| {
                l.contains("response_code=\"5") && l.contains("reporter=\"destination\"")
            })
            .map(|x| x.1)
            .sum();
        assert!(errs > 0.04 * 100.0 * 600.0, "page 5xx {errs}");
        // Latency factor 3: mean duration ~3x the baseline's.
        let mean = |i: usize| {
            let p = String::from_utf8(mesh.render(i).unwrap()).unwrap();
            let s = samples(&p, "istio_request_duration_milliseconds_sum");
            let n = samples(&p, "istio_request_duration_milliseconds_count");
            let inbound = |v: &Vec<(&str, f64)>| {
                v.iter()
                    .find(|x| x.0.contains("reporter=\"destination\""))
                    .unwrap()
                    .1
            };
            inbound(&s) / inbound(&n)
        };
        let ratio = mean(3) / mean(0);
        assert!(
            ratio > 2.0 && ratio < 3.5,
            "latency ratio {ratio} (5xx are faster, so < 3)"
        );
        // Uptime follows the paused clock.
        assert!(
            page.contains("envoy_server_uptime{} 6"),
            "600 s + start jitter"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_reset_pod_counters_but_not_the_truth() {
        let cfg = SimConfig {
            restart_mean_interval_s: Some(100.0),
            warmup_s: 0.0,
            ..SimConfig::default()
        };
        let mesh = SimMesh::start(cfg, localhost(), CancellationToken::new())
            .await
            .unwrap();
        let total = |i: usize| -> (f64, f64) {
            let p = String::from_utf8(mesh.render(i).unwrap()).unwrap();
            let req = samples(&p, "istio_requests_total")
                .iter()
                .map(|x| x.1)
                .sum();
            let start = p
                .lines()
                .find_map(|l| l.strip_prefix("istio_agent_process_start_time_seconds "))
                .unwrap()
                .parse()
                .unwrap();
            (req, start)
        };
        let (mut decreases, mut prev) = (0, total(0));
        for _ in 0..40 {
            tokio::time::advance(Duration::from_secs(30)).await;
            let cur = total(0);
            if cur.0 < prev.0 {
                decreases += 1;
                assert!(
                    cur.1 > prev.1,
                    "a reset comes with a new process start time"
                );
            }
            prev = cur;
        }
        let truth = mesh.truth(Cohort::Baseline);
        assert!(
            truth.restarts > 0 && decreases > 0,
            "{truth:?}, {decreases}"
        );
        assert!(
            truth.requests as f64 > prev.0,
            "truth keeps what restarts dropped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn istiod_fault_shows_rejects_on_istiod_and_proxies() {
        let mesh = SimMesh::start(SimConfig::default(), localhost(), CancellationToken::new())
            .await
            .unwrap();
        let canary_istiod = mesh
            .targets()
            .iter()
            .position(|t| t.labels["role"] == "istiod" && t.labels["revision"] == "1-25-0")
            .unwrap();
        let page = String::from_utf8(mesh.render(canary_istiod).unwrap()).unwrap();
        assert!(!page.contains("pilot_total_xds_rejects"));
        mesh.set_istiod_fault(
            Cohort::Canary,
            IstiodFault {
                rejects_per_min: 30.0,
                convergence_factor: 5.0,
                ..Default::default()
            },
        );
        assert_eq!(mesh.istiod_fault(Cohort::Canary).rejects_per_min, 30.0);
        tokio::time::advance(Duration::from_secs(300)).await;
        let page = String::from_utf8(mesh.render(canary_istiod).unwrap()).unwrap();
        let rejects: f64 = samples(&page, "pilot_total_xds_rejects")
            .iter()
            .map(|x| x.1)
            .sum();
        assert!((rejects - 150.0).abs() < 60.0, "rejects {rejects}");
        assert!(page.contains("pilot_xds_write_timeout "));
        // Proxies of the canary see rejected CDS/LDS updates; baseline proxies don't.
        let rejected = |i: usize| {
            let p = String::from_utf8(mesh.render(i).unwrap()).unwrap();
            [
                "envoy_cluster_manager_cds_update_rejected{} ",
                "envoy_listener_manager_lds_update_rejected{} ",
            ]
            .iter()
            .map(|k| {
                p.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum::<u64>()
        };
        let canary: u64 = (3..6).map(rejected).sum();
        assert!(canary > 80, "canary proxies saw {canary}");
        assert_eq!((0..3).map(rejected).sum::<u64>(), 0);
    }

    #[tokio::test]
    async fn file_sd_and_targets_agree() {
        let cfg = SimConfig {
            namespaces: vec!["shop".into(), "web".into()],
            baseline: RevisionSpec::new("1-24-2", "1.24.2", 5),
            ..SimConfig::default()
        };
        let mesh = SimMesh::start(cfg, localhost(), CancellationToken::new())
            .await
            .unwrap();
        let targets = mesh.targets();
        let sd: Vec<serde_json::Value> = serde_json::from_str(&mesh.file_sd_json()).unwrap();
        assert_eq!(sd.len(), targets.len());
        let mut pods = HashSet::new();
        for (g, t) in sd.iter().zip(&targets) {
            let hostport = g["targets"][0].as_str().unwrap();
            let path = g["labels"]["__metrics_path__"].as_str().unwrap();
            assert_eq!(format!("http://{hostport}{path}"), t.url);
            for (k, v) in &t.labels {
                assert_eq!(g["labels"][k], *v);
                assert!(k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'));
            }
            assert!(pods.insert(t.labels["pod"].clone()), "pod names are unique");
        }
        let ns: HashSet<_> = targets
            .iter()
            .filter(|t| t.labels["role"] == "proxy")
            .map(|t| t.labels["namespace"].clone())
            .collect();
        assert_eq!(ns.len(), 2, "pods spread over both namespaces");
        let proxies = targets
            .iter()
            .filter(|t| t.labels["role"] == "proxy")
            .count();
        assert_eq!(proxies, 8);
    }

    #[test]
    fn config_validation_and_serde_defaults() {
        assert!(SimConfig::default().validate().is_ok());
        let bad = SimConfig {
            error_rate: 1.5,
            ..SimConfig::default()
        };
        assert!(matches!(bad.validate(), Err(SimError::InvalidConfig(_))));
        let bad = SimConfig {
            namespaces: vec![],
            ..SimConfig::default()
        };
        assert!(bad.validate().is_err());
        // A partial JSON config fills in the defaults.
        let cfg: SimConfig =
            serde_json::from_str(r#"{"rps_per_pod": 5, "histogram_tags": "full"}"#).unwrap();
        assert_eq!(cfg.rps_per_pod, 5.0);
        assert_eq!(cfg.histogram_tags, HistogramTags::Full);
        assert_eq!(cfg.canary.version, "1.25.0");
        let f: Fault =
            serde_json::from_str(r#"{"error_rate": 0.01, "latency_factor": 0}"#).unwrap();
        assert_eq!(f.error_rate, Some(0.01));
    }

    #[tokio::test(start_paused = true)]
    #[ignore = "writes sample pages: SIM_DUMP_DIR=/tmp/pages cargo test -- --ignored dump_pages"]
    async fn dump_pages() {
        let dir =
            std::env::var("SIM_DUMP_DIR").unwrap_or_else(|_| "/tmp/meshgate-sim-pages".into());
        std::fs::create_dir_all(&dir).unwrap();
        let mesh = SimMesh::start(SimConfig::default(), localhost(), CancellationToken::new())
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(900)).await;
        for (i, t) in mesh.targets().iter().enumerate() {
            let name = format!("{dir}/{}-{}.prom", t.labels["role"], t.labels["pod"]);
            std::fs::write(&name, mesh.render(i).unwrap()).unwrap();
        }
        std::fs::write(format!("{dir}/file_sd.json"), mesh.file_sd_json()).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "scale: cargo test --release -- --ignored --nocapture scale_two_thousand_pods"]
    async fn scale_two_thousand_pods() {
        let pods = 1000;
        let cfg = SimConfig {
            namespaces: (0..10).map(|i| format!("ns-{i}")).collect(),
            baseline: RevisionSpec::new("1-24-2", "1.24.2", pods),
            canary: RevisionSpec::new("1-25-0", "1.25.0", pods),
            ..SimConfig::default()
        };
        let token = CancellationToken::new();
        let t0 = std::time::Instant::now();
        let mesh = SimMesh::start(cfg, localhost(), token.clone())
            .await
            .unwrap();
        let start = t0.elapsed();
        let n = 2 * pods;
        // Two in-process rounds: the first compiles templates, the second is the steady state.
        let mut bytes = 0;
        for round in 0..2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let t0 = std::time::Instant::now();
            bytes = (0..n).map(|i| mesh.render(i).unwrap().len()).sum::<usize>();
            let per = t0.elapsed() / n as u32;
            println!(
                "round {round}: {n} pages, {} B avg, {per:?}/page incl. advance + snapshot",
                bytes / n
            );
        }
        // HTTP with gzip over 400 targets, 16 at a time.
        let client = reqwest::Client::builder()
            .gzip(true)
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        let urls: Vec<String> = mesh
            .targets()
            .into_iter()
            .take(400)
            .map(|t| t.url)
            .collect();
        let t0 = std::time::Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for chunk in urls.chunks(25) {
            let (client, chunk) = (client.clone(), chunk.to_vec());
            set.spawn(async move {
                for u in chunk {
                    let r = client.get(&u).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap();
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        println!(
            "startup {start:?}; 400 gzip HTTP scrapes in {:?}; {bytes} B rendered",
            t0.elapsed()
        );
        drop(client);
        token.cancel();
        tokio::time::timeout(Duration::from_secs(30), mesh.stopped())
            .await
            .unwrap();
    }

    #[test]
    fn accept_encoding_parsing() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            accepts_gzip(&m)
        };
        assert!(h("gzip"));
        assert!(h("br, GZIP;q=0.5"));
        assert!(h("*"));
        assert!(!h("gzip;q=0"));
        assert!(!h("identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
