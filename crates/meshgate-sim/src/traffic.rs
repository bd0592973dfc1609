//! Pure traffic model of one sidecar (Poisson arrivals, Binomial 5xx, multinomial histograms, restarts); no tokio, no I/O.
//!
//! All state of a pod lives in one flat `Vec<u64>` (see [`Layout`]) so that a scrape can copy it out
//! of the pod's lock with one memcpy and format it afterwards. Histogram buckets are stored already
//! cumulative (Prometheus `le` semantics) and `_sum` is stored as `f64::to_bits`.

use std::sync::OnceLock;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Binomial, Distribution, Exp, Poisson};
use serde::{Deserialize, Serialize};

/// Envoy's default histogram bounds (`HistogramSettingsImpl::defaultBuckets()`), used by every
/// sidecar histogram unless a pod overrides them; the `+Inf` bucket is implicit.
pub const ENVOY_BOUNDS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Number of buckets of an Envoy histogram including `+Inf`.
pub const N_BUCKETS: usize = ENVOY_BOUNDS.len() + 1;

/// The `le` label values exactly as Envoy prints them for [`ENVOY_BOUNDS`] plus `+Inf`.
pub const ENVOY_LE: [&str; N_BUCKETS] = [
    "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
    "30000", "60000", "300000", "600000", "1800000", "3600000", "+Inf",
];

/// Outbound (reporter="source") request rate as a share of the inbound rate of the same pod.
pub const OUTBOUND_RATIO: f64 = 0.5;

/// xDS pushes each proxy receives per second (split over cds/eds/lds/rds like istiod's counter).
pub const XDS_PUSHES_PER_PROXY_S: f64 = 0.5;

/// Share of [`XDS_PUSHES_PER_PROXY_S`] per xDS type, in the order cds, eds, lds, rds.
pub const XDS_TYPE_SHARES: [f64; 4] = [0.15, 0.55, 0.15, 0.15];

// ---------------------------------------------------------------------------------------------
// Special functions
// ---------------------------------------------------------------------------------------------

/// Complementary error function, absolute error below 1e-13 on the whole real line.
///
/// Below 2.5 it uses the all-positive series `erf(x) = 2/sqrt(pi) e^{-x^2} sum 2^n x^{2n+1}/(2n+1)!!`
/// (no cancellation, unlike the Taylor series); above, the Laplace continued fraction, which
/// converges fast there. Written by hand because the allowed crates have no erfc.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.5 {
        let x2 = x * x;
        let mut term = x;
        let mut sum = x;
        let mut n = 0.0;
        while term > sum * 1e-17 {
            n += 1.0;
            term *= 2.0 * x2 / (2.0 * n + 1.0);
            sum += term;
        }
        1.0 - 2.0 / std::f64::consts::PI.sqrt() * (-x2).exp() * sum
    } else {
        // erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), evaluated backwards;
        // 60 levels are far more than needed for x >= 2.5 (error < 1e-16).
        let mut f = x;
        for k in (1..=60).rev() {
            f = x + (k as f64 / 2.0) / f;
        }
        (-x * x).exp() / (std::f64::consts::PI.sqrt() * f)
    }
}

/// Standard normal CDF via [`erfc`].
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

// ---------------------------------------------------------------------------------------------
// Bucket models and sampling
// ---------------------------------------------------------------------------------------------

/// Per-bucket probabilities of a lognormal distribution over histogram bounds, with the
/// conditional mean of each bucket so that `_sum` can be kept consistent with the drawn counts.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketModel {
    /// P(bucket i), i over the finite bounds then `+Inf`; sums to 1.
    pub probs: Vec<f64>,
    /// E[X | X in bucket i]; used to add `count * mean` to `_sum`.
    pub means: Vec<f64>,
}

impl BucketModel {
    /// Lognormal with the given median and log-sd `sigma` over `bounds` (ascending, finite).
    pub fn lognormal(bounds: &[f64], median: f64, sigma: f64) -> BucketModel {
        let median = median.max(1e-12);
        let sigma = sigma.max(1e-9);
        let mu = median.ln();
        let full_mean = (mu + sigma * sigma / 2.0).exp();
        // cdf(b) and partial expectation E[X 1{X<=b}] = e^{mu+s^2/2} Phi((ln b - mu - s^2)/s).
        let cdf = |b: f64| normal_cdf((b.ln() - mu) / sigma);
        let pe = |b: f64| full_mean * normal_cdf((b.ln() - mu - sigma * sigma) / sigma);
        let mut probs = Vec::with_capacity(bounds.len() + 1);
        let mut means = Vec::with_capacity(bounds.len() + 1);
        let (mut prev_c, mut prev_pe, mut prev_b) = (0.0, 0.0, 0.0);
        for (i, &b) in bounds.iter().enumerate() {
            let c = cdf(b);
            let e = pe(b);
            let p = (c - prev_c).max(0.0);
            let m = if p > 1e-300 {
                ((e - prev_pe) / p).clamp(prev_b, b)
            } else if i == 0 {
                b / 2.0
            } else {
                (prev_b + b) / 2.0
            };
            probs.push(p);
            means.push(m);
            prev_c = c;
            prev_pe = e;
            prev_b = b;
        }
        let p_inf = (1.0 - prev_c).max(0.0);
        let m_inf = if p_inf > 1e-300 {
            ((full_mean - prev_pe) / p_inf).max(prev_b)
        } else {
            prev_b * 2.0
        };
        probs.push(p_inf);
        means.push(m_inf);
        BucketModel { probs, means }
    }

    /// Expected value of `_sum / _count` under this model.
    pub fn mean(&self) -> f64 {
        self.probs.iter().zip(&self.means).map(|(p, m)| p * m).sum()
    }
}

/// Poisson(lambda) as an integer; 0 for lambda <= 0 (rand_distr rejects it).
pub fn sample_poisson(rng: &mut SmallRng, lambda: f64) -> u64 {
    if lambda.is_nan() || lambda <= 0.0 {
        return 0;
    }
    let lambda = lambda.min(Poisson::<f64>::MAX_LAMBDA);
    match Poisson::new(lambda) {
        Ok(d) => d.sample(rng) as u64,
        Err(_) => lambda.round() as u64,
    }
}

/// Binomial(n, p) with p clamped to [0, 1].
pub fn sample_binomial(rng: &mut SmallRng, n: u64, p: f64) -> u64 {
    if n == 0 || p.is_nan() || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    match Binomial::new(n, p) {
        Ok(d) => d.sample(rng),
        Err(_) => (n as f64 * p).round() as u64,
    }
}

/// Multinomial(n, probs) by sequential conditional Binomial draws, added into `counts`.
///
/// Stops as soon as nothing is left, which keeps the common case (mass in a few middle buckets)
/// to a handful of draws.
pub fn sample_multinomial(rng: &mut SmallRng, n: u64, probs: &[f64], counts: &mut [u64]) {
    debug_assert_eq!(probs.len(), counts.len());
    let mut rem_n = n;
    let mut rem_p: f64 = probs.iter().sum();
    let last = probs.len() - 1;
    for (i, &p) in probs.iter().enumerate() {
        if rem_n == 0 {
            break;
        }
        if i == last || rem_p <= 1e-300 {
            counts[i] += rem_n;
            break;
        }
        let k = sample_binomial(rng, rem_n, p / rem_p);
        counts[i] += k;
        rem_n -= k;
        rem_p -= p;
    }
}

// ---------------------------------------------------------------------------------------------
// Series plan
// ---------------------------------------------------------------------------------------------

/// Which label set the three `istio_*` histograms carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistogramTags {
    /// Envoy's default: every `istio_requests_total` series has its three histograms with the
    /// identical 25 labels. Realistic but ~0.8 MB per page with the default traffic mix.
    Full,
    /// As with a Telemetry API `tagOverrides` that REMOVEs the `source_*`, `response_code`,
    /// `grpc_response_status` and `response_flags` tags from REQUEST_DURATION/REQUEST_SIZE/
    /// RESPONSE_SIZE: one histogram series per (reporter, destination). Keeps pages ~100-150 KB.
    #[default]
    DestinationOnly,
}

/// Traffic direction as seen by the pod's sidecar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Requests to this pod, reported with `reporter="destination"`.
    Inbound,
    /// Requests from this pod to another service, reported with `reporter="source"`.
    Outbound,
}

/// One `istio_requests_total` series of a pod: who, which code, and how often.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSpec {
    /// Inbound or outbound.
    pub direction: Direction,
    /// Index of the caller (inbound) or callee (outbound) among the pod's peers.
    pub peer: usize,
    /// HTTP response code.
    pub code: u16,
    /// Envoy `%RESPONSE_FLAGS%` ("-" when none).
    pub flags: &'static str,
    /// Whether this is a 5xx series (drawn from the error Binomial, else from the successes).
    pub error: bool,
    /// Relative weight within (direction, error); normalised by the model.
    pub weight: f64,
    /// Multiplier on the median latency (5xx are fast, outbound includes the callee's time).
    pub latency_scale: f64,
    /// Which response-size model applies.
    pub body: Body,
    /// Index of the histogram series this request is recorded into.
    pub hist: usize,
}

/// Response body size class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// A normal 2xx payload.
    Ok,
    /// A small not-found body.
    NotFound,
    /// An Envoy/app error body ("upstream connect error or disconnect/reset before headers").
    Error,
}

/// One row of [`default_mix`]: the fields of a [`SeriesSpec`] except `hist`.
type Row = (Direction, usize, u16, &'static str, bool, f64, f64, Body);

/// The default series plan of every pod; it needs 2 inbound peers (0 = istio-ingressgateway,
/// 1 = a peer app) and 1 outbound peer in the pod's identity.
///
/// Inbound from the ingress gateway (GETs: 200, a few 404) and from a peer app (200/201/204);
/// 5xx split 40% 500, 30% 503 "-", 30% 503 "UF,URX" (commas in a label value on purpose);
/// outbound to one service: 200, and 5xx as 503 "UF,URX" / 500.
pub fn default_mix(tags: HistogramTags) -> Vec<SeriesSpec> {
    #[rustfmt::skip]
    let rows: [Row; 14] = [
        (Direction::Inbound, 0, 200, "-", false, 0.6 * 0.995, 1.0, Body::Ok),
        (Direction::Inbound, 0, 404, "-", false, 0.6 * 0.005, 0.5, Body::NotFound),
        (Direction::Inbound, 1, 200, "-", false, 0.4 * 0.95, 1.0, Body::Ok),
        (Direction::Inbound, 1, 201, "-", false, 0.4 * 0.03, 1.3, Body::Ok),
        (Direction::Inbound, 1, 204, "-", false, 0.4 * 0.02, 0.8, Body::NotFound),
        (Direction::Inbound, 0, 500, "-", true, 0.6 * 0.4, 0.25, Body::Error),
        (Direction::Inbound, 0, 503, "-", true, 0.6 * 0.3, 0.25, Body::Error),
        (Direction::Inbound, 0, 503, "UF,URX", true, 0.6 * 0.3, 0.25, Body::Error),
        (Direction::Inbound, 1, 500, "-", true, 0.4 * 0.4, 0.25, Body::Error),
        (Direction::Inbound, 1, 503, "-", true, 0.4 * 0.3, 0.25, Body::Error),
        (Direction::Inbound, 1, 503, "UF,URX", true, 0.4 * 0.3, 0.25, Body::Error),
        (Direction::Outbound, 0, 200, "-", false, 1.0, 1.2, Body::Ok),
        (Direction::Outbound, 0, 503, "UF,URX", true, 0.6, 0.3, Body::Error),
        (Direction::Outbound, 0, 500, "-", true, 0.4, 0.3, Body::Error),
    ];
    rows.iter()
        .enumerate()
        .map(
            |(i, &(direction, peer, code, flags, error, weight, latency_scale, body))| {
                let hist = match tags {
                    HistogramTags::Full => i,
                    HistogramTags::DestinationOnly => match direction {
                        Direction::Inbound => 0,
                        Direction::Outbound => 1 + peer,
                    },
                };
                SeriesSpec {
                    direction,
                    peer,
                    code,
                    flags,
                    error,
                    weight,
                    latency_scale,
                    body,
                    hist,
                }
            },
        )
        .collect()
}

/// Number of distinct histogram series referenced by `specs`.
pub fn hist_count(specs: &[SeriesSpec]) -> usize {
    specs.iter().map(|s| s.hist + 1).max().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Flat state layout
// ---------------------------------------------------------------------------------------------

/// The three `istio_*` histogram families, in the order their slots are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `istio_request_bytes`.
    RequestBytes = 0,
    /// `istio_request_duration_milliseconds`.
    Duration = 1,
    /// `istio_response_bytes`.
    ResponseBytes = 2,
}

/// Slots per histogram: cumulative buckets (the last, `+Inf`, doubles as `_count`) then `_sum` bits.
pub const HIST_SLOTS: usize = N_BUCKETS + 1;

/// Where each value of a pod lives in its flat state vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Number of `istio_requests_total` series.
    pub keys: usize,
    /// Number of histogram series (per family).
    pub hists: usize,
}

impl Layout {
    /// Slot of `istio_requests_total` series `k`.
    pub fn req(&self, k: usize) -> usize {
        k
    }
    /// First slot (cumulative bucket `le="0.5"`) of histogram `h` of family `f`.
    pub fn hist(&self, h: usize, f: Family) -> usize {
        self.keys + (h * 3 + f as usize) * HIST_SLOTS
    }
    /// Slot holding `_count` (= the `+Inf` bucket).
    pub fn count(&self, h: usize, f: Family) -> usize {
        self.hist(h, f) + N_BUCKETS - 1
    }
    /// Slot holding `_sum` as `f64::to_bits`.
    pub fn sum(&self, h: usize, f: Family) -> usize {
        self.hist(h, f) + N_BUCKETS
    }
    /// Slot of scalar `i` (see [`scalar`]).
    pub fn scalar(&self, i: usize) -> usize {
        self.keys + self.hists * 3 * HIST_SLOTS + i
    }
    /// Total number of slots.
    pub fn len(&self) -> usize {
        self.scalar(scalar::COUNT)
    }
    /// Whether the layout has no slots at all (never: scalars always exist).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Indices of the non-`istio_*` values of a sidecar page (relative to [`Layout::scalar`]).
/// "go" = `f64::to_bits`, printed Go-style; otherwise a plain integer.
pub mod scalar {
    /// `envoy_server_uptime` seconds since the last (re)start.
    pub const UPTIME: usize = 0;
    /// go: `istio_agent_process_start_time_seconds` (unix).
    pub const START_TIME: usize = 1;
    /// go: `istio_agent_process_cpu_seconds_total`.
    pub const CPU: usize = 2;
    /// go: `istio_agent_scrapes_total`.
    pub const SCRAPES: usize = 3;
    /// `istio_agent_go_gc_duration_seconds_count`.
    pub const GC_COUNT: usize = 4;
    /// go: `istio_agent_go_gc_duration_seconds_sum`.
    pub const GC_SUM: usize = 5;
    /// go: `istio_agent_go_memstats_alloc_bytes` (and heap_alloc).
    pub const ALLOC: usize = 6;
    /// go: `istio_agent_go_memstats_alloc_bytes_total`.
    pub const ALLOC_TOTAL: usize = 7;
    /// go: `istio_agent_go_memstats_mallocs_total`.
    pub const MALLOCS: usize = 8;
    /// go: `istio_agent_go_memstats_frees_total`.
    pub const FREES: usize = 9;
    /// go: `istio_agent_go_memstats_last_gc_time_seconds`.
    pub const LAST_GC: usize = 10;
    /// xDS CDS updates received (state).
    pub const CDS_UPDATES: usize = 11;
    /// xDS LDS updates received (state).
    pub const LDS_UPDATES: usize = 12;
    /// CDS updates rejected (state; driven by the istiod fault).
    pub const CDS_REJECTED: usize = 13;
    /// LDS updates rejected (state; driven by the istiod fault).
    pub const LDS_REJECTED: usize = 14;
    /// `envoy_cluster_manager_cds_update_time` (unix ms).
    pub const CDS_TIME_MS: usize = 15;
    /// `envoy_listener_manager_lds_update_time` (unix ms).
    pub const LDS_TIME_MS: usize = 16;
    /// `envoy_cluster_manager_cds_version` (a hash, may exceed i64).
    pub const CDS_VERSION: usize = 17;
    /// `envoy_listener_manager_lds_version`.
    pub const LDS_VERSION: usize = 18;
    /// `envoy_cluster_upstream_cx_rx_bytes_total{cluster_name="xds-grpc"}`.
    pub const XDS_RX_BYTES: usize = 19;
    /// `envoy_cluster_upstream_cx_tx_bytes_total{cluster_name="xds-grpc"}`.
    pub const XDS_TX_BYTES: usize = 20;
    /// `envoy_server_memory_allocated`.
    pub const MEM_ALLOCATED: usize = 21;
    /// `envoy_server_total_connections`.
    pub const TOTAL_CONNECTIONS: usize = 22;
    /// `envoy_server_stats_recent_lookups`.
    pub const RECENT_LOOKUPS: usize = 23;
    /// CDS update duration histogram: cumulative count at le=10, 25, 50, 100 (then = total).
    pub const CDS_DUR_10: usize = 24;
    /// See [`CDS_DUR_10`].
    pub const CDS_DUR_25: usize = 25;
    /// See [`CDS_DUR_10`].
    pub const CDS_DUR_50: usize = 26;
    /// Total CDS updates (attempts) = `_count` and upper buckets.
    pub const CDS_DUR_COUNT: usize = 27;
    /// `_sum` of the CDS update duration (ms, integer).
    pub const CDS_DUR_SUM: usize = 28;
    /// LDS update duration histogram: cumulative count at le=10, 25, 50, 100.
    pub const LDS_DUR_10: usize = 29;
    /// See [`LDS_DUR_10`].
    pub const LDS_DUR_25: usize = 30;
    /// See [`LDS_DUR_10`].
    pub const LDS_DUR_50: usize = 31;
    /// Total LDS updates = `_count`.
    pub const LDS_DUR_COUNT: usize = 32;
    /// `_sum` of the LDS update duration (ms, integer).
    pub const LDS_DUR_SUM: usize = 33;
    /// go: `istio_agent_process_resident_memory_bytes`.
    pub const RSS: usize = 34;
    /// `envoy_cluster_upstream_cx_total{cluster_name="xds-grpc"}` (1 after each start).
    pub const XDS_CX_TOTAL: usize = 35;
    /// Successful CDS updates (incl. the 2 initial ones).
    pub const CDS_SUCCESS: usize = 36;
    /// Successful LDS updates (incl. the 2 initial ones).
    pub const LDS_SUCCESS: usize = 37;
    /// Number of scalar slots.
    pub const COUNT: usize = 38;
}

// ---------------------------------------------------------------------------------------------
// Sidecar model
// ---------------------------------------------------------------------------------------------

/// Inputs of one [`SidecarModel::advance`]: the config plus the pod's cohort fault.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrafficParams {
    /// Inbound requests per second.
    pub rps: f64,
    /// Share of 5xx (already including the cohort fault).
    pub error_rate: f64,
    /// Median latency of a 2xx request in ms, before `latency_factor`.
    pub latency_median_ms: f64,
    /// Log-sd of the latency.
    pub latency_sigma: f64,
    /// Fault multiplier on the median latency (1 = none).
    pub latency_factor: f64,
    /// Mean seconds between restarts (exponential), `None` = never.
    pub restart_mean_interval_s: Option<f64>,
    /// xDS rejects this proxy sees per second (istiod fault share of this pod).
    pub xds_rejects_per_s: f64,
}

/// What one [`SidecarModel::advance`] generated, for the ground truth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Advance {
    /// Inbound requests generated (including those lost to a restart).
    pub inbound: u64,
    /// Inbound 5xx generated.
    pub inbound_5xx: u64,
    /// Outbound requests generated.
    pub outbound: u64,
    /// Outbound 5xx generated.
    pub outbound_5xx: u64,
    /// Restarts that happened in the interval.
    pub restarts: u64,
}

/// Group of specs sharing (direction, error), with normalised multinomial weights.
#[derive(Clone, Debug)]
struct Group {
    specs: Vec<usize>,
    probs: Vec<f64>,
}

/// Response-size and request-size models shared by all pods (they never change).
struct ByteModels {
    request: BucketModel,
    ok: BucketModel,
    not_found: BucketModel,
    error: BucketModel,
}

fn byte_models() -> &'static ByteModels {
    static M: OnceLock<ByteModels> = OnceLock::new();
    M.get_or_init(|| ByteModels {
        // Envoy counts headers too, hence no zero-size GETs (the 1.11.4 capture: 545 bytes).
        request: BucketModel::lognormal(&ENVOY_BOUNDS, 620.0, 0.25),
        ok: BucketModel::lognormal(&ENVOY_BOUNDS, 2200.0, 0.9),
        not_found: BucketModel::lognormal(&ENVOY_BOUNDS, 240.0, 0.2),
        error: BucketModel::lognormal(&ENVOY_BOUNDS, 150.0, 0.25),
    })
}

/// Latency models for the current (median, sigma, factor); rebuilt when any changes.
#[derive(Clone, Debug)]
struct LatencyModels {
    key: (f64, f64, f64),
    /// One model per distinct `latency_scale`, indexed by `SidecarModel::lat_idx`.
    models: Vec<BucketModel>,
}

/// The counters and histograms of one sidecar.
#[derive(Clone, Debug)]
pub struct SidecarModel {
    specs: Vec<SeriesSpec>,
    layout: Layout,
    groups: [Group; 4],
    scales: Vec<f64>,
    lat_idx: Vec<usize>,
    lat: Option<LatencyModels>,
    vals: Vec<u64>,
    present: u64,
    rng: SmallRng,
    last_t: f64,
    start_t: f64,
    restarts: u64,
    cds_t: f64,
    lds_t: f64,
    scrapes: u64,
    seed: u64,
}

/// SplitMix64 finaliser: a cheap well-mixed hash used for seeds and jitter.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SidecarModel {
    /// A pod whose sidecar started at sim time `start_t` (seconds, may be negative) with all
    /// counters at zero; call [`advance`](Self::advance) to generate traffic up to a time.
    pub fn new(specs: Vec<SeriesSpec>, seed: u64, start_t: f64) -> SidecarModel {
        assert!(specs.len() <= 64, "presence is a u64 bit mask");
        let layout = Layout {
            keys: specs.len(),
            hists: hist_count(&specs),
        };
        let group_of = |dir: Direction, err: bool| {
            let idx: Vec<usize> = (0..specs.len())
                .filter(|&i| specs[i].direction == dir && specs[i].error == err)
                .collect();
            let total: f64 = idx.iter().map(|&i| specs[i].weight).sum();
            let probs = idx.iter().map(|&i| specs[i].weight / total).collect();
            Group { specs: idx, probs }
        };
        let groups = [
            group_of(Direction::Inbound, false),
            group_of(Direction::Inbound, true),
            group_of(Direction::Outbound, false),
            group_of(Direction::Outbound, true),
        ];
        let mut scales: Vec<f64> = Vec::new();
        let lat_idx = specs
            .iter()
            .map(
                |s| match scales.iter().position(|&x| x == s.latency_scale) {
                    Some(i) => i,
                    None => {
                        scales.push(s.latency_scale);
                        scales.len() - 1
                    }
                },
            )
            .collect();
        SidecarModel {
            vals: vec![0; layout.len()],
            specs,
            layout,
            groups,
            scales,
            lat_idx,
            lat: None,
            present: 0,
            rng: SmallRng::seed_from_u64(mix64(seed)),
            last_t: start_t,
            start_t,
            restarts: 0,
            cds_t: start_t,
            lds_t: start_t,
            scrapes: 0,
            seed,
        }
    }

    /// The series plan.
    pub fn specs(&self) -> &[SeriesSpec] {
        &self.specs
    }
    /// The slot layout of [`values`](Self::values).
    pub fn layout(&self) -> Layout {
        self.layout
    }
    /// Raw state (see [`Layout`]); scalars are as of the last [`fill_scalars`](Self::fill_scalars).
    pub fn values(&self) -> &[u64] {
        &self.vals
    }
    /// Bit k set = series k has been non-zero since the last (re)start (Envoy creates stats lazily).
    pub fn present(&self) -> u64 {
        self.present
    }
    /// Restarts so far.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }
    /// Sim time of the last advance.
    pub fn last_t(&self) -> f64 {
        self.last_t
    }
    /// Sim time the current process started.
    pub fn start_t(&self) -> f64 {
        self.start_t
    }
    /// Cumulative requests of series k.
    pub fn requests(&self, k: usize) -> u64 {
        self.vals[self.layout.req(k)]
    }
    /// Cumulative buckets (`le` order, last = `+Inf`) of histogram `h`, family `f`.
    pub fn buckets(&self, h: usize, f: Family) -> &[u64] {
        let s = self.layout.hist(h, f);
        &self.vals[s..s + N_BUCKETS]
    }
    /// `_sum` of histogram `h`, family `f`.
    pub fn sum(&self, h: usize, f: Family) -> f64 {
        f64::from_bits(self.vals[self.layout.sum(h, f)])
    }
    /// `_count` of histogram `h`, family `f`.
    pub fn count(&self, h: usize, f: Family) -> u64 {
        self.vals[self.layout.count(h, f)]
    }
    /// Scalar `i` (see [`scalar`]).
    pub fn scalar(&self, i: usize) -> u64 {
        self.vals[self.layout.scalar(i)]
    }

    /// The latency model of spec `k` for the given parameters (rebuilt only when they change).
    pub fn latency_model(&mut self, k: usize, p: &TrafficParams) -> &BucketModel {
        self.ensure_latency(p);
        let i = self.lat_idx[k];
        &self.lat.as_ref().expect("built above").models[i]
    }

    fn ensure_latency(&mut self, p: &TrafficParams) {
        let factor = if p.latency_factor > 0.0 {
            p.latency_factor
        } else {
            1.0
        };
        let key = (p.latency_median_ms, p.latency_sigma, factor);
        if self.lat.as_ref().is_some_and(|l| l.key == key) {
            return;
        }
        let models = self
            .scales
            .iter()
            .map(|s| {
                BucketModel::lognormal(
                    &ENVOY_BOUNDS,
                    p.latency_median_ms * factor * s,
                    p.latency_sigma,
                )
            })
            .collect();
        self.lat = Some(LatencyModels { key, models });
    }

    /// Generate the traffic of (last advance, `t`], restarting the pod as drawn.
    pub fn advance(&mut self, t: f64, p: &TrafficParams) -> Advance {
        let mut out = Advance::default();
        let mut remaining = t - self.last_t;
        if remaining.is_nan() || remaining <= 0.0 {
            return out;
        }
        self.ensure_latency(p);
        let mean = p
            .restart_mean_interval_s
            .filter(|m| *m > 0.0 && m.is_finite());
        loop {
            // Memoryless: the next restart after any point is again Exp(1/mean) away.
            let until_restart = match mean {
                Some(m) => Exp::new(1.0 / m)
                    .map(|d| d.sample(&mut self.rng))
                    .unwrap_or(f64::INFINITY),
                None => f64::INFINITY,
            };
            if until_restart < remaining {
                // Traffic before the restart happened (truth) but its counters die with the process.
                self.generate(until_restart, p, false, &mut out);
                remaining -= until_restart;
                self.restart(t - remaining);
                out.restarts += 1;
            } else {
                self.generate(remaining, p, true, &mut out);
                break;
            }
        }
        self.last_t = t;
        out
    }

    /// Reset every counter and histogram to zero as a new sidecar process started at `at`.
    pub fn restart(&mut self, at: f64) {
        self.vals.iter_mut().for_each(|v| *v = 0);
        self.present = 0;
        self.start_t = at;
        self.cds_t = at;
        self.lds_t = at;
        self.scrapes = 0;
        self.restarts += 1;
    }

    fn generate(&mut self, dt: f64, p: &TrafficParams, record: bool, out: &mut Advance) {
        let err = p.error_rate.clamp(0.0, 1.0);
        for (dir_i, ratio) in [(0usize, 1.0), (1usize, OUTBOUND_RATIO)] {
            let n = sample_poisson(&mut self.rng, p.rps * ratio * dt);
            let e = sample_binomial(&mut self.rng, n, err);
            if dir_i == 0 {
                out.inbound += n;
                out.inbound_5xx += e;
            } else {
                out.outbound += n;
                out.outbound_5xx += e;
            }
            if record {
                self.record_group(dir_i * 2, n - e);
                self.record_group(dir_i * 2 + 1, e);
            }
        }
        // xDS updates and rejects seen by this proxy.
        let cds = sample_poisson(
            &mut self.rng,
            XDS_PUSHES_PER_PROXY_S * XDS_TYPE_SHARES[0] * dt,
        );
        let lds = sample_poisson(
            &mut self.rng,
            XDS_PUSHES_PER_PROXY_S * XDS_TYPE_SHARES[2] * dt,
        );
        let rej = sample_poisson(&mut self.rng, p.xds_rejects_per_s * dt);
        if record {
            let cds_rej = sample_binomial(&mut self.rng, rej, 4.0 / 7.0);
            let lds_rej = rej - cds_rej;
            let now = self.last_t + dt;
            if cds + cds_rej > 0 {
                self.cds_t = now - self.rng.random::<f64>() * dt / (cds + cds_rej) as f64;
            }
            if lds + lds_rej > 0 {
                self.lds_t = now - self.rng.random::<f64>() * dt / (lds + lds_rej) as f64;
            }
            let l = self.layout;
            self.vals[l.scalar(scalar::CDS_UPDATES)] += cds;
            self.vals[l.scalar(scalar::LDS_UPDATES)] += lds;
            self.vals[l.scalar(scalar::CDS_REJECTED)] += cds_rej;
            self.vals[l.scalar(scalar::LDS_REJECTED)] += lds_rej;
        }
    }

    fn record_group(&mut self, g: usize, n: u64) {
        if n == 0 {
            return;
        }
        let group = &self.groups[g];
        let mut split = [0u64; 64];
        let m = group.specs.len();
        sample_multinomial(&mut self.rng, n, &group.probs, &mut split[..m]);
        for (j, &c) in split[..m].iter().enumerate() {
            if c > 0 {
                let k = self.groups[g].specs[j];
                self.record(k, c);
            }
        }
    }

    /// Add `c` requests to series `k` and its histograms.
    fn record(&mut self, k: usize, c: u64) {
        let l = self.layout;
        self.vals[l.req(k)] += c;
        self.present |= 1 << k;
        let spec = &self.specs[k];
        let h = spec.hist;
        let bm = byte_models();
        let resp = match spec.body {
            Body::Ok => &bm.ok,
            Body::NotFound => &bm.not_found,
            Body::Error => &bm.error,
        };
        let lat = &self.lat.as_ref().expect("ensure_latency ran").models[self.lat_idx[k]];
        for (f, model) in [
            (Family::RequestBytes, &bm.request),
            (Family::Duration, lat),
            (Family::ResponseBytes, resp),
        ] {
            let mut counts = [0u64; N_BUCKETS];
            sample_multinomial(&mut self.rng, c, &model.probs, &mut counts);
            let s = l.hist(h, f);
            let mut cum = 0u64;
            let mut add_sum = 0.0;
            for (i, (&c, &mean)) in counts.iter().zip(&model.means).enumerate() {
                cum += c;
                add_sum += c as f64 * mean;
                self.vals[s + i] += cum;
            }
            let sum_slot = s + N_BUCKETS;
            self.vals[sum_slot] = (f64::from_bits(self.vals[sum_slot]) + add_sum).to_bits();
        }
    }

    /// Compute the derived scalars (uptime, Go runtime, xDS bookkeeping) for a scrape at sim
    /// time `t`, with `epoch_unix` the wall clock of sim time 0; counts one scrape.
    pub fn fill_scalars(&mut self, t: f64, epoch_unix: f64) {
        use scalar::*;
        let l = self.layout;
        let get = |v: &Vec<u64>, i: usize| v[l.scalar(i)];
        let up = (t - self.start_t).max(0.0);
        let upi = up as u64;
        let seed = self.seed;
        let jitter = |salt: u64, range: u64| mix64(seed ^ salt) % range.max(1);
        self.scrapes += 1;
        let scrapes = self.scrapes;
        let cds = get(&self.vals, CDS_UPDATES);
        let lds = get(&self.vals, LDS_UPDATES);
        let cds_rej = get(&self.vals, CDS_REJECTED);
        let lds_rej = get(&self.vals, LDS_REJECTED);
        // Initial config on start: 2 successful CDS/LDS updates (as in the 1.11.4 capture).
        let cds_ok = cds + 2;
        let lds_ok = lds + 2;
        let cds_att = cds_ok + cds_rej + 1;
        let lds_att = lds_ok + lds_rej + 1;
        let gc = 3 + upi / 118;
        let start_unix = epoch_unix + self.start_t - 1.0 - jitter(1, 1000) as f64 / 1000.0;
        let present = self.present.count_ones() as u64;
        let requests: u64 = (0..l.keys).map(|k| self.vals[k]).sum();
        let alloc = 6_200_000 + (upi.wrapping_mul(9_173) + jitter(2, 1_000_000)) % 4_100_000;
        let alloc_total = 19_000_000 + upi * 21_000 + scrapes * 160_000;
        let mallocs = 150_000 + upi * 170 + scrapes * 1_900;
        let vals = &mut self.vals;
        let mut set = |i: usize, v: u64| vals[l.scalar(i)] = v;
        let go = |v: f64| v.to_bits();
        set(UPTIME, upi);
        set(START_TIME, go((start_unix * 100.0).round() / 100.0));
        set(
            CPU,
            go(((0.12 + up * 0.0009 + scrapes as f64 * 0.0004) * 100.0).round() / 100.0),
        );
        set(SCRAPES, go(scrapes as f64));
        set(GC_COUNT, gc);
        // Rounded to ns like Go's time.Duration sums, so no 0.0015076859999999998 artefacts.
        set(GC_SUM, go((gc * 137_000 + jitter(3, 1000)) as f64 / 1e9));
        set(ALLOC, go(alloc as f64));
        set(ALLOC_TOTAL, go(alloc_total as f64));
        set(MALLOCS, go(mallocs as f64));
        set(FREES, go((mallocs - 30_000 - jitter(4, 9_000)) as f64));
        set(LAST_GC, go(epoch_unix + t - (up % 118.0) - 0.3712));
        set(CDS_TIME_MS, ((epoch_unix + self.cds_t) * 1000.0) as u64);
        set(LDS_TIME_MS, ((epoch_unix + self.lds_t) * 1000.0) as u64);
        set(CDS_VERSION, mix64(seed ^ cds_ok.wrapping_mul(31)));
        set(LDS_VERSION, mix64(seed ^ lds_ok.wrapping_mul(37)));
        set(
            XDS_RX_BYTES,
            190_000 + cds * 31_000 + lds * 12_000 + upi * 180,
        );
        set(XDS_TX_BYTES, 24_000 + (cds_att + lds_att) * 1_100 + upi * 9);
        set(
            MEM_ALLOCATED,
            11_800_000 + present * 40_000 + (upi % 600) * 300 + jitter(5, 50_000),
        );
        set(TOTAL_CONNECTIONS, 2 + mix64(seed ^ scrapes) % 5);
        set(
            RECENT_LOOKUPS,
            5_400 + (requests / 1000).min(200_000) + present * 7,
        );
        // Update durations: a fixed shape (40% <=25 ms, 90% <=50 ms, all <=100 ms); cheap and monotone.
        set(CDS_DUR_10, cds_att / 10);
        set(CDS_DUR_25, cds_att * 4 / 10);
        set(CDS_DUR_50, cds_att * 9 / 10);
        set(CDS_DUR_COUNT, cds_att);
        set(CDS_DUR_SUM, cds_att * 29);
        set(LDS_DUR_10, lds_att / 10);
        set(LDS_DUR_25, lds_att * 4 / 10);
        set(LDS_DUR_50, lds_att * 9 / 10);
        set(LDS_DUR_COUNT, lds_att);
        set(LDS_DUR_SUM, lds_att * 47);
        set(
            RSS,
            go((46_000_000 + jitter(6, 4_000_000) + present * 65_536) as f64),
        );
        set(XDS_CX_TOTAL, 1);
        set(CDS_SUCCESS, cds_ok);
        set(LDS_SUCCESS, lds_ok);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> TrafficParams {
        TrafficParams {
            rps: 100.0,
            error_rate: 0.001,
            latency_median_ms: 20.0,
            latency_sigma: 0.9,
            latency_factor: 1.0,
            restart_mean_interval_s: None,
            xds_rejects_per_s: 0.0,
        }
    }

    fn model(tags: HistogramTags, seed: u64) -> SidecarModel {
        SidecarModel::new(default_mix(tags), seed, 0.0)
    }

    #[test]
    fn erfc_matches_reference_values() {
        // Reference values (Abramowitz & Stegun / mpmath).
        let refs = [
            (0.0, 1.0),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_13),
            (2.0, 0.004_677_734_981_047_266),
            (2.5, 4.069_520_174_449_59e-4),
            (3.0, 2.209_049_699_858_544e-5),
            (4.0, 1.541_725_790_028_002e-8),
            (-1.0, 1.842_700_792_949_715),
        ];
        for (x, want) in refs {
            let got = erfc(x);
            assert!((got - want).abs() < 1e-13, "erfc({x}) = {got}, want {want}");
            if want > 1e-10 {
                assert!(((got - want) / want).abs() < 1e-9, "relative error at {x}");
            }
        }
        // Continuity across the switch between series and continued fraction.
        // erfc'(2.5) = -0.0022, so a 1e-12 step moves it by ~2e-15; a seam would show as more.
        assert!((erfc(2.5 - 1e-12) - erfc(2.5)).abs() < 5e-15);
        assert!((normal_cdf(1.959_963_984_540_054) - 0.975).abs() < 1e-12);
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn bucket_model_is_a_distribution_with_consistent_means() {
        let m = BucketModel::lognormal(&ENVOY_BOUNDS, 20.0, 0.9);
        let total: f64 = m.probs.iter().sum();
        assert!((total - 1.0).abs() < 1e-12);
        // Conditional means lie inside their bucket.
        for i in 0..ENVOY_BOUNDS.len() {
            let lo = if i == 0 { 0.0 } else { ENVOY_BOUNDS[i - 1] };
            assert!(
                m.means[i] >= lo && m.means[i] <= ENVOY_BOUNDS[i],
                "bucket {i}: {}",
                m.means[i]
            );
        }
        // Mixture mean = lognormal mean exp(mu + s^2/2).
        let want = 20.0 * (0.9f64 * 0.9 / 2.0).exp();
        assert!(
            (m.mean() - want).abs() / want < 1e-9,
            "{} vs {want}",
            m.mean()
        );
        // P(X <= 20) = 0.5 exactly at the median.
        let m2 = BucketModel::lognormal(&[20.0], 20.0, 0.9);
        assert!((m2.probs[0] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn counters_never_decrease_without_restart_and_reset_on_restart() {
        let mut p = params();
        p.restart_mean_interval_s = Some(120.0);
        let mut m = model(HistogramTags::Full, 7);
        let mut prev = m.values().to_vec();
        let l = m.layout();
        let (mut seen_restart, mut seen_steady) = (false, false);
        let mut t = 0.0;
        for _ in 0..400 {
            t += 5.0;
            let a = m.advance(t, &p);
            let cur = m.values().to_vec();
            // Only the traffic slots (requests + histograms) are counters; scalars are filled at scrape.
            let end = l.scalar(0);
            if a.restarts == 0 {
                seen_steady = true;
                for i in 0..end {
                    let (c, q) = if i >= l.keys && (i - l.keys) % HIST_SLOTS == N_BUCKETS {
                        (f64::from_bits(cur[i]), f64::from_bits(prev[i]))
                    } else {
                        (cur[i] as f64, prev[i] as f64)
                    };
                    assert!(c >= q, "slot {i} decreased without restart at t={t}");
                }
            } else {
                seen_restart = true;
                // After a restart only the post-restart part is counted, so the total is at most
                // what this advance generated, and the start time moved into the interval.
                let total: u64 = (0..l.keys).map(|k| m.requests(k)).sum();
                assert!(total <= a.inbound + a.outbound);
                assert!(m.start_t() > t - 5.0 && m.start_t() <= t);
            }
            prev = cur;
        }
        assert!(
            seen_restart && seen_steady,
            "mean 120 s over 2000 s should restart sometimes"
        );
        // An explicit restart zeroes everything.
        m.restart(t);
        assert!(m.values().iter().all(|&v| v == 0));
        assert_eq!(m.present(), 0);
    }

    #[test]
    fn error_share_is_within_a_few_standard_errors() {
        let p = params();
        let mut m = model(HistogramTags::DestinationOnly, 11);
        let (mut n, mut e) = (0u64, 0u64);
        let mut t = 0.0;
        for _ in 0..720 {
            t += 5.0;
            let a = m.advance(t, &p);
            n += a.inbound;
            e += a.inbound_5xx;
        }
        // The page agrees with the truth: sum of 5xx series == e.
        let page_5xx: u64 = (0..m.specs().len())
            .filter(|&k| m.specs()[k].error && m.specs()[k].direction == Direction::Inbound)
            .map(|k| m.requests(k))
            .sum();
        assert_eq!(page_5xx, e);
        let share = e as f64 / n as f64;
        let se = (0.001 * 0.999 / n as f64).sqrt();
        assert!(
            (share - 0.001).abs() < 4.0 * se,
            "share {share}, se {se}, n {n}"
        );
        assert!((n as f64 - 360_000.0).abs() < 5.0 * 600.0, "n = {n}");
    }

    #[test]
    fn canary_error_fault_shows_up() {
        let base = params();
        let mut faulty = params();
        faulty.error_rate = 0.01;
        let mut b = model(HistogramTags::DestinationOnly, 1);
        let mut c = model(HistogramTags::DestinationOnly, 2);
        let (ab, ac) = (b.advance(600.0, &base), c.advance(600.0, &faulty));
        let sb = ab.inbound_5xx as f64 / ab.inbound as f64;
        let sc = ac.inbound_5xx as f64 / ac.inbound as f64;
        let se = (0.01 * 0.99 / ac.inbound as f64).sqrt();
        assert!((sc - 0.01).abs() < 4.0 * se, "canary share {sc}");
        assert!(sc > sb * 4.0, "canary {sc} vs baseline {sb}");
        // Both 503 flags variants and 500 appear on the faulty pod.
        for (code, flags) in [(500, "-"), (503, "-"), (503, "UF,URX")] {
            assert!(
                c.specs()
                    .iter()
                    .enumerate()
                    .any(|(k, s)| s.code == code && s.flags == flags && c.requests(k) > 0),
                "{code} {flags} missing"
            );
        }
    }

    #[test]
    fn buckets_are_cumulative_and_inf_equals_count() {
        let mut m = model(HistogramTags::Full, 3);
        m.advance(300.0, &params());
        let l = m.layout();
        for h in 0..l.hists {
            for f in [
                Family::RequestBytes,
                Family::Duration,
                Family::ResponseBytes,
            ] {
                let b = m.buckets(h, f);
                assert!(
                    b.windows(2).all(|w| w[0] <= w[1]),
                    "h {h} {f:?} not monotone: {b:?}"
                );
                assert_eq!(b[N_BUCKETS - 1], m.count(h, f));
                // In Full mode every histogram counts exactly its series' requests.
                assert_eq!(m.count(h, f), m.requests(h));
                if m.count(h, f) > 0 {
                    assert!(m.sum(h, f) > 0.0);
                }
            }
        }
    }

    #[test]
    fn latency_bucket_shares_match_the_lognormal_cdf() {
        let mut p = params();
        p.error_rate = 0.0;
        let mut m = model(HistogramTags::DestinationOnly, 5);
        m.advance(3600.0, &p);
        // Inbound histogram 0 mixes scales 1.0 (200), 0.5 (404), 1.3 (201), 0.8 (204): compare
        // against the same mixture of CDFs.
        let mix: Vec<(f64, f64)> = m
            .specs()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.direction == Direction::Inbound && !s.error)
            .map(|(k, s)| (m.requests(k) as f64, s.latency_scale))
            .collect();
        let n: f64 = mix.iter().map(|x| x.0).sum();
        let b = m.buckets(0, Family::Duration).to_vec();
        assert_eq!(b[N_BUCKETS - 1] as f64, n);
        for (i, &bound) in ENVOY_BOUNDS.iter().enumerate() {
            let p_le: f64 = mix
                .iter()
                .map(|(c, s)| c / n * normal_cdf((bound.ln() - (20.0 * s).ln()) / 0.9))
                .sum();
            let got = b[i] as f64 / n;
            let se = (p_le * (1.0 - p_le) / n).sqrt().max(1e-9);
            assert!(
                (got - p_le).abs() <= 5.0 * se + 1e-9,
                "le {bound}: {got} vs {p_le} (se {se})"
            );
        }
        // _sum / _count close to the mixture mean.
        let want: f64 = mix
            .iter()
            .map(|(c, s)| c / n * 20.0 * s * (0.405f64).exp())
            .sum();
        let mean = m.sum(0, Family::Duration) / n;
        assert!((mean - want).abs() / want < 0.02, "mean {mean} vs {want}");
    }

    #[test]
    fn latency_factor_two_moves_mass_up() {
        let p1 = params();
        let mut p2 = params();
        p2.latency_factor = 2.0;
        let mut a = model(HistogramTags::DestinationOnly, 9);
        let mut b = model(HistogramTags::DestinationOnly, 9);
        a.advance(600.0, &p1);
        b.advance(600.0, &p2);
        let share_le_25 = |m: &SidecarModel| {
            let bk = m.buckets(0, Family::Duration);
            bk[4] as f64 / bk[N_BUCKETS - 1] as f64
        };
        let (sa, sb) = (share_le_25(&a), share_le_25(&b));
        // Analytically P(X<=25) = Phi(ln(25/20)/0.9) = 0.598 vs Phi(ln(25/40)/0.9) = 0.301.
        assert!(sa > 0.55 && sb < 0.35, "le=25 share {sa} vs {sb}");
        let ma = a.sum(0, Family::Duration) / a.count(0, Family::Duration) as f64;
        let mb = b.sum(0, Family::Duration) / b.count(0, Family::Duration) as f64;
        assert!((mb / ma - 2.0).abs() < 0.1, "mean ratio {}", mb / ma);
    }

    #[test]
    fn multinomial_preserves_the_total() {
        let mut rng = SmallRng::seed_from_u64(1);
        let m = BucketModel::lognormal(&ENVOY_BOUNDS, 20.0, 0.9);
        for n in [0u64, 1, 7, 1000, 1_000_000] {
            let mut c = [0u64; N_BUCKETS];
            sample_multinomial(&mut rng, n, &m.probs, &mut c);
            assert_eq!(c.iter().sum::<u64>(), n);
        }
        assert_eq!(sample_poisson(&mut rng, 0.0), 0);
        assert_eq!(sample_binomial(&mut rng, 10, 1.5), 10);
    }

    #[test]
    fn series_appear_lazily_and_xds_rejects_follow_the_fault() {
        let mut p = params();
        p.rps = 1.0;
        p.error_rate = 0.0;
        let mut m = model(HistogramTags::DestinationOnly, 4);
        assert_eq!(m.present(), 0);
        m.advance(60.0, &p);
        let errors_present = m
            .specs()
            .iter()
            .enumerate()
            .any(|(k, s)| s.error && m.present() & (1 << k) != 0);
        assert!(!errors_present, "no 5xx series without errors");
        assert!(m.present() & 1 != 0, "the main 200 series exists");
        p.xds_rejects_per_s = 1.0;
        m.advance(120.0, &p);
        let rej = m.scalar(scalar::CDS_REJECTED) + m.scalar(scalar::LDS_REJECTED);
        assert!(rej > 30 && rej < 100, "rejects {rej}");
    }

    #[test]
    fn same_seed_same_traffic() {
        let p = params();
        let mut a = model(HistogramTags::Full, 42);
        let mut b = model(HistogramTags::Full, 42);
        a.advance(100.0, &p);
        b.advance(100.0, &p);
        assert_eq!(a.values(), b.values());
    }
}
