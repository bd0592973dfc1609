//! Pure rendering of sidecar (istio-agent merged :15020) and istiod (:15014) Prometheus pages.
//!
//! A sidecar page is a precompiled [`Template`]: all label text, `# TYPE` lines and constant samples
//! are concatenated once per pod (and again only when a new series appears), so a scrape only
//! copies text and formats the changing numbers. The istiod page is small and written directly.

use std::fmt::Write as _;
use std::io::Write as _;

use super::istiod::{
    Hist, IstiodModel, CONFIG_SIZE_BOUNDS, CONVERGENCE_BOUNDS, DEBOUNCE_BOUNDS,
    PUSHCONTEXT_INIT_BOUNDS, PUSH_TIME_BOUNDS, SEND_TIME_BOUNDS, XDS_TYPES, XDS_TYPE_URLS,
};
use super::traffic::{
    scalar, Direction, Family, HistogramTags, Layout, SeriesSpec, ENVOY_LE, N_BUCKETS,
};

/// The 25 labels of `istio_requests_total`, in the order the native `istio_stats` filter emits
/// them (istio/proxy `istio_stats.cc`, doc section 3); also the histograms' set with
/// [`HistogramTags::Full`].
pub const REQUEST_LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// The labels of the three `istio_*` histograms with [`HistogramTags::DestinationOnly`]
/// (REQUEST_LABELS minus `source_*`, `response_code`, `grpc_response_status`, `response_flags`),
/// same relative order; `le` follows.
pub const DESTINATION_ONLY_LABELS: [&str; 14] = [
    "reporter",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "connection_security_policy",
];

/// `Content-Type` of every page (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

// ---------------------------------------------------------------------------------------------
// Number formatting
// ---------------------------------------------------------------------------------------------

/// Append the decimal digits of `v` (no allocation, no `fmt` machinery: the hot path).
pub fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Append `v` the way Envoy prints histogram sums: shortest round-trip decimal, integers bare.
pub fn push_f64(out: &mut Vec<u8>, v: f64) {
    if (0.0..1e15).contains(&v) && v.fract() == 0.0 {
        push_u64(out, v as u64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Append `v` as Go's `strconv.FormatFloat(v, 'g', -1, 64)`, which client_golang's text format
/// uses: shortest digits, exponent form (`e+06`, `e-05`) iff the exponent is < -4 or >= 6.
pub fn push_go_float(out: &mut Vec<u8>, v: f64) {
    if v == 0.0 {
        out.push(b'0');
        return;
    }
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
        return;
    }
    if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
        return;
    }
    let mut buf = String::with_capacity(32);
    let _ = write!(buf, "{v:e}");
    let (mant, exp) = buf
        .split_once('e')
        .expect("LowerExp always has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    if !(-4..6).contains(&exp) {
        out.extend_from_slice(mant.as_bytes());
        out.push(b'e');
        out.push(if exp < 0 { b'-' } else { b'+' });
        let a = exp.unsigned_abs();
        if a < 10 {
            out.push(b'0');
        }
        push_u64(out, a as u64);
    } else {
        let _ = write!(out, "{v}");
    }
}

fn go_str(v: f64) -> String {
    let mut b = Vec::new();
    push_go_float(&mut b, v);
    String::from_utf8(b).expect("ascii")
}

/// Escape a label value for the text format (`\`, `"` and newline).
pub fn escape_label(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(v);
    }
    let mut s = String::with_capacity(v.len() + 4);
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    std::borrow::Cow::Owned(s)
}

// ---------------------------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------------------------

/// One piece of a [`Template`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Piece {
    /// Constant text `text[a..b]`.
    Text(u32, u32),
    /// Slot printed as an unsigned integer.
    U64(u32),
    /// Slot holding `f64::to_bits`, printed like Envoy.
    F64(u32),
    /// Slot holding `f64::to_bits`, printed like Go.
    Go(u32),
}

/// A page compiled to constant text interleaved with references to value slots.
#[derive(Clone, Debug, Default)]
pub struct Template {
    text: String,
    pieces: Vec<Piece>,
    values: usize,
}

impl Template {
    /// Render with `vals` (the pod's flat state) appended to `out`.
    pub fn render_into(&self, vals: &[u64], out: &mut Vec<u8>) {
        out.reserve(self.text.len() + self.values * 12);
        let text = self.text.as_bytes();
        for p in &self.pieces {
            match *p {
                Piece::Text(a, b) => out.extend_from_slice(&text[a as usize..b as usize]),
                Piece::U64(i) => push_u64(out, vals[i as usize]),
                Piece::F64(i) => push_f64(out, f64::from_bits(vals[i as usize])),
                Piece::Go(i) => push_go_float(out, f64::from_bits(vals[i as usize])),
            }
        }
    }

    /// Render to a fresh buffer.
    pub fn render(&self, vals: &[u64]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text.len() + self.values * 12);
        self.render_into(vals, &mut out);
        out
    }

    /// Bytes of constant text (a lower bound of the page size).
    pub fn text_len(&self) -> usize {
        self.text.len()
    }
}

/// Builds a [`Template`]; consecutive text is merged into one piece.
#[derive(Debug, Default)]
struct Builder {
    t: Template,
}

impl Builder {
    fn text(&mut self, s: &str) {
        let a = self.t.text.len() as u32;
        self.t.text.push_str(s);
        let b = self.t.text.len() as u32;
        match self.t.pieces.last_mut() {
            Some(Piece::Text(_, end)) if *end == a => *end = b,
            _ => self.t.pieces.push(Piece::Text(a, b)),
        }
    }
    fn u64(&mut self, slot: usize) {
        self.t.pieces.push(Piece::U64(slot as u32));
        self.t.values += 1;
    }
    fn f64(&mut self, slot: usize) {
        self.t.pieces.push(Piece::F64(slot as u32));
        self.t.values += 1;
    }
    fn go(&mut self, slot: usize) {
        self.t.pieces.push(Piece::Go(slot as u32));
        self.t.values += 1;
    }
    /// Go (client_golang) family header: HELP then TYPE.
    fn go_family(&mut self, name: &str, typ: &str, help: &str) {
        self.text(&format!("# HELP {name} {help}\n# TYPE {name} {typ}\n"));
    }
    /// Envoy family header: TYPE only (Envoy prints no HELP).
    fn envoy_type(&mut self, name: &str, typ: &str) {
        self.text(&format!("# TYPE {name} {typ}\n"));
    }
}

// ---------------------------------------------------------------------------------------------
// Pod identity
// ---------------------------------------------------------------------------------------------

/// A Kubernetes workload as Istio labels it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Workload {
    /// Deployment name, e.g. "cart-v1" (`*_workload`).
    pub workload: String,
    /// Namespace.
    pub namespace: String,
    /// `app` label (`*_app`, canonical service, service name).
    pub app: String,
    /// `version` label (`*_version`, canonical revision); "unknown" when absent.
    pub version: String,
    /// Canonical revision ("latest" when the pod has no version label).
    pub canonical_revision: String,
    /// Service account (for the SPIFFE principal).
    pub service_account: String,
}

impl Workload {
    /// An app workload `<app>-v1` in `namespace` with service account `<app>`.
    pub fn app(app: &str, namespace: &str) -> Workload {
        Workload {
            workload: format!("{app}-v1"),
            namespace: namespace.to_string(),
            app: app.to_string(),
            version: "v1".to_string(),
            canonical_revision: "v1".to_string(),
            service_account: app.to_string(),
        }
    }
    /// The default ingress gateway (no version label: version "unknown", revision "latest").
    pub fn ingress_gateway() -> Workload {
        Workload {
            workload: "istio-ingressgateway".to_string(),
            namespace: "istio-system".to_string(),
            app: "istio-ingressgateway".to_string(),
            version: "unknown".to_string(),
            canonical_revision: "latest".to_string(),
            service_account: "istio-ingressgateway-service-account".to_string(),
        }
    }
    /// SPIFFE identity with the default trust domain.
    pub fn principal(&self) -> String {
        format!(
            "spiffe://cluster.local/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
    /// Service host, `<app>.<ns>.svc.cluster.local`.
    pub fn service_host(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.app, self.namespace)
    }
}

/// Everything a sidecar page shows about its pod. Replicas of one workload on one revision share
/// it (the pod name is not on the page), so they share labels and compiled templates too.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SidecarIdentity {
    /// `source_cluster` / `destination_cluster`.
    pub cluster: String,
    /// Sidecar (proxy) version, e.g. "1.25.0" (`istio_build{component="proxy"}`).
    pub proxy_version: String,
    /// The pod's own workload.
    pub me: Workload,
    /// Callers, indexed by [`SeriesSpec::peer`] for inbound series.
    pub inbound_peers: Vec<Workload>,
    /// Callees, indexed by [`SeriesSpec::peer`] for outbound series.
    pub outbound_peers: Vec<Workload>,
}

impl SidecarIdentity {
    /// Stable seed for the constant noise values (goroutines, heap sizes...) of this identity.
    pub fn seed(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        // DefaultHasher::new() uses fixed keys, so this is stable across runs.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

/// Go runtime of the istio-agent / istiod for an Istio version (as shipped by Istio releases).
pub fn go_version(istio_version: &str) -> &'static str {
    let minor = istio_version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    match minor {
        0..=19 => "go1.21.1",
        20..=21 => "go1.22.2",
        22..=23 => "go1.22.8",
        24 => "go1.23.4",
        _ => "go1.24.1",
    }
}

fn push_label(s: &mut String, first: &mut bool, name: &str, value: &str) {
    if !*first {
        s.push(',');
    }
    *first = false;
    s.push_str(name);
    s.push_str("=\"");
    s.push_str(&escape_label(value));
    s.push('"');
}

/// The 25-label text (no braces) of an `istio_requests_total` series.
pub fn request_labels(info: &SidecarIdentity, spec: &SeriesSpec) -> String {
    let (reporter, src, dst, policy) = match spec.direction {
        Direction::Inbound => (
            "destination",
            &info.inbound_peers[spec.peer],
            &info.me,
            "mutual_tls",
        ),
        Direction::Outbound => (
            "source",
            &info.me,
            &info.outbound_peers[spec.peer],
            "unknown",
        ),
    };
    let code = spec.code.to_string();
    let values: [&str; 25] = [
        reporter,
        &src.workload,
        &src.app,
        &src.canonical_revision,
        &src.namespace,
        &src.principal(),
        &src.app,
        &src.version,
        &info.cluster,
        &dst.workload,
        &dst.namespace,
        &dst.principal(),
        &dst.app,
        &dst.version,
        &dst.service_host(),
        &dst.app,
        &dst.canonical_revision,
        &dst.app,
        &dst.namespace,
        &info.cluster,
        "http",
        &code,
        "",
        spec.flags,
        policy,
    ];
    let mut s = String::with_capacity(900);
    let mut first = true;
    for (n, v) in REQUEST_LABELS.iter().zip(values) {
        push_label(&mut s, &mut first, n, v);
    }
    s
}

/// The label text of histogram series of `spec` under `tags`.
pub fn histogram_labels(info: &SidecarIdentity, spec: &SeriesSpec, tags: HistogramTags) -> String {
    let full = request_labels(info, spec);
    match tags {
        HistogramTags::Full => full,
        HistogramTags::DestinationOnly => {
            // Keep the kept labels in the same relative order by filtering the full text.
            let mut s = String::with_capacity(600);
            let mut first = true;
            for (name, value) in parse_labels(&full).expect("we wrote it") {
                if DESTINATION_ONLY_LABELS.contains(&name.as_str()) {
                    push_label(&mut s, &mut first, &name, &value);
                }
            }
            s
        }
    }
}

/// Parse `a="x",b="y"` (text between the braces) into pairs, unescaping values; `None` if malformed.
/// Values may contain commas, so this scans quotes rather than splitting.
pub fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let eq = s[i..].find('=')? + i;
        let name = &s[i..eq];
        if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
            return None;
        }
        if b.get(eq + 1) != Some(&b'"') {
            return None;
        }
        let mut j = eq + 2;
        let mut val = String::new();
        loop {
            match *b.get(j)? {
                b'"' => break,
                b'\\' => {
                    match *b.get(j + 1)? {
                        b'n' => val.push('\n'),
                        c => val.push(c as char),
                    }
                    j += 2;
                }
                _ => {
                    let c = s[j..].chars().next()?;
                    val.push(c);
                    j += c.len_utf8();
                }
            }
        }
        out.push((name.to_string(), val));
        i = j + 1;
        match b.get(i) {
            None => break,
            Some(b',') => i += 1,
            Some(_) => return None,
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Sidecar page
// ---------------------------------------------------------------------------------------------

/// Label text of every series and histogram of a pod, computed once per pod.
#[derive(Clone, Debug)]
pub struct PodLabels {
    /// Per `istio_requests_total` series.
    pub requests: Vec<String>,
    /// Series indices sorted by label text (the order Envoy's sorted stat names give).
    pub request_order: Vec<usize>,
    /// Per histogram series (index = [`SeriesSpec::hist`]).
    pub hists: Vec<String>,
}

impl PodLabels {
    /// Compute the label texts of `specs` for `info`.
    ///
    /// Panics if a spec names a peer the identity does not have (a programming error).
    pub fn new(info: &SidecarIdentity, specs: &[SeriesSpec], tags: HistogramTags) -> PodLabels {
        for s in specs {
            let peers = match s.direction {
                Direction::Inbound => info.inbound_peers.len(),
                Direction::Outbound => info.outbound_peers.len(),
            };
            assert!(
                s.peer < peers,
                "series plan needs {:?} peer {} but the identity has {peers}",
                s.direction,
                s.peer
            );
        }
        let requests: Vec<String> = specs.iter().map(|s| request_labels(info, s)).collect();
        let mut request_order: Vec<usize> = (0..requests.len()).collect();
        request_order.sort_by(|&a, &b| requests[a].cmp(&requests[b]));
        let n_hist = super::traffic::hist_count(specs);
        let mut hists = vec![String::new(); n_hist];
        for s in specs {
            if hists[s.hist].is_empty() {
                hists[s.hist] = histogram_labels(info, s, tags);
            }
        }
        PodLabels {
            requests,
            request_order,
            hists,
        }
    }
}

/// Static (per-pod constant) numbers shown in the noise families.
struct Jitter(u64);
impl Jitter {
    fn pick(&self, salt: u64, lo: u64, hi: u64) -> u64 {
        lo + super::traffic::mix64(self.0 ^ salt.wrapping_mul(0x9E37)) % (hi - lo + 1)
    }
}

const XDS: &str = "cluster_name=\"xds-grpc\"";

/// Value of a noise sample: a constant, a scalar slot, or Envoy's `response_code_class` form.
#[derive(Clone, Copy)]
enum V {
    C(u64),
    Slot(usize),
    Class2xx,
}

/// Compile the sidecar page of a pod for the set of series present (`present` bit k = spec k).
pub fn sidecar_template(
    info: &SidecarIdentity,
    labels: &PodLabels,
    specs: &[SeriesSpec],
    layout: Layout,
    present: u64,
) -> Template {
    let mut b = Builder::default();
    let sc = |i: usize| layout.scalar(i);
    let j = Jitter(info.seed());
    agent_section(&mut b, info, &j, &sc);

    // ---- Envoy counters (sorted by tag-extracted name, as Envoy does) ----
    #[rustfmt::skip]
    let xds_counters: [(&str, V); 70] = [
        ("assignment_stale", V::C(0)), ("assignment_timeout_received", V::C(0)), ("assignment_use_cached", V::C(0)),
        ("bind_errors", V::C(0)), ("default_total_match_count", V::C(1)),
        ("http2_dropped_headers_with_underscores", V::C(0)), ("http2_goaway_sent", V::C(0)), ("http2_header_overflow", V::C(0)),
        ("http2_headers_cb_no_stream", V::C(0)), ("http2_inbound_empty_frames_flood", V::C(0)),
        ("http2_inbound_priority_frames_flood", V::C(0)), ("http2_inbound_window_update_frames_flood", V::C(0)),
        ("http2_keepalive_timeout", V::C(0)), ("http2_metadata_empty_frames", V::C(0)), ("http2_outbound_control_flood", V::C(0)),
        ("http2_outbound_flood", V::C(0)), ("http2_requests_rejected_with_underscores_in_headers", V::C(0)),
        ("http2_rx_messaging_error", V::C(0)), ("http2_rx_reset", V::C(0)), ("http2_stream_refused_errors", V::C(0)),
        ("http2_trailers", V::C(0)), ("http2_tx_flush_timeout", V::C(0)), ("http2_tx_reset", V::C(0)),
        ("internal_upstream_rq", V::Class2xx), ("internal_upstream_rq_200", V::C(1)), ("internal_upstream_rq_completed", V::C(1)),
        ("lb_healthy_panic", V::C(0)), ("lb_local_cluster_not_ok", V::C(0)), ("lb_recalculate_zone_structures", V::C(0)),
        ("lb_subsets_created", V::C(0)), ("lb_subsets_fallback", V::C(0)), ("lb_subsets_fallback_panic", V::C(0)),
        ("lb_subsets_removed", V::C(0)), ("lb_subsets_selected", V::C(0)), ("lb_zone_cluster_too_small", V::C(0)),
        ("lb_zone_no_capacity_left", V::C(0)), ("lb_zone_number_differs", V::C(0)), ("lb_zone_routing_all_directly", V::C(0)),
        ("lb_zone_routing_cross_zone", V::C(0)), ("lb_zone_routing_sampled", V::C(0)), ("membership_change", V::C(1)),
        ("original_dst_host_invalid", V::C(0)), ("retry_or_shadow_abandoned", V::C(0)), ("update_attempt", V::C(0)),
        ("update_empty", V::C(0)), ("update_failure", V::C(0)), ("update_no_rebuild", V::C(0)), ("update_success", V::C(0)),
        ("upstream_cx_close_notify", V::C(0)), ("upstream_cx_connect_attempts_exceeded", V::C(0)),
        ("upstream_cx_connect_fail", V::C(0)), ("upstream_cx_connect_timeout", V::C(0)), ("upstream_cx_destroy", V::C(0)),
        ("upstream_cx_destroy_local", V::C(0)), ("upstream_cx_destroy_remote", V::C(0)), ("upstream_cx_http1_total", V::C(0)),
        ("upstream_cx_http2_total", V::C(1)), ("upstream_cx_http3_total", V::C(0)), ("upstream_cx_idle_timeout", V::C(0)),
        ("upstream_cx_max_requests", V::C(0)), ("upstream_cx_none_healthy", V::C(0)), ("upstream_cx_overflow", V::C(0)),
        ("upstream_cx_pool_overflow", V::C(0)), ("upstream_cx_protocol_error", V::C(0)),
        ("upstream_cx_rx_bytes_total", V::Slot(scalar::XDS_RX_BYTES)), ("upstream_cx_total", V::Slot(scalar::XDS_CX_TOTAL)),
        ("upstream_cx_tx_bytes_total", V::Slot(scalar::XDS_TX_BYTES)), ("upstream_flow_control_backed_up_total", V::C(0)),
        ("upstream_flow_control_drained_total", V::C(0)), ("upstream_rq", V::Class2xx),
    ];
    for (name, v) in xds_counters {
        let full = format!("envoy_cluster_{name}");
        b.envoy_type(&full, "counter");
        match v {
            // Envoy's response_code_class tag extraction puts the class in a label.
            V::Class2xx => b.text(&format!("{full}{{response_code_class=\"2xx\",{XDS}}} 1\n")),
            V::Slot(i) => {
                b.text(&format!("{full}{{{XDS}}} "));
                b.u64(sc(i));
                b.text("\n");
            }
            V::C(v) => b.text(&format!("{full}{{{XDS}}} {v}\n")),
        }
    }
    #[rustfmt::skip]
    let xds_rq: [(&str, u64); 12] = [
        ("upstream_rq_200", 1), ("upstream_rq_cancelled", 0), ("upstream_rq_completed", 1),
        ("upstream_rq_maintenance_mode", 0), ("upstream_rq_pending_overflow", 0), ("upstream_rq_pending_total", 1),
        ("upstream_rq_per_try_timeout", 0), ("upstream_rq_retry", 0), ("upstream_rq_retry_success", 0),
        ("upstream_rq_timeout", 0), ("upstream_rq_total", 1), ("upstream_rq_tx_reset", 0),
    ];
    for (name, v) in xds_rq {
        let full = format!("envoy_cluster_{name}");
        b.envoy_type(&full, "counter");
        b.text(&format!("{full}{{{XDS}}} {v}\n"));
    }
    let cm = |b: &mut Builder, name: &str, slot: Option<usize>, v: u64| {
        unlabelled(
            b,
            &format!("envoy_cluster_manager_{name}"),
            "counter",
            slot,
            v,
        )
    };
    cm(&mut b, "cds_init_fetch_timeout", None, 0);
    cm(
        &mut b,
        "cds_update_attempt",
        Some(sc(scalar::CDS_DUR_COUNT)),
        0,
    );
    cm(&mut b, "cds_update_failure", None, 0);
    cm(
        &mut b,
        "cds_update_rejected",
        Some(sc(scalar::CDS_REJECTED)),
        0,
    );
    cm(
        &mut b,
        "cds_update_success",
        Some(sc(scalar::CDS_SUCCESS)),
        0,
    );
    let clusters = j.pick(1, 24, 40);
    cm(&mut b, "cluster_added", None, clusters);
    cm(&mut b, "cluster_modified", None, j.pick(2, 0, 3));
    cm(&mut b, "cluster_removed", None, 0);
    cm(&mut b, "cluster_updated", None, j.pick(3, 2, 9));
    cm(&mut b, "cluster_updated_via_merge", None, 0);
    cm(&mut b, "update_merge_cancelled", None, 0);
    cm(&mut b, "update_out_of_merge_window", None, 0);

    // istio_requests_total: only series seen since the process started (Envoy creates stats lazily).
    if present != 0 {
        b.envoy_type("istio_requests_total", "counter");
        for &k in &labels.request_order {
            let l = &labels.requests[k];
            if present & (1 << k) != 0 {
                b.text("istio_requests_total{");
                b.text(l);
                b.text("} ");
                b.u64(layout.req(k));
                b.text("\n");
            }
        }
    }

    let lm = |b: &mut Builder, name: &str, slot: Option<usize>, v: u64| {
        unlabelled(
            b,
            &format!("envoy_listener_manager_{name}"),
            "counter",
            slot,
            v,
        )
    };
    lm(&mut b, "lds_init_fetch_timeout", None, 0);
    lm(
        &mut b,
        "lds_update_attempt",
        Some(sc(scalar::LDS_DUR_COUNT)),
        0,
    );
    lm(&mut b, "lds_update_failure", None, 0);
    lm(
        &mut b,
        "lds_update_rejected",
        Some(sc(scalar::LDS_REJECTED)),
        0,
    );
    lm(
        &mut b,
        "lds_update_success",
        Some(sc(scalar::LDS_SUCCESS)),
        0,
    );
    let listeners = j.pick(4, 14, 24);
    lm(&mut b, "listener_added", None, listeners);
    lm(&mut b, "listener_create_failure", None, 0);
    lm(&mut b, "listener_create_success", None, listeners * 2);
    lm(&mut b, "listener_in_place_updated", None, 0);
    lm(&mut b, "listener_modified", None, 0);
    lm(&mut b, "listener_removed", None, 0);
    lm(&mut b, "listener_stopped", None, 0);
    for name in [
        "debug_assertion_failures",
        "dropped_stat_flushes",
        "dynamic_unknown_fields",
        "envoy_bug_failures",
        "main_thread_watchdog_mega_miss",
        "main_thread_watchdog_miss",
        "static_unknown_fields",
        "wip_protos",
        "worker_0_watchdog_mega_miss",
        "worker_0_watchdog_miss",
        "worker_1_watchdog_mega_miss",
        "worker_1_watchdog_miss",
    ] {
        b.envoy_type(&format!("envoy_server_{name}"), "counter");
        b.text(&format!("envoy_server_{name}{{}} 0\n"));
    }
    for (name, v) in [
        ("envoy_wasm_runtime_null_created", j.pick(5, 0, 2)),
        ("remote_load_cache_hits", 0),
        ("remote_load_cache_misses", 0),
        ("remote_load_cache_negative_hits", 0),
        ("remote_load_fetch_failures", 0),
        ("remote_load_fetch_successes", 0),
    ] {
        b.envoy_type(&format!("envoy_wasm_{name}"), "counter");
        b.text(&format!("envoy_wasm_{name}{{}} {v}\n"));
    }

    // ---- Envoy gauges ----
    #[rustfmt::skip]
    let xds_gauges: [(&str, u64); 24] = [
        ("circuit_breakers_default_cx_open", 0), ("circuit_breakers_default_cx_pool_open", 0),
        ("circuit_breakers_default_rq_open", 0), ("circuit_breakers_default_rq_pending_open", 0),
        ("circuit_breakers_default_rq_retry_open", 0), ("circuit_breakers_high_cx_open", 0),
        ("circuit_breakers_high_cx_pool_open", 0), ("circuit_breakers_high_rq_open", 0),
        ("circuit_breakers_high_rq_pending_open", 0), ("circuit_breakers_high_rq_retry_open", 0),
        ("http2_pending_send_bytes", 0), ("http2_streams_active", 1), ("lb_subsets_active", 0),
        ("max_host_weight", 0), ("membership_degraded", 0), ("membership_excluded", 0),
        ("membership_healthy", 1), ("membership_total", 1), ("upstream_cx_active", 1),
        ("upstream_cx_rx_bytes_buffered", j.pick(6, 0, 40)), ("upstream_cx_tx_bytes_buffered", 0),
        ("upstream_rq_active", 1), ("upstream_rq_pending_active", 0), ("version", 0),
    ];
    for (name, v) in xds_gauges {
        let full = format!("envoy_cluster_{name}");
        b.envoy_type(&full, "gauge");
        b.text(&format!("{full}{{{XDS}}} {v}\n"));
    }
    let gauge = |b: &mut Builder, full: &str, slot: Option<usize>, v: u64| {
        unlabelled(b, full, "gauge", slot, v)
    };
    gauge(
        &mut b,
        "envoy_cluster_manager_active_clusters",
        None,
        clusters,
    );
    gauge(
        &mut b,
        "envoy_cluster_manager_cds_update_time",
        Some(sc(scalar::CDS_TIME_MS)),
        0,
    );
    gauge(
        &mut b,
        "envoy_cluster_manager_cds_version",
        Some(sc(scalar::CDS_VERSION)),
        0,
    );
    gauge(&mut b, "envoy_cluster_manager_warming_clusters", None, 0);
    b.envoy_type("istio_build", "gauge");
    b.text(&format!(
        "istio_build{{component=\"proxy\",tag=\"{}\"}} 1\n",
        escape_label(&info.proxy_version)
    ));
    gauge(
        &mut b,
        "envoy_listener_manager_lds_update_time",
        Some(sc(scalar::LDS_TIME_MS)),
        0,
    );
    gauge(
        &mut b,
        "envoy_listener_manager_lds_version",
        Some(sc(scalar::LDS_VERSION)),
        0,
    );
    gauge(
        &mut b,
        "envoy_listener_manager_total_filter_chains_draining",
        None,
        0,
    );
    gauge(
        &mut b,
        "envoy_listener_manager_total_listeners_active",
        None,
        listeners,
    );
    gauge(
        &mut b,
        "envoy_listener_manager_total_listeners_draining",
        None,
        0,
    );
    gauge(
        &mut b,
        "envoy_listener_manager_total_listeners_warming",
        None,
        0,
    );
    gauge(&mut b, "envoy_listener_manager_workers_started", None, 1);
    gauge(
        &mut b,
        "envoy_server_compilation_settings_fips_mode",
        None,
        0,
    );
    gauge(&mut b, "envoy_server_concurrency", None, 2);
    gauge(
        &mut b,
        "envoy_server_days_until_first_cert_expiring",
        None,
        0,
    );
    gauge(&mut b, "envoy_server_hot_restart_epoch", None, 0);
    gauge(&mut b, "envoy_server_live", None, 1);
    gauge(
        &mut b,
        "envoy_server_memory_allocated",
        Some(sc(scalar::MEM_ALLOCATED)),
        0,
    );
    gauge(
        &mut b,
        "envoy_server_memory_heap_size",
        None,
        j.pick(7, 14, 20) * 1_048_576,
    );
    gauge(
        &mut b,
        "envoy_server_memory_physical_size",
        None,
        j.pick(8, 17, 24) * 1_048_576,
    );
    gauge(&mut b, "envoy_server_parent_connections", None, 0);
    gauge(
        &mut b,
        "envoy_server_seconds_until_first_ocsp_response_expiring",
        None,
        0,
    );
    gauge(&mut b, "envoy_server_state", None, 0);
    gauge(
        &mut b,
        "envoy_server_stats_recent_lookups",
        Some(sc(scalar::RECENT_LOOKUPS)),
        0,
    );
    gauge(
        &mut b,
        "envoy_server_total_connections",
        Some(sc(scalar::TOTAL_CONNECTIONS)),
        0,
    );
    gauge(&mut b, "envoy_server_uptime", Some(sc(scalar::UPTIME)), 0);
    gauge(&mut b, "envoy_server_version", None, 15_537_291);
    gauge(
        &mut b,
        "envoy_wasm_envoy_wasm_runtime_null_active",
        None,
        j.pick(9, 0, 2),
    );
    gauge(&mut b, "envoy_wasm_remote_load_cache_entries", None, 0);

    // ---- Envoy histograms ----
    let connect_ms = j.pick(10, 30, 90);
    static_envoy_hist(
        &mut b,
        "envoy_cluster_upstream_cx_connect_ms",
        XDS,
        connect_ms as f64 + 0.5,
        1,
    );
    static_envoy_hist(&mut b, "envoy_cluster_upstream_cx_length_ms", XDS, 0.0, 0);
    update_duration_hist(
        &mut b,
        "envoy_cluster_manager_cds_update_duration",
        &sc,
        scalar::CDS_DUR_10,
    );
    let present_hists = present_hists(specs, present);
    for (fam, name) in [
        (Family::RequestBytes, "istio_request_bytes"),
        (Family::Duration, "istio_request_duration_milliseconds"),
        (Family::ResponseBytes, "istio_response_bytes"),
    ] {
        if present_hists == 0 {
            continue;
        }
        b.envoy_type(name, "histogram");
        for (h, l) in labels.hists.iter().enumerate() {
            if present_hists & (1 << h) == 0 {
                continue;
            }
            let first = layout.hist(h, fam);
            for (i, le) in ENVOY_LE.iter().enumerate() {
                b.text(name);
                b.text("_bucket{");
                b.text(l);
                b.text(",le=\"");
                b.text(le);
                b.text("\"} ");
                b.u64(first + i);
                b.text("\n");
            }
            b.text(&format!("{name}_sum{{{l}}} "));
            b.f64(layout.sum(h, fam));
            b.text(&format!("\n{name}_count{{{l}}} "));
            b.u64(layout.count(h, fam));
            b.text("\n");
        }
    }
    update_duration_hist(
        &mut b,
        "envoy_listener_manager_lds_update_duration",
        &sc,
        scalar::LDS_DUR_10,
    );
    static_envoy_hist(
        &mut b,
        "envoy_server_initialization_time_ms",
        "",
        j.pick(11, 260, 480) as f64,
        1,
    );
    b.t
}

/// Histogram series present given the series mask (bit h = some series of histogram h is present).
pub fn present_hists(specs: &[SeriesSpec], present: u64) -> u64 {
    specs
        .iter()
        .enumerate()
        .filter(|(k, _)| present & (1 << k) != 0)
        .fold(0u64, |m, (_, s)| m | (1 << s.hist))
}

/// An Envoy histogram with `n` observations of value `v` (constant for the pod's life).
fn static_envoy_hist(b: &mut Builder, name: &str, labels: &str, v: f64, n: u64) {
    b.envoy_type(name, "histogram");
    let sep = if labels.is_empty() { "" } else { "," };
    let mut s = String::new();
    for (i, le) in ENVOY_LE.iter().enumerate() {
        let in_bucket = i == N_BUCKETS - 1 || v <= super::traffic::ENVOY_BOUNDS[i];
        let c = if in_bucket { n } else { 0 };
        let _ = writeln!(s, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {c}");
    }
    let _ = writeln!(
        s,
        "{name}_sum{{{labels}}} {}",
        if n == 0 { 0.0 } else { v * n as f64 }
    );
    let _ = writeln!(s, "{name}_count{{{labels}}} {n}");
    b.text(&s);
}

/// xDS update duration histogram from the scalars `first..first+5` (le 10/25/50, count, sum).
fn update_duration_hist(b: &mut Builder, name: &str, sc: &dyn Fn(usize) -> usize, first: usize) {
    b.envoy_type(name, "histogram");
    for (i, le) in ENVOY_LE.iter().enumerate() {
        b.text(&format!("{name}_bucket{{le=\"{le}\"}} "));
        match i {
            0..=2 => b.text("0"),
            3 => b.u64(sc(first)),
            4 => b.u64(sc(first + 1)),
            5 => b.u64(sc(first + 2)),
            _ => b.u64(sc(first + 3)),
        }
        b.text("\n");
    }
    b.text(&format!("{name}_sum{{}} "));
    b.u64(sc(first + 4));
    b.text(&format!("\n{name}_count{{}} "));
    b.u64(sc(first + 3));
    b.text("\n");
}

/// The istio-agent's own Go metrics (with `# HELP`, unlabelled samples without braces).
fn agent_section(b: &mut Builder, info: &SidecarIdentity, j: &Jitter, sc: &dyn Fn(usize) -> usize) {
    let g = |b: &mut Builder, name: &str, typ: &str, help: &str, v: f64| {
        b.go_family(name, typ, help);
        b.text(&format!("{name} {}\n", go_str(v)));
    };
    let d = |b: &mut Builder, name: &str, typ: &str, help: &str, slot: usize, go: bool| {
        b.go_family(name, typ, help);
        b.text(name);
        b.text(" ");
        if go {
            b.go(slot);
        } else {
            b.u64(slot);
        }
        b.text("\n");
    };
    let p = "istio_agent_";
    g(
        b,
        &format!("{p}endpoint_no_pod"),
        "gauge",
        "Endpoints without an associated pod.",
        0.0,
    );
    b.go_family(
        &format!("{p}go_gc_duration_seconds"),
        "summary",
        "A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.",
    );
    let q = [7.754e-05, 0.0001054, 0.000146232, 0.000168758, 0.000206723];
    for (qt, v) in ["0", "0.25", "0.5", "0.75", "1"].iter().zip(q) {
        b.text(&format!(
            "{p}go_gc_duration_seconds{{quantile=\"{qt}\"}} {}\n",
            go_str(v)
        ));
    }
    b.text(&format!("{p}go_gc_duration_seconds_sum "));
    b.go(sc(scalar::GC_SUM));
    b.text(&format!("\n{p}go_gc_duration_seconds_count "));
    b.u64(sc(scalar::GC_COUNT));
    b.text("\n");
    g(b, &format!("{p}go_gc_gogc_percent"), "gauge", "Heap size target percentage configured by the user, otherwise 100. This value is set by the GOGC environment variable, and the runtime/debug.SetGCPercent function. Sourced from /gc/gogc:percent", 100.0);
    g(b, &format!("{p}go_gc_gomemlimit_bytes"), "gauge", "Go runtime memory limit configured by the user, otherwise math.MaxInt64. This value is set by the GOMEMLIMIT environment variable, and the runtime/debug.SetMemoryLimit function. Sourced from /gc/gomemlimit:bytes", 9.223372036854776e18);
    g(
        b,
        &format!("{p}go_goroutines"),
        "gauge",
        "Number of goroutines that currently exist.",
        j.pick(20, 55, 75) as f64,
    );
    b.go_family(
        &format!("{p}go_info"),
        "gauge",
        "Information about the Go environment.",
    );
    b.text(&format!(
        "{p}go_info{{version=\"{}\"}} 1\n",
        go_version(&info.proxy_version)
    ));
    d(b, &format!("{p}go_memstats_alloc_bytes"), "gauge", "Number of bytes allocated in heap and currently in use. Equals to /memory/classes/heap/objects:bytes.", sc(scalar::ALLOC), true);
    d(b, &format!("{p}go_memstats_alloc_bytes_total"), "counter", "Total number of bytes allocated in heap until now, even if released already. Equals to /gc/heap/allocs:bytes.", sc(scalar::ALLOC_TOTAL), true);
    g(b, &format!("{p}go_memstats_buck_hash_sys_bytes"), "gauge", "Number of bytes used by the profiling bucket hash table. Equals to /memory/classes/profiling/buckets:bytes.", j.pick(21, 1_440_000, 1_470_000) as f64);
    d(b, &format!("{p}go_memstats_frees_total"), "counter", "Total number of heap objects frees. Equals to /gc/heap/frees:objects + /gc/heap/tiny/allocs:objects.", sc(scalar::FREES), true);
    g(b, &format!("{p}go_memstats_gc_sys_bytes"), "gauge", "Number of bytes used for garbage collection system metadata. Equals to /memory/classes/metadata/other:bytes.", j.pick(22, 5_700_000, 5_900_000) as f64);
    d(b, &format!("{p}go_memstats_heap_alloc_bytes"), "gauge", "Number of heap bytes allocated and currently in use, same as go_memstats_alloc_bytes. Equals to /memory/classes/heap/objects:bytes.", sc(scalar::ALLOC), true);
    g(b, &format!("{p}go_memstats_heap_idle_bytes"), "gauge", "Number of heap bytes waiting to be used. Equals to /memory/classes/heap/released:bytes + /memory/classes/heap/free:bytes.", (j.pick(23, 52, 58) * 1_048_576) as f64);
    g(b, &format!("{p}go_memstats_heap_inuse_bytes"), "gauge", "Number of heap bytes that are in use. Equals to /memory/classes/heap/objects:bytes + /memory/classes/heap/unused:bytes", (j.pick(24, 9_500, 10_500) * 1024) as f64);
    g(
        b,
        &format!("{p}go_memstats_heap_objects"),
        "gauge",
        "Number of currently allocated objects. Equals to /gc/heap/objects:objects.",
        j.pick(25, 30_000, 40_000) as f64,
    );
    g(
        b,
        &format!("{p}go_memstats_heap_released_bytes"),
        "gauge",
        "Number of heap bytes released to OS. Equals to /memory/classes/heap/released:bytes.",
        (j.pick(26, 50, 54) * 1_048_576) as f64,
    );
    g(b, &format!("{p}go_memstats_heap_sys_bytes"), "gauge", "Number of heap bytes obtained from system. Equals to /memory/classes/heap/objects:bytes + /memory/classes/heap/unused:bytes + /memory/classes/heap/released:bytes + /memory/classes/heap/free:bytes.", 6.5994752e7);
    d(
        b,
        &format!("{p}go_memstats_last_gc_time_seconds"),
        "gauge",
        "Number of seconds since 1970 of last garbage collection.",
        sc(scalar::LAST_GC),
        true,
    );
    d(b, &format!("{p}go_memstats_mallocs_total"), "counter", "Total number of heap objects allocated, both live and gc-ed. Semantically a counter version for go_memstats_heap_objects gauge. Equals to /gc/heap/allocs:objects + /gc/heap/tiny/allocs:objects.", sc(scalar::MALLOCS), true);
    g(b, &format!("{p}go_memstats_mcache_inuse_bytes"), "gauge", "Number of bytes in use by mcache structures. Equals to /memory/classes/metadata/mcache/inuse:bytes.", 2400.0);
    g(b, &format!("{p}go_memstats_mcache_sys_bytes"), "gauge", "Number of bytes used for mcache structures obtained from system. Equals to /memory/classes/metadata/mcache/inuse:bytes + /memory/classes/metadata/mcache/free:bytes.", 15600.0);
    g(b, &format!("{p}go_memstats_mspan_inuse_bytes"), "gauge", "Number of bytes in use by mspan structures. Equals to /memory/classes/metadata/mspan/inuse:bytes.", j.pick(27, 120_000, 140_000) as f64);
    g(b, &format!("{p}go_memstats_mspan_sys_bytes"), "gauge", "Number of bytes used for mspan structures obtained from system. Equals to /memory/classes/metadata/mspan/inuse:bytes + /memory/classes/metadata/mspan/free:bytes.", 163_200.0);
    g(b, &format!("{p}go_memstats_next_gc_bytes"), "gauge", "Number of heap bytes when next garbage collection will take place. Equals to /gc/heap/goal:bytes.", j.pick(28, 13_000_000, 14_500_000) as f64);
    g(
        b,
        &format!("{p}go_memstats_other_sys_bytes"),
        "gauge",
        "Number of bytes used for other system allocations. Equals to /memory/classes/other:bytes.",
        j.pick(29, 480_000, 520_000) as f64,
    );
    g(b, &format!("{p}go_memstats_stack_inuse_bytes"), "gauge", "Number of bytes obtained from system for stack allocator in non-CGO environments. Equals to /memory/classes/heap/stacks:bytes.", 1.114112e6);
    g(b, &format!("{p}go_memstats_stack_sys_bytes"), "gauge", "Number of bytes obtained from system for stack allocator. Equals to /memory/classes/heap/stacks:bytes + /memory/classes/os-stacks:bytes.", 1.114112e6);
    g(
        b,
        &format!("{p}go_memstats_sys_bytes"),
        "gauge",
        "Number of bytes obtained from system. Equals to /memory/classes/total:byte.",
        j.pick(30, 74_000_000, 76_000_000) as f64,
    );
    g(b, &format!("{p}go_sched_gomaxprocs_threads"), "gauge", "The current runtime.GOMAXPROCS setting, or the number of operating system threads that can execute user-level Go code simultaneously. Sourced from /sched/gomaxprocs:threads", 2.0);
    g(
        b,
        &format!("{p}go_threads"),
        "gauge",
        "Number of OS threads created.",
        j.pick(31, 9, 13) as f64,
    );
    b.go_family(
        &format!("{p}num_outgoing_requests"),
        "counter",
        "Number of total outgoing requests (e.g. to a token exchange server, CA, etc.)",
    );
    b.text(&format!(
        "{p}num_outgoing_requests{{request_type=\"csr\"}} 1\n"
    ));
    b.go_family(&format!("{p}outgoing_latency"), "counter", "The latency of outgoing requests (e.g. to a token exchange server, CA, etc.) in milliseconds.");
    b.text(&format!(
        "{p}outgoing_latency{{request_type=\"csr\"}} {}\n",
        go_str(j.pick(32, 8_000, 16_000) as f64 / 1000.0 + 0.000366)
    ));
    for (n, help) in [
        (
            "pilot_conflict_inbound_listener",
            "Number of conflicting inbound listeners.",
        ),
        (
            "pilot_conflict_outbound_listener_tcp_over_current_tcp",
            "Number of conflicting tcp listeners with current tcp listener.",
        ),
        (
            "pilot_destrule_subsets",
            "Duplicate subsets across destination rules for same host",
        ),
        (
            "pilot_duplicate_envoy_clusters",
            "Duplicate envoy clusters caused by service entries with same hostname",
        ),
        (
            "pilot_eds_no_instances",
            "Number of clusters without instances.",
        ),
        (
            "pilot_endpoint_not_ready",
            "Endpoint found in unready state.",
        ),
        (
            "pilot_no_ip",
            "Pods not found in the endpoint table, possibly invalid.",
        ),
        (
            "pilot_virt_services",
            "Total virtual services known to pilot.",
        ),
        (
            "pilot_vservice_dup_domain",
            "Virtual services with dup domains.",
        ),
    ] {
        g(b, &format!("{p}{n}"), "gauge", help, 0.0);
    }
    b.go_family(
        &format!("{p}pilot_xds"),
        "gauge",
        "Number of endpoints connected to this pilot using XDS.",
    );
    b.text(&format!(
        "{p}pilot_xds{{version=\"{}\"}} 2\n",
        escape_label(&info.proxy_version)
    ));
    b.go_family(
        &format!("{p}pilot_xds_config_size_bytes"),
        "histogram",
        "Distribution of configuration sizes pushed to clients",
    );
    let secret = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
    for le in ["1", "10000", "1e+06", "4e+06", "1e+07", "4e+07", "+Inf"] {
        let c = if le == "1" { 0 } else { 2 };
        b.text(&format!(
            "{p}pilot_xds_config_size_bytes_bucket{{type=\"{secret}\",le=\"{le}\"}} {c}\n"
        ));
    }
    b.text(&format!("{p}pilot_xds_config_size_bytes_sum{{type=\"{secret}\"}} 5108\n{p}pilot_xds_config_size_bytes_count{{type=\"{secret}\"}} 2\n"));
    b.go_family(
        &format!("{p}pilot_xds_push_time"),
        "histogram",
        "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
    );
    for le in [
        "0.01", "0.1", "0.5", "1", "3", "5", "10", "20", "30", "+Inf",
    ] {
        b.text(&format!(
            "{p}pilot_xds_push_time_bucket{{type=\"sds\",le=\"{le}\"}} 2\n"
        ));
    }
    b.text(&format!("{p}pilot_xds_push_time_sum{{type=\"sds\"}} 0.0030848\n{p}pilot_xds_push_time_count{{type=\"sds\"}} 2\n"));
    b.go_family(
        &format!("{p}pilot_xds_pushes"),
        "counter",
        "Pilot build and send errors for lds, rds, cds and eds.",
    );
    b.text(&format!("{p}pilot_xds_pushes{{type=\"sds\"}} 2\n"));
    d(
        b,
        &format!("{p}process_cpu_seconds_total"),
        "counter",
        "Total user and system CPU time spent in seconds.",
        sc(scalar::CPU),
        true,
    );
    g(
        b,
        &format!("{p}process_max_fds"),
        "gauge",
        "Maximum number of open file descriptors.",
        1.048576e6,
    );
    g(
        b,
        &format!("{p}process_open_fds"),
        "gauge",
        "Number of open file descriptors.",
        j.pick(33, 20, 28) as f64,
    );
    d(
        b,
        &format!("{p}process_resident_memory_bytes"),
        "gauge",
        "Resident memory size in bytes.",
        sc(scalar::RSS),
        true,
    );
    d(
        b,
        &format!("{p}process_start_time_seconds"),
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        sc(scalar::START_TIME),
        true,
    );
    g(
        b,
        &format!("{p}process_virtual_memory_bytes"),
        "gauge",
        "Virtual memory size in bytes.",
        (j.pick(34, 760, 780) * 1_000_000) as f64,
    );
    g(
        b,
        &format!("{p}process_virtual_memory_max_bytes"),
        "gauge",
        "Maximum amount of virtual memory available in bytes.",
        1.8446744073709552e19,
    );
    d(
        b,
        &format!("{p}scrapes_total"),
        "counter",
        "The total number of scrapes.",
        sc(scalar::SCRAPES),
        true,
    );
    g(
        b,
        &format!("{p}startup_duration_seconds"),
        "gauge",
        "The time from the process starting to being marked ready.",
        0.5 + j.pick(35, 0, 900_000) as f64 / 1e6,
    );
    g(
        b,
        &format!("{p}wasm_cache_entries"),
        "gauge",
        "number of Wasm remote fetch cache entries.",
        0.0,
    );
}

// ---------------------------------------------------------------------------------------------
// istiod page
// ---------------------------------------------------------------------------------------------

/// Identity of one istiod, for its page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IstiodInfo {
    /// istiod version ("1.25.0").
    pub version: String,
    /// Connected proxies per proxy version (`pilot_xds{version}`).
    pub proxies_by_version: Vec<(String, u64)>,
    /// Services in the mesh (`pilot_services`).
    pub services: u64,
    /// Seed for constant jitter.
    pub seed: u64,
}

struct W<'a> {
    out: &'a mut Vec<u8>,
}

impl W<'_> {
    fn family(&mut self, name: &str, typ: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {typ}");
    }
    fn sample(&mut self, name: &str, labels: &str, v: f64) {
        self.out.extend_from_slice(name.as_bytes());
        if !labels.is_empty() {
            self.out.push(b'{');
            self.out.extend_from_slice(labels.as_bytes());
            self.out.push(b'}');
        }
        self.out.push(b' ');
        push_go_float(self.out, v);
        self.out.push(b'\n');
    }
    fn scalar(&mut self, name: &str, typ: &str, help: &str, v: f64) {
        self.family(name, typ, help);
        self.sample(name, "", v);
    }
    fn hist(&mut self, name: &str, labels: &str, bounds: &[f64], h: &Hist) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0u64;
        for (i, c) in h.counts.iter().enumerate() {
            cum += c;
            let mut le = Vec::new();
            match bounds.get(i) {
                Some(&b) => push_go_float(&mut le, b),
                None => le.extend_from_slice(b"+Inf"),
            }
            let le = String::from_utf8(le).expect("ascii");
            self.sample(
                &format!("{name}_bucket"),
                &format!("{labels}{sep}le=\"{le}\""),
                cum as f64,
            );
        }
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, cum as f64);
    }
}

/// Render the istiod `/metrics` page (families sorted by name, as client_golang gathers them;
/// counters without `_total` as the OpenTelemetry exporter with `WithoutCounterSuffixes`).
pub fn render_istiod(
    m: &IstiodModel,
    info: &IstiodInfo,
    t: f64,
    epoch_unix: f64,
    out: &mut Vec<u8>,
) {
    out.reserve(40_000);
    let mut w = W { out };
    let j = Jitter(info.seed);
    let now = epoch_unix + t;
    let up = (t - m.start_t).max(0.0);
    let proxies: u64 = info.proxies_by_version.iter().map(|p| p.1).sum();
    let pushes: u64 = m.pushes.iter().sum();
    let chain_expiry = epoch_unix + m.start_t + 10.0 * 365.0 * 86400.0;
    let root_expiry = epoch_unix - 86400.0 * 30.0 + 10.0 * 365.0 * 86400.0;

    w.scalar("citadel_server_cert_chain_expiry_seconds", "gauge", "The time remaining, in seconds, before the Istio Generated cert chain will expire. A negative value indicates the cert is expired.", (chain_expiry - now).round());
    w.scalar(
        "citadel_server_cert_chain_expiry_timestamp",
        "gauge",
        "The unix timestamp, in seconds, when Istio generated cert chain will expire.",
        chain_expiry.round(),
    );
    w.scalar(
        "citadel_server_csr_count",
        "counter",
        "The number of CSRs received by Citadel server.",
        m.csr_count as f64,
    );
    if m.csr_sign_errors > 0 {
        w.scalar(
            "citadel_server_csr_sign_err_count",
            "counter",
            "The number of errors occurred when signing the CSR.",
            m.csr_sign_errors as f64,
        );
    }
    w.scalar("citadel_server_root_cert_expiry_seconds", "gauge", "The time remaining, in seconds, before the root cert will expire. A negative value indicates the cert is expired.", (root_expiry - now).round());
    w.scalar(
        "citadel_server_root_cert_expiry_timestamp",
        "gauge",
        "The unix timestamp, in seconds, when the root cert will expire.",
        root_expiry.round(),
    );
    w.scalar(
        "citadel_server_success_cert_issuance_count",
        "counter",
        "The number of certificates issuances that have succeeded.",
        (m.csr_count - m.csr_sign_errors) as f64,
    );
    w.scalar(
        "endpoint_no_pod",
        "gauge",
        "Endpoints without an associated pod.",
        0.0,
    );
    w.family(
        "go_gc_duration_seconds",
        "summary",
        "A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.",
    );
    for (q, v) in [
        ("0", 3.1e-05),
        ("0.25", 5.2311e-05),
        ("0.5", 8.0412e-05),
        ("0.75", 0.000131092),
        ("1", 0.002270838),
    ] {
        w.sample("go_gc_duration_seconds", &format!("quantile=\"{q}\""), v);
    }
    let gc = 20 + (up / 30.0) as u64;
    w.sample("go_gc_duration_seconds_sum", "", gc as f64 * 0.000104);
    w.sample("go_gc_duration_seconds_count", "", gc as f64);
    w.scalar(
        "go_goroutines",
        "gauge",
        "Number of goroutines that currently exist.",
        (420 + 9 * proxies + j.pick(1, 0, 30)) as f64,
    );
    w.family("go_info", "gauge", "Information about the Go environment.");
    w.sample(
        "go_info",
        &format!("version=\"{}\"", go_version(&info.version)),
        1.0,
    );
    let alloc = 38_000_000.0 + proxies as f64 * 350_000.0 + ((up * 7919.0) % 21_000_000.0).floor();
    w.scalar("go_memstats_alloc_bytes", "gauge", "Number of bytes allocated in heap and currently in use. Equals to /memory/classes/heap/objects:bytes.", alloc);
    w.scalar("go_memstats_alloc_bytes_total", "counter", "Total number of bytes allocated in heap until now, even if released already. Equals to /gc/heap/allocs:bytes.", (1.1e9 + up * 2.6e6 + pushes as f64 * 180_000.0).floor());
    w.scalar("go_memstats_heap_inuse_bytes", "gauge", "Number of heap bytes that are in use. Equals to /memory/classes/heap/objects:bytes + /memory/classes/heap/unused:bytes", (alloc / 8192.0).ceil() * 8192.0 + 4_194_304.0);
    w.scalar(
        "go_memstats_heap_objects",
        "gauge",
        "Number of currently allocated objects. Equals to /gc/heap/objects:objects.",
        (alloc / 104.0).floor(),
    );
    w.scalar(
        "go_memstats_sys_bytes",
        "gauge",
        "Number of bytes obtained from system. Equals to /memory/classes/total:byte.",
        1.23456512e8 + proxies as f64 * 1_048_576.0,
    );
    w.scalar(
        "go_threads",
        "gauge",
        "Number of OS threads created.",
        (17 + j.pick(2, 0, 4)) as f64,
    );
    w.family("istio_build", "gauge", "Istio component build info");
    w.sample(
        "istio_build",
        &format!(
            "component=\"pilot\",tag=\"{}\"",
            escape_label(&info.version)
        ),
        1.0,
    );
    w.family(
        "istiod_managed_clusters",
        "gauge",
        "Number of clusters managed by istiod",
    );
    w.sample("istiod_managed_clusters", "cluster_type=\"local\"", 1.0);
    w.sample("istiod_managed_clusters", "cluster_type=\"remote\"", 0.0);
    w.scalar(
        "istiod_uptime_seconds",
        "gauge",
        "Current istiod server uptime in seconds",
        (up * 1000.0).round() / 1000.0,
    );
    w.scalar(
        "pilot_conflict_inbound_listener",
        "gauge",
        "Number of conflicting inbound listeners.",
        0.0,
    );
    w.scalar(
        "pilot_conflict_outbound_listener_tcp_over_current_tcp",
        "gauge",
        "Number of conflicting tcp listeners with current tcp listener.",
        0.0,
    );
    w.family("pilot_debounce_time", "histogram", "Delay in seconds between the first config enters debouncing and the merged push request is pushed into the push queue (includes pushcontext_init_seconds).");
    w.hist("pilot_debounce_time", "", &DEBOUNCE_BOUNDS, &m.debounce);
    w.scalar(
        "pilot_destrule_subsets",
        "gauge",
        "Duplicate subsets across destination rules for same host",
        0.0,
    );
    w.scalar(
        "pilot_duplicate_envoy_clusters",
        "gauge",
        "Duplicate envoy clusters caused by service entries with same hostname",
        0.0,
    );
    w.scalar(
        "pilot_eds_no_instances",
        "gauge",
        "Number of clusters without instances.",
        0.0,
    );
    w.scalar(
        "pilot_endpoint_not_ready",
        "gauge",
        "Endpoint found in unready state.",
        0.0,
    );
    w.family(
        "pilot_inbound_updates",
        "counter",
        "Total number of updates received by pilot.",
    );
    for (ty, v) in ["config", "eds", "svc"].iter().zip(m.inbound_updates) {
        w.sample("pilot_inbound_updates", &format!("type=\"{ty}\""), v as f64);
    }
    w.family(
        "pilot_info",
        "gauge",
        "Pilot version and build information.",
    );
    w.sample(
        "pilot_info",
        &format!(
            "version=\"{}-{:016x}-Clean\"",
            escape_label(&info.version),
            super::traffic::mix64(info.seed)
        ),
        1.0,
    );
    w.family(
        "pilot_k8s_reg_events",
        "counter",
        "Events from k8s registry.",
    );
    for (ev, ty, v) in [
        ("add", "EndpointSlice", info.services + 3),
        ("add", "Namespaces", 6),
        ("add", "Pods", proxies + 9),
        ("add", "Services", info.services + 3),
        ("update", "EndpointSlice", m.inbound_updates[1]),
        ("update", "Pods", m.inbound_updates[1] / 2),
    ] {
        w.sample(
            "pilot_k8s_reg_events",
            &format!("event=\"{ev}\",type=\"{ty}\""),
            v as f64,
        );
    }
    w.scalar(
        "pilot_no_ip",
        "gauge",
        "Pods not found in the endpoint table, possibly invalid.",
        0.0,
    );
    w.family(
        "pilot_proxy_convergence_time",
        "histogram",
        "Delay in seconds between config change and a proxy receiving all required configuration.",
    );
    w.hist(
        "pilot_proxy_convergence_time",
        "",
        &CONVERGENCE_BOUNDS,
        &m.convergence,
    );
    w.family(
        "pilot_proxy_queue_time",
        "histogram",
        "Time in seconds, a proxy is in the push queue before being dequeued.",
    );
    w.hist(
        "pilot_proxy_queue_time",
        "",
        &CONVERGENCE_BOUNDS,
        &m.queue_time,
    );
    w.family(
        "pilot_push_triggers",
        "counter",
        "Total number of times a push was triggered, labeled by reason for the push.",
    );
    for (ty, v) in ["config", "endpoint", "proxy", "service"]
        .iter()
        .zip(m.push_triggers)
    {
        if v > 0 {
            w.sample("pilot_push_triggers", &format!("type=\"{ty}\""), v as f64);
        }
    }
    w.family(
        "pilot_pushcontext_init_seconds",
        "histogram",
        "Total time in seconds Pilot takes to init pushContext.",
    );
    w.hist(
        "pilot_pushcontext_init_seconds",
        "",
        &PUSHCONTEXT_INIT_BOUNDS,
        &m.pushcontext_init,
    );
    w.scalar(
        "pilot_services",
        "gauge",
        "Total services known to pilot.",
        info.services as f64,
    );
    if m.internal_errors > 0 {
        w.scalar(
            "pilot_total_xds_internal_errors",
            "counter",
            "Total number of internal XDS errors in pilot.",
            m.internal_errors as f64,
        );
    }
    if m.rejects.iter().any(|&r| r > 0) {
        w.family(
            "pilot_total_xds_rejects",
            "counter",
            "Total number of XDS responses from pilot rejected by proxy.",
        );
        for (ty, &v) in XDS_TYPES.iter().zip(&m.rejects) {
            if v > 0 {
                w.sample(
                    "pilot_total_xds_rejects",
                    &format!("type=\"{ty}\""),
                    v as f64,
                );
            }
        }
    }
    w.scalar(
        "pilot_virt_services",
        "gauge",
        "Total virtual services known to pilot.",
        j.pick(3, 1, 6) as f64,
    );
    w.scalar(
        "pilot_vservice_dup_domain",
        "gauge",
        "Virtual services with dup domains.",
        0.0,
    );
    if !info.proxies_by_version.is_empty() {
        w.family(
            "pilot_xds",
            "gauge",
            "Number of endpoints connected to this pilot using XDS.",
        );
        for (v, n) in &info.proxies_by_version {
            w.sample(
                "pilot_xds",
                &format!("version=\"{}\"", escape_label(v)),
                *n as f64,
            );
        }
    }
    w.family(
        "pilot_xds_config_size_bytes",
        "histogram",
        "Distribution of configuration sizes pushed to clients",
    );
    for (i, url) in XDS_TYPE_URLS.iter().enumerate() {
        w.hist(
            "pilot_xds_config_size_bytes",
            &format!("type=\"{url}\""),
            &CONFIG_SIZE_BOUNDS,
            &m.config_size[i],
        );
    }
    if m.expired_nonce.iter().any(|&r| r > 0) {
        w.family(
            "pilot_xds_expired_nonce",
            "counter",
            "Total number of XDS requests with an expired nonce.",
        );
        for (ty, &v) in XDS_TYPES.iter().zip(&m.expired_nonce) {
            if v > 0 {
                w.sample(
                    "pilot_xds_expired_nonce",
                    &format!("type=\"{ty}\""),
                    v as f64,
                );
            }
        }
    }
    w.family(
        "pilot_xds_push_time",
        "histogram",
        "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
    );
    for (i, ty) in XDS_TYPES.iter().enumerate() {
        w.hist(
            "pilot_xds_push_time",
            &format!("type=\"{ty}\""),
            &PUSH_TIME_BOUNDS,
            &m.push_time[i],
        );
    }
    w.family(
        "pilot_xds_pushes",
        "counter",
        "Pilot build and send errors for lds, rds, cds and eds.",
    );
    for (ty, &v) in XDS_TYPES.iter().zip(&m.pushes) {
        w.sample("pilot_xds_pushes", &format!("type=\"{ty}\""), v as f64);
    }
    w.family(
        "pilot_xds_send_time",
        "histogram",
        "Total time in seconds Pilot takes to send generated configuration.",
    );
    w.hist("pilot_xds_send_time", "", &SEND_TIME_BOUNDS, &m.send_time);
    if m.write_timeouts > 0 {
        w.scalar(
            "pilot_xds_write_timeout",
            "counter",
            "Pilot XDS response write timeouts.",
            m.write_timeouts as f64,
        );
    }
    w.scalar(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        ((1.7 + up * 0.021 + pushes as f64 * 0.0004) * 100.0).round() / 100.0,
    );
    w.scalar(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        1.048576e6,
    );
    w.scalar(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        (31 + proxies * 2) as f64,
    );
    w.scalar(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        9.1e7 + (proxies * 524_288) as f64 + (j.pick(4, 0, 4000) * 4096) as f64,
    );
    w.scalar(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        ((epoch_unix + m.start_t) * 100.0).round() / 100.0,
    );
    w.scalar(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        1.398370304e9,
    );
    w.scalar(
        "process_virtual_memory_max_bytes",
        "gauge",
        "Maximum amount of virtual memory available in bytes.",
        1.8446744073709552e19,
    );
    w.scalar(
        "sidecar_injection_requests_total",
        "counter",
        "Total number of sidecar injection requests.",
        proxies as f64,
    );
    w.scalar(
        "sidecar_injection_success_total",
        "counter",
        "Total number of successful sidecar injection requests.",
        proxies as f64,
    );
    w.scalar(
        "xds_cache_size",
        "gauge",
        "Current size of xds cache",
        (info.services * 6 + proxies) as f64,
    );
}

/// An Envoy metric of type `kind` without labels: a layout slot (the value changes per scrape)
/// or a constant.
fn unlabelled(b: &mut Builder, full: &str, kind: &str, slot: Option<usize>, v: u64) {
    b.envoy_type(full, kind);
    match slot {
        Some(s) => {
            b.text(&format!("{full}{{}} "));
            b.u64(s);
            b.text("\n");
        }
        None => b.text(&format!("{full}{{}} {v}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{default_mix, SidecarModel, TrafficParams};
    use std::collections::HashSet;

    fn info() -> SidecarIdentity {
        SidecarIdentity {
            cluster: "cluster-1".into(),
            proxy_version: "1.25.0".into(),
            me: Workload::app("cart", "shop"),
            inbound_peers: vec![
                Workload::ingress_gateway(),
                Workload::app("frontend", "shop"),
            ],
            outbound_peers: vec![Workload::app("checkout", "shop")],
        }
    }

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

    /// Render a pod after `secs` of traffic.
    fn page(tags: HistogramTags, secs: f64, error_rate: f64) -> String {
        let specs = default_mix(tags);
        let mut m = SidecarModel::new(specs.clone(), 3, -60.0);
        let mut p = params();
        p.error_rate = error_rate;
        m.advance(secs, &p);
        m.fill_scalars(secs, 1.7e9);
        let labels = PodLabels::new(&info(), &specs, tags);
        let t = sidecar_template(&info(), &labels, &specs, m.layout(), m.present());
        String::from_utf8(t.render(m.values())).unwrap()
    }

    /// Split a sample line into (name, label text or None, value text); panics if malformed.
    fn split_sample(line: &str) -> (&str, Option<&str>, &str) {
        let (series, value) = line.rsplit_once(' ').expect("space before value");
        match series.find('{') {
            Some(i) => {
                assert!(series.ends_with('}'), "{line}");
                (&series[..i], Some(&series[i + 1..series.len() - 1]), value)
            }
            None => (series, None, value),
        }
    }

    #[test]
    fn number_formatting_matches_envoy_and_go() {
        for v in [
            0u64,
            1,
            9,
            10,
            99,
            12345,
            u64::MAX,
            16_440_392_441_958_861_461,
        ] {
            let mut b = Vec::new();
            push_u64(&mut b, v);
            assert_eq!(String::from_utf8(b).unwrap(), v.to_string());
        }
        // Values copied from the real captures (Go's strconv 'g', -1).
        for (v, want) in [
            (7.647864e6, "7.647864e+06"),
            (169290.0, "169290"),
            (1.63674343458e9, "1.63674343458e+09"),
            (7.754e-05, "7.754e-05"),
            (0.000146232, "0.000146232"),
            (1.8446744073709552e19, "1.8446744073709552e+19"),
            (1.048576e6, "1.048576e+06"),
            (1e6, "1e+06"),
            (4e7, "4e+07"),
            (0.86, "0.86"),
            (61.0, "61"),
            (0.0, "0"),
            (1.897816015534054e-05, "1.897816015534054e-05"),
        ] {
            assert_eq!(go_str(v), want);
        }
        let mut b = Vec::new();
        push_f64(&mut b, 54.5);
        b.push(b' ');
        push_f64(&mut b, 1050.0);
        assert_eq!(b, b"54.5 1050");
    }

    #[test]
    fn request_lines_have_exactly_the_spec_labels_in_order() {
        let text = page(HistogramTags::DestinationOnly, 600.0, 0.01);
        let mut n = 0;
        let mut flags = HashSet::new();
        for line in text
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
        {
            // By hand: the label text is between the first '{' and the last '}'.
            let labels = &line[line.find('{').unwrap() + 1..line.rfind('}').unwrap()];
            let pairs = parse_labels(labels).expect("parsable");
            let names: Vec<&str> = pairs.iter().map(|p| p.0.as_str()).collect();
            assert_eq!(names, REQUEST_LABELS.to_vec(), "{line}");
            let get = |k: &str| pairs.iter().find(|p| p.0 == k).unwrap().1.as_str();
            assert_eq!(get("source_cluster"), "cluster-1");
            assert_eq!(get("destination_cluster"), "cluster-1");
            assert_eq!(get("grpc_response_status"), "");
            assert!(get("destination_service").ends_with(".svc.cluster.local"));
            assert!(get("source_principal").starts_with("spiffe://cluster.local/ns/"));
            if get("reporter") == "destination" {
                assert_eq!(get("connection_security_policy"), "mutual_tls");
                assert_eq!(get("destination_workload"), "cart-v1");
                assert_eq!(
                    get("destination_canonical_revision"),
                    get("destination_version")
                );
            } else {
                assert_eq!(get("reporter"), "source");
                assert_eq!(get("source_workload"), "cart-v1");
            }
            flags.insert(get("response_flags").to_string());
            n += 1;
        }
        assert_eq!(n, 14, "all series appear after 10 minutes at 1% errors");
        assert!(flags.contains("UF,URX") && flags.contains("-"));
        // Histograms: the Telemetry-trimmed set, then le.
        for line in text
            .lines()
            .filter(|l| l.starts_with("istio_request_duration_milliseconds_bucket{"))
        {
            let labels = &line[line.find('{').unwrap() + 1..line.rfind('}').unwrap()];
            let names: Vec<String> = parse_labels(labels)
                .unwrap()
                .into_iter()
                .map(|p| p.0)
                .collect();
            let mut want: Vec<String> = DESTINATION_ONLY_LABELS
                .iter()
                .map(|s| s.to_string())
                .collect();
            want.push("le".into());
            assert_eq!(names, want);
        }
    }

    #[test]
    fn full_histograms_carry_the_25_labels() {
        let text = page(HistogramTags::Full, 600.0, 0.01);
        let mut seen = 0;
        for line in text
            .lines()
            .filter(|l| l.starts_with("istio_response_bytes_bucket{"))
        {
            let labels = &line[line.find('{').unwrap() + 1..line.rfind('}').unwrap()];
            let names: Vec<String> = parse_labels(labels)
                .unwrap()
                .into_iter()
                .map(|p| p.0)
                .collect();
            assert_eq!(names.len(), 26);
            assert_eq!(&names[..25], &REQUEST_LABELS.map(String::from)[..]);
            seen += 1;
        }
        assert_eq!(seen, 14 * N_BUCKETS);
    }

    #[test]
    fn page_is_well_formed_without_duplicates() {
        for tags in [HistogramTags::DestinationOnly, HistogramTags::Full] {
            let text = page(tags, 300.0, 0.01);
            assert!(text.ends_with('\n'));
            let mut series = HashSet::new();
            let mut families = HashSet::new();
            let mut current_family = String::new();
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("# TYPE ") {
                    let (name, typ) = rest.split_once(' ').unwrap();
                    assert!(
                        ["counter", "gauge", "histogram", "summary"].contains(&typ),
                        "{line}"
                    );
                    assert!(families.insert(name.to_string()), "family {name} twice");
                    current_family = name.to_string();
                    continue;
                }
                if line.starts_with("# HELP ") {
                    continue;
                }
                assert!(
                    !line.starts_with('#') && !line.is_empty(),
                    "stray line {line:?}"
                );
                let (name, labels, value) = split_sample(line);
                assert!(
                    name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'),
                    "{line}"
                );
                // Every sample belongs to the family declared just above it.
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| *b == current_family))
                    .unwrap_or(name);
                assert_eq!(base, current_family, "{line}");
                if let Some(l) = labels {
                    assert!(parse_labels(l).is_some() || l.is_empty(), "{line}");
                }
                assert!(value == "+Inf" || value.parse::<f64>().is_ok(), "{line}");
                assert!(
                    series.insert(format!("{name}{{{}}}", labels.unwrap_or(""))),
                    "duplicate {line}"
                );
            }
            assert!(text.contains("istio_build{component=\"proxy\",tag=\"1.25.0\"} 1\n"));
            assert!(
                text.contains("envoy_server_uptime{} 360\n"),
                "started 60 s before t=0"
            );
            assert!(text.contains("# HELP istio_agent_go_goroutines "));
            assert!(!text.contains("# HELP envoy_"), "Envoy prints no HELP");
        }
    }

    #[test]
    fn buckets_are_cumulative_and_inf_equals_count_on_the_page() {
        let text = page(HistogramTags::DestinationOnly, 300.0, 0.01);
        let mut last: Option<(String, u64)> = None;
        let mut checked = 0;
        let histograms: HashSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" histogram"))
            .collect();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, labels, value) = split_sample(line);
            let labels = labels.unwrap_or("");
            if let Some(fam) = name.strip_suffix("_bucket") {
                let key = format!("{fam}{{{}", &labels[..labels.rfind(",le=").unwrap_or(0)]);
                let v: u64 = value.parse().unwrap();
                if let Some((k, prev)) = &last {
                    if *k == key {
                        assert!(v >= *prev, "{line}");
                    }
                }
                last = Some((key, v));
            } else if let Some(fam) = name
                .strip_suffix("_count")
                .filter(|f| histograms.contains(f))
            {
                let (k, inf) = last.clone().expect("buckets before count");
                assert_eq!(k, format!("{fam}{{{labels}"));
                assert_eq!(value.parse::<u64>().unwrap(), inf, "{line}");
                checked += 1;
            }
        }
        assert!(checked >= 6 + 3, "istio + envoy histograms: {checked}");
    }

    #[test]
    fn default_page_is_50_to_150_kb() {
        // Young pod (1 minute) and a pod with every series present (10 minutes at 1% errors).
        for (secs, err) in [(0.0, 0.001), (60.0, 0.001), (600.0, 0.01), (86400.0, 0.01)] {
            let n = page(HistogramTags::DestinationOnly, secs, err).len();
            assert!((50_000..=150_000).contains(&n), "{secs}s: {n} bytes");
        }
        let full = page(HistogramTags::Full, 600.0, 0.01).len();
        assert!(full > 500_000, "Full is the big realistic variant: {full}");
    }

    #[test]
    fn template_rerenders_with_new_numbers_only() {
        let specs = default_mix(HistogramTags::DestinationOnly);
        let mut m = SidecarModel::new(specs.clone(), 3, 0.0);
        m.advance(60.0, &params());
        m.fill_scalars(60.0, 1.7e9);
        let labels = PodLabels::new(&info(), &specs, HistogramTags::DestinationOnly);
        let t = sidecar_template(&info(), &labels, &specs, m.layout(), m.present());
        let a = t.render(m.values());
        let mut vals = m.values().to_vec();
        vals[m.layout().req(0)] = 123_456_789;
        let b = String::from_utf8(t.render(&vals)).unwrap();
        assert_ne!(a, b.as_bytes());
        assert!(b.contains("} 123456789\n"));
    }

    #[test]
    fn label_values_are_escaped_and_parsed_back() {
        let s = format!("a=\"{}\",b=\"UF,URX\",c=\"\"", escape_label("x\"y\\z\nw"));
        let p = parse_labels(&s).unwrap();
        assert_eq!(p[0].1, "x\"y\\z\nw");
        assert_eq!(p[1].1, "UF,URX");
        assert_eq!(p[2].1, "");
        assert!(parse_labels("a=b").is_none());
        assert!(parse_labels("a=\"b\"x").is_none());
    }

    #[test]
    #[ignore = "benchmark: cargo test --release -- --ignored --nocapture bench_render"]
    fn bench_render() {
        for tags in [HistogramTags::DestinationOnly, HistogramTags::Full] {
            let specs = default_mix(tags);
            let mut m = SidecarModel::new(specs.clone(), 3, -60.0);
            let p = params();
            m.advance(600.0, &p);
            let labels = PodLabels::new(&info(), &specs, tags);
            let t0 = std::time::Instant::now();
            let tpl = sidecar_template(&info(), &labels, &specs, m.layout(), m.present());
            let build = t0.elapsed();
            let iters = 2000u32;
            let mut bytes = 0;
            let mut buf = Vec::new();
            let t0 = std::time::Instant::now();
            for i in 0..iters {
                m.fill_scalars(600.0 + i as f64, 1.7e9);
                buf.clear();
                tpl.render_into(m.values(), &mut buf);
                bytes = buf.len();
            }
            let render = t0.elapsed() / iters;
            // The other parts of a scrape: advance 15 s of traffic, snapshot copy, gzip (level 1).
            let t0 = std::time::Instant::now();
            for i in 0..200u32 {
                m.advance(600.0 + 15.0 * (i + 1) as f64, &p);
            }
            let advance = t0.elapsed() / 200;
            let body = tpl.render(m.values());
            let t0 = std::time::Instant::now();
            let mut gz_len = 0;
            for _ in 0..200u32 {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                std::io::Write::write_all(&mut enc, &body).unwrap();
                gz_len = enc.finish().unwrap().len();
            }
            let gzip = t0.elapsed() / 200;
            println!(
                "{tags:?}: page {bytes} B (gzip {gz_len} B), template build {build:?}, render {} ns/page, \
                 advance(15 s at 100 rps) {} ns, gzip {} ns",
                render.as_nanos(),
                advance.as_nanos(),
                gzip.as_nanos()
            );
        }
    }
}
