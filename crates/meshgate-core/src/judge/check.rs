//! Check definitions, loaded from `queries/*.toml` (one file per check) or the built-in pack.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cohort::Selector;
use crate::ConfigProblem;
use meshgate_stats::params::Range;

/// The margins a check file may ask for: a policy inside the range the tests are valid for
/// ([`meshgate_stats::params::MARGIN`], checked by `tests::policy_ranges_lie_inside_the_tests_ranges`).
const MARGIN: Range = Range::closed(0.0, 10.0);
/// The target event counts a check file may ask for (fewer make the mixing prior degenerate).
const TARGET_EVENTS: Range = Range::at_least(5.0);

/// How far back the canary's "recent" rate looks when an SLO or an incident ceiling holds GO.
pub const RECENT_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// The check pack compiled into the binary (the files of `queries/`).
const BUILTIN: &[(&str, &str)] = &[
    (
        "queries/error-rate.toml",
        include_str!("../../../../queries/error-rate.toml"),
    ),
    (
        "queries/latency-tail.toml",
        include_str!("../../../../queries/latency-tail.toml"),
    ),
    // Control-plane checks (istiod against istiod); not in the default set.
    (
        "queries/istiod-convergence.toml",
        include_str!("../../../../queries/istiod-convergence.toml"),
    ),
    (
        "queries/istiod-csr-sign-errors.toml",
        include_str!("../../../../queries/istiod-csr-sign-errors.toml"),
    ),
    (
        "queries/istiod-expired-nonces.toml",
        include_str!("../../../../queries/istiod-expired-nonces.toml"),
    ),
    (
        "queries/istiod-internal-errors.toml",
        include_str!("../../../../queries/istiod-internal-errors.toml"),
    ),
    (
        "queries/istiod-push-errors.toml",
        include_str!("../../../../queries/istiod-push-errors.toml"),
    ),
    (
        "queries/istiod-write-timeouts.toml",
        include_str!("../../../../queries/istiod-write-timeouts.toml"),
    ),
    (
        "queries/istiod-xds-rejects.toml",
        include_str!("../../../../queries/istiod-xds-rejects.toml"),
    ),
];

/// What a check counts.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckKind {
    /// Events are the series matching `bad` among those counted for exposure (5xx among requests).
    Ratio {
        /// Series that count as bad, among the selected ones.
        bad: Selector,
    },
    /// Events come from another family than exposure (`kind = "ratio"` with `events_metric`):
    /// e.g. istiod's `pilot_total_xds_rejects` per `pilot_xds_pushes`.
    EventsRatio {
        /// Family whose increase counts as events.
        events_metric: String,
        /// Which series of `events_metric` count.
        events_select: Selector,
    },
    /// Events at boundary b are observations above b (`_count` minus `_bucket{le=b}`), exposure is `_count`.
    HistogramTail {
        /// Bucket boundaries tested, in the metric's unit; a histogram lacking one is left out of that boundary.
        boundaries: Vec<f64>,
    },
}

/// One check, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckSpec {
    /// Unique name, e.g. `error-rate`.
    pub name: String,
    /// One line for people.
    pub description: String,
    /// Metric family (for histograms, the base name without `_bucket`).
    pub metric: String,
    /// Which series of the family are counted at all.
    pub select: Selector,
    /// What is counted.
    pub kind: CheckKind,
    /// Tolerated relative regression: H0 is "rate ratio <= 1 + margin".
    pub margin: f64,
    /// Event count where the test is tightest (sets the mixing prior).
    pub target_events: f64,
    /// A GO needs this check certified.
    pub critical: bool,
    /// Weight in the combined e-value.
    pub weight: f64,
    /// Opt-in absolute ceiling on the canary's rate: certifies GO ("GO by SLO", reported as not
    /// a relative comparison) and, while the canary's recent rate is above it, holds GO.
    pub slo: Option<f64>,
    /// While the canary's rate over the last [`RECENT_WINDOW`] is above this, GO is held
    /// (PENDING with the reason): a mesh-wide incident never certifies an upgrade.
    pub incident_ceiling: Option<f64>,
    /// Labels whose values name the strata: events are only ever compared within a stratum
    /// (by default the destination workload for Istio's request metrics, none otherwise).
    pub strata: Vec<String>,
    /// How the rate is shown to people (`percent` or `ratio`).
    pub unit_label: String,
    /// The file it came from.
    pub source: String,
    /// Used by analyses that name no checks (`default = false` in the file leaves it out).
    pub in_default_set: bool,
    /// `sided = "two"`: a drop beyond the margin (psi < 1 / (1 + margin)) is a regression too.
    pub two_sided: bool,
    /// Ratio checks: any canary event while the baseline has none (with `min_exposure`
    /// requests) is a NO-GO by policy, reported apart from the statistical evidence.
    pub zero_baseline_rule: bool,
    /// `veto = true`: the check alone can end the analysis in NO-GO, at its share of alpha / 2
    /// (see the README, "Many checks at once").
    pub veto: bool,
    /// Histogram checks: weight of each boundary in the check's e-value (normalised; empty =
    /// equal weights).
    pub boundary_weights: Vec<f64>,
    /// `robust = true`: the NO-GO e-value and the GO certificate come from the distribution-free
    /// betting e-process of [`super::robust`] (valid without the Poisson assumption, slower).
    pub robust: bool,
    /// How the counts' overdispersion is allowed for (statistics.md, section 7a).
    pub dispersion: DispersionMode,
}

/// How a check's counts' overdispersion is allowed for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DispersionMode {
    /// Divide the counts by the dispersion factor measured across each cohort's pods
    /// ([`meshgate_stats::dispersion`]): the default.
    #[default]
    Pods,
    /// Take the counts as Poisson (no allowance; exact only for Poisson counts).
    Poisson,
}

impl DispersionMode {
    /// The name in check files.
    pub fn as_str(self) -> &'static str {
        match self {
            DispersionMode::Pods => "pods",
            DispersionMode::Poisson => "poisson",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckFile {
    name: String,
    #[serde(default)]
    description: String,
    kind: String,
    metric: String,
    #[serde(default)]
    select: String,
    #[serde(default)]
    bad: Option<String>,
    #[serde(default)]
    boundaries: Option<Vec<f64>>,
    #[serde(default = "default_margin")]
    margin: f64,
    #[serde(default = "default_target_events")]
    target_events: f64,
    #[serde(default = "default_true")]
    critical: bool,
    #[serde(default = "default_weight")]
    weight: f64,
    #[serde(default)]
    slo: Option<f64>,
    #[serde(default)]
    incident_ceiling: Option<f64>,
    #[serde(default)]
    strata: Option<Vec<String>>,
    #[serde(default)]
    event_label: Option<String>,
    /// Events from another family than exposure (kind `ratio` only; then `bad` is not used).
    #[serde(default)]
    events_metric: Option<String>,
    /// Which series of `events_metric` count (default: all).
    #[serde(default)]
    events_select: Option<String>,
    /// Part of the default set (analyses that name no checks); control-plane checks say false.
    #[serde(default = "default_true")]
    default: bool,
    #[serde(default)]
    sided: Option<String>,
    #[serde(default)]
    zero_baseline_rule: bool,
    #[serde(default)]
    veto: bool,
    #[serde(default)]
    boundary_weights: Option<Vec<f64>>,
    #[serde(default)]
    robust: bool,
    #[serde(default)]
    dispersion: Option<String>,
    /// PromQL that yields the same counts on a Prometheus backend (documentation for now).
    #[serde(default)]
    #[allow(dead_code)]
    promql: Option<BTreeMap<String, String>>,
}

fn default_margin() -> f64 {
    0.25
}
fn default_target_events() -> f64 {
    100.0
}
fn default_true() -> bool {
    true
}
fn default_weight() -> f64 {
    1.0
}

/// Which kind of target exports the families a check reads: Istio's sidecars (`istio_*`,
/// `envoy_*`) or istiod (`pilot_*`, `citadel_*`, `galley_*`). Targets say which they are with
/// their `role` label (`proxy` or `istiod`), which cohort selectors use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// The data plane: sidecars (and gateways), `role="proxy"`.
    Proxy,
    /// The control plane: istiod, `role="istiod"`.
    Istiod,
}

impl Component {
    /// The `role` target label of the targets that export it.
    pub fn role(self) -> &'static str {
        match self {
            Component::Proxy => "proxy",
            Component::Istiod => "istiod",
        }
    }

    /// What the families are, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Component::Proxy => "data-plane (sidecar)",
            Component::Istiod => "control-plane (istiod)",
        }
    }

    fn of_family(family: &str) -> Option<Component> {
        const PROXY: [&str; 2] = ["istio_", "envoy_"];
        const ISTIOD: [&str; 3] = ["pilot_", "citadel_", "galley_"];
        if PROXY.iter().any(|p| family.starts_with(p)) {
            Some(Component::Proxy)
        } else if ISTIOD.iter().any(|p| family.starts_with(p)) {
            Some(Component::Istiod)
        } else {
            None
        }
    }
}

/// The roles (`proxy`, `istiod`) a cohort selector admits through its `role` matchers; `None`
/// when it has no `role` matcher (it may select targets of any role, or targets without one).
pub fn admitted_roles(sel: &Selector) -> Option<Vec<&'static str>> {
    let role: Vec<_> = sel.matchers().iter().filter(|m| m.name == "role").collect();
    if role.is_empty() {
        return None;
    }
    Some(
        ["proxy", "istiod"]
            .into_iter()
            .filter(|r| role.iter().all(|m| m.matches(Some(r))))
            .collect(),
    )
}

// === impl CheckSpec ===

impl CheckSpec {
    /// The kind of target that exports every family this check reads; `None` for families of
    /// neither (an application's own metrics) or a mix.
    pub fn component(&self) -> Option<Component> {
        let mut all = self
            .families()
            .into_iter()
            .map(|f| Component::of_family(&f));
        let first = all.next().flatten()?;
        all.all(|c| c == Some(first)).then_some(first)
    }

    /// Why this check cannot read anything through a cohort selected by `sel` (`cohort` names
    /// it: `baseline`, `canary`): its families come from targets of one role and the selector's
    /// `role` matcher excludes that role. Such an analysis would only ever say "no data".
    pub fn cohort_mismatch(&self, cohort: &str, sel: &Selector) -> Option<String> {
        let c = self.component()?;
        let roles = admitted_roles(sel)?;
        if roles.contains(&c.role()) {
            return None;
        }
        let selects = match roles.as_slice() {
            [] => "no role=\"proxy\" or role=\"istiod\" target".to_owned(),
            r => format!(
                "only {} targets",
                r.iter()
                    .map(|r| format!("role=\"{r}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut families = self.families();
        families.dedup();
        Some(format!(
            "check {:?} reads {}, {} metrics exported by role=\"{}\" targets, but the {cohort} selector {sel} selects {selects}",
            self.name,
            families.join(" and "),
            c.describe(),
            c.role()
        ))
    }

    /// Parse and validate one check file's text; `source` names it in errors.
    pub fn from_toml(text: &str, source: &str) -> Result<CheckSpec, Vec<ConfigProblem>> {
        let file: CheckFile = toml_from_str(text)
            .map_err(|e| vec![ConfigProblem::new(source.to_owned(), e.to_string())])?;
        let mut problems = Vec::new();
        let key = |k: &str| format!("{source}: {k}");
        let select = Selector::parse(&file.select).unwrap_or_else(|e| {
            problems.push(ConfigProblem::new(key("select"), e.to_string()));
            Selector::default()
        });
        if file.name.is_empty()
            || !file
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            problems.push(ConfigProblem::new(
                key("name"),
                "must be non-empty [A-Za-z0-9_-]",
            ));
        }
        if !valid_metric_name(&file.metric) {
            problems.push(ConfigProblem::new(
                key("metric"),
                format!("{:?} is not a metric name", file.metric),
            ));
        }
        let kind = match file.kind.as_str() {
            "ratio" if file.events_metric.is_some() => {
                let em = file.events_metric.clone().unwrap_or_default();
                if !valid_metric_name(&em) {
                    problems.push(ConfigProblem::new(
                        key("events_metric"),
                        format!("{em:?} is not a metric name"),
                    ));
                }
                if file.bad.is_some() {
                    problems.push(ConfigProblem::new(
                        key("bad"),
                        "is not used with events_metric (use events_select)",
                    ));
                }
                match Selector::parse(file.events_select.as_deref().unwrap_or("")) {
                    Ok(s) => Some(CheckKind::EventsRatio {
                        events_metric: em,
                        events_select: s,
                    }),
                    Err(e) => {
                        problems.push(ConfigProblem::new(key("events_select"), e.to_string()));
                        None
                    }
                }
            }
            "ratio" => match &file.bad {
                Some(b) => match Selector::parse(b) {
                    Ok(s) if s.is_empty() => {
                        problems.push(ConfigProblem::new(
                            key("bad"),
                            "must have at least one matcher",
                        ));
                        None
                    }
                    Ok(s) => Some(CheckKind::Ratio { bad: s }),
                    Err(e) => {
                        problems.push(ConfigProblem::new(key("bad"), e.to_string()));
                        None
                    }
                },
                None => {
                    problems.push(ConfigProblem::new(
                        key("bad"),
                        "is required for kind \"ratio\"",
                    ));
                    None
                }
            },
            "histogram_tail" => match &file.boundaries {
                Some(b) if !b.is_empty() && b.iter().all(|x| x.is_finite() && *x > 0.0) => {
                    let mut b = b.clone();
                    b.sort_by(f64::total_cmp);
                    b.dedup();
                    Some(CheckKind::HistogramTail { boundaries: b })
                }
                _ => {
                    problems.push(ConfigProblem::new(
                        key("boundaries"),
                        "kind \"histogram_tail\" needs a non-empty list of finite positive bucket bounds",
                    ));
                    None
                }
            },
            other => {
                problems.push(ConfigProblem::new(
                    key("kind"),
                    format!("unknown kind {other:?}, expected \"ratio\" or \"histogram_tail\""),
                ));
                None
            }
        };
        if file.events_select.is_some() && file.events_metric.is_none() {
            problems.push(ConfigProblem::new(
                key("events_select"),
                "needs events_metric",
            ));
        }
        if !MARGIN.contains(file.margin) {
            problems.push(ConfigProblem::new(
                key("margin"),
                format!("must be within {MARGIN}"),
            ));
        }
        if !TARGET_EVENTS.contains(file.target_events) {
            problems.push(ConfigProblem::new(
                key("target_events"),
                format!("must be at least {}", TARGET_EVENTS.lo),
            ));
        }
        if !(file.weight.is_finite() && file.weight > 0.0) {
            problems.push(ConfigProblem::new(key("weight"), "must be > 0"));
        }
        if let Some(s) = file.slo {
            if !(s > 0.0 && s < 1.0) {
                problems.push(ConfigProblem::new(key("slo"), "must be within (0, 1)"));
            }
        }
        // Like for like: Istio's request metrics are compared within each destination workload.
        let strata = file.strata.clone().unwrap_or_else(|| {
            if file.metric.starts_with("istio_request") {
                vec![
                    "destination_workload_namespace".to_string(),
                    "destination_workload".to_string(),
                ]
            } else {
                Vec::new()
            }
        });
        for l in &strata {
            if !valid_label_name(l) {
                problems.push(ConfigProblem::new(
                    key("strata"),
                    format!("{l:?} is not a label name"),
                ));
            }
        }
        if let Some(s) = file.incident_ceiling {
            if !(s > 0.0 && s <= 1.0) {
                problems.push(ConfigProblem::new(
                    key("incident_ceiling"),
                    "must be within (0, 1]",
                ));
            }
        }
        let two_sided = match file.sided.as_deref() {
            None | Some("one") => false,
            Some("two") => true,
            Some(other) => {
                problems.push(ConfigProblem::new(
                    key("sided"),
                    format!("{other:?} is neither \"one\" nor \"two\""),
                ));
                false
            }
        };
        let dispersion = match file.dispersion.as_deref() {
            None | Some("pods") => DispersionMode::Pods,
            Some("poisson") => DispersionMode::Poisson,
            Some(other) => {
                problems.push(ConfigProblem::new(
                    key("dispersion"),
                    format!("{other:?} is neither \"pods\" nor \"poisson\""),
                ));
                DispersionMode::Pods
            }
        };
        if file.zero_baseline_rule
            && !matches!(
                kind,
                Some(CheckKind::Ratio { .. } | CheckKind::EventsRatio { .. })
            )
        {
            problems.push(ConfigProblem::new(
                key("zero_baseline_rule"),
                "applies to kind \"ratio\" only",
            ));
        }
        let boundary_weights = file.boundary_weights.clone().unwrap_or_default();
        if !boundary_weights.is_empty() {
            match &kind {
                Some(CheckKind::HistogramTail { boundaries })
                    if boundaries.len() == boundary_weights.len()
                        && file.boundaries.as_ref() == Some(boundaries)
                        && boundary_weights.iter().all(|w| w.is_finite() && *w >= 0.0)
                        && boundary_weights.iter().any(|w| *w > 0.0) => {}
                _ => problems.push(ConfigProblem::new(
                    key("boundary_weights"),
                    "needs kind \"histogram_tail\" with increasing boundaries and one non-negative weight per boundary, not all zero",
                )),
            }
        }
        if file.robust && two_sided {
            problems.push(ConfigProblem::new(
                key("robust"),
                "the robust test is one-sided: use it with sided = \"one\"",
            ));
        }
        match (problems.is_empty(), kind) {
            (true, Some(kind)) => Ok(CheckSpec {
                robust: file.robust,
                dispersion,
                two_sided,
                zero_baseline_rule: file.zero_baseline_rule,
                veto: file.veto,
                boundary_weights,
                name: file.name,
                description: file.description,
                metric: file.metric,
                select,
                kind,
                margin: file.margin,
                target_events: file.target_events,
                critical: file.critical,
                weight: file.weight,
                slo: file.slo,
                incident_ceiling: file.incident_ceiling,
                strata,
                unit_label: file.event_label.unwrap_or_else(|| "events".into()),
                source: source.to_owned(),
                in_default_set: file.default,
            }),
            _ => Err(problems),
        }
    }

    /// Number of accumulator slots per cohort this check needs.
    pub fn slots(&self) -> usize {
        match &self.kind {
            CheckKind::Ratio { .. } | CheckKind::EventsRatio { .. } => 2,
            CheckKind::HistogramTail { boundaries } => 1 + 2 * boundaries.len(),
        }
    }

    /// The histogram boundaries (empty for other kinds).
    pub fn boundaries(&self) -> &[f64] {
        match &self.kind {
            CheckKind::HistogramTail { boundaries } => boundaries,
            _ => &[],
        }
    }

    /// The families this check reads (the events family too, for `events_metric` checks).
    pub fn families(&self) -> Vec<String> {
        match &self.kind {
            CheckKind::EventsRatio { events_metric, .. } => {
                vec![self.metric.clone(), events_metric.clone()]
            }
            _ => vec![self.metric.clone()],
        }
    }

    /// The unit of the histogram's bounds as shown to people (" ms", " s" or ""), from the
    /// metric's name (Istio's `pilot_*_time` histograms are in seconds).
    pub fn boundary_unit(&self) -> &'static str {
        let m = self.metric.as_str();
        if m.ends_with("_milliseconds") || m.ends_with("_ms") {
            " ms"
        } else if m.ends_with("_seconds") || (m.starts_with("pilot_") && m.ends_with("_time")) {
            " s"
        } else if m.ends_with("_bytes") {
            " bytes"
        } else {
            ""
        }
    }

    /// Whether the check reads a histogram.
    pub fn is_histogram(&self) -> bool {
        matches!(self.kind, CheckKind::HistogramTail { .. })
    }
}

/// All checks known to the daemon, by name.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    checks: BTreeMap<String, CheckSpec>,
}

// === impl Catalog ===

impl Catalog {
    /// The built-in pack.
    pub fn builtin() -> Catalog {
        Self::from_sources(Self::builtin_sources()).expect("the built-in check pack is valid")
    }

    /// The built-in pack's check files, as (source name, TOML text), to extend it with others.
    pub fn builtin_sources() -> impl Iterator<Item = (String, String)> {
        BUILTIN.iter().map(|(s, t)| (s.to_string(), t.to_string()))
    }

    /// A catalog from check files given as (source name, TOML text), reporting every problem at
    /// once. The caller reads the files (the daemon's `load_checks_dir`); this crate never does.
    pub fn from_sources(
        texts: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Catalog, Vec<ConfigProblem>> {
        let mut checks = BTreeMap::new();
        let mut problems = Vec::new();
        for (source, text) in texts {
            match CheckSpec::from_toml(&text, &source) {
                Ok(c) => {
                    if let Some(prev) = checks.get(&c.name) {
                        let prev: &CheckSpec = prev;
                        problems.push(ConfigProblem::new(
                            source.clone(),
                            format!("check {:?} is also defined in {}", c.name, prev.source),
                        ));
                    } else {
                        checks.insert(c.name.clone(), c);
                    }
                }
                Err(mut p) => problems.append(&mut p),
            }
        }
        if problems.is_empty() {
            Ok(Catalog { checks })
        } else {
            Err(problems)
        }
    }

    /// A check by name.
    pub fn get(&self, name: &str) -> Option<&CheckSpec> {
        self.checks.get(name)
    }

    /// The checks analyses get when they name none (every check without `default = false`).
    pub fn default_names(&self) -> Vec<String> {
        self.checks
            .values()
            .filter(|c| c.in_default_set)
            .map(|c| c.name.clone())
            .collect()
    }

    /// All check names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.checks.keys().cloned().collect()
    }

    /// All checks.
    pub fn iter(&self) -> impl Iterator<Item = &CheckSpec> {
        self.checks.values()
    }
}

fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// TOML through the `config` crate, so there is one TOML parser in the build.
fn toml_from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, config::ConfigError> {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()?
        .try_deserialize()
}

/// Serializable summary of a check, for the API.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CheckInfo {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// `ratio` or `histogram_tail`.
    pub kind: &'static str,
    /// Family.
    pub metric: String,
    /// Series selector.
    pub select: String,
    /// Margin.
    pub margin: f64,
    /// Critical for GO.
    pub critical: bool,
    /// Weight.
    pub weight: f64,
    /// SLO, if any (opt-in: certifies "GO by SLO" and holds GO while the canary is above it).
    pub slo: Option<f64>,
    /// Incident ceiling, if any: GO is held while the canary's recent rate is above it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident_ceiling: Option<f64>,
    /// Stratum labels (empty: one stratum).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub strata: Vec<String>,
    /// Boundaries for histogram checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boundaries: Option<Vec<f64>>,
    /// Bad-series selector for ratio checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bad: Option<String>,
    /// `one` or `two` (a drop is a regression too).
    pub sided: &'static str,
    /// Can end the analysis in NO-GO alone.
    pub veto: bool,
    /// Canary events over a silent baseline are a NO-GO by policy.
    pub zero_baseline_rule: bool,
    /// `pods` (counts divided by the dispersion measured across pods) or `poisson`.
    pub dispersion: &'static str,
}

impl From<&CheckSpec> for CheckInfo {
    fn from(c: &CheckSpec) -> Self {
        let (kind, boundaries, bad) = match &c.kind {
            CheckKind::Ratio { bad } => ("ratio", None, Some(bad.to_string())),
            CheckKind::EventsRatio {
                events_metric,
                events_select,
            } => (
                "ratio",
                None,
                Some(format!("{events_metric}{events_select}")),
            ),
            CheckKind::HistogramTail { boundaries } => {
                ("histogram_tail", Some(boundaries.clone()), None)
            }
        };
        CheckInfo {
            name: c.name.clone(),
            description: c.description.clone(),
            kind,
            metric: c.metric.clone(),
            select: c.select.to_string(),
            margin: c.margin,
            critical: c.critical,
            weight: c.weight,
            slo: c.slo,
            incident_ceiling: c.incident_ceiling,
            strata: c.strata.clone(),
            boundaries,
            bad,
            sided: if c.two_sided { "two" } else { "one" },
            veto: c.veto,
            zero_baseline_rule: c.zero_baseline_rule,
            dispersion: c.dispersion.as_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn policy_ranges_lie_inside_the_tests_ranges() {
        use meshgate_stats::params;
        assert!(params::MARGIN.covers(&super::MARGIN));
        assert!(params::TARGET_EVENTS.covers(&super::TARGET_EVENTS));
        assert_eq!(super::MARGIN.to_string(), "[0, 10]");
    }

    use super::*;
    use std::path::Path;

    #[test]
    fn checks_know_which_role_exports_their_families_and_refuse_other_cohorts() {
        let c = Catalog::builtin();
        let push = c.get("istiod-push-errors").unwrap();
        let errors = c.get("error-rate").unwrap();
        assert_eq!(push.component(), Some(Component::Istiod));
        assert_eq!(errors.component(), Some(Component::Proxy));
        let proxies = Selector::parse(r#"{role="proxy", revision="1-25-0"}"#).unwrap();
        let istiods = Selector::parse(r#"{role=~"istiod", revision="1-25-0"}"#).unwrap();
        let either = Selector::parse(r#"{role=~"proxy|istiod"}"#).unwrap();
        let unknown = Selector::parse(r#"{revision="1-25-0"}"#).unwrap();
        let m = push.cohort_mismatch("canary", &proxies).unwrap();
        assert!(
            m.contains("reads pilot_xds_pushes, control-plane (istiod)")
                && m.contains("selects only role=\"proxy\" targets"),
            "{m}"
        );
        assert!(errors.cohort_mismatch("baseline", &istiods).is_some());
        for ok in [&either, &unknown] {
            assert_eq!(push.cohort_mismatch("canary", ok), None);
            assert_eq!(errors.cohort_mismatch("canary", ok), None);
        }
        assert_eq!(push.cohort_mismatch("canary", &istiods), None);
        let none = Selector::parse(r#"{role="gateway"}"#).unwrap();
        assert!(errors
            .cohort_mismatch("canary", &none)
            .unwrap()
            .contains("no role=\"proxy\" or role=\"istiod\" target"));
    }

    #[test]
    fn builtin_pack_loads() {
        let c = Catalog::builtin();
        assert_eq!(c.default_names(), vec!["error-rate", "latency-tail"]);
        assert!(
            c.names().len() > 2,
            "the control-plane checks are loaded too"
        );
        let e = c.get("error-rate").unwrap();
        assert_eq!(e.metric, "istio_requests_total");
        assert!(
            matches!(&e.kind, CheckKind::Ratio { bad } if bad.to_string() == r#"{response_code=~"5.."}"#)
        );
        let l = c.get("latency-tail").unwrap();
        assert!(
            matches!(&l.kind, CheckKind::HistogramTail { boundaries } if boundaries.len() >= 2)
        );
        assert_eq!(l.slots(), 1 + 2 * l.boundaries().len());
    }

    #[test]
    fn queries_dir_matches_builtin() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../queries");
        let mut texts: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| {
                (
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect();
        texts.sort();
        let loaded = Catalog::from_sources(texts).unwrap();
        assert_eq!(loaded.names(), Catalog::builtin().names());
    }

    #[test]
    fn events_metric_checks_read_two_families() {
        let c = Catalog::builtin();
        let r = c.get("istiod-xds-rejects").unwrap();
        assert!(!r.in_default_set);
        assert_eq!(
            r.families(),
            vec!["pilot_xds_pushes", "pilot_total_xds_rejects"]
        );
        assert_eq!(r.slots(), 2);
        let p = c.get("istiod-push-errors").unwrap();
        assert!(
            matches!(&p.kind, CheckKind::EventsRatio { events_metric, events_select }
            if events_metric == "pilot_xds_pushes" && events_select.to_string().contains("senderr"))
        );
        let bad = CheckSpec::from_toml(
            "name='a'\nkind='ratio'\nmetric='m'\nevents_metric='9x'\nbad='{a=\"b\"}'\n",
            "e.toml",
        )
        .unwrap_err();
        let keys: Vec<&str> = bad.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"e.toml: events_metric"), "{keys:?}");
        assert!(keys.contains(&"e.toml: bad"), "{keys:?}");
        let orphan = CheckSpec::from_toml(
            "name='a'\nkind='ratio'\nmetric='m'\nbad='{a=\"b\"}'\nevents_select='{a=\"b\"}'\n",
            "o.toml",
        )
        .unwrap_err();
        assert_eq!(orphan[0].key, "o.toml: events_select");
    }

    #[test]
    fn bad_check_reports_every_problem() {
        let p = CheckSpec::from_toml(
            r#"
            name = "x y"
            kind = "ratio"
            metric = "9bad"
            select = '{a="b"'
            margin = -1
            weight = 0
            "#,
            "q.toml",
        )
        .unwrap_err();
        let keys: Vec<String> = p.iter().map(|p| p.key.clone()).collect();
        for k in ["name", "metric", "select", "bad", "margin", "weight"] {
            assert!(
                keys.iter().any(|x| x == &format!("q.toml: {k}")),
                "missing {k}: {keys:?}"
            );
        }
        let unknown = CheckSpec::from_toml(
            "name='a'\nkind='ratio'\nmetric='m'\nbad='{a=\"b\"}'\nfoo=1\n",
            "u.toml",
        )
        .unwrap_err();
        assert!(unknown[0].message.contains("foo"), "{unknown:?}");
    }

    #[test]
    fn new_keys_parse_and_are_checked() {
        let ok = CheckSpec::from_toml(
            "name='r'\nkind='ratio'\nmetric='m'\nbad='{a=\"b\"}'\nsided='two'\nzero_baseline_rule=true\nveto=true\n",
            "r.toml",
        )
        .unwrap();
        assert!(ok.two_sided && ok.zero_baseline_rule && ok.veto);
        let h = CheckSpec::from_toml(
            "name='h'\nkind='histogram_tail'\nmetric='m'\nboundaries=[100.0, 250.0]\nboundary_weights=[3.0, 1.0]\n",
            "h.toml",
        )
        .unwrap();
        assert_eq!(h.boundary_weights, vec![3.0, 1.0]);
        assert!(!h.two_sided && !h.veto);
        let bad = CheckSpec::from_toml(
            "name='h'\nkind='histogram_tail'\nmetric='m'\nboundaries=[250.0, 100.0]\nboundary_weights=[1.0, 1.0]\nsided='both'\nzero_baseline_rule=true\n",
            "b.toml",
        )
        .unwrap_err();
        let keys: Vec<String> = bad.iter().map(|p| p.key.clone()).collect();
        for k in ["sided", "zero_baseline_rule", "boundary_weights"] {
            assert!(
                keys.contains(&format!("b.toml: {k}")),
                "missing {k}: {keys:?}"
            );
        }
    }
}
