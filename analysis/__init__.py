"""Analysis of tune-lip experiments: results as pandas, fits and plots.

Imports only numpy, pandas, pyarrow and matplotlib (no torch, no Ray), so a notebook loads
results in a blink.

Example:
    >>> from tune_lip.analysis import load, last_reports                       # doctest: +SKIP
    >>> df = load("tune_lip_results/demo")                                    # doctest: +SKIP
"""

from tune_lip.analysis.results import (
    PARQUET_DIR,
    best_reports,
    config_column,
    flatten_result,
    last_reports,
    load,
    ran_full_budget,
)

__all__ = ["PARQUET_DIR", "best_reports", "config_column", "flatten_result", "last_reports", "load",
           "ran_full_budget"]
