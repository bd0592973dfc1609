//! One analysis: its checks' e-processes, the combined e-value, and the verdict rules.
//!
//! Pure: the daemon hands in each tick's per-cohort deltas and data quality; this decides.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::before_after::{self, BeforeAfterCheck, BeforeAfterTest, Design};
use super::betabinom::{choose_k, ln_e_two_sided};
use super::check::{CheckKind, CheckSpec, DispersionMode, RECENT_WINDOW};
use super::dispersion::Dispersion;
use super::explain::{chi_square_2xk, fisher_exact, mann_whitney_binned, two_proportion_z};
use super::mixture::{RatioEProcess, RatioParams, Totals};
use super::rate::rate_upper_bound;
use super::robust::{RobustEProcess, RobustParams};
use super::spending::{SpendingGo, SpendingParams};

/// The answer of an analysis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Verdict {
    /// Still collecting evidence.
    #[serde(rename = "PENDING")]
    Pending,
    /// The canary is certified not worse than the baseline (within margins or SLOs).
    #[serde(rename = "GO")]
    Go,
    /// The canary is worse than the baseline beyond a margin, at the analysis' alpha.
    #[serde(rename = "NO-GO")]
    NoGo,
    /// The maximum duration passed without a decision.
    #[serde(rename = "INCONCLUSIVE")]
    Inconclusive,
}

impl Verdict {
    /// GO, NO-GO and INCONCLUSIVE end the analysis.
    pub fn is_final(self) -> bool {
        !matches!(self, Verdict::Pending)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pending => "PENDING",
            Verdict::Go => "GO",
            Verdict::NoGo => "NO-GO",
            Verdict::Inconclusive => "INCONCLUSIVE",
        }
    }
}

/// The settings an analysis runs with, resolved from its request and the `[judge]` defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// False-alarm budget.
    pub alpha: f64,
    /// No GO before this.
    #[serde(with = "humantime_serde")]
    pub min_duration: Duration,
    /// INCONCLUSIVE after this.
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
    /// Fewest requests per cohort before a GO.
    pub min_exposure: f64,
    /// Let the checks' `slo` certify GO ("GO by SLO", not a relative comparison) whatever the
    /// baseline, and hold GO while the canary is above it. Off by default: GO means "not worse
    /// than the baseline", and the SLO certifies only where no relative comparison exists yet
    /// (the baseline has no events: statistics.md, section 3).
    #[serde(default)]
    pub slo_go: bool,
    /// Which test certifies GO (statistics.md, section 3c): `anytime` (the default), the
    /// e-process, valid however long the analysis runs; or `horizon`, alpha spent over
    /// `max_duration` on the exact conditional law, which certifies A/A canaries about twice as
    /// often within the hour but is valid only up to `max_duration`. Ratio checks in the
    /// concurrent design only, and not with `robust = true` (the others keep the e-process).
    #[serde(default)]
    pub go_certificate: GoCertificate,
    /// What is compared with what (docs/statistics.md, sections 3a and 3b).
    #[serde(default)]
    pub design: Design,
    /// Once GO is certified, how long the analysis keeps judging before its verdict is GO. The
    /// NO-GO side of every test is anytime-valid (Ville's inequality holds over the whole run,
    /// not up to a planned stop), so watching on after the certificate spends no extra alpha:
    /// a NO-GO found during the soak is as valid as one found before. PENDING meanwhile.
    #[serde(default, with = "humantime_serde")]
    pub soak: Duration,
}

/// Which test certifies GO ([`Settings::go_certificate`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GoCertificate {
    /// The mixture e-process: valid at any time, however long the analysis runs.
    #[default]
    Anytime,
    /// Alpha spent over `max_duration` (`meshgate_stats::spending`): valid up to it.
    Horizon,
}

impl GoCertificate {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anytime => "anytime",
            Self::Horizon => "horizon",
        }
    }
}

impl Settings {
    /// The level of the sequential tests: alpha, or alpha / 2 in the before/after design, whose
    /// intervals on each workload's inherent rate take the other half (see `before_after.rs`).
    pub fn test_alpha(&self) -> f64 {
        match self.design {
            Design::Concurrent => self.alpha,
            Design::BeforeAfter { .. } => self.alpha / 2.0,
        }
    }
}

/// Data quality of one cohort at a tick, measured by the daemon.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CohortQuality {
    /// Targets that have sent this analysis data for this cohort and are still discovered.
    pub targets: usize,
    /// Of those, the ones scraped successfully within the staleness limit.
    pub fresh: usize,
    /// Of those, the ones whose last good scrape is too old.
    pub stale: usize,
    /// Targets whose labels may belong to this cohort but that sent it no data and are not
    /// scraped successfully now (never, or not within the staleness limit).
    pub unreachable: usize,
    /// Counter resets seen in this cohort's series so far.
    pub resets: u64,
    /// Targets of this cohort (members, or whose labels may match) whose pages are quarantined
    /// now for breaking a plausibility limit (`[scrape.limits]`): their data is not used, and
    /// one blocks GO.
    #[serde(default)]
    pub quarantined: usize,
    /// The first quarantined target and the limit it broke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
}

/// Data quality of both cohorts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DataQuality {
    /// Baseline.
    pub baseline: CohortQuality,
    /// Canary.
    pub canary: CohortQuality,
    /// Series that matched both cohorts and were left out.
    pub overlapping_series: u64,
    /// The thresholds this data is held to (`[judge]` or the analysis' own).
    #[serde(default)]
    pub thresholds: QualityThresholds,
    /// The threshold that blocks a GO at this tick, if any (set by [`Analysis::tick`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<QualityBlock>,
    /// A hold on GO found outside the counts (no target matches a selector; the version skew
    /// guard cannot judge the revisions the cohorts run): blocks GO before any threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<QualityBlock>,
}

/// How much missing data a cohort may have with a GO still possible.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QualityThresholds {
    /// Largest share of a cohort's targets (stale + never scraped, over all known) allowed to be
    /// missing. 0 (the default): one stale or unreachable target blocks GO.
    pub max_stale_fraction: f64,
    /// Fewest freshly scraped targets each cohort needs (at least 1).
    pub min_fresh_targets: usize,
}

impl Default for QualityThresholds {
    fn default() -> Self {
        Self {
            max_stale_fraction: 0.0,
            min_fresh_targets: 1,
        }
    }
}

/// Which data-quality threshold blocks a GO, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QualityBlock {
    /// `min_fresh_targets`, `max_stale_fraction`, or `plausibility_limits` (a quarantined target).
    pub threshold: String,
    /// `baseline` or `canary`.
    pub cohort: String,
    /// The measured value (fresh targets, or the missing share).
    pub value: f64,
    /// The threshold's value.
    pub limit: f64,
    /// A sentence for people.
    pub message: String,
}

impl DataQuality {
    /// Both cohorts with `targets` targets, every one fresh, nothing else wrong (simulations,
    /// benches, tests).
    pub fn all_fresh(targets: usize) -> Self {
        let q = CohortQuality {
            targets,
            fresh: targets,
            ..Default::default()
        };
        DataQuality {
            baseline: q.clone(),
            canary: q,
            ..Default::default()
        }
    }

    /// The first threshold the data fails, baseline before canary.
    pub fn block(&self) -> Option<QualityBlock> {
        if let Some(h) = &self.hold {
            return Some(h.clone());
        }
        let t = &self.thresholds;
        for (name, q) in [("baseline", &self.baseline), ("canary", &self.canary)] {
            if q.quarantined > 0 {
                return Some(QualityBlock {
                    threshold: "plausibility_limits".into(),
                    cohort: name.into(),
                    value: q.quarantined as f64,
                    limit: 0.0,
                    message: format!(
                        "{} {name} target(s) quarantined for implausible data: {}",
                        q.quarantined,
                        q.quarantine.as_deref().unwrap_or("a limit broken")
                    ),
                });
            }
            let min_fresh = t.min_fresh_targets.max(1);
            if q.fresh < min_fresh {
                let message = if q.fresh == 0 {
                    format!("{name} cohort has no freshly scraped target")
                } else {
                    format!(
                        "{name} cohort has {} freshly scraped target(s), fewer than min_fresh_targets {min_fresh}",
                        q.fresh
                    )
                };
                return Some(QualityBlock {
                    threshold: "min_fresh_targets".into(),
                    cohort: name.into(),
                    value: q.fresh as f64,
                    limit: min_fresh as f64,
                    message,
                });
            }
            let missing = q.stale + q.unreachable;
            let known = q.targets + q.unreachable;
            let share = if known == 0 {
                0.0
            } else {
                missing as f64 / known as f64
            };
            if missing > 0 && share > t.max_stale_fraction {
                let mut parts = Vec::new();
                if q.stale > 0 {
                    parts.push(format!("{} {name} target(s) stale", q.stale));
                }
                if q.unreachable > 0 {
                    parts.push(format!(
                        "{} {name} target(s) unreachable (never scraped successfully, or dark since before they sent data)",
                        q.unreachable
                    ));
                }
                return Some(QualityBlock {
                    threshold: "max_stale_fraction".into(),
                    cohort: name.into(),
                    value: share,
                    limit: t.max_stale_fraction,
                    message: format!(
                        "{} ({missing} of {known}, {:.0}%, above max_stale_fraction {})",
                        parts.join(", "),
                        share * 100.0,
                        t.max_stale_fraction
                    ),
                });
            }
        }
        None
    }

    /// Why the data cannot support a GO, if it cannot.
    pub fn blocks_go(&self) -> Option<String> {
        self.block().map(|b| b.message)
    }
}

/// Per-cohort counts of one test.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Counts {
    /// Events (errors, slow requests).
    pub events: f64,
    /// Exposure (requests).
    pub exposure: f64,
    /// events / exposure, when defined.
    pub rate: Option<f64>,
}

impl Counts {
    fn new(events: f64, exposure: f64) -> Self {
        Self {
            events,
            exposure,
            rate: (exposure > 0.0).then(|| events / exposure),
        }
    }
}

/// The state of one sequential test (one ratio, or one histogram boundary).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestState {
    /// For histogram checks: the boundary.
    pub boundary: Option<f64>,
    /// The e-process.
    pub process: RatioEProcess,
    /// `robust = true` checks: the distribution-free test that decides instead of `process`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robust: Option<RobustEProcess>,
    /// The canary's counts of the ticks within [`RECENT_WINDOW`] (seconds since start, exposure,
    /// events), kept only for checks with an SLO or an incident ceiling: what holds GO.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub recent: VecDeque<(f64, f64, f64)>,
    /// Stratified checks: each stratum's own e-process (its ticks with both cohorts). A GO needs
    /// every material stratum certified on its own (an intersection-union test: each at alpha,
    /// no correction needed), so one workload's regression cannot hide behind the others'
    /// volume in the common ratio.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub strata: BTreeMap<String, RatioEProcess>,
    /// The before/after design's state (then `process` is its common NO-GO side, and `strata`
    /// stays empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_after: Option<Box<BeforeAfterTest>>,
    /// The dispersion factor measured across pods (`dispersion = "pods"`): each tick's counts
    /// are divided by the factor of the ticks before it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub dispersion: Dispersion,
    /// The counts as they came, before the division by the dispersion factor: [baseline events,
    /// baseline requests, canary events, canary requests] (what people read).
    #[serde(default, skip_serializing_if = "is_default")]
    pub raw: [f64; 4],
    /// `go_certificate = "horizon"`: the test that certifies GO instead of `process` (which
    /// keeps the NO-GO side and the bounds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon: Option<Box<SpendingGo>>,
    /// The same per stratum (the intersection-union test of `strata`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub horizon_strata: BTreeMap<String, SpendingGo>,
}

/// A bound that serde_json wrote as `null` (it writes every non-finite number so) reads back
/// as the infinity it was: the verdict document and the store then parse what they wrote.
fn null_is_infinity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// A stratum holding at least this share of the compared canary requests must be certified on
/// its own for a GO; smaller ones are reported, and covered by the common test only.
pub const MATERIAL_STRATUM_SHARE: f64 = 0.02;

/// Material strata of a test that its own GO certificate does not certify.
fn uncertified_strata(t: &TestState) -> impl Iterator<Item = (&str, &RatioEProcess)> {
    let total_b = t.process.totals().exposure_b;
    t.strata
        .iter()
        .filter(move |(_, p)| p.totals().exposure_b >= MATERIAL_STRATUM_SHARE * total_b)
        .filter(|(n, p)| !stratum_certified(t, n, p))
        .map(|(n, p)| (n.as_str(), p))
}

/// The test's common GO certificate: the horizon test's once it certified, else the e-process'.
fn common_certified(t: &TestState) -> bool {
    match &t.horizon {
        Some(h) => h.certified_at().is_some(),
        None => t.process.certifies_not_worse(),
    }
}

/// A stratum's own GO certificate (`p` its e-process).
fn stratum_certified(t: &TestState, name: &str, p: &RatioEProcess) -> bool {
    match &t.horizon {
        Some(_) => t
            .horizon_strata
            .get(name)
            .is_some_and(|h| h.certified_at().is_some()),
        None => p.certifies_not_worse(),
    }
}

impl TestState {
    /// Feed the e-processes one tick's counts divided by the dispersion factor `phi`, and the
    /// raw tallies the counts themselves (where the process takes them: both cohorts with
    /// requests).
    fn observe_scaled(&mut self, (ea, eb, xa, xb): (f64, f64, f64, f64), phi: f64) {
        self.process.observe(ea / phi, eb / phi, xa / phi, xb / phi);
        if let Some(h) = &mut self.horizon {
            h.observe(ea / phi, eb / phi, xa / phi, xb / phi);
        }
        let ok = |v: f64| v >= 0.0 && v.is_finite();
        if xa > 0.0 && xb > 0.0 && [ea, eb, xa, xb].into_iter().all(ok) {
            for (r, v) in self.raw.iter_mut().zip([ea, xa, eb, xb]) {
                *r += v;
            }
        }
    }

    fn remember(&mut self, limits: bool, now: Duration, exposure_b: f64, events_b: f64) {
        if !limits {
            return;
        }
        let now = now.as_secs_f64();
        self.recent.push_back((now, exposure_b, events_b));
        while self
            .recent
            .front()
            .is_some_and(|(t, _, _)| now - t > RECENT_WINDOW.as_secs_f64())
        {
            self.recent.pop_front();
        }
    }

    /// The canary's rate over the recent window: (events, exposure).
    fn recent_canary(&self) -> (f64, f64) {
        self.recent
            .iter()
            .fold((0.0, 0.0), |(e, x), (_, xb, eb)| (e + eb, x + xb))
    }
}

/// The evidence of one test at the last tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TestEvidence {
    /// For histogram checks: the boundary (events are observations above it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boundary: Option<f64>,
    /// Baseline counts.
    pub baseline: Counts,
    /// Canary counts.
    pub canary: Counts,
    /// The dispersion factor the counts were divided by in the last tick (`dispersion =
    /// "pods"`; 1 for Poisson-like counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispersion: Option<f64>,
    /// e-value against "canary not worse beyond the margin" (two-sided checks: the mean of the
    /// rise and drop tests).
    pub e_value: f64,
    /// Two-sided checks: the drop test's e-value alone (H0: ratio >= 1 / (1 + margin)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e_value_drop: Option<f64>,
    /// Histogram checks: this boundary's normalised weight in the check's e-value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Point estimate of the canary/baseline rate ratio.
    pub ratio_estimate: Option<f64>,
    /// Anytime-valid lower confidence bound on the ratio.
    pub ratio_lower_bound: f64,
    /// Anytime-valid upper confidence bound on the ratio (`null` when unbounded).
    pub ratio_upper_bound: Option<f64>,
    /// Anytime-valid upper bound on the canary's absolute rate (infinite, JSON `null`, for a
    /// `robust` check, which does not bound it).
    #[serde(deserialize_with = "null_is_infinity")]
    pub canary_rate_upper_bound: f64,
    /// Certified not worse: by the ratio bound, by the SLO, or not at all.
    pub certified_by: Option<Certificate>,
    /// `robust = true` checks: the distribution-free test that decides. Its scale is the
    /// per-scrape difference, so the Poisson test's ratio and rate bounds are not reported
    /// for it (lower bound 0, upper bounds unbounded): they would not hold without Poisson.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robust: Option<RobustEvidence>,
}

/// What the robust (betting) test of a test has seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RobustEvidence {
    /// What it tests: the mean of Z = r_canary / (1 + margin) - r_baseline per scrape.
    pub statistic: String,
    /// Its NO-GO e-value (H0: mean Z <= 0) is `e_value`; this is the GO e-value
    /// (H0: canary worse beyond the margin).
    pub e_value_not_worse: f64,
    /// Scrapes used (both cohorts had requests).
    pub units: u64,
    /// Scrapes skipped (a cohort had no requests).
    pub skipped_units: u64,
    /// Mean of Z over the units used.
    pub mean_difference: Option<f64>,
}

/// How a test was certified for GO.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Certificate {
    /// Upper bound on the ratio below 1 + margin.
    Ratio,
    /// Upper bound on the canary's rate below the SLO.
    Slo,
}

impl Certificate {
    /// The word the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ratio => "ratio",
            Self::Slo => "slo",
        }
    }
}

/// State of one check within an analysis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckState {
    /// Check name.
    pub name: String,
    /// One test for ratio checks, one per boundary for histogram checks.
    pub tests: Vec<TestState>,
    /// Exposure seen per cohort (for histogram checks: all requests).
    pub exposure: [f64; 2],
    /// Histogram checks: requests per bucket per cohort, buckets cut at the tested boundaries
    /// ([0, b1], (b1, b2], ..., (bn, +Inf)), from ticks where every histogram had every boundary.
    #[serde(default)]
    pub buckets: [Vec<f64>; 2],
    /// Histogram checks: requests of ticks left out of `buckets` (a histogram lacked a boundary).
    #[serde(default)]
    pub unbucketed: f64,
    /// Stratified checks: per stratum, [baseline events, baseline exposure, canary events, canary
    /// exposure] of the check's first test (ratio checks: the check; histograms: the lowest
    /// boundary), for the per-stratum evidence.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub strata: BTreeMap<String, [f64; 4]>,
    /// The before/after design's per-check state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_after: Option<BeforeAfterCheck>,
}

/// Fixed-horizon statistics of a check (statistics.md §5): for explanation only, never for the
/// decision (repeated every scrape they would raise false alarms far above alpha).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FixedHorizon {
    /// Ratio checks: pooled two-proportion z (canary minus baseline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub two_proportion_z: Option<f64>,
    /// Its one-sided p-value (canary rate greater).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub two_proportion_p: Option<f64>,
    /// Ratio checks: Fisher exact one-sided p (canary rate greater).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fisher_p_greater: Option<f64>,
    /// Ratio checks: Fisher exact two-sided p.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fisher_p_two_sided: Option<f64>,
    /// Histogram checks: binned Mann-Whitney z (canary greater), tie-corrected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mann_whitney_z: Option<f64>,
    /// Its one-sided p-value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mann_whitney_p: Option<f64>,
    /// Common-language effect size: P(canary slower) + P(same bucket) / 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cles: Option<f64>,
    /// Histogram checks: chi-square p on the 2 x buckets table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chi_square_p: Option<f64>,
}

/// Per-bucket counts of a histogram check, with the whole-distribution detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BucketEvidence {
    /// Upper bound of each bucket (`le`; the last is +Inf, serialized as null).
    pub le: Vec<Option<f64>>,
    /// Baseline requests per bucket.
    pub baseline: Vec<f64>,
    /// Canary requests per bucket.
    pub canary: Vec<f64>,
    /// ln of the per-bucket product of two-sided Beta-binomial e-values (equality in
    /// distribution). Secondary: reported, never counted in the verdict, and approximate when
    /// the canary's share of requests moves (the closed form assumes a fixed share).
    pub distribution_ln_e: f64,
}

/// Where a check stands at a tick (serialized as before: `policy`, `regression`, `certified`,
/// `collecting`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// A policy rule fired (zero-baseline rule).
    Policy,
    /// The check's evidence of a regression crossed its threshold.
    Regression,
    /// Certified not worse (the GO condition of a critical check).
    Certified,
    /// Neither yet.
    Collecting,
}

impl CheckStatus {
    /// The word the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::Regression => "regression",
            Self::Certified => "certified",
            Self::Collecting => "collecting",
        }
    }
}

/// What a check counts (serialized `ratio` or `histogram_tail`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// Events over exposure.
    Ratio,
    /// Requests above bucket boundaries.
    HistogramTail,
}

impl EvidenceKind {
    /// The word the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ratio => "ratio",
            Self::HistogramTail => "histogram_tail",
        }
    }
}

/// Which direction is a regression (serialized `one` or `two`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Sided {
    /// A rise beyond the margin.
    One,
    /// A rise or a drop beyond the margin.
    Two,
}

/// What a stratum says (serialized with spaces, as shown to people).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum StratumStatus {
    /// Both cohorts, enough events: compared.
    #[serde(rename = "compared")]
    Compared,
    /// Requests in the canary only.
    #[serde(rename = "canary only")]
    CanaryOnly,
    /// Requests in the baseline only.
    #[serde(rename = "baseline only")]
    BaselineOnly,
    /// Fewer than 5 events in both cohorts together (or no requests).
    #[serde(rename = "too little data")]
    TooLittleData,
    /// Before/after: moved without requests before its move while the analysis ran.
    #[serde(rename = "no pre-move window")]
    NoPreWindow,
    /// Before/after: a workload of the moving namespaces still on the old revision.
    #[serde(rename = "not moved yet")]
    NotMoved,
}

impl StratumStatus {
    /// The words the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compared => "compared",
            Self::CanaryOnly => "canary only",
            Self::BaselineOnly => "baseline only",
            Self::TooLittleData => "too little data",
            Self::NoPreWindow => "no pre-move window",
            Self::NotMoved => "not moved yet",
        }
    }
}

/// The evidence of one check at the last tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckEvidence {
    /// Check name.
    pub name: String,
    /// `ratio` or `histogram_tail`.
    pub kind: EvidenceKind,
    /// A GO needs this check certified.
    pub critical: bool,
    /// Normalised weight in the combined e-value.
    pub weight: f64,
    /// The check's e-value (for histograms, the average over boundaries).
    pub e_value: f64,
    /// The e-value at which this check alone is named as the cause of a NO-GO: 1 / (weight alpha).
    pub threshold: f64,
    /// Tolerated relative regression.
    pub margin: f64,
    /// The SLO, if any.
    pub slo: Option<f64>,
    /// `policy`, `regression`, `certified`, or `collecting`.
    pub status: CheckStatus,
    /// One line for people.
    pub reason: String,
    /// Per test.
    pub tests: Vec<TestEvidence>,
    /// What the histogram can and cannot see.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// `one`, or `two` when a drop beyond the margin is a regression too.
    pub sided: Sided,
    /// Veto checks: the e-value at which this check alone ends the analysis in NO-GO.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub veto_threshold: Option<f64>,
    /// The policy rule that fired (zero-baseline rule), apart from the statistical evidence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Fixed-horizon statistics, for explanation only.
    pub fixed_horizon: FixedHorizon,
    /// Histogram checks: per-bucket counts and the whole-distribution detector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buckets: Option<BucketEvidence>,
    /// Stratified checks: the strata, worst first (at most [`MAX_STRATA_SHOWN`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strata: Vec<StratumEvidence>,
}

/// How many strata a check's evidence lists.
pub const MAX_STRATA_SHOWN: usize = 20;

/// One stratum of a stratified check (ratio checks: the check's counts; histograms: the lowest
/// boundary's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StratumEvidence {
    /// `namespace/workload`.
    pub name: String,
    /// Baseline counts in this stratum.
    pub baseline: Counts,
    /// Canary counts in this stratum.
    pub canary: Counts,
    /// Canary rate / baseline rate, with half an event added to each side (defined with zero
    /// events); none when a cohort has no requests here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// `compared`, `canary only`, `baseline only`, or `too little data` (fewer than 5 events in
    /// both cohorts together): never pooled with other strata.
    pub status: StratumStatus,
    /// The stratum's own anytime-valid bounds on its rate ratio (its ticks with both cohorts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_upper_bound: Option<f64>,
    /// Lower bound, as above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_lower_bound: Option<f64>,
    /// Certified not worse on its own.
    pub certified: bool,
}

fn strata_evidence(state: &CheckState, alpha: f64) -> Vec<StratumEvidence> {
    if let Some(ba) = state.tests.first().and_then(|t| t.before_after.as_deref()) {
        return moved_evidence(ba, alpha);
    }
    let own = state.tests.first().map(|t| &t.strata);
    let mut v: Vec<StratumEvidence> = state
        .strata
        .iter()
        .map(|(name, t)| {
            let p = own.and_then(|m| m.get(name));
            let [ea, xa, eb, xb] = *t;
            let ratio = (xa > 0.0 && xb > 0.0).then(|| ((eb + 0.5) / xb) / ((ea + 0.5) / xa));
            let status = match (xa > 0.0, xb > 0.0) {
                (true, false) => StratumStatus::BaselineOnly,
                (false, true) => StratumStatus::CanaryOnly,
                (false, false) => StratumStatus::TooLittleData,
                _ if ea + eb < 5.0 => StratumStatus::TooLittleData,
                _ => StratumStatus::Compared,
            };
            StratumEvidence {
                name: name.clone(),
                baseline: Counts::new(ea, xa),
                canary: Counts::new(eb, xb),
                ratio,
                status,
                ratio_upper_bound: p.map(|p| p.upper_bound(alpha)).filter(|b| b.is_finite()),
                ratio_lower_bound: p.map(|p| p.lower_bound(alpha)),
                certified: state
                    .tests
                    .first()
                    .zip(p)
                    .is_some_and(|(t, p)| stratum_certified(t, name, p)),
            }
        })
        .collect();
    // Worst first: compared strata by ratio, then the ones that say nothing.
    v.sort_by(|a, b| {
        let key =
            |s: &StratumEvidence| (s.status != StratumStatus::Compared, -s.ratio.unwrap_or(0.0));
        key(a)
            .partial_cmp(&key(b))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    v.truncate(MAX_STRATA_SHOWN);
    v
}

/// The before/after design's strata: each moved workload's own counts before (as `baseline`) and
/// after its move (as `canary`), its after/before ratio relative to the controls', and bounds on
/// it (conservative: the upper one from the GO side, the lower one from the NO-GO side); then the
/// workloads not moved yet.
fn moved_evidence(ba: &BeforeAfterTest, alpha: f64) -> Vec<StratumEvidence> {
    let mut v: Vec<StratumEvidence> = ba
        .moved
        .iter()
        .map(|(name, m)| {
            let status = match m.bounds {
                None => StratumStatus::NoPreWindow,
                Some(_) if m.pre[2] + m.pre[0] + m.post[2] < 5.0 => StratumStatus::TooLittleData,
                Some(_) => StratumStatus::Compared,
            };
            StratumEvidence {
                name: name.clone(),
                baseline: Counts::new(m.pre[2], m.pre[3]),
                canary: Counts::new(m.post[2], m.post[3]),
                ratio: m.estimate(),
                status,
                ratio_upper_bound: m
                    .go
                    .as_ref()
                    .map(|p| p.upper_bound(alpha))
                    .filter(|b| b.is_finite()),
                ratio_lower_bound: m.nogo.as_ref().map(|p| p.lower_bound(alpha)),
                certified: m.certified(),
            }
        })
        .collect();
    v.sort_by(|a, b| {
        let key =
            |s: &StratumEvidence| (s.status != StratumStatus::Compared, -s.ratio.unwrap_or(0.0));
        key(a)
            .partial_cmp(&key(b))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    v.extend(ba.pre.iter().map(|(name, p)| {
        let t = p.totals();
        StratumEvidence {
            name: name.clone(),
            baseline: Counts::new(t.events_b, t.exposure_b),
            canary: Counts::new(0.0, 0.0),
            ratio: None,
            status: StratumStatus::NotMoved,
            ratio_upper_bound: None,
            ratio_lower_bound: None,
            certified: false,
        }
    }));
    v.truncate(MAX_STRATA_SHOWN);
    v
}

/// One analysis: spec, state and last evidence. Serializable as a whole, so it can be persisted.
///
/// The fields are private: only the analysis' own methods ([`Analysis::tick`],
/// [`Analysis::trip`], [`Analysis::abandon`]) set the verdict, and a final one stays, so no caller
/// can turn a NO-GO into a GO by assignment. The accessors read them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Settings in force.
    settings: Settings,
    /// Check states, in the order of the analysis' checks.
    checks: Vec<CheckState>,
    /// Current verdict.
    verdict: Verdict,
    /// Why.
    reason: String,
    /// ln of the combined e-value at tick `bounds_tick`.
    ln_e: f64,
    /// Ticks taken.
    ticks: u64,
    /// Time since start at the last tick.
    #[serde(with = "humantime_serde")]
    elapsed: Duration,
    /// When the verdict became final, since start.
    #[serde(with = "humantime_serde::option")]
    decided_after: Option<Duration>,
    /// Evidence at tick `bounds_tick` (current after [`Analysis::refresh`]).
    evidence: Vec<CheckEvidence>,
    /// Data quality at the last tick.
    quality: DataQuality,
    /// The tick at which the evidence, `ln_e` and a PENDING `reason` were computed: every
    /// deciding tick, and otherwise when someone reads them ([`Analysis::refresh`]).
    #[serde(default)]
    bounds_tick: u64,
    /// When the canary first had data (time since start): `min_duration` counts from here, so an
    /// analysis created before its canary pods exist does not GO on a few minutes of data.
    #[serde(default, with = "humantime_serde::option")]
    canary_since: Option<Duration>,
    /// When every critical check first certified GO (time since start), if the analysis has a
    /// soak: the verdict is GO once `settings.soak` has passed since, with nothing turned NO-GO.
    #[serde(default, with = "humantime_serde::option")]
    certified_after: Option<Duration>,
}

// === impl Analysis (accessors) ===

impl Analysis {
    /// Settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Check states, in the order of the analysis' checks.
    pub fn checks(&self) -> &[CheckState] {
        &self.checks
    }

    /// Current verdict.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Why.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// ln of the combined e-value at the tick of the evidence ([`Self::is_current`]).
    pub fn ln_e(&self) -> f64 {
        self.ln_e
    }

    /// Ticks taken.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Time since start at the last tick.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// When the verdict became final, since start.
    pub fn decided_after(&self) -> Option<Duration> {
        self.decided_after
    }

    /// Evidence at the tick of the evidence (current after [`Self::refresh`]).
    pub fn evidence(&self) -> &[CheckEvidence] {
        &self.evidence
    }

    /// Data quality at the last tick.
    pub fn quality(&self) -> &DataQuality {
        &self.quality
    }

    /// When the canary first had data (time since start).
    pub fn canary_since(&self) -> Option<Duration> {
        self.canary_since
    }
}

/// One stratum's deltas in a tick (a destination workload, by default).
#[derive(Clone, Debug, PartialEq)]
pub struct Stratum {
    /// Its name (`namespace/workload`).
    pub name: Arc<str>,
    /// `slots[side]`, as in [`TickInput::slots`].
    pub slots: [Vec<f64>; 2],
}

/// One cohort's pods in one stratum, in one tick: each pod's slot deltas (what the dispersion
/// factor is measured on: pods serve the same traffic at the same time).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodGroup {
    /// 0 baseline, 1 canary.
    pub side: usize,
    /// Each pod's slots, as in [`TickInput::slots`].
    pub pods: Vec<Vec<f64>>,
}

/// One tick's input: per check, per cohort, the deltas of its slots.
pub struct TickInput<'a> {
    /// `slots[check][side]` = slot deltas (see [`CheckSpec::slots`]), summed over all strata.
    pub slots: &'a [[Vec<f64>; 2]],
    /// `strata[check]` = the same deltas per stratum, for checks with strata: the tests then
    /// compare each stratum's cohorts only with each other. Empty: the caller does not stratify,
    /// and `slots` is one stratum.
    pub strata: &'a [Vec<Stratum>],
    /// `pods[check]` = the tick's pods per cohort and stratum (empty: the caller has no per-pod
    /// counts, and the dispersion factor keeps its last value).
    pub pods: &'a [Vec<PodGroup>],
    /// Data quality now.
    pub quality: DataQuality,
    /// Time since the analysis started.
    pub elapsed: Duration,
}

// === impl Analysis ===

impl Analysis {
    /// A new analysis over `checks`.
    pub fn new(settings: Settings, checks: &[&CheckSpec]) -> Self {
        let states = checks
            .iter()
            .map(|c| {
                // The before/after design has its own robustness (each workload against itself):
                // a `robust` check runs the mixture there.
                let before_after = settings.design.moving().is_some() && !c.strata.is_empty();
                let params = RatioParams {
                    alpha: settings.test_alpha(),
                    margin: c.margin,
                    target_events: c.target_events,
                };
                let robust = robust_test(settings.test_alpha(), c).filter(|_| !before_after);
                // Ratio checks only: a histogram boundary's events are common (12% of requests
                // above 100 ms is usual), and the exact law's cost grows with them (one pass over
                // ~16 sqrt(C) cells per event), so boundaries keep the e-process.
                let horizon = (settings.go_certificate == GoCertificate::Horizon
                    && !before_after
                    && settings.design.moving().is_none()
                    && robust.is_none()
                    && !c.is_histogram())
                .then(|| {
                    Box::new(SpendingGo::new(SpendingParams {
                        alpha: settings.test_alpha(),
                        margin: c.margin,
                        horizon_secs: settings.max_duration.as_secs_f64(),
                        first_look_secs: 0.0,
                    }))
                });
                let tests = match &c.kind {
                    CheckKind::Ratio { .. } | CheckKind::EventsRatio { .. } => vec![TestState {
                        robust: robust.clone(),
                        boundary: None,
                        process: RatioEProcess::new(params),
                        recent: VecDeque::new(),
                        strata: BTreeMap::new(),
                        before_after: None,
                        dispersion: Dispersion::default(),
                        raw: [0.0; 4],
                        horizon: horizon.clone(),
                        horizon_strata: BTreeMap::new(),
                    }],
                    CheckKind::HistogramTail { boundaries } => boundaries
                        .iter()
                        .map(|b| TestState {
                            robust: robust.clone(),
                            boundary: Some(*b),
                            process: RatioEProcess::new(params.clone()),
                            recent: VecDeque::new(),
                            strata: BTreeMap::new(),
                            before_after: None,
                            dispersion: Dispersion::default(),
                            raw: [0.0; 4],
                            horizon: horizon.clone(),
                            horizon_strata: BTreeMap::new(),
                        })
                        .collect(),
                };
                let nb = if c.is_histogram() {
                    c.boundaries().len() + 1
                } else {
                    0
                };
                CheckState {
                    name: c.name.clone(),
                    tests,
                    exposure: [0.0; 2],
                    buckets: [vec![0.0; nb], vec![0.0; nb]],
                    unbucketed: 0.0,
                    strata: BTreeMap::new(),
                    before_after: None,
                }
            })
            .collect();
        let mut a = Analysis {
            settings,
            checks: states,
            verdict: Verdict::Pending,
            reason: "waiting for the first scrapes".into(),
            ln_e: 0.0,
            ticks: 0,
            elapsed: Duration::ZERO,
            decided_after: None,
            evidence: Vec::new(),
            quality: DataQuality::default(),
            bounds_tick: 0,
            canary_since: None,
            certified_after: None,
        };
        a.evidence = a.build_evidence(checks);
        a
    }

    /// Take in one tick and decide. A final verdict never changes.
    pub fn tick(&mut self, specs: &[&CheckSpec], input: TickInput<'_>) -> Verdict {
        self.tick_with(specs, input, true)
    }

    /// `tick`; without `shortcut` every tick builds its evidence (the tests compare the two).
    fn tick_with(&mut self, specs: &[&CheckSpec], input: TickInput<'_>, shortcut: bool) -> Verdict {
        if self.verdict.is_final() {
            return self.verdict;
        }
        self.ticks += 1;
        self.elapsed = input.elapsed;
        self.quality = input.quality;
        self.quality.blocked_by = self.quality.block();
        // The before/after design's interval budget: alpha / 2, shared equally by its checks.
        let stratified = specs.iter().filter(|c| !c.strata.is_empty()).count().max(1);
        let interval_alpha = self.settings.alpha / (2.0 * stratified as f64);
        let mut moved_data = false;
        for (i, ((state, spec), slots)) in self
            .checks
            .iter_mut()
            .zip(specs)
            .zip(input.slots)
            .enumerate()
        {
            // The pods' split within each cohort, given the cohort's total, is multinomial for
            // Poisson counts whatever the ratio (ancillary): this tick's split teaches the
            // dispersion factor before the tick is judged with it (`dispersion.rs`).
            if let Some(groups) = input.pods.get(i) {
                learn_dispersion(state, spec, groups);
            }
            let phi: Vec<f64> = state
                .tests
                .iter()
                .map(|t| match spec.dispersion {
                    DispersionMode::Pods => t.dispersion.phi(),
                    DispersionMode::Poisson => 1.0,
                })
                .collect();
            match (input.strata.get(i), self.settings.design.moving()) {
                (Some(strata), Some(moving)) if !spec.strata.is_empty() => {
                    moved_data |= observe_before_after(
                        state,
                        spec,
                        slots,
                        strata,
                        input.elapsed,
                        moving,
                        interval_alpha,
                        &phi,
                    );
                }
                (Some(strata), _) if !spec.strata.is_empty() => {
                    observe_strata(state, spec, slots, strata, input.elapsed, &phi)
                }
                _ => observe(state, spec, slots, input.elapsed, &phi),
            }
        }
        // The horizon certificates look once per tick, at the analysis' own clock.
        let secs = input.elapsed.as_secs_f64();
        for t in self.checks.iter_mut().flat_map(|c| c.tests.iter_mut()) {
            if let Some(h) = &mut t.horizon {
                h.look(secs);
                for s in t.horizon_strata.values_mut() {
                    s.look(secs);
                }
            }
        }
        // min_duration counts from the first canary data; in the before/after design, from the
        // first requests of a moved workload (the controls on the new revision do not count).
        let canary_data = match self.settings.design {
            Design::Concurrent => self.checks.iter().any(|c| c.exposure[1] > 0.0),
            Design::BeforeAfter { .. } => moved_data,
        };
        if self.canary_since.is_none() && canary_data {
            self.canary_since = Some(input.elapsed);
        }
        // Most ticks end PENDING, and the evidence document (confidence bounds, fixed-horizon
        // statistics, reasons) costs a hundred times the decision. When bounds that need no evidence
        // prove that this tick cannot decide, the evidence is left for `refresh`, which whoever
        // reads it calls; a deciding tick always builds it, so a final verdict's evidence is
        // that of its own tick.
        // While soaking, every tick is judged in full: the soak's end decides GO.
        let shortcut = shortcut && self.certified_after.is_none();
        if let Some(why) = shortcut.then(|| self.surely_pending(specs)).flatten() {
            self.reason = why;
            return Verdict::Pending;
        }
        self.refresh_evidence(specs);
        let alpha = combined_alpha(self.settings.test_alpha(), specs);
        // Policy first: it is not statistics and is reported as such.
        if let Some(e) = self.evidence.iter().find(|e| e.policy.is_some()) {
            let why = format!(
                "{}: NO-GO by policy (zero_baseline_rule): {}",
                e.name,
                e.policy.as_deref().unwrap_or_default()
            );
            return self.decide(Verdict::NoGo, why);
        }
        // Veto checks: each alone at its share of alpha / 2 (union bound, see the README).
        let vetoes: Vec<String> = self
            .evidence
            .iter()
            .filter(|e| e.veto_threshold.is_some_and(|t| e.e_value >= t))
            .map(|e| {
                format!(
                    "{}: e-value {:.1} >= {:.0} (veto check); {}",
                    e.name,
                    e.e_value,
                    e.veto_threshold.unwrap_or_default(),
                    e.reason
                )
            })
            .collect();
        if !vetoes.is_empty() {
            return self.decide(Verdict::NoGo, vetoes.join("; "));
        }
        if self.ln_e >= (1.0 / alpha).ln() {
            // Name the checks that crossed their own share of the threshold; if none did, the
            // ones that contributed most to the combined e-value.
            let mut by_share: Vec<&CheckEvidence> = self.evidence.iter().collect();
            by_share.sort_by(|a, b| (b.weight * b.e_value).total_cmp(&(a.weight * a.e_value)));
            let crossed: Vec<&CheckEvidence> = by_share
                .iter()
                .copied()
                .filter(|e| e.e_value >= e.threshold)
                .collect();
            let what = if crossed.is_empty() {
                let combined = self.ln_e.exp();
                let parts: Vec<String> = by_share
                    .iter()
                    .take_while(|e| e.weight * e.e_value >= 0.1 * combined)
                    .map(|e| {
                        format!(
                            "{} ({:.0}% of the evidence): {}",
                            e.name,
                            100.0 * e.weight * e.e_value / combined,
                            e.reason
                        )
                    })
                    .collect();
                format!(
                    "no single check crossed its own threshold; together: {}",
                    parts.join("; ")
                )
            } else {
                crossed
                    .iter()
                    .map(|e| format!("{}: {}", e.name, e.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            return self.decide(
                Verdict::NoGo,
                format!(
                    "combined e-value {} >= {:.0} (alpha {alpha}{}); {what}",
                    fmt_e(self.ln_e),
                    1.0 / alpha,
                    match self.settings.design {
                        Design::Concurrent => String::new(),
                        Design::BeforeAfter { .. } => format!(
                            ": half of {}, the before/after intervals take the other half",
                            self.settings.alpha
                        ),
                    }
                ),
            );
        }
        let soak = self.settings.soak;
        match (self.go_blocker(specs), self.certified_after) {
            (None, certified) => {
                let summary: Vec<String> = self
                    .evidence
                    .iter()
                    .filter(|e| e.critical)
                    .map(|e| e.reason.clone())
                    .collect();
                let summary = summary.join("; ");
                if soak.is_zero() {
                    return self.decide(
                        Verdict::Go,
                        format!("every critical check certified: {summary}"),
                    );
                }
                let since = *self.certified_after.get_or_insert(self.elapsed);
                let soaked = self.elapsed.saturating_sub(since);
                if certified.is_some() && soaked >= soak {
                    return self.decide(
                        Verdict::Go,
                        format!(
                            "every critical check certified after {} and still after a soak of {}: {summary}",
                            fmt_secs(since),
                            humantime::format_duration(soak)
                        ),
                    );
                }
                self.reason = format!(
                    "soaking: every critical check certified after {}; GO after {} more of soak unless a check, a veto or a rollback trigger turns NO-GO: {summary}",
                    fmt_secs(since),
                    fmt_secs(soak - soaked)
                );
                Verdict::Pending
            }
            // Certified, then blocked (data went stale, a cohort lost its targets, the canary
            // rose above a ceiling): no GO on that; it waits, up to max_duration or the end of
            // the soak, whichever is later.
            (Some(why), Some(since)) => {
                if self.elapsed >= self.settings.max_duration.max(since + soak) {
                    return self.decide(
                        Verdict::Inconclusive,
                        format!(
                            "GO was certified after {} but no longer holds at the end of the soak: {why}",
                            fmt_secs(since)
                        ),
                    );
                }
                self.reason = format!(
                    "soaking: GO was certified after {}, but now {why}",
                    fmt_secs(since)
                );
                Verdict::Pending
            }
            (Some(why), None) if self.elapsed >= self.settings.max_duration => self.decide(
                Verdict::Inconclusive,
                format!(
                    "no decision after {}: {why}",
                    humantime::format_duration(self.settings.max_duration)
                ),
            ),
            (Some(why), None) => {
                self.reason = why;
                Verdict::Pending
            }
        }
    }

    /// When every critical check first certified GO, for an analysis with a soak (time since
    /// start); its GO comes `settings().soak` later.
    pub fn certified_after(&self) -> Option<Duration> {
        self.certified_after
    }

    /// Turn the verdict NO-GO now (a rollback trigger or the version skew guard fired). A final
    /// verdict stays, unless it was decided in this very tick (the trip wins over a GO reached
    /// on the same data).
    pub fn trip(&mut self, reason: String) -> Verdict {
        let decided_now = self.decided_after == Some(self.elapsed);
        if self.verdict == Verdict::NoGo || (self.verdict.is_final() && !decided_now) {
            return self.verdict;
        }
        self.decide(Verdict::NoGo, reason)
    }

    /// End INCONCLUSIVE now, with `reason` (a condition that no more data can fix, such as a
    /// selector that matches no target past its grace period). A final verdict stays.
    pub fn abandon(&mut self, reason: String) -> Verdict {
        if self.verdict.is_final() {
            return self.verdict;
        }
        self.decide(Verdict::Inconclusive, reason)
    }

    fn decide(&mut self, v: Verdict, reason: String) -> Verdict {
        self.verdict = v;
        self.reason = reason;
        self.decided_after = Some(self.elapsed);
        v
    }

    /// Whether the evidence, the combined e-value and the reason are those of the last tick
    /// (a tick that cannot decide leaves them to [`Self::refresh`]).
    pub fn is_current(&self) -> bool {
        self.bounds_tick == self.ticks
    }

    /// Bring the evidence, the combined e-value and a PENDING verdict's reason up to date
    /// with the last tick: what the API shows. Does nothing when they are current.
    pub fn refresh(&mut self, specs: &[&CheckSpec]) {
        if self.is_current() {
            return;
        }
        self.refresh_evidence(specs);
        if self.verdict == Verdict::Pending {
            if let Some(why) = self.go_blocker(specs) {
                self.reason = why;
            }
        }
    }

    /// ln of the combined e-value now, without building the evidence (what `/metrics`
    /// exports): the same number [`Self::refresh`] puts in `ln_e`.
    pub fn current_ln_e(&self, specs: &[&CheckSpec]) -> f64 {
        if self.is_current() {
            return self.ln_e;
        }
        let total_weight: f64 = specs.iter().map(|c| c.weight).sum();
        log_sum_exp(self.checks.iter().zip(specs).map(|(state, spec)| {
            let e = weighted_over_boundaries(state, spec, |t| test_e_value(t, spec));
            (spec.weight / total_weight).ln() + e.ln()
        }))
    }

    /// Each check's e-value now, without building the evidence (what the history records each
    /// tick): the numbers [`Self::refresh`] puts in the evidence.
    pub fn current_check_e_values(&self, specs: &[&CheckSpec]) -> Vec<f64> {
        self.checks
            .iter()
            .zip(specs)
            .map(|(state, spec)| {
                weighted_over_boundaries(state, spec, |t| test_e_value(t, spec)).min(f64::MAX)
            })
            .collect()
    }

    fn refresh_evidence(&mut self, specs: &[&CheckSpec]) {
        self.evidence = self.build_evidence(specs);
        // Weighted average of e-values: an e-process under any dependence (Vovk & Wang 2021).
        self.ln_e = log_sum_exp(self.evidence.iter().map(|e| e.weight.ln() + e.e_value.ln()));
        self.bounds_tick = self.ticks;
    }

    /// `Some(reason)` when this tick certainly ends PENDING, shown without building the
    /// evidence: no policy rule fires, upper brackets on the e-values (`ln_e_bounds`, no `exp`
    /// per grid point) keep every veto check and the combined e-value below their thresholds,
    /// the maximum duration is not reached, and something blocks a GO (data quality, exposure,
    /// duration, or a critical check whose certificate does not hold; certificates are
    /// decided exactly, see `RatioEProcess::certifies_not_worse`). `None` means the tick may
    /// decide, and the full path runs: the verdict is the same either way.
    fn surely_pending(&self, specs: &[&CheckSpec]) -> Option<String> {
        if self.elapsed >= self.settings.max_duration {
            return None;
        }
        let alpha = self.settings.test_alpha();
        let n_veto = specs.iter().filter(|c| c.veto).count();
        let total_weight: f64 = specs.iter().map(|c| c.weight).sum();
        let mut combined = 0.0;
        for (state, spec) in self.checks.iter().zip(specs) {
            let first = state.tests.first().map(|t| t.process.totals());
            if zero_baseline_violation(spec, first.as_ref(), self.settings.min_exposure).is_some() {
                return None;
            }
            let e = weighted_over_boundaries(state, spec, |t| test_e_value_upper(t, spec));
            if spec.veto && e >= 2.0 * n_veto as f64 / alpha {
                return None;
            }
            combined += spec.weight / total_weight * e;
        }
        // The brackets carry a rounding allowance already; this covers the different order of
        // the exact path's sums.
        if combined * (1.0 + 1e-9) >= 1.0 / combined_alpha(alpha, specs) {
            return None;
        }
        if let Some(why) = self.go_blocker_before_certificates(specs) {
            return Some(why);
        }
        self.checks
            .iter()
            .zip(specs)
            .filter(|(_, spec)| spec.critical)
            .find(|(state, spec)| {
                let observable: Vec<&TestState> = state
                    .tests
                    .iter()
                    .filter(|t| {
                        let tot = t.process.totals();
                        tot.exposure_a + tot.exposure_b > 0.0
                    })
                    .collect();
                observable.is_empty()
                    || observable
                        .iter()
                        .any(|t| certification(t, spec, alpha, self.settings.slo_go).is_none())
            })
            .map(|(_, spec)| format!("{} not yet certified", spec.name))
    }

    /// What stands between the current state and a GO.
    fn go_blocker(&self, specs: &[&CheckSpec]) -> Option<String> {
        if let Some(why) = self.go_blocker_before_certificates(specs) {
            return Some(why);
        }
        let uncertified: Vec<&CheckEvidence> = self
            .evidence
            .iter()
            .filter(|e| e.critical && e.status != CheckStatus::Certified)
            .collect();
        if let Some(e) = uncertified.first() {
            // Name the workloads that hold the certificate back, when the common ratio alone
            // would certify.
            let alpha = self.settings.test_alpha();
            let held: Vec<String> = specs
                .iter()
                .zip(&self.checks)
                .filter(|(spec, _)| spec.name == e.name)
                .flat_map(|(_, state)| state.tests.iter())
                .filter(|t| common_certified(t))
                .flat_map(uncertified_strata)
                .take(5)
                .map(|(n, p)| format!("{n} (ratio bound {:.2})", p.upper_bound(alpha)))
                .collect();
            let held_moved: Vec<String> = specs
                .iter()
                .zip(&self.checks)
                .filter(|(spec, _)| spec.name == e.name)
                .flat_map(|(_, state)| state.tests.iter())
                .filter_map(|t| t.before_after.as_deref())
                .flat_map(|ba| ba.uncertified())
                .take(5)
                .map(|(n, why)| format!("{n} ({why})"))
                .collect();
            if !held_moved.is_empty() {
                return Some(format!(
                    "{} not yet certified: every moved workload needs a pre-move window, and each holding {}% or more of the moved workloads' requests must be certified on its own; held back by: {}; {}",
                    e.name,
                    100.0 * MATERIAL_STRATUM_SHARE,
                    held_moved.join(", "),
                    e.reason
                ));
            }
            if !held.is_empty() {
                return Some(format!(
                    "{} not yet certified in every workload (each holding {}% or more of the canary's requests must be): {}; {}",
                    e.name,
                    100.0 * MATERIAL_STRATUM_SHARE,
                    held.join(", "),
                    e.reason
                ));
            }
            return Some(format!("{} not yet certified: {}", e.name, e.reason));
        }
        None
    }

    /// Data quality, exposure and duration: the GO blockers that need no evidence.
    fn go_blocker_before_certificates(&self, specs: &[&CheckSpec]) -> Option<String> {
        // Strata without a namespace cannot find the moving workloads: say so first.
        if let Design::BeforeAfter { moving } = &self.settings.design {
            if let Some(spec) = specs.iter().find(|s| {
                !s.strata.is_empty() && before_after::namespace_label(&s.strata).is_none()
            }) {
                return Some(format!(
                    "before/after: {}'s strata ({}) carry no namespace label ({}), so its workloads of {} cannot be found",
                    spec.name,
                    spec.strata.join(", "),
                    before_after::NAMESPACE_LABELS.join(", "),
                    moving.join(", ")
                ));
            }
        }
        // The before/after design before any move: say what it waits for (the canary
        // cohort is empty before a move, so data quality would speak first and say less).
        if self.canary_since.is_none() {
            if let Design::BeforeAfter { moving } = &self.settings.design {
                let pre = self
                    .checks
                    .iter()
                    .filter_map(|c| c.tests.first()?.before_after.as_deref())
                    .map(|ba| ba.pre.len())
                    .max()
                    .unwrap_or(0);
                return Some(format!(
                    "before/after: no workload of {} has moved to the new revision yet ({pre} workloads with a pre-move window so far)",
                    moving.join(", ")
                ));
            }
        }
        if let Some(q) = self.quality.blocks_go() {
            return Some(q);
        }
        for (state, spec) in self.checks.iter().zip(specs) {
            for (side, name) in [(0, "baseline"), (1, "canary")] {
                if state.exposure[side] < self.settings.min_exposure {
                    return Some(format!(
                        "{}: {name} has {:.0} requests, fewer than the {:.0} required",
                        spec.name, state.exposure[side], self.settings.min_exposure
                    ));
                }
            }
        }
        // Like for like: a stratified check whose cohorts share no workload compares nothing.
        for (state, spec) in self.checks.iter().zip(specs) {
            if spec.strata.is_empty() || state.strata.is_empty() {
                continue;
            }
            let compared = state.tests.first().map(|t| t.process.totals());
            let compared = compared.map_or(0.0, |t| t.exposure_a.min(t.exposure_b));
            if compared < self.settings.min_exposure {
                let only: Vec<&str> = state
                    .strata
                    .iter()
                    .filter(|(_, t)| t[3] > 0.0 && t[1] <= 0.0)
                    .map(|(n, _)| n.as_str())
                    .take(5)
                    .collect();
                return Some(format!(
                    "{}: only {compared:.0} requests in workloads that run in both cohorts, fewer than the {:.0} required; workloads only in the canary: {} (compare the same workloads on both revisions, or use a before/after comparison)",
                    spec.name,
                    self.settings.min_exposure,
                    if only.is_empty() { "none".to_string() } else { only.join(", ") }
                ));
            }
        }
        let Some(since) = self.canary_since else {
            return Some("no canary data yet".into());
        };
        // A wave is judged whole: while a workload of the moving namespaces still serves on the
        // old revision only, a GO would not cover it.
        for (state, spec) in self.checks.iter().zip(specs) {
            let Some(ba) = state.tests.first().and_then(|t| t.before_after.as_deref()) else {
                continue;
            };
            if !ba.unmoved.is_empty() {
                let names: Vec<&str> = ba.unmoved.iter().take(5).map(String::as_str).collect();
                return Some(format!(
                    "{}: GO held: {} workload(s) of the moving namespaces have not moved to the new revision yet: {}{}",
                    spec.name,
                    ba.unmoved.len(),
                    names.join(", "),
                    if ba.unmoved.len() > 5 { ", ..." } else { "" }
                ));
            }
        }
        let with_canary = self.elapsed.saturating_sub(since);
        if with_canary < self.settings.min_duration {
            return Some(format!(
                "minimum duration not reached ({} of {} since the first canary data)",
                humantime::format_duration(Duration::from_secs(with_canary.as_secs())),
                humantime::format_duration(self.settings.min_duration)
            ));
        }
        self.recent_rate_hold(specs)
    }

    /// GO is held while a check's canary rate over the recent window is above its SLO or its
    /// incident ceiling: a canary breaching its SLO is never certified, and a mesh-wide incident
    /// (both cohorts up together, so the ratio looks fine) holds the analysis PENDING.
    fn recent_rate_hold(&self, specs: &[&CheckSpec]) -> Option<String> {
        for (state, spec) in self.checks.iter().zip(specs) {
            // A histogram check's SLO is per boundary (the share above it) and naturally exceeded
            // at low boundaries: it only certifies there; its incident ceiling holds as for ratios.
            let slo = spec
                .slo
                .filter(|_| self.settings.slo_go && !spec.is_histogram());
            let limits = [(spec.incident_ceiling, "incident ceiling"), (slo, "SLO")];
            for t in &state.tests {
                let (events, exposure) = t.recent_canary();
                if exposure <= 0.0 {
                    continue;
                }
                let window_rate = events / exposure;
                // The last tick alone too, once it holds enough requests to expect 10 events at
                // the limit: an incident's onset must not certify before the window catches up.
                let last = t.recent.back().map_or((0.0, 0.0), |(_, x, e)| (*e, *x));
                for (limit, name) in limits {
                    let Some(limit) = limit else { continue };
                    let last_rate = (last.1 >= 10.0 / limit).then(|| last.0 / last.1);
                    let rate = match last_rate {
                        Some(r) if r > limit && r > window_rate => r,
                        _ if window_rate > limit => window_rate,
                        _ => continue,
                    };
                    let at = t
                        .boundary
                        .map(|b| format!(" above {b}{}", spec.boundary_unit()))
                        .unwrap_or_default();
                    let over = if rate == window_rate {
                        format!(
                            "over the last {}",
                            humantime::format_duration(RECENT_WINDOW)
                        )
                    } else {
                        "in the last scrape".to_string()
                    };
                    return Some(format!(
                        "{}: GO held: the canary's {}{at} rate {over} is {:.3}%, above its {name} {:.3}%",
                        spec.name,
                        spec.unit_label,
                        100.0 * rate,
                        100.0 * limit
                    ));
                }
            }
        }
        None
    }

    fn build_evidence(&self, specs: &[&CheckSpec]) -> Vec<CheckEvidence> {
        let alpha = self.settings.test_alpha();
        let alpha_combined = combined_alpha(alpha, specs);
        let n_veto = specs.iter().filter(|c| c.veto).count();
        let total_weight: f64 = specs.iter().map(|c| c.weight).sum();
        self.checks
            .iter()
            .zip(specs)
            .map(|(state, spec)| {
                let weight = spec.weight / total_weight;
                let bw = boundary_weights(spec, state.tests.len());
                let tests: Vec<TestEvidence> = state
                    .tests
                    .iter()
                    .zip(&bw)
                    .map(|(t, w)| {
                        let mut e = test_evidence(t, spec, alpha, self.settings.slo_go);
                        e.weight = spec.is_histogram().then_some(*w);
                        e
                    })
                    .collect();
                // Weighted average over boundaries: itself an e-process (statistics.md, section 2).
                let e_value = tests
                    .iter()
                    .zip(&bw)
                    .map(|(t, w)| w * t.e_value)
                    .sum::<f64>()
                    .min(f64::MAX);
                let observable: Vec<&TestEvidence> = tests
                    .iter()
                    .filter(|t| t.baseline.exposure + t.canary.exposure > 0.0)
                    .collect();
                let certified =
                    !observable.is_empty() && observable.iter().all(|t| t.certified_by.is_some());
                let threshold = 1.0 / (weight * alpha_combined);
                let veto_threshold = spec.veto.then(|| 2.0 * n_veto as f64 / alpha);
                let first = state.tests.first().map(|t| t.process.totals());
                let policy =
                    zero_baseline_violation(spec, first.as_ref(), self.settings.min_exposure);
                let regression = e_value >= threshold;
                let status = if policy.is_some() {
                    CheckStatus::Policy
                } else if regression || veto_threshold.is_some_and(|t| e_value >= t) {
                    CheckStatus::Regression
                } else if certified {
                    CheckStatus::Certified
                } else {
                    CheckStatus::Collecting
                };
                let before_after = state.tests.iter().any(|t| t.before_after.is_some());
                let reason = check_reason(spec, &tests, alpha, regression, certified, before_after);
                let resolution = match &spec.kind {
                    CheckKind::HistogramTail { boundaries } => {
                        Some(resolution_note(boundaries, &tests, state.unbucketed))
                    }
                    _ => None,
                };
                let (fixed_horizon, buckets) = fixed_horizon(state, spec, &tests, alpha);
                CheckEvidence {
                    name: spec.name.clone(),
                    kind: if spec.is_histogram() {
                        EvidenceKind::HistogramTail
                    } else {
                        EvidenceKind::Ratio
                    },
                    critical: spec.critical,
                    weight,
                    e_value,
                    threshold,
                    margin: spec.margin,
                    slo: spec.slo,
                    status,
                    reason,
                    tests,
                    resolution,
                    sided: if spec.two_sided {
                        Sided::Two
                    } else {
                        Sided::One
                    },
                    veto_threshold,
                    policy,
                    fixed_horizon,
                    buckets,
                    strata: strata_evidence(state, alpha),
                }
            })
            .collect()
    }
}

/// The distribution-free test of a `robust = true` check.
fn robust_test(alpha: f64, c: &CheckSpec) -> Option<RobustEProcess> {
    c.robust.then(|| {
        RobustEProcess::new(RobustParams {
            alpha,
            margin: c.margin,
        })
    })
}

/// The events and exposures per test of one set of slots: `(ea, eb, xa, xb)` per test.
fn test_counts(spec: &CheckSpec, slots: &[Vec<f64>; 2]) -> Vec<(f64, f64, f64, f64)> {
    let tests = match &spec.kind {
        CheckKind::Ratio { .. } | CheckKind::EventsRatio { .. } => 1,
        CheckKind::HistogramTail { boundaries } => boundaries.len(),
    };
    (0..tests)
        .map(|j| {
            let (ea, xa) = side_counts(spec, &slots[0], j);
            let (eb, xb) = side_counts(spec, &slots[1], j);
            (ea, eb, xa, xb)
        })
        .collect()
}

/// Test `j`'s events and exposure in one cohort's slots.
fn side_counts(spec: &CheckSpec, slots: &[f64], j: usize) -> (f64, f64) {
    let v = |slot: usize| slots.get(slot).copied().unwrap_or(0.0).max(0.0);
    match &spec.kind {
        // Clamp: a reset seen on one series and not its sibling must not make events exceed exposure.
        CheckKind::Ratio { .. } | CheckKind::EventsRatio { .. } => (v(1).min(v(0)), v(0)),
        CheckKind::HistogramTail { boundaries } => {
            let n = boundaries.len();
            let x = v(1 + n + j);
            ((x - v(1 + j)).clamp(0.0, x), x)
        }
    }
}

/// A stratified check's tick (statistics.md, section 8): each stratum's events feed the tests
/// only against the same stratum's, so the mixture's log-likelihoods sum per-stratum conditional
/// increments. Each increment has expectation <= 1 under H0 given the past whatever the
/// stratum's own rates (the one-stratum argument in `mixture.rs` holds per stratum), so the sum
/// is an e-process however rates differ between workloads. A stratum seen in one cohort only
/// says nothing about the ratio and adds nothing (it is tallied and reported). Exposure gates,
/// recent rates and the explanation's buckets use the pooled slots.
fn observe_strata(
    state: &mut CheckState,
    spec: &CheckSpec,
    pooled: &[Vec<f64>; 2],
    strata: &[Stratum],
    now: Duration,
    phi: &[f64],
) {
    let limits = spec.slo.is_some() || spec.incident_ceiling.is_some();
    let v = |side: usize, slot: usize| pooled[side].get(slot).copied().unwrap_or(0.0).max(0.0);
    state.exposure[0] += v(0, 0);
    state.exposure[1] += v(1, 0);
    for st in strata {
        let counts = test_counts(spec, &st.slots);
        if let Some(&(ea, eb, xa, xb)) = counts.first() {
            let tally = state.strata.entry(st.name.to_string()).or_default();
            tally[0] += ea;
            tally[1] += xa;
            tally[2] += eb;
            tally[3] += xb;
        }
        for ((t, (ea, eb, xa, xb)), &f) in state.tests.iter_mut().zip(counts).zip(phi) {
            if xa > 0.0 && xb > 0.0 {
                t.observe_scaled((ea, eb, xa, xb), f);
                let (sa, sb, sxa, sxb) = (ea / f, eb / f, xa / f, xb / f);
                let params = t.process.params().clone();
                t.strata
                    .entry(st.name.to_string())
                    .or_insert_with(|| RatioEProcess::new(params))
                    .observe(sa, sb, sxa, sxb);
                if let Some(h) = &t.horizon {
                    let params = h.params().clone();
                    t.horizon_strata
                        .entry(st.name.to_string())
                        .or_insert_with(|| SpendingGo::new(params))
                        .observe(sa, sb, sxa, sxb);
                }
                if let Some(r) = &mut t.robust {
                    r.observe(ea, eb, xa, xb);
                }
            }
        }
    }
    for (t, (_, eb, _, xb)) in state.tests.iter_mut().zip(test_counts(spec, pooled)) {
        t.remember(limits, now, xb, eb);
    }
    if spec.is_histogram() {
        observe_buckets(state, spec, pooled);
    }
}

/// A stratified check's tick in the before/after design (`before_after.rs` has the argument):
/// the strata of the moving namespaces against the pooled controls (every other stratum, on
/// either revision). Returns whether a moved workload had requests in this tick.
#[allow(clippy::too_many_arguments)] // the tick's parts, each used once
fn observe_before_after(
    state: &mut CheckState,
    spec: &CheckSpec,
    pooled: &[Vec<f64>; 2],
    strata: &[Stratum],
    now: Duration,
    moving: &[String],
    interval_alpha: f64,
    phi: &[f64],
) -> bool {
    let limits = spec.slo.is_some() || spec.incident_ceiling.is_some();
    let is_moving = |name: &str| {
        before_after::stratum_namespace(&spec.strata, name)
            .is_some_and(|ns| moving.iter().any(|m| m == ns))
    };
    let (movers, controls): (Vec<&Stratum>, Vec<&Stratum>) =
        strata.iter().partition(|st| is_moving(&st.name));
    let counts: Vec<Vec<(f64, f64, f64, f64)>> = movers
        .iter()
        .map(|st| test_counts(spec, &st.slots))
        .collect();
    let control_counts: Vec<Vec<(f64, f64, f64, f64)>> = controls
        .iter()
        .map(|st| test_counts(spec, &st.slots))
        .collect();
    // A workload moves with its first requests on the new revision.
    let ba_check = state.before_after.get_or_insert_with(Default::default);
    let first = state.tests.first().and_then(|t| t.before_after.as_deref());
    let moved_now: std::collections::BTreeSet<&str> = movers
        .iter()
        .filter(|st| st.slots[1].first().copied().unwrap_or(0.0) > 0.0)
        .filter(|st| first.is_none_or(|ba| !ba.moved.contains_key(&*st.name)))
        .map(|st| &*st.name)
        .collect();
    if ba_check.counted.is_none() && !moved_now.is_empty() {
        // The union bound's count, frozen before any bound is computed: the strata with a usable
        // pre-move window now.
        let counted = first
            .map(|ba| {
                ba.pre
                    .iter()
                    .filter(|(_, p)| {
                        let t = p.totals();
                        t.exposure_a > 0.0 && t.exposure_b > 0.0
                    })
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default();
        ba_check.counted = Some(counted);
    }
    let counted = ba_check.counted.clone().unwrap_or_default();
    let delta = interval_alpha / (counted.len().max(1) * state.tests.len().max(1)) as f64;
    let (mut x_controls, mut x_moved) = (0.0, 0.0);
    for (i, t) in state.tests.iter_mut().enumerate() {
        let (mut ec, mut xc) = (0.0, 0.0);
        for c in &control_counts {
            if let Some(&(ea, eb, xa, xb)) = c.get(i) {
                ec += ea + eb;
                xc += xa + xb;
            }
        }
        let movers: Vec<(&str, f64, f64, f64, f64)> = movers
            .iter()
            .zip(&counts)
            .filter_map(|(st, c)| {
                c.get(i)
                    .map(|&(ea, eb, xa, xb)| (&*st.name, ea, xa, eb, xb))
            })
            .collect();
        let ba = t.before_after.get_or_insert_with(Default::default);
        let (e, x) = before_after::observe_test(
            ba,
            &mut t.process,
            &counted,
            (ec, xc),
            &movers,
            &moved_now,
            delta,
            phi.get(i).copied().unwrap_or(1.0),
        );
        if x > 0.0 && xc > 0.0 {
            for (r, v) in t.raw.iter_mut().zip([ec, xc, e, x]) {
                *r += v;
            }
        }
        if i == 0 {
            x_controls = xc;
            x_moved = x;
        }
        t.remember(limits, now, x, e);
    }
    state.exposure[0] += x_controls;
    state.exposure[1] += x_moved;
    if spec.is_histogram() {
        observe_buckets(state, spec, pooled);
    }
    x_moved > 0.0
}

fn observe(
    state: &mut CheckState,
    spec: &CheckSpec,
    slots: &[Vec<f64>; 2],
    now: Duration,
    phi: &[f64],
) {
    let v = |side: usize, slot: usize| slots[side].get(slot).copied().unwrap_or(0.0).max(0.0);
    let limits = spec.slo.is_some() || spec.incident_ceiling.is_some();
    state.exposure[0] += v(0, 0);
    state.exposure[1] += v(1, 0);
    for ((t, (ea, eb, xa, xb)), &f) in state
        .tests
        .iter_mut()
        .zip(test_counts(spec, slots))
        .zip(phi)
    {
        t.observe_scaled((ea, eb, xa, xb), f);
        t.remember(limits, now, xb, eb);
        if let Some(r) = &mut t.robust {
            r.observe(ea, eb, xa, xb);
        }
    }
    if spec.is_histogram() {
        observe_buckets(state, spec, slots);
    }
}

/// Teach each test's dispersion factor this tick's pods (checks with `dispersion = "pods"`):
/// within one cohort and stratum, Pearson's statistic across the pods (`dispersion.rs`).
fn learn_dispersion(state: &mut CheckState, spec: &CheckSpec, groups: &[PodGroup]) {
    if spec.dispersion != DispersionMode::Pods {
        return;
    }
    for g in groups.iter().filter(|g| g.pods.len() >= 2 && g.side < 2) {
        for (j, t) in state.tests.iter_mut().enumerate() {
            t.dispersion
                .add(g.pods.iter().map(|slots| side_counts(spec, slots, j)));
        }
    }
}

/// Histogram checks: the tick's requests per bucket (cut at the tested boundaries), for the
/// explanation statistics.
fn observe_buckets(state: &mut CheckState, spec: &CheckSpec, slots: &[Vec<f64>; 2]) {
    let n = spec.boundaries().len();
    let v = |side: usize, slot: usize| slots[side].get(slot).copied().unwrap_or(0.0).max(0.0);
    for side in 0..2 {
        let total = v(side, 0);
        // Buckets only from ticks where every histogram had every tested boundary
        // (the count with b equals the count of all); otherwise they would not add up.
        let complete = (0..n).all(|i| (v(side, 1 + n + i) - total).abs() < 0.5);
        if !complete {
            state.unbucketed += total;
            continue;
        }
        if state.buckets[side].len() != n + 1 {
            state.buckets[side] = vec![0.0; n + 1];
        }
        let mut prev = 0.0;
        for i in 0..n {
            let below = v(side, 1 + i).clamp(prev, total);
            state.buckets[side][i] += below - prev;
            prev = below;
        }
        state.buckets[side][n] += total - prev;
    }
}

/// How a test is certified for GO, if it is.
/// The SLO certifies a ratio check only with `slo_go`, or where the baseline has no events yet
/// (nothing to compare with). A histogram check's `slo` is a per-boundary promise on the share of
/// slow requests and certifies its boundary as before: the high boundaries of a healthy mesh see a
/// handful of events an hour, which no relative test can certify (see docs/statistics.md).
fn certification(t: &TestState, spec: &CheckSpec, alpha: f64, slo_go: bool) -> Option<Certificate> {
    let p = &t.process;
    let tot = p.totals();
    if let Some(ba) = &t.before_after {
        // Before/after: its own GO side; the process' canary counts are scaled, so a histogram
        // boundary's SLO (a per-boundary promise, as in the concurrent design) reads the moved
        // workloads' own requests.
        if ba.certifies() {
            return Some(Certificate::Ratio);
        }
        let (events, exposure) = ba
            .moved
            .values()
            .fold((0.0, 0.0), |(e, x), m| (e + m.post[2], x + m.post[3]));
        let slo_holds = spec.is_histogram()
            && spec.slo.is_some_and(|slo| {
                exposure > 0.0 && rate_upper_bound(events, exposure, alpha) < slo
            });
        return slo_holds.then_some(Certificate::Slo);
    }
    if let Some(r) = &t.robust {
        // Robust: only its own distribution-free certificate (the SLO bound assumes Poisson).
        r.certifies_not_worse().then_some(Certificate::Ratio)
    } else if tot.exposure_a > 0.0
        && tot.exposure_b > 0.0
        && common_certified(t)
        && uncertified_strata(t).next().is_none()
    {
        Some(Certificate::Ratio)
    } else if (slo_go || tot.events_a == 0.0 || spec.is_histogram())
        && spec.slo.is_some_and(|slo| {
            tot.exposure_b > 0.0 && rate_upper_bound(tot.events_b, tot.exposure_b, alpha) < slo
        })
    {
        Some(Certificate::Slo)
    } else {
        None
    }
}

/// The e-value of a test that counts in its check's: the robust test's for `robust = true`,
/// the mean of the rise and drop tests for two-sided checks, the rise test's otherwise.
fn test_e_value(t: &TestState, spec: &CheckSpec) -> f64 {
    if let Some(r) = &t.robust {
        r.ln_e().exp()
    } else if spec.two_sided {
        t.process.ln_e_two_sided().exp()
    } else {
        t.process.ln_e().exp()
    }
}

/// A check's e-value from its tests' (or bounds on them): the average over boundaries with the
/// check's boundary weights, itself an e-process (statistics.md, section 2). The evidence sums
/// the same terms in the same order, so the results agree bit for bit.
fn weighted_over_boundaries(
    state: &CheckState,
    spec: &CheckSpec,
    e: impl Fn(&TestState) -> f64,
) -> f64 {
    let bw = boundary_weights(spec, state.tests.len());
    state.tests.iter().zip(&bw).map(|(t, w)| w * e(t)).sum()
}

/// An upper bound on the e-value `test_evidence` reports for the test, without `exp` per grid
/// point (robust tests: their exact e-value, which is O(1)).
fn test_e_value_upper(t: &TestState, spec: &CheckSpec) -> f64 {
    let p = &t.process;
    if let Some(r) = &t.robust {
        r.ln_e().exp()
    } else if spec.two_sided {
        0.5 * (p.ln_e_bounds().1.exp() + p.ln_e_drop_bounds().1.exp())
    } else {
        p.ln_e_bounds().1.exp()
    }
}

fn test_evidence(t: &TestState, spec: &CheckSpec, alpha: f64, slo_go: bool) -> TestEvidence {
    let p = &t.process;
    let tot = p.totals();
    let (upper, lower, canary_rate_upper_bound) = if t.robust.is_some() {
        (f64::INFINITY, 0.0, f64::INFINITY)
    } else {
        (
            p.upper_bound(alpha),
            p.lower_bound(alpha),
            rate_upper_bound(tot.events_b, tot.exposure_b, alpha),
        )
    };
    let robust = t.robust.as_ref().map(|r| {
        let (units, skipped, _) = r.unit_counts();
        RobustEvidence {
            statistic: format!(
                "r_canary / {:.2} - r_baseline per scrape",
                1.0 + r.params().margin
            ),
            e_value_not_worse: r.ln_e_not_worse().exp(),
            units,
            skipped_units: skipped,
            mean_difference: r.mean_difference(),
        }
    });
    let certified_by = certification(t, spec, alpha, slo_go);
    // Saturated: a tick of 10,000 requests all failing makes ln E a few thousand, beyond what a
    // double's exp holds, and an infinite e-value would be JSON null in the store and the API.
    let e_value = test_e_value(t, spec).min(f64::MAX);
    let e_value_drop =
        (t.robust.is_none() && spec.two_sided).then(|| p.ln_e_drop().exp().min(f64::MAX));
    let mut e = TestEvidence {
        boundary: t.boundary,
        baseline: Counts::new(t.raw[0], t.raw[1]),
        canary: Counts::new(t.raw[2], t.raw[3]),
        dispersion: (spec.dispersion == DispersionMode::Pods).then(|| t.dispersion.phi()),
        e_value,
        e_value_drop,
        weight: None,
        ratio_estimate: p.estimate(),
        ratio_lower_bound: lower,
        ratio_upper_bound: Some(upper).filter(|u| u.is_finite()),
        canary_rate_upper_bound,
        certified_by,
        robust,
    };
    if let Some(ba) = &t.before_after {
        // Before/after: the process' canary exposure is scaled by each workload's bound on its
        // inherent rate; people read the moved workloads' own requests, and bounds on the
        // after/before ratio relative to the controls' (upper from the GO side, lower from the
        // NO-GO side: both conservative).
        let (events, exposure) = ba
            .moved
            .values()
            .filter(|m| m.bounds.is_some())
            .fold((0.0, 0.0), |(e, x), m| (e + m.post[2], x + m.post[3]));
        e.canary = Counts::new(events, exposure);
        e.canary_rate_upper_bound = rate_upper_bound(events, exposure, alpha);
        e.ratio_upper_bound = ba
            .go
            .as_ref()
            .map(|g| g.upper_bound(alpha))
            .filter(|u| u.is_finite());
        // The moved workloads' after/before ratios, weighted by their requests since the move.
        e.ratio_estimate = ba
            .moved
            .values()
            .filter(|m| m.bounds.is_some() && m.post[3] > 0.0)
            .map(|m| (m.post[3], m.estimate()))
            .try_fold((0.0, 0.0), |(w, s), (x, r)| r.map(|r| (w + x, s + x * r)))
            .and_then(|(w, s)| (w > 0.0).then(|| s / w));
    }
    e
}

/// An e-value for people from its log: fixed point below a million, scientific above (an
/// e-value of 1e74 printed in full is 75 digits nobody reads).
/// A duration to the second, for reasons.
fn fmt_secs(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs()))
}

fn fmt_e(ln_e: f64) -> String {
    let e = ln_e.exp();
    if e < 1e6 {
        format!("{e:.1}")
    } else if e.is_finite() {
        format!("{e:.2e}")
    } else {
        format!("e^{ln_e:.0}")
    }
}

fn pct(x: Option<f64>) -> String {
    match x {
        Some(r) => format!("{:.2}%", r * 100.0),
        None => "n/a".into(),
    }
}

fn check_reason(
    spec: &CheckSpec,
    tests: &[TestEvidence],
    alpha: f64,
    regression: bool,
    certified: bool,
    before_after: bool,
) -> String {
    // The before/after design compares the moved workloads (after their moves) with the
    // controls, and its ratio is their after/before ratio relative to the controls'.
    let (cn, bn, rn) = if before_after {
        (
            "moved workloads'",
            "controls",
            "after/before ratio vs the controls",
        )
    } else {
        ("canary", "baseline", "ratio")
    };
    let conf = percent(1.0 - alpha);
    let what = |t: &TestEvidence| match t.boundary {
        Some(b) => format!("share > {b}{}", spec.boundary_unit()),
        None => format!("{} rate", spec.unit_label),
    };
    if tests.iter().any(|t| t.robust.is_some()) {
        return robust_reason(spec, tests, alpha, regression, certified, &what);
    }
    if regression {
        // Name the test with the strongest evidence.
        let t = tests
            .iter()
            .max_by(|a, b| a.e_value.total_cmp(&b.e_value))
            .expect("a check has tests");
        return format!(
            "{cn} {} {} vs {bn} {}, {rn} >= {:.2} with {conf} confidence",
            what(t),
            pct(t.canary.rate),
            pct(t.baseline.rate),
            t.ratio_lower_bound
        );
    }
    if certified {
        let parts: Vec<String> = tests
            .iter()
            .filter(|t| t.certified_by.is_some())
            .map(|t| match t.certified_by {
                Some(Certificate::Slo) => format!(
                    "GO by SLO: {cn} {} <= {} with {conf} confidence (SLO {}); relative comparison not certified: {cn} {} vs {bn} {}",
                    what(t),
                    pct(Some(t.canary_rate_upper_bound)),
                    pct(spec.slo),
                    pct(t.canary.rate),
                    pct(t.baseline.rate)
                ),
                _ => format!(
                    "{cn} {} {} vs {bn} {}, {rn} <= {:.2} with {conf} confidence (limit {:.2})",
                    what(t),
                    pct(t.canary.rate),
                    pct(t.baseline.rate),
                    t.ratio_upper_bound.unwrap_or(f64::INFINITY),
                    1.0 + spec.margin
                ),
            })
            .collect();
        return parts.join("; ");
    }
    let t = tests
        .iter()
        .find(|t| t.certified_by.is_none() && t.baseline.exposure + t.canary.exposure > 0.0)
        .or(tests.first())
        .expect("a check has tests");
    if t.baseline.exposure == 0.0 && t.canary.exposure == 0.0 {
        return "no data yet".into();
    }
    let upper = t
        .ratio_upper_bound
        .map_or("unbounded".to_owned(), |u| format!("{u:.2}"));
    format!(
        "{cn} {} {} vs {bn} {} ({:.0} vs {:.0} {}), {rn} bound {:.2}..{upper}, not yet below {:.2}",
        what(t),
        pct(t.canary.rate),
        pct(t.baseline.rate),
        t.canary.events,
        t.baseline.events,
        spec.unit_label,
        t.ratio_lower_bound,
        1.0 + spec.margin
    )
}

/// `check_reason` for a `robust = true` check: what its own test says, on its own scale.
fn robust_reason(
    spec: &CheckSpec,
    tests: &[TestEvidence],
    alpha: f64,
    regression: bool,
    certified: bool,
    what: &dyn Fn(&TestEvidence) -> String,
) -> String {
    let level = 1.0 / alpha;
    let pick = |t: &&TestEvidence| t.robust.is_some();
    let t = if regression {
        tests
            .iter()
            .filter(pick)
            .max_by(|a, b| a.e_value.total_cmp(&b.e_value))
    } else {
        tests
            .iter()
            .filter(pick)
            .find(|t| t.certified_by.is_none())
            .or(tests.iter().find(pick))
    }
    .expect("a robust check has robust tests");
    let r = t.robust.as_ref().expect("picked");
    let rates = format!(
        "canary {} {} vs baseline {}",
        what(t),
        pct(t.canary.rate),
        pct(t.baseline.rate)
    );
    if regression {
        format!(
            "{rates}, robust test (distribution-free, {} scrapes): e-value {:.1} >= {level:.0} against canary <= {:.2}x baseline",
            r.units,
            t.e_value,
            1.0 + spec.margin
        )
    } else if certified {
        format!(
            "{rates}, robust test (distribution-free, {} scrapes): GO e-value {:.1} >= {level:.0}, canary not above {:.2}x baseline",
            r.units,
            r.e_value_not_worse,
            1.0 + spec.margin
        )
    } else if r.units == 0 {
        "no data yet".into()
    } else {
        format!(
            "{rates}, robust test (distribution-free, {} scrapes): GO e-value {:.2} and NO-GO e-value {:.2}, each needs {level:.0}",
            r.units, r.e_value_not_worse, t.e_value
        )
    }
}

fn resolution_note(boundaries: &[f64], tests: &[TestEvidence], unbucketed: f64) -> String {
    let missing: Vec<String> = tests
        .iter()
        .filter(|t| t.baseline.exposure + t.canary.exposure == 0.0)
        .filter_map(|t| t.boundary.map(|b| b.to_string()))
        .collect();
    let seen: Vec<f64> = tests
        .iter()
        .filter(|t| t.baseline.exposure + t.canary.exposure > 0.0)
        .filter_map(|t| t.boundary)
        .collect();
    let bounds: Vec<String> = boundaries.iter().map(|b| b.to_string()).collect();
    let mut cells: Vec<String> = Vec::new();
    let mut lo = 0.0;
    for b in seen.iter().copied().chain([f64::INFINITY]) {
        cells.push(if b.is_finite() {
            format!("({lo}, {b}]")
        } else {
            format!("({lo}, +Inf)")
        });
        lo = b;
    }
    let mut s = format!(
        "tested at bucket bounds [{}]; bounds with data: [{}]; a shift inside {} is invisible; no quantile is interpolated",
        bounds.join(", "),
        seen.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", "),
        cells.join(" or ")
    );
    if unbucketed > 0.0 {
        s.push_str(&format!(
            "; {unbucketed:.0} requests from histograms lacking a tested bound are left out of the per-bucket counts"
        ));
    }
    if !missing.is_empty() {
        s.push_str(&format!(
            "; no histogram has the bound(s) {} (left out)",
            missing.join(", ")
        ));
    }
    s
}

/// The level of the combined test: alpha, or alpha / 2 when veto checks take the other half.
fn combined_alpha(alpha: f64, specs: &[&CheckSpec]) -> f64 {
    if specs.iter().any(|c| c.veto) {
        alpha / 2.0
    } else {
        alpha
    }
}

/// Normalised boundary weights of a check with `n` tests (equal when none are configured).
fn boundary_weights(spec: &CheckSpec, n: usize) -> Vec<f64> {
    if spec.boundary_weights.len() == n && n > 0 {
        let sum: f64 = spec.boundary_weights.iter().sum();
        spec.boundary_weights.iter().map(|w| w / sum).collect()
    } else {
        vec![1.0 / n.max(1) as f64; n]
    }
}

/// The zero-baseline rule: canary events while the baseline, with enough requests, has none.
fn zero_baseline_violation(
    spec: &CheckSpec,
    first_test: Option<&Totals>,
    min_exposure: f64,
) -> Option<String> {
    if !spec.zero_baseline_rule {
        return None;
    }
    let t = first_test?;
    (t.events_a == 0.0 && t.exposure_a >= min_exposure && t.events_b > 0.0).then(|| {
        format!(
            "{:.0} canary {} while the baseline had none in {:.0} (policy, not a statistical test)",
            t.events_b, spec.unit_label, t.exposure_a
        )
    })
}

/// Fixed-horizon statistics and, for histograms, the per-bucket evidence.
fn fixed_horizon(
    state: &CheckState,
    spec: &CheckSpec,
    tests: &[TestEvidence],
    alpha: f64,
) -> (FixedHorizon, Option<BucketEvidence>) {
    let mut f = FixedHorizon::default();
    match &spec.kind {
        CheckKind::HistogramTail { boundaries } => {
            let [a, b] = &state.buckets;
            if let Some(mw) = mann_whitney_binned(a, b) {
                f.mann_whitney_z = Some(mw.z);
                f.mann_whitney_p = Some(mw.p_greater);
                f.cles = Some(mw.cles);
            }
            f.chi_square_p = chi_square_2xk(a, b).map(|c| c.p);
            let le = boundaries
                .iter()
                .map(|&x| Some(x))
                .chain([None])
                .collect::<Vec<_>>();
            let distribution_ln_e = distribution_ln_e(a, b, spec.target_events, alpha);
            let buckets = BucketEvidence {
                le,
                baseline: a.clone(),
                canary: b.clone(),
                distribution_ln_e,
            };
            (f, Some(buckets))
        }
        _ => {
            if let Some(t) = tests.first() {
                let (xa, na, xb, nb) = (
                    t.baseline.events,
                    t.baseline.exposure,
                    t.canary.events,
                    t.canary.exposure,
                );
                if let Some(z) = two_proportion_z(xa, na, xb, nb) {
                    f.two_proportion_z = Some(z.z);
                    f.two_proportion_p = Some(z.p_greater);
                }
                let u = |x: f64| x.round() as u64;
                if let Some(fe) = fisher_exact(u(xa), u(na), u(xb), u(nb)) {
                    f.fisher_p_greater = Some(fe.p_greater);
                    f.fisher_p_two_sided = Some(fe.p_two_sided);
                }
            }
            (f, None)
        }
    }
}

/// ln of the per-bucket product of two-sided Beta-binomial e-values: in each bucket, the split
/// of its requests between the cohorts is tested against the cohorts' share of all requests
/// (equal distributions give every bucket the same split). k is chosen per bucket from the
/// check's `target_events` at that share. Disjoint buckets are independent Poisson streams, so
/// under a fixed share the product is an e-value; with a moving share it is an approximation,
/// which is why the judge reports it and does not count it.
pub fn distribution_ln_e(baseline: &[f64], canary: &[f64], target_events: f64, alpha: f64) -> f64 {
    let (na, nb): (f64, f64) = (baseline.iter().sum(), canary.iter().sum());
    if na <= 0.0 || nb <= 0.0 || baseline.len() != canary.len() {
        return 0.0;
    }
    let rho = nb / (na + nb);
    let k = choose_k(alpha, rho, target_events, false);
    baseline
        .iter()
        .zip(canary)
        .map(|(&a, &b)| {
            if a + b > 0.0 {
                ln_e_two_sided(a, b, rho, k)
            } else {
                0.0
            }
        })
        .sum()
}

/// ln(sum exp(x_i)), stable.
pub fn log_sum_exp(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    if m == f64::INFINITY {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// A confidence level for people: "95%", "97.5%", "99.95%" (as many decimals as it has, up to
/// three; never rounded up to a level it does not reach).
fn percent(level: f64) -> String {
    let p = level * 100.0;
    for d in 0..3 {
        let scale = 10f64.powi(d);
        if ((p * scale).round() - p * scale).abs() < 1e-6 {
            return format!("{:.*}%", d as usize, p);
        }
    }
    format!("{:.3}%", (p * 1000.0).floor() / 1000.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn confidence_levels_are_never_rounded_up() {
        assert_eq!(super::percent(0.95), "95%");
        assert_eq!(super::percent(0.975), "97.5%");
        assert_eq!(super::percent(0.9995), "99.95%");
        assert_eq!(super::percent(1.0 - 0.05 / 7.0), "99.285%");
    }

    use super::*;
    use crate::judge::Catalog;

    /// These tests were written for SLO certificates: they opt in.
    const SLO_GO: bool = true;

    fn settings() -> Settings {
        Settings {
            alpha: 0.05,
            min_duration: Duration::from_secs(60),
            max_duration: Duration::from_secs(600),
            min_exposure: 100.0,
            slo_go: SLO_GO,
            go_certificate: Default::default(),
            design: Design::default(),
            soak: Duration::ZERO,
        }
    }

    fn good_quality() -> DataQuality {
        let q = CohortQuality {
            targets: 3,
            fresh: 3,
            ..Default::default()
        };
        DataQuality {
            baseline: q.clone(),
            canary: q,
            overlapping_series: 0,
            ..Default::default()
        }
    }

    /// Feed `ticks` ticks of error-rate data: requests per cohort per tick and error rates.
    fn run(
        a: &mut Analysis,
        spec: &CheckSpec,
        ticks: u64,
        n: f64,
        pa: f64,
        pb: f64,
        quality: DataQuality,
    ) -> Verdict {
        let mut v = Verdict::Pending;
        for i in 0..ticks {
            let slots = [[vec![n, (n * pa).round()], vec![n, (n * pb).round()]]];
            v = a.tick(
                &[spec],
                TickInput {
                    pods: &[],
                    strata: &[],
                    slots: &slots,
                    quality: quality.clone(),
                    elapsed: Duration::from_secs(15 * (i + 1)),
                },
            );
            if v.is_final() {
                break;
            }
        }
        v
    }

    #[test]
    fn clear_regression_is_no_go_with_a_reason() {
        let cat = Catalog::builtin();
        let spec = cat.get("error-rate").unwrap();
        let mut a = Analysis::new(settings(), &[spec]);
        let v = run(&mut a, spec, 40, 1000.0, 0.001, 0.01, good_quality());
        assert_eq!(v, Verdict::NoGo);
        assert!(a.reason.contains("error-rate"), "{}", a.reason);
        assert!(a.evidence[0].tests[0].ratio_lower_bound > 1.25);
        // The deciding tick's evidence carries fresh bounds.
        assert_eq!(a.bounds_tick, a.ticks);
        assert!(a.decided_after.unwrap() < Duration::from_secs(300));
    }

    #[test]
    fn equal_rates_go_only_after_min_duration() {
        let cat = Catalog::builtin();
        let spec = cat.get("error-rate").unwrap();
        let mut a = Analysis::new(settings(), &[spec]);
        let v = run(&mut a, spec, 40, 20_000.0, 0.001, 0.001, good_quality());
        assert_eq!(v, Verdict::Go, "{}", a.reason);
        assert!(a.decided_after.unwrap() >= Duration::from_secs(60));
        assert_eq!(a.bounds_tick, a.ticks);
        let fresh = a.evidence[0].tests[0].ratio_upper_bound.unwrap();
        assert_eq!(
            Some(fresh),
            Some(a.checks[0].tests[0].process.upper_bound(0.05)).filter(|u| u.is_finite())
        );
    }

    /// One tick of error-rate data at `elapsed` seconds.
    fn tick_at(a: &mut Analysis, spec: &CheckSpec, s: u64, n: f64, pa: f64, pb: f64) -> Verdict {
        let slots = [[vec![n, (n * pa).round()], vec![n, (n * pb).round()]]];
        a.tick(
            &[spec],
            TickInput {
                pods: &[],
                strata: &[],
                slots: &slots,
                quality: good_quality(),
                elapsed: Duration::from_secs(s),
            },
        )
    }

    /// Tick equal rates every 15 s until every critical check certifies GO (an analysis with a
    /// soak, which stays PENDING meanwhile); the time reached, in seconds.
    fn until_certified(a: &mut Analysis, spec: &CheckSpec) -> u64 {
        let mut t = 0;
        while a.certified_after().is_none() {
            t += 15;
            assert!(t < 600, "never certified: {}", a.reason);
            assert_eq!(
                tick_at(a, spec, t, 20_000.0, 0.001, 0.001),
                Verdict::Pending
            );
        }
        t
    }

    #[test]
    fn a_soak_holds_go_until_it_ends() {
        let cat = Catalog::builtin();
        let spec = cat.get("error-rate").unwrap();
        let soak = Duration::from_secs(120);
        let mut a = Analysis::new(Settings { soak, ..settings() }, &[spec]);
        let mut t = until_certified(&mut a, spec);
        let since = a.certified_after().unwrap();
        assert!(since >= Duration::from_secs(60), "{since:?}");
        assert!(a.reason.starts_with("soaking: "), "{}", a.reason);
        assert!(a.reason.contains("GO after 2m"), "{}", a.reason);
        let mut v = Verdict::Pending;
        while !v.is_final() {
            t += 15;
            v = tick_at(&mut a, spec, t, 20_000.0, 0.001, 0.001);
        }
        assert_eq!(v, Verdict::Go, "{}", a.reason);
        // GO exactly at the first tick a whole soak after the certificate.
        assert_eq!(a.decided_after, Some(since + soak));
        assert!(
            a.reason.contains("still after a soak of 2m"),
            "{}",
            a.reason
        );
        assert_eq!(
            a.verdict_doc("x").certified_after_seconds,
            Some(since.as_secs_f64())
        );
        // Without a soak, the same data is GO at the certificate.
        let mut b = Analysis::new(settings(), &[spec]);
        let mut t = 0;
        while !tick_at(&mut b, spec, t + 15, 20_000.0, 0.001, 0.001).is_final() {
            t += 15;
        }
        assert_eq!((b.verdict, b.decided_after), (Verdict::Go, Some(since)));
        assert_eq!(b.certified_after(), None);
    }

    #[test]
    fn a_regression_during_the_soak_is_no_go() {
        let cat = Catalog::builtin();
        let spec = cat.get("error-rate").unwrap();
        let soak = Duration::from_secs(1800);
        let mut a = Analysis::new(Settings { soak, ..settings() }, &[spec]);
        let mut t = until_certified(&mut a, spec);
        let since = a.certified_after().unwrap();
        // The canary turns 5x worse after the certificate: the NO-GO side still runs.
        let mut v = Verdict::Pending;
        while !v.is_final() {
            t += 15;
            v = tick_at(&mut a, spec, t, 20_000.0, 0.001, 0.005);
        }
        assert_eq!(v, Verdict::NoGo, "{}", a.reason);
        assert!(a.decided_after.unwrap() < since + soak);
        assert!(a.reason.contains("error-rate"), "{}", a.reason);
        // A rollback trigger or the skew guard during the soak trips it too.
        let mut b = Analysis::new(Settings { soak, ..settings() }, &[spec]);
        until_certified(&mut b, spec);
        assert_eq!(b.trip("rollback trigger 5xx".into()), Verdict::NoGo);
        assert_eq!(b.reason, "rollback trigger 5xx");
        // A final verdict after the soak stays final.
        let mut c = Analysis::new(
            Settings {
                soak: Duration::from_secs(30),
                ..settings()
            },
            &[spec],
        );
        let mut t = 0;
        while !c.verdict.is_final() {
            t += 15;
            tick_at(&mut c, spec, t, 20_000.0, 0.001, 0.001);
        }
        assert_eq!(c.verdict, Verdict::Go);
        assert_eq!(
            tick_at(&mut c, spec, t + 15, 20_000.0, 0.001, 0.05),
            Verdict::Go
        );
    }

    #[test]
    fn a_certificate_lost_during_the_soak_is_not_go() {
        let cat = Catalog::builtin();
        let spec = cat.get("error-rate").unwrap();
        let soak = Duration::from_secs(60);
        let settings = Settings {
            soak,
            max_duration: Duration::from_secs(300),
            ..settings()
        };
        let mut a = Analysis::new(settings, &[spec]);
        let mut t = until_certified(&mut a, spec);
        // Every canary target goes stale: no GO at the end of the soak on that.
        let mut stale = good_quality();
        stale.canary.fresh = 0;
        stale.canary.stale = 3;
        let mut v = Verdict::Pending;
        while !v.is_final() {
            t += 15;
            v = a.tick(
                &[spec],
                TickInput {
                    pods: &[],
                    strata: &[],
                    slots: &[[vec![0.0, 0.0], vec![0.0, 0.0]]],
                    quality: stale.clone(),
                    elapsed: Duration::from_secs(t),
                },
            );
            if !v.is_final() {
                assert!(
                    a.reason.starts_with("soaking: GO was certified"),
                    "{}",
                    a.reason
                );
            }
        }
        assert_eq!(v, Verdict::Inconclusive, "{}", a.reason);
        assert_eq!(a.decided_after, Some(Duration::from_secs(300)));
        assert!(a.reason.contains("no longer holds"), "{}", a.reason);
    }

    #[test]
    fn quality_thresholds_name_the_blocking_one() {
        let mut q = good_quality();
        q.canary = CohortQuality {
            targets: 4,
            fresh: 3,
            stale: 1,
            unreachable: 1,
            resets: 0,
            quarantined: 0,
            quarantine: None,
        };
        // Default: any missing target blocks.
        let b = q.block().unwrap();
        assert_eq!(
            (b.threshold.as_str(), b.cohort.as_str()),
            ("max_stale_fraction", "canary")
        );
        assert_eq!(b.value, 2.0 / 5.0);
        // 2 of 5 missing is 40%: allowed at 0.4, not at 0.39.
        q.thresholds.max_stale_fraction = 0.4;
        assert_eq!(q.block(), None);
        q.thresholds.max_stale_fraction = 0.39;
        assert_eq!(q.block().unwrap().threshold, "max_stale_fraction");
        // Fresh targets are checked first.
        q.thresholds.max_stale_fraction = 0.5;
        q.thresholds.min_fresh_targets = 4;
        let b = q.block().unwrap();
        assert_eq!(
            (b.threshold.as_str(), b.value, b.limit),
            ("min_fresh_targets", 3.0, 4.0)
        );
        // min_fresh_targets 0 (refused by config) still means at least one.
        q.canary.fresh = 0;
        q.thresholds.min_fresh_targets = 0;
        assert!(q.blocks_go().unwrap().contains("no freshly scraped"));
    }

    #[test]
    fn never_go_without_data_or_with_stale_targets() {
        let cat = Catalog::builtin();
        let spec = cat.get("error-rate").unwrap();
        let mut a = Analysis::new(settings(), &[spec]);
        let v = run(&mut a, spec, 40, 0.0, 0.0, 0.0, good_quality());
        assert_eq!(v, Verdict::Inconclusive);
        assert!(a.reason.contains("requests"), "{}", a.reason);

        let mut stale = good_quality();
        stale.canary.stale = 1;
        let mut a = Analysis::new(settings(), &[spec]);
        assert_eq!(
            run(&mut a, spec, 39, 20_000.0, 0.001, 0.001, stale),
            Verdict::Pending
        );
        assert!(a.reason.contains("stale"), "{}", a.reason);

        let mut empty = good_quality();
        empty.canary.fresh = 0;
        let mut a = Analysis::new(settings(), &[spec]);
        assert_eq!(
            run(&mut a, spec, 39, 20_000.0, 0.001, 0.001, empty),
            Verdict::Pending
        );
        assert!(a.reason.contains("no freshly scraped"), "{}", a.reason);
    }

    #[test]
    fn final_verdict_does_not_change_and_state_round_trips() {
        let cat = Catalog::builtin();
        let spec = cat.get("error-rate").unwrap();
        let mut a = Analysis::new(settings(), &[spec]);
        assert_eq!(
            run(&mut a, spec, 40, 1000.0, 0.001, 0.02, good_quality()),
            Verdict::NoGo
        );
        let json = serde_json::to_string(&a).unwrap();
        let back: Analysis = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        assert_eq!(
            run(&mut a, spec, 40, 20_000.0, 0.001, 0.001, good_quality()),
            Verdict::NoGo
        );
    }

    #[test]
    fn latency_tail_sees_a_shift_and_reports_resolution() {
        let cat = Catalog::builtin();
        let spec = cat.get("latency-tail").unwrap();
        let mut a = Analysis::new(settings(), &[spec]);
        let n = spec.boundaries().len();
        let mut v = Verdict::Pending;
        for i in 0..40u64 {
            // 1000 requests per tick; baseline 5% above the first bound, canary 10%; bound 1000 absent.
            let mut slots = [vec![0.0; 1 + 2 * n], vec![0.0; 1 + 2 * n]];
            for (side, slow) in [(0, 50.0), (1, 100.0)] {
                slots[side][0] = 1000.0;
                for b in 0..n - 1 {
                    slots[side][1 + b] = 1000.0 - slow / (b as f64 + 1.0);
                    slots[side][1 + n + b] = 1000.0;
                }
            }
            v = a.tick(
                &[spec],
                TickInput {
                    pods: &[],
                    strata: &[],
                    slots: &[slots],
                    quality: good_quality(),
                    elapsed: Duration::from_secs(15 * (i + 1)),
                },
            );
            if v.is_final() {
                break;
            }
        }
        assert_eq!(v, Verdict::NoGo);
        let res = a.evidence[0].resolution.as_deref().unwrap();
        assert!(res.contains("no histogram has the bound(s) 1000"), "{res}");
    }

    fn ratio_spec(extra: &str) -> CheckSpec {
        CheckSpec::from_toml(
            &format!(
                "name='r'\nkind='ratio'\nmetric='m'\nbad='{{code=\"5\"}}'\ntarget_events=50\n{extra}"
            ),
            "r.toml",
        )
        .unwrap()
    }

    #[test]
    fn two_sided_check_flags_a_drop_one_sided_does_not() {
        let one = ratio_spec("");
        let two = ratio_spec("sided='two'");
        let mut a1 = Analysis::new(settings(), &[&one]);
        let mut a2 = Analysis::new(settings(), &[&two]);
        // Canary rate falls to a fifth of the baseline's (e.g. a success counter that drops).
        assert_eq!(
            run(&mut a1, &one, 40, 10_000.0, 0.01, 0.002, good_quality()),
            Verdict::Go
        );
        assert_eq!(
            run(&mut a2, &two, 40, 10_000.0, 0.01, 0.002, good_quality()),
            Verdict::NoGo
        );
        let e = &a2.evidence[0];
        assert_eq!(e.sided, Sided::Two);
        assert!(e.tests[0].e_value_drop.unwrap() >= 2.0 * 20.0 - 1e-9 || e.e_value >= 20.0);
        // And both see a rise.
        let mut a3 = Analysis::new(settings(), &[&two]);
        assert_eq!(
            run(&mut a3, &two, 40, 1000.0, 0.001, 0.02, good_quality()),
            Verdict::NoGo
        );
    }

    #[test]
    fn zero_baseline_rule_is_a_policy_no_go() {
        let spec = ratio_spec("zero_baseline_rule=true");
        let mut a = Analysis::new(settings(), &[&spec]);
        // Tick 1: too little baseline exposure (50 < 100): the rule waits.
        let tick = |a: &mut Analysis, n: f64, eb: f64, i: u64| {
            let slots = [[vec![n, 0.0], vec![n, eb]]];
            a.tick(
                &[&spec],
                TickInput {
                    pods: &[],
                    strata: &[],
                    slots: &slots,
                    quality: good_quality(),
                    elapsed: Duration::from_secs(15 * i),
                },
            )
        };
        assert_eq!(tick(&mut a, 50.0, 1.0, 1), Verdict::Pending);
        assert_eq!(tick(&mut a, 60.0, 0.0, 2), Verdict::NoGo);
        assert!(a.reason.contains("by policy"), "{}", a.reason);
        assert_eq!(a.evidence[0].status, CheckStatus::Policy);
        // The statistics alone are far from a NO-GO on one event.
        assert!(a.evidence[0].e_value < 20.0);
        // Without the rule the same data stay pending.
        let plain = ratio_spec("");
        let mut b = Analysis::new(settings(), &[&plain]);
        let slots = [[vec![110.0, 0.0], vec![110.0, 1.0]]];
        let v = b.tick(
            &[&plain],
            TickInput {
                pods: &[],
                strata: &[],
                slots: &slots,
                quality: good_quality(),
                elapsed: Duration::from_secs(15),
            },
        );
        assert_eq!(v, Verdict::Pending);
    }

    #[test]
    fn veto_check_decides_alone_at_its_share_of_alpha() {
        let veto = ratio_spec("veto=true\nweight=1");
        let mut other = ratio_spec("weight=9");
        other.name = "other".into();
        let specs = [&veto, &other];
        let mut a = Analysis::new(settings(), &specs);
        let mut v = Verdict::Pending;
        for i in 0..40u64 {
            let slots = [
                [vec![1000.0, 1.0], vec![1000.0, 5.0]],
                [vec![1000.0, 1.0], vec![1000.0, 1.0]],
            ];
            v = a.tick(
                &specs,
                TickInput {
                    pods: &[],
                    strata: &[],
                    slots: &slots,
                    quality: good_quality(),
                    elapsed: Duration::from_secs(15 * (i + 1)),
                },
            );
            if v.is_final() {
                break;
            }
        }
        assert_eq!(v, Verdict::NoGo);
        assert!(a.reason.contains("veto check"), "{}", a.reason);
        let e = &a.evidence[0];
        assert_eq!(e.veto_threshold, Some(2.0 / 0.05));
        // The combined test runs at alpha / 2: its per-check threshold doubles.
        assert!(
            (e.threshold - 2.0 / (0.1 * 0.05)).abs() < 1e-9,
            "{}",
            e.threshold
        );
        // The veto fired below the combined threshold (weight 0.1 would need 400).
        assert!(a.ln_e.exp() < 40.0, "{}", a.ln_e.exp());
    }

    #[test]
    fn evidence_has_fixed_horizon_statistics_and_buckets() {
        let cat = Catalog::builtin();
        let ratio = cat.get("error-rate").unwrap();
        let mut a = Analysis::new(settings(), &[ratio]);
        run(&mut a, ratio, 3, 1000.0, 0.001, 0.004, good_quality());
        // Three PENDING ticks leave the evidence to whoever reads it.
        assert!(!a.is_current());
        a.refresh(&[ratio]);
        assert!(a.is_current());
        let f = &a.evidence[0].fixed_horizon;
        // 3 vs 12 in 3000 each: scipy fisher_exact([[3,2997],[12,2988]], 'less') = 0.0175...
        let p = f.fisher_p_greater.unwrap();
        assert!(p > 0.01 && p < 0.03, "{p}");
        assert!(f.two_proportion_z.unwrap() > 2.0);

        let mut spec = cat.get("latency-tail").unwrap().clone();
        spec.boundary_weights = vec![1.0, 0.0, 0.0, 0.0];
        let n = spec.boundaries().len();
        let mut h = Analysis::new(settings(), &[&spec]);
        let mut slots = [vec![0.0; 1 + 2 * n], vec![0.0; 1 + 2 * n]];
        for (side, slow) in [(0, 50.0), (1, 80.0)] {
            slots[side][0] = 1000.0;
            for b in 0..n {
                slots[side][1 + b] = 1000.0 - slow / (b as f64 + 1.0);
                slots[side][1 + n + b] = 1000.0;
            }
        }
        h.tick(
            &[&spec],
            TickInput {
                pods: &[],
                strata: &[],
                slots: &[slots],
                quality: good_quality(),
                elapsed: Duration::from_secs(15),
            },
        );
        h.refresh(&[&spec]);
        let e = &h.evidence[0];
        // Only the first boundary counts: the check's e-value is that test's.
        assert!((e.e_value - e.tests[0].e_value).abs() < 1e-12 * e.e_value.max(1.0));
        assert_eq!(e.tests[0].weight, Some(1.0));
        let b = e.buckets.as_ref().unwrap();
        assert_eq!(b.baseline.iter().sum::<f64>(), 1000.0);
        assert_eq!(b.baseline[0], 950.0);
        assert_eq!(b.canary[n], 80.0 / n as f64);
        assert_eq!(b.le.last(), Some(&None));
        assert!(e.fixed_horizon.mann_whitney_z.unwrap() > 0.0);
        assert!(e.fixed_horizon.cles.unwrap() > 0.5);
        assert!(b.distribution_ln_e.is_finite());
        let res = e.resolution.as_deref().unwrap();
        assert!(res.contains("a shift inside (0, 100]"), "{res}");
    }

    #[test]
    fn log_sum_exp_is_stable() {
        assert!((log_sum_exp([1000.0, 1000.0].into_iter()) - (1000.0 + 2f64.ln())).abs() < 1e-12);
        assert_eq!(log_sum_exp(std::iter::empty()), f64::NEG_INFINITY);
    }

    /// The shortcut of `tick` (evidence left for `refresh` when a tick surely ends PENDING)
    /// decides exactly as building the evidence every tick: same verdict at the same tick, and
    /// after `refresh` the same reason, combined e-value and evidence, on random streams with
    /// regressions, drops, clean canaries, two-sided, veto and zero-baseline checks, SLO
    /// certificates and data-quality blocks.
    #[test]
    fn shortcut_ticks_decide_as_full_ticks() {
        use rand::{rngs::SmallRng, Rng, SeedableRng};
        let cat = Catalog::builtin();
        let ratio = |extra: &str| ratio_spec(extra);
        let specs_sets: Vec<Vec<CheckSpec>> = vec![
            vec![cat.get("error-rate").unwrap().clone()],
            vec![cat.get("latency-tail").unwrap().clone()],
            vec![ratio("sided='two'\nmargin=0.1")],
            vec![ratio("veto=true"), cat.get("latency-tail").unwrap().clone()],
            vec![ratio("zero_baseline_rule=true\nslo=0.01")],
        ];
        let mut rng = SmallRng::seed_from_u64(11);
        let mut decided = [0usize; 4];
        let mut shortcuts = 0u64;
        for run in 0..120 {
            let owned = &specs_sets[run % specs_sets.len()];
            let specs: Vec<&CheckSpec> = owned.iter().collect();
            let mut settings = settings();
            settings.min_duration = Duration::from_secs(rng.random_range(0..200));
            let mut fast = Analysis::new(settings.clone(), &specs);
            let mut full = Analysis::new(settings, &specs);
            // Per run: base error rate, canary multiplier (drop, equal, rise), traffic.
            let base = [0.0, 0.001, 0.01, 0.05][rng.random_range(0..4)];
            let mult = [0.3, 1.0, 1.0, 1.3, 3.0][rng.random_range(0..5)];
            let n = [50.0, 500.0, 3000.0][rng.random_range(0..3)];
            for i in 0..60u64 {
                let mut input = Vec::new();
                for spec in &specs {
                    let mut side = |p: f64| -> Vec<f64> {
                        let req = (n * rng.random_range(0.8..1.2f64)).round();
                        let mut ev = |q: f64| {
                            let mean = req * q.min(1.0);
                            (mean + rng.random_range(-1.0..1.0) * mean.sqrt())
                                .round()
                                .clamp(0.0, req)
                        };
                        if spec.is_histogram() {
                            let k = spec.boundaries().len();
                            let mut v = vec![req];
                            let mut above = Vec::new();
                            for b in 0..k {
                                above.push(ev(p * 20.0 / (b as f64 + 1.0)));
                            }
                            v.extend(above.iter().map(|a| req - a));
                            v.extend((0..k).map(|_| req));
                            v
                        } else {
                            vec![req, ev(p)]
                        }
                    };
                    input.push([side(base), side(base * mult)]);
                }
                let mut quality = good_quality();
                if rng.random_range(0..10) == 0 {
                    quality.canary.stale = 1;
                }
                let tick = |a: &mut Analysis, shortcut: bool| {
                    a.tick_with(
                        &specs,
                        TickInput {
                            pods: &[],
                            strata: &[],
                            slots: &input,
                            quality: quality.clone(),
                            elapsed: Duration::from_secs(15 * (i + 1)),
                        },
                        shortcut,
                    )
                };
                let (vf, vs) = (tick(&mut full, false), tick(&mut fast, true));
                assert_eq!(
                    vs, vf,
                    "run {run} tick {i}: {} / {}",
                    fast.reason, full.reason
                );
                shortcuts += u64::from(!fast.is_current());
                let ln_e_now = fast.current_ln_e(&specs);
                fast.refresh(&specs);
                assert_eq!(
                    ln_e_now.to_bits(),
                    fast.ln_e.to_bits(),
                    "run {run} tick {i}"
                );
                assert!(full.is_current() && fast.is_current());
                assert_eq!(fast.reason, full.reason, "run {run} tick {i}");
                assert_eq!(
                    fast.ln_e.to_bits(),
                    full.ln_e.to_bits(),
                    "run {run} tick {i}"
                );
                assert_eq!(fast.evidence, full.evidence, "run {run} tick {i}");
                if vf.is_final() {
                    break;
                }
            }
            decided[fast.verdict as usize] += 1;
        }
        eprintln!(
            "verdicts [PENDING, GO, NO-GO, INCONCLUSIVE]: {decided:?}; {shortcuts} shortcut ticks"
        );
        assert!(
            decided[1] > 0 && decided[2] > 0 && decided[3] > 0,
            "{decided:?}"
        );
        assert!(shortcuts > 1000, "{shortcuts}");
    }
}

/// The `robust` check option through the analysis (the test itself is in `meshgate-stats`).
#[cfg(test)]
mod robust_check_tests {
    /// The SLO is opted in, to show the robust check certifies only through its own test.
    const SLO_GO: bool = true;
    /// `robust = true` in a check file: the analysis decides on this test's e-value, certifies
    /// only through its GO wealth (not the Poisson SLO bound), and refuses `sided = "two"`.
    #[test]
    fn check_option_drives_the_analysis() {
        use crate::judge::robust::{RobustEProcess, RobustParams};
        use crate::judge::{Analysis, CheckSpec, CohortQuality, DataQuality, Settings, TickInput};
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};
        let p = |margin| RobustParams {
            alpha: 0.05,
            margin,
        };
        use std::time::Duration;
        let spec = |extra: &str| {
            CheckSpec::from_toml(
                &format!(
                    "name='r'\nkind='ratio'\nmetric='m'\nbad='{{code=\"5\"}}'\nslo=0.5\n{extra}"
                ),
                "r.toml",
            )
        };
        // The README's example parses.
        let readme = "name = \"error-rate-robust\"\nkind = \"ratio\"\nmetric = \"istio_requests_total\"\nselect = '{reporter=\"destination\"}'\nbad = '{response_code=~\"5..\"}'\nmargin = 0.25\nrobust = true\n";
        assert!(CheckSpec::from_toml(readme, "readme.toml").unwrap().robust);
        let err = spec("robust=true\nsided='two'").unwrap_err();
        assert!(format!("{err:?}").contains("robust"), "{err:?}");
        let robust = spec("robust=true").unwrap();
        let plain = spec("").unwrap();
        assert!(robust.robust && !plain.robust);
        let settings = Settings {
            alpha: 0.05,
            min_duration: Duration::from_secs(60),
            max_duration: Duration::from_secs(36_000),
            min_exposure: 100.0,
            slo_go: SLO_GO,
            go_certificate: Default::default(),
            design: crate::judge::Design::default(),
            soak: Duration::ZERO,
        };
        let q = CohortQuality {
            targets: 3,
            fresh: 3,
            ..Default::default()
        };
        let quality = DataQuality {
            baseline: q.clone(),
            canary: q,
            overlapping_series: 0,
            ..Default::default()
        };
        let mut a = Analysis::new(settings.clone(), &[&robust]);
        let mut b = Analysis::new(settings, &[&plain]);
        let mut shadow = RobustEProcess::new(p(0.25));
        let mut rng = SmallRng::seed_from_u64(5);
        // Baseline 10% errors, canary 20%, 1000 requests per tick each.
        for i in 1..=600u64 {
            let binom = |rng: &mut SmallRng, q: f64| {
                (0..1000).filter(|_| rng.random::<f64>() < q).count() as f64
            };
            let (ea, eb) = (binom(&mut rng, 0.1), binom(&mut rng, 0.2));
            shadow.observe(ea, eb, 1000.0, 1000.0);
            let slots = [[vec![1000.0, ea], vec![1000.0, eb]]];
            let input = |slots| TickInput {
                pods: &[],
                strata: &[],
                slots,
                quality: quality.clone(),
                elapsed: Duration::from_secs(15 * i),
            };
            let v = a.tick(&[&robust], input(&slots));
            b.tick(&[&plain], input(&slots));
            a.refresh(&[&robust]);
            let got = a.evidence[0].e_value;
            assert!(
                (got.ln() - shadow.ln_e()).abs() < 1e-9,
                "tick {i}: {got} vs {}",
                shadow.ln_e().exp()
            );
            // The evidence is the robust test's own: no Poisson bounds, its scale and counts.
            let t = &a.evidence[0].tests[0];
            let r = t.robust.as_ref().expect("robust evidence");
            assert_eq!(r.units, i);
            assert_eq!(t.ratio_upper_bound, None);
            assert_eq!(t.ratio_lower_bound, 0.0);
            assert!(
                (r.e_value_not_worse.ln() - shadow.ln_e_not_worse()).abs() < 1e-9,
                "{r:?}"
            );
            assert!(
                a.evidence[0].reason.contains("robust test"),
                "{}",
                a.evidence[0].reason
            );
            if v.is_final() {
                assert_eq!(v, crate::judge::Verdict::NoGo);
                assert!(shadow.rejects());
                assert!(
                    a.reason.contains("robust test (distribution-free"),
                    "{}",
                    a.reason
                );
                // The Poisson test, on the same data, decided long before.
                assert!(b.verdict.is_final());
                return;
            }
        }
        panic!("robust check never decided: ln E {}", shadow.ln_e());
    }
}

/// GO means "not worse than the baseline": the SLO is opt-in and reported as such, an SLO breach
/// or a mesh-wide incident holds GO, and `min_duration` counts from the first canary data.
#[cfg(test)]
mod go_semantics_tests {
    /// Opted in here; `a_2x_regression...` also runs the shipped default (off).
    const SLO_GO: bool = true;
    use super::*;
    use crate::judge::Catalog;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Poisson};

    fn settings(min_duration_s: u64, max_duration_s: u64) -> Settings {
        Settings {
            alpha: 0.05,
            min_duration: Duration::from_secs(min_duration_s),
            max_duration: Duration::from_secs(max_duration_s),
            min_exposure: 100.0,
            slo_go: SLO_GO,
            go_certificate: Default::default(),
            design: Design::default(),
            soak: Duration::ZERO,
        }
    }

    fn quality() -> DataQuality {
        DataQuality::all_fresh(5)
    }

    fn error_rate() -> CheckSpec {
        Catalog::builtin().get("error-rate").unwrap().clone()
    }

    fn with(extra: &str) -> CheckSpec {
        CheckSpec::from_toml(
            &format!("name='e'\nkind='ratio'\nmetric='m'\nbad='{{code=\"5\"}}'\n{extra}"),
            "e.toml",
        )
        .unwrap()
    }

    /// One 15 s tick of Poisson counts: `n` requests per cohort, error rates `pa`, `pb`.
    fn tick(
        a: &mut Analysis,
        spec: &CheckSpec,
        i: u64,
        rng: &mut SmallRng,
        (na, nb, pa, pb): (f64, f64, f64, f64),
    ) -> Verdict {
        let draw = |rng: &mut SmallRng, mean: f64| {
            if mean > 0.0 {
                Poisson::new(mean).unwrap().sample(rng)
            } else {
                0.0
            }
        };
        let (ea, eb) = (draw(rng, na * pa), draw(rng, nb * pb));
        let slots = [[vec![na, ea], vec![nb, eb]]];
        a.tick(
            &[spec],
            TickInput {
                pods: &[],
                strata: &[],
                slots: &slots,
                quality: quality(),
                elapsed: Duration::from_secs(15 * i),
            },
        )
    }

    #[test]
    fn the_default_error_rate_check_has_an_incident_ceiling() {
        assert_eq!(error_rate().incident_ceiling, Some(0.02));
    }

    /// Identical cohorts except a 2x canary regression at a base rate far below the default
    /// pack's SLO (0.05% -> 0.1%, 50 rps): with `slo = 0.002` this is GO by SLO in most runs (and
    /// says so); without an SLO a GO needs the relative certificate, which a 2x regression may
    /// reach at most alpha of the time. 150 runs of 1 h: the bound (12 GO, binomial p < 0.01 at
    /// alpha 0.05) can fail.
    #[test]
    fn a_2x_regression_is_not_go_without_an_slo_and_says_so_with_one() {
        let with_slo = error_rate();
        let mut by_slo = 0;
        for seed in 0..40 {
            let mut rng = SmallRng::seed_from_u64(1000 + seed);
            let mut a = Analysis::new(settings(300, 3600), &[&with_slo]);
            for i in 1..=240 {
                if tick(
                    &mut a,
                    &with_slo,
                    i,
                    &mut rng,
                    (750.0, 750.0, 0.0005, 0.001),
                )
                .is_final()
                {
                    break;
                }
            }
            if a.verdict == Verdict::Go {
                assert!(a.reason.contains("GO by SLO"), "{}", a.reason);
                by_slo += 1;
            }
        }
        assert!(
            by_slo > 0,
            "the SLO path never certified: the test proves nothing"
        );
        // The shipped default: the pack's SLO certifies nothing unless `slo_go` is set.
        let spec = error_rate();
        let mut go = 0;
        for seed in 0..150 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let default = Settings {
                slo_go: false,
                go_certificate: Default::default(),
                design: Design::default(),
                ..settings(300, 3600)
            };
            let mut a = Analysis::new(default, &[&spec]);
            for i in 1..=240 {
                let v = tick(&mut a, &spec, i, &mut rng, (750.0, 750.0, 0.0005, 0.001));
                if v.is_final() {
                    break;
                }
            }
            if a.verdict == Verdict::Go {
                go += 1;
                assert!(!a.reason.contains("SLO"), "{}", a.reason);
            }
        }
        assert!(go <= 12, "{go} of 150 runs certified a 2x regression");
    }

    fn horizon(min_duration_s: u64, max_duration_s: u64) -> Settings {
        Settings {
            slo_go: false,
            go_certificate: GoCertificate::Horizon,
            ..settings(min_duration_s, max_duration_s)
        }
    }

    /// `go_certificate = "horizon"` on the shipped path (the default check without its SLO):
    /// an A/A canary at 50 rps and 0.1% is certified within the hour about twice as often as
    /// with the e-process (statistics.md 3c: 65.5% vs 33.4%); 120 runs each, so the bounds
    /// (horizon >= 60, anytime <= 55) fail only far outside sampling error.
    #[test]
    fn the_horizon_certificate_goes_twice_as_often_within_the_hour_in_a_a() {
        let spec = CheckSpec {
            slo: None,
            ..error_rate()
        };
        let mut go = [0, 0];
        for (k, s) in [settings(300, 3600), horizon(300, 3600)]
            .into_iter()
            .enumerate()
        {
            for seed in 0..120 {
                let mut rng = SmallRng::seed_from_u64(500 + seed);
                let mut a = Analysis::new(
                    Settings {
                        slo_go: false,
                        ..s.clone()
                    },
                    &[&spec],
                );
                for i in 1..=240 {
                    if tick(&mut a, &spec, i, &mut rng, (750.0, 750.0, 0.001, 0.001)).is_final() {
                        break;
                    }
                }
                if a.verdict == Verdict::Go {
                    go[k] += 1;
                    assert!(
                        a.reason.contains("every critical check certified"),
                        "{}",
                        a.reason
                    );
                }
            }
        }
        eprintln!(
            "A/A GO by 1 h in 120 runs: anytime {}, horizon {}",
            go[0], go[1]
        );
        assert!(go[1] >= 60 && go[0] <= 55 && go[1] > go[0], "{go:?}");
    }

    /// A 2x regression (beyond the 25% margin) is certified at most alpha of the time by the
    /// horizon certificate too: 150 runs of 1 h, at most 12 GO (binomial p < 0.01 at 5%).
    #[test]
    fn a_2x_regression_is_not_go_with_the_horizon_certificate() {
        let spec = error_rate();
        let mut go = 0;
        for seed in 0..150 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut a = Analysis::new(horizon(300, 3600), &[&spec]);
            for i in 1..=240 {
                if tick(&mut a, &spec, i, &mut rng, (750.0, 750.0, 0.0005, 0.001)).is_final() {
                    break;
                }
            }
            go += usize::from(a.verdict == Verdict::Go);
        }
        assert!(go <= 12, "{go} of 150 runs certified a 2x regression");
    }

    /// The horizon certificate's state is part of the analysis' state: an analysis written
    /// and read back mid-run (as the store does) decides exactly as the uninterrupted one.
    #[test]
    fn the_horizon_state_survives_a_round_trip() {
        let spec = error_rate();
        for seed in 0..10 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut a = Analysis::new(horizon(300, 3600), &[&spec]);
            let mut b: Option<Analysis> = None;
            let mut rng_b = rng.clone();
            for i in 1..=240 {
                let va = tick(&mut a, &spec, i, &mut rng, (750.0, 750.0, 0.001, 0.001));
                if i == 100 {
                    let text = serde_json::to_string(&a).unwrap();
                    assert!(text.contains("horizon"), "the state holds the certificate");
                    b = Some(serde_json::from_str(&text).unwrap());
                    rng_b = rng.clone();
                }
                if let Some(b) = &mut b {
                    if i > 100 {
                        let vb = tick(b, &spec, i, &mut rng_b, (750.0, 750.0, 0.001, 0.001));
                        assert_eq!(va, vb, "seed {seed} tick {i}");
                    }
                }
                if va.is_final() {
                    break;
                }
            }
        }
    }

    /// Per stratum too: one material workload 3x worse holds the GO back (named), while the
    /// pooled ratio alone (a tenth of the traffic 3x worse: 1.2x) would pass the margin.
    #[test]
    fn the_horizon_certificate_holds_back_a_worse_workload() {
        let mut spec = error_rate();
        spec.slo = None;
        let mut rng = SmallRng::seed_from_u64(7);
        let mut a = Analysis::new(horizon(300, 3600), &[&spec]);
        for i in 1..=240u64 {
            let mut pooled = [vec![0.0, 0.0], vec![0.0, 0.0]];
            let mut strata = Vec::new();
            for (name, n, pb) in [("shop/cart", 9000.0, 0.001), ("shop/pay", 1000.0, 0.003)] {
                let ea = Poisson::new(n * 0.001).unwrap().sample(&mut rng);
                let eb = Poisson::new(n * pb).unwrap().sample(&mut rng);
                let slots = [vec![n, ea], vec![n, eb]];
                for side in 0..2 {
                    for k in 0..2 {
                        pooled[side][k] += slots[side][k];
                    }
                }
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
                    elapsed: Duration::from_secs(15 * i),
                },
            );
            assert_ne!(v, Verdict::Go, "tick {i}: {}", a.reason);
            if v.is_final() {
                break;
            }
        }
        let t = &a.checks[0].tests[0];
        assert!(t.horizon_strata.contains_key("shop/pay"));
        assert!(t.horizon_strata["shop/cart"].certified_at().is_some());
        assert!(t.horizon_strata["shop/pay"].certified_at().is_none());
    }

    #[test]
    fn an_opt_in_slo_says_go_by_slo() {
        // The baseline has no errors at all (a zero-baseline check): only the SLO can certify.
        let spec = with("slo=0.01");
        let mut rng = SmallRng::seed_from_u64(3);
        let mut a = Analysis::new(settings(60, 3600), &[&spec]);
        for i in 1..=240 {
            if tick(&mut a, &spec, i, &mut rng, (1000.0, 1000.0, 0.0, 0.0)).is_final() {
                break;
            }
        }
        assert_eq!(a.verdict, Verdict::Go, "{}", a.reason);
        assert!(
            a.reason.contains("GO by SLO")
                && a.reason.contains("relative comparison not certified"),
            "{}",
            a.reason
        );
    }

    /// A canary above its SLO is never certified, even where the relative test would certify it
    /// (both cohorts at 1%, SLO 0.5%): PENDING with the reason, then INCONCLUSIVE.
    #[test]
    fn a_canary_above_its_slo_is_held() {
        let spec = with("slo=0.005");
        let mut rng = SmallRng::seed_from_u64(4);
        let mut a = Analysis::new(settings(60, 1800), &[&spec]);
        let mut held = false;
        for i in 1..=200 {
            let v = tick(&mut a, &spec, i, &mut rng, (2000.0, 2000.0, 0.01, 0.01));
            assert_ne!(v, Verdict::Go, "tick {i}: {}", a.reason);
            held |= a.reason.contains("GO held") && a.reason.contains("above its SLO");
            if v.is_final() {
                break;
            }
        }
        assert!(held);
        assert_eq!(a.verdict, Verdict::Inconclusive, "{}", a.reason);
    }

    /// A shared outage (5% 5xx in both cohorts for 20 minutes, then back to 0.1%): no NO-GO, no
    /// GO during the outage, and GO once the canary's last 5 minutes are below the ceiling.
    #[test]
    fn a_mesh_wide_incident_holds_go_until_it_is_over() {
        // The error-rate check's margin and ceiling, without the pack's SLO (which would hold GO
        // first, at 0.2%).
        let spec = with("margin=0.25\ntarget_events=50\nincident_ceiling=0.02");
        let mut rng = SmallRng::seed_from_u64(5);
        let mut a = Analysis::new(settings(300, 7200), &[&spec]);
        let outage = 21..=100u64;
        for i in 1..=480u64 {
            let p = if outage.contains(&i) { 0.05 } else { 0.001 };
            let v = tick(&mut a, &spec, i, &mut rng, (1500.0, 1500.0, p, p));
            assert_ne!(v, Verdict::NoGo, "tick {i}: {}", a.reason);
            if outage.contains(&i) {
                assert_eq!(v, Verdict::Pending, "tick {i}: {}", a.reason);
                assert!(
                    a.reason.contains("incident ceiling"),
                    "tick {i}: {}",
                    a.reason
                );
            }
            if v == Verdict::Go {
                // Not before the 5-minute window (21 ticks) holds fewer than 9 outage ticks, the
                // fewest that keep its rate above 2%: tick 113.
                assert!(i >= 113, "GO at tick {i}, the window still in the outage");
                return;
            }
        }
        panic!("never GO after the incident: {}", a.reason);
    }

    /// An analysis created before its canary has data: `min_duration` counts from the canary's
    /// first data, not from creation.
    #[test]
    fn min_duration_counts_from_the_first_canary_data() {
        let spec = error_rate();
        let mut rng = SmallRng::seed_from_u64(6);
        let mut a = Analysis::new(settings(300, 7200), &[&spec]);
        // 10 minutes of baseline only, then both at 2,000 requests per tick (a GO within minutes
        // of the first canary data if the duration counted from creation).
        for i in 1..=480u64 {
            let nb = if i <= 40 { 0.0 } else { 2000.0 };
            let v = tick(&mut a, &spec, i, &mut rng, (2000.0, nb, 0.001, 0.001));
            if i <= 40 {
                assert!(a.canary_since.is_none());
            } else {
                assert_eq!(a.canary_since, Some(Duration::from_secs(15 * 41)));
            }
            if v == Verdict::Go {
                assert!(
                    i >= 41 + 20,
                    "GO at tick {i}, {} s after the first canary data",
                    15 * (i - 41)
                );
                return;
            }
            assert_ne!(v, Verdict::NoGo, "{}", a.reason);
        }
        panic!("never GO: {}", a.reason);
    }
}

/// Strata (statistics.md, section 8): each workload is only compared with itself.
#[cfg(test)]
mod strata_tests {
    use super::*;
    use crate::judge::testkit::{self, draw};
    use crate::judge::Catalog;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn settings() -> Settings {
        testkit::settings(Duration::from_secs(3600), Design::default())
    }

    fn quality() -> DataQuality {
        testkit::quality(4)
    }

    fn spec() -> CheckSpec {
        let s = Catalog::builtin().get("error-rate").unwrap().clone();
        assert_eq!(
            s.strata,
            ["destination_workload_namespace", "destination_workload"]
        );
        // Without the pack's SLO: only the relative comparison certifies here.
        CheckSpec { slo: None, ..s }
    }

    /// A workload of one tick: (baseline requests, canary requests, baseline rate, canary rate).
    type Load = (f64, f64, f64, f64);

    /// Run one analysis over `ticks` ticks of these workloads; `stratified` false feeds the same
    /// counts pooled, as before strata.
    fn run(
        seed: u64,
        loads: &dyn Fn(u64) -> Vec<(&'static str, Load)>,
        stratified: bool,
        ticks: u64,
    ) -> Analysis {
        let spec = spec();
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut a = Analysis::new(settings(), &[&spec]);
        for i in 1..=ticks {
            let mut pooled = [vec![0.0, 0.0], vec![0.0, 0.0]];
            let mut strata = Vec::new();
            for (name, (na, nb, pa, pb)) in loads(i) {
                // Requests jitter a little, as scrapes do.
                let na = (na * rng.random_range(0.9..1.1f64)).round();
                let nb = (nb * rng.random_range(0.9..1.1f64)).round();
                let (ea, eb) = (draw(&mut rng, na * pa), draw(&mut rng, nb * pb));
                let slots = [vec![na, ea], vec![nb, eb]];
                for side in 0..2 {
                    for k in 0..2 {
                        pooled[side][k] += slots[side][k];
                    }
                }
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
                    strata: if stratified { &all } else { &[] },
                    quality: quality(),
                    elapsed: Duration::from_secs(15 * i),
                },
            );
            if v.is_final() {
                break;
            }
        }
        a
    }

    #[test]
    fn one_stratum_is_the_unstratified_test() {
        let load = |_| vec![("shop/cart", (750.0, 750.0, 0.002, 0.004))];
        for seed in 0..20 {
            let s = run(seed, &load, true, 240);
            let p = run(seed, &load, false, 240);
            assert_eq!(s.verdict, p.verdict, "seed {seed}");
            assert_eq!(s.decided_after, p.decided_after, "seed {seed}");
            assert_eq!(s.ln_e, p.ln_e, "seed {seed}");
            assert_eq!(
                s.checks[0].tests[0].process, p.checks[0].tests[0].process,
                "seed {seed}"
            );
        }
    }

    /// Two workloads with 100x different inherent 5xx rates, the noisy one mostly on the canary
    /// (80% of its pods) and the clean one mostly on the baseline, no change from the upgrade.
    /// Pooled, the canary looks ~4x worse: NO-GO nearly every run. Stratified: at most alpha.
    /// 200 runs of 1 h; the bound (20 NO-GO, 10%) fails for any test that pools.
    #[test]
    fn unlike_workloads_do_not_make_a_no_go() {
        let load = |_| {
            vec![
                ("shop/noisy", (150.0, 600.0, 0.01, 0.01)),
                ("shop/clean", (600.0, 150.0, 0.0001, 0.0001)),
            ]
        };
        let (mut strat_nogo, mut pooled_nogo) = (0, 0);
        for seed in 0..200 {
            strat_nogo += (run(seed, &load, true, 240).verdict == Verdict::NoGo) as u32;
            if seed < 20 {
                pooled_nogo += (run(seed, &load, false, 240).verdict == Verdict::NoGo) as u32;
            }
        }
        assert!(
            pooled_nogo >= 15,
            "pooled NO-GO only {pooled_nogo}/20: the scenario is too easy"
        );
        assert!(strat_nogo <= 20, "stratified NO-GO {strat_nogo}/200");
    }

    /// The clean workload (0.02% 5xx) made 5x worse while the noisy one (2%) stays: in the common
    /// ratio the noisy workload's volume hides it, and the common ratio alone certified GO in
    /// every run. Now a GO needs each material workload certified: never GO, and the evidence
    /// names the clean workload as the worst stratum. (NO-GO power against one diluted stratum
    /// is the common test's; see the note in docs/statistics.md.)
    #[test]
    fn a_regression_of_the_clean_workload_is_never_go() {
        let load = |_| {
            vec![
                ("shop/noisy", (400.0, 400.0, 0.02, 0.02)),
                ("shop/clean", (800.0, 800.0, 0.0002, 0.001)),
            ]
        };
        let mut held = 0;
        for seed in 0..30 {
            let mut a = run(seed, &load, true, 240);
            assert_ne!(a.verdict, Verdict::Go, "seed {seed}: {}", a.reason);
            a.refresh(&[&spec()]);
            let worst = &a.evidence[0].strata[0];
            assert_eq!(worst.name, "shop/clean", "{:?}", a.evidence[0].strata);
            assert!(!worst.certified);
            held += a.reason.contains("not yet certified in every workload") as u32;
        }
        assert!(
            held > 0,
            "the common ratio never certified: the test proves nothing"
        );
    }

    /// A canary whose workloads never run in the baseline (a namespace wave compared with the
    /// other namespaces) compares nothing: PENDING with the reason, then INCONCLUSIVE; never GO,
    /// never NO-GO, whatever the rates.
    #[test]
    fn no_common_workload_is_never_decided() {
        let load = |_| {
            vec![
                ("wave1/api", (0.0, 800.0, 0.0, 0.02)),
                ("other/web", (800.0, 0.0, 0.0001, 0.0)),
            ]
        };
        for seed in 0..5 {
            let a = run(seed, &load, true, 300);
            assert_eq!(a.verdict, Verdict::Inconclusive, "{}", a.reason);
            assert!(
                a.reason.contains("workloads that run in both cohorts"),
                "{}",
                a.reason
            );
            assert!(a.reason.contains("wave1/api"), "{}", a.reason);
            let st = &a.evidence[0].strata;
            assert_eq!(st.len(), 2);
            assert!(st.iter().any(|s| s.status == StratumStatus::CanaryOnly));
            assert!(st.iter().any(|s| s.status == StratumStatus::BaselineOnly));
        }
    }
}
