"""Analysis of tune-lip experiments: results as pandas, fits and plots.

Imports only numpy, pandas, scipy, pyarrow and matplotlib (no torch, no Ray), each where it is
needed: the public names load their module on first use, so ``from tune_lip.analysis import
load`` imports pandas and pyarrow only, and a notebook loads results in a blink. May import:
nothing else of tune-lip (a bottom layer: the studies, the Parquet callback and the CLI above it
use it).

Example:
    >>> from tune_lip.analysis import load, fit_lr_scaling                      # doctest: +SKIP
    >>> df = load("tune_lip_results/demo")                                    # doctest: +SKIP
    >>> fit = fit_lr_scaling(df, metric="val_certified_acc", mode="max")      # doctest: +SKIP
    >>> print(fit.summary()); fit.plot(); fit.plot_metric(df)                 # doctest: +SKIP
"""

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names, for type checkers; at run time each loads on first use
    from tune_lip.analysis.lr_budget import BudgetLawFit, fit_lr_budget
    from tune_lip.analysis.lr_scaling import LRScalingFit, fit_lr_scaling
    from tune_lip.analysis.noise_scale import NoiseScale, compare_with_break, estimate_noise_scale
    from tune_lip.analysis.plots import plot_lr_scaling, plot_metric_vs_lr, save_figure
    from tune_lip.analysis.regimes import (
        REGIMES,
        RegimeBoundaries,
        ThresholdPosterior,
        classify_regime,
        fit_regime_thresholds,
        regime_boundaries,
        threshold_posterior,
        trial_regimes,
        write_regime_report,
    )
    from tune_lip.analysis.report import write_lr_scaling_report
    from tune_lip.analysis.results import (
        PARQUET_DIR,
        best_per_group,
        best_reports,
        compact,
        config_column,
        flatten_result,
        hashable_value,
        last_reports,
        load,
        ran_full_budget,
        write_results,
    )
    from tune_lip.analysis.scaling_rule import (
        ScalingRuleCheck,
        check_scaling_rule,
        write_scaling_rule_report,
    )
    from tune_lip.analysis.trials import split_groups, trial_outcomes

_WHERE = {name: module for module, names in {  # the module under tune_lip.analysis defining each name
    "lr_scaling": ("LRScalingFit", "fit_lr_scaling"),
    "lr_budget": ("BudgetLawFit", "fit_lr_budget"),
    "noise_scale": ("NoiseScale", "compare_with_break", "estimate_noise_scale"),
    "plots": ("plot_lr_scaling", "plot_metric_vs_lr", "save_figure"),
    "regimes": ("REGIMES", "RegimeBoundaries", "ThresholdPosterior", "classify_regime",
                "fit_regime_thresholds", "regime_boundaries", "threshold_posterior", "trial_regimes",
                "write_regime_report"),
    "report": ("write_lr_scaling_report",),
    "results": ("PARQUET_DIR", "best_per_group", "best_reports", "compact", "config_column", "flatten_result", "hashable_value",
                "last_reports", "load", "ran_full_budget", "write_results"),
    "scaling_rule": ("ScalingRuleCheck", "check_scaling_rule", "write_scaling_rule_report"),
    "trials": ("split_groups", "trial_outcomes"),
}.items() for name in names}

__all__ = [
    # results as pandas (analysis/results.py)
    "PARQUET_DIR", "best_per_group", "best_reports", "compact", "config_column", "flatten_result", "hashable_value", "last_reports",
    "load", "ran_full_budget", "write_results",
    # lr* against batch size (lr_scaling.py, plots.py, report.py)
    "LRScalingFit", "fit_lr_scaling", "plot_lr_scaling", "plot_metric_vs_lr", "save_figure",
    "split_groups", "trial_outcomes", "write_lr_scaling_report",
    # lr* against batch size and budget, and the gradient noise scale (lr_budget.py, noise_scale.py)
    "BudgetLawFit", "fit_lr_budget", "NoiseScale", "compare_with_break", "estimate_noise_scale",
    # the sphere study's regimes (regimes.py)
    "REGIMES", "RegimeBoundaries", "ThresholdPosterior", "classify_regime", "fit_regime_thresholds",
    "regime_boundaries", "threshold_posterior", "trial_regimes", "write_regime_report",
    # where a scaling rule breaks (scaling_rule.py)
    "ScalingRuleCheck", "check_scaling_rule", "write_scaling_rule_report",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562): ``from tune_lip.analysis import
    load`` reads results without importing scipy, matplotlib or the fits."""
    if name not in _WHERE:
        if importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return importlib.import_module(f"{__name__}.{name}")  # a submodule, e.g. lr_star
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
