"""The estimators behind `fit_lr_scaling`: lr* per batch size, and the law through them.

lr* is the vertex of a quadratic in log lr, every bootstrap replicate solved at once; the law is
a weighted least-squares line in (log b, log lr*), or a broken one where AICc prefers it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

_Z95 = 1.959963984540054  # normal quantile: a 95% interval is +-1.96 sigma wide
_MIN_DISTINCT_LRS = 3  # a quadratic needs three distinct learning rates


# ---------------------------------------------------------------------------------------------
# lr* per batch size
# ---------------------------------------------------------------------------------------------

def _vertices(x: np.ndarray, y: np.ndarray, counts: np.ndarray, neighbours: int,
              window_frac: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Estimate of the best log lr for each row of ``counts``.

    x: (n,) log lr per trial; y: (n,) score per trial, higher is better; counts: (R, n) how often
    each trial is drawn (all ones for the data itself). The centre is the distinct lr with the
    best mean score. The window is ``neighbours`` drawn distinct lrs around it (or ``window_frac``
    of all of them, if more), half on each side where the range allows; a weighted quadratic
    through the window's trials gives the vertex when it is a maximum inside the window.
    Otherwise the window grows by one lr a side until it does or holds every lr; failing that
    the centre is the estimate.

    Returns (log lr* (R,), score at it (R,), whether a quadratic gave it (R,), centre index into
    the sorted distinct lrs (R,)).
    """
    u, g = np.unique(x, return_inverse=True)
    R, n, m = counts.shape[0], x.size, u.size
    rows = np.arange(R)
    onehot = np.zeros((n, m))
    onehot[np.arange(n), g] = 1.0
    drawn = counts @ onehot  # (R, m) draws per distinct lr
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(drawn > 0, ((counts * y) @ onehot) / drawn, -np.inf)
    centre = mean.argmax(axis=1)  # (R,)
    # Windows take drawn lrs by rank on both sides of the centre (shifted inward at the ends of
    # the range), not the nearest in distance: in a random search the nearest are often all on
    # one side, and a vertex bracketed on both sides is far better determined.
    present = drawn > 0
    n_present = present.sum(axis=1)
    rank = np.cumsum(present, axis=1) - 1  # (R, m) rank among the drawn lrs
    dx = x[None, :] - u[centre][:, None]  # (R, n), relative to the centre for conditioning
    powers = [dx**p for p in range(5)]

    est = u[centre].copy()
    peak = mean[rows, centre]
    quad = np.zeros(R, bool)
    # A window of a fixed count would shrink (in log lr) as a search gets denser, until the
    # curvature drowns in the noise; a fixed share of the lrs keeps its width.
    first = max(neighbours, math.ceil(window_frac * m))
    for size in range(first, max(m, first) + 2, 2):
        todo = ~quad & (n_present >= _MIN_DISTINCT_LRS)
        if not todo.any():
            break
        k = np.minimum(size, n_present)
        start = np.clip(rank[rows, centre] - (size - 1) // 2, 0, n_present - k)
        window = present & (rank >= start[:, None]) & (rank < (start + k)[:, None])
        lo = np.where(window, u[None, :], np.inf).min(axis=1) - u[centre]
        hi = np.where(window, u[None, :], -np.inf).max(axis=1) - u[centre]
        # Weighted least squares of y on (1, dx, dx^2): the normal equations' entries are power
        # sums, so one batched 3x3 solve serves every replicate.
        w = (counts * window[:, g])[todo]
        s = np.stack([(w * p[todo]).sum(axis=1) for p in powers], axis=1)  # (r, 5)
        t = np.stack([(w * p[todo] * y).sum(axis=1) for p in powers[:3]], axis=1)  # (r, 3)
        A = np.stack([s[:, 0:3], s[:, 1:4], s[:, 2:5]], axis=1)  # (r, 3, 3)
        c0, c1, c2 = np.linalg.solve(A, t[..., None])[..., 0].T
        with np.errstate(invalid="ignore", divide="ignore"):
            vertex = -c1 / (2.0 * c2)
            good = (c2 < 0) & (vertex >= lo[todo]) & (vertex <= hi[todo])
        idx = np.flatnonzero(todo)[good]
        est[idx] = u[centre[idx]] + vertex[good]
        peak[idx] = (c0 + c1 * vertex + c2 * vertex**2)[good]
        quad[idx] = True
        if (k[todo] >= n_present[todo]).all():
            break
    return est, peak, quad, centre


@dataclass(frozen=True)
class _BatchEstimate:
    batch_size: float
    row: dict[str, Any]  # one per_batch row
    boot: np.ndarray  # (n_boot,) bootstrap log lr*
    sigma: float  # log-space standard error from the interval width (floored)
    floor: float  # the smallest log-space error this batch size's lr grid can resolve


def _estimate_batch(b: float, trials: pd.DataFrame, sign: float, *, neighbours: int,
                    window_frac: float, n_boot: int, rng: np.random.Generator) -> _BatchEstimate:
    x = np.log(trials["lr"].to_numpy(float))
    y = sign * trials["value"].to_numpy(float)
    n = x.size
    est, peak, quad, centre = _vertices(x, y, np.ones((1, n)), neighbours, window_frac)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    boot, _, _, _ = _vertices(x, y, counts, neighbours, window_frac)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    u = np.unique(x)
    at_edge = (not quad[0]) and centre[0] in (0, u.size - 1)
    if at_edge:
        # The best lr is the smallest (largest) one tried: lr* may lie beyond the range, so only
        # the bound on the sampled side means anything.
        lo, hi = (math.nan, hi) if centre[0] == 0 else (lo, math.nan)
    # A bootstrap that always lands on the same grid point gives a zero-width interval: a tenth
    # of the lr grid spacing is the resolution, so it floors the error (no infinite weights).
    floor = 0.1 * float(np.median(np.diff(u)))
    sigma = max((hi - lo) / (2 * _Z95), floor) if not at_edge else math.nan
    row = {
        "batch_size": b,
        "lr_star": float(np.exp(est[0])),
        "lr_star_lo": float(np.exp(lo)),
        "lr_star_hi": float(np.exp(hi)),
        "n_trials": n,
        "at_edge": bool(at_edge),
        "estimate": "quadratic" if quad[0] else "best trial",
        "metric_star": float(sign * peak[0]),
    }
    return _BatchEstimate(b, row, boot, sigma, floor)


# ---------------------------------------------------------------------------------------------
# alpha, and a break in the power law
# ---------------------------------------------------------------------------------------------

def _design(x: np.ndarray, model: str, xc: float) -> np.ndarray:
    if model == "power law":
        return np.stack([np.ones_like(x), x], axis=1)
    below = np.minimum(x, xc)
    if model == "plateau":
        return np.stack([np.ones_like(x), below], axis=1)
    return np.stack([np.ones_like(x), below, np.maximum(x - xc, 0.0)], axis=1)


def _wls(X: np.ndarray, w: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares for each row of Y (R, n): coefficients (R, p), weighted RSS (R,)."""
    Xw = X * w[:, None]
    H = np.linalg.solve(X.T @ Xw, Xw.T)  # (p, n): coefficients = H @ y
    beta = Y @ H.T
    rss = ((Y - beta @ X.T) ** 2 * w).sum(axis=1)
    return beta, rss


def _params(model: str, beta: np.ndarray, xc: np.ndarray | float) -> np.ndarray:
    """Coefficients -> (R, 4) rows (intercept, alpha, slope above the break, log b_c)."""
    R = beta.shape[0]
    out = np.zeros((R, 4))
    out[:, :2] = beta[:, :2]
    out[:, 3] = xc
    if model == "two slopes":
        out[:, 2] = beta[:, 2]
    return out


def _predict_log(params: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log lr* at log batch sizes ``x`` for (..., 4) parameter rows; broadcasts to (..., len(x))."""
    p = params[..., None]
    return p[..., 0, :] + p[..., 1, :] * np.minimum(x, p[..., 3, :]) \
        + p[..., 2, :] * np.maximum(x - p[..., 3, :], 0.0)


_N_PARAMS = {"power law": 3, "plateau": 4, "two slopes": 5}  # coefficients + b_c + residual scale


def _aicc(rss: float, n: int, k: int) -> float:
    # The residual scale is fitted (k counts it), so the per-batch intervals only need to be right
    # relative to each other; floor the RSS so an exact fit does not give log(0).
    return n * math.log(max(rss, 1e-9 * n) / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1)


def _fit_law(xb: np.ndarray, yb: np.ndarray, w: np.ndarray, boot: np.ndarray, detect_break: bool
             ) -> tuple[str, np.ndarray, np.ndarray, int]:
    """Choose the law by AICc and fit it to the point estimates and to every replicate.

    Returns (model, point params (4,), replicate params (R, 4), residual degrees of freedom).
    """
    n = xb.size
    candidates: dict[str, list[float]] = {"power law": [math.inf]}
    if detect_break:
        # A break at grid point j leaves >= 2 batch sizes to set the slope below it and >= 1 above.
        breaks = [float(v) for v in xb[1:n - 1]]
        for model in ("plateau", "two slopes"):
            if breaks and n - _N_PARAMS[model] - 1 > 0:
                candidates[model] = breaks
    best: dict[str, tuple[float, float, float]] = {}  # model -> (aicc, xc, rss)
    for model, xcs in candidates.items():
        fits = [(_wls(_design(xb, model, xc), w, yb[None, :])[1][0], xc) for xc in xcs]
        rss, xc = min(fits)
        aicc = _aicc(rss, n, _N_PARAMS[model]) if n - _N_PARAMS[model] - 1 > 0 else math.inf
        best[model] = (aicc, xc, rss)
    model = "power law"
    for other in ("plateau", "two slopes"):
        # A break must beat the single law by more than 2 AICc units ("substantially better").
        margin = 2.0 if model == "power law" else 0.0
        if other in best and best[other][0] < best[model][0] - margin:
            model = other
    _, xc, rss = best[model]
    beta, _ = _wls(_design(xb, model, xc), w, yb[None, :])
    point = _params(model, beta, xc)[0]
    # Each replicate picks its own break among the candidates: that spread is b_c's interval.
    per_xc = [(_wls(_design(xb, model, c), w, boot), c) for c in candidates[model]]
    rss_all = np.stack([r for (_, r), _ in per_xc])  # (C, R)
    pick = rss_all.argmin(axis=0)
    reps = np.stack([_params(model, b, c) for (b, _), c in per_xc])  # (C, R, 4)
    boot_params = reps[pick, np.arange(boot.shape[0])]
    dof = n - (beta.shape[1] + (model != "power law"))
    return model, point, boot_params, dof
