"""lr* against batch size and budget jointly: lr*(b, D) = exp(c) · b**alpha · D**beta.

Large-scale learning-rate studies fit the optimal learning rate as one power law in the batch
size b and the training budget D (steps or examples). `fit_lr_budget` does that on a search
whose budget varies:

1. **lr* per (b, D) cell** with the per-batch estimator of `fit_lr_scaling`, run on each budget's
   trials alone (one curve shape per budget: a longer run's curve has its own height and width).
   Each cell's lr* comes with its 95% interval; a censored cell (best lr at an edge of the range)
   is a bound only and an "outside" cell (the shared shape misplaces it) is not a point on any
   law: both are left out of the regression and named, except an outside cell whose lr* is its
   own trials' peak (``own_peak``: where the curves differ in shape, `fit_lr_scaling` reports
   that, with an interval over every lr those trials allow).
2. **The joint law**: weighted least squares of ln lr* on (ln b, ln D), each cell weighted by its
   interval (sd = ln(hi/lo) / (2·1.96)). The 95% intervals of alpha and beta are t intervals
   widened by the misfit of the cells around the plane, as `fit_lr_scaling` widens its interval
   (m = max(1, chi²/dof), the t quantile's degrees of freedom moving towards the misfit's,
   `tune_lip.analysis.lr_star.threshold`). The goodness of fit is chi² with n_cells - 3 dof.
3. **Does the batch exponent change with budget?** An interaction term γ·(ln b - mean)(ln D -
   mean) fitted the same way: ``gamma`` is d alpha / d ln D. The verdict says "the batch exponent
   changes with budget" only when gamma's 95% interval excludes 0. Each budget's own alpha
   (`fit_lr_scaling` on that budget alone) is printed beside it.

Where the budget varies: config ``budget.steps`` / ``budget.examples`` / ``budget.epochs`` taking
several values across trials, or rows with ``annealed`` True (WSD branches: one row per budget
D of a trial, its ``steps`` (or ``examples``) column the budget of that annealed model).

Calibration (``tests/analysis/test_lr_budget.py``, ``bench/lr_budget_coverage.py``, numbers in
BENCHMARKS.md): synthetic worlds with known (alpha, beta), 3-4 budgets x 5-8 batch sizes x 12 lrs
on one fixed lr grid, asymmetric curves with a divergence cliff whose width changes with budget.
Measured (100 replications per world, 2-core x86_64, numpy 2.4, scipy 1.17): coverage of the 95%
intervals of alpha 1.00 in every world, of beta 0.93-1.00 (0.93 at noise 0.03 of the metric's
range, 0.96 on 8 batch sizes x 4 budgets), of gamma 1.00; median widths 0.07-0.23 (alpha) and
0.14-0.25 (beta). The intervals are conservative: each cell's lr* interval is at least half an
lr step each way (`fit_lr_scaling`'s floor), wider than the noise needs. "changes" in 0 of 100
worlds where alpha is constant, 100 of 100 where alpha rises by 0.10 per doubling of D (gamma =
0.15), 30 of 100 where it rises by 0.035 (gamma = 0.05).

Example:
    >>> from tune_lip.analysis import fit_lr_budget, load                  # doctest: +SKIP
    >>> law = fit_lr_budget(load("tune_lip_results/nqm"), metric="val_loss", mode="min")  # doctest: +SKIP
    >>> print(law.summary()); law.plot()                                    # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.stats

from tune_lip.analysis.lr_fit import FIT_LEVEL, LRScalingFit, _fmt
from tune_lip.analysis.lr_scaling import fit_lr_scaling
from tune_lip.analysis.lr_star import Misfit, threshold
from tune_lip.analysis.results import config_column, jsonable

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from tune_lip.analysis.trials import Mode, Use

__all__ = ["BUDGET_KEYS", "COVERAGE", "BudgetLawFit", "budget_key", "budget_trials", "fit_lr_budget"]

BUDGET_KEYS = ("budget.steps", "budget.examples", "budget.epochs")

# The coverage measured by bench/lr_budget_coverage.py (the module docstring has the numbers).
COVERAGE = {"alpha": 1.00, "beta": (0.93, 1.00), "gamma": 1.00, "worlds": 7, "replications": 100}

_Z = 1.959964


def budget_key(df: pd.DataFrame) -> str | None:
    """The budget key that varies across the trials of ``df`` (``budget.steps``, ...), "annealed"
    when it has WSD-annealed rows, None when the budget is one value."""
    if "annealed" in df.columns and df["annealed"].fillna(False).astype(bool).any():
        return "annealed"
    for key in BUDGET_KEYS:
        col = config_column(key)
        if col in df.columns and df.groupby("trial_id")[col].last().nunique(dropna=True) > 1:
            return key
    return None


def budget_trials(df: pd.DataFrame, key: str | None = None) -> tuple[pd.DataFrame, str]:
    """(rows, config key of the budget) where each row set is one model trained with one budget.

    Without annealed rows: ``df`` itself and the varying key. With them: only the annealed rows,
    each one a trial of its own (``<trial_id>@<budget>``, one report, finished), its budget (the
    row's ``examples`` where the trials' budgets are in examples, else its ``steps``) written to
    ``config/budget/steps`` (or ``.../examples``). Raises ValueError when nothing varies.
    """
    key = key or budget_key(df)
    if key is None:
        raise ValueError("the budget does not vary: budget.steps, budget.examples and budget.epochs "
                         "each take one value and there are no annealed rows")
    if key != "annealed":
        return df, key
    rows = df[df["annealed"].fillna(False).astype(bool)].copy()
    unit = "examples" if config_column("budget.examples") in df.columns \
        and df[config_column("budget.examples")].notna().any() and "examples" in df.columns else "steps"
    if unit not in rows.columns:
        raise ValueError(f"annealed rows need a {unit!r} column: the budget of each annealed model")
    rows[config_column(f"budget.{unit}")] = rows[unit].to_numpy()
    rows["trial_id"] = rows["trial_id"].astype(str) + "@" + rows[unit].astype(str)
    rows = rows.drop(columns=[c for c in ("training_iteration", "config/reports") if c in rows])
    return rows, f"budget.{unit}"


@dataclass(frozen=True)
class _Plane:
    coef: np.ndarray     # (p,)
    ci: np.ndarray       # (p, 2)
    chi2: float
    dof: int
    p: float
    scale: float         # the misfit inflation m


def _wls(X: np.ndarray, y: np.ndarray, sd: np.ndarray, level: float = 0.95) -> _Plane:
    """Weighted least squares with t intervals widened by the misfit (see the module docstring)."""
    w = 1.0 / sd**2
    Xw = X * np.sqrt(w)[:, None]
    coef, *_ = np.linalg.lstsq(Xw, y * np.sqrt(w), rcond=None)
    chi2 = float((w * (y - X @ coef) ** 2).sum())
    dof = X.shape[0] - X.shape[1]
    cov = np.linalg.pinv(Xw.T @ Xw)
    if dof > 0:
        rise, m = threshold(Misfit(chi2 / dof, math.nan, dof, 10**6, 1.0), level)
        p = float(scipy.stats.chi2.sf(chi2, dof))
    else:
        rise, m, p = math.inf, math.inf, math.nan
    half = np.sqrt(rise * np.diag(cov))
    return _Plane(coef, np.stack([coef - half, coef + half], axis=1), chi2, dof, p, m)


@dataclass(frozen=True)
class BudgetLawFit:
    """lr*(b, D) = exp(intercept) · b**alpha · D**beta, fitted over every (batch size, budget) cell.

    alpha, alpha_ci / beta, beta_ci: exponents of the batch size and the budget with 95% intervals
    (+-inf where the data do not bound them). gamma, gamma_ci: the interaction d alpha / d ln D
    (NaN when there are too few cells). fit_p: goodness of fit of the plane (chi², n - 3 dof).
    verdict: "changes" (gamma's interval excludes 0), "constant" (it holds 0: no evidence that
    alpha changes with budget) or "undetermined" (too few cells or budgets); verdict_text says it
    in words. cells: one row per (budget, batch size): ``budget``, ``batch_size``, ``lr_star``,
    ``lr_star_lo``, ``lr_star_hi``, ``at_edge``, ``outside``, ``used``. per_budget: each budget's
    own `LRScalingFit` (its alpha and interval).
    """

    metric: str
    mode: str
    budget_key: str
    alpha: float
    alpha_ci: tuple[float, float]
    beta: float
    beta_ci: tuple[float, float]
    intercept: float
    gamma: float
    gamma_ci: tuple[float, float]
    fit_p: float
    chi2_dof: float
    verdict: str
    verdict_text: str
    cells: pd.DataFrame = field(repr=False, compare=False)
    per_budget: dict[float, LRScalingFit] = field(default_factory=dict, repr=False, compare=False)
    errors: dict[float, str] = field(default_factory=dict)

    def predict(self, batch_size: Any, budget: Any) -> np.ndarray:
        """lr* of the joint law at ``batch_size`` and ``budget`` (broadcast)."""
        return np.exp(self.intercept + self.alpha * np.log(np.asarray(batch_size, float))
                      + self.beta * np.log(np.asarray(budget, float)))

    def summary(self) -> str:
        """The joint law, each budget's alpha, and the verdict, as printable lines."""
        name = self.budget_key.split(".")[-1]
        used = self.cells[self.cells["used"]]
        lines = [f"joint law lr*(b, D) = exp(c) * b^alpha * D^beta over {len(used)} (batch size, "
                 f"budget) cells, D = {self.budget_key} ({self.metric}, {self.mode})"]
        for b, fit in sorted(self.per_budget.items()):
            lo, hi = fit.single_alpha_ci
            lines.append(f"  {name} = {b:g}: alpha = {fit.single_alpha:.3f} [{lo:.3f}, {hi:.3f}], "
                         f"{int((~fit.per_batch['at_edge']).sum())} batch sizes with lr* inside the "
                         f"lr range")
        for b, why in self.errors.items():
            lines.append(f"  {name} = {b:g}: no fit ({why})")
        lines.append(f"alpha (batch size) = {self.alpha:.3f}, 95% interval [{_fmt(self.alpha_ci[0])}, "
                     f"{_fmt(self.alpha_ci[1])}]")
        lines.append(f"beta ({name}) = {self.beta:.3f}, 95% interval [{_fmt(self.beta_ci[0])}, "
                     f"{_fmt(self.beta_ci[1])}]")
        lines.append(f"goodness of fit chi2/dof = {_fmt(self.chi2_dof)}, p = {_fmt(self.fit_p)}"
                     + ("" if not (self.fit_p < FIT_LEVEL) else
                        " (the plane misses some cells: the intervals are widened for it)"))
        if math.isfinite(self.gamma):
            lines.append(f"interaction d alpha / d ln {name} = {self.gamma:.3f}, 95% interval "
                         f"[{_fmt(self.gamma_ci[0])}, {_fmt(self.gamma_ci[1])}]")
        skipped = self.cells[~self.cells["used"]]
        if len(skipped):
            lines.append("left out (censored or off the shared shape): "
                         + ", ".join(f"b = {r.batch_size:g} at {name} = {r.budget:g}"
                                     for r in skipped.itertuples()))
        lines.append(f"verdict: {self.verdict_text}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (non-finite -> None); each budget's fit as its own dict."""
        return jsonable({
            "metric": self.metric, "mode": self.mode, "budget_key": self.budget_key,
            "alpha": self.alpha, "alpha_ci": list(self.alpha_ci), "beta": self.beta,
            "beta_ci": list(self.beta_ci), "intercept": self.intercept, "gamma": self.gamma,
            "gamma_ci": list(self.gamma_ci), "fit_p": self.fit_p, "chi2_dof": self.chi2_dof,
            "verdict": self.verdict, "verdict_text": self.verdict_text,
            "cells": self.cells.to_dict("records"),
            "per_budget": {str(k): {"alpha": f.single_alpha, "alpha_ci": list(f.single_alpha_ci),
                                    "verdict": f.verdict} for k, f in self.per_budget.items()},
            "errors": {str(k): v for k, v in self.errors.items()},
        })

    def plot(self, ax: Axes | None = None, *, title: str = "") -> Figure:
        """lr* against batch size, one colour per budget: each cell's lr* with its interval
        (hollow triangles: censored), and the joint law's line at that budget."""
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullFormatter

        if ax is None:
            fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
        else:
            fig = ax.get_figure()  # type: ignore[assignment]
        budgets = sorted(self.cells["budget"].unique())
        cmap = plt.get_cmap("viridis")
        b_all = np.sort(self.cells["batch_size"].unique())
        grid = np.geomspace(b_all.min() / 1.25, b_all.max() * 1.25, 100)
        name = self.budget_key.split(".")[-1]
        for i, d in enumerate(budgets):
            color = cmap(0.9 * i / max(len(budgets) - 1, 1))
            rows = self.cells[self.cells["budget"] == d]
            ok = rows[rows["used"]]
            ax.errorbar(ok["batch_size"], ok["lr_star"],
                        yerr=[ok["lr_star"] - ok["lr_star_lo"], ok["lr_star_hi"] - ok["lr_star"]],
                        fmt="o", color=color, capsize=3, ms=5, label=f"{name} = {d:g}")
            off = rows[~rows["used"]]
            ax.plot(off["batch_size"], off["lr_star"], "^", mfc="none", color=color, ms=7, ls="")
            ax.plot(grid, self.predict(grid, d), "-", color=color, lw=1.5)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(b_all)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("batch size b (examples per step)")
        ax.set_ylabel("optimal learning rate lr* (per step)")
        a, bt = self.alpha_ci, self.beta_ci
        ax.set_title(f"{title or 'lr*(b, D)'}\nα = {self.alpha:.2f} [{_fmt(a[0])}, {_fmt(a[1])}], "
                     f"β = {self.beta:.2f} [{_fmt(bt[0])}, {_fmt(bt[1])}]; "
                     f"{'α changes with ' + name if self.verdict == 'changes' else self.verdict}",
                     fontsize="medium")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                  title="lines: joint law")
        return fig


def _cells(fits: dict[float, LRScalingFit]) -> pd.DataFrame:
    rows = []
    for d, fit in fits.items():
        pb = fit.per_batch
        for r in pb.itertuples(index=False):
            # an "outside" cell is no point on the law, unless its lr* is its own trials' peak
            ok = (not r.at_edge and (not getattr(r, "outside", False) or getattr(r, "own_peak", False))
                  and math.isfinite(r.lr_star_lo) and math.isfinite(r.lr_star_hi)
                  and r.lr_star_hi > r.lr_star_lo)
            rows.append({"budget": float(d), "batch_size": float(r.batch_size), "lr_star": r.lr_star,
                         "lr_star_lo": r.lr_star_lo, "lr_star_hi": r.lr_star_hi,
                         "at_edge": bool(r.at_edge), "outside": bool(getattr(r, "outside", False)),
                         "used": bool(ok)})
    return pd.DataFrame(rows, columns=["budget", "batch_size", "lr_star", "lr_star_lo",
                                       "lr_star_hi", "at_edge", "outside", "used"])


def fit_lr_budget(df: pd.DataFrame, *, metric: str, mode: Mode, budget: str | None = None,
                  lr: str = "optimizer.lr", batch_size: str = "dataset.batch_size",
                  use: Use = "last", **fit_options: Any) -> BudgetLawFit:
    """Fit lr*(b, D) = exp(c) · b**alpha · D**beta to a search over lr, batch size and budget.

    df: what `load` returns. budget: the config key that varies (default: found by `budget_key`;
    "annealed" for WSD-annealed rows). ``fit_options`` go to each budget's `fit_lr_scaling`
    (``min_trials``, ``include_stopped``, ...). Raises ValueError when the budget does not vary or
    fewer than 2 budgets have a fit.

    Example:
        >>> import numpy as np, pandas as pd
        >>> rows = [{"trial_id": f"{d}-{b}-{i}", "config/budget/steps": d,
        ...          "config/dataset/batch_size": b, "config/optimizer/lr": lr,
        ...          "acc": 0.9 - 0.02 * np.log(lr / (1e-2 * b ** 0.5 * (d / 1e3) ** -0.3)) ** 2}
        ...         for d in (1000, 4000, 16000) for b in (32, 128, 512, 2048)
        ...         for i, lr in enumerate(np.geomspace(1e-3, 10.0, 12))]
        >>> law = fit_lr_budget(pd.DataFrame(rows), metric="acc", mode="max")
        >>> round(law.alpha, 1), round(law.beta, 1), law.verdict
        (0.5, -0.3, 'constant')
    """
    rows, key = budget_trials(df, budget)
    col = config_column(key)
    fits: dict[float, LRScalingFit] = {}
    errors: dict[float, str] = {}
    for d, part in rows.groupby(col, sort=True):
        try:
            fits[float(d)] = fit_lr_scaling(part, metric=metric, mode=mode, lr=lr,
                                            batch_size=batch_size, use=use,
                                            **{"n_boot": 20, **fit_options})
        except ValueError as err:
            errors[float(d)] = str(err)
    if len(fits) < 2:
        raise ValueError(f"{metric}: a budget exponent needs >= 2 budgets with an lr-scaling fit; got "
                         f"{len(fits)}" + "".join(f"; {key} = {d:g}: {why}" for d, why in errors.items()))
    cells = _cells(fits)
    used = cells[cells["used"]]
    nan2 = (math.nan, math.nan)
    if len(used) < 4 or used["budget"].nunique() < 2 or used["batch_size"].nunique() < 2:
        raise ValueError(f"{metric}: only {len(used)} (batch size, budget) cells with lr* inside the "
                         f"lr range, over {used['budget'].nunique()} budgets; need >= 4 over >= 2")
    y = np.log(used["lr_star"].to_numpy(float))
    sd = np.log(used["lr_star_hi"] / used["lr_star_lo"]).to_numpy(float) / (2 * _Z)
    lb, ld = np.log(used["batch_size"].to_numpy(float)), np.log(used["budget"].to_numpy(float))
    mb, md = lb.mean(), ld.mean()
    X = np.stack([np.ones_like(lb), lb - mb, ld - md], axis=1)
    plane = _wls(X, y, sd)
    alpha, beta = float(plane.coef[1]), float(plane.coef[2])
    intercept = float(plane.coef[0] - alpha * mb - beta * md)
    gamma, gamma_ci = math.nan, nan2
    # The interaction needs >= 2 budgets with >= 2 batch sizes each, and a dof left over.
    per = used.groupby("budget")["batch_size"].nunique()
    if (per >= 2).sum() >= 2 and len(used) >= 6:
        inter = _wls(np.column_stack([X, (lb - mb) * (ld - md)]), y, sd)
        gamma, gamma_ci = float(inter.coef[3]), (float(inter.ci[3, 0]), float(inter.ci[3, 1]))
    name = key.split(".")[-1]
    if not math.isfinite(gamma) or not all(map(math.isfinite, gamma_ci)):
        verdict, text = "undetermined", ("too few cells to tell whether the batch exponent changes "
                                         "with " + name)
    elif gamma_ci[0] > 0 or gamma_ci[1] < 0:
        verdict = "changes"
        text = (f"the batch exponent changes with budget: alpha {'rises' if gamma > 0 else 'falls'} "
                f"by {abs(gamma) * math.log(2):.3f} per doubling of {name} (the interaction's "
                f"interval excludes 0)")
    else:
        verdict, text = "constant", (f"no evidence that the batch exponent changes with {name} "
                                     f"(the interaction's interval holds 0)")
    return BudgetLawFit(
        metric=metric, mode=mode, budget_key=key, alpha=alpha,
        alpha_ci=(float(plane.ci[1, 0]), float(plane.ci[1, 1])), beta=beta,
        beta_ci=(float(plane.ci[2, 0]), float(plane.ci[2, 1])), intercept=intercept, gamma=gamma,
        gamma_ci=gamma_ci, fit_p=plane.p,
        chi2_dof=plane.chi2 / plane.dof if plane.dof > 0 else math.nan, verdict=verdict,
        verdict_text=text, cells=cells, per_budget=fits, errors=errors)
