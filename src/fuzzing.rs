//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the proptest fallback
//! (`tests/fuzz_regressions.rs`); not part of the stable API.

use std::sync::Arc;

use crate::analysis::AnalysisConfig;
use crate::cohort::{RoutedAnalysis, Routing, Selector, TargetAccumulator};
use crate::judge::Catalog;

/// Parse `page` with the built-in checks' families and ingest it twice into an accumulator:
/// must not panic, and no delta may be negative or non-finite.
pub fn parse_and_ingest(page: &str) {
    let cat = Catalog::builtin();
    let routing = Routing::new(
        1,
        vec![RoutedAnalysis {
            id: 1,
            since_generation: 1,
            baseline: Selector::parse(r#"{revision="old"}"#).expect("valid"),
            canary: Selector::parse(r#"{reporter=~"dest.*"}"#).expect("valid"),
            checks: cat.iter().map(|c| Arc::new(c.clone())).collect(),
        }],
    );
    let mut acc = TargetAccumulator::new([("revision".to_string(), "new".to_string())].into());
    acc.ingest(page, &routing);
    let rep = acc.ingest(page, &routing);
    check_report(&rep);
    let _ = crate::parse::parse(page, &routing.filter, |_| {});
    // The truncation signal (issue 13): an OpenMetrics page ends with `# EOF` or is cut short;
    // the answer never panics, and a page whose last line is `# EOF` is whole in either format.
    for openmetrics in [false, true] {
        let end = meshgate_expo::page_end(page, openmetrics);
        let last = page.trim_end_matches('\n').trim_end_matches('\r');
        if last.rsplit('\n').next() == Some("# EOF") {
            assert_eq!(end, meshgate_expo::PageEnd::Whole, "{page:?}");
        }
    }
    // Pages separated by NUL bytes: successive scrapes of one target, so values going up,
    // down (resets, dips) and back reach the reset logic; then the same in reverse.
    if page.contains('\0') {
        for order in [false, true] {
            let mut acc =
                TargetAccumulator::new([("revision".to_string(), "new".to_string())].into());
            let pages: Vec<&str> = if order {
                page.rsplit('\0').collect()
            } else {
                page.split('\0').collect()
            };
            for p in pages {
                check_report(&acc.ingest(p, &routing));
            }
        }
    }
}

/// What every ingest must give, whatever the page: no negative, non-finite or inexact delta
/// (the plausibility limits, issue 13), and nothing at all from a quarantined page.
fn check_report(rep: &crate::cohort::IngestReport) {
    if let Some(v) = &rep.quarantined {
        assert!(
            rep.deltas.is_empty(),
            "deltas from a quarantined page ({v}): {:?}",
            rep.deltas
        );
        assert!(!v.limit.is_empty() && !v.message.is_empty(), "{v:?}");
    }
    for d in &rep.deltas {
        assert!(d.value >= 0.0 && d.value.is_finite(), "bad delta {d:?}");
        assert!(
            d.value <= crate::cohort::EXACT_INTEGER_LIMIT,
            "a delta beyond 2^53: {d:?}"
        );
    }
}

/// Decode and validate an analysis body as `POST /v1/analyses` does: must not panic.
pub fn analysis_body(data: &[u8]) {
    if let Ok(spec) = serde_json::from_slice::<AnalysisConfig>(data) {
        let problems = spec.problems("analysis");
        if problems.is_empty() {
            Selector::parse(&spec.baseline).expect("validated selector parses");
            Selector::parse(&spec.canary).expect("validated selector parses");
        }
    }
}

/// A real store file (one analysis with every built-in check, two targets' series), built once.
pub fn sample_store() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let path = scratch_path("sample");
        let (store, _) = crate::store::Store::open(&path).expect("a new store opens");
        let cat = Catalog::builtin();
        let checks: Vec<&crate::judge::CheckSpec> = cat.iter().collect();
        let settings = crate::judge::Settings {
            alpha: 0.05,
            min_duration: std::time::Duration::from_secs(60),
            max_duration: std::time::Duration::from_secs(600),
            min_exposure: 100.0,
            slo_go: false,
            go_certificate: Default::default(),
            design: Default::default(),
            soak: std::time::Duration::ZERO,
        };
        let a = crate::store::StoredAnalysis {
            spec: AnalysisConfig {
                name: "sample".into(),
                baseline: r#"{revision="old"}"#.into(),
                canary: r#"{revision="new"}"#.into(),
                ..Default::default()
            },
            created_at: 1.7e9,
            state: crate::judge::Analysis::new(settings, &checks),
            pending: checks
                .iter()
                .map(|c| [vec![1.0; c.slots()], vec![2.0; c.slots()]])
                .collect(),
            members: [vec!["http://a".into()], vec!["http://b".into()]],
            resets: [1, 0],
            overlaps: 0,
            finished_at: None,
            scope: Some("integrations".into()),
            history: Default::default(),
        };
        let snap = |v: f64| crate::cohort::SeriesSnapshot {
            series: (0..20)
                .map(|i| {
                    (
                        "istio_requests_total".into(),
                        crate::cohort::SeriesKey::of(&format!(
                            "response_code=\"{}\",pod=\"p{i}\"",
                            200 + i
                        )),
                        v + i as f64,
                    )
                })
                .collect(),
        };
        let (sa, sb) = (snap(10.0), snap(1e6));
        store
            .write([("sample", a)], [("http://a", &sa), ("http://b", &sb)])
            .expect("the sample store is written");
        drop(store);
        let bytes = std::fs::read(&path).expect("the sample store is read");
        let _ = std::fs::remove_file(&path);
        bytes
    })
}

/// A file name of its own under the temporary directory.
fn scratch_path(what: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "meshgate-fuzz-{}-{n}-{what}.redb",
        std::process::id()
    ))
}

/// What an open of a damaged store must do: return (never panic), `Ok` or an error that names the
/// file, leave a refused file byte for byte as it was, and refuse it again the same way.
/// Returns whether the store opened.
pub fn open_store_file(bytes: &[u8]) -> bool {
    let path = scratch_path("case");
    std::fs::write(&path, bytes).expect("the case is written");
    let first = crate::store::Store::open(&path).map(drop);
    let ok = match &first {
        Ok(()) => true,
        Err(e) => {
            let shown = path.display().to_string();
            assert!(e.to_string().contains(&shown), "{e} does not name {shown}");
            let after = std::fs::read(&path).expect("the case is read");
            assert!(after == bytes, "a refused open changed the file: {e}");
            let second = crate::store::Store::open(&path).map(drop);
            assert_eq!(
                second.map_err(|e| e.to_string()).err().as_deref(),
                Some(e.to_string().as_str()),
                "a second open of the same bytes differs"
            );
            false
        }
    };
    let _ = std::fs::remove_file(&path);
    ok
}

/// Mutations of [`sample_store`] read from `ops`, 5 bytes each: a kind and a little-endian
/// position. Kind 0-5 flips bit `kind` of the byte at the position (modulo the length), 6
/// truncates the file there, 7 sets the byte to `0xff`. Then [`open_store_file`].
pub fn store_mutations(ops: &[u8]) -> bool {
    let mut bytes = sample_store().to_vec();
    for op in ops.chunks_exact(5) {
        if bytes.is_empty() {
            break;
        }
        let at = u32::from_le_bytes([op[1], op[2], op[3], op[4]]) as usize % bytes.len();
        match op[0] % 8 {
            6 => bytes.truncate(at),
            7 => bytes[at] = 0xff,
            k => bytes[at] ^= 1 << k,
        }
    }
    open_store_file(&bytes)
}
