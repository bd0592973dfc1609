//! Per-target gauges read from each scraped page: builds, connected proxies, resource use.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde::Serialize;

use crate::Target;
use meshgate_expo::{self as parse, FamilyFilter, Sample};

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
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
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

/// The observer's family filter (built once).
pub fn filter() -> &'static FamilyFilter {
    static FILTER: std::sync::LazyLock<FamilyFilter> =
        std::sync::LazyLock::new(|| FamilyFilter::new(FAMILIES.iter().copied()));
    &FILTER
}

/// The gauges of one page as its samples go by: fed by the scrape loop's single parse pass
/// ([`crate::cohort::TargetAccumulator::ingest_observing`] with [`filter`]), or by [`read_page`].
#[derive(Clone, Debug, Default)]
pub struct PageReader {
    builds: Vec<(String, String)>,
    xds: Vec<(Option<String>, f64)>,
    resident_bytes: Option<f64>,
    heap_inuse_bytes: Option<f64>,
    goroutines: Option<f64>,
    cpu_seconds: Option<f64>,
}

// === impl PageReader ===

impl PageReader {
    /// Take one sample (samples of other families are ignored).
    pub fn take(&mut self, s: &Sample<'_>) {
        if !s.value.is_finite() {
            return;
        }
        match s.name {
            "istio_build" if s.value > 0.0 => {
                let c = s.labels.get("component").unwrap_or_default().into_owned();
                let t = s.labels.get("tag").unwrap_or_default().into_owned();
                self.builds.push((c, t));
            }
            "pilot_xds" => self
                .xds
                .push((s.labels.get("version").map(|v| v.into_owned()), s.value)),
            "process_cpu_seconds_total" => self.cpu_seconds = Some(s.value),
            "process_resident_memory_bytes" => self.resident_bytes = Some(s.value),
            "go_memstats_heap_inuse_bytes" => self.heap_inuse_bytes = Some(s.value),
            "go_goroutines" => self.goroutines = Some(s.value),
            _ => {}
        }
    }

    /// The observation of `target` (`prev` gives the CPU rate).
    pub fn finish(
        self,
        target: &Target,
        prev: Option<&TargetObservation>,
        now: Instant,
    ) -> TargetObservation {
        let mut o = TargetObservation {
            url: target.url.clone(),
            labels: target.labels.clone(),
            builds: self.builds,
            xds: self.xds,
            resident_bytes: self.resident_bytes,
            heap_inuse_bytes: self.heap_inuse_bytes,
            goroutines: self.goroutines,
            cpu_seconds: self.cpu_seconds,
            cpu_cores: None,
            age_seconds: 0.0,
            at: Some(now),
        };
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
}

/// Read the observed gauges from one page with a parse pass of its own (pure; `prev` gives the
/// CPU rate). The scrape loop does not use this: it feeds a [`PageReader`] from its one parse.
pub fn read_page(
    target: &Target,
    page: &str,
    prev: Option<&TargetObservation>,
    now: Instant,
) -> TargetObservation {
    let mut r = PageReader::default();
    parse::parse(page, filter(), |s| r.take(&s));
    r.finish(target, prev, now)
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

    /// Take in what a [`PageReader`] read from one page of a target (the scrape loop's path).
    pub fn commit(&self, target: &Target, page: PageReader) {
        let now = Instant::now();
        let mut map = self.inner.write().expect("observer lock");
        let o = page.finish(target, map.get(&target.url), now);
        map.insert(target.url.clone(), o);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cohort::{RoutedAnalysis, Routing, Selector, TargetAccumulator};
    use crate::judge::Catalog;

    const ISTIOD_1_5: &str =
        include_str!("../../../../tests/fixtures/istio/istiod-1.5.0_metrics-15014_datadog.prom");
    const PROXY_1_11: &str = include_str!(
        "../../../../tests/fixtures/istio/istio-proxy-1.11.4_merged-stats-15020_datadog.prom"
    );

    fn routing() -> Routing {
        let checks = Catalog::builtin()
            .iter()
            .map(|c| std::sync::Arc::new(c.clone()))
            .collect();
        Routing::new(
            1,
            vec![RoutedAnalysis {
                id: 1,
                since_generation: 0,
                baseline: Selector::parse(r#"{revision="a"}"#).unwrap(),
                canary: Selector::parse(r#"{revision="b"}"#).unwrap(),
                checks,
            }],
        )
    }

    /// The scrape loop's single pass reads the same gauges as a parse of its own, and the
    /// cohort side of it is the same as a plain ingest.
    #[test]
    fn single_pass_matches_separate_parse() {
        let r = routing();
        for (page, rev) in [(ISTIOD_1_5, "a"), (PROXY_1_11, "b")] {
            let t = Target {
                url: "http://10.0.0.1:15014/metrics".into(),
                labels: [("revision".to_string(), rev.to_string())].into(),
            };
            let now = Instant::now();
            let alone = read_page(&t, page, None, now);
            let mut reader = PageReader::default();
            let mut acc = TargetAccumulator::new(t.labels.clone());
            let mut plain = TargetAccumulator::new(t.labels.clone());
            let mut extra_samples = 0;
            let rep = acc.ingest_observing(page, &r, filter(), |s| {
                extra_samples += 1;
                reader.take(s)
            });
            let plain_rep = plain.ingest(page, &r);
            let single = reader.finish(&t, None, now);
            assert!(extra_samples > 0);
            assert_eq!(single.builds, alone.builds);
            assert_eq!(single.xds, alone.xds);
            assert_eq!(single.resident_bytes, alone.resident_bytes);
            assert_eq!(single.cpu_seconds, alone.cpu_seconds);
            assert_eq!(single.goroutines, alone.goroutines);
            assert_eq!(single.heap_inuse_bytes, alone.heap_inuse_bytes);
            assert_eq!(rep.samples, plain_rep.samples);
            assert_eq!(rep.skipped, plain_rep.skipped);
            assert_eq!(rep.series, plain_rep.series);
            assert_eq!(rep.error_count, plain_rep.error_count);
        }
        // What the captures hold: 1.5's istiod has an unlabelled pilot_xds and its build tag.
        let t = Target {
            url: "u".into(),
            labels: Default::default(),
        };
        let o = read_page(&t, ISTIOD_1_5, None, Instant::now());
        assert_eq!(o.xds.len(), 1);
        assert_eq!(o.xds[0].0, None);
        assert!(o.build("pilot").is_some_and(|t| t.starts_with("1.5")));
        assert!(o.resident_bytes.is_some_and(|b| b > 0.0));
    }
}
