//! The upgrade plan: ordered waves of namespaces moving from one revision to another, each with a
//! soak time and its checks. meshgate tracks it and advises (may the next wave start, what to run
//! to roll the current one back); it never relabels a namespace itself.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::judge::Verdict;
pub use meshgate_core::api::{NamespaceLabels, NamespaceState, PlanStatus, WavePhase, WaveStatus};
use meshgate_core::Target;

/// `[plan]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Name, e.g. "1.24 -> 1.25".
    #[serde(default)]
    pub name: String,
    /// The revision namespaces leave (`istio.io/rev` before), e.g. `1-24-2`.
    pub from_revision: String,
    /// The revision namespaces move to, e.g. `1-25-0`.
    pub to_revision: String,
    /// Waves, in order.
    pub waves: Vec<Wave>,
}

/// `[[plan.waves]]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Wave {
    /// Name, e.g. `staging`.
    pub name: String,
    /// Namespaces moved in this wave.
    pub namespaces: Vec<String>,
    /// How long the wave must be fully moved and judged GO before the next may start.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, example = "30m")]
    pub soak: Duration,
    /// How long the wave's analysis watches its namespaces on the old revision before
    /// `meshgate upgrade` relabels them: the before/after design bounds each workload's rate
    /// relative to the others from this window, so a short one gives wide bounds and a slow
    /// verdict. Default 5m (enough at a few requests per second per workload for the bounds of
    /// docs/statistics.md, section 3b, to be useful).
    #[serde(default = "default_pre_move", with = "humantime_serde")]
    #[schema(value_type = String, example = "5m")]
    pub pre_move: Duration,
    /// Checks of the wave's analysis (default set when empty).
    #[serde(default)]
    pub checks: Vec<String>,
}

/// The default [`Wave::pre_move`].
fn default_pre_move() -> Duration {
    Duration::from_secs(300)
}

impl Plan {
    /// Every problem, each with its key path.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.from_revision.is_empty() || self.to_revision.is_empty() {
            out.push("plan: from_revision and to_revision are required".into());
        } else if self.from_revision == self.to_revision {
            out.push("plan.to_revision: is the same as from_revision".into());
        }
        if self.waves.is_empty() {
            out.push("plan.waves: at least one wave is required".into());
        }
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        let mut names = std::collections::HashSet::new();
        for (i, w) in self.waves.iter().enumerate() {
            if !names.insert(w.name.as_str()) || w.name.is_empty() {
                out.push(format!(
                    "plan.waves[{i}].name: empty or duplicate {:?}",
                    w.name
                ));
            }
            if w.namespaces.is_empty() {
                out.push(format!("plan.waves[{i}].namespaces: must not be empty"));
            }
            for ns in &w.namespaces {
                if let Some(prev) = seen.insert(ns, &w.name) {
                    out.push(format!(
                        "plan.waves[{i}].namespaces: {ns:?} is already in wave {prev:?}"
                    ));
                }
            }
        }
        out
    }

    /// The analysis id meshgate uses for a wave.
    pub fn analysis_id(wave: &Wave) -> String {
        format!("plan-{}", wave.name)
    }

    /// The analysis request of a wave, in the before/after design (docs/statistics.md, section
    /// 3b): each workload of the wave's namespaces after its move against itself before it,
    /// adjusted by the proxies of every other namespace (still on the old revision, or moved in an
    /// earlier wave) over the same periods. Its selectors are therefore the two revisions, the
    /// whole mesh; the wave's namespaces are `moving`.
    pub fn analysis_for(&self, wave: &Wave) -> crate::analysis::AnalysisConfig {
        crate::analysis::AnalysisConfig {
            name: Self::analysis_id(wave),
            baseline: format!("{{role=\"proxy\", revision=\"{}\"}}", self.from_revision),
            canary: format!("{{role=\"proxy\", revision=\"{}\"}}", self.to_revision),
            checks: wave.checks.clone(),
            design: crate::analysis::DesignName::BeforeAfter,
            moving: wave.namespaces.clone(),
            soak: Some(wave.soak),
            ..Default::default()
        }
    }
}

/// The namespace labels recorded before each namespace moved, for one plan (persisted with the
/// store, so a restart after the relabel still knows what to restore).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordedLabels {
    /// [`Plan::key`] of the plan they belong to (a record of another plan is not used).
    pub plan: String,
    /// Per namespace.
    pub namespaces: BTreeMap<String, NamespaceLabels>,
}

impl Plan {
    /// Identifies the plan for its recorded labels: name and revisions.
    pub fn key(&self) -> String {
        format!(
            "{}: {} -> {}",
            self.name, self.from_revision, self.to_revision
        )
    }
}

/// Record the namespace labels of the plan's namespaces from the discovered targets (the
/// `namespace_labels` label of Kubernetes discovery; `namespace_rev` is the tag-resolved
/// revision). A namespace's record follows its labels until it starts moving: once a proxy in
/// it runs the new revision, or its labels already point at the new revision (relabelled, pods
/// not restarted yet), the record is frozen. Returns whether the record changed. Targets
/// without `namespace_labels` (static or file_sd) record nothing.
pub fn record_labels(
    plan: &Plan,
    recorded: &mut RecordedLabels,
    targets: &[&Target],
    counts: &BTreeMap<String, [usize; 3]>,
) -> Result<bool, String> {
    let mut changed = false;
    if recorded.plan != plan.key() {
        *recorded = RecordedLabels {
            plan: plan.key(),
            namespaces: BTreeMap::new(),
        };
        changed = true;
    }
    let wanted: std::collections::HashSet<&str> = plan
        .waves
        .iter()
        .flat_map(|w| w.namespaces.iter().map(String::as_str))
        .collect();
    let mut seen: BTreeMap<&str, (NamespaceLabels, Option<&str>)> = BTreeMap::new();
    for t in targets {
        let (Some(ns), Some(raw)) = (t.label("namespace"), t.label("namespace_labels")) else {
            continue;
        };
        if t.label("role") != Some("proxy") || !wanted.contains(ns) || seen.contains_key(ns) {
            continue;
        }
        let labels: NamespaceLabels = raw.parse()?;
        seen.insert(ns, (labels, t.label("namespace_rev")));
    }
    for (ns, (labels, resolved)) in seen {
        let moving = counts.get(ns).is_some_and(|c| c[1] > 0);
        let relabelled = resolved == Some(plan.to_revision.as_str())
            || labels.rev.as_deref() == Some(plan.to_revision.as_str());
        if moving || relabelled || recorded.namespaces.get(ns) == Some(&labels) {
            continue;
        }
        recorded.namespaces.insert(ns.to_owned(), labels);
        changed = true;
    }
    Ok(changed)
}

/// What the engine knows about a wave's analysis and soak.
#[derive(Clone, Debug, Default)]
pub struct WaveRuntime {
    /// Verdict and reason of the wave's analysis.
    pub verdict: Option<(Verdict, String)>,
    /// How long the wave has been fully moved.
    pub moved_for: Option<Duration>,
}

/// Per namespace: proxies on (old, new, other) revisions, from the discovered targets.
pub fn namespace_counts(plan: &Plan, targets: &[&Target]) -> BTreeMap<String, [usize; 3]> {
    let mut out: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    for t in targets {
        if t.label("role") != Some("proxy") {
            continue;
        }
        let Some(ns) = t.label("namespace") else {
            continue;
        };
        let c = out.entry(ns.to_owned()).or_default();
        match t.label("revision") {
            Some(r) if r == plan.to_revision => c[1] += 1,
            Some(r) if r == plan.from_revision => c[0] += 1,
            _ => c[2] += 1,
        }
    }
    out
}

fn ns_state(c: [usize; 3]) -> NamespaceState {
    match c {
        [0, 0, 0] => NamespaceState::Empty,
        [_, 0, _] => NamespaceState::NotStarted,
        [0, _, 0] => NamespaceState::Moved,
        _ => NamespaceState::Moving,
    }
}

/// Whether every namespace of a wave has moved (empty namespaces do not block).
pub fn wave_moved(wave: &Wave, counts: &BTreeMap<String, [usize; 3]>) -> bool {
    let states: Vec<NamespaceState> = wave
        .namespaces
        .iter()
        .map(|n| ns_state(counts.get(n).copied().unwrap_or_default()))
        .collect();
    states.contains(&NamespaceState::Moved)
        && states
            .iter()
            .all(|s| matches!(s, NamespaceState::Moved | NamespaceState::Empty))
}

/// Whether any namespace of a wave has started moving.
pub fn wave_started(wave: &Wave, counts: &BTreeMap<String, [usize; 3]>) -> bool {
    wave.namespaces.iter().any(|n| {
        matches!(
            ns_state(counts.get(n).copied().unwrap_or_default()),
            NamespaceState::Moving | NamespaceState::Moved
        )
    })
}

/// The plan's status from the discovered targets and what the engine knows of each wave.
pub fn status(
    plan: &Plan,
    counts: &BTreeMap<String, [usize; 3]>,
    runtime: &[WaveRuntime],
    recorded: &RecordedLabels,
) -> PlanStatus {
    let recorded = (recorded.plan == plan.key()).then_some(&recorded.namespaces);
    let mut waves = Vec::new();
    let mut current: Option<usize> = None;
    for (i, w) in plan.waves.iter().enumerate() {
        let rt = runtime.get(i).cloned().unwrap_or_default();
        let namespaces: BTreeMap<String, (NamespaceState, [usize; 3])> = w
            .namespaces
            .iter()
            .map(|n| {
                let c = counts.get(n).copied().unwrap_or_default();
                (n.clone(), (ns_state(c), c))
            })
            .collect();
        let verdict = rt.verdict.as_ref().map(|(v, _)| *v);
        let moved = wave_moved(w, counts);
        let soak_left = rt.moved_for.map(|d| w.soak.saturating_sub(d).as_secs_f64());
        let phase = if matches!(verdict, Some(Verdict::NoGo | Verdict::Inconclusive)) {
            WavePhase::Failed
        } else if !wave_started(w, counts) {
            WavePhase::NotStarted
        } else if !moved {
            WavePhase::Moving
        } else if verdict == Some(Verdict::Go) && soak_left == Some(0.0) {
            WavePhase::Done
        } else {
            WavePhase::Soaking
        };
        if phase != WavePhase::Done && current.is_none() {
            current = Some(i);
        }
        let rollback_labels: BTreeMap<String, Option<NamespaceLabels>> = w
            .namespaces
            .iter()
            .map(|n| (n.clone(), recorded.and_then(|r| r.get(n)).cloned()))
            .collect();
        let rollback = rollback_labels
            .iter()
            .flat_map(|(n, labels)| {
                [
                    match labels {
                        Some(l) => l.kubectl(n),
                        None => format!(
                            "kubectl label namespace {n} istio.io/rev={} --overwrite",
                            plan.from_revision
                        ),
                    },
                    format!("kubectl rollout restart deployment -n {n}"),
                ]
            })
            .collect();
        waves.push(WaveStatus {
            name: w.name.clone(),
            namespaces,
            phase,
            verdict,
            reason: rt.verdict.map(|(_, r)| r),
            soak_left_seconds: if phase == WavePhase::Soaking {
                soak_left
            } else {
                None
            },
            rollback,
            rollback_labels,
        });
    }
    let (may, advice) = match current {
        None => (
            false,
            "every wave is done: the upgrade is complete".to_string(),
        ),
        Some(i) => {
            let w = &waves[i];
            let next = plan.waves.get(i + 1).map(|w| w.name.as_str());
            match w.phase {
                WavePhase::Failed => (
                    false,
                    format!(
                        "wave {} failed ({}): roll it back: {}",
                        w.name,
                        w.reason.clone().unwrap_or_default(),
                        w.rollback.join(" && ")
                    ),
                ),
                WavePhase::NotStarted if i == 0 || waves[i - 1].phase == WavePhase::Done => (
                    true,
                    format!("wave {} may start: relabel its namespaces to istio.io/rev={} and restart their workloads", w.name, plan.to_revision),
                ),
                WavePhase::NotStarted => (false, format!("wave {} has not started", w.name)),
                WavePhase::Moving => (
                    false,
                    format!("wave {} is moving: not every namespace runs revision {} yet", w.name, plan.to_revision),
                ),
                _ => (
                    false,
                    format!(
                        "wave {} is soaking: verdict {}, {:.0} s of soak left; {} waits",
                        w.name,
                        w.verdict.map_or("none yet", Verdict::as_str),
                        w.soak_left_seconds.unwrap_or(f64::NAN),
                        next.unwrap_or("nothing")
                    ),
                ),
            }
        }
    };
    PlanStatus {
        name: plan.name.clone(),
        from_revision: plan.from_revision.clone(),
        to_revision: plan.to_revision.clone(),
        current_wave: current.map(|i| plan.waves[i].name.clone()),
        next_wave_may_start: may,
        advice,
        waves,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            name: "p".into(),
            from_revision: "1-24-2".into(),
            to_revision: "1-25-0".into(),
            waves: vec![
                Wave {
                    name: "staging".into(),
                    namespaces: vec!["staging".into()],
                    soak: Duration::from_secs(60),
                    pre_move: default_pre_move(),
                    checks: vec![],
                },
                Wave {
                    name: "critical".into(),
                    namespaces: vec!["shop".into(), "pay".into()],
                    soak: Duration::from_secs(600),
                    pre_move: Duration::ZERO,
                    checks: vec![],
                },
            ],
        }
    }

    fn t(ns: &str, rev: &str, i: usize) -> Target {
        Target {
            url: format!("http://{ns}-{rev}-{i}/"),
            labels: [("role", "proxy"), ("namespace", ns), ("revision", rev)]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    #[test]
    fn pre_move_defaults_to_five_minutes_and_reads_a_human_duration() {
        let wave = |extra: &str| {
            let text = format!(
                "[plan]\nfrom_revision = \"a\"\nto_revision = \"b\"\n[[plan.waves]]\nname = \"w\"\nnamespaces = [\"a\"]\nsoak = \"1m\"\n{extra}"
            );
            crate::config::Config::from_toml(&text, "t")
                .map(|c| c.plan.unwrap().waves[0].pre_move)
                .map_err(|e| e.to_string())
        };
        assert_eq!(wave(""), Ok(Duration::from_secs(300)));
        assert_eq!(wave("pre_move = \"30s\""), Ok(Duration::from_secs(30)));
        assert!(
            wave("pre_move = 30").is_err(),
            "a bare number is not a duration"
        );
    }

    #[test]
    fn waves_progress_from_discovery_and_verdicts() {
        let p = plan();
        assert!(p.problems().is_empty());
        let targets = [
            t("staging", "1-24-2", 0),
            t("shop", "1-24-2", 0),
            t("pay", "1-24-2", 0),
        ];
        let refs: Vec<&Target> = targets.iter().collect();
        let s = status(
            &p,
            &namespace_counts(&p, &refs),
            &[],
            &RecordedLabels::default(),
        );
        assert_eq!(s.current_wave.as_deref(), Some("staging"));
        assert!(s.next_wave_may_start, "{}", s.advice);
        // Staging half moved: moving.
        let targets = [
            t("staging", "1-24-2", 0),
            t("staging", "1-25-0", 1),
            t("shop", "1-24-2", 0),
        ];
        let refs: Vec<&Target> = targets.iter().collect();
        let c = namespace_counts(&p, &refs);
        let s = status(&p, &c, &[], &RecordedLabels::default());
        assert_eq!(s.waves[0].phase, WavePhase::Moving);
        assert!(!s.next_wave_may_start);
        // Staging moved, GO, soak not over: soaking; then done and the next may start.
        let targets = [t("staging", "1-25-0", 1), t("shop", "1-24-2", 0)];
        let refs: Vec<&Target> = targets.iter().collect();
        let c = namespace_counts(&p, &refs);
        let go = WaveRuntime {
            verdict: Some((Verdict::Go, "ok".into())),
            moved_for: Some(Duration::from_secs(30)),
        };
        let s = status(
            &p,
            &c,
            std::slice::from_ref(&go),
            &RecordedLabels::default(),
        );
        assert_eq!(s.waves[0].phase, WavePhase::Soaking);
        assert_eq!(s.waves[0].soak_left_seconds, Some(30.0));
        assert!(!s.next_wave_may_start);
        let done = WaveRuntime {
            moved_for: Some(Duration::from_secs(61)),
            ..go
        };
        let s = status(&p, &c, &[done], &RecordedLabels::default());
        assert_eq!(s.waves[0].phase, WavePhase::Done);
        assert_eq!(s.current_wave.as_deref(), Some("critical"));
        assert!(s.next_wave_may_start, "{}", s.advice);
        // A NO-GO fails the wave and gives the rollback.
        let bad = WaveRuntime {
            verdict: Some((Verdict::NoGo, "5xx up".into())),
            moved_for: Some(Duration::from_secs(10)),
        };
        let s = status(&p, &c, &[bad], &RecordedLabels::default());
        assert_eq!(s.waves[0].phase, WavePhase::Failed);
        assert!(!s.next_wave_may_start);
        assert!(
            s.advice
                .contains("kubectl label namespace staging istio.io/rev=1-24-2 --overwrite"),
            "{}",
            s.advice
        );
    }

    fn with_ns_labels(mut t: Target, raw: &str, resolved: Option<&str>) -> Target {
        t.labels.insert("namespace_labels".into(), raw.into());
        if let Some(r) = resolved {
            t.labels.insert("namespace_rev".into(), r.into());
        }
        t
    }

    #[test]
    fn rollback_restores_the_labels_recorded_before_the_move() {
        let p = plan();
        let mut rec = RecordedLabels::default();
        // Before: staging injects the default way, shop through a tag; pay is not known.
        let before = [
            with_ns_labels(t("staging", "1-24-2", 0), "istio-injection=enabled", None),
            with_ns_labels(
                t("shop", "1-24-2", 0),
                "istio.io/rev=stable",
                Some("1-24-2"),
            ),
        ];
        let refs: Vec<&Target> = before.iter().collect();
        let c = namespace_counts(&p, &refs);
        assert!(record_labels(&p, &mut rec, &refs, &c).unwrap());
        assert!(
            !record_labels(&p, &mut rec, &refs, &c).unwrap(),
            "no change"
        );
        // Staging relabelled to the new revision, pods not restarted: the record stays.
        let relabelled = [with_ns_labels(
            t("staging", "1-24-2", 0),
            "istio.io/rev=1-25-0",
            Some("1-25-0"),
        )];
        let refs: Vec<&Target> = relabelled.iter().collect();
        let c = namespace_counts(&p, &refs);
        assert!(!record_labels(&p, &mut rec, &refs, &c).unwrap());
        // Pods moved, and the namespace's labels say something else again: still frozen.
        let moved = [with_ns_labels(t("staging", "1-25-0", 1), "", None)];
        let refs: Vec<&Target> = moved.iter().collect();
        let c = namespace_counts(&p, &refs);
        assert!(!record_labels(&p, &mut rec, &refs, &c).unwrap());
        assert_eq!(
            rec.namespaces["staging"],
            NamespaceLabels {
                istio_injection: Some("enabled".into()),
                rev: None
            }
        );
        let bad = WaveRuntime {
            verdict: Some((Verdict::NoGo, "5xx up".into())),
            moved_for: None,
        };
        let s = status(&p, &c, std::slice::from_ref(&bad), &rec);
        assert_eq!(
            s.waves[0].rollback[0],
            "kubectl label namespace staging istio-injection=enabled istio.io/rev- --overwrite"
        );
        assert!(
            s.advice.contains("istio-injection=enabled istio.io/rev-"),
            "{}",
            s.advice
        );
        // shop's tag comes back as the tag; pay, never seen, falls back to from_revision.
        assert_eq!(
            s.waves[1].rollback,
            vec![
                "kubectl label namespace pay istio.io/rev=1-24-2 --overwrite".to_string(),
                "kubectl rollout restart deployment -n pay".into(),
                "kubectl label namespace shop istio-injection- istio.io/rev=stable --overwrite"
                    .into(),
                "kubectl rollout restart deployment -n shop".into(),
            ]
        );
        assert_eq!(s.waves[1].rollback_labels["pay"], None);
        // A record of another plan is not used, and is replaced.
        let mut other = p.clone();
        other.to_revision = "1-26-0".into();
        let s = status(&other, &c, &[bad], &rec);
        assert!(s.waves[0].rollback[0].ends_with("istio.io/rev=1-24-2 --overwrite"));
        assert!(record_labels(&other, &mut rec, &refs, &c).unwrap());
        assert!(rec.namespaces.is_empty());
        // The target label form round-trips; a foreign label is a clear error.
        for l in [
            "",
            "istio-injection=enabled",
            "istio-injection=disabled,istio.io/rev=canary",
        ] {
            assert_eq!(l.parse::<NamespaceLabels>().unwrap().to_string(), l);
        }
        let e = "app=x".parse::<NamespaceLabels>().unwrap_err();
        assert!(e.contains("\"app=x\""), "{e}");
    }

    #[test]
    fn plan_problems_and_wave_analysis() {
        let mut p = plan();
        p.waves[1].namespaces.push("staging".into());
        p.to_revision = p.from_revision.clone();
        let probs = p.problems();
        assert!(
            probs
                .iter()
                .any(|m| m.contains("already in wave \"staging\"")),
            "{probs:?}"
        );
        assert!(
            probs.iter().any(|m| m.starts_with("plan.to_revision")),
            "{probs:?}"
        );
        let p = plan();
        let a = p.analysis_for(&p.waves[1]);
        assert_eq!(a.name, "plan-critical");
        assert_eq!(a.canary, r#"{role="proxy", revision="1-25-0"}"#);
        assert_eq!(a.design, crate::analysis::DesignName::BeforeAfter);
        assert_eq!(a.moving, ["shop", "pay"]);
        assert!(a.problems("a").is_empty(), "{:?}", a.problems("a"));
    }
}
