"""How many trials does `BoundarySearch` need for a given threshold interval, against a grid?

Synthetic ground truth (no training, no Ray): a trial at ELR e lands in

    diverged   with probability sigmoid((log10 e - log10 t2) / s),  else
    chaotic    with probability sigmoid((log10 e - log10 t1) / s),  else converged,

with t1 = 1e-3 and t2 = 3e-2, each moved by a random factor 10**U(-0.25, 0.25) per seed (so no
method gains from a grid point that happens to sit on a threshold), and s the boundary's width
in decades: 0 (sharp: "sharp") or 0.1 (a noisy boundary whose 10-90% band spans 0.44 decades:
"noisy"). ELRs range over [1e-5, 1].

- search: `BoundarySearch` (6-point log sweep, then its own placement), driven through
  ``suggest`` / ``on_trial_complete`` one trial at a time;
- grid: n log-spaced ELRs over the same range, for every n.

After n trials both are fitted by `tune_lip.analysis.fit_regime_thresholds` (the searcher's own
fit; the same bootstrap size for the grid). Reported per n, median over seeds with the 25-75%
spread: the 95% interval width of each boundary in decades (inf where the boundary is absent),
how often the interval holds the true threshold, and the trials each method needs before both
intervals are at most w decades wide. Results also go to bench/results/boundary_search.json.

Run:  .venv/bin/python bench/boundary_search.py            (~1-2 minutes on 2 CPU cores)
      .venv/bin/python bench/boundary_search.py --seeds 4 --max-trials 24   (a quick look)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tune_lip.analysis import fit_regime_thresholds
from tune_lip.tune.boundary_search import BoundarySearch

LO, HI, INITIAL = 1e-5, 1.0, 6
THRESHOLDS = (1e-3, 3e-2)
PAIRS = (("converged", "chaotic"), ("chaotic", "diverged"))
SCENARIOS = {"sharp": 0.0, "noisy": 0.1}  # boundary width s in decades
TARGETS = (1.0, 0.5, 0.25, 0.1, 0.05)  # interval widths (decades) for "trials needed"
SHOW_N = (6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64)
N_BOOT = 200


def draw_regime(elr: float, truth: tuple[float, float], s: float, rng: np.random.Generator
                ) -> str:
    """The ground truth: a regime for one trial at ``elr`` (see the module docstring)."""
    x = math.log10(elr)

    def p(t: float) -> float:
        if s == 0:
            return float(x >= math.log10(t))
        return 1.0 / (1.0 + math.exp(-(x - math.log10(t)) / s))

    if rng.random() < p(truth[1]):
        return "diverged"
    return "chaotic" if rng.random() < p(truth[0]) else "converged"


INTERVALS = {"fit": ("elr_lo", "elr_hi"), "credible": ("cred_lo", "cred_hi")}


def measure(fit: Any, truth: tuple[float, float]) -> dict[str, list[float]]:
    """Per boundary and interval kind: width (decades; inf if absent), covers truth (0/1), and
    the estimate's |error| in decades."""
    out: dict[str, list[float]] = {"error": []}
    for kind in INTERVALS:
        out[f"{kind}_width"], out[f"{kind}_covers"] = [], []
    for (lower, upper), t in zip(PAIRS, truth):
        row = fit.boundary(lower, upper) if fit is not None else None
        out["error"].append(math.inf if row is None else abs(math.log10(row["elr"] / t)))
        for kind, (lo, hi) in INTERVALS.items():
            if row is None:
                out[f"{kind}_width"].append(math.inf)
                out[f"{kind}_covers"].append(0.0)
            else:
                out[f"{kind}_width"].append(math.log10(row[hi] / row[lo]))
                out[f"{kind}_covers"].append(float(row[lo] <= t <= row[hi]))
    return out


def run_search(truth: tuple[float, float], s: float, seed: int, max_trials: int
               ) -> dict[int, dict[str, list[float]]]:
    rng = np.random.default_rng(10_000 + seed)
    search = BoundarySearch({}, lo=LO, hi=HI, initial=INITIAL, max_trials=max_trials, seed=seed,
                            n_boot=N_BOOT)
    by_n: dict[int, dict[str, list[float]]] = {}
    for i in range(max_trials):
        config = search.suggest(f"t{i}")
        elr = config["optimizer"]["elr"]
        search.on_trial_complete(f"t{i}", {"regime": draw_regime(elr, truth, s, rng)})
        if i + 1 >= INITIAL:
            by_n[i + 1] = measure(search.boundaries(), truth)
    return by_n


def run_grid(truth: tuple[float, float], s: float, seed: int, max_trials: int
             ) -> dict[int, dict[str, list[float]]]:
    rng = np.random.default_rng(20_000 + seed)
    by_n: dict[int, dict[str, list[float]]] = {}
    for n in range(INITIAL, max_trials + 1):
        elrs = np.geomspace(LO, HI, n)
        regimes = [draw_regime(float(e), truth, s, rng) for e in elrs]
        by_n[n] = measure(fit_regime_thresholds(elrs, regimes, n_boot=N_BOOT, seed=seed + n),
                          truth)
    return by_n


def trials_needed(by_n: dict[int, dict[str, list[float]]], width: float, kind: str) -> float:
    """The first n from which both intervals stay at most ``width`` decades (inf if never)."""
    ok = [n for n, m in by_n.items() if max(m[f"{kind}_width"]) <= width]
    need = math.inf
    for n in sorted(by_n, reverse=True):  # "stay": a later wider interval resets the count
        if n in ok:
            need = n
        else:
            break
    return need


def spread(values: list[float]) -> tuple[float, float, float]:
    """Median, 25% and 75% percentiles; inf (absent / never) sorts last, as it should."""
    a = np.sort(np.asarray(values, float))
    # np.percentile interpolates inf - inf into NaN; nearest-rank needs no arithmetic.
    q = [a[min(len(a) - 1, int(round(p * (len(a) - 1))))] for p in (0.5, 0.25, 0.75)]
    return float(q[0]), float(q[1]), float(q[2])


def fmt(v: float, digits: int = 2) -> str:
    return "inf" if math.isinf(v) else f"{v:.{digits}f}"


def fmt_trials(v: float, max_trials: int) -> str:
    return f">{max_trials}" if math.isinf(v) else f"{v:.0f}"


def machine() -> dict[str, Any]:
    import pandas
    import ray
    import scipy

    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "numpy": np.__version__, "scipy": scipy.__version__,
            "pandas": pandas.__version__, "ray": ray.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--max-trials", type=int, default=40)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "boundary_search.json"))
    args = parser.parse_args(argv)
    info = machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"truth: thresholds {THRESHOLDS[0]:g} and {THRESHOLDS[1]:g} x 10**U(-0.25, 0.25) per "
          f"seed; ELR range [{LO:g}, {HI:g}]; {args.seeds} seeds; bootstrap {N_BOOT}; "
          f"median [25%, 75%] over seeds")
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": info, "seeds": args.seeds,
                               "max_trials": args.max_trials, "n_boot": N_BOOT,
                               "range": [LO, HI], "initial": INITIAL, "scenarios": {}}
    for name, s in SCENARIOS.items():
        runs: dict[str, list[dict[int, dict[str, list[float]]]]] = {"search": [], "grid": []}
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            truth = (THRESHOLDS[0] * 10 ** rng.uniform(-0.25, 0.25),
                     THRESHOLDS[1] * 10 ** rng.uniform(-0.25, 0.25))
            runs["search"].append(run_search(truth, s, seed, args.max_trials))
            runs["grid"].append(run_grid(truth, s, seed, args.max_trials))
        seconds = time.perf_counter() - t0
        print(f"\n== {name} boundary (width s = {s} decades), {seconds:.1f} s ==")
        table: list[dict[str, Any]] = []
        needed: list[dict[str, Any]] = []
        for kind in INTERVALS:
            lo_col, hi_col = INTERVALS[kind]
            print(f"{kind} interval ({lo_col}, {hi_col}): width in decades, coverage of the "
                  f"true thresholds, median |error| of the estimate in decades")
            print(f"{'trials':>6} {'method':<7} {'conv|chaotic width':<20} "
                  f"{'chaotic|div width':<20} {'covers':>11} {'|error|':>12}")
            for n in [v for v in SHOW_N if v <= args.max_trials]:
                for method, per_seed in runs.items():
                    widths = [[m[n][f"{kind}_width"][k] for m in per_seed] for k in range(2)]
                    covers = [float(np.mean([m[n][f"{kind}_covers"][k] for m in per_seed]))
                              for k in range(2)]
                    errors = [float(np.median([m[n]["error"][k] for m in per_seed]))
                              for k in range(2)]
                    w = [spread(v) for v in widths]
                    cells = [f"{fmt(a)} [{fmt(b)}, {fmt(c)}]" for a, b, c in w]
                    print(f"{n:>6} {method:<7} {cells[0]:<20} {cells[1]:<20} "
                          f"{covers[0]:>5.0%} {covers[1]:>5.0%} {fmt(errors[0]):>5} "
                          f"{fmt(errors[1]):>6}")
                    table.append({"interval": kind, "trials": n, "method": method,
                                  "width_decades": [{"median": a, "p25": b, "p75": c}
                                                    for a, b, c in w],
                                  "coverage": covers, "median_abs_error_decades": errors})
            print(f"trials until both {kind} intervals are at most w decades wide (and stay "
                  f"so), median [25%, 75%]:")
            for width in TARGETS:
                row: dict[str, Any] = {"interval": kind, "width_decades": width}
                parts = []
                for method, per_seed in runs.items():
                    med, p25, p75 = spread([trials_needed(m, width, kind) for m in per_seed])
                    row[method] = {"median": med, "p25": p25, "p75": p75}
                    parts.append(f"{method} {fmt_trials(med, args.max_trials):>4} "
                                 f"[{fmt_trials(p25, args.max_trials)}, "
                                 f"{fmt_trials(p75, args.max_trials)}]")
                needed.append(row)
                print(f"  w = {width:<5g} " + "   ".join(parts))
        results["scenarios"][name] = {"s_decades": s, "seconds": seconds, "table": table,
                                      "trials_needed": needed}
    total = time.perf_counter() - started
    results["seconds"] = total
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_finite(results), indent=1))
    print(f"\n{total:.1f} s in all; wrote {out}")
    return 0


def _finite(v: Any) -> Any:
    """JSON has no inf: None stands for 'never' / 'absent'."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


if __name__ == "__main__":
    raise SystemExit(main())
