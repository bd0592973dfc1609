//! Server-rendered SVG line charts: axes with labelled ticks (linear or log10), polylines, and
//! horizontal reference lines, with stable hooks (`data-series`, `data-axis`, `class`) for tests.

use std::fmt::Write;

use crate::html::esc;

const W: f64 = 640.0;
const H: f64 = 210.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 30.0;

/// The y scale of a chart.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Scale {
    /// Linear from `min` to `max`.
    Linear,
    /// log10, from decade `min` to decade `max` (values are the exponents' powers).
    Log,
}

/// One chart being drawn.
pub(crate) struct Chart {
    id: String,
    title: String,
    t_max: f64,
    scale: Scale,
    /// y range (for `Log`, in log10 units).
    lo: f64,
    hi: f64,
    body: String,
    legend: Vec<(String, String, bool)>,
}

/// A series' look: its colour and whether it is dashed.
#[derive(Clone, Copy)]
pub(crate) struct Style {
    pub(crate) colour: &'static str,
    pub(crate) dashed: bool,
}

/// Colours for series in order (colour-blind safe, Okabe-Ito).
pub(crate) const PALETTE: [&str; 7] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000",
];

impl Chart {
    /// A chart over `[0, t_max]` seconds with y from `lo` to `hi` (for `Log`, values; they are
    /// widened to whole decades).
    pub(crate) fn new(id: &str, title: &str, t_max: f64, scale: Scale, lo: f64, hi: f64) -> Chart {
        let (lo, hi) = match scale {
            Scale::Log => {
                let l = lo.max(1e-300).log10().floor();
                let h = hi.max(1e-300).log10().ceil();
                (l, if h > l { h } else { l + 1.0 })
            }
            Scale::Linear => (lo, if hi > lo { hi } else { lo + 1.0 }),
        };
        Chart {
            id: id.to_owned(),
            title: title.to_owned(),
            t_max: if t_max > 0.0 { t_max } else { 1.0 },
            scale,
            lo,
            hi,
            body: String::new(),
            legend: Vec::new(),
        }
    }

    fn x(&self, t: f64) -> f64 {
        LEFT + (t / self.t_max).clamp(0.0, 1.0) * (W - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        let u = match self.scale {
            Scale::Log => v.max(1e-300).log10(),
            Scale::Linear => v,
        };
        let f = ((u - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0);
        H - BOTTOM - f * (H - TOP - BOTTOM)
    }

    /// A polyline of `(t, value)` points named `name` (one SVG point per given point; a value
    /// outside the range is drawn at its edge).
    pub(crate) fn series(&mut self, key: &str, name: &str, style: Style, points: &[(f64, f64)]) {
        let mut pts = String::with_capacity(points.len() * 12);
        for (t, v) in points {
            let _ = write!(pts, "{:.1},{:.1} ", self.x(*t), self.y(*v));
        }
        let _ = write!(
            self.body,
            r#"<polyline data-series="{}" data-points="{}" fill="none" stroke="{}" stroke-width="1.6"{} points="{}"><title>{}</title></polyline>"#,
            esc(key),
            points.len(),
            style.colour,
            if style.dashed {
                r#" stroke-dasharray="5 3""#
            } else {
                ""
            },
            pts.trim_end(),
            esc(name)
        );
        self.legend
            .push((name.to_owned(), style.colour.to_owned(), style.dashed));
    }

    /// A horizontal reference line at `value`, with class `class` and a label.
    pub(crate) fn hline(&mut self, class: &str, value: f64, label: &str) {
        let y = self.y(value);
        let _ = write!(
            self.body,
            r##"<line class="{class}" data-value="{value}" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#c00" stroke-width="1.2" stroke-dasharray="2 2"/><text class="{class}-label" x="{:.1}" y="{:.1}" text-anchor="end" font-size="11" fill="#c00">{}</text>"##,
            W - RIGHT,
            W - RIGHT - 2.0,
            y - 3.0,
            esc(label)
        );
    }

    /// Shaded intervals `[t0, t1)` (e.g. data quality blocking a GO), each with a tooltip.
    pub(crate) fn bands(&mut self, class: &str, bands: &[(f64, f64, String)]) {
        for (t0, t1, why) in bands {
            let (x0, x1) = (self.x(*t0), self.x(*t1));
            let _ = write!(
                self.body,
                r##"<rect class="{class}" x="{x0:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="#f4c7c3"><title>{}</title></rect>"##,
                (x1 - x0).max(1.5),
                H - TOP - BOTTOM,
                esc(why)
            );
        }
    }

    fn y_ticks(&self) -> Vec<(f64, String)> {
        match self.scale {
            Scale::Log => {
                let decades = (self.hi - self.lo).round() as i64;
                let step = (decades as f64 / 6.0).ceil().max(1.0) as i64;
                (0..=decades)
                    .step_by(step as usize)
                    .map(|k| {
                        let e = self.lo as i64 + k;
                        (10f64.powi(e as i32), decade_label(e))
                    })
                    .collect()
            }
            Scale::Linear => {
                let step = nice_step((self.hi - self.lo) / 5.0);
                let mut v = (self.lo / step).ceil() * step;
                let mut out = Vec::new();
                while v <= self.hi + step * 1e-9 {
                    out.push((v, fmt_num(v)));
                    v += step;
                }
                out
            }
        }
    }

    /// The chart as an `<svg>` with its axes, title and legend.
    pub(crate) fn render(&self) -> String {
        let mut s = String::with_capacity(self.body.len() + 2048);
        let _ = write!(
            s,
            r#"<figure><figcaption>{}</figcaption><svg id="{}" class="chart" data-scale="{}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}" font-family="sans-serif">"#,
            esc(&self.title),
            esc(&self.id),
            match self.scale {
                Scale::Log => "log",
                Scale::Linear => "linear",
            },
            esc(&self.title)
        );
        // y axis with its ticks.
        let _ = write!(
            s,
            r##"<g data-axis="y"><line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{:.1}" stroke="#444"/>"##,
            H - BOTTOM
        );
        for (v, label) in self.y_ticks() {
            let y = self.y(v);
            let _ = write!(
                s,
                r##"<line class="grid" x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text class="tick" data-tick="{v}" x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{label}</text>"##,
                LEFT,
                W - RIGHT,
                LEFT - 4.0,
                y + 4.0
            );
        }
        s.push_str("</g>");
        // x axis: time since start.
        let _ = write!(
            s,
            r##"<g data-axis="x"><line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#444"/>"##,
            W - RIGHT,
            H - BOTTOM,
            H - BOTTOM
        );
        let step = time_step(self.t_max);
        let mut t = 0.0;
        while t <= self.t_max + 1e-9 {
            let x = self.x(t);
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="#444"/><text class="tick" data-tick="{t}" x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"##,
                H - BOTTOM,
                H - BOTTOM + 4.0,
                H - BOTTOM + 16.0,
                fmt_time(t)
            );
            t += step;
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">since start</text></g>"#,
            W - RIGHT,
            H - 2.0
        );
        s.push_str(&self.body);
        s.push_str("</svg>");
        if !self.legend.is_empty() {
            s.push_str(r#"<div class="legend">"#);
            for (name, colour, dashed) in &self.legend {
                let _ = write!(
                    s,
                    r#"<span><svg width="22" height="10"><line x1="0" x2="22" y1="5" y2="5" stroke="{colour}" stroke-width="2"{}/></svg>{}</span>"#,
                    if *dashed {
                        r#" stroke-dasharray="5 3""#
                    } else {
                        ""
                    },
                    esc(name)
                );
            }
            s.push_str("</div>");
        }
        s.push_str("</figure>");
        s
    }
}

fn decade_label(e: i64) -> String {
    match e {
        -2..=3 => fmt_num(10f64.powi(e as i32)),
        _ => format!("1e{e}"),
    }
}

/// A round step (1, 2 or 5 times a power of ten) near `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    p * if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    }
}

/// A number for a tick label: no needless decimals, SI suffix past a thousand.
pub(crate) fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{}G", trim(v / 1e9))
    } else if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e4 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_owned()
    }
}

const TIME_STEPS: [f64; 14] = [
    5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0,
    86400.0,
];

fn time_step(t_max: f64) -> f64 {
    TIME_STEPS
        .iter()
        .copied()
        .find(|s| t_max / s <= 7.0)
        .unwrap_or(86400.0 * (t_max / 86400.0 / 7.0).ceil())
}

/// `90s`, `5m`, `1h30m`.
pub(crate) fn fmt_time(t: f64) -> String {
    let s = t.round() as u64;
    match s {
        0..=119 if s % 60 != 0 || s == 0 => format!("{s}s"),
        _ if s < 3600 => format!("{}m{}", s / 60, secs(s % 60)),
        _ => {
            let m = (s % 3600) / 60;
            if m == 0 {
                format!("{}h", s / 3600)
            } else {
                format!("{}h{m}m", s / 3600)
            }
        }
    }
}

fn secs(s: u64) -> String {
    if s == 0 {
        String::new()
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_are_decades_and_the_line_sits_between_them() {
        let mut c = Chart::new("e", "e-values", 600.0, Scale::Log, 0.5, 20.0);
        assert_eq!((c.lo, c.hi), (-1.0, 2.0));
        let ticks: Vec<String> = c.y_ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(ticks, ["0.1", "1", "10", "100"]);
        c.hline("threshold", 20.0, "1/alpha");
        let y20 = c.y(20.0);
        let (y10, y100) = (c.y(10.0), c.y(100.0));
        let want = y10 + 2f64.log10() * (y100 - y10);
        assert!((y20 - want).abs() < 1e-9);
        assert!(c.render().contains(r#"class="threshold" data-value="20""#));
    }

    #[test]
    fn labels_and_steps() {
        assert_eq!(fmt_time(0.0), "0s");
        assert_eq!(fmt_time(90.0), "90s");
        assert_eq!(fmt_time(300.0), "5m");
        assert_eq!(fmt_time(5400.0), "1h30m");
        assert_eq!(fmt_num(25_000.0), "25k");
        assert_eq!(fmt_num(0.25), "0.25");
        assert_eq!(nice_step(0.27), 0.5);
        assert_eq!(time_step(3600.0), 600.0);
    }

    #[test]
    fn names_are_escaped() {
        let mut c = Chart::new("x", "<b>", 10.0, Scale::Linear, 0.0, 1.0);
        c.series(
            "k\"",
            "<script>",
            Style {
                colour: PALETTE[0],
                dashed: false,
            },
            &[(0.0, 0.5)],
        );
        let s = c.render();
        assert!(!s.contains("<script>") && !s.contains("<b>"));
        assert!(s.contains("&lt;script&gt;"));
    }
}
