"""How often does the headline regime-threshold interval hold the true threshold, and how wide is it?

Synthetic searches with a known answer (no training, no Ray). ELR range [1e-5, 1]. Per data
set the true thresholds are drawn, t1 ~ U(-4, -2.5) and t2 = t1 + U(0.8, 2) decades (log10
ELR); every trial has its own switch points t1 + N(0, sd) and t2 + N(0, sd) (label noise of sd
decades: 0 is a sharp boundary): it is converged below its first, diverged past its second,
chaotic between. Designs of n trials:

- uniform: uniformly in log ELR over the range;
- grid: n log-spaced ELRs;
- search: as a boundary search places them: a 16-point log sweep, then (n - 16) / 2 trials
  around each threshold, N(guess, 0.25 decades), the guess off by N(0, 0.15) decades;
- replicates: n / 4 log-spaced ELRs, 4 seeds each (each seed draws its own switch points).

Each data set is fitted by `tune_lip.analysis.fit_regime_thresholds` (bootstrap of 200 for
the comparison fit). Reported per case: coverage of the headline 95% interval (elr_lo, elr_hi)
with its Clopper-Pearson 95% interval, median width (25-75%) in decades, and the same for the
classical logistic/gap fit (fit_lo, fit_hi). Results also go to bench/results/regime_coverage.json.

Run:  .venv/bin/python bench/regime_coverage.py            (~10 minutes on 2 CPU cores)
      .venv/bin/python bench/regime_coverage.py --sets 20  (a quick look)
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "analysis"))
from regime_worlds import HI, LO, PAIRS, design, labels, world  # noqa: E402,F401

from tune_lip.analysis import fit_regime_thresholds  # noqa: E402

DESIGNS = ("uniform", "grid", "search", "replicates")
NOISE = (0.0, 0.1, 0.2, 0.3)
N_BOOT = 200


def run_case(kind: str, sd: float, n: int, sets: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {k: [] for k in ("covers", "width", "fit_covers", "fit_width")}
    absent = 0
    for i in range(sets):
        truth = world(rng)
        x = design(kind, truth, rng, n)
        fit = fit_regime_thresholds(10 ** x, labels(x, truth, sd, rng), n_boot=N_BOOT, seed=i,
                                    elr_range=(10 ** LO, 10 ** HI))
        for pair, t in zip(PAIRS, truth):
            row = fit.boundary(*pair)
            if row is None:
                absent += 1
                out["covers"].append(0.0)
                out["fit_covers"].append(0.0)
                out["width"].append(math.inf)
                out["fit_width"].append(math.inf)
                continue
            for prefix, (lo_key, hi_key) in (("", ("elr_lo", "elr_hi")),
                                             ("fit_", ("fit_lo", "fit_hi"))):
                lo, hi = math.log10(row[lo_key]), math.log10(row[hi_key])
                out[f"{prefix}covers"].append(float(lo <= t <= hi))
                out[f"{prefix}width"].append(hi - lo)
    result: dict[str, Any] = {"design": kind, "noise_sd_decades": sd, "trials": n,
                              "data_sets": sets, "thresholds": len(out["covers"]),
                              "absent": absent}
    for prefix in ("", "fit_"):
        hits = int(sum(out[f"{prefix}covers"]))
        ci = scipy.stats.binomtest(hits, len(out[f"{prefix}covers"])).proportion_ci(0.95)
        w = np.asarray(out[f"{prefix}width"])
        result[f"{prefix}coverage"] = hits / len(out[f"{prefix}covers"])
        result[f"{prefix}coverage_ci"] = [float(ci.low), float(ci.high)]
        result[f"{prefix}width_median"] = float(np.median(w))
        result[f"{prefix}width_p25_p75"] = [float(np.percentile(w, 25)),
                                            float(np.percentile(w, 75))]
    return result


def machine() -> dict[str, Any]:
    import pandas

    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "machine": platform.machine(), "numpy": np.__version__,
            "scipy": scipy.__version__, "pandas": pandas.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", type=int, default=200, help="data sets per case")
    parser.add_argument("--trials", type=int, default=160, help="trials per data set")
    parser.add_argument("--out", default="bench/results/regime_coverage.json")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = []
    print(f"{'design':<11} {'sd':>4}  {'headline coverage':<24} {'width (25-75%)':<20} "
          f"{'fit coverage':<13} fit width")
    for i, kind in enumerate(DESIGNS):
        for j, sd in enumerate(NOISE):
            r = run_case(kind, sd, args.trials, args.sets, seed=1000 * i + j)
            rows.append(r)
            lo, hi = r["coverage_ci"]
            w25, w75 = r["width_p25_p75"]
            print(f"{kind:<11} {sd:>4.1f}  {r['coverage']:6.1%} [{lo:.1%}, {hi:.1%}]   "
                  f"{r['width_median']:.3f} ({w25:.2f}-{w75:.2f})    {r['fit_coverage']:6.1%}"
                  f"        {r['fit_width_median']:.3f}", flush=True)
    seconds = time.perf_counter() - start
    print(f"{seconds:.0f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "seconds": seconds,
                                          "n_boot": N_BOOT, "cases": rows}, indent=1))


if __name__ == "__main__":
    main()
