//! The report page: server-rendered HTML with inline SVG (no script, no CDN), for people.
//!
//! `GET /report` lists the analyses and the upgrade plan's waves board; `GET /report/analyses/{id}`
//! shows one analysis' verdict and its history as curves (e-values against 1/alpha on a log
//! scale, the ratio bounds against 1 + margin, events and exposure per cohort, data quality)
//! and its strata, worst first. Under `[auth]` a browser logs in with a read token (a cookie,
//! see `auth.rs`). `GET /v1/analyses/{id}/history` serves the history as JSON.
//!
//! # Layout
//!
//! This file: routes, pages, escaping; [`svg`] the charts.

mod svg;

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::html::{esc, page};
use crate::judge::Verdict;
use crate::plan::{NamespaceState, PlanStatus};
use crate::state::{AnalysisView, Shared};
use meshgate_core::api::VerdictDoc;
use meshgate_core::history::History;
use svg::{fmt_num, fmt_time, Chart, Scale, Style, PALETTE};

/// The report's routes, merged into the API router.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/report", get(index))
        .route("/report/analyses/{id}", get(analysis))
        // Without `[auth]` there is nothing to log in to (with it, the auth layer answers).
        .route("/report/login", post(|| async { Redirect::to("/report") }))
        // SVG coordinates compress about sixfold: the page is read over small links too.
        .layer(tower_http::compression::CompressionLayer::new())
}

/// The URL path segment `s`, percent-encoded (analysis ids are `[A-Za-z0-9._-]`, but a link
/// must not trust that).
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(body),
    )
        .into_response()
}

fn badge(v: Verdict) -> String {
    format!(
        r#"<span class="v v-{0}" data-verdict="{0}">{0}</span>"#,
        v.as_str()
    )
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

// === the list ===

async fn index(State(s): State<Shared>) -> Response {
    let snap = s.snapshot.borrow().clone();
    let mut b = String::from("<h1>meshgate report</h1>");
    if let Some(plan) = &snap.plan {
        b.push_str(&board(plan));
    }
    let now = unix_now();
    let _ = write!(
        b,
        "<h2>Analyses</h2><table id=\"analyses\"><tr><th>analysis</th><th>verdict</th><th>age</th><th>baseline → canary</th><th>reason</th></tr>"
    );
    let mut views: Vec<_> = snap.analyses.values().collect();
    views.sort_by(|a, b| b.created_at.total_cmp(&a.created_at));
    for v in &views {
        let _ = write!(
            b,
            "<tr data-analysis=\"{id}\"><td><a href=\"/report/analyses/{seg}\">{id}</a></td><td>{}</td><td>{}</td><td><code>{}</code> → <code>{}</code></td><td>{}</td></tr>",
            badge(v.verdict()),
            fmt_time((now - v.created_at).max(0.0)),
            esc(&v.spec.baseline),
            esc(&v.spec.canary),
            esc(v.state().reason()),
            id = esc(&v.id),
            seg = path_segment(&v.id),
        );
    }
    b.push_str("</table>");
    if views.is_empty() {
        b.push_str("<p class=\"muted\">No analysis yet (POST /v1/analyses starts one).</p>");
    }
    html(StatusCode::OK, page("report", &b))
}

/// The plan's waves board: phase, verdict, soak, rollback.
fn board(plan: &PlanStatus) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        "<h2>Plan {} <span class=\"muted\">{} → {}</span></h2><p id=\"advice\" data-next-wave-may-start=\"{}\">{}</p><table id=\"waves\"><tr><th>wave</th><th>phase</th><th>verdict</th><th>soak left</th><th>namespaces</th><th>rollback</th></tr>",
        esc(&plan.name),
        esc(&plan.from_revision),
        esc(&plan.to_revision),
        plan.next_wave_may_start,
        esc(&plan.advice)
    );
    for w in &plan.waves {
        let namespaces: Vec<String> = w
            .namespaces
            .iter()
            .map(|(ns, (state, n))| {
                let state = match state {
                    NamespaceState::NotStarted => "not started",
                    NamespaceState::Moving => "moving",
                    NamespaceState::Moved => "moved",
                    NamespaceState::Empty => "no proxy",
                };
                format!(
                    "{} <span class=\"muted\">{state}, {}/{} proxies moved</span>",
                    esc(ns),
                    n[1],
                    n[0] + n[1] + n[2]
                )
            })
            .collect();
        let rollback: Vec<String> = w
            .rollback
            .iter()
            .map(|c| format!("<code>{}</code>", esc(c)))
            .collect();
        let _ = write!(
            b,
            "<tr data-wave=\"{}\" data-phase=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"rollback\">{}</td></tr>",
            esc(&w.name),
            w.phase.as_str(),
            esc(&w.name),
            w.phase.as_str(),
            match w.verdict {
                Some(v) => format!(
                    "{} <span class=\"muted\">{}</span>",
                    badge(v),
                    esc(w.reason.as_deref().unwrap_or(""))
                ),
                None => "<span class=\"muted\">no analysis yet</span>".into(),
            },
            w.soak_left_seconds.map(fmt_time).unwrap_or_default(),
            namespaces.join("<br>"),
            rollback.join("<br>")
        );
    }
    b.push_str("</table>");
    b
}

// === one analysis ===

async fn analysis(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    match s.get(&id) {
        Some(v) => html(StatusCode::OK, analysis_page(&v)),
        None => html(
            StatusCode::NOT_FOUND,
            page(
                "not found",
                &format!(
                    "<h1>No analysis {}</h1><p><a href=\"/report\">All analyses</a></p>",
                    esc(&id)
                ),
            ),
        ),
    }
}

fn analysis_page(v: &AnalysisView) -> String {
    let doc = v.state().verdict_doc(&v.id);
    let h = &v.history;
    let mut b = String::new();
    let _ = write!(
        b,
        "<p><a href=\"/report\">← all analyses</a></p><h1>{}</h1><p id=\"verdict\">{} <span id=\"reason\">{}</span></p>",
        esc(&doc.id),
        badge(doc.verdict),
        esc(&doc.reason)
    );
    let _ = write!(
        b,
        "<table id=\"facts\"><tr><th>baseline → canary</th><td><code>{}</code> → <code>{}</code></td></tr><tr><th>design</th><td>{}</td></tr><tr><th>elapsed</th><td>{}{}</td></tr><tr><th>combined e-value</th><td>{} (NO-GO at {} = 1/alpha, alpha {})</td></tr><tr><th>history</th><td>{} points, one every {} tick(s)</td></tr></table>",
        esc(&v.spec.baseline),
        esc(&v.spec.canary),
        esc(&doc.design),
        fmt_time(doc.elapsed_seconds),
        doc.decided_after_seconds
            .map(|d| format!(", decided after {}", fmt_time(d)))
            .unwrap_or_default(),
        fmt_e(doc.e_value),
        fmt_num(doc.threshold),
        doc.alpha,
        h.points.len(),
        h.stride
    );
    if h.points.is_empty() {
        b.push_str("<p class=\"muted\">No tick recorded yet.</p>");
    } else {
        b.push_str(&charts(h, &doc));
    }
    b.push_str(&strata(&doc));
    page(&doc.id, &b)
}

fn fmt_e(e: f64) -> String {
    if e >= 1e5 || (e > 0.0 && e < 1e-3) {
        format!("{e:.2e}")
    } else {
        format!("{e:.3}")
    }
}

fn style(i: usize, dashed: bool) -> Style {
    Style {
        colour: PALETTE[i % PALETTE.len()],
        dashed,
    }
}

fn charts(h: &History, doc: &VerdictDoc) -> String {
    let pts = &h.points;
    let t_max = pts.last().map_or(1.0, |p| p.t);
    let mut out = String::from("<h2>Evidence over time</h2>");
    // (a) e-values, log scale, against 1/alpha.
    let threshold = if h.threshold > 0.0 {
        h.threshold
    } else {
        doc.threshold
    };
    let finite = |e: f64| e.clamp(1e-12, 1e300);
    let all_e = pts
        .iter()
        .flat_map(|p| std::iter::once(p.e).chain(p.checks.iter().map(|c| c.e as f64)))
        .map(finite);
    let (lo, hi) = all_e.fold((0.1f64, threshold * 5.0), |(l, h), e| (l.min(e), h.max(e)));
    let mut c = Chart::new(
        "e-values",
        "e-values (log scale; NO-GO when the combined one reaches 1/alpha)",
        t_max,
        Scale::Log,
        lo,
        hi,
    );
    c.hline(
        "threshold",
        threshold,
        &format!("1/alpha = {}", fmt_num(threshold)),
    );
    for (i, check) in h.checks.iter().enumerate() {
        let series: Vec<(f64, f64)> = pts
            .iter()
            .filter_map(|p| p.checks.get(i).map(|c| (p.t, finite(c.e as f64))))
            .collect();
        c.series(
            &format!("check:{}", check.name),
            &check.name,
            style(i + 1, true),
            &series,
        );
    }
    let combined: Vec<(f64, f64)> = pts.iter().map(|p| (p.t, finite(p.e))).collect();
    c.series("combined", "combined", style(0, false), &combined);
    out.push_str(&c.render());

    // (d) data quality: fresh and stale targets per cohort; shaded where it blocks a GO.
    let most = pts
        .iter()
        .flat_map(|p| p.fresh.iter().chain(&p.stale))
        .copied()
        .max()
        .unwrap_or(1)
        .max(1);
    let mut q = Chart::new(
        "quality",
        "data quality: targets per cohort (shaded: blocks a GO)",
        t_max,
        Scale::Linear,
        0.0,
        most as f64 + 1.0,
    );
    let mut bands = Vec::new();
    for (i, p) in pts.iter().enumerate() {
        if let Some(why) = &p.quality {
            let end = pts.get(i + 1).map_or(p.t, |n| n.t);
            bands.push((p.t, end, why.clone()));
        }
    }
    q.bands("quality-block", &bands);
    for (side, name) in [(0, "baseline"), (1, "canary")] {
        let fresh: Vec<(f64, f64)> = pts.iter().map(|p| (p.t, p.fresh[side] as f64)).collect();
        let stale: Vec<(f64, f64)> = pts.iter().map(|p| (p.t, p.stale[side] as f64)).collect();
        q.series(
            &format!("fresh:{name}"),
            &format!("{name} fresh"),
            style(side, false),
            &fresh,
        );
        q.series(
            &format!("stale:{name}"),
            &format!("{name} stale"),
            style(side, true),
            &stale,
        );
    }
    // (c) exposure per cohort (the first check's requests).
    let mut x = None;
    if let Some(first) = h.checks.first() {
        let top = pts
            .iter()
            .filter_map(|p| p.checks.first())
            .flat_map(|c| c.exposure)
            .fold(1.0f32, f32::max);
        let mut e = Chart::new(
            "exposure",
            &format!("exposure (requests) per cohort, {}", first.name),
            t_max,
            Scale::Linear,
            0.0,
            top as f64 * 1.05,
        );
        for (side, name) in [(0, "baseline"), (1, "canary")] {
            let s: Vec<(f64, f64)> = pts
                .iter()
                .filter_map(|p| p.checks.first().map(|c| (p.t, c.exposure[side] as f64)))
                .collect();
            e.series(&format!("exposure:{name}"), name, style(side, false), &s);
        }
        x = Some(e.render());
    }
    out.push_str(&x.unwrap_or_default());
    out.push_str(&q.render());

    // (b) and (c) per check: the ratio's bounds against 1 + margin; events per cohort.
    out.push_str("<h2>Per check</h2>");
    for (i, check) in h.checks.iter().enumerate() {
        let kind = doc
            .checks
            .iter()
            .find(|c| c.name == check.name)
            .map(|c| c.kind.as_str())
            .unwrap_or("");
        let _ = write!(
            out,
            "<h3 data-check=\"{}\">{} <span class=\"muted\">{}</span></h3>",
            esc(&check.name),
            esc(&check.name),
            esc(kind)
        );
        let line = 1.0 + check.margin;
        let cps: Vec<(f64, &meshgate_core::history::CheckPoint)> = pts
            .iter()
            .filter_map(|p| p.checks.get(i).map(|c| (p.t, c)))
            .collect();
        // Unbounded or huge upper bounds are drawn at the top: the interesting part is near 1.
        let top = cps
            .iter()
            .flat_map(|(_, c)| [c.hi, c.est])
            .flatten()
            .map(f64::from)
            .filter(|x| x.is_finite())
            .fold(line * 1.5, f64::max)
            .min(line * 4.0);
        let mut r = Chart::new(
            &format!("ratio-{}", check.name),
            &format!(
                "{}: ratio canary/baseline, anytime-valid bounds",
                check.name
            ),
            t_max,
            Scale::Linear,
            0.0,
            top,
        );
        r.hline("margin", line, &format!("1 + margin = {}", fmt_num(line)));
        let lo: Vec<(f64, f64)> = cps.iter().map(|(t, c)| (*t, c.lo as f64)).collect();
        let hi: Vec<(f64, f64)> = cps
            .iter()
            .map(|(t, c)| (*t, c.hi.map_or(f64::INFINITY, f64::from)))
            .collect();
        let est: Vec<(f64, f64)> = cps
            .iter()
            .filter_map(|(t, c)| c.est.map(|e| (*t, e as f64)))
            .collect();
        r.series("upper", "upper bound", style(1, false), &hi);
        r.series("estimate", "estimate", style(6, true), &est);
        r.series("lower", "lower bound", style(0, false), &lo);
        out.push_str(&r.render());
        let top_events = cps
            .iter()
            .flat_map(|(_, c)| c.events)
            .fold(1.0f32, f32::max);
        let mut ev = Chart::new(
            &format!("events-{}", check.name),
            &format!("{}: events per cohort", check.name),
            t_max,
            Scale::Linear,
            0.0,
            top_events as f64 * 1.05,
        );
        for (side, name) in [(0, "baseline"), (1, "canary")] {
            let s: Vec<(f64, f64)> = cps
                .iter()
                .map(|(t, c)| (*t, c.events[side] as f64))
                .collect();
            ev.series(&format!("events:{name}"), name, style(side, false), &s);
        }
        out.push_str(&ev.render());
    }
    out
}

/// (e) The strata of each stratified check, worst first (as the evidence lists them).
fn strata(doc: &VerdictDoc) -> String {
    let mut out = String::new();
    for c in doc.checks.iter().filter(|c| !c.strata.is_empty()) {
        let _ = write!(
            out,
            "<h2>Strata of {}</h2><table class=\"strata\" data-check=\"{}\"><tr><th>stratum</th><th>status</th><th>ratio</th><th>bounds</th><th>baseline events/requests</th><th>canary events/requests</th><th>certified</th></tr>",
            esc(&c.name),
            esc(&c.name)
        );
        for s in &c.strata {
            let bound = |b: Option<f64>| b.map_or("∞".into(), |x| format!("{x:.3}"));
            let _ = write!(
                out,
                "<tr data-stratum=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>[{}, {}]</td><td>{}/{}</td><td>{}/{}</td><td>{}</td></tr>",
                esc(&s.name),
                esc(&s.name),
                s.status.as_str(),
                s.ratio.map(|r| format!("{r:.3}")).unwrap_or_default(),
                s.ratio_lower_bound.map_or("0".into(), |x| format!("{x:.3}")),
                bound(s.ratio_upper_bound),
                fmt_num(s.baseline.events),
                fmt_num(s.baseline.exposure),
                fmt_num(s.canary.events),
                fmt_num(s.canary.exposure),
                if s.certified { "yes" } else { "no" }
            );
        }
        out.push_str("</table>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_core::history::{CheckPoint, HistoryCheck, Point};

    /// The page of a one-hour analysis of every built-in check, at the default 15 s scrape
    /// interval (240 ticks, all kept), with values that vary as a run's do.
    fn hour_page() -> String {
        use crate::judge::{Analysis, Catalog, Design, Settings};
        let catalog = Catalog::builtin();
        let checks: Vec<&crate::judge::CheckSpec> = catalog.iter().collect();
        let settings = Settings {
            alpha: 0.05,
            min_duration: std::time::Duration::from_secs(600),
            max_duration: std::time::Duration::from_secs(7200),
            min_exposure: 100.0,
            slo_go: false,
            go_certificate: Default::default(),
            design: Design::default(),
            soak: std::time::Duration::ZERO,
        };
        let a = Analysis::new(settings, &checks);
        let x = |i: usize, j: usize| 1.0 + ((i * 31 + j * 7) % 97) as f32 / 97.0;
        let history = History {
            threshold: 20.0,
            checks: checks
                .iter()
                .map(|c| HistoryCheck {
                    name: c.name.clone(),
                    threshold: 20.0 * checks.len() as f64,
                    margin: 0.25,
                })
                .collect(),
            stride: 1,
            next_tick: 241,
            points: (1..=240)
                .map(|i| Point {
                    tick: i as u64,
                    t: 15.0 * i as f64,
                    verdict: Verdict::Pending,
                    e: x(i, 0) as f64,
                    checks: (0..checks.len())
                        .map(|j| CheckPoint {
                            e: x(i, j),
                            lo: x(i, j) * 0.5,
                            hi: Some(x(i, j) * 1.4),
                            est: Some(x(i, j)),
                            events: [i as f32 * 3.0, i as f32 * 3.3],
                            exposure: [i as f32 * 3e4, i as f32 * 3.1e4],
                        })
                        .collect(),
                    fresh: [4, 4],
                    stale: [0, (i % 50 == 0) as u32],
                    quality: None,
                })
                .map(std::sync::Arc::new)
                .collect(),
        };
        let v = AnalysisView::new(
            "hour".into(),
            crate::analysis::AnalysisConfig {
                name: "hour".into(),
                baseline: r#"{revision="1-24-2"}"#.into(),
                canary: r#"{revision="1-25-0"}"#.into(),
                ..Default::default()
            },
            1.7e9,
            a,
            catalog.iter().cloned().map(std::sync::Arc::new).collect(),
        )
        .with_history(std::sync::Arc::new(history));
        analysis_page(&v)
    }

    #[test]
    fn a_one_hour_page_stays_light() {
        use std::io::Write;
        let page = hour_page();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(page.as_bytes()).unwrap();
        let gzipped = gz.finish().unwrap().len();
        let checks = crate::judge::Catalog::builtin().iter().count();
        println!(
            "one-hour page, {checks} checks, 240 points: {} bytes, {gzipped} gzipped",
            page.len()
        );
        assert_eq!(
            page.matches(r#"data-series="combined" data-points="240""#)
                .count(),
            1
        );
        assert!(page.len() < 400_000, "{} bytes", page.len());
        assert!(gzipped < 100_000, "{gzipped} bytes gzipped");
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(path_segment("a b/<c>"), "a%20b%2F%3Cc%3E");
        assert!(!crate::html::login_page(Some("<x>"), "/report/\"x").contains("<x>"));
    }
}
