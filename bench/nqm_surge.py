"""Does lr* rise and then fall with batch size (the "surge", Li et al. 2024) on the NQM, and
where is the gradient noise scale B_noise against the critical batch size of lr*(b)?

Zhang et al. (2019) model Adam on the noisy quadratic model as preconditioned SGD, P = H^p
(`tune_lip.studies.nqm`, exact expected loss); Li et al. (2024, *Surge Phenomenon in Optimal
Learning Rate and Batch Size Scaling*) report that for Adam-style optimisers lr*(b) rises, peaks
near the noise scale and falls. Here, on the paper's NQM (dim 10^4, h_i = 1/i, C = H):

- exact lr*(b): (precond_)sgd with p in {0, 0.5, 1}, the exact final loss on a dense lr grid (45
  lrs over 3.6 decades, 0.001-4) at batch sizes 1..16384 under a fixed budget of 128 steps, and
  1..1024 under 16384 examples (the shipped spaces'); the simulated Adam (dim 100, 16 chains, 33
  lrs, 11 batch sizes 1..1024, 300 steps or 16384 examples);
- each search (metric: ln of the final loss) fitted by `fit_lr_scaling` (power law; broken law flat above b_c) and by a broken
  line with a FREE slope above the break over the per-batch lr* (weighted by their intervals,
  misfit-widened, the slope's interval the union over breaks inside the break's profile
  interval): a surge is detected when that slope's 95% interval lies below 0;
- B_noise: the closed form B_simple = noise·Σh / Σh²E θ² at the end of training, estimated by
  `estimate_noise_scale` from the trials at each batch size's lr*, set beside b_c
  (`compare_with_break`) and beside `critical_batch_size` (steps-to-target, McCandlish's
  E_min/S_min) at a target loss.

Writes bench/results/nqm_surge.json. Run: .venv/bin/python bench/nqm_surge.py (a few minutes).
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy

ROOT = Path(__file__).resolve().parents[1]

from tune_lip.analysis import fit_lr_scaling  # noqa: E402
from tune_lip.analysis.lr_star import Misfit, threshold  # noqa: E402
from tune_lip.analysis.noise_scale import (  # noqa: E402
    compare_with_break,
    estimate_noise_scale,
    near_optimum_trials,
)
from tune_lip.studies.nqm import NQMConfig, NQMLoop, critical_batch_size, curvatures  # noqa: E402
from tune_lip.studies.nqm_exact import _sgd_power, preconditioner  # noqa: E402

BATCHES = [2**k for k in range(15)]
LRS = np.geomspace(1e-3, 4.0, 45)   # as the shipped nqm spaces: lr > 2 diverges for sgd
BUDGETS = {"steps": {"steps": 128}, "examples": {"examples": 16384}}   # examples: the shipped spaces'


def exact_search(p: float, budget: dict) -> pd.DataFrame:
    """Every (b, lr) of the dense grid as a trial with its exact final loss and gradient stats."""
    name = "sgd" if p == 0 else "precond_sgd"
    cfg = NQMConfig.from_dict({"optimizer": {"name": name, "precond_power": p}, "budget": budget})
    h = curvatures(cfg)
    rows = []
    for b in BATCHES:
        steps = cfg.total_steps(b)
        if "examples" in budget and b > 1024:   # the shipped spaces' batch sizes (>= 16 steps)
            continue
        with np.errstate(all="ignore"):
            tt = _sgd_power(LRS[:, None] * preconditioner(cfg), h, cfg.noise * h / b, steps)
            loss = 0.5 * (tt * h).sum(axis=1)
            g_sq = (tt * h * h).sum(axis=1)
        bad = ~np.isfinite(loss) | (loss > 1e6 * 0.5 * h.sum())
        for lr, value, g, off in zip(LRS, loss, g_sq, bad):
            rows.append({"trial_id": f"{b}-{lr:.6g}", "config/dataset/batch_size": b,
                         "config/optimizer/lr": lr, "train_loss": 1e30 if off else value,
                         "diverged": bool(off), "training_iteration": 1, "config/reports": 1,
                         "grad_norm_sq": math.nan if off else g,
                         "grad_noise": cfg.noise * float(h.sum())})
    return pd.DataFrame(rows)


def adam_search(budget: dict) -> pd.DataFrame:
    rows = []
    lrs = np.geomspace(1e-4, 1.0, 33)
    for b in BATCHES[:11]:
        for lr in lrs:
            cfg = NQMConfig.from_dict({"dim": 100, "chains": 16, "optimizer": {"name": "adam", "lr": float(lr)},
                                       "dataset": {"batch_size": b}, "budget": budget, "reports": 1})
            loop = NQMLoop(cfg)
            m = loop.train_for(cfg.total_steps())
            rows.append({"trial_id": f"{b}-{lr:.6g}", "config/dataset/batch_size": b,
                         "config/optimizer/lr": lr, "train_loss": m["train_loss"],
                         "diverged": m["diverged"], "training_iteration": 1, "config/reports": 1,
                         "grad_norm_sq": m["grad_norm_sq"], "grad_noise": m["grad_noise"]})
    return pd.DataFrame(rows)


def free_break(per_batch: pd.DataFrame) -> dict:
    """A broken line with free slopes below and above the break over the per-batch lr*."""
    pb = per_batch[~per_batch["at_edge"]]
    pb = pb[np.isfinite(pb["lr_star_lo"]) & np.isfinite(pb["lr_star_hi"]) & (pb["lr_star_hi"] > pb["lr_star_lo"])]
    if len(pb) < 5:
        return {"error": f"{len(pb)} batch sizes with lr* inside the range"}
    lb = np.log(pb["batch_size"].to_numpy(float))
    y = np.log(pb["lr_star"].to_numpy(float))
    sd = np.log(pb["lr_star_hi"] / pb["lr_star_lo"]).to_numpy(float) / (2 * 1.96)
    w = 1 / sd**2
    kappas = np.linspace(lb[1], lb[-2], 121)
    fits = []
    for k in kappas:
        X = np.stack([np.ones_like(lb), np.minimum(lb, k), np.maximum(lb - k, 0)], axis=1)
        Xw = X * np.sqrt(w)[:, None]
        coef, *_ = np.linalg.lstsq(Xw, y * np.sqrt(w), rcond=None)
        chi2 = float((w * (y - X @ coef) ** 2).sum())
        fits.append((chi2, coef, np.linalg.pinv(Xw.T @ Xw)))
    chi = np.array([f[0] for f in fits])
    best = int(chi.argmin())
    dof = len(lb) - 4
    rise, m = threshold(Misfit(chi[best] / max(dof, 1), math.nan, max(dof, 1), 10**6, 1.0), 0.95)
    inside = chi <= chi[best] + rise
    lo = min(f[1][2] - math.sqrt(rise * f[2][2, 2]) for f, ok in zip(fits, inside) if ok)
    hi = max(f[1][2] + math.sqrt(rise * f[2][2, 2]) for f, ok in zip(fits, inside) if ok)
    return {"break": float(math.exp(kappas[best])),
            "break_range": [float(math.exp(kappas[inside].min())), float(math.exp(kappas[inside].max()))],
            "slope_below": float(fits[best][1][1]), "slope_above": float(fits[best][1][2]),
            "slope_above_ci": [float(lo), float(hi)], "surge": bool(hi < 0)}


def analyse(df: pd.DataFrame, label: str, cfg: NQMConfig | None) -> dict:
    # ln of the loss: the same optimum, and curves of one shape across batch sizes (the raw loss
    # spans decades between a tuned lr and the stability limit, and its spline fit misplaced lr*)
    df = df.assign(log_loss=np.log(df["train_loss"]))
    fit = fit_lr_scaling(df, metric="log_loss", mode="min", n_boot=20, min_trials=4)
    pb = fit.per_batch
    out = {"search": label, "alpha": fit.single_alpha, "alpha_ci": list(fit.single_alpha_ci),
           "verdict": fit.verdict, "fit_p": fit.fit_p, "b_c": fit.batch_break,
           "b_c_ci": list(fit.batch_break_ci) if fit.batch_break_ci else None,
           "lr_star": dict(zip(pb["batch_size"].astype(int).astype(str), pb["lr_star"].round(6))),
           "censored": fit.censored, "free_break": free_break(pb)}
    # exact lr* on the grid (argmin; no fit): does it ever fall as b grows?
    grid = df[~df["diverged"]].loc[lambda d: d.groupby("config/dataset/batch_size")["train_loss"].idxmin()]
    star = grid.set_index("config/dataset/batch_size")["config/optimizer/lr"].sort_index()
    out["grid_lr_star"] = {str(int(b)): float(v) for b, v in star.items()}
    out["grid_lr_star_falls"] = bool((np.diff(np.log(star.to_numpy())) < -0.1).any())
    out["outside"] = pb.loc[pb["outside"], "batch_size"].tolist()
    try:
        ns = estimate_noise_scale(df, trials=near_optimum_trials(df, fit), bins=1)
        out["b_noise"], out["b_noise_ci"] = ns.b_noise, list(ns.ci)
        out["b_noise_vs_b_c"] = compare_with_break(ns, fit)
    except ValueError as err:   # every batch size censored or off its own trials
        out["b_noise"], out["b_noise_vs_b_c"] = None, {"code": "none", "text": str(err)}
    if cfg is not None:   # steps-to-target critical batch size at the loss lr* reaches at b = 128
        target = float(df[(df["config/dataset/batch_size"] == 128) & ~df["diverged"]]["train_loss"].min())
        _, b_crit = critical_batch_size(cfg, BATCHES, target)
        out["critical_batch_size_steps_to_target"] = b_crit
        out["target_loss"] = target
    print(json.dumps({k: out[k] for k in ("search", "alpha", "verdict", "b_c", "b_noise")}
                     | {"surge": out["free_break"].get("surge"),
                        "slope_above_ci": out["free_break"].get("slope_above_ci"),
                        "grid_falls": out["grid_lr_star_falls"],
                        "vs": out["b_noise_vs_b_c"]["code"]}), flush=True)
    return out


def main() -> None:
    results = []
    start = time.perf_counter()
    for p in (0.0, 0.5, 1.0):
        for kind, budget in BUDGETS.items():
            name = "sgd" if p == 0 else "precond_sgd"
            cfg = NQMConfig.from_dict({"optimizer": {"name": name, "precond_power": p}, "budget": budget})
            label = f"{name} p={p} {kind} {budget}"
            try:
                results.append(analyse(exact_search(p, budget), label, cfg))
            except (ValueError, np.linalg.LinAlgError) as err:
                results.append({"search": label, "error": str(err)})
                print(label, "failed:", err, flush=True)
    for kind, budget in {"steps": {"steps": 300}, "examples": {"examples": 2**14}}.items():
        results.append(analyse(adam_search(budget), f"adam (simulated, dim 100, 16 chains) {kind} {budget}",
                               None))
    out = {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__,
           "scipy": scipy.__version__, "seconds": time.perf_counter() - start, "results": results}
    path = ROOT / "bench" / "results" / "nqm_surge.json"
    path.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
