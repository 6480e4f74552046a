"""Plots of experiment results (matplotlib, written as PNG and PDF).

Example:
    >>> from tune_lip.analysis import load                                    # doctest: +SKIP
    >>> plot_metric_vs_lr(load("tune_lip_results/demo"), metric="certified_acc",
    ...                   out="plots/metric_vs_lr")                            # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

from tune_lip.analysis.results import config_column, last_reports, ran_full_budget

__all__ = ["plot_metric_vs_lr", "save_figure"]


def save_figure(fig: Figure, out: str | Path) -> list[Path]:
    """Write ``fig`` to ``out.png`` and ``out.pdf``; returns the paths."""
    base = Path(out)
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".png"), base.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    return paths


def plot_metric_vs_lr(df: pd.DataFrame, *, metric: str, lr: str = "optimizer.lr",
                      batch_size: str = "dataset.batch_size", title: str = "", out: str | Path | None = None,
                      ax: Axes | None = None) -> Figure:
    """Final ``metric`` of every trial against its LR (log axis), one series per batch size.

    Trials stopped early by ASHA are drawn hollow: their value is from a shorter run.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    last = last_reports(df)
    lr_col, b_col = config_column(lr), config_column(batch_size)
    for col in (lr_col, b_col, metric):
        if col not in last:
            raise KeyError(f"column {col!r} not in the results")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
    else:
        fig = ax.get_figure()
    cmap = plt.get_cmap("viridis")
    sizes = sorted(last[b_col].unique())
    finished = pd.Series([ran_full_budget(row) for row in last.to_dict("records")], index=last.index)
    for i, b in enumerate(sizes):
        color = cmap(i / max(len(sizes) - 1, 1))
        rows = last[last[b_col] == b].sort_values(lr_col)
        done = finished.loc[rows.index]
        ax.plot(rows[lr_col][done], rows[metric][done], "o-", color=color, label=f"batch {b}")
        ax.plot(rows[lr_col][~done], rows[metric][~done], "o", mfc="none", color=color)
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate (per step)")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} vs learning rate (hollow: stopped early by the scheduler)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="batch size")
    if out is not None:
        save_figure(fig, out)
    return fig
