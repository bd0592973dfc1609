//! meshgate's own metrics (prometheus-client), served at `/metrics`.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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

/// Per-analysis label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnalysisLabels {
    /// Analysis name.
    pub analysis: String,
}

/// Per-analysis verdict labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// Analysis name.
    pub analysis: String,
    /// PENDING, GO, NO-GO, INCONCLUSIVE.
    pub verdict: String,
}

/// Every metric meshgate exports about itself.
pub struct Metrics {
    registry: Mutex<Registry>,
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
    /// 1 for the current verdict of each analysis.
    pub verdict: Family<VerdictLabels, Gauge>,
    /// Combined e-value of each analysis.
    pub e_value: Family<AnalysisLabels, Gauge<f64, AtomicU64>>,
    /// Analysis ticks.
    pub ticks: Counter,
    /// Delay from reading a page to the tick that judged its deltas.
    pub ingest_delay: Histogram,
    /// Heap gauges, set at each encode: Rust's live bytes (when the binary counts them) and
    /// glibc's mapped and free bytes (when it is glibc).
    heap: HeapGauges,
}

/// The store writer's metrics, registered when a store is configured.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    /// Failed store writes (each try counts).
    pub errors: Counter,
    /// 1 while the store takes writes, 0 from a failed write until one succeeds.
    pub healthy: Gauge,
    /// Time of each successful write (encode and commit, both fsyncs included).
    pub write_seconds: Histogram,
}

#[derive(Default)]
struct HeapGauges {
    live: Option<Gauge>,
    mapped: Option<Gauge>,
    free: Option<Gauge>,
}

// === impl Metrics ===

impl Metrics {
    /// Create and register everything.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("meshgate");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            scrapes: Family::default(),
            scrape_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            scrape_bytes: Counter::default(),
            target_up: Family::default(),
            target_series: Family::default(),
            target_last_success: Family::default(),
            parse_errors: Counter::default(),
            counter_resets: Counter::default(),
            verdict: Family::default(),
            e_value: Family::default(),
            ticks: Counter::default(),
            ingest_delay: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            heap: HeapGauges::default(),
        };
        registry.register("scrapes", "Scrapes by outcome", m.scrapes.clone());
        registry.register(
            "scrape_duration_seconds",
            "Scrape duration, request to parsed page",
            m.scrape_duration.clone(),
        );
        registry.register(
            "scrape_bytes",
            "Bytes of scraped pages after decompression",
            m.scrape_bytes.clone(),
        );
        registry.register(
            "target_up",
            "1 when the last scrape of the target succeeded",
            m.target_up.clone(),
        );
        registry.register(
            "target_series",
            "Series tracked for the target",
            m.target_series.clone(),
        );
        registry.register(
            "target_last_success_timestamp_seconds",
            "Unix time of the last successful scrape",
            m.target_last_success.clone(),
        );
        registry.register(
            "parse_errors",
            "Malformed lines in scraped pages",
            m.parse_errors.clone(),
        );
        registry.register(
            "counter_resets",
            "Counter resets seen in scraped series",
            m.counter_resets.clone(),
        );
        registry.register(
            "analysis_verdict",
            "1 for the current verdict of each analysis",
            m.verdict.clone(),
        );
        registry.register(
            "analysis_e_value",
            "Combined e-value of each analysis",
            m.e_value.clone(),
        );
        registry.register("analysis_ticks", "Analysis ticks taken", m.ticks.clone());
        registry.register(
            "scrape_to_verdict_seconds",
            "Delay from reading a page to the analysis tick that judged its deltas",
            m.ingest_delay.clone(),
        );
        let mut m = m;
        if crate::heap::stats().is_some() {
            let g = Gauge::default();
            registry.register(
                "heap_live_bytes",
                "Bytes the daemon has allocated and not freed",
                g.clone(),
            );
            m.heap.live = Some(g);
        }
        if crate::heap::malloc_info().is_some() {
            let (mapped, free) = (Gauge::default(), Gauge::default());
            registry.register(
                "malloc_mapped_bytes",
                "Bytes the C allocator has obtained from the system (arenas and mmapped blocks)",
                mapped.clone(),
            );
            registry.register(
                "malloc_free_bytes",
                "Bytes in free chunks the C allocator keeps for reuse",
                free.clone(),
            );
            (m.heap.mapped, m.heap.free) = (Some(mapped), Some(free));
        }
        *m.registry.lock().expect("registry lock") = registry;
        m
    }

    /// Text exposition of every metric.
    pub fn encode(&self) -> String {
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        if let (Some(g), Some(s)) = (&self.heap.live, crate::heap::stats()) {
            g.set(as_i64(s.live_bytes));
        }
        if let Some(i) = crate::heap::malloc_info() {
            if let (Some(mapped), Some(free)) = (&self.heap.mapped, &self.heap.free) {
                mapped.set(as_i64(i.mapped_bytes));
                free.set(as_i64(i.free_bytes));
            }
        }
        let mut out = String::new();
        let reg = self.registry.lock().expect("registry lock");
        prometheus_client::encoding::text::encode(&mut out, &reg)
            .expect("writing to a String cannot fail");
        out
    }

    /// Register the store writer's metrics (called once, when a store is configured).
    pub fn store(&self) -> StoreMetrics {
        let m = StoreMetrics {
            errors: Counter::default(),
            healthy: Gauge::default(),
            write_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        };
        let mut reg = self.registry.lock().expect("registry lock");
        reg.register(
            "store_errors",
            "Failed store writes, each try counted",
            m.errors.clone(),
        );
        reg.register(
            "store_healthy",
            "1 while the store takes writes, 0 from a failed write until one succeeds",
            m.healthy.clone(),
        );
        reg.register(
            "store_write_duration_seconds",
            "Time of each successful store write, encode and commit with fsync",
            m.write_seconds.clone(),
        );
        m
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

    /// Set the verdict gauge of an analysis (1 for the current verdict, series for others removed).
    pub fn set_verdict(&self, analysis: &str, verdict: &str) {
        for v in ["PENDING", "GO", "NO-GO", "INCONCLUSIVE"] {
            let l = VerdictLabels {
                analysis: analysis.to_owned(),
                verdict: v.to_owned(),
            };
            if v == verdict {
                self.verdict.get_or_create(&l).set(1);
            } else {
                self.verdict.remove(&l);
            }
        }
    }

    /// Set the combined e-value gauge of an analysis (the API sets it from the analyses'
    /// current state when `/metrics` is read).
    pub fn set_e_value(&self, analysis: &str, ln_e: f64) {
        self.e_value
            .get_or_create(&AnalysisLabels {
                analysis: analysis.to_owned(),
            })
            .set(ln_e.exp());
    }

    /// Forget a deleted analysis.
    pub fn remove_analysis(&self, analysis: &str) {
        for v in ["PENDING", "GO", "NO-GO", "INCONCLUSIVE"] {
            self.verdict.remove(&VerdictLabels {
                analysis: analysis.to_owned(),
                verdict: v.to_owned(),
            });
        }
        self.e_value.remove(&AnalysisLabels {
            analysis: analysis.to_owned(),
        });
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_with_prefix_and_labels() {
        let m = Metrics::new();
        m.scrapes
            .get_or_create(&OutcomeLabels {
                outcome: "ok".into(),
            })
            .inc();
        m.set_verdict("wave-1", "NO-GO");
        m.set_e_value("wave-1", 3.0);
        let text = m.encode();
        assert!(
            text.contains("meshgate_scrapes_total{outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("meshgate_analysis_verdict{analysis=\"wave-1\",verdict=\"NO-GO\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("meshgate_analysis_e_value{analysis=\"wave-1\"} 20.08"),
            "{text}"
        );
        m.set_verdict("wave-1", "PENDING");
        assert!(!m.encode().contains("verdict=\"NO-GO\""));
    }
}
