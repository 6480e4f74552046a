"""LR transfer across batch sizes: lr* at every batch size, each search starting from the law so far.

Searching the LR independently at every batch size spends most trials far from the optimum.
`LRTransferSearch` searches the smallest ``anchors`` batch sizes broadly (three points spread
over the whole log-LR range, then Brent's method, `tune_lip.tune.searchers._LineGroup`), and
every larger batch size inside the predictive interval of a fit of log lr* against log b:

* the fit is a weighted straight line through the optima found so far, weighted towards the
  nearest batch sizes (weight ``1 / (1 + (distance in log2 b)^2)``), so a law that bends --
  e.g. lr* flat above a critical batch size -- is followed locally, not extrapolated blindly;
* the interval's half-width grows with the distance in log b to the nearest measured batch size
  (half the slope's size per unit of log b, for a slope that may flatten or steepen; plus its
  standard error), with the misfit of the line (twice the weighted residual RMS), and is at
  least a factor ``1.3``;
* its centre and both ends are the first three trials, then Brent's method refines to
  ``tolerance``. An optimum at an end of the interval makes the line search step outwards,
  each step 1.618 times the last, up to the space's range, until the optimum is bracketed;
* when an optimum falls outside its interval (the law broke), the half-width of every later
  interval is doubled (``widen``; reset to 1 once a prediction holds again).

Every batch size ends when its best trial's neighbours lie within a factor ``1 + tolerance`` on
both sides (then lr* lies within ``tolerance`` of it, for a loss unimodal in log lr), at an end
of the range, or after ``samples_per_group`` trials. It assumes no exponent: the three worlds
of tests/test_lr_transfer.py (alpha = 1, alpha = 1/2, a critical batch size) and a world whose
law breaks at one batch size all end within tolerance at every batch size.

The fit is hand-written (numpy, a few lines): `analysis.lr_scaling.fit_lr_scaling` fits the law
to dense trial tables with intervals calibrated for reporting; a searcher needs a prediction from
one optimum per batch size, after every batch size. Run the finished study through
``tune-lip analyze lr-scaling`` for the law and its interval.

Failed, diverged (``diverged=True``) and early-stopped trials count as worse than every finished
one (too large an LR, in practice); use ``scheduler: none`` and no replicates.

Example:
    >>> from tune_lip.tune.spec import LogUniform, Grid
    >>> s = LRTransferSearch({"lr": LogUniform(1e-3, 1.0), "b": Grid((64, 16, 256))}, per=["b"],
    ...     key="lr", samples_per_group=20, metric="loss", mode="min")
    >>> [c["b"] for c in (s.suggest(f"t{i}") for i in range(4))]   # the two anchors at once
    [16, 16, 16, 64]
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from tune_lip.tune.searchers import _DONE, GroupedLineSearch, _LineGroup
from tune_lip.tune.spec import set_in

__all__ = ["LRTransferSearch", "predict_log_lr"]

_MIN_HALF_WIDTH = math.log(1.3)   # the line searcher's warm-start spacing


def predict_log_lr(log_b: Sequence[float], log_lr: Sequence[float], at: float) -> tuple[float, float]:
    """(centre, half-width) of the predictive interval of log lr* at log batch size ``at``.

    From the optima (``log_b``, ``log_lr``) found so far (natural logs); see the module docstring.
    One point: that point's log lr, half-width ``|at - log_b| / 2 + log 1.3`` (slope 0 or 1 both
    stay within a factor ~1.4 per doubling of b).

    Example:
        >>> c, w = predict_log_lr([0.0, math.log(2)], [0.0, math.log(2)], math.log(4))
        >>> round(math.exp(c), 3), w > 0.3
        (4.0, True)
    """
    xb = np.asarray(log_b, dtype=float)
    y = np.asarray(log_lr, dtype=float)
    dist = np.abs(xb - at) / math.log(2)                    # in doublings of b
    nearest = float(dist.min()) * math.log(2)
    if len(xb) == 1 or np.ptp(xb) == 0:
        return float(y[np.argmin(dist)]), 0.5 * nearest + _MIN_HALF_WIDTH
    w = 1.0 / (1.0 + dist ** 2)
    mx, my = np.average(xb, weights=w), np.average(y, weights=w)
    sxx = float(np.sum(w * (xb - mx) ** 2))
    slope = float(np.sum(w * (xb - mx) * (y - my)) / sxx)
    centre = my + slope * (at - mx)
    resid = y - (my + slope * (xb - mx))
    rms = math.sqrt(float(np.sum(w * resid ** 2) / np.sum(w))) if len(xb) > 2 else 0.0
    slope_se = rms / math.sqrt(sxx / float(np.sum(w))) / math.sqrt(len(xb)) if len(xb) > 2 else 0.0
    half = _MIN_HALF_WIDTH + 2.0 * rms + (0.5 * abs(slope) + slope_se) * nearest
    return float(centre), float(half)


class LRTransferSearch(GroupedLineSearch):
    """lr* at each value of ``per`` (one key: the batch size), each search seeded by the fit so far.

    space: nested dict of spec domains; ``key`` a LogUniform (its bounds are the search range),
    ``per`` one Grid (searched in ascending order). anchors: how many of the smallest values are
    searched broadly (at once), >= 2. tolerance: lr* within a factor 1 + tolerance.
    samples_per_group: a cap on trials per batch size. See the module docstring.
    """

    def __init__(self, space: Mapping[str, Any], *, per: Sequence[str], key: str, samples_per_group: int,
                 tolerance: float = 0.1, anchors: int = 2, metric: str | None = None,
                 mode: str | None = None, seed: int = 0) -> None:
        if len(per) != 1:
            raise ValueError(f"LRTransferSearch: per must name one grid key (the batch size), got {list(per)}")
        if anchors < 2:
            raise ValueError(f"LRTransferSearch: anchors must be >= 2, got {anchors}")
        super().__init__(space, per=per, key=key, samples_per_group=samples_per_group, tolerance=tolerance,
                         warm_start=True, metric=metric, mode=mode, seed=seed)
        values = [g[per[0]] for g in self._groups]
        if any(not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0 for v in values):
            raise ValueError(f"LRTransferSearch: the values of {per[0]!r} must be positive numbers, got {values}")
        self._groups.sort(key=lambda g: g[per[0]])
        self._anchors = anchors
        self._widen = 1.0                                    # doubled after each broken prediction
        self._predicted: list[tuple[float, float] | None] = [None] * len(self._groups)

    def _log_b(self, g: int) -> float:
        return math.log(float(self._groups[g][self._per[0]]))

    def _start(self, g: int) -> _LineGroup:
        line = self._lines[g]
        if line is not None:
            return line
        if g < self._anchors:
            span = self._hi - self._lo
            initial = [self._lo + (k + self._phase) * span / 3 for k in range(3)]
        else:
            self._learn(g)
            known = [(self._log_b(j), self._lines[j].best()) for j in range(g)]   # type: ignore[union-attr]
            pts = [(b, x) for b, x in known if x is not None and self._lo < x < self._hi]
            if not pts:   # every optimum so far at an end of the range: nothing to transfer
                pts = [(b, x) for b, x in known if x is not None]
            centre, half = predict_log_lr([b for b, _ in pts], [x for _, x in pts], self._log_b(g))
            half = min(half * self._widen, (self._hi - self._lo) / 2)
            self._predicted[g] = (centre - half, centre + half)
            initial = [centre - half, centre, centre + half]
        line = self._lines[g] = _LineGroup(self._lo, self._hi, self._tol, initial, self._samples_per_group)
        return line

    def _learn(self, g: int) -> None:
        """Widen later intervals when group g - 1's optimum fell outside its predicted interval."""
        j = g - 1
        interval, line = self._predicted[j], self._lines[j]
        if interval is None or line is None or line.best() is None:
            return
        x = line.best()
        assert x is not None
        inside = interval[0] + 1e-9 < x < interval[1] - 1e-9
        self._widen = 1.0 if inside else min(self._widen * 2.0, 64.0)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        while self._first_open < len(self._groups) and self._start(self._first_open).done:
            self._first_open += 1
        if self._first_open == len(self._groups):
            return Searcher.FINISHED  # type: ignore[return-value]
        # the anchors run at once; every later batch size waits for all before it
        last = max(self._first_open + 1, min(self._anchors, len(self._groups)))
        for g in range(self._first_open, last):
            x = self._start(g).ask()
            if isinstance(x, float):
                self._trial_x[trial_id] = (g, x)
                return self._config(g, x)
            if x == _DONE and g == self._first_open:
                return self.suggest(trial_id)
        return None

    def _config(self, g: int, x: float) -> dict[str, Any]:
        config = copy.deepcopy(self._space)
        for key, value in {self._key: math.exp(x), **self._groups[g]}.items():
            set_in(config, key, value)
        return config

    def predicted_intervals(self) -> list[tuple[dict[str, Any], tuple[float, float] | None]]:
        """(group values, the LR interval first proposed there, or None for an anchor)."""
        return [(grp, None if p is None else (math.exp(p[0]), math.exp(p[1])))
                for grp, p in zip(self._groups, self._predicted)]

    def trials_per_group(self) -> list[int]:
        return [0 if line is None else len(line.values) for line in self._lines]

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "groups": self._groups, "widen": self._widen,
                "predicted": self._predicted}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._groups = state["groups"]
        self._widen = state["widen"]
        self._predicted = state["predicted"]
