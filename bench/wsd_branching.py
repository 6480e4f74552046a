"""WSD branching against plain ASHA with OneCycle (issue 16 item 1): which LR does each pick?

ASHA judges a trial at each rung by its metric so far. Under OneCycle the LR at a rung is still
high (or still warming up), so the interim metric predicts the end-of-budget one poorly. With a
wsd schedule and branching (`tune_lip.studies.loop.train_to_branch`) each rung reports an
annealed model: a cooldown forked from the constant-LR main line, equal to a fresh run of the
rung's budget. This bench compares, per setting:

- ``grid_wsd``: the full grid of fully trained wsd runs (reference lr*);
- ``asha_wsd``: successive halving on the branched rung metrics of the same configs;
- ``grid_oc``: the full grid of fully trained OneCycle runs;
- ``asha_oc``: successive halving on the OneCycle runs' interim metrics at the same rungs.

ASHA's decisions are simulated offline from the per-report metrics of *every* config (synchronous
successive halving: at each rung keep the best ceil(n/rf); the final rung picks the best
survivor), rungs at grace 0.1 and reduction factor 3 (10%, 30%, 90% of the budget), as
``scheduler: {name: asha, grace_fraction: 0.1, reduction_factor: 3}`` places them. The real
Ray Tune path is exercised by tests/test_cli_flow.py on ``search_spaces/nqm_sgd_wsd_asha.yaml``.
Compute is charged steps (the branched trials' cooldowns included) relative to the full grid.

NQM (exact expected loss, SGD, dim 100, noise 1, 1000 steps, batch sizes 4/32/256): each seed
draws 27 log-uniform LRs in [0.01, 3]; the metric is the final (annealed) expected loss. Also
lr* at each rung budget from the branched runs of a dense grid (one search: lr* at 100, 300,
900 and 1000 steps), and the same with a single rung at a third of the budget. AOL-MLP/digits (the demo model, 240 steps at batch 32, 8 LRs):
seeds 0-2; the metric is ``val_loss`` (val_certified_acc on 144 images is too coarse to rank 8 configs).

Run: ``.venv/bin/python bench/wsd_branching.py [--quick]``; JSON to bench/results/wsd_branching.json.
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
import torch

from tune_lip.studies.budget import branch_horizons
from tune_lip.studies.loop import train_to_branch

RUNGS = (0.1, 0.3, 0.9)
RF = 3.0
OUT = Path(__file__).parent / "results" / "wsd_branching.json"


def successive_halving(curves: dict[float, list[float]], charged: dict[float, list[int]]) -> tuple[float, int]:
    """(chosen lr, steps charged) of synchronous successive halving (mode min) over ``curves``:
    lr -> metric at each report (the last is the full budget); charged: steps spent up to each."""
    alive = sorted(curves)
    reports = len(next(iter(curves.values())))
    cost = 0
    for i in range(reports - 1):
        keep = max(1, math.ceil(len(alive) / RF))
        ranked = sorted(alive, key=lambda lr: curves[lr][i])
        cost += sum(charged[lr][i] for lr in ranked[keep:])    # stopped here
        alive = ranked[:keep]
    cost += sum(charged[lr][-1] for lr in alive)
    return min(alive, key=lambda lr: curves[lr][-1]), cost


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 1e6


def _record(make_loop: Any, lr: float, schedule: dict[str, Any], total: int, metric: str,
            evaluate: bool, rungs: tuple[float, ...] = RUNGS) -> tuple[list[float], list[int]]:
    """Metrics and charged steps at each report of one trial: branched for wsd, plain slices else."""
    loop = make_loop(lr, {**schedule, "branch_at": list(rungs)} if schedule["name"] == "wsd" else schedule)
    horizons = branch_horizons(rungs, total)
    values, charged, spent = [], [], 0
    for i, t in enumerate(horizons):
        if schedule["name"] == "wsd":
            m = train_to_branch(loop, t, final=i == len(horizons) - 1)
            spent += m["charged"]
        else:
            m = loop.train_for(t - loop.steps)
            if evaluate:
                m.update(loop.evaluate())
            spent = loop.steps
        values.append(_finite(float(m[metric])))
        charged.append(spent)
    return values, charged


def _compare(curves_w, charged_w, curves_o, charged_o, total):
    lrs = sorted(curves_w)
    grid_w = min(lrs, key=lambda lr: curves_w[lr][-1])
    grid_o = min(lrs, key=lambda lr: curves_o[lr][-1])
    asha_w, cost_w = successive_halving(curves_w, charged_w)
    asha_o, cost_o = successive_halving(curves_o, charged_o)
    grid_cost = len(lrs) * total
    return {"lrs": lrs, "grid_wsd": grid_w, "asha_wsd": asha_w, "grid_oc": grid_o, "asha_oc": asha_o,
            "asha_wsd_over_grid": asha_w / grid_w, "asha_oc_over_grid_oc": asha_o / grid_o,
            "asha_oc_over_grid_wsd": asha_o / grid_w,
            "regret_wsd": curves_w[asha_w][-1] / curves_w[grid_w][-1] - 1,
            "regret_oc": curves_o[asha_o][-1] / curves_o[grid_o][-1] - 1,
            "compute_wsd": cost_w / grid_cost, "compute_oc": cost_o / grid_cost,
            "best_wsd_final": curves_w[grid_w][-1], "best_oc_final": curves_o[grid_o][-1]}


def nqm(seeds: int, n: int, total: int, batch_sizes: tuple[int, ...],
        rungs: tuple[float, ...] = RUNGS) -> dict[str, Any]:
    from tune_lip.studies.nqm import NQMConfig, NQMLoop

    def make(b):
        return lambda lr, schedule: NQMLoop(NQMConfig.from_dict({
            "dim": 100, "power": 1.0, "noise": 1.0, "dataset": {"batch_size": b},
            "optimizer": {"name": "sgd", "lr": lr, "momentum": 0.0}, "budget": {"steps": total},
            "schedule": schedule}))

    wsd = {"name": "wsd", "warmup_steps": 0, "cooldown": 0.2}
    rows, per_budget = [], {}
    for b in batch_sizes:
        for seed in range(seeds):
            lrs = sorted(float(x) for x in np.exp(np.random.default_rng(seed).uniform(np.log(0.01), np.log(3.0), n)))
            cw, kw, co, ko = {}, {}, {}, {}
            for lr in lrs:
                cw[lr], kw[lr] = _record(make(b), lr, wsd, total, "train_loss", False, rungs)
                co[lr], ko[lr] = _record(make(b), lr, {"name": "one_cycle"}, total, "train_loss", False, rungs)
            rows.append({"study": "nqm" if rungs == RUNGS else f"nqm rungs {list(rungs)}", "batch_size": b, "seed": seed, **_compare(cw, kw, co, ko, total)})
        dense = [float(x) for x in np.geomspace(0.01, 3.0, 41)]       # lr* at every rung budget, one search
        curves = {lr: _record(make(b), lr, wsd, total, "train_loss", False)[0] for lr in dense}
        horizons = branch_horizons(RUNGS, total)
        per_budget[str(b)] = {str(t): min(dense, key=lambda lr, i=i: curves[lr][i]) for i, t in enumerate(horizons)}
    return {"rows": rows, "lr_star_per_budget": per_budget}


def digits(total: int, lrs: tuple[float, ...], seeds: tuple[int, ...]) -> dict[str, Any]:
    runs = [_digits(total, lrs, seed) for seed in seeds]
    return {"rows": [r["row"] for r in runs], "curves": [r["curves"] for r in runs]}


def _digits(total: int, lrs: tuple[float, ...], seed: int) -> dict[str, Any]:
    from tune_lip.studies.lipschitz import LipschitzConfig, LipschitzLoop

    def make(lr, schedule):
        return LipschitzLoop(LipschitzConfig.from_dict({
            "seed": seed, "model": {"name": "aol_mlp", "width": 64, "depth": 4},
            "dataset": {"name": "digits", "batch_size": 32, "validation": 0.1}, "augmentation": "none",
            "optimizer": {"name": "sgd", "lr": lr, "momentum": 0.9, "nesterov": True},
            "loss": {"name": "offset_ce", "eps": 0.1412, "temperature": 0.25}, "eval": {"eps": 0.1412},
            "budget": {"steps": total}, "schedule": schedule}))

    wsd = {"name": "wsd", "warmup_steps": 10, "cooldown": 0.2}
    cw, kw, co, ko = {}, {}, {}, {}
    for lr in lrs:
        cw[lr], kw[lr] = _record(make, lr, wsd, total, "val_loss", True)
        co[lr], ko[lr] = _record(make, lr, {"name": "one_cycle"}, total, "val_loss", True)
    return {"row": {"study": "lipschitz/digits", "batch_size": 32, "seed": seed, **_compare(cw, kw, co, ko, total)},
            "curves": {"wsd": {str(k): v for k, v in cw.items()}, "one_cycle": {str(k): v for k, v in co.items()}}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds and LRs (a smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.time()
    q = args.quick
    out = {"machine": platform.processor() or platform.machine(), "python": sys.version.split()[0],
           "torch": torch.__version__, "numpy": np.__version__, "rungs": RUNGS, "reduction_factor": RF}
    out["nqm"] = nqm(seeds=2 if q else 5, n=9 if q else 27, total=1000, batch_sizes=(4, 32) if q else (4, 32, 256))
    # ASHA with one rung at a third of the budget (grace_fraction 1/3): less room for the horizon shift of lr*
    late = nqm(seeds=2 if q else 5, n=9 if q else 27, total=1000, batch_sizes=(4, 32) if q else (4, 32, 256),
               rungs=(1 / 3,))
    out["nqm_late_rung"] = {"rows": late["rows"]}
    out["digits"] = digits(total=60 if q else 240, lrs=(0.03, 0.3, 3.0) if q else
                           tuple(float(x) for x in np.geomspace(0.01, 3.0, 8)), seeds=(0,) if q else (0, 1, 2))
    out["seconds"] = time.time() - start
    rows = out["nqm"]["rows"] + late["rows"] + out["digits"]["rows"]
    head = f"{'study':<17}{'b':>5}{'seed':>5}{'grid_wsd':>10}{'asha_wsd':>10}{'grid_oc':>10}{'asha_oc':>10}" \
           f"{'regret_w':>10}{'regret_oc':>10}{'cost_w':>8}{'cost_oc':>8}"
    print(head)
    for r in rows:
        print(f"{r['study']:<17}{r['batch_size']:>5}{r['seed']:>5}{r['grid_wsd']:>10.4g}{r['asha_wsd']:>10.4g}"
              f"{r['grid_oc']:>10.4g}{r['asha_oc']:>10.4g}{r['regret_wsd']:>10.3g}{r['regret_oc']:>10.3g}"
              f"{r['compute_wsd']:>8.2f}{r['compute_oc']:>8.2f}")
    summary = {}
    for study in sorted({r["study"] for r in rows}):
        rs = [r for r in rows if r["study"] == study]
        summary[study] = {
            "runs": len(rs),
            "asha_wsd_matches_grid": sum(r["asha_wsd"] == r["grid_wsd"] for r in rs),
            "asha_oc_matches_grid_oc": sum(r["asha_oc"] == r["grid_oc"] for r in rs),
            "median_abs_log2_ratio_wsd": float(np.median([abs(math.log2(r["asha_wsd_over_grid"])) for r in rs])),
            "median_abs_log2_ratio_oc": float(np.median([abs(math.log2(r["asha_oc_over_grid_oc"])) for r in rs])),
            "median_regret_wsd": float(np.median([r["regret_wsd"] for r in rs])),
            "median_regret_oc": float(np.median([r["regret_oc"] for r in rs])),
            "median_compute_wsd": float(np.median([r["compute_wsd"] for r in rs])),
            "median_compute_oc": float(np.median([r["compute_oc"] for r in rs])),
            "median_best_wsd_over_best_oc": float(np.median([r["best_wsd_final"] / r["best_oc_final"] for r in rs])),
        }
        print(study, json.dumps(summary[study]))
    print("nqm lr* per rung budget (branched, dense grid):", json.dumps(out["nqm"]["lr_star_per_budget"]))
    out["summary"] = summary
    OUT.parent.mkdir(exist_ok=True)
    path = OUT.with_name("wsd_branching_quick.json") if q else OUT
    path.write_text(json.dumps(out, indent=1))
    print(f"{out['seconds']:.0f} s; wrote {path}")


if __name__ == "__main__":
    main()
