"""Analysis of tune-lip experiments: results as pandas, fits and plots.

Imports only numpy, pandas, scipy, pyarrow and matplotlib (no torch, no Ray), so a notebook
loads results in a blink.

Example:
    >>> from tune_lip.analysis import load, fit_lr_scaling                      # doctest: +SKIP
    >>> df = load("tune_lip_results/demo")                                    # doctest: +SKIP
    >>> fit = fit_lr_scaling(df, metric="certified_acc", mode="max")          # doctest: +SKIP
    >>> print(fit.summary()); fit.plot(); fit.plot_metric(df)                 # doctest: +SKIP
"""

from tune_lip.analysis.lr_scaling import LRScalingFit, fit_lr_scaling, split_groups, trial_outcomes
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

__all__ = ["PARQUET_DIR", "LRScalingFit", "best_reports", "config_column", "fit_lr_scaling",
           "flatten_result", "hashable_value", "last_reports", "load", "plot_lr_scaling",
           "plot_metric_vs_lr", "ran_full_budget", "save_figure", "split_groups", "trial_outcomes",
           "write_lr_scaling_report", "write_results"]
__all__ += ["REGIMES", "RegimeBoundaries", "ThresholdPosterior", "classify_regime",
            "fit_regime_thresholds", "regime_boundaries", "threshold_posterior", "trial_regimes",
            "write_regime_report"]

from tune_lip.analysis.scaling_rule import (
    ScalingRuleCheck,
    check_scaling_rule,
    write_scaling_rule_report,
)

__all__ += ["ScalingRuleCheck", "check_scaling_rule", "write_scaling_rule_report"]
