//! meshgate's judge in the decision benchmark, through the shipped path.
//!
//! Per simulated pod, every scrape renders the pod's cumulative counters as the Prometheus text
//! page its sidecar would serve (`istio_requests_total` and the `istio_request_duration_milliseconds`
//! histogram with Envoy's bounds and `le` spelling, a 200 and a 503 series each, with Istio's
//! label names and values ([`PAGE_LABELS`]), series created lazily on their first request and
//! gone after a restart; istiod pages for the xDS scenario) and feeds it to the
//! pod's own [`TargetAccumulator`] under a [`Routing`] of one [`RoutedAnalysis`], as the daemon's
//! scrape loop does. The deltas are summed into `pending[check][side][slot]` with
//! [`cohort::add_delta`], the function the daemon's engine uses, and every tick calls
//! [`Analysis::tick`] with the daemon's `[judge]` defaults and a [`DataQuality`] built by the rules
//! of the daemon's `Engine::quality` from the pods' scrape health. Missed scrapes and restarts
//! reach the judge only through the pages and that health.
//!
//! A/A runs go on after a GO to count false alarms at 2 h: each analysis has a twin on the same
//! slots that can only end in NO-GO (no GO, no INCONCLUSIVE), whose NO-GO time is the crossing.
//!
//! Only what the checks read is rendered: the `reporter="destination"` series (no outbound
//! `reporter="source"` ones), and of the histogram its `_bucket` lines (no `_sum` / `_count`).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use meshgate::config::{JudgeConfig, ScrapeConfig};
use meshgate::scrape::UNRELIABLE_RESET_PAGES;
use meshgate::sim::page::{
    escape_label, parse_labels, push_u64, request_labels, SidecarIdentity, Workload,
};
use meshgate::sim::traffic::{Body, Direction, SeriesSpec, ENVOY_LE};
use meshgate_core::cohort::{self, IngestReport, RoutedAnalysis, Routing, Selector};
use meshgate_core::cohort::{Side, TargetAccumulator};
use meshgate_core::judge::{
    Analysis, Catalog, CheckSpec, CohortQuality, DataQuality, DispersionMode, GoCertificate,
    QualityThresholds, Settings, TickInput, Verdict,
};

use super::{Decision, Pod, NB, PODS};

/// The revisions of the two cohorts (the `revision` target label).
pub const REVISIONS: [&str; 2] = ["1-24-2", "1-25-0"];
/// The analysis id of the routed analysis.
const ANALYSIS_ID: u64 = 1;

// === pages ===

/// The labels of the rendered series, a subset of the 25 that Istio's `istio_stats` filter puts
/// on `istio_requests_total` and (Envoy's default tags) on its histograms, in its order and with
/// the simulator's values. Parsing costs in proportion to the page's bytes: with all 25 labels
/// (`REQUEST_LABELS`, about 900 bytes a line) the benchmark ran 12 times as long as with the
/// counters in memory; the selectors and checks read only these.
const PAGE_LABELS: [&str; 4] = [
    "reporter",
    "destination_workload",
    "destination_workload_namespace",
    "response_code",
];

/// Line prefixes (`name{labels} `) of a sidecar's or istiod's page, the same for every pod (the
/// pod is a target label, never a series label).
struct PageText {
    /// `istio_requests_total` 200 and 503; xDS: `pilot_xds_pushes`, `pilot_total_xds_rejects`.
    counters: [String; 2],
    /// `istio_request_duration_milliseconds_bucket` per `le`, for the 200 and the 503 series.
    buckets: [Vec<String>; 2],
}

/// The series of a sidecar page: inbound from the ingress gateway, 200 and 503 (UF,URX).
fn series() -> [SeriesSpec; 2] {
    let spec = |code, flags, error, hist| SeriesSpec {
        direction: Direction::Inbound,
        peer: 0,
        code,
        flags,
        error,
        weight: 1.0,
        latency_scale: 1.0,
        body: if error { Body::Error } else { Body::Ok },
        hist,
    };
    [spec(200, "-", false, 0), spec(503, "UF,URX", true, 1)]
}

fn page_text() -> &'static PageText {
    static TEXT: OnceLock<PageText> = OnceLock::new();
    TEXT.get_or_init(|| {
        let info = SidecarIdentity {
            cluster: "Kubernetes".into(),
            proxy_version: "1.25.0".into(),
            me: Workload::app("cart", "shop"),
            inbound_peers: vec![Workload::ingress_gateway()],
            outbound_peers: Vec::new(),
        };
        let [ok, err] = series();
        let labels = |s: &SeriesSpec| {
            parse_labels(&request_labels(&info, s))
                .expect("the simulator's labels parse")
                .into_iter()
                .filter(|(n, _)| PAGE_LABELS.contains(&n.as_str()))
                .map(|(n, v)| format!("{n}=\"{}\"", escape_label(&v)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let counter = |s: &SeriesSpec| format!("istio_requests_total{{{}}} ", labels(s));
        // Envoy's default tags: the histograms carry the labels of their request series.
        let buckets = |s: &SeriesSpec| {
            let l = labels(s);
            ENVOY_LE
                .iter()
                .map(|le| format!("istio_request_duration_milliseconds_bucket{{{l},le=\"{le}\"}} "))
                .collect()
        };
        PageText {
            counters: [counter(&ok), counter(&err)],
            buckets: [buckets(&ok), buckets(&err)],
        }
    })
}

fn line(out: &mut Vec<u8>, prefix: &str, v: f64) {
    out.extend_from_slice(prefix.as_bytes());
    push_u64(out, v as u64);
    out.push(b'\n');
}

/// The page of a sidecar whose counters since its (re)start are `pod`: series exist from their
/// first request on, as Envoy creates stats lazily.
pub(super) fn render_sidecar(pod: &Pod, out: &mut Vec<u8>) {
    let text = page_text();
    let (requests, errors) = (pod.cum[0], pod.cum[1]);
    let counts = [requests - errors, errors];
    if requests > 0.0 {
        out.extend_from_slice(b"# TYPE istio_requests_total counter\n");
    }
    for (prefix, &v) in text.counters.iter().zip(&counts) {
        if v > 0.0 {
            line(out, prefix, v);
        }
    }
    if requests > 0.0 {
        out.extend_from_slice(b"# TYPE istio_request_duration_milliseconds histogram\n");
    }
    for (code, prefixes) in text.buckets.iter().enumerate() {
        if counts[code] <= 0.0 {
            continue;
        }
        let mut cum = 0.0;
        for (b, prefix) in prefixes.iter().enumerate() {
            let n = pod.cum[2 + b];
            cum += if code == 0 {
                n - pod.err_buckets[b]
            } else {
                pod.err_buckets[b]
            };
            line(out, prefix, cum);
        }
    }
}

/// The page of an istiod replica (xDS scenario): pushes, and rejects once there was one.
pub(super) fn render_istiod(pod: &Pod, out: &mut Vec<u8>) {
    if pod.cum[0] > 0.0 {
        out.extend_from_slice(b"# TYPE pilot_xds_pushes counter\n");
        line(out, "pilot_xds_pushes{type=\"cds\"} ", pod.cum[0]);
    }
    if pod.cum[1] > 0.0 {
        out.extend_from_slice(b"# TYPE pilot_total_xds_rejects counter\n");
        line(out, "pilot_total_xds_rejects{type=\"cds\"} ", pod.cum[1]);
    }
}

// === the analysis as the daemon sets it up ===

/// The variants of the shipped judge, in [`Shipped::results`] order.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    /// The catalog's checks as they are.
    Plain,
    /// `robust = true`.
    Robust,
    /// `dispersion = "poisson"`.
    Poisson,
}

/// Checks of the analyses: the catalog's default set (an analysis that names no checks), or for
/// the xDS scenario the catalog's `istiod-xds-rejects`; changed as the variant says.
fn checks(xds: bool, variant: Variant) -> &'static [Arc<CheckSpec>] {
    static CHECKS: OnceLock<[[Vec<Arc<CheckSpec>>; 3]; 2]> = OnceLock::new();
    &CHECKS.get_or_init(|| {
        let cat = Catalog::builtin();
        let make = |names: &[String], variant: Variant| {
            names
                .iter()
                .map(|n| {
                    let mut c = cat.get(n).expect("a catalog check").clone();
                    c.robust = variant == Variant::Robust;
                    if variant == Variant::Poisson {
                        c.dispersion = DispersionMode::Poisson;
                    }
                    Arc::new(c)
                })
                .collect::<Vec<_>>()
        };
        let all = |names: Vec<String>| {
            [Variant::Plain, Variant::Robust, Variant::Poisson].map(|v| make(&names, v))
        };
        [
            all(cat.default_names()),
            all(vec!["istiod-xds-rejects".to_string()]),
        ]
    })[usize::from(xds)][variant as usize]
}

fn routing(xds: bool) -> &'static Routing {
    static ROUTING: OnceLock<[Routing; 2]> = OnceLock::new();
    &ROUTING.get_or_init(|| {
        let r = |xds: bool| {
            let sel =
                |rev: &str| Selector::parse(&format!("{{revision=\"{rev}\"}}")).expect("selector");
            Routing::new(
                1,
                vec![RoutedAnalysis {
                    id: ANALYSIS_ID,
                    since_generation: 1,
                    baseline: sel(REVISIONS[0]),
                    canary: sel(REVISIONS[1]),
                    checks: checks(xds, Variant::Plain).to_vec(),
                }],
            )
        };
        [r(false), r(true)]
    })[usize::from(xds)]
}

/// The settings of an analysis that sets none: the daemon's `[judge]` defaults.
pub fn settings() -> Settings {
    let j = JudgeConfig::default();
    Settings {
        alpha: j.alpha,
        min_duration: j.min_duration,
        max_duration: j.max_duration,
        min_exposure: j.min_exposure,
        slo_go: j.slo_go,
        go_certificate: j.go_certificate,
        design: Default::default(),
        soak: std::time::Duration::ZERO,
    }
}

/// One scrape target: its accumulator and the health the daemon keeps of it.
struct Target {
    acc: TargetAccumulator,
    /// Last good scrape, seconds.
    last_success: Option<f64>,
    consecutive_failures: u64,
    consecutive_reset_pages: u64,
    /// Has sent the analysis data (a member of its cohort, the daemon's `Slot::members`).
    member: bool,
}

/// One analysis as the daemon runs it, and, for A/A runs, a twin on the same data that can end
/// only in NO-GO (no GO, no INCONCLUSIVE): when its NO-GO test first crossed, even after a GO.
struct Judged {
    specs: Vec<&'static CheckSpec>,
    real: Analysis,
    twin: Option<Analysis>,
    decision: Decision,
    first_cross: Option<f64>,
}

impl Judged {
    fn new(specs: &'static [Arc<CheckSpec>], twin: bool, go: GoCertificate) -> Judged {
        let specs: Vec<&CheckSpec> = specs.iter().map(|c| c.as_ref()).collect();
        let s = Settings {
            go_certificate: go,
            ..settings()
        };
        let never_go = Settings {
            min_exposure: f64::INFINITY,
            max_duration: Duration::from_secs(1 << 40),
            ..s.clone()
        };
        Judged {
            real: Analysis::new(s, &specs),
            twin: twin.then(|| Analysis::new(never_go, &specs)),
            specs,
            decision: Decision::None,
            first_cross: None,
        }
    }

    fn done(&self) -> bool {
        self.real.verdict().is_final() && self.twin.as_ref().is_none_or(|a| a.verdict().is_final())
    }

    fn tick(
        &mut self,
        t: f64,
        slots: &[[Vec<f64>; 2]],
        strata: &[Vec<meshgate_core::judge::Stratum>],
        pods: &[Vec<meshgate_core::judge::PodGroup>],
        quality: &DataQuality,
    ) {
        let input = || TickInput {
            pods,
            slots,
            strata,
            quality: quality.clone(),
            elapsed: Duration::from_secs_f64(t),
        };
        if !self.real.verdict().is_final() {
            match self.real.tick(&self.specs, input()) {
                Verdict::NoGo => {
                    self.decision = Decision::NoGo(t);
                    if self.twin.is_none() {
                        self.first_cross = Some(t);
                    }
                }
                Verdict::Go => self.decision = Decision::Go(t),
                Verdict::Pending | Verdict::Inconclusive => {}
            }
        }
        if let Some(twin) = &mut self.twin {
            if !twin.verdict().is_final() && twin.tick(&self.specs, input()) == Verdict::NoGo {
                self.first_cross = Some(t);
            }
        }
    }
}

/// meshgate's judge on one run: ten targets, one routed analysis, the plain and the robust
/// analyses on its deltas.
pub(super) struct Shipped {
    xds: bool,
    routing: &'static Routing,
    targets: [[Target; PODS]; 2],
    pending: Vec<[Vec<f64>; 2]>,
    /// The same deltas per stratum, as the engine keeps them.
    strata: cohort::StrataPending,
    /// And per pod.
    pods: cohort::PodPending,
    resets: [u64; 2],
    overlaps: u64,
    stale_after: f64,
    thresholds: QualityThresholds,
    page: Vec<u8>,
    /// Plain, robust, Poisson.
    judged: [Judged; 3],
}

impl Shipped {
    /// `aa`: keep a twin per analysis for the crossing time after a GO.
    #[cfg(test)]
    pub(super) fn new(xds: bool, aa: bool) -> Shipped {
        Self::with_go_certificate(xds, aa, GoCertificate::default())
    }

    /// A shipped judge whose analyses use `go` (`aa`: keep a twin per analysis for the
    /// crossing time after a GO).
    pub(super) fn with_go_certificate(xds: bool, aa: bool, go: GoCertificate) -> Shipped {
        let target = |side: usize, p: usize| {
            let (role, ns, name) = if xds {
                ("istiod", "istio-system", "istiod")
            } else {
                ("proxy", "shop", "cart-v1")
            };
            let labels: BTreeMap<String, String> = [
                ("role", role.to_string()),
                ("namespace", ns.to_string()),
                ("pod", format!("{name}-{}-{p}", REVISIONS[side])),
                ("revision", REVISIONS[side].to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            Target {
                acc: TargetAccumulator::new(labels),
                last_success: None,
                consecutive_failures: 0,
                consecutive_reset_pages: 0,
                member: false,
            }
        };
        let routing = routing(xds);
        let judge = JudgeConfig::default();
        Shipped {
            xds,
            routing,
            targets: [
                std::array::from_fn(|p| target(0, p)),
                std::array::from_fn(|p| target(1, p)),
            ],
            pending: routing.analyses[0]
                .checks
                .iter()
                .map(|c| [vec![0.0; c.slots()], vec![0.0; c.slots()]])
                .collect(),
            strata: cohort::StrataPending::new(&routing.analyses[0].checks),
            pods: cohort::PodPending::new(&routing.analyses[0].checks),
            resets: [0; 2],
            overlaps: 0,
            stale_after: ScrapeConfig::default().stale_after().as_secs_f64(),
            thresholds: QualityThresholds {
                max_stale_fraction: judge.max_stale_fraction,
                min_fresh_targets: judge.min_fresh_targets,
            },
            page: Vec::with_capacity(64 * 1024),
            judged: [
                Judged::new(checks(xds, Variant::Plain), aa, go),
                Judged::new(checks(xds, Variant::Robust), aa, go),
                Judged::new(checks(xds, Variant::Poisson), aa, go),
            ],
        }
    }

    /// Both analyses (and twins) have a final verdict: nothing more to feed.
    pub(super) fn done(&self) -> bool {
        self.judged.iter().all(Judged::done)
    }

    /// The verdicts as benchmark decisions, and the first NO-GO crossings: plain, robust, Poisson.
    pub(super) fn results(&self) -> ([Decision; 3], [Option<f64>; 3]) {
        (
            self.judged.each_ref().map(|j| j.decision),
            self.judged.each_ref().map(|j| j.first_cross),
        )
    }

    /// One scrape of a pod at `t`: its page into its accumulator (or a failed scrape), the
    /// report into the health and the pending slots as the daemon's scrape loop and engine do.
    pub(super) fn scrape(
        &mut self,
        side: usize,
        p: usize,
        t: f64,
        pod: &Pod,
        ok: bool,
    ) -> IngestReport {
        let target = &mut self.targets[side][p];
        if !ok {
            target.consecutive_failures += 1;
            return IngestReport::default();
        }
        self.page.clear();
        if self.xds {
            render_istiod(pod, &mut self.page);
        } else {
            render_sidecar(pod, &mut self.page);
        }
        let page = std::str::from_utf8(&self.page).expect("ascii page");
        let rep = target.acc.ingest(page, self.routing);
        // The scrape loop's health (scrape.rs, record_success).
        target.last_success = Some(t);
        target.consecutive_failures = 0;
        if rep.resets > 0 {
            target.consecutive_reset_pages += 1;
        } else {
            target.consecutive_reset_pages = 0;
        }
        // The engine's take (daemon.rs).
        self.strata.learn(&rep.strata);
        for d in &rep.deltas {
            if d.analysis != ANALYSIS_ID {
                continue;
            }
            cohort::add_delta(&mut self.pending, d);
            self.strata.add(d);
            self.pods.add((side * PODS + p) as u32, d);
            target.member = true;
        }
        if target.member {
            self.resets[side] += rep.resets as u64;
        }
        self.overlaps += rep.overlaps as u64;
        rep
    }

    /// The data quality of the analysis at `t`, by the rules of the daemon's `Engine::quality`.
    fn quality(&self, t: f64) -> DataQuality {
        let cohort = |side: usize| {
            let mut q = CohortQuality {
                resets: self.resets[side],
                ..Default::default()
            };
            for target in &self.targets[side] {
                let recent = target
                    .last_success
                    .is_some_and(|at| t - at <= self.stale_after);
                if target.member {
                    q.targets += 1;
                    if recent && target.consecutive_reset_pages < UNRELIABLE_RESET_PAGES {
                        q.fresh += 1;
                    } else {
                        q.stale += 1;
                    }
                } else if target.last_success.is_none()
                    || (!recent && target.consecutive_failures > 0)
                {
                    // Never scraped successfully, or dark since before it sent data.
                    q.unreachable += 1;
                }
            }
            q
        };
        DataQuality {
            baseline: cohort(Side::Baseline.index()),
            canary: cohort(Side::Canary.index()),
            overlapping_series: self.overlaps,
            thresholds: self.thresholds.clone(),
            blocked_by: None,
            hold: None,
        }
    }

    /// The tick at `t` seconds since the analysis started: every analysis takes the pending
    /// slots, which then start again from zero.
    pub(super) fn tick(&mut self, t: f64) {
        let quality = self.quality(t);
        let strata = self.strata.take();
        let pods = self.pods.take();
        for j in &mut self.judged {
            j.tick(t, &self.pending, &strata, &pods, &quality);
        }
        for c in &mut self.pending {
            for side in c.iter_mut() {
                side.iter_mut().for_each(|x| *x = 0.0);
            }
        }
    }
}

/// Bucket counts of the `e` errors among a scrape interval's requests `buckets`
/// (non-cumulative): a multivariate hypergeometric draw, which of the requests failed.
pub(super) fn split_errors(
    rng: &mut rand::rngs::SmallRng,
    buckets: &[f64],
    errors: u64,
    out: &mut [f64; NB],
) {
    use rand_distr::{Distribution, Hypergeometric};
    let mut left: u64 = buckets.iter().map(|&b| b as u64).sum();
    let mut e = errors.min(left);
    for (i, &b) in buckets.iter().enumerate() {
        if e == 0 {
            break;
        }
        let b = b as u64;
        let k = if b >= left {
            e
        } else {
            Hypergeometric::new(left, b, e)
                .map(|d| d.sample(rng))
                .unwrap_or(0)
        };
        out[i] += k as f64;
        e -= k;
        left -= b;
    }
}

#[cfg(test)]
mod tests {
    use super::super::SLOTS;
    use super::*;

    /// A pod whose counters grow by `inc` (requests, errors, request buckets) and `inc_err`
    /// (the failed requests' buckets) per interval.
    fn grow(pod: &mut Pod, inc: &[f64; SLOTS], inc_err: &[f64; NB]) {
        for (c, i) in pod.cum.iter_mut().zip(inc) {
            *c += i;
        }
        for (c, i) in pod.err_buckets.iter_mut().zip(inc_err) {
            *c += i;
        }
    }

    fn pod() -> Pod {
        Pod {
            cum: [0.0; SLOTS],
            err_buckets: [0.0; NB],
            seen: [0.0; SLOTS],
        }
    }

    /// 150 requests per interval, `errors` of them failed; latencies in (25, 250] ms, the
    /// failed ones fast (<= 50 ms). Returns (request increments, failed-request buckets).
    fn interval(errors: f64) -> ([f64; SLOTS], [f64; NB]) {
        let mut inc = [0.0; SLOTS];
        inc[0] = 150.0;
        inc[1] = errors;
        // le 50, 100, 250 (bucket indices 5, 6, 7).
        inc[2 + 5] = 100.0;
        inc[2 + 6] = 40.0;
        inc[2 + 7] = 10.0;
        let mut err = [0.0; NB];
        err[5] = errors;
        (inc, err)
    }

    /// What the error-rate and latency-tail slots of one cohort should get from these counts.
    fn expected(requests: f64, errors: f64, above_100: f64, above_250: f64) -> [Vec<f64>; 2] {
        [
            vec![requests, errors],
            // +Inf; below 100/250/500/1000; with 100/250/500/1000.
            vec![
                requests,
                requests - above_100,
                requests - above_250,
                requests,
                requests,
                requests,
                requests,
                requests,
                requests,
            ],
        ]
    }

    fn take_pending(s: &mut Shipped, side: usize) -> [Vec<f64>; 2] {
        let out = [s.pending[0][side].clone(), s.pending[1][side].clone()];
        for c in &mut s.pending {
            for v in c.iter_mut() {
                v.iter_mut().for_each(|x| *x = 0.0);
            }
        }
        out
    }

    #[test]
    fn sidecar_page_has_istio_labels_and_envoy_buckets() {
        let mut p = pod();
        let (inc, err) = interval(2.0);
        grow(&mut p, &inc, &err);
        let mut out = Vec::new();
        render_sidecar(&p, &mut out);
        let page = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = page.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines.len(), 2 + 2 * 20, "{page}");
        let ok = lines[0];
        for l in [
            "reporter=\"destination\"",
            "destination_workload=\"cart-v1\"",
            "destination_workload_namespace=\"shop\"",
            "response_code=\"200\"",
        ] {
            assert!(ok.contains(l), "{ok}");
        }
        assert!(ok.ends_with("} 148"), "{ok}");
        assert!(lines[1].contains("response_code=\"503\"") && lines[1].ends_with("} 2"));
        assert!(lines[2].contains("le=\"0.5\"} 0"), "{}", lines[2]);
        assert!(lines[21].contains("le=\"+Inf\"} 148"), "{}", lines[21]);
        assert!(
            lines[41].contains("response_code=\"503\"") && lines[41].ends_with("le=\"+Inf\"} 2")
        );
        // Before any request there is nothing; no 5xx series before the first 5xx.
        let mut out = Vec::new();
        render_sidecar(&pod(), &mut out);
        assert!(out.is_empty());
        let mut p = pod();
        let (inc, err) = interval(0.0);
        grow(&mut p, &inc, &err);
        let mut out = Vec::new();
        render_sidecar(&p, &mut out);
        assert!(!String::from_utf8(out).unwrap().contains("503"));
    }

    /// The pages round trip: the accumulator's deltas summed with `add_delta` are the simulated
    /// per-interval counts; a missed scrape's counts arrive with the next page, a restart's
    /// (counters from zero again) one page later, once the next page confirms it.
    #[test]
    fn page_round_trip_through_the_accumulator() {
        let mut s = Shipped::new(false, false);
        let mut p = pod();
        s.scrape(1, 0, 0.0, &p, true);
        assert_eq!(take_pending(&mut s, 1), expected(0.0, 0.0, 0.0, 0.0));
        let mut resets = 0;
        for i in 1..=40 {
            let t = 15.0 * i as f64;
            let errors = (i % 3) as f64;
            let (inc, err) = interval(errors);
            if i == 25 {
                p.cum = [0.0; SLOTS];
                p.err_buckets = [0.0; NB];
            }
            grow(&mut p, &inc, &err);
            let missed = i == 10;
            let rep = s.scrape(1, 0, t, &p, !missed);
            resets += rep.resets;
            let got = take_pending(&mut s, 1);
            let want = match i {
                // Missed, then the next page has both intervals.
                10 | 25 => expected(0.0, 0.0, 0.0, 0.0),
                11 => expected(300.0, 1.0 + 2.0, 20.0, 0.0),
                // The restart's first page is held (a decrease), the next one confirms it.
                26 => expected(300.0, 1.0 + 2.0, 20.0, 0.0),
                _ => expected(150.0, errors, 10.0, 0.0),
            };
            assert_eq!(got, want, "interval {i}");
            assert_eq!(s.pending.len(), 2);
            assert!(
                s.targets[0][0].acc.series() == 0,
                "the baseline pod was never scraped"
            );
        }
        assert!(
            resets > 20,
            "the restart's page reset every series: {resets}"
        );
        assert_eq!(s.resets, [0, resets as u64]);
        assert_eq!(s.targets[1][0].consecutive_reset_pages, 0);
    }

    /// Synthetic cohorts (150 requests per pod per interval) through the shipped tick.
    fn run_synthetic(
        err_base: f64,
        err_canary: f64,
        dark_canary_pod: bool,
    ) -> (Verdict, f64, String) {
        let mut s = Shipped::new(false, false);
        let mut pods: [[Pod; PODS]; 2] = [
            std::array::from_fn(|_| pod()),
            std::array::from_fn(|_| pod()),
        ];
        let scrape = |s: &mut Shipped, pods: &[[Pod; PODS]; 2], t: f64| {
            for (side, ps) in pods.iter().enumerate() {
                for (p, pod) in ps.iter().enumerate() {
                    let ok = !(dark_canary_pod && side == 1 && p == 4);
                    s.scrape(side, p, t, pod, ok);
                }
            }
        };
        scrape(&mut s, &pods, 0.0);
        for i in 1..=240 {
            let t = 15.0 * i as f64;
            for (side, ps) in pods.iter_mut().enumerate() {
                let e = if side == 0 { err_base } else { err_canary };
                for (p, pod) in ps.iter_mut().enumerate() {
                    // Errors on one interval in five per pod, staggered.
                    let errors = if (i + p) % 5 == 0 { 5.0 * e } else { 0.0 };
                    let (inc, err) = interval(errors);
                    grow(pod, &inc, &err);
                }
            }
            scrape(&mut s, &pods, t);
            s.tick(t);
            if s.judged[0].real.verdict().is_final() {
                return (
                    s.judged[0].real.verdict(),
                    t,
                    s.judged[0].real.reason().to_owned(),
                );
            }
        }
        let a = &s.judged[0].real;
        (
            a.verdict(),
            a.elapsed().as_secs_f64(),
            a.reason().to_owned(),
        )
    }

    #[test]
    fn shipped_tick_says_go_on_a_clean_canary_and_no_go_on_a_5x_regression() {
        let settings = settings();
        // No errors, fast requests: GO at the minimum duration, certified by the SLOs. The
        // duration counts from the first canary data: the second page (the first only sets the
        // counters' starting point), one 15 s interval after the start.
        let (v, t, why) = run_synthetic(0.0, 0.0, false);
        assert_eq!(v, Verdict::Go, "{why}");
        assert_eq!(t, settings.min_duration.as_secs_f64() + 15.0, "{why}");
        // 1 error per pod per interval against 5: NO-GO on the error rate, well before the end.
        let (v, t, why) = run_synthetic(1.0, 5.0, false);
        assert_eq!(v, Verdict::NoGo, "{why}");
        assert!(t < 600.0, "{t} {why}");
        assert!(why.contains("error-rate"), "{why}");
        // The same canary rate as the baseline's: no NO-GO.
        let (v, _, why) = run_synthetic(1.0, 1.0, false);
        assert_ne!(v, Verdict::NoGo, "{why}");
    }

    #[test]
    fn a_canary_pod_never_scraped_blocks_go_through_data_quality() {
        let (v, t, why) = run_synthetic(0.0, 0.0, true);
        assert_eq!(v, Verdict::Inconclusive, "{why}");
        assert_eq!(t, settings().max_duration.as_secs_f64());
        assert!(why.contains("unreachable"), "{why}");
    }

    #[test]
    fn a_single_missed_scrape_is_not_stale_but_four_in_a_row_are() {
        let mut s = Shipped::new(false, false);
        let mut p = pod();
        for i in 0..=10 {
            let (inc, err) = interval(0.0);
            grow(&mut p, &inc, &err);
            // Missed from the 5th scrape on.
            s.scrape(1, 0, 15.0 * i as f64, &p, i < 5);
            let q = s.quality(15.0 * i as f64).canary;
            // The other four canary pods are never scraped: unreachable throughout.
            assert_eq!(q.unreachable, 4, "{i} {q:?}");
            match i {
                0 => assert_eq!(q.targets, 0, "the first page only records: {q:?}"),
                1..=7 => assert_eq!((q.targets, q.fresh, q.stale), (1, 1, 0), "{i} {q:?}"),
                _ => assert_eq!((q.targets, q.fresh, q.stale), (1, 0, 1), "{i} {q:?}"),
            }
        }
    }

    #[test]
    fn xds_scenario_routes_istiod_pages() {
        let mut s = Shipped::new(true, false);
        let mut p = pod();
        s.scrape(1, 0, 0.0, &p, true);
        p.cum[0] = 15.0;
        s.scrape(1, 0, 15.0, &p, true);
        p.cum[0] = 30.0;
        p.cum[1] = 2.0;
        s.scrape(1, 0, 30.0, &p, true);
        // The rejects family appears with the first reject: counted from zero.
        assert_eq!(s.pending[0][1], vec![30.0, 2.0]);
        assert_eq!(s.judged[0].specs[0].name, "istiod-xds-rejects");
    }
}
