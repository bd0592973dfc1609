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
}
