//! meshgate's own metrics (prometheus-client), served at `/metrics`: the registry, the process
//! metrics (heap), the encoder, and [`metric`], which each component uses to register its own
//! metrics (`ScrapeMetrics::register` in `scrape`, `AnalysisMetrics::register` in `state`,
//! `StoreMetrics::register` in `store::writer`).

use std::sync::Mutex;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

/// Register `m` as `meshgate_<name>` with its help text and hand it back, so a component builds
/// its metrics struct field by field: `errors: metric(reg, "store_errors", "...", Counter::default())`.
pub fn metric<M: Metric + Clone>(reg: &mut Registry, name: &str, help: &str, m: M) -> M {
    reg.register(name, help, m.clone());
    m
}

/// The registry every component registers into, and the heap gauges set at each encode.
pub struct Telemetry {
    registry: Mutex<Registry>,
    heap: Mutex<HeapGauges>,
}

/// Rust's live bytes (when the binary counts them) and glibc's mapped and free bytes (when it is
/// glibc).
#[derive(Default)]
struct HeapGauges {
    live: Option<Gauge>,
    mapped: Option<Gauge>,
    free: Option<Gauge>,
}

// === impl Telemetry ===

impl Telemetry {
    /// An empty registry; every name gets the `meshgate_` prefix.
    pub fn new() -> Self {
        Telemetry {
            registry: Mutex::new(Registry::with_prefix("meshgate")),
            heap: Mutex::new(HeapGauges::default()),
        }
    }

    /// Let a component register its metrics (`telemetry.register(ScrapeMetrics::register)`).
    pub fn register<M>(&self, build: impl FnOnce(&mut Registry) -> M) -> M {
        build(&mut self.registry.lock().expect("registry lock"))
    }

    /// Register the heap gauges that this process can fill.
    pub fn register_heap(&self) {
        let mut heap = self.heap.lock().expect("heap lock");
        self.register(|reg| {
            if crate::heap::stats().is_some() {
                heap.live = Some(metric(
                    reg,
                    "heap_live_bytes",
                    "Bytes the daemon has allocated and not freed",
                    Gauge::default(),
                ));
            }
            if crate::heap::malloc_info().is_some() {
                heap.mapped = Some(metric(
                    reg,
                    "malloc_mapped_bytes",
                    "Bytes the C allocator has obtained from the system (arenas and mmapped blocks)",
                    Gauge::default(),
                ));
                heap.free = Some(metric(
                    reg,
                    "malloc_free_bytes",
                    "Bytes in free chunks the C allocator keeps for reuse",
                    Gauge::default(),
                ));
            }
        });
    }

    /// Text exposition of every metric.
    pub fn encode(&self) -> String {
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        {
            let heap = self.heap.lock().expect("heap lock");
            if let (Some(g), Some(s)) = (&heap.live, crate::heap::stats()) {
                g.set(as_i64(s.live_bytes));
            }
            if let Some(i) = crate::heap::malloc_info() {
                if let (Some(mapped), Some(free)) = (&heap.mapped, &heap.free) {
                    mapped.set(as_i64(i.mapped_bytes));
                    free.set(as_i64(i.free_bytes));
                }
            }
        }
        let mut out = String::new();
        let reg = self.registry.lock().expect("registry lock");
        prometheus_client::encoding::text::encode(&mut out, &reg)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The OpenMetrics media type `/metrics` answers with when the scraper asks for it.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format 0.0.4, the answer to everyone else (curl, older scrapers), as the
/// official client libraries do.
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics (Prometheus sends
/// `application/openmetrics-text;version=1.0.0,...,text/plain;version=0.0.4;q=0.5,*/*;q=0.1`).
/// A media range with `q=0` refuses it.
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f64>().ok())
            .unwrap_or(1.0);
        media.eq_ignore_ascii_case("application/openmetrics-text") && q > 0.0
    })
}

/// The same families in the text format 0.0.4: no `# EOF` or `# UNIT`, a counter family's HELP and
/// TYPE named after its `_total` sample, no `_created` samples, no exemplars.
pub fn to_text_004(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        let line = match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{prefix}{name}_total {tail}\n"));
                    continue;
                }
                line
            }
            None if line.starts_with('#') => line,
            None => {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                if name
                    .strip_suffix("_created")
                    .is_some_and(|f| counters.contains(f))
                {
                    continue;
                }
                // An exemplar follows ` # ` after the value; 0.0.4 has none.
                line.split_once(" # ").map_or(line, |(sample, _)| sample)
            }
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn registers_with_the_prefix_and_encodes() {
        let t = Telemetry::new();
        let c = t.register(|reg| metric(reg, "things", "Things seen", Counter::<u64>::default()));
        c.inc();
        let text = t.encode();
        assert!(
            text.contains("# HELP meshgate_things Things seen."),
            "{text}"
        );
        assert!(text.contains("meshgate_things_total 1"), "{text}");
    }

    #[test]
    fn text_004_names_counter_metadata_after_the_sample_and_drops_openmetrics_only_lines() {
        let om = "# HELP meshgate_x Things.\n# TYPE meshgate_x counter\n# UNIT meshgate_x bytes\n\
                  meshgate_x_total{a=\"1\"} 3 # {trace_id=\"k\"} 1.0\nmeshgate_x_created 1.7e9\n\
                  # HELP meshgate_up Up.\n# TYPE meshgate_up gauge\nmeshgate_up 1\n# EOF\n";
        assert_eq!(
            to_text_004(om),
            "# HELP meshgate_x_total Things.\n# TYPE meshgate_x_total counter\n\
             meshgate_x_total{a=\"1\"} 3\n# HELP meshgate_up Up.\n# TYPE meshgate_up gauge\nmeshgate_up 1\n"
        );
    }

    #[test]
    fn openmetrics_only_when_asked() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(prometheus));
        assert!(wants_openmetrics("Application/OpenMetrics-Text"));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(!wants_openmetrics(
            "application/openmetrics-text;q=0, text/plain"
        ));
        assert!(!wants_openmetrics(""));
    }
}
