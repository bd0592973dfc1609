//! Daemon configuration: one TOML file plus `MESHGATE_...` environment overrides, validated all at once.
//!
//! Loading goes through the `config` crate (file, then environment with `__` as the path
//! separator: `MESHGATE_SCRAPE__INTERVAL=5s`). Each section is then deserialized on its own
//! with unknown keys rejected, and every semantic problem is collected with its key path, so one
//! run of `meshgate check-config` shows all of them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cohort::Selector;
use crate::judge::params::ALPHA;
use crate::judge::Catalog;

/// Exit code for a bad configuration (EX_CONFIG is 78; sysexits' EX_USAGE 64 is what the design asks).
pub const EXIT_BAD_CONFIG: i32 = 64;

/// The whole configuration.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Config {
    /// HTTP API.
    pub server: ServerConfig,
    /// How targets are scraped.
    pub scrape: ScrapeConfig,
    /// Statically listed targets.
    pub targets: Vec<StaticTarget>,
    /// Where else targets come from.
    pub discovery: DiscoveryConfig,
    /// Where checks are loaded from.
    pub queries: QueriesConfig,
    /// Defaults for analyses.
    pub judge: JudgeConfig,
    /// Analyses started with the daemon.
    pub analyses: Vec<AnalysisConfig>,
    /// Where NO-GO alerts go.
    pub alerts: AlertsConfig,
    /// Read from a Prometheus-compatible backend instead of scraping targets.
    pub prometheus: Option<crate::promsource::PrometheusConfig>,
    /// Multi-cluster topology (`[topology.remotes]`: remote -> primary).
    pub topology: crate::istio::Topology,
    /// The upgrade plan (`[plan]`), if any.
    pub plan: Option<crate::istio::plan::Plan>,
    /// Where state survives restarts.
    pub store: StoreConfig,
    /// How long finished analyses stay, how many may be held.
    pub retention: RetentionConfig,
    /// Who may call the API.
    pub auth: crate::auth::AuthConfig,
}

/// `[alerts]`: Alertmanager and webhook sinks for NO-GO verdicts.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Alertmanager base URLs (`http://alertmanager:9093`); alerts go to `/api/v2/alerts`.
    #[serde(default)]
    pub alertmanager: Vec<String>,
    /// Generic JSON webhooks.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// meshgate's URL as users reach it, for links in alerts.
    #[serde(default = "default_external_url")]
    pub external_url: String,
    /// Active alerts are re-sent to Alertmanager this often.
    #[serde(default = "default_resend", with = "humantime_serde")]
    pub resend_interval: Duration,
    /// Per-request timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Alerts waiting per sink; the latest state of an alert replaces an older one in the queue.
    #[serde(default = "default_alert_queue")]
    pub queue: usize,
    /// Tries per delivery before it is dropped.
    #[serde(default = "default_alert_attempts")]
    pub max_attempts: u32,
    /// First retry delay, doubled per try up to 30s.
    #[serde(default = "default_alert_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    /// Extra labels on every alert (e.g. `cluster`, `team`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// TLS to Alertmanager and webhooks (`[alerts.tls]`).
    #[serde(default)]
    pub tls: crate::tls::ClientTls,
}

/// One `[[alerts.webhooks]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where alerts are POSTed.
    pub url: String,
    /// HMAC-SHA256 key; the signature goes in `X-Meshgate-Signature: sha256=<hex>`.
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
}

fn default_external_url() -> String {
    "http://127.0.0.1:9400".into()
}
fn default_resend() -> Duration {
    Duration::from_secs(60)
}
fn default_alert_queue() -> usize {
    1024
}
fn default_alert_attempts() -> u32 {
    5
}
fn default_alert_backoff() -> Duration {
    Duration::from_secs(1)
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            alertmanager: Vec::new(),
            webhooks: Vec::new(),
            external_url: default_external_url(),
            resend_interval: default_resend(),
            timeout: default_timeout(),
            queue: default_alert_queue(),
            max_attempts: default_alert_attempts(),
            backoff: default_alert_backoff(),
            labels: BTreeMap::new(),
            tls: Default::default(),
        }
    }
}

impl AlertsConfig {
    /// Every problem with this section, with its key path.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = self.tls.problems("alerts.tls");
        for (i, u) in self.alertmanager.iter().enumerate() {
            if let Err(e) = crate::discovery::check_url(u) {
                out.push(ConfigProblem::new(format!("alerts.alertmanager[{i}]"), e));
            }
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            if let Err(e) = crate::discovery::check_url(&w.url) {
                out.push(ConfigProblem::new(format!("alerts.webhooks[{i}].url"), e));
            }
            if w.secret.as_deref() == Some("") {
                out.push(ConfigProblem::new(
                    format!("alerts.webhooks[{i}].secret"),
                    "is empty; leave it out for unsigned webhooks",
                ));
            }
        }
        if let Err(e) = crate::discovery::check_url(&self.external_url) {
            out.push(ConfigProblem::new("alerts.external_url", e));
        }
        if self.resend_interval < Duration::from_millis(100) {
            out.push(ConfigProblem::new(
                "alerts.resend_interval",
                "must be at least 100ms",
            ));
        }
        if self.timeout.is_zero() {
            out.push(ConfigProblem::new("alerts.timeout", "must be above zero"));
        }
        if self.queue == 0 {
            out.push(ConfigProblem::new("alerts.queue", "must be at least 1"));
        }
        if self.max_attempts == 0 {
            out.push(ConfigProblem::new(
                "alerts.max_attempts",
                "must be at least 1",
            ));
        }
        for name in self.labels.keys() {
            if !crate::discovery::valid_label_name(name) {
                out.push(ConfigProblem::new(
                    format!("alerts.labels.{name}"),
                    "is not a valid label name",
                ));
            }
        }
        out
    }
}

/// `[store]`: the embedded store; no path keeps everything in memory.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// File of the redb database (created when missing).
    #[serde(default)]
    pub path: Option<PathBuf>,
}

/// `[retention]`: how long finished analyses are kept, and how many analyses may be held.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// A finished analysis (GO, NO-GO, INCONCLUSIVE) is removed this long after its verdict.
    #[serde(default = "default_finished_ttl", with = "humantime_serde")]
    pub finished_ttl: Duration,
    /// Most analyses held, running and finished; past it the oldest finished one goes early, and
    /// a create while all are running is a 429.
    #[serde(default = "default_max_analyses")]
    pub max_analyses: usize,
}

fn default_finished_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_max_analyses() -> usize {
    1000
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            finished_ttl: default_finished_ttl(),
            max_analyses: default_max_analyses(),
        }
    }
}

impl RetentionConfig {
    /// Problems with their keys.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.finished_ttl < Duration::from_secs(1) {
            out.push(ConfigProblem::new(
                "retention.finished_ttl",
                format!("{} must be at least 1s", fmt_dur(self.finished_ttl)),
            ));
        }
        if self.max_analyses == 0 {
            out.push(ConfigProblem::new(
                "retention.max_analyses",
                "must be at least 1",
            ));
        }
        out
    }
}

/// `[server]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the API listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest accepted request body.
    #[serde(default = "default_body_limit")]
    pub max_body_bytes: usize,
    /// PEM certificate chain: with `tls_key`, the API is served over TLS only.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: when set, clients must present a certificate signed by it (mutual TLS).
    #[serde(default)]
    pub tls_client_ca: Option<PathBuf>,
    /// How often the TLS files are checked for changes (reloaded without a restart).
    #[serde(default = "default_tls_reload", with = "humantime_serde")]
    pub tls_reload_interval: Duration,
    /// Longest a client may take to finish its TLS handshake.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Longest a client may take to send a request's head (request line and headers), and
    /// longest a kept-alive connection may wait idle for its next request.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Open API connections at most; past it the oldest connection that has not sent a request
    /// yet is closed for the new one.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections of one peer address that have not sent a request yet (still in their TLS
    /// handshake or request head), at most; its oldest such one is closed for a new one.
    #[serde(default = "default_max_pending_per_peer")]
    pub max_pending_per_peer: usize,
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_connections() -> usize {
    1024
}

fn default_max_pending_per_peer() -> usize {
    64
}

fn default_tls_reload() -> Duration {
    Duration::from_secs(10)
}

impl ServerConfig {
    /// The connection limits (`handshake_timeout`, `header_read_timeout`, `max_connections`,
    /// `max_pending_per_peer`).
    pub(crate) fn limits(&self) -> crate::server::Limits {
        crate::server::Limits {
            handshake_timeout: self.handshake_timeout,
            header_read_timeout: self.header_read_timeout,
            max_connections: self.max_connections,
            max_pending_per_peer: self.max_pending_per_peer,
        }
    }

    /// The TLS files, when TLS is on.
    pub fn tls_files(&self) -> Option<crate::tls::ServerTlsFiles> {
        Some(crate::tls::ServerTlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// Problems of `[server]`, including TLS files that do not load or do not match.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => out.push(ConfigProblem::new(
                "server.tls_key",
                "is missing: tls_cert needs its key",
            )),
            (None, Some(_)) => out.push(ConfigProblem::new(
                "server.tls_cert",
                "is missing: tls_key needs its certificate",
            )),
            _ => {}
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            out.push(ConfigProblem::new(
                "server.tls_client_ca",
                "needs tls_cert and tls_key (client certificates are a TLS feature)",
            ));
        }
        if let Some(files) = self.tls_files() {
            if let Err(e) = files.load() {
                let key = match &e {
                    crate::tls::TlsError::Read { path, .. }
                    | crate::tls::TlsError::Pem { path, .. }
                        if Some(path) == self.tls_key.as_ref() =>
                    {
                        "server.tls_key"
                    }
                    crate::tls::TlsError::Read { path, .. }
                    | crate::tls::TlsError::Pem { path, .. }
                        if Some(path) == self.tls_client_ca.as_ref() =>
                    {
                        "server.tls_client_ca"
                    }
                    _ => "server.tls_cert",
                };
                out.push(ConfigProblem::new(key, e.to_string()));
            }
        }
        if self.tls_reload_interval < Duration::from_millis(100) {
            out.push(ConfigProblem::new(
                "server.tls_reload_interval",
                "must be at least 100ms",
            ));
        }
        for (key, d) in [
            ("server.handshake_timeout", self.handshake_timeout),
            ("server.header_read_timeout", self.header_read_timeout),
        ] {
            if d < Duration::from_millis(100) || d > Duration::from_secs(300) {
                out.push(ConfigProblem::new(
                    key,
                    format!("{} must be between 100ms and 5m", fmt_dur(d)),
                ));
            }
        }
        if self.max_connections == 0 {
            out.push(ConfigProblem::new(
                "server.max_connections",
                "must be at least 1",
            ));
        }
        if self.max_pending_per_peer == 0 || self.max_pending_per_peer > self.max_connections {
            out.push(ConfigProblem::new(
                "server.max_pending_per_peer",
                format!(
                    "must be between 1 and max_connections ({})",
                    self.max_connections
                ),
            ));
        }
        out
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9400))
}
fn default_body_limit() -> usize {
    64 * 1024
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_body_bytes: default_body_limit(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_reload_interval: default_tls_reload(),
            handshake_timeout: default_handshake_timeout(),
            header_read_timeout: default_header_read_timeout(),
            max_connections: default_max_connections(),
            max_pending_per_peer: default_max_pending_per_peer(),
        }
    }
}

/// `[scrape]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// Time between two scrapes of one target.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Per-scrape timeout (connect + body).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Random spread of each scrape, as a fraction of the interval (0 to 0.5).
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Largest page accepted, after decompression.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Scrapes in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// A target whose last good scrape is older than this is stale; default 3 x interval.
    #[serde(default, with = "humantime_serde::option")]
    pub stale_after: Option<Duration>,
    /// TLS for https targets (`[scrape.tls]`): extra CA, client certificate, verification.
    #[serde(default)]
    pub tls: crate::tls::ClientTls,
    /// Plausibility limits (`[scrape.limits]`): a page that breaks one is quarantined, its data
    /// never judged, and its target blocks GO while the quarantine lasts.
    #[serde(default)]
    pub limits: crate::cohort::Limits,
}

fn default_interval() -> Duration {
    Duration::from_secs(15)
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_jitter() -> f64 {
    0.1
}
fn default_max_body() -> usize {
    16 * 1024 * 1024
}
fn default_concurrency() -> usize {
    64
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            timeout: default_timeout(),
            jitter: default_jitter(),
            max_body_bytes: default_max_body(),
            concurrency: default_concurrency(),
            stale_after: None,
            tls: Default::default(),
            limits: Default::default(),
        }
    }
}

impl ScrapeConfig {
    /// The staleness threshold in force.
    pub fn stale_after(&self) -> Duration {
        self.stale_after.unwrap_or(self.interval * 3)
    }
}

/// One `[[targets]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticTarget {
    /// Full URL of the metrics page.
    pub url: String,
    /// Target labels (`role`, `namespace`, `pod`, `revision`, `cluster`, any other).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `[discovery]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Prometheus `file_sd` JSON files, re-read when they change.
    #[serde(default)]
    pub file_sd: Vec<PathBuf>,
    /// How often the files are checked for changes.
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub refresh: Duration,
    /// Kubernetes discovery (`[discovery.kubernetes]`), off when absent.
    #[serde(default)]
    pub kubernetes: Option<crate::discovery::kubernetes::KubernetesConfig>,
}

fn default_refresh() -> Duration {
    Duration::from_secs(5)
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            file_sd: Vec::new(),
            refresh: default_refresh(),
            kubernetes: None,
        }
    }
}

/// `[queries]`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueriesConfig {
    /// Directory of check files (`*.toml`); the built-in pack is used when unset.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

/// `[judge]`: defaults for analyses that do not set their own.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeConfig {
    /// False-alarm budget of one analysis over its whole run.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// No GO before this much time.
    #[serde(default = "default_min_duration", with = "humantime_serde")]
    pub min_duration: Duration,
    /// INCONCLUSIVE after this much time without a decision.
    #[serde(default = "default_max_duration", with = "humantime_serde")]
    pub max_duration: Duration,
    /// How often analyses take in new deltas; default the scrape interval.
    #[serde(default, with = "humantime_serde::option")]
    pub tick: Option<Duration>,
    /// Fewest requests (exposure) each cohort must have seen before a GO.
    #[serde(default = "default_min_exposure")]
    pub min_exposure: f64,
    /// Largest share of a cohort's targets that may be stale or never scraped with a GO still
    /// possible (0 to below 1; default 0: any missing target blocks GO).
    #[serde(default)]
    pub max_stale_fraction: f64,
    /// Fewest freshly scraped targets each cohort needs before a GO (default 1).
    #[serde(default = "default_min_fresh_targets")]
    pub min_fresh_targets: usize,
    /// Let the checks' `slo` certify GO ("GO by SLO: relative comparison not certified") whatever
    /// the baseline, and hold GO while a canary is above it. Off by default: GO means "not worse
    /// than the baseline beyond the margin", and a check's SLO certifies only where the baseline
    /// has no events (nothing to compare with).
    #[serde(default)]
    pub slo_go: bool,
    /// How long an analysis waits for a scraped target that its baseline or canary selector
    /// matches (PENDING, saying so) before it ends INCONCLUSIVE: a typo'd revision or label.
    #[serde(default = "default_no_target_grace", with = "humantime_serde")]
    pub no_target_grace: Duration,
    /// Let analyses GO although the version skew guard cannot judge a revision their proxies use
    /// because no istiod of it is observed (e.g. istiod is not scraped). Off by default: then
    /// such analyses stay PENDING and end INCONCLUSIVE at `max_duration`. Turning it on accepts
    /// that a proxy newer than its control plane, or too far behind it, goes unnoticed.
    #[serde(default)]
    pub allow_go_without_istiod_skew_check: bool,
}

fn default_no_target_grace() -> Duration {
    Duration::from_secs(300)
}

fn default_min_fresh_targets() -> usize {
    1
}

/// Problems of data-quality thresholds at `prefix` (`judge` or `analyses[i]`).
fn check_quality(
    out: &mut Vec<ConfigProblem>,
    prefix: &str,
    max_stale_fraction: Option<f64>,
    min_fresh_targets: Option<usize>,
) {
    if let Some(f) = max_stale_fraction {
        if !(0.0..1.0).contains(&f) {
            out.push(ConfigProblem::new(
                format!("{prefix}.max_stale_fraction"),
                format!("{f} is outside [0, 1)"),
            ));
        }
    }
    if min_fresh_targets == Some(0) {
        out.push(ConfigProblem::new(
            format!("{prefix}.min_fresh_targets"),
            "must be at least 1: a verdict is never GO without fresh data",
        ));
    }
}

fn default_alpha() -> f64 {
    0.05
}
fn default_min_duration() -> Duration {
    Duration::from_secs(300)
}
fn default_max_duration() -> Duration {
    Duration::from_secs(3600)
}
fn default_min_exposure() -> f64 {
    100.0
}

impl Default for JudgeConfig {
    fn default() -> Self {
        Self {
            alpha: default_alpha(),
            min_duration: default_min_duration(),
            max_duration: default_max_duration(),
            tick: None,
            min_exposure: default_min_exposure(),
            max_stale_fraction: 0.0,
            min_fresh_targets: default_min_fresh_targets(),
            slo_go: false,
            no_target_grace: default_no_target_grace(),
            allow_go_without_istiod_skew_check: false,
        }
    }
}

/// One `[[analyses]]` entry (also the body of `POST /v1/analyses`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnalysisConfig {
    /// Human name, unique among running analyses.
    pub name: String,
    /// Baseline cohort selector, e.g. `{revision="1-24-2"}`.
    pub baseline: String,
    /// Canary cohort selector, e.g. `{revision="1-25-0"}`.
    pub canary: String,
    /// Check names from `queries/`; all loaded checks when empty.
    #[serde(default)]
    pub checks: Vec<String>,
    /// Overrides `[judge].alpha`.
    #[serde(default)]
    pub alpha: Option<f64>,
    /// Overrides `[judge].min_duration`.
    #[serde(default, with = "humantime_serde::option")]
    pub min_duration: Option<Duration>,
    /// Overrides `[judge].max_duration`.
    #[serde(default, with = "humantime_serde::option")]
    pub max_duration: Option<Duration>,
    /// Overrides `[judge].min_exposure`.
    #[serde(default)]
    pub min_exposure: Option<f64>,
    /// Overrides `[judge].max_stale_fraction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stale_fraction: Option<f64>,
    /// Overrides `[judge].min_fresh_targets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_fresh_targets: Option<usize>,
    /// Rollback triggers decided before the upgrade (README, "Istio upgrade intelligence").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollback: Vec<crate::istio::trigger::TriggerConfig>,
    /// What is compared with what: `concurrent` (the default: the same workloads on both
    /// revisions at once) or `before_after` (namespaces moving in a wave; needs `moving`).
    #[serde(default, skip_serializing_if = "DesignName::is_concurrent")]
    pub design: DesignName,
    /// `before_after`: the namespaces that move. Create the analysis before they move, so it
    /// sees each workload's rate before its move.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moving: Vec<String>,
}

/// `design` of an analysis.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DesignName {
    /// Each workload's canary pods against its own baseline pods, at the same time.
    #[default]
    Concurrent,
    /// Each moved workload after its move against itself before it, adjusted by the others.
    BeforeAfter,
}

impl DesignName {
    fn is_concurrent(&self) -> bool {
        *self == DesignName::Concurrent
    }
}

// === impl AnalysisConfig ===

impl AnalysisConfig {
    /// Every problem with this analysis, each with its key path under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.name.trim().is_empty() {
            out.push(ConfigProblem::new(
                format!("{prefix}.name"),
                "must not be empty",
            ));
        }
        for (key, sel) in [("baseline", &self.baseline), ("canary", &self.canary)] {
            match Selector::parse(sel) {
                Ok(s) if s.is_empty() => out.push(ConfigProblem::new(
                    format!("{prefix}.{key}"),
                    "selector has no matchers and would select every series",
                )),
                Ok(_) => {}
                Err(e) => out.push(ConfigProblem::new(format!("{prefix}.{key}"), e.to_string())),
            }
        }
        if self.baseline.trim() == self.canary.trim() {
            out.push(ConfigProblem::new(
                format!("{prefix}.canary"),
                "is the same selector as baseline",
            ));
        }
        if let Some(a) = self.alpha {
            check_alpha(&mut out, &format!("{prefix}.alpha"), a);
        }
        check_quality(
            &mut out,
            prefix,
            self.max_stale_fraction,
            self.min_fresh_targets,
        );
        if let (Some(min), Some(max)) = (self.min_duration, self.max_duration) {
            if min >= max {
                out.push(ConfigProblem::new(
                    format!("{prefix}.min_duration"),
                    format!(
                        "{} must be shorter than max_duration {}",
                        fmt_dur(min),
                        fmt_dur(max)
                    ),
                ));
            }
        }
        if let Some(e) = self.min_exposure {
            if !(e.is_finite() && e >= 0.0) {
                out.push(ConfigProblem::new(
                    format!("{prefix}.min_exposure"),
                    "must be a finite number >= 0",
                ));
            }
        }
        match (self.design, self.moving.is_empty()) {
            (DesignName::BeforeAfter, true) => out.push(ConfigProblem::new(
                format!("{prefix}.moving"),
                "design \"before_after\" needs the namespaces that move",
            )),
            (DesignName::Concurrent, false) => out.push(ConfigProblem::new(
                format!("{prefix}.moving"),
                "is only used with design = \"before_after\"",
            )),
            _ => {}
        }
        for (i, ns) in self.moving.iter().enumerate() {
            if ns.is_empty() || ns.contains('/') || ns.chars().any(char::is_whitespace) {
                out.push(ConfigProblem::new(
                    format!("{prefix}.moving[{i}]"),
                    format!("{ns:?} is not a namespace name"),
                ));
            }
        }
        out
    }

    /// The design the judge runs.
    pub fn judge_design(&self) -> meshgate_core::judge::Design {
        match self.design {
            DesignName::Concurrent => meshgate_core::judge::Design::Concurrent,
            DesignName::BeforeAfter => meshgate_core::judge::Design::BeforeAfter {
                moving: self.moving.clone(),
            },
        }
    }
}

fn check_alpha(out: &mut Vec<ConfigProblem>, key: &str, a: f64) {
    if !ALPHA.contains(a) {
        out.push(ConfigProblem::new(key, format!("{a} is outside {ALPHA}")));
    }
}

fn fmt_dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

pub use meshgate_core::ConfigProblem;

/// A configuration that cannot be used, with every problem found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or is not valid TOML.
    #[error("cannot load {path}: {message}")]
    Load {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The file was read but has problems.
    #[error("{} problem(s) in {path}:\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: String,
        /// All problems found.
        problems: Vec<ConfigProblem>,
    },
}

impl ConfigError {
    /// Every problem, for tests and `check-config`.
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            ConfigError::Load { .. } => &[],
        }
    }
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "prometheus",
    "server",
    "scrape",
    "targets",
    "discovery",
    "queries",
    "judge",
    "analyses",
    "alerts",
    "topology",
    "plan",
    "store",
    "retention",
    "auth",
];

// === impl Config ===

impl Config {
    /// Load `path` (TOML) with `MESHGATE_...` environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let raw = config::Config::builder()
            .add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            )
            .add_source(environment())
            .build()
            .map_err(|e| ConfigError::Load {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        Self::from_source(raw, &shown)
    }

    /// Parse TOML text (with the same environment overrides), e.g. for tests and the demo.
    pub fn from_toml(text: &str, name: &str) -> Result<Config, ConfigError> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .add_source(environment())
            .build()
            .map_err(|e| ConfigError::Load {
                path: name.to_owned(),
                message: e.to_string(),
            })?;
        Self::from_source(raw, name)
    }

    fn from_source(raw: config::Config, name: &str) -> Result<Config, ConfigError> {
        let value: serde_json::Value = raw.try_deserialize().map_err(|e| ConfigError::Load {
            path: name.to_owned(),
            message: e.to_string(),
        })?;
        let mut problems = Vec::new();
        let table = match value {
            serde_json::Value::Object(m) => m,
            serde_json::Value::Null => Default::default(),
            other => {
                return Err(ConfigError::Invalid {
                    path: name.to_owned(),
                    problems: vec![ConfigProblem::new(
                        "",
                        format!("expected a table, found {other}"),
                    )],
                })
            }
        };
        for key in table.keys() {
            if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
                problems.push(ConfigProblem::new(
                    key.clone(),
                    format!(
                        "unknown section, expected one of: {}",
                        TOP_LEVEL_KEYS.join(", ")
                    ),
                ));
            }
        }
        let cfg = Config {
            server: section(&table, "server", &mut problems),
            scrape: section(&table, "scrape", &mut problems),
            targets: list(&table, "targets", &mut problems),
            discovery: section(&table, "discovery", &mut problems),
            queries: section(&table, "queries", &mut problems),
            judge: section(&table, "judge", &mut problems),
            analyses: list(&table, "analyses", &mut problems),
            alerts: section(&table, "alerts", &mut problems),
            prometheus: optional(&table, "prometheus", &mut problems),
            topology: section(&table, "topology", &mut problems),
            plan: section(&table, "plan", &mut problems),
            store: section(&table, "store", &mut problems),
            retention: section(&table, "retention", &mut problems),
            auth: section(&table, "auth", &mut problems),
        };
        // `checks = []` is not the default set (leave the key out for that), as in the API.
        let analyses = table.get("analyses").and_then(|a| a.as_array());
        for (i, a) in analyses.into_iter().flatten().enumerate() {
            if a.get("checks")
                .and_then(|c| c.as_array())
                .is_some_and(|c| c.is_empty())
            {
                problems.push(ConfigProblem::new(
                    format!("analyses[{i}].checks"),
                    "is an empty list; name at least one check, or leave the key out for the default set",
                ));
            }
        }
        problems.extend(cfg.problems());
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                path: name.to_owned(),
                problems,
            })
        }
    }

    /// Semantic problems of an otherwise well-formed configuration.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = self.server.problems();
        let s = &self.scrape;
        out.extend(s.tls.problems("scrape.tls"));
        for (key, message) in s.limits.problems() {
            out.push(ConfigProblem::new(format!("scrape.limits.{key}"), message));
        }
        if s.interval < Duration::from_millis(100) {
            out.push(ConfigProblem::new(
                "scrape.interval",
                "must be at least 100ms",
            ));
        }
        if s.timeout.is_zero() || s.timeout > s.interval {
            out.push(ConfigProblem::new(
                "scrape.timeout",
                format!(
                    "{} must be above zero and at most the interval {}",
                    fmt_dur(s.timeout),
                    fmt_dur(s.interval)
                ),
            ));
        }
        if !(0.0..=0.5).contains(&s.jitter) {
            out.push(ConfigProblem::new(
                "scrape.jitter",
                format!("{} is outside [0, 0.5]", s.jitter),
            ));
        }
        if s.max_body_bytes < 1024 {
            out.push(ConfigProblem::new(
                "scrape.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if s.concurrency == 0 {
            out.push(ConfigProblem::new(
                "scrape.concurrency",
                "must be at least 1",
            ));
        }
        if let Some(st) = s.stale_after {
            if st < s.interval {
                out.push(ConfigProblem::new(
                    "scrape.stale_after",
                    "must be at least the scrape interval",
                ));
            }
        }
        for (i, t) in self.targets.iter().enumerate() {
            if let Err(e) = crate::discovery::check_url(&t.url) {
                out.push(ConfigProblem::new(format!("targets[{i}].url"), e));
            }
            for name in t.labels.keys() {
                if !crate::discovery::valid_label_name(name) {
                    out.push(ConfigProblem::new(
                        format!("targets[{i}].labels.{name}"),
                        "is not a valid label name",
                    ));
                }
            }
        }
        for (i, p) in self.discovery.file_sd.iter().enumerate() {
            if p.as_os_str().is_empty() {
                out.push(ConfigProblem::new(
                    format!("discovery.file_sd[{i}]"),
                    "is an empty path",
                ));
            }
        }
        out.extend(self.alerts.problems());
        if let Some(p) = &self.prometheus {
            out.extend(p.problems());
        }
        check_alpha(&mut out, "judge.alpha", self.judge.alpha);
        check_quality(
            &mut out,
            "judge",
            Some(self.judge.max_stale_fraction),
            Some(self.judge.min_fresh_targets),
        );
        if self.judge.min_duration >= self.judge.max_duration {
            out.push(ConfigProblem::new(
                "judge.min_duration",
                format!(
                    "{} must be shorter than max_duration {}",
                    fmt_dur(self.judge.min_duration),
                    fmt_dur(self.judge.max_duration)
                ),
            ));
        }
        if let Some(t) = self.judge.tick {
            if t < Duration::from_millis(100) {
                out.push(ConfigProblem::new("judge.tick", "must be at least 100ms"));
            }
        }
        for m in self.topology.problems() {
            let (k, v) = m.split_once(": ").unwrap_or(("topology", &m));
            out.push(ConfigProblem::new(k.to_owned(), v.to_owned()));
        }
        for m in self.plan.iter().flat_map(|p| p.problems()) {
            let (k, v) = m.split_once(": ").unwrap_or(("plan", &m));
            out.push(ConfigProblem::new(k.to_owned(), v.to_owned()));
        }
        out.extend(self.auth.problems());
        out.extend(self.retention.problems());
        let mut names = std::collections::HashSet::new();
        for (i, a) in self.analyses.iter().enumerate() {
            out.extend(a.problems(&format!("analyses[{i}]")));
            if !names.insert(a.name.as_str()) {
                out.push(ConfigProblem::new(
                    format!("analyses[{i}].name"),
                    format!("duplicate name {:?}", a.name),
                ));
            }
        }
        out
    }

    /// The analysis tick in force.
    pub fn tick(&self) -> Duration {
        self.judge.tick.unwrap_or(self.scrape.interval)
    }
}

/// `MESHGATE_SECTION__KEY=value` overrides. Only variables with a `__` are config keys (every key
/// lives in a section), so the daemon's other variables (`MESHGATE_LOG`, `MESHGATE_CONFIG`, ...)
/// are not mistaken for unknown sections.
fn environment() -> config::Environment {
    let vars: std::collections::HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| {
            k.strip_prefix("MESHGATE_")
                .is_some_and(|rest| rest.contains("__"))
        })
        .collect();
    config::Environment::with_prefix("MESHGATE")
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true)
        .source(Some(vars))
}

fn section<T: DeserializeOwned + Default>(
    table: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    problems: &mut Vec<ConfigProblem>,
) -> T {
    match table.get(key) {
        None => T::default(),
        Some(v) => serde_json::from_value(v.clone()).unwrap_or_else(|e| {
            problems.push(ConfigProblem::new(key, e.to_string()));
            T::default()
        }),
    }
}

fn optional<T: DeserializeOwned>(
    table: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    let v = table.get(key)?;
    serde_json::from_value(v.clone())
        .map_err(|e| problems.push(ConfigProblem::new(key, e.to_string())))
        .ok()
}

fn list<T: DeserializeOwned>(
    table: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<T> {
    match table.get(key) {
        None => Vec::new(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match serde_json::from_value(v.clone()) {
                Ok(t) => Some(t),
                Err(e) => {
                    problems.push(ConfigProblem::new(format!("{key}[{i}]"), e.to_string()));
                    None
                }
            })
            .collect(),
        Some(other) => {
            problems.push(ConfigProblem::new(
                key,
                format!("expected an array of tables, found {other}"),
            ));
            Vec::new()
        }
    }
}

impl From<meshgate_sim::SimTarget> for StaticTarget {
    fn from(t: meshgate_sim::SimTarget) -> Self {
        StaticTarget {
            url: t.url,
            labels: t.labels,
        }
    }
}

/// Load every `*.toml` in `dir`, reporting all problems at once.
impl Config {
    /// The checks this configuration runs: the built-in pack, or the files of `queries.dir`
    /// (the error lists every problem found in them).
    pub fn catalog(&self) -> Result<Catalog, String> {
        match &self.queries.dir {
            None => Ok(Catalog::builtin()),
            Some(dir) => load_checks_dir(dir).map_err(|problems| {
                let lines: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
                format!(
                    "{} problem(s) in the checks:\n{}",
                    problems.len(),
                    lines.join("\n")
                )
            }),
        }
    }
}

pub fn load_checks_dir(dir: &Path) -> Result<Catalog, Vec<ConfigProblem>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        vec![ConfigProblem::new(
            "queries.dir",
            format!("cannot read {}: {e}", dir.display()),
        )]
    })?;
    let mut texts = Vec::new();
    let mut problems = Vec::new();
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
    {
        match std::fs::read_to_string(&p) {
            Ok(t) => texts.push((p.display().to_string(), t)),
            Err(e) => problems.push(ConfigProblem::new(p.display().to_string(), e.to_string())),
        }
    }
    if texts.is_empty() && problems.is_empty() {
        problems.push(ConfigProblem::new(
            "queries.dir",
            format!("no *.toml check in {}", dir.display()),
        ));
    }
    match Catalog::from_sources(texts) {
        Ok(c) if problems.is_empty() => Ok(c),
        Ok(_) => Err(problems),
        Err(mut p) => {
            problems.append(&mut p);
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_empty_checks_list_is_a_problem_and_no_key_is_the_default_set() {
        let base = "[[analyses]]\nname = \"w\"\nbaseline = '{revision=\"a\"}'\ncanary = '{revision=\"b\"}'\n";
        let e = super::Config::from_toml(&format!("{base}checks = []\n"), "t").unwrap_err();
        assert!(
            e.to_string()
                .contains("analyses[0].checks: is an empty list"),
            "{e}"
        );
        let cfg = super::Config::from_toml(base, "t").unwrap();
        assert!(cfg.analyses[0].checks.is_empty());
    }

    use super::*;

    #[test]
    fn scrape_limits_parse_and_are_validated() {
        let cfg = Config::from_toml("[scrape.limits]\nsample_limit = 10\n", "l").unwrap();
        assert_eq!(cfg.scrape.limits.sample_limit, 10);
        assert_eq!(cfg.scrape.limits.max_increase_per_second, 250_000.0);
        let e = Config::from_toml(
            "[scrape.limits]\nmax_counter_value = 1e19\nmax_increase_per_second = 0\n",
            "l",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("scrape.limits.max_counter_value"), "{e}");
        assert!(e.contains("2^53"), "{e}");
        assert!(e.contains("scrape.limits.max_increase_per_second"), "{e}");
        let e = Config::from_toml("[scrape.limits]\nsample_limits = 1\n", "l")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sample_limits"), "{e}");
    }

    #[test]
    fn empty_file_gives_defaults() {
        let cfg = Config::from_toml("", "empty").unwrap();
        assert_eq!(cfg.scrape.interval, Duration::from_secs(15));
        assert_eq!(cfg.scrape.stale_after(), Duration::from_secs(45));
        assert_eq!(cfg.judge.alpha, 0.05);
        assert_eq!(cfg.tick(), Duration::from_secs(15));
    }

    #[test]
    fn full_file_parses() {
        let cfg = Config::from_toml(
            r#"
            [server]
            listen = "127.0.0.1:9999"
            [scrape]
            interval = "5s"
            timeout = "2s"
            [[targets]]
            url = "http://127.0.0.1:15020/stats/prometheus"
            labels = { role = "proxy", revision = "1-25-0" }
            [judge]
            alpha = 0.01
            min_duration = "1m"
            max_duration = "30m"
            [[analyses]]
            name = "wave-1"
            baseline = '{revision="1-24-2"}'
            canary = '{revision="1-25-0"}'
            checks = ["error-rate"]
            "#,
            "t",
        )
        .unwrap();
        assert_eq!(cfg.server.listen.port(), 9999);
        assert_eq!(cfg.scrape.interval, Duration::from_secs(5));
        assert_eq!(cfg.targets[0].labels["revision"], "1-25-0");
        assert_eq!(cfg.judge.min_duration, Duration::from_secs(60));
        assert_eq!(cfg.analyses[0].checks, vec!["error-rate"]);
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let err = Config::from_toml(
            r#"
            bogus = 1
            [scrape]
            intervl = "5s"
            [[targets]]
            url = "ftp://x"
            [[targets]]
            url = "http://ok:1/metrics"
            labels = { "bad-name" = "x" }
            [judge]
            alpha = 0.9
            min_duration = "2h"
            max_duration = "1h"
            [[analyses]]
            name = "a"
            baseline = '{revision="1"'
            canary = '{revision="2"}'
            "#,
            "t",
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        for want in [
            "bogus",
            "scrape",
            "targets[0].url",
            "targets[1].labels.bad-name",
            "judge.alpha",
            "judge.min_duration",
            "analyses[0].baseline",
        ] {
            assert!(keys.contains(&want), "missing {want} in {keys:?}");
        }
        let text = err.to_string();
        assert!(text.contains("unknown field `intervl`"), "{text}");
    }

    #[test]
    fn other_meshgate_variables_are_not_config_keys() {
        std::env::set_var("MESHGATE_LOG", "warn");
        let cfg = Config::from_toml("", "t");
        std::env::remove_var("MESHGATE_LOG");
        assert!(cfg.is_ok(), "{:?}", cfg.err());
    }

    #[test]
    fn environment_overrides_the_file() {
        // A unique variable name keeps this test independent of others running in parallel.
        std::env::set_var("MESHGATE_SERVER__MAX_BODY_BYTES", "12345");
        let cfg = Config::from_toml("[server]\nmax_body_bytes = 99999\n", "t");
        std::env::remove_var("MESHGATE_SERVER__MAX_BODY_BYTES");
        assert_eq!(cfg.unwrap().server.max_body_bytes, 12345);
    }
}
