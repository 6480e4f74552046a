"""`tune-lip analyze lr-scaling` on a search whose budget varies and whose trials report gradient
noise statistics, as a user runs it (a subprocess on fabricated results: no Ray run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from helpers import TUNE_LIP

sys.path.insert(0, str(Path(__file__).parent / "analysis"))
from budget_worlds import budget_world  # noqa: E402

from tune_lip.tune.callbacks import ParquetResultsCallback  # noqa: E402


def _experiment(path: Path) -> Path:
    df = budget_world(0.5, -0.3, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    callback = ParquetResultsCallback(path)
    i = 0
    for r in df.to_dict("records"):
        for it in (1, 2):
            i += 1
            result = {"trial_id": r["trial_id"], "training_iteration": it, "done": it == 2,
                      "steps": r["config/budget/steps"] * it // 2, "acc": r["acc"] - 0.1 * (2 - it),
                      "diverged": False, "grad_norm_sq": (3 - it) * (1 + 0.3 * rng.standard_normal()),
                      "grad_noise": 40.0 * (1 + 0.1 * rng.standard_normal()),
                      "config": {"reports": 2, "budget": {"steps": r["config/budget/steps"]},
                                 "dataset": {"batch_size": r["config/dataset/batch_size"]},
                                 "optimizer": {"lr": r["config/optimizer/lr"]}}}
            callback.on_trial_result(iteration=i, trials=[], trial=None, result=result)
    callback.on_experiment_end(trials=[])
    return path


def test_analyze_lr_scaling_fits_the_joint_law_when_the_budget_varies(tmp_path):
    exp = _experiment(tmp_path / "exp")
    out = subprocess.run([*TUNE_LIP, "analyze", "lr-scaling", str(exp), "--metric", "acc", "--mode", "max"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    text = out.stdout
    assert "[1000]" in text and "[16000]" in text and "[budget law]" in text   # a fit per budget, then the law
    assert "alpha (batch size) =" in text and "beta (steps) =" in text and "verdict:" in text
    assert "gradient noise scale B_noise" in text and "no critical batch size to compare" in text
    assert (exp / "plots" / "lr_budget.png").exists()
    alpha = float(text.split("alpha (batch size) = ")[1].split(",")[0])
    assert abs(alpha - 0.5) < 0.1
