"""The gradient noise scale B_noise (McCandlish et al.'s B_simple) along training, with intervals,
and how it compares with the critical batch size of lr*(b).

McCandlish et al. (2018, *An Empirical Model of Large-Batch Training*, App. A) estimate |G|² and
tr Σ separately, average each, and only then take the ratio B_simple = tr Σ / |G|²: the ratio of
two noisy unbiased estimates is biased and heavy-tailed, their averages are not. The scaling study
(and the NQM, exactly) reports per report ``grad_norm_sq`` (G, unbiased for |∇L|²) and
``grad_noise`` (N, unbiased for the per-example tr Σ), so:

- each report is placed at its fraction of training (``training_iteration`` / ``config/reports``,
  else its ``steps`` over the trial's last), in ``bins`` equal bins;
- per bin, each trial's reports are averaged, then G and N are averaged over trials (each trial
  counts once), and B_noise = mean N / mean G (examples);
- the 95% interval is the union of scipy's BCa bootstrap over trials (paired G and N) and the
  delta method's t interval of the log ratio, so the scatter between trials (different lrs and
  batch sizes, different seeds) is in it. Where mean G may be <= 0 the upper end is +inf.

`compare_with_break` sets B_noise at the end of training beside the broken power law's critical
batch size b_c (`LRScalingFit.batch_break`): their ratio's interval (both intervals combined in
log space). "agree" only when it holds 1 and is narrower than a factor of 16 (each within 4x);
"disagree" only when it excludes 1; otherwise "undetermined".

Calibration (``tests/analysis/test_noise_scale.py``): synthetic trials with a known B_noise (trial
to trial spread 0.3 in ln G, report noise 50% of G and 20% of N), 200 experiments each: the 95%
interval held the truth in 0.955 / 0.94 / 0.91 of them with 8 / 12 / 24 trials (BCa alone:
0.88 / 0.89 / 0.885).

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"trial_id": ["a", "a", "b", "b"], "training_iteration": [1, 2, 1, 2],
    ...                    "config/reports": 2, "grad_norm_sq": [4.0, 1.0, 2.0, 1.0],
    ...                    "grad_noise": [30.0, 30.0, 30.0, 30.0]})
    >>> ns = estimate_noise_scale(df, bins=2, n_boot=200)
    >>> ns.along["b_noise"].round(1).tolist()   # 30/3 early, 30/1 at the end
    [10.0, 30.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tune_lip.analysis.results import jsonable

if TYPE_CHECKING:
    from tune_lip.analysis.lr_fit import LRScalingFit

__all__ = ["AGREE_FACTOR", "NoiseScale", "compare_with_break", "estimate_noise_scale",
           "near_optimum_trials"]

AGREE_FACTOR = 4.0   # "agree" needs the ratio's interval inside [1/4, 4] and holding 1
_DIVERGED = 1e30     # reports at or above this are the diverged floor, not statistics


@dataclass(frozen=True)
class NoiseScale:
    """B_noise along training: ``along`` has one row per bin (``fraction`` its upper end,
    ``b_noise``, ``lo``, ``hi`` (95%), ``grad_norm_sq`` and ``grad_noise`` (the means),
    ``n_trials``); ``b_noise``/``ci`` are the last bin's (the end of training)."""

    along: pd.DataFrame = field(repr=False, compare=False)
    b_noise: float
    ci: tuple[float, float]
    n_trials: int

    def summary(self) -> str:
        lo, hi = self.ci
        head = (f"gradient noise scale B_noise = tr Σ / |G|² (B_simple, examples) at the end of "
                f"training: {self.b_noise:.3g}, 95% interval [{lo:.3g}, {hi:.3g}] over "
                f"{self.n_trials} trials")
        along = ", ".join(f"{r.fraction:.2g}: {r.b_noise:.3g}" for r in self.along.itertuples()
                          if math.isfinite(r.b_noise))
        return f"{head}\n  along training (fraction: B_noise): {along}"

    def to_dict(self) -> dict[str, Any]:
        return jsonable({"b_noise": self.b_noise, "ci": list(self.ci), "n_trials": self.n_trials,
                         "along": self.along.to_dict("records")})


def _fractions(df: pd.DataFrame) -> np.ndarray:
    if "training_iteration" in df and "config/reports" in df:
        f = pd.to_numeric(df["training_iteration"], errors="coerce") / pd.to_numeric(
            df["config/reports"], errors="coerce")
        return f.to_numpy(float)
    steps = pd.to_numeric(df["steps"], errors="coerce")
    return (steps / steps.groupby(df["trial_id"]).transform("max")).to_numpy(float)


def _ratio_interval(g: np.ndarray, n: np.ndarray, n_boot: int, seed: int | None,
                    level: float) -> tuple[float, float]:
    """The ratio of means' interval: the union of scipy's BCa bootstrap over trials (paired) and
    the delta method's t interval in log space (residuals N_i - R·G_i, n - 1 dof). BCa alone held
    the truth in 0.88-0.89 of synthetic experiments with 8-24 trials; the union, see the module
    docstring."""
    import scipy.stats

    if g.size < 3:
        return (-math.inf, math.inf)
    mg = float(g.mean())
    if not mg > 0:
        return (0.0, math.inf)
    ratio = float(n.mean()) / mg
    se = float(np.std(n - ratio * g, ddof=1)) / (mg * math.sqrt(g.size))
    t = float(scipy.stats.t.ppf(0.5 + level / 2, g.size - 1))
    lo, hi = (ratio * math.exp(-t * se / ratio), ratio * math.exp(t * se / ratio)) if ratio > 0 \
        else (-math.inf, math.inf)

    def stat(gs: np.ndarray, ns: np.ndarray, axis: int = -1) -> np.ndarray:
        m = gs.mean(axis=axis)
        return np.where(m > 0, ns.mean(axis=axis) / np.where(m > 0, m, 1.0), np.inf)

    try:
        res = scipy.stats.bootstrap((g, n), stat, paired=True, vectorized=True, n_resamples=n_boot,
                                    confidence_level=level, method="BCa",
                                    rng=np.random.default_rng(seed))
        b_lo, b_hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        lo = min(lo, b_lo) if math.isfinite(b_lo) else lo
        hi = max(hi, b_hi) if not math.isnan(b_hi) else hi
    except (ValueError, FloatingPointError):
        pass
    return (max(lo, 0.0), hi)


def estimate_noise_scale(df: pd.DataFrame, *, trials: Any = None, bins: int = 10,
                         n_boot: int = 1000, seed: int | None = 0, level: float = 0.95
                         ) -> NoiseScale:
    """B_noise per fraction of training from the reports' ``grad_norm_sq`` and ``grad_noise``.

    df: what `load` returns; trials: the trial ids to use (default: all; `near_optimum_trials`
    picks those at each batch size's lr*). Diverged and non-finite reports are left out. Raises
    ValueError when no report has both statistics.
    """
    need = {"grad_norm_sq", "grad_noise", "trial_id"}
    if not need <= set(df.columns):
        raise ValueError("no grad_norm_sq / grad_noise reports (the scaling study with "
                         "grad_stats_every > 0, or the NQM, reports them)")
    rows = df if trials is None else df[df["trial_id"].isin(list(trials))]
    g = pd.to_numeric(rows["grad_norm_sq"], errors="coerce").to_numpy(float)
    n = pd.to_numeric(rows["grad_noise"], errors="coerce").to_numpy(float)
    ok = np.isfinite(g) & np.isfinite(n) & (np.abs(g) < _DIVERGED) & (np.abs(n) < _DIVERGED)
    if "diverged" in rows:
        ok &= ~rows["diverged"].fillna(False).astype(bool).to_numpy()
    frac = _fractions(rows)
    ok &= np.isfinite(frac)
    if not ok.any():
        raise ValueError("no finite grad_norm_sq / grad_noise reports to estimate B_noise from")
    data = pd.DataFrame({"trial_id": rows["trial_id"].to_numpy()[ok], "g": g[ok], "n": n[ok],
                         "bin": np.clip(np.ceil(frac[ok] * bins - 1e-9), 1, bins).astype(int)})
    per = data.groupby(["bin", "trial_id"])[["g", "n"]].mean().reset_index()
    out = []
    for k, part in per.groupby("bin", sort=True):
        gs, ns = part["g"].to_numpy(), part["n"].to_numpy()
        mg = float(gs.mean())
        value = float(ns.mean()) / mg if mg > 0 else math.inf
        lo, hi = _ratio_interval(gs, ns, n_boot, seed, level)
        out.append({"fraction": int(k) / bins, "b_noise": value, "lo": min(lo, value),
                    "hi": max(hi, value), "grad_norm_sq": mg, "grad_noise": float(ns.mean()),
                    "n_trials": int(gs.size)})
    along = pd.DataFrame(out)
    last = along.iloc[-1]
    return NoiseScale(along, float(last["b_noise"]), (float(last["lo"]), float(last["hi"])),
                      int(data["trial_id"].nunique()))


def near_optimum_trials(df: pd.DataFrame, fit: LRScalingFit) -> list[Any]:
    """Trial ids at each fitted batch size's lr tried nearest to its lr* (all seeds there). A
    censored batch size (lr* a bound at the edge of the lr range) or one whose fitted lr* lies
    off its own trials (``outside``) is left out: its nearest trials may sit at the stability
    limit, where |G|² is far from that of a tuned run (on the NQM they dominated the mean)."""
    from tune_lip.analysis.results import config_column

    lr_col = config_column(fit.settings.get("lr", "optimizer.lr"))
    b_col = config_column(fit.settings.get("batch_size", "dataset.batch_size"))
    last = df.groupby("trial_id", sort=False)[[lr_col, b_col]].last()
    ids: list[Any] = []
    for r in fit.per_batch.itertuples(index=False):
        if r.at_edge or getattr(r, "outside", False):
            continue
        at = last[last[b_col].astype(float) == r.batch_size]
        if at.empty:
            continue
        lrs = at[lr_col].astype(float)
        nearest = lrs.iloc[int(np.argmin(np.abs(np.log(lrs.to_numpy()) - math.log(r.lr_star))))]
        ids += at.index[lrs == nearest].tolist()
    return ids


def compare_with_break(ns: NoiseScale, fit: LRScalingFit) -> dict[str, Any]:
    """B_noise (end of training) beside the critical batch size of the broken power law.

    Returns ``{"code": "agree" | "disagree" | "undetermined" | "no_break", "text": ...,
    "ratio": B_noise / b_c, "ratio_ci": [lo, hi]}`` (JSON-able). The ratio's 95% interval
    combines both intervals in log space (half-widths added in quadrature)."""
    b_lo, b_hi = ns.ci
    if fit.batch_break is None or fit.batch_break_ci is None:
        sizes = fit.per_batch["batch_size"]
        where = ("inside" if sizes.min() <= ns.b_noise <= sizes.max() else
                 "above" if ns.b_noise > sizes.max() else "below")
        return jsonable({"code": "no_break", "ratio": math.nan, "ratio_ci": [math.nan, math.nan],
                         "text": f"no critical batch size to compare with (no broken law fitted); "
                                 f"B_noise = {ns.b_noise:.3g} [{b_lo:.3g}, {b_hi:.3g}] lies {where} "
                                 f"the batch sizes tried"})
    c, (c_lo, c_hi) = fit.batch_break, fit.batch_break_ci
    ratio = ns.b_noise / c
    if not (b_lo > 0 and math.isfinite(b_hi) and c_lo > 0 and math.isfinite(c_hi)):
        lo, hi = 0.0, math.inf
    else:
        hb = max(math.log(ns.b_noise / b_lo), math.log(b_hi / ns.b_noise))
        hc = max(math.log(c / c_lo), math.log(c_hi / c))
        half = math.hypot(hb, hc)
        lo, hi = ratio * math.exp(-half), ratio * math.exp(half)
    both = (f"B_noise = {ns.b_noise:.3g} [{b_lo:.3g}, {b_hi:.3g}] and b_c = {c:.3g} "
            f"[{c_lo:.3g}, {c_hi:.3g}]: ratio {ratio:.2g} [{lo:.2g}, {hi:.2g}]")
    if lo > 1 or hi < 1:
        code, text = "disagree", f"B_noise disagrees with b_c ({both}; the interval excludes 1)"
    elif lo >= 1 / AGREE_FACTOR and hi <= AGREE_FACTOR:
        code, text = "agree", (f"B_noise agrees with b_c within a factor of {AGREE_FACTOR:g} "
                               f"({both})")
    else:
        code, text = "undetermined", f"undetermined: the intervals are too wide to tell ({both})"
    return jsonable({"code": code, "text": text, "ratio": ratio, "ratio_ci": [lo, hi]})
