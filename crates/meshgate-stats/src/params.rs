//! The parameter ranges of the sequential tests, defined once, and the error naming a bad one.

use std::fmt;

/// An interval of admissible values, open or closed at each end; prints as `(0, 0.5)`,
/// `[0, 1000]` or `(0, inf)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    /// Lower end.
    pub lo: f64,
    /// Upper end (`f64::INFINITY` for none; infinity itself is never admitted).
    pub hi: f64,
    /// `lo` itself is admitted.
    pub lo_closed: bool,
    /// `hi` itself is admitted.
    pub hi_closed: bool,
}

impl Range {
    /// `(lo, hi)`.
    pub const fn open(lo: f64, hi: f64) -> Self {
        Range {
            lo,
            hi,
            lo_closed: false,
            hi_closed: false,
        }
    }

    /// `[lo, hi]`.
    pub const fn closed(lo: f64, hi: f64) -> Self {
        Range {
            lo,
            hi,
            lo_closed: true,
            hi_closed: true,
        }
    }

    /// `[lo, inf)`: finite values of at least `lo`.
    pub const fn at_least(lo: f64) -> Self {
        Range {
            lo,
            hi: f64::INFINITY,
            lo_closed: true,
            hi_closed: false,
        }
    }

    /// `(lo, hi]`.
    pub const fn open_closed(lo: f64, hi: f64) -> Self {
        Range {
            lo,
            hi,
            lo_closed: false,
            hi_closed: true,
        }
    }

    /// Whether `v` lies in the range (NaN and infinities never do).
    pub fn contains(&self, v: f64) -> bool {
        v.is_finite()
            && (v > self.lo || (self.lo_closed && v == self.lo))
            && (v < self.hi || (self.hi_closed && v == self.hi))
    }

    /// Whether every value of `inner` lies in this range: a stricter policy range (a check
    /// file's) must stay inside the range the statistics are valid for.
    pub fn covers(&self, inner: &Range) -> bool {
        let lo_ok =
            inner.lo > self.lo || (inner.lo == self.lo && (self.lo_closed || !inner.lo_closed));
        let hi_ok =
            inner.hi < self.hi || (inner.hi == self.hi && (self.hi_closed || !inner.hi_closed));
        lo_ok && hi_ok
    }

    /// `Ok` when `value` lies in the range, else the error naming the parameter.
    pub fn check(&self, name: &'static str, value: f64) -> Result<(), ParamsError> {
        if self.contains(value) {
            Ok(())
        } else {
            Err(ParamsError {
                name,
                value,
                range: *self,
            })
        }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (l, r) = (
            if self.lo_closed { '[' } else { '(' },
            if self.hi_closed { ']' } else { ')' },
        );
        write!(f, "{l}{}, {}{r}", self.lo, self.hi)
    }
}

/// Level of every NO-GO test and GO certificate (one-sided each).
pub const ALPHA: Range = Range::open(0.0, 0.5);
/// Tolerated relative regression m; beyond 1000 a test would tolerate a 1000x regression.
pub const MARGIN: Range = Range::closed(0.0, 1000.0);
/// Event count at which a mixing prior makes the boundary tightest.
pub const TARGET_EVENTS: Range = Range::open(0.0, f64::INFINITY);

/// A parameter of a sequential test outside its range.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{name} must lie in {range}, got {value}")]
pub struct ParamsError {
    /// The parameter, as its field is named (`alpha`, `margin`, `target_events`).
    pub name: &'static str,
    /// The value given.
    pub value: f64,
    /// The admissible range.
    pub range: Range,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_print_and_contain() {
        assert_eq!(ALPHA.to_string(), "(0, 0.5)");
        assert_eq!(MARGIN.to_string(), "[0, 1000]");
        assert_eq!(TARGET_EVENTS.to_string(), "(0, inf)");
        assert!(ALPHA.contains(0.05) && !ALPHA.contains(0.0) && !ALPHA.contains(0.5));
        assert!(MARGIN.contains(0.0) && MARGIN.contains(1000.0) && !MARGIN.contains(f64::NAN));
        assert!(!TARGET_EVENTS.contains(f64::INFINITY) && TARGET_EVENTS.contains(1e300));
        assert!(MARGIN.covers(&Range::closed(0.0, 10.0)));
        assert!(!ALPHA.covers(&Range::closed(0.0, 0.4)));
        assert!(TARGET_EVENTS.covers(&Range::at_least(5.0)));
    }

    #[test]
    fn error_names_parameter_value_and_range() {
        let e = ALPHA.check("alpha", 0.7).unwrap_err();
        assert_eq!(e.to_string(), "alpha must lie in (0, 0.5), got 0.7");
        assert_eq!((e.name, e.value, e.range), ("alpha", 0.7, ALPHA));
    }
}
