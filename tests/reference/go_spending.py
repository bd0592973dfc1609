#!/usr/bin/env python3
"""A horizon-aware GO certificate that stays exact: alpha spent over the analysis' own time.

docs/benchmarks.md ("Time to GO against an oracle") quotes this script's output. Standard library
only. The setting is go_oracle.py's: 50 requests/s per cohort, 0.1% 5xx, margin 0.25, alpha 0.05,
looks every 15 s from 5 min, INCONCLUSIVE at 1 h (the analysis' max_duration).

The design. GO rejects H0: canary rate >= (1 + margin) x baseline rate. Condition on the path of
the two cohorts' summed error counts N_1 <= N_2 <= ... (and on the requests, which are observed).
Given that path each error is the canary's with probability p_j = r E_c,j / (r E_c,j + E_b,j)
(E the cohorts' requests in the error's interval, r the rate ratio), independently: the canary's
count C_k is a sum of Bernoulli steps whose law, at the null's boundary r = 1 + margin, is fully
known. A larger r only makes a small C_k less likely, so the boundary is the least favourable
null. At look k the GO boundary b_k is the largest count with

    P0(C_k <= b_k, no GO before k | the totals) <= alpha(t_k) - (what earlier looks spent),

computed exactly by the recursion over C's distribution restricted to the paths not yet
certified. alpha(t) is the Lan-DeMets O'Brien-Fleming spending function 2 (1 - Phi(z_{1-alpha/2}
/ sqrt t)) of the time fraction t = elapsed / max_duration (a function of the clock only, so it
needs no estimate of the information to come). The probability of a GO under H0, conditional on
any totals path, is the sum of what was spent: at most alpha(1) = alpha. So unconditionally too.

What it costs: the test is valid only up to max_duration (it spends all alpha by then; a longer
analysis cannot GO later), which is how meshgate's analyses end anyway (INCONCLUSIVE).

Usage: python3 tests/reference/go_spending.py   (SIMS=2000 by default; SEED=1)
"""
import math
import os
import random
from statistics import NormalDist

RPS = 50.0
RATE = 0.001
MARGIN = 0.25
ALPHA = 0.05
SCRAPE = 15.0
FIRST = 5 * 60.0
HORIZON = 60 * 60.0
SIMS = int(os.environ.get("SIMS", "2000"))
random.seed(int(os.environ.get("SEED", "1")))

N = NormalDist()
Z_HALF = N.inv_cdf(1 - ALPHA / 2)


def spend(t):
    """Lan-DeMets O'Brien-Fleming alpha-spending at time fraction t (0 < t <= 1)."""
    return 2.0 * (1.0 - N.cdf(Z_HALF / math.sqrt(t))) if t > 0 else 0.0


def poisson(lam):
    """Knuth's Poisson draw (small means only)."""
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= random.random()
        if p < limit:
            return k
        k += 1


def run(ratio):
    """One analysis with the canary at `ratio` x the baseline's rate: seconds to GO or None."""
    lam_b = RPS * RATE * SCRAPE
    lam_c = ratio * lam_b
    p0 = (1 + MARGIN) / (2 + MARGIN)  # equal requests per interval in both cohorts
    dist = [1.0]  # P0(C = c, not certified yet | totals), c = 0..len-1
    spent = 0.0
    c_obs = 0
    ticks = int(HORIZON / SCRAPE)
    for k in range(1, ticks + 1):
        nc, nb = poisson(lam_c), poisson(lam_b)
        c_obs += nc
        for _ in range(nc + nb):  # one Bernoulli(p0) step per error, under the null
            new = [0.0] * (len(dist) + 1)
            for c, m in enumerate(dist):
                new[c] += m * (1 - p0)
                new[c + 1] += m * p0
            dist = new
        t = k * SCRAPE
        if t < FIRST:
            continue
        allow = spend(t / HORIZON) - spent
        cum, b = 0.0, -1
        while b + 1 < len(dist) and cum + dist[b + 1] <= allow:
            b += 1
            cum += dist[b]
        if c_obs <= b:
            return t
        # Certified paths leave the continuation region; what they held is spent.
        for c in range(b + 1):
            spent += dist[c]
            dist[c] = 0.0
    return None


def summary(ratio, sims):
    times = sorted(t for t in (run(ratio) for _ in range(sims)) if t is not None)
    share = len(times) / sims
    median = times[sims // 2 - 1] if len(times) >= sims // 2 else None
    return share, median


def main():
    print(f"setting: {RPS:g} rps/cohort, {RATE:.2%} 5xx, margin {MARGIN}, alpha {ALPHA}, looks "
          f"every {SCRAPE:g} s from {FIRST:g} s to {HORIZON:g} s, {SIMS} runs per row")
    for ratio, what in ((1 + MARGIN, "at the margin (a GO is wrong)"), (1.0, "A/A")):
        share, median = summary(ratio, SIMS)
        lo, hi = wilson(share, SIMS)
        m = f"{median:.0f} s" if median else f"> {HORIZON:g} s"
        print(f"ratio {ratio:g} ({what}): GO by {HORIZON:g} s {share:.2%} "
              f"[{lo:.2%}, {hi:.2%}], median time to GO {m}")


def wilson(p, n, z=1.96):
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


if __name__ == "__main__":
    main()
