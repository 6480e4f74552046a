"""Coverage of fit_lr_scaling on the noisy quadratic model, where the curves do not share one shape.

Worlds: `tests/analysis/nqm_worlds.py` (4 budgets x 2 batch-size sets x 2 lr ranges; the exact
lr* from the closed-form expected loss). Designs: ``random`` (12 log-uniform lrs per batch size)
and ``optuna`` (6 log-uniform, 6 within 1 ln unit of the optimum); noise 0 (exact losses) and 3%
multiplicative. Per design: coverage of alpha's 95% interval, of each batch size's lr* interval
(uncensored ones), the share of fits that claim a rule (sqrt, linear, other) on an interval that
misses the truth, the median width of alpha's interval and the median |alpha-hat - truth|. Writes bench/results/lr_scaling_nqm.json.

Run: .venv/bin/python bench/lr_scaling_nqm.py [replications per world, default 20]
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "analysis"))
from nqm_worlds import coverage  # noqa: E402


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    start = time.time()
    rows = [coverage(d, n, reps) for d in ("random", "optuna") for n in (0.0, 0.03)]
    for r in rows:
        print(f"{r['design']:>7} noise {r['noise']:.2f}: {r['fits']} fits, alpha coverage {r['alpha_coverage']:.3f}, "
              f"lr* coverage {r['lr_star_coverage']:.3f}, wrong rules {r['wrong_rules']:.3f}, "
              f"median width {r['median_width']:.3f}, median |alpha - truth| {r['median_abs_error']:.3f}, verdicts {r['verdicts']}")
    out = ROOT / "bench" / "results" / "lr_scaling_nqm.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "replications": reps, "seconds": time.time() - start,
                               "machine": platform.platform(), "python": platform.python_version(),
                               "numpy": np.__version__}, indent=2))
    print(f"wrote {out} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
