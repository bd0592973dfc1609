//! Alerting: NO-GO and INCONCLUSIVE verdicts go to Alertmanager (API v2) and to generic JSON webhooks.
//!
//! One task follows the daemon's verdict events and keeps the set of firing alerts: an analysis
//! that turns NO-GO or INCONCLUSIVE (those in `[alerts] on`) fires; it resolves when its verdict
//! changes or it is deleted. Each sink has a
//! worker with a coalescing, bounded queue: a newer state of an alert replaces an older one still
//! waiting, so a flapping or unreachable sink never builds a storm. Deliveries are retried with
//! exponential backoff. Active alerts are re-sent to Alertmanager every `resend_interval` with an
//! `endsAt` a few intervals ahead, so they also resolve on their own if meshgate disappears.

mod alertmanager;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::judge::Verdict;
use crate::state::{AnalysisView, Snapshot, VerdictEvent};
use meshgate_core::ConfigProblem;

/// Alert name in Alertmanager for a NO-GO verdict.
pub const ALERT_NAME: &str = "MeshgateNoGo";
/// Alert name in Alertmanager for an INCONCLUSIVE verdict (a person has to decide).
pub const INCONCLUSIVE_ALERT_NAME: &str = "MeshgateInconclusive";

/// The verdicts that can alert, with their alert name and severity.
fn alert_kind(v: Verdict) -> Option<(&'static str, &'static str)> {
    match v {
        Verdict::NoGo => Some((ALERT_NAME, "critical")),
        Verdict::Inconclusive => Some((INCONCLUSIVE_ALERT_NAME, "warning")),
        Verdict::Pending | Verdict::Go => None,
    }
}

/// One alert in Alertmanager's shape (`endsAt` in the past means resolved).
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Routing labels.
    pub labels: BTreeMap<String, String>,
    /// Reason and link.
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339.
    pub ends_at: String,
    /// Link to the verdict.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    /// `firing` or `resolved` (not sent to Alertmanager, which infers it from `endsAt`).
    #[serde(skip)]
    pub firing: bool,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The value of `label="..."` in a selector, when it is a plain equality.
fn selector_value(sel: &str, label: &str) -> Option<String> {
    // The selector's canonical text form; the selector itself has no matcher accessors.
    let text = crate::cohort::Selector::parse(sel).ok()?.to_string();
    sel_source_value(&text, label)
}

fn sel_source_value(text: &str, label: &str) -> Option<String> {
    let key = format!("{label}=\"");
    let mut from = 0;
    while let Some(i) = text[from..].find(&key) {
        let at = from + i;
        let before = text[..at].chars().last();
        if matches!(before, None | Some('{') | Some(',') | Some(' ')) {
            let rest = &text[at + key.len()..];
            return rest.find('"').map(|j| rest[..j].to_owned());
        }
        from = at + key.len();
    }
    None
}

/// The alert of an analysis at NO-GO or INCONCLUSIVE (any other verdict is alerted as NO-GO).
pub fn alert_for(v: &AnalysisView, cfg: &AlertsConfig, started: SystemTime) -> Alert {
    let verdict = v.state().verdict();
    let (name, severity) = alert_kind(verdict).unwrap_or((ALERT_NAME, "critical"));
    let mut labels = cfg.labels.clone();
    labels.insert("alertname".into(), name.into());
    labels.insert("analysis".into(), v.id.clone());
    labels.insert("severity".into(), severity.into());
    labels.insert("verdict".into(), verdict.as_str().into());
    for (key, side) in [
        ("baseline_revision", &v.spec.baseline),
        ("canary_revision", &v.spec.canary),
    ] {
        if let Some(r) = selector_value(side, "revision") {
            labels.insert(key.into(), r);
        }
    }
    if let Some(ns) = selector_value(&v.spec.canary, "namespace") {
        labels.insert("namespace".into(), ns);
    }
    let url = format!(
        "{}/v1/analyses/{}/verdict",
        cfg.external_url.trim_end_matches('/'),
        v.id
    );
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "summary".into(),
        match verdict {
            Verdict::Inconclusive => format!(
                "meshgate: canary of analysis {} is INCONCLUSIVE and needs a decision",
                v.id
            ),
            _ => format!("meshgate: canary of analysis {} is NO-GO", v.id),
        },
    );
    annotations.insert("description".into(), v.state().reason().to_owned());
    annotations.insert("verdict_url".into(), url.clone());
    // For the person the alert reaches: the report page with the curves behind the verdict.
    annotations.insert(
        "report_url".into(),
        format!(
            "{}/report/analyses/{}",
            cfg.external_url.trim_end_matches('/'),
            v.id
        ),
    );
    annotations.insert("baseline".into(), v.spec.baseline.clone());
    annotations.insert("canary".into(), v.spec.canary.clone());
    Alert {
        labels,
        annotations,
        starts_at: rfc3339(started),
        ends_at: rfc3339(SystemTime::now() + cfg.resend_interval * 4),
        generator_url: url,
        firing: true,
    }
}

/// A sink's coalescing queue: alert key to its latest state.
struct Queue {
    pending: Mutex<BTreeMap<String, Alert>>,
    notify: Notify,
    cap: usize,
    name: String,
}

impl Queue {
    /// Queue the latest state of an alert; false when the queue is full (the alert is dropped).
    fn push(&self, key: &str, a: Alert) -> bool {
        let mut p = self.pending.lock().expect("alert queue");
        if !p.contains_key(key) && p.len() >= self.cap {
            warn!(sink = %self.name, alert = key, "alert queue full, dropping");
            return false;
        }
        p.insert(key.to_owned(), a);
        drop(p);
        self.notify.notify_one();
        true
    }

    /// Put back what failed, unless a newer state arrived meanwhile.
    fn requeue(&self, batch: Vec<(String, Alert)>) {
        let mut p = self.pending.lock().expect("alert queue");
        for (k, a) in batch {
            if !p.contains_key(&k) && p.len() < self.cap {
                p.insert(k, a);
            }
        }
    }

    fn take(&self) -> Vec<(String, Alert)> {
        std::mem::take(&mut *self.pending.lock().expect("alert queue"))
            .into_iter()
            .collect()
    }
}

/// Where a sink delivers.
#[derive(Clone)]
enum Target {
    Alertmanager(String),
    Webhook { url: String, secret: Option<String> },
}

impl Target {
    fn name(&self) -> String {
        match self {
            Target::Alertmanager(u) => format!("alertmanager {u}"),
            Target::Webhook { url, .. } => format!("webhook {url}"),
        }
    }
}

async fn deliver(client: &reqwest::Client, t: &Target, batch: &[Alert]) -> Result<(), String> {
    match t {
        Target::Alertmanager(base) => alertmanager::post(client, base, batch).await,
        Target::Webhook { url, secret } => {
            webhook::post(client, url, secret.as_deref(), batch).await
        }
    }
}

async fn sink_worker(
    client: reqwest::Client,
    target: Target,
    queue: Arc<Queue>,
    cfg: AlertsConfig,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = queue.notify.notified() => {}
        }
        let mut attempt = 0u32;
        let mut delay = cfg.backoff;
        loop {
            let batch = queue.take();
            if batch.is_empty() {
                break;
            }
            let alerts: Vec<Alert> = batch.iter().map(|(_, a)| a.clone()).collect();
            match deliver(&client, &target, &alerts).await {
                Ok(()) => {
                    attempt = 0;
                    delay = cfg.backoff;
                }
                Err(e) => {
                    attempt += 1;
                    if attempt >= cfg.max_attempts {
                        warn!(sink = %target.name(), error = %e, alerts = alerts.len(), attempts = attempt, "alert delivery failed, giving up on this batch");
                        attempt = 0;
                        delay = cfg.backoff;
                        continue;
                    }
                    warn!(sink = %target.name(), error = %e, retry_in = ?delay, "alert delivery failed");
                    queue.requeue(batch);
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// The alerting task: follows `events`, keeps firing alerts, feeds the sinks.
pub struct Alerter {
    cfg: AlertsConfig,
    firing: HashMap<String, Alert>,
    started: HashMap<String, SystemTime>,
    sinks: Vec<(Target, Arc<Queue>)>,
}

impl Alerter {
    /// Whether any sink is configured.
    pub fn enabled(cfg: &AlertsConfig) -> bool {
        !cfg.alertmanager.is_empty() || !cfg.webhooks.is_empty()
    }

    /// Start the sink workers and the alerting loop on `tasks`.
    pub fn spawn(
        cfg: AlertsConfig,
        events: broadcast::Receiver<VerdictEvent>,
        snapshot: watch::Receiver<Arc<Snapshot>>,
        tasks: &mut tokio::task::JoinSet<()>,
        shutdown: CancellationToken,
    ) -> Result<(), String> {
        let client = reqwest::Client::builder().timeout(cfg.timeout);
        let client = cfg
            .tls
            .apply(client, "alerts")?
            .build()
            .map_err(|e| format!("alert http client: {e}"))?;
        let targets: Vec<Target> = cfg
            .alertmanager
            .iter()
            .map(|u| Target::Alertmanager(u.clone()))
            .chain(cfg.webhooks.iter().map(|w| Target::Webhook {
                url: w.url.clone(),
                secret: w.secret.clone(),
            }))
            .collect();
        let mut sinks = Vec::new();
        for t in targets {
            let q = Arc::new(Queue {
                pending: Mutex::new(BTreeMap::new()),
                notify: Notify::new(),
                cap: cfg.queue,
                name: t.name(),
            });
            tasks.spawn(
                sink_worker(
                    client.clone(),
                    t.clone(),
                    q.clone(),
                    cfg.clone(),
                    shutdown.clone(),
                )
                .instrument(tracing::info_span!("alert_sink", sink = %t.name())),
            );
            sinks.push((t, q));
        }
        let me = Alerter {
            cfg,
            firing: HashMap::new(),
            started: HashMap::new(),
            sinks,
        };
        tasks.spawn(
            me.run(events, snapshot, shutdown)
                .instrument(tracing::info_span!("alerts")),
        );
        Ok(())
    }

    /// Queue `a` on the sinks; keyed by analysis and alert name, so that resolving one alert
    /// and firing another for the same analysis do not coalesce into one.
    fn send(&self, id: &str, a: &Alert, only_alertmanager: bool) {
        let name = a.labels.get("alertname").map_or("", String::as_str);
        let key = format!("{id}/{name}");
        let key = key.as_str();
        for (t, q) in &self.sinks {
            if only_alertmanager && !matches!(t, Target::Alertmanager(_)) {
                continue;
            }
            q.push(key, a.clone());
        }
    }

    fn fire(&mut self, v: &AnalysisView) {
        if self.firing.contains_key(&v.id) {
            return;
        }
        let started = *self
            .started
            .entry(v.id.clone())
            .or_insert_with(SystemTime::now);
        let a = alert_for(v, &self.cfg, started);
        info!(analysis = %v.id, "alert firing");
        self.send(&v.id, &a, false);
        self.firing.insert(v.id.clone(), a);
    }

    fn resolve(&mut self, id: &str, why: &str) {
        if let Some(mut a) = self.firing.remove(id) {
            a.ends_at = rfc3339(SystemTime::now());
            a.firing = false;
            a.annotations.insert("resolved_because".into(), why.into());
            info!(analysis = %id, why, "alert resolved");
            self.send(id, &a, false);
        }
        self.started.remove(id);
    }

    fn observe(&mut self, v: &AnalysisView) {
        let verdict = v.verdict();
        let wanted = self.cfg.on.contains(&verdict) && alert_kind(verdict).is_some();
        let same = self
            .firing
            .get(&v.id)
            .is_some_and(|a| a.labels.get("verdict").map(String::as_str) == Some(verdict.as_str()));
        if self.firing.contains_key(&v.id) && !same {
            let why = format!("verdict is now {}", verdict.as_str());
            self.resolve(&v.id, &why);
        }
        if wanted {
            self.fire(v);
        }
    }

    /// After missed events: make the firing set match the snapshot.
    fn resync(&mut self, snap: &Snapshot) {
        let gone: Vec<String> = self
            .firing
            .keys()
            .filter(|k| !snap.analyses.contains_key(*k))
            .cloned()
            .collect();
        for id in gone {
            self.resolve(&id, "analysis deleted");
        }
        for v in snap.analyses.values() {
            self.observe(v);
        }
    }

    async fn run(
        mut self,
        mut events: broadcast::Receiver<VerdictEvent>,
        snapshot: watch::Receiver<Arc<Snapshot>>,
        shutdown: CancellationToken,
    ) {
        let every = self.cfg.resend_interval;
        let mut resend = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Configured analyses may have been created before we subscribed.
        let snap = snapshot.borrow().clone();
        self.resync(&snap);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = events.recv() => match ev {
                    Ok(VerdictEvent::Changed { view, .. }) => self.observe(&view),
                    Ok(VerdictEvent::Deleted { view }) => self.resolve(&view.id, "analysis deleted"),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "alerting fell behind the verdict events; resyncing");
                        let snap = snapshot.borrow().clone();
                        self.resync(&snap);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = resend.tick() => {
                    let ends = rfc3339(SystemTime::now() + every * 4);
                    let ids: Vec<String> = self.firing.keys().cloned().collect();
                    for id in ids {
                        let a = self.firing.get_mut(&id).expect("present");
                        a.ends_at = ends.clone();
                        let a = a.clone();
                        self.send(&id, &a, true);
                    }
                }
            }
        }
    }
}

// === impl AlertsConfig ===

/// `[alerts]`: Alertmanager and webhook sinks for NO-GO and INCONCLUSIVE verdicts.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// The verdicts that alert: `NO-GO`, `INCONCLUSIVE` (default both).
    #[serde(default = "default_alert_on")]
    pub on: Vec<Verdict>,
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

/// Per-delivery timeout; the scrape timeout's default, as when both came from one function.
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_alert_on() -> Vec<Verdict> {
    vec![Verdict::NoGo, Verdict::Inconclusive]
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
            on: default_alert_on(),
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
        for (i, v) in self.on.iter().enumerate() {
            if alert_kind(*v).is_none() {
                out.push(ConfigProblem::new(
                    format!("alerts.on[{i}]"),
                    format!("{} never alerts; use NO-GO or INCONCLUSIVE", v.as_str()),
                ));
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_is_read_from_plain_equalities_only() {
        assert_eq!(
            selector_value(r#"{role="proxy", revision="1-25-0"}"#, "revision").as_deref(),
            Some("1-25-0")
        );
        assert_eq!(selector_value(r#"{myrevision="x"}"#, "revision"), None);
        assert_eq!(selector_value(r#"{revision=~"1-2.*"}"#, "revision"), None);
    }

    #[test]
    fn queue_keeps_the_latest_state_and_is_bounded() {
        let q = Queue {
            pending: Mutex::new(BTreeMap::new()),
            notify: Notify::new(),
            cap: 2,
            name: "t".into(),
        };
        let a = |firing| Alert {
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            starts_at: String::new(),
            ends_at: String::new(),
            generator_url: String::new(),
            firing,
        };
        assert!(q.push("x", a(true)));
        assert!(q.push("x", a(false)));
        assert!(q.push("y", a(true)));
        assert!(!q.push("z", a(true)));
        let taken = q.take();
        assert_eq!(taken.len(), 2);
        assert!(
            !taken[0].1.firing,
            "the newer state of x replaced the older"
        );
        // A failed batch is put back only where nothing newer arrived.
        q.push("x", a(true));
        q.requeue(taken);
        let again = q.take();
        assert_eq!(again.len(), 2);
        assert!(again[0].1.firing);
    }
}
