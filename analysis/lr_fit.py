"""The result of `tune_lip.analysis.fit_lr_scaling`: `LRScalingFit` (the exponent, its interval,
per-batch lr*, the verdict) with its summary, JSON and plots, and the verdict rules (`verdict_of`).

The fit itself lives in `tune_lip.analysis.lr_scaling`, its estimators in `tune_lip.analysis.lr_star`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tune_lip.analysis.results import config_column, jsonable

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


MAX_WIDTH = 1.0  # an alpha interval wider than this cannot tell 1/2 from 1 apart usefully


FIT_LEVEL = 0.05  # the law is rejected when the goodness of fit's p-value is below this


_MIN_USABLE = 3  # batch sizes with lr* inside the range needed for any verdict


VERDICTS = {
    "sqrt": "supports alpha = 1/2 (square-root scaling), not alpha = 1",
    "linear": "supports alpha = 1 (linear scaling), not alpha = 1/2",
    "other": "the law fits, but alpha is neither 1/2 nor 1",
    "undetermined": "undetermined",
    "no_single_law": "no single power law fits",
}


_SHORT = {"sqrt": "supports √b scaling", "linear": "supports linear scaling",
          "other": "α neither ½ nor 1", "undetermined": "undetermined",
          "no_single_law": "no single power law"}


def verdict_of(lo: float, hi: float, *, fit_p: float, n_usable: int,
               outside: Sequence[float] = ()) -> tuple[str, str]:
    """(code, reason) for an alpha interval, the goodness of fit and the usable batch sizes.

    outside: batch sizes (not censored) whose fitted lr* lies outside the lrs they tried or far
    from their own best lr (`_near_best`): the shared shape puts their optimum where their own
    trials do not, so the curves do not share one shape and no exponent can be read off them.
    """
    if outside:
        return "undetermined", ("the batch sizes' curves do not share one shape: the fitted lr* of "
                                + ", ".join(f"b = {b:g}" for b in outside)
                                + " lies far from its own best lr")
    if n_usable < _MIN_USABLE:
        return "undetermined", (f"only {n_usable} batch sizes with lr* inside the lr range "
                                f"(need {_MIN_USABLE})")
    if math.isfinite(fit_p) and fit_p < FIT_LEVEL:
        return "no_single_law", f"goodness of fit rejects the law (p = {fit_p:.2g})"
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi - lo > MAX_WIDTH:
        return "undetermined", f"interval wider than {MAX_WIDTH:g}: too wide to say"
    half, one = lo <= 0.5 <= hi, lo <= 1.0 <= hi
    if half and one:
        return "undetermined", "the interval holds both 1/2 and 1"
    if half or one:
        return ("sqrt" if half else "linear"), "interval excludes the other rule, the law fits"
    return "other", "interval excludes both 1/2 and 1, the law fits"


def _fmt(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.3g}"


@dataclass(frozen=True)
class LRScalingFit:
    """A fitted law lr*(b) = exp(intercept) · b**alpha (up to ``batch_break`` if there is one).

    alpha, alpha_ci: the exponent and its 95% interval (profile likelihood, widened by misfit);
        with a critical batch size reported, the slope below it. An end may be +-inf: the data
        do not bound it.
    intercept: natural log of lr* at b = 1 on the fitted law.
    verdict: a code of `VERDICTS` ("sqrt", "linear", "other", "undetermined",
        "no_single_law"); ``verdict_reason`` says why in words.
    per_batch: one row per batch size fitted: ``batch_size``, ``lr_star`` (where its trials fit
        the shared shape best), ``lr_star_lo``, ``lr_star_hi`` (95% interval; NaN on the open
        side of a censored row), ``n_trials``, ``n_lrs`` (distinct lrs), ``n_diverged``
        (diverged or at the worst value: not on the curve), ``at_edge`` (censored: its best lr is
        the smallest or largest tried, so lr* is a bound only), ``bound`` ("upper", "lower" or
        ""), ``lr_local`` (the batch size's own peak: a parabola through its trials near its best lr),
        ``off_bracket`` (the fitted lr* lies outside the lrs next to its own near-best trials),
        ``own_peak`` (``lr_star`` is ``lr_local``, not the shared shape's: see ``widened``), ``outside`` (the fitted lr* lies outside the lrs tried or far from the batch size's
        own best lr: the curves do not share one shape, and the verdict is "undetermined"), ``metric_star`` (the fitted metric at lr*) and ``used`` (its trials are in the fit;
        a censored batch size enters through its trials, as a bound, never as an exact lr*).
    skipped: batch sizes left out, with the reason ("3 finished trials, need 4").
    batch_break, batch_break_ci: the critical batch size and its 95% interval, reported when the
        single law is rejected and a law flat above b_c fits; else None.
    alpha_above: the slope above batch_break (0.0: the plateau), None without a break.
    chi2_dof, fit_p: the lack-of-fit ratio F (misfit mean square over the noise variance; about
        1 when the law fits) and its p-value (the goodness of fit of the single law).
    group: the ``by`` config values of this fit ({} without ``by``).
    settings: the options of `fit_lr_scaling` that made it (lr, batch_size, use, ...).
    shape_p, widened: where near their peaks the curves differ in shape (``shape_p`` < 0.01, an
        F test of the shared shape against each batch size's own cubic there) or a fitted lr* is
        off its bracket, the lr* intervals take in every lr next to the batch size's near-best
        trials and alpha's interval every slope those allow; alpha's interval always holds the
        slope of the ``lr_local`` peaks. There lr* is the batch size's own peak (``own_peak``),
        and where the shape test fires alpha is the slope of those peaks. ``widened`` says the intervals grew so.
    boot_params: (n_boot, 4) draws of (intercept, alpha, alpha_above, log b_c) from the
        interval's normal approximation, for the plot's band.
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
    verdict_reason: str = ""
    single_alpha: float = math.nan  # the single law's alpha (= alpha without a break)
    single_alpha_ci: tuple[float, float] = (math.nan, math.nan)
    break_p: float = math.nan  # goodness of fit of the broken law, when one was tried
    n_params: int = 0
    seed_alphas: dict[Any, float] = field(default_factory=dict)   # the exponent of each seed alone
    shape_p: float = math.nan   # near the peaks: p of one shared shape (small: the curves differ)
    widened: bool = False       # the intervals hold what each batch size's own trials show (below)

    @property
    def label(self) -> str:
        """The group as text, ``budget.steps=1000`` (empty without ``by``)."""
        return ", ".join(f"{k}={v}" for k, v in self.group.items())

    @property
    def verdict_text(self) -> str:
        """The verdict in words, with its reason."""
        return f"{VERDICTS[self.verdict]} ({self.verdict_reason})"

    @property
    def verdict_short(self) -> str:
        """The verdict as a plot title says it."""
        return _SHORT[self.verdict]

    @property
    def censored(self) -> list[float]:
        """Batch sizes whose lr* is a bound only (best lr at the edge of the range)."""
        return [float(b) for b in self.per_batch.loc[self.per_batch["at_edge"], "batch_size"]]

    def _params(self) -> np.ndarray:
        xc = math.log(self.batch_break) if self.batch_break is not None else math.inf
        return np.array([self.intercept, self.alpha, self.alpha_above or 0.0, xc])

    def predict(self, batch_size: float | np.ndarray) -> np.ndarray:
        """lr* of the fitted law at ``batch_size`` (examples per step)."""
        x = np.log(np.atleast_1d(np.asarray(batch_size, float)))
        return np.exp(_predict_log(self._params(), x))

    def band(self, batch_size: float | np.ndarray, level: float = 0.95
             ) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise interval of the fitted law's lr* at ``batch_size`` (from ``boot_params``)."""
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
        """Everything but the draws, as JSON-able Python values (non-finite -> None)."""
        return jsonable({
            "metric": self.metric, "mode": self.mode, "group": self.group,
            "alpha": self.alpha, "alpha_ci": list(self.alpha_ci), "intercept": self.intercept,
            "verdict": self.verdict, "verdict_text": self.verdict_text,
            "verdict_reason": self.verdict_reason, "batch_break": self.batch_break,
            "batch_break_ci": list(self.batch_break_ci) if self.batch_break_ci else None,
            "alpha_above": self.alpha_above, "chi2_dof": self.chi2_dof,
            "fit_p": self.fit_p, "break_p": self.break_p, "single_alpha": self.single_alpha,
            "single_alpha_ci": list(self.single_alpha_ci), "censored": self.censored,
            "n_boot": self.n_boot, "per_batch": self.per_batch.to_dict("records"),
            "skipped": self.skipped, "settings": self.settings,
            "seed_alphas": {str(k): v for k, v in self.seed_alphas.items()},
            "shape_p": self.shape_p, "widened": self.widened,
        })

    def summary(self) -> str:
        """A printable per-batch table, alpha with its interval and the verdict."""
        use = self.settings.get("use", "last")
        head = (f"lr* vs batch size: {self.metric} ({self.mode}), {use} report per trial, "
                f"one curve shape shared by all batch sizes"
                + (f" [{self.label}]" if self.label else ""))
        lines = [head, f"{'batch':>8}  {'lr*':>9}  {'95% interval':<22} {'trials':>6} "
                       f"{'lrs':>4} {'div':>4}  note"]
        for r in self.per_batch.itertuples(index=False):
            interval = f"[{_fmt(r.lr_star_lo)}, {_fmt(r.lr_star_hi)}]"
            note = ""
            if r.at_edge:
                side = "smallest" if r.bound == "upper" else "largest"
                article = "an" if r.bound == "upper" else "a"
                note = (f"censored: best at the {side} lr tried, lr* is {article} {r.bound} bound "
                        f"(in the fit through its trials, never as an exact lr*)")
            elif getattr(r, "outside", False) and getattr(r, "own_peak", False):
                note = "the shared shape does not fit it (its lr* lay far from the best lr): its own trials' peak shown"
            elif getattr(r, "outside", False):
                note = "fitted lr* far from this batch size's best lr: the shared shape does not fit it"
            elif getattr(r, "own_peak", False):
                note = "its own trials' peak (the shared shape differs here)"
            lines.append(f"{r.batch_size:>8g}  {r.lr_star:>9.3g}  {interval:<22} "
                         f"{r.n_trials:>6} {r.n_lrs:>4} {r.n_diverged:>4}  {note}".rstrip())
        lo, hi = self.single_alpha_ci
        lines.append(f"single power law: alpha = {self.single_alpha:.3f}, 95% interval "
                     f"[{lo:.3f}, {hi:.3f}]; goodness of fit F = {_fmt(self.chi2_dof)}, "
                     f"p = {_fmt(self.fit_p)}")
        if self.batch_break is not None and self.batch_break_ci is not None:
            blo, bhi = self.batch_break_ci
            alo, ahi = self.alpha_ci
            lines.append(f"broken power law fits (p = {_fmt(self.break_p)}): critical batch size "
                         f"b_c = {self.batch_break:.3g} (95% interval [{blo:.3g}, {bhi:.3g}]), "
                         f"alpha below it = {self.alpha:.3f} [{alo:.3f}, {ahi:.3f}], flat above")
        elif math.isfinite(self.break_p):
            lines.append(f"broken power law (flat above b_c) does not fit either "
                         f"(p = {_fmt(self.break_p)})")
        if self.widened:
            why = (f"near their peaks the curves differ in shape (p = {_fmt(self.shape_p)})"
                   if self.shape_p < 0.01 else "the shared shape does not place every peak where its trials do")
            lines.append(f"intervals widened to what each batch size's own trials show: {why}")
        if len(self.seed_alphas) >= 2:
            lines.append("each seed alone: " + ", ".join(f"alpha = {a:.3f} (seed {k})"
                                                         for k, a in self.seed_alphas.items())
                         + "; the interval holds their spread")
        lines.append(f"verdict: {self.verdict_text}")
        if self.censored:
            lines.append("censored batch sizes (lr* a bound only): "
                         + ", ".join(f"{b:g}" for b in self.censored))
        for b, why in self.skipped.items():
            lines.append(f"skipped batch {b:g}: {why}")
        return "\n".join(lines)


def _predict_log(params: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log lr* at log batch sizes ``x`` for (..., 4) parameter rows; broadcasts to (..., len(x))."""
    p = params[..., None]
    return p[..., 0, :] + p[..., 1, :] * np.minimum(x, p[..., 3, :]) \
        + p[..., 2, :] * np.maximum(x - p[..., 3, :], 0.0)
