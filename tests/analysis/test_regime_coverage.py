"""How often the headline threshold interval holds the truth, and replicates that disagree.

Synthetic searches with a known answer (fixed seeds): ELR range [1e-5, 1]; true thresholds
t1 ~ U(-4, -2.5) and t2 = t1 + U(0.8, 2) decades (log10 ELR), drawn per data set; every trial
has its own switch points t1 + N(0, sd) and t2 + N(0, sd) (label noise of sd decades): it is
converged below its first, diverged past its second, chaotic between. 160 trials per data set,
placed

- "uniform": uniformly in log ELR over the range;
- "search": as a boundary search places them: a 16-point log sweep, then 72 trials around each
  threshold, N(guess, 0.25 decades), the guess itself off by N(0, 0.15) decades.

Measured on the headline 95% interval (``elr_lo``, ``elr_hi``), 100 data sets (200
thresholds) per case, these seeds:

    design   sd (decades)   coverage   median width (decades)
    uniform  0.1            96.5%      0.19
    uniform  0.2            97.5%      0.25
    search   0.1            96.0%      0.11
    search   0.2            94.5%      0.17

The issue's bar: >= 90% coverage and median width <= 0.5 decades. bench/regime_coverage.py
runs the larger study (more data sets, a log-spaced grid, sharp and wider boundaries).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tune_lip.analysis import fit_regime_thresholds, regime_boundaries

sys.path.insert(0, str(Path(__file__).parent))
from regime_worlds import HI, LO, PAIRS, design, labels, world  # noqa: E402,F401


@pytest.mark.parametrize(("kind", "sd"), [("uniform", 0.1), ("uniform", 0.2),
                                          ("search", 0.1), ("search", 0.2)])
def test_headline_interval_covers_the_true_threshold(kind, sd):
    rng = np.random.default_rng(100)
    covered, widths = [], []
    for _ in range(100):
        truth = world(rng)
        x = design(kind, truth, rng)
        # n_boot: the comparison fit's bootstrap, not the headline; kept small for speed
        fit = fit_regime_thresholds(10 ** x, labels(x, truth, sd, rng), n_boot=10,
                                    elr_range=(10 ** LO, 10 ** HI))
        for pair, t in zip(PAIRS, truth):
            row = fit.boundary(*pair)
            assert row is not None  # 160 trials always see all three regimes here
            lo, hi = math.log10(row["elr_lo"]), math.log10(row["elr_hi"])
            covered.append(lo <= t <= hi)
            widths.append(hi - lo)
            assert lo <= math.log10(row["elr"]) <= hi  # the estimate lies in its interval
    coverage, width = float(np.mean(covered)), float(np.median(widths))
    # nominal 95%: at least 90% over 200 thresholds, without buying it with width
    assert coverage >= 0.90, (coverage, width)
    assert width <= 0.5, (coverage, width)


# ---------------------------------------------------------------------------------------------
# Replicates
# ---------------------------------------------------------------------------------------------

T1, T2 = 1e-3, 3e-2
ELRS = np.geomspace(1e-5, 1, 21)  # 4 per decade
SEEDS = (0, 1, 2)


def replicate_labels(disagree: bool) -> list[str]:
    """One label per (ELR, seed): the sharp truth, except that with ``disagree`` the seeds
    split at the three grid ELRs within 0.3 decades of each threshold (a boundary whose switch
    point moves with the seed)."""
    out = []
    for e in ELRS:
        for seed in SEEDS:
            r = "diverged" if e >= T2 else "chaotic" if e >= T1 else "converged"
            if disagree:
                for (lower, upper), t in zip(PAIRS, (T1, T2)):
                    if abs(math.log10(e / t)) < 0.3:
                        r = upper if seed < 2 else lower  # 2 of 3 seeds switch, 1 does not
            out.append(r)
    return out


def replicate_frame(regimes: list[str]) -> pd.DataFrame:
    """load()'s format: each (ELR, seed) is one trial reporting its regime."""
    pairs = [(e, s) for e in ELRS for s in SEEDS]
    return pd.DataFrame([{"trial_id": f"t{i:03d}", "training_iteration": 1,
                          "config/optimizer/elr": float(e), "config/seed": s, "regime": r}
                         for i, ((e, s), r) in enumerate(zip(pairs, regimes))])


def test_replicates_that_disagree_widen_the_interval():
    agree = regime_boundaries(replicate_frame(replicate_labels(False)), n_boot=100)
    disagree = regime_boundaries(replicate_frame(replicate_labels(True)), n_boot=100)
    # every seed is pooled as a trial and kept beside its trial
    assert len(agree.trials) == len(ELRS) * len(SEEDS)
    assert sorted(agree.trials["replicate"].unique()) == list(SEEDS)
    assert [n for n in disagree.notes if n.startswith("replicates pooled")] == [
        "replicates pooled: 3 seeds (config/seed), 3-3 per ELR, each one draw of where training "
        "switches regime (seeds that disagree widen the interval)"]
    for pair, t in zip(PAIRS, (T1, T2)):
        a, d = agree.boundary(*pair), disagree.boundary(*pair)
        assert a is not None and d is not None
        assert a["n_mixed"] == 0 and d["n_mixed"] == 3  # seeds split at three ELRs
        # both hold the truth; the disagreement makes the interval wider, and the boundary
        # is estimated to be noisier
        assert a["elr_lo"] <= t <= a["elr_hi"] and d["elr_lo"] <= t <= d["elr_hi"]
        assert d["width_decades"] > 1.5 * a["width_decades"], (a, d)
        assert d["spread_decades"] > a["spread_decades"]
    assert any("replicates landed in both regimes" in n for n in disagree.notes)


def test_one_seed_per_elr_and_three_seeds_per_elr_agreeing_narrow_the_interval():
    """Pooling means three agreeing seeds are three trials' worth of evidence, not one."""
    one = fit_regime_thresholds(ELRS, [r for i, r in enumerate(replicate_labels(False))
                                       if i % len(SEEDS) == 0])
    three = fit_regime_thresholds(np.repeat(ELRS, len(SEEDS)), replicate_labels(False))
    for pair in PAIRS:
        assert three.boundary(*pair)["width_decades"] < one.boundary(*pair)["width_decades"]
