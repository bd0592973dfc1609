#!/usr/bin/env python3
"""Time to GO in A/A for the error-rate check, against tests that know more than meshgate does.

docs/benchmarks.md ("Time to GO against an oracle") quotes this script's output. Standard library
only (no scipy needed). The setting is the benchmark's aa-poisson: 50 requests/s per cohort, 0.1%
5xx in both cohorts, the error-rate check's margin 0.25 (H0: canary rate >= 1.25 x baseline, which
a GO rejects), alpha 0.05, scrapes every 15 s, GO allowed from 5 min, INCONCLUSIVE at 1 h.

The GO statistic is the log rate ratio's z-score against the margin. With n errors per cohort its
standard error is sqrt(2 / n), so under A/A (ratio 1) z has mean ln(1.25) sqrt(n / 2) and
variance 1: a Brownian motion in information I = n / 2 with drift ln 1.25 per unit. The tests:

- fixed: a fixed-sample z-test that knows n in advance and looks once. Its median time to GO is
  the n at which its power is 50%. The best any test can do with this margin and alpha.
- pocock: a test that looks at every scrape from 5 min to 1 h with one constant z-threshold,
  calibrated by simulation so that a canary exactly at the margin is certified with probability
  alpha. Knows the horizon.
- obf: the same looks with an O'Brien-Fleming-shaped threshold (constant on the sum scale:
  strict early, lenient at the horizon), calibrated the same way. Knows the horizon.
- e-process: the best single-look likelihood-ratio e-value (threshold 1 / alpha by Ville's
  inequality), z >= sqrt(2 ln(1 / alpha)); meshgate's mixture e-process pays this and a little
  more, but needs no horizon and stays valid if the analysis runs on.

Usage: python3 tests/reference/go_oracle.py   (SIMS=20000 by default; SEED=1)
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
SIMS = int(os.environ.get("SIMS", "20000"))
random.seed(int(os.environ.get("SEED", "1")))

MU = math.log(1 + MARGIN)
LAM = RPS * RATE  # errors per second per cohort
TICKS = [t * SCRAPE for t in range(1, int(HORIZON / SCRAPE) + 1)]
LOOKS = [i for i, t in enumerate(TICKS) if t >= FIRST]
INFO = [LAM * t / 2.0 for t in TICKS]  # information I = n / 2 at each tick


def paths(drift, sims):
    """Brownian paths X(I) = drift I + W(I) sampled at the ticks."""
    for _ in range(sims):
        x, prev = 0.0, 0.0
        out = []
        for info in INFO:
            d = info - prev
            x += drift * d + random.gauss(0.0, math.sqrt(d))
            prev = info
            out.append(x)
        yield out


def first_go(path, threshold):
    """Seconds of the first look whose z-score reaches threshold(i), or None."""
    for i in LOOKS:
        if path[i] / math.sqrt(INFO[i]) >= threshold(i):
            return TICKS[i]
    return None


def calibrate(shape):
    """The constant c for which a canary at the margin (drift 0) is certified with prob. alpha."""
    null = list(paths(0.0, SIMS))
    lo, hi = 1.0, 5.0
    for _ in range(30):
        c = (lo + hi) / 2
        hits = sum(first_go(p, lambda i: c * shape(i)) is not None for p in null)
        if hits / SIMS > ALPHA:
            lo = c
        else:
            hi = c
    return hi


def summarise(name, threshold):
    alt = list(paths(MU, SIMS))
    times = sorted(t for t in (first_go(p, threshold) for p in alt) if t is not None)
    share = len(times) / SIMS
    median = times[SIMS // 2 - 1] if len(times) >= SIMS // 2 else None
    return name, share, median


def main():
    z = NormalDist().inv_cdf(1 - ALPHA)
    n_fixed = 2 * (z / MU) ** 2
    t_fixed = n_fixed / LAM
    n_horizon = LAM * HORIZON
    power_horizon = 1 - NormalDist().cdf(z - MU * math.sqrt(n_horizon / 2))
    print(f"setting: {RPS:g} rps/cohort, {RATE:.2%} 5xx, margin {MARGIN}, alpha {ALPHA}, "
          f"looks every {SCRAPE:g} s from {FIRST:g} s to {HORIZON:g} s, {SIMS} paths")
    print(f"fixed-sample oracle: {n_fixed:.1f} errors per cohort, median time to GO {t_fixed:.0f} s; "
          f"power at {HORIZON:g} s {power_horizon:.1%}")
    z_e = math.sqrt(2 * math.log(1 / ALPHA))
    t_e = 2 * (z_e / MU) ** 2 / LAM
    power_e = 1 - NormalDist().cdf(z_e - MU * math.sqrt(n_horizon / 2))
    print(f"best single-look e-value (z >= {z_e:.3f}): median time to GO {t_e:.0f} s "
          f"({t_e / t_fixed:.2f}x the oracle); GO by {HORIZON:g} s {power_e:.1%}")
    c_pocock = calibrate(lambda i: 1.0)
    i_end = INFO[-1]
    c_obf = calibrate(lambda i: math.sqrt(i_end / INFO[i]))
    for name, share, median in (
        summarise(f"pocock (z >= {c_pocock:.3f} at every look)", lambda i: c_pocock),
        summarise(f"obf (z >= {c_obf:.3f} x sqrt(I_end / I))",
                  lambda i: c_obf * math.sqrt(i_end / INFO[i])),
    ):
        m = f"{median:.0f} s ({median / t_fixed:.2f}x the oracle)" if median else f"> {HORIZON:g} s"
        print(f"{name}: GO by {HORIZON:g} s {share:.1%}, median time to GO {m}")


if __name__ == "__main__":
    main()
