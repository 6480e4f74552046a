"""How the optimal learning rate scales with batch size: lr*(b) = exp(intercept) · b**alpha.

Per batch size, lr* is the vertex of a quadratic in log lr fitted to the trials around the best
one (every trial in that window counts, not just the argmax); a bootstrap over trials gives its
95% interval. A weighted least-squares line through (log b, log lr*), weighted by those
intervals, gives alpha; refitting it on every bootstrap replicate gives alpha's interval. The
verdict says which of alpha = 1/2 (square-root scaling) and alpha = 1 (linear scaling) that
interval holds. Where a broken power law (slope alpha up to a critical batch size b_c, flat or
shallower above) beats the single law by AICc, b_c is reported with a bootstrap interval and
alpha is the slope below it.

Hand-written on purpose: the bootstrap draws how often each trial is picked (multinomial
counts), so one batched weighted least squares gives the vertex of every replicate at once, and
the same replicates are reused across batch sizes for alpha and b_c. ``scipy.stats.bootstrap``
resamples values one statistic at a time and would not let the replicates be shared that way.
The estimators live in `tune_lip.analysis.lr_star`; this module holds the result and its summary.

Example:
    >>> from tune_lip.analysis import fit_lr_scaling, load                 # doctest: +SKIP
    >>> fit = fit_lr_scaling(load("tune_lip_results/demo"), metric="certified_acc",
    ...                      mode="max")                                    # doctest: +SKIP
    >>> print(fit.summary()); fit.plot()                                    # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import pandas as pd
import scipy.stats

from tune_lip.analysis.lr_star import (
    _MIN_DISTINCT_LRS,
    _Z95,
    _BatchEstimate,
    _estimate_batch,
    _fit_law,
    _predict_log,
)
from tune_lip.analysis.results import config_column, jsonable
from tune_lip.analysis.trials import Mode, Use, split_groups, trial_outcomes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["LRScalingFit", "fit_lr_scaling", "split_groups", "trial_outcomes"]


_VERDICT_TEXT = {
    "sqrt": "supports alpha = 1/2 (square-root scaling), not alpha = 1",
    "linear": "supports alpha = 1 (linear scaling), not alpha = 1/2",
    "both": ("holds both alpha = 1/2 and alpha = 1: cannot tell them apart "
             "(add batch sizes or trials)"),
    "neither": "holds neither alpha = 1/2 nor alpha = 1",
}



def _verdict(lo: float, hi: float) -> str:
    half, one = lo <= 0.5 <= hi, lo <= 1.0 <= hi
    return "both" if half and one else "sqrt" if half else "linear" if one else "neither"


def _fmt(v: float) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.3g}"


# ---------------------------------------------------------------------------------------------
# The fit
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LRScalingFit:
    """A fitted law lr*(b) = exp(intercept) · b**alpha (up to ``batch_break`` if there is one).

    alpha, alpha_ci: the slope of log lr* on log b and its 95% bootstrap percentile interval; with
        a critical batch size found, the slope below it.
    intercept: natural log of lr* at b = 1 on the fitted law.
    verdict: "sqrt", "linear", "both" or "neither": which of alpha = 1/2 and alpha = 1 lie in
        alpha_ci.
    per_batch: one row per batch size fitted: ``batch_size``, ``lr_star``, ``lr_star_lo``,
        ``lr_star_hi`` (95% interval; NaN on the open side when ``at_edge``), ``n_trials``,
        ``at_edge`` (the best lr is the smallest or largest tried and no interior maximum was
        found: lr* may lie outside the range, the row is left out of the alpha fit),
        ``estimate`` ("quadratic" or "best trial"), ``metric_star`` (the metric at lr*, fitted)
        and ``used`` (in the alpha fit).
    skipped: batch sizes left out, with the reason ("3 finished trials, need 4").
    batch_break, batch_break_ci: the critical batch size and its 95% interval, or None when a
        single power law is preferred (or too few batch sizes to tell: it needs >= 6).
    alpha_above: the slope above batch_break (0.0 for a plateau), None without a break.
    chi2_dof, fit_p: weighted residual sum of squares per degree of freedom, and the chi^2 test's
        p-value: chi2_dof is about 1 when the per-batch intervals explain the scatter around the
        law; a small fit_p says they do not (an outlying batch size, a curved law, or lr*
        estimates shifted by a lopsided metric curve, which the intervals do not include).
        alpha_ci propagates the per-batch intervals only.
    group: the ``by`` config values of this fit ({} without ``by``).
    settings: the options of `fit_lr_scaling` that made it (lr, batch_size, use, ...).
    boot_params: (n_boot, 4) bootstrap replicates of (intercept, alpha, alpha_above, log b_c).
    """

    metric: str
    mode: str
    alpha: float
    alpha_ci: tuple[float, float]
    intercept: float
    verdict: str
    per_batch: pd.DataFrame = field(repr=False, compare=False)
    skipped: dict[float, str] = field(default_factory=dict)
    n_boot: int = 1000
    batch_break: float | None = None
    batch_break_ci: tuple[float, float] | None = None
    alpha_above: float | None = None
    chi2_dof: float = math.nan
    fit_p: float = math.nan
    group: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    boot_params: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)), repr=False,
                                    compare=False)

    @property
    def label(self) -> str:
        """The group as text, ``budget.steps=1000`` (empty without ``by``)."""
        return ", ".join(f"{k}={v}" for k, v in self.group.items())

    def _params(self) -> np.ndarray:
        xc = math.log(self.batch_break) if self.batch_break is not None else math.inf
        return np.array([self.intercept, self.alpha, self.alpha_above or 0.0, xc])

    def predict(self, batch_size: float | np.ndarray) -> np.ndarray:
        """lr* of the fitted law at ``batch_size`` (examples per step)."""
        x = np.log(np.atleast_1d(np.asarray(batch_size, float)))
        return np.exp(_predict_log(self._params(), x))

    def band(self, batch_size: float | np.ndarray, level: float = 0.95
             ) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise bootstrap interval of the fitted law's lr* at ``batch_size``."""
        x = np.log(np.atleast_1d(np.asarray(batch_size, float)))
        curves = _predict_log(self.boot_params, x)  # (n_boot, len(x))
        q = 100 * (1 - level) / 2
        lo, hi = np.percentile(curves, [q, 100 - q], axis=0)
        return np.exp(lo), np.exp(hi)

    def plot(self, ax: Axes | None = None, *, title: str = "") -> Figure:
        """lr* against batch size on log-log axes (`tune_lip.analysis.plots.plot_lr_scaling`)."""
        from tune_lip.analysis.plots import plot_lr_scaling

        return plot_lr_scaling(self, ax=ax, title=title)

    def plot_metric(self, df: pd.DataFrame, ax: Axes | None = None, *, title: str = "") -> Figure:
        """The metric against lr per batch size with the fitted optima (rows of ``df`` outside
        this fit's group are dropped)."""
        from tune_lip.analysis.plots import plot_metric_vs_lr

        for key, value in self.group.items():
            col = df[config_column(key)]
            df = df[col.isna()] if pd.isna(value) else df[col == value]
        return plot_metric_vs_lr(df, metric=self.metric, fit=self, ax=ax, title=title)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the replicates, as JSON-able Python values (non-finite -> None)."""
        return jsonable({
            "metric": self.metric, "mode": self.mode, "group": self.group,
            "alpha": self.alpha, "alpha_ci": list(self.alpha_ci), "intercept": self.intercept,
            "verdict": self.verdict, "batch_break": self.batch_break,
            "batch_break_ci": list(self.batch_break_ci) if self.batch_break_ci else None,
            "alpha_above": self.alpha_above, "chi2_dof": self.chi2_dof,
            "fit_p": self.fit_p, "n_boot": self.n_boot,
            "per_batch": self.per_batch.to_dict("records"), "skipped": self.skipped,
            "settings": self.settings,
        })

    def summary(self) -> str:
        """A printable per-batch table, alpha with its interval and the verdict."""
        use = self.settings.get("use", "last")
        head = (f"lr* vs batch size: {self.metric} ({self.mode}), {use} report per trial, "
                f"{self.n_boot} bootstrap draws" + (f" [{self.label}]" if self.label else ""))
        lines = [head, f"{'batch':>8}  {'lr*':>9}  {'95% interval':<22} {'trials':>6}  note"]
        for r in self.per_batch.itertuples(index=False):
            interval = f"[{_fmt(r.lr_star_lo)}, {_fmt(r.lr_star_hi)}]"
            if r.at_edge:
                side = "smallest" if not math.isfinite(r.lr_star_lo) else "largest"
                bound = "upper" if side == "smallest" else "lower"
                note = (f"best at the {side} lr tried: lr* may lie beyond the range, "
                        f"{bound} bound only; not in the alpha fit")
            else:
                note = "" if r.estimate == "quadratic" else "no interior maximum: best trial"
            lines.append(f"{r.batch_size:>8g}  {r.lr_star:>9.3g}  {interval:<22} {r.n_trials:>6}"
                         f"  {note}".rstrip())
        lo, hi = self.alpha_ci
        where = " (below b_c)" if self.batch_break is not None else ""
        lines.append(f"alpha{where} = {self.alpha:.3f}, 95% interval [{lo:.3f}, {hi:.3f}]: "
                     f"{_VERDICT_TEXT[self.verdict]}")
        lines.append(f"law: lr*(b) = {math.exp(self.intercept):.3g} * b^{self.alpha:.3f}"
                     f"   (chi^2/dof = {_fmt(self.chi2_dof)}, p = {_fmt(self.fit_p)})")
        if self.fit_p < 1e-3:
            lines.append("the lr* scatter around the law exceeds their intervals (p < 0.001): "
                         "look at the plot for an outlying batch size or a curved law")
        n_used = int(self.per_batch["used"].sum())
        if n_used < 3:
            lines.append(f"only {n_used} batch sizes in the fit: the interval rests on the "
                         f"per-batch intervals alone; >= 3 recommended")
        if self.batch_break is not None and self.batch_break_ci is not None:
            blo, bhi = self.batch_break_ci
            lines.append(f"critical batch size b_c = {self.batch_break:g} (95% interval "
                         f"[{blo:g}, {bhi:g}]); slope above it {self.alpha_above:.3f}")
        elif not self.settings.get("detect_break", True):
            pass
        elif n_used < 6:
            lines.append(f"critical batch size: not tested (needs >= 6 batch sizes in the fit, "
                         f"got {n_used})")
        else:
            lines.append("critical batch size: none (AICc prefers a single power law)")
        for b, why in self.skipped.items():
            lines.append(f"skipped batch {b:g}: {why}")
        return "\n".join(lines)


def _fit_group(trials: pd.DataFrame, *, metric: str, mode: Mode, include_stopped: bool,
               min_trials: int, neighbours: int, window_frac: float, n_boot: int,
               seed: int | None,
               detect_break: bool, group: dict[str, Any], settings: dict[str, Any]
               ) -> LRScalingFit:
    where = f" [{', '.join(f'{k}={v}' for k, v in group.items())}]" if group else ""
    sign = 1.0 if mode == "max" else -1.0
    finite = trials["value"].dropna()
    if finite.empty:
        raise ValueError(f"{metric}{where}: no trial reported a finite value")
    # A non-finite metric (a NaN loss after divergence) is as bad as the worst value seen at that
    # batch size (at any, where a batch size has none): the curve it joins is that batch size's.
    worst = finite.min() if mode == "max" else finite.max()
    at_batch = trials.groupby("batch_size")["value"].transform("min" if mode == "max" else "max")
    trials = trials.assign(value=trials["value"].fillna(at_batch).fillna(worst))

    rng = np.random.default_rng(seed)
    estimates: list[_BatchEstimate] = []
    skipped: dict[float, str] = {}
    for b, rows in trials.groupby("batch_size", sort=True):
        b = float(b)
        stopped = int((~rows["finished"]).sum())
        used = rows if include_stopped else rows[rows["finished"]]
        distinct = used["lr"].nunique()
        if len(used) < min_trials:
            why = f"{len(used)} finished trials, need {min_trials}"
            if stopped and not include_stopped:
                why += f" ({stopped} stopped early, left out)"
            skipped[b] = why
        elif distinct < _MIN_DISTINCT_LRS:
            skipped[b] = f"{distinct} distinct learning rates, need {_MIN_DISTINCT_LRS}"
        else:
            estimates.append(_estimate_batch(b, used, sign, neighbours=neighbours,
                                             window_frac=window_frac, n_boot=n_boot, rng=rng))

    fitted = [e for e in estimates if not e.row["at_edge"]]
    if len(fitted) < 2:
        edge = [f"{e.batch_size:g}" for e in estimates if e.row["at_edge"]]
        details = "; ".join([f"batch {b:g}: {why}" for b, why in skipped.items()]
                            + ([f"batch {', '.join(edge)}: best lr at the edge of the range tried "
                                f"(widen it)"] if edge else []))
        raise ValueError(f"{metric}{where}: a slope needs >= 2 batch sizes (>= 3 recommended) with "
                         f"enough trials and an optimum inside the lr range; got {len(fitted)}"
                         + (f" ({details})" if details else ""))

    xb = np.log([e.batch_size for e in fitted])
    yb = np.log([e.row["lr_star"] for e in fitted])
    w = 1.0 / np.array([e.sigma for e in fitted]) ** 2
    boot = np.stack([e.boot for e in fitted], axis=1)  # (n_boot, n_b): replicate r of each batch
    model, point, boot_params, dof = _fit_law(xb, yb, w, boot, detect_break)
    # Goodness of fit against each batch size's interval on the side the law passes: bootstrap
    # intervals are often lopsided, and their mean half-width would overstate the misfit.
    resid = _predict_log(point, xb) - yb
    lo_b = np.log([e.row["lr_star_lo"] for e in fitted])
    hi_b = np.log([e.row["lr_star_hi"] for e in fitted])
    half = np.maximum(np.where(resid > 0, hi_b - yb, yb - lo_b) / _Z95, [e.floor for e in fitted])
    chi2 = float(((resid / half) ** 2).sum())
    chi2_dof = chi2 / dof if dof > 0 else math.nan
    fit_p = float(scipy.stats.chi2.sf(chi2, dof)) if dof > 0 else math.nan
    alpha_lo, alpha_hi = (float(v) for v in np.percentile(boot_params[:, 1], [2.5, 97.5]))
    brk = brk_ci = above = None
    if model != "power law":
        # Breaks sit at batch sizes tried: report those, not exp(log(b)) with rounding noise.
        sizes = np.array([e.batch_size for e in fitted])
        def snap(v: float) -> float:
            return float(sizes[np.abs(xb - v).argmin()])

        brk = snap(point[3])
        brk_ci = (snap(np.percentile(boot_params[:, 3], 2.5, method="lower")),
                  snap(np.percentile(boot_params[:, 3], 97.5, method="higher")))
        above = float(point[2])

    per_batch = pd.DataFrame([{**e.row, "used": not e.row["at_edge"]} for e in estimates])
    return LRScalingFit(
        metric=metric, mode=mode, alpha=float(point[1]), alpha_ci=(alpha_lo, alpha_hi),
        intercept=float(point[0]), verdict=_verdict(alpha_lo, alpha_hi), per_batch=per_batch,
        skipped=skipped, n_boot=n_boot, batch_break=brk, batch_break_ci=brk_ci, alpha_above=above,
        chi2_dof=chi2_dof, fit_p=fit_p, group=group, settings=settings, boot_params=boot_params)


@overload
def fit_lr_scaling(df: pd.DataFrame, *, metric: str, mode: Mode, lr: str = ...,
                   batch_size: str = ..., by: None = ..., use: Use = ...,
                   include_stopped: bool = ..., min_trials: int = ..., neighbours: int = ...,
                   window_frac: float = ..., n_boot: int = ..., seed: int | None = ...,
                   detect_break: bool = ...
                   ) -> LRScalingFit: ...


@overload
def fit_lr_scaling(df: pd.DataFrame, *, metric: str, mode: Mode, lr: str = ...,
                   batch_size: str = ..., by: str | Sequence[str], use: Use = ...,
                   include_stopped: bool = ..., min_trials: int = ..., neighbours: int = ...,
                   window_frac: float = ..., n_boot: int = ..., seed: int | None = ...,
                   detect_break: bool = ...
                   ) -> dict[Any, LRScalingFit]: ...


def fit_lr_scaling(df: pd.DataFrame, *, metric: str, mode: Mode, lr: str = "optimizer.lr",
                   batch_size: str = "dataset.batch_size", by: str | Sequence[str] | None = None,
                   use: Use = "last", include_stopped: bool = False, min_trials: int = 4,
                   neighbours: int = 5, window_frac: float = 1 / 3, n_boot: int = 1000,
                   seed: int | None = 0,
                   detect_break: bool = True) -> LRScalingFit | dict[Any, LRScalingFit]:
    """Fit lr*(b) = exp(c) · b**alpha to a search over learning rate and batch size.

    df: what `load` returns (one row per report), or any frame with ``trial_id``, the metric and
        the ``config/...`` columns. Each trial counts once: its last report (``use="last"``) or
        its best (``use="best"``).
    metric, mode: the metric and whether higher ("max") or lower ("min") is better. A non-finite
        value counts as the worst value at its batch size; diverged trials are kept (they are real
        outcomes at high lr).
    lr, batch_size: config keys of the learning rate and the batch size (examples per step).
    by: config key(s) to fit separately, e.g. "budget.steps"; then the result is a dict from the
        group's value (a tuple for several keys) to its fit.
    include_stopped: keep trials the scheduler stopped early (their metric is from a shorter run,
        so they are left out by default).
    min_trials: finished trials a batch size needs; with fewer it goes to ``fit.skipped``.
    neighbours, window_frac: the quadratic in log lr goes through the trials at the distinct lrs
        around the best one: at least ``neighbours`` (>= 3) of them and at least ``window_frac``
        of all; where it has no maximum inside them, the window widens until it has.
    n_boot, seed: bootstrap replicates (trials resampled within each batch size) and the seed of
        ``numpy.random.default_rng``.
    detect_break: compare the single power law with a broken one (needs >= 6 batch sizes).

    Raises ValueError for a missing column (naming it and the ``config/`` columns there are) and
    when fewer than 2 batch sizes have enough finished trials and an optimum inside the lr range.

    Example:
        >>> import numpy as np, pandas as pd
        >>> rows = [{"trial_id": f"{b}-{i}", "training_iteration": 1, "config/reports": 1,
        ...          "config/dataset/batch_size": b, "config/optimizer/lr": lr,
        ...          "acc": 0.9 - 0.02 * np.log(lr / (1e-3 * b ** 0.5)) ** 2}
        ...         for b in (32, 64, 128, 256, 512)
        ...         for i, lr in enumerate(np.geomspace(1e-3, 1.0, 10))]
        >>> fit = fit_lr_scaling(pd.DataFrame(rows), metric="acc", mode="max")
        >>> round(fit.alpha, 3), fit.verdict
        (0.5, 'sqrt')
        >>> fit.per_batch[["batch_size", "lr_star", "n_trials"]].round(4).iloc[0].tolist()
        [32.0, 0.0057, 10.0]
    """
    if neighbours < _MIN_DISTINCT_LRS:
        raise ValueError(f"neighbours must be >= {_MIN_DISTINCT_LRS} (a quadratic needs 3 points), "
                         f"got {neighbours}")
    if min_trials < _MIN_DISTINCT_LRS:
        raise ValueError(f"min_trials must be >= {_MIN_DISTINCT_LRS}, got {min_trials}")
    if not 0.0 <= window_frac <= 1.0:
        raise ValueError(f"window_frac must be in [0, 1], got {window_frac}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    trials = trial_outcomes(df, metric=metric, mode=mode, lr=lr, batch_size=batch_size, by=by,
                            use=use)
    settings = {"lr": lr, "batch_size": batch_size, "use": use, "include_stopped": include_stopped,
                "min_trials": min_trials, "neighbours": neighbours, "window_frac": window_frac,
                "seed": seed,
                "detect_break": detect_break}
    options: dict[str, Any] = dict(metric=metric, mode=mode, include_stopped=include_stopped,
                   min_trials=min_trials, neighbours=neighbours, window_frac=window_frac,
                   n_boot=n_boot, seed=seed, detect_break=detect_break, settings=settings)
    if by is None:
        return _fit_group(trials, group={}, **options)
    return {key: _fit_group(rows, group=group, **options)
            for key, group, rows in split_groups(trials, by)}
