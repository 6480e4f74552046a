"""The lr-scaling analysis of a search in one call: fits, plots and a JSON-able summary.

`write_lr_scaling_report` is what the CLI runs; in a notebook it is the quickest way to every
figure at once.

Example:
    >>> from tune_lip.analysis import load, write_lr_scaling_report        # doctest: +SKIP
    >>> report = write_lr_scaling_report(load("tune_lip_results/demo"), metric="val_certified_acc",
    ...                                  mode="max", out_dir="plots",
    ...                                  title="demo")                      # doctest: +SKIP
    >>> report["plots"]                                                     # doctest: +SKIP
    ['plots/metric_vs_lr.png', 'plots/metric_vs_lr.pdf', 'plots/lr_scaling.png', ...]
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tune_lip.analysis.lr_scaling import fit_lr_scaling
from tune_lip.analysis.plots import plot_lr_scaling, plot_metric_vs_lr, save_figure
from tune_lip.analysis.trials import Mode, split_groups

__all__ = ["write_lr_scaling_report"]


def _file_suffix(key: Any) -> str:
    values = key if isinstance(key, tuple) else (key,)
    return "_" + "_".join(re.sub(r"[^A-Za-z0-9.=-]+", "-", str(v)).strip("-") for v in values)


def write_lr_scaling_report(df: pd.DataFrame, *, metric: str, mode: Mode, out_dir: str | Path,
                            by: str | Sequence[str] | None = None, title: str = "",
                            **fit_options: Any) -> dict[str, Any]:
    """Fit lr*(b) per ``by`` group and write its figures as PNG and PDF into ``out_dir``.

    Files: ``metric_vs_lr[_<group>]`` and ``lr_scaling[_<group>]`` (``.png`` and ``.pdf``);
    ``<group>`` is the group's value, e.g. ``lr_scaling_1000.png`` for ``by="budget.steps"``.
    ``fit_options`` go to `fit_lr_scaling` (``use``, ``n_boot``, ``include_stopped``, ...).

    Returns ``{"fits": {group: fit.to_dict()}, "summaries": {group: fit.summary()},
    "plots": [paths as str], "errors": {group: why}}``,
    JSON-able; the group is ``"all"`` without ``by``. A group whose fit is not possible (too few
    batch sizes with enough finished trials) still gets its metric-vs-lr figure and lands in
    ``errors`` with the reason: no slope is made up from too little data. Raises KeyError for a
    metric or config key the results do not have.
    """
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"fits": {}, "summaries": {}, "plots": [], "errors": {}}
    groups = split_groups(df, by)
    for key, group, rows in groups:
        values = key if isinstance(key, tuple) else (key,)
        name = "all" if by is None else "_".join(map(str, values))
        suffix = "" if by is None else _file_suffix(key)
        label = ", ".join(f"{k}={v}" for k, v in group.items())
        head = ": ".join(p for p in (title, f"{metric} vs learning rate") if p)
        try:
            fit = fit_lr_scaling(rows, metric=metric, mode=mode, **fit_options)
        except ValueError as err:
            report["errors"][name] = str(err)
            fit = None
        else:
            fit = dataclasses.replace(fit, group=group)  # fitted on this group's rows alone
            report["fits"][name] = fit.to_dict()
            report["summaries"][name] = fit.summary()
        fig = plot_metric_vs_lr(rows, metric=metric, mode=mode, fit=fit,
                                use=fit_options.get("use", "last"),
                                lr=fit_options.get("lr", "optimizer.lr"),
                                batch_size=fit_options.get("batch_size", "dataset.batch_size"),
                                title=head + (f" [{label}]" if label else ""))
        report["plots"] += [str(p) for p in save_figure(fig, out / f"metric_vs_lr{suffix}")]
        plt.close(fig)
        if fit is not None:
            fig = plot_lr_scaling(fit, title=title or f"lr* vs batch size for {metric} ({mode})")
            report["plots"] += [str(p) for p in save_figure(fig, out / f"lr_scaling{suffix}")]
            plt.close(fig)
    return report
