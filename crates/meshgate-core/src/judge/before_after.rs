//! The before/after design with a concurrent control (docs/statistics.md, section 3b): how a
//! namespace wave is judged, where a workload runs on one revision before its move and on the
//! other after it, never on both at once for long.
//!
//! For a workload w of a moving namespace, let a = rate_w / rate_C be its inherent rate relative
//! to the controls C (the workloads outside the moving namespaces, on either revision: they do not
//! change state during the analysis). H0 of the NO-GO test: after the move,
//! rate'_w <= (1 + margin) a rate'_C: the workload's after/before ratio is at most (1 + margin)
//! times the controls' over the same two periods (a trend common to all workloads, such as a
//! shared outage or a daily cycle, cancels). a is the nuisance. It is bounded, not estimated:
//!
//! 1. Before the move, each tick's events of w and of C are compared by the same mixture as the
//!    concurrent design ([`RatioEProcess`], B = w, A = C): its psi is exactly a, and its
//!    confidence bounds are anytime-valid, so they hold at the move whenever it comes (the
//!    operator chooses it, possibly after looking at the data). At the move they are frozen at
//!    level delta each: a_lo <= a <= a_hi.
//! 2. After the move, w's exposure is multiplied by a_hi for the NO-GO test and by a_lo for the
//!    GO certificate. With the NO-GO side's scaling, the mixture's psi is rate'_w / (a_hi
//!    rate'_C) <= rate'_w / (a rate'_C) when a <= a_hi, so H0 for the true a implies H0 for the
//!    test, and its increments are e-process increments (the argument in `mixture.rs`). The GO
//!    side is the mirror image with a_lo.
//! 3. Union bound: a wrong NO-GO needs an upper bound to fail or the test to cross 1/alpha' while
//!    all hold. With delta = (alpha / 2) / (checks x strata x tests) for every interval and the
//!    tests at alpha' = alpha / 2, the chance is at most alpha; the same for a wrong GO with the
//!    lower bounds. The number of strata is frozen at the first move (the strata of the moving
//!    namespaces with a usable pre-move window then), before any bound is computed; a stratum
//!    that only shows up later gets no interval and cannot be certified ("no pre-move window").
//!
//! Several moved workloads share the controls' events of a tick, so their per-workload
//! likelihood ratios are dependent and their product is not an e-process. The common test
//! therefore pools them: the moved workloads' events together, against the controls', with
//! exposure sum_w a_hi,w x_w (NO-GO) or sum_w a_lo,w x_w (GO). Under H0 for every w, the pooled
//! canary rate is at most (1 + margin) rate'_C sum_w a_w x_w / sum_w x_w, so one conditional
//! binomial per tick, valid as above. Each workload also keeps its own pair of processes: a GO
//! needs every material workload certified by its own (an intersection-union test, as in the
//! concurrent design), and its evidence is shown.
//!
//! What it assumes, and cannot check: the controls keep their own rates relative to each other
//! (a control whose share of the controls' traffic moves a lot while its rate differs from the
//! others' shifts the pooled control rate), and no control changes revision during the analysis.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::analysis::MATERIAL_STRATUM_SHARE;
use super::mixture::RatioEProcess;

/// Which comparison an analysis runs (serialized `concurrent` or `{"before_after": {...}}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Design {
    /// The same workloads on both revisions at once (pod-level revision labels, a canary
    /// Deployment, a rollout in progress): each workload's canary against its own baseline, at
    /// the same time.
    #[default]
    Concurrent,
    /// Namespaces moving to the new revision (a wave): each moved workload after its move
    /// against itself before it, adjusted by the controls (the workloads outside `moving`).
    BeforeAfter {
        /// The namespaces that move.
        moving: Vec<String>,
    },
}

impl Design {
    /// The moving namespaces, for the before/after design.
    pub fn moving(&self) -> Option<&[String]> {
        match self {
            Design::Concurrent => None,
            Design::BeforeAfter { moving } => Some(moving),
        }
    }

    /// One line for people: which design, on what.
    pub fn describe(&self) -> String {
        match self {
            Design::Concurrent => {
                "concurrent: each workload's canary pods against its own baseline pods, at the same time"
                    .to_string()
            }
            Design::BeforeAfter { moving } => format!(
                "before/after with a concurrent control: each workload of {} after its move against itself before it, adjusted by the workloads of the other namespaces over the same periods",
                moving.join(", ")
            ),
        }
    }
}

/// A workload of a moving namespace after its move.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MovedStratum {
    /// [a_lo, a_hi]: the bounds, frozen at the move, on the workload's rate relative to the
    /// controls' before it; none when it had no usable pre-move window.
    pub bounds: Option<[f64; 2]>,
    /// Before the move: [controls' events, controls' requests, its events, its requests].
    pub pre: [f64; 4],
    /// Since the move, as `pre`.
    pub post: [f64; 4],
    /// The NO-GO side (exposure scaled by a_hi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nogo: Option<RatioEProcess>,
    /// The GO side (exposure scaled by a_lo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub go: Option<RatioEProcess>,
}

impl MovedStratum {
    /// The after/before ratio relative to the controls', with half an event added to each count
    /// (defined with zero events); none without requests on a side.
    pub fn estimate(&self) -> Option<f64> {
        let rate = |e: f64, x: f64| (x > 0.0).then(|| (e + 0.5) / x);
        let [ec, xc, ew, xw] = self.pre;
        let [ec2, xc2, ew2, xw2] = self.post;
        let a = rate(ew, xw)? / rate(ec, xc)?;
        let a2 = rate(ew2, xw2)? / rate(ec2, xc2)?;
        Some(a2 / a)
    }

    /// Certified not worse by its own GO-side process.
    pub fn certified(&self) -> bool {
        self.go.as_ref().is_some_and(|p| {
            let t = p.totals();
            t.exposure_a > 0.0 && t.exposure_b > 0.0 && p.certifies_not_worse()
        })
    }
}

/// The before/after state of one test (a ratio check, or one histogram boundary).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BeforeAfterTest {
    /// Workloads of the moving namespaces not moved yet: each one's rate against the controls'
    /// (B = the workload, A = the controls), a confidence sequence on a.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pre: BTreeMap<String, RatioEProcess>,
    /// Workloads that moved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub moved: BTreeMap<String, MovedStratum>,
    /// The common GO certificate's process (the NO-GO side's is the test's own `process`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub go: Option<RatioEProcess>,
    /// Workloads of the moving namespaces with requests on the old revision in the last tick
    /// and none ever on the new one: the wave is not fully moved while there are any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmoved: Vec<String>,
}

impl BeforeAfterTest {
    /// The moved workloads that hold a GO back: every one with requests since its move and no
    /// pre-move window (its change cannot be judged, whatever its share), and every one with a
    /// window that holds [`MATERIAL_STRATUM_SHARE`] or more of the moved workloads' requests and
    /// is not certified on its own (as in the concurrent design). No formatting: the GO rule
    /// asks this on every tick.
    pub fn blocking(&self) -> impl Iterator<Item = (&String, &MovedStratum)> {
        let total: f64 = self.moved.values().map(|m| m.post[3]).sum();
        self.moved.iter().filter(move |(_, m)| {
            if m.bounds.is_none() {
                m.post[3] > 0.0
            } else {
                m.post[3] >= MATERIAL_STRATUM_SHARE * total && !m.certified()
            }
        })
    }

    /// [`Self::blocking`] with the reason of each, for people: (name, why).
    pub fn uncertified(&self) -> Vec<(String, String)> {
        self.blocking()
            .map(|(n, m)| {
                let why = match m.bounds {
                    None => "no pre-move window: it had no requests before its move while the analysis ran, so its change cannot be judged".to_string(),
                    Some(_) => match m.estimate() {
                        Some(r) => format!("after/before ratio vs the controls {r:.2}"),
                        None => "too little data since its move".to_string(),
                    },
                };
                (n.clone(), why)
            })
            .collect()
    }

    /// The common GO certificate holds and no moved workload holds it back.
    pub fn certifies(&self) -> bool {
        self.go.as_ref().is_some_and(|p| {
            let t = p.totals();
            t.exposure_a > 0.0 && t.exposure_b > 0.0 && p.certifies_not_worse()
        }) && self.blocking().next().is_none()
    }
}

/// Per-check state of the design: the interval count, frozen at the first move.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BeforeAfterCheck {
    /// The strata counted in the union bound (those with a usable pre-move window at the first
    /// move); none before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted: Option<BTreeSet<String>>,
}

/// The stratum labels that name a namespace, in the order they are looked for.
pub const NAMESPACE_LABELS: [&str; 3] = [
    "destination_workload_namespace",
    "destination_service_namespace",
    "namespace",
];

/// Which of a check's stratum labels names the namespace: the first of [`NAMESPACE_LABELS`]
/// among them; none when the strata carry no namespace (the design cannot find the moving
/// workloads, and says so).
pub fn namespace_label(labels: &[String]) -> Option<usize> {
    NAMESPACE_LABELS
        .iter()
        .find_map(|n| labels.iter().position(|l| l == n))
}

/// The namespace of a stratum name, given the check's stratum labels.
pub fn stratum_namespace<'n>(labels: &[String], name: &'n str) -> Option<&'n str> {
    name.split('/').nth(namespace_label(labels)?)
}

/// One test's tick: `controls` = the controls' (events, requests), both revisions together;
/// `movers` = per workload of the moving namespaces (name, events and requests on the old
/// revision, events and requests on the new), `moved_now` = the workloads whose first requests
/// on the new revision are in this tick; `delta` = the level of each interval; `phi` = the
/// dispersion factor the e-processes divide the counts by (the tallies stay raw). Returns the
/// moved workloads' (events, requests) of this tick, for the exposure gates and the recent rates.
#[allow(clippy::too_many_arguments)]
pub(crate) fn observe_test(
    ba: &mut BeforeAfterTest,
    process: &mut RatioEProcess,
    counted: &BTreeSet<String>,
    controls: (f64, f64),
    movers: &[(&str, f64, f64, f64, f64)],
    moved_now: &BTreeSet<&str>,
    delta: f64,
    phi: f64,
) -> (f64, f64) {
    let (ec, xc) = controls;
    let f = phi.max(1.0);
    let params = process.params().clone();
    let (mut e, mut xu, mut xl) = (0.0, 0.0, 0.0);
    let (mut e_raw, mut x_raw) = (0.0, 0.0);
    ba.unmoved.clear();
    for &(name, ea, xa, eb, xb) in movers {
        if moved_now.contains(name) && !ba.moved.contains_key(name) {
            let pre = ba.pre.remove(name);
            let tot = pre.as_ref().map(|p| p.totals()).unwrap_or_default();
            let bounds = pre
                .as_ref()
                .filter(|_| counted.contains(name))
                .map(|p| [p.lower_bound(delta), p.upper_bound(delta)]);
            let fresh = || Some(RatioEProcess::new(params.clone()));
            ba.moved.insert(
                name.to_string(),
                MovedStratum {
                    bounds,
                    pre: [tot.events_a, tot.exposure_a, tot.events_b, tot.exposure_b],
                    post: [0.0; 4],
                    nogo: bounds.and_then(|_| fresh()),
                    go: bounds.and_then(|_| fresh()),
                },
            );
        }
        if let Some(m) = ba.moved.get_mut(name) {
            // Moved: its requests on the old revision now are the rollout's tail, left out.
            if xb <= 0.0 || xc <= 0.0 {
                continue;
            }
            m.post[0] += ec;
            m.post[1] += xc;
            m.post[2] += eb;
            m.post[3] += xb;
            e_raw += eb;
            x_raw += xb;
            if let (Some([lo, hi]), Some(nogo), Some(go)) = (m.bounds, &mut m.nogo, &mut m.go) {
                nogo.observe(ec / f, eb / f, xc / f, hi * xb / f);
                go.observe(ec / f, eb / f, xc / f, lo * xb / f);
                e += eb;
                xu += hi * xb;
                xl += lo * xb;
            }
        } else if xa > 0.0 {
            ba.unmoved.push(name.to_string());
            if xc > 0.0 && counted_or_open(counted, name) {
                ba.pre
                    .entry(name.to_string())
                    .or_insert_with(|| RatioEProcess::new(params.clone()))
                    .observe(ec / f, ea / f, xc / f, xa / f);
            }
        }
    }
    if xu > 0.0 || xl > 0.0 {
        process.observe(ec / f, e / f, xc / f, xu / f);
        ba.go
            .get_or_insert_with(|| RatioEProcess::new(params.clone()))
            .observe(ec / f, e / f, xc / f, xl / f);
    }
    (e_raw, x_raw)
}

/// Before the first move every stratum may still get a pre-move window; after it, only the
/// counted ones need one.
fn counted_or_open(counted: &BTreeSet<String>, name: &str) -> bool {
    counted.is_empty() || counted.contains(name)
}

#[cfg(test)]
mod tests {
    //! The design checked by simulation, at small scale (a few hundred runs, bounds that fail for
    //! a test that pools unlike workloads or ignores the trend); the decision benchmark has the
    //! 10,000-run figures.
    use std::sync::Arc;
    use std::time::Duration;

    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::Design;
    use crate::judge::testkit::{self, draw};
    use crate::judge::{
        Analysis, Catalog, CheckSpec, DataQuality, Settings, Stratum, StratumStatus, TickInput,
        Verdict,
    };

    const TICK_S: u64 = 15;

    fn settings(design: Design) -> Settings {
        testkit::settings(Duration::from_secs(6 * 3600), design)
    }

    fn wave() -> Design {
        Design::BeforeAfter {
            moving: vec!["wave".into()],
        }
    }

    fn quality() -> DataQuality {
        testkit::quality(4)
    }

    fn spec() -> CheckSpec {
        let s = Catalog::builtin().get("error-rate").unwrap().clone();
        // Without the pack's SLO and incident ceiling: the comparison alone decides here.
        CheckSpec {
            slo: None,
            incident_ceiling: None,
            ..s
        }
    }

    /// A mesh: per workload (name, requests per tick, inherent 5xx rate, the tick it moves to the
    /// new revision or `None` for a control; `on_new` controls moved in an earlier wave), the
    /// factor the new revision multiplies a moved workload's rate by, and a trend common to every
    /// workload (a shared outage, a daily cycle) by tick, the control it spares, if any, and
    /// the workloads that have no requests before a tick (a newcomer).
    struct Mesh {
        workloads: Vec<(&'static str, f64, f64, Option<u64>, bool)>,
        effect: f64,
        trend: fn(u64) -> f64,
        spared: Option<&'static str>,
        appears: Vec<(&'static str, u64)>,
    }

    fn run(seed: u64, mesh: &Mesh, design: Design, ticks: u64) -> Analysis {
        let spec = spec();
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut a = Analysis::new(settings(design), &[&spec]);
        for i in 1..=ticks {
            let mut pooled = [vec![0.0, 0.0], vec![0.0, 0.0]];
            let mut strata = Vec::new();
            for &(name, n, rate, moves_at, on_new) in &mesh.workloads {
                let n = (n * rng.random_range(0.9..1.1f64)).round();
                if mesh.appears.iter().any(|&(w, t)| w == name && i < t) {
                    continue;
                }
                let moved = moves_at.is_some_and(|t| i >= t);
                let trend = if mesh.spared == Some(name) {
                    1.0
                } else {
                    (mesh.trend)(i)
                };
                let r = rate * trend * if moved { mesh.effect } else { 1.0 };
                let e = draw(&mut rng, n * r);
                let side = usize::from(moved || on_new);
                let mut slots = [vec![0.0, 0.0], vec![0.0, 0.0]];
                slots[side] = vec![n, e];
                pooled[side][0] += n;
                pooled[side][1] += e;
                strata.push(Stratum {
                    name: Arc::from(name),
                    slots,
                });
            }
            let all = [strata];
            let v = a.tick(
                &[&spec],
                TickInput {
                    pods: &[],
                    slots: &[pooled],
                    strata: &all,
                    quality: quality(),
                    elapsed: Duration::from_secs(TICK_S * i),
                },
            );
            if v.is_final() {
                break;
            }
        }
        a
    }

    fn flat(_: u64) -> f64 {
        1.0
    }

    /// The namespace that moves has 10x (or 0.1x) the inherent 5xx rate of the rest; the
    /// upgrade changes nothing (one control namespace moved in an earlier wave). NO-GO at most
    /// alpha (bound 10% of 200 runs), and GO in most runs after a one-hour pre-move window.
    #[test]
    fn heterogeneous_waves_are_judged_on_the_upgrade_not_the_mix() {
        for (factor, label) in [(10.0, "10x"), (0.1, "0.1x")] {
            let mesh = Mesh {
                workloads: vec![
                    ("wave/api", 20000.0, 0.002 * factor, Some(240), false),
                    ("wave/db", 10000.0, 0.002 * factor, Some(244), false),
                    ("shop/web", 30000.0, 0.002, None, false),
                    ("pay/card", 15000.0, 0.004, None, false),
                    ("early/edge", 15000.0, 0.001, None, true),
                ],
                effect: 1.0,
                trend: flat,
                spared: None,
                appears: vec![],
            };
            let (mut nogo, mut go) = (0, 0);
            for seed in 0..200 {
                let a = run(seed, &mesh, wave(), 1200);
                nogo += (a.verdict() == Verdict::NoGo) as u32;
                go += (a.verdict() == Verdict::Go) as u32;
            }
            assert!(nogo <= 20, "{label}: NO-GO {nogo}/200");
            // GO is bounded by the pre-move counts: at 0.1x, wave/db had ~480 events in its hour
            // before the move and wave/api ~960 (at 10x, 48,000 and 96,000).
            eprintln!("{label}: NO-GO {nogo}/200, GO {go}/200");
            let min_go = if factor > 1.0 { 150 } else { 20 };
            assert!(go >= min_go, "{label}: GO only {go}/200");
        }
    }

    /// A low-error namespace (0.05%) made 2x and 5x worse by the new revision, in a mesh whose
    /// other namespaces run at 0.5%-1%: GO at most alpha; NO-GO in most runs, naming the
    /// workload.
    #[test]
    fn a_regressed_low_error_namespace_is_never_go() {
        for effect in [2.0, 5.0] {
            let mesh = Mesh {
                workloads: vec![
                    ("wave/api", 8000.0, 0.0005, Some(80), false),
                    ("shop/web", 6000.0, 0.005, None, false),
                    ("pay/card", 3000.0, 0.01, None, false),
                ],
                effect,
                trend: flat,
                spared: None,
                appears: vec![],
            };
            let (mut go, mut nogo) = (0, 0);
            for seed in 0..100 {
                let mut a = run(seed, &mesh, wave(), 1200);
                go += (a.verdict() == Verdict::Go) as u32;
                if a.verdict() == Verdict::NoGo {
                    nogo += 1;
                    a.refresh(&[&spec()]);
                    assert_eq!(a.evidence()[0].strata[0].name, "wave/api");
                }
            }
            eprintln!("{effect}x: GO {go}/100, NO-GO {nogo}/100");
            assert!(go <= 10, "{effect}x: GO {go}/100");
            assert!(nogo >= 60, "{effect}x: NO-GO only {nogo}/100");
        }
    }

    /// A shared outage: every workload at 10x its rate for 10 minutes, right after the move
    /// (before the move, or during the post window: the controls carry it). No upgrade effect:
    /// NO-GO at most alpha.
    #[test]
    fn a_shared_outage_after_the_move_is_not_a_no_go() {
        fn outage(i: u64) -> f64 {
            if (90..130).contains(&i) {
                10.0
            } else {
                1.0
            }
        }
        let mesh = Mesh {
            workloads: vec![
                ("wave/api", 4000.0, 0.002, Some(80), false),
                ("shop/web", 6000.0, 0.001, None, false),
                ("pay/card", 3000.0, 0.003, None, false),
            ],
            effect: 1.0,
            trend: outage,
            spared: None,
            appears: vec![],
        };
        let mut nogo = 0;
        for seed in 0..200 {
            nogo += (run(seed, &mesh, wave(), 600).verdict() == Verdict::NoGo) as u32;
        }
        eprintln!("shared outage: NO-GO {nogo}/200");
        assert!(nogo <= 20, "NO-GO {nogo}/200");
        // Without the controls (the moved workload against its own past alone), the outage is
        // a regression: the scenario is not too easy.
        let alone = Mesh {
            workloads: vec![("wave/api", 4000.0, 0.002, Some(80), false)],
            effect: 1.0,
            trend: outage,
            spared: None,
            appears: vec![],
        };
        let mut pooled_nogo = 0;
        for seed in 0..20 {
            // One control with a flat rate stands for "no controls": it does not see the outage.
            let mut m = Mesh {
                workloads: alone.workloads.clone(),
                effect: 1.0,
                trend: outage,
                spared: Some("calm/x"),
                appears: vec![],
            };
            m.workloads.push(("calm/x", 6000.0, 0.001, None, false));
            let a = run(seed, &m, wave(), 600);
            pooled_nogo += (a.verdict() == Verdict::NoGo) as u32;
        }
        assert!(
            pooled_nogo >= 15,
            "without a shared trend: NO-GO {pooled_nogo}/20"
        );
    }

    /// A wave already on the new revision when the analysis starts has no pre-move window: never
    /// decided, and the evidence says why.
    #[test]
    fn no_pre_move_window_is_never_decided() {
        let mesh = Mesh {
            workloads: vec![
                ("wave/api", 4000.0, 0.002, Some(1), false),
                ("shop/web", 6000.0, 0.002, None, false),
            ],
            effect: 1.0,
            trend: flat,
            spared: None,
            appears: vec![],
        };
        for seed in 0..5 {
            let mut a = run(seed, &mesh, wave(), 1500);
            assert_eq!(a.verdict(), Verdict::Inconclusive, "{}", a.reason());
            assert!(a.reason().contains("no pre-move window"), "{}", a.reason());
            a.refresh(&[&spec()]);
            assert_eq!(a.evidence()[0].strata[0].status, StratumStatus::NoPreWindow);
        }
    }

    /// A small workload of the moving namespace that first serves after the move (1% of the
    /// moved requests, under the material share) cannot be judged: it holds GO, by name, while
    /// the same mesh without it reaches GO.
    #[test]
    fn a_newcomer_without_a_pre_move_window_holds_go() {
        let mesh = |appears| Mesh {
            workloads: vec![
                ("wave/api", 40000.0, 0.01, Some(240), false),
                ("wave/cron", 400.0, 0.01, Some(240), false),
                ("shop/web", 60000.0, 0.01, None, false),
            ],
            effect: 1.0,
            trend: flat,
            spared: None,
            appears,
        };
        let with = run(2, &mesh(vec![("wave/cron", 250)]), wave(), 1500);
        assert_ne!(with.verdict(), Verdict::Go, "{}", with.reason());
        assert!(
            with.reason().contains("wave/cron") && with.reason().contains("no pre-move window"),
            "{}",
            with.reason()
        );
        let without = run(2, &mesh(vec![]), wave(), 1500);
        assert_eq!(without.verdict(), Verdict::Go, "{}", without.reason());
    }

    /// Strata that carry no namespace label cannot find the moving workloads, and say so.
    #[test]
    fn strata_without_a_namespace_label_say_so() {
        assert_eq!(
            super::namespace_label(&["destination_workload".into()]),
            None
        );
        let labels = vec![
            "destination_workload".to_string(),
            "destination_workload_namespace".to_string(),
        ];
        assert_eq!(super::stratum_namespace(&labels, "api/wave"), Some("wave"));
        let mut spec = spec();
        spec.strata = vec!["destination_workload".into()];
        let mut a = Analysis::new(settings(wave()), &[&spec]);
        let stratum = Stratum {
            name: Arc::from("api"),
            slots: [vec![0.0, 0.0], vec![1000.0, 1.0]],
        };
        a.tick(
            &[&spec],
            TickInput {
                pods: &[],
                slots: &[[vec![0.0, 0.0], vec![1000.0, 1.0]]],
                strata: &[vec![stratum]],
                quality: quality(),
                elapsed: Duration::from_secs(TICK_S),
            },
        );
        assert!(a.reason().contains("no namespace label"), "{}", a.reason());
    }

    /// A workload of the moving namespace still on the old revision holds GO, with its name.
    #[test]
    fn an_unmoved_workload_holds_go() {
        let mesh = Mesh {
            workloads: vec![
                ("wave/api", 4000.0, 0.002, Some(80), false),
                ("wave/batch", 2000.0, 0.002, None, false),
                ("shop/web", 6000.0, 0.002, None, false),
            ],
            effect: 1.0,
            trend: flat,
            spared: None,
            appears: vec![],
        };
        let a = run(1, &mesh, wave(), 1500);
        assert_eq!(a.verdict(), Verdict::Inconclusive, "{}", a.reason());
        assert!(a.reason().contains("wave/batch"), "{}", a.reason());
        assert!(a.reason().contains("not moved"), "{}", a.reason());
    }

    /// Evidence far beyond what a double holds (the moved workload's rate x1000) stays a number:
    /// the analysis round-trips through JSON, as the store needs.
    #[test]
    fn overwhelming_evidence_is_a_finite_e_value() {
        let mesh = Mesh {
            workloads: vec![
                ("wave/api", 40000.0, 0.001, Some(40), false),
                ("shop/web", 60000.0, 0.001, None, false),
            ],
            effect: 1000.0,
            trend: flat,
            spared: None,
            appears: vec![],
        };
        let a = run(5, &mesh, wave(), 200);
        assert_eq!(a.verdict(), Verdict::NoGo, "{}", a.reason());
        assert!(
            a.ln_e().is_finite() && a.evidence()[0].e_value.is_finite(),
            "{}",
            a.ln_e()
        );
        let back: Analysis = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(a, back);
    }

    /// The design and the state round-trip through JSON (the store persists analyses).
    #[test]
    fn before_after_state_round_trips() {
        let mesh = Mesh {
            workloads: vec![
                ("wave/api", 4000.0, 0.002, Some(20), false),
                ("shop/web", 6000.0, 0.002, None, false),
            ],
            effect: 1.0,
            trend: flat,
            spared: None,
            appears: vec![],
        };
        let a = run(3, &mesh, wave(), 60);
        let json = serde_json::to_string(&a).unwrap();
        let back: Analysis = serde_json::from_str(&json).unwrap();
        assert_eq!(a, back);
        assert!(json.contains("before_after"), "{json}");
    }
}
