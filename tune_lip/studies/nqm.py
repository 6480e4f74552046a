"""The noisy quadratic model (NQM) study: a ground truth whose expected loss is exact.

Zhang et al. (2019), *Which algorithmic choices matter at which batch sizes?*: minimise
L(θ) = ½ Σ_i h_i θ_i² over θ ∈ R^dim with a diagonal curvature spectrum h_i = i^(-power),
i = 1..dim (so max h = h_1 = 1, and plain SGD is stable for lr < 2). A stochastic gradient
at batch size B is g = Hθ + ξ with ξ ~ N(0, noise·H/B): the per-example gradient covariance
is ``noise``·H (the gradient covariance ≈ Fisher ≈ Hessian assumption of the paper), and a
batch of B examples divides it by B. As in the paper, θ₀ ~ N(0, I); the expected loss depends
only on E θ₀² = 1, so the exact numbers below hold for θ₀ = 1 as well.

**Exact SGD** (momentum μ ≥ 0, torch's convention v ← μv + g, θ ← θ − lr·v, or Nesterov
θ ← θ − lr·(g + μv)). Dimensions evolve independently, and one step is linear in x = (θ, v):
x' = A x + b ξ with, per dimension (η = lr, h = h_i),

    heavy ball: A = [[1 − ηh, −ημ], [h, μ]],              b = (−η, 1)
    Nesterov:   A = [[1 − η(1+μ)h, −ημ²], [h, μ]],         b = (−η(1+μ), 1)

ξ is independent of x and has mean 0, so the *raw* second moments close on themselves
(no means needed): E[x'x'ᵀ] = A E[xxᵀ] Aᵀ + b bᵀ s² with s² = noise·h/B — a 3-term linear
recursion on (E θ², E θv, E v²), vectorised over dimensions (and over lr arrays) in float64.
Without momentum it is r = (1 − ηh)², E θ_t² = r^t E θ₀² + (1 − r^t)/(1 − r)·η² s², a closed
form in t. E L(θ_t) = ½ Σ h_i E θ_i² is then exact: no sampling noise at all.

**Adam** is not linear, so it is simulated: ``chains`` independent runs, vectorised (numpy,
float64, seeded), and the reported loss is the mean over chains — an unbiased estimate of the
expected loss, *not* the exact value (`monte_carlo_loss` gives its standard error). Trials
with the same seed and dimensions draw the same θ₀ and the same standard-normal noise, so
trials at different learning rates are compared with common random numbers.

The NQM has no data set: ``test_loss`` is the same expected loss as ``train_loss`` (reported
under both names so every study speaks the DESIGN.md vocabulary), and ``train_loss`` is the
loss *at the current iterate*, not an average over the slice. Budgets are ``{steps: N}`` or
``{examples: X}`` (steps = X // B). With an examples budget and small batches, SGD is in the
SDE regime where the loss depends on (lr, B) only through lr/B (the trajectory's time
lr·X/B and its noise temperature lr/B both do), so lr* ∝ B exactly (α = 1)
until lr* reaches the curvature limit (the critical batch size) and saturates. With a fixed
*steps* budget the optimum grows more slowly than B (α < 1), since a larger lr also buys a
longer trajectory.

Example:
    >>> cfg = NQMConfig.from_dict({"dataset": {"batch_size": 16}, "optimizer": {"lr": 0.1},
    ...                            "budget": {"steps": 200}, "reports": 2})
    >>> loop = NQMLoop(cfg)
    >>> m = loop.train_for(200)
    >>> m["steps"], round(m["train_loss"], 6) == round(expected_loss_sgd(cfg, 0.1), 6)
    (200, True)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from tune_lip.errors import ConfigError, UserError
from tune_lip.studies.budget import Budget, ScheduleConfig, lr_at, parse_budget
from tune_lip.studies.lipschitz import DIVERGED_LOSS
from tune_lip.studies.registry import Study, register

__all__ = [
    "NQM_OPTIMIZERS",
    "DIVERGE_FACTOR",
    "CHECK_EVERY",
    "NQMOptimizerConfig",
    "NQMDataConfig",
    "NQMConfig",
    "NQMLoop",
    "curvatures",
    "expected_loss_sgd",
    "monte_carlo_loss",
    "exact_optimal_lr",
    "exact_lr_scaling",
]

NQM_OPTIMIZERS = ("sgd", "adam")
DIVERGE_FACTOR = 1e6     # a loss above this many times the initial loss counts as diverged
CHECK_EVERY = 64         # steps between divergence checks (at absolute step multiples)


# ---------------------------------------------------------------------------- config

@dataclass(frozen=True)
class NQMOptimizerConfig:
    name: str = "sgd"                           # sgd (exact) or adam (simulated chains)
    lr: float = 0.1                             # peak learning rate, per step
    momentum: float = 0.0                       # SGD heavy-ball momentum μ in [0, 1)
    nesterov: bool = False                      # SGD only; ignored without momentum
    betas: tuple[float, float] = (0.9, 0.999)   # Adam
    eps: float = 1e-8                           # Adam denominator epsilon

    def __post_init__(self) -> None:
        if self.name not in NQM_OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; "
                             f"valid for the NQM: {', '.join(NQM_OPTIMIZERS)}")
        if not self.lr > 0:
            raise ValueError(f"optimizer.lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"optimizer.momentum must be in [0, 1), got {self.momentum}")
        if self.name == "adam" and self.momentum != 0:
            raise ValueError("optimizer.momentum is for sgd; adam's momentum is betas[0]")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas) or self.eps < 0:
            raise ValueError("optimizer.betas must be two numbers in [0, 1) and eps >= 0, "
                             f"got {self.betas}, {self.eps}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "lr", float(self.lr))
        object.__setattr__(self, "momentum", float(self.momentum))


@dataclass(frozen=True)
class NQMDataConfig:
    batch_size: int = 1     # examples per step: the gradient noise covariance is noise·H / batch_size

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ValueError(f"dataset.batch_size must be a positive integer, got {self.batch_size}")
        object.__setattr__(self, "batch_size", int(self.batch_size))


def _section(key: str, cls: Any, raw: Any) -> Any:
    """``cls(**raw)``; a bad or unknown option becomes a ConfigError naming ``key``."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(key, f"must be a mapping, got {raw!r}")
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", f"unknown option; valid: {', '.join(sorted(valid))}")
    try:
        return cls(**raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(key, str(exc).split("\n")[0]) from None


@dataclass(frozen=True)
class NQMConfig:
    """One NQM trial; `from_dict` takes a trial's (Ray) config and names the key at fault."""

    seed: int = 0            # seeds θ₀ and the gradient noise of the simulated chains (Adam)
    dim: int = 100           # number of dimensions (curvature eigenvalues)
    power: float = 1.0       # h_i = i^(-power), i = 1..dim; max h = 1
    noise: float = 1.0       # per-example gradient noise covariance, in units of H
    optimizer: NQMOptimizerConfig = field(default_factory=NQMOptimizerConfig)
    dataset: NQMDataConfig = field(default_factory=NQMDataConfig)
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig("constant"))
    budget: Budget = field(default_factory=lambda: Budget("steps", 1000))
    reports: int = 10        # train slices per trial
    chains: int = 64         # simulated runs averaged for Adam (and for monte_carlo_loss)

    def __post_init__(self) -> None:
        checks = {"seed": self.seed >= 0, "dim": self.dim >= 1, "power": self.power >= 0, "noise": self.noise >= 0,
                  "reports": self.reports >= 1, "chains": self.chains >= 1}
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(key, f"out of range, got {getattr(self, key)!r}")
        if self.budget.kind not in ("steps", "examples"):
            raise ConfigError("budget", f"the NQM has no data set or step time, so a {self.budget.kind} "
                              "budget means nothing; use {steps: N} or {examples: X}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NQMConfig:
        """Build from a nested mapping; raises ConfigError naming the dotted key at fault."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown config key; valid: {', '.join(sorted(known))}")
        scalars: dict[str, Any] = {}
        for key, kind in (("seed", int), ("dim", int), ("power", float), ("noise", float),
                          ("reports", int), ("chains", int)):
            if key in raw:
                value = raw[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or kind(value) != value:
                    what = "an integer" if kind is int else "a number"
                    raise ConfigError(key, f"must be {what}, got {value!r}")
                scalars[key] = kind(value)
        schedule = raw.get("schedule")
        if isinstance(schedule, dict) and "name" not in schedule:
            schedule = {"name": "constant", **schedule}   # the NQM's default schedule is constant
        try:
            schedule_cfg = ScheduleConfig("constant") if schedule is None else ScheduleConfig.from_dict(schedule)
        except (ValueError, TypeError) as exc:
            raise ConfigError("schedule", str(exc)) from None
        try:
            budget = parse_budget(raw["budget"], where="config") if "budget" in raw else Budget("steps", 1000)
        except UserError as exc:
            raise ConfigError(exc.key or "budget", exc.problem) from None
        return cls(**scalars, optimizer=_section("optimizer", NQMOptimizerConfig, raw.get("optimizer")),
                   dataset=_section("dataset", NQMDataConfig, raw.get("dataset")),
                   schedule=schedule_cfg, budget=budget)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["budget"] = self.budget.to_dict()
        return json.loads(json.dumps(out, default=list))

    def total_steps(self, batch_size: int | None = None) -> int:
        """Steps the budget buys at ``batch_size`` (default: this trial's)."""
        steps = self.budget.total_steps(batch_size=batch_size or self.dataset.batch_size, num_train=0)
        assert steps is not None
        return steps


def curvatures(cfg: NQMConfig) -> np.ndarray:
    """h_i = i^(-power), i = 1..dim: (dim,) float64, largest first, max 1."""
    return np.arange(1, cfg.dim + 1, dtype=np.float64) ** (-cfg.power)


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
    """Exact E L(θ_T) of SGD (cfg's momentum, Nesterov and schedule) after ``steps`` steps.

    lr: peak lr, a float or an array of them (default cfg.optimizer.lr); batch_size default
    cfg.dataset.batch_size; steps default what cfg.budget buys at that batch size. Returns a
    float (or an array shaped like ``lr``); inf where the run diverges numerically. Constant-lr
    plain SGD costs O(dim) whatever ``steps``; otherwise O(steps·dim·len(lr)).

    Example:
        >>> cfg = NQMConfig.from_dict({"dim": 10, "noise": 0.0, "budget": {"steps": 5}})
        >>> round(expected_loss_sgd(cfg, 1.0), 6)   # lr = 1/h_1 solves dimension 1 in one step
        0.100644
    """
    if cfg.optimizer.name != "sgd":
        raise ValueError("expected_loss_sgd is exact for sgd only; use monte_carlo_loss for adam")
    b = batch_size or cfg.dataset.batch_size
    T = cfg.total_steps(b) if steps is None else int(steps)
    peak = np.asarray(cfg.optimizer.lr if lr is None else lr, dtype=np.float64)
    h = curvatures(cfg)
    s2 = cfg.noise * h / b
    eta = peak[..., None]                                   # (..., 1) against (dim,)
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
        >>> cfg = NQMConfig.from_dict({"budget": {"examples": 16384}})
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
        >>> cfg = NQMConfig.from_dict({"budget": {"examples": 16384}})
        >>> lr_stars, alpha = exact_lr_scaling(cfg, [1, 2, 4, 8, 16])
        >>> round(alpha, 2)
        1.0
    """
    bs = np.asarray(list(batch_sizes), dtype=np.float64)
    lr_stars = np.array([exact_optimal_lr(cfg, int(b), **kwargs) for b in bs])
    alpha = float(np.polyfit(np.log(bs), np.log(lr_stars), 1)[0])
    return lr_stars, alpha


# ---------------------------------------------------------------------------- simulated chains

class _Chains:
    """``chains`` independent runs of SGD or Adam, vectorised: arrays (chains, dim)."""

    def __init__(self, cfg: NQMConfig, h: np.ndarray, s2: np.ndarray, chains: int) -> None:
        self.cfg, self.h, self.noise_std = cfg, h, np.sqrt(s2)
        self.rng = np.random.Generator(np.random.PCG64(cfg.seed))
        self.theta = self.rng.standard_normal((chains, h.size))   # θ₀ ~ N(0, I), as Zhang et al.
        self.m = np.zeros_like(self.theta)    # SGD momentum buffer / Adam first moment
        self.v = np.zeros_like(self.theta)    # Adam second moment
        self.t = 0

    def step(self, lr: float) -> None:
        o = self.cfg.optimizer
        g = self.h * self.theta + self.noise_std * self.rng.standard_normal(self.theta.shape)
        self.t += 1
        if o.name == "sgd":
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


# ---------------------------------------------------------------------------- the loop

class NQMLoop:
    """One NQM trial trained in slices; exact expected loss for SGD, chain mean for Adam.

    Divergence: a non-finite loss, or one above DIVERGE_FACTOR × the initial expected loss,
    checked every CHECK_EVERY steps and at the end of every slice, ends the trial with
    ``diverged=True`` and the finite DIVERGED_LOSS reported.
    """

    def __init__(self, cfg: NQMConfig) -> None:
        self.cfg = cfg
        self.h = curvatures(cfg)                                    # (dim,)
        self.s2 = cfg.noise * self.h / cfg.dataset.batch_size        # (dim,) gradient noise variances
        self.total_steps = cfg.total_steps()
        self.initial_loss = 0.5 * float(self.h.sum())               # E θ₀² = 1
        self.exact = cfg.optimizer.name == "sgd"
        self.moments = np.zeros((3, cfg.dim))                       # (E θ², E θv, E v²) per dimension
        self.moments[0] = 1.0
        self.chains = None if self.exact else _Chains(cfg, self.h, self.s2, cfg.chains)
        self.steps = 0
        self.diverged = False

    @property
    def examples(self) -> int:
        return self.steps * self.cfg.dataset.batch_size

    @property
    def finished(self) -> bool:
        return self.diverged or self.steps >= self.total_steps

    def lr(self, step: int) -> float:
        return lr_at(step / self.total_steps, peak_lr=self.cfg.optimizer.lr, schedule=self.cfg.schedule,
                     total_steps=self.total_steps)

    def loss(self) -> float:
        """Expected loss now: exact (SGD) or the mean over chains (Adam); may be inf or NaN."""
        with np.errstate(over="ignore", invalid="ignore"):
            if self.chains is not None:
                return float(self.chains.losses().mean())
            return float(0.5 * self.h @ self.moments[0])

    def _advance(self, steps: int) -> None:
        o = self.cfg.optimizer
        if self.chains is not None:
            for t in range(self.steps, self.steps + steps):
                self.chains.step(self.lr(t))
        elif _closed_form(self.cfg):
            # A pure function of the step count: slicing cannot change the numbers.
            self.moments[0] = _sgd_power(o.lr, self.h, self.s2, self.steps + steps)
        else:
            for t in range(self.steps, self.steps + steps):
                self.moments = _moment_step(self.moments, self.lr(t), self.h, self.s2, o.momentum, o.nesterov)
        self.steps += steps

    def _check(self) -> None:
        loss = self.loss()
        if not math.isfinite(loss) or loss > DIVERGE_FACTOR * self.initial_loss:
            self.diverged = True

    def train_for(self, steps: int) -> dict[str, Any]:
        """Train ``steps`` steps (fewer at the end of the budget or on divergence).

        Returns steps, examples, ``lr`` (the configured peak LR, ``optimizer.lr``), ``lr_now``
        (the scheduled LR of the last step taken; before the first step, the first step's),
        train_loss (the expected loss at the current iterate) and diverged.
        """
        end = min(self.steps + max(steps, 0), self.total_steps)
        last = max(self.steps - 1, 0)
        while self.steps < end and not self.diverged:
            chunk = min(end, (self.steps // CHECK_EVERY + 1) * CHECK_EVERY) - self.steps
            last = self.steps + chunk - 1
            self._advance(chunk)
            self._check()
        if not self.diverged:
            self._check()
        # steps and lr first: Ray's live progress table shows a trial's first four numeric metrics.
        return {"steps": self.steps, "lr": self.cfg.optimizer.lr, "examples": self.examples,
                "lr_now": self.lr(last),
                "train_loss": DIVERGED_LOSS if self.diverged else self.loss(), "diverged": self.diverged}

    def evaluate(self) -> dict[str, float]:
        """``test_loss``: the same expected loss as train_loss (the NQM has no test set)."""
        return {"test_loss": DIVERGED_LOSS if self.diverged else self.loss()}

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "steps": self.steps, "diverged": self.diverged,
                "moments": self.moments.copy(),
                "chains": None if self.chains is None else self.chains.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.diverged = bool(state["diverged"])
        self.moments = np.array(state["moments"])
        if self.chains is not None:
            self.chains.load_state_dict(state["chains"])


STUDY = register(Study(
    name="nqm", config=NQMConfig, loop=lambda config: NQMLoop(NQMConfig.from_dict(config)),
    metrics=frozenset({"train_loss", "test_loss"}),
))
