"""Metric trajectories on an SDE-time clock, for `check_scaling_rule`.

Per report: the time (``sde_time``, or steps·lr accumulated per trial), the metric and the
gradient statistics; per trajectory: its value at a time and the noise of its last quarter.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tune_lip.analysis.results import config_column

LR_STEPS = "steps·lr"   # the time axis computed from steps and lr when there is no sde_time
GRAD_STATS = ("grad_norm_sq", "grad_noise")   # G_t and N_t of the scaling study
_TAIL = 0.25   # the last quarter of the horizon gives a single trajectory's noise


# ---------------------------------------------------------------------------------------------
# Trajectories
# ---------------------------------------------------------------------------------------------

def _trajectories(df: pd.DataFrame, *, metric: str, batch_size: str, time: str
                  ) -> tuple[pd.DataFrame, str]:
    """One row per report: trial_id, batch_size, time, value and the G_t/N_t columns present."""
    b_col = config_column(batch_size)
    for col, what in (("trial_id", "trial ids"), (metric, "the metric"), (b_col, batch_size)):
        if col not in df.columns:
            raise ValueError(f"column {col!r} ({what}) not in the results; columns: "
                             f"{', '.join(sorted(map(str, df.columns))[:30])}")
    order = [c for c in ("training_iteration", "steps") if c in df.columns]
    rows = df.sort_values(["trial_id", *order], kind="stable") if order else df
    out = pd.DataFrame({"trial_id": rows["trial_id"].to_numpy(),
                        "batch_size": pd.to_numeric(rows[b_col], errors="coerce").to_numpy(float),
                        "value": pd.to_numeric(rows[metric], errors="coerce").to_numpy(float)})
    for col in GRAD_STATS:
        if col in rows.columns:
            out[col] = pd.to_numeric(rows[col], errors="coerce").to_numpy(float)
    if time in rows.columns:
        out["time"] = pd.to_numeric(rows[time], errors="coerce").to_numpy(float)
        return out, time
    if time not in ("sde_time", LR_STEPS):
        raise ValueError(f"time column {time!r} not in the results")
    # lr_now is the current (scheduled) LR; older experiments reported it as lr (the peak now).
    lr_col = "lr_now" if "lr_now" in rows.columns else "lr"
    if "steps" not in rows.columns or lr_col not in rows.columns:
        raise ValueError("no 'sde_time' column, and no 'steps' and 'lr_now' (or 'lr') columns to "
                         "compute SDE time as steps·lr from; pass time=<column>")
    steps = pd.to_numeric(rows["steps"], errors="coerce").to_numpy(float)
    lr = pd.to_numeric(rows[lr_col], errors="coerce").to_numpy(float)
    # Σ lr·Δsteps per trial: lr_now is the slice's last step's, so a scheduled lr is approximate.
    delta = pd.Series(steps).groupby(out["trial_id"].to_numpy()).diff().fillna(pd.Series(steps)).to_numpy()
    out["time"] = pd.Series(lr * delta).groupby(out["trial_id"].to_numpy()).cumsum().to_numpy()
    return out, LR_STEPS


def _value_at(t: np.ndarray, v: np.ndarray, at: float) -> float:
    """The trajectory (t, v) at time ``at``, linear between reports; NaN if none is finite."""
    ok = np.isfinite(t) & np.isfinite(v)
    if not ok.any():
        return math.nan
    t, v = t[ok], v[ok]
    order = np.argsort(t, kind="stable")
    return float(np.interp(at, t[order], v[order]))


def _tail_noise(t: np.ndarray, v: np.ndarray, horizon: float) -> tuple[float, int]:
    """(standard deviation around a line, dof) of the reports in the horizon's last quarter."""
    ok = np.isfinite(t) & np.isfinite(v) & (t >= (1 - _TAIL) * horizon) & (t <= horizon * (1 + 1e-9))
    t, v = t[ok], v[ok]
    if len(t) < 3 or np.ptp(t) == 0:
        return math.nan, 0
    slope, intercept = np.polyfit(t, v, 1)
    residual = v - (slope * t + intercept)
    return float(math.sqrt(np.sum(residual ** 2) / (len(t) - 2))), len(t) - 2
