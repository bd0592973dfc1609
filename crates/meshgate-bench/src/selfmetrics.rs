//! Reading meshgate's own `/metrics` page in the harnesses (`bench-scale`, `bench-api`), with
//! the production parser rather than ad-hoc line matching.

use meshgate_expo::{parse, FamilyFilter};

/// Sum of the samples named `name` over all their label sets (0 when there are none).
pub fn metric_sum(page: &str, name: &str) -> f64 {
    let mut sum = 0.0;
    parse(page, &FamilyFilter::all(), |s| {
        if s.name == name {
            sum += s.value;
        }
    });
    sum
}

/// Cumulative buckets (le, count) of histogram `name`, summed over label sets, by `le`.
pub fn histogram_buckets(page: &str, name: &str) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    let mut out: Vec<(f64, f64)> = Vec::new();
    parse(page, &FamilyFilter::all(), |s| {
        if s.name != bucket {
            return;
        }
        let Some(le) = s.labels.get("le") else { return };
        let le = match le.as_ref() {
            "+Inf" => f64::INFINITY,
            v => match v.parse::<f64>() {
                Ok(v) => v,
                Err(_) => return,
            },
        };
        match out.iter_mut().find(|(l, _)| *l == le) {
            Some(b) => b.1 += s.value,
            None => out.push((le, s.value)),
        }
    });
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The upper bound of the bucket holding quantile `q` (NaN without observations).
pub fn quantile_upper(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total <= 0.0 {
        return f64::NAN;
    }
    buckets
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map_or(f64::NAN, |(le, _)| *le)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_summed_over_labels() {
        let m = "# TYPE meshgate_scrape_to_verdict_seconds histogram\n\
                 meshgate_scrape_to_verdict_seconds_bucket{analysis=\"a\",le=\"1.0\"} 2\n\
                 meshgate_scrape_to_verdict_seconds_bucket{analysis=\"a\",le=\"+Inf\"} 4\n\
                 meshgate_scrape_to_verdict_seconds_bucket{analysis=\"b\",le=\"1.0\"} 1\n\
                 meshgate_scrape_to_verdict_seconds_bucket{analysis=\"b\",le=\"+Inf\"} 1\n\
                 meshgate_scrape_to_verdict_seconds_count{analysis=\"b\"} 1\n\
                 meshgate_analysis_ticks_total{analysis=\"a\"} 7\n\
                 meshgate_analysis_ticks_total{analysis=\"b\"} 5\n\
                 meshgate_analysis_ticks_total_other 100\n";
        let b = histogram_buckets(m, "meshgate_scrape_to_verdict_seconds");
        assert_eq!(b, vec![(1.0, 3.0), (f64::INFINITY, 5.0)]);
        assert_eq!(quantile_upper(&b, 0.5), 1.0);
        assert_eq!(quantile_upper(&b, 0.99), f64::INFINITY);
        assert_eq!(metric_sum(m, "meshgate_analysis_ticks_total"), 12.0);
        assert_eq!(metric_sum(m, "absent"), 0.0);
        assert!(quantile_upper(&[], 0.5).is_nan());
    }
}
