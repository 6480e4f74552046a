"""Synthetic lr x batch-size x budget searches with a known joint law, for `fit_lr_budget`.

lr*(b, D) = LR_MID · (b / B_MID)**alpha · (D / D_MID)**(beta + gamma · ln(b / B_MID)), every cell
searched on ONE fixed lr grid, the metric the `alpha_worlds.curve` shape in u = ln(lr / lr*)
(asymmetric with a divergence cliff by default), its width growing by ``widen`` per e-fold of D
and its top rising with D (a longer run reaches a better metric), plus noise (fraction of the
metric's range).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from alpha_worlds import FLOOR, LRS, curve  # noqa: E402

SIZES = (16, 64, 256, 1024)
BUDGETS = (1000, 4000, 16000)
B_MID = float(np.sqrt(SIZES[0] * SIZES[-1]))
D_MID = float(np.sqrt(BUDGETS[0] * BUDGETS[-1]))
LR_MID = float(np.sqrt(LRS[0] * LRS[-1]))


def budget_world(alpha: float, beta: float, rng: np.random.Generator, *, gamma: float = 0.0,
                 shape: str = "asym", noise: float = 0.01, widen: float = 0.1,
                 sizes: tuple[int, ...] = SIZES, budgets: tuple[int, ...] = BUDGETS,
                 lrs: tuple[float, ...] = LRS) -> pd.DataFrame:
    """One search as `fit_lr_budget` reads it: config/budget/steps varies, one report per trial."""
    rows = []
    lr = np.asarray(lrs, float)
    for d in budgets:
        ld = np.log(d / D_MID)
        for j, b in enumerate(sizes):
            lb = np.log(b / B_MID)
            star = LR_MID * np.exp(alpha * lb + (beta + gamma * lb) * ld)
            u = np.log(lr / star) / np.exp(widen * ld)
            frac = curve(u, shape)
            top = 0.8 + 0.05 * ld - 0.05 * j / max(len(sizes) - 1, 1)
            value = FLOOR + (top - FLOOR) * frac + noise * 0.8 * rng.standard_normal(lr.size)
            value = np.where((frac == 0.0) & (u > 0), FLOOR, value)
            for i in range(lr.size):
                rows.append({"trial_id": f"{d}-{b}-{i}", "config/budget/steps": d,
                             "config/dataset/batch_size": b, "config/optimizer/lr": lr[i],
                             "acc": value[i], "diverged": False})
    return pd.DataFrame(rows)
