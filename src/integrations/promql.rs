//! `GET|POST /api/v1/query`: a Prometheus-style instant-query endpoint for Flagger MetricTemplates.
//!
//! As Prometheus, it takes `query` and `time` from the URL or, on POST, from an
//! `application/x-www-form-urlencoded` body. meshgate keeps no history: `time` (unix seconds or
//! RFC 3339) is answered when it is within [`NOW_TOLERANCE`] of now and is a `bad_data` error
//! otherwise. An unbounded ratio bound is the sample `"+Inf"`, as Prometheus writes infinities.
//!
//! It answers a small, documented language, not PromQL: a number or two numbers joined by `+`,
//! `-`, `*` or `/` (a scalar: Grafana's data-source test asks `1+1`), `vector(N)` (Flagger's
//! start-up probe) and `metric{label="value", label!="value"}` over meshgate's own verdict series:
//!
//! | series | labels | value |
//! |---|---|---|
//! | `meshgate_verdict` | analysis, verdict | 0 GO, 1 PENDING, 2 INCONCLUSIVE, 3 NO-GO |
//! | `meshgate_go`, `meshgate_no_go`, `meshgate_decided` | analysis | 1 or 0 |
//! | `meshgate_e_value` | analysis | combined e-value |
//! | `meshgate_check_e_value` | analysis, check | the check's e-value |
//! | `meshgate_check_rate` | analysis, check, cohort, boundary (histograms) | events / exposure |
//! | `meshgate_ratio_upper_bound` | analysis, check, boundary | anytime-valid upper bound on canary/baseline (`+Inf` while unbounded) |
//!
//! Anything else is a `bad_data` error (400) naming what is not understood.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::judge::Verdict;
use crate::state::{AnalysisView, Shared};

/// The series names served.
pub const SERIES: &[&str] = &[
    "meshgate_verdict",
    "meshgate_go",
    "meshgate_no_go",
    "meshgate_decided",
    "meshgate_e_value",
    "meshgate_check_e_value",
    "meshgate_check_rate",
    "meshgate_ratio_upper_bound",
];

/// Routes of the query endpoint.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/query", get(query_get).post(query_post))
        .route("/api/v1/status/buildinfo", get(buildinfo))
}

/// `GET /api/v1/status/buildinfo`, as Prometheus answers it: Grafana reads it when a Prometheus
/// data source is saved. The version is meshgate's own; the Go fields Prometheus fills are empty.
async fn buildinfo() -> Json<Value> {
    Json(json!({
        "status": "success",
        "data": {
            "version": env!("CARGO_PKG_VERSION"),
            "revision": "",
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "",
            "application": "meshgate",
        }
    }))
}

/// How far `time` may be from now: meshgate has only the current values, which stand for any
/// instant this close to now (a few scrape intervals at the default 15s).
pub const NOW_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Default, Deserialize)]
struct Params {
    query: Option<String>,
    time: Option<String>,
}

/// A Prometheus timestamp: unix seconds (float) or RFC 3339, as Prometheus' `parseTime`.
pub fn parse_time(s: &str) -> Result<f64, String> {
    if let Ok(t) = s.parse::<f64>() {
        if t.is_finite() {
            return Ok(t);
        }
    }
    // humantime reads `Z` (or no zone) only; another offset is shifted by hand.
    let t = humantime::parse_rfc3339_weak(s)
        .ok()
        .or_else(|| rfc3339_with_offset(s));
    if let Some(d) = t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()) {
        return Ok(d.as_secs_f64());
    }
    Err(format!("cannot parse {s:?} to a valid timestamp"))
}

/// `...T..+hh:mm` / `-hh:mm`: the UTC instant.
fn rfc3339_with_offset(s: &str) -> Option<std::time::SystemTime> {
    let tpos = s.find(['T', 't'])?;
    let sign_at = s[tpos..].rfind(['+', '-'])? + tpos;
    let (local, off) = s.split_at(sign_at);
    let (h, m) = off[1..].split_once(':')?;
    let secs = h.parse::<u64>().ok()? * 3600 + m.parse::<u64>().ok()? * 60;
    let t = humantime::parse_rfc3339_weak(local).ok()?;
    let d = std::time::Duration::from_secs(secs);
    if off.starts_with('+') {
        t.checked_sub(d)
    } else {
        t.checked_add(d)
    }
}

async fn query_get(State(s): State<Shared>, Query(p): Query<Params>) -> Response {
    query(&s, p)
}

/// POST as Prometheus takes it: form fields override the URL's.
async fn query_post(State(s): State<Shared>, Query(url): Query<Params>, req: Request) -> Response {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        if url.query.is_some() {
            return query(&s, url);
        }
        return error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "missing the query parameter \"query\" (POST takes it in an application/x-www-form-urlencoded body or the URL)".into(),
        );
    }
    let Form(body) = match Form::<Params>::from_request(req, &s).await {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_data", e.body_text()),
    };
    query(
        &s,
        Params {
            query: body.query.or(url.query),
            time: body.time.or(url.time),
        },
    )
}

/// A parsed query.
#[derive(Debug, PartialEq)]
pub enum Expr {
    /// A number, or two numbers and an operator: a scalar.
    Scalar(f64),
    /// `vector(N)`.
    Vector(f64),
    /// A series with matchers `(label, equal?, value)`.
    Select(String, Vec<(String, bool, String)>),
}

/// Parse the supported subset, or say what is wrong and where.
pub fn parse(q: &str) -> Result<Expr, String> {
    let q = q.trim();
    if let Some(v) = scalar(q) {
        return Ok(Expr::Scalar(v));
    }
    if let Some(rest) = q.strip_prefix("vector(") {
        let inner = rest
            .strip_suffix(')')
            .ok_or_else(|| format!("{q:?}: vector( without a closing )"))?;
        let n: f64 = inner
            .trim()
            .parse()
            .map_err(|_| format!("{q:?}: vector() takes a number, got {inner:?}"))?;
        return Ok(Expr::Vector(n));
    }
    let (name, rest) = match q.find('{') {
        Some(i) => (q[..i].trim(), &q[i..]),
        None => (q, ""),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!(
            "{q:?}: expected vector(N) or a series name with optional {{label=\"value\"}} matchers; supported series: {}",
            SERIES.join(", ")
        ));
    }
    let mut matchers = Vec::new();
    if !rest.is_empty() {
        let body = rest
            .strip_prefix('{')
            .and_then(|r| r.trim_end().strip_suffix('}'))
            .ok_or_else(|| format!("{q:?}: unbalanced braces"))?;
        let mut s = body.trim();
        while !s.is_empty() {
            let end = s
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .ok_or_else(|| format!("{q:?}: matcher {s:?} has no operator"))?;
            let label = s[..end].to_owned();
            let after = s[end..].trim_start();
            let (eq, after) = if let Some(a) = after.strip_prefix("!=") {
                (false, a)
            } else if after.starts_with("=~") || after.starts_with("!~") {
                return Err(format!(
                    "{q:?}: regex matchers are not supported here, only = and !="
                ));
            } else if let Some(a) = after.strip_prefix('=') {
                (true, a)
            } else {
                return Err(format!("{q:?}: label {label:?} needs = or !="));
            };
            let after = after.trim_start();
            let quoted = after
                .strip_prefix('"')
                .ok_or_else(|| format!("{q:?}: value of {label:?} must be double-quoted"))?;
            let close = quoted
                .find('"')
                .ok_or_else(|| format!("{q:?}: unterminated value of {label:?}"))?;
            matchers.push((label, eq, quoted[..close].to_owned()));
            s = quoted[close + 1..].trim_start();
            s = s.strip_prefix(',').unwrap_or(s).trim_start();
        }
    }
    Ok(Expr::Select(name.to_owned(), matchers))
}

/// `N` or `N op M` with numbers as Prometheus writes them (`1`, `-2.5`, `1e3`, `Inf`, `NaN`) and
/// `op` one of `+ - * /`; `None` for anything else.
fn scalar(q: &str) -> Option<f64> {
    let number = |s: &str| -> Option<f64> {
        let s = s.trim();
        let starts_like_a_number = s
            .trim_start_matches(['+', '-'])
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '.' || c == 'I' || c == 'N');
        starts_like_a_number
            .then(|| s.parse::<f64>().ok())
            .flatten()
    };
    if let Some(v) = number(q) {
        return Some(v);
    }
    // The operator is the first + - * / after a first character (which may be a sign), not
    // inside an exponent (`1e-3`).
    let bytes = q.as_bytes();
    for i in 1..bytes.len() {
        let c = bytes[i];
        if matches!(c, b'+' | b'-' | b'*' | b'/') && !matches!(bytes[i - 1], b'e' | b'E') {
            let (a, b) = (number(&q[..i])?, number(&q[i + 1..])?);
            return Some(match c {
                b'+' => a + b,
                b'-' => a - b,
                b'*' => a * b,
                _ => a / b,
            });
        }
    }
    None
}

fn sample(labels: BTreeMap<String, String>, v: f64) -> (BTreeMap<String, String>, f64) {
    (labels, v)
}

/// Every sample of `name` for one analysis.
fn series_of(name: &str, v: &AnalysisView) -> Vec<(BTreeMap<String, String>, f64)> {
    let base = |extra: &[(&str, String)]| {
        let mut m = BTreeMap::new();
        m.insert("__name__".to_owned(), name.to_owned());
        m.insert("analysis".to_owned(), v.id.clone());
        for (k, x) in extra {
            m.insert((*k).to_owned(), x.clone());
        }
        m
    };
    let verdict = v.verdict();
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let mut out = Vec::new();
    match name {
        "meshgate_verdict" => out.push(sample(
            base(&[("verdict", verdict.as_str().to_owned())]),
            super::verdict_code(verdict),
        )),
        "meshgate_go" => out.push(sample(base(&[]), flag(verdict == Verdict::Go))),
        "meshgate_no_go" => out.push(sample(base(&[]), flag(verdict == Verdict::NoGo))),
        "meshgate_decided" => out.push(sample(base(&[]), flag(verdict.is_final()))),
        "meshgate_e_value" => out.push(sample(base(&[]), v.ln_e().exp())),
        _ => {
            for c in v.state().evidence() {
                if name == "meshgate_check_e_value" {
                    out.push(sample(base(&[("check", c.name.clone())]), c.e_value));
                    continue;
                }
                for t in &c.tests {
                    let mut extra = vec![("check", c.name.clone())];
                    if let Some(b) = t.boundary {
                        extra.push(("boundary", b.to_string()));
                    }
                    match name {
                        "meshgate_check_rate" => {
                            for (cohort, counts) in
                                [("baseline", &t.baseline), ("canary", &t.canary)]
                            {
                                if let Some(r) = counts.rate {
                                    let mut e = extra.clone();
                                    e.push(("cohort", cohort.to_owned()));
                                    out.push(sample(base(&e), r));
                                }
                            }
                        }
                        "meshgate_ratio_upper_bound" => {
                            // `None` is unbounded: Prometheus' `+Inf`, not a missing series.
                            let u = t.ratio_upper_bound.unwrap_or(f64::INFINITY);
                            out.push(sample(base(&extra), u));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    out
}

fn error(status: StatusCode, kind: &str, msg: String) -> Response {
    (
        status,
        Json(json!({"status": "error", "errorType": kind, "error": msg})),
    )
        .into_response()
}

fn query(s: &Shared, p: Params) -> Response {
    let Some(q) = p.query else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "missing the query parameter \"query\"".into(),
        );
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let now = match p.time.as_deref().filter(|t| !t.is_empty()) {
        None => now,
        Some(t) => match parse_time(t) {
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_data",
                    format!("invalid parameter \"time\": {e}"),
                )
            }
            Ok(at) if (at - now).abs() > NOW_TOLERANCE.as_secs_f64() => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_data",
                    format!(
                        "invalid parameter \"time\": {t:?} is more than {}s from now; meshgate keeps no history and answers only for now",
                        NOW_TOLERANCE.as_secs()
                    ),
                )
            }
            Ok(at) => at,
        },
    };
    let fmt = |v: f64| {
        if v.is_nan() {
            "NaN".to_owned()
        } else if v == f64::INFINITY {
            "+Inf".to_owned()
        } else if v == f64::NEG_INFINITY {
            "-Inf".to_owned()
        } else {
            v.to_string()
        }
    };
    let result: Vec<Value> = match parse(&q) {
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_data", e),
        Ok(Expr::Scalar(v)) => return Json(
            json!({"status": "success", "data": {"resultType": "scalar", "result": [now, fmt(v)]}}),
        )
        .into_response(),
        Ok(Expr::Vector(n)) => vec![json!({"metric": {}, "value": [now, fmt(n)]})],
        Ok(Expr::Select(name, matchers)) => {
            if !SERIES.contains(&name.as_str()) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_data",
                    format!(
                        "unknown series {name:?}; supported: {}, vector(N)",
                        SERIES.join(", ")
                    ),
                );
            }
            let snap = s.snapshot.borrow().clone();
            snap.analyses
                .values()
                .flat_map(|v| series_of(&name, v))
                .filter(|(labels, _)| {
                    matchers.iter().all(|(k, eq, want)| {
                        let have = labels.get(k).map(String::as_str).unwrap_or("");
                        (have == want) == *eq
                    })
                })
                .map(|(labels, v)| json!({"metric": labels, "value": [now, fmt(v)]}))
                .collect()
        }
    };
    Json(json!({"status": "success", "data": {"resultType": "vector", "result": result}}))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_subset_and_names_what_is_wrong() {
        assert_eq!(parse(" vector(1) ").unwrap(), Expr::Vector(1.0));
        assert_eq!(parse("1+1").unwrap(), Expr::Scalar(2.0));
        assert_eq!(parse(" 3 * -2 ").unwrap(), Expr::Scalar(-6.0));
        assert_eq!(parse("1e-3-1e-3").unwrap(), Expr::Scalar(0.0));
        assert_eq!(parse("-1.5").unwrap(), Expr::Scalar(-1.5));
        assert_eq!(parse("1/0").unwrap(), Expr::Scalar(f64::INFINITY));
        assert!(parse("1+").is_err() && parse("1+x").is_err());
        assert_eq!(
            parse(r#"meshgate_verdict{analysis="a.b", verdict!="GO"}"#).unwrap(),
            Expr::Select(
                "meshgate_verdict".into(),
                vec![
                    ("analysis".into(), true, "a.b".into()),
                    ("verdict".into(), false, "GO".into())
                ]
            )
        );
        assert_eq!(
            parse("meshgate_go").unwrap(),
            Expr::Select("meshgate_go".into(), vec![])
        );
        assert!(parse(r#"meshgate_go{analysis=~"x"}"#)
            .unwrap_err()
            .contains("regex"));
        assert!(parse("vector(x)").unwrap_err().contains("number"));
        assert!(parse("sum(rate(x[1m]))").unwrap_err().contains("expected"));
        assert!(parse(r#"meshgate_go{analysis="x""#)
            .unwrap_err()
            .contains("braces"));
    }

    #[test]
    fn time_is_read_as_prometheus_reads_it() {
        assert_eq!(parse_time("1700000000").unwrap(), 1_700_000_000.0);
        assert_eq!(parse_time("1700000000.5").unwrap(), 1_700_000_000.5);
        assert_eq!(parse_time("2023-11-14T22:13:20Z").unwrap(), 1_700_000_000.0);
        assert_eq!(
            parse_time("2023-11-14T22:13:20.25Z").unwrap(),
            1_700_000_000.25
        );
        assert_eq!(
            parse_time("2023-11-15T00:13:20+02:00").unwrap(),
            1_700_000_000.0
        );
        assert_eq!(
            parse_time("2023-11-14T21:13:20-01:00").unwrap(),
            1_700_000_000.0
        );
        assert!(parse_time("notatime").unwrap_err().contains("notatime"));
        assert!(parse_time("NaN").is_err());
    }
}
