"""How the optimal learning rate scales with batch size: lr*(b) = exp(intercept) · b**alpha.

One model over every trial (`tune_lip.analysis.lr_star`): the metric is a level per batch size
plus one curve shape shared by all of them, shifted along log lr by alpha · log b. alpha is
profiled, its 95% interval is the profile-likelihood set (replicate seeds' scatter included),
widened by the lack-of-fit ratio when the batch sizes scatter around the law more than the
noise explains. A lack-of-fit F test against free per-batch shifts is the goodness of fit;
where it rejects, a broken law (slope alpha up to a critical batch size b_c, flat above) is
tried, and b_c is reported with its interval if that law fits.

The verdict (`VERDICTS`): "sqrt" or "linear" only when the law fits (fit_p >= 0.05), the
interval is at most `MAX_WIDTH` wide and excludes the other rule; "other" when it excludes
both; "undetermined" when it holds both, is wider than `MAX_WIDTH`, or fewer than 3 batch sizes
have lr* inside the lr range; "no_single_law" when the goodness of fit rejects the law.

Where the curves do not share one shape the profile interval is not to be trusted, so each
batch size's own trials are read too, without a shared shape: the near-best lrs (within two
standard errors of its best, the noise from a cubic in ln lr over its trials near the best) and
the lrs next to them (its *bracket*), and the top of a parabola through its trials near the
best (``lr_local``). Where near the peaks the shared shape fits worse than those cubics (an F
test, p < `SHAPE_LEVEL`) or puts a batch size's lr* outside its bracket, every lr* interval takes
in its bracket and alpha's interval every slope the brackets allow; alpha's interval always holds
the slope of the ``lr_local`` peaks. ``fit.widened`` and the summary say when this happened.

Calibration, measured by `tests/analysis/test_lr_coverage.py` and `bench/alpha_coverage.py`
(BENCHMARKS.md): one fixed lr range for every batch size, symmetric and asymmetric curves with a
divergence cliff; numbers in those files. On the noisy quadratic model, whose curves differ in
shape near the divergence edge (`tests/analysis/test_lr_nqm_coverage.py`,
`bench/lr_scaling_nqm.py`): alpha's coverage 0.95-0.96 and lr*'s 0.92-0.955 (0.58-0.68 and
0.48-0.56 with the shared shape alone).

Example:
    >>> from tune_lip.analysis import fit_lr_scaling, load                 # doctest: +SKIP
    >>> fit = fit_lr_scaling(load("tune_lip_results/demo"), metric="val_certified_acc",
    ...                      mode="max")                                    # doctest: +SKIP
    >>> print(fit.summary()); fit.plot()                                    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import pandas as pd
import scipy.stats

from tune_lip.analysis.lr_fit import (  # noqa: F401  (re-exported: this module's names before the split)
    _MIN_USABLE,
    _SHORT,
    FIT_LEVEL,
    MAX_WIDTH,
    VERDICTS,
    LRScalingFit,
    _fmt,
    _predict_log,
    verdict_of,
)
from tune_lip.analysis.lr_star import (
    BrokenLine,
    LawFit,
    Misfit,
    Trials,
    broken_line,
    fit_law,
    free_model,
    free_shifts,
    lack_of_fit,
    max_basis,
    n_basis,
    seed_lack_of_fit,
    threshold,
)
from tune_lip.analysis.results import config_column
from tune_lip.analysis.trials import Mode, Use, split_groups, trial_outcomes

if TYPE_CHECKING:
    pass

__all__ = ["MAX_WIDTH", "VERDICTS", "LRScalingFit", "fit_lr_scaling", "split_groups",
           "trial_outcomes"]

_MIN_DISTINCT_LRS = 3  # a curve's shape needs three distinct learning rates


def _floor_trials(rows: pd.DataFrame) -> np.ndarray:
    """Trials off the curve: diverged, non-finite, or tied at the batch size's worst value."""
    value = rows["value"].to_numpy(float)
    off = rows["diverged"].to_numpy(bool) | ~np.isfinite(value)
    finite = value[~off]
    if finite.size:
        worst = finite.min()
        tied = np.isfinite(value) & (value == worst)
        if tied.sum() >= 2:  # a metric that stuck at one value: the divergence floor
            off |= tied
    return off


def _edge(rows: pd.DataFrame, score: np.ndarray) -> str:
    """"upper"/"lower" when the best mean score (over seeds) is at the smallest/largest lr."""
    means = pd.Series(score, index=rows["lr"].to_numpy()).groupby(level=0).mean()
    if means.size < 2:
        return ""
    best = int(np.argmax(means.to_numpy()))
    return "upper" if best == 0 else "lower" if best == means.size - 1 else ""


def _seed_groups(tr: Trials, rows: list[pd.DataFrame]) -> tuple[np.ndarray, np.ndarray] | None:
    """(group per trial, batch per group) of the (batch size, seed) pairs with a curve of their
    own (>= 3 distinct lrs), when replicates give >= 2 degrees of freedom between seeds; else
    None. Trials in no such group get -1."""
    if not all("replicate" in r for r in rows):
        return None
    label = np.concatenate([r["replicate"].astype(str).to_numpy() for r in rows])
    lr = np.exp(tr.x)
    groups = np.full(tr.n, -1)
    batches: list[int] = []
    for j in range(tr.lb.size):
        for rep in np.unique(label[tr.batch == j]):
            mask = (tr.batch == j) & (label == rep)
            if np.unique(lr[mask]).size >= _MIN_DISTINCT_LRS:
                groups[mask] = len(batches)
                batches.append(j)
    group_batch = np.asarray(batches, int)
    spare = len(batches) - np.unique(group_batch).size
    return (groups, group_batch) if spare >= 2 else None


def _peak(tr: Trials, law: LawFit) -> tuple[float, np.ndarray]:
    """(u*, the metric's score at u* per batch size) of the shape refitted at the law's exponent with an AICc-sized spline: the
    exponent's spline may wiggle on the curve's flat top, where the peak would wander."""
    k = n_basis(tr, law.alpha)
    smooth = law if k == law.k else fit_law(
        tr, k, None if not math.isfinite(law.log_break) else np.array([law.log_break]),
        grid=np.array([law.alpha]))
    u_star, g_star = smooth.peak()
    return u_star, smooth.levels + g_star


MIN_TRIALS = 4   # finished trials a batch size needs by default (a scheduler must leave this many)
SHAPE_LEVEL = 0.01   # p below which the curves are taken to differ in shape near their peaks
RESOLUTION = 0.1   # lr* per batch size is known to no better than this fraction of the lr spacing


def _lr_spacing(tr: Trials) -> float:
    """The median spacing (ln lr) of the lrs tried, the median over batch sizes; NaN if none."""
    gaps = [np.diff(np.unique(tr.x[tr.batch == j])) for j in range(tr.lb.size)]
    gaps = [g for g in gaps if g.size]
    return float(np.median([np.median(g) for g in gaps])) if gaps else math.nan


def _resolution_floor(tr: Trials, alpha: float, ci: tuple[float, float]) -> tuple[float, float]:
    """The alpha interval, at least as wide as the lrs tried can resolve, and holding alpha.

    On (nearly) noise-free curves the profile interval shrinks to the residual noise, but one
    spline shape fitted to lrs spaced d apart (in ln lr) places each peak only to about
    ``RESOLUTION`` * d: the shape's approximation error, which no residual shows. On the noisy
    quadratic model (exact losses) the profile interval was [0.989, 0.992] around the exact
    0.982. The floor is that per-batch error carried to the slope: 1.96 * RESOLUTION * d /
    (sd(ln b) * sqrt(n_b)).
    """
    d = _lr_spacing(tr)
    if not math.isfinite(d) or tr.lb.size < 2 or not np.std(tr.lb) > 0:
        return ci
    half = 1.959964 * RESOLUTION * d / (float(np.std(tr.lb)) * math.sqrt(tr.lb.size))
    return (min(ci[0], alpha - half), max(ci[1], alpha + half))


def _bracket(rows: pd.DataFrame, score: np.ndarray, off: np.ndarray, sigma: float) -> tuple[float, float]:
    """(lo, hi) in ln lr: the lrs next to those within the noise of the batch size's best.

    The lrs whose mean score (over seeds) is within 2 standard errors (``sigma``/sqrt(seeds)) of the
    best mean are the near-best; the bracket runs from the tried lr just below the smallest of them
    to the one just above the largest (-inf / inf past the ends). On a curve with one peak and
    noise below ``sigma`` the batch size's true optimum lies inside: a model-free statement.
    """
    keep = ~off
    lr = rows["lr"].to_numpy(float)[keep]
    stats = pd.DataFrame({"x": np.log(lr), "y": score[keep]}).groupby("x")["y"].agg(["mean", "count"])
    x, mean, count = stats.index.to_numpy(float), stats["mean"].to_numpy(float), stats["count"].to_numpy(float)
    near = np.flatnonzero(mean >= mean.max() - 2.0 * sigma / np.sqrt(count))
    lo = x[near[0] - 1] if near[0] > 0 else -math.inf
    hi = x[near[-1] + 1] if near[-1] < x.size - 1 else math.inf
    return float(lo), float(hi)


def _near_peak_fit(kept: list[tuple[float, pd.DataFrame, np.ndarray]], sign: float, tr: Trials,
                   law: LawFit) -> tuple[float, float]:
    """(sigma, p): how well one shared curve shape fits near the batch sizes' peaks.

    Each batch size's own trials within 1.5 (ln lr) of its best lr get a cubic in ln lr of their
    own (a quadratic with fewer than 6 distinct lrs): its pooled residual deviation ``sigma`` is the
    metric's noise there, with no shared shape assumed. ``p`` is the chance of the law's residuals
    on those same trials being as large as they are if the shape were shared (an F test of their
    mean square against sigma²). A small p: near their peaks the curves differ in shape (on the
    NQM, the divergence edge that does not move with b), so lr* placed by the shared shape is
    not to be trusted beyond what each batch size's own trials show. (nan, nan) without enough
    trials near the peaks.
    """
    u = tr.x - law.shifts(tr.lb)[tr.batch]
    resid = tr.y - law.levels[tr.batch] - law.shape(u)
    rss = shared = 0.0
    dof = near = 0
    for j, (_, rows, off) in enumerate(kept):
        x = np.log(rows["lr"].to_numpy(float))[~off]
        y = sign * rows["value"].to_numpy(float)[~off]
        close = np.abs(x - x[int(np.argmax(y))]) <= 1.5
        distinct = np.unique(x[close]).size
        degree = 3 if distinct >= 6 else 2
        if distinct < degree + 2:
            continue
        coef = np.polyfit(x[close], y[close], degree)
        rss += float(((y[close] - np.polyval(coef, x[close])) ** 2).sum())
        dof += int(close.sum()) - degree - 1
        shared += float((resid[tr.batch == j][close] ** 2).sum())
        near += int(close.sum())
    if dof <= 0 or near == 0:
        return math.nan, math.nan
    sigma2 = rss / dof
    if not sigma2 > 0:
        return 0.0, (0.0 if shared > 0 else 1.0)
    return math.sqrt(sigma2), float(scipy.stats.f.sf((shared / near) / sigma2, near, dof))


def _local_peak(rows: pd.DataFrame, score: np.ndarray, off: np.ndarray, bracket: tuple[float, float]) -> float:
    """ln lr* of one batch size from its own trials alone: the vertex of a parabola in ln lr through
    its trials within 1.0 of its best lr (the best lr itself with fewer than 3 distinct lrs
    there, or a parabola without a top), kept inside ``bracket``."""
    x = np.log(rows["lr"].to_numpy(float))[~off]
    y = score[~off]
    best = x[int(np.argmax(y))]
    close = np.abs(x - best) <= 1.0
    if np.unique(x[close]).size < 3:
        return float(best)
    a, b, _ = np.polyfit(x[close] - best, y[close], 2)
    peak = best - b / (2 * a) if a < 0 else best
    return float(np.clip(peak, *bracket))


def _bracket_alpha(lb: np.ndarray, brackets: np.ndarray) -> tuple[float, float]:
    """The range of the least-squares slope of ln lr* on ln b when each batch size's ln lr* may be
    anywhere in its bracket (rows of ``brackets``): what the trials show without a shared shape."""
    d = lb - lb.mean()
    w = d / float((d**2).sum())
    pos, neg = w > 0, w < 0
    lo = float(np.sum(w[pos] * brackets[pos, 0]) + np.sum(w[neg] * brackets[neg, 1]))
    hi = float(np.sum(w[pos] * brackets[pos, 1]) + np.sum(w[neg] * brackets[neg, 0]))
    return (lo if math.isfinite(lo) else -math.inf), (hi if math.isfinite(hi) else math.inf)


def _near_best(rows: pd.DataFrame, score: np.ndarray, lr_star: float) -> bool:
    """Whether ``lr_star`` lies where the batch size's own trials put its optimum: inside the lrs
    it tried, and within max(two grid steps, a quarter of the tried range) in ln lr of its best
    lr (the best mean score over its seeds). A shared shape that puts the optimum elsewhere does
    not describe this batch size's curve."""
    means = pd.Series(score, index=rows["lr"].to_numpy(float)).groupby(level=0).mean()
    x = np.log(means.index.to_numpy(float))            # ascending
    if not x[0] - 1e-9 <= math.log(lr_star) <= x[-1] + 1e-9:
        return False
    if x.size < 2:
        return True
    best = x[int(np.nanargmax(means.to_numpy(float)))]
    reach = max(2 * float(np.median(np.diff(x))), 0.25 * float(x[-1] - x[0]))
    return bool(abs(math.log(lr_star) - best) <= reach)


def _goodness(tr: Trials, law: Any, misfit: Any, seeds: tuple[np.ndarray, np.ndarray] | None,
              log_break: float) -> tuple[float, float, Misfit | None]:
    """(p-value, F) of the law's goodness of fit: against the seeds' scatter where replicates
    give one (`seed_lack_of_fit`, also returned: its s2 is the seeds' variance of lr* in ln
    units), else against the noise (`lack_of_fit`)."""
    if seeds is None:
        return misfit.p, misfit.f, None
    groups, group_batch = seeds
    inside = groups >= 0
    sub = Trials(tr.x[inside], tr.y[inside], tr.batch[inside], tr.lb)
    shifts = free_shifts(sub, law, groups[inside], group_batch).shift
    below = np.minimum(tr.lb, log_break)
    design = np.stack([np.ones_like(below), below], axis=1)
    m = seed_lack_of_fit(shifts, group_batch, design, extra=int(math.isfinite(log_break)))
    return m.p, m.f, m


def _seed_half_width(between_seeds: Misfit | None,
                     seeds: tuple[np.ndarray, np.ndarray] | None, j: int) -> float:
    """Half-width (ln lr) of the 95% interval of batch size j's lr* from its seeds' spread: the
    seeds' variance of their own lr* (pooled over the batch sizes) over the seeds it has; 0
    without replicates."""
    if between_seeds is None or seeds is None or not math.isfinite(between_seeds.s2):
        return 0.0
    n = int((seeds[1] == j).sum())
    if n == 0:
        return 0.0
    t = float(scipy.stats.t.ppf(0.975, between_seeds.df2))
    return t * math.sqrt(between_seeds.s2 / n)


def _broken_line(tr: Trials, broken: LawFit, per_batch: pd.DataFrame) -> BrokenLine | None:
    """The broken law's exponent and break with their intervals, from each batch size's own
    shift (`broken_line`), the shape refitted with the shifts free (`free_model`, sized by AICc
    at the broken law); None with fewer than 4 batch sizes whose lr* lies inside the lr range
    (a censored one is a bound, not a point on the line) or no degrees of freedom left.

    The joint fit's own profiles (RSS over alpha and b_c with the shape refitted at each) put
    them where the spline's knots suit the trials: its RSS surface has several dips with a few
    trials per batch size, and its 95% intervals held the truth in 50-78% of worlds with a
    critical batch size (`tests/analysis/test_lr_coverage.py`)."""
    k = n_basis(tr, broken.alpha)
    placed, free = free_model(tr, broken.shifts(tr.lb), k)
    if placed.dof <= 0 or placed.rss <= 0:
        return None
    noise = Misfit(1.0, math.nan, 1, placed.dof, placed.rss / placed.dof)
    noise_rise, _ = threshold(noise, 0.95)
    q = math.sqrt(noise_rise / noise.s2)
    sd = np.array([(hi - lo) / (2 * q) for lo, hi in (p.interval(noise_rise) for p in free.profiles)])
    # Each shift is known to no better than the lrs tried resolve (see `_resolution_floor`).
    sd = np.maximum(sd, RESOLUTION * _lr_spacing(tr))
    use = ~per_batch["at_edge"].to_numpy(bool) & np.isfinite(sd) & (sd > 0)
    if use.sum() < 4:
        return None
    return broken_line(tr.lb[use], free.shift[use], sd[use], placed.dof)


def _fit_group(trials: pd.DataFrame, *, metric: str, mode: Mode, include_stopped: bool,
               min_trials: int, n_boot: int, seed: int | None, detect_break: bool,
               group: dict[str, Any], settings: dict[str, Any]) -> LRScalingFit:
    where = f" [{', '.join(f'{k}={v}' for k, v in group.items())}]" if group else ""
    sign = 1.0 if mode == "max" else -1.0
    if trials["value"].dropna().empty:
        raise ValueError(f"{metric}{where}: no trial reported a finite value")

    kept: list[tuple[float, pd.DataFrame, np.ndarray]] = []
    skipped: dict[float, str] = {}
    for b, rows in trials.groupby("batch_size", sort=True):
        b = float(b)
        stopped = int((~rows["finished"]).sum())
        used = rows if include_stopped else rows[rows["finished"]]
        off = _floor_trials(used)
        distinct = used["lr"][~off].nunique()
        if len(used) < min_trials:
            why = f"{len(used)} finished trials, need {min_trials}"
            if stopped and not include_stopped:
                why += f" ({stopped} stopped early, left out)"
            skipped[b] = why
        elif distinct < _MIN_DISTINCT_LRS:
            skipped[b] = (f"{distinct} distinct learning rates with a finite, non-diverged "
                          f"value, need {_MIN_DISTINCT_LRS}")
        else:
            kept.append((b, used, off))
    if len(kept) < 2:
        details = "; ".join(f"batch {b:g}: {why}" for b, why in skipped.items())
        raise ValueError(f"{metric}{where}: a slope needs >= 2 batch sizes (>= 3 recommended) with "
                         f"enough finished trials; got {len(kept)}"
                         + (f" ({details})" if details else ""))

    on = [(rows[~off], j) for j, (_, rows, off) in enumerate(kept)]
    tr = Trials(x=np.log(np.concatenate([r["lr"].to_numpy(float) for r, _ in on])),
                y=sign * np.concatenate([r["value"].to_numpy(float) for r, _ in on]),
                batch=np.concatenate([np.full(len(r), j) for r, j in on]),
                lb=np.log([b for b, _, _ in kept]))
    k = max_basis(tr, 0.75)
    law = fit_law(tr, k)
    free = free_shifts(tr, law)
    misfit = lack_of_fit(tr, law, free, 2)
    # The interval is widened by every scatter of the batch sizes around the law, seeds' included.
    rise, _ = threshold(misfit, 0.95)
    seeds = _seed_groups(tr, [r for r, _ in on])
    fit_p, f_ratio, between_seeds = _goodness(tr, law, misfit, seeds, np.inf)
    single_ci = _resolution_floor(tr, law.alpha, law.profile.interval(rise))
    u_star, top = _peak(tr, law)

    rows_out = []
    # Per batch size, the noise and its seeds' spread: its lr* interval is its own, the law's misfit
    # is not in it.
    noise_rise, _ = threshold(dataclasses.replace(misfit, f=1.0), 0.95)
    # The shape's peak is placed to no better than half a step of the lrs tried either way: on a
    # flat-topped asymmetric curve the smoothed peak sat 0.12-0.15 ln units (a fifth of a step)
    # below the true one, whatever the noise; the shifts between batch sizes (alpha) are finer.
    floor = 0.5 * _lr_spacing(tr)
    sigma, shape_p = _near_peak_fit(kept, sign, tr, law)
    shape_differs = bool(shape_p < SHAPE_LEVEL)   # nan: not enough trials near the peaks to tell
    if not math.isfinite(sigma):
        sigma = math.sqrt(law.rss / max(tr.n - law.n_params, 1))
    brackets: list[tuple[float, float]] = []
    local: list[float] = []
    for j, (b, rows, off) in enumerate(kept):
        score = sign * rows["value"].to_numpy(float)
        worst = np.nanmin(score[~off]) if (~off).any() else 0.0
        bound = _edge(rows, np.where(off, worst, score))
        lo, hi = free.profiles[j].interval(noise_rise)
        lo = math.nan if bound == "upper" or not math.isfinite(lo) else math.exp(u_star + lo)
        hi = math.nan if bound == "lower" or not math.isfinite(hi) else math.exp(u_star + hi)
        lr_star = math.exp(u_star + free.shift[j])   # the smoothed shape's peak: inside its own interval
        spread = max(_seed_half_width(between_seeds, seeds, j), floor)
        lo = lo if math.isnan(lo) else min(lo, lr_star * math.exp(-spread))
        hi = hi if math.isnan(hi) else max(hi, lr_star * math.exp(spread))
        # The batch size's own trials: the lrs around its best (bracket) and the parabola's top
        # there. Where the shapes differ near the peaks, or the shared shape puts lr* outside the
        # bracket, lr* is that top and the interval takes in the bracket (`own_peak`).
        bracket = _bracket(rows, score, off, sigma)
        brackets.append(bracket)
        own = _local_peak(rows, score, off, bracket) if not bound else math.nan
        local.append(own)
        outside_bracket = bool(not bound and not bracket[0] - 1e-9 <= math.log(lr_star) <= bracket[1] + 1e-9)
        own_peak = bool(not bound and (shape_differs or outside_bracket))
        misplaced = bool(not bound and not _near_best(rows, np.where(off, worst, score), lr_star))
        if own_peak:   # lr* is where its own trials put it; the interval every lr they allow
            tried = np.log(rows["lr"].to_numpy(float)[~off])
            lr_star = math.exp(own)   # `outside` still says the shared shape misplaced it
            lo = min(lo, math.exp(max(bracket[0], tried.min())), lr_star)
            hi = max(hi, math.exp(min(bracket[1], tried.max())), lr_star)
        rows_out.append({
            "batch_size": b, "lr_star": lr_star, "lr_local": math.exp(own), "own_peak": own_peak,
            "off_bracket": outside_bracket,
            "lr_star_lo": lo, "lr_star_hi": hi, "n_trials": len(rows),
            "n_lrs": int(rows["lr"].nunique()), "n_diverged": int(off.sum()),
            "at_edge": bool(bound), "bound": bound,
            "metric_star": float(sign * top[j]), "used": True, "outside": misplaced,
        })
    per_batch = pd.DataFrame(rows_out)
    n_usable = int((~per_batch["at_edge"]).sum())
    outside = [float(b) for b in per_batch.loc[per_batch["outside"], "batch_size"]]
    # Where the curves differ in shape near their peaks, or the shared shape puts a batch size's lr*
    # outside the lrs around its own best trials, the profile interval rests on a shape the data
    # contradict: it widens to every slope the batch sizes' brackets allow, and it always holds
    # the slope of the batch sizes' own peaks (bench/lr_scaling_nqm.py).
    off_bracket = [float(b) for b in per_batch.loc[per_batch["off_bracket"], "batch_size"]]
    profile_ci = single_ci
    usable = ~per_batch["at_edge"].to_numpy(bool)
    if (shape_differs or off_bracket) and usable.sum() >= 2:
        wide = _bracket_alpha(tr.lb[usable], np.array(brackets)[usable])
        single_ci = (min(single_ci[0], wide[0]), max(single_ci[1], wide[1]))
    peaks = np.array(local)
    single_alpha, intercept = law.alpha, u_star
    if np.isfinite(peaks).sum() >= 2:
        ok = np.isfinite(peaks)
        a_local, c_local = (float(v) for v in np.polyfit(tr.lb[ok], peaks[ok], 1))
        single_ci = (min(single_ci[0], a_local), max(single_ci[1], a_local))
        if shape_differs:   # near the peaks the shape is not shared: the slope of the peaks themselves
            single_alpha, intercept = a_local, c_local
    widened = single_ci != profile_ci

    alpha, alpha_ci = single_alpha, single_ci
    brk = brk_ci = above = None
    break_p = math.nan
    if detect_break and fit_p < FIT_LEVEL and tr.lb.size >= 4:
        grid = np.linspace(tr.lb[1], tr.lb[-1], 25)[:-1]
        broken = fit_law(tr, k, grid)
        b_misfit = lack_of_fit(tr, broken, free_shifts(tr, broken), 3)
        break_p, _, _ = _goodness(tr, broken, b_misfit, seeds, broken.log_break)
        fits = math.isfinite(break_p) and break_p >= FIT_LEVEL
        line = _broken_line(tr, broken, per_batch) if fits else None
        if line is not None:
            brk, (klo, khi) = math.exp(line.log_break), line.log_break_ci
            brk_ci = (math.exp(max(klo, tr.lb[1])), math.exp(min(khi, tr.lb[-1])))
            alpha, alpha_ci = line.alpha, line.alpha_ci
            intercept, above = broken.peak()[0] + line.c, 0.0
    verdict, reason = verdict_of(*single_ci, fit_p=fit_p, n_usable=n_usable, outside=outside)
    draws = _draws(alpha, alpha_ci, intercept, tr.lb, per_batch, brk, n_boot, seed)
    return LRScalingFit(
        metric=metric, mode=mode, alpha=float(alpha), alpha_ci=alpha_ci,
        intercept=float(intercept), verdict=verdict, per_batch=per_batch, skipped=skipped,
        n_boot=n_boot, batch_break=brk, batch_break_ci=brk_ci, alpha_above=above,
        chi2_dof=f_ratio, fit_p=fit_p, group=group, settings=settings, boot_params=draws,
        verdict_reason=reason, single_alpha=single_alpha, single_alpha_ci=single_ci,
        break_p=break_p, n_params=law.n_params, shape_p=shape_p, widened=widened)


def _draws(alpha: float, ci: tuple[float, float], intercept: float, lb: np.ndarray,
           per_batch: pd.DataFrame, brk: float | None, n: int, seed: int | None) -> np.ndarray:
    """Normal draws of the law's parameters for the plot's band: alpha from its interval, the
    law's height at the centre of the batch sizes from the per-batch intervals."""
    rng = np.random.default_rng(seed)
    lo, hi = (v if math.isfinite(v) else alpha + (v > alpha and 3.0 or -3.0) for v in ci)
    a = alpha + (hi - lo) / (2 * 1.96) * rng.standard_normal(n)
    pb = per_batch[~per_batch["at_edge"]]
    width = np.log(pb["lr_star_hi"] / pb["lr_star_lo"]).to_numpy(float)
    width = width[np.isfinite(width)]
    se_c = (float(np.median(width)) / (2 * 1.96) / math.sqrt(max(width.size, 1))
            if width.size else 1.0)
    xc = float(lb.mean()) if brk is None else float(min(lb.mean(), math.log(brk)))
    centre = intercept + alpha * xc + se_c * rng.standard_normal(n)
    out = np.zeros((n, 4))
    out[:, 0] = centre - a * xc
    out[:, 1] = a
    out[:, 3] = math.log(brk) if brk is not None else math.inf
    return out


@overload
def fit_lr_scaling(df: pd.DataFrame, *, metric: str, mode: Mode, lr: str = ...,
                   batch_size: str = ..., by: None = ..., use: Use = ...,
                   include_stopped: bool = ..., min_trials: int = ..., n_boot: int = ...,
                   seed: int | None = ..., detect_break: bool = ..., replicate: str = ...
                   ) -> LRScalingFit: ...


@overload
def fit_lr_scaling(df: pd.DataFrame, *, metric: str, mode: Mode, lr: str = ...,
                   batch_size: str = ..., by: str | Sequence[str], use: Use = ...,
                   include_stopped: bool = ..., min_trials: int = ..., n_boot: int = ...,
                   seed: int | None = ..., detect_break: bool = ..., replicate: str = ...
                   ) -> dict[Any, LRScalingFit]: ...


def fit_lr_scaling(df: pd.DataFrame, *, metric: str, mode: Mode, lr: str = "optimizer.lr",
                   batch_size: str = "dataset.batch_size", by: str | Sequence[str] | None = None,
                   use: Use = "last", include_stopped: bool = False, min_trials: int = MIN_TRIALS,
                   n_boot: int = 1000, seed: int | None = 0, detect_break: bool = True,
                   replicate: str = "seed") -> LRScalingFit | dict[Any, LRScalingFit]:
    """Fit lr*(b) = exp(c) · b**alpha to a search over learning rate and batch size.

    df: what `load` returns (one row per report), or any frame with ``trial_id``, the metric and
        the ``config/...`` columns. Each trial counts once: its last report (``use="last"``) or
        its best (``use="best"``). Replicates (several seeds of one lr and batch size: trials
        with the same config but their seed) are pooled: every trial is a point on its batch
        size's curve, so seed-to-seed scatter is in the noise the intervals are built from.
    metric, mode: the metric and whether higher ("max") or lower ("min") is better. A diverged
        or non-finite trial, or one tied at its batch size's worst value (a metric stuck at a
        floor), is off the curve: counted in ``n_diverged`` and left out of the shape.
    lr, batch_size: config keys of the learning rate and the batch size (examples per step).
    by: config key(s) to fit separately, e.g. "budget.steps"; then the result is a dict from the
        group's value (a tuple for several keys) to its fit.
    include_stopped: keep trials the scheduler stopped early (their metric is from a shorter run,
        so they are left out by default).
    min_trials: finished trials a batch size needs; with fewer it goes to ``fit.skipped``.
    n_boot, seed: draws for the plot's band and the seed of ``numpy.random.default_rng``.
    detect_break: where the single law is rejected, try a law flat above a critical batch size.
    replicate: config key of the replicate seed. Where the results have it and seeds repeat an
        lr at a batch size, the goodness of fit asks whether the batch sizes stray from the law
        more than the seeds stray from each other (seeds that disagree widen the interval; they
        do not reject the law).

    Raises ValueError for a missing column (naming it and the ``config/`` columns there are) and
    when fewer than 2 batch sizes have enough finished trials.

    Example:
        >>> import numpy as np, pandas as pd
        >>> rows = [{"trial_id": f"{b}-{i}", "training_iteration": 1, "config/reports": 1,
        ...          "config/dataset/batch_size": b, "config/optimizer/lr": lr,
        ...          "acc": 0.9 - 0.02 * np.log(lr / (1e-3 * b ** 0.5)) ** 2}
        ...         for b in (32, 64, 128, 256, 512)
        ...         for i, lr in enumerate(np.geomspace(1e-3, 1.0, 10))]
        >>> fit = fit_lr_scaling(pd.DataFrame(rows), metric="acc", mode="max")
        >>> round(fit.alpha, 2), fit.verdict
        (0.5, 'sqrt')
    """
    if min_trials < _MIN_DISTINCT_LRS:
        raise ValueError(f"min_trials must be >= {_MIN_DISTINCT_LRS}, got {min_trials}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    trials = trial_outcomes(df, metric=metric, mode=mode, lr=lr, batch_size=batch_size, by=by,
                            use=use)
    rep_col = config_column(replicate)
    if rep_col in df.columns:
        labels = df.groupby("trial_id", sort=False)[rep_col].last()
        trials = trials.assign(replicate=trials["trial_id"].map(labels).to_numpy())
    settings = {"replicate": replicate, "lr": lr, "batch_size": batch_size, "use": use, "include_stopped": include_stopped,
                "min_trials": min_trials, "seed": seed, "detect_break": detect_break,
                "max_width": MAX_WIDTH, "fit_level": FIT_LEVEL}
    options: dict[str, Any] = dict(metric=metric, mode=mode, include_stopped=include_stopped,
                                   min_trials=min_trials, n_boot=n_boot, seed=seed,
                                   detect_break=detect_break, settings=settings)
    if by is None:
        return _seed_spread(_fit_group(trials, group={}, **options), trials, options)
    return {key: _seed_spread(_fit_group(rows, group=group, **options), rows, options)
            for key, group, rows in split_groups(trials, by)}


def _seed_spread(fit: LRScalingFit, trials: pd.DataFrame, options: dict[str, Any]) -> LRScalingFit:
    """Refit each seed alone; the exponent's interval then also holds the seeds' spread: the
    pooled alpha ± t(S−1)·sd/√S of the S per-seed exponents (where that is wider).

    On real curves with flat tops the pooled profile interval can be much narrower than the
    seed-to-seed scatter of the exponent (the demo on digits: 0.3 wide, while seeds 0, 1 and 2
    gave -0.14, 0.31 and -0.24); the seeds' own spread is the direct measure of it.
    """
    if "replicate" not in trials or fit.batch_break is not None:
        return fit
    alphas: dict[Any, float] = {}
    for rep, rows in trials.groupby("replicate", sort=True):
        try:
            alone = _fit_group(rows.drop(columns="replicate"), group=fit.group,
                               **{**options, "detect_break": False})
        except ValueError:
            continue   # too few trials for this seed alone
        alphas[rep] = float(alone.single_alpha)
    if len(alphas) < 2:
        return fit
    a = np.array(list(alphas.values()))
    half = float(scipy.stats.t.ppf(0.975, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size))
    lo, hi = fit.single_alpha_ci
    ci = (min(lo, fit.single_alpha - half), max(hi, fit.single_alpha + half))
    pb = fit.per_batch
    outside = [float(b) for b in pb.loc[pb["outside"], "batch_size"]] if "outside" in pb else []
    verdict, reason = verdict_of(*ci, fit_p=fit.fit_p, n_usable=int((~pb["at_edge"]).sum()), outside=outside)
    if ci != (lo, hi) and verdict != fit.verdict:
        reason += f" (the seeds' exponents spread over {a.min():.2f} .. {a.max():.2f})"
    return dataclasses.replace(fit, alpha_ci=ci, single_alpha_ci=ci, verdict=verdict, verdict_reason=reason,
                               seed_alphas=alphas)
