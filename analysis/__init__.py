"""Analysis of tune-lip experiments: results as pandas, fits and plots.

Imports only numpy, pandas, scipy, pyarrow and matplotlib (no torch, no Ray), so a notebook
loads results in a blink. May import: nothing else of tune-lip (a bottom layer: the studies,
the Parquet callback and the CLI above it use it).

Example:
    >>> from tune_lip.analysis import load, fit_lr_scaling                      # doctest: +SKIP
    >>> df = load("tune_lip_results/demo")                                    # doctest: +SKIP
    >>> fit = fit_lr_scaling(df, metric="val_certified_acc", mode="max")      # doctest: +SKIP
    >>> print(fit.summary()); fit.plot(); fit.plot_metric(df)                 # doctest: +SKIP
"""

from tune_lip.analysis.lr_scaling import LRScalingFit, fit_lr_scaling
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
    best_reports,
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

__all__ = [
    # results as pandas (analysis/results.py)
    "PARQUET_DIR", "best_reports", "config_column", "flatten_result", "hashable_value", "last_reports",
    "load", "ran_full_budget", "write_results",
    # lr* against batch size (lr_scaling.py, plots.py, report.py)
    "LRScalingFit", "fit_lr_scaling", "plot_lr_scaling", "plot_metric_vs_lr", "save_figure",
    "split_groups", "trial_outcomes", "write_lr_scaling_report",
    # the sphere study's regimes (regimes.py)
    "REGIMES", "RegimeBoundaries", "ThresholdPosterior", "classify_regime", "fit_regime_thresholds",
    "regime_boundaries", "threshold_posterior", "trial_regimes", "write_regime_report",
    # where a scaling rule breaks (scaling_rule.py)
    "ScalingRuleCheck", "check_scaling_rule", "write_scaling_rule_report",
]
