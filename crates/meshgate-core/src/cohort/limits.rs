//! Plausibility limits on scraped pages (`[scrape.limits]`): what a page may hold before its data
//! is quarantined instead of entering an e-process.
//!
//! Prometheus has `sample_limit`, `label_name_length_limit` and `label_value_length_limit` per
//! scrape job and fails the whole scrape when one is broken; these follow it, and add the
//! rules a judge needs that a time-series database does not: a counter must be a finite,
//! non-negative number that an `f64` still holds exactly, and it cannot grow faster than a pod
//! can serve.

use serde::{Deserialize, Serialize};

/// 2^53: above it an `f64` no longer holds every integer, so a counter's small increments are
/// lost (or invented) by rounding.
pub const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0;

/// The limits one target's pages are held to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most samples (lines with a value, of any family) on one page; 0: no limit.
    pub sample_limit: usize,
    /// Longest label name on a series a check reads, in bytes; 0: no limit.
    pub label_name_length_limit: usize,
    /// Longest label value (as written, escapes included) on a series a check reads, in bytes;
    /// 0: no limit.
    pub label_value_length_limit: usize,
    /// Largest counter value accepted on a series a check reads (at most 2^53).
    pub max_counter_value: f64,
    /// Fastest growth of a series a check reads, and of the sum of one family's series on one
    /// target, per second of time between the two pages. Applies to event counts: histogram
    /// `_sum` and `_created` series and `*_bytes*` families (sizes, not events) are exempt, and
    /// `_bucket` series count one by one (their sum counts each request once per bucket).
    pub max_increase_per_second: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // Istio's default sidecar page carries a few thousand samples and istiod's about as
            // many; 100,000 is far above either and still bounds the memory one target takes.
            sample_limit: 100_000,
            label_name_length_limit: 256,
            label_value_length_limit: 2048,
            max_counter_value: EXACT_INTEGER_LIMIT,
            // Istio's published proxy cost is about 0.35 vCPU per 1,000 requests/s, so 250,000/s
            // from one pod is some 90 vCPU of sidecar: no real pod, 25x the demo mesh's load.
            max_increase_per_second: 250_000.0,
        }
    }
}

impl Limits {
    /// No limit but the ones no page can lawfully break (finite, non-negative, exact).
    pub fn none() -> Self {
        Self {
            sample_limit: 0,
            label_name_length_limit: 0,
            label_value_length_limit: 0,
            max_counter_value: EXACT_INTEGER_LIMIT,
            max_increase_per_second: f64::INFINITY,
        }
    }

    /// What is wrong with these limits, as `(key, message)` (empty when they are usable).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let v = self.max_counter_value;
        if !(v > 0.0 && v <= EXACT_INTEGER_LIMIT) {
            out.push((
                "max_counter_value",
                format!("{v} must be above 0 and at most 2^53 (9007199254740992), where f64 stops holding every integer"),
            ));
        }
        let r = self.max_increase_per_second;
        if r.is_nan() || r <= 0.0 {
            out.push(("max_increase_per_second", format!("{r} must be above 0")));
        }
        out
    }

    /// Whether the rate ceiling applies to series named `name`.
    pub(crate) fn rate_applies(name: &str) -> bool {
        !(name.ends_with("_sum") || name.ends_with("_created") || name.contains("_bytes"))
    }
}

/// A broken limit: why a page was quarantined.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Violation {
    /// The limit's key in `[scrape.limits]` (`sample_limit`, `max_counter_value`, ...), or
    /// `finite` for NaN and infinities.
    pub limit: String,
    /// A sentence naming the series and the value.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.limit)
    }
}

impl Violation {
    pub(crate) fn new(limit: &str, message: String) -> Self {
        Self {
            limit: limit.to_owned(),
            message,
        }
    }
}

/// `name{labels}`, cut to a readable length.
pub(crate) fn series_name(name: &str, labels: &str) -> String {
    const MAX: usize = 160;
    let mut s = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}
