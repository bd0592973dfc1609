//! Per-target gauges read from each scraped page: builds, connected proxies, resource use.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde::Serialize;

use crate::discovery::Target;
use crate::parse::{self, FamilyFilter};

/// Families read from every page (a few lines each; everything else is skipped unparsed).
pub const FAMILIES: &[&str] = &[
    "istio_build",
    "pilot_xds",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "go_memstats_heap_inuse_bytes",
    "go_goroutines",
];

/// What one target's latest page said.
#[derive(Clone, Debug, Serialize)]
pub struct TargetObservation {
    /// Target URL.
    pub url: String,
    /// Target labels (role, cluster, revision, namespace, pod...).
    pub labels: BTreeMap<String, String>,
    /// `istio_build{component, tag}` samples with a non-zero value: (component, tag).
    pub builds: Vec<(String, String)>,
    /// istiod's `pilot_xds` samples: (version label if any, connected proxies). Istio 1.5 has
    /// no `version` label (`pilot_xds 5`): `None`.
    pub xds: Vec<(Option<String>, f64)>,
    /// Resident memory (bytes), if the page has it.
    pub resident_bytes: Option<f64>,
    /// Go heap in use (bytes).
    pub heap_inuse_bytes: Option<f64>,
    /// Goroutines.
    pub goroutines: Option<f64>,
    /// CPU seconds (cumulative).
    pub cpu_seconds: Option<f64>,
    /// CPU cores used between the last two pages (rate of `process_cpu_seconds_total`).
    pub cpu_cores: Option<f64>,
    /// Seconds since the page was read (filled in when a report is made).
    pub age_seconds: f64,
    #[serde(skip)]
    at: Option<Instant>,
}

impl TargetObservation {
    /// A label of the target.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }

    /// The tag of `istio_build{component=...}`.
    pub fn build(&self, component: &str) -> Option<&str> {
        self.builds
            .iter()
            .find(|(c, _)| c == component)
            .map(|(_, t)| t.as_str())
    }
}

/// Read the observed gauges from one page (pure; `prev` gives the CPU rate).
pub fn read_page(
    target: &Target,
    page: &str,
    prev: Option<&TargetObservation>,
    now: Instant,
) -> TargetObservation {
    let filter = FamilyFilter::new(FAMILIES.iter().copied());
    let mut o = TargetObservation {
        url: target.url.clone(),
        labels: target.labels.clone(),
        builds: Vec::new(),
        xds: Vec::new(),
        resident_bytes: None,
        heap_inuse_bytes: None,
        goroutines: None,
        cpu_seconds: None,
        cpu_cores: None,
        age_seconds: 0.0,
        at: Some(now),
    };
    parse::parse(page, &filter, |s| {
        if !s.value.is_finite() {
            return;
        }
        match s.name {
            "istio_build" if s.value > 0.0 => {
                let c = s.labels.get("component").unwrap_or_default().into_owned();
                let t = s.labels.get("tag").unwrap_or_default().into_owned();
                o.builds.push((c, t));
            }
            "pilot_xds" => o
                .xds
                .push((s.labels.get("version").map(|v| v.into_owned()), s.value)),
            "process_cpu_seconds_total" => o.cpu_seconds = Some(s.value),
            "process_resident_memory_bytes" => o.resident_bytes = Some(s.value),
            "go_memstats_heap_inuse_bytes" => o.heap_inuse_bytes = Some(s.value),
            "go_goroutines" => o.goroutines = Some(s.value),
            _ => {}
        }
    });
    if let (Some(p), Some(cpu)) = (prev, o.cpu_seconds) {
        if let (Some(pc), Some(pat)) = (p.cpu_seconds, p.at) {
            let dt = now.saturating_duration_since(pat).as_secs_f64();
            if dt > 0.0 && cpu >= pc {
                o.cpu_cores = Some((cpu - pc) / dt);
            }
        }
    }
    o
}

/// The latest observation of every target, shared by the scrape loops, the engine and the API.
#[derive(Clone, Debug, Default)]
pub struct Observer {
    inner: Arc<RwLock<HashMap<String, TargetObservation>>>,
}

// === impl Observer ===

impl Observer {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Take in one page of a target (called by its scrape loop after a successful fetch).
    pub fn observe(&self, target: &Target, page: &str) {
        let now = Instant::now();
        let prev = self
            .inner
            .read()
            .expect("observer lock")
            .get(&target.url)
            .cloned();
        let o = read_page(target, page, prev.as_ref(), now);
        self.inner
            .write()
            .expect("observer lock")
            .insert(target.url.clone(), o);
    }

    /// Forget a target that is no longer discovered.
    pub fn remove(&self, url: &str) {
        self.inner.write().expect("observer lock").remove(url);
    }

    /// Insert an observation directly (tests, replay).
    pub fn insert(&self, o: TargetObservation) {
        self.inner
            .write()
            .expect("observer lock")
            .insert(o.url.clone(), o);
    }

    /// Every observation, sorted by URL, with its age.
    pub fn all(&self) -> Vec<TargetObservation> {
        let now = Instant::now();
        let mut v: Vec<TargetObservation> = self
            .inner
            .read()
            .expect("observer lock")
            .values()
            .cloned()
            .map(|mut o| {
                o.age_seconds =
                    o.at.map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
                o
            })
            .collect();
        v.sort_by(|a, b| a.url.cmp(&b.url));
        v
    }
}
