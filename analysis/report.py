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

from tune_lip.analysis.lr_budget import budget_key, budget_trials
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

    Where the budget varies (`tune_lip.analysis.lr_budget.budget_key`) and ``by`` is None, the
    fit is made per budget and the joint law lr*(b, D) = c·b**alpha·D**beta is added: summary
    ``"budget law"``, ``report["budget_law"]``, figure ``lr_budget``, ``report["by"]`` the budget key.
    Where the trials report ``grad_norm_sq`` and ``grad_noise``, B_noise (`analysis.noise_scale`)
    at each batch size's lr* goes beside the fit's critical batch size: ``report["noise_scale"]``,
    a line in the summary and on the plot.

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
    whole, varying = df, budget_key(df)
    if varying is not None and by is None:   # one fit per budget, and the joint law over them
        df, by_key = budget_trials(df, varying)
        by = by_key
        report["by"] = [by_key]
    noise = _has_grad_stats(df)
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
        scale = None
        if fit is not None and noise:
            scale = _noise_beside_break(rows, fit, report, name)
        if fit is not None:
            fig = plot_lr_scaling(fit, title=title or f"lr* vs batch size for {metric} ({mode})",
                                  noise_scale=None if scale is None else (scale.b_noise, scale.ci))
            report["plots"] += [str(p) for p in save_figure(fig, out / f"lr_scaling{suffix}")]
            plt.close(fig)
    if varying is not None:
        _budget_law(whole, varying, metric, mode, title, out, report, fit_options)
    return report


def _has_grad_stats(df: pd.DataFrame) -> bool:
    return all(c in df.columns and pd.to_numeric(df[c], errors="coerce").notna().any()
               for c in ("grad_norm_sq", "grad_noise"))


def _noise_beside_break(rows: pd.DataFrame, fit: Any, report: dict[str, Any], name: str) -> Any:
    """B_noise at the trials nearest each batch size's lr*, set beside the fit's b_c: into the
    report's ``noise_scale`` and the group's summary. None when it cannot be estimated."""
    from tune_lip.analysis.noise_scale import (
        compare_with_break,
        estimate_noise_scale,
        near_optimum_trials,
    )

    try:
        scale = estimate_noise_scale(rows, trials=near_optimum_trials(rows, fit))
    except ValueError as err:
        report.setdefault("noise_scale", {})[name] = {"error": str(err)}
        return None
    versus = compare_with_break(scale, fit)
    report.setdefault("noise_scale", {})[name] = {**scale.to_dict(), "versus_break": versus}
    report["summaries"][name] += (f"\n{scale.summary()} (trials at each batch size's lr*)"
                                  f"\n{versus['text']}")
    return scale


def _budget_law(df: pd.DataFrame, key: str, metric: str, mode: Mode, title: str, out: Path,
                report: dict[str, Any], fit_options: dict[str, Any]) -> None:
    """The joint law lr*(b, D) over the budgets: its summary, JSON and figure ``lr_budget``."""
    import matplotlib.pyplot as plt

    from tune_lip.analysis.lr_budget import fit_lr_budget

    try:
        law = fit_lr_budget(df, metric=metric, mode=mode, budget=key, **fit_options)
    except ValueError as err:
        report["errors"]["budget law"] = str(err)
        return
    report["budget_law"] = law.to_dict()
    report["summaries"]["budget law"] = law.summary()
    fig = law.plot(title=title or f"lr* vs batch size and budget for {metric} ({mode})")
    report["plots"] += [str(p) for p in save_figure(fig, out / "lr_budget")]
    plt.close(fig)
