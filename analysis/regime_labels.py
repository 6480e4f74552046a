"""Regime labels: the three regimes and how one run gets its label.

`classify_regime` labels one train-loss trajectory, on scales that do not depend on the
budget (fractions of the run's time, losses in units of chance); `trial_regimes` labels every
trial of a search (its reported regime, its divergence flag, else its classified train loss)
and keeps each trial's replicate (seed) beside it.
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

def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The median of ``values`` weighted by ``weights`` (> 0); at an exact split between two
    values (within rounding), their mean, so splitting one weight into k equal parts, as a
    report repeated k times does, never changes it."""
    order = np.argsort(values, kind="stable")
    v, cum = values[order], np.cumsum(weights[order])
    half = cum[-1] / 2
    i = int(np.searchsorted(cum, half * (1 - 1e-9)))
    if i + 1 < v.size and abs(cum[i] - half) <= 1e-9 * cum[-1]:
        return float((v[i] + v[i + 1]) / 2)
    return float(v[i])


def _tail_bins(loss: np.ndarray, start: float, bins: int) -> tuple[np.ndarray, float]:
    """The loss as a step function of time (report i covers [i, i + 1)): the weighted median of
    each of ``bins`` equal stretches of [start, n), and of all of it."""
    n = loss.size
    edges = np.linspace(start, n, bins + 1)
    lo, hi = np.arange(n, dtype=float), np.arange(1, n + 1, dtype=float)

    def overlap(a: float, b: float) -> np.ndarray:
        w = np.clip(np.minimum(hi, b) - np.maximum(lo, a), 0.0, None)
        return np.where(w > 1e-9 * (b - a), w, 0.0)

    medians = np.empty(bins)
    for k in range(bins):
        w = overlap(edges[k], edges[k + 1])
        medians[k] = _weighted_median(loss[w > 0], w[w > 0])
    w = overlap(start, n)
    return medians, _weighted_median(loss[w > 0], w[w > 0])


def classify_regime(train_loss: Sequence[float] | np.ndarray, *, num_classes: int,
                    tail: float = 0.25, min_tail: int = 8, bins: int = 8, min_points: int = 4,
                    chance_fraction: float = 0.9, floor_fraction: float = 0.005,
                    min_drop: float = 0.05, confidence: float = 0.99) -> Regime:
    """The regime of one train-loss trajectory (reports equally spaced in time, in order).

    The trajectory is read as a function of the run's *fraction of time* (report i of n covers
    [i/n, (i+1)/n)), and every loss level is measured in units of the chance level ln C, the
    loss of a network that knows nothing (where every run starts, for any budget). So the label
    does not depend on the budget's scale: a trajectory stretched in time (each report repeated
    k times, or interpolated onto k times as many reports) gets the same label, and so does
    one multiplied by ln C'/ln C and labelled with C' classes. The first report is deliberately
    not used as "the initial loss": it comes after one report interval of training, which
    moves with the budget; chance is the initial loss of every run on the same scale.

    The rules, in order:

    1. any non-finite loss -> ``"diverged"`` (decisive at any length: a trial that blew up after
       one report has a one-point trajectory);
    2. fewer than ``min_points`` reports -> ValueError (too short to tell);
    3. the *tail* is the last ``tail`` fraction of the run's time, cut into ``bins`` equal
       stretches, each reduced to the time-weighted median of its loss (medians, so one spike
       does not decide). A run with fewer than ``min_tail / tail`` (32) reports reads its last
       ``min_tail`` reports instead, one per bin (Theil-Sen's 99% interval needs ~8 points
       before a noisy fall can clear it); only then does the label depend on the report count;
    4. the *level* is the time-weighted median of the tail.
       level >= ``chance_fraction`` * ln C -> ``"diverged"`` (stuck near chance, 0.9 ln C =
       2.07 nats for 10 classes). A run at a tiny ELR that has not yet left chance looks the
       same: give it more budget;
    5. level <= ``floor_fraction`` * ln C -> ``"converged"`` (at the floor, 0.005 ln C = 0.0115
       nats for 10 classes, where the log loss is only noise);
    6. a Theil-Sen line through log(bin medians) against time: the loss is *still falling*
       when the whole ``confidence`` interval of its slope is below zero **and** the fitted
       line falls by at least ``min_drop`` (a fraction of the loss, so any unit of loss) across
       the tail -> ``"converged"``. Theil-Sen (the median of pairwise slopes) shrugs off the
       loss spikes of a chaotic run; the drop guards against a significant but negligible
       drift, since the interval assumes independent noise and reports are autocorrelated;
    7. otherwise a level above the floor that is not falling -> ``"chaotic"`` (a rising loss
       lands here too).

    With the defaults a stationary level with 10% noise per report is called falling only
    when its fitted drop across the tail exceeds ~20%, so chaotic runs are rarely mislabelled.
    Report often enough that the tail is a late part of the run (>= 32 reports keeps it to the
    last quarter): with 12 reports the tail is the last 8, and a chaotic run still settling onto
    its level there looks like one still falling. The fit assumes a constant ELR: a decaying
    learning-rate schedule makes a chaotic run fall too.

    Raises ValueError for an empty, multi-dimensional or too-short trajectory, or bad options.

    Example:
        >>> import numpy as np
        >>> t = np.arange(40)
        >>> classify_regime(2.3 * np.exp(-t / 8), num_classes=10)
        'converged'
        >>> classify_regime(0.5 + 0.02 * np.cos(3 * t), num_classes=10)
        'chaotic'
        >>> classify_regime(np.repeat(0.5 + 0.02 * np.cos(3 * t), 5), num_classes=10)  # 5x longer
        'chaotic'
        >>> classify_regime([2.3, 2.31, float("nan")], num_classes=10)
        'diverged'
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (chance level is ln C), got {num_classes}")
    if not 0 < tail <= 1:
        raise ValueError(f"tail is a fraction of the trajectory in (0, 1], got {tail}")
    if min_tail < 3 or bins < 3:
        raise ValueError(f"min_tail and bins must be >= 3 (a slope and its interval need 3), "
                         f"got {min_tail} and {bins}")
    if min_points < 3:
        raise ValueError(f"min_points must be >= 3 (a slope and its interval need 3), got "
                         f"{min_points}")
    if not 0 < floor_fraction < chance_fraction:
        raise ValueError(f"need 0 < floor_fraction < chance_fraction, got {floor_fraction} and "
                         f"{chance_fraction}")
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
    if tail * n >= min_tail:
        medians, level = _tail_bins(loss, (1 - tail) * n, bins)
    else:  # a short run: its last min_tail reports (or all), one per bin
        m = min(n, min_tail)
        medians, level = loss[-m:], float(np.median(loss[-m:]))
    chance = math.log(num_classes)
    if level >= chance_fraction * chance:
        return "diverged"
    if level <= floor_fraction * chance:
        return "converged"
    y = np.log(np.maximum(medians, _LOSS_FLOOR * chance))
    fit = scipy.stats.theilslopes(y, np.arange(y.size, dtype=float), alpha=confidence)
    drop = 1.0 - math.exp(float(fit.slope) * (y.size - 1))
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
                  classify_options: Mapping[str, Any] | None = None,
                  replicate: str | None = "seed") -> pd.DataFrame:
    """One row per trial: ``trial_id``, ``elr``, ``regime``, where the label came from, and
    ``replicate``: the value of the config key ``replicate`` (the seed; missing when the results
    have no such column). Replicates stay separate trials: each seed is one draw of a regime.

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
    out = pd.DataFrame(rows, columns=["trial_id", "elr", "regime", "source", "why"])
    seed_col = config_column(replicate) if replicate else ""
    if seed_col in df.columns:
        seeds = df.sort_values(order, kind="stable").groupby("trial_id", sort=True)[seed_col].last()
        out["replicate"] = out["trial_id"].map(seeds)
    else:
        out["replicate"] = math.nan
    return out
