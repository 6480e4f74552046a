"""What every study loop shares."""

from __future__ import annotations

__all__ = ["DIVERGED_LOSS"]

# A diverged trial reports this finite loss (and zero accuracies): Ray's ASHA and Optuna
# silently mishandle NaN, so the trial must end with a finite worst value and diverged=True.
DIVERGED_LOSS = 1e6
