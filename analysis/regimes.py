"""Training regimes by effective learning rate: label each run, then fit the ELR thresholds.

Scale-invariant networks trained on the sphere at a fixed effective learning rate (ELR) fall
into three regimes, ordered by ELR (Kodryan et al., *Training Scale-Invariant Neural Networks
on the Sphere Can Happen in Three Regimes*):

- **converged**: the train loss keeps falling toward zero;
- **chaotic**: the loss settles at a stationary, ELR-dependent level above zero;
- **diverged**: the loss stays near chance, ln C for C classes (or becomes non-finite).

`classify_regime` labels one train-loss trajectory from its last part. `regime_boundaries`
labels every trial of a search (the ``regime`` its last report holds, else from its train-loss
history) and fits the threshold between each pair of adjacent regimes: a logistic regression of
P(upper regime | log ELR) on the trials of those two regimes, with a stratified bootstrap over
trials for the 95% interval. Where the two regimes do not overlap in ELR (perfect separation,
where the logistic fit has no finite maximum) the threshold is only known to lie between the
largest ELR of the lower regime and the smallest of the upper: that gap is reported as the
interval, with its geometric midpoint as the estimate. A regime no trial reached has no boundary.

Both are exact only for a sharp boundary. Near a noisy one (repeat runs at one ELR may land in
either regime) a few trials can fail to overlap by luck, and a bootstrap over a few overlapping
ones is too narrow; so every boundary also gets a 95% *credible* interval from
`threshold_posterior`, a grid posterior over the threshold and the boundary's width that allows
for noise (``cred_lo``/``cred_hi``; bench/boundary_search.py measures how often each interval
holds the truth). `tune_lip.tune.boundary_search.BoundarySearch` places its trials with it.

Hand-written on purpose: the logistic fits of all bootstrap replicates run as one batched
Newton iteration on multinomial weights (scipy fits one replicate at a time, and treats no
separated replicate as an interval), and no library has a threshold posterior that stays
finite under separation. The slope test uses scipy's Theil-Sen.

Example:
    >>> from tune_lip.analysis import load, regime_boundaries               # doctest: +SKIP
    >>> fit = regime_boundaries(load("tune_lip_results/sphere"))           # doctest: +SKIP
    >>> print(fit.summary()); fit.plot()                                    # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.special
import scipy.stats

from tune_lip.analysis.results import config_column, jsonable

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["REGIMES", "RegimeBoundaries", "ThresholdPosterior", "classify_regime",
           "fit_regime_thresholds", "regime_boundaries", "threshold_posterior", "trial_regimes",
           "write_regime_report"]

Regime = Literal["converged", "chaotic", "diverged"]
REGIMES: tuple[Regime, ...] = ("converged", "chaotic", "diverged")  # in order of growing ELR
REGIME_COLORS = {"converged": "tab:blue", "chaotic": "tab:orange", "diverged": "tab:red"}
_EARLY_COLOR = "0.82"
_LOSS_FLOOR = 1e-12  # log of a loss of exactly 0 (a memorised batch) stays finite
_MAP_POINTS = 24  # progress points per trial on the regime map: each is one classification


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

def _progress_column(df: pd.DataFrame) -> str:
    # `steps` is work done (the same on any device); report counts are the fallback.
    if "steps" in df and pd.to_numeric(df["steps"], errors="coerce").notna().any():
        return "steps"
    return "training_iteration"


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


# ---------------------------------------------------------------------------------------------
# Logistic thresholds
# ---------------------------------------------------------------------------------------------

def _separation(x: np.ndarray, y: np.ndarray, w: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per replicate (rows of ``w``): the largest x of class 0 and the smallest of class 1."""
    present = w > 0
    lower_max = np.where(present & (y == 0), x, -np.inf).max(axis=1)
    upper_min = np.where(present & (y == 1), x, np.inf).min(axis=1)
    return lower_max, upper_min


def _newton_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, *, iters: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted ML (a, b) of logit P(y = 1) = a + b x for every row of ``w`` (R, n) at once.

    Newton's method with step halving (the log likelihood is concave, so a shorter step always
    gains); rows drop out once their step is negligible. Rows must not be separated.
    """
    R = w.shape[0]
    a, b = np.zeros(R), np.zeros(R)
    x2 = x * x

    def loglik(rows: np.ndarray, a_: np.ndarray, b_: np.ndarray) -> np.ndarray:
        eta = a_[:, None] + b_[:, None] * x  # (r, n)
        return (w[rows] * (y * eta - np.logaddexp(0.0, eta))).sum(axis=1)

    active = np.arange(R)
    current = loglik(active, a, b)
    for _ in range(iters):
        W = w[active]
        p = scipy.special.expit(a[active, None] + b[active, None] * x)
        r = W * (y - p)
        v = W * p * (1 - p)
        g0, g1 = r.sum(axis=1), r @ x
        h00, h01, h11 = v.sum(axis=1), v @ x, v @ x2
        det = np.maximum(h00 * h11 - h01 * h01, 1e-300)
        da, db = (h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det
        t = np.ones(active.size)
        for _ in range(40):
            value = loglik(active, a[active] + t * da, b[active] + t * db)
            worse = value < current[active] - 1e-12
            if not worse.any():
                break
            t = np.where(worse, t / 2, t)
        gain = ~worse
        a[active] += np.where(gain, t * da, 0.0)
        b[active] += np.where(gain, t * db, 0.0)
        current[active] = np.where(gain, value, current[active])
        moving = gain & (np.abs(t * da) + np.abs(t * db) > 1e-10)
        active = active[moving]
        if active.size == 0:
            break
    return a, b


def _logistic_thresholds(x: np.ndarray, y: np.ndarray, w: np.ndarray, *, iters: int = 100
                         ) -> np.ndarray:
    """x where P(y = 1) = 1/2 under logit P = a + b x, fitted by weighted ML per row of ``w``.

    x (n,), y (n,) in {0, 1}, w (R, n) case weights (bootstrap counts). Rows where the classes
    do not overlap get the midpoint of the gap (the ML slope is infinite there), or the shared
    x where they only touch; rows with a fitted slope <= 0 (the classes in the wrong order) NaN.
    """
    mu, sd = float(x.mean()), float(x.std()) or 1.0
    xs = (x - mu) / sd  # standardised: Newton's 2x2 systems stay well conditioned
    lower_max, upper_min = _separation(xs, y, w)
    separated = lower_max <= upper_min
    out = np.where(lower_max < upper_min, (lower_max + upper_min) / 2, lower_max)
    todo = np.flatnonzero(~separated)
    if todo.size:
        a, b = _newton_logistic(xs, y, w[todo], iters=iters)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[todo] = np.where(b > 0, -a / b, np.nan)
    return mu + sd * out


def _fit_boundary(x: np.ndarray, y: np.ndarray, *, n_boot: int, level: float,
                  rng: np.random.Generator) -> tuple[dict[str, Any] | None, np.ndarray, str]:
    """One boundary from log-ELRs ``x`` and labels ``y`` (1 = upper regime).

    Returns (row or None, bootstrap replicates of the log threshold, note).
    """
    n0, n1 = int((y == 0).sum()), int((y == 1).sum())
    lower_max, upper_min = float(x[y == 0].max()), float(x[y == 1].min())
    row: dict[str, Any] = {"n_lower": n0, "n_upper": n1}
    if lower_max <= upper_min:
        if lower_max < upper_min:
            lo, hi, est = lower_max, upper_min, (lower_max + upper_min) / 2
        else:
            # Both regimes at one ELR c and none crossing it: the threshold is near c, and
            # bounded by the nearest ELRs tried on either side.
            below, above = x[(y == 0) & (x < lower_max)], x[(y == 1) & (x > upper_min)]
            lo = float(below.max()) if below.size else lower_max
            hi = float(above.min()) if above.size else upper_min
            est = lower_max
        row.update(elr=math.exp(est), elr_lo=math.exp(lo), elr_hi=math.exp(hi),
                   method="separated")
        return row, np.zeros(0), ""
    point = float(_logistic_thresholds(x, y, np.ones((1, x.size)))[0])
    if not math.isfinite(point):
        return None, np.zeros(0), "the regimes are not ordered by ELR in these trials (the " \
                                  "fitted logistic slope is <= 0): no threshold"
    # Stratified: every replicate keeps both regimes, as many trials of each as were run.
    idx0, idx1 = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    w = np.zeros((n_boot, x.size))
    w[:, idx0] = rng.multinomial(n0, np.full(n0, 1.0 / n0), size=n_boot)
    w[:, idx1] = rng.multinomial(n1, np.full(n1, 1.0 / n1), size=n_boot)
    boot = _logistic_thresholds(x, y, w)
    finite = boot[np.isfinite(boot)]
    note = ""
    if finite.size < 0.9 * n_boot:
        note = (f"{n_boot - finite.size} of {n_boot} bootstrap replicates had the regimes in "
                f"the wrong order; the interval rests on the rest")
    if finite.size == 0:
        return None, boot, "no bootstrap replicate gave a threshold"
    q = 100 * (1 - level) / 2
    lo, hi = (float(v) for v in np.percentile(finite, [q, 100 - q]))
    # A percentile interval need not hold its point estimate; widen it so it always does.
    lo, hi = min(lo, point), max(hi, point)
    row.update(elr=math.exp(point), elr_lo=math.exp(lo), elr_hi=math.exp(hi), method="logistic")
    return row, finite, note


# ---------------------------------------------------------------------------------------------
# A grid posterior for one threshold (what a searcher needs to place the next trial)
# ---------------------------------------------------------------------------------------------

_LN10 = math.log(10.0)


@dataclass(frozen=True)
class ThresholdPosterior:
    """Posterior of a logistic boundary P(upper | x) = sigmoid((x - x0) / s) on a grid.

    x = ln ELR. The threshold x0 has a flat prior over the searched range, cut into cells
    (``edges``; observed ELRs are cell edges, so on a sharp boundary the gap between the
    regimes is one cell or a few); the scale s (the boundary's width) has a flat prior in log s
    over ``scales``. Unlike the bootstrap, this stays honest under separation: data that a sharp
    boundary explains are also explained by a noisy one with a threshold a little outside the
    gap, and the posterior keeps that mass until trials there rule it out.

    log_post: (cells, scales) normalised log posterior mass of (x0 in cell j, s = scales[k]).
    """

    edges: np.ndarray
    scales: np.ndarray
    log_post: np.ndarray = field(repr=False)

    @property
    def centres(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2

    @property
    def mass(self) -> np.ndarray:
        """Posterior mass of x0 per cell (summed over scales)."""
        return np.exp(scipy.special.logsumexp(self.log_post, axis=1))

    def quantile(self, q: float | np.ndarray) -> np.ndarray:
        """ELRs at posterior quantiles ``q`` of the threshold (linear within a cell)."""
        cdf = np.concatenate([[0.0], np.cumsum(self.mass)])
        return np.exp(np.interp(np.atleast_1d(q), cdf / cdf[-1], self.edges))

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """The equal-tailed ``level`` credible interval of the threshold, in ELR."""
        lo, hi = self.quantile(np.array([(1 - level) / 2, (1 + level) / 2]))
        return float(lo), float(hi)

    def predictive(self, elr: float | np.ndarray) -> np.ndarray:
        """P(upper regime) of a trial at ``elr``, averaged over the posterior."""
        x = np.log(np.atleast_1d(np.asarray(elr, float)))
        p = _upper_probability(x, self.centres, self.scales)  # (m, cells, scales)
        return (np.exp(self.log_post)[None] * p).sum(axis=(1, 2))

    def observe(self, elr: float, upper: bool) -> ThresholdPosterior:
        """The posterior after one more trial at ``elr`` landing in the upper regime or not."""
        ll = _log_likelihood(np.log([elr]), np.array([1.0 if upper else 0.0]), self.centres,
                             self.scales)
        return ThresholdPosterior(self.edges, self.scales, _normalise(self.log_post + ll))


def _upper_probability(x: np.ndarray, centres: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """sigmoid((x - x0) / s) for every x (m,), cell centre x0 (J,), scale s (S,): (m, J, S)."""
    return scipy.special.expit((x[:, None, None] - centres[None, :, None]) / scales[None, None, :])


def _log_likelihood(x: np.ndarray, y: np.ndarray, centres: np.ndarray, scales: np.ndarray
                    ) -> np.ndarray:
    """Log likelihood (J, S) of labels y (1 = upper) at x for each (x0, s) on the grid."""
    sign = 2 * y - 1  # log sigmoid(sign * u) is the log probability of the observed label
    out = np.zeros((centres.size, scales.size))
    for xi, si in zip(x, sign):  # one trial at a time: (J, S) memory, not (J, S, n)
        out -= np.logaddexp(0.0, -si * (xi - centres[:, None]) / scales[None, :])
    return out


def _normalise(log_p: np.ndarray) -> np.ndarray:
    return log_p - scipy.special.logsumexp(log_p)


def threshold_posterior(elr: Sequence[float] | np.ndarray, upper: Sequence[bool] | np.ndarray,
                        *, lo: float, hi: float, cells: int = 400,
                        scales_decades: tuple[float, float] = (0.003, 1.0), n_scales: int = 12
                        ) -> ThresholdPosterior:
    """Grid posterior of the threshold between two regimes (see `ThresholdPosterior`).

    elr: the trials of the two regimes; upper: whether each is in the upper one. The threshold
    ranges over [lo, hi] in ``cells`` equal cells in log ELR (plus the trials' ELRs as edges);
    the boundary's scale s over ``scales_decades`` (decades of ELR per unit of logit, log-spaced,
    ``n_scales`` values: the smallest is a practically sharp boundary).

    Example:
        >>> post = threshold_posterior([1e-4, 1e-3, 1e-2, 1e-1], [False, False, True, True],
        ...                            lo=1e-5, hi=1.0)
        >>> lo, hi = post.interval()
        >>> bool(1e-4 < lo < 1e-3 < 1e-2 < hi < 1e-1)  # around the gap, a little beyond it
        True
    """
    x = np.log(np.asarray(elr, float))
    y = np.asarray(upper, bool).astype(float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"elr and upper need one value per trial, got {x.shape} and {y.shape}")
    if not (0 < lo < hi):
        raise ValueError(f"need 0 < lo < hi, got lo={lo}, hi={hi}")
    a, b = math.log(lo), math.log(hi)
    inside = x[(x > a) & (x < b)]
    edges = np.unique(np.concatenate([np.linspace(a, b, cells + 1), inside]))
    scales = np.geomspace(*scales_decades, n_scales) * _LN10
    centres = (edges[:-1] + edges[1:]) / 2
    # Flat prior in x0 (cell mass proportional to its width) and in log s.
    log_prior = np.log(np.diff(edges))[:, None] + np.zeros(n_scales)[None, :]
    return ThresholdPosterior(edges, scales,
                              _normalise(log_prior + _log_likelihood(x, y, centres, scales)))


THRESHOLD_COLUMNS = ["lower", "upper", "elr", "elr_lo", "elr_hi", "width_decades", "method",
                     "n_lower", "n_upper", "cred_lo", "cred_hi", "cred_width_decades"]


@dataclass(frozen=True)
class RegimeBoundaries:
    """The fitted ELR thresholds between adjacent regimes, and the trials behind them.

    thresholds: one row per boundary between regimes adjacent in ELR order among those observed:
        ``lower``, ``upper`` (regime names), ``elr`` (the ELR where P(upper) = 1/2), ``elr_lo``,
        ``elr_hi`` (its ``level`` interval), ``width_decades`` (log10 elr_hi/elr_lo),
        ``method`` ("logistic": bootstrap percentile interval of the logistic fit;
        "separated": the regimes do not overlap, the interval is the gap between them and the
        estimate its geometric midpoint), ``n_lower``, ``n_upper`` (trials used), and
        ``cred_lo``, ``cred_hi``, ``cred_width_decades``: the ``level`` credible interval of
        `threshold_posterior`, which allows the boundary to be noisy. The gap is exact for a
        sharp boundary; when repeated trials near it may disagree, a gap can be luck (the
        trials just happened not to overlap) and so can a bootstrap interval built on a few
        overlapping trials: the credible interval is the one that stays honest there (in
        bench/boundary_search.py it holds the truth in ~90% of noisy cases, the fit's interval
        in 50-80%), at the price of being ~2x wider than the gap on a sharp boundary.
    notes: plain-language remarks: absent boundaries and why, trials left out, fit troubles.
    trials: one row per trial (see `trial_regimes`); ``regime`` missing for trials left out.
    history: per report ``trial_id``, ``progress``, ``train_loss`` (for the plots; empty when
        fitted from arrays).
    boot: "lower|upper" -> bootstrap replicates of the log threshold (logistic rows only).
    posteriors: "lower|upper" -> the `ThresholdPosterior` behind ``cred_lo``/``cred_hi``.
    settings: elr key, num_classes, classify_options, progress column, n_boot, level, seed.
    """

    thresholds: pd.DataFrame = field(repr=False)
    notes: list[str] = field(default_factory=list)
    trials: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    history: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    boot: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    posteriors: dict[str, ThresholdPosterior] = field(default_factory=dict, repr=False)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Trials per regime, in ELR order (0 for a regime no trial reached)."""
        labels = self.trials["regime"] if "regime" in self.trials else pd.Series(dtype=object)
        return {r: int((labels == r).sum()) for r in REGIMES}

    def boundary(self, lower: str, upper: str) -> dict[str, Any] | None:
        """The threshold row between two regimes as a dict, or None when it is absent."""
        rows = self.thresholds[(self.thresholds["lower"] == lower)
                               & (self.thresholds["upper"] == upper)]
        return None if rows.empty else rows.iloc[0].to_dict()

    def to_dict(self) -> dict[str, Any]:
        """Thresholds, notes, counts and settings as JSON-able values (non-finite -> None)."""
        return jsonable({"thresholds": self.thresholds.to_dict("records"),
                          "notes": list(self.notes), "counts": self.counts,
                          "settings": self.settings})

    def summary(self) -> str:
        """A printable table of the thresholds, the regime counts and the notes."""
        level = self.settings.get("level", 0.95)
        counts = ", ".join(f"{r} {n}" for r, n in self.counts.items())
        lines = [f"regime thresholds in ELR ({counts} trials)",
                 f"{'boundary':<20} {'ELR':>9}  {f'{level:.0%} interval':<21} {'decades':>7}  "
                 f"{'method':<9} {'trials':<7} {'credible (noisy-safe)':<21} decades"]
        for r in self.thresholds.itertuples(index=False):
            interval = f"[{r.elr_lo:.3g}, {r.elr_hi:.3g}]"
            credible = f"[{r.cred_lo:.3g}, {r.cred_hi:.3g}]"
            lines.append(f"{r.lower + ' | ' + r.upper:<20} {r.elr:>9.3g}  {interval:<21} "
                         f"{r.width_decades:>7.2f}  {r.method:<9} "
                         f"{f'{r.n_lower}+{r.n_upper}':<7} {credible:<21} "
                         f"{r.cred_width_decades:>7.2f}")
        if self.thresholds.empty:
            lines.append("(no boundary: fewer than two regimes observed)")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    # -- plots ---------------------------------------------------------------------------------

    def _need_history(self) -> pd.DataFrame:
        if self.history.empty:
            raise ValueError("no train-loss history to plot: build the fit with "
                             "regime_boundaries(df) on the frame load() returns")
        return self.history

    def _mark_thresholds(self, ax: Axes) -> None:
        for r in self.thresholds.itertuples(index=False):
            ax.axvspan(r.elr_lo, r.elr_hi, color="0.3", alpha=0.10, lw=0)
            ax.axvline(r.elr, color="0.2", ls="--", lw=1.1)

    def plot_regime_map(self, ax: Axes | None = None, *, title: str = "") -> Figure:
        """ELR (log axis) x training progress: one vertical strip per trial, coloured by the
        regime its trajectory *up to that point* is classified as (grey: too early to tell), so
        the map shows when runs commit to a regime; a strip ends in its final regime. Dashed
        lines and bands: the fitted thresholds and their intervals.
        """
        from matplotlib.collections import LineCollection
        from matplotlib.lines import Line2D

        history = self._need_history()
        fig, ax = _axes(ax)
        options = dict(self.settings.get("classify_options") or {})
        num_classes = int(self.settings.get("num_classes", 10))
        final = self.trials.set_index("trial_id")
        segments: list[list[tuple[float, float]]] = []
        colors: list[Any] = []
        for trial_id, rows in history.groupby("trial_id", sort=True):
            if trial_id not in final.index:
                continue
            loss = rows["train_loss"].to_numpy(float)
            progress = rows["progress"].to_numpy(float)
            picks = np.unique(np.linspace(0, loss.size - 1, min(_MAP_POINTS, loss.size))
                              .round().astype(int))
            elr = float(final.loc[trial_id, "elr"])
            start = float(progress[0])
            for i in picks:
                if i == loss.size - 1 and _as_regime(final.loc[trial_id, "regime"]):
                    label: str | None = final.loc[trial_id, "regime"]
                else:
                    try:
                        label = classify_regime(loss[:i + 1], num_classes=num_classes, **options)
                    except ValueError:
                        label = None
                # Each classification colours the stretch since the previous one.
                segments.append([(elr, start), (elr, float(progress[i]))])
                colors.append(REGIME_COLORS.get(label or "", _EARLY_COLOR))
                start = float(progress[i])
        ax.add_collection(LineCollection(segments, colors=colors, linewidths=5,
                                         capstyle="butt"))
        ax.autoscale_view()
        self._mark_thresholds(ax)
        ax.set_xscale("log")
        ax.set_xlabel("effective learning rate (ELR)")
        ax.set_ylabel(f"training progress ({self.settings.get('progress', 'reports')})")
        ax.set_title(title or "regime map: regime of the loss trajectory so far")
        handles = [Line2D([], [], marker="s", ls="", color=c, label=r)
                   for r, c in REGIME_COLORS.items()]
        handles.append(Line2D([], [], marker="s", ls="", color=_EARLY_COLOR,
                              label="too early to tell"))
        handles.append(Line2D([], [], ls="--", color="0.2", label="fitted threshold (band: CI)"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  fontsize="small")
        return fig

    def plot_train_loss(self, ax: Axes | None = None, *, title: str = "") -> Figure:
        """Train loss (log axis) against progress, one curve per trial coloured by its ELR (log
        colour scale); line style by final regime; the chance level ln C dotted."""
        import matplotlib.pyplot as plt
        from matplotlib.colors import LogNorm
        from matplotlib.lines import Line2D

        history = self._need_history()
        fig, ax = _axes(ax)
        final = self.trials.set_index("trial_id")
        norm = LogNorm(vmin=float(final["elr"].min()), vmax=float(final["elr"].max()) * 1.0001)
        cmap = plt.get_cmap("viridis")
        styles = {"converged": "-", "chaotic": "--", "diverged": ":"}
        for trial_id, rows in history.groupby("trial_id", sort=True):
            if trial_id not in final.index:
                continue
            loss = rows["train_loss"].to_numpy(float)
            ok = np.isfinite(loss) & (loss > 0)
            regime = _as_regime(final.loc[trial_id, "regime"])
            ax.plot(rows["progress"].to_numpy(float)[ok], loss[ok], lw=1.2, alpha=0.85,
                    color=cmap(norm(float(final.loc[trial_id, "elr"]))),
                    ls=styles.get(regime or "", "-."))
        chance = math.log(int(self.settings.get("num_classes", 10)))
        ax.axhline(chance, color="0.3", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel(f"training progress ({self.settings.get('progress', 'reports')})")
        ax.set_ylabel("train loss (nats)")
        ax.set_title(title or "train loss by ELR")
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax,
                     label="effective learning rate (ELR)")
        handles = [Line2D([], [], ls=s, color="0.3", label=r) for r, s in styles.items()]
        handles.append(Line2D([], [], ls=":", color="0.3", lw=1, label="chance, ln C"))
        ax.legend(handles=handles, loc="best", fontsize="small")
        return fig

    def plot(self, *, title: str = "") -> Figure:
        """The regime map and the train-loss curves side by side in one figure."""
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.6), layout="constrained")
        self.plot_regime_map(left, title=title)
        self.plot_train_loss(right)
        return fig


def _axes(ax: Axes | None) -> tuple[Figure, Axes]:
    # pyplot so a notebook shows the figure; matplotlib picks Agg by itself without a display.
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.8, 4.4), layout="constrained")
        return fig, ax
    return ax.get_figure(), ax  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------

def fit_regime_thresholds(elr: Sequence[float] | np.ndarray, regime: Sequence[str | None],
                          *, n_boot: int = 1000, level: float = 0.95, seed: int | None = 0,
                          elr_range: tuple[float, float] | None = None,
                          trials: pd.DataFrame | None = None,
                          history: pd.DataFrame | None = None,
                          settings: Mapping[str, Any] | None = None) -> RegimeBoundaries:
    """Thresholds between adjacent regimes from one (ELR, regime) pair per trial.

    Boundaries join regimes adjacent in the order converged < chaotic < diverged *among those
    observed*: with no chaotic trial, a converged | diverged boundary is fitted (and noted), never
    a boundary with a regime no trial reached. Each uses only the trials of its two regimes. A
    regime None (unlabelled trial) is left out. ``elr_range`` (default: the smallest and largest
    ELR given) bounds the flat prior of the credible intervals: the range searched.
    ``trials``, ``history`` and ``settings`` are
    carried into the result (`regime_boundaries` fills them). Raises ValueError for mismatched
    lengths, an unknown regime name, a non-positive ELR or bad options.

    Example:
        >>> fit = fit_regime_thresholds([1e-4, 1e-3, 1e-2, 1e-1],
        ...                             ["converged", "converged", "chaotic", "diverged"])
        >>> fit.thresholds[["lower", "upper", "method"]].values.tolist()
        [['converged', 'chaotic', 'separated'], ['chaotic', 'diverged', 'separated']]
    """
    if n_boot < 10:
        raise ValueError(f"n_boot must be >= 10, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    elr_arr = np.asarray(elr, dtype=float)
    # None, NaN or pd.NA: an unlabelled trial (pandas turns None into NaN in a column)
    labels = [r if isinstance(r, str) else None for r in regime]
    if elr_arr.ndim != 1 or elr_arr.size != len(labels):
        raise ValueError(f"elr and regime need one value per trial; got {elr_arr.size} ELRs and "
                         f"{len(labels)} regimes")
    unknown = sorted({str(r) for r in labels if r is not None and r not in REGIMES})
    if unknown:
        raise ValueError(f"unknown regime(s) {', '.join(unknown)}; valid: {', '.join(REGIMES)}")
    if not (np.isfinite(elr_arr) & (elr_arr > 0)).all():
        raise ValueError("every ELR must be finite and > 0 (the fit is in log ELR)")
    known = np.array([r is not None for r in labels], dtype=bool)
    x = np.log(elr_arr[known])
    names = np.array([r for r in labels if r is not None], dtype=object)
    rng = np.random.default_rng(seed)
    lo, hi = elr_range if elr_range is not None else (float(elr_arr.min()), float(elr_arr.max()))
    if lo >= hi:  # one ELR tried: the prior needs some room
        lo, hi = lo / 10, hi * 10

    notes: list[str] = []
    seen = [r for r in REGIMES if (names == r).any()]
    missing = [r for r in REGIMES if r not in seen]
    if missing:
        notes.append(f"no trial in regime {', '.join(missing)}: no boundary with "
                     f"{'it' if len(missing) == 1 else 'them'} is reported")
    rows: list[dict[str, Any]] = []
    boot: dict[str, np.ndarray] = {}
    posteriors: dict[str, ThresholdPosterior] = {}
    for lower, upper in zip(seen, seen[1:]):
        if REGIMES.index(upper) - REGIMES.index(lower) > 1:
            notes.append(f"{lower} | {upper} fitted directly: no trial in the regime between")
        pick = (names == lower) | (names == upper)
        y = (names[pick] == upper).astype(float)
        row, reps, note = _fit_boundary(x[pick], y, n_boot=n_boot, level=level, rng=rng)
        if note:
            notes.append(f"{lower} | {upper}: {note}")
        if row is None:
            continue
        key = f"{lower}|{upper}"
        post = threshold_posterior(np.exp(x[pick]), y > 0, lo=lo, hi=hi)
        cred_lo, cred_hi = post.interval(level)
        row.update(lower=lower, upper=upper,
                   width_decades=math.log10(row["elr_hi"] / row["elr_lo"]),
                   cred_lo=cred_lo, cred_hi=cred_hi,
                   cred_width_decades=math.log10(cred_hi / cred_lo))
        if row["method"] == "separated":
            notes.append(f"{key.replace('|', ' | ')}: no trials overlap; the interval is the gap "
                         f"between them, exact for a sharp boundary; allowing a noisy one, the "
                         f"credible interval is [{cred_lo:.3g}, {cred_hi:.3g}]")
        rows.append(row)
        posteriors[key] = post
        if reps.size:
            boot[key] = reps
    thresholds = pd.DataFrame(rows, columns=THRESHOLD_COLUMNS)
    if trials is None:
        trials = pd.DataFrame({"trial_id": np.arange(elr_arr.size), "elr": elr_arr,
                               "regime": labels, "source": "given", "why": ""})
    return RegimeBoundaries(
        thresholds=thresholds, notes=notes, trials=trials,
        history=history if history is not None else pd.DataFrame(
            columns=["trial_id", "progress", "train_loss"]),
        boot=boot, posteriors=posteriors,
        settings={**dict(settings or {}), "n_boot": n_boot, "level": level, "seed": seed,
                  "elr_range": [lo, hi]})


def regime_boundaries(df: pd.DataFrame, *, elr: str = "optimizer.elr", num_classes: int = 10,
                      n_boot: int = 1000, level: float = 0.95, seed: int | None = 0,
                      classify_options: Mapping[str, Any] | None = None) -> RegimeBoundaries:
    """Label every trial of a search, then fit the ELR thresholds between adjacent regimes.

    ``df`` is what `load` returns (one row per report). Labels come from `trial_regimes`
    (the reported ``regime`` of each trial's last report, else `classify_regime` on its
    ``train_loss`` history with ``num_classes`` and ``classify_options``); trials too short to
    classify are left out and noted. Thresholds are fitted by `fit_regime_thresholds` (logistic
    in log ELR, stratified bootstrap of ``n_boot`` draws for the ``level`` interval; separated
    regimes give the gap between them). Raises ValueError for a missing ELR column (naming the
    config columns there are), a non-positive ELR, or no trial left to fit.

    Example:
        >>> import numpy as np, pandas as pd
        >>> rows = [{"trial_id": f"t{i}", "training_iteration": k + 1, "config/optimizer/elr": e,
        ...          "train_loss": (2.3 * 0.7 ** k if e < 1e-3 else 0.5 if e < 3e-2 else 2.3)}
        ...         for i, e in enumerate(np.geomspace(1e-5, 1, 11)) for k in range(12)]
        >>> fit = regime_boundaries(pd.DataFrame(rows))
        >>> fit.thresholds[["lower", "upper"]].values.tolist()
        [['converged', 'chaotic'], ['chaotic', 'diverged']]
    """
    if df.empty:
        raise ValueError("the results are empty: no trial to label")
    trials = trial_regimes(df, elr=elr, num_classes=num_classes,
                           classify_options=classify_options)
    left_out = trials[trials["regime"].isna()]
    if len(left_out) == len(trials):
        raise ValueError(f"no trial could be labelled (e.g. trial {left_out['trial_id'].iloc[0]!r}"
                         f": {left_out['why'].iloc[0]})")
    progress = _progress_column(df)
    history = pd.DataFrame(columns=["trial_id", "progress", "train_loss"])
    if "train_loss" in df:
        order = ["trial_id", "training_iteration"] if "training_iteration" in df else ["trial_id"]
        ordered = df.sort_values(order, kind="stable")
        history = pd.DataFrame({
            "trial_id": ordered["trial_id"].to_numpy(),
            "progress": pd.to_numeric(ordered[progress], errors="coerce").to_numpy(float)
            if progress in ordered else np.arange(len(ordered), dtype=float),
            "train_loss": pd.to_numeric(ordered["train_loss"], errors="coerce").to_numpy(float),
        })
    placed = trials[np.isfinite(trials["elr"].to_numpy(float))]
    fit = fit_regime_thresholds(
        placed["elr"].to_numpy(float), list(placed["regime"]),
        n_boot=n_boot, level=level, seed=seed, trials=placed, history=history,
        settings={"elr": elr, "num_classes": num_classes,
                  "classify_options": dict(classify_options or {}), "progress": progress})
    if config_column(elr) not in df.columns:
        fit.notes.append("ELR: each trial's reported elr (lr/|w|^2, which drifts in the full space), "
                         "geometric mean over its last quarter of reports")
    if not left_out.empty:
        first = left_out.iloc[0]
        fit.notes.append(f"{len(left_out)} trial(s) left out, too short to classify (e.g. "
                         f"{first['trial_id']!r}: {first['why']})")
    return fit


def write_regime_report(df: pd.DataFrame, *, out_dir: str | Path, elr: str = "optimizer.elr",
                        title: str = "", **fit_options: Any) -> dict[str, Any]:
    """Fit the regime thresholds and write ``regime_map`` and ``train_loss_by_elr`` (PNG, PDF).

    ``fit_options`` go to `regime_boundaries` (``num_classes``, ``n_boot``, ``seed``, ...).
    Returns ``{"thresholds": [row dicts], "notes": [str], "plots": [paths as str], "summary": str}``,
    JSON-able.

    Example:
        >>> from tune_lip.analysis import load, write_regime_report          # doctest: +SKIP
        >>> write_regime_report(load("tune_lip_results/sphere"), out_dir="plots",
        ...                     title="ConvNetSI")["plots"]                 # doctest: +SKIP
        ['plots/regime_map.png', 'plots/regime_map.pdf', 'plots/train_loss_by_elr.png', ...]
    """
    import matplotlib.pyplot as plt

    from tune_lip.analysis.plots import save_figure

    fit = regime_boundaries(df, elr=elr, **fit_options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots: list[str] = []
    head = f"{title}: " if title else ""
    for name, draw, what in (("regime_map", fit.plot_regime_map, "regime map"),
                             ("train_loss_by_elr", fit.plot_train_loss, "train loss by ELR")):
        fig = draw(title=head + what)
        plots += [str(p) for p in save_figure(fig, out / name)]
        plt.close(fig)
    info = fit.to_dict()
    return {"thresholds": info["thresholds"], "notes": info["notes"], "plots": plots, "summary": fit.summary()}
