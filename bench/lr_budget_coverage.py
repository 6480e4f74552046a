"""Coverage of fit_lr_budget's intervals (alpha, beta, the interaction gamma) and its verdict.

Worlds: `tests/analysis/budget_worlds.py` (one fixed lr grid [0.003, 3], 12 lrs, for every cell;
asymmetric curves with a divergence cliff whose width grows with the budget, or symmetric ones).
Per world: coverage of the 95% intervals, mean bias, median widths, and how often the verdict says
"the batch exponent changes with budget". Writes bench/results/lr_budget_coverage.json.

Run: .venv/bin/python bench/lr_budget_coverage.py [replications, default 100]
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "analysis"))
from budget_worlds import budget_world  # noqa: E402

from tune_lip.analysis.lr_budget import fit_lr_budget  # noqa: E402

WIDE = {"sizes": (16, 32, 64, 128, 256, 512, 1024, 2048), "budgets": (1000, 2000, 4000, 8000)}
SMALL = {"sizes": (64, 256, 1024), "budgets": (1000, 8000)}
WORLDS = [
    ("4x3 asym a=0.5 b=-0.3 noise=0.01", 0.5, -0.3, 0.0, {}),
    ("4x3 asym a=1 b=0 noise=0.03", 1.0, 0.0, 0.0, {"noise": 0.03}),
    ("4x3 sym a=0.5 b=-0.5 noise=0.02 fixed width", 0.5, -0.5, 0.0,
     {"shape": "sym", "noise": 0.02, "widen": 0.0}),
    ("4x3 asym a=0.5 b=-0.3 gamma=0.15 (alpha changes)", 0.5, -0.3, 0.15, {}),
    ("4x3 asym a=0.5 b=-0.3 gamma=0.05 (alpha changes a little)", 0.5, -0.3, 0.05, {}),
    ("8x4 asym a=0.5 b=-0.3 noise=0.02", 0.5, -0.3, 0.0, {"noise": 0.02, **WIDE}),
    ("3x2 asym a=1 b=-0.5 noise=0.01", 1.0, -0.5, 0.0, SMALL),
]


def run(name: str, alpha: float, beta: float, gamma: float, options: dict, reps: int,
        seed: int) -> dict:
    rng = np.random.default_rng(seed)
    a_est, b_est, cov, width, changes = [], [], {"alpha": [], "beta": [], "gamma": []}, \
        {"alpha": [], "beta": []}, []
    start = time.perf_counter()
    for _ in range(reps):
        f = fit_lr_budget(budget_world(alpha, beta, rng, gamma=gamma, **options), metric="acc",
                          mode="max")
        a_est.append(f.alpha)
        b_est.append(f.beta)
        for key, truth, ci in (("alpha", alpha, f.alpha_ci), ("beta", beta, f.beta_ci),
                               ("gamma", gamma, f.gamma_ci)):
            cov[key].append(ci[0] <= truth <= ci[1])
        width["alpha"].append(f.alpha_ci[1] - f.alpha_ci[0])
        width["beta"].append(f.beta_ci[1] - f.beta_ci[0])
        changes.append(f.verdict == "changes")
    # alpha of the joint law is the batch exponent at the geometric mean budget (centred design)
    return {"world": name, "alpha": alpha, "beta": beta, "gamma": gamma, "reps": reps,
            "coverage": {k: float(np.mean(v)) for k, v in cov.items()},
            "bias": {"alpha": float(np.mean(a_est) - alpha), "beta": float(np.mean(b_est) - beta)},
            "median_width": {k: float(np.median(v)) for k, v in width.items()},
            "says_alpha_changes": float(np.mean(changes)),
            "seconds_per_fit": (time.perf_counter() - start) / reps}


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    results = []
    for i, (name, a, b, g, options) in enumerate(WORLDS):
        r = run(name, a, b, g, options, reps, seed=100 + i)
        results.append(r)
        print(json.dumps(r), flush=True)
    out = {"machine": platform.machine(), "python": platform.python_version(),
           "numpy": np.__version__, "scipy": scipy.__version__, "reps": reps, "worlds": results}
    path = ROOT / "bench" / "results" / "lr_budget_coverage.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
