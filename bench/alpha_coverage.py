"""Coverage of fit_lr_scaling's alpha interval and goodness of fit on synthetic worlds.

Worlds: `tests/analysis/alpha_worlds.py` (one fixed lr grid for every batch size, symmetric and
asymmetric curves with a divergence cliff, homo- and heteroscedastic noise, replicate seeds that
disagree, the small 3 x 8 design, a critical batch size). Per world: coverage of the 95%
interval, mean bias of alpha-hat, median width, share of replications where the goodness of fit
rejects (p < 0.05), and the verdicts. Writes bench/results/alpha_coverage.json.

Run: .venv/bin/python bench/alpha_coverage.py [replications, default 200]
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import scipy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "analysis"))
from alpha_worlds import world  # noqa: E402

from tune_lip.analysis import fit_lr_scaling  # noqa: E402

SMALL = {"sizes": (64, 256, 1024), "lrs": tuple(np.geomspace(0.003, 3, 8))}
WORLDS = [
    (f"{shape} a={a} noise={n}{' hetero' if h else ''}", a, {"shape": shape, "noise": n, "hetero": h})
    for shape in ("sym", "asym") for a in (0.5, 1.0) for n, h in ((0.01, False), (0.03, True))
] + [
    ("asym a=0.5 noise=0.02 3 seeds disagree (0.3 ln)", 0.5,
     {"shape": "asym", "noise": 0.02, "seeds": 3, "seed_sd": 0.3}),
    ("asym a=1 noise=0.01 peak drops 0.3 with b", 1.0, {"shape": "asym", "noise": 0.01, "drop": 0.3}),
    ("small 3x8 asym a=0.5 noise=0.01", 0.5, {"shape": "asym", "noise": 0.01, **SMALL}),
    ("small 3x8 sym a=1 noise=0.03", 1.0, {"shape": "sym", "noise": 0.03, **SMALL}),
]


def run(name: str, alpha: float, options: dict, reps: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    est, cov, width, rej, verdicts = [], [], [], [], Counter()
    start = time.perf_counter()
    for _ in range(reps):
        f = fit_lr_scaling(world(alpha, rng, **options), metric="acc", mode="max", n_boot=20)
        lo, hi = f.single_alpha_ci
        est.append(f.single_alpha)
        cov.append(lo <= alpha <= hi)
        width.append(hi - lo)
        rej.append(f.fit_p < 0.05)
        verdicts[f.verdict] += 1
    return {"world": name, "alpha": alpha, "reps": reps, "coverage": float(np.mean(cov)),
            "bias": float(np.mean(est) - alpha), "median_width": float(np.median(width)),
            "gof_rejections": float(np.mean(rej)), "verdicts": dict(verdicts),
            "seconds_per_fit": (time.perf_counter() - start) / reps}


BREAK_WORLDS = [  # (name, alpha, b_c, world options)
    ("asym a=1 noise=0.01 flat above b_c=256 (a batch size tried)", 1.0, 256.0,
     {"shape": "asym", "noise": 0.01}),
    ("asym a=1 noise=0.01 flat above b_c=300", 1.0, 300.0, {"shape": "asym", "noise": 0.01}),
    ("asym a=1 noise=0.01 flat above b_c=90", 1.0, 90.0, {"shape": "asym", "noise": 0.01}),
    ("sym a=0.5 noise=0.03 flat above b_c=600", 0.5, 600.0, {"shape": "sym", "noise": 0.03}),
    ("asym a=1 noise=0.02 hetero, 2 seeds disagree (0.2 ln), b_c=256", 1.0, 256.0,
     {"shape": "asym", "noise": 0.02, "hetero": True, "seeds": 2, "seed_sd": 0.2}),
]


def run_break(name: str, alpha: float, b_c: float, opts: dict, reps: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    found = covered = cov_alpha = 0
    widths, alpha_widths, est = [], [], []
    for _ in range(reps):
        f = fit_lr_scaling(world(alpha, rng, break_at=b_c, **opts), metric="acc", mode="max",
                           n_boot=20)
        if f.batch_break_ci is not None:
            found += 1
            lo, hi = f.batch_break_ci
            covered += lo <= b_c <= hi
            cov_alpha += f.alpha_ci[0] <= alpha <= f.alpha_ci[1]
            widths.append(np.log(hi / lo))
            alpha_widths.append(f.alpha_ci[1] - f.alpha_ci[0])
            est.append(f.alpha)
    return {"world": name, "reps": reps, "break_reported": found / reps,
            "break_ci_covers": covered / max(found, 1),
            "break_ln_width": float(np.median(widths)) if widths else None,
            "alpha_below_covers": cov_alpha / max(found, 1),
            "alpha_below_bias": float(np.mean(est) - alpha) if est else None,
            "alpha_below_width": float(np.median(alpha_widths)) if alpha_widths else None}


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    start = time.perf_counter()
    rows = [run(name, a, opts, reps, seed=i) for i, (name, a, opts) in enumerate(WORLDS)]
    for r in rows:
        print(f"{r['world']:<48} cov {r['coverage']:.3f}  bias {r['bias']:+.4f}  "
              f"width {r['median_width']:.3f}  GOF rej {r['gof_rejections']:.3f}  {r['verdicts']}")
    brk = [run_break(name, a, b_c, opts, max(reps // 5, 10), seed=99 + i)
           for i, (name, a, b_c, opts) in enumerate(BREAK_WORLDS)]
    for r in brk:
        print(r)
    out = {"machine": f"{platform.machine()}, {platform.system()} {platform.release()}",
           "python": platform.python_version(), "numpy": np.__version__,
           "scipy": scipy.__version__, "seconds": time.perf_counter() - start,
           "worlds": rows, "break": brk}
    path = ROOT / "bench" / "results" / "alpha_coverage.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"{out['seconds']:.0f} s; written {path}")


if __name__ == "__main__":
    main()
