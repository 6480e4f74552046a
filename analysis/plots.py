"""Plots of experiment results (matplotlib, written as PNG and PDF).

- `plot_metric_vs_lr`: the metric of every trial against its lr, one series per batch size, with
  the fitted optima of an `LRScalingFit` marked.
- `plot_lr_scaling`: lr* against batch size on log-log axes with the fitted law, its
  band, the square-root and linear reference slopes and the critical batch size if one was found.

Example:
    >>> from tune_lip.analysis import fit_lr_scaling, load                 # doctest: +SKIP
    >>> df = load("tune_lip_results/demo")                                  # doctest: +SKIP
    >>> fit = fit_lr_scaling(df, metric="val_certified_acc", mode="max")        # doctest: +SKIP
    >>> plot_metric_vs_lr(df, metric="val_certified_acc", fit=fit,
    ...                   out="plots/metric_vs_lr")                          # doctest: +SKIP
    >>> plot_lr_scaling(fit, title="demo", out="plots/lr_scaling")          # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tune_lip.analysis.trials import trial_outcomes

if TYPE_CHECKING:  # the fit's own .plot() methods call these functions: no import back at run time
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from tune_lip.analysis.lr_scaling import LRScalingFit

__all__ = ["plot_lr_scaling", "plot_metric_vs_lr", "save_figure"]

LR_LABEL = "peak learning rate (per step)"
BATCH_LABEL = "batch size b (examples per step)"


def save_figure(fig: Figure, out: str | Path) -> list[Path]:
    """Write ``fig`` to ``out.png`` and ``out.pdf``; returns the paths."""
    base = Path(out)
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".png"), base.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    return paths


def _axes(ax: Axes | None) -> tuple[Figure, Axes]:
    # pyplot (not a bare Figure) so a notebook shows the figure inline; no backend is forced:
    # matplotlib falls back to Agg by itself where there is no display.
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
        return fig, ax
    return ax.get_figure(), ax  # type: ignore[return-value]


def _batch_label(b: float) -> str:
    return f"{b:g}"


def plot_metric_vs_lr(df: pd.DataFrame, *, metric: str, lr: str = "optimizer.lr",
                      batch_size: str = "dataset.batch_size", title: str = "",
                      out: str | Path | None = None, ax: Axes | None = None,
                      fit: LRScalingFit | None = None, mode: str = "max", use: str = "last"
                      ) -> Figure:
    """The metric of every trial against its lr (log axis), one series per batch size.

    Filled dots (joined through the mean per lr) ran their whole budget; hollow ones were stopped
    early by the scheduler (their value is from a shorter run); crosses diverged or reported a
    non-finite value (drawn at the worst value seen). With ``fit``, its lr* per batch size is a
    star with the 95% interval as a horizontal bar (a triangle pointing outward where the
    optimum is at the edge of the lr range), and the fit's lr, batch_size, mode and use settings
    replace the arguments. Written to ``out.png``/``out.pdf`` when ``out`` is given.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"trial_id": ["a", "b", "c"], "acc": [0.6, 0.9, 0.7],
        ...                    "config/optimizer/lr": [0.01, 0.1, 1.0],
        ...                    "config/dataset/batch_size": 64})
        >>> fig = plot_metric_vs_lr(df, metric="acc", title="demo")
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if fit is not None:
        lr = fit.settings.get("lr", lr)
        batch_size = fit.settings.get("batch_size", batch_size)
        mode, use = fit.mode, fit.settings.get("use", use)
    trials = trial_outcomes(df, metric=metric, mode=mode, lr=lr,  # type: ignore[arg-type]
                            batch_size=batch_size, use=use)  # type: ignore[arg-type]
    # Non-finite values are drawn where the fit counts them: at the batch size's worst value.
    worst = "min" if mode == "max" else "max"
    at_batch = trials.groupby("batch_size")["value"].transform(worst)
    bad = trials["diverged"] | trials["value"].isna()
    trials = trials.assign(value=trials["value"].fillna(at_batch).fillna(trials["value"].agg(worst)))

    fig, ax = _axes(ax)
    cmap = plt.get_cmap("viridis")
    sizes = sorted(trials["batch_size"].unique())
    stars = fit.per_batch.set_index("batch_size") if fit is not None else None
    for i, b in enumerate(sizes):
        color = cmap(0.9 * i / max(len(sizes) - 1, 1))
        rows = trials[trials["batch_size"] == b].sort_values("lr")
        good = rows[rows["finished"] & ~bad.loc[rows.index]]
        curve = good.groupby("lr")["value"].mean()
        ax.plot(curve.index, curve.to_numpy(), "-", color=color, alpha=0.7, lw=1.2)
        ax.plot(good["lr"], good["value"], "o", color=color, ms=5, label=_batch_label(b))
        stopped = rows[~rows["finished"] & ~bad.loc[rows.index]]
        ax.plot(stopped["lr"], stopped["value"], "o", mfc="none", color=color, ms=5)
        crossed = rows[bad.loc[rows.index]]
        ax.plot(crossed["lr"], crossed["value"], "x", color=color, ms=6)
        if stars is not None and b in stars.index:
            s = stars.loc[b]
            lo = s["lr_star_lo"] if math.isfinite(s["lr_star_lo"]) else s["lr_star"]
            hi = s["lr_star_hi"] if math.isfinite(s["lr_star_hi"]) else s["lr_star"]
            # at the edge, a triangle points to where lr* may lie beyond the range
            marker = "*" if not s["at_edge"] else ">" if not math.isfinite(s["lr_star_hi"]) else "<"
            ax.errorbar([s["lr_star"]], [s["metric_star"]],
                        xerr=[[s["lr_star"] - lo], [hi - s["lr_star"]]], fmt=marker, ms=13,
                        color=color, mec="black", mew=0.8, capsize=3, elinewidth=1.2, zorder=5)
    ax.set_xscale("log")
    ax.set_xlabel(LR_LABEL)
    better = "higher" if mode == "max" else "lower"
    ax.set_ylabel(f"{metric} ({better} is better; {use} report per trial)")
    ax.set_title(title or f"{metric} vs learning rate")
    ax.grid(True, which="both", alpha=0.3)
    # Legends outside the axes: they never hide a point, and matplotlib need not search for room.
    series = ax.legend(title="batch size", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                       fontsize="small")
    handles = [Line2D([], [], marker="o", ls="", color="grey", mfc="none", label="stopped early"),
               Line2D([], [], marker="x", ls="", color="grey", label="diverged / non-finite")]
    if fit is not None:
        handles.insert(0, Line2D([], [], marker="*", ls="", color="grey", mec="black", ms=12,
                                 label="fitted lr* (95% CI)"))
    ax.add_artist(series)
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize="small")
    if out is not None:
        save_figure(fig, out)
    return fig


def plot_lr_scaling(fit: LRScalingFit, *, ax: Axes | None = None, title: str = "",
                    out: str | Path | None = None,
                    noise_scale: tuple[float, tuple[float, float]] | None = None) -> Figure:
    """lr* against batch size on log-log axes.

    Points: lr* per batch size with its 95% interval (hollow triangles: optimum at the edge of
    the lr range: censored, a bound only). Line and band: the fitted law and its pointwise 95%
    band. Dashed and dotted: slopes 1/2 (lr* ∝ √b) and 1 (lr* ∝ b) through the fit at
    the geometric centre of the fitted batch sizes. A vertical line and span: the critical batch
    size and its interval, if one was found. ``noise_scale``: (B_noise, its 95% interval) from
    `tune_lip.analysis.noise_scale`, drawn beside it as a dashed line and span. Written to
    ``out.png``/``out.pdf`` when given.

    Example:
        >>> from tune_lip.analysis import fit_lr_scaling                   # doctest: +SKIP
        >>> fit = fit_lr_scaling(df, metric="acc", mode="max")              # doctest: +SKIP
        >>> plot_lr_scaling(fit, title="demo", out="plots/lr_scaling")      # doctest: +SKIP
    """
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, ax = _axes(ax)
    pb = fit.per_batch
    used, edge = pb[~pb["at_edge"]], pb[pb["at_edge"]]
    b_all = pb["batch_size"].to_numpy(float)
    grid = np.geomspace(b_all.min() / 1.25, b_all.max() * 1.25, 200)

    lo, hi = fit.band(grid)
    ax.fill_between(grid, lo, hi, color="C0", alpha=0.18, lw=0, label="95% band")
    a_lo, a_hi = fit.alpha_ci
    ax.plot(grid, fit.predict(grid), "-", color="C0", lw=2,
            label=f"fit: α = {fit.alpha:.2f} [{a_lo:.2f}, {a_hi:.2f}]")

    # Reference slopes through the fit at the geometric centre of the batch sizes that set alpha.
    xb = np.log(used["batch_size"].to_numpy(float))
    if fit.batch_break is not None:
        xb = xb[xb <= math.log(fit.batch_break)]
    x0 = float(xb.mean())
    y0 = float(np.log(fit.predict(math.exp(x0)))[0])
    references = ((0.5, "--", "√b reference (α = ½)"), (1.0, ":", "b reference (α = 1)"))
    for slope, style, label in references:
        ax.plot(grid, np.exp(y0 + slope * (np.log(grid) - x0)), style, color="0.35", lw=1.3,
                label=label)

    yerr = [used["lr_star"] - used["lr_star_lo"], used["lr_star_hi"] - used["lr_star"]]
    ax.errorbar(used["batch_size"], used["lr_star"], yerr=yerr, fmt="o", color="black", ms=6,
                capsize=3, zorder=5, label="lr* per batch size (95% interval)")
    if not edge.empty:
        high = ~np.isfinite(edge["lr_star_hi"].to_numpy(float))
        for mask, marker in ((high, "^"), (~high, "v")):
            if mask.any():
                ax.plot(edge["batch_size"][mask], edge["lr_star"][mask], marker, mfc="none",
                        mec="black", ms=8, ls="",
                        label="censored: best lr at the edge of the range (a bound)")
    if fit.batch_break is not None and fit.batch_break_ci is not None:
        b_lo, b_hi = fit.batch_break_ci
        ax.axvspan(b_lo, b_hi, color="C3", alpha=0.08, lw=0)
        ax.axvline(fit.batch_break, color="C3", ls="-.", lw=1.3,
                   label=f"critical batch b_c ≈ {fit.batch_break:g} [{b_lo:g}, {b_hi:g}]")

    if noise_scale is not None and math.isfinite(noise_scale[0]) and noise_scale[0] > 0:
        value, (n_lo, n_hi) = noise_scale
        label = f"noise scale B_noise ≈ {value:.3g} [{n_lo:.3g}, {n_hi:.3g}]"
        if grid[0] / 4 <= value <= grid[-1] * 4:
            ax.axvspan(max(n_lo, grid[0] / 4), min(n_hi, grid[-1] * 4), color="C2", alpha=0.08, lw=0)
            ax.axvline(value, color="C2", ls="--", lw=1.3, label=label)
        else:   # far off the batch sizes tried: named in the legend, not drawn
            ax.plot([], [], color="C2", ls="--", lw=1.3, label=label + " (off the axis)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(b_all)  # a tick at every batch size tried
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(BATCH_LABEL)
    ax.set_ylabel("optimal learning rate lr* (per step)")
    verdict = fit.verdict_short  # the same verdict as the summary and the JSON
    if fit.batch_break is not None:
        verdict += f"; broken law, b_c ≈ {fit.batch_break:.3g}"
    head = title or f"lr* vs batch size for {fit.metric} ({fit.mode})"
    if fit.label:
        head += f" [{fit.label}]"
    s_lo, s_hi = fit.single_alpha_ci
    ax.set_title(f"{head}\nα = {fit.single_alpha:.2f}, 95% CI [{s_lo:.2f}, {s_hi:.2f}]: {verdict}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    if out is not None:
        save_figure(fig, out)
    return fig
