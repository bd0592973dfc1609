//! Cohorts and accumulation: which series belong to which analysis, check and cohort, and the
//! reset-aware per-series deltas that feed the judge.
//!
//! Each target has its own [`TargetAccumulator`], owned by that target's scrape loop, so the
//! ingest path runs on all cores without locks. It remembers the last value of every wanted
//! series and, per scrape, emits the deltas routed to (analysis, check, cohort, slot). Routes are
//! computed once per series and cached until the set of analyses changes.

mod key;
mod limits;
mod selector;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use key::{KeyHasher, KeyMap, SeriesKey};
pub use limits::{Limits, Violation, EXACT_INTEGER_LIMIT};
pub use selector::{MatchOp, Matcher, Selector, SelectorError};

use crate::judge::{CheckKind, CheckSpec};
use meshgate_expo::{self as parse, FamilyFilter, ParseError};

/// Baseline or canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The old revision / not yet migrated.
    Baseline,
    /// The new revision / migrated.
    Canary,
}

impl Side {
    /// 0 for baseline, 1 for canary.
    pub fn index(self) -> usize {
        match self {
            Side::Baseline => 0,
            Side::Canary => 1,
        }
    }
}

/// What the ingest path needs to know about one analysis.
#[derive(Clone, Debug)]
pub struct RoutedAnalysis {
    /// Analysis id.
    pub id: u64,
    /// Routing generation at which the analysis was added: older last values are not its data.
    pub since_generation: u64,
    /// Baseline selector.
    pub baseline: Selector,
    /// Canary selector.
    pub canary: Selector,
    /// Its checks, in order.
    pub checks: Vec<Arc<CheckSpec>>,
}

/// The analyses and families the ingest path serves; replaced whenever analyses change.
#[derive(Clone, Debug)]
pub struct Routing {
    /// Increases with every change.
    pub generation: u64,
    /// Families some check reads.
    pub filter: Arc<FamilyFilter>,
    /// Analyses.
    pub analyses: Vec<RoutedAnalysis>,
}

impl Routing {
    /// No analyses: nothing is materialised.
    pub fn empty() -> Self {
        Self {
            generation: 0,
            filter: Arc::new(FamilyFilter::new(Vec::<String>::new())),
            analyses: Vec::new(),
        }
    }

    /// Build from analyses; the filter covers every family their checks read.
    pub fn new(generation: u64, analyses: Vec<RoutedAnalysis>) -> Self {
        let mut families: Vec<String> = analyses
            .iter()
            .flat_map(|a| a.checks.iter().flat_map(|c| c.families()))
            .collect();
        families.sort();
        families.dedup();
        Self {
            generation,
            filter: Arc::new(FamilyFilter::new(families)),
            analyses,
        }
    }
}

/// Where one series' delta goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Route {
    analysis: u32,
    check: u16,
    side: Side,
    slot: u16,
    /// [`stratum_id`] of the series' stratum (0: the check has no strata).
    stratum: u64,
}

/// The id of a stratum name (never 0, which means "no strata"): the same on every target, so the
/// engine can add up one workload's deltas from all of its pods.
pub fn stratum_id(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    h.finish().max(1)
}

/// A stratum's name from the values of the check's stratum labels (`ns/workload`; a missing
/// label reads `unknown`, as Istio writes it).
fn stratum_name<'v>(labels: &[String], get: impl Fn(&str) -> Option<&'v str>) -> String {
    let mut name = String::new();
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            name.push('/');
        }
        name.push_str(get(l).filter(|v| !v.is_empty()).unwrap_or("unknown"));
    }
    name
}

/// A delta for one analysis, check, cohort and slot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Delta {
    /// Analysis id.
    pub analysis: u64,
    /// Check index within the analysis.
    pub check: u16,
    /// Cohort.
    pub side: Side,
    /// Slot within the check (see [`CheckSpec::slots`]).
    pub slot: u16,
    /// The stratum ([`stratum_id`]; 0 when the check has no strata). Names are in
    /// [`IngestReport::strata`].
    pub stratum: u64,
    /// Sum of series deltas.
    pub value: f64,
}

#[derive(Debug)]
struct SeriesState {
    last: f64,
    /// The value before a decrease still to be told apart (NaN when none): a restarted counter
    /// grows from its new value, a glitch goes back above the old one. The decrease's count
    /// waits for the next page.
    held_from: f64,
    last_generation: u64,
    last_seen: u64,
    routes_generation: u64,
    /// Shared with every series of the target that goes to the same places (most do).
    routes: Arc<[Route]>,
}

/// What one scrape's page gave.
#[derive(Debug, Default)]
pub struct IngestReport {
    /// Deltas, merged per destination.
    pub deltas: Vec<Delta>,
    /// Names of the strata whose series were routed on this page for the first time (or again
    /// after the routing changed): `(stratum_id, name)`.
    pub strata: Vec<(u64, Box<str>)>,
    /// Wanted samples on the page.
    pub samples: usize,
    /// Series tracked for this target after the scrape.
    pub series: usize,
    /// Counter resets seen (a value below the previous one).
    pub resets: usize,
    /// Series seen for the first time.
    pub new_series: usize,
    /// Series matching both cohorts of an analysis (left out of it).
    pub overlaps: usize,
    /// Malformed lines (first few kept).
    pub errors: Vec<ParseError>,
    /// Number of malformed lines.
    pub error_count: usize,
    /// Sample lines skipped without materialising (families no check reads).
    pub skipped: usize,
    /// Repeats of a series already seen on this page (ignored: only the first value counts).
    pub duplicates: usize,
    /// Series forgotten earlier (not seen for the TTL) that came back: their history is unknown,
    /// so they only set a new starting point.
    pub returned: usize,
    /// The limit this page broke, if it broke one: then the report carries no deltas, and the
    /// target's series memory was cleared (see [`TargetAccumulator::quarantine`]).
    pub quarantined: Option<Violation>,
}

/// The last value of every series of one target, as kept by the store across restarts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesSnapshot {
    /// `(family, key of the raw label text, last value)`; the family names are the
    /// accumulator's own (shared, not copied), so a snapshot per target costs its tuples only.
    pub series: Vec<(Arc<str>, SeriesKey, f64)>,
}

/// Per-target series memory and routing cache.
#[derive(Debug)]
pub struct TargetAccumulator {
    target_labels: BTreeMap<String, String>,
    /// Per family, per key of the label text ([`SeriesKey`]: the text itself is not kept), the
    /// series' state.
    families: HashMap<Arc<str>, KeyMap<SeriesState>>,
    /// The distinct route lists of this target's series under `route_sets_generation`.
    route_sets: HashSet<Arc<[Route]>>,
    route_sets_generation: u64,
    /// The empty route list, shared by every series that goes nowhere.
    no_routes: Arc<[Route]>,
    le_sets: HashMap<Box<str>, Vec<f64>>,
    scrapes: u64,
    series_ttl: u64,
    /// The family filter of the previous scrape: a series new to a family that was already
    /// wanted then was created since (count from zero); one from a newly wanted family was not.
    prev_filter: Option<Arc<FamilyFilter>>,
    /// Hashes of series dropped by the TTL, with the scrape they were dropped at: a series that
    /// comes back must not count its whole value as new (a run of partial pages is no birth).
    forgotten: KeyMap<u64>,
    /// The plausibility limits every page is held to.
    limits: Limits,
    /// When each of the last [`PAGE_TIMES`] pages was read (seconds on the caller's clock, NaN
    /// when not told), indexed by scrape number: the rate ceiling's time base.
    page_at: [f64; PAGE_TIMES],
    /// Per sample name: the scrape it was last summed at and the sum of its series' rates.
    family_rates: HashMap<Box<str>, (u64, f64)>,
    /// The standing quarantine and the clean pages still needed to lift it.
    quarantine: Option<(Violation, u8)>,
}

/// Page times kept: more than a series can stay unseen before the TTL forgets it.
const PAGE_TIMES: usize = 64;

/// Clean pages after a quarantined one before the quarantine lifts: the first only records new
/// starting values (the memory was cleared), the second gives deltas again.
const CLEAN_PAGES_TO_LIFT: u8 = 2;

/// Series not seen for this many scrapes are forgotten (a pod that dropped a series).
const DEFAULT_SERIES_TTL: u64 = 20;

// === impl TargetAccumulator ===

impl TargetAccumulator {
    /// A fresh accumulator for a target with these labels.
    pub fn new(target_labels: BTreeMap<String, String>) -> Self {
        Self {
            target_labels,
            families: HashMap::new(),
            route_sets: HashSet::new(),
            route_sets_generation: u64::MAX,
            no_routes: Arc::from(Vec::new()),
            le_sets: HashMap::new(),
            scrapes: 0,
            series_ttl: DEFAULT_SERIES_TTL,
            prev_filter: None,
            forgotten: KeyMap::default(),
            limits: Limits::default(),
            page_at: [f64::NAN; PAGE_TIMES],
            family_rates: HashMap::new(),
            quarantine: None,
        }
    }

    /// Hold every page to `limits` instead of [`Limits::default`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The limit a recent page broke, while its quarantine lasts: from the broken page until
    /// [`CLEAN_PAGES_TO_LIFT`] clean pages later. The target's data is not trustworthy meanwhile.
    pub fn quarantine(&self) -> Option<&Violation> {
        self.quarantine.as_ref().map(|(v, _)| v)
    }

    /// The last value of every remembered series, for the store.
    pub fn export(&self) -> SeriesSnapshot {
        let mut series = Vec::with_capacity(self.series());
        for (fam, m) in &self.families {
            for (key, st) in m {
                series.push((fam.clone(), *key, st.last));
            }
        }
        SeriesSnapshot { series }
    }

    /// Take back series values stored before a restart. The next page gives deltas against
    /// them (or a reset), as if the daemon had never stopped; analyses whose routing generation
    /// is above `generation` (created after the restart) get nothing from that first interval.
    pub fn restore(&mut self, snap: &SeriesSnapshot, generation: u64) {
        for (fam, key, last) in &snap.series {
            if !(last.is_finite() && *last >= 0.0 && *last <= self.limits.max_counter_value) {
                continue;
            }
            self.families.entry(fam.clone()).or_default().insert(
                *key,
                SeriesState {
                    last: *last,
                    held_from: f64::NAN,
                    last_generation: generation,
                    last_seen: self.scrapes,
                    routes_generation: u64::MAX,
                    routes: self.no_routes.clone(),
                },
            );
        }
    }

    /// Number of series remembered.
    pub fn series(&self) -> usize {
        self.families.values().map(HashMap::len).sum()
    }

    /// Take in one page. The first page of a target only records values (the counts before it
    /// cannot be placed in time); after that, a series seen for the first time counts from zero,
    /// since Istio creates series lazily on their first event, unless its family was not wanted
    /// in the previous scrape (then its history is unknown, as on a first page).
    pub fn ingest(&mut self, page: &str, routing: &Routing) -> IngestReport {
        self.ingest_split(page, routing, f64::NAN, None, |_| {})
    }

    /// [`ingest`](Self::ingest) of a page read at `at` (seconds on any monotonic clock), so the
    /// rate ceiling ([`Limits::max_increase_per_second`]) applies; `extra` and `on_extra` as in
    /// [`ingest_observing`](Self::ingest_observing). The daemon's scrape loop calls this.
    pub fn ingest_at<'p>(
        &mut self,
        page: &'p str,
        routing: &Routing,
        at: f64,
        extra: Option<&FamilyFilter>,
        on_extra: impl FnMut(&parse::Sample<'p>),
    ) -> IngestReport {
        self.ingest_split(page, routing, at, extra, on_extra)
    }

    /// [`ingest`](Self::ingest), and in the same parse pass hand every sample of the families
    /// `extra` wants to `on_extra` (the Istio observer's gauges), so a page is parsed once.
    pub fn ingest_observing<'p>(
        &mut self,
        page: &'p str,
        routing: &Routing,
        extra: &FamilyFilter,
        on_extra: impl FnMut(&parse::Sample<'p>),
    ) -> IngestReport {
        self.ingest_split(page, routing, f64::NAN, Some(extra), on_extra)
    }

    fn ingest_split<'p>(
        &mut self,
        page: &'p str,
        routing: &Routing,
        at: f64,
        extra: Option<&FamilyFilter>,
        mut on_extra: impl FnMut(&parse::Sample<'p>),
    ) -> IngestReport {
        let mut report = IngestReport::default();
        let prev_filter = self.prev_filter.replace(routing.filter.clone());
        self.scrapes += 1;
        let scrape_no = self.scrapes;
        let target_labels = &self.target_labels;
        let families = &mut self.families;
        if self.route_sets_generation != routing.generation {
            self.route_sets.clear();
            self.route_sets_generation = routing.generation;
        }
        let route_sets = &mut self.route_sets;
        let no_routes = &self.no_routes;
        let le_sets = &mut self.le_sets;
        let forgotten = &mut self.forgotten;
        let limits = &self.limits;
        let family_rates = &mut self.family_rates;
        self.page_at[scrape_no as usize % PAGE_TIMES] = at;
        let page_at = &self.page_at;
        // The time since page `n` was read, when known and within the kept window.
        let since = |n: u64| -> f64 {
            if n == 0 || scrape_no - n >= PAGE_TIMES as u64 {
                return f64::NAN;
            }
            at - page_at[n as usize % PAGE_TIMES]
        };
        let mut broken: Option<Violation> = None;
        let parsed = parse::parse_split(page, &routing.filter, extra, |s, wanted| {
            if wanted.extra {
                on_extra(&s);
            }
            if !wanted.main {
                return;
            }
            report.samples += 1;
            if broken.is_some() {
                // The page is quarantined whatever follows; its values must not be kept.
                return;
            }
            if let Some(v) = check_sample(limits, &s) {
                broken = Some(v);
                return;
            }
            if s.name.ends_with("_bucket") {
                if let Some(le) = s.labels.get("le").and_then(|v| parse_le(&v)) {
                    if le.is_finite() {
                        let set = match le_sets.get_mut(s.name) {
                            Some(v) => v,
                            None => le_sets.entry(s.name.into()).or_default(),
                        };
                        if !set.contains(&le) {
                            set.push(le);
                        }
                    }
                }
            }
            let fam = match families.get_mut(s.name) {
                Some(f) => f,
                None => families.entry(s.name.into()).or_default(),
            };
            let raw = s.labels.raw();
            let key = SeriesKey::of(raw);
            let (delta, state) = match fam.get_mut(&key) {
                Some(st) if st.last_seen == scrape_no => {
                    // The same series twice on one page: the second value is not a new sample.
                    report.duplicates += 1;
                    return;
                }
                Some(st) => {
                    // A decrease is a reset (delta = the new value), but only once the next
                    // page confirms it: a restarted counter grows on from its new value. A
                    // counter back above its old value had only dipped (a broken exporter, two
                    // pods behind one address): it counts from the old value, so its whole
                    // value is never added. Decreases page after page add nothing.
                    let delta = if s.value < st.last {
                        report.resets += 1;
                        // Keep the highest value seen before the decreases: a counter that falls
                        // twice and then comes back counts only what it gained above it.
                        st.held_from = if st.held_from.is_nan() {
                            st.last
                        } else {
                            st.held_from.max(st.last)
                        };
                        // Zero, not nothing: the target still sent data to its cohorts, so it
                        // counts in their data quality (and its resets with it).
                        Some(0.0)
                    } else if st.held_from.is_nan() {
                        Some(s.value - st.last)
                    } else {
                        let from = std::mem::replace(&mut st.held_from, f64::NAN);
                        Some(if s.value >= from {
                            s.value - from
                        } else {
                            s.value
                        })
                    };
                    (delta, st)
                }
                None => {
                    report.new_series += 1;
                    let st = fam.entry(key).or_insert(SeriesState {
                        last: 0.0,
                        held_from: f64::NAN,
                        last_generation: routing.generation,
                        last_seen: 0,
                        routes_generation: u64::MAX,
                        routes: no_routes.clone(),
                    });
                    let was_wanted = prev_filter
                        .as_ref()
                        .is_some_and(|f| f.wants_sample_name(s.name));
                    let came_back =
                        !forgotten.is_empty() && forgotten.remove(&key.in_family(s.name)).is_some();
                    if came_back {
                        report.returned += 1;
                    }
                    (
                        if was_wanted && !came_back {
                            Some(s.value)
                        } else {
                            None
                        },
                        st,
                    )
                }
            };
            if state.routes_generation != routing.generation {
                let routes = compute_routes(
                    s.name,
                    &s.labels,
                    target_labels,
                    le_sets,
                    routing,
                    &mut report.overlaps,
                    &mut report.strata,
                );
                state.routes = if routes.is_empty() {
                    no_routes.clone()
                } else if let Some(shared) = route_sets.get(routes.as_slice()) {
                    shared.clone()
                } else {
                    let shared: Arc<[Route]> = Arc::from(routes);
                    route_sets.insert(shared.clone());
                    shared
                };
                state.routes_generation = routing.generation;
            }
            if let Some(d) = delta.filter(|d| *d > 0.0 && limits::Limits::rate_applies(s.name)) {
                // A series seen before grew since the page it was last on; a new one since the
                // previous page.
                let seen = if state.last_seen == 0 {
                    scrape_no - 1
                } else {
                    state.last_seen
                };
                let elapsed = since(seen);
                if elapsed > 0.0 {
                    let rate = d / elapsed;
                    let max = limits.max_increase_per_second;
                    let family_rate = if s.name.ends_with("_bucket") {
                        0.0
                    } else {
                        let e = match family_rates.get_mut(s.name) {
                            Some(e) => e,
                            None => family_rates.entry(s.name.into()).or_insert((0, 0.0)),
                        };
                        if e.0 != scrape_no {
                            *e = (scrape_no, 0.0);
                        }
                        e.1 += rate;
                        e.1
                    };
                    if rate > max {
                        broken = Some(Violation::new(
                            "max_increase_per_second",
                            format!(
                                "{} grew by {d} in {elapsed:.3}s ({rate:.0}/s), above {max}/s",
                                limits::series_name(s.name, s.labels.raw())
                            ),
                        ));
                        return;
                    }
                    if family_rate > max {
                        broken = Some(Violation::new(
                            "max_increase_per_second",
                            format!(
                                "the {} series of this target grew by {family_rate:.0}/s together, above {max}/s",
                                s.name
                            ),
                        ));
                        return;
                    }
                }
            }
            if let Some(d) = delta {
                for r in state.routes.iter() {
                    let a = &routing.analyses[r.analysis as usize];
                    if state.last_generation < a.since_generation {
                        continue;
                    }
                    merge_delta(&mut report.deltas, a.id, r, d);
                }
            }
            state.last = s.value;
            state.last_generation = routing.generation;
            state.last_seen = scrape_no;
        });
        report.skipped = parsed.skipped;
        report.errors = parsed.errors;
        report.error_count = parsed.error_count;
        let on_page = parsed.samples + parsed.skipped;
        if broken.is_none() && self.limits.sample_limit > 0 && on_page > self.limits.sample_limit {
            broken = Some(Violation::new(
                "sample_limit",
                format!(
                    "page has {on_page} samples, above the limit of {}",
                    self.limits.sample_limit
                ),
            ));
        }
        if let Some(v) = broken {
            self.quarantine_page(&mut report, v);
            return report;
        }
        if let Some((_, left)) = &mut self.quarantine {
            *left -= 1;
            if *left == 0 {
                self.quarantine = None;
            }
        }
        if scrape_no % 10 == 0 {
            let ttl = self.series_ttl;
            let forgotten = &mut self.forgotten;
            for (name, fam) in self.families.iter_mut() {
                fam.retain(|key, st| {
                    let keep = scrape_no - st.last_seen <= ttl;
                    if !keep {
                        forgotten.insert(key.in_family(name), scrape_no);
                    }
                    keep
                });
            }
            self.families.retain(|_, f| !f.is_empty());
            // Tombstones are 24 bytes; drop them after a long while so memory stays bounded.
            forgotten.retain(|_, at| scrape_no - *at <= 50 * ttl);
        }
        report.series = self.series();
        report
    }

    /// Drop what a page that broke a limit gave, and forget every series of the target: its
    /// values on the broken page are not to be believed, and neither are the deltas the next page
    /// would compute against them (nor against values from before, which a partly applied page
    /// overwrote). The next page only records starting values, as a target's first page does.
    fn quarantine_page(&mut self, report: &mut IngestReport, v: Violation) {
        self.families.clear();
        self.forgotten.clear();
        self.family_rates.clear();
        self.prev_filter = None;
        report.deltas.clear();
        report.strata.clear();
        report.resets = 0;
        report.new_series = 0;
        report.returned = 0;
        report.overlaps = 0;
        report.series = 0;
        report.quarantined = Some(v.clone());
        self.quarantine = Some((v, CLEAN_PAGES_TO_LIFT));
    }
}

/// The limits one wanted sample can break on its own: a value that is no counter's, and labels
/// too long.
fn check_sample(limits: &Limits, s: &parse::Sample<'_>) -> Option<Violation> {
    let v = s.value;
    let name = || limits::series_name(s.name, s.labels.raw());
    if !v.is_finite() {
        return Some(Violation::new(
            "finite",
            format!("{} has the value {v}, not a finite count", name()),
        ));
    }
    if v < 0.0 {
        return Some(Violation::new(
            "max_counter_value",
            format!("{} has the negative value {v}, not a count", name()),
        ));
    }
    if v > limits.max_counter_value {
        return Some(Violation::new(
            "max_counter_value",
            format!(
                "{} has the value {v}, above {} (f64 stops holding every integer at 2^53)",
                name(),
                limits.max_counter_value
            ),
        ));
    }
    let (max_name, max_value) = (
        limits.label_name_length_limit,
        limits.label_value_length_limit,
    );
    let shortest = match (max_name, max_value) {
        (0, 0) => return None,
        (0, m) | (m, 0) => m,
        (a, b) => a.min(b),
    };
    if s.labels.raw().len() <= shortest {
        return None;
    }
    for (label, value) in s.labels.iter() {
        if max_name > 0 && label.len() > max_name {
            return Some(Violation::new(
                "label_name_length_limit",
                format!(
                    "{} has a label name of {} bytes, above {max_name}",
                    name(),
                    label.len()
                ),
            ));
        }
        if max_value > 0 && value.len() > max_value {
            return Some(Violation::new(
                "label_value_length_limit",
                format!(
                    "{} has a value of {} bytes for label {label}, above {max_value}",
                    name(),
                    value.len()
                ),
            ));
        }
    }
    None
}

fn merge_delta(out: &mut Vec<Delta>, analysis: u64, r: &Route, value: f64) {
    if let Some(d) = out.iter_mut().find(|d| {
        d.analysis == analysis
            && d.check == r.check
            && d.side == r.side
            && d.slot == r.slot
            && d.stratum == r.stratum
    }) {
        d.value += value;
    } else {
        out.push(Delta {
            analysis,
            check: r.check,
            side: r.side,
            slot: r.slot,
            stratum: r.stratum,
            value,
        });
    }
}

/// Add one delta of an analysis into its tick's slots, `pending[check][side][slot]`: the input
/// of [`Analysis::tick`](crate::judge::Analysis::tick) (`TickInput::slots`). The daemon's engine
/// sums every scrape report's deltas this way between two ticks, and the decision benchmark
/// does the same; the caller picks the analysis' slots by [`Delta::analysis`]. A delta outside
/// the layout (a check or slot the analysis does not have) is dropped: returns false.
pub fn add_delta(pending: &mut [[Vec<f64>; 2]], d: &Delta) -> bool {
    match pending
        .get_mut(d.check as usize)
        .and_then(|c| c[d.side.index()].get_mut(d.slot as usize))
    {
        Some(v) => {
            *v += d.value;
            true
        }
        None => false,
    }
}

/// An analysis' deltas since its last tick, per check and stratum: what
/// [`TickInput::strata`](crate::judge::TickInput::strata) is built from. The pooled sums stay in
/// the caller's `pending` ([`add_delta`]); this keeps the same deltas apart per stratum, with the
/// strata's names learnt from the reports.
#[derive(Clone, Debug, Default)]
pub struct StrataPending {
    per_check: Vec<BTreeMap<u64, [Vec<f64>; 2]>>,
    slots: Vec<usize>,
    names: HashMap<u64, Arc<str>>,
}

impl StrataPending {
    /// Empty, for an analysis with these checks.
    pub fn new(checks: &[Arc<CheckSpec>]) -> Self {
        Self {
            per_check: vec![BTreeMap::new(); checks.len()],
            slots: checks.iter().map(|c| c.slots()).collect(),
            names: HashMap::new(),
        }
    }

    /// Remember the names a report gives.
    pub fn learn(&mut self, names: &[(u64, Box<str>)]) {
        for (id, n) in names {
            self.names.entry(*id).or_insert_with(|| Arc::from(&**n));
        }
    }

    /// Add one delta (deltas of checks without strata are ignored). False when it lies outside
    /// the analysis' layout.
    pub fn add(&mut self, d: &Delta) -> bool {
        if d.stratum == 0 {
            return true;
        }
        let (Some(m), Some(&n)) = (
            self.per_check.get_mut(d.check as usize),
            self.slots.get(d.check as usize),
        ) else {
            return false;
        };
        let e = m
            .entry(d.stratum)
            .or_insert_with(|| [vec![0.0; n], vec![0.0; n]]);
        match e[d.side.index()].get_mut(d.slot as usize) {
            Some(v) => {
                *v += d.value;
                true
            }
            None => false,
        }
    }

    /// The tick's strata per check, emptied for the next tick.
    pub fn take(&mut self) -> Vec<Vec<crate::judge::Stratum>> {
        let names = &self.names;
        self.per_check
            .iter_mut()
            .map(|m| {
                std::mem::take(m)
                    .into_iter()
                    .map(|(id, slots)| crate::judge::Stratum {
                        name: names
                            .get(&id)
                            .cloned()
                            .unwrap_or_else(|| Arc::from(format!("stratum {id:016x}"))),
                        slots,
                    })
                    .collect()
            })
            .collect()
    }
}

/// An analysis' deltas since its last tick, per check, stratum, cohort and pod: what
/// [`TickInput::pods`](crate::judge::TickInput::pods) is built from (the dispersion factor is
/// measured across the pods of one cohort and stratum).
#[derive(Clone, Debug, Default)]
pub struct PodPending {
    per_check: Vec<BTreeMap<(u64, usize, u32), Vec<f64>>>,
    slots: Vec<usize>,
    ids: HashMap<Arc<str>, u32>,
}

impl PodPending {
    /// Empty, for an analysis with these checks.
    pub fn new(checks: &[Arc<CheckSpec>]) -> Self {
        Self {
            per_check: vec![BTreeMap::new(); checks.len()],
            slots: checks.iter().map(|c| c.slots()).collect(),
            ids: HashMap::new(),
        }
    }

    /// A small number for a pod (a target's URL), stable for the analysis' life.
    pub fn pod_id(&mut self, target: &Arc<str>) -> u32 {
        let next = self.ids.len() as u32;
        *self.ids.entry(target.clone()).or_insert(next)
    }

    /// Add one delta of pod `pod` ([`Self::pod_id`]). False when it lies outside the analysis'
    /// layout.
    pub fn add(&mut self, pod: u32, d: &Delta) -> bool {
        let (Some(m), Some(&n)) = (
            self.per_check.get_mut(d.check as usize),
            self.slots.get(d.check as usize),
        ) else {
            return false;
        };
        let v = m
            .entry((d.stratum, d.side.index(), pod))
            .or_insert_with(|| vec![0.0; n]);
        match v.get_mut(d.slot as usize) {
            Some(v) => {
                *v += d.value;
                true
            }
            None => false,
        }
    }

    /// The tick's pods per check, grouped by stratum and cohort, emptied for the next tick.
    pub fn take(&mut self) -> Vec<Vec<crate::judge::PodGroup>> {
        self.per_check
            .iter_mut()
            .map(|m| {
                let mut groups: Vec<crate::judge::PodGroup> = Vec::new();
                let mut last = None;
                for ((stratum, side, _), slots) in std::mem::take(m) {
                    if last != Some((stratum, side)) {
                        groups.push(crate::judge::PodGroup {
                            side,
                            pods: Vec::new(),
                        });
                        last = Some((stratum, side));
                    }
                    if let Some(g) = groups.last_mut() {
                        g.pods.push(slots);
                    }
                }
                groups
            })
            .collect()
    }
}

/// Parse an `le` label value (`0.5`, `1e+06`, `+Inf`).
pub fn parse_le(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        _ => v.parse::<f64>().ok(),
    }
}

fn compute_routes(
    name: &str,
    labels: &parse::Labels<'_>,
    target_labels: &BTreeMap<String, String>,
    le_sets: &HashMap<Box<str>, Vec<f64>>,
    routing: &Routing,
    overlaps: &mut usize,
    strata_names: &mut Vec<(u64, Box<str>)>,
) -> Vec<Route> {
    let series: Vec<(&str, Cow<'_, str>)> = labels.iter().collect();
    // Target labels take precedence over series labels, as in Prometheus without honor_labels.
    let get = |n: &str| -> Option<&str> {
        target_labels.get(n).map(String::as_str).or_else(|| {
            series
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.as_ref())
        })
    };
    let mut routes = Vec::new();
    let mut stratum_of = |c: &CheckSpec| -> u64 {
        if c.strata.is_empty() {
            return 0;
        }
        let name = stratum_name(&c.strata, get);
        let id = stratum_id(&name);
        if !strata_names.iter().any(|(i, _)| *i == id) {
            strata_names.push((id, name.into()));
        }
        id
    };
    for (ai, a) in routing.analyses.iter().enumerate() {
        for (ci, c) in a.checks.iter().enumerate() {
            // Events from another family: the events series go to slot 1, exposure to slot 0.
            if let CheckKind::EventsRatio {
                events_metric,
                events_select,
            } = &c.kind
            {
                // One family may give both (pushes, and the `_senderr` pushes among them).
                let exposure = name == c.metric && c.select.matches(get);
                let events = name == events_metric && events_select.matches(get);
                if !exposure && !events {
                    continue;
                }
                let side = match (a.baseline.matches(get), a.canary.matches(get)) {
                    (true, false) => Side::Baseline,
                    (false, true) => Side::Canary,
                    (true, true) => {
                        *overlaps += 1;
                        continue;
                    }
                    (false, false) => continue,
                };
                let stratum = stratum_of(c);
                for (slot, wanted) in [(0u16, exposure), (1, events)] {
                    if wanted {
                        routes.push(Route {
                            analysis: ai as u32,
                            check: ci as u16,
                            side,
                            slot,
                            stratum,
                        });
                    }
                }
                continue;
            }
            let bucket = match &c.kind {
                CheckKind::Ratio { .. } | CheckKind::EventsRatio { .. } => {
                    if name != c.metric {
                        continue;
                    }
                    false
                }
                CheckKind::HistogramTail { .. } => {
                    if name.len() != c.metric.len() + 7
                        || !name.starts_with(&c.metric)
                        || !name.ends_with("_bucket")
                    {
                        continue;
                    }
                    true
                }
            };
            if !c.select.matches(get) {
                continue;
            }
            let side = match (a.baseline.matches(get), a.canary.matches(get)) {
                (true, false) => Side::Baseline,
                (false, true) => Side::Canary,
                (true, true) => {
                    *overlaps += 1;
                    continue;
                }
                (false, false) => continue,
            };
            let stratum = stratum_of(c);
            let mut push = |slot: usize| {
                routes.push(Route {
                    analysis: ai as u32,
                    check: ci as u16,
                    side,
                    slot: slot as u16,
                    stratum,
                });
            };
            match &c.kind {
                CheckKind::Ratio { bad } => {
                    push(0);
                    if bad.matches(get) {
                        push(1);
                    }
                }
                CheckKind::EventsRatio { .. } => {}
                CheckKind::HistogramTail { boundaries } => {
                    debug_assert!(bucket);
                    let Some(le) = get("le").and_then(parse_le) else {
                        continue;
                    };
                    let n = boundaries.len();
                    if le == f64::INFINITY {
                        push(0);
                        let set = le_sets.get(name).map(Vec::as_slice).unwrap_or(&[]);
                        for (i, b) in boundaries.iter().enumerate() {
                            if set.contains(b) {
                                push(1 + n + i);
                            }
                        }
                    } else if let Some(i) = boundaries.iter().position(|b| *b == le) {
                        push(1 + i);
                    }
                }
            }
        }
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Catalog;
    use proptest::prelude::*;

    /// Per-pod deltas come back grouped by stratum and cohort, each pod's slots summed, and the
    /// pending state empties.
    #[test]
    fn pod_pending_groups_by_stratum_and_cohort() {
        let cat = Catalog::builtin();
        let checks = vec![Arc::new(cat.get("error-rate").unwrap().clone())];
        let mut p = PodPending::new(&checks);
        let (a, b, c) = (
            Arc::from("http://a"),
            Arc::from("http://b"),
            Arc::from("http://c"),
        );
        let (a, b, c) = (p.pod_id(&a), p.pod_id(&b), p.pod_id(&c));
        assert_eq!((a, b, c), (0, 1, 2));
        let d = |side, slot, stratum, value| Delta {
            analysis: 7,
            check: 0,
            side,
            slot,
            stratum,
            value,
        };
        for (pod, delta) in [
            (a, d(Side::Baseline, 0, 5, 100.0)),
            (a, d(Side::Baseline, 1, 5, 2.0)),
            (a, d(Side::Baseline, 0, 5, 50.0)),
            (b, d(Side::Baseline, 0, 5, 80.0)),
            (c, d(Side::Canary, 0, 5, 90.0)),
            (c, d(Side::Canary, 0, 9, 10.0)),
        ] {
            assert!(p.add(pod, &delta));
        }
        assert!(
            !p.add(a, &d(Side::Baseline, 7, 5, 1.0)),
            "slot outside the layout"
        );
        let groups = p.take();
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!(g.len(), 3, "{g:?}");
        assert_eq!(
            (g[0].side, g[0].pods.clone()),
            (0, vec![vec![150.0, 2.0], vec![80.0, 0.0]])
        );
        assert_eq!((g[1].side, g[1].pods.clone()), (1, vec![vec![90.0, 0.0]]));
        assert_eq!((g[2].side, g[2].pods.clone()), (1, vec![vec![10.0, 0.0]]));
        assert!(p.take()[0].is_empty());
    }

    fn routing(generation: u64) -> Routing {
        let cat = Catalog::builtin();
        Routing::new(
            generation,
            vec![RoutedAnalysis {
                id: 7,
                since_generation: 1,
                baseline: Selector::parse(r#"{revision="old"}"#).unwrap(),
                canary: Selector::parse(r#"{revision="new"}"#).unwrap(),
                checks: vec![
                    Arc::new(cat.get("error-rate").unwrap().clone()),
                    Arc::new(cat.get("latency-tail").unwrap().clone()),
                ],
            }],
        )
    }

    /// Deltas carry the destination workload's stratum: the same id from every pod of a
    /// workload, another for another workload; `StrataPending` keeps them apart and names them.
    #[test]
    fn deltas_are_kept_per_destination_workload() {
        let r = routing(1);
        let wl = |ns: &str, w: &str, ok: u64, err: u64| {
            format!(
                "# TYPE istio_requests_total counter\n\
                 istio_requests_total{{reporter=\"destination\",destination_workload=\"{w}\",destination_workload_namespace=\"{ns}\",response_code=\"200\"}} {ok}\n\
                 istio_requests_total{{reporter=\"destination\",destination_workload=\"{w}\",destination_workload_namespace=\"{ns}\",response_code=\"503\"}} {err}\n"
            )
        };
        let mut pods = [
            TargetAccumulator::new(labels("old")),
            TargetAccumulator::new(labels("new")),
            TargetAccumulator::new(labels("new")),
        ];
        let mut strata = StrataPending::new(&r.analyses[0].checks);
        let mut pooled: Vec<[Vec<f64>; 2]> = r.analyses[0]
            .checks
            .iter()
            .map(|c| [vec![0.0; c.slots()], vec![0.0; c.slots()]])
            .collect();
        let pages = [
            [
                wl("shop", "cart", 0, 0),
                wl("shop", "cart", 0, 0),
                wl("shop", "web", 0, 0),
            ],
            [
                wl("shop", "cart", 100, 1),
                wl("shop", "cart", 50, 2),
                wl("shop", "web", 70, 7),
            ],
        ];
        for round in &pages {
            for (acc, page) in pods.iter_mut().zip(round) {
                let rep = acc.ingest(page, &r);
                strata.learn(&rep.strata);
                for d in &rep.deltas {
                    assert!(add_delta(&mut pooled, d));
                    assert!(strata.add(d));
                }
            }
        }
        assert_eq!(stratum_id("shop/cart"), stratum_id("shop/cart"));
        assert_ne!(stratum_id("shop/cart"), stratum_id("shop/web"));
        let mut got = strata.take();
        let mut error_rate = std::mem::take(&mut got[0]);
        error_rate.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(error_rate.len(), 2);
        assert_eq!(&*error_rate[0].name, "shop/cart");
        assert_eq!(error_rate[0].slots, [vec![101.0, 1.0], vec![52.0, 2.0]]);
        assert_eq!(&*error_rate[1].name, "shop/web");
        assert_eq!(error_rate[1].slots, [vec![0.0, 0.0], vec![77.0, 7.0]]);
        // The pooled slots are the sum of the strata; take() empties them for the next tick.
        assert_eq!(pooled[0], [vec![101.0, 1.0], vec![129.0, 9.0]]);
        assert!(strata.take().iter().all(Vec::is_empty));
    }

    fn labels(rev: &str) -> BTreeMap<String, String> {
        [("revision".to_string(), rev.to_string())].into()
    }

    fn page(ok: u64, err: u64, fast: u64, slow: u64) -> String {
        format!(
            "# TYPE istio_requests_total counter\n\
             istio_requests_total{{response_code=\"200\",reporter=\"destination\",response_flags=\"-\"}} {ok}\n\
             istio_requests_total{{response_code=\"503\",reporter=\"destination\",response_flags=\"UF,URX\"}} {err}\n\
             istio_requests_total{{response_code=\"503\",reporter=\"source\",response_flags=\"-\"}} 999\n\
             # TYPE istio_request_duration_milliseconds histogram\n\
             istio_request_duration_milliseconds_bucket{{reporter=\"destination\",le=\"100\"}} {fast}\n\
             istio_request_duration_milliseconds_bucket{{reporter=\"destination\",le=\"250\"}} {fast}\n\
             istio_request_duration_milliseconds_bucket{{reporter=\"destination\",le=\"+Inf\"}} {}\n\
             istio_request_duration_milliseconds_count{{reporter=\"destination\"}} {}\n\
             envoy_server_uptime{{}} 5\n",
            fast + slow,
            fast + slow,
        )
    }

    fn get(report: &IngestReport, check: u16, slot: u16) -> f64 {
        report
            .deltas
            .iter()
            .filter(|d| d.check == check && d.slot == slot)
            .map(|d| d.value)
            .sum()
    }

    #[test]
    fn first_scrape_records_then_deltas_flow() {
        let r = routing(1);
        let mut acc = TargetAccumulator::new(labels("new"));
        let first = acc.ingest(&page(100, 2, 90, 10), &r);
        assert!(first.deltas.is_empty());
        assert_eq!(first.samples, 7, "envoy_server_uptime is not wanted");
        assert_eq!(first.skipped, 1);
        let second = acc.ingest(&page(150, 5, 130, 20), &r);
        assert!(second
            .deltas
            .iter()
            .all(|d| d.side == Side::Canary && d.analysis == 7));
        assert_eq!(
            get(&second, 0, 0),
            53.0,
            "exposure: destination requests only"
        );
        assert_eq!(get(&second, 0, 1), 3.0, "events: 5xx");
        // latency-tail boundaries [100, 250, 500, 1000]: slot 0 = +Inf, 1..=4 below b, 5..=8 count with b.
        assert_eq!(get(&second, 1, 0), 50.0);
        assert_eq!(get(&second, 1, 1), 40.0);
        assert_eq!(get(&second, 1, 2), 40.0);
        assert_eq!(
            get(&second, 1, 3),
            0.0,
            "500 is not a bound of this histogram"
        );
        assert_eq!(get(&second, 1, 5), 50.0);
        assert_eq!(get(&second, 1, 6), 50.0);
        assert_eq!(get(&second, 1, 7), 0.0, "no exposure for a missing bound");
    }

    #[test]
    fn add_delta_sums_reports_into_the_tick_slots() {
        let r = routing(1);
        let checks = &r.analyses[0].checks;
        let mut pending: Vec<[Vec<f64>; 2]> = checks
            .iter()
            .map(|c| [vec![0.0; c.slots()], vec![0.0; c.slots()]])
            .collect();
        let mut old = TargetAccumulator::new(labels("old"));
        let mut new = TargetAccumulator::new(labels("new"));
        old.ingest(&page(100, 2, 90, 10), &r);
        new.ingest(&page(100, 2, 90, 10), &r);
        let a = old.ingest(&page(130, 3, 110, 20), &r);
        let b = new.ingest(&page(160, 6, 130, 20), &r);
        let c = new.ingest(&page(170, 6, 135, 25), &r);
        for d in a.deltas.iter().chain(&b.deltas).chain(&c.deltas) {
            assert!(add_delta(&mut pending, d));
        }
        assert_eq!(pending[0][0], vec![31.0, 1.0]);
        assert_eq!(pending[0][1], vec![74.0, 4.0]);
        // latency-tail: +Inf, below 100/250/500/1000, exposure with 100/250/500/1000.
        assert_eq!(pending[1][1][0], 60.0);
        assert_eq!(pending[1][1][1], 45.0);
        assert_eq!(pending[1][1][5], 60.0);
        let stray = Delta {
            analysis: 7,
            check: 5,
            side: Side::Canary,
            stratum: 0,
            slot: 0,
            value: 1.0,
        };
        assert!(!add_delta(&mut pending, &stray), "no such check");
    }

    #[test]
    fn resets_count_from_zero_and_new_series_count_whole() {
        let r = routing(1);
        let mut acc = TargetAccumulator::new(labels("old"));
        acc.ingest(&page(100, 2, 90, 10), &r);
        let after_restart = acc.ingest(&page(10, 1, 9, 2), &r);
        assert!(after_restart.resets >= 2);
        assert_eq!(get(&after_restart, 0, 0), 0.0, "held until the next page");
        let confirmed = acc.ingest(&page(12, 1, 10, 3), &r);
        assert_eq!(confirmed.resets, 0);
        assert_eq!(
            get(&confirmed, 0, 0),
            13.0,
            "a restart counts everything since it: 12 + 1"
        );
        assert_eq!(get(&confirmed, 0, 1), 1.0);
        let extra = "istio_requests_total{response_code=\"500\",reporter=\"destination\"} 4\n";
        let p = page(12, 1, 10, 3) + extra;
        let with_new = acc.ingest(&p, &r);
        assert_eq!(with_new.new_series, 1);
        assert_eq!(
            get(&with_new, 0, 1),
            4.0,
            "a new 5xx series counts from zero"
        );
    }

    #[test]
    fn a_dip_without_restart_adds_no_jump_and_steady_decreases_add_nothing() {
        let r = routing(1);
        let mut acc = TargetAccumulator::new(labels("old"));
        acc.ingest(&page(1_000_000, 1000, 900_000, 100_000), &r);
        // The exporter reports a lower value once, then the counter goes on: a dip, not a
        // restart; counting the dipped value whole would add a million requests.
        let dip = acc.ingest(&page(999_000, 999, 899_000, 100_000), &r);
        assert!(dip.resets >= 2, "{dip:?}");
        assert!(dip.deltas.iter().all(|d| d.value == 0.0), "{dip:?}");
        let on = acc.ingest(&page(1_000_100, 1001, 900_100, 100_000), &r);
        assert_eq!(on.resets, 0);
        assert_eq!(
            get(&on, 0, 0),
            101.0,
            "counted from the value before the dip"
        );
        assert_eq!(get(&on, 0, 1), 1.0);
        // Lower on every page: nothing is added, every page counts its resets.
        let mut v = 1_000_000u64;
        for _ in 0..5 {
            v -= 1000;
            let rep = acc.ingest(&page(v, v / 1000, v - 100_000, 100_000), &r);
            assert!(rep.resets >= 2, "{rep:?}");
            assert!(rep.deltas.iter().all(|d| d.value == 0.0), "{rep:?}");
        }
        // Back above the highest value before the run of decreases (1,000,100 requests, 1,001
        // errors): only the gain above it counts (50 + 1), not the depth of the last dip.
        let back = acc.ingest(&page(1_000_150, 1002, 900_150, 100_000), &r);
        assert_eq!(back.resets, 0);
        assert_eq!(get(&back, 0, 0), 51.0, "{back:?}");
    }

    #[test]
    fn analysis_added_later_gets_no_delta_from_before_it() {
        let mut acc = TargetAccumulator::new(labels("new"));
        acc.ingest(&page(100, 2, 90, 10), &Routing::empty());
        let mut r = routing(2);
        r.analyses[0].since_generation = 2;
        let first_with = acc.ingest(&page(150, 5, 130, 20), &r);
        assert!(
            first_with.deltas.is_empty(),
            "the interval straddles the analysis start"
        );
        let next = acc.ingest(&page(160, 6, 140, 20), &r);
        assert_eq!(get(&next, 0, 0), 11.0);
    }

    #[test]
    fn series_in_both_cohorts_are_left_out() {
        let mut r = routing(1);
        r.analyses[0].canary = Selector::parse(r#"{reporter="destination"}"#).unwrap();
        r.analyses[0].baseline = Selector::parse(r#"{revision="new"}"#).unwrap();
        let mut acc = TargetAccumulator::new(labels("new"));
        let rep = acc.ingest(&page(1, 1, 1, 1), &r);
        assert!(rep.overlaps > 0);
        assert!(acc.ingest(&page(2, 2, 2, 2), &r).deltas.is_empty());
    }

    #[test]
    fn unrelated_target_contributes_nothing() {
        let r = routing(1);
        let mut acc = TargetAccumulator::new(labels("other"));
        acc.ingest(&page(1, 1, 1, 1), &r);
        assert!(acc.ingest(&page(5, 5, 5, 5), &r).deltas.is_empty());
    }

    #[test]
    fn events_from_another_family_and_from_the_same_family() {
        let cat = Catalog::builtin();
        let r = Routing::new(
            1,
            vec![RoutedAnalysis {
                id: 3,
                since_generation: 1,
                baseline: Selector::parse(r#"{revision="old"}"#).unwrap(),
                canary: Selector::parse(r#"{revision="new"}"#).unwrap(),
                checks: vec![
                    Arc::new(cat.get("istiod-xds-rejects").unwrap().clone()),
                    Arc::new(cat.get("istiod-push-errors").unwrap().clone()),
                ],
            }],
        );
        let page = |pushes: u64, senderr: u64, rejects: Option<u64>| {
            let mut p = format!(
                "# TYPE pilot_xds_pushes counter\n\
                 pilot_xds_pushes{{type=\"cds\"}} {pushes}\n\
                 pilot_xds_pushes{{type=\"cds_senderr\"}} {senderr}\n"
            );
            if let Some(r) = rejects {
                p.push_str(&format!(
                    "# TYPE pilot_total_xds_rejects counter\npilot_total_xds_rejects{{type=\"cds\"}} {r}\n"
                ));
            }
            p
        };
        let mut acc = TargetAccumulator::new(labels("new"));
        acc.ingest(&page(100, 1, None), &r);
        // The rejects family appears after the first reject: it counts from zero.
        let rep = acc.ingest(&page(160, 3, Some(4)), &r);
        assert!(rep.deltas.iter().all(|d| d.side == Side::Canary));
        assert_eq!(
            get(&rep, 0, 0),
            60.0,
            "rejects: exposure = pushes without senderr"
        );
        assert_eq!(
            get(&rep, 0, 1),
            4.0,
            "rejects: events from the other family"
        );
        assert_eq!(
            get(&rep, 1, 0),
            62.0,
            "push errors: exposure = every push attempt"
        );
        assert_eq!(get(&rep, 1, 1), 2.0, "push errors: the senderr series");
    }

    #[test]
    fn duplicates_count_once_and_returning_series_do_not_count_whole() {
        let r = routing(1);
        let mut acc = TargetAccumulator::new(labels("new"));
        let line = |v: u64| {
            format!("istio_requests_total{{reporter=\"destination\",response_code=\"200\"}} {v}\n")
        };
        acc.ingest(&line(100), &r);
        let rep = acc.ingest(&(line(110) + &line(999_999)), &r);
        assert_eq!(rep.duplicates, 1);
        assert_eq!(get(&rep, 0, 0), 10.0, "the repeat is ignored");
        assert_eq!(get(&acc.ingest(&line(120), &r), 0, 0), 10.0);
        // Forgotten by the TTL (pages without it), then back: a new starting point, no delta.
        let other = "istio_requests_total{reporter=\"destination\",response_code=\"500\"} 1\n";
        for _ in 0..30 {
            acc.ingest(other, &r);
        }
        let back = acc.ingest(&line(5000), &r);
        assert_eq!(back.returned, 1);
        assert_eq!(get(&back, 0, 0), 0.0, "not its whole value");
        assert_eq!(get(&acc.ingest(&line(5007), &r), 0, 0), 7.0);
    }

    #[test]
    fn restored_values_give_deltas_since_them() {
        let r = routing(1);
        let mut acc = TargetAccumulator::new(labels("new"));
        acc.ingest(&page(100, 2, 90, 10), &r);
        let snap = acc.export();
        let mut again = TargetAccumulator::new(labels("new"));
        again.restore(&snap, 1);
        let rep = again.ingest(&page(150, 5, 130, 20), &r);
        assert_eq!(
            get(&rep, 0, 0),
            53.0,
            "the first page after a restart gives deltas"
        );
        assert_eq!(get(&rep, 0, 1), 3.0);
        let mut newer = TargetAccumulator::new(labels("new"));
        newer.restore(&snap, 0);
        let mut r2 = routing(2);
        r2.analyses[0].since_generation = 2;
        assert!(
            newer.ingest(&page(150, 5, 130, 20), &r2).deltas.is_empty(),
            "an analysis created after the restart gets nothing from before it"
        );
    }

    proptest! {
        /// Whatever the sequence of counter values (growth, resets, repeats), deltas are never
        /// negative, without resets they sum to last - first (order of scrapes respected), and
        /// a decrease counts only once the next page tells a restart (grows from the new value:
        /// counts it whole) from a dip (back above the old value: counts from the old one).
        #[test]
        fn deltas_never_negative_and_telescoping(values in proptest::collection::vec(0u32..1000, 2..40)) {
            let r = routing(1);
            let mut acc = TargetAccumulator::new(labels("new"));
            let mut total = 0.0;
            let mut expected = 0.0;
            let mut held: Option<u32> = None;
            for (i, v) in values.iter().enumerate() {
                let p = format!("istio_requests_total{{reporter=\"destination\",response_code=\"200\"}} {v}\n");
                let rep = acc.ingest(&p, &r);
                for d in &rep.deltas {
                    prop_assert!(d.value >= 0.0);
                }
                total += get(&rep, 0, 0);
                if i > 0 {
                    let prev = values[i - 1];
                    if *v < prev {
                        held = Some(held.map_or(prev, |h| h.max(prev)));
                    } else {
                        expected += match held.take() {
                            None => (*v - prev) as f64,
                            Some(from) if *v >= from => (*v - from) as f64,
                            Some(_) => *v as f64,
                        };
                    }
                }
            }
            prop_assert_eq!(total, expected);
        }
    }
}

#[cfg(test)]
mod limit_tests {
    //! Plausibility limits: a page that breaks one gives nothing, and the target's memory starts
    //! over, so neither the broken values nor deltas against them ever reach an e-process.
    use super::*;
    use crate::judge::Catalog;

    fn routing() -> Routing {
        let cat = Catalog::builtin();
        Routing::new(
            1,
            vec![RoutedAnalysis {
                id: 7,
                since_generation: 1,
                baseline: Selector::parse(r#"{revision="old"}"#).unwrap(),
                canary: Selector::parse(r#"{revision="new"}"#).unwrap(),
                checks: vec![Arc::new(cat.get("error-rate").unwrap().clone())],
            }],
        )
    }

    fn page(ok: &str, err: u64) -> String {
        format!(
            "# TYPE istio_requests_total counter\n\
             istio_requests_total{{response_code=\"200\",reporter=\"destination\"}} {ok}\n\
             istio_requests_total{{response_code=\"503\",reporter=\"destination\"}} {err}\n"
        )
    }

    fn acc() -> TargetAccumulator {
        TargetAccumulator::new([("revision".to_string(), "new".to_string())].into())
    }

    fn total(r: &IngestReport) -> f64 {
        r.deltas.iter().map(|d| d.value).sum()
    }

    /// One absurd page: nothing from it, nothing from the page after (new starting values), then
    /// deltas again and the quarantine lifted.
    fn absurd_page_is_quarantined_then_lifts(bad: &str, limit: &str) {
        let r = routing();
        let mut a = acc();
        a.ingest(&page("1000", 10), &r);
        assert!(total(&a.ingest(&page("2000", 20), &r)) > 0.0);
        let broken = a.ingest(&page(bad, 30), &r);
        let v = broken.quarantined.as_ref().expect("quarantined");
        assert_eq!(v.limit, limit, "{v}");
        assert!(v.message.contains("istio_requests_total"), "{v}");
        assert!(broken.deltas.is_empty(), "{:?}", broken.deltas);
        assert_eq!(a.quarantine(), Some(v));
        assert_eq!(a.series(), 0, "the memory starts over");
        // Back to the true value: no delta against the absurd one nor against the one before.
        let after = a.ingest(&page("3000", 30), &r);
        assert!(after.quarantined.is_none());
        assert!(after.deltas.is_empty(), "{:?}", after.deltas);
        assert!(
            a.quarantine().is_some(),
            "held until deltas are sound again"
        );
        let resumed = a.ingest(&page("3100", 31), &r);
        assert_eq!(total(&resumed), 102.0, "101 requests, 1 of them 5xx");
        assert!(a.quarantine().is_none());
    }

    #[test]
    fn a_u64_wrap_is_quarantined() {
        absurd_page_is_quarantined_then_lifts("18446744073709551615", "max_counter_value");
    }

    #[test]
    fn a_huge_value_is_quarantined() {
        absurd_page_is_quarantined_then_lifts("1e300", "max_counter_value");
    }

    #[test]
    fn non_finite_values_are_quarantined() {
        absurd_page_is_quarantined_then_lifts("NaN", "finite");
        absurd_page_is_quarantined_then_lifts("+Inf", "finite");
    }

    #[test]
    fn a_negative_counter_is_quarantined() {
        absurd_page_is_quarantined_then_lifts("-5", "max_counter_value");
    }

    #[test]
    fn a_value_just_above_2_pow_53_is_quarantined_and_2_pow_53_is_not() {
        let r = routing();
        let mut a = acc();
        assert!(a
            .ingest(&page("9007199254740992", 0), &r)
            .quarantined
            .is_none());
        let v = a
            .ingest(&page("9007199254740994", 0), &r)
            .quarantined
            .unwrap();
        assert_eq!(v.limit, "max_counter_value");
    }

    #[test]
    fn too_many_samples_quarantine_the_page() {
        let r = routing();
        let mut a = acc().with_limits(Limits {
            sample_limit: 3,
            ..Limits::default()
        });
        assert!(a.ingest(&page("1", 1), &r).quarantined.is_none());
        // Samples of families no check reads count too, as in Prometheus.
        let p = format!("{}envoy_a 1\nenvoy_b 2\n", page("2", 2));
        let rep = a.ingest(&p, &r);
        let v = rep.quarantined.unwrap();
        assert_eq!(v.limit, "sample_limit");
        assert!(v.message.contains("4 samples"), "{v}");
        assert!(rep.deltas.is_empty());
    }

    #[test]
    fn long_label_names_and_values_quarantine_the_page() {
        let r = routing();
        let long = "x".repeat(3000);
        let mut a = acc();
        a.ingest(&page("1", 1), &r);
        let p = format!(
            "{}istio_requests_total{{response_code=\"500\",reporter=\"destination\",path=\"{long}\"}} 1\n",
            page("2", 2)
        );
        let v = a.ingest(&p, &r).quarantined.unwrap();
        assert_eq!(v.limit, "label_value_length_limit");
        assert!(v.message.contains("3000 bytes for label path"), "{v}");
        let name = "n".repeat(300);
        let p = format!("{}istio_requests_total{{{name}=\"a\"}} 1\n", page("2", 2));
        let v = a.ingest(&p, &r).quarantined.unwrap();
        assert_eq!(v.limit, "label_name_length_limit");
    }

    #[test]
    fn growth_beyond_the_rate_ceiling_is_quarantined_per_series_and_per_family() {
        let r = routing();
        let limits = Limits {
            max_increase_per_second: 1000.0,
            ..Limits::default()
        };
        let mut a = acc().with_limits(limits.clone());
        let f = |p: &str| p.to_owned();
        a.ingest_at(&f(&page("0", 0)), &r, 100.0, None, |_| {});
        // 9,000 in 10 s: 900/s, under the ceiling.
        let ok = a.ingest_at(&page("9000", 0), &r, 110.0, None, |_| {});
        assert!(ok.quarantined.is_none());
        assert_eq!(total(&ok), 9000.0);
        // 11,000 more in 10 s: 1,100/s.
        let v = a
            .ingest_at(&page("20000", 0), &r, 120.0, None, |_| {})
            .quarantined
            .unwrap();
        assert_eq!(v.limit, "max_increase_per_second");
        assert!(v.message.contains("1100/s"), "{v}");
        // Two series each under the ceiling, together above it: one pod cannot serve that.
        let mut a = acc().with_limits(limits);
        let two = |ok: u64, err: u64| {
            format!(
                "istio_requests_total{{response_code=\"200\",reporter=\"destination\"}} {ok}\n\
                 istio_requests_total{{response_code=\"200\",reporter=\"source\"}} {err}\n"
            )
        };
        a.ingest_at(&two(0, 0), &r, 0.0, None, |_| {});
        let v = a
            .ingest_at(&two(6000, 6000), &r, 10.0, None, |_| {})
            .quarantined
            .unwrap();
        assert!(v.message.contains("together"), "{v}");
    }

    #[test]
    fn the_rate_ceiling_uses_the_time_since_the_series_was_last_seen() {
        let r = routing();
        let mut a = acc().with_limits(Limits {
            max_increase_per_second: 1000.0,
            ..Limits::default()
        });
        let one = "istio_requests_total{response_code=\"200\",reporter=\"destination\"} 0\n";
        a.ingest_at(one, &r, 0.0, None, |_| {});
        // The series is missing for two pages, then back 5,000 higher 10 s after it was last
        // seen: 500/s, not 5,000/s over the last page's 1 s.
        a.ingest_at("other 1\n", &r, 9.0, None, |_| {});
        let back = "istio_requests_total{response_code=\"200\",reporter=\"destination\"} 5000\n";
        let rep = a.ingest_at(back, &r, 10.0, None, |_| {});
        assert!(rep.quarantined.is_none(), "{:?}", rep.quarantined);
        assert_eq!(total(&rep), 5000.0);
    }

    #[test]
    fn restored_values_beyond_the_limits_are_not_taken_back() {
        let r = routing();
        let mut a = acc();
        a.restore(
            &SeriesSnapshot {
                series: vec![(
                    "istio_requests_total".into(),
                    SeriesKey::of("response_code=\"200\",reporter=\"destination\""),
                    1e300,
                )],
            },
            1,
        );
        assert_eq!(a.series(), 0);
        let _ = r;
    }
}
