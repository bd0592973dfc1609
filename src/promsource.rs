//! A Prometheus-compatible backend as the data source (Prometheus, Thanos, Mimir, Cortex,
//! VictoriaMetrics): the same checks, evaluated through `GET /api/v1/query`.
//!
//! Exact counts, not `increase()`: on every tick the source asks for the raw cumulative value of
//! each series a check reads, restricted to one cohort
//! (`{__name__="istio_requests_total", reporter="destination", revision="1-25-0"}`), and feeds
//! them through the same reset-aware per-series delta and routing code as direct scraping
//! ([`TargetAccumulator`]). `increase()` would extrapolate each series to the edges of its window
//! (non-integer, biased counts that differ from what the pods served), and a `sum()` of counters
//! before the delta hides a reset of one pod behind the growth of the others. Per-series values
//! keep the evidence identical to direct scraping, up to scrape timing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::cohort::{RoutedAnalysis, Routing, Selector, Side, TargetAccumulator};
use crate::judge::{CheckKind, CheckSpec};
use crate::scrape::{HealthMap, TargetHealth, TargetReport};
use crate::scrape::{OutcomeLabels, ScrapeMetrics};

/// `[prometheus]`: read from a Prometheus-compatible API instead of scraping targets.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Base URL, e.g. `http://prometheus:9090` or `http://mimir/prometheus`.
    pub url: String,
    /// File holding a bearer token (re-read on every query, so rotation works).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Extra headers, e.g. `X-Scope-OrgID` for Mimir/Cortex tenants.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per-query timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries on transport errors, 429 and 5xx (never on 4xx: a PromQL error does not heal).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// TLS to the backend (`[prometheus.tls]`): extra CA, client certificate (mTLS), verification.
    #[serde(default)]
    pub tls: crate::tls::ClientTls,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retries() -> u32 {
    2
}

impl PrometheusConfig {
    /// Problems with this section, with key paths.
    pub fn problems(&self) -> Vec<meshgate_core::ConfigProblem> {
        let mut out = self.tls.problems("prometheus.tls");
        if let Err(e) = crate::discovery::check_url(&self.url) {
            out.push(meshgate_core::ConfigProblem::new("prometheus.url", e));
        }
        if self.timeout.is_zero() {
            out.push(meshgate_core::ConfigProblem::new(
                "prometheus.timeout",
                "must be above zero",
            ));
        }
        for k in self.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                out.push(meshgate_core::ConfigProblem::new(
                    format!("prometheus.headers.{k}"),
                    "is not a valid header name",
                ));
            }
        }
        if self.retries > 10 {
            out.push(meshgate_core::ConfigProblem::new(
                "prometheus.retries",
                "must be at most 10",
            ));
        }
        out
    }
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The backend answered with a PromQL or API error.
    #[error("prometheus {status}: {error_type}: {error}")]
    Api {
        /// HTTP status.
        status: u16,
        /// `errorType` (bad_data, execution, timeout, ...).
        error_type: String,
        /// `error`.
        error: String,
    },
    /// Not the JSON the API documents.
    #[error("unexpected answer ({status}): {message}")]
    Decode {
        /// HTTP status.
        status: u16,
        /// What was wrong.
        message: String,
    },
    /// No answer.
    #[error("request failed: {0}")]
    Transport(String),
    /// No answer in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The bearer token file cannot be read or holds no token (at start).
    #[error("{0}")]
    Token(String),
}

impl QueryError {
    fn retryable(&self) -> bool {
        match self {
            QueryError::Api { status, .. } | QueryError::Decode { status, .. } => {
                *status == 429 || (*status >= 500 && *status != 501)
            }
            QueryError::Transport(_) | QueryError::Timeout(_) => true,
            QueryError::Token(_) => false,
        }
    }
}

/// One series of an instant vector.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct VectorSample {
    /// Labels, including `__name__` unless a function dropped it.
    pub metric: BTreeMap<String, String>,
    /// `[unix seconds, "value"]`.
    pub value: (f64, String),
}

#[derive(Deserialize)]
struct ApiAnswer {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

/// A client of the Prometheus HTTP API.
#[derive(Clone)]
pub struct PromClient {
    http: reqwest::Client,
    cfg: PrometheusConfig,
    /// `bearer_token_file`, re-read when it changes.
    token: Option<std::sync::Arc<crate::secret::TokenFile>>,
}

// === impl PromClient ===

impl PromClient {
    /// Build (rustls, TLS verification on).
    pub fn new(cfg: PrometheusConfig) -> Result<Self, QueryError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("meshgate/", env!("CARGO_PKG_VERSION")))
            .timeout(cfg.timeout)
            .gzip(true);
        let http = cfg
            .tls
            .apply(http, "prometheus")
            .map_err(QueryError::Transport)?
            .build()
            .map_err(|e| QueryError::Transport(e.to_string()))?;
        let token = match &cfg.bearer_token_file {
            Some(p) => Some(std::sync::Arc::new(
                crate::secret::TokenFile::open("prometheus.bearer_token_file", p)
                    .map_err(QueryError::Token)?,
            )),
            None => None,
        };
        Ok(Self { http, cfg, token })
    }

    /// Evaluate an instant query; retries what can heal, with exponential backoff.
    pub async fn query(&self, promql: &str) -> Result<Vec<VectorSample>, QueryError> {
        let mut attempt = 0;
        loop {
            match self.query_once(promql).await {
                Err(e) if e.retryable() && attempt < self.cfg.retries => {
                    attempt += 1;
                    debug!(error = %e, attempt, "prometheus query retried");
                    tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
                }
                other => return other,
            }
        }
    }

    async fn query_once(&self, promql: &str) -> Result<Vec<VectorSample>, QueryError> {
        let url = format!("{}/api/v1/query", self.cfg.url.trim_end_matches('/'));
        let mut req = self.http.post(url).form(&[("query", promql)]);
        for (k, v) in &self.cfg.headers {
            req = req.header(k, v);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.token());
        }
        let resp = tokio::time::timeout(self.cfg.timeout, req.send())
            .await
            .map_err(|_| QueryError::Timeout(self.cfg.timeout))?
            .map_err(|e| QueryError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = tokio::time::timeout(self.cfg.timeout, resp.bytes())
            .await
            .map_err(|_| QueryError::Timeout(self.cfg.timeout))?
            .map_err(|e| QueryError::Transport(e.to_string()))?;
        let answer: ApiAnswer = serde_json::from_slice(&body).map_err(|e| QueryError::Decode {
            status,
            message: format!(
                "{e}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
        })?;
        if answer.status != "success" {
            return Err(QueryError::Api {
                status,
                error_type: answer.error_type.unwrap_or_default(),
                error: answer.error.unwrap_or_default(),
            });
        }
        let data = answer.data.ok_or(QueryError::Decode {
            status,
            message: "no data".into(),
        })?;
        if data.result_type != "vector" {
            return Err(QueryError::Decode {
                status,
                message: format!("expected an instant vector, got {}", data.result_type),
            });
        }
        serde_json::from_value(data.result).map_err(|e| QueryError::Decode {
            status,
            message: e.to_string(),
        })
    }
}

/// The series selectors a check reads for one cohort: the check's own matchers plus the cohort's
/// (two for checks whose events come from another family).
pub fn series_selectors(check: &CheckSpec, cohort: &Selector) -> Vec<String> {
    let one = |name: &str, select: &Selector, extra: Option<String>| {
        let mut parts = vec![format!("__name__={name:?}")];
        for m in [select.to_promql_matchers(), cohort.to_promql_matchers()] {
            if !m.is_empty() {
                parts.push(m);
            }
        }
        parts.extend(extra);
        format!("{{{}}}", parts.join(", "))
    };
    match &check.kind {
        CheckKind::Ratio { .. } => vec![one(&check.metric, &check.select, None)],
        CheckKind::EventsRatio {
            events_metric,
            events_select,
        } => vec![
            one(&check.metric, &check.select, None),
            one(events_metric, events_select, None),
        ],
        CheckKind::HistogramTail { boundaries } => {
            // Only the buckets the test reads: its boundaries and +Inf (the exposure).
            // Regex-escaped, then escaped again for the PromQL string literal (`0\\.5`).
            let les: Vec<String> = boundaries
                .iter()
                .flat_map(|b| le_spellings(*b))
                .map(|l| regex::escape(&l).replace('\\', "\\\\"))
                .collect();
            let le = format!("le=~\"{}|\\\\+Inf\"", les.join("|"));
            vec![one(
                &format!("{}_bucket", check.metric),
                &check.select,
                Some(le),
            )]
        }
    }
}

/// The ways exporters print an `le` bound: Envoy prints integers (`3600000`), Go's client
/// (istiod) prints shortest `%g` (`1e+06`, `3.6e+06`); both are matched.
fn le_spellings(b: f64) -> Vec<String> {
    let mut out = vec![format!("{b}")];
    if b.abs() >= 1e6 && b.is_finite() {
        let e = b.abs().log10().floor() as i32;
        let m = b / 10f64.powi(e);
        out.push(format!("{m}e+{e:02}"));
    }
    out
}

/// Order samples as an exporter prints them: by series (labels other than `le`), then by `le`.
pub fn sort_like_a_page(samples: &mut [VectorSample]) {
    let le = |s: &VectorSample| {
        s.metric
            .get("le")
            .and_then(|v| crate::cohort::parse_le(v))
            .unwrap_or(f64::NEG_INFINITY)
    };
    samples.sort_by(|a, b| {
        let ka = a.metric.iter().filter(|(k, _)| k.as_str() != "le");
        let kb = b.metric.iter().filter(|(k, _)| k.as_str() != "le");
        ka.cmp(kb).then(le(a).total_cmp(&le(b)))
    });
}

/// Render a vector as exposition text, so it goes through the same ingest path as a scrape.
pub fn render_vector(out: &mut String, samples: &[VectorSample]) {
    for s in samples {
        let Some(name) = s.metric.get("__name__") else {
            continue;
        };
        let labels: Vec<(&str, &str)> = s
            .metric
            .iter()
            .filter(|(k, _)| k.as_str() != "__name__")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let value = match s.value.1.as_str() {
            "+Inf" | "Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or(f64::NAN),
        };
        crate::parse::render_sample(out, name, &labels, value, None);
    }
}

/// Evaluates every analysis' checks against the backend each tick and sends routed deltas to the
/// engine, under one virtual target per analysis and cohort (`prometheus:<analysis>:<cohort>`).
pub struct PromSource {
    client: PromClient,
    base: String,
    interval: Duration,
    health: HealthMap,
    metrics: ScrapeMetrics,
}

// === impl PromSource ===

impl PromSource {
    /// Build.
    pub fn new(
        cfg: PrometheusConfig,
        interval: Duration,
        health: HealthMap,
        metrics: ScrapeMetrics,
    ) -> Result<Self, QueryError> {
        let base = cfg.url.trim_end_matches('/').to_owned();
        Ok(Self {
            client: PromClient::new(cfg)?,
            base,
            interval,
            health,
            metrics,
        })
    }

    fn virtual_url(&self, id: u64, side: Side) -> String {
        let side = match side {
            Side::Baseline => "baseline",
            Side::Canary => "canary",
        };
        format!("prometheus+{}#analysis={id}&cohort={side}", self.base)
    }

    /// Query every interval until shut down.
    pub async fn run(
        self,
        routing: watch::Receiver<Arc<Routing>>,
        out: mpsc::Sender<TargetReport>,
        shutdown: CancellationToken,
    ) {
        // One accumulator per Prometheus target (`instance`) of each analysis and cohort, so a
        // series new to a target that was already being scraped counts from zero (Istio creates
        // series on their first event) while a target seen for the first time only sets the
        // starting point: the same rules as direct scraping.
        let mut accs: std::collections::HashMap<(u64, Side), BTreeMap<String, TargetAccumulator>> =
            Default::default();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let r = routing.borrow().clone();
            let live: Vec<(u64, Side)> = r
                .analyses
                .iter()
                .flat_map(|a| [(a.id, Side::Baseline), (a.id, Side::Canary)])
                .collect();
            accs.retain(|k, _| live.contains(k));
            {
                let mut h = self.health.write().expect("health lock");
                h.retain(|url, _| {
                    !url.starts_with("prometheus+")
                        || live.iter().any(|(id, s)| *url == self.virtual_url(*id, *s))
                });
            }
            for a in &r.analyses {
                for side in [Side::Baseline, Side::Canary] {
                    let acc = accs.entry((a.id, side)).or_default();
                    let report = self.poll(a, side, acc, &r).await;
                    if let Some(rep) = report {
                        if out.send(rep).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// One cohort of one analysis: `up` for data quality, then every check's series.
    async fn poll(
        &self,
        a: &RoutedAnalysis,
        side: Side,
        accs: &mut BTreeMap<String, TargetAccumulator>,
        r: &Routing,
    ) -> Option<TargetReport> {
        let url = self.virtual_url(a.id, side);
        let cohort = match side {
            Side::Baseline => &a.baseline,
            Side::Canary => &a.canary,
        };
        self.health
            .write()
            .expect("health lock")
            .entry(url.clone())
            .or_insert_with(|| {
                let mut h = TargetHealth::new(&crate::discovery::Target {
                    url: url.clone(),
                    labels: [("source".to_string(), "prometheus".to_string())].into(),
                });
                if self.client.cfg.tls.insecure_skip_verify {
                    h.warning = Some(crate::tls::INSECURE_WARNING.to_owned());
                }
                h
            });
        let started = Instant::now();
        let result = async {
            let up = self
                .client
                .query(&format!("up{{{}}}", cohort.to_promql_matchers()))
                .await?;
            let mut pages: BTreeMap<String, String> = BTreeMap::new();
            for c in &a.checks {
                for selector in series_selectors(c, cohort) {
                    let mut samples = self.client.query(&selector).await?;
                    // The exposition format lists a histogram's buckets in increasing `le`; the
                    // API returns series in no order. Restore the page order per series.
                    sort_like_a_page(&mut samples);
                    for s in samples {
                        let instance = s.metric.get("instance").cloned().unwrap_or_default();
                        render_vector(pages.entry(instance).or_default(), std::slice::from_ref(&s));
                    }
                }
            }
            Ok::<_, QueryError>((up, pages))
        }
        .await;
        let elapsed = started.elapsed();
        match result {
            Ok((up, pages)) => {
                let down = up.iter().filter(|s| s.value.1 != "1").count();
                let bytes = pages.values().map(String::len).sum();
                // Targets gone from Prometheus are forgotten like targets gone from discovery.
                accs.retain(|instance, _| pages.contains_key(instance));
                let mut rep = crate::cohort::IngestReport::default();
                for (instance, page) in &pages {
                    let acc = accs
                        .entry(instance.clone())
                        .or_insert_with(|| TargetAccumulator::new(BTreeMap::new()));
                    let one = acc.ingest(page, r);
                    // Only this analysis and cohort: other analyses query their own series.
                    for d in one
                        .deltas
                        .into_iter()
                        .filter(|d| d.analysis == a.id && d.side == side)
                    {
                        match rep.deltas.iter_mut().find(|x| {
                            x.check == d.check && x.slot == d.slot && x.stratum == d.stratum
                        }) {
                            Some(x) => x.value += d.value,
                            None => rep.deltas.push(d),
                        }
                    }
                    for n in one.strata {
                        if !rep.strata.iter().any(|(i, _)| *i == n.0) {
                            rep.strata.push(n);
                        }
                    }
                    rep.resets += one.resets;
                    rep.overlaps += one.overlaps;
                    rep.series += one.series;
                    rep.error_count += one.error_count;
                }
                let problem = if up.is_empty() {
                    Some(
                        "no target of this cohort is known to Prometheus (up{...} is empty)"
                            .to_owned(),
                    )
                } else if down > 0 {
                    Some(format!(
                        "{down} of {} targets of this cohort are down in Prometheus",
                        up.len()
                    ))
                } else {
                    None
                };
                self.record(&url, elapsed, bytes, rep.series, problem, rep.error_count);
                // A cohort with down targets still sends what it has (valid evidence), but the
                // health entry stays failing so no GO comes out of partial data.
                Some(TargetReport {
                    url: url.as_str().into(),
                    generation: r.generation,
                    deltas: rep.deltas,
                    strata: rep.strata,
                    resets: rep.resets,
                    overlaps: rep.overlaps,
                    scraped_at: started,
                    // The backend keeps the history: after a restart the first query sets the
                    // starting point again (the downtime's traffic is not judged).
                    state: None,
                })
            }
            Err(e) => {
                warn!(source = %self.base, error = %e, "prometheus query failed");
                let series = accs.values().map(TargetAccumulator::series).sum();
                self.record(&url, elapsed, 0, series, Some(e.to_string()), 0);
                None
            }
        }
    }

    fn record(
        &self,
        url: &str,
        elapsed: Duration,
        bytes: usize,
        series: usize,
        problem: Option<String>,
        errors: usize,
    ) {
        let outcome = if problem.is_none() {
            "ok"
        } else {
            "prometheus_error"
        };
        self.metrics
            .scrapes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
        self.metrics.scrape_duration.observe(elapsed.as_secs_f64());
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let mut health = self.health.write().expect("health lock");
        if let Some(h) = health.get_mut(url) {
            h.scrapes += 1;
            h.last_duration_ms = elapsed.as_secs_f64() * 1000.0;
            h.last_bytes = bytes;
            h.series = series;
            h.last_parse_errors = errors;
            match problem {
                None => {
                    h.up = true;
                    h.last_success = Some(now);
                    h.last_success_at = Some(Instant::now());
                    h.last_error = None;
                    h.consecutive_failures = 0;
                }
                Some(p) => {
                    h.up = false;
                    h.last_error = Some(p);
                    h.failures += 1;
                    h.consecutive_failures += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Catalog;

    #[test]
    fn selectors_render_check_and_cohort_matchers() {
        let cat = Catalog::builtin();
        let cohort = Selector::parse(r#"{revision="1-25-0", namespace=~"shop|cart"}"#).unwrap();
        assert_eq!(
            series_selectors(cat.get("error-rate").unwrap(), &cohort)[0],
            r#"{__name__="istio_requests_total", reporter="destination", revision="1-25-0", namespace=~"shop|cart"}"#
        );
        assert_eq!(
            series_selectors(cat.get("latency-tail").unwrap(), &cohort)[0],
            r#"{__name__="istio_request_duration_milliseconds_bucket", reporter="destination", revision="1-25-0", namespace=~"shop|cart", le=~"100|250|500|1000|\\+Inf"}"#
        );
    }

    #[test]
    fn buckets_are_put_back_in_page_order() {
        let mut v: Vec<VectorSample> = serde_json::from_str(
            r#"[{"metric": {"__name__": "h_bucket", "pod": "b", "le": "+Inf"}, "value": [1, "9"]},
                {"metric": {"__name__": "h_bucket", "pod": "a", "le": "250"}, "value": [1, "2"]},
                {"metric": {"__name__": "h_bucket", "pod": "b", "le": "100"}, "value": [1, "1"]},
                {"metric": {"__name__": "h_bucket", "pod": "a", "le": "+Inf"}, "value": [1, "5"]},
                {"metric": {"__name__": "h_bucket", "pod": "a", "le": "100"}, "value": [1, "1"]}]"#,
        )
        .unwrap();
        sort_like_a_page(&mut v);
        let order: Vec<(String, String)> = v
            .iter()
            .map(|s| (s.metric["pod"].clone(), s.metric["le"].clone()))
            .collect();
        let want = [
            ("a", "100"),
            ("a", "250"),
            ("a", "+Inf"),
            ("b", "100"),
            ("b", "+Inf"),
        ];
        assert_eq!(order, want.map(|(p, l)| (p.to_string(), l.to_string())));
    }

    #[test]
    fn fractional_bounds_are_escaped_for_promql() {
        let mut spec = Catalog::builtin().get("latency-tail").unwrap().clone();
        spec.kind = CheckKind::HistogramTail {
            boundaries: vec![0.5, 1e6],
        };
        let sel = series_selectors(&spec, &Selector::default()).remove(0);
        assert!(
            sel.ends_with(r#"le=~"0\\.5|1000000|1e\\+06|\\+Inf"}"#),
            "{sel}"
        );
    }

    /// The `[promql] series` documented in each shipped check file is what the source asks for.
    #[test]
    fn check_files_document_the_queries_sent() {
        let cohort = Selector::parse(r#"{revision="1-25-0"}"#).unwrap();
        for c in Catalog::builtin().iter() {
            let text = std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(&c.source),
            )
            .unwrap();
            let v: serde_json::Value = config::Config::builder()
                .add_source(config::File::from_str(&text, config::FileFormat::Toml))
                .build()
                .unwrap()
                .try_deserialize()
                .unwrap();
            let sent = series_selectors(c, &cohort).join(" and ");
            let documented = v["promql"]["series"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: no [promql] series; expected {sent}", c.source));
            let documented = documented.replace("COHORT", r#"revision="1-25-0""#);
            assert_eq!(documented, sent, "{}", c.source);
        }
    }

    #[test]
    fn le_values_match_envoy_and_go_spellings() {
        assert_eq!(le_spellings(0.5), vec!["0.5"]);
        assert_eq!(le_spellings(250.0), vec!["250"]);
        assert_eq!(le_spellings(1e6), vec!["1000000", "1e+06"]);
        assert_eq!(le_spellings(4e7), vec!["40000000", "4e+07"]);
        assert_eq!(le_spellings(3_600_000.0), vec!["3600000", "3.6e+06"]);
    }

    #[test]
    fn vectors_render_to_parseable_text() {
        let v: Vec<VectorSample> = serde_json::from_str(
            r#"[{"metric": {"__name__": "istio_requests_total", "response_flags": "UF,URX", "response_code": "503"},
                 "value": [1700000000.1, "42"]},
                {"metric": {"response_code": "200"}, "value": [1700000000.1, "7"]}]"#,
        )
        .unwrap();
        let mut page = String::new();
        render_vector(&mut page, &v);
        assert_eq!(
            page,
            "istio_requests_total{response_code=\"503\",response_flags=\"UF,URX\"} 42\n"
        );
    }
}
