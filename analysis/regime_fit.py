"""The ELR thresholds between adjacent regimes, with their intervals, and the result.

`fit_regime_thresholds` fits each boundary from one (ELR, regime) pair per trial;
`RegimeBoundaries` holds the thresholds with their intervals, a summary and the plots.

The headline interval of a threshold (``elr_lo``, ``elr_hi``) is the credible interval of
`threshold_posterior`, whose model lets the trials' switch points spread around the threshold,
so replicates that disagree widen it; its coverage is measured in bench/regime_coverage.py.
Beside it, for comparison, the classical fit: a logistic regression in log ELR with a stratified
bootstrap, or the gap between the regimes where they do not overlap (``fit_lo``, ``fit_hi``):
exact for a sharp boundary, but it held the truth in only 82-95% of noisy synthetic searches
(nominal 95%; bench/regime_coverage.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.special

from tune_lip.analysis import regime_plots
from tune_lip.analysis.regime_labels import REGIMES
from tune_lip.analysis.regime_plots import REGIME_COLORS as REGIME_COLORS
from tune_lip.analysis.regime_posterior import ThresholdPosterior, threshold_posterior
from tune_lip.analysis.results import jsonable

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

HEADLINE = ("elr_lo/elr_hi: the {level:.0%} credible interval of the threshold under a model "
            "that lets each trial's switch point spread around it (a noisy boundary; "
            "replicates that disagree widen it)")


# ---------------------------------------------------------------------------------------------
# The classical fit: logistic thresholds with a bootstrap, or the gap
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
        row.update(fit_elr=math.exp(est), fit_lo=math.exp(lo), fit_hi=math.exp(hi),
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
    row.update(fit_elr=math.exp(point), fit_lo=math.exp(lo), fit_hi=math.exp(hi),
               method="logistic")
    return row, finite, note


THRESHOLD_COLUMNS = ["lower", "upper", "elr", "elr_lo", "elr_hi", "width_decades", "interval",
                     "spread_decades", "n_lower", "n_upper", "n_elrs", "n_mixed",
                     "method", "fit_elr", "fit_lo", "fit_hi", "fit_width_decades",
                     "cred_lo", "cred_hi", "cred_width_decades"]


@dataclass(frozen=True)
class RegimeBoundaries:
    """The fitted ELR thresholds between adjacent regimes, and the trials behind them.

    thresholds: one row per boundary between regimes adjacent in ELR order among those observed:

        - ``lower``, ``upper``: the regime names;
        - ``elr``: the threshold, the ELR where a trial is as likely to land in either regime
          (the posterior median of `threshold_posterior`);
        - ``elr_lo``, ``elr_hi``: **the headline interval**, the ``level`` credible interval of
          that posterior, whose model lets each trial's switch point spread around the
          threshold (``interval`` says "credible"); ``width_decades`` = log10(elr_hi / elr_lo);
          ``cred_lo``, ``cred_hi``, ``cred_width_decades`` repeat it under its older names;
        - ``spread_decades``: the posterior mean spread of the switch points (0: a sharp
          boundary; the seed-to-seed noise of where training changes regime);
        - ``n_lower``, ``n_upper``: trials of each regime used (every replicate counts);
          ``n_elrs``: distinct ELRs among them; ``n_mixed``: ELRs whose replicates landed in
          both regimes (disagreeing seeds: evidence of a noisy boundary);
        - ``method``, ``fit_elr``, ``fit_lo``, ``fit_hi``, ``fit_width_decades``: the classical
          fit for comparison, "logistic" (ML threshold, stratified-bootstrap percentile
          interval) or "separated" (no overlap: the gap between the regimes, estimate at its
          geometric midpoint). Exact for a sharp boundary only: near a noisy one a gap can be
          luck and a bootstrap on a few overlapping trials is too narrow.

        Measured coverage of the headline 95% interval on 160 synthetic trials with switch
        points jittered by 0.1-0.2 decades: 93-98%, median width 0.11-0.25 decades, over four
        designs (bench/regime_coverage.py, BENCHMARKS.md).
    notes: plain-language remarks: absent boundaries and why, trials left out, fit troubles.
    trials: one row per trial (see `trial_regimes`); ``regime`` missing for trials left out.
    history: per report ``trial_id``, ``progress``, ``train_loss`` (for the plots; empty when
        fitted from arrays).
    boot: "lower|upper" -> bootstrap replicates of the log threshold (logistic rows only).
    posteriors: "lower|upper" -> the `ThresholdPosterior` behind the headline interval.
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

    @property
    def headline(self) -> str:
        """What ``elr_lo``/``elr_hi`` are, in one sentence."""
        return HEADLINE.format(level=float(self.settings.get("level", 0.95)))

    def boundary(self, lower: str, upper: str) -> dict[str, Any] | None:
        """The threshold row between two regimes as a dict, or None when it is absent."""
        rows = self.thresholds[(self.thresholds["lower"] == lower)
                               & (self.thresholds["upper"] == upper)]
        return None if rows.empty else rows.iloc[0].to_dict()

    def to_dict(self) -> dict[str, Any]:
        """Headline, thresholds, notes, counts and settings as JSON-able values (non-finite ->
        None); ``headline`` says what each row's ``elr_lo``/``elr_hi`` are."""
        return jsonable({"headline": self.headline,
                         "thresholds": self.thresholds.to_dict("records"),
                         "notes": list(self.notes), "counts": self.counts,
                         "settings": self.settings})

    def summary(self) -> str:
        """A printable table: the thresholds with their headline intervals first, then the
        classical fit beside them, the regime counts and the notes."""
        level = self.settings.get("level", 0.95)
        counts = ", ".join(f"{r} {n}" for r, n in self.counts.items())
        lines = [f"regime thresholds in ELR ({counts} trials)",
                 f"interval: {self.headline}",
                 f"{'boundary':<20} {'ELR':>9}  {f'{level:.0%} credible':<21} {'decades':>7}  "
                 f"{'spread':>6}  {'trials':<7} {'ELRs':>4} {'mixed':>5}   "
                 f"{'(sharp-only fit)':<21} method"]
        for r in self.thresholds.itertuples(index=False):
            interval = f"[{r.elr_lo:.3g}, {r.elr_hi:.3g}]"
            fit = f"[{r.fit_lo:.3g}, {r.fit_hi:.3g}]"
            lines.append(f"{r.lower + ' | ' + r.upper:<20} {r.elr:>9.3g}  {interval:<21} "
                         f"{r.width_decades:>7.2f}  {r.spread_decades:>6.2f}  "
                         f"{f'{r.n_lower}+{r.n_upper}':<7} {r.n_elrs:>4} {r.n_mixed:>5}   "
                         f"{fit:<21} {r.method}")
        if self.thresholds.empty:
            lines.append("(no boundary: fewer than two regimes observed)")
        else:
            lines.append("spread: sd of where trials switch regime, in decades (0: sharp); "
                         "mixed: ELRs whose replicates disagree")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    # -- plots (regime_plots.py) ---------------------------------------------------------------

    def plot_regime_map(self, ax: Axes | None = None, *, title: str = "") -> Figure:
        """See `tune_lip.analysis.regime_plots.plot_regime_map`."""
        return regime_plots.plot_regime_map(self, ax, title=title)

    def plot_train_loss(self, ax: Axes | None = None, *, title: str = "") -> Figure:
        """See `tune_lip.analysis.regime_plots.plot_train_loss`."""
        return regime_plots.plot_train_loss(self, ax, title=title)

    def plot(self, *, title: str = "") -> Figure:
        """The regime map and the train-loss curves side by side in one figure."""
        return regime_plots.plot_both(self, title=title)


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------

def _replicates(x: np.ndarray, y: np.ndarray) -> tuple[int, int, int]:
    """(distinct ELRs, ELRs with more than one trial, ELRs whose trials landed in both regimes)."""
    values, index, size = np.unique(x, return_inverse=True, return_counts=True)
    upper = np.bincount(index, weights=y, minlength=values.size)
    return values.size, int((size > 1).sum()), int(((upper > 0) & (upper < size)).sum())


def fit_regime_thresholds(elr: Sequence[float] | np.ndarray, regime: Sequence[str | None],
                          *, n_boot: int = 1000, level: float = 0.95, seed: int | None = 0,
                          elr_range: tuple[float, float] | None = None,
                          trials: pd.DataFrame | None = None,
                          history: pd.DataFrame | None = None,
                          settings: Mapping[str, Any] | None = None) -> RegimeBoundaries:
    """Thresholds between adjacent regimes from one (ELR, regime) pair per trial.

    Replicates (several seeds of one config) are separate trials at the same ELR: they are
    pooled, and where they disagree the headline interval widens (see `RegimeBoundaries`).
    Boundaries join regimes adjacent in the order converged < chaotic < diverged *among those
    observed*: with no chaotic trial, a converged | diverged boundary is fitted (and noted), never
    a boundary with a regime no trial reached. Each uses only the trials of its two regimes. A
    regime None (unlabelled trial) is left out. ``elr_range`` (default: the smallest and largest
    ELR given) bounds the flat prior of the credible intervals: the range searched. ``n_boot``
    and ``seed`` are the classical fit's bootstrap. ``trials``, ``history`` and ``settings`` are
    carried into the result (`regime_boundaries` fills them). Raises ValueError for mismatched
    lengths, an unknown regime name, a non-positive ELR or bad options.

    Example:
        >>> fit = fit_regime_thresholds([1e-4, 1e-3, 1e-2, 1e-1],
        ...                             ["converged", "converged", "chaotic", "diverged"])
        >>> fit.thresholds[["lower", "upper", "interval", "method"]].values.tolist()
        [['converged', 'chaotic', 'credible', 'separated'], ['chaotic', 'diverged', 'credible', 'separated']]
        >>> row = fit.boundary("converged", "chaotic")
        >>> bool(row["elr_lo"] < 1e-3 < 1e-2 < row["elr_hi"])  # beyond the gap: it may be noisy
        True
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
    n_elrs, repeated, _ = _replicates(x, np.zeros(x.size))
    if repeated:
        notes.append(f"replicates pooled: {x.size} trials at {n_elrs} ELRs ({repeated} with more "
                     f"than one); each is one draw of where training switches regime")
    rows: list[dict[str, Any]] = []
    boot: dict[str, np.ndarray] = {}
    posteriors: dict[str, ThresholdPosterior] = {}
    for lower, upper in zip(seen, seen[1:]):
        if REGIMES.index(upper) - REGIMES.index(lower) > 1:
            notes.append(f"{lower} | {upper} fitted directly: no trial in the regime between")
        pick = (names == lower) | (names == upper)
        y = (names[pick] == upper).astype(float)
        key = f"{lower}|{upper}"
        fit_row, reps, note = _fit_boundary(x[pick], y, n_boot=n_boot, level=level, rng=rng)
        if note:
            notes.append(f"{lower} | {upper}: {note}")
        if fit_row is None:  # the regimes in the wrong order: no threshold at all
            continue
        post = threshold_posterior(np.exp(x[pick]), y > 0, lo=lo, hi=hi)
        cred_lo, cred_hi = post.interval(level)
        width = math.log10(cred_hi / cred_lo)
        n_elr, _, mixed = _replicates(x[pick], y)
        row: dict[str, Any] = {
            "lower": lower, "upper": upper, "elr": post.median(), "elr_lo": cred_lo,
            "elr_hi": cred_hi, "width_decades": width, "interval": "credible",
            "spread_decades": post.spread_decades, "n_elrs": n_elr, "n_mixed": mixed,
            "cred_lo": cred_lo, "cred_hi": cred_hi, "cred_width_decades": width}
        row.update(fit_row)
        row["fit_width_decades"] = math.log10(row["fit_hi"] / row["fit_lo"])
        if mixed:
            notes.append(f"{lower} | {upper}: replicates landed in both regimes at {mixed} "
                         f"ELR(s); the interval allows for a noisy boundary")
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
