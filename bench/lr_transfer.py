"""LR transfer (`LRTransferSearch`) vs per-batch-size Optuna TPE vs a dense grid, on the exact NQM.

Usage: ``python bench/lr_transfer.py [--seeds 5] [--out bench/results/lr_transfer.json]``

World: the noisy quadratic model (dim 100, curvatures i^-1, noise 1.0 H), plain SGD with a
constant LR, the *exact* expected final loss (`expected_loss_sgd`: no noise, microseconds a
trial), batch sizes 8 .. 4096, LR range 1e-4 .. 10, two budgets:

* ``examples``: 2^16 examples (steps = 2^16 / b): lr* ~ b at small b, flattening at the critical
  batch size;
* ``steps``: 1000 steps at every batch size (lr* grows much more slowly, alpha well below 1).

Truth: `exact_optimal_lr` (a Brent search on the exact loss). The searchers run offline (no
Ray), one trial at a time, with fabricated results (a diverged trial reports a finite worst
loss with ``diverged=True``). Compute: the sum over trials of the examples a trial trains on
(steps x batch size). Reported per method:

* trials / compute until every batch size's best-so-far LR is within 10% of the exact lr*
  (Optuna: TPE per batch size, round robin, at most ``OPTUNA_CAP`` trials per batch size;
  "never" if it did not get there);
* lr_transfer (tolerance 0.1, and 0.02): the trials it runs to its own end (every lr* bracketed), and its
  largest error against the exact lr*;
* the loss at the chosen LR relative to the grid's best loss at each batch size (worst over b);
* the fraction of the dense grid's compute (``GRID`` log-spaced LRs per batch size).
Median and range over ``--seeds`` seeds (lr_transfer's seed moves its anchors' start points).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from tune_lip.studies.nqm import NQMConfig
from tune_lip.studies.nqm_exact import exact_optimal_lr, expected_loss_sgd
from tune_lip.tune.lr_transfer import LRTransferSearch
from tune_lip.tune.spec import Grid, LogUniform

BATCHES = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
LR_RANGE = (1e-4, 10.0)
GRID = 60            # LRs per batch size of the dense grid (21% apart)
OPTUNA_CAP = 60      # trials per batch size for Optuna
TOL = 0.1
WORST = 1e10         # the finite loss a diverged trial reports
BUDGETS = {"examples": {"examples": 2 ** 16}, "steps": {"steps": 1000}}


def _cfg(budget: dict[str, int]) -> NQMConfig:
    return NQMConfig.from_dict({"dim": 100, "power": 1.0, "noise": 1.0, "budget": budget,
                                "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.0}})


def _loss(cfg: NQMConfig, lr: float, b: int) -> float:
    value = float(expected_loss_sgd(cfg, lr, b))
    return value if math.isfinite(value) else WORST


def _examples(cfg: NQMConfig, b: int) -> int:
    return cfg.total_steps(b) * b


def _summary(xs: list[float]) -> dict[str, float]:
    return {"median": float(np.median(xs)), "min": float(np.min(xs)), "max": float(np.max(xs))}


def run_transfer(cfg: NQMConfig, truth: dict[int, float], grid_best: dict[int, float], seed: int,
                 tolerance: float = TOL) -> dict[str, Any]:
    space = {"optimizer": {"lr": LogUniform(*LR_RANGE)}, "dataset": {"batch_size": Grid(BATCHES)}}
    s = LRTransferSearch(space, per=["dataset.batch_size"], key="optimizer.lr", samples_per_group=40,
                         metric="loss", mode="min", tolerance=tolerance, seed=seed)
    n, compute, reached = 0, 0, None
    while (config := s.suggest(f"t{n}")) != s.FINISHED:
        assert config is not None
        b, lr = config["dataset"]["batch_size"], config["optimizer"]["lr"]
        value = _loss(cfg, lr, b)
        s.on_trial_complete(f"t{n}", {"loss": value, "diverged": value >= WORST,
                                      "training_iteration": 1, "config": {"reports": 1}})
        n += 1
        compute += _examples(cfg, b)
        best = dict((g["dataset.batch_size"], x) for g, x in s.best_configs())
        if reached is None and all(best[b] is not None and abs(best[b] / truth[b] - 1) <= TOL for b in BATCHES):
            reached = (n, compute)
    chosen = dict((g["dataset.batch_size"], x) for g, x in s.best_configs())
    return {"trials": n, "compute": compute, "reached": reached,
            "max_lr_error": max(abs(chosen[b] / truth[b] - 1) for b in BATCHES),
            "max_loss_excess": max(_loss(cfg, chosen[b], b) / grid_best[b] - 1 for b in BATCHES)}


def run_optuna(cfg: NQMConfig, truth: dict[int, float], grid_best: dict[int, float], seed: int) -> dict[str, Any]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = {b: optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed + i, n_startup_trials=5))
               for i, b in enumerate(BATCHES)}
    dist = {"lr": optuna.distributions.FloatDistribution(*LR_RANGE, log=True)}
    n, compute, reached = 0, 0, None
    for _ in range(OPTUNA_CAP):
        for b in BATCHES:
            trial = studies[b].ask(dist)
            studies[b].tell(trial, _loss(cfg, trial.params["lr"], b))
            n += 1
            compute += _examples(cfg, b)
        if reached is None and all(abs(studies[b].best_params["lr"] / truth[b] - 1) <= TOL for b in BATCHES):
            reached = (n, compute)   # checked once per round: at most len(BATCHES) - 1 trials late
    chosen = {b: studies[b].best_params["lr"] for b in BATCHES}
    return {"trials": n, "compute": compute, "reached": reached,
            "max_lr_error": max(abs(chosen[b] / truth[b] - 1) for b in BATCHES),
            "max_loss_excess": max(_loss(cfg, chosen[b], b) / grid_best[b] - 1 for b in BATCHES)}


METHODS: list[tuple[str, Any, dict[str, Any]]] = [
    ("lr_transfer", run_transfer, {}),
    ("lr_transfer_tol0.02", run_transfer, {"tolerance": 0.02}),   # for a loss within ~0.1% of the grid's
    ("optuna", run_optuna, {}),
]


def bench(seeds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, budget in BUDGETS.items():
        cfg = _cfg(budget)
        truth = {b: exact_optimal_lr(cfg, b, lr_range=LR_RANGE) for b in BATCHES}
        lrs = np.geomspace(*LR_RANGE, GRID)
        grid_losses = {b: np.array([_loss(cfg, lr, b) for lr in lrs]) for b in BATCHES}
        grid_best = {b: float(grid_losses[b].min()) for b in BATCHES}
        grid_choice = {b: float(lrs[int(np.argmin(grid_losses[b]))]) for b in BATCHES}
        grid_compute = GRID * sum(_examples(cfg, b) for b in BATCHES)
        row: dict[str, Any] = {
            "lr_star": {str(b): truth[b] for b in BATCHES},
            "alpha_small_b": float(np.polyfit(np.log(BATCHES[:4]), np.log([truth[b] for b in BATCHES[:4]]), 1)[0]),
            "grid": {"trials": GRID * len(BATCHES), "compute": grid_compute,
                     "max_lr_error": max(abs(grid_choice[b] / truth[b] - 1) for b in BATCHES)},
        }
        for method, fn, kw in METHODS:
            t0 = time.perf_counter()
            runs = [fn(cfg, truth, grid_best, seed, **kw) for seed in range(seeds)]
            reached = [r["reached"] for r in runs if r["reached"] is not None]
            row[method] = {
                "runs": runs, "wall_seconds": time.perf_counter() - t0,
                "reached_within_10pct": f"{len(reached)}/{seeds}",
                "trials_to_10pct": _summary([t for t, _ in reached]) if reached else None,
                "compute_fraction_of_grid_to_10pct": _summary([c / grid_compute for _, c in reached]) if reached else None,
                "trials_total": _summary([r["trials"] for r in runs]),
                "compute_fraction_of_grid_total": _summary([r["compute"] / grid_compute for r in runs]),
                "max_lr_error": _summary([r["max_lr_error"] for r in runs]),
                "max_loss_excess_vs_grid_best": _summary([r["max_loss_excess"] for r in runs]),
            }
        out[name] = row
    return out


def _table(result: dict[str, Any]) -> str:
    lines = [f"{'budget':9} {'method':20} {'reached':8} {'trials→10%':>11} {'compute→10%':>12} "
             f"{'trials end':>10} {'compute end':>11} {'max lr err':>10} {'max loss excess':>16}"]
    for name, row in result.items():
        for method, _, _ in METHODS:
            r = row[method]
            t10 = r["trials_to_10pct"]["median"] if r["trials_to_10pct"] else float("nan")
            c10 = r["compute_fraction_of_grid_to_10pct"]["median"] if r["trials_to_10pct"] else float("nan")
            lines.append(f"{name:9} {method:20} {r['reached_within_10pct']:8} {t10:11.0f} {c10:12.3f} "
                         f"{r['trials_total']['median']:10.0f} {r['compute_fraction_of_grid_total']['median']:11.3f} "
                         f"{r['max_lr_error']['median']:10.3f} {r['max_loss_excess_vs_grid_best']['median']:16.2e}")
        g = row["grid"]
        lines.append(f"{name:9} {'grid':20} {'-':8} {'':11} {'':12} {g['trials']:10d} {1.0:11.3f} "
                     f"{g['max_lr_error']:10.3f} {0.0:16.2e}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default="bench/results/lr_transfer.json")
    args = parser.parse_args()
    t0 = time.perf_counter()
    result = bench(args.seeds)
    print(_table(result))
    meta = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "python": platform.python_version(),
            "optuna": optuna.__version__, "numpy": np.__version__, "seeds": args.seeds,
            "wall_seconds": time.perf_counter() - t0, "batch_sizes": list(BATCHES), "grid_lrs": GRID,
            "lr_range": list(LR_RANGE), "optuna_cap_per_batch": OPTUNA_CAP,
            "compute": "sum over trials of steps x batch size (examples trained on)"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "results": result}, indent=1))
    print(f"wrote {args.out} in {meta['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
