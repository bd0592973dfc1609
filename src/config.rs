//! Daemon configuration: one TOML file plus `MESHGATE_...` environment overrides, validated all at once.
//!
//! Loading goes through the `config` crate (file, then environment with `__` as the path
//! separator: `MESHGATE_SCRAPE__INTERVAL=5s`). Each section is then deserialized on its own
//! with unknown keys rejected, and every semantic problem is collected with its key path, so one
//! run of `meshgate check-config` shows all of them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::judge::{Catalog, GoCertificate};

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
    pub plan: Option<crate::plan::Plan>,
    /// Where state survives restarts.
    pub store: StoreConfig,
    /// How long finished analyses stay, how many may be held.
    pub retention: RetentionConfig,
    /// Who may call the API.
    pub auth: crate::auth::AuthConfig,
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
    /// Longest a client may take to send a request's body once its head has arrived.
    #[serde(default = "default_body_read_timeout", with = "humantime_serde")]
    pub body_read_timeout: Duration,
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

fn default_body_read_timeout() -> Duration {
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
            body_read_timeout: self.body_read_timeout,
            max_body_bytes: self.max_body_bytes,
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
            ("server.body_read_timeout", self.body_read_timeout),
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
            body_read_timeout: default_body_read_timeout(),
            max_connections: default_max_connections(),
            max_pending_per_peer: default_max_pending_per_peer(),
        }
    }
}

/// `[queries]`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueriesConfig {
    /// Directory of check files (`*.toml`) that replaces the built-in pack; the built-in pack is
    /// used when unset.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Directories of check files added to the pack (the built-in one, or `dir`'s). A check
    /// whose name is already in the pack is an error: to replace a check, use `dir`.
    #[serde(default)]
    pub extra_dirs: Vec<PathBuf>,
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
    /// Which test certifies GO: `anytime` (default; the e-process, valid however long an
    /// analysis runs) or `horizon` (alpha spent over `max_duration` on the exact conditional
    /// law: GO about twice as often within the hour on quiet canaries, valid only up to
    /// `max_duration`; ratio checks in the concurrent design only). docs/statistics.md, 3c.
    #[serde(default)]
    pub go_certificate: GoCertificate,
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
            go_certificate: Default::default(),
            no_target_grace: default_no_target_grace(),
            allow_go_without_istiod_skew_check: false,
        }
    }
}

pub use crate::alert::{AlertsConfig, WebhookConfig};
use crate::analysis::{check_alpha, check_quality, fmt_dur};
pub use crate::analysis::{AnalysisConfig, DesignName};
pub use crate::discovery::{DiscoveryConfig, StaticTarget};
pub use crate::scrape::ScrapeConfig;
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
        blame_environment(&mut problems, &environment_keys());
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
        Some(v) => decode(key, v, problems).unwrap_or_default(),
    }
}

fn optional<T: DeserializeOwned>(
    table: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    decode(key, table.get(key)?, problems)
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
            .filter_map(|(i, v)| decode(&format!("{key}[{i}]"), v, problems))
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

/// At most this many problems are reported for one section (a file of garbage stays readable).
const MAX_PROBLEMS_PER_SECTION: usize = 32;

/// Decodes the value at `key`, reporting every bad key in it with its full path
/// (`judge.min_duration`, `targets[2].url`), not only the first: after an error, the key at fault
/// is taken out and the rest decoded again. A key taken out that the type requires is not
/// reported a second time as missing.
fn decode<T: DeserializeOwned>(
    key: &str,
    value: &serde_json::Value,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    use serde_path_to_error::Segment;
    let mut value = value.clone();
    let mut taken_out: Vec<String> = Vec::new();
    for _ in 0..MAX_PROBLEMS_PER_SECTION {
        let e = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(t) if taken_out.is_empty() => return Some(t),
            Ok(_) => return None,
            Err(e) => e,
        };
        let mut path: Vec<Segment> = e.path().iter().cloned().collect();
        let message = e.into_inner().to_string();
        // serde names a missing field in the message only, at the path of its table.
        if let Some(field) = quoted_field(&message, "missing field `") {
            path.push(Segment::Map { key: field });
        }
        let full = dotted(key, &path);
        if taken_out.contains(&full) {
            return None;
        }
        problems.push(ConfigProblem::new(full.clone(), message));
        if !take_out(&mut value, &path) {
            return None;
        }
        taken_out.push(full);
    }
    None
}

/// `field` from a serde message starting with `prefix` and the field in backquotes.
fn quoted_field(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    Some(rest[..rest.find('`')?].to_owned())
}

/// `key` followed by `path`: `.name` for a table key, `[i]` for an array item.
fn dotted(key: &str, path: &[serde_path_to_error::Segment]) -> String {
    use serde_path_to_error::Segment;
    let mut out = key.to_owned();
    for seg in path {
        match seg {
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// Removes the table key at `path` from `value`, so decoding can go on past it. False when the
/// path does not end in a table key that exists (an array item, the section itself): decoding
/// stops there rather than shift the indices of the items after it.
fn take_out(value: &mut serde_json::Value, path: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut at = value;
    for seg in parents {
        at = match (seg, at) {
            (Segment::Map { key }, serde_json::Value::Object(m)) => match m.get_mut(key) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, serde_json::Value::Array(a)) => match a.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, at) {
        (Segment::Map { key }, serde_json::Value::Object(m)) => m.remove(key).is_some(),
        _ => false,
    }
}

/// The config keys set by `MESHGATE_SECTION__KEY` variables, as (dotted key, variable).
fn environment_keys() -> Vec<(String, String)> {
    std::env::vars()
        .filter_map(|(k, _)| {
            let rest = k.strip_prefix("MESHGATE_")?;
            rest.contains("__")
                .then(|| (rest.to_lowercase().replace("__", "."), k.clone()))
        })
        .collect()
}

/// Marks each problem whose key an environment variable set with that variable, so an error is
/// not blamed on the file.
fn blame_environment(problems: &mut [ConfigProblem], vars: &[(String, String)]) {
    for p in problems {
        let key = p.key.to_lowercase();
        if let Some((_, var)) = vars.iter().find(|(k, _)| {
            key == *k
                || key
                    .strip_prefix(k.as_str())
                    .is_some_and(|r| r.starts_with('.'))
        }) {
            p.source = Some(var.clone());
        }
    }
}

// === the check pack ===

impl Config {
    /// The checks this configuration runs: the built-in pack, or the files of `queries.dir`,
    /// and the files of every `queries.extra_dirs` entry (the error lists every problem found in
    /// them).
    pub fn catalog(&self) -> Result<Catalog, String> {
        let mut texts: Vec<(String, String)> = Vec::new();
        let mut problems = Vec::new();
        match &self.queries.dir {
            None => texts.extend(Catalog::builtin_sources()),
            Some(dir) => read_checks(dir, "queries.dir", &mut texts, &mut problems),
        }
        for (i, dir) in self.queries.extra_dirs.iter().enumerate() {
            read_checks(
                dir,
                &format!("queries.extra_dirs[{i}]"),
                &mut texts,
                &mut problems,
            );
        }
        let catalog = Catalog::from_sources(texts).map_err(|mut p| problems.append(&mut p));
        match catalog {
            Ok(c) if problems.is_empty() => Ok(c),
            _ => {
                let lines: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
                Err(format!(
                    "{} problem(s) in the checks:\n{}",
                    problems.len(),
                    lines.join("\n")
                ))
            }
        }
    }
}

/// Load every `*.toml` in `dir` as the whole pack, reporting all problems at once.
pub fn load_checks_dir(dir: &Path) -> Result<Catalog, Vec<ConfigProblem>> {
    let mut texts = Vec::new();
    let mut problems = Vec::new();
    read_checks(dir, "queries.dir", &mut texts, &mut problems);
    match Catalog::from_sources(texts) {
        Ok(c) if problems.is_empty() => Ok(c),
        Ok(_) => Err(problems),
        Err(mut p) => {
            problems.append(&mut p);
            Err(problems)
        }
    }
}

/// Reads the `*.toml` files of `dir` (the value of `key`) in name order into `texts`; a directory
/// that cannot be read or holds no check is a problem at `key`.
fn read_checks(
    dir: &Path,
    key: &str,
    texts: &mut Vec<(String, String)>,
    problems: &mut Vec<ConfigProblem>,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(ConfigProblem::new(
                key,
                format!("cannot read {}: {e}", dir.display()),
            ));
            return;
        }
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let before = (texts.len(), problems.len());
    for p in paths
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
    {
        match std::fs::read_to_string(&p) {
            Ok(t) => texts.push((p.display().to_string(), t)),
            Err(e) => problems.push(ConfigProblem::new(p.display().to_string(), e.to_string())),
        }
    }
    if (texts.len(), problems.len()) == before {
        problems.push(ConfigProblem::new(
            key,
            format!("no *.toml check in {}", dir.display()),
        ));
    }
}

#[cfg(test)]
mod tests {
    /// `[queries] extra_dirs` adds checks to the built-in pack (or to `dir`'s); a name already in
    /// the pack and a directory that cannot be read are problems naming the key.
    #[test]
    fn extra_dirs_add_to_the_pack() {
        let extra = tempfile::tempdir().unwrap();
        let builtin = include_str!("../queries/error-rate.toml");
        let mine = builtin.replace("name = \"error-rate\"", "name = \"checkout-5xx\"");
        std::fs::write(extra.path().join("checkout-5xx.toml"), &mine).unwrap();
        let toml = |dirs: &str| format!("[queries]\nextra_dirs = [{dirs}]\n");
        let quoted = format!("{:?}", extra.path().display().to_string());
        let cfg = super::Config::from_toml(&toml(&quoted), "t.toml").unwrap();
        let cat = cfg.catalog().unwrap();
        let base = crate::judge::Catalog::builtin();
        assert_eq!(cat.names().len(), base.names().len() + 1);
        assert!(cat.get("checkout-5xx").is_some() && cat.get("error-rate").is_some());
        assert!(cat.default_names().contains(&"checkout-5xx".to_owned()));

        // A second copy of a built-in check's name is refused, naming both files.
        std::fs::write(extra.path().join("again.toml"), builtin).unwrap();
        let cfg = super::Config::from_toml(&toml(&quoted), "t.toml").unwrap();
        let e = cfg.catalog().unwrap_err();
        assert!(
            e.contains("again.toml") && e.contains("\"error-rate\" is also defined in"),
            "{e}"
        );

        let cfg = super::Config::from_toml(&toml("\"/nonexistent/checks\""), "t.toml").unwrap();
        let e = cfg.catalog().unwrap_err();
        assert!(
            e.contains("queries.extra_dirs[0]: cannot read /nonexistent/checks"),
            "{e}"
        );
    }

    /// Every bad key of a section is reported in one run, each with its full path, and a key
    /// taken out to go on is not reported again as missing.
    #[test]
    fn every_problem_of_a_section_is_reported_with_its_key_path() {
        let err = super::Config::from_toml(
            r#"
[judge]
alpha = "a lot"
min_duration = 5
bogus = 1
max_duration = "2h"

[[targets]]
url = "http://127.0.0.1:1/metrics"
role = "canary"

[[targets]]
url = 7

[plan]
to_revision = 4
waves = []
"#,
            "t.toml",
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        for want in [
            "judge.alpha",
            "judge.min_duration",
            "judge.bogus",
            "targets[1].url",
            "plan.to_revision",
            "plan.from_revision",
        ] {
            assert!(keys.contains(&want), "{want} not in {keys:?}\n{err}");
        }
        assert!(!keys.contains(&"judge.max_duration"), "{keys:?}");
        assert_eq!(
            keys.iter().filter(|k| **k == "judge.alpha").count(),
            1,
            "{keys:?}"
        );
        let shown = err.to_string();
        assert!(
            shown.contains("judge.bogus: unknown field `bogus`"),
            "{shown}"
        );
        assert!(err.problems().iter().all(|p| p.source.is_none()));
    }

    #[test]
    fn a_problem_from_a_variable_names_the_variable() {
        let mut problems = vec![
            meshgate_core::ConfigProblem::new("judge.alpha", "invalid type"),
            meshgate_core::ConfigProblem::new("judge.alphabet", "unknown field"),
            meshgate_core::ConfigProblem::new("scrape.limits.max_series", "too small"),
        ];
        let vars = vec![
            ("judge.alpha".to_owned(), "MESHGATE_JUDGE__ALPHA".to_owned()),
            (
                "scrape.limits".to_owned(),
                "MESHGATE_SCRAPE__LIMITS".to_owned(),
            ),
        ];
        super::blame_environment(&mut problems, &vars);
        assert_eq!(problems[0].source.as_deref(), Some("MESHGATE_JUDGE__ALPHA"));
        assert_eq!(problems[1].source, None);
        assert_eq!(
            problems[2].source.as_deref(),
            Some("MESHGATE_SCRAPE__LIMITS")
        );
        assert!(problems[0]
            .to_string()
            .ends_with("(set by the environment variable MESHGATE_JUDGE__ALPHA)"));
    }

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
    fn go_certificate_is_read_and_a_bad_one_is_named() {
        let cfg = Config::from_toml("[judge]\ngo_certificate = \"horizon\"\n", "t").unwrap();
        assert_eq!(cfg.judge.go_certificate, GoCertificate::Horizon);
        let cfg = Config::from_toml("", "t").unwrap();
        assert_eq!(cfg.judge.go_certificate, GoCertificate::Anytime);
        let err = Config::from_toml("[judge]\ngo_certificate = \"later\"\n", "t").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("judge.go_certificate") || text.contains("go_certificate"),
            "{text}"
        );
        assert!(text.contains("later") && text.contains("horizon"), "{text}");
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
            "scrape.intervl",
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
