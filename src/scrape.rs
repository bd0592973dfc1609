//! Scraping: one loop per target (interval, jitter, timeout, body cap, gzip, bounded concurrency),
//! per-target health, and the ingest of each page into that target's accumulator.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, warn, Instrument};

use crate::cohort::{Delta, Routing, TargetAccumulator};
use crate::discovery::{Target, TargetSet};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::telemetry::metric;

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// No answer in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset, DNS failure...
    #[error("request failed: {0}")]
    Request(String),
    /// Non-2xx answer.
    #[error("http status {0}")]
    Status(u16),
    /// The body went over the cap.
    #[error("page larger than the {0} byte cap")]
    TooLarge(usize),
    /// The body could not be read to the end.
    #[error("body read failed: {0}")]
    Body(String),
    /// The page is not UTF-8.
    #[error("page is not valid utf-8 at byte {0}")]
    Utf8(usize),
    /// The HTTP client could not be built.
    #[error("cannot build http client: {0}")]
    Client(String),
    /// The page broke a plausibility limit: its data is dropped and the target quarantined.
    #[error("page quarantined: {0}")]
    Quarantined(crate::cohort::Violation),
    /// An OpenMetrics page whose last line is not `# EOF`: cut short (the format's only
    /// truncation signal, which Prometheus requires too).
    #[error("openmetrics page truncated: {0} bytes without a final `# EOF` line, page dropped")]
    NoEof(usize),
    /// The page does not end with a newline: cut short, so its last value may be cut too.
    #[error("page truncated: {0} bytes without a final newline, page dropped")]
    Truncated(usize),
    /// Nothing on the page parsed.
    #[error("page is not in the Prometheus text format: no valid sample, {count} malformed line(s), first: {first}")]
    Garbage {
        /// Malformed lines.
        count: usize,
        /// The first one.
        first: String,
    },
}

impl ScrapeError {
    /// Short class for metrics labels.
    pub fn class(&self) -> &'static str {
        match self {
            ScrapeError::Timeout(_) => "timeout",
            ScrapeError::Request(_) => "request",
            ScrapeError::Status(_) => "http_status",
            ScrapeError::TooLarge(_) => "too_large",
            ScrapeError::Body(_) => "body",
            ScrapeError::Utf8(_) => "utf8",
            ScrapeError::Client(_) => "client",
            ScrapeError::Truncated(_) | ScrapeError::NoEof(_) => "truncated",
            ScrapeError::Quarantined(_) => "quarantined",
            ScrapeError::Garbage { .. } => "garbage",
        }
    }
}

/// Health of one target, as shown by the API.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TargetHealth {
    /// URL.
    pub url: String,
    /// Labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Last scrape succeeded.
    pub up: bool,
    /// Unix time (s) of the last good scrape.
    pub last_success: Option<f64>,
    /// Last error, if the last scrape failed.
    pub last_error: Option<String>,
    /// Duration of the last scrape, ms.
    pub last_duration_ms: f64,
    /// Bytes of the last page.
    pub last_bytes: usize,
    /// Series tracked.
    pub series: usize,
    /// Malformed lines in the last page.
    pub last_parse_errors: usize,
    /// First malformed line of the last page, if any.
    pub last_parse_error: Option<String>,
    /// Scrapes so far.
    pub scrapes: u64,
    /// Failed scrapes so far.
    pub failures: u64,
    /// Failures in a row.
    pub consecutive_failures: u64,
    /// Repeated series on the last page (only the first value of each counts).
    pub last_duplicates: usize,
    /// Counter resets on the last page (a value below the previous one).
    pub last_resets: usize,
    /// Good pages in a row with a counter reset: a target whose counters keep going backwards
    /// is broken, not restarting, and its data is not fresh (see [`UNRELIABLE_RESET_PAGES`]).
    pub consecutive_reset_pages: u64,
    /// Why this target's data is quarantined now (a page broke a `[scrape.limits]` limit): its
    /// data is dropped and it blocks GO until [`crate::cohort::TargetAccumulator::quarantine`]
    /// lifts (two clean pages later).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
    /// Pages quarantined so far.
    pub quarantined_pages: u64,
    /// Set when this target's TLS certificate is not verified (`insecure_skip_verify`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    #[serde(skip)]
    /// When the last good scrape finished (monotonic).
    pub last_success_at: Option<Instant>,
}

impl TargetHealth {
    /// A target not scraped yet.
    pub fn new(t: &Target) -> Self {
        Self {
            url: t.url.clone(),
            labels: t.labels.clone(),
            up: false,
            last_success: None,
            last_error: None,
            last_duration_ms: 0.0,
            last_bytes: 0,
            series: 0,
            last_parse_errors: 0,
            last_parse_error: None,
            scrapes: 0,
            failures: 0,
            consecutive_failures: 0,
            last_duplicates: 0,
            last_resets: 0,
            consecutive_reset_pages: 0,
            quarantine: None,
            quarantined_pages: 0,
            warning: None,
            last_success_at: None,
        }
    }
}

/// Pages in a row with a counter reset after which a target's data counts as not fresh: a pod
/// restart resets once; counters that go backwards on page after page are a broken exporter.
pub const UNRELIABLE_RESET_PAGES: u64 = 3;

/// Health of every target, shared with the API and the engine.
pub type HealthMap = Arc<RwLock<HashMap<String, TargetHealth>>>;

/// What one scrape sends to the engine.
#[derive(Debug)]
pub struct TargetReport {
    /// Target URL.
    pub url: Arc<str>,
    /// Routing generation the deltas were computed under.
    pub generation: u64,
    /// The deltas (empty when the scrape failed).
    pub deltas: Vec<Delta>,
    /// Names of strata first routed on this page: `(stratum id, name)`.
    pub strata: Vec<(u64, Box<str>)>,
    /// Counter resets in this page.
    pub resets: usize,
    /// Series matching both cohorts.
    pub overlaps: usize,
    /// When the page was read (for the scrape-to-verdict delay).
    pub scraped_at: Instant,
    /// The target's series values after this page, when a store keeps them.
    pub state: Option<Arc<crate::cohort::SeriesSnapshot>>,
}

/// Runs the per-target loops.
pub struct Scraper {
    client: reqwest::Client,
    cfg: ScrapeConfig,
    permits: Arc<Semaphore>,
    health: HealthMap,
    metrics: ScrapeMetrics,
    observer: Option<meshgate_core::istio::Observer>,
    /// Series values read back from the store, taken by each target's loop when it starts.
    restored: std::sync::Mutex<HashMap<String, crate::cohort::SeriesSnapshot>>,
    restored_generation: u64,
    persist: bool,
}

/// The scrapers' HTTP client: rustls, gzip, TLS verification on, one idle connection per
/// target kept alive.
pub fn http_client(cfg: &ScrapeConfig) -> Result<reqwest::Client, ScrapeError> {
    let client = reqwest::Client::builder()
        .user_agent(concat!("meshgate/", env!("CARGO_PKG_VERSION")))
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        // gzip is asked for and decoded by `fetch_page` (in one pass into one buffer, about
        // twice as fast as the client's streaming decoder on sidecar pages).
        .gzip(false)
        .pool_max_idle_per_host(1);
    cfg.tls
        .apply(client, "scrape")
        .map_err(ScrapeError::Client)?
        .build()
        .map_err(|e| ScrapeError::Client(e.to_string()))
}

// === impl Scraper ===

impl Scraper {
    /// Build the scrapers ([`http_client`] for the HTTP side).
    pub fn build(
        cfg: ScrapeConfig,
        health: HealthMap,
        metrics: ScrapeMetrics,
    ) -> Result<Self, ScrapeError> {
        let client = http_client(&cfg)?;
        let permits = Arc::new(Semaphore::new(cfg.concurrency));
        Ok(Self {
            client,
            cfg,
            permits,
            health,
            metrics,
            observer: None,
            restored: Default::default(),
            restored_generation: 0,
            persist: false,
        })
    }

    /// Hook: also hand every page to `observer` (Istio builds, connected proxies, resources).
    pub fn with_observer(mut self, observer: meshgate_core::istio::Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Send each target's series values with every report (for the store), starting from
    /// `restored` (values stored before a restart, valid for analyses of routing generation up
    /// to `generation`).
    pub fn persisting(
        mut self,
        restored: HashMap<String, crate::cohort::SeriesSnapshot>,
        generation: u64,
    ) -> Self {
        self.restored = std::sync::Mutex::new(restored);
        self.restored_generation = generation;
        self.persist = true;
        self
    }

    /// Follow the target set: start a loop per new target, stop loops of removed ones.
    pub async fn run(
        self,
        mut targets: watch::Receiver<TargetSet>,
        routing: watch::Receiver<Arc<Routing>>,
        out: mpsc::Sender<TargetReport>,
        shutdown: CancellationToken,
    ) {
        let shared = Arc::new(self);
        let mut running: HashMap<Arc<Target>, CancellationToken> = HashMap::new();
        loop {
            let current: TargetSet = targets.borrow_and_update().clone();
            let wanted: std::collections::HashSet<&Arc<Target>> = current.iter().collect();
            running.retain(|t, token| {
                let keep = wanted.contains(t);
                if !keep {
                    token.cancel();
                    shared.health.write().expect("health lock").remove(&t.url);
                    if let Some(o) = &shared.observer {
                        o.remove(&t.url);
                    }
                    shared.metrics.remove_target(&t.url);
                }
                keep
            });
            for t in current.iter() {
                if running.contains_key(t) {
                    continue;
                }
                let token = shutdown.child_token();
                running.insert(t.clone(), token.clone());
                shared
                    .health
                    .write()
                    .expect("health lock")
                    .insert(t.url.clone(), {
                        let mut h = TargetHealth::new(t);
                        if shared.cfg.tls.insecure_skip_verify && t.url.starts_with("https:") {
                            h.warning = Some(crate::tls::INSECURE_WARNING.to_owned());
                        }
                        h
                    });
                let span = info_span!("scrape", target = %t.url);
                tokio::spawn(
                    shared
                        .clone()
                        .target_loop(t.clone(), routing.clone(), out.clone(), token)
                        .instrument(span),
                );
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = targets.changed() => if r.is_err() { return },
            }
        }
    }

    async fn target_loop(
        self: Arc<Self>,
        target: Arc<Target>,
        routing: watch::Receiver<Arc<Routing>>,
        out: mpsc::Sender<TargetReport>,
        stop: CancellationToken,
    ) {
        let url: Arc<str> = target.url.as_str().into();
        let mut acc =
            TargetAccumulator::new(target.labels.clone()).with_limits(self.cfg.limits.clone());
        let clock = Instant::now();
        let stored = self
            .restored
            .lock()
            .expect("restored lock")
            .remove(&target.url);
        if let Some(snap) = stored {
            acc.restore(&snap, self.restored_generation);
        }
        let interval = self.cfg.interval;
        // A stable offset per target spreads the scrapes over the interval (as Prometheus does).
        let mut h = std::collections::hash_map::DefaultHasher::new();
        target.url.hash(&mut h);
        let offset = Duration::from_nanos(h.finish() % interval.as_nanos().max(1) as u64);
        let mut next = Instant::now() + offset.min(interval);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {}
            }
            let jitter = self.cfg.jitter * interval.as_secs_f64();
            let spread = if jitter > 0.0 {
                rand::rng().random_range(-jitter..jitter)
            } else {
                0.0
            };
            next += Duration::from_secs_f64((interval.as_secs_f64() + spread).max(0.001));
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                return;
            };
            let started = Instant::now();
            let scraped = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.scrape_once(&target, &mut acc, &routing, clock.elapsed().as_secs_f64()) => r,
            };
            drop(permit);
            let report = match scraped {
                Ok(Scraped {
                    rep,
                    generation,
                    bytes,
                }) => {
                    self.record_success(&url, started.elapsed(), bytes, &rep, acc.quarantine());
                    TargetReport {
                        url: url.clone(),
                        generation,
                        deltas: rep.deltas,
                        strata: rep.strata,
                        resets: rep.resets,
                        overlaps: rep.overlaps,
                        scraped_at: Instant::now(),
                        state: self.persist.then(|| Arc::new(acc.export())),
                    }
                }
                Err(e) => {
                    self.record_failure(&url, started.elapsed(), &e);
                    continue;
                }
            };
            if out.send(report).await.is_err() {
                return;
            }
        }
    }

    /// One scrape of `target` as its loop does it: GET the page (gzip, timeout, body cap),
    /// check it is whole UTF-8 text, and feed it to `acc` under the current routing (and to
    /// the observer, from the same parse pass). The loop records the outcome; the `scrape`
    /// benchmark calls this to measure the daemon's whole ingest path.
    pub async fn scrape_once(
        &self,
        target: &Target,
        acc: &mut TargetAccumulator,
        routing: &watch::Receiver<Arc<Routing>>,
        at: f64,
    ) -> Result<Scraped, ScrapeError> {
        let Page { body, openmetrics } = fetch_page(
            &self.client,
            &target.url,
            self.cfg.timeout,
            self.cfg.max_body_bytes,
        )
        .await?;
        let routing = routing.borrow().clone();
        let text = match std::str::from_utf8(&body) {
            // Checked before any of it reaches the accumulator.
            Ok(text) => match meshgate_expo::page_end(text, openmetrics) {
                meshgate_expo::PageEnd::NoFinalNewline => {
                    return Err(ScrapeError::Truncated(text.len()))
                }
                meshgate_expo::PageEnd::NoEof => return Err(ScrapeError::NoEof(text.len())),
                meshgate_expo::PageEnd::Whole => text,
            },
            Err(e) => return Err(ScrapeError::Utf8(e.valid_up_to())),
        };
        // One parse pass feeds both the cohorts and the observer.
        let rep = match &self.observer {
            Some(o) => {
                let mut page = meshgate_core::istio::observe::PageReader::default();
                let rep = acc.ingest_at(
                    text,
                    &routing,
                    at,
                    Some(meshgate_core::istio::observe::filter()),
                    |s| page.take(s),
                );
                // A quarantined page tells the observer nothing either.
                if rep.quarantined.is_none() {
                    o.commit(target, page);
                }
                rep
            }
            None => acc.ingest_at(text, &routing, at, None, |_| {}),
        };
        if let Some(v) = rep.quarantined {
            Err(ScrapeError::Quarantined(v))
        } else if rep.samples == 0 && rep.error_count > 0 {
            Err(ScrapeError::Garbage {
                count: rep.error_count,
                first: rep
                    .errors
                    .first()
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
            })
        } else {
            Ok(Scraped {
                rep,
                generation: routing.generation,
                bytes: body.len(),
            })
        }
    }

    fn record_success(
        &self,
        url: &str,
        elapsed: Duration,
        bytes: usize,
        rep: &crate::cohort::IngestReport,
        quarantine: Option<&crate::cohort::Violation>,
    ) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let m = &self.metrics;
        m.scrapes
            .get_or_create(&OutcomeLabels {
                outcome: "ok".into(),
            })
            .inc();
        m.scrape_duration.observe(elapsed.as_secs_f64());
        m.scrape_bytes.inc_by(bytes as u64);
        m.parse_errors.inc_by(rep.error_count as u64);
        m.counter_resets.inc_by(rep.resets as u64);
        let l = TargetLabels {
            target: url.to_owned(),
        };
        m.target_up.get_or_create(&l).set(1);
        m.target_series.get_or_create(&l).set(rep.series as i64);
        m.target_last_success.get_or_create(&l).set(now);
        if let Some(e) = rep.errors.first() {
            debug!(target = %url, errors = rep.error_count, first = %e, "malformed lines in page");
        }
        let mut health = self.health.write().expect("health lock");
        if let Some(h) = health.get_mut(url) {
            h.up = true;
            h.last_success = Some(now);
            h.last_success_at = Some(Instant::now());
            h.last_error = None;
            h.last_duration_ms = elapsed.as_secs_f64() * 1000.0;
            h.last_bytes = bytes;
            h.series = rep.series;
            h.last_parse_errors = rep.error_count;
            h.last_parse_error = rep.errors.first().map(|e| e.to_string());
            h.last_duplicates = rep.duplicates;
            h.last_resets = rep.resets;
            if rep.resets > 0 {
                h.consecutive_reset_pages += 1;
            } else {
                h.consecutive_reset_pages = 0;
            }
            h.scrapes += 1;
            h.consecutive_failures = 0;
            h.quarantine = quarantine.map(|v| format!("{v}; held until its pages are clean again"));
        }
    }

    fn record_failure(&self, url: &str, elapsed: Duration, e: &ScrapeError) {
        warn!(target = %url, error = %e, "scrape failed");
        let m = &self.metrics;
        m.scrapes
            .get_or_create(&OutcomeLabels {
                outcome: e.class().into(),
            })
            .inc();
        m.scrape_duration.observe(elapsed.as_secs_f64());
        m.target_up
            .get_or_create(&TargetLabels {
                target: url.to_owned(),
            })
            .set(0);
        let mut health = self.health.write().expect("health lock");
        if let Some(h) = health.get_mut(url) {
            h.up = false;
            h.last_error = Some(e.to_string());
            h.last_duration_ms = elapsed.as_secs_f64() * 1000.0;
            h.scrapes += 1;
            h.failures += 1;
            h.consecutive_failures += 1;
            if let ScrapeError::Quarantined(v) = e {
                h.quarantine = Some(v.to_string());
                h.quarantined_pages += 1;
            }
        }
    }
}

/// A fetched page.
#[derive(Debug)]
pub struct Page {
    /// The (decompressed) body.
    pub body: Vec<u8>,
    /// Served as `application/openmetrics-text`: then it must end with `# EOF`.
    pub openmetrics: bool,
}

/// What one successful scrape gave: the ingest report, the routing generation its deltas were
/// computed under, and the page's size after decompression.
#[derive(Debug)]
pub struct Scraped {
    /// The accumulator's report on the page.
    pub rep: crate::cohort::IngestReport,
    /// The routing generation the deltas belong to.
    pub generation: u64,
    /// Page bytes after decompression.
    pub bytes: usize,
}

/// GET a page with a timeout on the whole exchange and a cap on the (decompressed) body.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    cap: usize,
) -> Result<Vec<u8>, ScrapeError> {
    fetch_page(client, url, timeout, cap).await.map(|p| p.body)
}

/// [`fetch`], with the format the target says it served.
pub async fn fetch_page(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    cap: usize,
) -> Result<Page, ScrapeError> {
    let work = async {
        let mut resp = client
            .get(url)
            .header(
                reqwest::header::ACCEPT,
                "text/plain;version=0.0.4;q=1,*/*;q=0.1",
            )
            .header(reqwest::header::ACCEPT_ENCODING, "gzip")
            .send()
            .await
            .map_err(|e| request_error(&e, timeout))?;
        if !resp.status().is_success() {
            return Err(ScrapeError::Status(resp.status().as_u16()));
        }
        let openmetrics = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/openmetrics-text")
            });
        // A client that decodes itself (reqwest's `gzip(true)`) removes the header: then the
        // body is the page.
        let gzip = match resp
            .headers()
            .get(reqwest::header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase())
        {
            None => false,
            Some(v) if v == "identity" => false,
            Some(v) if v == "gzip" || v == "x-gzip" => true,
            Some(v) => {
                return Err(ScrapeError::Body(format!(
                    "the target answered Content-Encoding {v:?}, which was not asked for (only gzip is)"
                )))
            }
        };
        if resp.content_length().is_some_and(|n| n as usize > cap) {
            return Err(ScrapeError::TooLarge(cap));
        }
        let mut body =
            Vec::with_capacity(resp.content_length().unwrap_or(64 * 1024).min(cap as u64) as usize);
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            if e.is_timeout() {
                ScrapeError::Timeout(timeout)
            } else {
                ScrapeError::Body(error_chain(&e))
            }
        })? {
            if body.len() + chunk.len() > cap {
                return Err(ScrapeError::TooLarge(cap));
            }
            body.extend_from_slice(&chunk);
        }
        if gzip {
            body = gunzip(&body, cap)?;
        }
        Ok(Page { body, openmetrics })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ScrapeError::Timeout(timeout))?
}

/// Decode a gzip body (every member, RFC 1952) into one buffer, with `cap` on the decoded
/// bytes: a small body can decode to a huge page.
fn gunzip(raw: &[u8], cap: usize) -> Result<Vec<u8>, ScrapeError> {
    use std::io::Read;
    // Sidecar pages compress about 10x; the buffer grows from there if it must.
    let mut out = Vec::with_capacity(raw.len().saturating_mul(16).max(64 * 1024).min(cap));
    flate2::read::MultiGzDecoder::new(raw)
        .take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ScrapeError::Body(format!("gzip body of {} bytes: {e}", raw.len())))?;
    if out.len() > cap {
        return Err(ScrapeError::TooLarge(cap));
    }
    Ok(out)
}

/// The client's own timeout (set to the same value) is a timeout, not a failed request.
fn request_error(e: &reqwest::Error, timeout: Duration) -> ScrapeError {
    if e.is_timeout() {
        ScrapeError::Timeout(timeout)
    } else {
        ScrapeError::Request(error_chain(e))
    }
}

/// The error with its causes, which reqwest keeps in the source chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    s
}

// === impl ScrapeMetrics ===

/// `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok` or the error class (`timeout`, `http`, `connect`, `body`, `too_large`, ...).
    pub outcome: String,
}

/// Per-target label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// Target URL.
    pub target: String,
}

/// The metrics of scraping (direct or through the Prometheus backend).
#[derive(Clone, Debug)]
pub struct ScrapeMetrics {
    /// Scrapes by outcome.
    pub scrapes: Family<OutcomeLabels, Counter>,
    /// Scrape durations.
    pub scrape_duration: Histogram,
    /// Page bytes read (after decompression).
    pub scrape_bytes: Counter,
    /// 1 when the target's last scrape succeeded.
    pub target_up: Family<TargetLabels, Gauge>,
    /// Series tracked per target.
    pub target_series: Family<TargetLabels, Gauge>,
    /// Unix time of the target's last good scrape.
    pub target_last_success: Family<TargetLabels, Gauge<f64, AtomicU64>>,
    /// Malformed lines in scraped pages.
    pub parse_errors: Counter,
    /// Counter resets seen.
    pub counter_resets: Counter,
}

impl ScrapeMetrics {
    /// Create and register them.
    pub fn register(reg: &mut Registry) -> Self {
        ScrapeMetrics {
            scrapes: metric(reg, "scrapes", "Scrapes by outcome", Family::default()),
            scrape_duration: metric(
                reg,
                "scrape_duration_seconds",
                "Scrape duration, request to parsed page",
                Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            ),
            scrape_bytes: metric(
                reg,
                "scrape_bytes",
                "Bytes of scraped pages after decompression",
                Counter::default(),
            ),
            target_up: metric(
                reg,
                "target_up",
                "1 when the last scrape of the target succeeded",
                Family::default(),
            ),
            target_series: metric(
                reg,
                "target_series",
                "Series tracked for the target",
                Family::default(),
            ),
            target_last_success: metric(
                reg,
                "target_last_success_timestamp_seconds",
                "Unix time of the last successful scrape",
                Family::default(),
            ),
            parse_errors: metric(
                reg,
                "parse_errors",
                "Malformed lines in scraped pages",
                Counter::default(),
            ),
            counter_resets: metric(
                reg,
                "series_resets",
                "Counter resets seen in scraped series",
                Counter::default(),
            ),
        }
    }

    /// Forget a target that left the target set.
    pub fn remove_target(&self, url: &str) {
        let l = TargetLabels {
            target: url.to_owned(),
        };
        self.target_up.remove(&l);
        self.target_series.remove(&l);
        self.target_last_success.remove(&l);
    }
}

// === impl ScrapeConfig ===

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
