"""The noisy quadratic model (NQM) study: a ground truth whose expected loss is exact.

Zhang et al. (2019), *Which algorithmic choices matter at which batch sizes?* (arXiv 1907.04164),
§3: minimise L(θ) = ½ Σ_i h_i θ_i² over θ ∈ R^dim with a diagonal curvature spectrum
h_i = i^(-power), i = 1..dim (so max h = h_1 = 1, and plain SGD is stable for lr < 2). A
stochastic gradient at batch size B is g = Hθ + ξ with ξ ~ N(0, noise·H/B): the per-example
gradient covariance C is ``noise``·H (the paper's C = H: gradient covariance ≈ Fisher ≈ Hessian),
and a batch of B examples divides it by B. The defaults are the paper's NQM: dim = 10⁴, h_i = 1/i
(power 1), C = H (noise 1). θ₀ ~ N(0, I); the expected loss depends only on E θ₀² = 1, so the
exact numbers below hold for θ₀ = 1 as well. docs/RECIPES.md says what is the paper's and
what is ours.

Three optimizers (``optimizer.name``):

- ``sgd`` (exact; momentum μ ≥ 0, torch's convention v ← μv + g, θ ← θ − lr·v, or Nesterov
  θ ← θ − lr·(g + μv)).
- ``precond_sgd`` (exact; the paper's preconditioned SGD, §3.3): θ ← θ − lr·P⁻¹g with P = H^p,
  p = ``precond_power`` in [0, 1] (p = 0 is ``sgd``, p = 1 whitens the curvature). The paper models
  Adam and K-FAC this way. With a diagonal H it is SGD with the per-dimension lr·h_i^(-p), so
  the same exact moments apply (momentum and Nesterov included: the buffer holds P⁻¹g).
- ``adam`` (simulated): real torch-style Adam on the NQM, not the paper's model of it; see below.

**Exact moments.** Dimensions evolve independently, and one step is linear in x = (θ, v):
x' = A x + b ξ with, per dimension (η = lr·h_i^(-p), h = h_i),

    heavy ball: A = [[1 − ηh, −ημ], [h, μ]],              b = (−η, 1)
    Nesterov:   A = [[1 − η(1+μ)h, −ημ²], [h, μ]],         b = (−η(1+μ), 1)

ξ is independent of x and has mean 0, so the *raw* second moments close on themselves
(no means needed): E[x'x'ᵀ] = A E[xxᵀ] Aᵀ + b bᵀ s² with s² = noise·h/B — a 3-term linear
recursion on (E θ², E θv, E v²), vectorised over dimensions (and over lr arrays) in float64.
Without momentum it is r = (1 − ηh)², E θ_t² = r^t E θ₀² + (1 − r^t)/(1 − r)·η² s², a closed
form in t; in the paper's terms (§3.3) the risk ½h_i E θ_i² of dimension i is
(1 − lr·h_i^(1−p))^(2t)·½h_i + (1 − (1 − lr·h_i^(1−p))^(2t))·lr·c_i·h_i^(−p) / (2B(2 − lr·h_i^(1−p))),
c_i = noise·h_i (the paper states the bound without the second factor (1 − ...)). E L(θ_t) =
½ Σ h_i E θ_i² is then exact: no sampling noise at all. Stable iff lr·h_1^(1−p) < 2.

**Adam** is not linear, so it is simulated: ``chains`` independent runs, vectorised (numpy,
float64, seeded), and the reported loss is the mean over chains — an unbiased estimate of the
expected loss, *not* the exact value (`monte_carlo_loss` gives its standard error). Trials
with the same seed and dimensions draw the same θ₀ and the same standard-normal noise, so
trials at different learning rates are compared with common random numbers. Its cost grows
with chains·dim per step: the shipped Adam space sets dim 100.

The NQM has no data set: ``test_loss`` is the same expected loss as ``train_loss`` (reported
under both names so every study speaks the DESIGN.md vocabulary), and ``train_loss`` is the
loss *at the current iterate*, not an average over the slice. Budgets are ``{steps: N}`` or
``{examples: X}`` (steps = X // B). With an examples budget and small batches, SGD is in the
SDE regime where the loss depends on (lr, B) only through lr/B (the trajectory's time
lr·X/B and its noise temperature lr/B both do), so lr* ∝ B exactly (α = 1)
until lr* reaches the curvature limit (the critical batch size) and saturates; preconditioning
moves that limit to larger batches (the paper's finding, `critical_batch_size`). With a fixed
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

from tune_lip.errors import ConfigError, UserError
from tune_lip.studies.budget import Budget, ScheduleConfig, lr_at, parse_budget
from tune_lip.studies.loop import DIVERGED_LOSS, BudgetedLoop

# The exact maths and the simulated chains (moved there unchanged); re-exported here.
from tune_lip.studies.nqm_exact import (
    EXACT_OPTIMIZERS,
    _Chains,
    _closed_form,
    _moment_step,
    _sgd_power,
    critical_batch_size,
    curvatures,
    exact_lr_scaling,
    exact_optimal_lr,
    expected_loss_sgd,
    monte_carlo_loss,
    preconditioner,
    steps_to_target,
)
from tune_lip.studies.nqm_noise import gradient_statistics
from tune_lip.studies.registry import Study, register

__all__ = [
    "NQM_OPTIMIZERS",
    "EXACT_OPTIMIZERS",
    "DIVERGE_FACTOR",
    "CHECK_EVERY",
    "NQMOptimizerConfig",
    "NQMDataConfig",
    "NQMConfig",
    "NQMLoop",
    "curvatures",
    "preconditioner",
    "expected_loss_sgd",
    "monte_carlo_loss",
    "exact_optimal_lr",
    "exact_lr_scaling",
    "steps_to_target",
    "critical_batch_size",
]

NQM_OPTIMIZERS = ("sgd", "precond_sgd", "adam")
DIVERGE_FACTOR = 1e6     # a loss above this many times the initial loss counts as diverged
CHECK_EVERY = 64         # steps between divergence checks (at absolute step multiples)


# ---------------------------------------------------------------------------- config

@dataclass(frozen=True)
class NQMOptimizerConfig:
    name: str = "sgd"                           # sgd, precond_sgd (exact) or adam (simulated chains)
    lr: float = 0.1                             # peak learning rate, per step (before P⁻¹)
    momentum: float = 0.0                       # (precond_)sgd heavy-ball momentum μ in [0, 1)
    nesterov: bool = False                      # (precond_)sgd only; ignored without momentum
    precond_power: float = 0.0                  # precond_sgd: p in [0, 1], P = H^p (Zhang et al. §3.3)
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
        if isinstance(self.precond_power, bool) or not isinstance(self.precond_power, (int, float)) \
                or not 0 <= self.precond_power <= 1:
            raise ValueError(f"optimizer.precond_power must be a number in [0, 1], got {self.precond_power!r}")
        if self.name != "precond_sgd" and self.precond_power != 0:
            raise ValueError(f"optimizer.precond_power is for precond_sgd; use name: precond_sgd "
                             f"(got name: {self.name})")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas) or self.eps < 0:
            raise ValueError("optimizer.betas must be two numbers in [0, 1) and eps >= 0, "
                             f"got {self.betas}, {self.eps}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "lr", float(self.lr))
        object.__setattr__(self, "momentum", float(self.momentum))
        object.__setattr__(self, "precond_power", float(self.precond_power))


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
    dim: int = 10_000        # number of dimensions (curvature eigenvalues); the paper's d = 10⁴
    power: float = 1.0       # h_i = i^(-power), i = 1..dim; max h = 1; the paper's h_i = 1/i
    noise: float = 1.0       # per-example gradient noise covariance, in units of H; the paper's C = H
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


# ---------------------------------------------------------------------------- the loop

class NQMLoop(BudgetedLoop):
    """One NQM trial trained in slices; exact expected loss for (precond_)sgd, chain mean for Adam.

    Only the budget, the progress counters and the checkpoint come from `BudgetedLoop`: the
    NQM has no torch model, and its exact moments advance many steps at once (closed form), so
    it keeps its own stepping rather than `ModelLoop`'s one step at a time.

    Divergence: a non-finite loss, or one above DIVERGE_FACTOR × the initial expected loss,
    checked every CHECK_EVERY steps and at the end of every slice, ends the trial with
    ``diverged=True`` and the finite DIVERGED_LOSS reported.
    """

    def __init__(self, cfg: NQMConfig) -> None:
        super().__init__(cfg, total_steps=cfg.total_steps(), examples_per_step=cfg.dataset.batch_size)
        self.total_steps: int = cfg.total_steps()
        self.h = curvatures(cfg)                                    # (dim,)
        self.s2 = cfg.noise * self.h / cfg.dataset.batch_size        # (dim,) gradient noise variances
        self.initial_loss = 0.5 * float(self.h.sum())               # E θ₀² = 1
        self.exact = cfg.optimizer.name in EXACT_OPTIMIZERS
        self.precond = preconditioner(cfg)                          # (dim,) h^(-p); ones for sgd
        self.moments = np.zeros((3, cfg.dim))                       # (E θ², E θv, E v²) per dimension
        self.moments[0] = 1.0
        self.chains = None if self.exact else _Chains(cfg, self.h, self.s2, cfg.chains)

    def lr(self, step: int) -> float:
        return lr_at(step / self.total_steps, peak_lr=self.cfg.optimizer.lr, schedule=self.cfg.schedule,
                     total_steps=self.total_steps)

    def loss(self) -> float:
        """Expected loss now: exact ((precond_)sgd) or the mean over chains (Adam); may be inf or NaN."""
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
            self.moments[0] = _sgd_power(o.lr * self.precond, self.h, self.s2, self.steps + steps)
        else:
            for t in range(self.steps, self.steps + steps):
                self.moments = _moment_step(self.moments, self.lr(t) * self.precond, self.h, self.s2,
                                            o.momentum, o.nesterov)
        self.steps += steps

    def _check(self) -> None:
        loss = self.loss()
        if not math.isfinite(loss) or loss > DIVERGE_FACTOR * self.initial_loss:
            self.diverged = True

    def train_for(self, steps: int) -> dict[str, Any]:
        """Train ``steps`` steps (fewer at the end of the budget or on divergence).

        Returns steps, examples, ``lr`` (the configured peak LR, ``optimizer.lr``), ``lr_now``
        (the scheduled LR of the last step taken; before the first step, the first step's),
        train_loss (the expected loss at the current iterate), diverged, and the gradient noise
        statistics grad_norm_sq, grad_noise, noise_scale (`gradient_statistics`).
        """
        end = self.steps + self.steps_left(steps)
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
                "train_loss": DIVERGED_LOSS if self.diverged else self.loss(), "diverged": self.diverged,
                **self.gradient_statistics()}

    def gradient_statistics(self) -> dict[str, float]:
        """grad_norm_sq, grad_noise and noise_scale (B_simple) at the iterate's second moments:
        exact for (precond_)sgd, the chain mean for Adam (`tune_lip.studies.nqm_noise`)."""
        theta_sq = self.moments[0] if self.chains is None else (self.chains.theta**2).mean(axis=0)
        stats = gradient_statistics(self.h, theta_sq, self.cfg.noise)
        return {k: DIVERGED_LOSS for k in stats} if self.diverged else stats

    def evaluate(self) -> dict[str, float]:
        """``test_loss``: the same expected loss as train_loss (the NQM has no test set)."""
        return {"test_loss": DIVERGED_LOSS if self.diverged else self.loss()}

    def extra_state(self) -> dict[str, Any]:
        return {"moments": self.moments.copy(), "chains": None if self.chains is None else self.chains.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.moments = np.array(state["moments"])
        if self.chains is not None:
            self.chains.load_state_dict(state["chains"])


STUDY = register(Study(
    name="nqm", config=NQMConfig, loop=lambda config: NQMLoop(NQMConfig.from_dict(config)),
    metrics=frozenset({"train_loss", "test_loss", "grad_norm_sq", "grad_noise", "noise_scale"}),
))
