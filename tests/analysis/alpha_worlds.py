"""Synthetic lr x batch-size searches with a known exponent, for the alpha coverage studies.

A world: lr*(b) = LR_MID · (b / B_MID)**alpha (flat above ``break_at``), every batch size
searched on ONE fixed lr grid (as shipped spaces do), the metric a peaked curve in
u = ln(lr / lr*(b)) between a floor of 0.1 and a top of 0.9 (minus ``drop`` from the smallest to the largest batch size).

- ``shape="sym"``: a Gaussian bump, ln-width 1.5 on both sides.
- ``shape="asym"``: gentle below lr* (ln-width 2.0), steep above (0.7), and a divergence cliff
  at u > 1.2: those trials report the floor exactly (the worst value; ``diverged`` is left
  False half the time, so the fit must see the floor by itself).
- ``noise``: sd as a fraction of the metric's range (0.8); ``hetero=True`` makes it grow from
  0.5x at the peak to 2x at the floor.
- ``seeds``: replicates per (lr, b); ``seed_sd``: sd of a per-(seed, b) shift of lr* in ln units
  (seeds that disagree about where the optimum is).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SIZES = (16, 32, 64, 128, 256, 512, 1024, 2048)
LRS = tuple(np.geomspace(0.003, 3.0, 12))
B_MID = float(np.sqrt(SIZES[0] * SIZES[-1]))
LR_MID = float(np.sqrt(LRS[0] * LRS[-1]))
TOP, FLOOR = 0.9, 0.1


def curve(u: np.ndarray, shape: str) -> np.ndarray:
    """The metric's fraction of its range at u = ln(lr / lr*) (1 at the peak)."""
    if shape == "sym":
        return np.exp(-0.5 * (u / 1.5) ** 2)
    width = np.where(u < 0, 2.0, 0.7)
    out = np.exp(-0.5 * (u / width) ** 2)
    return np.where(u > 1.2, 0.0, out)


def world(alpha: float, rng: np.random.Generator, *, shape: str = "asym", noise: float = 0.01,
          hetero: bool = False, sizes: tuple[int, ...] = SIZES, lrs: tuple[float, ...] = LRS,
          seeds: int = 1, seed_sd: float = 0.0, break_at: float | None = None,
          drop: float = 0.05) -> pd.DataFrame:
    """One search as `fit_lr_scaling` reads it (one report per trial)."""
    b = np.asarray(sizes, float)
    eff = np.minimum(b, break_at) if break_at else b
    star = LR_MID * (eff / B_MID) ** alpha  # (n_b,)
    lr = np.asarray(lrs, float)
    nb, nl = b.size, lr.size
    shift = rng.normal(0.0, seed_sd, (seeds, nb, 1)) if seed_sd else np.zeros((seeds, nb, 1))
    u = np.log(lr)[None, None, :] - np.log(star)[None, :, None] - shift  # (seeds, n_b, n_lr)
    frac = curve(u, shape)
    top = TOP - drop * np.arange(nb)[None, :, None] / max(nb - 1, 1)
    clean = FLOOR + (top - FLOOR) * frac
    sd = noise * (TOP - FLOOR) * ((0.5 + 1.5 * (1 - frac)) if hetero else 1.0)
    value = clean + sd * rng.standard_normal(u.shape)
    cliff = (frac == 0.0) & (u > 0)
    value = np.where(cliff, FLOOR, value)
    flagged = cliff & (rng.random() < 0.5)
    s_i, b_i, l_i = np.meshgrid(np.arange(seeds), np.arange(nb), np.arange(nl), indexing="ij")
    return pd.DataFrame({
        "trial_id": [f"{s}-{j}-{i}" for s, j, i in zip(s_i.ravel(), b_i.ravel(), l_i.ravel())],
        "config/optimizer/lr": lr[l_i.ravel()], "config/dataset/batch_size": b[b_i.ravel()],
        "config/seed": s_i.ravel(), "acc": value.ravel(), "diverged": flagged.ravel(),
    })
