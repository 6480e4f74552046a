"""The scaling-rules study's typed config: LR rules, gradient estimates (minibatch, SVAG, NGD), budget rules.

`ScalingConfig.from_dict` reads a trial's nested mapping and raises `ConfigError` naming the
key at fault; `tune_lip.studies.scaling` (which re-exports every name here) trains it, and its
docstring says what each option means.

Example:
    >>> cfg = ScalingConfig.from_dict({"dataset": {"batch_size": 256}, "gradient": {"name": "svag", "l": 4}})
    >>> cfg.optimizer.lr_rule, cfg.optimizer.lr(256), cfg.gradient.l
    ('linear', 1.6, 4.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from tune_lip.data.augment import AugmentConfig
from tune_lip.errors import ConfigError, UserError
from tune_lip.nn.models.scaling_nets import NORMS
from tune_lip.nn.optim import OPTIMIZERS, OptimizerConfig
from tune_lip.nn.sam import SharpnessConfig
from tune_lip.nn.scaling_rules import scaled_lr
from tune_lip.studies.budget import Budget, ScheduleConfig, parse_budget
from tune_lip.studies.config import (
    DataConfig,
    ModelConfig,
    _from_dict,
    _model_config,
    _section,
    config_to_dict,
)

__all__ = ["BUDGET_RULES", "GRADIENTS", "LR_RULES", "GradientConfig", "ScalingConfig", "ScalingOptimizerConfig"]

LR_RULES = ("linear", "sqrt", "none")
GRADIENTS = ("minibatch", "svag", "ngd")
BUDGET_RULES = ("none", "sde_time")


def _check_int(key: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < low:
        raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class ScalingOptimizerConfig:
    name: str = "sgd"               # sgd | adam | adamw | rmsprop (tune_lip.nn.optim)
    lr_rule: str | None = None      # linear | sqrt | none; None = linear for sgd, sqrt otherwise
    eta: float | None = None        # LR per step at base_batch and l = 1; None = 0.8 (sgd), 1e-3
    base_batch: int = 128           # B₀, examples
    momentum: float = 0.0           # SGD/RMSprop; 0 = the plain SGD that the SDE papers model
    nesterov: bool = False          # SGD only
    weight_decay: float = 5e-4      # L2 coefficient (decoupled for adamw)
    betas: tuple[float, float] = (0.9, 0.999)   # Adam/AdamW
    eps: float = 1e-8               # Adam/AdamW/RMSprop denominator epsilon
    sam_rho: float = 0.0            # SAM radius in parameter space (tune_lip.nn.sam); 0 = off
    sam_adaptive: bool = False      # ASAM

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; valid: {', '.join(OPTIMIZERS)}")
        rule = self.lr_rule or ("linear" if self.name == "sgd" else "sqrt")
        if rule not in LR_RULES:
            raise ValueError(f"unknown lr_rule {rule!r}; valid: {', '.join(LR_RULES)}")
        eta = (0.8 if self.name == "sgd" else 1e-3) if self.eta is None else self.eta
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 < eta < math.inf:
            raise ValueError(f"optimizer.eta must be a positive number, got {eta!r}")
        _check_int("optimizer.base_batch", self.base_batch, 1)
        object.__setattr__(self, "lr_rule", rule)   # resolved, so the saved config says what ran
        object.__setattr__(self, "eta", float(eta))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        self.torch_config(1.0)   # tune_lip.nn.optim checks the remaining knobs

    def lr(self, batch_size: int) -> float:
        """The rule's LR at ``batch_size`` (before SVAG's 1/l and the schedule)."""
        return scaled_lr(str(self.lr_rule), eta=float(self.eta or 0), batch_size=batch_size,
                         base_batch=int(self.base_batch))

    def torch_config(self, lr: float) -> OptimizerConfig:
        return OptimizerConfig(name=self.name, lr=lr, momentum=float(self.momentum), nesterov=self.nesterov,
                               weight_decay=float(self.weight_decay), betas=(self.betas[0], self.betas[1]), eps=float(self.eps),
                               sam_rho=float(self.sam_rho), sam_adaptive=self.sam_adaptive)


@dataclass(frozen=True)
class GradientConfig:
    name: str = "minibatch"     # minibatch | svag | ngd
    l: float = 1.0              # svag: noise covariance ×l, lr /l, steps ×l; 1 = minibatch
    subset: int | None = None   # train on a fixed seeded subset of this many examples (ngd: required)
    chunk: int = 512            # ngd: examples per forward/backward of the full gradient (memory)

    def __post_init__(self) -> None:
        if self.name not in GRADIENTS:
            raise ValueError(f"unknown gradient {self.name!r}; valid: {', '.join(GRADIENTS)}")
        if isinstance(self.l, bool) or not isinstance(self.l, (int, float)) or not 1 <= self.l < math.inf:
            raise ValueError(f"gradient.l must be a number >= 1, got {self.l!r}")
        object.__setattr__(self, "l", float(self.l))
        if self.name != "svag" and self.l != 1:
            raise ValueError(f"gradient.l is SVAG's: use name: svag, or drop l (got {self.l:g} for {self.name})")
        if self.name == "ngd" and self.subset is None:
            raise ValueError("gradient ngd needs subset: N, the examples of its full gradient")
        if self.subset is not None:
            _check_int("gradient.subset", self.subset, 1)
        _check_int("gradient.chunk", self.chunk, 1)


def _scaling_model(raw: Any) -> ModelConfig:
    cfg = _model_config(raw, default="preresnet32")
    if cfg.options.get("norm", "bn") not in NORMS:   # fail at config time, not in a trial's setup
        raise ValueError(f"unknown norm {cfg.options['norm']!r}; valid: {', '.join(NORMS)}")
    return cfg


@dataclass(frozen=True)
class ScalingConfig:
    """Everything one scaling-rules trial needs; `from_dict` takes a trial's (Ray) config."""

    seed: int = 0
    model: ModelConfig = field(default_factory=lambda: ModelConfig("preresnet32"))
    dataset: DataConfig = field(default_factory=lambda: DataConfig(batch_size=128))
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    optimizer: ScalingOptimizerConfig = field(default_factory=ScalingOptimizerConfig)
    gradient: GradientConfig = field(default_factory=GradientConfig)
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig("constant"))
    budget: Budget = field(default_factory=lambda: Budget("epochs", 1.0))
    budget_rule: str = "none"       # none: the budget at the trial's B; sde_time: at B₀, steps ×B₀/B
    reports: int = 20               # train slices per trial (each ends with an evaluation)
    grad_stats_every: int = 0       # steps between gradient-noise measurements; 0 = off
    grad_stats_batches: int = 16    # k >= 2 minibatch gradients per measurement (rel. s.e. <~ sqrt(2/(k-1)))
    sharpness: SharpnessConfig = field(default_factory=SharpnessConfig)   # top Hessian eigenvalue; off
    # Batches per epoch: False = an endless stream of per-epoch permutations (a batch may straddle
    # two epochs); True = each epoch's permutation cut into len // draw whole batches, the rest
    # dropped (the SVAG code's drop_last_batch=True), and an {epochs: E} budget is E such epochs.
    drop_last: bool = False
    feature_rank_batch: int = 256   # examples of the fixed validation batch for feature_rank; 0 = off
    device: str = "auto"            # auto = cuda when visible, else cpu

    def __post_init__(self) -> None:
        if self.budget_rule not in BUDGET_RULES:
            raise ConfigError("budget_rule", f"unknown rule {self.budget_rule!r}; valid: {', '.join(BUDGET_RULES)}")
        if self.budget.kind not in ("steps", "epochs", "examples"):
            raise ConfigError("budget", f"a {self.budget.kind} budget is not supported here; "
                              "use {steps: N}, {epochs: E} or {examples: X}")
        if self.gradient.name == "ngd" and not self.augmentation.is_identity:
            raise ConfigError("augmentation", "ngd's full gradient is of the fixed subset; use augmentation: none")
        if not isinstance(self.drop_last, bool):
            raise ConfigError("drop_last", f"must be true or false, got {self.drop_last!r}")
        if self.gradient.name == "ngd" and self.optimizer.sam_rho > 0:
            raise ConfigError("optimizer.sam_rho", "SAM is for minibatch and svag gradients, not ngd")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ScalingConfig:
        """Build from a nested mapping (a trial's config); raises ConfigError naming the key."""
        known = {f.name for f in fields(cls)}
        if set(raw) - known:
            raise ConfigError(min(set(raw) - known), f"unknown config key; valid: {', '.join(sorted(known))}")
        try:
            budget = parse_budget(raw.get("budget", {"epochs": 1}), where="config")
        except UserError as exc:
            raise ConfigError(exc.key or "budget", exc.problem) from None
        ints = {"seed": 0, "reports": 1, "grad_stats_every": 0, "grad_stats_batches": 2,   # key: lowest value
                "feature_rank_batch": 0}
        for key, low in ints.items():
            if key in raw:
                _section(key, lambda: _check_int(key, raw[key], low))  # noqa: B023 (called at once)
        dataset = raw.get("dataset") or {}
        return _section("config", lambda: cls(
            seed=int(raw.get("seed", 0)),
            model=_section("model", lambda: _scaling_model(raw.get("model"))),
            dataset=_section("dataset", lambda: _from_dict(
                DataConfig, {"batch_size": 128, **dataset} if isinstance(dataset, dict) else dataset,
                "dataset", free="options")),
            augmentation=_section("augmentation", lambda: AugmentConfig.from_dict(raw.get("augmentation"))),
            optimizer=_section("optimizer", lambda: _from_dict(ScalingOptimizerConfig, raw.get("optimizer"),
                                                                "optimizer")),
            gradient=_section("gradient", lambda: _from_dict(GradientConfig, raw.get("gradient"), "gradient")),
            schedule=_section("schedule", lambda: ScheduleConfig.from_dict(raw.get("schedule", "constant"))),
            budget=budget,
            budget_rule=str(raw.get("budget_rule", "none")),
            reports=int(raw.get("reports", 20)),
            grad_stats_every=int(raw.get("grad_stats_every", 0)),
            grad_stats_batches=int(raw.get("grad_stats_batches", 16)),
            sharpness=_section("sharpness", lambda: SharpnessConfig.from_dict(raw.get("sharpness"))),
            drop_last=raw.get("drop_last", False),
            feature_rank_batch=int(raw.get("feature_rank_batch", 256)),
            device=str(raw.get("device", "auto")),
        ))

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @property
    def draw(self) -> int:
        """Examples a minibatch or SVAG step draws: B, or 2B for SVAG with l > 1 (NGD: its subset)."""
        b = self.dataset.batch_size
        return 2 * b if self.gradient.name == "svag" and self.gradient.l > 1 else b

    def steps_per_epoch(self, num_train: int) -> float:
        """Steps per pass over ``num_train`` examples at the draw: num_train // draw with
        ``drop_last`` (at least 1), else num_train / draw."""
        draw = num_train if self.gradient.name == "ngd" else self.draw
        return float(max(1, num_train // draw)) if self.drop_last else num_train / draw

    def total_steps(self, num_train: int) -> int:
        """Optimizer steps of the trial: the budget at B (sde_time: at B₀, ×B₀/B), ×l. With
        ``drop_last`` an {epochs: E} budget is E·l·draw/B whole-batch epochs of the draw (SVAG:
        2lE epochs of 2B, as the SVAG code's sde1 runs max_epochs·2·k epochs at batch 2B)."""
        b, b0 = self.dataset.batch_size, self.optimizer.base_batch
        if self.drop_last and self.budget.kind == "epochs":
            draw = num_train if self.gradient.name == "ngd" else self.draw
            passes = float(self.budget.amount) * self.gradient.l * draw / b
            return max(1, round(passes * self.steps_per_epoch(num_train)))
        at = b0 if self.budget_rule == "sde_time" else b
        steps = self.budget.total_steps(batch_size=at, num_train=num_train)
        assert steps is not None   # steps, epochs and examples budgets are exact
        return max(1, round(steps * at / b * self.gradient.l))
