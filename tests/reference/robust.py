#!/usr/bin/env python3
"""Reference vectors for src/judge/robust.rs (the betting e-process), written to robust.json.

Run from the crate root (numpy only):

    python3 tests/reference/robust.py

An independent, vectorised computation of the same wealth: the rates, Z, the predictable aGRAPA
bets (cumulative sums shifted by one unit) and the log-wealth (cumulative sum of log1p) are
computed as whole arrays with numpy, not unit by unit as in Rust. The unit sequence is
deterministic (fixed seed): overdispersed counts (Beta rates, clumps), units without exposure
(skipped), a unit with more events than exposure (rate clipped to 1). Re-running reproduces
the file byte for byte.
"""

import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CAP = 0.9
S0 = 1e-4


def wealth(units, margin):
    u = np.array(units, dtype=float)
    ea, eb, xa, xb = u[:, 0], u[:, 1], u[:, 2], u[:, 3]
    usable = (xa > 0) & (xb > 0)
    ea, eb, xa, xb = ea[usable], eb[usable], xa[usable], xb[usable]
    ra = np.minimum(ea / xa, 1.0)
    rb = np.minimum(eb / xb, 1.0)
    z = rb / (1.0 + margin) - ra
    s1 = np.concatenate([[0.0], np.cumsum(z)[:-1]])
    s2 = np.concatenate([[0.0], np.cumsum(z * z)[:-1]])
    lam = np.clip(s1 / (S0 + s2), 0.0, CAP)
    mu = np.clip(-s1 / (S0 + s2), 0.0, CAP * (1.0 + margin))
    ln_w = np.cumsum(np.log1p(lam * z))
    ln_w_go = np.cumsum(np.log1p(-mu * z))
    return usable, ln_w, ln_w_go


def sequence(rng, n, p_a, p_b, conc):
    out = []
    for i in range(n):
        xa = int(rng.poisson(750))
        xb = int(rng.poisson(750))
        if i % 37 == 5:
            xa = 0
        qa = rng.beta(p_a * conc, (1 - p_a) * conc)
        qb = rng.beta(p_b * conc, (1 - p_b) * conc)
        ea = int(rng.binomial(xa, qa)) * int(1 + rng.integers(0, 3))
        eb = int(rng.binomial(xb, qb))
        out.append([float(ea), float(eb), float(xa), float(xb)])
    out.append([5.0, 9.0, 4.0, 3.0])  # more events than exposure: both rates clipped to 1
    return out


def main():
    rng = np.random.default_rng(20261127)
    cases = []
    for name, p_a, p_b, conc, margin in [
        ("aa-overdispersed", 0.01, 0.01, 50.0, 0.25),
        ("regression", 0.02, 0.06, 200.0, 0.25),
        ("improvement", 0.05, 0.02, 100.0, 0.0),
    ]:
        units = sequence(rng, 300, p_a, p_b, conc)
        usable, ln_w, ln_w_go = wealth(units, margin)
        cases.append({
            "name": name,
            "margin": margin,
            "units": units,
            "usable": [bool(v) for v in usable],
            "ln_w": [float(v) for v in ln_w],
            "ln_w_go": [float(v) for v in ln_w_go],
        })
    meta = {"numpy": np.__version__, "cap": CAP, "prior_second_moment": S0}
    with open(os.path.join(HERE, "robust.json"), "w") as f:
        json.dump({"meta": meta, "cases": cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
