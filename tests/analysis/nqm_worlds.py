"""LR searches on the noisy quadratic model, whose exact lr* is known, for the alpha coverage studies.

Unlike `alpha_worlds`, these curves do NOT share one shape across batch sizes: the loss of SGD
on the NQM depends on lr/b (the SDE regime) except near lr = 2 / h_max, where training
diverges whatever the batch size, so a large batch's curve is cut off closer to its peak; and
on the linear loss scale the far tails (losses up to 100x the best) outweigh the peak. The
truth is the least-squares slope of ln lr*(b) on ln b over the batch sizes searched, lr*(b)
from `tune_lip.studies.nqm_exact.exact_optimal_lr` (the closed-form expected loss).

A world: ``(budget, batch sizes, lr range)``; a search draws ``n_lr`` lrs per batch size
log-uniformly over the range (``design="random"``), or half of them log-uniformly and half within
1 ln unit of the exact optimum (``design="optuna"``: a searcher that found the basin). The
trial's metric is the exact expected loss times exp(noise · N(0, 1)); a run that diverges
reports ``diverged`` and a worst value of 1e6.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from tune_lip.analysis import fit_lr_scaling
from tune_lip.studies.nqm import NQMConfig
from tune_lip.studies.nqm_exact import exact_optimal_lr, expected_loss_sgd

BUDGETS = ({"examples": 4096}, {"examples": 16384}, {"examples": 65536}, {"steps": 1000})
SIZES = ((1, 4, 16), (2, 4, 8, 16, 32))
RANGES = ((5e-4, 2.0), (1e-3, 4.0))
WORLDS = [(budget, sizes, lrs) for budget in BUDGETS for sizes in SIZES for lrs in RANGES]


def config(budget: dict[str, int]) -> NQMConfig:
    """The NQM of the shipped NQM spaces: 100 curvatures i^-1, gradient noise covariance H."""
    return NQMConfig.from_dict({"dim": 100, "power": 1.0, "noise": 1.0, "budget": dict(budget),
                                "optimizer": {"name": "sgd", "lr": 0.1}, "schedule": "constant"})


@cache
def _exact(budget_items: tuple[tuple[str, int], ...], b: int) -> float:
    return exact_optimal_lr(config(dict(budget_items)), b)


def exact_lr_star(budget: dict[str, int], b: int) -> float:
    """The exact lr* at batch size ``b`` (cached: a Brent search on the closed form)."""
    return _exact(tuple(sorted(budget.items())), b)


def true_alpha(budget: dict[str, int], sizes: tuple[int, ...]) -> float:
    """The least-squares slope of ln lr* on ln b over ``sizes``."""
    return float(np.polyfit(np.log(sizes), np.log([exact_lr_star(budget, b) for b in sizes]), 1)[0])


def search(budget: dict[str, int], sizes: tuple[int, ...], lr_range: tuple[float, float],
           rng: np.random.Generator, *, n_lr: int = 12, noise: float = 0.0,
           design: str = "random") -> pd.DataFrame:
    """One search's trials as `fit_lr_scaling` reads them (metric ``loss``, mode min)."""
    cfg = config(budget)
    lo, hi = np.log(lr_range)
    rows = []
    for b in sizes:
        x = rng.uniform(lo, hi, n_lr)
        if design == "optuna":
            near = np.log(exact_lr_star(budget, b)) + rng.uniform(-1.0, 1.0, n_lr - n_lr // 2)
            x = np.concatenate([x[: n_lr // 2], np.clip(near, lo, hi)])
        lrs = np.exp(x)
        loss = expected_loss_sgd(cfg, lrs, b) * np.exp(noise * rng.standard_normal(n_lr))
        for i, (lr, value) in enumerate(zip(lrs, loss)):
            diverged = bool(not np.isfinite(value) or value > 1e5)
            rows.append({"trial_id": f"{b}-{i}", "training_iteration": 1, "config/reports": 1,
                         "config/dataset/batch_size": b, "config/optimizer/lr": float(lr),
                         "diverged": diverged, "loss": 1e6 if diverged else float(value)})
    return pd.DataFrame(rows)


def coverage(design: str, noise: float, reps: int, seed: int = 0) -> dict[str, Any]:
    """``reps`` searches per world through `fit_lr_scaling`: coverage of alpha's interval and of each
    uncensored batch size's lr* interval, the share of fits claiming a rule (sqrt, linear, other) on
    an interval that misses the truth, alpha's median interval width and |alpha-hat - truth|."""
    rng = np.random.default_rng(seed)
    alpha_hits, batch_hits, widths, errors, wrong, verdicts = [], [], [], [], 0, {}
    for budget, sizes, lrs in WORLDS:
        truth = true_alpha(budget, sizes)
        for _ in range(reps):
            fit = fit_lr_scaling(search(budget, sizes, lrs, rng, noise=noise, design=design),
                                 metric="loss", mode="min", n_boot=1)
            lo, hi = fit.alpha_ci
            alpha_hits.append(lo <= truth <= hi)
            widths.append(hi - lo)
            errors.append(abs(fit.alpha - truth))
            wrong += fit.verdict in ("sqrt", "linear", "other") and not lo <= truth <= hi
            verdicts[fit.verdict] = verdicts.get(fit.verdict, 0) + 1
            batch_hits += [row.lr_star_lo <= exact_lr_star(budget, int(row.batch_size)) <= row.lr_star_hi
                           for row in fit.per_batch.itertuples() if not row.at_edge]
    return {"design": design, "noise": noise, "fits": len(alpha_hits), "alpha_coverage": float(np.mean(alpha_hits)),
            "lr_star_coverage": float(np.mean(batch_hits)), "wrong_rules": wrong / len(alpha_hits),
            "median_width": float(np.median(widths)), "median_abs_error": float(np.median(errors)),
            "verdicts": verdicts}
