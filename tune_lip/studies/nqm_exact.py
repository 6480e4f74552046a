"""The noisy quadratic model's maths: exact (preconditioned) SGD moments, simulated chains, lr*.

Moved out of `tune_lip.studies.nqm` (whose docstring derives it) so that the study module reads
as the study's recipe: config, loop, what it reports. Hand-written: no library has the NQM.

- `curvatures`: the spectrum h_i = i^(-power).
- `preconditioner`: the per-dimension step factor h_i^(-p) of ``precond_sgd`` (Zhang et al. 2019,
  §3.3: P = H^p, update θ ← θ − lr·P⁻¹·g); ones for plain ``sgd``.
- `expected_loss_sgd`: exact E L(θ_T) of SGD or preconditioned SGD (closed form for constant-lr
  runs without momentum, else the 3-term raw-moment recursion), vectorised over lr arrays, float64.
- `exact_optimal_lr`, `exact_lr_scaling`: lr* per batch size from the exact loss, and α.
- `steps_to_target`, `critical_batch_size`: the paper's measure (steps to reach a target loss,
  lr tuned per batch size) from the exact loss, and where perfect scaling ends.
- `monte_carlo_loss` and `_Chains`: seeded simulated runs (the check of the exact moments, and
  the only estimate for Adam, which is a simulation of ours, not the paper's model).

Example:
    >>> from tune_lip.studies.nqm import NQMConfig
    >>> cfg = NQMConfig.from_dict({"dim": 10, "noise": 0.0, "budget": {"steps": 5}})
    >>> round(expected_loss_sgd(cfg, 1.0), 6)   # lr = 1/h_1 solves dimension 1 in one step
    0.100644
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import minimize_scalar

from tune_lip.studies.budget import lr_at

if TYPE_CHECKING:   # only for annotations: the config module imports this one
    from tune_lip.studies.nqm import NQMConfig

__all__ = ["EXACT_OPTIMIZERS", "curvatures", "preconditioner", "expected_loss_sgd", "exact_optimal_lr",
           "exact_lr_scaling", "steps_to_target", "critical_batch_size", "monte_carlo_loss"]

EXACT_OPTIMIZERS = ("sgd", "precond_sgd")   # the optimizers whose expected loss is exact here


def curvatures(cfg: NQMConfig) -> np.ndarray:
    """h_i = i^(-power), i = 1..dim: (dim,) float64, largest first, max 1."""
    return np.arange(1, cfg.dim + 1, dtype=np.float64) ** (-cfg.power)


def preconditioner(cfg: NQMConfig) -> np.ndarray:
    """The per-dimension step factor h_i^(-p) of preconditioned SGD: (dim,) float64.

    Zhang et al. (2019) §3.3 take P = H^p (0 ≤ p ≤ 1) and step θ ← θ − lr·P⁻¹·g: with a diagonal
    H that is plain SGD with the per-dimension learning rate lr·h_i^(-p), which is how every
    function here runs it (momentum buffers P⁻¹g the same way: P⁻¹ is linear and fixed). Plain
    ``sgd`` (and p = 0) gives exact ones, so lr·factor is bit for bit the SGD learning rate.

    Example:
        >>> from tune_lip.studies.nqm import NQMConfig
        >>> cfg = NQMConfig.from_dict({"dim": 4, "optimizer": {"name": "precond_sgd", "precond_power": 0.5}})
        >>> preconditioner(cfg).round(3).tolist()   # sqrt(i): flat directions get larger steps
        [1.0, 1.414, 1.732, 2.0]
    """
    p = cfg.optimizer.precond_power if cfg.optimizer.name == "precond_sgd" else 0.0
    return curvatures(cfg) ** (-p)


# ---------------------------------------------------------------------------- exact SGD moments

def _sgd_power(lr: Any, h: np.ndarray, s2: np.ndarray, steps: int) -> np.ndarray:
    """E θ² after ``steps`` plain-SGD steps at constant ``lr`` from E θ₀² = 1: (..., dim).

    r^t and the geometric sum (1 − r^t)/(1 − r) go through log1p/expm1, accurate when lr·h ≪ 1.
    """
    x = lr * h
    one_minus_r = x * (2.0 - x)                        # 1 − (1 − x)², exact for small x
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        log_r = np.log1p(-one_minus_r)                 # −inf at lr·h = 1 (r = 0)
        r_t = np.exp(steps * log_r)
        geo = np.where(one_minus_r == 0, float(steps), -np.expm1(steps * log_r) / one_minus_r)
        return r_t + geo * lr**2 * s2


def _moment_step(S: np.ndarray, lr: Any, h: np.ndarray, s2: np.ndarray, momentum: float,
                 nesterov: bool) -> np.ndarray:
    """One SGD step of the raw moments S = (E θ², E θv, E v²): (3, ..., dim) -> same."""
    tt, tv, vv = S[0], S[1], S[2]
    mu = momentum
    if nesterov and mu > 0:
        a, c, p = 1.0 - lr * (1.0 + mu) * h, -lr * mu * mu, -lr * (1.0 + mu)
    else:
        a, c, p = 1.0 - lr * h, -lr * mu, -lr
    d, e = h, mu                                          # v' = hθ + μv + ξ; q = 1
    with np.errstate(over="ignore", invalid="ignore"):
        return np.stack([
            a * a * tt + 2 * a * c * tv + c * c * vv + p * p * s2,
            a * d * tt + (a * e + c * d) * tv + c * e * vv + p * s2,
            d * d * tt + 2 * d * e * tv + e * e * vv + s2,
        ])


def _closed_form(cfg: NQMConfig) -> bool:
    """Plain SGD at a constant lr: E θ_t² is a closed form in t (no per-step recursion)."""
    s = cfg.schedule
    return cfg.optimizer.momentum == 0 and s.name == "constant" and s.warmup == 0


def expected_loss_sgd(cfg: NQMConfig, lr: Any = None, batch_size: int | None = None,
                      steps: int | None = None) -> Any:
    """Exact E L(θ_T) of SGD or preconditioned SGD (cfg's optimizer, momentum, Nesterov,
    schedule) after ``steps`` steps.

    lr: peak lr, a float or an array of them (default cfg.optimizer.lr); batch_size default
    cfg.dataset.batch_size; steps default what cfg.budget buys at that batch size. Returns a
    float (or an array shaped like ``lr``); inf where the run diverges numerically. Constant-lr
    plain SGD costs O(dim) whatever ``steps``; otherwise O(steps·dim·len(lr)).

    Example:
        >>> from tune_lip.studies.nqm import NQMConfig
        >>> cfg = NQMConfig.from_dict({"dim": 10, "noise": 0.0, "budget": {"steps": 5}})
        >>> round(expected_loss_sgd(cfg, 1.0), 6)   # lr = 1/h_1 solves dimension 1 in one step
        0.100644
    """
    if cfg.optimizer.name not in EXACT_OPTIMIZERS:
        raise ValueError("expected_loss_sgd is exact for sgd and precond_sgd only; use monte_carlo_loss "
                         f"for {cfg.optimizer.name}")
    b = batch_size or cfg.dataset.batch_size
    T = cfg.total_steps(b) if steps is None else int(steps)
    peak = np.asarray(cfg.optimizer.lr if lr is None else lr, dtype=np.float64)
    h = curvatures(cfg)
    s2 = cfg.noise * h / b
    eta = peak[..., None] * preconditioner(cfg)             # (..., dim): per-dimension lr
    if _closed_form(cfg):
        tt = _sgd_power(eta, h, s2, T) if T > 0 else np.ones(peak.shape + h.shape)
    else:
        S = np.zeros((3, *peak.shape, h.size))
        S[0] = 1.0
        for t in range(T):
            scale = lr_at(t / T, peak_lr=1.0, schedule=cfg.schedule, total_steps=T)  # every schedule ∝ peak
            S = _moment_step(S, eta * scale, h, s2, cfg.optimizer.momentum, cfg.optimizer.nesterov)
        tt = S[0]
    with np.errstate(invalid="ignore", over="ignore"):
        loss = 0.5 * np.sum(h * tt, axis=-1)
    loss = np.where(np.isfinite(loss), loss, np.inf)
    return float(loss) if loss.ndim == 0 else loss


def exact_optimal_lr(cfg: NQMConfig, batch_size: int, *, lr_range: tuple[float, float] = (1e-4, 1e1),
                     grid: int = 61) -> float:
    """The constant-peak lr minimising the exact final expected loss at ``batch_size`` (SGD).

    A coarse log grid over ``lr_range`` finds the basin; scipy's bounded Brent search on
    log lr between the neighbouring grid points refines it. Raises ValueError when the
    best grid point is an end of ``lr_range`` (the range does not bracket the optimum).

    Example:
        >>> from tune_lip.studies.nqm import NQMConfig
        >>> cfg = NQMConfig.from_dict({"dim": 100, "budget": {"examples": 16384}})
        >>> round(exact_optimal_lr(cfg, 4), 4)
        0.0435
    """
    lrs = np.geomspace(lr_range[0], lr_range[1], grid)
    losses = expected_loss_sgd(cfg, lrs, batch_size)
    i = int(np.argmin(losses))
    if i in (0, grid - 1) or not np.isfinite(losses[i]):
        raise ValueError(f"exact optimum at batch size {batch_size} is outside lr_range={lr_range}")

    def objective(log_lr: float) -> float:
        value = expected_loss_sgd(cfg, math.exp(log_lr), batch_size)
        return math.log(value) if math.isfinite(value) else 1e3   # log: better conditioned

    res = minimize_scalar(objective, bounds=(math.log(lrs[i - 1]), math.log(lrs[i + 1])), method="bounded",
                          options={"xatol": 1e-7})
    return float(math.exp(res.x))


def exact_lr_scaling(cfg: NQMConfig, batch_sizes: Any, **kwargs: Any) -> tuple[np.ndarray, float]:
    """Exact optimal lr per batch size and α, the least-squares slope of log lr* vs log b.

    Example:
        >>> from tune_lip.studies.nqm import NQMConfig
        >>> cfg = NQMConfig.from_dict({"dim": 100, "budget": {"examples": 16384}})
        >>> lr_stars, alpha = exact_lr_scaling(cfg, [1, 2, 4, 8, 16])
        >>> round(alpha, 2)
        1.0
    """
    bs = np.asarray(list(batch_sizes), dtype=np.float64)
    lr_stars = np.array([exact_optimal_lr(cfg, int(b), **kwargs) for b in bs])
    alpha = float(np.polyfit(np.log(bs), np.log(lr_stars), 1)[0])
    return lr_stars, alpha


# ---------------------------------------------------------------------------- steps to a target loss

def _closed_form_loss(eta: np.ndarray, h: np.ndarray, s2: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Exact loss after t[k] steps at the constant per-dimension lr eta[k]: (n, dim), (n,) -> (n,).

    One expm1 per element: r^t = 1 + expm1(t·ln r); the absolute error ≤ 1e-16 of r^t is far
    below any loss that matters, and (1 − r^t)/(1 − r) keeps its accuracy when lr·h ≪ 1.
    """
    x = eta * h
    one_minus_r = x * (2.0 - x)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        log_r = np.log1p(-one_minus_r)
        em = np.expm1(t[:, None] * log_r)
        geo = np.where(one_minus_r == 0, t[:, None], -em / one_minus_r)
        loss = 0.5 * np.sum(h * (1.0 + em + geo * eta**2 * s2), axis=-1)
    return np.where(np.isfinite(loss), loss, np.inf)


def steps_to_target(cfg: NQMConfig, target: float, lr: Any = None, batch_size: int | None = None, *,
                    max_steps: int = 10**8) -> Any:
    """Fewest steps after which the exact expected loss is ≤ ``target``: Zhang et al.'s measure.

    For cfg's (preconditioned) SGD at a constant lr without momentum, where the loss is a closed
    form in t. ``lr``: a float or an array (default cfg.optimizer.lr); returns a float (an array
    shaped like ``lr``), ``inf`` where the target is not reached within ``max_steps`` (e.g. it is
    below the steady-state risk of that lr and batch size). Doubling then bisection over t: exact
    when the loss falls monotonically in t, which holds when every dimension's steady-state risk
    is below its initial risk ½h_i; otherwise it is the first such t the search meets.

    Example:
        >>> from tune_lip.studies.nqm import NQMConfig
        >>> cfg = NQMConfig.from_dict({"dim": 100, "dataset": {"batch_size": 64}})
        >>> steps_to_target(cfg, 0.1, lr=[0.5, 1.0]).tolist()
        [113.0, 62.0]
    """
    o, s = cfg.optimizer, cfg.schedule
    if o.name not in EXACT_OPTIMIZERS or o.momentum != 0 or s.name != "constant" or s.warmup != 0:
        raise ValueError("steps_to_target needs (precond_)sgd at a constant lr without momentum (a closed "
                         "form in t); use expected_loss_sgd step by step otherwise")
    peak = np.asarray(o.lr if lr is None else lr, dtype=np.float64)
    flat = peak.reshape(-1)
    h = curvatures(cfg)
    s2 = cfg.noise * h / (batch_size or cfg.dataset.batch_size)
    eta = flat[:, None] * preconditioner(cfg)             # (n, dim)
    n = flat.size
    lo, hi = np.zeros(n), np.ones(n)                      # loss(lo) > target >= loss(hi), once found
    start = 0.5 * float(h.sum())                          # E θ₀² = 1
    for _ in range(int(math.log2(max_steps)) + 2):
        above = (_closed_form_loss(eta, h, s2, hi) > target) & (hi <= max_steps)
        if not above.any():
            break
        lo, hi = np.where(above, hi, lo), np.where(above, 2 * hi, hi)
    reached = (_closed_form_loss(eta, h, s2, hi) <= target) & (hi <= 2 * max_steps)
    while True:
        gap = reached & (hi - lo > 1)
        if not gap.any():
            break
        mid = np.floor((lo + hi) / 2)
        below = _closed_form_loss(eta, h, s2, mid) <= target
        hi, lo = np.where(gap & below, mid, hi), np.where(gap & ~below, mid, lo)
    steps = np.where(start <= target, 0.0, np.where(reached & (hi <= max_steps), hi, np.inf))
    return float(steps[0]) if peak.ndim == 0 else steps.reshape(peak.shape)


def critical_batch_size(cfg: NQMConfig, batch_sizes: Any, target: float, *,
                        lrs: Any = None) -> tuple[np.ndarray, float]:
    """Steps to ``target`` per batch size (lr tuned on a grid) and the critical batch size.

    steps[k] = min over ``lrs`` (default: 80 log-spaced values in [1e-5, 2]) of
    `steps_to_target` at batch_sizes[k], the paper's lr-tuned steps-to-target curve. The critical batch size is McCandlish et al.'s (2018) B_crit = E_min / S_min:
    the fewest examples (b·steps, at the small batches, where scaling is perfect) over the fewest
    steps (at the large batches, where it has saturated), the knee of the curve. It is only
    meaningful when ``batch_sizes`` reach both regimes; inf steps (target not reached) are skipped.

    Example:
        >>> from tune_lip.studies.nqm import NQMConfig
        >>> cfg = NQMConfig.from_dict({"dim": 100})
        >>> steps, b_crit = critical_batch_size(cfg, [1, 16, 256, 4096], 0.05)
        >>> steps.tolist(), round(b_crit)
        ([4352.0, 292.0, 54.0, 44.0], 99)
    """
    grid = np.geomspace(1e-5, 2.0, 80) if lrs is None else np.asarray(lrs, dtype=np.float64)
    bs = np.asarray(list(batch_sizes), dtype=np.float64)
    steps = np.array([np.min(steps_to_target(cfg, target, grid, int(b))) for b in bs])
    ok = np.isfinite(steps)
    if not ok.any():
        return steps, math.nan
    return steps, float(np.min(bs[ok] * steps[ok]) / np.min(steps[ok]))


# ---------------------------------------------------------------------------- simulated chains

class _Chains:
    """``chains`` independent runs of SGD or Adam, vectorised: arrays (chains, dim)."""

    def __init__(self, cfg: NQMConfig, h: np.ndarray, s2: np.ndarray, chains: int) -> None:
        self.cfg, self.h, self.noise_std = cfg, h, np.sqrt(s2)
        self.precond = preconditioner(cfg)    # (dim,) h^(-p); ones for sgd and adam
        self.rng = np.random.Generator(np.random.PCG64(cfg.seed))
        self.theta = self.rng.standard_normal((chains, h.size))   # θ₀ ~ N(0, I), as Zhang et al.
        self.m = np.zeros_like(self.theta)    # SGD momentum buffer / Adam first moment
        self.v = np.zeros_like(self.theta)    # Adam second moment
        self.t = 0

    def step(self, lr: float) -> None:
        o = self.cfg.optimizer
        g = self.h * self.theta + self.noise_std * self.rng.standard_normal(self.theta.shape)
        self.t += 1
        if o.name in EXACT_OPTIMIZERS:
            if o.name == "precond_sgd":
                g = self.precond * g            # P⁻¹g, P = H^p
            self.m = o.momentum * self.m + g
            self.theta -= lr * (g + o.momentum * self.m if o.nesterov else self.m)
            return
        b1, b2 = o.betas
        self.m = b1 * self.m + (1 - b1) * g
        self.v = b2 * self.v + (1 - b2) * g * g
        denom = np.sqrt(self.v) / math.sqrt(1 - b2**self.t) + o.eps       # torch.optim.Adam's form
        self.theta -= (lr / (1 - b1**self.t)) * self.m / denom

    def losses(self) -> np.ndarray:
        """Loss of every chain: (chains,)."""
        return 0.5 * (self.theta**2) @ self.h

    def state_dict(self) -> dict[str, Any]:
        return {"theta": self.theta.copy(), "m": self.m.copy(), "v": self.v.copy(), "t": self.t,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.theta, self.m, self.v = (np.array(state[k]) for k in ("theta", "m", "v"))
        self.t = int(state["t"])
        self.rng.bit_generator.state = state["rng"]


def monte_carlo_loss(cfg: NQMConfig, *, steps: int | None = None,
                     chains: int | None = None) -> tuple[float, float]:
    """Mean and standard error over ``chains`` simulated runs of the loss after ``steps``.

    Any optimizer (the check of the exact SGD moments; the only estimate for Adam). Seeded
    by cfg.seed. Defaults: the budget's steps and cfg.chains.

    Example:
        >>> from tune_lip.studies.nqm import NQMConfig
        >>> cfg = NQMConfig.from_dict({"optimizer": {"name": "adam", "lr": 0.01}, "budget": {"steps": 50}})
        >>> mean, stderr = monte_carlo_loss(cfg, chains=32)
        >>> 0 < stderr < mean
        True
    """
    T = cfg.total_steps() if steps is None else steps
    h = curvatures(cfg)
    sim = _Chains(cfg, h, cfg.noise * h / cfg.dataset.batch_size, chains or cfg.chains)
    for t in range(T):
        sim.step(lr_at(t / T, peak_lr=cfg.optimizer.lr, schedule=cfg.schedule, total_steps=T))
    losses = sim.losses()
    stderr = float(losses.std(ddof=1) / math.sqrt(losses.size)) if losses.size > 1 else math.inf
    return float(losses.mean()), stderr
