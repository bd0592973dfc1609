//! Differential test of the robust betting e-process against committed numpy vectors
//! (tests/reference/robust.py computes the same wealth vectorised; no Python needed here).

use meshgate::judge::robust::{RobustEProcess, RobustParams, CAP, PRIOR_SECOND_MOMENT};
use serde::Deserialize;

const VECTORS: &str = include_str!("../reference/robust.json");

#[derive(Deserialize)]
struct Vectors {
    meta: Meta,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Meta {
    cap: f64,
    prior_second_moment: f64,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    margin: f64,
    units: Vec<[f64; 4]>,
    usable: Vec<bool>,
    ln_w: Vec<f64>,
    ln_w_go: Vec<f64>,
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs().max(1.0)
}

#[test]
fn wealth_matches_numpy_unit_by_unit() {
    let v: Vectors = serde_json::from_str(VECTORS).unwrap();
    assert_eq!(v.meta.cap, CAP);
    assert_eq!(v.meta.prior_second_moment, PRIOR_SECOND_MOMENT);
    assert_eq!(v.cases.len(), 3);
    for c in &v.cases {
        let mut t = RobustEProcess::new(RobustParams {
            alpha: 0.05,
            margin: c.margin,
        });
        let mut k = 0;
        for (u, &usable) in c.units.iter().zip(&c.usable) {
            t.observe(u[0], u[1], u[2], u[3]);
            if usable {
                assert!(
                    close(t.ln_e(), c.ln_w[k]) && close(t.ln_e_not_worse(), c.ln_w_go[k]),
                    "{} unit {k}: {} vs {}, {} vs {}",
                    c.name,
                    t.ln_e(),
                    c.ln_w[k],
                    t.ln_e_not_worse(),
                    c.ln_w_go[k]
                );
                k += 1;
            }
        }
        assert_eq!(k, c.ln_w.len(), "{}", c.name);
        let (units, skipped, clipped) = t.unit_counts();
        assert_eq!(units as usize, k);
        assert_eq!(skipped as usize, c.units.len() - k);
        assert!(clipped >= 2, "{}: the last unit clips both rates", c.name);
    }
    // The cases exercise both directions: a regression that builds NO-GO wealth, an improvement
    // that builds GO wealth.
    let last = |n: &str| v.cases.iter().find(|c| c.name == n).unwrap();
    assert!(*last("regression").ln_w.last().unwrap() > 0.5);
    assert!(*last("improvement").ln_w_go.last().unwrap() > 3.0);
}
