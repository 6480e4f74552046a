"""Regime labels: the three regimes and how one run gets its label.

`classify_regime` labels one train-loss trajectory; `trial_regimes` labels every trial of a
search (its reported regime, its divergence flag, else its classified train loss).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.stats

from tune_lip.analysis.results import config_column

Regime = Literal["converged", "chaotic", "diverged"]
REGIMES: tuple[Regime, ...] = ("converged", "chaotic", "diverged")  # in order of growing ELR
_LOSS_FLOOR = 1e-12  # log of a loss of exactly 0 (a memorised batch) stays finite


def _settled_elr(reports: pd.DataFrame) -> float:
    """Geometric mean of a trial's reported ``elr`` over the last quarter of its reports before
    any divergence (NaN when there is none)."""
    values = pd.to_numeric(reports["elr"], errors="coerce").to_numpy(float)
    if "diverged" in reports:
        values = values[~reports["diverged"].fillna(False).astype(bool).to_numpy()]
    values = values[np.isfinite(values) & (values > 0)]
    if not len(values):
        return math.nan
    return float(np.exp(np.log(values[len(values) - max(1, len(values) // 4):]).mean()))


# ---------------------------------------------------------------------------------------------
# One trajectory
# ---------------------------------------------------------------------------------------------

def classify_regime(train_loss: Sequence[float] | np.ndarray, *, num_classes: int,
                    tail: float = 0.25, min_tail: int = 8, min_points: int = 4,
                    chance_fraction: float = 0.9,
                    converged_loss: float = 1e-2, min_drop: float = 0.05,
                    confidence: float = 0.99) -> Regime:
    """The regime of one train-loss trajectory (reports in time order), from its last part.

    The rules, in order:

    1. any non-finite loss -> ``"diverged"`` (decisive at any length: a trial that blew up after
       one report has a one-point trajectory);
    2. fewer than ``min_points`` reports -> ValueError (too short to tell);
    3. the *tail* is the last ``tail`` fraction of the reports, but at least ``min_tail`` (or
       all of them): Theil-Sen's 99% interval needs ~8 points before a noisy fall can clear
       it. Its median is the level (the median, so one spike does not decide);
    4. level >= ``chance_fraction`` * ln(num_classes) -> ``"diverged"`` (stuck near chance).
       A run at a tiny ELR that has not yet left chance looks the same: give it more budget;
    5. level <= ``converged_loss`` (nats) -> ``"converged"`` (at the floor, where the log loss
       is only noise);
    6. a Theil-Sen line through log(loss) against report index over the tail: the loss is
       *still falling* when the whole ``confidence`` interval of its slope is below zero **and**
       the fitted line falls by at least ``min_drop`` (a fraction of the loss) across the tail
       -> ``"converged"``. Theil-Sen (the median of pairwise slopes) shrugs off the loss spikes
       of a chaotic run; the drop guards against a significant but negligible drift, since
       the interval assumes independent noise and reports are autocorrelated;
    7. otherwise a level above zero that is not falling -> ``"chaotic"`` (a rising loss lands
       here too).

    With the defaults a stationary level with 10% noise over a 24-point tail is called falling
    only when its fitted drop exceeds ~18% (the 99% interval), so chaotic runs are rarely
    mislabelled. Report often enough that the tail is a late part of the run (>= 32 reports
    keeps it to the last quarter): with 12 reports the tail is the last 8, and a chaotic run
    still settling onto its level there looks like one still falling. The fit assumes a
    constant ELR: a decaying learning-rate schedule makes a chaotic run fall too.

    Raises ValueError for an empty, multi-dimensional or too-short trajectory, or bad options.

    Example:
        >>> import numpy as np
        >>> t = np.arange(40)
        >>> classify_regime(2.3 * np.exp(-t / 8), num_classes=10)
        'converged'
        >>> classify_regime(0.5 + 0.02 * np.cos(3 * t), num_classes=10)
        'chaotic'
        >>> classify_regime([2.3, 2.31, float("nan")], num_classes=10)
        'diverged'
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (chance level is ln C), got {num_classes}")
    if not 0 < tail <= 1:
        raise ValueError(f"tail is a fraction of the trajectory in (0, 1], got {tail}")
    if min_tail < 3:
        raise ValueError(f"min_tail must be >= 3 (a slope and its interval need 3), got {min_tail}")
    if min_points < 3:
        raise ValueError(f"min_points must be >= 3 (a slope and its interval need 3), got "
                         f"{min_points}")
    if not chance_fraction > 0:
        raise ValueError(f"chance_fraction must be > 0, got {chance_fraction}")
    if not 0 <= min_drop < 1:
        raise ValueError(f"min_drop is a fraction of the loss in [0, 1), got {min_drop}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    loss = np.asarray(train_loss, dtype=float)
    if loss.ndim != 1 or loss.size == 0:
        raise ValueError(f"train_loss must be a non-empty 1-D sequence, got shape {loss.shape}")
    if not np.isfinite(loss).all():
        return "diverged"
    n = loss.size
    if n < min_points:
        raise ValueError(f"train_loss has {n} report(s); classifying a regime needs >= "
                         f"{min_points} (lower min_points or report more often)")
    m = min(n, max(min_tail, math.ceil(tail * n)))
    tail_loss = loss[-m:]
    level = float(np.median(tail_loss))
    if level >= chance_fraction * math.log(num_classes):
        return "diverged"
    if level <= converged_loss:
        return "converged"
    y = np.log(np.maximum(tail_loss, _LOSS_FLOOR))
    fit = scipy.stats.theilslopes(y, np.arange(m, dtype=float), alpha=confidence)
    drop = 1.0 - math.exp(float(fit.slope) * (m - 1))
    if fit.high_slope < 0 and drop >= min_drop:
        return "converged"
    return "chaotic"


# ---------------------------------------------------------------------------------------------
# One row per trial
# ---------------------------------------------------------------------------------------------

def _as_regime(value: Any) -> Regime | None:
    if isinstance(value, str) and value in REGIMES:
        return value  # type: ignore[return-value]
    return None


def _is_true(value: Any) -> bool:
    """A flag as Parquet or JSON may hold it: bool, 0/1 (NaN where a trial never set it), text."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.number)):
        return bool(np.isfinite(value) and value != 0)
    return isinstance(value, str) and value.strip().lower() in ("true", "1")


def trial_regimes(df: pd.DataFrame, *, elr: str = "optimizer.elr", num_classes: int = 10,
                  classify_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One row per trial: ``trial_id``, ``elr``, ``regime`` and where the label came from.

    ``regime`` is the one the trial's last report holds; without one, a true ``diverged`` flag
    in that report gives ``"diverged"``, else `classify_regime` on the trial's ``train_loss``
    history (ordered by ``training_iteration``) with ``num_classes`` and ``classify_options``;
    a NaN before the last report counts as a report without ``train_loss`` and is skipped.
    ``source`` says which: ``"reported"``, ``"diverged flag"``, ``"classified"``, or
    ``"unclassified"`` with the reason in ``why`` and ``regime`` missing (NaN; too few reports).

    ``elr`` names the config key of the ELR. A full-space search has none (its ELR lr/|w|²
    drifts): then each trial's reported ``elr`` metric is used, averaged (geometrically) over
    the last quarter of its reports before any divergence.

    Raises ValueError when the ELR is neither a config column nor reported, or an ELR is not
    positive, or when a trial needs classifying and there is no ``train_loss`` column.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"trial_id": ["a", "b"], "training_iteration": [1, 1],
        ...                    "config/optimizer/elr": [1e-4, 1e-1],
        ...                    "regime": ["converged", "diverged"]})
        >>> trial_regimes(df)[["trial_id", "regime"]].values.tolist()
        [['a', 'converged'], ['b', 'diverged']]
    """
    col = config_column(elr)
    # A full-space search (lr and weight decay) fixes no ELR: lr/|w|^2 drifts, and the loop
    # reports it as `elr`. Its trial then sits at the mean log ELR of its last quarter of
    # healthy reports, where the drift has settled (the paper's equilibrium ELR).
    reported = col not in df.columns and "elr" in df.columns
    if col not in df.columns and not reported:
        config_cols = sorted(c for c in df.columns if str(c).startswith("config/"))
        raise ValueError(f"column {col!r} (for elr={elr!r}) not in the results; config columns: "
                         f"{', '.join(config_cols) or '(none)'}")
    if "trial_id" not in df.columns:
        raise ValueError("the results have no trial_id column (pass the frame load() returns)")
    order = ["trial_id", "training_iteration"] if "training_iteration" in df else ["trial_id"]
    rows: list[dict[str, Any]] = []
    for trial_id, reports in df.sort_values(order, kind="stable").groupby("trial_id", sort=True):
        last = reports.iloc[-1]
        if reported:
            value = _settled_elr(reports)
            if not (math.isfinite(value) and value > 0):
                rows.append({"trial_id": trial_id, "elr": math.nan, "regime": None, "source": "unclassified",
                             "why": "no finite reported elr before it diverged"})
                continue
        else:
            value = float(pd.to_numeric(pd.Series([last[col]]), errors="coerce").iloc[0])
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{col}: trial {trial_id!r} has ELR {last[col]!r}; a log-ELR fit "
                             f"needs ELR > 0")
        regime = _as_regime(last.get("regime"))
        source, why = "reported", ""
        if regime is None and _is_true(last.get("diverged")):
            regime, source = "diverged", "diverged flag"
        if regime is None:
            if "train_loss" not in reports:
                raise ValueError(f"trial {trial_id!r} has no regime in its last report and the "
                                 f"results have no train_loss column to classify it from")
            losses = pd.to_numeric(reports["train_loss"], errors="coerce").to_numpy(float)
            # NaN mid-run is a report without train_loss (Parquet cannot tell it from a NaN
            # loss); a trial whose last loss is NaN did blow up, and keeps it.
            losses = np.concatenate([losses[:-1][~np.isnan(losses[:-1])], losses[-1:]])
            try:
                regime = classify_regime(losses, num_classes=num_classes,
                                         **dict(classify_options or {}))
                source = "classified"
            except ValueError as err:
                source, why = "unclassified", str(err)
        rows.append({"trial_id": trial_id, "elr": value, "regime": regime, "source": source,
                     "why": why})
    return pd.DataFrame(rows, columns=["trial_id", "elr", "regime", "source", "why"])
