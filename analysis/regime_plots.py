"""The regime plots of a `RegimeBoundaries`: the regime map and the train-loss curves by ELR.

`RegimeBoundaries.plot_regime_map`, ``plot_train_loss`` and ``plot`` call these; each draws on
the fit's trials, train-loss history and headline threshold intervals.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tune_lip.analysis.regime_labels import _as_regime, classify_regime

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from tune_lip.analysis.regime_fit import RegimeBoundaries

REGIME_COLORS = {"converged": "tab:blue", "chaotic": "tab:orange", "diverged": "tab:red"}
_EARLY_COLOR = "0.82"
_MAP_POINTS = 24  # progress points per trial on the regime map: each is one classification


def _need_history(fit: RegimeBoundaries) -> pd.DataFrame:
    if fit.history.empty:
        raise ValueError("no train-loss history to plot: build the fit with "
                         "regime_boundaries(df) on the frame load() returns")
    return fit.history


def _mark_thresholds(fit: RegimeBoundaries, ax: Axes) -> None:
    for r in fit.thresholds.itertuples(index=False):
        ax.axvspan(r.elr_lo, r.elr_hi, color="0.3", alpha=0.10, lw=0)
        ax.axvline(r.elr, color="0.2", ls="--", lw=1.1)


def _axes(ax: Axes | None) -> tuple[Figure, Axes]:
    # pyplot so a notebook shows the figure; matplotlib picks Agg by itself without a display.
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.8, 4.4), layout="constrained")
        return fig, ax
    return ax.get_figure(), ax  # type: ignore[return-value]


def plot_regime_map(fit: RegimeBoundaries, ax: Axes | None = None, *, title: str = "") -> Figure:
    """ELR (log axis) x training progress: one vertical strip per trial, coloured by the regime
    its trajectory *up to that point* is classified as (grey: too early to tell), so the map
    shows when runs commit to a regime; a strip ends in its final regime. Dashed lines and
    bands: the fitted thresholds and their headline (credible) intervals.
    """
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    history = _need_history(fit)
    fig, ax = _axes(ax)
    options = dict(fit.settings.get("classify_options") or {})
    num_classes = int(fit.settings.get("num_classes", 10))
    final = fit.trials.set_index("trial_id")
    segments: list[list[tuple[float, float]]] = []
    colors: list[Any] = []
    for trial_id, rows in history.groupby("trial_id", sort=True):
        if trial_id not in final.index:
            continue
        loss = rows["train_loss"].to_numpy(float)
        progress = rows["progress"].to_numpy(float)
        picks = np.unique(np.linspace(0, loss.size - 1, min(_MAP_POINTS, loss.size))
                          .round().astype(int))
        elr = float(final.loc[trial_id, "elr"])
        start = float(progress[0])
        for i in picks:
            if i == loss.size - 1 and _as_regime(final.loc[trial_id, "regime"]):
                label: str | None = final.loc[trial_id, "regime"]
            else:
                try:
                    label = classify_regime(loss[:i + 1], num_classes=num_classes, **options)
                except ValueError:
                    label = None
            # Each classification colours the stretch since the previous one.
            segments.append([(elr, start), (elr, float(progress[i]))])
            colors.append(REGIME_COLORS.get(label or "", _EARLY_COLOR))
            start = float(progress[i])
    ax.add_collection(LineCollection(segments, colors=colors, linewidths=5, capstyle="butt"))
    ax.autoscale_view()
    _mark_thresholds(fit, ax)
    ax.set_xscale("log")
    ax.set_xlabel("effective learning rate (ELR)")
    ax.set_ylabel(f"training progress ({fit.settings.get('progress', 'reports')})")
    ax.set_title(title or "regime map: regime of the loss trajectory so far")
    handles = [Line2D([], [], marker="s", ls="", color=c, label=r)
               for r, c in REGIME_COLORS.items()]
    handles.append(Line2D([], [], marker="s", ls="", color=_EARLY_COLOR,
                          label="too early to tell"))
    level = float(fit.settings.get("level", 0.95))
    handles.append(Line2D([], [], ls="--", color="0.2",
                          label=f"threshold (band: {level:.0%} credible interval)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return fig


def plot_train_loss(fit: RegimeBoundaries, ax: Axes | None = None, *, title: str = "") -> Figure:
    """Train loss (log axis) against progress, one curve per trial coloured by its ELR (log
    colour scale); line style by final regime; the chance level ln C dotted."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.lines import Line2D

    history = _need_history(fit)
    fig, ax = _axes(ax)
    final = fit.trials.set_index("trial_id")
    norm = LogNorm(vmin=float(final["elr"].min()), vmax=float(final["elr"].max()) * 1.0001)
    cmap = plt.get_cmap("viridis")
    styles = {"converged": "-", "chaotic": "--", "diverged": ":"}
    for trial_id, rows in history.groupby("trial_id", sort=True):
        if trial_id not in final.index:
            continue
        loss = rows["train_loss"].to_numpy(float)
        ok = np.isfinite(loss) & (loss > 0)
        regime = _as_regime(final.loc[trial_id, "regime"])
        ax.plot(rows["progress"].to_numpy(float)[ok], loss[ok], lw=1.2, alpha=0.85,
                color=cmap(norm(float(final.loc[trial_id, "elr"]))),
                ls=styles.get(regime or "", "-."))
    chance = math.log(int(fit.settings.get("num_classes", 10)))
    ax.axhline(chance, color="0.3", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel(f"training progress ({fit.settings.get('progress', 'reports')})")
    ax.set_ylabel("train loss (nats)")
    ax.set_title(title or "train loss by ELR")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax,
                 label="effective learning rate (ELR)")
    handles = [Line2D([], [], ls=s, color="0.3", label=r) for r, s in styles.items()]
    handles.append(Line2D([], [], ls=":", color="0.3", lw=1, label="chance, ln C"))
    ax.legend(handles=handles, loc="best", fontsize="small")
    return fig


def plot_both(fit: RegimeBoundaries, *, title: str = "") -> Figure:
    """The regime map and the train-loss curves side by side in one figure."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.6), layout="constrained")
    plot_regime_map(fit, left, title=title)
    plot_train_loss(fit, right)
    return fig
