//! The per-tick history of an analysis: one compact point per recorded tick, bounded by
//! decimation so the whole run from its start stays visible at a coarser resolution.
//!
//! A history holds at most [`MAX_POINTS`] points. When a point would exceed that, every other
//! point is dropped (the first one stays) and the stride doubles: from then on one tick in
//! `stride` is recorded. The points stay evenly spaced in ticks, the memory (and the store's
//! record) stays bounded however long the analysis runs, and the final tick is always kept.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::api::saturate;
use crate::judge::{Analysis, CheckSpec, CheckState, Verdict};

/// Most points a history holds: about two pixels per point across a chart, and a store record
/// of about 45 bytes per check and point (rewritten when a point is added).
pub const MAX_POINTS: usize = 256;

/// The history of one analysis (`GET /v1/analyses/{id}/history`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The combined e-value at which it is NO-GO (1 / alpha, as in the verdict document).
    pub threshold: f64,
    /// The checks, in the order of each point's `checks`.
    pub checks: Vec<HistoryCheck>,
    /// Ticks between two recorded points now (doubles at each decimation).
    pub stride: u64,
    /// The first tick that will be recorded next.
    pub next_tick: u64,
    /// The points, oldest first. Each is shared: the engine records into a history that the
    /// published view of the last tick still holds, so a new point copies pointers, not points.
    pub points: Vec<Arc<Point>>,
}

/// What stays the same over a check's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryCheck {
    /// Check name.
    pub name: String,
    /// The e-value at which this check alone is named as the cause of a NO-GO.
    pub threshold: f64,
    /// Tolerated relative regression: the ratio's bound is compared with 1 + margin.
    pub margin: f64,
}

/// One recorded tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// The analysis' tick number (1 for the first).
    pub tick: u64,
    /// Seconds since the analysis started.
    pub t: f64,
    /// The verdict after this tick.
    pub verdict: Verdict,
    /// The combined e-value (saturated at `f64::MAX`).
    pub e: f64,
    /// Per check, in the order of [`History::checks`].
    pub checks: Vec<CheckPoint>,
    /// Fresh targets, `[baseline, canary]`.
    pub fresh: [u32; 2],
    /// Stale targets, `[baseline, canary]`.
    pub stale: [u32; 2],
    /// Why data quality blocks a GO (a threshold crossed or a hold), when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<String>,
}

/// One check at one tick (its first test: the ratio, or a histogram's lowest boundary).
/// Values are single precision (they are drawn, not computed with), and a point is written as
/// the array `[e, lo, hi, est, events, exposure]`: field names in each of 256 points times
/// each check would double the record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "CheckTuple", from = "CheckTuple")]
pub struct CheckPoint {
    /// The check's e-value (saturated at `f32::MAX`).
    pub e: f32,
    /// Anytime-valid lower bound on the canary/baseline rate ratio.
    pub lo: f32,
    /// Anytime-valid upper bound on the ratio (`null` when unbounded).
    pub hi: Option<f32>,
    /// Point estimate of the ratio, when defined.
    pub est: Option<f32>,
    /// Cumulative events, `[baseline, canary]`.
    pub events: [f32; 2],
    /// Cumulative exposure (requests), `[baseline, canary]`.
    pub exposure: [f32; 2],
}

type CheckTuple = (f32, f32, Option<f32>, Option<f32>, [f32; 2], [f32; 2]);

impl From<CheckPoint> for CheckTuple {
    fn from(c: CheckPoint) -> Self {
        (c.e, c.lo, c.hi, c.est, c.events, c.exposure)
    }
}

impl From<CheckTuple> for CheckPoint {
    fn from((e, lo, hi, est, events, exposure): CheckTuple) -> Self {
        CheckPoint {
            e,
            lo,
            hi,
            est,
            events,
            exposure,
        }
    }
}

/// A full history ([`MAX_POINTS`] points) of checks named `checks`, with values no two alike (as
/// a run has them, so an encoder cannot shorten them): what an analysis holds once it has run
/// that many recorded ticks. For the store's size test and the store benchmark.
#[doc(hidden)]
pub fn synthetic_full(checks: &[(&str, f64)]) -> History {
    let x = |i: usize, j: usize| 1.0 + (i * 31 + j * 7) as f64 / 997.0;
    History {
        threshold: 20.0,
        checks: checks
            .iter()
            .map(|(name, margin)| HistoryCheck {
                name: (*name).to_owned(),
                threshold: 20.0,
                margin: *margin,
            })
            .collect(),
        stride: 2,
        next_tick: 2 * MAX_POINTS as u64 + 1,
        points: (0..MAX_POINTS)
            .map(|i| Point {
                tick: 1 + 2 * i as u64,
                t: 10.003 * i as f64,
                verdict: Verdict::Pending,
                e: x(i, 0),
                checks: (0..checks.len())
                    .map(|j| CheckPoint {
                        e: x(i, j) as f32,
                        lo: x(i, j + 1) as f32 * 0.5,
                        hi: Some(x(i, j + 2) as f32 * 1.5),
                        est: Some(x(i, j + 3) as f32),
                        events: [x(i, j) as f32 * 11.0, x(i, j) as f32 * 13.0],
                        exposure: [x(i, j) as f32 * 1e5, x(i, j) as f32 * 1.1e5],
                    })
                    .collect(),
                fresh: [3, 3],
                stale: [0, 0],
                quality: None,
            })
            .map(Arc::new)
            .collect(),
    }
}

// === impl History ===

impl Default for History {
    fn default() -> Self {
        History {
            threshold: 0.0,
            checks: Vec::new(),
            stride: 1,
            next_tick: 0,
            points: Vec::new(),
        }
    }
}

impl History {
    /// Whether the tick numbered `tick` is to be recorded (a final verdict always is).
    pub fn due(&self, tick: u64, verdict: Verdict) -> bool {
        tick >= self.next_tick || verdict.is_final()
    }

    /// Record `analysis` (whose checks are `specs`) at its last tick if that tick is
    /// [`Self::due`]; returns whether it did. Reads the e-processes directly, never the evidence
    /// document: a point costs each check's e-value and its first test's two bounds, not the
    /// evidence (all boundaries, strata, fixed-horizon statistics), which an undecided tick
    /// leaves to its first reader.
    pub fn record(&mut self, analysis: &Analysis, specs: &[&CheckSpec]) -> bool {
        let tick = analysis.ticks();
        let verdict = analysis.verdict();
        if !self.due(tick, verdict) || self.points.last().is_some_and(|p| p.tick >= tick) {
            return false;
        }
        if self.checks.is_empty() {
            // Names, thresholds and margins do not change: the evidence of any tick has them.
            self.threshold = 1.0 / analysis.settings().test_alpha();
            self.checks = analysis
                .evidence()
                .iter()
                .map(|c| HistoryCheck {
                    name: c.name.clone(),
                    threshold: saturate(c.threshold),
                    margin: c.margin,
                })
                .collect();
        }
        let alpha = analysis.settings().test_alpha();
        let q = analysis.quality();
        let quality = q
            .blocked_by
            .as_ref()
            .or(q.hold.as_ref())
            .map(|b| b.message.clone());
        let checks = analysis
            .checks()
            .iter()
            .zip(analysis.current_check_e_values(specs))
            .map(|(c, e)| check_point(c, e, alpha))
            .collect();
        self.push(Point {
            tick,
            t: analysis.elapsed().as_secs_f64(),
            verdict,
            e: crate::api::e_value(analysis.current_ln_e(specs)),
            checks,
            fresh: [q.baseline.fresh as u32, q.canary.fresh as u32],
            stale: [q.baseline.stale as u32, q.canary.stale as u32],
            quality,
        });
        true
    }

    /// Append `p`, decimating when full. Decimation happens at `MAX_POINTS + 1` points and keeps
    /// the even positions, so the point just pushed (position `MAX_POINTS`) always stays: a
    /// final verdict's point is never dropped.
    fn push(&mut self, p: Point) {
        let tick = p.tick;
        self.points.push(Arc::new(p));
        if self.points.len() > MAX_POINTS {
            let mut i = 0;
            self.points.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.stride *= 2;
        }
        self.next_tick = tick + self.stride;
    }
}

fn f32_of(x: f64) -> f32 {
    let y = x as f32;
    if y.is_finite() {
        y
    } else if y < 0.0 {
        f32::MIN
    } else {
        f32::MAX
    }
}

/// A check's point from its state: its first test (the ratio, or a histogram's lowest boundary),
/// bounded as the evidence bounds it (a robust test bounds no ratio: 0 and unbounded).
fn check_point(c: &CheckState, e: f64, alpha: f64) -> CheckPoint {
    let t = c.tests.first();
    let (lo, hi) = match t {
        Some(t) if t.robust.is_none() => (
            t.process.lower_bound(alpha),
            Some(t.process.upper_bound(alpha)).filter(|u| u.is_finite()),
        ),
        _ => (0.0, None),
    };
    CheckPoint {
        e: f32_of(saturate(e)),
        lo: f32_of(lo),
        hi: hi.map(f32_of),
        est: t.and_then(|t| t.process.estimate()).map(f32_of),
        events: t.map_or([0.0; 2], |t| [f32_of(t.raw[0]), f32_of(t.raw[2])]),
        exposure: t.map_or([0.0; 2], |t| [f32_of(t.raw[1]), f32_of(t.raw[3])]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(tick: u64, verdict: Verdict) -> Point {
        Point {
            tick,
            t: tick as f64 * 10.0,
            verdict,
            e: 1.0,
            checks: Vec::new(),
            fresh: [1, 1],
            stale: [0, 0],
            quality: None,
        }
    }

    /// Feeds ticks 1..=n as the daemon does: a point only when due.
    fn run(n: u64) -> History {
        let mut h = History::default();
        for tick in 1..=n {
            if h.due(tick, Verdict::Pending) {
                h.push(point(tick, Verdict::Pending));
            }
        }
        h
    }

    #[test]
    fn every_tick_is_kept_until_the_bound() {
        let h = run(MAX_POINTS as u64);
        assert_eq!(h.points.len(), MAX_POINTS);
        assert_eq!(h.stride, 1);
        let ticks: Vec<u64> = h.points.iter().map(|p| p.tick).collect();
        assert_eq!(ticks, (1..=MAX_POINTS as u64).collect::<Vec<_>>());
    }

    #[test]
    fn decimation_keeps_the_start_and_even_spacing_and_the_bound() {
        for n in [257u64, 513, 1000, 5_000, 100_000] {
            let h = run(n);
            assert!(
                h.points.len() <= MAX_POINTS,
                "{n}: {} points",
                h.points.len()
            );
            assert!(
                h.points.len() > MAX_POINTS / 2,
                "{n}: {} points",
                h.points.len()
            );
            assert_eq!(h.points[0].tick, 1, "{n}: the start stays");
            let gaps: Vec<u64> = h.points.windows(2).map(|w| w[1].tick - w[0].tick).collect();
            assert!(
                gaps.iter().all(|g| *g == h.stride),
                "{n}: gaps {:?} not all the stride {}",
                &gaps[..gaps.len().min(8)],
                h.stride
            );
            // The last point is at most one stride behind the last tick.
            let last = h.points.last().unwrap().tick;
            assert!(
                n - last < h.stride,
                "{n}: last point {last}, stride {}",
                h.stride
            );
        }
        assert_eq!(run(MAX_POINTS as u64 + 1).stride, 2);
        assert_eq!(run(100_000).stride, 512);
    }

    #[test]
    fn a_final_point_is_always_kept() {
        // A tick the stride skips is recorded when it is final.
        let mut h = run(350);
        assert_eq!(h.stride, 2);
        let last = h.points.last().unwrap().tick + 1;
        assert!(!h.due(last, Verdict::Pending));
        assert!(h.due(last, Verdict::NoGo));
        h.push(point(last, Verdict::NoGo));
        // Arriving when the history is full: decimation keeps it.
        let mut full = run(MAX_POINTS as u64);
        full.push(point(MAX_POINTS as u64 + 1, Verdict::Go));
        for (h, tick, v) in [
            (&h, last, Verdict::NoGo),
            (&full, MAX_POINTS as u64 + 1, Verdict::Go),
        ] {
            let p = h.points.last().unwrap();
            assert_eq!((p.tick, p.verdict), (tick, v));
            assert!(h.points.len() <= MAX_POINTS);
        }
    }

    #[test]
    fn record_takes_the_analysis_evidence_and_skips_a_tick_twice() {
        use crate::judge::{Catalog, Design, Settings};
        let catalog = Catalog::builtin();
        let settings = Settings {
            alpha: 0.05,
            min_duration: std::time::Duration::from_secs(60),
            max_duration: std::time::Duration::from_secs(600),
            min_exposure: 100.0,
            slo_go: false,
            go_certificate: Default::default(),
            design: Design::default(),
            soak: std::time::Duration::ZERO,
        };
        let specs = [catalog.get("error-rate").unwrap()];
        let a = Analysis::new(settings, &specs);
        let mut h = History::default();
        // Tick 0 (created, not ticked yet) is recorded once, not twice.
        assert!(h.record(&a, &specs));
        assert!(!h.record(&a, &specs));
        assert_eq!(h.threshold, 20.0);
        assert_eq!(h.checks.len(), 1);
        assert_eq!(h.checks[0].name, "error-rate");
        assert_eq!(h.points[0].checks.len(), 1);
        // The same numbers as the evidence document (current at creation).
        let (p, ev) = (&h.points[0].checks[0], &a.evidence()[0]);
        assert_eq!(p.e, ev.e_value as f32);
        assert_eq!(p.lo, ev.tests[0].ratio_lower_bound as f32);
        assert_eq!(p.hi, ev.tests[0].ratio_upper_bound.map(|u| u as f32));
        let json = serde_json::to_string(&h).unwrap();
        assert!(
            json.contains(r#""checks":[["#),
            "a check point is an array: {json}"
        );
        let back: History = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
    }
}
