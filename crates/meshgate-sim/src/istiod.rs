//! Pure model of one istiod revision's control-plane metrics: xDS pushes, convergence, rejects.

use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::traffic::{mix64, sample_binomial, sample_multinomial, sample_poisson, BucketModel};
use super::traffic::{XDS_PUSHES_PER_PROXY_S, XDS_TYPE_SHARES};

/// `pilot_proxy_convergence_time` / `pilot_proxy_queue_time` bounds (seconds).
pub const CONVERGENCE_BOUNDS: [f64; 8] = [0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];
/// `pilot_xds_push_time` bounds (seconds).
pub const PUSH_TIME_BOUNDS: [f64; 9] = [0.01, 0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];
/// `pilot_xds_send_time` bounds (seconds).
pub const SEND_TIME_BOUNDS: [f64; 8] = [0.01, 0.1, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];
/// `pilot_debounce_time` bounds (seconds).
pub const DEBOUNCE_BOUNDS: [f64; 9] = [0.01, 0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];
/// `pilot_pushcontext_init_seconds` bounds.
pub const PUSHCONTEXT_INIT_BOUNDS: [f64; 6] = [0.01, 0.1, 0.5, 1.0, 3.0, 5.0];
/// `pilot_xds_config_size_bytes` bounds (bytes; printed `1e+06` etc.).
pub const CONFIG_SIZE_BOUNDS: [f64; 6] = [1.0, 10000.0, 1e6, 4e6, 1e7, 4e7];
/// Short xDS type names as istiod labels `pilot_xds_pushes` and friends.
pub const XDS_TYPES: [&str; 4] = ["cds", "eds", "lds", "rds"];
/// Full type URLs (`pilot_xds_config_size_bytes{type}`), same order as [`XDS_TYPES`].
pub const XDS_TYPE_URLS: [&str; 4] = [
    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "type.googleapis.com/envoy.config.listener.v3.Listener",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
];
/// Config push events (debounced changes) per second; each converges on every proxy.
pub const PUSH_EVENTS_PER_S: f64 = 0.125;
/// Typical config size per push by type (bytes) and the bucket it lands in.
const CONFIG_SIZE: [(f64, usize); 4] = [(38_000.0, 2), (6_500.0, 1), (27_000.0, 2), (9_800.0, 1)];
/// Share of rejects per xDS type (cds, eds, lds, rds): bad listeners/clusters dominate.
const REJECT_SHARES: [f64; 4] = [0.4, 0.1, 0.3, 0.2];

/// A control-plane fault applied to one revision's istiod, changeable at run time.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IstiodFault {
    /// xDS responses rejected by proxies per minute (`pilot_total_xds_rejects`; proxies of the
    /// revision see them as `envoy_*_update_rejected`).
    pub rejects_per_min: f64,
    /// Multiplier on convergence, queue and push times (1 = none; 0 is treated as 1). Above 1
    /// it also causes `pilot_xds_write_timeout`.
    pub convergence_factor: f64,
    /// Workload certificate signing requests that istiod's CA fails to sign, per minute
    /// (`citadel_server_csr_sign_err_count`; each is also a CSR received): the proxies of the
    /// revision cannot renew their mTLS certificates.
    #[serde(default)]
    pub csr_sign_errors_per_min: f64,
}

impl IstiodFault {
    /// `convergence_factor` with 0 (the `Default`) meaning 1.
    pub fn factor(&self) -> f64 {
        if self.convergence_factor > 0.0 {
            self.convergence_factor
        } else {
            1.0
        }
    }
}

/// A Go/OTel histogram: per-bucket (non-cumulative) counts incl. `+Inf`, and the sum.
#[derive(Clone, Debug, PartialEq)]
pub struct Hist {
    /// Counts per bucket, last = `+Inf`.
    pub counts: Vec<u64>,
    /// Sum of observations.
    pub sum: f64,
}

impl Hist {
    /// Empty histogram over `bounds`.
    pub fn new(bounds: &[f64]) -> Hist {
        Hist {
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }
    /// Total observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
    fn observe(&mut self, rng: &mut SmallRng, n: u64, m: &BucketModel) {
        if n == 0 {
            return;
        }
        let mut c = vec![0u64; self.counts.len()];
        sample_multinomial(rng, n, &m.probs, &mut c);
        for (i, k) in c.iter().enumerate() {
            self.counts[i] += k;
            self.sum += *k as f64 * m.means[i];
        }
    }
}

/// Inputs of one [`IstiodModel::advance`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IstiodParams {
    /// Connected proxies.
    pub proxies: u64,
    /// The revision's control-plane fault.
    pub fault: IstiodFault,
}

#[derive(Clone, Debug)]
struct Models {
    factor: f64,
    convergence: BucketModel,
    queue: BucketModel,
    push: [BucketModel; 4],
}

impl Models {
    fn new(factor: f64) -> Models {
        let push = |median: f64| BucketModel::lognormal(&PUSH_TIME_BOUNDS, median * factor, 0.9);
        Models {
            factor,
            convergence: BucketModel::lognormal(&CONVERGENCE_BOUNDS, 0.12 * factor, 0.8),
            queue: BucketModel::lognormal(&CONVERGENCE_BOUNDS, 0.004 * factor, 1.0),
            push: [push(0.004), push(0.0012), push(0.003), push(0.0016)],
        }
    }
}

/// The counters and histograms of one istiod.
#[derive(Clone, Debug)]
pub struct IstiodModel {
    rng: SmallRng,
    models: Models,
    send: BucketModel,
    debounce_m: BucketModel,
    init_m: BucketModel,
    /// Sim time of the last advance.
    pub last_t: f64,
    /// Sim time the process started.
    pub start_t: f64,
    /// `pilot_xds_pushes{type}` per [`XDS_TYPES`].
    pub pushes: [u64; 4],
    /// `pilot_xds_push_time{type}`.
    pub push_time: [Hist; 4],
    /// `pilot_xds_config_size_bytes{type}`.
    pub config_size: [Hist; 4],
    /// `pilot_proxy_convergence_time`.
    pub convergence: Hist,
    /// `pilot_proxy_queue_time`.
    pub queue_time: Hist,
    /// `pilot_xds_send_time`.
    pub send_time: Hist,
    /// `pilot_debounce_time`.
    pub debounce: Hist,
    /// `pilot_pushcontext_init_seconds`.
    pub pushcontext_init: Hist,
    /// `pilot_total_xds_rejects{type}` (series absent while 0).
    pub rejects: [u64; 4],
    /// `pilot_xds_expired_nonce{type}` (absent while 0).
    pub expired_nonce: [u64; 4],
    /// `pilot_xds_write_timeout` (absent while 0).
    pub write_timeouts: u64,
    /// `pilot_total_xds_internal_errors` (absent while 0).
    pub internal_errors: u64,
    /// `pilot_push_triggers{type}` for config, endpoint, proxy, service.
    pub push_triggers: [u64; 4],
    /// `pilot_inbound_updates{type}` for config, eds, svc.
    pub inbound_updates: [u64; 3],
    /// CSRs received (`citadel_server_csr_count`): workload certs rotate every ~12 h.
    pub csr_count: u64,
    /// CSRs that failed to be signed (`citadel_server_csr_sign_err_count`, absent while 0).
    pub csr_sign_errors: u64,
}

impl IstiodModel {
    /// An istiod that started at sim time `start_t` (may be negative) with `proxies` connected.
    pub fn new(seed: u64, start_t: f64, proxies: u64) -> IstiodModel {
        IstiodModel {
            rng: SmallRng::seed_from_u64(mix64(seed ^ 0x157D)),
            models: Models::new(1.0),
            send: BucketModel::lognormal(&SEND_TIME_BOUNDS, 0.0002, 1.0),
            debounce_m: BucketModel::lognormal(&DEBOUNCE_BOUNDS, 0.11, 0.3),
            init_m: BucketModel::lognormal(&PUSHCONTEXT_INIT_BOUNDS, 0.006, 0.7),
            last_t: start_t,
            start_t,
            pushes: [0; 4],
            push_time: std::array::from_fn(|_| Hist::new(&PUSH_TIME_BOUNDS)),
            config_size: std::array::from_fn(|_| Hist::new(&CONFIG_SIZE_BOUNDS)),
            convergence: Hist::new(&CONVERGENCE_BOUNDS),
            queue_time: Hist::new(&CONVERGENCE_BOUNDS),
            send_time: Hist::new(&SEND_TIME_BOUNDS),
            debounce: Hist::new(&DEBOUNCE_BOUNDS),
            pushcontext_init: Hist::new(&PUSHCONTEXT_INIT_BOUNDS),
            rejects: [0; 4],
            expired_nonce: [0; 4],
            write_timeouts: 0,
            internal_errors: 0,
            push_triggers: [0; 4],
            inbound_updates: [0; 3],
            csr_count: proxies,
            csr_sign_errors: 0,
        }
    }

    /// Generate control-plane activity for (last advance, `t`].
    pub fn advance(&mut self, t: f64, p: &IstiodParams) {
        let dt = t - self.last_t;
        if dt.is_nan() || dt <= 0.0 {
            return;
        }
        self.last_t = t;
        let factor = p.fault.factor();
        if self.models.factor != factor {
            self.models = Models::new(factor);
        }
        let rng = &mut self.rng;
        let n = p.proxies as f64;
        for i in 0..4 {
            let k = sample_poisson(rng, XDS_PUSHES_PER_PROXY_S * XDS_TYPE_SHARES[i] * n * dt);
            self.pushes[i] += k;
            self.push_time[i].observe(rng, k, &self.models.push[i]);
            let (size, bucket) = CONFIG_SIZE[i];
            self.config_size[i].counts[bucket] += k;
            self.config_size[i].sum += k as f64 * size;
            self.send_time.observe(rng, k, &self.send);
        }
        let events = sample_poisson(rng, PUSH_EVENTS_PER_S * dt);
        self.debounce.observe(rng, events, &self.debounce_m);
        self.pushcontext_init.observe(rng, events, &self.init_m);
        let mut trig = [0u64; 4];
        sample_multinomial(rng, events, &[0.15, 0.7, 0.05, 0.1], &mut trig);
        for (a, b) in self.push_triggers.iter_mut().zip(trig) {
            *a += b;
        }
        self.inbound_updates[0] += trig[0];
        self.inbound_updates[1] += trig[1] + sample_poisson(rng, 0.05 * dt);
        self.inbound_updates[2] += trig[3];
        // Each push event converges once per connected proxy.
        let conv = sample_poisson(rng, PUSH_EVENTS_PER_S * n * dt);
        self.convergence
            .observe(rng, conv, &self.models.convergence);
        self.queue_time.observe(rng, conv, &self.models.queue);
        let rate = p.fault.rejects_per_min.max(0.0) / 60.0;
        let rej = sample_poisson(rng, rate * dt);
        let mut split = [0u64; 4];
        sample_multinomial(rng, rej, &REJECT_SHARES, &mut split);
        for (a, b) in self.rejects.iter_mut().zip(split) {
            *a += b;
        }
        // A few rejected pushes also fail internally (bad generated config).
        self.internal_errors += sample_binomial(rng, rej, 0.05);
        // Slow pushes make some stream writes time out.
        self.write_timeouts += sample_poisson(rng, 0.002 * n * (factor - 1.0).max(0.0) * dt);
        // Expired nonces happen at a low rate in healthy meshes too (proxy ACKs racing pushes).
        let expired = sample_poisson(rng, 0.001 * n * dt);
        let mut split = [0u64; 4];
        sample_multinomial(rng, expired, &XDS_TYPE_SHARES, &mut split);
        for (a, b) in self.expired_nonce.iter_mut().zip(split) {
            *a += b;
        }
        self.csr_count += sample_poisson(rng, n * dt / 43_200.0);
        let sign_err = sample_poisson(rng, p.fault.csr_sign_errors_per_min.max(0.0) / 60.0 * dt);
        self.csr_sign_errors += sign_err;
        self.csr_count += sign_err;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::{render_istiod, IstiodInfo};

    fn info() -> IstiodInfo {
        IstiodInfo {
            version: "1.25.0".into(),
            proxies_by_version: vec![("1.25.0".into(), 3)],
            services: 3,
            seed: 1,
        }
    }

    fn run(fault: IstiodFault, secs: f64) -> IstiodModel {
        let mut m = IstiodModel::new(5, -60.0, 3);
        m.advance(secs, &IstiodParams { proxies: 3, fault });
        m
    }

    #[test]
    fn pushes_grow_at_half_a_push_per_second_per_proxy() {
        let m = run(IstiodFault::default(), 3600.0 - 60.0);
        let total: u64 = m.pushes.iter().sum();
        let want = 0.5 * 3.0 * 3600.0;
        assert!((total as f64 - want).abs() < 5.0 * want.sqrt(), "{total}");
        for i in 0..4 {
            assert_eq!(m.push_time[i].count(), m.pushes[i]);
        }
        assert_eq!(m.rejects, [0; 4]);
        assert_eq!(m.write_timeouts, 0);
    }

    #[test]
    fn rejects_and_slow_convergence_follow_the_fault() {
        let healthy = run(IstiodFault::default(), 1800.0);
        let sick = run(
            IstiodFault {
                rejects_per_min: 6.0,
                convergence_factor: 10.0,
                csr_sign_errors_per_min: 30.0,
            },
            1800.0,
        );
        let rej: u64 = sick.rejects.iter().sum();
        assert!((rej as f64 - 186.0).abs() < 5.0 * 186f64.sqrt(), "{rej}");
        let mean = |h: &Hist| h.sum / h.count() as f64;
        let (a, b) = (mean(&healthy.convergence), mean(&sick.convergence));
        assert!(b / a > 8.0 && b / a < 12.0, "convergence {a} -> {b}");
        assert!(sick.write_timeouts > 0);
    }

    #[test]
    fn istiod_page_has_the_expected_series() {
        let healthy = run(IstiodFault::default(), 600.0);
        let mut out = Vec::new();
        render_istiod(&healthy, &info(), 600.0, 1.7e9, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("istio_build{component=\"pilot\",tag=\"1.25.0\"} 1\n"));
        assert!(text.contains("pilot_xds{version=\"1.25.0\"} 3\n"));
        for le in ["0.1", "0.5", "1", "3", "5", "10", "20", "30", "+Inf"] {
            assert!(
                text.contains(&format!(
                    "pilot_proxy_convergence_time_bucket{{le=\"{le}\"}} "
                )),
                "{le}"
            );
        }
        assert!(text.contains("pilot_xds_config_size_bytes_bucket{type=\"type.googleapis.com/envoy.config.cluster.v3.Cluster\",le=\"1e+06\"} "));
        assert!(text.contains("# TYPE pilot_xds_pushes counter\npilot_xds_pushes{type=\"cds\"} "));
        assert!(!text.contains("pilot_xds_pushes_total"), "no _total suffix");
        assert!(
            !text.contains("pilot_total_xds_rejects"),
            "absent until the first reject"
        );
        // Families sorted by name, each declared once.
        let fams: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let mut sorted = fams.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(fams, sorted);
        for w in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "go_memstats_alloc_bytes",
            "go_goroutines",
        ] {
            assert!(text.contains(&format!("\n{w} ")), "{w}");
        }

        let sick = run(
            IstiodFault {
                rejects_per_min: 60.0,
                convergence_factor: 1.0,
                csr_sign_errors_per_min: 6.0,
            },
            600.0,
        );
        let mut out = Vec::new();
        render_istiod(&sick, &info(), 600.0, 1.7e9, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("pilot_total_xds_rejects{type=\"cds\"} "));
        // About 60 sign errors, each also a CSR received; issuances are the rest.
        assert!(
            (30..100).contains(&sick.csr_sign_errors),
            "{}",
            sick.csr_sign_errors
        );
        assert!(text.contains(&format!(
            "# TYPE citadel_server_csr_sign_err_count counter\ncitadel_server_csr_sign_err_count {}\n",
            sick.csr_sign_errors
        )));
        assert!(text.contains(&format!(
            "\ncitadel_server_success_cert_issuance_count {}\n",
            sick.csr_count - sick.csr_sign_errors
        )));
        let mut out = Vec::new();
        render_istiod(
            &run(IstiodFault::default(), 600.0),
            &info(),
            600.0,
            1.7e9,
            &mut out,
        );
        assert!(
            !String::from_utf8(out).unwrap().contains("csr_sign_err"),
            "absent while 0"
        );
    }
}
