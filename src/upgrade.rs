//! `meshgate upgrade`: the autopilot that executes a `[plan]` wave by wave through the Kubernetes
//! API (relabel, restart, wait, gate on the daemon, roll back on NO-GO). Dry run by default.
//!
//! # Layout
//!
//! - `kube`: the Kubernetes client (the conventions of Kubernetes discovery) and its errors.
//! - this file: the options, the run state kept in the `--state` file, and the steps.
//!
//! A run: RBAC pre-checks (one SelfSubjectAccessReview per verb and resource), the plan's
//! namespaces exist, their PodDisruptionBudgets that allow no disruption warned about, both
//! revisions' istiod scraped and up on the daemon with no skew guard finding about them, the
//! `coordination.k8s.io` Lease taken (and renewed while running); then per
//! wave: its analysis created on the daemon while the namespaces are still on the old revision
//! and the wave's `pre_move` waited from its creation (the before/after design needs their rates
//! before the move), each namespace's Istio labels recorded and set to `istio.io/rev=<new>`
//! (dropping `istio-injection`), its Deployments, StatefulSets and DaemonSets restarted
//! (`kubectl.kubernetes.io/restartedAt`, as `kubectl rollout restart`), every rollout waited for
//! (never forced), the pods' sidecars waited for on the new revision (`sidecar.istio.io/status`),
//! the verdict followed. GO: the next wave. NO-GO: the recorded labels restored, the workloads
//! restarted and waited for, their sidecars back off the new revision, exit 1.
//! INCONCLUSIVE: the run stops paused, exit 2. The state file is written after every action, so
//! a second run with it continues where the first stopped and never relabels twice.
//! `resume` and `abort` are a person's decision on a paused (or stopped) run: the wave counts as
//! GO and the run goes on, or it is rolled back as on NO-GO and the run ends.

mod kube;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use meshgate_core::api::{NamespaceLabels, VerdictDoc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::judge::Verdict;
use crate::plan::{Plan, Wave};
use kube::Kube;
pub use kube::KubeError;

/// Every wave GO: the upgrade is done (or, dry run: every call printed).
pub const EXIT_DONE: u8 = 0;
/// A wave was NO-GO: its namespaces were restored to their recorded labels; the run stopped.
pub const EXIT_ROLLED_BACK: u8 = 1;
/// A wave was INCONCLUSIVE (or its verdict still PENDING after `--verdict-timeout`): paused.
pub const EXIT_PAUSED: u8 = 2;
/// The Lease is held by another holder that has not expired (or was lost while running).
pub const EXIT_LEASE_HELD: u8 = 3;
/// A pre-check failed: a namespace of the plan is missing, or the RBAC refuses a verb.
pub const EXIT_PRECHECK: u8 = 4;
/// The API server or the daemon failed, or a rollout did not finish in `--rollout-timeout`.
pub const EXIT_FAILED: u8 = 5;
/// Bad usage: the configuration, the plan or the state file.
pub const EXIT_USAGE: u8 = 64;

const REV: &str = "istio.io/rev";
const INJECTION: &str = "istio-injection";
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// The annotation Istio's injector writes into every pod it injects; its `revision` is the
/// injecting control plane's.
const SIDECAR_STATUS: &str = "sidecar.istio.io/status";
const MERGE: &str = "application/merge-patch+json";
/// At most one progress line on stderr this often while a verdict or a pre-check is awaited
/// (and one at the start).
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
const STRATEGIC: &str = "application/strategic-merge-patch+json";

/// What `meshgate upgrade` does: a run, or a person's decision on a stopped one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UpgradeAction {
    /// Run the plan (or continue it from `--state`).
    #[default]
    Run,
    /// A person decides that the paused wave counts as GO (after its soak, the next wave); a
    /// wave stopped mid-way (a rollout timeout, a lost Lease) is continued.
    Resume,
    /// A person decides against the paused or stopped wave: it is rolled back exactly as on
    /// NO-GO (its recorded labels restored, its workloads restarted and waited for); the run ends.
    Abort,
}

/// What `meshgate upgrade` was asked (also its command line).
#[derive(Clone, Debug, clap::Args)]
pub struct UpgradeOptions {
    /// `run` (the default), or a person's decision on the run of `--state`: `resume`, `abort`.
    #[arg(value_enum, default_value_t = UpgradeAction::Run)]
    pub action: UpgradeAction,
    /// Who decides (`resume`, `abort`); recorded in the state file. Default: $USER.
    #[arg(long)]
    pub by: Option<String>,
    /// Why (`resume`, `abort`); recorded in the state file.
    #[arg(long)]
    pub why: Option<String>,
    /// Configuration file (TOML): its `[plan]` and `[discovery.kubernetes]` (API server, token
    /// file, CA) are used.
    #[arg(short, long, env = "MESHGATE_CONFIG")]
    pub config: PathBuf,
    /// The meshgate daemon that judges each wave.
    #[arg(long, env = "MESHGATE_SERVER", default_value = "http://127.0.0.1:9400")]
    pub server: String,
    /// Act. Without it nothing is written: every call is printed, in order.
    #[arg(long)]
    pub execute: bool,
    /// The run's state (wave, recorded labels, actions done), JSON; a second run with the same
    /// file continues where the first stopped.
    #[arg(long, default_value = "meshgate-upgrade.json")]
    pub state: PathBuf,
    /// Namespace of the Lease that keeps two autopilots from driving one mesh.
    #[arg(long, default_value = "meshgate")]
    pub lease_namespace: String,
    /// Name of the Lease.
    #[arg(long, default_value = "meshgate-upgrade")]
    pub lease_name: String,
    /// `leaseDurationSeconds` of the Lease; it is renewed every third of it.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// How long one wave's rollouts may take before the run stops (nothing is forced).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub rollout_timeout: Duration,
    /// How long a wave's verdict may stay PENDING before the run stops paused.
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    pub verdict_timeout: Duration,
    /// How long the istiod pre-check waits for both revisions' istiod to be scraped and up and
    /// for the daemon's version skew guard to have nothing against them, before the run is
    /// refused (exit 4).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub precheck_timeout: Duration,
    /// Time between two looks at a rollout or a verdict.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub poll: Duration,
}

/// Why a run stopped before the end: its exit code and what to tell.
#[derive(Debug)]
struct Stop {
    code: u8,
    message: String,
}

impl Stop {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Stop {
            code,
            message: message.into(),
        }
    }
}

impl From<KubeError> for Stop {
    fn from(e: KubeError) -> Self {
        Stop::new(EXIT_FAILED, format!("the API server: {e}"))
    }
}

/// A write that failed: the API server's answer, or not sent since the Lease was lost.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    LeaseLost(kube::LeaseLost),
}

impl WriteError {
    fn code(&self) -> Option<u16> {
        match self {
            WriteError::Kube(e) => e.code(),
            WriteError::LeaseLost(_) => None,
        }
    }
}

impl From<WriteError> for Stop {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Kube(e) => e.into(),
            WriteError::LeaseLost(e) => Stop::new(
                EXIT_LEASE_HELD,
                format!("{e}; the run stops where it is (the state file says where)"),
            ),
        }
    }
}

// === the run state ===

/// The run's state, written to `--state` after every action.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunState {
    /// [`Plan::key`] of the plan it runs (a state of another plan is refused).
    pub plan: String,
    /// The Lease holder identity of this run (kept, so a second run takes its own lease back).
    pub run_id: String,
    /// Each namespace's Istio labels before this run moved it: what a NO-GO restores.
    pub recorded: BTreeMap<String, NamespaceLabels>,
    /// Per wave of the plan, in order.
    pub waves: Vec<WaveState>,
    /// What was done, in order.
    pub actions: Vec<Action>,
}

/// Where one wave stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaveState {
    /// The wave's name.
    pub name: String,
    /// Its phase.
    pub phase: RunPhase,
    /// Namespaces relabelled to the new revision.
    pub relabelled: Vec<String>,
    /// Workloads restarted onto the new revision (`namespace/kind/name`).
    pub restarted: Vec<String>,
    /// The final verdict and its reason.
    pub verdict: Option<String>,
    /// When the wave's analysis started watching (RFC 3339): its pre-move window runs from
    /// then, so a run resumed before the relabel waits only what is left of `pre_move`.
    /// Absent in state files written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_created: Option<String>,
}

/// A wave's phase in the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunPhase {
    /// Nothing done yet.
    #[default]
    NotStarted,
    /// Relabelling, restarting, waiting or judging.
    Moving,
    /// Judged GO: done.
    Go,
    /// Judged NO-GO and restored to its recorded labels.
    RolledBack,
    /// INCONCLUSIVE (or PENDING past `--verdict-timeout`): a person decides.
    Paused,
}

/// One action of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// When (RFC 3339).
    pub at: String,
    /// What, e.g. `relabel namespace shop: istio.io/rev=1-25-0`.
    pub what: String,
    /// Who decided it, for a person's decision (`resume`, `abort`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Why, for a person's decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl RunState {
    fn fresh(plan: &Plan, run_id: String) -> Self {
        RunState {
            plan: plan.key(),
            run_id,
            recorded: BTreeMap::new(),
            waves: plan
                .waves
                .iter()
                .map(|w| WaveState {
                    name: w.name.clone(),
                    ..Default::default()
                })
                .collect(),
            actions: Vec::new(),
        }
    }

    /// Read a state file; `None` when it does not exist. A state of another plan, or of other
    /// waves, is an error naming the file.
    pub fn load(path: &Path, plan: &Plan) -> Result<Option<Self>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("--state {}: {e}", path.display())),
        };
        let s: RunState = serde_json::from_str(&text)
            .map_err(|e| format!("--state {}: not a run state ({e})", path.display()))?;
        if s.plan != plan.key() {
            return Err(format!(
                "--state {}: it is the state of plan {:?}, not of {:?}; give another --state",
                path.display(),
                s.plan,
                plan.key()
            ));
        }
        let names: Vec<&str> = s.waves.iter().map(|w| w.name.as_str()).collect();
        let want: Vec<&str> = plan.waves.iter().map(|w| w.name.as_str()).collect();
        if names != want {
            return Err(format!(
                "--state {}: its waves {names:?} are not the plan's {want:?}",
                path.display()
            ));
        }
        Ok(Some(s))
    }

    /// Write it (a temporary file renamed over the old one: a crash leaves one or the other).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text + "\n")
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("--state {}: {e}", path.display()))
    }
}

// === workloads ===

/// The workload kinds restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

const KINDS: [Kind; 3] = [Kind::Deployment, Kind::StatefulSet, Kind::DaemonSet];

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
            Kind::DaemonSet => "daemonsets",
        }
    }

    fn path(self, ns: &str, name: &str) -> String {
        format!("/apis/apps/v1/namespaces/{ns}/{}/{name}", self.plural())
    }
}

/// A workload: kind, namespace, name.
#[derive(Clone, Debug)]
struct Workload {
    kind: Kind,
    ns: String,
    name: String,
}

impl Workload {
    fn key(&self) -> String {
        format!("{}/{}/{}", self.ns, self.kind.plural(), self.name)
    }
}

/// Whether a workload's rollout is finished, as `kubectl rollout status` judges it; else what
/// is missing.
fn rollout_done(kind: Kind, o: &Value) -> Result<(), String> {
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let generation = n(&o["metadata"]["generation"]);
    let observed = n(&o["status"]["observedGeneration"]);
    if observed < generation {
        return Err(format!(
            "observedGeneration {observed} < generation {generation}"
        ));
    }
    let st = &o["status"];
    let (want, updated, ready, total) = match kind {
        Kind::Deployment | Kind::StatefulSet => (
            o["spec"]["replicas"].as_i64().unwrap_or(1),
            n(&st["updatedReplicas"]),
            n(&st["readyReplicas"]),
            n(&st["replicas"]),
        ),
        Kind::DaemonSet => (
            n(&st["desiredNumberScheduled"]),
            n(&st["updatedNumberScheduled"]),
            n(&st["numberReady"]),
            n(&st["currentNumberScheduled"]),
        ),
    };
    if updated == want && ready == want && total == want {
        Ok(())
    } else {
        Err(format!(
            "updated {updated}/{want}, ready {ready}/{want}, {total} in all"
        ))
    }
}

/// Every SelfSubjectAccessReview the run needs: (verb, group, resource, namespace).
fn access_needed(lease_ns: &str) -> Vec<(&'static str, &'static str, &'static str, String)> {
    let mut out = vec![
        ("get", "", "namespaces", String::new()),
        ("patch", "", "namespaces", String::new()),
        ("list", "", "pods", String::new()),
    ];
    for k in KINDS {
        for verb in ["list", "get", "patch"] {
            out.push((verb, "apps", k.plural(), String::new()));
        }
    }
    out.push(("list", "policy", "poddisruptionbudgets", String::new()));
    for verb in ["get", "create", "update"] {
        out.push((verb, "coordination.k8s.io", "leases", lease_ns.to_owned()));
    }
    out
}

/// `created_at` (Unix seconds) of an analysis document from the daemon, when it says.
async fn created_at(r: reqwest::Response) -> Option<SystemTime> {
    let doc: Value = r.json().await.ok()?;
    let secs = doc["created_at"]
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0)?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs))
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn now_micro() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

fn labels_of(ns: &Value) -> NamespaceLabels {
    let l = &ns["metadata"]["labels"];
    NamespaceLabels {
        istio_injection: l[INJECTION].as_str().map(str::to_owned),
        rev: l[REV].as_str().map(str::to_owned),
    }
}

/// The merge patch that sets a namespace's Istio labels to `l` (an absent label deleted with
/// null), with `resourceVersion` as a precondition when given.
fn labels_patch(l: &NamespaceLabels, resource_version: Option<&str>) -> Value {
    let mut p = json!({"metadata": {"labels": {REV: l.rev, INJECTION: l.istio_injection}}});
    if let Some(rv) = resource_version {
        p["metadata"]["resourceVersion"] = json!(rv);
    }
    p
}

fn run_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("meshgate-upgrade-{host}-{}-{secs}", std::process::id())
}

// === the run ===

/// Run it; returns the exit code. The calls go to stdout, one a line; messages to stderr.
pub async fn run(o: UpgradeOptions) -> u8 {
    let mut r = match Runner::start(o) {
        Ok(r) => r,
        Err(s) => {
            eprintln!("meshgate upgrade: {}", s.message);
            return s.code;
        }
    };
    let result = match r.o.action {
        UpgradeAction::Run => r.drive().await,
        UpgradeAction::Resume | UpgradeAction::Abort => r.decide().await,
    };
    r.release().await;
    match result {
        Ok(()) => EXIT_DONE,
        Err(s) => {
            eprintln!("meshgate upgrade: {}", s.message);
            s.code
        }
    }
}

struct Runner {
    o: UpgradeOptions,
    plan: Plan,
    kube: Arc<Kube>,
    daemon: reqwest::Client,
    server: String,
    state: RunState,
    /// Whether `state` was read from `--state` (not a fresh one).
    loaded: bool,
    /// The Lease renewal task and its stop, once taken.
    lease: Option<(CancellationToken, tokio::task::JoinHandle<Option<Value>>)>,
    /// Cancelled when the renewal finds the Lease taken by another holder.
    lost: CancellationToken,
}

impl Runner {
    fn start(o: UpgradeOptions) -> Result<Self, Stop> {
        let usage = |m: String| Stop::new(EXIT_USAGE, m);
        let cfg = crate::config::Config::load(&o.config).map_err(|e| usage(e.to_string()))?;
        let plan = cfg
            .plan
            .ok_or_else(|| usage(format!("{}: no [plan] section", o.config.display())))?;
        let problems = plan.problems();
        if !problems.is_empty() {
            return Err(usage(format!(
                "{}: {}",
                o.config.display(),
                problems.join("; ")
            )));
        }
        let kcfg = cfg.discovery.kubernetes.ok_or_else(|| {
            usage(format!(
                "{}: no [discovery.kubernetes] section (its api_server, token_file and ca_file are the autopilot's)",
                o.config.display()
            ))
        })?;
        let kube = Kube::build(kcfg).map_err(usage)?;
        let server = crate::gate::server_base(&o.server).map_err(usage)?;
        let daemon = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| usage(format!("cannot build an http client: {e}")))?;
        if o.action == UpgradeAction::Run && (o.by.is_some() || o.why.is_some()) {
            return Err(usage(
                "--by and --why are for a person's decision: `meshgate upgrade resume` or `meshgate upgrade abort`".into(),
            ));
        }
        let loaded = RunState::load(&o.state, &plan).map_err(usage)?;
        let state = loaded
            .clone()
            .unwrap_or_else(|| RunState::fresh(&plan, run_id()));
        Ok(Runner {
            o,
            plan,
            kube: Arc::new(kube),
            daemon,
            server,
            state,
            loaded: loaded.is_some(),
            lease: None,
            lost: CancellationToken::new(),
        })
    }

    /// Print a call; send it when executing (a dry run answers `None`).
    async fn write(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> Result<Option<Value>, WriteError> {
        println!("{method} {path} {content_type} {body}");
        if !self.o.execute {
            return Ok(None);
        }
        if self.lost.is_cancelled() {
            return Err(WriteError::LeaseLost(kube::LeaseLost {
                call: format!("{method} {path}"),
            }));
        }
        Ok(Some(
            self.kube
                .send(method, path, Some(content_type), Some(body))
                .await?,
        ))
    }

    async fn read(&self, path: &str) -> Result<Option<Value>, KubeError> {
        println!("GET {path}");
        self.kube.get(path).await
    }

    fn act(&mut self, what: String) -> Result<(), Stop> {
        if !self.o.execute {
            return Ok(());
        }
        self.state.actions.push(Action {
            at: now_rfc3339(),
            what,
            by: None,
            why: None,
        });
        self.state
            .save(&self.o.state)
            .map_err(|e| Stop::new(EXIT_FAILED, e))
    }

    async fn drive(&mut self) -> Result<(), Stop> {
        self.prechecks().await?;
        self.waves().await
    }

    /// What every run and decision checks before it acts: the access reviews, the namespaces,
    /// both revisions' istiod on the daemon (only said for `abort`), a writable state file
    /// (before anything is written to the cluster), the Lease.
    async fn prechecks(&mut self) -> Result<(), Stop> {
        if !self.o.execute {
            eprintln!("meshgate upgrade: dry run: nothing is written (the calls that would be are printed); pass --execute to act");
        }
        self.check_access().await?;
        self.check_namespaces().await?;
        let warnings = self.check_pdbs().await?;
        if self.o.action == UpgradeAction::Abort {
            // A rollback needs the old revision only, and a broken new control plane may be
            // why a person aborts: what the check finds is said, not a reason to refuse.
            if let Err(s) = self.check_istiod(false).await {
                eprintln!(
                    "meshgate upgrade: warning: {}; abort goes on (it moves the wave back to its recorded labels)",
                    s.message
                );
            }
        } else {
            self.check_istiod(true).await?;
        }
        if self.o.execute {
            self.state
                .save(&self.o.state)
                .map_err(|e| Stop::new(EXIT_USAGE, e))?;
        }
        self.take_lease().await?;
        // Once the run holds the Lease, the warnings are events of the run too.
        for w in warnings {
            self.act(format!("warning: {w}"))?;
        }
        Ok(())
    }

    /// What a paused run tells the person who decides.
    fn decide_hint(&self) -> String {
        format!(
            "a person decides: `meshgate upgrade resume` (it counts as GO) or `meshgate upgrade abort` (it is rolled back) with --state {}",
            self.o.state.display()
        )
    }

    /// The waves from the first not done, in order.
    async fn waves(&mut self) -> Result<(), Stop> {
        for i in 0..self.plan.waves.len() {
            match self.state.waves[i].phase {
                RunPhase::Go => continue,
                RunPhase::RolledBack => {
                    return Err(Stop::new(
                        EXIT_ROLLED_BACK,
                        format!(
                            "wave {} was rolled back by this run ({}); start a new run with another --state",
                            self.plan.waves[i].name,
                            self.state.waves[i].verdict.clone().unwrap_or_default()
                        ),
                    ))
                }
                RunPhase::Paused => {
                    return Err(Stop::new(
                        EXIT_PAUSED,
                        format!(
                            "wave {} is paused ({}); {}",
                            self.plan.waves[i].name,
                            self.state.waves[i].verdict.clone().unwrap_or_default(),
                            self.decide_hint()
                        ),
                    ))
                }
                RunPhase::NotStarted | RunPhase::Moving => {}
            }
            self.wave(i).await?;
        }
        eprintln!(
            "meshgate upgrade: every wave GO{}: the old control plane (revision {}) can go once nothing else uses it; meshgate does not remove it",
            if self.o.execute { "" } else { " (dry run)" },
            self.plan.from_revision
        );
        Ok(())
    }

    /// The wave a decision is about: the one paused or stopped mid-way. None is a usage error
    /// naming the state file and what it says, before any call.
    fn stopped_wave(&self) -> Result<usize, Stop> {
        let file = self.o.state.display();
        let verb = match self.o.action {
            UpgradeAction::Abort => "abort",
            _ => "resume",
        };
        let refuse = |what: String| {
            Stop::new(
                EXIT_USAGE,
                format!("{verb}: --state {file}: {what}; nothing was written"),
            )
        };
        if !self.loaded {
            return Err(refuse(
                "no run state there, so no paused run; `meshgate upgrade --execute` with this --state starts one".into(),
            ));
        }
        let waves = &self.state.waves;
        if let Some(w) = waves.iter().find(|w| w.phase == RunPhase::RolledBack) {
            return Err(refuse(format!(
                "wave {} was rolled back ({}): the run has ended",
                w.name,
                w.verdict.clone().unwrap_or_default()
            )));
        }
        if let Some(i) = waves
            .iter()
            .position(|w| matches!(w.phase, RunPhase::Paused | RunPhase::Moving))
        {
            return Ok(i);
        }
        let phases: Vec<String> = waves
            .iter()
            .map(|w| format!("{} {:?}", w.name, w.phase))
            .collect();
        Err(refuse(format!(
            "no wave is paused or stopped mid-way ({}): no paused run",
            phases.join(", ")
        )))
    }

    /// A person's decision, recorded as an action with who and why (printed in a dry run).
    fn decision(&mut self, what: String, by: &str, why: &str) -> Result<(), Stop> {
        let at = now_rfc3339();
        let why_text = if why.is_empty() {
            "no reason given"
        } else {
            why
        };
        let line = format!("{what} by {by} at {at}: {why_text}");
        println!("DECIDE {line}");
        eprintln!("meshgate upgrade: {line}");
        if self.o.execute {
            self.state.actions.push(Action {
                at,
                what,
                by: Some(by.to_owned()),
                why: Some(why.to_owned()),
            });
            self.state
                .save(&self.o.state)
                .map_err(|e| Stop::new(EXIT_FAILED, e))?;
        }
        Ok(())
    }

    /// `resume` or `abort` the run of `--state`: the paused (or stopped) wave counts as GO and
    /// the run goes on, or it is rolled back as on NO-GO and the run ends.
    async fn decide(&mut self) -> Result<(), Stop> {
        let i = self.stopped_wave()?;
        self.prechecks().await?;
        let wave = self.plan.waves[i].clone();
        let by = self
            .o
            .by
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "unknown".into());
        let why = self.o.why.clone().unwrap_or_default();
        let was = self.state.waves[i].verdict.clone();
        let paused = self.state.waves[i].phase == RunPhase::Paused;
        let state_of =
            |v: &Option<String>| v.clone().unwrap_or_else(|| "stopped mid-way".to_owned());
        if self.o.action == UpgradeAction::Abort {
            self.decision(
                format!("wave {} aborted (it was {})", wave.name, state_of(&was)),
                &by,
                &why,
            )?;
            let left = self.roll_back(&wave).await?;
            self.state.waves[i].phase = RunPhase::RolledBack;
            self.state.waves[i].verdict = Some(format!("aborted by {by}: {why}"));
            self.act(format!(
                "wave {} rolled back to its recorded labels (aborted by {by})",
                wave.name
            ))?;
            return Err(Stop::new(
                EXIT_ROLLED_BACK,
                format!(
                    "wave {} aborted by {by}: its namespaces were restored to their recorded labels and restarted; the run ends{}",
                    wave.name,
                    left.map(|l| format!("; but {l}")).unwrap_or_default()
                ),
            ));
        }
        if paused {
            self.decision(
                format!(
                    "wave {} counts as GO (it was {})",
                    wave.name,
                    state_of(&was)
                ),
                &by,
                &why,
            )?;
            // The decision replaces the verdict, not the soak: the wave stays moved that long.
            println!("WAIT soak {}", humantime::format_duration(wave.soak));
            if self.o.execute {
                tokio::time::sleep(wave.soak).await;
            }
            self.state.waves[i].phase = RunPhase::Go;
            self.state.waves[i].verdict = Some(format!("GO decided by {by}: {why}"));
            self.act(format!("wave {} GO (decided by {by})", wave.name))?;
        } else {
            self.decision(
                format!("run resumed at wave {} (stopped mid-way)", wave.name),
                &by,
                &why,
            )?;
        }
        self.waves().await
    }

    /// One SelfSubjectAccessReview per verb and resource; every refusal named at once.
    async fn check_access(&self) -> Result<(), Stop> {
        let mut refused = Vec::new();
        for (verb, group, resource, ns) in access_needed(&self.o.lease_namespace) {
            let mut attrs = json!({"verb": verb, "group": group, "resource": resource});
            if !ns.is_empty() {
                attrs["namespace"] = json!(ns);
            }
            let body = json!({
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attrs},
            });
            let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
            // A review creates nothing: it is sent in a dry run too.
            println!("POST {path} application/json {body}");
            let answer = self
                .kube
                .send("POST", path, Some("application/json"), Some(&body))
                .await?;
            if answer["status"]["allowed"] != true {
                let g = if group.is_empty() { "" } else { "." };
                let at = if ns.is_empty() {
                    String::new()
                } else {
                    format!(" in namespace {ns}")
                };
                let why = answer["status"]["reason"]
                    .as_str()
                    .filter(|r| !r.is_empty())
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                refused.push(format!("{verb} {resource}{g}{group}{at}{why}"));
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        Err(Stop::new(
            EXIT_PRECHECK,
            format!(
                "the RBAC refuses: {}; deploy/kubernetes/autopilot-rbac.yaml grants what the autopilot needs; nothing was written",
                refused.join(", ")
            ),
        ))
    }

    async fn check_namespaces(&self) -> Result<(), Stop> {
        let mut missing = Vec::new();
        for (i, w) in self.plan.waves.iter().enumerate() {
            for ns in &w.namespaces {
                if self
                    .read(&format!("/api/v1/namespaces/{ns}"))
                    .await?
                    .is_none()
                {
                    missing.push(format!("{ns} (plan.waves[{i}], wave {})", w.name));
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(Stop::new(
            EXIT_PRECHECK,
            format!(
                "namespaces of the plan not found: {}; nothing was written",
                missing.join(", ")
            ),
        ))
    }

    /// The PodDisruptionBudgets of every wave's namespaces (`policy/v1`). A restart goes
    /// through the controllers' rolling update, which does not evict, so no PDB holds it; but
    /// one that allows no disruption now, or whose spec blocks every eviction, blocks a node
    /// drain (or any eviction) while the wave moves: each is said on stderr and answered, to be
    /// kept as an action of the run. Not a refusal.
    async fn check_pdbs(&self) -> Result<Vec<String>, Stop> {
        let mut out = Vec::new();
        for w in &self.plan.waves {
            for ns in &w.namespaces {
                let path = format!("/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets");
                let list = self.read(&path).await?.unwrap_or(Value::Null);
                for pdb in list["items"].as_array().into_iter().flatten() {
                    if let Some(why) = pdb_warning(pdb) {
                        let name = pdb["metadata"]["name"].as_str().unwrap_or("?");
                        let line = format!(
                            "wave {}: PodDisruptionBudget {ns}/{name} {why}: the restarts are rolling updates, not evictions, so it does not hold them, but a node drain during the upgrade would block on it",
                            w.name
                        );
                        eprintln!("meshgate upgrade: warning: {line}");
                        out.push(line);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Both revisions' istiod, as the daemon sees them (`GET /v1/targets`, `GET /v1/skew`):
    /// each has a target that is scraped and up, and the version skew guard has no blocking
    /// finding about either (nor one holding GO: a revision it cannot judge). What is missing is
    /// looked at again every `--poll` for `--precheck-timeout` (a daemon just started has not
    /// scraped yet), then the run is refused, exit 4, naming it. With `wait` false (`abort`),
    /// one look. A daemon that cannot be asked is exit 5; in a dry run, the check is skipped and
    /// said so.
    async fn check_istiod(&self, wait: bool) -> Result<(), Stop> {
        let targets_url = format!("{}/v1/targets", self.server);
        let skew_url = format!("{}/v1/skew", self.server);
        println!("GET {targets_url}");
        println!("GET {skew_url}");
        let revs = [
            self.plan.from_revision.as_str(),
            self.plan.to_revision.as_str(),
        ];
        let started = Instant::now();
        let mut said: Option<Instant> = None;
        loop {
            let asked = self.ask_istiod(&targets_url, &skew_url).await;
            let (targets, skew) = match asked {
                Ok(a) => a,
                Err(e) if !self.o.execute => {
                    eprintln!(
                        "meshgate upgrade: dry run: the istiod pre-check was skipped: {e}; with --execute it is made and the run stops if it fails"
                    );
                    return Ok(());
                }
                Err(e) => {
                    return Err(Stop::new(
                        EXIT_FAILED,
                        format!("the istiod pre-check: {e}; nothing was written"),
                    ))
                }
            };
            let f = istiod_findings(&targets, skew.as_ref(), &revs);
            if f.problems.is_empty() {
                for n in &f.notes {
                    eprintln!("meshgate upgrade: note: {n}");
                }
                eprintln!(
                    "meshgate upgrade: istiod revisions {} and {}: scraped and up ({}); skew guard: {}",
                    revs[0],
                    revs[1],
                    f.istiods.join(", "),
                    f.skew
                );
                return Ok(());
            }
            let waited = started.elapsed();
            if !wait || waited >= self.o.precheck_timeout {
                let after = if wait {
                    format!(
                        " (after {})",
                        humantime::format_duration(Duration::from_secs(waited.as_secs()))
                    )
                } else {
                    String::new()
                };
                return Err(Stop::new(
                    EXIT_PRECHECK,
                    format!(
                        "the istiod pre-check{after}: {}; nothing was written",
                        f.problems.join("; ")
                    ),
                ));
            }
            if said.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) {
                said = Some(Instant::now());
                eprintln!(
                    "meshgate upgrade: istiod pre-check, waiting ({} s of {}): {}",
                    waited.as_secs(),
                    humantime::format_duration(self.o.precheck_timeout),
                    f.problems.join("; ")
                );
            }
            tokio::time::sleep(self.o.poll).await;
        }
    }

    /// `GET /v1/targets` and `GET /v1/skew` of the daemon; the skew `None` while the daemon
    /// answers 503 (it has not judged yet). Anything else but a document: what went wrong.
    async fn ask_istiod(
        &self,
        targets_url: &str,
        skew_url: &str,
    ) -> Result<(Value, Option<Value>), String> {
        let get = |url: &str| {
            let url = url.to_owned();
            async move {
                let r = self
                    .daemon
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| format!("GET {url}: {}", crate::tls::error_chain(&e)))?;
                let status = r.status();
                if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                    return Ok(None);
                }
                if !status.is_success() {
                    let text = r.text().await.unwrap_or_default();
                    return Err(format!("GET {url}: {status}: {}", text.trim()));
                }
                r.json::<Value>()
                    .await
                    .map(Some)
                    .map_err(|e| format!("GET {url}: not a JSON document ({e})"))
            }
        };
        let targets = get(targets_url)
            .await?
            .ok_or_else(|| format!("GET {targets_url}: 503 Service Unavailable"))?;
        if !targets.is_array() {
            return Err(format!(
                "GET {targets_url}: not a list of targets: {targets}"
            ));
        }
        let skew = get(skew_url).await?;
        Ok((targets, skew))
    }

    fn lease_path(&self) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}",
            self.o.lease_namespace, self.o.lease_name
        )
    }

    /// Take the Lease (create it, renew our own, or take over an expired one) and start renewing
    /// it; another unexpired holder is [`EXIT_LEASE_HELD`].
    async fn take_lease(&mut self) -> Result<(), Stop> {
        let path = self.lease_path();
        let me = self.state.run_id.clone();
        let secs = self.o.lease_duration.as_secs().max(1);
        for _ in 0..3 {
            let now = now_micro();
            let current = self.read(&path).await?;
            let answer = match current {
                None => {
                    let body = json!({
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": self.o.lease_name, "namespace": self.o.lease_namespace},
                        "spec": {"holderIdentity": me, "leaseDurationSeconds": secs,
                                 "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
                    });
                    let collection = path.rsplit_once('/').map_or(path.as_str(), |p| p.0);
                    self.write("POST", collection, "application/json", &body)
                        .await
                }
                Some(mut lease) => {
                    let holder = lease["spec"]["holderIdentity"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    if !holder.is_empty() && holder != me {
                        if let Some(left) = lease_left(&lease) {
                            return Err(Stop::new(
                                EXIT_LEASE_HELD,
                                format!(
                                    "the Lease {}/{} is held by {holder:?} for {} s more (renewed {}): another autopilot drives this mesh; nothing was written",
                                    self.o.lease_namespace,
                                    self.o.lease_name,
                                    left.as_secs(),
                                    lease["spec"]["renewTime"].as_str().unwrap_or("?")
                                ),
                            ));
                        }
                    }
                    let spec = &mut lease["spec"];
                    if holder != me {
                        spec["acquireTime"] = json!(now);
                        spec["leaseTransitions"] =
                            json!(spec["leaseTransitions"].as_i64().unwrap_or(0) + 1);
                    }
                    spec["holderIdentity"] = json!(me);
                    spec["leaseDurationSeconds"] = json!(secs);
                    spec["renewTime"] = json!(now);
                    self.write("PUT", &path, "application/json", &lease).await
                }
            };
            match answer {
                Ok(Some(lease)) => {
                    self.renew(lease);
                    return Ok(());
                }
                Ok(None) => return Ok(()),
                // Another autopilot created or updated it in between: look again.
                Err(e) if e.code() == Some(409) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Stop::new(
            EXIT_LEASE_HELD,
            format!(
                "the Lease {}/{} kept changing under this run (409 Conflict three times): another autopilot is starting; nothing was written",
                self.o.lease_namespace, self.o.lease_name
            ),
        ))
    }

    /// Renew the Lease every third of its duration until stopped; a 409 or another holder
    /// means it was lost: `lost` is cancelled and no further write is sent.
    fn renew(&mut self, lease: Value) {
        let stop = CancellationToken::new();
        let (kube, path, lost) = (self.kube.clone(), self.lease_path(), self.lost.clone());
        let every = (self.o.lease_duration / 3).max(Duration::from_millis(100));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut lease = lease;
            loop {
                tokio::select! {
                    () = s.cancelled() => return Some(lease),
                    () = tokio::time::sleep(every) => {}
                }
                let mut next = lease.clone();
                next["spec"]["renewTime"] = json!(now_micro());
                match kube
                    .send("PUT", &path, Some("application/json"), Some(&next))
                    .await
                {
                    Ok(l) => lease = l,
                    Err(e) if e.code() == Some(409) => {
                        tracing::error!(lease = %path, error = %e, "the Lease was taken by another holder; stopping before the next write");
                        lost.cancel();
                        return None;
                    }
                    Err(e) => {
                        tracing::warn!(lease = %path, error = %e, "renewing the Lease failed; retrying")
                    }
                }
            }
        });
        self.lease = Some((stop, task));
    }

    /// Stop renewing and release the Lease (holder cleared, as client-go's ReleaseOnCancel).
    async fn release(&mut self) {
        let Some((stop, task)) = self.lease.take() else {
            return;
        };
        stop.cancel();
        let Ok(Some(mut lease)) = task.await else {
            return;
        };
        lease["spec"]["holderIdentity"] = json!("");
        lease["spec"]["leaseDurationSeconds"] = json!(1);
        lease["spec"]["renewTime"] = json!(now_micro());
        if let Err(e) = self
            .write("PUT", &self.lease_path(), "application/json", &lease)
            .await
        {
            eprintln!("meshgate upgrade: releasing the Lease: {e} (it expires by itself)");
        }
    }

    async fn wave(&mut self, i: usize) -> Result<(), Stop> {
        let wave = self.plan.waves[i].clone();
        eprintln!(
            "meshgate upgrade: wave {} ({}): {} -> {}",
            wave.name,
            wave.namespaces.join(", "),
            self.plan.from_revision,
            self.plan.to_revision
        );
        let moved = !self.state.waves[i].relabelled.is_empty();
        let created = self.ensure_analysis(&wave, moved).await?;
        if self.state.waves[i].phase == RunPhase::NotStarted {
            self.state.waves[i].phase = RunPhase::Moving;
            self.act(format!("wave {} started", wave.name))?;
        }
        if !moved {
            self.pre_move(i, &wave, created).await?;
        }
        let target = NamespaceLabels {
            istio_injection: None,
            rev: Some(self.plan.to_revision.clone()),
        };
        for ns in &wave.namespaces {
            if !self.state.waves[i].relabelled.contains(ns) {
                self.relabel(ns, &target).await?;
                self.state.waves[i].relabelled.push(ns.clone());
                self.act(format!(
                    "relabel namespace {ns}: istio.io/rev={}",
                    self.plan.to_revision
                ))?;
            }
        }
        let workloads = self.restart(&wave, Some(i)).await?;
        self.wait_rollouts(&workloads).await?;
        let want: BTreeMap<String, Option<String>> = wave
            .namespaces
            .iter()
            .map(|ns| (ns.clone(), Some(self.plan.to_revision.clone())))
            .collect();
        if let Err(off) = self.wait_sidecars(&want).await {
            return Err(Stop::new(
                EXIT_PAUSED,
                format!(
                    "wave {}: its rollouts are done but after {} these pods still run a sidecar of another revision than {}: {off}; the wave is not judged before its proxies run the new revision; run again with the same --state to wait again, or `meshgate upgrade abort` to roll it back",
                    wave.name,
                    humantime::format_duration(self.o.rollout_timeout),
                    self.plan.to_revision
                ),
            ));
        }
        let moved_at = Instant::now();
        let (verdict, reason) = self.verdict(&wave).await?;
        self.state.waves[i].verdict = Some(format!("{}: {reason}", verdict.as_str()));
        match verdict {
            Verdict::Go => {
                // The wave must stay moved for its soak before the next starts. The analysis
                // created from the plan soaks itself (its GO comes a whole soak after the
                // certificate, and a NO-GO meanwhile still counts), so this waits only for an
                // analysis followed but not created here, which may have no soak.
                println!("WAIT soak {}", humantime::format_duration(wave.soak));
                if self.o.execute {
                    tokio::time::sleep(wave.soak.saturating_sub(moved_at.elapsed())).await;
                }
                self.state.waves[i].phase = RunPhase::Go;
                self.act(format!("wave {} GO: {reason}", wave.name))?;
                Ok(())
            }
            Verdict::NoGo => {
                self.act(format!("wave {} NO-GO: {reason}", wave.name))?;
                let left = self.roll_back(&wave).await?;
                self.state.waves[i].phase = RunPhase::RolledBack;
                self.act(format!(
                    "wave {} rolled back to its recorded labels",
                    wave.name
                ))?;
                Err(Stop::new(
                    EXIT_ROLLED_BACK,
                    format!(
                        "wave {} NO-GO ({reason}): its namespaces were restored to their recorded labels and restarted; the run stops{}",
                        wave.name,
                        left.map(|l| format!("; but {l}")).unwrap_or_default()
                    ),
                ))
            }
            Verdict::Inconclusive | Verdict::Pending => {
                self.state.waves[i].phase = RunPhase::Paused;
                self.act(format!("wave {} paused: {reason}", wave.name))?;
                Err(Stop::new(
                    EXIT_PAUSED,
                    format!(
                        "wave {} {} ({reason}): the run is paused with the wave moved; {}",
                        wave.name,
                        verdict.as_str(),
                        self.decide_hint()
                    ),
                ))
            }
        }
    }

    /// Record a namespace's labels (while not moved yet) and set them to `target`, with its
    /// resourceVersion as a precondition: a 409 (changed in between) is read again.
    async fn relabel(&mut self, ns: &str, target: &NamespaceLabels) -> Result<(), Stop> {
        let path = format!("/api/v1/namespaces/{ns}");
        for _ in 0..5 {
            let Some(obj) = self.read(&path).await? else {
                return Err(Stop::new(
                    EXIT_FAILED,
                    format!("namespace {ns} disappeared during the run"),
                ));
            };
            let now = labels_of(&obj);
            if &now == target {
                // Already moved (by this run before a crash, or by hand): not relabelled twice.
                return Ok(());
            }
            if self.state.recorded.get(ns) != Some(&now) {
                self.state.recorded.insert(ns.to_owned(), now.clone());
                self.act(format!("record namespace {ns}: {now:?}"))?;
            }
            let rv = obj["metadata"]["resourceVersion"].as_str();
            match self
                .write("PATCH", &path, MERGE, &labels_patch(target, rv))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.code() == Some(409) => {
                    eprintln!("meshgate upgrade: namespace {ns} changed in between (409 Conflict); reading it again");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Stop::new(
            EXIT_FAILED,
            format!("namespace {ns} kept changing (409 Conflict five times); nothing forced"),
        ))
    }

    /// Restart every workload of the wave's namespaces; with `wave`, those the state says were
    /// restarted already are skipped.
    async fn restart(&mut self, w: &Wave, wave: Option<usize>) -> Result<Vec<Workload>, Stop> {
        let mut all = Vec::new();
        for ns in &w.namespaces {
            for kind in KINDS {
                let path = format!("/apis/apps/v1/namespaces/{ns}/{}", kind.plural());
                let list = self.read(&path).await?.unwrap_or(Value::Null);
                for item in list["items"].as_array().into_iter().flatten() {
                    if let Some(name) = item["metadata"]["name"].as_str() {
                        all.push(Workload {
                            kind,
                            ns: ns.clone(),
                            name: name.to_owned(),
                        });
                    }
                }
            }
        }
        // Microseconds, not kubectl's whole seconds: a rollback's restart within the same
        // second as the move's would patch the same value, change nothing and restart nothing.
        let at = now_micro();
        for wl in &all {
            if wave.is_some_and(|i| self.state.waves[i].restarted.contains(&wl.key())) {
                continue;
            }
            let body =
                json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}});
            self.write("PATCH", &wl.kind.path(&wl.ns, &wl.name), STRATEGIC, &body)
                .await?;
            if let Some(i) = wave {
                self.state.waves[i].restarted.push(wl.key());
            }
            self.act(format!("restart {}", wl.key()))?;
        }
        Ok(all)
    }

    async fn wait_rollouts(&self, workloads: &[Workload]) -> Result<(), Stop> {
        for wl in workloads {
            println!("WAIT rollout {}", wl.key());
        }
        if !self.o.execute {
            return Ok(());
        }
        let started = Instant::now();
        let mut pending: Vec<&Workload> = workloads.iter().collect();
        loop {
            let mut still = Vec::new();
            let mut why = String::new();
            for wl in pending {
                let obj = self
                    .kube
                    .get(&wl.kind.path(&wl.ns, &wl.name))
                    .await?
                    .ok_or_else(|| {
                        Stop::new(
                            EXIT_FAILED,
                            format!("{} disappeared during its rollout", wl.key()),
                        )
                    })?;
                if let Err(e) = rollout_done(wl.kind, &obj) {
                    why = format!("{}: {e}", wl.key());
                    still.push(wl);
                }
            }
            if still.is_empty() {
                return Ok(());
            }
            if started.elapsed() >= self.o.rollout_timeout {
                return Err(Stop::new(
                    EXIT_FAILED,
                    format!(
                        "{} rollout(s) not finished after {} ({why}); nothing was forced; run again with the same --state to go on waiting",
                        still.len(),
                        humantime::format_duration(self.o.rollout_timeout)
                    ),
                ));
            }
            pending = still;
            tokio::time::sleep(self.o.poll).await;
        }
    }

    /// The wave's analysis on the daemon: followed when it exists (the daemon's own `[plan]`
    /// creates the same one), else created from [`Plan::analysis_for`], before the move. Missing
    /// once the wave has `moved` (a resumed run whose daemon lost it), it is not created: a
    /// before/after analysis started after the move never saw the old revision.
    ///
    /// Answers when the analysis was created, as the daemon reports it (`created_at`); `None`
    /// in a dry run, or when the daemon's answer does not say.
    async fn ensure_analysis(&self, wave: &Wave, moved: bool) -> Result<Option<SystemTime>, Stop> {
        let id = Plan::analysis_id(wave);
        let url = format!("{}/v1/analyses/{id}", self.server);
        let unreachable = |e: reqwest::Error| {
            Stop::new(
                EXIT_FAILED,
                format!(
                    "the daemon at {}: {}",
                    self.server,
                    crate::tls::error_chain(&e)
                ),
            )
        };
        println!("GET {url}");
        if !self.o.execute {
            // A dry run does not ask the daemon: the create is shown as it would be sent.
            let body = self.analysis_body(wave)?;
            println!("POST {}/v1/analyses application/json {body}", self.server);
            return Ok(None);
        }
        let r = self.daemon.get(&url).send().await.map_err(unreachable)?;
        if r.status().is_success() {
            return Ok(created_at(r).await);
        }
        if r.status() != reqwest::StatusCode::NOT_FOUND {
            return Err(Stop::new(EXIT_FAILED, format!("GET {url}: {}", r.status())));
        }
        if moved {
            return Err(Stop::new(
                EXIT_PAUSED,
                format!(
                    "wave {}: its analysis {id} is gone from the daemon and the wave has already moved; one created now would not see the old revision, so the run stops paused: decide by hand (its recorded labels are in the state file)",
                    wave.name
                ),
            ));
        }
        let body = self.analysis_body(wave)?;
        let post = format!("{}/v1/analyses", self.server);
        println!("POST {post} application/json {body}");
        let r = self
            .daemon
            .post(&post)
            .json(&body)
            .send()
            .await
            .map_err(unreachable)?;
        if !r.status().is_success() {
            let s = r.status();
            let text = r.text().await.unwrap_or_default();
            return Err(Stop::new(
                EXIT_FAILED,
                format!("POST {post}: the daemon refused the wave's analysis ({s}): {text}"),
            ));
        }
        // Created just now: the answer's own time, else now.
        Ok(Some(created_at(r).await.unwrap_or_else(SystemTime::now)))
    }

    /// Wait until the wave's analysis has watched its namespaces on the old revision for
    /// `pre_move`, counted from its creation: the daemon's time for it, else the one this run
    /// recorded in the state file, else now (an analysis of unknown age gets the whole window).
    /// The time used is kept in the state file, so a run killed meanwhile and started again
    /// waits only what is left.
    async fn pre_move(
        &mut self,
        i: usize,
        wave: &Wave,
        created: Option<SystemTime>,
    ) -> Result<(), Stop> {
        if !self.o.execute {
            println!(
                "WAIT pre-move {}",
                humantime::format_duration(wave.pre_move)
            );
            return Ok(());
        }
        let recorded = self.state.waves[i]
            .analysis_created
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
        let since = created.or(recorded).unwrap_or_else(SystemTime::now);
        if recorded != Some(since) {
            let at = humantime::format_rfc3339_micros(since).to_string();
            self.state.waves[i].analysis_created = Some(at.clone());
            self.act(format!(
                "wave {} analysis {} watching since {at}",
                wave.name,
                Plan::analysis_id(wave)
            ))?;
        }
        let watched = SystemTime::now()
            .duration_since(since)
            .unwrap_or(Duration::ZERO);
        let left = wave.pre_move.saturating_sub(watched);
        // Whole milliseconds: what is printed is what is slept.
        let left = Duration::from_millis(left.as_millis() as u64);
        println!("WAIT pre-move {}", humantime::format_duration(left));
        tokio::time::sleep(left).await;
        Ok(())
    }

    /// The create body of the wave's analysis: [`Plan::analysis_for`], unset fields left out
    /// so the daemon's defaults apply (`"checks": []` is refused).
    fn analysis_body(&self, wave: &Wave) -> Result<Value, Stop> {
        let mut body = serde_json::to_value(self.plan.analysis_for(wave))
            .map_err(|e| Stop::new(EXIT_FAILED, e.to_string()))?;
        if let Some(m) = body.as_object_mut() {
            m.retain(|_, v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()));
        }
        Ok(body)
    }

    /// Follow the wave's verdict until it is final (PENDING past `--verdict-timeout` answers
    /// PENDING); a daemon that cannot be reached is retried meanwhile. While waiting, a
    /// progress line goes to stderr at the start and then at most every [`PROGRESS_EVERY`]
    /// ([`verdict_progress`]).
    async fn verdict(&self, wave: &Wave) -> Result<(Verdict, String), Stop> {
        let url = format!(
            "{}/v1/analyses/{}/verdict",
            self.server,
            Plan::analysis_id(wave)
        );
        println!("WAIT verdict GET {url}");
        if !self.o.execute {
            return Ok((Verdict::Go, "dry run: GO assumed".into()));
        }
        let started = Instant::now();
        let mut said: Option<Instant> = None;
        let mut last;
        loop {
            match self.daemon.get(&url).send().await {
                Ok(r) if r.status().is_success() => {
                    match crate::client::read_doc::<VerdictDoc>(&format!("GET {url}"), r).await {
                        Ok(d) if d.verdict != Verdict::Pending => return Ok((d.verdict, d.reason)),
                        Ok(d) => {
                            last = d.reason.clone();
                            if said.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) {
                                said = Some(Instant::now());
                                eprintln!(
                                    "meshgate upgrade: {}",
                                    verdict_progress(&wave.name, &d, started.elapsed())
                                );
                            }
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
                Ok(r) => last = format!("GET {url}: {}", r.status()),
                Err(e) => last = format!("GET {url}: {}", crate::tls::error_chain(&e)),
            }
            if said.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) {
                // No verdict document to show (the daemon failed or is out of reach): why.
                said = Some(Instant::now());
                eprintln!(
                    "meshgate upgrade: wave {}: analysis {} not read after {} s of waiting: {last}",
                    wave.name,
                    Plan::analysis_id(wave),
                    started.elapsed().as_secs()
                );
            }
            if started.elapsed() >= self.o.verdict_timeout {
                return Ok((
                    Verdict::Pending,
                    format!(
                        "still no verdict after {} ({last})",
                        humantime::format_duration(self.o.verdict_timeout)
                    ),
                ));
            }
            tokio::time::sleep(self.o.poll).await;
        }
    }

    /// Wait until the pods of each namespace of `want` run a sidecar of the revision it names
    /// (`None`: of any revision but the plan's new one, as a namespace restored to
    /// `istio-injection=enabled` or to no label gets the default injector's, whatever revision
    /// that is), as `sidecar.istio.io/status` says (the injector writes it into every pod it
    /// injects). Pods without it (not injected: opted out, or no injection) and finished pods
    /// are not counted. After `--rollout-timeout`: the pods still off, named.
    async fn wait_sidecars(&self, want: &BTreeMap<String, Option<String>>) -> Result<(), String> {
        for (ns, rev) in want {
            match rev {
                Some(r) => println!("WAIT sidecars {ns}: revision {r}"),
                None => println!("WAIT sidecars {ns}: not revision {}", self.plan.to_revision),
            }
        }
        if !self.o.execute {
            return Ok(());
        }
        let started = Instant::now();
        loop {
            let mut off = Vec::new();
            for (ns, rev) in want {
                let path = format!("/api/v1/namespaces/{ns}/pods");
                let list = match self.kube.get(&path).await {
                    Ok(l) => l.unwrap_or(Value::Null),
                    Err(e) => {
                        off.push(format!("{ns}: {e}"));
                        continue;
                    }
                };
                for pod in list["items"].as_array().into_iter().flatten() {
                    if matches!(
                        pod["status"]["phase"].as_str(),
                        Some("Succeeded" | "Failed")
                    ) {
                        continue;
                    }
                    let Some(status) = pod["metadata"]["annotations"][SIDECAR_STATUS].as_str()
                    else {
                        continue;
                    };
                    let runs = serde_json::from_str::<Value>(status)
                        .ok()
                        .and_then(|v| v["revision"].as_str().map(str::to_owned));
                    let fine = match (rev, &runs) {
                        (Some(r), Some(x)) => r == x,
                        (None, Some(x)) => x != &self.plan.to_revision,
                        (_, None) => false,
                    };
                    if !fine {
                        off.push(format!(
                            "{ns}/{} (revision {})",
                            pod["metadata"]["name"].as_str().unwrap_or("?"),
                            runs.as_deref().unwrap_or("unreadable")
                        ));
                    }
                }
            }
            if off.is_empty() {
                return Ok(());
            }
            if started.elapsed() >= self.o.rollout_timeout {
                return Err(off.join(", "));
            }
            tokio::time::sleep(self.o.poll).await;
        }
    }

    /// Restore every namespace of the wave to its recorded labels, restart, wait for the
    /// rollouts and for the pods to leave the new revision; the pods that did not, named (the
    /// labels are restored all the same: the run still ends rolled back).
    async fn roll_back(&mut self, wave: &Wave) -> Result<Option<String>, Stop> {
        for ns in &wave.namespaces {
            let Some(rec) = self.state.recorded.get(ns).cloned() else {
                // Never relabelled by this run (it stopped before): nothing to restore.
                eprintln!("meshgate upgrade: namespace {ns}: no labels recorded by this run, left as it is");
                continue;
            };
            self.write(
                "PATCH",
                &format!("/api/v1/namespaces/{ns}"),
                MERGE,
                &labels_patch(&rec, None),
            )
            .await?;
            self.act(format!("restore namespace {ns}: {rec:?}"))?;
        }
        let workloads = self.restart(wave, None).await?;
        self.wait_rollouts(&workloads).await?;
        let want: BTreeMap<String, Option<String>> = wave
            .namespaces
            .iter()
            .filter_map(|ns| Some((ns.clone(), self.state.recorded.get(ns)?.rev.clone())))
            .collect();
        Ok(self.wait_sidecars(&want).await.err().map(|off| {
            format!(
                "after {} these pods still run a sidecar of another revision than the recorded one: {off}",
                humantime::format_duration(self.o.rollout_timeout)
            )
        }))
    }
}

/// One line on a PENDING verdict for the person waiting: the wave, the analysis, how long the
/// analysis has run and this run has waited, the daemon's reason, and per check its status and
/// its own reason (the bound against the margin, or what it is still collecting).
fn verdict_progress(wave: &str, d: &VerdictDoc, waited: Duration) -> String {
    let mut s = format!(
        "wave {wave}: analysis {} {} after {:.0} s (waited {} s), E = {:.2} of {:.0}: {}",
        d.id,
        d.verdict.as_str(),
        d.elapsed_seconds,
        waited.as_secs(),
        d.e_value,
        d.threshold,
        d.reason
    );
    for c in &d.checks {
        s.push_str(&format!(
            " | {} {}: {}",
            c.name,
            c.status.as_str(),
            c.reason
        ));
    }
    s
}

/// Why a PodDisruptionBudget deserves a warning: its spec blocks every eviction
/// (`maxUnavailable` 0, `minAvailable` 100%), or its status allows no disruption now.
fn pdb_warning(pdb: &Value) -> Option<String> {
    let spec = &pdb["spec"];
    let zero = |v: &Value| v.as_i64() == Some(0) || v.as_str() == Some("0%");
    if zero(&spec["maxUnavailable"]) {
        return Some(format!(
            "blocks every eviction (maxUnavailable {})",
            spec["maxUnavailable"]
        ));
    }
    if spec["minAvailable"].as_str() == Some("100%") {
        return Some("blocks every eviction (minAvailable 100%)".into());
    }
    let st = &pdb["status"];
    if st["disruptionsAllowed"].as_i64() == Some(0) {
        let n = |k: &str| st[k].as_i64().map_or("?".to_owned(), |v| v.to_string());
        return Some(format!(
            "allows no disruption now (disruptionsAllowed 0: currentHealthy {}, desiredHealthy {})",
            n("currentHealthy"),
            n("desiredHealthy")
        ));
    }
    None
}

/// What the istiod pre-check found: what refuses the run, what is only said, the istiods up.
#[derive(Debug, Default, PartialEq)]
struct IstiodFindings {
    problems: Vec<String>,
    notes: Vec<String>,
    /// `revision url` of each istiod scraped and up.
    istiods: Vec<String>,
    /// The skew guard's verdict and reason.
    skew: String,
}

/// Judge the daemon's targets (`GET /v1/targets`) and skew report (`GET /v1/skew`; `None`: not
/// judged yet) for the revisions `revs`. An istiod is a target labelled `role=istiod` whose
/// `revision` label (`default` when absent) is the revision, or one the skew report lists under
/// it (it exports `istio_build{component="pilot"}`); one of them scraped and up makes the
/// revision ready. A skew finding about one of `revs` that is blocking or holds GO refuses;
/// the report's NO-GO about other revisions only is a note.
fn istiod_findings(targets: &Value, skew: Option<&Value>, revs: &[&str]) -> IstiodFindings {
    let mut f = IstiodFindings::default();
    let mut listed: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (_, views) in skew
        .and_then(|s| s["clusters"].as_object())
        .into_iter()
        .flatten()
    {
        for v in views.as_array().into_iter().flatten() {
            let rev = v["revision"].as_str().unwrap_or("default");
            for i in v["istiods"].as_array().into_iter().flatten() {
                if let Some(u) = i["url"].as_str() {
                    listed.entry(rev).or_default().push(u);
                }
            }
        }
    }
    let all = targets.as_array().map(Vec::as_slice).unwrap_or_default();
    for rev in revs {
        let mine: Vec<&Value> = all
            .iter()
            .filter(|t| {
                let l = &t["labels"];
                let labelled =
                    l["role"] == "istiod" && l["revision"].as_str().unwrap_or("default") == *rev;
                labelled
                    || t["url"]
                        .as_str()
                        .is_some_and(|u| listed.get(rev).is_some_and(|v| v.contains(&u)))
            })
            .collect();
        let up: Vec<&str> = mine
            .iter()
            .filter(|t| t["up"] == true)
            .filter_map(|t| t["url"].as_str())
            .collect();
        if mine.is_empty() {
            f.problems.push(format!(
                "istiod revision {rev}: no scraped target (the daemon has no target labelled role=istiod, revision={rev}: is that control plane installed and discovered?)"
            ));
        } else if up.is_empty() {
            let why: Vec<String> = mine
                .iter()
                .map(|t| {
                    let url = t["url"].as_str().unwrap_or("?");
                    if t["scrapes"].as_u64() == Some(0) {
                        format!("{url} not scraped yet")
                    } else {
                        format!(
                            "{url} down ({})",
                            t["last_error"].as_str().unwrap_or("no error given")
                        )
                    }
                })
                .collect();
            f.problems.push(format!(
                "istiod revision {rev}: not ready: {}",
                why.join(", ")
            ));
        } else {
            f.istiods.extend(up.iter().map(|u| format!("{rev} {u}")));
        }
    }
    let Some(skew) = skew else {
        f.problems
            .push("skew guard: not judged yet (the daemon answers 503: it has not ticked)".into());
        return f;
    };
    let verdict = skew["verdict"].as_str().unwrap_or("?");
    let reason = skew["reason"].as_str().unwrap_or("");
    f.skew = format!("{verdict} ({reason})");
    let mut other = false;
    for p in skew["problems"].as_array().into_iter().flatten() {
        if p["blocking"] != true && p["holds_go"] != true {
            continue;
        }
        let msg = p["message"].as_str().unwrap_or("?");
        if p["revision"].as_str().is_some_and(|r| revs.contains(&r)) {
            f.problems.push(format!("skew guard: {msg}"));
        } else {
            other = true;
        }
    }
    if other && verdict != "GO" {
        f.notes.push(format!(
            "the version skew guard says {verdict} about other revisions than the plan's: {reason}"
        ));
    }
    f
}

/// How long a Lease held by someone stays valid (`renewTime + leaseDurationSeconds`), `None`
/// when expired or unreadable (an unreadable renewTime is treated as expired, as client-go does
/// with a zero time).
fn lease_left(lease: &Value) -> Option<Duration> {
    let renew = humantime::parse_rfc3339_weak(lease["spec"]["renewTime"].as_str()?).ok()?;
    let secs = lease["spec"]["leaseDurationSeconds"].as_u64()?;
    (renew + Duration::from_secs(secs))
        .duration_since(SystemTime::now())
        .ok()
        .filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istiod_findings_name_a_missing_or_down_istiod_and_the_skew_about_the_plan() {
        let t = |url: &str, rev: &str, up: bool, scrapes: u64| {
            json!({"url": url, "labels": {"role": "istiod", "revision": rev}, "up": up,
                   "scrapes": scrapes, "last_error": if up { Value::Null } else { json!("connection refused") }})
        };
        let go = json!({"verdict": "GO", "reason": "fine", "clusters": {}, "problems": []});
        let revs = ["1-24-2", "1-25-0"];
        let both = json!([t("http://a/metrics", "1-24-2", true, 3), t("http://b/metrics", "1-25-0", true, 3),
                          {"url": "http://p/stats", "labels": {"role": "proxy", "revision": "1-25-0"}, "up": true, "scrapes": 3}]);
        let f = istiod_findings(&both, Some(&go), &revs);
        assert!(f.problems.is_empty(), "{f:?}");
        assert_eq!(
            f.istiods,
            ["1-24-2 http://a/metrics", "1-25-0 http://b/metrics"]
        );
        let only_old = json!([t("http://a/metrics", "1-24-2", true, 3)]);
        let f = istiod_findings(&only_old, Some(&go), &revs);
        assert_eq!(f.problems.len(), 1, "{f:?}");
        assert!(
            f.problems[0].starts_with("istiod revision 1-25-0: no scraped target"),
            "{f:?}"
        );
        let down = json!([
            t("http://a/metrics", "1-24-2", true, 3),
            t("http://b/metrics", "1-25-0", false, 4),
            t("http://c/metrics", "1-25-0", false, 0)
        ]);
        let f = istiod_findings(&down, Some(&go), &revs);
        assert_eq!(
            f.problems,
            ["istiod revision 1-25-0: not ready: http://b/metrics down (connection refused), http://c/metrics not scraped yet"]
        );
        // Not judged yet; a finding about a plan's revision refuses, one about another is a note.
        assert!(istiod_findings(&both, None, &revs).problems[0]
            .starts_with("skew guard: not judged yet"));
        let skew = json!({"verdict": "NO-GO", "reason": "version skew: x", "clusters": {}, "problems": [
            {"cluster": "c", "revision": "1-25-0", "blocking": false, "holds_go": true, "message": "held", "targets": []},
            {"cluster": "c", "revision": "9-0-0", "blocking": true, "holds_go": false, "message": "other", "targets": []},
            {"cluster": "c", "revision": "1-24-2", "blocking": false, "holds_go": false, "message": "info", "targets": []}]});
        let f = istiod_findings(&both, Some(&skew), &revs);
        assert_eq!(f.problems, ["skew guard: held"]);
        assert_eq!(f.notes.len(), 1, "{f:?}");
        // An istiod without the role label counts when the skew report lists it under the revision.
        let bare = json!([t("http://a/metrics", "1-24-2", true, 3), {"url": "http://b/metrics", "labels": {}, "up": true, "scrapes": 2}]);
        let listed = json!({"verdict": "GO", "reason": "", "problems": [], "clusters": {"c": [
            {"revision": "1-25-0", "control_plane_cluster": "c", "proxies": {}, "istiods": [{"url": "http://b/metrics", "connected": {}}]}]}});
        assert!(istiod_findings(&bare, Some(&listed), &revs)
            .problems
            .is_empty());
        assert_eq!(istiod_findings(&bare, Some(&go), &revs).problems.len(), 1);
    }

    #[test]
    fn a_pdb_is_warned_about_when_it_allows_no_disruption() {
        let pdb = |spec: Value, allowed: i64| json!({"spec": spec, "status": {"disruptionsAllowed": allowed, "currentHealthy": 2, "desiredHealthy": 2}});
        assert!(pdb_warning(&pdb(json!({"minAvailable": 2}), 0))
            .unwrap()
            .contains("disruptionsAllowed 0: currentHealthy 2, desiredHealthy 2"));
        assert!(pdb_warning(&pdb(json!({"maxUnavailable": "0%"}), 0))
            .unwrap()
            .contains("blocks every eviction"));
        assert!(pdb_warning(&pdb(json!({"maxUnavailable": 0}), 3)).is_some());
        assert_eq!(pdb_warning(&pdb(json!({"maxUnavailable": 1}), 1)), None);
    }

    #[test]
    fn rollout_is_done_only_when_observed_updated_and_ready() {
        let mut d = json!({"metadata": {"generation": 3}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 2, "updatedReplicas": 2, "readyReplicas": 2, "replicas": 2}});
        assert!(rollout_done(Kind::Deployment, &d)
            .unwrap_err()
            .contains("observedGeneration 2 < generation 3"));
        d["status"]["observedGeneration"] = json!(3);
        d["status"]["replicas"] = json!(3);
        assert!(
            rollout_done(Kind::Deployment, &d).is_err(),
            "an old pod is left"
        );
        d["status"]["replicas"] = json!(2);
        assert_eq!(rollout_done(Kind::Deployment, &d), Ok(()));
        let ds = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1,
            "desiredNumberScheduled": 3, "updatedNumberScheduled": 2, "numberReady": 3, "currentNumberScheduled": 3}});
        assert!(rollout_done(Kind::DaemonSet, &ds).is_err());
    }

    #[test]
    fn labels_patch_deletes_what_was_absent() {
        let rec = NamespaceLabels {
            istio_injection: Some("enabled".into()),
            rev: None,
        };
        assert_eq!(
            labels_patch(&rec, Some("7")),
            json!({"metadata": {"labels": {"istio.io/rev": null, "istio-injection": "enabled"}, "resourceVersion": "7"}})
        );
    }

    #[test]
    fn lease_expiry_from_renew_time_and_duration() {
        let fresh = json!({"spec": {"renewTime": now_micro(), "leaseDurationSeconds": 60}});
        assert!(lease_left(&fresh).is_some_and(|d| d.as_secs() >= 58));
        let old = json!({"spec": {"renewTime": "2020-01-01T00:00:00.000000Z", "leaseDurationSeconds": 60}});
        assert_eq!(lease_left(&old), None);
    }
}
