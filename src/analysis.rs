//! The definition of an analysis: one `[[analyses]]` entry or the body of `POST /v1/analyses`,
//! and its validation (each problem with its key path).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cohort::Selector;
use crate::judge::params::ALPHA;
use meshgate_core::ConfigProblem;

/// One `[[analyses]]` entry (also the body of `POST /v1/analyses`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalysisConfig {
    /// Human name, unique among running analyses.
    pub name: String,
    /// Baseline cohort selector, e.g. `{revision="1-24-2"}`.
    pub baseline: String,
    /// Canary cohort selector, e.g. `{revision="1-25-0"}`.
    pub canary: String,
    /// Check names from `queries/`; all loaded checks when empty.
    #[serde(default)]
    pub checks: Vec<String>,
    /// Overrides `[judge].alpha`.
    #[serde(default)]
    pub alpha: Option<f64>,
    /// Overrides `[judge].min_duration`.
    #[serde(default, with = "humantime_serde::option")]
    #[schema(value_type = Option<String>, example = "5m")]
    pub min_duration: Option<Duration>,
    /// Overrides `[judge].max_duration`.
    #[serde(default, with = "humantime_serde::option")]
    #[schema(value_type = Option<String>, example = "1h")]
    pub max_duration: Option<Duration>,
    /// Overrides `[judge].min_exposure`.
    #[serde(default)]
    pub min_exposure: Option<f64>,
    /// Overrides `[judge].max_stale_fraction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stale_fraction: Option<f64>,
    /// Overrides `[judge].min_fresh_targets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_fresh_targets: Option<usize>,
    /// Rollback triggers decided before the upgrade (README, "Istio upgrade intelligence").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollback: Vec<meshgate_core::istio::trigger::TriggerConfig>,
    /// What is compared with what: `concurrent` (the default: the same workloads on both
    /// revisions at once) or `before_after` (namespaces moving in a wave; needs `moving`).
    #[serde(default, skip_serializing_if = "DesignName::is_concurrent")]
    pub design: DesignName,
    /// `before_after`: the namespaces that move. Create the analysis before they move, so it
    /// sees each workload's rate before its move.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moving: Vec<String>,
    /// Once the checks certify GO, keep judging this long before the verdict is GO (PENDING,
    /// "soaking", meanwhile): a NO-GO of the sequential tests, a veto, a rollback trigger or the
    /// skew guard during the soak still ends the analysis NO-GO. `[plan]` waves set it to the
    /// wave's `soak`. None or 0: GO as soon as it is certified.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, example = "10m")]
    pub soak: Option<Duration>,
}

/// `design` of an analysis.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DesignName {
    /// Each workload's canary pods against its own baseline pods, at the same time.
    #[default]
    Concurrent,
    /// Each moved workload after its move against itself before it, adjusted by the others.
    BeforeAfter,
}

impl DesignName {
    fn is_concurrent(&self) -> bool {
        *self == DesignName::Concurrent
    }
}

// === impl AnalysisConfig ===

impl AnalysisConfig {
    /// Every problem with this analysis, each with its key path under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.name.trim().is_empty() {
            out.push(ConfigProblem::new(
                format!("{prefix}.name"),
                "must not be empty",
            ));
        }
        for (key, sel) in [("baseline", &self.baseline), ("canary", &self.canary)] {
            match Selector::parse(sel) {
                Ok(s) if s.is_empty() => out.push(ConfigProblem::new(
                    format!("{prefix}.{key}"),
                    "selector has no matchers and would select every series",
                )),
                Ok(_) => {}
                Err(e) => out.push(ConfigProblem::new(format!("{prefix}.{key}"), e.to_string())),
            }
        }
        if self.baseline.trim() == self.canary.trim() {
            out.push(ConfigProblem::new(
                format!("{prefix}.canary"),
                "is the same selector as baseline",
            ));
        }
        if let Some(a) = self.alpha {
            check_alpha(&mut out, &format!("{prefix}.alpha"), a);
        }
        check_quality(
            &mut out,
            prefix,
            self.max_stale_fraction,
            self.min_fresh_targets,
        );
        if let (Some(min), Some(max)) = (self.min_duration, self.max_duration) {
            if min >= max {
                out.push(ConfigProblem::new(
                    format!("{prefix}.min_duration"),
                    format!(
                        "{} must be shorter than max_duration {}",
                        fmt_dur(min),
                        fmt_dur(max)
                    ),
                ));
            }
        }
        if let Some(e) = self.min_exposure {
            if !(e.is_finite() && e >= 0.0) {
                out.push(ConfigProblem::new(
                    format!("{prefix}.min_exposure"),
                    "must be a finite number >= 0",
                ));
            }
        }
        match (self.design, self.moving.is_empty()) {
            (DesignName::BeforeAfter, true) => out.push(ConfigProblem::new(
                format!("{prefix}.moving"),
                "design \"before_after\" needs the namespaces that move",
            )),
            (DesignName::Concurrent, false) => out.push(ConfigProblem::new(
                format!("{prefix}.moving"),
                "is only used with design = \"before_after\"",
            )),
            _ => {}
        }
        for (i, ns) in self.moving.iter().enumerate() {
            if ns.is_empty() || ns.contains('/') || ns.chars().any(char::is_whitespace) {
                out.push(ConfigProblem::new(
                    format!("{prefix}.moving[{i}]"),
                    format!("{ns:?} is not a namespace name"),
                ));
            }
        }
        out
    }

    /// The design the judge runs.
    pub fn judge_design(&self) -> meshgate_core::judge::Design {
        match self.design {
            DesignName::Concurrent => meshgate_core::judge::Design::Concurrent,
            DesignName::BeforeAfter => meshgate_core::judge::Design::BeforeAfter {
                moving: self.moving.clone(),
            },
        }
    }
}

pub(crate) fn check_alpha(out: &mut Vec<ConfigProblem>, key: &str, a: f64) {
    if !ALPHA.contains(a) {
        out.push(ConfigProblem::new(key, format!("{a} is outside {ALPHA}")));
    }
}

pub(crate) fn fmt_dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Problems of data-quality thresholds at `prefix` (`judge` or `analyses[i]`).
pub(crate) fn check_quality(
    out: &mut Vec<ConfigProblem>,
    prefix: &str,
    max_stale_fraction: Option<f64>,
    min_fresh_targets: Option<usize>,
) {
    if let Some(f) = max_stale_fraction {
        if !(0.0..1.0).contains(&f) {
            out.push(ConfigProblem::new(
                format!("{prefix}.max_stale_fraction"),
                format!("{f} is outside [0, 1)"),
            ));
        }
    }
    if min_fresh_targets == Some(0) {
        out.push(ConfigProblem::new(
            format!("{prefix}.min_fresh_targets"),
            "must be at least 1: a verdict is never GO without fresh data",
        ));
    }
}
