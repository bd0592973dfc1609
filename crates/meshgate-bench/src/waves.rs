//! The wave benchmark: namespace waves on a heterogeneous mesh, judged by the shipped
//! [`Analysis::tick`] in the before/after design (docs/statistics.md, section 3b), as `[plan]`
//! runs a wave, and in the concurrent design as the plan ran it before.
//!
//! Each run simulates five workloads in four namespaces, 15 s ticks, Poisson requests (with
//! jitter) and 5xx counts: two control namespaces still on the old revision, one moved in an
//! earlier wave (on the new revision throughout), and the wave's namespace with two workloads
//! that move after the pre-move window (a rolling restart: two ticks in which old and new pods
//! both serve). The analysis takes the shipped `error-rate` check and the `[judge]` defaults.
//!
//! What it does not cover: the page rendering and the accumulator (the decision benchmark,
//! `meshgate-bench judge`, drives those; here the per-workload deltas go straight into the
//! tick's strata, as the engine hands them over), istiod checks, the latency check.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, Gamma, Poisson};

use meshgate::config::JudgeConfig;
use meshgate_core::judge::{
    Analysis, Catalog, CheckSpec, DataQuality, Design, PodGroup, Settings, Stratum, TickInput,
    Verdict,
};

use crate::judge::wilson;

/// Tick length, seconds.
const TICK_S: u64 = 15;
/// Pods per workload and revision in the `per_pod` scenarios.
const PODS: usize = 3;

/// One wave scenario.
#[derive(Clone, Debug)]
pub struct WaveScenario {
    /// Short name (`--scenarios`).
    pub name: &'static str,
    /// One line for the table.
    pub description: &'static str,
    /// No change from the upgrade: every NO-GO is wrong.
    pub aa: bool,
    /// Requests per second per workload.
    pub rps: f64,
    /// The controls' 5xx rates (shop/web, pay/card, early/edge).
    pub control_rates: [f64; 3],
    /// The moving namespace's inherent 5xx rate.
    pub moving_rate: f64,
    /// The new revision multiplies the moved workloads' rate by this.
    pub effect: f64,
    /// Seconds of pre-move window.
    pub pre_s: u64,
    /// Seconds after the move.
    pub post_s: u64,
    /// A shared outage: every workload's rate x10 for 10 minutes, from 5 minutes after the move.
    pub outage: bool,
    /// Per-workload per-tick rate variation: Beta with this coefficient of variation.
    pub cv: Option<f64>,
    /// Each workload runs [`PODS`] pods per revision, each with its own rate variation (`cv`)
    /// and its own counts, handed to the tick per pod (what the dispersion factor measures).
    /// Without it, one variation per workload and tick is shared by all its pods: dispersion
    /// only in time, which no split across pods shows.
    pub per_pod: bool,
    /// The plan's design before: concurrent, canary = the wave on the new revision, baseline =
    /// the proxies on the old one.
    pub old_plan: bool,
    /// The controls' traffic shifts over the run: shop/web's requests ramp to 3x, pay/card's
    /// (twice shop's 5xx rate) fall to 0.5x (the design assumes a stable control mix).
    pub shift: bool,
}

impl WaveScenario {
    fn base(name: &'static str, description: &'static str) -> WaveScenario {
        WaveScenario {
            name,
            description,
            aa: true,
            rps: 100.0,
            control_rates: [0.001, 0.002, 0.0005],
            moving_rate: 0.001,
            effect: 1.0,
            pre_s: 1800,
            post_s: 7200,
            outage: false,
            cv: None,
            per_pod: false,
            old_plan: false,
            shift: false,
        }
    }
}

/// The scenarios.
pub fn scenarios() -> Vec<WaveScenario> {
    let b = WaveScenario::base;
    vec![
        WaveScenario {
            moving_rate: 0.01,
            ..b(
                "wave-aa-10x",
                "A/A, the wave's namespace at 10x the others' rate (1%)",
            )
        },
        WaveScenario {
            moving_rate: 0.0001,
            ..b("wave-aa-0.1x", "A/A, the wave's namespace at 0.1x (0.01%)")
        },
        WaveScenario {
            moving_rate: 0.0001,
            rps: 1000.0,
            ..b(
                "wave-aa-0.1x-1000rps",
                "A/A, 0.1x (0.01%), 1,000 rps per workload",
            )
        },
        WaveScenario {
            rps: 1000.0,
            ..b(
                "wave-aa-busy",
                "A/A, equal rates (0.1%), 1,000 rps per workload",
            )
        },
        WaveScenario {
            outage: true,
            ..b(
                "wave-aa-outage",
                "A/A, a shared outage (x10, 10 min) after the move",
            )
        },
        WaveScenario {
            cv: Some(0.3),
            ..b("wave-aa-cv0.3", "A/A, per-interval rate variation CV 0.3")
        },
        WaveScenario {
            cv: Some(1.0),
            ..b("wave-aa-cv1", "A/A, per-interval rate variation CV 1")
        },
        WaveScenario {
            cv: Some(3.0),
            ..b("wave-aa-cv3", "A/A, per-interval rate variation CV 3")
        },
        WaveScenario {
            shift: true,
            ..b(
                "wave-aa-shift",
                "A/A, the controls' traffic mix shifts (0.1% one x3, 0.2% one x0.5)",
            )
        },
        WaveScenario {
            moving_rate: 0.01,
            old_plan: true,
            ..b(
                "old-plan-aa-10x",
                "A/A 10x, judged as the plan did before (concurrent)",
            )
        },
        WaveScenario {
            aa: false,
            control_rates: [0.005, 0.01, 0.005],
            moving_rate: 0.0005,
            effect: 2.0,
            ..b(
                "wave-2x-0.05",
                "the wave's 0.05% namespace made 2x worse, others 0.5-1%",
            )
        },
        WaveScenario {
            aa: false,
            moving_rate: 0.0002,
            effect: 5.0,
            ..b("wave-5x-0.02", "the wave's 0.02% namespace made 5x worse")
        },
        WaveScenario {
            aa: false,
            moving_rate: 0.02,
            control_rates: [0.002, 0.002, 0.002],
            effect: 2.0,
            ..b("wave-2x-2", "the wave's 2% namespace made 2x worse")
        },
        // Added with the dispersion factor (at the end: the seeds of the rows above stay).
        WaveScenario {
            cv: Some(1.0),
            per_pod: true,
            ..b(
                "wave-aa-cv1-pods",
                "A/A, CV 1 per pod and interval (3 pods per workload)",
            )
        },
        WaveScenario {
            cv: Some(3.0),
            per_pod: true,
            ..b(
                "wave-aa-cv3-pods",
                "A/A, CV 3 per pod and interval (3 pods per workload)",
            )
        },
        WaveScenario {
            aa: false,
            moving_rate: 0.02,
            control_rates: [0.002, 0.002, 0.002],
            effect: 2.0,
            cv: Some(1.0),
            per_pod: true,
            ..b(
                "wave-2x-2-cv1-pods",
                "the wave's 2% namespace made 2x worse, CV 1 per pod",
            )
        },
        WaveScenario {
            aa: false,
            control_rates: [0.005, 0.01, 0.005],
            moving_rate: 0.0005,
            effect: 2.0,
            old_plan: true,
            ..b(
                "old-plan-2x-0.05",
                "2x of the 0.05% namespace, judged as the plan did before",
            )
        },
    ]
}

/// Options.
#[derive(Clone, Debug)]
pub struct WaveOptions {
    /// Runs per A/A scenario.
    pub aa_runs: usize,
    /// Runs per regression scenario.
    pub runs: usize,
    /// Seed.
    pub seed: u64,
    /// Scenario names (all when empty).
    pub scenarios: Vec<String>,
    /// Worker threads.
    pub threads: usize,
}

/// One run's outcome: the verdict, when (seconds after the first move), and for A/A runs
/// whether the twin that cannot GO crossed into NO-GO within the horizon.
#[derive(Clone, Copy, Debug)]
struct Outcome {
    verdict: Verdict,
    after_move_s: Option<f64>,
    twin_nogo: bool,
}

fn spec() -> Arc<CheckSpec> {
    Arc::new(
        Catalog::builtin()
            .get("error-rate")
            .expect("the pack has error-rate")
            .clone(),
    )
}

fn settings(design: Design, never_go_before: Option<Duration>) -> Settings {
    let j = JudgeConfig::default();
    let mut s = Settings {
        alpha: j.alpha,
        min_duration: j.min_duration,
        max_duration: j.max_duration,
        min_exposure: j.min_exposure,
        slo_go: j.slo_go,
        go_certificate: j.go_certificate,
        design,
        soak: Duration::ZERO,
    };
    if let Some(t) = never_go_before {
        s.min_duration = t;
        s.max_duration = t + Duration::from_secs(1);
    } else {
        // The run's horizon decides INCONCLUSIVE, not the default one-hour maximum.
        s.max_duration = s.max_duration.max(Duration::from_secs(3 * 3600));
    }
    s
}

fn quality() -> DataQuality {
    DataQuality::all_fresh(10)
}

fn poisson(rng: &mut SmallRng, mean: f64) -> f64 {
    if mean > 0.0 {
        Poisson::new(mean).expect("finite mean").sample(rng)
    } else {
        0.0
    }
}

/// One run.
fn run_one(sc: &WaveScenario, seed: u64) -> Outcome {
    let spec = spec();
    let specs = [spec.as_ref()];
    let design = if sc.old_plan {
        Design::Concurrent
    } else {
        Design::BeforeAfter {
            moving: vec!["wave".into()],
        }
    };
    let horizon = Duration::from_secs(sc.pre_s + sc.post_s);
    let mut a = Analysis::new(settings(design.clone(), None), &specs);
    let mut twin = sc
        .aa
        .then(|| Analysis::new(settings(design, Some(horizon)), &specs));
    let mut rng = SmallRng::seed_from_u64(seed);
    // (name, rate, moves at tick, on the new revision from the start)
    let move_tick = sc.pre_s / TICK_S;
    let workloads: [(&str, f64, Option<u64>, bool); 5] = [
        ("shop/web", sc.control_rates[0], None, false),
        ("pay/card", sc.control_rates[1], None, false),
        ("early/edge", sc.control_rates[2], None, true),
        ("wave/api", sc.moving_rate, Some(move_tick), false),
        ("wave/db", sc.moving_rate, Some(move_tick + 4), false),
    ];
    // Per-tick rate factors with mean 1 and the scenario's CV: 2 Beta(a, a) (variance 1/(2a+1))
    // up to CV 1, a Gamma beyond (a bounded factor cannot reach CV 3).
    let beta = sc.cv.filter(|cv| *cv <= 1.0).map(|cv| {
        let a = (1.0 / (cv * cv) - 1.0) / 2.0;
        Beta::new(a.max(0.01), a.max(0.01)).expect("positive parameters")
    });
    let gamma = sc
        .cv
        .filter(|cv| *cv > 1.0)
        .map(|cv| Gamma::new(1.0 / (cv * cv), cv * cv).expect("positive parameters"));
    let ticks = (sc.pre_s + sc.post_s) / TICK_S;
    let mut outcome = Outcome {
        verdict: Verdict::Pending,
        after_move_s: None,
        twin_nogo: false,
    };
    for i in 1..=ticks {
        let trend = if sc.outage && (move_tick + 20..move_tick + 60).contains(&i) {
            10.0
        } else {
            1.0
        };
        let mut pooled = [vec![0.0, 0.0], vec![0.0, 0.0]];
        let mut strata = Vec::new();
        let mut groups = Vec::new();
        let progress = i as f64 / ticks as f64;
        for &(name, rate, moves_at, on_new) in &workloads {
            let mix = match name {
                "shop/web" if sc.shift => 1.0 + 2.0 * progress,
                "pay/card" if sc.shift => 1.0 - 0.5 * progress,
                _ => 1.0,
            };
            let n = (sc.rps * mix * TICK_S as f64 * rng.random_range(0.9..1.1f64)).round();
            let noise = |rng: &mut SmallRng| match (&beta, &gamma) {
                (Some(b), _) => 2.0 * b.sample(rng),
                (_, Some(g)) => g.sample(rng),
                _ => 1.0,
            };
            let shared = if sc.per_pod { 1.0 } else { noise(&mut rng) };
            // The rolling restart: two ticks with half the requests on each revision.
            let share_new = match moves_at {
                Some(t) if i >= t + 2 => 1.0,
                Some(t) if i >= t => 0.5,
                _ if on_new => 1.0,
                _ => 0.0,
            };
            let mut slots = [vec![0.0, 0.0], vec![0.0, 0.0]];
            for (side, share) in [(0, 1.0 - share_new), (1, share_new)] {
                if share == 0.0 {
                    continue;
                }
                let moved = side == 1 && moves_at.is_some();
                let r = rate * trend * if moved { sc.effect } else { 1.0 };
                let ns = (n * share).round();
                let (e, pods) = if sc.per_pod {
                    let np = (ns / PODS as f64).round();
                    let pods: Vec<Vec<f64>> = (0..PODS)
                        .map(|_| {
                            let x = (r * noise(&mut rng)).min(1.0);
                            let e = poisson(&mut rng, np * x).min(np);
                            vec![np, e]
                        })
                        .collect();
                    (pods.iter().map(|p| p[1]).sum(), pods)
                } else {
                    let x = (r * shared).min(1.0);
                    (poisson(&mut rng, ns * x).min(ns), Vec::new())
                };
                let ns = if sc.per_pod {
                    pods.iter().map(|p| p[0]).sum()
                } else {
                    ns
                };
                // The plan before: only the wave's namespace on the new revision is the canary.
                if sc.old_plan && side == 1 && moves_at.is_none() {
                    continue;
                }
                if !pods.is_empty() {
                    groups.push(PodGroup { side, pods });
                }
                slots[side] = vec![ns, e];
                pooled[side][0] += ns;
                pooled[side][1] += e;
            }
            strata.push(Stratum {
                name: Arc::from(name),
                slots,
            });
        }
        let all = [strata];
        let pods = [groups];
        let elapsed = Duration::from_secs(TICK_S * i);
        let input = || TickInput {
            pods: &pods,
            slots: std::slice::from_ref(&pooled),
            strata: &all,
            quality: quality(),
            elapsed,
        };
        if !a.verdict().is_final() && a.tick(&specs, input()).is_final() {
            outcome.verdict = a.verdict();
            outcome.after_move_s = Some(elapsed.as_secs_f64() - sc.pre_s as f64);
        }
        if let Some(t) = &mut twin {
            if !t.verdict().is_final() && t.tick(&specs, input()) == Verdict::NoGo {
                outcome.twin_nogo = true;
            }
        }
        let twin_done = twin.as_ref().is_none_or(|t| t.verdict().is_final());
        if a.verdict().is_final() && twin_done {
            break;
        }
    }
    if !a.verdict().is_final() {
        outcome.verdict = Verdict::Inconclusive;
    }
    outcome
}

/// Run the scenarios; the report is a Markdown table.
pub fn run(opts: &WaveOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | runs | wrong verdicts [Wilson 95%] | GO | NO-GO | INCONCLUSIVE | median decision after the move |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for (si, sc) in scenarios().iter().enumerate() {
        if !opts.scenarios.is_empty() && !opts.scenarios.iter().any(|s| s == sc.name) {
            continue;
        }
        let n = if sc.aa { opts.aa_runs } else { opts.runs };
        let threads = opts.threads.max(1);
        let results: Vec<Outcome> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        (t..n)
                            .step_by(threads)
                            .map(|i| {
                                run_one(
                                    sc,
                                    opts.seed
                                        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                                        .wrapping_add((si as u64) << 32 | i as u64),
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("a worker panicked"))
                .collect()
        });
        let count = |v: Verdict| results.iter().filter(|r| r.verdict == v).count();
        let (go, nogo, inc) = (
            count(Verdict::Go),
            count(Verdict::NoGo),
            count(Verdict::Inconclusive),
        );
        // A/A: a wrong NO-GO, counted by the twin that cannot GO (a false alarm at any time in
        // the horizon, after a GO too); a regression: a GO.
        let wrong = if sc.aa {
            results.iter().filter(|r| r.twin_nogo).count()
        } else {
            go
        };
        let (lo, hi) = wilson(wrong, n);
        let mut times: Vec<f64> = results
            .iter()
            .filter(|r| r.verdict == if sc.aa { Verdict::Go } else { Verdict::NoGo })
            .filter_map(|r| r.after_move_s)
            .collect();
        times.sort_by(f64::total_cmp);
        let median = times.get(times.len() / 2).map_or("-".to_string(), |t| {
            format!("{t:.0} s ({})", if sc.aa { "GO" } else { "NO-GO" })
        });
        let pct = |k: usize| format!("{:.1}%", 100.0 * k as f64 / n.max(1) as f64);
        let _ = writeln!(
            out,
            "| {} ({}) | {n} | {} {} [{:.2}%, {:.2}%] | {} | {} | {} | {median} |",
            sc.name,
            sc.description,
            pct(wrong),
            if sc.aa { "NO-GO" } else { "GO" },
            100.0 * lo,
            100.0 * hi,
            pct(go),
            pct(nogo),
            pct(inc),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The old plan's design compares no shared workload: never decided either way; the
    /// before/after design decides the same mesh.
    #[test]
    fn the_old_plan_cannot_decide_a_wave_and_before_after_can() {
        let all = scenarios();
        let old = all.iter().find(|s| s.name == "old-plan-aa-10x").unwrap();
        let busy = all.iter().find(|s| s.name == "wave-aa-busy").unwrap();
        let old_busy = WaveScenario {
            old_plan: true,
            ..busy.clone()
        };
        for seed in 0..3 {
            assert_eq!(run_one(old, seed).verdict, Verdict::Inconclusive);
            assert_eq!(run_one(&old_busy, seed).verdict, Verdict::Inconclusive);
            assert_eq!(run_one(busy, seed).verdict, Verdict::Go);
        }
        let reg = all.iter().find(|s| s.name == "wave-2x-2").unwrap();
        for seed in 0..3 {
            assert_eq!(run_one(reg, seed).verdict, Verdict::NoGo);
        }
    }
}
