//! Rollback triggers: conditions decided before the upgrade, evaluated on every tick over the
//! cumulative counts of one of the analysis' checks; the first that fires turns the verdict NO-GO
//! at once, with the trigger named. They are deliberate thresholds, not tests: the e-processes
//! decide under uncertainty, triggers encode what the operator said must never happen.

use serde::{Deserialize, Serialize};

use crate::judge::{CheckKind, CheckSpec};

/// What a trigger watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerWhen {
    /// The canary's events of the check exceed `above` (default 0: any event), e.g. any mTLS
    /// handshake error on the canary.
    CanaryEvents,
    /// The canary's event rate exceeds `factor` x the baseline's (after `min_events` canary events).
    RateRatio,
    /// A histogram check's `quantile` on the canary is provably above `factor` x the baseline's,
    /// from bucket bounds alone: the canary's quantile is above bound b (more than 1 - q of its
    /// observations exceed b) and the baseline's is at most b' (at most 1 - q exceed b'), with
    /// b >= factor x b'. Nothing is interpolated inside a bucket.
    QuantileRatio,
}

/// One rollback trigger (`rollback = [...]` in an analysis).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// Name shown in the verdict, e.g. `p99-latency-1.5x`.
    pub name: String,
    /// The check whose counts it reads (one of the analysis' checks).
    pub check: String,
    /// The condition.
    pub when: TriggerWhen,
    /// `canary_events`: fire above this many events (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// `rate_ratio` / `quantile_ratio`: the factor over the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// `quantile_ratio`: the quantile, e.g. 0.99.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
    /// Least canary events (`rate_ratio`, default 10) or observations per cohort
    /// (`quantile_ratio`, default 10 / (1 - q)) before the trigger may fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_events: Option<f64>,
}

impl TriggerConfig {
    /// Problems with this trigger given the analysis' checks, each with its key path.
    pub fn problems(&self, prefix: &str, check: Option<&CheckSpec>) -> Vec<String> {
        let mut out = Vec::new();
        if self.name.trim().is_empty() {
            out.push(format!("{prefix}.name: must not be empty"));
        }
        let Some(c) = check else {
            out.push(format!(
                "{prefix}.check: {:?} is not one of the analysis' checks",
                self.check
            ));
            return out;
        };
        match self.when {
            TriggerWhen::CanaryEvents => {
                if self.above.is_some_and(|a| !(a >= 0.0 && a.is_finite())) {
                    out.push(format!("{prefix}.above: must be a finite number >= 0"));
                }
            }
            TriggerWhen::RateRatio | TriggerWhen::QuantileRatio => {
                if !self.factor.is_some_and(|f| f.is_finite() && f > 0.0) {
                    out.push(format!("{prefix}.factor: required, a number > 0"));
                }
            }
        }
        if self.when == TriggerWhen::QuantileRatio {
            if !c.is_histogram() {
                out.push(format!(
                    "{prefix}.check: quantile_ratio needs a histogram_tail check, {:?} is not one",
                    c.name
                ));
            }
            if !self.quantile.is_some_and(|q| q > 0.0 && q < 1.0) {
                out.push(format!("{prefix}.quantile: required, within (0, 1)"));
            }
        }
        out
    }
}

/// Cumulative (events, exposure) of a cohort for a ratio-like check, or for the lowest boundary.
fn events_exposure(spec: &CheckSpec, s: &[f64]) -> (f64, f64) {
    let v = |i: usize| s.get(i).copied().unwrap_or(0.0);
    match &spec.kind {
        CheckKind::HistogramTail { boundaries } => {
            let n = boundaries.len();
            let x = v(1 + n);
            ((x - v(1)).max(0.0), x)
        }
        _ => (v(1).min(v(0)), v(0)),
    }
}

/// Evaluate a trigger over the cumulative slots `[baseline, canary]` of its check: the reason
/// when it fires.
pub fn evaluate(t: &TriggerConfig, spec: &CheckSpec, cum: &[Vec<f64>; 2]) -> Option<String> {
    let unit = &spec.unit_label;
    match t.when {
        TriggerWhen::CanaryEvents => {
            let above = t.above.unwrap_or(0.0);
            let (e, x) = events_exposure(spec, &cum[1]);
            (e > above).then(|| {
                format!(
                    "rollback trigger {:?} fired: the canary had {e:.0} {unit} in {x:.0} ({}), more than the {above} allowed",
                    t.name, spec.name
                )
            })
        }
        TriggerWhen::RateRatio => {
            let f = t.factor.unwrap_or(f64::INFINITY);
            let (eb, xb) = events_exposure(spec, &cum[0]);
            let (ec, xc) = events_exposure(spec, &cum[1]);
            if ec < t.min_events.unwrap_or(10.0) || xc <= 0.0 || xb <= 0.0 {
                return None;
            }
            let (rb, rc) = (eb / xb, ec / xc);
            (rc > f * rb).then(|| {
                format!(
                    "rollback trigger {:?} fired: canary {unit} rate {:.4}% is above {f} x the baseline's {:.4}% ({})",
                    t.name,
                    100.0 * rc,
                    100.0 * rb,
                    spec.name
                )
            })
        }
        TriggerWhen::QuantileRatio => {
            let CheckKind::HistogramTail { boundaries } = &spec.kind else {
                return None;
            };
            let q = t.quantile?;
            let f = t.factor?;
            let n = boundaries.len();
            let tail = 1.0 - q;
            let min = t.min_events.unwrap_or(10.0 / tail);
            // Share of each cohort above each boundary (None where that boundary had no data).
            let above = |s: &[f64]| -> Vec<Option<f64>> {
                (0..n)
                    .map(|i| {
                        let x = s.get(1 + n + i).copied().unwrap_or(0.0);
                        let below = s.get(1 + i).copied().unwrap_or(0.0);
                        (x >= min).then(|| ((x - below).max(0.0)) / x)
                    })
                    .collect()
            };
            let (sb, sc) = (above(&cum[0]), above(&cum[1]));
            // Baseline: smallest boundary with at most `tail` above it (its quantile is <= b').
            let base_upper = (0..n).find(|&i| sb[i].is_some_and(|s| s <= tail))?;
            // Canary: largest boundary with more than `tail` above it (its quantile is > b).
            let canary_lower = (0..n).rev().find(|&i| sc[i].is_some_and(|s| s > tail))?;
            let (bu, cl) = (boundaries[base_upper], boundaries[canary_lower]);
            (cl >= f * bu).then(|| {
                format!(
                    "rollback trigger {:?} fired: canary p{} is above {cl} ({:.2}% of requests slower) while the baseline's is at most {bu} ({:.2}% slower): more than {f} x the baseline ({})",
                    t.name,
                    q * 100.0,
                    100.0 * sc[canary_lower].unwrap_or(0.0),
                    100.0 * sb[base_upper].unwrap_or(0.0),
                    spec.name
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Catalog;

    fn trig(when: TriggerWhen) -> TriggerConfig {
        TriggerConfig {
            name: "t".into(),
            check: "latency-tail".into(),
            when,
            above: None,
            factor: Some(1.5),
            quantile: Some(0.99),
            min_events: None,
        }
    }

    /// Slots of latency-tail (bounds 100, 250, 500, 1000): [count, below b..., count with b...].
    fn hist(count: f64, above: [f64; 4]) -> Vec<f64> {
        let mut v = vec![count];
        v.extend(above.iter().map(|a| count - a));
        v.extend([count; 4]);
        v
    }

    #[test]
    fn quantile_ratio_fires_only_when_bucket_bounds_prove_it() {
        let cat = Catalog::builtin();
        let spec = cat.get("latency-tail").unwrap();
        let t = trig(TriggerWhen::QuantileRatio);
        // Baseline: 0.5% above 250 ms -> p99 <= 250. Canary: 2% above 500 -> p99 > 500 >= 1.5 x 250.
        let base = hist(10_000.0, [300.0, 50.0, 10.0, 1.0]);
        let slow = hist(10_000.0, [900.0, 500.0, 200.0, 50.0]);
        let why = evaluate(&t, spec, &[base.clone(), slow]).expect("fires");
        assert!(
            why.contains("\"t\"") && why.contains("above 500") && why.contains("at most 250"),
            "{why}"
        );
        // Canary p99 in (250, 500]: not provably 1.5 x 250 = 375 from the buckets.
        let mid = hist(10_000.0, [900.0, 200.0, 90.0, 10.0]);
        assert_eq!(evaluate(&t, spec, &[base.clone(), mid]), None);
        // Too few observations: no decision.
        let few = hist(500.0, [100.0, 100.0, 100.0, 100.0]);
        assert_eq!(evaluate(&t, spec, &[base, few]), None);
    }

    #[test]
    fn canary_events_and_rate_ratio() {
        let cat = Catalog::builtin();
        let spec = cat.get("error-rate").unwrap();
        let mut t = trig(TriggerWhen::CanaryEvents);
        t.check = "error-rate".into();
        assert_eq!(
            evaluate(&t, spec, &[vec![100.0, 5.0], vec![100.0, 0.0]]),
            None
        );
        let why = evaluate(&t, spec, &[vec![100.0, 0.0], vec![100.0, 1.0]]).unwrap();
        assert!(why.contains("1 5xx"), "{why}");
        t.when = TriggerWhen::RateRatio;
        t.factor = Some(3.0);
        assert_eq!(
            evaluate(&t, spec, &[vec![1e4, 10.0], vec![1e4, 25.0]]),
            None
        );
        assert!(evaluate(&t, spec, &[vec![1e4, 10.0], vec![1e4, 31.0]]).is_some());
        assert_eq!(
            evaluate(&t, spec, &[vec![1e4, 0.0], vec![1e4, 9.0]]),
            None,
            "fewer than min_events canary events"
        );
    }

    #[test]
    fn problems_name_the_key() {
        let cat = Catalog::builtin();
        let mut t = trig(TriggerWhen::QuantileRatio);
        t.check = "error-rate".into();
        t.quantile = Some(1.5);
        let p = t.problems("rollback[0]", cat.get("error-rate"));
        assert!(
            p.iter()
                .any(|m| m.starts_with("rollback[0].check: quantile_ratio needs")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.starts_with("rollback[0].quantile")),
            "{p:?}"
        );
        assert!(t.problems("r", None)[0].contains("not one of the analysis' checks"));
    }
}
