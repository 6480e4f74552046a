"""A grid posterior for the ELR threshold between two regimes, allowing a noisy boundary.

`threshold_posterior` builds it from labelled trials; `ThresholdPosterior` gives its credible
interval (the headline interval of `tune_lip.analysis.regime_boundaries`), its median and the
predictive probability that a trial at some ELR lands in the upper regime.

The model: each trial (each seed of each config) has its own switch point, spread around the
threshold x0 in log ELR (logistic, scale s); a trial lands in the upper regime when its ELR is
past its switch point, so P(upper | x) = sigmoid((x - x0) / s). s -> 0 is a sharp boundary,
where every seed switches at x0; seeds that disagree at one ELR are evidence of s > 0, which
widens the interval. Priors: flat in x0 over the searched range, flat in s over
(0, ``scales_decades[1]``] = (0, 0.3] decades (switch points spread by up to 0.54 decades, sd).

Calibration: see `tune_lip.analysis.regime_fit` and bench/regime_coverage.py. The prior on s
is what makes the interval honest: flat in log s (as before) it put most of its mass on
near-sharp boundaries, and a noisy boundary whose trials happened not to overlap got an
interval that was too narrow (87-92% coverage at nominal 95%, against 93-98% now).
Hand-written: no library has a threshold posterior that stays finite under separation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.special

_LN10 = math.log(10.0)
_CHUNK = 64  # trials per vectorised likelihood block: (chunk, cells, scales) floats in memory


@dataclass(frozen=True)
class ThresholdPosterior:
    """Posterior of a logistic boundary P(upper | x) = sigmoid((x - x0) / s) on a grid.

    x = ln ELR. The threshold x0 has a flat prior over the searched range, cut into cells
    (``edges``; observed ELRs are cell edges, so on a sharp boundary the gap between the
    regimes is one cell or a few); s, the logistic scale of the trials' switch points (ln ELR),
    has a flat prior on (0, max(``scales``)], held at the log-spaced nodes ``scales`` with
    weights of the spacing around each node (fine nodes near a sharp boundary, few weights). Unlike a bootstrap, this stays honest under separation: data
    that a sharp boundary explains are also explained by a noisy one with a threshold a little
    outside the gap, and the posterior keeps that mass until trials there rule it out.

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

    @property
    def spread_decades(self) -> float:
        """Posterior mean of the switch points' standard deviation (pi / sqrt 3 times s), in
        decades of ELR (0: a sharp boundary)."""
        by_scale = np.exp(scipy.special.logsumexp(self.log_post, axis=0))
        mean_s = (by_scale * self.scales).sum() / by_scale.sum()
        return float(mean_s * math.pi / math.sqrt(3) / _LN10)

    def quantile(self, q: float | np.ndarray) -> np.ndarray:
        """ELRs at posterior quantiles ``q`` of the threshold (linear within a cell)."""
        cdf = np.concatenate([[0.0], np.cumsum(self.mass)])
        return np.exp(np.interp(np.atleast_1d(q), cdf / cdf[-1], self.edges))

    def median(self) -> float:
        """The posterior median of the threshold, in ELR."""
        return float(self.quantile(0.5)[0])

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """The equal-tailed ``level`` credible interval of the threshold, in ELR."""
        lo, hi = self.quantile(np.array([(1 - level) / 2, (1 + level) / 2]))
        return float(lo), float(hi)

    def upper_given(self, elr: float | np.ndarray) -> np.ndarray:
        """P(upper regime | x0, s) of a trial at each ``elr`` (m,) under every grid hypothesis:
        (m, cells, scales). Weight by ``exp(log_post)`` to average over the posterior."""
        return _upper_probability(np.log(np.atleast_1d(np.asarray(elr, float))), self.centres,
                                  self.scales)

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
    for start in range(0, x.size, _CHUNK):
        xi, si = x[start:start + _CHUNK], sign[start:start + _CHUNK]
        u = (xi[:, None, None] - centres[None, :, None]) / scales[None, None, :]
        out -= np.logaddexp(0.0, -si[:, None, None] * u).sum(axis=0)
    return out


def _normalise(log_p: np.ndarray) -> np.ndarray:
    return log_p - scipy.special.logsumexp(log_p)


def threshold_posterior(elr: Sequence[float] | np.ndarray, upper: Sequence[bool] | np.ndarray,
                        *, lo: float, hi: float, cells: int = 400,
                        scales_decades: tuple[float, float] = (0.003, 0.3), n_scales: int = 16
                        ) -> ThresholdPosterior:
    """Grid posterior of the threshold between two regimes (see `ThresholdPosterior`).

    elr: the trials of the two regimes (replicates of one config are separate trials);
    upper: whether each is in the upper one. The threshold ranges over [lo, hi] in ``cells``
    equal cells in log ELR (plus the trials' ELRs as edges); the boundary's logistic scale s
    over (0, ``scales_decades[1]``] decades with a flat prior, held at ``n_scales`` log-spaced
    nodes from ``scales_decades[0]`` (a practically sharp boundary) up.

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
    if not (0 < scales_decades[0] < scales_decades[1]) or n_scales < 2:
        raise ValueError(f"need 0 < scales_decades[0] < scales_decades[1] and n_scales >= 2, got "
                         f"{scales_decades} and {n_scales}")
    a, b = math.log(lo), math.log(hi)
    inside = x[(x > a) & (x < b)]
    edges = np.unique(np.concatenate([np.linspace(a, b, cells + 1), inside]))
    scales = np.geomspace(*scales_decades, n_scales) * _LN10
    centres = (edges[:-1] + edges[1:]) / 2
    # Flat prior in x0 (cell mass proportional to its width) and in s: each node stands for
    # the stretch of s around it (the first node for everything down to 0).
    bounds = np.concatenate([[0.0], (scales[1:] + scales[:-1]) / 2, [scales[-1]]])
    log_prior = np.log(np.diff(edges))[:, None] + np.log(np.diff(bounds))[None, :]
    return ThresholdPosterior(edges, scales,
                              _normalise(log_prior + _log_likelihood(x, y, centres, scales)))
