#!/usr/bin/env python3
"""Why the tail p99 +20% scenario of bench-judge takes minutes: the oracle.

Run from the crate root (scipy):  python3 tests/reference/tail_oracle.py

The scenario (src/judge/bench.rs): baseline latency log-normal, median 40 ms, sigma 0.8; the
canary's sigma grows by ln(1.2)/z_0.99 so its p99 is 20% higher at the same median; 50 rps per
cohort; the latency-tail check tests, at each boundary b in 100, 250, 500, 1000 ms, the share of
requests slower than b with H0: canary share <= (1 + m) x baseline share, m = 0.25.

For each boundary it prints the tail shares, their ratio psi, the events per second, and the
ORACLE: a fixed-sample one-sided binomial test at alpha 0.05 of the canary's share of the tail
events (H0: theta <= theta(1 + m), the null boundary, exposure split 1:1) that KNOWS the effect
and the sample size in advance; "median s" is the time at which its power reaches 50%, i.e. the
fastest median detection any valid test of that boundary's null can have (a sequential test,
which must hold alpha at every look, needs more). The last lines do the same for a margin-free
whole-distribution test (the known multinomial likelihood ratio across all buckets, H0: same
distribution), which ignores the check's tolerance.
"""

import math

import numpy as np
from scipy import stats

BOUNDS = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
          300000, 600000, 1800000, 3600000]
MU, SIGMA = math.log(40.0), 0.8
ADD = math.log(1.2) / stats.norm.ppf(0.99)
RPS = 50.0
ALPHA = 0.05
MARGIN = 0.25


def survival(b, sigma):
    return stats.norm.sf((math.log(b) - MU) / sigma)


def theta(psi):
    return psi / (psi + 1.0)


def oracle_events(t0, t1):
    """Smallest number of tail events at which the level-alpha binomial test of theta <= t0
    has power >= 1/2 against theta = t1."""
    for n in range(1, 200000):
        c = stats.binom.isf(ALPHA, n, t0)  # reject when X > c: P0(X > c) <= alpha
        if stats.binom.sf(c, n, t1) >= 0.5:
            return n
    return None


def main():
    print(f"canary sigma {SIGMA + ADD:.4f}; baseline p99 "
          f"{math.exp(MU + SIGMA * stats.norm.ppf(0.99)):.0f} ms, canary p99 "
          f"{math.exp(MU + (SIGMA + ADD) * stats.norm.ppf(0.99)):.0f} ms")
    print("| boundary | baseline share | canary share | ratio psi | tail events/s (both) | "
          "oracle events | oracle median s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for b in [100, 250, 500, 1000]:
        qa, qb = survival(b, SIGMA), survival(b, SIGMA + ADD)
        psi = qb / qa
        rate = RPS * (qa + qb)
        if psi <= 1 + MARGIN:
            print(f"| {b} | {qa:.5f} | {qb:.5f} | {psi:.3f} | {rate:.2f} | H0 true | never |")
            continue
        n = oracle_events(theta(1 + MARGIN), theta(psi))
        print(f"| {b} | {qa:.5f} | {qb:.5f} | {psi:.3f} | {rate:.2f} | {n} | {n / rate:.0f} |")
    # Margin-free: known multinomial LR over the Envoy buckets, H0 same distribution.
    def probs(sigma):
        c = [stats.norm.cdf((math.log(b) - MU) / sigma) for b in BOUNDS]
        p = np.diff(np.concatenate([[0.0], c, [1.0]]))
        return np.clip(p, 1e-300, None)
    pa, pb = probs(SIGMA), probs(SIGMA + ADD)
    llr = np.log(pb / pa)
    # Per canary request: mean and variance of the LLR under H0 (baseline) and H1 (canary).
    m0, v0 = float(pa @ llr), float(pa @ llr**2 - (pa @ llr) ** 2)
    m1, v1 = float(pb @ llr), float(pb @ llr**2 - (pb @ llr) ** 2)
    # Normal approximation: reject when the sum exceeds n m0 + z sqrt(n v0); median when
    # n m1 = n m0 + z sqrt(n v0).
    z = stats.norm.isf(ALPHA)
    n = (z * math.sqrt(v0) / (m1 - m0)) ** 2
    # Sequential oracle: Wald's SPRT of the known alternative against the margin boundary
    # (simple vs simple, theta(1 + m) vs theta(psi) in each disjoint tail bin (250, 500] and
    # > 500 ms), crossing ln(1/alpha), on Poisson tail events per 15 s scrape: the fastest
    # anytime-valid test of the check's null that KNOWS the effect. Median over 4000 runs.
    rng = np.random.default_rng(1)
    bins = []
    for lo, hi in [(250, 500), (500, None)]:
        qa = survival(lo, SIGMA) - (survival(hi, SIGMA) if hi else 0.0)
        qb = survival(lo, SIGMA + ADD) - (survival(hi, SIGMA + ADD) if hi else 0.0)
        t0, t1 = theta(1 + MARGIN), theta(qb / qa)
        bins.append((RPS * 15 * qa, RPS * 15 * qb, math.log(t1 / t0), math.log((1 - t1) / (1 - t0))))
    runs, ticks = 4000, 240
    llr = np.zeros((runs, ticks))
    for la, lb, wb, wa in bins:
        llr += rng.poisson(lb, (runs, ticks)) * wb + rng.poisson(la, (runs, ticks)) * wa
    paths = np.cumsum(llr, axis=1)
    hit = paths >= math.log(1 / ALPHA)
    first = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, ticks + 1) * 15
    print(f"sequential oracle (SPRT, known effect, tail bins above 250 ms, margin {MARGIN}): "
          f"median {np.median(first):.0f} s, p90 {np.percentile(first, 90):.0f} s")
    print(f"margin-free whole-distribution oracle (known baseline and canary shapes, canary "
          f"requests only): {n:.0f} requests = {n / RPS:.0f} s at {RPS:.0f} rps")


if __name__ == "__main__":
    main()
