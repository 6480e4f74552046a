"""The estimator behind `fit_lr_scaling`: one curve shape shared by every batch size.

Every trial counts. The metric y of a trial at learning rate lr and batch size b is modelled as

    y = level_b + g(log lr - shift_b) + noise,

where g is one smooth curve shape (a cubic B-spline, flat beyond the trials it was fitted to),
level_b is a per-batch-size level, and the power law sets the shifts: shift_b = alpha · log b
(a broken law: alpha · min(log b, log b_c)). lr*(b) = exp(u* + shift_b), u* the peak of g.

- **alpha** minimises the residual sum of squares RSS(alpha), profiled on a grid (for each
  alpha, g and the levels are linear least squares, all grid points solved at once).
- **Goodness of fit** is a lack-of-fit F test of the law against free shifts (each batch size
  placed where its own trials fit g best): (RSS_law - RSS_free)/(n_b - 2) over the residual
  variance. Under the law it is F-distributed; a misplaced batch size makes it large.
- **alpha's interval** is the profile-likelihood set {alpha: RSS(alpha) - RSS_min <= q² s² m},
  where s² is the residual variance (seed-to-seed scatter of replicates included), q a t
  quantile and m = max(1, F) the lack-of-fit ratio: scatter of the batch sizes around the law
  beyond what the noise explains widens the interval (and moves q towards the t quantile with
  n_b - 2 degrees of freedom, Satterthwaite's way), rather than being ignored.

Hand-written: a shared-shape shift model with a profiled exponent is not in scipy or
statsmodels; its pieces (a uniform B-spline basis, batched normal equations) are a few lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.stats

ALPHA_GRID = np.round(np.arange(-1.0, 2.5001, 0.01), 4)  # exponents profiled (wider: open end)
_SHIFT_STEP = 0.02  # ln-lr resolution of a batch size's free shift
_SHIFT_SPAN = 6.0  # a free shift may move up to this far (ln units) from the law's
_KNOT_SPACING = 0.5  # ln units of lr between knots (a fifth of a decade): asymmetric peaks need them
_MIN_BASIS = 5


def bspline_basis(u: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float, k: int
                  ) -> np.ndarray:
    """Uniform cubic B-spline basis, ``k`` functions on [lo, hi], constant beyond: (..., k).

    ``lo``/``hi`` broadcast against ``u`` without its last axis' meaning, e.g. u (A, N) with
    lo (A, 1).
    """
    m = k - 3  # intervals
    h = (np.asarray(hi) - np.asarray(lo)) / m
    t = np.clip((u - lo) / np.where(h > 0, h, 1.0), 0.0, m)
    i = np.minimum(np.floor(t), m - 1).astype(int)
    s = t - i
    w = np.stack([(1 - s) ** 3, 3 * s**3 - 6 * s**2 + 4, -3 * s**3 + 3 * s**2 + 3 * s + 1,
                  s**3], axis=-1) / 6.0
    out = np.zeros((*u.shape, k))
    np.put_along_axis(out, i[..., None] + np.arange(4), w, axis=-1)
    return out


def max_basis(tr: Trials, alpha: float) -> int:
    """Spline size for the exponent: a knot every `_KNOT_SPACING` ln units of u, at most a third
    of the spare trials."""
    u_range = float(np.ptp(tr.x - alpha * tr.lb[tr.batch]))
    room = max((tr.n - tr.lb.size) // 3, _MIN_BASIS)
    return int(np.clip(math.ceil(u_range / _KNOT_SPACING) + 3, _MIN_BASIS, room))


def n_basis(tr: Trials, alpha: float) -> int:
    """Spline size by AICc at the exponent ``alpha``, up to `max_basis`: for the peak (lr* at
    b = 1), where the knots the exponent wants can put wiggles on the flat top of the curve."""
    shifts = (alpha * tr.lb[tr.batch])[None, :]
    most = max_basis(tr, alpha)
    best, best_k = math.inf, _MIN_BASIS
    for k in range(_MIN_BASIS, most + 1):
        X, _, _ = _design(tr, shifts, k)
        rss = float(_solve(X, tr.y)[1][0])
        p = X.shape[2] + 1
        if tr.n - p - 1 <= 0:
            break
        aicc = tr.n * math.log(max(rss, 1e-12) / tr.n) + 2 * p + 2 * p * (p + 1) / (tr.n - p - 1)
        if aicc < best:
            best, best_k = aicc, k
    return best_k


@dataclass(frozen=True)
class Trials:
    """The trials a fit uses: x = ln lr, y = score (higher is better), batch = index into lb."""

    x: np.ndarray
    y: np.ndarray
    batch: np.ndarray
    lb: np.ndarray  # (n_b,) ln batch size

    @property
    def n(self) -> int:
        return int(self.x.size)


@dataclass(frozen=True)
class Profile:
    """RSS over a 1-d grid of a parameter, each point with its best shape and levels."""

    grid: np.ndarray
    rss: np.ndarray
    best: int

    def interval(self, threshold: float) -> tuple[float, float]:
        """{v: rss(v) <= rss_min + threshold}, linearly interpolated; +-inf where it runs off."""
        ok = self.rss <= self.rss[self.best] + threshold
        lo_i = self.best
        while lo_i > 0 and ok[lo_i - 1]:
            lo_i -= 1
        hi_i = self.best
        while hi_i < ok.size - 1 and ok[hi_i + 1]:
            hi_i += 1
        cut = self.rss[self.best] + threshold

        def cross(i: int, j: int) -> float:  # between an inside point i and an outside one j
            r0, r1 = self.rss[i], self.rss[j]
            f = (cut - r0) / (r1 - r0) if r1 != r0 else 0.5
            return float(self.grid[i] + f * (self.grid[j] - self.grid[i]))

        lo = -math.inf if lo_i == 0 else cross(lo_i, lo_i - 1)
        hi = math.inf if hi_i == ok.size - 1 else cross(hi_i, hi_i + 1)
        return lo, hi

    def argmin(self) -> float:
        """The grid minimum refined by a parabola through it and its neighbours."""
        i = self.best
        if i == 0 or i == self.grid.size - 1:
            return float(self.grid[i])
        r0, r1, r2 = self.rss[i - 1:i + 2]
        den = r0 - 2 * r1 + r2
        step = 0.5 * (r0 - r2) / den if den > 0 else 0.0
        return float(self.grid[i] + np.clip(step, -1, 1) * (self.grid[i + 1] - self.grid[i]))


def _design(tr: Trials, shifts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Designs for rows of per-trial shifts (A, N): (A, N, n_b + k - 1), lo (A,), hi (A,)."""
    u = tr.x[None, :] - shifts
    lo, hi = u.min(axis=1), u.max(axis=1)
    basis = bspline_basis(u, lo[:, None], hi[:, None], k)
    levels = np.broadcast_to(np.eye(tr.lb.size)[tr.batch], (u.shape[0], tr.n, tr.lb.size))
    # The basis sums to one, as do the level columns: drop one basis function.
    return np.concatenate([levels, basis[..., 1:]], axis=-1), lo, hi


def _solve(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares for each design (A, N, p): coefficients (A, p), RSS (A,)."""
    XtX = np.einsum("anp,anq->apq", X, X)
    Xty = np.einsum("anp,n->ap", X, y)
    ridge = 1e-9 * np.trace(XtX, axis1=1, axis2=2)[:, None, None] * np.eye(X.shape[2])
    beta = np.linalg.solve(XtX + ridge, Xty[..., None])[..., 0]
    resid = y[None, :] - np.einsum("anp,ap->an", X, beta)
    return beta, (resid**2).sum(axis=1)


@dataclass(frozen=True)
class LawFit:
    """The law's best fit: exponent, the shape, per-batch shifts and the RSS profile."""

    alpha: float
    log_break: float  # ln b_c; inf for a single power law
    k: int
    coef: np.ndarray  # (k,) spline coefficients (first fixed at 0)
    levels: np.ndarray  # (n_b,)
    lo: float
    hi: float
    rss: float
    n_params: int
    profile: Profile  # RSS over ALPHA_GRID (break profiled out where there is one)
    break_profile: Profile | None

    def shape(self, u: np.ndarray) -> np.ndarray:
        return bspline_basis(u, self.lo, self.hi, self.k) @ self.coef

    def shifts(self, lb: np.ndarray) -> np.ndarray:
        return self.alpha * np.minimum(lb, self.log_break)

    def peak(self) -> tuple[float, float]:
        """(u*, g(u*)): where the shape is highest, and its height."""
        u = np.linspace(self.lo, self.hi, 2001)
        g = self.shape(u)
        i = int(g.argmax())
        return float(u[i]), float(g[i])


def _sizes(tr: Trials, shifts: np.ndarray, k: int) -> np.ndarray:
    """Spline size per row of shifts (A, N): ``k``, except where an exponent lines the batch
    sizes' lr grids up (alpha = 0 on one fixed grid). There the u values collapse onto a few
    points, and ``k`` functions would interpolate their means: a spurious dip of the RSS profile,
    not a better law. Such rows (under half the distinct u values of the most spread row,
    counted at half the lr grid's spacing) get half their distinct values."""
    gaps = [np.diff(np.unique(tr.x[tr.batch == j])) for j in range(tr.lb.size)]
    gap = float(np.median(np.concatenate(gaps))) if any(g.size for g in gaps) else 1.0
    cells = np.round((tr.x[None, :] - shifts) / (0.5 * gap))
    cells.sort(axis=1)
    distinct = 1 + (np.diff(cells, axis=1) != 0).sum(axis=1)
    collapsed = distinct < 0.5 * distinct.max()
    return np.where(collapsed, np.clip(distinct // 2, _MIN_BASIS, k), k)


def fit_law(tr: Trials, k: int, log_breaks: np.ndarray | None = None,
            grid: np.ndarray = ALPHA_GRID) -> LawFit:
    """Profile the exponent over ``grid`` (and, given ``log_breaks``, a break) and refit at the
    optimum; ``k`` is the spline's size (`_sizes` takes fewer where the u values collapse)."""
    breaks = np.array([math.inf]) if log_breaks is None else np.asarray(log_breaks, float)
    # Only the single law: a break already lines up every batch size above it, and shrinking
    # the spline there would cut the slope's profile short.
    single = log_breaks is None and grid.size > 1
    table = np.empty((breaks.size, grid.size))
    for row, kappa in enumerate(breaks):
        shifts = grid[:, None] * np.minimum(tr.lb, kappa)[tr.batch][None, :]
        sizes = _sizes(tr, shifts, k) if single else np.full(grid.size, k)
        for size in np.unique(sizes):
            rows = sizes == size
            X, _, _ = _design(tr, shifts[rows], int(size))
            table[row, rows] = _solve(X, tr.y)[1]
    j, i = np.unravel_index(int(table.argmin()), table.shape)
    profile = Profile(grid, table.min(axis=0), int(table.min(axis=0).argmin()))
    break_profile = None if log_breaks is None else Profile(breaks, table.min(axis=1), int(j))
    alpha = profile.argmin() if log_breaks is None and grid.size > 2 else float(grid[i])
    kappa = float(breaks[j])
    shifts = alpha * np.minimum(tr.lb, kappa)[tr.batch][None, :]
    X, lo, hi = _design(tr, shifts, k)
    beta, rss = _solve(X, tr.y)
    n_b = tr.lb.size
    coef = np.concatenate([[0.0], beta[0, n_b:]])
    n_params = n_b + k - 1 + 1 + (log_breaks is not None)
    return LawFit(alpha, kappa, k, coef, beta[0, :n_b], float(lo[0]), float(hi[0]),
                  float(rss[0]), n_params, profile, break_profile)


@dataclass(frozen=True)
class PlacedShape:
    """A shape fitted with each batch size at a shift of its own (no law between them)."""

    placed: np.ndarray  # (n_b,) shifts the shape was fitted at
    k: int
    coef: np.ndarray
    lo: float
    hi: float
    rss: float
    dof: int  # trials minus levels, shape and shifts

    def shape(self, u: np.ndarray) -> np.ndarray:
        return bspline_basis(u, self.lo, self.hi, self.k) @ self.coef

    def shifts(self, lb: np.ndarray) -> np.ndarray:
        return self.placed


def free_model(tr: Trials, start: np.ndarray, k: int, rounds: int = 4
               ) -> tuple[PlacedShape, FreeShifts]:
    """Fit the shape and every batch size's own shift together, alternating: the shape given
    the shifts (linear), then each shift given the shape, from ``start`` (n_b,)."""
    shifts = np.asarray(start, float)
    n_b = tr.lb.size
    placed: PlacedShape | None = None
    free: FreeShifts | None = None
    for _ in range(rounds):
        X, lo, hi = _design(tr, shifts[tr.batch][None, :], k)
        beta, rss = _solve(X, tr.y)
        placed = PlacedShape(shifts, k, np.concatenate([[0.0], beta[0, n_b:]]), float(lo[0]),
                             float(hi[0]), float(rss[0]), tr.n - 2 * n_b - k + 1)
        free = free_shifts(tr, placed)
        shifts = free.shift
    assert placed is not None and free is not None
    return placed, free


@dataclass(frozen=True)
class FreeShifts:
    """Each group's (batch size's, or seed's at a batch size) best shift given the law's shape."""

    shift: np.ndarray  # (n_groups,)
    rss: float  # total RSS with every group at its own shift
    profiles: list[Profile]


def free_shifts(tr: Trials, law: LawFit | PlacedShape, groups: np.ndarray | None = None,
                group_batch: np.ndarray | None = None) -> FreeShifts:
    """Place each group of trials (default: each batch size) where it fits the shared shape
    best, with its own level. ``groups``: (N,) group index per trial; ``group_batch``: the batch
    index of each group."""
    if groups is None or group_batch is None:
        groups, group_batch = tr.batch, np.arange(tr.lb.size)
    centre = law.shifts(tr.lb)[group_batch]
    d = np.arange(-_SHIFT_SPAN, _SHIFT_SPAN + 1e-9, _SHIFT_STEP)
    shift = np.empty(group_batch.size)
    profiles = []
    total = 0.0
    for j in range(group_batch.size):
        x, y = tr.x[groups == j], tr.y[groups == j]
        grid = centre[j] + d
        g = law.shape(x[None, :] - grid[:, None])  # (S, n_j)
        r = (y - y.mean())[None, :] - (g - g.mean(axis=1, keepdims=True))
        rss = (r**2).sum(axis=1)
        # At the law's own shift (the grid's middle) the fit is the law's: never worse than it.
        p = Profile(grid, rss, int(rss.argmin()))
        profiles.append(p)
        shift[j] = p.argmin()
        total += float(rss.min())
    return FreeShifts(shift, total, profiles)


@dataclass(frozen=True)
class Misfit:
    """The lack-of-fit test of a law against free shifts."""

    f: float  # mean square of the misfit over the residual variance (NaN without dof)
    p: float
    df1: int
    df2: int
    s2: float  # residual variance of the law


def lack_of_fit(tr: Trials, law: LawFit, free: FreeShifts, law_shift_params: int) -> Misfit:
    df1 = tr.lb.size - law_shift_params
    df2 = tr.n - law.n_params
    s2 = law.rss / df2 if df2 > 0 else math.nan
    if df1 <= 0 or df2 - df1 <= 0:
        return Misfit(math.nan, math.nan, max(df1, 0), df2, s2)
    gain = max(law.rss - free.rss, 0.0)
    resid = free.rss / (df2 - df1)
    f = (gain / df1) / resid if resid > 0 else math.inf
    return Misfit(f, float(scipy.stats.f.sf(f, df1, df2 - df1)), df1, df2 - df1, s2)


def threshold(misfit: Misfit, level: float) -> tuple[float, float]:
    """(RSS rise that bounds the interval, the inflation m) for a 1-parameter profile.

    q² s² m with m = max(1, F): misfit between batch sizes beyond the noise widens the interval.
    The t quantile's degrees of freedom move from the residual's towards the misfit's (n_b - 2)
    as the misfit's share of the variance grows (Satterthwaite).
    """
    f = misfit.f if math.isfinite(misfit.f) else 1.0
    m = max(1.0, f)
    share = 1.0 - 1.0 / m
    dof = 1.0 / (share / max(misfit.df1, 1) + (1 - share) / max(misfit.df2, 1))
    q = float(scipy.stats.t.ppf(0.5 + level / 2, dof))
    return q * q * misfit.s2 * m, m


def seed_lack_of_fit(shift: np.ndarray, group_batch: np.ndarray, design: np.ndarray,
                     extra: int = 0) -> Misfit:
    """Goodness of fit with replicates: do the batch sizes' mean shifts stray from the law more
    than the seeds at one batch size stray from each other?

    shift: (G,) free shift of each (batch size, seed) group; group_batch: (G,) its batch index;
    design: (n_b, p) the law's design in ln b ([1, ln b], or [1, min(ln b, ln b_c)]); extra:
    parameters fitted besides it (1 for b_c). A nested
    one-way analysis of variance: F = (weighted misfit of the batch means)/(n_b - p) over the
    within-batch variance of the seeds' shifts.
    """
    n_b = design.shape[0]
    counts = np.bincount(group_batch, minlength=n_b).astype(float)
    means = np.bincount(group_batch, weights=shift, minlength=n_b) / np.maximum(counts, 1)
    within = float(((shift - means[group_batch]) ** 2).sum())
    df2 = int((counts - 1).clip(min=0).sum())
    has = counts > 0
    X, w, yb = design[has], counts[has], means[has]
    df1 = int(has.sum()) - design.shape[1] - extra
    if df1 <= 0 or df2 <= 0 or within <= 0:
        return Misfit(math.nan, math.nan, max(df1, 0), df2, math.nan)
    beta = np.linalg.lstsq(X * np.sqrt(w)[:, None], yb * np.sqrt(w), rcond=None)[0]
    between = float((w * (yb - X @ beta) ** 2).sum())
    f = (between / df1) / (within / df2)
    return Misfit(f, float(scipy.stats.f.sf(f, df1, df2)), df1, df2, within / df2)


@dataclass(frozen=True)
class BrokenLine:
    """lr* shifts regressed on ln b with a break: shift_b = c + alpha · min(ln b, ln b_c)."""

    alpha: float
    alpha_ci: tuple[float, float]
    log_break: float
    log_break_ci: tuple[float, float]
    c: float


def broken_line(lb: np.ndarray, shift: np.ndarray, sd: np.ndarray, dof_noise: int,
                level: float = 0.95, n_breaks: int = 241) -> BrokenLine:
    """Weighted broken-line fit of the batch sizes' free shifts (sd: each one's standard error),
    with profile intervals for alpha and the break.

    The joint shape-and-law fit places alpha and b_c where the spline's knots happen to suit the
    trials (its RSS surface has several dips with few trials per batch size), which left a 95%
    interval holding the truth in 45-78% of worlds with a critical batch size. Each batch size's
    own shift, against the shape, is well determined; the law over them is a 3-parameter
    regression whose scatter beyond the shifts' errors widens both intervals (as `threshold`
    does for the single law). For a fixed break the exponent is a weighted linear regression, so
    the profile over alpha is closed form; the break is profiled on a fine grid from the second
    to the largest batch size.
    """
    w = 1.0 / sd**2
    kappas = np.linspace(lb[1], lb[-1], n_breaks)
    z = np.minimum(lb[None, :], kappas[:, None])  # (K, n_b)
    sw = w.sum()
    zbar = (w * z).sum(axis=1) / sw
    ybar = float((w * shift).sum() / sw)
    dz = z - zbar[:, None]
    sxx = (w * dz**2).sum(axis=1)
    a_hat = (w * dz * (shift - ybar)).sum(axis=1) / np.where(sxx > 0, sxx, np.inf)
    s_min = (w * (shift - ybar - a_hat[:, None] * dz) ** 2).sum(axis=1)  # (K,)
    best = int(s_min.argmin())
    df1 = lb.size - 3
    scale = max(1.0, float(s_min[best]) / df1) if df1 > 0 else math.inf
    rise = threshold(Misfit(scale, math.nan, df1, dof_noise, 1.0), level)[0] if df1 > 0 else math.inf
    brk = Profile(kappas, s_min, best)
    klo, khi = brk.interval(rise)
    # Profile over alpha: min over breaks of s_min(k) + (alpha - a_hat(k))² sxx(k).
    s_alpha = (s_min[:, None] + (ALPHA_GRID[None, :] - a_hat[:, None]) ** 2 * sxx[:, None]).min(0)
    prof = Profile(ALPHA_GRID, s_alpha, int(s_alpha.argmin()))
    alo, ahi = prof.interval(rise)
    alpha = float(a_hat[best])
    return BrokenLine(alpha, (min(alo, alpha), max(ahi, alpha)), float(kappas[best]),
                      (klo, khi), ybar - alpha * float(zbar[best]))
